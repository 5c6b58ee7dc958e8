//! The ingress gateway runtime: load the configuration, bind a listener per
//! gateway server port, terminate TLS with the servers' certificates or
//! relay it by SNI, route through the outbound stack, follow reloads, drain
//! on shutdown. `mesh gateway` is a thin wrapper.
//!
//! Place in the flow: a gateway listener is where a request enters the mesh
//! from outside. Plain ports serve HTTP/1.1 and h2c; TLS ports (`tls.rs`)
//! complete a TLS handshake for `HTTPS` servers with `tls.mode: SIMPLE`
//! (certificate chosen by SNI among the port's servers, `mesh_tls::sni`;
//! HTTP/2 or HTTP/1.1 by ALPN), or relay the connection untouched for
//! `PASSTHROUGH` servers (SNI-routed by VirtualService `tls` rules, SPEC 6.1
//! and 4.7). A request then meets the gateway route stage
//! (`mesh_route::gateway`: server by Host, then the VirtualServices bound to
//! that Gateway, or the HTTPRoutes attached to that listener) and below it
//! the sidecar's outbound stages unchanged ([`crate::stack::gateway`]).
//!
//! Which servers, from any namespace:
//!
//! - the servers of the Istio Gateways whose `selector` matches the
//!   workload's labels ([`GatewayConfig::workload`]), as Istio does;
//! - the listeners of the Gateway API Gateways whose `gatewayClassName` is
//!   [`GatewayConfig::gateway_class`] (`--gateway-class`, default `mesh`),
//!   restricted to [`GatewayConfig::gateways`] (`--gateway NS/NAME`) and to
//!   the Gateway the workload label `gateway.networking.k8s.io/gateway-name`
//!   names (Istio's label for the deployment of one Gateway) when either is
//!   given. Gateway API Gateways have no selector; the class says which
//!   implementation owns a Gateway, and names give Istio's
//!   one-deployment-per-Gateway model (the reasons in
//!   `mesh_route::gateway::GatewayApiSelection`). HTTP and HTTPS listeners
//!   (`tls.mode: Terminate`, the first `certificateRefs` Secret read as a
//!   credential folder exactly like `credentialName`) are served.
//!
//! Where: `--listen PORT=ADDR` ([`GatewayConfig::listen`]) binds a server
//! port on that address; otherwise the server's `bind` IP, or
//! [`GatewayConfig::default_ip`] (`0.0.0.0`), on the server's port number.
//! Servers of both APIs may share a port when they agree on plain or TLS.
//! A port mixes `SIMPLE` and `PASSTHROUGH` servers freely: the SNI chooses.
//! A port cannot be both plain HTTP and TLS: the later server is not served,
//! with a log line.
//!
//! Servers not served, each logged at start and on every reload:
//! `AUTO_PASSTHROUGH` (the SNI would name a cluster), `MUTUAL` /
//! `OPTIONAL_MUTUAL` / `ISTIO_MUTUAL` (client certificates arrive with
//! mTLS), `TCP` / `MONGO` (Gateway API: `TLS`, `TCP`, `UDP` listeners, which
//! need TLSRoute / TCPRoute), Gateway API Gateways named by `--gateway` but
//! absent or of another class, and `HTTPS` servers whose credential is
//! missing or bad (the others on the port keep being served; the error
//! names the file, and [`Gateway::credential_errors`] lists it).
//!
//! Reloads: routes follow every new configuration (a new VirtualService or
//! HTTPRoute, a host added to a server, a server moved between Gateways, a
//! PASSTHROUGH server added to a TLS port), and so do certificates: the SNI table of every TLS port is rebuilt when the
//! configuration or the credentials folder changes, so a rotated
//! certificate is served to new handshakes without a restart. Listeners are
//! bound once, at start: a server port that appears in a later configuration
//! is logged and needs a restart; a port whose servers all disappear keeps
//! its listener and answers 404 `NR` (TLS ports: handshakes fail).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use mesh::gateway::{Gateway, GatewayConfig};
//! let mut config = GatewayConfig::new(vec!["mesh.yaml".into()]);
//! config.workload.labels.insert("istio".into(), "ingressgateway".into());
//! config.listen.insert(443, "127.0.0.1:18443".parse()?);
//! config.credentials_dir = Some("/etc/mesh/credentials".into());
//! let gateway = Gateway::start(config).await?;
//! for l in &gateway.listeners {
//!     println!("port {} listening on {}", l.port, l.addr);
//! }
//! gateway.shutdown().await;
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{HeaderName, HeaderValue, Request};
use mesh_core::http::Body;
use mesh_core::identity::Workload;
use mesh_core::load::LoadOptions;
use mesh_core::reload::{self, ConfigSource, ConfigWatcher, SnapshotHandle};
use mesh_core::schema::istio_networking::ServerTlsMode;
use mesh_core::snapshot::Snapshot;
use mesh_route::gateway::{
    DEFAULT_GATEWAY_CLASS, GatewayApiSelection, GatewayListener, GatewayServer, ServerKind,
    ServerOrigin, selected_servers, unserved_gateway_api,
};
use mesh_route::random::{SharedRandom, default_random};
use mesh_tls::credentials::{CredentialCache, CredentialWatcher, Credentials};
use mesh_tls::sni::{SniResolver, SniTable};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::admin::{self, AdminState};
use crate::server::{DrainOutcome, serve};
use crate::sidecar::StartError;
use crate::stack::{self, RoutingState};
use crate::tcp::{TcpProxy, TcpSettings};
use crate::upstream::UpstreamSettings;

mod tls;

use self::tls::{Passthrough, TlsListener, serve_tls};

/// Everything the gateway needs to start.
#[derive(Clone)]
pub struct GatewayConfig {
    /// Files and folders of configuration (watched).
    pub paths: Vec<PathBuf>,
    /// The gateway workload: its namespace (short names in its own
    /// requests) and its labels, which Istio Gateways select by
    /// (`istio: ingressgateway`).
    pub workload: Workload,
    /// The Gateway API `gatewayClassName` served (`--gateway-class`;
    /// default `mesh`).
    pub gateway_class: String,
    /// Gateway API Gateways to serve, `namespace/name` (or `name` in the
    /// workload's namespace) (`--gateway`, repeatable). Empty: every
    /// Gateway of the class (unless the workload label
    /// `gateway.networking.k8s.io/gateway-name` names one).
    pub gateways: Vec<String>,
    /// Addresses for server ports (`--listen 443=127.0.0.1:18443`).
    pub listen: BTreeMap<u16, SocketAddr>,
    /// The address of server ports without an override or `bind`.
    pub default_ip: IpAddr,
    /// The credentials folder: `credentialName: X` reads `DIR/X/tls.crt`
    /// and `DIR/X/tls.key` (see `mesh_tls::credentials`). Without it no
    /// HTTPS server can be served.
    pub credentials_dir: Option<PathBuf>,
    /// Admin listener.
    pub admin: SocketAddr,
    /// How long a drain waits for in-flight requests.
    pub drain_timeout: Duration,
    /// How long a client may take to complete a TLS handshake.
    pub handshake_timeout: Duration,
    /// Whether a client's `x-forwarded-proto` is believed (set when a
    /// trusted load balancer terminates TLS in front of the gateway);
    /// otherwise the gateway sets it from the connection.
    pub trust_forwarded_proto: bool,
    /// Whether to watch the configuration and credentials for changes.
    pub watch: bool,
    /// The random source (seed it in tests).
    pub random: SharedRandom,
    /// Upstream connection settings.
    pub upstream: UpstreamSettings,
    /// PASSTHROUGH connections: the upstream connect timeout (the
    /// ClientHello is awaited for the handshake timeout).
    pub tcp: TcpSettings,
}

impl GatewayConfig {
    /// Defaults of DESIGN.md's contract for these configuration paths.
    pub fn new(paths: Vec<PathBuf>) -> Self {
        GatewayConfig {
            paths,
            workload: Workload::default(),
            gateway_class: DEFAULT_GATEWAY_CLASS.to_owned(),
            gateways: Vec::new(),
            listen: BTreeMap::new(),
            default_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            credentials_dir: None,
            admin: SocketAddr::from(([127, 0, 0, 1], 15000)),
            drain_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            trust_forwarded_proto: false,
            watch: true,
            random: default_random(),
            upstream: UpstreamSettings::default(),
            tcp: TcpSettings::default(),
        }
    }

    /// Which Gateways this gateway serves: Istio Gateways by the workload's
    /// labels, Gateway API Gateways by class and names.
    pub fn serving(&self) -> Serving {
        Serving {
            labels: self.workload.labels.clone(),
            gateway_api: GatewayApiSelection::for_workload(
                &self.gateway_class,
                self.gateways.iter().map(String::as_str),
                &self.workload.namespace,
                &self.workload.labels,
            ),
        }
    }

    /// Parses one `--listen` value, `PORT=ADDR` (`443=127.0.0.1:18443`).
    pub fn parse_listen(value: &str) -> Result<(u16, SocketAddr), String> {
        let (port, addr) = value
            .split_once('=')
            .ok_or_else(|| format!("--listen {value:?}: expected PORT=ADDR"))?;
        let port: u16 = port
            .trim()
            .parse()
            .map_err(|_| format!("--listen {value:?}: {port:?} is not a port number"))?;
        let addr: SocketAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("--listen {value:?}: {addr:?} is not an IP:PORT address"))?;
        Ok((port, addr))
    }
}

/// Which Gateways a gateway workload serves (see the module doc).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Serving {
    /// The workload's labels: Istio Gateways whose `selector` matches.
    pub labels: BTreeMap<String, String>,
    /// Gateway API Gateways, by class and names.
    pub gateway_api: GatewayApiSelection,
}

impl Serving {
    /// The servers of `snapshot` served, in load order.
    pub fn servers(&self, snapshot: &Snapshot) -> Vec<Arc<GatewayServer>> {
        selected_servers(snapshot, &self.labels, &self.gateway_api)
    }
}

/// One bound gateway listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayPort {
    /// The Gateway server port it serves.
    pub port: u16,
    /// Where it is bound.
    pub addr: SocketAddr,
    /// Whether it is a TLS port: `HTTPS` servers terminate TLS there, and
    /// `PASSTHROUGH` servers relay it by SNI.
    pub tls: bool,
    /// The protocol of its first server (`HTTP`, `HTTPS`, ...).
    pub protocol: String,
}

/// A running gateway: its listeners, admin address and shutdown handle.
pub struct Gateway {
    /// The bound listeners, by port number.
    pub listeners: Vec<GatewayPort>,
    /// Bound admin address.
    pub admin: SocketAddr,
    /// The configuration handle (generation, reloads).
    pub snapshots: SnapshotHandle,
    tls: Arc<TlsPorts>,
    shutdown: watch::Sender<bool>,
    ready: Arc<AtomicBool>,
    served: JoinSet<DrainOutcome>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _watcher: Option<ConfigWatcher>,
    _credentials: Option<CredentialWatcher>,
}

/// A server port as planned at start.
struct PortPlan {
    port: u16,
    addr: SocketAddr,
    tls: bool,
    protocol: String,
}

/// The certificates of every TLS port, rebuilt on configuration and
/// credential changes.
struct TlsPorts {
    resolvers: BTreeMap<u16, Arc<SniResolver>>,
    errors: ArcSwap<Vec<String>>,
    updates: watch::Sender<u64>,
}

impl Gateway {
    /// Loads the configuration, then binds and serves every server port of
    /// the selected Gateways and the admin listener.
    pub async fn start(config: GatewayConfig) -> Result<Gateway, StartError> {
        let source = ConfigSource {
            paths: config.paths.clone(),
            options: LoadOptions {
                default_namespace: config.workload.namespace.clone(),
            },
        };
        let snapshots = tokio::task::spawn_blocking(move || reload::initial(source))
            .await
            .map_err(|e| StartError::Watch(e.to_string()))??;
        let routing = Arc::new(RoutingState::new(&snapshots, Arc::clone(&config.random)));
        let mut tasks = vec![routing.follow(&snapshots)];
        let watcher = if config.watch {
            Some(reload::watch(&snapshots).map_err(|e| StartError::Watch(e.to_string()))?)
        } else {
            None
        };

        let snapshot = snapshots.load();
        let serving = config.serving();
        let servers = serving.servers(&snapshot);
        log_unserved(&snapshot, &serving, &servers);
        let plans = plan(&servers, &config);
        if plans.is_empty() {
            tracing::warn!(
                labels = ?config.workload.labels,
                class = %serving.gateway_api.class,
                "no Istio Gateway selects this gateway's labels and no Gateway API Gateway of its class is served; only the admin listener runs"
            );
        }

        // Certificates before listeners: the first handshake already finds them.
        let credentials = Credentials::new(
            config
                .credentials_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("credentials")),
        );
        let (updates, _) = watch::channel(0u64);
        let tls = Arc::new(TlsPorts {
            resolvers: plans
                .iter()
                .filter(|p| p.tls)
                .map(|p| (p.port, Arc::new(SniResolver::new(SniTable::default()))))
                .collect(),
            errors: ArcSwap::from_pointee(Vec::new()),
            updates,
        });
        let mut cache = CredentialCache::new(credentials.clone());
        if !tls.resolvers.is_empty() {
            if config.credentials_dir.is_none()
                && servers.iter().any(|s| s.kind() == ServerKind::TlsTerminate)
            {
                tracing::error!(
                    "HTTPS Gateway servers need --credentials-dir; their ports refuse handshakes"
                );
            }
            let (tls, snapshot, serving) =
                (Arc::clone(&tls), Arc::clone(&snapshot), serving.clone());
            cache = tokio::task::spawn_blocking(move || {
                tls.refresh(&snapshot, &serving, &mut cache);
                cache
            })
            .await
            .map_err(|e| StartError::Watch(e.to_string()))?;
        }
        let credential_watcher = if config.watch
            && !tls.resolvers.is_empty()
            && config.credentials_dir.is_some()
        {
            match credentials.watch() {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::error!(
                        dir = %credentials.dir().display(),
                        "cannot watch the credentials folder ({e}); certificates are read at start and on configuration reloads only"
                    );
                    None
                }
            }
        } else {
            None
        };

        let mut bound = Vec::with_capacity(plans.len());
        for p in &plans {
            let listener = TcpListener::bind(p.addr)
                .await
                .map_err(|source| StartError::Bind {
                    listener: "gateway",
                    addr: p.addr,
                    source,
                })?;
            bound.push(listener);
        }
        let admin_listener =
            TcpListener::bind(config.admin)
                .await
                .map_err(|source| StartError::Bind {
                    listener: "admin",
                    addr: config.admin,
                    source,
                })?;
        let admin_addr = admin_listener.local_addr().unwrap_or(config.admin);

        let (shutdown, shutdown_rx) = watch::channel(false);
        let ready = Arc::new(AtomicBool::new(false));
        let mut served = JoinSet::new();
        let workload = Arc::new(config.workload.clone());
        let passthrough = Arc::new(Passthrough {
            routing: Arc::clone(&routing),
            workload: Arc::clone(&workload),
            proxy: Arc::new(TcpProxy::new(
                Arc::clone(&routing),
                Arc::clone(&workload),
                config.tcp.clone(),
            )),
        });
        let mut listeners = Vec::with_capacity(plans.len());
        for (p, listener) in plans.iter().zip(bound) {
            let addr = listener.local_addr().unwrap_or(p.addr);
            let route = Arc::new(GatewayListener {
                port: p.port,
                labels: serving.labels.clone(),
                gateway_api: serving.gateway_api.clone(),
                tls: p.tls,
                trust_forwarded_proto: config.trust_forwarded_proto,
            });
            let service = stack::gateway(
                &routing,
                Arc::clone(&workload),
                Arc::clone(&route),
                &config.upstream,
            );
            let service = forwarded_proto(service, p.tls, config.trust_forwarded_proto);
            match tls.resolvers.get(&p.port) {
                Some(resolver) => {
                    let server_config = mesh_tls::sni::server_config(Arc::clone(resolver))
                        .map_err(|e| StartError::Watch(format!("TLS configuration: {e}")))?;
                    served.spawn(serve_tls(TlsListener {
                        listener,
                        acceptor: TlsAcceptor::from(Arc::new(server_config)),
                        service,
                        shutdown: shutdown_rx.clone(),
                        drain: config.drain_timeout,
                        handshake: config.handshake_timeout,
                        route: Arc::clone(&route),
                        passthrough: Arc::clone(&passthrough),
                    }));
                }
                None => {
                    served.spawn(serve(
                        "gateway",
                        listener,
                        service,
                        shutdown_rx.clone(),
                        config.drain_timeout,
                    ));
                }
            }
            listeners.push(GatewayPort {
                port: p.port,
                addr,
                tls: p.tls,
                protocol: p.protocol.clone(),
            });
        }
        // PASSTHROUGH connections drain with the listeners.
        served.spawn(crate::tcp::drain_on_shutdown(
            Arc::clone(passthrough.proxy.tracker()),
            shutdown_rx.clone(),
            config.drain_timeout,
        ));
        served.spawn(serve(
            "admin",
            admin_listener,
            admin::service(AdminState {
                snapshots: snapshots.clone(),
                routing: Arc::clone(&routing),
                ready: Arc::clone(&ready),
                workload: Arc::new(config.workload.clone()),
            }),
            shutdown_rx,
            config.drain_timeout,
        ));

        tasks.push(follow(Follow {
            snapshots: snapshots.clone(),
            credential_changes: credential_watcher
                .as_ref()
                .map(CredentialWatcher::subscribe),
            serving,
            bound: plans.iter().map(|p| (p.port, p.tls)).collect(),
            tls: Arc::clone(&tls),
            cache,
            config: config.clone(),
        }));

        ready.store(true, Ordering::Release);
        Ok(Gateway {
            listeners,
            admin: admin_addr,
            snapshots,
            tls,
            shutdown,
            ready,
            served,
            tasks,
            _watcher: watcher,
            _credentials: credential_watcher,
        })
    }

    /// The bound address of server port `port`.
    pub fn addr(&self, port: u16) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|l| l.port == port)
            .map(|l| l.addr)
    }

    /// The credentials whose last read failed, one message each (naming the
    /// file); empty when every certificate in use loaded.
    pub fn credential_errors(&self) -> Vec<String> {
        self.tls.errors.load().as_ref().clone()
    }

    /// Counts certificate table rebuilds (start, reloads, credential
    /// changes), for tools and tests that wait for a rotation to land.
    pub fn tls_updates(&self) -> watch::Receiver<u64> {
        self.tls.updates.subscribe()
    }

    /// Stops accepting, drains in-flight requests (up to the drain
    /// timeout), and returns whether every listener drained cleanly.
    pub async fn shutdown(mut self) -> bool {
        self.ready.store(false, Ordering::Release);
        self.shutdown.send_replace(true);
        let mut clean = true;
        while let Some(outcome) = self.served.join_next().await {
            clean &= outcome.map(|o| o.clean).unwrap_or(false);
        }
        for task in &self.tasks {
            task.abort();
        }
        clean
    }
}

/// The listener address of each served port (see the module doc), in port
/// order.
fn plan(servers: &[Arc<GatewayServer>], config: &GatewayConfig) -> Vec<PortPlan> {
    let mut plans: BTreeMap<u16, PortPlan> = BTreeMap::new();
    for s in servers {
        let tls = match s.kind() {
            ServerKind::PlainHttp => false,
            ServerKind::TlsTerminate => true,
            _ if s.sni_passthrough() => true,
            _ => continue,
        };
        if let Some(existing) = plans.get(&s.port) {
            if existing.tls != tls {
                tracing::warn!(
                    "{}: port {} is already served as {}; one port cannot be both plain HTTP and TLS, so this server is not served",
                    s.describe(),
                    s.port,
                    if existing.tls { "TLS" } else { "plain HTTP" }
                );
            }
            continue;
        }
        let addr = config.listen.get(&s.port).copied().unwrap_or_else(|| {
            let ip = s
                .bind
                .as_deref()
                .and_then(|b| b.parse::<IpAddr>().ok())
                .unwrap_or(config.default_ip);
            SocketAddr::new(ip, s.port)
        });
        plans.insert(
            s.port,
            PortPlan {
                port: s.port,
                addr,
                tls,
                protocol: s.protocol.clone(),
            },
        );
    }
    plans.into_values().collect()
}

/// Logs each selected server this gateway does not serve, and why, and
/// the Gateway API Gateways named for it that it cannot serve.
fn log_unserved(snapshot: &Snapshot, serving: &Serving, servers: &[Arc<GatewayServer>]) {
    for problem in unserved_gateway_api(snapshot, &serving.gateway_api) {
        tracing::warn!("{problem}");
    }
    for s in servers {
        match s.kind() {
            ServerKind::PlainHttp | ServerKind::TlsTerminate => {}
            ServerKind::TlsPassthrough if s.sni_passthrough() => {}
            ServerKind::TlsPassthrough => tracing::warn!(
                "{}: tls.mode {:?} on port {} is not served (only PASSTHROUGH with VirtualService tls routes is)",
                s.describe(),
                s.tls_mode.unwrap_or(ServerTlsMode::AutoPassthrough),
                s.port
            ),
            ServerKind::MutualTls(mode) => tracing::error!(
                "{}: tls.mode {mode:?} needs client certificate validation, which arrives with mTLS; server on port {} not served",
                s.describe(),
                s.port
            ),
            ServerKind::Tcp | ServerKind::Unknown => tracing::warn!(
                "{}: protocol {} on port {} is not served by the HTTP gateway{}",
                s.describe(),
                s.protocol,
                s.port,
                match s.origin {
                    ServerOrigin::Istio => "",
                    ServerOrigin::GatewayApi { .. } =>
                        " (TLSRoute, TCPRoute and UDPRoute are not supported)",
                }
            ),
        }
        if s.kind() == ServerKind::TlsTerminate && s.credential.is_none() {
            match s.origin {
                ServerOrigin::Istio => tracing::error!(
                    "{}: HTTPS server without tls.credentialName; only credential folders are supported, so it is not served",
                    s.describe()
                ),
                ServerOrigin::GatewayApi { .. } => tracing::error!(
                    "{}: no usable certificateRefs (a core Secret in the Gateway's namespace, or in another namespace with a ReferenceGrant from this Gateway's namespace); the listener is not served",
                    s.describe()
                ),
            }
        }
    }
}

impl TlsPorts {
    /// Reads the credentials the selected servers name (blocking file IO)
    /// and rebuilds every TLS port's SNI table.
    fn refresh(&self, snapshot: &Snapshot, serving: &Serving, cache: &mut CredentialCache) {
        let servers: Vec<Arc<GatewayServer>> = serving
            .servers(snapshot)
            .into_iter()
            .filter(|s| s.kind() == ServerKind::TlsTerminate)
            .collect();
        cache.refresh(servers.iter().filter_map(|s| s.credential.as_deref()));
        // Errors first: once a handshake sees the new tables, the errors
        // read with them are already current.
        self.errors.store(Arc::new(
            cache.errors().values().map(ToString::to_string).collect(),
        ));
        for (port, resolver) in &self.resolvers {
            let mut table = SniTable::default();
            for s in servers.iter().filter(|s| s.port == *port) {
                if let Some(key) = s.credential.as_deref().and_then(|c| cache.get(c)) {
                    table.insert(s.hosts.iter().map(String::as_str), Arc::clone(key));
                }
            }
            // A PASSTHROUGH-only port holds no certificate.
            if table.is_empty() && servers.iter().any(|s| s.port == *port) {
                tracing::error!(port, "no certificate loaded for any server on this port");
            }
            resolver.store(table);
        }
        self.updates.send_modify(|n| *n += 1);
    }
}

/// What the reload follower needs.
struct Follow {
    snapshots: SnapshotHandle,
    credential_changes: Option<watch::Receiver<u64>>,
    serving: Serving,
    bound: BTreeMap<u16, bool>,
    tls: Arc<TlsPorts>,
    cache: CredentialCache,
    config: GatewayConfig,
}

/// Follows configuration and credential changes: rebuilds certificates,
/// and reports server ports that would need a restart.
fn follow(mut f: Follow) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut generations = f.snapshots.subscribe();
        loop {
            let config_changed = tokio::select! {
                changed = generations.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    true
                }
                changed = async {
                    match f.credential_changes.as_mut() {
                        Some(rx) => rx.changed().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if changed.is_err() {
                        f.credential_changes = None;
                        continue;
                    }
                    false
                }
            };
            let snapshot = f.snapshots.load();
            if config_changed {
                let servers = f.serving.servers(&snapshot);
                log_unserved(&snapshot, &f.serving, &servers);
                report_port_changes(&f.bound, &plan(&servers, &f.config));
            }
            if f.tls.resolvers.is_empty() {
                continue;
            }
            let tls = Arc::clone(&f.tls);
            let serving = f.serving.clone();
            let empty = CredentialCache::new(f.cache.credentials().clone());
            let mut cache = std::mem::replace(&mut f.cache, empty);
            match tokio::task::spawn_blocking(move || {
                tls.refresh(&snapshot, &serving, &mut cache);
                cache
            })
            .await
            {
                Ok(cache) => f.cache = cache,
                Err(e) => tracing::error!("certificate refresh failed: {e}"),
            }
        }
    })
}

fn report_port_changes(bound: &BTreeMap<u16, bool>, wanted: &[PortPlan]) {
    let wanted_ports: BTreeSet<u16> = wanted.iter().map(|p| p.port).collect();
    for p in wanted {
        match bound.get(&p.port) {
            None => tracing::warn!(
                port = p.port,
                "a Gateway server port appeared after start; restart the gateway to listen on it"
            ),
            Some(tls) if *tls != p.tls => tracing::warn!(
                port = p.port,
                "a Gateway server port changed between plain HTTP and TLS; restart the gateway to apply it"
            ),
            Some(_) => {}
        }
    }
    for port in bound.keys().filter(|p| !wanted_ports.contains(p)) {
        tracing::warn!(
            port,
            "no Gateway server uses this port any more; its listener answers 404 NR"
        );
    }
}

/// Sets `x-forwarded-proto` from the connection (`https` on TLS ports)
/// unless forwarding hops are trusted, as an edge proxy does.
fn forwarded_proto<S>(service: S, tls: bool, trust: bool) -> ForwardedProto<S> {
    let proto = HeaderValue::from_static(if tls { "https" } else { "http" });
    ForwardedProto {
        inner: service,
        set: (!trust).then(|| (HeaderName::from_static("x-forwarded-proto"), proto)),
    }
}

/// The stage [`forwarded_proto`] puts on top of a gateway listener's stack.
/// One type whether or not it sets the header, so that every gateway
/// listener serves the same concrete stack, and a service of its own
/// rather than a `map_request` closure so that type can be named.
#[derive(Clone)]
struct ForwardedProto<S> {
    inner: S,
    /// The header and its value, unless forwarding hops are trusted.
    set: Option<(HeaderName, HeaderValue)>,
}

impl<S: tower::Service<Request<Body>>> tower::Service<Request<Body>> for ForwardedProto<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> S::Future {
        if let Some((name, value)) = &self.set {
            req.headers_mut().insert(name.clone(), value.clone());
        }
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_values() {
        assert_eq!(
            GatewayConfig::parse_listen("443=127.0.0.1:18443"),
            Ok((443, SocketAddr::from(([127, 0, 0, 1], 18443))))
        );
        assert!(GatewayConfig::parse_listen("443").is_err());
        assert!(GatewayConfig::parse_listen("x=127.0.0.1:1").is_err());
        assert!(GatewayConfig::parse_listen("443=nowhere").is_err());
    }
}
