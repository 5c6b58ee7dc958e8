//! HTTP/1.1 connections to endpoints, pooled per destination: the bottom of
//! the outbound stack for HTTP/1.1, below the pool-limits stage.
//!
//! DestinationRule `connectionPool` settings are about real sockets:
//! `maxConnections` caps the connections open to all endpoints of a
//! destination, `maxRequestsPerConnection` closes a connection after so many
//! requests, `connectTimeout` bounds the dial and `idleTimeout` closes
//! unused connections. A generic pool cannot keep such a cap: hyper-util's
//! races a fresh dial against waiting for an idle connection and parks the
//! loser in the pool, so a destination limited to one connection can end
//! up with two. This pool is small and strict instead:
//!
//! - Connections live in the destination's
//!   [`DestinationPool`] (its
//!   connector state), per endpoint, most recently used first.
//! - A checkout takes an idle connection, else dials only if the
//!   destination's connection count has room; at the cap it closes an idle
//!   connection to another endpoint, then waits for a connection to come
//!   back or close (the pool-limits stage above keeps no more HTTP/1.1
//!   requests in flight than `maxConnections`, so that wait is short).
//! - Each socket carries its [`ConnectionPermit`], so the count drops
//!   exactly when the socket closes (an upgraded connection keeps its
//!   place until the tunnel ends).
//! - A connection goes back to the pool when its response body ends
//!   cleanly, unless it has served `maxRequestsPerConnection` requests; a
//!   timer on each connection's task closes it after `idleTimeout` unused.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::CONNECTION;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use mesh_core::http::Body;
use mesh_resilience::pool::{ConnectionPermit, DestinationPool, PoolLimits};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Why an HTTP/1.1 exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    /// No connection could be had: dial failed or timed out (503 UF).
    #[error("connect to {0}: {1}")]
    Connect(String, String),
    /// The connection failed after the request was handed to it (503 UC).
    #[error(transparent)]
    Send(#[from] hyper::Error),
}

/// A socket that holds its place in the destination's connection count.
pub(crate) struct CountedIo {
    io: TcpStream,
    _permit: ConnectionPermit,
}

impl CountedIo {
    pub(crate) fn new(io: TcpStream, permit: ConnectionPermit) -> Self {
        CountedIo {
            io,
            _permit: permit,
        }
    }
}

impl AsyncRead for CountedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Dials `endpoint` within `timeout`, counted under `permit`.
pub(crate) async fn dial(
    endpoint: &str,
    timeout: Duration,
    permit: ConnectionPermit,
) -> Result<TokioIo<CountedIo>, String> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(endpoint))
        .await
        .map_err(|_| format!("connect timeout after {timeout:?}"))?
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    Ok(TokioIo::new(CountedIo::new(stream, permit)))
}

/// Use and idleness of one connection, shared with its driver task.
struct ConnState {
    served: AtomicU32,
    idle: AtomicBool,
    born: Instant,
    /// When it last went idle, in milliseconds after `born`.
    idle_since_ms: AtomicU64,
}

impl ConnState {
    fn new() -> Self {
        ConnState {
            served: AtomicU32::new(0),
            idle: AtomicBool::new(false),
            born: Instant::now(),
            idle_since_ms: AtomicU64::new(0),
        }
    }

    fn mark_idle(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.idle_since_ms.store(ms, SeqCst);
        self.idle.store(true, SeqCst);
    }

    /// When an idle connection expires (`None` while in use).
    fn expires_at(&self, idle_timeout: Duration) -> Option<Instant> {
        self.idle.load(SeqCst).then(|| {
            self.born + Duration::from_millis(self.idle_since_ms.load(SeqCst)) + idle_timeout
        })
    }
}

struct Idle {
    sender: SendRequest<Body>,
    state: Arc<ConnState>,
}

impl Idle {
    /// Lends this kept-alive connection (ready for a request) out again.
    fn reuse(self, list: Arc<IdleList>, pool: &Arc<DestinationPool>, limits: &PoolLimits) -> Lease {
        Lease::new(self.sender, self.state, list, pool, limits, true)
    }
}

/// Idle connections to one endpoint, most recently used last.
#[derive(Default)]
struct IdleList {
    conns: tokio::sync::Mutex<Vec<Idle>>,
}

/// One destination's HTTP/1.1 connections, by endpoint address. Kept as the
/// destination pool's connector state.
#[derive(Default)]
pub struct H1Connections {
    endpoints: crate::cow_map::CowMap<IdleList>,
}

impl H1Connections {
    fn list(&self, endpoint: &Arc<str>) -> Arc<IdleList> {
        crate::cow_map::get_or_default(&self.endpoints, endpoint)
    }

    /// Closes one idle connection to an endpoint other than `endpoint`, to
    /// make room under `maxConnections`.
    async fn evict_one_except(&self, endpoint: &Arc<str>) {
        let endpoints = self.endpoints.load_full();
        for (address, list) in endpoints.iter() {
            if address == endpoint {
                continue;
            }
            // The oldest idle connection goes first.
            let mut conns = list.conns.lock().await;
            if !conns.is_empty() {
                drop(conns.remove(0));
                return;
            }
        }
    }

    /// A connection to `endpoint` for one request: idle, else newly dialled
    /// if `pool`'s connection count allows, else the next one that frees up
    /// (all bounded by the connect timeout).
    pub async fn checkout(
        &self,
        pool: &Arc<DestinationPool>,
        endpoint: &Arc<str>,
    ) -> Result<Lease, H1Error> {
        match self.ready_idle(pool, endpoint) {
            Ok(lease) => Ok(lease),
            Err((list, first)) => self.wait_or_dial(pool, endpoint, list, first).await,
        }
    }

    /// The usual checkout, without waiting: an idle connection to
    /// `endpoint` that is ready for the next request. Otherwise the
    /// endpoint's idle list, and the idle connection found that is not
    /// ready yet, for [`wait_or_dial`](Self::wait_or_dial).
    fn ready_idle(
        &self,
        pool: &Arc<DestinationPool>,
        endpoint: &Arc<str>,
    ) -> Result<Lease, NotReady> {
        let list = self.list(endpoint);
        let limits = pool.limits();
        let now = Instant::now();
        loop {
            let Some(idle) = try_pop(&list) else {
                return Err((list, None));
            };
            if !usable(&idle, &limits, now) {
                continue;
            }
            idle.state.idle.store(false, SeqCst);
            if !idle.sender.is_ready() {
                return Err((list, Some(idle)));
            }
            return Ok(idle.reuse(list, pool, &limits));
        }
    }

    /// The rest of a checkout: waits for `first` (an idle connection not
    /// ready yet) or the next idle one to become ready, else dials if the
    /// connection count allows, else waits for a connection to come back
    /// or close.
    async fn wait_or_dial(
        &self,
        pool: &Arc<DestinationPool>,
        endpoint: &Arc<str>,
        list: Arc<IdleList>,
        mut first: Option<Idle>,
    ) -> Result<Lease, H1Error> {
        let limits = pool.limits();
        // The idle expiry is checked against a clock read again after
        // every wait.
        let mut now = Instant::now();
        let deadline = now + limits.connect_timeout;
        let fail = |why: String| H1Error::Connect(endpoint.to_string(), why);
        loop {
            loop {
                let mut idle = match first.take() {
                    Some(idle) => idle,
                    None => match pop(&list).await {
                        Some(idle) => idle,
                        None => break,
                    },
                };
                if !usable(&idle, &limits, now) {
                    continue;
                }
                idle.state.idle.store(false, SeqCst);
                // The previous exchange has ended; the connection is ready
                // once hyper has seen that end, or it has closed.
                match tokio::time::timeout_at(deadline, idle.sender.ready()).await {
                    Ok(Ok(())) => return Ok(idle.reuse(list, pool, &limits)),
                    Ok(Err(_)) => {
                        now = Instant::now();
                        continue;
                    }
                    Err(_) => return Err(fail("no connection became ready in time".into())),
                }
            }
            let changed = pool.connections_changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(permit) = pool.try_open_connection() {
                let remaining = deadline.saturating_duration_since(Instant::now());
                let io = dial(endpoint, remaining, permit).await.map_err(fail)?;
                let (sender, state) = handshake(io, &limits).await.map_err(fail)?;
                return Ok(Lease::new(sender, state, list, pool, &limits, false));
            }
            // At maxConnections. An idle connection to another endpoint
            // gives its place up (its close wakes us), or one of ours comes
            // back or closes soon.
            self.evict_one_except(endpoint).await;
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(fail(format!(
                    "no connection within {:?}: {} open (maxConnections)",
                    limits.connect_timeout, limits.max_connections
                )));
            }
            now = Instant::now();
        }
    }
}

/// No ready idle connection: the endpoint's idle list, and the idle
/// connection found that is not ready yet, if any.
type NotReady = (Arc<IdleList>, Option<Idle>);

/// Whether an idle connection can carry a request: open, and not idle past
/// `idleTimeout` at `now`.
fn usable(idle: &Idle, limits: &PoolLimits, now: Instant) -> bool {
    if idle.sender.is_closed() {
        return false;
    }
    !limits.idle_timeout.is_some_and(|idle_timeout| {
        idle.state
            .expires_at(idle_timeout)
            .is_some_and(|at| at <= now)
    })
}

/// The most recently used idle connection, if the list is not locked (it
/// is locked only for a push or a pop).
fn try_pop(list: &IdleList) -> Option<Idle> {
    list.conns.try_lock().ok()?.pop()
}

async fn pop(list: &IdleList) -> Option<Idle> {
    // Uncontended (the usual case): no lock future.
    if let Ok(mut conns) = list.conns.try_lock() {
        return conns.pop();
    }
    list.conns.lock().await.pop()
}

async fn handshake(
    io: TokioIo<CountedIo>,
    limits: &PoolLimits,
) -> Result<(SendRequest<Body>, Arc<ConnState>), String> {
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    let state = Arc::new(ConnState::new());
    let watched = Arc::clone(&state);
    let idle_timeout = limits.idle_timeout;
    tokio::spawn(async move {
        let connection = connection.with_upgrades();
        tokio::pin!(connection);
        let Some(idle_timeout) = idle_timeout else {
            if let Err(e) = connection.await {
                tracing::debug!("http/1.1 upstream connection ended: {e}");
            }
            return;
        };
        loop {
            let wake = watched
                .expires_at(idle_timeout)
                .unwrap_or_else(|| Instant::now() + idle_timeout);
            tokio::select! {
                // The connection first, and no random draw on every wake
                // (this task wakes for every request on the connection).
                biased;
                ended = &mut connection => {
                    if let Err(e) = ended {
                        tracing::debug!("http/1.1 upstream connection ended: {e}");
                    }
                    return;
                }
                () = tokio::time::sleep_until(wake) => {
                    if watched.expires_at(idle_timeout).is_some_and(|at| at <= Instant::now()) {
                        // Unused for idleTimeout: dropping the connection
                        // closes the socket and frees its place.
                        return;
                    }
                }
            }
        }
    });
    Ok((sender, state))
}

/// One request's use of a connection; goes back to the idle list through
/// [`Lease::release`] when the response ends.
pub struct Lease {
    sender: SendRequest<Body>,
    state: Arc<ConnState>,
    list: Arc<IdleList>,
    pool: Arc<DestinationPool>,
    max_requests: u32,
    reused: bool,
}

impl Lease {
    fn new(
        sender: SendRequest<Body>,
        state: Arc<ConnState>,
        list: Arc<IdleList>,
        pool: &Arc<DestinationPool>,
        limits: &PoolLimits,
        reused: bool,
    ) -> Self {
        Lease {
            sender,
            state,
            list,
            pool: Arc::clone(pool),
            max_requests: limits.max_requests_per_connection,
            reused,
        }
    }

    /// Hands `req` to the leased connection, counting it as one of the
    /// connection's requests (its last one carries `Connection: close`
    /// under `maxRequestsPerConnection`). The future resolves to the
    /// response head; it borrows nothing.
    pub fn dispatch(
        &mut self,
        mut req: Request<Body>,
    ) -> impl Future<Output = Head> + Send + use<> {
        self.state.served.fetch_add(1, SeqCst);
        if self.is_last() && !req.headers().contains_key(CONNECTION) {
            // Tell the server too, so neither side waits for another.
            req.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        self.sender.try_send_request(req)
    }

    /// Whether this request is the connection's last one.
    fn is_last(&self) -> bool {
        self.max_requests > 0 && self.state.served.load(SeqCst) >= self.max_requests
    }

    /// The response ended; `clean` when its body was read to the end, so
    /// the connection can carry another request.
    pub fn release(self, clean: bool) {
        if !clean || self.is_last() || self.sender.is_closed() {
            // Dropping the sender lets hyper close the connection.
            return;
        }
        let Lease {
            sender,
            state,
            list,
            pool,
            ..
        } = self;
        state.mark_idle();
        let idle = Idle { sender, state };
        let contended = match list.conns.try_lock() {
            Ok(mut conns) => {
                conns.push(idle);
                None
            }
            Err(_) => Some(idle),
        };
        match contended {
            None => pool.connection_returned(),
            // Contended (rare): finish the return off this path.
            Some(idle) => {
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        list.conns.lock().await.push(idle);
                        pool.connection_returned();
                    });
                }
            }
        }
    }
}

/// Sends `req` (origin-form URI, Host set) to `endpoint` over a pooled
/// connection of `pool`'s destination. A request that a reused connection
/// closed under before it was sent goes again on another connection.
///
/// The same as [`start`], then awaiting its response head and, if need
/// be, [`send_pending`]; the connector uses those parts to keep the
/// future it boxes per request small.
pub async fn send(
    connections: &H1Connections,
    pool: &Arc<DestinationPool>,
    endpoint: &Arc<str>,
    req: Request<Body>,
) -> Result<(Response<Incoming>, Lease), H1Error> {
    let pending = match start(connections, pool, endpoint, req) {
        Start::Sent(lease, head) => match settle(lease, head.await) {
            Settled::Done(result) => return result,
            Settled::Again(pending) => pending,
        },
        Start::Wait(pending) => pending,
    };
    send_pending(connections, pool, endpoint, pending).await
}

/// The result of a response head: what became of a request handed to a
/// leased connection (see [`Lease::dispatch`]).
pub type Head = Result<Response<Incoming>, TrySendError<Request<Body>>>;

/// How a request's first try started.
// Returned once per request and taken apart at once; boxing the pending
// request would cost the allocation the split exists to avoid.
#[allow(clippy::large_enum_variant)]
pub enum Start<F> {
    /// It went at once to a ready idle connection: its response head
    /// comes from `F`, to [`settle`] with the lease.
    Sent(Lease, F),
    /// No idle connection was ready: [`send_pending`] waits for one or
    /// dials.
    Wait(Pending),
}

/// A request waiting for a connection (for [`send_pending`]).
pub struct Pending {
    req: Request<Body>,
    list: Arc<IdleList>,
    first: Option<Idle>,
}

/// What a response head settled.
pub enum Settled {
    /// The response head and the connection's lease, or the failure.
    Done(Result<(Response<Incoming>, Lease), H1Error>),
    /// A reused connection closed before it took the request: the request
    /// goes again on another connection ([`send_pending`]).
    Again(Pending),
}

/// Starts a request's first try without waiting: on a ready idle
/// connection to `endpoint` if there is one (the usual case: no timer, no
/// lock future, nothing boxed), else it is [`Pending`].
pub fn start(
    connections: &H1Connections,
    pool: &Arc<DestinationPool>,
    endpoint: &Arc<str>,
    req: Request<Body>,
) -> Start<impl Future<Output = Head> + Send + use<>> {
    match connections.ready_idle(pool, endpoint) {
        Ok(mut lease) => {
            let head = lease.dispatch(req);
            Start::Sent(lease, head)
        }
        Err((list, first)) => Start::Wait(Pending { req, list, first }),
    }
}

/// The response head of a dispatched request, with its lease.
pub fn settle(lease: Lease, head: Head) -> Settled {
    match head {
        Ok(resp) => Settled::Done(Ok((resp, lease))),
        Err(mut e) => match e.take_message() {
            Some(unsent) if lease.reused => {
                tracing::debug!("pooled connection closed before use: {}", e.error());
                Settled::Again(Pending {
                    req: unsent,
                    list: Arc::clone(&lease.list),
                    first: None,
                })
            }
            _ => Settled::Done(Err(H1Error::Send(e.into_error()))),
        },
    }
}

/// Sends a [`Pending`] request: waits for an idle connection to become
/// ready, or dials one if the connection count allows, or waits for one
/// to come back (bounded by the connect timeout); again on another
/// connection if a reused one closed before it took the request.
pub async fn send_pending(
    connections: &H1Connections,
    pool: &Arc<DestinationPool>,
    endpoint: &Arc<str>,
    mut pending: Pending,
) -> Result<(Response<Incoming>, Lease), H1Error> {
    loop {
        let Pending { req, list, first } = pending;
        let mut lease = connections
            .wait_or_dial(pool, endpoint, list, first)
            .await?;
        let head = lease.dispatch(req).await;
        match settle(lease, head) {
            Settled::Done(result) => return result,
            Settled::Again(again) => pending = again,
        }
    }
}
