//! Test kit of the retry tests: a scripted backend that fails on cue and
//! records every try it receives, a forwarding application for chains of
//! services, and a sidecar started for a given namespace.

#![allow(dead_code, clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh::sidecar::{Sidecar, SidecarConfig};
use mesh_route::random::SplitMix;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, watch};

use crate::support::{self, ConfigDir, MeshClient, TestBody};

/// The mesh's retry marker header.
pub const MARKER: &str = "x-mesh-retry-attempt";

/// What the scripted backend does with one request.
#[derive(Clone, Copy, Debug)]
pub enum Action {
    /// Reads the body, answers this status with body `NAME try N` and
    /// header `x-try: N`.
    Status(u16),
    /// Reads the body, then holds the request until
    /// [`Scripted::release`].
    Hang,
}

/// One request the backend received.
#[derive(Clone, Debug)]
pub struct Hit {
    /// Its `x-mesh-retry-attempt`, if any.
    pub marker: Option<String>,
    /// Bytes of body received.
    pub body_bytes: u64,
    /// Its method.
    pub method: String,
}

struct State {
    name: String,
    script: Box<dyn Fn(u64) -> Action + Send + Sync>,
    hits: AtomicU64,
    log: Mutex<Vec<Hit>>,
    gate: watch::Sender<bool>,
}

/// A backend answering request `n` (from 0) with `script(n)`.
pub struct Scripted {
    /// The bound address.
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Scripted {
    /// Starts it on `127.0.0.1:0`.
    pub async fn start(
        name: &str,
        script: impl Fn(u64) -> Action + Send + Sync + 'static,
    ) -> Scripted {
        let state = Arc::new(State {
            name: name.to_owned(),
            script: Box::new(script),
            hits: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
            gate: watch::channel(false).0,
        });
        let shared = Arc::clone(&state);
        let (addr, task) = serve(move |req| {
            let state = Arc::clone(&shared);
            async move { state.handle(req).await }
        })
        .await;
        Scripted { addr, state, task }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// As a ServiceEntry endpoint with label `version: v1`.
    pub fn endpoint(&self) -> (u16, &'static str) {
        (self.port(), "v1")
    }

    /// Requests received so far.
    pub fn hits(&self) -> u64 {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// What it received, in order.
    pub async fn log(&self) -> Vec<Hit> {
        self.state.log.lock().await.clone()
    }

    /// Lets every held request (waiting or future) answer 200.
    pub fn release(&self) {
        self.state.gate.send_replace(true);
    }
}

impl State {
    async fn handle(&self, req: Request<Incoming>) -> Response<TestBody> {
        let n = self.hits.fetch_add(1, Ordering::SeqCst);
        let marker = req
            .headers()
            .get(MARKER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let method = req.method().to_string();
        let body_bytes = support::count_body(req.into_body()).await.unwrap_or(0);
        self.log.lock().await.push(Hit {
            marker,
            body_bytes,
            method,
        });
        let status = match (self.script)(n) {
            Action::Status(s) => s,
            Action::Hang => {
                let mut gate = self.gate.subscribe();
                let _ = gate.wait_for(|open| *open).await;
                200
            }
        };
        let mut resp = Response::new(support::full(format!("{} try {n}", self.name)));
        *resp.status_mut() = StatusCode::from_u16(status).unwrap();
        resp.headers_mut().insert("x-try", HeaderValue::from(n));
        resp.headers_mut()
            .insert("x-backend", HeaderValue::from_str(&self.name).unwrap());
        resp
    }
}

/// Serves `handler` with hyper (HTTP/1.1 and h2c) on `127.0.0.1:0`.
async fn serve<F, Fut>(handler: F) -> (SocketAddr, tokio::task::JoinHandle<()>)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let fut = handler(req);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    (addr, task)
}

/// An application in the middle of a chain: every request it receives
/// becomes a `GET http://{host}{path}` through its own sidecar (`via`),
/// passing the retry marker on as it would pass trace headers; it answers
/// with the downstream status and body.
pub struct Forwarder {
    /// The bound address.
    pub addr: SocketAddr,
    hits: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Forwarder {
    /// Starts it.
    pub async fn start(via: SocketAddr, host: &str) -> Forwarder {
        let client = MeshClient::new(via);
        let hits = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&hits);
        let host = host.to_owned();
        let (addr, task) = serve(move |req: Request<Incoming>| {
            let client = client.clone();
            let host = host.clone();
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                let marker = req
                    .headers()
                    .get(MARKER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let path = req.uri().path().to_owned();
                let mut headers = Vec::new();
                if let Some(m) = &marker {
                    headers.push((MARKER, m.as_str()));
                }
                let reply = client.get_with(&host, &path, &headers).await;
                let mut resp = Response::new(support::full(reply.body));
                *resp.status_mut() = reply.status;
                resp
            }
        })
        .await;
        Forwarder { addr, hits, task }
    }

    /// Requests received so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

/// Starts a sidecar on the folder for a workload in `namespace`, on
/// `127.0.0.1:0`, randomness seeded with `seed`, not watching.
pub async fn start_sidecar_in(dir: &ConfigDir, namespace: &str, seed: u64) -> Sidecar {
    let mut config = SidecarConfig::new(vec![dir.path().to_path_buf()]);
    config.workload.namespace = namespace.to_owned();
    config.outbound = SocketAddr::from(([127, 0, 0, 1], 0));
    config.inbound = SocketAddr::from(([127, 0, 0, 1], 0));
    config.admin = SocketAddr::from(([127, 0, 0, 1], 0));
    config.random = Arc::new(SplitMix::seeded(seed));
    config.watch = false;
    config.drain_timeout = support::DEADLINE;
    Sidecar::start(config).await.unwrap()
}

/// A ServiceEntry for `host` in `namespace` (port 80, HTTP) with loopback
/// endpoints on these ports.
pub fn service_entry_in(name: &str, namespace: &str, host: &str, ports: &[u16]) -> String {
    let endpoints: Vec<(u16, &str)> = ports.iter().map(|p| (*p, "v1")).collect();
    support::service_entry(name, host, 80, "HTTP", &endpoints).replacen(
        &format!("  name: {name}\n"),
        &format!("  name: {name}\n  namespace: {namespace}\n"),
        1,
    )
}

/// Collects a body, for assertions on exact bytes.
pub async fn body_bytes(resp: Response<Incoming>) -> (StatusCode, http::HeaderMap, Bytes) {
    let (parts, body) = resp.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}
