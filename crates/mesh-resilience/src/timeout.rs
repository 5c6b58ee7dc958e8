//! Request timeouts: the whole-request deadline of SPEC 4.6 and 12.
//!
//! Istio routes have **no** timeout unless the VirtualService sets one
//! (Envoy's own 15 s default is overridden), and a caller can only make a
//! request's deadline shorter: `x-envoy-upstream-rq-timeout-ms` lowers it,
//! and a gRPC request's `grpc-timeout` becomes its deadline, capped by the
//! route's `timeout` when one is set. When the deadline passes, the upstream
//! call is dropped (its connection stream is reset) and the caller gets 504
//! with flag `UT` (a gRPC caller: DEADLINE_EXCEEDED).
//!
//! The layer sits below fault injection, so an injected delay does not count
//! against the route timeout (SPEC 1.1 step 3), and above retries, so the
//! deadline bounds every attempt together.
//!
//! ```
//! use std::time::Duration;
//! use mesh_resilience::timeout::TimeoutLayer;
//!
//! // Alone: every request gets 2 s.
//! let fixed = TimeoutLayer::fixed(Duration::from_secs(2));
//! // In the mesh stack: each request gets its route's timeout.
//! let per_route = TimeoutLayer::from_route();
//! # let _ = (fixed, per_route);
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, Request, Response};
use mesh_core::http::{Body, MeshError};
use mesh_route::layer::route_decision;

/// Where a request's deadline comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeoutPolicy {
    /// The same deadline for every request.
    Fixed(Duration),
    /// The matched route's `timeout` (none when the route sets none).
    FromRoute,
}

/// Layer of the timeout stage.
#[derive(Clone, Copy, Debug)]
pub struct TimeoutLayer {
    policy: TimeoutPolicy,
}

impl TimeoutLayer {
    /// Every request gets `timeout`.
    pub fn fixed(timeout: Duration) -> Self {
        TimeoutLayer {
            policy: TimeoutPolicy::Fixed(timeout),
        }
    }

    /// Each request gets its route decision's timeout.
    pub fn from_route() -> Self {
        TimeoutLayer {
            policy: TimeoutPolicy::FromRoute,
        }
    }
}

impl<S> tower::Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout {
            inner,
            policy: self.policy,
        }
    }
}

/// The timeout stage.
#[derive(Clone, Debug)]
pub struct Timeout<S> {
    inner: S,
    policy: TimeoutPolicy,
}

/// When a request's whole-request deadline passes, left in its extensions
/// by the timeout stage so the stages below can plan within it (the retry
/// stage never starts a backoff that would end after it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestDeadline(pub tokio::time::Instant);

/// A caller's own cap on the route timeout, in milliseconds (Envoy's header,
/// which Istio users send).
pub const UPSTREAM_TIMEOUT_HEADER: &str = "x-envoy-upstream-rq-timeout-ms";

/// The deadline of one request: the route's (or fixed) timeout, lowered by
/// `x-envoy-upstream-rq-timeout-ms`, and for gRPC replaced by
/// `grpc-timeout` capped by the route's timeout (SPEC 4.6).
pub fn effective_timeout(route: Option<Duration>, headers: &HeaderMap) -> Option<Duration> {
    // Names parsed once, not per request (a `&str` key is parsed on every
    // lookup).
    const GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");
    const UPSTREAM_TIMEOUT: http::HeaderName =
        http::HeaderName::from_static(UPSTREAM_TIMEOUT_HEADER);
    let mut timeout = route;
    if let Some(grpc) = headers
        .get(GRPC_TIMEOUT)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
    {
        timeout = Some(route.map_or(grpc, |r| r.min(grpc)));
    }
    if let Some(ms) = headers
        .get(UPSTREAM_TIMEOUT)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ms| *ms > 0)
    {
        let caller = Duration::from_millis(ms);
        timeout = Some(timeout.map_or(caller, |t| t.min(caller)));
    }
    timeout
}

/// Parses gRPC's `grpc-timeout` (at most 8 digits and a unit: H, M, S, m,
/// u, n). Anything else is ignored, as gRPC servers do.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

impl<S> tower::Service<Request<Body>> for Timeout<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let route = match self.policy {
            TimeoutPolicy::Fixed(d) => Some(d),
            TimeoutPolicy::FromRoute => {
                route_decision(req.extensions()).and_then(|d| d.policy.timeout)
            }
        };
        let timeout = effective_timeout(route, req.headers());
        let grpc = mesh_core::http::is_grpc(req.headers());
        if let Some(limit) = timeout {
            req.extensions_mut()
                .insert(RequestDeadline(tokio::time::Instant::now() + limit));
        }
        let call = self.inner.call(req);
        match timeout {
            None => ResponseFuture {
                inner: Inner::Plain { call },
            },
            Some(limit) => ResponseFuture {
                inner: Inner::Deadline {
                    call,
                    sleep: tokio::time::sleep(limit),
                    grpc,
                },
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The timeout stage's future: the inner call itself, or the inner
    /// call raced against its deadline. Held inline (no allocation per
    /// request); a named future rather than an `async` block, which trips a
    /// compiler limitation on `Send` inference with boxed-error bodies in
    /// bounds.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Inner<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = Proj]
    enum Inner<F> {
        /// No timeout applies.
        Plain {
            #[pin]
            call: F,
        },
        /// The call and its deadline.
        Deadline {
            #[pin]
            call: F,
            #[pin]
            sleep: tokio::time::Sleep,
            grpc: bool,
        },
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (call, sleep, grpc) = match self.project().inner.project() {
            Proj::Plain { call } => return call.poll(cx),
            Proj::Deadline { call, sleep, grpc } => (call, sleep, *grpc),
        };
        if let Poll::Ready(out) = call.poll(cx) {
            return Poll::Ready(out);
        }
        match sleep.poll(cx) {
            // Returning drops the inner call, which cancels the upstream
            // request.
            Poll::Ready(()) => Poll::Ready(Ok(if grpc {
                MeshError::Timeout.to_grpc_response()
            } else {
                MeshError::Timeout.to_response()
            })),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use http::HeaderValue;
    use mesh_core::http::{RESPONSE_FLAGS_HEADER, empty};
    use mesh_route::layer::BoxFuture;
    use tower::{Layer, ServiceExt};

    use super::*;

    /// A backend that answers after `delay` and records whether it was
    /// cancelled before answering.
    fn slow(
        delay: Duration,
        cancelled: Arc<AtomicBool>,
    ) -> impl tower::Service<
        Request<Body>,
        Response = Response<Body>,
        Error = Infallible,
        Future = BoxFuture<Result<Response<Body>, Infallible>>,
    > + Clone {
        tower::service_fn(move |_req: Request<Body>| {
            let cancelled = Arc::clone(&cancelled);
            let fut: BoxFuture<Result<Response<Body>, Infallible>> = Box::pin(async move {
                struct Flag(Arc<AtomicBool>, bool);
                impl Drop for Flag {
                    fn drop(&mut self) {
                        if !self.1 {
                            self.0.store(true, Ordering::SeqCst);
                        }
                    }
                }
                let mut flag = Flag(cancelled, false);
                tokio::time::sleep(delay).await;
                flag.1 = true;
                Ok(Response::new(empty()))
            });
            fut
        })
    }

    fn request(headers: &[(&str, &str)]) -> Request<Body> {
        let mut req = Request::new(empty());
        for (k, v) in headers {
            req.headers_mut().insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        req
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_request_gets_504_ut_and_the_upstream_call_is_cancelled() {
        let cancelled = Arc::new(AtomicBool::new(false));
        let svc = TimeoutLayer::fixed(Duration::from_secs(2))
            .layer(slow(Duration::from_secs(5), Arc::clone(&cancelled)));
        let start = tokio::time::Instant::now();
        let resp = svc.oneshot(request(&[])).await.unwrap();
        assert_eq!(resp.status(), 504);
        assert_eq!(resp.headers()[RESPONSE_FLAGS_HEADER], "UT");
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert!(
            cancelled.load(Ordering::SeqCst),
            "the upstream call was dropped"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_fast_answer_passes_and_no_route_timeout_means_none() {
        let cancelled = Arc::new(AtomicBool::new(false));
        let fast = TimeoutLayer::fixed(Duration::from_secs(2))
            .layer(slow(Duration::from_secs(1), Arc::clone(&cancelled)));
        assert_eq!(fast.oneshot(request(&[])).await.unwrap().status(), 200);
        // No decision in extensions: the route has no timeout; an hour-long
        // call completes.
        let unbounded =
            TimeoutLayer::from_route().layer(slow(Duration::from_secs(3600), cancelled.clone()));
        assert_eq!(unbounded.oneshot(request(&[])).await.unwrap().status(), 200);
        assert!(!cancelled.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn grpc_callers_get_deadline_exceeded_from_their_own_grpc_timeout() {
        let svc = TimeoutLayer::from_route().layer(slow(
            Duration::from_secs(5),
            Arc::new(AtomicBool::new(false)),
        ));
        let start = tokio::time::Instant::now();
        let resp = svc
            .oneshot(request(&[
                ("content-type", "application/grpc"),
                ("grpc-timeout", "300m"),
            ]))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["grpc-status"], "4");
        assert_eq!(start.elapsed(), Duration::from_millis(300));
    }

    #[test]
    fn callers_can_only_shorten_the_route_timeout() {
        let route = Some(Duration::from_secs(10));
        let h = |pairs: &[(&str, &str)]| request(pairs).headers().clone();
        assert_eq!(effective_timeout(route, &h(&[])), route);
        assert_eq!(
            effective_timeout(route, &h(&[(UPSTREAM_TIMEOUT_HEADER, "250")])),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            effective_timeout(route, &h(&[(UPSTREAM_TIMEOUT_HEADER, "60000")])),
            route
        );
        assert_eq!(
            effective_timeout(None, &h(&[(UPSTREAM_TIMEOUT_HEADER, "100")])),
            Some(Duration::from_millis(100))
        );
        // grpc-timeout replaces an absent route timeout, and is capped by a set one.
        assert_eq!(
            effective_timeout(None, &h(&[("grpc-timeout", "30S")])),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            effective_timeout(route, &h(&[("grpc-timeout", "30S")])),
            route
        );
        assert_eq!(
            effective_timeout(route, &h(&[(UPSTREAM_TIMEOUT_HEADER, "x")])),
            route
        );
    }

    #[test]
    fn grpc_timeout_values() {
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("5u"), Some(Duration::from_micros(5)));
        assert_eq!(parse_grpc_timeout("7n"), Some(Duration::from_nanos(7)));
        for bad in ["", "S", "123456789S", "10x", "-1S", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }
}
