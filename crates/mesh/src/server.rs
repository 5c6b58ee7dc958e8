//! Listeners: accept connections, serve HTTP/1.1 and HTTP/2 (prior
//! knowledge, detected per connection) with upgrades, and drain: stop
//! accepting, let in-flight requests finish (HTTP/1 `Connection: close`,
//! HTTP/2 GOAWAY), give up at a deadline.

use std::convert::Infallible;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use mesh_core::http::{Body, Peer, boxed};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::util::BoxCloneSyncService;

/// A stack as listeners serve it.
pub type HttpService = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// How a served listener ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainOutcome {
    /// Whether every connection finished before the deadline.
    pub clean: bool,
}

/// Serves `service` on `listener` until `shutdown` turns true, then drains
/// for at most `deadline`.
pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    service: HttpService,
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
                let svc = FromConnection { inner: service.clone(), peer: Peer(peer) };
                let conn = builder.serve_connection_with_upgrades(
                    TokioIo::new(stream),
                    TowerToHyperService::new(svc),
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

/// Adapts a connection's requests to the stack: boxes the body and records
/// the peer.
#[derive(Clone)]
struct FromConnection {
    inner: HttpService,
    peer: Peer,
}

impl tower::Service<Request<Incoming>> for FromConnection {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = <HttpService as tower::Service<Request<Body>>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let mut req: Request<Body> = req.map(boxed);
        req.extensions_mut().insert(self.peer);
        self.inner.call(req)
    }
}
