//! Test kit of the ingress gateway tests: a test certificate authority,
//! a credentials folder in the Kubernetes secret layout, a TLS client that
//! trusts only the test CA, TLS backends that report the SNI they were
//! reached by, and the gateway started in-process on `127.0.0.1:0`.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use http::{Request, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh::gateway::GatewayConfig;
use mesh_route::random::SplitMix;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::support::*;

// ---------------------------------------------------------------- certificates

/// A test certificate authority.
pub struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

/// A certificate issued by the test CA, as the files of a credential.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
    /// The private key, PKCS#8 DER.
    pub key_der: Vec<u8>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "mesh gateway test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        TestCa {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A leaf for these names (DNS names or IP addresses).
    pub fn issue(&self, names: &[&str]) -> Issued {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }
}

/// A credentials folder: `DIR/<name>/tls.crt` and `tls.key`, each written
/// next door and renamed in, as a secret update would.
pub struct CredentialsDir {
    dir: tempfile::TempDir,
    scratch: tempfile::TempDir,
}

impl CredentialsDir {
    pub fn new() -> CredentialsDir {
        CredentialsDir {
            dir: tempfile::tempdir().unwrap(),
            scratch: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn put(&self, name: &str, issued: &Issued) {
        let folder = self.dir.path().join(name);
        std::fs::create_dir_all(&folder).unwrap();
        for (file, text) in [("tls.crt", &issued.cert_pem), ("tls.key", &issued.key_pem)] {
            let tmp = self.scratch.path().join(format!("{name}-{file}"));
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, folder.join(file)).unwrap();
        }
    }
}

// ---------------------------------------------------------------- TLS client

/// A TLS client trusting only `ca`, offering `alpn`.
pub fn connector(ca: &CertificateDer<'static>, alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(mesh_tls::provider::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

/// Connects and completes a handshake presenting `sni` (no SNI for an IP).
pub async fn handshake(
    addr: SocketAddr,
    tls: &TlsConnector,
    sni: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let stream = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    tokio::time::timeout(DEADLINE, tls.connect(name, stream))
        .await
        .expect("handshake timed out")
}

/// The leaf certificate the server presented.
pub fn served(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// Sends one GET on the connection (HTTP/2 when ALPN chose it).
pub async fn get(stream: TlsStream<TcpStream>, host: &str, path: &str) -> Reply {
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(stream);
    let resp = if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::get(format!("https://{host}{path}"))
            .version(Version::HTTP_2)
            .body(empty())
            .unwrap();
        sender.send_request(req).await.unwrap()
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        let req = Request::get(path)
            .header("host", host)
            .body(empty())
            .unwrap();
        sender.send_request(req).await.unwrap()
    };
    collect(resp).await
}

/// Handshake with `sni`, then GET `path` with Host `host` over HTTP/1.1.
pub async fn https_get(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
    sni: &str,
    host: &str,
    path: &str,
) -> Reply {
    let stream = handshake(addr, &connector(ca, &[b"http/1.1"]), sni)
        .await
        .unwrap();
    get(stream, host, path).await
}

// ---------------------------------------------------------------- TLS backends

/// A TLS server on `127.0.0.1:0` with its own certificate for `dns_name`,
/// issued by the test CA. After the handshake it sends `NAME sni=SNI`
/// (the name the client asked for, as it arrived), then answers each line
/// with `NAME: line`.
pub struct TlsEcho {
    pub addr: SocketAddr,
    pub cert: CertificateDer<'static>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsEcho {
    pub async fn start(name: &str, ca: &TestCa, dns_name: &str) -> TlsEcho {
        let issued = ca.issue(&[dns_name]);
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(issued.key_der.clone()));
        let config = rustls::ServerConfig::builder_with_provider(mesh_tls::provider::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![issued.der.clone()], key)
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let name = name.to_owned();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, name) = (acceptor.clone(), name.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let sni = tls.get_ref().1.server_name().unwrap_or("").to_owned();
                    let mut io = BufReader::new(tls);
                    if io
                        .get_mut()
                        .write_all(format!("{name} sni={sni}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                    let mut line = String::new();
                    while matches!(io.read_line(&mut line).await, Ok(n) if n > 0) {
                        let reply = format!("{name}: {}\n", line.trim_end());
                        if io.get_mut().write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                        line.clear();
                    }
                });
            }
        });
        TlsEcho {
            addr,
            cert: issued.der,
            task,
        }
    }

    /// The backend's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

/// Over an open TLS connection to a [`TlsEcho`]: its greeting line, then
/// the answer to `line`.
pub async fn tls_echo(stream: TlsStream<TcpStream>, line: &str) -> (String, String) {
    let mut io = BufReader::new(stream);
    let mut greeting = String::new();
    tokio::time::timeout(DEADLINE, io.read_line(&mut greeting))
        .await
        .unwrap()
        .unwrap();
    io.get_mut()
        .write_all(format!("{line}\n").as_bytes())
        .await
        .unwrap();
    let mut reply = String::new();
    tokio::time::timeout(DEADLINE, io.read_line(&mut reply))
        .await
        .unwrap()
        .unwrap();
    (greeting.trim_end().to_owned(), reply.trim_end().to_owned())
}

// ---------------------------------------------------------------- gateway

/// The labels of the seed's ingress gateway workload.
pub fn ingress_labels() -> BTreeMap<String, String> {
    BTreeMap::from([("istio".to_owned(), "ingressgateway".to_owned())])
}

/// A gateway configuration for the folder: the ingress labels, `ports`
/// bound on `127.0.0.1:0`, the credentials folder, admin on loopback,
/// seeded randomness, no watching.
pub fn gateway_config(dir: &ConfigDir, creds: &CredentialsDir, ports: &[u16]) -> GatewayConfig {
    let mut config = GatewayConfig::new(vec![dir.path().to_path_buf()]);
    config.workload.labels = ingress_labels();
    for port in ports {
        config
            .listen
            .insert(*port, SocketAddr::from(([127, 0, 0, 1], 0)));
    }
    config.credentials_dir = Some(creds.path().to_path_buf());
    config.admin = SocketAddr::from(([127, 0, 0, 1], 0));
    config.random = Arc::new(SplitMix::seeded(4));
    config.drain_timeout = DEADLINE;
    config.handshake_timeout = DEADLINE;
    config.watch = false;
    config
}
