//! Ingress gateway routing: which gateway server a request or connection
//! reached, and which routes bound to that server decide it (SPEC 6.1, 4.1,
//! 4.7, 4.8, 3.1, 3.2).
//!
//! Place in the flow: this is the route stage (SPEC 1.1 steps 1 and 2) of a
//! gateway listener. A sidecar routes by the `mesh` VirtualServices of the
//! request's host; a gateway listener first finds the *server*: among the
//! servers on its port that this gateway serves, the one whose hosts cover
//! the request's Host (an exact host first, then the most specific `*.`
//! wildcard, then `*`; servers naming the same host keep load order). Two
//! APIs declare servers, and both may share a port:
//!
//! - **Istio `Gateway`** `servers[]`, of the Gateways whose `selector`
//!   matches the gateway workload's labels. The VirtualServices that list
//!   that Gateway in `gateways:` and name the host (again exact, then most
//!   specific wildcard) are tried in order; when several bind one host their
//!   rules are concatenated (SPEC 4.8), earliest resource first. Rule-level
//!   `match.gateways` conditions see the Gateway's `namespace/name`.
//! - **Gateway API `Gateway`** listeners (`gateway.networking.k8s.io`), of
//!   the Gateways this gateway serves by [`GatewayApiSelection`] (they have
//!   no selector: see there for the rule). A listener is a server whose host
//!   is its `hostname` (`*` without one); the HTTPRoutes attached to it
//!   (`parentRefs` with `sectionName` / `port`, `allowedRoutes`, hostname
//!   intersection: [`crate::xroute`]) decide with Gateway API precedence
//!   (SPEC 3.2). No attached route serves the host: 404 `NR`.
//!
//! The result is the same [`RouteDecision`] a sidecar produces, so the rest
//! of the outbound stack (fault, mirror, timeout, balance, connect) serves
//! gateways unchanged. Local outcomes:
//!
//! - no server on the port covers the Host: 404 `NR`;
//! - a server covers it but no VirtualService (HTTPRoute) serves the host:
//!   404 `NR` (SPEC 2);
//! - an Istio server has `tls.httpsRedirect: true` and the request came over
//!   plain HTTP: 301 to `https://<host><path>?<query>` (the port is dropped:
//!   the HTTPS server has its own), before any VirtualService is consulted,
//!   as Istio does; `x-forwarded-proto: https` is honoured only when the
//!   listener trusts forwarding hops.
//!
//! A VirtualService host binds when both it and a server host cover the
//! request's host (Istio intersects the two lists, so a `*.example.com`
//! VirtualService serves a gateway server for `api.example.com`). A server
//! host written `ns/host` admits only VirtualServices of namespace `ns`
//! (`.` is the Gateway's own namespace, `*` any).
//!
//! **TLS passthrough** (Istio `tls.mode: PASSTHROUGH`, SPEC 6.1): such a
//! server is chosen by the SNI of the connection's ClientHello, among the
//! port's TLS servers, the same way ([`GatewayRoutes::decide_tls`]); then the
//! `tls` rules (`match.sniHosts`, SPEC 4.7) of the VirtualServices bound to
//! its Gateway for that name pick the destination, once per connection. When
//! the SNI's most specific server on the port terminates TLS instead
//! (`SIMPLE`), the connection is terminated: one port can mix both modes.
//! `AUTO_PASSTHROUGH` (the SNI encodes a cluster name) is not served.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use http::HeaderValue;
use mesh_core::host::strip_port;
use mesh_core::resource::{Resource, Spec};
use mesh_core::schema::gateway_api::{Listener, TlsMode};
use mesh_core::schema::istio_networking::{Server, ServerTlsMode};
use mesh_core::snapshot::Snapshot;

use crate::decision::{DestinationKey, RouteAction, RouteDecision, RouteId};
use crate::matcher::{CompileError, CompiledVirtualService, RequestView};
use crate::random::RandomSource;
use crate::tcp_route::{ConnectionView, L4Decision, L4RouteId, L4VirtualService};
use crate::xroute::XRouteTable;

/// The Gateway API class a gateway serves unless told otherwise
/// (`mesh gateway --gateway-class`).
pub const DEFAULT_GATEWAY_CLASS: &str = "mesh";

/// The label Istio puts on the deployment it runs for a Gateway API
/// Gateway, naming that Gateway (in the deployment's namespace).
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// Which Gateway API Gateways a gateway workload serves.
///
/// Istio Gateways pick their workloads by `selector`; Gateway API Gateways
/// have no selector: in a cluster a controller owns every Gateway of its
/// `GatewayClass` and provisions proxies for them. The rule here follows
/// both halves of that model:
///
/// 1. **Class**: a Gateway is a candidate only when its `gatewayClassName`
///    is [`GatewayApiSelection::class`] (`--gateway-class`, default
///    [`DEFAULT_GATEWAY_CLASS`]). The class says which implementation owns
///    a Gateway, so Gateways written for another implementation (`istio`,
///    an external load balancer) loaded from the same folder are left
///    alone rather than silently hijacked.
/// 2. **Names**: when [`GatewayApiSelection::gateways`] is not empty
///    (`--gateway NS/NAME`, repeatable, or Istio's deployment label
///    [`GATEWAY_NAME_LABEL`]`=NAME` naming a Gateway in the workload's own
///    namespace), only those Gateways are served: one gateway process per
///    Gateway, as Istio deploys them. Without names, every Gateway of the
///    class is served by this process (a shared gateway).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayApiSelection {
    /// The `gatewayClassName` served.
    pub class: String,
    /// `namespace/name` of the Gateways served; empty means every Gateway
    /// of the class.
    pub gateways: BTreeSet<String>,
}

impl Default for GatewayApiSelection {
    fn default() -> Self {
        GatewayApiSelection {
            class: DEFAULT_GATEWAY_CLASS.to_owned(),
            gateways: BTreeSet::new(),
        }
    }
}

impl GatewayApiSelection {
    /// The selection of a gateway workload in `namespace` with `labels`:
    /// `class`, the named `gateways` (`namespace/name`, or `name` for one in
    /// the workload's namespace), and the Gateway its
    /// [`GATEWAY_NAME_LABEL`] label names, if any.
    pub fn for_workload<'a>(
        class: &str,
        gateways: impl IntoIterator<Item = &'a str>,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Self {
        let qualify = |g: &str| {
            if g.contains('/') {
                g.to_owned()
            } else {
                format!("{namespace}/{g}")
            }
        };
        let mut names: BTreeSet<String> = gateways.into_iter().map(qualify).collect();
        if let Some(name) = labels.get(GATEWAY_NAME_LABEL) {
            names.insert(qualify(name));
        }
        GatewayApiSelection {
            class: class.to_owned(),
            gateways: names,
        }
    }

    /// Whether the Gateway `key` (`namespace/name`) of class `class` is
    /// served.
    pub fn serves(&self, key: &str, class: &str) -> bool {
        class == self.class && (self.gateways.is_empty() || self.gateways.contains(key))
    }
}

/// What a gateway listener tells the route stage about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GatewayListener {
    /// The Gateway server port it serves (443, not the bound port).
    pub port: u16,
    /// The gateway workload's labels; Istio Gateways select by them.
    pub labels: BTreeMap<String, String>,
    /// The Gateway API Gateways the gateway serves.
    pub gateway_api: GatewayApiSelection,
    /// Whether it terminates TLS (requests on it are `https`).
    pub tls: bool,
    /// Whether a client's `x-forwarded-proto` is believed (only behind a
    /// trusted load balancer); decides whether `httpsRedirect` applies.
    pub trust_forwarded_proto: bool,
}

/// How a server carries traffic, which decides how its port is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServerKind {
    /// HTTP, HTTP2, GRPC or GRPC-WEB without TLS: HTTP/1.1 and h2c.
    PlainHttp,
    /// HTTPS with `tls.mode: SIMPLE` (Gateway API: `Terminate`): TLS
    /// terminated with the server's credential, then HTTP/1.1 or HTTP/2 by
    /// ALPN.
    TlsTerminate,
    /// HTTPS or TLS with `PASSTHROUGH` / `AUTO_PASSTHROUGH` (and TLS servers
    /// without a mode): forwarded by SNI without terminating.
    TlsPassthrough,
    /// `MUTUAL`, `OPTIONAL_MUTUAL` or `ISTIO_MUTUAL`: client certificates.
    MutualTls(ServerTlsMode),
    /// TCP or MONGO (Gateway API: TCP, UDP, TLS, which need TCPRoute /
    /// TLSRoute): opaque bytes.
    Tcp,
    /// A protocol this proxy does not know.
    Unknown,
}

/// Which API declared a server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerOrigin {
    /// A `servers[]` entry of an Istio (`networking.istio.io`) Gateway.
    Istio,
    /// A listener of a Gateway API (`gateway.networking.k8s.io`) Gateway.
    GatewayApi {
        /// The listener's `name` (the `sectionName` routes attach by).
        listener: Arc<str>,
        /// The Gateway's `gatewayClassName`.
        class: Arc<str>,
    },
}

/// One server of a Gateway (an Istio server or a Gateway API listener), as
/// the gateway runtime and the router need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayServer {
    /// The Gateway, `namespace/name`.
    pub gateway: Arc<str>,
    /// Which API declared it.
    pub origin: ServerOrigin,
    /// The server's index in the Gateway's `servers` (`listeners`).
    pub index: usize,
    /// The port number.
    pub port: u16,
    /// The port protocol, upper-cased.
    pub protocol: String,
    /// `bind`, when set.
    pub bind: Option<String>,
    /// Hosts as written (`[namespace/]dnsName`); a listener's `hostname`,
    /// or `*` without one.
    pub hosts: Vec<String>,
    /// The TLS mode, when TLS settings are given (a Gateway API `Terminate`
    /// listener reads as `SIMPLE`, `Passthrough` as `PASSTHROUGH`).
    pub tls_mode: Option<ServerTlsMode>,
    /// The certificate's credential name (`credentialName`, else the first
    /// of `credentialNames`; for a listener, the name of its first usable
    /// Secret in `certificateRefs`).
    pub credential: Option<String>,
    /// `tls.httpsRedirect`.
    pub https_redirect: bool,
}

impl GatewayServer {
    fn from_spec(gateway: &Arc<str>, index: usize, server: &Server) -> Option<GatewayServer> {
        let port = server.port.as_ref()?;
        let number = u16::try_from(port.number).ok().filter(|n| *n > 0)?;
        let tls = server.tls.as_ref();
        Some(GatewayServer {
            gateway: Arc::clone(gateway),
            origin: ServerOrigin::Istio,
            index,
            port: number,
            protocol: port.protocol.to_ascii_uppercase(),
            bind: server.bind.clone(),
            hosts: server.hosts.clone(),
            tls_mode: tls.and_then(|t| t.mode),
            credential: tls.and_then(|t| {
                t.credential_name
                    .clone()
                    .or_else(|| t.credential_names.first().cloned())
            }),
            https_redirect: tls.and_then(|t| t.https_redirect).unwrap_or(false),
        })
    }

    /// A Gateway API listener as a server. `certificateRefs` resolve like
    /// Istio's `credentialName`: the Secret's name is the credential folder
    /// (`DIR/<name>/tls.crt`); a Secret in another namespace needs a
    /// ReferenceGrant there (from Gateways of this namespace), as Gateway
    /// API requires; refs that are not core Secrets are skipped.
    fn from_listener(
        gateway: &Arc<str>,
        class: &Arc<str>,
        index: usize,
        listener: &Listener,
        grants: &SecretGrants,
    ) -> Option<GatewayServer> {
        let number = u16::try_from(listener.port).ok().filter(|n| *n > 0)?;
        let gateway_ns = gateway.split_once('/').map_or("", |(ns, _)| ns);
        let tls = listener.tls.as_ref();
        let credential = tls.and_then(|t| {
            t.certificate_refs
                .iter()
                .find(|r| {
                    matches!(r.group.as_deref(), None | Some("" | "core"))
                        && r.kind.as_deref().unwrap_or("Secret") == "Secret"
                        && r.namespace.as_deref().is_none_or(|ns| {
                            ns == gateway_ns || grants.allows(ns, gateway_ns, &r.name)
                        })
                })
                .map(|r| r.name.clone())
        });
        Some(GatewayServer {
            gateway: Arc::clone(gateway),
            origin: ServerOrigin::GatewayApi {
                listener: Arc::from(listener.name.as_str()),
                class: Arc::clone(class),
            },
            index,
            port: number,
            protocol: listener.protocol.to_ascii_uppercase(),
            bind: None,
            hosts: vec![listener.hostname.clone().unwrap_or_else(|| "*".to_owned())],
            tls_mode: tls.map(|t| match t.mode.unwrap_or_default() {
                TlsMode::Terminate => ServerTlsMode::Simple,
                TlsMode::Passthrough => ServerTlsMode::Passthrough,
            }),
            credential,
            https_redirect: false,
        })
    }

    /// How the server is served (see [`ServerKind`]).
    pub fn kind(&self) -> ServerKind {
        if let ServerOrigin::GatewayApi { .. } = self.origin {
            return match (self.protocol.as_str(), self.tls_mode) {
                ("HTTP", _) => ServerKind::PlainHttp,
                ("HTTPS", Some(ServerTlsMode::Simple)) => ServerKind::TlsTerminate,
                ("TLS" | "TCP" | "UDP", _) => ServerKind::Tcp,
                _ => ServerKind::Unknown,
            };
        }
        match self.protocol.as_str() {
            "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB" => ServerKind::PlainHttp,
            "HTTPS" | "TLS" => match self.tls_mode {
                Some(ServerTlsMode::Simple) if self.protocol == "HTTPS" => ServerKind::TlsTerminate,
                Some(ServerTlsMode::Simple) => ServerKind::Tcp,
                Some(
                    mode @ (ServerTlsMode::Mutual
                    | ServerTlsMode::OptionalMutual
                    | ServerTlsMode::IstioMutual),
                ) => ServerKind::MutualTls(mode),
                // The proto's default mode is PASSTHROUGH.
                Some(ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough) | None => {
                    ServerKind::TlsPassthrough
                }
            },
            "TCP" | "MONGO" => ServerKind::Tcp,
            _ => ServerKind::Unknown,
        }
    }

    /// Whether this gateway relays the server's connections by SNI with
    /// VirtualService `tls` routes: a `PASSTHROUGH` server (not
    /// `AUTO_PASSTHROUGH`, whose SNI names a cluster instead).
    pub fn sni_passthrough(&self) -> bool {
        self.kind() == ServerKind::TlsPassthrough
            && self.tls_mode != Some(ServerTlsMode::AutoPassthrough)
    }

    /// `Gateway/<namespace>/<name> servers[i]` (Gateway API:
    /// `Gateway.gateway.networking.k8s.io/<namespace>/<name> listeners[i]
    /// (<name>)`), for logs.
    pub fn describe(&self) -> String {
        match &self.origin {
            ServerOrigin::Istio => format!("Gateway/{} servers[{}]", self.gateway, self.index),
            ServerOrigin::GatewayApi { listener, .. } => format!(
                "Gateway.gateway.networking.k8s.io/{} listeners[{}] ({listener})",
                self.gateway, self.index
            ),
        }
    }
}

/// ReferenceGrants that let Gateways refer to Secrets in another namespace:
/// (Secret namespace, Gateway namespace, one Secret name or all).
#[derive(Debug, Default)]
struct SecretGrants(HashSet<(String, String, Option<String>)>);

impl SecretGrants {
    fn collect(resources: &[Arc<Resource>]) -> SecretGrants {
        let mut grants = SecretGrants::default();
        for r in resources {
            let Spec::ReferenceGrant(g) = &r.spec else {
                continue;
            };
            for from in g.from.iter().filter(|f| {
                f.kind == "Gateway" && matches!(f.group.as_str(), "gateway.networking.k8s.io")
            }) {
                for to in
                    g.to.iter()
                        .filter(|t| matches!(t.group.as_str(), "" | "core") && t.kind == "Secret")
                {
                    grants.0.insert((
                        r.namespace().to_owned(),
                        from.namespace.clone(),
                        to.name.clone(),
                    ));
                }
            }
        }
        grants
    }

    fn allows(&self, secret_ns: &str, gateway_ns: &str, name: &str) -> bool {
        let key = |n: Option<String>| (secret_ns.to_owned(), gateway_ns.to_owned(), n);
        self.0.contains(&key(None)) || self.0.contains(&key(Some(name.to_owned())))
    }
}

/// Whether a Gateway's `selector` picks a workload with `labels` (every
/// selector label present with the same value; an empty selector picks
/// every gateway workload).
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The servers this gateway serves, in load order (Gateways in file order,
/// servers and listeners in list order): the servers of the Istio Gateways
/// whose `selector` matches `labels`, and the listeners of the Gateway API
/// Gateways `gateway_api` selects. The gateway runtime binds a listener per
/// port of these.
pub fn selected_servers(
    snapshot: &Snapshot,
    labels: &BTreeMap<String, String>,
    gateway_api: &GatewayApiSelection,
) -> Vec<Arc<GatewayServer>> {
    let mut out = Vec::new();
    let mut grants = None;
    for r in &snapshot.resources {
        match &r.spec {
            Spec::Gateway(gw) if selects(&gw.selector, labels) => {
                let key: Arc<str> = Arc::from(format!("{}/{}", r.namespace(), r.name()));
                for (i, server) in gw.servers.iter().enumerate() {
                    if let Some(s) = GatewayServer::from_spec(&key, i, server) {
                        out.push(Arc::new(s));
                    }
                }
            }
            Spec::K8sGateway(gw) => {
                let key: Arc<str> = Arc::from(format!("{}/{}", r.namespace(), r.name()));
                if !gateway_api.serves(&key, &gw.gateway_class_name) {
                    continue;
                }
                let grants =
                    grants.get_or_insert_with(|| SecretGrants::collect(&snapshot.resources));
                let class: Arc<str> = Arc::from(gw.gateway_class_name.as_str());
                for (i, l) in gw.listeners.iter().enumerate() {
                    if let Some(s) = GatewayServer::from_listener(&key, &class, i, l, grants) {
                        out.push(Arc::new(s));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Why Gateway API Gateways named by `gateway_api` are not served (absent
/// from the configuration, or of another class), one line each, for the
/// gateway runtime to log at start and on reloads.
pub fn unserved_gateway_api(snapshot: &Snapshot, gateway_api: &GatewayApiSelection) -> Vec<String> {
    let mut out = Vec::new();
    for wanted in &gateway_api.gateways {
        let found = snapshot.resources.iter().find_map(|r| match &r.spec {
            Spec::K8sGateway(gw) if format!("{}/{}", r.namespace(), r.name()) == *wanted => {
                Some((r, gw))
            }
            _ => None,
        });
        match found {
            None => out.push(format!(
                "Gateway API Gateway {wanted} is not in the configuration; nothing is served for it"
            )),
            Some((r, gw)) if gw.gateway_class_name != gateway_api.class => out.push(format!(
                "Gateway.gateway.networking.k8s.io/{wanted} at {}: gatewayClassName {:?} is not this gateway's class {:?} (--gateway-class); it is not served",
                r.location, gw.gateway_class_name, gateway_api.class
            )),
            Some(_) => {}
        }
    }
    out
}

/// Which VirtualService namespaces a server host admits.
#[derive(Clone, Debug)]
enum Admits {
    Any,
    Namespace(Box<str>),
}

impl Admits {
    fn admits(&self, namespace: &str) -> bool {
        match self {
            Admits::Any => true,
            Admits::Namespace(ns) => **ns == *namespace,
        }
    }
}

/// How a server's Gateway picks the workloads that serve it.
#[derive(Debug)]
enum Selection {
    /// Istio: the Gateway's `selector`.
    Labels(BTreeMap<String, String>),
    /// Gateway API: the Gateway's class (and name, see
    /// [`GatewayApiSelection`]).
    Class(Arc<str>),
}

/// What decides for a server's requests and connections.
#[derive(Debug)]
enum ServerRoutes {
    /// The VirtualServices bound to an Istio Gateway: their `http` rules
    /// by host, and their `tls` rules by host (PASSTHROUGH servers).
    Istio {
        http: Arc<HostTable<Arc<CompiledVirtualService>>>,
        tls: Arc<HostTable<TlsBinding>>,
    },
    /// The HTTPRoutes attached to a Gateway API listener, kept by the
    /// [`XRouteTable`].
    HttpRoutes {
        namespace: Box<str>,
        name: Box<str>,
        listener: Box<str>,
    },
}

/// A VirtualService with `tls` rules bound to a Gateway, with its
/// namespace (server hosts may admit only some namespaces).
#[derive(Debug)]
struct TlsBinding {
    namespace: Box<str>,
    vs: Arc<L4VirtualService>,
}

/// A server as the router keeps it.
#[derive(Debug)]
struct RoutedServer {
    server: Arc<GatewayServer>,
    selection: Selection,
    routes: ServerRoutes,
    id: RouteId,
}

impl RoutedServer {
    fn selected_by(&self, listener: &GatewayListener) -> bool {
        match &self.selection {
            Selection::Labels(selector) => selects(selector, &listener.labels),
            Selection::Class(class) => listener.gateway_api.serves(&self.server.gateway, class),
        }
    }
}

/// One server host on a port.
#[derive(Clone, Debug)]
struct HostEntry {
    server: Arc<RoutedServer>,
    admits: Admits,
}

/// Values by host: exact names, `*.` wildcards by suffix, and `*`, each a
/// list in precedence order.
#[derive(Debug)]
struct HostTable<T> {
    exact: HashMap<String, Vec<T>>,
    wildcard: HashMap<String, Vec<T>>,
    any: Vec<T>,
}

impl<T> Default for HostTable<T> {
    fn default() -> Self {
        HostTable {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            any: Vec::new(),
        }
    }
}

impl<T> HostTable<T> {
    fn insert(&mut self, host: &str, value: T) {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if host == "*" {
            self.any.push(value);
        } else if let Some(suffix) = host.strip_prefix('*') {
            self.wildcard
                .entry(suffix.to_owned())
                .or_default()
                .push(value);
        } else {
            self.exact.entry(host).or_default().push(value);
        }
    }

    /// The lists covering `host` (lower-case, no port), most specific first.
    fn covering<'s, 'h>(&'s self, host: &'h str) -> impl Iterator<Item = &'s [T]> + use<'s, 'h, T> {
        let exact = self.exact.get(host).map(Vec::as_slice);
        let wild = host
            .match_indices('.')
            .filter_map(|(i, _)| self.wildcard.get(&host[i..]).map(Vec::as_slice));
        exact
            .into_iter()
            .chain(wild)
            .chain(std::iter::once(self.any.as_slice()))
            .filter(|list| !list.is_empty())
    }
}

/// How a TLS connection on a gateway port is served, by its SNI
/// ([`GatewayRoutes::decide_tls`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsRoute {
    /// Complete the handshake here: the SNI's most specific server on the
    /// port terminates TLS, or no PASSTHROUGH server covers the SNI (the
    /// handshake then fails unless a certificate covers the name).
    Terminate,
    /// Relay the connection untouched to this destination.
    Forward {
        /// The destination the `tls` rule drew.
        destination: DestinationKey,
        /// The rule.
        route: L4RouteId,
        /// The PASSTHROUGH server that took the connection.
        server: Arc<GatewayServer>,
    },
    /// A PASSTHROUGH server covers the SNI but no `tls` rule of a
    /// VirtualService bound to its Gateway matches: the connection is
    /// closed (the TCP form of 404 `NR`).
    NoRoute {
        /// The server.
        server: Arc<GatewayServer>,
    },
}

/// The gateway routes of one snapshot: every Gateway's servers by port and
/// host, and every gateway-bound VirtualService compiled (HTTPRoutes
/// attached to Gateway API listeners are compiled by [`XRouteTable`]).
#[derive(Debug)]
pub struct GatewayRoutes {
    ports: HashMap<u16, HostTable<HostEntry>>,
    /// The PASSTHROUGH servers of each port, to tell whether connections
    /// there must be sniffed for their SNI.
    passthrough: HashMap<u16, Vec<Arc<RoutedServer>>>,
    /// The route id of "no server for this Host".
    unknown_host: RouteId,
    /// Gateway-bound VirtualServices that did not compile (their hosts
    /// answer 404 NR at the gateway).
    pub errors: Vec<CompileError>,
}

impl Default for GatewayRoutes {
    fn default() -> Self {
        GatewayRoutes {
            ports: HashMap::new(),
            passthrough: HashMap::new(),
            unknown_host: RouteId {
                resource: Arc::from("Gateway"),
                rule_index: None,
                rule_name: None,
            },
            errors: Vec::new(),
        }
    }
}

fn precedence_key(r: &Resource) -> (bool, Option<&str>, usize) {
    let created = r.meta.creation_timestamp.as_deref();
    (created.is_none(), created, r.order)
}

/// Compiled VirtualServices, shared by every Gateway that binds them.
#[derive(Default)]
struct Compiled {
    http: HashMap<*const Resource, Option<Arc<CompiledVirtualService>>>,
    l4: HashMap<*const Resource, Option<Arc<L4VirtualService>>>,
}

impl GatewayRoutes {
    /// Compiles the Gateways (Istio and Gateway API) and gateway-bound
    /// VirtualServices of `snapshot`.
    pub fn compile(snapshot: &Snapshot) -> GatewayRoutes {
        let mut out = GatewayRoutes::default();
        let mut compiled = Compiled::default();
        let mut grants = None;
        for r in &snapshot.resources {
            match &r.spec {
                Spec::Gateway(gw) => out.add_istio(snapshot, r, gw, &mut compiled),
                Spec::K8sGateway(gw) => {
                    let grants =
                        grants.get_or_insert_with(|| SecretGrants::collect(&snapshot.resources));
                    out.add_gateway_api(r, gw, grants);
                }
                _ => {}
            }
        }
        out
    }

    /// Adds an Istio Gateway's servers and the VirtualServices bound to it.
    fn add_istio(
        &mut self,
        snapshot: &Snapshot,
        r: &Resource,
        gw: &mesh_core::schema::istio_networking::Gateway,
        compiled: &mut Compiled,
    ) {
        let ns = r.namespace();
        let key: Arc<str> = Arc::from(format!("{ns}/{}", r.name()));
        let servers: Vec<(&Server, GatewayServer)> = gw
            .servers
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((s, GatewayServer::from_spec(&key, i, s)?)))
            .collect();
        let wants_tls = servers.iter().any(|(_, s)| s.sni_passthrough());
        let mut http = HostTable::default();
        let mut tls = HostTable::default();
        if let Some(bound) = snapshot.index.gateway_routes.get(&*key) {
            let mut hosts: Vec<(&String, &Vec<Arc<Resource>>)> = bound.iter().collect();
            hosts.sort_by(|a, b| a.0.cmp(b.0));
            for (host, resources) in hosts {
                let mut ordered: Vec<&Arc<Resource>> = resources.iter().collect();
                ordered.sort_by(|a, b| precedence_key(a).cmp(&precedence_key(b)));
                ordered.dedup_by(|a, b| Arc::ptr_eq(a, b));
                for resource in ordered {
                    if let Some(vs) = self.compile_http(resource, compiled) {
                        http.insert(host, vs);
                    }
                    if wants_tls && let Some(vs) = compile_l4(resource, compiled) {
                        let namespace = resource.namespace().into();
                        tls.insert(host, TlsBinding { namespace, vs });
                    }
                }
            }
        }
        let (http, tls) = (Arc::new(http), Arc::new(tls));
        for (spec, s) in servers {
            let routed = Arc::new(RoutedServer {
                id: RouteId {
                    resource: Arc::from(format!("Gateway/{key}")),
                    rule_index: None,
                    rule_name: spec.name.as_deref().map(Arc::from),
                },
                server: Arc::new(s),
                selection: Selection::Labels(gw.selector.clone()),
                routes: ServerRoutes::Istio {
                    http: Arc::clone(&http),
                    tls: Arc::clone(&tls),
                },
            });
            if routed.server.sni_passthrough() {
                self.passthrough
                    .entry(routed.server.port)
                    .or_default()
                    .push(Arc::clone(&routed));
            }
            let table = self.ports.entry(routed.server.port).or_default();
            for host in &spec.hosts {
                let (admits, name) = match host.split_once('/') {
                    Some(("*", name)) => (Admits::Any, name),
                    Some((".", name)) => (Admits::Namespace(ns.into()), name),
                    Some((other, name)) => (Admits::Namespace(other.into()), name),
                    None => (Admits::Any, host.as_str()),
                };
                table.insert(
                    name,
                    HostEntry {
                        server: Arc::clone(&routed),
                        admits,
                    },
                );
            }
        }
    }

    fn compile_http(
        &mut self,
        resource: &Arc<Resource>,
        compiled: &mut Compiled,
    ) -> Option<Arc<CompiledVirtualService>> {
        compiled
            .http
            .entry(Arc::as_ptr(resource))
            .or_insert_with(|| match CompiledVirtualService::compile(resource) {
                Ok(vs) => Some(Arc::new(vs)),
                Err(e) => {
                    tracing::warn!("{e}");
                    self.errors.push(e);
                    None
                }
            })
            .clone()
    }

    /// Adds a Gateway API Gateway's listeners; its routes live in the
    /// [`XRouteTable`].
    fn add_gateway_api(
        &mut self,
        r: &Resource,
        gw: &mesh_core::schema::gateway_api::Gateway,
        grants: &SecretGrants,
    ) {
        let (ns, name) = (r.namespace(), r.name());
        let key: Arc<str> = Arc::from(format!("{ns}/{name}"));
        let class: Arc<str> = Arc::from(gw.gateway_class_name.as_str());
        for (i, l) in gw.listeners.iter().enumerate() {
            let Some(s) = GatewayServer::from_listener(&key, &class, i, l, grants) else {
                continue;
            };
            let routed = Arc::new(RoutedServer {
                id: RouteId {
                    resource: Arc::from(r.id().as_str()),
                    rule_index: None,
                    rule_name: Some(Arc::from(l.name.as_str())),
                },
                selection: Selection::Class(Arc::clone(&class)),
                routes: ServerRoutes::HttpRoutes {
                    namespace: ns.into(),
                    name: name.into(),
                    listener: l.name.as_str().into(),
                },
                server: Arc::new(s),
            });
            let table = self.ports.entry(routed.server.port).or_default();
            for host in &routed.server.hosts {
                table.insert(
                    host,
                    HostEntry {
                        server: Arc::clone(&routed),
                        admits: Admits::Any,
                    },
                );
            }
        }
    }

    /// Whether no Gateway server exists at all.
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// The decision for a request on `listener` (SPEC 1.1 steps 1 and 2 at
    /// an ingress gateway); see the module doc for the order of lookups and
    /// the local outcomes. `xroutes` holds the HTTPRoutes attached to
    /// Gateway API listeners (the same snapshot's).
    pub fn decide(
        &self,
        xroutes: &XRouteTable,
        listener: &GatewayListener,
        req: &RequestView<'_>,
        random: &dyn RandomSource,
    ) -> RouteDecision {
        let host = lower(strip_port(req.authority).trim_end_matches('.'));
        let Some(entry) = self.server_for(listener, &host) else {
            return no_route(self.unknown_host.clone());
        };
        let server = &entry.server;
        let view = RequestView {
            gateway: &server.server.gateway,
            port: Some(listener.port),
            scheme: if listener.tls { "https" } else { req.scheme },
            ..*req
        };
        let http = match &server.routes {
            ServerRoutes::HttpRoutes {
                namespace,
                name,
                listener: section,
            } => {
                return match xroutes.for_gateway_listener(namespace, name, section, &host) {
                    Some(routes) => routes.decide(&view, random),
                    None => no_route(server.id.clone()),
                };
            }
            ServerRoutes::Istio { http, .. } => http,
        };
        if server.server.https_redirect && !listener.tls && !forwarded_https(listener, req) {
            let path = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
            let location = format!("https://{host}{path}");
            if let Ok(location) = HeaderValue::from_str(&location) {
                return RouteDecision {
                    route: server.id.clone(),
                    action: RouteAction::Redirect {
                        status: http::StatusCode::MOVED_PERMANENTLY,
                        location,
                    },
                    policy: Arc::default(),
                };
            }
        }
        let mut first_miss = None;
        let bound = http
            .covering(&host)
            .find(|list| list.iter().any(|vs| entry.admits.admits(vs.namespace())));
        for vs in bound.into_iter().flatten() {
            if !entry.admits.admits(vs.namespace()) {
                continue;
            }
            let decision = vs.route(&view, random);
            if !matches!(decision.action, RouteAction::NoRoute) {
                return decision;
            }
            first_miss.get_or_insert(decision);
        }
        first_miss.unwrap_or_else(|| no_route(server.id.clone()))
    }

    fn server_for(&self, listener: &GatewayListener, host: &str) -> Option<&HostEntry> {
        let wanted = if listener.tls {
            ServerKind::TlsTerminate
        } else {
            ServerKind::PlainHttp
        };
        self.ports
            .get(&listener.port)?
            .covering(host)
            .flat_map(|list| list.iter())
            .find(|e| e.server.server.kind() == wanted && e.server.selected_by(listener))
    }

    /// Whether TLS connections on `listener`'s port must be read for their
    /// SNI before the handshake: a PASSTHROUGH server this gateway serves is
    /// on the port.
    pub fn wants_sni(&self, listener: &GatewayListener) -> bool {
        self.passthrough
            .get(&listener.port)
            .is_some_and(|servers| servers.iter().any(|s| s.selected_by(listener)))
    }

    /// How a TLS connection on `listener` with this ClientHello SNI is
    /// served (SPEC 6.1 PASSTHROUGH, 4.7): the most specific TLS server on
    /// the port whose hosts cover the SNI decides between terminating here
    /// and relaying; a relayed connection's destination is drawn by the
    /// first matching `tls` rule of the VirtualServices bound to that
    /// server's Gateway for the name (exact host, then the most specific
    /// wildcard; merged in resource order). `conn` carries the client's
    /// attributes; its `gateway`, `host`, `port` and `sni` are set here.
    pub fn decide_tls(
        &self,
        listener: &GatewayListener,
        sni: Option<&str>,
        conn: &ConnectionView<'_>,
        random: &dyn RandomSource,
    ) -> TlsRoute {
        let Some(sni) = sni else {
            return TlsRoute::Terminate;
        };
        let name = lower(sni.trim_end_matches('.'));
        let Some(entry) = self.ports.get(&listener.port).and_then(|t| {
            t.covering(&name).flat_map(|list| list.iter()).find(|e| {
                let kind = e.server.server.kind();
                (kind == ServerKind::TlsTerminate || e.server.server.sni_passthrough())
                    && e.server.selected_by(listener)
            })
        }) else {
            return TlsRoute::Terminate;
        };
        let server = &entry.server;
        let ServerRoutes::Istio { tls, .. } = &server.routes else {
            return TlsRoute::Terminate;
        };
        if !server.server.sni_passthrough() {
            return TlsRoute::Terminate;
        }
        let view = ConnectionView {
            host: &name,
            port: listener.port,
            sni: Some(&name),
            gateway: &server.server.gateway,
            ..*conn
        };
        let bound = tls
            .covering(&name)
            .find(|list| list.iter().any(|b| entry.admits.admits(&b.namespace)));
        for b in bound.into_iter().flatten() {
            if !entry.admits.admits(&b.namespace) {
                continue;
            }
            if let Some(L4Decision::Forward { destination, route }) = b.vs.decide_tls(&view, random)
            {
                return TlsRoute::Forward {
                    destination,
                    route,
                    server: Arc::clone(&server.server),
                };
            }
        }
        TlsRoute::NoRoute {
            server: Arc::clone(&server.server),
        }
    }
}

fn compile_l4(resource: &Arc<Resource>, compiled: &mut Compiled) -> Option<Arc<L4VirtualService>> {
    compiled
        .l4
        .entry(Arc::as_ptr(resource))
        .or_insert_with(|| match L4VirtualService::compile(resource) {
            Ok(vs) => vs.map(Arc::new),
            Err(e) => {
                tracing::warn!(
                    "{}: {e}; its tls rules are ignored at the gateway",
                    resource.id()
                );
                None
            }
        })
        .clone()
}

fn lower(host: &str) -> Cow<'_, str> {
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

fn forwarded_https(listener: &GatewayListener, req: &RequestView<'_>) -> bool {
    listener.trust_forwarded_proto
        && req
            .headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

fn no_route(route: RouteId) -> RouteDecision {
    RouteDecision {
        route,
        action: RouteAction::NoRoute,
        policy: Arc::default(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use mesh_core::load::{LoadOptions, load_str};

    use super::*;
    use crate::random::SplitMix;

    const SEED_GATEWAY: &str = include_str!("../../../fixtures/seed/04-gateway-ingress.yaml");

    fn snapshot(yaml: &str) -> Snapshot {
        let loaded = load_str("t.yaml", yaml, &LoadOptions::default());
        assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
        Snapshot::compile(1, loaded)
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn listener(port: u16, tls: bool) -> GatewayListener {
        GatewayListener {
            port,
            labels: labels(&[("istio", "ingressgateway")]),
            tls,
            ..GatewayListener::default()
        }
    }

    /// The gateway routes of a snapshot and the HTTPRoutes they consult.
    struct Compiled {
        routes: GatewayRoutes,
        xroutes: XRouteTable,
    }

    fn compile(s: &Snapshot) -> Compiled {
        Compiled {
            routes: GatewayRoutes::compile(s),
            xroutes: XRouteTable::compile(s),
        }
    }

    impl Compiled {
        fn decide(
            &self,
            l: &GatewayListener,
            req: &RequestView<'_>,
            random: &dyn RandomSource,
        ) -> RouteDecision {
            self.routes.decide(&self.xroutes, l, req, random)
        }
    }

    struct Req {
        method: http::Method,
        uri: http::Uri,
        headers: http::HeaderMap,
        authority: String,
        labels: BTreeMap<String, String>,
    }

    impl Req {
        fn new(authority: &str, path: &str) -> Req {
            Req {
                method: http::Method::GET,
                uri: path.parse().unwrap(),
                headers: http::HeaderMap::new(),
                authority: authority.to_owned(),
                labels: BTreeMap::new(),
            }
        }

        fn view(&self) -> RequestView<'_> {
            RequestView {
                method: &self.method,
                uri: &self.uri,
                headers: &self.headers,
                authority: &self.authority,
                scheme: "http",
                port: None,
                gateway: "mesh",
                source_namespace: "default",
                source_labels: &self.labels,
            }
        }
    }

    fn decide(routes: &Compiled, l: &GatewayListener, host: &str, path: &str) -> RouteDecision {
        routes.decide(l, &Req::new(host, path).view(), &SplitMix::seeded(1))
    }

    fn dest(d: &RouteDecision) -> String {
        match &d.action {
            RouteAction::Forward(f) => f.destination.host.to_string(),
            RouteAction::NoRoute => "NR".into(),
            RouteAction::Redirect { status, location } => {
                format!("{} {}", status.as_u16(), location.to_str().unwrap())
            }
            other => format!("{other:?}"),
        }
    }

    const API_VS: &str = "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\n\
        metadata: {name: api-vs}\nspec:\n  hosts: [api.example.com]\n  gateways: [api-gateway]\n  http:\n\
        \x20 - match: [{uri: {prefix: /v2/}}]\n    route: [{destination: {host: api-v2, port: {number: 8080}}}]\n\
        \x20 - route: [{destination: {host: api-v1, port: {number: 8080}}}]\n";

    #[test]
    fn seed_gateway_routes_https_and_redirects_http() {
        let s = snapshot(&format!("{SEED_GATEWAY}\n---\n{API_VS}"));
        let routes = compile(&s);
        let https = listener(443, true);
        assert_eq!(
            dest(&decide(&routes, &https, "api.example.com", "/v2/x")),
            "api-v2.default.svc.cluster.local"
        );
        assert_eq!(
            dest(&decide(&routes, &https, "API.example.com:443", "/v1/x")),
            "api-v1.default.svc.cluster.local"
        );
        assert_eq!(
            dest(&decide(&routes, &https, "other.example.com", "/")),
            "NR"
        );
        let http = listener(80, false);
        assert_eq!(
            dest(&decide(&routes, &http, "api.example.com:80", "/v1/a?b=c")),
            "301 https://api.example.com/v1/a?b=c"
        );
        assert_eq!(
            dest(&decide(&routes, &http, "other.example.com", "/")),
            "NR"
        );
        // The plain-HTTP server is not reachable on a TLS listener, nor the
        // HTTPS one on a plain listener.
        assert_eq!(
            dest(&decide(
                &routes,
                &listener(80, true),
                "api.example.com",
                "/"
            )),
            "NR"
        );
        assert_eq!(
            dest(&decide(
                &routes,
                &listener(443, false),
                "api.example.com",
                "/"
            )),
            "NR"
        );
    }

    #[test]
    fn forwarded_proto_is_believed_only_from_trusted_hops() {
        let s = snapshot(&format!("{SEED_GATEWAY}\n---\n{API_VS}"));
        let routes = compile(&s);
        let mut req = Req::new("api.example.com", "/v1/");
        req.headers
            .insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let mut l = listener(80, false);
        let d = routes.decide(&l, &req.view(), &SplitMix::seeded(1));
        assert!(matches!(d.action, RouteAction::Redirect { .. }));
        l.trust_forwarded_proto = true;
        let d = routes.decide(&l, &req.view(), &SplitMix::seeded(1));
        // Not redirected: api-vs binds the host on every server of the
        // Gateway, the plain one included.
        assert_eq!(dest(&d), "api-v1.default.svc.cluster.local");
    }

    #[test]
    fn gateways_are_selected_by_labels() {
        let s = snapshot(&format!("{SEED_GATEWAY}\n---\n{API_VS}"));
        let routes = compile(&s);
        let mut other = listener(443, true);
        other.labels = labels(&[("istio", "egressgateway")]);
        assert_eq!(dest(&decide(&routes, &other, "api.example.com", "/")), "NR");
        assert!(selected_servers(&s, &other.labels, &other.gateway_api).is_empty());
        let servers = selected_servers(
            &s,
            &listener(443, true).labels,
            &GatewayApiSelection::default(),
        );
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].kind(), ServerKind::TlsTerminate);
        assert_eq!(servers[0].credential.as_deref(), Some("api-cert"));
        assert_eq!(servers[1].kind(), ServerKind::PlainHttp);
        assert!(servers[1].https_redirect);
    }

    const MULTI: &str = "apiVersion: networking.istio.io/v1beta1\nkind: Gateway\n\
        metadata: {name: gw, namespace: edge}\nspec:\n  selector: {app: gw}\n  servers:\n\
        \x20 - port: {number: 8080, name: http, protocol: HTTP}\n    hosts: ['*.example.com', 'api.example.com', 'team/*.team.example.com', '*']\n\
        ---\napiVersion: networking.istio.io/v1beta1\nkind: VirtualService\n\
        metadata: {name: wide, namespace: edge}\nspec:\n  hosts: ['*.example.com']\n  gateways: [gw]\n  http:\n\
        \x20 - route: [{destination: {host: wide.svc}}]\n\
        ---\napiVersion: networking.istio.io/v1beta1\nkind: VirtualService\n\
        metadata: {name: api-a, namespace: edge, creationTimestamp: '2024-01-02T00:00:00Z'}\nspec:\n  hosts: [api.example.com]\n  gateways: [gw]\n  http:\n\
        \x20 - match: [{uri: {prefix: /a}}]\n    route: [{destination: {host: a.svc}}]\n\
        ---\napiVersion: networking.istio.io/v1beta1\nkind: VirtualService\n\
        metadata: {name: api-b, namespace: edge, creationTimestamp: '2024-01-01T00:00:00Z'}\nspec:\n  hosts: [api.example.com]\n  gateways: [edge/gw]\n  http:\n\
        \x20 - match: [{uri: {prefix: /b}}]\n    route: [{destination: {host: b.svc}}]\n\
        \x20 - match: [{uri: {prefix: /a}, gateways: [mesh]}]\n    route: [{destination: {host: never.svc}}]\n\
        ---\napiVersion: networking.istio.io/v1beta1\nkind: VirtualService\n\
        metadata: {name: team-wrong-ns, namespace: edge}\nspec:\n  hosts: [x.team.example.com]\n  gateways: [gw]\n  http:\n\
        \x20 - route: [{destination: {host: wrong.svc}}]\n\
        ---\napiVersion: networking.istio.io/v1beta1\nkind: VirtualService\n\
        metadata: {name: team, namespace: team}\nspec:\n  hosts: [x.team.example.com]\n  gateways: [edge/gw]\n  http:\n\
        \x20 - route: [{destination: {host: team.svc}}]\n";

    #[test]
    fn merged_virtual_services_most_specific_hosts_and_namespaces() {
        let s = snapshot(MULTI);
        let routes = compile(&s);
        let l = GatewayListener {
            port: 8080,
            labels: labels(&[("app", "gw"), ("extra", "1")]),
            tls: false,
            ..GatewayListener::default()
        };
        // api-b is older, so its rules come first; its `gateways: [mesh]`
        // rule does not apply at the gateway, so /a falls through to api-a.
        assert_eq!(dest(&decide(&routes, &l, "api.example.com", "/b")), "b.svc");
        assert_eq!(dest(&decide(&routes, &l, "api.example.com", "/a")), "a.svc");
        // Both merged VirtualServices miss: 404 NR, not the wildcard's route.
        assert_eq!(dest(&decide(&routes, &l, "api.example.com", "/c")), "NR");
        assert_eq!(
            dest(&decide(&routes, &l, "www.example.com", "/")),
            "wide.svc"
        );
        // `team/` admits only the team namespace's VirtualService.
        assert_eq!(
            dest(&decide(&routes, &l, "x.team.example.com", "/")),
            "team.svc"
        );
        // The `*` server matches, but no VirtualService binds the host.
        assert_eq!(dest(&decide(&routes, &l, "example.org", "/")), "NR");
        // A port with no server.
        let mut other = l.clone();
        other.port = 9090;
        assert_eq!(
            dest(&decide(&routes, &other, "api.example.com", "/b")),
            "NR"
        );
    }

    const API_GATEWAY: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: edge}
spec:
  gatewayClassName: mesh
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - name: https
    port: 443
    protocol: HTTPS
    hostname: "*.example.com"
    tls: {mode: Terminate, certificateRefs: [{name: web-cert}]}
  - name: elsewhere
    port: 8443
    protocol: HTTPS
    tls: {certificateRefs: [{name: far-cert, namespace: certs}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: other, namespace: edge}
spec:
  gatewayClassName: istio
  listeners:
  - {name: http, port: 80, protocol: HTTP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api, namespace: edge}
spec:
  parentRefs: [{name: web, sectionName: https}]
  hostnames: [api.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /v1}}]
    backendRefs: [{name: api-v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: plain, namespace: edge}
spec:
  parentRefs: [{name: web, sectionName: http}, {name: other}]
  rules:
  - backendRefs: [{name: plain, port: 8080}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backends, namespace: edge}
spec:
  hosts: [api-v1, plain]
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
"#;

    fn api_listener(port: u16, tls: bool) -> GatewayListener {
        GatewayListener {
            port,
            tls,
            ..GatewayListener::default()
        }
    }

    #[test]
    fn gateway_api_listeners_route_by_section_host_and_class() {
        let s = snapshot(API_GATEWAY);
        let c = compile(&s);
        let https = api_listener(443, true);
        assert_eq!(
            dest(&decide(&c, &https, "api.example.com", "/v1/x")),
            "api-v1.edge.svc.cluster.local"
        );
        assert_eq!(
            dest(&decide(&c, &https, "API.example.com:443", "/v1")),
            "api-v1.edge.svc.cluster.local"
        );
        // An attached route, but no rule matches: 404 NR.
        assert_eq!(dest(&decide(&c, &https, "api.example.com", "/v2")), "NR");
        // The listener covers the host, no attached route serves it.
        assert_eq!(dest(&decide(&c, &https, "www.example.com", "/v1")), "NR");
        // Outside the listener's hostname.
        assert_eq!(dest(&decide(&c, &https, "api.example.org", "/v1")), "NR");
        // `plain` is attached by sectionName to the HTTP listener only.
        let http = api_listener(80, false);
        assert_eq!(
            dest(&decide(&c, &http, "anything.org", "/")),
            "plain.edge.svc.cluster.local"
        );
        assert_eq!(
            dest(&decide(&c, &http, "api.example.com", "/v1")),
            "plain.edge.svc.cluster.local"
        );
        assert_eq!(
            dest(&decide(
                &c,
                &api_listener(443, false),
                "api.example.com",
                "/v1"
            )),
            "NR"
        );

        // Another class: `web` is not served, `other` (class istio) is.
        let mut istio = http.clone();
        istio.gateway_api.class = "istio".into();
        assert_eq!(
            dest(&decide(&c, &istio, "anything.org", "/")),
            "plain.edge.svc.cluster.local"
        );
        let mut istio_https = https.clone();
        istio_https.gateway_api.class = "istio".into();
        assert_eq!(
            dest(&decide(&c, &istio_https, "api.example.com", "/v1")),
            "NR"
        );
        // Named Gateways only.
        let mut named = https.clone();
        named.gateway_api =
            GatewayApiSelection::for_workload("mesh", ["edge/other"], "x", &BTreeMap::new());
        assert_eq!(dest(&decide(&c, &named, "api.example.com", "/v1")), "NR");
        named.gateway_api = GatewayApiSelection::for_workload(
            "mesh",
            [],
            "edge",
            &labels(&[(GATEWAY_NAME_LABEL, "web")]),
        );
        assert_eq!(
            named.gateway_api.gateways.iter().collect::<Vec<_>>(),
            ["edge/web"]
        );
        assert_eq!(
            dest(&decide(&c, &named, "api.example.com", "/v1")),
            "api-v1.edge.svc.cluster.local"
        );
    }

    #[test]
    fn gateway_api_servers_and_their_certificates() {
        let s = snapshot(API_GATEWAY);
        let servers = selected_servers(&s, &BTreeMap::new(), &GatewayApiSelection::default());
        let summary: Vec<(u16, ServerKind, Vec<String>, Option<String>)> = servers
            .iter()
            .map(|s| (s.port, s.kind(), s.hosts.clone(), s.credential.clone()))
            .collect();
        assert_eq!(
            summary,
            [
                (80, ServerKind::PlainHttp, vec!["*".to_owned()], None),
                (
                    443,
                    ServerKind::TlsTerminate,
                    vec!["*.example.com".to_owned()],
                    Some("web-cert".to_owned())
                ),
                // A Secret in another namespace without a ReferenceGrant.
                (8443, ServerKind::TlsTerminate, vec!["*".to_owned()], None),
            ]
        );
        assert_eq!(
            servers[1].describe(),
            "Gateway.gateway.networking.k8s.io/edge/web listeners[1] (https)"
        );
        let granted = snapshot(&format!(
            "{API_GATEWAY}---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\n\
             metadata: {{name: g, namespace: certs}}\nspec:\n  from: [{{group: gateway.networking.k8s.io, kind: Gateway, namespace: edge}}]\n\
             \x20 to: [{{group: '', kind: Secret}}]\n"
        ));
        let servers = selected_servers(&granted, &BTreeMap::new(), &GatewayApiSelection::default());
        assert_eq!(servers[2].credential.as_deref(), Some("far-cert"));

        let wanted = GatewayApiSelection::for_workload(
            "mesh",
            ["edge/other", "gone"],
            "edge",
            &BTreeMap::new(),
        );
        let problems = unserved_gateway_api(&s, &wanted);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].contains("edge/gone is not in the configuration"),
            "{problems:?}"
        );
        assert!(
            problems[1].contains("gatewayClassName \"istio\""),
            "{problems:?}"
        );
    }

    const PASSTHROUGH: &str = "apiVersion: networking.istio.io/v1beta1\nkind: Gateway\n\
        metadata: {name: edge-gw, namespace: edge}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n\
        \x20 - port: {number: 443, name: tls, protocol: TLS}\n    tls: {mode: PASSTHROUGH}\n    hosts: ['*.pass.example.com']\n\
        \x20 - port: {number: 443, name: https, protocol: HTTPS}\n    tls: {mode: SIMPLE, credentialName: web-cert}\n    hosts: [web.example.com, x.pass.example.com]\n\
        \x20 - port: {number: 443, name: auto, protocol: TLS}\n    tls: {mode: AUTO_PASSTHROUGH}\n    hosts: ['*.auto.example.com']\n\
        ---\napiVersion: networking.istio.io/v1beta1\nkind: VirtualService\n\
        metadata: {name: pass, namespace: edge}\nspec:\n  hosts: ['*.pass.example.com']\n  gateways: [edge-gw]\n  tls:\n\
        \x20 - match: [{sniHosts: [a.pass.example.com], port: 443}]\n    route: [{destination: {host: a-svc, port: {number: 8443}}}]\n\
        \x20 - match: [{sniHosts: ['b.pass.example.com'], gateways: [mesh]}]\n    route: [{destination: {host: never}}]\n\
        \x20 - match: [{sniHosts: ['b.pass.example.com']}]\n    route: [{destination: {host: b-svc}}]\n";

    fn tls_route(c: &Compiled, l: &GatewayListener, sni: Option<&str>) -> String {
        let labels = BTreeMap::new();
        let conn = ConnectionView {
            host: "",
            port: 0,
            sni: None,
            destination_ip: None,
            source_ip: None,
            gateway: "mesh",
            source_namespace: "istio-system",
            source_labels: &labels,
        };
        match c.routes.decide_tls(l, sni, &conn, &SplitMix::seeded(1)) {
            TlsRoute::Terminate => "terminate".into(),
            TlsRoute::Forward {
                destination,
                route,
                server,
            } => {
                format!("{} by {route} via {}", destination.host, server.describe())
            }
            TlsRoute::NoRoute { server } => format!("NR via {}", server.describe()),
        }
    }

    #[test]
    fn passthrough_servers_route_by_sni_and_share_a_port_with_simple_ones() {
        let s = snapshot(PASSTHROUGH);
        let c = compile(&s);
        let l = listener(443, true);
        assert!(c.routes.wants_sni(&l));
        assert_eq!(
            tls_route(&c, &l, Some("a.pass.example.com")),
            "a-svc.edge.svc.cluster.local by VirtualService/edge/pass tls[0] via Gateway/edge/edge-gw servers[0]"
        );
        assert_eq!(
            tls_route(&c, &l, Some("B.pass.example.com.")),
            "b-svc.edge.svc.cluster.local by VirtualService/edge/pass tls[2] via Gateway/edge/edge-gw servers[0]"
        );
        assert_eq!(
            tls_route(&c, &l, Some("c.pass.example.com")),
            "NR via Gateway/edge/edge-gw servers[0]"
        );
        // The SIMPLE server's exact host is more specific than the wildcard.
        assert_eq!(tls_route(&c, &l, Some("x.pass.example.com")), "terminate");
        assert_eq!(tls_route(&c, &l, Some("web.example.com")), "terminate");
        assert_eq!(tls_route(&c, &l, Some("unknown.org")), "terminate");
        assert_eq!(tls_route(&c, &l, None), "terminate");
        // AUTO_PASSTHROUGH is not served by SNI routes.
        assert_eq!(tls_route(&c, &l, Some("q.auto.example.com")), "terminate");
        // Another gateway workload does not serve these servers.
        let mut other = l.clone();
        other.labels = labels(&[("istio", "egressgateway")]);
        assert!(!c.routes.wants_sni(&other));
        assert_eq!(
            tls_route(&c, &other, Some("a.pass.example.com")),
            "terminate"
        );
        assert!(!c.routes.wants_sni(&listener(80, true)));
    }
}
