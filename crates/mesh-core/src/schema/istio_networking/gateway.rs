//! Gateway (networking.istio.io): the ports, hosts and TLS settings of an
//! ingress or egress gateway proxy.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::destination_rule::is_dns_label;
use crate::validate::{Checker, Validate, checks};

/// A Gateway spec.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gateway {
    /// The servers (port + hosts + TLS) the gateway exposes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<Server>,
    /// Labels of the gateway workloads this configuration applies to.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
}

/// One server of a gateway: a port, the hosts served on it, and TLS.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Server {
    /// The port to listen on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
    /// Address (IP or `unix://` path) to bind to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// Hosts served, as `[namespace/]dnsName`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// TLS settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
    /// Where traffic goes by default (`127.0.0.1:PORT` or `unix://`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_endpoint: Option<String>,
    /// A name for the server (used in metrics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A gateway port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Port {
    /// Port number.
    #[serde(default)]
    pub number: u32,
    /// HTTP, HTTPS, GRPC, GRPC-WEB, HTTP2, MONGO, TCP or TLS.
    #[serde(default)]
    pub protocol: String,
    /// Port name, unique within the gateway.
    #[serde(default)]
    pub name: String,
    /// Deprecated; has no effect on gateways.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

/// TLS settings of a gateway server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerTlsSettings {
    /// Answer plain HTTP requests with a 301 to HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_redirect: Option<bool>,
    /// TLS mode (PASSTHROUGH when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ServerTlsMode>,
    /// Server certificate file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_certificate: Option<String>,
    /// Server private key file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// CA bundle that verifies client certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
    /// Certificate revocation list file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_crl: Option<String>,
    /// Secret holding the certificate and key (and CA for MUTUAL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_name: Option<String>,
    /// Up to two secrets (an RSA and an ECDSA certificate).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credential_names: Vec<String>,
    /// Secret holding only the CA that verifies clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert_credential_name: Option<String>,
    /// Certificates given as files, up to one RSA and one ECDSA.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_certificates: Vec<TlsCertificate>,
    /// Names a client certificate must carry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    /// Allowed SPKI hashes of client certificates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_spki: Vec<String>,
    /// Allowed hashes of client certificates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_hash: Vec<String>,
    /// Minimum TLS version (TLS 1.2 when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_protocol_version: Option<TlsProtocol>,
    /// Maximum TLS version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_protocol_version: Option<TlsProtocol>,
    /// Allowed cipher suites.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
    /// Skip verification of client certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
}

/// A certificate given as files.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsCertificate {
    /// Certificate file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_certificate: Option<String>,
    /// Private key file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// CA bundle file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
}

/// Gateway server TLS modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerTlsMode {
    /// Route on SNI without terminating TLS.
    Passthrough,
    /// Terminate TLS; no client certificate.
    Simple,
    /// Terminate TLS; client certificate required.
    Mutual,
    /// SNI names the destination cluster; no VirtualService needed.
    AutoPassthrough,
    /// Terminate with the mesh's certificates.
    IstioMutual,
    /// Client certificate requested, verified when sent.
    OptionalMutual,
}

impl ServerTlsMode {
    fn name(self) -> &'static str {
        match self {
            ServerTlsMode::Passthrough => "PASSTHROUGH",
            ServerTlsMode::Simple => "SIMPLE",
            ServerTlsMode::Mutual => "MUTUAL",
            ServerTlsMode::AutoPassthrough => "AUTO_PASSTHROUGH",
            ServerTlsMode::IstioMutual => "ISTIO_MUTUAL",
            ServerTlsMode::OptionalMutual => "OPTIONAL_MUTUAL",
        }
    }
}

/// TLS protocol versions, in increasing order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TlsProtocol {
    /// Let the proxy choose.
    #[serde(rename = "TLS_AUTO")]
    TlsAuto,
    /// TLS 1.0.
    #[serde(rename = "TLSV1_0")]
    TlsV1_0,
    /// TLS 1.1.
    #[serde(rename = "TLSV1_1")]
    TlsV1_1,
    /// TLS 1.2.
    #[serde(rename = "TLSV1_2")]
    TlsV1_2,
    /// TLS 1.3.
    #[serde(rename = "TLSV1_3")]
    TlsV1_3,
}

/// The protocols a gateway server port may name.
pub const GATEWAY_PROTOCOLS: &[&str] = &[
    "HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "TCP", "TLS",
];

/// How a server port carries traffic, for the "same port" conflict check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PortClass {
    PlainHttp,
    PlainTcp,
    Tls,
}

fn port_class(protocol: &str) -> Option<PortClass> {
    match protocol.to_ascii_uppercase().as_str() {
        "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB" => Some(PortClass::PlainHttp),
        "TCP" | "MONGO" => Some(PortClass::PlainTcp),
        "HTTPS" | "TLS" => Some(PortClass::Tls),
        _ => None,
    }
}

impl Validate for Gateway {
    fn validate(&self, cx: &mut Checker) {
        if self.servers.is_empty() {
            cx.field("servers", |c| {
                c.error("a gateway needs at least one server")
            });
        }
        // (bind, port) -> (server index, protocol, class)
        let mut ports: BTreeMap<(String, u32), (usize, String, PortClass)> = BTreeMap::new();
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        cx.field("servers", |c| {
            for (i, server) in self.servers.iter().enumerate() {
                c.index(i, |c| {
                    server.validate(c);
                    let Some(port) = &server.port else { return };
                    if !port.name.is_empty() {
                        if let Some(first) = names.get(port.name.as_str()) {
                            c.field("port", |c| {
                                c.error_at(
                                    "name",
                                    format!(
                                        "port name {:?} is already used by servers[{first}]; port names must be unique within a gateway",
                                        port.name
                                    ),
                                )
                            });
                        } else {
                            names.insert(&port.name, i);
                        }
                    }
                    let Some(class) = port_class(&port.protocol) else {
                        return;
                    };
                    if port.number == 0 {
                        return;
                    }
                    let key = (server.bind.clone().unwrap_or_default(), port.number);
                    match ports.get(&key) {
                        Some((first, proto, first_class)) if *first_class != class => {
                            c.field("port", |c| {
                                c.error_at(
                                    "protocol",
                                    format!(
                                        "port {} is already served as {proto} by servers[{first}]; {} cannot share it",
                                        port.number, port.protocol
                                    ),
                                )
                            });
                        }
                        Some(_) => {}
                        None => {
                            ports.insert(key, (i, port.protocol.clone(), class));
                        }
                    }
                });
            }
        });
    }
}

impl Validate for Server {
    fn validate(&self, cx: &mut Checker) {
        let unix_bind = self
            .bind
            .as_deref()
            .is_some_and(|b| b.starts_with("unix://"));
        if let Some(bind) = &self.bind
            && !unix_bind
            && bind.parse::<std::net::IpAddr>().is_err()
        {
            cx.field("bind", |c| {
                c.error(format!(
                    "invalid bind address {bind:?}: expected an IP address or a unix:// path"
                ))
            });
        }
        let class = match &self.port {
            None => {
                cx.error("port is required");
                None
            }
            Some(port) => cx.field("port", |c| port.check(c, unix_bind)),
        };
        if self.hosts.is_empty() {
            cx.field("hosts", |c| c.error("a server needs at least one host"));
        }
        cx.field("hosts", |c| {
            for (i, host) in self.hosts.iter().enumerate() {
                c.index(i, |c| gateway_host(c, host));
            }
        });
        let protocol = self.port.as_ref().map_or("", |p| p.protocol.as_str());
        match (&self.tls, class) {
            (None, Some(PortClass::Tls)) => cx.error(format!(
                "a {} server needs tls settings (for example mode: SIMPLE and credentialName)",
                protocol.to_ascii_uppercase()
            )),
            (Some(tls), Some(PortClass::PlainHttp | PortClass::PlainTcp)) => cx.field("tls", |c| {
                if tls.has_more_than_redirect() {
                    c.error(format!(
                        "tls settings other than httpsRedirect need an HTTPS or TLS port, not {protocol}"
                    ));
                } else if tls.https_redirect == Some(true) && class == Some(PortClass::PlainTcp) {
                    c.field("httpsRedirect", |c| {
                        c.warn(format!(
                            "httpsRedirect only has an effect on HTTP servers, not {protocol}"
                        ))
                    });
                }
            }),
            (Some(tls), _) => cx.field("tls", |c| tls.validate(c)),
            (None, _) => {}
        }
    }
}

impl Port {
    /// Checks the port; returns its class when the protocol is known.
    fn check(&self, cx: &mut Checker, unix_bind: bool) -> Option<PortClass> {
        if !(unix_bind && self.number == 0) {
            cx.field("number", |c| checks::port_number(c, self.number));
        }
        if self.name.is_empty() {
            cx.error("port name is required");
        }
        if let Some(t) = self.target_port {
            cx.field("targetPort", |c| {
                c.warn(format!(
                    "targetPort {t} has no effect on a Gateway; remove it"
                ))
            });
        }
        cx.field("protocol", |c| {
            if self.protocol.is_empty() {
                c.error(format!(
                    "protocol is required: one of {}",
                    GATEWAY_PROTOCOLS.join(", ")
                ));
                return None;
            }
            let class = port_class(&self.protocol);
            if class.is_none() {
                c.error(format!(
                    "unknown protocol {:?}, expected one of {}",
                    self.protocol,
                    GATEWAY_PROTOCOLS.join(", ")
                ));
            }
            class
        })
    }
}

/// A gateway server host: `[namespace/]dnsName`, where namespace is `*`, `.`
/// or a namespace name, and dnsName may be `*` or start with `*.`.
fn gateway_host(cx: &mut Checker, host: &str) {
    let parts: Vec<&str> = host.split('/').collect();
    let (ns, name) = match parts.as_slice() {
        [name] => (None, *name),
        [ns, name] => (Some(*ns), *name),
        _ => {
            cx.error(format!(
                "invalid host {host:?}: write it as [namespace/]dnsName, e.g. prod/api.example.com"
            ));
            return;
        }
    };
    if let Some(ns) = ns
        && !(ns == "*" || ns == "." || is_dns_label(ns))
    {
        cx.error(format!(
            "invalid host {host:?}: namespace {ns:?} must be \"*\", \".\" or a namespace name"
        ));
        return;
    }
    checks::host(cx, name, true);
}

impl ServerTlsSettings {
    fn has_more_than_redirect(&self) -> bool {
        let only_redirect = ServerTlsSettings {
            https_redirect: self.https_redirect,
            ..ServerTlsSettings::default()
        };
        *self != only_redirect
    }
}

impl Validate for ServerTlsSettings {
    fn validate(&self, cx: &mut Checker) {
        let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
        let mode = self.mode.unwrap_or(ServerTlsMode::Passthrough);
        let credential = set(&self.credential_name);
        if credential && !self.credential_names.is_empty() {
            cx.field("credentialNames", |c| {
                c.error("credentialName and credentialNames are alternatives; set only one")
            });
        }
        if self.credential_names.len() > 2 {
            cx.field("credentialNames", |c| {
                c.error(format!(
                    "{} credentialNames given; at most 2 (one RSA and one ECDSA certificate)",
                    self.credential_names.len()
                ))
            });
        }
        if self.tls_certificates.len() > 2 {
            cx.field("tlsCertificates", |c| {
                c.error(format!(
                    "{} tlsCertificates given; at most 2 (one RSA and one ECDSA certificate)",
                    self.tls_certificates.len()
                ))
            });
        }
        cx.each("tlsCertificates", &self.tls_certificates, |c, cert| {
            if !set(&cert.server_certificate) || !set(&cert.private_key) {
                c.error("each tlsCertificates entry needs serverCertificate and privateKey");
            }
        });
        match mode {
            ServerTlsMode::IstioMutual => {
                for (name, given) in [
                    ("serverCertificate", set(&self.server_certificate)),
                    ("privateKey", set(&self.private_key)),
                    ("caCertificates", set(&self.ca_certificates)),
                    ("credentialName", credential),
                ] {
                    if given {
                        cx.field(name, |c| {
                            c.error(format!(
                                "ISTIO_MUTUAL uses the mesh certificates; remove {name}"
                            ))
                        });
                    }
                }
            }
            ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
                let from_secret = credential || !self.credential_names.is_empty();
                let from_files = set(&self.server_certificate) || set(&self.private_key);
                if from_secret || !self.tls_certificates.is_empty() {
                    // Certificates come from a secret or the tlsCertificates list.
                } else if !from_files {
                    cx.error(format!(
                        "mode {} needs credentialName, credentialNames, or serverCertificate and privateKey",
                        mode.name()
                    ));
                } else if !set(&self.server_certificate) {
                    cx.error(format!(
                        "mode {} needs serverCertificate alongside privateKey",
                        mode.name()
                    ));
                } else if !set(&self.private_key) {
                    cx.error(format!(
                        "mode {} needs privateKey alongside serverCertificate",
                        mode.name()
                    ));
                } else if mode != ServerTlsMode::Simple
                    && !set(&self.ca_certificates)
                    && !set(&self.ca_cert_credential_name)
                {
                    cx.error(format!(
                        "mode {} needs caCertificates to verify client certificates",
                        mode.name()
                    ));
                }
            }
            ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough => {}
        }
        if let (Some(min), Some(max)) = (self.min_protocol_version, self.max_protocol_version)
            && min != TlsProtocol::TlsAuto
            && max != TlsProtocol::TlsAuto
            && min > max
        {
            cx.field("maxProtocolVersion", |c| {
                c.error("maxProtocolVersion is lower than minProtocolVersion")
            });
        }
        if self.insecure_skip_verify == Some(true) {
            cx.field("insecureSkipVerify", |c| {
                c.warn("insecureSkipVerify turns off verification of client certificates")
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::PathSeg;

    fn run(host: &str) -> Vec<String> {
        let mut cx = Checker::new(&[PathSeg::Field("h".into())]);
        gateway_host(&mut cx, host);
        cx.into_findings().into_iter().map(|f| f.message).collect()
    }

    #[test]
    fn gateway_hosts() {
        for ok in [
            "*",
            "ns/*",
            "*/foo.example.com",
            "./foo.example.com",
            "*.example.com",
            "prod/api.example.com",
        ] {
            assert!(run(ok).is_empty(), "{ok}: {:?}", run(ok));
        }
        for bad in ["a/b/c", "*.*.com", "Prod/x.com", "/x.com", "ns/"] {
            assert_eq!(run(bad).len(), 1, "{bad}");
        }
    }

    #[test]
    fn tls_versions_are_ordered() {
        assert!(TlsProtocol::TlsV1_3 > TlsProtocol::TlsV1_2);
    }
}
