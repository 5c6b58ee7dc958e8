//! The lookup tables of a snapshot. Every table the request path touches is a
//! hash map keyed by the qualified host (see [`crate::host`]), so a lookup
//! costs the same with 10 hosts or 10,000.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::host::{for_each_candidate, qualify};
use crate::resource::{Kind, Resource, Spec};
use crate::schema::istio_networking::{
    DestinationRule, ServiceEntry, ServiceEntryLocation, ServiceEntryResolution, ServicePort,
    Subset, TrafficPolicy, VirtualService, WorkloadEntry,
};
use crate::schema::istio_operator::IstioOperator;

/// The hash map of the lookup tables: foldhash instead of SipHash, since
/// every request hashes a host name or two (keys come from configuration;
/// the hasher is still seeded per process).
pub type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// The gateway name that stands for "every sidecar" in a VirtualService.
pub const MESH_GATEWAY: &str = "mesh";

/// Lookup tables over one snapshot's resources.
#[derive(Debug, Default)]
pub struct Index {
    /// Sidecar route tables: qualified host (or `*.` wildcard) to the one
    /// VirtualService that governs it (SPEC 4.8: the earliest wins whole).
    pub mesh_routes: HashMap<String, Arc<Resource>>,
    /// The `*.` wildcard entries of `mesh_routes`, keyed by the suffix after
    /// the `*` (`.example.com`; `""` for a bare `*`).
    pub mesh_wildcards: HashMap<String, Arc<Resource>>,
    /// Gateway route tables: `namespace/gateway` to host to the
    /// VirtualServices bound there, merged in order (SPEC 4.8).
    pub gateway_routes: HashMap<String, HashMap<String, Vec<Arc<Resource>>>>,
    /// Istio Gateways by `namespace/name`.
    pub gateways: HashMap<String, Arc<Resource>>,
    /// Destination policy (merged DestinationRules) by qualified host.
    pub destinations: HashMap<String, DestinationPolicy>,
    /// The service registry (ServiceEntry + WorkloadEntry) by qualified host.
    pub services: HashMap<String, Service>,
    /// Endpoints of each (host, subset) pair some DestinationRule defines.
    pub subset_endpoints: HashMap<(String, String), Arc<[Endpoint]>>,
    /// Linkerd ServiceProfiles by the service FQDN they are named after.
    pub service_profiles: HashMap<String, Arc<Resource>>,
    /// Gateway API and Linkerd HTTPRoutes / GRPCRoutes, in load order;
    /// attachment to parents is resolved by the routing layer.
    pub xroutes: Vec<Arc<Resource>>,
    /// The IstioOperator whose `meshConfig` applies, if any.
    pub mesh_config: Option<Arc<Resource>>,
    /// Security and telemetry resources by namespace, in load order.
    pub namespaces: HashMap<String, NamespacePolicies>,
}

/// Merged DestinationRules of one host.
#[derive(Clone, Debug, Default)]
pub struct DestinationPolicy {
    /// The rules, in merge order.
    pub rules: Vec<Arc<Resource>>,
    /// The first rule's top-level traffic policy (SPEC 4.8).
    pub traffic_policy: Option<TrafficPolicy>,
    /// Subsets by name; the first definition of a name wins.
    pub subsets: HashMap<String, Subset>,
}

/// One service of the registry.
#[derive(Clone, Debug)]
pub struct Service {
    /// Its qualified host.
    pub host: String,
    /// The namespace of the ServiceEntry that defines it.
    pub namespace: String,
    /// Ports as the ServiceEntry lists them.
    pub ports: Vec<ServicePort>,
    /// MESH_EXTERNAL or MESH_INTERNAL.
    pub location: ServiceEntryLocation,
    /// How endpoints are found.
    pub resolution: ServiceEntryResolution,
    /// Endpoints (STATIC entries and selected WorkloadEntries; for DNS
    /// entries without endpoints the host name, for NONE a placeholder named
    /// after the host: see `host_endpoint`).
    pub endpoints: Arc<[Endpoint]>,
    /// The ServiceEntry.
    pub source: Arc<Resource>,
}

/// One endpoint of a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// IP address, host name (DNS resolution) or `unix://` path.
    pub address: String,
    /// Port name to port number on this endpoint; empty means "the service
    /// port number".
    pub ports: BTreeMap<String, u32>,
    /// Labels, which DestinationRule subsets select on.
    pub labels: BTreeMap<String, String>,
    /// Load-balancing weight (default 1).
    pub weight: u32,
    /// The workload's service account, for identity checks.
    pub service_account: Option<String>,
}

impl Endpoint {
    /// The port to dial for the service port `port`.
    pub fn port_for(&self, port: &ServicePort) -> u32 {
        self.ports
            .get(&port.name)
            .copied()
            .or(port.target_port)
            .unwrap_or(port.number)
    }

    fn from_entry(entry: &WorkloadEntry) -> Endpoint {
        Endpoint {
            address: entry.address.clone(),
            ports: entry.ports.clone(),
            labels: entry.labels.clone(),
            weight: entry.weight.filter(|w| *w > 0).unwrap_or(1),
            service_account: entry.service_account.clone(),
        }
    }
}

/// The endpoint a host stands for when its ServiceEntry lists none (SPEC
/// 6.2): with resolution DNS or DNS_ROUND_ROBIN the host name itself,
/// resolved by the connector's DNS stage; with NONE or DYNAMIC_DNS a
/// placeholder named after the host, for which the connector dials the
/// request's own destination instead. The address is the host as written
/// (lower-cased, no trailing dot), since that is the name DNS knows, not
/// the mesh's qualified form. `None` when the entry's own endpoints apply.
fn host_endpoint(
    resolution: ServiceEntryResolution,
    written: &str,
    listed: &[Endpoint],
) -> Option<Endpoint> {
    let own = match resolution {
        ServiceEntryResolution::Dns | ServiceEntryResolution::DnsRoundRobin => {
            listed.is_empty() && !written.starts_with('*')
        }
        ServiceEntryResolution::None | ServiceEntryResolution::DynamicDns => true,
        ServiceEntryResolution::Static => false,
    };
    own.then(|| Endpoint {
        address: written.trim_end_matches('.').to_ascii_lowercase(),
        ports: BTreeMap::new(),
        labels: BTreeMap::new(),
        weight: 1,
        service_account: None,
    })
}

/// Policies that apply by namespace (and selector).
#[derive(Clone, Debug, Default)]
pub struct NamespacePolicies {
    /// PeerAuthentications.
    pub peer_authentications: Vec<Arc<Resource>>,
    /// Istio AuthorizationPolicies.
    pub authorization_policies: Vec<Arc<Resource>>,
    /// RequestAuthentications.
    pub request_authentications: Vec<Arc<Resource>>,
    /// Telemetry resources.
    pub telemetry: Vec<Arc<Resource>>,
    /// Linkerd policy resources (Server, ServerAuthorization,
    /// AuthorizationPolicy, authentications, rate limits).
    pub linkerd_policies: Vec<Arc<Resource>>,
}

/// Orders resources for "the earliest wins": creation time when set (those
/// with one first), then load order.
pub(crate) fn precedence(a: &Resource, b: &Resource) -> Ordering {
    match (&a.meta.creation_timestamp, &b.meta.creation_timestamp) {
        (Some(x), Some(y)) => x.cmp(y).then(a.order.cmp(&b.order)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.order.cmp(&b.order),
    }
}

/// Whether a VirtualService applies to sidecars (`gateways` empty or naming `mesh`).
pub fn binds_mesh(vs: &VirtualService) -> bool {
    vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == MESH_GATEWAY)
}

/// `namespace/name` of a gateway reference written in a resource of `namespace`.
pub fn gateway_key(reference: &str, namespace: &str) -> String {
    if reference.contains('/') {
        reference.to_owned()
    } else {
        format!("{namespace}/{reference}")
    }
}

/// For each host, the sidecar VirtualServices that name it, earliest first.
/// Shared by the index (the first governs) and validation (the rest are
/// reported as conflicts).
pub(crate) fn mesh_route_claims<'r>(
    resources: impl Iterator<Item = &'r Resource>,
) -> HashMap<String, Vec<(&'r Resource, usize)>> {
    let mut claims: HashMap<String, Vec<(&Resource, usize)>> = HashMap::default();
    for r in resources {
        let Spec::VirtualService(vs) = &r.spec else {
            continue;
        };
        if !binds_mesh(vs) {
            continue;
        }
        for (i, host) in vs.hosts.iter().enumerate() {
            claims
                .entry(qualify(host, r.namespace()))
                .or_default()
                .push((r, i));
        }
    }
    for list in claims.values_mut() {
        list.sort_by(|a, b| precedence(a.0, b.0));
        list.dedup_by(|a, b| std::ptr::eq(a.0, b.0));
    }
    claims
}

impl Index {
    /// Builds the tables from validated resources.
    pub fn build(resources: &[Arc<Resource>]) -> Index {
        let mut index = Index::default();
        let by_ptr: HashMap<*const Resource, &Arc<Resource>> =
            resources.iter().map(|r| (Arc::as_ptr(r), r)).collect();
        for (host, claims) in mesh_route_claims(resources.iter().map(|r| &**r)) {
            if let Some(winner) = claims
                .first()
                .and_then(|(r, _)| by_ptr.get(&std::ptr::from_ref(*r)))
            {
                if let Some(suffix) = host.strip_prefix('*') {
                    index
                        .mesh_wildcards
                        .insert(suffix.to_owned(), Arc::clone(winner));
                }
                index.mesh_routes.insert(host, Arc::clone(winner));
            }
        }
        let mut operators: Vec<&Arc<Resource>> = Vec::new();
        for r in resources {
            let ns = r.namespace();
            match &r.spec {
                Spec::VirtualService(vs) => index.add_gateway_routes(r, vs),
                Spec::Gateway(_) => {
                    index
                        .gateways
                        .insert(format!("{ns}/{}", r.name()), Arc::clone(r));
                }
                Spec::DestinationRule(dr) => index.add_destination_rule(r, dr),
                Spec::ServiceProfile(_) => {
                    index
                        .service_profiles
                        .insert(r.name().to_ascii_lowercase(), Arc::clone(r));
                }
                Spec::HttpRoute(_) | Spec::LinkerdHttpRoute(_) | Spec::GrpcRoute(_) => {
                    index.xroutes.push(Arc::clone(r));
                }
                Spec::IstioOperator(_) => operators.push(r),
                _ => {}
            }
            let list: fn(&mut NamespacePolicies) -> &mut Vec<Arc<Resource>> = match r.kind {
                Kind::PeerAuthentication => |p| &mut p.peer_authentications,
                Kind::AuthorizationPolicy => |p| &mut p.authorization_policies,
                Kind::RequestAuthentication => |p| &mut p.request_authentications,
                Kind::Telemetry => |p| &mut p.telemetry,
                Kind::Server
                | Kind::ServerAuthorization
                | Kind::LinkerdAuthorizationPolicy
                | Kind::MeshTlsAuthentication
                | Kind::NetworkAuthentication
                | Kind::HttpLocalRateLimitPolicy => |p| &mut p.linkerd_policies,
                _ => continue,
            };
            let policies = match index.namespaces.get_mut(ns) {
                Some(p) => p,
                None => index.namespaces.entry(ns.to_owned()).or_default(),
            };
            list(policies).push(Arc::clone(r));
        }
        operators.sort_by(|a, b| precedence(a, b));
        index.mesh_config = operators.first().map(|r| Arc::clone(r));
        index.build_registry(resources);
        index.build_subset_endpoints();
        index
    }

    fn add_gateway_routes(&mut self, r: &Arc<Resource>, vs: &VirtualService) {
        for gw in vs.gateways.iter().filter(|g| *g != MESH_GATEWAY) {
            let table = self
                .gateway_routes
                .entry(gateway_key(gw, r.namespace()))
                .or_default();
            for host in &vs.hosts {
                table
                    .entry(qualify(host, r.namespace()))
                    .or_default()
                    .push(Arc::clone(r));
            }
        }
    }

    fn add_destination_rule(&mut self, r: &Arc<Resource>, dr: &DestinationRule) {
        let policy = self
            .destinations
            .entry(qualify(&dr.host, r.namespace()))
            .or_default();
        policy.rules.push(Arc::clone(r));
        if policy.traffic_policy.is_none() {
            policy.traffic_policy.clone_from(&dr.traffic_policy);
        }
        for subset in &dr.subsets {
            policy
                .subsets
                .entry(subset.name.clone())
                .or_insert_with(|| subset.clone());
        }
    }

    fn build_registry(&mut self, resources: &[Arc<Resource>]) {
        let workload_entries: Vec<(&Resource, &WorkloadEntry)> = resources
            .iter()
            .filter_map(|r| match &r.spec {
                Spec::WorkloadEntry(we) => Some((&**r, we)),
                _ => None,
            })
            .collect();
        let mut entries: Vec<(&Arc<Resource>, &ServiceEntry)> = resources
            .iter()
            .filter_map(|r| match &r.spec {
                Spec::ServiceEntry(se) => Some((r, se)),
                _ => None,
            })
            .collect();
        entries.sort_by(|a, b| precedence(a.0, b.0));
        for (r, se) in entries {
            let ns = r.namespace();
            let mut endpoints: Vec<Endpoint> =
                se.endpoints.iter().map(Endpoint::from_entry).collect();
            if let Some(selector) = &se.workload_selector {
                endpoints.extend(
                    workload_entries
                        .iter()
                        .filter(|(wr, we)| {
                            wr.namespace() == ns
                                && selector
                                    .labels
                                    .iter()
                                    .all(|(k, v)| we.labels.get(k) == Some(v))
                        })
                        .map(|(_, we)| Endpoint::from_entry(we)),
                );
            }
            let endpoints: Arc<[Endpoint]> = endpoints.into();
            let resolution = se.resolution.unwrap_or(ServiceEntryResolution::None);
            for written in &se.hosts {
                let host = qualify(written, ns);
                if self.services.contains_key(&host) {
                    // The earliest ServiceEntry for a host wins, like routes.
                    continue;
                }
                let endpoints = match host_endpoint(resolution, written, &endpoints) {
                    Some(own) => Arc::from([own]),
                    None => Arc::clone(&endpoints),
                };
                self.services.insert(
                    host.clone(),
                    Service {
                        host,
                        namespace: ns.to_owned(),
                        ports: se.ports.clone(),
                        location: se.location.unwrap_or(ServiceEntryLocation::MeshExternal),
                        resolution,
                        endpoints,
                        source: Arc::clone(r),
                    },
                );
            }
        }
    }

    fn build_subset_endpoints(&mut self) {
        for (host, policy) in &self.destinations {
            let Some(service) = self.services.get(host) else {
                continue;
            };
            for (name, subset) in &policy.subsets {
                let selected: Arc<[Endpoint]> = service
                    .endpoints
                    .iter()
                    .filter(|e| {
                        subset
                            .labels
                            .iter()
                            .all(|(k, v)| e.labels.get(k) == Some(v))
                    })
                    .cloned()
                    .collect();
                self.subset_endpoints
                    .insert((host.clone(), name.clone()), selected);
            }
        }
    }

    /// The sidecar route table (VirtualService) for a request's authority,
    /// from a caller in `caller_namespace`: exact names first, then the most
    /// specific `*.` wildcard. A few hash lookups and no allocation, whatever
    /// the table size.
    pub fn mesh_route(&self, authority: &str, caller_namespace: &str) -> Option<&Arc<Resource>> {
        let mut most_specific_len = 0;
        let mut wildcard: Option<&Arc<Resource>> = None;
        let found = for_each_candidate(authority, caller_namespace, |c| {
            if most_specific_len == 0 {
                most_specific_len = c.len();
                if !self.mesh_wildcards.is_empty() {
                    wildcard = self.wildcard_route(c);
                }
            }
            self.mesh_routes.get(c)
        });
        found.or(wildcard)
    }

    fn wildcard_route(&self, host: &str) -> Option<&Arc<Resource>> {
        // `a.b.example.com` tries `*.b.example.com`, `*.example.com`, `*.com`,
        // then `*`; a pattern is looked up by its suffix after the `*`.
        host.match_indices('.')
            .find_map(|(i, _)| self.mesh_wildcards.get(&host[i..]))
            .or_else(|| self.mesh_wildcards.get(""))
    }

    /// The qualified host a caller in `caller_namespace` means by `authority`:
    /// the first spelling the registry or a route table knows, else the most
    /// specific reading.
    pub fn resolve_host(&self, authority: &str, caller_namespace: &str) -> String {
        let mut first: Option<String> = None;
        for_each_candidate(authority, caller_namespace, |c| {
            if first.is_none() {
                first = Some(c.to_owned());
            }
            (self.services.contains_key(c)
                || self.mesh_routes.contains_key(c)
                || self.destinations.contains_key(c))
            .then(|| c.to_owned())
        })
        .or(first)
        .unwrap_or_default()
    }

    /// Endpoints of `host`, or of one of its subsets. `None` when the subset
    /// is not defined (SPEC 2: 503 NC) or the host is unknown.
    pub fn endpoints(&self, host: &str, subset: Option<&str>) -> Option<&Arc<[Endpoint]>> {
        match subset {
            None => self.services.get(host).map(|s| &s.endpoints),
            Some(name) => self
                .subset_endpoints
                .get(&(host.to_owned(), name.to_owned())),
        }
    }

    /// The `meshConfig` in force, if an IstioOperator was loaded.
    pub fn istio_operator(&self) -> Option<&IstioOperator> {
        match self.mesh_config.as_ref().map(|r| &r.spec) {
            Some(Spec::IstioOperator(op)) => Some(op),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::load::{LoadOptions, load_str};
    use crate::schema::istio_networking::{ServiceEntryLocation, ServiceEntryResolution};
    use crate::snapshot::Snapshot;

    #[test]
    fn dns_and_none_entries_get_endpoints() {
        let yaml = r#"
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: { name: api }
spec:
  hosts: [api.external.com, Other.External.com]
  ports: [{ number: 443, name: https, protocol: HTTPS }]
  location: MESH_EXTERNAL
  resolution: DNS
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: { name: listed }
spec:
  hosts: [db.example.com]
  ports: [{ number: 5432, name: pg, protocol: TCP }]
  resolution: DNS
  endpoints: [{ address: localhost }, { address: 10.0.0.1 }]
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: { name: wild }
spec:
  hosts: ["*.wikipedia.org"]
  ports: [{ number: 443, name: tls, protocol: TLS }]
  resolution: NONE
"#;
        let loaded = load_str("se.yaml", yaml, &LoadOptions::default());
        assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
        let snapshot = Snapshot::compile(1, loaded);
        let index = &snapshot.index;
        let api = &index.services["api.external.com"];
        assert_eq!(api.location, ServiceEntryLocation::MeshExternal);
        assert_eq!(api.resolution, ServiceEntryResolution::Dns);
        let addresses = |host: &str| -> Vec<String> {
            index.services[host]
                .endpoints
                .iter()
                .map(|e| e.address.clone())
                .collect()
        };
        // Each host of a DNS entry without endpoints resolves itself.
        assert_eq!(addresses("api.external.com"), ["api.external.com"]);
        assert_eq!(addresses("other.external.com"), ["other.external.com"]);
        // Listed endpoints are kept as written.
        assert_eq!(addresses("db.example.com"), ["localhost", "10.0.0.1"]);
        // NONE: one placeholder per host; the connector dials the request's
        // own destination.
        assert_eq!(addresses("*.wikipedia.org"), ["*.wikipedia.org"]);
        assert_eq!(
            index.services["*.wikipedia.org"].resolution,
            ServiceEntryResolution::None
        );
    }
}
