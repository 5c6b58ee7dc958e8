//! `mesh sidecar` as a real process: it announces one line per listener
//! when ready, drains on SIGTERM (a request in flight completes, new
//! connections are refused, the process exits 0), and refuses to start, binding
//! nothing, on an invalid configuration.
//!
//! The backend is a hyper server inside the test process on 127.0.0.1:0;
//! every wait is bounded by a deadline.

#![allow(clippy::unwrap_used)]

mod process;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use process::{DEADLINE, Mesh};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

// ---------------------------------------------------------------- process

// ---------------------------------------------------------------- backend

/// A backend that holds every request until [`HeldBackend::release`], then
/// answers 200 `released by slow`.
struct HeldBackend {
    addr: SocketAddr,
    arrivals: Arc<Notify>,
    gate: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HeldBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HeldBackend {
    async fn start() -> HeldBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let arrivals = Arc::new(Notify::new());
        let (gate, _) = watch::channel(false);
        let (a, g) = (Arc::clone(&arrivals), gate.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (arrivals, gate) = (Arc::clone(&a), g.clone());
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (arrivals, mut open) = (Arc::clone(&arrivals), gate.subscribe());
                    async move {
                        let _ = req.into_body().collect().await;
                        arrivals.notify_one();
                        let _ = open.wait_for(|open| *open).await;
                        let resp = Response::builder()
                            .header("x-backend", "slow")
                            .body(Full::new(Bytes::from_static(b"released by slow")))
                            .unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        HeldBackend {
            addr,
            arrivals,
            gate,
            task,
        }
    }

    /// Resolves once a request has arrived (the permit is kept if it came
    /// before this was called).
    async fn arrived(&self) {
        tokio::time::timeout(DEADLINE, self.arrivals.notified())
            .await
            .expect("the request never reached the backend");
    }

    /// Lets every held (and future) request answer.
    fn release(&self) {
        self.gate.send_replace(true);
    }
}

/// A STATIC ServiceEntry for host `slow`, port 80, on the backend.
fn slow_service_entry(backend: SocketAddr) -> String {
    format!(
        "apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: slow
spec:
  hosts: [slow]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{ number: 80, name: http, protocol: HTTP }}
  endpoints:
  - {{ address: 127.0.0.1, ports: {{ http: {} }} }}
",
        backend.port()
    )
}

/// A collected response: status, `Connection` header, body.
type Answer = (StatusCode, Option<String>, Bytes);

/// One HTTP/1.1 GET on its own connection to `addr`, Host `host`.
async fn get_on_new_connection(
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> Result<Answer, hyper::Error> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header(http::header::HOST, host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let connection = resp
        .headers()
        .get(http::header::CONNECTION)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, connection, body))
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_request_in_flight_refuses_new_connections_and_exits_0() {
    let backend = HeldBackend::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("slow.yaml"),
        slow_service_entry(backend.addr),
    )
    .unwrap();
    let mut mesh = Mesh::spawn(&[
        "sidecar",
        "--config",
        path_str(dir.path()),
        "--outbound",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--drain-timeout",
        "10",
    ]);
    let listeners = mesh.listening().await;
    assert_eq!(
        listeners.keys().collect::<Vec<_>>(),
        ["admin", "outbound"],
        "exactly the outbound and admin listeners"
    );
    let (outbound, admin) = (listeners["outbound"], listeners["admin"]);
    assert_ne!(outbound, admin);

    // Admin answers once the listeners are up.
    let (status, _, body) = get_on_new_connection(admin, "admin", "/ready")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body:?}");

    // A request through the outbound listener, held by the backend.
    let in_flight = tokio::spawn(get_on_new_connection(outbound, "slow", "/held"));
    backend.arrived().await;

    mesh.sigterm();
    // The listener closes promptly: new connections are refused. (A
    // connect racing the close may still succeed, or be reset when the
    // listener goes away with it in the backlog; keep polling.)
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match TcpStream::connect(outbound).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            Err(_) | Ok(_) => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the outbound listener still accepts after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The drain waits for the held request: neither it nor the process
    // has finished.
    if in_flight.is_finished() || mesh.exited().is_some() {
        let early = in_flight.await.unwrap();
        let status = mesh.wait_exit().await;
        panic!(
            "the held request ended before the backend answered ({early:?}); \
             the sidecar exited {status}; stderr:\n{}",
            mesh.stderr()
        );
    }

    backend.release();
    let answer = tokio::time::timeout(DEADLINE, in_flight)
        .await
        .expect("the in-flight request did not finish")
        .unwrap();
    let (status, connection, body) = match answer {
        Ok(answer) => answer,
        Err(e) => {
            let status = mesh.wait_exit().await;
            panic!(
                "the held request failed ({e}); the sidecar exited {status}; stderr:\n{}",
                mesh.stderr()
            );
        }
    };
    assert_eq!(status, StatusCode::OK, "{body:?}");
    assert_eq!(body, "released by slow");
    // HTTP/1 drains by closing the connection after the response.
    assert_eq!(connection.as_deref(), Some("close"));

    let status = mesh.wait_exit().await;
    let stderr = mesh.stderr();
    assert_eq!(status.code(), Some(0), "exit {status}; stderr:\n{stderr}");
    assert!(stderr.contains("draining"), "{stderr}");
    assert_eq!(mesh.rest_of_stdout().await, Vec::<String>::new());
}

const TYPO: &str = "apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - retries:
      attemps: 3
    route:
    - destination:
        host: reviews
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_configuration_exits_non_zero_without_binding() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("good.yaml"),
        slow_service_entry(([127, 0, 0, 1], 9).into()),
    )
    .unwrap();
    std::fs::write(dir.path().join("bad.yaml"), TYPO).unwrap();
    // The outbound address is taken: had the sidecar tried to bind before
    // checking the configuration, it would report the bind failure instead.
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let mut mesh = Mesh::spawn(&[
        "sidecar",
        "--config",
        path_str(dir.path()),
        "--outbound",
        &taken_addr,
        "--admin",
        "127.0.0.1:0",
    ]);
    let status = mesh.wait_exit().await;
    let stderr = mesh.stderr();
    assert!(!status.success(), "exit {status}; stderr:\n{stderr}");
    assert_eq!(
        mesh.rest_of_stdout().await,
        Vec::<String>::new(),
        "nothing announced as listening"
    );
    assert!(!stderr.contains("cannot listen"), "{stderr}");
    // The diagnostic names the file, line and column of the typo.
    let bad = dir.path().join("bad.yaml");
    let expected = format!("{}:9:7: error: ", bad.display());
    let line = stderr
        .lines()
        .find(|l| l.starts_with(&expected))
        .unwrap_or_else(|| panic!("no `{expected}` diagnostic in:\n{stderr}"));
    assert!(line.contains("VirtualService/default/reviews"), "{line}");
    assert!(line.contains("attemps"), "{line}");
    assert!(!stderr.contains("good.yaml"), "{stderr}");
    drop(taken);
}
