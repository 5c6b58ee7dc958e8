//! Istio VirtualService HTTP routes compiled into matchers (SPEC 4.2–4.4).
//!
//! A VirtualService is compiled once per snapshot: regexes are built
//! (anchored for a full match), header names and values parsed, hosts
//! qualified, weights summed and policies typed. Routing a request is then a
//! walk over the rules in list order, borrowing from the request, with one
//! random draw when the winning rule splits traffic.
//!
//! ```
//! use std::collections::BTreeMap;
//! use mesh_core::load::{LoadOptions, load_str};
//! use mesh_route::decision::RouteAction;
//! use mesh_route::matcher::{CompiledVirtualService, RequestView};
//! use mesh_route::random::SplitMix;
//!
//! let yaml = "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
//!     metadata: {name: r, namespace: prod}\n\
//!     spec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v1}\n";
//! let loaded = load_str("vs.yaml", yaml, &LoadOptions::default());
//! let vs = CompiledVirtualService::compile(&loaded.resources[0]).unwrap();
//! let (method, uri, headers, labels) =
//!     (http::Method::GET, http::Uri::from_static("/"), http::HeaderMap::new(), BTreeMap::new());
//! let req = RequestView {
//!     method: &method, uri: &uri, headers: &headers, authority: "reviews",
//!     scheme: "http", port: Some(9080), gateway: "mesh",
//!     source_namespace: "prod", source_labels: &labels,
//! };
//! assert!(vs.applies_to("mesh"));
//! let decision = vs.route(&req, &SplitMix::seeded(1));
//! let RouteAction::Forward(fwd) = decision.action else { panic!() };
//! assert_eq!(&*fwd.destination.host, "reviews.prod.svc.cluster.local");
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use mesh_core::host::qualify;
use mesh_core::resource::{Resource, Spec};

use crate::decision::{RouteAction, RouteDecision, RouteId, RoutePolicy};
use crate::random::RandomSource;

mod compile;
pub mod headers;
pub mod redirect;
mod request_match;
pub mod rewrite;
mod string_match;

use compile::{CompiledRule, RuleAction};
pub use headers::HeaderEdits;
pub use redirect::{Redirect, RedirectPath, RedirectPort};
use request_match::{normalize_gateway, root_prefix};
pub use rewrite::{Rewrite, UriRewrite};

/// The request attributes routing reads, borrowed from the request and
/// from the proxy's own identity.
#[derive(Clone, Copy, Debug)]
pub struct RequestView<'a> {
    /// The method.
    pub method: &'a http::Method,
    /// The URI (its path is matched by `uri`; its query by `queryParams`).
    pub uri: &'a http::Uri,
    /// The request headers.
    pub headers: &'a http::HeaderMap,
    /// The Host / `:authority`, as sent (port included if the client sent one).
    pub authority: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// The destination service port the request addressed.
    pub port: Option<u16>,
    /// `mesh` for a sidecar, or `namespace/name` of the Istio Gateway.
    pub gateway: &'a str,
    /// The namespace of the calling workload (this proxy's workload).
    pub source_namespace: &'a str,
    /// The labels of the calling workload.
    pub source_labels: &'a BTreeMap<String, String>,
}

/// Why a VirtualService could not be compiled.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{resource}: {field}: {message}")]
pub struct CompileError {
    /// `Kind/namespace/name`.
    pub resource: String,
    /// The field path (`http[2].match[0].uri.regex`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// A VirtualService's HTTP rules, compiled.
#[derive(Clone, Debug)]
pub struct CompiledVirtualService {
    resource: Arc<str>,
    namespace: Arc<str>,
    hosts: Vec<String>,
    gateways: Vec<Box<str>>,
    rules: Vec<CompiledRule>,
    no_route: RouteId,
    no_route_policy: Arc<RoutePolicy>,
    /// The shared `/` prefix of blocks without a `uri` condition.
    root: Arc<str>,
}

impl CompiledVirtualService {
    /// Compiles a `VirtualService` resource.
    pub fn compile(resource: &Resource) -> Result<CompiledVirtualService, CompileError> {
        let id = resource.id();
        let error = |field: String, message: String| CompileError {
            resource: id.clone(),
            field,
            message,
        };
        let Spec::VirtualService(vs) = &resource.spec else {
            return Err(error(String::new(), "not a VirtualService".into()));
        };
        let namespace = resource.namespace();
        let resource_id: Arc<str> = Arc::from(id.as_str());
        let root = root_prefix();
        let rules = vs
            .http
            .iter()
            .enumerate()
            .map(|(i, rule)| {
                CompiledRule::compile(rule, i, &resource_id, namespace, &root).map_err(
                    |(field, message)| {
                        let field = if field.is_empty() {
                            format!("http[{i}]")
                        } else {
                            format!("http[{i}].{field}")
                        };
                        error(field, message)
                    },
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CompiledVirtualService {
            no_route: RouteId {
                resource: Arc::clone(&resource_id),
                rule_index: None,
                rule_name: None,
            },
            resource: resource_id,
            namespace: namespace.into(),
            hosts: vs.hosts.iter().map(|h| qualify(h, namespace)).collect(),
            gateways: vs
                .effective_gateways()
                .into_iter()
                .map(|g| normalize_gateway(g, namespace))
                .collect(),
            rules,
            no_route_policy: Arc::default(),
            root,
        })
    }

    /// `VirtualService/<namespace>/<name>`.
    pub fn resource(&self) -> &Arc<str> {
        &self.resource
    }

    /// The VirtualService's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The hosts, qualified in the VirtualService's namespace.
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    /// The number of HTTP rules.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Whether the VirtualService binds to `gateway` (`mesh` for sidecars,
    /// `namespace/name` for an Istio Gateway). Its `gateways` default to
    /// `[mesh]`; a list without `mesh` is ignored by sidecars (SPEC 4.1).
    /// The caller skips a VirtualService that does not apply, rather than
    /// answering "no route".
    pub fn applies_to(&self, gateway: &str) -> bool {
        self.gateways.iter().any(|g| **g == *gateway)
    }

    /// The decision for `req`: the first rule with a matching block wins
    /// (SPEC 4.2); none matching is [`RouteAction::NoRoute`] (404 `NR`).
    /// `random` picks among weighted destinations (no draw when the rule has
    /// a single destination).
    pub fn route(&self, req: &RequestView<'_>, random: &dyn RandomSource) -> RouteDecision {
        for rule in &self.rules {
            let matched_prefix = if rule.matches.is_empty() {
                // No `match`: every request; the generated route's prefix is `/`.
                Some(Some(&self.root))
            } else {
                rule.matches
                    .iter()
                    .find(|m| m.matches(req))
                    .map(|m| m.matched_prefix.as_ref())
            };
            let Some(matched_prefix) = matched_prefix else {
                continue;
            };
            return RouteDecision {
                route: rule.id.clone(),
                action: act(&rule.action, matched_prefix, req, random),
                policy: Arc::clone(&rule.policy),
            };
        }
        RouteDecision {
            route: self.no_route.clone(),
            action: RouteAction::NoRoute,
            policy: Arc::clone(&self.no_route_policy),
        }
    }
}

/// One rule that matches a request, for `mesh explain`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleMatch {
    /// Index of the rule in `http`.
    pub rule: usize,
    /// Index of the first matching block in the rule's `match`; `None` for a
    /// rule without `match` (it takes every request).
    pub block: Option<usize>,
}

/// A rule's weighted destinations, for `mesh explain`.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleTarget {
    /// The destination.
    pub destination: crate::decision::DestinationKey,
    /// Its weight within the rule.
    pub weight: u64,
}

impl CompiledVirtualService {
    /// Every rule that matches `req`, in list order: the first decides,
    /// the others are shadowed by it (SPEC 4.2).
    pub fn matching(&self, req: &RequestView<'_>) -> Vec<RuleMatch> {
        self.rules
            .iter()
            .enumerate()
            .filter_map(|(rule, compiled)| {
                if compiled.matches.is_empty() {
                    return Some(RuleMatch { rule, block: None });
                }
                let block = compiled.matches.iter().position(|m| m.matches(req))?;
                Some(RuleMatch {
                    rule,
                    block: Some(block),
                })
            })
            .collect()
    }

    /// The weighted destinations of rule `rule` (empty for redirects,
    /// direct responses and an index out of range).
    pub fn targets(&self, rule: usize) -> Vec<RuleTarget> {
        let Some(RuleAction::Forward {
            targets,
            cumulative,
        }) = self.rules.get(rule).map(|r| &r.action)
        else {
            return Vec::new();
        };
        let mut previous = 0;
        targets
            .iter()
            .zip(cumulative)
            .map(|(t, &c)| {
                let weight = c - previous;
                previous = c;
                RuleTarget {
                    destination: t.destination.clone(),
                    weight,
                }
            })
            .collect()
    }

    /// The gateways the VirtualService binds to (`mesh` for sidecars,
    /// `namespace/name` for Istio Gateways).
    pub fn gateways(&self) -> impl Iterator<Item = &str> {
        self.gateways.iter().map(|g| &**g)
    }
}

fn act(
    action: &RuleAction,
    matched_prefix: Option<&Arc<str>>,
    req: &RequestView<'_>,
    random: &dyn RandomSource,
) -> RouteAction {
    match action {
        RuleAction::Forward {
            targets,
            cumulative,
        } => {
            let index = random.weighted(cumulative);
            match targets.get(index).or_else(|| targets.last()) {
                Some(target) => {
                    let mut forward = target.clone();
                    forward.matched_prefix = matched_prefix.cloned();
                    RouteAction::Forward(forward)
                }
                // Compilation never yields an empty list; stay total anyway.
                None => RouteAction::NoRoute,
            }
        }
        RuleAction::Redirect(r) => RouteAction::Redirect {
            status: r.status,
            location: r.location(req, matched_prefix.map(|p| &**p)),
        },
        RuleAction::Direct { status, body } => RouteAction::DirectResponse {
            status: *status,
            body: body.clone(),
        },
    }
}
