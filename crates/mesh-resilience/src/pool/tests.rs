//! Unit tests of the pool-limits stage: scripted in-memory backends under
//! paused tokio time.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use http::{Request, Response, Version};
use http_body_util::BodyExt;
use mesh_core::http::Body;
use mesh_core::http::{RESPONSE_FLAGS_HEADER, empty};
use mesh_core::load::{LoadOptions, load_str};
use mesh_core::schema::istio_networking::ConnectionPoolSettings;
use mesh_core::snapshot::Snapshot;
use mesh_route::decision::{DestinationKey, RouteDecision};
use mesh_route::layer::RoutedWith;
use tokio::sync::oneshot;
use tower::{Layer, Service, ServiceExt};

use super::*;

type Reply = Result<Response<Body>, Infallible>;

/// A backend whose requests each wait for the test to answer them:
/// every call sends its answer channel to the test.
type Backend = tower::util::BoxCloneService<Request<Body>, Response<Body>, Infallible>;

fn held_backend() -> (
    Backend,
    tokio::sync::mpsc::UnboundedReceiver<oneshot::Sender<()>>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let svc = tower::service_fn(move |_req: Request<Body>| {
        let tx = tx.clone();
        let fut: Pin<Box<dyn Future<Output = Reply> + Send>> = Box::pin(async move {
            let (answer, answered) = oneshot::channel();
            let _ = tx.send(answer);
            let _ = answered.await;
            Ok(Response::new(mesh_core::http::full("ok")))
        });
        fut
    });
    (Backend::new(svc), rx)
}

fn limits(connections: u32, pending: u32) -> PoolLimits {
    PoolLimits {
        max_connections: connections,
        max_pending_requests: pending,
        ..PoolLimits::default()
    }
}

fn get() -> Request<Body> {
    Request::new(empty())
}

fn assert_overflow(resp: &Response<Body>) {
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()[RESPONSE_FLAGS_HEADER], "UO");
    assert_eq!(resp.headers()[OVERLOADED_HEADER], "true");
}

#[tokio::test(start_paused = true)]
async fn over_the_connection_and_pending_limits_requests_are_refused_at_once() {
    let (backend, mut arrivals) = held_backend();
    let layer = PoolLimitsLayer::new(limits(1, 1));
    let pool = Arc::clone(layer.fixed_pool().unwrap());
    let svc = layer.layer(backend);

    let first = tokio::spawn(svc.clone().oneshot(get()));
    let answer_first = arrivals.recv().await.unwrap();
    let second = tokio::spawn(svc.clone().oneshot(get()));
    tokio::task::yield_now().await;
    assert_eq!(pool.stats().pending, 1);
    // The third and fourth find the connection busy and the queue full.
    for _ in 0..2 {
        let resp = svc.clone().oneshot(get()).await.unwrap();
        assert_overflow(&resp);
    }
    assert_eq!(pool.stats().pending_overflow, 2);
    // The queued request is not sent while the first holds the
    // connection, and goes as soon as the first's body ends.
    assert!(arrivals.try_recv().is_err());
    answer_first.send(()).unwrap();
    let resp = first.await.unwrap().unwrap();
    assert!(arrivals.try_recv().is_err(), "the slot frees at body end");
    resp.into_body().collect().await.unwrap();
    let answer_second = arrivals.recv().await.unwrap();
    assert_eq!(pool.stats().pending, 0);
    answer_second.send(()).unwrap();
    let resp = second.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    drop(resp);
    let stats = pool.stats();
    assert_eq!((stats.requests, stats.http1_busy, stats.pending), (0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn queued_requests_are_served_in_order_and_can_leave_the_queue() {
    let (backend, mut arrivals) = held_backend();
    let layer = PoolLimitsLayer::new(limits(1, 3));
    let pool = Arc::clone(layer.fixed_pool().unwrap());
    let svc = layer.layer(backend);
    let first = tokio::spawn(svc.clone().oneshot(get()));
    let answer = arrivals.recv().await.unwrap();
    let leaving = tokio::spawn(svc.clone().oneshot(get()));
    let staying = tokio::spawn(svc.clone().oneshot(get()));
    tokio::task::yield_now().await;
    assert_eq!(pool.stats().pending, 2);
    // A caller that gives up leaves the queue (and its place).
    leaving.abort();
    let _ = leaving.await;
    assert_eq!(pool.stats().pending, 1);
    answer.send(()).unwrap();
    drop(first.await.unwrap().unwrap());
    arrivals.recv().await.unwrap().send(()).unwrap();
    assert_eq!(staying.await.unwrap().unwrap().status(), 200);
    assert_eq!(pool.stats().pending, 0);
}

#[tokio::test(start_paused = true)]
async fn http2_requests_are_capped_by_max_requests_and_never_queue() {
    let (backend, mut arrivals) = held_backend();
    let layer = PoolLimitsLayer::new(PoolLimits {
        max_requests: 2,
        max_connections: 1,
        ..PoolLimits::default()
    });
    let pool = Arc::clone(layer.fixed_pool().unwrap());
    let svc = layer.layer(backend);
    let h2 = || {
        let mut req = get();
        *req.version_mut() = Version::HTTP_2;
        req
    };
    let a = tokio::spawn(svc.clone().oneshot(h2()));
    let b = tokio::spawn(svc.clone().oneshot(h2()));
    let answers = [
        arrivals.recv().await.unwrap(),
        arrivals.recv().await.unwrap(),
    ];
    let refused = svc.clone().oneshot(h2()).await.unwrap();
    assert_overflow(&refused);
    assert_eq!(pool.stats().requests_overflow, 1);
    assert_eq!(pool.stats().pending, 0);
    for answer in answers {
        answer.send(()).unwrap();
    }
    for task in [a, b] {
        assert_eq!(task.await.unwrap().unwrap().status(), 200);
    }
    assert_eq!(pool.stats().requests, 0);
}

#[tokio::test(start_paused = true)]
async fn retries_need_a_max_retries_slot() {
    let (backend, mut arrivals) = held_backend();
    let layer = PoolLimitsLayer::new(PoolLimits {
        max_retries: 1,
        ..PoolLimits::default()
    });
    let pool = Arc::clone(layer.fixed_pool().unwrap());
    let svc = layer.layer(backend);
    let retry = || {
        let mut req = get();
        req.extensions_mut().insert(RetryAttempt);
        req
    };
    let first = tokio::spawn(svc.clone().oneshot(retry()));
    let answer = arrivals.recv().await.unwrap();
    assert_eq!(pool.stats().retries, 1);
    let refused = svc.clone().oneshot(retry()).await.unwrap();
    assert_overflow(&refused);
    assert!(refused.extensions().get::<RetryOverflow>().is_some());
    // First tries are not retries.
    let plain = tokio::spawn(svc.clone().oneshot(get()));
    arrivals.recv().await.unwrap().send(()).unwrap();
    assert_eq!(plain.await.unwrap().unwrap().status(), 200);
    // The direct API shares the count.
    assert!(pool.try_acquire_retry().is_none());
    answer.send(()).unwrap();
    drop(first.await.unwrap().unwrap());
    let permit = pool.try_acquire_retry().unwrap();
    assert_eq!(pool.stats().retries, 1);
    drop(permit);
    assert_eq!(pool.stats().retries, 0);
    assert_eq!(pool.stats().retries_overflow, 2);
}

#[tokio::test(start_paused = true)]
async fn a_refused_request_gives_back_what_it_took() {
    let pool = DestinationPool::new(PoolLimits {
        max_retries: 5,
        max_connections: 1,
        max_pending_requests: 0,
        ..PoolLimits::default()
    });
    let Ok(Admission::Ready(held)) = pool.admit(true, false) else {
        panic!("the first request goes");
    };
    assert_eq!(pool.admit(true, true).unwrap_err(), Overflow::Pending);
    assert_eq!(pool.stats().retries, 0, "the retry slot is returned");
    drop(held);
    assert_eq!(
        pool.stats(),
        PoolStats {
            pending_overflow: 1,
            ..PoolStats::default()
        }
    );
}

fn snapshot(generation: u64, max_connections: u32) -> Snapshot {
    let yaml = format!(
        "apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {{ name: api }}
spec:
  host: api
  trafficPolicy:
    connectionPool:
      tcp: {{ maxConnections: {max_connections}, connectTimeout: 250ms }}
      http: {{ http1MaxPendingRequests: 1, maxRequestsPerConnection: 2, idleTimeout: 0s }}
    portLevelSettings:
    - port: {{ number: 8080 }}
      connectionPool:
        http: {{ http2MaxRequests: 7 }}
  subsets:
  - name: v2
    labels: {{ version: v2 }}
    trafficPolicy:
      connectionPool:
        http: {{ maxRetries: 3 }}
"
    );
    let loaded = load_str("dr.yaml", &yaml, &LoadOptions::default());
    assert!(!loaded.diagnostics.has_errors(), "{:?}", loaded.diagnostics);
    Snapshot::compile(generation, loaded)
}

fn dest(subset: Option<&str>) -> DestinationKey {
    DestinationKey {
        host: Arc::from("api.default.svc.cluster.local"),
        subset: subset.map(Arc::from),
        port: None,
    }
}

#[test]
fn limits_come_from_the_destination_rule_with_subset_and_port_overrides() {
    let snap = snapshot(1, 5);
    let base = PoolLimits::default();
    let top = PoolLimits::for_destination(&snap, &dest(None), Some(80), &base);
    assert_eq!(top.max_connections, 5);
    assert_eq!(top.max_pending_requests, 1);
    assert_eq!(top.max_requests, UNLIMITED);
    assert_eq!(top.max_requests_per_connection, 2);
    assert_eq!(top.connect_timeout, Duration::from_millis(250));
    assert_eq!(top.idle_timeout, None, "0s disables the idle timeout");
    // Port-level settings replace the top level, without inheritance.
    let port = PoolLimits::for_destination(&snap, &dest(None), Some(8080), &base);
    assert_eq!(
        port,
        PoolLimits {
            max_requests: 7,
            ..base.clone()
        }
    );
    // The subset's connectionPool replaces the top-level one.
    let v2 = PoolLimits::for_destination(&snap, &dest(Some("v2")), Some(80), &base);
    assert_eq!(
        v2,
        PoolLimits {
            max_retries: 3,
            ..base.clone()
        }
    );
    // Unknown hosts get the base.
    let other = DestinationKey {
        host: Arc::from("other.default.svc.cluster.local"),
        ..dest(None)
    };
    assert_eq!(
        PoolLimits::for_destination(&snap, &other, None, &base),
        base
    );
}

#[test]
fn negative_counts_do_not_convert() {
    let settings = ConnectionPoolSettings {
        tcp: Some(mesh_core::schema::istio_networking::TcpSettings {
            max_connections: Some(-1),
            ..Default::default()
        }),
        http: None,
    };
    assert_eq!(
        PoolLimits::try_from(&settings).unwrap_err(),
        PoolLimitsError::Negative {
            field: "tcp.maxConnections",
            value: -1
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_reload_keeps_the_counters_and_new_limits_apply_to_new_admissions() {
    let registry = PoolRegistry::new();
    let old = snapshot(1, 1);
    let pool = registry.pool(&old, &dest(None), Some(80));
    let Ok(Admission::Ready(held)) = pool.admit(true, false) else {
        panic!("admitted");
    };
    let Ok(Admission::Queued(queued)) = pool.admit(true, false) else {
        panic!("queued");
    };
    let waiter = tokio::spawn(queued.ready());
    tokio::task::yield_now().await;
    // The reload raises maxConnections to 2: same pool, same counters,
    // and the queued request gets the new slot without waiting for the
    // first to finish.
    let new = snapshot(2, 2);
    let same = registry.pool(&new, &dest(None), Some(80));
    assert!(Arc::ptr_eq(&pool, &same));
    assert_eq!(same.limits().max_connections, 2);
    let second = waiter.await.unwrap().unwrap();
    assert_eq!(same.stats().http1_busy, 2);
    // Lowering it again refuses the next request while two are busy.
    let lower = snapshot(3, 1);
    let pool = registry.pool(&lower, &dest(None), Some(80));
    let Ok(Admission::Queued(_)) = pool.admit(true, false) else {
        panic!("queued behind the two admitted under the old limit");
    };
    drop((held, second));
    assert_eq!(pool.stats().http1_busy, 0);
    // Another port is another destination.
    let other = registry.pool(&lower, &dest(None), Some(8080));
    assert!(!Arc::ptr_eq(&pool, &other));
    assert_eq!(other.limits().max_requests, 7);
}

#[tokio::test(start_paused = true)]
async fn per_destination_pools_follow_the_route_decision() {
    let registry = Arc::new(PoolRegistry::new());
    let (backend, mut arrivals) = held_backend();
    let mut svc = PoolLimitsLayer::per_destination(Arc::clone(&registry)).layer(backend);
    let table = Arc::new(mesh_route::routing::RoutingTable::compile(Arc::new(
        snapshot(1, 1),
    )));
    let routed = |host: &str| {
        let mut req = Request::builder()
            .uri("/")
            .header(http::header::HOST, "api:80")
            .body(empty())
            .unwrap();
        req.extensions_mut()
            .insert(RouteDecision::default_route(host));
        req.extensions_mut().insert(RoutedWith(Arc::clone(&table)));
        req
    };
    let api = "api.default.svc.cluster.local";
    let first = tokio::spawn(svc.clone().oneshot(routed(api)));
    arrivals.recv().await.unwrap().send(()).unwrap();
    let resp = first.await.unwrap().unwrap();
    let key = DestinationKey {
        port: Some(80),
        ..dest(None)
    };
    let pool = registry.get(&key).unwrap();
    assert_eq!(pool.stats().requests, 1, "held until the body ends");
    resp.into_body().collect().await.unwrap();
    assert_eq!(pool.stats().requests, 0);
    // A request the route stage did not forward passes untouched.
    svc.ready().await.unwrap();
    let passing = tokio::spawn(svc.call(get()));
    arrivals.recv().await.unwrap().send(()).unwrap();
    assert_eq!(passing.await.unwrap().unwrap().status(), 200);
}

#[tokio::test(start_paused = true)]
async fn the_connector_side_counts_connections_under_the_limit() {
    let pool = DestinationPool::new(limits(2, 0));
    let a = pool.try_open_connection().unwrap();
    let _b = pool.try_open_connection().unwrap();
    assert!(pool.try_open_connection().is_none());
    let changed = pool.connections_changed();
    tokio::pin!(changed);
    changed.as_mut().enable();
    drop(a);
    changed.await;
    assert_eq!(pool.stats().connections, 1);
    let extra = pool.open_connection();
    assert_eq!(pool.stats().connections, 2);
    drop(extra);
    let state: Arc<AtomicU32> = pool.connector_state(|| AtomicU32::new(7)).unwrap();
    assert_eq!(state.load(SeqCst), 7);
    assert!(pool.connector_state(|| 1u8).is_none(), "type mismatch");
}

#[tokio::test(start_paused = true)]
async fn a_connector_that_holds_permits_gets_them_with_the_pool() {
    let layer = PoolLimitsLayer::new(limits(1, 0));
    let pool = Arc::clone(layer.fixed_pool().unwrap());
    pool.connector_holds_permits();
    // A connector stand-in: takes the pool and permit out of the request
    // and gives them to the test, which holds the permit as a response
    // body would.
    let (tx, mut handed) = tokio::sync::mpsc::unbounded_channel();
    let connector = tower::service_fn(move |mut req: Request<Body>| {
        let handle = req.extensions_mut().remove::<PoolHandle>().unwrap();
        let clone = handle.clone();
        tx.send((handle.into_parts(), clone)).unwrap();
        std::future::ready(Ok::<_, Infallible>(Response::new(empty())))
    });
    let mut svc = layer.layer(connector);
    let resp = svc.ready().await.unwrap().call(get()).await.unwrap();
    let ((to, permit), clone) = handed.recv().await.unwrap();
    assert!(Arc::ptr_eq(&to, &pool));
    assert!(Arc::ptr_eq(clone.pool(), &pool));
    assert!(clone.into_parts().1.is_none(), "a clone holds no permit");
    // The stage left the body alone: the request holds its slot as long
    // as the connector keeps the permit, not as long as the response.
    drop(resp);
    assert_eq!(pool.stats().http1_busy, 1);
    let refused = svc.ready().await.unwrap().call(get()).await.unwrap();
    assert_overflow(&refused);
    drop(permit);
    assert_eq!(pool.stats().http1_busy, 0);
    assert_eq!(pool.stats().requests, 0);
}
