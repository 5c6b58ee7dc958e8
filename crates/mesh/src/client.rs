//! The in-process ("proxyless") client: the sidecar's outbound stack, run
//! inside the calling service, with no extra hop.
//!
//! A [`Client`] is built from the same YAML, by the same code
//! ([`stack::outbound`](crate::stack::outbound) over a
//! [`RoutingState`]), as the sidecar's outbound listener, so a request gets
//! the same route, subset, endpoint choice and local replies (SPEC 2: 404
//! NR, 503 NC / UH / UF, ...) either way. Only the listener is missing: the
//! application hands requests straight to the stack.
//!
//! The client is a `tower::Service<http::Request<B>>` for any body `B`, so
//! it is also the transport of a tonic-generated gRPC client (tonic's
//! `GrpcService` is implemented for every such service). Requests name
//! their destination by an absolute URI (`http://reviews:9080/path`) or a
//! `Host` header, read the way DESIGN.md says (`reviews`, `reviews.ns`,
//! `reviews.ns.svc.cluster.local`, with or without the port).
//!
//! Failures never surface as `Err`: like the sidecar, the client answers
//! them with the SPEC 2 status and the `x-mesh-response-flags` header, so
//! the error type is [`Infallible`].
//!
//! ```no_run
//! # async fn run() -> Result<(), mesh::core::http::BoxError> {
//! use http_body_util::BodyExt;
//! use tower::ServiceExt;
//!
//! let client = mesh::Client::builder()
//!     .config(["mesh.yaml"])
//!     .watch(true)
//!     .build()
//!     .await?;
//! let request = http::Request::get("http://reviews:9080/reviews/1")
//!     .body(mesh::core::http::empty())?;
//! let response = client.clone().oneshot(request).await?;
//! println!("{}", response.status());
//! let body = response.into_body().collect().await?.to_bytes();
//! println!("{}", String::from_utf8_lossy(&body));
//!
//! // The same client as the transport of a tonic client: the origin names
//! // the service, the mesh picks the endpoint (HTTP/2 when the
//! // ServiceEntry port says `protocol: GRPC`).
//! let grpc = tonic::client::Grpc::with_origin(client, "http://echo:50051".parse()?);
//! # drop(grpc);
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use mesh_core::http::{Body, BoxError, boxed};
use mesh_core::identity::Workload;
use mesh_core::load::LoadOptions;
use mesh_core::reload::{self, ConfigSource, ConfigWatcher, InitialLoadError, SnapshotHandle};
use mesh_route::random::{SharedRandom, default_random};
use tokio::task::JoinHandle;

use crate::stack::{OutboundStack, RoutingState, outbound};
use crate::upstream::UpstreamSettings;

/// Why a [`Client`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Neither configuration paths nor a snapshot handle were given.
    #[error("no configuration: give the builder `config` paths or `snapshots`")]
    NoConfig,
    /// The configuration has errors (nothing runs on an invalid first load).
    #[error(transparent)]
    Config(#[from] InitialLoadError),
    /// The file watcher could not start.
    #[error("cannot watch the configuration: {0}")]
    Watch(String),
    /// The blocking load task did not finish (the runtime is shutting down).
    #[error("the configuration load task failed: {0}")]
    Load(String),
}

/// The in-process client: the outbound stack as a `tower::Service`.
///
/// Cheap to clone (the stack and its state are shared); every clone routes
/// with the same tables, balancers and connection pools. The routes follow
/// configuration reloads for as long as any clone lives.
#[derive(Clone)]
pub struct Client {
    /// The stack itself, not boxed: a clone (`client.clone().oneshot(..)`)
    /// copies its layers' handles without an allocation, and a call's
    /// response future is the stages' own, not a box.
    service: OutboundStack,
    shared: Arc<Shared>,
}

/// What every clone shares; dropping the last clone stops following
/// reloads and watching files.
struct Shared {
    snapshots: SnapshotHandle,
    routing: Arc<RoutingState>,
    follower: JoinHandle<()>,
    _watcher: Option<ConfigWatcher>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The follower holds the snapshot handle, whose sender lives as long
        // as the handle: without this it would never end.
        self.follower.abort();
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("generation", &self.routes_generation())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A builder: configuration paths (or a snapshot handle), the workload
    /// identity, the random source and whether to watch the files.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// A client over snapshots someone else loads (and perhaps reloads):
    /// the routes follow the handle's generations. Must be called inside a
    /// tokio runtime.
    pub fn from_snapshots(
        snapshots: SnapshotHandle,
        workload: Workload,
        random: SharedRandom,
    ) -> Client {
        Client::assemble(
            snapshots,
            workload,
            random,
            &UpstreamSettings::default(),
            None,
        )
    }

    fn assemble(
        snapshots: SnapshotHandle,
        workload: Workload,
        random: SharedRandom,
        upstream: &UpstreamSettings,
        watcher: Option<ConfigWatcher>,
    ) -> Client {
        let routing = Arc::new(RoutingState::new(&snapshots, random));
        let follower = routing.follow(&snapshots);
        let service = outbound(&routing, Arc::new(workload), upstream);
        Client {
            service,
            shared: Arc::new(Shared {
                snapshots,
                routing,
                follower,
                _watcher: watcher,
            }),
        }
    }

    /// The configuration handle (current snapshot, generations, reloads).
    pub fn snapshots(&self) -> &SnapshotHandle {
        &self.shared.snapshots
    }

    /// The generation of the snapshot the routes in force were compiled
    /// from. It trails [`SnapshotHandle::load`]'s generation briefly after
    /// a reload, while the new routes compile.
    pub fn routes_generation(&self) -> u64 {
        self.shared.routing.table.load().snapshot.generation
    }
}

impl<B> tower::Service<Request<B>> for Client
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = <OutboundStack as tower::Service<Request<Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.service.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.service.call(req.map(boxed))
    }
}

/// Builds a [`Client`]; see [`Client::builder`].
pub struct ClientBuilder {
    paths: Vec<PathBuf>,
    snapshots: Option<SnapshotHandle>,
    workload: Workload,
    random: Option<SharedRandom>,
    watch: bool,
    upstream: UpstreamSettings,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            paths: Vec::new(),
            snapshots: None,
            workload: Workload::default(),
            random: None,
            watch: true,
            upstream: UpstreamSettings::default(),
        }
    }
}

impl ClientBuilder {
    /// Adds configuration files or folders, loaded in order (as the
    /// sidecar's `--config`).
    pub fn config<I, P>(mut self, paths: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<PathBuf>,
    {
        self.paths.extend(paths.into_iter().map(Into::into));
        self
    }

    /// Uses an already loaded configuration instead of paths; the client
    /// follows its reloads, and `watch` does not apply.
    pub fn snapshots(mut self, snapshots: SnapshotHandle) -> Self {
        self.snapshots = Some(snapshots);
        self
    }

    /// The workload the client speaks for: its namespace reads short host
    /// names and is the resources' default namespace; its labels and
    /// namespace match `sourceLabels` and `sourceNamespace`.
    pub fn workload(mut self, workload: Workload) -> Self {
        self.workload = workload;
        self
    }

    /// The random source of weighted routes, mirror percentages and
    /// balancing (seed it in tests). Defaults to one seeded from entropy.
    pub fn random(mut self, random: SharedRandom) -> Self {
        self.random = Some(random);
        self
    }

    /// Whether to watch the configuration paths and reload on change
    /// (default true).
    pub fn watch(mut self, watch: bool) -> Self {
        self.watch = watch;
        self
    }

    /// Upstream connection settings.
    pub fn upstream(mut self, upstream: UpstreamSettings) -> Self {
        self.upstream = upstream;
        self
    }

    /// Loads the configuration (off the async threads), starts following
    /// (and, if asked, watching) it, and assembles the outbound stack. Must
    /// be called inside a tokio runtime.
    pub async fn build(self) -> Result<Client, ClientError> {
        let random = self.random.unwrap_or_else(default_random);
        let (snapshots, watcher) = match self.snapshots {
            Some(handle) => (handle, None),
            None if self.paths.is_empty() => return Err(ClientError::NoConfig),
            None => {
                let source = ConfigSource {
                    paths: self.paths,
                    options: LoadOptions {
                        default_namespace: self.workload.namespace.clone(),
                    },
                };
                let handle = tokio::task::spawn_blocking(move || reload::initial(source))
                    .await
                    .map_err(|e| ClientError::Load(e.to_string()))??;
                let watcher = if self.watch {
                    Some(reload::watch(&handle).map_err(|e| ClientError::Watch(e.to_string()))?)
                } else {
                    None
                };
                (handle, watcher)
            }
        };
        Ok(Client::assemble(
            snapshots,
            self.workload,
            random,
            &self.upstream,
            watcher,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync_clone<T: Send + Sync + Clone + 'static>() {}

    #[test]
    fn client_is_send_sync_clone() {
        assert_send_sync_clone::<Client>();
    }

    #[tokio::test]
    async fn building_without_configuration_is_an_error() {
        let err = Client::builder().build().await.unwrap_err();
        assert!(matches!(err, ClientError::NoConfig));
    }
}
