//! Least request by the power of two choices.
//!
//! Scanning every endpoint for the fewest active requests costs O(n) and
//! makes every client stampede the same momentarily idle endpoint. Drawing
//! two endpoints at random and taking the less loaded one costs two draws
//! and, as Mitzenmacher showed, gets exponentially closer to the best
//! choice than a single random draw. With weights the load compared is
//! `(active + 1) / weight` (Envoy's "active requests per unit of weight"),
//! so active requests settle in proportion to weight.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::PickRequest;
use super::weights::Weights;
use crate::random::RandomSource;

/// Draw pairs this many times before scanning every endpoint.
const TRIES: usize = 4;

/// Whether `a` is no more loaded than `b`.
fn lighter(active: &[AtomicUsize], weights: &Weights, a: usize, b: usize) -> bool {
    let load = |i: usize| active[i].load(Ordering::Relaxed) as u128 + 1;
    if weights.is_uniform() {
        load(a) <= load(b)
    } else {
        load(a) * u128::from(weights.get(b)) <= load(b) * u128::from(weights.get(a))
    }
}

pub(crate) fn pick(
    req: &PickRequest<'_>,
    weights: &Weights,
    active: &[AtomicUsize],
    random: &dyn RandomSource,
) -> Option<usize> {
    let n = weights.len();
    if n == 1 {
        return req.usable(0).then_some(0);
    }
    let mut fallback = None;
    for _ in 0..TRIES {
        // Two distinct endpoints, uniformly.
        let a = random.below(n as u64) as usize;
        let b = (a + 1 + random.below(n as u64 - 1) as usize) % n;
        match (req.preferred(a), req.preferred(b)) {
            (true, true) => return Some(if lighter(active, weights, a, b) { a } else { b }),
            (true, false) => return Some(a),
            (false, true) => return Some(b),
            (false, false) => {
                if fallback.is_none() {
                    fallback = [a, b].into_iter().find(|i| req.usable(*i));
                }
            }
        }
    }
    // Most endpoints are ineligible or avoided: take the lightest of those
    // left, scanning all of them (rare; the outlier layer caps ejections).
    let lightest = |ok: &dyn Fn(usize) -> bool| {
        (0..n).filter(|i| ok(*i)).reduce(|best, i| {
            if lighter(active, weights, best, i) {
                best
            } else {
                i
            }
        })
    };
    lightest(&|i| req.preferred(i))
        .or(fallback)
        .or_else(|| lightest(&|i| req.usable(i)))
}
