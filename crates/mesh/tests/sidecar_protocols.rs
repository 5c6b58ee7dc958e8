//! HTTP on the wire through the sidecar: absolute-form (`HTTP_PROXY`)
//! requests, every spelling of a host, h2c callers to HTTP/1 backends,
//! hop-by-hop headers, chunked bodies, `Expect: 100-continue`, 100 MiB
//! streamed each way with bounded memory, and an upgraded connection.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{StatusCode, Version};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// One `reviews` backend behind the sidecar, no VirtualService (default
/// route to every endpoint), service port 9080 declared HTTP.
async fn setup() -> (Backend, ConfigDir, mesh::sidecar::Sidecar) {
    let backend = Backend::start("reviews-v1", "v1").await;
    let dir = ConfigDir::new();
    dir.write(
        "reviews.yaml",
        &service_entry("reviews", "reviews", 9080, "HTTP", &[backend.endpoint()]),
    );
    let sidecar = start_sidecar(&dir, 1, false).await;
    (backend, dir, sidecar)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_requests_are_routed_like_http_proxy() {
    let (backend, _dir, sidecar) = setup().await;
    let stream = TcpStream::connect(sidecar.outbound).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    // What curl sends through HTTP_PROXY, then the same with a Host that
    // disagrees: the absolute URI wins (RFC 9112 3.2.2).
    for host in ["reviews:9080", "elsewhere.invalid"] {
        let req = http::Request::get("http://reviews:9080/x?q=1")
            .header("host", host)
            .body(empty())
            .unwrap();
        send.ready().await.unwrap();
        let reply = collect(send.send_request(req).await.unwrap()).await;
        assert_eq!(reply.status, StatusCode::OK, "Host {host}: {reply:?}");
        assert_eq!(reply.backend(), "reviews-v1");
        // The backend gets origin-form and the host it was asked for.
        let json = reply.json();
        assert_eq!(json["uri"], "/x?q=1");
        assert_eq!(json["headers"]["host"], "reviews:9080");
    }
    assert_eq!(backend.hits(), 2);
    assert!(sidecar.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_the_host_routes_the_same() {
    let (backend, _dir, sidecar) = setup().await;
    let client = MeshClient::new(sidecar.outbound);
    let spellings = [
        "reviews",
        "reviews:9080",
        "reviews.default",
        "reviews.default:9080",
        "reviews.default.svc",
        "reviews.default.svc.cluster.local",
        "reviews.default.svc.cluster.local:9080",
    ];
    for host in spellings {
        let reply = client.get(host, "/").await;
        assert_eq!(reply.status, StatusCode::OK, "{host}: {reply:?}");
        assert_eq!(reply.backend(), "reviews-v1", "{host}");
    }
    // Another namespace's reviews is another service, unknown here.
    let reply = client.get("reviews.other", "/").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.flags(), "UH");
    assert_eq!(backend.hits(), spellings.len() as u64);
    assert!(sidecar.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_caller_reaches_an_http1_backend() {
    let (backend, _dir, sidecar) = setup().await;
    let client = MeshClient::new(sidecar.outbound);
    for i in 0..5 {
        let req = request("POST", "reviews", &format!("/h2/{i}"), &[], full("ping"));
        let resp = client.send_h2(req).await.unwrap();
        assert_eq!(resp.version(), Version::HTTP_2, "caller side stays h2");
        let reply = collect(resp).await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        assert_eq!(reply.backend(), "reviews-v1");
        let json = reply.json();
        // The port is declared HTTP: the sidecar speaks HTTP/1.1 upstream.
        assert_eq!(json["version"], "HTTP/1.1");
        assert_eq!(json["method"], "POST");
        assert_eq!(json["uri"], format!("/h2/{i}"));
    }
    // A streamed body over h2 arrives whole at the HTTP/1 backend.
    let resp = client
        .send_h2(request(
            "POST",
            "reviews",
            "/echo",
            &[],
            full("hello over h2"),
        ))
        .await
        .unwrap();
    let reply = collect(resp).await;
    assert_eq!(reply.body, Bytes::from_static(b"hello over h2"));
    assert_eq!(backend.hits(), 6);
    assert!(sidecar.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_stop_at_the_sidecar() {
    let (_backend, _dir, sidecar) = setup().await;
    let client = MeshClient::new(sidecar.outbound);
    let req = request(
        "GET",
        "reviews",
        "/hop",
        &[
            ("connection", "x-secret"),
            ("x-secret", "do-not-forward"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic c2VjcmV0"),
            ("x-end-to-end", "forward-me"),
            ("authorization", "Bearer end-to-end"),
        ],
        empty(),
    );
    let reply = collect(client.send(req).await.unwrap()).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let headers = &reply.json()["headers"];
    for gone in ["x-secret", "keep-alive", "proxy-authorization"] {
        assert!(headers.get(gone).is_none(), "{gone} reached the backend");
    }
    assert!(
        headers
            .get("connection")
            .and_then(|v| v.as_str())
            .is_none_or(|v| !v.contains("x-secret")),
        "the caller's Connection header reached the backend: {headers}"
    );
    assert_eq!(headers["x-end-to-end"], "forward-me");
    assert_eq!(headers["authorization"], "Bearer end-to-end");
    // The backend's response named x-resp-secret in Connection: the caller
    // does not see it.
    assert!(reply.headers.get("x-resp-secret").is_none());
    assert_eq!(reply.backend(), "reviews-v1");
    assert!(sidecar.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_request_body_is_echoed() {
    let (_backend, _dir, sidecar) = setup().await;
    let client = MeshClient::new(sidecar.outbound);
    let (tx, body) = ChannelBody::new();
    let req = request("POST", "reviews", "/echo", &[], body.boxed());
    let sending = tokio::spawn(async move {
        for part in ["first chunk, ", "second chunk, ", "last chunk"] {
            tx.send(Bytes::from(part)).await.unwrap();
        }
    });
    let resp = client.send(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let reply = collect(resp).await;
    sending.await.unwrap();
    assert_eq!(
        reply.body,
        Bytes::from_static(b"first chunk, second chunk, last chunk")
    );

    // The same on the wire by hand: chunk sizes in hex, then the echo.
    let mut stream = TcpStream::connect(sidecar.outbound).await.unwrap();
    stream
        .write_all(
            b"POST /count HTTP/1.1\r\nHost: reviews\r\nTransfer-Encoding: chunked\r\n\
              Connection: close\r\n\r\n5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n",
        )
        .await
        .unwrap();
    let (head, rest) = read_head(&mut stream).await;
    assert_eq!(head_status(&head), 200, "{head}");
    let body = read_to_end(&mut stream, rest).await;
    let json: serde_json::Value = serde_json::from_slice(&dechunk(&head, &body)).unwrap();
    assert_eq!(json["bytes"], 11);
    assert!(sidecar.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_gets_through() {
    let (backend, _dir, sidecar) = setup().await;
    let mut stream = TcpStream::connect(sidecar.outbound).await.unwrap();
    stream
        .write_all(
            b"POST /echo HTTP/1.1\r\nHost: reviews\r\nContent-Length: 11\r\n\
              Expect: 100-continue\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    // The caller holds the body back until the interim response arrives.
    let (head, rest) = read_head(&mut stream).await;
    assert_eq!(head_status(&head), 100, "{head}");
    stream.write_all(b"hello world").await.unwrap();
    // The echo backend may answer its head before the body is in.
    let (head, rest) = read_head_after(&mut stream, rest).await;
    assert_eq!(head_status(&head), 200, "{head}");
    assert_eq!(head_header(&head, "x-backend"), Some("reviews-v1"));
    let body = read_to_end(&mut stream, rest).await;
    assert_eq!(dechunk(&head, &body), b"hello world");
    assert_eq!(backend.hits(), 1);
    assert!(sidecar.shutdown().await);
}

/// 100 MiB each way. The sidecar runs in this process, so its memory is
/// this process's: the peak VmRSS sampled during both transfers may exceed
/// the starting value by at most 64 MiB. A proxy that buffered either body
/// would need at least 100 MiB more; a streaming one needs a few buffers
/// per connection (hyper's read/write buffers and channel slots, well under
/// 1 MiB), and the rest of the bound is allocator slack and test noise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_mib_each_way_with_bounded_memory() {
    const SIZE: u64 = 100 * 1024 * 1024;
    const BOUND: u64 = 64 * 1024 * 1024;
    let (_backend, _dir, sidecar) = setup().await;
    let client = MeshClient::new(sidecar.outbound);
    // Warm up the connection pool and allocator before the baseline.
    assert_eq!(client.get("reviews", "/").await.status, StatusCode::OK);
    let baseline = vm_rss();
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampler = {
        let peak = Arc::clone(&peak);
        tokio::spawn(async move {
            loop {
                peak.fetch_max(vm_rss(), Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
    };

    let req = request("POST", "reviews", "/count", &[], Zeros::new(SIZE).boxed());
    let reply = collect(client.send(req).await.unwrap()).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.json()["bytes"], SIZE, "request bytes the backend got");

    let resp = client
        .send(request(
            "GET",
            "reviews",
            &format!("/stream/{SIZE}"),
            &[],
            empty(),
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let received = count_body(resp.into_body()).await.unwrap();
    assert_eq!(received, SIZE, "response bytes the caller got");

    sampler.abort();
    let peak = peak.load(Ordering::SeqCst).max(vm_rss());
    let growth = peak.saturating_sub(baseline);
    assert!(
        growth < BOUND,
        "memory grew by {} MiB while streaming 2 x 100 MiB (bound 64 MiB)",
        growth / (1024 * 1024)
    );
    assert!(sidecar.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgraded_connection_relays_bytes_both_ways() {
    let (backend, _dir, sidecar) = setup().await;
    let mut stream = TcpStream::connect(sidecar.outbound).await.unwrap();
    stream
        .write_all(
            b"GET /chat HTTP/1.1\r\nHost: reviews\r\nConnection: Upgrade\r\n\
              Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .unwrap();
    let (head, rest) = read_head(&mut stream).await;
    assert_eq!(head_status(&head), 101, "{head}");
    assert_eq!(head_header(&head, "upgrade"), Some("websocket"));
    assert!(
        head_header(&head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("upgrade")),
        "{head}"
    );
    // The backend speaks first, then echoes what the caller writes.
    let greeting = b"hello from reviews-v1";
    let got = read_exact_n(&mut stream, rest, greeting.len()).await;
    assert_eq!(&got[..], greeting);
    for round in 0..5 {
        let msg = format!("message {round} from the caller");
        stream.write_all(msg.as_bytes()).await.unwrap();
        let echoed = read_exact_n(&mut stream, Vec::new(), msg.len()).await;
        assert_eq!(echoed, msg.as_bytes());
    }
    // A larger write crosses several reads on both legs.
    let big = vec![b'x'; 256 * 1024];
    let (mut rd, mut wr) = stream.split();
    let (_, echoed) = tokio::join!(
        async { wr.write_all(&big).await.unwrap() },
        read_exact_n(&mut rd, Vec::new(), big.len())
    );
    assert_eq!(echoed.len(), big.len());
    assert!(echoed.iter().all(|b| *b == b'x'));
    assert_eq!(backend.hits(), 1);
    drop(stream);
    assert!(sidecar.shutdown().await);
}

/// Over HTTP/2 upstream the sidecar dials the endpoint the balancer chose
/// yet keeps the caller's authority: the backend sees `:authority` as the
/// caller wrote it, not the endpoint's address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_upstream_keeps_the_callers_authority() {
    let backend = Backend::start("reviews-v1", "v1").await;
    let dir = ConfigDir::new();
    dir.write(
        "reviews.yaml",
        &service_entry("reviews", "reviews", 9080, "HTTP2", &[backend.endpoint()]),
    );
    let sidecar = start_sidecar(&dir, 1, false).await;
    let client = MeshClient::new(sidecar.outbound);
    for (i, host) in ["reviews:9080", "reviews"].into_iter().enumerate() {
        // An HTTP/1.1 caller; the port says HTTP2, so the sidecar speaks h2c.
        let reply = client.get(host, &format!("/a/{i}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        let json = reply.json();
        assert_eq!(json["version"], "HTTP/2.0");
        assert_eq!(json["uri"], format!("http://{host}/a/{i}"));
    }
    // Several requests share one multiplexed connection and all succeed.
    let replies = futures_join(&client, 20).await;
    assert!(replies.iter().all(|s| *s == StatusCode::OK), "{replies:?}");
    assert_eq!(backend.hits(), 22);
    assert!(sidecar.shutdown().await);
}

async fn futures_join(client: &MeshClient, n: usize) -> Vec<StatusCode> {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let client = client.clone();
        tasks.spawn(async move { client.get("reviews", &format!("/many/{i}")).await.status });
    }
    let mut out = Vec::new();
    while let Some(s) = tasks.join_next().await {
        out.push(s.expect("request task"));
    }
    out
}
