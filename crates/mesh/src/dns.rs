//! DNS for ServiceEntry endpoints: the resolver cache and the [`DnsLayer`],
//! the stage right above the connector.
//!
//! The balance stage picks an endpoint by name: a ServiceEntry with
//! `resolution: DNS` and no endpoints stands for its own host name, and
//! endpoints may carry names as addresses (SPEC 6.2). [`DnsLayer`] turns the
//! chosen [`Target`]'s `name:port` into `ip:port` just before the
//! connector dials, so everything above it (routing, subsets, balancing,
//! the caller's `Host` header) keeps seeing the name. With `resolution:
//! NONE` (and `DYNAMIC_DNS`) the connector dials the request's own
//! destination, the host and port the caller named, which is what "forward
//! to the original destination" means for a proxy the application talks to
//! directly.
//!
//! # Why the system resolver, refreshed every 5 s
//!
//! Names are resolved with `getaddrinfo` (tokio's `lookup_host`), so
//! `/etc/hosts`, `nsswitch.conf` and the search domains behave exactly as
//! for every other program on the machine, and no resolver crate (with its
//! own DNS client, compile time and configuration quirks) comes in.
//! `getaddrinfo` reports no TTL, so answers are kept for a fixed refresh
//! interval, [`DnsSettings::refresh`], 5 s by default: Envoy's
//! `dns_refresh_rate` default, which Istio leaves in place (Envoy also
//! ignores record TTLs unless `respect_dns_ttl` is set).
//!
//! # Behaviour
//!
//! - A fresh answer is served from the cache: one atomic load and a hash
//!   lookup, no lock.
//! - An expired answer that had addresses is still served while one
//!   background lookup refreshes it (stale-while-revalidate), so a request
//!   never waits for a refresh. If the refresh fails, the last addresses are
//!   kept, as Envoy keeps a cluster's hosts when DNS fails, and retried
//!   after the refresh interval.
//! - A name with no usable answer is resolved on the spot. Concurrent
//!   requests for the same name share one lookup. The wait is bounded by
//!   [`DnsSettings::timeout`] (the lookup itself goes on in the background
//!   and fills the cache when it ends); a failed or timed-out lookup answers
//!   503 `UH` at once, and later requests get the cached failure for
//!   [`DnsSettings::failure_refresh`] without asking DNS again.
//! - IPv4 is preferred: when a name has IPv4 addresses only those are used,
//!   else its IPv6 ones (Envoy's `V4_PREFERRED`; `localhost` is 127.0.0.1,
//!   not `::1`).
//! - `resolution: DNS` spreads connections over every address (round
//!   robin); `DNS_ROUND_ROBIN` uses the first address of the answer (SPEC
//!   6.2). Balancing, outlier detection and pool limits work per name, not
//!   per address.
//! - The cache holds at most [`DnsSettings::max_names`] names: beyond that,
//!   expired names are dropped first (NONE destinations are named by
//!   callers, so the set is not bounded by the config).
//!
//! ```
//! # async fn run() {
//! use std::sync::Arc;
//! use mesh::dns::{DnsCache, DnsSettings, Spread};
//!
//! let cache = Arc::new(DnsCache::new(DnsSettings::default()));
//! let ip = cache.pick("localhost", Spread::RoundRobin).await;
//! # let _ = ip;
//! # }
//! ```

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use http::{Request, Response};
use mesh_core::http::{Body, MeshError};
use mesh_core::schema::istio_networking::ServiceEntryResolution;
use mesh_core::snapshot::HashMap;
use mesh_route::layer::{BoxFuture, Target, request_authority, routed};
use tokio::sync::Notify;
use tokio::time::Instant;

/// How names are resolved and cached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsSettings {
    /// How long an answer is used before it is refreshed (default 5 s,
    /// Envoy's `dns_refresh_rate`).
    pub refresh: Duration,
    /// How long a failed lookup is remembered before DNS is asked again
    /// (default 5 s, as Envoy's `dns_failure_refresh_rate` falls back to the
    /// refresh rate).
    pub failure_refresh: Duration,
    /// How long a request waits for a name that has no answer yet (default
    /// 5 s, Envoy's `dns_query_timeout`); it then gets 503 `UH`.
    pub timeout: Duration,
    /// The most names cached at once.
    pub max_names: usize,
}

impl Default for DnsSettings {
    fn default() -> Self {
        DnsSettings {
            refresh: Duration::from_secs(5),
            failure_refresh: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
            max_names: 4096,
        }
    }
}

/// A boxed lookup.
pub type LookupFuture = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + 'static>>;

/// Something that turns a name into addresses: the system resolver in
/// production, a scripted one in tests.
pub trait Resolve: Send + Sync + 'static {
    /// Every address of `name`.
    fn resolve(&self, name: &str) -> LookupFuture;
}

/// The system resolver (`getaddrinfo` on tokio's blocking pool).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, name: &str) -> LookupFuture {
        let name = name.to_owned();
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((name.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// Why a name gave no address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The lookup failed (NXDOMAIN, no addresses, resolver error).
    #[error("cannot resolve {name}: {reason}")]
    Failed {
        /// The name.
        name: Arc<str>,
        /// What the resolver said.
        reason: Arc<str>,
    },
    /// No answer within [`DnsSettings::timeout`].
    #[error("cannot resolve {name}: no answer within {after:?}")]
    Timeout {
        /// The name.
        name: Arc<str>,
        /// The wait.
        after: Duration,
    },
}

/// How a name's addresses are spread over connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spread {
    /// Every address in turn (`resolution: DNS`).
    RoundRobin,
    /// The first address of the answer (`DNS_ROUND_ROBIN`, Envoy's
    /// LOGICAL_DNS).
    First,
}

impl Spread {
    /// The spread of a ServiceEntry resolution.
    pub fn of(resolution: Option<ServiceEntryResolution>) -> Spread {
        match resolution {
            Some(ServiceEntryResolution::DnsRoundRobin) => Spread::First,
            _ => Spread::RoundRobin,
        }
    }
}

struct Answer {
    result: Result<Arc<[IpAddr]>, Arc<str>>,
    expires: Instant,
}

struct Entry {
    name: Arc<str>,
    answer: ArcSwapOption<Answer>,
    resolving: AtomicBool,
    done: Notify,
    cursor: AtomicUsize,
}

/// The resolver cache: answers by name, refreshed on expiry, one lookup in
/// flight per name.
pub struct DnsCache {
    resolver: Arc<dyn Resolve>,
    settings: DnsSettings,
    /// foldhash, not SipHash: a named endpoint is looked up per request.
    entries: ArcSwap<HashMap<Arc<str>, Arc<Entry>>>,
}

impl std::fmt::Debug for DnsCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsCache")
            .field("settings", &self.settings)
            .field("names", &self.entries.load().len())
            .finish()
    }
}

impl DnsCache {
    /// A cache over the system resolver.
    pub fn new(settings: DnsSettings) -> Self {
        DnsCache::with_resolver(settings, Arc::new(SystemResolver))
    }

    /// A cache over `resolver`.
    pub fn with_resolver(settings: DnsSettings, resolver: Arc<dyn Resolve>) -> Self {
        DnsCache {
            resolver,
            settings,
            entries: ArcSwap::from_pointee(HashMap::default()),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &DnsSettings {
        &self.settings
    }

    /// Every usable address of `name` (IPv4 preferred), from the cache when
    /// it can.
    pub async fn lookup(&self, name: &str) -> Result<Arc<[IpAddr]>, DnsError> {
        self.lookup_entry(name).await.map(|(_, addrs)| addrs)
    }

    /// One address of `name`, spread over connections as `spread` says.
    pub async fn pick(&self, name: &str, spread: Spread) -> Result<IpAddr, DnsError> {
        let (entry, addrs) = self.lookup_entry(name).await?;
        let index = match spread {
            Spread::First => 0,
            Spread::RoundRobin => entry.cursor.fetch_add(1, Ordering::Relaxed) % addrs.len(),
        };
        addrs.get(index).copied().ok_or_else(|| DnsError::Failed {
            name: Arc::clone(&entry.name),
            reason: "no addresses".into(),
        })
    }

    /// `host:port` as a socket address: IP literals as they are, names
    /// through the cache.
    pub async fn socket_addr(
        &self,
        host: &str,
        port: u16,
        spread: Spread,
    ) -> Result<SocketAddr, DnsError> {
        if let Some(ip) = parse_ip(host) {
            return Ok(SocketAddr::new(ip, port));
        }
        self.pick(host, spread)
            .await
            .map(|ip| SocketAddr::new(ip, port))
    }

    async fn lookup_entry(&self, name: &str) -> Result<(Arc<Entry>, Arc<[IpAddr]>), DnsError> {
        let entry = self.entry(name);
        let now = Instant::now();
        if let Some(answer) = entry.answer.load().as_ref() {
            match &answer.result {
                Ok(addrs) => {
                    if answer.expires <= now {
                        // Stale but usable: serve it, refresh behind.
                        self.refresh(&entry);
                    }
                    return Ok((Arc::clone(&entry), Arc::clone(addrs)));
                }
                Err(reason) if answer.expires > now => {
                    return Err(DnsError::Failed {
                        name: Arc::clone(&entry.name),
                        reason: Arc::clone(reason),
                    });
                }
                Err(_) => {}
            }
        }
        // No usable answer: wait for one lookup (ours or one in flight).
        let wait = async {
            loop {
                let mut done = pin!(entry.done.notified());
                done.as_mut().enable();
                if let Some(answer) = entry.answer.load_full()
                    && (answer.expires > Instant::now() || answer.result.is_ok())
                {
                    return answer;
                }
                self.refresh(&entry);
                done.await;
            }
        };
        match tokio::time::timeout(self.settings.timeout, wait).await {
            Ok(answer) => match &answer.result {
                Ok(addrs) => Ok((Arc::clone(&entry), Arc::clone(addrs))),
                Err(reason) => Err(DnsError::Failed {
                    name: Arc::clone(&entry.name),
                    reason: Arc::clone(reason),
                }),
            },
            Err(_) => Err(DnsError::Timeout {
                name: Arc::clone(&entry.name),
                after: self.settings.timeout,
            }),
        }
    }

    /// The entry of `name`, created on first use.
    fn entry(&self, name: &str) -> Arc<Entry> {
        let lower;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = name.to_ascii_lowercase();
            lower.as_str()
        } else {
            name
        };
        if let Some(e) = self.entries.load().get(name) {
            return Arc::clone(e);
        }
        let key: Arc<str> = Arc::from(name);
        let fresh = Arc::new(Entry {
            name: Arc::clone(&key),
            answer: ArcSwapOption::empty(),
            resolving: AtomicBool::new(false),
            done: Notify::new(),
            cursor: AtomicUsize::new(0),
        });
        let max = self.settings.max_names.max(1);
        let mut chosen = Arc::clone(&fresh);
        self.entries.rcu(|current| {
            if let Some(e) = current.get(&key) {
                chosen = Arc::clone(e);
                return Arc::clone(current);
            }
            let mut next = HashMap::clone(current);
            if next.len() >= max {
                let now = Instant::now();
                next.retain(|_, e| {
                    e.resolving.load(Ordering::Relaxed)
                        || e.answer.load().as_ref().is_some_and(|a| a.expires > now)
                });
                if next.len() >= max {
                    next.clear();
                }
            }
            next.insert(Arc::clone(&key), Arc::clone(&fresh));
            chosen = Arc::clone(&fresh);
            Arc::new(next)
        });
        chosen
    }

    /// Starts one background lookup of `entry` unless one is in flight.
    fn refresh(&self, entry: &Arc<Entry>) {
        if entry
            .resolving
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let lookup = self.resolver.resolve(&entry.name);
        let entry = Arc::clone(entry);
        let settings = self.settings.clone();
        tokio::spawn(async move {
            // A resolver that never answers must not pin the name forever.
            let limit = settings.timeout.saturating_mul(4);
            let result = match tokio::time::timeout(limit, lookup).await {
                Ok(Ok(addrs)) => preferred(addrs).ok_or_else(|| Arc::from("no addresses")),
                Ok(Err(e)) => Err(Arc::from(e.to_string())),
                Err(_) => Err(Arc::from(format!("no answer within {limit:?}"))),
            };
            let now = Instant::now();
            let answer = match result {
                Ok(addrs) => Answer {
                    result: Ok(addrs),
                    expires: now + settings.refresh,
                },
                Err(reason) => {
                    let previous = entry.answer.load_full();
                    match previous.as_ref().map(|a| &a.result) {
                        // Keep the last good addresses; try again later.
                        Some(Ok(addrs)) => {
                            tracing::warn!(
                                name = %entry.name,
                                "DNS refresh failed ({reason}); keeping the last addresses"
                            );
                            Answer {
                                result: Ok(Arc::clone(addrs)),
                                expires: now + settings.refresh,
                            }
                        }
                        _ => {
                            tracing::debug!(name = %entry.name, "DNS lookup failed: {reason}");
                            Answer {
                                result: Err(reason),
                                expires: now + settings.failure_refresh,
                            }
                        }
                    }
                }
            };
            entry.answer.store(Some(Arc::new(answer)));
            entry.resolving.store(false, Ordering::Release);
            entry.done.notify_waiters();
        });
    }
}

/// IPv4 addresses when there are any, else IPv6 (Envoy's V4_PREFERRED);
/// duplicates removed, order kept. `None` when empty.
fn preferred(addrs: Vec<IpAddr>) -> Option<Arc<[IpAddr]>> {
    let v4 = addrs.iter().any(IpAddr::is_ipv4);
    let mut out: Vec<IpAddr> = Vec::with_capacity(addrs.len());
    for a in addrs {
        if a.is_ipv4() == v4 && !out.contains(&a) {
            out.push(a);
        }
    }
    (!out.is_empty()).then(|| out.into())
}

/// An IP literal, with or without IPv6 brackets.
pub fn parse_ip(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// Splits `host:port` (`[v6]:port` too); the port is `None` when absent or
/// not a number.
pub fn split_authority(authority: &str) -> (&str, Option<u16>) {
    if let Some(rest) = authority.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((host, tail)) => (host, tail.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (authority, None),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, port.parse().ok()),
        _ => (authority, None),
    }
}

/// Whether `authority` is `a.b.c.d:port`, an IPv4 literal and a port:
/// what STATIC endpoints and resolved names are dialled as, so the DNS
/// stage asks it of every request. Checked byte by byte: splitting the
/// authority and parsing the host with std's address parser cost ~450
/// instructions per request. Stricter than std (no leading zeros), so
/// `true` is always right; anything else is decided the long way.
fn is_ipv4_authority(authority: &str) -> bool {
    let bytes = authority.as_bytes();
    let Some(colon) = bytes.iter().rposition(|&b| b == b':') else {
        return false;
    };
    // One pass over the host: four dot-separated octets of 1 to 3 digits,
    // at most 255, no leading zero.
    let (mut dots, mut digits, mut value, mut zero_first) = (0, 0, 0u16, false);
    for &b in &bytes[..colon] {
        match b {
            b'0'..=b'9' => {
                if digits == 0 {
                    zero_first = b == b'0';
                } else if zero_first {
                    return false;
                }
                digits += 1;
                value = value * 10 + u16::from(b - b'0');
                if value > 255 {
                    return false;
                }
            }
            b'.' if digits > 0 && dots < 3 => {
                dots += 1;
                digits = 0;
                value = 0;
            }
            _ => return false,
        }
    }
    dots == 3 && digits > 0
}

/// `ip:port` as an authority (brackets for IPv6).
fn authority_of(addr: SocketAddr) -> Arc<str> {
    Arc::from(addr.to_string())
}

/// Layer of the DNS stage: resolves the [`Target`] the balance stage chose.
#[derive(Clone, Debug)]
pub struct DnsLayer {
    cache: Arc<DnsCache>,
}

impl DnsLayer {
    /// Resolves through `cache`.
    pub fn new(cache: Arc<DnsCache>) -> Self {
        DnsLayer { cache }
    }
}

impl<S> tower::Layer<S> for DnsLayer {
    type Service = Dns<S>;

    fn layer(&self, inner: S) -> Dns<S> {
        Dns {
            inner,
            cache: Arc::clone(&self.cache),
        }
    }
}

/// The DNS stage.
#[derive(Clone, Debug)]
pub struct Dns<S> {
    inner: S,
    cache: Arc<DnsCache>,
}

/// The resolution of the service a request was routed to, if the registry
/// knows it.
fn resolution_of<B>(req: &Request<B>) -> Option<ServiceEntryResolution> {
    let (decision, table) = routed(req.extensions())?;
    let host = &decision.forward()?.destination.host;
    table
        .snapshot
        .index
        .services
        .get(&**host)
        .map(|s| s.resolution)
}

/// What the DNS stage must do for one request.
enum Plan {
    /// The target is an address already.
    AsIs,
    /// Resolve `host` and dial it on `port`.
    Resolve {
        host: String,
        port: u16,
        spread: Spread,
    },
}

fn plan<B>(req: &Request<B>, target: &Target) -> Plan {
    if is_ipv4_authority(&target.authority) {
        return Plan::AsIs;
    }
    let (host, port) = split_authority(&target.authority);
    if parse_ip(host).is_some() || host.starts_with("unix:") {
        return Plan::AsIs;
    }
    let resolution = resolution_of(req);
    let port = port.unwrap_or(80);
    match resolution {
        Some(ServiceEntryResolution::None | ServiceEntryResolution::DynamicDns) => {
            // The original destination: what the caller named.
            let named = request_authority(req).unwrap_or(host);
            let (named_host, named_port) = split_authority(named);
            Plan::Resolve {
                host: named_host.to_owned(),
                port: named_port.unwrap_or(port),
                spread: Spread::RoundRobin,
            }
        }
        other => Plan::Resolve {
            host: host.to_owned(),
            port,
            spread: Spread::of(other),
        },
    }
}

impl<S> tower::Service<Request<Body>> for Dns<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = DnsFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let plan = match req.extensions().get::<Target>() {
            Some(target) => plan(&req, target),
            None => Plan::AsIs,
        };
        let (host, port, spread) = match plan {
            // An address: called in place, nothing cloned.
            Plan::AsIs => {
                return DnsFuture {
                    state: DnsState::AsIs {
                        call: self.inner.call(req),
                    },
                };
            }
            Plan::Resolve { host, port, spread } => (host, port, spread),
        };
        // A name: the lookup comes first, so the ready service goes with
        // the future and a clone stays behind.
        let mut inner = self.inner.clone();
        std::mem::swap(&mut inner, &mut self.inner);
        let cache = Arc::clone(&self.cache);
        let resolving: BoxFuture<Result<Response<Body>, S::Error>> = Box::pin(async move {
            match cache.socket_addr(&host, port, spread).await {
                Ok(addr) => {
                    if let Some(target) = req.extensions_mut().get_mut::<Target>() {
                        target.authority = authority_of(addr);
                    }
                    // Boxed before awaiting: holding `S::Future` itself in
                    // this block trips the compiler's `Send` inference with
                    // the boxed-error body type (see `mesh_route::layer`).
                    let call: BoxFuture<Result<Response<Body>, S::Error>> =
                        Box::pin(inner.call(req));
                    call.await
                }
                Err(e) => {
                    tracing::debug!("{e}");
                    Ok(MeshError::NoHealthyUpstream(e.to_string()).reply_to(req.headers()))
                }
            }
        });
        DnsFuture {
            state: DnsState::Resolving { fut: resolving },
        }
    }
}

pin_project_lite::pin_project! {
    /// The DNS stage's future: the inner call itself for an endpoint that
    /// is an address already (no allocation), or the boxed lookup and call.
    pub struct DnsFuture<F, E> {
        #[pin]
        state: DnsState<F, E>,
    }
}

pin_project_lite::pin_project! {
    #[project = DnsProj]
    enum DnsState<F, E> {
        AsIs {
            #[pin]
            call: F,
        },
        Resolving {
            fut: BoxFuture<Result<Response<Body>, E>>,
        },
    }
}

impl<F, E> Future for DnsFuture<F, E>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            DnsProj::AsIs { call } => call.poll(cx),
            DnsProj::Resolving { fut } => fut.as_mut().poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    /// A resolver whose answer the test sets, counting lookups; optionally
    /// held until released.
    struct Scripted {
        answer: ArcSwap<Result<Vec<IpAddr>, String>>,
        calls: AtomicU64,
        gate: tokio::sync::watch::Sender<bool>,
    }

    impl Scripted {
        fn new(answer: Result<Vec<IpAddr>, String>, open: bool) -> Arc<Scripted> {
            Arc::new(Scripted {
                answer: ArcSwap::from_pointee(answer),
                calls: AtomicU64::new(0),
                gate: tokio::sync::watch::channel(open).0,
            })
        }

        fn calls(&self) -> u64 {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl Resolve for Arc<Scripted> {
        fn resolve(&self, _name: &str) -> LookupFuture {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let this = Arc::clone(self);
            Box::pin(async move {
                let mut gate = this.gate.subscribe();
                let _ = gate.wait_for(|open| *open).await;
                match &**this.answer.load() {
                    Ok(a) => Ok(a.clone()),
                    Err(e) => Err(io::Error::other(e.clone())),
                }
            })
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cache(resolver: &Arc<Scripted>) -> DnsCache {
        DnsCache::with_resolver(DnsSettings::default(), Arc::new(Arc::clone(resolver)))
    }

    async fn settle(until: impl Fn() -> bool) {
        for _ in 0..1000 {
            if until() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("condition never held");
    }

    #[tokio::test(start_paused = true)]
    async fn answers_are_cached_and_refreshed_after_the_interval() {
        let r = Scripted::new(Ok(vec![ip("10.0.0.1")]), true);
        let cache = cache(&r);
        assert_eq!(
            &*cache.lookup("db.example.com").await.unwrap(),
            [ip("10.0.0.1")]
        );
        assert_eq!(r.calls(), 1);
        r.answer.store(Arc::new(Ok(vec![ip("10.0.0.2")])));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(
            &*cache.lookup("DB.example.com").await.unwrap(),
            [ip("10.0.0.1")]
        );
        assert_eq!(r.calls(), 1, "fresh answers come from the cache");
        tokio::time::advance(Duration::from_secs(2)).await;
        // Expired: the old answer is served while one refresh runs.
        assert_eq!(
            &*cache.lookup("db.example.com").await.unwrap(),
            [ip("10.0.0.1")]
        );
        settle(|| r.calls() == 2).await;
        let entry = cache.entry("db.example.com");
        settle(|| !entry.resolving.load(Ordering::SeqCst)).await;
        assert_eq!(
            &*cache.lookup("db.example.com").await.unwrap(),
            [ip("10.0.0.2")]
        );
        assert_eq!(r.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_lookups_of_one_name_share_one_query() {
        let r = Scripted::new(Ok(vec![ip("10.0.0.1"), ip("10.0.0.2")]), false);
        let cache = Arc::new(cache(&r));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..10 {
            let cache = Arc::clone(&cache);
            tasks.spawn(async move { cache.pick("db", Spread::RoundRobin).await });
        }
        settle(|| r.calls() == 1).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(r.calls(), 1);
        r.gate.send_replace(true);
        let mut seen = Vec::new();
        while let Some(res) = tasks.join_next().await {
            seen.push(res.unwrap().unwrap());
        }
        assert_eq!(r.calls(), 1);
        // Round robin over both addresses.
        assert_eq!(seen.iter().filter(|a| **a == ip("10.0.0.1")).count(), 5);
        let first = cache.pick("db", Spread::First).await.unwrap();
        assert_eq!(first, ip("10.0.0.1"));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_answer_at_once_and_are_remembered() {
        let r = Scripted::new(Err("NXDOMAIN".into()), true);
        let cache = cache(&r);
        let e = cache.lookup("nonexistent.invalid").await.unwrap_err();
        assert!(matches!(e, DnsError::Failed { .. }), "{e}");
        assert_eq!(cache.lookup("nonexistent.invalid").await.unwrap_err(), e);
        assert_eq!(r.calls(), 1);
        // After the failure interval DNS is asked again.
        r.answer.store(Arc::new(Ok(vec![ip("10.0.0.9")])));
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(
            &*cache.lookup("nonexistent.invalid").await.unwrap(),
            [ip("10.0.0.9")]
        );
        assert_eq!(r.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lookup_that_hangs_times_out() {
        let r = Scripted::new(Ok(vec![ip("10.0.0.1")]), false);
        let cache = cache(&r);
        let started = Instant::now();
        let e = cache.lookup("slow.example.com").await.unwrap_err();
        assert!(matches!(e, DnsError::Timeout { .. }), "{e}");
        assert_eq!(started.elapsed(), DnsSettings::default().timeout);
        // The lookup finishing later fills the cache.
        r.gate.send_replace(true);
        let entry = cache.entry("slow.example.com");
        settle(|| entry.answer.load().is_some()).await;
        assert_eq!(
            &*cache.lookup("slow.example.com").await.unwrap(),
            [ip("10.0.0.1")]
        );
        assert_eq!(r.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_refresh_keeps_the_last_addresses() {
        let r = Scripted::new(Ok(vec![ip("10.0.0.1")]), true);
        let cache = cache(&r);
        cache.lookup("db").await.unwrap();
        r.answer.store(Arc::new(Err("SERVFAIL".into())));
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(&*cache.lookup("db").await.unwrap(), [ip("10.0.0.1")]);
        let entry = cache.entry("db");
        settle(|| r.calls() == 2 && !entry.resolving.load(Ordering::SeqCst)).await;
        assert_eq!(&*cache.lookup("db").await.unwrap(), [ip("10.0.0.1")]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_cache_stays_bounded() {
        let r = Scripted::new(Ok(vec![ip("10.0.0.1")]), true);
        let settings = DnsSettings {
            max_names: 3,
            ..DnsSettings::default()
        };
        let cache = DnsCache::with_resolver(settings, Arc::new(Arc::clone(&r)));
        for i in 0..21 {
            cache.lookup(&format!("n{i}.example.com")).await.unwrap();
            assert!(cache.entries.load().len() <= 3);
        }
        assert_eq!(cache.entries.load().len(), 3);
        // Full again: expired names go first.
        tokio::time::advance(Duration::from_secs(6)).await;
        cache.lookup("fresh.example.com").await.unwrap();
        assert_eq!(cache.entries.load().len(), 1);
    }

    #[test]
    fn ipv4_authorities_are_recognised_without_std_parsing() {
        for yes in ["127.0.0.1:80", "10.0.0.255:1", "0.0.0.0:65535", "1.2.3.4:x"] {
            assert!(is_ipv4_authority(yes), "{yes}");
            let (host, _) = split_authority(yes);
            assert!(parse_ip(host).is_some(), "{yes} agrees with the long way");
        }
        for no in [
            "127.0.0.1",
            "256.0.0.1:80",
            "01.2.3.4:80",
            "1.2.3:80",
            "1.2.3.4.5:80",
            "1..3.4:80",
            "db.example.com:5432",
            "[::1]:80",
            "unix:/run/app.sock",
        ] {
            assert!(!is_ipv4_authority(no), "{no}");
        }
    }

    #[test]
    fn ipv4_is_preferred_and_authorities_split() {
        let got = preferred(vec![ip("::1"), ip("127.0.0.1"), ip("127.0.0.1")]).unwrap();
        assert_eq!(&*got, [ip("127.0.0.1")]);
        assert_eq!(&*preferred(vec![ip("::1")]).unwrap(), [ip("::1")]);
        assert!(preferred(vec![]).is_none());
        assert_eq!(split_authority("a.b:80"), ("a.b", Some(80)));
        assert_eq!(split_authority("[::1]:443"), ("::1", Some(443)));
        assert_eq!(split_authority("a.b"), ("a.b", None));
        assert_eq!(parse_ip("[::1]"), Some(ip("::1")));
    }

    #[tokio::test]
    async fn the_system_resolver_reads_the_hosts_file() {
        let cache = DnsCache::new(DnsSettings::default());
        let addr = cache.socket_addr("localhost", 80, Spread::RoundRobin).await;
        assert_eq!(addr.unwrap(), SocketAddr::from(([127, 0, 0, 1], 80)));
    }
}
