//! Outbound opaque TCP end to end: the seed's PostgreSQL ServiceEntry
//! carried through an `--outbound-tcp` listener to a line-protocol server
//! (half-close included), VirtualService `tcp` weights drawn per
//! connection, `CONNECT` tunnels on the outbound HTTP listener, the
//! outbound traffic policy for unregistered hosts, and the drain of open
//! connections.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PG_HOST: &str = "postgres.rds.amazonaws.com";

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A STATIC ServiceEntry `host` with one TCP port 5432 named `pg` and
/// loopback endpoints (port, version label).
fn tcp_entry(name: &str, host: &str, endpoints: &[(u16, &str)]) -> String {
    let mut out = format!(
        "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata:\n  name: {name}\n\
         spec:\n  hosts: [{host}]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  ports:\n\
         \x20 - {{ number: 5432, name: pg, protocol: TCP }}\n  endpoints:\n"
    );
    for (port, version) in endpoints {
        out.push_str(&format!(
            "  - {{ address: 127.0.0.1, ports: {{ pg: {port} }}, labels: {{ version: {version} }} }}\n"
        ));
    }
    out
}

/// The seed's database ServiceEntry, with a VirtualService `tcp` rule that
/// sends its port 5432 to a local stand-in (the real host is not reachable
/// from a test).
fn seed_with_local_postgres(echo: &LineEcho) -> ConfigDir {
    let dir = ConfigDir::new();
    dir.seed(&["05-service-entry-external-services.yaml"]);
    dir.write(
        "pg-local.yaml",
        &tcp_entry("pg-local", "pg.local", &[(echo.port(), "v1")]),
    );
    dir.write(
        "pg-route.yaml",
        &format!(
            "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata:\n  name: pg\n\
             spec:\n  hosts: [{PG_HOST}]\n  tcp:\n  - match: [{{ port: 5432 }}]\n\
             \x20   route: [{{ destination: {{ host: pg.local, port: {{ number: 5432 }} }} }}]\n"
        ),
    );
    dir
}

/// A few lines each way, then the client half-closes and still reads the
/// server's last line.
async fn converse(stream: &mut TcpStream, name: &str) {
    for line in ["SELECT 1;", "SELECT now();", "COMMIT;"] {
        assert_eq!(exchange_line(stream, line).await, format!("{name}: {line}"));
    }
    stream.shutdown().await.unwrap();
    assert_eq!(
        read_line(stream).await,
        format!("{name}: bye after 3 lines")
    );
    let mut rest = Vec::new();
    let n = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0, "nothing after the server closed: {rest:?}");
}

#[tokio::test]
async fn the_seed_postgres_entry_carries_a_line_protocol_with_half_close() {
    let echo = LineEcho::start("pg").await;
    let dir = seed_with_local_postgres(&echo);
    let sidecar = start_sidecar_with(&dir, 1, |c| {
        c.outbound_tcp = vec![(PG_HOST.to_owned(), 5432, any_port())];
    })
    .await;
    assert_eq!(sidecar.outbound_tcp.len(), 1);
    let mut stream = TcpStream::connect(sidecar.outbound_tcp[0]).await.unwrap();
    converse(&mut stream, "pg").await;
    // A second connection is routed the same way.
    let mut again = TcpStream::connect(sidecar.outbound_tcp[0]).await.unwrap();
    assert_eq!(exchange_line(&mut again, "ping").await, "pg: ping");
    drop(again);
    assert_eq!(echo.connections(), 2);
    assert!(sidecar.shutdown().await);
}

#[tokio::test]
async fn tcp_route_weights_are_drawn_per_connection() {
    let v1 = LineEcho::start("v1").await;
    let v2 = LineEcho::start("v2").await;
    let dir = ConfigDir::new();
    dir.write(
        "db.yaml",
        &tcp_entry("db", "db.test", &[(v1.port(), "v1"), (v2.port(), "v2")]),
    );
    dir.write(
        "db-routes.yaml",
        "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata:\n  name: db\n\
         spec:\n  host: db.test\n  subsets:\n  - { name: v1, labels: { version: v1 } }\n\
         \x20 - { name: v2, labels: { version: v2 } }\n---\n\
         apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata:\n  name: db\n\
         spec:\n  hosts: [db.test]\n  tcp:\n  - route:\n\
         \x20   - { destination: { host: db.test, subset: v1 }, weight: 80 }\n\
         \x20   - { destination: { host: db.test, subset: v2 }, weight: 20 }\n",
    );
    let sidecar = start_sidecar_with(&dir, 42, |c| {
        c.outbound_tcp = vec![("db.test".to_owned(), 5432, any_port())];
    })
    .await;
    let n = 200;
    let mut to_v1 = 0;
    for _ in 0..n {
        let mut stream = TcpStream::connect(sidecar.outbound_tcp[0]).await.unwrap();
        let reply = exchange_line(&mut stream, "who").await;
        match reply.as_str() {
            "v1: who" => to_v1 += 1,
            "v2: who" => {}
            other => panic!("unexpected reply {other:?}"),
        }
    }
    assert_binomial(to_v1, n, 0.8, "connections to v1");
    assert_eq!(v1.connections() + v2.connections(), n as u64);
    assert!(sidecar.shutdown().await);
}

#[tokio::test]
async fn a_vs_whose_tcp_rules_do_not_match_closes_the_connection() {
    let echo = LineEcho::start("pg").await;
    let dir = seed_with_local_postgres(&echo);
    // The VirtualService routes port 5432 only.
    let sidecar = start_sidecar_with(&dir, 1, |c| {
        c.outbound_tcp = vec![(PG_HOST.to_owned(), 6543, any_port())];
    })
    .await;
    let mut stream = TcpStream::connect(sidecar.outbound_tcp[0]).await.unwrap();
    let _ = stream.write_all(b"hello\n").await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut buf))
        .await
        .unwrap();
    assert!(read.is_err() || buf.is_empty(), "got {buf:?}");
    assert_eq!(echo.connections(), 0);
}

#[tokio::test]
async fn connect_tunnels_through_the_outbound_listener() {
    let echo = LineEcho::start("pg").await;
    let dir = seed_with_local_postgres(&echo);
    dir.write(
        "down.yaml",
        &tcp_entry("down", "down.test", &[(closed_port().await, "v1")]),
    );
    let backend = Backend::start("web", "v1").await;
    dir.write(
        "web.yaml",
        &service_entry("web", "web.test", 80, "HTTP", &[backend.endpoint()]),
    );
    let sidecar = start_sidecar_with(&dir, 1, |_| {}).await;

    // A registered host, routed by the VirtualService's tcp rule.
    let (status, _, mut tunnel) =
        connect_tunnel(sidecar.outbound, &format!("{PG_HOST}:5432")).await;
    assert_eq!(status, 200);
    converse(&mut tunnel, "pg").await;

    // The stand-in's own entry, by its host name.
    let (status, _, mut tunnel) = connect_tunnel(sidecar.outbound, "pg.local:5432").await;
    assert_eq!(status, 200);
    assert_eq!(exchange_line(&mut tunnel, "direct").await, "pg: direct");
    drop(tunnel);

    // An unregistered destination: ALLOW_ANY (the default) dials the
    // CONNECT target itself.
    let (status, _, mut tunnel) =
        connect_tunnel(sidecar.outbound, &format!("127.0.0.1:{}", echo.port())).await;
    assert_eq!(status, 200);
    assert_eq!(exchange_line(&mut tunnel, "anywhere").await, "pg: anywhere");
    drop(tunnel);

    // Failures before the tunnel opens get their SPEC 2 status.
    let (status, head, _) = connect_tunnel(sidecar.outbound, "down.test:5432").await;
    assert_eq!(status, 503);
    assert_eq!(head_header(&head, "x-mesh-response-flags"), Some("UF"));
    let (status, head, _) = connect_tunnel(sidecar.outbound, &format!("{PG_HOST}:6543")).await;
    assert_eq!(status, 404);
    assert_eq!(head_header(&head, "x-mesh-response-flags"), Some("NR"));

    // Plain HTTP still works on the same listener.
    let reply = MeshClient::new(sidecar.outbound).get("web.test", "/").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.backend(), "web");
    assert_eq!(echo.connections(), 3);
    assert!(sidecar.shutdown().await);
}

#[tokio::test]
async fn registry_only_refuses_unregistered_hosts() {
    let echo = LineEcho::start("x").await;
    let dir = ConfigDir::new();
    dir.write(
        "mesh.yaml",
        "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nmetadata:\n  name: mesh\n\
         spec:\n  meshConfig:\n    outboundTrafficPolicy:\n      mode: REGISTRY_ONLY\n",
    );
    let sidecar = start_sidecar_with(&dir, 1, |c| {
        c.outbound_tcp = vec![("127.0.0.1".to_owned(), echo.port(), any_port())];
    })
    .await;
    let (status, _, _) =
        connect_tunnel(sidecar.outbound, &format!("127.0.0.1:{}", echo.port())).await;
    assert_eq!(status, 502);
    let mut stream = TcpStream::connect(sidecar.outbound_tcp[0]).await.unwrap();
    let _ = stream.write_all(b"hello\n").await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut buf))
        .await
        .unwrap();
    assert!(read.is_err() || buf.is_empty(), "got {buf:?}");
    assert_eq!(echo.connections(), 0);
}

#[tokio::test]
async fn shutdown_drains_open_connections_then_cuts_them() {
    let echo = LineEcho::start("pg").await;
    let dir = seed_with_local_postgres(&echo);
    let sidecar = start_sidecar_with(&dir, 1, |c| {
        c.outbound_tcp = vec![(PG_HOST.to_owned(), 5432, any_port())];
        c.drain_timeout = Duration::from_millis(300);
    })
    .await;
    let listen = sidecar.outbound_tcp[0];
    let mut idle = TcpStream::connect(listen).await.unwrap();
    assert_eq!(exchange_line(&mut idle, "hold").await, "pg: hold");
    let started = tokio::time::Instant::now();
    // The connection stays open past the deadline: not clean, and cut.
    assert!(!sidecar.shutdown().await);
    assert!(started.elapsed() < DEADLINE);
    let mut rest = Vec::new();
    let n = tokio::time::timeout(DEADLINE, idle.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
    // The listener no longer accepts.
    assert!(TcpStream::connect(listen).await.is_err());
}
