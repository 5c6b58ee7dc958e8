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
use http::{HeaderValue, Request, Response, Uri};
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
        let forward = match &decision.action {
            RouteAction::Forward(f) => f.clone(),
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
        req.extensions_mut().insert(decision);
        req.extensions_mut().insert(RoutedWith(table));
        let mut inner = self.inner.clone();
        std::mem::swap(&mut inner, &mut self.inner);
        RouteFuture {
            state: RouteState::Call {
                inner: inner.call(req),
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
    detached: Arc<InFlight>,
    authorities: Arc<DialAuthorities>,
}

impl BalanceLayer {
    /// Picks from `balancers`, every endpoint eligible.
    pub fn new(balancers: Arc<Balancers>) -> Self {
        BalanceLayer {
            balancers,
            health: None,
            detached: Arc::new(InFlight::detached()),
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
            detached: Arc::clone(&self.detached),
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
    detached: Arc<InFlight>,
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
        let authority = request_authority(req);
        // A host no routing resource names and the registry does not know
        // (SPEC 6.2; the route stage chose these destinations). Routes
        // that name a destination keep SPEC 2's 503 NC / UH.
        match (&*dest.host, authority) {
            (PASSTHROUGH_CLUSTER, Some(authority)) => {
                let target = Target {
                    authority: original_destination(authority),
                    endpoint: 0,
                    guard: Arc::clone(&self.detached),
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
            guard: Arc::new(pick.guard),
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
    type Future = RouteFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        match self.target(&req) {
            Ok((target, health)) => {
                req.extensions_mut().insert(target);
                if let Some(health) = health {
                    req.extensions_mut().insert(health);
                }
                let mut inner = self.inner.clone();
                std::mem::swap(&mut inner, &mut self.inner);
                RouteFuture {
                    state: RouteState::Call {
                        inner: inner.call(req),
                        edits: None,
                    },
                }
            }
            Err(e) => RouteFuture::reply(e.reply_to(req.headers())),
        }
    }
}

/// The endpoints earlier attempts of one request went to, so that a retry
/// prefers an endpoint not tried before (Istio's
/// `retryIgnorePreviousHosts`, default on; SPEC 4.6).
///
/// The retry layer puts one in the extensions of every attempt of a request
/// that may be retried; the balance stage passes the endpoints recorded so
/// far as [`PickRequest::avoid`] and records its own pick. Consistent-hash
/// policies ignore the avoid list (a retry goes to the same endpoint). Clones
/// share the record; at most [`PreviousAttempts::MAX`] picks are kept.
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
    use super::*;

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
