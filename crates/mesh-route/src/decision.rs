//! The route decision: what the route stage decided for one request, stored
//! in the request's extensions (with the table it was made with, as one
//! [`Routed`](crate::layer::Routed)) and read by the layers below it
//! (fault, mirror, timeout, retry, balance; SPEC 1.1) through
//! [`route_decision`](crate::layer::route_decision).
//!
//! Everything here is compiled once per rule when a snapshot is built; a
//! decision for a request is a handful of `Arc` clones. Policies are plain
//! typed copies of the config: the layers that enforce them own the
//! behaviour, this module only states it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

use crate::matcher::headers::HeaderEdits;
use crate::matcher::rewrite::Rewrite;
pub use crate::profile::ResponseClasses;

/// The decision for one request.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteDecision {
    /// Which rule decided.
    pub route: RouteId,
    /// What to do with the request.
    pub action: RouteAction,
    /// The rule's policies (timeout, retries, fault, mirrors, rewrite).
    pub policy: Arc<RoutePolicy>,
}

impl RouteDecision {
    /// The decision for a host without a VirtualService (SPEC 4.1): forward to
    /// the host, no subset, no edits, and the default policy. `retries` is
    /// `None` here; the retry layer applies Istio's default policy.
    pub fn default_route(host: &str) -> RouteDecision {
        RouteDecision {
            route: RouteId::default_route(),
            action: RouteAction::Forward(Forward {
                destination: DestinationKey {
                    host: host.into(),
                    subset: None,
                    port: None,
                },
                request_headers: Arc::default(),
                response_headers: Arc::default(),
                matched_prefix: None,
            }),
            policy: Arc::default(),
        }
    }

    /// The forward action, if the request goes upstream.
    pub fn forward(&self) -> Option<&Forward> {
        match &self.action {
            RouteAction::Forward(f) => Some(f),
            _ => None,
        }
    }
}

/// Names the rule that decided, for logs, metrics and `mesh explain`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RouteId {
    /// `VirtualService/<namespace>/<name>`, or `default` for a host without one.
    pub resource: Arc<str>,
    /// Index of the rule in `http`; `None` for the default route and for
    /// "no rule matched".
    pub rule_index: Option<usize>,
    /// The rule's `name`, if it has one.
    pub rule_name: Option<Arc<str>>,
}

impl RouteId {
    /// The id of the implicit route of a host without a VirtualService.
    pub fn default_route() -> RouteId {
        RouteId {
            resource: Arc::from("default"),
            rule_index: None,
            rule_name: None,
        }
    }
}

/// What to do with the request.
#[derive(Clone, Debug, PartialEq)]
pub enum RouteAction {
    /// Send it upstream.
    Forward(Forward),
    /// Answer locally with a redirect.
    Redirect {
        /// The 3xx status.
        status: StatusCode,
        /// The `Location` header.
        location: HeaderValue,
    },
    /// Answer locally with a fixed response.
    DirectResponse {
        /// The status.
        status: StatusCode,
        /// The body (empty when none is configured).
        body: Bytes,
    },
    /// The host has a VirtualService but no rule matched: 404, flag `NR`
    /// (SPEC 2).
    NoRoute,
}

/// Forwarding to one chosen destination.
#[derive(Clone, Debug, PartialEq)]
pub struct Forward {
    /// The chosen destination.
    pub destination: DestinationKey,
    /// Request header edits: the destination's, then the rule's (SPEC 4.4).
    pub request_headers: Arc<HeaderEdits>,
    /// Response header edits: the destination's, then the rule's.
    pub response_headers: Arc<HeaderEdits>,
    /// The `uri` prefix of the match block that matched, for
    /// [`Rewrite::apply`]; `/` when the block had no `uri` condition (as the
    /// generated Envoy route matches prefix `/`); `None` for exact and regex
    /// `uri` matches, whose rewrite replaces the whole path.
    pub matched_prefix: Option<Arc<str>>,
}

/// A destination service, subset and port: the key of per-destination
/// state (pools, outlier ejection, balancers).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DestinationKey {
    /// The qualified host (`reviews.prod.svc.cluster.local`).
    pub host: Arc<str>,
    /// The DestinationRule subset, if any.
    pub subset: Option<Arc<str>>,
    /// The service port, if the route names one.
    pub port: Option<u16>,
}

/// The compiled policies of one rule.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RoutePolicy {
    /// Total time for the request including retries; `None` is no limit
    /// (Istio's default, and what `timeout: 0s` means).
    pub timeout: Option<Duration>,
    /// The rule's `retries`; `None` means the rule has none, so the retry
    /// layer applies the default policy (SPEC 4.6).
    pub retries: Option<RetrySpec>,
    /// Fault injection.
    pub fault: Option<FaultSpec>,
    /// Mirror destinations with their percentages.
    pub mirrors: Vec<MirrorSpec>,
    /// Path and Host rewrite before forwarding.
    pub rewrite: Option<Rewrite>,
}

/// A rule's retry policy, as written (SPEC 4.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetrySpec {
    /// Retries after the first try (tries = 1 + attempts). 0 disables
    /// retries: a `retries` block without `attempts` means exactly that.
    pub attempts: u32,
    /// Limit per try.
    pub per_try_timeout: Option<Duration>,
    /// Conditions, in config order. When `retryOn` is absent this holds the
    /// default conditions (SPEC 14); it is never empty.
    pub retry_on: Vec<RetryOn>,
    /// Base interval of the backoff; `None` is the 25 ms default.
    pub backoff: Option<Duration>,
    /// Whether retries prefer hosts not tried before (default true).
    pub retry_ignore_previous_hosts: bool,
    /// `retryRemoteLocalities`, as written.
    pub retry_remote_localities: Option<bool>,
    /// A retry budget capping these retries (SPEC 13.2), shared by every
    /// request to the destination: a ServiceProfile's `retryBudget`. `None`
    /// leaves only the attempt count, unless the retry layer has a default
    /// budget or the destination's ServiceProfile has one.
    pub budget: Option<BudgetSpec>,
    /// Linkerd's response classification (ServiceProfile `isRetryable`
    /// routes, SPEC 13.1): when set, a response is retried exactly when it
    /// classifies as a failure, `retry_on` is ignored, transport errors are
    /// not retried and there is no backoff.
    pub classes: Option<Arc<ResponseClasses>>,
}

impl RetrySpec {
    /// No retries: one try, nothing retried (`attempts: 0`).
    pub fn disabled() -> RetrySpec {
        RetrySpec {
            attempts: 0,
            per_try_timeout: None,
            retry_on: RetrySpec::DEFAULT_RETRY_ON.to_vec(),
            backoff: None,
            retry_ignore_previous_hosts: true,
            retry_remote_localities: None,
            budget: None,
            classes: None,
        }
    }

    /// Istio's policy for a route without `retries` (SPEC 4.6, 14): 2
    /// retries on the default conditions, 25 ms backoff, untried hosts
    /// preferred.
    pub fn istio_default() -> RetrySpec {
        RetrySpec {
            attempts: 2,
            ..RetrySpec::disabled()
        }
    }

    /// The default conditions: `connect-failure,refused-stream,unavailable,
    /// cancelled,retriable-status-codes` (SPEC 4.6, 14).
    pub const DEFAULT_RETRY_ON: &'static [RetryOn] = &[
        RetryOn::ConnectFailure,
        RetryOn::RefusedStream,
        RetryOn::Unavailable,
        RetryOn::Cancelled,
        RetryOn::RetriableStatusCodes,
    ];

    /// The status codes listed in `retryOn`.
    pub fn status_codes(&self) -> impl Iterator<Item = u16> + '_ {
        self.retry_on.iter().filter_map(|r| match r {
            RetryOn::Status(c) => Some(*c),
            _ => None,
        })
    }

    /// Whether `condition` is listed (integers imply
    /// `retriable-status-codes`, SPEC 4.6).
    pub fn has(&self, condition: RetryOn) -> bool {
        self.retry_on.contains(&condition)
            || (condition == RetryOn::RetriableStatusCodes && self.status_codes().next().is_some())
    }
}

/// A retry budget as configured (ServiceProfile `retryBudget`, SPEC 13.2):
/// over any `ttl` window, retries may be `retry_ratio` times the requests
/// that ended without needing one, plus `min_retries_per_second` x `ttl`.
#[derive(Clone, Copy, Debug)]
pub struct BudgetSpec {
    /// Retries allowed per original request (0..=1000).
    pub retry_ratio: f64,
    /// Retries always allowed per second (below 2^31 - 1).
    pub min_retries_per_second: u32,
    /// The window (1 s..=60 s).
    pub ttl: Duration,
}

impl BudgetSpec {
    /// Linkerd's default budget: ratio 0.2, 10 retries/s, ttl 10 s (SPEC 14).
    pub const LINKERD_DEFAULT: BudgetSpec = BudgetSpec {
        retry_ratio: 0.2,
        min_retries_per_second: 10,
        ttl: Duration::from_secs(10),
    };

    /// Whether the proxy accepts the budget (SPEC 13.1); an invalid budget
    /// disables retries where it applies.
    pub fn is_valid(&self) -> bool {
        (Duration::from_secs(1)..=Duration::from_secs(60)).contains(&self.ttl)
            && (0.0..=1000.0).contains(&self.retry_ratio)
            && self.min_retries_per_second < 0x7fff_ffff
    }
}

impl PartialEq for BudgetSpec {
    fn eq(&self, other: &Self) -> bool {
        self.retry_ratio.to_bits() == other.retry_ratio.to_bits()
            && self.min_retries_per_second == other.min_retries_per_second
            && self.ttl == other.ttl
    }
}

impl Eq for BudgetSpec {}

impl std::hash::Hash for BudgetSpec {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.retry_ratio.to_bits().hash(state);
        self.min_retries_per_second.hash(state);
        self.ttl.hash(state);
    }
}

impl From<&mesh_core::schema::linkerd_profile::RetryBudget> for BudgetSpec {
    fn from(b: &mesh_core::schema::linkerd_profile::RetryBudget) -> Self {
        BudgetSpec {
            retry_ratio: b.retry_ratio,
            min_retries_per_second: b.min_retries_per_second,
            ttl: b.ttl.get(),
        }
    }
}

/// One `retryOn` condition (SPEC 12.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RetryOn {
    /// `5xx`.
    FiveXx,
    /// `gateway-error`.
    GatewayError,
    /// `reset`.
    Reset,
    /// `reset-before-request`.
    ResetBeforeRequest,
    /// `connect-failure`.
    ConnectFailure,
    /// `envoy-ratelimited`.
    EnvoyRatelimited,
    /// `retriable-4xx`.
    Retriable4xx,
    /// `refused-stream`.
    RefusedStream,
    /// `retriable-status-codes`.
    RetriableStatusCodes,
    /// `retriable-headers`.
    RetriableHeaders,
    /// `http3-post-connect-failure`.
    Http3PostConnectFailure,
    /// gRPC `cancelled`.
    Cancelled,
    /// gRPC `deadline-exceeded`.
    DeadlineExceeded,
    /// gRPC `internal`.
    Internal,
    /// gRPC `resource-exhausted`.
    ResourceExhausted,
    /// gRPC `unavailable`.
    Unavailable,
    /// A bare status code.
    Status(u16),
}

impl RetryOn {
    /// Parses one token of `retryOn`.
    pub fn parse(token: &str) -> Option<RetryOn> {
        Some(match token {
            "5xx" => RetryOn::FiveXx,
            "gateway-error" => RetryOn::GatewayError,
            "reset" => RetryOn::Reset,
            "reset-before-request" => RetryOn::ResetBeforeRequest,
            "connect-failure" => RetryOn::ConnectFailure,
            "envoy-ratelimited" => RetryOn::EnvoyRatelimited,
            "retriable-4xx" => RetryOn::Retriable4xx,
            "refused-stream" => RetryOn::RefusedStream,
            "retriable-status-codes" => RetryOn::RetriableStatusCodes,
            "retriable-headers" => RetryOn::RetriableHeaders,
            "http3-post-connect-failure" => RetryOn::Http3PostConnectFailure,
            "cancelled" => RetryOn::Cancelled,
            "deadline-exceeded" => RetryOn::DeadlineExceeded,
            "internal" => RetryOn::Internal,
            "resource-exhausted" => RetryOn::ResourceExhausted,
            "unavailable" => RetryOn::Unavailable,
            code => {
                let code: u16 = code.parse().ok()?;
                if !(100..=599).contains(&code) {
                    return None;
                }
                RetryOn::Status(code)
            }
        })
    }
}

/// A rule's fault injection (SPEC 4.5).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultSpec {
    /// The injected delay, drawn first.
    pub delay: Option<DelaySpec>,
    /// The injected abort, drawn after the delay.
    pub abort: Option<AbortSpec>,
}

/// An injected delay.
#[derive(Clone, Debug, PartialEq)]
pub struct DelaySpec {
    /// How long the request is held.
    pub fixed_delay: Duration,
    /// Share of requests delayed, 0..=100 (`percentage`, else the
    /// deprecated integer `percent`, else 0).
    pub percent: f64,
}

/// An injected abort.
#[derive(Clone, Debug, PartialEq)]
pub struct AbortSpec {
    /// The status the caller gets.
    pub status: AbortStatus,
    /// Share of requests aborted, 0..=100 (absent percentage is 0).
    pub percent: f64,
}

/// The status of an injected abort.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AbortStatus {
    /// An HTTP status.
    Http(StatusCode),
    /// A gRPC status: its numeric code and name (`14`, `UNAVAILABLE`).
    Grpc {
        /// The numeric code.
        code: u32,
        /// The name as written.
        name: Arc<str>,
    },
}

/// A mirror destination.
#[derive(Clone, Debug, PartialEq)]
pub struct MirrorSpec {
    /// Where copies go.
    pub destination: DestinationKey,
    /// Share of requests mirrored, 0..=100.
    pub percent: f64,
}
