//! Load-balancer pick cost per policy at 10 and 1,000 endpoints (it must
//! stay flat: every pick is O(1) or O(log n)), plus hash-key extraction.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use mesh_core::snapshot::Endpoint;
use mesh_route::balance::{Balancer, HashKey, LbPolicy, PickRequest, hash_bytes, hash_key};
use mesh_route::random::SplitMix;

fn endpoints(n: usize, weighted: bool) -> Arc<[Endpoint]> {
    (0..n)
        .map(|i| Endpoint {
            address: format!("10.{}.{}.{}", i / 65_536, (i / 256) % 256, i % 256),
            ports: Default::default(),
            labels: Default::default(),
            weight: if weighted { 1 + (i % 4) as u32 } else { 1 },
            service_account: None,
        })
        .collect()
}

fn policies() -> Vec<(&'static str, LbPolicy)> {
    vec![
        ("round_robin", LbPolicy::RoundRobin),
        ("least_request", LbPolicy::LeastRequest),
        ("random", LbPolicy::Random),
        (
            "ring_hash",
            LbPolicy::RingHash {
                minimum_ring_size: 1024,
                key: HashKey::Header("x-user".into()),
            },
        ),
        (
            "maglev",
            LbPolicy::Maglev {
                table_size: 65_537,
                key: HashKey::Header("x-user".into()),
            },
        ),
    ]
}

fn pick(c: &mut Criterion) {
    for weighted in [false, true] {
        let mut group = c.benchmark_group(if weighted {
            "balance_pick_weighted"
        } else {
            "balance_pick"
        });
        for n in [10usize, 1_000] {
            for (name, policy) in policies() {
                let balancer = Balancer::new(
                    policy,
                    endpoints(n, weighted),
                    Arc::new(SplitMix::seeded(1)),
                );
                let not_first = |i: usize| i != 0;
                let mut key = 0u64;
                group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                    b.iter(|| {
                        key = key.wrapping_add(1);
                        let req = PickRequest {
                            hash: Some(hash_bytes(&key.to_le_bytes())),
                            eligible: &not_first,
                            avoid: &[],
                        };
                        black_box(balancer.pick(black_box(&req)).map(|p| p.index))
                    })
                });
            }
        }
        group.finish();
    }
}

fn extract(c: &mut Criterion) {
    let (parts, ()) = http::Request::builder()
        .uri("/api/items?page=2&user=alice")
        .header("x-user", "alice")
        .header("cookie", "theme=dark; session=4f2a9c1e; lang=en")
        .body(())
        .map(|r| r.into_parts())
        .unwrap_or_else(|_| http::Request::new(()).into_parts());
    let mut group = c.benchmark_group("balance_hash_key");
    for (name, key) in [
        ("header", HashKey::Header("x-user".into())),
        (
            "cookie",
            HashKey::Cookie {
                name: "session".into(),
                path: None,
                ttl: None,
            },
        ),
        ("query", HashKey::QueryParameter("user".into())),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| black_box(hash_key(black_box(&key), &parts.headers, &parts.uri, None)))
        });
    }
    group.finish();
}

criterion_group!(benches, pick, extract);
criterion_main!(benches);
