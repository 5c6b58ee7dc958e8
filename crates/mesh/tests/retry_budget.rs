//! Retry budgets end to end (SPEC 13.2): the seed's ServiceProfile
//! (fixtures/seed/09-service-profile-retries-timeouts.yaml) against a
//! backend that always fails, at a steady rate; and a chain of three
//! services with retries at every hop, where the budget and the retry
//! marker keep the load on the last service bounded.

#![allow(clippy::unwrap_used)]

mod retry_kit;
mod support;

use std::time::Duration;

use http::StatusCode;
use retry_kit::*;
use support::*;

/// SPEC 13.2's bound on retries in one ttl window: retryRatio x requests
/// + minRetriesPerSecond x ttl.
fn bound(ratio: f64, requests: u64, min_per_second: f64, ttl_seconds: f64) -> f64 {
    ratio * requests as f64 + min_per_second * ttl_seconds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_profile_budget_bounds_retries_at_a_steady_rate() {
    let backend = Scripted::start("api", |_| Action::Status(503)).await;
    let dir = ConfigDir::new();
    dir.seed(&["09-service-profile-retries-timeouts.yaml"])
        .write(
            "api.yaml",
            &service_entry_in("api", "production", "api", &[backend.port()]),
        );
    let sidecar = start_sidecar_in(&dir, "production", 1).await;
    let client = MeshClient::new(sidecar.outbound);

    // 40 requests/s for 2 s: well inside the seed's 10 s ttl, so the
    // whole run is one budget window.
    let mut tick = tokio::time::interval(Duration::from_millis(25));
    let requests = 80u64;
    for i in 0..requests {
        tick.tick().await;
        let reply = client.get("api", &format!("/api/users/{i}")).await;
        // A refused retry returns the failure as it is.
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.body, format!("api try {}", backend.hits() - 1));
    }
    let retries = backend.hits() - requests;
    // retryRatio 0.2, minRetriesPerSecond 10, ttl 10 s.
    let limit = bound(0.2, requests, 10.0, 10.0);
    assert!(retries as f64 <= limit, "{retries} retries > {limit}");
    // Every attempt failed, so nothing was deposited: exactly the reserve
    // (10/s x 10 s x cost 5 = 500 units, 5 a retry) was spent.
    assert_eq!(retries, 100);

    // The POST route is not retryable: one try, no budget touched.
    let before = backend.hits();
    let reply = collect(
        client
            .send(request("POST", "api", "/api/users", &[], full("{}")))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(backend.hits(), before + 1);
    assert!(sidecar.shutdown().await);
}

/// A VirtualService retrying `host` 3 times on 5xx with a 1 ms backoff
/// base (keeps the test fast).
fn retrying_vs(name: &str, host: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata:\n  name: {name}\n\
         spec:\n  hosts: [{host}]\n  http:\n  - route:\n    - destination:\n        host: {host}\n\
         \x20   retries:\n      attempts: 3\n      retryOn: 5xx\n      backoff: 1ms\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_service_chain_sends_budget_bounded_extra_load_to_the_last() {
    // client -> sidecar A -> app B -> sidecar B -> service C (always 503).
    let c = Scripted::start("c", |_| Action::Status(503)).await;
    let dir_b = ConfigDir::new();
    dir_b
        .write(
            "c.yaml",
            &service_entry("c", "c", 80, "HTTP", &[c.endpoint()]),
        )
        .write("c-vs.yaml", &retrying_vs("c-retry", "c"))
        // C's ServiceProfile: no routes of its own (the VirtualService
        // routes), but its budget caps the VirtualService's retries.
        .write(
            "c-profile.yaml",
            "apiVersion: linkerd.io/v1alpha2\nkind: ServiceProfile\nmetadata:\n\
             \x20 name: c.default.svc.cluster.local\n  namespace: default\nspec:\n\
             \x20 retryBudget:\n    retryRatio: 0.2\n    minRetriesPerSecond: 1\n    ttl: 10s\n",
        );
    let sidecar_b = start_sidecar(&dir_b, 2, false).await;
    let b = Forwarder::start(sidecar_b.outbound, "c").await;
    let dir_a = ConfigDir::new();
    dir_a
        .write(
            "b.yaml",
            &service_entry("b", "b", 80, "HTTP", &[(b.port(), "v1")]),
        )
        .write("b-vs.yaml", &retrying_vs("b-retry", "b"));
    let sidecar_a = start_sidecar(&dir_a, 3, false).await;
    let client = MeshClient::new(sidecar_a.outbound);

    let requests = 20u64;
    for _ in 0..requests {
        let reply = client.get("b", "/").await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    // A retries every request 3 times (no budget at that hop): B sees 4
    // requests per client request.
    assert_eq!(b.hits(), 4 * requests);
    // B's sidecar retries only B's first-try requests (A's retries carry
    // the marker), and only within C's budget (ratio 0.2, 1/s x 10 s).
    let extra = c.hits() - b.hits();
    let limit = bound(0.2, b.hits(), 1.0, 10.0);
    assert!(
        extra as f64 <= limit,
        "{extra} extra requests to C > {limit}"
    );
    assert!(extra > 0, "B's sidecar retried within its budget");
    // Without budget or marker, C would see (1 + 3) x (1 + 3) per request.
    assert!(c.hits() < 16 * requests / 2, "{} hits on C", c.hits());
    let marked = c.log().await.iter().filter(|h| h.marker.is_some()).count() as u64;
    assert!(
        marked >= 3 * requests,
        "A's retries reached C marked: {marked}"
    );
    assert!(sidecar_a.shutdown().await);
    assert!(sidecar_b.shutdown().await);
}
