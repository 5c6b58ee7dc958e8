//! Listeners: accept connections, serve HTTP/1.1 and HTTP/2 (prior
//! knowledge, detected per connection) with upgrades, and drain: stop
//! accepting, let in-flight requests finish (HTTP/1 `Connection: close`,
//! HTTP/2 GOAWAY), give up at a deadline.
//!
//! Every connection, plain ([`serve`]) or TLS (the gateway's TLS ports),
//! meets its stack through one adapter, `ConnectionService`: it holds one
//! copy of the stack per connection and calls it in place for each request,
//! so serving a request neither clones the stack nor boxes its future (see
//! the adapter's doc for why hyper-util's own adapter does both).

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use mesh_core::http::{Body, Peer, boxed};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

/// A boxed stack: one type for different stacks, where that is what is
/// needed (the admin listener, tests, collections of listeners). The hot
/// listeners serve their concrete [`HttpStack`] instead, since a boxed
/// stack boxes every response future and clones through a box.
pub type HttpService = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// What a listener serves: a stack of request-to-response layers whose
/// failures are answers (SPEC 2), never errors, and whose futures can run
/// on any worker thread. Implemented for every such service, boxed
/// ([`HttpService`]) or concrete (`crate::stack::OutboundStack`).
pub trait HttpStack:
    tower::Service<
        Request<Body>,
        Response = Response<Body>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> HttpStack for S
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
}

/// How a served listener ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainOutcome {
    /// Whether every connection finished before the deadline.
    pub clean: bool,
}

/// Serves `service` on `listener` until `shutdown` turns true, then drains
/// for at most `deadline`.
pub async fn serve<S: HttpStack>(
    name: &'static str,
    listener: TcpListener,
    service: S,
    mut shutdown: watch::Receiver<bool>,
    deadline: Duration,
) -> DrainOutcome {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: back off
                        // briefly instead of spinning.
                        tracing::warn!(listener = name, "accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let conn = builder.serve_connection_with_upgrades(
                    TokioIo::new(stream),
                    ConnectionService::new(service.clone(), peer),
                );
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(listener = name, %peer, "connection ended: {e}");
                    }
                });
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
    // Stop accepting first: new connections are refused from here on.
    drop(listener);
    let clean = tokio::time::timeout(deadline, graceful.shutdown())
        .await
        .is_ok();
    if !clean {
        tracing::warn!(
            listener = name,
            "drain deadline passed with connections still open"
        );
    }
    DrainOutcome { clean }
}

/// One connection's requests, handed to the stack: the body boxed into
/// [`Body`] and the [`Peer`] recorded, as every stage below expects.
///
/// hyper calls a service through `&self` and wants a `'static` future, so
/// hyper-util's `TowerToHyperService` clones the tower service for every
/// request and drives the clone with `oneshot`. For a boxed stack that is a
/// heap allocation plus a clone of every layer per request, and the boxed
/// stack boxes each response future too. This adapter instead keeps one
/// copy of the stack for the connection and, per request, polls it ready
/// with a no-op waker and calls it in place: no clone, and the response
/// future is the stack's own. Our stages are ready at once (they forward
/// readiness to the connector, which is always ready), so this is the
/// path every request takes.
///
/// The in-place copy sits in a `RefCell`: hyper calls `call` from the
/// connection's task only, one request at a time (HTTP/2 streams
/// included: each gets its future from its own `call`, and the borrow
/// ends when `call` returns), so the borrow never finds it taken. No lock
/// is needed, and a `RefCell` makes the adapter `!Sync`, so the compiler
/// holds hyper to that. When the stack is not ready (a stage that applies
/// back-pressure), or should the copy ever be borrowed, the request falls
/// back to what hyper-util does: a clone of an untouched `spare` copy,
/// driven to readiness and called by `oneshot` (the waker registered on
/// the in-place copy is a no-op: nothing waits on it, the next request
/// polls it again).
pub(crate) struct ConnectionService<S> {
    /// The copy called in place.
    in_place: RefCell<S>,
    /// Never polled; cloned for a request the in-place copy cannot take.
    spare: S,
    peer: Peer,
}

impl<S: HttpStack> ConnectionService<S> {
    /// The service of one connection from `peer` over `stack`.
    pub(crate) fn new(stack: S, peer: SocketAddr) -> Self {
        ConnectionService {
            in_place: RefCell::new(stack.clone()),
            spare: stack,
            peer: Peer(peer),
        }
    }
}

impl<S: HttpStack> hyper::service::Service<Request<Incoming>> for ConnectionService<S> {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Dispatch<S::Future>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let mut req: Request<Body> = req.map(boxed);
        req.extensions_mut().insert(self.peer);
        if let Ok(mut stack) = self.in_place.try_borrow_mut() {
            let mut cx = Context::from_waker(Waker::noop());
            if let Poll::Ready(Ok(())) = stack.poll_ready(&mut cx) {
                return Dispatch::InPlace {
                    future: stack.call(req),
                };
            }
        }
        Dispatch::Cloned {
            future: Box::pin(self.spare.clone().oneshot(req)),
        }
    }
}

/// A boxed response future, for the rare request that cannot be called in
/// place.
type ClonedFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

pin_project_lite::pin_project! {
    /// The response future of [`ConnectionService`]: the stack's own future
    /// when the stack was called in place (no allocation), else a boxed
    /// `oneshot` over a clone of the stack.
    #[project = DispatchProj]
    pub(crate) enum Dispatch<F> {
        /// Called in place.
        InPlace {
            #[pin]
            future: F,
        },
        /// Called on a clone, once that was ready.
        Cloned {
            future: ClonedFuture,
        },
    }
}

impl<F> Future for Dispatch<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            DispatchProj::InPlace { future } => future.poll(cx),
            DispatchProj::Cloned { future } => future.as_mut().poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::TokioExecutor;
    use mesh_core::http::full;
    use tokio::net::TcpStream;

    use super::*;

    /// A stack that answers with the peer it was given, counts its clones,
    /// and, when `pending_first` is set, is not ready on the first poll of
    /// each copy (it wakes its task, as a stage under back-pressure would
    /// once it has room).
    struct Probe {
        clones: Arc<AtomicUsize>,
        pending_first: bool,
        polled: bool,
        /// Answers wait until this many calls have arrived (HTTP/2 test).
        gate: Option<Arc<tokio::sync::Barrier>>,
    }

    impl Clone for Probe {
        fn clone(&self) -> Self {
            self.clones.fetch_add(1, Ordering::SeqCst);
            Probe {
                clones: Arc::clone(&self.clones),
                pending_first: self.pending_first,
                polled: false,
                gate: self.gate.clone(),
            }
        }
    }

    impl tower::Service<Request<Body>> for Probe {
        type Response = Response<Body>;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            if self.pending_first && !self.polled {
                self.polled = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: Request<Body>) -> Self::Future {
            let peer = req.extensions().get::<Peer>().map(|p| p.0.to_string());
            let gate = self.gate.clone();
            Box::pin(async move {
                if let Some(gate) = gate {
                    gate.wait().await;
                }
                Ok(Response::new(full(peer.unwrap_or_default())))
            })
        }
    }

    fn probe(
        pending_first: bool,
        gate: Option<Arc<tokio::sync::Barrier>>,
    ) -> (Probe, Arc<AtomicUsize>) {
        let clones = Arc::new(AtomicUsize::new(0));
        let probe = Probe {
            clones: Arc::clone(&clones),
            pending_first,
            polled: false,
            gate,
        };
        (probe, clones)
    }

    /// Serves `stack` on a fresh loopback listener; returns its address
    /// and the sender that stops it.
    async fn start(stack: Probe) -> (SocketAddr, watch::Sender<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(serve(
            "test",
            listener,
            stack,
            stopped,
            Duration::from_secs(1),
        ));
        (addr, stop)
    }

    async fn body_text(resp: Response<Incoming>) -> String {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn get() -> Request<Empty<Bytes>> {
        Request::get("/").body(Empty::new()).unwrap()
    }

    /// Sends `n` requests one after another on one HTTP/1.1 connection and
    /// returns what each answered and the client's own address.
    async fn http1_requests(addr: SocketAddr, n: usize) -> (Vec<String>, SocketAddr) {
        let stream = TcpStream::connect(addr).await.unwrap();
        let local = stream.local_addr().unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut answers = Vec::with_capacity(n);
        for _ in 0..n {
            send.ready().await.unwrap();
            let resp = send.send_request(get()).await.unwrap();
            assert_eq!(resp.status(), 200);
            answers.push(body_text(resp).await);
        }
        (answers, local)
    }

    #[tokio::test]
    async fn a_ready_stack_is_called_in_place_with_the_peer_recorded() {
        let (stack, clones) = probe(false, None);
        let (addr, _stop) = start(stack).await;
        let (answers, local) = http1_requests(addr, 20).await;
        assert!(
            answers.iter().all(|a| *a == local.to_string()),
            "{answers:?}"
        );
        // Two copies for the connection (the in-place one and the spare),
        // none per request.
        assert_eq!(clones.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_stack_that_is_not_ready_is_called_on_a_clone() {
        let (stack, clones) = probe(true, None);
        let (addr, _stop) = start(stack).await;
        let (answers, local) = http1_requests(addr, 5).await;
        assert_eq!(answers, vec![local.to_string(); 5]);
        // The first request finds the in-place copy not ready and is served
        // by a clone (which is itself not ready at once: oneshot waits for
        // it); from then on the in-place copy is ready.
        assert_eq!(clones.load(Ordering::SeqCst), 2 + 1);
    }

    #[tokio::test]
    async fn concurrent_http2_streams_share_the_in_place_copy() {
        const STREAMS: usize = 8;
        // Every answer waits for all STREAMS calls: the streams are in
        // flight together on one connection.
        let gate = Arc::new(tokio::sync::Barrier::new(STREAMS));
        let (stack, clones) = probe(false, Some(gate));
        let (addr, _stop) = start(stack).await;
        let stream = TcpStream::connect(addr).await.unwrap();
        let local = stream.local_addr().unwrap();
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..STREAMS {
            let mut send = send.clone();
            calls.spawn(async move {
                let resp = send.send_request(get()).await.unwrap();
                assert_eq!(resp.version(), http::Version::HTTP_2);
                body_text(resp).await
            });
        }
        // Bounded: were the streams served one at a time, the gate would
        // never open.
        let answers = tokio::time::timeout(Duration::from_secs(10), calls.join_all())
            .await
            .expect("the streams were not served concurrently");
        assert_eq!(answers, vec![local.to_string(); STREAMS]);
        assert_eq!(clones.load(Ordering::SeqCst), 2);
    }
}
