//! Istio Telemetry (`telemetry.istio.io` v1alpha1 and v1, SPEC 10.1):
//! tracing, metrics and access logging settings, spelled as istio/api
//! spells them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::schema::common::{Duration, Percent, WorkloadSelector};
use crate::schema::istio_security::{PolicyTargetReference, check_attachment};
use crate::validate::{Checker, Validate, checks};

/// Telemetry settings for the selected workloads, a namespace or the mesh.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Telemetry {
    /// Workloads the settings apply to; absent means the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// A single resource the settings attach to (gateways, waypoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// Resources the settings attach to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// Tracing settings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tracing: Vec<Tracing>,
    /// Metrics settings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metrics>,
    /// Access logging settings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_logging: Vec<AccessLogging>,
}

/// Which side of the traffic a setting applies to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkloadMode {
    /// Both client (outbound) and server (inbound) traffic.
    #[default]
    ClientAndServer,
    /// Client (outbound) traffic only.
    Client,
    /// Server (inbound) traffic only.
    Server,
}

/// Selects client and/or server traffic.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModeSelector {
    /// The traffic side; CLIENT_AND_SERVER when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<WorkloadMode>,
}

/// Names a provider from meshConfig.extensionProviders (or a built-in one
/// such as `envoy` or `prometheus`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderRef {
    /// The provider's name.
    #[serde(default)]
    pub name: String,
}

fn providers(cx: &mut Checker, items: &[ProviderRef]) {
    cx.each("providers", items, |c, p| {
        if p.name.is_empty() {
            c.error("a provider needs a name (an extension provider in meshConfig, or `envoy` / `prometheus`)");
        }
    });
}

// ---------------------------------------------------------------------------
// Tracing
// ---------------------------------------------------------------------------

/// Tracing settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tracing {
    /// Which traffic the settings apply to.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<ModeSelector>,
    /// Tracing providers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderRef>,
    /// Percentage of requests sampled (0..100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random_sampling_percentage: Option<Percent>,
    /// Do not report spans (context is still propagated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_span_reporting: Option<bool>,
    /// Extra tags added to spans.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_tags: BTreeMap<String, CustomTag>,
    /// Base the sampling decision on the request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_request_id_for_trace_sampling: Option<bool>,
    /// Add Istio's own tags to spans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_istio_tags: Option<bool>,
    /// Do not propagate trace context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_context_propagation: Option<bool>,
}

/// Where a custom tag's value comes from: exactly one of the fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomTag {
    /// A fixed value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub literal: Option<LiteralTag>,
    /// An environment variable of the proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<EnvironmentTag>,
    /// A request header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderTag>,
    /// An access-log style formatter expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formatter: Option<FormatterTag>,
}

/// A fixed tag value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LiteralTag {
    /// The value.
    #[serde(default)]
    pub value: String,
}

/// A tag taken from an environment variable.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvironmentTag {
    /// The variable.
    #[serde(default)]
    pub name: String,
    /// Used when the variable is unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_value: Option<String>,
}

/// A tag taken from a request header.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderTag {
    /// The header.
    #[serde(default)]
    pub name: String,
    /// Used when the header is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_value: Option<String>,
}

/// A tag computed by a formatter expression.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FormatterTag {
    /// The expression (`%REQ(host)%`).
    #[serde(default)]
    pub value: String,
}

impl Validate for CustomTag {
    fn validate(&self, cx: &mut Checker) {
        let set = [
            self.literal.is_some(),
            self.environment.is_some(),
            self.header.is_some(),
            self.formatter.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        match set {
            0 => cx.error("a custom tag needs one of literal, environment, header or formatter"),
            1 => {}
            _ => {
                cx.error("a custom tag takes only one of literal, environment, header or formatter")
            }
        }
        if let Some(l) = &self.literal
            && l.value.is_empty()
        {
            cx.error_at("literal", "literal.value is required");
        }
        if let Some(e) = &self.environment
            && e.name.is_empty()
        {
            cx.error_at("environment", "environment.name is required");
        }
        if let Some(h) = &self.header
            && h.name.is_empty()
        {
            cx.error_at("header", "header.name is required");
        }
        if let Some(f) = &self.formatter
            && f.value.is_empty()
        {
            cx.error_at("formatter", "formatter.value is required");
        }
    }
}

impl Validate for Tracing {
    fn validate(&self, cx: &mut Checker) {
        providers(cx, &self.providers);
        if let Some(p) = self.random_sampling_percentage {
            cx.field("randomSamplingPercentage", |c| checks::percent(c, p));
        }
        cx.field("customTags", |c| {
            for (name, tag) in &self.custom_tags {
                c.field(name, |c| {
                    if name.is_empty() {
                        c.error("a custom tag needs a name");
                    }
                    tag.validate(c);
                });
            }
        });
    }
}

// ---------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------

/// Metrics settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metrics {
    /// Metrics providers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderRef>,
    /// Changes to the standard metrics, applied in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<MetricsOverrides>,
    /// How often TCP metrics are reported (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporting_interval: Option<Duration>,
}

/// One change to a set of metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsOverrides {
    /// The metrics it applies to; all when absent.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<MetricSelector>,
    /// Turn the metrics off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// Labels to add, change or remove.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tag_overrides: BTreeMap<String, TagOverride>,
}

/// Selects metrics by name and traffic side.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricSelector {
    /// A standard Istio metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<IstioMetric>,
    /// A custom metric name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_metric: Option<String>,
    /// The traffic side; CLIENT_AND_SERVER when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<WorkloadMode>,
}

/// The standard Istio metrics (SPEC 10.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IstioMetric {
    /// Every metric.
    AllMetrics,
    /// `istio_requests_total`.
    RequestCount,
    /// `istio_request_duration_milliseconds`.
    RequestDuration,
    /// `istio_request_bytes`.
    RequestSize,
    /// `istio_response_bytes`.
    ResponseSize,
    /// `istio_tcp_connections_opened_total`.
    TcpOpenedConnections,
    /// `istio_tcp_connections_closed_total`.
    TcpClosedConnections,
    /// `istio_tcp_sent_bytes_total`.
    TcpSentBytes,
    /// `istio_tcp_received_bytes_total`.
    TcpReceivedBytes,
    /// `istio_request_messages_total`.
    GrpcRequestMessages,
    /// `istio_response_messages_total`.
    GrpcResponseMessages,
}

/// A change to one metric label.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TagOverride {
    /// UPSERT (default) or REMOVE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<TagOperation>,
    /// The CEL expression giving the label's value (UPSERT only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// What a tag override does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TagOperation {
    /// Add the label or replace its value.
    #[default]
    Upsert,
    /// Remove the label.
    Remove,
}

impl Validate for MetricsOverrides {
    fn validate(&self, cx: &mut Checker) {
        if let Some(m) = &self.match_ {
            cx.field("match", |c| {
                if m.metric.is_some() && m.custom_metric.is_some() {
                    c.error_at(
                        "customMetric",
                        "metric and customMetric cannot both be set; use one",
                    );
                }
                if let Some(cm) = &m.custom_metric
                    && cm.is_empty()
                {
                    c.error_at("customMetric", "customMetric must not be empty");
                }
            });
        }
        cx.field("tagOverrides", |c| {
            for (label, o) in &self.tag_overrides {
                c.field(label, |c| {
                    if label.is_empty() {
                        c.error("a tag override needs a label name");
                    }
                    match (o.operation, &o.value) {
                        (Some(TagOperation::Remove), Some(_)) => {
                            c.error_at("value", "value must not be set when operation is REMOVE")
                        }
                        (Some(TagOperation::Upsert), None) => {
                            c.error("value is required when operation is UPSERT")
                        }
                        (None | Some(TagOperation::Upsert), Some(v)) if v.trim().is_empty() => {
                            c.error_at("value", "value must not be empty (it is a CEL expression)")
                        }
                        _ => {}
                    }
                });
            }
        });
    }
}

impl Validate for Metrics {
    fn validate(&self, cx: &mut Checker) {
        providers(cx, &self.providers);
        cx.each("overrides", &self.overrides, |c, o| o.validate(c));
        if let Some(d) = self.reporting_interval
            && d.is_zero()
        {
            cx.error_at(
                "reportingInterval",
                "reportingInterval must be greater than 0s",
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Access logging
// ---------------------------------------------------------------------------

/// Access logging settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogging {
    /// Which traffic the settings apply to.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<ModeSelector>,
    /// Access log providers (`envoy` is stdout text).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderRef>,
    /// Turn access logging off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// Only log requests the filter accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<AccessLogFilter>,
}

/// A CEL filter over request attributes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogFilter {
    /// The expression (`response.code >= 400`).
    #[serde(default)]
    pub expression: String,
}

impl Validate for AccessLogging {
    fn validate(&self, cx: &mut Checker) {
        providers(cx, &self.providers);
        if let Some(f) = &self.filter
            && f.expression.trim().is_empty()
        {
            cx.field("filter", |c| {
                c.error_at(
                    "expression",
                    "expression must not be empty (a CEL expression such as `response.code >= 400`)",
                )
            });
        }
    }
}

impl Validate for Telemetry {
    fn validate(&self, cx: &mut Checker) {
        check_attachment(
            cx,
            self.selector.as_ref(),
            self.target_ref.as_ref(),
            &self.target_refs,
        );
        cx.each("tracing", &self.tracing, |c, t| t.validate(c));
        cx.each("metrics", &self.metrics, |c, m| m.validate(c));
        cx.each("accessLogging", &self.access_logging, |c, a| a.validate(c));
    }
}
