//! DestinationRule (networking.istio.io): what happens to traffic for a host
//! after routing: load balancing, connection pools, outlier detection, client
//! TLS, and the subsets that routes name.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::schema::common::{Duration, Percent, WorkloadSelector};
use crate::validate::{Checker, Validate, checks};

/// A DestinationRule spec.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationRule {
    /// The service the rule applies to (short name, FQDN or `*.` wildcard).
    #[serde(default)]
    pub host: String,
    /// Policies for all traffic to the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
    /// Named groups of endpoints, selected by labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsets: Vec<Subset>,
    /// Namespaces the rule is visible to (`.`, `*`, or names).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    /// Client workloads the rule applies to; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
}

/// Traffic policy for a host, a subset, or (inside `portLevelSettings`) a port.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficPolicy {
    /// Load-balancing algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection and request limits (circuit breakers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Ejection of failing endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS toward the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsSettings>,
    /// Per-port policies that replace the ones above for that port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_level_settings: Vec<PortTrafficPolicy>,
    /// Tunnel the connection through a proxy (HTTP CONNECT or POST).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelSettings>,
    /// Send a PROXY protocol header to the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Cap on concurrent retries as a share of active requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
}

/// The policy of one port, replacing the top-level policy for it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortTrafficPolicy {
    /// The port this policy applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PolicyPortSelector>,
    /// Load-balancing algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection and request limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Ejection of failing endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS toward the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsSettings>,
}

/// A port selected by number.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyPortSelector {
    /// The port number.
    #[serde(default)]
    pub number: u32,
}

/// Tunnel settings (`trafficPolicy.tunnel`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TunnelSettings {
    /// `CONNECT` (default) or `POST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Host the proxy should connect to.
    #[serde(default)]
    pub target_host: String,
    /// Port the proxy should connect to.
    #[serde(default)]
    pub target_port: u32,
}

/// PROXY protocol settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyProtocol {
    /// The PROXY protocol version (V1 when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<ProxyProtocolVersion>,
}

/// PROXY protocol versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProxyProtocolVersion {
    /// Human-readable header.
    V1,
    /// Binary header.
    V2,
}

/// Retry budget (`trafficPolicy.retryBudget`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudget {
    /// Share of active requests that may be retries (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<Percent>,
    /// Retries always allowed regardless of the percentage (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_retry_concurrency: Option<u32>,
    /// Window over which the budget is computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_interval: Option<Duration>,
}

/// A named subset of the host's endpoints.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subset {
    /// The name routes use (`subset: v1`).
    #[serde(default)]
    pub name: String,
    /// Labels an endpoint must all carry to belong to the subset.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Overrides of the top-level policy, field by field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
}

/// Load-balancer settings: `simple` or `consistentHash` (a oneof).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerSettings {
    /// A simple algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simple: Option<SimpleLb>,
    /// Consistent hashing (soft session affinity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_hash: Option<ConsistentHashLb>,
    /// Locality-aware distribution and failover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_lb_setting: Option<LocalityLbSetting>,
    /// Zone-aware routing settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_aware_lb_setting: Option<ZoneAwareLbSetting>,
    /// Slow-start window for new endpoints (deprecated form of `warmup`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_duration_secs: Option<Duration>,
    /// Slow-start configuration for new endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<WarmupConfiguration>,
}

/// Simple load-balancing algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimpleLb {
    /// The default (LEAST_REQUEST).
    Unspecified,
    /// Deprecated alias of LEAST_REQUEST.
    LeastConn,
    /// Random choice.
    Random,
    /// Forward to the original destination address.
    Passthrough,
    /// Round robin.
    RoundRobin,
    /// Power of two choices by active requests.
    LeastRequest,
}

/// Consistent-hash settings: one hash key and at most one algorithm.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsistentHashLb {
    /// Hash on this request header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_header_name: Option<String>,
    /// Hash on this cookie (generated when absent and `ttl` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_cookie: Option<HttpCookie>,
    /// Hash on the client's IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_source_ip: Option<bool>,
    /// Hash on this query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_query_parameter_name: Option<String>,
    /// Ring-hash algorithm settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_hash: Option<RingHash>,
    /// Maglev algorithm settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maglev: Option<MagLev>,
    /// Deprecated: use `ringHash.minimumRingSize`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_ring_size: Option<u64>,
}

/// Ring-hash settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RingHash {
    /// Minimum number of ring entries (default 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_ring_size: Option<u64>,
}

/// Maglev settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MagLev {
    /// Lookup table size; must be prime (default 65537).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_size: Option<u64>,
}

/// The cookie consistent hashing uses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpCookie {
    /// Cookie name.
    #[serde(default)]
    pub name: String,
    /// Cookie path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Lifetime of a generated cookie (0 = session cookie).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
    /// Extra attributes of a generated cookie.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<CookieAttribute>,
}

/// One attribute of a generated cookie (`SameSite=Strict`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CookieAttribute {
    /// Attribute name.
    #[serde(default)]
    pub name: String,
    /// Attribute value, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// Locality-weighted distribution and failover.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityLbSetting {
    /// Weighted distribution from a locality to others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub distribute: Vec<LocalityDistribute>,
    /// Region failover order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<LocalityFailover>,
    /// Labels that order failover priority.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover_priority: Vec<String>,
    /// Whether locality load balancing is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// Traffic from `from` is spread over `to` localities by weight.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityDistribute {
    /// Originating locality (`region/zone/subzone`, `*` allowed).
    #[serde(default)]
    pub from: String,
    /// Destination localities and their weights (summing to 100).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub to: BTreeMap<String, u32>,
}

/// Failover from one region to another.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityFailover {
    /// Originating region.
    #[serde(default)]
    pub from: String,
    /// Region to fail over to.
    #[serde(default)]
    pub to: String,
}

/// Zone-aware routing settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZoneAwareLbSetting {
    /// Whether zone-aware routing is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Region failover order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<LocalityFailover>,
    /// Labels that order failover priority.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover_priority: Vec<String>,
    /// Minimum cluster size for zone-aware routing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_cluster_size: Option<u64>,
}

/// Slow start for new endpoints.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WarmupConfiguration {
    /// Length of the warm-up window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
    /// Share of normal traffic a new endpoint starts with (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_percent: Option<Percent>,
    /// How fast traffic ramps up (1 = linear, default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggression: Option<f64>,
}

/// Connection-pool limits (circuit breakers).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionPoolSettings {
    /// Limits common to HTTP and TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpSettings>,
    /// HTTP limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSettings>,
}

/// TCP connection-pool settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSettings {
    /// Maximum upstream connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<i32>,
    /// Connect timeout (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Duration>,
    /// TCP keepalive probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// Maximum lifetime of a connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connection_duration: Option<Duration>,
    /// Idle timeout of a connection (default 1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
}

/// TCP keepalive settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpKeepalive {
    /// Unanswered probes before the connection is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<u32>,
    /// Idle time before probes start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Duration>,
    /// Time between probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
}

/// HTTP connection-pool settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpSettings {
    /// Maximum requests waiting for a connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http1_max_pending_requests: Option<i32>,
    /// Maximum concurrent requests to the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_max_requests: Option<i32>,
    /// Requests per connection (1 disables keep-alive, 0 = unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<i32>,
    /// Maximum concurrent retries to the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<i32>,
    /// Idle timeout of an upstream connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
    /// Whether HTTP/1.1 connections are upgraded to HTTP/2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h2_upgrade_policy: Option<H2UpgradePolicy>,
    /// Use the client's protocol toward the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_client_protocol: Option<bool>,
    /// Maximum concurrent streams per HTTP/2 connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_streams: Option<i32>,
    /// HTTP/2 keepalive pings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_keep_alive: Option<ConnectionKeepalive>,
}

/// HTTP/2 upgrade policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum H2UpgradePolicy {
    /// The mesh-wide default.
    Default,
    /// Do not upgrade.
    DoNotUpgrade,
    /// Upgrade to HTTP/2.
    Upgrade,
}

/// HTTP/2 keepalive pings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionKeepalive {
    /// Time between pings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Time to wait for a ping answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// Outlier detection: eject endpoints that keep failing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    /// Deprecated and ignored by Istio; use `consecutive5xxErrors`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_errors: Option<i32>,
    /// Count locally-originated failures separately.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_external_local_origin_errors: Option<bool>,
    /// Local-origin failures before ejection (with the split on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_local_origin_failures: Option<u32>,
    /// 502/503/504 (and local failures) before ejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<u32>,
    /// Any 5xx (and local failures) before ejection (default 5, 0 disables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_5xx_errors: Option<u32>,
    /// Sweep period (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Base ejection duration (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<Duration>,
    /// Hard cap on the share of endpoints ejected (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<i32>,
    /// Panic threshold: below this healthy share, health is ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_health_percent: Option<i32>,
    /// Status codes that count as errors instead of 5xx.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outlier_detection_http_error_codes: Vec<u32>,
}

/// TLS toward the upstream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientTlsSettings {
    /// TLS mode; unset means automatic mesh mTLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ClientTlsMode>,
    /// Client certificate file (MUTUAL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    /// Client private key file (MUTUAL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// CA bundle that verifies the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
    /// Secret holding the client certificate, key and CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_name: Option<String>,
    /// Names the server certificate must carry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    /// SNI to send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// Skip verification of the server certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
    /// Certificate revocation list file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_crl: Option<String>,
}

/// Client TLS modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClientTlsMode {
    /// Plaintext.
    Disable,
    /// TLS origination, server verified.
    Simple,
    /// TLS with a client certificate given by the user.
    Mutual,
    /// mTLS with the mesh's certificates.
    IstioMutual,
}

impl ClientTlsMode {
    fn name(self) -> &'static str {
        match self {
            ClientTlsMode::Disable => "DISABLE",
            ClientTlsMode::Simple => "SIMPLE",
            ClientTlsMode::Mutual => "MUTUAL",
            ClientTlsMode::IstioMutual => "ISTIO_MUTUAL",
        }
    }
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

/// Envoy's upper bound on `minimum_ring_size`.
const MAX_RING_SIZE: u64 = 8_388_608;
/// Envoy's upper bound on the Maglev table size.
const MAX_MAGLEV_TABLE_SIZE: u64 = 5_000_011;

impl Validate for DestinationRule {
    fn validate(&self, cx: &mut Checker) {
        cx.field("host", |c| {
            if self.host.is_empty() {
                c.error("host is required: name the service the rule applies to");
            } else {
                checks::host(c, &self.host, true);
            }
        });
        cx.field("trafficPolicy", |c| self.traffic_policy.validate(c));
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        cx.field("subsets", |c| {
            for (i, subset) in self.subsets.iter().enumerate() {
                c.index(i, |c| {
                    subset.validate(c);
                    if subset.name.is_empty() {
                        return;
                    }
                    if let Some(first) = seen.get(subset.name.as_str()) {
                        c.error_at(
                            "name",
                            format!(
                                "duplicate subset name {:?} (first defined at subsets[{first}]); subset names must be unique",
                                subset.name
                            ),
                        );
                    } else {
                        seen.insert(&subset.name, i);
                    }
                });
            }
        });
        cx.field("exportTo", |c| export_to(c, &self.export_to));
    }
}

impl Validate for Subset {
    fn validate(&self, cx: &mut Checker) {
        cx.field("name", |c| {
            if self.name.is_empty() {
                c.error("subset name is required");
            } else if !is_dns_label(&self.name) {
                c.error(format!(
                    "subset name {:?} is not a DNS label (lowercase letters, digits and '-', at most 63 characters)",
                    self.name
                ));
            }
        });
        cx.field("trafficPolicy", |c| self.traffic_policy.validate(c));
    }
}

impl Validate for TrafficPolicy {
    fn validate(&self, cx: &mut Checker) {
        cx.field("loadBalancer", |c| self.load_balancer.validate(c));
        cx.field("connectionPool", |c| self.connection_pool.validate(c));
        cx.field("outlierDetection", |c| self.outlier_detection.validate(c));
        cx.field("tls", |c| self.tls.validate(c));
        let mut seen: BTreeMap<u32, usize> = BTreeMap::new();
        cx.field("portLevelSettings", |c| {
            for (i, p) in self.port_level_settings.iter().enumerate() {
                c.index(i, |c| {
                    p.validate(c);
                    let Some(port) = &p.port else { return };
                    if port.number == 0 {
                        return;
                    }
                    if let Some(first) = seen.get(&port.number) {
                        c.field("port", |c| {
                            c.error_at(
                                "number",
                                format!(
                                    "port {} already has settings in portLevelSettings[{first}]; merge them into one entry",
                                    port.number
                                ),
                            )
                        });
                    } else {
                        seen.insert(port.number, i);
                    }
                });
            }
        });
        cx.field("tunnel", |c| self.tunnel.validate(c));
        cx.field("retryBudget", |c| self.retry_budget.validate(c));
    }
}

impl Validate for PortTrafficPolicy {
    fn validate(&self, cx: &mut Checker) {
        match &self.port {
            None => cx.error("port is required: portLevelSettings entries apply to one port"),
            Some(p) => cx.field("port", |c| {
                c.field("number", |c| checks::port_number(c, p.number))
            }),
        }
        cx.field("loadBalancer", |c| self.load_balancer.validate(c));
        cx.field("connectionPool", |c| self.connection_pool.validate(c));
        cx.field("outlierDetection", |c| self.outlier_detection.validate(c));
        cx.field("tls", |c| self.tls.validate(c));
    }
}

impl Validate for TunnelSettings {
    fn validate(&self, cx: &mut Checker) {
        if let Some(p) = &self.protocol {
            let up = p.to_ascii_uppercase();
            if up != "CONNECT" && up != "POST" {
                cx.error_at(
                    "protocol",
                    format!("unknown tunnel protocol {p:?}, expected CONNECT or POST"),
                );
            }
        }
        if self.target_host.is_empty() {
            cx.error("targetHost is required");
        }
        cx.field("targetPort", |c| checks::port_number(c, self.target_port));
    }
}

impl Validate for RetryBudget {
    fn validate(&self, cx: &mut Checker) {
        if let Some(p) = self.percent {
            cx.field("percent", |c| checks::percent(c, p));
        }
    }
}

impl Validate for LoadBalancerSettings {
    fn validate(&self, cx: &mut Checker) {
        if self.simple.is_some() && self.consistent_hash.is_some() {
            cx.error("simple and consistentHash are alternatives; set only one of them");
        }
        if self.simple == Some(SimpleLb::LeastConn) {
            cx.field("simple", |c| {
                c.warn("LEAST_CONN is deprecated; it means LEAST_REQUEST, write that instead")
            });
        }
        cx.field("consistentHash", |c| self.consistent_hash.validate(c));
        cx.field("localityLbSetting", |c| {
            self.locality_lb_setting.validate(c)
        });
        if self.warmup_duration_secs.is_some() && self.warmup.is_some() {
            cx.field("warmupDurationSecs", |c| {
                c.error("warmupDurationSecs and warmup are alternatives; set only warmup")
            });
        }
        cx.field("warmup", |c| self.warmup.validate(c));
    }
}

impl Validate for ConsistentHashLb {
    fn validate(&self, cx: &mut Checker) {
        let keys: Vec<&str> = [
            ("httpHeaderName", self.http_header_name.is_some()),
            ("httpCookie", self.http_cookie.is_some()),
            ("useSourceIp", self.use_source_ip == Some(true)),
            (
                "httpQueryParameterName",
                self.http_query_parameter_name.is_some(),
            ),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        match keys.len() {
            0 => cx.error(
                "a hash key is required: set one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName",
            ),
            1 => {}
            _ => cx.error(format!(
                "{} are alternatives; set only one hash key",
                keys.join(" and ")
            )),
        }
        if let Some(h) = &self.http_header_name
            && h.is_empty()
        {
            cx.error_at("httpHeaderName", "header name is empty");
        }
        if let Some(q) = &self.http_query_parameter_name
            && q.is_empty()
        {
            cx.error_at("httpQueryParameterName", "query parameter name is empty");
        }
        cx.field("httpCookie", |c| self.http_cookie.validate(c));
        if self.ring_hash.is_some() && self.maglev.is_some() {
            cx.error("ringHash and maglev are alternatives; set only one algorithm");
        }
        if let Some(size) = self.ring_hash.as_ref().and_then(|r| r.minimum_ring_size) {
            cx.field("ringHash", |c| {
                c.field("minimumRingSize", |c| ring_size(c, size))
            });
        }
        if let Some(size) = self.minimum_ring_size {
            cx.field("minimumRingSize", |c| {
                ring_size(c, size);
                c.warn("minimumRingSize here is deprecated; write ringHash.minimumRingSize")
            });
        }
        if let Some(size) = self.maglev.as_ref().and_then(|m| m.table_size) {
            cx.field("maglev", |c| {
                c.field("tableSize", |c| {
                    if size > MAX_MAGLEV_TABLE_SIZE {
                        c.error(format!(
                            "table size {size} is above Envoy's limit of {MAX_MAGLEV_TABLE_SIZE}"
                        ));
                    } else if size != 0 && !is_prime(size) {
                        c.error(format!(
                            "table size {size} is not a prime number (Envoy requires a prime, e.g. 65537)"
                        ));
                    }
                })
            });
        }
    }
}

fn ring_size(cx: &mut Checker, size: u64) {
    if size > MAX_RING_SIZE {
        cx.error(format!(
            "ring size {size} is above Envoy's limit of {MAX_RING_SIZE}"
        ));
    }
}

impl Validate for HttpCookie {
    fn validate(&self, cx: &mut Checker) {
        if self.name.is_empty() {
            cx.error("cookie name is required");
        }
        cx.each("attributes", &self.attributes, |c, a| {
            if a.name.is_empty() {
                c.error("attribute name is required");
            }
        });
    }
}

impl Validate for LocalityLbSetting {
    fn validate(&self, cx: &mut Checker) {
        if !self.distribute.is_empty() && !self.failover.is_empty() {
            cx.error("distribute and failover are alternatives; set only one of them");
        }
        cx.each("distribute", &self.distribute, |c, d| {
            let total: u64 = d.to.values().map(|w| u64::from(*w)).sum();
            if !d.to.is_empty() && total != 100 {
                c.field("to", |c| {
                    c.error(format!(
                        "weights add up to {total}; they must add up to 100"
                    ))
                });
            }
        });
        cx.each("failover", &self.failover, |c, f| {
            if !f.from.is_empty() && f.from == f.to {
                c.error_at(
                    "to",
                    format!("failover from {:?} to itself has no effect", f.from),
                );
            }
        });
    }
}

impl Validate for WarmupConfiguration {
    fn validate(&self, cx: &mut Checker) {
        if self.duration.is_none() {
            cx.error("duration is required");
        }
        if let Some(p) = self.minimum_percent {
            cx.field("minimumPercent", |c| checks::percent(c, p));
        }
        if let Some(a) = self.aggression
            && a < 1.0
        {
            cx.field("aggression", |c| {
                c.error(format!("aggression {a} is below 1 (1 means a linear ramp)"))
            });
        }
    }
}

impl Validate for ConnectionPoolSettings {
    fn validate(&self, cx: &mut Checker) {
        cx.field("tcp", |c| self.tcp.validate(c));
        cx.field("http", |c| self.http.validate(c));
    }
}

/// A count written as a signed int32 upstream must not be negative.
fn count(cx: &mut Checker, name: &str, value: Option<i32>) {
    if let Some(v) = value
        && v < 0
    {
        cx.field(name, |c| {
            c.error(format!("{v} is negative; write a count of 0 or more"))
        });
    }
}

fn at_least_1ms(cx: &mut Checker, name: &str, value: Option<Duration>) {
    if let Some(d) = value
        && d.get() < std::time::Duration::from_millis(1)
    {
        cx.field(name, |c| c.error(format!("{name} must be at least 1ms")));
    }
}

impl Validate for TcpSettings {
    fn validate(&self, cx: &mut Checker) {
        count(cx, "maxConnections", self.max_connections);
        at_least_1ms(cx, "connectTimeout", self.connect_timeout);
    }
}

impl Validate for HttpSettings {
    fn validate(&self, cx: &mut Checker) {
        count(
            cx,
            "http1MaxPendingRequests",
            self.http1_max_pending_requests,
        );
        count(cx, "http2MaxRequests", self.http2_max_requests);
        count(
            cx,
            "maxRequestsPerConnection",
            self.max_requests_per_connection,
        );
        count(cx, "maxRetries", self.max_retries);
        count(cx, "maxConcurrentStreams", self.max_concurrent_streams);
    }
}

impl Validate for OutlierDetection {
    fn validate(&self, cx: &mut Checker) {
        if self.consecutive_errors.is_some() {
            cx.field("consecutiveErrors", |c| {
                c.warn("consecutiveErrors is deprecated and ignored by Istio; use consecutive5xxErrors")
            });
        }
        if let (Some(gw), Some(any)) =
            (self.consecutive_gateway_errors, self.consecutive_5xx_errors)
            && gw > 0
            && any > 0
            && gw >= any
        {
            cx.field("consecutiveGatewayErrors", |c| {
                c.warn(format!(
                    "consecutiveGatewayErrors ({gw}) >= consecutive5xxErrors ({any}) has no effect: gateway errors also count as 5xx errors, so the 5xx threshold always trips first"
                ))
            });
        }
        if self.consecutive_local_origin_failures.is_some()
            && self.split_external_local_origin_errors != Some(true)
        {
            cx.field("consecutiveLocalOriginFailures", |c| {
                c.warn("consecutiveLocalOriginFailures has no effect unless splitExternalLocalOriginErrors is true")
            });
        }
        at_least_1ms(cx, "interval", self.interval);
        at_least_1ms(cx, "baseEjectionTime", self.base_ejection_time);
        for (name, value) in [
            ("maxEjectionPercent", self.max_ejection_percent),
            ("minHealthPercent", self.min_health_percent),
        ] {
            if let Some(v) = value
                && !(0..=100).contains(&v)
            {
                cx.field(name, |c| {
                    c.error(format!("percentage {v} is outside 0..100"))
                });
            }
        }
        cx.field("outlierDetectionHttpErrorCodes", |c| {
            for (i, code) in self.outlier_detection_http_error_codes.iter().enumerate() {
                c.index(i, |c| {
                    if !(100..=599).contains(code) {
                        c.error(format!("HTTP status {code} is outside 100..599"));
                    }
                });
            }
        });
    }
}

impl Validate for ClientTlsSettings {
    fn validate(&self, cx: &mut Checker) {
        let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
        let files = [
            ("clientCertificate", set(&self.client_certificate)),
            ("privateKey", set(&self.private_key)),
            ("caCertificates", set(&self.ca_certificates)),
        ];
        let credential = set(&self.credential_name);
        match self.mode {
            Some(mode @ (ClientTlsMode::Simple | ClientTlsMode::Mutual)) => {
                if credential {
                    for (name, given) in files {
                        if given {
                            cx.field(name, |c| {
                                c.error(format!(
                                    "{name} cannot be combined with credentialName; the secret named by credentialName supplies it"
                                ))
                            });
                        }
                    }
                } else if mode == ClientTlsMode::Mutual
                    && !(set(&self.client_certificate) && set(&self.private_key))
                {
                    cx.error(
                        "mode MUTUAL needs credentialName, or clientCertificate and privateKey",
                    );
                }
            }
            Some(mode @ (ClientTlsMode::Disable | ClientTlsMode::IstioMutual)) => {
                let mut given: Vec<&str> =
                    files.iter().filter(|(_, g)| *g).map(|(n, _)| *n).collect();
                if credential {
                    given.push("credentialName");
                }
                if !given.is_empty() {
                    cx.warn(format!(
                        "{} ignored with mode {}",
                        given.join(", "),
                        mode.name()
                    ));
                }
            }
            None => {}
        }
        if self.insecure_skip_verify == Some(true) {
            cx.field("insecureSkipVerify", |c| {
                c.warn("insecureSkipVerify turns off verification of the server certificate; anyone on the path can impersonate the server")
            });
        }
    }
}

/// `exportTo` of Istio networking resources: `.`, `*`, `~` or namespace names,
/// with `*` and `~` standing alone.
pub(super) fn export_to(cx: &mut Checker, list: &[String]) {
    let mut seen: Vec<&str> = Vec::new();
    for (i, ns) in list.iter().enumerate() {
        cx.index(i, |c| {
            let ok = ns == "." || ns == "*" || ns == "~" || is_dns_label(ns);
            if !ok {
                c.error(format!(
                    "invalid exportTo entry {ns:?}: expected \".\", \"*\", \"~\" or a namespace name"
                ));
            } else if seen.contains(&ns.as_str()) {
                c.error(format!("{ns:?} is listed twice"));
            } else if (ns == "*" || ns == "~") && list.len() > 1 {
                c.error(format!("{ns:?} must be the only exportTo entry"));
            }
            seen.push(ns);
        });
    }
}

/// An RFC 1123 DNS label: lowercase letters, digits and '-', 1..=63 long,
/// starting and ending with a letter or digit.
pub(super) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3u64;
    while d.saturating_mul(d) <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primes() {
        assert!(is_prime(65537));
        assert!(is_prime(2));
        assert!(is_prime(5_000_011));
        assert!(!is_prime(65536));
        assert!(!is_prime(1));
        assert!(!is_prime(9));
    }

    #[test]
    fn dns_labels() {
        assert!(is_dns_label("v1"));
        assert!(is_dns_label("blue-green"));
        assert!(!is_dns_label("V1"));
        assert!(!is_dns_label("v1.2"));
        assert!(!is_dns_label("-a"));
        assert!(!is_dns_label(""));
    }

    #[test]
    fn consecutive_5xx_is_spelled_as_upstream() {
        let od: OutlierDetection =
            serde_json::from_value(serde_json::json!({"consecutive5xxErrors": 3})).unwrap();
        assert_eq!(od.consecutive_5xx_errors, Some(3));
        let back = serde_json::to_value(&od).unwrap();
        assert_eq!(back, serde_json::json!({"consecutive5xxErrors": 3}));
    }
}
