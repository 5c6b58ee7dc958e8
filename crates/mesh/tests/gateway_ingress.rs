//! The ingress gateway end to end on loopback: the seed's `api-gateway` and
//! `api-vs` exactly as written, HTTPS with certificates issued by a test CA
//! into a temporary credentials folder (Kubernetes secret layout), the
//! http->https redirect, `/v1/` and `/v2/` routed to their services, unknown
//! hosts 404 NR, SNI choosing among several servers' certificates on one
//! port, rotation without restart, a missing credential reported by file
//! name while the port's other servers keep serving, HTTP/2 by ALPN, and
//! servers added by a reload; and TLS passthrough: `PASSTHROUGH` servers
//! routed by SNI with VirtualService `tls` rules to TLS backends holding
//! their own certificates, on a port shared with the seed's `SIMPLE` server
//! and on a passthrough-only port.
//!
//! The client is hyper's connection API over tokio-rustls, trusting only the
//! test CA and verifying the served certificate's names like any client.

#![allow(clippy::unwrap_used)]

mod gateway_kit;
mod support;

use gateway_kit::*;
use http::{Request, StatusCode, Version};
use hyper_util::rt::TokioIo;
use mesh::gateway::Gateway;
use support::*;

// ---------------------------------------------------------------- gateway

const SEED: [&str; 2] = [
    "04-gateway-ingress.yaml",
    "02-virtual-service-traffic-routing.yaml",
];

/// Starts the gateway on the folder with ports 443 and 80 on `127.0.0.1:0`.
async fn start_gateway(dir: &ConfigDir, creds: &CredentialsDir, watch: bool) -> Gateway {
    let mut config = gateway_config(dir, creds, &[80, 443]);
    config.watch = watch;
    Gateway::start(config).await.unwrap()
}

/// The seed's gateway and VirtualService, with ServiceEntries for the
/// VirtualService's destinations (`api-v1`, `api-v2` on port 8080).
async fn seed_setup() -> (Backend, Backend, ConfigDir) {
    let v1 = Backend::start("api-v1", "v1").await;
    let v2 = Backend::start("api-v2", "v2").await;
    let dir = ConfigDir::new();
    dir.seed(&SEED)
        .write(
            "50-api-v1.yaml",
            &service_entry("api-v1", "api-v1", 8080, "HTTP", &[v1.endpoint()]),
        )
        .write(
            "50-api-v2.yaml",
            &service_entry("api-v2", "api-v2", 8080, "HTTP", &[v2.endpoint()]),
        );
    (v1, v2, dir)
}

/// A Gateway `name` selecting the ingress gateway, with HTTPS servers on
/// 443 given as (hosts, credential), and a VirtualService per server
/// routing its hosts to `backend-host`.
fn https_gateway(name: &str, servers: &[(&[&str], &str)], backend_host: &str) -> String {
    let mut out = format!(
        "apiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata:\n  name: {name}\n\
         spec:\n  selector:\n    istio: ingressgateway\n  servers:\n"
    );
    for (i, (hosts, credential)) in servers.iter().enumerate() {
        out.push_str(&format!(
            "  - port: {{ number: 443, name: https-{i}, protocol: HTTPS }}\n    \
             tls: {{ mode: SIMPLE, credentialName: {credential} }}\n    hosts: [{}]\n",
            hosts
                .iter()
                .map(|h| format!("'{h}'"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let all: Vec<String> = servers
        .iter()
        .flat_map(|(hosts, _)| hosts.iter().map(|h| format!("'{h}'")))
        .collect();
    out.push_str(&format!(
        "---\napiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata:\n  name: {name}-vs\n\
         spec:\n  hosts: [{}]\n  gateways: [{name}]\n  http:\n  - route:\n    - destination: {{ host: {backend_host}, port: {{ number: 8080 }} }}\n",
        all.join(", ")
    ));
    out
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_gateway_serves_https_routes_by_prefix_and_redirects_http() {
    let (v1, v2, dir) = seed_setup().await;
    let ca = TestCa::new();
    let creds = CredentialsDir::new();
    let api = ca.issue(&["api.example.com"]);
    creds.put("api-cert", &api);
    let gateway = start_gateway(&dir, &creds, false).await;
    assert!(gateway.credential_errors().is_empty());
    let https = gateway.addr(443).unwrap();
    let ca = ca.der();

    // The seed's prefixes through the HTTPS server.
    let stream = handshake(https, &connector(&ca, &[b"http/1.1"]), "api.example.com")
        .await
        .unwrap();
    assert_eq!(
        served(&stream),
        api.der,
        "the api-cert certificate is served"
    );
    let reply = get(stream, "api.example.com", "/v1/users").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.backend(), "api-v1");
    assert_eq!(reply.json()["uri"], "/v1/users");
    assert_eq!(
        reply.received_header("x-forwarded-proto").as_deref(),
        Some("https")
    );

    let reply = https_get(
        https,
        &ca,
        "api.example.com",
        "api.example.com",
        "/v2/users",
    )
    .await;
    assert_eq!((reply.status, reply.backend()), (StatusCode::OK, "api-v2"));
    // The default route (no match) goes to v1.
    let reply = https_get(
        https,
        &ca,
        "api.example.com",
        "api.example.com:443",
        "/other",
    )
    .await;
    assert_eq!((reply.status, reply.backend()), (StatusCode::OK, "api-v1"));

    // A Host no server names: 404 NR, nothing reaches a backend.
    let before = v1.hits() + v2.hits();
    let reply = https_get(https, &ca, "api.example.com", "unknown.example.com", "/v1/").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.flags(), "NR");
    assert_eq!(v1.hits() + v2.hits(), before);

    // Port 80: httpsRedirect answers 301 to the same host and path.
    let plain = MeshClient::new(gateway.addr(80).unwrap());
    let reply = plain.get("api.example.com", "/v1/users?page=2").await;
    assert_eq!(reply.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        reply.headers["location"],
        "https://api.example.com/v1/users?page=2"
    );
    let reply = plain.get("api.example.com:80", "/").await;
    assert_eq!(reply.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(reply.headers["location"], "https://api.example.com/");
    let reply = plain.get("unknown.example.com", "/v1/").await;
    assert_eq!((reply.status, reply.flags()), (StatusCode::NOT_FOUND, "NR"));
    assert_eq!(v1.hits() + v2.hits(), before);

    assert!(gateway.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_over_tls_is_negotiated_by_alpn() {
    let (v1, _v2, dir) = seed_setup().await;
    let ca = TestCa::new();
    let creds = CredentialsDir::new();
    creds.put("api-cert", &ca.issue(&["api.example.com"]));
    let gateway = start_gateway(&dir, &creds, false).await;
    let https = gateway.addr(443).unwrap();

    let stream = handshake(
        https,
        &connector(&ca.der(), &[b"h2", b"http/1.1"]),
        "api.example.com",
    )
    .await
    .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let reply = get(stream, "api.example.com", "/v1/h2").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.version, Version::HTTP_2);
    assert_eq!(reply.backend(), "api-v1");
    assert_eq!(v1.hits(), 1);

    // A client offering only HTTP/1.1 gets it.
    let stream = handshake(
        https,
        &connector(&ca.der(), &[b"http/1.1"]),
        "api.example.com",
    )
    .await
    .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let reply = get(stream, "api.example.com", "/v1/h1").await;
    assert_eq!(
        (reply.status, reply.version),
        (StatusCode::OK, Version::HTTP_11)
    );
    assert!(gateway.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_selects_each_servers_certificate_on_one_port() {
    let backend = Backend::start("shop", "v1").await;
    let dir = ConfigDir::new();
    dir.write(
        "10-gateway.yaml",
        &https_gateway(
            "shop-gateway",
            &[
                (&["a.example.com"], "a-cert"),
                (&["*.b.example.com"], "b-cert"),
            ],
            "shop",
        ),
    )
    .write(
        "50-shop.yaml",
        &service_entry("shop", "shop", 8080, "HTTP", &[backend.endpoint()]),
    );
    let ca = TestCa::new();
    let creds = CredentialsDir::new();
    // The first server's certificate also names 127.0.0.1: it is the
    // default for clients that send no SNI.
    let a = ca.issue(&["a.example.com", "127.0.0.1"]);
    let b = ca.issue(&["*.b.example.com"]);
    creds.put("a-cert", &a);
    creds.put("b-cert", &b);
    let gateway = start_gateway(&dir, &creds, false).await;
    let https = gateway.addr(443).unwrap();
    let tls = connector(&ca.der(), &[b"http/1.1"]);

    // The client verifies the SAN against its SNI; we also compare the
    // exact certificate served.
    let stream = handshake(https, &tls, "a.example.com").await.unwrap();
    assert_eq!(served(&stream), a.der);
    let reply = get(stream, "a.example.com", "/").await;
    assert_eq!((reply.status, reply.backend()), (StatusCode::OK, "shop"));

    let stream = handshake(https, &tls, "x.b.example.com").await.unwrap();
    assert_eq!(served(&stream), b.der);
    let reply = get(stream, "x.b.example.com", "/").await;
    assert_eq!((reply.status, reply.backend()), (StatusCode::OK, "shop"));

    // No SNI (an IP address): the port's default, the first server's.
    let stream = handshake(https, &tls, "127.0.0.1").await.unwrap();
    assert_eq!(served(&stream), a.der);

    // An SNI no server names: the handshake is refused.
    assert!(handshake(https, &tls, "c.example.org").await.is_err());
    // b.example.com itself is not under *.b.example.com.
    assert!(handshake(https, &tls, "b.example.com").await.is_err());
    assert!(gateway.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_served_without_restart() {
    let (_v1, _v2, dir) = seed_setup().await;
    let ca = TestCa::new();
    let creds = CredentialsDir::new();
    let old = ca.issue(&["api.example.com"]);
    creds.put("api-cert", &old);
    let gateway = start_gateway(&dir, &creds, true).await;
    let https = gateway.addr(443).unwrap();
    let tls = connector(&ca.der(), &[b"http/1.1"]);
    let stream = handshake(https, &tls, "api.example.com").await.unwrap();
    assert_eq!(served(&stream), old.der);
    // A connection opened before the rotation keeps working.
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);

    let new = ca.issue(&["api.example.com"]);
    creds.put("api-cert", &new);
    eventually("the rotated certificate to be served", || {
        let tls = tls.clone();
        let want = new.der.clone();
        async move {
            let stream = handshake(https, &tls, "api.example.com").await.unwrap();
            served(&stream) == want
        }
    })
    .await;
    assert!(gateway.credential_errors().is_empty());
    let reply = https_get(
        https,
        &ca.der(),
        "api.example.com",
        "api.example.com",
        "/v2/",
    )
    .await;
    assert_eq!((reply.status, reply.backend()), (StatusCode::OK, "api-v2"));
    let req = Request::get("/v1/")
        .header("host", "api.example.com")
        .body(empty())
        .unwrap();
    let reply = collect(sender.send_request(req).await.unwrap()).await;
    assert_eq!((reply.status, reply.backend()), (StatusCode::OK, "api-v1"));
    assert!(gateway.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_credential_names_its_file_and_other_servers_keep_serving() {
    let backend = Backend::start("shop", "v1").await;
    let dir = ConfigDir::new();
    dir.write(
        "10-gateway.yaml",
        &https_gateway(
            "shop-gateway",
            &[
                (&["a.example.com"], "a-cert"),
                (&["m.example.com"], "missing-cert"),
            ],
            "shop",
        ),
    )
    .write(
        "50-shop.yaml",
        &service_entry("shop", "shop", 8080, "HTTP", &[backend.endpoint()]),
    );
    let ca = TestCa::new();
    let creds = CredentialsDir::new();
    creds.put("a-cert", &ca.issue(&["a.example.com"]));
    let gateway = start_gateway(&dir, &creds, true).await;
    let https = gateway.addr(443).unwrap();
    let tls = connector(&ca.der(), &[b"http/1.1"]);

    let errors = gateway.credential_errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let missing = creds.path().join("missing-cert").join("tls.crt");
    assert!(
        errors[0].contains(&format!("{}: file not found", missing.display())),
        "{errors:?}"
    );
    // The server with the missing credential is not served; the other is.
    assert!(handshake(https, &tls, "m.example.com").await.is_err());
    let reply = https_get(https, &ca.der(), "a.example.com", "a.example.com", "/").await;
    assert_eq!((reply.status, reply.backend()), (StatusCode::OK, "shop"));

    // Once the secret appears, the server is served without a restart.
    let m = ca.issue(&["m.example.com"]);
    creds.put("missing-cert", &m);
    eventually("the new credential to be served", || {
        let tls = tls.clone();
        async move { handshake(https, &tls, "m.example.com").await.is_ok() }
    })
    .await;
    assert!(gateway.credential_errors().is_empty());
    let reply = https_get(https, &ca.der(), "m.example.com", "m.example.com", "/").await;
    assert_eq!((reply.status, reply.backend()), (StatusCode::OK, "shop"));
    assert!(gateway.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_added_on_a_bound_port_follow_reloads() {
    let (_v1, _v2, dir) = seed_setup().await;
    let shop = Backend::start("shop", "v1").await;
    dir.write(
        "50-shop.yaml",
        &service_entry("shop", "shop", 8080, "HTTP", &[shop.endpoint()]),
    );
    let ca = TestCa::new();
    let creds = CredentialsDir::new();
    creds.put("api-cert", &ca.issue(&["api.example.com"]));
    let shop_cert = ca.issue(&["shop.example.com"]);
    creds.put("shop-cert", &shop_cert);
    let gateway = start_gateway(&dir, &creds, true).await;
    let https = gateway.addr(443).unwrap();
    let tls = connector(&ca.der(), &[b"http/1.1"]);
    assert!(handshake(https, &tls, "shop.example.com").await.is_err());

    // A second Gateway with a server on the same port, and its
    // VirtualService, arrive in a new file.
    dir.write(
        "20-shop-gateway.yaml",
        &https_gateway(
            "shop-gateway",
            &[(&["shop.example.com"], "shop-cert")],
            "shop",
        ),
    );
    eventually("the new server's certificate to be served", || {
        let tls = tls.clone();
        async move { handshake(https, &tls, "shop.example.com").await.is_ok() }
    })
    .await;
    let want = shop_cert.der.clone();
    eventually("the new server's routes", || {
        let (ca, want) = (ca.der(), want.clone());
        async move {
            let stream = handshake(https, &connector(&ca, &[b"http/1.1"]), "shop.example.com")
                .await
                .unwrap();
            assert_eq!(served(&stream), want);
            get(stream, "shop.example.com", "/").await.backend() == "shop"
        }
    })
    .await;
    // The seed's server is unaffected.
    let reply = https_get(
        https,
        &ca.der(),
        "api.example.com",
        "api.example.com",
        "/v2/",
    )
    .await;
    assert_eq!((reply.status, reply.backend()), (StatusCode::OK, "api-v2"));
    assert!(gateway.shutdown().await);
}

/// A Gateway with `PASSTHROUGH` servers for `*.pass.example.com` on 443
/// (next to the seed's SIMPLE server) and on 9443 (alone), and a
/// VirtualService whose `tls` rules send each SNI to its TLS backend; `a`
/// only on port 443.
fn passthrough_config(a: &TlsEcho, b: &TlsEcho) -> String {
    format!(
        "apiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata:\n  name: pass-gateway\n\
         spec:\n  selector:\n    istio: ingressgateway\n  servers:\n\
         \x20 - port: {{ number: 443, name: tls, protocol: TLS }}\n    tls: {{ mode: PASSTHROUGH }}\n    hosts: ['*.pass.example.com']\n\
         \x20 - port: {{ number: 9443, name: tls-only, protocol: TLS }}\n    tls: {{ mode: PASSTHROUGH }}\n    hosts: ['*.pass.example.com']\n\
         ---\napiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata:\n  name: pass-vs\n\
         spec:\n  hosts: ['*.pass.example.com']\n  gateways: [pass-gateway]\n  tls:\n\
         \x20 - match: [{{ port: 443, sniHosts: [a.pass.example.com] }}]\n    route: [{{ destination: {{ host: a-tls, port: {{ number: 8443 }} }} }}]\n\
         \x20 - match: [{{ sniHosts: [b.pass.example.com] }}]\n    route: [{{ destination: {{ host: b-tls, port: {{ number: 8443 }} }} }}]\n\
         ---\n{}---\n{}",
        service_entry("a-tls", "a-tls", 8443, "TLS", &[(a.port(), "v1")]),
        service_entry("b-tls", "b-tls", 8443, "TLS", &[(b.port(), "v1")]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_servers_relay_tls_by_sni_next_to_terminated_ones() {
    let (v1, _v2, dir) = seed_setup().await;
    let ca = TestCa::new();
    let a = TlsEcho::start("a", &ca, "a.pass.example.com").await;
    let b = TlsEcho::start("b", &ca, "b.pass.example.com").await;
    dir.write("30-passthrough.yaml", &passthrough_config(&a, &b));
    let creds = CredentialsDir::new();
    let api = ca.issue(&["api.example.com"]);
    creds.put("api-cert", &api);
    let gateway = Gateway::start(gateway_config(&dir, &creds, &[80, 443, 9443]))
        .await
        .unwrap();
    assert!(gateway.credential_errors().is_empty());
    let (https, only) = (gateway.addr(443).unwrap(), gateway.addr(9443).unwrap());
    let tls = connector(&ca.der(), &[]);

    // Each SNI reaches its own backend, whose certificate (the gateway has
    // no key for it) the client verifies; the backend saw the same SNI.
    for (addr, sni, backend) in [
        (https, "a.pass.example.com", &a),
        (https, "b.pass.example.com", &b),
        (only, "b.pass.example.com", &b),
    ] {
        let stream = handshake(addr, &tls, sni).await.unwrap();
        assert_eq!(served(&stream), backend.cert, "{sni} on {addr}");
        let name = if std::ptr::eq(backend, &a) { "a" } else { "b" };
        let (greeting, reply) = tls_echo(stream, "ping").await;
        assert_eq!(greeting, format!("{name} sni={sni}"));
        assert_eq!(reply, format!("{name}: ping"));
    }

    // The seed's SIMPLE server on the same port still terminates, by SNI.
    let stream = handshake(
        https,
        &connector(&ca.der(), &[b"http/1.1"]),
        "api.example.com",
    )
    .await
    .unwrap();
    assert_eq!(served(&stream), api.der);
    let reply = get(stream, "api.example.com", "/v1/through").await;
    assert_eq!((reply.status, reply.backend()), (StatusCode::OK, "api-v1"));
    assert_eq!(v1.hits(), 1);

    // A PASSTHROUGH name without a matching tls rule (c), or whose rule
    // is for another port (a on 9443), is closed; so is a name no server
    // covers on the passthrough-only port (it holds no certificate).
    assert!(handshake(https, &tls, "c.pass.example.com").await.is_err());
    assert!(handshake(only, &tls, "a.pass.example.com").await.is_err());
    assert!(handshake(only, &tls, "api.example.com").await.is_err());
    assert!(gateway.shutdown().await);
}
