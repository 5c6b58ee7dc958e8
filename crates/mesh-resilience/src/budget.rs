//! Retry budgets: the token bucket of SPEC 13.2 (tower's `TpsBudget`, which
//! Linkerd uses), shared per destination.
//!
//! Why a budget rather than a retry count: a count bounds the retries of one
//! request, not the load retries add. When a destination fails broadly,
//! every request retries its full count and the failing service sees its
//! traffic multiplied exactly when it can least take it; across a chain of
//! services the counts multiply again. A budget bounds the *ratio*: over any
//! `ttl` window, retries stay within `retryRatio` x the requests that needed
//! none, plus a small floor (`minRetriesPerSecond` x `ttl`) so that a quiet
//! service can still retry. A broad failure then costs at most that extra
//! share, however many requests fail.
//!
//! Place in the request flow: the retry stage (below the whole-request
//! timeout, above balancing) consults the budget of the request's
//! destination after each attempt. An attempt that is not eligible for a
//! retry (a success, a failure the policy does not retry, a body that cannot
//! be replayed, attempts used up) deposits; an eligible one withdraws, and
//! when the withdrawal fails the failure goes to the caller unchanged.
//!
//! The arithmetic, exactly as SPEC 13.2: with ratio 0 a deposit adds 0 and a
//! retry costs 1; with 0 < ratio <= 1 a deposit adds 1 and a retry costs
//! floor(1/ratio); above 1 a deposit adds 1000 and a retry costs
//! floor(1000/ratio). The balance is a constant reserve
//! (`minRetriesPerSecond` x `ttl` seconds x cost) plus what was deposited
//! and withdrawn in the last `ttl`, kept in slots of `ttl/10` each: the
//! current slot and the 10 before it. A record expires once it is older
//! than `ttl`, slot by slot, so it ages out between `ttl` and `1.1 ttl`
//! after it was made (tower's writer slot plus 10 committed slots behave
//! the same way).
//!
//! The bucket is lock-free: each slot is one `AtomicU64` holding the slot's
//! epoch and its sum, updated by compare-and-swap; reading the balance is
//! ten atomic loads. Like tower's, a withdrawal checks the balance and then
//! subtracts, so concurrent withdrawals may overdraw by at most the number
//! racing.
//!
//! Budgets live in a [`RetryBudgets`] registry keyed by destination, outside
//! the configuration snapshot, so a reload keeps each destination's balance
//! unless its budget settings change.
//!
//! ```
//! use std::time::Duration;
//! use mesh_resilience::budget::RetryBudget;
//! use mesh_route::decision::BudgetSpec;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! // ttl 1 s, 5 retries per second, ratio 1.0: the reserve grants 5.
//! let budget = RetryBudget::new(&BudgetSpec {
//!     retry_ratio: 1.0,
//!     min_retries_per_second: 5,
//!     ttl: Duration::from_secs(1),
//! });
//! assert_eq!((0..10).filter(|_| budget.withdraw()).count(), 5);
//! budget.deposit(); // a request that needed no retry pays for one more
//! assert!(budget.withdraw());
//! # }
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use mesh_route::decision::{BudgetSpec, DestinationKey};
use tokio::time::Instant;

/// Slots per `ttl` window (as tower's `TpsBudget`).
const SLOTS: usize = 10;
/// Slots kept: the window's 10 and the one being written.
const KEPT: usize = SLOTS + 1;

/// One destination's retry budget (SPEC 13.2).
pub struct RetryBudget {
    start: Instant,
    slot_nanos: u64,
    reserve: i64,
    deposit_amount: i32,
    withdraw_amount: i32,
    /// Each slot packs its epoch (high 32 bits) and its sum (low 32 bits,
    /// two's complement).
    slots: [AtomicU64; KEPT],
}

impl std::fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryBudget")
            .field("deposit", &self.deposit_amount)
            .field("withdraw", &self.withdraw_amount)
            .field("balance", &self.balance())
            .finish()
    }
}

fn pack(epoch: u32, value: i32) -> u64 {
    (u64::from(epoch) << 32) | u64::from(value as u32)
}

fn unpack(word: u64) -> (u32, i32) {
    ((word >> 32) as u32, word as u32 as i32)
}

impl RetryBudget {
    /// A budget with these settings, its window starting now. Settings
    /// outside SPEC 13.1's ranges are clamped into them; check
    /// [`BudgetSpec::is_valid`] first where an invalid budget must disable
    /// retries instead.
    pub fn new(spec: &BudgetSpec) -> RetryBudget {
        let ratio = if spec.retry_ratio.is_nan() {
            0.0
        } else {
            spec.retry_ratio.clamp(0.0, 1000.0)
        };
        let (deposit_amount, withdraw_amount) = if ratio == 0.0 {
            (0, 1)
        } else if ratio <= 1.0 {
            (1, (1.0 / ratio) as i32)
        } else {
            (1000, (1000.0 / ratio) as i32)
        };
        let ttl = spec
            .ttl
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        let reserve = i64::from(spec.min_retries_per_second.min(0x7fff_fffe))
            .saturating_mul(ttl.as_secs() as i64)
            .saturating_mul(i64::from(withdraw_amount));
        let slot_nanos = (ttl.as_nanos() / SLOTS as u128).max(1) as u64;
        RetryBudget {
            start: Instant::now(),
            slot_nanos,
            reserve,
            deposit_amount,
            withdraw_amount: withdraw_amount.max(1),
            slots: std::array::from_fn(|_| AtomicU64::new(pack(0, 0))),
        }
    }

    fn epoch(&self) -> u32 {
        let elapsed = Instant::now().saturating_duration_since(self.start);
        (elapsed.as_nanos() / u128::from(self.slot_nanos)) as u32
    }

    /// Adds `amount` to the current slot, clearing what the slot held from
    /// a window ago.
    fn add(&self, amount: i32) {
        let epoch = self.epoch();
        let slot = &self.slots[epoch as usize % KEPT];
        let mut current = slot.load(Ordering::Acquire);
        loop {
            let (slot_epoch, value) = unpack(current);
            let next = if slot_epoch == epoch {
                pack(epoch, value.saturating_add(amount))
            } else if (epoch.wrapping_sub(slot_epoch) as i32) < 0 {
                // Another thread already moved this slot to a later epoch
                // (our clock read is a hair older): add to it.
                pack(slot_epoch, value.saturating_add(amount))
            } else {
                pack(epoch, amount)
            };
            match slot.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                Err(seen) => current = seen,
            }
        }
    }

    /// The current balance: the reserve plus the records of the window.
    pub fn balance(&self) -> i64 {
        let epoch = self.epoch();
        let windowed: i64 = self
            .slots
            .iter()
            .map(|slot| unpack(slot.load(Ordering::Acquire)))
            .filter(|(slot_epoch, _)| (epoch.wrapping_sub(*slot_epoch) as i32) <= SLOTS as i32)
            .map(|(_, value)| i64::from(value))
            .sum();
        self.reserve.saturating_add(windowed)
    }

    /// Records an attempt that ended without being eligible for a retry.
    pub fn deposit(&self) {
        if self.deposit_amount != 0 {
            self.add(self.deposit_amount);
        }
    }

    /// Tries to pay for one retry; `false` means the retry must not be sent.
    pub fn withdraw(&self) -> bool {
        if self.balance() >= i64::from(self.withdraw_amount) {
            self.add(-self.withdraw_amount);
            true
        } else {
            false
        }
    }
}

struct Entry {
    spec: BudgetSpec,
    budget: Arc<RetryBudget>,
}

/// Retry budgets by destination, surviving configuration reloads: a
/// destination keeps its budget (and balance) while its settings stay the
/// same; new settings start a fresh budget.
pub struct RetryBudgets {
    entries: ArcSwap<HashMap<DestinationKey, Arc<Entry>>>,
}

impl std::fmt::Debug for RetryBudgets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryBudgets")
            .field("destinations", &self.entries.load().len())
            .finish()
    }
}

impl Default for RetryBudgets {
    fn default() -> Self {
        RetryBudgets {
            entries: ArcSwap::from_pointee(HashMap::new()),
        }
    }
}

impl RetryBudgets {
    /// An empty registry.
    pub fn new() -> Self {
        RetryBudgets::default()
    }

    /// The budget of `destination` under `spec`: the existing one when its
    /// settings match (one atomic load and a hash lookup), else a new one.
    pub fn get(&self, destination: &DestinationKey, spec: &BudgetSpec) -> Arc<RetryBudget> {
        if let Some(entry) = self.entries.load().get(destination)
            && entry.spec == *spec
        {
            return Arc::clone(&entry.budget);
        }
        let fresh = Arc::new(Entry {
            spec: *spec,
            budget: Arc::new(RetryBudget::new(spec)),
        });
        let mut chosen = Arc::clone(&fresh.budget);
        self.entries.rcu(|current| {
            let mut next = HashMap::clone(current);
            match current.get(destination) {
                // A concurrent caller created it first: share theirs.
                Some(entry) if entry.spec == *spec => chosen = Arc::clone(&entry.budget),
                _ => {
                    chosen = Arc::clone(&fresh.budget);
                    next.insert(destination.clone(), Arc::clone(&fresh));
                }
            }
            next
        });
        chosen
    }

    /// The budget of `destination`, if one was created.
    pub fn existing(&self, destination: &DestinationKey) -> Option<Arc<RetryBudget>> {
        self.entries
            .load()
            .get(destination)
            .map(|e| Arc::clone(&e.budget))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ratio: f64, min: u32, ttl_secs: u64) -> BudgetSpec {
        BudgetSpec {
            retry_ratio: ratio,
            min_retries_per_second: min,
            ttl: Duration::from_secs(ttl_secs),
        }
    }

    fn advance(d: Duration) -> impl std::future::Future<Output = ()> {
        tokio::time::advance(d)
    }

    #[tokio::test(start_paused = true)]
    async fn tower_vector_reserve_only() {
        // ttl 1 s, min 5, ratio 1.0: exactly 5 withdrawals, no deposits.
        let b = RetryBudget::new(&spec(1.0, 5, 1));
        assert_eq!((0..100).filter(|_| b.withdraw()).count(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn tower_vector_deposits_expire() {
        // ttl 1 s, min 0, ratio 1.0: one deposit, 3 s idle, withdraw fails.
        let b = RetryBudget::new(&spec(1.0, 0, 1));
        b.deposit();
        advance(Duration::from_secs(3)).await;
        assert!(!b.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn tower_vector_half_ratio_within_the_window() {
        // ttl 1 s, min 0, ratio 0.5: two deposits, 901 ms later a withdrawal
        // (cost 2) succeeds, and only one.
        let b = RetryBudget::new(&spec(0.5, 0, 1));
        b.deposit();
        b.deposit();
        advance(Duration::from_millis(901)).await;
        assert!(b.withdraw());
        assert!(!b.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn records_expire_slot_by_slot_after_ttl() {
        // ttl 10 s: slots of 1 s. A deposit made at 0.5 s (slot 0) is still
        // there at 10.99 s and gone at 11 s: older than ttl, at slot
        // granularity.
        let b = RetryBudget::new(&spec(1.0, 0, 10));
        advance(Duration::from_millis(500)).await;
        b.deposit();
        advance(Duration::from_millis(10_490)).await;
        assert_eq!(b.balance(), 1);
        advance(Duration::from_millis(10)).await;
        assert_eq!(b.balance(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn amounts_follow_the_ratio() {
        let zero = RetryBudget::new(&spec(0.0, 0, 1));
        zero.deposit();
        assert!(!zero.withdraw(), "ratio 0: deposits add nothing");
        let high = RetryBudget::new(&spec(4.0, 0, 1));
        high.deposit(); // +1000; a retry costs 250
        assert_eq!((0..10).filter(|_| high.withdraw()).count(), 4);
        let default = RetryBudget::new(&BudgetSpec::LINKERD_DEFAULT);
        assert_eq!(default.balance(), 500, "10/s x 10 s x cost 5");
    }

    #[tokio::test(start_paused = true)]
    async fn spec_worked_example_grants_124_retries() {
        // Default budget; a burst of requests whose first attempt fails and
        // second succeeds: withdraw, then deposit, per request.
        let b = RetryBudget::new(&BudgetSpec::LINKERD_DEFAULT);
        let mut granted = 0;
        for _ in 0..1000 {
            if b.withdraw() {
                granted += 1;
                b.deposit();
            } else {
                // A refused retry deposits nothing.
            }
        }
        assert_eq!(granted, 124);
    }

    #[tokio::test(start_paused = true)]
    async fn the_spec_bound_holds_at_a_steady_rate() {
        // 20 requests/s for 30 s against a destination where every attempt
        // fails; each request retries while the budget allows, at most 3
        // times, and deposits when its attempts are used up. Per ttl
        // window retries stay within ratio x deposits + min x ttl (SPEC
        // 13.2); summed over the run (records live up to 1.1 ttl, so one
        // extra window's reserve).
        let s = spec(0.2, 2, 5);
        let b = RetryBudget::new(&s);
        let run = Duration::from_secs(30);
        let (mut retries, mut deposits) = (0u32, 0u32);
        let start = Instant::now();
        while start.elapsed() < run {
            let mut n = 0;
            while n < 3 && b.withdraw() {
                n += 1;
            }
            retries += n;
            if n == 3 {
                b.deposit();
                deposits += 1;
            }
            advance(Duration::from_millis(50)).await;
        }
        let windows = run.as_secs_f64() / s.ttl.as_secs_f64() + 1.0;
        let reserve = f64::from(s.min_retries_per_second) * s.ttl.as_secs_f64();
        let bound = s.retry_ratio * f64::from(deposits) + reserve * windows;
        assert!(f64::from(retries) <= bound, "{retries} > {bound}");
        // And the floor is really granted again once withdrawals age out.
        assert!(f64::from(retries) >= reserve * 5.0, "{retries}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_registry_keeps_a_budget_until_its_settings_change() {
        let budgets = RetryBudgets::new();
        let dest = DestinationKey {
            host: "api.prod.svc.cluster.local".into(),
            subset: None,
            port: None,
        };
        let s = spec(1.0, 1, 1);
        let a = budgets.get(&dest, &s);
        assert!(a.withdraw());
        let again = budgets.get(&dest, &s);
        assert!(Arc::ptr_eq(&a, &again), "same settings: same budget");
        assert!(!again.withdraw(), "the balance is shared");
        let changed = budgets.get(&dest, &spec(1.0, 2, 1));
        assert!(!Arc::ptr_eq(&a, &changed));
        assert!(
            budgets
                .existing(&dest)
                .is_some_and(|b| Arc::ptr_eq(&b, &changed))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_use_is_consistent() {
        let b = Arc::new(RetryBudget::new(&spec(1.0, 0, 1)));
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let b = Arc::clone(&b);
            tasks.push(tokio::spawn(async move {
                for _ in 0..1000 {
                    b.deposit();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(b.balance(), 4000);
    }
}
