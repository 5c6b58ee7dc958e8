//! What a caller of the sidecar sees when routing cannot succeed (SPEC 2),
//! the admin endpoints, and a broken configuration written while running.

mod support;

use http::StatusCode;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_virtual_service_with_no_matching_rule_answers_404_nr() {
    let v1 = Backend::start("reviews-v1", "v1").await;
    let dir = ConfigDir::new();
    dir.seed(&[
        "06-fault-injection.yaml",
        "03-destination-rule-load-balancing.yaml",
    ])
    .write(
        "reviews.yaml",
        &service_entry("reviews", "reviews", 9080, "HTTP", &[v1.endpoint()]),
    );
    let sidecar = start_sidecar(&dir, 1, false).await;
    let client = MeshClient::new(sidecar.outbound);
    // reviews-fault has one rule, for `x-test-user: qa` only.
    for headers in [
        &[][..],
        &[("x-test-user", "dev")][..],
        &[("x-test-user", "QA")][..],
    ] {
        let reply = client.get_with("reviews", "/", headers).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{headers:?}");
        assert_eq!(reply.flags(), "NR", "{headers:?}");
        assert_eq!(reply.backend(), "");
    }
    assert_eq!(v1.hits(), 0);
    assert!(sidecar.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undefined_subset_no_endpoints_and_refused_connections() {
    let v1 = Backend::start("ratings-v1", "v1").await;
    let refused = closed_port().await;
    let dir = ConfigDir::new();
    dir.write(
        "ratings.yaml",
        &service_entry("ratings", "ratings", 9080, "HTTP", &[v1.endpoint()]),
    )
    .write(
        "ratings-routes.yaml",
        "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\n\
         metadata: { name: ratings }\nspec:\n  host: ratings\n  subsets:\n\
         \x20 - { name: v1, labels: { version: v1 } }\n\
         \x20 - { name: v2, labels: { version: v2 } }\n\
         ---\n\
         apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\n\
         metadata: { name: ratings }\nspec:\n  hosts: [ratings]\n  http:\n\
         \x20 - match: [{ uri: { prefix: /undefined } }]\n\
         \x20   route: [{ destination: { host: ratings, subset: v9 } }]\n\
         \x20 - match: [{ uri: { prefix: /empty-subset } }]\n\
         \x20   route: [{ destination: { host: ratings, subset: v2 } }]\n\
         \x20 - route: [{ destination: { host: ratings, subset: v1 } }]\n",
    )
    .write(
        "details.yaml",
        // Endpoints come from WorkloadEntries with these labels, and
        // there are none.
        "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\n\
         metadata: { name: details }\nspec:\n  hosts: [details]\n\
         \x20 location: MESH_INTERNAL\n  resolution: STATIC\n\
         \x20 ports: [{ number: 9080, name: http, protocol: HTTP }]\n\
         \x20 workloadSelector: { labels: { app: details } }\n",
    )
    .write(
        "gone.yaml",
        &service_entry("gone", "gone", 9080, "HTTP", &[(refused, "v1")]),
    );
    let sidecar = start_sidecar(&dir, 1, false).await;
    let client = MeshClient::new(sidecar.outbound);

    let ok = client.get("ratings", "/").await;
    assert_eq!((ok.status, ok.backend()), (StatusCode::OK, "ratings-v1"));

    let cases = [
        ("ratings", "/undefined", "NC"),
        ("ratings", "/empty-subset", "UH"),
        ("details", "/", "UH"),
        ("never-registered", "/", "UH"),
        // Istio's default retries refused connections twice (SPEC 2, 4.6).
        ("gone", "/", "UF,URX"),
    ];
    for (host, path, flag) in cases {
        let reply = client.get(host, path).await;
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{host}{path}: {reply:?}"
        );
        assert_eq!(reply.flags(), flag, "{host}{path}");
        assert_eq!(reply.backend(), "", "{host}{path}");
    }
    assert_eq!(v1.hits(), 1);
    assert!(sidecar.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_host_gets_a_4xx_and_the_sidecar_keeps_serving() {
    let v1 = Backend::start("reviews-v1", "v1").await;
    let dir = ConfigDir::new();
    dir.write(
        "reviews.yaml",
        &service_entry("reviews", "reviews", 9080, "HTTP", &[v1.endpoint()]),
    );
    let sidecar = start_sidecar(&dir, 1, false).await;
    for raw in [
        &b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"[..],
        &b"GET / HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n"[..],
        &b"GET / HTTP/1.0\r\n\r\n"[..],
    ] {
        let mut stream = TcpStream::connect(sidecar.outbound).await.unwrap();
        stream.write_all(raw).await.unwrap();
        let (head, _) = read_head(&mut stream).await;
        let status = head_status(&head);
        assert!(
            (400..500).contains(&status),
            "{:?} -> {head}",
            String::from_utf8_lossy(raw)
        );
    }
    let reply = MeshClient::new(sidecar.outbound).get("reviews", "/").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(v1.hits(), 1);
    assert!(sidecar.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_and_a_refused_reload() {
    let v1 = Backend::start("reviews-v1", "v1").await;
    let v2 = Backend::start("reviews-v2", "v2").await;
    let dir = ConfigDir::new();
    dir.seed(&[
        "02-virtual-service-traffic-routing.yaml",
        "03-destination-rule-load-balancing.yaml",
    ])
    .write(
        "reviews.yaml",
        &service_entry(
            "reviews",
            "reviews",
            9080,
            "HTTP",
            &[v1.endpoint(), v2.endpoint()],
        ),
    );
    let sidecar = start_sidecar(&dir, 1, true).await;
    let admin = MeshClient::new(sidecar.admin);
    for path in ["/ready", "/live"] {
        let reply = admin.get("admin", path).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
    }
    let dump = config_dump(&sidecar).await;
    assert_eq!(dump["generation"], 1);
    assert!(dump.get("lastRefusedReload").is_none());
    let names: Vec<&str> = dump["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["metadata"]["name"].as_str().or(r["name"].as_str()))
        .collect();
    assert!(
        dump["resources"].as_array().unwrap().len() >= 4,
        "resources: {names:?}"
    );

    // A typo in a retry policy is an error (unknown field): the whole new
    // configuration is refused and generation 1 stays in force.
    dir.write(
        "99-broken.yaml",
        "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\n\
         metadata: { name: broken }\nspec:\n  hosts: [ratings]\n  http:\n\
         \x20 - route: [{ destination: { host: ratings } }]\n\
         \x20   retries: { attempts: 3, retryOnn: 5xx }\n",
    );
    eventually("the reload attempt to be refused", || {
        let refused = sidecar.snapshots.last_failure().is_some();
        async move { refused }
    })
    .await;
    let dump = config_dump(&sidecar).await;
    assert_eq!(dump["generation"], 1);
    assert_eq!(dump["lastRefusedReload"]["keptGeneration"], 1);
    assert!(
        dump["lastRefusedReload"]["diagnostics"]
            .to_string()
            .contains("retryOnn"),
        "{}",
        dump["lastRefusedReload"]
    );
    assert_eq!(dump["reloads"]["refused"], 1);
    assert_eq!(sidecar.snapshots.load().generation, 1);
    // Traffic still follows generation 1.
    let client = MeshClient::new(sidecar.outbound);
    let reply = client
        .get_with("reviews", "/", &[("x-canary", "true")])
        .await;
    assert_eq!(
        (reply.status, reply.backend()),
        (StatusCode::OK, "reviews-v2")
    );
    let reply = client.get("ratings", "/").await;
    assert_eq!(reply.flags(), "UH", "ratings is not routed: {reply:?}");
    assert!(sidecar.shutdown().await);
}
