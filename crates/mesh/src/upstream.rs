//! The connector at the bottom of both stacks: sends one attempt to the
//! [`Target`] the balance stage chose, over pooled HTTP/1.1 or HTTP/2
//! (prior knowledge) connections, and relays protocol upgrades (WebSocket).
//!
//! Connections are pooled per destination: the pool-limits stage leaves the
//! destination's [`PoolHandle`] in the request, and its DestinationRule
//! `connectionPool` settings (`maxConnections`, `connectTimeout`,
//! `idleTimeout`, `maxRequestsPerConnection`) govern the connections made
//! for it ([`crate::h1pool`], [`crate::h2pool`]). A request without one (the
//! inbound stack) uses one unlimited pool with the [`UpstreamSettings`].
//!
//! The mTLS connector of the identity issue replaces the plain TCP
//! connector here; nothing above this stage knows how bytes travel.

use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::header::{
    CONNECTION, HOST, HeaderName, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use mesh_core::http::{Body, FailureKind, LocalFailure, MeshError, boxed};
use mesh_resilience::pool::{DestinationPool, PoolHandle, PoolLimits};
use mesh_route::layer::{BoxFuture, Target, request_authority, set_uri_authority};

use crate::h1pool::{self, H1Connections, H1Error, Lease};
use crate::h2pool::{H2Error, H2Pool, StreamGuard};

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

impl UpstreamSettings {
    /// Pool limits with these connection settings and no caps: the base
    /// that DestinationRules override field by field.
    pub fn pool_limits(&self) -> PoolLimits {
        PoolLimits {
            connect_timeout: self.connect_timeout,
            idle_timeout: Some(self.idle_timeout),
            ..PoolLimits::default()
        }
    }
}

/// One destination's connections, kept in its [`DestinationPool`].
#[derive(Default)]
struct Connections {
    http1: H1Connections,
    http2: H2Pool,
}

/// The connector service: `Request` (with a [`Target`] in its extensions)
/// to `Response`, never an error: failures become SPEC 2 replies.
#[derive(Clone)]
pub struct Upstream {
    /// Requests without a [`PoolHandle`] share this pool.
    default_pool: Arc<DestinationPool>,
}

impl Upstream {
    /// A connector whose requests without a destination pool use these
    /// settings.
    pub fn new(settings: &UpstreamSettings) -> Self {
        Upstream {
            default_pool: DestinationPool::new(settings.pool_limits()),
        }
    }

    async fn send(self, mut req: Request<Body>) -> Response<Body> {
        let Some(target) = req.extensions_mut().remove::<Target>() else {
            return MeshError::NoRoute.reply_to(req.headers());
        };
        let pool = req
            .extensions_mut()
            .remove::<PoolHandle>()
            .map_or_else(|| Arc::clone(&self.default_pool), |h| h.0);
        let Some(connections) = pool.connector_state(Connections::default) else {
            let error = MeshError::ConnectFailure(
                "the destination pool belongs to another connector".into(),
            );
            return error.reply_to(req.headers());
        };
        let grpc = mesh_core::http::is_grpc(req.headers());
        let authority = request_authority(&req).map(str::to_owned);
        let upgrade = wants_upgrade(&req).then(|| req.extensions_mut().remove::<OnUpgrade>());
        let http2 = target.http2.unwrap_or(req.version() == Version::HTTP_2);
        prepare_request(&mut req, authority.as_deref(), &target, upgrade.is_some());
        let mut refused = false;
        let sent = if http2 {
            // HTTP/2 keeps the caller's authority in `:authority` and dials
            // the endpoint itself.
            *req.version_mut() = Version::HTTP_2;
            set_uri_authority(
                req.uri_mut(),
                Some(authority.as_deref().unwrap_or(&target.authority)),
            );
            req.headers_mut().remove(HOST);
            connections
                .http2
                .send(&pool, &target.authority, req)
                .await
                .map(|(resp, stream)| (resp, Some(ConnectionHold::Stream { _stream: stream })))
                .map_err(|e| match e {
                    H2Error::Connect(..) => MeshError::ConnectFailure(e.to_string()),
                    H2Error::Stream(e) => {
                        refused = is_refused_stream(&e);
                        MeshError::UpstreamReset(error_chain(&e))
                    }
                })
        } else {
            *req.version_mut() = Version::HTTP_11;
            if !req.headers().contains_key(HOST)
                && let Ok(host) = HeaderValue::from_str(&target.authority)
            {
                req.headers_mut().insert(HOST, host);
            }
            // HTTP/1.1 to an origin server: origin-form request target.
            set_uri_authority(req.uri_mut(), None);
            h1pool::send(&connections.http1, &pool, &target.authority, req)
                .await
                .map(|(resp, lease)| (resp, Some(ConnectionHold::Lease(lease))))
                .map_err(|e| match e {
                    H1Error::Connect(..) => MeshError::ConnectFailure(e.to_string()),
                    H1Error::Send(e) => MeshError::UpstreamReset(error_chain(&e)),
                })
        };
        match sent {
            Ok((mut resp, mut connection)) => {
                if let Some(Some(downstream)) = upgrade
                    && resp.status() == StatusCode::SWITCHING_PROTOCOLS
                {
                    // The connection leaves the pool for the tunnel (its
                    // socket keeps its place in the connection count).
                    connection = None;
                    let upstream = hyper::upgrade::on(&mut resp);
                    tokio::spawn(relay_upgrade(downstream, upstream));
                } else {
                    strip_hop_by_hop(resp.headers_mut(), false);
                }
                // The request counts as in flight on its endpoint until the
                // response body is done, so LEAST_REQUEST sees long streams;
                // its connection goes back to the pool then too.
                let guard = target.guard;
                resp.map(move |body| {
                    boxed(Guarded {
                        body,
                        _guard: guard,
                        connection,
                    })
                })
            }
            Err(error) => {
                let mut reply = if grpc {
                    error.to_grpc_response()
                } else {
                    error.to_response()
                };
                if refused {
                    // The upstream did not process the stream: `retryOn:
                    // refused-stream` retries it (the reply is 503 UC).
                    reply
                        .extensions_mut()
                        .insert(LocalFailure(FailureKind::RefusedStream));
                }
                reply
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

/// What a response holds of its connection until its body ends.
enum ConnectionHold {
    /// An HTTP/1.1 connection, back to the pool after a clean end.
    Lease(Lease),
    /// An HTTP/2 stream, counted against its connection's idleness.
    Stream { _stream: StreamGuard },
}

/// A response body that holds the endpoint's in-flight guard and its
/// connection until the body ends or is dropped.
struct Guarded<B: http_body::Body> {
    body: B,
    _guard: std::sync::Arc<mesh_route::balance::InFlight>,
    connection: Option<ConnectionHold>,
}

impl<B: http_body::Body> Guarded<B> {
    /// The body is over; `clean` when it was read to its end.
    fn finish(&mut self, clean: bool) {
        match self.connection.take() {
            Some(ConnectionHold::Lease(lease)) => lease.release(clean),
            // Dropping a stream guard marks the HTTP/2 stream done.
            Some(ConnectionHold::Stream { .. }) | None => {}
        }
    }
}

impl<B: http_body::Body> Drop for Guarded<B> {
    fn drop(&mut self) {
        let clean = self.body.is_end_stream();
        self.finish(clean);
    }
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
        let frame = ready!(std::pin::Pin::new(&mut self.body).poll_frame(cx));
        match &frame {
            None => self.finish(true),
            Some(Ok(_)) if self.body.is_end_stream() => self.finish(true),
            Some(Err(_)) => self.finish(false),
            Some(Ok(_)) => {}
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
    // Names listed in `Connection` are hop-by-hop too. Most requests carry
    // no `Connection` header (HTTP/2 never does): no scan, no allocation.
    if headers.contains_key(CONNECTION) {
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
    }
    let te_trailers = headers
        .get(TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    // Constant names: a `&str` key would be parsed and hashed as a new
    // name on every call.
    static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
    static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
    for name in [
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &PROXY_AUTHENTICATE,
        &PROXY_AUTHORIZATION,
        &TRAILER,
        &TRANSFER_ENCODING,
        &TE,
    ] {
        headers.remove(name);
    }
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

/// Whether an HTTP/2 stream failed with `REFUSED_STREAM`.
fn is_refused_stream(e: &hyper::Error) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<h2::Error>())
        .and_then(h2::Error::reason)
        == Some(h2::Reason::REFUSED_STREAM)
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
