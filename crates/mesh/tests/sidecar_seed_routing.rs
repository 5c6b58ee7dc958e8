//! The seed's routing examples through the real sidecar on loopback: canary
//! 90/10 with the `x-canary` override, A/B by `user-group`, URL prefix
//! routing (gateway-bound as in the seed, and bound to `mesh`), blue-green
//! flipped by editing the file under traffic, and consistent hashing.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use http::StatusCode;
use support::*;

const REVIEWS_SE: &str = "50-reviews-endpoints.yaml";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_splits_90_10_and_x_canary_always_reaches_v2() {
    let v1 = Backend::start("reviews-v1", "v1").await;
    let v2 = Backend::start("reviews-v2", "v2").await;
    let dir = ConfigDir::new();
    dir.seed(&[
        "02-virtual-service-traffic-routing.yaml",
        "03-destination-rule-load-balancing.yaml",
    ])
    .write(
        REVIEWS_SE,
        &service_entry(
            "reviews",
            "reviews",
            9080,
            "HTTP",
            &[v1.endpoint(), v2.endpoint()],
        ),
    );
    let sidecar = start_sidecar(&dir, 90_10, false).await;
    let client = MeshClient::new(sidecar.outbound);

    // 10,000 requests over 32 keep-alive connections. The weighted choice
    // is per request (SPEC 4.3), so v2's count is Binomial(n, 0.1):
    // sigma = sqrt(10000 * 0.1 * 0.9) = 30, 5 sigma = 150.
    let n = 10_000;
    let seen = fan_out(&client, "reviews", "/reviews/1", &[], n, 32).await;
    let (to_v1, to_v2) = (count(&seen, "reviews-v1"), count(&seen, "reviews-v2"));
    assert_eq!(to_v1 + to_v2, n, "every request answered by a backend");
    assert_binomial(to_v2, n, 0.10, "canary share of v2");
    // The backends agree with what the caller saw.
    assert_eq!(v1.hits() as usize, to_v1);
    assert_eq!(v2.hits() as usize, to_v2);

    // The header rule comes first and sends everything to v2.
    let seen = fan_out(
        &client,
        "reviews",
        "/reviews/1",
        &[("x-canary", "true")],
        300,
        8,
    )
    .await;
    assert_eq!(count(&seen, "reviews-v2"), 300, "x-canary: true -> v2");
    // Any other value is not the canary header.
    let seen = fan_out(&client, "reviews", "/", &[("x-canary", "True")], 2_000, 16).await;
    assert_eq!(
        count(&seen, "reviews-v1") + count(&seen, "reviews-v2"),
        2_000
    );
    assert_binomial(count(&seen, "reviews-v2"), 2_000, 0.10, "x-canary: True");
    assert!(sidecar.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ab_test_by_user_group_header() {
    let v1 = Backend::start("webapp-v1", "v1").await;
    let v2 = Backend::start("webapp-v2", "v2").await;
    let dir = ConfigDir::new();
    dir.seed(&["10-a-b-testing.yaml"])
        .write(
            "50-webapp.yaml",
            &service_entry(
                "webapp",
                "webapp",
                80,
                "HTTP",
                &[v1.endpoint(), v2.endpoint()],
            ),
        )
        .write(
            "51-webapp-dr.yaml",
            "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\n\
             metadata: { name: webapp }\nspec:\n  host: webapp\n  subsets:\n\
             \x20 - { name: v1, labels: { version: v1 } }\n\
             \x20 - { name: v2, labels: { version: v2 } }\n",
        );
    let sidecar = start_sidecar(&dir, 1, false).await;
    let client = MeshClient::new(sidecar.outbound);

    let beta = fan_out(
        &client,
        "webapp",
        "/",
        &[("user-group", "beta-testers")],
        200,
        8,
    )
    .await;
    assert_eq!(count(&beta, "webapp-v2"), 200);
    for others in [
        &[][..],
        &[("user-group", "alpha")][..],
        &[("user-group", "beta-testers-2")][..],
    ] {
        let seen = fan_out(&client, "webapp", "/", others, 100, 4).await;
        assert_eq!(count(&seen, "webapp-v1"), 100, "{others:?} -> v1");
    }
    assert_eq!(v2.hits(), 200);
    assert_eq!(v1.hits(), 300);
    assert!(sidecar.shutdown().await);
}

/// ServiceEntries for the seed's api hosts (service port 8080 as the seed's
/// destinations name it) and for `api.example.com` itself.
async fn api_backends(dir: &ConfigDir) -> [Backend; 3] {
    let api_v1 = Backend::start("api-v1", "v1").await;
    let api_v2 = Backend::start("api-v2", "v1").await;
    let example = Backend::start("api-example", "v1").await;
    dir.write(
        "50-api-v1.yaml",
        &service_entry("api-v1", "api-v1", 8080, "HTTP", &[api_v1.endpoint()]),
    )
    .write(
        "51-api-v2.yaml",
        &service_entry("api-v2", "api-v2", 8080, "HTTP", &[api_v2.endpoint()]),
    )
    .write(
        "52-api-example.yaml",
        &service_entry(
            "api-example",
            "api.example.com",
            80,
            "HTTP",
            &[example.endpoint()],
        ),
    );
    [api_v1, api_v2, example]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_bound_api_vs_does_not_route_sidecar_traffic() {
    let dir = ConfigDir::new();
    dir.seed(&[
        "02-virtual-service-traffic-routing.yaml",
        "04-gateway-ingress.yaml",
    ]);
    let [api_v1, api_v2, example] = api_backends(&dir).await;
    let sidecar = start_sidecar(&dir, 1, false).await;
    let client = MeshClient::new(sidecar.outbound);
    // api-vs names only `api-gateway` (SPEC 4.1): the sidecar routes
    // api.example.com by its own ServiceEntry, whatever the path.
    for path in ["/v1/users", "/v2/users", "/other"] {
        let reply = client.get("api.example.com", path).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(reply.backend(), "api-example", "{path}");
    }
    assert_eq!((api_v1.hits(), api_v2.hits(), example.hits()), (0, 0, 3));
    assert!(sidecar.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_prefix_routing_with_a_default_route_when_bound_to_mesh() {
    let seed = seed_text("02-virtual-service-traffic-routing.yaml");
    let api_vs = seed
        .split("\n---")
        .find(|doc| doc.contains("name: api-vs"))
        .unwrap();
    let mesh_copy = api_vs
        .replace("name: api-vs", "name: api-vs-mesh")
        .replace("  - api-gateway\n", "  - api-gateway\n  - mesh\n");
    assert!(
        mesh_copy.contains("  - mesh\n"),
        "the seed's layout changed"
    );
    let dir = ConfigDir::new();
    dir.seed(&["04-gateway-ingress.yaml"])
        .write("02-api-vs-mesh.yaml", &mesh_copy);
    let [api_v1, api_v2, example] = api_backends(&dir).await;
    let sidecar = start_sidecar(&dir, 1, false).await;
    let client = MeshClient::new(sidecar.outbound);
    let cases = [
        ("/v1/users", "api-v1"),
        ("/v1/", "api-v1"),
        ("/v2/users?page=2", "api-v2"),
        ("/v2/", "api-v2"),
        // Raw-string prefix `/v2/`: `/v2` alone falls to the default route.
        ("/v2", "api-v1"),
        ("/v3/users", "api-v1"),
        ("/", "api-v1"),
    ];
    for (path, expected) in cases {
        let reply = client.get("api.example.com", path).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(reply.backend(), expected, "{path}");
        // The path reaches the backend unchanged (no rewrite configured).
        assert_eq!(reply.json()["uri"], path, "{path}");
    }
    assert_eq!((api_v1.hits(), api_v2.hits(), example.hits()), (5, 2, 0));
    assert!(sidecar.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_flip_under_traffic_loses_no_request() {
    let blue = Backend::start("webapp-blue", "blue").await;
    let green = Backend::start("webapp-green", "green").await;
    let dir = ConfigDir::new();
    let seed = seed_text("11-blue-green-deployment.yaml");
    dir.write("11-blue-green-deployment.yaml", &seed).write(
        "50-webapp.yaml",
        &service_entry(
            "webapp",
            "webapp",
            80,
            "HTTP",
            &[blue.endpoint(), green.endpoint()],
        ),
    );
    let sidecar = start_sidecar(&dir, 7, true).await;
    let client = MeshClient::new(sidecar.outbound);

    let before = fan_out(&client, "webapp", "/", &[], 500, 8).await;
    assert_eq!(count(&before, "webapp-blue"), 500, "100/0 -> all blue");

    // Background traffic: 4 tasks send until told to stop, recording every
    // outcome in order per task.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut traffic = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (client, stop, sent) = (client.clone(), Arc::clone(&stop), Arc::clone(&sent));
        traffic.spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let reply = client.get("webapp", "/").await;
                sent.fetch_add(1, Ordering::SeqCst);
                seen.push(if reply.status == StatusCode::OK {
                    reply.backend().to_owned()
                } else {
                    format!("{}:{}", reply.status, reply.flags())
                });
            }
            seen
        });
    }
    eventually("background traffic to start", || {
        let sent = Arc::clone(&sent);
        async move { sent.load(Ordering::SeqCst) >= 50 }
    })
    .await;

    let generation = sidecar.snapshots.load().generation;
    let flipped = seed
        .replace(
            "subset: blue\n      weight: 100",
            "subset: blue\n      weight: 0",
        )
        .replace(
            "subset: green\n      weight: 0",
            "subset: green\n      weight: 100",
        );
    assert_ne!(flipped, seed, "the seed's layout changed");
    dir.write("11-blue-green-deployment.yaml", &flipped);
    eventually("the reload", || {
        let current = sidecar.snapshots.load().generation;
        async move { current > generation }
    })
    .await;
    // The routing table is recompiled right after the snapshot swaps: wait
    // for the first green answer, then keep the traffic running a while.
    eventually("green to answer", || {
        let green_hits = green.hits();
        async move { green_hits > 0 }
    })
    .await;
    let at_flip = sent.load(Ordering::SeqCst);
    eventually("more traffic after the flip", || {
        let sent = Arc::clone(&sent);
        async move { sent.load(Ordering::SeqCst) >= at_flip + 400 }
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    while let Some(seen) = traffic.join_next().await {
        let seen = seen.unwrap();
        total += seen.len();
        let failures: Vec<_> = seen.iter().filter(|s| !s.starts_with("webapp-")).collect();
        assert!(failures.is_empty(), "failed requests: {failures:?}");
        // Per task, the flip is one-way: no blue answer after a green one.
        if let Some(first_green) = seen.iter().position(|s| s == "webapp-green") {
            assert_eq!(
                count(&seen[first_green..], "webapp-blue"),
                0,
                "blue answered after green"
            );
        }
    }
    assert!(total >= 450);

    let after = fan_out(&client, "webapp", "/", &[], 500, 8).await;
    assert_eq!(count(&after, "webapp-green"), 500, "0/100 -> all green");
    let dump = config_dump(&sidecar).await;
    assert_eq!(dump["generation"], sidecar.snapshots.load().generation);
    assert!(dump["generation"].as_u64().unwrap() > generation);
    assert!(sidecar.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_keeps_a_user_on_one_v1_endpoint() {
    let v1: Vec<Backend> = futures_join(4, "reviews-v1", "v1").await;
    let v2: Vec<Backend> = futures_join(2, "reviews-v2", "v2").await;
    let dir = ConfigDir::new();
    let endpoints: Vec<(u16, &str)> = v1.iter().chain(&v2).map(Backend::endpoint).collect();
    dir.seed(&["03-destination-rule-load-balancing.yaml"])
        .write(
            REVIEWS_SE,
            &service_entry("reviews", "reviews", 9080, "HTTP", &endpoints),
        )
        .write(
            "02-reviews-v1.yaml",
            "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\n\
             metadata: { name: reviews-hash }\nspec:\n  hosts: [reviews]\n  http:\n\
             \x20 - match: [{ headers: { x-canary: { exact: \"true\" } } }]\n\
             \x20   route: [{ destination: { host: reviews, subset: v2 } }]\n\
             \x20 - route: [{ destination: { host: reviews, subset: v1 } }]\n",
        );
    let sidecar = start_sidecar(&dir, 3, false).await;
    let client = MeshClient::new(sidecar.outbound);

    // Subset v1 inherits the top-level consistentHash on x-user-id.
    let mut used = std::collections::BTreeSet::new();
    for user in 0..40 {
        let id = format!("user-{user}");
        let seen = fan_out(&client, "reviews", "/", &[("x-user-id", &id)], 12, 3).await;
        let first = seen[0].clone();
        assert!(first.starts_with("reviews-v1-"), "{id} -> {first}");
        assert_eq!(count(&seen, &first), 12, "{id} moved: {seen:?}");
        used.insert(first);
    }
    // The hash spreads users: with 40 keys over 4 endpoints, all four are
    // used unless the ring is badly broken (P(miss one) < 4 * 0.75^40).
    assert_eq!(used.len(), 4, "keys reached only {used:?}");

    // Subset v2 overrides with ROUND_ROBIN: one user alternates.
    let mut seen = Vec::new();
    for _ in 0..10 {
        let reply = client
            .get_with(
                "reviews",
                "/",
                &[("x-user-id", "user-1"), ("x-canary", "true")],
            )
            .await;
        seen.push(reply.backend().to_owned());
    }
    assert_eq!(count(&seen, "reviews-v2-0"), 5, "{seen:?}");
    assert_eq!(count(&seen, "reviews-v2-1"), 5, "{seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0] != w[1]),
        "round robin: {seen:?}"
    );
    assert!(sidecar.shutdown().await);
}

/// `n` backends named `{prefix}-{i}` in `subset`.
async fn futures_join(n: usize, prefix: &str, subset: &str) -> Vec<Backend> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(Backend::start(&format!("{prefix}-{i}"), subset).await);
    }
    out
}

/// `consistentHash.useSourceIp`: the listener hands the caller's address
/// to the balancer, so every request from one client IP (here 127.0.0.1,
/// over many connections) lands on the same endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_ip_affinity_keeps_one_client_on_one_endpoint() {
    let mut backends = Vec::new();
    for i in 0..4 {
        backends.push(Backend::start(&format!("reviews-{i}"), "v1").await);
    }
    let endpoints: Vec<(u16, &str)> = backends.iter().map(Backend::endpoint).collect();
    let dir = ConfigDir::new();
    dir.write(
        "reviews.yaml",
        &service_entry("reviews", "reviews", 9080, "HTTP", &endpoints),
    );
    dir.write(
        "dr.yaml",
        "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata:\n  name: reviews\n\
         spec:\n  host: reviews\n  trafficPolicy:\n    loadBalancer:\n      consistentHash:\n        useSourceIp: true\n",
    );
    let sidecar = start_sidecar(&dir, 11, false).await;
    for _ in 0..40 {
        // A fresh client each time: new connections, new source ports.
        let reply = MeshClient::new(sidecar.outbound).get("reviews", "/").await;
        assert_eq!(reply.status, http::StatusCode::OK, "{reply:?}");
    }
    let hits: Vec<u64> = backends.iter().map(Backend::hits).collect();
    assert_eq!(hits.iter().filter(|h| **h > 0).count(), 1, "{hits:?}");
    assert_eq!(hits.iter().sum::<u64>(), 40);
    assert!(sidecar.shutdown().await);
}
