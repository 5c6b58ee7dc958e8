//! Fault injection (SPEC 1.1 step 3, 4.5): hold a share of a route's
//! requests for a fixed delay, and answer a share locally with an error, to
//! test how callers cope before production does it for you.
//!
//! The delay is drawn first and served; then the abort is drawn. When both
//! fire the caller waits the full delay and then gets the abort. Both are
//! drawn once per request (this layer sits above retries), an aborted
//! request never reaches the upstream, a mirror or a retry, and the delay is
//! not counted against the route timeout (this layer sits above it).
//! Aborts carry flag `FI`, delayed requests `DI`.
//!
//! ```
//! use std::sync::Arc;
//! use mesh_resilience::fault::FaultLayer;
//! use mesh_route::random::SplitMix;
//!
//! // Reads each request's fault policy from its route decision.
//! let layer = FaultLayer::new(Arc::new(SplitMix::seeded(7)));
//! # let _ = layer;
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response, StatusCode};
use mesh_core::http::{Body, RESPONSE_FLAGS_HEADER, empty, local_reply};
use mesh_route::decision::{AbortStatus, FaultSpec};
use mesh_route::layer::route_decision;
use mesh_route::random::SharedRandom;

/// Layer of the fault stage.
#[derive(Clone)]
pub struct FaultLayer {
    random: SharedRandom,
}

impl FaultLayer {
    /// Draws fault percentages from `random` (seed it in tests).
    pub fn new(random: SharedRandom) -> Self {
        FaultLayer { random }
    }
}

impl<S> tower::Layer<S> for FaultLayer {
    type Service = Fault<S>;

    fn layer(&self, inner: S) -> Fault<S> {
        Fault {
            inner,
            random: self.random.clone(),
        }
    }
}

/// The fault stage.
#[derive(Clone)]
pub struct Fault<S> {
    inner: S,
    random: SharedRandom,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The reply to an injected abort: the configured HTTP status, or for a
/// gRPC abort a trailers-only gRPC reply with that status.
fn abort_reply(status: &AbortStatus, delayed: bool) -> Response<Body> {
    match status {
        AbortStatus::Http(code) => local_reply(*code, flags_static(delayed), "fault filter abort"),
        AbortStatus::Grpc { code, .. } => {
            let mut resp = Response::new(empty());
            let headers = resp.headers_mut();
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            headers.insert("grpc-status", HeaderValue::from(*code));
            headers.insert(
                "grpc-message",
                HeaderValue::from_static("fault filter abort"),
            );
            headers.insert(
                RESPONSE_FLAGS_HEADER,
                HeaderValue::from_static(flags_static(delayed)),
            );
            *resp.status_mut() = StatusCode::OK;
            resp
        }
    }
}

fn flags_static(delayed: bool) -> &'static str {
    if delayed { "DI,FI" } else { "FI" }
}

impl<S> tower::Service<Request<Body>> for Fault<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let fault: Option<FaultSpec> =
            route_decision(req.extensions()).and_then(|d| d.policy.fault.clone());
        let Some(fault) = fault else {
            return ResponseFuture {
                inner: Inner::Pass {
                    call: self.inner.call(req),
                },
            };
        };
        // Draws happen now, in order: delay, then abort (SPEC 4.5).
        let delay = fault
            .delay
            .filter(|d| self.random.chance(d.percent))
            .map(|d| d.fixed_delay);
        let abort = fault
            .abort
            .filter(|a| self.random.chance(a.percent))
            .map(|a| a.status);
        let mut inner = self.inner.clone();
        std::mem::swap(&mut inner, &mut self.inner);
        ResponseFuture {
            inner: Inner::Injected {
                fut: Box::pin(Injected {
                    state: State::Start {
                        inner: Some(inner),
                        req: Some(req),
                        delay: delay.map(|d| Box::pin(tokio::time::sleep(d))),
                        abort,
                    },
                    delayed: delay.is_some(),
                }),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The fault stage's future: the inner call itself on a route without
    /// a fault (no allocation), or the boxed delay / abort / call.
    pub struct ResponseFuture<F, E> {
        #[pin]
        inner: Inner<F, E>,
    }
}

pin_project_lite::pin_project! {
    #[project = Proj]
    enum Inner<F, E> {
        /// No fault on the route.
        Pass {
            #[pin]
            call: F,
        },
        /// A fault was drawn or may be.
        Injected {
            fut: BoxFuture<Result<Response<Body>, E>>,
        },
    }
}

impl<F, E> Future for ResponseFuture<F, E>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().inner.project() {
            Proj::Pass { call } => call.poll(cx),
            Proj::Injected { fut } => fut.as_mut().poll(cx),
        }
    }
}

// Only requests whose rule has a fault get this future; its size is not
// worth a second allocation.
#[allow(clippy::large_enum_variant)]
enum State<S: tower::Service<Request<Body>>> {
    Start {
        inner: Option<S>,
        req: Option<Request<Body>>,
        delay: Option<Pin<Box<tokio::time::Sleep>>>,
        abort: Option<AbortStatus>,
    },
    Calling(Pin<Box<S::Future>>),
}

/// Serves the delay, then the abort or the call. A named future rather than
/// an `async` block: the latter trips a compiler limitation on `Send`
/// inference with boxed-error bodies in bounds.
struct Injected<S: tower::Service<Request<Body>>> {
    state: State<S>,
    delayed: bool,
}

impl<S> Unpin for Injected<S> where S: tower::Service<Request<Body>> {}

impl<S> Future for Injected<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>>,
{
    type Output = Result<Response<Body>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let delayed = self.delayed;
        loop {
            match &mut self.state {
                State::Start {
                    inner,
                    req,
                    delay,
                    abort,
                } => {
                    if let Some(sleep) = delay {
                        if sleep.as_mut().poll(cx).is_pending() {
                            return Poll::Pending;
                        }
                        *delay = None;
                    }
                    if let Some(status) = abort.take() {
                        return Poll::Ready(Ok(abort_reply(&status, delayed)));
                    }
                    let (Some(mut svc), Some(req)) = (inner.take(), req.take()) else {
                        return Poll::Ready(Ok(local_reply(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "-",
                            "fault stage polled after completion",
                        )));
                    };
                    let call = Box::pin(svc.call(req));
                    self.state = State::Calling(call);
                }
                State::Calling(call) => {
                    return match call.as_mut().poll(cx) {
                        Poll::Ready(Ok(mut resp)) => {
                            if delayed {
                                resp.headers_mut()
                                    .insert(RESPONSE_FLAGS_HEADER, HeaderValue::from_static("DI"));
                            }
                            Poll::Ready(Ok(resp))
                        }
                        other => other,
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use mesh_route::decision::{AbortSpec, DelaySpec, RouteDecision, RoutePolicy};
    use mesh_route::random::SplitMix;
    use tower::{Layer, ServiceExt};

    use super::*;

    fn request(fault: FaultSpec) -> Request<Body> {
        let mut decision = RouteDecision::default_route("reviews.default.svc.cluster.local");
        decision.policy = Arc::new(RoutePolicy {
            fault: Some(fault),
            ..RoutePolicy::default()
        });
        let mut req = Request::new(empty());
        req.extensions_mut().insert(decision);
        req
    }

    fn counting(
        calls: Arc<AtomicUsize>,
    ) -> impl tower::Service<
        Request<Body>,
        Response = Response<Body>,
        Error = Infallible,
        Future = BoxFuture<Result<Response<Body>, Infallible>>,
    > + Clone {
        tower::service_fn(move |_req: Request<Body>| {
            calls.fetch_add(1, Ordering::SeqCst);
            let fut: BoxFuture<Result<Response<Body>, Infallible>> =
                Box::pin(async { Ok(Response::new(empty())) });
            fut
        })
    }

    fn delay(percent: f64) -> Option<DelaySpec> {
        Some(DelaySpec {
            fixed_delay: Duration::from_secs(5),
            percent,
        })
    }

    fn abort(percent: f64) -> Option<AbortSpec> {
        Some(AbortSpec {
            status: AbortStatus::Http(StatusCode::INTERNAL_SERVER_ERROR),
            percent,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn an_abort_is_answered_locally_and_never_reaches_the_upstream() {
        let calls = Arc::new(AtomicUsize::new(0));
        let svc = FaultLayer::new(Arc::new(SplitMix::seeded(1))).layer(counting(calls.clone()));
        let resp = svc
            .oneshot(request(FaultSpec {
                delay: None,
                abort: abort(100.0),
            }))
            .await
            .unwrap();
        assert_eq!(resp.status(), 500);
        assert_eq!(resp.headers()[RESPONSE_FLAGS_HEADER], "FI");
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_delay_holds_then_forwards_and_both_wait_then_abort() {
        let calls = Arc::new(AtomicUsize::new(0));
        let layer = FaultLayer::new(Arc::new(SplitMix::seeded(1)));
        let start = tokio::time::Instant::now();
        let resp = layer
            .layer(counting(calls.clone()))
            .oneshot(request(FaultSpec {
                delay: delay(100.0),
                abort: None,
            }))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()[RESPONSE_FLAGS_HEADER], "DI");
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let start = tokio::time::Instant::now();
        let resp = layer
            .layer(counting(calls.clone()))
            .oneshot(request(FaultSpec {
                delay: delay(100.0),
                abort: abort(100.0),
            }))
            .await
            .unwrap();
        assert_eq!(resp.status(), 500);
        assert_eq!(resp.headers()[RESPONSE_FLAGS_HEADER], "DI,FI");
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(5),
            "the full delay, then the abort"
        );
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "the aborted request never went upstream"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn abort_percentages_hold_within_binomial_tolerance() {
        // The seed's QA rule: 10 % aborts. n = 10,000, p = 0.1:
        // sigma = sqrt(n p (1 - p)) = 30; allow five sigma.
        let calls = Arc::new(AtomicUsize::new(0));
        let layer = FaultLayer::new(Arc::new(SplitMix::seeded(42)));
        let n = 10_000usize;
        let mut aborted = 0usize;
        for _ in 0..n {
            let resp = layer
                .layer(counting(calls.clone()))
                .oneshot(request(FaultSpec {
                    delay: None,
                    abort: abort(10.0),
                }))
                .await
                .unwrap();
            if resp.status() == 500 {
                aborted += 1;
            }
        }
        let expected = n as f64 * 0.1;
        let sigma = (n as f64 * 0.1 * 0.9).sqrt();
        assert!((aborted as f64 - expected).abs() < 5.0 * sigma, "{aborted}");
        assert_eq!(calls.load(Ordering::SeqCst), n - aborted);
    }

    #[tokio::test(start_paused = true)]
    async fn grpc_aborts_are_grpc_statuses_and_zero_percent_never_fires() {
        let calls = Arc::new(AtomicUsize::new(0));
        let layer = FaultLayer::new(Arc::new(SplitMix::seeded(3)));
        let resp = layer
            .layer(counting(calls.clone()))
            .oneshot(request(FaultSpec {
                delay: None,
                abort: Some(AbortSpec {
                    status: AbortStatus::Grpc {
                        code: 14,
                        name: "UNAVAILABLE".into(),
                    },
                    percent: 100.0,
                }),
            }))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["grpc-status"], "14");
        assert_eq!(resp.headers()[RESPONSE_FLAGS_HEADER], "FI");
        for _ in 0..1000 {
            let resp = layer
                .layer(counting(calls.clone()))
                .oneshot(request(FaultSpec {
                    delay: delay(0.0),
                    abort: abort(0.0),
                }))
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            assert!(resp.headers().get(RESPONSE_FLAGS_HEADER).is_none());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1000);
    }
}
