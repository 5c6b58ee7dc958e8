//! Distribution and behaviour tests of every policy, with seeded randomness
//! and statistical (binomial) tolerances.

use std::sync::Arc;

use mesh_core::snapshot::Endpoint;

use super::*;
use crate::random::SplitMix;

fn endpoints(weights: &[u32]) -> Arc<[Endpoint]> {
    weights
        .iter()
        .enumerate()
        .map(|(i, w)| endpoint(i, *w))
        .collect()
}

fn endpoint(i: usize, weight: u32) -> Endpoint {
    Endpoint {
        address: format!("10.0.{}.{}", i / 256, i % 256),
        ports: Default::default(),
        labels: Default::default(),
        weight,
        service_account: None,
    }
}

fn balancer(policy: LbPolicy, weights: &[u32], seed: u64) -> Balancer {
    Balancer::new(policy, endpoints(weights), Arc::new(SplitMix::seeded(seed)))
}

fn ring() -> LbPolicy {
    LbPolicy::RingHash {
        minimum_ring_size: 1024,
        key: HashKey::SourceIp,
    }
}

fn maglev() -> LbPolicy {
    LbPolicy::Maglev {
        table_size: 65_537,
        key: HashKey::SourceIp,
    }
}

fn all_policies() -> Vec<LbPolicy> {
    vec![
        LbPolicy::RoundRobin,
        LbPolicy::LeastRequest,
        LbPolicy::Random,
        LbPolicy::Passthrough,
        ring(),
        maglev(),
    ]
}

fn key(i: usize) -> u64 {
    hash_bytes(format!("user-{i}").as_bytes())
}

/// Pick counts over `picks` picks, each guard dropped at once.
fn counts(b: &Balancer, picks: usize, req: &PickRequest<'_>) -> Vec<u64> {
    let mut counts = vec![0u64; b.endpoints().len()];
    for _ in 0..picks {
        counts[b.pick(req).unwrap().index] += 1;
    }
    counts
}

/// Each count within five binomial standard deviations of `picks * p`.
fn assert_binomial(counts: &[u64], probabilities: &[f64]) {
    let n: u64 = counts.iter().sum();
    for (c, p) in counts.iter().zip(probabilities) {
        let mean = n as f64 * p;
        let sigma = (n as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (*c as f64 - mean).abs() <= 5.0 * sigma,
            "count {c} vs mean {mean:.0} (sigma {sigma:.1}); all: {counts:?}"
        );
    }
}

fn proportional(weights: &[u32]) -> Vec<f64> {
    let total: u32 = weights.iter().sum();
    weights
        .iter()
        .map(|w| f64::from(*w) / f64::from(total))
        .collect()
}

#[test]
fn balancer_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Balancer>();
    check::<Pick>();
}

#[test]
fn empty_endpoint_set_picks_nothing() {
    for policy in all_policies() {
        let b = balancer(policy, &[], 1);
        let req = PickRequest {
            hash: Some(7),
            ..PickRequest::any()
        };
        assert!(b.pick(&req).is_none());
        assert!(b.pick(&PickRequest::any()).is_none());
    }
}

#[test]
fn round_robin_is_exact_with_equal_weights() {
    let b = balancer(LbPolicy::RoundRobin, &[1; 7], 1);
    let c = counts(&b, 7 * 100, &PickRequest::any());
    assert_eq!(c, vec![100; 7]);
    // Consecutive picks rotate through every endpoint.
    let order: Vec<usize> = (0..7)
        .map(|_| b.pick(&PickRequest::any()).unwrap().index)
        .collect();
    assert_eq!(order, (0..7).collect::<Vec<_>>());
}

#[test]
fn round_robin_is_exact_with_weights() {
    let weights = [1, 2, 3, 4];
    let b = balancer(LbPolicy::RoundRobin, &weights, 1);
    if let Algorithm::RoundRobin(rr) = &b.algorithm {
        assert_eq!(rr.schedule_len(), Some(10));
    }
    let c = counts(&b, 10 * 50, &PickRequest::any());
    assert_eq!(c, vec![50, 100, 150, 200]);
}

#[test]
fn round_robin_skips_ineligible_without_doubling_the_next() {
    let b = balancer(LbPolicy::RoundRobin, &[1; 4], 1);
    let eligible = |i: usize| i != 1;
    let req = PickRequest {
        eligible: &eligible,
        ..PickRequest::any()
    };
    let c = counts(&b, 3 * 100, &req);
    // The shared cursor moves past endpoint 1, so 2 does not get its share.
    assert_eq!(c[1], 0);
    for i in [0, 2, 3] {
        assert!((95..=105).contains(&c[i]), "{c:?}");
    }
}

#[test]
fn random_is_uniform_within_five_sigma() {
    let b = balancer(LbPolicy::Random, &[1; 10], 42);
    let c = counts(&b, 100_000, &PickRequest::any());
    assert_binomial(&c, &[0.1; 10]);
}

#[test]
fn random_is_weighted_within_five_sigma() {
    let weights = [1, 2, 3, 4, 10];
    let b = balancer(LbPolicy::Random, &weights, 43);
    let c = counts(&b, 100_000, &PickRequest::any());
    assert_binomial(&c, &proportional(&weights));
    // Passthrough picks the same way.
    let b = balancer(LbPolicy::Passthrough, &weights, 44);
    let c = counts(&b, 100_000, &PickRequest::any());
    assert_binomial(&c, &proportional(&weights));
}

#[test]
fn least_request_steers_away_from_a_busy_endpoint() {
    let b = balancer(LbPolicy::LeastRequest, &[1; 5], 5);
    // Endpoint 0 has 50 requests in flight.
    let only_zero = |i: usize| i == 0;
    let busy: Vec<Pick> = (0..50)
        .map(|_| {
            b.pick(&PickRequest {
                eligible: &only_zero,
                ..PickRequest::any()
            })
            .unwrap()
        })
        .collect();
    assert!(busy.iter().all(|p| p.index == 0));
    assert_eq!(b.active(0), 50);

    // P2C draws two distinct endpoints, so the busy one always loses; the
    // other four share evenly.
    let c = counts(&b, 100_000, &PickRequest::any());
    assert_eq!(c[0], 0, "{c:?}");
    assert_binomial(&c[1..], &[0.25; 4]);

    // Once its requests complete, balance returns.
    drop(busy);
    assert_eq!(b.active(0), 0);
    let c = counts(&b, 100_000, &PickRequest::any());
    assert_binomial(&c, &[0.2; 5]);
}

#[test]
fn least_request_keeps_held_requests_level() {
    let b = balancer(LbPolicy::LeastRequest, &[1; 10], 6);
    let held: Vec<Pick> = (0..1000)
        .map(|_| b.pick(&PickRequest::any()).unwrap())
        .collect();
    let active: Vec<usize> = (0..10).map(|i| b.active(i)).collect();
    let (min, max) = (active.iter().min().unwrap(), active.iter().max().unwrap());
    // Two choices keep the gap to a few requests (log log n), where random
    // picks would spread ±3 sigma ≈ ±28 around 100.
    assert!(max - min <= 6, "{active:?}");
    drop(held);
    assert!((0..10).all(|i| b.active(i) == 0));
}

#[test]
fn least_request_weights_active_requests() {
    let weights = [1, 2, 3];
    let b = balancer(LbPolicy::LeastRequest, &weights, 7);
    let _held: Vec<Pick> = (0..6000)
        .map(|_| b.pick(&PickRequest::any()).unwrap())
        .collect();
    // active / weight is levelled, so active settles near 1000 per unit.
    for (i, w) in weights.iter().enumerate() {
        let expected = 1000.0 * f64::from(*w);
        let got = b.active(i) as f64;
        assert!((got - expected).abs() < 0.05 * expected, "{i}: {got}");
    }
}

#[test]
fn consistent_hash_is_sticky() {
    for policy in [ring(), maglev()] {
        let b = balancer(policy.clone(), &[1; 10], 8);
        for k in 0..1000 {
            let req = PickRequest {
                hash: Some(key(k)),
                ..PickRequest::any()
            };
            let first = b.pick(&req).unwrap().index;
            assert!((0..5).all(|_| b.pick(&req).unwrap().index == first));
            // Retries do not avoid the endpoint under consistent hashing.
            let retry = PickRequest {
                avoid: &[first],
                ..req
            };
            assert_eq!(b.pick(&retry).unwrap().index, first);
        }
        // A new balancer over the same set (another process) agrees.
        let other = balancer(policy, &[1; 10], 999);
        for k in 0..1000 {
            let req = PickRequest {
                hash: Some(key(k)),
                ..PickRequest::any()
            };
            assert_eq!(b.pick(&req).unwrap().index, other.pick(&req).unwrap().index);
        }
    }
}

/// The endpoint address each of `keys` maps to.
fn assignment(policy: &LbPolicy, eps: Arc<[Endpoint]>, keys: usize) -> Vec<String> {
    let b = Balancer::new(policy.clone(), eps, Arc::new(SplitMix::seeded(1)));
    (0..keys)
        .map(|k| {
            let req = PickRequest {
                hash: Some(key(k)),
                ..PickRequest::any()
            };
            b.endpoints()[b.pick(&req).unwrap().index].address.clone()
        })
        .collect()
}

#[test]
fn consistent_hash_moves_about_one_nth_when_an_endpoint_leaves() {
    let n = 10;
    let keys = 10_000;
    for policy in [ring(), maglev()] {
        let all = endpoints(&[1; 10]);
        let fewer: Arc<[Endpoint]> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 3)
            .map(|(_, e)| e.clone())
            .collect();
        let before = assignment(&policy, all.clone(), keys);
        let after = assignment(&policy, fewer, keys);
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        let fraction = moved as f64 / keys as f64;
        // The removed endpoint's keys (~1/n) must move; a consistent hash
        // moves few others. Ring hash keeps the others' points (power-of-two
        // scaling), Maglev reshuffles a little more.
        assert!(
            (0.5 / n as f64..=2.0 / n as f64).contains(&fraction),
            "{policy:?}: moved {fraction}"
        );
        // Every key of the removed endpoint moved, to the others.
        assert!(after.iter().all(|a| *a != all[3].address));
    }
}

#[test]
fn consistent_hash_spreads_keys() {
    let keys = 10_000;
    for (policy, tolerance) in [
        // A ring of 128 points per endpoint gives each about 1/n of the
        // ring with a relative spread near 1/sqrt(128) ≈ 9%; allow 35%.
        (ring(), 0.35),
        // Maglev slot counts differ by at most one or so; what remains is
        // binomial noise (sigma ≈ 3% of 1000), so 15% is five sigma.
        (maglev(), 0.15),
    ] {
        let eps = endpoints(&[1; 10]);
        let got = assignment(&policy, eps.clone(), keys);
        for e in eps.iter() {
            let c = got.iter().filter(|a| **a == e.address).count() as f64;
            assert!((c - 1000.0).abs() < tolerance * 1000.0, "{policy:?}: {c}");
        }
    }
}

#[test]
fn consistent_hash_honours_weights() {
    let weights = [1, 2, 3, 4];
    for (policy, tolerance) in [(ring(), 0.25), (maglev(), 0.1)] {
        let eps = endpoints(&weights);
        let got = assignment(&policy, eps.clone(), 20_000);
        for (e, p) in eps.iter().zip(proportional(&weights)) {
            let c = got.iter().filter(|a| **a == e.address).count() as f64;
            let expected = 20_000.0 * p;
            assert!(
                (c - expected).abs() < tolerance * expected,
                "{policy:?}: {c} vs {expected}"
            );
        }
    }
}

#[test]
fn ring_structure() {
    let b = balancer(ring(), &[1; 10], 1);
    let Algorithm::Ring(r) = &b.algorithm else {
        panic!("not a ring")
    };
    assert!(r.len() >= 1024 && r.len() <= 2048 + 10, "{}", r.len());
    assert!(r.is_sorted());
    assert!((0..10).all(|i| r.points_of(i) == 128));

    let b = balancer(ring(), &[1, 3], 1);
    let Algorithm::Ring(r) = &b.algorithm else {
        panic!("not a ring")
    };
    assert!(r.len() >= 1024);
    assert_eq!(r.points_of(1), 3 * r.points_of(0));

    // Large weights shrink the per-unit count, not below the minimum size.
    let b = balancer(ring(), &[100; 100], 1);
    let Algorithm::Ring(r) = &b.algorithm else {
        panic!("not a ring")
    };
    assert!(r.len() >= 1024 && r.len() <= 2048 + 100, "{}", r.len());
}

#[test]
fn maglev_structure() {
    let b = balancer(maglev(), &[1; 10], 1);
    let Algorithm::Maglev(m) = &b.algorithm else {
        panic!("not maglev")
    };
    assert_eq!(m.len(), 65_537);
    // Equal weights: slots differ by at most one per endpoint.
    let slots: Vec<usize> = (0..10).map(|i| m.slots_of(i)).collect();
    assert!(slots.iter().max().unwrap() - slots.iter().min().unwrap() <= 1);

    // A non-prime size given directly is rounded up to a prime.
    let policy = LbPolicy::Maglev {
        table_size: 100,
        key: HashKey::SourceIp,
    };
    let b = balancer(policy, &[1; 3], 1);
    let Algorithm::Maglev(m) = &b.algorithm else {
        panic!("not maglev")
    };
    assert_eq!(m.len(), 101);
}

#[test]
fn consistent_hash_only_moves_ineligible_keys() {
    for policy in [ring(), maglev()] {
        let b = balancer(policy, &[1; 10], 1);
        let ejected = |i: usize| i != 4;
        for k in 0..2000 {
            let open = PickRequest {
                hash: Some(key(k)),
                ..PickRequest::any()
            };
            let closed = PickRequest {
                eligible: &ejected,
                ..open
            };
            let before = b.pick(&open).unwrap().index;
            let after = b.pick(&closed).unwrap().index;
            if before == 4 {
                assert_ne!(after, 4);
            } else {
                assert_eq!(before, after);
            }
        }
    }
}

#[test]
fn consistent_hash_without_key_picks_at_random() {
    for policy in [ring(), maglev()] {
        let b = balancer(policy, &[1; 5], 11);
        let c = counts(&b, 50_000, &PickRequest::any());
        assert_binomial(&c, &[0.2; 5]);
    }
}

#[test]
fn ineligible_endpoints_are_never_picked() {
    for policy in all_policies() {
        let b = balancer(policy.clone(), &[1, 2, 1, 3, 1, 1, 2, 1, 1], 12);
        let eligible = |i: usize| !i.is_multiple_of(3);
        for k in 0..5000 {
            let req = PickRequest {
                hash: Some(key(k)),
                eligible: &eligible,
                avoid: &[],
            };
            let i = b.pick(&req).unwrap().index;
            assert!(eligible(i), "{policy:?} picked {i}");
        }
        let none = |_: usize| false;
        let req = PickRequest {
            hash: Some(key(0)),
            eligible: &none,
            avoid: &[],
        };
        assert!(b.pick(&req).is_none(), "{policy:?}");
        let req = PickRequest { hash: None, ..req };
        assert!(b.pick(&req).is_none(), "{policy:?}");
        // Only one eligible: always it, even when most draws miss.
        let only = |i: usize| i == 7;
        let req = PickRequest {
            hash: Some(key(1)),
            eligible: &only,
            avoid: &[],
        };
        assert!((0..100).all(|_| b.pick(&req).unwrap().index == 7));
    }
}

#[test]
fn avoid_is_honoured_when_an_alternative_exists() {
    for policy in [
        LbPolicy::RoundRobin,
        LbPolicy::LeastRequest,
        LbPolicy::Random,
        LbPolicy::Passthrough,
    ] {
        let b = balancer(policy.clone(), &[1, 5, 1], 13);
        let req = PickRequest {
            avoid: &[0, 1],
            ..PickRequest::any()
        };
        assert!(
            (0..1000).all(|_| b.pick(&req).unwrap().index == 2),
            "{policy:?}"
        );
        // Everything already tried: any eligible endpoint is better than none.
        let all = PickRequest {
            avoid: &[0, 1, 2],
            ..PickRequest::any()
        };
        assert!(b.pick(&all).is_some());
        // The only alternative is ineligible: fall back to a tried one.
        let not_two = |i: usize| i != 2;
        let req = PickRequest {
            eligible: &not_two,
            avoid: &[0, 1],
            hash: None,
        };
        assert!((0..100).all(|_| b.pick(&req).unwrap().index != 2));
    }
}

#[test]
fn guards_count_in_flight_requests() {
    let b = balancer(LbPolicy::RoundRobin, &[1; 3], 1);
    let a = b.pick(&PickRequest::any()).unwrap();
    let c = b.pick(&PickRequest::any()).unwrap();
    assert_eq!((a.index, c.index), (0, 1));
    assert_eq!(a.guard.index(), 0);
    assert_eq!((b.active(0), b.active(1), b.active(2)), (1, 1, 0));
    drop(a);
    assert_eq!(b.active(0), 0);
    assert_eq!(b.active(99), 0);
}
