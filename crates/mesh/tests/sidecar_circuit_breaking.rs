//! Circuit breaking from DestinationRule `connectionPool` (SPEC 5.3), on real
//! sockets: the sidecar (and the in-process client) in front of a backend
//! that counts what it sees (connections accepted, connections open at
//! once, requests in flight at once) and holds `/slow` requests until the
//! test releases them. Overflow is immediate 503 `UO` with
//! `x-envoy-overloaded: true`; the backend never sees more than the limits.

#![allow(clippy::unwrap_used)]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use mesh_route::random::SplitMix;
use support::*;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;

// ------------------------------------------------------- counting backend

#[derive(Default)]
struct Counts {
    accepted: AtomicU64,
    open: AtomicU64,
    peak_open: AtomicU64,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
    slow_arrived: AtomicU64,
}

/// A backend (HTTP/1.1 and h2c) that counts connections and concurrent
/// requests; `/slow` answers only after [`Counting::release`].
struct Counting {
    addr: SocketAddr,
    counts: Arc<Counts>,
    gate: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Counting {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Decrement<'a>(&'a AtomicU64);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn up(now: &AtomicU64, peak: &AtomicU64) {
    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
    peak.fetch_max(n, Ordering::SeqCst);
}

impl Counting {
    async fn start() -> Counting {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(Counts::default());
        let (gate, _) = watch::channel(false);
        let (shared, gate_tx) = (Arc::clone(&counts), gate.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let counts = Arc::clone(&shared);
                let gate = gate_tx.subscribe();
                counts.accepted.fetch_add(1, Ordering::SeqCst);
                up(&counts.open, &counts.peak_open);
                tokio::spawn(async move {
                    let _open = Decrement(&counts.open);
                    let svc = hyper::service::service_fn(|req: Request<Incoming>| {
                        let counts = Arc::clone(&counts);
                        let mut gate = gate.clone();
                        async move {
                            up(&counts.in_flight, &counts.peak_in_flight);
                            let _flight = Decrement(&counts.in_flight);
                            let retry = req.headers().contains_key("x-mesh-retry-attempt");
                            if req.uri().path() == "/fail-first" && !retry {
                                // First tries fail at once; retries are held.
                                let resp = Response::builder()
                                    .status(StatusCode::SERVICE_UNAVAILABLE)
                                    .header("x-backend", "counting")
                                    .body(Full::new(Bytes::from_static(b"first try")))
                                    .unwrap();
                                return Ok::<_, Infallible>(resp);
                            }
                            if req.uri().path() == "/slow" || req.uri().path() == "/fail-first" {
                                counts.slow_arrived.fetch_add(1, Ordering::SeqCst);
                                let _ = gate.wait_for(|open| *open).await;
                            }
                            let _ = req.into_body().collect().await;
                            let resp = Response::builder()
                                .header("x-backend", "counting")
                                .body(Full::new(Bytes::from_static(b"ok")))
                                .unwrap();
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Counting {
            addr,
            counts,
            gate,
            task,
        }
    }

    fn endpoint(&self) -> (u16, &'static str) {
        (self.addr.port(), "v1")
    }

    fn release(&self) {
        self.gate.send_replace(true);
    }

    fn get(&self, which: fn(&Counts) -> &AtomicU64) -> u64 {
        which(&self.counts).load(Ordering::SeqCst)
    }

    async fn wait_slow_arrivals(&self, n: u64) {
        let counts = Arc::clone(&self.counts);
        eventually(&format!("{n} /slow requests at the backend"), move || {
            let counts = Arc::clone(&counts);
            async move { counts.slow_arrived.load(Ordering::SeqCst) >= n }
        })
        .await;
    }
}

fn destination_rule(host: &str, pool: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata:\n  name: {host}-pool\n\
         spec:\n  host: {host}\n  trafficPolicy:\n    connectionPool:\n{pool}"
    )
}

/// Sends `n` concurrent `GET /slow` to `host`.
fn spawn_slow(client: &MeshClient, host: &str, n: usize) -> JoinSet<Reply> {
    let mut set = JoinSet::new();
    for _ in 0..n {
        let client = client.clone();
        let host = host.to_owned();
        set.spawn(async move { client.get(&host, "/slow").await });
    }
    set
}

/// Waits for the next `n` replies of `set`, which must all be immediate
/// overflow replies.
async fn expect_overflows(set: &mut JoinSet<Reply>, n: usize) {
    for _ in 0..n {
        let reply = tokio::time::timeout(DEADLINE, set.join_next())
            .await
            .expect("an overflow reply in time")
            .unwrap()
            .unwrap();
        assert_overflow(&reply);
    }
}

fn assert_overflow(reply: &Reply) {
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    assert_eq!(reply.flags(), "UO");
    assert_eq!(reply.headers["x-envoy-overloaded"], "true");
    assert_eq!(reply.backend(), "");
}

async fn expect_all_ok(mut set: JoinSet<Reply>) -> usize {
    let mut n = 0;
    while let Some(reply) = set.join_next().await {
        let reply = reply.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        assert_eq!(reply.backend(), "counting");
        n += 1;
    }
    n
}

// ------------------------------------------------------------------ tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_circuit_breaker_takes_effect() {
    let backend = Counting::start().await;
    let dir = ConfigDir::new();
    dir.seed(&["16-circuit-breaking.yaml"]);
    dir.write(
        "api.yaml",
        &service_entry("api", "api", 80, "HTTP", &[backend.endpoint()]),
    );
    let sidecar = start_sidecar(&dir, 16, false).await;
    let client = MeshClient::new(sidecar.outbound);

    // maxRequestsPerConnection: 2 — four requests in a row use two
    // connections.
    for _ in 0..4 {
        assert_eq!(client.get("api", "/").await.status, StatusCode::OK);
    }
    assert_eq!(backend.get(|c| &c.accepted), 2);

    // maxConnections 100 + http1MaxPendingRequests 10: of 115 concurrent
    // slow requests 100 reach the backend, 10 wait, 5 are refused at once.
    let mut slow = spawn_slow(&client, "api", 115);
    expect_overflows(&mut slow, 5).await;
    backend.wait_slow_arrivals(100).await;
    assert_eq!(backend.get(|c| &c.slow_arrived), 100);
    assert_eq!(backend.get(|c| &c.peak_in_flight), 100);
    backend.release();
    assert_eq!(expect_all_ok(slow).await, 110);
    assert_eq!(backend.get(|c| &c.slow_arrived), 110);
    assert_eq!(backend.get(|c| &c.peak_in_flight), 100);
    assert!(sidecar.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_and_one_pending_request_refuse_the_rest() {
    let backend = Counting::start().await;
    let dir = ConfigDir::new();
    dir.write(
        "cb.yaml",
        &service_entry("cb", "cb", 80, "HTTP", &[backend.endpoint()]),
    );
    dir.write(
        "dr.yaml",
        &destination_rule(
            "cb",
            "      tcp: { maxConnections: 1 }\n      http: { http1MaxPendingRequests: 1 }\n",
        ),
    );
    let sidecar = start_sidecar(&dir, 1, false).await;
    let client = MeshClient::new(sidecar.outbound);

    let first = spawn_slow(&client, "cb", 1);
    backend.wait_slow_arrivals(1).await;
    // Four more: one waits for the connection, three are refused at once.
    let mut rest = spawn_slow(&client, "cb", 4);
    expect_overflows(&mut rest, 3).await;
    assert_eq!(backend.get(|c| &c.slow_arrived), 1);
    backend.release();
    let ok = expect_all_ok(first).await + expect_all_ok(rest).await;
    assert_eq!(ok, 2);
    // The backend saw one connection, carrying one request at a time.
    assert_eq!(backend.get(|c| &c.accepted), 1);
    assert_eq!(backend.get(|c| &c.peak_open), 1);
    assert_eq!(backend.get(|c| &c.peak_in_flight), 1);
    assert!(sidecar.shutdown().await);
}

/// `http.maxRetries: 1`: while one retry to the destination is in flight,
/// other requests are not retried and get the response at hand, unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_retries_caps_concurrent_retries() {
    let backend = Counting::start().await;
    let dir = ConfigDir::new();
    dir.write(
        "cb.yaml",
        &service_entry("cb", "cb", 80, "HTTP", &[backend.endpoint()]),
    );
    dir.write(
        "dr.yaml",
        &destination_rule("cb", "      http: { maxRetries: 1 }\n"),
    );
    dir.write(
        "vs.yaml",
        "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: { name: cb }\n\
         spec:\n  hosts: [cb]\n  http:\n  - route: [{ destination: { host: cb } }]\n\
         \x20   retries: { attempts: 3, retryOn: 5xx }\n",
    );
    let sidecar = start_sidecar(&dir, 1, false).await;
    let client = MeshClient::new(sidecar.outbound);

    let first = {
        let client = client.clone();
        tokio::spawn(async move { client.get("cb", "/fail-first").await })
    };
    backend.wait_slow_arrivals(1).await;
    // The one retry slot is taken: these first tries' 503s come back as
    // they are, without a retry (no URX).
    for _ in 0..3 {
        let reply = client.get("cb", "/fail-first").await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
        assert_eq!(reply.backend(), "counting");
        assert_eq!(&reply.body[..], b"first try");
        assert!(!reply.flags().contains("URX"), "{reply:?}");
    }
    assert_eq!(backend.get(|c| &c.slow_arrived), 1);
    backend.release();
    let reply = first.await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    // With the slot free again, a retry goes out.
    let reply = client.get("cb", "/fail-first").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(backend.get(|c| &c.slow_arrived), 2);
    assert!(sidecar.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_max_requests_caps_an_http2_destination() {
    let backend = Counting::start().await;
    let dir = ConfigDir::new();
    dir.write(
        "grpcish.yaml",
        &service_entry("h2", "h2", 80, "HTTP2", &[backend.endpoint()]),
    );
    dir.write(
        "dr.yaml",
        &destination_rule("h2", "      http: { http2MaxRequests: 2 }\n"),
    );
    let sidecar = start_sidecar(&dir, 2, false).await;
    let client = MeshClient::new(sidecar.outbound);

    // HTTP/2 requests never queue: 2 go, 3 are refused.
    let mut slow = spawn_slow(&client, "h2", 5);
    expect_overflows(&mut slow, 3).await;
    backend.wait_slow_arrivals(2).await;
    backend.release();
    assert_eq!(expect_all_ok(slow).await, 2);
    assert_eq!(backend.get(|c| &c.peak_in_flight), 2);
    // Multiplexed on one connection.
    assert_eq!(backend.get(|c| &c.accepted), 1);
    assert!(sidecar.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_per_connection_1_uses_a_new_connection_per_request() {
    let closing = Counting::start().await;
    let keeping = Counting::start().await;
    let dir = ConfigDir::new();
    dir.write(
        "closing.yaml",
        &service_entry("closing", "closing", 80, "HTTP", &[closing.endpoint()]),
    );
    dir.write(
        "keeping.yaml",
        &service_entry("keeping", "keeping", 80, "HTTP", &[keeping.endpoint()]),
    );
    dir.write(
        "dr.yaml",
        &destination_rule("closing", "      http: { maxRequestsPerConnection: 1 }\n"),
    );
    let sidecar = start_sidecar(&dir, 3, false).await;
    let client = MeshClient::new(sidecar.outbound);
    for _ in 0..5 {
        assert_eq!(client.get("closing", "/").await.status, StatusCode::OK);
        assert_eq!(client.get("keeping", "/").await.status, StatusCode::OK);
    }
    assert_eq!(closing.get(|c| &c.accepted), 5);
    // Without the rule, connections are kept alive and reused.
    assert_eq!(keeping.get(|c| &c.accepted), 1);
    assert!(sidecar.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_unused_connections() {
    let backend = Counting::start().await;
    let dir = ConfigDir::new();
    dir.write(
        "idle.yaml",
        &service_entry("idle", "idle", 80, "HTTP", &[backend.endpoint()]),
    );
    dir.write(
        "dr.yaml",
        &destination_rule("idle", "      http: { idleTimeout: 200ms }\n"),
    );
    let sidecar = start_sidecar(&dir, 4, false).await;
    let client = MeshClient::new(sidecar.outbound);
    assert_eq!(client.get("idle", "/").await.status, StatusCode::OK);
    let counts = Arc::clone(&backend.counts);
    eventually("the idle connection to close", move || {
        let counts = Arc::clone(&counts);
        async move { counts.open.load(Ordering::SeqCst) == 0 }
    })
    .await;
    // The next request dials again.
    assert_eq!(client.get("idle", "/").await.status, StatusCode::OK);
    assert_eq!(backend.get(|c| &c.accepted), 2);
    assert!(sidecar.shutdown().await);
}

/// A listener whose accept queue is full and never drained: the kernel
/// drops further SYNs, so a connect to it hangs until the caller gives up.
async fn black_hole() -> (SocketAddr, TcpListener, Vec<TcpStream>) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => fillers.push(stream),
            Ok(Err(e)) => panic!("connect to the filling listener failed: {e}"),
            Err(_) => break,
        }
        assert!(fillers.len() < 64, "the accept queue never filled");
    }
    (addr, listener, fillers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_bounds_the_dial() {
    let (addr, _listener, _fillers) = black_hole().await;
    let dir = ConfigDir::new();
    dir.write(
        "hole.yaml",
        &service_entry("hole", "hole", 80, "HTTP", &[(addr.port(), "v1")]),
    );
    dir.write(
        "dr.yaml",
        &destination_rule("hole", "      tcp: { connectTimeout: 300ms }\n"),
    );
    let sidecar = start_sidecar(&dir, 5, false).await;
    let client = MeshClient::new(sidecar.outbound);
    let started = tokio::time::Instant::now();
    let reply = client.get("hole", "/").await;
    let took = started.elapsed();
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    // Istio's default retry policy retries connect failures (then URX).
    assert!(reply.flags().split(',').any(|f| f == "UF"), "{reply:?}");
    assert!(
        String::from_utf8_lossy(&reply.body).contains("connect timeout"),
        "{reply:?}"
    );
    assert!(took >= Duration::from_millis(300), "{took:?}");
    // Each try gives up after the 300 ms (3 tries with backoff stay far
    // below the 10 s default).
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(sidecar.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_process_client_breaks_circuits_too() {
    let backend = Counting::start().await;
    let dir = ConfigDir::new();
    dir.write(
        "cb.yaml",
        &service_entry("cb", "cb", 80, "HTTP", &[backend.endpoint()]),
    );
    dir.write(
        "dr.yaml",
        &destination_rule(
            "cb",
            "      tcp: { maxConnections: 1 }\n      http: { http1MaxPendingRequests: 1 }\n",
        ),
    );
    let client = mesh::Client::builder()
        .config([dir.path()])
        .watch(false)
        .random(Arc::new(SplitMix::seeded(6)))
        .build()
        .await
        .unwrap();
    // The futures are spawned as they are (an async block around the
    // client call trips the compiler's `Send` inference), and the replies
    // are read here.
    let send = |client: &mesh::Client| {
        let req = Request::get("http://cb/slow")
            .body(mesh::core::http::empty())
            .unwrap();
        client.clone().oneshot(req)
    };
    let mut first = JoinSet::new();
    first.spawn(send(&client));
    backend.wait_slow_arrivals(1).await;
    let mut rest = JoinSet::new();
    for _ in 0..3 {
        rest.spawn(send(&client));
    }
    for _ in 0..2 {
        let resp = tokio::time::timeout(DEADLINE, rest.join_next())
            .await
            .expect("an overflow reply in time")
            .unwrap()
            .unwrap()
            .unwrap();
        assert_overflow(&client_reply(resp).await);
    }
    assert_eq!(backend.get(|c| &c.slow_arrived), 1);
    backend.release();
    for mut set in [first, rest] {
        let resp = set.join_next().await.unwrap().unwrap().unwrap();
        let reply = client_reply(resp).await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        assert!(set.join_next().await.is_none());
    }
    assert_eq!(backend.get(|c| &c.accepted), 1);
    assert_eq!(backend.get(|c| &c.peak_in_flight), 1);
}

async fn client_reply(resp: Response<mesh::core::http::Body>) -> Reply {
    let (parts, body) = resp.into_parts();
    Reply {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}
