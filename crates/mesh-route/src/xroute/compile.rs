//! Compiling one HTTPRoute for one parent: its rules' matches, the action
//! of each rule (weighted backends, redirect, or a 500), and the policy of
//! each backend (filters, timeouts, retries).
//!
//! Backends are checked against the snapshot here, once: a reference to a
//! missing Service, to an unknown kind, or across namespaces without a
//! ReferenceGrant stays in the weighted list and answers 500 for its share
//! of requests (SPEC 2, 3.3), so the split of the valid backends is what
//! the route says.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use mesh_core::host::qualify;
use mesh_core::resource::{Resource, Spec};
use mesh_core::schema::gateway_api::{HttpBackendRef, HttpRoute, HttpRouteRule};
use mesh_core::snapshot::Index;

use super::filters::{Filters, RewriteMode, XRedirect};
use super::matching::XMatch;
use super::policy::{self, Annotations};
use crate::decision::{DestinationKey, Forward, RouteId, RoutePolicy};
use crate::matcher::CompileError;

/// A compiled rule.
#[derive(Debug)]
pub(crate) struct XRule {
    pub(crate) id: RouteId,
    /// Never empty: a rule without `matches` has the implicit `PathPrefix /`.
    pub(crate) matches: Vec<XMatch>,
    pub(crate) action: XAction,
}

/// What a rule does with a request it matched.
#[derive(Debug)]
pub(crate) enum XAction {
    /// Weighted backends; `cumulative[i]` is the sum of weights `0..=i`
    /// and the last entry is positive.
    Forward {
        targets: Vec<XTarget>,
        cumulative: Vec<u64>,
    },
    /// `RequestRedirect`.
    Redirect(XRedirect),
    /// No usable backend, or a filter this mesh cannot apply: 500 with
    /// this body.
    Fail(Bytes),
}

/// One weighted backend: where it forwards, or why it answers 500.
#[derive(Debug)]
pub(crate) enum XTarget {
    /// A valid backend.
    Valid {
        forward: Forward,
        policy: Arc<RoutePolicy>,
        mode: RewriteMode,
    },
    /// An invalid backend; the body of its 500.
    Invalid(Bytes),
}

/// ReferenceGrants: `(target namespace, referring group, referring
/// namespace, Service name or None for all)`.
#[derive(Debug, Default)]
pub(crate) struct Grants(HashSet<(String, String, String, Option<String>)>);

impl Grants {
    /// Collects the grants that let HTTPRoutes refer to Services.
    pub(crate) fn collect(resources: &[Arc<Resource>]) -> Grants {
        let mut grants = Grants::default();
        for r in resources {
            let Spec::ReferenceGrant(g) = &r.spec else {
                continue;
            };
            for from in g.from.iter().filter(|f| f.kind == "HTTPRoute") {
                for to in
                    g.to.iter()
                        .filter(|t| is_core(Some(&t.group)) && t.kind == "Service")
                {
                    grants.0.insert((
                        r.namespace().to_owned(),
                        from.group.clone(),
                        from.namespace.clone(),
                        to.name.clone(),
                    ));
                }
            }
        }
        grants
    }

    fn allows(&self, to_ns: &str, group: &str, from_ns: &str, name: &str) -> bool {
        let key = |n: Option<String>| (to_ns.to_owned(), group.to_owned(), from_ns.to_owned(), n);
        self.0.contains(&key(None)) || self.0.contains(&key(Some(name.to_owned())))
    }
}

/// The core API group, as references spell it.
pub(crate) fn is_core(group: Option<&str>) -> bool {
    matches!(group, None | Some("" | "core"))
}

/// What compiling a route needs besides the route.
pub(crate) struct Cx<'a> {
    pub(crate) index: &'a Index,
    pub(crate) grants: &'a Grants,
    pub(crate) annotations: Annotations<'a>,
}

/// A compiled route: its rules, and what did not compile.
#[derive(Debug)]
pub(crate) struct CompiledRoute {
    pub(crate) rules: Vec<Arc<XRule>>,
    pub(crate) errors: Vec<CompileError>,
}

/// Compiles `route` (the spec of `resource`) for one parent context.
pub(crate) fn compile_route(resource: &Resource, route: &HttpRoute, cx: &Cx<'_>) -> CompiledRoute {
    let id: Arc<str> = Arc::from(resource.id().as_str());
    let ns = resource.namespace();
    let mut errors = Vec::new();
    let mut error = |field: String, message: String| {
        errors.push(CompileError {
            resource: id.to_string(),
            field,
            message,
        })
    };
    let mut rules = Vec::with_capacity(route.rules.len());
    for (i, rule) in route.rules.iter().enumerate() {
        let mut matches = Vec::with_capacity(rule.matches.len().max(1));
        for (j, m) in rule.matches.iter().enumerate() {
            match XMatch::compile(m) {
                Ok(m) => matches.push(m),
                Err((field, message)) => {
                    error(format!("spec.rules[{i}].matches[{j}].{field}"), message)
                }
            }
        }
        if rule.matches.is_empty() {
            matches.push(XMatch::catch_all());
        } else if matches.is_empty() {
            // No match of the rule can be evaluated: it serves nothing.
            continue;
        }
        let action = match compile_action(rule, i, resource, ns, cx) {
            Ok(a) => a,
            Err((field, message)) => {
                let body = Bytes::from(format!("{id}: {field}: {message}"));
                error(field, message);
                XAction::Fail(body)
            }
        };
        rules.push(Arc::new(XRule {
            id: RouteId {
                resource: Arc::clone(&id),
                rule_index: Some(i),
                rule_name: rule.name.as_deref().map(Arc::from),
            },
            matches,
            action,
        }));
    }
    CompiledRoute { rules, errors }
}

type RuleError = (String, String);

fn compile_action(
    rule: &HttpRouteRule,
    i: usize,
    resource: &Resource,
    ns: &str,
    cx: &Cx<'_>,
) -> Result<XAction, RuleError> {
    let at = |f: &str| format!("spec.rules[{i}].{f}");
    let mut filters = Filters::default();
    filters
        .push(&rule.filters, ns)
        .map_err(|(f, e)| (at(&format!("filters{f}")), e))?;
    if let Some(why) = &filters.unresolved {
        return Ok(XAction::Fail(Bytes::from(why.clone())));
    }
    if let Some(r) = filters.redirect.take() {
        return Ok(XAction::Redirect(r));
    }
    if rule.backend_refs.is_empty() {
        return Ok(XAction::Fail(Bytes::from_static(
            b"the matched HTTPRoute rule has no backendRefs",
        )));
    }
    let timing = policy::compile(rule, cx.annotations).map_err(|e| (at(""), e))?;
    let group = resource.kind.group();
    let mut targets = Vec::with_capacity(rule.backend_refs.len());
    let mut cumulative = Vec::with_capacity(rule.backend_refs.len());
    let mut total: u64 = 0;
    for (j, b) in rule.backend_refs.iter().enumerate() {
        total += u64::from(b.weight());
        cumulative.push(total);
        let destination = match backend(b, ns, group, cx) {
            Ok(d) => d,
            Err(why) => {
                targets.push(XTarget::Invalid(Bytes::from(format!(
                    "invalid backendRef {}: {why}",
                    b.name
                ))));
                continue;
            }
        };
        let mut own = filters.clone();
        own.push(&b.filters, ns)
            .map_err(|(f, e)| (at(&format!("backendRefs[{j}].filters{f}")), e))?;
        if let Some(why) = &own.unresolved {
            targets.push(XTarget::Invalid(Bytes::from(why.clone())));
            continue;
        }
        let (rewrite, mode) = own.rewrite();
        targets.push(XTarget::Valid {
            forward: Forward {
                destination,
                request_headers: Arc::new(own.request_headers),
                response_headers: Arc::new(own.response_headers),
                matched_prefix: None,
            },
            policy: Arc::new(RoutePolicy {
                timeout: timing.timeout,
                retries: timing.retries.clone(),
                mirrors: own.mirrors,
                rewrite,
                ..RoutePolicy::default()
            }),
            mode,
        });
    }
    if total == 0 {
        return Ok(XAction::Fail(Bytes::from_static(
            b"every backendRef of the matched HTTPRoute rule has weight 0",
        )));
    }
    Ok(XAction::Forward {
        targets,
        cumulative,
    })
}

/// The destination of a backendRef, or why it is invalid.
fn backend(
    b: &HttpBackendRef,
    route_ns: &str,
    group: &str,
    cx: &Cx<'_>,
) -> Result<DestinationKey, String> {
    if !is_core(b.group.as_deref()) || b.kind.as_deref().unwrap_or("Service") != "Service" {
        return Err(format!(
            "unknown backend kind {}/{}",
            b.group.as_deref().unwrap_or(""),
            b.kind.as_deref().unwrap_or("Service")
        ));
    }
    let ns = b.namespace.as_deref().unwrap_or(route_ns);
    if ns != route_ns && !cx.grants.allows(ns, group, route_ns, &b.name) {
        return Err(format!(
            "Service {ns}/{} is in another namespace and no ReferenceGrant there allows it",
            b.name
        ));
    }
    let host = qualify(&b.name, ns);
    if !cx.index.services.contains_key(&host) {
        return Err(format!("Service {ns}/{} does not exist", b.name));
    }
    let port = b
        .port
        .map(|p| u16::try_from(p).map_err(|_| format!("port {p} is not a port number")))
        .transpose()?;
    Ok(DestinationKey {
        host: host.into(),
        subset: None,
        port,
    })
}
