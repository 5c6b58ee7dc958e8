//! Linkerd policy, ServiceProfile and Gateway API kinds: schema and
//! validation, checked through the loader with exact diagnostic lines.

use mesh_core::load::{LoadOptions, Loaded, load_str};
use mesh_core::resource::Spec;

fn load(yaml: &str) -> Loaded {
    load_str("f.yaml", yaml, &LoadOptions::default())
}

/// Asserts the exact diagnostics (one per line, in position order).
#[track_caller]
fn check(yaml: &str, expected: &[&str]) {
    let loaded = load(yaml);
    let got = loaded.diagnostics.to_string();
    let got: Vec<&str> = got.lines().collect();
    assert_eq!(got, expected, "\nfull output:\n{}", got.join("\n"));
}

/// Asserts the YAML loads with no diagnostic at all and that every
/// resource survives the JSON round trip.
#[track_caller]
fn check_valid(yaml: &str, count: usize) -> Loaded {
    let loaded = load(yaml);
    assert!(
        loaded.diagnostics.0.is_empty(),
        "unexpected diagnostics:\n{}",
        loaded.diagnostics
    );
    assert_eq!(loaded.resources.len(), count);
    for r in &loaded.resources {
        let json = serde_json::to_value(&r.spec).expect("serializes");
        let back = Spec::from_json(r.kind, json.clone())
            .unwrap_or_else(|e| panic!("{}: {e}\n{json:#}", r.id()));
        assert_eq!(back, r.spec, "{} does not round-trip", r.id());
    }
    loaded
}

// ---------------------------------------------------------------------------
// Linkerd policy: invalid
// ---------------------------------------------------------------------------

#[test]
fn server_port_out_of_range() {
    check(
        r#"
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: s}
spec:
  podSelector: {matchLabels: {app: api}}
  port: 70000
"#,
        &[r##"f.yaml:7:9: error: Server/default/s: spec.port: port 70000 is outside 1..65535"##],
    );
}

#[test]
fn server_proxy_protocol_typo() {
    check(
        r#"
apiVersion: policy.linkerd.io/v1beta1
kind: Server
metadata: {name: s}
spec:
  podSelector: {matchLabels: {app: api}}
  port: 8080
  proxyProtocol: HTTP/3
"#,
        &[
            r##"f.yaml:8:18: error: Server/default/s: spec.proxyProtocol: unknown value `HTTP/3`, expected one of unknown, HTTP/1, HTTP/2, gRPC, opaque, TLS (did you mean `HTTP/1`?)"##,
        ],
    );
}

#[test]
fn server_access_policy_typo() {
    check(
        r#"
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: s}
spec:
  port: http
  accessPolicy: all-authenticted
"#,
        &[
            r##"f.yaml:7:17: error: Server/default/s: spec.accessPolicy: unknown value `all-authenticted`, expected one of deny, audit, all-unauthenticated, all-authenticated, cluster-authenticated, cluster-unauthenticated (did you mean `all-authenticated`?)"##,
        ],
    );
}

#[test]
fn server_bad_port_name_and_no_selector() {
    check(
        r#"
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: s}
spec:
  port: Http_Port
"#,
        &[
            r##"f.yaml:6:3: error: Server/default/s: spec: a Server needs a podSelector (or an externalWorkloadSelector)"##,
            r##"f.yaml:6:9: error: Server/default/s: spec.port: invalid port name "Http_Port": use a port number or a name of at most 15 lowercase letters, digits and '-'"##,
        ],
    );
}

#[test]
fn server_authorization_server_name_and_selector() {
    check(
        r#"
apiVersion: policy.linkerd.io/v1beta1
kind: ServerAuthorization
metadata: {name: a}
spec:
  server:
    name: api
    selector: {matchLabels: {app: api}}
  client:
    unauthenticated: true
"#,
        &[
            r##"f.yaml:7:5: error: ServerAuthorization/default/a: spec.server: set either name or selector, not both"##,
        ],
    );
}

#[test]
fn server_authorization_server_neither() {
    check(
        r#"
apiVersion: policy.linkerd.io/v1beta1
kind: ServerAuthorization
metadata: {name: a}
spec:
  server: {}
  client:
    unauthenticated: true
"#,
        &[
            r##"f.yaml:6:11: error: ServerAuthorization/default/a: spec.server: name the Server (name) or select Servers (selector)"##,
        ],
    );
}

#[test]
fn server_authorization_client_neither() {
    check(
        r#"
apiVersion: policy.linkerd.io/v1beta1
kind: ServerAuthorization
metadata: {name: a}
spec:
  server: {name: api}
  client:
    networks:
    - cidr: 10.0.0.0/8
"#,
        &[
            r##"f.yaml:8:5: error: ServerAuthorization/default/a: spec.client: set meshTLS (meshed clients) or unauthenticated: true (any client)"##,
        ],
    );
}

#[test]
fn server_authorization_bad_identity_patterns() {
    check(
        r#"
apiVersion: policy.linkerd.io/v1beta1
kind: ServerAuthorization
metadata: {name: a}
spec:
  server: {name: api}
  client:
    meshTLS:
      identities:
      - "*"
      - "*.production.serviceaccount.identity.linkerd.cluster.local"
      - "web.*.serviceaccount.identity.linkerd.cluster.local"
      - "web*"
"#,
        &[
            r##"f.yaml:12:9: error: ServerAuthorization/default/a: spec.client.meshTLS.identities[2]: invalid identity "web.*.serviceaccount.identity.linkerd.cluster.local": `*` may only be the whole identity or a leading `*.`"##,
            r##"f.yaml:13:9: error: ServerAuthorization/default/a: spec.client.meshTLS.identities[3]: invalid identity "web*": `*` may only be the whole identity or a leading `*.`"##,
        ],
    );
}

#[test]
fn server_authorization_bad_networks() {
    check(
        r#"
apiVersion: policy.linkerd.io/v1beta1
kind: ServerAuthorization
metadata: {name: a}
spec:
  server: {name: api}
  client:
    unauthenticated: true
    networks:
    - cidr: 10.0.0.0/33
    - cidr: 10.0.0.0/8
      except: [192.168.0.0/16, 0.0.0.0/0, 10.1.0.0/16]
"#,
        &[
            r##"f.yaml:10:13: error: ServerAuthorization/default/a: spec.client.networks[0].cidr: invalid CIDR "10.0.0.0/33": write an address with a prefix length, e.g. 10.0.0.0/8 or fd00::/8"##,
            r##"f.yaml:12:16: error: ServerAuthorization/default/a: spec.client.networks[1].except[0]: 192.168.0.0/16 is not inside 10.0.0.0/8; an exception must lie within the network"##,
            r##"f.yaml:12:32: error: ServerAuthorization/default/a: spec.client.networks[1].except[1]: 0.0.0.0/0 covers all of 10.0.0.0/8, so the network admits nothing"##,
        ],
    );
}

#[test]
fn server_authorization_unauthenticated_tls_with_identities() {
    check(
        r#"
apiVersion: policy.linkerd.io/v1beta1
kind: ServerAuthorization
metadata: {name: a}
spec:
  server: {name: api}
  client:
    unauthenticated: true
    meshTLS:
      unauthenticatedTLS: true
      serviceAccounts:
      - name: web
"#,
        &[
            r##"f.yaml:8:22: error: ServerAuthorization/default/a: spec.client.unauthenticated: unauthenticated must be false when meshTLS is set"##,
            r##"f.yaml:10:27: error: ServerAuthorization/default/a: spec.client.meshTLS.unauthenticatedTLS: unauthenticatedTLS must be false when identities or serviceAccounts are set"##,
        ],
    );
}

#[test]
fn authorization_policy_bad_kinds() {
    check(
        r#"
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: p}
spec:
  targetRef:
    group: apps
    kind: Deployment
    name: api
  requiredAuthenticationRefs:
  - {group: policy.linkerd.io, kind: MeshTLSAuthentication, name: a}
  - {group: policy.linkerd.io, kind: MeshTLSAuthentication, name: b}
  - {kind: Secret, name: c}
"#,
        &[
            r##"f.yaml:8:11: error: AuthorizationPolicy/default/p: spec.targetRef.kind: kind "Deployment" is not supported here; use one of Server, HTTPRoute, GRPCRoute, Namespace"##,
            r##"f.yaml:11:5: error: AuthorizationPolicy/default/p: spec.requiredAuthenticationRefs: only one MeshTLSAuthentication may be listed"##,
            r##"f.yaml:13:12: error: AuthorizationPolicy/default/p: spec.requiredAuthenticationRefs[2].kind: kind "Secret" is not supported here; use one of MeshTLSAuthentication, NetworkAuthentication, ServiceAccount"##,
        ],
    );
}

#[test]
fn authorization_policy_without_refs_is_allowed() {
    check_valid(
        r#"
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: api}
spec:
  podSelector: {matchLabels: {app: api}}
  port: 8080
  accessPolicy: deny
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: p}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: api}
  requiredAuthenticationRefs: []
"#,
        2,
    );
}

#[test]
fn mesh_tls_authentication_both_or_neither() {
    check(
        r#"
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {name: m}
spec:
  identities: ["*.linkerd.cluster.local"]
  identityRefs:
  - {kind: ServiceAccount, name: web}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {name: n}
spec: {}
"#,
        &[
            r##"f.yaml:6:3: error: MeshTLSAuthentication/default/m: spec: set either identities or identityRefs, not both"##,
            r##"f.yaml:13:7: error: MeshTLSAuthentication/default/n: spec: list identities or identityRefs"##,
        ],
    );
}

#[test]
fn network_authentication_without_networks() {
    check(
        r#"
apiVersion: policy.linkerd.io/v1alpha1
kind: NetworkAuthentication
metadata: {name: n}
spec:
  networks: []
"#,
        &[
            r##"f.yaml:6:3: error: NetworkAuthentication/default/n: spec: list at least one network"##,
        ],
    );
}

#[test]
fn rate_limit_zero_and_above_total() {
    check(
        r#"
apiVersion: policy.linkerd.io/v1alpha1
kind: HTTPLocalRateLimitPolicy
metadata: {name: rl}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: api}
  total: {requestsPerSecond: 100}
  identity: {requestsPerSecond: 0}
  overrides:
  - requestsPerSecond: 200
    clientRefs:
    - {kind: ServiceAccount, name: web}
"#,
        &[
            r##"f.yaml:8:33: error: HTTPLocalRateLimitPolicy/default/rl: spec.identity.requestsPerSecond: requestsPerSecond must be at least 1 (0 would refuse every request)"##,
            r##"f.yaml:10:24: error: HTTPLocalRateLimitPolicy/default/rl: spec.overrides[0].requestsPerSecond: override requestsPerSecond 200 is greater than total.requestsPerSecond 100"##,
        ],
    );
}

// ---------------------------------------------------------------------------
// ServiceProfile: invalid
// ---------------------------------------------------------------------------

const SP_HEAD: &str = "apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata: {name: api.production.svc.cluster.local, namespace: production}
";

#[test]
fn service_profile_route_without_name() {
    check(
        &format!(
            "{SP_HEAD}spec:
  routes:
  - condition: {{method: GET}}
"
        ),
        &[
            r##"f.yaml:6:5: error: ServiceProfile/production/api.production.svc.cluster.local: spec.routes[0]: route has no name; every route needs one (it labels the route's metrics)"##,
        ],
    );
}

#[test]
fn service_profile_empty_condition() {
    check(
        &format!(
            "{SP_HEAD}spec:
  routes:
  - name: r
    condition: {{}}
  - name: s
    condition:
      not: {{}}
"
        ),
        &[
            r##"f.yaml:7:16: error: ServiceProfile/production/api.production.svc.cluster.local: spec.routes[0].condition: condition is empty; set pathRegex, method, all, any or not"##,
            r##"f.yaml:10:12: error: ServiceProfile/production/api.production.svc.cluster.local: spec.routes[1].condition.not: condition is empty; set pathRegex, method, all, any or not"##,
        ],
    );
}

#[test]
fn service_profile_bad_regex_and_method() {
    check(
        &format!(
            "{SP_HEAD}spec:
  routes:
  - name: r
    condition:
      all:
      - pathRegex: /api/(users
      - method: FETCH
      any:
      - method: get
"
        ),
        &[
            r##"f.yaml:9:20: error: ServiceProfile/production/api.production.svc.cluster.local: spec.routes[0].condition.all[0].pathRegex: invalid regex "/api/(users": unclosed group"##,
            r##"f.yaml:10:17: error: ServiceProfile/production/api.production.svc.cluster.local: spec.routes[0].condition.all[1].method: "FETCH" is not an HTTP method; use one of GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH"##,
            r##"f.yaml:12:17: error: ServiceProfile/production/api.production.svc.cluster.local: spec.routes[0].condition.any[0].method: method "get" must be upper case: GET"##,
        ],
    );
}

#[test]
fn service_profile_bad_status_ranges() {
    check(
        &format!(
            "{SP_HEAD}spec:
  routes:
  - name: r
    condition: {{pathRegex: /.*}}
    responseClasses:
    - condition:
        status: {{min: 504, max: 500}}
      isFailure: true
    - condition:
        any:
        - status: {{min: 500, max: 700}}
"
        ),
        &[
            r##"f.yaml:10:17: error: ServiceProfile/production/api.production.svc.cluster.local: spec.routes[0].responseClasses[0].condition.status: min 504 is greater than max 500; the range matches nothing"##,
            r##"f.yaml:14:35: error: ServiceProfile/production/api.production.svc.cluster.local: spec.routes[0].responseClasses[1].condition.any[0].status.max: status 700 is outside 100..599"##,
        ],
    );
}

#[test]
fn service_profile_invalid_budget() {
    check(
        &format!(
            "{SP_HEAD}spec:
  retryBudget:
    retryRatio: 2000
    minRetriesPerSecond: 2147483647
    ttl: 90s
"
        ),
        &[
            r##"f.yaml:6:17: warning: ServiceProfile/production/api.production.svc.cluster.local: spec.retryBudget.retryRatio: retryRatio 2000 is outside 0..1000; the budget is invalid, so this profile's routes are never retried"##,
            r##"f.yaml:7:26: warning: ServiceProfile/production/api.production.svc.cluster.local: spec.retryBudget.minRetriesPerSecond: minRetriesPerSecond 2147483647 must be less than 2147483647; the budget is invalid, so this profile's routes are never retried"##,
            r##"f.yaml:8:10: warning: ServiceProfile/production/api.production.svc.cluster.local: spec.retryBudget.ttl: ttl 1m30s is outside 1s..60s; the budget is invalid, so this profile's routes are never retried"##,
        ],
    );
}

#[test]
fn service_profile_invalid_budget_low() {
    check(
        &format!(
            "{SP_HEAD}spec:
  retryBudget:
    retryRatio: -0.5
    minRetriesPerSecond: 1
    ttl: 500ms
"
        ),
        &[
            r##"f.yaml:6:17: warning: ServiceProfile/production/api.production.svc.cluster.local: spec.retryBudget.retryRatio: retryRatio -0.5 is outside 0..1000; the budget is invalid, so this profile's routes are never retried"##,
            r##"f.yaml:8:10: warning: ServiceProfile/production/api.production.svc.cluster.local: spec.retryBudget.ttl: ttl 500ms is outside 1s..60s; the budget is invalid, so this profile's routes are never retried"##,
        ],
    );
}

#[test]
fn service_profile_dst_override_weights() {
    check(
        &format!(
            "{SP_HEAD}spec:
  dstOverrides:
  - authority: api-v1.production.svc.cluster.local:80
    weight: 500m
  - authority: api-v2.production.svc.cluster.local:80
    weight: lots
"
        ),
        &[
            r##"f.yaml:9:13: error: ServiceProfile/production/api.production.svc.cluster.local: spec.dstOverrides[1].weight: invalid weight "lots": write a non-negative quantity such as 1, 100 or 500m"##,
        ],
    );
}

#[test]
fn service_profile_name_checks() {
    use mesh_core::path::PathSeg;
    use mesh_core::schema::linkerd_profile::check_name;
    use mesh_core::validate::Checker;
    let run = |name: &str, ns: &str| {
        let mut cx = Checker::new(&[
            PathSeg::Field("metadata".into()),
            PathSeg::Field("name".into()),
        ]);
        check_name(&mut cx, name, ns);
        cx.into_findings()
            .into_iter()
            .map(|f| format!("{:?}: {}: {}", f.severity, f.path, f.message))
            .collect::<Vec<_>>()
    };
    assert!(run("api.production.svc.cluster.local", "production").is_empty());
    assert!(run("api.production.svc.example.org", "production").is_empty());
    assert_eq!(
        run("api", "production"),
        [
            "Warning: metadata.name: name \"api\" is not a service FQDN <svc>.<ns>.svc.<cluster-domain> (e.g. web.production.svc.cluster.local); the profile applies to no service"
        ]
    );
    assert_eq!(
        run("api.staging.svc.cluster.local", "production"),
        [
            "Warning: metadata.name: name \"api.staging.svc.cluster.local\" names namespace \"staging\" but the profile is in \"production\"; Linkerd only reads profiles from the service's namespace (or the client's)"
        ]
    );
}

// ---------------------------------------------------------------------------
// HTTPRoute / GRPCRoute / Gateway / ReferenceGrant: invalid
// ---------------------------------------------------------------------------

const RT_HEAD: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs:
  - {group: \"\", kind: Service, name: api, port: 8080}
";

#[test]
fn httproute_bad_paths() {
    check(
        &format!(
            "{RT_HEAD}  rules:
  - matches:
    - path: {{type: Exact, value: api}}
    - path: {{value: v2}}
    - path: {{type: RegularExpression, value: \"/api/(users\"}}
    - path: {{type: PathPrefix, value: /a//b}}
    backendRefs:
    - {{name: api, port: 8080}}
"
        ),
        &[
            r##"f.yaml:9:34: error: HTTPRoute/default/r: spec.rules[0].matches[0].path.value: Exact path "api" must start with '/'"##,
            r##"f.yaml:10:21: error: HTTPRoute/default/r: spec.rules[0].matches[1].path.value: PathPrefix path "v2" must start with '/'"##,
            r##"f.yaml:11:46: error: HTTPRoute/default/r: spec.rules[0].matches[2].path.value: invalid regex "/api/(users": unclosed group"##,
            r##"f.yaml:12:39: error: HTTPRoute/default/r: spec.rules[0].matches[3].path.value: path "/a//b" must not contain '//'"##,
        ],
    );
}

#[test]
fn httproute_bad_headers_and_method() {
    check(
        &format!(
            "{RT_HEAD}  rules:
  - matches:
    - headers:
      - {{name: \"x header\", value: a}}
      - {{name: \"\", value: b}}
      - {{type: RegularExpression, name: x-re, value: \"[a-\"}}
      queryParams:
      - {{name: animal, value: whale}}
      - {{name: animal, value: dolphin}}
    backendRefs:
    - {{name: api, port: 8080}}
"
        ),
        &[
            r##"f.yaml:10:16: error: HTTPRoute/default/r: spec.rules[0].matches[0].headers[0].name: invalid header name "x header": use letters, digits and !#$%&'*+-.^_`|~ only"##,
            r##"f.yaml:11:16: error: HTTPRoute/default/r: spec.rules[0].matches[0].headers[1].name: header name is empty"##,
            r##"f.yaml:12:54: error: HTTPRoute/default/r: spec.rules[0].matches[0].headers[2].value: invalid regex "[a-": unclosed character class"##,
            r##"f.yaml:15:16: warning: HTTPRoute/default/r: spec.rules[0].matches[0].queryParams[1].name: query parameter "animal" is matched twice in this match; only the first counts"##,
        ],
    );
}

#[test]
fn httproute_method_not_http() {
    check(
        &format!(
            "{RT_HEAD}  rules:
  - matches:
    - method: FETCH
"
        ),
        &[
            r##"f.yaml:9:15: error: HTTPRoute/default/r: spec.rules[0].matches[0].method: unknown value `FETCH`, expected one of GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH"##,
        ],
    );
}

#[test]
fn httproute_too_many_rules() {
    let mut yaml = format!("{RT_HEAD}  rules:\n");
    for i in 0..17 {
        yaml.push_str(&format!(
            "  - matches: [{{path: {{value: /p{i}}}}}]\n    backendRefs: [{{name: api, port: 8080}}]\n"
        ));
    }
    check(
        &yaml,
        &[
            r##"f.yaml:8:5: error: HTTPRoute/default/r: spec.rules: at most 16 rules are allowed, found 17; split the route"##,
        ],
    );
}

#[test]
fn httproute_too_many_matches() {
    let mut yaml =
        format!("{RT_HEAD}  rules:\n  - backendRefs: [{{name: api, port: 8080}}]\n    matches:\n");
    for i in 0..65 {
        yaml.push_str(&format!("    - path: {{value: /p{i}}}\n"));
    }
    check(
        &yaml,
        &[
            r##"f.yaml:10:7: error: HTTPRoute/default/r: spec.rules[0].matches: at most 64 matches are allowed in a rule, found 65"##,
        ],
    );
}

#[test]
fn httproute_redirect_with_rewrite_and_backends() {
    check(
        &format!(
            "{RT_HEAD}  rules:
  - filters:
    - type: RequestRedirect
      requestRedirect: {{scheme: https}}
    - type: URLRewrite
      urlRewrite: {{hostname: example.com}}
    backendRefs:
    - {{name: api, port: 8080}}
"
        ),
        &[
            r##"f.yaml:9:7: error: HTTPRoute/default/r: spec.rules[0].filters: RequestRedirect and URLRewrite cannot be used in the same rule"##,
            r##"f.yaml:14:7: error: HTTPRoute/default/r: spec.rules[0].backendRefs: a rule with a RequestRedirect filter must not have backendRefs"##,
        ],
    );
}

#[test]
fn httproute_replace_prefix_needs_one_prefix_match() {
    check(
        &format!(
            "{RT_HEAD}  rules:
  - matches:
    - path: {{type: Exact, value: /old}}
    filters:
    - type: URLRewrite
      urlRewrite:
        path: {{type: ReplacePrefixMatch, replacePrefixMatch: /new}}
    backendRefs:
    - {{name: api, port: 8080}}
  - matches:
    - path: {{value: /a}}
    - path: {{value: /b}}
    filters:
    - type: RequestRedirect
      requestRedirect:
        path: {{type: ReplacePrefixMatch, replacePrefixMatch: /c}}
"
        ),
        &[
            r##"f.yaml:13:15: error: HTTPRoute/default/r: spec.rules[0].filters[0].urlRewrite.path: ReplacePrefixMatch needs the rule to have exactly one match, with a PathPrefix path"##,
            r##"f.yaml:22:15: error: HTTPRoute/default/r: spec.rules[1].filters[0].requestRedirect.path: ReplacePrefixMatch needs the rule to have exactly one match, with a PathPrefix path"##,
        ],
    );
}

#[test]
fn httproute_redirect_status_and_path_modifier() {
    check(
        &format!(
            "{RT_HEAD}  rules:
  - filters:
    - type: RequestRedirect
      requestRedirect:
        statusCode: 304
        port: 0
        path: {{type: ReplaceFullPath, replacePrefixMatch: /x}}
"
        ),
        &[
            r##"f.yaml:11:21: error: HTTPRoute/default/r: spec.rules[0].filters[0].requestRedirect.statusCode: redirect status 304 is not one of 301, 302, 303, 307, 308"##,
            r##"f.yaml:12:15: error: HTTPRoute/default/r: spec.rules[0].filters[0].requestRedirect.port: port 0 is outside 1..65535"##,
            r##"f.yaml:13:15: error: HTTPRoute/default/r: spec.rules[0].filters[0].requestRedirect.path: type ReplaceFullPath needs `replaceFullPath`"##,
            r##"f.yaml:13:59: error: HTTPRoute/default/r: spec.rules[0].filters[0].requestRedirect.path.replacePrefixMatch: `replacePrefixMatch` does not go with type ReplaceFullPath"##,
        ],
    );
}

#[test]
fn httproute_filter_payload_mismatch() {
    check(
        &format!(
            "{RT_HEAD}  rules:
  - filters:
    - type: RequestHeaderModifier
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{{name: x-a, value: \"1\"}}]
        remove: [X-A]
      urlRewrite: {{hostname: example.com}}
    backendRefs:
    - {{name: api, port: 8080}}
"
        ),
        &[
            r##"f.yaml:9:7: error: HTTPRoute/default/r: spec.rules[0].filters: RequestHeaderModifier may appear only once in a rule"##,
            r##"f.yaml:9:7: error: HTTPRoute/default/r: spec.rules[0].filters[0]: type RequestHeaderModifier needs a `requestHeaderModifier` block"##,
            r##"f.yaml:13:18: error: HTTPRoute/default/r: spec.rules[0].filters[1].requestHeaderModifier.remove[0]: header "X-A" already has an action in this filter; one action per header"##,
            r##"f.yaml:14:19: error: HTTPRoute/default/r: spec.rules[0].filters[1].urlRewrite: `urlRewrite` does not belong to a RequestHeaderModifier filter; remove it or change type"##,
        ],
    );
}

#[test]
fn httproute_filter_type_typo() {
    check(
        &format!(
            "{RT_HEAD}  rules:
  - filters:
    - type: RequestHeaderModifer
      requestHeaderModifier:
        add: [{{name: x-a, value: \"1\"}}]
"
        ),
        &[
            r##"f.yaml:9:13: error: HTTPRoute/default/r: spec.rules[0].filters[0].type: unknown value `RequestHeaderModifer`, expected one of RequestHeaderModifier, ResponseHeaderModifier, RequestMirror, RequestRedirect, URLRewrite, ExtensionRef, CORS, ExternalAuth (did you mean `RequestHeaderModifier`?)"##,
        ],
    );
}

#[test]
fn httproute_bad_mirrors() {
    check(
        &format!(
            "{RT_HEAD}  rules:
  - filters:
    - type: RequestMirror
      requestMirror:
        backendRef: {{name: shadow, port: 8080}}
        percent: 150
    - type: RequestMirror
      requestMirror:
        backendRef: {{name: shadow, port: 8080}}
        fraction: {{numerator: 1, denominator: 0}}
    - type: RequestMirror
      requestMirror:
        backendRef: {{name: shadow}}
        fraction: {{numerator: 5, denominator: 4}}
    backendRefs:
    - {{name: api, port: 8080}}
"
        ),
        &[
            r##"f.yaml:12:18: error: HTTPRoute/default/r: spec.rules[0].filters[0].requestMirror.percent: percent 150 is outside 0..100"##,
            r##"f.yaml:16:47: error: HTTPRoute/default/r: spec.rules[0].filters[1].requestMirror.fraction.denominator: denominator must be greater than 0"##,
            r##"f.yaml:19:21: error: HTTPRoute/default/r: spec.rules[0].filters[2].requestMirror.backendRef: a backendRef to a Service needs a port (e.g. port: 8080)"##,
            r##"f.yaml:20:31: error: HTTPRoute/default/r: spec.rules[0].filters[2].requestMirror.fraction.numerator: numerator 5 is greater than denominator 4"##,
        ],
    );
}

#[test]
fn httproute_backend_port_and_weight() {
    check(
        &format!(
            "{RT_HEAD}  rules:
  - backendRefs:
    - name: api
    - name: api-v2
      port: 8080
      weight: 2000000
    - group: example.com
      kind: Bucket
      name: b
"
        ),
        &[
            r##"f.yaml:9:7: error: HTTPRoute/default/r: spec.rules[0].backendRefs[0]: a backendRef to a Service needs a port (e.g. port: 8080)"##,
            r##"f.yaml:12:15: error: HTTPRoute/default/r: spec.rules[0].backendRefs[1].weight: weight 2000000 is above the maximum 1000000"##,
        ],
    );
}

#[test]
fn httproute_backend_request_longer_than_request() {
    check(
        &format!(
            "{RT_HEAD}  rules:
  - timeouts: {{request: 5s, backendRequest: 10s}}
    retry: {{attempts: 2, codes: [503, 200]}}
    backendRefs:
    - {{name: api, port: 8080}}
"
        ),
        &[
            r##"f.yaml:8:45: error: HTTPRoute/default/r: spec.rules[0].timeouts.backendRequest: backendRequest 10s is longer than request 5s; it must not exceed it"##,
            r##"f.yaml:9:39: error: HTTPRoute/default/r: spec.rules[0].retry.codes[1]: retry code 200 is outside 400..599"##,
        ],
    );
}

#[test]
fn httproute_without_parents_warns() {
    check(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  hostnames: ["*.example.com", "10.0.0.1", "api.*.com"]
  rules:
  - backendRefs:
    - {name: api, port: 8080}
"#,
        &[
            r##"f.yaml:6:3: warning: HTTPRoute/default/r: spec: no parentRefs: the route attaches to no Gateway, Service or Server and serves no traffic"##,
            r##"f.yaml:6:32: error: HTTPRoute/default/r: spec.hostnames[1]: hostname "10.0.0.1" is an IP address; hostnames must be DNS names"##,
            r##"f.yaml:6:44: error: HTTPRoute/default/r: spec.hostnames[2]: invalid host "api.*.com": "*" is not a DNS label (a wildcard may only be a leading `*.`)"##,
        ],
    );
}

#[test]
fn linkerd_httproute_method_lowercase() {
    check(
        r#"
apiVersion: policy.linkerd.io/v1beta2
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs:
  - {group: policy.linkerd.io, kind: Server, name: api}
  rules:
  - matches:
    - method: get
"#,
        &[
            r##"f.yaml:10:15: error: HTTPRoute/default/r: spec.rules[0].matches[0].method: unknown value `get`, expected one of GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH (did you mean `GET`?)"##,
        ],
    );
}

#[test]
fn linkerd_httproute_is_validated_the_same() {
    check(
        r#"
apiVersion: policy.linkerd.io/v1beta3
kind: HTTPRoute
metadata: {name: r, namespace: production}
spec:
  parentRefs:
  - {group: policy.linkerd.io, kind: Server, name: api}
  rules:
  - matches:
    - path: {type: Exact, value: api}
      method: GET
    timeouts: {request: 1s, backendRequst: 2s}
"#,
        &[
            r##"f.yaml:10:34: error: HTTPRoute/production/r: spec.rules[0].matches[0].path.value: Exact path "api" must start with '/'"##,
            r##"f.yaml:12:29: error: HTTPRoute/production/r: spec.rules[0].timeouts.backendRequst: unknown field `backendRequst` (did you mean `backendRequest`?)"##,
        ],
    );
}

#[test]
fn grpcroute_bad_method_matches() {
    check(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g}
spec:
  parentRefs:
  - {group: "", kind: Service, name: grpc, port: 50051}
  rules:
  - matches:
    - method: {}
    - method: {service: "helloworld/Greeter", method: "Say Hello"}
    - method: {type: RegularExpression, service: "hello(", method: ".*"}
    backendRefs:
    - {name: grpc, port: 50051}
"#,
        &[
            r##"f.yaml:10:15: error: GRPCRoute/default/g: spec.rules[0].matches[0].method: set service, method or both"##,
            r##"f.yaml:11:25: error: GRPCRoute/default/g: spec.rules[0].matches[1].method.service: invalid gRPC service "helloworld/Greeter": write a dotted name such as helloworld.Greeter"##,
            r##"f.yaml:11:55: error: GRPCRoute/default/g: spec.rules[0].matches[1].method.method: invalid gRPC method "Say Hello": write a bare method name such as SayHello"##,
            r##"f.yaml:12:50: error: GRPCRoute/default/g: spec.rules[0].matches[2].method.service: invalid regex "hello(": unclosed group"##,
        ],
    );
}

#[test]
fn grpcroute_has_no_redirect_filter() {
    check(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g}
spec:
  parentRefs:
  - {group: "", kind: Service, name: grpc, port: 50051}
  rules:
  - filters:
    - type: RequestRedirect
      requestMirror:
        backendRef: {name: shadow}
"#,
        &[
            r##"f.yaml:10:13: error: GRPCRoute/default/g: spec.rules[0].filters[0].type: unknown value `RequestRedirect`, expected one of RequestHeaderModifier, ResponseHeaderModifier, RequestMirror, ExtensionRef"##,
        ],
    );
}

#[test]
fn gateway_listener_problems() {
    check(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: istio
  listeners:
  - name: web
    port: 443
    protocol: HTTPS
  - name: web
    port: 80
    protocol: HTTP
    tls:
      certificateRefs: [{name: cert}]
  - name: tcp
    port: 9000
    protocol: TCP
    hostname: tcp.example.com
  - name: tls
    port: 8443
    protocol: TLS
    tls: {mode: Terminate}
    allowedRoutes:
      namespaces: {from: Selector}
  addresses:
  - value: not-an-ip
"#,
        &[
            r##"f.yaml:8:5: error: Gateway/default/gw: spec.listeners[0]: protocol HTTPS needs a tls block"##,
            r##"f.yaml:11:11: error: Gateway/default/gw: spec.listeners[1].name: listener name "web" is already used by listeners[0]"##,
            r##"f.yaml:15:7: error: Gateway/default/gw: spec.listeners[1].tls: tls must not be set for protocol HTTP"##,
            r##"f.yaml:19:15: error: Gateway/default/gw: spec.listeners[2].hostname: hostname must not be set for protocol TCP"##,
            r##"f.yaml:23:10: error: Gateway/default/gw: spec.listeners[3].tls: mode Terminate needs certificateRefs"##,
            r##"f.yaml:25:19: error: Gateway/default/gw: spec.listeners[3].allowedRoutes.namespaces: from: Selector needs a selector"##,
            r##"f.yaml:27:12: error: Gateway/default/gw: spec.addresses[0].value: "not-an-ip" is not an IP address"##,
        ],
    );
}

#[test]
fn gateway_without_listeners() {
    check(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: istio
"#,
        &[
            r##"f.yaml:6:3: error: Gateway/default/gw: spec: a Gateway needs at least one listener"##,
        ],
    );
}

#[test]
fn reference_grant_needs_from_and_to() {
    check(
        r#"
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: g}
spec:
  from:
  - {group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: Prod}
"#,
        &[
            r##"f.yaml:6:3: error: ReferenceGrant/default/g: spec: to is empty; list the kinds that may be referred to"##,
            r##"f.yaml:7:68: error: ReferenceGrant/default/g: spec.from[0].namespace: namespace "Prod" is not a valid name (lowercase letters, digits, '-' and '.')"##,
        ],
    );
}

// ---------------------------------------------------------------------------
// Valid configurations and the JSON round trip
// ---------------------------------------------------------------------------

fn seed(name: &str) -> String {
    let path = format!("{}/../../fixtures/seed/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn seed_server_authorization_loads() {
    let loaded = check_valid(&seed("07-server-authorization.yaml"), 2);
    let Spec::Server(server) = &loaded.resources[0].spec else {
        panic!("expected a Server")
    };
    assert_eq!(
        server.proxy_protocol,
        Some(mesh_core::schema::linkerd_policy::ProxyProtocol::Http2)
    );
    assert_eq!(
        server.port,
        mesh_core::schema::common::PortRef::Name("http".into())
    );
}

#[test]
fn seed_httproute_loads() {
    let loaded = check_valid(&seed("08-httproute-traffic-splitting.yaml"), 1);
    let Spec::LinkerdHttpRoute(route) = &loaded.resources[0].spec else {
        panic!("expected a Linkerd HTTPRoute")
    };
    let rule = &route.rules[0];
    let path = rule.matches[0].path.as_ref().unwrap();
    assert_eq!(
        path.kind(),
        mesh_core::schema::gateway_api::PathMatchType::PathPrefix
    );
    assert_eq!(path.value(), "/api/v1");
    let weights: Vec<u32> = rule.backend_refs.iter().map(|b| b.weight()).collect();
    assert_eq!(weights, [90, 10]);
}

#[test]
fn seed_service_profile_loads() {
    let loaded = check_valid(&seed("09-service-profile-retries-timeouts.yaml"), 1);
    let Spec::ServiceProfile(sp) = &loaded.resources[0].spec else {
        panic!("expected a ServiceProfile")
    };
    assert_eq!(sp.routes.len(), 2);
    assert!(sp.routes[0].is_retryable);
    assert_eq!(sp.routes[1].timeout.unwrap().to_string(), "30s");
    assert!(sp.retry_budget.as_ref().unwrap().is_valid());
}

#[test]
fn service_profile_with_classes_and_overrides_loads() {
    check_valid(
        r#"
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata:
  name: webapp.emojivoto.svc.cluster.local
  namespace: emojivoto
spec:
  routes:
  - name: POST /api/vote
    condition:
      method: POST
      pathRegex: /api/vote
    responseClasses:
    - condition:
        status: {min: 500, max: 599}
      isFailure: true
    - condition:
        all:
        - status: {min: 200}
        - not: {status: {min: 201, max: 299}}
  - name: not-health
    condition:
      any:
      - pathRegex: /api/.*
      - not: {pathRegex: /health}
  retryBudget: {retryRatio: 0.2, minRetriesPerSecond: 10, ttl: 10s}
  dstOverrides:
  - authority: webapp-v1.emojivoto.svc.cluster.local:80
    weight: 500m
  - authority: webapp-v2.emojivoto.svc.cluster.local:80
    weight: 1
  opaquePorts:
    3306: true
"#,
        1,
    );
}

#[test]
fn linkerd_policy_doc_examples_load() {
    let loaded = check_valid(
        r#"
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: emoji-grpc, namespace: emojivoto}
spec:
  podSelector:
    matchExpressions:
    - {key: app, operator: In, values: [emoji-svc]}
  port: 8080
  proxyProtocol: gRPC
  accessPolicy: all-authenticated
---
apiVersion: policy.linkerd.io/v1beta1
kind: ServerAuthorization
metadata: {name: emoji-grpc, namespace: emojivoto}
spec:
  server:
    selector: {matchLabels: {app: emoji-svc}}
  client:
    meshTLS:
      identities:
      - "*.emojivoto.serviceaccount.identity.linkerd.cluster.local"
      - "web.emojivoto.serviceaccount.identity.linkerd.cluster.local"
    networks:
    - cidr: 10.0.0.0/8
      except: [10.1.0.0/16]
    - cidr: fd00::/8
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {name: web-authn, namespace: emojivoto}
spec:
  identityRefs:
  - {kind: ServiceAccount, name: web}
  - {kind: Namespace, name: emojivoto}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: NetworkAuthentication
metadata: {name: cluster, namespace: emojivoto}
spec:
  networks:
  - cidr: 10.0.0.0/8
  - cidr: 100.64.0.0/10
    except: [100.64.1.0/24]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: emoji-grpc, namespace: emojivoto}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: emoji-grpc}
  requiredAuthenticationRefs:
  - {group: policy.linkerd.io, kind: MeshTLSAuthentication, name: web-authn}
  - {group: policy.linkerd.io, kind: NetworkAuthentication, name: cluster}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: HTTPLocalRateLimitPolicy
metadata: {name: emoji-rl, namespace: emojivoto}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: emoji-grpc}
  total: {requestsPerSecond: 100}
  identity: {requestsPerSecond: 20}
  overrides:
  - requestsPerSecond: 50
    clientRefs:
    - {kind: ServiceAccount, namespace: emojivoto, name: web}
"#,
        6,
    );
    let Spec::ServerAuthorization(authz) = &loaded.resources[1].spec else {
        panic!("expected a ServerAuthorization")
    };
    assert_eq!(authz.client.networks.len(), 2);
}

#[test]
fn gateway_api_httproute_with_filters_loads() {
    let loaded = check_valid(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: store, namespace: shop}
spec:
  parentRefs:
  - {name: gw, namespace: infra, sectionName: https}
  - {group: "", kind: Service, name: store, port: 80}
  hostnames: [store.example.com, "*.store.example.com"]
  rules:
  - name: old-api
    matches:
    - path: {type: PathPrefix, value: /v1}
    filters:
    - type: RequestRedirect
      requestRedirect:
        scheme: https
        hostname: api.example.com
        path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}
        statusCode: 301
  - matches:
    - path: {type: Exact, value: /login}
      method: POST
      headers:
      - {name: x-canary, value: "true"}
      - {type: RegularExpression, name: user-agent, value: ".*Mobile.*"}
      queryParams:
      - {name: debug, value: "1"}
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: x-env, value: prod}]
        add: [{name: x-trace, value: "on"}]
        remove: [x-debug]
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        remove: [server]
    - type: RequestMirror
      requestMirror:
        backendRef: {name: store-shadow, port: 80}
        fraction: {numerator: 1, denominator: 10}
    - type: URLRewrite
      urlRewrite:
        hostname: store.internal
        path: {type: ReplaceFullPath, replaceFullPath: /auth/login}
    - type: CORS
      cors:
        allowOrigins: ["https://example.com"]
        allowMethods: [GET, POST]
        allowCredentials: true
        maxAge: 600
    - type: ExtensionRef
      extensionRef: {group: example.com, kind: Plugin, name: audit}
    backendRefs:
    - name: store-v1
      port: 8080
      weight: 90
    - name: store-v2
      namespace: shop-canary
      port: 8080
      weight: 10
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier:
          set: [{name: x-version, value: v2}]
    timeouts: {request: 10s, backendRequest: 2s}
    retry: {attempts: 3, codes: [500, 502, 503, 504], backoff: 100ms}
    sessionPersistence:
      sessionName: shop
      type: Cookie
  - matches:
    - path: {type: RegularExpression, value: "/items/[0-9]+"}
    backendRefs:
    - {name: store-v1, port: 8080}
    timeouts: {request: 0s, backendRequest: 30s}
"#,
        1,
    );
    let Spec::HttpRoute(route) = &loaded.resources[0].spec else {
        panic!("expected an HTTPRoute")
    };
    assert_eq!(route.rules[1].filters.len(), 6);
    assert_eq!(route.rules[1].backend_refs[1].filters.len(), 1);
}

#[test]
fn grpcroute_loads() {
    check_valid(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: greeter}
spec:
  parentRefs:
  - {group: "", kind: Service, name: greeter, port: 50051}
  hostnames: [greeter.example.com]
  rules:
  - matches:
    - method: {service: helloworld.Greeter, method: SayHello}
      headers:
      - {name: x-canary, value: "yes"}
    - method: {type: RegularExpression, service: "helloworld\\..*"}
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        add: [{name: x-routed, value: grpc}]
    - type: RequestMirror
      requestMirror:
        backendRef: {name: greeter-shadow, port: 50051}
        percent: 5
    backendRefs:
    - {name: greeter-v1, port: 50051, weight: 3}
    - {name: greeter-v2, port: 50051, weight: 1}
"#,
        1,
    );
}

#[test]
fn gateway_and_reference_grant_load() {
    check_valid(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: istio
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes:
      namespaces: {from: All}
  - name: https
    hostname: "*.example.com"
    port: 443
    protocol: HTTPS
    tls:
      mode: Terminate
      certificateRefs:
      - {kind: Secret, name: wildcard-cert}
    allowedRoutes:
      namespaces:
        from: Selector
        selector: {matchLabels: {shared-gateway: "true"}}
      kinds:
      - {kind: HTTPRoute}
  - name: passthrough
    port: 8443
    protocol: TLS
    tls: {mode: Passthrough}
  addresses:
  - {type: IPAddress, value: 192.0.2.10}
  - {type: Hostname, value: gw.example.com}
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: allow-shop, namespace: shop-canary}
spec:
  from:
  - {group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: shop}
  to:
  - {group: "", kind: Service}
  - {group: "", kind: Service, name: store-v2}
"#,
        2,
    );
}
