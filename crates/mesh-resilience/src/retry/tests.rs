//! The retry stage alone, against scripted in-memory backends, under
//! paused tokio time.

#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::StatusCode;
use http_body_util::{BodyExt, Full};
use mesh_route::decision::ResponseClasses;
use mesh_route::random::SplitMix;
use tokio::sync::Mutex;
use tower::{Layer, Service};

use super::*;

/// What one try of the scripted backend does.
#[derive(Clone, Debug)]
enum Step {
    /// Reads the body, answers this status (body "try N").
    Status(u16),
    /// Reads the body, answers 200 with `grpc-status` in the headers.
    Grpc(u32),
    /// Answers this local failure without reading the body.
    Fail(MeshError),
    /// Answers a local failure of this kind without reading the body.
    Kind(FailureKind),
    /// Waits, then answers 200.
    Sleep(Duration),
    /// Answers with this status and `x-mesh-response-flags`.
    Flagged(u16, &'static str),
    /// Reads the body, answers with `x-envoy-ratelimited`.
    RateLimited,
}

/// What the backend saw of one try.
#[derive(Clone, Debug)]
struct Seen {
    at: Instant,
    marker: Option<String>,
    body: Option<Bytes>,
    avoid: Vec<usize>,
    /// Whether the try carried a record of tried endpoints.
    recorded: bool,
    /// Every header, in order.
    headers: Vec<(String, String)>,
    peer: Option<Peer>,
    /// The route stage's extension, if any.
    routed: Option<RouteDecision>,
    /// Whether the try carried the test's own extension ([`Other`]).
    other: bool,
}

/// An extension no stage below the retry stage reads.
#[derive(Clone, Debug)]
struct Other;

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Seen>>>);

impl Log {
    async fn seen(&self) -> Vec<Seen> {
        self.0.lock().await.clone()
    }
    async fn tries(&self) -> usize {
        self.0.lock().await.len()
    }
}

type Svc = tower::util::BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// A backend doing `steps[i]` on try `i` (the last step repeats). It plays
/// the balance stage too: try `i` goes to "endpoint" `i`, recorded in the
/// try's [`PreviousAttempts`] when it has one and named in the response's
/// [`PickedEndpoint`].
fn scripted(steps: Vec<Step>, log: Log) -> Svc {
    let steps = Arc::new(steps);
    let count = Arc::new(AtomicUsize::new(0));
    tower::util::BoxCloneSyncService::new(tower::service_fn(move |req: Request<Body>| {
        let i = count.fetch_add(1, Ordering::SeqCst);
        let step = steps[i.min(steps.len() - 1)].clone();
        let log = log.clone();
        async move {
            let marker = req
                .headers()
                .get(RETRY_MARKER_HEADER)
                .map(|v| v.to_str().unwrap().to_owned());
            let mut avoid = Vec::new();
            let previous = req.extensions().get::<PreviousAttempts>();
            if let Some(previous) = previous {
                let mut buf = [0; PreviousAttempts::MAX];
                avoid = previous.fill(&mut buf).to_vec();
                previous.record(i);
            }
            let recorded = previous.is_some();
            let headers = req
                .headers()
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
                .collect();
            let peer = req.extensions().get::<Peer>().copied();
            let routed = req.extensions().get::<Routed>().map(|r| r.decision.clone());
            let other = req.extensions().get::<Other>().is_some();
            let reads = !matches!(step, Step::Fail(_) | Step::Kind(_));
            let body = if reads {
                Some(req.into_body().collect().await.unwrap().to_bytes())
            } else {
                None
            };
            log.0.lock().await.push(Seen {
                at: Instant::now(),
                marker,
                body,
                avoid,
                recorded,
                headers,
                peer,
                routed,
                other,
            });
            let reply = |status: u16| {
                let mut r = Response::new(mesh_core::http::full(format!("try {i}")));
                *r.status_mut() = StatusCode::from_u16(status).unwrap();
                r.headers_mut().insert("x-try", HeaderValue::from(i));
                r
            };
            let mut resp = match step {
                Step::Status(s) => reply(s),
                Step::Grpc(code) => {
                    let mut r = reply(200);
                    r.headers_mut()
                        .insert("content-type", HeaderValue::from_static("application/grpc"));
                    r.headers_mut()
                        .insert("grpc-status", HeaderValue::from(code));
                    r
                }
                Step::Fail(e) => e.to_response(),
                Step::Kind(kind) => {
                    let mut r = MeshError::UpstreamReset("x".into()).to_response();
                    r.extensions_mut().insert(LocalFailure(kind));
                    r
                }
                Step::Sleep(d) => {
                    tokio::time::sleep(d).await;
                    reply(200)
                }
                Step::Flagged(s, flags) => {
                    let mut r = reply(s);
                    r.headers_mut()
                        .insert(RESPONSE_FLAGS_HEADER, HeaderValue::from_static(flags));
                    r
                }
                Step::RateLimited => {
                    let mut r = reply(429);
                    r.headers_mut()
                        .insert("x-envoy-ratelimited", HeaderValue::from_static("true"));
                    r
                }
            };
            resp.extensions_mut().insert(PickedEndpoint(i));
            Ok::<_, Infallible>(resp)
        }
    }))
}

fn layer(policy: RetryPolicy) -> RetryLayer {
    RetryLayer::new(policy).with_random(Arc::new(SplitMix::seeded(7)))
}

fn policy(attempts: u32, retry_on: &str) -> RetryPolicy {
    RetryPolicy::try_new(attempts, retry_on).unwrap()
}

async fn send(svc: &mut Retry<Svc>, req: Request<Body>) -> Response<Body> {
    std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
    svc.call(req).await.unwrap()
}

fn get() -> Request<Body> {
    Request::get("/").body(empty()).unwrap()
}

async fn text(resp: Response<Body>) -> String {
    String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap()
}

fn flags(resp: &Response<Body>) -> &str {
    resp.headers()
        .get(RESPONSE_FLAGS_HEADER)
        .map_or("", |v| v.to_str().unwrap())
}

// ------------------------------------------------------------ classification

fn outcome(step: &Step) -> Outcome {
    let resp = match step {
        Step::Status(s) => {
            let mut r = Response::new(empty());
            *r.status_mut() = StatusCode::from_u16(*s).unwrap();
            r
        }
        Step::Grpc(code) => {
            let mut r = Response::new(empty());
            r.headers_mut()
                .insert("grpc-status", HeaderValue::from(*code));
            r
        }
        Step::Fail(e) => e.to_response(),
        Step::Kind(kind) => {
            let mut r = MeshError::UpstreamReset("x".into()).to_response();
            r.extensions_mut().insert(LocalFailure(*kind));
            r
        }
        Step::Flagged(s, f) => {
            let mut r = Response::new(empty());
            *r.status_mut() = StatusCode::from_u16(*s).unwrap();
            r.headers_mut()
                .insert(RESPONSE_FLAGS_HEADER, HeaderValue::from_static(f));
            r
        }
        Step::RateLimited => {
            let mut r = Response::new(empty());
            *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
            r.headers_mut()
                .insert("x-envoy-ratelimited", HeaderValue::from_static("true"));
            r
        }
        Step::Sleep(_) => return Outcome::PerTryTimeout,
    };
    Outcome::Response(resp)
}

#[test]
fn every_retry_on_token_matches_what_spec_12_1_says() {
    use Step::*;
    let connect = Fail(MeshError::ConnectFailure("refused".into()));
    let reset = Fail(MeshError::UpstreamReset("closed".into()));
    let refused = Kind(FailureKind::RefusedStream);
    let per_try = Sleep(Duration::ZERO);
    let overflow = Fail(MeshError::Overflow);
    let no_healthy = Fail(MeshError::NoHealthyUpstream("x".into()));
    // (token, retried outcomes, not retried outcomes)
    let table: Vec<(&str, Vec<Step>, Vec<Step>)> = vec![
        (
            "5xx",
            vec![
                Status(500),
                Status(503),
                Status(599),
                connect.clone(),
                reset.clone(),
                refused.clone(),
                per_try.clone(),
            ],
            vec![
                Status(404),
                Status(409),
                Grpc(14),
                overflow.clone(),
                no_healthy.clone(),
            ],
        ),
        (
            "gateway-error",
            vec![
                Status(502),
                Status(503),
                Status(504),
                connect.clone(),
                reset.clone(),
                per_try.clone(),
            ],
            vec![Status(500), Status(501), overflow.clone()],
        ),
        (
            "reset",
            vec![
                reset.clone(),
                connect.clone(),
                refused.clone(),
                per_try.clone(),
            ],
            vec![Status(503), overflow.clone(), no_healthy.clone()],
        ),
        (
            "connect-failure",
            vec![connect.clone()],
            vec![reset.clone(), refused.clone(), per_try.clone(), Status(503)],
        ),
        (
            "refused-stream",
            vec![refused.clone()],
            vec![reset.clone(), connect.clone(), Status(503)],
        ),
        (
            "retriable-4xx",
            vec![Status(409)],
            vec![Status(404), Status(503)],
        ),
        (
            "retriable-status-codes,503",
            vec![Status(503)],
            // A local 503 (UF) is not "503": it matches only real responses.
            vec![Status(502), connect.clone(), reset.clone()],
        ),
        ("404", vec![Status(404)], vec![Status(403), Status(500)]),
        (
            "retriable-status-codes",
            vec![],
            vec![Status(503), Status(500)],
        ),
        ("envoy-ratelimited", vec![RateLimited], vec![Status(429)]),
        (
            "reset-before-request",
            vec![connect.clone()],
            vec![reset.clone(), per_try.clone(), Status(503)],
        ),
        ("retriable-headers", vec![], vec![Status(503)]),
        (
            "cancelled",
            vec![Grpc(1)],
            vec![Grpc(14), Grpc(0), Status(503)],
        ),
        ("deadline-exceeded", vec![Grpc(4)], vec![Grpc(1)]),
        ("resource-exhausted", vec![Grpc(8)], vec![Grpc(13)]),
        ("internal", vec![Grpc(13)], vec![Grpc(8)]),
        ("unavailable", vec![Grpc(14)], vec![Grpc(4), Status(503)]),
    ];
    for (tokens, yes, no) in table {
        let p = policy(1, tokens);
        for step in yes {
            assert!(
                retriable(p.spec(), &outcome(&step)),
                "{tokens} should retry {step:?}"
            );
        }
        for step in no {
            assert!(
                !retriable(p.spec(), &outcome(&step)),
                "{tokens} should not retry {step:?}"
            );
        }
    }
    // Injected aborts are never retried, whatever the token.
    let p = policy(3, "5xx,503,gateway-error");
    assert!(!retriable(p.spec(), &outcome(&Flagged(503, "FI"))));
    // An upstream 503 carrying a further hop's flags is an upstream 503.
    assert!(retriable(p.spec(), &outcome(&Flagged(503, "UF,URX"))));
}

#[test]
fn istio_default_retries_refused_connections_not_plain_503s() {
    let d = RetryPolicy::istio_default();
    assert_eq!(d.spec().attempts, 2);
    let s = d.spec();
    assert!(retriable(
        s,
        &outcome(&Step::Fail(MeshError::ConnectFailure("x".into())))
    ));
    assert!(retriable(
        s,
        &outcome(&Step::Kind(FailureKind::RefusedStream))
    ));
    assert!(retriable(s, &outcome(&Step::Grpc(14))));
    assert!(retriable(s, &outcome(&Step::Grpc(1))));
    assert!(!retriable(s, &outcome(&Step::Status(503))));
    assert!(
        !retriable(s, &outcome(&Step::Sleep(Duration::ZERO))),
        "per-try timeouts"
    );
    assert!(!retriable(
        s,
        &outcome(&Step::Fail(MeshError::UpstreamReset("x".into())))
    ));
}

#[test]
fn unknown_tokens_and_bad_budgets_are_typed_errors() {
    assert_eq!(
        RetryPolicy::try_new(1, "5xx,bogus"),
        Err(RetryPolicyError::UnknownCondition("bogus".into()))
    );
    let bad = BudgetSpec {
        ttl: Duration::from_secs(120),
        ..BudgetSpec::LINKERD_DEFAULT
    };
    assert_eq!(
        policy(1, "5xx").with_budget(bad),
        Err(RetryPolicyError::InvalidBudget)
    );
}

#[test]
fn backoff_ceilings_follow_spec_12_2() {
    let base = DEFAULT_BACKOFF_BASE;
    let ceilings: Vec<u128> = (1..=7)
        .map(|n| backoff_ceiling(base, n).as_millis())
        .collect();
    assert_eq!(ceilings, [25, 50, 100, 200, 250, 250, 250]);
    let random = SplitMix::seeded(3);
    for n in 1..=12u32 {
        for _ in 0..200 {
            let d = backoff(&random, base, n).as_millis();
            // The code ranges, inside the router docs' (2^N - 1) x base.
            assert!(d < backoff_ceiling(base, n).as_millis());
            assert!(d < 250);
            assert!(d < ((1u128 << n.min(20)) - 1) * 25, "retry {n}: {d}");
        }
    }
    // Whole milliseconds, and the draws spread over the range.
    let draws: Vec<u128> = (0..400)
        .map(|_| backoff(&random, base, 5).as_millis())
        .collect();
    assert!(draws.iter().any(|d| *d < 50) && draws.iter().any(|d| *d > 200));
}

// ------------------------------------------------------------ behaviour

#[tokio::test(start_paused = true)]
async fn two_503s_then_success_takes_three_tries_with_markers() {
    let log = Log::default();
    let backend = scripted(
        vec![Step::Status(503), Step::Status(503), Step::Status(200)],
        log.clone(),
    );
    let mut svc = layer(policy(3, "5xx")).layer(backend);
    let resp = send(&mut svc, get()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(flags(&resp), "");
    assert_eq!(text(resp).await, "try 2");
    let seen = log.seen().await;
    let markers: Vec<Option<&str>> = seen.iter().map(|s| s.marker.as_deref()).collect();
    assert_eq!(markers, [None, Some("1"), Some("2")]);
    // Each retry avoids the endpoints tried before.
    let avoid: Vec<Vec<usize>> = seen.iter().map(|s| s.avoid.clone()).collect();
    assert_eq!(avoid, [vec![], vec![0], vec![0, 1]]);
}

#[tokio::test(start_paused = true)]
async fn the_record_of_tried_endpoints_is_made_when_a_retry_is() {
    // The first try goes without one (its endpoint comes back in its
    // response); every retry carries it.
    let log = Log::default();
    let backend = scripted(
        vec![Step::Status(503), Step::Status(503), Step::Status(200)],
        log.clone(),
    );
    let mut svc = layer(policy(3, "5xx")).layer(backend.clone());
    send(&mut svc, get()).await;
    let seen = log.seen().await;
    let recorded: Vec<bool> = seen.iter().map(|s| s.recorded).collect();
    assert_eq!(recorded, [false, true, true]);
    let avoid: Vec<Vec<usize>> = seen.iter().map(|s| s.avoid.clone()).collect();
    assert_eq!(avoid, [vec![], vec![0], vec![0, 1]]);

    // retryIgnorePreviousHosts: false: no record at all.
    let log = Log::default();
    let backend = scripted(vec![Step::Status(503), Step::Status(200)], log.clone());
    let mut spec = policy(1, "5xx").spec().clone();
    spec.retry_ignore_previous_hosts = false;
    let mut svc = layer(RetryPolicy::from(spec)).layer(backend);
    send(&mut svc, get()).await;
    assert!(log.seen().await.iter().all(|s| !s.recorded));
}

#[tokio::test(start_paused = true)]
async fn policies_retrying_tries_without_a_tagged_response_record_the_first_try() {
    // A per-try timeout leaves no response to name the endpoint: the
    // record goes with the first try, and the retry avoids it.
    let log = Log::default();
    let backend = scripted(
        vec![Step::Sleep(Duration::from_secs(5)), Step::Status(200)],
        log.clone(),
    );
    let p = policy(1, "5xx").with_per_try_timeout(Duration::from_secs(1));
    let resp = send(&mut layer(p).layer(backend), get()).await;
    assert_eq!(resp.status(), 200);
    let seen = log.seen().await;
    assert!(seen[0].recorded);
    assert_eq!(seen[1].avoid, [0]);

    // So do policies retrying statuses below 400 or envoy-ratelimited (the
    // balance stage tags neither).
    for retry_on in ["302", "envoy-ratelimited"] {
        let log = Log::default();
        let backend = scripted(vec![Step::Status(200)], log.clone());
        send(&mut layer(policy(1, retry_on)).layer(backend), get()).await;
        assert!(log.seen().await[0].recorded, "{retry_on}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_retry_carries_the_head_and_the_routing_extensions_only() {
    let log = Log::default();
    let backend = scripted(vec![Step::Status(503), Step::Status(200)], log.clone());
    let mut svc = layer(policy(1, "5xx")).layer(backend);
    let mut req = Request::post("http://api/items?q=1").body(empty()).unwrap();
    for (name, value) in [("x-one", "1"), ("x-multi", "a"), ("x-two", "2")] {
        req.headers_mut().append(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    req.headers_mut()
        .append("x-multi", HeaderValue::from_static("b"));
    let peer = Peer("10.0.0.9:4321".parse().unwrap());
    let decision = RouteDecision::default_route("api.prod.svc.cluster.local");
    let table = mesh_route::routing::RoutingTable::compile(Arc::new(
        mesh_core::snapshot::Snapshot::empty(),
    ));
    req.extensions_mut().insert(peer);
    req.extensions_mut().insert(Routed {
        decision: decision.clone(),
        table: Arc::new(table),
    });
    req.extensions_mut().insert(Other);
    let resp = send(&mut svc, req).await;
    assert_eq!(resp.status(), 200);
    let seen = log.seen().await;
    assert_eq!(seen.len(), 2);
    // The same headers in the same order, and the marker last.
    let mut expected = seen[0].headers.clone();
    expected.push((RETRY_MARKER_HEADER.into(), "1".into()));
    assert_eq!(seen[1].headers, expected);
    assert_eq!(
        seen[0].headers,
        [
            ("x-one".to_owned(), "1".to_owned()),
            ("x-multi".into(), "a".into()),
            ("x-multi".into(), "b".into()),
            ("x-two".into(), "2".into()),
        ]
    );
    for s in &seen {
        assert_eq!(s.peer, Some(peer));
        assert_eq!(s.routed.as_ref(), Some(&decision));
    }
    // Other extensions stay with the first try.
    assert!(seen[0].other);
    assert!(!seen[1].other);
}

#[tokio::test(start_paused = true)]
async fn exhausted_retries_return_the_last_response_unchanged_plus_urx() {
    let log = Log::default();
    let backend = scripted(vec![Step::Status(503)], log.clone());
    let mut svc = layer(policy(2, "5xx")).layer(backend);
    let resp = send(&mut svc, get()).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(flags(&resp), "URX");
    assert_eq!(resp.headers()["x-try"], "2");
    assert_eq!(text(resp).await, "try 2", "the body of the last try");
    assert_eq!(log.tries().await, 3);

    // Refused connections: the mesh's own 503 UF, then UF,URX.
    let log = Log::default();
    let backend = scripted(
        vec![Step::Fail(MeshError::ConnectFailure("refused".into()))],
        log.clone(),
    );
    let mut svc = layer(RetryPolicy::istio_default()).layer(backend);
    let resp = send(&mut svc, get()).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(flags(&resp), "UF,URX");
    assert_eq!(log.tries().await, 3, "Istio's default: 2 retries");
}

#[tokio::test(start_paused = true)]
async fn not_retriable_failures_pass_through_at_once() {
    for step in [
        Step::Status(503),
        Step::Fail(MeshError::Overflow),
        Step::Fail(MeshError::NoHealthyUpstream("x".into())),
        Step::Flagged(503, "FI"),
    ] {
        let log = Log::default();
        let backend = scripted(vec![step.clone()], log.clone());
        // Istio's default does not retry a plain 503.
        let mut svc = layer(if matches!(step, Step::Status(_)) {
            RetryPolicy::istio_default()
        } else {
            policy(3, "5xx,gateway-error,reset,503")
        })
        .layer(backend);
        let resp = send(&mut svc, get()).await;
        assert_eq!(resp.status(), 503, "{step:?}");
        assert!(!flags(&resp).contains("URX"), "{step:?}");
        assert_eq!(log.tries().await, 1, "{step:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn per_try_timeouts_are_retried_by_5xx_and_the_last_answers_504_ut() {
    let log = Log::default();
    let backend = scripted(vec![Step::Sleep(Duration::from_secs(5))], log.clone());
    let p = policy(2, "5xx")
        .with_per_try_timeout(Duration::from_secs(2))
        .with_backoff(Duration::from_millis(10));
    let mut svc = layer(p).layer(backend);
    let start = Instant::now();
    let resp = send(&mut svc, get()).await;
    assert_eq!(resp.status(), 504);
    assert_eq!(flags(&resp), "UT,URX");
    assert_eq!(log.tries().await, 3);
    let took = start.elapsed();
    // Three 2 s tries, and two backoffs under 10 ms and 20 ms.
    assert!(
        took >= Duration::from_secs(6) && took < Duration::from_millis(6030),
        "{took:?}"
    );

    // Without 5xx / gateway-error / reset the first per-try timeout is final.
    let log = Log::default();
    let backend = scripted(vec![Step::Sleep(Duration::from_secs(5))], log.clone());
    let p = policy(2, "connect-failure").with_per_try_timeout(Duration::from_secs(2));
    let mut svc = layer(p).layer(backend);
    let start = Instant::now();
    let resp = send(&mut svc, get()).await;
    assert_eq!((resp.status().as_u16(), flags(&resp)), (504, "UT"));
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(log.tries().await, 1);

    // A fast answer inside the per-try timeout is untouched.
    let backend = scripted(vec![Step::Sleep(Duration::from_secs(1))], Log::default());
    let p = policy(2, "5xx").with_per_try_timeout(Duration::from_secs(2));
    assert_eq!(
        send(&mut layer(p).layer(backend), get()).await.status(),
        200
    );
}

#[tokio::test(start_paused = true)]
async fn grpc_callers_get_their_status_from_trailers_only_responses() {
    let log = Log::default();
    let backend = scripted(vec![Step::Grpc(14), Step::Grpc(0)], log.clone());
    let mut svc = layer(RetryPolicy::istio_default()).layer(backend);
    let resp = send(&mut svc, get()).await;
    assert_eq!(resp.headers()["grpc-status"], "0");
    assert_eq!(log.tries().await, 2);
    // A per-try timeout of a gRPC request answers DEADLINE_EXCEEDED.
    let backend = scripted(vec![Step::Sleep(Duration::from_secs(5))], Log::default());
    let p = policy(1, "reset").with_per_try_timeout(Duration::from_millis(100));
    let mut req = get();
    req.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    let resp = send(&mut layer(p).layer(backend), req).await;
    assert_eq!(resp.headers()["grpc-status"], "4");
    assert_eq!(flags(&resp), "UT,URX");
}

#[tokio::test(start_paused = true)]
async fn backoffs_stay_in_their_bounds_between_tries() {
    let log = Log::default();
    let backend = scripted(vec![Step::Status(503)], log.clone());
    let mut svc = layer(policy(6, "5xx")).layer(backend);
    send(&mut svc, get()).await;
    let seen = log.seen().await;
    assert_eq!(seen.len(), 7);
    for (n, pair) in seen.windows(2).enumerate() {
        let gap = pair[1].at - pair[0].at;
        let ceiling = backoff_ceiling(DEFAULT_BACKOFF_BASE, n as u32 + 1);
        assert!(gap < ceiling, "retry {}: {gap:?} >= {ceiling:?}", n + 1);
    }
}

#[tokio::test(start_paused = true)]
async fn a_backoff_never_outlives_the_request_deadline() {
    let log = Log::default();
    let backend = scripted(vec![Step::Status(503)], log.clone());
    // Base 1 s: the first backoff is up to 1 s; the deadline is 1 ms away.
    let mut svc = layer(policy(5, "5xx").with_backoff(Duration::from_secs(1))).layer(backend);
    let mut req = get();
    req.extensions_mut()
        .insert(RequestDeadline(Instant::now() + Duration::from_millis(1)));
    let start = Instant::now();
    let resp = send(&mut svc, req).await;
    assert_eq!(resp.status(), 503);
    assert!(!flags(&resp).contains("URX"), "retries were not used up");
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "no sleep past the deadline"
    );
    assert_eq!(log.tries().await, 1);
}

#[tokio::test(start_paused = true)]
async fn attempts_zero_and_the_marker_mean_one_try() {
    let log = Log::default();
    let backend = scripted(vec![Step::Status(503)], log.clone());
    let mut svc = layer(policy(0, "5xx")).layer(backend.clone());
    send(&mut svc, get()).await;
    assert_eq!(log.tries().await, 1);

    // A request that an earlier hop already retried is not retried here,
    // and keeps its marker.
    let log = Log::default();
    let backend = scripted(vec![Step::Status(503)], log.clone());
    let mut svc = layer(policy(3, "5xx")).layer(backend);
    let mut req = get();
    req.headers_mut()
        .insert(RETRY_MARKER_HEADER, HeaderValue::from_static("1"));
    let resp = send(&mut svc, req).await;
    assert_eq!((resp.status().as_u16(), flags(&resp)), (503, ""));
    let seen = log.seen().await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].marker.as_deref(), Some("1"));
}

#[tokio::test(start_paused = true)]
async fn from_route_uses_the_decision_and_istio_default_without_retries() {
    let log = Log::default();
    let backend = scripted(
        vec![
            Step::Fail(MeshError::ConnectFailure("refused".into())),
            Step::Status(503),
        ],
        log.clone(),
    );
    let mut svc = RetryLayer::from_route(Arc::new(SplitMix::seeded(1))).layer(backend);
    let mut req = get();
    req.extensions_mut()
        .insert(RouteDecision::default_route("api.prod.svc.cluster.local"));
    let resp = send(&mut svc, req).await;
    // The refused connection was retried; the plain 503 was not.
    assert_eq!((resp.status().as_u16(), flags(&resp)), (503, ""));
    assert_eq!(log.tries().await, 2);

    // `attempts: 0` on the route: one try.
    let log = Log::default();
    let backend = scripted(
        vec![Step::Fail(MeshError::ConnectFailure("x".into()))],
        log.clone(),
    );
    let mut svc = RetryLayer::from_route(Arc::new(SplitMix::seeded(1))).layer(backend);
    let mut decision = RouteDecision::default_route("api.prod.svc.cluster.local");
    decision.policy = Arc::new(RoutePolicy {
        retries: Some(RetrySpec::disabled()),
        ..RoutePolicy::default()
    });
    let mut req = get();
    req.extensions_mut().insert(decision);
    assert_eq!(flags(&send(&mut svc, req).await), "UF");
    assert_eq!(log.tries().await, 1);
}

fn budget(ratio: f64, min: u32, ttl: u64) -> BudgetSpec {
    BudgetSpec {
        retry_ratio: ratio,
        min_retries_per_second: min,
        ttl: Duration::from_secs(ttl),
    }
}

#[tokio::test(start_paused = true)]
async fn a_budget_caps_retries_and_a_refused_retry_returns_the_failure() {
    let log = Log::default();
    let backend = scripted(vec![Step::Status(503)], log.clone());
    // min 2/s x 1 s, ratio 1: two retries in reserve.
    let p = policy(3, "5xx").with_budget(budget(1.0, 2, 1)).unwrap();
    let mut svc = layer(p).layer(backend);
    let first = send(&mut svc, get()).await;
    // Two retries granted, the third refused: the failure, without URX.
    assert_eq!((first.status().as_u16(), flags(&first)), (503, ""));
    assert_eq!(log.tries().await, 3);
    let second = send(&mut svc, get()).await;
    assert_eq!(second.status(), 503);
    assert_eq!(log.tries().await, 4, "no budget left: one try");
    // Withdrawals age out after the ttl.
    tokio::time::advance(Duration::from_millis(1200)).await;
    send(&mut svc, get()).await;
    assert_eq!(log.tries().await, 7);
}

#[tokio::test(start_paused = true)]
async fn the_layer_budget_caps_istio_retries_and_successes_refill_it() {
    let log = Log::default();
    // Successes deposit: with ratio 1.0 each success pays for one retry.
    let backend = scripted(vec![Step::Status(200)], log.clone());
    let mut svc = layer(policy(3, "5xx"))
        .with_budget(budget(1.0, 0, 10))
        .layer(backend);
    for _ in 0..2 {
        send(&mut svc, get()).await;
    }
    let b = svc.layer.budgets.existing(&NO_DESTINATION).unwrap();
    assert_eq!(b.balance(), 2);
}

#[tokio::test(start_paused = true)]
async fn profile_routes_retry_classified_failures_while_the_budget_allows() {
    let log = Log::default();
    let backend = scripted(
        vec![
            Step::Status(500),
            Step::Status(500),
            Step::Fail(MeshError::ConnectFailure("x".into())),
        ],
        log.clone(),
    );
    let spec = RetrySpec {
        attempts: u32::MAX,
        budget: Some(budget(0.2, 1, 2)),
        classes: Some(Arc::new(ResponseClasses::default())),
        ..RetrySpec::disabled()
    };
    let mut svc = layer(RetryPolicy::from(spec)).layer(backend);
    let start = Instant::now();
    let resp = send(&mut svc, get()).await;
    // 500, 500, then a transport error: Linkerd does not retry those.
    assert_eq!((resp.status().as_u16(), flags(&resp)), (503, "UF"));
    assert_eq!(log.tries().await, 3);
    assert_eq!(start.elapsed(), Duration::ZERO, "no backoff");

    // Unlimited count, bounded by the budget: min 1/s x 2 s, cost 5 ->
    // reserve 10 -> two retries.
    let log = Log::default();
    let backend = scripted(vec![Step::Status(502)], log.clone());
    let spec = RetrySpec {
        attempts: u32::MAX,
        budget: Some(budget(0.2, 1, 2)),
        classes: Some(Arc::new(ResponseClasses::default())),
        ..RetrySpec::disabled()
    };
    let mut svc = layer(RetryPolicy::from(spec)).layer(backend);
    let resp = send(&mut svc, get()).await;
    assert_eq!((resp.status().as_u16(), flags(&resp)), (502, ""));
    assert_eq!(log.tries().await, 3);
}

fn with_body<B>(body: B) -> Request<Body>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    Request::post("/").body(boxed(body)).unwrap()
}

/// A body of unknown length fed from a channel.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

/// A request whose body of unknown length is `chunks` x `size` bytes of 3,
/// all queued, the sender gone.
fn streamed(chunks: usize, size: usize) -> (Request<Body>, Bytes) {
    let (tx, rx) = tokio::sync::mpsc::channel(chunks.max(1));
    for _ in 0..chunks {
        tx.try_send(Bytes::from(vec![3u8; size])).unwrap();
    }
    (
        with_body(ChannelBody(rx)),
        Bytes::from(vec![3u8; chunks * size]),
    )
}

#[tokio::test(start_paused = true)]
async fn small_bodies_are_replayed_whole() {
    let log = Log::default();
    let backend = scripted(vec![Step::Status(503), Step::Status(200)], log.clone());
    let mut svc = layer(policy(2, "5xx")).layer(backend);
    let payload = Bytes::from(vec![7u8; 10_000]);
    let resp = send(&mut svc, with_body(Full::new(payload.clone()))).await;
    assert_eq!(resp.status(), 200);
    let seen = log.seen().await;
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.body.as_ref() == Some(&payload)));
}

#[tokio::test(start_paused = true)]
async fn bodies_known_to_exceed_64_kib_are_sent_once() {
    let log = Log::default();
    let backend = scripted(vec![Step::Status(503), Step::Status(200)], log.clone());
    let mut svc = layer(policy(2, "5xx")).layer(backend);
    let payload = Bytes::from(vec![1u8; MAX_REPLAY_BYTES + 1]);
    let resp = send(&mut svc, with_body(Full::new(payload.clone()))).await;
    assert_eq!(resp.status(), 503, "not retried");
    let seen = log.seen().await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body.as_ref(), Some(&payload));
}

#[tokio::test(start_paused = true)]
async fn unknown_length_bodies_are_teed_and_replayed_when_small() {
    let log = Log::default();
    let backend = scripted(vec![Step::Status(503), Step::Status(200)], log.clone());
    let mut svc = layer(policy(2, "5xx")).layer(backend);
    let (req, payload) = streamed(4, 1000);
    let resp = send(&mut svc, req).await;
    assert_eq!(resp.status(), 200);
    let seen = log.seen().await;
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.body.as_ref() == Some(&payload)));
}

#[tokio::test(start_paused = true)]
async fn unknown_length_bodies_growing_past_64_kib_are_not_retried() {
    let log = Log::default();
    let backend = scripted(vec![Step::Status(503), Step::Status(200)], log.clone());
    let mut svc = layer(policy(2, "5xx")).layer(backend);
    let (req, payload) = streamed(10, 10_000);
    let resp = send(&mut svc, req).await;
    assert_eq!(resp.status(), 503);
    let seen = log.seen().await;
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].body.as_ref(),
        Some(&payload),
        "streamed once, whole"
    );
}

#[tokio::test(start_paused = true)]
async fn a_refused_connection_hands_the_unread_body_to_the_retry() {
    let log = Log::default();
    let backend = scripted(
        vec![
            Step::Fail(MeshError::ConnectFailure("refused".into())),
            Step::Status(200),
        ],
        log.clone(),
    );
    let mut svc = layer(RetryPolicy::istio_default()).layer(backend);
    let (req, payload) = streamed(3, 2000);
    let resp = send(&mut svc, req).await;
    assert_eq!(resp.status(), 200);
    let seen = log.seen().await;
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].body.as_ref(), Some(&payload));
}

#[tokio::test(start_paused = true)]
async fn replay_bodies_keep_trailers_and_size() {
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", HeaderValue::from_static("abc"));
    let body = ReplayBody::replay(
        vec![Bytes::from_static(b"ab"), Bytes::from_static(b"c")],
        Some(trailers),
    );
    assert_eq!(http_body::Body::size_hint(&body).exact(), Some(3));
    let collected = body.collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["x-checksum"], "abc");
    assert_eq!(collected.to_bytes(), Bytes::from_static(b"abc"));
}
