//! Weighted round robin over a shared atomic cursor.
//!
//! Equal weights use `cursor % n`. Otherwise a schedule is precomputed once
//! per endpoint set: endpoint `i` with weight `w` appears `w` times, its
//! `j`-th slot at time `(j + ½) / w`, and the slots are sorted by time — the
//! order a smooth (EDF) weighted round robin produces, so heavy endpoints are
//! interleaved with light ones instead of receiving bursts. Picking is then
//! one `fetch_add` and one index, with no lock.

use std::cmp::Ordering as CmpOrdering;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::weights::Weights;

/// The longest schedule kept; larger weight sums are scaled down to fit,
/// which keeps proportions to within one slot per endpoint.
const MAX_SCHEDULE: u64 = 1 << 16;

#[derive(Debug)]
pub(crate) struct RoundRobin {
    cursor: AtomicUsize,
    /// `None` when all weights are equal.
    schedule: Option<Box<[u32]>>,
}

impl RoundRobin {
    pub(crate) fn new(weights: &Weights) -> RoundRobin {
        let schedule = (!weights.is_uniform()).then(|| schedule(weights.all()));
        RoundRobin {
            cursor: AtomicUsize::new(0),
            schedule,
        }
    }

    /// The next endpoint in the rotation; `n` must be non-zero.
    pub(crate) fn next(&self, n: usize) -> usize {
        let c = self.cursor.fetch_add(1, Ordering::Relaxed);
        match &self.schedule {
            Some(s) if !s.is_empty() => s[c % s.len()] as usize,
            _ => c % n,
        }
    }

    #[cfg(test)]
    pub(crate) fn schedule_len(&self) -> Option<usize> {
        self.schedule.as_ref().map(|s| s.len())
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn schedule(weights: &[u64]) -> Box<[u32]> {
    let g = weights.iter().copied().fold(0, gcd).max(1);
    let mut scaled: Vec<u64> = weights.iter().map(|w| w / g).collect();
    let sum: u64 = scaled.iter().sum();
    let cap = MAX_SCHEDULE.max(weights.len() as u64);
    if sum > cap {
        for w in &mut scaled {
            *w = (u128::from(*w) * u128::from(cap) / u128::from(sum)).max(1) as u64;
        }
    }
    // (numerator 2j+1, denominator 2w, endpoint): time (2j+1) / 2w.
    let mut slots: Vec<(u64, u64, u32)> = Vec::new();
    for (i, w) in scaled.iter().enumerate() {
        slots.extend((0..*w).map(|j| (2 * j + 1, 2 * w, i as u32)));
    }
    slots.sort_unstable_by(|a, b| {
        let lhs = u128::from(a.0) * u128::from(b.1);
        let rhs = u128::from(b.0) * u128::from(a.1);
        match lhs.cmp(&rhs) {
            CmpOrdering::Equal => a.2.cmp(&b.2),
            other => other,
        }
    });
    slots.into_iter().map(|s| s.2).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_proportional_and_interleaved() {
        let s = schedule(&[2, 4, 6]);
        // gcd 2 ⇒ weights 1:2:3, one slot per unit.
        assert_eq!(s.len(), 6);
        let count = |i| s.iter().filter(|x| **x == i).count();
        assert_eq!((count(0), count(1), count(2)), (1, 2, 3));
        // Smooth: the heaviest never takes three slots in a row.
        assert!(!s.windows(3).any(|w| w.iter().all(|x| *x == 2)), "{s:?}");
    }

    #[test]
    fn huge_weights_are_scaled_to_the_cap() {
        let s = schedule(&[1, u64::from(u32::MAX), 1_000_000]);
        assert!(s.len() as u64 <= MAX_SCHEDULE + 3);
        assert!(s.contains(&0), "every endpoint keeps at least one slot");
    }
}
