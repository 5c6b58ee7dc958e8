//! DestinationRule, Gateway, ServiceEntry and WorkloadEntry: schema and
//! validation, checked through the loader with exact diagnostic lines.

use mesh_core::load::{LoadOptions, Loaded, load_str};
use mesh_core::resource::{Kind, Spec};

fn load(yaml: &str) -> Loaded {
    load_str("f.yaml", yaml, &LoadOptions::default())
}

/// The printed diagnostics of `yaml`.
fn diags(yaml: &str) -> String {
    load(yaml).diagnostics.to_string()
}

/// Asserts the exact diagnostic lines.
#[track_caller]
fn check(yaml: &str, expected: &[&str]) {
    let got = diags(yaml);
    let got: Vec<&str> = got.lines().collect();
    assert_eq!(got, expected, "\n--- yaml ---\n{yaml}");
}

/// Loads with no diagnostics and checks the JSON round trip of every spec.
#[track_caller]
fn valid(yaml: &str) -> Loaded {
    let loaded = load(yaml);
    assert_eq!(loaded.diagnostics.to_string(), "", "\n--- yaml ---\n{yaml}");
    assert!(!loaded.resources.is_empty());
    for r in &loaded.resources {
        round_trip(&r.spec);
    }
    loaded
}

#[track_caller]
fn round_trip(spec: &Spec) {
    let json = serde_json::to_value(spec).expect("a spec serializes");
    let back = Spec::from_json(spec.kind(), json.clone()).expect("its JSON reads back");
    assert_eq!(&back, spec, "round trip of {json}");
}

fn seed(name: &str) -> String {
    let path = format!("{}/../../fixtures/seed/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

// ---------------------------------------------------------------------------
// Seed blocks and upstream-doc-like resources
// ---------------------------------------------------------------------------

#[test]
fn seed_03_destination_rule_loads() {
    let loaded = valid(&seed("03-destination-rule-load-balancing.yaml"));
    assert_eq!(loaded.resources[0].kind, Kind::DestinationRule);
    let Spec::DestinationRule(dr) = &loaded.resources[0].spec else {
        panic!("not a DestinationRule")
    };
    assert_eq!(dr.host, "reviews");
    assert_eq!(dr.subsets.len(), 2);
    let tp = dr.traffic_policy.as_ref().unwrap();
    let od = tp.outlier_detection.as_ref().unwrap();
    assert_eq!(od.consecutive_5xx_errors, Some(5));
    assert_eq!(od.max_ejection_percent, Some(50));
    let hash = tp
        .load_balancer
        .as_ref()
        .unwrap()
        .consistent_hash
        .as_ref()
        .unwrap();
    assert_eq!(hash.http_header_name.as_deref(), Some("x-user-id"));
}

#[test]
fn seed_04_gateway_loads() {
    let loaded = valid(&seed("04-gateway-ingress.yaml"));
    let Spec::Gateway(gw) = &loaded.resources[0].spec else {
        panic!("not a Gateway")
    };
    assert_eq!(gw.servers.len(), 2);
    assert_eq!(
        gw.servers[1].tls.as_ref().unwrap().https_redirect,
        Some(true)
    );
}

#[test]
fn seed_05_service_entries_load() {
    let loaded = valid(&seed("05-service-entry-external-services.yaml"));
    assert_eq!(loaded.resources.len(), 2);
    assert!(
        loaded
            .resources
            .iter()
            .all(|r| r.kind == Kind::ServiceEntry)
    );
}

#[test]
fn seed_11_destination_rule_loads() {
    let loaded = load(&seed("11-blue-green-deployment.yaml"));
    let text = loaded.diagnostics.to_string();
    assert!(
        !text.lines().any(|l| l.contains("DestinationRule/")),
        "{text}"
    );
    let dr = loaded
        .resources
        .iter()
        .find(|r| r.kind == Kind::DestinationRule)
        .expect("the DestinationRule loads");
    round_trip(&dr.spec);
}

#[test]
fn seed_16_circuit_breaker_loads_with_the_gateway_errors_warning() {
    let loaded = load(&seed("16-circuit-breaking.yaml"));
    assert_eq!(
        loaded.diagnostics.to_string(),
        "f.yaml:17:33: warning: DestinationRule/default/circuit-breaker: spec.trafficPolicy.outlierDetection.consecutiveGatewayErrors: consecutiveGatewayErrors (5) >= consecutive5xxErrors (5) has no effect: gateway errors also count as 5xx errors, so the 5xx threshold always trips first\n"
    );
    assert_eq!(loaded.resources.len(), 1);
    round_trip(&loaded.resources[0].spec);
}

#[test]
fn full_destination_rule_loads_and_round_trips() {
    let loaded = valid(
        r#"apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: bookinfo-ratings
  namespace: prod
spec:
  host: ratings.prod.svc.cluster.local
  exportTo: ["."]
  workloadSelector:
    matchLabels:
      app: ratings
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpCookie:
          name: user
          path: /
          ttl: 0s
          attributes:
          - name: SameSite
            value: Strict
          - name: Secure
        ringHash:
          minimumRingSize: 2048
      localityLbSetting:
        enabled: true
        distribute:
        - from: us-west/zone1/*
          to:
            "us-west/zone1/*": 80
            "us-west/zone2/*": 20
      warmup:
        duration: 30s
        minimumPercent: 10
        aggression: 1.5
    connectionPool:
      tcp:
        maxConnections: 100
        connectTimeout: 30ms
        tcpKeepalive:
          probes: 3
          time: 7200s
          interval: 75s
        maxConnectionDuration: 1h
        idleTimeout: 30m
      http:
        http1MaxPendingRequests: 10
        http2MaxRequests: 1000
        maxRequestsPerConnection: 10
        maxRetries: 3
        idleTimeout: 60s
        h2UpgradePolicy: UPGRADE
        useClientProtocol: false
        maxConcurrentStreams: 100
    outlierDetection:
      splitExternalLocalOriginErrors: true
      consecutiveLocalOriginFailures: 3
      consecutiveGatewayErrors: 3
      consecutive5xxErrors: 7
      interval: 5m
      baseEjectionTime: 15m
      maxEjectionPercent: 100
      minHealthPercent: 0
    tls:
      mode: MUTUAL
      clientCertificate: /etc/certs/myclientcert.pem
      privateKey: /etc/certs/client_private_key.pem
      caCertificates: /etc/certs/rootcacerts.pem
      subjectAltNames: [ratings.prod.example.com]
      sni: ratings.prod.example.com
      caCrl: /etc/certs/crl.pem
    portLevelSettings:
    - port:
        number: 80
      loadBalancer:
        simple: LEAST_REQUEST
    - port:
        number: 9080
      loadBalancer:
        consistentHash:
          useSourceIp: true
          maglev:
            tableSize: 65537
      tls:
        mode: SIMPLE
        credentialName: ratings-client
    tunnel:
      protocol: CONNECT
      targetHost: 10.1.2.3
      targetPort: 443
    proxyProtocol:
      version: V2
    retryBudget:
      percent: 25
      minRetryConcurrency: 5
  subsets:
  - name: testversion
    labels:
      version: v3
    trafficPolicy:
      loadBalancer:
        simple: ROUND_ROBIN
      tls:
        mode: ISTIO_MUTUAL
"#,
    );
    assert_eq!(
        loaded.resources[0].id(),
        "DestinationRule/prod/bookinfo-ratings"
    );
}

#[test]
fn full_gateway_loads_and_round_trips() {
    valid(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: my-gateway
  namespace: some-config-namespace
spec:
  selector:
    app: my-gateway-controller
  servers:
  - port:
      number: 80
      name: http
      protocol: http
    hosts:
    - uk.bookinfo.com
    - eu.bookinfo.com
    tls:
      httpsRedirect: true
  - port:
      number: 443
      name: https-443
      protocol: HTTPS
    hosts:
    - uk.bookinfo.com
    - eu.bookinfo.com
    tls:
      httpsRedirect: true
      mode: SIMPLE
      serverCertificate: /etc/certs/servercert.pem
      privateKey: /etc/certs/privatekey.pem
  - port:
      number: 9443
      name: https-9443
      protocol: HTTPS
    hosts:
    - "bookinfo-namespace/*.bookinfo.com"
    tls:
      mode: SIMPLE
      credentialName: bookinfo-secret
      minProtocolVersion: TLSV1_2
      maxProtocolVersion: TLSV1_3
      cipherSuites: [ECDHE-ECDSA-AES256-GCM-SHA384]
  - port:
      number: 9080
      name: http-wildcard
      protocol: HTTP
    hosts:
    - "*"
  - port:
      number: 2379
      name: mongo
      protocol: MONGO
    hosts:
    - "*"
  - port:
      number: 8443
      name: mtls
      protocol: HTTPS
    hosts:
    - "./*.example.com"
    bind: 10.0.0.1
    name: mtls-server
    tls:
      mode: MUTUAL
      credentialNames: [rsa-cert, ecdsa-cert]
      subjectAltNames: [client.example.com]
      verifyCertificateSpki: [abc]
      verifyCertificateHash: [def]
  - port:
      number: 15443
      name: tls-auto
      protocol: TLS
    hosts:
    - "*.local"
    tls:
      mode: AUTO_PASSTHROUGH
"#,
    );
}

#[test]
fn https_redirect_on_an_https_server_is_fine() {
    valid(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: g
spec:
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {httpsRedirect: true, mode: SIMPLE, credentialName: cert}
"#,
    );
}

#[test]
fn full_service_entries_load_and_round_trip() {
    valid(
        r#"apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: external-svc-mongocluster
spec:
  hosts:
  - mymongodb.somedomain
  addresses:
  - 192.192.192.192/24
  ports:
  - number: 27018
    name: mongodb
    protocol: MONGO
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints:
  - address: 2.2.2.2
  - address: 3.3.3.3
    ports:
      mongodb: 27019
    labels:
      version: v2
    locality: us-east/zone1
    weight: 10
    network: net1
    serviceAccount: mongo
  exportTo: ["*"]
  subjectAltNames: ["spiffe://cluster.local/ns/db/sa/mongo"]
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: external-svc-dns
spec:
  hosts:
  - foo.bar.com
  location: MESH_EXTERNAL
  ports:
  - number: 443
    name: https
    protocol: TLS
    targetPort: 8443
  resolution: DNS
  endpoints:
  - address: us.foo.bar.com
    ports:
      https: 8443
  - address: 10.1.1.1
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: wildcard
spec:
  hosts:
  - "*.wikipedia.org"
  ports:
  - number: 443
    name: https
    protocol: TLS
  resolution: NONE
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: selected
spec:
  hosts: [mysvc.internal]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  location: MESH_INTERNAL
  resolution: STATIC
  workloadSelector:
    labels:
      app: vm
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: unix
spec:
  hosts: [uds.internal]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  resolution: STATIC
  endpoints:
  - address: unix:///var/run/example/socket
"#,
    );
}

#[test]
fn workload_entry_loads_and_round_trips() {
    valid(
        r#"apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: details-svc
spec:
  serviceAccount: details-legacy
  address: 2.2.2.2
  ports:
    http: 8080
  labels:
    app: details-legacy
    instance-id: vm1
  network: vm-network
  locality: us-west/zone1
  weight: 3
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: by-name
spec:
  address: vm1.example.com
"#,
    );
}

#[test]
fn json_round_trip_of_each_kind_from_json() {
    let cases = [
        (
            Kind::DestinationRule,
            serde_json::json!({
                "host": "reviews",
                "trafficPolicy": {
                    "loadBalancer": {"simple": "RANDOM", "warmupDurationSecs": "10s"},
                    "outlierDetection": {"consecutive5xxErrors": 5, "interval": "1m30s"},
                    "connectionPool": {"http": {"h2UpgradePolicy": "DO_NOT_UPGRADE"}},
                    "retryBudget": {"percent": 12.5}
                },
                "subsets": [{"name": "v1", "labels": {"version": "v1"}}]
            }),
        ),
        (
            Kind::Gateway,
            serde_json::json!({
                "selector": {"istio": "ingressgateway"},
                "servers": [{
                    "port": {"number": 443, "name": "https", "protocol": "HTTPS"},
                    "hosts": ["*"],
                    "tls": {"mode": "OPTIONAL_MUTUAL", "credentialName": "c",
                            "minProtocolVersion": "TLSV1_2"}
                }]
            }),
        ),
        (
            Kind::ServiceEntry,
            serde_json::json!({
                "hosts": ["a.example.com"],
                "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
                "resolution": "DNS_ROUND_ROBIN",
                "location": "MESH_EXTERNAL",
                "endpoints": [{"address": "a.example.com", "ports": {"http": 8080}}]
            }),
        ),
        (
            Kind::WorkloadEntry,
            serde_json::json!({"address": "1.2.3.4", "ports": {"http": 80}, "weight": 2}),
        ),
    ];
    for (kind, json) in cases {
        let spec = Spec::from_json(kind, json.clone()).unwrap();
        assert_eq!(serde_json::to_value(&spec).unwrap(), json);
        round_trip(&spec);
    }
}

// ---------------------------------------------------------------------------
// DestinationRule: invalid
// ---------------------------------------------------------------------------

const DR: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: r
spec:
";

fn dr(body: &str) -> String {
    format!("{DR}{body}")
}

#[test]
fn dr_host_empty() {
    check(
        &dr("  host: \"\"\n"),
        &[
            "f.yaml:6:9: error: DestinationRule/default/r: spec.host: host is required: name the service the rule applies to",
        ],
    );
}

#[test]
fn dr_host_missing() {
    check(
        &dr("  subsets:\n  - name: v1\n"),
        &[
            "f.yaml:6:3: error: DestinationRule/default/r: spec.host: host is required: name the service the rule applies to",
        ],
    );
}

#[test]
fn dr_host_invalid() {
    check(
        &dr("  host: api.*.com\n"),
        &[
            "f.yaml:6:9: error: DestinationRule/default/r: spec.host: invalid host \"api.*.com\": \"*\" is not a DNS label (a wildcard may only be a leading `*.`)",
        ],
    );
}

#[test]
fn dr_subset_name_missing() {
    check(
        &dr("  host: reviews\n  subsets:\n  - labels: {version: v1}\n"),
        &[
            "f.yaml:8:5: error: DestinationRule/default/r: spec.subsets[0].name: subset name is required",
        ],
    );
}

#[test]
fn dr_subset_name_not_a_dns_label() {
    check(
        &dr("  host: reviews\n  subsets:\n  - name: V1.0\n    labels: {version: v1}\n"),
        &[
            "f.yaml:8:11: error: DestinationRule/default/r: spec.subsets[0].name: subset name \"V1.0\" is not a DNS label (lowercase letters, digits and '-', at most 63 characters)",
        ],
    );
}

#[test]
fn dr_duplicate_subset_names() {
    check(
        &dr(
            "  host: reviews\n  subsets:\n  - name: v1\n    labels: {version: v1}\n  - name: v1\n    labels: {version: v2}\n",
        ),
        &[
            "f.yaml:10:11: error: DestinationRule/default/r: spec.subsets[1].name: duplicate subset name \"v1\" (first defined at subsets[0]); subset names must be unique",
        ],
    );
}

#[test]
fn dr_simple_and_consistent_hash() {
    check(
        &dr(
            "  host: reviews\n  trafficPolicy:\n    loadBalancer:\n      simple: RANDOM\n      consistentHash:\n        useSourceIp: true\n",
        ),
        &[
            "f.yaml:9:7: error: DestinationRule/default/r: spec.trafficPolicy.loadBalancer: simple and consistentHash are alternatives; set only one of them",
        ],
    );
}

#[test]
fn dr_consistent_hash_without_key() {
    check(
        &dr(
            "  host: reviews\n  trafficPolicy:\n    loadBalancer:\n      consistentHash:\n        minimumRingSize: 1024\n",
        ),
        &[
            "f.yaml:10:9: error: DestinationRule/default/r: spec.trafficPolicy.loadBalancer.consistentHash: a hash key is required: set one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName",
            "f.yaml:10:26: warning: DestinationRule/default/r: spec.trafficPolicy.loadBalancer.consistentHash.minimumRingSize: minimumRingSize here is deprecated; write ringHash.minimumRingSize",
        ],
    );
}

#[test]
fn dr_consistent_hash_with_two_keys() {
    check(
        &dr(
            "  host: reviews\n  trafficPolicy:\n    loadBalancer:\n      consistentHash:\n        httpHeaderName: x-user\n        httpQueryParameterName: user\n",
        ),
        &[
            "f.yaml:10:9: error: DestinationRule/default/r: spec.trafficPolicy.loadBalancer.consistentHash: httpHeaderName and httpQueryParameterName are alternatives; set only one hash key",
        ],
    );
}

#[test]
fn dr_http_cookie_without_name() {
    check(
        &dr(
            "  host: reviews\n  trafficPolicy:\n    loadBalancer:\n      consistentHash:\n        httpCookie:\n          ttl: 10s\n",
        ),
        &[
            "f.yaml:11:11: error: DestinationRule/default/r: spec.trafficPolicy.loadBalancer.consistentHash.httpCookie: cookie name is required",
        ],
    );
}

#[test]
fn dr_ring_hash_and_maglev() {
    check(
        &dr(
            "  host: reviews\n  trafficPolicy:\n    loadBalancer:\n      consistentHash:\n        useSourceIp: true\n        ringHash: {minimumRingSize: 1024}\n        maglev: {tableSize: 65537}\n",
        ),
        &[
            "f.yaml:10:9: error: DestinationRule/default/r: spec.trafficPolicy.loadBalancer.consistentHash: ringHash and maglev are alternatives; set only one algorithm",
        ],
    );
}

#[test]
fn dr_maglev_table_size_not_prime() {
    check(
        &dr(
            "  host: reviews\n  trafficPolicy:\n    loadBalancer:\n      consistentHash:\n        useSourceIp: true\n        maglev:\n          tableSize: 65536\n",
        ),
        &[
            "f.yaml:12:22: error: DestinationRule/default/r: spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize: table size 65536 is not a prime number (Envoy requires a prime, e.g. 65537)",
        ],
    );
}

#[test]
fn dr_ejection_and_health_percent_out_of_range() {
    check(
        &dr(
            "  host: reviews\n  trafficPolicy:\n    outlierDetection:\n      maxEjectionPercent: 150\n      minHealthPercent: -5\n",
        ),
        &[
            "f.yaml:9:27: error: DestinationRule/default/r: spec.trafficPolicy.outlierDetection.maxEjectionPercent: percentage 150 is outside 0..100",
            "f.yaml:10:25: error: DestinationRule/default/r: spec.trafficPolicy.outlierDetection.minHealthPercent: percentage -5 is outside 0..100",
        ],
    );
}

#[test]
fn dr_negative_connection_pool_counts() {
    check(
        &dr(
            "  host: reviews\n  trafficPolicy:\n    connectionPool:\n      tcp:\n        maxConnections: -1\n      http:\n        maxRetries: -3\n",
        ),
        &[
            "f.yaml:10:25: error: DestinationRule/default/r: spec.trafficPolicy.connectionPool.tcp.maxConnections: -1 is negative; write a count of 0 or more",
            "f.yaml:12:21: error: DestinationRule/default/r: spec.trafficPolicy.connectionPool.http.maxRetries: -3 is negative; write a count of 0 or more",
        ],
    );
}

#[test]
fn dr_tls_credential_name_with_client_certificate() {
    check(
        &dr(
            "  host: reviews\n  trafficPolicy:\n    tls:\n      mode: SIMPLE\n      credentialName: client-cred\n      clientCertificate: /etc/cert.pem\n",
        ),
        &[
            "f.yaml:11:26: error: DestinationRule/default/r: spec.trafficPolicy.tls.clientCertificate: clientCertificate cannot be combined with credentialName; the secret named by credentialName supplies it",
        ],
    );
}

#[test]
fn dr_tls_mutual_without_certificates() {
    check(
        &dr(
            "  host: reviews\n  trafficPolicy:\n    tls:\n      mode: MUTUAL\n      clientCertificate: /etc/cert.pem\n",
        ),
        &[
            "f.yaml:9:7: error: DestinationRule/default/r: spec.trafficPolicy.tls: mode MUTUAL needs credentialName, or clientCertificate and privateKey",
        ],
    );
}

#[test]
fn dr_port_level_settings_without_port() {
    check(
        &dr(
            "  host: reviews\n  trafficPolicy:\n    portLevelSettings:\n    - loadBalancer: {simple: RANDOM}\n",
        ),
        &[
            "f.yaml:9:7: error: DestinationRule/default/r: spec.trafficPolicy.portLevelSettings[0]: port is required: portLevelSettings entries apply to one port",
        ],
    );
}

#[test]
fn dr_port_level_settings_port_out_of_range() {
    check(
        &dr(
            "  host: reviews\n  trafficPolicy:\n    portLevelSettings:\n    - port: {number: 70000}\n      loadBalancer: {simple: RANDOM}\n",
        ),
        &[
            "f.yaml:9:22: error: DestinationRule/default/r: spec.trafficPolicy.portLevelSettings[0].port.number: port 70000 is outside 1..65535",
        ],
    );
}

#[test]
fn dr_duplicate_port_level_settings() {
    check(
        &dr(
            "  host: reviews\n  trafficPolicy:\n    portLevelSettings:\n    - port: {number: 80}\n      loadBalancer: {simple: RANDOM}\n    - port: {number: 80}\n      tls: {mode: ISTIO_MUTUAL}\n",
        ),
        &[
            "f.yaml:11:22: error: DestinationRule/default/r: spec.trafficPolicy.portLevelSettings[1].port.number: port 80 already has settings in portLevelSettings[0]; merge them into one entry",
        ],
    );
}

#[test]
fn dr_unknown_field_is_reported_with_a_suggestion() {
    check(
        &dr(
            "  host: reviews\n  trafficPolicy:\n    outlierDetection:\n      consecutive5xxError: 5\n",
        ),
        &[
            "f.yaml:9:7: error: DestinationRule/default/r: spec.trafficPolicy.outlierDetection.consecutive5xxError: unknown field `consecutive5xxError` (did you mean `consecutive5xxErrors`?)",
        ],
    );
}

#[test]
fn dr_unknown_lb_value_is_reported_with_a_suggestion() {
    check(
        &dr("  host: reviews\n  trafficPolicy:\n    loadBalancer:\n      simple: ROUND_ROBBIN\n"),
        &[
            "f.yaml:9:15: error: DestinationRule/default/r: spec.trafficPolicy.loadBalancer.simple: unknown value `ROUND_ROBBIN`, expected one of UNSPECIFIED, LEAST_CONN, RANDOM, PASSTHROUGH, ROUND_ROBIN, LEAST_REQUEST (did you mean `ROUND_ROBIN`?)",
        ],
    );
}

#[test]
fn dr_locality_weights_must_add_up_to_100() {
    check(
        &dr(
            "  host: reviews\n  trafficPolicy:\n    loadBalancer:\n      localityLbSetting:\n        distribute:\n        - from: us-west/*\n          to: {\"us-west/*\": 50, \"us-east/*\": 40}\n",
        ),
        &[
            "f.yaml:12:15: error: DestinationRule/default/r: spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to: weights add up to 90; they must add up to 100",
        ],
    );
}

// ---------------------------------------------------------------------------
// DestinationRule: warnings
// ---------------------------------------------------------------------------

#[test]
fn dr_deprecated_consecutive_errors_warns() {
    check(
        &dr(
            "  host: reviews\n  trafficPolicy:\n    outlierDetection:\n      consecutiveErrors: 7\n",
        ),
        &[
            "f.yaml:9:26: warning: DestinationRule/default/r: spec.trafficPolicy.outlierDetection.consecutiveErrors: consecutiveErrors is deprecated and ignored by Istio; use consecutive5xxErrors",
        ],
    );
}

#[test]
fn dr_gateway_errors_not_below_5xx_errors_warns() {
    check(
        &dr(
            "  host: reviews\n  trafficPolicy:\n    outlierDetection:\n      consecutive5xxErrors: 3\n      consecutiveGatewayErrors: 4\n",
        ),
        &[
            "f.yaml:10:33: warning: DestinationRule/default/r: spec.trafficPolicy.outlierDetection.consecutiveGatewayErrors: consecutiveGatewayErrors (4) >= consecutive5xxErrors (3) has no effect: gateway errors also count as 5xx errors, so the 5xx threshold always trips first",
        ],
    );
}

#[test]
fn dr_insecure_skip_verify_warns() {
    check(
        &dr(
            "  host: reviews\n  trafficPolicy:\n    tls:\n      mode: SIMPLE\n      insecureSkipVerify: true\n",
        ),
        &[
            "f.yaml:10:27: warning: DestinationRule/default/r: spec.trafficPolicy.tls.insecureSkipVerify: insecureSkipVerify turns off verification of the server certificate; anyone on the path can impersonate the server",
        ],
    );
}

#[test]
fn dr_least_conn_warns() {
    check(
        &dr(
            "  host: reviews\n  subsets:\n  - name: v1\n    trafficPolicy:\n      loadBalancer: {simple: LEAST_CONN}\n",
        ),
        &[
            "f.yaml:10:30: warning: DestinationRule/default/r: spec.subsets[0].trafficPolicy.loadBalancer.simple: LEAST_CONN is deprecated; it means LEAST_REQUEST, write that instead",
        ],
    );
}

// ---------------------------------------------------------------------------
// Gateway
// ---------------------------------------------------------------------------

const GW: &str = "apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: g
spec:
  selector: {istio: ingressgateway}
";

fn gw(body: &str) -> String {
    format!("{GW}{body}")
}

#[test]
fn gw_without_servers() {
    check(
        &gw(""),
        &[
            "f.yaml:6:3: error: Gateway/default/g: spec.servers: a gateway needs at least one server",
        ],
    );
}

#[test]
fn gw_server_without_hosts() {
    check(
        &gw("  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n"),
        &[
            "f.yaml:8:5: error: Gateway/default/g: spec.servers[0].hosts: a server needs at least one host",
        ],
    );
}

#[test]
fn gw_host_with_two_slashes() {
    check(
        &gw("  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [a/b/c]\n"),
        &[
            "f.yaml:9:13: error: Gateway/default/g: spec.servers[0].hosts[0]: invalid host \"a/b/c\": write it as [namespace/]dnsName, e.g. prod/api.example.com",
        ],
    );
}

#[test]
fn gw_host_with_two_wildcards() {
    check(
        &gw(
            "  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"ns/*\", \"*.*.com\"]\n",
        ),
        &[
            "f.yaml:9:21: error: Gateway/default/g: spec.servers[0].hosts[1]: invalid host \"*.*.com\": \"*\" is not a DNS label (a wildcard may only be a leading `*.`)",
        ],
    );
}

#[test]
fn gw_port_out_of_range() {
    check(
        &gw("  servers:\n  - port: {number: 0, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n"),
        &[
            "f.yaml:8:20: error: Gateway/default/g: spec.servers[0].port.number: port 0 is outside 1..65535",
        ],
    );
}

#[test]
fn gw_unknown_protocol() {
    check(
        &gw(
            "  servers:\n  - port: {number: 80, name: http, protocol: HTTP3}\n    hosts: [\"*\"]\n",
        ),
        &[
            "f.yaml:8:46: error: Gateway/default/g: spec.servers[0].port.protocol: unknown protocol \"HTTP3\", expected one of HTTP, HTTPS, GRPC, GRPC-WEB, HTTP2, MONGO, TCP, TLS",
        ],
    );
}

#[test]
fn gw_simple_tls_without_credentials() {
    check(
        &gw(
            "  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"*\"]\n    tls:\n      mode: SIMPLE\n",
        ),
        &[
            "f.yaml:11:7: error: Gateway/default/g: spec.servers[0].tls: mode SIMPLE needs credentialName, credentialNames, or serverCertificate and privateKey",
        ],
    );
}

#[test]
fn gw_mutual_tls_with_certificate_but_no_key() {
    check(
        &gw(
            "  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"*\"]\n    tls:\n      mode: MUTUAL\n      serverCertificate: /etc/cert.pem\n",
        ),
        &[
            "f.yaml:11:7: error: Gateway/default/g: spec.servers[0].tls: mode MUTUAL needs privateKey alongside serverCertificate",
        ],
    );
}

#[test]
fn gw_https_server_without_tls() {
    check(
        &gw(
            "  servers:\n  - port: {number: 443, name: https, protocol: https}\n    hosts: [\"*\"]\n",
        ),
        &[
            "f.yaml:8:5: error: Gateway/default/g: spec.servers[0]: a HTTPS server needs tls settings (for example mode: SIMPLE and credentialName)",
        ],
    );
}

#[test]
fn gw_same_port_conflicting_protocols() {
    check(
        &gw(
            "  servers:\n  - port: {number: 8080, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n  - port: {number: 8080, name: tcp, protocol: TCP}\n    hosts: [\"*\"]\n",
        ),
        &[
            "f.yaml:10:47: error: Gateway/default/g: spec.servers[1].port.protocol: port 8080 is already served as HTTP by servers[0]; TCP cannot share it",
        ],
    );
}

#[test]
fn gw_duplicate_port_names() {
    check(
        &gw(
            "  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [a.example.com]\n    tls: {mode: SIMPLE, credentialName: a}\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [b.example.com]\n    tls: {mode: SIMPLE, credentialName: b}\n",
        ),
        &[
            "f.yaml:11:31: error: Gateway/default/g: spec.servers[1].port.name: port name \"https\" is already used by servers[0]; port names must be unique within a gateway",
        ],
    );
}

#[test]
fn gw_tls_mode_on_plain_http_server() {
    check(
        &gw(
            "  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n    tls: {mode: SIMPLE, credentialName: a}\n",
        ),
        &[
            "f.yaml:10:10: error: Gateway/default/g: spec.servers[0].tls: tls settings other than httpsRedirect need an HTTPS or TLS port, not HTTP",
        ],
    );
}

#[test]
fn gw_istio_mutual_with_credential() {
    check(
        &gw(
            "  servers:\n  - port: {number: 15443, name: tls, protocol: TLS}\n    hosts: [\"*\"]\n    tls: {mode: ISTIO_MUTUAL, credentialName: a}\n",
        ),
        &[
            "f.yaml:10:47: error: Gateway/default/g: spec.servers[0].tls.credentialName: ISTIO_MUTUAL uses the mesh certificates; remove credentialName",
        ],
    );
}

#[test]
fn gw_unknown_tls_mode() {
    check(
        &gw(
            "  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"*\"]\n    tls: {mode: SIMPEL, credentialName: a}\n",
        ),
        &[
            "f.yaml:10:17: error: Gateway/default/g: spec.servers[0].tls.mode: unknown value `SIMPEL`, expected one of PASSTHROUGH, SIMPLE, MUTUAL, AUTO_PASSTHROUGH, ISTIO_MUTUAL, OPTIONAL_MUTUAL (did you mean `SIMPLE`?)",
        ],
    );
}

// ---------------------------------------------------------------------------
// ServiceEntry
// ---------------------------------------------------------------------------

const SE: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: s
spec:
";

fn se(body: &str) -> String {
    format!("{SE}{body}")
}

const PORTS: &str = "  ports:\n  - {number: 443, name: https, protocol: TLS}\n";

#[test]
fn se_hosts_empty() {
    check(
        &se(&format!("  hosts: []\n{PORTS}")),
        &[
            "f.yaml:6:10: error: ServiceEntry/default/s: spec.hosts: a service entry needs at least one host",
        ],
    );
}

#[test]
fn se_bare_star_host() {
    check(
        &se(&format!("  hosts: [\"*\"]\n{PORTS}")),
        &[
            "f.yaml:6:11: error: ServiceEntry/default/s: spec.hosts[0]: `*` alone is not allowed here; name a host or a `*.domain` wildcard",
        ],
    );
}

#[test]
fn se_resolution_none_with_endpoints() {
    check(
        &se(&format!(
            "  hosts: [a.example.com]\n{PORTS}  resolution: NONE\n  endpoints:\n  - address: 1.1.1.1\n"
        )),
        &[
            "f.yaml:11:5: error: ServiceEntry/default/s: spec.endpoints: endpoints are not used with resolution NONE; set resolution STATIC or DNS, or remove them",
        ],
    );
}

#[test]
fn se_static_without_endpoints() {
    check(
        &se(&format!(
            "  hosts: [a.example.com]\n{PORTS}  resolution: STATIC\n"
        )),
        &[
            "f.yaml:9:15: error: ServiceEntry/default/s: spec.resolution: no endpoints provided: resolution STATIC needs endpoints or a workloadSelector",
        ],
    );
}

#[test]
fn se_static_endpoint_must_be_an_ip() {
    check(
        &se(&format!(
            "  hosts: [a.example.com]\n{PORTS}  resolution: STATIC\n  endpoints:\n  - address: db.example.com\n"
        )),
        &[
            "f.yaml:11:14: error: ServiceEntry/default/s: spec.endpoints[0].address: invalid address \"db.example.com\": resolution STATIC needs an IP address or a unix:// path",
        ],
    );
}

#[test]
fn se_workload_selector_with_endpoints() {
    check(
        &se(&format!(
            "  hosts: [a.example.com]\n{PORTS}  resolution: STATIC\n  workloadSelector:\n    labels: {{app: vm}}\n  endpoints:\n  - address: 1.1.1.1\n"
        )),
        &[
            "f.yaml:11:5: error: ServiceEntry/default/s: spec.workloadSelector: workloadSelector and endpoints are alternatives; set only one of them",
        ],
    );
}

#[test]
fn se_without_ports() {
    check(
        &se("  hosts: [a.example.com]\n  resolution: DNS\n"),
        &[
            "f.yaml:6:3: error: ServiceEntry/default/s: spec.ports: service entry must have at least one port",
        ],
    );
}

#[test]
fn se_duplicate_port_numbers_and_names() {
    check(
        &se(
            "  hosts: [a.example.com]\n  ports:\n  - {number: 80, name: http, protocol: HTTP}\n  - {number: 80, name: http, protocol: HTTP}\n",
        ),
        &[
            "f.yaml:9:14: error: ServiceEntry/default/s: spec.ports[1].number: port 80 is already defined by ports[0]",
            "f.yaml:9:24: error: ServiceEntry/default/s: spec.ports[1].name: port name \"http\" is already used by ports[0]",
        ],
    );
}

#[test]
fn se_invalid_port_protocol() {
    check(
        &se("  hosts: [a.example.com]\n  ports:\n  - {number: 80, name: http, protocol: HTTP3}\n"),
        &[
            "f.yaml:8:40: error: ServiceEntry/default/s: spec.ports[0].protocol: unknown protocol \"HTTP3\", expected one of HTTP, HTTPS, GRPC, GRPC-WEB, HTTP2, MONGO, TCP, TLS, UDP, REDIS, MYSQL",
        ],
    );
}

#[test]
fn se_endpoint_port_name_matching_no_port_warns() {
    check(
        &se(&format!(
            "  hosts: [a.example.com]\n{PORTS}  resolution: DNS\n  endpoints:\n  - address: a.example.com\n    ports: {{http: 8080}}\n"
        )),
        &[
            "f.yaml:12:19: warning: ServiceEntry/default/s: spec.endpoints[0].ports.http: endpoint port \"http\" matches no port name of the service entry (https); it is ignored",
        ],
    );
}

#[test]
fn se_invalid_address() {
    check(
        &se(&format!(
            "  hosts: [a.example.com]\n  addresses: [10.0.0.0/40]\n{PORTS}"
        )),
        &[
            "f.yaml:7:15: error: ServiceEntry/default/s: spec.addresses[0]: invalid address \"10.0.0.0/40\": expected an IP address or a CIDR block",
        ],
    );
}

#[test]
fn se_dns_wildcard_without_endpoints() {
    check(
        &se(&format!(
            "  hosts: [\"*.example.com\"]\n{PORTS}  resolution: DNS\n"
        )),
        &[
            "f.yaml:6:11: error: ServiceEntry/default/s: spec.hosts[0]: wildcard host \"*.example.com\" cannot be resolved with resolution DNS; add endpoints or use resolution NONE or DYNAMIC_DNS",
        ],
    );
}

#[test]
fn se_unknown_resolution() {
    check(
        &se(&format!(
            "  hosts: [a.example.com]\n{PORTS}  resolution: DNS_ROUNDROBIN\n"
        )),
        &[
            "f.yaml:9:15: error: ServiceEntry/default/s: spec.resolution: unknown value `DNS_ROUNDROBIN`, expected one of NONE, STATIC, DNS, DNS_ROUND_ROBIN, DYNAMIC_DNS (did you mean `DNS_ROUND_ROBIN`?)",
        ],
    );
}

// ---------------------------------------------------------------------------
// WorkloadEntry
// ---------------------------------------------------------------------------

const WE: &str = "apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: w
spec:
";

#[test]
fn we_address_empty() {
    check(
        &format!("{WE}  address: \"\"\n  ports: {{http: 80}}\n"),
        &[
            "f.yaml:6:12: error: WorkloadEntry/default/w: spec.address: address is required: an IP address, a DNS name or a unix:// path",
        ],
    );
}

#[test]
fn we_ports_out_of_range() {
    check(
        &format!("{WE}  address: 10.0.0.1\n  ports:\n    http: 70000\n    grpc: 0\n"),
        &[
            "f.yaml:8:11: error: WorkloadEntry/default/w: spec.ports.http: port 70000 is outside 1..65535",
            "f.yaml:9:11: error: WorkloadEntry/default/w: spec.ports.grpc: port 0 is outside 1..65535",
        ],
    );
}
