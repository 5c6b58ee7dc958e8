//! Route timeouts through the sidecar (SPEC 4.6): no timeout unless the
//! VirtualService sets one; an expired request gets 504 UT; a caller can
//! lower the deadline with `x-envoy-upstream-rq-timeout-ms`.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::*;

async fn setup(timeout: &str) -> (Backend, ConfigDir, mesh::sidecar::Sidecar) {
    let backend = Backend::start("api-v1", "v1").await;
    let dir = ConfigDir::new();
    dir.write(
        "api.yaml",
        &service_entry("api", "api", 8080, "HTTP", &[backend.endpoint()]),
    );
    dir.write(
        "timeout.yaml",
        &format!(
            "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata:\n  name: api-timeout\n\
             spec:\n  hosts: [api]\n  http:\n  - route:\n    - destination:\n        host: api\n    timeout: {timeout}\n"
        ),
    );
    let sidecar = start_sidecar(&dir, 1, false).await;
    (backend, dir, sidecar)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_route_timeout_answers_504_ut() {
    let (backend, _dir, sidecar) = setup("300ms").await;
    let client = MeshClient::new(sidecar.outbound);
    let started = tokio::time::Instant::now();
    // `/slow` holds the request until released: only the timeout ends it.
    let reply = client.get("api:8080", "/slow").await;
    let waited = started.elapsed();
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT, "{reply:?}");
    assert_eq!(reply.flags(), "UT");
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    backend.release();
    // Fast requests are untouched.
    assert_eq!(client.get("api:8080", "/fast").await.status, StatusCode::OK);
    assert!(sidecar.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_can_lower_the_deadline() {
    // The seed's 10 s route timeout, lowered to 200 ms by the caller.
    let (backend, _dir, sidecar) = setup("10s").await;
    let client = MeshClient::new(sidecar.outbound);
    let started = tokio::time::Instant::now();
    let reply = client
        .get_with("api", "/slow", &[("x-envoy-upstream-rq-timeout-ms", "200")])
        .await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT, "{reply:?}");
    assert_eq!(reply.flags(), "UT");
    assert!(started.elapsed() < Duration::from_secs(5));
    backend.release();
    assert!(sidecar.shutdown().await);
}
