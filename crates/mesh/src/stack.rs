//! The outbound and inbound stacks, assembled in one place each.
//!
//! Outbound, in the order a request meets the stages (SPEC 1.1):
//!
//! 1. route    match host and request -> RouteDecision; local replies
//! 2. fault    injected delay, then injected abort (FI), per the rule
//! 3. mirror   fire-and-forget copies to the rule's mirror destinations
//! 4. timeout  the route's whole-request deadline (504 UT)
//! 5. balance  pick an endpoint of the chosen service and subset
//! 6. connect  pooled HTTP/1.1 or HTTP/2 to that endpoint
//!
//! Retry (after timeout), pool limits and outlier detection slot in as the
//! resilience issue lands; telemetry wraps the whole stack. Inbound: forward to the local application.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::Request;
use mesh_core::http::Body;
use mesh_core::identity::Workload;
use mesh_core::reload::SnapshotHandle;
use mesh_resilience::fault::FaultLayer;
use mesh_resilience::timeout::TimeoutLayer;
use mesh_route::balance::InFlight;
use mesh_route::layer::{BalanceLayer, RouteLayer, Routes, Target};
use mesh_route::mirror::MirrorLayer;
use mesh_route::random::SharedRandom;
use mesh_route::routing::{Balancers, RoutingTable};
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

use crate::server::HttpService;
use crate::upstream::{Upstream, UpstreamSettings};

/// Routing state shared by every outbound stack of a process: the compiled
/// table (recompiled on each new snapshot) and the balancers.
pub struct RoutingState {
    /// The compiled table in force.
    pub table: Arc<ArcSwap<RoutingTable>>,
    /// Balancers by destination, kept across reloads.
    pub balancers: Arc<Balancers>,
    /// The random source of routing and balancing.
    pub random: SharedRandom,
}

impl RoutingState {
    /// Compiles the current snapshot of `snapshots`.
    pub fn new(snapshots: &SnapshotHandle, random: SharedRandom) -> Self {
        let table = RoutingTable::compile(snapshots.load());
        RoutingState {
            table: Arc::new(ArcSwap::from_pointee(table)),
            balancers: Arc::new(Balancers::new(Arc::clone(&random))),
            random,
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
) -> HttpService {
    let routes = Routes::new(Arc::clone(&state.table), Arc::clone(&state.random));
    let svc = ServiceBuilder::new()
        .layer(RouteLayer::new(routes, workload))
        // Mirror copies (SPEC 1.1 step 6) re-enter the stack below here.
        .layer(FaultLayer::new(Arc::clone(&state.random)))
        .layer(MirrorLayer::new(Arc::clone(&state.random)))
        .layer(TimeoutLayer::from_route())
        .layer(BalanceLayer::new(Arc::clone(&state.balancers)))
        .service(Upstream::new(upstream));
    BoxCloneSyncService::new(svc)
}

/// The inbound stack: everything goes to the local application at `app`.
/// PeerAuthentication, authorization and rate limiting arrive in front of
/// it with the identity issue.
pub fn inbound(app: SocketAddr, upstream: &UpstreamSettings) -> HttpService {
    let target = Target {
        authority: app.to_string().into(),
        endpoint: 0,
        guard: Arc::new(InFlight::detached()),
        http2: None,
    };
    let svc = ServiceBuilder::new()
        .map_request(move |mut req: Request<Body>| {
            req.extensions_mut().insert(target.clone());
            req
        })
        .service(Upstream::new(upstream));
    BoxCloneSyncService::new(svc)
}
