//! Traffic mirroring end to end (SPEC 4.4, 3.4): the seed's
//! `traffic-mirror` VirtualService (api: primary v1 100%, mirror v2 100%)
//! through a real sidecar on loopback, with two in-process hyper backends
//! standing in for api v1 and v2.

// Test helpers outside `#[test]` functions may unwrap too.
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh::sidecar::{Sidecar, SidecarConfig};
use mesh_route::random::SplitMix;
use tokio::net::TcpListener;
use tokio::sync::Mutex;

/// One request as a backend saw it.
#[derive(Clone, Debug)]
struct Seen {
    host: String,
    path: String,
    body: Bytes,
}

/// A backend that answers with its name and records what it received.
struct Backend {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    async fn start(name: &'static str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (h, s) = (Arc::clone(&hits), Arc::clone(&seen));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (hits, seen) = (Arc::clone(&h), Arc::clone(&s));
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (hits, seen) = (Arc::clone(&hits), Arc::clone(&seen));
                    async move {
                        let host = req
                            .headers()
                            .get(HOST)
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let path = req.uri().path().to_owned();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        seen.lock().await.push(Seen { host, path, body });
                        hits.fetch_add(1, Ordering::SeqCst);
                        let resp = Response::builder()
                            .header("x-backend", name)
                            .body(Full::new(Bytes::from(name)))
                            .unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Backend {
            addr,
            hits,
            seen,
            task,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A loopback port nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

fn seed(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/seed")
        .join(file)
}

/// The seed's mirroring VirtualService, plus a ServiceEntry placing api v1
/// and v2 on the given ports and a DestinationRule defining the subsets.
fn config_dir(v1: SocketAddr, v2: SocketAddr) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let vs = "12-traffic-mirroring-shadow-traffic.yaml";
    std::fs::copy(seed(vs), dir.path().join(vs)).unwrap();
    let endpoints = format!(
        "apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: api
spec:
  hosts: [api]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{ number: 8080, name: http, protocol: HTTP }}
  endpoints:
  - {{ address: 127.0.0.1, ports: {{ http: {} }}, labels: {{ version: v1 }} }}
  - {{ address: 127.0.0.1, ports: {{ http: {} }}, labels: {{ version: v2 }} }}
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: api-versions
spec:
  host: api
  subsets:
  - {{ name: v1, labels: {{ version: v1 }} }}
  - {{ name: v2, labels: {{ version: v2 }} }}
",
        v1.port(),
        v2.port()
    );
    std::fs::write(dir.path().join("api-endpoints.yaml"), endpoints).unwrap();
    dir
}

async fn start_sidecar(dir: &tempfile::TempDir) -> Sidecar {
    let mut config = SidecarConfig::new(vec![dir.path().to_path_buf()]);
    config.outbound = SocketAddr::from(([127, 0, 0, 1], 0));
    config.admin = SocketAddr::from(([127, 0, 0, 1], 0));
    config.watch = false;
    config.random = Arc::new(SplitMix::seeded(12));
    Sidecar::start(config).await.unwrap()
}

/// POSTs `body` to `api` through the sidecar's outbound listener; returns
/// the status, the answering backend and the body.
async fn post_api(
    client: &Client<HttpConnector, Full<Bytes>>,
    outbound: SocketAddr,
    path: &str,
    body: &'static str,
) -> (StatusCode, String, String) {
    let req = Request::post(format!("http://{outbound}{path}"))
        .header(HOST, "api")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status();
    let backend = resp
        .headers()
        .get("x-backend")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, backend, String::from_utf8(bytes.to_vec()).unwrap())
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caller_gets_v1_and_v2_receives_a_shadow_copy() {
    let v1 = Backend::start("api-v1").await;
    let v2 = Backend::start("api-v2").await;
    let dir = config_dir(v1.addr, v2.addr);
    let sidecar = start_sidecar(&dir).await;
    let client = client();

    const N: usize = 5;
    for i in 0..N {
        let (status, backend, body) = post_api(
            &client,
            sidecar.outbound,
            &format!("/orders/{i}"),
            "mirror me",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!((backend.as_str(), body.as_str()), ("api-v1", "api-v1"));
    }
    assert_eq!(v1.hits(), N);

    // Copies are fire-and-forget: poll for them with a deadline.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while v2.hits() < N {
        assert!(
            tokio::time::Instant::now() < deadline,
            "v2 got {} of {N} copies",
            v2.hits()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut copies = v2.seen.lock().await.clone();
    copies.sort_by(|a, b| a.path.cmp(&b.path));
    for (i, copy) in copies.iter().enumerate() {
        assert!(copy.host.starts_with("api-shadow"), "{copy:?}");
        assert_eq!(copy.path, format!("/orders/{i}"));
        assert_eq!(copy.body, "mirror me");
    }
    for primary in v1.seen.lock().await.iter() {
        assert!(!primary.host.contains("shadow"), "{primary:?}");
        assert_eq!(primary.body, "mirror me");
    }
    assert!(sidecar.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_mirror_is_invisible_to_the_caller() {
    let v1 = Backend::start("api-v1").await;
    let dead = closed_port().await;
    let dir = config_dir(v1.addr, dead);
    let sidecar = start_sidecar(&dir).await;
    let client = client();

    for _ in 0..5 {
        let (status, backend, body) = post_api(&client, sidecar.outbound, "/", "payload").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!((backend.as_str(), body.as_str()), ("api-v1", "api-v1"));
    }
    assert_eq!(v1.hits(), 5);
    assert!(sidecar.shutdown().await);
}
