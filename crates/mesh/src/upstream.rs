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
//! Every proxied request passes here, so the usual one costs two
//! allocations and no more: the future (hyper's send cannot be held
//! inline, see [`Upstream`]'s `call`; the request goes out on an idle
//! connection from `call` itself, so only a small named future waiting for
//! the response head is boxed) and the response body, which also holds
//! the request's pool permit, its endpoint's in-flight guard and its
//! connection lease. Headers are looked at in one pass over their names.
//!
//! The mTLS connector of the identity issue replaces the plain TCP
//! connector here; nothing above this stage knows how bytes travel.

use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::header::{
    CONNECTION, CONTENT_TYPE, HOST, HeaderName, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE,
    TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use http::uri::{Authority, Parts as UriParts, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use mesh_core::http::{Body, FailureKind, LocalFailure, MeshError, boxed};
use mesh_resilience::pool::{DestinationPool, PoolHandle, PoolLimits, RequestPermit};
use mesh_route::layer::{BoxFuture, Target, set_uri_authority};

use crate::h1pool::{self, H1Connections, H1Error, Head, Lease, Pending, Settled, Start};
use crate::h2pool::{H2Error, H2Pool, H2Start, StreamGuard};

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
    /// The `:authority` last sent to this destination over HTTP/2, parsed:
    /// requests to one destination name it the same way, and parsing it
    /// from the `Host` value copies it every time.
    http2_authority: ArcSwapOption<Authority>,
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

    /// Everything about a request that needs no waiting: where it goes,
    /// its pool and permit, its headers and target for the protocol; or the
    /// reply when it cannot go.
    fn prepare(&self, mut req: Request<Body>) -> Prepared {
        let Some(target) = req.extensions_mut().remove::<Target>() else {
            return Prepared::Reply(MeshError::NoRoute.reply_to(req.headers()));
        };
        // The pool-limits stage hands the request's permit over with the
        // pool (this connector declares below that it holds permits): it
        // rides in the response body this stage boxes anyway, instead of a
        // second boxed body around it. Dropped with the request when the
        // attempt fails before a response.
        let (pool, permit) = match req.extensions_mut().remove::<PoolHandle>() {
            Some(handle) => handle.into_parts(),
            None => (Arc::clone(&self.default_pool), None),
        };
        let Some(connections) = pool.connector_state(|| {
            pool.connector_holds_permits();
            Connections::default()
        }) else {
            let error = MeshError::ConnectFailure(
                "the destination pool belongs to another connector".into(),
            );
            return Prepared::Reply(error.reply_to(req.headers()));
        };
        // One pass over the header names answers every question below.
        let seen = scan(req.headers());
        let grpc = seen & names::CONTENT_TYPE != 0 && mesh_core::http::is_grpc(req.headers());
        let wants_upgrade = req.version() == Version::HTTP_11 && seen & names::UPGRADE != 0;
        let upgrade = wants_upgrade.then(|| req.extensions_mut().remove::<OnUpgrade>());
        let http2 = target.http2.unwrap_or(req.version() == Version::HTTP_2);
        strip_seen(req.headers_mut(), seen, upgrade.is_some());
        if http2 {
            // HTTP/2 keeps the caller's authority in `:authority` and dials
            // the endpoint itself.
            *req.version_mut() = Version::HTTP_2;
            http2_target(&mut req, &target.authority, &connections.http2_authority);
        } else {
            *req.version_mut() = Version::HTTP_11;
            http1_target(&mut req, &target.authority, seen & names::HOST != 0);
        }
        let attempt = Attempt {
            target,
            pool,
            permit,
            connections,
            grpc,
            upgrade,
            http2,
        };
        Prepared::Send(attempt, req)
    }
}

/// What [`Upstream::prepare`] made of a request.
// Taken apart at once by `call`; boxing either side would cost the
// allocation this split avoids.
#[allow(clippy::large_enum_variant)]
enum Prepared {
    /// Ready to send.
    Send(Attempt, Request<Body>),
    /// Answered at once.
    Reply(Response<Body>),
}

/// One request on its way out: what the connector keeps of it until the
/// response arrives.
struct Attempt {
    target: Target,
    pool: Arc<DestinationPool>,
    permit: Option<RequestPermit>,
    connections: Arc<Connections>,
    grpc: bool,
    upgrade: Option<Option<OnUpgrade>>,
    http2: bool,
}

impl Attempt {
    /// Sends over HTTP/1.1: at once on a ready idle connection (the usual
    /// case), else after a wait for a connection, boxed apart.
    fn send_http1(self, req: Request<Body>) -> UpstreamFuture {
        let start = h1pool::start(
            &self.connections.http1,
            &self.pool,
            &self.target.authority,
            req,
        );
        let state = match start {
            Start::Sent(lease, head) => SendHttp1::Head {
                head,
                lease: Some(lease),
                attempt: Some(self),
            },
            Start::Wait(pending) => SendHttp1::Waiting {
                wait: self.wait_http1(pending),
                attempt: Some(self),
            },
        };
        UpstreamFuture::sending(state)
    }

    /// The wait of an HTTP/1.1 request for a connection (idle ones not
    /// ready yet, a dial, `maxConnections`), and its send.
    fn wait_http1(
        &self,
        pending: Pending,
    ) -> BoxFuture<Result<(Response<Incoming>, Lease), H1Error>> {
        let connections = Arc::clone(&self.connections);
        let pool = Arc::clone(&self.pool);
        let endpoint = Arc::clone(&self.target.authority);
        Box::pin(async move {
            h1pool::send_pending(&connections.http1, &pool, &endpoint, pending).await
        })
    }

    /// The caller's response to an HTTP/1.1 exchange.
    fn respond_http1(self, sent: Result<(Response<Incoming>, Lease), H1Error>) -> Response<Body> {
        let sent = sent
            .map(|(resp, lease)| (resp, Some(ConnectionHold::Lease(lease))))
            .map_err(|e| match e {
                H1Error::Connect(..) => (MeshError::ConnectFailure(e.to_string()), false),
                H1Error::Send(e) => (MeshError::UpstreamReset(error_chain(&e)), false),
            });
        self.respond(sent)
    }

    /// Sends over HTTP/2: at once on the endpoint's connection (the usual
    /// case), else after a dial, boxed apart.
    fn send_http2(self, req: Request<Body>) -> UpstreamFuture {
        let start = self
            .connections
            .http2
            .start(&self.pool, &self.target.authority, req);
        match start {
            H2Start::Sent {
                head,
                sender,
                stream,
            } => UpstreamFuture::sending(SendHttp2 {
                head,
                _sender: sender,
                stream: Some(stream),
                attempt: Some(self),
            }),
            H2Start::Failed(e) => UpstreamFuture::reply(self.respond_http2(Err(e))),
            H2Start::Dial(req) => {
                let connections = Arc::clone(&self.connections);
                let pool = Arc::clone(&self.pool);
                let endpoint = Arc::clone(&self.target.authority);
                UpstreamFuture::sending(async move {
                    let sent = connections.http2.send(&pool, &endpoint, req).await;
                    self.respond_http2(sent)
                })
            }
        }
    }

    /// The caller's response to an HTTP/2 exchange.
    fn respond_http2(
        self,
        sent: Result<(Response<Incoming>, StreamGuard), H2Error>,
    ) -> Response<Body> {
        let sent = sent
            .map(|(resp, stream)| (resp, Some(ConnectionHold::Stream { _stream: stream })))
            .map_err(|e| match e {
                H2Error::Connect(..) => (MeshError::ConnectFailure(e.to_string()), false),
                H2Error::Stream(e) => {
                    let refused = is_refused_stream(&e);
                    (MeshError::UpstreamReset(error_chain(&e)), refused)
                }
            });
        self.respond(sent)
    }

    /// The caller's response: the upstream's, holding the request's
    /// endpoint guard, connection and permit in its body, or the reply to
    /// a failure (`refused`: the upstream did not process the stream).
    fn respond(
        self,
        sent: Result<(Response<Incoming>, Option<ConnectionHold>), (MeshError, bool)>,
    ) -> Response<Body> {
        match sent {
            Ok((mut resp, mut connection)) => {
                if let Some(Some(downstream)) = self.upgrade
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
                let guard = self.target.guard;
                let permit = self.permit;
                resp.map(move |body| {
                    boxed(Guarded {
                        body,
                        _guard: guard,
                        connection,
                        permit,
                    })
                })
            }
            Err((error, refused)) => {
                let mut reply = if self.grpc {
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
    type Future = UpstreamFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    /// Everything up to the send happens here; what waits (the pooled send
    /// and the response head) is boxed, once per request. It cannot be
    /// held inline: it awaits hyper's `SendRequest::try_send_request`,
    /// whose future type cannot be named on stable Rust (`impl Trait` in
    /// associated types is unstable). The box is kept small (one protocol,
    /// dials and waits boxed apart where they happen) so that it is a
    /// cheap small allocation rather than a copy of every path's state.
    fn call(&mut self, req: Request<Body>) -> Self::Future {
        match self.prepare(req) {
            Prepared::Send(attempt, req) if attempt.http2 => attempt.send_http2(req),
            Prepared::Send(attempt, req) => attempt.send_http1(req),
            Prepared::Reply(reply) => UpstreamFuture::reply(reply),
        }
    }
}

/// The connector's future: the boxed send, or a reply made at once.
pub struct UpstreamFuture {
    state: Sending,
}

enum Sending {
    Out(BoxFuture<Response<Body>>),
    Reply(Option<Response<Body>>),
}

impl UpstreamFuture {
    fn sending(send: impl Future<Output = Response<Body>> + Send + 'static) -> Self {
        UpstreamFuture {
            state: Sending::Out(Box::pin(send)),
        }
    }

    fn reply(reply: Response<Body>) -> Self {
        UpstreamFuture {
            state: Sending::Reply(Some(reply)),
        }
    }
}

impl Future for UpstreamFuture {
    type Output = Result<Response<Body>, std::convert::Infallible>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            Sending::Out(send) => send.as_mut().poll(cx).map(Ok),
            Sending::Reply(reply) => match reply.take() {
                Some(reply) => Poll::Ready(Ok(reply)),
                None => Poll::Pending,
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// An HTTP/1.1 request on its way: its response head from the
    /// connection it went to at once, or the boxed wait for a connection.
    /// A hand-written future, not an `async` one, so that the connector's
    /// box holds exactly these fields (an `async` block keeps its own
    /// copy of the request beside the one inside hyper's send, past the
    /// small-allocation size).
    #[project = SendHttp1Proj]
    enum SendHttp1<F> {
        Head {
            #[pin]
            head: F,
            lease: Option<Lease>,
            attempt: Option<Attempt>,
        },
        Waiting {
            wait: BoxFuture<Result<(Response<Incoming>, Lease), H1Error>>,
            attempt: Option<Attempt>,
        },
    }
}

impl<F: Future<Output = Head>> Future for SendHttp1<F> {
    type Output = Response<Body>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response<Body>> {
        loop {
            match self.as_mut().project() {
                SendHttp1Proj::Head {
                    head,
                    lease,
                    attempt,
                } => {
                    let head = ready!(head.poll(cx));
                    // Both are taken only here, on the way out of this
                    // state: never missing.
                    let (Some(lease), Some(attempt)) = (lease.take(), attempt.take()) else {
                        return Poll::Pending;
                    };
                    match h1pool::settle(lease, head) {
                        Settled::Done(sent) => return Poll::Ready(attempt.respond_http1(sent)),
                        // A reused connection closed before it took the
                        // request: it waits for another one.
                        Settled::Again(pending) => {
                            let wait = attempt.wait_http1(pending);
                            self.set(SendHttp1::Waiting {
                                wait,
                                attempt: Some(attempt),
                            });
                        }
                    }
                }
                SendHttp1Proj::Waiting { wait, attempt } => {
                    let sent = ready!(wait.as_mut().poll(cx));
                    let Some(attempt) = attempt.take() else {
                        return Poll::Pending;
                    };
                    return Poll::Ready(attempt.respond_http1(sent));
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// An HTTP/2 request on its way: its response head on the stream it
    /// opened (a hand-written future, as [`SendHttp1`], to keep the
    /// connector's box small).
    struct SendHttp2<F> {
        #[pin]
        head: F,
        // Keeps the connection's request channel open while the
        // stream is out, as the pool's own send does.
        _sender: hyper::client::conn::http2::SendRequest<Body>,
        stream: Option<StreamGuard>,
        attempt: Option<Attempt>,
    }
}

impl<F: Future<Output = hyper::Result<Response<Incoming>>>> Future for SendHttp2<F> {
    type Output = Response<Body>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response<Body>> {
        let this = self.project();
        let head = ready!(this.head.poll(cx));
        // Taken only here, on completion: never missing before.
        let (Some(stream), Some(attempt)) = (this.stream.take(), this.attempt.take()) else {
            return Poll::Pending;
        };
        let sent = head.map(|resp| (resp, stream)).map_err(H2Error::Stream);
        Poll::Ready(attempt.respond_http2(sent))
    }
}

/// What a response holds of its connection until its body ends.
enum ConnectionHold {
    /// An HTTP/1.1 connection, back to the pool after a clean end.
    Lease(Lease),
    /// An HTTP/2 stream, counted against its connection's idleness.
    Stream { _stream: StreamGuard },
}

/// A response body that holds the endpoint's in-flight guard, its
/// connection and its pool permit until the body ends or is dropped.
struct Guarded<B: http_body::Body> {
    body: B,
    _guard: mesh_route::balance::InFlight,
    connection: Option<ConnectionHold>,
    /// The request's place in its pool's counters (`maxConnections`,
    /// `http2MaxRequests`, ...), given back when the body ends.
    permit: Option<RequestPermit>,
}

impl<B: http_body::Body> Guarded<B> {
    /// The body is over; `clean` when it was read to its end.
    fn finish(&mut self, clean: bool) {
        match self.connection.take() {
            Some(ConnectionHold::Lease(lease)) => lease.release(clean),
            // Dropping a stream guard marks the HTTP/2 stream done.
            Some(ConnectionHold::Stream { .. }) | None => {}
        }
        // After the connection is back in the pool, so that a request
        // waiting for this slot finds it idle.
        self.permit = None;
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

/// The request target over HTTP/1.1 to an origin server: the caller's
/// host in `Host` (an absolute-form URI's authority when it has one, else
/// the `Host` it sent, else the endpoint's address), and the URI in origin
/// form. Nothing is parsed or copied for the usual origin-form request
/// with a `Host` header (`has_host`).
fn http1_target(req: &mut Request<Body>, endpoint: &str, has_host: bool) {
    if let Some(authority) = req.uri().authority().filter(|a| !a.as_str().is_empty()) {
        if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
            req.headers_mut().insert(HOST, host);
        }
    } else if !has_host && let Ok(host) = HeaderValue::from_str(endpoint) {
        req.headers_mut().insert(HOST, host);
    }
    if req.uri().scheme().is_some() || req.uri().authority().is_some() {
        set_uri_authority(req.uri_mut(), None);
    }
}

/// The request target over HTTP/2: `http` and the caller's authority in
/// `:authority` (the URI's own, already parsed, else the `Host` header,
/// else the endpoint's address), and no `Host` header. A `Host` value is
/// parsed once per destination while it stays the same (`last`).
fn http2_target(req: &mut Request<Body>, endpoint: &str, last: &ArcSwapOption<Authority>) {
    let authority = match req.uri().authority().filter(|a| !a.as_str().is_empty()) {
        Some(own) => Some(own.clone()),
        None => {
            let named = req
                .headers()
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| !h.is_empty())
                .unwrap_or(endpoint);
            match &*last.load() {
                Some(known) if known.as_str() == named => Some(Authority::clone(known)),
                _ => {
                    let parsed = Authority::try_from(named).ok();
                    if let Some(parsed) = &parsed {
                        last.store(Some(Arc::new(parsed.clone())));
                    }
                    parsed
                }
            }
        }
    };
    let uri = req.uri_mut();
    let mut parts = UriParts::from(std::mem::take(uri));
    match authority {
        Some(a) => {
            parts.scheme = Some(Scheme::HTTP);
            parts.authority = Some(a);
        }
        None => {
            parts.scheme = None;
            parts.authority = None;
        }
    }
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    *uri = Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"));
    req.headers_mut().remove(HOST);
}

/// `keep-alive` and `proxy-connection`: hop-by-hop names without a
/// constant in `http`.
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// One bit per header name the connector looks for: the hop-by-hop ones,
/// and `host` and `content-type`.
mod names {
    pub const CONNECTION: u16 = 1 << 0;
    pub const TE: u16 = 1 << 1;
    pub const UPGRADE: u16 = 1 << 2;
    pub const KEEP_ALIVE: u16 = 1 << 3;
    pub const PROXY_CONNECTION: u16 = 1 << 4;
    pub const PROXY_AUTHENTICATE: u16 = 1 << 5;
    pub const PROXY_AUTHORIZATION: u16 = 1 << 6;
    pub const TRAILER: u16 = 1 << 7;
    pub const TRANSFER_ENCODING: u16 = 1 << 8;
    pub const HOST: u16 = 1 << 9;
    pub const CONTENT_TYPE: u16 = 1 << 10;
}

/// The bit of a name, 0 for any other name. The length picks the (one or
/// two) candidates, so most names are not compared at all.
fn name_bit(name: &HeaderName) -> u16 {
    match name.as_str().len() {
        2 if *name == TE => names::TE,
        4 if *name == HOST => names::HOST,
        7 if *name == UPGRADE => names::UPGRADE,
        7 if *name == TRAILER => names::TRAILER,
        10 if *name == CONNECTION => names::CONNECTION,
        10 if *name == KEEP_ALIVE => names::KEEP_ALIVE,
        12 if *name == CONTENT_TYPE => names::CONTENT_TYPE,
        16 if *name == PROXY_CONNECTION => names::PROXY_CONNECTION,
        17 if *name == TRANSFER_ENCODING => names::TRANSFER_ENCODING,
        18 if *name == PROXY_AUTHENTICATE => names::PROXY_AUTHENTICATE,
        19 if *name == PROXY_AUTHORIZATION => names::PROXY_AUTHORIZATION,
        _ => 0,
    }
}

/// The [`names`] present in `headers`: one pass over the names (usually 3
/// to 10), comparisons only, no hashing.
fn scan(headers: &HeaderMap) -> u16 {
    headers.keys().fold(0, |seen, name| seen | name_bit(name))
}

/// The hop-by-hop [`names`].
const HOP_BY_HOP: u16 = !(names::HOST | names::CONTENT_TYPE);

/// Hop-by-hop headers (RFC 9110 7.6.1) are the sender's business with the
/// next hop only. `te: trailers` stays (gRPC needs it); on an upgrade the
/// `Connection: upgrade` and `Upgrade` pair is passed on.
///
/// One pass over the names present ([`scan`]) finds the hop-by-hop ones;
/// only those are removed. Removing by name hashes the name, so removing
/// each of the ten possible names in turn cost ~1,000 instructions per
/// message where the pass costs ~100.
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    strip_seen(headers, scan(headers), keep_upgrade);
}

/// [`strip_hop_by_hop`] with the names `seen` by a [`scan`] of `headers`.
fn strip_seen(headers: &mut HeaderMap, seen: u16, keep_upgrade: bool) {
    let found = seen & HOP_BY_HOP;
    if found == 0 && !keep_upgrade {
        return;
    }
    // Names listed in `Connection` are hop-by-hop too (removed first, so a
    // listed `te` takes `te: trailers` with it).
    if found & names::CONNECTION != 0 {
        let mut values = headers.get_all(CONNECTION).iter();
        let first = values.next().cloned();
        // Usually one value: collecting none allocates nothing.
        let rest: Vec<HeaderValue> = values.cloned().collect();
        for value in first.iter().chain(&rest) {
            remove_listed(headers, value, keep_upgrade);
        }
    }
    let te_trailers = found & names::TE != 0
        && headers
            .get_all(TE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    for (bit, name) in [
        (names::KEEP_ALIVE, &KEEP_ALIVE),
        (names::PROXY_CONNECTION, &PROXY_CONNECTION),
        (names::PROXY_AUTHENTICATE, &PROXY_AUTHENTICATE),
        (names::PROXY_AUTHORIZATION, &PROXY_AUTHORIZATION),
        (names::TRAILER, &TRAILER),
        (names::TRANSFER_ENCODING, &TRANSFER_ENCODING),
        (names::TE, &TE),
    ] {
        if found & bit != 0 {
            headers.remove(name);
        }
    }
    if te_trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
    if keep_upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        if found & names::CONNECTION != 0 {
            headers.remove(CONNECTION);
        }
        if found & names::UPGRADE != 0 {
            headers.remove(UPGRADE);
        }
    }
}

/// Removes the headers one `Connection` value lists (present ones only:
/// `Connection: keep-alive` usually names no header), keeping `Upgrade`
/// on an upgrade, and `Host`: it carries the caller's authority to the
/// next hop whatever the caller lists.
fn remove_listed(headers: &mut HeaderMap, value: &HeaderValue, keep_upgrade: bool) {
    let Ok(value) = value.to_str() else {
        return;
    };
    for token in value.split(',').map(str::trim) {
        if token.is_empty()
            || token.eq_ignore_ascii_case("host")
            || (keep_upgrade && token.eq_ignore_ascii_case("upgrade"))
        {
            continue;
        }
        // Header names are stored lower case; a token may not be.
        if headers
            .keys()
            .any(|name| name.as_str().eq_ignore_ascii_case(token))
        {
            headers.remove(token);
        }
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
    fn every_hop_by_hop_name_goes_in_one_pass() {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("host", "api"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic x"),
            ("proxy-authenticate", "Basic"),
            ("transfer-encoding", "chunked"),
            ("trailer", "x-sum"),
            ("upgrade", "h2c"),
            ("te", "gzip"),
            ("x-app", "kept"),
        ] {
            h.insert(name, HeaderValue::from_static(value));
        }
        strip_hop_by_hop(&mut h, false);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["host", "x-app"]);
    }

    #[test]
    fn connection_lists_are_read_in_any_case_and_over_several_values() {
        let mut h = HeaderMap::new();
        h.append(CONNECTION, HeaderValue::from_static("X-One, te"));
        h.append(CONNECTION, HeaderValue::from_static("x-two,, Host"));
        h.insert("x-one", HeaderValue::from_static("1"));
        h.insert("x-two", HeaderValue::from_static("2"));
        h.insert("x-three", HeaderValue::from_static("3"));
        h.insert(TE, HeaderValue::from_static("trailers"));
        h.insert(HOST, HeaderValue::from_static("api"));
        strip_hop_by_hop(&mut h, false);
        assert!(h.get("x-one").is_none());
        assert!(h.get("x-two").is_none());
        // A listed `te` takes `te: trailers` with it; the caller's host
        // stays whatever the list says.
        assert!(h.get(TE).is_none());
        assert_eq!(h[HOST], "api");
        assert_eq!(h["x-three"], "3");
        assert!(h.get(CONNECTION).is_none());
    }

    #[test]
    fn the_request_target_follows_the_protocol() {
        let mut req = Request::builder()
            .uri("http://api.example:8080/p?q=1")
            .header(HOST, "other")
            .body(mesh_core::http::empty())
            .unwrap();
        http1_target(&mut req, "10.0.0.1:80", true);
        assert_eq!(req.uri(), "/p?q=1");
        assert_eq!(req.headers()[HOST], "api.example:8080");
        // Origin form with a Host header: left as it is.
        http1_target(&mut req, "10.0.0.1:80", true);
        assert_eq!(req.uri(), "/p?q=1");
        assert_eq!(req.headers()[HOST], "api.example:8080");
        // No host at all: the endpoint's address.
        let mut bare = Request::new(mesh_core::http::empty());
        http1_target(&mut bare, "10.0.0.1:80", false);
        assert_eq!(bare.headers()[HOST], "10.0.0.1:80");
        // HTTP/2: `:authority` from Host, scheme http, no Host header.
        let last = ArcSwapOption::empty();
        http2_target(&mut req, "10.0.0.1:80", &last);
        assert_eq!(req.uri(), "http://api.example:8080/p?q=1");
        assert!(req.headers().get(HOST).is_none());
        http2_target(&mut bare, "10.0.0.1:80", &last);
        assert_eq!(bare.uri(), "http://10.0.0.1:80/");
        // A Host seen before is not parsed again; another one replaces it.
        for host in ["api:50051", "api:50051", "other:50051"] {
            let mut req = Request::builder()
                .uri("/svc/Method")
                .header(HOST, host)
                .body(mesh_core::http::empty())
                .unwrap();
            http2_target(&mut req, "10.0.0.1:80", &last);
            assert_eq!(req.uri().authority().unwrap().as_str(), host);
            assert_eq!(last.load().as_deref().unwrap().as_str(), host);
        }
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
