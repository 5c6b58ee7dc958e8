//! The seed's routing examples through the in-process `mesh::Client`, on
//! real sockets: backends on 127.0.0.1 that answer with their own name, the
//! seed's YAML copied into a temporary folder next to a ServiceEntry that
//! points the seed's hosts at those backends.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use mesh::Client;
use mesh_core::http::RESPONSE_FLAGS_HEADER;
use mesh_route::random::SplitMix;
use tower::ServiceExt;

/// A backend that answers every request with `x-backend: <name>` and its
/// name as the body.
async fn spawn_backend(name: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| async move {
                    let resp = http::Response::builder()
                        .header("x-backend", name)
                        .body(http_body_util::Full::new(Bytes::from_static(
                            name.as_bytes(),
                        )))
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(resp)
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn seed(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/seed")
        .join(file);
    std::fs::read_to_string(path).unwrap()
}

/// A STATIC ServiceEntry for `host:port` with one endpoint per
/// `(version label, backend)`.
fn service_entry(host: &str, port: u16, endpoints: &[(&str, SocketAddr)]) -> String {
    let mut yaml = format!(
        "apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: {host}
spec:
  hosts: [{host}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{ number: {port}, name: http, protocol: HTTP }}
  endpoints:
"
    );
    for (version, addr) in endpoints {
        yaml.push_str(&format!(
            "  - {{ address: 127.0.0.1, ports: {{ http: {} }}, labels: {{ version: {version} }} }}\n",
            addr.port()
        ));
    }
    yaml
}

/// Writes `contents` to `path` atomically (write aside, rename), as
/// editors and ConfigMap mounts do, so the watcher never reads half a file.
fn replace_file(path: &Path, contents: &str) {
    let aside = path.with_extension("tmp");
    std::fs::write(&aside, contents).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

/// One request through the client: status, the backend that answered (or
/// the response flags of a local reply), and the body.
async fn send(client: &Client, req: Request<Empty<Bytes>>) -> (StatusCode, String, String) {
    let resp = client.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let who = resp
        .headers()
        .get("x-backend")
        .or_else(|| resp.headers().get(RESPONSE_FLAGS_HEADER))
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, who, String::from_utf8_lossy(&body).into_owned())
}

fn get(uri: &str) -> Request<Empty<Bytes>> {
    Request::get(uri).body(Empty::new()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_split_and_header_override() {
    let v1 = spawn_backend("reviews-v1").await;
    let v2 = spawn_backend("reviews-v2").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("02-vs.yaml"),
        seed("02-virtual-service-traffic-routing.yaml"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("03-dr.yaml"),
        seed("03-destination-rule-load-balancing.yaml"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("reviews-se.yaml"),
        service_entry("reviews", 9080, &[("v1", v1), ("v2", v2)]),
    )
    .unwrap();
    let client = Client::builder()
        .config([dir.path()])
        .random(Arc::new(SplitMix::seeded(0x5eed)))
        .watch(false)
        .build()
        .await
        .unwrap();

    // 90/10 over n requests, 8 at a time.
    const N: usize = 4_000;
    const WORKERS: usize = 8;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..WORKERS {
        let client = client.clone();
        tasks.spawn(async move {
            let mut v2 = 0usize;
            for _ in 0..N / WORKERS {
                let (status, who, _) = send(&client, get("http://reviews:9080/reviews/1")).await;
                assert_eq!(status, StatusCode::OK, "{who}");
                match who.as_str() {
                    "reviews-v1" => {}
                    "reviews-v2" => v2 += 1,
                    other => panic!("unexpected backend {other}"),
                }
            }
            v2
        });
    }
    let v2_count: usize = tasks.join_all().await.into_iter().sum();
    let (n, p) = (N as f64, 0.10);
    let sigma = (n * p * (1.0 - p)).sqrt();
    let expected = n * p;
    assert!(
        (v2_count as f64 - expected).abs() <= 5.0 * sigma,
        "v2 got {v2_count} of {N}; expected {expected} +- {:.1}",
        5.0 * sigma
    );

    // `x-canary: true` always reaches v2, whichever way the host is named.
    for (i, host) in [
        "reviews",
        "reviews:9080",
        "reviews.default",
        "reviews.default.svc.cluster.local:9080",
    ]
    .iter()
    .cycle()
    .take(200)
    .enumerate()
    {
        // Alternate absolute-form URIs and origin-form with a Host header.
        let req = if i % 2 == 0 {
            Request::get(format!("http://{host}/reviews/{i}"))
                .header("x-canary", "true")
                .body(Empty::new())
                .unwrap()
        } else {
            Request::get(format!("/reviews/{i}"))
                .header(http::header::HOST, *host)
                .header("x-canary", "true")
                .body(Empty::new())
                .unwrap()
        };
        let (status, who, body) = send(&client, req).await;
        assert_eq!(status, StatusCode::OK, "{host}: {body}");
        assert_eq!(who, "reviews-v2", "{host}");
    }
}

const BLUE_GREEN_FLIPPED: &str = "apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: blue-green
spec:
  hosts:
  - webapp
  http:
  - route:
    - destination:
        host: webapp
        subset: blue
      weight: 0
    - destination:
        host: webapp
        subset: green
      weight: 100
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: webapp-subsets
spec:
  host: webapp
  subsets:
  - name: blue
    labels:
      version: blue
  - name: green
    labels:
      version: green
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_flip_by_editing_the_watched_file() {
    let blue = spawn_backend("webapp-blue").await;
    let green = spawn_backend("webapp-green").await;
    let dir = tempfile::tempdir().unwrap();
    let vs_file = dir.path().join("11-blue-green.yaml");
    std::fs::write(&vs_file, seed("11-blue-green-deployment.yaml")).unwrap();
    std::fs::write(
        dir.path().join("webapp-se.yaml"),
        service_entry("webapp", 80, &[("blue", blue), ("green", green)]),
    )
    .unwrap();
    let client = Client::builder()
        .config([dir.path()])
        .random(Arc::new(SplitMix::seeded(11)))
        .watch(true)
        .build()
        .await
        .unwrap();
    let first = client.routes_generation();

    // Before the edit: 100/0, everything to blue.
    for _ in 0..50 {
        let (status, who, _) = send(&client, get("http://webapp/")).await;
        assert_eq!((status, who.as_str()), (StatusCode::OK, "webapp-blue"));
    }

    // Traffic keeps running while the file changes; every answer must be a
    // 200 from one of the two colours.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (client, stop) = (client.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let (mut blue, mut green, mut failed) = (0usize, 0usize, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let (status, who, body) = send(&client, get("http://webapp/")).await;
                match (status, who.as_str()) {
                    (StatusCode::OK, "webapp-blue") => blue += 1,
                    (StatusCode::OK, "webapp-green") => green += 1,
                    _ => failed.push(format!("{status} {who} {body}")),
                }
            }
            (blue, green, failed)
        })
    };

    replace_file(&vs_file, BLUE_GREEN_FLIPPED);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while client.routes_generation() == first {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the edited file was not picked up (reload failure: {:?})",
            client.snapshots().last_failure()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // After the flip: 0/100, everything to green.
    for _ in 0..50 {
        let (status, who, _) = send(&client, get("http://webapp/")).await;
        assert_eq!((status, who.as_str()), (StatusCode::OK, "webapp-green"));
    }
    stop.store(true, Ordering::Relaxed);
    let (blue_seen, green_seen, failed) = traffic.await.unwrap();
    assert!(
        failed.is_empty(),
        "failed requests during the flip: {failed:?}"
    );
    assert!(
        blue_seen > 0 && green_seen > 0,
        "traffic spanned the flip: blue {blue_seen}, green {green_seen}"
    );
}

/// Routes for `ratings` that exercise the local replies: `/v1/` has a
/// backend, `/v3/` a subset no endpoint carries, anything else no rule.
const RATINGS_ROUTES: &str = "apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: ratings
spec:
  host: ratings
  subsets:
  - { name: v1, labels: { version: v1 } }
  - { name: v3, labels: { version: v3 } }
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: ratings
spec:
  hosts: [ratings]
  http:
  - match: [ { uri: { prefix: /v1/ } } ]
    route: [ { destination: { host: ratings, subset: v1 } } ]
  - match: [ { uri: { prefix: /v3/ } } ]
    route: [ { destination: { host: ratings, subset: v3 } } ]
";

#[tokio::test]
async fn local_replies_no_route_and_no_healthy_upstream() {
    let v1 = spawn_backend("ratings-v1").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ratings-se.yaml"),
        service_entry("ratings", 9080, &[("v1", v1)]),
    )
    .unwrap();
    std::fs::write(dir.path().join("ratings-routes.yaml"), RATINGS_ROUTES).unwrap();
    let client = Client::builder()
        .config([dir.path()])
        .random(Arc::new(SplitMix::seeded(3)))
        .watch(false)
        .build()
        .await
        .unwrap();

    let (status, who, _) = send(&client, get("http://ratings:9080/v1/stars")).await;
    assert_eq!((status, who.as_str()), (StatusCode::OK, "ratings-v1"));

    // The host has routes and none matches: 404 NR, answered by the mesh.
    let (status, flags, body) = send(&client, get("http://ratings:9080/other")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(flags, "NR");

    // The matched subset has no endpoints: 503 UH.
    let (status, flags, body) = send(&client, get("http://ratings:9080/v3/stars")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(flags, "UH");
}

#[tokio::test]
async fn building_from_an_invalid_configuration_fails() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {name: x}\nspec: {hosts: [a], htp: []}\n",
    )
    .unwrap();
    let err = Client::builder()
        .config([dir.path()])
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, mesh::client::ClientError::Config(_)), "{err}");
}
