//! Istio security (PeerAuthentication, AuthorizationPolicy,
//! RequestAuthentication), Telemetry and IstioOperator: schema and
//! validation, asserted as the exact diagnostic lines `mesh validate` prints.

use mesh_core::load::{LoadOptions, Loaded, load_str};
use mesh_core::resource::{Kind, Spec};

/// Wraps a spec body (its lines start at line 6 of the file); the resource
/// is named `p` in namespace `default`.
fn doc(api: &str, kind: &str, body: &str) -> String {
    format!("apiVersion: {api}\nkind: {kind}\nmetadata:\n  name: p\nspec:\n{body}")
}

fn load(text: &str) -> Loaded {
    load_str("f.yaml", text, &LoadOptions::default())
}

/// The printed diagnostics of a resource with this spec body.
fn diags(api: &str, kind: &str, body: &str) -> String {
    load(&doc(api, kind, body)).diagnostics.to_string()
}

fn lines(expected: &[&str]) -> String {
    expected.iter().map(|l| format!("{l}\n")).collect()
}

/// Asserts every resource of `text` survives the JSON round trip that
/// `/config_dump` relies on.
fn assert_round_trip(loaded: &Loaded) {
    for r in &loaded.resources {
        let json = serde_json::to_value(&r.spec).expect("serializes");
        let back = Spec::from_json(r.kind, json.clone())
            .unwrap_or_else(|e| panic!("{}: {e}\n{json:#}", r.id()));
        assert_eq!(back, r.spec, "{}", r.id());
    }
}

/// Asserts `text` loads with no diagnostic at all, and round-trips.
fn assert_clean(text: &str, count: usize) -> Loaded {
    let loaded = load(text);
    assert_eq!(loaded.diagnostics.to_string(), "");
    assert_eq!(loaded.resources.len(), count);
    assert_round_trip(&loaded);
    loaded
}

// ------------------------------------------------------- invalid configs

#[test]
fn peer_auth_mode_typo() {
    let out = diags(
        "security.istio.io/v1beta1",
        "PeerAuthentication",
        r#"  mtls:
    mode: STRCT
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:7:11: error: PeerAuthentication/default/p: spec.mtls.mode: unknown value `STRCT`, expected one of UNSET, DISABLE, PERMISSIVE, STRICT (did you mean `STRICT`?)"#,
        ])
    );
}

#[test]
fn peer_auth_port_level_needs_selector() {
    let out = diags(
        "security.istio.io/v1beta1",
        "PeerAuthentication",
        r#"  mtls:
    mode: STRICT
  portLevelMtls:
    9090:
      mode: DISABLE
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:9:5: error: PeerAuthentication/default/p: spec.portLevelMtls: portLevelMtls is only valid with a selector (selector.matchLabels); Istio ignores it on namespace- and mesh-wide policies"#,
        ])
    );
}

#[test]
fn peer_auth_port_key_not_a_number() {
    let out = diags(
        "security.istio.io/v1beta1",
        "PeerAuthentication",
        r#"  selector:
    matchLabels:
      app: api
  portLevelMtls:
    metrics:
      mode: DISABLE
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:11:7: error: PeerAuthentication/default/p: spec.portLevelMtls.metrics: "metrics" is not a port number; portLevelMtls keys are workload port numbers 1..65535"#,
        ])
    );
}

#[test]
fn peer_auth_port_key_out_of_range() {
    let out = diags(
        "security.istio.io/v1beta1",
        "PeerAuthentication",
        r#"  selector:
    matchLabels:
      app: api
  portLevelMtls:
    0:
      mode: DISABLE
    70000:
      mode: PERMISSIVE
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:11:7: error: PeerAuthentication/default/p: spec.portLevelMtls["0"]: port 0 is outside 1..65535; portLevelMtls keys are workload port numbers"#,
            r#"f.yaml:13:7: error: PeerAuthentication/default/p: spec.portLevelMtls["70000"]: port 70000 is outside 1..65535; portLevelMtls keys are workload port numbers"#,
        ])
    );
}

#[test]
fn peer_auth_port_level_unknown_field() {
    let out = diags(
        "security.istio.io/v1beta1",
        "PeerAuthentication",
        r#"  selector:
    matchLabels:
      app: api
  portLevelMtls:
    9090:
      mod: DISABLE
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:11:7: error: PeerAuthentication/default/p: spec.portLevelMtls["9090"].mod: unknown field `mod` (did you mean `mode`?)"#,
        ])
    );
}

#[test]
fn peer_auth_selector_wildcard() {
    let out = diags(
        "security.istio.io/v1beta1",
        "PeerAuthentication",
        r#"  selector:
    matchLabels:
      app: "api-*"
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:8:12: error: PeerAuthentication/default/p: spec.selector.matchLabels.app: wildcard not allowed in label value "api-*"; selectors match exact labels"#,
        ])
    );
}

#[test]
fn authz_custom_needs_provider() {
    let out = diags(
        "security.istio.io/v1",
        "AuthorizationPolicy",
        r#"  action: CUSTOM
  rules:
  - to:
    - operation:
        paths: ["/admin/*"]
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:6:11: error: AuthorizationPolicy/default/p: spec.action: action CUSTOM needs a provider (provider.name, an extension provider in meshConfig)"#,
        ])
    );
}

#[test]
fn authz_provider_needs_custom() {
    let out = diags(
        "security.istio.io/v1",
        "AuthorizationPolicy",
        r#"  action: ALLOW
  provider:
    name: ext-authz
  rules:
  - {}
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:8:5: error: AuthorizationPolicy/default/p: spec.provider: provider is only allowed with action CUSTOM (this policy's action is ALLOW)"#,
        ])
    );
}

#[test]
fn authz_action_typo() {
    let out = diags(
        "security.istio.io/v1",
        "AuthorizationPolicy",
        r#"  action: DENIED
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:6:11: error: AuthorizationPolicy/default/p: spec.action: unknown value `DENIED`, expected one of ALLOW, DENY, AUDIT, CUSTOM"#,
        ])
    );
}

#[test]
fn authz_principal_malformed() {
    let out = diags(
        "security.istio.io/v1",
        "AuthorizationPolicy",
        r#"  rules:
  - from:
    - source:
        principals: ["cluster.local/production/frontend"]
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:9:22: error: AuthorizationPolicy/default/p: spec.rules[0].from[0].source.principals[0]: invalid principal "cluster.local/production/frontend": expected <trust-domain>/ns/<namespace>/sa/<service-account>, e.g. cluster.local/ns/default/sa/sleep"#,
        ])
    );
}

#[test]
fn authz_not_principal_malformed() {
    let out = diags(
        "security.istio.io/v1",
        "AuthorizationPolicy",
        r#"  action: DENY
  rules:
  - from:
    - source:
        notPrincipals:
        - cluster.local/ns/prod/frontend
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:11:11: error: AuthorizationPolicy/default/p: spec.rules[0].from[0].source.notPrincipals[0]: invalid principal "cluster.local/ns/prod/frontend": expected <trust-domain>/ns/<namespace>/sa/<service-account>, e.g. cluster.local/ns/default/sa/sleep"#,
        ])
    );
}

#[test]
fn authz_wildcard_in_the_middle() {
    let out = diags(
        "security.istio.io/v1",
        "AuthorizationPolicy",
        r#"  rules:
  - from:
    - source:
        namespaces: ["prod-*-east"]
        requestPrincipals: ["*@example.com*"]
    to:
    - operation:
        hosts: ["api.*.example.com"]
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:9:22: error: AuthorizationPolicy/default/p: spec.rules[0].from[0].source.namespaces[0]: invalid pattern "prod-*-east": `*` may only be a prefix (`*abc`), a suffix (`abc*`) or the whole value, not in the middle"#,
            r#"f.yaml:13:17: error: AuthorizationPolicy/default/p: spec.rules[0].to[0].operation.hosts[0]: invalid pattern "api.*.example.com": `*` may only be a prefix (`*abc`), a suffix (`abc*`) or the whole value, not in the middle"#,
        ])
    );
}

#[test]
fn authz_principal_wildcard_in_the_middle() {
    let out = diags(
        "security.istio.io/v1",
        "AuthorizationPolicy",
        r#"  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/*/sa/frontend"]
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:9:22: error: AuthorizationPolicy/default/p: spec.rules[0].from[0].source.principals[0]: invalid pattern "cluster.local/ns/*/sa/frontend": `*` may only be a prefix (`*abc`), a suffix (`abc*`) or the whole value, not in the middle"#,
        ])
    );
}

#[test]
fn authz_ip_blocks() {
    let out = diags(
        "security.istio.io/v1",
        "AuthorizationPolicy",
        r#"  rules:
  - from:
    - source:
        ipBlocks: ["10.0.0.300"]
        notRemoteIpBlocks: ["10.0.0.0/40"]
        remoteIpBlocks: ["192.168.0.0/16", "2001:db8::/32"]
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:9:20: error: AuthorizationPolicy/default/p: spec.rules[0].from[0].source.ipBlocks[0]: "10.0.0.300" is not an IP address or a CIDR block (e.g. 10.0.0.0/8)"#,
            r#"f.yaml:10:29: error: AuthorizationPolicy/default/p: spec.rules[0].from[0].source.notRemoteIpBlocks[0]: "10.0.0.0/40" has an invalid prefix length (0..32 for this address)"#,
        ])
    );
}

#[test]
fn authz_ports() {
    let out = diags(
        "security.istio.io/v1",
        "AuthorizationPolicy",
        r#"  rules:
  - to:
    - operation:
        ports: ["http", "70000", "8080"]
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:9:17: error: AuthorizationPolicy/default/p: spec.rules[0].to[0].operation.ports[0]: invalid port "http": ports are numbers 1..65535"#,
            r#"f.yaml:9:25: error: AuthorizationPolicy/default/p: spec.rules[0].to[0].operation.ports[1]: port 70000 is outside 1..65535"#,
        ])
    );
}

#[test]
fn authz_lower_case_method() {
    let out = diags(
        "security.istio.io/v1",
        "AuthorizationPolicy",
        r#"  rules:
  - to:
    - operation:
        methods: ["GET", "post"]
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:9:26: error: AuthorizationPolicy/default/p: spec.rules[0].to[0].operation.methods[1]: invalid method "post": methods are upper-case HTTP tokens and match case-sensitively (write "POST")"#,
        ])
    );
}

#[test]
fn authz_path_without_slash() {
    let out = diags(
        "security.istio.io/v1",
        "AuthorizationPolicy",
        r#"  rules:
  - to:
    - operation:
        paths: ["api/users", "*.css", "/ok*"]
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:9:17: error: AuthorizationPolicy/default/p: spec.rules[0].to[0].operation.paths[0]: invalid path "api/users": paths start with `/` (or use a `*` pattern)"#,
        ])
    );
}

#[test]
fn authz_path_template_any_not_last() {
    let out = diags(
        "security.istio.io/v1",
        "AuthorizationPolicy",
        r#"  rules:
  - to:
    - operation:
        notPaths: ["/store/{**}/item/{*}"]
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:9:20: error: AuthorizationPolicy/default/p: spec.rules[0].to[0].operation.notPaths[0]: invalid path template "/store/{**}/item/{*}": `{**}` must be the last operator (no `{*}` or `{**}` after it)"#,
        ])
    );
}

#[test]
fn authz_path_template_partial_segment() {
    let out = diags(
        "security.istio.io/v1",
        "AuthorizationPolicy",
        r#"  rules:
  - to:
    - operation:
        paths: ["/users/id-{*}", "/orders/{id}"]
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:9:17: error: AuthorizationPolicy/default/p: spec.rules[0].to[0].operation.paths[0]: invalid path template "/users/id-{*}": `{*}` and `{**}` must each fill a whole path segment, and other segments are literal text (segment "id-{*}")"#,
            r#"f.yaml:9:34: error: AuthorizationPolicy/default/p: spec.rules[0].to[0].operation.paths[1]: invalid path "/orders/{id}": `{` and `}` are only allowed in the path templates `{*}` and `{**}`"#,
        ])
    );
}

#[test]
fn authz_when_key_unknown() {
    let out = diags(
        "security.istio.io/v1",
        "AuthorizationPolicy",
        r#"  rules:
  - when:
    - key: request.header[x-token]
      values: ["admin"]
    - key: source.ips
      values: ["10.0.0.1"]
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:8:12: error: AuthorizationPolicy/default/p: spec.rules[0].when[0].key: unknown condition key "request.header[x-token]" (did you mean `request.headers[x-token]`?)"#,
            r#"f.yaml:10:12: error: AuthorizationPolicy/default/p: spec.rules[0].when[1].key: unknown condition key "source.ips" (did you mean `source.ip`?)"#,
        ])
    );
}

#[test]
fn authz_when_key_bracket_form() {
    let out = diags(
        "security.istio.io/v1",
        "AuthorizationPolicy",
        r#"  rules:
  - when:
    - key: request.headers
      values: ["admin"]
    - key: request.auth.claims[]
      values: ["x"]
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:8:12: error: AuthorizationPolicy/default/p: spec.rules[0].when[0].key: invalid condition key "request.headers": write it as request.headers[<header-name>]"#,
            r#"f.yaml:10:12: error: AuthorizationPolicy/default/p: spec.rules[0].when[1].key: invalid condition key "request.auth.claims[]": write it as request.auth.claims[<claim>] (nested: [<claim>][<field>])"#,
        ])
    );
}

#[test]
fn authz_when_needs_values() {
    let out = diags(
        "security.istio.io/v1",
        "AuthorizationPolicy",
        r#"  rules:
  - when:
    - key: request.auth.claims[group]
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:8:7: error: AuthorizationPolicy/default/p: spec.rules[0].when[0]: condition on "request.auth.claims[group]" needs values or notValues"#,
        ])
    );
}

#[test]
fn authz_when_values_checked_by_key() {
    let out = diags(
        "security.istio.io/v1",
        "AuthorizationPolicy",
        r#"  rules:
  - when:
    - key: source.ip
      values: ["not-an-ip"]
    - key: destination.port
      notValues: ["99999"]
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:9:16: error: AuthorizationPolicy/default/p: spec.rules[0].when[0].values[0]: "not-an-ip" is not an IP address or a CIDR block (e.g. 10.0.0.0/8)"#,
            r#"f.yaml:11:19: error: AuthorizationPolicy/default/p: spec.rules[0].when[1].notValues[0]: port 99999 is outside 1..65535"#,
        ])
    );
}

#[test]
fn authz_selector_with_target_ref() {
    let out = diags(
        "security.istio.io/v1",
        "AuthorizationPolicy",
        r#"  selector:
    matchLabels:
      app: api
  targetRef:
    kind: Gateway
    group: gateway.networking.k8s.io
    name: waypoint
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:10:5: error: AuthorizationPolicy/default/p: spec.targetRef: selector and targetRef cannot both be set; use one of them"#,
        ])
    );
}

#[test]
fn authz_target_ref_other_namespace() {
    let out = diags(
        "security.istio.io/v1",
        "AuthorizationPolicy",
        r#"  targetRefs:
  - kind: Gateway
    group: gateway.networking.k8s.io
    name: waypoint
    namespace: other
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:10:16: error: AuthorizationPolicy/default/p: spec.targetRefs[0].namespace: cross-namespace references are not supported; leave namespace empty (the policy's own namespace)"#,
        ])
    );
}

#[test]
fn authz_unknown_source_field() {
    let out = diags(
        "security.istio.io/v1",
        "AuthorizationPolicy",
        r#"  rules:
  - from:
    - source:
        principal: ["cluster.local/ns/a/sa/b"]
        namespaces: ["prod"]
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:9:9: error: AuthorizationPolicy/default/p: spec.rules[0].from[0].source.principal: unknown field `principal` (did you mean `principals`?)"#,
        ])
    );
}

#[test]
fn authz_empty_source_and_operation() {
    let out = diags(
        "security.istio.io/v1",
        "AuthorizationPolicy",
        r#"  rules:
  - from:
    - source: {}
    to:
    - {}
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:8:15: error: AuthorizationPolicy/default/p: spec.rules[0].from[0].source: source must set at least one field (omit `from` to match any source)"#,
            r#"f.yaml:10:7: error: AuthorizationPolicy/default/p: spec.rules[0].to[0]: a to entry needs an operation"#,
        ])
    );
}

#[test]
fn authz_deny_without_rules_warns() {
    let out = diags(
        "security.istio.io/v1",
        "AuthorizationPolicy",
        r#"  action: DENY
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:6:11: warning: AuthorizationPolicy/default/p: spec.action: a DENY policy without rules matches nothing and has no effect (add `rules: [{}]` to match every request)"#,
        ])
    );
}

#[test]
fn authz_service_accounts() {
    let out = diags(
        "security.istio.io/v1",
        "AuthorizationPolicy",
        r#"  rules:
  - from:
    - source:
        serviceAccounts: ["prod/frontend", "prod/*"]
        namespaces: ["prod"]
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:9:26: error: AuthorizationPolicy/default/p: spec.rules[0].from[0].source.serviceAccounts: serviceAccounts cannot be set together with principals or namespaces"#,
            r#"f.yaml:9:44: error: AuthorizationPolicy/default/p: spec.rules[0].from[0].source.serviceAccounts[1]: invalid service account "prod/*": wildcards are not allowed in serviceAccounts"#,
        ])
    );
}

#[test]
fn reqauthn_issuer_required() {
    let out = diags(
        "security.istio.io/v1beta1",
        "RequestAuthentication",
        r#"  jwtRules:
  - jwksUri: https://example.com/jwks.json
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:7:5: error: RequestAuthentication/default/p: spec.jwtRules[0]: issuer is required (it must equal the token's `iss` claim)"#,
        ])
    );
}

#[test]
fn reqauthn_jwks_and_jwks_uri() {
    let out = diags(
        "security.istio.io/v1beta1",
        "RequestAuthentication",
        r#"  jwtRules:
  - issuer: https://example.com
    jwksUri: https://example.com/jwks.json
    jwks: '{"keys": []}'
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:9:11: error: RequestAuthentication/default/p: spec.jwtRules[0].jwks: only one of jwks and jwksUri can be set"#,
        ])
    );
}

#[test]
fn reqauthn_jwks_uri_scheme() {
    let out = diags(
        "security.istio.io/v1beta1",
        "RequestAuthentication",
        r#"  jwtRules:
  - issuer: https://example.com
    jwksUri: ftp://example.com/jwks.json
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:8:14: error: RequestAuthentication/default/p: spec.jwtRules[0].jwksUri: jwksUri "ftp://example.com/jwks.json" must be an http:// or https:// URL with a host"#,
        ])
    );
}

#[test]
fn reqauthn_from_headers_name() {
    let out = diags(
        "security.istio.io/v1beta1",
        "RequestAuthentication",
        r#"  jwtRules:
  - issuer: https://example.com
    fromHeaders:
    - prefix: "Bearer "
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:9:7: error: RequestAuthentication/default/p: spec.jwtRules[0].fromHeaders[0]: a fromHeaders entry needs a header name"#,
        ])
    );
}

#[test]
fn telemetry_sampling_range() {
    let out = diags(
        "telemetry.istio.io/v1alpha1",
        "Telemetry",
        r#"  tracing:
  - randomSamplingPercentage: 150
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:7:31: error: Telemetry/default/p: spec.tracing[0].randomSamplingPercentage: percentage 150 is outside 0..100"#,
        ])
    );
}

#[test]
fn telemetry_remove_with_value() {
    let out = diags(
        "telemetry.istio.io/v1alpha1",
        "Telemetry",
        r#"  metrics:
  - providers:
    - name: prometheus
    overrides:
    - match:
        metric: REQUEST_COUNT
      tagOverrides:
        request_protocol:
          operation: REMOVE
          value: "request.protocol"
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:15:18: error: Telemetry/default/p: spec.metrics[0].overrides[0].tagOverrides.request_protocol.value: value must not be set when operation is REMOVE"#,
        ])
    );
}

#[test]
fn telemetry_metric_typo() {
    let out = diags(
        "telemetry.istio.io/v1alpha1",
        "Telemetry",
        r#"  metrics:
  - overrides:
    - match:
        metric: REQUEST_COUNTS
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:9:17: error: Telemetry/default/p: spec.metrics[0].overrides[0].match.metric: unknown value `REQUEST_COUNTS`, expected one of ALL_METRICS, REQUEST_COUNT, REQUEST_DURATION, REQUEST_SIZE, RESPONSE_SIZE, TCP_OPENED_CONNECTIONS, TCP_CLOSED_CONNECTIONS, TCP_SENT_BYTES, TCP_RECEIVED_BYTES, GRPC_REQUEST_MESSAGES, GRPC_RESPONSE_MESSAGES (did you mean `REQUEST_COUNT`?)"#,
        ])
    );
}

#[test]
fn telemetry_provider_without_name() {
    let out = diags(
        "telemetry.istio.io/v1alpha1",
        "Telemetry",
        r#"  accessLogging:
  - providers:
    - {}
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:8:7: error: Telemetry/default/p: spec.accessLogging[0].providers[0]: a provider needs a name (an extension provider in meshConfig, or `envoy` / `prometheus`)"#,
        ])
    );
}

#[test]
fn telemetry_empty_filter_expression() {
    let out = diags(
        "telemetry.istio.io/v1alpha1",
        "Telemetry",
        r#"  accessLogging:
  - providers:
    - name: envoy
    filter:
      expression: ""
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:10:19: error: Telemetry/default/p: spec.accessLogging[0].filter.expression: expression must not be empty (a CEL expression such as `response.code >= 400`)"#,
        ])
    );
}

#[test]
fn telemetry_custom_tag_oneof() {
    let out = diags(
        "telemetry.istio.io/v1alpha1",
        "Telemetry",
        r#"  tracing:
  - customTags:
      env:
        literal:
          value: prod
        header:
          name: x-env
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:9:9: error: Telemetry/default/p: spec.tracing[0].customTags.env: a custom tag takes only one of literal, environment, header or formatter"#,
        ])
    );
}

#[test]
fn operator_install_only_fields_warn() {
    let out = diags(
        "install.istio.io/v1alpha1",
        "IstioOperator",
        r#"  profile: demo
  hub: docker.io/istio
  tag: 1.22.0
  components:
    pilot:
      enabled: true
  values:
    global:
      proxy:
        privileged: false
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:6:12: warning: IstioOperator/default/p: spec.profile: install-only setting; not applicable to a sidecar (ignored)"#,
            r#"f.yaml:7:8: warning: IstioOperator/default/p: spec.hub: install-only setting; not applicable to a sidecar (ignored)"#,
            r#"f.yaml:8:8: warning: IstioOperator/default/p: spec.tag: install-only setting; not applicable to a sidecar (ignored)"#,
            r#"f.yaml:10:5: warning: IstioOperator/default/p: spec.components: install-only setting; not applicable to a sidecar (ignored)"#,
            r#"f.yaml:13:5: warning: IstioOperator/default/p: spec.values: install-only setting; not applicable to a sidecar (ignored)"#,
        ])
    );
}

#[test]
fn operator_unknown_mesh_config_field() {
    let out = diags(
        "install.istio.io/v1alpha1",
        "IstioOperator",
        r#"  meshConfig:
    accessLogFil: /dev/stdout
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:7:5: error: IstioOperator/default/p: spec.meshConfig.accessLogFil: unknown field `accessLogFil` (did you mean `accessLogFile`?)"#,
        ])
    );
}

#[test]
fn operator_outbound_mode_typo() {
    let out = diags(
        "install.istio.io/v1alpha1",
        "IstioOperator",
        r#"  meshConfig:
    outboundTrafficPolicy:
      mode: REGISTRY_ONL
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:8:13: error: IstioOperator/default/p: spec.meshConfig.outboundTrafficPolicy.mode: unknown value `REGISTRY_ONL`, expected one of REGISTRY_ONLY, ALLOW_ANY (did you mean `REGISTRY_ONLY`?)"#,
        ])
    );
}

#[test]
fn operator_default_config_checked() {
    let out = diags(
        "install.istio.io/v1alpha1",
        "IstioOperator",
        r#"  meshConfig:
    accessLogEncoding: JSON
    defaultConfig:
      concurrency: -2
      holdAplicationUntilProxyStarts: true
"#,
    );
    assert_eq!(
        out,
        lines(&[
            r#"f.yaml:9:20: error: IstioOperator/default/p: spec.meshConfig.defaultConfig.concurrency: concurrency -2 must not be negative (0 means one worker per core)"#,
            r#"f.yaml:10:7: error: IstioOperator/default/p: spec.meshConfig.defaultConfig.holdAplicationUntilProxyStarts: unknown field `holdAplicationUntilProxyStarts` (did you mean `holdApplicationUntilProxyStarts`?)"#,
        ])
    );
}

// --------------------------------------------------------- valid configs

fn seed(name: &str) -> String {
    let path = format!("{}/../../fixtures/seed/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn seed_istio_operator_loads_with_install_only_warnings() {
    let loaded = load(&seed("01-configuration-profiles.yaml"));
    assert_eq!(
        loaded.diagnostics.to_string(),
        lines(&[
            "f.yaml:7:12: warning: IstioOperator/default/istio-control-plane: spec.profile: install-only setting; not applicable to a sidecar (ignored)",
            "f.yaml:16:5: warning: IstioOperator/default/istio-control-plane: spec.components: install-only setting; not applicable to a sidecar (ignored)",
        ])
    );
    assert_eq!(loaded.resources.len(), 1);
    assert_round_trip(&loaded);
    let Spec::IstioOperator(op) = &loaded.resources[0].spec else {
        panic!("not an IstioOperator")
    };
    let mesh = op.mesh_config.as_ref().expect("meshConfig");
    assert_eq!(mesh.access_log_file.as_deref(), Some("/dev/stdout"));
    assert_eq!(mesh.enable_tracing, Some(true));
    let proxy = mesh.default_config.as_ref().expect("defaultConfig");
    assert_eq!(proxy.hold_application_until_proxy_starts, Some(true));
    assert_eq!(proxy.proxy_metadata["ISTIO_META_DNS_CAPTURE"], "true");
}

#[test]
fn seed_peer_authentications_load() {
    let loaded = load(&seed("13-istio-mtls-configuration.yaml"));
    assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
    assert_round_trip(&loaded);
    let modes: Vec<_> = loaded
        .resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::PeerAuthentication(pa) => Some(pa.port_modes().collect::<Vec<_>>()),
            _ => None,
        })
        .collect();
    assert!(
        modes.contains(&vec![(
            9090,
            mesh_core::schema::istio_security::MtlsMode::Disable
        )]),
        "{modes:?}"
    );
}

#[test]
fn seed_authorization_policies_load() {
    let loaded = assert_clean(&seed("14-authorization-policies.yaml"), 3);
    let Spec::AuthorizationPolicy(deny_all) = &loaded.resources[0].spec else {
        panic!("not an AuthorizationPolicy")
    };
    // `spec: {}` is the allow-nothing policy: ALLOW with no rules.
    assert!(deny_all.rules.is_empty());
    assert_eq!(
        deny_all.action(),
        mesh_core::schema::istio_security::AuthorizationAction::Allow
    );
}

#[test]
fn seed_telemetry_loads() {
    assert_clean(&seed("15-istio-telemetry.yaml"), 2);
}

#[test]
fn upstream_like_authorization_policies_load() {
    let text = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: full
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/sleep", "*/ns/prod/sa/*", "*"]
        notPrincipals: ["spiffe://cluster.local/ns/x/sa/y"]
        requestPrincipals: ["https://accounts.example.com/*", "*"]
        notRequestPrincipals: ["*@bad.example.com"]
        namespaces: ["prod", "prod-*", "*-staging"]
        notNamespaces: ["kube-system"]
        ipBlocks: ["1.2.3.4", "5.6.0.0/16", "2001:db8::/32"]
        notIpBlocks: ["5.6.7.0/24"]
        remoteIpBlocks: ["203.0.113.4"]
        notRemoteIpBlocks: ["203.0.113.0/24"]
        trustDomains: ["cluster.local"]
    - source:
        serviceAccounts: ["default/sleep", "curl"]
        notServiceAccounts: ["default/evil"]
    to:
    - operation:
        hosts: ["httpbin.foo.svc.cluster.local", "*.example.com"]
        notHosts: ["admin.example.com"]
        ports: ["8000"]
        notPorts: ["15021"]
        methods: ["GET", "HEAD", "*"]
        notMethods: ["DELETE"]
        paths: ["/info*", "/foo/{*}/bar/{**}", "/store/{**}/cart", "*.js", "*"]
        notPaths: ["/admin/{**}"]
    when:
    - key: request.auth.claims[iss]
      values: ["https://accounts.google.com"]
    - key: request.auth.claims[nested][group]
      notValues: ["guest*"]
    - key: request.headers[x-token]
      values: ["admin"]
    - key: source.ip
      values: ["10.1.2.3", "10.2.0.0/16"]
    - key: destination.port
      values: ["8080"]
    - key: connection.sni
      values: ["*.example.com"]
    - key: experimental.envoy.filters.network.mysql_proxy[db.table]
      values: ["[update]"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: ext-authz
  namespace: foo
spec:
  targetRefs:
  - kind: Gateway
    group: gateway.networking.k8s.io
    name: waypoint
  action: CUSTOM
  provider:
    name: sample-ext-authz-grpc
  rules:
  - to:
    - operation:
        paths: ["/headers"]
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: deny-plaintext
  namespace: foo
spec:
  action: DENY
  rules:
  - from:
    - source:
        notPrincipals: ["*"]
  - {}
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: audit
  namespace: foo
spec:
  action: AUDIT
  rules:
  - to:
    - operation:
        methods: ["POST"]
"#;
    assert_clean(text, 4);
}

#[test]
fn upstream_like_request_authentication_and_peer_authentication_load() {
    let text = r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: jwt-example
  namespace: istio-system
spec:
  selector:
    matchLabels:
      istio: ingressgateway
  jwtRules:
  - issuer: "testing@secure.istio.io"
    jwksUri: "https://raw.githubusercontent.com/istio/istio/release-1.22/security/tools/jwt/samples/jwks.json"
    audiences: ["app.example.com"]
    fromHeaders:
    - name: x-jwt-assertion
      prefix: "Bearer "
    fromParams: ["my_token"]
    fromCookies: ["session"]
    forwardOriginalToken: true
    outputPayloadToHeader: x-jwt-payload
    outputClaimToHeaders:
    - header: x-jwt-claim-foo
      claim: foo
    timeout: 5s
    spaceDelimitedClaims: ["roles"]
  - issuer: "issuer-inline"
    jwks: '{"keys":[{"e":"AQAB","kid":"x","kty":"RSA","n":"abc"}]}'
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: httpbin
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  mtls:
    mode: UNSET
  portLevelMtls:
    80:
      mode: DISABLE
    "8443":
      mode: STRICT
    9000: {}
"#;
    assert_clean(text, 2);
}

#[test]
fn upstream_like_telemetry_loads() {
    let text = r#"apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: mesh-default
  namespace: istio-system
spec:
  tracing:
  - match:
      mode: SERVER
    providers:
    - name: zipkin
    randomSamplingPercentage: 10.5
    disableSpanReporting: false
    useRequestIdForTraceSampling: true
    customTags:
      cluster:
        literal:
          value: east
      pod:
        environment:
          name: POD_NAME
          defaultValue: unknown
      user:
        header:
          name: x-user
  metrics:
  - providers:
    - name: prometheus
    reportingInterval: 10s
    overrides:
    - match:
        metric: ALL_METRICS
        mode: CLIENT
      tagOverrides:
        request_host:
          operation: UPSERT
          value: "request.host"
        grpc_response_status:
          operation: REMOVE
    - match:
        customMetric: my_metric
      disabled: true
    - disabled: false
  accessLogging:
  - providers:
    - name: envoy
    filter:
      expression: "response.code >= 400"
  - match:
      mode: CLIENT
    disabled: true
"#;
    assert_clean(text, 1);
}

#[test]
fn upstream_like_mesh_config_loads() {
    let text = r#"apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata:
  name: mesh
spec:
  meshConfig:
    accessLogFile: /dev/stdout
    accessLogEncoding: JSON
    accessLogFormat: '{"method":"%REQ(:METHOD)%"}'
    enableTracing: true
    enableAutoMtls: true
    enablePrometheusMerge: true
    rootNamespace: istio-system
    trustDomain: cluster.local
    connectTimeout: 5s
    outboundTrafficPolicy:
      mode: REGISTRY_ONLY
    inboundTrafficPolicy:
      mode: LOCALHOST
    h2UpgradePolicy: UPGRADE
    pathNormalization:
      normalization: MERGE_SLASHES
    defaultHttpRetryPolicy:
      attempts: 3
      perTryTimeout: 2s
      retryOn: "5xx,connect-failure"
    defaultProviders:
      metrics: [prometheus]
      accessLogging: [envoy]
    extensionProviders:
    - name: zipkin
      zipkin:
        service: zipkin.istio-system.svc.cluster.local
        port: 9411
    - name: sample-ext-authz-grpc
      envoyExtAuthzGrpc:
        service: ext-authz.foo.svc.cluster.local
        port: 9000
    tlsDefaults:
      minProtocolVersion: TLSV1_3
    defaultConfig:
      holdApplicationUntilProxyStarts: true
      concurrency: 2
      drainDuration: 45s
      terminationDrainDuration: 5s
      discoveryAddress: istiod.istio-system.svc:15012
      proxyMetadata:
        ISTIO_META_DNS_CAPTURE: "true"
      tracing:
        sampling: 100.0
        zipkin:
          address: zipkin.istio-system:9411
      gatewayTopology:
        numTrustedProxies: 1
        forwardClientCertDetails: SANITIZE_SET
      proxyStatsMatcher:
        inclusionRegexps: [".*outlier_detection.*"]
        inclusionPrefixes: ["cluster.outbound"]
      extraStatTags: [destination_port]
"#;
    let loaded = assert_clean(text, 1);
    let Spec::IstioOperator(op) = &loaded.resources[0].spec else {
        panic!("not an IstioOperator")
    };
    let mesh = op.mesh_config.as_ref().expect("meshConfig");
    assert_eq!(
        mesh.outbound_traffic_policy.as_ref().and_then(|p| p.mode),
        Some(mesh_core::schema::istio_operator::OutboundMode::RegistryOnly)
    );
    assert_eq!(
        mesh.default_config.as_ref().and_then(|p| p.concurrency),
        Some(2)
    );
}

#[test]
fn kinds_and_versions_are_registered() {
    assert_eq!(
        Kind::lookup("security.istio.io", "AuthorizationPolicy"),
        Some(Kind::AuthorizationPolicy)
    );
    assert_eq!(
        Kind::lookup("telemetry.istio.io", "Telemetry"),
        Some(Kind::Telemetry)
    );
    assert_eq!(Kind::Telemetry.versions(), ["v1alpha1", "v1"]);
}
