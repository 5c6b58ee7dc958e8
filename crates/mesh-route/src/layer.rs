//! The two routing stages of the outbound stack, as tower layers.
//!
//! [`RouteLayer`] decides (SPEC 1.1 steps 1, 2, 4, 5 and 10): it matches the
//! request against the current [`RoutingTable`], answers redirects, direct
//! responses and "no route" itself, applies the rule's rewrite and header
//! edits, and leaves the [`RouteDecision`] in the request's extensions.
//! [`BalanceLayer`] then picks the endpoint (step 7) and leaves a [`Target`]
//! for the connector. Both read their inputs from extensions and do nothing
//! else, so the resilience layers slot in between them unchanged.
//!
//! ```
//! use std::sync::Arc;
//! use arc_swap::ArcSwap;
//! use mesh_core::identity::Workload;
//! use mesh_core::snapshot::Snapshot;
//! use mesh_route::layer::{RouteLayer, Routes};
//! use mesh_route::random::SplitMix;
//! use mesh_route::routing::RoutingTable;
//!
//! let table = RoutingTable::compile(Arc::new(Snapshot::empty()));
//! let routes = Routes::new(Arc::new(ArcSwap::from_pointee(table)), Arc::new(SplitMix::seeded(1)));
//! let layer = RouteLayer::new(routes, Arc::new(Workload::default()));
//! # let _ = layer;
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use http::header::{HOST, LOCATION};
use http::uri::{Authority, Parts as UriParts};
use http::{HeaderValue, Request, Response, Uri};
use mesh_core::http::{Body, MeshError, Peer, full};
use mesh_core::identity::Workload;

use crate::balance::{InFlight, PickRequest, hash_key};
use crate::decision::{RouteAction, RouteDecision};
use crate::matcher::RequestView;
use crate::random::SharedRandom;
use crate::routing::{Balancers, MESH, RoutingTable};

/// A boxed, sendable response future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The current routing table and the random source of routing decisions.
#[derive(Clone)]
pub struct Routes {
    /// The table, swapped whole on reload.
    pub table: Arc<ArcSwap<RoutingTable>>,
    /// Draws weighted destinations.
    pub random: SharedRandom,
}

impl Routes {
    /// Routes from a swappable table and a random source.
    pub fn new(table: Arc<ArcSwap<RoutingTable>>, random: SharedRandom) -> Self {
        Routes { table, random }
    }
}

/// The authority a request names: the absolute-form URI's (as `HTTP_PROXY`
/// clients send), else the Host header (HTTP/1) / `:authority` (HTTP/2).
pub fn request_authority<B>(req: &Request<B>) -> Option<&str> {
    req.uri()
        .authority()
        .map(Authority::as_str)
        .or_else(|| req.headers().get(HOST).and_then(|h| h.to_str().ok()))
        .filter(|a| !a.is_empty())
}

fn authority_port(authority: &str) -> Option<u16> {
    let (_, port) = authority.rsplit_once(':')?;
    port.parse().ok()
}

/// Layer of the route stage.
#[derive(Clone)]
pub struct RouteLayer {
    routes: Routes,
    workload: Arc<Workload>,
    gateway: Arc<str>,
}

impl RouteLayer {
    /// Routes as a sidecar (the `mesh` gateway) of `workload`.
    pub fn new(routes: Routes, workload: Arc<Workload>) -> Self {
        RouteLayer {
            routes,
            workload,
            gateway: Arc::from(MESH),
        }
    }
}

impl<S> tower::Layer<S> for RouteLayer {
    type Service = Route<S>;

    fn layer(&self, inner: S) -> Route<S> {
        Route {
            inner,
            layer: self.clone(),
        }
    }
}

/// The route stage.
#[derive(Clone)]
pub struct Route<S> {
    inner: S,
    layer: RouteLayer,
}

/// The table a request was routed with, so later stages see the same
/// snapshot even if a reload lands mid-request.
#[derive(Clone)]
pub struct RoutedWith(pub Arc<RoutingTable>);

impl<S> tower::Service<Request<Body>> for Route<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let table = self.layer.routes.table.load_full();
        let Some(authority) = request_authority(&req).map(str::to_owned) else {
            let reply =
                MeshError::BadRequest("the request names no host".into()).reply_to(req.headers());
            return Box::pin(async move { Ok(reply) });
        };
        let workload = &self.layer.workload;
        let decision = {
            let view = RequestView {
                method: req.method(),
                uri: req.uri(),
                headers: req.headers(),
                authority: &authority,
                scheme: req.uri().scheme_str().unwrap_or("http"),
                port: authority_port(&authority),
                gateway: &self.layer.gateway,
                source_namespace: &workload.namespace,
                source_labels: &workload.labels,
            };
            table.decide(&view, &*self.layer.routes.random)
        };
        let forward = match &decision.action {
            RouteAction::Forward(f) => f.clone(),
            RouteAction::Redirect { status, location } => {
                let mut resp = Response::new(full(""));
                *resp.status_mut() = *status;
                resp.headers_mut().insert(LOCATION, location.clone());
                return Box::pin(async move { Ok(resp) });
            }
            RouteAction::DirectResponse { status, body } => {
                let mut resp = Response::new(full(body.clone()));
                *resp.status_mut() = *status;
                return Box::pin(async move { Ok(resp) });
            }
            RouteAction::NoRoute => {
                let reply = MeshError::NoRoute.reply_to(req.headers());
                return Box::pin(async move { Ok(reply) });
            }
        };
        // Rewrites and request header edits of the matched rule (SPEC 4.4).
        let mut authority = authority;
        if let Some(rewrite) = &decision.policy.rewrite {
            let uri = rewrite.apply(forward.matched_prefix.as_deref(), req.uri());
            *req.uri_mut() = uri;
            if let Some(a) = &rewrite.authority
                && let Ok(a) = a.to_str()
            {
                authority = a.to_owned();
            }
        }
        forward.request_headers.apply(req.headers_mut());
        if let Some(a) = &forward.request_headers.authority_override
            && let Ok(a) = a.to_str()
        {
            authority = a.to_owned();
        }
        if let Ok(host) = HeaderValue::from_str(&authority) {
            req.headers_mut().insert(HOST, host);
        }
        set_uri_authority(req.uri_mut(), None);
        let response_edits = Arc::clone(&forward.response_headers);
        req.extensions_mut().insert(decision);
        req.extensions_mut().insert(RoutedWith(table));
        let mut inner = self.inner.clone();
        std::mem::swap(&mut inner, &mut self.inner);
        Box::pin(EditResponse {
            inner: Box::pin(inner.call(req)),
            edits: response_edits,
        })
    }
}

/// Applies the rule's response header edits when the response arrives. A
/// named future rather than an `async` block: the latter trips a compiler
/// limitation on `Send` inference with boxed-error bodies in bounds.
struct EditResponse<F> {
    inner: Pin<Box<F>>,
    edits: Arc<crate::matcher::headers::HeaderEdits>,
}

impl<F, E> Future for EditResponse<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.inner.as_mut().poll(cx) {
            Poll::Ready(Ok(mut resp)) => {
                self.edits.apply(resp.headers_mut());
                Poll::Ready(Ok(resp))
            }
            other => other,
        }
    }
}

/// Replaces (or removes) a URI's scheme and authority, keeping the path.
pub fn set_uri_authority(uri: &mut Uri, authority: Option<&str>) {
    let mut parts = UriParts::from(std::mem::take(uri));
    match authority.and_then(|a| Authority::try_from(a).ok()) {
        Some(a) => {
            parts.scheme = Some(http::uri::Scheme::HTTP);
            parts.authority = Some(a);
        }
        None => {
            parts.scheme = None;
            parts.authority = None;
        }
    }
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    *uri = Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"));
}

/// Where the connector sends one attempt: an endpoint address and port, and
/// the guard that counts the request as in flight on that endpoint.
#[derive(Clone)]
pub struct Target {
    /// `address:port` to dial.
    pub authority: Arc<str>,
    /// Index of the endpoint in its balancer (outlier detection keys on it).
    pub endpoint: usize,
    /// Keeps the endpoint's active-request count up until dropped.
    pub guard: Arc<InFlight>,
    /// `Some(true)` for HTTP/2 to the endpoint, `Some(false)` for HTTP/1.1,
    /// `None` to speak whatever the caller spoke.
    pub http2: Option<bool>,
}

/// The protocol to speak upstream, from the service port's declared
/// protocol, as Istio does: HTTP2, GRPC and GRPC-WEB ports get HTTP/2, HTTP
/// ports HTTP/1.1, and anything else (or no registry entry) the caller's own
/// protocol.
pub fn upstream_http2(protocol: Option<&str>) -> Option<bool> {
    match protocol.map(str::to_ascii_uppercase).as_deref() {
        Some("HTTP2" | "GRPC" | "GRPC-WEB") => Some(true),
        Some("HTTP") => Some(false),
        _ => None,
    }
}

/// Layer of the balance stage.
#[derive(Clone)]
pub struct BalanceLayer {
    balancers: Arc<Balancers>,
}

impl BalanceLayer {
    /// Picks from `balancers`.
    pub fn new(balancers: Arc<Balancers>) -> Self {
        BalanceLayer { balancers }
    }
}

impl<S> tower::Layer<S> for BalanceLayer {
    type Service = Balance<S>;

    fn layer(&self, inner: S) -> Balance<S> {
        Balance {
            inner,
            balancers: Arc::clone(&self.balancers),
        }
    }
}

/// The balance stage.
#[derive(Clone)]
pub struct Balance<S> {
    inner: S,
    balancers: Arc<Balancers>,
}

impl<S> Balance<S> {
    fn target(&self, req: &Request<Body>) -> Result<Target, MeshError> {
        let (Some(decision), Some(RoutedWith(table))) = (
            req.extensions().get::<RouteDecision>(),
            req.extensions().get::<RoutedWith>(),
        ) else {
            return Err(MeshError::NoRoute);
        };
        let Some(forward) = decision.forward() else {
            return Err(MeshError::NoRoute);
        };
        let dest = &forward.destination;
        let request_port = request_authority(req).and_then(authority_port);
        let resolved = self.balancers.resolve(table, dest, request_port)?;
        let hash = resolved.balancer.policy().hash_key().and_then(|key| {
            let source_ip = req.extensions().get::<Peer>().map(|p| p.0.ip());
            hash_key(key, req.headers(), req.uri(), source_ip)
        });
        let pick = resolved
            .balancer
            .pick(&PickRequest {
                hash,
                eligible: &|_| true,
                avoid: &[],
            })
            .ok_or_else(|| MeshError::NoHealthyUpstream(dest.host.to_string()))?;
        let endpoint = &resolved.balancer.endpoints()[pick.index];
        let port = match &resolved.port {
            Some(p) => endpoint.port_for(p),
            None => u32::from(dest.port.or(request_port).unwrap_or(80)),
        };
        let authority: Arc<str> = if endpoint.address.contains(':') {
            format!("[{}]:{port}", endpoint.address).into()
        } else {
            format!("{}:{port}", endpoint.address).into()
        };
        let http2 = upstream_http2(resolved.port.as_ref().and_then(|p| p.protocol.as_deref()));
        Ok(Target {
            authority,
            endpoint: pick.index,
            guard: Arc::new(pick.guard),
            http2,
        })
    }
}

impl<S> tower::Service<Request<Body>> for Balance<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        match self.target(&req) {
            Ok(target) => {
                req.extensions_mut().insert(target);
                let mut inner = self.inner.clone();
                std::mem::swap(&mut inner, &mut self.inner);
                Box::pin(inner.call(req))
            }
            Err(e) => {
                let reply = e.reply_to(req.headers());
                Box::pin(async move { Ok(reply) })
            }
        }
    }
}
