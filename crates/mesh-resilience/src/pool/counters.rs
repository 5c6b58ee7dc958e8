//! The live counters of one destination's pool ([`DestinationPool`]):
//! admission of requests and retries, the pending queue, the connection
//! count the connector keeps, and the [`PoolRegistry`] that keeps pools
//! across reloads.

use std::any::Any;
use std::sync::atomic::Ordering::{Acquire, Release, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use http::Request;
use mesh_core::snapshot::{HashMap, Snapshot};
use mesh_route::decision::DestinationKey;
use mesh_route::layer::{request_authority, routed};
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

use super::limits::PoolLimits;

/// Which limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Overflow {
    /// `http2MaxRequests`.
    Requests,
    /// `http1MaxPendingRequests` (every connection busy, queue full).
    Pending,
    /// `maxRetries`.
    Retries,
}

/// Counters of one pool, for tests, stats and the admin page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Open connections.
    pub connections: u32,
    /// Requests in flight.
    pub requests: u32,
    /// HTTP/1.1 requests holding a connection slot.
    pub http1_busy: u32,
    /// Requests queued for a connection.
    pub pending: u32,
    /// Retries in flight.
    pub retries: u32,
    /// Requests refused by `http2MaxRequests` so far.
    pub requests_overflow: u64,
    /// Requests refused because the pending queue was full.
    pub pending_overflow: u64,
    /// Retries refused by `maxRetries`.
    pub retries_overflow: u64,
}

static NEXT_POOL_ID: AtomicU64 = AtomicU64::new(1);

/// The pool state of one destination for one client: its limits and live
/// counters, and the connector's connections. Shared by every request to
/// the destination; survives reloads inside a [`PoolRegistry`].
pub struct DestinationPool {
    id: u64,
    generation: AtomicU64,
    limits: ArcSwap<PoolLimits>,
    requests: AtomicU32,
    pending: AtomicU32,
    busy: AtomicU32,
    retries: AtomicU32,
    connections: AtomicU32,
    requests_overflow: AtomicU64,
    pending_overflow: AtomicU64,
    retries_overflow: AtomicU64,
    slot_freed: Notify,
    connections_changed: Notify,
    connector: OnceLock<Arc<dyn Any + Send + Sync>>,
    /// Set by a connector that takes each request's [`RequestPermit`] out
    /// of its [`PoolHandle`] into its response body.
    permits_to_connector: AtomicBool,
}

impl std::fmt::Debug for DestinationPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DestinationPool")
            .field("id", &self.id)
            .field("limits", &**self.limits.load())
            .field("stats", &self.stats())
            .finish()
    }
}

/// Adds one to `counter` if it is below `max`.
fn try_increment(counter: &AtomicU32, max: u32) -> bool {
    counter
        .fetch_update(SeqCst, SeqCst, |n| (n < max).then_some(n + 1))
        .is_ok()
}

fn decrement(counter: &AtomicU32) {
    // Saturating, so a bug elsewhere can never wrap a counter to "full".
    let _ = counter.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1));
}

impl DestinationPool {
    /// A pool with fixed limits, outside any registry.
    pub fn new(limits: PoolLimits) -> Arc<DestinationPool> {
        Arc::new(DestinationPool::with_generation(limits, 0))
    }

    fn with_generation(limits: PoolLimits, generation: u64) -> DestinationPool {
        DestinationPool {
            id: NEXT_POOL_ID.fetch_add(1, SeqCst),
            generation: AtomicU64::new(generation),
            limits: ArcSwap::from_pointee(limits),
            requests: AtomicU32::new(0),
            pending: AtomicU32::new(0),
            busy: AtomicU32::new(0),
            retries: AtomicU32::new(0),
            connections: AtomicU32::new(0),
            requests_overflow: AtomicU64::new(0),
            pending_overflow: AtomicU64::new(0),
            retries_overflow: AtomicU64::new(0),
            slot_freed: Notify::new(),
            connections_changed: Notify::new(),
            connector: OnceLock::new(),
            permits_to_connector: AtomicBool::new(false),
        }
    }

    /// A process-unique id (connector caches key on it).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The limits in force.
    pub fn limits(&self) -> Arc<PoolLimits> {
        self.limits.load_full()
    }

    /// Replaces the limits; requests already admitted keep their slots,
    /// the next admissions see the new limits.
    pub fn set_limits(&self, limits: PoolLimits) {
        if **self.limits.load() != limits {
            self.limits.store(Arc::new(limits));
            // Waiters re-check: a raised limit may have room for them now.
            self.slot_freed.notify_waiters();
            self.connections_changed.notify_waiters();
        }
    }

    /// The live counters.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            connections: self.connections.load(SeqCst),
            requests: self.requests.load(SeqCst),
            http1_busy: self.busy.load(SeqCst),
            pending: self.pending.load(SeqCst),
            retries: self.retries.load(SeqCst),
            requests_overflow: self.requests_overflow.load(SeqCst),
            pending_overflow: self.pending_overflow.load(SeqCst),
            retries_overflow: self.retries_overflow.load(SeqCst),
        }
    }

    /// Admits a request now, queues it, or refuses it. `http1` requests
    /// hold a connection slot (`maxConnections`) and may queue for one;
    /// `retry` attempts also need a `maxRetries` slot.
    pub fn admit(self: &Arc<Self>, http1: bool, retry: bool) -> Result<Admission, Overflow> {
        let limits = self.limits.load();
        let mut permit = RequestPermit {
            pool: Arc::clone(self),
            counted: false,
            slot: false,
            retry: false,
        };
        if retry {
            if !try_increment(&self.retries, limits.max_retries) {
                self.retries_overflow.fetch_add(1, SeqCst);
                return Err(Overflow::Retries);
            }
            permit.retry = true;
        }
        if !http1 {
            return self.count_request(permit, &limits).map(Admission::Ready);
        }
        // Queued requests go first: a new arrival takes a free slot directly
        // only when nobody is waiting for one.
        if self.pending.load(SeqCst) == 0 && try_increment(&self.busy, limits.max_connections) {
            permit.slot = true;
            return self.count_request(permit, &limits).map(Admission::Ready);
        }
        if !try_increment(&self.pending, limits.max_pending_requests) {
            self.pending_overflow.fetch_add(1, SeqCst);
            // Dropping the permit gives back a retry slot taken above.
            return Err(Overflow::Pending);
        }
        Ok(Admission::Queued(Queued {
            permit,
            _pending: PendingGuard(Arc::clone(self)),
        }))
    }

    /// `http2MaxRequests`, checked when a request is about to go out
    /// (after its wait for a connection, as Envoy does).
    fn count_request(
        &self,
        mut permit: RequestPermit,
        limits: &PoolLimits,
    ) -> Result<RequestPermit, Overflow> {
        if try_increment(&self.requests, limits.max_requests) {
            permit.counted = true;
            Ok(permit)
        } else {
            self.requests_overflow.fetch_add(1, SeqCst);
            Err(Overflow::Requests)
        }
    }

    fn release_slot(&self) {
        decrement(&self.busy);
        if self.pending.load(SeqCst) > 0 {
            self.slot_freed.notify_one();
        }
    }

    /// Takes a `maxRetries` slot for a retry about to be sent, held until
    /// the permit is dropped (when the retry's response has ended). `None`
    /// means the destination has its maximum of retries in flight: do not
    /// retry; return the response already at hand.
    pub fn try_acquire_retry(self: &Arc<Self>) -> Option<RetryPermit> {
        let max = self.limits.load().max_retries;
        if try_increment(&self.retries, max) {
            Some(RetryPermit(Arc::clone(self)))
        } else {
            self.retries_overflow.fetch_add(1, SeqCst);
            None
        }
    }

    // ------------------------------------------------------ connector side

    /// Counts a new connection if `maxConnections` allows one; the
    /// permit is the connection's place in the count until dropped.
    pub fn try_open_connection(self: &Arc<Self>) -> Option<ConnectionPermit> {
        let max = self.limits.load().max_connections;
        try_increment(&self.connections, max).then(|| ConnectionPermit(Arc::clone(self)))
    }

    /// Counts a new connection whatever the limit (HTTP/2's first
    /// connection to an endpoint: Envoy lets a pool without any connection
    /// open one even when the cluster is at its limit).
    pub fn open_connection(self: &Arc<Self>) -> ConnectionPermit {
        self.connections.fetch_add(1, SeqCst);
        ConnectionPermit(Arc::clone(self))
    }

    /// Resolves after the next [`connection_returned`](Self::connection_returned)
    /// or connection close. Call `enable()` on it (pinned) before checking,
    /// so no change is missed.
    pub fn connections_changed(&self) -> Notified<'_> {
        self.connections_changed.notified()
    }

    /// Wakes connector tasks waiting for a connection: one went back to
    /// the idle pool.
    pub fn connection_returned(&self) {
        self.connections_changed.notify_waiters();
    }

    /// The connector's per-destination state (its idle connections), made
    /// by `init` on first use, so it lives as long as the counters do.
    /// `None` if a different type was stored first.
    pub fn connector_state<T, F>(&self, init: F) -> Option<Arc<T>>
    where
        T: Any + Send + Sync,
        F: FnOnce() -> T,
    {
        let state = self
            .connector
            .get_or_init(|| Arc::new(init()) as Arc<dyn Any + Send + Sync>);
        Arc::clone(state).downcast::<T>().ok()
    }

    /// Declares that every request admitted to this pool from now on
    /// reaches a connector that takes its [`RequestPermit`] out of the
    /// request's [`PoolHandle`] ([`PoolHandle::into_parts`]) and holds it
    /// in the response body it makes, until that body ends; or drops the
    /// request, and the permit with it, when it answers without a body of
    /// the upstream's.
    ///
    /// The pool stage then hands each request's permit over instead of
    /// wrapping the response body to hold it: one boxed body per request
    /// less (the connector's body is boxed anyway). Without the
    /// declaration (a pool in front of any other service) the stage keeps
    /// the permit and wraps the body itself.
    pub fn connector_holds_permits(&self) {
        if !self.permits_to_connector.load(Acquire) {
            self.permits_to_connector.store(true, Release);
        }
    }

    /// Whether a connector declared it holds permits
    /// ([`connector_holds_permits`](Self::connector_holds_permits)).
    pub fn permits_go_to_connector(&self) -> bool {
        self.permits_to_connector.load(Acquire)
    }
}

/// What [`DestinationPool::admit`] decided.
#[derive(Debug)]
pub enum Admission {
    /// Go now; hold the permit until the response ends.
    Ready(RequestPermit),
    /// Wait for a connection slot first.
    Queued(Queued),
}

/// A request waiting in the pending queue for an HTTP/1.1 connection slot.
#[derive(Debug)]
pub struct Queued {
    permit: RequestPermit,
    _pending: PendingGuard,
}

impl Queued {
    /// Waits until a connection slot frees (no timeout of its own: the
    /// route and per-try timeouts above bound it). Dropping the future
    /// leaves the queue.
    pub async fn ready(self) -> Result<RequestPermit, Overflow> {
        let Queued {
            mut permit,
            _pending: pending,
        } = self;
        let pool = Arc::clone(&permit.pool);
        loop {
            let freed = pool.slot_freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if try_increment(&pool.busy, pool.limits.load().max_connections) {
                permit.slot = true;
                break;
            }
            freed.await;
        }
        drop(pending);
        let limits = pool.limits.load();
        pool.count_request(permit, &limits)
    }
}

#[derive(Debug)]
struct PendingGuard(Arc<DestinationPool>);

impl Drop for PendingGuard {
    fn drop(&mut self) {
        decrement(&self.0.pending);
    }
}

/// A request's places in its pool's counters, given back on drop.
pub struct RequestPermit {
    pool: Arc<DestinationPool>,
    counted: bool,
    slot: bool,
    retry: bool,
}

impl std::fmt::Debug for RequestPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestPermit")
            .field("pool", &self.pool.id)
            .field("slot", &self.slot)
            .field("retry", &self.retry)
            .finish()
    }
}

impl RequestPermit {
    /// The pool the permit belongs to.
    pub fn pool(&self) -> &Arc<DestinationPool> {
        &self.pool
    }
}

impl Drop for RequestPermit {
    fn drop(&mut self) {
        if self.counted {
            decrement(&self.pool.requests);
        }
        if self.retry {
            decrement(&self.pool.retries);
        }
        if self.slot {
            self.pool.release_slot();
        }
    }
}

/// A `maxRetries` slot taken with [`DestinationPool::try_acquire_retry`].
#[derive(Debug)]
pub struct RetryPermit(Arc<DestinationPool>);

impl Drop for RetryPermit {
    fn drop(&mut self) {
        decrement(&self.0.retries);
    }
}

/// One open connection's place in its pool's count; the connector keeps it
/// with the socket and drops it when the socket closes.
#[derive(Debug)]
pub struct ConnectionPermit(Arc<DestinationPool>);

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        decrement(&self.0.connections);
        self.0.connections_changed.notify_waiters();
    }
}

/// Request extension the pool stage leaves for the connector: the
/// destination's pool, whose limits and connection state the connector
/// applies to the connection it picks or opens, and, when the connector
/// declared it holds permits ([`DestinationPool::connector_holds_permits`]),
/// the request's [`RequestPermit`].
///
/// A clone names the same pool but carries no permit: a permit counts one
/// request once (extensions are cloned for retries and mirrors above the
/// pool stage, never below it).
#[derive(Debug)]
pub struct PoolHandle(Handle);

#[derive(Debug)]
enum Handle {
    Pool(Arc<DestinationPool>),
    Permit(RequestPermit),
}

impl PoolHandle {
    /// A handle on `pool` without a permit.
    pub fn new(pool: Arc<DestinationPool>) -> Self {
        PoolHandle(Handle::Pool(pool))
    }

    /// A handle carrying the request's `permit` (and so its pool) to the
    /// connector.
    pub fn with_permit(permit: RequestPermit) -> Self {
        PoolHandle(Handle::Permit(permit))
    }

    /// The destination's pool.
    pub fn pool(&self) -> &Arc<DestinationPool> {
        match &self.0 {
            Handle::Pool(pool) => pool,
            Handle::Permit(permit) => permit.pool(),
        }
    }

    /// The pool and the request's permit, if the handle carries it: the
    /// connector holds the permit until the response body ends.
    pub fn into_parts(self) -> (Arc<DestinationPool>, Option<RequestPermit>) {
        match self.0 {
            Handle::Pool(pool) => (pool, None),
            Handle::Permit(permit) => (Arc::clone(permit.pool()), Some(permit)),
        }
    }
}

impl Clone for PoolHandle {
    fn clone(&self) -> Self {
        PoolHandle::new(Arc::clone(self.pool()))
    }
}

/// Request extension the retry layer puts on each retry attempt (not on
/// the first try): the attempt also needs a `maxRetries` slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetryAttempt;

/// Response extension of a retry attempt refused by `maxRetries`: the
/// retry layer should stop and return the previous attempt's response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetryOverflow;

/// Pools by destination (host, subset, port), kept across reloads.
pub struct PoolRegistry {
    pools: ArcSwap<HashMap<DestinationKey, Arc<DestinationPool>>>,
    base: PoolLimits,
}

impl Default for PoolRegistry {
    fn default() -> Self {
        PoolRegistry::new()
    }
}

impl std::fmt::Debug for PoolRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolRegistry")
            .field("destinations", &self.pools.load().len())
            .finish()
    }
}

impl PoolRegistry {
    /// An empty registry whose destinations default to
    /// [`PoolLimits::default`].
    pub fn new() -> Self {
        PoolRegistry::with_defaults(PoolLimits::default())
    }

    /// An empty registry; fields a DestinationRule does not write take
    /// `base`'s values (the sidecar's own connect and idle timeouts).
    pub fn with_defaults(base: PoolLimits) -> Self {
        PoolRegistry {
            pools: ArcSwap::from_pointee(HashMap::default()),
            base,
        }
    }

    /// The pool of `dest` on service port `port`, with its limits brought
    /// up to date with `snapshot`.
    pub fn pool(
        &self,
        snapshot: &Snapshot,
        dest: &DestinationKey,
        port: Option<u16>,
    ) -> Arc<DestinationPool> {
        let pools = self.pools.load();
        let found = if dest.port == port {
            pools.get(dest)
        } else {
            pools.get(&DestinationKey {
                host: Arc::clone(&dest.host),
                subset: dest.subset.clone(),
                port,
            })
        };
        if let Some(pool) = found {
            if pool.generation.load(SeqCst) != snapshot.generation {
                pool.set_limits(PoolLimits::for_destination(
                    snapshot, dest, port, &self.base,
                ));
                pool.generation.store(snapshot.generation, SeqCst);
            }
            return Arc::clone(pool);
        }
        drop(pools);
        let key = DestinationKey {
            host: Arc::clone(&dest.host),
            subset: dest.subset.clone(),
            port,
        };
        let limits = PoolLimits::for_destination(snapshot, dest, port, &self.base);
        let fresh = Arc::new(DestinationPool::with_generation(
            limits,
            snapshot.generation,
        ));
        let mut chosen = Arc::clone(&fresh);
        self.pools.rcu(|current| {
            let mut next = HashMap::clone(current);
            // Another request may have created it meanwhile: keep that one.
            chosen = Arc::clone(
                next.entry(key.clone())
                    .or_insert_with(|| Arc::clone(&fresh)),
            );
            next
        });
        chosen
    }

    /// The pool a routed request goes to: its route decision's destination
    /// under the table it was routed with, on the port it addresses.
    /// `None` for a request the route stage did not forward.
    pub fn pool_for<B>(&self, req: &Request<B>) -> Option<Arc<DestinationPool>> {
        let (decision, table) = routed(req.extensions())?;
        let dest = &decision.forward()?.destination;
        let port = dest.port.or_else(|| {
            request_authority(req)
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| p.parse().ok())
        });
        Some(self.pool(&table.snapshot, dest, port))
    }

    /// The pool of a destination seen before (with the port it was
    /// addressed on), without touching its limits.
    pub fn get(&self, dest: &DestinationKey) -> Option<Arc<DestinationPool>> {
        self.pools.load().get(dest).cloned()
    }
}
