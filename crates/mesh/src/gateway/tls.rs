//! The TLS ports of the ingress gateway: terminate, or relay by SNI.
//!
//! Place in the flow: the first thing a connection meets on a gateway port
//! whose servers speak TLS, before any HTTP. Two kinds of servers share
//! such a port:
//!
//! - `HTTPS` with `tls.mode: SIMPLE` (Gateway API: `Terminate`): the
//!   handshake completes here with the certificate the SNI picks
//!   (`mesh_tls::sni`), then HTTP/2 or HTTP/1.1 by ALPN meets the gateway's
//!   HTTP stack.
//! - `PASSTHROUGH` (SPEC 6.1): the ClientHello is read without answering it
//!   (`crate::tcp::sni`), the SNI picks the server and the VirtualService
//!   `tls` rule bound to its Gateway
//!   (`mesh_route::gateway::GatewayRoutes::decide_tls`), and the bytes, the
//!   ClientHello first, are relayed untouched to the chosen destination by
//!   the outbound TCP path (`crate::tcp::TcpProxy`: balancing, DNS,
//!   connect, half-close aware relay). The backend's certificate is what
//!   the client sees; the gateway never holds a key for it.
//!
//! When the port has a PASSTHROUGH server this gateway serves (checked per
//! connection against the routes in force, so a reload may add one), every
//! connection is sniffed first: an SNI whose most specific server on the
//! port is PASSTHROUGH is relayed, anything else (a SIMPLE server's name,
//! an unknown name, no SNI) is handed to the TLS handshake with the bytes
//! already read replayed in front of the socket. One port can thus mix
//! both modes, chosen by SNI, as Envoy's filter chains do. A PASSTHROUGH
//! name with no matching `tls` rule, a client that sends no ClientHello
//! within the handshake timeout, and a malformed ClientHello are closed
//! with a log line (there is no status to send).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use mesh_core::identity::Workload;
use mesh_route::gateway::{GatewayListener, TlsRoute};
use mesh_route::routing::MESH;
use mesh_route::tcp_route::ConnectionView;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::server::{ConnectionService, DrainOutcome, HttpStack};
use crate::stack::RoutingState;
use crate::tcp::{L4Target, TcpProxy, sni};

/// One TLS listener and what it serves.
pub(super) struct TlsListener<S> {
    pub(super) listener: TcpListener,
    pub(super) acceptor: TlsAcceptor,
    pub(super) service: S,
    pub(super) shutdown: watch::Receiver<bool>,
    pub(super) drain: Duration,
    pub(super) handshake: Duration,
    /// What the route stage knows of this listener (its port, the
    /// Gateways it serves), for SNI decisions.
    pub(super) route: Arc<GatewayListener>,
    pub(super) passthrough: Arc<Passthrough>,
}

/// What relaying PASSTHROUGH connections needs, shared by every TLS port.
pub(super) struct Passthrough {
    pub(super) routing: Arc<RoutingState>,
    pub(super) workload: Arc<Workload>,
    pub(super) proxy: Arc<TcpProxy>,
}

/// Like [`crate::server::serve`], with TLS before HTTP (or a relay by SNI,
/// see the module doc). HTTP/2 or HTTP/1.1 follows ALPN; the connection
/// builder also recognises the HTTP/2 preface itself. Relayed connections
/// are drained by the proxy's tracker, not here.
pub(super) async fn serve_tls<S: HttpStack>(mut l: TlsListener<S>) -> DrainOutcome {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    let port = l.route.port;
    loop {
        tokio::select! {
            accepted = l.listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(port, "accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let conn = Conn {
                    acceptor: l.acceptor.clone(),
                    service: l.service.clone(),
                    builder: builder.clone(),
                    watcher: graceful.watcher(),
                    port,
                    peer,
                    handshake: l.handshake,
                };
                let sniff = l
                    .passthrough
                    .routing
                    .table
                    .load()
                    .gateways
                    .wants_sni(&l.route);
                if sniff {
                    let (route, passthrough) = (Arc::clone(&l.route), Arc::clone(&l.passthrough));
                    tokio::spawn(async move { by_sni(stream, conn, &route, &passthrough).await });
                } else {
                    tokio::spawn(conn.terminate(stream));
                }
            }
            changed = l.shutdown.changed() => {
                if changed.is_err() || *l.shutdown.borrow() {
                    break;
                }
            }
        }
    }
    drop(l.listener);
    let clean = tokio::time::timeout(l.drain, graceful.shutdown())
        .await
        .is_ok();
    if !clean {
        tracing::warn!(port, "drain deadline passed with connections still open");
    }
    DrainOutcome { clean }
}

/// One accepted connection, ready to be terminated.
struct Conn<S> {
    acceptor: TlsAcceptor,
    service: S,
    builder: auto::Builder<TokioExecutor>,
    watcher: Watcher,
    port: u16,
    peer: SocketAddr,
    handshake: Duration,
}

impl<S: HttpStack> Conn<S> {
    /// Completes the TLS handshake (bounded by the handshake timeout) and
    /// serves HTTP on it until the connection ends or the drain closes it.
    async fn terminate<IO>(self, io: IO)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (port, peer) = (self.port, self.peer);
        let tls = match tokio::time::timeout(self.handshake, self.acceptor.accept(io)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(port, %peer, "TLS handshake failed: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!(port, %peer, "TLS handshake timed out");
                return;
            }
        };
        // The same per-connection adapter as plain listeners.
        let conn = self.builder.serve_connection_with_upgrades(
            TokioIo::new(tls),
            ConnectionService::new(self.service, peer),
        );
        if let Err(e) = self.watcher.watch(conn.into_owned()).await {
            tracing::debug!(port, "connection ended: {e}");
        }
    }
}

/// Reads the ClientHello, then relays the connection (PASSTHROUGH) or
/// terminates it with the bytes read replayed.
async fn by_sni<S: HttpStack>(
    mut stream: TcpStream,
    conn: Conn<S>,
    route: &GatewayListener,
    p: &Passthrough,
) {
    let (port, peer) = (conn.port, conn.peer);
    let mut prefix = Vec::new();
    let sni = match sni::sniff(&mut stream, &mut prefix, conn.handshake).await {
        Ok(sni::Hello::ClientHello { sni }) => sni,
        Ok(_) => {
            tracing::debug!(port, %peer, "closing the connection: not TLS");
            return;
        }
        Err(e) => {
            tracing::debug!(port, %peer, "closing the connection: {e}");
            return;
        }
    };
    let decision = {
        let table = p.routing.table.load();
        let view = ConnectionView {
            host: "",
            port,
            sni: None,
            destination_ip: None,
            source_ip: Some(peer.ip()),
            gateway: MESH,
            source_namespace: &p.workload.namespace,
            source_labels: &p.workload.labels,
        };
        table
            .gateways
            .decide_tls(route, sni.as_deref(), &view, &*p.routing.random)
    };
    match decision {
        TlsRoute::Terminate => conn.terminate(Rewind::new(prefix, stream)).await,
        TlsRoute::NoRoute { server } => tracing::warn!(
            port,
            %peer,
            sni = sni.as_deref().unwrap_or(""),
            "{}: no tls route of a VirtualService bound to this Gateway matches the SNI; closing the connection",
            server.describe()
        ),
        TlsRoute::Forward {
            destination,
            route,
            server,
        } => {
            // Not an HTTP connection: the HTTP drain must not wait for it
            // (the proxy's tracker drains it).
            drop(conn);
            let _guard = p.proxy.tracker().track();
            let target = L4Target {
                host: sni.clone().unwrap_or_default(),
                port,
            };
            let opened = p
                .proxy
                .open_destination(
                    &target,
                    sni.as_deref(),
                    destination,
                    format!("{} via {}", route, server.describe()),
                    Some(peer),
                )
                .await;
            match opened {
                Ok(opened) => p.proxy.relay(stream, opened, &prefix, &target).await,
                Err(e) => tracing::warn!(
                    port,
                    %peer,
                    %target,
                    "{}: closing the passthrough connection: {e}",
                    server.describe()
                ),
            }
        }
    }
}

/// A stream that first yields bytes already read from it (the sniffed
/// ClientHello), then reads on; writes go straight through.
struct Rewind<T> {
    prefix: Vec<u8>,
    read: usize,
    inner: T,
}

impl<T> Rewind<T> {
    fn new(prefix: Vec<u8>, inner: T) -> Self {
        Rewind {
            prefix,
            read: 0,
            inner,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(rest) = this.prefix.get(this.read..)
            && !rest.is_empty()
        {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.read += n;
            if this.read == this.prefix.len() {
                this.prefix = Vec::new();
                this.read = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn rewind_replays_the_prefix_then_reads_on_and_writes_through() {
        let (client, server) = tokio::io::duplex(64);
        let mut rewound = Rewind::new(b"hello ".to_vec(), server);
        let mut client = client;
        client.write_all(b"world").await.unwrap();
        let mut got = [0u8; 3];
        rewound.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hel");
        let mut rest = [0u8; 8];
        rewound.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"lo world");
        rewound.write_all(b"back").await.unwrap();
        let mut back = [0u8; 4];
        client.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"back");
    }
}
