//! `CONNECT host:port` on the outbound HTTP listener: the door that makes
//! `HTTPS_PROXY=http://127.0.0.1:15001` work (DESIGN.md "Contracts").
//!
//! [`ConnectLayer`] sits in front of the outbound HTTP stack, before the
//! route stage: any other method passes through untouched. A `CONNECT`
//! becomes a tunnel routed like an `--outbound-tcp` connection to
//! `host:port` (see [`crate::tcp`]). When nothing about the route depends on
//! the tunnel's first bytes, the upstream connection is opened before the
//! answer, so a failure gets its SPEC 2 status (404 NR, 503 NC / UH / UF,
//! 502 for an unregistered host under `REGISTRY_ONLY`) and `200` means
//! connected. When the host has `tls` rules, the route needs the SNI the
//! client only sends through the tunnel: the answer is `200` at once and a
//! routing failure closes the tunnel with a log line.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Method, Request, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use mesh_core::http::{Body, MeshError, Peer, empty};
use mesh_route::layer::BoxFuture;

use super::{L4Target, TcpProxy};
use crate::dns::split_authority;

/// Layer that answers `CONNECT` with a routed tunnel.
#[derive(Clone, Debug)]
pub struct ConnectLayer {
    proxy: Arc<TcpProxy>,
}

impl ConnectLayer {
    /// Tunnels through `proxy`.
    pub fn new(proxy: Arc<TcpProxy>) -> Self {
        ConnectLayer { proxy }
    }
}

impl<S> tower::Layer<S> for ConnectLayer {
    type Service = Connect<S>;

    fn layer(&self, inner: S) -> Connect<S> {
        Connect {
            inner,
            proxy: Arc::clone(&self.proxy),
        }
    }
}

/// The `CONNECT` stage.
#[derive(Clone, Debug)]
pub struct Connect<S> {
    inner: S,
    proxy: Arc<TcpProxy>,
}

/// The `host:port` a CONNECT names (authority form; the port is required).
fn connect_target<B>(req: &Request<B>) -> Option<L4Target> {
    let authority = req.uri().authority()?;
    let (host, port) = split_authority(authority.as_str());
    Some(L4Target {
        host: host.to_owned(),
        port: port?,
    })
}

fn ok() -> Response<Body> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::OK;
    resp
}

impl<S> tower::Service<Request<Body>> for Connect<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        if req.method() != Method::CONNECT {
            let mut inner = self.inner.clone();
            std::mem::swap(&mut inner, &mut self.inner);
            return Box::pin(inner.call(req));
        }
        let Some(target) = connect_target(&req) else {
            let reply = MeshError::BadRequest("CONNECT needs host:port".into()).to_response();
            return Box::pin(async move { Ok(reply) });
        };
        let Some(upgrade) = req.extensions_mut().remove::<OnUpgrade>() else {
            let reply =
                MeshError::BadRequest("this connection cannot be tunnelled".into()).to_response();
            return Box::pin(async move { Ok(reply) });
        };
        let peer = req.extensions().get::<Peer>().map(|p| p.0);
        let proxy = Arc::clone(&self.proxy);
        Box::pin(async move {
            if proxy.wants_sni(&target) {
                // The route depends on the ClientHello, sent in the tunnel.
                tokio::spawn(async move {
                    match upgrade.await {
                        Ok(upgraded) => proxy.serve(TokioIo::new(upgraded), &target, peer).await,
                        Err(e) => tracing::debug!(%target, "CONNECT upgrade failed: {e}"),
                    }
                });
                return Ok(ok());
            }
            let guard = proxy.tracker().track();
            match proxy.open(&target, None, peer).await {
                Ok(opened) => {
                    tokio::spawn(async move {
                        let _guard = guard;
                        match upgrade.await {
                            Ok(upgraded) => {
                                proxy
                                    .relay(TokioIo::new(upgraded), opened, &[], &target)
                                    .await;
                            }
                            Err(e) => tracing::debug!(%target, "CONNECT upgrade failed: {e}"),
                        }
                    });
                    Ok(ok())
                }
                Err(e) => {
                    tracing::warn!(%target, peer = ?peer, "CONNECT refused: {e}");
                    Ok(e.to_response())
                }
            }
        })
    }
}
