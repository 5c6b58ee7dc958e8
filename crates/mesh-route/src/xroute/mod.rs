//! Gateway API and Linkerd HTTPRoutes (SPEC 3): attachment to parents,
//! precedence matching, weighted backends and filters, compiled into the
//! same [`RouteDecision`] the VirtualService matcher produces, so the
//! layers below the route stage (fault, mirror, timeout, retry, balance)
//! serve both dialects unchanged.
//!
//! Place in the request flow: step 1 and 2 of SPEC 1.1. The route stage
//! asks [`XRouteTable::decide_mesh`] first; when an HTTPRoute is attached to
//! the Service the request addresses, its decision stands (forward, local
//! redirect, 404 `NR`, or 500 for an invalid backend). The ingress gateway
//! asks [`XRouteTable::for_gateway`] for the routes of one Gateway listener.
//!
//! # Attachment (SPEC 3.1)
//!
//! - `parentRefs` to a Service (`kind: Service`, group `""`, `core` or
//!   omitted as Linkerd writes it) govern that Service's host for sidecar
//!   and proxyless outbound traffic: `name.namespace.svc.cluster.local`,
//!   however the caller spells it. `port` (or `sectionName`, a port name of
//!   the Service's ServiceEntry) restricts the route to that service port;
//!   a Host without a port addresses the Service's first port.
//!   `hostnames` are ignored for Service parents (mesh routes attach to the
//!   Service, not to a Host value).
//! - A *producer* route lives in the Service's namespace and applies to
//!   every caller. A *consumer* route lives in another namespace and
//!   applies only to callers in its own namespace; for them it replaces the
//!   producer routes on the ports it covers.
//! - `parentRefs` to a Gateway API `Gateway` attach to its HTTP and HTTPS
//!   listeners (all, or the one named by `sectionName`, or those on
//!   `port`), subject to the listener's `allowedRoutes` (`Same` namespace
//!   by default; `Selector` cannot be evaluated without Namespace objects
//!   and admits every namespace). A route's `hostnames` are intersected
//!   with the listener's `hostname`; a route whose hostnames intersect none
//!   is not attached. Only `gateway.networking.k8s.io` HTTPRoutes attach to
//!   Gateways; Linkerd `Server` parents are inbound policy, not routing.
//!
//! # Which dialect governs a host
//!
//! - An HTTPRoute attached to a Service and a sidecar VirtualService
//!   (gateways omitted or `mesh`) for the same host: **the HTTPRoute
//!   governs** and the VirtualService is ignored for that host (for a
//!   consumer route: for callers in the route's namespace, on its ports).
//!   Istio documents mixing the two for one host as undefined; we pick the
//!   resource attached to the Service itself over the one that matches a
//!   host name, as Gateway API's GAMMA model does and as Linkerd (which has
//!   no VirtualService) can only do. `mesh validate` warns at the
//!   VirtualService's host with the HTTPRoute's location.
//! - A Linkerd ServiceProfile for the Service and an HTTPRoute attached to
//!   it: **the ServiceProfile governs** and the HTTPRoute is not attached
//!   (Linkerd's documented rule, kept for backwards compatibility; SPEC 13.3
//!   also turns off the route's retry and timeout annotations then).
//!   `mesh validate` warns at the HTTPRoute's parentRef.
//!
//! # Precedence (SPEC 3.2)
//!
//! Every match of every rule of every route attached to one parent is
//! ordered once at compile time: Exact path over PathPrefix over
//! RegularExpression, longer configured path, a method condition, more
//! headers, more query parameters, then the older route (creation time;
//! routes with one before routes without), then `namespace/name`, then rule
//! and match order. A request walks the ordered list and the first match
//! wins; none is 404 `NR`. For Gateway parents the routes whose matching
//! hostname is exact come first, then wildcard hostnames longest first,
//! then routes without hostnames.
//!
//! # Backends and filters (SPEC 3.3, 3.4)
//!
//! A backend is drawn per request by weight (default 1; weight 0 never).
//! An invalid backend keeps its share and answers 500 for it. Filters are
//! compiled in list order into header edits, a rewrite, mirrors, or a
//! redirect (302 by default); a backend's own filters apply after the
//! rule's when it is chosen. Mirrored copies carry every request edit of
//! the rule, not only those listed before the mirror filter (the mirror
//! stage copies the request after the route stage edited it).
//!
//! ```
//! use std::sync::Arc;
//! use mesh_core::load::{LoadOptions, load_str};
//! use mesh_core::snapshot::Snapshot;
//! use mesh_route::decision::RouteAction;
//! use mesh_route::matcher::RequestView;
//! use mesh_route::random::SplitMix;
//! use mesh_route::xroute::XRouteTable;
//!
//! let yaml = "\
//! apiVersion: gateway.networking.k8s.io/v1
//! kind: HTTPRoute
//! metadata: {name: api, namespace: prod}
//! spec:
//!   parentRefs: [{name: api, kind: Service, group: \"\"}]
//!   rules:
//!   - matches: [{path: {type: PathPrefix, value: /v1}}]
//!     backendRefs: [{name: api-v1, port: 8080}]
//! ---
//! apiVersion: networking.istio.io/v1
//! kind: ServiceEntry
//! metadata: {name: api-v1, namespace: prod}
//! spec:
//!   hosts: [api-v1]
//!   ports: [{number: 8080, name: http, protocol: HTTP}]
//!   resolution: STATIC
//!   endpoints: [{address: 127.0.0.1}]
//! ";
//! let loaded = load_str("r.yaml", yaml, &LoadOptions::default());
//! let snapshot = Snapshot::compile(1, loaded);
//! let table = XRouteTable::compile(&snapshot);
//! let (method, headers, labels) = (http::Method::GET, http::HeaderMap::new(), Default::default());
//! let uri = http::Uri::from_static("/v1/items");
//! let req = RequestView {
//!     method: &method, uri: &uri, headers: &headers, authority: "api",
//!     scheme: "http", port: None, gateway: "mesh",
//!     source_namespace: "prod", source_labels: &labels,
//! };
//! let decision = table.decide_mesh(&req, &SplitMix::seeded(1)).unwrap();
//! let RouteAction::Forward(fwd) = decision.action else { panic!() };
//! assert_eq!(&*fwd.destination.host, "api-v1.prod.svc.cluster.local");
//! assert_eq!(fwd.destination.port, Some(8080));
//! ```

mod compile;
mod filters;
mod matching;
mod policy;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use http::StatusCode;
use mesh_core::host::{covers, for_each_candidate, qualify, strip_port};
use mesh_core::resource::{Kind, Resource, Spec};
use mesh_core::schema::gateway_api::{
    FromNamespaces, Gateway, HttpRoute, Listener, ParentReference,
};
use mesh_core::snapshot::Snapshot;

use self::compile::{CompiledRoute, Cx, Grants, XAction, XRule, XTarget, compile_route};
use self::filters::RewriteMode;
use self::matching::{Precedence, XMatch};
use self::policy::Annotations;
use crate::decision::{RouteAction, RouteDecision, RouteId, RoutePolicy};
use crate::matcher::{CompileError, RequestView};
use crate::random::RandomSource;
use crate::routing::MESH;

/// The Gateway API group.
const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// Every HTTPRoute of one snapshot, attached to its parents and compiled.
#[derive(Debug, Default)]
pub struct XRouteTable {
    /// Service parents by qualified host.
    mesh: HashMap<String, ServiceRoutes>,
    /// Gateway parents by namespace, then name: their listeners.
    gateways: HashMap<String, HashMap<String, Vec<ListenerRoutes>>>,
    /// What did not compile or attach (rules answer 500 or are skipped);
    /// reported by `/config_dump` and `mesh explain`.
    pub errors: Vec<CompileError>,
}

/// The routes attached to one Service.
#[derive(Debug, Default)]
struct ServiceRoutes {
    /// The port a Host without `:port` addresses (the registry's first).
    default_port: Option<u16>,
    producer: RouteSet,
    /// Consumer routes by the namespace of their callers.
    consumers: HashMap<String, RouteSet>,
}

/// One Gateway listener and the routes attached to it, grouped by the
/// hostname they serve it for.
#[derive(Debug)]
struct ListenerRoutes {
    name: String,
    port: u16,
    hostname: Option<String>,
    exact: HashMap<String, RouteSet>,
    /// Keyed by the suffix after `*` (`.example.com`).
    wildcard: HashMap<String, RouteSet>,
    any: RouteSet,
}

/// Matches of several routes, in precedence order.
#[derive(Debug, Default)]
struct RouteSet {
    entries: Vec<Entry>,
    /// Reported when nothing matches: the oldest route of the set.
    no_route: Option<(usize, RouteId)>,
    /// The union of the routes' ports; `None` when one takes every port.
    ports: Option<Vec<u16>>,
}

#[derive(Debug)]
struct Entry {
    key: Precedence,
    rule: Arc<XRule>,
    matched: usize,
    /// The service ports the route is attached on; `None` is all.
    ports: Option<Arc<[u16]>>,
}

impl RouteSet {
    fn add(&mut self, rank: usize, route: &CompiledRoute, id: RouteId, ports: Option<Arc<[u16]>>) {
        match (&mut self.ports, &ports) {
            // The first route sets the union.
            (all, _) if self.no_route.is_none() => *all = ports.as_deref().map(<[u16]>::to_vec),
            (Some(all), Some(these)) => all.extend(these.iter()),
            (all, _) => *all = None,
        }
        if self.no_route.as_ref().is_none_or(|(r, _)| rank < *r) {
            self.no_route = Some((rank, id));
        }
        for rule in &route.rules {
            for (m, xm) in rule.matches.iter().enumerate() {
                self.entries.push(Entry {
                    key: Precedence {
                        rank: xm.rank,
                        route: rank,
                        rule: rule.id.rule_index.unwrap_or(0),
                        matched: m,
                    },
                    rule: Arc::clone(rule),
                    matched: m,
                    ports: ports.clone(),
                });
            }
        }
    }

    fn finish(&mut self) {
        self.entries.sort_by_key(|e| e.key);
    }

    fn serves_port(&self, port: Option<u16>) -> bool {
        self.no_route.is_some() && admits(self.ports.as_deref(), port)
    }

    /// The first entry (in precedence order) matching `req` on `port`.
    fn find(&self, req: &RequestView<'_>, port: Option<u16>) -> Option<(&XRule, &XMatch)> {
        self.entries.iter().find_map(|e| {
            let m = e.rule.matches.get(e.matched)?;
            (admits(e.ports.as_deref(), port) && m.matches(req)).then_some((&*e.rule, m))
        })
    }

    fn no_route(&self) -> RouteDecision {
        RouteDecision {
            route: self
                .no_route
                .as_ref()
                .map_or_else(RouteId::default_route, |(_, id)| id.clone()),
            action: RouteAction::NoRoute,
            policy: Arc::default(),
        }
    }
}

fn admits(ports: Option<&[u16]>, port: Option<u16>) -> bool {
    match (ports, port) {
        (None, _) => true,
        (Some(list), Some(p)) => list.contains(&p),
        (Some(_), None) => false,
    }
}

/// The routes serving one host on one Gateway listener, from
/// [`XRouteTable::for_gateway`]: the exact-hostname routes first, then
/// wildcard ones (longest first), then those without hostnames.
#[derive(Debug)]
pub struct GatewayHttpRoutes<'a> {
    listener: &'a ListenerRoutes,
    host: Cow<'a, str>,
}

impl GatewayHttpRoutes<'_> {
    /// The listener's `name` (the `sectionName` routes use).
    pub fn listener(&self) -> &str {
        &self.listener.name
    }

    /// The listener's port.
    pub fn port(&self) -> u16 {
        self.listener.port
    }

    /// The decision for `req` (SPEC 3.2): the highest-precedence match of
    /// the routes serving this host, or 404 `NR` when none matches.
    /// `req.port` should be the listener port (redirects use it).
    pub fn decide(&self, req: &RequestView<'_>, random: &dyn RandomSource) -> RouteDecision {
        let mut first: Option<&RouteSet> = None;
        for set in self.sets() {
            first.get_or_insert(set);
            if let Some((rule, m)) = set.find(req, None) {
                return decide_rule(rule, m, req, random);
            }
        }
        first.map_or_else(|| RouteSet::default().no_route(), RouteSet::no_route)
    }

    fn sets(&self) -> impl Iterator<Item = &RouteSet> {
        let host: &str = &self.host;
        let l = self.listener;
        l.exact
            .get(host)
            .into_iter()
            .chain(
                host.match_indices('.')
                    .filter_map(|(i, _)| l.wildcard.get(&host[i..])),
            )
            .chain((l.any.no_route.is_some()).then_some(&l.any))
    }
}

impl XRouteTable {
    /// Attaches and compiles the HTTPRoutes of `snapshot`.
    pub fn compile(snapshot: &Snapshot) -> XRouteTable {
        let index = &snapshot.index;
        let grants = Grants::collect(&snapshot.resources);
        let mut table = XRouteTable::default();

        // Route age ranks: oldest creation time first (routes with one
        // before routes without), then namespace/name (SPEC 3.2 item 6).
        let mut routes: Vec<(&Arc<Resource>, &HttpRoute)> = index
            .xroutes
            .iter()
            .filter_map(|r| match &r.spec {
                Spec::HttpRoute(h) | Spec::LinkerdHttpRoute(h) => Some((r, h)),
                _ => None,
            })
            .collect();
        routes.sort_by(|(a, _), (b, _)| {
            let ts = |r: &Resource| {
                (
                    r.meta.creation_timestamp.is_none(),
                    r.meta.creation_timestamp.clone(),
                )
            };
            ts(a)
                .cmp(&ts(b))
                .then_with(|| a.namespace().cmp(b.namespace()))
                .then_with(|| a.name().cmp(b.name()))
                .then_with(|| a.order.cmp(&b.order))
        });

        let k8s_gateways: HashMap<String, &Gateway> = snapshot
            .resources
            .iter()
            .filter_map(|r| match &r.spec {
                Spec::K8sGateway(g) => Some((format!("{}/{}", r.namespace(), r.name()), g)),
                _ => None,
            })
            .collect();

        for (rank, (resource, route)) in routes.iter().enumerate() {
            let ns = resource.namespace();
            let id = RouteId {
                resource: Arc::from(resource.id().as_str()),
                rule_index: None,
                rule_name: None,
            };
            // Service parents, with their ports merged per Service.
            let mut services: BTreeMap<String, Option<Vec<u16>>> = BTreeMap::new();
            for (i, p) in route.parent_refs.iter().enumerate() {
                if is_service_parent(p) {
                    let host = qualify(&p.name, p.namespace.as_deref().unwrap_or(ns));
                    let port = match service_port(p, &host, snapshot) {
                        Ok(port) => port,
                        Err(message) => {
                            table.errors.push(CompileError {
                                resource: resource.id(),
                                field: format!("spec.parentRefs[{i}].sectionName"),
                                message,
                            });
                            continue;
                        }
                    };
                    let entry = services.entry(host).or_insert(Some(Vec::new()));
                    match (entry.as_mut(), port) {
                        (Some(list), Some(port)) => list.push(port),
                        _ => *entry = None,
                    }
                } else if is_gateway_parent(p) && resource.kind == Kind::HttpRoute {
                    let key = format!("{}/{}", p.namespace.as_deref().unwrap_or(ns), p.name);
                    let Some(gateway) = k8s_gateways.get(&key) else {
                        continue;
                    };
                    let cx = Cx {
                        index,
                        grants: &grants,
                        annotations: Annotations {
                            route: Some(&resource.meta.annotations),
                            service: None,
                        },
                    };
                    let compiled = compile_route(resource, route, &cx);
                    table.errors.extend(compiled.errors.iter().cloned());
                    table.attach_gateway(&key, gateway, p, resource, route, rank, &compiled, &id);
                }
            }
            for (host, ports) in services {
                if let Some(profile) = index.service_profiles.get(&host) {
                    // Linkerd: a ServiceProfile for the Service takes
                    // precedence over its HTTPRoutes (and their annotations).
                    table.errors.push(CompileError {
                        resource: resource.id(),
                        field: "spec.parentRefs".into(),
                        message: format!(
                            "not attached to {host}: {} at {} governs it",
                            profile.id(),
                            profile.location
                        ),
                    });
                    continue;
                }
                let service = index.services.get(&host);
                let cx = Cx {
                    index,
                    grants: &grants,
                    annotations: Annotations {
                        route: Some(&resource.meta.annotations),
                        service: service.map(|s| &s.source.meta.annotations),
                    },
                };
                let compiled = compile_route(resource, route, &cx);
                table.errors.extend(compiled.errors.iter().cloned());
                let parent_ns = host_namespace(&host).unwrap_or(ns).to_owned();
                let routes = table.mesh.entry(host).or_default();
                routes.default_port = service
                    .and_then(|s| s.ports.first())
                    .and_then(|p| u16::try_from(p.number).ok());
                let set = if parent_ns == ns {
                    &mut routes.producer
                } else {
                    routes.consumers.entry(ns.to_owned()).or_default()
                };
                set.add(rank, &compiled, id.clone(), ports.map(Arc::from));
            }
        }

        for routes in table.mesh.values_mut() {
            routes.producer.finish();
            routes.consumers.values_mut().for_each(RouteSet::finish);
        }
        for listeners in table.gateways.values_mut().flat_map(HashMap::values_mut) {
            for l in listeners {
                l.any.finish();
                l.exact.values_mut().for_each(RouteSet::finish);
                l.wildcard.values_mut().for_each(RouteSet::finish);
            }
        }
        table
    }

    #[allow(clippy::too_many_arguments)]
    fn attach_gateway(
        &mut self,
        key: &str,
        gateway: &Gateway,
        parent: &ParentReference,
        resource: &Resource,
        route: &HttpRoute,
        rank: usize,
        compiled: &CompiledRoute,
        id: &RouteId,
    ) {
        let (gateway_ns, gateway_name) = key.split_once('/').unwrap_or(("", key));
        let listeners = self
            .gateways
            .entry(gateway_ns.to_owned())
            .or_default()
            .entry(gateway_name.to_owned())
            .or_insert_with(|| {
                gateway
                    .listeners
                    .iter()
                    .filter(|l| matches!(l.protocol.as_str(), "HTTP" | "HTTPS"))
                    .filter_map(|l| {
                        Some(ListenerRoutes {
                            name: l.name.clone(),
                            port: u16::try_from(l.port).ok()?,
                            hostname: l.hostname.as_deref().map(str::to_ascii_lowercase),
                            exact: HashMap::new(),
                            wildcard: HashMap::new(),
                            any: RouteSet::default(),
                        })
                    })
                    .collect()
            });
        for l in listeners.iter_mut() {
            if parent.section_name.as_ref().is_some_and(|s| *s != l.name)
                || parent.port.is_some_and(|p| p != u32::from(l.port))
            {
                continue;
            }
            let Some(spec) = gateway.listeners.iter().find(|s| s.name == l.name) else {
                continue;
            };
            if !allows_route(spec, gateway_ns, resource.namespace()) {
                continue;
            }
            if route.hostnames.is_empty() {
                match l.hostname.clone() {
                    None => l.any.add(rank, compiled, id.clone(), None),
                    Some(h) => l.set_for(&h).add(rank, compiled, id.clone(), None),
                }
                continue;
            }
            let mut served: Vec<String> = route
                .hostnames
                .iter()
                .filter_map(|h| intersect(&h.to_ascii_lowercase(), l.hostname.as_deref()))
                .collect();
            served.sort();
            served.dedup();
            for h in served {
                l.set_for(&h).add(rank, compiled, id.clone(), None);
            }
        }
    }

    /// The decision of the HTTPRoutes attached to the Service `req`
    /// addresses, for a sidecar or proxyless caller (`req.gateway` is
    /// `mesh`). `None` when no HTTPRoute governs that Service on that port
    /// for this caller, so VirtualService or default routing applies.
    pub fn decide_mesh(
        &self,
        req: &RequestView<'_>,
        random: &dyn RandomSource,
    ) -> Option<RouteDecision> {
        if req.gateway != MESH || self.mesh.is_empty() {
            return None;
        }
        let routes = for_each_candidate(req.authority, req.source_namespace, |c| self.mesh.get(c))?;
        let port = req.port.or(routes.default_port);
        let set = routes
            .consumers
            .get(req.source_namespace)
            .filter(|s| s.serves_port(port))
            .unwrap_or(&routes.producer);
        if !set.serves_port(port) {
            return None;
        }
        Some(match set.find(req, port) {
            Some((rule, m)) => decide_rule(rule, m, req, random),
            None => set.no_route(),
        })
    }

    /// Whether an HTTPRoute is attached to the Service with this qualified
    /// host (for any caller or port).
    pub fn governs(&self, host: &str) -> bool {
        self.mesh.contains_key(host)
    }

    /// The routes of the Gateway API Gateway `namespace/name` for a request
    /// to `host` (its `:port`, if any, is ignored) on the listener port
    /// `port`. Among several listeners on that port, the one whose hostname
    /// matches `host` most specifically is used (exact, then the longest
    /// wildcard, then one without hostname). `None` when no listener on
    /// that port serves `host` or no route attached there serves it (the
    /// gateway answers 404 `NR`).
    pub fn for_gateway<'a>(
        &'a self,
        namespace: &str,
        name: &str,
        port: u16,
        host: &'a str,
    ) -> Option<GatewayHttpRoutes<'a>> {
        let host = normal_host(host);
        let listeners = self.gateway_listeners(namespace, name)?;
        let listener = listeners
            .iter()
            .filter(|l| l.port == port)
            .filter_map(|l| listener_specificity(l.hostname.as_deref(), &host).map(|s| (s, l)))
            .max_by_key(|(s, _)| *s)
            .map(|(_, l)| l)?;
        GatewayHttpRoutes { listener, host }.serving()
    }

    /// Like [`XRouteTable::for_gateway`], for the listener named `listener`.
    pub fn for_gateway_listener<'a>(
        &'a self,
        namespace: &str,
        name: &str,
        listener: &str,
        host: &'a str,
    ) -> Option<GatewayHttpRoutes<'a>> {
        let host = normal_host(host);
        let l = self
            .gateway_listeners(namespace, name)?
            .iter()
            .find(|l| l.name == listener)?;
        listener_specificity(l.hostname.as_deref(), &host)?;
        GatewayHttpRoutes { listener: l, host }.serving()
    }

    fn gateway_listeners(&self, namespace: &str, name: &str) -> Option<&Vec<ListenerRoutes>> {
        self.gateways.get(namespace)?.get(name)
    }
}

impl<'a> GatewayHttpRoutes<'a> {
    fn serving(self) -> Option<GatewayHttpRoutes<'a>> {
        let serves = self.sets().next().is_some();
        serves.then_some(self)
    }
}

impl ListenerRoutes {
    fn set_for(&mut self, hostname: &str) -> &mut RouteSet {
        match hostname.strip_prefix('*') {
            Some(suffix) => self.wildcard.entry(suffix.to_owned()).or_default(),
            None => self.exact.entry(hostname.to_owned()).or_default(),
        }
    }
}

/// A request host without port or trailing dot, lower-cased (borrowed when
/// it already is).
fn normal_host(host: &str) -> Cow<'_, str> {
    let h = strip_port(host).trim_end_matches('.');
    if h.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(h.to_ascii_lowercase())
    } else {
        Cow::Borrowed(h)
    }
}

/// How specifically a listener hostname matches `host`: `None` when it
/// does not; exact above any wildcard, longer wildcards above shorter, and
/// no hostname lowest.
fn listener_specificity(hostname: Option<&str>, host: &str) -> Option<(u8, usize)> {
    match hostname {
        None => Some((0, 0)),
        Some(h) if h == host => Some((2, h.len())),
        Some(h) if h.starts_with('*') && covers(h, host) => Some((1, h.len())),
        Some(_) => None,
    }
}

/// The hostname a route serves on a listener: the more specific of the two
/// when one covers the other (SPEC 3.1 hostname intersection).
fn intersect(route: &str, listener: Option<&str>) -> Option<String> {
    let Some(l) = listener else {
        return Some(route.to_owned());
    };
    if route == l || covers(l, route) {
        Some(route.to_owned())
    } else if covers(route, l) {
        Some(l.to_owned())
    } else {
        None
    }
}

fn allows_route(listener: &Listener, gateway_ns: &str, route_ns: &str) -> bool {
    let Some(allowed) = &listener.allowed_routes else {
        return gateway_ns == route_ns;
    };
    let kinds_ok = allowed.kinds.is_empty()
        || allowed.kinds.iter().any(|k| {
            k.kind == "HTTPRoute" && k.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP
        });
    let from = allowed
        .namespaces
        .as_ref()
        .and_then(|n| n.from)
        .unwrap_or_default();
    kinds_ok
        && match from {
            FromNamespaces::Same => gateway_ns == route_ns,
            FromNamespaces::All | FromNamespaces::Selector => true,
        }
}

/// A parentRef to a Service. Linkerd writes `kind: Service` without a
/// group, so an omitted group counts as the core group here.
fn is_service_parent(p: &ParentReference) -> bool {
    p.kind.as_deref() == Some("Service") && compile::is_core(p.group.as_deref())
}

fn is_gateway_parent(p: &ParentReference) -> bool {
    p.kind() == "Gateway" && p.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP
}

/// The service port a Service parentRef restricts to: `port`, else the
/// port named `sectionName` in the Service's registry entry, else `None`
/// (every port).
fn service_port(
    p: &ParentReference,
    host: &str,
    snapshot: &Snapshot,
) -> Result<Option<u16>, String> {
    if let Some(port) = p.port {
        return u16::try_from(port)
            .map(Some)
            .map_err(|_| format!("port {port} is not a port number"));
    }
    let Some(section) = &p.section_name else {
        return Ok(None);
    };
    snapshot
        .index
        .services
        .get(host)
        .and_then(|s| s.ports.iter().find(|sp| sp.name == *section))
        .and_then(|sp| u16::try_from(sp.number).ok())
        .map(Some)
        .ok_or_else(|| {
            format!("no port named {section:?} on {host}; the route is not attached to it")
        })
}

/// The namespace of `name.namespace.svc.cluster.local`.
fn host_namespace(host: &str) -> Option<&str> {
    let mut parts = host.split('.');
    let _service = parts.next()?;
    parts.next()
}

/// The decision of `rule`, reached through its match `m`.
fn decide_rule(
    rule: &XRule,
    m: &XMatch,
    req: &RequestView<'_>,
    random: &dyn RandomSource,
) -> RouteDecision {
    let prefix = m.prefix().map(|p| &**p);
    let action_policy = match &rule.action {
        XAction::Redirect(r) => (
            RouteAction::Redirect {
                status: r.status,
                location: r.location(req, prefix),
            },
            None,
        ),
        XAction::Fail(body) => (internal_error(body), None),
        XAction::Forward {
            targets,
            cumulative,
        } => {
            let index = random.weighted(cumulative);
            match targets.get(index) {
                Some(XTarget::Valid {
                    forward,
                    policy,
                    mode,
                }) => {
                    let mut forward = forward.clone();
                    forward.matched_prefix = matched_prefix(*mode, m, req.uri.path());
                    (RouteAction::Forward(forward), Some(Arc::clone(policy)))
                }
                Some(XTarget::Invalid(body)) => (internal_error(body), None),
                None => (
                    internal_error(&bytes::Bytes::from_static(b"no backend")),
                    None,
                ),
            }
        }
    };
    let (action, policy) = action_policy;
    RouteDecision {
        route: rule.id.clone(),
        action,
        policy: policy.unwrap_or_else(|| Arc::new(RoutePolicy::default())),
    }
}

fn internal_error(body: &bytes::Bytes) -> RouteAction {
    RouteAction::DirectResponse {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        body: body.clone(),
    }
}

/// The prefix [`crate::matcher::Rewrite::apply`] swaps out, so that its raw
/// replacement gives Gateway API's segment semantics (see
/// `Filters::rewrite`).
fn matched_prefix(mode: RewriteMode, m: &XMatch, path: &str) -> Option<Arc<str>> {
    let prefix = m.prefix();
    match mode {
        RewriteMode::Full => None,
        RewriteMode::None | RewriteMode::Prefix => prefix.cloned(),
        RewriteMode::PrefixToRoot => {
            let p = prefix?;
            if path.len() > p.len() {
                m.prefix_slash().cloned()
            } else {
                Some(Arc::clone(p))
            }
        }
    }
}

#[cfg(test)]
mod tests;
