//! Every YAML block of the seed document loads, alone and all together; the
//! overlaps between blocks come out as warnings naming both places; every
//! resource round-trips through the `/config_dump` JSON form; the compiled
//! snapshot answers the lookups the data plane will make.

use std::path::{Path, PathBuf};

use mesh_core::diag::Severity;
use mesh_core::load::{LoadOptions, expand_path, load_paths};
use mesh_core::resource::{Kind, Spec};
use mesh_core::snapshot::Snapshot;

fn seed_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/seed")
}

fn load_all() -> mesh_core::load::Loaded {
    load_paths(&[seed_dir()], &LoadOptions::default())
}

#[test]
fn every_block_loads_alone_without_errors() {
    let files = expand_path(&seed_dir()).unwrap();
    assert_eq!(files.len(), 18, "one fixture per YAML block of the seed");
    for file in files {
        let loaded = load_paths(&[&file], &LoadOptions::default());
        assert!(
            !loaded.diagnostics.has_errors(),
            "{}:\n{}",
            file.display(),
            loaded.diagnostics
        );
        assert!(
            !loaded.resources.is_empty(),
            "{} loaded nothing",
            file.display()
        );
        assert_eq!(loaded.diagnostics.count(Severity::Note), 0);
    }
}

#[test]
fn all_blocks_load_together() {
    let loaded = load_all();
    assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
    // 27 documents; the PeerAuthentication `default` is written twice and
    // the second replaces the first.
    assert_eq!(loaded.resources.len(), 26);
    let count = |kind: Kind| loaded.resources.iter().filter(|r| r.kind == kind).count();
    assert_eq!(count(Kind::VirtualService), 8);
    assert_eq!(count(Kind::DestinationRule), 3);
    assert_eq!(count(Kind::Gateway), 1);
    assert_eq!(count(Kind::ServiceEntry), 2);
    assert_eq!(count(Kind::IstioOperator), 1);
    assert_eq!(count(Kind::Server), 1);
    assert_eq!(count(Kind::ServerAuthorization), 1);
    assert_eq!(count(Kind::LinkerdHttpRoute), 1);
    assert_eq!(count(Kind::ServiceProfile), 1);
    assert_eq!(count(Kind::PeerAuthentication), 2);
    assert_eq!(count(Kind::AuthorizationPolicy), 3);
    assert_eq!(count(Kind::Telemetry), 2);
}

#[test]
fn overlaps_are_warnings_with_both_locations() {
    let loaded = load_all();
    let text = loaded.diagnostics.to_string();
    let expect = |needle: &str| {
        assert!(
            loaded
                .diagnostics
                .iter()
                .any(|d| d.severity == Severity::Warning && d.to_string().contains(needle)),
            "missing warning containing {needle:?} in:\n{text}"
        );
    };
    // Two VirtualServices for `reviews`: the canary one is loaded first.
    expect(
        "06-fault-injection.yaml:7:5: warning: VirtualService/default/reviews-fault: spec.hosts[0]: host `reviews.default.svc.cluster.local` is also routed by VirtualService/default/reviews-vs at ",
    );
    expect("02-virtual-service-traffic-routing.yaml:2:1, which comes first and governs it");
    // Two for `webapp`, three for `api`.
    expect(
        "11-blue-green-deployment.yaml:8:5: warning: VirtualService/default/blue-green: spec.hosts[0]: host `webapp.default.svc.cluster.local` is also routed by VirtualService/default/ab-test at ",
    );
    expect(
        "17-retries.yaml:8:5: warning: VirtualService/default/api-retry: spec.hosts[0]: host `api.default.svc.cluster.local` is also routed by VirtualService/default/traffic-mirror at ",
    );
    expect(
        "18-timeouts.yaml:8:5: warning: VirtualService/default/api-timeout: spec.hosts[0]: host `api.default.svc.cluster.local` is also routed by VirtualService/default/traffic-mirror at ",
    );
    // The PeerAuthentication `default` written twice: the later one wins.
    expect(
        "13-istio-mtls-configuration.yaml:13:1: warning: PeerAuthentication/production/default: defined again; this definition replaces the one at ",
    );
    expect("13-istio-mtls-configuration.yaml:2:1");
    // The IstioOperator's install-only parts are reported as not applicable.
    expect("spec.components: install-only setting; not applicable to a sidecar (ignored)");
}

#[test]
fn every_resource_round_trips_through_config_dump_json() {
    let loaded = load_all();
    let mut kinds_seen = std::collections::BTreeSet::new();
    for r in &loaded.resources {
        let json = r.to_json();
        assert_eq!(json["kind"], r.kind.name());
        assert_eq!(json["apiVersion"], r.api_version);
        let text = serde_json::to_string(&json).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        let spec = Spec::from_json(r.kind, parsed["spec"].clone())
            .unwrap_or_else(|e| panic!("{}: {e}\n{text}", r.id()));
        assert_eq!(spec, r.spec, "{} changed in the round trip", r.id());
        kinds_seen.insert(r.kind.name());
    }
    assert_eq!(kinds_seen.len(), 12, "{kinds_seen:?}");
}

#[test]
fn the_snapshot_indexes_what_the_data_plane_looks_up() {
    let snapshot = Snapshot::compile(1, load_all());
    let index = &snapshot.index;
    let route = |authority: &str| {
        index
            .mesh_route(authority, "default")
            .map(|r| r.name().to_owned())
    };
    // The first VirtualService for a host governs it, whatever the spelling.
    assert_eq!(route("reviews").as_deref(), Some("reviews-vs"));
    assert_eq!(route("reviews.default:9080").as_deref(), Some("reviews-vs"));
    assert_eq!(
        route("reviews.default.svc.cluster.local").as_deref(),
        Some("reviews-vs")
    );
    assert_eq!(route("webapp").as_deref(), Some("ab-test"));
    assert_eq!(route("api").as_deref(), Some("traffic-mirror"));
    // A caller in another namespace means another service by `reviews`.
    assert_eq!(index.mesh_route("reviews", "production"), None);
    // api-vs is bound to the ingress gateway only.
    assert_eq!(route("api.example.com"), None);
    let bound = &index.gateway_routes["default/api-gateway"]["api.example.com"];
    assert_eq!(bound.len(), 1);
    assert_eq!(bound[0].name(), "api-vs");
    assert!(index.gateways.contains_key("default/api-gateway"));

    // DestinationRules for `reviews` and `webapp`, with their subsets.
    let reviews = &index.destinations["reviews.default.svc.cluster.local"];
    let mut subsets: Vec<&str> = reviews.subsets.keys().map(String::as_str).collect();
    subsets.sort_unstable();
    assert_eq!(subsets, ["v1", "v2"]);
    assert!(reviews.traffic_policy.is_some());
    let webapp = &index.destinations["webapp.default.svc.cluster.local"];
    assert_eq!(webapp.subsets["green"].labels["version"], "green");

    // ServiceEntries become services; the ServiceProfile is keyed by its FQDN.
    assert!(index.services.contains_key("api.external.com"));
    assert!(index.services.contains_key("postgres.rds.amazonaws.com"));
    assert!(
        index
            .service_profiles
            .contains_key("api.production.svc.cluster.local")
    );
    assert_eq!(index.xroutes.len(), 1);
    assert!(index.istio_operator().is_some());
    let production = &index.namespaces["production"];
    assert_eq!(production.peer_authentications.len(), 2);
    assert_eq!(production.authorization_policies.len(), 2);
    assert_eq!(production.linkerd_policies.len(), 2);

    // The dump carries generation and hash.
    let dump = snapshot.to_json();
    assert_eq!(dump["generation"], 1);
    assert_eq!(dump["contentHash"].as_str().unwrap().len(), 64);
    assert_eq!(dump["resources"].as_array().unwrap().len(), 26);
}

#[test]
fn hosts_subsets_and_endpoints_from_service_entries() {
    let yaml = r#"
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: { name: reviews, namespace: shop }
spec:
  hosts: [reviews]
  ports:
  - { number: 9080, name: http, protocol: HTTP }
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints:
  - { address: 127.0.0.1, ports: { http: 18080 }, labels: { version: v1 } }
  - { address: 127.0.0.2, labels: { version: v2 } }
  - { address: 127.0.0.3, labels: { version: v2 } }
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: { name: reviews, namespace: shop }
spec:
  host: reviews
  subsets:
  - { name: v1, labels: { version: v1 } }
  - { name: v2, labels: { version: v2 } }
"#;
    let loaded = mesh_core::load::load_str("se.yaml", yaml, &LoadOptions::default());
    assert!(loaded.diagnostics.0.is_empty(), "{}", loaded.diagnostics);
    let snapshot = Snapshot::compile(1, loaded);
    let index = &snapshot.index;
    let host = index.resolve_host("reviews:9080", "shop");
    assert_eq!(host, "reviews.shop.svc.cluster.local");
    assert_eq!(index.endpoints(&host, None).unwrap().len(), 3);
    let v2 = index.endpoints(&host, Some("v2")).unwrap();
    assert_eq!(v2.len(), 2);
    assert!(v2.iter().all(|e| e.labels["version"] == "v2"));
    assert!(index.endpoints(&host, Some("v3")).is_none());
    let service = &index.services[&host];
    let v1 = &index.endpoints(&host, Some("v1")).unwrap()[0];
    assert_eq!(v1.port_for(&service.ports[0]), 18080);
    assert_eq!(v2[0].port_for(&service.ports[0]), 9080);
}

#[test]
fn wildcard_hosts_route_after_exact_ones() {
    let yaml = r#"
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: { name: wild }
spec:
  hosts: ["*.example.com"]
  http:
  - route:
    - destination: { host: backend }
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: { name: exact }
spec:
  hosts: [api.example.com]
  http:
  - route:
    - destination: { host: backend }
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: { name: everything }
spec:
  hosts: ["*"]
  http:
  - route:
    - destination: { host: backend }
"#;
    let loaded = mesh_core::load::load_str("w.yaml", yaml, &LoadOptions::default());
    assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
    let snapshot = Snapshot::compile(1, loaded);
    let route = |authority: &str| {
        snapshot
            .index
            .mesh_route(authority, "default")
            .map(|r| r.name().to_owned())
    };
    assert_eq!(route("api.example.com:443").as_deref(), Some("exact"));
    assert_eq!(route("www.example.com").as_deref(), Some("wild"));
    assert_eq!(route("a.b.Example.com").as_deref(), Some("wild"));
    // `*.example.com` does not cover `example.com`; the bare `*` does.
    assert_eq!(route("example.com").as_deref(), Some("everything"));
    assert_eq!(route("reviews").as_deref(), Some("everything"));
}
