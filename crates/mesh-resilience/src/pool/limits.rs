//! The typed limits of one destination's pool, from DestinationRule
//! `connectionPool` (SPEC 5.1, 5.3, 14), and which `connectionPool` applies
//! to a destination.

use std::time::Duration;

use mesh_core::schema::istio_networking::{ConnectionPoolSettings, TrafficPolicy};
use mesh_core::snapshot::Snapshot;
use mesh_route::decision::DestinationKey;

/// "No limit": Envoy's and Istio's default for every counter (2^32 - 1).
pub const UNLIMITED: u32 = u32::MAX;

/// The limits of one destination's pool, from `connectionPool`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolLimits {
    /// `tcp.maxConnections`: open connections to all endpoints together.
    /// HTTP/1.1 requests in flight are capped here too, since each one
    /// holds a connection.
    pub max_connections: u32,
    /// `http.http1MaxPendingRequests`: requests queued for a connection.
    pub max_pending_requests: u32,
    /// `http.http2MaxRequests`: requests in flight, any protocol.
    pub max_requests: u32,
    /// `http.maxRetries`: retries in flight.
    pub max_retries: u32,
    /// `http.maxRequestsPerConnection`: a connection is closed after this
    /// many requests; 0 is unlimited, 1 disables keep-alive.
    pub max_requests_per_connection: u32,
    /// `tcp.connectTimeout` (default 10 s).
    pub connect_timeout: Duration,
    /// `http.idleTimeout`, else `tcp.idleTimeout` (default 1 h): an unused
    /// connection is closed after this long. `None` never closes it.
    pub idle_timeout: Option<Duration>,
}

impl Default for PoolLimits {
    /// SPEC 5.3 and 14: every counter unlimited, connect timeout 10 s,
    /// idle timeout 1 h.
    fn default() -> Self {
        PoolLimits {
            max_connections: UNLIMITED,
            max_pending_requests: UNLIMITED,
            max_requests: UNLIMITED,
            max_retries: UNLIMITED,
            max_requests_per_connection: 0,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(3600)),
        }
    }
}

/// Why a `connectionPool` does not convert.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PoolLimitsError {
    /// A count is negative (validation refuses these at load time).
    #[error("connectionPool.{field}: {value} is negative")]
    Negative {
        /// The field, as written in YAML.
        field: &'static str,
        /// Its value.
        value: i32,
    },
}

/// A written count: absent or 0 keeps `base` (Istio passes a limit to Envoy
/// only when it is above 0), negative is an error.
fn count(field: &'static str, value: Option<i32>, base: u32) -> Result<u32, PoolLimitsError> {
    match value {
        None | Some(0) => Ok(base),
        Some(v) => u32::try_from(v).map_err(|_| PoolLimitsError::Negative { field, value: v }),
    }
}

impl PoolLimits {
    /// `settings` over `base`: fields the settings do not write keep
    /// `base`'s values.
    pub fn with_settings(
        base: &PoolLimits,
        settings: &ConnectionPoolSettings,
    ) -> Result<PoolLimits, PoolLimitsError> {
        let tcp = settings.tcp.as_ref();
        let http = settings.http.as_ref();
        let idle = http
            .and_then(|h| h.idle_timeout)
            .or_else(|| tcp.and_then(|t| t.idle_timeout));
        Ok(PoolLimits {
            max_connections: count(
                "tcp.maxConnections",
                tcp.and_then(|t| t.max_connections),
                base.max_connections,
            )?,
            max_pending_requests: count(
                "http.http1MaxPendingRequests",
                http.and_then(|h| h.http1_max_pending_requests),
                base.max_pending_requests,
            )?,
            max_requests: count(
                "http.http2MaxRequests",
                http.and_then(|h| h.http2_max_requests),
                base.max_requests,
            )?,
            max_retries: count(
                "http.maxRetries",
                http.and_then(|h| h.max_retries),
                base.max_retries,
            )?,
            max_requests_per_connection: count(
                "http.maxRequestsPerConnection",
                http.and_then(|h| h.max_requests_per_connection),
                base.max_requests_per_connection,
            )?,
            connect_timeout: tcp
                .and_then(|t| t.connect_timeout)
                .map_or(base.connect_timeout, |d| d.get()),
            // `0s` disables the idle timeout, as in Envoy.
            idle_timeout: match idle {
                Some(d) if d.is_zero() => None,
                Some(d) => Some(d.get()),
                None => base.idle_timeout,
            },
        })
    }

    /// The limits of `dest` (addressed on service port `port`) under
    /// `snapshot`'s DestinationRule, over `base` (SPEC 5.1): the subset's
    /// `portLevelSettings` for the port, else the subset's `connectionPool`,
    /// else the rule's `portLevelSettings` for the port (which replaces the
    /// top level: unwritten fields take `base`), else the rule's top-level
    /// `connectionPool`, else `base`.
    pub fn for_destination(
        snapshot: &Snapshot,
        dest: &DestinationKey,
        port: Option<u16>,
        base: &PoolLimits,
    ) -> PoolLimits {
        match connection_pool(snapshot, dest, port) {
            Some(settings) => {
                PoolLimits::with_settings(base, settings).unwrap_or_else(|_| base.clone())
            }
            None => base.clone(),
        }
    }
}

impl TryFrom<&ConnectionPoolSettings> for PoolLimits {
    type Error = PoolLimitsError;

    fn try_from(settings: &ConnectionPoolSettings) -> Result<Self, Self::Error> {
        PoolLimits::with_settings(&PoolLimits::default(), settings)
    }
}

/// The `connectionPool` in force for `dest` on `port` (see
/// [`PoolLimits::for_destination`]).
pub fn connection_pool<'a>(
    snapshot: &'a Snapshot,
    dest: &DestinationKey,
    port: Option<u16>,
) -> Option<&'a ConnectionPoolSettings> {
    let policy = snapshot.index.destinations.get(&*dest.host)?;
    let port_level = |tp: &'a TrafficPolicy| {
        let port = u32::from(port?);
        tp.port_level_settings
            .iter()
            .find(|p| p.port.as_ref().is_some_and(|s| s.number == port))
    };
    let subset = dest
        .subset
        .as_ref()
        .and_then(|s| policy.subsets.get(&**s))
        .and_then(|s| s.traffic_policy.as_ref());
    if let Some(tp) = subset {
        if let Some(cp) = port_level(tp).and_then(|p| p.connection_pool.as_ref()) {
            return Some(cp);
        }
        if let Some(cp) = &tp.connection_pool {
            return Some(cp);
        }
    }
    let top = policy.traffic_policy.as_ref()?;
    match port_level(top) {
        Some(p) => p.connection_pool.as_ref(),
        None => top.connection_pool.as_ref(),
    }
}
