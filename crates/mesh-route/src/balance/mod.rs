//! # Load balancing: which endpoint of a destination gets the request
//!
//! The balance stage runs once per attempt, after routing chose a service
//! and subset and before the pool limits and the connector. It picks one
//! endpoint of that subset by the DestinationRule's `loadBalancer` policy.
//!
//! Why these policies and this default: Istio's default is `LEAST_REQUEST`,
//! not round robin. Round robin is blind to how busy an endpoint is, so one
//! slow pod keeps receiving its full share and queues grow behind it; power
//! of two choices ([`LbPolicy::LeastRequest`]) costs two random draws and
//! steers new requests away from endpoints with many requests in flight.
//! Consistent hashing ([`LbPolicy::RingHash`], [`LbPolicy::Maglev`]) is
//! *soft* affinity: the same key reaches the same endpoint while the
//! endpoint set is stable, an ejected endpoint's keys move to others, and a
//! request without the key (missing header, cookie or query parameter) is
//! balanced at random. It is a cache-locality optimisation, never a
//! guarantee of session stickiness.
//!
//! A [`Balancer`] is built once per (policy, endpoint set) and shared; every
//! pick is O(1) or O(log n) — an atomic cursor, two random draws, a binary
//! search over the ring or one table index — without locks. The active
//! request counts least-request reads are atomics, kept up by the
//! [`InFlight`] guard that comes with each [`Pick`] until the response is
//! done. Endpoint weights are honoured by every policy. Only when the
//! chosen endpoints are repeatedly ineligible (ejected) or already tried
//! does a pick fall back to a scan of all endpoints, which the outlier
//! layer's ejection cap keeps rare.
//!
//! Every random choice comes from the injected [`SharedRandom`], so tests
//! seed it; every hash is [`hash_bytes`], stable across processes.
//!
//! ```
//! use std::sync::Arc;
//!
//! use mesh_core::snapshot::Endpoint;
//! use mesh_route::balance::{Balancer, LbPolicy, PickRequest};
//! use mesh_route::random::SplitMix;
//!
//! let endpoints: Arc<[Endpoint]> = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
//!     .into_iter()
//!     .map(|address| Endpoint {
//!         address: address.to_owned(),
//!         ports: Default::default(),
//!         labels: Default::default(),
//!         weight: 1,
//!         service_account: None,
//!     })
//!     .collect();
//! let balancer = Balancer::new(LbPolicy::default(), endpoints, Arc::new(SplitMix::seeded(7)));
//!
//! // The outlier layer says endpoint 1 is ejected; a retry avoids endpoint 0.
//! let not_ejected = |i: usize| i != 1;
//! let request = PickRequest { hash: None, eligible: &not_ejected, avoid: &[0] };
//! let pick = balancer.pick(&request).expect("endpoint 2 is eligible");
//! assert_eq!(pick.index, 2);
//! assert_eq!(balancer.active(2), 1); // until the guard drops with the response
//! drop(pick);
//! assert_eq!(balancer.active(2), 0);
//! ```

mod hash;
mod health;
mod least_request;
mod maglev;
mod policy;
mod ring_hash;
mod round_robin;
mod weights;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use mesh_core::snapshot::Endpoint;

pub use self::hash::{GeneratedCookie, cookie_to_set, hash_bytes, hash_key};
pub use self::health::{DestinationHealth, EndpointHealth, HealthQuery, PickedHealth};
use self::maglev::Maglev;
pub use self::policy::{
    DEFAULT_MAGLEV_TABLE_SIZE, DEFAULT_MINIMUM_RING_SIZE, HashKey, LbPolicy, MAX_MAGLEV_TABLE_SIZE,
    MAX_RING_SIZE, PolicyError,
};
use self::ring_hash::Ring;
use self::round_robin::RoundRobin;
use self::weights::Weights;
use crate::random::SharedRandom;

/// How many random draws (or ring / table steps) a pick tries before it
/// scans every endpoint.
const TRIES: usize = 8;
/// How far a consistent-hash pick walks past ineligible endpoints before it
/// scans every endpoint.
pub(crate) const WALK: usize = 64;

/// What one pick needs to know about the request and the endpoints' state.
#[derive(Clone, Copy)]
pub struct PickRequest<'a> {
    /// The consistent-hash value from [`hash_key`] (or a generated cookie);
    /// `None` makes a consistent-hash policy pick at random. Ignored by
    /// the other policies.
    pub hash: Option<u64>,
    /// Whether an endpoint index may be picked (false for ejected ones).
    pub eligible: &'a dyn Fn(usize) -> bool,
    /// Endpoints earlier attempts of this request already tried: others are
    /// preferred when eligible ones exist, except under consistent hashing
    /// (SPEC 4.6), where a retry goes to the same endpoint.
    pub avoid: &'a [usize],
}

fn every_endpoint(_: usize) -> bool {
    true
}

impl PickRequest<'static> {
    /// No hash, every endpoint eligible, nothing to avoid.
    pub fn any() -> PickRequest<'static> {
        PickRequest {
            hash: None,
            eligible: &every_endpoint,
            avoid: &[],
        }
    }
}

impl PickRequest<'_> {
    fn usable(&self, i: usize) -> bool {
        (self.eligible)(i)
    }

    fn preferred(&self, i: usize) -> bool {
        self.usable(i) && !self.avoid.contains(&i)
    }
}

impl fmt::Debug for PickRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PickRequest")
            .field("hash", &self.hash)
            .field("avoid", &self.avoid)
            .finish_non_exhaustive()
    }
}

/// A picked endpoint.
#[derive(Debug)]
#[must_use = "dropping the guard ends the request's in-flight count"]
pub struct Pick {
    /// Index into [`Balancer::endpoints`].
    pub index: usize,
    /// Keeps the endpoint's active-request count up; hold it until the
    /// response (body included) is done.
    pub guard: InFlight,
}

/// Counts one active request on an endpoint until dropped.
pub struct InFlight {
    active: Arc<[AtomicUsize]>,
    index: usize,
}

impl InFlight {
    /// A guard that counts against no balancer, for targets chosen without
    /// one (the inbound side's local application).
    pub fn detached() -> InFlight {
        InFlight {
            active: Arc::from(Vec::new()),
            index: 0,
        }
    }

    /// The endpoint this guard counts against.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Whether this guard counts against no balancer.
    pub fn is_detached(&self) -> bool {
        self.active.is_empty()
    }
}

/// A clone is a guard of its own: it counts the endpoint once more until
/// it is dropped. Cloning lets a [`crate::layer::Target`] carry its guard
/// by value (request extensions must be `Clone`) instead of behind an `Arc`
/// allocated per request.
impl Clone for InFlight {
    fn clone(&self) -> InFlight {
        if let Some(count) = self.active.get(self.index) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        InFlight {
            active: Arc::clone(&self.active),
            index: self.index,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(count) = self.active.get(self.index) {
            count.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl fmt::Debug for InFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlight")
            .field("index", &self.index)
            .finish()
    }
}

enum Algorithm {
    RoundRobin(RoundRobin),
    LeastRequest,
    Random,
    Ring(Ring),
    Maglev(Maglev),
}

/// A load balancer over one endpoint set, shared by every request to it.
pub struct Balancer {
    policy: LbPolicy,
    endpoints: Arc<[Endpoint]>,
    random: SharedRandom,
    weights: Weights,
    active: Arc<[AtomicUsize]>,
    algorithm: Algorithm,
}

impl Balancer {
    /// Builds the balancer's tables (ring, Maglev table, weighted schedule)
    /// once. A ring size above [`MAX_RING_SIZE`] is clamped; a Maglev table
    /// size that is not prime is rounded up to the next prime, and clamped
    /// to [`MAX_MAGLEV_TABLE_SIZE`] (`TryFrom` rejects both instead).
    pub fn new(policy: LbPolicy, endpoints: Arc<[Endpoint]>, random: SharedRandom) -> Balancer {
        let weights = Weights::new(&endpoints);
        let algorithm = match &policy {
            LbPolicy::RoundRobin => Algorithm::RoundRobin(RoundRobin::new(&weights)),
            LbPolicy::LeastRequest => Algorithm::LeastRequest,
            LbPolicy::Random | LbPolicy::Passthrough => Algorithm::Random,
            LbPolicy::RingHash {
                minimum_ring_size, ..
            } => {
                let size = match *minimum_ring_size {
                    0 => DEFAULT_MINIMUM_RING_SIZE,
                    s => s.min(MAX_RING_SIZE),
                };
                Algorithm::Ring(Ring::new(&endpoints, &weights, size))
            }
            LbPolicy::Maglev { table_size, .. } => {
                let size = match *table_size {
                    0 => DEFAULT_MAGLEV_TABLE_SIZE,
                    s => policy::next_prime(s.min(MAX_MAGLEV_TABLE_SIZE)),
                };
                Algorithm::Maglev(Maglev::new(&endpoints, &weights, size))
            }
        };
        let active = endpoints.iter().map(|_| AtomicUsize::new(0)).collect();
        Balancer {
            policy,
            endpoints,
            random,
            weights,
            active,
            algorithm,
        }
    }

    /// The policy it balances by.
    pub fn policy(&self) -> &LbPolicy {
        &self.policy
    }

    /// The endpoints, indexed as [`Pick::index`] and
    /// [`PickRequest::eligible`] count them.
    pub fn endpoints(&self) -> &Arc<[Endpoint]> {
        &self.endpoints
    }

    /// Requests in flight on endpoint `index` (0 when out of range).
    pub fn active(&self, index: usize) -> usize {
        self.active
            .get(index)
            .map_or(0, |a| a.load(Ordering::Relaxed))
    }

    /// Picks an endpoint, or `None` when no endpoint is eligible (the
    /// caller answers 503 `UH`). Passthrough picks at random; the connector
    /// then dials the request's original destination instead.
    pub fn pick(&self, req: &PickRequest<'_>) -> Option<Pick> {
        let index = self.choose(req)?;
        let count = self.active.get(index)?;
        count.fetch_add(1, Ordering::Relaxed);
        Some(Pick {
            index,
            guard: InFlight {
                active: Arc::clone(&self.active),
                index,
            },
        })
    }

    fn choose(&self, req: &PickRequest<'_>) -> Option<usize> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        let random = &*self.random;
        match &self.algorithm {
            Algorithm::RoundRobin(rr) => choose(n, req, TRIES.min(n), || rr.next(n)),
            Algorithm::Random => choose(n, req, TRIES, || self.weights.draw(random)),
            Algorithm::LeastRequest => {
                least_request::pick(req, &self.weights, &self.active, random)
            }
            Algorithm::Ring(ring) => match req.hash {
                Some(h) => ring.pick(h, req),
                None => self.random_ignoring_avoid(req),
            },
            Algorithm::Maglev(maglev) => match req.hash {
                Some(h) => maglev.pick(h, req),
                None => self.random_ignoring_avoid(req),
            },
        }
    }

    /// The consistent-hash fallback for a request without a key: weighted
    /// random, and (as with a key) no avoidance of earlier attempts.
    fn random_ignoring_avoid(&self, req: &PickRequest<'_>) -> Option<usize> {
        let lax = PickRequest { avoid: &[], ..*req };
        choose(self.endpoints.len(), &lax, TRIES, || {
            self.weights.draw(&*self.random)
        })
    }
}

impl fmt::Debug for Balancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balancer")
            .field("policy", &self.policy)
            .field("endpoints", &self.endpoints.len())
            .finish_non_exhaustive()
    }
}

/// Up to `tries` draws for an eligible endpoint not to avoid; then a scan
/// for one, then any eligible endpoint.
fn choose(
    n: usize,
    req: &PickRequest<'_>,
    tries: usize,
    mut draw: impl FnMut() -> usize,
) -> Option<usize> {
    let mut fallback = None;
    let mut last = 0;
    for _ in 0..tries {
        let i = draw();
        if req.preferred(i) {
            return Some(i);
        }
        if fallback.is_none() && req.usable(i) {
            fallback = Some(i);
        }
        last = i;
    }
    scan(n, last, |i| req.preferred(i))
        .or(fallback)
        .or_else(|| scan(n, last, |i| req.usable(i)))
}

/// The first index from `start` onwards (wrapping) that passes `ok`.
pub(crate) fn scan(n: usize, start: usize, ok: impl Fn(usize) -> bool) -> Option<usize> {
    let start = if n == 0 { 0 } else { start % n };
    (start..n).chain(0..start).find(|i| ok(*i))
}

/// The bytes consistent hashing places an endpoint by: its address and
/// named ports, so the placement survives reordering of the endpoint list.
pub(crate) fn endpoint_identity(endpoint: &Endpoint) -> Vec<u8> {
    let mut id = endpoint.address.as_bytes().to_vec();
    for (name, port) in &endpoint.ports {
        id.push(b'|');
        id.extend_from_slice(name.as_bytes());
        id.push(b'=');
        id.extend_from_slice(port.to_string().as_bytes());
    }
    id
}
