//! gRPC through the mesh, both ways it is deployed: a tonic client talking
//! h2c to the sidecar's outbound listener, and a tonic client whose
//! transport is the in-process `mesh::Client`. Both reach a real gRPC server
//! on 127.0.0.1 over HTTP/2 (its ServiceEntry port says `protocol: GRPC`),
//! and both must see replies, streamed messages, the server's custom
//! trailer and its error statuses exactly as the server sent them.

#![allow(clippy::unwrap_used)]

mod grpc_support;

use std::net::SocketAddr;
use std::sync::Arc;

use grpc_support::{EchoClient, EchoRequest, TRAILER, service_entry, spawn_echo_server};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh::sidecar::{Sidecar, SidecarConfig};
use mesh_route::random::SplitMix;
use tonic::Code;

const ORIGIN: &str = "http://echo:50051";

/// Writes the echo service's ServiceEntry into a fresh folder.
fn config(backend: SocketAddr) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("echo.yaml"),
        service_entry("echo", 50051, &[backend]),
    )
    .unwrap();
    dir
}

/// Every assertion, against one client whatever its transport.
async fn exercise<T>(mut client: EchoClient<T>)
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    // Unary: the reply, and the server's trailer (tonic merges a unary
    // call's trailers into the response metadata).
    let resp = client
        .unary(EchoRequest {
            message: "hello".into(),
            ..Default::default()
        })
        .await
        .expect("unary call");
    assert_eq!(resp.metadata().get(TRAILER).unwrap(), "echo-1");
    let reply = resp.into_inner();
    assert_eq!(reply.message, "hello");
    assert_eq!(reply.served_by, "echo-1");

    // A server error status arrives as that status, message intact.
    let status = client
        .unary(EchoRequest {
            message: "missing".into(),
            ..Default::default()
        })
        .await
        .expect_err("NOT_FOUND");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(status.message(), "no such key: missing");

    // Server streaming: every message in order, then the trailers.
    let mut stream = client
        .server_stream(EchoRequest {
            message: "tick".into(),
            count: 25,
            fail_after: 0,
        })
        .await
        .expect("stream call")
        .into_inner();
    let mut seen = Vec::new();
    while let Some(reply) = stream.message().await.expect("stream message") {
        assert_eq!(reply.message, "tick");
        assert_eq!(reply.served_by, "echo-1");
        seen.push(reply.index);
    }
    assert_eq!(seen, (0..25).collect::<Vec<_>>());
    let trailers = stream.trailers().await.unwrap().expect("trailers");
    assert_eq!(trailers.get(TRAILER).unwrap(), "echo-1");

    // A stream that fails midway: the messages before, then the status.
    let mut stream = client
        .server_stream(EchoRequest {
            message: "tock".into(),
            count: 10,
            fail_after: 3,
        })
        .await
        .expect("stream call")
        .into_inner();
    let mut count = 0;
    let status = loop {
        match stream.message().await {
            Ok(Some(_)) => count += 1,
            Ok(None) => panic!("stream ended without its error"),
            Err(status) => break status,
        }
    };
    assert_eq!(count, 3);
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(status.message(), "stream stopped after 3");
}

#[tokio::test]
async fn grpc_through_the_sidecar() {
    let backend = spawn_echo_server("echo-1").await;
    let dir = config(backend);
    let mut cfg = SidecarConfig::new(vec![dir.path().to_path_buf()]);
    cfg.outbound = "127.0.0.1:0".parse().unwrap();
    cfg.admin = "127.0.0.1:0".parse().unwrap();
    cfg.watch = false;
    cfg.random = Arc::new(SplitMix::seeded(7));
    let sidecar = Sidecar::start(cfg).await.unwrap();

    // An h2c client that dials the sidecar whatever the URI names, so the
    // `:authority` stays the service's (`echo:50051`) and the sidecar
    // routes on it, as an application configured with a proxy would.
    let outbound = sidecar.outbound;
    let dial = tower::service_fn(move |_: http::Uri| {
        Box::pin(async move {
            tokio::net::TcpStream::connect(outbound)
                .await
                .map(TokioIo::new)
        })
    });
    let h2c: HyperClient<_, tonic::body::Body> = HyperClient::builder(TokioExecutor::new())
        .http2_only(true)
        .build(dial);
    exercise(EchoClient::with_origin(h2c, ORIGIN.parse().unwrap())).await;

    assert!(sidecar.shutdown().await, "sidecar drained cleanly");
}

#[tokio::test]
async fn grpc_through_the_in_process_client() {
    let backend = spawn_echo_server("echo-1").await;
    let dir = config(backend);
    let client = mesh::Client::builder()
        .config([dir.path()])
        .random(Arc::new(SplitMix::seeded(7)))
        .watch(false)
        .build()
        .await
        .unwrap();
    exercise(EchoClient::with_origin(client, ORIGIN.parse().unwrap())).await;
}

/// Failures the mesh answers itself reach a gRPC caller as gRPC statuses
/// (SPEC 2, last row): no endpoints is UNAVAILABLE, no matching route is
/// NOT_FOUND, with the response flag alongside.
#[tokio::test]
async fn mesh_failures_are_grpc_statuses() {
    let backend = spawn_echo_server("echo-1").await;
    let dir = config(backend);
    std::fs::write(
        dir.path().join("routes.yaml"),
        r#"
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: { name: echo-only-beta }
spec:
  hosts: [echo]
  http:
  - match:
    - headers:
        x-user: { exact: beta }
    route:
    - destination: { host: echo }
"#,
    )
    .unwrap();
    let client = mesh::Client::builder()
        .config([dir.path()])
        .random(Arc::new(SplitMix::seeded(7)))
        .watch(false)
        .build()
        .await
        .unwrap();
    let request = || EchoRequest {
        message: "hello".into(),
        ..Default::default()
    };
    let mut nowhere =
        EchoClient::with_origin(client.clone(), "http://nowhere:50051".parse().unwrap());
    let status = nowhere.unary(request()).await.expect_err("no endpoints");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("no healthy upstream"),
        "{status:?}"
    );
    assert_eq!(
        status.metadata().get("x-mesh-response-flags").unwrap(),
        "UH"
    );

    let mut echo = EchoClient::with_origin(client, ORIGIN.parse().unwrap());
    let status = echo.unary(request()).await.expect_err("no route");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(
        status.metadata().get("x-mesh-response-flags").unwrap(),
        "NR"
    );
}
