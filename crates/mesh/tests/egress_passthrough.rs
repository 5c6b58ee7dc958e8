//! Istio's outbound traffic policy for plain HTTP (SPEC 2, 6.2): a request
//! to a host the registry does not know goes to its original destination
//! under `ALLOW_ANY` (the default) and answers 502 under `REGISTRY_ONLY`,
//! through the sidecar's outbound listener and the in-process client, on
//! real sockets. `localhost` is the unregistered host: the hosts file
//! resolves it, so the passthrough is dialled through the DNS stage.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use http_body_util::BodyExt;
use mesh::sidecar::Sidecar;
use mesh_route::explain::{ExplainQuery, ExplainedDestination};
use mesh_route::random::SplitMix;
use mesh_route::routing::RoutingTable;
use support::*;
use tokio::time::Instant;
use tower::ServiceExt;

const REGISTRY_ONLY: &str = "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\n\
     metadata:\n  name: mesh\nspec:\n  meshConfig:\n    outboundTrafficPolicy:\n      mode: REGISTRY_ONLY\n";

const ALLOW_ANY: &str = "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\n\
     metadata:\n  name: mesh\nspec:\n  meshConfig:\n    outboundTrafficPolicy:\n      mode: ALLOW_ANY\n";

/// `reviews` and `details` registered with no endpoints (their
/// ServiceEntries select WorkloadEntries and there are none), a
/// DestinationRule with subset v1 only, and a VirtualService sending
/// `/undefined` to subset v9 and the rest to `reviews` itself; `details`
/// has no routing resource (its default route).
const EMPTY_SERVICES: &str = "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\n\
     metadata: { name: reviews }\nspec:\n  hosts: [reviews, details]\n\
     \x20 location: MESH_INTERNAL\n  resolution: STATIC\n\
     \x20 ports: [{ number: 9080, name: http, protocol: HTTP }]\n\
     \x20 workloadSelector: { labels: { app: reviews } }\n\
     ---\n\
     apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\n\
     metadata: { name: reviews }\nspec:\n  host: reviews\n  subsets:\n\
     \x20 - { name: v1, labels: { version: v1 } }\n\
     ---\n\
     apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\n\
     metadata: { name: reviews }\nspec:\n  hosts: [reviews]\n  http:\n\
     \x20 - match: [{ uri: { prefix: /undefined } }]\n\
     \x20   route: [{ destination: { host: reviews, subset: v9 } }]\n\
     \x20 - route: [{ destination: { host: reviews } }]\n";

/// What `mesh explain` says about `GET url` under the sidecar's config.
fn explained(sidecar: &Sidecar, url: &str) -> ExplainedDestination {
    let table = RoutingTable::compile(sidecar.snapshots.load());
    let query = ExplainQuery::parse("GET", url, &[], "default", BTreeMap::new()).unwrap();
    let mut explanation = query.explain(&table);
    assert_eq!(explanation.destinations.len(), 1, "{explanation}");
    explanation.destinations.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_any_passes_unknown_hosts_to_their_original_destination() {
    let backend = Backend::start("outside", "v1").await;
    let dir = ConfigDir::new();
    dir.write("reviews.yaml", EMPTY_SERVICES);
    let sidecar = start_sidecar(&dir, 1, false).await;
    let client = MeshClient::new(sidecar.outbound);
    let host = format!("localhost:{}", backend.port());

    // HTTP/1.1 with a Host header, then HTTP/2 with `:authority`.
    let reply = client.get(&host, "/path?q=1").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.backend(), "outside");
    assert_eq!(reply.received_header("host").as_deref(), Some(&*host));
    assert_eq!(reply.json()["uri"], "/path?q=1");
    let h2 = request("GET", &host, "/h2", &[], empty());
    let reply = collect(client.send_h2(h2).await.unwrap()).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.backend(), "outside");
    assert_eq!(backend.hits(), 2);

    // A name DNS does not know: 503 UH at once, never a hang.
    let started = Instant::now();
    let reply = client.get("nonexistent.invalid", "/").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    assert_eq!(reply.flags(), "UH");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    // A mesh-style short name nobody knows ends the same way.
    let reply = client.get("ratings", "/").await;
    assert_eq!(
        (reply.status, reply.flags()),
        (StatusCode::SERVICE_UNAVAILABLE, "UH")
    );

    // A registered host without endpoints is never passed through: its
    // VirtualService route and its default route both answer 503 UH, and
    // an undefined subset 503 NC.
    for (h, path, flag) in [
        ("reviews", "/", "UH"),
        ("reviews:9080", "/", "UH"),
        ("details", "/", "UH"),
        ("details.default.svc.cluster.local:9080", "/", "UH"),
        ("reviews", "/undefined", "NC"),
    ] {
        let reply = client.get(h, path).await;
        assert_eq!(
            (reply.status, reply.flags()),
            (StatusCode::SERVICE_UNAVAILABLE, flag),
            "{h}{path}: {reply:?}"
        );
    }
    assert_eq!(backend.hits(), 2);

    // `mesh explain` says the same.
    let passthrough = explained(&sidecar, &format!("http://{host}/"));
    assert_eq!(passthrough.host, "PassthroughCluster");
    assert_eq!(passthrough.endpoints, std::slice::from_ref(&host));
    assert_eq!(passthrough.problem, None);
    assert!(passthrough.load_balancer.contains("ALLOW_ANY"));
    let short = explained(&sidecar, "http://localhost/");
    assert_eq!(short.endpoints, ["localhost:80"]);
    let empty = explained(&sidecar, "http://details/");
    assert!(empty.problem.unwrap().starts_with("503 UH"));
    assert!(sidecar.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_only_answers_502_for_unknown_hosts_and_routes_known_ones() {
    let outside = Backend::start("outside", "v1").await;
    let known = Backend::start("known-v1", "v1").await;
    let dir = ConfigDir::new();
    dir.write("mesh.yaml", REGISTRY_ONLY)
        .write("reviews.yaml", EMPTY_SERVICES)
        .write(
            "known.yaml",
            &service_entry("known", "known", 9080, "HTTP", &[known.endpoint()]),
        );
    let sidecar = start_sidecar(&dir, 1, false).await;
    let client = MeshClient::new(sidecar.outbound);

    let host = format!("localhost:{}", outside.port());
    let reply = client.get(&host, "/").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{reply:?}");
    assert_eq!(reply.flags(), "-");
    let text = String::from_utf8_lossy(&reply.body);
    assert!(text.contains("REGISTRY_ONLY"), "{text}");
    assert!(text.contains("localhost"), "{text}");
    assert_eq!(outside.hits(), 0);

    // No DNS is asked for a blocked host: the 502 comes first.
    let reply = client.get("nonexistent.invalid", "/").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{reply:?}");

    let blocked = explained(&sidecar, &format!("http://{host}/"));
    assert_eq!(blocked.host, "BlackHoleCluster");
    assert!(blocked.endpoints.is_empty());
    let problem = blocked.problem.unwrap();
    assert!(problem.starts_with("502: localhost "), "{problem}");
    assert!(problem.contains("REGISTRY_ONLY"), "{problem}");

    // Registered hosts are unaffected.
    let reply = client.get("known", "/").await;
    assert_eq!(
        (reply.status, reply.backend()),
        (StatusCode::OK, "known-v1")
    );
    for (h, path, flag) in [
        ("reviews", "/", "UH"),
        ("details", "/", "UH"),
        ("reviews", "/undefined", "NC"),
    ] {
        let reply = client.get(h, path).await;
        assert_eq!(
            (reply.status, reply.flags()),
            (StatusCode::SERVICE_UNAVAILABLE, flag),
            "{h}{path}: {reply:?}"
        );
    }
    assert!(sidecar.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_switches_the_mode() {
    let backend = Backend::start("outside", "v1").await;
    let dir = ConfigDir::new();
    dir.write("reviews.yaml", EMPTY_SERVICES);
    let sidecar = start_sidecar(&dir, 1, true).await;
    let client = MeshClient::new(sidecar.outbound);
    let host = format!("localhost:{}", backend.port());

    let reply = client.get(&host, "/").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");

    dir.write("mesh.yaml", REGISTRY_ONLY);
    eventually("REGISTRY_ONLY in force", || async {
        client.get(&host, "/").await.status == StatusCode::BAD_GATEWAY
    })
    .await;
    let hits = backend.hits();

    dir.write("mesh.yaml", ALLOW_ANY);
    eventually("ALLOW_ANY in force", || async {
        client.get(&host, "/").await.status == StatusCode::OK
    })
    .await;
    assert_eq!(backend.hits(), hits + 1);
    assert!(sidecar.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_process_client_follows_the_same_policy() {
    let backend = Backend::start("outside", "v1").await;
    let dir = ConfigDir::new();
    dir.write("reviews.yaml", EMPTY_SERVICES);
    let client = mesh::Client::builder()
        .config([dir.path()])
        .random(Arc::new(SplitMix::seeded(3)))
        .watch(false)
        .build()
        .await
        .unwrap();
    let call = |uri: String| {
        let client = client.clone();
        async move {
            let req = http::Request::get(uri)
                .body(mesh::core::http::empty())
                .unwrap();
            let resp = client.oneshot(req).await.unwrap();
            let status = resp.status();
            let flags = resp
                .headers()
                .get("x-mesh-response-flags")
                .map(|v| v.to_str().unwrap().to_owned());
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, flags, body)
        }
    };
    let (status, _, body) = call(format!("http://localhost:{}/x", backend.port())).await;
    assert_eq!(status, StatusCode::OK);
    let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen["name"], "outside");
    assert_eq!(
        seen["headers"]["host"],
        format!("localhost:{}", backend.port())
    );
    let (status, flags, _) = call("http://reviews:9080/".to_owned()).await;
    assert_eq!(
        (status, flags.as_deref()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("UH"))
    );
    let (status, flags, _) = call("http://nonexistent.invalid/".to_owned()).await;
    assert_eq!(
        (status, flags.as_deref()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("UH"))
    );

    // The same client over a REGISTRY_ONLY configuration.
    dir.write("mesh.yaml", REGISTRY_ONLY);
    let blocked = mesh::Client::builder()
        .config([dir.path()])
        .watch(false)
        .build()
        .await
        .unwrap();
    let req = http::Request::get(format!("http://localhost:{}/", backend.port()))
        .body(mesh::core::http::empty())
        .unwrap();
    let resp = blocked.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(backend.hits(), 1);
}

/// A passthrough to the sidecar's own listeners would loop forever: it is
/// refused with 508 at once, by address and by a name resolving to it.
#[tokio::test]
async fn a_passthrough_to_the_sidecar_itself_is_refused() {
    let dir = ConfigDir::new();
    dir.write("empty.yaml", EMPTY_SERVICES);
    let sidecar = start_sidecar(&dir, 3, false).await;
    let client = MeshClient::new(sidecar.outbound);
    for host in [
        format!("127.0.0.1:{}", sidecar.outbound.port()),
        format!("localhost:{}", sidecar.outbound.port()),
        format!("127.0.0.1:{}", sidecar.admin.port()),
    ] {
        let reply = client.get(&host, "/").await;
        assert_eq!(reply.status, StatusCode::LOOP_DETECTED, "{host}");
    }
    sidecar.shutdown().await;
}
