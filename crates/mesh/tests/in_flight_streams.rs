//! A request counts as in flight on its endpoint until its response body
//! ends, so LEAST_REQUEST sees long streams (gRPC streaming, downloads), not
//! just the time to the response head.

#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh::stack::{RoutingState, outbound};
use mesh::upstream::UpstreamSettings;
use mesh_core::identity::Workload;
use mesh_core::load::LoadOptions;
use mesh_core::reload::{self, ConfigSource};
use mesh_route::decision::DestinationKey;
use mesh_route::random::SplitMix;
use tokio::sync::{Notify, mpsc};
use tower::ServiceExt;

/// A backend whose response sends one chunk, then waits for `release`.
async fn holding_backend(release: Arc<Notify>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let release = Arc::clone(&release);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                    let release = Arc::clone(&release);
                    async move {
                        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
                        tokio::spawn(async move {
                            tx.send(Ok(Frame::data(Bytes::from_static(b"first"))))
                                .await
                                .unwrap();
                            release.notified().await;
                            tx.send(Ok(Frame::data(Bytes::from_static(b"last"))))
                                .await
                                .unwrap();
                        });
                        let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
                        Ok::<_, Infallible>(Response::new(body))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_counts_a_stream_until_its_body_ends() {
    let release = Arc::new(Notify::new());
    let backend = holding_backend(Arc::clone(&release)).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("reviews.yaml"),
        format!(
            "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata: {{ name: reviews }}\n\
             spec:\n  hosts: [reviews]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports:\n\
             \x20 - {{ number: 9080, name: http, protocol: HTTP }}\n  endpoints:\n\
             \x20 - {{ address: 127.0.0.1, ports: {{ http: {} }} }}\n",
            backend.port()
        ),
    )
    .unwrap();
    let snapshots = reload::initial(ConfigSource {
        paths: vec![dir.path().to_path_buf()],
        options: LoadOptions::default(),
    })
    .unwrap();
    let state = RoutingState::new(&snapshots, Arc::new(SplitMix::seeded(3)));
    let service = outbound(
        &state,
        Arc::new(Workload::default()),
        &UpstreamSettings::default(),
    );
    let request = Request::builder()
        .uri("http://reviews:9080/stream")
        .body(mesh_core::http::empty())
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);

    let table = state.table.load_full();
    let dest = DestinationKey {
        host: "reviews.default.svc.cluster.local".into(),
        subset: None,
        port: None,
    };
    let balancer = state
        .balancers
        .resolve(&table, &dest, Some(9080))
        .unwrap()
        .balancer;

    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, Bytes::from_static(b"first"));
    assert_eq!(balancer.active(0), 1, "the open stream is in flight");

    release.notify_one();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, Bytes::from_static(b"last"));
    assert_eq!(balancer.active(0), 0, "a finished stream is not");
}
