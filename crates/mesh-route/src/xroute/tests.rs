//! Unit tests of attachment, precedence, backends and filters, from YAML.

use std::collections::BTreeMap;

use http::{HeaderMap, HeaderName, Method, Uri};
use mesh_core::load::{LoadOptions, load_str};
use mesh_core::snapshot::Snapshot;

use super::*;
use crate::random::SplitMix;

/// ServiceEntries for every host the tests route to, in `prod`.
const REGISTRY: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: registry, namespace: prod}
spec:
  hosts: [api, a, b, c, d, e, f, g, shadow]
  ports: [{number: 8080, name: http, protocol: HTTP}, {number: 9090, name: admin, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: other, namespace: other}
spec:
  hosts: [remote]
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
"#;

fn table(yaml: &str) -> XRouteTable {
    let text = format!("{REGISTRY}\n---\n{yaml}");
    let loaded = load_str("t.yaml", &text, &LoadOptions::default());
    assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
    let table = XRouteTable::compile(&Snapshot::compile(1, loaded));
    assert!(table.errors.is_empty(), "{:?}", table.errors);
    table
}

struct Req {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    authority: String,
    namespace: String,
    port: Option<u16>,
}

fn req(method: &str, target: &str) -> Req {
    Req {
        method: method.parse().unwrap(),
        uri: target.parse().unwrap(),
        headers: HeaderMap::new(),
        authority: "api".into(),
        namespace: "prod".into(),
        port: None,
    }
}

impl Req {
    fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
        self
    }

    fn caller_ns(mut self, ns: &str) -> Req {
        self.namespace = ns.into();
        self
    }

    fn port(mut self, port: u16) -> Req {
        self.port = Some(port);
        self
    }

    fn host(mut self, authority: &str) -> Req {
        self.authority = authority.into();
        self
    }

    fn view<'a>(&'a self, labels: &'a BTreeMap<String, String>) -> RequestView<'a> {
        RequestView {
            method: &self.method,
            uri: &self.uri,
            headers: &self.headers,
            authority: &self.authority,
            scheme: "http",
            port: self.port,
            gateway: "mesh",
            source_namespace: &self.namespace,
            source_labels: labels,
        }
    }

    fn decide(&self, table: &XRouteTable, seed: u64) -> Option<RouteDecision> {
        let labels = BTreeMap::new();
        table.decide_mesh(&self.view(&labels), &SplitMix::seeded(seed))
    }
}

/// The short name of the chosen backend, or the local reply's status.
fn outcome(d: Option<RouteDecision>) -> String {
    match d.map(|d| d.action) {
        None => "ungoverned".into(),
        Some(RouteAction::Forward(f)) => f.destination.host.split('.').next().unwrap().to_owned(),
        Some(RouteAction::NoRoute) => "404".into(),
        Some(RouteAction::DirectResponse { status, .. }) => status.as_u16().to_string(),
        Some(RouteAction::Redirect { status, location }) => {
            format!("{} {}", status.as_u16(), location.to_str().unwrap())
        }
    }
}

fn route(name: &str, meta: &str, rules: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: prod{meta}}}\n\
         spec:\n  parentRefs: [{{name: api, kind: Service, group: \"\"}}]\n  rules:\n{rules}\n---\n"
    )
}

#[test]
fn exact_beats_prefix_and_longer_prefix_beats_shorter_whatever_the_order() {
    let t = table(&route(
        "r",
        "",
        "  - matches: [{path: {value: /}}]\n    backendRefs: [{name: a, port: 8080}]\n\
         \x20 - matches: [{path: {value: /v2}}]\n    backendRefs: [{name: b, port: 8080}]\n\
         \x20 - matches: [{path: {value: /v2/x}}]\n    backendRefs: [{name: c, port: 8080}]\n\
         \x20 - matches: [{path: {type: Exact, value: /v2/x}}]\n    backendRefs: [{name: d, port: 8080}]\n",
    ));
    assert_eq!(outcome(req("GET", "/v2/x").decide(&t, 1)), "d");
    assert_eq!(outcome(req("GET", "/v2/x/y").decide(&t, 1)), "c");
    assert_eq!(outcome(req("GET", "/v2/xy").decide(&t, 1)), "b");
    assert_eq!(outcome(req("GET", "/v2").decide(&t, 1)), "b");
    assert_eq!(outcome(req("GET", "/v2example").decide(&t, 1)), "a");
}

#[test]
fn method_then_header_count_then_query_count() {
    let t = table(&route(
        "r",
        "",
        "  - matches: [{path: {value: /p}, queryParams: [{name: q1, value: \"1\"}, {name: q2, value: \"2\"}]}]\n    backendRefs: [{name: a, port: 8080}]\n\
         \x20 - matches: [{path: {value: /p}, headers: [{name: version, value: two}]}]\n    backendRefs: [{name: b, port: 8080}]\n\
         \x20 - matches: [{path: {value: /p}, headers: [{name: version, value: two}, {name: color, value: orange}]}]\n    backendRefs: [{name: c, port: 8080}]\n\
         \x20 - matches: [{path: {value: /p}, method: POST}]\n    backendRefs: [{name: d, port: 8080}]\n\
         \x20 - matches: [{path: {value: /p}, queryParams: [{name: q1, value: \"1\"}]}]\n    backendRefs: [{name: e, port: 8080}]\n",
    ));
    let full = || {
        req("POST", "/p?q1=1&q2=2")
            .header("version", "two")
            .header("color", "orange")
    };
    assert_eq!(outcome(full().decide(&t, 1)), "d", "method beats headers");
    let get = |target: &str| req("GET", target).header("version", "two");
    assert_eq!(
        outcome(get("/p?q1=1&q2=2").header("color", "orange").decide(&t, 1)),
        "c",
        "two headers beat one"
    );
    assert_eq!(
        outcome(get("/p?q1=1&q2=2").decide(&t, 1)),
        "b",
        "headers beat queries"
    );
    assert_eq!(
        outcome(req("GET", "/p?q1=1&q2=2").decide(&t, 1)),
        "a",
        "two queries beat one"
    );
    assert_eq!(outcome(req("GET", "/p?q1=1").decide(&t, 1)), "e");
    assert_eq!(outcome(req("GET", "/p").decide(&t, 1)), "404");
    assert_eq!(outcome(req("GET", "/").decide(&t, 1)), "404");
}

#[test]
fn ties_go_to_the_oldest_route_then_the_name() {
    let same = "  - matches: [{path: {value: /x}}]\n    backendRefs: [{name: NAME, port: 8080}]\n";
    // Creation time first, whatever the name and load order.
    let t = table(&format!(
        "{}{}",
        route(
            "a-new",
            ", creationTimestamp: \"2024-05-01T00:00:00Z\"",
            &same.replace("NAME", "a")
        ),
        route(
            "z-old",
            ", creationTimestamp: \"2023-01-01T00:00:00Z\"",
            &same.replace("NAME", "b")
        ),
    ));
    assert_eq!(outcome(req("GET", "/x").decide(&t, 1)), "b");
    // Without times: namespace/name alphabetical, whatever the load order.
    let t = table(&format!(
        "{}{}",
        route("zeta", "", &same.replace("NAME", "a")),
        route("alpha", "", &same.replace("NAME", "b")),
    ));
    assert_eq!(outcome(req("GET", "/x").decide(&t, 1)), "b");
    // A more specific match in the newer route still wins.
    let t = table(&format!(
        "{}{}",
        route(
            "old",
            ", creationTimestamp: \"2020-01-01T00:00:00Z\"",
            &same.replace("NAME", "a")
        ),
        route(
            "new",
            ", creationTimestamp: \"2024-01-01T00:00:00Z\"",
            "  - matches: [{path: {value: /x/y}}]\n    backendRefs: [{name: b, port: 8080}]\n"
        ),
    ));
    assert_eq!(outcome(req("GET", "/x/y").decide(&t, 1)), "b");
    assert_eq!(outcome(req("GET", "/x/z").decide(&t, 1)), "a");
    // Within a route, the first rule.
    let t = table(&route(
        "r",
        "",
        "  - matches: [{path: {value: /x}}]\n    backendRefs: [{name: a, port: 8080}]\n\
         \x20 - matches: [{path: {value: /x}}]\n    backendRefs: [{name: b, port: 8080}]\n",
    ));
    assert_eq!(outcome(req("GET", "/x").decide(&t, 1)), "a");
}

#[test]
fn weights_split_per_request_and_weight_zero_never_wins() {
    let t = table(&route(
        "r",
        "",
        "  - backendRefs:\n    - {name: a, port: 8080, weight: 90}\n    - {name: b, port: 8080, weight: 10}\n    - {name: c, port: 8080, weight: 0}\n",
    ));
    let random = SplitMix::seeded(7);
    let labels = BTreeMap::new();
    let r = req("GET", "/anything");
    let n = 4000;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..n {
        let d = t.decide_mesh(&r.view(&labels), &random);
        *counts.entry(outcome(d)).or_default() += 1;
    }
    let a = counts.get("a").copied().unwrap_or(0) as f64;
    let sigma = (n as f64 * 0.9 * 0.1).sqrt();
    assert!((a - 0.9 * n as f64).abs() <= 5.0 * sigma, "{counts:?}");
    assert_eq!(counts.get("c"), None, "{counts:?}");
    assert_eq!(counts.values().sum::<usize>(), n);
}

#[test]
fn invalid_backends_answer_500_for_their_share() {
    let t = table(&format!(
        "{}{}{}",
        route(
            "r",
            "",
            "  - matches: [{path: {value: /missing}}]\n    backendRefs: [{name: nope, port: 8080}]\n\
             \x20 - matches: [{path: {value: /kind}}]\n    backendRefs: [{name: a, port: 8080, group: example.com, kind: Bucket}]\n\
             \x20 - matches: [{path: {value: /cross}}]\n    backendRefs: [{name: remote, namespace: other, port: 8080}]\n\
             \x20 - matches: [{path: {value: /none}}]\n\
             \x20 - matches: [{path: {value: /zero}}]\n    backendRefs: [{name: a, port: 8080, weight: 0}]\n\
             \x20 - matches: [{path: {value: /mixed}}]\n    backendRefs: [{name: a, port: 8080}, {name: nope, port: 8080}]\n",
        ),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: granted, namespace: web}\n\
         spec:\n  parentRefs: [{name: b, namespace: prod, kind: Service}]\n  rules:\n  - backendRefs: [{name: remote, namespace: other, port: 8080}]\n---\n",
        "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: g, namespace: other}\n\
         spec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: web}]\n  to: [{group: \"\", kind: Service, name: remote}]\n",
    ));
    for path in ["/missing", "/kind", "/cross", "/none", "/zero"] {
        assert_eq!(outcome(req("GET", path).decide(&t, 1)), "500", "{path}");
    }
    let mut seen = BTreeMap::<String, usize>::new();
    let labels = BTreeMap::new();
    let random = SplitMix::seeded(3);
    let r = req("GET", "/mixed");
    for _ in 0..200 {
        *seen
            .entry(outcome(t.decide_mesh(&r.view(&labels), &random)))
            .or_default() += 1;
    }
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["500", "a"], "{seen:?}");
    // A ReferenceGrant in the target namespace makes the reference valid.
    assert_eq!(
        outcome(
            req("GET", "/")
                .host("b.prod")
                .caller_ns("web")
                .decide(&t, 1)
        ),
        "remote"
    );
}

#[test]
fn consumer_routes_replace_producer_routes_for_their_namespace_only() {
    let t = table(&format!(
        "{}{}",
        route("producer", "", "  - backendRefs: [{name: a, port: 8080}]\n"),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: consumer, namespace: web}\n\
         spec:\n  parentRefs: [{name: api, namespace: prod, kind: Service, group: \"\", port: 8080}]\n  rules:\n\
         \x20 - backendRefs: [{name: c, namespace: prod, port: 8080}]\n---\n\
         apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: g, namespace: prod}\n\
         spec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: web}]\n  to: [{group: \"\", kind: Service}]\n",
    ));
    let any_spelling = |r: Req| r.host("api.prod.svc.cluster.local:8080");
    assert_eq!(
        outcome(any_spelling(req("GET", "/").caller_ns("prod")).decide(&t, 1)),
        "a"
    );
    assert_eq!(
        outcome(any_spelling(req("GET", "/").caller_ns("web")).decide(&t, 1)),
        "c"
    );
    assert_eq!(
        outcome(
            req("GET", "/")
                .host("api.prod")
                .caller_ns("web")
                .decide(&t, 1)
        ),
        "c",
        "default port 8080"
    );
    // The consumer route covers port 8080 only; 9090 falls back to the producer.
    assert_eq!(
        outcome(
            req("GET", "/")
                .host("api.prod")
                .caller_ns("web")
                .port(9090)
                .decide(&t, 1)
        ),
        "a"
    );
    assert_eq!(
        outcome(
            req("GET", "/")
                .caller_ns("elsewhere")
                .host("api.prod")
                .decide(&t, 1)
        ),
        "a"
    );
    // Traffic to an IP or to another Service is not governed.
    assert_eq!(
        outcome(req("GET", "/").host("127.0.0.1:8080").decide(&t, 1)),
        "ungoverned"
    );
    assert_eq!(
        outcome(req("GET", "/").host("d").decide(&t, 1)),
        "ungoverned"
    );
}

#[test]
fn parent_port_restricts_the_route() {
    let t = table(
        "apiVersion: policy.linkerd.io/v1beta3\nkind: HTTPRoute\nmetadata: {name: r, namespace: prod}\n\
         spec:\n  parentRefs: [{name: api, kind: Service, sectionName: admin}]\n  rules:\n  - backendRefs: [{name: b, port: 9090}]\n",
    );
    assert_eq!(outcome(req("GET", "/").port(9090).decide(&t, 1)), "b");
    assert_eq!(
        outcome(req("GET", "/").port(8080).decide(&t, 1)),
        "ungoverned"
    );
    assert_eq!(
        outcome(req("GET", "/").decide(&t, 1)),
        "ungoverned",
        "default port is 8080"
    );
}

#[test]
fn filters_reach_the_decision() {
    let t = table(&route(
        "r",
        "",
        "  - matches: [{path: {value: /old}}]\n    filters:\n    - type: URLRewrite\n      urlRewrite: {hostname: new.example, path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}\n\
         \x20   - type: RequestHeaderModifier\n      requestHeaderModifier: {add: [{name: x-added, value: yes}]}\n\
         \x20   - type: ResponseHeaderModifier\n      responseHeaderModifier: {set: [{name: x-resp, value: \"1\"}]}\n\
         \x20   - type: RequestMirror\n      requestMirror: {backendRef: {name: shadow, port: 8080}, percent: 25}\n\
         \x20   backendRefs: [{name: a, port: 8080}]\n\
         \x20 - matches: [{path: {value: /go}}]\n    filters:\n    - type: RequestRedirect\n      requestRedirect: {scheme: https, path: {type: ReplaceFullPath, replaceFullPath: /gone}}\n\
         \x20 - matches: [{path: {value: /ext}}]\n    filters:\n    - type: ExtensionRef\n      extensionRef: {group: example.com, kind: Thing, name: t}\n    backendRefs: [{name: a, port: 8080}]\n",
    ));
    let d = req("GET", "/old/items?x=1").decide(&t, 1).unwrap();
    let RouteAction::Forward(f) = &d.action else {
        panic!("{d:?}")
    };
    let rewrite = d.policy.rewrite.as_ref().unwrap();
    assert_eq!(
        rewrite.apply(
            f.matched_prefix.as_deref(),
            &"/old/items?x=1".parse().unwrap()
        ),
        "/items?x=1"
    );
    assert_eq!(rewrite.authority.as_ref().unwrap(), "new.example");
    let d_root = req("GET", "/old").decide(&t, 1).unwrap();
    let RouteAction::Forward(f_root) = &d_root.action else {
        panic!()
    };
    assert_eq!(
        rewrite.apply(f_root.matched_prefix.as_deref(), &"/old".parse().unwrap()),
        "/"
    );
    assert_eq!(f.request_headers.add.len(), 1);
    assert_eq!(f.response_headers.set.len(), 1);
    assert_eq!(d.policy.mirrors.len(), 1);
    assert_eq!(
        &*d.policy.mirrors[0].destination.host,
        "shadow.prod.svc.cluster.local"
    );
    assert_eq!(d.route.rule_index, Some(0));
    assert_eq!(&*d.route.resource, "HTTPRoute/prod/r");
    // No retry stanza: explicitly no retries.
    assert_eq!(d.policy.retries.as_ref().unwrap().attempts, 0);

    assert_eq!(
        outcome(req("GET", "/go/x?y=2").decide(&t, 1)),
        "302 https://api/gone?y=2"
    );
    assert_eq!(outcome(req("GET", "/ext").decide(&t, 1)), "500");
}

#[test]
fn gateway_listeners_hostnames_and_precedence() {
    let t = table(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: prod}
spec:
  gatewayClassName: mesh
  listeners:
  - {name: web, port: 80, protocol: HTTP, hostname: "*.example.com", allowedRoutes: {namespaces: {from: All}}}
  - {name: plain, port: 8080, protocol: HTTP}
  - {name: tcp, port: 5432, protocol: TCP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: wild, namespace: prod}
spec:
  parentRefs: [{name: gw}]
  hostnames: ["*.example.com"]
  rules:
  - matches: [{path: {type: PathPrefix, value: /long/prefix}}]
    backendRefs: [{name: a, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: exact, namespace: prod}
spec:
  parentRefs: [{name: gw, sectionName: web}]
  hostnames: [foo.example.com, unrelated.org]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: b, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: other-ns, namespace: other}
spec:
  parentRefs: [{name: gw, namespace: prod, port: 8080}]
  rules:
  - backendRefs: [{name: remote, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: none, namespace: prod}
spec:
  parentRefs: [{name: gw, sectionName: web}]
  hostnames: [elsewhere.org]
  rules:
  - backendRefs: [{name: c, port: 8080}]
"#,
    );
    let labels = BTreeMap::new();
    let decide = |port: u16, host: &str, target: &str| -> String {
        let r = req("GET", target).host(host).port(port);
        match t.for_gateway("prod", "gw", port, &r.authority) {
            None => "none".into(),
            Some(routes) => {
                let mut v = r.view(&labels);
                v.gateway = "prod/gw";
                outcome(Some(routes.decide(&v, &SplitMix::seeded(1))))
            }
        }
    };
    // The exact hostname's route wins over a longer path of the wildcard one.
    assert_eq!(decide(80, "foo.example.com", "/long/prefix/x"), "b");
    assert_eq!(decide(80, "Foo.Example.com:80", "/"), "b");
    assert_eq!(decide(80, "bar.example.com", "/long/prefix/x"), "a");
    assert_eq!(decide(80, "bar.example.com", "/short"), "404");
    // Outside the listener hostname, or on a port without HTTP listeners.
    assert_eq!(decide(80, "example.com", "/"), "none");
    assert_eq!(decide(80, "unrelated.org", "/"), "none");
    assert_eq!(decide(80, "elsewhere.org", "/"), "none");
    assert_eq!(decide(5432, "foo.example.com", "/"), "none");
    // The 8080 listener allows only its own namespace by default.
    assert_eq!(decide(8080, "anything", "/"), "none");
    assert!(
        t.for_gateway_listener("prod", "gw", "web", "x.example.com")
            .is_some()
    );
    assert!(
        t.for_gateway("prod", "missing", 80, "x.example.com")
            .is_none()
    );
    // Gateway parents do not govern mesh traffic.
    assert_eq!(
        outcome(req("GET", "/").host("foo.example.com").decide(&t, 1)),
        "ungoverned"
    );
}

#[test]
fn the_seed_linkerd_route_splits_90_10_on_api_v1() {
    let seed = include_str!("../../../../fixtures/seed/08-httproute-traffic-splitting.yaml");
    let registry = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: api, namespace: production}\n\
                    spec:\n  hosts: [api, api-v1, api-v2]\n  ports: [{number: 8080, name: http, protocol: HTTP}]\n  resolution: STATIC\n  endpoints: [{address: 127.0.0.1}]\n---\n";
    let loaded = load_str(
        "seed.yaml",
        &format!("{registry}{seed}"),
        &LoadOptions::default(),
    );
    assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
    let t = XRouteTable::compile(&Snapshot::compile(1, loaded));
    assert!(t.errors.is_empty(), "{:?}", t.errors);
    assert!(t.governs("api.production.svc.cluster.local"));
    let labels = BTreeMap::new();
    let random = SplitMix::seeded(11);
    let r = req("GET", "/api/v1/users").caller_ns("production");
    let n = 2000;
    let v1 = (0..n)
        .filter(|_| outcome(t.decide_mesh(&r.view(&labels), &random)) == "api-v1")
        .count();
    let sigma = (n as f64 * 0.9 * 0.1).sqrt();
    assert!(
        (v1 as f64 - 0.9 * n as f64).abs() <= 5.0 * sigma,
        "{v1} of {n}"
    );
    assert_eq!(
        outcome(req("GET", "/api/v1x").caller_ns("production").decide(&t, 1)),
        "404"
    );
    assert_eq!(
        outcome(req("GET", "/other").caller_ns("production").decide(&t, 1)),
        "404"
    );
    let d = req("GET", "/api/v1")
        .caller_ns("production")
        .decide(&t, 1)
        .unwrap();
    let RouteAction::Forward(f) = d.action else {
        panic!()
    };
    assert_eq!(f.destination.port, Some(8080));
}

#[test]
fn a_service_profile_keeps_httproutes_off_its_service() {
    let route = include_str!("../../../../fixtures/seed/08-httproute-traffic-splitting.yaml");
    let profile =
        include_str!("../../../../fixtures/seed/09-service-profile-retries-timeouts.yaml");
    let loaded = load_str(
        "seed.yaml",
        &format!("{route}---\n{profile}"),
        &LoadOptions::default(),
    );
    let t = XRouteTable::compile(&Snapshot::compile(1, loaded));
    assert!(!t.governs("api.production.svc.cluster.local"));
    assert_eq!(t.errors.len(), 1, "{:?}", t.errors);
    assert!(
        t.errors[0].message.contains("ServiceProfile/production/"),
        "{:?}",
        t.errors
    );
    let r = req("GET", "/api/v1").caller_ns("production");
    assert_eq!(outcome(r.decide(&t, 1)), "ungoverned");
}

#[test]
fn linkerd_annotations_on_the_route_set_timeouts_and_retries() {
    let t = table(
        "apiVersion: policy.linkerd.io/v1beta3\nkind: HTTPRoute\nmetadata:\n  name: r\n  namespace: prod\n  annotations:\n\
         \x20   retry.linkerd.io/http: 5xx\n    retry.linkerd.io/limit: \"2\"\n    timeout.linkerd.io/request: 3s\n\
         spec:\n  parentRefs: [{name: api, kind: Service}]\n  rules:\n  - timeouts: {request: 10s}\n    backendRefs: [{name: a, port: 8080}]\n",
    );
    let d = req("GET", "/").decide(&t, 1).unwrap();
    assert_eq!(d.policy.timeout, Some(std::time::Duration::from_secs(3)));
    let r = d.policy.retries.as_ref().unwrap();
    assert_eq!(r.attempts, 2);
    assert!(r.has(crate::decision::RetryOn::FiveXx));
}
