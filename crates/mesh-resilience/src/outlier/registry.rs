//! The outlier registry: per cluster (destination × service port) and per
//! endpoint address, the runs of errors, the ejections and their sweeps,
//! kept outside the configuration snapshot so reloads keep them. Every
//! field on the request path is an atomic or an `ArcSwap`.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize};

use arc_swap::{ArcSwap, ArcSwapOption};
use http::Request;
use mesh_core::http::Body;
use mesh_core::snapshot::{Endpoint, HashMap, Snapshot};
use mesh_route::balance::{DestinationHealth, EndpointHealth, HealthQuery, PickedHealth};
use mesh_route::decision::{DestinationKey, RouteDecision};
use mesh_route::layer::{Target, route_decision, routed_table};
use tokio::time::Instant;

use super::policy::{
    OutlierPolicy, configures_outlier_detection, destination_policy, in_panic, may_eject, millis,
};

/// A snapshot of one endpoint's outlier state, for diagnostics and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostStatus {
    /// Whether it is ejected now.
    pub ejected: bool,
    /// How many times it was ejected so far.
    pub ejections: u64,
    /// The ejection-time multiplier the next ejection grows from.
    pub multiplier: u32,
    /// Its current run of 5xx errors.
    pub consecutive_5xx: u32,
    /// Its current run of gateway errors.
    pub consecutive_gateway: u32,
}

/// One endpoint's counters. `ejected_at` packs the state into one atomic
/// so a sweep never sees "ejected" with a stale time: 0 is in service,
/// otherwise it is 1 + the ejection time in ms since the registry's epoch.
#[derive(Debug)]
struct Host {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    consecutive_local: AtomicU32,
    ejected_at: AtomicU64,
    multiplier: AtomicU32,
    ejections: AtomicU64,
}

impl Host {
    fn new() -> Host {
        Host {
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway: AtomicU32::new(0),
            consecutive_local: AtomicU32::new(0),
            ejected_at: AtomicU64::new(0),
            multiplier: AtomicU32::new(0),
            ejections: AtomicU64::new(0),
        }
    }

    fn is_ejected(&self) -> bool {
        self.ejected_at.load(Relaxed) != 0
    }

    fn reset_counters(&self) {
        reset(&self.consecutive_5xx);
        reset(&self.consecutive_gateway);
        reset(&self.consecutive_local);
    }

    fn status(&self) -> HostStatus {
        HostStatus {
            ejected: self.is_ejected(),
            ejections: self.ejections.load(Relaxed),
            multiplier: self.multiplier.load(Relaxed),
            consecutive_5xx: self.consecutive_5xx.load(Relaxed),
            consecutive_gateway: self.consecutive_gateway.load(Relaxed),
        }
    }
}

/// Resets a counter, writing only when it is not already 0 so that a run of
/// successes does not bounce the cache line between cores.
fn reset(counter: &AtomicU32) {
    if counter.load(Relaxed) != 0 {
        counter.store(0, Relaxed);
    }
}

/// Adds one; true when that reaches `limit` (exactly, so a run trips once).
fn bump(counter: &AtomicU32, limit: u32) -> bool {
    let now = counter.fetch_add(1, Relaxed).wrapping_add(1);
    limit > 0 && now == limit
}

/// One attempt's result as outlier detection sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// A response with this status arrived from the endpoint.
    Response(u16),
    /// Connect failure, reset or timeout: no response.
    LocalFailure,
    /// Not the endpoint's doing (circuit breaker, no upstream).
    Ignored,
}

/// Which runs reached their threshold.
#[derive(Clone, Copy, Default)]
struct Tripped {
    consecutive_5xx: bool,
    gateway: bool,
    local: bool,
}

impl Tripped {
    fn any(self) -> bool {
        self.consecutive_5xx || self.gateway || self.local
    }
}

/// The outlier state of one cluster (destination × service port).
struct ClusterState {
    epoch: Instant,
    policy: ArcSwapOption<OutlierPolicy>,
    /// Snapshot generation the policy was read from (`u64::MAX`: none).
    generation: AtomicU64,
    /// Whether a policy is in force (mirrors `policy`, cheaper to read).
    enabled: AtomicBool,
    min_health_percent: AtomicU32,
    /// Endpoints by dialed `address:port`.
    hosts: ArcSwap<HashMap<Arc<str>, Arc<Host>>>,
    /// Endpoints ejected now.
    ejected: AtomicUsize,
    /// Endpoints whose multiplier is above 0 (sweeps must run to decay it).
    decaying: AtomicUsize,
    /// Endpoints in the cluster (the denominator of both percentages).
    total: AtomicUsize,
    /// The next sweep tick, in ms since `epoch`.
    next_sweep: AtomicU64,
    /// Ejections refused by `maxEjectionPercent`.
    overflows: AtomicU64,
}

impl ClusterState {
    fn new(epoch: Instant, policy: Option<OutlierPolicy>) -> ClusterState {
        let state = ClusterState {
            epoch,
            policy: ArcSwapOption::empty(),
            generation: AtomicU64::new(u64::MAX),
            enabled: AtomicBool::new(false),
            min_health_percent: AtomicU32::new(0),
            hosts: ArcSwap::from_pointee(HashMap::default()),
            ejected: AtomicUsize::new(0),
            decaying: AtomicUsize::new(0),
            total: AtomicUsize::new(0),
            next_sweep: AtomicU64::new(0),
            overflows: AtomicU64::new(0),
        };
        state.next_sweep.store(state.now_ms(), Relaxed);
        state.set_policy(policy);
        state
    }

    fn now_ms(&self) -> u64 {
        millis(Instant::now().saturating_duration_since(self.epoch))
    }

    fn set_policy(&self, policy: Option<OutlierPolicy>) {
        let current = self.policy.load();
        if current.as_deref() == policy.as_ref() {
            return;
        }
        match &policy {
            Some(p) => self.min_health_percent.store(p.min_health_percent, Relaxed),
            None => self.return_all(),
        }
        self.enabled.store(policy.is_some(), Relaxed);
        self.policy.store(policy.map(Arc::new));
    }

    /// Outlier detection was turned off: every endpoint back in service.
    fn return_all(&self) {
        for host in self.hosts.load().values() {
            self.forget(host);
        }
    }

    /// Clears an endpoint's ejection and multiplier, keeping the counts.
    fn forget(&self, host: &Host) {
        if host.ejected_at.swap(0, AcqRel) != 0 {
            self.ejected.fetch_sub(1, AcqRel);
        }
        if host.multiplier.swap(0, AcqRel) != 0 {
            self.decaying.fetch_sub(1, AcqRel);
        }
        host.reset_counters();
    }

    fn panic(&self, endpoints: usize) -> bool {
        let ejected = self.ejected.load(Relaxed);
        ejected > 0 && in_panic(ejected, endpoints, self.min_health_percent.load(Relaxed))
    }

    /// The endpoint dialed as `authority`, added on first sight (the
    /// standalone path, without a balancer that names the endpoints).
    fn host(&self, authority: &str) -> Arc<Host> {
        if let Some(host) = self.hosts.load().get(authority) {
            return Arc::clone(host);
        }
        let fresh = Arc::new(Host::new());
        let key: Arc<str> = Arc::from(authority);
        self.hosts.rcu(|current| {
            let mut next = HashMap::clone(current);
            next.entry(Arc::clone(&key))
                .or_insert_with(|| Arc::clone(&fresh));
            next
        });
        let hosts = self.hosts.load();
        self.total.store(hosts.len(), Relaxed);
        hosts.get(authority).map_or(fresh, Arc::clone)
    }

    /// The hosts of a new endpoint set, by the balancer's indexes: known
    /// addresses keep their state, new ones start clean, and endpoints no
    /// longer in the set are dropped (and their ejection with them).
    fn align(self: &Arc<Self>, query: &HealthQuery<'_>) -> HostSet {
        let authorities: Vec<Arc<str>> = query
            .endpoints
            .iter()
            .map(|e| (query.authority)(e))
            .collect();
        let previous = self.hosts.rcu(|current| {
            let mut next = HashMap::default();
            for a in &authorities {
                let host = current
                    .get(a)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Host::new()));
                next.insert(Arc::clone(a), host);
            }
            next
        });
        let current = self.hosts.load();
        for (authority, host) in previous.iter() {
            if !current.contains_key(authority) {
                self.forget(host);
            }
        }
        self.total.store(authorities.len(), Relaxed);
        let hosts = authorities
            .iter()
            .map(|a| {
                current
                    .get(a)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Host::new()))
            })
            .collect();
        HostSet {
            state: Arc::clone(self),
            endpoints: Arc::clone(query.endpoints),
            hosts,
        }
    }

    /// Charges one attempt's result to `host`, ejecting it when a run of
    /// errors reaches its threshold.
    fn record(&self, host: &Host, outcome: Outcome) {
        let guard = self.policy.load();
        let Some(policy) = guard.as_deref() else {
            return;
        };
        let mut tripped = Tripped::default();
        match outcome {
            Outcome::Ignored => return,
            Outcome::Response(status) => {
                if policy.consecutive_local_origin.is_some() {
                    reset(&host.consecutive_local);
                }
                let error = policy.is_error(status);
                let gateway = matches!(status, 502..=504);
                if error || gateway {
                    tripped = count_errors(host, policy, error, gateway);
                } else {
                    reset(&host.consecutive_5xx);
                    reset(&host.consecutive_gateway);
                }
            }
            Outcome::LocalFailure => match policy.consecutive_local_origin {
                Some(limit) => tripped.local = bump(&host.consecutive_local, limit),
                // Envoy reports them as 503 / 504: gateway errors, and 5xx.
                None => tripped = count_errors(host, policy, true, true),
            },
        }
        if tripped.any() && !host.is_ejected() {
            self.try_eject(host, policy);
            // Reset the runs that tripped, ejected or not (Envoy does), so
            // an overflowed endpoint needs a whole new run.
            if tripped.consecutive_5xx {
                reset(&host.consecutive_5xx);
            }
            if tripped.gateway {
                reset(&host.consecutive_gateway);
            }
            if tripped.local {
                reset(&host.consecutive_local);
            }
        }
        self.maybe_sweep();
    }

    fn try_eject(&self, host: &Host, policy: &OutlierPolicy) -> bool {
        let endpoints = self.total.load(Relaxed);
        let reserved = self.ejected.fetch_update(AcqRel, Acquire, |e| {
            may_eject(e, endpoints, policy.max_ejection_percent).then_some(e + 1)
        });
        if reserved.is_err() {
            self.overflows.fetch_add(1, Relaxed);
            return false;
        }
        let now = self.now_ms();
        if host
            .ejected_at
            .compare_exchange(0, now.saturating_add(1), AcqRel, Acquire)
            .is_err()
        {
            self.ejected.fetch_sub(1, AcqRel);
            return false;
        }
        host.ejections.fetch_add(1, Relaxed);
        // The multiplier grows while the ejection it gives is below the cap
        // (plus one base, as Envoy has it).
        let base = millis(policy.base_ejection_time);
        let cap = millis(policy.max_ejection_time.max(policy.base_ejection_time));
        let grown = host.multiplier.fetch_update(AcqRel, Acquire, |m| {
            (u64::from(m).saturating_mul(base) < cap.saturating_add(base)).then_some(m + 1)
        });
        if grown == Ok(0) {
            self.decaying.fetch_add(1, AcqRel);
        }
        true
    }

    /// Runs the `interval` sweeps that are due, if any: returns endpoints
    /// whose ejection is over and decays the multipliers of those in
    /// service. Sweeps tick on a fixed grid from the cluster's creation;
    /// missed ticks (no traffic) are caught up as if each had run.
    fn maybe_sweep(&self) {
        if self.ejected.load(Relaxed) == 0 && self.decaying.load(Relaxed) == 0 {
            return;
        }
        let now = self.now_ms();
        let next = self.next_sweep.load(Acquire);
        if now < next {
            return;
        }
        let Some(policy) = self.policy.load_full() else {
            return;
        };
        let interval = millis(policy.interval).max(1);
        let ticks = (now - next) / interval + 1;
        let last = next.saturating_add((ticks - 1).saturating_mul(interval));
        if self
            .next_sweep
            .compare_exchange(next, last.saturating_add(interval), AcqRel, Relaxed)
            .is_err()
        {
            return; // another thread sweeps
        }
        for host in self.hosts.load().values() {
            let at = host.ejected_at.load(Acquire);
            if at == 0 {
                self.decay(host, ticks);
                continue;
            }
            let due =
                (at - 1).saturating_add(policy.ejection_millis(host.multiplier.load(Acquire)));
            if due > last {
                continue;
            }
            // The tick that returned it; later ticks decay its multiplier.
            let returned = if due <= next {
                next
            } else {
                next + (due - next).div_ceil(interval) * interval
            };
            if host
                .ejected_at
                .compare_exchange(at, 0, AcqRel, Relaxed)
                .is_ok()
            {
                self.ejected.fetch_sub(1, AcqRel);
                host.reset_counters();
                self.decay(host, (last - returned) / interval);
            }
        }
    }

    fn decay(&self, host: &Host, ticks: u64) {
        let ticks = u32::try_from(ticks).unwrap_or(u32::MAX);
        if ticks == 0 {
            return;
        }
        let previous = host.multiplier.fetch_update(AcqRel, Acquire, |m| {
            (m > 0).then(|| m.saturating_sub(ticks))
        });
        if let Ok(m) = previous
            && m <= ticks
        {
            self.decaying.fetch_sub(1, AcqRel);
        }
    }
}

fn count_errors(host: &Host, policy: &OutlierPolicy, error: bool, gateway: bool) -> Tripped {
    let mut tripped = Tripped::default();
    if gateway {
        tripped.gateway = bump(&host.consecutive_gateway, policy.consecutive_gateway);
    } else {
        reset(&host.consecutive_gateway);
    }
    if error {
        tripped.consecutive_5xx = bump(&host.consecutive_5xx, policy.consecutive_5xx);
    } else {
        reset(&host.consecutive_5xx);
    }
    tripped
}

/// One cluster's endpoint hosts aligned with a balancer's endpoint indexes:
/// the [`DestinationHealth`] view the balance stage picks with.
struct HostSet {
    state: Arc<ClusterState>,
    /// The endpoint set it is aligned with (compared by pointer).
    endpoints: Arc<[Endpoint]>,
    hosts: Box<[Arc<Host>]>,
}

impl DestinationHealth for HostSet {
    fn eligible(&self, index: usize) -> bool {
        self.state.ejected.load(Relaxed) == 0
            || self.hosts.get(index).is_none_or(|h| !h.is_ejected())
    }

    fn panic(&self) -> bool {
        self.state.panic(self.hosts.len())
    }
}

struct Cluster {
    state: Arc<ClusterState>,
    aligned: ArcSwapOption<HostSet>,
}

impl Cluster {
    fn view(&self, query: &HealthQuery<'_>) -> Arc<HostSet> {
        if let Some(set) = &*self.aligned.load()
            && Arc::ptr_eq(&set.endpoints, query.endpoints)
        {
            return Arc::clone(set);
        }
        let set = Arc::new(self.state.align(query));
        self.aligned.store(Some(Arc::clone(&set)));
        set
    }
}

/// A destination's clusters by service port.
type PortClusters = Arc<[(u32, Arc<Cluster>)]>;

enum Source {
    Fixed(OutlierPolicy),
    DestinationRules,
}

/// Outlier state of every destination, kept across configuration reloads;
/// also the balance stage's [`EndpointHealth`].
pub struct Outliers {
    source: Source,
    epoch: Instant,
    /// Clusters by destination, then by service port (usually one).
    clusters: ArcSwap<HashMap<DestinationKey, PortClusters>>,
    /// The destination of requests that carry no route decision.
    pub(super) unrouted: DestinationKey,
    /// Under DestinationRules: whether the snapshot of one generation
    /// configures outlier detection anywhere, packed as `generation << 1 |
    /// configured` (`u64::MAX`: not known yet). Most configurations have
    /// none, and then a request needs no cluster lookup at all (two per
    /// request otherwise: the balance stage's view and this stage's).
    detection: AtomicU64,
}

impl std::fmt::Debug for Outliers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outliers")
            .field("destinations", &self.clusters.load().len())
            .finish_non_exhaustive()
    }
}

/// The port key of clusters seen only by the outlier stage (no balancer
/// named their endpoints).
const UNBALANCED: u32 = 0;

impl Outliers {
    /// Every destination judged by `policy`.
    pub fn new(policy: OutlierPolicy) -> Outliers {
        Outliers::with_source(Source::Fixed(policy))
    }

    /// Each destination judged by its DestinationRule's `outlierDetection`
    /// in the snapshot the request was routed with ([`destination_policy`]);
    /// destinations without one are not tracked.
    pub fn from_destination_rules() -> Outliers {
        Outliers::with_source(Source::DestinationRules)
    }

    fn with_source(source: Source) -> Outliers {
        Outliers {
            source,
            epoch: Instant::now(),
            clusters: ArcSwap::from_pointee(HashMap::default()),
            unrouted: DestinationKey {
                host: Arc::from(""),
                subset: None,
                port: None,
            },
            detection: AtomicU64::new(u64::MAX),
        }
    }

    /// Whether outlier detection may be on for some destination of
    /// `snapshot`: always under a fixed policy; under DestinationRules,
    /// whether one configures it (read once per snapshot generation).
    fn detection_configured(&self, snapshot: &Snapshot) -> bool {
        if matches!(self.source, Source::Fixed(_)) {
            return true;
        }
        let Some(key) = snapshot.generation.checked_mul(2) else {
            return true;
        };
        let known = self.detection.load(Acquire);
        if known | 1 == key | 1 {
            return known & 1 == 1;
        }
        let configured = configures_outlier_detection(snapshot);
        if !configured {
            // What `refresh` would find for each cluster on its next
            // request, done now: detection is off everywhere, and every
            // endpoint back in service.
            for ports in self.clusters.load().values() {
                for (_, cluster) in ports.iter() {
                    cluster.state.set_policy(None);
                    cluster.state.generation.store(snapshot.generation, Release);
                }
            }
        }
        self.detection.store(key | u64::from(configured), Release);
        configured
    }

    fn cluster(&self, dest: &DestinationKey, port: u32) -> Arc<Cluster> {
        if let Some(ports) = self.clusters.load().get(dest)
            && let Some((_, cluster)) = ports.iter().find(|(p, _)| *p == port)
        {
            return Arc::clone(cluster);
        }
        let initial = match &self.source {
            Source::Fixed(policy) => Some(policy.clone()),
            Source::DestinationRules => None,
        };
        let fresh = Arc::new(Cluster {
            state: Arc::new(ClusterState::new(self.epoch, initial)),
            aligned: ArcSwapOption::empty(),
        });
        let mut chosen = Arc::clone(&fresh);
        self.clusters.rcu(|current| {
            let mut next = HashMap::clone(current);
            let mut ports: Vec<(u32, Arc<Cluster>)> =
                current.get(dest).map(|p| p.to_vec()).unwrap_or_default();
            match ports.iter().find(|(p, _)| *p == port) {
                Some((_, existing)) => chosen = Arc::clone(existing),
                None => {
                    chosen = Arc::clone(&fresh);
                    ports.push((port, Arc::clone(&fresh)));
                }
            }
            next.insert(dest.clone(), ports.into());
            next
        });
        chosen
    }

    /// Brings the cluster's policy up to `snapshot`; whether detection is on.
    fn refresh(
        &self,
        state: &ClusterState,
        snapshot: Option<&Snapshot>,
        dest: &DestinationKey,
        port: Option<u32>,
    ) -> bool {
        if let (Source::DestinationRules, Some(snapshot)) = (&self.source, snapshot)
            && state.generation.load(Acquire) != snapshot.generation
        {
            state.set_policy(destination_policy(snapshot, dest, port));
            state.generation.store(snapshot.generation, Release);
        }
        state.enabled.load(Relaxed)
    }

    /// Where a request's result is recorded: the host the balancer picked
    /// (from its [`PickedHealth`]), else the [`Target`]'s address in the
    /// request's destination (standalone use).
    pub(super) fn pending(&self, req: &mut Request<Body>) -> Pending {
        Pending(self.slot(req))
    }

    fn slot(&self, req: &mut Request<Body>) -> Option<Slot> {
        let index = req.extensions().get::<Target>()?.endpoint;
        if let Some(PickedHealth(view)) = req.extensions_mut().remove::<PickedHealth>() {
            let any: Arc<dyn Any + Send + Sync> = view;
            if let Ok(set) = any.downcast::<HostSet>()
                && index < set.hosts.len()
            {
                return Some(Slot::Picked(set, index));
            }
        }
        let dest = route_decision(req.extensions())
            .and_then(RouteDecision::forward)
            .map_or(&self.unrouted, |f| &f.destination);
        let snapshot = routed_table(req.extensions()).map(|t| &*t.snapshot);
        if snapshot.is_some_and(|s| !self.detection_configured(s)) {
            return None;
        }
        let cluster = self.cluster(dest, UNBALANCED);
        if !self.refresh(&cluster.state, snapshot, dest, None) {
            return None;
        }
        let target = req.extensions().get::<Target>()?;
        let host = cluster.state.host(&target.authority);
        Some(Slot::Direct(Arc::clone(&cluster.state), host))
    }

    /// The state of the endpoint dialed as `authority` in `dest` (`None`
    /// for requests without a route decision), if it was seen.
    pub fn status_in(&self, dest: Option<&DestinationKey>, authority: &str) -> Option<HostStatus> {
        let dest = dest.unwrap_or(&self.unrouted);
        let clusters = self.clusters.load();
        clusters.get(dest)?.iter().find_map(|(_, c)| {
            c.state.maybe_sweep();
            c.state.hosts.load().get(authority).map(|h| h.status())
        })
    }

    /// The state of the endpoint dialed as `authority` in any destination
    /// (ejected if ejected anywhere), if it was seen.
    pub fn status(&self, authority: &str) -> Option<HostStatus> {
        let clusters = self.clusters.load();
        let mut found: Option<HostStatus> = None;
        for cluster in clusters.values().flat_map(|ports| ports.iter()) {
            cluster.1.state.maybe_sweep();
            if let Some(s) = cluster
                .1
                .state
                .hosts
                .load()
                .get(authority)
                .map(|h| h.status())
            {
                found = Some(match found {
                    Some(f) if f.ejected && !s.ejected => f,
                    _ => s,
                });
            }
        }
        found
    }

    /// Ejections `maxEjectionPercent` refused in `dest`, so far.
    pub fn overflows(&self, dest: &DestinationKey) -> u64 {
        self.clusters.load().get(dest).map_or(0, |ports| {
            ports
                .iter()
                .map(|(_, c)| c.state.overflows.load(Relaxed))
                .sum()
        })
    }
}

impl EndpointHealth for Outliers {
    fn view(&self, query: &HealthQuery<'_>) -> Option<Arc<dyn DestinationHealth>> {
        if !self.detection_configured(query.snapshot) {
            return None;
        }
        let (dest, port) = (query.destination, query.port);
        let view = |cluster: &Cluster| -> Option<Arc<dyn DestinationHealth>> {
            if !self.refresh(&cluster.state, Some(query.snapshot), dest, Some(port)) {
                return None;
            }
            cluster.state.maybe_sweep();
            Some(cluster.view(query))
        };
        // Known destinations (every request but the first) are looked up
        // under the map's guard, without touching the cluster's count.
        if let Some(ports) = self.clusters.load().get(dest)
            && let Some((_, cluster)) = ports.iter().find(|(p, _)| *p == port)
        {
            return view(cluster);
        }
        view(&self.cluster(dest, port))
    }
}

/// Where one attempt's result goes.
enum Slot {
    /// The host at this index of the view the balancer picked with.
    Picked(Arc<HostSet>, usize),
    /// A host found by address (no balancer view).
    Direct(Arc<ClusterState>, Arc<Host>),
}

impl Slot {
    fn record(&self, outcome: Outcome) {
        match self {
            Slot::Picked(set, index) => {
                if let Some(host) = set.hosts.get(*index) {
                    set.state.record(host, outcome);
                }
            }
            Slot::Direct(state, host) => state.record(host, outcome),
        }
    }
}

/// An attempt whose result is still to be recorded; records it as
/// abandoned (a local-origin timeout) when dropped before [`finish`].
///
/// [`finish`]: Pending::finish
pub(super) struct Pending(Option<Slot>);

impl Pending {
    /// Records the attempt's result (once).
    pub(super) fn finish(&mut self, outcome: Outcome) {
        if let Some(slot) = self.0.take() {
            slot.record(outcome);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            slot.record(Outcome::LocalFailure);
        }
    }
}
