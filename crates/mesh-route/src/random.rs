//! The random source behind every probabilistic decision: weighted
//! destinations, mirror and fault percentages, random and power-of-two load
//! balancing.
//!
//! It is injectable so tests can seed it and assert distributions with
//! statistical tolerances instead of luck. The generator is SplitMix64 over
//! an atomic counter: lock-free, a few nanoseconds per draw, and fully
//! deterministic for a given seed when draws happen in a fixed order.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A source of uniformly distributed 64-bit values, shared across threads.
pub trait RandomSource: Send + Sync + fmt::Debug {
    /// The next value.
    fn next_u64(&self) -> u64;

    /// A value uniformly distributed in `0..n` (`0` when `n` is 0).
    fn below(&self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Lemire's multiply-shift: unbiased enough for n far below 2^64.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A weighted choice among items whose running weight sums are
    /// `cumulative` (`cumulative[i]` is the sum of weights `0..=i`): the
    /// first item whose sum exceeds one draw below the total. Zero-weight
    /// items have no width and are never chosen; one item needs no draw.
    fn weighted(&self, cumulative: &[u64]) -> usize {
        if cumulative.len() <= 1 {
            return 0;
        }
        let total = cumulative.last().copied().unwrap_or(0);
        let draw = self.below(total);
        cumulative.partition_point(|&c| c <= draw)
    }

    /// A float uniformly distributed in `[0, 1)`.
    fn unit(&self) -> f64 {
        // 53 random bits fill an f64 mantissa exactly.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `percent / 100` (0 never, 100 always).
    fn chance(&self, percent: f64) -> bool {
        if percent <= 0.0 {
            false
        } else if percent >= 100.0 {
            true
        } else {
            self.unit() * 100.0 < percent
        }
    }
}

/// SplitMix64 over an atomic state.
pub struct SplitMix {
    state: AtomicU64,
}

impl SplitMix {
    /// A generator with a fixed seed: the same seed gives the same sequence.
    pub fn seeded(seed: u64) -> Self {
        SplitMix {
            state: AtomicU64::new(seed),
        }
    }

    /// A generator seeded from the process's hash randomness and the clock.
    pub fn from_entropy() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        SplitMix::seeded(h.finish())
    }
}

impl fmt::Debug for SplitMix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SplitMix").finish_non_exhaustive()
    }
}

impl RandomSource for SplitMix {
    fn next_u64(&self) -> u64 {
        let mut z = self
            .state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The shared handle layers hold.
pub type SharedRandom = Arc<dyn RandomSource>;

/// A random source seeded from entropy, for production use.
pub fn default_random() -> SharedRandom {
    Arc::new(SplitMix::from_entropy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_sequences_repeat() {
        let a = SplitMix::seeded(7);
        let b = SplitMix::seeded(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn below_is_uniform_within_binomial_tolerance() {
        // 10 buckets, 100,000 draws: each count ~ Binomial(n, 0.1), whose
        // standard deviation is sqrt(n * 0.1 * 0.9) ~ 94.9. Five sigma.
        let r = SplitMix::seeded(42);
        let n = 100_000u64;
        let mut counts = [0u64; 10];
        for _ in 0..n {
            counts[r.below(10) as usize] += 1;
        }
        let sigma = (n as f64 * 0.1 * 0.9).sqrt();
        for c in counts {
            assert!(
                (c as f64 - n as f64 * 0.1).abs() < 5.0 * sigma,
                "{counts:?}"
            );
        }
    }

    #[test]
    fn chance_extremes() {
        let r = SplitMix::seeded(1);
        assert!((0..1000).all(|_| !r.chance(0.0)));
        assert!((0..1000).all(|_| r.chance(100.0)));
    }
}
