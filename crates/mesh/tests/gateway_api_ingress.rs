//! Gateway API Gateways served by the ingress gateway, end to end on
//! loopback: a `Gateway` of class `mesh` with an HTTP and an HTTPS listener
//! (`tls.mode: Terminate`, a `certificateRefs` Secret read from the
//! credentials folder and issued by a test CA), HTTPRoutes attached by
//! `sectionName` routing by path (Gateway API precedence: an Exact match
//! beats an earlier PathPrefix) and by host, a RequestRedirect to https on
//! the HTTP listener, 404 NR for hosts no attached route serves, and the
//! class and `--gateway` names deciding which Gateways a process serves.

#![allow(clippy::unwrap_used)]

mod gateway_kit;
mod support;

use gateway_kit::*;
use http::StatusCode;
use mesh::gateway::Gateway;
use support::*;

/// A Gateway `web` of class `mesh` (HTTP on 80, HTTPS on 443 for
/// `*.example.com`), a Gateway `foreign` of class `istio` on 8081, and the
/// routes attached to them.
const GATEWAYS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web}
spec:
  gatewayClassName: mesh
  listeners:
  - name: http
    port: 80
    protocol: HTTP
  - name: https
    port: 443
    protocol: HTTPS
    hostname: "*.example.com"
    tls:
      mode: Terminate
      certificateRefs: [{kind: Secret, name: web-cert}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: foreign}
spec:
  gatewayClassName: istio
  listeners:
  - {name: http, port: 8081, protocol: HTTP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api}
spec:
  parentRefs: [{name: web, sectionName: https}]
  hostnames: [api.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /v1}}]
    backendRefs: [{name: api-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /v2}}]
    backendRefs: [{name: api-v2, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: www}
spec:
  parentRefs: [{name: web, sectionName: http}]
  hostnames: [www.example.com]
  rules:
  - backendRefs: [{name: api-v1, port: 8080}]
  - matches: [{path: {type: Exact, value: /special}}]
    backendRefs: [{name: api-v2, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: to-https}
spec:
  parentRefs: [{name: web, port: 80}]
  hostnames: [api.example.com]
  rules:
  - filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, statusCode: 301}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: foreign-route}
spec:
  parentRefs: [{name: foreign}]
  rules:
  - backendRefs: [{name: api-v2, port: 8080}]
"#;

/// Two backends behind ServiceEntries, the Gateways and routes, and the
/// `web-cert` Secret for `*.example.com`.
async fn setup() -> (Backend, Backend, ConfigDir, TestCa, CredentialsDir, Issued) {
    let v1 = Backend::start("api-v1", "v1").await;
    let v2 = Backend::start("api-v2", "v2").await;
    let dir = ConfigDir::new();
    dir.write("10-gateways.yaml", GATEWAYS)
        .write(
            "50-api-v1.yaml",
            &service_entry("api-v1", "api-v1", 8080, "HTTP", &[v1.endpoint()]),
        )
        .write(
            "50-api-v2.yaml",
            &service_entry("api-v2", "api-v2", 8080, "HTTP", &[v2.endpoint()]),
        );
    let ca = TestCa::new();
    let creds = CredentialsDir::new();
    let cert = ca.issue(&["*.example.com"]);
    creds.put("web-cert", &cert);
    (v1, v2, dir, ca, creds, cert)
}

const PORTS: [u16; 3] = [80, 443, 8081];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_listeners_route_attached_httproutes() {
    let (v1, v2, dir, ca, creds, cert) = setup().await;
    let gateway = Gateway::start(gateway_config(&dir, &creds, &PORTS))
        .await
        .unwrap();
    assert!(gateway.credential_errors().is_empty());
    // The `istio` class Gateway belongs to another implementation.
    assert_eq!(gateway.addr(8081), None);
    let https = gateway.addr(443).unwrap();
    let ca = ca.der();

    // HTTPS: the listener's certificate, then the `api` route by path.
    let stream = handshake(https, &connector(&ca, &[b"http/1.1"]), "api.example.com")
        .await
        .unwrap();
    assert_eq!(served(&stream), cert.der);
    let reply = get(stream, "api.example.com", "/v1/users").await;
    assert_eq!((reply.status, reply.backend()), (StatusCode::OK, "api-v1"));
    assert_eq!(reply.json()["uri"], "/v1/users");
    assert_eq!(
        reply.received_header("x-forwarded-proto").as_deref(),
        Some("https")
    );
    let reply = https_get(
        https,
        &ca,
        "api.example.com",
        "api.example.com:443",
        "/v2/x",
    )
    .await;
    assert_eq!((reply.status, reply.backend()), (StatusCode::OK, "api-v2"));

    let before = v1.hits() + v2.hits();
    // An attached route whose rules do not match the path.
    let reply = https_get(https, &ca, "api.example.com", "api.example.com", "/v3").await;
    assert_eq!((reply.status, reply.flags()), (StatusCode::NOT_FOUND, "NR"));
    // The listener covers the host but no route attached to it serves it:
    // `www` is attached to the HTTP listener only (sectionName).
    let reply = https_get(https, &ca, "www.example.com", "www.example.com", "/").await;
    assert_eq!((reply.status, reply.flags()), (StatusCode::NOT_FOUND, "NR"));
    // A host outside the listener's hostname.
    let reply = https_get(https, &ca, "api.example.com", "api.example.org", "/v1/").await;
    assert_eq!((reply.status, reply.flags()), (StatusCode::NOT_FOUND, "NR"));
    assert_eq!(v1.hits() + v2.hits(), before);

    // HTTP: the `www` route, where the Exact match outranks the earlier
    // catch-all rule (SPEC 3.2).
    let plain = MeshClient::new(gateway.addr(80).unwrap());
    let reply = plain.get("www.example.com", "/anything").await;
    assert_eq!((reply.status, reply.backend()), (StatusCode::OK, "api-v1"));
    let reply = plain.get("www.example.com", "/special").await;
    assert_eq!((reply.status, reply.backend()), (StatusCode::OK, "api-v2"));
    // `to-https`, attached by port, redirects api.example.com.
    let reply = plain.get("api.example.com", "/v1/users?page=2").await;
    assert_eq!(reply.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        reply.headers["location"],
        "https://api.example.com/v1/users?page=2"
    );
    // No route attached to the HTTP listener serves this host.
    let before = v1.hits() + v2.hits();
    let reply = plain.get("unknown.example.com", "/").await;
    assert_eq!((reply.status, reply.flags()), (StatusCode::NOT_FOUND, "NR"));
    assert_eq!(v1.hits() + v2.hits(), before);
    assert!(gateway.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_class_and_gateway_names_choose_what_a_gateway_serves() {
    let (_v1, v2, dir, _ca, creds, _cert) = setup().await;

    // Class `istio`: only the foreign Gateway.
    let mut config = gateway_config(&dir, &creds, &PORTS);
    config.gateway_class = "istio".into();
    let gateway = Gateway::start(config).await.unwrap();
    assert_eq!((gateway.addr(80), gateway.addr(443)), (None, None));
    let reply = MeshClient::new(gateway.addr(8081).unwrap())
        .get("any.host", "/")
        .await;
    assert_eq!((reply.status, reply.backend()), (StatusCode::OK, "api-v2"));
    assert_eq!(v2.hits(), 1);
    assert!(gateway.shutdown().await);

    // Named: `default/foreign` is of another class, so nothing is served.
    let mut config = gateway_config(&dir, &creds, &PORTS);
    config.gateways = vec!["default/foreign".into()];
    let gateway = Gateway::start(config).await.unwrap();
    assert!(gateway.listeners.is_empty(), "{:?}", gateway.listeners);
    assert!(gateway.shutdown().await);

    // Istio's deployment label names `web` in the workload's namespace.
    let mut config = gateway_config(&dir, &creds, &PORTS);
    config.workload.labels.insert(
        "gateway.networking.k8s.io/gateway-name".into(),
        "web".into(),
    );
    let gateway = Gateway::start(config).await.unwrap();
    let ports: Vec<u16> = gateway.listeners.iter().map(|l| l.port).collect();
    assert_eq!(ports, [80, 443]);
    let reply = MeshClient::new(gateway.addr(80).unwrap())
        .get("www.example.com", "/")
        .await;
    assert_eq!((reply.status, reply.backend()), (StatusCode::OK, "api-v1"));
    assert!(gateway.shutdown().await);
}
