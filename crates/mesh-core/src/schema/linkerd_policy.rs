//! Linkerd's server-side policy kinds (`policy.linkerd.io`): Server,
//! ServerAuthorization, AuthorizationPolicy, MeshTLSAuthentication,
//! NetworkAuthentication and HTTPLocalRateLimitPolicy (SPEC 13.4).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::schema::common::{LabelSelector, PortRef};
use crate::validate::{Checker, Validate, checks};

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

/// A Server: a port on a set of workloads that inbound policy applies to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Server {
    /// The pods the Server selects (exclusive with `externalWorkloadSelector`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    /// The ExternalWorkloads the Server selects (exclusive with `podSelector`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_workload_selector: Option<LabelSelector>,
    /// The container port, by number or by name.
    pub port: PortRef,
    /// The protocol the proxy assumes on this port; detected when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocol>,
    /// What happens to traffic no authorization matches (v1beta3; default deny).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_policy: Option<AccessPolicy>,
}

/// The protocol of a Server's port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProxyProtocol {
    /// Detect the protocol (the default).
    #[serde(rename = "unknown")]
    Unknown,
    /// HTTP/1.
    #[serde(rename = "HTTP/1")]
    Http1,
    /// HTTP/2.
    #[serde(rename = "HTTP/2")]
    Http2,
    /// gRPC.
    #[serde(rename = "gRPC")]
    Grpc,
    /// Opaque TCP, no detection.
    #[serde(rename = "opaque")]
    Opaque,
    /// TLS the proxy does not terminate.
    #[serde(rename = "TLS")]
    Tls,
}

/// A default inbound policy, as `accessPolicy` and the
/// `config.linkerd.io/default-inbound-policy` annotation spell it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AccessPolicy {
    /// Deny everything not authorized (the Server default).
    #[default]
    Deny,
    /// Allow, but label as `authz_name=audit`.
    Audit,
    /// Allow all clients.
    AllUnauthenticated,
    /// Allow meshed (mTLS) clients.
    AllAuthenticated,
    /// Allow meshed clients from the cluster networks.
    ClusterAuthenticated,
    /// Allow any client from the cluster networks.
    ClusterUnauthenticated,
}

impl Validate for Server {
    fn validate(&self, cx: &mut Checker) {
        match (&self.pod_selector, &self.external_workload_selector) {
            (Some(_), Some(_)) => {
                cx.error("set either podSelector or externalWorkloadSelector, not both")
            }
            (None, None) => {
                cx.error("a Server needs a podSelector (or an externalWorkloadSelector)")
            }
            _ => {}
        }
        cx.field("port", |c| match &self.port {
            PortRef::Number(n) => checks::port_number(c, *n),
            PortRef::Name(name) => port_name(c, name),
        });
    }
}

/// A Kubernetes container port name (IANA service name): at most 15
/// lowercase letters, digits and '-', with at least one letter.
fn port_name(cx: &mut Checker, name: &str) {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if !ok {
        cx.error(format!(
            "invalid port name {name:?}: use a port number or a name of at most 15 lowercase letters, digits and '-'"
        ));
    }
}

// ---------------------------------------------------------------------------
// ServerAuthorization
// ---------------------------------------------------------------------------

/// A ServerAuthorization: which clients may reach the selected Servers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerAuthorization {
    /// The Servers this authorizes traffic to.
    pub server: ServerSelector,
    /// The clients that are authorized.
    pub client: Client,
}

/// Selects Servers by name or by label.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerSelector {
    /// One Server, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Servers by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// The clients a ServerAuthorization admits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Client {
    /// Meshed clients, by identity.
    #[serde(default, rename = "meshTLS", skip_serializing_if = "Option::is_none")]
    pub mesh_tls: Option<MeshTls>,
    /// Admit clients without any identity.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unauthenticated: bool,
    /// Client networks; all networks when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<Network>,
}

/// Meshed-client criteria.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshTls {
    /// Admit TLS clients that present no identity.
    #[serde(
        default,
        rename = "unauthenticatedTLS",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub unauthenticated_tls: bool,
    /// Identity patterns: exact, `*.<suffix>` or `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<String>,
    /// Service accounts whose identity is admitted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<ServiceAccountRef>,
}

/// A service account; the namespace defaults to the policy's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceAccountRef {
    /// Its name.
    pub name: String,
    /// Its namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A client network: a CIDR minus some exceptions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Network {
    /// The network (`10.0.0.0/8`, or a single address).
    pub cidr: String,
    /// Networks inside `cidr` that are excluded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
}

impl Validate for ServerAuthorization {
    fn validate(&self, cx: &mut Checker) {
        cx.field("server", |c| {
            match (&self.server.name, &self.server.selector) {
                (Some(_), Some(_)) => c.error("set either name or selector, not both"),
                (None, None) => c.error("name the Server (name) or select Servers (selector)"),
                _ => {}
            }
        });
        cx.field("client", |c| self.client.validate(c));
    }
}

impl Validate for Client {
    fn validate(&self, cx: &mut Checker) {
        match &self.mesh_tls {
            None if !self.unauthenticated => {
                cx.error("set meshTLS (meshed clients) or unauthenticated: true (any client)")
            }
            Some(_) if self.unauthenticated => cx.error_at(
                "unauthenticated",
                "unauthenticated must be false when meshTLS is set",
            ),
            _ => {}
        }
        if let Some(mtls) = &self.mesh_tls {
            cx.field("meshTLS", |c| mtls.validate(c));
        }
        cx.each("networks", &self.networks, |c, n| n.validate(c));
    }
}

impl Validate for MeshTls {
    fn validate(&self, cx: &mut Checker) {
        if self.unauthenticated_tls
            && !(self.identities.is_empty() && self.service_accounts.is_empty())
        {
            cx.error_at(
                "unauthenticatedTLS",
                "unauthenticatedTLS must be false when identities or serviceAccounts are set",
            );
        }
        cx.each("identities", &self.identities, |c, id| {
            identity_pattern(c, id)
        });
    }
}

impl Validate for Network {
    fn validate(&self, cx: &mut Checker) {
        let Some(net) = cx.field("cidr", |c| parse_cidr_checked(c, &self.cidr)) else {
            return;
        };
        cx.each("except", &self.except, |c, text| {
            let Some(ex) = parse_cidr_checked(c, text) else {
                return;
            };
            if ex.contains(&net) {
                c.error(format!(
                    "{text} covers all of {}, so the network admits nothing",
                    self.cidr
                ));
            } else if !net.contains(&ex) {
                c.error(format!(
                    "{text} is not inside {}; an exception must lie within the network",
                    self.cidr
                ));
            }
        });
    }
}

/// A parsed CIDR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// The address (host bits may be set).
    pub addr: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `fd00::/8`, or a bare address (a /32 or /128).
    pub fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
            Some(_) => return None,
        };
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    fn bits(addr: IpAddr) -> u128 {
        match addr {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        }
    }

    fn masked(&self, addr: IpAddr) -> u128 {
        let width = if self.addr.is_ipv4() { 32 } else { 128 };
        let host_bits = width - u32::from(self.prefix);
        let bits = Cidr::bits(addr);
        if host_bits >= 128 {
            0
        } else {
            bits >> host_bits
        }
    }

    /// Whether every address of `other` lies in `self`.
    pub fn contains(&self, other: &Cidr) -> bool {
        self.addr.is_ipv4() == other.addr.is_ipv4()
            && other.prefix >= self.prefix
            && self.masked(self.addr) == self.masked(other.addr)
    }

    /// Whether `addr` lies in `self`.
    pub fn contains_addr(&self, addr: IpAddr) -> bool {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        self.contains(&Cidr { addr, prefix: max })
    }
}

fn parse_cidr_checked(cx: &mut Checker, text: &str) -> Option<Cidr> {
    let parsed = Cidr::parse(text);
    if parsed.is_none() {
        cx.error(format!(
            "invalid CIDR {text:?}: write an address with a prefix length, e.g. 10.0.0.0/8 or fd00::/8"
        ));
    }
    parsed
}

/// A Linkerd identity pattern: an exact identity, `*` (any meshed client), or
/// `*.<suffix>` (any identity in that domain).
pub fn identity_pattern(cx: &mut Checker, id: &str) {
    if id.is_empty() {
        cx.error("identity is empty; write an identity, `*` or `*.<suffix>`");
        return;
    }
    if id == "*" {
        return;
    }
    let rest = id.strip_prefix("*.").unwrap_or(id);
    if rest.is_empty() || rest.contains('*') {
        cx.error(format!(
            "invalid identity {id:?}: `*` may only be the whole identity or a leading `*.`"
        ));
    }
}

// ---------------------------------------------------------------------------
// AuthorizationPolicy and authentications
// ---------------------------------------------------------------------------

/// A reference to an object, as policy targets and authentication refs are
/// written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetRef {
    /// The API group (`policy.linkerd.io`; empty for core kinds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The kind.
    pub kind: String,
    /// The name.
    pub name: String,
    /// The namespace; the policy's own when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl TargetRef {
    /// Whether the ref names `kind` (compared without regard to case, as
    /// Linkerd does).
    pub fn is_kind(&self, kind: &str) -> bool {
        self.kind.eq_ignore_ascii_case(kind)
    }
}

/// Linkerd's AuthorizationPolicy: authorizes clients that satisfy all the
/// listed authentications to reach the target.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicy {
    /// The Server, route or Namespace the policy applies to.
    pub target_ref: TargetRef,
    /// Authentications that must all be satisfied; none means any client.
    #[serde(default)]
    pub required_authentication_refs: Vec<TargetRef>,
}

const POLICY_TARGET_KINDS: [&str; 4] = ["Server", "HTTPRoute", "GRPCRoute", "Namespace"];
const AUTHN_KINDS: [&str; 3] = [
    "MeshTLSAuthentication",
    "NetworkAuthentication",
    "ServiceAccount",
];

impl Validate for AuthorizationPolicy {
    fn validate(&self, cx: &mut Checker) {
        cx.field("targetRef", |c| {
            kind_in(c, &self.target_ref, &POLICY_TARGET_KINDS);
        });
        let refs = &self.required_authentication_refs;
        cx.each("requiredAuthenticationRefs", refs, |c, r| {
            kind_in(c, r, &AUTHN_KINDS);
        });
        let count = |k: &str| refs.iter().filter(|r| r.is_kind(k)).count();
        let (mtls, sa, net) = (
            count("MeshTLSAuthentication"),
            count("ServiceAccount"),
            count("NetworkAuthentication"),
        );
        cx.field("requiredAuthenticationRefs", |c| {
            if mtls > 1 {
                c.error("only one MeshTLSAuthentication may be listed");
            }
            if sa > 1 {
                c.error("only one ServiceAccount may be listed");
            }
            if mtls > 0 && sa > 0 {
                c.error("a MeshTLSAuthentication and a ServiceAccount may not be listed together");
            }
            if net > 1 {
                c.error("only one NetworkAuthentication may be listed");
            }
        });
    }
}

fn kind_in(cx: &mut Checker, r: &TargetRef, kinds: &[&str]) {
    if !kinds.iter().any(|k| r.is_kind(k)) {
        cx.error_at(
            "kind",
            format!(
                "kind {:?} is not supported here; use one of {}",
                r.kind,
                kinds.join(", ")
            ),
        );
    }
}

/// MeshTLSAuthentication: clients authenticated by mTLS identity.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshTlsAuthentication {
    /// Identity patterns: exact, `*.<suffix>` or `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<String>,
    /// ServiceAccounts (or Namespaces) whose identities are admitted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identity_refs: Vec<TargetRef>,
}

impl Validate for MeshTlsAuthentication {
    fn validate(&self, cx: &mut Checker) {
        match (self.identities.is_empty(), self.identity_refs.is_empty()) {
            (false, false) => cx.error("set either identities or identityRefs, not both"),
            (true, true) => cx.error("list identities or identityRefs"),
            _ => {}
        }
        cx.each("identities", &self.identities, |c, id| {
            identity_pattern(c, id)
        });
        cx.each("identityRefs", &self.identity_refs, |c, r| {
            if r.is_kind("Namespace") {
                if r.namespace.is_some() {
                    c.error_at(
                        "namespace",
                        "a Namespace is cluster-scoped; remove namespace",
                    );
                }
            } else {
                kind_in(c, r, &["ServiceAccount", "Namespace"]);
            }
        });
    }
}

/// NetworkAuthentication: clients authenticated by source network.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkAuthentication {
    /// The admitted networks.
    #[serde(default)]
    pub networks: Vec<Network>,
}

impl Validate for NetworkAuthentication {
    fn validate(&self, cx: &mut Checker) {
        if self.networks.is_empty() {
            cx.error("list at least one network");
        }
        cx.each("networks", &self.networks, |c, n| n.validate(c));
    }
}

// ---------------------------------------------------------------------------
// HTTPLocalRateLimitPolicy
// ---------------------------------------------------------------------------

/// HTTPLocalRateLimitPolicy: per-proxy request rate limits on a Server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpLocalRateLimitPolicy {
    /// The Server the limits apply to.
    pub target_ref: TargetRef,
    /// Limit over all traffic to the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<RateLimit>,
    /// Limit per client identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<RateLimit>,
    /// Limits for specific clients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<RateLimitOverride>,
}

/// A rate.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    /// Requests allowed per second.
    pub requests_per_second: u32,
}

/// A rate for the listed clients.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitOverride {
    /// Requests allowed per second.
    pub requests_per_second: u32,
    /// The clients (ServiceAccounts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_refs: Vec<TargetRef>,
}

fn rps(cx: &mut Checker, value: u32, total: Option<u32>, what: &str) {
    cx.field("requestsPerSecond", |c| {
        if value == 0 {
            c.error("requestsPerSecond must be at least 1 (0 would refuse every request)");
        } else if let Some(t) = total.filter(|t| value > *t) {
            c.error(format!(
                "{what} requestsPerSecond {value} is greater than total.requestsPerSecond {t}"
            ));
        }
    });
}

impl Validate for HttpLocalRateLimitPolicy {
    fn validate(&self, cx: &mut Checker) {
        cx.field("targetRef", |c| kind_in(c, &self.target_ref, &["Server"]));
        let total = self.total.as_ref().map(|t| t.requests_per_second);
        if let Some(t) = &self.total {
            cx.field("total", |c| rps(c, t.requests_per_second, None, "total"));
        }
        if let Some(i) = &self.identity {
            cx.field("identity", |c| {
                rps(c, i.requests_per_second, total, "identity")
            });
        }
        cx.each("overrides", &self.overrides, |c, o| {
            rps(c, o.requests_per_second, total, "override");
            if o.client_refs.is_empty() {
                c.error("an override needs clientRefs");
            }
            c.each("clientRefs", &o.client_refs, |c, r| {
                kind_in(c, r, &["ServiceAccount"]);
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let net = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(net.contains(&Cidr::parse("10.1.0.0/16").unwrap()));
        assert!(!net.contains(&Cidr::parse("11.0.0.0/16").unwrap()));
        assert!(!net.contains(&Cidr::parse("0.0.0.0/0").unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(&net));
        assert!(net.contains_addr("10.2.3.4".parse().unwrap()));
        assert_eq!(Cidr::parse("10.0.0.1").unwrap().prefix, 32);
        assert!(
            Cidr::parse("::/0")
                .unwrap()
                .contains(&Cidr::parse("fd00::/8").unwrap())
        );
        for bad in ["10.0.0.0/33", "10.0.0/8", "x", "10.0.0.0/", "10.0.0.0/-1"] {
            assert!(Cidr::parse(bad).is_none(), "{bad}");
        }
    }
}
