//! Local rate limiting (Linkerd's `HTTPLocalRateLimitPolicy`, SPEC 13.4):
//! the last inbound stage before the local application (SPEC 1.2, DESIGN
//! "Inbound"), so an application is protected from more traffic than it
//! was sized for, by each proxy on its own, without a rate-limit service.
//!
//! A policy has up to three kinds of limit, each a GCRA token bucket from
//! [`governor`] that holds `requestsPerSecond` tokens and refills at that
//! rate (so a burst of up to that many requests passes at once):
//!
//! - `total`: one bucket for all traffic to the target Server.
//! - `identity`: one bucket **per client identity** (the mTLS peer identity,
//!   [`PeerIdentity`] in the request's extensions). Requests without an
//!   identity (plaintext clients, or before mTLS is in place) all share one
//!   "unauthenticated" bucket of this size, as in Linkerd.
//! - `overrides`: a bucket per override entry, shared by the clients
//!   (ServiceAccounts) it lists; a listed client uses it **instead of** the
//!   per-identity bucket. Identities are matched by service account in
//!   either spelling (`spiffe://td/ns/N/sa/S` or
//!   `S.N.serviceaccount.identity.linkerd.td`).
//!
//! A request takes a token from the total bucket first, then from its
//! override or identity bucket (so one that its own bucket refuses has still
//! spent a total token, as in Linkerd); the first empty bucket answers 429
//! with flag `RL` (SPEC 2; a gRPC caller gets RESOURCE_EXHAUSTED) and the
//! request never reaches the application. Only the excess is refused: a limit
//! costs nothing to requests under it but one bucket update each.
//!
//! In the sidecar the policy comes from the configuration: the
//! `HTTPLocalRateLimitPolicy` whose `targetRef` is a `Server` selecting this
//! workload (`podSelector` against the workload's labels, `port` against
//! the application port) applies ([`inbound_policy`]). A reload that leaves
//! the policy unchanged keeps the buckets (and their spent tokens); a
//! changed policy starts with full buckets.
//!
//! ```
//! use std::num::NonZeroU32;
//! use mesh_resilience::rate_limit::{RateLimitLayer, RateLimitPolicy};
//!
//! // Alone: 100 requests/s in all, 20 per client identity.
//! let policy = RateLimitPolicy {
//!     total: NonZeroU32::new(100),
//!     identity: NonZeroU32::new(20),
//!     overrides: Vec::new(),
//! };
//! let layer = RateLimitLayer::new(policy);
//! # let _ = layer;
//! ```

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};

use arc_swap::ArcSwapOption;
use governor::Quota;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use http::{Request, Response, StatusCode};
use mesh_core::http::{Body, MeshError, local_reply};
use mesh_core::identity::{PeerIdentity, Workload};
use mesh_core::reload::SnapshotHandle;
use mesh_core::resource::{Resource, Spec};
use mesh_core::schema::common::PortRef;
use mesh_core::schema::linkerd_policy::{HttpLocalRateLimitPolicy, Server};
use mesh_core::snapshot::Snapshot;
use tokio::sync::watch;

// ---------------------------------------------------------------------------
// Policy
// ---------------------------------------------------------------------------

/// A local rate-limit policy: the typed form of `HTTPLocalRateLimitPolicy`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct RateLimitPolicy {
    /// Requests per second for all traffic together; none: no total limit.
    pub total: Option<NonZeroU32>,
    /// Requests per second for each client identity (clients without one
    /// share one bucket); none: no per-identity limit.
    pub identity: Option<NonZeroU32>,
    /// Limits for listed clients, used instead of `identity` for them.
    pub overrides: Vec<RateLimitOverride>,
}

/// A limit for the listed clients, shared by all of them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RateLimitOverride {
    /// Requests per second.
    pub requests_per_second: NonZeroU32,
    /// The clients, by service account.
    pub clients: Vec<ClientServiceAccount>,
}

/// A client named by its Kubernetes service account.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientServiceAccount {
    /// The service account's namespace.
    pub namespace: String,
    /// The service account's name.
    pub name: String,
}

impl ClientServiceAccount {
    fn is(&self, peer: &PeerIdentity) -> bool {
        peer.service_account()
            .is_some_and(|(ns, sa)| ns == self.namespace && sa == self.name)
    }
}

/// Why an `HTTPLocalRateLimitPolicy` cannot become a [`RateLimitPolicy`].
/// Validation reports the same problems at load time, so a loaded
/// configuration never has them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RateLimitPolicyError {
    /// A `requestsPerSecond` is 0.
    #[error("{0}.requestsPerSecond must be at least 1")]
    ZeroRate(&'static str),
    /// An override lists no clients.
    #[error("an override needs clientRefs")]
    NoClients,
    /// A client reference is not a ServiceAccount.
    #[error("clientRefs kind {0:?} is not supported; use ServiceAccount")]
    ClientKind(String),
}

impl RateLimitPolicy {
    /// Converts the Linkerd resource's spec; `namespace` is the resource's
    /// own (the default namespace of its `clientRefs`).
    pub fn from_linkerd(
        spec: &HttpLocalRateLimitPolicy,
        namespace: &str,
    ) -> Result<RateLimitPolicy, RateLimitPolicyError> {
        let rate = |n: u32, what| NonZeroU32::new(n).ok_or(RateLimitPolicyError::ZeroRate(what));
        let total = spec
            .total
            .as_ref()
            .map(|t| rate(t.requests_per_second, "total"))
            .transpose()?;
        let identity = spec
            .identity
            .as_ref()
            .map(|i| rate(i.requests_per_second, "identity"))
            .transpose()?;
        let overrides = spec
            .overrides
            .iter()
            .map(|o| {
                if o.client_refs.is_empty() {
                    return Err(RateLimitPolicyError::NoClients);
                }
                let clients = o
                    .client_refs
                    .iter()
                    .map(|r| {
                        if !r.is_kind("ServiceAccount") {
                            return Err(RateLimitPolicyError::ClientKind(r.kind.clone()));
                        }
                        Ok(ClientServiceAccount {
                            namespace: r
                                .namespace
                                .as_deref()
                                .filter(|ns| !ns.is_empty())
                                .unwrap_or(namespace)
                                .to_owned(),
                            name: r.name.clone(),
                        })
                    })
                    .collect::<Result<_, _>>()?;
                Ok(RateLimitOverride {
                    requests_per_second: rate(o.requests_per_second, "overrides")?,
                    clients,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(RateLimitPolicy {
            total,
            identity,
            overrides,
        })
    }

    /// Whether the policy limits nothing.
    pub fn is_empty(&self) -> bool {
        self.total.is_none() && self.identity.is_none() && self.overrides.is_empty()
    }
}

impl TryFrom<&Resource> for RateLimitPolicy {
    type Error = RateLimitPolicyError;

    /// Converts an `HTTPLocalRateLimitPolicy` resource; any other kind is a
    /// policy that limits nothing.
    fn try_from(resource: &Resource) -> Result<Self, Self::Error> {
        match &resource.spec {
            Spec::HttpLocalRateLimitPolicy(spec) => {
                RateLimitPolicy::from_linkerd(spec, resource.namespace())
            }
            _ => Ok(RateLimitPolicy::default()),
        }
    }
}

// ---------------------------------------------------------------------------
// Which policy applies to this workload
// ---------------------------------------------------------------------------

/// Earliest first: creation time when set (those with one first), then
/// load order, as everywhere else "the earliest wins".
fn earliest(r: &Resource) -> (bool, Option<&str>, usize) {
    let created = r.meta.creation_timestamp.as_deref();
    (created.is_none(), created, r.order)
}

/// Whether a Server selects this workload's port. A named port cannot be
/// resolved without the pod's container ports; the sidecar serves one
/// application port, so a named port is taken to be that one.
fn selects(server: &Server, workload: &Workload, ports: &[u16]) -> bool {
    let labels = server
        .pod_selector
        .as_ref()
        .is_some_and(|s| s.matches(&workload.labels));
    let port = match &server.port {
        PortRef::Number(n) => ports.iter().any(|p| u32::from(*p) == *n),
        PortRef::Name(_) => true,
    };
    labels && port
}

/// The local rate-limit policy of inbound traffic to `workload` on the
/// application port(s) `ports`: the `HTTPLocalRateLimitPolicy` whose
/// `targetRef` names a `Server` of the workload's namespace that selects
/// the workload (`podSelector`) and the port. When Servers overlap (Linkerd
/// forbids it) or several policies name one Server (likewise), the
/// earliest wins. `None` when no policy applies.
pub fn inbound_policy(
    snapshot: &Snapshot,
    workload: &Workload,
    ports: &[u16],
) -> Result<Option<RateLimitPolicy>, RateLimitPolicyError> {
    let namespaces = &snapshot.index.namespaces;
    let Some(local) = namespaces.get(&workload.namespace) else {
        return Ok(None);
    };
    let mut servers: Vec<&Resource> = local
        .linkerd_policies
        .iter()
        .filter(|r| matches!(&r.spec, Spec::Server(s) if selects(s, workload, ports)))
        .map(|r| &**r)
        .collect();
    if servers.is_empty() {
        return Ok(None);
    }
    servers.sort_by(|a, b| earliest(a).cmp(&earliest(b)));
    let mut policies: Vec<(&Resource, &HttpLocalRateLimitPolicy)> = namespaces
        .values()
        .flat_map(|p| p.linkerd_policies.iter())
        .filter_map(|r| match &r.spec {
            Spec::HttpLocalRateLimitPolicy(p) => Some((&**r, p)),
            _ => None,
        })
        .filter(|(r, p)| {
            p.target_ref.is_kind("Server")
                && p.target_ref.namespace.as_deref().unwrap_or(r.namespace()) == workload.namespace
        })
        .collect();
    policies.sort_by(|a, b| earliest(a.0).cmp(&earliest(b.0)));
    for server in servers {
        if let Some((r, p)) = policies
            .iter()
            .find(|(_, p)| p.target_ref.name == server.name())
        {
            return RateLimitPolicy::from_linkerd(p, r.namespace()).map(Some);
        }
    }
    Ok(None)
}

// ---------------------------------------------------------------------------
// Buckets
// ---------------------------------------------------------------------------

type Direct<C> =
    governor::RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;
type Keyed<C> = governor::RateLimiter<
    Option<PeerIdentity>,
    DashMapStateStore<Option<PeerIdentity>>,
    C,
    NoOpMiddleware<<C as Clock>::Instant>,
>;

/// Which limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Limited {
    /// The total limit.
    #[error("total rate limit exceeded ({0} requests/s)")]
    Total(NonZeroU32),
    /// The client's per-identity limit (or the shared unauthenticated one).
    #[error("per-identity rate limit exceeded ({0} requests/s)")]
    Identity(NonZeroU32),
    /// The client's override limit.
    #[error("override rate limit exceeded ({0} requests/s)")]
    Override(NonZeroU32),
}

impl Limited {
    /// The failure the caller sees: 429, flag `RL`.
    pub fn to_mesh_error(self) -> MeshError {
        MeshError::RateLimited(match self {
            Limited::Total(_) => "total",
            Limited::Identity(_) => "per-identity",
            Limited::Override(_) => "override",
        })
    }
}

/// How many per-identity checks pass between prunings of the buckets that
/// have refilled (a full bucket is the same as no bucket).
const PRUNE_EVERY: u32 = 4096;

/// The buckets of one [`RateLimitPolicy`]. `C` is the clock (governor's
/// default in production; `FakeRelativeClock` in tests).
pub struct RateLimiter<C: Clock = DefaultClock> {
    policy: RateLimitPolicy,
    total: Option<Direct<C>>,
    per_identity: Option<Keyed<C>>,
    overrides: Vec<Direct<C>>,
    checks: AtomicU32,
}

impl<C: Clock> std::fmt::Debug for RateLimiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl RateLimiter<DefaultClock> {
    /// Full buckets for `policy`.
    pub fn new(policy: RateLimitPolicy) -> Self {
        RateLimiter::with_clock(policy, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimiter<C> {
    /// Full buckets for `policy`, timed by `clock`.
    pub fn with_clock(policy: RateLimitPolicy, clock: C) -> Self {
        let direct =
            |rps| governor::RateLimiter::direct_with_clock(Quota::per_second(rps), clock.clone());
        RateLimiter {
            total: policy.total.map(direct),
            per_identity: policy.identity.map(|rps| {
                governor::RateLimiter::dashmap_with_clock(Quota::per_second(rps), clock.clone())
            }),
            overrides: policy
                .overrides
                .iter()
                .map(|o| direct(o.requests_per_second))
                .collect(),
            policy,
            checks: AtomicU32::new(0),
        }
    }
}

impl<C: Clock> RateLimiter<C> {
    /// The policy these buckets enforce.
    pub fn policy(&self) -> &RateLimitPolicy {
        &self.policy
    }

    /// Takes a token for one request from `peer` (none: an unauthenticated
    /// client), or says which limit refuses it.
    pub fn check(&self, peer: Option<&PeerIdentity>) -> Result<(), Limited> {
        if let (Some(rps), Some(bucket)) = (self.policy.total, &self.total) {
            bucket.check().map_err(|_| Limited::Total(rps))?;
        }
        if let Some(peer) = peer
            && let Some(i) = self
                .policy
                .overrides
                .iter()
                .position(|o| o.clients.iter().any(|c| c.is(peer)))
            && let Some(bucket) = self.overrides.get(i)
        {
            let rps = self.policy.overrides[i].requests_per_second;
            return bucket.check().map_err(|_| Limited::Override(rps));
        }
        if let (Some(rps), Some(buckets)) = (self.policy.identity, &self.per_identity) {
            // Clients without an identity share the `None` bucket.
            let verdict = buckets
                .check_key(&peer.cloned())
                .map_err(|_| Limited::Identity(rps));
            if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
                buckets.retain_recent();
            }
            verdict?;
        }
        Ok(())
    }

    /// How many per-identity buckets exist (clients seen recently).
    pub fn identities(&self) -> usize {
        self.per_identity.as_ref().map_or(0, |b| b.len())
    }
}

// ---------------------------------------------------------------------------
// The limiter in force, swapped on reload
// ---------------------------------------------------------------------------

/// Where a shared limiter's policy comes from when it follows the
/// configuration.
struct InboundSource {
    snapshots: SnapshotHandle,
    workload: Arc<Workload>,
    ports: Vec<u16>,
    /// One more than the snapshot generation the limiter reflects (0:
    /// none yet).
    applied: AtomicU64,
    /// Held by the one request that recomputes the policy after a reload.
    refreshing: AtomicBool,
}

struct SharedInner<C: Clock> {
    current: ArcSwapOption<RateLimiter<C>>,
    clock: C,
    source: Option<InboundSource>,
}

/// The limiter in force, shared by every connection of a listener and
/// replaced whole when the policy changes. Cloning shares it.
pub struct SharedRateLimiter<C: Clock = DefaultClock> {
    inner: Arc<SharedInner<C>>,
}

impl<C: Clock> Clone for SharedRateLimiter<C> {
    fn clone(&self) -> Self {
        SharedRateLimiter {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl SharedRateLimiter<DefaultClock> {
    /// No limit until [`update`](Self::update) puts a policy in force.
    pub fn new() -> Self {
        SharedRateLimiter::with_clock(DefaultClock::default())
    }

    /// Follows the configuration: the policy is [`inbound_policy`] of
    /// `workload` on `ports`, recomputed after each new snapshot (by the
    /// first request that sees it, before it is checked).
    pub fn inbound(snapshots: SnapshotHandle, workload: Arc<Workload>, ports: Vec<u16>) -> Self {
        SharedRateLimiter::inbound_with_clock(snapshots, workload, ports, DefaultClock::default())
    }
}

impl Default for SharedRateLimiter<DefaultClock> {
    fn default() -> Self {
        SharedRateLimiter::new()
    }
}

impl<C: Clock + Clone> SharedRateLimiter<C> {
    /// No limit until a policy is put in force; buckets timed by `clock`.
    pub fn with_clock(clock: C) -> Self {
        SharedRateLimiter {
            inner: Arc::new(SharedInner {
                current: ArcSwapOption::empty(),
                clock,
                source: None,
            }),
        }
    }

    /// [`inbound`](SharedRateLimiter::inbound), timed by `clock`.
    pub fn inbound_with_clock(
        snapshots: SnapshotHandle,
        workload: Arc<Workload>,
        ports: Vec<u16>,
        clock: C,
    ) -> Self {
        let shared = SharedRateLimiter {
            inner: Arc::new(SharedInner {
                current: ArcSwapOption::empty(),
                clock,
                source: Some(InboundSource {
                    snapshots,
                    workload,
                    ports,
                    applied: AtomicU64::new(0),
                    refreshing: AtomicBool::new(false),
                }),
            }),
        };
        shared.refresh();
        shared
    }

    /// Puts `policy` in force (none, or an empty one: no limit). An
    /// unchanged policy keeps its buckets; returns whether it changed.
    pub fn update(&self, policy: Option<RateLimitPolicy>) -> bool {
        let policy = policy.filter(|p| !p.is_empty());
        let current = self.inner.current.load();
        if current.as_deref().map(RateLimiter::policy) == policy.as_ref() {
            return false;
        }
        let next = policy.map(|p| Arc::new(RateLimiter::with_clock(p, self.inner.clock.clone())));
        self.inner.current.store(next);
        true
    }

    /// The limiter in force, if any.
    pub fn current(&self) -> Option<Arc<RateLimiter<C>>> {
        self.inner.current.load_full()
    }

    /// The snapshot generation the policy in force was computed from (0
    /// when it does not follow a configuration).
    pub fn applied_generation(&self) -> u64 {
        self.inner
            .source
            .as_ref()
            .map_or(0, |s| s.applied.load(Ordering::Acquire).saturating_sub(1))
    }

    /// Recomputes the policy from the newest snapshot if it is newer than
    /// the one applied. Returns false when another caller is doing it now
    /// (try again later).
    fn refresh(&self) -> bool {
        let Some(source) = &self.inner.source else {
            return true;
        };
        if source
            .refreshing
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        let snapshot = source.snapshots.load();
        let next = snapshot.generation.saturating_add(1);
        if next > source.applied.load(Ordering::Acquire) {
            // A policy that does not convert cannot pass validation; if one
            // ever did, the limits in force stay, as a refused reload keeps
            // the running configuration.
            if let Ok(policy) = inbound_policy(&snapshot, &source.workload, &source.ports) {
                self.update(policy);
            }
            source.applied.store(next, Ordering::Release);
        }
        source.refreshing.store(false, Ordering::Release);
        true
    }

    fn subscribe(&self) -> Option<watch::Receiver<u64>> {
        self.inner.source.as_ref().map(|s| s.snapshots.subscribe())
    }
}

// ---------------------------------------------------------------------------
// Layer and service
// ---------------------------------------------------------------------------

/// Layer of the rate-limit stage.
pub struct RateLimitLayer<C: Clock = DefaultClock> {
    limiter: SharedRateLimiter<C>,
}

impl<C: Clock> Clone for RateLimitLayer<C> {
    fn clone(&self) -> Self {
        RateLimitLayer {
            limiter: self.limiter.clone(),
        }
    }
}

impl RateLimitLayer<DefaultClock> {
    /// Every request is checked against `policy`.
    pub fn new(policy: RateLimitPolicy) -> Self {
        let limiter = SharedRateLimiter::new();
        limiter.update(Some(policy));
        RateLimitLayer { limiter }
    }

    /// Inbound traffic to `workload` on `ports`, limited by the policy the
    /// configuration gives it (see [`inbound_policy`]), kept current across
    /// reloads.
    pub fn inbound(snapshots: SnapshotHandle, workload: Arc<Workload>, ports: Vec<u16>) -> Self {
        RateLimitLayer {
            limiter: SharedRateLimiter::inbound(snapshots, workload, ports),
        }
    }
}

impl<C: Clock> RateLimitLayer<C> {
    /// Requests are checked against whatever `limiter` holds.
    pub fn shared(limiter: SharedRateLimiter<C>) -> Self {
        RateLimitLayer { limiter }
    }
}

impl<S, C: Clock + Clone> tower::Layer<S> for RateLimitLayer<C> {
    type Service = RateLimit<S, C>;

    fn layer(&self, inner: S) -> RateLimit<S, C> {
        RateLimit {
            inner,
            changes: self.limiter.subscribe(),
            limiter: self.limiter.clone(),
        }
    }
}

/// The rate-limit stage.
pub struct RateLimit<S, C: Clock = DefaultClock> {
    inner: S,
    limiter: SharedRateLimiter<C>,
    changes: Option<watch::Receiver<u64>>,
}

impl<S: Clone, C: Clock> Clone for RateLimit<S, C> {
    fn clone(&self) -> Self {
        RateLimit {
            inner: self.inner.clone(),
            limiter: self.limiter.clone(),
            changes: self.changes.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of the rate-limit stage: the inner call, or the 429.
    // pin-project-lite takes no doc comments on variant fields; the
    // variants' docs say what they hold.
    #[allow(missing_docs)]
    #[project = ResponseProj]
    pub enum ResponseFuture<F> {
        /// Within the limits: the inner call.
        Inner {
            #[pin]
            call: F,
        },
        /// Refused: the local reply (taken when polled).
        Limited {
            reply: Option<Response<Body>>,
        },
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ResponseProj::Inner { call } => call.poll(cx),
            ResponseProj::Limited { reply } => Poll::Ready(Ok(reply.take().unwrap_or_else(|| {
                local_reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "-",
                    "rate-limit stage polled after completion",
                )
            }))),
        }
    }
}

impl<S, C> tower::Service<Request<Body>> for RateLimit<S, C>
where
    S: tower::Service<Request<Body>, Response = Response<Body>>,
    C: Clock + Clone,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // One atomic load per request tells whether the configuration
        // changed; the first request after a reload recomputes the policy.
        if let Some(changes) = &mut self.changes
            && changes.has_changed().unwrap_or(false)
            && self.limiter.refresh()
        {
            changes.mark_unchanged();
        }
        let verdict = match &*self.limiter.inner.current.load() {
            Some(limiter) => limiter.check(req.extensions().get::<PeerIdentity>()),
            None => Ok(()),
        };
        match verdict {
            Ok(()) => ResponseFuture::Inner {
                call: self.inner.call(req),
            },
            Err(limited) => ResponseFuture::Limited {
                reply: Some(limited.to_mesh_error().reply_to(req.headers())),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use governor::clock::FakeRelativeClock;
    use mesh_core::http::{RESPONSE_FLAGS_HEADER, empty};
    use mesh_core::load::{LoadOptions, load_str};
    use tower::{Layer, ServiceExt};

    use super::*;

    fn rps(n: u32) -> Option<NonZeroU32> {
        NonZeroU32::new(n)
    }

    fn id(text: &str) -> PeerIdentity {
        PeerIdentity::from(text)
    }

    /// Counts how many of `n` checks from `peer` pass.
    fn passes(
        limiter: &RateLimiter<FakeRelativeClock>,
        peer: Option<&PeerIdentity>,
        n: usize,
    ) -> usize {
        (0..n).filter(|_| limiter.check(peer).is_ok()).count()
    }

    #[test]
    fn a_burst_above_the_total_passes_the_limit_and_refills_at_the_rate() {
        let clock = FakeRelativeClock::default();
        let policy = RateLimitPolicy {
            total: rps(5),
            ..RateLimitPolicy::default()
        };
        let limiter = RateLimiter::with_clock(policy, clock.clone());
        assert_eq!(passes(&limiter, None, 12), 5);
        assert_eq!(
            limiter.check(None),
            Err(Limited::Total(NonZeroU32::MIN.saturating_add(4)))
        );
        // One token every 200 ms.
        clock.advance(Duration::from_millis(199));
        assert_eq!(passes(&limiter, None, 3), 0);
        clock.advance(Duration::from_millis(1));
        assert_eq!(passes(&limiter, None, 3), 1);
        // A full second refills the whole burst, never more.
        clock.advance(Duration::from_secs(10));
        assert_eq!(
            passes(
                &limiter,
                Some(&id("a.ns.serviceaccount.identity.linkerd.cluster.local")),
                20
            ),
            5
        );
    }

    #[test]
    fn each_identity_has_its_own_bucket_and_unauthenticated_clients_share_one() {
        let clock = FakeRelativeClock::default();
        let policy = RateLimitPolicy {
            identity: rps(2),
            ..RateLimitPolicy::default()
        };
        let limiter = RateLimiter::with_clock(policy, clock);
        let a = id("spiffe://cluster.local/ns/prod/sa/a");
        let b = id("spiffe://cluster.local/ns/prod/sa/b");
        assert_eq!(passes(&limiter, Some(&a), 5), 2);
        assert_eq!(
            limiter.check(Some(&a)),
            Err(Limited::Identity(NonZeroU32::MIN.saturating_add(1)))
        );
        assert_eq!(passes(&limiter, Some(&b), 5), 2);
        assert_eq!(passes(&limiter, None, 5), 2, "the unauthenticated bucket");
        assert_eq!(passes(&limiter, None, 5), 0);
        assert_eq!(limiter.identities(), 3);
    }

    #[test]
    fn overrides_replace_the_identity_limit_for_listed_clients_in_either_spelling() {
        let clock = FakeRelativeClock::default();
        let policy = RateLimitPolicy {
            total: rps(100),
            identity: rps(1),
            overrides: vec![RateLimitOverride {
                requests_per_second: NonZeroU32::MIN.saturating_add(3),
                clients: vec![ClientServiceAccount {
                    namespace: "emojivoto".into(),
                    name: "special-client".into(),
                }],
            }],
        };
        let limiter = RateLimiter::with_clock(policy, clock);
        let linkerd = id("special-client.emojivoto.serviceaccount.identity.linkerd.cluster.local");
        let spiffe = id("spiffe://cluster.local/ns/emojivoto/sa/special-client");
        let other = id("web.emojivoto.serviceaccount.identity.linkerd.cluster.local");
        assert_eq!(passes(&limiter, Some(&linkerd), 3), 3);
        // The override bucket is shared by the listed clients, however spelled.
        assert_eq!(passes(&limiter, Some(&spiffe), 3), 1);
        assert_eq!(
            limiter.check(Some(&spiffe)),
            Err(Limited::Override(NonZeroU32::MIN.saturating_add(3)))
        );
        assert_eq!(passes(&limiter, Some(&other), 3), 1);
        // The same name in another namespace is another client.
        assert_eq!(
            passes(
                &limiter,
                Some(&id("spiffe://cluster.local/ns/x/sa/special-client")),
                3
            ),
            1
        );
    }

    #[test]
    fn the_total_is_taken_first_and_bounds_every_client_together() {
        let clock = FakeRelativeClock::default();
        let policy = RateLimitPolicy {
            total: rps(3),
            identity: rps(2),
            overrides: Vec::new(),
        };
        let limiter = RateLimiter::with_clock(policy, clock);
        let a = id("spiffe://cluster.local/ns/prod/sa/a");
        let b = id("spiffe://cluster.local/ns/prod/sa/b");
        assert_eq!(passes(&limiter, Some(&a), 2), 2);
        assert_eq!(limiter.check(Some(&b)), Ok(()));
        assert!(matches!(limiter.check(Some(&b)), Err(Limited::Total(_))));
    }

    fn counting(
        calls: Arc<AtomicUsize>,
    ) -> impl tower::Service<
        Request<Body>,
        Response = Response<Body>,
        Error = Infallible,
        Future = std::future::Ready<Result<Response<Body>, Infallible>>,
    > + Clone {
        tower::service_fn(move |_req: Request<Body>| {
            calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(Response::new(empty())))
        })
    }

    fn request(peer: Option<&str>, grpc: bool) -> Request<Body> {
        let mut req = Request::new(empty());
        if let Some(peer) = peer {
            req.extensions_mut().insert(id(peer));
        }
        if grpc {
            req.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/grpc"),
            );
        }
        req
    }

    #[tokio::test]
    async fn the_excess_gets_429_rl_and_never_reaches_the_service() {
        let clock = FakeRelativeClock::default();
        let shared = SharedRateLimiter::with_clock(clock.clone());
        shared.update(Some(RateLimitPolicy {
            total: rps(3),
            ..RateLimitPolicy::default()
        }));
        let calls = Arc::new(AtomicUsize::new(0));
        let svc = RateLimitLayer::shared(shared).layer(counting(Arc::clone(&calls)));
        let mut statuses = Vec::new();
        for _ in 0..5 {
            let resp = svc.clone().oneshot(request(None, false)).await.unwrap();
            statuses.push(resp.status().as_u16());
            if resp.status() == StatusCode::TOO_MANY_REQUESTS {
                assert_eq!(resp.headers()[RESPONSE_FLAGS_HEADER], "RL");
            }
        }
        assert_eq!(statuses, [200, 200, 200, 429, 429]);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // A gRPC caller gets RESOURCE_EXHAUSTED.
        let resp = svc.clone().oneshot(request(None, true)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["grpc-status"], "8");
        assert_eq!(resp.headers()[RESPONSE_FLAGS_HEADER], "RL");
        clock.advance(Duration::from_secs(1));
        let resp = svc
            .oneshot(request(Some("spiffe://cluster.local/ns/a/sa/b"), false))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn without_a_policy_every_request_passes() {
        let calls = Arc::new(AtomicUsize::new(0));
        let svc =
            RateLimitLayer::shared(SharedRateLimiter::new()).layer(counting(Arc::clone(&calls)));
        for _ in 0..100 {
            let resp = svc.clone().oneshot(request(None, false)).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 100);
        assert!(RateLimitPolicy::default().is_empty());
    }

    #[test]
    fn an_unchanged_policy_keeps_its_buckets_and_a_changed_one_starts_full() {
        let clock = FakeRelativeClock::default();
        let shared = SharedRateLimiter::with_clock(clock);
        let policy = RateLimitPolicy {
            total: rps(2),
            ..RateLimitPolicy::default()
        };
        assert!(shared.update(Some(policy.clone())));
        let before = shared.current().unwrap();
        assert_eq!(passes(&before, None, 5), 2);
        assert!(!shared.update(Some(policy.clone())));
        assert!(Arc::ptr_eq(&before, &shared.current().unwrap()));
        assert_eq!(passes(&shared.current().unwrap(), None, 5), 0);
        assert!(shared.update(Some(RateLimitPolicy {
            total: rps(3),
            ..policy
        })));
        assert_eq!(passes(&shared.current().unwrap(), None, 5), 3);
        assert!(shared.update(None));
        assert!(shared.current().is_none());
        assert!(
            !shared.update(Some(RateLimitPolicy::default())),
            "an empty policy is no policy"
        );
    }

    const LINKERD: &str = r#"
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: { namespace: emojivoto, name: web-http }
spec:
  podSelector: { matchLabels: { app: web-svc } }
  port: 8080
  proxyProtocol: HTTP/1
  accessPolicy: all-unauthenticated
---
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: { namespace: emojivoto, name: web-admin }
spec:
  podSelector: { matchLabels: { app: web-svc } }
  port: 9990
---
apiVersion: policy.linkerd.io/v1alpha1
kind: HTTPLocalRateLimitPolicy
metadata: { namespace: emojivoto, name: web-rl }
spec:
  targetRef: { group: policy.linkerd.io, kind: Server, name: web-http }
  total: { requestsPerSecond: 100 }
  identity: { requestsPerSecond: 20 }
  overrides:
  - requestsPerSecond: 25
    clientRefs:
    - { kind: ServiceAccount, namespace: emojivoto, name: special-client }
    - { kind: ServiceAccount, name: other }
---
apiVersion: policy.linkerd.io/v1alpha1
kind: HTTPLocalRateLimitPolicy
metadata: { namespace: emojivoto, name: admin-rl }
spec:
  targetRef: { group: policy.linkerd.io, kind: Server, name: web-admin }
  total: { requestsPerSecond: 1 }
"#;

    fn snapshot(yaml: &str) -> Snapshot {
        let loaded = load_str("policy.yaml", yaml, &LoadOptions::default());
        assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
        Snapshot::compile(1, loaded)
    }

    fn workload(ns: &str, app: &str) -> Workload {
        Workload {
            namespace: ns.into(),
            service_account: "web".into(),
            labels: [("app".to_owned(), app.to_owned())].into(),
        }
    }

    #[test]
    fn the_policy_of_the_server_selecting_the_workload_and_port_applies() {
        let snap = snapshot(LINKERD);
        let web = workload("emojivoto", "web-svc");
        let policy = inbound_policy(&snap, &web, &[8080]).unwrap().unwrap();
        assert_eq!(policy.total, rps(100));
        assert_eq!(policy.identity, rps(20));
        assert_eq!(policy.overrides[0].requests_per_second.get(), 25);
        assert_eq!(
            policy.overrides[0].clients,
            [
                ClientServiceAccount {
                    namespace: "emojivoto".into(),
                    name: "special-client".into()
                },
                // clientRefs default to the policy's namespace.
                ClientServiceAccount {
                    namespace: "emojivoto".into(),
                    name: "other".into()
                },
            ]
        );
        let admin = inbound_policy(&snap, &web, &[9990]).unwrap().unwrap();
        assert_eq!(admin.total, rps(1));
        // Another port, other labels, another namespace: no Server, no limit.
        assert_eq!(inbound_policy(&snap, &web, &[7000]).unwrap(), None);
        assert_eq!(
            inbound_policy(&snap, &workload("emojivoto", "vote"), &[8080]).unwrap(),
            None
        );
        assert_eq!(
            inbound_policy(&snap, &workload("default", "web-svc"), &[8080]).unwrap(),
            None
        );
    }

    #[test]
    fn a_named_port_is_the_application_port_and_a_server_may_have_no_policy() {
        let yaml = r#"
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: { namespace: emojivoto, name: web-http }
spec:
  podSelector: { matchLabels: { app: web-svc } }
  port: http
---
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: { namespace: emojivoto, name: vote-http }
spec:
  podSelector: { matchLabels: { app: vote } }
  port: 8080
---
apiVersion: policy.linkerd.io/v1alpha1
kind: HTTPLocalRateLimitPolicy
metadata: { namespace: emojivoto, name: web-rl }
spec:
  targetRef: { group: policy.linkerd.io, kind: Server, name: web-http }
  identity: { requestsPerSecond: 7 }
"#;
        let snap = snapshot(yaml);
        let web = inbound_policy(&snap, &workload("emojivoto", "web-svc"), &[5000]).unwrap();
        assert_eq!(web.unwrap().identity, rps(7));
        let vote = inbound_policy(&snap, &workload("emojivoto", "vote"), &[8080]).unwrap();
        assert_eq!(vote, None);
    }

    #[tokio::test]
    async fn following_the_configuration_keeps_buckets_across_unrelated_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("policy.yaml");
        // The first two documents: the Server selecting web-svc:8080 and
        // its policy, here with a total limit only.
        let total = |n: u32| {
            let docs: Vec<&str> = LINKERD.split("---").collect();
            format!(
                "{}---\napiVersion: policy.linkerd.io/v1alpha1\nkind: HTTPLocalRateLimitPolicy\n\
                 metadata: {{ namespace: emojivoto, name: web-rl }}\nspec:\n  \
                 targetRef: {{ kind: Server, name: web-http }}\n  total: {{ requestsPerSecond: {n} }}\n",
                docs[0]
            )
        };
        let low = total(2);
        std::fs::write(&file, &low).unwrap();
        let source = mesh_core::reload::ConfigSource {
            paths: vec![dir.path().to_path_buf()],
            options: LoadOptions::default(),
        };
        let snapshots = mesh_core::reload::initial(source).unwrap();
        let clock = FakeRelativeClock::default();
        let shared = SharedRateLimiter::inbound_with_clock(
            snapshots.clone(),
            Arc::new(workload("emojivoto", "web-svc")),
            vec![8080],
            clock,
        );
        let calls = Arc::new(AtomicUsize::new(0));
        let svc = RateLimitLayer::shared(shared.clone()).layer(counting(Arc::clone(&calls)));
        let status = |svc: &RateLimit<_, _>| {
            let svc = svc.clone();
            async move {
                svc.oneshot(request(None, false))
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        };
        assert_eq!(
            [status(&svc).await, status(&svc).await, status(&svc).await],
            [200, 200, 429]
        );

        // An unrelated change: same policy, same (spent) buckets.
        std::fs::write(&file, format!("{low}\n---\napiVersion: policy.linkerd.io/v1beta3\nkind: Server\nmetadata: {{ namespace: emojivoto, name: other }}\nspec:\n  podSelector: {{ matchLabels: {{ app: other }} }}\n  port: 1\n")).unwrap();
        let reloaded = tokio::task::spawn_blocking({
            let s = snapshots.clone();
            move || s.reload_now()
        });
        assert!(matches!(
            reloaded.await.unwrap(),
            mesh_core::reload::ReloadOutcome::Swapped { .. }
        ));
        assert_eq!(status(&svc).await, 429);
        assert_eq!(shared.applied_generation(), snapshots.load().generation);

        // A changed policy starts with full buckets.
        std::fs::write(&file, total(3)).unwrap();
        let s = snapshots.clone();
        tokio::task::spawn_blocking(move || s.reload_now())
            .await
            .unwrap();
        let statuses = [
            status(&svc).await,
            status(&svc).await,
            status(&svc).await,
            status(&svc).await,
        ];
        assert_eq!(statuses, [200, 200, 200, 429]);
        assert_eq!(calls.load(Ordering::SeqCst), 5);
    }
}
