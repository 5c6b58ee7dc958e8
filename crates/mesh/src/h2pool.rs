//! HTTP/2 connections to endpoints, one multiplexed connection per endpoint.
//!
//! The generic pool dials whatever authority a request's URI names, which
//! over HTTP/2 would also become the request's `:authority`. The mesh must
//! dial the endpoint the balancer chose yet keep the caller's authority
//! (`echo:50051`), as Envoy and Linkerd do, so HTTP/2 gets this small pool
//! keyed by endpoint address. Readers take a connection with one atomic
//! load; a miss (first request, or a closed connection) dials and publishes
//! a new one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_core::http::Body;

/// Why an HTTP/2 request failed.
#[derive(Debug, thiserror::Error)]
pub enum H2Error {
    /// The endpoint could not be reached (503 UF).
    #[error("connect to {0}: {1}")]
    Connect(String, String),
    /// The connection or stream failed after it was established (503 UC).
    #[error(transparent)]
    Stream(#[from] hyper::Error),
}

/// One HTTP/2 connection per endpoint address.
#[derive(Clone)]
pub struct H2Pool {
    connections: Arc<ArcSwap<HashMap<Arc<str>, SendRequest<Body>>>>,
    connect_timeout: Duration,
}

impl H2Pool {
    /// An empty pool.
    pub fn new(connect_timeout: Duration) -> Self {
        H2Pool {
            connections: Arc::new(ArcSwap::from_pointee(HashMap::new())),
            connect_timeout,
        }
    }

    /// Sends `req` (whose URI keeps the caller's authority) to `endpoint`.
    pub async fn send(
        &self,
        endpoint: &Arc<str>,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, H2Error> {
        let cached = self
            .connections
            .load()
            .get(endpoint)
            .filter(|s| !s.is_closed())
            .cloned();
        let mut sender = match cached {
            Some(s) => s,
            None => self.connect(endpoint).await?,
        };
        sender.ready().await?;
        Ok(sender.send_request(req).await?)
    }

    async fn connect(&self, endpoint: &Arc<str>) -> Result<SendRequest<Body>, H2Error> {
        let fail = |e: String| H2Error::Connect(endpoint.to_string(), e);
        let stream = tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect(&**endpoint),
        )
        .await
        .map_err(|_| fail("connect timeout".to_owned()))?
        .map_err(|e| fail(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(|e| fail(e.to_string()))?;
        let key = Arc::clone(endpoint);
        let pool = Arc::clone(&self.connections);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(endpoint = %key, "http/2 connection ended: {e}");
            }
            // Forget the connection once it is gone, unless a newer one
            // already took its place.
            pool.rcu(|current| {
                let mut next = HashMap::clone(current);
                if next.get(&key).is_some_and(SendRequest::is_closed) {
                    next.remove(&key);
                }
                next
            });
        });
        let published = sender.clone();
        let key = Arc::clone(endpoint);
        self.connections.rcu(move |current| {
            let mut next = HashMap::clone(current);
            next.insert(Arc::clone(&key), published.clone());
            next
        });
        Ok(sender)
    }
}
