//! The routing table of one snapshot: every sidecar VirtualService compiled
//! once, keyed by the hosts it governs, plus the balancers of every
//! destination, kept across reloads.
//!
//! A new table is compiled off the request path whenever a new snapshot
//! arrives and swapped in whole; requests load it with one atomic read.
//! Balancers carry runtime state (round-robin cursors, in-flight counts), so
//! they live in a [`Balancers`] registry that outlives tables: a destination
//! whose endpoints and policy did not change keeps its balancer.
//!
//! The table also answers what happens to a host the registry does not
//! know ([`RoutingTable::egress`]): meshConfig `outboundTrafficPolicy.mode`
//! (SPEC 6.2) read once per snapshot, shared by the HTTP route stage, the
//! TCP/`CONNECT` path and `mesh explain` so the three cannot disagree. An
//! HTTP request to such a host gets the default route with Istio's cluster
//! name as its destination, [`PASSTHROUGH_CLUSTER`] (`ALLOW_ANY`: the
//! balance stage dials the caller's own `host:port`) or
//! [`BLACKHOLE_CLUSTER`] (`REGISTRY_ONLY`: 502), so every unknown host
//! shares one pool, outlier and budget entry, as Envoy's PassthroughCluster
//! does, instead of leaving per-host state behind.

use std::hash::BuildHasher;
use std::sync::Arc;

use arc_swap::ArcSwap;
use mesh_core::host::{for_each_candidate, strip_port};
use mesh_core::http::MeshError;
use mesh_core::resource::Resource;
use mesh_core::schema::istio_networking::{
    LoadBalancerSettings, ServiceEntryResolution, ServicePort,
};
use mesh_core::schema::istio_operator::OutboundMode;
// Every per-request map here is foldhash's: a request hashes a host name
// and a destination key on its way, and SipHash cost ~600 instructions
// per request for that (keys come from configuration; still seeded).
use mesh_core::snapshot::{Endpoint, HashMap, Index, Snapshot};

use crate::balance::{Balancer, LbPolicy};
use crate::decision::{DestinationKey, RouteDecision};
use crate::matcher::{CompileError, CompiledVirtualService, RequestView};
use crate::profile::CompiledProfile;
use crate::random::{RandomSource, SharedRandom};

/// The gateway name sidecars route as.
pub const MESH: &str = "mesh";

/// The destination of the default route of a host outside the registry
/// under `ALLOW_ANY`: the request goes to the `host:port` the caller named
/// (Istio's cluster name; never a qualified host, which is lower case).
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";

/// The destination of the default route of a host outside the registry
/// under `REGISTRY_ONLY`: the request is answered 502 (SPEC 2).
pub const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";

/// Compiled sidecar routes of one snapshot.
#[derive(Debug)]
pub struct RoutingTable {
    /// The snapshot it was compiled from.
    pub snapshot: Arc<Snapshot>,
    exact: HashMap<String, Arc<CompiledVirtualService>>,
    wildcard: HashMap<String, Arc<CompiledVirtualService>>,
    /// VirtualServices that validated but did not compile (their hosts fall
    /// back to default routing); reported by `/config_dump`.
    pub errors: Vec<CompileError>,
    /// Ingress gateway routes (Istio Gateway servers and the VirtualServices
    /// bound to them); gateway listeners decide with these.
    pub gateways: crate::gateway::GatewayRoutes,
    /// Linkerd ServiceProfiles by the service FQDN they are named after.
    profiles: HashMap<String, Arc<CompiledProfile>>,
    /// Gateway API and Linkerd HTTPRoutes: Service parents (decided before
    /// VirtualServices, see `xroute`) and Gateway parents (`for_gateway`).
    pub xroutes: crate::xroute::XRouteTable,
    /// meshConfig `outboundTrafficPolicy.mode` of the snapshot.
    outbound_mode: OutboundMode,
    /// `*.` ServiceEntry hosts by the suffix after the `*` (`.example.com`),
    /// with their resolution: the hosts they cover are registered too.
    wildcard_services: HashMap<String, ServiceEntryResolution>,
    /// The default routes to [`PASSTHROUGH_CLUSTER`] and
    /// [`BLACKHOLE_CLUSTER`], built once: a request cloning one allocates
    /// nothing.
    passthrough: RouteDecision,
    blackhole: RouteDecision,
}

/// What the registry says about a host a request or connection is sent to
/// when no route names a destination for it (SPEC 6.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Egress {
    /// A ServiceEntry / WorkloadEntry host: balanced over its endpoints.
    Registered,
    /// To the original destination, the host and port the caller named:
    /// the host is unknown and `outboundTrafficPolicy.mode` is `ALLOW_ANY`
    /// (Istio's PassthroughCluster), or a `*.` ServiceEntry with resolution
    /// NONE or DYNAMIC_DNS covers it.
    Passthrough,
    /// Unknown under `REGISTRY_ONLY`: refused (HTTP 502; TCP and TLS
    /// connections closed, a `CONNECT` answered 502).
    Blocked,
}

/// meshConfig `outboundTrafficPolicy.mode` of the IstioOperator in `index`;
/// `ALLOW_ANY`, Istio's default, without one.
pub fn outbound_traffic_mode(index: &Index) -> OutboundMode {
    index
        .istio_operator()
        .and_then(|op| op.mesh_config.as_ref())
        .and_then(|m| m.outbound_traffic_policy.as_ref())
        .and_then(|p| p.mode)
        .unwrap_or_default()
}

impl RoutingTable {
    /// Compiles the sidecar VirtualServices of `snapshot`.
    pub fn compile(snapshot: Arc<Snapshot>) -> RoutingTable {
        let mut compiled: HashMap<*const Resource, Arc<CompiledVirtualService>> =
            HashMap::default();
        let mut exact = HashMap::default();
        let mut wildcard = HashMap::default();
        let mut errors = Vec::new();
        for (host, resource) in &snapshot.index.mesh_routes {
            let key = Arc::as_ptr(resource);
            let vs = match compiled.get(&key) {
                Some(vs) => Arc::clone(vs),
                None => match CompiledVirtualService::compile(resource) {
                    Ok(vs) => {
                        let vs = Arc::new(vs);
                        compiled.insert(key, Arc::clone(&vs));
                        vs
                    }
                    Err(e) => {
                        tracing::warn!("{e}");
                        errors.push(e);
                        continue;
                    }
                },
            };
            match host.strip_prefix('*') {
                Some(suffix) => wildcard.insert(suffix.to_owned(), vs),
                None => exact.insert(host.clone(), vs),
            };
        }
        let mut profiles = HashMap::default();
        for (host, resource) in &snapshot.index.service_profiles {
            match CompiledProfile::compile(resource) {
                Ok(p) => {
                    profiles.insert(host.clone(), Arc::new(p));
                }
                Err(e) => {
                    tracing::warn!("{e}");
                    errors.push(e);
                }
            }
        }
        let wildcard_services = snapshot
            .index
            .services
            .iter()
            .filter_map(|(host, s)| Some((host.strip_prefix('*')?.to_owned(), s.resolution)))
            .collect();
        RoutingTable {
            gateways: crate::gateway::GatewayRoutes::compile(&snapshot),
            xroutes: crate::xroute::XRouteTable::compile(&snapshot),
            outbound_mode: outbound_traffic_mode(&snapshot.index),
            snapshot,
            exact,
            wildcard,
            errors,
            profiles,
            wildcard_services,
            passthrough: RouteDecision::default_route(PASSTHROUGH_CLUSTER),
            blackhole: RouteDecision::default_route(BLACKHOLE_CLUSTER),
        }
    }

    /// meshConfig `outboundTrafficPolicy.mode` in force.
    pub fn outbound_mode(&self) -> OutboundMode {
        self.outbound_mode
    }

    /// Where traffic to `host` (the qualified host a default route forwards
    /// to) goes when no route names a destination for it; `authority` is
    /// what the caller named (`host[:port]`), which wildcard ServiceEntries
    /// are matched against. One hash lookup for a registered host; no
    /// allocation unless the name has upper-case letters and a wildcard
    /// ServiceEntry exists.
    ///
    /// A `*.` ServiceEntry with another resolution (DNS or STATIC with
    /// endpoints) counts as [`Egress::Registered`]; its endpoints are not
    /// used for the hosts it covers yet, so those still answer 503 UH.
    pub fn egress(&self, host: &str, authority: &str) -> Egress {
        if self.snapshot.index.services.contains_key(host) {
            return Egress::Registered;
        }
        if !self.wildcard_services.is_empty() {
            let name = strip_port(authority).trim_end_matches('.');
            let lower;
            let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
                lower = name.to_ascii_lowercase();
                lower.as_str()
            } else {
                name
            };
            let covering = name
                .match_indices('.')
                .find_map(|(i, _)| self.wildcard_services.get(&name[i..]));
            match covering {
                Some(ServiceEntryResolution::None | ServiceEntryResolution::DynamicDns) => {
                    return Egress::Passthrough;
                }
                Some(_) => return Egress::Registered,
                None => {}
            }
        }
        match self.outbound_mode {
            OutboundMode::AllowAny => Egress::Passthrough,
            OutboundMode::RegistryOnly => Egress::Blocked,
        }
    }

    /// The ServiceProfile of a service, by its qualified host. Besides
    /// routing hosts without a VirtualService, its retry budget caps the
    /// retries of VirtualService routes to that host.
    pub fn profile(&self, host: &str) -> Option<&Arc<CompiledProfile>> {
        if self.profiles.is_empty() {
            return None;
        }
        self.profiles.get(host)
    }

    /// The VirtualService governing `authority` for a caller in
    /// `namespace`: exact names first, then the most specific wildcard.
    pub fn virtual_service(
        &self,
        authority: &str,
        namespace: &str,
    ) -> Option<&Arc<CompiledVirtualService>> {
        lookup_host(&self.exact, &self.wildcard, authority, namespace)
    }

    /// The route decision for a request (SPEC 1.1 steps 1 and 2): the
    /// governing VirtualService's first matching rule, 404 NR when it has
    /// rules and none match; when no VirtualService applies, the first
    /// matching route of the host's ServiceProfile (its default route when
    /// none matches), else the host's default route: to the host when the
    /// registry knows it, else to [`PASSTHROUGH_CLUSTER`] or
    /// [`BLACKHOLE_CLUSTER`] as [`RoutingTable::egress`] says.
    pub fn decide(&self, req: &RequestView<'_>, random: &dyn RandomSource) -> RouteDecision {
        // An HTTPRoute attached to the addressed Service governs it (xroute).
        if let Some(decision) = self.xroutes.decide_mesh(req, random) {
            return decision;
        }
        if let Some(vs) = self.virtual_service(req.authority, req.source_namespace)
            && vs.applies_to(req.gateway)
        {
            return vs.route(req, random);
        }
        // SPEC 1.1 step 1: no VirtualService governs the host; its
        // ServiceProfile, if any, is the route table (SPEC 13.1).
        if !self.profiles.is_empty()
            && let Some(profile) = for_each_candidate(req.authority, req.source_namespace, |c| {
                self.profiles.get(c)
            })
        {
            return profile.route(req);
        }
        let host = self
            .snapshot
            .index
            .resolve_host(req.authority, req.source_namespace);
        match self.egress(&host, req.authority) {
            Egress::Registered => RouteDecision::default_route(&host),
            Egress::Passthrough => self.passthrough.clone(),
            Egress::Blocked => self.blackhole.clone(),
        }
    }
}

/// The entry governing `authority` for a caller in `namespace`, from
/// tables keyed by qualified host: an exact name first (in the order
/// `for_each_candidate` qualifies it), else the most specific wildcard,
/// keyed by its suffix (`*.example.com` under `.example.com`, `*` under
/// the empty string). Allocation-free; any hasher (the TCP route table
/// keeps std's).
pub(crate) fn lookup_host<'t, T, H: BuildHasher>(
    exact: &'t std::collections::HashMap<String, T, H>,
    wildcard: &'t std::collections::HashMap<String, T, H>,
    authority: &str,
    namespace: &str,
) -> Option<&'t T> {
    let mut wild = None;
    let mut first = true;
    for_each_candidate(authority, namespace, |c| {
        if first && !wildcard.is_empty() {
            wild = c
                .match_indices('.')
                .find_map(|(i, _)| wildcard.get(&c[i..]))
                .or_else(|| wildcard.get(""));
        }
        first = false;
        exact.get(c)
    })
    .or(wild)
}

/// Where a destination's traffic goes: its endpoints, the service port the
/// request addresses, and the balancer that picks among them.
#[derive(Clone, Debug)]
pub struct ResolvedDestination<'t> {
    /// The balancer (and through it, the endpoints).
    pub balancer: Arc<Balancer>,
    /// The service port addressed, when the registry knows the service:
    /// borrowed from the table's snapshot (a clone would copy its name and
    /// protocol strings on every request).
    pub port: Option<&'t ServicePort>,
}

struct Entry {
    generation: u64,
    policy: LbPolicy,
    balancer: Arc<Balancer>,
}

/// Balancers by destination, surviving reloads while a destination's
/// endpoints and load-balancing policy stay the same.
pub struct Balancers {
    entries: ArcSwap<HashMap<DestinationKey, Arc<Entry>>>,
    random: SharedRandom,
}

impl std::fmt::Debug for Balancers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancers")
            .field("destinations", &self.entries.load().len())
            .finish()
    }
}

impl Balancers {
    /// An empty registry drawing from `random`.
    pub fn new(random: SharedRandom) -> Self {
        Balancers {
            entries: ArcSwap::from_pointee(HashMap::default()),
            random,
        }
    }

    /// The balancer and port for `dest` under `table`'s snapshot. 503 NC for
    /// an undefined subset, 503 UH for a host without endpoints.
    pub fn resolve<'t>(
        &self,
        table: &'t RoutingTable,
        dest: &DestinationKey,
        request_port: Option<u16>,
    ) -> Result<ResolvedDestination<'t>, MeshError> {
        let snapshot = &table.snapshot;
        let index = &snapshot.index;
        let host: &str = &dest.host;
        let service = index.services.get(host);
        let port = service.and_then(|s| pick_port(&s.ports, dest.port.or(request_port)));
        let entries = self.entries.load();
        if let Some(entry) = entries.get(dest)
            && entry.generation == snapshot.generation
        {
            return Ok(ResolvedDestination {
                balancer: Arc::clone(&entry.balancer),
                port,
            });
        }
        let endpoints = resolve_endpoints(snapshot, dest)?;
        let policy = lb_policy(snapshot, dest);
        let balancer = match entries.get(dest) {
            // Same endpoints and policy as before the reload: keep the
            // balancer and its state.
            Some(old) if old.policy == policy && **old.balancer.endpoints() == *endpoints => {
                Arc::clone(&old.balancer)
            }
            _ => Arc::new(Balancer::new(
                policy.clone(),
                endpoints,
                Arc::clone(&self.random),
            )),
        };
        let entry = Arc::new(Entry {
            generation: snapshot.generation,
            policy,
            balancer: Arc::clone(&balancer),
        });
        self.entries.rcu(|current| {
            let mut next = HashMap::clone(current);
            next.insert(dest.clone(), Arc::clone(&entry));
            next
        });
        Ok(ResolvedDestination { balancer, port })
    }

    /// The random source balancers draw from.
    pub fn random(&self) -> &dyn RandomSource {
        &*self.random
    }
}

fn resolve_endpoints(
    snapshot: &Snapshot,
    dest: &DestinationKey,
) -> Result<Arc<[Endpoint]>, MeshError> {
    let index = &snapshot.index;
    let host: &str = &dest.host;
    let endpoints = match &dest.subset {
        Some(subset) => {
            let defined = index
                .destinations
                .get(host)
                .is_some_and(|p| p.subsets.contains_key(&**subset));
            if !defined {
                return Err(MeshError::NoCluster(format!("{host} subset {subset}")));
            }
            index.endpoints(host, Some(subset)).cloned()
        }
        None => index.endpoints(host, None).cloned(),
    };
    match endpoints {
        Some(e) if !e.is_empty() => Ok(e),
        _ => Err(MeshError::NoHealthyUpstream(match &dest.subset {
            Some(s) => format!("{host} subset {s}"),
            None => host.to_owned(),
        })),
    }
}

/// The load-balancing policy of a destination: the subset's setting, else
/// the DestinationRule's top-level one, else LEAST_REQUEST (SPEC 5.1, 5.2).
pub(crate) fn lb_policy(snapshot: &Snapshot, dest: &DestinationKey) -> LbPolicy {
    let Some(policy) = snapshot.index.destinations.get(&*dest.host) else {
        return LbPolicy::default();
    };
    let subset_lb: Option<&LoadBalancerSettings> = dest
        .subset
        .as_ref()
        .and_then(|s| policy.subsets.get(&**s))
        .and_then(|s| s.traffic_policy.as_ref())
        .and_then(|tp| tp.load_balancer.as_ref());
    let top_lb = policy
        .traffic_policy
        .as_ref()
        .and_then(|tp| tp.load_balancer.as_ref());
    subset_lb
        .or(top_lb)
        .and_then(|lb| LbPolicy::try_from(lb).ok())
        .unwrap_or_default()
}

/// The service port a request addresses: the one with that number, or the
/// only port when the number is unknown or absent.
pub(crate) fn pick_port(ports: &[ServicePort], number: Option<u16>) -> Option<&ServicePort> {
    match number {
        Some(n) => ports
            .iter()
            .find(|p| p.number == u32::from(n))
            .or_else(|| (ports.len() == 1).then(|| &ports[0])),
        None => ports.first(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::load::{LoadOptions, load_str};

    fn table(yaml: &str) -> RoutingTable {
        let loaded = load_str("egress.yaml", yaml, &LoadOptions::default());
        assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
        RoutingTable::compile(Arc::new(Snapshot::compile(1, loaded)))
    }

    const ENTRIES: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n\
        metadata: { name: known, namespace: default }\nspec:\n  hosts: [known]\n\
        \x20 resolution: STATIC\n  ports: [{ number: 80, name: http, protocol: HTTP }]\n\
        \x20 endpoints: [{ address: 10.0.0.1 }]\n---\n\
        apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n\
        metadata: { name: wild, namespace: default }\nspec:\n  hosts: [\"*.wikipedia.org\"]\n\
        \x20 resolution: NONE\n  ports: [{ number: 80, name: http, protocol: HTTP }]\n";

    const REGISTRY_ONLY: &str = "---\napiVersion: install.istio.io/v1alpha1\n\
        kind: IstioOperator\nmetadata: { name: mesh }\nspec:\n  meshConfig:\n\
        \x20   outboundTrafficPolicy: { mode: REGISTRY_ONLY }\n";

    #[test]
    fn unknown_hosts_follow_the_outbound_traffic_policy() {
        let open = table(ENTRIES);
        assert_eq!(open.outbound_mode(), OutboundMode::AllowAny);
        let closed = table(&format!("{ENTRIES}{REGISTRY_ONLY}"));
        assert_eq!(closed.outbound_mode(), OutboundMode::RegistryOnly);
        for t in [&open, &closed] {
            assert_eq!(
                t.egress("known.default.svc.cluster.local", "known:80"),
                Egress::Registered
            );
            // A wildcard ServiceEntry with resolution NONE registers the
            // hosts it covers, to their original destination.
            for authority in [
                "en.wikipedia.org",
                "EN.Wikipedia.org:80",
                "a.b.wikipedia.org.",
            ] {
                assert_eq!(
                    t.egress(&authority.to_ascii_lowercase(), authority),
                    Egress::Passthrough,
                    "{authority}"
                );
            }
        }
        for (host, authority) in [
            ("httpbin.org", "httpbin.org"),
            ("wikipedia.org", "wikipedia.org:80"),
            ("reviews.default.svc.cluster.local", "reviews"),
        ] {
            assert_eq!(open.egress(host, authority), Egress::Passthrough);
            assert_eq!(closed.egress(host, authority), Egress::Blocked);
        }
    }

    #[test]
    fn the_default_route_of_an_unknown_host_names_istios_clusters() {
        let (method, uri) = (http::Method::GET, http::Uri::from_static("/"));
        let (headers, labels) = (http::HeaderMap::new(), Default::default());
        let decide = |t: &RoutingTable, authority: &str| {
            let view = RequestView {
                method: &method,
                uri: &uri,
                headers: &headers,
                authority,
                scheme: "http",
                port: None,
                gateway: MESH,
                source_namespace: "default",
                source_labels: &labels,
            };
            let d = t.decide(&view, &crate::random::SplitMix::seeded(1));
            assert_eq!(&*d.route.resource, "default", "{authority}");
            d.forward().map(|f| f.destination.host.to_string())
        };
        let open = table(ENTRIES);
        let closed = table(&format!("{ENTRIES}{REGISTRY_ONLY}"));
        for t in [&open, &closed] {
            assert_eq!(
                decide(t, "known").as_deref(),
                Some("known.default.svc.cluster.local")
            );
            assert_eq!(
                decide(t, "en.wikipedia.org").as_deref(),
                Some(PASSTHROUGH_CLUSTER)
            );
        }
        assert_eq!(
            decide(&open, "httpbin.org:8080").as_deref(),
            Some(PASSTHROUGH_CLUSTER)
        );
        assert_eq!(
            decide(&closed, "httpbin.org").as_deref(),
            Some(BLACKHOLE_CLUSTER)
        );
        assert_eq!(
            decide(&closed, "reviews").as_deref(),
            Some(BLACKHOLE_CLUSTER)
        );
    }
}
