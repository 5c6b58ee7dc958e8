//! Gateway API and Linkerd HTTPRoutes end to end (SPEC 3): the seed's
//! Linkerd HTTPRoute (90/10 between api-v1 and api-v2 on /api/v1) and a
//! `gateway.networking.k8s.io/v1` HTTPRoute with a Service parentRef,
//! through a real sidecar on loopback whose workload runs in `production`,
//! with in-process hyper backends standing in for the Services.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use http::StatusCode;
use mesh::sidecar::{Sidecar, SidecarConfig};
use mesh_route::random::SplitMix;
use support::{
    Backend, ConfigDir, DEADLINE, MeshClient, assert_binomial, count, eventually, fan_out,
};

/// A STATIC ServiceEntry in `production` for `name` with service port 8080
/// mapped to `backend`'s port.
fn service(name: &str, backend: &Backend) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: production}}\n\
         spec:\n  hosts: [{name}]\n  location: MESH_INTERNAL\n  resolution: STATIC\n\
         \x20 ports: [{{number: 8080, name: http, protocol: HTTP}}]\n\
         \x20 endpoints: [{{address: 127.0.0.1, ports: {{http: {}}}}}]\n",
        backend.port()
    )
}

/// The sidecar of a workload in `production`, seeded randomness.
async fn start(dir: &ConfigDir, seed: u64) -> Sidecar {
    let mut config = SidecarConfig::new(vec![dir.path().to_path_buf()]);
    config.workload.namespace = "production".into();
    config.outbound = SocketAddr::from(([127, 0, 0, 1], 0));
    config.inbound = SocketAddr::from(([127, 0, 0, 1], 0));
    config.admin = SocketAddr::from(([127, 0, 0, 1], 0));
    config.random = Arc::new(SplitMix::seeded(seed));
    config.watch = false;
    config.drain_timeout = DEADLINE;
    Sidecar::start(config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_linkerd_route_splits_90_10_and_answers_404_elsewhere() {
    let api = Backend::start("api", "v0").await;
    let v1 = Backend::start("api-v1", "v1").await;
    let v2 = Backend::start("api-v2", "v2").await;
    let dir = ConfigDir::new();
    // The seed block exactly as written, plus the registry.
    dir.seed(&["08-httproute-traffic-splitting.yaml"]).write(
        "services.yaml",
        &[
            service("api", &api),
            service("api-v1", &v1),
            service("api-v2", &v2),
        ]
        .join("---\n"),
    );
    let sidecar = start(&dir, 42).await;
    let client = MeshClient::new(sidecar.outbound);

    let n = 2000;
    let seen = fan_out(&client, "api", "/api/v1/users", &[], n, 8).await;
    let (a, b) = (count(&seen, "api-v1"), count(&seen, "api-v2"));
    assert_eq!(a + b, n, "only the two backends answer: {:?}", &seen[..5]);
    assert_binomial(a, n, 0.9, "api-v1 share of /api/v1");
    assert_eq!(api.hits(), 0, "the parent Service itself is not a backend");

    // Every spelling of the host, with the Service's port.
    for host in [
        "api:8080",
        "api.production",
        "api.production.svc.cluster.local:8080",
    ] {
        let reply = client.get(host, "/api/v1").await;
        assert_eq!(reply.status, StatusCode::OK, "{host}");
        assert!(reply.backend().starts_with("api-v"), "{host}");
    }
    // Segment-aware prefix, and no rule: 404 NR.
    for path in ["/api/v1x", "/api", "/other"] {
        let reply = client.get("api", path).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(reply.flags(), "NR", "{path}");
    }
    sidecar.shutdown().await;
}

const STORE_ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: store, namespace: production}
spec:
  parentRefs:
  - {group: "", kind: Service, name: store, port: 8080}
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs:
    - {name: store-v1, port: 8080, weight: 90}
    - {name: store-v2, port: 8080, weight: 10}
  - matches: [{path: {type: Exact, value: /split/exact}}]
    backendRefs: [{name: store-v2, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /mixed}}]
    backendRefs:
    - {name: store-v1, port: 8080}
    - {name: store-gone, port: 8080}
  - matches: [{path: {type: PathPrefix, value: /cross}}]
    backendRefs: [{name: store-v1, namespace: elsewhere, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /headers}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: x-set, value: new}]
        add: [{name: x-add, value: extra}]
        remove: [x-remove]
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set: [{name: x-resp, value: edited}]
    backendRefs: [{name: store-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters:
    - type: URLRewrite
      urlRewrite:
        hostname: rewritten.example
        path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}
    backendRefs: [{name: store-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /strip}}]
    filters:
    - type: URLRewrite
      urlRewrite:
        path: {type: ReplacePrefixMatch, replacePrefixMatch: /}
    backendRefs: [{name: store-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /full}}]
    filters:
    - type: URLRewrite
      urlRewrite:
        path: {type: ReplaceFullPath, replaceFullPath: /replaced}
    backendRefs: [{name: store-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /secure}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, hostname: secure.example}
  - matches: [{path: {type: PathPrefix, value: /moved}}]
    filters:
    - type: RequestRedirect
      requestRedirect:
        port: 9443
        statusCode: 301
        path: {type: ReplacePrefixMatch, replacePrefixMatch: /here}
  - matches: [{path: {type: PathPrefix, value: /elsewhere}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {hostname: other.example}
  - matches: [{path: {type: PathPrefix, value: /mirror}}]
    filters:
    - type: RequestMirror
      requestMirror:
        backendRef: {name: shadow, port: 8080}
        percent: 100
    backendRefs: [{name: store-v1, port: 8080}]
  - matches: [{path: {type: Exact, value: /slow}}]
    timeouts: {request: 200ms}
    backendRefs: [{name: store-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /post}, method: POST}]
    backendRefs: [{name: store-v2, port: 8080}]
"#;

struct Store {
    v1: Backend,
    v2: Backend,
    shadow: Backend,
    sidecar: Sidecar,
    client: MeshClient,
    _dir: ConfigDir,
}

async fn store() -> Store {
    let v1 = Backend::start("store-v1", "v1").await;
    let v2 = Backend::start("store-v2", "v2").await;
    let shadow = Backend::start("shadow", "v0").await;
    let parent = Backend::start("store", "v0").await;
    let dir = ConfigDir::new();
    dir.write("route.yaml", STORE_ROUTE).write(
        "services.yaml",
        &[
            service("store", &parent),
            service("store-v1", &v1),
            service("store-v2", &v2),
            service("shadow", &shadow),
        ]
        .join("---\n"),
    );
    let sidecar = start(&dir, 7).await;
    let client = MeshClient::new(sidecar.outbound);
    Store {
        v1,
        v2,
        shadow,
        sidecar,
        client,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_api_route_on_a_service_splits_and_ranks_matches() {
    let s = store().await;
    let n = 1000;
    let seen = fan_out(&s.client, "store", "/split/anything", &[], n, 8).await;
    let v1 = count(&seen, "store-v1");
    assert_eq!(v1 + count(&seen, "store-v2"), n);
    assert_binomial(v1, n, 0.9, "store-v1 share");
    // Exact beats the `/` prefix; a method match beats the catch-all.
    for _ in 0..5 {
        assert_eq!(
            s.client.get("store", "/split/exact").await.backend(),
            "store-v2"
        );
    }
    let reply = s
        .client
        .send(support::request(
            "POST",
            "store",
            "/post/x",
            &[],
            support::empty(),
        ))
        .await
        .unwrap();
    assert_eq!(support::collect(reply).await.backend(), "store-v2");

    // The invalid backend keeps its share and answers 500 for it; a
    // cross-namespace reference without a ReferenceGrant is invalid.
    let n = 400;
    let seen = fan_out(&s.client, "store", "/mixed", &[], n, 4).await;
    let failed = seen.iter().filter(|r| r.starts_with("500")).count();
    assert_eq!(failed + count(&seen, "store-v1"), n, "{:?}", &seen[..4]);
    assert_binomial(failed, n, 0.5, "invalid backend share");
    let reply = s.client.get("store", "/cross").await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    // The route covers port 8080 only: another port is not governed by it.
    let reply = s.client.get("store:9999", "/split/exact").await;
    assert_ne!(reply.backend(), "store-v2");
    s.sidecar.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_edit_headers_rewrite_redirect_mirror_and_time_out() {
    let s = store().await;
    let c = &s.client;

    // Request and response header modifiers.
    let reply = c
        .get_with(
            "store",
            "/headers",
            &[("x-set", "old"), ("x-add", "old"), ("x-remove", "gone")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.received_header("x-set").as_deref(), Some("new"));
    assert_eq!(
        reply.received_header("x-add").as_deref(),
        Some("old, extra")
    );
    assert_eq!(reply.received_header("x-remove"), None);
    assert_eq!(reply.headers["x-resp"], "edited");

    // URLRewrite: prefix with segment semantics, host, full path, query kept.
    let reply = c.get("store", "/old/thing?q=1").await;
    assert_eq!(reply.json()["uri"], "/new/thing?q=1");
    assert_eq!(
        reply.received_header("host").as_deref(),
        Some("rewritten.example")
    );
    assert_eq!(c.get("store", "/old").await.json()["uri"], "/new");
    assert_eq!(c.get("store", "/strip/three").await.json()["uri"], "/three");
    assert_eq!(c.get("store", "/strip").await.json()["uri"], "/");
    assert_eq!(
        c.get("store", "/full/a/b?k=v").await.json()["uri"],
        "/replaced?k=v"
    );
    assert_eq!(s.v1.hits(), 6);

    // RequestRedirect: 302 by default; a scheme brings its own port
    // (omitted when default); an explicit port wins; else the listener's.
    let reply = c.get("store:8080", "/secure/x?y=1").await;
    assert_eq!(reply.status, StatusCode::FOUND);
    assert_eq!(
        reply.headers["location"],
        "https://secure.example/secure/x?y=1"
    );
    let reply = c.get("store:8080", "/moved/on").await;
    assert_eq!(reply.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(reply.headers["location"], "http://store:9443/here/on");
    let reply = c.get("store:8080", "/elsewhere").await;
    assert_eq!(
        reply.headers["location"],
        "http://other.example:8080/elsewhere"
    );
    let reply = c.get("store", "/elsewhere").await;
    assert_eq!(
        reply.headers["location"], "http://other.example/elsewhere",
        "port 80"
    );
    assert_eq!(
        s.v1.hits() + s.v2.hits(),
        6,
        "redirects never reach a backend"
    );

    // RequestMirror: the primary answers; the shadow gets its copy.
    let reply = c.get("store", "/mirror/m").await;
    assert_eq!(reply.backend(), "store-v1");
    eventually("the mirror copy", || async { s.shadow.hits() == 1 }).await;

    // timeouts.request: 504 UT when the backend does not answer in time.
    let reply = c.get("store", "/slow").await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(reply.flags(), "UT");
    s.v1.release();
    s.sidecar.shutdown().await;
}
