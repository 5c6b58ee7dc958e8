//! TLS passthrough routed by SNI, end to end: the seed's HTTPS external API
//! entry (`api.external.com:443`) with a VirtualService whose `tls` rules
//! send each SNI to a different local TLS server. Each client must see the
//! right backend's certificate (issued by a test CA the proxy knows
//! nothing of) and data, and the TLS session must be end to end: client and
//! backend export the same keying material (RFC 5705), which no proxy that
//! terminated TLS could arrange. Reached both through an `--outbound-tcp`
//! listener and through `CONNECT`; a malformed ClientHello closes the
//! connection.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const LABEL: &[u8] = b"EXPERIMENTAL mesh passthrough test";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A test CA and the leaf certificates it issues.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "mesh passthrough test CA");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn root(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    fn leaf(&self, dns_name: &str) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![dns_name.to_owned()])
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        (
            cert.der().clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }
}

/// A TLS server on `127.0.0.1:0` with a certificate for one name. After the
/// handshake it sends `NAME sni=SNI ekm=HEX` (the SNI it received and its
/// exported keying material), then answers each line with `NAME: line`.
struct TlsBackend {
    addr: SocketAddr,
    cert: CertificateDer<'static>,
    connections: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsBackend {
    async fn start(name: &str, ca: &Ca, dns_name: &str) -> TlsBackend {
        let (cert, key) = ca.leaf(dns_name);
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&connections);
        let name = name.to_owned();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                let name = name.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let (_, conn) = tls.get_ref();
                    let sni = conn.server_name().unwrap_or("-").to_owned();
                    let ekm = conn.export_keying_material([0u8; 32], LABEL, None).unwrap();
                    let (read, mut write) = tokio::io::split(tls);
                    let hello = format!("{name} sni={sni} ekm={}\n", hex(&ekm));
                    if write.write_all(hello.as_bytes()).await.is_err() {
                        return;
                    }
                    let mut lines = BufReader::new(read).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let reply = format!("{name}: {line}\n");
                        if write.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    let _ = write.shutdown().await;
                });
            }
        });
        TlsBackend {
            addr,
            cert,
            connections,
            task,
        }
    }

    fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }
}

/// What a client saw over one TLS session through the proxy.
struct Seen {
    /// The first certificate the server presented.
    cert: CertificateDer<'static>,
    /// The backend's greeting line.
    greeting: String,
    /// The client's own exported keying material.
    ekm: String,
    /// The answer to one line sent after the greeting.
    echo: String,
}

/// Runs a TLS client with `sni` over `io`, trusting only `root`.
async fn tls_session<IO>(io: IO, sni: &str, root: &CertificateDer<'static>) -> Seen
where
    IO: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    let mut tls = tokio::time::timeout(DEADLINE, connector.connect(name, io))
        .await
        .expect("TLS handshake timed out")
        .unwrap();
    let (_, conn) = tls.get_ref();
    let cert = conn.peer_certificates().unwrap()[0].clone();
    let ekm = hex(&conn.export_keying_material([0u8; 32], LABEL, None).unwrap());
    let greeting = read_line(&mut tls).await;
    let echo = exchange_line(&mut tls, "ping").await;
    tls.shutdown().await.unwrap();
    Seen {
        cert,
        greeting,
        ekm,
        echo,
    }
}

fn tls_entry(name: &str, host: &str, port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata:\n  name: {name}\n\
         spec:\n  hosts: [{host}]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  ports:\n\
         \x20 - {{ number: 443, name: tls, protocol: TLS }}\n\
         \x20 endpoints: [{{ address: 127.0.0.1, ports: {{ tls: {port} }} }}]\n"
    )
}

struct Setup {
    ca: Ca,
    a: TlsBackend,
    b: TlsBackend,
    dir: ConfigDir,
}

/// The seed's external API entry plus two TLS backends and the `tls`
/// rules that split `api.external.com:443` between them by SNI.
async fn setup() -> Setup {
    let ca = Ca::new();
    let a = TlsBackend::start("backend-a", &ca, "api.external.com").await;
    let b = TlsBackend::start("backend-b", &ca, "eu.api.external.com").await;
    let dir = ConfigDir::new();
    dir.seed(&["05-service-entry-external-services.yaml"]);
    dir.write(
        "a.yaml",
        &tls_entry("tls-a", "tls-a.internal", a.addr.port()),
    );
    dir.write(
        "b.yaml",
        &tls_entry("tls-b", "tls-b.internal", b.addr.port()),
    );
    dir.write(
        "sni.yaml",
        "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata:\n  name: external-api-sni\n\
         spec:\n  hosts: [api.external.com, eu.api.external.com]\n  tls:\n\
         \x20 - match: [{ port: 443, sniHosts: [api.external.com] }]\n\
         \x20   route: [{ destination: { host: tls-a.internal, port: { number: 443 } } }]\n\
         \x20 - match: [{ port: 443, sniHosts: [eu.api.external.com] }]\n\
         \x20   route: [{ destination: { host: tls-b.internal, port: { number: 443 } } }]\n",
    );
    Setup { ca, a, b, dir }
}

fn assert_reached(seen: &Seen, backend: &TlsBackend, name: &str, sni: &str) {
    assert_eq!(
        seen.cert, backend.cert,
        "{sni}: the backend's own certificate"
    );
    assert_eq!(
        seen.greeting,
        format!("{name} sni={sni} ekm={}", seen.ekm),
        "{sni}: same SNI and same TLS session at both ends"
    );
    assert_eq!(seen.echo, format!("{name}: ping"));
}

#[tokio::test]
async fn tls_is_routed_by_sni_through_an_outbound_tcp_listener() {
    let s = setup().await;
    let sidecar = start_sidecar_with(&s.dir, 1, |c| {
        c.outbound_tcp = vec![(
            "api.external.com".to_owned(),
            443,
            SocketAddr::from(([127, 0, 0, 1], 0)),
        )];
    })
    .await;
    let listen = sidecar.outbound_tcp[0];
    let root = s.ca.root();
    for _ in 0..2 {
        let seen = tls_session(
            TcpStream::connect(listen).await.unwrap(),
            "api.external.com",
            &root,
        )
        .await;
        assert_reached(&seen, &s.a, "backend-a", "api.external.com");
        let seen = tls_session(
            TcpStream::connect(listen).await.unwrap(),
            "eu.api.external.com",
            &root,
        )
        .await;
        assert_reached(&seen, &s.b, "backend-b", "eu.api.external.com");
    }
    assert_eq!(s.a.connections(), 2);
    assert_eq!(s.b.connections(), 2);
    assert!(sidecar.shutdown().await);
}

#[tokio::test]
async fn tls_is_routed_by_sni_through_connect() {
    let s = setup().await;
    let sidecar = start_sidecar_with(&s.dir, 1, |_| {}).await;
    let root = s.ca.root();
    let (status, _, tunnel) = connect_tunnel(sidecar.outbound, "api.external.com:443").await;
    assert_eq!(status, 200);
    let seen = tls_session(tunnel, "eu.api.external.com", &root).await;
    assert_reached(&seen, &s.b, "backend-b", "eu.api.external.com");
    let (status, _, tunnel) = connect_tunnel(sidecar.outbound, "api.external.com:443").await;
    assert_eq!(status, 200);
    let seen = tls_session(tunnel, "api.external.com", &root).await;
    assert_reached(&seen, &s.a, "backend-a", "api.external.com");
    assert!(sidecar.shutdown().await);
}

#[tokio::test]
async fn a_malformed_client_hello_closes_the_connection() {
    let s = setup().await;
    let sidecar = start_sidecar_with(&s.dir, 1, |c| {
        c.outbound_tcp = vec![(
            "api.external.com".to_owned(),
            443,
            SocketAddr::from(([127, 0, 0, 1], 0)),
        )];
    })
    .await;
    let listen = sidecar.outbound_tcp[0];
    // A handshake record whose message is a ServerHello; then one whose
    // ClientHello claims more extension bytes than it carries.
    let bad: [&[u8]; 2] = [
        &[0x16, 0x03, 0x01, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00],
        &[
            0x16, 0x03, 0x01, 0x00, 0x2f, 0x01, 0x00, 0x00, 0x2b, 0x03, 0x03, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x00,
            0x02, 0x13, 0x01, 0x01, 0x00, 0xff, 0xff,
        ],
    ];
    for bytes in bad {
        let mut stream = TcpStream::connect(listen).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        let mut got = Vec::new();
        let read = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut got))
            .await
            .expect("the proxy kept a malformed connection open");
        assert!(read.is_err() || got.is_empty(), "got {got:?}");
    }
    assert_eq!(s.a.connections() + s.b.connections(), 0);
    assert!(sidecar.shutdown().await);
}
