//! Endpoint weights and weighted random draws.

use mesh_core::snapshot::Endpoint;

use crate::random::RandomSource;

/// The weights of an endpoint set, with cumulative sums for O(log n)
/// weighted draws. A weight of 0 counts as 1 (Envoy requires at least 1).
#[derive(Debug)]
pub(crate) struct Weights {
    weights: Box<[u64]>,
    /// `cumulative[i]` = sum of `weights[..=i]`.
    cumulative: Box<[u64]>,
    total: u64,
    uniform: bool,
}

impl Weights {
    pub(crate) fn new(endpoints: &[Endpoint]) -> Weights {
        let weights: Box<[u64]> = endpoints
            .iter()
            .map(|e| u64::from(e.weight.max(1)))
            .collect();
        let mut total = 0u64;
        let cumulative = weights
            .iter()
            .map(|w| {
                total += w;
                total
            })
            .collect();
        let uniform = weights.windows(2).all(|w| w[0] == w[1]);
        Weights {
            weights,
            cumulative,
            total,
            uniform,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.weights.len()
    }

    pub(crate) fn is_uniform(&self) -> bool {
        self.uniform
    }

    pub(crate) fn get(&self, i: usize) -> u64 {
        self.weights.get(i).copied().unwrap_or(1)
    }

    pub(crate) fn all(&self) -> &[u64] {
        &self.weights
    }

    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// An index drawn with probability proportional to its weight: one
    /// draw, plus a binary search over the cumulative sums when weights
    /// differ. `len()` must be non-zero.
    pub(crate) fn draw(&self, random: &dyn RandomSource) -> usize {
        if self.uniform {
            return random.below(self.len() as u64) as usize;
        }
        let r = random.below(self.total);
        self.cumulative.partition_point(|c| *c <= r)
    }
}
