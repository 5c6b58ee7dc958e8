//! ServiceEntry `resolution: DNS` and `NONE` end to end, against names in
//! the machine's hosts file (`localhost`): the host itself resolved, an
//! endpoint address resolved, a name that does not resolve answering 503
//! UH quickly (never a hang), the original destination dialled for NONE,
//! and a DNS entry reached over the TCP path. Re-resolution after the
//! refresh interval is a paused-time unit test in `mesh::dns`.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;
use tokio::net::TcpStream;

/// A ServiceEntry with one HTTP port `number` and the given resolution,
/// and endpoint lines (already YAML) if any.
fn entry(name: &str, host: &str, number: u16, resolution: &str, endpoints: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata:\n  name: {name}\n\
         spec:\n  hosts: [\"{host}\"]\n  location: MESH_EXTERNAL\n  resolution: {resolution}\n  ports:\n\
         \x20 - {{ number: {number}, name: http, protocol: HTTP }}\n{endpoints}"
    )
}

#[tokio::test]
async fn a_dns_host_is_resolved_from_the_hosts_file() {
    let backend = Backend::start("local", "v1").await;
    let port = backend.port();
    let dir = ConfigDir::new();
    dir.write("se.yaml", &entry("local", "localhost", port, "DNS", ""));
    let sidecar = start_sidecar(&dir, 1, false).await;
    let client = MeshClient::new(sidecar.outbound);
    let host = format!("localhost:{port}");
    for _ in 0..3 {
        let reply = client.get(&host, "/dns").await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert_eq!(reply.backend(), "local");
        // The caller's Host travels unchanged; only the dialled address
        // was resolved.
        assert_eq!(
            reply.received_header("host").as_deref(),
            Some(host.as_str())
        );
    }
    assert_eq!(backend.hits(), 3);
    assert!(sidecar.shutdown().await);
}

#[tokio::test]
async fn endpoint_addresses_that_are_names_are_resolved() {
    let backend = Backend::start("named", "v1").await;
    let dir = ConfigDir::new();
    let endpoints = format!(
        "  endpoints:\n  - {{ address: localhost, ports: {{ http: {} }} }}\n",
        backend.port()
    );
    dir.write(
        "se.yaml",
        &entry("api", "api.dns.test", 80, "DNS", &endpoints),
    );
    let sidecar = start_sidecar(&dir, 1, false).await;
    let reply = MeshClient::new(sidecar.outbound)
        .get("api.dns.test", "/")
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.backend(), "named");
    assert_eq!(
        reply.received_header("host").as_deref(),
        Some("api.dns.test")
    );
    assert!(sidecar.shutdown().await);
}

#[tokio::test]
async fn a_name_that_does_not_resolve_answers_503_uh_quickly() {
    let dir = ConfigDir::new();
    dir.write(
        "se.yaml",
        &entry("missing", "nonexistent.invalid", 80, "DNS", ""),
    );
    let sidecar = start_sidecar(&dir, 1, false).await;
    let client = MeshClient::new(sidecar.outbound);
    for _ in 0..2 {
        let started = tokio::time::Instant::now();
        let reply = client.get("nonexistent.invalid", "/").await;
        let took = started.elapsed();
        assert_eq!(reply.status, 503, "{:?}", reply.body);
        assert_eq!(reply.flags(), "UH");
        // The resolver's own wait is bounded by DnsSettings::timeout (5 s);
        // NXDOMAIN from the hosts file and resolver comes much sooner.
        assert!(took < Duration::from_secs(5), "took {took:?}");
    }
    assert!(sidecar.shutdown().await);
}

#[tokio::test]
async fn resolution_none_dials_the_original_destination() {
    let backend = Backend::start("original", "v1").await;
    let port = backend.port();
    let dir = ConfigDir::new();
    dir.write("se.yaml", &entry("none", "localhost", port, "NONE", ""));
    let sidecar = start_sidecar(&dir, 1, false).await;
    let reply = MeshClient::new(sidecar.outbound)
        .get(&format!("localhost:{port}"), "/none")
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.backend(), "original");
    assert!(sidecar.shutdown().await);
}

#[tokio::test]
async fn a_dns_entry_is_reached_over_the_tcp_path() {
    let echo = LineEcho::start("db").await;
    let dir = ConfigDir::new();
    dir.write(
        "se.yaml",
        &format!(
            "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata:\n  name: db\n\
             spec:\n  hosts: [db.dns.test]\n  resolution: DNS\n  ports:\n\
             \x20 - {{ number: 5432, name: pg, protocol: TCP }}\n  endpoints:\n\
             \x20 - {{ address: localhost, ports: {{ pg: {} }} }}\n",
            echo.port()
        ),
    );
    dir.write(
        "gone.yaml",
        "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata:\n  name: gone\n\
         spec:\n  hosts: [gone.invalid]\n  resolution: DNS\n  ports:\n\
         \x20 - { number: 5432, name: pg, protocol: TCP }\n",
    );
    let sidecar = start_sidecar_with(&dir, 1, |c| {
        c.outbound_tcp = vec![(
            "db.dns.test".to_owned(),
            5432,
            SocketAddr::from(([127, 0, 0, 1], 0)),
        )];
    })
    .await;
    let mut stream = TcpStream::connect(sidecar.outbound_tcp[0]).await.unwrap();
    assert_eq!(exchange_line(&mut stream, "resolved").await, "db: resolved");
    drop(stream);
    // And through CONNECT.
    let (status, _, mut tunnel) = connect_tunnel(sidecar.outbound, "db.dns.test:5432").await;
    assert_eq!(status, 200);
    assert_eq!(
        exchange_line(&mut tunnel, "tunnelled").await,
        "db: tunnelled"
    );
    drop(tunnel);
    // A DNS entry whose name does not resolve: the CONNECT gets 503 UH.
    let (status, head, _) = connect_tunnel(sidecar.outbound, "gone.invalid:5432").await;
    assert_eq!(status, 503);
    assert_eq!(head_header(&head, "x-mesh-response-flags"), Some("UH"));
    assert!(sidecar.shutdown().await);
}
