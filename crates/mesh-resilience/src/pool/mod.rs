//! Connection-pool circuit breaking: DestinationRule `connectionPool`
//! (SPEC 5.3), between the balancer and the connection (SPEC 1.1 step 8).
//!
//! A destination that slows down must not take its callers down with it.
//! Without limits, every caller request that arrives while the backend is
//! slow opens one more connection and waits; memory, sockets and latency
//! grow until everything times out together. Envoy's answer, which Istio
//! configures from `connectionPool`, is a small set of **counters per
//! client per destination** (host × subset × port, summed over every
//! endpoint): once a counter is at its limit, the next request is refused
//! *at once* with 503, flag `UO` and `x-envoy-overloaded: true`, so the
//! caller can fail fast, shed load or try elsewhere.
//!
//! | limit | field | counts |
//! |---|---|---|
//! | [`PoolLimits::max_connections`] | `tcp.maxConnections` | open connections; an HTTP/1.1 request holds one for its whole exchange |
//! | [`PoolLimits::max_pending_requests`] | `http.http1MaxPendingRequests` | requests queued for a connection |
//! | [`PoolLimits::max_requests`] | `http.http2MaxRequests` | requests in flight (any protocol) |
//! | [`PoolLimits::max_retries`] | `http.maxRetries` | retries in flight |
//!
//! An HTTP/1.1 request that finds every connection busy waits in the
//! pending queue when the queue has room and takes the next connection that
//! frees up; only a full queue is refused. Nothing queues beyond it. The
//! connection settings (`maxRequestsPerConnection`, `connectTimeout`,
//! `idleTimeout`, and the connection count itself) are enforced by the
//! connector on real sockets: it finds this destination's pool in the
//! request's [`PoolHandle`] extension. A request holds its place in the
//! counters until its response body ends: the stage wraps the body to
//! hold it, or, when the pool's connector says it will
//! ([`DestinationPool::connector_holds_permits`]), hands the permit over
//! in the [`PoolHandle`] for the connector's own body to hold (the mesh's
//! connector does, saving a second boxed body per request).
//!
//! The counters live in a [`PoolRegistry`] keyed by destination, outside
//! the configuration snapshot, so a reload keeps them: requests admitted
//! under the old limits finish under them, and changed limits apply to the
//! next admissions. Admission under the limits is a few atomic operations;
//! only a request that has to queue touches a wait list.
//!
//! Retries: a retry attempt carries the [`RetryAttempt`] request extension
//! and additionally needs a `maxRetries` slot; when none is free the attempt
//! is refused with 503 UO and the response carries [`RetryOverflow`], so the
//! retry layer returns the previous attempt's response instead (Envoy does
//! not retry past `maxRetries`). A layer holding the registry can also take
//! a slot itself with [`DestinationPool::try_acquire_retry`].
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use mesh_resilience::pool::{PoolLimits, PoolLimitsLayer, PoolRegistry};
//!
//! // Alone: at most 4 requests in flight, 8 queued, the rest refused.
//! let limits = PoolLimits {
//!     max_connections: 4,
//!     max_pending_requests: 8,
//!     connect_timeout: Duration::from_secs(1),
//!     ..PoolLimits::default()
//! };
//! let alone = PoolLimitsLayer::new(limits);
//! // In the mesh stack: each request gets its destination's limits from the
//! // DestinationRule of the snapshot it was routed with.
//! let per_destination = PoolLimitsLayer::per_destination(Arc::new(PoolRegistry::new()));
//! # let _ = (alone, per_destination);
//! ```

mod counters;
mod layer;
mod limits;

pub use counters::*;
pub use layer::*;
pub use limits::*;

#[cfg(test)]
mod tests;
