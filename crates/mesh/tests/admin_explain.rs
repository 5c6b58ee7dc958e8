//! The admin `/explain` endpoint: `mesh explain` against the live routing
//! table of a running sidecar, following reloads.

#![allow(clippy::unwrap_used)]

mod support;

use http::StatusCode;
use support::{ConfigDir, MeshClient, eventually, service_entry, start_sidecar};

#[tokio::test]
async fn explains_against_the_live_table_and_follows_reloads() {
    let dir = ConfigDir::new();
    dir.seed(&["02-virtual-service-traffic-routing.yaml"]);
    dir.write(
        "endpoints.yaml",
        &service_entry("reviews", "reviews", 9080, "HTTP", &[(1, "v1"), (2, "v2")]),
    );
    let sidecar = start_sidecar(&dir, 1, true).await;
    let admin = MeshClient::new(sidecar.admin);

    let reply = admin
        .get(
            "admin",
            "/explain?url=http://reviews:9080/&header=x-canary:%20true",
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let text = String::from_utf8(reply.body.to_vec()).unwrap();
    assert!(
        text.contains("decided by   VirtualService/default/reviews-vs"),
        "{text}"
    );
    assert!(text.contains("rule         #0, match block 0"), "{text}");
    assert!(text.contains("also matches #1, every request"), "{text}");

    let reply = admin
        .get(
            "admin",
            "/explain?method=GET&url=http://reviews:9080/&format=json",
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(json["rule"]["index"], 1);
    assert_eq!(json["destinations"][0]["percent"], 90.0);
    assert_eq!(json["request"]["caller_namespace"], "default");

    // After a reload that removes the VirtualService, the host's default
    // route decides.
    std::fs::remove_file(dir.path().join("02-virtual-service-traffic-routing.yaml")).unwrap();
    eventually("the VirtualService is gone from /explain", || async {
        let reply = admin
            .get("admin", "/explain?url=http://reviews:9080/")
            .await;
        String::from_utf8_lossy(&reply.body).contains("the host's default route")
    })
    .await;

    // Bad queries are 400 with a reason, never a panic.
    for bad in [
        "/explain",
        "/explain?url=/no-host",
        "/explain?url=http://reviews/&method=G%20T",
        "/explain?url=http://reviews/&header=no-colon",
        "/explain?url=http://reviews/&bogus=1",
    ] {
        let reply = admin.get("admin", bad).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(!reply.body.is_empty(), "{bad}");
    }
    sidecar.shutdown().await;
}
