//! The seed's fault-injection rule through the sidecar (SPEC 4.5): only
//! requests with `x-test-user: qa` are delayed and aborted; with both
//! faults firing the caller waits the delay, then gets the abort, and the
//! backend never sees the request. The delay is shortened from the seed's
//! 5 s to keep the test quick; the percentages are the statistics of the
//! layer's own tests.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qa_requests_wait_then_abort_and_never_reach_the_backend() {
    let v1 = Backend::start("reviews-v1", "v1").await;
    let dir = ConfigDir::new();
    dir.seed(&["03-destination-rule-load-balancing.yaml"]);
    dir.write(
        "reviews.yaml",
        &service_entry("reviews", "reviews", 9080, "HTTP", &[v1.endpoint()]),
    );
    let fault = seed_text("06-fault-injection.yaml")
        .replace("fixedDelay: 5s", "fixedDelay: 200ms")
        .replace("value: 10\n", "value: 100\n");
    assert!(fault.contains("fixedDelay: 200ms") && fault.contains("value: 100\n"));
    dir.write("06-fault-injection.yaml", &fault);
    let sidecar = start_sidecar(&dir, 5, false).await;
    let client = MeshClient::new(sidecar.outbound);

    let started = tokio::time::Instant::now();
    let reply = client
        .get_with("reviews", "/", &[("x-test-user", "qa")])
        .await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "{reply:?}");
    assert_eq!(reply.flags(), "DI,FI");
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(v1.hits(), 0, "an aborted request never goes upstream");

    // Other callers are unaffected by the QA rule: the VirtualService has no
    // other rule, so they get 404 NR, promptly.
    let started = tokio::time::Instant::now();
    let reply = client
        .get_with("reviews", "/", &[("x-test-user", "dev")])
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.flags(), "NR");
    assert!(started.elapsed() < Duration::from_millis(200));
    assert!(sidecar.shutdown().await);
}
