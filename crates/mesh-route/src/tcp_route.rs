//! Routing of opaque connections: VirtualService `tcp` rules (by
//! destination port and source) and `tls` rules (by SNI), SPEC 4.7.
//!
//! This is the route stage of the outbound TCP path (an `--outbound-tcp`
//! listener, or a `CONNECT` tunnel on the outbound HTTP listener): once per
//! connection, before any byte is forwarded, the connection's destination
//! (the host and port it was addressed to, and the SNI of its ClientHello
//! when it opens with one) picks a destination service. There are no
//! requests, so none of the HTTP policies apply; weights are drawn per
//! connection.
//!
//! The table is separate from the HTTP [`RoutingTable`](crate::routing::RoutingTable)
//! so the two compile and evolve independently; [`L4Routes`] compiles it
//! lazily from the snapshot the HTTP table holds (once per generation, on
//! the first connection after a reload) and shares it through an
//! [`ArcSwap`], so a connection costs one atomic load.
//!
//! ```
//! use std::collections::BTreeMap;
//! use mesh_core::snapshot::Snapshot;
//! use mesh_route::random::SplitMix;
//! use mesh_route::tcp_route::{ConnectionView, L4Decision, L4Table};
//!
//! let table = L4Table::compile(&Snapshot::empty());
//! let labels = BTreeMap::new();
//! let conn = ConnectionView {
//!     host: "db.example.com",
//!     port: 5432,
//!     sni: None,
//!     destination_ip: None,
//!     source_ip: None,
//!     gateway: "mesh",
//!     source_namespace: "default",
//!     source_labels: &labels,
//! };
//! // No VirtualService: the connection goes to the host's own service.
//! assert!(matches!(table.decide(&conn, &SplitMix::seeded(1)), L4Decision::Default));
//! ```

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use mesh_core::host::{covers, qualify};
use mesh_core::resource::Spec;
use mesh_core::schema::istio_networking::{
    Destination, L4MatchAttributes, RouteDestination, TlsMatchAttributes,
};
use mesh_core::snapshot::Snapshot;

use crate::decision::DestinationKey;
use crate::random::RandomSource;
use crate::routing::MESH;

/// What the route stage knows about one connection.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionView<'a> {
    /// The host the connection was addressed to (the `HOST` of
    /// `--outbound-tcp HOST:PORT=ADDR`, or of `CONNECT host:port`).
    pub host: &'a str,
    /// The destination port.
    pub port: u16,
    /// The SNI of the connection's ClientHello, when it opened with one.
    pub sni: Option<&'a str>,
    /// The destination as an IP, when the host is an IP literal
    /// (`destinationSubnets` match on it).
    pub destination_ip: Option<IpAddr>,
    /// The client's address (`sourceSubnet`).
    pub source_ip: Option<IpAddr>,
    /// `mesh` for sidecars.
    pub gateway: &'a str,
    /// The caller's namespace (`sourceNamespace`, short host names).
    pub source_namespace: &'a str,
    /// The caller's labels (`sourceLabels`).
    pub source_labels: &'a BTreeMap<String, String>,
}

/// Names the rule that decided, for logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L4RouteId {
    /// `VirtualService/<namespace>/<name>`.
    pub resource: Arc<str>,
    /// `tcp` or `tls`.
    pub kind: &'static str,
    /// Index of the rule in that list.
    pub rule_index: usize,
}

impl std::fmt::Display for L4RouteId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}[{}]", self.resource, self.kind, self.rule_index)
    }
}

/// The decision for one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum L4Decision {
    /// Send the connection to this destination.
    Forward {
        /// The chosen destination.
        destination: DestinationKey,
        /// The rule that chose it.
        route: L4RouteId,
    },
    /// A VirtualService has `tcp` rules for the host but none matches: the
    /// connection is closed (the TCP form of 404 NR).
    NoRoute {
        /// The VirtualService.
        resource: Arc<str>,
    },
    /// No VirtualService routes this connection: it goes to the host's own
    /// ServiceEntry (or, unregistered, per the outbound traffic policy).
    Default,
}

/// The `tcp` and `tls` rules of one VirtualService, compiled.
#[derive(Debug)]
pub struct L4VirtualService {
    resource: Arc<str>,
    gateways: Vec<Box<str>>,
    tls: Vec<L4Rule>,
    tcp: Vec<L4Rule>,
}

impl L4VirtualService {
    /// `VirtualService/<namespace>/<name>`.
    pub fn resource(&self) -> &Arc<str> {
        &self.resource
    }

    /// Whether it has `tls` rules (so connections to its hosts are sniffed
    /// for a ClientHello).
    pub fn has_tls(&self) -> bool {
        !self.tls.is_empty()
    }

    /// Whether it has `tcp` rules.
    pub fn has_tcp(&self) -> bool {
        !self.tcp.is_empty()
    }

    fn applies_to(&self, gateway: &str) -> bool {
        self.gateways.iter().any(|g| **g == *gateway)
    }

    /// Compiles the `tcp` and `tls` rules of a VirtualService resource for
    /// a table other than the sidecar's (the ingress gateway's PASSTHROUGH
    /// servers, `crate::gateway`); `Ok(None)` for another kind or a
    /// VirtualService with neither list.
    pub fn compile(resource: &mesh_core::resource::Resource) -> Result<Option<Self>, String> {
        let Spec::VirtualService(vs) = &resource.spec else {
            return Ok(None);
        };
        if vs.tcp.is_empty() && vs.tls.is_empty() {
            return Ok(None);
        }
        let id: Arc<str> = Arc::from(resource.id().as_str());
        compile_vs(&id, resource.namespace(), vs).map(Some)
    }

    /// The first `tls` rule matching `conn` (SPEC 4.7) with the destination
    /// it draws; `None` when none matches.
    pub fn decide_tls(
        &self,
        conn: &ConnectionView<'_>,
        random: &dyn RandomSource,
    ) -> Option<L4Decision> {
        first_match(&self.tls, conn, random)
    }
}

#[derive(Debug)]
struct L4Rule {
    id: L4RouteId,
    matches: Vec<L4Match>,
    targets: Vec<DestinationKey>,
    /// `cumulative[i]` is the sum of the weights of `targets[..=i]`.
    cumulative: Vec<u64>,
}

impl L4Rule {
    fn compile(
        kind: &'static str,
        index: usize,
        resource: &Arc<str>,
        namespace: &str,
        matches: Vec<L4Match>,
        route: &[RouteDestination],
    ) -> Result<L4Rule, String> {
        let mut targets = Vec::with_capacity(route.len());
        let mut cumulative = Vec::with_capacity(route.len());
        let mut total = 0u64;
        for (i, d) in route.iter().enumerate() {
            let key = destination_key(&d.destination, namespace)
                .map_err(|e| format!("{kind}[{index}].route[{i}].destination.{e}"))?;
            // As for HTTP (SPEC 4.3): an absent weight is 0, and a single
            // destination takes every connection whatever its weight.
            total += if route.len() == 1 {
                1
            } else {
                u64::from(d.weight.unwrap_or(0))
            };
            targets.push(key);
            cumulative.push(total);
        }
        if total == 0 {
            return Err(format!(
                "{kind}[{index}].route: no destination with a positive weight"
            ));
        }
        Ok(L4Rule {
            id: L4RouteId {
                resource: Arc::clone(resource),
                kind,
                rule_index: index,
            },
            matches,
            targets,
            cumulative,
        })
    }

    fn matches(&self, conn: &ConnectionView<'_>) -> bool {
        self.matches.is_empty() || self.matches.iter().any(|m| m.matches(conn))
    }

    fn pick(&self, random: &dyn RandomSource) -> Option<&DestinationKey> {
        let index = random.weighted(&self.cumulative);
        self.targets.get(index).or_else(|| self.targets.last())
    }
}

/// One `match` block of a `tcp` or `tls` rule: every condition must hold.
#[derive(Debug, Default)]
struct L4Match {
    /// Lower-cased; `*.suffix` patterns allowed. Empty for `tcp` rules.
    sni_hosts: Vec<Box<str>>,
    destination_subnets: Vec<Cidr>,
    port: Option<u16>,
    source_subnet: Option<Cidr>,
    source_labels: Vec<(Box<str>, Box<str>)>,
    gateways: Vec<Box<str>>,
    source_namespace: Option<Box<str>>,
}

impl L4Match {
    #[allow(clippy::too_many_arguments)]
    fn compile(
        sni_hosts: &[String],
        destination_subnets: &[String],
        port: Option<u32>,
        source_subnet: Option<&str>,
        source_labels: &BTreeMap<String, String>,
        gateways: &[String],
        source_namespace: Option<&str>,
        namespace: &str,
    ) -> Result<L4Match, String> {
        let cidr = |s: &str| Cidr::parse(s).ok_or_else(|| format!("{s:?} is not an IP or CIDR"));
        Ok(L4Match {
            sni_hosts: sni_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase().into())
                .collect(),
            destination_subnets: destination_subnets
                .iter()
                .map(|s| cidr(s))
                .collect::<Result<_, _>>()?,
            port: match port {
                None | Some(0) => None,
                Some(p) => Some(u16::try_from(p).map_err(|_| format!("port {p} out of range"))?),
            },
            source_subnet: source_subnet.map(cidr).transpose()?,
            source_labels: source_labels
                .iter()
                .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
                .collect(),
            gateways: gateways
                .iter()
                .map(|g| normalize_gateway(g, namespace))
                .collect(),
            source_namespace: source_namespace.map(Into::into),
        })
    }

    fn from_tcp(m: &L4MatchAttributes, namespace: &str) -> Result<L4Match, String> {
        L4Match::compile(
            &[],
            &m.destination_subnets,
            m.port,
            m.source_subnet.as_deref(),
            &m.source_labels,
            &m.gateways,
            m.source_namespace.as_deref(),
            namespace,
        )
    }

    fn from_tls(m: &TlsMatchAttributes, namespace: &str) -> Result<L4Match, String> {
        L4Match::compile(
            &m.sni_hosts,
            &m.destination_subnets,
            m.port,
            None,
            &m.source_labels,
            &m.gateways,
            m.source_namespace.as_deref(),
            namespace,
        )
    }

    fn matches(&self, conn: &ConnectionView<'_>) -> bool {
        if !self.sni_hosts.is_empty() {
            let Some(sni) = conn.sni else {
                return false;
            };
            if !self.sni_hosts.iter().any(|p| sni_matches(p, sni)) {
                return false;
            }
        }
        if self.port.is_some_and(|p| p != conn.port) {
            return false;
        }
        if !self.gateways.is_empty() && !self.gateways.iter().any(|g| **g == *conn.gateway) {
            return false;
        }
        if self
            .source_namespace
            .as_deref()
            .is_some_and(|ns| ns != conn.source_namespace)
        {
            return false;
        }
        if !self
            .source_labels
            .iter()
            .all(|(k, v)| conn.source_labels.get(&**k).is_some_and(|x| **x == **v))
        {
            return false;
        }
        if !self.destination_subnets.is_empty()
            && !conn
                .destination_ip
                .is_some_and(|ip| self.destination_subnets.iter().any(|c| c.contains(ip)))
        {
            return false;
        }
        if let Some(subnet) = &self.source_subnet
            && !conn.source_ip.is_some_and(|ip| subnet.contains(ip))
        {
            return false;
        }
        true
    }
}

/// `*.example.com` covers `a.example.com` (not `example.com`); exact names
/// compare case-insensitively.
fn sni_matches(pattern: &str, sni: &str) -> bool {
    covers(pattern, sni)
}

/// A destination with its host qualified in the VirtualService's namespace
/// (as the HTTP rules read theirs).
fn destination_key(d: &Destination, namespace: &str) -> Result<DestinationKey, String> {
    let port = match d.port.map(|p| p.number) {
        None | Some(0) => None,
        Some(n) => {
            Some(u16::try_from(n).map_err(|_| format!("port.number: {n} is not a port number"))?)
        }
    };
    Ok(DestinationKey {
        host: qualify(&d.host, namespace).into(),
        subset: d.subset.as_deref().map(Arc::from),
        port,
    })
}

/// A gateway name as `namespace/name`, `mesh` unchanged.
fn normalize_gateway(g: &str, namespace: &str) -> Box<str> {
    if g == MESH || g.contains('/') {
        g.into()
    } else {
        format!("{namespace}/{g}").into()
    }
}

/// An IP network (`10.0.0.0/8`; a bare IP is a /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    bits: u8,
}

impl Cidr {
    /// Parses `ip` or `ip/bits`.
    pub fn parse(s: &str) -> Option<Cidr> {
        let (ip, bits) = match s.split_once('/') {
            Some((ip, bits)) => (ip.parse::<IpAddr>().ok()?, Some(bits.parse::<u8>().ok()?)),
            None => (s.parse::<IpAddr>().ok()?, None),
        };
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        (bits <= max).then_some(Cidr { network: ip, bits })
    }

    /// Whether `ip` is inside the network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
            let whole = usize::from(bits / 8);
            let rest = bits % 8;
            if a.get(..whole) != b.get(..whole) {
                return false;
            }
            if rest == 0 {
                return true;
            }
            let mask = 0xffu8 << (8 - rest);
            match (a.get(whole), b.get(whole)) {
                (Some(x), Some(y)) => x & mask == y & mask,
                _ => false,
            }
        }
        match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => prefix_eq(&n.octets(), &i.octets(), self.bits),
            (IpAddr::V6(n), IpAddr::V6(i)) => prefix_eq(&n.octets(), &i.octets(), self.bits),
            (IpAddr::V6(n), IpAddr::V4(i)) => {
                prefix_eq(&n.octets(), &i.to_ipv6_mapped().octets(), self.bits)
            }
            (IpAddr::V4(_), IpAddr::V6(i)) => i
                .to_ipv4_mapped()
                .is_some_and(|v4| self.contains(IpAddr::V4(v4))),
        }
    }
}

/// The compiled `tcp` and `tls` rules of one snapshot, keyed by the
/// qualified hosts of their VirtualServices.
#[derive(Debug, Default)]
pub struct L4Table {
    /// The snapshot generation compiled.
    pub generation: u64,
    exact: HashMap<String, Arc<L4VirtualService>>,
    wildcard: HashMap<String, Arc<L4VirtualService>>,
    /// VirtualServices whose `tcp`/`tls` rules did not compile (their hosts
    /// get default routing): `resource: message`.
    pub errors: Vec<String>,
}

impl L4Table {
    /// Compiles the sidecar VirtualServices of `snapshot` that have `tcp` or
    /// `tls` rules.
    pub fn compile(snapshot: &Snapshot) -> L4Table {
        let mut table = L4Table {
            generation: snapshot.generation,
            ..L4Table::default()
        };
        let mut compiled: HashMap<*const mesh_core::resource::Resource, Arc<L4VirtualService>> =
            HashMap::new();
        for (host, resource) in &snapshot.index.mesh_routes {
            let key = Arc::as_ptr(resource);
            let vs = match compiled.get(&key) {
                Some(vs) => Arc::clone(vs),
                None => {
                    let Spec::VirtualService(vs) = &resource.spec else {
                        continue;
                    };
                    if vs.tcp.is_empty() && vs.tls.is_empty() {
                        continue;
                    }
                    let namespace = resource.namespace();
                    let id: Arc<str> = Arc::from(resource.id().as_str());
                    let compiled_vs = compile_vs(&id, namespace, vs);
                    match compiled_vs {
                        Ok(c) => {
                            let c = Arc::new(c);
                            compiled.insert(key, Arc::clone(&c));
                            c
                        }
                        Err(e) => {
                            tracing::warn!("{id}: {e}; its tcp and tls rules are ignored");
                            table.errors.push(format!("{id}: {e}"));
                            continue;
                        }
                    }
                }
            };
            match host.strip_prefix('*') {
                Some(suffix) => table.wildcard.insert(suffix.to_owned(), vs),
                None => table.exact.insert(host.clone(), vs),
            };
        }
        table
    }

    /// The VirtualService with `tcp`/`tls` rules governing `host` for a
    /// caller in `namespace`: exact names first, then the most specific
    /// wildcard.
    pub fn virtual_service(&self, host: &str, namespace: &str) -> Option<&Arc<L4VirtualService>> {
        if self.exact.is_empty() && self.wildcard.is_empty() {
            return None;
        }
        crate::routing::lookup_host(&self.exact, &self.wildcard, host, namespace)
    }

    /// Whether connections to `host` should be sniffed for a ClientHello:
    /// a VirtualService with `tls` rules governs it.
    pub fn wants_sni(&self, host: &str, namespace: &str, gateway: &str) -> bool {
        self.virtual_service(host, namespace)
            .is_some_and(|vs| vs.has_tls() && vs.applies_to(gateway))
    }

    /// The decision for one connection (SPEC 4.7): with an SNI, the first
    /// matching `tls` rule of the VirtualService for the host (or, when the
    /// host's has none, for the SNI name); then the first matching `tcp`
    /// rule of the host's VirtualService; a VirtualService with `tcp` rules
    /// of which none matches closes the connection; otherwise the host's
    /// own service.
    pub fn decide(&self, conn: &ConnectionView<'_>, random: &dyn RandomSource) -> L4Decision {
        let governing = self
            .virtual_service(conn.host, conn.source_namespace)
            .filter(|vs| vs.applies_to(conn.gateway));
        if let Some(sni) = conn.sni {
            let tls_vs = governing.filter(|vs| vs.has_tls()).or_else(|| {
                self.virtual_service(sni, conn.source_namespace)
                    .filter(|vs| vs.has_tls() && vs.applies_to(conn.gateway))
            });
            if let Some(vs) = tls_vs
                && let Some(decision) = first_match(&vs.tls, conn, random)
            {
                return decision;
            }
        }
        match governing {
            Some(vs) if vs.has_tcp() => {
                first_match(&vs.tcp, conn, random).unwrap_or_else(|| L4Decision::NoRoute {
                    resource: Arc::clone(&vs.resource),
                })
            }
            _ => L4Decision::Default,
        }
    }
}

fn first_match(
    rules: &[L4Rule],
    conn: &ConnectionView<'_>,
    random: &dyn RandomSource,
) -> Option<L4Decision> {
    let rule = rules.iter().find(|r| r.matches(conn))?;
    let destination = rule.pick(random)?.clone();
    Some(L4Decision::Forward {
        destination,
        route: rule.id.clone(),
    })
}

fn compile_vs(
    id: &Arc<str>,
    namespace: &str,
    vs: &mesh_core::schema::istio_networking::VirtualService,
) -> Result<L4VirtualService, String> {
    let tls = vs
        .tls
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            let matches = rule
                .matches
                .iter()
                .map(|m| L4Match::from_tls(m, namespace))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("tls[{i}].match: {e}"))?;
            L4Rule::compile("tls", i, id, namespace, matches, &rule.route)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let tcp = vs
        .tcp
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            let matches = rule
                .matches
                .iter()
                .map(|m| L4Match::from_tcp(m, namespace))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("tcp[{i}].match: {e}"))?;
            L4Rule::compile("tcp", i, id, namespace, matches, &rule.route)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(L4VirtualService {
        resource: Arc::clone(id),
        gateways: vs
            .effective_gateways()
            .into_iter()
            .map(|g| normalize_gateway(g, namespace))
            .collect(),
        tls,
        tcp,
    })
}

/// The L4 table in force, compiled lazily per snapshot generation.
#[derive(Debug)]
pub struct L4Routes {
    table: ArcSwap<L4Table>,
}

impl Default for L4Routes {
    fn default() -> Self {
        L4Routes {
            table: ArcSwap::from_pointee(L4Table {
                // No snapshot has generation u64::MAX: the first call compiles.
                generation: u64::MAX,
                ..L4Table::default()
            }),
        }
    }
}

impl L4Routes {
    /// The table for `snapshot`: the cached one when its generation
    /// matches, else a fresh compile (kept for the next connections).
    pub fn table(&self, snapshot: &Snapshot) -> Arc<L4Table> {
        let current = self.table.load_full();
        if current.generation == snapshot.generation {
            return current;
        }
        let fresh = Arc::new(L4Table::compile(snapshot));
        self.table.store(Arc::clone(&fresh));
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SplitMix;
    use mesh_core::load::{LoadOptions, load_str};

    fn snapshot(yaml: &str) -> Snapshot {
        let loaded = load_str("vs.yaml", yaml, &LoadOptions::default());
        assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
        Snapshot::compile(1, loaded)
    }

    const YAML: &str = r#"
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: { name: db, namespace: shop }
spec:
  hosts: [db]
  tcp:
  - match: [{ port: 5432, sourceLabels: { app: billing } }]
    route: [{ destination: { host: db-billing } }]
  - match: [{ port: 5432 }]
    route:
    - { destination: { host: db, subset: v1 }, weight: 75 }
    - { destination: { host: db, subset: v2 }, weight: 25 }
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: { name: tls, namespace: shop }
spec:
  hosts: ["*.example.com"]
  tls:
  - match: [{ sniHosts: [a.example.com] }]
    route: [{ destination: { host: a-backend } }]
  - match: [{ sniHosts: ["*.b.example.com"], port: 443 }]
    route: [{ destination: { host: b-backend, port: { number: 8443 } } }]
"#;

    fn view<'a>(
        host: &'a str,
        port: u16,
        sni: Option<&'a str>,
        labels: &'a BTreeMap<String, String>,
    ) -> ConnectionView<'a> {
        ConnectionView {
            host,
            port,
            sni,
            destination_ip: None,
            source_ip: None,
            gateway: MESH,
            source_namespace: "shop",
            source_labels: labels,
        }
    }

    fn dest(d: L4Decision) -> (String, Option<String>, Option<u16>) {
        match d {
            L4Decision::Forward { destination, .. } => (
                destination.host.to_string(),
                destination.subset.map(|s| s.to_string()),
                destination.port,
            ),
            other => panic!("not forwarded: {other:?}"),
        }
    }

    #[test]
    fn tcp_rules_match_port_and_source_labels_in_order() {
        let snapshot = snapshot(YAML);
        let table = L4Table::compile(&snapshot);
        let random = SplitMix::seeded(1);
        let billing: BTreeMap<String, String> = [("app".into(), "billing".into())].into();
        let none = BTreeMap::new();
        assert_eq!(
            dest(table.decide(&view("db", 5432, None, &billing), &random)).0,
            "db-billing.shop.svc.cluster.local"
        );
        assert_eq!(
            dest(table.decide(
                &view("db.shop.svc.cluster.local:5432", 5432, None, &none),
                &random
            ))
            .0,
            "db.shop.svc.cluster.local"
        );
        // The VirtualService has tcp rules, none for this port.
        assert!(matches!(
            table.decide(&view("db", 6543, None, &none), &random),
            L4Decision::NoRoute { .. }
        ));
        // Another host: default routing.
        assert_eq!(
            table.decide(&view("cache", 6379, None, &none), &random),
            L4Decision::Default
        );
    }

    #[test]
    fn weights_are_drawn_per_connection() {
        let snapshot = snapshot(YAML);
        let table = L4Table::compile(&snapshot);
        let random = SplitMix::seeded(7);
        let none = BTreeMap::new();
        let n = 20_000;
        let v1 = (0..n)
            .filter(|_| {
                dest(table.decide(&view("db", 5432, None, &none), &random)).1
                    == Some("v1".to_owned())
            })
            .count();
        let sigma = (n as f64 * 0.75 * 0.25).sqrt();
        assert!((v1 as f64 - n as f64 * 0.75).abs() < 5.0 * sigma, "{v1}");
    }

    #[test]
    fn tls_rules_match_sni_with_wildcards() {
        let snapshot = snapshot(YAML);
        let table = L4Table::compile(&snapshot);
        let random = SplitMix::seeded(1);
        let none = BTreeMap::new();
        assert!(table.wants_sni("api.example.com", "shop", MESH));
        assert!(!table.wants_sni("db", "shop", MESH));
        assert_eq!(
            dest(table.decide(
                &view("api.example.com", 443, Some("a.example.com"), &none),
                &random
            ))
            .0,
            "a-backend.shop.svc.cluster.local"
        );
        assert_eq!(
            dest(table.decide(
                &view("api.example.com", 443, Some("x.b.example.com"), &none),
                &random
            )),
            ("b-backend.shop.svc.cluster.local".into(), None, Some(8443))
        );
        // Port condition of the second rule.
        assert_eq!(
            table.decide(
                &view("api.example.com", 8443, Some("x.b.example.com"), &none),
                &random
            ),
            L4Decision::Default
        );
        // No SNI: no tls rule can match.
        assert_eq!(
            table.decide(&view("api.example.com", 443, None, &none), &random),
            L4Decision::Default
        );
    }

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(
            Cidr::parse("10.0.0.1")
                .unwrap()
                .contains("10.0.0.1".parse().unwrap())
        );
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        let c6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(c6.contains("2001:db8::1".parse().unwrap()));
        assert!(!c6.contains("2001:db9::1".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(
            Cidr::parse("10.0.0.0/7")
                .unwrap()
                .contains("11.255.0.1".parse().unwrap())
        );
    }

    #[test]
    fn l4_routes_compile_once_per_generation() {
        let snapshot = snapshot(YAML);
        let routes = L4Routes::default();
        let a = routes.table(&snapshot);
        let b = routes.table(&snapshot);
        assert!(Arc::ptr_eq(&a, &b));
    }
}
