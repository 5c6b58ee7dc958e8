//! Tests of the outlier stage: alone (scripted backends by address) and
//! behind the real route and balance stages, all on paused tokio time.

use std::convert::Infallible;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU16, AtomicU64};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::HeaderValue;
use mesh_core::http::empty;
use mesh_core::identity::Workload;
use mesh_core::load::{LoadOptions, load_str};
use mesh_core::schema::istio_networking::OutlierDetection;
use mesh_core::snapshot::Snapshot;
use mesh_route::balance::InFlight;
use mesh_route::decision::DestinationKey;
use mesh_route::layer::{BalanceLayer, RouteLayer, Routes, Target};
use mesh_route::random::SplitMix;
use mesh_route::routing::{Balancers, RoutingTable};
use tower::{Layer, ServiceBuilder, ServiceExt};

use super::*;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Backends by dialed address: the status each answers (0: never
/// answers; 1000 + s: status s with flag UF, 2000 + s: with flag UO),
/// and how many requests each got.
struct Backends {
    hosts: Vec<(String, AtomicU16, AtomicU64)>,
}

impl Backends {
    fn new(addresses: &[&str]) -> Arc<Backends> {
        Arc::new(Backends {
            hosts: addresses
                .iter()
                .map(|a| (a.to_string(), AtomicU16::new(200), AtomicU64::new(0)))
                .collect(),
        })
    }

    fn entry(&self, authority: &str) -> &(String, AtomicU16, AtomicU64) {
        self.hosts.iter().find(|h| h.0 == authority).unwrap()
    }

    fn set(&self, authority: &str, status: u16) {
        self.entry(authority).1.store(status, Relaxed);
    }

    fn hits(&self, authority: &str) -> u64 {
        self.entry(authority).2.load(Relaxed)
    }

    fn service(
        self: &Arc<Self>,
    ) -> impl tower::Service<
        Request<Body>,
        Response = Response<Body>,
        Error = Infallible,
        Future = BoxFuture<Result<Response<Body>, Infallible>>,
    > + Clone
    + Send
    + 'static {
        let backends = Arc::clone(self);
        tower::service_fn(move |req: Request<Body>| {
            let authority = req.extensions().get::<Target>().unwrap().authority.clone();
            let (_, status, hits) = backends.entry(&authority);
            hits.fetch_add(1, Relaxed);
            let code = status.load(Relaxed);
            let fut: BoxFuture<Result<Response<Body>, Infallible>> = Box::pin(async move {
                if code == 0 {
                    std::future::pending::<()>().await;
                }
                let (status, flag) = match code {
                    c if c >= 2000 => (c - 2000, Some("UO")),
                    c if c >= 1000 => (c - 1000, Some("UF")),
                    c => (c, None),
                };
                let mut resp = Response::new(empty());
                *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                if let Some(flag) = flag {
                    resp.headers_mut()
                        .insert(RESPONSE_FLAGS_HEADER, HeaderValue::from_static(flag));
                }
                Ok(resp)
            });
            fut
        })
    }
}

fn to(authority: &str) -> Request<Body> {
    let mut req = Request::new(empty());
    req.extensions_mut().insert(Target {
        authority: Arc::from(authority),
        endpoint: 0,
        guard: InFlight::detached(),
        http2: None,
    });
    req
}

fn policy(consecutive_5xx: u32, consecutive_gateway: u32) -> OutlierPolicy {
    OutlierPolicy {
        consecutive_5xx,
        consecutive_gateway,
        max_ejection_percent: 100,
        ..OutlierPolicy::default()
    }
}

/// Sends one request per status to `authority` (standalone layer).
async fn send(layer: &OutlierLayer, backends: &Arc<Backends>, authority: &str, statuses: &[u16]) {
    for status in statuses {
        backends.set(authority, *status);
        let svc = layer.layer(backends.service());
        let _ = svc.oneshot(to(authority)).await;
    }
}

fn ejected(layer: &OutlierLayer, authority: &str) -> bool {
    layer
        .outliers()
        .status(authority)
        .is_some_and(|s| s.ejected)
}

#[tokio::test(start_paused = true)]
async fn a_success_resets_the_run_of_5xx() {
    let backends = Backends::new(&["a:80"]);
    let layer = OutlierLayer::new(policy(3, 0));
    send(&layer, &backends, "a:80", &[500, 503, 200, 500, 500]).await;
    assert!(!ejected(&layer, "a:80"), "the 200 broke the run");
    assert_eq!(layer.outliers().status("a:80").unwrap().consecutive_5xx, 2);
    send(&layer, &backends, "a:80", &[599]).await;
    assert!(ejected(&layer, "a:80"), "three 5xx in a row");
    let status = layer.outliers().status("a:80").unwrap();
    assert_eq!((status.ejections, status.consecutive_5xx), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn gateway_errors_are_502_503_504_and_local_failures_only() {
    let backends = Backends::new(&["a:80", "b:80", "c:80", "d:80"]);
    // 5xx detection off: only the gateway run ejects.
    let layer = OutlierLayer::new(policy(0, 2));
    send(&layer, &backends, "a:80", &[500, 500, 500, 502, 500, 504]).await;
    assert!(!ejected(&layer, "a:80"), "a 500 breaks a gateway run");
    send(&layer, &backends, "a:80", &[503, 504]).await;
    assert!(ejected(&layer, "a:80"));
    // Connect failures (503 UF from the connector) are gateway errors.
    send(&layer, &backends, "b:80", &[1503, 1503]).await;
    assert!(ejected(&layer, "b:80"));
    // Circuit-broken replies are not the endpoint's doing: ignored, and
    // they do not break a run either.
    send(&layer, &backends, "c:80", &[2503, 2503, 2503]).await;
    assert!(!ejected(&layer, "c:80"));
    send(&layer, &backends, "c:80", &[502, 2503, 502]).await;
    assert!(ejected(&layer, "c:80"));
    // An attempt abandoned before its answer (a timeout above) is a
    // local-origin timeout.
    for _ in 0..2 {
        backends.set("d:80", 0);
        let svc = layer.layer(backends.service());
        let call = svc.oneshot(to("d:80"));
        assert!(
            tokio::time::timeout(Duration::from_secs(1), call)
                .await
                .is_err()
        );
    }
    assert!(ejected(&layer, "d:80"));

    // And gateway errors count toward the 5xx run too.
    let layer = OutlierLayer::new(policy(3, 0));
    send(&layer, &backends, "a:80", &[502, 1503, 500]).await;
    assert!(ejected(&layer, "a:80"));
}

#[tokio::test(start_paused = true)]
async fn split_local_origin_failures_have_their_own_run() {
    let backends = Backends::new(&["a:80"]);
    let layer = OutlierLayer::new(OutlierPolicy {
        consecutive_local_origin: Some(2),
        ..policy(2, 0)
    });
    // A connect failure then a 500: separate runs, neither at 2.
    send(&layer, &backends, "a:80", &[1503, 500, 1503]).await;
    assert!(!ejected(&layer, "a:80"), "a response breaks the local run");
    send(&layer, &backends, "a:80", &[1503]).await;
    assert!(ejected(&layer, "a:80"));
}

/// Ejects `authority` (policy with consecutive_5xx 1) and returns when.
async fn eject(layer: &OutlierLayer, backends: &Arc<Backends>, authority: &str) {
    send(layer, backends, authority, &[500]).await;
    assert!(ejected(layer, authority));
}

#[tokio::test(start_paused = true)]
async fn ejections_grow_by_base_time_up_to_the_cap_and_return_on_a_sweep() {
    let backends = Backends::new(&["a:80"]);
    let layer = OutlierLayer::new(OutlierPolicy {
        interval: Duration::from_secs(10),
        base_ejection_time: Duration::from_secs(30),
        ..policy(1, 0)
    });
    let ms = Duration::from_millis(1);
    // Ejected at t = 0 (a sweep tick), out for 30 s, 60 s, ... 300 s,
    // then 300 s again: the multiplier stops at 11 (30 s × 11 ≥ cap +
    // base), and every ejection here lands on a tick.
    for k in 1..=12u64 {
        eject(&layer, &backends, "a:80").await;
        let expected = Duration::from_secs((30 * k).min(300));
        tokio::time::advance(expected - ms).await;
        assert!(ejected(&layer, "a:80"), "ejection {k} lasts {expected:?}");
        tokio::time::advance(ms).await;
        assert!(!ejected(&layer, "a:80"), "back after {expected:?}");
    }
    let status = layer.outliers().status("a:80").unwrap();
    assert_eq!((status.ejections, status.multiplier), (12, 11));
    // Each sweep that finds it in service takes one off the multiplier.
    tokio::time::advance(Duration::from_secs(50)).await;
    assert_eq!(layer.outliers().status("a:80").unwrap().multiplier, 6);
    eject(&layer, &backends, "a:80").await;
    assert_eq!(layer.outliers().status("a:80").unwrap().multiplier, 7);
    tokio::time::advance(Duration::from_secs(210) - ms).await;
    assert!(ejected(&layer, "a:80"));
    tokio::time::advance(ms).await;
    assert!(!ejected(&layer, "a:80"));
    // 200 quiet seconds decay it to 0: the next ejection is 30 s again.
    tokio::time::advance(Duration::from_secs(200)).await;
    assert_eq!(layer.outliers().status("a:80").unwrap().multiplier, 0);
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_returns_at_the_first_sweep_after_its_time() {
    let backends = Backends::new(&["a:80"]);
    let layer = OutlierLayer::new(OutlierPolicy {
        interval: Duration::from_secs(10),
        base_ejection_time: Duration::from_secs(30),
        ..policy(1, 0)
    });
    // The cluster (and its sweep grid) starts at t = 0; ejection at
    // t = 0.5 s is due at 30.5 s and returns on the 40 s tick.
    send(&layer, &backends, "a:80", &[200]).await;
    tokio::time::advance(Duration::from_millis(500)).await;
    eject(&layer, &backends, "a:80").await;
    tokio::time::advance(Duration::from_millis(39_499)).await;
    assert!(ejected(&layer, "a:80"));
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(!ejected(&layer, "a:80"));
    // Its runs start over: one more error is a new run of one.
    assert_eq!(layer.outliers().status("a:80").unwrap().consecutive_5xx, 0);
}

#[test]
fn max_ejection_percent_is_a_hard_cap() {
    // The default 10 %: nothing with fewer than 10 endpoints.
    for n in [1, 2, 3, 9] {
        assert!(!may_eject(0, n, 10), "{n} endpoints at 10 %");
    }
    assert!(may_eject(0, 10, 10));
    assert!(!may_eject(1, 10, 10));
    // 50 %: one of 2 or 3, none of 1.
    assert!(!may_eject(0, 1, 50));
    assert!(may_eject(0, 2, 50) && !may_eject(1, 2, 50));
    assert!(may_eject(0, 3, 50) && !may_eject(1, 3, 50));
    assert!(may_eject(4, 10, 50) && !may_eject(5, 10, 50));
    // 34 %: one of 3 (33.3 % ≤ 34 %), 100 %: all.
    assert!(may_eject(0, 3, 34) && !may_eject(0, 3, 33));
    assert!(may_eject(0, 1, 100) && may_eject(2, 3, 100) && !may_eject(3, 3, 100));
    assert!(!may_eject(0, 0, 100));
}

#[test]
fn panic_is_below_min_health_percent() {
    assert!(!in_panic(3, 3, 0), "0 never panics");
    assert!(!in_panic(1, 3, 50), "67 % healthy");
    assert!(in_panic(2, 3, 50), "33 % healthy");
    assert!(!in_panic(1, 2, 50), "exactly 50 % is not below");
    assert!(in_panic(1, 10, 100));
}

#[tokio::test(start_paused = true)]
async fn with_the_default_percent_three_endpoints_never_eject() {
    let backends = Backends::new(&["a:80", "b:80", "c:80"]);
    let layer = OutlierLayer::new(OutlierPolicy {
        consecutive_5xx: 2,
        ..OutlierPolicy::default()
    });
    for a in ["a:80", "b:80", "c:80"] {
        send(&layer, &backends, a, &[200]).await;
    }
    send(&layer, &backends, "a:80", &[500; 6]).await;
    assert!(!ejected(&layer, "a:80"));
    let unrouted = layer.outliers().unrouted.clone();
    assert_eq!(layer.outliers().overflows(&unrouted), 3, "3 runs of 2");
}

#[test]
fn policies_from_outlier_detection() {
    // The seed's circuit breaker (fixtures/seed/16-circuit-breaking.yaml).
    let seed = include_str!("../../../../fixtures/seed/16-circuit-breaking.yaml");
    let snapshot = snapshot(1, seed);
    let api = DestinationKey {
        host: Arc::from("api.default.svc.cluster.local"),
        subset: None,
        port: None,
    };
    let p = destination_policy(&snapshot, &api, None).unwrap();
    assert_eq!((p.consecutive_5xx, p.consecutive_gateway), (5, 5));
    assert_eq!(p.interval, Duration::from_secs(30));
    assert_eq!(p.base_ejection_time, Duration::from_secs(60));
    assert_eq!((p.max_ejection_percent, p.min_health_percent), (50, 40));
    let empty = OutlierPolicy::try_from(&OutlierDetection::default()).unwrap();
    assert_eq!(empty, OutlierPolicy::default());
    let zero = OutlierDetection {
        max_ejection_percent: Some(0),
        ..OutlierDetection::default()
    };
    assert_eq!(
        OutlierPolicy::try_from(&zero).unwrap().max_ejection_percent,
        10
    );
    let bad = OutlierDetection {
        min_health_percent: Some(101),
        ..OutlierDetection::default()
    };
    assert!(OutlierPolicy::try_from(&bad).is_err());
}

// ------------------------------------------ with the balancer in front

const HOST: &str = "api.example.com";

fn config(endpoints: &[&str], outlier: &str) -> String {
    let mut yaml = format!(
        "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata: {{ name: api }}\n\
         spec:\n  hosts: [{HOST}]\n  location: MESH_INTERNAL\n  resolution: STATIC\n\
         \x20 ports: [{{ number: 80, name: http, protocol: HTTP }}]\n  endpoints:\n"
    );
    for e in endpoints {
        yaml.push_str(&format!(
            "  - {{ address: {e}, labels: {{ version: v1 }} }}\n"
        ));
    }
    yaml.push_str(&format!(
        "---\napiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\n\
         metadata: {{ name: api }}\nspec:\n  host: {HOST}\n  trafficPolicy:\n\
         \x20   outlierDetection: {outlier}\n  subsets:\n  - name: v1\n    labels: {{ version: v1 }}\n\
         \x20   trafficPolicy:\n      outlierDetection: {{ consecutive5xxErrors: 1, maxEjectionPercent: 100 }}\n"
    ));
    yaml
}

fn snapshot(generation: u64, yaml: &str) -> Arc<Snapshot> {
    let loaded = load_str("test.yaml", yaml, &LoadOptions::default());
    assert!(!loaded.diagnostics.has_errors(), "{:?}", loaded.diagnostics);
    Arc::new(Snapshot::compile(generation, loaded))
}

struct Mesh {
    table: Arc<ArcSwap<RoutingTable>>,
    backends: Arc<Backends>,
    svc: tower::util::BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>,
}

impl Mesh {
    fn new(yaml: &str, backends: &Arc<Backends>) -> Mesh {
        let table = Arc::new(ArcSwap::from_pointee(RoutingTable::compile(snapshot(
            1, yaml,
        ))));
        let random = Arc::new(SplitMix::seeded(9));
        let balancers = Arc::new(Balancers::new(random.clone()));
        let outliers = Arc::new(Outliers::from_destination_rules());
        let svc = ServiceBuilder::new()
            .layer(RouteLayer::new(
                Routes::new(Arc::clone(&table), random),
                Arc::new(Workload::default()),
            ))
            .layer(BalanceLayer::new(balancers).with_health(outliers.clone()))
            .layer(OutlierLayer::per_destination(outliers))
            .service(backends.service());
        Mesh {
            table,
            backends: Arc::clone(backends),
            svc: tower::util::BoxCloneSyncService::new(svc),
        }
    }

    async fn get(&self) -> Response<Body> {
        let req = Request::get(format!("http://{HOST}/"))
            .body(empty())
            .unwrap();
        self.svc.clone().oneshot(req).await.unwrap()
    }

    /// Sends `n` requests; the statuses seen.
    async fn load(&self, n: usize) -> Vec<u16> {
        let mut seen = Vec::new();
        for _ in 0..n {
            seen.push(self.get().await.status().as_u16());
        }
        seen
    }
}

fn flags(resp: &Response<Body>) -> &str {
    resp.headers()
        .get(RESPONSE_FLAGS_HEADER)
        .map_or("", |v| v.to_str().unwrap())
}

#[tokio::test(start_paused = true)]
async fn the_balancer_skips_an_ejected_endpoint_until_it_returns() {
    let backends = Backends::new(&["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]);
    let od =
        "{ consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 5s, maxEjectionPercent: 50 }";
    let mesh = Mesh::new(
        &config(&["10.0.0.1", "10.0.0.2", "10.0.0.3"], od),
        &backends,
    );
    backends.set("10.0.0.2:80", 500);
    mesh.load(30).await;
    let before = backends.hits("10.0.0.2:80");
    assert_eq!(before, 2, "ejected on its second consecutive 5xx");
    mesh.load(100).await;
    assert_eq!(
        backends.hits("10.0.0.2:80"),
        before,
        "no traffic while ejected"
    );
    tokio::time::advance(Duration::from_secs(5)).await;
    mesh.load(30).await;
    assert!(backends.hits("10.0.0.2:80") > before, "back after 5 s");
}

#[tokio::test(start_paused = true)]
async fn all_ejected_is_503_uh_unless_in_panic() {
    let backends = Backends::new(&["10.0.0.1:80", "10.0.0.2:80"]);
    let od = "{ consecutive5xxErrors: 1, maxEjectionPercent: 100 }";
    let mesh = Mesh::new(&config(&["10.0.0.1", "10.0.0.2"], od), &backends);
    backends.set("10.0.0.1:80", 500);
    backends.set("10.0.0.2:80", 500);
    mesh.load(10).await;
    let resp = mesh.get().await;
    assert_eq!((resp.status().as_u16(), flags(&resp)), (503, "UH"));
    assert_eq!(
        backends.hits("10.0.0.1:80") + backends.hits("10.0.0.2:80"),
        2
    );

    // minHealthPercent 50: with one of two ejected the destination is
    // at 50 % (not below), so the other takes everything; with both
    // ejected it panics and spreads over both.
    let backends = Backends::new(&["10.0.0.1:80", "10.0.0.2:80"]);
    let od = "{ consecutive5xxErrors: 1, maxEjectionPercent: 100, minHealthPercent: 50 }";
    let mesh = Mesh::new(&config(&["10.0.0.1", "10.0.0.2"], od), &backends);
    backends.set("10.0.0.1:80", 500);
    mesh.load(20).await;
    assert_eq!(backends.hits("10.0.0.1:80"), 1);
    backends.set("10.0.0.2:80", 500);
    let statuses = mesh.load(40).await;
    assert!(statuses.iter().all(|s| *s == 500), "panic: no 503 UH");
    assert!(backends.hits("10.0.0.1:80") > 5, "panic spreads over all");
}

#[tokio::test(start_paused = true)]
async fn a_reload_that_reorders_endpoints_keeps_ejections() {
    let backends = Backends::new(&["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]);
    let od =
        "{ consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 50 }";
    let mesh = Mesh::new(
        &config(&["10.0.0.1", "10.0.0.2", "10.0.0.3"], od),
        &backends,
    );
    backends.set("10.0.0.3:80", 500);
    mesh.load(20).await;
    assert_eq!(backends.hits("10.0.0.3:80"), 1);
    // Same endpoints, other order, and a changed (still permitting)
    // policy: a new snapshot generation, new balancer indexes.
    let od =
        "{ consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 40 }";
    let yaml = config(&["10.0.0.3", "10.0.0.1", "10.0.0.2"], od);
    mesh.table
        .store(Arc::new(RoutingTable::compile(snapshot(2, &yaml))));
    mesh.load(50).await;
    assert_eq!(mesh.backends.hits("10.0.0.3:80"), 1, "still ejected");
    tokio::time::advance(Duration::from_secs(30)).await;
    mesh.load(30).await;
    assert!(mesh.backends.hits("10.0.0.3:80") > 1, "back after its time");
}

#[tokio::test(start_paused = true)]
async fn subset_policy_replaces_the_top_level_one() {
    // The top level says 10 % (nothing ejects among 2); the v1 subset's
    // own outlierDetection (1 error, 100 %) applies to routes to v1.
    let backends = Backends::new(&["10.0.0.1:80", "10.0.0.2:80"]);
    let snapshot = snapshot(
        1,
        &config(&["10.0.0.1", "10.0.0.2"], "{ consecutive5xxErrors: 1 }"),
    );
    let host: Arc<str> = Arc::from(HOST);
    let top = DestinationKey {
        host: Arc::clone(&host),
        subset: None,
        port: None,
    };
    let v1 = DestinationKey {
        subset: Some(Arc::from("v1")),
        ..top.clone()
    };
    let p = destination_policy(&snapshot, &top, Some(80)).unwrap();
    assert_eq!((p.consecutive_5xx, p.max_ejection_percent), (1, 10));
    let p = destination_policy(&snapshot, &v1, Some(80)).unwrap();
    assert_eq!((p.consecutive_5xx, p.max_ejection_percent), (1, 100));
    drop(backends);
}

#[tokio::test(start_paused = true)]
async fn a_reload_without_any_outlier_detection_returns_every_endpoint() {
    let backends = Backends::new(&["10.0.0.1:80", "10.0.0.2:80"]);
    let od = "{ consecutive5xxErrors: 1, baseEjectionTime: 300s, maxEjectionPercent: 50 }";
    let yaml = config(&["10.0.0.1", "10.0.0.2"], od);
    assert!(configures_outlier_detection(&snapshot(1, &yaml)));
    let mesh = Mesh::new(&yaml, &backends);
    backends.set("10.0.0.2:80", 500);
    mesh.load(20).await;
    assert_eq!(backends.hits("10.0.0.2:80"), 1, "ejected");
    // The same endpoints without the DestinationRule: no destination has
    // outlier detection, so requests skip the registry, and the ejection
    // ends with the reload rather than after its 300 s.
    let (entry_only, _) = yaml.split_once("---").unwrap();
    let without = snapshot(2, entry_only);
    assert!(!configures_outlier_detection(&without));
    mesh.table.store(Arc::new(RoutingTable::compile(without)));
    mesh.load(20).await;
    assert!(backends.hits("10.0.0.2:80") > 1, "back in service");
}
