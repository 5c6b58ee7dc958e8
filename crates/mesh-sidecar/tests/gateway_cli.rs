//! `mesh gateway` as a real process: with the seed's `api-gateway` and
//! `api-vs`, `--listen` overrides and a credentials folder holding a
//! certificate from a test CA, it announces one line per listener, serves
//! HTTPS (`/v2/` to api-v2) and the http->https redirect, and drains on
//! SIGTERM. A missing credential is reported on stderr naming the file,
//! `--gateway-class` / `--gateway` are accepted (an absent named Gateway is
//! logged), and a bad `--listen` value is a usage error.
//!
//! Backends are hyper servers inside the test process on 127.0.0.1:0; every
//! wait is bounded by a deadline.

#![allow(clippy::unwrap_used)]

mod process;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use process::Mesh;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

// ---------------------------------------------------------------- process

// ---------------------------------------------------------------- fixtures

/// A backend answering every request with `x-backend: NAME`.
async fn backend(name: &'static str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let svc = hyper::service::service_fn(move |_req: Request<Incoming>| async move {
                let resp = Response::builder()
                    .header("x-backend", name)
                    .body(Full::new(Bytes::from(name)))
                    .unwrap();
                Ok::<_, Infallible>(resp)
            });
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, task)
}

fn service_entry(host: &str, backend: SocketAddr) -> String {
    format!(
        "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata:\n  name: {host}\n\
         spec:\n  hosts: [{host}]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports:\n\
         \x20 - {{ number: 8080, name: http, protocol: HTTP }}\n  endpoints:\n\
         \x20 - {{ address: 127.0.0.1, ports: {{ http: {} }} }}\n",
        backend.port()
    )
}

fn seed(name: &str) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/seed");
    std::fs::read_to_string(dir.join(name)).unwrap()
}

/// The configuration folder: the seed's gateway and VirtualServices, and
/// ServiceEntries for api-v1 and api-v2.
fn config_dir(v1: SocketAddr, v2: SocketAddr) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "04-gateway-ingress.yaml",
        "02-virtual-service-traffic-routing.yaml",
    ] {
        std::fs::write(dir.path().join(name), seed(name)).unwrap();
    }
    std::fs::write(
        dir.path().join("50-api-v1.yaml"),
        service_entry("api-v1", v1),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("50-api-v2.yaml"),
        service_entry("api-v2", v2),
    )
    .unwrap();
    dir
}

/// A CA and a certificate for api.example.com written as
/// `DIR/api-cert/tls.crt` and `tls.key`; returns the CA certificate.
fn issue_api_cert(creds: &Path) -> CertificateDer<'static> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca =
        rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["api.example.com".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let folder = creds.join("api-cert");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(folder.join("tls.key"), key.serialize_pem()).unwrap();
    ca.der().clone()
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn args<'a>(config: &'a Path, creds: &'a Path) -> Vec<&'a str> {
    vec![
        "gateway",
        "--config",
        path_str(config),
        "--namespace",
        "default",
        "--label",
        "istio=ingressgateway",
        "--listen",
        "443=127.0.0.1:0",
        "--listen",
        "80=127.0.0.1:0",
        "--credentials-dir",
        path_str(creds),
        "--admin",
        "127.0.0.1:0",
        "--concurrency",
        "1",
        "--drain-timeout",
        "5",
    ]
}

/// GET over TLS (SNI and Host `api.example.com`), trusting `ca`.
async fn https_get(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
    path: &str,
) -> std::io::Result<(StatusCode, String)> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let stream = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("api.example.com").unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", "api.example.com")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A plain HTTP/1.1 GET; returns status and `Location`.
async fn http_get(addr: SocketAddr, host: &str, path: &str) -> (StatusCode, Option<String>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let location = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    (resp.status(), location)
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_serves_the_seed_over_https_redirects_http_and_drains() {
    let (v1, _t1) = backend("api-v1").await;
    let (v2, _t2) = backend("api-v2").await;
    let config = config_dir(v1, v2);
    let creds = tempfile::tempdir().unwrap();
    let ca = issue_api_cert(creds.path());
    // Gateway API selection flags: the named Gateway is absent (logged);
    // the Istio Gateway selected by label is served regardless.
    let mut argv = args(config.path(), creds.path());
    argv.extend(["--gateway-class", "mesh", "--gateway", "absent"]);
    let mut mesh = Mesh::spawn(&argv);
    let listeners = mesh.listening().await;
    let names: Vec<&str> = listeners.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "admin",
            "gateway port 443 (HTTPS)",
            "gateway port 80 (HTTP)"
        ]
    );
    let https = listeners["gateway port 443 (HTTPS)"];
    let http = listeners["gateway port 80 (HTTP)"];

    let (status, body) = https_get(https, &ca, "/v2/items").await.unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "api-v2"));
    let (status, body) = https_get(https, &ca, "/v1/items").await.unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "api-v1"));
    let (status, location) = http_get(http, "api.example.com", "/v2/items").await;
    assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        location.as_deref(),
        Some("https://api.example.com/v2/items")
    );
    let (status, _) = http_get(listeners["admin"], "admin", "/ready").await;
    assert_eq!(status, StatusCode::OK);

    mesh.sigterm();
    let status = mesh.wait_exit().await;
    let stderr = mesh.stderr();
    assert_eq!(status.code(), Some(0), "exit {status}; stderr:\n{stderr}");
    assert!(stderr.contains("draining"), "{stderr}");
    assert!(
        stderr.contains("Gateway API Gateway default/absent is not in the configuration"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_credential_is_reported_with_its_file_name() {
    let (v1, _t1) = backend("api-v1").await;
    let (v2, _t2) = backend("api-v2").await;
    let config = config_dir(v1, v2);
    let creds = tempfile::tempdir().unwrap();
    let mut mesh = Mesh::spawn(&args(config.path(), creds.path()));
    let listeners = mesh.listening().await;
    // The listeners run; the HTTPS server without its certificate refuses
    // handshakes, and the plain server still redirects.
    let https = listeners["gateway port 443 (HTTPS)"];
    let ca = issue_api_cert(tempfile::tempdir().unwrap().path());
    assert!(https_get(https, &ca, "/v1/").await.is_err());
    let (status, _) = http_get(listeners["gateway port 80 (HTTP)"], "api.example.com", "/").await;
    assert_eq!(status, StatusCode::MOVED_PERMANENTLY);

    mesh.sigterm();
    let status = mesh.wait_exit().await;
    let stderr = mesh.stderr();
    assert_eq!(status.code(), Some(0), "exit {status}; stderr:\n{stderr}");
    let missing: PathBuf = creds.path().join("api-cert").join("tls.crt");
    assert!(
        stderr.contains(&format!("{}: file not found", missing.display())),
        "stderr:\n{stderr}"
    );
}

#[test]
fn a_bad_listen_value_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(["gateway", "--config", "/nonexistent", "--listen", "443"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("expected PORT=ADDR"), "{stderr}");
}
