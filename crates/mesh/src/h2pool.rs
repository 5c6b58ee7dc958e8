//! HTTP/2 connections to endpoints, pooled per destination: one multiplexed
//! connection per endpoint at a time.
//!
//! The generic pool dials whatever authority a request's URI names, which
//! over HTTP/2 would also become the request's `:authority`. The mesh must
//! dial the endpoint the balancer chose yet keep the caller's authority
//! (`echo:50051`), as Envoy and Linkerd do, so HTTP/2 gets this small pool.
//! It lives in the destination's
//! [`DestinationPool`] (its connector
//! state), so the DestinationRule's connection settings apply per
//! destination: `connectTimeout` bounds the dial, `maxRequestsPerConnection`
//! retires a connection after so many streams (the next request dials a
//! fresh one while the old one finishes its streams), and `idleTimeout`
//! closes a connection that has carried no stream for that long. Every
//! socket is counted in the destination's connection count; the first
//! connection to an endpoint is opened even at `maxConnections` (as Envoy
//! does for a pool without any connection), since `http2MaxRequests`, not
//! the connection count, is what caps HTTP/2 load.
//!
//! Readers take a connection with one atomic load; a miss (first request, a
//! closed or retired connection) dials under a per-endpoint lock, so
//! concurrent first requests share one new connection.

use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::TokioExecutor;
use mesh_core::http::Body;
use mesh_resilience::pool::{DestinationPool, PoolLimits};
use tokio::time::Instant;

use crate::h1pool::dial;

/// Why an HTTP/2 request failed.
#[derive(Debug, thiserror::Error)]
pub enum H2Error {
    /// The endpoint could not be reached (503 UF).
    #[error("connect to {0}: {1}")]
    Connect(String, String),
    /// The connection or stream failed after it was established (503 UC).
    #[error(transparent)]
    Stream(#[from] hyper::Error),
}

/// Streams and idleness of one connection, shared with its driver task.
struct H2State {
    started: AtomicU32,
    active: AtomicU32,
    born: Instant,
    /// When the last stream ended, in milliseconds after `born`.
    idle_since_ms: AtomicU64,
    retired: AtomicBool,
}

impl H2State {
    fn expires_at(&self, idle_timeout: Duration) -> Option<Instant> {
        (self.active.load(SeqCst) == 0).then(|| {
            self.born + Duration::from_millis(self.idle_since_ms.load(SeqCst)) + idle_timeout
        })
    }
}

struct H2Conn {
    sender: SendRequest<Body>,
    state: Arc<H2State>,
}

/// Connections to one endpoint: the current one, and the lock a dial holds.
#[derive(Default)]
struct H2Endpoint {
    current: ArcSwapOption<H2Conn>,
    dialing: tokio::sync::Mutex<()>,
}

impl H2Endpoint {
    fn usable(&self) -> Option<Arc<H2Conn>> {
        self.current
            .load_full()
            .filter(|c| !c.sender.is_closed() && !c.state.retired.load(SeqCst))
    }

    /// Takes `conn` out of service (it finishes its streams, then closes).
    fn retire(&self, conn: &Arc<H2Conn>) {
        conn.state.retired.store(true, SeqCst);
        self.current.rcu(|current| match current {
            Some(c) if Arc::ptr_eq(c, conn) => None,
            other => other.clone(),
        });
    }
}

/// One stream's hold on its connection: the connection is not idle while a
/// response body is still being read.
pub struct StreamGuard(Arc<H2State>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let state = &self.0;
        let ms = u64::try_from(state.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        state.idle_since_ms.store(ms, SeqCst);
        let _ = state
            .active
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1));
    }
}

/// One destination's HTTP/2 connections, by endpoint address. Kept as the
/// destination pool's connector state.
#[derive(Default)]
pub struct H2Pool {
    endpoints: crate::cow_map::CowMap<H2Endpoint>,
}

impl H2Pool {
    fn endpoint(&self, endpoint: &Arc<str>) -> Arc<H2Endpoint> {
        crate::cow_map::get_or_default(&self.endpoints, endpoint)
    }

    /// Sends `req` (whose URI keeps the caller's authority) to `endpoint`
    /// over `pool`'s destination's connection to it. The guard keeps the
    /// stream counted until the response body is done.
    pub async fn send(
        &self,
        pool: &Arc<DestinationPool>,
        endpoint: &Arc<str>,
        req: Request<Body>,
    ) -> Result<(Response<Incoming>, StreamGuard), H2Error> {
        let entry = self.endpoint(endpoint);
        let limits = pool.limits();
        let max = limits.max_requests_per_connection;
        let conn = loop {
            let conn = match entry.usable() {
                Some(c) => c,
                None => connect(&entry, pool, endpoint, &limits).await?,
            };
            if count_stream(&entry, &conn, max) {
                break conn;
            }
        };
        let (mut sender, guard) = open_stream(&conn);
        drop(conn);
        sender.ready().await?;
        let resp = sender.send_request(req).await?;
        Ok((resp, guard))
    }

    /// Starts `req` on the endpoint's connection without waiting, when
    /// there is a usable one (the usual case); else the request is handed
    /// back for [`send`](Self::send), which dials. The same steps as
    /// `send`, so that the connector can box a small future of its own
    /// (HTTP/2's readiness never waits: a connection takes streams until
    /// it is closed).
    pub fn start(
        &self,
        pool: &Arc<DestinationPool>,
        endpoint: &Arc<str>,
        req: Request<Body>,
    ) -> H2Start<impl Future<Output = hyper::Result<Response<Incoming>>> + Send + use<>> {
        let entry = self.endpoint(endpoint);
        let Some(conn) = entry.usable() else {
            return H2Start::Dial(req);
        };
        let max = pool.limits().max_requests_per_connection;
        if !count_stream(&entry, &conn, max) {
            return H2Start::Dial(req);
        }
        let (mut sender, stream) = open_stream(&conn);
        drop(conn);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        if let Poll::Ready(Err(e)) = sender.poll_ready(&mut cx) {
            return H2Start::Failed(H2Error::Stream(e));
        }
        let head = sender.send_request(req);
        H2Start::Sent {
            head,
            sender,
            stream,
        }
    }
}

/// How [`H2Pool::start`] started a request.
pub enum H2Start<F> {
    /// The stream is open: its response head comes from `F`. Keep the
    /// sender (the connection's request channel) and the stream guard
    /// until then.
    Sent {
        /// The response head.
        head: F,
        /// The connection's sender the stream went through.
        sender: SendRequest<Body>,
        /// Counts the stream on its connection.
        stream: StreamGuard,
    },
    /// The connection closed under the request (503 UC).
    Failed(H2Error),
    /// No usable connection: [`H2Pool::send`] dials one.
    Dial(Request<Body>),
}

/// Counts a new stream on `conn`; `false` when the connection is past
/// `maxRequestsPerConnection` (a race): the request needs another one.
fn count_stream(entry: &H2Endpoint, conn: &Arc<H2Conn>, max: u32) -> bool {
    let n = conn.state.started.fetch_add(1, SeqCst) + 1;
    if max > 0 && n >= max {
        // Its last stream (or past it, under a race): the next request
        // dials a fresh connection.
        entry.retire(conn);
        return n <= max;
    }
    true
}

/// The stream's sender and guard on `conn`.
fn open_stream(conn: &H2Conn) -> (SendRequest<Body>, StreamGuard) {
    conn.state.active.fetch_add(1, SeqCst);
    (conn.sender.clone(), StreamGuard(Arc::clone(&conn.state)))
}

async fn connect(
    entry: &H2Endpoint,
    pool: &Arc<DestinationPool>,
    endpoint: &Arc<str>,
    limits: &PoolLimits,
) -> Result<Arc<H2Conn>, H2Error> {
    let fail = |e: String| H2Error::Connect(endpoint.to_string(), e);
    let _dialing = entry.dialing.lock().await;
    // Someone else may have dialled while this request waited for the lock.
    if let Some(conn) = entry.usable() {
        return Ok(conn);
    }
    let permit = pool
        .try_open_connection()
        .unwrap_or_else(|| pool.open_connection());
    let io = dial(endpoint, limits.connect_timeout, permit)
        .await
        .map_err(fail)?;
    let (sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let state = Arc::new(H2State {
        started: AtomicU32::new(0),
        active: AtomicU32::new(0),
        born: Instant::now(),
        idle_since_ms: AtomicU64::new(0),
        retired: AtomicBool::new(false),
    });
    let watched = Arc::clone(&state);
    let idle_timeout = limits.idle_timeout;
    let key = Arc::clone(endpoint);
    tokio::spawn(async move {
        tokio::pin!(connection);
        let Some(idle_timeout) = idle_timeout else {
            if let Err(e) = connection.await {
                tracing::debug!(endpoint = %key, "http/2 connection ended: {e}");
            }
            return;
        };
        loop {
            let wake = watched
                .expires_at(idle_timeout)
                .unwrap_or_else(|| Instant::now() + idle_timeout);
            tokio::select! {
                // The connection first, and no random draw on every wake.
                biased;
                ended = &mut connection => {
                    if let Err(e) = ended {
                        tracing::debug!(endpoint = %key, "http/2 connection ended: {e}");
                    }
                    return;
                }
                () = tokio::time::sleep_until(wake) => {
                    if watched.expires_at(idle_timeout).is_some_and(|at| at <= Instant::now()) {
                        // No stream for idleTimeout: dropping the connection
                        // closes the socket and frees its place.
                        return;
                    }
                }
            }
        }
    });
    let conn = Arc::new(H2Conn { sender, state });
    entry.current.store(Some(Arc::clone(&conn)));
    Ok(conn)
}
