//! The loop guard: the last check before the connector, for passthrough
//! requests only.
//!
//! Under `ALLOW_ANY`, a request for a host the registry does not know goes
//! to the address the caller named. When that address is one of this
//! proxy's own listeners (`curl http://127.0.0.1:15001/` through the
//! outbound listener, or a name resolving to it), the proxy would send the
//! request to itself, which sends it to itself again, until sockets or
//! memory run out. Envoy avoids it with a blackhole filter chain on its
//! outbound port; here the passthrough target is compared, after DNS, with
//! the addresses the proxy listens on, and such a request answers 508
//! (`MeshError::Loop`) at once. Requests to registered services are not
//! checked: their endpoints come from configuration, not from the caller.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use http::{Request, Response};
use mesh_core::http::{Body, MeshError};
use mesh_route::layer::{Target, route_decision};
use mesh_route::routing::PASSTHROUGH_CLUSTER;

/// The addresses this process listens on, filled in as listeners bind.
#[derive(Debug, Default)]
pub struct LocalListeners {
    addrs: ArcSwap<Vec<SocketAddr>>,
}

impl LocalListeners {
    /// Records a bound listener.
    pub fn add(&self, addr: SocketAddr) {
        self.addrs.rcu(|current| {
            let mut next = Vec::clone(current);
            next.push(addr);
            next
        });
    }

    /// Whether dialing `target` would reach one of the listeners: same port,
    /// and the same address, or a loopback target and a listener on
    /// loopback or on every address.
    pub fn contains(&self, target: SocketAddr) -> bool {
        self.addrs.load().iter().any(|l| {
            l.port() == target.port()
                && (l.ip() == target.ip()
                    || (target.ip().is_loopback()
                        && (l.ip().is_loopback() || l.ip().is_unspecified()))
                    || (l.ip().is_unspecified() && target.ip().is_unspecified()))
        })
    }
}

/// Layer of the loop guard.
#[derive(Clone, Debug)]
pub struct LoopGuardLayer {
    listeners: Arc<LocalListeners>,
}

impl LoopGuardLayer {
    /// Refuses passthrough requests to any of `listeners`.
    pub fn new(listeners: Arc<LocalListeners>) -> Self {
        LoopGuardLayer { listeners }
    }
}

impl<S> tower::Layer<S> for LoopGuardLayer {
    type Service = LoopGuard<S>;

    fn layer(&self, inner: S) -> LoopGuard<S> {
        LoopGuard {
            inner,
            listeners: Arc::clone(&self.listeners),
        }
    }
}

/// The loop guard stage.
#[derive(Clone, Debug)]
pub struct LoopGuard<S> {
    inner: S,
    listeners: Arc<LocalListeners>,
}

impl<S> LoopGuard<S> {
    fn loops(&self, req: &Request<Body>) -> Option<SocketAddr> {
        let decision = route_decision(req.extensions())?;
        if &*decision.forward()?.destination.host != PASSTHROUGH_CLUSTER {
            return None;
        }
        let target: SocketAddr = req.extensions().get::<Target>()?.authority.parse().ok()?;
        self.listeners.contains(target).then_some(target)
    }
}

impl<S> tower::Service<Request<Body>> for LoopGuard<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Guarded<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        match self.loops(&req) {
            None => Guarded::Pass {
                call: self.inner.call(req),
            },
            Some(target) => {
                tracing::warn!(%target, "passthrough request to this proxy's own listener refused");
                Guarded::Refused {
                    reply: Some(MeshError::Loop(target.to_string()).reply_to(req.headers())),
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The guard's future: the inner call untouched (no allocation), or the
    /// refusal.
    #[project = GuardedProj]
    // pin-project-lite takes no doc comments on variant fields.
    #[allow(missing_docs)]
    pub enum Guarded<F> {
        /// Passed on.
        Pass {
            #[pin]
            call: F,
        },
        /// Refused with this reply.
        Refused {
            reply: Option<Response<Body>>,
        },
    }
}

impl<F, E> Future for Guarded<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            GuardedProj::Pass { call } => call.poll(cx),
            GuardedProj::Refused { reply } => match reply.take() {
                Some(reply) => Poll::Ready(Ok(reply)),
                None => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn listeners_match_by_port_and_address() {
        let local = LocalListeners::default();
        local.add("127.0.0.1:15001".parse().unwrap());
        local.add("0.0.0.0:15006".parse().unwrap());
        assert!(local.contains("127.0.0.1:15001".parse().unwrap()));
        assert!(local.contains("127.0.0.2:15001".parse().unwrap()));
        assert!(local.contains("127.0.0.1:15006".parse().unwrap()));
        assert!(local.contains("[::1]:15006".parse().unwrap()));
        assert!(!local.contains("127.0.0.1:15002".parse().unwrap()));
        assert!(!local.contains("10.0.0.1:15001".parse().unwrap()));
    }
}
