//! Gateway API kinds (`gateway.networking.k8s.io`): HTTPRoute (also used for
//! Linkerd's `policy.linkerd.io` HTTPRoute, so it is the superset of both),
//! GRPCRoute, Gateway and ReferenceGrant (SPEC 3).

mod grpc_route;
mod http_route;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use grpc_route::*;
pub use http_route::*;

use crate::schema::common::LabelSelector;
use crate::validate::{Checker, Validate, checks};

// ---------------------------------------------------------------------------
// References shared by the route kinds
// ---------------------------------------------------------------------------

/// A route's parent: a Gateway (listener), a Service (mesh) or a Linkerd
/// Server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParentReference {
    /// API group; `gateway.networking.k8s.io` when absent, `""` for core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind; `Gateway` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Namespace; the route's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// A listener name (Gateway) or port name (Service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    /// Restricts the route to this port of the parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
}

impl ParentReference {
    /// The kind, with its default.
    pub fn kind(&self) -> &str {
        self.kind.as_deref().unwrap_or("Gateway")
    }
}

/// A reference to a backend object, without weight (mirror targets).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendObjectReference {
    /// API group; `""` (core) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind; `Service` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name.
    pub name: String,
    /// Namespace; the route's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Port; required for a Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
}

/// A weighted backend with its own filters; `F` is the route's filter type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    bound(deserialize = "F: Deserialize<'de>")
)]
pub struct BackendRef<F> {
    /// API group; `""` (core) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind; `Service` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name.
    pub name: String,
    /// Namespace; the route's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Port; required for a Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Relative weight, 0..=1000000; 1 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Filters applied when this backend is chosen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<F>,
}

impl<F> BackendRef<F> {
    /// The weight, with its default of 1.
    pub fn weight(&self) -> u32 {
        self.weight.unwrap_or(1)
    }
}

/// A reference to an object in the route's namespace (ExtensionRef).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalObjectReference {
    /// API group.
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Name.
    pub name: String,
}

/// The largest backend weight Gateway API accepts.
pub const MAX_WEIGHT: u32 = 1_000_000;

fn is_service(group: Option<&str>, kind: Option<&str>) -> bool {
    group.unwrap_or("").is_empty() && kind.unwrap_or("Service") == "Service"
}

/// Checks a backend's port (required for a Service) and name.
fn check_backend_target(
    cx: &mut Checker,
    group: Option<&str>,
    kind: Option<&str>,
    name: &str,
    port: Option<u32>,
) {
    if name.is_empty() {
        cx.error_at("name", "backend name is empty");
    }
    match port {
        Some(p) => cx.field("port", |c| checks::port_number(c, p)),
        None if is_service(group, kind) => {
            cx.error("a backendRef to a Service needs a port (e.g. port: 8080)")
        }
        None => {}
    }
}

impl Validate for BackendObjectReference {
    fn validate(&self, cx: &mut Checker) {
        check_backend_target(
            cx,
            self.group.as_deref(),
            self.kind.as_deref(),
            &self.name,
            self.port,
        );
    }
}

impl<F: Validate> Validate for BackendRef<F> {
    fn validate(&self, cx: &mut Checker) {
        check_backend_target(
            cx,
            self.group.as_deref(),
            self.kind.as_deref(),
            &self.name,
            self.port,
        );
        if let Some(w) = self.weight
            && w > MAX_WEIGHT
        {
            cx.error_at("weight", format!("weight {w} is above the maximum 1000000"));
        }
        cx.each("filters", &self.filters, |c, f| f.validate(c));
    }
}

/// Checks what HTTPRoute and GRPCRoute share: parentRefs and hostnames.
fn check_route_common(cx: &mut Checker, parents: &[ParentReference], hostnames: &[String]) {
    if parents.is_empty() {
        cx.warn("no parentRefs: the route attaches to no Gateway, Service or Server and serves no traffic");
    }
    if parents.len() > 32 {
        cx.error_at(
            "parentRefs",
            format!("at most 32 parentRefs are allowed, found {}", parents.len()),
        );
    }
    cx.each("parentRefs", parents, |c, p| {
        if p.name.is_empty() {
            c.error_at("name", "parent name is empty");
        }
        if let Some(port) = p.port {
            c.field("port", |c| checks::port_number(c, port));
        }
    });
    if hostnames.len() > 16 {
        cx.error_at(
            "hostnames",
            format!(
                "at most 16 hostnames are allowed, found {}",
                hostnames.len()
            ),
        );
    }
    cx.each("hostnames", hostnames, |c, h| {
        if h.parse::<std::net::IpAddr>().is_ok() {
            c.error(format!(
                "hostname {h:?} is an IP address; hostnames must be DNS names"
            ));
        } else {
            checks::host(c, h, false);
        }
    });
}

/// Checks an HTTP header (or query parameter) name: an RFC 7230 token.
fn header_name(cx: &mut Checker, name: &str) {
    if name.is_empty() {
        cx.error("header name is empty");
        return;
    }
    let ok = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !ok {
        cx.error(format!(
            "invalid header name {name:?}: use letters, digits and !#$%&'*+-.^_`|~ only"
        ));
    }
}

// ---------------------------------------------------------------------------
// Gateway
// ---------------------------------------------------------------------------

/// A Gateway API Gateway: listeners that routes attach to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gateway {
    /// The GatewayClass that implements it.
    pub gateway_class_name: String,
    /// Listeners (1..=64).
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// Requested addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<GatewayAddress>,
    /// Infrastructure labels/annotations/parameters (not interpreted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infrastructure: Option<serde_json::Value>,
    /// Backend TLS client settings (not interpreted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_tls: Option<serde_json::Value>,
    /// ListenerSet attachment (not interpreted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_listeners: Option<serde_json::Value>,
}

/// One listener of a Gateway.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Listener {
    /// Unique name (the `sectionName` routes use).
    pub name: String,
    /// Host the listener serves; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Port.
    pub port: u32,
    /// Protocol: HTTP, HTTPS, TLS, TCP, UDP or a domain-prefixed name.
    pub protocol: String,
    /// TLS settings (HTTPS, TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<GatewayTlsConfig>,
    /// Which routes may attach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_routes: Option<AllowedRoutes>,
}

/// A listener's TLS settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayTlsConfig {
    /// Terminate (default) or Passthrough.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<TlsMode>,
    /// Certificates (Secrets by default).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificate_refs: Vec<SecretObjectReference>,
    /// Client certificate validation (not interpreted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frontend_validation: Option<serde_json::Value>,
    /// Implementation-specific options.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// TLS mode of a listener.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TlsMode {
    /// The Gateway terminates TLS.
    #[default]
    Terminate,
    /// TLS is passed through to the backend.
    Passthrough,
}

/// A reference to a certificate Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretObjectReference {
    /// API group; `""` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind; `Secret` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name.
    pub name: String,
    /// Namespace; the Gateway's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Which routes may attach to a listener.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AllowedRoutes {
    /// Namespaces routes may come from; `Same` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<RouteNamespaces>,
    /// Route kinds; those of the protocol when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<RouteGroupKind>,
}

/// Namespaces routes may attach from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteNamespaces {
    /// All, Same (default) or Selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<FromNamespaces>,
    /// Namespace labels, for `from: Selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// Where routes may attach from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FromNamespaces {
    /// Any namespace.
    All,
    /// The Gateway's namespace.
    #[default]
    Same,
    /// Namespaces matching `selector`.
    Selector,
}

/// A route kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteGroupKind {
    /// API group; `gateway.networking.k8s.io` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind (`HTTPRoute`).
    pub kind: String,
}

/// A requested Gateway address.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayAddress {
    /// IPAddress (default), Hostname, NamedAddress or domain-prefixed.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The address.
    pub value: String,
}

impl Validate for Gateway {
    fn validate(&self, cx: &mut Checker) {
        if self.gateway_class_name.is_empty() {
            cx.error_at("gatewayClassName", "gatewayClassName is empty");
        }
        if self.listeners.is_empty() {
            cx.error("a Gateway needs at least one listener");
        }
        if self.listeners.len() > 64 {
            cx.error_at(
                "listeners",
                format!(
                    "at most 64 listeners are allowed, found {}",
                    self.listeners.len()
                ),
            );
        }
        let listeners = &self.listeners;
        cx.field("listeners", |c| {
            for (i, l) in listeners.iter().enumerate() {
                c.index(i, |c| {
                    let earlier = &listeners[..i];
                    if let Some(j) = earlier.iter().position(|o| o.name == l.name) {
                        c.error_at(
                            "name",
                            format!(
                                "listener name {:?} is already used by listeners[{j}]",
                                l.name
                            ),
                        );
                    } else if let Some(j) = earlier.iter().position(|o| {
                        o.port == l.port && o.protocol == l.protocol && o.hostname == l.hostname
                    }) {
                        c.error(format!(
                            "listeners[{j}] already has the same port, protocol and hostname"
                        ));
                    }
                    l.validate(c);
                });
            }
        });
        cx.each("addresses", &self.addresses, |c, a| {
            match a.kind.as_deref().unwrap_or("IPAddress") {
                "IPAddress" if a.value.parse::<std::net::IpAddr>().is_err() => {
                    c.error_at("value", format!("{:?} is not an IP address", a.value));
                }
                "Hostname" => c.field("value", |c| checks::host(c, &a.value, false)),
                _ => {}
            }
        });
    }
}

impl Validate for Listener {
    fn validate(&self, cx: &mut Checker) {
        if self.name.is_empty() {
            cx.error_at("name", "listener name is empty");
        }
        cx.field("port", |c| checks::port_number(c, self.port));
        let proto = self.protocol.as_str();
        if proto.is_empty() {
            cx.error_at(
                "protocol",
                "protocol is empty; use HTTP, HTTPS, TLS, TCP or UDP",
            );
        }
        if let Some(h) = &self.hostname {
            if matches!(proto, "TCP" | "UDP") {
                cx.error_at(
                    "hostname",
                    format!("hostname must not be set for protocol {proto}"),
                );
            } else {
                cx.field("hostname", |c| checks::host(c, h, false));
            }
        }
        match (&self.tls, proto) {
            (None, "HTTPS" | "TLS") => cx.error(format!("protocol {proto} needs a tls block")),
            (Some(_), "HTTP" | "TCP" | "UDP") => {
                cx.error_at("tls", format!("tls must not be set for protocol {proto}"))
            }
            (Some(tls), _) => cx.field("tls", |c| {
                let mode = tls.mode.unwrap_or_default();
                if mode == TlsMode::Terminate
                    && tls.certificate_refs.is_empty()
                    && tls.options.is_empty()
                {
                    c.error("mode Terminate needs certificateRefs");
                }
                if mode == TlsMode::Passthrough && proto == "HTTPS" {
                    c.error_at(
                        "mode",
                        "protocol HTTPS cannot pass TLS through; use protocol TLS",
                    );
                }
            }),
            _ => {}
        }
        if let Some(ns) = self
            .allowed_routes
            .as_ref()
            .and_then(|a| a.namespaces.as_ref())
        {
            cx.field("allowedRoutes", |c| {
                c.field("namespaces", |c| {
                    match (ns.from.unwrap_or_default(), &ns.selector) {
                        (FromNamespaces::Selector, None) => {
                            c.error("from: Selector needs a selector")
                        }
                        (FromNamespaces::All | FromNamespaces::Same, Some(_)) => c
                            .field("selector", |c| {
                                c.warn("selector is ignored unless from is Selector")
                            }),
                        _ => {}
                    }
                })
            });
        }
    }
}

// ---------------------------------------------------------------------------
// ReferenceGrant
// ---------------------------------------------------------------------------

/// ReferenceGrant: lets objects in other namespaces refer to objects in this
/// one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReferenceGrant {
    /// Who may refer (1..=16).
    #[serde(default)]
    pub from: Vec<ReferenceGrantFrom>,
    /// What may be referred to (1..=16).
    #[serde(default)]
    pub to: Vec<ReferenceGrantTo>,
}

/// A referring group/kind/namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReferenceGrantFrom {
    /// API group (`gateway.networking.k8s.io`; `""` for core).
    pub group: String,
    /// Kind (`HTTPRoute`).
    pub kind: String,
    /// Namespace of the referring objects.
    pub namespace: String,
}

/// A referred-to group/kind, optionally one name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReferenceGrantTo {
    /// API group (`""` for core).
    pub group: String,
    /// Kind (`Service`).
    pub kind: String,
    /// One object; all of the kind when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Validate for ReferenceGrant {
    fn validate(&self, cx: &mut Checker) {
        if self.from.is_empty() {
            cx.error("from is empty; list the namespaces and kinds allowed to refer");
        }
        if self.to.is_empty() {
            cx.error("to is empty; list the kinds that may be referred to");
        }
        for (field, n) in [("from", self.from.len()), ("to", self.to.len())] {
            if n > 16 {
                cx.error_at(field, format!("at most 16 entries are allowed, found {n}"));
            }
        }
        cx.each("from", &self.from, |c, f| {
            if f.kind.is_empty() {
                c.error_at("kind", "kind is empty");
            }
            c.field("namespace", |c| {
                checks::dns1123_subdomain(c, "namespace", &f.namespace)
            });
        });
        cx.each("to", &self.to, |c, t| {
            if t.kind.is_empty() {
                c.error_at("kind", "kind is empty");
            }
        });
    }
}
