//! ServiceEntry and WorkloadEntry (networking.istio.io): services and
//! workloads added to the mesh's registry by hand.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::destination_rule::{export_to, is_dns_label};
use crate::validate::{Checker, Validate, checks};

/// A ServiceEntry spec.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntry {
    /// Host names of the service (`*.domain` allowed, bare `*` not).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Virtual IPs or CIDR blocks of the service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// Ports of the service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    /// Inside or outside the mesh (MESH_EXTERNAL when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<ServiceEntryLocation>,
    /// How endpoints are found (NONE when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<ServiceEntryResolution>,
    /// Endpoints of the service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<WorkloadEntry>,
    /// Selects WorkloadEntries and pods as endpoints, instead of `endpoints`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<EntryWorkloadSelector>,
    /// Namespaces the entry is visible to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    /// Identities the service's servers may present.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
}

/// A port of a ServiceEntry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    /// Port number.
    #[serde(default)]
    pub number: u32,
    /// Protocol (HTTP, HTTPS, GRPC, GRPC-WEB, HTTP2, MONGO, TCP, TLS, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Port name, unique within the entry.
    #[serde(default)]
    pub name: String,
    /// Port on the endpoints, when it differs from `number`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

/// Where a ServiceEntry's service lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServiceEntryLocation {
    /// Outside the mesh: no mesh mTLS.
    MeshExternal,
    /// Part of the mesh.
    MeshInternal,
}

/// How a ServiceEntry's endpoints are found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServiceEntryResolution {
    /// Forward to the original destination address.
    None,
    /// Use the endpoints' IP addresses.
    Static,
    /// Resolve endpoint addresses (or the hosts) by DNS; all IPs are used.
    Dns,
    /// Resolve by DNS; use the first address per new connection.
    DnsRoundRobin,
    /// Resolve wildcard hosts per request.
    DynamicDns,
}

impl ServiceEntryResolution {
    fn name(self) -> &'static str {
        match self {
            ServiceEntryResolution::None => "NONE",
            ServiceEntryResolution::Static => "STATIC",
            ServiceEntryResolution::Dns => "DNS",
            ServiceEntryResolution::DnsRoundRobin => "DNS_ROUND_ROBIN",
            ServiceEntryResolution::DynamicDns => "DYNAMIC_DNS",
        }
    }
}

/// The workload selector of a ServiceEntry (`labels`, unlike the
/// `matchLabels` of other Istio selectors).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EntryWorkloadSelector {
    /// Labels a workload must all carry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A WorkloadEntry spec, also the shape of a ServiceEntry endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEntry {
    /// IP address, DNS name or `unix://` path.
    #[serde(default)]
    pub address: String,
    /// Port numbers by service port name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u32>,
    /// Labels (subsets select on them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Network the endpoint is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Locality (`region/zone/subzone`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    /// Load-balancing weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Service account of the workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}

/// Protocols a ServiceEntry port may name (case-insensitive).
pub const SERVICE_ENTRY_PROTOCOLS: &[&str] = &[
    "HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "TCP", "TLS", "UDP", "REDIS", "MYSQL",
];

const UNIX_PREFIX: &str = "unix://";

/// Which address forms an entry's address may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AddressRule {
    /// IP or unix path (STATIC endpoints).
    IpOrUnix,
    /// IP, DNS name or unix path (WorkloadEntry, DNS endpoints).
    Any,
}

impl Validate for ServiceEntry {
    fn validate(&self, cx: &mut Checker) {
        let resolution = self.resolution.unwrap_or(ServiceEntryResolution::None);
        cx.field("hosts", |c| {
            if self.hosts.is_empty() {
                c.error("a service entry needs at least one host");
            }
            for (i, host) in self.hosts.iter().enumerate() {
                c.index(i, |c| {
                    let before = c.findings().len();
                    checks::host(c, host, false);
                    let valid = c.findings().len() == before;
                    if valid
                        && host.starts_with("*.")
                        && self.endpoints.is_empty()
                        && matches!(
                            resolution,
                            ServiceEntryResolution::Dns | ServiceEntryResolution::DnsRoundRobin
                        )
                    {
                        c.error(format!(
                            "wildcard host {host:?} cannot be resolved with resolution {}; add endpoints or use resolution NONE or DYNAMIC_DNS",
                            resolution.name()
                        ));
                    }
                });
            }
        });
        cx.field("addresses", |c| {
            for (i, addr) in self.addresses.iter().enumerate() {
                c.index(i, |c| {
                    if !is_ip_or_cidr(addr) {
                        c.error(format!(
                            "invalid address {addr:?}: expected an IP address or a CIDR block"
                        ));
                    }
                });
            }
        });
        self.validate_ports(cx);
        let port_names: Vec<&str> = self.ports.iter().map(|p| p.name.as_str()).collect();
        let rule = match resolution {
            ServiceEntryResolution::Static => AddressRule::IpOrUnix,
            _ => AddressRule::Any,
        };
        cx.each("endpoints", &self.endpoints, |c, ep| {
            ep.check(c, rule);
            c.field("ports", |c| {
                for name in ep.ports.keys() {
                    if !port_names.contains(&name.as_str()) {
                        c.field(name, |c| {
                            c.warn(format!(
                                "endpoint port {name:?} matches no port name of the service entry ({}); it is ignored",
                                port_names.join(", ")
                            ))
                        });
                    }
                }
            });
        });
        match resolution {
            ServiceEntryResolution::None if !self.endpoints.is_empty() => {
                cx.field("endpoints", |c| {
                    c.error("endpoints are not used with resolution NONE; set resolution STATIC or DNS, or remove them")
                });
            }
            ServiceEntryResolution::Static
                if self.endpoints.is_empty() && self.workload_selector.is_none() =>
            {
                cx.field("resolution", |c| {
                    c.error("no endpoints provided: resolution STATIC needs endpoints or a workloadSelector")
                });
            }
            ServiceEntryResolution::DnsRoundRobin if self.endpoints.len() > 1 => {
                cx.field("endpoints", |c| {
                    c.error(format!(
                        "resolution DNS_ROUND_ROBIN takes at most one endpoint, found {}",
                        self.endpoints.len()
                    ))
                });
            }
            ServiceEntryResolution::DynamicDns if !self.endpoints.is_empty() => {
                cx.field("endpoints", |c| {
                    c.error("endpoints are not used with resolution DYNAMIC_DNS; remove them")
                });
            }
            _ => {}
        }
        if self.workload_selector.is_some() && !self.endpoints.is_empty() {
            cx.field("workloadSelector", |c| {
                c.error("workloadSelector and endpoints are alternatives; set only one of them")
            });
        }
        cx.field("exportTo", |c| export_to(c, &self.export_to));
    }
}

impl ServiceEntry {
    fn validate_ports(&self, cx: &mut Checker) {
        let mut numbers: BTreeMap<u32, usize> = BTreeMap::new();
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        cx.field("ports", |c| {
            if self.ports.is_empty() {
                c.error("service entry must have at least one port");
            }
            for (i, port) in self.ports.iter().enumerate() {
                c.index(i, |c| {
                    c.field("number", |c| {
                        checks::port_number(c, port.number);
                        if port.number == 0 {
                            return;
                        }
                        if let Some(first) = numbers.get(&port.number) {
                            c.error(format!(
                                "port {} is already defined by ports[{first}]",
                                port.number
                            ));
                        } else {
                            numbers.insert(port.number, i);
                        }
                    });
                    if port.name.is_empty() {
                        c.error("port name is required");
                    } else {
                        c.field("name", |c| {
                            if !is_dns_label(&port.name) {
                                c.error(format!(
                                    "port name {:?} is not a DNS label (lowercase letters, digits and '-')",
                                    port.name
                                ));
                            } else if let Some(first) = names.get(port.name.as_str()) {
                                c.error(format!(
                                    "port name {:?} is already used by ports[{first}]",
                                    port.name
                                ));
                            } else {
                                names.insert(&port.name, i);
                            }
                        });
                    }
                    if let Some(p) = &port.protocol {
                        let up = p.to_ascii_uppercase();
                        if !SERVICE_ENTRY_PROTOCOLS.contains(&up.as_str()) {
                            c.field("protocol", |c| {
                                c.error(format!(
                                    "unknown protocol {p:?}, expected one of {}",
                                    SERVICE_ENTRY_PROTOCOLS.join(", ")
                                ))
                            });
                        }
                    }
                    if let Some(t) = port.target_port {
                        c.field("targetPort", |c| checks::port_number(c, t));
                    }
                });
            }
        });
    }
}

impl Validate for WorkloadEntry {
    fn validate(&self, cx: &mut Checker) {
        self.check(cx, AddressRule::Any);
    }
}

impl WorkloadEntry {
    fn check(&self, cx: &mut Checker, rule: AddressRule) {
        let has_network = self.network.as_deref().is_some_and(|n| !n.is_empty());
        cx.field("address", |c| {
            let addr = self.address.as_str();
            if addr.is_empty() {
                // A workload behind a network gateway may omit its address.
                if !has_network {
                    c.error("address is required: an IP address, a DNS name or a unix:// path");
                }
            } else if let Some(path) = addr.strip_prefix(UNIX_PREFIX) {
                if path.is_empty() || !(path.starts_with('/') || path.starts_with('@')) {
                    c.error(format!(
                        "invalid unix address {addr:?}: expected unix:///absolute/path or unix://@abstract"
                    ));
                }
            } else if addr.parse::<IpAddr>().is_ok() {
            } else if rule == AddressRule::IpOrUnix {
                c.error(format!(
                    "invalid address {addr:?}: resolution STATIC needs an IP address or a unix:// path"
                ));
            } else if !is_dns_name(addr) {
                c.error(format!(
                    "invalid address {addr:?}: expected an IP address, a DNS name or a unix:// path"
                ));
            }
        });
        if self.address.starts_with(UNIX_PREFIX) && !self.ports.is_empty() {
            cx.field("ports", |c| c.error("a unix:// address takes no ports"));
        }
        cx.field("ports", |c| {
            for (name, port) in &self.ports {
                c.field(name, |c| checks::port_number(c, *port));
            }
        });
    }
}

fn is_ip_or_cidr(s: &str) -> bool {
    match s.split_once('/') {
        None => s.parse::<IpAddr>().is_ok(),
        Some((ip, bits)) => match (ip.parse::<IpAddr>(), bits.parse::<u8>()) {
            (Ok(IpAddr::V4(_)), Ok(b)) => b <= 32,
            (Ok(IpAddr::V6(_)), Ok(b)) => b <= 128,
            _ => false,
        },
    }
}

/// A DNS name without wildcards (labels of letters, digits, '-' and '_').
fn is_dns_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert!(is_ip_or_cidr("10.0.0.1"));
        assert!(is_ip_or_cidr("10.0.0.0/16"));
        assert!(is_ip_or_cidr("2001:db8::/32"));
        assert!(!is_ip_or_cidr("10.0.0.0/33"));
        assert!(!is_ip_or_cidr("example.com"));
        assert!(is_dns_name("db.example.com"));
        assert!(is_dns_name("db.example.com."));
        assert!(!is_dns_name("*.example.com"));
        assert!(!is_dns_name("a..b"));
    }
}
