//! VirtualService HTTP routing: the seed examples, every match feature of
//! SPEC 4.2, weights (4.3), rewrites, header edits and redirects (4.4), and
//! the compiled policies (4.5, 4.6).

// Helpers outside `#[test]` functions unwrap test fixtures too.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use mesh_core::load::{LoadOptions, load_paths, load_str};
use mesh_core::resource::{Resource, Spec};
use mesh_core::schema::istio_networking::{HeaderOperations, Headers, HttpRoute};
use mesh_route::decision::{
    AbortStatus, DestinationKey, Forward, RetryOn, RetrySpec, RouteAction, RouteDecision,
};
use mesh_route::matcher::{CompiledVirtualService, RequestView};
use mesh_route::random::SplitMix;

// ---------------------------------------------------------------- helpers

/// An owned request; `view()` borrows it as the router sees it.
#[derive(Clone)]
struct Req {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    authority: String,
    scheme: String,
    port: Option<u16>,
    gateway: String,
    namespace: String,
    labels: BTreeMap<String, String>,
}

impl Req {
    fn get(uri: &str) -> Req {
        Req {
            method: Method::GET,
            uri: uri.parse().unwrap(),
            headers: HeaderMap::new(),
            authority: "svc".into(),
            scheme: "http".into(),
            port: Some(80),
            gateway: "mesh".into(),
            namespace: "prod".into(),
            labels: BTreeMap::new(),
        }
    }
    fn header(mut self, k: &str, v: &str) -> Req {
        self.headers.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
        self
    }
    fn method(mut self, m: Method) -> Req {
        self.method = m;
        self
    }
    fn authority(mut self, a: &str) -> Req {
        self.authority = a.into();
        self
    }
    fn scheme(mut self, s: &str) -> Req {
        self.scheme = s.into();
        self
    }
    fn port(mut self, p: Option<u16>) -> Req {
        self.port = p;
        self
    }
    fn gateway(mut self, g: &str) -> Req {
        self.gateway = g.into();
        self
    }
    fn namespace(mut self, n: &str) -> Req {
        self.namespace = n.into();
        self
    }
    fn label(mut self, k: &str, v: &str) -> Req {
        self.labels.insert(k.into(), v.into());
        self
    }
    fn view(&self) -> RequestView<'_> {
        RequestView {
            method: &self.method,
            uri: &self.uri,
            headers: &self.headers,
            authority: &self.authority,
            scheme: &self.scheme,
            port: self.port,
            gateway: &self.gateway,
            source_namespace: &self.namespace,
            source_labels: &self.labels,
        }
    }
}

fn load_text(yaml: &str) -> Vec<Resource> {
    let loaded = load_str("test.yaml", yaml, &LoadOptions::default());
    assert!(
        !loaded.diagnostics.has_errors(),
        "{:?}",
        loaded.diagnostics.iter().collect::<Vec<_>>()
    );
    loaded.resources
}

/// A VirtualService `t` in namespace `prod` for host `svc` with `spec` as
/// the body of its spec (YAML, indented by two spaces).
fn vs_resource(spec: &str) -> Resource {
    let yaml = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: t\n  namespace: prod\nspec:\n  hosts: [svc]\n{spec}"
    );
    let mut rs = load_text(&yaml);
    assert_eq!(rs.len(), 1);
    rs.remove(0)
}

fn vs(spec: &str) -> CompiledVirtualService {
    CompiledVirtualService::compile(&vs_resource(spec)).unwrap()
}

fn seed(file: &str, name: &str) -> CompiledVirtualService {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/seed")
        .join(file);
    let loaded = load_paths(&[path], &LoadOptions::default());
    assert!(!loaded.diagnostics.has_errors());
    let r = loaded
        .resources
        .iter()
        .find(|r| matches!(r.spec, Spec::VirtualService(_)) && r.name() == name)
        .unwrap_or_else(|| panic!("{name} not in {file}"));
    CompiledVirtualService::compile(r).unwrap()
}

fn route(vs: &CompiledVirtualService, req: &Req) -> RouteDecision {
    vs.route(&req.view(), &SplitMix::seeded(7))
}

fn forward(d: &RouteDecision) -> &Forward {
    match &d.action {
        RouteAction::Forward(f) => f,
        other => panic!("expected a forward, got {other:?}"),
    }
}

/// The short host and subset of the chosen destination, `host/subset`.
fn dest(d: &RouteDecision) -> String {
    let f = forward(d);
    let short = f.destination.host.split('.').next().unwrap().to_owned();
    match &f.destination.subset {
        Some(s) => format!("{short}/{s}"),
        None => short,
    }
}

/// Which rule matched (`None` is "no route").
fn hit(vs: &CompiledVirtualService, req: &Req) -> Option<usize> {
    let d = route(vs, req);
    match d.action {
        RouteAction::NoRoute => {
            assert_eq!(d.route.rule_index, None);
            None
        }
        _ => d.route.rule_index,
    }
}

/// One rule per match block given, rule `i` routing to host `r{i}`.
fn rules(matches: &[&str]) -> CompiledVirtualService {
    let mut spec = String::from("  http:\n");
    for (i, m) in matches.iter().enumerate() {
        spec.push_str(&format!(
            "  - match: [{m}]\n    route: [{{destination: {{host: r{i}}}}}]\n"
        ));
    }
    vs(&spec)
}

/// Asserts that `within` sigma of Binomial(n, p) contains `count`.
fn assert_binomial(count: u64, n: u64, p: f64, what: &str) {
    let sigma = (n as f64 * p * (1.0 - p)).sqrt();
    let expected = n as f64 * p;
    assert!(
        (count as f64 - expected).abs() <= 5.0 * sigma,
        "{what}: {count} of {n}, expected {expected} ± {}",
        5.0 * sigma
    );
}

// ---------------------------------------------------------------- seeds

#[test]
fn seed_02_canary_splits_90_10_and_the_header_overrides_to_v2() {
    let vs = seed("02-virtual-service-traffic-routing.yaml", "reviews-vs");
    assert!(vs.applies_to("mesh"));
    assert_eq!(vs.hosts(), ["reviews.default.svc.cluster.local"]);
    let canary = Req::get("/")
        .authority("reviews")
        .header("x-canary", "true");
    let random = SplitMix::seeded(1);
    for _ in 0..1000 {
        let d = vs.route(&canary.view(), &random);
        assert_eq!(dest(&d), "reviews/v2");
        assert_eq!(d.route.rule_index, Some(0));
    }
    assert_eq!(&*vs.resource().clone(), "VirtualService/default/reviews-vs");

    // Any other value of the header falls to the weighted rule.
    let n = 10_000u64;
    let random = SplitMix::seeded(2024);
    let plain = Req::get("/")
        .authority("reviews")
        .header("x-canary", "false");
    let mut v1 = 0;
    for _ in 0..n {
        let d = vs.route(&plain.view(), &random);
        assert_eq!(d.route.rule_index, Some(1));
        match dest(&d).as_str() {
            "reviews/v1" => v1 += 1,
            "reviews/v2" => {}
            other => panic!("{other}"),
        }
    }
    assert_binomial(v1, n, 0.9, "v1 share");
}

#[test]
fn seed_02_api_vs_routes_by_raw_uri_prefix_on_its_gateway() {
    let vs = seed("02-virtual-service-traffic-routing.yaml", "api-vs");
    assert!(!vs.applies_to("mesh"), "bound to a gateway only");
    assert!(vs.applies_to("default/api-gateway"));
    let at = |path: &str| {
        let req = Req::get(path)
            .authority("api.example.com")
            .gateway("default/api-gateway");
        route(&vs, &req)
    };
    let d = at("/v1/users?page=2");
    assert_eq!(d.route.rule_index, Some(0));
    assert_eq!(
        forward(&d).destination,
        DestinationKey {
            host: "api-v1.default.svc.cluster.local".into(),
            subset: None,
            port: Some(8080),
        }
    );
    assert_eq!(forward(&d).matched_prefix.as_deref(), Some("/v1/"));
    assert_eq!(dest(&at("/v2/users")), "api-v2");
    // `/v2example` does not start with `/v2/`: the default route.
    for path in ["/v2example", "/v1", "/", "/other"] {
        let d = at(path);
        assert_eq!(d.route.rule_index, Some(2), "{path}");
        assert_eq!(dest(&d), "api-v1");
    }
}

#[test]
fn seed_06_fault_is_compiled_only_on_the_qa_rule() {
    let vs = seed("06-fault-injection.yaml", "reviews-fault");
    let d = route(&vs, &Req::get("/").header("x-test-user", "qa"));
    assert_eq!(dest(&d), "reviews/v1");
    let fault = d.policy.fault.as_ref().unwrap();
    let delay = fault.delay.as_ref().unwrap();
    assert_eq!(delay.fixed_delay, Duration::from_secs(5));
    assert_eq!(delay.percent, 100.0);
    let abort = fault.abort.as_ref().unwrap();
    assert_eq!(
        abort.status,
        AbortStatus::Http(StatusCode::INTERNAL_SERVER_ERROR)
    );
    assert_eq!(abort.percent, 10.0);
    // The VirtualService has no other rule: anything else is "no route".
    let d = route(&vs, &Req::get("/").header("x-test-user", "dev"));
    assert_eq!(d.action, RouteAction::NoRoute);
    assert!(d.policy.fault.is_none());
    assert_eq!(route(&vs, &Req::get("/")).action, RouteAction::NoRoute);
}

#[test]
fn seed_10_ab_test_by_user_group() {
    let vs = seed("10-a-b-testing.yaml", "ab-test");
    let beta = Req::get("/").header("user-group", "beta-testers");
    assert_eq!(dest(&route(&vs, &beta)), "webapp/v2");
    assert_eq!(dest(&route(&vs, &Req::get("/"))), "webapp/v1");
    let other = Req::get("/").header("user-group", "beta-testers-2");
    assert_eq!(dest(&route(&vs, &other)), "webapp/v1");
}

#[test]
fn seed_11_blue_green_100_0_always_blue() {
    let vs = seed("11-blue-green-deployment.yaml", "blue-green");
    let random = SplitMix::seeded(11);
    let req = Req::get("/");
    for _ in 0..10_000 {
        assert_eq!(dest(&vs.route(&req.view(), &random)), "webapp/blue");
    }
}

#[test]
fn seed_12_mirror_all_traffic_to_v2_with_v1_primary() {
    let vs = seed("12-traffic-mirroring-shadow-traffic.yaml", "traffic-mirror");
    let d = route(&vs, &Req::get("/x"));
    assert_eq!(dest(&d), "api/v1");
    assert_eq!(d.policy.mirrors.len(), 1);
    let m = &d.policy.mirrors[0];
    assert_eq!(&*m.destination.host, "api.default.svc.cluster.local");
    assert_eq!(m.destination.subset.as_deref(), Some("v2"));
    assert_eq!(m.percent, 100.0);
}

#[test]
fn seed_17_retries_are_compiled() {
    let vs = seed("17-retries.yaml", "api-retry");
    let d = route(&vs, &Req::get("/"));
    assert_eq!(dest(&d), "api");
    let r = d.policy.retries.as_ref().unwrap();
    assert_eq!(r.attempts, 3);
    assert_eq!(r.per_try_timeout, Some(Duration::from_secs(2)));
    assert_eq!(
        r.retry_on,
        [
            RetryOn::FiveXx,
            RetryOn::Reset,
            RetryOn::ConnectFailure,
            RetryOn::RefusedStream
        ]
    );
    assert!(r.retry_ignore_previous_hosts);
    assert_eq!(d.policy.timeout, None);
}

#[test]
fn seed_18_timeout_is_compiled() {
    let vs = seed("18-timeouts.yaml", "api-timeout");
    let d = route(&vs, &Req::get("/"));
    assert_eq!(d.policy.timeout, Some(Duration::from_secs(10)));
    assert_eq!(d.policy.retries, None, "absent: the retry layer's default");
}

// ---------------------------------------------------------------- weights

#[test]
fn weights_are_relative_and_zero_weight_never_wins() {
    let vs = vs("  http:
  - route:
    - {destination: {host: a}, weight: 1}
    - {destination: {host: z}, weight: 0}
    - {destination: {host: b}, weight: 3}
");
    let random = SplitMix::seeded(99);
    let n = 10_000u64;
    let (mut a, mut b) = (0, 0);
    for _ in 0..n {
        match dest(&vs.route(&Req::get("/").view(), &random)).as_str() {
            "a" => a += 1,
            "b" => b += 1,
            other => panic!("weight 0 destination chosen: {other}"),
        }
    }
    assert_eq!(a + b, n);
    assert_binomial(a, n, 0.25, "a share");
}

#[test]
fn one_destination_takes_everything_whatever_its_weight() {
    for w in ["", ", weight: 0", ", weight: 5", ", weight: 100"] {
        let vs = vs(&format!(
            "  http:\n  - route:\n    - {{destination: {{host: only}}{w}}}\n"
        ));
        let random = SplitMix::seeded(3);
        for _ in 0..100 {
            assert_eq!(dest(&vs.route(&Req::get("/").view(), &random)), "only");
        }
    }
}

#[test]
fn seeded_choices_repeat() {
    let vs = seed("02-virtual-service-traffic-routing.yaml", "reviews-vs");
    let req = Req::get("/");
    let picks = |seed| {
        let r = SplitMix::seeded(seed);
        (0..200)
            .map(|_| dest(&vs.route(&req.view(), &r)))
            .collect::<Vec<_>>()
    };
    assert_eq!(picks(5), picks(5));
}

#[test]
fn destination_hosts_qualify_in_the_virtual_service_namespace() {
    let vs = vs("  http:
  - route:
    - {destination: {host: reviews, subset: v1, port: {number: 9080}}, weight: 50}
    - {destination: {host: ratings.other.svc.cluster.local}, weight: 50}
");
    let random = SplitMix::seeded(1);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..200 {
        seen.insert(
            forward(&vs.route(&Req::get("/").view(), &random))
                .destination
                .clone(),
        );
    }
    let expected: std::collections::HashSet<DestinationKey> = [
        DestinationKey {
            host: "reviews.prod.svc.cluster.local".into(),
            subset: Some("v1".into()),
            port: Some(9080),
        },
        DestinationKey {
            host: "ratings.other.svc.cluster.local".into(),
            subset: None,
            port: None,
        },
    ]
    .into_iter()
    .collect();
    assert_eq!(seen, expected);
}

// ---------------------------------------------------------------- matching

#[test]
fn uri_exact_prefix_and_full_match_regex() {
    let vs = rules(&[
        "{uri: {exact: /exact}}",
        "{uri: {prefix: /v2}}",
        "{uri: {regex: /api}}",
        "{uri: {regex: '/items/[0-9]+'}}",
    ]);
    assert_eq!(hit(&vs, &Req::get("/exact")), Some(0));
    assert_eq!(
        hit(&vs, &Req::get("/exact?x=1")),
        Some(0),
        "query is not part of uri"
    );
    assert_eq!(hit(&vs, &Req::get("/exact/")), None);
    assert_eq!(
        hit(&vs, &Req::get("/v2example")),
        Some(1),
        "raw string prefix"
    );
    assert_eq!(hit(&vs, &Req::get("/v2/x")), Some(1));
    assert_eq!(hit(&vs, &Req::get("/api")), Some(2));
    assert_eq!(
        hit(&vs, &Req::get("/api/x")),
        None,
        "regex must match the whole path"
    );
    assert_eq!(hit(&vs, &Req::get("/x/api")), None);
    assert_eq!(hit(&vs, &Req::get("/items/42?q=1")), Some(3));
    assert_eq!(hit(&vs, &Req::get("/items/42a")), None);
    assert_eq!(
        hit(&vs, &Req::get("/V2")),
        None,
        "case-sensitive by default"
    );
}

#[test]
fn ignore_uri_case_folds_exact_and_prefix() {
    let vs = rules(&[
        "{uri: {exact: /Login}, ignoreUriCase: true}",
        "{uri: {prefix: /Static/}, ignoreUriCase: true}",
    ]);
    assert_eq!(hit(&vs, &Req::get("/login")), Some(0));
    assert_eq!(hit(&vs, &Req::get("/LOGIN")), Some(0));
    assert_eq!(hit(&vs, &Req::get("/static/app.js")), Some(1));
    assert_eq!(hit(&vs, &Req::get("/STATIC/x")), Some(1));
    assert_eq!(hit(&vs, &Req::get("/logout")), None);
    let strict = rules(&["{uri: {exact: /Login}}"]);
    assert_eq!(hit(&strict, &Req::get("/login")), None);
}

#[test]
fn header_exact_prefix_regex_and_presence() {
    let vs = rules(&[
        "{headers: {x-exact: {exact: yes}}}",
        "{headers: {x-prefix: {prefix: abc}}}",
        "{headers: {x-regex: {regex: 'v[0-9]'}}}",
        "{headers: {x-present: {}}}",
        "{headers: {x-star: {regex: '*'}}}",
    ]);
    assert_eq!(hit(&vs, &Req::get("/").header("x-exact", "yes")), Some(0));
    assert_eq!(hit(&vs, &Req::get("/").header("x-exact", "yes!")), None);
    assert_eq!(
        hit(&vs, &Req::get("/").header("x-prefix", "abcdef")),
        Some(1)
    );
    assert_eq!(hit(&vs, &Req::get("/").header("x-regex", "v1")), Some(2));
    assert_eq!(hit(&vs, &Req::get("/").header("x-regex", "v12")), None);
    assert_eq!(hit(&vs, &Req::get("/").header("x-present", "")), Some(3));
    assert_eq!(
        hit(&vs, &Req::get("/").header("x-present", "anything")),
        Some(3)
    );
    assert_eq!(hit(&vs, &Req::get("/").header("x-star", "")), Some(4));
    assert_eq!(hit(&vs, &Req::get("/").header("x-star", "z")), Some(4));
    assert_eq!(
        hit(&vs, &Req::get("/")),
        None,
        "absent headers match nothing"
    );
    // Header names are case-insensitive on the wire.
    assert_eq!(hit(&vs, &Req::get("/").header("X-Exact", "yes")), Some(0));
}

#[test]
fn without_headers_every_case_of_spec_4_2() {
    let exact = rules(&["{withoutHeaders: {end-user: {exact: jason}}}"]);
    assert_eq!(
        hit(&exact, &Req::get("/")),
        Some(0),
        "missing header reads as \"\""
    );
    assert_eq!(
        hit(&exact, &Req::get("/").header("end-user", "bob")),
        Some(0)
    );
    assert_eq!(
        hit(&exact, &Req::get("/").header("end-user", "jason")),
        None
    );

    let any = rules(&["{withoutHeaders: {end-user: {regex: '.*'}}}"]);
    assert_eq!(hit(&any, &Req::get("/")), None, "regex .* never matches");
    assert_eq!(hit(&any, &Req::get("/").header("end-user", "x")), None);

    let star = rules(&["{withoutHeaders: {end-user: {regex: '*'}}}"]);
    assert_eq!(
        hit(&star, &Req::get("/")),
        Some(0),
        "presence form: only when absent"
    );
    assert_eq!(hit(&star, &Req::get("/").header("end-user", "")), None);
    assert_eq!(hit(&star, &Req::get("/").header("end-user", "x")), None);

    let empty = rules(&["{withoutHeaders: {end-user: {}}}"]);
    assert_eq!(hit(&empty, &Req::get("/")), Some(0));
    assert_eq!(hit(&empty, &Req::get("/").header("end-user", "x")), None);

    let prefix = rules(&["{withoutHeaders: {end-user: {prefix: ja}}}"]);
    assert_eq!(hit(&prefix, &Req::get("/")), Some(0));
    assert_eq!(
        hit(&prefix, &Req::get("/").header("end-user", "jane")),
        None
    );
    assert_eq!(
        hit(&prefix, &Req::get("/").header("end-user", "bob")),
        Some(0)
    );
}

#[test]
fn query_params_presence_exact_prefix_regex_first_occurrence() {
    let vs = rules(&[
        "{queryParams: {p1: {}}}",
        "{queryParams: {p2: {exact: ''}}}",
        "{queryParams: {p3: {exact: one}}}",
        "{queryParams: {p4: {prefix: ab}}}",
        "{queryParams: {p5: {regex: '[0-9]+'}}}",
    ]);
    assert_eq!(hit(&vs, &Req::get("/?p1")), Some(0));
    assert_eq!(hit(&vs, &Req::get("/?x=1&p1=zz")), Some(0));
    assert_eq!(hit(&vs, &Req::get("/?p2=")), Some(1));
    assert_eq!(
        hit(&vs, &Req::get("/?p2=anything")),
        Some(1),
        "exact \"\" is presence"
    );
    assert_eq!(hit(&vs, &Req::get("/?p3=one")), Some(2));
    assert_eq!(hit(&vs, &Req::get("/?p3=one1")), None);
    assert_eq!(
        hit(&vs, &Req::get("/?p3=two&p3=one")),
        None,
        "first occurrence only"
    );
    assert_eq!(hit(&vs, &Req::get("/?p3=one&p3=two")), Some(2));
    assert_eq!(hit(&vs, &Req::get("/?p4=abc")), Some(3));
    assert_eq!(hit(&vs, &Req::get("/?p5=123")), Some(4));
    assert_eq!(hit(&vs, &Req::get("/?p5=123x")), None);
    assert_eq!(hit(&vs, &Req::get("/?p33=one")), None, "keys compare whole");
    assert_eq!(hit(&vs, &Req::get("/")), None);
}

#[test]
fn authority_method_scheme_and_port() {
    let vs = rules(&[
        "{authority: {exact: 'a.example:8080'}}",
        "{authority: {prefix: b.example}}",
        "{method: {exact: POST}}",
        "{scheme: {exact: https}}",
        "{port: 9090}",
    ]);
    assert_eq!(
        hit(&vs, &Req::get("/").authority("a.example:8080")),
        Some(0)
    );
    assert_eq!(hit(&vs, &Req::get("/").authority("a.example")), None);
    assert_eq!(hit(&vs, &Req::get("/").authority("b.example:1")), Some(1));
    assert_eq!(hit(&vs, &Req::get("/").method(Method::POST)), Some(2));
    assert_eq!(hit(&vs, &Req::get("/").method(Method::PUT)), None);
    assert_eq!(hit(&vs, &Req::get("/").scheme("https")), Some(3));
    assert_eq!(hit(&vs, &Req::get("/").port(Some(9090))), Some(4));
    assert_eq!(hit(&vs, &Req::get("/").port(None)), None);
}

#[test]
fn pseudo_headers_are_matchable() {
    let vs = rules(&[
        "{headers: {':method': {exact: DELETE}}}",
        "{headers: {':authority': {regex: 'x\\.example(:[0-9]+)?'}}}",
        "{headers: {':path': {exact: '/p?q=1'}}}",
        "{headers: {':scheme': {exact: https}}}",
    ]);
    assert_eq!(hit(&vs, &Req::get("/").method(Method::DELETE)), Some(0));
    assert_eq!(hit(&vs, &Req::get("/").authority("x.example:80")), Some(1));
    assert_eq!(
        hit(&vs, &Req::get("/p?q=1")),
        Some(2),
        ":path includes the query"
    );
    assert_eq!(hit(&vs, &Req::get("/p")), None);
    assert_eq!(hit(&vs, &Req::get("/").scheme("https")), Some(3));
}

#[test]
fn source_selectors_and_per_match_gateways() {
    let vs = rules(&[
        "{sourceLabels: {app: web, version: v1}}",
        "{sourceNamespace: frontend}",
        "{gateways: [edge], uri: {prefix: /}}",
        "{gateways: [mesh], headers: {x-mesh: {}}}",
    ]);
    let web = Req::get("/")
        .label("app", "web")
        .label("version", "v1")
        .label("x", "y");
    assert_eq!(hit(&vs, &web), Some(0));
    assert_eq!(
        hit(&vs, &Req::get("/").label("app", "web")),
        None,
        "all labels needed"
    );
    assert_eq!(hit(&vs, &Req::get("/").namespace("frontend")), Some(1));
    // `edge` is read in the VirtualService's namespace; but the VS itself
    // binds only to `mesh`, so the caller would not consult it there: the
    // per-match list is still honoured when evaluated.
    assert_eq!(hit(&vs, &Req::get("/").gateway("prod/edge")), Some(2));
    assert_eq!(hit(&vs, &Req::get("/").gateway("other/edge")), None);
    assert_eq!(hit(&vs, &Req::get("/").header("x-mesh", "1")), Some(3));
    assert_eq!(
        hit(
            &vs,
            &Req::get("/").header("x-mesh", "1").gateway("prod/edge")
        ),
        Some(2)
    );
}

#[test]
fn virtual_service_gateways_decide_which_proxies_apply_it() {
    let default = vs("  http:\n  - route: [{destination: {host: a}}]\n");
    assert!(default.applies_to("mesh"));
    assert!(!default.applies_to("prod/gw"));
    let gw_only = vs("  gateways: [gw]\n  http:\n  - route: [{destination: {host: a}}]\n");
    assert!(
        !gw_only.applies_to("mesh"),
        "sidecars ignore it without mesh"
    );
    assert!(gw_only.applies_to("prod/gw"));
    assert!(!gw_only.applies_to("other/gw"));
    let both = vs("  gateways: [mesh, other/gw]\n  http:\n  - route: [{destination: {host: a}}]\n");
    assert!(both.applies_to("mesh"));
    assert!(both.applies_to("other/gw"));
    assert!(!both.applies_to("prod/gw"));
}

#[test]
fn blocks_are_ored_and_fields_anded() {
    let vs = vs("  http:
  - match:
    - {uri: {prefix: /a}, method: {exact: GET}}
    - {headers: {x-b: {exact: '1'}}}
    route: [{destination: {host: r0}}]
");
    assert_eq!(hit(&vs, &Req::get("/a")), Some(0));
    assert_eq!(
        hit(&vs, &Req::get("/a").method(Method::POST)),
        None,
        "AND inside a block"
    );
    assert_eq!(
        hit(&vs, &Req::get("/z").method(Method::POST).header("x-b", "1")),
        Some(0),
        "OR across blocks"
    );
}

#[test]
fn first_match_wins_and_a_catch_all_shadows_later_rules() {
    let vs = vs("  http:
  - match: [{uri: {prefix: /a}}]
    route: [{destination: {host: r0}}]
  - match: [{uri: {prefix: /a/b}}]
    route: [{destination: {host: r1}}]
  - name: catch-all
    route: [{destination: {host: r2}}]
  - match: [{uri: {prefix: /z}}]
    route: [{destination: {host: r3}}]
");
    assert_eq!(
        hit(&vs, &Req::get("/a/b")),
        Some(0),
        "order, not specificity"
    );
    let d = route(&vs, &Req::get("/z"));
    assert_eq!(d.route.rule_index, Some(2), "catch-all shadows rule 3");
    assert_eq!(d.route.rule_name.as_deref(), Some("catch-all"));
    assert_eq!(&*d.route.resource, "VirtualService/prod/t");
}

#[test]
fn no_rule_matching_is_no_route() {
    let vs = rules(&["{uri: {exact: /only}}"]);
    let d = route(&vs, &Req::get("/other"));
    assert_eq!(d.action, RouteAction::NoRoute);
    assert_eq!(&*d.route.resource, "VirtualService/prod/t");
    assert_eq!(d.route.rule_index, None);
}

#[test]
fn hostile_inputs_do_not_panic() {
    let vs = rules(&[
        "{uri: {prefix: /é}, ignoreUriCase: true}",
        "{headers: {x-bin: {regex: '.+'}}}",
        "{queryParams: {'': {}}}",
    ]);
    let mut req = Req::get("/%C3%A9?&&=&a").authority("");
    req.headers
        .insert("x-bin", HeaderValue::from_bytes(&[0xff, 0xfe]).unwrap());
    req.headers
        .append("x-bin", HeaderValue::from_static("second"));
    let _ = route(&vs, &req);
    let _ = route(&vs, &Req::get("*"));
}

// ---------------------------------------------------------------- rewrite

#[test]
fn rewrite_replaces_the_matched_prefix_or_the_whole_path() {
    let vs = vs("  http:
  - match: [{uri: {prefix: /v1/}}]
    rewrite: {uri: /v2/}
    route: [{destination: {host: a}}]
  - match: [{uri: {exact: /foo}}]
    rewrite: {uri: /new/path, authority: new.example}
    route: [{destination: {host: a}}]
  - match: [{uri: {regex: '/service/[^/]+/.*'}}]
    rewrite:
      uriRegexRewrite: {match: '^/service/([^/]+)(/.*)$', rewrite: '\\2/instance/\\1'}
    route: [{destination: {host: a}}]
  - rewrite: {uri: /root/}
    route: [{destination: {host: a}}]
");
    let apply = |path: &str| {
        let req = Req::get(path);
        let d = route(&vs, &req);
        let f = forward(&d);
        let rw = d.policy.rewrite.as_ref().unwrap();
        (
            rw.apply(f.matched_prefix.as_deref(), &req.uri),
            rw.authority.clone(),
        )
    };
    assert_eq!(apply("/v1/items?id=3").0, "/v2/items?id=3");
    let (uri, authority) = apply("/foo?key=value");
    assert_eq!(uri, "/new/path?key=value");
    assert_eq!(authority.unwrap(), "new.example");
    assert_eq!(apply("/service/foo/v1/api?x").0, "/v1/api/instance/foo?x");
    // A rule without a uri match has Envoy's `/` prefix: only `/` is replaced.
    assert_eq!(apply("/other").0, "/root/other");
}

// ---------------------------------------------------------------- headers

#[test]
fn header_edits_destination_level_then_rule_level() {
    let vs = vs("  http:
  - headers:
      request:
        set: {':authority': rule.example, x-both: rule}
        add: {x-added: rule}
      response:
        remove: [x-internal]
    route:
    - destination: {host: a}
      headers:
        request:
          set: {host: dest.example, x-both: dest, x-dest: dest}
          add: {x-added: dest}
        response:
          set: {x-served-by: a}
");
    let d = route(&vs, &Req::get("/"));
    let f = forward(&d);
    assert_eq!(
        f.request_headers.authority_override.as_ref().unwrap(),
        "rule.example",
        "rule-level :authority wins"
    );
    let mut h = HeaderMap::new();
    h.insert("x-added", HeaderValue::from_static("client"));
    f.request_headers.apply(&mut h);
    assert_eq!(h["x-both"], "rule");
    assert_eq!(h["x-dest"], "dest");
    assert_eq!(h["x-added"], "client, dest, rule");
    let mut resp = HeaderMap::new();
    resp.insert("x-internal", HeaderValue::from_static("1"));
    f.response_headers.apply(&mut resp);
    assert!(!resp.contains_key("x-internal"));
    assert_eq!(resp["x-served-by"], "a");
}

#[test]
fn invalid_header_edits_and_regexes_are_compile_errors() {
    let base = vs_resource(
        "  http:\n  - match: [{uri: {prefix: /}}]\n    route: [{destination: {host: a}}]\n",
    );
    let mutate = |f: &dyn Fn(&mut HttpRoute)| {
        let mut r = base.clone();
        let Spec::VirtualService(vs) = &mut r.spec else {
            unreachable!()
        };
        f(&mut vs.http[0]);
        CompiledVirtualService::compile(&r)
    };
    let bad_name = mutate(&|rule| {
        rule.headers = Some(Headers {
            request: Some(HeaderOperations {
                set: [("bad name".to_owned(), "v".to_owned())].into(),
                ..Default::default()
            }),
            response: None,
        });
    })
    .unwrap_err();
    assert_eq!(bad_name.resource, "VirtualService/prod/t");
    assert!(
        bad_name.field.starts_with("http[0].headers.request"),
        "{bad_name}"
    );
    let bad_value = mutate(&|rule| {
        rule.route[0].headers = Some(Headers {
            request: None,
            response: Some(HeaderOperations {
                add: [("x".to_owned(), "a\r\nb".to_owned())].into(),
                ..Default::default()
            }),
        });
    })
    .unwrap_err();
    assert!(
        bad_value
            .field
            .starts_with("http[0].route[0].headers.response"),
        "{bad_value}"
    );
    let bad_regex = mutate(&|rule| {
        rule.matches[0].uri.as_mut().unwrap().prefix = None;
        rule.matches[0].uri.as_mut().unwrap().regex = Some("(".into());
    })
    .unwrap_err();
    assert_eq!(bad_regex.field, "http[0].match[0].uri");
    assert!(mutate(&|_| {}).is_ok());
}

// ---------------------------------------------------------------- redirects

fn location(spec_redirect: &str, matcher: &str, req: &Req) -> (StatusCode, String) {
    let vs = vs(&format!(
        "  http:\n  - match: [{matcher}]\n    redirect: {spec_redirect}\n"
    ));
    match route(&vs, req).action {
        RouteAction::Redirect { status, location } => {
            (status, location.to_str().unwrap().to_owned())
        }
        other => panic!("expected a redirect, got {other:?}"),
    }
}

#[test]
fn redirect_defaults_to_301_and_keeps_the_query() {
    let req = Req::get("/old?k=v").authority("svc.example");
    let (status, loc) = location("{uri: /new}", "{uri: {exact: /old}}", &req);
    assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(loc, "http://svc.example/new?k=v");
    let (status, loc) = location(
        "{uri: /new, redirectCode: 308}",
        "{uri: {exact: /old}}",
        &req,
    );
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(loc, "http://svc.example/new?k=v");
    let (_, loc) = location(
        "{authority: other.example, scheme: https}",
        "{uri: {prefix: /}}",
        &req,
    );
    assert_eq!(loc, "https://other.example/old?k=v");
}

#[test]
fn redirect_prefix_rewrite_replaces_only_the_matched_prefix() {
    let req = Req::get("/foo/baz").authority("h");
    // The documented quirk: prefix /foo with rewrite / leaves a double slash.
    let (_, loc) = location("{prefixRewrite: /}", "{uri: {prefix: /foo}}", &req);
    assert_eq!(loc, "http://h//baz");
    let (_, loc) = location("{prefixRewrite: /}", "{uri: {prefix: /foo/}}", &req);
    assert_eq!(loc, "http://h/baz");
    let (_, loc) = location("{prefixRewrite: /bar/}", "{uri: {prefix: /foo/}}", &req);
    assert_eq!(loc, "http://h/bar/baz");
}

#[test]
fn redirect_ports_derived_and_omitted_per_spec() {
    let m = "{uri: {prefix: /}}";
    // FROM_PROTOCOL_DEFAULT: 443 for https, left out when the Host had no port.
    let req = Req::get("/p").authority("h.example");
    let (_, loc) = location(
        "{scheme: https, derivePort: FROM_PROTOCOL_DEFAULT}",
        m,
        &req,
    );
    assert_eq!(loc, "https://h.example/p");
    let req_port = Req::get("/p").authority("h.example:8080").port(Some(8080));
    let (_, loc) = location(
        "{scheme: https, derivePort: FROM_PROTOCOL_DEFAULT}",
        m,
        &req_port,
    );
    assert_eq!(
        loc, "https://h.example:443/p",
        "explicit request port: kept explicit"
    );
    // FROM_REQUEST_PORT echoes the port the request used.
    let (_, loc) = location(
        "{scheme: https, derivePort: FROM_REQUEST_PORT}",
        m,
        &req_port,
    );
    assert_eq!(loc, "https://h.example:8080/p");
    let req80 = Req::get("/p").authority("h.example").port(Some(80));
    let (_, loc) = location("{uri: /q, derivePort: FROM_REQUEST_PORT}", m, &req80);
    assert_eq!(
        loc, "http://h.example/q",
        "default port, no explicit port: omitted"
    );
    // A fixed port.
    let (_, loc) = location("{scheme: https, port: 8443}", m, &req);
    assert_eq!(loc, "https://h.example:8443/p");
    let (_, loc) = location("{scheme: https, port: 443}", m, &req);
    assert_eq!(loc, "https://h.example/p");
    // No port setting: the Host as written, minus the old scheme's default
    // port when the scheme changes.
    let (_, loc) = location(
        "{scheme: https}",
        m,
        &Req::get("/p").authority("h.example:80"),
    );
    assert_eq!(loc, "https://h.example/p");
    let (_, loc) = location("{uri: /q}", m, &Req::get("/p").authority("h.example:8080"));
    assert_eq!(loc, "http://h.example:8080/q");
}

// ---------------------------------------------------------------- local replies

#[test]
fn direct_responses_carry_status_and_body() {
    let vs = vs("  http:
  - match: [{uri: {exact: /text}}]
    directResponse: {status: 503, body: {string: down}}
  - match: [{uri: {exact: /bytes}}]
    directResponse: {status: 200, body: {bytes: aGVsbG8=}}
  - directResponse: {status: 204}
");
    let body = |path: &str| match route(&vs, &Req::get(path)).action {
        RouteAction::DirectResponse { status, body } => (status.as_u16(), body),
        other => panic!("{other:?}"),
    };
    assert_eq!(body("/text"), (503, bytes::Bytes::from_static(b"down")));
    assert_eq!(body("/bytes"), (200, bytes::Bytes::from_static(b"hello")));
    assert_eq!(body("/x"), (204, bytes::Bytes::new()));
}

// ---------------------------------------------------------------- policies

#[test]
fn mirror_percentages_and_the_deprecated_forms() {
    let vs = vs("  http:
  - match: [{uri: {prefix: /a}}]
    route: [{destination: {host: a}}]
    mirror: {host: shadow}
  - match: [{uri: {prefix: /b}}]
    route: [{destination: {host: a}}]
    mirror: {host: shadow}
    mirrorPercent: 30
  - match: [{uri: {prefix: /c}}]
    route: [{destination: {host: a}}]
    mirrors:
    - destination: {host: m1}
    - destination: {host: m2, subset: v2}
      percentage: {value: 12.5}
    - destination: {host: m3}
      percentage: {value: 0}
");
    let mirrors = |p: &str| {
        route(&vs, &Req::get(p))
            .policy
            .mirrors
            .iter()
            .map(|m| (m.destination.host.to_string(), m.percent))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        mirrors("/a"),
        [("shadow.prod.svc.cluster.local".to_owned(), 100.0)]
    );
    assert_eq!(
        mirrors("/b"),
        [("shadow.prod.svc.cluster.local".to_owned(), 30.0)]
    );
    assert_eq!(
        mirrors("/c"),
        [
            ("m1.prod.svc.cluster.local".to_owned(), 100.0),
            ("m2.prod.svc.cluster.local".to_owned(), 12.5),
            ("m3.prod.svc.cluster.local".to_owned(), 0.0),
        ]
    );
}

#[test]
fn fault_percentages_default_to_zero_and_honour_percent() {
    let vs = vs("  http:
  - match: [{uri: {prefix: /a}}]
    fault:
      delay: {fixedDelay: 1s, percent: 40}
      abort: {grpcStatus: UNAVAILABLE}
    route: [{destination: {host: a}}]
  - match: [{uri: {prefix: /b}}]
    fault:
      delay: {fixedDelay: 250ms}
      abort: {httpStatus: 503, percentage: {value: 0.5}}
    route: [{destination: {host: a}}]
");
    let f = route(&vs, &Req::get("/a")).policy.fault.clone().unwrap();
    let delay = f.delay.unwrap();
    assert_eq!(
        (delay.fixed_delay, delay.percent),
        (Duration::from_secs(1), 40.0)
    );
    let abort = f.abort.unwrap();
    assert_eq!(abort.percent, 0.0, "absent percentage aborts nothing");
    assert_eq!(
        abort.status,
        AbortStatus::Grpc {
            code: 14,
            name: "UNAVAILABLE".into()
        }
    );
    let f = route(&vs, &Req::get("/b")).policy.fault.clone().unwrap();
    assert_eq!(
        f.delay.unwrap().percent,
        0.0,
        "neither percentage nor percent: 0%"
    );
    assert_eq!(f.abort.unwrap().percent, 0.5);
}

#[test]
fn retries_without_attempts_disable_and_zero_timeout_is_none() {
    let vs = vs("  http:
  - match: [{uri: {prefix: /a}}]
    retries: {perTryTimeout: 1s}
    timeout: 0s
    route: [{destination: {host: a}}]
  - retries: {attempts: 2, backoff: 50ms, retryOn: 'gateway-error,503'}
    route: [{destination: {host: a}}]
");
    let p = route(&vs, &Req::get("/a")).policy;
    let r = p.retries.as_ref().unwrap();
    assert_eq!(
        r.attempts, 0,
        "a retries block without attempts disables retries"
    );
    assert_eq!(r.retry_on, RetrySpec::DEFAULT_RETRY_ON);
    assert_eq!(p.timeout, None);
    let p = route(&vs, &Req::get("/b")).policy;
    let r = p.retries.as_ref().unwrap();
    assert_eq!(r.attempts, 2);
    assert_eq!(r.backoff, Some(Duration::from_millis(50)));
    assert_eq!(r.retry_on, [RetryOn::GatewayError, RetryOn::Status(503)]);
    assert_eq!(r.status_codes().collect::<Vec<_>>(), [503]);
    assert!(r.has(RetryOn::RetriableStatusCodes));
}

#[test]
fn default_route_forwards_to_the_host_with_default_policy() {
    let d = RouteDecision::default_route("reviews.prod.svc.cluster.local");
    assert_eq!(&*d.route.resource, "default");
    assert_eq!(d.route.rule_index, None);
    let f = forward(&d);
    assert_eq!(&*f.destination.host, "reviews.prod.svc.cluster.local");
    assert_eq!(f.destination.subset, None);
    assert!(f.request_headers.is_empty() && f.response_headers.is_empty());
    assert_eq!(d.policy.timeout, None);
    assert_eq!(d.policy.retries, None);
    assert!(d.policy.fault.is_none() && d.policy.mirrors.is_empty());
}
