//! The two routing stages of the outbound stack, as tower layers.
//!
//! [`RouteLayer`] decides (SPEC 1.1 steps 1, 2, 4, 5 and 10): it matches the
//! request against the current [`RoutingTable`], answers redirects, direct
//! responses and "no route" itself, applies the rule's rewrite and header
//! edits, and leaves the [`RouteDecision`] with the table it was made with
//! in the request's extensions (one [`Routed`]).
//! [`BalanceLayer`] then picks the endpoint (step 7) and leaves a [`Target`]
//! for the connector. Both read their inputs from extensions and do nothing
//! else, so the resilience layers slot in between them unchanged.
//!
//! A host the registry does not know, on its default route (no routing
//! resource names it), follows meshConfig `outboundTrafficPolicy` (SPEC
//! 6.2, [`RoutingTable::egress`]): the route stage forwards it to
//! [`PASSTHROUGH_CLUSTER`] under `ALLOW_ANY` (the default), and the balance
//! stage then targets its original destination, the `host:port` the caller
//! named (port 80 when absent), which the DNS stage resolves like any named
//! endpoint; under `REGISTRY_ONLY` the destination is
//! [`BLACKHOLE_CLUSTER`] and the balance stage answers 502 (SPEC 2).
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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use http::header::{HOST, LOCATION};
use http::uri::{Authority, Parts as UriParts};
use http::{Extensions, HeaderValue, Request, Response, StatusCode, Uri};
use mesh_core::host::strip_port;
use mesh_core::http::{Body, MeshError, Peer, full};
use mesh_core::identity::Workload;
use mesh_core::snapshot::Endpoint;

use crate::balance::{EndpointHealth, HealthQuery, InFlight, PickRequest, PickedHealth, hash_key};
use crate::decision::{RouteAction, RouteDecision};
use crate::gateway::GatewayListener;
use crate::matcher::RequestView;
use crate::random::SharedRandom;
use crate::routing::{BLACKHOLE_CLUSTER, Balancers, MESH, PASSTHROUGH_CLUSTER, RoutingTable};

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

/// [`request_authority`] as a header value: the Host header's own value
/// when it is the authority (a cheap clone), else a copy.
fn authority_value<B>(req: &Request<B>) -> Option<HeaderValue> {
    let authority = request_authority(req)?;
    if let Some(host) = req.headers().get(HOST)
        && host.as_bytes() == authority.as_bytes()
    {
        return Some(host.clone());
    }
    HeaderValue::from_str(authority).ok()
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
    listener: Option<Arc<GatewayListener>>,
}

impl RouteLayer {
    /// Routes as a sidecar (the `mesh` gateway) of `workload`.
    pub fn new(routes: Routes, workload: Arc<Workload>) -> Self {
        RouteLayer {
            routes,
            workload,
            gateway: Arc::from(MESH),
            listener: None,
        }
    }

    /// Routes as an ingress gateway listener of `workload` (see
    /// [`crate::gateway`]): Gateway servers on the listener's port, and the
    /// VirtualServices bound to them.
    pub fn for_gateway(
        routes: Routes,
        workload: Arc<Workload>,
        listener: Arc<GatewayListener>,
    ) -> Self {
        RouteLayer {
            routes,
            workload,
            gateway: Arc::from(MESH),
            listener: Some(listener),
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

/// What the route stage leaves in a forwarded request's extensions: its
/// decision and the table it was made with, so later stages see the same
/// snapshot even if a reload lands mid-request.
///
/// One extension rather than two because the two always travel together:
/// each insert costs the extension map a boxed value (and, past three
/// entries, a larger table), and each reader a lookup. Read it with
/// [`routed`], [`route_decision`] or [`routed_table`], which also accept
/// the parts put in alone.
#[derive(Clone)]
pub struct Routed {
    /// The route decision.
    pub decision: RouteDecision,
    /// The table it was made with.
    pub table: Arc<RoutingTable>,
}

/// A table put in a request's extensions alone, next to a bare
/// [`RouteDecision`]: how a stage below routing is driven without the
/// route stage (tests, benches). The route stage itself leaves a
/// [`Routed`].
#[derive(Clone)]
pub struct RoutedWith(pub Arc<RoutingTable>);

/// The route decision and table of a request: the route stage's
/// [`Routed`], else a bare [`RouteDecision`] and [`RoutedWith`].
pub fn routed(extensions: &Extensions) -> Option<(&RouteDecision, &Arc<RoutingTable>)> {
    match extensions.get::<Routed>() {
        Some(r) => Some((&r.decision, &r.table)),
        None => Some((
            extensions.get::<RouteDecision>()?,
            &extensions.get::<RoutedWith>()?.0,
        )),
    }
}

/// The route decision of a request: the route stage's [`Routed`], else a
/// bare [`RouteDecision`] (a layer used without the route stage).
pub fn route_decision(extensions: &Extensions) -> Option<&RouteDecision> {
    match extensions.get::<Routed>() {
        Some(r) => Some(&r.decision),
        None => extensions.get::<RouteDecision>(),
    }
}

/// The table a request was routed with: the route stage's [`Routed`], else
/// a bare [`RoutedWith`].
pub fn routed_table(extensions: &Extensions) -> Option<&Arc<RoutingTable>> {
    match extensions.get::<Routed>() {
        Some(r) => Some(&r.table),
        None => extensions.get::<RoutedWith>().map(|r| &r.0),
    }
}

/// Replaces a request's route decision in the form it carries it (inside
/// its [`Routed`], else bare), keeping the table; for a stage that sends a
/// request on with another decision (a mirror copy).
pub fn set_route_decision(extensions: &mut Extensions, decision: RouteDecision) {
    match extensions.get_mut::<Routed>() {
        Some(r) => r.decision = decision,
        None => {
            extensions.insert(decision);
        }
    }
}

impl<S> tower::Service<Request<Body>> for Route<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = RouteFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let table = self.layer.routes.table.load_full();
        // The authority as the Host value it becomes: the Host header's own
        // value when that is what names it (a shared, not copied, buffer).
        let Some(mut host) = authority_value(&req) else {
            let reply =
                MeshError::BadRequest("the request names no host".into()).reply_to(req.headers());
            return RouteFuture::reply(reply);
        };
        let workload = &self.layer.workload;
        let decision = {
            let authority = host.to_str().unwrap_or_default();
            let view = RequestView {
                method: req.method(),
                uri: req.uri(),
                headers: req.headers(),
                authority,
                scheme: req.uri().scheme_str().unwrap_or("http"),
                port: authority_port(authority),
                gateway: &self.layer.gateway,
                source_namespace: &workload.namespace,
                source_labels: &workload.labels,
            };
            match &self.layer.listener {
                Some(listener) => table.gateways.decide(
                    &table.xroutes,
                    listener,
                    &view,
                    &*self.layer.routes.random,
                ),
                None => table.decide(&view, &*self.layer.routes.random),
            }
        };
        // Borrowed, not cloned: the decision moves into the extensions only
        // after the request is edited.
        let forward = match &decision.action {
            RouteAction::Forward(f) => f,
            RouteAction::Redirect { status, location } => {
                let mut resp = Response::new(full(""));
                *resp.status_mut() = *status;
                resp.headers_mut().insert(LOCATION, location.clone());
                return RouteFuture::reply(resp);
            }
            RouteAction::DirectResponse { status, body } => {
                let mut resp = Response::new(full(body.clone()));
                *resp.status_mut() = *status;
                return RouteFuture::reply(resp);
            }
            RouteAction::NoRoute => {
                let reply = MeshError::NoRoute.reply_to(req.headers());
                return RouteFuture::reply(reply);
            }
        };
        // Rewrites and request header edits of the matched rule (SPEC 4.4).
        if let Some(rewrite) = &decision.policy.rewrite {
            let uri = rewrite.apply(forward.matched_prefix.as_deref(), req.uri());
            *req.uri_mut() = uri;
            if let Some(a) = &rewrite.authority
                && a.to_str().is_ok()
            {
                host = a.clone();
            }
        }
        forward.request_headers.apply(req.headers_mut());
        if let Some(a) = &forward.request_headers.authority_override
            && a.to_str().is_ok()
        {
            host = a.clone();
        }
        req.headers_mut().insert(HOST, host);
        if req.uri().scheme().is_some() || req.uri().authority().is_some() {
            set_uri_authority(req.uri_mut(), None);
        }
        let response_edits = Arc::clone(&forward.response_headers);
        req.extensions_mut().insert(Routed { decision, table });
        // Called in place: the future keeps no service, so nothing below is
        // cloned per request.
        RouteFuture {
            state: RouteState::Call {
                inner: self.inner.call(req),
                edits: Some(response_edits),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The route stage's future: the inner call, whose response gets the
    /// rule's response header edits, or the stage's own reply (redirect,
    /// direct response, no route). Held inline: no allocation per request.
    /// A named future rather than an `async` block: the latter trips a
    /// compiler limitation on `Send` inference with boxed-error bodies in
    /// bounds.
    pub struct RouteFuture<F> {
        #[pin]
        state: RouteState<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = RouteProj]
    enum RouteState<F> {
        Call {
            #[pin]
            inner: F,
            edits: Option<Arc<crate::matcher::headers::HeaderEdits>>,
        },
        Reply {
            reply: Option<Response<Body>>,
        },
    }
}

impl<F> RouteFuture<F> {
    fn reply(reply: Response<Body>) -> Self {
        RouteFuture {
            state: RouteState::Reply { reply: Some(reply) },
        }
    }
}

impl<F, E> Future for RouteFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            RouteProj::Call { inner, edits } => match inner.poll(cx) {
                Poll::Ready(Ok(mut resp)) => {
                    if let Some(edits) = edits {
                        edits.apply(resp.headers_mut());
                    }
                    Poll::Ready(Ok(resp))
                }
                other => other,
            },
            RouteProj::Reply { reply } => match reply.take() {
                Some(resp) => Poll::Ready(Ok(resp)),
                None => Poll::Ready(Ok(mesh_core::http::local_reply(
                    http::StatusCode::INTERNAL_SERVER_ERROR,
                    "-",
                    "polled after completion",
                ))),
            },
        }
    }
}

/// Replaces (or removes) a URI's scheme and authority, keeping the path.
pub fn set_uri_authority(uri: &mut Uri, authority: Option<&str>) {
    if authority.is_none()
        && let Some(path) = uri.path_and_query().filter(|p| !p.as_str().is_empty())
    {
        // Origin form: the path and query alone, without taking the URI
        // apart and checking it again.
        *uri = Uri::from(path.clone());
        return;
    }
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
    pub guard: InFlight,
    /// `Some(true)` for HTTP/2 to the endpoint, `Some(false)` for HTTP/1.1,
    /// `None` to speak whatever the caller spoke.
    pub http2: Option<bool>,
}

/// The protocol to speak upstream, from the service port's declared
/// protocol, as Istio does: HTTP2, GRPC and GRPC-WEB ports get HTTP/2, HTTP
/// ports HTTP/1.1, and anything else (or no registry entry) the caller's own
/// protocol.
pub fn upstream_http2(protocol: Option<&str>) -> Option<bool> {
    let protocol = protocol?;
    let is = |name: &str| protocol.eq_ignore_ascii_case(name);
    if is("HTTP2") || is("GRPC") || is("GRPC-WEB") {
        Some(true)
    } else if is("HTTP") {
        Some(false)
    } else {
        None
    }
}

/// Layer of the balance stage.
#[derive(Clone)]
pub struct BalanceLayer {
    balancers: Arc<Balancers>,
    health: Option<Arc<dyn EndpointHealth>>,
    detached: InFlight,
    authorities: Arc<DialAuthorities>,
}

impl BalanceLayer {
    /// Picks from `balancers`, every endpoint eligible.
    pub fn new(balancers: Arc<Balancers>) -> Self {
        BalanceLayer {
            balancers,
            health: None,
            detached: InFlight::detached(),
            authorities: Arc::default(),
        }
    }

    /// Skips the endpoints `health` calls ineligible (ejected), unless it
    /// is in panic; when a destination's endpoints are all ineligible the
    /// caller gets 503 `UH` (SPEC 5.4). The view each pick used is left in
    /// the request's extensions as [`PickedHealth`].
    pub fn with_health(mut self, health: Arc<dyn EndpointHealth>) -> Self {
        self.health = Some(health);
        self
    }
}

impl<S> tower::Layer<S> for BalanceLayer {
    type Service = Balance<S>;

    fn layer(&self, inner: S) -> Balance<S> {
        Balance {
            inner,
            balancers: Arc::clone(&self.balancers),
            health: self.health.clone(),
            detached: self.detached.clone(),
            authorities: Arc::clone(&self.authorities),
        }
    }
}

/// The balance stage.
#[derive(Clone)]
pub struct Balance<S> {
    inner: S,
    balancers: Arc<Balancers>,
    health: Option<Arc<dyn EndpointHealth>>,
    /// The guard of passthrough targets, which count against no balancer;
    /// shared so a passthrough request allocates none.
    detached: InFlight,
    /// Endpoint dial authorities, formatted once.
    authorities: Arc<DialAuthorities>,
}

/// The `address:port` strings of endpoints, made once per address and port
/// and shared by every request to them (rather than formatted and
/// allocated per request). Grows with the endpoints seen; past
/// [`DialAuthorities::MAX`] addresses it starts over, so endpoints gone
/// after reloads do not pile up.
#[derive(Default)]
struct DialAuthorities {
    by_address: ArcSwap<std::collections::HashMap<Arc<str>, PortAuthorities>>,
}

/// An address's dial authorities by port (usually one).
type PortAuthorities = Arc<[(u32, Arc<str>)]>;

impl DialAuthorities {
    const MAX: usize = 4096;

    fn get(&self, address: &str, port: u32) -> Arc<str> {
        if let Some(ports) = self.by_address.load().get(address)
            && let Some((_, authority)) = ports.iter().find(|(p, _)| *p == port)
        {
            return Arc::clone(authority);
        }
        let authority = dial_authority(address, port);
        self.by_address.rcu(|current| {
            let mut next = if current.len() >= Self::MAX {
                std::collections::HashMap::new()
            } else {
                std::collections::HashMap::clone(current)
            };
            let ports: PortAuthorities = match next.get(address) {
                Some(known) if known.iter().any(|(p, _)| *p == port) => Arc::clone(known),
                Some(known) => known
                    .iter()
                    .cloned()
                    .chain([(port, Arc::clone(&authority))])
                    .collect(),
                None => Arc::from([(port, Arc::clone(&authority))]),
            };
            next.insert(Arc::from(address), ports);
            next
        });
        authority
    }
}

/// The `host:port` a passthrough request dials: the authority as the caller
/// wrote it, with port 80 added when it names none (plain HTTP; TLS never
/// reaches this stage, it is tunnelled by `CONNECT`).
fn original_destination(authority: &str) -> Arc<str> {
    if strip_port(authority).len() < authority.len() {
        Arc::from(authority)
    } else {
        format!("{authority}:80").into()
    }
}

/// The `address:port` to dial; IPv6 addresses in brackets.
fn dial_authority(address: &str, port: u32) -> Arc<str> {
    if address.contains(':') {
        format!("[{address}]:{port}").into()
    } else {
        format!("{address}:{port}").into()
    }
}

impl<S> Balance<S> {
    fn target(&self, req: &Request<Body>) -> Result<(Target, Option<PickedHealth>), MeshError> {
        let Some((decision, table)) = routed(req.extensions()) else {
            return Err(MeshError::NoRoute);
        };
        let Some(forward) = decision.forward() else {
            return Err(MeshError::NoRoute);
        };
        let dest = &forward.destination;
        let authority = request_authority(req);
        // A host no routing resource names and the registry does not know
        // (SPEC 6.2; the route stage chose these destinations). Routes
        // that name a destination keep SPEC 2's 503 NC / UH.
        match (&*dest.host, authority) {
            (PASSTHROUGH_CLUSTER, Some(authority)) => {
                let target = Target {
                    authority: original_destination(authority),
                    endpoint: 0,
                    guard: self.detached.clone(),
                    // The caller's own protocol, as for any port whose
                    // protocol the registry does not declare.
                    http2: None,
                };
                return Ok((target, None));
            }
            (BLACKHOLE_CLUSTER, Some(authority)) => {
                return Err(MeshError::Unregistered(strip_port(authority).to_owned()));
            }
            _ => {}
        }
        let request_port = authority.and_then(authority_port);
        let resolved = self.balancers.resolve(table, dest, request_port)?;
        let fallback_port = u32::from(dest.port.or(request_port).unwrap_or(80));
        let dial_port = |endpoint: &Endpoint| match &resolved.port {
            Some(p) => endpoint.port_for(p),
            None => fallback_port,
        };
        let authority_of =
            |endpoint: &Endpoint| self.authorities.get(&endpoint.address, dial_port(endpoint));
        // Outlier ejections (SPEC 5.4): ejected endpoints are not eligible
        // unless the destination is in panic.
        let health = self.health.as_ref().and_then(|h| {
            h.view(&HealthQuery {
                snapshot: &table.snapshot,
                destination: dest,
                port: resolved.port.as_ref().map_or(fallback_port, |p| p.number),
                endpoints: resolved.balancer.endpoints(),
                authority: &authority_of,
            })
        });
        let judged = health.as_deref().filter(|h| !h.panic());
        let eligible = |i: usize| judged.is_none_or(|h| h.eligible(i));
        let hash = resolved.balancer.policy().hash_key().and_then(|key| {
            let source_ip = req.extensions().get::<Peer>().map(|p| p.0.ip());
            hash_key(key, req.headers(), req.uri(), source_ip)
        });
        // Retries prefer endpoints earlier attempts did not try (SPEC 4.6).
        let attempts = req.extensions().get::<PreviousAttempts>();
        let mut tried = [0usize; PreviousAttempts::MAX];
        let avoid = attempts.map_or(&[][..], |a| a.fill(&mut tried));
        let pick = resolved
            .balancer
            .pick(&PickRequest {
                hash,
                eligible: &eligible,
                avoid,
            })
            .ok_or_else(|| MeshError::NoHealthyUpstream(dest.host.to_string()))?;
        if let Some(a) = attempts {
            a.record(pick.index);
        }
        let authority = authority_of(&resolved.balancer.endpoints()[pick.index]);
        let http2 = upstream_http2(resolved.port.as_ref().and_then(|p| p.protocol.as_deref()));
        let target = Target {
            authority,
            endpoint: pick.index,
            guard: pick.guard,
            http2,
        };
        Ok((target, health.map(PickedHealth)))
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
    type Future = BalanceFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        match self.target(&req) {
            Ok((target, health)) => {
                // A passthrough target (the detached guard) is no endpoint
                // of a balancer: nothing for a retry to avoid.
                let endpoint = (!target.guard.is_detached()).then_some(target.endpoint);
                req.extensions_mut().insert(target);
                if let Some(health) = health {
                    req.extensions_mut().insert(health);
                }
                BalanceFuture {
                    route: RouteFuture {
                        state: RouteState::Call {
                            inner: self.inner.call(req),
                            edits: None,
                        },
                    },
                    endpoint,
                }
            }
            Err(e) => BalanceFuture {
                route: RouteFuture::reply(e.reply_to(req.headers())),
                endpoint: None,
            },
        }
    }
}

/// Response extension the balance stage leaves on every response that may
/// be retried: the endpoint (its index in the balancer) the attempt was
/// sent to, so the retry stage learns which endpoint to avoid only when a
/// retry happens, instead of handing every request a shared record
/// ([`PreviousAttempts`]) up front.
///
/// "May be retried" is decided without the retry policy, by what any
/// policy's conditions look at: a status of 400 or above, or a
/// `grpc-status` header (a gRPC trailers-only response); every reply the
/// mesh makes for a failed attempt has one of the two (a gRPC caller's
/// carries a `grpc-status`). A plain success carries nothing, so it costs
/// no allocation. A policy that can
/// retry anything else (a per-try timeout, a listed status below 400,
/// `envoy-ratelimited`, ServiceProfile response classes) still gets a
/// [`PreviousAttempts`] up front from the retry stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PickedEndpoint(pub usize);

/// `grpc-status`, parsed once.
const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// Whether a response is one [`PickedEndpoint`] is left on. The header
/// names are compared in turn rather than looked up: a response has a
/// handful, and a lookup hashes the name first (about twice the cost).
fn may_be_retried(resp: &Response<Body>) -> bool {
    resp.status() >= StatusCode::BAD_REQUEST || resp.headers().keys().any(|n| *n == GRPC_STATUS)
}

pin_project_lite::pin_project! {
    /// The balance stage's future: the inner call (or the stage's own
    /// reply), whose response gets a [`PickedEndpoint`] when it may be
    /// retried. Held inline: no allocation per request.
    pub struct BalanceFuture<F> {
        #[pin]
        route: RouteFuture<F>,
        endpoint: Option<usize>,
    }
}

impl<F, E> Future for BalanceFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut resp = std::task::ready!(this.route.poll(cx))?;
        if let Some(index) = *this.endpoint
            && may_be_retried(&resp)
        {
            resp.extensions_mut().insert(PickedEndpoint(index));
        }
        Poll::Ready(Ok(resp))
    }
}

/// The endpoints earlier attempts of one request went to, so that a retry
/// prefers an endpoint not tried before (Istio's
/// `retryIgnorePreviousHosts`, default on; SPEC 4.6).
///
/// The retry layer puts one in the extensions of every retry, made when
/// the first retry is (with the first try's endpoint, from its response's
/// [`PickedEndpoint`]), and of first tries only where a policy can retry a
/// try whose response carries no [`PickedEndpoint`]; the balance stage
/// passes the endpoints recorded so far as [`PickRequest::avoid`] and
/// records its own pick. Consistent-hash policies ignore the avoid list (a
/// retry goes to the same endpoint). Clones share the record; at most
/// [`PreviousAttempts::MAX`] picks are kept.
///
/// ```
/// use mesh_route::layer::PreviousAttempts;
///
/// let tried = PreviousAttempts::new(true);
/// tried.clone().record(2); // the balance stage, for the first try
/// let mut buf = [0; PreviousAttempts::MAX];
/// assert_eq!(tried.fill(&mut buf), &[2]);
/// assert_eq!(tried.last(), Some(2));
/// // retryIgnorePreviousHosts: false: recorded, not avoided.
/// let kept = PreviousAttempts::new(false);
/// kept.record(1);
/// assert!(kept.fill(&mut buf).is_empty());
/// ```
#[derive(Clone, Debug)]
pub struct PreviousAttempts(Arc<AttemptLog>);

#[derive(Debug)]
struct AttemptLog {
    avoid: bool,
    count: AtomicUsize,
    tried: [AtomicUsize; PreviousAttempts::MAX],
}

impl PreviousAttempts {
    /// How many picks are remembered.
    pub const MAX: usize = 8;

    /// An empty record; with `avoid` false picks are recorded but not
    /// avoided (`retryIgnorePreviousHosts: false`).
    pub fn new(avoid: bool) -> Self {
        PreviousAttempts(Arc::new(AttemptLog {
            avoid,
            count: AtomicUsize::new(0),
            tried: std::array::from_fn(|_| AtomicUsize::new(usize::MAX)),
        }))
    }

    /// Records the endpoint index an attempt was sent to.
    pub fn record(&self, index: usize) {
        // Attempts of one request run one after the other: one writer.
        let n = self.0.count.load(Ordering::Acquire);
        if n < Self::MAX {
            self.0.tried[n].store(index, Ordering::Relaxed);
            self.0.count.store(n + 1, Ordering::Release);
        }
    }

    /// How many picks were recorded.
    pub fn len(&self) -> usize {
        self.0.count.load(Ordering::Acquire)
    }

    /// Whether no pick was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The endpoint of the latest recorded pick.
    pub fn last(&self) -> Option<usize> {
        let n = self.len();
        (n > 0).then(|| self.0.tried[n - 1].load(Ordering::Relaxed))
    }

    /// Copies the endpoints to avoid into `buf` and returns them: the
    /// recorded picks, or none when avoiding is off.
    pub fn fill<'a>(&self, buf: &'a mut [usize; Self::MAX]) -> &'a [usize] {
        if !self.0.avoid {
            return &[];
        }
        let n = self.len().min(Self::MAX);
        for (slot, tried) in buf.iter_mut().zip(&self.0.tried[..n]) {
            *slot = tried.load(Ordering::Relaxed);
        }
        &buf[..n]
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tokio::sync::Mutex;

    use mesh_core::load::{LoadOptions, load_str};
    use mesh_core::snapshot::Snapshot;
    use tower::{Layer, ServiceExt};

    use super::*;
    use crate::random::SplitMix;

    /// A service `upstream` with two endpoints, routed by a VirtualService.
    const MESH: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n\
        metadata: { name: upstream, namespace: default }\nspec:\n  hosts: [upstream]\n\
        \x20 resolution: STATIC\n  ports: [{ number: 80, name: http, protocol: HTTP }]\n\
        \x20 endpoints: [{ address: 10.0.0.1 }, { address: 10.0.0.2 }]\n---\n\
        apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
        metadata: { name: upstream, namespace: default }\nspec:\n  hosts: [upstream]\n\
        \x20 http: [{ route: [{ destination: { host: upstream } }] }]\n";

    /// What the service below the balance stage saw of one request.
    #[derive(Debug)]
    struct Below {
        extensions: usize,
        routed: bool,
        bare: bool,
        endpoint: usize,
    }

    /// Route and balance stages over a service that records what it saw
    /// and answers with the status and headers the request's
    /// `x-answer` names (`503`, `grpc`, else 200).
    fn stages(
        seen: Arc<Mutex<Vec<Below>>>,
    ) -> impl tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible> {
        let loaded = load_str("mesh.yaml", MESH, &LoadOptions::default());
        assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
        let table = RoutingTable::compile(Arc::new(Snapshot::compile(1, loaded)));
        let random: SharedRandom = Arc::new(SplitMix::seeded(3));
        let routes = Routes::new(Arc::new(ArcSwap::from_pointee(table)), Arc::clone(&random));
        let route = RouteLayer::new(routes, Arc::new(Workload::default()));
        let balance = BalanceLayer::new(Arc::new(Balancers::new(random)));
        let below = tower::service_fn(move |req: Request<Body>| {
            let ext = req.extensions();
            seen.try_lock().unwrap().push(Below {
                extensions: ext.len(),
                routed: ext.get::<Routed>().is_some(),
                bare: ext.get::<RouteDecision>().is_some() || ext.get::<RoutedWith>().is_some(),
                endpoint: ext.get::<Target>().unwrap().endpoint,
            });
            let mut resp = Response::new(full(""));
            match req.headers().get("x-answer").map(HeaderValue::as_bytes) {
                Some(b"503") => *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE,
                Some(b"grpc") => {
                    resp.headers_mut()
                        .insert(GRPC_STATUS, HeaderValue::from_static("14"));
                }
                _ => {}
            }
            std::future::ready(Ok::<_, Infallible>(resp))
        });
        route.layer(balance.layer(below))
    }

    /// Sends one request asking for `answer` through `svc`.
    async fn send<S>(svc: &mut S, answer: &'static str) -> Response<Body>
    where
        S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    {
        svc.ready()
            .await
            .unwrap()
            .call(request(answer))
            .await
            .unwrap()
    }

    fn request(answer: &'static str) -> Request<Body> {
        Request::get("/")
            .header(HOST, "upstream")
            .header("x-answer", answer)
            .body(mesh_core::http::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn the_route_stage_leaves_one_extension_and_the_balance_stage_one_more() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut svc = stages(Arc::clone(&seen));
        let resp = send(&mut svc, "200").await;
        assert_eq!(resp.status(), 200);
        let seen = seen.try_lock().unwrap();
        // The decision and its table in one `Routed`, then the `Target`.
        assert_eq!(seen[0].extensions, 2);
        assert!(seen[0].routed && !seen[0].bare);
    }

    #[tokio::test]
    async fn responses_that_may_be_retried_name_the_endpoint_they_came_from() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut svc = stages(Arc::clone(&seen));
        for (answer, tagged) in [("200", false), ("503", true), ("grpc", true)] {
            let resp = send(&mut svc, answer).await;
            let endpoint = seen.try_lock().unwrap().last().unwrap().endpoint;
            let expected = tagged.then_some(PickedEndpoint(endpoint));
            assert_eq!(
                resp.extensions().get::<PickedEndpoint>().copied(),
                expected,
                "{answer}"
            );
        }
        // A plain success gets no extension (so nothing is allocated).
        let resp = send(&mut svc, "200").await;
        assert!(resp.extensions().is_empty());
    }

    #[test]
    fn routing_parts_are_read_from_routed_or_put_in_alone() {
        let table = Arc::new(RoutingTable::compile(Arc::new(Snapshot::empty())));
        let decision = RouteDecision::default_route("a.default.svc.cluster.local");
        let mut ext = Extensions::new();
        assert!(route_decision(&ext).is_none() && routed(&ext).is_none());
        // Alone: a bare decision is read; both parts make a pair.
        ext.insert(decision.clone());
        assert_eq!(route_decision(&ext), Some(&decision));
        assert!(routed(&ext).is_none() && routed_table(&ext).is_none());
        ext.insert(RoutedWith(Arc::clone(&table)));
        assert!(routed(&ext).is_some_and(|(d, t)| *d == decision && Arc::ptr_eq(t, &table)));
        // The route stage's `Routed` comes first; a new decision replaces
        // the one it holds, keeping its table.
        let mut ext = Extensions::new();
        ext.insert(Routed {
            decision: decision.clone(),
            table: Arc::clone(&table),
        });
        let other = RouteDecision::default_route("b.default.svc.cluster.local");
        set_route_decision(&mut ext, other.clone());
        assert_eq!(route_decision(&ext), Some(&other));
        assert!(ext.get::<RouteDecision>().is_none());
        assert!(routed_table(&ext).is_some_and(|t| Arc::ptr_eq(t, &table)));
    }

    #[test]
    fn the_original_destination_gets_port_80_when_it_names_none() {
        for (named, dialled) in [
            ("httpbin.org", "httpbin.org:80"),
            ("httpbin.org:8080", "httpbin.org:8080"),
            ("[::1]", "[::1]:80"),
            ("[::1]:9090", "[::1]:9090"),
            ("127.0.0.1:15000", "127.0.0.1:15000"),
        ] {
            assert_eq!(&*original_destination(named), dialled, "{named}");
        }
    }
}
