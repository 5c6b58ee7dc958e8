//! The outbound and inbound stacks, assembled in one place each.
//!
//! Outbound, in the order a request meets the stages (SPEC 1.1):
//!
//! ```text
//! route    match host and request -> RouteDecision; local replies
//! fault    injected delay, then injected abort (FI), per the rule
//! mirror   fire-and-forget copies to the rule's mirror destinations
//! timeout  the route's whole-request deadline (504 UT)
//! retry    tries within the deadline, retry budgets, maxRetries (SPEC 4.6, 13.2)
//! balance  an endpoint of the chosen service and subset; ejected endpoints
//!          skipped unless in panic (none left: 503 UH)
//! pool     circuit breaking per destination (connectionPool, 503 UO)
//! outlier  the attempt's result charged to its endpoint; eject / return
//! dns      the endpoint's DNS name to an address (`crate::dns`)
//! loop     a passthrough to this proxy's own listener: 508 (`crate::loop_guard`)
//! connect  pooled HTTP/1.1 or HTTP/2 to that endpoint
//! ```
//!
//! Telemetry wraps the whole stack. Inbound (SPEC 1.2): local rate limit
//! (429 RL), then forward to the local application.
//!
//! The stacks are returned as concrete types ([`OutboundStack`], `impl
//! HttpStack`), not boxed: the listeners and the in-process client call
//! them directly, so a request's response future is the stages' own
//! futures nested, with no box per request (see `crate::server`).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use http::{Method, Request, Response};
use mesh_core::http::{Body, MeshError};
use mesh_core::identity::Workload;
use mesh_core::reload::SnapshotHandle;
use mesh_resilience::budget::RetryBudgets;
use mesh_resilience::fault::FaultLayer;
use mesh_resilience::outlier::{OutlierLayer, Outliers};
use mesh_resilience::pool::{PoolLimitsLayer, PoolRegistry};
use mesh_resilience::rate_limit::RateLimitLayer;
use mesh_resilience::retry::RetryLayer;
use mesh_resilience::timeout::TimeoutLayer;
use mesh_route::balance::InFlight;
use mesh_route::gateway::GatewayListener;
use mesh_route::layer::{BalanceLayer, RouteLayer, Routes, Target};
use mesh_route::mirror::MirrorLayer;
use mesh_route::random::SharedRandom;
use mesh_route::routing::{Balancers, RoutingTable};
use tower::layer::util::{Identity, Stack};
use tower::util::ServiceFn;
use tower::{Layer, Service, ServiceBuilder};

use crate::dns::{DnsCache, DnsLayer, DnsSettings};
use crate::loop_guard::{LocalListeners, LoopGuardLayer};
use crate::server::HttpStack;
use crate::tcp::TcpProxy;
use crate::tcp::connect::{Connect, ConnectLayer};
use crate::upstream::{Upstream, UpstreamSettings};

/// The outbound stack (SPEC 1.1) as one concrete type: what
/// [`outbound`] and [`gateway`] return, what the outbound listeners serve
/// and what [`crate::Client`] calls, with no box around it or its futures.
///
/// Named through the stages' layers rather than their service types (so a
/// stage may change its service or future type without touching this):
/// tower's `Stack<Inner, Outer>` nests as `ServiceBuilder` does, so the
/// list in [`OutboundLayers`] runs from the connector's side (loop guard)
/// up to the route stage, the reverse of the order a request meets them.
pub type OutboundStack = <OutboundLayers as Layer<Upstream>>::Service;

/// The layers of [`OutboundStack`], innermost first (see there).
pub type OutboundLayers = Stack<
    LoopGuardLayer,
    Stack<
        DnsLayer,
        Stack<
            OutlierLayer,
            Stack<
                PoolLimitsLayer,
                Stack<
                    BalanceLayer,
                    Stack<
                        RetryLayer,
                        Stack<
                            TimeoutLayer,
                            Stack<MirrorLayer, Stack<FaultLayer, Stack<RouteLayer, Identity>>>,
                        >,
                    >,
                >,
            >,
        >,
    >,
>;

/// Routing state shared by every outbound stack of a process: the compiled
/// table (recompiled on each new snapshot) and the balancers.
pub struct RoutingState {
    /// The compiled table in force.
    pub table: Arc<ArcSwap<RoutingTable>>,
    /// Balancers by destination, kept across reloads.
    pub balancers: Arc<Balancers>,
    /// The random source of routing and balancing.
    pub random: SharedRandom,
    /// The resolver cache of DNS endpoints (the DNS stage and the TCP path).
    pub dns: Arc<DnsCache>,
    /// Connection pools and circuit-breaker counters by destination, kept
    /// across reloads; one per process, since limits hold per client proxy
    /// (SPEC 5.3). Made by the first outbound stack, whose connection
    /// settings are the defaults DestinationRules override.
    pub pools: std::sync::OnceLock<Arc<PoolRegistry>>,
    /// Outlier ejections by destination and endpoint address, kept across
    /// reloads; the balance stage skips what the outlier stage ejected.
    pub outliers: Arc<Outliers>,
    /// Retry budgets by destination, kept across reloads and shared by
    /// every outbound stack of the process.
    pub retry_budgets: Arc<RetryBudgets>,
    /// The addresses this process listens on: a passthrough request to one
    /// of them is refused rather than looped (`crate::loop_guard`).
    pub listeners: Arc<LocalListeners>,
}

impl RoutingState {
    /// Compiles the current snapshot of `snapshots`.
    pub fn new(snapshots: &SnapshotHandle, random: SharedRandom) -> Self {
        let table = RoutingTable::compile(snapshots.load());
        RoutingState {
            table: Arc::new(ArcSwap::from_pointee(table)),
            balancers: Arc::new(Balancers::new(Arc::clone(&random))),
            random,
            dns: Arc::new(DnsCache::new(DnsSettings::default())),
            pools: std::sync::OnceLock::new(),
            outliers: Arc::new(Outliers::from_destination_rules()),
            retry_budgets: Arc::new(RetryBudgets::new()),
            listeners: Arc::new(LocalListeners::default()),
        }
    }

    /// Keeps the table in step with `snapshots`: each new generation is
    /// compiled off the request path and swapped in. Runs until the handle's
    /// sender is gone.
    pub fn follow(self: &Arc<Self>, snapshots: &SnapshotHandle) -> tokio::task::JoinHandle<()> {
        let mut generations = snapshots.subscribe();
        let snapshots = snapshots.clone();
        let state = Arc::clone(self);
        tokio::spawn(async move {
            while generations.changed().await.is_ok() {
                let snapshot = snapshots.load();
                if snapshot.generation == state.table.load().snapshot.generation {
                    continue;
                }
                match tokio::task::spawn_blocking(move || RoutingTable::compile(snapshot)).await {
                    Ok(table) => {
                        tracing::info!(generation = table.snapshot.generation, "routes compiled");
                        state.table.store(Arc::new(table));
                    }
                    Err(e) => tracing::error!("route compilation failed: {e}"),
                }
            }
        })
    }
}

/// The outbound stack of `workload`.
pub fn outbound(
    state: &RoutingState,
    workload: Arc<Workload>,
    upstream: &UpstreamSettings,
) -> OutboundStack {
    let routes = Routes::new(Arc::clone(&state.table), Arc::clone(&state.random));
    outbound_under(RouteLayer::new(routes, workload), state, upstream)
}

/// The stack of one ingress gateway listener: the outbound stack with the
/// gateway's route stage on top (Gateway servers on the listener's port and
/// the VirtualServices bound to them, `mesh_route::gateway`); every stage
/// below routing is the sidecar's.
pub fn gateway(
    state: &RoutingState,
    workload: Arc<Workload>,
    listener: Arc<GatewayListener>,
    upstream: &UpstreamSettings,
) -> OutboundStack {
    let routes = Routes::new(Arc::clone(&state.table), Arc::clone(&state.random));
    outbound_under(
        RouteLayer::for_gateway(routes, workload, listener),
        state,
        upstream,
    )
}

/// The outbound order of SPEC 1.1 under a route stage, shared by sidecars
/// and gateway listeners.
fn outbound_under(
    route: RouteLayer,
    state: &RoutingState,
    upstream: &UpstreamSettings,
) -> OutboundStack {
    let pools = Arc::clone(
        state
            .pools
            .get_or_init(|| Arc::new(PoolRegistry::with_defaults(upstream.pool_limits()))),
    );
    ServiceBuilder::new()
        .layer(route)
        // Mirror copies (SPEC 1.1 step 6) re-enter the stack below here.
        .layer(FaultLayer::new(Arc::clone(&state.random)))
        .layer(MirrorLayer::new(Arc::clone(&state.random)))
        .layer(TimeoutLayer::from_route())
        // Every try, within the deadline above, is balanced again below.
        .layer(
            RetryLayer::from_route(Arc::clone(&state.random))
                .with_budgets(Arc::clone(&state.retry_budgets))
                .with_pools(Arc::clone(&pools)),
        )
        .layer(
            BalanceLayer::new(Arc::clone(&state.balancers))
                .with_health(Arc::clone(&state.outliers) as _),
        )
        .layer(PoolLimitsLayer::per_destination(pools))
        .layer(OutlierLayer::per_destination(Arc::clone(&state.outliers)))
        // DNS names of the chosen endpoint to an address, just before the
        // connector (ServiceEntry resolution DNS / NONE, SPEC 6.2).
        .layer(DnsLayer::new(Arc::clone(&state.dns)))
        .layer(LoopGuardLayer::new(Arc::clone(&state.listeners)))
        .service(Upstream::new(upstream))
}

/// The inbound stack of `workload`, in the order a request meets it (SPEC
/// 1.2):
///
/// 1. rate limit: the HTTPLocalRateLimitPolicy of the Server selecting
///    this workload and the application port (429 RL), read from
///    `snapshots` and kept current across reloads
/// 2. forward: to the local application at `app`
///
/// PeerAuthentication, the peer identity (which the rate limit reads) and
/// authorization arrive in front of it with the identity issue.
pub fn inbound(
    app: SocketAddr,
    upstream: &UpstreamSettings,
    snapshots: &SnapshotHandle,
    workload: Arc<Workload>,
) -> impl HttpStack + use<> {
    let rate_limit = RateLimitLayer::inbound(snapshots.clone(), workload, vec![app.port()]);
    let target = Target {
        authority: app.to_string().into(),
        endpoint: 0,
        guard: InFlight::detached(),
        http2: None,
    };
    ServiceBuilder::new()
        .layer(rate_limit)
        .map_request(move |mut req: Request<Body>| {
            req.extensions_mut().insert(target.clone());
            req
        })
        .service(Upstream::new(upstream))
}

/// The sidecar's outbound listener stack: a `CONNECT` request becomes a
/// routed tunnel (the CONNECT stage, [`crate::tcp::connect`]); every other
/// request meets the HTTP stack `S` directly.
///
/// The method is checked here rather than by putting the CONNECT stage on
/// top of the stack, because that stage boxes the future of every request
/// it passes through (and clones the stack below it to call it): here the
/// HTTP requests keep `S`'s own future, and only tunnels, which are rare
/// and long-lived, get a boxed one.
#[derive(Clone)]
pub struct Tunnels<S> {
    connect: Connect<NotTunnelled>,
    http: S,
}

/// What the CONNECT stage of [`Tunnels`] would pass a request on to: it
/// is only handed CONNECT requests, which it answers itself, so this is
/// never called; were it, the request would be refused as malformed.
type NotTunnelled =
    ServiceFn<fn(Request<Body>) -> std::future::Ready<Result<Response<Body>, Infallible>>>;

fn not_tunnelled(_: Request<Body>) -> std::future::Ready<Result<Response<Body>, Infallible>> {
    std::future::ready(Ok(
        MeshError::BadRequest("not a CONNECT request".into()).to_response()
    ))
}

impl<S> Tunnels<S> {
    /// `http` with CONNECT tunnels through `proxy` split off in front.
    pub fn new(proxy: Arc<TcpProxy>, http: S) -> Self {
        let inner: NotTunnelled = tower::service_fn(not_tunnelled as fn(_) -> _);
        Tunnels {
            connect: ConnectLayer::new(proxy).layer(inner),
            http,
        }
    }
}

impl<S> Service<Request<Body>> for Tunnels<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future =
        TunnelsFuture<S::Future, <Connect<NotTunnelled> as Service<Request<Body>>>::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The CONNECT stage is ready whenever its inner service is, and
        // `NotTunnelled` always is.
        self.http.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if req.method() == Method::CONNECT {
            TunnelsFuture {
                state: TunnelsState::Tunnel {
                    future: self.connect.call(req),
                },
            }
        } else {
            TunnelsFuture {
                state: TunnelsState::Http {
                    future: self.http.call(req),
                },
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Tunnels`]: the HTTP stack's own, or the
    /// CONNECT stage's.
    pub struct TunnelsFuture<H, C> {
        #[pin]
        state: TunnelsState<H, C>,
    }
}

pin_project_lite::pin_project! {
    #[project = TunnelsProj]
    enum TunnelsState<H, C> {
        Http {
            #[pin]
            future: H,
        },
        Tunnel {
            #[pin]
            future: C,
        },
    }
}

impl<H, C> Future for TunnelsFuture<H, C>
where
    H: Future<Output = Result<Response<Body>, Infallible>>,
    C: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            TunnelsProj::Http { future } => future.poll(cx),
            TunnelsProj::Tunnel { future } => future.poll(cx),
        }
    }
}
