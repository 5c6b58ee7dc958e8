//! Drain: a request in flight when shutdown starts completes; new
//! connections are refused once it has started.

mod support;

use http::StatusCode;
use support::*;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_requests_and_refuses_new_connections() {
    let slow = Backend::start("reviews-v1", "v1").await;
    let dir = ConfigDir::new();
    dir.write(
        "reviews.yaml",
        &service_entry("reviews", "reviews", 9080, "HTTP", &[slow.endpoint()]),
    );
    let sidecar = start_sidecar(&dir, 1, false).await;
    let outbound = sidecar.outbound;
    let client = MeshClient::new(outbound);

    let in_flight = tokio::spawn(async move { client.get("reviews", "/slow").await });
    // The request has reached the backend, which holds it.
    tokio::time::timeout(DEADLINE, slow.slow_arrived())
        .await
        .expect("the slow request never reached the backend");

    let shutdown = tokio::spawn(sidecar.shutdown());
    // The listener closes promptly: connects start failing.
    eventually(
        "the outbound listener to refuse connections",
        || async move { TcpStream::connect(outbound).await.is_err() },
    )
    .await;
    let err = TcpStream::connect(outbound).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    // Shutdown waits for the request it is draining.
    assert!(
        !shutdown.is_finished(),
        "shutdown did not wait for the request"
    );
    assert!(!in_flight.is_finished());

    slow.release();
    let reply = tokio::time::timeout(DEADLINE, in_flight)
        .await
        .expect("the in-flight request did not finish")
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.backend(), "reviews-v1");
    let clean = tokio::time::timeout(DEADLINE, shutdown)
        .await
        .expect("shutdown did not finish")
        .unwrap();
    assert!(clean, "every listener drained cleanly");
    assert_eq!(slow.hits(), 1);
}
