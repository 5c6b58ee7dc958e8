//! What the in-process mesh costs per request (issue 6 target: under 1 µs
//! and at most 2 extra allocations per request over a bare client, on a
//! plain route).
//!
//! Both clients call the same in-process hyper HTTP/1.1 server on
//! 127.0.0.1 over a kept-alive connection, with the same GET, and read the
//! whole 1 KiB answer:
//!
//! - `bare`: hyper-util's pooled client, straight to the server's address;
//! - `mesh`: `mesh::Client` (the whole outbound stack: route, fault, mirror,
//!   timeout, balance, pooled upstream) to `http://bench/`, which a
//!   VirtualService and a STATIC ServiceEntry send to the same server.
//!
//! Client, server and both connection ends share one current-thread runtime,
//! so each timed request is the full round trip on one core and the two
//! rows differ only by what the client side does.
//!
//! Allocations are counted by a counting global allocator over the system
//! one (every allocation of the process, the server's included, which is
//! the same for both rows); the per-request counts are printed before the
//! timings, with the per-request difference measured with the two clients
//! alternating in short rounds (steadier on a shared machine than two
//! criterion rows timed one after the other).

use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::time::Instant;
use tower::ServiceExt;

// ---------------------------------------------------------------- allocator

/// Counts allocation calls and passes everything to the system allocator.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static REALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// A global allocator can only be written as an `unsafe impl`. The workspace
// forbids unsafe code; benches/Cargo.toml lowers that to `deny` for this
// package so this one impl, which only counts and delegates to `System`
// with the caller's own arguments, can be allowed here.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        REALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `ptr` and `layout` come from this allocator, which got
        // them from `System`; the caller's contract is passed on unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn counts() -> (u64, u64) {
    (
        ALLOCATIONS.load(Ordering::Relaxed),
        REALLOCATIONS.load(Ordering::Relaxed),
    )
}

// ---------------------------------------------------------------- server

static BODY: [u8; 1024] = [b'x'; 1024];

/// A hyper HTTP/1.1 server answering every request with 1 KiB.
async fn server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(&BODY))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

// ---------------------------------------------------------------- clients

struct Clients {
    bare: HyperClient<HttpConnector, Empty<Bytes>>,
    bare_uri: http::Uri,
    mesh: mesh::Client,
    _config: tempfile::TempDir,
}

fn mesh_config(port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {{ name: bench }}
spec:
  hosts: [bench]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{ number: 80, name: http, protocol: HTTP }}]
  endpoints: [{{ address: 127.0.0.1, ports: {{ http: {port} }} }}]
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{ name: bench }}
spec:
  hosts: [bench]
  http:
  - route:
    - destination: {{ host: bench }}
"
    )
}

async fn clients() -> Clients {
    let addr = server().await;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let bare = HyperClient::builder(TokioExecutor::new()).build(connector);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    std::fs::write(dir.path().join("mesh.yaml"), mesh_config(addr.port()))
        .unwrap_or_else(|e| panic!("write config: {e}"));
    let mesh = mesh::Client::builder()
        .config([dir.path()])
        .watch(false)
        .build()
        .await
        .unwrap_or_else(|e| panic!("mesh client: {e}"));
    Clients {
        bare,
        bare_uri: format!("http://{addr}/")
            .parse()
            .unwrap_or_else(|e| panic!("uri: {e}")),
        mesh,
        _config: dir,
    }
}

fn get(uri: &http::Uri) -> Request<Empty<Bytes>> {
    let mut req = Request::new(Empty::new());
    *req.uri_mut() = uri.clone();
    req
}

static MESH_URI: &str = "http://bench/";

impl Clients {
    async fn bare_once(&self) -> usize {
        let resp = self
            .bare
            .request(get(&self.bare_uri))
            .await
            .unwrap_or_else(|e| panic!("bare request: {e}"));
        assert_eq!(resp.status(), 200);
        let body = resp
            .into_body()
            .collect()
            .await
            .unwrap_or_else(|e| panic!("bare body: {e}"));
        body.to_bytes().len()
    }

    async fn mesh_once(&self) -> usize {
        let uri = http::Uri::from_static(MESH_URI);
        let resp = match self.mesh.clone().oneshot(get(&uri)).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        };
        assert_eq!(resp.status(), 200, "{:?}", resp.headers());
        let body = resp
            .into_body()
            .collect()
            .await
            .unwrap_or_else(|e| panic!("mesh body: {e}"));
        body.to_bytes().len()
    }
}

// ---------------------------------------------------------------- benches

const ALLOC_SAMPLE: u64 = 2_000;

/// Allocation calls per request of each client, after a warm-up that opens
/// the pooled connections.
fn allocations(rt: &Runtime, clients: &Clients) {
    rt.block_on(async {
        for _ in 0..100 {
            assert_eq!(clients.bare_once().await, BODY.len());
            assert_eq!(clients.mesh_once().await, BODY.len());
        }
        let per = |before: (u64, u64), after: (u64, u64)| {
            (
                (after.0 - before.0) as f64 / ALLOC_SAMPLE as f64,
                (after.1 - before.1) as f64 / ALLOC_SAMPLE as f64,
            )
        };
        let start = counts();
        for _ in 0..ALLOC_SAMPLE {
            clients.bare_once().await;
        }
        let bare = per(start, counts());
        let start = counts();
        for _ in 0..ALLOC_SAMPLE {
            clients.mesh_once().await;
        }
        let mesh = per(start, counts());
        println!(
            "allocations per request (whole process, server included): \
             bare {:.2} (+{:.2} realloc), mesh {:.2} (+{:.2} realloc), \
             mesh extra {:.2} (+{:.2} realloc)",
            bare.0,
            bare.1,
            mesh.0,
            mesh.1,
            mesh.0 - bare.0,
            mesh.1 - bare.1
        );
    });
}

/// Rounds of the interleaved comparison, and requests per client per round.
const ROUNDS: usize = 30;
const PER_ROUND: u32 = 200;

/// The per-request difference, measured with the two clients alternating
/// in short rounds, so that load from elsewhere on a shared machine falls
/// on both alike (criterion times one client after the other). Prints the
/// medians over the rounds.
fn interleaved(rt: &Runtime, clients: &Clients) {
    rt.block_on(async {
        let mut bare = Vec::with_capacity(ROUNDS);
        let mut mesh = Vec::with_capacity(ROUNDS);
        let mut diff = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            let start = Instant::now();
            for _ in 0..PER_ROUND {
                clients.bare_once().await;
            }
            let b = start.elapsed().as_secs_f64() * 1e6 / f64::from(PER_ROUND);
            let start = Instant::now();
            for _ in 0..PER_ROUND {
                clients.mesh_once().await;
            }
            let m = start.elapsed().as_secs_f64() * 1e6 / f64::from(PER_ROUND);
            bare.push(b);
            mesh.push(m);
            diff.push(m - b);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!(
            "interleaved ({ROUNDS} rounds of {PER_ROUND}): bare {:.2} µs, mesh {:.2} µs, \
             mesh - bare {:.2} µs per request (medians)",
            median(&mut bare),
            median(&mut mesh),
            median(&mut diff)
        );
    });
}

fn client(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let clients = rt.block_on(clients());
    allocations(&rt, &clients);
    interleaved(&rt, &clients);

    let mut group = c.benchmark_group("client_round_trip");
    group.bench_function("bare_hyper_util", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    std::hint::black_box(clients.bare_once().await);
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("mesh_client", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    std::hint::black_box(clients.mesh_once().await);
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, client);
criterion_main!(benches);
