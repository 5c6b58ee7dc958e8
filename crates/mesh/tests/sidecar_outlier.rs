//! Outlier detection end to end (SPEC 5.4): DestinationRule
//! `outlierDetection` in the sidecar and the in-process client, against
//! real backends on loopback, one of which keeps answering 5xx.
//!
//! Ejection and return are measured by what each backend receives. The
//! ejections here last about a second (`baseEjectionTime: 1s`, swept every
//! 500 ms), so the file takes a few seconds of wall time.

#![allow(clippy::unwrap_used)]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use mesh_route::random::SplitMix;
use support::*;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tower::ServiceExt;

/// A backend that answers every request with one status and counts what it
/// receives.
struct Flaky {
    name: String,
    addr: SocketAddr,
    hits: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Flaky {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Flaky {
    async fn start(name: &str, status: u16) -> Flaky {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let code = Arc::new(AtomicU16::new(status));
        let hits = Arc::new(AtomicU64::new(0));
        let (count, label) = (Arc::clone(&hits), name.to_owned());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (code, count, label) = (Arc::clone(&code), Arc::clone(&count), label.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| {
                        count.fetch_add(1, Ordering::SeqCst);
                        let mut resp = Response::new(Full::new(Bytes::from(label.clone())));
                        *resp.status_mut() =
                            StatusCode::from_u16(code.load(Ordering::SeqCst)).unwrap();
                        resp.headers_mut()
                            .insert("x-backend", label.parse().unwrap());
                        async move { Ok::<_, Infallible>(resp) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Flaky {
            name: name.to_owned(),
            addr,
            hits,
            task,
        }
    }

    fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    fn endpoint(&self) -> (u16, &str) {
        (self.addr.port(), "v1")
    }
}

fn destination_rule(host: &str, outlier: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata:\n  name: {host}\n\
         spec:\n  host: {host}\n  trafficPolicy:\n    outlierDetection: {outlier}\n"
    )
}

/// Three endpoints of `api`, the third answering 500, under `outlier`.
async fn three_endpoints(outlier: &str) -> (ConfigDir, [Flaky; 3]) {
    let backends = [
        Flaky::start("good-1", 200).await,
        Flaky::start("good-2", 200).await,
        Flaky::start("bad", 500).await,
    ];
    let endpoints: Vec<(u16, &str)> = backends.iter().map(Flaky::endpoint).collect();
    let dir = ConfigDir::new();
    dir.write(
        "api.yaml",
        &service_entry("api", "api", 80, "HTTP", &endpoints),
    )
    .write("api-dr.yaml", &destination_rule("api", outlier));
    (dir, backends)
}

/// Ejected after 3 consecutive 5xx, for 1 s (swept every 500 ms); one of
/// three may be out (50 %).
const EJECT_ONE: &str =
    "{ consecutive5xxErrors: 3, interval: 500ms, baseEjectionTime: 1s, maxEjectionPercent: 50 }";

fn has_flag(reply: &Reply, flag: &str) -> bool {
    reply.flags().split(',').any(|f| f == flag)
}

/// What a caller does: one GET to `api`, the status it got.
trait Caller {
    async fn status(&self) -> StatusCode;
}

impl Caller for MeshClient {
    async fn status(&self) -> StatusCode {
        self.get("api", "/").await.status
    }
}

impl Caller for mesh::Client {
    async fn status(&self) -> StatusCode {
        let req = Request::get("http://api/")
            .body(mesh::core::http::empty())
            .unwrap();
        let resp = self.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let _ = resp.into_body().collect().await;
        status
    }
}

/// The bad endpoint is ejected on its third error, gets nothing for (most
/// of) its ejection while the good ones answer everything, and then gets
/// traffic again.
async fn eject_and_return(caller: &impl Caller, backends: &[Flaky; 3]) {
    let bad = &backends[2];
    let mut sent = 0;
    while bad.hits() < 3 {
        caller.status().await;
        sent += 1;
        assert!(sent < 500, "the bad endpoint got {} of {sent}", bad.hits());
    }
    // Its third error ejected it before that reply reached us: from now,
    // for well under its 1 s ejection, nothing reaches it.
    let ejected = Instant::now();
    let mut during = 0;
    while ejected.elapsed() < Duration::from_millis(700) {
        assert_eq!(caller.status().await, StatusCode::OK);
        during += 1;
    }
    assert_eq!(
        bad.hits(),
        3,
        "no traffic while ejected ({during} requests)"
    );
    assert!(during >= 10, "only {during} requests in 700 ms");
    assert!(backends[0].hits() > 0 && backends[1].hits() > 0);
    // It returns at the first sweep after 1 s, and gets requests again.
    eventually(&format!("{} receiving traffic again", bad.name), || async {
        caller.status().await;
        bad.hits() > 3
    })
    .await;
    assert!(
        ejected.elapsed() >= Duration::from_millis(700),
        "not before its time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_is_ejected_and_returns_after_its_time() {
    let (dir, backends) = three_endpoints(EJECT_ONE).await;
    let sidecar = start_sidecar(&dir, 11, false).await;
    let client = MeshClient::new(sidecar.outbound);
    eject_and_return(&client, &backends).await;
    assert!(sidecar.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_process_client_ejects_the_same_way() {
    let (dir, backends) = three_endpoints(EJECT_ONE).await;
    let client = mesh::Client::builder()
        .config([dir.path()])
        .watch(false)
        .random(Arc::new(SplitMix::seeded(12)))
        .build()
        .await
        .unwrap();
    eject_and_return(&client, &backends).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_max_ejection_percent_ejects_nothing_among_three() {
    // One error would eject, but 10 % of three endpoints is less than one.
    let (dir, backends) =
        three_endpoints("{ consecutive5xxErrors: 1, interval: 500ms, baseEjectionTime: 30s }")
            .await;
    let sidecar = start_sidecar(&dir, 13, false).await;
    let client = MeshClient::new(sidecar.outbound);
    let n = 90;
    let mut failed = 0;
    for _ in 0..n {
        if client.status().await != StatusCode::OK {
            failed += 1;
        }
    }
    // Ejected, it would have had exactly one request; kept, it takes its
    // share (p = 1/3 under least-request with idle endpoints).
    let bad = backends[2].hits();
    assert_eq!(bad, failed);
    assert_binomial(bad as usize, n, 1.0 / 3.0, "requests to the bad endpoint");
    assert!(sidecar.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_endpoints_ejected_is_503_uh_unless_in_panic() {
    // `down`: both endpoints fail, 100 % may be ejected, no panic
    // threshold: once both are out, callers get 503 UH without any
    // upstream contact. `panicky`: the same with minHealthPercent 50, so
    // with both out the balancer ignores ejections and the backends'
    // own 500s come back.
    let down = [
        Flaky::start("down-1", 500).await,
        Flaky::start("down-2", 500).await,
    ];
    let panicky = [
        Flaky::start("panicky-1", 500).await,
        Flaky::start("panicky-2", 500).await,
    ];
    let dir = ConfigDir::new();
    let od = "{ consecutive5xxErrors: 1, interval: 500ms, baseEjectionTime: 30s, maxEjectionPercent: 100";
    dir.write(
        "down.yaml",
        &service_entry(
            "down",
            "down",
            80,
            "HTTP",
            &down.iter().map(Flaky::endpoint).collect::<Vec<_>>(),
        ),
    )
    .write(
        "down-dr.yaml",
        &destination_rule("down", &format!("{od} }}")),
    )
    .write(
        "panicky.yaml",
        &service_entry(
            "panicky",
            "panicky",
            80,
            "HTTP",
            &panicky.iter().map(Flaky::endpoint).collect::<Vec<_>>(),
        ),
    )
    .write(
        "panicky-dr.yaml",
        &destination_rule("panicky", &format!("{od}, minHealthPercent: 50 }}")),
    );
    let sidecar = start_sidecar(&dir, 14, false).await;
    let client = MeshClient::new(sidecar.outbound);

    let mut replies = Vec::new();
    for _ in 0..10 {
        replies.push(client.get("down", "/").await);
    }
    let first_uh = replies.iter().position(|r| has_flag(r, "UH")).unwrap();
    assert_eq!(first_uh, 2, "one error each ejects both");
    for reply in &replies[first_uh..] {
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(has_flag(reply, "UH"), "{:?}", reply.flags());
        assert_eq!(reply.backend(), "");
    }
    assert_eq!((down[0].hits(), down[1].hits()), (1, 1));

    for _ in 0..20 {
        let reply = client.get("panicky", "/").await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            reply.backend().starts_with("panicky-"),
            "{:?}",
            reply.flags()
        );
    }
    assert!(
        panicky[0].hits() > 1 && panicky[1].hits() > 1,
        "panic spreads over the ejected endpoints: {} / {}",
        panicky[0].hits(),
        panicky[1].hits()
    );
    assert!(sidecar.shutdown().await);
}
