//! Retries: sending a failed request again, within bounds (SPEC 4.6, 12,
//! 13.1, 13.2).
//!
//! Place in the request flow: below the whole-request timeout (so every
//! try, and every backoff between tries, fits in the route's deadline) and
//! above balancing (so each try picks an endpoint again, preferring one not
//! tried before). Fault injection sits above the timeout, so an injected
//! abort is answered before this stage and never retried.
//!
//! Why it is shaped this way:
//! - **What is retried** is the route's `retryOn` (Istio) or its response
//!   classes (a Linkerd ServiceProfile route with `isRetryable`). A failure
//!   the mesh produced itself (refused connection, reset, refused stream)
//!   is told apart from an upstream's own 503 by the
//!   [`LocalFailure`] marker on the reply, so `connect-failure` and a bare
//!   `503` each match only what they name.
//!   `retriable-headers` matches nothing (a VirtualService cannot name the
//!   headers) and neither does `http3-post-connect-failure` (no HTTP/3).
//!   gRPC tokens read `grpc-status` from the response headers
//!   (trailers-only responses), not from trailers (SPEC 12.1).
//! - **How often**: `attempts` retries after the first try (Istio); a route
//!   without `retries` gets Istio's default (2 retries on
//!   `connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes`);
//!   `attempts: 0` disables. A [retry budget](crate::budget) bounds the
//!   extra load per destination: a ServiceProfile's `retryBudget` for its
//!   routes, and also for VirtualService routes to a host that has a
//!   ServiceProfile; [`RetryLayer::with_budget`] sets one for every other
//!   destination. A retry the budget refuses returns the failure as it is.
//! - **When**: full-jitter exponential backoff (SPEC 12.2, 25 ms base, cap
//!   10 x base) drawn from the injected random source; a backoff that would
//!   end after the request's deadline is not started, and the last failure
//!   is returned instead.
//! - **The body** is buffered for replay only up to 64 KiB: a body known to
//!   be larger is streamed once and never retried; a body of unknown length
//!   is streamed to the first try while a copy is kept, and if it grows
//!   past 64 KiB (or is still streaming when the response comes) the
//!   request is not retried. The first try never waits for a large body.
//! - **No multiplication across hops**: every retried try carries the
//!   header [`RETRY_MARKER_HEADER`] (`x-mesh-retry-attempt: N`). A request
//!   that arrives at this stage already carrying it is sent once and never
//!   retried here, and the header is passed on. So when services propagate
//!   it (as they propagate trace headers) along a chain A -> B -> C, only
//!   B's first-try work may be retried by B: the load on C grows by the
//!   sum of the hops' retries, not their product.
//! - **What a retry carries**: the first try's method, URI, version and
//!   headers (copied before it is sent), and of its extensions only those
//!   the stages below read: the route decision with its table, the
//!   caller's address and the deadline. Other extensions stay with the
//!   first try, as Envoy builds a retry from the route, not from the first
//!   try. Retries prefer endpoints not tried before; the balance stage
//!   names a try's endpoint on a response that may be retried
//!   ([`PickedEndpoint`]), so the record of tried endpoints is made only
//!   when a retry is.
//! - **What the caller sees**: the last try's response, unchanged; when
//!   retries were used up on a retriable failure, `URX` is added to
//!   `x-mesh-response-flags` (`UF,URX` after refused connections). A last
//!   try cut by its `perTryTimeout` answers 504 `UT`.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use mesh_resilience::retry::{RetryLayer, RetryPolicy};
//! use mesh_route::random::SplitMix;
//!
//! // Alone: the seed's policy for every request.
//! let policy = RetryPolicy::try_new(3, "5xx,reset,connect-failure,refused-stream")
//!     .unwrap()
//!     .with_per_try_timeout(Duration::from_secs(2));
//! let alone = RetryLayer::new(policy).with_random(Arc::new(SplitMix::seeded(1)));
//! // In the mesh stack: each request gets its route's policy.
//! let per_route = RetryLayer::from_route(Arc::new(SplitMix::seeded(1)));
//! # let _ = (alone, per_route);
//! ```

use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HOST, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri, Version};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use mesh_core::http::{
    Body, BoxError, FailureKind, LocalFailure, MeshError, Peer, RESPONSE_FLAGS_HEADER, boxed,
    empty, is_grpc,
};
use mesh_route::decision::{
    BudgetSpec, DestinationKey, RetryOn, RetrySpec, RouteDecision, RoutePolicy,
};
use mesh_route::layer::{BoxFuture, PickedEndpoint, PreviousAttempts, Routed, RoutedWith};
use mesh_route::random::{SharedRandom, default_random};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::budget::{RetryBudget, RetryBudgets};
use crate::pool::{DestinationPool, PoolRegistry};
use crate::timeout::RequestDeadline;

/// The header a retried try carries: `x-mesh-retry-attempt: N` on the N-th
/// retry. A request that reaches the retry stage with it is never retried
/// there (loop prevention across hops; see the module doc).
pub const RETRY_MARKER_HEADER: &str = "x-mesh-retry-attempt";

/// [`RETRY_MARKER_HEADER`] as a header name, parsed once.
const RETRY_MARKER: HeaderName = HeaderName::from_static(RETRY_MARKER_HEADER);
/// `x-mesh-response-flags`, parsed once.
const RESPONSE_FLAGS: HeaderName = HeaderName::from_static(RESPONSE_FLAGS_HEADER);
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const ENVOY_RATELIMITED: HeaderName = HeaderName::from_static("x-envoy-ratelimited");

/// The largest request body kept for replay (Linkerd's bound, SPEC 13.1).
pub const MAX_REPLAY_BYTES: usize = 64 * 1024;

/// Istio's backoff base when a route sets none (SPEC 12.2).
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(25);

static ISTIO_DEFAULT: LazyLock<RetrySpec> = LazyLock::new(RetrySpec::istio_default);

/// Why a [`RetryPolicy`] could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RetryPolicyError {
    /// A `retryOn` token is not one SPEC 12.1 lists.
    #[error("retryOn: unknown condition {0:?}")]
    UnknownCondition(String),
    /// The budget is outside SPEC 13.1's ranges (ttl 1 s..=60 s, ratio
    /// 0..=1000, minRetriesPerSecond < 2^31 - 1).
    #[error(
        "invalid retry budget: ttl must be 1s..60s, retryRatio 0..1000, minRetriesPerSecond below 2147483647"
    )]
    InvalidBudget,
}

/// A typed retry policy for [`RetryLayer::new`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    spec: Arc<RetrySpec>,
}

impl RetryPolicy {
    /// `attempts` retries after the first try, on the comma-separated
    /// `retry_on` conditions (SPEC 12.1; bare integers are retriable status
    /// codes). An empty `retry_on` means the default conditions.
    pub fn try_new(attempts: u32, retry_on: &str) -> Result<RetryPolicy, RetryPolicyError> {
        let mut spec = RetrySpec {
            attempts,
            ..RetrySpec::istio_default()
        };
        if !retry_on.trim().is_empty() {
            spec.retry_on = retry_on
                .split(',')
                .map(str::trim)
                .map(|t| {
                    RetryOn::parse(t).ok_or_else(|| RetryPolicyError::UnknownCondition(t.into()))
                })
                .collect::<Result<_, _>>()?;
        }
        Ok(RetryPolicy {
            spec: Arc::new(spec),
        })
    }

    /// Istio's policy for a route without `retries` (SPEC 4.6, 14).
    pub fn istio_default() -> RetryPolicy {
        RetryPolicy {
            spec: Arc::new(RetrySpec::istio_default()),
        }
    }

    /// Limits each try to `limit`.
    pub fn with_per_try_timeout(mut self, limit: Duration) -> Self {
        Arc::make_mut(&mut self.spec).per_try_timeout = Some(limit);
        self
    }

    /// Sets the backoff base (the cap is 10 x base).
    pub fn with_backoff(mut self, base: Duration) -> Self {
        Arc::make_mut(&mut self.spec).backoff = Some(base);
        self
    }

    /// Caps the retries with a budget shared by every request through the
    /// layer.
    pub fn with_budget(mut self, budget: BudgetSpec) -> Result<Self, RetryPolicyError> {
        if !budget.is_valid() {
            return Err(RetryPolicyError::InvalidBudget);
        }
        Arc::make_mut(&mut self.spec).budget = Some(budget);
        Ok(self)
    }

    /// The policy as a route's retry spec.
    pub fn spec(&self) -> &RetrySpec {
        &self.spec
    }
}

impl From<RetrySpec> for RetryPolicy {
    fn from(spec: RetrySpec) -> Self {
        RetryPolicy {
            spec: Arc::new(spec),
        }
    }
}

#[derive(Clone, Debug)]
enum Source {
    Fixed(Arc<RetrySpec>),
    FromRoute,
}

/// Layer of the retry stage.
#[derive(Clone, Debug)]
pub struct RetryLayer {
    source: Source,
    random: SharedRandom,
    budgets: Arc<RetryBudgets>,
    default_budget: Option<BudgetSpec>,
    pools: Option<Arc<PoolRegistry>>,
}

impl RetryLayer {
    /// Every request gets `policy`. Backoff jitter is drawn from an
    /// entropy-seeded source unless [`RetryLayer::with_random`] says
    /// otherwise.
    pub fn new(policy: RetryPolicy) -> Self {
        RetryLayer {
            source: Source::Fixed(policy.spec),
            random: default_random(),
            budgets: Arc::new(RetryBudgets::new()),
            default_budget: None,
            pools: None,
        }
    }

    /// Each request gets its route decision's policy: the VirtualService
    /// rule's `retries`, Istio's default when it has none, or its
    /// ServiceProfile route's. Requests without a decision pass through.
    pub fn from_route(random: SharedRandom) -> Self {
        RetryLayer {
            source: Source::FromRoute,
            random,
            budgets: Arc::new(RetryBudgets::new()),
            default_budget: None,
            pools: None,
        }
    }

    /// Draws backoff jitter from `random`.
    pub fn with_random(mut self, random: SharedRandom) -> Self {
        self.random = random;
        self
    }

    /// A budget for every destination whose retries no other budget caps
    /// (neither the route nor the host's ServiceProfile sets one): the way
    /// to bound Istio-style attempt retries mesh-wide.
    pub fn with_budget(mut self, budget: BudgetSpec) -> Self {
        self.default_budget = Some(budget);
        self
    }

    /// Keeps budgets in `budgets` (to share them between stacks, or read
    /// them).
    pub fn with_budgets(mut self, budgets: Arc<RetryBudgets>) -> Self {
        self.budgets = budgets;
        self
    }

    /// Caps concurrent retries per destination by the DestinationRule's
    /// `connectionPool.http.maxRetries` (SPEC 5.3), counted in `pools`: a
    /// retry that finds the destination at its maximum is not sent, and the
    /// caller gets the response at hand, as Envoy does.
    pub fn with_pools(mut self, pools: Arc<PoolRegistry>) -> Self {
        self.pools = Some(pools);
        self
    }

    /// The budgets by destination.
    pub fn budgets(&self) -> &Arc<RetryBudgets> {
        &self.budgets
    }
}

impl<S: Clone> tower::Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            spare: Arc::new(inner.clone()),
            inner,
            layer: self.clone(),
        }
    }
}

/// The retry stage.
#[derive(Clone, Debug)]
pub struct Retry<S> {
    inner: S,
    /// A copy of `inner` that retries clone from, made once per stage:
    /// every request may be retried (Istio's default policy), but few are,
    /// so a request carries an `Arc` of it rather than its own clone of
    /// every stage below.
    spare: Arc<S>,
    layer: RetryLayer,
}

/// Where the policy of one request lives (borrowed by the retry loop).
enum SpecRef {
    Fixed(Arc<RetrySpec>),
    Route(Arc<RoutePolicy>),
    Default,
}

impl SpecRef {
    fn get(&self) -> &RetrySpec {
        match self {
            SpecRef::Fixed(s) => s,
            SpecRef::Route(p) => p.retries.as_ref().unwrap_or(&ISTIO_DEFAULT),
            SpecRef::Default => &ISTIO_DEFAULT,
        }
    }
}

/// How the request body is kept for replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyPlan {
    /// No body.
    Empty,
    /// Known to fit: read it whole before the first try.
    Collect,
    /// Unknown length: stream it to the first try and keep a copy.
    Tee,
}

/// Everything the retry loop of one request needs.
struct Plan {
    spec: SpecRef,
    budget: Option<Arc<RetryBudget>>,
    pools: Option<Arc<PoolRegistry>>,
    deadline: Option<Instant>,
    random: SharedRandom,
    body: BodyPlan,
}

impl Plan {
    /// A request that ends without a retry pays into its budget.
    fn deposit(&self) {
        if let Some(b) = &self.budget {
            b.deposit();
        }
    }
}

static NO_DESTINATION: LazyLock<DestinationKey> = LazyLock::new(|| DestinationKey {
    host: Arc::from(""),
    subset: None,
    port: None,
});

impl<S> Retry<S> {
    /// The plan for `req`, or `None` when it is sent once as it is.
    fn plan(&self, req: &Request<Body>) -> Option<Plan> {
        // The route stage's decision and table (one lookup), else the
        // parts put in alone (`mesh_route::layer::routed`).
        let routed = req.extensions().get::<Routed>();
        let decision = match routed {
            Some(r) => Some(&r.decision),
            None => req.extensions().get::<RouteDecision>(),
        };
        let spec = match &self.layer.source {
            Source::Fixed(s) => SpecRef::Fixed(Arc::clone(s)),
            Source::FromRoute => {
                let decision = decision?;
                decision.forward()?;
                match decision.policy.retries {
                    Some(_) => SpecRef::Route(Arc::clone(&decision.policy)),
                    None => SpecRef::Default,
                }
            }
        };
        let s = spec.get();
        if s.attempts == 0
            // Already a retry of an earlier mesh hop: never again here.
            || req.headers().contains_key(RETRY_MARKER)
            || req.method() == Method::CONNECT
            || req.headers().contains_key(UPGRADE)
        {
            return None;
        }
        let body = req.body();
        let body_plan = if body.is_end_stream() {
            BodyPlan::Empty
        } else {
            let hint = body.size_hint();
            if hint.lower() > MAX_REPLAY_BYTES as u64 {
                // Known up front to be too large: sent once, outside the
                // retry policy and its budget (SPEC 13.2).
                return None;
            }
            match hint.upper() {
                Some(upper) if upper <= MAX_REPLAY_BYTES as u64 => BodyPlan::Collect,
                _ => BodyPlan::Tee,
            }
        };
        let destination = decision
            .and_then(RouteDecision::forward)
            .map_or(&*NO_DESTINATION, |f| &f.destination);
        let budget_spec = s
            .budget
            .or_else(|| {
                // A VirtualService route to a host with a ServiceProfile:
                // the profile's budget caps its retries too.
                let table = match routed {
                    Some(r) => &r.table,
                    None => &req.extensions().get::<RoutedWith>()?.0,
                };
                table.profile(&destination.host)?.budget()
            })
            .or(self.layer.default_budget);
        let budget = budget_spec.map(|b| self.layer.budgets.get(destination, &b));
        Some(Plan {
            spec,
            budget,
            pools: self.layer.pools.clone(),
            deadline: req.extensions().get::<RequestDeadline>().map(|d| d.0),
            random: Arc::clone(&self.layer.random),
            body: body_plan,
        })
    }
}

impl<S> tower::Service<Request<Body>> for Retry<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S, S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let Some(plan) = self.plan(&req) else {
            return ResponseFuture {
                state: State::Once {
                    call: self.inner.call(req),
                },
            };
        };
        if plan.body == BodyPlan::Collect || plan.spec.get().per_try_timeout.is_some() {
            // The body is read before the first try, or every try races
            // its own timer: the whole loop as one boxed future.
            let mut inner = self.inner.clone();
            std::mem::swap(&mut inner, &mut self.inner);
            return ResponseFuture {
                state: State::Boxed {
                    fut: Box::pin(run(inner, plan, req)),
                },
            };
        }
        // The common case: the first try is polled in place and the retry
        // loop (boxed) starts only when its outcome is retriable.
        let (first, pending) = prepare(plan, req);
        let call = self.inner.call(first);
        // The ready service went with the first try; retries use a clone
        // (made ready again before each retry).
        let svc = Arc::clone(&self.spare);
        ResponseFuture {
            state: State::First {
                call,
                retry: Some(Retries {
                    svc,
                    plan: pending.plan,
                    template: pending.template,
                    replay: pending.replay,
                    grpc: pending.grpc,
                }),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The retry stage's future: the inner call itself when the request is
    /// sent once, the first try polled in place (no allocation of its own)
    /// with what a retry needs kept aside, or the boxed retry loop.
    pub struct ResponseFuture<S, F, E> {
        #[pin]
        state: State<S, F, E>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<S, F, E> {
        Once {
            #[pin]
            call: F,
        },
        First {
            #[pin]
            call: F,
            retry: Option<Retries<S>>,
        },
        Boxed {
            fut: BoxFuture<Result<Response<Body>, E>>,
        },
    }
}

/// What the retries of a request need once its first try failed.
struct Retries<S> {
    svc: Arc<S>,
    plan: Plan,
    template: Template,
    replay: Replay,
    grpc: bool,
}

impl<S> Retries<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    /// The retry loop after a first try with a retriable `outcome`.
    fn resume(self, outcome: Outcome) -> BoxFuture<Result<Response<Body>, S::Error>> {
        Box::pin(retry_loop(
            S::clone(&self.svc),
            self.plan,
            self.template,
            self.replay,
            self.grpc,
            outcome,
        ))
    }
}

impl<S, F, E> std::future::Future for ResponseFuture<S, F, E>
where
    F: std::future::Future<Output = Result<Response<Body>, E>>,
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = E> + Clone + Send + 'static,
    S::Future: Send + 'static,
    E: Send + 'static,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Once { call } => return call.poll(cx),
                StateProj::Boxed { fut } => return fut.as_mut().poll(cx),
                StateProj::First { call, retry } => {
                    let resp = std::task::ready!(call.poll(cx))?;
                    let Some(r) = retry.take() else {
                        return Poll::Ready(Ok(resp));
                    };
                    let outcome = Outcome::Response(resp);
                    if !retriable(r.plan.spec.get(), &outcome) {
                        r.plan.deposit();
                        return Poll::Ready(Ok(outcome.into_response(r.grpc, false)));
                    }
                    state.set(State::Boxed {
                        fut: r.resume(outcome),
                    });
                }
            }
        }
    }
}

/// What one try produced.
enum Outcome {
    /// A response: the upstream's, or the mesh's own reply to a failure.
    Response(Response<Body>),
    /// The try's `perTryTimeout` expired.
    PerTryTimeout,
}

impl Outcome {
    /// The response for the caller; `exhausted` adds `URX`.
    fn into_response(self, grpc: bool, exhausted: bool) -> Response<Body> {
        let mut resp = match self {
            Outcome::Response(r) => r,
            Outcome::PerTryTimeout if grpc => MeshError::Timeout.to_grpc_response(),
            Outcome::PerTryTimeout => MeshError::Timeout.to_response(),
        };
        if exhausted {
            add_flag(resp.headers_mut(), "URX");
        }
        resp
    }
}

/// Adds `flag` to the response flags header.
fn add_flag(headers: &mut HeaderMap, flag: &str) {
    let value = match headers
        .get(RESPONSE_FLAGS_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && *v != "-")
    {
        Some(existing) => format!("{existing},{flag}"),
        None => flag.to_owned(),
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(RESPONSE_FLAGS_HEADER, v);
    }
}

/// The request head, kept to build each retry.
struct Template {
    method: Method,
    uri: Uri,
    version: Version,
    /// The headers as the map yields them (each value, in order): one
    /// allocation where a `HeaderMap` clone takes two (its entries and its
    /// index); a retry rebuilds the map from them, so it carries the same
    /// headers in the same order as the first try.
    headers: Vec<(HeaderName, HeaderValue)>,
    carried: Carried,
    /// The endpoints tried so far, shared with the balance stage of each
    /// try: made before the first try when the policy needs it there (see
    /// [`tagged_picks_suffice`]), else at the first retry.
    attempts: Option<PreviousAttempts>,
    /// `retryIgnorePreviousHosts`: whether retries avoid tried endpoints.
    avoid_tried: bool,
}

/// The request extensions a retry carries over from the first try, by
/// type: what the stages below this one read (the route decision and its
/// table, the caller's address for source-IP hashing) and the deadline.
///
/// Other extensions of the first try are not carried to retries, as Envoy
/// builds each retry from the route rather than from the first try: a
/// copy of the whole extension map cost an allocation per extension on
/// every request, retried or not. A stage below this one that reads a new
/// request extension must be added here.
struct Carried {
    /// The route stage's decision and table.
    routed: Option<Routed>,
    /// A decision put in alone (the stage used without the route stage).
    decision: Option<RouteDecision>,
    /// A table put in alone.
    table: Option<RoutedWith>,
    peer: Option<Peer>,
    deadline: Option<RequestDeadline>,
}

impl Carried {
    fn of(extensions: &http::Extensions, deadline: Option<Instant>) -> Carried {
        let routed = extensions.get::<Routed>().cloned();
        let (decision, table) = match routed {
            Some(_) => (None, None),
            None => (
                extensions.get::<RouteDecision>().cloned(),
                extensions.get::<RoutedWith>().cloned(),
            ),
        };
        Carried {
            routed,
            decision,
            table,
            peer: extensions.get::<Peer>().copied(),
            deadline: deadline.map(RequestDeadline),
        }
    }

    fn put(&self, extensions: &mut http::Extensions) {
        if let Some(routed) = &self.routed {
            extensions.insert(routed.clone());
        }
        if let Some(decision) = &self.decision {
            extensions.insert(decision.clone());
        }
        if let Some(table) = &self.table {
            extensions.insert(table.clone());
        }
        if let Some(peer) = self.peer {
            extensions.insert(peer);
        }
        if let Some(deadline) = self.deadline {
            extensions.insert(deadline);
        }
    }
}

/// Whether, under `spec`, every try that may be retried reports its
/// endpoint in its response's [`PickedEndpoint`], so the record of tried
/// endpoints can wait for the first retry. Not when a try may be retried
/// without a response (a per-try timeout) or on a response the balance
/// stage does not mark (a status below 400 without `grpc-status`: a listed
/// code below 400, `envoy-ratelimited` on any status, or ServiceProfile
/// response classes, which may call any status a failure); then the
/// record goes with the first try.
fn tagged_picks_suffice(spec: &RetrySpec) -> bool {
    spec.per_try_timeout.is_none()
        && spec.classes.is_none()
        && !spec
            .retry_on
            .iter()
            .any(|r| matches!(r, RetryOn::EnvoyRatelimited | RetryOn::Status(0..400)))
}

impl Template {
    /// The head of a request about to be sent as the first try; when the
    /// policy needs it there, the record of tried endpoints goes into the
    /// first try's extensions too.
    fn of(parts: &mut http::request::Parts, plan: &Plan) -> Template {
        let spec = plan.spec.get();
        let avoid_tried = spec.retry_ignore_previous_hosts;
        let attempts = (avoid_tried && !tagged_picks_suffice(spec)).then(|| {
            let attempts = PreviousAttempts::new(true);
            parts.extensions.insert(attempts.clone());
            attempts
        });
        Template {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect(),
            carried: Carried::of(&parts.extensions, plan.deadline),
            attempts,
            avoid_tried,
        }
    }

    /// Before a retry: starts the record of tried endpoints if the first
    /// try went without one, with the endpoint its response names.
    fn remember(&mut self, outcome: &Outcome) {
        if !self.avoid_tried || self.attempts.is_some() {
            return;
        }
        let attempts = PreviousAttempts::new(true);
        if let Outcome::Response(resp) = outcome
            && let Some(PickedEndpoint(index)) = resp.extensions().get::<PickedEndpoint>()
        {
            attempts.record(*index);
        }
        self.attempts = Some(attempts);
    }

    /// The connection pool of the destination this request is routed to.
    fn pool(&self, pools: &PoolRegistry) -> Option<Arc<DestinationPool>> {
        let mut probe = Request::new(());
        *probe.uri_mut() = self.uri.clone();
        if let Some((_, host)) = self.headers.iter().find(|(name, _)| name == HOST) {
            probe.headers_mut().insert(HOST, host.clone());
        }
        self.carried.put(probe.extensions_mut());
        pools.pool_for(&probe)
    }

    fn build(&self, body: Body, retry: u32) -> Request<Body> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        let mut headers = HeaderMap::with_capacity(self.headers.len() + 1);
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        headers.insert(RETRY_MARKER, HeaderValue::from(retry));
        *req.headers_mut() = headers;
        self.carried.put(req.extensions_mut());
        if let Some(attempts) = &self.attempts {
            req.extensions_mut().insert(attempts.clone());
        }
        req
    }
}

/// The first try's request (the caller's, with a replayable body) and
/// what later tries are built from. The head is copied once here, for a
/// retry that may follow.
struct Prepared {
    plan: Plan,
    template: Template,
    replay: Replay,
    grpc: bool,
}

/// Takes `req` apart once for a plan whose body needs no reading first
/// ([`BodyPlan::Empty`] or [`BodyPlan::Tee`]).
fn prepare(plan: Plan, req: Request<Body>) -> (Request<Body>, Prepared) {
    let (mut parts, body) = req.into_parts();
    let grpc = is_grpc(&parts.headers);
    let template = Template::of(&mut parts, &plan);
    let (first, replay) = match plan.body {
        BodyPlan::Tee => {
            let (tx, rx) = oneshot::channel();
            (
                boxed(ReplayBody::record(Vec::new(), body, tx)),
                Replay::Teeing(rx),
            )
        }
        // Empty (Collect never comes here).
        _ => (body, Replay::Empty),
    };
    let prepared = Prepared {
        plan,
        template,
        replay,
        grpc,
    };
    (Request::from_parts(parts, first), prepared)
}

/// The retry loop of one request, from its first try (used when the body
/// must be read first or tries have their own timeout).
async fn run<S>(mut svc: S, plan: Plan, req: Request<Body>) -> Result<Response<Body>, S::Error>
where
    S: tower::Service<Request<Body>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    let (first, p) = if plan.body == BodyPlan::Collect {
        let (mut parts, body) = req.into_parts();
        let grpc = is_grpc(&parts.headers);
        let template = Template::of(&mut parts, &plan);
        let (first, replay) = match collect(body).await {
            Ok(pair) => pair,
            Err(e) => {
                let error = MeshError::BadRequest(format!("reading the request body: {e}"));
                return Ok(error.reply_to(&parts.headers));
            }
        };
        let prepared = Prepared {
            plan,
            template,
            replay,
            grpc,
        };
        (Request::from_parts(parts, first), prepared)
    } else {
        prepare(plan, req)
    };
    let outcome = one_try(&mut svc, p.plan.spec.get(), first).await?;
    retry_loop(svc, p.plan, p.template, p.replay, p.grpc, outcome).await
}

/// One try, cut by the policy's `perTryTimeout` if it has one.
async fn one_try<S>(svc: &mut S, spec: &RetrySpec, req: Request<Body>) -> Result<Outcome, S::Error>
where
    S: tower::Service<Request<Body>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    let call = start(svc, req);
    Ok(match spec.per_try_timeout {
        None => Outcome::Response(call.await?),
        Some(limit) => match tokio::time::timeout(limit, call).await {
            Ok(resp) => Outcome::Response(resp?),
            // The try is dropped, which resets its upstream stream.
            Err(_) => Outcome::PerTryTimeout,
        },
    })
}

/// The retries after a try with `outcome`: decides whether to retry, waits
/// the backoff, sends the next try, until one is not retried.
async fn retry_loop<S>(
    mut svc: S,
    plan: Plan,
    mut template: Template,
    mut replay: Replay,
    grpc: bool,
    mut outcome: Outcome,
) -> Result<Response<Body>, S::Error>
where
    S: tower::Service<Request<Body>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    let spec = plan.spec.get();
    let mut retries: u32 = 0;
    loop {
        if !retriable(spec, &outcome) {
            plan.deposit();
            return Ok(outcome.into_response(grpc, false));
        }
        if retries >= spec.attempts {
            plan.deposit();
            return Ok(outcome.into_response(grpc, true));
        }
        let Some(body) = replay.next_body() else {
            // The body grew past the bound or was still streaming.
            plan.deposit();
            return Ok(outcome.into_response(grpc, false));
        };
        let wait = if spec.classes.is_some() {
            // ServiceProfile retries have no backoff (Linkerd).
            Duration::ZERO
        } else {
            backoff(
                &*plan.random,
                spec.backoff.unwrap_or(DEFAULT_BACKOFF_BASE),
                retries + 1,
            )
        };
        if plan
            .deadline
            .is_some_and(|deadline| Instant::now() + wait >= deadline)
        {
            // The retry could not start before the deadline.
            plan.deposit();
            return Ok(outcome.into_response(grpc, false));
        }
        // `maxRetries`: a slot for the retry, held until its outcome is in.
        let retry_slot = match plan.pools.as_ref().and_then(|p| template.pool(p)) {
            Some(pool) => match pool.try_acquire_retry() {
                Some(permit) => Some(permit),
                None => {
                    // Too many retries in flight to this destination: the
                    // response at hand, as it is (Envoy's retry overflow).
                    plan.deposit();
                    return Ok(outcome.into_response(grpc, false));
                }
            },
            None => None,
        };
        if let Some(budget) = &plan.budget
            && !budget.withdraw()
        {
            // Refused by the budget: the failure as it is, no deposit.
            return Ok(outcome.into_response(grpc, false));
        }
        template.remember(&outcome);
        drop(outcome);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        retries += 1;
        let req = template.build(body, retries);
        std::future::poll_fn(|cx| svc.poll_ready(cx)).await?;
        outcome = one_try(&mut svc, spec, req).await?;
        drop(retry_slot);
    }
}

/// Starts one try. The call's future is boxed here, outside the retry
/// loop's `async` body: holding `S::Future` itself there trips a compiler
/// limitation on `Send` inference with boxed-error bodies in bounds.
fn start<S>(svc: &mut S, req: Request<Body>) -> BoxFuture<Result<Response<Body>, S::Error>>
where
    S: tower::Service<Request<Body>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    Box::pin(svc.call(req))
}

/// The exclusive upper bound of the backoff before retry `retry` (1 for the
/// first retry): `min(2^(retry-1) x base, 10 x base)` in whole
/// milliseconds (SPEC 12.2).
pub fn backoff_ceiling(base: Duration, retry: u32) -> Duration {
    let base_ms = u64::try_from(base.as_millis()).unwrap_or(u64::MAX).max(1);
    let max_ms = base_ms.saturating_mul(10);
    let shift = retry.saturating_sub(1).min(32);
    let ceiling = base_ms.saturating_mul(1u64 << shift);
    Duration::from_millis(ceiling.min(max_ms))
}

/// The backoff before retry `retry`: whole milliseconds drawn uniformly
/// from `[0, backoff_ceiling)`.
pub fn backoff(
    random: &dyn mesh_route::random::RandomSource,
    base: Duration,
    retry: u32,
) -> Duration {
    let ceiling = u64::try_from(backoff_ceiling(base, retry).as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(random.below(ceiling))
}

/// The gRPC status in a response's headers (trailers-only responses), if
/// any.
fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers
        .get(GRPC_STATUS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Whether an injected fault produced this response (flag `FI`).
fn injected(headers: &HeaderMap) -> bool {
    headers
        .get(RESPONSE_FLAGS)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|f| f.trim() == "FI"))
}

/// Whether the outcome of a try is one `spec` retries (SPEC 12.1, 13.1).
fn retriable(spec: &RetrySpec, outcome: &Outcome) -> bool {
    let resp = match outcome {
        // A per-try timeout is retried only by the tokens that cover
        // "no response" resets (SPEC 4.6); never under a ServiceProfile.
        Outcome::PerTryTimeout => {
            return spec.classes.is_none()
                && (spec.has(RetryOn::FiveXx)
                    || spec.has(RetryOn::GatewayError)
                    || spec.has(RetryOn::Reset));
        }
        Outcome::Response(r) => r,
    };
    if let Some(LocalFailure(kind)) = resp.extensions().get::<LocalFailure>() {
        if spec.classes.is_some() {
            // Linkerd does not retry transport errors.
            return false;
        }
        let any_reset = spec.has(RetryOn::FiveXx)
            || spec.has(RetryOn::GatewayError)
            || spec.has(RetryOn::Reset);
        return match kind {
            FailureKind::Connect => {
                any_reset
                    || spec.has(RetryOn::ConnectFailure)
                    || spec.has(RetryOn::ResetBeforeRequest)
            }
            FailureKind::RefusedStream => any_reset || spec.has(RetryOn::RefusedStream),
            FailureKind::Reset => any_reset,
            // Circuit-breaker overflow, no healthy upstream, timeouts of an
            // enclosing deadline, and other local replies: never.
            _ => false,
        };
    }
    let headers = resp.headers();
    if injected(headers) {
        return false;
    }
    let status = resp.status().as_u16();
    let grpc = grpc_status(headers);
    if let Some(classes) = &spec.classes {
        return classes.is_failure(status, grpc);
    }
    if status >= 500 && spec.has(RetryOn::FiveXx) {
        return true;
    }
    if matches!(status, 502..=504) && spec.has(RetryOn::GatewayError) {
        return true;
    }
    if status == 409 && spec.has(RetryOn::Retriable4xx) {
        return true;
    }
    if spec.status_codes().any(|c| c == status) {
        return true;
    }
    if spec.has(RetryOn::EnvoyRatelimited) && headers.contains_key(ENVOY_RATELIMITED) {
        return true;
    }
    let token = match grpc {
        Some(1) => RetryOn::Cancelled,
        Some(4) => RetryOn::DeadlineExceeded,
        Some(8) => RetryOn::ResourceExhausted,
        Some(13) => RetryOn::Internal,
        Some(14) => RetryOn::Unavailable,
        _ => return false,
    };
    spec.has(token)
}

// ---------------------------------------------------------------- bodies

/// What the first try's body hands back for a replay.
enum Handoff {
    /// The whole body (it ended within the bound).
    Complete {
        chunks: Vec<Bytes>,
        trailers: Option<HeaderMap>,
    },
    /// The try let go of the body before its end (a refused connection, a
    /// reset): what was read, and the rest still to read.
    Partial { chunks: Vec<Bytes>, rest: Body },
}

/// The request body as kept for the next try.
enum Replay {
    Empty,
    Buffered {
        chunks: Vec<Bytes>,
        trailers: Option<HeaderMap>,
    },
    Teeing(oneshot::Receiver<Handoff>),
    Gone,
}

impl Replay {
    /// The body of the next try, or `None` when it cannot be replayed.
    fn next_body(&mut self) -> Option<Body> {
        match self {
            Replay::Empty => Some(empty()),
            Replay::Buffered { chunks, trailers } => {
                Some(boxed(ReplayBody::replay(chunks.clone(), trailers.clone())))
            }
            Replay::Teeing(rx) => match rx.try_recv() {
                Ok(Handoff::Complete { chunks, trailers }) => {
                    let body = boxed(ReplayBody::replay(chunks.clone(), trailers.clone()));
                    *self = Replay::Buffered { chunks, trailers };
                    Some(body)
                }
                Ok(Handoff::Partial { chunks, rest }) => {
                    let (tx, rx) = oneshot::channel();
                    let body = boxed(ReplayBody::record(chunks, rest, tx));
                    *self = Replay::Teeing(rx);
                    Some(body)
                }
                // Grew past the bound, failed, or is still streaming.
                Err(_) => {
                    *self = Replay::Gone;
                    None
                }
            },
            Replay::Gone => None,
        }
    }
}

/// Reads a body that announced at most [`MAX_REPLAY_BYTES`]. If it lied
/// and grows past the bound, what was read and the rest go to the first
/// try and the request is not replayable.
async fn collect(mut body: Body) -> Result<(Body, Replay), BoxError> {
    let mut chunks = Vec::new();
    let mut len = 0usize;
    let mut trailers = None;
    while !body.is_end_stream() {
        let Some(frame) = body.frame().await else {
            break;
        };
        match frame?.into_data() {
            Ok(data) => {
                len += data.len();
                chunks.push(data);
                if len > MAX_REPLAY_BYTES {
                    return Ok((boxed(ReplayBody::prefixed(chunks, body)), Replay::Gone));
                }
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers = Some(t);
                }
            }
        }
    }
    let first = boxed(ReplayBody::replay(chunks.clone(), trailers.clone()));
    Ok((first, Replay::Buffered { chunks, trailers }))
}

/// A request body for one try: recorded chunks first, then (if any) the
/// rest of the caller's body, recording it while it fits.
struct ReplayBody {
    chunks: Vec<Bytes>,
    /// Index of the next chunk of `chunks` to send.
    next: usize,
    /// Bytes in `chunks`.
    len: usize,
    rest: Option<Body>,
    /// Trailers to send after the chunks (a replay).
    trailers_out: Option<HeaderMap>,
    /// Trailers the rest carried (recording).
    trailers_seen: Option<HeaderMap>,
    /// Where the recording goes; `None` when not recording.
    tx: Option<oneshot::Sender<Handoff>>,
}

impl ReplayBody {
    fn new(
        chunks: Vec<Bytes>,
        rest: Option<Body>,
        trailers_out: Option<HeaderMap>,
        tx: Option<oneshot::Sender<Handoff>>,
    ) -> Self {
        ReplayBody {
            len: chunks.iter().map(Bytes::len).sum(),
            chunks,
            next: 0,
            rest,
            trailers_out,
            trailers_seen: None,
            tx,
        }
    }

    fn replay(chunks: Vec<Bytes>, trailers: Option<HeaderMap>) -> Self {
        ReplayBody::new(chunks, None, trailers, None)
    }

    fn prefixed(chunks: Vec<Bytes>, rest: Body) -> Self {
        ReplayBody::new(chunks, Some(rest), None, None)
    }

    fn record(chunks: Vec<Bytes>, rest: Body, tx: oneshot::Sender<Handoff>) -> Self {
        if rest.is_end_stream() {
            let _ = tx.send(Handoff::Complete {
                chunks: chunks.clone(),
                trailers: None,
            });
            return ReplayBody::replay(chunks, None);
        }
        ReplayBody::new(chunks, Some(rest), None, Some(tx))
    }

    /// The caller's body ended: hand the whole recording over.
    fn finish(&mut self) {
        if let Some(tx) = self.tx.take() {
            self.next = 0;
            let _ = tx.send(Handoff::Complete {
                chunks: std::mem::take(&mut self.chunks),
                trailers: self.trailers_seen.take(),
            });
        }
    }

    /// Stops recording: the request cannot be replayed.
    fn abandon(&mut self) {
        self.tx = None;
        if self.rest.is_some() {
            self.chunks = Vec::new();
            self.next = 0;
        }
    }
}

impl Drop for ReplayBody {
    fn drop(&mut self) {
        // Let go before the end: the next try resumes where this one
        // stopped reading.
        if let Some(tx) = self.tx.take() {
            let handoff = match self.rest.take() {
                Some(rest) => Handoff::Partial {
                    chunks: std::mem::take(&mut self.chunks),
                    rest,
                },
                None => Handoff::Complete {
                    chunks: std::mem::take(&mut self.chunks),
                    trailers: self.trailers_seen.take(),
                },
            };
            let _ = tx.send(handoff);
        }
    }
}

impl http_body::Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(chunk) = this.chunks.get(this.next) {
            let chunk = chunk.clone();
            this.next += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        let Some(rest) = this.rest.as_mut() else {
            return Poll::Ready(this.trailers_out.take().map(|t| Ok(Frame::trailers(t))));
        };
        match std::pin::Pin::new(rest).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.rest = None;
                this.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.abandon();
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if this.tx.is_some() {
                    if let Some(data) = frame.data_ref() {
                        if this.len + data.len() <= MAX_REPLAY_BYTES {
                            this.len += data.len();
                            this.chunks.push(data.clone());
                            this.next = this.chunks.len();
                        } else {
                            this.abandon();
                        }
                    } else if let Some(t) = frame.trailers_ref() {
                        this.trailers_seen = Some(t.clone());
                    }
                }
                if this
                    .rest
                    .as_ref()
                    .is_some_and(http_body::Body::is_end_stream)
                {
                    this.rest = None;
                    this.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.next >= self.chunks.len()
            && self
                .rest
                .as_ref()
                .is_none_or(http_body::Body::is_end_stream)
            && self.trailers_out.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let pending: u64 = self
            .chunks
            .get(self.next..)
            .unwrap_or_default()
            .iter()
            .map(|c| c.len() as u64)
            .sum();
        match &self.rest {
            None => SizeHint::with_exact(pending),
            Some(rest) => {
                let hint = rest.size_hint();
                let mut out = SizeHint::new();
                out.set_lower(hint.lower().saturating_add(pending));
                if let Some(upper) = hint.upper() {
                    out.set_upper(upper.saturating_add(pending));
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests;
