//! The typed outlier policy: Istio's `outlierDetection` with its defaults
//! (SPEC 5.4, 14), how a DestinationRule's subsets and port-level settings
//! combine into one (SPEC 5.1), and the two percentages' arithmetic.

use std::time::Duration;

use mesh_core::schema::istio_networking::{OutlierDetection, TrafficPolicy};
use mesh_core::snapshot::Snapshot;
use mesh_route::decision::DestinationKey;

/// `consecutive5xxErrors` when unset.
pub const DEFAULT_CONSECUTIVE_5XX: u32 = 5;
/// `consecutiveLocalOriginFailures` when unset (with the split on).
pub const DEFAULT_CONSECUTIVE_LOCAL_ORIGIN: u32 = 5;
/// `interval` when unset.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// `baseEjectionTime` when unset.
pub const DEFAULT_BASE_EJECTION_TIME: Duration = Duration::from_secs(30);
/// Envoy's `max_ejection_time`, which Istio leaves at its default: no
/// ejection lasts longer (unless `baseEjectionTime` itself is longer).
pub const DEFAULT_MAX_EJECTION_TIME: Duration = Duration::from_secs(300);
/// `maxEjectionPercent` when unset or 0.
pub const DEFAULT_MAX_EJECTION_PERCENT: u32 = 10;

/// How one destination's endpoints are judged (SPEC 5.4, 14).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OutlierPolicy {
    /// Consecutive errors (any 5xx; local-origin failures too unless
    /// split) that eject an endpoint; 0 disables. Default 5.
    pub consecutive_5xx: u32,
    /// Consecutive gateway errors (502, 503, 504; local-origin failures
    /// too unless split) that eject an endpoint; 0 (the default) disables.
    pub consecutive_gateway: u32,
    /// `Some(n)` tracks local-origin failures (connect failure, reset,
    /// timeout) apart from responses (`splitExternalLocalOriginErrors`):
    /// `n` in a row eject; 0 disables. `None`: they count as gateway errors.
    pub consecutive_local_origin: Option<u32>,
    /// The sweep period that returns ejected endpoints and decays their
    /// multipliers. Default 10 s.
    pub interval: Duration,
    /// The first ejection's length; the n-th lasts n times as long.
    /// Default 30 s.
    pub base_ejection_time: Duration,
    /// The longest ejection (Envoy's default 300 s; never shorter than
    /// `base_ejection_time`).
    pub max_ejection_time: Duration,
    /// Hard cap on the share of endpoints ejected at once, 1..=100.
    /// Default 10.
    pub max_ejection_percent: u32,
    /// Panic threshold: with fewer endpoints in service than this share,
    /// balancing ignores ejections. 0 (the default) never panics.
    pub min_health_percent: u32,
    /// Statuses that count toward `consecutive_5xx` instead of 500-599
    /// (`outlierDetectionHttpErrorCodes`); empty means 5xx.
    pub error_codes: Vec<u16>,
}

impl Default for OutlierPolicy {
    /// What an empty `outlierDetection: {}` means under Istio.
    fn default() -> Self {
        OutlierPolicy {
            consecutive_5xx: DEFAULT_CONSECUTIVE_5XX,
            consecutive_gateway: 0,
            consecutive_local_origin: None,
            interval: DEFAULT_INTERVAL,
            base_ejection_time: DEFAULT_BASE_EJECTION_TIME,
            max_ejection_time: DEFAULT_MAX_EJECTION_TIME,
            max_ejection_percent: DEFAULT_MAX_EJECTION_PERCENT,
            min_health_percent: 0,
            error_codes: Vec::new(),
        }
    }
}

/// Why an `outlierDetection` block cannot become a policy.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OutlierPolicyError {
    /// A percentage outside 0..=100.
    #[error("{field}: percentage {value} is outside 0..100")]
    Percent {
        /// The field.
        field: &'static str,
        /// The value written.
        value: i32,
    },
    /// A zero `interval` or `baseEjectionTime`.
    #[error("{0} must be at least 1ms")]
    ZeroDuration(&'static str),
    /// An `outlierDetectionHttpErrorCodes` entry that is no HTTP status.
    #[error("outlierDetectionHttpErrorCodes: {0} is not an HTTP status")]
    Status(u32),
}

impl TryFrom<&OutlierDetection> for OutlierPolicy {
    type Error = OutlierPolicyError;

    fn try_from(od: &OutlierDetection) -> Result<Self, Self::Error> {
        let percent = |field, value: Option<i32>| match value {
            None => Ok(None),
            Some(v) => u32::try_from(v)
                .ok()
                .filter(|v| *v <= 100)
                .map(Some)
                .ok_or(OutlierPolicyError::Percent { field, value: v }),
        };
        let duration =
            |field, value: Option<mesh_core::schema::common::Duration>, default| match value
                .map(|d| d.get())
            {
                None => Ok(default),
                Some(d) if d >= Duration::from_millis(1) => Ok(d),
                Some(_) => Err(OutlierPolicyError::ZeroDuration(field)),
            };
        let base_ejection_time = duration(
            "baseEjectionTime",
            od.base_ejection_time,
            DEFAULT_BASE_EJECTION_TIME,
        )?;
        let error_codes = od
            .outlier_detection_http_error_codes
            .iter()
            .map(|c| {
                u16::try_from(*c)
                    .ok()
                    .filter(|c| (100..=599).contains(c))
                    .ok_or(OutlierPolicyError::Status(*c))
            })
            .collect::<Result<_, _>>()?;
        Ok(OutlierPolicy {
            consecutive_5xx: od.consecutive_5xx_errors.unwrap_or(DEFAULT_CONSECUTIVE_5XX),
            consecutive_gateway: od.consecutive_gateway_errors.unwrap_or(0),
            consecutive_local_origin: (od.split_external_local_origin_errors == Some(true)).then(
                || {
                    od.consecutive_local_origin_failures
                        .unwrap_or(DEFAULT_CONSECUTIVE_LOCAL_ORIGIN)
                },
            ),
            interval: duration("interval", od.interval, DEFAULT_INTERVAL)?,
            base_ejection_time,
            max_ejection_time: DEFAULT_MAX_EJECTION_TIME.max(base_ejection_time),
            // Istio passes it to Envoy only when > 0, so 0 means 10 too.
            max_ejection_percent: match percent("maxEjectionPercent", od.max_ejection_percent)? {
                None | Some(0) => DEFAULT_MAX_EJECTION_PERCENT,
                Some(p) => p,
            },
            // Istio writes it even when unset: 0, panic mode off.
            min_health_percent: percent("minHealthPercent", od.min_health_percent)?.unwrap_or(0),
            error_codes,
        })
    }
}

impl OutlierPolicy {
    /// Whether `status` counts toward `consecutive_5xx`.
    pub(super) fn is_error(&self, status: u16) -> bool {
        if self.error_codes.is_empty() {
            (500..=599).contains(&status)
        } else {
            self.error_codes.contains(&status)
        }
    }

    pub(super) fn ejection_millis(&self, multiplier: u32) -> u64 {
        let base = millis(self.base_ejection_time);
        let cap = millis(self.max_ejection_time.max(self.base_ejection_time));
        base.saturating_mul(u64::from(multiplier.max(1))).min(cap)
    }
}

/// The outlier policy for a destination under `snapshot`'s DestinationRule
/// (SPEC 5.1, as Istio merges it): the top-level `outlierDetection`,
/// replaced by the top-level port-level one for `port`, then by the
/// subset's, then by the subset's port-level one. A port-level policy
/// without `outlierDetection` turns it off for that port. `None`: no
/// outlier detection.
pub fn destination_policy(
    snapshot: &Snapshot,
    dest: &DestinationKey,
    port: Option<u32>,
) -> Option<OutlierPolicy> {
    let rule = snapshot.index.destinations.get(&*dest.host)?;
    fn apply<'a>(
        chosen: &mut Option<&'a OutlierDetection>,
        tp: &'a TrafficPolicy,
        port: Option<u32>,
    ) {
        if let Some(od) = &tp.outlier_detection {
            *chosen = Some(od);
        }
        if let Some(level) = port.and_then(|n| {
            tp.port_level_settings
                .iter()
                .find(|l| l.port.as_ref().is_some_and(|p| p.number == n))
        }) {
            *chosen = level.outlier_detection.as_ref();
        }
    }
    let mut chosen = None;
    if let Some(tp) = &rule.traffic_policy {
        apply(&mut chosen, tp, port);
    }
    if let Some(tp) = dest
        .subset
        .as_ref()
        .and_then(|s| rule.subsets.get(&**s))
        .and_then(|s| s.traffic_policy.as_ref())
    {
        apply(&mut chosen, tp, port);
    }
    // Validation rejects what does not convert.
    chosen.and_then(|od| OutlierPolicy::try_from(od).ok())
}

/// Whether any DestinationRule of `snapshot` configures outlier detection
/// anywhere (top level, port level, subsets): when none does,
/// [`destination_policy`] is `None` for every destination and port.
pub fn configures_outlier_detection(snapshot: &Snapshot) -> bool {
    fn in_policy(tp: &TrafficPolicy) -> bool {
        tp.outlier_detection.is_some()
            || tp
                .port_level_settings
                .iter()
                .any(|level| level.outlier_detection.is_some())
    }
    snapshot.index.destinations.values().any(|rule| {
        rule.traffic_policy.as_ref().is_some_and(in_policy)
            || rule
                .subsets
                .values()
                .any(|s| s.traffic_policy.as_ref().is_some_and(in_policy))
    })
}

/// SPEC 5.4's hard cap: whether one more endpoint may be ejected when
/// `ejected` of `endpoints` already are. No "at least one" exception.
pub fn may_eject(ejected: usize, endpoints: usize, max_ejection_percent: u32) -> bool {
    let max = usize::try_from(max_ejection_percent.min(100)).unwrap_or(100);
    endpoints > 0 && ejected < endpoints && 100 * (ejected + 1) <= max * endpoints
}

/// Whether a destination with `ejected` of `endpoints` out of service is in
/// panic: its healthy share is below `min_health_percent`.
pub fn in_panic(ejected: usize, endpoints: usize, min_health_percent: u32) -> bool {
    let min = usize::try_from(min_health_percent.min(100)).unwrap_or(100);
    endpoints > 0 && 100 * endpoints.saturating_sub(ejected) < min * endpoints
}

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
