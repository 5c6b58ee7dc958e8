//! Outbound opaque TCP: the path a connection takes when it is not HTTP.
//!
//! Two doors lead here. An `--outbound-tcp HOST:PORT=ADDR` listener
//! ([`serve_listener`]) treats every connection it accepts as addressed to
//! `HOST:PORT`, for clients that cannot speak through a proxy (a PostgreSQL
//! driver pointed at the sidecar). A `CONNECT host:port` request on the
//! outbound HTTP listener ([`connect`]) opens a tunnel to `host:port`, so
//! `HTTPS_PROXY` works. Either way the connection then meets, once:
//!
//! ```text
//! 1. sniff   only when a VirtualService with `tls` rules governs the host:
//!            read the ClientHello (`sni`) to learn the SNI, keeping the
//!            bytes to replay (TLS is never terminated here)
//! 2. route   `tls` rules by SNI, then `tcp` rules by port and source
//!            (`mesh_route::tcp_route`); no VirtualService: the host's own
//!            ServiceEntry; an unregistered host: the original destination
//!            under `ALLOW_ANY` (Istio's default), closed under
//!            `REGISTRY_ONLY` (meshConfig `outboundTrafficPolicy`, SPEC 6.2)
//! 3. balance one endpoint of the destination, as for HTTP (the same
//!            balancers, so least-request counts connections too)
//! 4. resolve DNS names through the sidecar's `DnsCache`; `resolution:
//!            NONE` dials the original destination
//! 5. connect TCP, bounded by the connect timeout
//! 6. relay   bytes both ways until both sides are done; when one side
//!            closes its write half, the other side's write half is shut
//!            down and the opposite direction keeps flowing
//!            (`tokio::io::copy_bidirectional`), so a client's half-close
//!            still gets the server's last bytes
//! ```
//!
//! A connection that cannot be routed or connected is closed with a log
//! line (there is no status to send on raw TCP); a `CONNECT` that fails
//! before its tunnel opens gets the SPEC 2 HTTP status instead.
//!
//! Open connections are tracked by a [`ConnTracker`]: on shutdown the
//! listeners stop accepting, open connections get the drain deadline to
//! finish, and whatever is still open then is cut.

pub mod connect;
pub mod sni;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{HeaderMap, Response, StatusCode, Uri};
use mesh_core::http::{Body, MeshError, local_reply};
use mesh_core::identity::Workload;
use mesh_core::schema::istio_networking::ServiceEntryResolution;
use mesh_route::balance::{InFlight, PickRequest, hash_key};
use mesh_route::decision::DestinationKey;
use mesh_route::routing::{Egress, MESH, RoutingTable};
use mesh_route::tcp_route::{ConnectionView, L4Decision, L4Routes};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

use crate::dns::{DnsCache, Spread, parse_ip};
use crate::server::DrainOutcome;
use crate::stack::RoutingState;

/// Where a connection is addressed: the `HOST:PORT` of its listener or of
/// its `CONNECT`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct L4Target {
    /// The host, as the client named it.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl std::fmt::Display for L4Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Settings of the TCP path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpSettings {
    /// Upstream connect timeout (DestinationRule `tcp.connectTimeout`'s
    /// default, 10 s).
    pub connect_timeout: Duration,
    /// How long a connection to a host with `tls` rules may take to send
    /// its ClientHello; a client that sends nothing by then is routed as
    /// opaque TCP (so server-first protocols still work), one that stalls
    /// mid-ClientHello is closed. Default 1 s.
    pub sniff_timeout: Duration,
}

impl Default for TcpSettings {
    fn default() -> Self {
        TcpSettings {
            connect_timeout: Duration::from_secs(10),
            sniff_timeout: Duration::from_secs(1),
        }
    }
}

/// Why a connection could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum L4Error {
    /// A routing, balancing, DNS or connect failure with its SPEC 2 status
    /// and flag (404 NR, 503 NC / UH / UF).
    #[error(transparent)]
    Mesh(#[from] MeshError),
    /// The host is not in the registry and the outbound traffic policy is
    /// `REGISTRY_ONLY` (SPEC 6.2; 502 for a `CONNECT`).
    #[error("{0} is not in the service registry and outboundTrafficPolicy is REGISTRY_ONLY")]
    Unregistered(String),
}

impl L4Error {
    /// The reply to a `CONNECT` that failed before its tunnel opened.
    pub fn to_response(&self) -> Response<Body> {
        match self {
            L4Error::Mesh(e) => e.to_response(),
            L4Error::Unregistered(_) => local_reply(StatusCode::BAD_GATEWAY, "-", self),
        }
    }
}

/// An open upstream connection, with what it holds for its whole life.
pub struct Opened {
    /// The upstream socket.
    pub stream: TcpStream,
    /// The address dialled.
    pub addr: SocketAddr,
    /// Counts the connection as active on its endpoint until dropped.
    pub guard: InFlight,
    /// Where it was routed, for logs.
    pub route: String,
}

/// Counts open connections so a shutdown can wait for them, and cuts the
/// rest at the drain deadline.
#[derive(Debug)]
pub struct ConnTracker {
    active: AtomicUsize,
    idle: Notify,
    cancel: watch::Sender<bool>,
}

impl Default for ConnTracker {
    fn default() -> Self {
        ConnTracker {
            active: AtomicUsize::new(0),
            idle: Notify::new(),
            cancel: watch::channel(false).0,
        }
    }
}

/// One tracked connection; dropping it ends the count.
#[derive(Debug)]
pub struct ConnGuard {
    tracker: Arc<ConnTracker>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if self.tracker.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.tracker.idle.notify_waiters();
        }
    }
}

impl ConnTracker {
    /// Counts one connection until the guard is dropped.
    pub fn track(self: &Arc<Self>) -> ConnGuard {
        self.active.fetch_add(1, Ordering::AcqRel);
        ConnGuard {
            tracker: Arc::clone(self),
        }
    }

    /// Connections open now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Turns true when open connections must be cut.
    pub fn cancelled(&self) -> watch::Receiver<bool> {
        self.cancel.subscribe()
    }

    /// Waits up to `deadline` for every connection to end; then cuts the
    /// rest. True when none had to be cut.
    pub async fn drain(&self, deadline: Duration) -> bool {
        let wait = async {
            loop {
                let idle = self.idle.notified();
                tokio::pin!(idle);
                idle.as_mut().enable();
                if self.active() == 0 {
                    return;
                }
                idle.await;
            }
        };
        let clean = tokio::time::timeout(deadline, wait).await.is_ok();
        if !clean {
            tracing::warn!(
                open = self.active(),
                "drain deadline passed; closing open TCP connections"
            );
            self.cancel.send_replace(true);
        }
        clean
    }
}

/// The outbound TCP path of one workload: routing, balancing, DNS and
/// connect, shared by every `--outbound-tcp` listener and `CONNECT` tunnel.
pub struct TcpProxy {
    routing: Arc<RoutingState>,
    workload: Arc<Workload>,
    l4: L4Routes,
    settings: TcpSettings,
    tracker: Arc<ConnTracker>,
}

impl std::fmt::Debug for TcpProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpProxy")
            .field("settings", &self.settings)
            .field("open", &self.tracker.active())
            .finish()
    }
}

impl TcpProxy {
    /// The TCP path over the sidecar's routing state.
    pub fn new(routing: Arc<RoutingState>, workload: Arc<Workload>, settings: TcpSettings) -> Self {
        TcpProxy {
            routing,
            workload,
            l4: L4Routes::default(),
            settings,
            tracker: Arc::new(ConnTracker::default()),
        }
    }

    /// The open-connection tracker (drained on shutdown).
    pub fn tracker(&self) -> &Arc<ConnTracker> {
        &self.tracker
    }

    fn dns(&self) -> &DnsCache {
        &self.routing.dns
    }

    /// Whether connections to `target` must be sniffed for a ClientHello
    /// before they can be routed (a VirtualService with `tls` rules governs
    /// the host).
    pub fn wants_sni(&self, target: &L4Target) -> bool {
        let table = self.routing.table.load();
        self.l4
            .table(&table.snapshot)
            .wants_sni(&target.host, &self.workload.namespace, MESH)
    }

    /// Serves one accepted connection to `target`: sniff if needed, route,
    /// connect, relay. Failures close the connection with a log line.
    pub async fn serve<IO>(&self, mut io: IO, target: &L4Target, peer: Option<SocketAddr>)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let _guard = self.tracker.track();
        let mut prefix = Vec::new();
        let sni = if self.wants_sni(target) {
            match sni::sniff(&mut io, &mut prefix, self.settings.sniff_timeout).await {
                Ok(sni::Hello::ClientHello { sni }) => sni,
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(%target, peer = ?peer, "closing the connection: {e}");
                    return;
                }
            }
        } else {
            None
        };
        match self.open(target, sni.as_deref(), peer).await {
            Ok(opened) => self.relay(io, opened, &prefix, target).await,
            Err(e) => {
                tracing::warn!(%target, sni = ?sni, peer = ?peer, "closing the connection: {e}");
            }
        }
    }

    /// Relays bytes between the client and an opened upstream (replaying
    /// `prefix`, the bytes read while sniffing, first) until both sides
    /// have closed, or the drain deadline cuts it.
    pub async fn relay<IO>(&self, mut io: IO, opened: Opened, prefix: &[u8], target: &L4Target)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let Opened {
            mut stream,
            addr,
            guard: _guard,
            route,
        } = opened;
        let _ = stream.set_nodelay(true);
        if !prefix.is_empty()
            && let Err(e) = stream.write_all(prefix).await
        {
            tracing::debug!(%target, %addr, "upstream write failed: {e}");
            return;
        }
        let mut cancel = self.tracker.cancelled();
        tokio::select! {
            done = tokio::io::copy_bidirectional(&mut io, &mut stream) => match done {
                Ok((up, down)) => tracing::debug!(
                    %target, %addr, %route,
                    bytes_sent = up + prefix.len() as u64, bytes_received = down,
                    "connection closed"
                ),
                Err(e) => tracing::debug!(%target, %addr, %route, "connection ended: {e}"),
            },
            _ = cancel.wait_for(|cut| *cut) => {
                tracing::debug!(%target, %addr, "connection cut at the drain deadline");
            }
        }
    }

    /// Routes a connection to `target` (with its SNI, if sniffed) and
    /// connects upstream.
    pub async fn open(
        &self,
        target: &L4Target,
        sni: Option<&str>,
        peer: Option<SocketAddr>,
    ) -> Result<Opened, L4Error> {
        let table = self.routing.table.load_full();
        let chosen = self.choose(&table, target, sni, peer)?;
        self.dial(target, sni, chosen).await
    }

    /// Connects a connection to `target` whose destination a route of the
    /// caller's own already chose (the ingress gateway's PASSTHROUGH
    /// servers, `crate::gateway`): balance, resolve and connect as
    /// [`TcpProxy::open`] does after routing. `route` names the rule for
    /// logs.
    pub async fn open_destination(
        &self,
        target: &L4Target,
        sni: Option<&str>,
        destination: DestinationKey,
        route: String,
        peer: Option<SocketAddr>,
    ) -> Result<Opened, L4Error> {
        let table = self.routing.table.load_full();
        let chosen = self.endpoint(&table, destination, route, target, peer)?;
        self.dial(target, sni, chosen).await
    }

    /// Resolves and connects the chosen endpoint.
    async fn dial(
        &self,
        target: &L4Target,
        sni: Option<&str>,
        chosen: Chosen,
    ) -> Result<Opened, L4Error> {
        let (host, port, spread, guard, route) = chosen;
        let addr = self
            .dns()
            .socket_addr(&host, port, spread)
            .await
            .map_err(|e| MeshError::NoHealthyUpstream(e.to_string()))?;
        let stream =
            match tokio::time::timeout(self.settings.connect_timeout, TcpStream::connect(addr))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    return Err(MeshError::ConnectFailure(format!("{addr}: {e}")).into());
                }
                Err(_) => {
                    return Err(MeshError::ConnectFailure(format!(
                        "{addr}: no connection within {:?}",
                        self.settings.connect_timeout
                    ))
                    .into());
                }
            };
        tracing::debug!(%target, sni = ?sni, %addr, %route, "connection routed");
        Ok(Opened {
            stream,
            addr,
            guard,
            route,
        })
    }

    /// The host and port to dial for a connection, and how to spread its
    /// addresses, with the endpoint guard and a route description.
    fn choose(
        &self,
        table: &RoutingTable,
        target: &L4Target,
        sni: Option<&str>,
        peer: Option<SocketAddr>,
    ) -> Result<(String, u16, Spread, InFlight, String), L4Error> {
        let snapshot = &table.snapshot;
        let index = &snapshot.index;
        let namespace = &self.workload.namespace;
        let view = ConnectionView {
            host: &target.host,
            port: target.port,
            sni,
            destination_ip: parse_ip(&target.host),
            source_ip: peer.map(|p| p.ip()),
            gateway: MESH,
            source_namespace: namespace,
            source_labels: &self.workload.labels,
        };
        let (destination, route) =
            match self.l4.table(snapshot).decide(&view, &*self.routing.random) {
                L4Decision::Forward { destination, route } => (destination, route.to_string()),
                L4Decision::NoRoute { resource } => {
                    tracing::debug!(%resource, "no tcp rule matches");
                    return Err(MeshError::NoRoute.into());
                }
                L4Decision::Default => {
                    let host = index.resolve_host(&target.host, namespace);
                    // Outside the registry: `outboundTrafficPolicy` (SPEC
                    // 6.2), decided as for HTTP.
                    match table.egress(&host, &target.host) {
                        Egress::Registered => {}
                        Egress::Passthrough => return Ok(passthrough(target)),
                        Egress::Blocked => {
                            return Err(L4Error::Unregistered(target.to_string()));
                        }
                    }
                    let route = format!("ServiceEntry host {host}");
                    (
                        DestinationKey {
                            host: host.into(),
                            subset: None,
                            port: None,
                        },
                        route,
                    )
                }
            };
        self.endpoint(table, destination, route, target, peer)
    }

    /// The endpoint of `destination` to dial for a connection to `target`
    /// (balanced; `resolution: NONE` dials the original destination).
    fn endpoint(
        &self,
        table: &RoutingTable,
        destination: DestinationKey,
        route: String,
        target: &L4Target,
        peer: Option<SocketAddr>,
    ) -> Result<Chosen, L4Error> {
        let index = &table.snapshot.index;
        let resolved = self
            .routing
            .balancers
            .resolve(table, &destination, Some(target.port))?;
        let hash = resolved.balancer.policy().hash_key().and_then(|key| {
            hash_key(
                key,
                &HeaderMap::new(),
                &Uri::default(),
                peer.map(|p| p.ip()),
            )
        });
        let pick = resolved
            .balancer
            .pick(&PickRequest {
                hash,
                eligible: &|_| true,
                avoid: &[],
            })
            .ok_or_else(|| MeshError::NoHealthyUpstream(destination.host.to_string()))?;
        let endpoints = resolved.balancer.endpoints();
        let Some(endpoint) = endpoints.get(pick.index) else {
            return Err(MeshError::NoHealthyUpstream(destination.host.to_string()).into());
        };
        let resolution = index.services.get(&*destination.host).map(|s| s.resolution);
        if matches!(
            resolution,
            Some(ServiceEntryResolution::None | ServiceEntryResolution::DynamicDns)
        ) {
            // NONE: the original destination, whatever the route chose.
            return Ok((
                target.host.clone(),
                target.port,
                Spread::RoundRobin,
                pick.guard,
                route,
            ));
        }
        let port = match &resolved.port {
            Some(p) => endpoint.port_for(p),
            None => u32::from(destination.port.unwrap_or(target.port)),
        };
        let port = u16::try_from(port).map_err(|_| {
            MeshError::NoHealthyUpstream(format!("{}: port {port}", endpoint.address))
        })?;
        Ok((
            endpoint.address.clone(),
            port,
            Spread::of(resolution),
            pick.guard,
            route,
        ))
    }
}

/// The host and port to dial, how to spread its addresses, the endpoint
/// guard and a route description.
type Chosen = (String, u16, Spread, InFlight, String);

/// The original destination of a connection to a host the registry does
/// not know (`ALLOW_ANY`, or a wildcard ServiceEntry with resolution NONE).
fn passthrough(target: &L4Target) -> (String, u16, Spread, InFlight, String) {
    (
        target.host.clone(),
        target.port,
        Spread::RoundRobin,
        InFlight::detached(),
        "passthrough (original destination)".to_owned(),
    )
}

/// Serves an `--outbound-tcp` listener: every accepted connection goes to
/// `target`, until `shutdown` turns true. Open connections are drained by
/// the proxy's [`ConnTracker`], not here.
pub async fn serve_listener(
    listener: TcpListener,
    proxy: Arc<TcpProxy>,
    target: L4Target,
    mut shutdown: watch::Receiver<bool>,
) -> DrainOutcome {
    let target = Arc::new(target);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(target = %target, "accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let proxy = Arc::clone(&proxy);
                let target = Arc::clone(&target);
                tokio::spawn(async move {
                    proxy.serve(stream, &target, Some(peer)).await;
                });
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
    DrainOutcome { clean: true }
}

/// Waits for shutdown, then drains the proxy's open connections (the
/// `--outbound-tcp` ones and `CONNECT` tunnels) for at most `deadline`.
pub async fn drain_on_shutdown(
    tracker: Arc<ConnTracker>,
    mut shutdown: watch::Receiver<bool>,
    deadline: Duration,
) -> DrainOutcome {
    let _ = shutdown.wait_for(|down| *down).await;
    DrainOutcome {
        clean: tracker.drain(deadline).await,
    }
}
