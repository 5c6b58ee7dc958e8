//! GRPCRoute (`gateway.networking.k8s.io/v1`).

use serde::{Deserialize, Serialize};

use super::http_route::{HeaderModifier, HttpHeaderMatch, RequestMirror, ValueMatchType};
use super::{BackendRef, LocalObjectReference, ParentReference};
use crate::validate::{Checker, Validate, checks};

/// A GRPCRoute spec.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcRoute {
    /// Where the route attaches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_refs: Vec<ParentReference>,
    /// Host (authority) values served; all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// Rules (at most 16).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<GrpcRouteRule>,
}

/// A backend of a GRPCRoute rule.
pub type GrpcBackendRef = BackendRef<GrpcRouteFilter>;

/// One rule of a GRPCRoute.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcRouteRule {
    /// Optional rule name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Matches, ORed; all requests when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<GrpcRouteMatch>,
    /// Filters, applied in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<GrpcRouteFilter>,
    /// Weighted backends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<GrpcBackendRef>,
    /// Session persistence (not interpreted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_persistence: Option<serde_json::Value>,
}

/// One match: method and headers, ANDed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcRouteMatch {
    /// Service and method match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<GrpcMethodMatch>,
    /// Header matches, ANDed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HttpHeaderMatch>,
}

/// A gRPC service/method match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcMethodMatch {
    /// How to match; `Exact` when absent.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<ValueMatchType>,
    /// Fully qualified service (`foo.bar.Greeter`); any when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Method (`SayHello`); any when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// A GRPCRoute filter: `type` names which payload field is set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcRouteFilter {
    /// Which filter this is.
    #[serde(rename = "type")]
    pub kind: GrpcFilterType,
    /// Payload of RequestHeaderModifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HeaderModifier>,
    /// Payload of ResponseHeaderModifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HeaderModifier>,
    /// Payload of RequestMirror.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_mirror: Option<RequestMirror>,
    /// Payload of ExtensionRef.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_ref: Option<LocalObjectReference>,
}

/// GRPCRoute filter types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GrpcFilterType {
    /// Edit request headers (metadata).
    RequestHeaderModifier,
    /// Edit response headers.
    ResponseHeaderModifier,
    /// Copy requests to another backend.
    RequestMirror,
    /// Implementation-specific filter.
    ExtensionRef,
}

impl GrpcFilterType {
    fn names(self) -> (&'static str, &'static str) {
        match self {
            GrpcFilterType::RequestHeaderModifier => {
                ("RequestHeaderModifier", "requestHeaderModifier")
            }
            GrpcFilterType::ResponseHeaderModifier => {
                ("ResponseHeaderModifier", "responseHeaderModifier")
            }
            GrpcFilterType::RequestMirror => ("RequestMirror", "requestMirror"),
            GrpcFilterType::ExtensionRef => ("ExtensionRef", "extensionRef"),
        }
    }
}

impl Validate for GrpcRoute {
    fn validate(&self, cx: &mut Checker) {
        super::check_route_common(cx, &self.parent_refs, &self.hostnames);
        if self.rules.len() > 16 {
            cx.error_at(
                "rules",
                format!(
                    "at most 16 rules are allowed, found {}; split the route",
                    self.rules.len()
                ),
            );
        }
        cx.each("rules", &self.rules, |c, r| r.validate(c));
    }
}

impl Validate for GrpcRouteRule {
    fn validate(&self, cx: &mut Checker) {
        for (field, n, max) in [
            ("matches", self.matches.len(), 64),
            ("filters", self.filters.len(), 16),
            ("backendRefs", self.backend_refs.len(), 16),
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
        cx.each("backendRefs", &self.backend_refs, |c, b| b.validate(c));
    }
}

impl Validate for GrpcRouteMatch {
    fn validate(&self, cx: &mut Checker) {
        if let Some(m) = &self.method {
            cx.field("method", |c| m.validate(c));
        }
        cx.field("headers", |c| {
            for (i, h) in self.headers.iter().enumerate() {
                c.index(i, |c| {
                    c.field("name", |c| super::header_name(c, &h.name));
                    if h.kind.unwrap_or_default() == ValueMatchType::RegularExpression {
                        c.field("value", |c| checks::regex(c, &h.value));
                    }
                });
            }
        });
    }
}

fn is_ident(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl Validate for GrpcMethodMatch {
    fn validate(&self, cx: &mut Checker) {
        if self.service.is_none() && self.method.is_none() {
            cx.error("set service, method or both");
        }
        match self.kind.unwrap_or_default() {
            ValueMatchType::Exact => {
                if let Some(s) = &self.service {
                    let body = s.strip_prefix('.').unwrap_or(s);
                    if !body.split('.').all(is_ident) {
                        cx.error_at("service", format!(
                            "invalid gRPC service {s:?}: write a dotted name such as helloworld.Greeter"
                        ));
                    }
                }
                if let Some(m) = &self.method
                    && !is_ident(m)
                {
                    cx.error_at(
                        "method",
                        format!(
                            "invalid gRPC method {m:?}: write a bare method name such as SayHello"
                        ),
                    );
                }
            }
            ValueMatchType::RegularExpression => {
                if let Some(s) = &self.service {
                    cx.field("service", |c| checks::regex(c, s));
                }
                if let Some(m) = &self.method {
                    cx.field("method", |c| checks::regex(c, m));
                }
            }
        }
    }
}

impl Validate for GrpcRouteFilter {
    fn validate(&self, cx: &mut Checker) {
        let (type_name, want) = self.kind.names();
        super::http_route::check_filter_payload(
            cx,
            type_name,
            want,
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
                ("extensionRef", self.extension_ref.is_some()),
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
    }
}
