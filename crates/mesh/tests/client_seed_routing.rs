//! The seed's remaining routing examples through the in-process
//! `mesh::Client` (canary, `x-canary` and blue-green are in
//! `client_routing.rs`): A/B by `user-group`, URL prefix routing with a
//! default route (bound to `mesh`, and gateway-bound as in the seed), and
//! mirroring 100%. Real hyper backends on 127.0.0.1, the seed's YAML copied
//! next to ServiceEntries that point its hosts at them.

#![allow(clippy::unwrap_used)]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::HOST;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh::Client;
use mesh_route::random::SplitMix;
use support::*;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// A client over the folder, randomness seeded with `seed`, not watching.
async fn client(dir: &ConfigDir, seed: u64) -> Client {
    Client::builder()
        .config([dir.path()])
        .random(Arc::new(SplitMix::seeded(seed)))
        .watch(false)
        .build()
        .await
        .unwrap()
}

/// Sends one request through the client and collects the answer.
async fn send<B>(client: &Client, req: Request<B>) -> Reply
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<mesh::core::http::BoxError>,
{
    let resp = client.clone().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body,
    }
}

/// `GET http://{host}{path}` with extra headers through the client. The
/// body is `Empty` (error type `Infallible`): a boxed-error body makes the
/// spawned futures trip the compiler's higher-ranked `Send` inference.
async fn get(client: &Client, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let req = request("GET", host, path, headers, empty()).map(|_| Empty::<Bytes>::new());
    send(client, req).await
}

/// `n` GETs from `concurrency` tasks sharing the client; every reply's
/// backend name (or `status:flags` for a failure), in no particular order.
async fn fan_out_client(
    client: &Client,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    n: usize,
    concurrency: usize,
) -> Vec<String> {
    let headers: Arc<Vec<(String, String)>> = Arc::new(
        headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let client = client.clone();
        let headers = Arc::clone(&headers);
        let (host, path) = (host.to_owned(), path.to_owned());
        let share = n / concurrency + usize::from(worker < n % concurrency);
        tasks.spawn(async move {
            let pairs: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let mut seen = Vec::with_capacity(share);
            for _ in 0..share {
                let reply = get(&client, &host, &path, &pairs).await;
                seen.push(if reply.status == StatusCode::OK {
                    reply.backend().to_owned()
                } else {
                    format!("{}:{}", reply.status.as_u16(), reply.flags())
                });
            }
            seen
        });
    }
    let mut all = Vec::with_capacity(n);
    while let Some(part) = tasks.join_next().await {
        all.extend(part.unwrap());
    }
    all
}

// ---------------------------------------------------------------- A/B

const WEBAPP_DR: &str = "apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: webapp
spec:
  host: webapp
  subsets:
  - { name: v1, labels: { version: v1 } }
  - { name: v2, labels: { version: v2 } }
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ab_test_by_user_group_header() {
    let v1 = Backend::start("webapp-v1", "v1").await;
    let v2 = Backend::start("webapp-v2", "v2").await;
    let dir = ConfigDir::new();
    dir.seed(&["10-a-b-testing.yaml"])
        .write(
            "50-webapp.yaml",
            &service_entry(
                "webapp",
                "webapp",
                80,
                "HTTP",
                &[v1.endpoint(), v2.endpoint()],
            ),
        )
        .write("51-webapp-dr.yaml", WEBAPP_DR);
    let client = client(&dir, 10).await;

    // Beta testers always reach v2.
    let beta = fan_out_client(
        &client,
        "webapp",
        "/",
        &[("user-group", "beta-testers")],
        200,
        8,
    )
    .await;
    assert_eq!(
        count(&beta, "webapp-v2"),
        200,
        "beta-testers -> v2: {beta:?}"
    );

    // Everyone else (no header, another group, a longer value, another
    // case: the match is exact) falls to the default route, v1.
    for others in [
        &[][..],
        &[("user-group", "alpha")][..],
        &[("user-group", "beta-testers-2")][..],
        &[("user-group", "Beta-Testers")][..],
        &[("x-user-group", "beta-testers")][..],
    ] {
        let seen = fan_out_client(&client, "webapp", "/", others, 50, 4).await;
        assert_eq!(count(&seen, "webapp-v1"), 50, "{others:?} -> v1: {seen:?}");
    }

    // The host may be named in any of DESIGN.md's forms.
    for host in [
        "webapp:80",
        "webapp.default",
        "webapp.default.svc.cluster.local",
    ] {
        let reply = get(&client, host, "/", &[("user-group", "beta-testers")]).await;
        assert_eq!(reply.status, StatusCode::OK, "{host}: {reply:?}");
        assert_eq!(reply.backend(), "webapp-v2", "{host}");
        assert_eq!(reply.subset(), "v2", "{host}");
    }

    // The backends agree with what the caller saw.
    assert_eq!(v2.hits(), 203);
    assert_eq!(v1.hits(), 250);
}

// ---------------------------------------------------------------- URL prefix

/// ServiceEntries for the seed's api hosts (service port 8080, as the
/// seed's destinations name it) and for `api.example.com` itself.
async fn api_backends(dir: &ConfigDir) -> [Backend; 3] {
    let api_v1 = Backend::start("api-v1", "v1").await;
    let api_v2 = Backend::start("api-v2", "v1").await;
    let example = Backend::start("api-example", "v1").await;
    dir.write(
        "50-api-v1.yaml",
        &service_entry("api-v1", "api-v1", 8080, "HTTP", &[api_v1.endpoint()]),
    )
    .write(
        "51-api-v2.yaml",
        &service_entry("api-v2", "api-v2", 8080, "HTTP", &[api_v2.endpoint()]),
    )
    .write(
        "52-api-example.yaml",
        &service_entry(
            "api-example",
            "api.example.com",
            80,
            "HTTP",
            &[example.endpoint()],
        ),
    );
    [api_v1, api_v2, example]
}

/// The seed's `api-vs` (second document of fixture 02) with `mesh` added to
/// its gateways, so it applies to sidecars and in-process clients too.
fn api_vs_bound_to_mesh() -> String {
    let seed = seed_text("02-virtual-service-traffic-routing.yaml");
    let api_vs = seed
        .split("\n---")
        .find(|doc| doc.contains("name: api-vs"))
        .unwrap();
    let copy = api_vs
        .replace("name: api-vs", "name: api-vs-mesh")
        .replace("  - api-gateway\n", "  - api-gateway\n  - mesh\n");
    assert!(copy.contains("  - mesh\n"), "the seed's layout changed");
    copy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_prefix_routing_with_a_default_route_when_bound_to_mesh() {
    let dir = ConfigDir::new();
    dir.seed(&["04-gateway-ingress.yaml"])
        .write("02-api-vs-mesh.yaml", &api_vs_bound_to_mesh());
    let [api_v1, api_v2, example] = api_backends(&dir).await;
    let client = client(&dir, 2).await;
    let cases = [
        ("/v1/users", "api-v1"),
        ("/v1/", "api-v1"),
        ("/v2/users?page=2", "api-v2"),
        ("/v2/", "api-v2"),
        // The prefix is the raw string `/v2/`: `/v2` alone is the default.
        ("/v2", "api-v1"),
        ("/v3/users", "api-v1"),
        ("/", "api-v1"),
    ];
    for (path, expected) in cases {
        let reply = get(&client, "api.example.com", path, &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {reply:?}");
        assert_eq!(reply.backend(), expected, "{path}");
        // No rewrite is configured: the path reaches the backend unchanged.
        assert_eq!(reply.json()["uri"], path, "{path}");
    }
    // The origin-form with a Host header routes the same way.
    let req = Request::get("/v2/orders")
        .header(HOST, "api.example.com")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let reply = send(&client, req).await;
    assert_eq!(
        (reply.status, reply.backend()),
        (StatusCode::OK, "api-v2"),
        "{reply:?}"
    );
    assert_eq!((api_v1.hits(), api_v2.hits(), example.hits()), (5, 3, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_bound_api_vs_does_not_apply_to_the_client() {
    let dir = ConfigDir::new();
    dir.seed(&[
        "02-virtual-service-traffic-routing.yaml",
        "04-gateway-ingress.yaml",
    ]);
    let [api_v1, api_v2, example] = api_backends(&dir).await;
    let client = client(&dir, 2).await;
    // The seed's api-vs names only `api-gateway` (SPEC 4.1): the client is
    // not that gateway, so api.example.com goes to its own ServiceEntry
    // whatever the path.
    for path in ["/v1/users", "/v2/users", "/other"] {
        let reply = get(&client, "api.example.com", path, &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {reply:?}");
        assert_eq!(reply.backend(), "api-example", "{path}");
        assert_eq!(reply.json()["uri"], path, "{path}");
    }
    assert_eq!((api_v1.hits(), api_v2.hits(), example.hits()), (0, 0, 3));
}

// ---------------------------------------------------------------- mirroring

/// One request as a recording backend saw it.
#[derive(Clone, Debug)]
struct Seen {
    host: String,
    path: String,
    body: Bytes,
}

/// A backend that answers with its name (`x-backend`) and records every
/// request's Host, path and body.
struct Recorder {
    addr: SocketAddr,
    seen: Arc<tokio::sync::Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    async fn start(name: &'static str) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(tokio::sync::Mutex::new(Vec::new()));
        let shared = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let seen = Arc::clone(&shared);
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let seen = Arc::clone(&seen);
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
                        let resp = Response::builder()
                            .header("x-backend", name)
                            .body(Full::new(Bytes::from_static(name.as_bytes())))
                            .unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Recorder { addr, seen, task }
    }

    async fn seen(&self) -> Vec<Seen> {
        self.seen.lock().await.clone()
    }
}

/// DestinationRule subsets and a ServiceEntry placing api v1 and v2 on the
/// given backends (service port 8080).
fn api_endpoints(v1: SocketAddr, v2: SocketAddr) -> String {
    format!(
        "{}---
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
        service_entry(
            "api",
            "api",
            8080,
            "HTTP",
            &[(v1.port(), "v1"), (v2.port(), "v2")]
        )
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_100_percent_caller_gets_v1_and_v2_gets_a_shadow_copy() {
    let v1 = Recorder::start("api-v1").await;
    let v2 = Recorder::start("api-v2").await;
    let dir = ConfigDir::new();
    dir.seed(&["12-traffic-mirroring-shadow-traffic.yaml"])
        .write("50-api.yaml", &api_endpoints(v1.addr, v2.addr));
    let client = client(&dir, 12).await;

    // mirrorPercentage 100: every request is copied; the caller only ever
    // sees the primary's answer.
    const N: usize = 20;
    for i in 0..N {
        let req = request(
            "POST",
            "api:8080",
            &format!("/orders/{i}"),
            &[],
            full(format!("order {i}")),
        );
        let reply = send(&client, req).await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        assert_eq!(reply.backend(), "api-v1");
        assert_eq!(reply.body, "api-v1");
    }
    let primaries = v1.seen().await;
    assert_eq!(primaries.len(), N, "v1 answered every request once");
    for primary in &primaries {
        assert!(!primary.host.contains("shadow"), "{primary:?}");
    }

    // Copies are fire-and-forget: poll for them with a deadline.
    let shadow = &v2;
    eventually("v2 to receive every mirrored copy", || async move {
        shadow.seen().await.len() >= N
    })
    .await;
    let mut copies = v2.seen().await;
    assert_eq!(copies.len(), N, "one copy per request: {copies:?}");
    copies.sort_by_key(|c| {
        c.path
            .trim_start_matches("/orders/")
            .parse::<usize>()
            .unwrap()
    });
    for (i, copy) in copies.iter().enumerate() {
        assert!(copy.host.starts_with("api-shadow"), "{copy:?}");
        assert_eq!(copy.path, format!("/orders/{i}"), "{copy:?}");
        assert_eq!(copy.body, format!("order {i}"), "{copy:?}");
    }
    // The copies went to v2 only: the primary still saw each request once.
    assert_eq!(v1.seen().await.len(), N);
}
