//! VirtualService: schema and validation, asserted as the exact diagnostic
//! lines `mesh validate` prints.

use mesh_core::load::{LoadOptions, Loaded, load_str};
use mesh_core::resource::{Kind, Spec};

/// Wraps a spec body (its lines start at line 6 of the file).
fn vs(body: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: r\nspec:\n{body}"
    )
}

fn load(text: &str) -> Loaded {
    load_str("f.yaml", text, &LoadOptions::default())
}

/// The resource's own diagnostics: reference warnings (hosts and subsets
/// that no loaded ServiceEntry or DestinationRule defines, missing Gateways)
/// come from the cross-resource checks, tested in `cross_resource.rs`.
fn own(loaded: &Loaded) -> String {
    loaded
        .diagnostics
        .iter()
        .filter(|d| {
            !(d.message.starts_with("no loaded ServiceEntry defines")
                || d.message
                    .contains("is not defined by any loaded DestinationRule")
                || d.message.contains("is not in the loaded configuration"))
        })
        .map(|d| format!("{d}\n"))
        .collect()
}

/// The printed diagnostics of a VirtualService with this spec body.
fn diags(body: &str) -> String {
    own(&load(&vs(body)))
}

/// Asserts the body loads with no diagnostic of its own.
fn assert_clean(body: &str) {
    let loaded = load(&vs(body));
    assert_eq!(own(&loaded), "");
    assert_eq!(loaded.resources.len(), 1);
}

const E: &str = "error: VirtualService/default/r";
const W: &str = "warning: VirtualService/default/r";

fn lines(expected: &[String]) -> String {
    expected.iter().map(|l| format!("{l}\n")).collect()
}

// ---------------------------------------------------------------- hosts

#[test]
fn hosts_must_not_be_empty() {
    let out = diags(
        "  hosts: []
  http:
  - route:
    - destination: {host: reviews}
",
    );
    assert_eq!(
        out,
        lines(&[format!(
            "f.yaml:6:10: {E}: spec.hosts: hosts must name at least one host (delegate VirtualServices without hosts are not supported)"
        )])
    );
}

#[test]
fn missing_hosts_points_at_spec() {
    let out = diags(
        "  http:
  - route:
    - destination: {host: reviews}
",
    );
    assert_eq!(
        out,
        lines(&[format!(
            "f.yaml:6:3: {E}: spec.hosts: hosts must name at least one host (delegate VirtualServices without hosts are not supported)"
        )])
    );
}

#[test]
fn bad_host_names() {
    let out = diags(
        "  hosts:
  - api.*.com
  - '*'
  - reviews
  - Reviews
  http:
  - route:
    - destination: {host: reviews}
",
    );
    assert_eq!(
        out,
        lines(&[
            format!(
                "f.yaml:7:5: {E}: spec.hosts[0]: invalid host \"api.*.com\": \"*\" is not a DNS label (a wildcard may only be a leading `*.`)"
            ),
            format!("f.yaml:10:5: {E}: spec.hosts[3]: host \"Reviews\" is listed twice"),
        ])
    );
}

#[test]
fn a_vs_needs_some_rule() {
    let out = diags("  hosts: [reviews]\n");
    assert_eq!(
        out,
        lines(&[format!(
            "f.yaml:6:3: {E}: spec: a VirtualService needs at least one http, tcp or tls rule"
        )])
    );
}

#[test]
fn bad_gateways_and_export_to() {
    let out = diags(
        "  hosts: [reviews]
  gateways: [mesh, istio-system/ingress, a/b/c]
  exportTo: ['.', 'Bad NS']
  http:
  - route:
    - destination: {host: reviews}
",
    );
    assert_eq!(
        out,
        lines(&[
            format!(
                "f.yaml:7:42: {E}: spec.gateways[2]: invalid gateway \"a/b/c\": expected mesh, <name> or <namespace>/<name>"
            ),
            format!(
                "f.yaml:8:19: {E}: spec.exportTo[1]: invalid exportTo \"Bad NS\": expected \".\", \"*\" or a namespace name"
            ),
        ])
    );
}

// ---------------------------------------------------------------- matches

#[test]
fn string_match_needs_exactly_one_matcher() {
    let out = diags(
        "  hosts: [reviews]
  http:
  - match:
    - uri: {}
    - method: {exact: GET, prefix: G}
    route:
    - destination: {host: reviews}
",
    );
    assert_eq!(
        out,
        lines(&[
            format!(
                "f.yaml:9:12: {E}: spec.http[0].match[0].uri: a string match needs one of exact, prefix or regex"
            ),
            format!(
                "f.yaml:10:15: {E}: spec.http[0].match[1].method: set only one of exact, prefix or regex (found exact and prefix)"
            ),
        ])
    );
}

#[test]
fn empty_matchers_mean_present_only_in_maps() {
    assert_clean(
        "  hosts: [reviews]
  http:
  - match:
    - headers:
        x-canary: {}
        end-user:
        x-any: {regex: '*'}
      queryParams:
        debug: {}
      withoutHeaders:
        x-skip: {}
    route:
    - destination: {host: reviews}
",
    );
}

#[test]
fn header_matcher_with_two_kinds_is_an_error() {
    let out = diags(
        "  hosts: [reviews]
  http:
  - match:
    - headers:
        end-user: {exact: jason, regex: 'j.*'}
    route:
    - destination: {host: reviews}
",
    );
    assert_eq!(
        out,
        lines(&[format!(
            "f.yaml:10:19: {E}: spec.http[0].match[0].headers.end-user: set only one of exact, prefix or regex (found exact and regex)"
        )])
    );
}

#[test]
fn invalid_regexes_everywhere() {
    let out = diags(
        "  hosts: [reviews]
  http:
  - match:
    - uri:
        regex: /api/(users
      queryParams:
        id: {regex: '[0-9'}
      withoutHeaders:
        x-a: {regex: '*'}
        x-b: {regex: '+'}
    rewrite:
      uriRegexRewrite:
        match: ^/svc/(a
        rewrite: /\\1
    route:
    - destination: {host: reviews}
",
    );
    assert_eq!(
        out,
        lines(&[
            format!(
                "f.yaml:10:16: {E}: spec.http[0].match[0].uri.regex: invalid regex \"/api/(users\": unclosed group"
            ),
            format!(
                "f.yaml:12:21: {E}: spec.http[0].match[0].queryParams.id.regex: invalid regex \"[0-9\": unclosed character class"
            ),
            format!(
                "f.yaml:15:22: {E}: spec.http[0].match[0].withoutHeaders.x-b.regex: invalid regex \"+\": repetition operator missing expression"
            ),
            format!(
                "f.yaml:18:16: {E}: spec.http[0].rewrite.uriRegexRewrite.match: invalid regex \"^/svc/(a\": unclosed group"
            ),
        ])
    );
}

#[test]
fn match_port_and_gateways() {
    let out = diags(
        "  hosts: [reviews]
  http:
  - match:
    - port: 0
      gateways: [Bad_GW]
    route:
    - destination: {host: reviews}
",
    );
    assert_eq!(
        out,
        lines(&[
            format!("f.yaml:9:13: {E}: spec.http[0].match[0].port: port 0 is outside 1..65535"),
            format!(
                "f.yaml:10:18: {E}: spec.http[0].match[0].gateways[0]: invalid gateway \"Bad_GW\": expected mesh, <name> or <namespace>/<name>"
            ),
        ])
    );
}

// ---------------------------------------------------------------- rule shape

#[test]
fn route_and_redirect_conflict() {
    let out = diags(
        "  hosts: [reviews]
  http:
  - redirect:
      uri: /new
    route:
    - destination: {host: reviews}
",
    );
    assert_eq!(
        out,
        lines(&[format!(
            "f.yaml:9:7: {E}: spec.http[0].redirect: a rule cannot have both route and redirect"
        )])
    );
}

#[test]
fn redirect_and_direct_response_conflict() {
    let out = diags(
        "  hosts: [reviews]
  http:
  - redirect: {uri: /new}
    directResponse: {status: 404}
",
    );
    assert_eq!(
        out,
        lines(&[format!(
            "f.yaml:9:21: {E}: spec.http[0].directResponse: a rule cannot have both redirect and directResponse"
        )])
    );
}

#[test]
fn a_rule_needs_an_action() {
    let out = diags(
        "  hosts: [reviews]
  http:
  - name: nothing
    timeout: 1s
",
    );
    assert_eq!(
        out,
        lines(&[format!(
            "f.yaml:8:5: {E}: spec.http[0]: a rule needs one of route, redirect, directResponse or delegate"
        )])
    );
}

#[test]
fn delegate_cannot_route_too() {
    let out = diags(
        "  hosts: [reviews]
  http:
  - delegate: {name: reviews-v2, namespace: team}
    route:
    - destination: {host: reviews}
",
    );
    assert_eq!(
        out,
        lines(&[format!(
            "f.yaml:8:15: {E}: spec.http[0].delegate: a rule with delegate cannot also have route, redirect or directResponse"
        )])
    );
}

// ---------------------------------------------------------------- destinations

#[test]
fn all_zero_weights_is_an_error() {
    let out = diags(
        "  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 0
    - destination: {host: reviews, subset: v2}
",
    );
    assert_eq!(
        out,
        lines(&[format!(
            "f.yaml:9:7: {E}: spec.http[0].route: all weights are 0 (or absent); give at least one destination a positive weight"
        )])
    );
}

#[test]
fn weights_not_summing_to_100_warn() {
    let loaded = load(&vs("  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 60
    - destination: {host: reviews, subset: v2}
      weight: 50
"));
    assert_eq!(
        own(&loaded),
        lines(&[format!(
            "f.yaml:9:7: {W}: spec.http[0].route: weights sum to 110, not 100; traffic is split by relative weight"
        )])
    );
    assert_eq!(loaded.resources.len(), 1, "a warning does not reject");
}

#[test]
fn negative_weight_is_a_type_error() {
    let out = diags(
        "  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
      weight: -5
",
    );
    assert_eq!(
        out,
        lines(&[format!(
            "f.yaml:10:15: {E}: spec.http[0].route[0].weight: invalid value integer `-5`: expected u32"
        )])
    );
}

#[test]
fn destination_port_subset_and_host() {
    let out = diags(
        "  hosts: [reviews]
  http:
  - route:
    - destination:
        host: '*'
        subset: V1
        port: {number: 70000}
",
    );
    assert_eq!(
        out,
        lines(&[
            format!(
                "f.yaml:10:15: {E}: spec.http[0].route[0].destination.host: `*` alone is not allowed here; name a host or a `*.domain` wildcard"
            ),
            format!(
                "f.yaml:11:17: {E}: spec.http[0].route[0].destination.subset: invalid subset name \"V1\": use lowercase letters, digits and '-' (at most 63)"
            ),
            format!(
                "f.yaml:12:24: {E}: spec.http[0].route[0].destination.port.number: port 70000 is outside 1..65535"
            ),
        ])
    );
}

#[test]
fn destination_without_host_is_a_missing_field() {
    let out = diags(
        "  hosts: [reviews]
  http:
  - route:
    - destination: {subset: v1}
",
    );
    assert_eq!(
        out,
        lines(&[format!(
            "f.yaml:9:20: {E}: spec.http[0].route[0].destination: missing required field `host`"
        )])
    );
}

// ---------------------------------------------------------------- fault

#[test]
fn fault_percentages_out_of_range() {
    let out = diags(
        "  hosts: [reviews]
  http:
  - fault:
      delay:
        fixedDelay: 5s
        percentage: {value: 150}
      abort:
        httpStatus: 503
        percentage: {value: -5}
    route:
    - destination: {host: reviews}
",
    );
    assert_eq!(
        out,
        lines(&[
            format!(
                "f.yaml:11:29: {E}: spec.http[0].fault.delay.percentage.value: percentage 150 is outside 0..100"
            ),
            format!(
                "f.yaml:14:29: {E}: spec.http[0].fault.abort.percentage.value: percentage -5 is outside 0..100"
            ),
        ])
    );
}

#[test]
fn delay_needs_fixed_delay() {
    let out = diags(
        "  hosts: [reviews]
  http:
  - fault:
      delay:
        percentage: {value: 10}
    route:
    - destination: {host: reviews}
",
    );
    assert_eq!(
        out,
        lines(&[format!(
            "f.yaml:10:9: {E}: spec.http[0].fault.delay: delay needs fixedDelay"
        )])
    );
}

#[test]
fn exponential_delay_is_not_supported() {
    let out = diags(
        "  hosts: [reviews]
  http:
  - fault:
      delay:
        exponentialDelay: 1s
        percentage: {value: 10}
    route:
    - destination: {host: reviews}
",
    );
    assert_eq!(
        out,
        lines(&[format!(
            "f.yaml:10:27: {E}: spec.http[0].fault.delay.exponentialDelay: exponentialDelay is not supported; use fixedDelay"
        )])
    );
}

#[test]
fn abort_needs_a_status() {
    let out = diags(
        "  hosts: [reviews]
  http:
  - fault:
      abort:
        percentage: {value: 10}
    route:
    - destination: {host: reviews}
",
    );
    assert_eq!(
        out,
        lines(&[format!(
            "f.yaml:10:9: {E}: spec.http[0].fault.abort: abort needs one of httpStatus, grpcStatus or http2Error"
        )])
    );
}

#[test]
fn abort_http_status_out_of_range() {
    let out = diags(
        "  hosts: [reviews]
  http:
  - fault:
      abort:
        httpStatus: 700
        percentage: {value: 10}
    route:
    - destination: {host: reviews}
",
    );
    assert_eq!(
        out,
        lines(&[format!(
            "f.yaml:10:21: {E}: spec.http[0].fault.abort.httpStatus: HTTP status 700 is outside 200..599"
        )])
    );
}

#[test]
fn abort_grpc_status_must_be_a_code_name() {
    let out = diags(
        "  hosts: [reviews]
  http:
  - fault:
      abort:
        grpcStatus: UNAVAILBLE
        percentage: {value: 10}
    route:
    - destination: {host: reviews}
",
    );
    assert_eq!(
        out,
        lines(&[format!(
            "f.yaml:10:21: {E}: spec.http[0].fault.abort.grpcStatus: unknown gRPC status `UNAVAILBLE` (did you mean `UNAVAILABLE`?)"
        )])
    );
}

#[test]
fn abort_with_two_error_types() {
    let out = diags(
        "  hosts: [reviews]
  http:
  - fault:
      abort:
        httpStatus: 503
        grpcStatus: UNAVAILABLE
        percentage: {value: 10}
    route:
    - destination: {host: reviews}
",
    );
    assert_eq!(
        out,
        lines(&[format!(
            "f.yaml:10:9: {E}: spec.http[0].fault.abort: set only one of httpStatus, grpcStatus or http2Error (found httpStatus and grpcStatus)"
        )])
    );
}

#[test]
fn deprecated_fault_percent_warns() {
    let out = diags(
        "  hosts: [reviews]
  http:
  - fault:
      delay:
        fixedDelay: 7s
        percent: 50
    route:
    - destination: {host: reviews}
",
    );
    assert_eq!(
        out,
        lines(&[format!(
            "f.yaml:11:18: {W}: spec.http[0].fault.delay.percent: percent is deprecated; use percentage: {{value: ...}}"
        )])
    );
}

#[test]
fn abort_without_percentage_warns() {
    let out = diags(
        "  hosts: [reviews]
  http:
  - fault:
      abort:
        httpStatus: 503
    route:
    - destination: {host: reviews}
",
    );
    assert_eq!(
        out,
        lines(&[format!(
            "f.yaml:10:9: {W}: spec.http[0].fault.abort: abort has no percentage, so no request is aborted; add percentage: {{value: 100}} to abort every request"
        )])
    );
}

// ---------------------------------------------------------------- mirror

#[test]
fn mirror_percentage_out_of_range_and_deprecated_percent() {
    let out = diags(
        "  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
    mirror: {host: reviews, subset: v2}
    mirrorPercentage: {value: 101}
  - match:
    - uri: {prefix: /b}
    route:
    - destination: {host: reviews}
    mirror: {host: reviews, subset: v2}
    mirrorPercent: 30
",
    );
    assert_eq!(
        out,
        lines(&[
            format!(
                "f.yaml:8:5: {W}: spec.http[0]: this rule has no match and shadows the rule after it; put it last or give it a match"
            ),
            format!(
                "f.yaml:11:31: {E}: spec.http[0].mirrorPercentage.value: percentage 101 is outside 0..100"
            ),
            format!(
                "f.yaml:17:20: {W}: spec.http[1].mirrorPercent: mirrorPercent is deprecated; use mirrorPercentage: {{value: ...}}"
            ),
        ])
    );
}

#[test]
fn mirrors_percentage_out_of_range() {
    let out = diags(
        "  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
    mirrors:
    - destination: {host: reviews, subset: v2}
      percentage: {value: 200}
",
    );
    assert_eq!(
        out,
        lines(&[format!(
            "f.yaml:12:27: {E}: spec.http[0].mirrors[0].percentage.value: percentage 200 is outside 0..100"
        )])
    );
}

#[test]
fn mirror_and_mirrors_conflict() {
    let out = diags(
        "  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
    mirror: {host: reviews, subset: v2}
    mirrors:
    - destination: {host: reviews, subset: v3}
",
    );
    assert_eq!(
        out,
        lines(&[format!(
            "f.yaml:12:7: {E}: spec.http[0].mirrors: a rule cannot have both mirror and mirrors; move mirror into mirrors"
        )])
    );
}

// ---------------------------------------------------------------- retries

#[test]
fn retry_on_unknown_token_suggests_closest() {
    let out = diags(
        "  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
    retries:
      attempts: 3
      retryOn: 5xx,conect-failure
",
    );
    assert_eq!(
        out,
        lines(&[format!(
            "f.yaml:12:16: {E}: spec.http[0].retries.retryOn: unknown retryOn condition `conect-failure` (did you mean `connect-failure`?)"
        )])
    );
}

#[test]
fn retry_on_unknown_token_without_suggestion_lists_all() {
    let out = diags(
        "  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
    retries:
      attempts: 3
      retryOn: everything
",
    );
    assert_eq!(
        out,
        lines(&[format!(
            "f.yaml:12:16: {E}: spec.http[0].retries.retryOn: unknown retryOn condition `everything`; expected one of 5xx, gateway-error, reset, reset-before-request, connect-failure, envoy-ratelimited, retriable-4xx, refused-stream, retriable-status-codes, retriable-headers, http3-post-connect-failure, cancelled, deadline-exceeded, internal, resource-exhausted, unavailable or a status code 100..599"
        )])
    );
}

#[test]
fn retry_on_empty_token_and_bad_status() {
    let out = diags(
        "  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
    retries:
      attempts: 3
      retryOn: 5xx,,reset,600,503
",
    );
    assert_eq!(
        out,
        lines(&[
            format!(
                "f.yaml:12:16: {E}: spec.http[0].retries.retryOn: retryOn \"5xx,,reset,600,503\" has an empty condition; remove the extra comma"
            ),
            format!(
                "f.yaml:12:16: {E}: spec.http[0].retries.retryOn: status code 600 in retryOn is outside 100..599"
            ),
        ])
    );
}

#[test]
fn unknown_retries_field_is_reported_with_suggestion() {
    let out = diags(
        "  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
    retries:
      attemps: 3
",
    );
    assert_eq!(
        out,
        lines(&[format!(
            "f.yaml:11:7: {E}: spec.http[0].retries.attemps: unknown field `attemps` (did you mean `attempts`?)"
        )])
    );
}

#[test]
fn per_try_timeout_longer_than_timeout_warns() {
    let out = diags(
        "  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
    timeout: 2s
    retries:
      attempts: 3
      perTryTimeout: 5s
",
    );
    assert_eq!(
        out,
        lines(&[format!(
            "f.yaml:13:22: {W}: spec.http[0].retries.perTryTimeout: perTryTimeout 5s is longer than the route timeout 2s, which fires first"
        )])
    );
}

#[test]
fn zero_per_try_timeout_with_attempts_is_fine() {
    assert_clean(
        "  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
    timeout: 2s
    retries:
      attempts: 3
      perTryTimeout: 0s
      retryOn: gateway-error,503,retriable-4xx
",
    );
}

// ---------------------------------------------------------------- redirect / rewrite / direct response

#[test]
fn redirect_code_must_be_a_supported_redirect() {
    let out = diags(
        "  hosts: [reviews]
  http:
  - match:
    - uri: {exact: /a}
    redirect: {uri: /b, redirectCode: 304}
  - match:
    - uri: {exact: /c}
    redirect: {uri: /d, redirectCode: 200}
",
    );
    assert_eq!(
        out,
        lines(&[
            format!(
                "f.yaml:10:39: {E}: spec.http[0].redirect.redirectCode: redirect code 304 is not supported; use 301, 302, 303, 307 or 308"
            ),
            format!(
                "f.yaml:13:39: {E}: spec.http[1].redirect.redirectCode: redirect code 200 is not supported; use 301, 302, 303, 307 or 308"
            ),
        ])
    );
}

#[test]
fn redirect_port_and_derive_port_conflict() {
    let out = diags(
        "  hosts: [reviews]
  http:
  - redirect:
      scheme: https
      port: 8443
      derivePort: FROM_REQUEST_PORT
",
    );
    assert_eq!(
        out,
        lines(&[format!(
            "f.yaml:11:19: {E}: spec.http[0].redirect.derivePort: set only one of port or derivePort"
        )])
    );
}

#[test]
fn redirect_unknown_derive_port_value() {
    let out = diags(
        "  hosts: [reviews]
  http:
  - redirect:
      derivePort: FROM_REQUEST_PRT
",
    );
    assert_eq!(
        out,
        lines(&[format!(
            "f.yaml:9:19: {E}: spec.http[0].redirect.derivePort: unknown value `FROM_REQUEST_PRT`, expected one of FROM_PROTOCOL_DEFAULT, FROM_REQUEST_PORT (did you mean `FROM_REQUEST_PORT`?)"
        )])
    );
}

#[test]
fn redirect_scheme_and_empty_redirect() {
    let out = diags(
        "  hosts: [reviews]
  http:
  - match:
    - uri: {prefix: /a}
    redirect: {scheme: ftp}
  - match:
    - uri: {prefix: /b}
    redirect: {redirectCode: 302}
",
    );
    assert_eq!(
        out,
        lines(&[
            format!(
                "f.yaml:10:24: {E}: spec.http[0].redirect.scheme: invalid redirect scheme \"ftp\": use http or https"
            ),
            format!(
                "f.yaml:13:15: {E}: spec.http[1].redirect: redirect needs at least one of uri, prefixRewrite, authority, scheme, port or derivePort"
            ),
        ])
    );
}

#[test]
fn prefix_rewrite_needs_prefix_matches() {
    let out = diags(
        "  hosts: [reviews]
  http:
  - match:
    - uri: {exact: /a}
    redirect: {prefixRewrite: /b}
",
    );
    assert_eq!(
        out,
        lines(&[format!(
            "f.yaml:10:31: {E}: spec.http[0].redirect.prefixRewrite: prefixRewrite needs every uri match of the rule to be a prefix match"
        )])
    );
}

#[test]
fn rewrite_uri_and_regex_rewrite_conflict() {
    let out = diags(
        "  hosts: [reviews]
  http:
  - rewrite:
      uri: /x
      uriRegexRewrite: {match: ^/a, rewrite: /b}
    route:
    - destination: {host: reviews}
",
    );
    assert_eq!(
        out,
        lines(&[format!(
            "f.yaml:10:24: {E}: spec.http[0].rewrite.uriRegexRewrite: set only one of uri or uriRegexRewrite"
        )])
    );
}

#[test]
fn direct_response_status_and_body() {
    let out = diags(
        "  hosts: [reviews]
  http:
  - directResponse:
      status: 100
      body: {string: hi, bytes: aGk=}
",
    );
    assert_eq!(
        out,
        lines(&[
            format!(
                "f.yaml:9:15: {E}: spec.http[0].directResponse.status: HTTP status 100 is outside 200..599"
            ),
            format!(
                "f.yaml:10:13: {E}: spec.http[0].directResponse.body: set only one of string or bytes"
            ),
        ])
    );
}

// ---------------------------------------------------------------- cors / headers

#[test]
fn cors_origins_and_methods() {
    let out = diags(
        "  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
    corsPolicy:
      allowOrigins:
      - {}
      - exact: https://example.com
      allowMethods: [GET, PUTT]
",
    );
    assert_eq!(
        out,
        lines(&[
            format!(
                "f.yaml:12:9: {E}: spec.http[0].corsPolicy.allowOrigins[0]: a string match needs one of exact, prefix or regex"
            ),
            format!(
                "f.yaml:14:27: {E}: spec.http[0].corsPolicy.allowMethods[1]: unknown HTTP method `PUTT` (did you mean `PUT`?)"
            ),
        ])
    );
}

#[test]
fn header_operation_names() {
    let out = diags(
        "  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
      headers:
        response:
          remove: ['bad header']
",
    );
    assert_eq!(
        out,
        lines(&[format!(
            "f.yaml:12:20: {E}: spec.http[0].route[0].headers.response.remove[0]: invalid header name \"bad header\": use letters, digits and '-'"
        )])
    );
}

// ---------------------------------------------------------------- tcp / tls

#[test]
fn tcp_rule_needs_route() {
    let out = diags(
        "  hosts: [mongo]
  tcp:
  - match:
    - port: 27017
      destinationSubnets: [10.0.0.0/40]
",
    );
    assert_eq!(
        out,
        lines(&[
            format!(
                "f.yaml:8:5: {E}: spec.tcp[0].route: a tcp rule needs at least one route destination"
            ),
            format!(
                "f.yaml:10:28: {E}: spec.tcp[0].match[0].destinationSubnets[0]: invalid subnet \"10.0.0.0/40\": expected an IP address or a CIDR such as 10.0.0.0/8"
            ),
        ])
    );
}

#[test]
fn tls_match_needs_sni_hosts() {
    let out = diags(
        "  hosts: ['*.bookinfo.com']
  tls:
  - match:
    - port: 443
    route:
    - destination: {host: login.bookinfo.com}
  - route:
    - destination: {host: reviews.bookinfo.com}
",
    );
    assert_eq!(
        out,
        lines(&[
            format!(
                "f.yaml:9:7: {E}: spec.tls[0].match[0].sniHosts: a tls match needs at least one sniHosts entry"
            ),
            format!(
                "f.yaml:12:5: {E}: spec.tls[1].match: a tls rule needs at least one match with sniHosts"
            ),
        ])
    );
}

#[test]
fn tls_sni_host_outside_vs_hosts_and_missing_route() {
    let out = diags(
        "  hosts: ['*.bookinfo.com']
  tls:
  - match:
    - sniHosts: [login.example.org]
",
    );
    assert_eq!(
        out,
        lines(&[
            format!(
                "f.yaml:8:5: {E}: spec.tls[0].route: a tls rule needs at least one route destination"
            ),
            format!(
                "f.yaml:9:18: {E}: spec.tls[0].match[0].sniHosts[0]: SNI host \"login.example.org\" is not covered by any of the hosts of this VirtualService (*.bookinfo.com)"
            ),
        ])
    );
}

#[test]
fn tcp_catch_all_shadowing_warns() {
    let out = diags(
        "  hosts: [mongo]
  tcp:
  - route:
    - destination: {host: mongo-a}
  - match:
    - port: 27017
    route:
    - destination: {host: mongo-b}
  - match:
    - port: 27018
    route:
    - destination: {host: mongo-c}
",
    );
    assert_eq!(
        out,
        lines(&[format!(
            "f.yaml:8:5: {W}: spec.tcp[0]: this rule has no match and shadows the 2 rules after it; put it last or give it a match"
        )])
    );
}

// ---------------------------------------------------------------- valid configs

/// Diagnostics about VirtualServices in a seed fixture (other kinds in the
/// same file are other tests' business).
fn seed_vs_diagnostics(name: &str) -> (String, usize) {
    let path = format!("{}/../../fixtures/seed/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("seed fixture");
    let loaded = load_str(name, &text, &LoadOptions::default());
    let out: String = own(&loaded)
        .lines()
        .filter(|l| l.contains(": VirtualService/"))
        .map(|l| format!("{l}\n"))
        .collect();
    let count = loaded
        .resources
        .iter()
        .filter(|r| r.kind == Kind::VirtualService)
        .count();
    (out, count)
}

#[test]
fn seed_virtual_services_load_cleanly() {
    for (file, expected) in [
        ("02-virtual-service-traffic-routing.yaml", 2),
        ("06-fault-injection.yaml", 1),
        ("10-a-b-testing.yaml", 1),
        ("11-blue-green-deployment.yaml", 1),
        ("12-traffic-mirroring-shadow-traffic.yaml", 1),
        ("17-retries.yaml", 1),
        ("18-timeouts.yaml", 1),
    ] {
        let (diags, count) = seed_vs_diagnostics(file);
        assert_eq!(diags, "", "{file}");
        assert_eq!(count, expected, "{file}");
    }
}

const UPSTREAM_LIKE: &str = r#"apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: reviews-route
  namespace: prod
spec:
  hosts:
  - reviews.prod.svc.cluster.local
  - "*.bookinfo.com"
  gateways: [mesh, istio-system/bookinfo-gateway]
  exportTo: ["."]
  http:
  - name: reviews-v2-routes
    match:
    - name: catalog
      uri: {prefix: /wpcatalog}
      ignoreUriCase: true
      headers:
        end-user: {exact: jason}
        ":method": {exact: GET}
      queryParams:
        ver: {regex: "v[0-9]+"}
      withoutHeaders:
        x-debug: {}
      sourceLabels: {app: productpage}
      sourceNamespace: prod
      port: 9080
      statPrefix: catalog
    - uri: {prefix: /consumercatalog}
      authority: {exact: reviews.example.com}
      scheme: {exact: https}
      method: {regex: "GET|HEAD"}
    rewrite:
      uri: /newcatalog
      authority: reviews.internal
    route:
    - destination:
        host: reviews.prod.svc.cluster.local
        subset: v2
        port: {number: 9080}
      weight: 75
      headers:
        request:
          set: {x-route: v2}
          add: {x-trace: "1"}
          remove: [x-internal]
    - destination: {host: reviews.prod.svc.cluster.local, subset: v3}
      weight: 25
    timeout: 10s
    retries:
      attempts: 3
      perTryTimeout: 2s
      retryOn: gateway-error,connect-failure,refused-stream,503
      retryRemoteLocalities: true
      retryIgnorePreviousHosts: false
      backoff: 50ms
    fault:
      delay:
        fixedDelay: 100ms
        percentage: {value: 0.1}
      abort:
        grpcStatus: UNAVAILABLE
        percentage: {value: 0.5}
    mirrors:
    - destination: {host: reviews-shadow, subset: v2}
      percentage: {value: 50}
    - destination: {host: reviews-audit}
    corsPolicy:
      allowOrigins:
      - exact: https://example.com
      - regex: "https://.*\\.example\\.org"
      allowMethods: [POST, GET]
      allowHeaders: [X-Foo-Bar]
      exposeHeaders: [X-Expose]
      maxAge: 24h
      allowCredentials: false
      unmatchedPreflights: IGNORE
    headers:
      response:
        set: {x-served-by: mesh}
        remove: [server]
  - name: legacy
    match:
    - uri: {prefix: /legacy/}
    redirect:
      prefixRewrite: /v2/
      authority: new.bookinfo.com
      derivePort: FROM_PROTOCOL_DEFAULT
      scheme: https
      redirectCode: 308
  - name: gone
    match:
    - uri: {exact: /old}
    directResponse:
      status: 410
      body: {string: "gone\n"}
  - name: teapot
    match:
    - uri: {exact: /tea}
    directResponse:
      status: 418
      body: {bytes: dGVhcG90}
  - name: delegated
    match:
    - uri: {prefix: /productpage}
    delegate: {name: productpage, namespace: team-a}
  - name: regex-rewrite
    match:
    - uri: {regex: "^/service/([^/]+)(/.*)$"}
    rewrite:
      uriRegexRewrite: {match: "^/service/([^/]+)(/.*)$", rewrite: "\\2/instance/\\1"}
    route:
    - destination: {host: reviews.prod.svc.cluster.local}
    mirror: {host: reviews-shadow}
    mirrorPercentage: {value: 100.0}
  - route:
    - destination: {host: reviews.prod.svc.cluster.local, subset: v1}
  tls:
  - match:
    - sniHosts: [login.bookinfo.com]
      port: 443
      destinationSubnets: [10.0.0.0/16, "2001:db8::/32"]
      sourceLabels: {app: web}
      gateways: [mesh]
      sourceNamespace: prod
    route:
    - destination: {host: login.prod.svc.cluster.local, port: {number: 443}}
  tcp:
  - match:
    - port: 27017
      sourceSubnet: 192.168.0.0/24
      destinationSubnets: [10.1.0.0/16]
    route:
    - destination: {host: mongo.backup.svc.cluster.local, port: {number: 5555}}
      weight: 20
    - destination: {host: mongo.prod.svc.cluster.local, port: {number: 5555}}
      weight: 80
  - route:
    - destination: {host: mongo.prod.svc.cluster.local}
"#;

#[test]
fn upstream_like_full_resource_loads_cleanly() {
    let loaded = load(UPSTREAM_LIKE);
    assert_eq!(own(&loaded), "");
    assert_eq!(loaded.resources.len(), 1);
    let Spec::VirtualService(spec) = &loaded.resources[0].spec else {
        panic!("not a VirtualService");
    };
    assert_eq!(spec.http.len(), 7);
    assert_eq!(spec.http[0].matches.len(), 2);
    assert_eq!(spec.http[0].route[0].weight, Some(75));
    let fault = spec.http[0].fault.as_ref().expect("fault");
    assert!((fault.delay.as_ref().expect("delay").fraction() - 0.001).abs() < 1e-12);
    assert_eq!(
        spec.http[0]
            .retries
            .as_ref()
            .expect("retries")
            .retry_on_tokens(),
        ["gateway-error", "connect-failure", "refused-stream", "503"]
    );
    assert_eq!(
        mesh_core::schema::istio_networking::grpc_status_code("UNAVAILABLE"),
        Some(14)
    );
    assert_eq!(
        spec.effective_gateways(),
        ["mesh", "istio-system/bookinfo-gateway"]
    );
}

#[test]
fn json_round_trip_gives_back_the_same_spec() {
    let mut texts = vec![UPSTREAM_LIKE.to_owned()];
    for name in [
        "02-virtual-service-traffic-routing.yaml",
        "06-fault-injection.yaml",
        "12-traffic-mirroring-shadow-traffic.yaml",
        "17-retries.yaml",
    ] {
        let path = format!("{}/../../fixtures/seed/{name}", env!("CARGO_MANIFEST_DIR"));
        texts.push(std::fs::read_to_string(&path).expect("seed fixture"));
    }
    let mut checked = 0;
    for text in texts {
        for res in load(&text).resources {
            if res.kind != Kind::VirtualService {
                continue;
            }
            let json = serde_json::to_value(&res.spec).expect("serialize");
            let back = Spec::from_json(Kind::VirtualService, json.clone()).expect("deserialize");
            assert_eq!(back, res.spec, "{json}");
            checked += 1;
        }
    }
    assert_eq!(checked, 6);
}

#[test]
fn json_form_uses_upstream_spelling() {
    let loaded = load(&vs("  hosts: [reviews]
  http:
  - match:
    - uri: {prefix: /a}
    route:
    - destination: {host: reviews, port: {number: 9080}}
    mirrorPercentage: {value: 5}
    mirror: {host: reviews, subset: v2}
    retries: {attempts: 2, perTryTimeout: 1500ms}
"));
    assert_eq!(own(&loaded), "");
    let json = serde_json::to_value(&loaded.resources[0].spec).expect("serialize");
    assert_eq!(
        json,
        serde_json::json!({
            "hosts": ["reviews"],
            "http": [{
                "match": [{"uri": {"prefix": "/a"}}],
                "route": [{"destination": {"host": "reviews", "port": {"number": 9080}}}],
                "retries": {"attempts": 2, "perTryTimeout": "1.5s"},
                "mirror": {"host": "reviews", "subset": "v2"},
                "mirrorPercentage": {"value": 5.0},
            }]
        })
    );
}
