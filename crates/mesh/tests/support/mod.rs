//! Shared kit of the sidecar's end-to-end tests: backends that report who
//! they are, config folders built from the seed plus generated
//! ServiceEntries, the sidecar started in-process on `127.0.0.1:0`, and a
//! client that sends to its outbound listener with any Host.
//!
//! Everything runs on loopback inside the test process; no fixed ports, no
//! sleeps as synchronisation (only bounded polls with a deadline).

// Each test file uses a different part of the kit; test code may unwrap.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh::sidecar::{Sidecar, SidecarConfig};
use mesh_route::random::SplitMix;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, watch};

/// Error type of the bodies built here.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Body of the requests the client sends and the responses backends send.
pub type TestBody = BoxBody<Bytes, BoxError>;

/// How long any bounded wait in these tests may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- bodies

static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// A body of `n` zero bytes produced lazily in 64 KiB slices of one static
/// buffer: sending it allocates nothing per chunk, so the process's memory
/// shows only what the proxy in between buffers.
pub struct Zeros {
    remaining: u64,
}

impl Zeros {
    /// `n` bytes.
    pub fn new(n: u64) -> Self {
        Zeros { remaining: n }
    }
}

impl HttpBody for Zeros {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(ZEROS.len() as u64) as usize;
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&ZEROS[..n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// A body fed from a channel, of unknown length (so HTTP/1 sends it
/// chunked); it ends when the sender is dropped.
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl ChannelBody {
    /// The body and the sender that feeds it.
    pub fn new() -> (mpsc::Sender<Bytes>, ChannelBody) {
        let (tx, rx) = mpsc::channel(4);
        (tx, ChannelBody { rx })
    }
}

impl HttpBody for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

/// An empty request body.
pub fn empty() -> TestBody {
    Empty::new().map_err(|e: Infallible| match e {}).boxed()
}

/// A request body with these bytes.
pub fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into())
        .map_err(|e: Infallible| match e {})
        .boxed()
}

/// Reads a body to its end, counting bytes without keeping them.
pub async fn count_body<B>(mut body: B) -> Result<u64, B::Error>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            total += data.len() as u64;
        }
    }
    Ok(total)
}

// ---------------------------------------------------------------- backends

/// A test backend: a hyper server (HTTP/1.1 and h2c) on `127.0.0.1:0` that
/// answers with its name and subset.
///
/// Paths:
/// - any path: 200, headers `x-backend` and `x-subset`, a JSON body with
///   name, subset, method, uri, version and the request headers received;
/// - `/echo`: streams the request body back;
/// - `/count`: reads the request body and answers `{"bytes": N}`;
/// - `/stream/N`: answers a body of N bytes, streamed;
/// - `/slow`: reports its arrival ([`Backend::slow_arrived`]) and answers
///   only once [`Backend::release`] was called;
/// - any request with `Upgrade`: 101, then the backend writes
///   `hello from NAME` and echoes every byte it reads.
pub struct Backend {
    /// Its name (`x-backend`).
    pub name: String,
    /// Its subset label value (`x-subset`, and `version` in ServiceEntries).
    pub subset: String,
    /// The bound address.
    pub addr: SocketAddr,
    state: Arc<BackendState>,
    task: tokio::task::JoinHandle<()>,
}

struct BackendState {
    name: String,
    subset: String,
    hits: AtomicU64,
    gate: watch::Sender<bool>,
    arrivals: Notify,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    /// Starts a backend called `name` in subset `subset`.
    pub async fn start(name: &str, subset: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (gate, _) = watch::channel(false);
        let state = Arc::new(BackendState {
            name: name.to_owned(),
            subset: subset.to_owned(),
            hits: AtomicU64::new(0),
            gate,
            arrivals: Notify::new(),
        });
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(state.handle(req).await) }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Backend {
            name: name.to_owned(),
            subset: subset.to_owned(),
            addr,
            state,
            task,
        }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// As a ServiceEntry endpoint: its port and its `version` label.
    pub fn endpoint(&self) -> (u16, &str) {
        (self.port(), &self.subset)
    }

    /// Requests received so far.
    pub fn hits(&self) -> u64 {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// Lets every `/slow` request (waiting or future) answer.
    pub fn release(&self) {
        self.state.gate.send_replace(true);
    }

    /// Resolves once a `/slow` request has arrived (a permit is kept if it
    /// arrived before this was called).
    pub async fn slow_arrived(&self) {
        self.state.arrivals.notified().await;
    }
}

impl BackendState {
    fn reply(&self, status: StatusCode, body: TestBody) -> Response<TestBody> {
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert("x-backend", HeaderValue::from_str(&self.name).unwrap());
        h.insert("x-subset", HeaderValue::from_str(&self.subset).unwrap());
        resp
    }

    fn describe(&self, req: &Request<Incoming>) -> serde_json::Value {
        let mut headers = BTreeMap::<String, String>::new();
        for (name, value) in req.headers() {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            headers
                .entry(name.as_str().to_owned())
                .and_modify(|v| {
                    v.push_str(", ");
                    v.push_str(&value);
                })
                .or_insert(value);
        }
        serde_json::json!({
            "name": self.name,
            "subset": self.subset,
            "method": req.method().as_str(),
            "uri": req.uri().to_string(),
            "version": format!("{:?}", req.version()),
            "headers": headers,
        })
    }

    async fn handle(self: Arc<Self>, mut req: Request<Incoming>) -> Response<TestBody> {
        self.hits.fetch_add(1, Ordering::SeqCst);
        if req.headers().contains_key(http::header::UPGRADE) {
            let upgrade = hyper::upgrade::on(&mut req);
            let greeting = format!("hello from {}", self.name);
            tokio::spawn(async move {
                let Ok(upgraded) = upgrade.await else { return };
                let mut io = TokioIo::new(upgraded);
                use tokio::io::AsyncWriteExt;
                if io.write_all(greeting.as_bytes()).await.is_err() {
                    return;
                }
                let mut buf = [0u8; 4096];
                loop {
                    match io.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if io.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
            let mut resp = self.reply(StatusCode::SWITCHING_PROTOCOLS, empty());
            let h = resp.headers_mut();
            h.insert(
                http::header::CONNECTION,
                HeaderValue::from_static("upgrade"),
            );
            h.insert(
                http::header::UPGRADE,
                req.headers()[http::header::UPGRADE].clone(),
            );
            return resp;
        }
        let path = req.uri().path().to_owned();
        if path == "/echo" {
            let body = req.into_body().map_err(BoxError::from).boxed();
            return self.reply(StatusCode::OK, body);
        }
        if path == "/count" {
            let described = self.describe(&req);
            let bytes = match count_body(req.into_body()).await {
                Ok(n) => n,
                Err(e) => return self.reply(StatusCode::BAD_REQUEST, full(e.to_string())),
            };
            let json = serde_json::json!({ "bytes": bytes, "request": described });
            return self.reply(StatusCode::OK, full(json.to_string()));
        }
        if let Some(n) = path.strip_prefix("/stream/") {
            let n: u64 = n.parse().unwrap_or(0);
            return self.reply(StatusCode::OK, Zeros::new(n).boxed());
        }
        let described = self.describe(&req);
        if path == "/slow" {
            self.arrivals.notify_one();
            let mut gate = self.gate.subscribe();
            let _ = gate.wait_for(|open| *open).await;
        }
        // Drain the request body so keep-alive connections stay usable.
        let _ = count_body(req.into_body()).await;
        let mut resp = self.reply(StatusCode::OK, full(described.to_string()));
        if path == "/hop" {
            // A hop-by-hop header of the response, named by Connection.
            let h = resp.headers_mut();
            h.insert("x-resp-secret", HeaderValue::from_static("1"));
            h.insert(
                http::header::CONNECTION,
                HeaderValue::from_static("x-resp-secret"),
            );
        }
        resp
    }
}

// ---------------------------------------------------------------- config

/// The seed fixtures folder.
pub fn seed_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/seed")
}

/// The text of one seed fixture.
pub fn seed_text(name: &str) -> String {
    std::fs::read_to_string(seed_dir().join(name)).unwrap()
}

/// A configuration folder in a tempdir. Writes are atomic (written next
/// door, renamed in) so the sidecar's watcher never reads half a file.
pub struct ConfigDir {
    dir: tempfile::TempDir,
    scratch: tempfile::TempDir,
}

impl ConfigDir {
    /// An empty folder.
    pub fn new() -> ConfigDir {
        ConfigDir {
            dir: tempfile::tempdir().unwrap(),
            scratch: tempfile::tempdir().unwrap(),
        }
    }

    /// The folder the sidecar loads.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Copies seed fixtures by file name.
    pub fn seed(&self, names: &[&str]) -> &Self {
        for name in names {
            self.write(name, &seed_text(name));
        }
        self
    }

    /// Writes (or replaces) `name` with `contents`, atomically.
    pub fn write(&self, name: &str, contents: &str) -> &Self {
        let tmp = self.scratch.path().join(name);
        std::fs::write(&tmp, contents).unwrap();
        std::fs::rename(&tmp, self.dir.path().join(name)).unwrap();
        self
    }
}

/// A STATIC ServiceEntry `name` for `host` with one service port (`number`,
/// named `http`, with `protocol`) and loopback endpoints given as (backend
/// port, `version` label).
pub fn service_entry(
    name: &str,
    host: &str,
    number: u16,
    protocol: &str,
    endpoints: &[(u16, &str)],
) -> String {
    let mut out = format!(
        "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata:\n  name: {name}\n\
         spec:\n  hosts: [{host}]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports:\n\
         \x20 - {{ number: {number}, name: http, protocol: {protocol} }}\n"
    );
    if endpoints.is_empty() {
        out.push_str("  endpoints: []\n");
    } else {
        out.push_str("  endpoints:\n");
        for (port, version) in endpoints {
            out.push_str(&format!(
                "  - {{ address: 127.0.0.1, ports: {{ http: {port} }}, labels: {{ version: {version} }} }}\n"
            ));
        }
    }
    out
}

/// A port on 127.0.0.1 where nothing listens: bound, then closed.
pub async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    port
}

// ---------------------------------------------------------------- sidecar

/// Starts the sidecar on the folder: outbound and admin on `127.0.0.1:0`,
/// routing randomness seeded with `seed`, watching the folder if `watch`.
pub async fn start_sidecar(dir: &ConfigDir, seed: u64, watch: bool) -> Sidecar {
    let mut config = SidecarConfig::new(vec![dir.path().to_path_buf()]);
    config.outbound = SocketAddr::from(([127, 0, 0, 1], 0));
    config.inbound = SocketAddr::from(([127, 0, 0, 1], 0));
    config.admin = SocketAddr::from(([127, 0, 0, 1], 0));
    config.random = Arc::new(SplitMix::seeded(seed));
    config.watch = watch;
    config.drain_timeout = DEADLINE;
    Sidecar::start(config).await.unwrap()
}

/// Polls `check` until it holds, failing the test after [`DEADLINE`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The admin `/config_dump` as JSON.
pub async fn config_dump(sidecar: &Sidecar) -> serde_json::Value {
    let reply = MeshClient::new(sidecar.admin)
        .get("admin", "/config_dump")
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    serde_json::from_slice(&reply.body).unwrap()
}

// ---------------------------------------------------------------- client

/// A connector that dials one address whatever the URI says, so requests
/// can name any host (`http://reviews/`) and still reach the sidecar.
#[derive(Clone)]
pub struct Dial(pub SocketAddr);

impl tower::Service<Uri> for Dial {
    type Response = TokioIo<TcpStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<TokioIo<TcpStream>>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let addr = self.0;
        Box::pin(async move {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// A collected response.
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Protocol version of the response.
    pub version: Version,
    /// Headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Reply {
    /// The backend that answered (`x-backend`), or "" for a local reply.
    pub fn backend(&self) -> &str {
        self.headers
            .get("x-backend")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The answering backend's subset (`x-subset`).
    pub fn subset(&self) -> &str {
        self.headers
            .get("x-subset")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The mesh's response flags header, or "".
    pub fn flags(&self) -> &str {
        self.headers
            .get("x-mesh-response-flags")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The body as JSON (what a backend received).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// A request header the backend received, from the JSON body.
    pub fn received_header(&self, name: &str) -> Option<String> {
        self.json()["headers"][name].as_str().map(str::to_owned)
    }
}

/// A client of the sidecar's outbound listener: pooled keep-alive
/// HTTP/1.1, and HTTP/2 with prior knowledge, every connection to `addr`.
#[derive(Clone)]
pub struct MeshClient {
    h1: Client<Dial, TestBody>,
    h2: Client<Dial, TestBody>,
}

impl MeshClient {
    /// A client whose connections all go to `addr`.
    pub fn new(addr: SocketAddr) -> MeshClient {
        let h1 = Client::builder(TokioExecutor::new()).build(Dial(addr));
        let h2 = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build(Dial(addr));
        MeshClient { h1, h2 }
    }

    /// `GET http://{host}{path}` over HTTP/1.1 (Host is `host`).
    pub async fn get(&self, host: &str, path: &str) -> Reply {
        self.get_with(host, path, &[]).await
    }

    /// The same with extra request headers.
    pub async fn get_with(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        let req = request("GET", host, path, headers, empty());
        collect(self.send(req).await.unwrap()).await
    }

    /// Sends over HTTP/1.1.
    pub async fn send(
        &self,
        req: Request<TestBody>,
    ) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
        self.h1.request(req).await
    }

    /// Sends over HTTP/2 with prior knowledge (`:authority` from the URI).
    pub async fn send_h2(
        &self,
        mut req: Request<TestBody>,
    ) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
        *req.version_mut() = Version::HTTP_2;
        self.h2.request(req).await
    }
}

/// A request to `http://{host}{path}` with headers and a body.
pub fn request(
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: TestBody,
) -> Request<TestBody> {
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("http://{host}{path}"));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(body).unwrap()
}

/// Collects a response's body.
pub async fn collect(resp: Response<Incoming>) -> Reply {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body,
    }
}

/// Sends `n` GETs from `concurrency` tasks sharing one keep-alive pool and
/// returns every reply's `x-backend` (or `status:flags` for failures) in
/// no particular order.
pub async fn fan_out(
    client: &MeshClient,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    n: usize,
    concurrency: usize,
) -> Vec<String> {
    let headers: Arc<Vec<(String, String)>> = Arc::new(
        headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let client = client.clone();
        let headers = Arc::clone(&headers);
        let (host, path) = (host.to_owned(), path.to_owned());
        let share = n / concurrency + usize::from(worker < n % concurrency);
        tasks.spawn(async move {
            let pairs: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let mut seen = Vec::with_capacity(share);
            for _ in 0..share {
                let reply = client.get_with(&host, &path, &pairs).await;
                if reply.status == StatusCode::OK {
                    seen.push(reply.backend().to_owned());
                } else {
                    seen.push(format!("{}:{}", reply.status.as_u16(), reply.flags()));
                }
            }
            seen
        });
    }
    let mut all = Vec::with_capacity(n);
    while let Some(part) = tasks.join_next().await {
        all.extend(part.unwrap());
    }
    all
}

/// How many entries of `seen` equal `name`.
pub fn count(seen: &[String], name: &str) -> usize {
    seen.iter().filter(|s| *s == name).count()
}

/// Asserts `observed` successes out of `n` are within 5 sigma of `p`.
pub fn assert_binomial(observed: usize, n: usize, p: f64, what: &str) {
    let mean = n as f64 * p;
    let sigma = (n as f64 * p * (1.0 - p)).sqrt();
    let low = mean - 5.0 * sigma;
    let high = mean + 5.0 * sigma;
    assert!(
        (low..=high).contains(&(observed as f64)),
        "{what}: {observed} of {n}, expected {mean:.0} +- {:.0} (5 sigma)",
        5.0 * sigma
    );
}

// ---------------------------------------------------------------- raw TCP

/// Reads from `stream` until the end of an HTTP head (`\r\n\r\n`); returns
/// the head as text and any bytes read past it.
pub async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> (String, Vec<u8>) {
    read_head_after(stream, Vec::new()).await
}

/// [`read_head`] when `buf` already holds the first bytes read.
pub async fn read_head_after<S: AsyncRead + Unpin>(
    stream: &mut S,
    mut buf: Vec<u8>,
) -> (String, Vec<u8>) {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return (String::from_utf8_lossy(&buf).into_owned(), rest);
        }
        let n = tokio::time::timeout(DEADLINE, stream.read(&mut chunk))
            .await
            .expect("timed out reading a response head")
            .unwrap();
        assert!(n > 0, "connection closed before a full head: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The status code of a response head.
pub fn head_status(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a response head: {head:?}"))
}

/// A header's value in a response head (case-insensitive name).
pub fn head_header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Reads exactly `n` bytes (after `already`), with the deadline.
pub async fn read_exact_n<S: AsyncRead + Unpin>(
    stream: &mut S,
    mut already: Vec<u8>,
    n: usize,
) -> Vec<u8> {
    let mut chunk = [0u8; 4096];
    while already.len() < n {
        let got = tokio::time::timeout(DEADLINE, stream.read(&mut chunk))
            .await
            .expect("timed out reading")
            .unwrap();
        assert!(got > 0, "connection closed after {already:?}");
        already.extend_from_slice(&chunk[..got]);
    }
    already
}

/// Reads until the peer closes (the requests above send `Connection:
/// close`), with the deadline.
pub async fn read_to_end(stream: &mut TcpStream, mut already: Vec<u8>) -> Vec<u8> {
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut already))
        .await
        .expect("timed out reading a body")
        .unwrap();
    already
}

/// The body of a response with this head: de-chunked when chunked.
pub fn dechunk(head: &str, body: &[u8]) -> Vec<u8> {
    let chunked =
        head_header(head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if !chunked {
        return body.to_vec();
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
        let size_text = std::str::from_utf8(&rest[..line_end]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        rest = &rest[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// The process's resident set size in bytes (`VmRSS` of /proc/self/status).
pub fn vm_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

// ---------------------------------------------------------------- L4 (egress_tcp, egress_dns, tls_passthrough)

/// Starts the sidecar like [`start_sidecar`] (no watching), after `tweak`
/// adjusted its config (`outbound_tcp` listeners, DNS settings, ...).
pub async fn start_sidecar_with(
    dir: &ConfigDir,
    seed: u64,
    tweak: impl FnOnce(&mut SidecarConfig),
) -> Sidecar {
    let mut config = SidecarConfig::new(vec![dir.path().to_path_buf()]);
    config.outbound = SocketAddr::from(([127, 0, 0, 1], 0));
    config.inbound = SocketAddr::from(([127, 0, 0, 1], 0));
    config.admin = SocketAddr::from(([127, 0, 0, 1], 0));
    config.random = Arc::new(SplitMix::seeded(seed));
    config.watch = false;
    config.drain_timeout = DEADLINE;
    tweak(&mut config);
    Sidecar::start(config).await.unwrap()
}

/// A line-protocol TCP server on `127.0.0.1:0`: answers each line `L` with
/// `NAME: L`, and when the client half-closes, sends `NAME: bye after N
/// lines` and closes, so a test sees that the proxy carried the half-close
/// and the server's last bytes.
pub struct LineEcho {
    /// Its name (the prefix of every answer).
    pub name: String,
    /// The bound address.
    pub addr: SocketAddr,
    connections: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LineEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LineEcho {
    /// Starts one.
    pub async fn start(name: &str) -> LineEcho {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&connections);
        let prefix = name.to_owned();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let prefix = prefix.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    let mut n = 0u64;
                    while let Ok(Some(line)) = lines.next_line().await {
                        n += 1;
                        let reply = format!("{prefix}: {line}\n");
                        if write.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    let bye = format!("{prefix}: bye after {n} lines\n");
                    let _ = write.write_all(bye.as_bytes()).await;
                    let _ = write.shutdown().await;
                });
            }
        });
        LineEcho {
            name: name.to_owned(),
            addr,
            connections,
            task,
        }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Writes `line` and a newline, then reads one line back (without its
/// newline), with the deadline.
pub async fn exchange_line<S>(stream: &mut S, line: &str) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    stream
        .write_all(format!("{line}\n").as_bytes())
        .await
        .unwrap();
    read_line(stream).await
}

/// Reads one line (byte by byte, so nothing past it is consumed), without
/// its newline; "" at end of stream.
pub async fn read_line<S: AsyncRead + Unpin>(stream: &mut S) -> String {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let n = tokio::time::timeout(DEADLINE, stream.read(&mut byte))
            .await
            .expect("timed out reading a line")
            .unwrap();
        if n == 0 || byte[0] == b'\n' {
            return String::from_utf8(out).unwrap();
        }
        out.push(byte[0]);
    }
}

/// Sends `CONNECT authority` on a new connection to `proxy` and returns the
/// status and, on 200, the tunnel (with any bytes read past the head).
pub async fn connect_tunnel(proxy: SocketAddr, authority: &str) -> (u16, String, TcpStream) {
    use tokio::io::AsyncWriteExt;
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let head = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let (head, rest) = read_head(&mut stream).await;
    let status = head_status(&head);
    assert!(
        status != 200 || rest.is_empty(),
        "bytes after the CONNECT answer: {rest:?}"
    );
    (status, head, stream)
}
