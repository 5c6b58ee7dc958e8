//! Istio security resources (`security.istio.io` v1beta1 and v1):
//! PeerAuthentication (SPEC 7), RequestAuthentication (SPEC 8) and
//! AuthorizationPolicy (SPEC 9), spelled as istio/api spells them.
//!
//! The shared pieces of Istio policy attachment (`selector`, `targetRef`,
//! `targetRefs`) live here too; Telemetry uses them.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::schema::common::{Duration, WorkloadSelector};
use crate::validate::{Checker, Validate, checks};
use crate::yaml::de::closest;

// ---------------------------------------------------------------------------
// Policy attachment shared by the Istio policy kinds.
// ---------------------------------------------------------------------------

/// A reference to the resource a policy attaches to (GEP-2648), used instead
/// of a workload selector for gateways and waypoints.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetReference {
    /// API group of the target (empty for the core group).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// Kind of the target (`Gateway`, `Service`, `GatewayClass`).
    pub kind: String,
    /// Name of the target.
    pub name: String,
    /// Namespace of the target; must be empty (the policy's own namespace).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

impl Validate for PolicyTargetReference {
    fn validate(&self, cx: &mut Checker) {
        if self.kind.is_empty() {
            cx.error_at("kind", "kind must not be empty");
        }
        if self.name.is_empty() {
            cx.error_at("name", "name must not be empty");
        }
        if !self.namespace.is_empty() {
            cx.error_at(
                "namespace",
                "cross-namespace references are not supported; leave namespace empty (the policy's own namespace)",
            );
        }
    }
}

/// Checks an Istio workload selector: no empty keys, no wildcards.
pub(crate) fn check_workload_selector(cx: &mut Checker, selector: &WorkloadSelector) {
    cx.field("matchLabels", |c| {
        for (k, v) in &selector.match_labels {
            c.field(k, |c| {
                if k.is_empty() {
                    c.error("label key must not be empty");
                } else if k.contains('*') {
                    c.error(format!(
                        "wildcard not allowed in label key {k:?}; selectors match exact labels"
                    ));
                } else if v.contains('*') {
                    c.error(format!(
                        "wildcard not allowed in label value {v:?}; selectors match exact labels"
                    ));
                }
            });
        }
    });
}

/// Checks `selector` / `targetRef` / `targetRefs`: at most one of them.
pub(crate) fn check_attachment(
    cx: &mut Checker,
    selector: Option<&WorkloadSelector>,
    target_ref: Option<&PolicyTargetReference>,
    target_refs: &[PolicyTargetReference],
) {
    if let Some(sel) = selector {
        cx.field("selector", |c| check_workload_selector(c, sel));
    }
    if let Some(t) = target_ref {
        cx.field("targetRef", |c| t.validate(c));
    }
    cx.each("targetRefs", target_refs, |c, t| t.validate(c));
    if selector.is_some() && target_ref.is_some() {
        cx.error_at(
            "targetRef",
            "selector and targetRef cannot both be set; use one of them",
        );
    }
    if selector.is_some() && !target_refs.is_empty() {
        cx.error_at(
            "targetRefs",
            "selector and targetRefs cannot both be set; use one of them",
        );
    }
    if target_ref.is_some() && !target_refs.is_empty() {
        cx.error_at(
            "targetRefs",
            "targetRef and targetRefs cannot both be set; put every target in targetRefs",
        );
    }
}

/// The namespace Istio treats as mesh-wide unless meshConfig says otherwise.
pub const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";

// ---------------------------------------------------------------------------
// PeerAuthentication (SPEC 7)
// ---------------------------------------------------------------------------

/// How a workload accepts inbound connections (mTLS settings).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthentication {
    /// Workloads the policy applies to; absent means the whole namespace
    /// (or the whole mesh in the root namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// The mTLS mode for all ports of the selected workloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<PeerAuthMtls>,
    /// Per workload (container) port overrides, keyed by port number. Only
    /// valid with a selector.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub port_level_mtls: BTreeMap<String, PeerAuthMtls>,
}

/// The mTLS setting of a PeerAuthentication or of one port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthMtls {
    /// The mode; absent means UNSET (inherit from the parent scope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<MtlsMode>,
}

impl PeerAuthMtls {
    /// The mode, UNSET when absent.
    pub fn mode(&self) -> MtlsMode {
        self.mode.unwrap_or_default()
    }
}

/// PeerAuthentication mTLS modes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Inherit from the parent scope (PERMISSIVE at the top).
    #[default]
    Unset,
    /// Plaintext only.
    Disable,
    /// Accept both mTLS and plaintext.
    Permissive,
    /// mTLS required; plaintext connections are reset.
    Strict,
}

impl PeerAuthentication {
    /// The port-level modes with their keys parsed as port numbers (keys that
    /// are not valid ports, which validation rejects, are skipped).
    pub fn port_modes(&self) -> impl Iterator<Item = (u16, MtlsMode)> + '_ {
        self.port_level_mtls.iter().filter_map(|(k, v)| {
            k.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .map(|p| (p, v.mode()))
        })
    }

    /// Checks that depend on where the resource lives: a PeerAuthentication
    /// with a selector in the root namespace is ignored by Istio (SPEC 7).
    /// `cx` must be positioned at `spec`.
    pub fn validate_in_namespace(&self, namespace: &str, root_namespace: &str, cx: &mut Checker) {
        if namespace == root_namespace && self.selector.is_some() {
            cx.field("selector", |c| {
                c.warn(format!(
                    "a PeerAuthentication with a selector in the root namespace `{root_namespace}` is ignored; move it to the workload's namespace, or drop the selector for a mesh-wide policy"
                ))
            });
        }
    }
}

impl Validate for PeerAuthentication {
    fn validate(&self, cx: &mut Checker) {
        if let Some(sel) = &self.selector {
            cx.field("selector", |c| check_workload_selector(c, sel));
        }
        if self.port_level_mtls.is_empty() {
            return;
        }
        let has_selector = self
            .selector
            .as_ref()
            .is_some_and(|s| !s.match_labels.is_empty());
        cx.field("portLevelMtls", |c| {
            if !has_selector {
                c.error(
                    "portLevelMtls is only valid with a selector (selector.matchLabels); Istio ignores it on namespace- and mesh-wide policies",
                );
            }
            for key in self.port_level_mtls.keys() {
                c.field(key, |c| match key.trim().parse::<u64>() {
                    Ok(n) if (1..=65535).contains(&n) => {}
                    Ok(n) => c.error(format!(
                        "port {n} is outside 1..65535; portLevelMtls keys are workload port numbers"
                    )),
                    Err(_) => c.error(format!(
                        "{key:?} is not a port number; portLevelMtls keys are workload port numbers 1..65535"
                    )),
                });
            }
        });
    }
}

// ---------------------------------------------------------------------------
// RequestAuthentication (SPEC 8)
// ---------------------------------------------------------------------------

/// JWT validation for requests to the selected workloads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestAuthentication {
    /// Workloads the policy applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// A single resource the policy attaches to (gateways, waypoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// Resources the policy attaches to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// Accepted token issuers and how to validate their tokens.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jwt_rules: Vec<JwtRule>,
}

/// How to validate the tokens of one issuer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtRule {
    /// The issuer; must equal the token's `iss` claim.
    #[serde(default)]
    pub issuer: String,
    /// Accepted audiences (any match); empty means not checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// URL of the provider's public key set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// The public key set inline, as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
    /// Headers to take the token from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_headers: Vec<JwtHeader>,
    /// Query parameters to take the token from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_params: Vec<String>,
    /// Cookies to take the token from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_cookies: Vec<String>,
    /// Header to put the verified payload in (base64url JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_payload_to_header: Option<String>,
    /// Keep the token on the forwarded request (default: strip it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_original_token: Option<bool>,
    /// Copy claims into request headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// Timeout for fetching the key set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// String claims (besides `scope` and `permission`) split on spaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub space_delimited_claims: Vec<String>,
}

/// A header carrying a token, with an optional prefix (`Bearer `).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtHeader {
    /// The header name.
    #[serde(default)]
    pub name: String,
    /// A prefix stripped before the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// A claim copied into a request header.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimToHeader {
    /// The header to set.
    #[serde(default)]
    pub header: String,
    /// The claim to copy (nested with `.`).
    #[serde(default)]
    pub claim: String,
}

fn non_empty_strings(cx: &mut Checker, name: &str, items: &[String], what: &str) {
    cx.each(name, items, |c, s| {
        if s.is_empty() {
            c.error(format!("{what} must not be empty"));
        }
    });
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Validate for JwtRule {
    fn validate(&self, cx: &mut Checker) {
        if self.issuer.is_empty() {
            cx.error("issuer is required (it must equal the token's `iss` claim)");
        }
        non_empty_strings(cx, "audiences", &self.audiences, "an audience");
        if let Some(uri) = &self.jwks_uri {
            cx.field("jwksUri", |c| {
                let rest = uri
                    .strip_prefix("https://")
                    .or_else(|| uri.strip_prefix("http://"));
                match rest {
                    Some(r) if !r.is_empty() && !r.starts_with('/') => {}
                    _ => c.error(format!(
                        "jwksUri {uri:?} must be an http:// or https:// URL with a host"
                    )),
                }
            });
        }
        if let Some(jwks) = &self.jwks {
            cx.field("jwks", |c| {
                if self.jwks_uri.is_some() {
                    c.error("only one of jwks and jwksUri can be set");
                } else if let Err(e) = serde_json::from_str::<serde_json::Value>(jwks) {
                    c.error(format!("jwks is not valid JSON: {e}"));
                }
            });
        }
        cx.each("fromHeaders", &self.from_headers, |c, h| {
            if h.name.is_empty() {
                c.error("a fromHeaders entry needs a header name");
            } else if !is_header_name(&h.name) {
                c.error_at("name", format!("{:?} is not a valid header name", h.name));
            }
        });
        non_empty_strings(
            cx,
            "fromParams",
            &self.from_params,
            "a query parameter name",
        );
        non_empty_strings(cx, "fromCookies", &self.from_cookies, "a cookie name");
        if let Some(h) = &self.output_payload_to_header {
            cx.field("outputPayloadToHeader", |c| {
                if !is_header_name(h) {
                    c.error(format!("{h:?} is not a valid header name"));
                }
            });
        }
        cx.each(
            "outputClaimToHeaders",
            &self.output_claim_to_headers,
            |c, o| {
                if o.header.is_empty() {
                    c.error("an outputClaimToHeaders entry needs a header");
                } else if !is_header_name(&o.header) {
                    c.error_at(
                        "header",
                        format!("{:?} is not a valid header name", o.header),
                    );
                }
                if o.claim.is_empty() {
                    c.error("an outputClaimToHeaders entry needs a claim");
                }
            },
        );
        non_empty_strings(
            cx,
            "spaceDelimitedClaims",
            &self.space_delimited_claims,
            "a claim name",
        );
    }
}

impl Validate for RequestAuthentication {
    fn validate(&self, cx: &mut Checker) {
        check_attachment(
            cx,
            self.selector.as_ref(),
            self.target_ref.as_ref(),
            &self.target_refs,
        );
        cx.each("jwtRules", &self.jwt_rules, |c, r| r.validate(c));
    }
}

// ---------------------------------------------------------------------------
// AuthorizationPolicy (SPEC 9)
// ---------------------------------------------------------------------------

/// Access control for the selected workloads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicy {
    /// Workloads the policy applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// A single resource the policy attaches to (gateways, waypoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// Resources the policy attaches to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// The rules; the policy matches a request when any rule does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// What a match does; ALLOW when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<AuthorizationAction>,
    /// The external authorizer of a CUSTOM policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ExtensionProviderRef>,
}

impl AuthorizationPolicy {
    /// The action, ALLOW when absent.
    pub fn action(&self) -> AuthorizationAction {
        self.action.unwrap_or_default()
    }
}

/// AuthorizationPolicy actions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthorizationAction {
    /// Allow matching requests (others are denied once any ALLOW applies).
    #[default]
    Allow,
    /// Deny matching requests.
    Deny,
    /// Mark matching requests for auditing; never changes the decision.
    Audit,
    /// Ask an external authorizer about matching requests.
    Custom,
}

/// Names an extension provider from meshConfig.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtensionProviderRef {
    /// The provider's name in meshConfig.extensionProviders.
    #[serde(default)]
    pub name: String,
}

/// One rule: from AND to AND when.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// Request sources (any may match); empty matches any source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<RuleFrom>,
    /// Request operations (any may match); empty matches any operation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<RuleTo>,
    /// Extra conditions, all of which must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
}

/// A `from` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleFrom {
    /// The source to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

/// A `to` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleTo {
    /// The operation to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
}

/// Properties of the request's source; fields are ANDed, list values ORed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Source {
    /// Peer identities (`<trust-domain>/ns/<ns>/sa/<sa>`); require mTLS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    /// Peer identities that must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<String>,
    /// JWT principals (`<iss>/<sub>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_principals: Vec<String>,
    /// JWT principals that must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_request_principals: Vec<String>,
    /// Namespaces of the peer identity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Namespaces that must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<String>,
    /// Service accounts of the peer identity (`<ns>/<sa>` or `<sa>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
    /// Service accounts that must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_service_accounts: Vec<String>,
    /// Peer IPs or CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Vec<String>,
    /// Peer IPs or CIDRs that must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ip_blocks: Vec<String>,
    /// Client IPs (from X-Forwarded-For or proxy protocol) or CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_ip_blocks: Vec<String>,
    /// Client IPs or CIDRs that must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_remote_ip_blocks: Vec<String>,
    /// Trust domains of the peer identity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust_domains: Vec<String>,
    /// Trust domains that must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_trust_domains: Vec<String>,
}

/// Properties of the request itself; fields are ANDed, list values ORed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Operation {
    /// Host (authority) patterns, compared case-insensitively.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Hosts that must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_hosts: Vec<String>,
    /// Workload ports, as strings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    /// Ports that must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<String>,
    /// HTTP methods (upper-case; gRPC is always POST).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Methods that must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_methods: Vec<String>,
    /// Paths (normalized, without query), patterns or templates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Paths that must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_paths: Vec<String>,
}

/// A `when` condition on a request attribute.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// The attribute (`request.headers[x-token]`, `source.ip`, ...).
    pub key: String,
    /// Values of which one must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// Values none of which may match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<String>,
}

/// Checks an exact/prefix/suffix/presence string pattern (SPEC 9.3).
/// Returns whether it is well formed.
pub(crate) fn check_pattern(cx: &mut Checker, value: &str) -> bool {
    if value.is_empty() {
        cx.error("empty value is not allowed (use `*` to match any non-empty value)");
        return false;
    }
    let ok = !value.trim_matches('*').contains('*');
    if !ok {
        cx.error(format!(
            "invalid pattern {value:?}: `*` may only be a prefix (`*abc`), a suffix (`abc*`) or the whole value, not in the middle"
        ));
    }
    ok
}

fn patterns(cx: &mut Checker, name: &str, items: &[String]) {
    cx.each(name, items, |c, v| {
        check_pattern(c, v);
    });
}

/// Parses an IP address or a CIDR block (`10.0.0.0/8`, `2001:db8::/32`).
pub(crate) fn parse_ip_or_cidr(text: &str) -> Result<(IpAddr, Option<u8>), String> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("{text:?} is not an IP address or a CIDR block (e.g. 10.0.0.0/8)"))?;
    let len = match len {
        None => None,
        Some(l) => {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            match l.parse::<u8>() {
                Ok(n) if n <= max => Some(n),
                _ => {
                    return Err(format!(
                        "{text:?} has an invalid prefix length (0..{max} for this address)"
                    ));
                }
            }
        }
    };
    Ok((ip, len))
}

fn ip_blocks(cx: &mut Checker, name: &str, items: &[String]) {
    cx.each(name, items, |c, v| {
        if let Err(e) = parse_ip_or_cidr(v) {
            c.error(e);
        }
    });
}

fn port_strings(cx: &mut Checker, name: &str, items: &[String]) {
    cx.each(name, items, |c, v| check_port_string(c, v));
}

fn check_port_string(cx: &mut Checker, v: &str) {
    match v.trim().parse::<u64>() {
        Ok(n) if (1..=65535).contains(&n) => {}
        Ok(n) => cx.error(format!("port {n} is outside 1..65535")),
        Err(_) => cx.error(format!("invalid port {v:?}: ports are numbers 1..65535")),
    }
}

fn methods(cx: &mut Checker, name: &str, items: &[String]) {
    cx.each(name, items, |c, m| {
        if !check_pattern(c, m) {
            return;
        }
        if m.bytes().any(|b| b.is_ascii_lowercase()) {
            c.error(format!(
                "invalid method {m:?}: methods are upper-case HTTP tokens and match case-sensitively (write {:?})",
                m.to_ascii_uppercase()
            ));
        } else if !m
            .bytes()
            .all(|b| b == b'*' || b.is_ascii_alphanumeric() || b"!#$%&'+-.^_`|~".contains(&b))
        {
            c.error(format!("invalid method {m:?}: methods are upper-case HTTP tokens"));
        }
    });
}

const MATCH_ONE: &str = "{*}";
const MATCH_ANY: &str = "{**}";

fn is_path_literal(seg: &str) -> bool {
    seg.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()+,;=:@".contains(&b))
}

/// Checks one `paths` / `notPaths` entry (SPEC 9.3).
fn check_path(cx: &mut Checker, path: &str) {
    if path.is_empty() {
        cx.error("empty value is not allowed (use `*` to match any non-empty value)");
        return;
    }
    let template = path.contains(MATCH_ONE) || path.contains(MATCH_ANY);
    if !template {
        if path.contains(['{', '}']) {
            cx.error(format!(
                "invalid path {path:?}: `{{` and `}}` are only allowed in the path templates `{{*}}` and `{{**}}`"
            ));
            return;
        }
        if !check_pattern(cx, path) {
            return;
        }
        if !path.starts_with('/') && !path.starts_with('*') {
            cx.error(format!(
                "invalid path {path:?}: paths start with `/` (or use a `*` pattern)"
            ));
        }
        return;
    }
    if !path.starts_with('/') {
        cx.error(format!(
            "invalid path template {path:?}: it must start with `/`"
        ));
        return;
    }
    let mut seen_any = false;
    for seg in path.trim_matches('/').split('/') {
        if seg == MATCH_ONE || seg == MATCH_ANY {
            if seen_any {
                cx.error(format!(
                    "invalid path template {path:?}: `{{**}}` must be the last operator (no `{{*}}` or `{{**}}` after it)"
                ));
                return;
            }
            seen_any = seg == MATCH_ANY;
        } else if seg.contains(['{', '}', '*']) {
            cx.error(format!(
                "invalid path template {path:?}: `{{*}}` and `{{**}}` must each fill a whole path segment, and other segments are literal text (segment {seg:?})"
            ));
            return;
        } else if !is_path_literal(seg) {
            cx.error(format!(
                "invalid path template {path:?}: segment {seg:?} is not valid literal path text"
            ));
            return;
        }
    }
}

fn paths(cx: &mut Checker, name: &str, items: &[String]) {
    cx.each(name, items, |c, p| check_path(c, p));
}

fn principals(cx: &mut Checker, name: &str, items: &[String]) {
    cx.each(name, items, |c, p| {
        if check_pattern(c, p) {
            checks::istio_principal(c, p);
        }
    });
}

fn service_accounts(cx: &mut Checker, name: &str, items: &[String]) {
    cx.each(name, items, |c, sa| {
        if sa.is_empty() {
            c.error("empty value is not allowed");
            return;
        }
        if sa.contains('*') {
            c.error(format!(
                "invalid service account {sa:?}: wildcards are not allowed in serviceAccounts"
            ));
            return;
        }
        let parts: Vec<&str> = sa.split('/').collect();
        if parts.len() > 2 || parts.iter().any(|p| p.is_empty()) {
            c.error(format!(
                "invalid service account {sa:?}: expected <namespace>/<service-account> or <service-account>"
            ));
        }
    });
}

impl Validate for Source {
    fn validate(&self, cx: &mut Checker) {
        principals(cx, "principals", &self.principals);
        principals(cx, "notPrincipals", &self.not_principals);
        patterns(cx, "requestPrincipals", &self.request_principals);
        patterns(cx, "notRequestPrincipals", &self.not_request_principals);
        patterns(cx, "namespaces", &self.namespaces);
        patterns(cx, "notNamespaces", &self.not_namespaces);
        service_accounts(cx, "serviceAccounts", &self.service_accounts);
        service_accounts(cx, "notServiceAccounts", &self.not_service_accounts);
        ip_blocks(cx, "ipBlocks", &self.ip_blocks);
        ip_blocks(cx, "notIpBlocks", &self.not_ip_blocks);
        ip_blocks(cx, "remoteIpBlocks", &self.remote_ip_blocks);
        ip_blocks(cx, "notRemoteIpBlocks", &self.not_remote_ip_blocks);
        patterns(cx, "trustDomains", &self.trust_domains);
        patterns(cx, "notTrustDomains", &self.not_trust_domains);
        let has_sa = !self.service_accounts.is_empty() || !self.not_service_accounts.is_empty();
        let has_p_ns = !self.principals.is_empty()
            || !self.not_principals.is_empty()
            || !self.namespaces.is_empty()
            || !self.not_namespaces.is_empty();
        if has_sa && has_p_ns {
            let field = if self.service_accounts.is_empty() {
                "notServiceAccounts"
            } else {
                "serviceAccounts"
            };
            cx.error_at(
                field,
                "serviceAccounts cannot be set together with principals or namespaces",
            );
        }
    }
}

impl Source {
    fn is_empty(&self) -> bool {
        *self == Source::default()
    }
}

impl Validate for Operation {
    fn validate(&self, cx: &mut Checker) {
        patterns(cx, "hosts", &self.hosts);
        patterns(cx, "notHosts", &self.not_hosts);
        port_strings(cx, "ports", &self.ports);
        port_strings(cx, "notPorts", &self.not_ports);
        methods(cx, "methods", &self.methods);
        methods(cx, "notMethods", &self.not_methods);
        paths(cx, "paths", &self.paths);
        paths(cx, "notPaths", &self.not_paths);
    }
}

impl Operation {
    fn is_empty(&self) -> bool {
        *self == Operation::default()
    }
}

/// Condition keys written as-is (SPEC 9.3).
const PLAIN_KEYS: &[&str] = &[
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.principal",
    "source.trustDomain",
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.presenter",
    "destination.ip",
    "destination.port",
    "connection.sni",
];

/// Condition keys that take `[name]` (claims may nest: `[a][b]`).
const BRACKET_KEYS: &[&str] = &["request.headers", "request.auth.claims"];

const ENVOY_FILTERS: &str = "experimental.envoy.filters.";

/// What kind of value a condition key compares.
#[derive(Clone, Copy, PartialEq)]
enum KeyKind {
    Ip,
    Port,
    Text,
}

fn check_condition_key(cx: &mut Checker, key: &str) -> Option<KeyKind> {
    if let Some(rest) = key.strip_prefix(ENVOY_FILTERS) {
        if rest.is_empty() {
            cx.error(format!(
                "condition key {key:?} needs a filter and metadata path after `{ENVOY_FILTERS}`"
            ));
            return None;
        }
        return Some(KeyKind::Text);
    }
    if PLAIN_KEYS.contains(&key) {
        return Some(match key {
            "source.ip" | "remote.ip" | "destination.ip" => KeyKind::Ip,
            "destination.port" => KeyKind::Port,
            _ => KeyKind::Text,
        });
    }
    let (base, brackets) = match key.find('[') {
        Some(i) => (&key[..i], &key[i..]),
        None => (key, ""),
    };
    if BRACKET_KEYS.contains(&base) {
        let many = base == "request.auth.claims";
        let ok = !brackets.is_empty() && {
            let mut rest = brackets;
            let mut count = 0;
            let mut good = true;
            while !rest.is_empty() {
                let Some(inner) = rest.strip_prefix('[') else {
                    good = false;
                    break;
                };
                let Some(end) = inner.find(']') else {
                    good = false;
                    break;
                };
                if end == 0 || inner[..end].contains('[') {
                    good = false;
                    break;
                }
                count += 1;
                rest = &inner[end + 1..];
            }
            good && (many || count == 1)
        };
        if !ok {
            let form = if many {
                "request.auth.claims[<claim>] (nested: [<claim>][<field>])"
            } else {
                "request.headers[<header-name>]"
            };
            cx.error(format!("invalid condition key {key:?}: write it as {form}"));
            return None;
        }
        return Some(KeyKind::Text);
    }
    let mut candidates: Vec<&str> = PLAIN_KEYS.to_vec();
    candidates.extend_from_slice(BRACKET_KEYS);
    let hint = match closest(base, &candidates) {
        Some(best) if BRACKET_KEYS.contains(&best) => {
            format!(" (did you mean `{best}{brackets}`?)")
        }
        Some(best) => format!(" (did you mean `{best}`?)"),
        None => format!(
            "; supported keys: {}, request.headers[<name>], request.auth.claims[<name>], {ENVOY_FILTERS}*",
            PLAIN_KEYS.join(", ")
        ),
    };
    cx.error(format!("unknown condition key {key:?}{hint}"));
    None
}

impl Validate for Condition {
    fn validate(&self, cx: &mut Checker) {
        let kind = cx.field("key", |c| check_condition_key(c, &self.key));
        if self.values.is_empty() && self.not_values.is_empty() {
            cx.error(format!(
                "condition on {:?} needs values or notValues",
                self.key
            ));
        }
        let Some(kind) = kind else { return };
        for (name, list) in [("values", &self.values), ("notValues", &self.not_values)] {
            cx.each(name, list, |c, v| match kind {
                KeyKind::Ip => {
                    if let Err(e) = parse_ip_or_cidr(v) {
                        c.error(e);
                    }
                }
                KeyKind::Port => check_port_string(c, v),
                KeyKind::Text => {
                    check_pattern(c, v);
                }
            });
        }
    }
}

impl Validate for Rule {
    fn validate(&self, cx: &mut Checker) {
        cx.each("from", &self.from, |c, f| match &f.source {
            None => c.error("a from entry needs a source"),
            Some(s) if s.is_empty() => c.error_at(
                "source",
                "source must set at least one field (omit `from` to match any source)",
            ),
            Some(s) => c.field("source", |c| s.validate(c)),
        });
        cx.each("to", &self.to, |c, t| match &t.operation {
            None => c.error("a to entry needs an operation"),
            Some(o) if o.is_empty() => c.error_at(
                "operation",
                "operation must set at least one field (omit `to` to match any operation)",
            ),
            Some(o) => c.field("operation", |c| o.validate(c)),
        });
        cx.each("when", &self.when, |c, w| w.validate(c));
    }
}

impl Validate for AuthorizationPolicy {
    fn validate(&self, cx: &mut Checker) {
        check_attachment(
            cx,
            self.selector.as_ref(),
            self.target_ref.as_ref(),
            &self.target_refs,
        );
        let action = self.action();
        match (&self.provider, action) {
            (None, AuthorizationAction::Custom) => cx.error_at(
                "action",
                "action CUSTOM needs a provider (provider.name, an extension provider in meshConfig)",
            ),
            (Some(p), AuthorizationAction::Custom) => {
                if p.name.is_empty() {
                    cx.error_at("provider", "provider name must not be empty");
                }
            }
            (Some(_), a) => cx.error_at(
                "provider",
                format!(
                    "provider is only allowed with action CUSTOM (this policy's action is {})",
                    action_name(a)
                ),
            ),
            (None, _) => {}
        }
        if self.rules.is_empty() {
            match action {
                AuthorizationAction::Deny | AuthorizationAction::Audit => cx.warn_at(
                    "action",
                    format!(
                        "a {} policy without rules matches nothing and has no effect (add `rules: [{{}}]` to match every request)",
                        action_name(action)
                    ),
                ),
                AuthorizationAction::Custom => cx.error_at(
                    "action",
                    "a CUSTOM policy without rules is never triggered; add `rules: [{}]` to send every request to the provider",
                ),
                AuthorizationAction::Allow => {}
            }
        }
        cx.each("rules", &self.rules, |c, r| r.validate(c));
    }
}

fn action_name(a: AuthorizationAction) -> &'static str {
    match a {
        AuthorizationAction::Allow => "ALLOW",
        AuthorizationAction::Deny => "DENY",
        AuthorizationAction::Audit => "AUDIT",
        AuthorizationAction::Custom => "CUSTOM",
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
    fn patterns_allow_prefix_suffix_and_presence_only() {
        for ok in ["abc", "abc*", "*abc", "*", "*abc*"] {
            assert!(
                run(|c| {
                    check_pattern(c, ok);
                })
                .is_empty()
            );
        }
        for bad in ["a*c", "*a*b", "a**b", ""] {
            assert_eq!(
                run(|c| {
                    check_pattern(c, bad);
                })
                .len(),
                1,
                "{bad}"
            );
        }
    }

    #[test]
    fn path_templates() {
        for ok in [
            "/foo/{*}/bar/{**}",
            "/allow/admin/{**}",
            "/store/{**}/cart",
            "/api/*",
            "*.html",
            "*",
            "/",
        ] {
            assert!(run(|c| check_path(c, ok)).is_empty(), "{ok}");
        }
        for bad in [
            "/foo/{**}/{*}",
            "/foo/a{*}",
            "/foo/{id}",
            "api/*",
            "/a/*/b",
            "foo/{*}",
            "/{**}/x/{**}",
        ] {
            assert_eq!(run(|c| check_path(c, bad)).len(), 1, "{bad}");
        }
    }

    #[test]
    fn condition_keys() {
        for ok in [
            "request.headers[x-token]",
            "request.auth.claims[groups]",
            "request.auth.claims[nested][key]",
            "source.ip",
            "experimental.envoy.filters.network.mysql_proxy[db.table]",
        ] {
            assert!(
                run(|c| {
                    check_condition_key(c, ok);
                })
                .is_empty(),
                "{ok}"
            );
        }
        for bad in [
            "request.headers",
            "request.headers[a][b]",
            "request.auth.claims[]",
            "source.ips",
            "foo",
        ] {
            assert_eq!(
                run(|c| {
                    check_condition_key(c, bad);
                })
                .len(),
                1,
                "{bad}"
            );
        }
        assert_eq!(
            run(|c| {
                check_condition_key(c, "request.header[x]");
            }),
            [
                "spec: unknown condition key \"request.header[x]\" (did you mean `request.headers[x]`?)"
            ]
        );
    }

    #[test]
    fn ip_blocks_parse() {
        assert!(parse_ip_or_cidr("10.0.0.0/8").is_ok());
        assert!(parse_ip_or_cidr("2001:db8::/32").is_ok());
        assert!(parse_ip_or_cidr("1.2.3.4").is_ok());
        assert!(parse_ip_or_cidr("10.0.0.0/33").is_err());
        assert!(parse_ip_or_cidr("10.0.0/8").is_err());
    }

    #[test]
    fn port_modes_parse_keys() {
        let mut pa = PeerAuthentication::default();
        pa.port_level_mtls.insert(
            "9090".into(),
            PeerAuthMtls {
                mode: Some(MtlsMode::Disable),
            },
        );
        pa.port_level_mtls
            .insert("x".into(), PeerAuthMtls { mode: None });
        assert_eq!(
            pa.port_modes().collect::<Vec<_>>(),
            [(9090, MtlsMode::Disable)]
        );
    }

    #[test]
    fn root_namespace_selector_is_warned() {
        let pa = PeerAuthentication {
            selector: Some(WorkloadSelector::default()),
            ..Default::default()
        };
        let out = run(|c| pa.validate_in_namespace("istio-system", DEFAULT_ROOT_NAMESPACE, c));
        assert_eq!(out.len(), 1);
        assert!(out[0].starts_with("spec.selector: a PeerAuthentication with a selector in the root namespace `istio-system` is ignored"));
        assert!(run(|c| pa.validate_in_namespace("prod", DEFAULT_ROOT_NAMESPACE, c)).is_empty());
    }
}
