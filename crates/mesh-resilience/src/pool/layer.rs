//! The pool-limits stage as a tower layer: admits each request against its
//! destination's pool, answers overflow with 503 UO, and holds the
//! request's permit until its response body ends.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, Version};
use mesh_core::http::{Body, BoxError, MeshError, boxed};
use mesh_route::layer::Target;

use super::counters::{
    Admission, DestinationPool, Overflow, PoolHandle, PoolRegistry, RequestPermit, RetryAttempt,
    RetryOverflow,
};
use super::limits::PoolLimits;

/// The header a circuit-broken reply carries (SPEC 2).
pub const OVERLOADED_HEADER: &str = "x-envoy-overloaded";

#[derive(Clone, Debug)]
enum Source {
    Fixed(Arc<DestinationPool>),
    PerDestination(Arc<PoolRegistry>),
}

/// Layer of the pool-limits stage.
#[derive(Clone, Debug)]
pub struct PoolLimitsLayer {
    source: Source,
}

impl PoolLimitsLayer {
    /// One pool with fixed `limits` for every request through every
    /// service this layer wraps.
    pub fn new(limits: PoolLimits) -> Self {
        PoolLimitsLayer {
            source: Source::Fixed(DestinationPool::new(limits)),
        }
    }

    /// Per destination: each request's pool and limits come from its route
    /// decision and the DestinationRule of the snapshot it was routed with.
    pub fn per_destination(registry: Arc<PoolRegistry>) -> Self {
        PoolLimitsLayer {
            source: Source::PerDestination(registry),
        }
    }

    /// The fixed pool of a layer made by [`new`](Self::new).
    pub fn fixed_pool(&self) -> Option<&Arc<DestinationPool>> {
        match &self.source {
            Source::Fixed(pool) => Some(pool),
            Source::PerDestination(_) => None,
        }
    }
}

impl<S> tower::Layer<S> for PoolLimitsLayer {
    type Service = CircuitBreaker<S>;

    fn layer(&self, inner: S) -> CircuitBreaker<S> {
        CircuitBreaker {
            inner,
            source: self.source.clone(),
        }
    }
}

/// The pool-limits stage.
#[derive(Clone, Debug)]
pub struct CircuitBreaker<S> {
    inner: S,
    source: Source,
}

/// Whether the request goes upstream over HTTP/1.x (one request per
/// connection at a time), as the connector will decide it.
fn goes_http1<B>(req: &Request<B>) -> bool {
    match req.extensions().get::<Target>().and_then(|t| t.http2) {
        Some(http2) => !http2,
        None => req.version() != Version::HTTP_2,
    }
}

/// The reply to a refused request: 503 UO with `x-envoy-overloaded`
/// (gRPC callers: UNAVAILABLE), marked [`RetryOverflow`] for a refused
/// retry.
pub fn overflow_reply(request_headers: &HeaderMap, overflow: Overflow) -> Response<Body> {
    let mut resp = MeshError::Overflow.reply_to(request_headers);
    resp.headers_mut()
        .insert(OVERLOADED_HEADER, HeaderValue::from_static("true"));
    if overflow == Overflow::Retries {
        resp.extensions_mut().insert(RetryOverflow);
    }
    resp
}

impl<S> tower::Service<Request<Body>> for CircuitBreaker<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let pool = match &self.source {
            Source::Fixed(pool) => Some(Arc::clone(pool)),
            Source::PerDestination(registry) => registry.pool_for(&req),
        };
        // Admitted requests call the inner service in place (the future
        // keeps no service); only a queued one takes the ready service along
        // and leaves a clone behind.
        let Some(pool) = pool else {
            return ResponseFuture::calling(self.inner.call(req), None);
        };
        let http1 = goes_http1(&req);
        let retry = req.extensions().get::<RetryAttempt>().is_some();
        match pool.admit(http1, retry) {
            Ok(Admission::Ready(permit)) => {
                let permit = hand_over(&mut req, permit);
                ResponseFuture::calling(self.inner.call(req), permit)
            }
            Ok(Admission::Queued(queued)) => {
                let mut inner = self.inner.clone();
                std::mem::swap(&mut inner, &mut self.inner);
                ResponseFuture {
                    state: State::Queued {
                        wait: Box::pin(queued.ready()),
                        next: Some(Box::new((inner, req))),
                    },
                }
            }
            Err(overflow) => ResponseFuture {
                state: State::Reply {
                    reply: Some(overflow_reply(req.headers(), overflow)),
                },
            },
        }
    }
}

/// Leaves the request's pool for the connector in a [`PoolHandle`], with
/// the permit when the pool's connector holds permits in its response
/// bodies (then `None` is returned); otherwise the permit is returned, for
/// the stage to tie to the response body itself.
fn hand_over(req: &mut Request<Body>, permit: RequestPermit) -> Option<RequestPermit> {
    if permit.pool().permits_go_to_connector() {
        req.extensions_mut().insert(PoolHandle::with_permit(permit));
        None
    } else {
        req.extensions_mut()
            .insert(PoolHandle::new(Arc::clone(permit.pool())));
        Some(permit)
    }
}

type WaitFuture = Pin<Box<dyn Future<Output = Result<RequestPermit, Overflow>> + Send>>;

pin_project_lite::pin_project! {
    /// Response future of [`CircuitBreaker`]: waits in the queue if it has
    /// to, calls the inner service, and ties the permit to the response
    /// body unless the connector holds it. The inner call is held inline;
    /// only a request that has to queue allocates (its wait and itself).
    pub struct ResponseFuture<S: tower::Service<Request<Body>>> {
        #[pin]
        state: State<S>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<S: tower::Service<Request<Body>>> {
        Queued {
            wait: WaitFuture,
            next: Option<Box<(S, Request<Body>)>>,
        },
        Calling {
            #[pin]
            call: S::Future,
            permit: Option<RequestPermit>,
        },
        Reply {
            reply: Option<Response<Body>>,
        },
    }
}

impl<S: tower::Service<Request<Body>>> ResponseFuture<S> {
    fn calling(call: S::Future, permit: Option<RequestPermit>) -> Self {
        ResponseFuture {
            state: State::Calling { call, permit },
        }
    }
}

impl<S> Future for ResponseFuture<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>>,
{
    type Output = Result<Response<Body>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Queued { wait, next } => {
                    let admitted = ready!(wait.as_mut().poll(cx));
                    let Some(boxed_next) = next.take() else {
                        return Poll::Ready(Ok(MeshError::Overflow.to_response()));
                    };
                    let (mut inner, mut req) = *boxed_next;
                    match admitted {
                        Ok(permit) => {
                            let permit = hand_over(&mut req, permit);
                            state.set(State::Calling {
                                call: inner.call(req),
                                permit,
                            });
                        }
                        Err(overflow) => {
                            return Poll::Ready(Ok(overflow_reply(req.headers(), overflow)));
                        }
                    }
                }
                StateProj::Calling { call, permit } => {
                    let resp = ready!(call.poll(cx))?;
                    return Poll::Ready(Ok(match permit.take() {
                        Some(permit) => hold_until_body_ends(resp, permit),
                        None => resp,
                    }));
                }
                StateProj::Reply { reply } => {
                    return Poll::Ready(Ok(reply
                        .take()
                        .unwrap_or_else(|| MeshError::Overflow.to_response())));
                }
            }
        }
    }
}

/// A request counts against its pool until its response body has ended
/// (an HTTP/1.1 connection is busy until then). Only for inner services
/// that do not hold the permit themselves: the connector does, in the body
/// it boxes anyway.
fn hold_until_body_ends(resp: Response<Body>, permit: RequestPermit) -> Response<Body> {
    resp.map(|body| {
        boxed(Held {
            body,
            permit: Some(permit),
        })
    })
}

struct Held {
    body: Body,
    permit: Option<RequestPermit>,
}

impl http_body::Body for Held {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let frame = ready!(Pin::new(&mut self.body).poll_frame(cx));
        if frame.is_none() || self.body.is_end_stream() {
            self.permit = None;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
