//! Retries through the sidecar on real sockets (SPEC 4.6, 12): the seed's
//! `api-retry` VirtualService (fixtures/seed/17-retries.yaml) against
//! backends that fail on cue, plus small per-try timeouts of our own so the
//! timing tests take well under a second, and the in-process client.

#![allow(clippy::unwrap_used)]

mod retry_kit;
mod support;

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use mesh_route::random::SplitMix;
use retry_kit::*;
use support::*;

/// The seed's retry policy for `api`, with `api` served by `ports`.
fn seed_config(ports: &[u16]) -> ConfigDir {
    let endpoints: Vec<(u16, &str)> = ports.iter().map(|p| (*p, "v1")).collect();
    let dir = ConfigDir::new();
    dir.seed(&["17-retries.yaml"]).write(
        "api.yaml",
        &service_entry("api", "api", 80, "HTTP", &endpoints),
    );
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_503s_then_success_on_the_third_try() {
    let backend = Scripted::start("api", |n| Action::Status(if n < 2 { 503 } else { 200 })).await;
    let dir = seed_config(&[backend.port()]);
    let sidecar = start_sidecar(&dir, 1, false).await;
    let reply = MeshClient::new(sidecar.outbound).get("api", "/users").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.body, "api try 2");
    assert_eq!(reply.flags(), "");
    let markers: Vec<Option<String>> = backend.log().await.into_iter().map(|h| h.marker).collect();
    assert_eq!(markers, [None, Some("1".into()), Some("2".into())]);
    assert!(sidecar.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_response_is_returned_unchanged_with_urx() {
    let backend = Scripted::start("api", |_| Action::Status(503)).await;
    let dir = seed_config(&[backend.port()]);
    let sidecar = start_sidecar(&dir, 2, false).await;
    let reply = MeshClient::new(sidecar.outbound).get("api", "/").await;
    // attempts: 3 -> four tries; the fourth's response, flagged URX.
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.body, "api try 3");
    assert_eq!(reply.headers["x-try"], "3");
    assert_eq!(reply.flags(), "URX");
    assert_eq!(backend.hits(), 4);
    assert!(sidecar.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_move_to_a_live_endpoint() {
    let live = Scripted::start("api", |_| Action::Status(200)).await;
    let dead = closed_port().await;
    let dir = seed_config(&[dead, live.port()]);
    let sidecar = start_sidecar(&dir, 3, false).await;
    let client = MeshClient::new(sidecar.outbound);
    for i in 0..20 {
        let reply = client.get("api", "/").await;
        assert_eq!(reply.status, StatusCode::OK, "request {i}: {reply:?}");
    }
    assert_eq!(live.hits(), 20, "one try each reached the live endpoint");
    // Requests that first went to the dead endpoint arrived as retries.
    let retried = live
        .log()
        .await
        .iter()
        .filter(|h| h.marker.as_deref() == Some("1"))
        .count();
    assert!(retried > 0, "the dead endpoint was never picked");
    assert!(retried < 20);

    // Only a dead endpoint: three refused connections, then 503 UF,URX.
    let dir = seed_config(&[dead]);
    let only_dead = start_sidecar(&dir, 3, false).await;
    let reply = MeshClient::new(only_dead.outbound).get("api", "/").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.flags(), "UF,URX");
    assert!(sidecar.shutdown().await);
    assert!(only_dead.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_mib_post_is_sent_once_and_a_small_one_is_replayed() {
    let backend = Scripted::start("api", |_| Action::Status(503)).await;
    let dir = seed_config(&[backend.port()]);
    let sidecar = start_sidecar(&dir, 4, false).await;
    let client = MeshClient::new(sidecar.outbound);

    let big = 1024 * 1024;
    let req = request("POST", "api", "/upload", &[], Zeros::new(big).boxed_body());
    let reply = collect(client.send(req).await.unwrap()).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.flags(), "", "not retried, so no URX");
    let log = backend.log().await;
    assert_eq!(log.len(), 1, "the backend saw the large body once");
    assert_eq!(log[0].body_bytes, big);

    // 1 KiB fits the replay buffer: four tries, each with the whole body.
    let req = request("POST", "api", "/upload", &[], Zeros::new(1024).boxed_body());
    let reply = collect(client.send(req).await.unwrap()).await;
    assert_eq!((reply.status.as_u16(), reply.flags()), (503, "URX"));
    let log = backend.log().await;
    assert_eq!(log.len(), 5);
    assert!(
        log[1..]
            .iter()
            .all(|h| h.body_bytes == 1024 && h.method == "POST")
    );
    assert!(sidecar.shutdown().await);
}

/// A VirtualService for `api` with this `timeout` (or none) and retries.
fn timeouts_config(backend: u16, timeout: Option<&str>, attempts: u32, per_try: &str) -> ConfigDir {
    let dir = ConfigDir::new();
    let timeout = timeout
        .map(|t| format!("    timeout: {t}\n"))
        .unwrap_or_default();
    dir.write("api.yaml", &service_entry("api", "api", 80, "HTTP", &[(backend, "v1")]))
        .write(
            "vs.yaml",
            &format!(
                "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata:\n  name: api-retry\n\
                 spec:\n  hosts: [api]\n  http:\n  - route:\n    - destination:\n        host: api\n{timeout}\
                 \x20   retries:\n      attempts: {attempts}\n      perTryTimeout: {per_try}\n      retryOn: 5xx,reset,connect-failure,refused-stream\n"
            ),
        );
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_try_timeouts_end_in_504_ut_after_the_tries() {
    let backend = Scripted::start("api", |_| Action::Hang).await;
    let dir = timeouts_config(backend.port(), None, 2, "200ms");
    let sidecar = start_sidecar(&dir, 5, false).await;
    let started = tokio::time::Instant::now();
    let reply = MeshClient::new(sidecar.outbound).get("api", "/slow").await;
    let took = started.elapsed();
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT, "{reply:?}");
    assert_eq!(reply.flags(), "UT,URX");
    assert_eq!(backend.hits(), 3);
    // Three 200 ms tries and two backoffs under 25 and 50 ms.
    assert!(took >= Duration::from_millis(600), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    backend.release();
    assert!(sidecar.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_timeout_bounds_all_the_tries() {
    let backend = Scripted::start("api", |_| Action::Hang).await;
    // Four 200 ms tries would take 800 ms; the route allows 500 ms.
    let dir = timeouts_config(backend.port(), Some("500ms"), 3, "200ms");
    let sidecar = start_sidecar(&dir, 6, false).await;
    let started = tokio::time::Instant::now();
    let reply = MeshClient::new(sidecar.outbound).get("api", "/slow").await;
    let took = started.elapsed();
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT, "{reply:?}");
    assert_eq!(
        reply.flags(),
        "UT",
        "the route timeout, not retries used up"
    );
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    let hits = backend.hits();
    assert!((2..=3).contains(&hits), "{hits} tries in 500 ms");
    backend.release();
    assert!(sidecar.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_virtual_service_istio_default_retries_refused_connections_only() {
    let live = Scripted::start("api", |_| Action::Status(200)).await;
    let failing = Scripted::start("failing", |_| Action::Status(503)).await;
    let dead = closed_port().await;
    let dir = ConfigDir::new();
    dir.write(
        "api.yaml",
        &service_entry(
            "api",
            "api",
            80,
            "HTTP",
            &[(dead, "v1"), (live.port(), "v1")],
        ),
    )
    .write(
        "failing.yaml",
        &service_entry("failing", "failing", 80, "HTTP", &[(failing.port(), "v1")]),
    );
    let sidecar = start_sidecar(&dir, 7, false).await;
    let client = MeshClient::new(sidecar.outbound);
    for _ in 0..10 {
        assert_eq!(client.get("api", "/").await.status, StatusCode::OK);
    }
    assert_eq!(live.hits(), 10);
    // A plain upstream 503 is not retried by default (Istio 1.24+).
    let reply = client.get("failing", "/").await;
    assert_eq!((reply.status.as_u16(), reply.flags()), (503, ""));
    assert_eq!(failing.hits(), 1);
    assert!(sidecar.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_process_client_retries_too() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let backend = Scripted::start("api", |n| Action::Status(if n < 2 { 503 } else { 200 })).await;
    let dir = seed_config(&[backend.port()]);
    let client = mesh::Client::builder()
        .config([dir.path()])
        .random(Arc::new(SplitMix::seeded(8)))
        .watch(false)
        .build()
        .await
        .unwrap();
    let req = http::Request::get("http://api/users")
        .body(mesh::core::http::empty())
        .unwrap();
    let resp = client.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "api try 2");
    assert_eq!(backend.hits(), 3);
}

/// Boxing for the request helpers of the kit.
trait BoxedBody {
    fn boxed_body(self) -> TestBody;
}

impl BoxedBody for Zeros {
    fn boxed_body(self) -> TestBody {
        use http_body_util::BodyExt;
        self.boxed()
    }
}
