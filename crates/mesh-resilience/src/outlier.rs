//! Outlier detection: DestinationRule `outlierDetection` (SPEC 5.4), the
//! stage between the pool limits and the connection (SPEC 1.1 steps 7-8).
//!
//! A pod that keeps failing should stop getting traffic before anyone pages
//! a human: a crashed process behind a live socket, a node with a broken
//! disk, a version with a bad config. Active health checks see that late
//! (every few seconds, on a probe path) and need the application to serve
//! them; *passive* detection uses the real requests: each attempt's result
//! is charged to the endpoint that served it, and an endpoint that returns
//! too many errors in a row is **ejected**, left out of load balancing for
//! a while, then given another chance. An endpoint that keeps failing stays
//! out longer each time.
//!
//! What counts, as Envoy counts it (SPEC 5.4, 12.1):
//!
//! | result | `consecutive5xxErrors` | `consecutiveGatewayErrors` |
//! |---|---|---|
//! | 502, 503, 504 response | error | error |
//! | other 5xx response | error | resets |
//! | connect failure, reset, attempt timeout (local origin) | error | error |
//! | anything below 500 | resets | resets |
//! | circuit-broken (`UO`) or no-healthy-upstream reply | ignored | ignored |
//!
//! With `splitExternalLocalOriginErrors`, local-origin failures count only
//! toward `consecutiveLocalOriginFailures`, and any response resets that.
//! An attempt abandoned before its response arrived (per-try or route
//! timeout, or the caller gone) counts as a local-origin timeout.
//!
//! Ejection is decided inline, on the n-th consecutive error, and only
//! within `maxEjectionPercent`, a hard cap computed as SPEC 5.4 says:
//! `100 × (ejected + 1) / endpoints ≤ maxEjectionPercent` ([`may_eject`]),
//! so with the default 10 % a destination with fewer than ten endpoints
//! never ejects any. An ejected endpoint stays out for `baseEjectionTime ×
//! its ejection count` (the multiplier stops growing at the 300 s cap), and
//! returns at the first `interval` sweep after that; every sweep that finds
//! it in service decrements the multiplier again. Below `minHealthPercent`
//! of endpoints in service the destination is in panic ([`in_panic`]) and
//! the balancer ignores ejections; otherwise, with every endpoint ejected,
//! callers get 503 `UH`.
//!
//! The state lives in an [`Outliers`] registry keyed by destination (host,
//! subset, port) and endpoint address, outside the configuration snapshot,
//! so a reload (even one that reorders endpoints) keeps ejections. The
//! registry is also the balance stage's
//! [`EndpointHealth`](mesh_route::balance::EndpointHealth): the mesh stack
//! passes the same registry to `BalanceLayer::with_health` and to
//! [`OutlierLayer::per_destination`]. Sweeps run lazily, on the requests
//! that look at a destination, on tokio's clock; when nothing is ejected a
//! request costs a few atomic loads and no clock read.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use mesh_resilience::outlier::{OutlierLayer, OutlierPolicy, Outliers};
//!
//! // Alone: eject an endpoint (keyed by the `Target` the balancer chose)
//! // after 3 consecutive 5xx, for 10 s, at most half of them at a time.
//! let policy = OutlierPolicy {
//!     consecutive_5xx: 3,
//!     base_ejection_time: Duration::from_secs(10),
//!     max_ejection_percent: 50,
//!     ..OutlierPolicy::default()
//! };
//! let alone = OutlierLayer::new(policy);
//! // In the mesh stack: each destination's DestinationRule decides, and the
//! // same registry tells the balancer which endpoints are ejected
//! // (`BalanceLayer::with_health(outliers.clone())`).
//! let outliers = Arc::new(Outliers::from_destination_rules());
//! let per_destination = OutlierLayer::per_destination(Arc::clone(&outliers));
//! # let _ = (alone, per_destination);
//! ```

mod policy;
mod registry;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use mesh_core::http::{Body, RESPONSE_FLAGS_HEADER};

pub use self::policy::{
    DEFAULT_BASE_EJECTION_TIME, DEFAULT_CONSECUTIVE_5XX, DEFAULT_CONSECUTIVE_LOCAL_ORIGIN,
    DEFAULT_INTERVAL, DEFAULT_MAX_EJECTION_PERCENT, DEFAULT_MAX_EJECTION_TIME, OutlierPolicy,
    OutlierPolicyError, configures_outlier_detection, destination_policy, in_panic, may_eject,
};
pub use self::registry::{HostStatus, Outliers};
use self::registry::{Outcome, Pending};

fn classify(resp: &Response<Body>) -> Outcome {
    let status = resp.status().as_u16();
    if status < 500 {
        return Outcome::Response(status);
    }
    let Some(flags) = resp
        .headers()
        .get(RESPONSE_FLAGS_HEADER)
        .and_then(|v| v.to_str().ok())
    else {
        return Outcome::Response(status);
    };
    let mut local = false;
    for flag in flags.split(',').map(str::trim) {
        match flag {
            "UO" | "UH" | "NC" | "NR" | "FI" => return Outcome::Ignored,
            "UF" | "UC" | "UR" | "UT" => local = true,
            _ => {}
        }
    }
    if local {
        Outcome::LocalFailure
    } else {
        Outcome::Response(status)
    }
}

/// Layer of the outlier stage.
#[derive(Clone, Debug)]
pub struct OutlierLayer {
    outliers: Arc<Outliers>,
}

impl OutlierLayer {
    /// Judges every endpoint by `policy`, in a registry of its own.
    pub fn new(policy: OutlierPolicy) -> Self {
        OutlierLayer {
            outliers: Arc::new(Outliers::new(policy)),
        }
    }

    /// Records into `outliers`, which the balance stage consults too.
    pub fn per_destination(outliers: Arc<Outliers>) -> Self {
        OutlierLayer { outliers }
    }

    /// The registry it records into.
    pub fn outliers(&self) -> &Arc<Outliers> {
        &self.outliers
    }
}

impl<S> tower::Layer<S> for OutlierLayer {
    type Service = Outlier<S>;

    fn layer(&self, inner: S) -> Outlier<S> {
        Outlier {
            inner,
            outliers: Arc::clone(&self.outliers),
        }
    }
}

/// The outlier stage.
#[derive(Clone, Debug)]
pub struct Outlier<S> {
    inner: S,
    outliers: Arc<Outliers>,
}

impl<S, E> tower::Service<Request<Body>> for Outlier<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = E>,
{
    type Response = Response<Body>;
    type Error = E;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let pending = self.outliers.pending(&mut req);
        ResponseFuture {
            inner: self.inner.call(req),
            pending,
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner call, whose result is charged to its endpoint.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        pending: Pending,
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        this.pending.finish(match &out {
            Ok(resp) => classify(resp),
            Err(_) => Outcome::LocalFailure,
        });
        Poll::Ready(out)
    }
}
