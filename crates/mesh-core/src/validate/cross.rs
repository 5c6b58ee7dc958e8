//! Checks across resources: the same object twice, several resources for one
//! host, and references to things not in the loaded set (SPEC 4.8). All are
//! warnings: another file may define what is missing, and the runtime does
//! what SPEC 4.8 says for conflicts. Each names both places.

use std::collections::{HashMap, HashSet};

use crate::diag::{Diagnostic, Location, Severity};
use crate::host::{qualify, wildcard_candidates};
use crate::load::Accepted;
use crate::path::FieldPath;
use crate::resource::{Kind, Resource, Spec};
use crate::schema::istio_networking::{Destination, VirtualService};
use crate::snapshot::{MESH_GATEWAY, gateway_key, mesh_route_claims, precedence};

/// Keeps the last definition of each Kind/namespace/name, as `kubectl apply`
/// would, warning at the later one with the earlier one's location. The
/// replacement takes the earlier one's place in load order.
pub(crate) fn dedupe(accepted: Vec<Accepted>, out: &mut Vec<Diagnostic>) -> Vec<Accepted> {
    // First pass, on borrowed keys: which definition of each object wins?
    let mut slots: HashMap<(Kind, &str, &str), usize> = HashMap::with_capacity(accepted.len());
    let mut slot_of: Vec<usize> = Vec::with_capacity(accepted.len());
    let mut winner: Vec<usize> = Vec::with_capacity(accepted.len());
    for (i, a) in accepted.iter().enumerate() {
        let r = &a.resource;
        match slots.get(&(r.kind, r.namespace(), r.name())) {
            Some(&s) => {
                out.push(Diagnostic {
                    severity: Severity::Warning,
                    location: r.location.clone(),
                    resource: Some(r.id()),
                    path: FieldPath::root(),
                    message: format!(
                        "defined again; this definition replaces the one at {}",
                        accepted[winner[s]].resource.location
                    ),
                });
                winner[s] = i;
                slot_of.push(s);
            }
            None => {
                slots.insert((r.kind, r.namespace(), r.name()), winner.len());
                slot_of.push(winner.len());
                winner.push(i);
            }
        }
    }
    drop(slots);
    if winner.len() == accepted.len() {
        return accepted;
    }
    // Second pass: each winner takes its first definition's place and order.
    let mut first_order: Vec<Option<usize>> = vec![None; winner.len()];
    let mut kept: Vec<Option<Accepted>> = (0..winner.len()).map(|_| None).collect();
    for (i, mut a) in accepted.into_iter().enumerate() {
        let s = slot_of[i];
        let order = *first_order[s].get_or_insert(a.resource.order);
        if winner[s] == i {
            a.resource.order = order;
            kept[s] = Some(a);
        }
    }
    kept.into_iter().flatten().collect()
}

/// Where a field of an accepted resource is written.
fn location_of(a: &Accepted, path: &FieldPath) -> Location {
    Location {
        file: a.resource.location.file.clone(),
        pos: path.locate(&a.root).pos,
    }
}

struct Reporter<'a> {
    out: &'a mut Vec<Diagnostic>,
}

impl Reporter<'_> {
    fn warn(&mut self, a: &Accepted, path: &str, message: String) {
        let path = FieldPath::parse(path);
        self.out.push(Diagnostic {
            severity: Severity::Warning,
            location: location_of(a, &path),
            resource: Some(a.resource.id()),
            path,
            message,
        });
    }
}

/// Conflicts and dangling references.
pub(crate) fn check(accepted: &[Accepted], out: &mut Vec<Diagnostic>) {
    let mut rep = Reporter { out };
    let by_ptr: HashMap<*const Resource, &Accepted> = accepted
        .iter()
        .map(|a| (std::ptr::from_ref(&a.resource), a))
        .collect();
    let known = Known::collect(accepted);

    mesh_route_conflicts(accepted, &by_ptr, &mut rep);
    dialect_conflicts(accepted, &by_ptr, &mut rep);
    destination_rule_merges(accepted, &mut rep);
    // Reference checks are per resource: on a large configuration they run
    // on every core, each slice reporting into its own list, merged in order.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    if accepted.len() >= PARALLEL_CHECKS && threads > 1 {
        let chunk = accepted.len().div_ceil(threads);
        let known = &known;
        let parts: Vec<Vec<Diagnostic>> = std::thread::scope(|scope| {
            let handles: Vec<_> = accepted
                .chunks(chunk)
                .map(|slice| {
                    scope.spawn(move || {
                        let mut out = Vec::new();
                        references(slice, known, &mut Reporter { out: &mut out });
                        out
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        });
        for part in parts {
            rep.out.extend(part);
        }
    } else {
        references(accepted, &known, &mut rep);
    }
    namespace_wide_duplicates(accepted, &mut rep);
}

/// From this many resources on, reference checks run on all cores.
const PARALLEL_CHECKS: usize = 2000;

/// Dangling references of each resource.
fn references(accepted: &[Accepted], known: &Known, rep: &mut Reporter<'_>) {
    for a in accepted {
        match &a.resource.spec {
            Spec::VirtualService(vs) => virtual_service_refs(a, vs, known, rep),
            Spec::ServerAuthorization(sa) => {
                if let Some(name) = &sa.server.name
                    && !known.has(Kind::Server, a.resource.namespace(), name)
                {
                    rep.warn(
                        a,
                        "spec.server.name",
                        format!(
                            "Server `{}/{name}` is not in the loaded configuration; this authorization applies to nothing until it is",
                            a.resource.namespace()
                        ),
                    );
                }
            }
            Spec::LinkerdAuthorizationPolicy(ap) => {
                let ns = a.resource.namespace();
                let target = &ap.target_ref;
                let target_ns = target.namespace.as_deref().unwrap_or(ns);
                let target_kind = match target.kind.as_str() {
                    "Server" => Some(Kind::Server),
                    "HTTPRoute" => Some(Kind::LinkerdHttpRoute),
                    "GRPCRoute" => Some(Kind::GrpcRoute),
                    _ => None,
                };
                if let Some(kind) = target_kind
                    && !known.has(kind, target_ns, &target.name)
                    && !(kind == Kind::LinkerdHttpRoute
                        && known.has(Kind::HttpRoute, target_ns, &target.name))
                {
                    rep.warn(
                        a,
                        "spec.targetRef.name",
                        format!(
                            "{} `{target_ns}/{}` is not in the loaded configuration",
                            target.kind, target.name
                        ),
                    );
                }
                for (i, r) in ap.required_authentication_refs.iter().enumerate() {
                    let kind = match r.kind.as_str() {
                        "MeshTLSAuthentication" => Kind::MeshTlsAuthentication,
                        "NetworkAuthentication" => Kind::NetworkAuthentication,
                        _ => continue,
                    };
                    let rns = r.namespace.as_deref().unwrap_or(ns);
                    if !known.has(kind, rns, &r.name) {
                        rep.warn(
                            a,
                            &format!("spec.requiredAuthenticationRefs[{i}].name"),
                            format!(
                                "{} `{rns}/{}` is not in the loaded configuration; until it is, this policy authorizes nobody",
                                r.kind, r.name
                            ),
                        );
                    }
                }
            }
            _ => {}
        }
    }
}

/// Names and hosts the loaded set defines, for reference checks.
struct Known {
    objects: HashSet<(Kind, String, String)>,
    subsets: HashMap<String, HashSet<String>>,
    service_hosts: HashSet<String>,
    has_wildcards: bool,
}

impl Known {
    fn collect(accepted: &[Accepted]) -> Known {
        let mut known = Known {
            objects: HashSet::new(),
            subsets: HashMap::new(),
            service_hosts: HashSet::new(),
            has_wildcards: false,
        };
        for a in accepted {
            let r = &a.resource;
            // Only kinds that other resources refer to by name.
            if matches!(
                r.kind,
                Kind::Gateway
                    | Kind::Server
                    | Kind::MeshTlsAuthentication
                    | Kind::NetworkAuthentication
                    | Kind::LinkerdHttpRoute
                    | Kind::HttpRoute
                    | Kind::GrpcRoute
            ) {
                known
                    .objects
                    .insert((r.kind, r.namespace().to_owned(), r.name().to_owned()));
            }
            match &r.spec {
                Spec::DestinationRule(dr) => {
                    known
                        .subsets
                        .entry(qualify(&dr.host, r.namespace()))
                        .or_default()
                        .extend(dr.subsets.iter().map(|s| s.name.clone()));
                }
                Spec::ServiceEntry(se) => known
                    .service_hosts
                    .extend(se.hosts.iter().map(|h| qualify(h, r.namespace()))),
                _ => {}
            }
        }
        known.has_wildcards = known.service_hosts.iter().any(|h| h.starts_with('*'));
        known
    }

    fn has(&self, kind: Kind, namespace: &str, name: &str) -> bool {
        self.objects
            .contains(&(kind, namespace.to_owned(), name.to_owned()))
    }

    /// Exact host, or a `*.` wildcard ServiceEntry host covering it: a
    /// few hash lookups, so checking 10,000 routes stays linear.
    fn has_service(&self, host: &str) -> bool {
        self.service_hosts.contains(host)
            || (self.has_wildcards
                && wildcard_candidates(host).any(|w| self.service_hosts.contains(&w)))
    }
}

fn mesh_route_conflicts(
    accepted: &[Accepted],
    by_ptr: &HashMap<*const Resource, &Accepted>,
    rep: &mut Reporter<'_>,
) {
    let claims = mesh_route_claims(accepted.iter().map(|a| &a.resource));
    let mut hosts: Vec<&String> = claims.keys().collect();
    hosts.sort();
    for host in hosts {
        let list = &claims[host];
        let Some((winner, _)) = list.first() else {
            continue;
        };
        for (loser, host_index) in &list[1..] {
            let Some(a) = by_ptr.get(&std::ptr::from_ref(*loser)) else {
                continue;
            };
            rep.warn(
                a,
                &format!("spec.hosts[{host_index}]"),
                format!(
                    "host `{host}` is also routed by {} at {}, which comes first and governs it; this VirtualService is ignored for that host",
                    winner.id(),
                    winner.location
                ),
            );
        }
    }
}

/// A sidecar VirtualService and an HTTPRoute attached to a Service for the
/// same host: the HTTPRoute governs (mesh-route's `xroute` module: for a
/// consumer route, only for callers in its namespace), so the VirtualService
/// that governs the host otherwise is ignored there. Warned at the
/// VirtualService's host, naming the HTTPRoute's parentRef.
fn dialect_conflicts(
    accepted: &[Accepted],
    by_ptr: &HashMap<*const Resource, &Accepted>,
    rep: &mut Reporter<'_>,
) {
    let mut attached: HashMap<String, Vec<(&Accepted, usize)>> = HashMap::new();
    for a in accepted {
        let (Spec::HttpRoute(route) | Spec::LinkerdHttpRoute(route)) = &a.resource.spec else {
            continue;
        };
        let ns = a.resource.namespace();
        for (i, p) in route.parent_refs.iter().enumerate() {
            // Linkerd writes `kind: Service` without a group.
            let service = p.kind.as_deref() == Some("Service")
                && matches!(p.group.as_deref(), None | Some("" | "core"));
            if !service {
                continue;
            }
            let host = qualify(&p.name, p.namespace.as_deref().unwrap_or(ns));
            let list = attached.entry(host).or_default();
            if !list.iter().any(|(r, _)| std::ptr::eq(*r, a)) {
                list.push((a, i));
            }
        }
    }
    if attached.is_empty() {
        return;
    }
    // A ServiceProfile for the Service wins over its HTTPRoutes (Linkerd).
    let mut profiled: Vec<(&String, &Accepted)> = Vec::new();
    for a in accepted {
        if let Spec::ServiceProfile(_) = &a.resource.spec
            && let Some((host, _)) = attached.get_key_value(&a.resource.name().to_ascii_lowercase())
        {
            profiled.push((host, a));
        }
    }
    profiled.sort_by(|x, y| x.0.cmp(y.0));
    for (host, profile) in &profiled {
        for (route, parent) in &attached[*host] {
            rep.warn(
                route,
                &format!("spec.parentRefs[{parent}]"),
                format!(
                    "Service `{host}` has ServiceProfile {} at {}, which takes precedence over HTTPRoutes (as in Linkerd); this route is not attached to it",
                    profile.resource.id(),
                    profile.resource.location
                ),
            );
        }
    }
    let claims = mesh_route_claims(accepted.iter().map(|a| &a.resource));
    let mut hosts: Vec<&String> = claims
        .keys()
        .filter(|h| attached.contains_key(*h) && !profiled.iter().any(|(p, _)| p == h))
        .collect();
    hosts.sort();
    for host in hosts {
        let Some((vs, host_index)) = claims[host].first() else {
            continue;
        };
        let Some(vs) = by_ptr.get(&std::ptr::from_ref(*vs)) else {
            continue;
        };
        let mut routes = attached[host].clone();
        routes.sort_by(|x, y| precedence(&x.0.resource, &y.0.resource));
        let Some((route, parent)) = routes.first() else {
            continue;
        };
        let path = FieldPath::parse(&format!("spec.parentRefs[{parent}]"));
        let route_ns = route.resource.namespace();
        let scope = if host_namespace(host) == Some(route_ns) {
            "which governs it: Gateway API routes attached to a Service win over VirtualServices, so this VirtualService is ignored for that host".to_owned()
        } else {
            format!(
                "a consumer route that governs it for callers in namespace `{route_ns}`: there this VirtualService is ignored"
            )
        };
        rep.warn(
            vs,
            &format!("spec.hosts[{host_index}]"),
            format!(
                "host `{host}` is also routed by {} at {} (parentRefs[{parent}] names its Service), {scope}",
                route.resource.id(),
                location_of(route, &path),
            ),
        );
    }
}

/// The namespace of `name.namespace.svc.cluster.local`.
fn host_namespace(host: &str) -> Option<&str> {
    host.split('.').nth(1)
}

fn destination_rule_merges(accepted: &[Accepted], rep: &mut Reporter<'_>) {
    let mut by_host: HashMap<String, Vec<&Accepted>> = HashMap::new();
    for a in accepted {
        if let Spec::DestinationRule(dr) = &a.resource.spec {
            by_host
                .entry(qualify(&dr.host, a.resource.namespace()))
                .or_default()
                .push(a);
        }
    }
    for (host, mut rules) in by_host {
        if rules.len() < 2 {
            continue;
        }
        rules.sort_by(|x, y| precedence(&x.resource, &y.resource));
        let mut subset_owner: HashMap<&str, &Accepted> = HashMap::new();
        let mut policy_owner: Option<&Accepted> = None;
        for a in rules {
            let Spec::DestinationRule(dr) = &a.resource.spec else {
                continue;
            };
            if dr.traffic_policy.is_some() {
                match policy_owner {
                    Some(first) => rep.warn(
                        a,
                        "spec.trafficPolicy",
                        format!(
                            "host `{host}` already has a trafficPolicy from {} at {}, which wins; this one is ignored",
                            first.resource.id(),
                            first.resource.location
                        ),
                    ),
                    None => policy_owner = Some(a),
                }
            }
            for (i, subset) in dr.subsets.iter().enumerate() {
                match subset_owner.get(subset.name.as_str()) {
                    Some(first) => rep.warn(
                        a,
                        &format!("spec.subsets[{i}].name"),
                        format!(
                            "subset `{}` of `{host}` is already defined by {} at {}, which wins",
                            subset.name,
                            first.resource.id(),
                            first.resource.location
                        ),
                    ),
                    None => {
                        subset_owner.insert(&subset.name, a);
                    }
                }
            }
        }
    }
}

fn virtual_service_refs(a: &Accepted, vs: &VirtualService, known: &Known, rep: &mut Reporter<'_>) {
    let ns = a.resource.namespace();
    for (i, gw) in vs.gateways.iter().enumerate() {
        if gw == MESH_GATEWAY {
            continue;
        }
        let key = gateway_key(gw, ns);
        let (gns, gname) = key.split_once('/').unwrap_or((ns, gw));
        if !known.has(Kind::Gateway, gns, gname) {
            rep.warn(
                a,
                &format!("spec.gateways[{i}]"),
                format!(
                    "Gateway `{key}` is not in the loaded configuration; until it is, these routes are not served by it"
                ),
            );
        }
    }
    let mut reported_hosts: HashSet<String> = HashSet::new();
    // Most destinations of a VirtualService name the same host or two.
    let mut last: Option<(String, String)> = None;
    let mut check = |dest: &Destination, path: String, rep: &mut Reporter<'_>| {
        let host = match &last {
            Some((written, host)) if *written == dest.host => host.clone(),
            _ => {
                let host = qualify(&dest.host, ns);
                last = Some((dest.host.clone(), host.clone()));
                host
            }
        };
        if let Some(subset) = &dest.subset {
            let defined = known.subsets.get(&host).is_some_and(|s| s.contains(subset));
            if !defined {
                rep.warn(
                    a,
                    &format!("{path}.subset"),
                    format!(
                        "subset `{subset}` of `{host}` is not defined by any loaded DestinationRule; requests routed to it get 503 NC"
                    ),
                );
            }
        }
        if !known.has_service(&host) && reported_hosts.insert(host.clone()) {
            rep.warn(
                a,
                &format!("{path}.host"),
                format!(
                    "no loaded ServiceEntry defines `{host}`; until one does, requests routed to it get 503 UH"
                ),
            );
        }
    };
    for (i, rule) in vs.http.iter().enumerate() {
        for (j, rd) in rule.route.iter().enumerate() {
            check(
                &rd.destination,
                format!("spec.http[{i}].route[{j}].destination"),
                rep,
            );
        }
        if let Some(m) = &rule.mirror {
            check(m, format!("spec.http[{i}].mirror"), rep);
        }
        for (j, m) in rule.mirrors.iter().enumerate() {
            check(
                &m.destination,
                format!("spec.http[{i}].mirrors[{j}].destination"),
                rep,
            );
        }
    }
    for (i, rule) in vs.tcp.iter().enumerate() {
        for (j, rd) in rule.route.iter().enumerate() {
            check(
                &rd.destination,
                format!("spec.tcp[{i}].route[{j}].destination"),
                rep,
            );
        }
    }
    for (i, rule) in vs.tls.iter().enumerate() {
        for (j, rd) in rule.route.iter().enumerate() {
            check(
                &rd.destination,
                format!("spec.tls[{i}].route[{j}].destination"),
                rep,
            );
        }
    }
}

/// Several namespace-wide (selector-less) PeerAuthentications or Telemetry
/// resources in one namespace: only the oldest applies (SPEC 7, 10.1).
fn namespace_wide_duplicates(accepted: &[Accepted], rep: &mut Reporter<'_>) {
    let mut first: HashMap<(Kind, &str), &Accepted> = HashMap::new();
    let mut sorted: Vec<&Accepted> = accepted.iter().collect();
    sorted.sort_by(|x, y| precedence(&x.resource, &y.resource));
    for a in sorted {
        let namespace_wide = match &a.resource.spec {
            Spec::PeerAuthentication(pa) => pa.selector.is_none(),
            Spec::Telemetry(t) => t.selector.is_none(),
            _ => false,
        };
        if !namespace_wide {
            continue;
        }
        match first.get(&(a.resource.kind, a.resource.namespace())) {
            Some(winner) => rep.warn(
                a,
                "spec",
                format!(
                    "namespace `{}` already has a namespace-wide {} ({} at {}); only the oldest applies",
                    a.resource.namespace(),
                    a.resource.kind,
                    winner.resource.id(),
                    winner.resource.location
                ),
            ),
            None => {
                first.insert((a.resource.kind, a.resource.namespace()), a);
            }
        }
    }
}
