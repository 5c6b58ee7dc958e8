#![allow(clippy::unwrap_used)]
//! Istio and Gateway API / Linkerd dialects side by side: when a sidecar
//! VirtualService and an HTTPRoute attached to a Service name the same host,
//! the HTTPRoute governs and validation warns at the VirtualService with the
//! HTTPRoute's location.

use mesh_core::load::{LoadOptions, load_str};

const VS: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api-vs, namespace: production}
spec:
  hosts: [other, api]
  http:
  - route:
    - destination: {host: api}
";

/// Defines the VirtualService's destination, so only the conflict is left.
const REGISTRY: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: production}
spec:
  hosts: [api]
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
";

/// The diagnostics of `yaml` followed by [`REGISTRY`].
fn diagnostics(yaml: &str) -> Vec<String> {
    let text = format!("{yaml}---\n{REGISTRY}");
    let loaded = load_str("f.yaml", &text, &LoadOptions::default());
    loaded
        .diagnostics
        .to_string()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_virtual_service_and_the_seed_linkerd_route_for_one_host_are_reported() {
    let seed = include_str!("../../../fixtures/seed/08-httproute-traffic-splitting.yaml");
    let got = diagnostics(&format!("{VS}---\n{seed}"));
    assert_eq!(
        got,
        [
            "f.yaml:5:18: warning: VirtualService/production/api-vs: spec.hosts[1]: host `api.production.svc.cluster.local` is also routed by HTTPRoute/production/api-route at f.yaml:17:5 (parentRefs[0] names its Service), which governs it: Gateway API routes attached to a Service win over VirtualServices, so this VirtualService is ignored for that host"
        ],
        "\n{}",
        got.join("\n")
    );
}

#[test]
fn a_consumer_route_is_reported_for_its_namespace() {
    let route = "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web-view, namespace: web}
spec:
  parentRefs:
  - {name: api, namespace: production, kind: Service, group: \"\", port: 8080}
  rules:
  - backendRefs: [{name: api, namespace: production, port: 8080}]
";
    let got = diagnostics(&format!("{VS}---\n{route}"));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with("f.yaml:5:18: warning: VirtualService/production/api-vs: spec.hosts[1]: host `api.production.svc.cluster.local` is also routed by HTTPRoute/web/web-view at f.yaml:15:5"),
        "{}",
        got[0]
    );
    assert!(
        got[0].contains("for callers in namespace `web`"),
        "{}",
        got[0]
    );
}

#[test]
fn different_hosts_gateway_parents_and_gateway_bound_services_are_quiet() {
    let gateway_route = "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: edge, namespace: production}
spec:
  parentRefs: [{name: api}]
  rules:
  - backendRefs: [{name: api, port: 8080}]
";
    assert_eq!(
        diagnostics(&format!("{VS}---\n{gateway_route}")),
        Vec::<String>::new()
    );
    let elsewhere = include_str!("../../../fixtures/seed/08-httproute-traffic-splitting.yaml")
        .replace("namespace: production", "namespace: staging");
    assert_eq!(
        diagnostics(&format!("{VS}---\n{elsewhere}")),
        Vec::<String>::new()
    );
    let bound = VS.replace("  http:", "  gateways: [edge]\n  http:");
    let seed = include_str!("../../../fixtures/seed/08-httproute-traffic-splitting.yaml");
    let got = diagnostics(&format!("{bound}---\n{seed}"));
    assert!(
        got.iter().all(|l| !l.contains("also routed by HTTPRoute")),
        "{got:?}"
    );
}

#[test]
fn a_service_profile_wins_over_the_httproute_and_is_reported() {
    let seeds = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/seed/");
    let route =
        std::fs::read_to_string(format!("{seeds}08-httproute-traffic-splitting.yaml")).unwrap();
    let profile =
        std::fs::read_to_string(format!("{seeds}09-service-profile-retries-timeouts.yaml"))
            .unwrap();
    let got = diagnostics(&format!("{VS}---\n{route}---\n{profile}"));
    assert_eq!(
        got,
        [
            "f.yaml:17:5: warning: HTTPRoute/production/api-route: spec.parentRefs[0]: Service `api.production.svc.cluster.local` has ServiceProfile ServiceProfile/production/api.production.svc.cluster.local at f.yaml:31:1, which takes precedence over HTTPRoutes (as in Linkerd); this route is not attached to it"
        ],
        "\n{}",
        got.join("\n")
    );
}
