//! Config load and lookup costs: loading and compiling 10,000 VirtualServices
//! plus 10,000 DestinationRules, and the route-table lookup by host at 10,
//! 1,000 and 10,000 hosts (it must stay flat). Results: docs/performance.md.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use mesh_core::load::{LoadOptions, load_str};
use mesh_core::snapshot::Snapshot;

/// `n` VirtualServices (canary split with a header override, retries and a
/// timeout) and `n` DestinationRules (two subsets, a load balancer, pool
/// limits and outlier detection), one pair per host.
fn config(n: usize) -> String {
    let mut out = String::with_capacity(n * 1200);
    for i in 0..n {
        out.push_str(&format!(
            r#"---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: svc-{i}
spec:
  hosts:
  - svc-{i}
  http:
  - match:
    - headers:
        x-canary:
          exact: "true"
    route:
    - destination:
        host: svc-{i}
        subset: v2
  - route:
    - destination:
        host: svc-{i}
        subset: v1
      weight: 90
    - destination:
        host: svc-{i}
        subset: v2
      weight: 10
    retries:
      attempts: 3
      perTryTimeout: 2s
      retryOn: 5xx,reset,connect-failure
    timeout: 10s
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: svc-{i}
spec:
  host: svc-{i}
  trafficPolicy:
    loadBalancer:
      simple: LEAST_REQUEST
    connectionPool:
      tcp:
        maxConnections: 100
      http:
        http1MaxPendingRequests: 50
    outlierDetection:
      consecutive5xxErrors: 5
      interval: 30s
      baseEjectionTime: 30s
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
"#
        ));
    }
    out
}

fn compile(text: &str) -> Snapshot {
    let loaded = load_str("bench.yaml", text, &LoadOptions::default());
    assert!(!loaded.diagnostics.has_errors());
    Snapshot::compile(1, loaded)
}

fn load_and_compile(c: &mut Criterion) {
    let text = config(10_000);
    let mut group = c.benchmark_group("config");
    group.sample_size(10);
    group.bench_function("load_compile_10k_vs_10k_dr", |b| {
        // The old snapshot is dropped by whichever reader lets go of it last,
        // not on the reload path: keep its drop out of the measurement.
        b.iter_with_large_drop(|| compile(black_box(&text)));
    });
    group.finish();
}

fn route_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_lookup");
    for hosts in [10usize, 1_000, 10_000] {
        let snapshot = compile(&config(hosts));
        // Callers spell hosts every way a caller may: short, with a port,
        // namespace-qualified, and fully qualified.
        let authorities: Vec<String> = (0..1024)
            .map(|k| {
                let i = (k * 7919) % hosts;
                match k % 4 {
                    0 => format!("svc-{i}"),
                    1 => format!("svc-{i}:8080"),
                    2 => format!("svc-{i}.default"),
                    _ => format!("svc-{i}.default.svc.cluster.local"),
                }
            })
            .collect();
        let mut k = 0usize;
        group.bench_with_input(BenchmarkId::from_parameter(hosts), &hosts, |b, _| {
            b.iter(|| {
                k = (k + 1) % authorities.len();
                let found = snapshot
                    .index
                    .mesh_route(black_box(&authorities[k]), "default");
                assert!(found.is_some());
                black_box(found)
            });
        });
    }
    group.finish();
}

criterion_group!(benches, load_and_compile, route_lookup);
criterion_main!(benches);
