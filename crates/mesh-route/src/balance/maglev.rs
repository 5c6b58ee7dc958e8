//! Consistent hashing with a Maglev lookup table (Eisenbud et al., NSDI
//! 2016).
//!
//! Each endpoint walks its own permutation of the table's slots (an offset
//! and a skip derived from two hashes of its identity; the table size is
//! prime so every skip visits every slot) and the endpoints take turns
//! claiming their next free slot. Picking is one modulo and one array
//! index. Weighted: an endpoint takes a turn in proportion to its weight
//! (an endpoint with half the largest weight claims every other round).
//! Removing one endpoint moves slightly more than `1/n` of the keys, but
//! the table spreads keys more evenly than a ring of the same memory.

use mesh_core::snapshot::Endpoint;

use super::hash::hash_seeded;
use super::weights::Weights;
use super::{PickRequest, WALK, endpoint_identity, scan};

const EMPTY: u32 = u32::MAX;

#[derive(Debug)]
pub(crate) struct Maglev {
    table: Box<[u32]>,
    endpoints: usize,
}

impl Maglev {
    /// `table_size` must be prime (the balancer rounds it up to one).
    pub(crate) fn new(endpoints: &[Endpoint], weights: &Weights, table_size: u64) -> Maglev {
        let n = endpoints.len();
        let m = table_size.max(2);
        if n == 0 {
            return Maglev {
                table: Box::new([]),
                endpoints: 0,
            };
        }
        let perms: Vec<(u64, u64)> = endpoints
            .iter()
            .map(|e| {
                let id = endpoint_identity(e);
                let offset = hash_seeded(&id, 0x6d61_676c_6576_3031) % m;
                let skip = hash_seeded(&id, 0x6d61_676c_6576_3032) % (m - 1) + 1;
                (offset, skip)
            })
            .collect();
        let max_weight = u128::from(weights.all().iter().copied().max().unwrap_or(1));
        let mut next = vec![0u64; n];
        let mut target = vec![0u128; n];
        let mut table = vec![EMPTY; m as usize];
        let mut filled = 0u64;
        let mut round: u128 = 1;
        while filled < m {
            for i in 0..n {
                if filled == m {
                    break;
                }
                // Endpoint i takes a turn once round * w_i has caught up
                // with max_weight per turn already taken.
                if round * u128::from(weights.get(i)) < target[i] {
                    continue;
                }
                target[i] += max_weight;
                let (offset, skip) = perms[i];
                // Terminates: the slots before `next[i]` in i's permutation
                // are all taken, so a free one lies ahead, within m steps.
                loop {
                    let slot = ((offset + next[i] * skip) % m) as usize;
                    next[i] += 1;
                    if table[slot] == EMPTY {
                        table[slot] = i as u32;
                        filled += 1;
                        break;
                    }
                }
            }
            round += 1;
        }
        Maglev {
            table: table.into(),
            endpoints: n,
        }
    }

    /// The slot owner for `hash`, moving to the following slots (owned by
    /// effectively random endpoints) past ineligible ones. Retries do not
    /// avoid earlier endpoints under consistent hashing.
    pub(crate) fn pick(&self, hash: u64, req: &PickRequest<'_>) -> Option<usize> {
        let m = self.table.len();
        if m == 0 {
            return None;
        }
        let start = (hash % m as u64) as usize;
        for step in 0..m.min(WALK) {
            let owner = self.table[(start + step) % m] as usize;
            if req.usable(owner) {
                return Some(owner);
            }
        }
        let n = self.endpoints;
        scan(n, (hash % n as u64) as usize, |i| req.usable(i))
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    #[cfg(test)]
    pub(crate) fn slots_of(&self, i: usize) -> usize {
        self.table.iter().filter(|o| **o as usize == i).count()
    }
}
