//! IstioOperator (`install.istio.io/v1alpha1`).
//!
//! Only `meshConfig` matters to a sidecar: it is typed (MeshConfig and its
//! ProxyConfig `defaultConfig`, spelled as istio/api's mesh/v1alpha1 spells
//! them) and unknown fields in it are errors. The install-only settings
//! (`profile`, `hub`, `components`, `values`, ...) are accepted and each one
//! that is set gets a warning saying it is ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::schema::common::Duration;
use crate::validate::{Checker, Validate, checks};

/// The IstioOperator spec.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IstioOperator {
    /// Install-only: the base profile (`default`, `demo`, `minimal`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Install-only: where the charts and profiles are read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_package_path: Option<String>,
    /// Install-only: the image registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<String>,
    /// Install-only: the image tag (a string or a number such as `1.22`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<serde_json::Value>,
    /// Install-only (deprecated): suffix of the installed resources' names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_suffix: Option<String>,
    /// Install-only: the control plane's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Install-only: the control plane revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Install-only: emulate an older Istio's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compatibility_version: Option<String>,
    /// Mesh-wide settings; the part a sidecar applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_config: Option<MeshConfig>,
    /// Install-only: per-component Kubernetes settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub components: Option<serde_json::Value>,
    /// Install-only (deprecated): add-on components.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addon_components: Option<serde_json::Value>,
    /// Install-only: Helm values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<serde_json::Value>,
    /// Install-only: Helm values passed without validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unvalidated_values: Option<serde_json::Value>,
}

impl IstioOperator {
    /// The install-only fields that are set, by YAML name.
    pub fn install_only_fields(&self) -> Vec<&'static str> {
        let set = [
            ("profile", self.profile.is_some()),
            ("installPackagePath", self.install_package_path.is_some()),
            ("hub", self.hub.is_some()),
            ("tag", self.tag.is_some()),
            ("resourceSuffix", self.resource_suffix.is_some()),
            ("namespace", self.namespace.is_some()),
            ("revision", self.revision.is_some()),
            ("compatibilityVersion", self.compatibility_version.is_some()),
            ("components", self.components.is_some()),
            ("addonComponents", self.addon_components.is_some()),
            ("values", self.values.is_some()),
            ("unvalidatedValues", self.unvalidated_values.is_some()),
        ];
        set.iter().filter(|(_, s)| *s).map(|(n, _)| *n).collect()
    }
}

impl Validate for IstioOperator {
    fn validate(&self, cx: &mut Checker) {
        for name in self.install_only_fields() {
            cx.field(name, |c| {
                c.warn("install-only setting; not applicable to a sidecar (ignored)")
            });
        }
        if let Some(m) = &self.mesh_config {
            cx.field("meshConfig", |c| m.validate(c));
        }
    }
}

// ---------------------------------------------------------------------------
// MeshConfig
// ---------------------------------------------------------------------------

/// Mesh-wide settings (istio.mesh.v1alpha1.MeshConfig).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshConfig {
    /// Outbound capture port (15001).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_listen_port: Option<u32>,
    /// Inbound capture port (15006).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_inbound_listen_port: Option<u32>,
    /// HTTP PROXY port, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_http_port: Option<u32>,
    /// Upstream connect timeout (default 10s, at least 1ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Duration>,
    /// Idle timeout of HBONE connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hbone_idle_timeout: Option<Duration>,
    /// Protocol sniffing timeout (0s disables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_detection_timeout: Option<Duration>,
    /// TCP keepalive settings for upstream connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// Ingress class handled by the Istio ingress controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_class: Option<String>,
    /// Service of the Istio ingress controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_service: Option<String>,
    /// Which Ingress resources the controller handles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_controller_mode: Option<IngressControllerMode>,
    /// Gateway selector used for Ingress resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_selector: Option<String>,
    /// Generate trace spans and request ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_tracing: Option<bool>,
    /// Access log file (`/dev/stdout`); empty disables access logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log_file: Option<String>,
    /// Access log format; empty means the default format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log_format: Option<String>,
    /// Access log encoding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log_encoding: Option<AccessLogEncoding>,
    /// Enable Envoy's gRPC access log service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_envoy_access_log_service: Option<bool>,
    /// Disable Envoy listener logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_envoy_listener_log: Option<bool>,
    /// Default proxy settings for sidecars and gateways.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_config: Option<ProxyConfig>,
    /// What happens to traffic to unknown destinations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
    /// Where inbound traffic is delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_traffic_policy: Option<InboundTrafficPolicy>,
    /// Configuration sources (MCP servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_sources: Option<serde_json::Value>,
    /// Use mTLS automatically to mesh peers (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_auto_mtls: Option<bool>,
    /// The mesh's trust domain (`cluster.local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_domain: Option<String>,
    /// Other trust domains treated as this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust_domain_aliases: Vec<String>,
    /// Extra root certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<serde_json::Value>,
    /// Default `exportTo` of services.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_service_export_to: Vec<String>,
    /// Default `exportTo` of VirtualServices.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_virtual_service_export_to: Vec<String>,
    /// Default `exportTo` of DestinationRules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_destination_rule_export_to: Vec<String>,
    /// The root namespace (`istio-system`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_namespace: Option<String>,
    /// Locality load balancing settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_lb_setting: Option<serde_json::Value>,
    /// Zone-aware load balancing settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_aware_lb_setting: Option<serde_json::Value>,
    /// DNS refresh rate of STRICT_DNS clusters (default 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_refresh_rate: Option<Duration>,
    /// Upgrade HTTP/1.1 upstream connections to HTTP/2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h2_upgrade_policy: Option<H2UpgradePolicy>,
    /// Stat name pattern of inbound clusters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_cluster_stat_name: Option<String>,
    /// Stat name pattern of outbound clusters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_cluster_stat_name: Option<String>,
    /// Deprecated: DNS certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates: Option<serde_json::Value>,
    /// Per-host service settings (cluster-local).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_settings: Option<serde_json::Value>,
    /// Service scope configuration (ambient).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_scope_configs: Option<serde_json::Value>,
    /// Merge application metrics into the proxy's Prometheus endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_prometheus_merge: Option<bool>,
    /// Deprecated: verify server certificates at the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_certificate_at_client: Option<bool>,
    /// The certificate authority's address and settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<serde_json::Value>,
    /// Extension providers (tracing, metrics, logging, ext_authz).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_providers: Option<serde_json::Value>,
    /// Providers used when Telemetry names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_providers: Option<DefaultProviders>,
    /// Namespaces istiod watches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery_selectors: Option<serde_json::Value>,
    /// How request paths are normalized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_normalization: Option<PathNormalization>,
    /// Retry policy of routes that set none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_http_retry_policy: Option<DefaultHttpRetryPolicy>,
    /// Default TLS settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_defaults: Option<TlsDefaults>,
    /// Mesh-wide mTLS settings.
    #[serde(rename = "meshMTLS", default, skip_serializing_if = "Option::is_none")]
    pub mesh_mtls: Option<TlsDefaults>,
    /// Traffic policy applied when no DestinationRule sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_traffic_policy: Option<serde_json::Value>,
    /// ServiceEntry visibility defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_entry_visibility: Option<serde_json::Value>,
}

/// TCP keepalive settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpKeepalive {
    /// Probes sent before the connection is considered dead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<u32>,
    /// Idle time before the first probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Duration>,
    /// Interval between probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
}

/// Ingress controller modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IngressControllerMode {
    /// Unspecified.
    Unspecified,
    /// Off.
    Off,
    /// Handle unannotated Ingresses and those of the class.
    Default,
    /// Handle only Ingresses of the class.
    Strict,
}

/// Access log encodings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AccessLogEncoding {
    /// Text lines.
    #[default]
    Text,
    /// JSON objects.
    Json,
}

/// Outbound traffic policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundTrafficPolicy {
    /// ALLOW_ANY (default) or REGISTRY_ONLY.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<OutboundMode>,
    /// Egress TLS settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<serde_json::Value>,
}

/// Outbound traffic modes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundMode {
    /// Only destinations in the registry (services, ServiceEntries).
    RegistryOnly,
    /// Unknown destinations are passed through.
    #[default]
    AllowAny,
}

/// Inbound traffic policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InboundTrafficPolicy {
    /// PASSTHROUGH (default) or LOCALHOST.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<InboundMode>,
}

/// Inbound traffic modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InboundMode {
    /// Deliver to the pod IP.
    Passthrough,
    /// Deliver to localhost.
    Localhost,
}

/// HTTP/2 upgrade policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum H2UpgradePolicy {
    /// Keep HTTP/1.1.
    DoNotUpgrade,
    /// Upgrade to HTTP/2.
    Upgrade,
}

/// Default telemetry providers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DefaultProviders {
    /// Tracing providers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tracing: Vec<String>,
    /// Metrics providers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<String>,
    /// Access logging providers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_logging: Vec<String>,
}

/// Path normalization.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathNormalization {
    /// The normalization applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalization: Option<NormalizationType>,
}

/// Path normalization types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NormalizationType {
    /// Istio's default (BASE).
    Default,
    /// No normalization.
    None,
    /// RFC 3986 normalization.
    Base,
    /// BASE plus merging of slashes.
    MergeSlashes,
    /// MERGE_SLASHES plus decoding of escaped slashes.
    DecodeAndMergeSlashes,
}

/// The default HTTP retry policy (an Istio HTTPRetry).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DefaultHttpRetryPolicy {
    /// Retries allowed (0 disables retries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i64>,
    /// Timeout of each attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<Duration>,
    /// Retry conditions (comma-separated Envoy retryOn tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<String>,
    /// Retry in other localities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_remote_localities: Option<bool>,
    /// Avoid hosts tried before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_ignore_previous_hosts: Option<bool>,
    /// Base backoff interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Duration>,
}

/// TLS defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsDefaults {
    /// Minimum TLS version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_protocol_version: Option<TlsProtocol>,
    /// ECDH curves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ecdh_curves: Vec<String>,
    /// Cipher suites.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
}

/// TLS versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TlsProtocol {
    /// The proxy's default.
    #[serde(rename = "TLS_AUTO")]
    TlsAuto,
    /// TLS 1.2.
    #[serde(rename = "TLSV1_2")]
    TlsV1_2,
    /// TLS 1.3.
    #[serde(rename = "TLSV1_3")]
    TlsV1_3,
}

impl Validate for MeshConfig {
    fn validate(&self, cx: &mut Checker) {
        for (name, port) in [
            ("proxyListenPort", self.proxy_listen_port),
            ("proxyInboundListenPort", self.proxy_inbound_listen_port),
            ("proxyHttpPort", self.proxy_http_port),
        ] {
            if let Some(p) = port
                && p != 0
            {
                cx.field(name, |c| checks::port_number(c, p));
            }
        }
        if let Some(t) = self.connect_timeout
            && t.get() < std::time::Duration::from_millis(1)
        {
            cx.error_at("connectTimeout", "connectTimeout must be at least 1ms");
        }
        if let Some(ns) = &self.root_namespace {
            cx.field("rootNamespace", |c| {
                checks::dns1123_subdomain(c, "namespace", ns)
            });
        }
        if let Some(td) = &self.trust_domain
            && td.is_empty()
        {
            cx.error_at("trustDomain", "trustDomain must not be empty when set");
        }
        if let Some(r) = &self.default_http_retry_policy {
            cx.field("defaultHttpRetryPolicy", |c| {
                if let Some(a) = r.attempts
                    && a < 0
                {
                    c.error_at("attempts", format!("attempts {a} must not be negative"));
                }
                if let Some(t) = r.per_try_timeout
                    && t.is_zero()
                {
                    c.error_at("perTryTimeout", "perTryTimeout must be greater than 0s");
                }
            });
        }
        if let Some(p) = &self.default_config {
            cx.field("defaultConfig", |c| p.validate(c));
        }
    }
}

// ---------------------------------------------------------------------------
// ProxyConfig (meshConfig.defaultConfig)
// ---------------------------------------------------------------------------

/// Proxy settings (istio.mesh.v1alpha1.ProxyConfig).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyConfig {
    /// Where generated proxy configuration is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_path: Option<String>,
    /// Path of the proxy binary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_path: Option<String>,
    /// Service cluster name used in traces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_cluster: Option<String>,
    /// How the tracing service name is derived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing_service_name: Option<TracingServiceName>,
    /// How long to drain connections on shutdown or hot restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_duration: Option<Duration>,
    /// Address of the discovery service (istiod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery_address: Option<String>,
    /// Deprecated: discovery polling interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery_refresh_delay: Option<Duration>,
    /// Deprecated: Zipkin collector address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zipkin_address: Option<String>,
    /// Statsd UDP sink address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statsd_udp_address: Option<String>,
    /// Deprecated: Envoy metrics service address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_metrics_service_address: Option<String>,
    /// Admin port of the proxy (15000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_admin_port: Option<u32>,
    /// Deprecated: availability zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    /// Authentication to the control plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_auth_policy: Option<AuthenticationPolicy>,
    /// Custom bootstrap configuration file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_config_file: Option<String>,
    /// Maximum length of stat names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stat_name_length: Option<u32>,
    /// Worker threads (0 = one per core).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<i64>,
    /// Bootstrap template path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_bootstrap_template_path: Option<String>,
    /// Inbound interception mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interception_mode: Option<InterceptionMode>,
    /// Tracing settings of the proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<ProxyTracing>,
    /// Deprecated: SDS settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sds: Option<serde_json::Value>,
    /// Envoy access log service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_access_log_service: Option<serde_json::Value>,
    /// Envoy metrics service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_metrics_service: Option<serde_json::Value>,
    /// Environment-like metadata passed to the proxy.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub proxy_metadata: BTreeMap<String, String>,
    /// Runtime flags of the proxy.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub runtime_values: BTreeMap<String, String>,
    /// Status (health) port (15020).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_port: Option<u32>,
    /// Extra labels of the standard metrics.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_stat_tags: Vec<String>,
    /// Network topology of gateways.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_topology: Option<GatewayTopology>,
    /// How long the proxy drains after SIGTERM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_drain_duration: Option<Duration>,
    /// The mesh id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_id: Option<String>,
    /// Readiness probe of the proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<serde_json::Value>,
    /// Extra proxy stats to report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_stats_matcher: Option<ProxyStatsMatcher>,
    /// Start the application only once the proxy is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_application_until_proxy_starts: Option<bool>,
    /// Extra CA certificates (PEM) trusted by the proxy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ca_certificates_pem: Vec<String>,
    /// Proxy image settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<serde_json::Value>,
    /// Private key provider (CryptoMB, QAT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_provider: Option<serde_json::Value>,
    /// Headers the proxy adds or strips.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_headers: Option<serde_json::Value>,
    /// Access log file flush interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_flush_interval: Option<Duration>,
    /// Access log file flush buffer size, in KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_flush_min_size_kb: Option<u32>,
    /// Compress the stats endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats_compression: Option<bool>,
    /// Connection settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_settings: Option<serde_json::Value>,
}

/// How the tracing service name is derived.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TracingServiceName {
    /// `app` label and namespace.
    AppLabelAndNamespace,
    /// Canonical name only.
    CanonicalNameOnly,
    /// Canonical name and namespace.
    CanonicalNameAndNamespace,
}

/// Control plane authentication.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthenticationPolicy {
    /// No authentication.
    None,
    /// Mutual TLS.
    MutualTls,
    /// Inherit.
    Inherit,
}

/// Inbound interception modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InterceptionMode {
    /// iptables REDIRECT.
    Redirect,
    /// iptables TPROXY.
    Tproxy,
    /// No interception.
    None,
}

/// Gateway network topology.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayTopology {
    /// Trusted proxies in front of the gateway (for X-Forwarded-For).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_trusted_proxies: Option<u32>,
    /// XFCC handling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_client_cert_details: Option<ForwardClientCertDetails>,
    /// Expect the PROXY protocol (an empty object enables it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<serde_json::Value>,
}

/// X-Forwarded-Client-Cert handling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ForwardClientCertDetails {
    /// Unset.
    Undefined,
    /// Remove the header.
    Sanitize,
    /// Forward the header as received.
    ForwardOnly,
    /// Append the client certificate.
    AppendForward,
    /// Replace with the client certificate.
    SanitizeSet,
    /// Always forward as received.
    AlwaysForwardOnly,
}

/// Extra proxy stats to report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyStatsMatcher {
    /// Stat name prefixes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inclusion_prefixes: Vec<String>,
    /// Stat name suffixes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inclusion_suffixes: Vec<String>,
    /// Stat name regexes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inclusion_regexps: Vec<String>,
}

/// Tracing settings of the proxy (ProxyConfig.tracing).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyTracing {
    /// Zipkin tracer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zipkin: Option<TracerAddress>,
    /// Lightstep tracer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lightstep: Option<LightstepTracer>,
    /// Datadog tracer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datadog: Option<TracerAddress>,
    /// Stackdriver tracer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stackdriver: Option<serde_json::Value>,
    /// OpenCensus agent tracer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_census_agent: Option<serde_json::Value>,
    /// Extra span tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_tags: Option<serde_json::Value>,
    /// Maximum length of the request path tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_path_tag_length: Option<u32>,
    /// Sampling percentage (0..100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<f64>,
    /// TLS to the tracer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_settings: Option<serde_json::Value>,
    /// Add Istio's own tags to spans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_istio_tags: Option<bool>,
}

/// A tracer given by address.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TracerAddress {
    /// `host:port` of the collector.
    #[serde(default)]
    pub address: String,
}

/// The Lightstep tracer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LightstepTracer {
    /// `host:port` of the collector.
    #[serde(default)]
    pub address: String,
    /// Access token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
}

impl Validate for ProxyConfig {
    fn validate(&self, cx: &mut Checker) {
        if let Some(c) = self.concurrency
            && c < 0
        {
            cx.error_at(
                "concurrency",
                format!("concurrency {c} must not be negative (0 means one worker per core)"),
            );
        }
        for (name, port) in [
            ("proxyAdminPort", self.proxy_admin_port),
            ("statusPort", self.status_port),
        ] {
            if let Some(p) = port
                && p != 0
            {
                cx.field(name, |c| checks::port_number(c, p));
            }
        }
        if let Some(t) = &self.tracing
            && let Some(s) = t.sampling
            && !(0.0..=100.0).contains(&s)
        {
            cx.field("tracing", |c| {
                c.error_at("sampling", format!("sampling {s} is outside 0..100"))
            });
        }
        if let Some(m) = &self.proxy_stats_matcher {
            cx.field("proxyStatsMatcher", |c| {
                c.each("inclusionRegexps", &m.inclusion_regexps, |c, r| {
                    checks::regex(c, r)
                });
            });
        }
    }
}
