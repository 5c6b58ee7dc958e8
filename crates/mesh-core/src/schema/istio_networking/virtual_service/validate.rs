//! Validation of VirtualService: the shapes Istio rejects are errors, the
//! suspicious but loadable ones (weights not summing to 100, deprecated
//! fields, shadowed rules) are warnings.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::{
    CorsPolicy, Delegate, Destination, FaultAbort, FaultDelay, GRPC_STATUS_NAMES, HeaderOperations,
    Headers, HttpBody, HttpDirectResponse, HttpFaultInjection, HttpMatchRequest, HttpMirrorPolicy,
    HttpRedirect, HttpRetry, HttpRewrite, HttpRoute, L4MatchAttributes, Percentage,
    RETRY_ON_CONDITIONS, RouteDestination, StringMatch, TcpRoute, TlsMatchAttributes, TlsRoute,
    VirtualService,
};
use crate::schema::common::{Duration, Percent};
use crate::validate::{Checker, Validate, checks};
use crate::yaml::de::closest;

/// Redirect status codes Envoy (and so Istio) can send.
const REDIRECT_CODES: &[u32] = &[301, 302, 303, 307, 308];

/// Methods a CORS policy may allow (Go's `net/http` list, as Istio checks).
const CORS_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*",
];

/// Direct response bodies above this are rejected, as Istio does.
const MAX_BODY: usize = 1 << 20;
/// Direct response bodies above this are warned about, as Istio does.
const LARGE_BODY: usize = 100 << 10;

impl Validate for VirtualService {
    fn validate(&self, cx: &mut Checker) {
        cx.field("hosts", |c| {
            if self.hosts.is_empty() {
                c.error("hosts must name at least one host (delegate VirtualServices without hosts are not supported)");
            }
        });
        cx.each("hosts", &self.hosts, |c, h| checks::host(c, h, true));
        for (i, h) in self.hosts.iter().enumerate() {
            if self.hosts[..i].iter().any(|p| p.eq_ignore_ascii_case(h)) {
                cx.field("hosts", |c| {
                    c.index(i, |c| c.error(format!("host {h:?} is listed twice")));
                });
            }
        }
        cx.each("gateways", &self.gateways, |c, g| gateway_name(c, g));
        cx.each("exportTo", &self.export_to, |c, e| export_to(c, e));
        if self.http.is_empty() && self.tcp.is_empty() && self.tls.is_empty() {
            cx.error("a VirtualService needs at least one http, tcp or tls rule");
        }

        cx.each("http", &self.http, |c, rule| rule.validate(c));
        warn_shadowing(cx, "http", self.http.iter().map(|r| r.matches.is_empty()));

        cx.each("tcp", &self.tcp, |c, rule| rule.validate(c));
        warn_shadowing(cx, "tcp", self.tcp.iter().map(|r| r.matches.is_empty()));

        cx.each("tls", &self.tls, |c, rule| {
            validate_tls_route(c, rule, &self.hosts)
        });
    }
}

/// Warns on a rule without match that is followed by other rules: it
/// catches everything, so they are never used (SPEC 4.2).
fn warn_shadowing(cx: &mut Checker, list: &str, catch_all: impl Iterator<Item = bool>) {
    let flags: Vec<bool> = catch_all.collect();
    let Some(first) = flags.iter().position(|&b| b) else {
        return;
    };
    let after = flags.len() - first - 1;
    if after == 0 {
        return;
    }
    let what = if after == 1 {
        "the rule after it".to_owned()
    } else {
        format!("the {after} rules after it")
    };
    cx.field(list, |c| {
        c.index(first, |c| {
            c.warn(format!(
                "this rule has no match and shadows {what}; put it last or give it a match"
            ));
        });
    });
}

impl Validate for HttpRoute {
    fn validate(&self, cx: &mut Checker) {
        let has_route = !self.route.is_empty();
        let redirect = self.redirect.is_some();
        let direct = self.direct_response.is_some();
        let delegate = self.delegate.is_some();
        if redirect && has_route {
            cx.error_at("redirect", "a rule cannot have both route and redirect");
        }
        if redirect && direct {
            cx.error_at(
                "directResponse",
                "a rule cannot have both redirect and directResponse",
            );
        } else if has_route && direct {
            cx.error_at(
                "directResponse",
                "a rule cannot have both route and directResponse",
            );
        }
        if delegate && (has_route || redirect || direct) {
            cx.error_at(
                "delegate",
                "a rule with delegate cannot also have route, redirect or directResponse",
            );
        }
        if !(has_route || redirect || direct || delegate) {
            cx.error("a rule needs one of route, redirect, directResponse or delegate");
        }
        if self.rewrite.is_some() && (redirect || direct) {
            let other = if redirect {
                "redirect"
            } else {
                "directResponse"
            };
            cx.error_at(
                "rewrite",
                format!("rewrite has no effect on a rule with {other}; remove it"),
            );
        }

        cx.each("match", &self.matches, |c, m| m.validate(c));
        cx.field("route", |c| {
            c.each_route(&self.route, |c, d| {
                c.field("destination", |c| d.destination.validate(c));
                c.field("headers", |c| d.headers.validate(c));
                d.weight
            });
        });
        if let Some(r) = &self.redirect {
            cx.field("redirect", |c| validate_redirect(c, r, &self.matches));
        }
        cx.field("directResponse", |c| self.direct_response.validate(c));
        cx.field("delegate", |c| self.delegate.validate(c));
        cx.field("rewrite", |c| self.rewrite.validate(c));
        if let Some(retries) = &self.retries {
            cx.field("retries", |c| validate_retries(c, retries, self.timeout));
        }
        cx.field("fault", |c| self.fault.validate(c));
        cx.field("mirror", |c| self.mirror.validate(c));
        cx.each("mirrors", &self.mirrors, |c, m| m.validate(c));
        if self.mirror.is_some() && !self.mirrors.is_empty() {
            cx.error_at(
                "mirrors",
                "a rule cannot have both mirror and mirrors; move mirror into mirrors",
            );
        }
        if let Some(p) = self.mirror_percent {
            cx.field("mirrorPercent", |c| {
                c.warn("mirrorPercent is deprecated; use mirrorPercentage: {value: ...}");
                checks::percent(c, Percent(f64::from(p)));
            });
        }
        cx.field("mirrorPercentage", |c| {
            percentage(c, self.mirror_percentage)
        });
        cx.field("corsPolicy", |c| self.cors_policy.validate(c));
        cx.field("headers", |c| self.headers.validate(c));
    }
}

/// Walks weighted destinations and checks their weights together.
trait EachRoute {
    fn each_route<T>(&mut self, items: &[T], f: impl FnMut(&mut Self, &T) -> Option<u32>);
}

impl EachRoute for Checker {
    /// The checker is at the `route` list. Several destinations with all
    /// weights 0 is an error; a sum other than 100 is a warning (SPEC 4.3).
    fn each_route<T>(&mut self, items: &[T], mut f: impl FnMut(&mut Self, &T) -> Option<u32>) {
        let mut sum: u64 = 0;
        for (i, item) in items.iter().enumerate() {
            let w = self.index(i, |c| f(c, item));
            sum += u64::from(w.unwrap_or(0));
        }
        if items.len() > 1 {
            if sum == 0 {
                self.error(
                    "all weights are 0 (or absent); give at least one destination a positive weight",
                );
            } else if sum != 100 {
                self.warn(format!(
                    "weights sum to {sum}, not 100; traffic is split by relative weight"
                ));
            }
        }
    }
}

/// Which empty forms a string match may take.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Presence {
    /// `{}` is an error (uri, method, authority, scheme, CORS origins).
    Required,
    /// `{}` means "present" (queryParams).
    Allowed,
    /// `{}` and `regex: "*"` mean "present" (headers, withoutHeaders).
    AllowedWithStar,
}

fn string_match(cx: &mut Checker, sm: &StringMatch, presence: Presence) {
    let set = sm.set_fields();
    match set.len() {
        0 if presence == Presence::Required => {
            cx.error("a string match needs one of exact, prefix or regex");
        }
        0 | 1 => {}
        _ => cx.error(format!(
            "set only one of exact, prefix or regex (found {})",
            set.join(" and ")
        )),
    }
    if let Some(re) = &sm.regex
        && !(presence == Presence::AllowedWithStar && re == "*")
    {
        cx.field("regex", |c| checks::regex(c, re));
    }
}

fn string_match_map(
    cx: &mut Checker,
    name: &str,
    map: &BTreeMap<String, StringMatch>,
    presence: Presence,
) {
    cx.field(name, |c| {
        for (key, sm) in map {
            c.field(key, |c| string_match(c, sm, presence));
        }
    });
}

impl Validate for HttpMatchRequest {
    fn validate(&self, cx: &mut Checker) {
        for (name, sm) in [
            ("uri", &self.uri),
            ("scheme", &self.scheme),
            ("method", &self.method),
            ("authority", &self.authority),
        ] {
            if let Some(sm) = sm {
                cx.field(name, |c| string_match(c, sm, Presence::Required));
            }
        }
        string_match_map(cx, "headers", &self.headers, Presence::AllowedWithStar);
        string_match_map(cx, "queryParams", &self.query_params, Presence::Allowed);
        string_match_map(
            cx,
            "withoutHeaders",
            &self.without_headers,
            Presence::AllowedWithStar,
        );
        if let Some(p) = self.port {
            cx.field("port", |c| checks::port_number(c, p));
        }
        cx.each("gateways", &self.gateways, |c, g| gateway_name(c, g));
        if let Some(ns) = &self.source_namespace {
            cx.field("sourceNamespace", |c| {
                checks::dns1123_subdomain(c, "namespace", ns);
            });
        }
    }
}

impl Validate for Destination {
    fn validate(&self, cx: &mut Checker) {
        cx.field("host", |c| checks::host(c, &self.host, false));
        if let Some(subset) = &self.subset {
            cx.field("subset", |c| dns1123_label(c, "subset name", subset));
        }
        if let Some(port) = self.port {
            cx.field("port", |c| {
                c.field("number", |c| checks::port_number(c, port.number));
            });
        }
    }
}

impl Validate for Headers {
    fn validate(&self, cx: &mut Checker) {
        cx.field("request", |c| self.request.validate(c));
        cx.field("response", |c| self.response.validate(c));
    }
}

impl Validate for HeaderOperations {
    fn validate(&self, cx: &mut Checker) {
        for (list, map) in [("set", &self.set), ("add", &self.add)] {
            cx.field(list, |c| {
                for name in map.keys() {
                    c.field(name, |c| header_name(c, name));
                }
            });
        }
        cx.each("remove", &self.remove, |c, name| header_name(c, name));
    }
}

/// A header name: an HTTP token, or a pseudo-header such as `:authority`.
fn header_name(cx: &mut Checker, name: &str) {
    let body = name.strip_prefix(':').unwrap_or(name);
    let ok = !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !ok {
        cx.error(format!(
            "invalid header name {name:?}: use letters, digits and '-'"
        ));
    }
}

fn validate_redirect(cx: &mut Checker, r: &HttpRedirect, matches: &[HttpMatchRequest]) {
    if r.uri.is_some() && r.prefix_rewrite.is_some() {
        cx.error_at("prefixRewrite", "set only one of uri or prefixRewrite");
    } else if r.prefix_rewrite.is_some()
        && matches
            .iter()
            .any(|m| m.uri.as_ref().is_some_and(|u| u.prefix.is_none()))
    {
        cx.error_at(
            "prefixRewrite",
            "prefixRewrite needs every uri match of the rule to be a prefix match",
        );
    }
    if r.uri.is_none()
        && r.prefix_rewrite.is_none()
        && r.authority.is_none()
        && r.scheme.is_none()
        && r.port.is_none()
        && r.derive_port.is_none()
    {
        cx.error("redirect needs at least one of uri, prefixRewrite, authority, scheme, port or derivePort");
    }
    if let Some(port) = r.port {
        cx.field("port", |c| checks::port_number(c, port));
        if r.derive_port.is_some() {
            cx.error_at("derivePort", "set only one of port or derivePort");
        }
    }
    if let Some(scheme) = &r.scheme
        && scheme != "http"
        && scheme != "https"
    {
        cx.error_at(
            "scheme",
            format!("invalid redirect scheme {scheme:?}: use http or https"),
        );
    }
    if let Some(code) = r.redirect_code
        && !REDIRECT_CODES.contains(&code)
    {
        cx.error_at(
            "redirectCode",
            format!("redirect code {code} is not supported; use 301, 302, 303, 307 or 308"),
        );
    }
}

impl Validate for HttpDirectResponse {
    fn validate(&self, cx: &mut Checker) {
        cx.field("status", |c| checks::http_status(c, self.status));
        if let Some(body) = &self.body {
            cx.field("body", |c| validate_body(c, body));
        }
    }
}

fn validate_body(cx: &mut Checker, body: &HttpBody) {
    let size = match (&body.string, &body.bytes) {
        (Some(_), Some(_)) => {
            cx.error("set only one of string or bytes");
            return;
        }
        (Some(s), None) => s.len(),
        (None, Some(b)) => match base64_len(b) {
            Some(n) => n,
            None => {
                cx.error_at("bytes", "bytes must be base64 (standard alphabet, padded)");
                return;
            }
        },
        (None, None) => 0,
    };
    if size > MAX_BODY {
        cx.error(format!(
            "the body is {size} bytes; direct responses must be under 1MB"
        ));
    } else if size > LARGE_BODY {
        cx.warn(format!(
            "the body is {size} bytes; large direct responses are held in every proxy's memory"
        ));
    }
}

/// The decoded length of standard, padded base64, or `None` if malformed.
fn base64_len(text: &str) -> Option<usize> {
    let t: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !t.len().is_multiple_of(4) {
        return None;
    }
    let pad = t.iter().rev().take_while(|&&b| b == b'=').count();
    if pad > 2 {
        return None;
    }
    let body_ok = t[..t.len() - pad]
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/');
    body_ok.then(|| t.len() / 4 * 3 - pad)
}

impl Validate for Delegate {
    fn validate(&self, cx: &mut Checker) {
        if self.name.is_empty() {
            cx.error("delegate needs the name of a VirtualService");
        } else {
            cx.field("name", |c| {
                checks::dns1123_subdomain(c, "name", &self.name);
            });
        }
        if let Some(ns) = &self.namespace {
            cx.field("namespace", |c| {
                checks::dns1123_subdomain(c, "namespace", ns);
            });
        }
    }
}

impl Validate for HttpRewrite {
    fn validate(&self, cx: &mut Checker) {
        if self.uri.is_some() && self.uri_regex_rewrite.is_some() {
            cx.error_at("uriRegexRewrite", "set only one of uri or uriRegexRewrite");
        }
        if self.uri.is_none() && self.authority.is_none() && self.uri_regex_rewrite.is_none() {
            cx.error("rewrite needs at least one of uri, uriRegexRewrite or authority");
        }
        if let Some(rr) = &self.uri_regex_rewrite {
            cx.field("uriRegexRewrite", |c| {
                c.field("match", |c| {
                    if rr.pattern.is_empty() {
                        c.error("match must be a non-empty regex");
                    } else {
                        checks::regex(c, &rr.pattern);
                    }
                });
            });
        }
    }
}

fn validate_retries(cx: &mut Checker, r: &HttpRetry, timeout: Option<Duration>) {
    if let Some(retry_on) = &r.retry_on {
        cx.field("retryOn", |c| validate_retry_on(c, retry_on));
    }
    let attempts = r.attempts.unwrap_or(0);
    if attempts > 0
        && let (Some(per_try), Some(total)) = (r.per_try_timeout, timeout)
        && !total.is_zero()
        && per_try > total
    {
        cx.field("perTryTimeout", |c| {
            c.warn(format!(
                "perTryTimeout {per_try} is longer than the route timeout {total}, which fires first"
            ));
        });
    }
}

fn validate_retry_on(cx: &mut Checker, retry_on: &str) {
    if retry_on.is_empty() {
        cx.error("retryOn is empty; omit it for the default conditions");
        return;
    }
    let mut empty_reported = false;
    for token in retry_on.split(',') {
        if token.is_empty() {
            if !empty_reported {
                cx.error(format!(
                    "retryOn {retry_on:?} has an empty condition; remove the extra comma"
                ));
                empty_reported = true;
            }
            continue;
        }
        if RETRY_ON_CONDITIONS.contains(&token) {
            continue;
        }
        if token.bytes().all(|b| b.is_ascii_digit()) {
            match token.parse::<u32>() {
                Ok(code) if (100..=599).contains(&code) => {}
                _ => cx.error(format!(
                    "status code {token} in retryOn is outside 100..599"
                )),
            }
            continue;
        }
        let hint = match closest(token.trim(), RETRY_ON_CONDITIONS) {
            Some(best) => format!(" (did you mean `{best}`?)"),
            None => format!(
                "; expected one of {} or a status code 100..599",
                RETRY_ON_CONDITIONS.join(", ")
            ),
        };
        cx.error(format!("unknown retryOn condition `{token}`{hint}"));
    }
}

impl Validate for HttpFaultInjection {
    fn validate(&self, cx: &mut Checker) {
        if self.delay.is_none() && self.abort.is_none() {
            cx.error("fault needs a delay, an abort or both");
        }
        cx.field("delay", |c| self.delay.validate(c));
        cx.field("abort", |c| self.abort.validate(c));
    }
}

impl Validate for FaultDelay {
    fn validate(&self, cx: &mut Checker) {
        if self.exponential_delay.is_some() {
            cx.error_at(
                "exponentialDelay",
                "exponentialDelay is not supported; use fixedDelay",
            );
        } else if self.fixed_delay.is_none() {
            cx.error("delay needs fixedDelay");
        }
        if let Some(p) = self.percent {
            cx.field("percent", |c| {
                c.warn("percent is deprecated; use percentage: {value: ...}");
                checks::percent(c, Percent(f64::from(p)));
            });
        }
        cx.field("percentage", |c| percentage(c, self.percentage));
        if self.percentage.is_none() && self.percent.is_none() {
            cx.warn("delay has no percentage, so no request is delayed; add percentage: {value: 100} to delay every request");
        }
    }
}

impl Validate for FaultAbort {
    fn validate(&self, cx: &mut Checker) {
        let set: Vec<&str> = [
            ("httpStatus", self.http_status.is_some()),
            ("grpcStatus", self.grpc_status.is_some()),
            ("http2Error", self.http2_error.is_some()),
        ]
        .into_iter()
        .filter_map(|(n, s)| s.then_some(n))
        .collect();
        match set.len() {
            0 => cx.error("abort needs one of httpStatus, grpcStatus or http2Error"),
            1 => {}
            _ => cx.error(format!(
                "set only one of httpStatus, grpcStatus or http2Error (found {})",
                set.join(" and ")
            )),
        }
        if let Some(status) = self.http_status {
            cx.field("httpStatus", |c| checks::http_status(c, status));
        }
        if let Some(name) = &self.grpc_status {
            cx.field("grpcStatus", |c| grpc_status(c, name));
        }
        if self.http2_error.is_some() {
            cx.error_at(
                "http2Error",
                "http2Error aborts are not supported (Istio rejects them too); use httpStatus or grpcStatus",
            );
        }
        cx.field("percentage", |c| percentage(c, self.percentage));
        if self.percentage.is_none() {
            cx.warn("abort has no percentage, so no request is aborted; add percentage: {value: 100} to abort every request");
        }
    }
}

fn grpc_status(cx: &mut Checker, name: &str) {
    if GRPC_STATUS_NAMES.contains(&name) {
        return;
    }
    let hint = match closest(name, GRPC_STATUS_NAMES) {
        Some(best) => format!(" (did you mean `{best}`?)"),
        None => format!("; expected one of {}", GRPC_STATUS_NAMES.join(", ")),
    };
    cx.error(format!("unknown gRPC status `{name}`{hint}"));
}

/// Range-checks a `{value}` percentage; the checker is at the percentage field.
fn percentage(cx: &mut Checker, p: Option<Percentage>) {
    if let Some(p) = p {
        cx.field("value", |c| checks::percent(c, p.value));
    }
}

impl Validate for HttpMirrorPolicy {
    fn validate(&self, cx: &mut Checker) {
        cx.field("destination", |c| self.destination.validate(c));
        cx.field("percentage", |c| percentage(c, self.percentage));
    }
}

impl Validate for CorsPolicy {
    fn validate(&self, cx: &mut Checker) {
        if !self.allow_origin.is_empty() {
            cx.field("allowOrigin", |c| {
                c.warn("allowOrigin is deprecated; use allowOrigins with exact matches");
            });
        }
        cx.each("allowOrigins", &self.allow_origins, |c, sm| {
            string_match(c, sm, Presence::Required);
        });
        cx.each("allowMethods", &self.allow_methods, |c, m| {
            if !CORS_METHODS.contains(&m.as_str()) {
                let hint = match closest(m, CORS_METHODS) {
                    Some(best) => format!(" (did you mean `{best}`?)"),
                    None => format!("; expected one of {}", CORS_METHODS.join(", ")),
                };
                c.error(format!("unknown HTTP method `{m}`{hint}"));
            }
        });
        cx.each("allowHeaders", &self.allow_headers, |c, h| {
            if h != "*" {
                header_name(c, h);
            }
        });
        cx.each("exposeHeaders", &self.expose_headers, |c, h| {
            if h != "*" {
                header_name(c, h);
            }
        });
        if let Some(max_age) = self.max_age
            && max_age.get().subsec_nanos() != 0
        {
            cx.error_at(
                "maxAge",
                format!("maxAge {max_age} is not whole seconds; browsers only take seconds"),
            );
        }
    }
}

impl Validate for TcpRoute {
    fn validate(&self, cx: &mut Checker) {
        cx.each("match", &self.matches, |c, m| m.validate(c));
        if self.route.is_empty() {
            cx.error_at("route", "a tcp rule needs at least one route destination");
        }
        cx.field("route", |c| route_destinations(c, &self.route));
    }
}

fn route_destinations(cx: &mut Checker, route: &[RouteDestination]) {
    cx.each_route(route, |c, d| {
        c.field("destination", |c| d.destination.validate(c));
        d.weight
    });
}

impl Validate for L4MatchAttributes {
    fn validate(&self, cx: &mut Checker) {
        cx.each("destinationSubnets", &self.destination_subnets, |c, s| {
            subnet(c, s);
        });
        if let Some(p) = self.port {
            cx.field("port", |c| checks::port_number(c, p));
        }
        if let Some(s) = &self.source_subnet {
            cx.field("sourceSubnet", |c| subnet(c, s));
        }
        cx.each("gateways", &self.gateways, |c, g| gateway_name(c, g));
        if let Some(ns) = &self.source_namespace {
            cx.field("sourceNamespace", |c| {
                checks::dns1123_subdomain(c, "namespace", ns);
            });
        }
    }
}

fn validate_tls_route(cx: &mut Checker, rule: &TlsRoute, hosts: &[String]) {
    if rule.matches.is_empty() {
        cx.error_at("match", "a tls rule needs at least one match with sniHosts");
    }
    cx.each("match", &rule.matches, |c, m| {
        validate_tls_match(c, m, hosts)
    });
    if rule.route.is_empty() {
        cx.error_at("route", "a tls rule needs at least one route destination");
    }
    cx.field("route", |c| route_destinations(c, &rule.route));
}

fn validate_tls_match(cx: &mut Checker, m: &TlsMatchAttributes, hosts: &[String]) {
    if m.sni_hosts.is_empty() {
        cx.error_at("sniHosts", "a tls match needs at least one sniHosts entry");
    }
    cx.each("sniHosts", &m.sni_hosts, |c, sni| {
        let before = c.findings().len();
        checks::host(c, sni, true);
        if c.findings().len() == before && !hosts.is_empty() && !sni_covered(sni, hosts) {
            c.error(format!(
                "SNI host {sni:?} is not covered by any of the hosts of this VirtualService ({})",
                hosts.join(", ")
            ));
        }
    });
    cx.each("destinationSubnets", &m.destination_subnets, |c, s| {
        subnet(c, s);
    });
    if let Some(p) = m.port {
        cx.field("port", |c| checks::port_number(c, p));
    }
    cx.each("gateways", &m.gateways, |c, g| gateway_name(c, g));
    if let Some(ns) = &m.source_namespace {
        cx.field("sourceNamespace", |c| {
            checks::dns1123_subdomain(c, "namespace", ns);
        });
    }
}

/// Whether one of the VirtualService's hosts covers an SNI name. Short host
/// names (`reviews`) cover the names they qualify to (`reviews.ns...`).
fn sni_covered(sni: &str, hosts: &[String]) -> bool {
    hosts.iter().any(|h| {
        h == "*"
            || h.eq_ignore_ascii_case(sni)
            || crate::host::covers(h, sni)
            || (!h.contains('.')
                && sni.len() > h.len()
                && sni[..h.len()].eq_ignore_ascii_case(h)
                && sni.as_bytes()[h.len()] == b'.')
    })
}

/// A gateway reference: `mesh`, `name`, `namespace/name`, or the legacy
/// `name.namespace...` form.
fn gateway_name(cx: &mut Checker, g: &str) {
    let ok = match g.split_once('/') {
        Some((ns, name)) => is_dns1123_label(ns) && is_dns1123_label(name),
        None => is_dns1123_subdomain(g),
    };
    if !ok {
        cx.error(format!(
            "invalid gateway {g:?}: expected mesh, <name> or <namespace>/<name>"
        ));
    }
}

fn export_to(cx: &mut Checker, e: &str) {
    if e == "." || e == "*" || e == "~" || is_dns1123_label(e) {
        return;
    }
    cx.error(format!(
        "invalid exportTo {e:?}: expected \".\", \"*\" or a namespace name"
    ));
}

/// An IP address or CIDR (`10.0.0.0/8`, `2001:db8::/32`).
fn subnet(cx: &mut Checker, s: &str) {
    let (ip, prefix) = s.split_once('/').unwrap_or((s, ""));
    let ok = match ip.parse::<IpAddr>() {
        Ok(addr) => {
            let max = if addr.is_ipv4() { 32 } else { 128 };
            prefix.is_empty() || prefix.parse::<u32>().is_ok_and(|p| p <= max)
        }
        Err(_) => false,
    };
    if !ok {
        cx.error(format!(
            "invalid subnet {s:?}: expected an IP address or a CIDR such as 10.0.0.0/8"
        ));
    }
}

fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

fn dns1123_label(cx: &mut Checker, what: &str, s: &str) {
    if !is_dns1123_label(s) {
        cx.error(format!(
            "invalid {what} {s:?}: use lowercase letters, digits and '-' (at most 63)"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::PathSeg;

    fn run(f: impl FnOnce(&mut Checker)) -> Vec<String> {
        let mut cx = Checker::new(&[PathSeg::Field("spec".into())]);
        f(&mut cx);
        cx.into_findings()
            .into_iter()
            .map(|f| format!("{}: {}", f.path, f.message))
            .collect()
    }

    #[test]
    fn base64_lengths() {
        assert_eq!(base64_len("aGVsbG8="), Some(5));
        assert_eq!(base64_len("aGVsbG8h"), Some(6));
        assert_eq!(base64_len(""), Some(0));
        assert_eq!(base64_len("aGVsbG8"), None);
        assert_eq!(base64_len("aGV*bG8="), None);
    }

    #[test]
    fn retry_on_tokens() {
        assert!(run(|c| validate_retry_on(c, "5xx,reset,503,retriable-status-codes")).is_empty());
        assert_eq!(
            run(|c| validate_retry_on(c, "5xx,reset-befor-request")),
            [
                "spec: unknown retryOn condition `reset-befor-request` (did you mean `reset-before-request`?)"
            ]
        );
        assert_eq!(
            run(|c| validate_retry_on(c, "5xx, reset")),
            ["spec: unknown retryOn condition ` reset` (did you mean `reset`?)"]
        );
        assert_eq!(
            run(|c| validate_retry_on(c, "99")),
            ["spec: status code 99 in retryOn is outside 100..599"]
        );
    }

    #[test]
    fn subnets_and_gateways() {
        assert!(run(|c| subnet(c, "10.0.0.0/8")).is_empty());
        assert!(run(|c| subnet(c, "2001:db8::/32")).is_empty());
        assert!(run(|c| subnet(c, "10.1.2.3")).is_empty());
        assert_eq!(run(|c| subnet(c, "10.0.0.0/33")).len(), 1);
        assert_eq!(run(|c| subnet(c, "example.com")).len(), 1);
        for g in ["mesh", "bookinfo-gateway", "istio-system/ingress", "gw.ns"] {
            assert!(run(|c| gateway_name(c, g)).is_empty(), "{g}");
        }
        assert_eq!(run(|c| gateway_name(c, "a/b/c")).len(), 1);
        assert_eq!(run(|c| gateway_name(c, "Bad_Gw")).len(), 1);
    }

    #[test]
    fn sni_hosts_are_covered_by_vs_hosts() {
        let hosts = ["*.bookinfo.com".to_owned(), "reviews".to_owned()];
        assert!(sni_covered("login.bookinfo.com", &hosts));
        assert!(sni_covered("*.a.bookinfo.com", &hosts));
        assert!(sni_covered("reviews.default.svc.cluster.local", &hosts));
        assert!(!sni_covered("bookinfo.com", &hosts));
        assert!(!sni_covered("example.org", &hosts));
    }
}
