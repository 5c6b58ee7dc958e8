//! The connector at the bottom of both stacks: sends one attempt to the
//! [`Target`] the balance stage chose, over pooled HTTP/1.1 or HTTP/2
//! (prior knowledge) connections, and relays protocol upgrades (WebSocket).
//!
//! The mTLS connector of the identity issue replaces the plain TCP
//! connector here; nothing above this stage knows how bytes travel.

use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{CONNECTION, HOST, HeaderName, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_core::http::{Body, MeshError, boxed};
use mesh_route::layer::{BoxFuture, Target, request_authority, set_uri_authority};

use crate::h2pool::{H2Error, H2Pool};

/// Connection settings of the upstream pools.
#[derive(Clone, Debug)]
pub struct UpstreamSettings {
    /// TCP connect timeout (DestinationRule `tcp.connectTimeout`, default 10 s).
    pub connect_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub idle_timeout: Duration,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings {
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
        }
    }
}

/// The connector service: `Request` (with a [`Target`] in its extensions)
/// to `Response`, never an error: failures become SPEC 2 replies.
#[derive(Clone)]
pub struct Upstream {
    http1: Client<HttpConnector, Body>,
    http2: H2Pool,
}

impl Upstream {
    /// Pools with these settings.
    pub fn new(settings: &UpstreamSettings) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(settings.connect_timeout));
        connector.enforce_http(true);
        let http1 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(settings.idle_timeout)
            .build(connector);
        let http2 = H2Pool::new(settings.connect_timeout);
        Upstream { http1, http2 }
    }

    async fn send(self, mut req: Request<Body>) -> Response<Body> {
        let Some(target) = req.extensions_mut().remove::<Target>() else {
            return MeshError::NoRoute.reply_to(req.headers());
        };
        let grpc = mesh_core::http::is_grpc(req.headers());
        let authority = request_authority(&req).map(str::to_owned);
        let upgrade = wants_upgrade(&req).then(|| req.extensions_mut().remove::<OnUpgrade>());
        let http2 = target.http2.unwrap_or(req.version() == Version::HTTP_2);
        prepare_request(&mut req, authority.as_deref(), &target, upgrade.is_some());
        let sent = if http2 {
            // HTTP/2 keeps the caller's authority in `:authority` and dials
            // the endpoint itself.
            *req.version_mut() = Version::HTTP_2;
            set_uri_authority(
                req.uri_mut(),
                Some(authority.as_deref().unwrap_or(&target.authority)),
            );
            req.headers_mut().remove(HOST);
            self.http2
                .send(&target.authority, req)
                .await
                .map_err(|e| match e {
                    H2Error::Connect(..) => MeshError::ConnectFailure(e.to_string()),
                    H2Error::Stream(e) => MeshError::UpstreamReset(error_chain(&e)),
                })
        } else {
            *req.version_mut() = Version::HTTP_11;
            self.http1.request(req).await.map_err(|e| {
                let detail = error_chain(&e);
                if e.is_connect() {
                    MeshError::ConnectFailure(detail)
                } else {
                    MeshError::UpstreamReset(detail)
                }
            })
        };
        match sent {
            Ok(mut resp) => {
                if let Some(Some(downstream)) = upgrade
                    && resp.status() == StatusCode::SWITCHING_PROTOCOLS
                {
                    let upstream = hyper::upgrade::on(&mut resp);
                    tokio::spawn(relay_upgrade(downstream, upstream));
                } else {
                    strip_hop_by_hop(resp.headers_mut(), false);
                }
                // The request counts as in flight on its endpoint until the
                // response body is done, so LEAST_REQUEST sees long streams.
                let guard = target.guard;
                resp.map(move |body| {
                    boxed(Guarded {
                        body,
                        _guard: guard,
                    })
                })
            }
            Err(error) => {
                if grpc {
                    error.to_grpc_response()
                } else {
                    error.to_response()
                }
            }
        }
    }
}

impl tower::Service<Request<Body>> for Upstream {
    type Response = Response<Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Result<Response<Body>, std::convert::Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.send(req).await) })
    }
}

/// A response body that holds the endpoint's in-flight guard until the body
/// ends or is dropped.
struct Guarded<B> {
    body: B,
    _guard: std::sync::Arc<mesh_route::balance::InFlight>,
}

impl<B> http_body::Body for Guarded<B>
where
    B: http_body::Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

fn wants_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11 && req.headers().contains_key(UPGRADE)
}

fn prepare_request(
    req: &mut Request<Body>,
    authority: Option<&str>,
    target: &Target,
    upgrade: bool,
) {
    strip_hop_by_hop(req.headers_mut(), upgrade);
    if let Some(a) = authority
        && let Ok(v) = HeaderValue::from_str(a)
    {
        req.headers_mut().insert(HOST, v);
    }
    // The pool dials the URI's authority. Over HTTP/1 the caller's host
    // travels in the Host header; over HTTP/2 `:authority` is the endpoint
    // address until the connector learns to dial per request (noted in the
    // data-plane issue's closing note).
    set_uri_authority(req.uri_mut(), Some(&target.authority));
}

/// Hop-by-hop headers (RFC 9110 7.6.1) are the sender's business with the
/// next hop only. `te: trailers` stays (gRPC needs it); on an upgrade the
/// `Connection: upgrade` and `Upgrade` pair is passed on.
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let listed: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(|name| !(keep_upgrade && name == UPGRADE))
        .collect();
    for name in listed {
        headers.remove(name);
    }
    let te_trailers = headers
        .get(TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    for name in [
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "trailer",
    ] {
        headers.remove(name);
    }
    headers.remove(TRANSFER_ENCODING);
    headers.remove(TE);
    if te_trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
    if keep_upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(CONNECTION);
        headers.remove(UPGRADE);
    }
}

async fn relay_upgrade(downstream: OnUpgrade, upstream: OnUpgrade) {
    let (down, up) = match tokio::try_join!(downstream, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!("upgrade failed: {e}");
            return;
        }
    };
    let mut down = TokioIo::new(down);
    let mut up = TokioIo::new(up);
    if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
        tracing::debug!("upgraded connection ended: {e}");
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed_but_grpc_trailers_survive() {
        let mut h = HeaderMap::new();
        h.insert(
            CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert(TE, HeaderValue::from_static("trailers"));
        h.insert("x-app", HeaderValue::from_static("kept"));
        strip_hop_by_hop(&mut h, false);
        assert!(h.get("keep-alive").is_none());
        assert!(h.get("x-private").is_none());
        assert!(h.get(CONNECTION).is_none());
        assert_eq!(h[TE], "trailers");
        assert_eq!(h["x-app"], "kept");
    }

    #[test]
    fn upgrades_keep_their_connection_headers() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h[UPGRADE], "websocket");
        assert_eq!(h[CONNECTION], "upgrade");
    }
}
