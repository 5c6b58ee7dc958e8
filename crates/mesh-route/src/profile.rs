//! Linkerd ServiceProfile routes (SPEC 13.1), compiled for the route stage.
//!
//! Place in the request flow: SPEC 1.1 step 1 picks the route table of the
//! destination. For a host that no VirtualService governs but that has a
//! ServiceProfile (named after the service's FQDN), the profile is the
//! table: its `routes` are tried in order and the first whose `condition`
//! holds decides the request's policy (its `timeout`, whether it
//! `isRetryable`, and the profile's `retryBudget`); an unmatched request
//! takes the profile's default route (no timeout, no retries) and is still
//! forwarded to the service. A profile never chooses the destination: the
//! request goes to the service it names.
//!
//! Why a separate compiled form: the YAML conditions (`pathRegex`, `method`,
//! `all`, `any`, `not`) become anchored regexes and typed methods once per
//! snapshot, and each route's [`RoutePolicy`] is built once and shared by
//! every request it matches (one `Arc` clone per request). The response
//! classes travel with the retry policy ([`ResponseClasses`]) because the
//! retry layer, not the route stage, classifies responses.
//!
//! ```
//! use mesh_core::load::{LoadOptions, load_str};
//! use mesh_route::profile::CompiledProfile;
//!
//! let yaml = "apiVersion: linkerd.io/v1alpha2\nkind: ServiceProfile\n\
//!     metadata: {name: api.prod.svc.cluster.local, namespace: prod}\n\
//!     spec:\n  routes:\n  - name: GET /users\n    condition: {method: GET, pathRegex: '/users/[^/]*'}\n\
//!     \x20   isRetryable: true\n    timeout: 2s\n";
//! let loaded = load_str("sp.yaml", yaml, &LoadOptions::default());
//! assert!(!loaded.diagnostics.has_errors());
//! let profile = CompiledProfile::compile(&loaded.resources[0]).unwrap();
//! let policy = profile.policy_for(&http::Method::GET, "/users/7");
//! assert_eq!(policy.timeout, Some(std::time::Duration::from_secs(2)));
//! assert!(policy.retries.as_ref().unwrap().classes.is_some());
//! // Unmatched requests: no timeout, no retries.
//! let other = profile.policy_for(&http::Method::POST, "/users/7");
//! assert_eq!(other.retries.as_ref().unwrap().attempts, 0);
//! ```

use std::sync::Arc;

use http::Method;
use mesh_core::resource::{Resource, Spec};
use mesh_core::schema::linkerd_profile::{RequestMatch, ResponseMatch, ServiceProfile};
use regex::Regex;

use crate::decision::{
    BudgetSpec, DestinationKey, Forward, RetrySpec, RouteAction, RouteDecision, RouteId,
    RoutePolicy,
};
use crate::matcher::{CompileError, RequestView};

/// gRPC statuses that classify as failures when no response class matches
/// (SPEC 13.1): UNKNOWN, DEADLINE_EXCEEDED, PERMISSION_DENIED, INTERNAL,
/// UNAVAILABLE, DATA_LOSS.
const GRPC_FAILURES: [u32; 6] = [2, 4, 7, 13, 14, 15];

/// A profile route's `responseClasses`: which responses are failures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResponseClasses {
    classes: Vec<(StatusCondition, bool)>,
}

impl ResponseClasses {
    /// Whether a response with this HTTP status (and gRPC status, when the
    /// response carries one) is a failure: the first class whose condition
    /// holds decides; without one, a gRPC status in the failure set, else
    /// any 5xx, is a failure (SPEC 13.1).
    pub fn is_failure(&self, status: u16, grpc_status: Option<u32>) -> bool {
        if let Some((_, failure)) = self.classes.iter().find(|(c, _)| c.holds(status)) {
            return *failure;
        }
        match grpc_status {
            Some(code) => GRPC_FAILURES.contains(&code),
            None => (500..600).contains(&status),
        }
    }

    fn compile(classes: &[mesh_core::schema::linkerd_profile::ResponseClass]) -> Self {
        ResponseClasses {
            classes: classes
                .iter()
                .filter_map(|c| {
                    Some((
                        StatusCondition::compile(c.condition.as_ref()?),
                        c.is_failure,
                    ))
                })
                .collect(),
        }
    }
}

/// A compiled response condition; every part that is set must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct StatusCondition {
    range: Option<(u16, u16)>,
    all: Vec<StatusCondition>,
    any: Vec<StatusCondition>,
    not: Option<Box<StatusCondition>>,
}

impl StatusCondition {
    fn compile(m: &ResponseMatch) -> Self {
        StatusCondition {
            range: m.status.as_ref().and_then(|s| s.bounds()).map(|(a, b)| {
                let clamp = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
                (clamp(a), clamp(b))
            }),
            all: m.all.iter().map(StatusCondition::compile).collect(),
            any: m.any.iter().map(StatusCondition::compile).collect(),
            not: m
                .not
                .as_deref()
                .map(|n| Box::new(StatusCondition::compile(n))),
        }
    }

    fn holds(&self, status: u16) -> bool {
        self.range
            .is_none_or(|(lo, hi)| (lo..=hi).contains(&status))
            && self.all.iter().all(|c| c.holds(status))
            && (self.any.is_empty() || self.any.iter().any(|c| c.holds(status)))
            && self.not.as_ref().is_none_or(|n| !n.holds(status))
    }
}

/// A compiled request condition; every part that is set must hold.
#[derive(Clone, Debug)]
struct RequestCondition {
    path: Option<Regex>,
    method: Option<Method>,
    all: Vec<RequestCondition>,
    any: Vec<RequestCondition>,
    not: Option<Box<RequestCondition>>,
}

impl RequestCondition {
    fn compile(m: &RequestMatch) -> Result<Self, String> {
        let path = m
            .path_regex
            .as_deref()
            // RE2 full match: the regex must match the whole path.
            .map(|re| Regex::new(&format!("^(?:{re})$")).map_err(|e| format!("pathRegex: {e}")))
            .transpose()?;
        let method = m
            .method
            .as_deref()
            .map(|name| {
                // Linkerd accepts OPTION for OPTIONS.
                let name = if name == "OPTION" { "OPTIONS" } else { name };
                Method::from_bytes(name.as_bytes()).map_err(|_| format!("method: {name:?}"))
            })
            .transpose()?;
        let list = |ms: &[RequestMatch]| {
            ms.iter()
                .map(RequestCondition::compile)
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(RequestCondition {
            path,
            method,
            all: list(&m.all)?,
            any: list(&m.any)?,
            not: m
                .not
                .as_deref()
                .map(RequestCondition::compile)
                .transpose()?
                .map(Box::new),
        })
    }

    fn holds(&self, method: &Method, path: &str) -> bool {
        self.method.as_ref().is_none_or(|m| m == method)
            && self.path.as_ref().is_none_or(|re| re.is_match(path))
            && self.all.iter().all(|c| c.holds(method, path))
            && (self.any.is_empty() || self.any.iter().any(|c| c.holds(method, path)))
            && self.not.as_ref().is_none_or(|n| !n.holds(method, path))
    }
}

#[derive(Clone, Debug)]
struct ProfileRoute {
    condition: RequestCondition,
    decision: RouteDecision,
}

/// A ServiceProfile, compiled: its routes in order and its default route.
#[derive(Clone, Debug)]
pub struct CompiledProfile {
    host: Arc<str>,
    routes: Vec<ProfileRoute>,
    default: RouteDecision,
    budget: Option<BudgetSpec>,
}

impl CompiledProfile {
    /// Compiles a `ServiceProfile` resource. Its name is the service FQDN
    /// whose clients it applies to.
    pub fn compile(resource: &Resource) -> Result<CompiledProfile, CompileError> {
        let id = resource.id();
        let error = |field: String, message: String| CompileError {
            resource: id.clone(),
            field,
            message,
        };
        let Spec::ServiceProfile(sp) = &resource.spec else {
            return Err(error(String::new(), "not a ServiceProfile".into()));
        };
        let host: Arc<str> = Arc::from(resource.name().to_ascii_lowercase());
        let resource_id: Arc<str> = Arc::from(id.as_str());
        let budget = profile_budget(sp);
        let forward = |policy: RoutePolicy, route: RouteId| RouteDecision {
            route,
            action: RouteAction::Forward(Forward {
                destination: DestinationKey {
                    host: Arc::clone(&host),
                    subset: None,
                    port: None,
                },
                request_headers: Arc::default(),
                response_headers: Arc::default(),
                matched_prefix: None,
            }),
            policy: Arc::new(policy),
        };
        let mut routes = Vec::with_capacity(sp.routes.len());
        for (i, r) in sp.routes.iter().enumerate() {
            let Some(condition) = &r.condition else {
                // Validation reports it; a route without a condition
                // matches nothing.
                continue;
            };
            let condition = RequestCondition::compile(condition)
                .map_err(|e| error(format!("routes[{i}].condition"), e))?;
            let retries = match (r.is_retryable, budget) {
                (true, Some(budget)) => RetrySpec {
                    // Unlimited count: only the budget stops retries.
                    attempts: u32::MAX,
                    budget: Some(budget),
                    classes: Some(Arc::new(ResponseClasses::compile(&r.response_classes))),
                    ..RetrySpec::disabled()
                },
                // Not retryable, or the budget is invalid (SPEC 13.1).
                _ => RetrySpec::disabled(),
            };
            let policy = RoutePolicy {
                timeout: r.timeout.filter(|t| !t.is_zero()).map(|t| t.get()),
                retries: Some(retries),
                ..RoutePolicy::default()
            };
            let route = RouteId {
                resource: Arc::clone(&resource_id),
                rule_index: Some(i),
                rule_name: (!r.name.is_empty()).then(|| Arc::from(r.name.as_str())),
            };
            routes.push(ProfileRoute {
                condition,
                decision: forward(policy, route),
            });
        }
        let default = forward(
            RoutePolicy {
                retries: Some(RetrySpec::disabled()),
                ..RoutePolicy::default()
            },
            RouteId {
                resource: resource_id,
                rule_index: None,
                rule_name: None,
            },
        );
        Ok(CompiledProfile {
            host,
            routes,
            default,
            budget,
        })
    }

    /// The service FQDN the profile is named after.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The profile's retry budget: its `retryBudget`, Linkerd's default
    /// when absent, `None` when the written one is invalid (retries off).
    pub fn budget(&self) -> Option<BudgetSpec> {
        self.budget
    }

    /// The decision for a request: the first route whose condition holds,
    /// else the default route (forwarded, no timeout, no retries).
    pub fn route(&self, req: &RequestView<'_>) -> RouteDecision {
        self.decide(req.method, req.uri.path()).clone()
    }

    /// The policy of the route a request with this method and path takes.
    pub fn policy_for(&self, method: &Method, path: &str) -> Arc<RoutePolicy> {
        Arc::clone(&self.decide(method, path).policy)
    }

    fn decide(&self, method: &Method, path: &str) -> &RouteDecision {
        self.routes
            .iter()
            .find(|r| r.condition.holds(method, path))
            .map_or(&self.default, |r| &r.decision)
    }
}

/// The budget a profile's retryable routes share (SPEC 13.1).
fn profile_budget(sp: &ServiceProfile) -> Option<BudgetSpec> {
    let budget = sp
        .retry_budget
        .as_ref()
        .map_or(BudgetSpec::LINKERD_DEFAULT, BudgetSpec::from);
    budget.is_valid().then_some(budget)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use mesh_core::load::{LoadOptions, load_str};

    use super::*;

    fn compile(yaml: &str) -> CompiledProfile {
        let loaded = load_str("sp.yaml", yaml, &LoadOptions::default());
        CompiledProfile::compile(&loaded.resources[0]).unwrap()
    }

    fn seed() -> CompiledProfile {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fixtures/seed/09-service-profile-retries-timeouts.yaml"
        ))
        .unwrap();
        compile(&text)
    }

    #[test]
    fn the_seed_profile_routes_by_method_and_anchored_path() {
        let p = seed();
        assert_eq!(p.host(), "api.production.svc.cluster.local");
        let get = p.policy_for(&Method::GET, "/api/users/42");
        assert_eq!(get.timeout, Some(std::time::Duration::from_secs(10)));
        let r = get.retries.as_ref().unwrap();
        assert_eq!(r.attempts, u32::MAX);
        assert_eq!(r.budget, Some(BudgetSpec::LINKERD_DEFAULT));
        // Anchored: a longer path does not match the GET route.
        let nested = p.policy_for(&Method::GET, "/api/users/42/posts");
        assert_eq!(nested.retries.as_ref().unwrap().attempts, 0);
        assert_eq!(nested.timeout, None);
        let post = p.policy_for(&Method::POST, "/api/users");
        assert_eq!(post.timeout, Some(std::time::Duration::from_secs(30)));
        assert_eq!(post.retries.as_ref().unwrap().attempts, 0, "not retryable");
    }

    #[test]
    fn the_routing_table_routes_hosts_without_a_virtual_service_by_their_profile() {
        use std::collections::BTreeMap;

        use mesh_core::snapshot::Snapshot;

        use crate::random::SplitMix;
        use crate::routing::RoutingTable;

        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fixtures/seed/09-service-profile-retries-timeouts.yaml"
        ))
        .unwrap();
        let loaded = load_str("sp.yaml", &text, &LoadOptions::default());
        let table = RoutingTable::compile(Arc::new(Snapshot::compile(1, loaded)));
        let (method, uri, headers, labels) = (
            Method::GET,
            http::Uri::from_static("/api/users/7?x=1"),
            http::HeaderMap::new(),
            BTreeMap::new(),
        );
        let view = RequestView {
            method: &method,
            uri: &uri,
            headers: &headers,
            authority: "api:8080",
            scheme: "http",
            port: Some(8080),
            gateway: "mesh",
            source_namespace: "production",
            source_labels: &labels,
        };
        let d = table.decide(&view, &SplitMix::seeded(1));
        assert_eq!(
            &*d.route.resource,
            "ServiceProfile/production/api.production.svc.cluster.local"
        );
        assert_eq!(d.route.rule_name.as_deref(), Some("GET /api/users/{id}"));
        assert_eq!(
            &*d.forward().unwrap().destination.host,
            "api.production.svc.cluster.local"
        );
        assert!(d.policy.retries.as_ref().unwrap().classes.is_some());
        let profile = table.profile("api.production.svc.cluster.local").unwrap();
        assert_eq!(profile.budget(), Some(BudgetSpec::LINKERD_DEFAULT));
        // Another namespace's `api` is another service: no profile.
        let other = RequestView {
            source_namespace: "staging",
            ..view
        };
        assert_eq!(
            &*table.decide(&other, &SplitMix::seeded(1)).route.resource,
            "default"
        );
    }

    #[test]
    fn all_any_not_and_invalid_budgets() {
        let p = compile(
            "apiVersion: linkerd.io/v1alpha2\nkind: ServiceProfile\n\
             metadata: {name: web.ns.svc.cluster.local, namespace: ns}\n\
             spec:\n  retryBudget: {retryRatio: 0.2, minRetriesPerSecond: 10, ttl: 90s}\n  routes:\n\
             \x20 - name: r\n    isRetryable: true\n    condition:\n      any:\n      - method: PUT\n      - all:\n        - pathRegex: /a/.*\n        - not: {method: DELETE}\n",
        );
        assert_eq!(p.budget(), None, "ttl outside 1s..60s");
        let matched = |m: Method, path: &str| p.routes[0].condition.holds(&m, path);
        assert!(matched(Method::PUT, "/x"));
        assert!(matched(Method::GET, "/a/b"));
        assert!(!matched(Method::DELETE, "/a/b"));
        assert!(!matched(Method::GET, "/b"));
        // An invalid budget disables retries.
        let policy = p.policy_for(&Method::PUT, "/x");
        assert_eq!(policy.retries.as_ref().unwrap().attempts, 0);
    }

    #[test]
    fn response_classes_first_match_then_grpc_then_5xx() {
        let p = compile(
            "apiVersion: linkerd.io/v1alpha2\nkind: ServiceProfile\n\
             metadata: {name: web.ns.svc.cluster.local, namespace: ns}\n\
             spec:\n  routes:\n  - name: r\n    isRetryable: true\n    condition: {pathRegex: /.*}\n\
             \x20   responseClasses:\n    - condition: {status: {min: 533, max: 533}}\n      isFailure: false\n\
             \x20   - condition: {status: {min: 400, max: 599}}\n      isFailure: true\n",
        );
        let policy = p.policy_for(&Method::GET, "/");
        let classes = policy.retries.as_ref().unwrap().classes.clone().unwrap();
        assert!(!classes.is_failure(533, None), "the earlier class wins");
        assert!(classes.is_failure(404, None));
        assert!(!classes.is_failure(200, None));
        let none = ResponseClasses::default();
        assert!(none.is_failure(503, None));
        assert!(!none.is_failure(404, None));
        assert!(none.is_failure(200, Some(14)));
        assert!(!none.is_failure(200, Some(5)), "NOT_FOUND is not a failure");
    }
}
