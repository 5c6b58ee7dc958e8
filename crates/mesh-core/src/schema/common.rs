//! Types shared by every API group: object metadata, durations, percentages,
//! int-or-string ports, label selectors.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration as StdDuration;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// Kubernetes object metadata. Fields that `kubectl get -o yaml` adds
/// (`uid`, `resourceVersion`, `managedFields`, ...) are accepted and ignored,
/// so exported objects load as they are.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// The object's name.
    #[serde(default)]
    pub name: String,
    /// Its namespace; the loader fills in the default namespace when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339 creation time; decides which of two conflicting resources wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    /// Accepted for `kubectl get -o yaml` output; not used.
    #[serde(default, skip_serializing)]
    pub generate_name: Option<String>,
    /// Accepted for `kubectl get -o yaml` output; not used.
    #[serde(default, skip_serializing)]
    pub uid: Option<String>,
    /// Accepted for `kubectl get -o yaml` output; not used.
    #[serde(default, skip_serializing)]
    pub resource_version: Option<String>,
    /// Accepted for `kubectl get -o yaml` output; not used.
    #[serde(default, skip_serializing)]
    pub generation: Option<i64>,
    /// Accepted for `kubectl get -o yaml` output; not used.
    #[serde(default, skip_serializing)]
    pub self_link: Option<String>,
    /// Accepted for `kubectl get -o yaml` output; not used.
    #[serde(default, skip_serializing)]
    pub managed_fields: Option<serde_json::Value>,
    /// Accepted for `kubectl get -o yaml` output; not used.
    #[serde(default, skip_serializing)]
    pub owner_references: Option<serde_json::Value>,
    /// Accepted for `kubectl get -o yaml` output; not used.
    #[serde(default, skip_serializing)]
    pub finalizers: Option<Vec<String>>,
    /// Accepted for `kubectl get -o yaml` output; not used.
    #[serde(default, skip_serializing)]
    pub deletion_timestamp: Option<String>,
}

/// A duration written as Go and the Kubernetes APIs write it: one or more
/// decimal numbers with a unit (`30s`, `1m`, `500ms`, `1.5s`, `1h30m`).
/// Units: `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h`. Negative durations do
/// not exist in any mesh field, so they are refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub StdDuration);

impl Duration {
    /// The standard-library duration.
    pub fn get(self) -> StdDuration {
        self.0
    }

    /// Whether it is zero (`0s`), which several APIs read as "disabled".
    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

/// Why a duration string did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {text:?}: {reason} (write it like 30s, 1m, 500ms or 1.5s)")]
pub struct DurationError {
    text: String,
    reason: &'static str,
}

impl std::str::FromStr for Duration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |reason| DurationError {
            text: text.to_owned(),
            reason,
        };
        let s = text.trim();
        if s.is_empty() {
            return Err(err("it is empty"));
        }
        if s.starts_with('-') {
            return Err(err("durations cannot be negative"));
        }
        let s = s.strip_prefix('+').unwrap_or(s);
        if s == "0" {
            return Ok(Duration(StdDuration::ZERO));
        }
        let mut rest = s;
        let mut total_nanos: u128 = 0;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            if num_len == 0 {
                return Err(err("expected a number"));
            }
            let (num, after) = rest.split_at(num_len);
            let unit_len = after
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(after.len());
            let (unit, after) = after.split_at(unit_len);
            let unit_nanos: u128 = match unit {
                "ns" => 1,
                "us" | "µs" | "μs" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                "" => return Err(err("a unit is missing")),
                _ => return Err(err("unknown unit")),
            };
            let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
            if (whole.is_empty() && frac.is_empty()) || frac.contains('.') {
                return Err(err("expected a number"));
            }
            let whole: u128 = if whole.is_empty() {
                0
            } else {
                whole.parse().map_err(|_| err("number too large"))?
            };
            let mut frac_nanos: u128 = 0;
            let mut scale = unit_nanos;
            for d in frac.bytes() {
                scale /= 10;
                frac_nanos += u128::from(d - b'0') * scale;
            }
            total_nanos = whole
                .checked_mul(unit_nanos)
                .and_then(|w| w.checked_add(frac_nanos))
                .and_then(|v| v.checked_add(total_nanos))
                .ok_or_else(|| err("too large"))?;
            rest = after;
        }
        let secs = u64::try_from(total_nanos / 1_000_000_000).map_err(|_| err("too large"))?;
        let nanos = u32::try_from(total_nanos % 1_000_000_000).unwrap_or(0);
        Ok(Duration(StdDuration::new(secs, nanos)))
    }
}

impl fmt::Display for Duration {
    /// Prints the shortest exact form: `30s`, `1m30s`, `1.5s`, `500ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.is_zero() {
            return f.write_str("0s");
        }
        let nanos = d.subsec_nanos();
        let secs = d.as_secs();
        if secs == 0 {
            return if nanos.is_multiple_of(1_000_000) {
                write!(f, "{}ms", nanos / 1_000_000)
            } else if nanos.is_multiple_of(1_000) {
                write!(f, "{}us", nanos / 1_000)
            } else {
                write!(f, "{nanos}ns")
            };
        }
        let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        if s > 0 || nanos > 0 {
            if nanos == 0 {
                write!(f, "{s}s")?;
            } else {
                let frac = format!("{nanos:09}");
                write!(f, "{s}.{}s", frac.trim_end_matches('0'))?;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 30s, 1m, 500ms or 1.5s")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                if v == 0 {
                    Ok(Duration(StdDuration::ZERO))
                } else {
                    Err(E::custom(format!(
                        "invalid duration `{v}`: a unit is missing (write {v}s or {v}ms)"
                    )))
                }
            }
        }
        d.deserialize_str(V)
    }
}

/// A percentage, 0 to 100 inclusive, possibly fractional (`0.1`). Range is
/// checked by validation so the error can name the field.
#[derive(Clone, Copy, Debug, Default, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Percent(pub f64);

impl Percent {
    /// The value as a fraction in 0..=1.
    pub fn fraction(self) -> f64 {
        self.0 / 100.0
    }

    /// Whether it lies within 0..=100.
    pub fn in_range(self) -> bool {
        (0.0..=100.0).contains(&self.0)
    }
}

/// A port given by number or by name (`port: 8080` or `port: http`), as
/// Kubernetes' IntOrString allows.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PortRef {
    /// A port number.
    Number(u32),
    /// A named port.
    Name(String),
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(n) => f.write_str(n),
        }
    }
}

impl Serialize for PortRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PortRef::Number(n) => s.serialize_u32(*n),
            PortRef::Name(n) => s.serialize_str(n),
        }
    }
}

impl<'de> Deserialize<'de> for PortRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = PortRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number or a port name")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortRef, E> {
                u32::try_from(v)
                    .map(PortRef::Number)
                    .map_err(|_| E::custom(format!("port {v} is out of range")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortRef, E> {
                Err(E::custom(format!("port {v} is out of range")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortRef, E> {
                // A quoted number is still a number to Kubernetes' IntOrString
                // only when it parses; "8080" is read as the port 8080.
                match v.parse::<u32>() {
                    Ok(n) => Ok(PortRef::Number(n)),
                    Err(_) => Ok(PortRef::Name(v.to_owned())),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A Kubernetes label selector.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// Labels that must all be present with these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements, all of which must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

impl LabelSelector {
    /// Whether a workload with `labels` is selected. An empty selector
    /// selects everything.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| e.matches(labels))
    }
}

/// One set-based label requirement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    /// The label key.
    pub key: String,
    /// How the key relates to the values.
    pub operator: LabelSelectorOperator,
    /// The values (empty for Exists / DoesNotExist).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

impl LabelSelectorRequirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            LabelSelectorOperator::In => value.is_some_and(|v| self.values.contains(v)),
            LabelSelectorOperator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            LabelSelectorOperator::Exists => value.is_some(),
            LabelSelectorOperator::DoesNotExist => value.is_none(),
        }
    }
}

/// Label selector operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LabelSelectorOperator {
    /// The label's value is one of the values.
    In,
    /// The label is absent or its value is none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

/// Istio's workload selector: `matchLabels` only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    /// Labels that must all be present with these values.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

impl WorkloadSelector {
    /// Whether a workload with `labels` is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> StdDuration {
        text.parse::<Duration>().unwrap().0
    }

    #[test]
    fn durations_parse_as_go_writes_them() {
        assert_eq!(d("30s"), StdDuration::from_secs(30));
        assert_eq!(d("1m"), StdDuration::from_secs(60));
        assert_eq!(d("500ms"), StdDuration::from_millis(500));
        assert_eq!(d("1.5s"), StdDuration::from_millis(1500));
        assert_eq!(d("1h30m"), StdDuration::from_secs(5400));
        assert_eq!(d(".5s"), StdDuration::from_millis(500));
        assert_eq!(d("0"), StdDuration::ZERO);
        assert_eq!(d("250us"), StdDuration::from_micros(250));
    }

    #[test]
    fn bad_durations_say_why() {
        for (text, why) in [
            ("30", "a unit is missing"),
            ("5 s", "unknown unit"),
            ("s", "expected a number"),
            ("-1s", "cannot be negative"),
            ("1.2.3s", "expected a number"),
            ("10y", "unknown unit"),
            ("", "empty"),
        ] {
            let e = text.parse::<Duration>().unwrap_err().to_string();
            assert!(e.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn durations_print_back_to_the_same_value() {
        for text in [
            "30s", "1m", "500ms", "1.5s", "1h30m", "90s", "1h0m1s", "2.25s", "7ns",
        ] {
            let parsed: Duration = text.parse().unwrap();
            let again: Duration = parsed.to_string().parse().unwrap();
            assert_eq!(parsed, again, "{text} printed as {parsed}");
        }
        assert_eq!(d("90s"), d(&Duration(d("90s")).to_string()));
        assert_eq!(Duration(d("90s")).to_string(), "1m30s");
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let labels: BTreeMap<String, String> =
            [("app".to_owned(), "api".to_owned())].into_iter().collect();
        let sel = LabelSelector {
            match_labels: labels.clone(),
            match_expressions: vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: LabelSelectorOperator::DoesNotExist,
                values: vec![],
            }],
        };
        assert!(sel.matches(&labels));
        let mut other = labels.clone();
        other.insert("tier".into(), "x".into());
        assert!(!sel.matches(&other));
    }
}
