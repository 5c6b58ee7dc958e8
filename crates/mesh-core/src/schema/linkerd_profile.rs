//! Linkerd's ServiceProfile (`linkerd.io/v1alpha2`): per-route retries,
//! timeouts and response classification for clients of one service
//! (SPEC 13.1, 13.2).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration as StdDuration;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use crate::schema::common::Duration;
use crate::validate::{Checker, Validate, checks};

/// A ServiceProfile spec.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceProfile {
    /// Routes, checked in order; the first match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// The retry budget shared by the retryable routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
    /// Traffic-split overrides: authorities and their weights.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dst_overrides: Vec<WeightedDst>,
    /// Ports whose traffic is opaque (port number to flag).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub opaque_ports: BTreeMap<u32, bool>,
}

/// One route of a profile.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Route {
    /// The route name (labels its metrics); required.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Which requests the route matches; required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<RequestMatch>,
    /// How responses are classified; first matching class decides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_classes: Vec<ResponseClass>,
    /// Whether failed requests are retried (within the budget).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_retryable: bool,
    /// Total time for the request, retries included; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// A request condition; every field that is set must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestMatch {
    /// An RE2 regex that must match the whole path (query excluded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_regex: Option<String>,
    /// The HTTP method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Conditions that must all hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub all: Vec<RequestMatch>,
    /// Conditions of which one must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub any: Vec<RequestMatch>,
    /// A condition that must not hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not: Option<Box<RequestMatch>>,
}

/// A response class.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResponseClass {
    /// Which responses belong to the class; required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<ResponseMatch>,
    /// Whether they are failures.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_failure: bool,
}

/// A response condition; every field that is set must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResponseMatch {
    /// A status range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusRange>,
    /// Conditions that must all hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub all: Vec<ResponseMatch>,
    /// Conditions of which one must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub any: Vec<ResponseMatch>,
    /// A condition that must not hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not: Option<Box<ResponseMatch>>,
}

/// An inclusive HTTP status range; a lone bound means that single code.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatusRange {
    /// The lowest status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u32>,
    /// The highest status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
}

impl StatusRange {
    /// The inclusive bounds, a lone bound standing for both.
    pub fn bounds(&self) -> Option<(u32, u32)> {
        match (self.min, self.max) {
            (Some(a), Some(b)) => Some((a, b)),
            (Some(a), None) | (None, Some(a)) => Some((a, a)),
            (None, None) => None,
        }
    }
}

/// The retry budget (SPEC 13.2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudget {
    /// Retries allowed per original request.
    pub retry_ratio: f64,
    /// Retries always allowed per second.
    pub min_retries_per_second: u32,
    /// The window over which requests are counted.
    pub ttl: Duration,
}

impl Default for RetryBudget {
    /// Linkerd's default budget: ratio 0.2, 10 retries/s, ttl 10s.
    fn default() -> Self {
        RetryBudget {
            retry_ratio: 0.2,
            min_retries_per_second: 10,
            ttl: Duration(StdDuration::from_secs(10)),
        }
    }
}

impl RetryBudget {
    /// Whether the proxy accepts the budget (SPEC 13.1); an invalid budget
    /// disables retries for the profile.
    pub fn is_valid(&self) -> bool {
        let ttl = self.ttl.get();
        (StdDuration::from_secs(1)..=StdDuration::from_secs(60)).contains(&ttl)
            && (0.0..=1000.0).contains(&self.retry_ratio)
            && self.min_retries_per_second < MAX_MIN_RETRIES
    }
}

/// `minRetriesPerSecond` must stay below `i32::MAX` (2^31 - 1).
const MAX_MIN_RETRIES: u32 = 0x7fff_ffff;

/// A weighted alternate destination.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WeightedDst {
    /// The authority (`svc.ns.svc.cluster.local:port`).
    pub authority: String,
    /// Its weight, a Kubernetes quantity (`1`, `500m`).
    pub weight: Quantity,
}

/// A Kubernetes resource quantity, written as a number or a string
/// (`10`, `"500m"`, `"1k"`), kept as written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Quantity(pub String);

impl Quantity {
    /// The value in thousandths (`500m` is 500, `1` is 1000), when it parses,
    /// is not negative and fits.
    pub fn millis(&self) -> Option<u64> {
        let s = self.0.trim();
        let s = s.strip_prefix('+').unwrap_or(s);
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (num, suffix) = s.split_at(split);
        let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
        if whole.is_empty() && frac.is_empty() {
            return None;
        }
        // Scale as (multiplier, divisor) of thousandths.
        let (mul, div): (u128, u128) = match suffix {
            "n" => (1, 1_000_000),
            "u" => (1, 1_000),
            "m" => (1, 1),
            "" => (1_000, 1),
            "k" => (1_000_000, 1),
            "M" => (1_000_000_000, 1),
            "G" => (1_000_000_000_000, 1),
            "T" => (1_000_000_000_000_000, 1),
            "Ki" => (1_024_000, 1),
            "Mi" => (1_048_576_000, 1),
            "Gi" => (1_073_741_824_000, 1),
            _ => return None,
        };
        let digits = format!("{whole}{frac}");
        let value: u128 = if digits.is_empty() {
            0
        } else {
            digits.parse().ok()?
        };
        let scale = 10u128.checked_pow(u32::try_from(frac.len()).ok()?)?;
        let scaled = value.checked_mul(mul)? / scale / div;
        u64::try_from(scaled).ok()
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quantity such as 1, 500m or \"10\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Quantity, E> {
                Ok(Quantity(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Methods the proxy recognises in `condition.method` (SPEC 13.1).
const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "OPTION", "TRACE", "PATCH",
];

impl Validate for ServiceProfile {
    fn validate(&self, cx: &mut Checker) {
        cx.each("routes", &self.routes, |c, r| r.validate(c));
        if let Some(b) = &self.retry_budget {
            cx.field("retryBudget", |c| b.validate(c));
        }
        cx.each("dstOverrides", &self.dst_overrides, |c, d| {
            if d.authority.is_empty() {
                c.error_at(
                    "authority",
                    "authority is empty; name a service, e.g. web.ns.svc.cluster.local:80",
                );
            }
            if d.weight.millis().is_none() {
                c.error_at(
                    "weight",
                    format!(
                        "invalid weight {:?}: write a non-negative quantity such as 1, 100 or 500m",
                        d.weight.0
                    ),
                );
            }
        });
        cx.field("opaquePorts", |c| {
            for port in self.opaque_ports.keys() {
                c.field(&port.to_string(), |c| checks::port_number(c, *port));
            }
        });
    }
}

impl Validate for Route {
    fn validate(&self, cx: &mut Checker) {
        if self.name.is_empty() {
            cx.error("route has no name; every route needs one (it labels the route's metrics)");
        }
        match &self.condition {
            None => {
                cx.error("route has no condition; add one, e.g. condition: {pathRegex: /api/.*}")
            }
            Some(m) => cx.field("condition", |c| m.validate(c)),
        }
        cx.each(
            "responseClasses",
            &self.response_classes,
            |c, rc| match &rc.condition {
                None => c.error("response class has no condition"),
                Some(m) => c.field("condition", |c| m.validate(c)),
            },
        );
    }
}

impl Validate for RequestMatch {
    fn validate(&self, cx: &mut Checker) {
        if self.path_regex.is_none()
            && self.method.is_none()
            && self.all.is_empty()
            && self.any.is_empty()
            && self.not.is_none()
        {
            cx.error("condition is empty; set pathRegex, method, all, any or not");
        }
        if let Some(re) = &self.path_regex {
            cx.field("pathRegex", |c| checks::regex(c, re));
        }
        if let Some(m) = &self.method {
            cx.field("method", |c| {
                if !METHODS.contains(&m.as_str()) {
                    let upper = m.to_ascii_uppercase();
                    if METHODS.contains(&upper.as_str()) {
                        c.error(format!("method {m:?} must be upper case: {upper}"));
                    } else {
                        c.error(format!(
                            "{m:?} is not an HTTP method; use one of GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH"
                        ));
                    }
                }
            });
        }
        cx.each("all", &self.all, |c, m| m.validate(c));
        cx.each("any", &self.any, |c, m| m.validate(c));
        if let Some(n) = &self.not {
            cx.field("not", |c| n.validate(c));
        }
    }
}

impl Validate for ResponseMatch {
    fn validate(&self, cx: &mut Checker) {
        if self.status.is_none() && self.all.is_empty() && self.any.is_empty() && self.not.is_none()
        {
            cx.error("condition is empty; set status, all, any or not");
        }
        if let Some(s) = &self.status {
            cx.field("status", |c| s.validate(c));
        }
        cx.each("all", &self.all, |c, m| m.validate(c));
        cx.each("any", &self.any, |c, m| m.validate(c));
        if let Some(n) = &self.not {
            cx.field("not", |c| n.validate(c));
        }
    }
}

impl Validate for StatusRange {
    fn validate(&self, cx: &mut Checker) {
        let mut ok = true;
        for (field, v) in [("min", self.min), ("max", self.max)] {
            if let Some(v) = v
                && !(100..=599).contains(&v)
            {
                cx.error_at(field, format!("status {v} is outside 100..599"));
                ok = false;
            }
        }
        match (self.min, self.max) {
            (None, None) => cx.error("status range is empty; set min and max"),
            (Some(a), Some(b)) if ok && a > b => cx.error(format!(
                "min {a} is greater than max {b}; the range matches nothing"
            )),
            _ => {}
        }
    }
}

impl Validate for RetryBudget {
    fn validate(&self, cx: &mut Checker) {
        let ttl = self.ttl.get();
        if !(StdDuration::from_secs(1)..=StdDuration::from_secs(60)).contains(&ttl) {
            cx.warn_at(
                "ttl",
                format!(
                    "ttl {} is outside 1s..60s; the budget is invalid, so this profile's routes are never retried",
                    self.ttl
                ),
            );
        }
        if !(0.0..=1000.0).contains(&self.retry_ratio) {
            cx.warn_at(
                "retryRatio",
                format!("retryRatio {} is outside 0..1000; the budget is invalid, so this profile's routes are never retried", self.retry_ratio),
            );
        }
        if self.min_retries_per_second >= MAX_MIN_RETRIES {
            cx.warn_at(
                "minRetriesPerSecond",
                format!(
                    "minRetriesPerSecond {} must be less than 2147483647; the budget is invalid, so this profile's routes are never retried",
                    self.min_retries_per_second
                ),
            );
        }
    }
}

/// Checks a ServiceProfile's name against SPEC 13.1: it must be the FQDN of
/// the service, `<svc>.<ns>.svc.<cluster-domain>`, in the namespace the
/// profile lives in. Both findings are warnings (the profile loads, but
/// applies to no client). `cx` is positioned at `metadata.name`; the loader
/// calls this because `Validate` only sees the spec.
pub fn check_name(cx: &mut Checker, name: &str, namespace: &str) {
    let parts: Vec<&str> = name.split('.').collect();
    let fqdn = parts.len() >= 4 && parts[2] == "svc" && parts.iter().all(|p| !p.is_empty());
    if !fqdn {
        cx.warn(format!(
            "name {name:?} is not a service FQDN <svc>.<ns>.svc.<cluster-domain> (e.g. web.{namespace}.svc.cluster.local); the profile applies to no service"
        ));
    } else if parts[1] != namespace {
        cx.warn(format!(
            "name {name:?} names namespace {:?} but the profile is in {namespace:?}; Linkerd only reads profiles from the service's namespace (or the client's)",
            parts[1]
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        let q = |s: &str| Quantity(s.to_owned()).millis();
        assert_eq!(q("1"), Some(1000));
        assert_eq!(q("500m"), Some(500));
        assert_eq!(q("0.5"), Some(500));
        assert_eq!(q("10k"), Some(10_000_000));
        assert_eq!(q("x"), None);
        assert_eq!(q("-1"), None);
        assert_eq!(q("1Q"), None);
    }

    #[test]
    fn names() {
        use crate::path::PathSeg;
        let run = |name: &str, ns: &str| {
            let mut cx = Checker::new(&[PathSeg::Field("metadata".into())]);
            check_name(&mut cx, name, ns);
            cx.into_findings().len()
        };
        assert_eq!(run("api.production.svc.cluster.local", "production"), 0);
        assert_eq!(run("api.production.svc.cluster.local", "default"), 1);
        assert_eq!(run("api", "default"), 1);
    }

    #[test]
    fn default_budget_is_valid() {
        assert!(RetryBudget::default().is_valid());
    }
}
