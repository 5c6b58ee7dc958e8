//! Local rate limiting on the inbound side (Linkerd's
//! `HTTPLocalRateLimitPolicy`, SPEC 13.4; 429 with flag RL, SPEC 2), end to
//! end on real sockets: a client, the inbound listener, the inbound stack,
//! and a real application backend on 127.0.0.1.
//!
//! The limits are token buckets that refill while a burst is under way, so
//! every count is checked against the bound GCRA gives: a burst of `n`
//! requests against `rps` requests/s passes `min(n, rps + floor(elapsed *
//! rps))` at most and `min(n, rps)` at least. When the burst is faster than
//! one refill (the usual case), that is the exact count.
//!
//! mTLS does not exist yet, so the per-identity tests serve the inbound
//! stack behind a stand-in for the mTLS acceptor that puts the
//! `PeerIdentity` named by a test header into the request's extensions.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use mesh::core::http::Body;
use mesh::core::identity::{PeerIdentity, Workload};
use mesh::core::load::LoadOptions;
use mesh::core::reload::{ConfigSource, ReloadOutcome, SnapshotHandle};
use mesh::sidecar::{Sidecar, SidecarConfig};
use mesh::upstream::UpstreamSettings;
use support::{Backend, ConfigDir, DEADLINE, MeshClient, Reply};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

/// The test header the stand-in acceptor reads the client identity from.
const TEST_IDENTITY: &str = "x-test-peer-identity";

/// A Server selecting `app=web-svc` on `port` that admits any client (so
/// that authorization, once it exists, does not get in the way), and a
/// rate-limit policy on it with the given YAML body.
fn server_and_policy(port: &str, limits: &str) -> String {
    format!(
        "apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {{ namespace: emojivoto, name: web-http }}
spec:
  podSelector: {{ matchLabels: {{ app: web-svc }} }}
  port: {port}
  proxyProtocol: HTTP/1
  accessPolicy: all-unauthenticated
---
apiVersion: policy.linkerd.io/v1alpha1
kind: HTTPLocalRateLimitPolicy
metadata: {{ namespace: emojivoto, name: web-rl }}
spec:
  targetRef: {{ group: policy.linkerd.io, kind: Server, name: web-http }}
{limits}"
    )
}

fn web_workload() -> Workload {
    Workload {
        namespace: "emojivoto".into(),
        service_account: "web".into(),
        labels: [("app".to_owned(), "web-svc".to_owned())].into(),
    }
}

/// The sidecar for `web_workload`, its inbound listener forwarding to `app`.
async fn start(dir: &ConfigDir, app: &Backend, workload: Workload) -> Sidecar {
    let mut config = SidecarConfig::new(vec![dir.path().to_path_buf()]);
    config.workload = workload;
    config.outbound = SocketAddr::from(([127, 0, 0, 1], 0));
    config.inbound = SocketAddr::from(([127, 0, 0, 1], 0));
    config.admin = SocketAddr::from(([127, 0, 0, 1], 0));
    config.app = Some(app.addr);
    config.watch = false;
    config.drain_timeout = DEADLINE;
    Sidecar::start(config).await.unwrap()
}

/// The inbound stack of `workload` served on a listener of its own, behind
/// the stand-in acceptor that sets the client identity from
/// [`TEST_IDENTITY`]. Returns its address and the handle that stops it.
async fn start_inbound(
    dir: &ConfigDir,
    app: &Backend,
    workload: Workload,
) -> (SocketAddr, watch::Sender<bool>) {
    let source = ConfigSource {
        paths: vec![dir.path().to_path_buf()],
        options: LoadOptions {
            default_namespace: workload.namespace.clone(),
        },
    };
    let snapshots: SnapshotHandle = mesh::core::reload::initial(source).unwrap();
    let inbound = mesh::stack::inbound(
        app.addr,
        &UpstreamSettings::default(),
        &snapshots,
        Arc::new(workload),
    );
    let acceptor = ServiceBuilder::new()
        .map_request(|mut req: Request<Body>| {
            let peer = req
                .headers()
                .get(TEST_IDENTITY)
                .and_then(|v| v.to_str().ok())
                .map(PeerIdentity::from);
            if let Some(peer) = peer {
                req.extensions_mut().insert(peer);
            }
            req
        })
        .service(inbound);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(mesh::server::serve(
        "inbound",
        listener,
        BoxCloneSyncService::new(acceptor),
        stopped,
        DEADLINE,
    ));
    (addr, stop)
}

/// What a burst saw.
struct Burst {
    ok: usize,
    limited: usize,
    elapsed: Duration,
}

/// Sends `n` GETs one after another on one keep-alive connection (as `peer`
/// when given) and checks that every refusal is 429 RL.
async fn burst(client: &MeshClient, n: usize, peer: Option<&str>) -> Burst {
    let headers: Vec<(&str, &str)> = peer.map(|p| (TEST_IDENTITY, p)).into_iter().collect();
    let start = tokio::time::Instant::now();
    let mut replies: Vec<Reply> = Vec::with_capacity(n);
    for _ in 0..n {
        replies.push(client.get_with("web-svc", "/", &headers).await);
    }
    let elapsed = start.elapsed();
    let mut ok = 0;
    let mut limited = 0;
    for r in &replies {
        match r.status.as_u16() {
            200 => {
                assert_eq!(r.backend(), "web", "a passed request reached the app");
                ok += 1;
            }
            429 => {
                assert_eq!(r.flags(), "RL");
                assert_eq!(r.backend(), "", "a refused request never reached the app");
                limited += 1;
            }
            other => panic!("unexpected status {other}: {r:?}"),
        }
    }
    Burst {
        ok,
        limited,
        elapsed,
    }
}

/// Asserts the GCRA bound on a burst of `n` against `rps` (see the module
/// doc): exact when the burst took less than one refill interval.
fn assert_limited(b: &Burst, n: usize, rps: usize, what: &str) {
    assert_eq!(b.ok + b.limited, n);
    let refills = (b.elapsed.as_secs_f64() * rps as f64).floor() as usize;
    let (low, high) = (n.min(rps), n.min(rps + refills));
    assert!(
        (low..=high).contains(&b.ok),
        "{what}: {} of {n} passed in {:?}; expected {low}..={high} at {rps}/s",
        b.ok,
        b.elapsed
    );
    if refills == 0 {
        assert_eq!(b.ok, n.min(rps), "{what}: exact when faster than a refill");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_above_the_total_gets_429_rl_for_the_excess_only() {
    let app = Backend::start("web", "v1").await;
    let dir = ConfigDir::new();
    dir.write(
        "rl.yaml",
        &server_and_policy(
            &app.port().to_string(),
            "  total: { requestsPerSecond: 4 }\n",
        ),
    );
    let sidecar = start(&dir, &app, web_workload()).await;
    let client = MeshClient::new(sidecar.inbound.unwrap());
    let b = burst(&client, 12, None).await;
    assert_limited(&b, 12, 4, "total");
    assert_eq!(app.hits() as usize, b.ok, "only the requests that passed");

    // Another workload (labels the Server does not select), or the same
    // Server on another port: no limit.
    let other = Backend::start("web", "v1").await;
    let unlimited = start(&dir, &other, Workload::default()).await;
    let b = burst(&MeshClient::new(unlimited.inbound.unwrap()), 12, None).await;
    assert_eq!((b.ok, b.limited), (12, 0));
    let wrong_port = start(&dir, &other, web_workload()).await;
    let b = burst(&MeshClient::new(wrong_port.inbound.unwrap()), 12, None).await;
    assert_eq!((b.ok, b.limited), (12, 0));
    for s in [sidecar, unlimited, wrong_port] {
        assert!(s.shutdown().await);
    }
}

/// The Linkerd reference example (total 100, identity 20, an override of
/// 25 for `special-client`) on the seed's Server shape (a named port).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_identity_and_override_limits_follow_the_linkerd_example() {
    let app = Backend::start("web", "v1").await;
    let dir = ConfigDir::new();
    dir.write(
        "rl.yaml",
        &server_and_policy(
            "http",
            "  total:
    requestsPerSecond: 100
  identity:
    requestsPerSecond: 20
  overrides:
  - requestsPerSecond: 25
    clientRefs:
    - kind: ServiceAccount
      namespace: emojivoto
      name: special-client
",
        ),
    );
    let (addr, stop) = start_inbound(&dir, &app, web_workload()).await;
    let client = MeshClient::new(addr);

    let special = "special-client.emojivoto.serviceaccount.identity.linkerd.cluster.local";
    // Every request takes a total token first (refused ones too, as in
    // Linkerd), so the bursts stay under the total of 100 together.
    let b = burst(&client, 28, Some(special)).await;
    assert_limited(&b, 28, 25, "override");
    // Each identity has its own bucket, whichever spelling it comes in.
    let voting = "spiffe://cluster.local/ns/emojivoto/sa/voting";
    let b = burst(&client, 23, Some(voting)).await;
    assert_limited(&b, 23, 20, "identity voting");
    let web = "web.emojivoto.serviceaccount.identity.linkerd.cluster.local";
    let b = burst(&client, 23, Some(web)).await;
    assert_limited(&b, 23, 20, "identity web");
    // Clients without an identity share one bucket of the identity size.
    let b = burst(&client, 23, None).await;
    assert_limited(&b, 23, 20, "unauthenticated");
    stop.send_replace(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_total_bounds_all_identities_together() {
    let app = Backend::start("web", "v1").await;
    let dir = ConfigDir::new();
    dir.write(
        "rl.yaml",
        &server_and_policy(
            "http",
            "  total: { requestsPerSecond: 6 }\n  identity: { requestsPerSecond: 4 }\n",
        ),
    );
    let (addr, stop) = start_inbound(&dir, &app, web_workload()).await;
    let client = MeshClient::new(addr);
    let start = tokio::time::Instant::now();
    let a = burst(&client, 4, Some("spiffe://cluster.local/ns/emojivoto/sa/a")).await;
    let b = burst(&client, 4, Some("spiffe://cluster.local/ns/emojivoto/sa/b")).await;
    let elapsed = start.elapsed();
    // a gets its 4; b, under its own limit of 4, gets what is left of the
    // total (2), plus refills.
    if elapsed < Duration::from_millis(166) {
        assert_eq!((a.ok, b.ok), (4, 2));
    } else {
        assert!(a.ok == 4 && b.ok >= 2, "{} {}", a.ok, b.ok);
        assert!(a.ok + b.ok <= 6 + (elapsed.as_secs_f64() * 6.0) as usize);
    }
    stop.send_replace(true);
}

fn swapped(outcome: ReloadOutcome) {
    assert!(
        matches!(outcome, ReloadOutcome::Swapped { .. }),
        "{outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_keep_the_buckets_of_an_unchanged_policy_and_renew_a_changed_one() {
    let app = Backend::start("web", "v1").await;
    let dir = ConfigDir::new();
    let one = server_and_policy("http", "  total: { requestsPerSecond: 1 }\n");
    dir.write("rl.yaml", &one);
    let sidecar = start(&dir, &app, web_workload()).await;
    let client = MeshClient::new(sidecar.inbound.unwrap());
    let reload = |snapshots: SnapshotHandle| async move {
        tokio::task::spawn_blocking(move || snapshots.reload_now())
            .await
            .unwrap()
    };

    // Spend the one token, then reload with an unrelated change.
    let start = tokio::time::Instant::now();
    let first = burst(&client, 1, None).await;
    assert_eq!(first.ok, 1);
    dir.write(
        "other.yaml",
        &support::service_entry("other", "other", 80, "HTTP", &[(app.port(), "v1")]),
    );
    swapped(reload(sidecar.snapshots.clone()).await);
    let after = burst(&client, 1, None).await;
    if start.elapsed() < Duration::from_secs(1) {
        // A renewed bucket would have let this one through.
        assert_eq!(after.limited, 1, "the spent bucket was kept");
    }

    // A changed policy starts with full buckets.
    dir.write(
        "rl.yaml",
        &server_and_policy("http", "  total: { requestsPerSecond: 3 }\n"),
    );
    swapped(reload(sidecar.snapshots.clone()).await);
    let b = burst(&client, 6, None).await;
    assert_limited(&b, 6, 3, "renewed");

    // No policy at all: nothing is limited.
    dir.write("rl.yaml", one.split("---").next().unwrap());
    swapped(reload(sidecar.snapshots.clone()).await);
    let b = burst(&client, 10, None).await;
    assert_eq!((b.ok, b.limited), (10, 0));
    assert!(sidecar.shutdown().await);
}
