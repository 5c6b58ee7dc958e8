//! Consistent hashing on a ring.
//!
//! Each endpoint owns points on a 64-bit ring, in number proportional to its
//! weight; a request goes to the owner of the first point at or after its
//! hash (binary search). Adding or removing one endpoint only moves the keys
//! on the arcs its points own, about `1/n` of them.
//!
//! Points per unit of weight are a power of two, the smallest that gives at
//! least `minimum_ring_size` points. Rounding to a power of two (instead of
//! Envoy's exact scaling) keeps the other endpoints' points unchanged when
//! one endpoint comes or goes, unless the weight sum crosses a power of two;
//! exact scaling would give every remaining endpoint new points, moving about
//! twice as many keys. The ring holds between `minimum_ring_size` and twice
//! that many points (plus at most one per endpoint from rounding up).

use mesh_core::snapshot::Endpoint;

use super::hash::{hash_bytes, mix64};
use super::weights::Weights;
use super::{PickRequest, WALK, endpoint_identity, scan};

#[derive(Debug)]
pub(crate) struct Ring {
    /// Point hashes, sorted ascending.
    hashes: Box<[u64]>,
    /// `owners[k]` is the endpoint owning `hashes[k]`.
    owners: Box<[u32]>,
    endpoints: usize,
}

impl Ring {
    pub(crate) fn new(endpoints: &[Endpoint], weights: &Weights, minimum_ring_size: u64) -> Ring {
        let counts = points_per_endpoint(weights, minimum_ring_size);
        let total: u64 = counts.iter().sum();
        let mut points: Vec<(u64, u32)> = Vec::with_capacity(total as usize);
        for (i, (endpoint, count)) in endpoints.iter().zip(&counts).enumerate() {
            let base = hash_bytes(&endpoint_identity(endpoint));
            points.extend((0..*count).map(|replica| {
                // mix64 is a bijection: distinct replicas never collide.
                let h = mix64(base.wrapping_add(replica.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
                (h, i as u32)
            }));
        }
        points.sort_unstable();
        let (hashes, owners) = points.into_iter().unzip::<_, _, Vec<_>, Vec<_>>();
        Ring {
            hashes: hashes.into(),
            owners: owners.into(),
            endpoints: endpoints.len(),
        }
    }

    /// The owner of `hash`, walking clockwise past ineligible endpoints.
    /// Retries do not avoid earlier endpoints under consistent hashing.
    pub(crate) fn pick(&self, hash: u64, req: &PickRequest<'_>) -> Option<usize> {
        let len = self.hashes.len();
        if len == 0 {
            return None;
        }
        let start = self.hashes.partition_point(|h| *h < hash);
        for step in 0..len.min(WALK) {
            let owner = self.owners[(start + step) % len] as usize;
            if req.usable(owner) {
                return Some(owner);
            }
        }
        // Deterministic, so still sticky while the eligible set is stable.
        let n = self.endpoints;
        scan(n, (hash % n as u64) as usize, |i| req.usable(i))
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.hashes.len()
    }

    #[cfg(test)]
    pub(crate) fn is_sorted(&self) -> bool {
        self.hashes.is_sorted()
    }

    #[cfg(test)]
    pub(crate) fn points_of(&self, i: usize) -> usize {
        self.owners.iter().filter(|o| **o as usize == i).count()
    }
}

fn points_per_endpoint(weights: &Weights, minimum_ring_size: u64) -> Vec<u64> {
    let total = u128::from(weights.total());
    let min = u128::from(minimum_ring_size.max(1));
    if total == 0 {
        return Vec::new();
    }
    if total < min {
        // Grow: `k` points per unit of weight.
        let mut k: u128 = 1;
        while total * k < min {
            k *= 2;
        }
        weights
            .all()
            .iter()
            .map(|w| (u128::from(*w) * k) as u64)
            .collect()
    } else {
        // Shrink: one point per `2^s` units of weight, rounded up.
        let mut s = 0u32;
        while s < 63 && (total >> (s + 1)) >= min {
            s += 1;
        }
        weights
            .all()
            .iter()
            .map(|w| w.div_ceil(1u64 << s).max(1))
            .collect()
    }
}
