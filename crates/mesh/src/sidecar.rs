//! The sidecar runtime: load the configuration, bind the listeners, serve,
//! follow reloads, drain on shutdown. `mesh sidecar` is a thin wrapper.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use mesh::sidecar::{Sidecar, SidecarConfig};
//! let config = SidecarConfig::new(vec!["mesh.yaml".into()]);
//! let sidecar = Sidecar::start(config).await?;
//! println!("outbound on {}", sidecar.outbound);
//! sidecar.shutdown().await;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mesh_core::identity::Workload;
use mesh_core::load::LoadOptions;
use mesh_core::reload::{self, ConfigSource, ConfigWatcher, InitialLoadError, SnapshotHandle};
use mesh_route::random::{SharedRandom, default_random};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::admin::{self, AdminState};
use crate::dns::{DnsCache, DnsSettings};
use crate::server::{DrainOutcome, serve};
use crate::stack::{self, RoutingState};
use crate::tcp::{self as l4, L4Target, TcpProxy, TcpSettings};
use crate::upstream::UpstreamSettings;

/// Everything the sidecar needs to start.
#[derive(Clone)]
pub struct SidecarConfig {
    /// Files and folders of configuration (watched).
    pub paths: Vec<PathBuf>,
    /// The workload this sidecar runs for.
    pub workload: Workload,
    /// Outbound listener (application -> mesh).
    pub outbound: SocketAddr,
    /// Inbound listener (mesh -> application); needs `app`.
    pub inbound: SocketAddr,
    /// Admin listener.
    pub admin: SocketAddr,
    /// The local application inbound traffic goes to; without it no inbound
    /// listener is bound.
    pub app: Option<SocketAddr>,
    /// How long a drain waits for in-flight requests.
    pub drain_timeout: Duration,
    /// Whether to watch the configuration for changes.
    pub watch: bool,
    /// The random source (seed it in tests).
    pub random: SharedRandom,
    /// Upstream connection settings.
    pub upstream: UpstreamSettings,
    /// `--outbound-tcp HOST:PORT=ADDR` listeners: (host, port, listen
    /// address); every connection accepted on the address is outbound TCP
    /// to `HOST:PORT` (`crate::tcp`).
    pub outbound_tcp: Vec<(String, u16, SocketAddr)>,
    /// DNS resolution of ServiceEntry endpoints (`crate::dns`).
    pub dns: DnsSettings,
    /// The outbound TCP path (`--outbound-tcp`, `CONNECT`).
    pub tcp: TcpSettings,
}

impl SidecarConfig {
    /// Defaults of DESIGN.md's contract for these configuration paths.
    pub fn new(paths: Vec<PathBuf>) -> Self {
        SidecarConfig {
            paths,
            workload: Workload::default(),
            outbound: SocketAddr::from(([127, 0, 0, 1], 15001)),
            inbound: SocketAddr::from(([0, 0, 0, 0], 15006)),
            admin: SocketAddr::from(([127, 0, 0, 1], 15000)),
            app: None,
            drain_timeout: Duration::from_secs(30),
            watch: true,
            random: default_random(),
            upstream: UpstreamSettings::default(),
            outbound_tcp: Vec::new(),
            dns: DnsSettings::default(),
            tcp: TcpSettings::default(),
        }
    }
}

/// Why the sidecar did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration has errors (listeners bind only after a valid one).
    #[error(transparent)]
    Config(#[from] InitialLoadError),
    /// A listener could not bind.
    #[error("cannot listen on {addr} ({listener}): {source}")]
    Bind {
        /// Which listener.
        listener: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file watcher could not start.
    #[error("cannot watch the configuration: {0}")]
    Watch(String),
}

/// A running sidecar: its bound addresses and its shutdown handle.
pub struct Sidecar {
    /// Bound outbound address.
    pub outbound: SocketAddr,
    /// Bound inbound address, when an application was given.
    pub inbound: Option<SocketAddr>,
    /// Bound admin address.
    pub admin: SocketAddr,
    /// Bound `--outbound-tcp` addresses, in the order of
    /// [`SidecarConfig::outbound_tcp`].
    pub outbound_tcp: Vec<SocketAddr>,
    /// The configuration handle (generation, reloads).
    pub snapshots: SnapshotHandle,
    shutdown: watch::Sender<bool>,
    ready: Arc<AtomicBool>,
    listeners: JoinSet<DrainOutcome>,
    follower: tokio::task::JoinHandle<()>,
    _watcher: Option<ConfigWatcher>,
}

async fn bind(listener: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            listener,
            addr,
            source,
        })
}

impl Sidecar {
    /// Loads the configuration, then binds and serves every listener.
    pub async fn start(config: SidecarConfig) -> Result<Sidecar, StartError> {
        let source = ConfigSource {
            paths: config.paths.clone(),
            options: LoadOptions {
                default_namespace: config.workload.namespace.clone(),
            },
        };
        let snapshots = tokio::task::spawn_blocking(move || reload::initial(source))
            .await
            .map_err(|e| StartError::Watch(e.to_string()))??;
        let mut routing = RoutingState::new(&snapshots, Arc::clone(&config.random));
        routing.dns = Arc::new(DnsCache::new(config.dns.clone()));
        let routing = Arc::new(routing);
        let follower = routing.follow(&snapshots);
        let watcher = if config.watch {
            Some(reload::watch(&snapshots).map_err(|e| StartError::Watch(e.to_string()))?)
        } else {
            None
        };

        let outbound_listener = bind("outbound", config.outbound).await?;
        let admin_listener = bind("admin", config.admin).await?;
        let inbound_listener = match config.app {
            Some(_) => Some(bind("inbound", config.inbound).await?),
            None => None,
        };
        let local = |l: &TcpListener, fallback: SocketAddr| l.local_addr().unwrap_or(fallback);
        let outbound = local(&outbound_listener, config.outbound);
        let admin_addr = local(&admin_listener, config.admin);
        let inbound = inbound_listener.as_ref().map(|l| local(l, config.inbound));
        let mut tcp_listeners = Vec::with_capacity(config.outbound_tcp.len());
        for (host, port, addr) in &config.outbound_tcp {
            let listener = bind("outbound-tcp", *addr).await?;
            let target = L4Target {
                host: host.clone(),
                port: *port,
            };
            tcp_listeners.push((local(&listener, *addr), listener, target));
        }
        let outbound_tcp: Vec<SocketAddr> = tcp_listeners.iter().map(|(a, ..)| *a).collect();
        for addr in [outbound, admin_addr]
            .into_iter()
            .chain(inbound)
            .chain(outbound_tcp.iter().copied())
        {
            routing.listeners.add(addr);
        }

        let (shutdown, shutdown_rx) = watch::channel(false);
        let ready = Arc::new(AtomicBool::new(false));
        let mut listeners = JoinSet::new();
        let workload = Arc::new(config.workload.clone());
        let tcp_proxy = Arc::new(TcpProxy::new(
            Arc::clone(&routing),
            Arc::clone(&workload),
            config.tcp.clone(),
        ));
        for (_, listener, target) in tcp_listeners {
            listeners.spawn(l4::serve_listener(
                listener,
                Arc::clone(&tcp_proxy),
                target,
                shutdown_rx.clone(),
            ));
        }
        // Open TCP connections and CONNECT tunnels drain with the listeners.
        listeners.spawn(l4::drain_on_shutdown(
            Arc::clone(tcp_proxy.tracker()),
            shutdown_rx.clone(),
            config.drain_timeout,
        ));
        listeners.spawn(serve(
            "outbound",
            outbound_listener,
            // CONNECT tunnels leave the HTTP stack before routing.
            stack::Tunnels::new(
                Arc::clone(&tcp_proxy),
                stack::outbound(&routing, Arc::clone(&workload), &config.upstream),
            ),
            shutdown_rx.clone(),
            config.drain_timeout,
        ));
        if let (Some(listener), Some(app)) = (inbound_listener, config.app) {
            listeners.spawn(serve(
                "inbound",
                listener,
                stack::inbound(app, &config.upstream, &snapshots, Arc::clone(&workload)),
                shutdown_rx.clone(),
                config.drain_timeout,
            ));
        }
        listeners.spawn(serve(
            "admin",
            admin_listener,
            admin::service(AdminState {
                snapshots: snapshots.clone(),
                routing: Arc::clone(&routing),
                ready: Arc::clone(&ready),
                workload: Arc::clone(&workload),
            }),
            shutdown_rx,
            config.drain_timeout,
        ));
        ready.store(true, Ordering::Release);
        Ok(Sidecar {
            outbound,
            inbound,
            admin: admin_addr,
            outbound_tcp,
            snapshots,
            shutdown,
            ready,
            listeners,
            follower,
            _watcher: watcher,
        })
    }

    /// Stops accepting, drains in-flight requests (up to the drain
    /// timeout), and returns whether every listener drained cleanly.
    pub async fn shutdown(mut self) -> bool {
        self.ready.store(false, Ordering::Release);
        self.shutdown.send_replace(true);
        let mut clean = true;
        while let Some(outcome) = self.listeners.join_next().await {
            clean &= outcome.map(|o| o.clean).unwrap_or(false);
        }
        self.follower.abort();
        clean
    }
}
