//! HTTPRoute: Gateway API `gateway.networking.k8s.io/v1` and Linkerd's
//! `policy.linkerd.io` HTTPRoute (SPEC 3, 13.4).

use serde::{Deserialize, Serialize};

use super::{BackendObjectReference, BackendRef, LocalObjectReference, ParentReference};
use crate::schema::common::Duration;
use crate::validate::{Checker, Validate, checks};

/// An HTTPRoute spec.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRoute {
    /// Where the route attaches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_refs: Vec<ParentReference>,
    /// Host header values served; all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// Rules (at most 16); precedence across rules is SPEC 3.2's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<HttpRouteRule>,
}

/// A backend of an HTTPRoute rule.
pub type HttpBackendRef = BackendRef<HttpRouteFilter>;

/// One rule of an HTTPRoute.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteRule {
    /// Optional rule name (a section name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Matches, ORed; one `PathPrefix /` match when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpRouteMatch>,
    /// Filters, applied in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HttpRouteFilter>,
    /// Weighted backends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<HttpBackendRef>,
    /// Request and per-attempt timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<HttpRouteTimeouts>,
    /// Retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<HttpRouteRetry>,
    /// Session persistence (not interpreted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_persistence: Option<serde_json::Value>,
}

/// One match: path, headers, query parameters and method, ANDed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteMatch {
    /// Path match; `PathPrefix /` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HttpPathMatch>,
    /// Header matches, ANDed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HttpHeaderMatch>,
    /// Query parameter matches, ANDed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<HttpHeaderMatch>,
    /// Method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<HttpMethod>,
}

/// A path match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpPathMatch {
    /// How to match; `PathPrefix` when absent.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<PathMatchType>,
    /// The path or pattern; `/` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

impl HttpPathMatch {
    /// The match type, with its default.
    pub fn kind(&self) -> PathMatchType {
        self.kind.unwrap_or_default()
    }

    /// The value, with its default.
    pub fn value(&self) -> &str {
        self.value.as_deref().unwrap_or("/")
    }
}

/// How a path is matched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PathMatchType {
    /// Byte-exact.
    Exact,
    /// Segment-wise prefix.
    #[default]
    PathPrefix,
    /// RE2, full match.
    RegularExpression,
}

/// A header or query parameter match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHeaderMatch {
    /// How to match; `Exact` when absent.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<ValueMatchType>,
    /// The header (case-insensitive) or parameter (case-sensitive) name.
    pub name: String,
    /// The value or pattern.
    pub value: String,
}

/// How a header or parameter value is matched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ValueMatchType {
    /// Exact, case-sensitive.
    #[default]
    Exact,
    /// RE2, full match.
    RegularExpression,
}

/// An HTTP method, as Gateway API spells them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// GET.
    Get,
    /// HEAD.
    Head,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// DELETE.
    Delete,
    /// CONNECT.
    Connect,
    /// OPTIONS.
    Options,
    /// TRACE.
    Trace,
    /// PATCH.
    Patch,
}

/// A filter: `type` names which one of the payload fields is set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteFilter {
    /// Which filter this is.
    #[serde(rename = "type")]
    pub kind: HttpFilterType,
    /// Payload of RequestHeaderModifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HeaderModifier>,
    /// Payload of ResponseHeaderModifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HeaderModifier>,
    /// Payload of RequestMirror.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_mirror: Option<RequestMirror>,
    /// Payload of RequestRedirect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<RequestRedirect>,
    /// Payload of URLRewrite.
    #[serde(
        default,
        rename = "urlRewrite",
        skip_serializing_if = "Option::is_none"
    )]
    pub url_rewrite: Option<UrlRewrite>,
    /// Payload of ExtensionRef.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_ref: Option<LocalObjectReference>,
    /// Payload of CORS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
    /// Payload of ExternalAuth (not interpreted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_auth: Option<serde_json::Value>,
}

/// HTTPRoute filter types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HttpFilterType {
    /// Edit request headers.
    RequestHeaderModifier,
    /// Edit response headers.
    ResponseHeaderModifier,
    /// Copy requests to another backend.
    RequestMirror,
    /// Answer with a redirect.
    RequestRedirect,
    /// Rewrite host and path.
    #[serde(rename = "URLRewrite")]
    UrlRewrite,
    /// Implementation-specific filter.
    ExtensionRef,
    /// CORS.
    #[serde(rename = "CORS")]
    Cors,
    /// External authorization.
    ExternalAuth,
}

impl HttpFilterType {
    /// The YAML name of this type's payload field.
    pub fn field(self) -> &'static str {
        match self {
            HttpFilterType::RequestHeaderModifier => "requestHeaderModifier",
            HttpFilterType::ResponseHeaderModifier => "responseHeaderModifier",
            HttpFilterType::RequestMirror => "requestMirror",
            HttpFilterType::RequestRedirect => "requestRedirect",
            HttpFilterType::UrlRewrite => "urlRewrite",
            HttpFilterType::ExtensionRef => "extensionRef",
            HttpFilterType::Cors => "cors",
            HttpFilterType::ExternalAuth => "externalAuth",
        }
    }

    /// The name as written in `type:`.
    pub fn name(self) -> &'static str {
        match self {
            HttpFilterType::UrlRewrite => "URLRewrite",
            HttpFilterType::Cors => "CORS",
            HttpFilterType::RequestHeaderModifier => "RequestHeaderModifier",
            HttpFilterType::ResponseHeaderModifier => "ResponseHeaderModifier",
            HttpFilterType::RequestMirror => "RequestMirror",
            HttpFilterType::RequestRedirect => "RequestRedirect",
            HttpFilterType::ExtensionRef => "ExtensionRef",
            HttpFilterType::ExternalAuth => "ExternalAuth",
        }
    }
}

/// Header edits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderModifier {
    /// Headers to set (replacing existing values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HttpHeader>,
    /// Headers to append to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HttpHeader>,
    /// Header names to remove.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// A header name and value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHeader {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
}

/// Mirror requests to a backend.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestMirror {
    /// Where copies go.
    pub backend_ref: BackendObjectReference,
    /// Share of requests mirrored, 0..=100 (exclusive with `fraction`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
    /// Share of requests mirrored as a fraction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<Fraction>,
}

/// A fraction; the denominator defaults to 100.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fraction {
    /// Numerator.
    pub numerator: u32,
    /// Denominator (100 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denominator: Option<u32>,
}

/// Answer with a redirect.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestRedirect {
    /// Scheme of the Location; the request's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<RedirectScheme>,
    /// Host of the Location; the request's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Path edit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
    /// Port of the Location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Status code: 301, 302 (default), 303, 307 or 308.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u32>,
}

/// Redirect schemes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedirectScheme {
    /// http.
    Http,
    /// https.
    Https,
}

/// Rewrite host and path before forwarding.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UrlRewrite {
    /// New Host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Path edit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
}

/// A path edit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathModifier {
    /// Which edit.
    #[serde(rename = "type")]
    pub kind: PathModifierType,
    /// The new path, for ReplaceFullPath.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_full_path: Option<String>,
    /// The new prefix, for ReplacePrefixMatch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_prefix_match: Option<String>,
}

/// Path edit kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PathModifierType {
    /// Replace the whole path.
    ReplaceFullPath,
    /// Replace the matched prefix.
    ReplacePrefixMatch,
}

/// CORS settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cors {
    /// Allowed origins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origins: Vec<String>,
    /// Whether credentials are allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
    /// Allowed methods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    /// Allowed request headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    /// Exposed response headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// Preflight cache time in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u32>,
}

/// Timeouts of a rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteTimeouts {
    /// Total time, retries included; `0s` disables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Duration>,
    /// Time per upstream attempt; `0s` disables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request: Option<Duration>,
}

/// Retry policy of a rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteRetry {
    /// Retriable statuses (400..=599).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codes: Vec<u32>,
    /// Number of retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Minimum wait between tries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Duration>,
}

/// Gateway API caps (CRD validation).
const MAX_RULES: usize = 16;
const MAX_MATCHES: usize = 64;
const MAX_TOTAL_MATCHES: usize = 128;
const MAX_FILTERS: usize = 16;
const MAX_BACKENDS: usize = 16;

impl Validate for HttpRoute {
    fn validate(&self, cx: &mut Checker) {
        super::check_route_common(cx, &self.parent_refs, &self.hostnames);
        if self.rules.len() > MAX_RULES {
            cx.error_at(
                "rules",
                format!(
                    "at most {MAX_RULES} rules are allowed, found {}; split the route",
                    self.rules.len()
                ),
            );
        }
        let total: usize = self.rules.iter().map(|r| r.matches.len()).sum();
        if total > MAX_TOTAL_MATCHES {
            cx.error_at(
                "rules",
                format!("at most {MAX_TOTAL_MATCHES} matches are allowed across all rules, found {total}"),
            );
        }
        cx.each("rules", &self.rules, |c, r| r.validate(c));
    }
}

impl Validate for HttpRouteRule {
    fn validate(&self, cx: &mut Checker) {
        for (field, n, max) in [
            ("matches", self.matches.len(), MAX_MATCHES),
            ("filters", self.filters.len(), MAX_FILTERS),
            ("backendRefs", self.backend_refs.len(), MAX_BACKENDS),
        ] {
            if n > max {
                cx.error_at(
                    field,
                    format!("at most {max} {field} are allowed in a rule, found {n}"),
                );
            }
        }
        cx.each("matches", &self.matches, |c, m| m.validate(c));
        cx.each("filters", &self.filters, |c, f| f.validate(c));

        let has = |t: HttpFilterType| self.filters.iter().filter(|f| f.kind == t).count();
        let redirect = has(HttpFilterType::RequestRedirect);
        let rewrite = has(HttpFilterType::UrlRewrite);
        cx.field("filters", |c| {
            if redirect > 0 && rewrite > 0 {
                c.error("RequestRedirect and URLRewrite cannot be used in the same rule");
            }
            for t in [
                HttpFilterType::RequestHeaderModifier,
                HttpFilterType::ResponseHeaderModifier,
                HttpFilterType::RequestRedirect,
                HttpFilterType::UrlRewrite,
            ] {
                if has(t) > 1 {
                    c.error(format!("{} may appear only once in a rule", t.name()));
                }
            }
        });
        if redirect > 0 && !self.backend_refs.is_empty() {
            cx.error_at(
                "backendRefs",
                "a rule with a RequestRedirect filter must not have backendRefs",
            );
        }
        // ReplacePrefixMatch needs exactly one PathPrefix match (an empty
        // matches list is one implicit `PathPrefix /`).
        let prefix_ok = match self.matches.as_slice() {
            [] => true,
            [m] => m
                .path
                .as_ref()
                .is_none_or(|p| p.kind() == PathMatchType::PathPrefix),
            _ => false,
        };
        if !prefix_ok {
            cx.field("filters", |c| {
                for (i, f) in self.filters.iter().enumerate() {
                    let (field, path) = match f.kind {
                        HttpFilterType::RequestRedirect => (
                            "requestRedirect",
                            f.request_redirect.as_ref().and_then(|r| r.path.as_ref()),
                        ),
                        HttpFilterType::UrlRewrite => (
                            "urlRewrite",
                            f.url_rewrite.as_ref().and_then(|r| r.path.as_ref()),
                        ),
                        _ => continue,
                    };
                    if path.is_some_and(|p| p.kind == PathModifierType::ReplacePrefixMatch) {
                        c.index(i, |c| {
                            c.field(field, |c| {
                                c.error_at(
                                    "path",
                                    "ReplacePrefixMatch needs the rule to have exactly one match, with a PathPrefix path",
                                )
                            })
                        });
                    }
                }
            });
        }
        cx.each("backendRefs", &self.backend_refs, |c, b| b.validate(c));
        if let Some(t) = &self.timeouts {
            cx.field("timeouts", |c| {
                if let (Some(req), Some(be)) = (t.request, t.backend_request)
                    && !req.is_zero()
                    && (be.is_zero() || be > req)
                {
                    let shown = if be.is_zero() { "0s (no limit)".to_owned() } else { be.to_string() };
                    c.error_at(
                        "backendRequest",
                        format!("backendRequest {shown} is longer than request {req}; it must not exceed it"),
                    );
                }
            });
        }
        if let Some(r) = &self.retry {
            cx.field("retry", |c| {
                c.each("codes", &r.codes, |c, code| {
                    if !(400..=599).contains(code) {
                        c.error(format!("retry code {code} is outside 400..599"));
                    }
                });
            });
        }
    }
}

impl Validate for HttpRouteMatch {
    fn validate(&self, cx: &mut Checker) {
        if let Some(p) = &self.path {
            cx.field("path", |c| p.validate(c));
        }
        check_header_matches(cx, "headers", &self.headers, false);
        check_header_matches(cx, "queryParams", &self.query_params, true);
    }
}

impl Validate for HttpPathMatch {
    fn validate(&self, cx: &mut Checker) {
        let value = self.value();
        let at_value = |c: &mut Checker, msg: String| {
            if self.value.is_some() {
                c.error_at("value", msg)
            } else {
                c.error(msg)
            }
        };
        match self.kind() {
            PathMatchType::RegularExpression => {
                cx.field("value", |c| checks::regex(c, value));
            }
            kind => {
                if !value.starts_with('/') {
                    at_value(cx, format!("{kind:?} path {value:?} must start with '/'"));
                } else if value.contains("//") {
                    at_value(cx, format!("path {value:?} must not contain '//'"));
                } else if value.len() > 1024 {
                    at_value(cx, "path is longer than 1024 characters".to_owned());
                }
            }
        }
    }
}

fn check_header_matches(
    cx: &mut Checker,
    field: &str,
    items: &[HttpHeaderMatch],
    case_sensitive: bool,
) {
    if items.len() > 16 {
        cx.error_at(
            field,
            format!(
                "at most 16 {field} are allowed in a match, found {}",
                items.len()
            ),
        );
    }
    let what = if case_sensitive {
        "query parameter"
    } else {
        "header"
    };
    cx.field(field, |c| {
        for (i, h) in items.iter().enumerate() {
            c.index(i, |c| {
                c.field("name", |c| super::header_name(c, &h.name));
                let dup = items[..i].iter().any(|o| {
                    if case_sensitive {
                        o.name == h.name
                    } else {
                        o.name.eq_ignore_ascii_case(&h.name)
                    }
                });
                if dup && !h.name.is_empty() {
                    c.field("name", |c| {
                        c.warn(format!(
                            "{what} {:?} is matched twice in this match; only the first counts",
                            h.name
                        ))
                    });
                }
                if h.kind.unwrap_or_default() == ValueMatchType::RegularExpression {
                    c.field("value", |c| checks::regex(c, &h.value));
                }
            });
        }
    });
}

/// Checks that the payload named by `type` is set and no other is.
/// `set` lists each payload field with whether it is present.
pub(super) fn check_filter_payload(
    cx: &mut Checker,
    type_name: &str,
    want: &str,
    set: &[(&str, bool)],
) {
    if !set.iter().any(|(f, s)| *f == want && *s) {
        cx.error(format!("type {type_name} needs a `{want}` block"));
    }
    for (field, present) in set {
        if *present && *field != want {
            cx.error_at(
                field,
                format!(
                    "`{field}` does not belong to a {type_name} filter; remove it or change type"
                ),
            );
        }
    }
}

impl Validate for HttpRouteFilter {
    fn validate(&self, cx: &mut Checker) {
        check_filter_payload(
            cx,
            self.kind.name(),
            self.kind.field(),
            &[
                (
                    "requestHeaderModifier",
                    self.request_header_modifier.is_some(),
                ),
                (
                    "responseHeaderModifier",
                    self.response_header_modifier.is_some(),
                ),
                ("requestMirror", self.request_mirror.is_some()),
                ("requestRedirect", self.request_redirect.is_some()),
                ("urlRewrite", self.url_rewrite.is_some()),
                ("extensionRef", self.extension_ref.is_some()),
                ("cors", self.cors.is_some()),
                ("externalAuth", self.external_auth.is_some()),
            ],
        );
        if let Some(m) = &self.request_header_modifier {
            cx.field("requestHeaderModifier", |c| m.validate(c));
        }
        if let Some(m) = &self.response_header_modifier {
            cx.field("responseHeaderModifier", |c| m.validate(c));
        }
        if let Some(m) = &self.request_mirror {
            cx.field("requestMirror", |c| m.validate(c));
        }
        if let Some(r) = &self.request_redirect {
            cx.field("requestRedirect", |c| r.validate(c));
        }
        if let Some(r) = &self.url_rewrite {
            cx.field("urlRewrite", |c| {
                if let Some(h) = &r.hostname {
                    c.field("hostname", |c| checks::host(c, h, false));
                }
                if let Some(p) = &r.path {
                    c.field("path", |c| p.validate(c));
                }
            });
        }
    }
}

impl Validate for HeaderModifier {
    fn validate(&self, cx: &mut Checker) {
        let mut seen: Vec<String> = Vec::new();
        let mut check = |c: &mut Checker, name: &str| {
            c.field("name", |c| super::header_name(c, name));
            let lower = name.to_ascii_lowercase();
            if !name.is_empty() && seen.contains(&lower) {
                c.error_at(
                    "name",
                    format!("header {name:?} already has an action in this filter; one action per header"),
                );
            }
            seen.push(lower);
        };
        cx.each("set", &self.set, |c, h| check(c, &h.name));
        cx.each("add", &self.add, |c, h| check(c, &h.name));
        cx.field("remove", |c| {
            for (i, name) in self.remove.iter().enumerate() {
                c.index(i, |c| {
                    super::header_name(c, name);
                    let lower = name.to_ascii_lowercase();
                    if !name.is_empty() && seen.contains(&lower) {
                        c.error(format!(
                            "header {name:?} already has an action in this filter; one action per header"
                        ));
                    }
                    seen.push(lower);
                });
            }
        });
    }
}

impl Validate for RequestMirror {
    fn validate(&self, cx: &mut Checker) {
        cx.field("backendRef", |c| self.backend_ref.validate(c));
        if self.percent.is_some() && self.fraction.is_some() {
            cx.error("set either percent or fraction, not both");
        }
        if let Some(p) = self.percent
            && p > 100
        {
            cx.error_at("percent", format!("percent {p} is outside 0..100"));
        }
        if let Some(f) = &self.fraction {
            cx.field("fraction", |c| {
                let den = f.denominator.unwrap_or(100);
                if den == 0 {
                    c.error_at("denominator", "denominator must be greater than 0");
                } else if f.numerator > den {
                    c.error_at(
                        "numerator",
                        format!(
                            "numerator {} is greater than denominator {den}",
                            f.numerator
                        ),
                    );
                }
            });
        }
    }
}

impl Validate for RequestRedirect {
    fn validate(&self, cx: &mut Checker) {
        if let Some(h) = &self.hostname {
            cx.field("hostname", |c| checks::host(c, h, false));
        }
        if let Some(p) = &self.path {
            cx.field("path", |c| p.validate(c));
        }
        if let Some(p) = self.port {
            cx.field("port", |c| checks::port_number(c, p));
        }
        if let Some(code) = self.status_code
            && !matches!(code, 301 | 302 | 303 | 307 | 308)
        {
            cx.error_at(
                "statusCode",
                format!("redirect status {code} is not one of 301, 302, 303, 307, 308"),
            );
        }
    }
}

impl Validate for PathModifier {
    fn validate(&self, cx: &mut Checker) {
        let (want, other) = match self.kind {
            PathModifierType::ReplaceFullPath => ("replaceFullPath", "replacePrefixMatch"),
            PathModifierType::ReplacePrefixMatch => ("replacePrefixMatch", "replaceFullPath"),
        };
        let (value, other_set) = match self.kind {
            PathModifierType::ReplaceFullPath => {
                (&self.replace_full_path, self.replace_prefix_match.is_some())
            }
            PathModifierType::ReplacePrefixMatch => {
                (&self.replace_prefix_match, self.replace_full_path.is_some())
            }
        };
        match value {
            None => cx.error(format!("type {:?} needs `{want}`", self.kind)),
            Some(v) if !v.is_empty() && !v.starts_with('/') => {
                cx.error_at(want, format!("{want} {v:?} must start with '/'"))
            }
            _ => {}
        }
        if other_set {
            cx.error_at(
                other,
                format!("`{other}` does not go with type {:?}", self.kind),
            );
        }
    }
}
