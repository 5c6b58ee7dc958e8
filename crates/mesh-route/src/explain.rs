//! # Explain: why a request goes where it goes
//!
//! `mesh explain` and the admin `/explain` endpoint answer the question a
//! mesh user asks most when traffic surprises them: for this method, URL,
//! headers and caller, which resource and rule decided, what else would
//! have matched, where the request goes, and which timeout, retry, fault and
//! mirror policy applies, defaults included.
//!
//! The answer is computed with the same compiled [`RoutingTable`] the data
//! plane uses ([`RoutingTable::decide`] picks the rule), so it cannot drift
//! from what the proxy does. The extra facts (the rules a winner shadows,
//! the weighted destinations, file:line of each rule) come from the
//! compiled matchers and, for positions, from re-reading the file
//! ([`mesh_core::locate`]): explaining is rare, so positions are not kept in
//! memory on every proxy.
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::sync::Arc;
//! use mesh_core::load::{LoadOptions, load_str};
//! use mesh_core::snapshot::Snapshot;
//! use mesh_route::explain::explain;
//! use mesh_route::matcher::RequestView;
//! use mesh_route::routing::RoutingTable;
//!
//! let yaml = "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
//!     metadata: {name: r, namespace: prod}\n\
//!     spec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n";
//! let loaded = load_str("vs.yaml", yaml, &LoadOptions::default());
//! let table = RoutingTable::compile(Arc::new(Snapshot::compile(1, loaded)));
//! let (method, uri, headers, labels) =
//!     (http::Method::GET, http::Uri::from_static("/"), http::HeaderMap::new(), BTreeMap::new());
//! let req = RequestView {
//!     method: &method, uri: &uri, headers: &headers, authority: "reviews",
//!     scheme: "http", port: None, gateway: "mesh",
//!     source_namespace: "prod", source_labels: &labels,
//! };
//! let explained = explain(&table, &req);
//! assert_eq!(explained.resource.unwrap().id, "VirtualService/prod/r");
//! assert_eq!(explained.rule.unwrap().index, 0);
//! ```

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::time::Duration;

use mesh_core::locate::field_location;
use mesh_core::resource::{Resource, Spec};
use mesh_core::schema::istio_networking::{ServiceEntryResolution, TrafficPolicy};
use serde::Serialize;

use crate::balance::{HashKey, LbPolicy};
use crate::decision::{
    AbortStatus, DestinationKey, RetryOn, RetrySpec, RouteAction, RouteDecision, RoutePolicy,
};
use crate::matcher::{CompiledVirtualService, RequestView};
use crate::random::SplitMix;
use crate::routing::{BLACKHOLE_CLUSTER, PASSTHROUGH_CLUSTER, RoutingTable, lb_policy, pick_port};

/// Everything `mesh explain` reports about one request.
#[derive(Clone, Debug, Serialize)]
pub struct Explanation {
    /// The request as it was understood.
    pub request: ExplainedRequest,
    /// The service host the request addresses, qualified.
    pub host: String,
    /// The resource whose rules decided; `None` when no routing resource
    /// governs the host (the default route).
    pub resource: Option<Located>,
    /// The rule that decided (and which of its match blocks matched).
    pub rule: Option<ExplainedRule>,
    /// Other rules of the same resource that match the request too but lose
    /// to the deciding rule.
    pub shadowed: Vec<ExplainedRule>,
    /// Resources that name this host but are not in force for this caller,
    /// with the reason.
    pub ignored: Vec<Ignored>,
    /// What happens: `forward`, a local redirect, direct response or 404.
    pub action: String,
    /// The candidate destinations with their weights, endpoints and
    /// destination policies.
    pub destinations: Vec<ExplainedDestination>,
    /// Timeout, retries, fault, mirrors and rewrite in force.
    pub policy: ExplainedPolicy,
}

/// The request being explained.
#[derive(Clone, Debug, Serialize)]
pub struct ExplainedRequest {
    /// The method.
    pub method: String,
    /// The URI as given.
    pub uri: String,
    /// Host / `:authority`.
    pub authority: String,
    /// `mesh` for a sidecar or client, else the Gateway.
    pub gateway: String,
    /// The caller's namespace.
    pub caller_namespace: String,
    /// The caller's labels.
    pub caller_labels: BTreeMap<String, String>,
}

/// A resource and where it was written.
#[derive(Clone, Debug, Serialize)]
pub struct Located {
    /// `Kind/namespace/name`.
    pub id: String,
    /// `file:line:col`.
    pub at: String,
}

/// One rule of the deciding resource.
#[derive(Clone, Debug, Serialize)]
pub struct ExplainedRule {
    /// Index in the resource's rule list (`http`, `rules` or `routes`).
    pub index: usize,
    /// The rule's name, if it has one.
    pub name: Option<String>,
    /// Index of the match block that matched; `None` when the rule has no
    /// conditions or the dialect does not say.
    pub match_index: Option<usize>,
    /// Whether the rule has no conditions (takes every request).
    pub unconditional: bool,
    /// `file:line:col` of the rule (of the match block when known).
    pub at: String,
}

/// A resource that names the host but does not govern this request.
#[derive(Clone, Debug, Serialize)]
pub struct Ignored {
    /// `Kind/namespace/name`.
    pub id: String,
    /// `file:line:col`.
    pub at: String,
    /// Why it is not in force.
    pub reason: String,
}

/// One candidate destination.
#[derive(Clone, Debug, Serialize)]
pub struct ExplainedDestination {
    /// The qualified host.
    pub host: String,
    /// The subset, if any.
    pub subset: Option<String>,
    /// The port the route names, if any.
    pub port: Option<u16>,
    /// Share of the rule's traffic, in percent (one decimal).
    pub percent: f64,
    /// `address:port` of each endpoint the balancer picks among.
    pub endpoints: Vec<String>,
    /// What a request sent here gets instead of an endpoint, when it
    /// cannot get one (`503 NC`, `503 UH`, `502` under `REGISTRY_ONLY`).
    pub problem: Option<String>,
    /// The load-balancing policy.
    pub load_balancer: String,
    /// The DestinationRule's `connectionPool` in force, if any.
    pub connection_pool: Option<serde_json::Value>,
    /// The DestinationRule's `outlierDetection` in force, if any.
    pub outlier_detection: Option<serde_json::Value>,
}

/// The policies of the deciding rule, defaults spelled out.
#[derive(Clone, Debug, Serialize)]
pub struct ExplainedPolicy {
    /// The whole-request timeout.
    pub timeout: String,
    /// The retry policy.
    pub retries: String,
    /// Fault injection.
    pub fault: String,
    /// Mirror destinations.
    pub mirrors: Vec<String>,
    /// Path / authority rewrite.
    pub rewrite: String,
}

/// A request to explain, as a person types it: method, URL, `name: value`
/// headers and the caller's identity. Parsed once, then explained against
/// any table (the CLI's freshly loaded one, or a proxy's live one).
#[derive(Clone, Debug)]
pub struct ExplainQuery {
    /// The method.
    pub method: http::Method,
    /// The URI: absolute (`http://reviews:9080/x`) or a path with a `Host`
    /// header.
    pub uri: http::Uri,
    /// The headers.
    pub headers: http::HeaderMap,
    /// `mesh` (a sidecar or client).
    pub gateway: String,
    /// The caller's namespace.
    pub namespace: String,
    /// The caller's labels.
    pub labels: BTreeMap<String, String>,
}

impl ExplainQuery {
    /// Parses a method, URL and `name: value` header lines.
    pub fn parse(
        method: &str,
        url: &str,
        headers: &[String],
        namespace: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<ExplainQuery, String> {
        let method = http::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("invalid method {method:?}"))?;
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
        let mut map = http::HeaderMap::new();
        for line in headers {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("header {line:?} is not `name: value`"))?;
            let name = http::HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| format!("invalid header name in {line:?}"))?;
            let value = http::HeaderValue::from_str(value.trim())
                .map_err(|_| format!("invalid header value in {line:?}"))?;
            map.append(name, value);
        }
        if uri.authority().is_none() && !map.contains_key(http::header::HOST) {
            return Err(format!(
                "{url:?} names no host: give an absolute URL (http://reviews/...) or -H 'host: reviews'"
            ));
        }
        Ok(ExplainQuery {
            method,
            uri,
            headers: map,
            gateway: crate::routing::MESH.to_owned(),
            namespace: namespace.to_owned(),
            labels,
        })
    }

    /// Explains the query against `table`.
    pub fn explain(&self, table: &RoutingTable) -> Explanation {
        let authority = self
            .uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| {
                self.headers
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
            })
            .unwrap_or_default();
        let port = authority
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .or_else(|| self.uri.port_u16());
        let req = RequestView {
            method: &self.method,
            uri: &self.uri,
            headers: &self.headers,
            authority,
            scheme: self.uri.scheme_str().unwrap_or("http"),
            port,
            gateway: &self.gateway,
            source_namespace: &self.namespace,
            source_labels: &self.labels,
        };
        explain(table, &req)
    }
}

/// Explains `req` against `table`. Weighted choices are listed, not drawn.
pub fn explain(table: &RoutingTable, req: &RequestView<'_>) -> Explanation {
    let decision = table.decide(req, &SplitMix::seeded(0));
    let host = table
        .snapshot
        .index
        .resolve_host(req.authority, req.source_namespace);
    let resource = find_resource(table, &decision.route.resource);
    let mut explained = Explanation {
        request: ExplainedRequest {
            method: req.method.to_string(),
            uri: req.uri.to_string(),
            authority: req.authority.to_owned(),
            gateway: req.gateway.to_owned(),
            caller_namespace: req.source_namespace.to_owned(),
            caller_labels: req.source_labels.clone(),
        },
        host: host.clone(),
        resource: resource.map(|r| Located {
            id: r.id(),
            at: r.location.to_string(),
        }),
        rule: None,
        shadowed: Vec::new(),
        ignored: ignored(table, &host, req, resource),
        action: action(&decision),
        destinations: Vec::new(),
        policy: policy(&decision.policy, resource),
    };
    let targets = match resource.map(|r| &r.spec) {
        Some(Spec::VirtualService(_)) => {
            explain_virtual_service(table, req, resource, &decision, &mut explained)
        }
        Some(Spec::HttpRoute(route) | Spec::LinkerdHttpRoute(route)) => {
            let resource = resource.map(|r| (r, route));
            explain_http_route(resource, &decision, &mut explained)
        }
        _ => {
            if let (Some(r), Some(index)) = (resource, decision.route.rule_index) {
                explained.rule = Some(rule_at(
                    r,
                    index,
                    decision.route.rule_name.as_deref(),
                    None,
                    "spec.routes",
                ));
            }
            decision
                .forward()
                .map(|f| vec![(f.destination.clone(), 1)])
                .unwrap_or_default()
        }
    };
    if !targets.is_empty() {
        // The weighted draw above picked one of them; the report lists all.
        explained.action = "forward".to_owned();
    }
    let total: u64 = targets.iter().map(|(_, w)| *w).sum();
    explained.destinations = targets
        .into_iter()
        .map(|(dest, weight)| destination(table, req, &dest, weight, total))
        .collect();
    explained
}

/// The resource a decision names (`Kind/namespace/name`).
fn find_resource<'t>(table: &'t RoutingTable, id: &str) -> Option<&'t Resource> {
    if id == "default" {
        return None;
    }
    table
        .snapshot
        .resources
        .iter()
        .map(|r| &**r)
        .find(|r| r.id() == id)
}

fn rule_at(
    resource: &Resource,
    index: usize,
    name: Option<&str>,
    match_index: Option<usize>,
    rules_path: &str,
) -> ExplainedRule {
    let unconditional = match_index.is_none() && rules_path == "spec.http";
    let (block_field, path) = match rules_path {
        "spec.http" => ("match", format!("{rules_path}[{index}]")),
        _ => ("matches", format!("{rules_path}[{index}]")),
    };
    let path = match match_index {
        Some(m) => format!("{path}.{block_field}[{m}]"),
        None => path,
    };
    ExplainedRule {
        index,
        name: name.map(str::to_owned),
        match_index,
        unconditional,
        at: field_location(resource, &path).to_string(),
    }
}

fn explain_virtual_service(
    table: &RoutingTable,
    req: &RequestView<'_>,
    resource: Option<&Resource>,
    decision: &RouteDecision,
    explained: &mut Explanation,
) -> Vec<(DestinationKey, u64)> {
    let (Some(resource), Some(vs)) = (
        resource,
        table.virtual_service(req.authority, req.source_namespace),
    ) else {
        return Vec::new();
    };
    let name_of = |i: usize| rule_name(resource, i);
    let mut matching = vs.matching(req).into_iter();
    if let Some(first) = matching.next() {
        explained.rule = Some(rule_at(
            resource,
            first.rule,
            name_of(first.rule).as_deref(),
            first.block,
            "spec.http",
        ));
        explained.shadowed = matching
            .map(|m| {
                rule_at(
                    resource,
                    m.rule,
                    name_of(m.rule).as_deref(),
                    m.block,
                    "spec.http",
                )
            })
            .collect();
    }
    match decision.route.rule_index {
        Some(i) => vs
            .targets(i)
            .into_iter()
            .map(|t| (t.destination, t.weight))
            .collect(),
        None => Vec::new(),
    }
}

fn rule_name(resource: &Resource, index: usize) -> Option<String> {
    match &resource.spec {
        Spec::VirtualService(vs) => vs.http.get(index).and_then(|r| r.name.clone()),
        _ => None,
    }
}

fn explain_http_route(
    resource: Option<(&Resource, &mesh_core::schema::gateway_api::HttpRoute)>,
    decision: &RouteDecision,
    explained: &mut Explanation,
) -> Vec<(DestinationKey, u64)> {
    let (Some((resource, route)), Some(index)) = (resource, decision.route.rule_index) else {
        return Vec::new();
    };
    explained.rule = Some(rule_at(
        resource,
        index,
        decision.route.rule_name.as_deref(),
        None,
        "spec.rules",
    ));
    let Some(rule) = route.rules.get(index) else {
        return Vec::new();
    };
    let namespace = resource.namespace();
    rule.backend_refs
        .iter()
        .map(|b| {
            let ns = b.namespace.as_deref().unwrap_or(namespace);
            let host = format!("{}.{ns}.svc.cluster.local", b.name.to_ascii_lowercase());
            let key = DestinationKey {
                host: host.into(),
                subset: None,
                port: b.port.and_then(|p| u16::try_from(p).ok()),
            };
            (key, u64::from(b.weight()))
        })
        .collect()
}

/// Other routing resources naming `host`, and why they do not decide.
fn ignored(
    table: &RoutingTable,
    host: &str,
    req: &RequestView<'_>,
    deciding: Option<&Resource>,
) -> Vec<Ignored> {
    let deciding_id = deciding.map(Resource::id);
    let mut out = Vec::new();
    for resource in &table.snapshot.resources {
        let id = resource.id();
        if Some(&id) == deciding_id.as_ref() {
            continue;
        }
        let reason = match &resource.spec {
            Spec::VirtualService(vs) => {
                let names_host = vs
                    .hosts
                    .iter()
                    .any(|h| mesh_core::host::qualify(h, resource.namespace()) == host);
                if !names_host {
                    continue;
                }
                let compiled = CompiledVirtualService::compile(resource).ok();
                match compiled {
                    Some(c) if !c.applies_to(req.gateway) => format!(
                        "bound to gateways [{}], not to {}",
                        c.gateways().collect::<Vec<_>>().join(", "),
                        req.gateway
                    ),
                    _ => "another resource governs this host (see `mesh validate` warnings)"
                        .to_owned(),
                }
            }
            Spec::ServiceProfile(_) => {
                if resource.name().to_ascii_lowercase() != host {
                    continue;
                }
                "an HTTPRoute or VirtualService governs this host; the profile's budget still caps retries".to_owned()
            }
            Spec::HttpRoute(route) | Spec::LinkerdHttpRoute(route) => {
                let names_host = route.parent_refs.iter().any(|p| {
                    p.kind.as_deref().unwrap_or("Gateway") == "Service"
                        && format!(
                            "{}.{}.svc.cluster.local",
                            p.name,
                            p.namespace.as_deref().unwrap_or(resource.namespace())
                        ) == host
                });
                if !names_host {
                    continue;
                }
                "does not apply to this caller (attachment or match rules; see SPEC 3.1)".to_owned()
            }
            _ => continue,
        };
        out.push(Ignored {
            id,
            at: resource.location.to_string(),
            reason,
        });
    }
    out
}

fn action(decision: &RouteDecision) -> String {
    match &decision.action {
        RouteAction::Forward(_) => "forward".to_owned(),
        RouteAction::Redirect { status, location } => format!(
            "redirect {} to {}",
            status.as_u16(),
            String::from_utf8_lossy(location.as_bytes())
        ),
        RouteAction::DirectResponse { status, body } => {
            format!("direct response {} ({} bytes)", status.as_u16(), body.len())
        }
        RouteAction::NoRoute => "no rule matches: 404 NR".to_owned(),
    }
}

fn destination(
    table: &RoutingTable,
    req: &RequestView<'_>,
    dest: &DestinationKey,
    weight: u64,
    total: u64,
) -> ExplainedDestination {
    let index = &table.snapshot.index;
    let host: &str = &dest.host;
    let percent = if total == 0 {
        0.0
    } else {
        (weight as f64 * 1000.0 / total as f64).round() / 10.0
    };
    if let Some(explained) = egress_destination(table, req, dest, percent) {
        return explained;
    }
    let service = index.services.get(host);
    let port = service.and_then(|s| pick_port(&s.ports, dest.port.or(req.port)));
    let subset_defined = dest.subset.as_ref().is_none_or(|s| {
        index
            .destinations
            .get(host)
            .is_some_and(|p| p.subsets.contains_key(&**s))
    });
    let endpoints: Vec<String> = if subset_defined {
        index
            .endpoints(host, dest.subset.as_deref())
            .map(|eps| {
                eps.iter()
                    .map(|e| {
                        let number = match &port {
                            Some(p) => e.port_for(p),
                            None => u32::from(dest.port.or(req.port).unwrap_or(80)),
                        };
                        if e.address.contains(':') {
                            format!("[{}]:{number}", e.address)
                        } else {
                            format!("{}:{number}", e.address)
                        }
                    })
                    .collect()
            })
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let problem =
        if service.is_none() && !index.destinations.contains_key(host) && is_http_route(table, req)
        {
            Some(format!(
                "500: {host} is not a known Service (invalid backendRef, SPEC 3.3)"
            ))
        } else if !subset_defined {
            Some(format!(
                "503 NC: subset {} is not defined by any DestinationRule for {host}",
                dest.subset.as_deref().unwrap_or_default()
            ))
        } else if endpoints.is_empty() {
            Some(format!(
                "503 UH: no endpoints (no ServiceEntry/WorkloadEntry gives {host} endpoints)"
            ))
        } else {
            None
        };
    let (pool, outlier) = destination_policies(table, dest);
    ExplainedDestination {
        host: host.to_owned(),
        subset: dest.subset.as_deref().map(str::to_owned),
        port: dest.port,
        percent,
        endpoints,
        problem,
        load_balancer: lb_name(&lb_policy(&table.snapshot, dest), table, dest),
        connection_pool: pool,
        outlier_detection: outlier,
    }
}

/// A host outside the registry on its default route, as the balance stage
/// treats it (SPEC 6.2, `RoutingTable::egress`): the original destination
/// (`host:port` as the caller named it, port 80 when absent), or 502 under
/// `REGISTRY_ONLY`. `None` for every other destination.
fn egress_destination(
    table: &RoutingTable,
    req: &RequestView<'_>,
    dest: &DestinationKey,
    percent: f64,
) -> Option<ExplainedDestination> {
    let host: &str = &dest.host;
    let named = mesh_core::host::strip_port(req.authority);
    let (endpoints, problem, load_balancer) = match host {
        BLACKHOLE_CLUSTER => (
            Vec::new(),
            Some(format!(
                "502: {named} is not in the service registry and meshConfig \
                 outboundTrafficPolicy is REGISTRY_ONLY (SPEC 6.2)"
            )),
            "none".to_owned(),
        ),
        PASSTHROUGH_CLUSTER => {
            let lower = named.to_ascii_lowercase();
            let wildcard = table
                .snapshot
                .index
                .services
                .iter()
                .filter(|(k, s)| {
                    k.starts_with('*')
                        && matches!(
                            s.resolution,
                            ServiceEntryResolution::None | ServiceEntryResolution::DynamicDns
                        )
                        && mesh_core::host::covers(k, &lower)
                })
                .map(|(k, _)| k)
                .max_by_key(|k| k.len());
            let why = match wildcard {
                Some(pattern) => format!("ServiceEntry host {pattern} without endpoints"),
                None => "not in the service registry; outboundTrafficPolicy ALLOW_ANY".to_owned(),
            };
            let original = if named.len() < req.authority.len() {
                req.authority.to_owned()
            } else {
                format!("{}:80", req.authority)
            };
            (
                vec![original],
                None,
                format!("passthrough to the original destination ({why})"),
            )
        }
        _ => return None,
    };
    Some(ExplainedDestination {
        host: host.to_owned(),
        subset: dest.subset.as_deref().map(str::to_owned),
        port: dest.port,
        percent,
        endpoints,
        problem,
        load_balancer,
        connection_pool: None,
        outlier_detection: None,
    })
}

/// Whether an HTTPRoute decided `req` (its unknown backends answer 500).
fn is_http_route(table: &RoutingTable, req: &RequestView<'_>) -> bool {
    let decision = table.decide(req, &SplitMix::seeded(0));
    decision.route.resource.starts_with("HTTPRoute/")
}

/// The policy as Istio spells it, marked when no DestinationRule sets it.
fn lb_name(policy: &LbPolicy, table: &RoutingTable, dest: &DestinationKey) -> String {
    let key = |k: &HashKey| match k {
        HashKey::Header(h) => format!("header {h}"),
        HashKey::Cookie { name, .. } => format!("cookie {name}"),
        HashKey::SourceIp => "source IP".to_owned(),
        HashKey::QueryParameter(q) => format!("query parameter {q}"),
    };
    let name = match policy {
        LbPolicy::LeastRequest => "LEAST_REQUEST".to_owned(),
        LbPolicy::RoundRobin => "ROUND_ROBIN".to_owned(),
        LbPolicy::Random => "RANDOM".to_owned(),
        LbPolicy::Passthrough => "PASSTHROUGH".to_owned(),
        LbPolicy::RingHash {
            minimum_ring_size,
            key: k,
        } => format!(
            "RING_HASH on {} (minimumRingSize {minimum_ring_size})",
            key(k)
        ),
        LbPolicy::Maglev { table_size, key: k } => {
            format!("MAGLEV on {} (tableSize {table_size})", key(k))
        }
    };
    let configured = table
        .snapshot
        .index
        .destinations
        .get(&*dest.host)
        .is_some_and(|p| {
            p.traffic_policy
                .as_ref()
                .is_some_and(|tp| tp.load_balancer.is_some())
                || dest
                    .subset
                    .as_ref()
                    .and_then(|s| p.subsets.get(&**s))
                    .and_then(|s| s.traffic_policy.as_ref())
                    .is_some_and(|tp| tp.load_balancer.is_some())
        });
    if configured {
        name
    } else {
        format!("{name} (default)")
    }
}

/// The DestinationRule's connectionPool and outlierDetection for `dest`:
/// the subset's own, else the top-level ones (SPEC 5.1).
fn destination_policies(
    table: &RoutingTable,
    dest: &DestinationKey,
) -> (Option<serde_json::Value>, Option<serde_json::Value>) {
    let Some(policy) = table.snapshot.index.destinations.get(&*dest.host) else {
        return (None, None);
    };
    let subset: Option<&TrafficPolicy> = dest
        .subset
        .as_ref()
        .and_then(|s| policy.subsets.get(&**s))
        .and_then(|s| s.traffic_policy.as_ref());
    let top = policy.traffic_policy.as_ref();
    let pick = |f: fn(&TrafficPolicy) -> Option<serde_json::Value>| {
        subset.and_then(f).or_else(|| top.and_then(f))
    };
    (
        pick(|tp| {
            tp.connection_pool
                .as_ref()
                .and_then(|c| serde_json::to_value(c).ok())
        }),
        pick(|tp| {
            tp.outlier_detection
                .as_ref()
                .and_then(|o| serde_json::to_value(o).ok())
        }),
    )
}

fn policy(policy: &RoutePolicy, resource: Option<&Resource>) -> ExplainedPolicy {
    let timeout = match policy.timeout {
        Some(t) => duration(t),
        None => "none (no route timeout; the default)".to_owned(),
    };
    let profile = matches!(resource.map(|r| &r.spec), Some(Spec::ServiceProfile(_)));
    let http_route = matches!(
        resource.map(|r| &r.spec),
        Some(Spec::HttpRoute(_) | Spec::LinkerdHttpRoute(_))
    );
    let retries = match &policy.retries {
        Some(spec) if profile && spec.attempts == 0 => "none (route is not isRetryable)".to_owned(),
        Some(spec) if http_route && spec.attempts == 0 => "none (the rule has no retry)".to_owned(),
        Some(spec) => retries(spec, "route"),
        None => match resource.map(|r| &r.spec) {
            Some(Spec::ServiceProfile(_)) => "none (route is not isRetryable)".to_owned(),
            Some(Spec::HttpRoute(_) | Spec::LinkerdHttpRoute(_)) => {
                "none (no retry on the rule)".to_owned()
            }
            _ => retries(&RetrySpec::istio_default(), "Istio default"),
        },
    };
    let fault = match &policy.fault {
        None => "none".to_owned(),
        Some(f) => {
            let mut parts = Vec::new();
            if let Some(d) = &f.delay {
                parts.push(format!(
                    "delay {} for {}%",
                    duration(d.fixed_delay),
                    d.percent
                ));
            }
            if let Some(a) = &f.abort {
                let status = match &a.status {
                    AbortStatus::Http(s) => format!("HTTP {}", s.as_u16()),
                    AbortStatus::Grpc { code, name } => format!("gRPC {name} ({code})"),
                };
                parts.push(format!("abort {status} for {}%", a.percent));
            }
            parts.join(", then ")
        }
    };
    let mirrors = policy
        .mirrors
        .iter()
        .map(|m| {
            let mut s = m.destination.host.to_string();
            if let Some(subset) = &m.destination.subset {
                let _ = write!(s, " subset {subset}");
            }
            let _ = write!(s, " ({}%)", m.percent);
            s
        })
        .collect();
    let rewrite = match &policy.rewrite {
        None => "none".to_owned(),
        Some(r) => format!("{r:?}"),
    };
    ExplainedPolicy {
        timeout,
        retries,
        fault,
        mirrors,
        rewrite,
    }
}

fn retries(spec: &RetrySpec, source: &str) -> String {
    if spec.attempts == 0 {
        return format!("disabled (attempts 0; {source})");
    }
    let mut s = if spec.attempts == u32::MAX {
        "as many attempts as the budget allows".to_owned()
    } else {
        format!("{} attempts", spec.attempts)
    };
    if let Some(t) = spec.per_try_timeout {
        let _ = write!(s, ", perTryTimeout {}", duration(t));
    }
    if spec.classes.is_some() {
        s.push_str(", on failure responses (isRetryable)");
    } else {
        let on: Vec<String> = spec
            .retry_on
            .iter()
            .filter(|r| !matches!(r, RetryOn::Status(_)))
            .map(|r| retry_on(*r))
            .collect();
        let _ = write!(s, ", on {}", on.join(","));
        let codes: Vec<String> = spec.status_codes().map(|c| c.to_string()).collect();
        if !codes.is_empty() {
            let _ = write!(s, " [{}]", codes.join(","));
        }
    }
    if let Some(b) = &spec.budget {
        let _ = write!(
            s,
            ", budget ratio {} + {}/s over {}",
            b.retry_ratio,
            b.min_retries_per_second,
            duration(b.ttl)
        );
    }
    let _ = write!(s, " ({source})");
    s
}

fn retry_on(token: RetryOn) -> String {
    let name = match token {
        RetryOn::FiveXx => "5xx",
        RetryOn::GatewayError => "gateway-error",
        RetryOn::Reset => "reset",
        RetryOn::ResetBeforeRequest => "reset-before-request",
        RetryOn::ConnectFailure => "connect-failure",
        RetryOn::EnvoyRatelimited => "envoy-ratelimited",
        RetryOn::Retriable4xx => "retriable-4xx",
        RetryOn::RefusedStream => "refused-stream",
        RetryOn::RetriableStatusCodes => "retriable-status-codes",
        RetryOn::RetriableHeaders => "retriable-headers",
        RetryOn::Http3PostConnectFailure => "http3-post-connect-failure",
        RetryOn::Cancelled => "cancelled",
        RetryOn::DeadlineExceeded => "deadline-exceeded",
        RetryOn::Internal => "internal",
        RetryOn::ResourceExhausted => "resource-exhausted",
        RetryOn::Unavailable => "unavailable",
        RetryOn::Status(code) => return code.to_string(),
    };
    name.to_owned()
}

/// `1.5s`, `250ms`, `1m30s`, as people write them in YAML.
fn duration(d: Duration) -> String {
    mesh_core::schema::common::Duration(d).to_string()
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.request;
        writeln!(
            f,
            "request      {} {} (host {})",
            r.method, r.uri, r.authority
        )?;
        let labels: Vec<String> = r
            .caller_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        writeln!(
            f,
            "caller       namespace {}, labels {{{}}}, via {}",
            r.caller_namespace,
            labels.join(", "),
            r.gateway
        )?;
        writeln!(f, "service      {}", self.host)?;
        match &self.resource {
            Some(res) => writeln!(f, "decided by   {} ({})", res.id, res.at)?,
            None => writeln!(
                f,
                "decided by   no routing resource: the host's default route"
            )?,
        }
        if let Some(rule) = &self.rule {
            writeln!(f, "rule         {}", describe_rule(rule))?;
        }
        for rule in &self.shadowed {
            writeln!(f, "also matches {} (shadowed)", describe_rule(rule))?;
        }
        for ignored in &self.ignored {
            writeln!(
                f,
                "not in force {} ({}): {}",
                ignored.id, ignored.at, ignored.reason
            )?;
        }
        writeln!(f, "action       {}", self.action)?;
        for d in &self.destinations {
            let mut line = d.host.clone();
            if let Some(s) = &d.subset {
                let _ = write!(line, " subset {s}");
            }
            if let Some(p) = d.port {
                let _ = write!(line, " port {p}");
            }
            writeln!(f, "destination  {line} ({}%)", d.percent)?;
            match &d.problem {
                Some(problem) => writeln!(f, "  endpoints  none: {problem}")?,
                None => writeln!(f, "  endpoints  {}", d.endpoints.join(", "))?,
            }
            writeln!(f, "  balancer   {}", d.load_balancer)?;
            if let Some(pool) = &d.connection_pool {
                writeln!(f, "  pool       {pool}")?;
            }
            if let Some(outlier) = &d.outlier_detection {
                writeln!(f, "  outlier    {outlier}")?;
            }
        }
        let p = &self.policy;
        writeln!(f, "timeout      {}", p.timeout)?;
        writeln!(f, "retries      {}", p.retries)?;
        writeln!(f, "fault        {}", p.fault)?;
        if p.mirrors.is_empty() {
            writeln!(f, "mirror       none")?;
        }
        for m in &p.mirrors {
            writeln!(f, "mirror       {m}")?;
        }
        writeln!(f, "rewrite      {}", p.rewrite)
    }
}

fn describe_rule(rule: &ExplainedRule) -> String {
    let mut s = format!("#{}", rule.index);
    if let Some(name) = &rule.name {
        let _ = write!(s, " \"{name}\"");
    }
    if let Some(m) = rule.match_index {
        let _ = write!(s, ", match block {m}");
    } else if rule.unconditional {
        s.push_str(", every request");
    }
    let _ = write!(s, " ({})", rule.at);
    s
}
