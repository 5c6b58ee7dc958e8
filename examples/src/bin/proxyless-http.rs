//! Proxyless HTTP: the mesh's outbound stack inside the calling process.
//!
//! Starts two `reviews` backends (v1, v2) on 127.0.0.1, writes a
//! ServiceEntry, a DestinationRule and a VirtualService (90/10 canary with an
//! `x-canary: true` override) to a temporary folder, builds a `mesh::Client`
//! from it and calls `http://reviews:9080/...` through it: no sidecar, no
//! extra hop. Prints where each call went; exits non-zero if anything was
//! routed unexpectedly.
//!
//! ```text
//! cargo run -p mesh-examples --bin proxyless-http
//! ```

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use mesh_route::random::SplitMix;
use tower::ServiceExt;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A backend that answers with its own name (header and body).
async fn backend(name: &'static str) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let body = format!("{name} served {}\n", req.uri().path());
                async move {
                    let mut resp = http::Response::new(Full::new(Bytes::from(body)));
                    resp.headers_mut()
                        .insert("x-backend", http::HeaderValue::from_static(name));
                    Ok::<_, Infallible>(resp)
                }
            });
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn config(v1: SocketAddr, v2: SocketAddr) -> String {
    format!(
        "apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: reviews
spec:
  hosts: [reviews]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{ number: 9080, name: http, protocol: HTTP }}
  endpoints:
  - {{ address: 127.0.0.1, ports: {{ http: {} }}, labels: {{ version: v1 }} }}
  - {{ address: 127.0.0.1, ports: {{ http: {} }}, labels: {{ version: v2 }} }}
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
  - {{ name: v1, labels: {{ version: v1 }} }}
  - {{ name: v2, labels: {{ version: v2 }} }}
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - match: [ {{ headers: {{ x-canary: {{ exact: \"true\" }} }} }} ]
    route: [ {{ destination: {{ host: reviews, subset: v2 }} }} ]
  - route:
    - {{ destination: {{ host: reviews, subset: v1 }}, weight: 90 }}
    - {{ destination: {{ host: reviews, subset: v2 }}, weight: 10 }}
",
        v1.port(),
        v2.port()
    )
}

/// One call: the status and the backend that answered.
async fn call(
    client: &mesh::Client,
    req: Request<Empty<Bytes>>,
) -> Result<(StatusCode, String), Error> {
    let resp = client.clone().oneshot(req).await?;
    let status = resp.status();
    let who = resp
        .headers()
        .get("x-backend")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    resp.into_body().collect().await?;
    Ok((status, who))
}

async fn run() -> Result<(), Error> {
    let v1 = backend("reviews-v1").await?;
    let v2 = backend("reviews-v2").await?;
    println!("backends: reviews-v1 on {v1}, reviews-v2 on {v2}");
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("reviews.yaml");
    std::fs::write(&path, config(v1, v2))?;
    println!("config: {}", path.display());

    let client = mesh::Client::builder()
        .config([dir.path()])
        .random(Arc::new(SplitMix::seeded(2024)))
        .watch(false)
        .build()
        .await?;

    // A few calls, printed one by one.
    for i in 1..=5 {
        let uri = format!("http://reviews:9080/reviews/{i}");
        let (status, who) = call(&client, Request::get(&uri).body(Empty::new())?).await?;
        println!("GET {uri} -> {who} ({status})");
        if status != StatusCode::OK {
            return Err(format!("{uri} answered {status}").into());
        }
    }

    // The split over more calls.
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..200 {
        let (status, who) = call(
            &client,
            Request::get("http://reviews:9080/reviews").body(Empty::new())?,
        )
        .await?;
        if status != StatusCode::OK {
            return Err(format!("split call answered {status}").into());
        }
        *counts.entry(who).or_default() += 1;
    }
    let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("split over 200 calls: {}", summary.join(" "));
    let v1_share = counts.get("reviews-v1").copied().unwrap_or(0);
    if !(150..=195).contains(&v1_share) {
        return Err(format!("expected about 90% to reviews-v1, got {v1_share}/200").into());
    }

    // The canary override, named by a Host header this time.
    let req = Request::get("/reviews/1")
        .header(http::header::HOST, "reviews")
        .header("x-canary", "true")
        .body(Empty::new())?;
    let (status, who) = call(&client, req).await?;
    println!("GET /reviews/1 (Host: reviews, x-canary: true) -> {who} ({status})");
    if who != "reviews-v2" {
        return Err(format!("the canary header went to {who}").into());
    }

    // A host the mesh does not know: a local reply, not an error.
    let req = Request::get("http://nowhere:9080/").body(Empty::new())?;
    let resp = client.clone().oneshot(req).await?;
    let flags = resp
        .headers()
        .get(mesh::core::http::RESPONSE_FLAGS_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    println!(
        "GET http://nowhere:9080/ -> local reply {} ({flags})",
        resp.status()
    );
    println!("proxyless-http: ok");
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("proxyless-http: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
