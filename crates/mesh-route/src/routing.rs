//! The routing table of one snapshot: every sidecar VirtualService compiled
//! once, keyed by the hosts it governs, plus the balancers of every
//! destination, kept across reloads.
//!
//! A new table is compiled off the request path whenever a new snapshot
//! arrives and swapped in whole; requests load it with one atomic read.
//! Balancers carry runtime state (round-robin cursors, in-flight counts), so
//! they live in a [`Balancers`] registry that outlives tables: a destination
//! whose endpoints and policy did not change keeps its balancer.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use mesh_core::host::for_each_candidate;
use mesh_core::http::MeshError;
use mesh_core::resource::Resource;
use mesh_core::schema::istio_networking::{LoadBalancerSettings, ServicePort};
use mesh_core::snapshot::{Endpoint, Snapshot};

use crate::balance::{Balancer, LbPolicy};
use crate::decision::{DestinationKey, RouteDecision};
use crate::matcher::{CompileError, CompiledVirtualService, RequestView};
use crate::random::{RandomSource, SharedRandom};

/// The gateway name sidecars route as.
pub const MESH: &str = "mesh";

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
}

impl RoutingTable {
    /// Compiles the sidecar VirtualServices of `snapshot`.
    pub fn compile(snapshot: Arc<Snapshot>) -> RoutingTable {
        let mut compiled: HashMap<*const Resource, Arc<CompiledVirtualService>> = HashMap::new();
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
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
        RoutingTable {
            snapshot,
            exact,
            wildcard,
            errors,
        }
    }

    /// The VirtualService governing `authority` for a caller in
    /// `namespace`: exact names first, then the most specific wildcard.
    pub fn virtual_service(
        &self,
        authority: &str,
        namespace: &str,
    ) -> Option<&Arc<CompiledVirtualService>> {
        let mut wild = None;
        let mut first = true;
        for_each_candidate(authority, namespace, |c| {
            if first && !self.wildcard.is_empty() {
                wild = c
                    .match_indices('.')
                    .find_map(|(i, _)| self.wildcard.get(&c[i..]))
                    .or_else(|| self.wildcard.get(""));
            }
            first = false;
            self.exact.get(c)
        })
        .or(wild)
    }

    /// The route decision for a request (SPEC 1.1 steps 1 and 2): the
    /// governing VirtualService's first matching rule, 404 NR when it has
    /// rules and none match, or the host's default route when no
    /// VirtualService applies.
    pub fn decide(&self, req: &RequestView<'_>, random: &dyn RandomSource) -> RouteDecision {
        if let Some(vs) = self.virtual_service(req.authority, req.source_namespace)
            && vs.applies_to(req.gateway)
        {
            return vs.route(req, random);
        }
        let host = self
            .snapshot
            .index
            .resolve_host(req.authority, req.source_namespace);
        RouteDecision::default_route(&host)
    }
}

/// Where a destination's traffic goes: its endpoints, the service port the
/// request addresses, and the balancer that picks among them.
#[derive(Clone, Debug)]
pub struct ResolvedDestination {
    /// The balancer (and through it, the endpoints).
    pub balancer: Arc<Balancer>,
    /// The service port addressed, when the registry knows the service.
    pub port: Option<ServicePort>,
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
            entries: ArcSwap::from_pointee(HashMap::new()),
            random,
        }
    }

    /// The balancer and port for `dest` under `table`'s snapshot. 503 NC for
    /// an undefined subset, 503 UH for a host without endpoints.
    pub fn resolve(
        &self,
        table: &RoutingTable,
        dest: &DestinationKey,
        request_port: Option<u16>,
    ) -> Result<ResolvedDestination, MeshError> {
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
fn lb_policy(snapshot: &Snapshot, dest: &DestinationKey) -> LbPolicy {
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
fn pick_port(ports: &[ServicePort], number: Option<u16>) -> Option<ServicePort> {
    match number {
        Some(n) => ports
            .iter()
            .find(|p| p.number == u32::from(n))
            .or_else(|| (ports.len() == 1).then(|| &ports[0]))
            .cloned(),
        None => ports.first().cloned(),
    }
}
