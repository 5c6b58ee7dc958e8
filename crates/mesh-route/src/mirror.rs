//! Traffic mirroring ("shadowing"): fire-and-forget copies of live requests
//! to a second destination (SPEC 1.1 step 6, 3.4 `RequestMirror`, 4.4
//! `mirror` / `mirrorPercentage` / `mirrors[]`).
//!
//! Mirroring exists to try a new version on real production traffic without
//! letting it touch a single real answer. That shapes every choice here: the
//! caller sees only the primary's response; a mirror's response is
//! discarded; a mirror that fails, errors, hangs or reads slowly never
//! delays, alters or slows the primary; a mirror copy is never retried.
//!
//! [`MirrorLayer`] sits between the route stage and the balance stage. It
//! reads the [`RouteDecision`] in the request's extensions (see
//! [`route_decision`]) and, for each of the rule's
//! [`MirrorSpec`](crate::decision::MirrorSpec)s, draws `chance(percent)`
//! from the injectable [`RandomSource`](crate::random::RandomSource). Each
//! copy that fires is sent through the *same* inner service (so it is
//! balanced and connected like any request) on a spawned task, with a
//! cloned decision whose destination is the mirror's and whose retries are
//! off, and with `-shadow` appended to the host part of its Host (see
//! [`ShadowHost`]).
//!
//! Bodies are teed, never buffered whole: the primary body streams on
//! untouched while each data frame is also offered to a small bounded queue
//! feeding the copy's body (a [`Bytes`] clone, no copy of the data). When a
//! mirror falls behind by more than [`MirrorLayer::buffer_bytes`] (64 KiB by
//! default; a single larger frame is accepted only when the queue is empty),
//! or has gone away, that copy is abandoned: its body ends with
//! [`MirrorAbandoned`] so the mirror's upstream sees an aborted request,
//! never a truncated one that looks complete. Requests without a body copy
//! nothing.
//!
//! A rule without mirrors (the common case) costs one extension lookup: no
//! allocation, no clone, and the inner future is returned as is.
//!
//! ```
//! use std::sync::Arc;
//! use mesh_route::mirror::{MirrorLayer, ShadowHost};
//! use mesh_route::random::SplitMix;
//!
//! // Istio 1.28+ forwards the mirror's Host unchanged.
//! let layer = MirrorLayer::new(Arc::new(SplitMix::seeded(1))).shadow_host(ShadowHost::Unchanged);
//! # let _ = layer;
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HOST, UPGRADE};
use http::uri::{Authority, Parts as UriParts};
use http::{HeaderValue, Method, Request, Response, Uri};
use http_body::{Body as _, Frame, SizeHint};
use mesh_core::http::{Body, BoxError, boxed};
use tokio::sync::mpsc;
use tower::ServiceExt;

use crate::decision::{
    DestinationKey, Forward, RetrySpec, RouteAction, RouteDecision, RoutePolicy,
};
use crate::layer::{route_decision, set_route_decision};
use crate::random::SharedRandom;

/// How much body, by default, may wait for one mirror before its copy is
/// abandoned.
pub const DEFAULT_BUFFER_BYTES: usize = 64 * 1024;

/// How many frames may wait for one mirror, whatever their size (empty data
/// frames and trailers count too).
pub const MAX_QUEUED_FRAMES: usize = 32;

/// The default upper bound on the life of one mirror copy.
pub const DEFAULT_MAX_DURATION: Duration = Duration::from_secs(60);

/// The suffix appended to the host part of a mirror copy's Host.
pub const SHADOW_SUFFIX: &str = "-shadow";

/// What a mirror copy's Host / `:authority` says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ShadowHost {
    /// `-shadow` is appended to the host part, before any `:port`
    /// (`httpbin:8000` -> `httpbin-shadow:8000`): Envoy's default and
    /// Istio's behaviour up to 1.27 (SPEC 3.4).
    #[default]
    Suffix,
    /// The Host is forwarded unchanged: Istio 1.28+ by default
    /// (`DISABLE_SHADOW_HOST_SUFFIX=true`).
    Unchanged,
}

/// Marks a mirror copy in its extensions, so later stages (telemetry,
/// retries) can tell shadow traffic from the real thing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MirroredRequest;

/// The error a mirror copy's body ends with when the copy is abandoned: the
/// mirror fell behind the primary, or the primary body failed or was dropped
/// before its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("mirror copy abandoned: the mirror fell behind or the primary body did not complete")]
pub struct MirrorAbandoned;

/// Layer of the mirror stage.
#[derive(Clone, Debug)]
pub struct MirrorLayer {
    random: SharedRandom,
    shadow_host: ShadowHost,
    buffer_bytes: usize,
    max_duration: Duration,
}

impl MirrorLayer {
    /// Mirrors with percentages drawn from `random`, the `-shadow` suffix,
    /// a [`DEFAULT_BUFFER_BYTES`] buffer per copy and copies bounded by
    /// [`DEFAULT_MAX_DURATION`].
    pub fn new(random: SharedRandom) -> Self {
        MirrorLayer {
            random,
            shadow_host: ShadowHost::default(),
            buffer_bytes: DEFAULT_BUFFER_BYTES,
            max_duration: DEFAULT_MAX_DURATION,
        }
    }

    /// Whether copies get the `-shadow` Host suffix.
    pub fn shadow_host(mut self, shadow_host: ShadowHost) -> Self {
        self.shadow_host = shadow_host;
        self
    }

    /// How far (in body bytes) a copy may lag behind the primary before it
    /// is abandoned. This bounds the memory mirroring can hold per copy:
    /// `bytes`, or one frame when a single frame is larger.
    pub fn buffer_bytes(mut self, bytes: usize) -> Self {
        self.buffer_bytes = bytes;
        self
    }

    /// The longest a copy may run: it is dropped (connection and all) after
    /// the route's `timeout` or this, whichever is shorter, so a mirror that
    /// never answers cannot pin a task and a connection forever.
    pub fn max_duration(mut self, max: Duration) -> Self {
        self.max_duration = max;
        self
    }
}

impl<S> tower::Layer<S> for MirrorLayer {
    type Service = Mirror<S>;

    fn layer(&self, inner: S) -> Mirror<S> {
        Mirror {
            inner,
            layer: self.clone(),
        }
    }
}

/// The mirror stage.
#[derive(Clone, Debug)]
pub struct Mirror<S> {
    inner: S,
    layer: MirrorLayer,
}

impl<S> tower::Service<Request<Body>> for Mirror<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> S::Future {
        let has_mirrors =
            route_decision(req.extensions()).is_some_and(|d| !d.policy.mirrors.is_empty());
        let req = if has_mirrors { self.emit(req) } else { req };
        self.inner.call(req)
    }
}

/// The copies that fired for one request.
struct Fired {
    destinations: Vec<DestinationKey>,
    forward: Forward,
    decision: RouteDecision,
}

impl<S> Mirror<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    /// Draws each mirror, spawns the copies that fired, and returns the
    /// primary request (its body teed when a copy needs it).
    fn emit(&self, req: Request<Body>) -> Request<Body> {
        // An upgrade hands the connection over; there is nothing to copy.
        if req.method() == Method::CONNECT || req.headers().contains_key(UPGRADE) {
            return req;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::debug!("no tokio runtime: mirror copies skipped");
            return req;
        };
        let Some(fired) = self.draw(&req) else {
            return req;
        };
        let (parts, body) = req.into_parts();
        let mut headers = parts.headers.clone();
        let mut uri = parts.uri.clone();
        if self.layer.shadow_host == ShadowHost::Suffix {
            shadow_request_host(&mut headers, &mut uri);
        }
        let count = fired.destinations.len();
        let (primary_body, copies) = if body.is_end_stream() {
            (body, Vec::new())
        } else {
            tee(body, count, self.layer.buffer_bytes)
        };
        let mut copies = copies.into_iter();
        let route_timeout = fired.decision.policy.timeout;
        let limit =
            route_timeout.map_or(self.layer.max_duration, |t| t.min(self.layer.max_duration));
        let policy = Arc::new(mirror_policy(&fired.decision.policy));
        for destination in fired.destinations {
            let body = copies.next().unwrap_or_else(mesh_core::http::empty);
            let mut copy = Request::new(body);
            *copy.method_mut() = parts.method.clone();
            *copy.uri_mut() = uri.clone();
            *copy.version_mut() = parts.version;
            *copy.headers_mut() = headers.clone();
            *copy.extensions_mut() = parts.extensions.clone();
            set_route_decision(
                copy.extensions_mut(),
                RouteDecision {
                    route: fired.decision.route.clone(),
                    action: RouteAction::Forward(Forward {
                        destination,
                        ..fired.forward.clone()
                    }),
                    policy: Arc::clone(&policy),
                },
            );
            copy.extensions_mut().insert(MirroredRequest);
            let svc = self.inner.clone();
            runtime.spawn(Discard {
                inner: Box::pin(tokio::time::timeout(limit, svc.oneshot(copy))),
                limit,
            });
        }
        Request::from_parts(parts, primary_body)
    }

    /// One draw per mirror, in config order; `None` when nothing fired.
    /// Allocates only for copies that fire.
    fn draw(&self, req: &Request<Body>) -> Option<Fired> {
        let decision = route_decision(req.extensions())?;
        let forward = decision.forward()?;
        let mut destinations = Vec::new();
        for mirror in &decision.policy.mirrors {
            if self.layer.random.chance(mirror.percent) {
                destinations.push(mirror.destination.clone());
            }
        }
        if destinations.is_empty() {
            return None;
        }
        Some(Fired {
            destinations,
            forward: forward.clone(),
            decision: decision.clone(),
        })
    }
}

/// Runs one copy to its end and drops whatever it yields. A named future
/// rather than an `async` block: the latter trips a compiler limitation on
/// `Send` inference with boxed-error bodies in bounds.
struct Discard<F> {
    inner: Pin<Box<F>>,
    limit: Duration,
}

impl<F, E> Future for Discard<F>
where
    F: Future<Output = Result<Result<Response<Body>, E>, tokio::time::error::Elapsed>>,
{
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.inner.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(outcome) => {
                match outcome {
                    Ok(Ok(resp)) => {
                        tracing::debug!(status = resp.status().as_u16(), "mirror answered")
                    }
                    Ok(Err(_)) => tracing::debug!("mirror failed"),
                    Err(_) => {
                        tracing::debug!(limit = ?self.limit, "mirror abandoned after its time limit")
                    }
                }
                Poll::Ready(())
            }
        }
    }
}

/// The policy a copy carries: the route's timeout, no retries (a mirror is
/// never retried), no fault, no further mirrors.
fn mirror_policy(route: &RoutePolicy) -> RoutePolicy {
    RoutePolicy {
        timeout: route.timeout,
        retries: Some(RetrySpec::disabled()),
        fault: None,
        mirrors: Vec::new(),
        rewrite: route.rewrite.clone(),
    }
}

/// `authority` with [`SHADOW_SUFFIX`] appended to its host part, before any
/// `:port`: `httpbin:8000` -> `httpbin-shadow:8000`, `cluster-1` ->
/// `cluster-1-shadow`, `[::1]:80` -> `[::1]-shadow:80` (as Envoy does).
pub fn shadow_authority(authority: &str) -> String {
    let (host, port) = split_port(authority);
    let mut out = String::with_capacity(authority.len() + SHADOW_SUFFIX.len());
    out.push_str(host);
    out.push_str(SHADOW_SUFFIX);
    out.push_str(port);
    out
}

/// Splits `host:port` into `host` and `:port` (empty when there is none).
fn split_port(authority: &str) -> (&str, &str) {
    if let Some(i) = authority.rfind(':') {
        let (host, port) = authority.split_at(i);
        let digits = &port[1..];
        let is_port = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
        // A bare IPv6 literal has colons but no port.
        if is_port && (!host.contains(':') || host.ends_with(']')) {
            return (host, port);
        }
    }
    (authority, "")
}

/// Suffixes the Host header and, for absolute-form requests, the URI's
/// authority. Values that are not valid afterwards are left as they were.
fn shadow_request_host(headers: &mut http::HeaderMap, uri: &mut Uri) {
    if let Some(host) = headers.get(HOST).and_then(|h| h.to_str().ok())
        && let Ok(v) = HeaderValue::from_str(&shadow_authority(host))
    {
        headers.insert(HOST, v);
    }
    if let Some(authority) = uri.authority()
        && let Ok(shadow) = Authority::try_from(shadow_authority(authority.as_str()))
    {
        let mut parts = UriParts::default();
        parts.scheme = uri.scheme().cloned();
        parts.authority = Some(shadow);
        parts.path_and_query = uri.path_and_query().cloned();
        if let Ok(shadowed) = Uri::from_parts(parts) {
            *uri = shadowed;
        }
    }
}

/// State one tap shares with the copy's body.
#[derive(Debug, Default)]
struct TapShared {
    /// Data bytes sent to the copy and not yet read by it.
    queued: AtomicUsize,
    /// Set once the primary body ended cleanly and every frame was queued.
    complete: AtomicBool,
}

/// The sending end of one copy's body.
struct Tap {
    tx: mpsc::Sender<Frame<Bytes>>,
    shared: Arc<TapShared>,
}

/// Wraps `body` so that each frame is also offered to `copies` bounded
/// queues; returns the wrapped primary body and the copies' bodies.
fn tee(body: Body, copies: usize, buffer_bytes: usize) -> (Body, Vec<Body>) {
    let hint = body.size_hint();
    let mut taps = Vec::with_capacity(copies);
    let mut bodies = Vec::with_capacity(copies);
    for _ in 0..copies {
        let (tx, rx) = mpsc::channel(MAX_QUEUED_FRAMES);
        let shared = Arc::new(TapShared::default());
        taps.push(Tap {
            tx,
            shared: Arc::clone(&shared),
        });
        bodies.push(boxed(CopyBody {
            rx,
            shared,
            hint,
            done: false,
        }));
    }
    let primary = boxed(TeeBody {
        inner: body,
        taps,
        buffer_bytes,
    });
    (primary, bodies)
}

/// The primary body, teeing its frames into the copies' queues.
struct TeeBody {
    inner: Body,
    taps: Vec<Tap>,
    buffer_bytes: usize,
}

impl TeeBody {
    /// Offers `frame` to every live tap; a tap that is full, over its byte
    /// budget or closed is dropped, which aborts that copy.
    fn offer(&mut self, frame: &Frame<Bytes>) {
        let len = frame.data_ref().map_or(0, Bytes::len);
        let budget = self.buffer_bytes;
        self.taps.retain(|tap| {
            let queued = tap.shared.queued.load(Ordering::Acquire);
            if queued > 0 && queued.saturating_add(len) > budget {
                tracing::debug!(queued, "mirror fell behind: copy abandoned");
                return false;
            }
            let copy = if let Some(data) = frame.data_ref() {
                Frame::data(data.clone())
            } else if let Some(trailers) = frame.trailers_ref() {
                Frame::trailers(trailers.clone())
            } else {
                return false;
            };
            // Counted before sending so the reader never subtracts first.
            tap.shared.queued.fetch_add(len, Ordering::AcqRel);
            tap.tx.try_send(copy).is_ok()
        });
    }

    /// The primary ended cleanly: the copies end cleanly too once drained.
    fn finish(&mut self) {
        for tap in self.taps.drain(..) {
            tap.shared.complete.store(true, Ordering::Release);
        }
    }
}

impl http_body::Body for TeeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if !this.taps.is_empty() {
                    this.offer(frame);
                    // Readers may stop polling once the body says it ended.
                    if this.inner.is_end_stream() {
                        this.finish();
                    }
                }
            }
            Poll::Ready(None) => this.finish(),
            // Dropping the taps without `complete` aborts the copies.
            Poll::Ready(Some(Err(_))) => this.taps.clear(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A copy's body: the frames the tee queued, then a clean end if the
/// primary completed, else [`MirrorAbandoned`].
struct CopyBody {
    rx: mpsc::Receiver<Frame<Bytes>>,
    shared: Arc<TapShared>,
    hint: SizeHint,
    done: bool,
}

impl http_body::Body for CopyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.shared.queued.fetch_sub(data.len(), Ordering::AcqRel);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.done = true;
                if this.shared.complete.load(Ordering::Acquire) {
                    Poll::Ready(None)
                } else {
                    Poll::Ready(Some(Err(Box::new(MirrorAbandoned))))
                }
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::sync::atomic::AtomicU64;

    use http::HeaderMap;
    use http_body_util::BodyExt;
    use mesh_core::http::{empty, full};
    use tokio::sync::{mpsc, oneshot};
    use tower::{Layer, Service, ServiceExt, service_fn};

    use super::*;
    use crate::decision::MirrorSpec;
    use crate::random::SplitMix;

    /// A body made of the given frames, ending as soon as they are gone.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl http_body::Body for Frames {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.get_mut().0.pop_front().map(Ok))
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_empty()
        }
    }

    fn chunks(parts: &[&'static [u8]], trailers: Option<HeaderMap>) -> Body {
        let mut frames: VecDeque<_> = parts
            .iter()
            .map(|p| Frame::data(Bytes::from_static(p)))
            .collect();
        frames.extend(trailers.map(Frame::trailers));
        boxed(Frames(frames))
    }

    fn dest(host: &str, subset: &str) -> DestinationKey {
        DestinationKey {
            host: host.into(),
            subset: Some(subset.into()),
            port: None,
        }
    }

    /// A request as the route stage leaves it: Host set, decision (with
    /// the table it was made with) in the extensions, with `mirrors`.
    fn routed(body: Body, mirrors: Vec<MirrorSpec>) -> Request<Body> {
        let mut decision = RouteDecision::default_route("httpbin.default.svc.cluster.local");
        if let RouteAction::Forward(f) = &mut decision.action {
            f.destination = dest("httpbin.default.svc.cluster.local", "v1");
        }
        decision.policy = Arc::new(RoutePolicy {
            mirrors,
            ..RoutePolicy::default()
        });
        let mut req = Request::post("/anything?q=1").body(body).unwrap();
        req.headers_mut()
            .insert(HOST, HeaderValue::from_static("httpbin:8000"));
        req.headers_mut()
            .insert("x-test", HeaderValue::from_static("yes"));
        let table =
            crate::routing::RoutingTable::compile(Arc::new(mesh_core::snapshot::Snapshot::empty()));
        req.extensions_mut().insert(crate::layer::Routed {
            decision,
            table: Arc::new(table),
        });
        req
    }

    fn mirror(subset: &str, percent: f64) -> MirrorSpec {
        MirrorSpec {
            destination: dest("httpbin.default.svc.cluster.local", subset),
            percent,
        }
    }

    fn layer(seed: u64) -> MirrorLayer {
        MirrorLayer::new(Arc::new(SplitMix::seeded(seed)))
    }

    /// What the fake inner service saw of one request.
    #[derive(Debug)]
    struct Seen {
        mirrored: bool,
        subset: Option<Arc<str>>,
        retries: Option<u32>,
        method: Method,
        uri: Uri,
        host: Option<HeaderValue>,
        test_header: Option<HeaderValue>,
        body: Result<Bytes, String>,
        trailers: Option<HeaderMap>,
    }

    fn subset_of(req: &Request<Body>) -> Option<Arc<str>> {
        route_decision(req.extensions())
            .and_then(|d| d.forward())
            .and_then(|f| f.destination.subset.clone())
    }

    /// An inner service that reads each request whole, reports it, and
    /// answers with the subset it was sent to.
    fn recorder(
        tx: mpsc::UnboundedSender<Seen>,
    ) -> impl tower::Service<
        Request<Body>,
        Response = Response<Body>,
        Error = Infallible,
        Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
    > + Clone
    + Send
    + 'static {
        service_fn(move |req: Request<Body>| {
            let tx = tx.clone();
            async move {
                let decision = route_decision(req.extensions()).cloned();
                let subset = subset_of(&req);
                let (parts, body) = req.into_parts();
                let (body, trailers) = match body.collect().await {
                    Ok(c) => {
                        let trailers = c.trailers().cloned();
                        (Ok(c.to_bytes()), trailers)
                    }
                    Err(e) => (Err(e.to_string()), None),
                };
                let answer = subset.as_deref().unwrap_or("none").to_owned();
                let _ = tx.send(Seen {
                    mirrored: parts.extensions.get::<MirroredRequest>().is_some(),
                    subset,
                    retries: decision.and_then(|d| d.policy.retries.as_ref().map(|r| r.attempts)),
                    method: parts.method,
                    uri: parts.uri,
                    host: parts.headers.get(HOST).cloned(),
                    test_header: parts.headers.get("x-test").cloned(),
                    body,
                    trailers,
                });
                Ok::<_, Infallible>(Response::new(full(answer)))
            }
        })
    }

    async fn body_text(resp: Response<Body>) -> String {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn mirror_gets_a_shadow_host_copy_with_the_same_body() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut svc = layer(1).layer(recorder(tx));
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let body = chunks(&[b"hello ", b"mirrored ", b"world"], Some(trailers.clone()));
        let req = routed(body, vec![mirror("v2", 100.0)]);
        let resp = svc.ready().await.unwrap().call(req).await.unwrap();
        assert_eq!(body_text(resp).await, "v1", "the caller sees the primary");

        let mut seen = Vec::new();
        for _ in 0..2 {
            seen.push(rx.recv().await.unwrap());
        }
        seen.sort_by_key(|s| s.mirrored);
        let (primary, copy) = (&seen[0], &seen[1]);
        assert!(!primary.mirrored && copy.mirrored);
        assert_eq!(primary.subset.as_deref(), Some("v1"));
        assert_eq!(primary.host.as_ref().unwrap(), "httpbin:8000");
        assert_eq!(copy.subset.as_deref(), Some("v2"));
        assert_eq!(copy.host.as_ref().unwrap(), "httpbin-shadow:8000");
        assert_eq!(copy.retries, Some(0), "a mirror is never retried");
        assert_eq!(copy.method, Method::POST);
        assert_eq!(copy.uri, primary.uri);
        assert_eq!(copy.test_header.as_ref().unwrap(), "yes");
        assert_eq!(primary.body.as_ref().unwrap(), "hello mirrored world");
        assert_eq!(copy.body, primary.body);
        assert_eq!(copy.trailers.as_ref(), Some(&trailers));
        assert_eq!(primary.trailers.as_ref(), Some(&trailers));
    }

    #[tokio::test(start_paused = true)]
    async fn unchanged_host_and_bodyless_requests() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut svc = layer(1)
            .shadow_host(ShadowHost::Unchanged)
            .layer(recorder(tx));
        let mut req = routed(empty(), vec![mirror("v2", 100.0)]);
        *req.method_mut() = Method::GET;
        let resp = svc.ready().await.unwrap().call(req).await.unwrap();
        assert_eq!(body_text(resp).await, "v1");
        let (a, b) = (rx.recv().await.unwrap(), rx.recv().await.unwrap());
        let copy = if a.mirrored { a } else { b };
        assert_eq!(copy.host.as_ref().unwrap(), "httpbin:8000");
        assert_eq!(copy.method, Method::GET);
        assert_eq!(copy.body.as_ref().unwrap(), "");
    }

    #[test]
    fn shadow_suffix_goes_before_the_port() {
        assert_eq!(shadow_authority("httpbin:8000"), "httpbin-shadow:8000");
        assert_eq!(shadow_authority("cluster-1"), "cluster-1-shadow");
        assert_eq!(
            shadow_authority("api.default.svc.cluster.local"),
            "api.default.svc.cluster.local-shadow"
        );
        assert_eq!(shadow_authority("[::1]:80"), "[::1]-shadow:80");
        assert_eq!(shadow_authority("[::1]"), "[::1]-shadow");

        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_static("web:80"));
        let mut uri: Uri = "http://web:80/path?x=1".parse().unwrap();
        shadow_request_host(&mut headers, &mut uri);
        assert_eq!(headers[HOST], "web-shadow:80");
        assert_eq!(uri, "http://web-shadow:80/path?x=1");
    }

    /// An inner service that counts mirrored requests per subset and
    /// answers at once.
    fn counter(
        counts: Arc<[AtomicU64; 3]>,
    ) -> impl tower::Service<
        Request<Body>,
        Response = Response<Body>,
        Error = Infallible,
        Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
    > + Clone
    + Send
    + 'static {
        service_fn(move |req: Request<Body>| {
            if req.extensions().get::<MirroredRequest>().is_some() {
                let i = match subset_of(&req).as_deref() {
                    Some("v2") => 0,
                    Some("v3") => 1,
                    _ => 2,
                };
                counts[i].fetch_add(1, Ordering::Relaxed);
            }
            std::future::ready(Ok::<_, Infallible>(Response::new(empty())))
        })
    }

    /// Sends `n` body-less requests with `mirrors` (the last one being a
    /// 100% control mirror to v9), waits until every control copy arrived
    /// (copies run in spawn order, so every earlier copy has run too), and
    /// returns the copies per subset (v2, v3).
    async fn mirrored_counts(seed: u64, n: u64, mirrors: Vec<MirrorSpec>) -> (u64, u64) {
        let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
        let mut svc = layer(seed).layer(counter(Arc::clone(&counts)));
        for _ in 0..n {
            let mut mirrors = mirrors.clone();
            mirrors.push(mirror("v9", 100.0));
            let req = routed(empty(), mirrors);
            svc.ready().await.unwrap().call(req).await.unwrap();
        }
        // Bounded by rounds, not time: paused time does not move here.
        let mut rounds = 0;
        while counts[2].load(Ordering::Relaxed) < n {
            rounds += 1;
            assert!(rounds < 100_000, "copies never ran");
            tokio::task::yield_now().await;
        }
        (
            counts[0].load(Ordering::Relaxed),
            counts[1].load(Ordering::Relaxed),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn zero_percent_never_and_hundred_always() {
        let (v2, v3) = mirrored_counts(3, 1000, vec![mirror("v2", 0.0), mirror("v3", 100.0)]).await;
        assert_eq!((v2, v3), (0, 1000));
    }

    #[tokio::test(start_paused = true)]
    async fn seeded_half_mirrors_within_five_sigma() {
        let n = 10_000u64;
        let (v2, _) = mirrored_counts(42, n, vec![mirror("v2", 50.0)]).await;
        let p = 0.5;
        let sigma = (n as f64 * p * (1.0 - p)).sqrt();
        let off = (v2 as f64 - n as f64 * p).abs();
        assert!(off < 5.0 * sigma, "{v2} of {n} mirrored, sigma {sigma}");
    }

    #[tokio::test(start_paused = true)]
    async fn no_mirrors_passes_the_request_through() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut svc = layer(1).layer(recorder(tx));
        let req = routed(chunks(&[b"abc"], None), Vec::new());
        let resp = svc.ready().await.unwrap().call(req).await.unwrap();
        assert_eq!(body_text(resp).await, "v1");
        let seen = rx.recv().await.unwrap();
        assert!(!seen.mirrored);
        assert_eq!(seen.body.unwrap(), "abc");
        // Nothing else was sent: the only sender left is inside `svc`.
        drop(svc);
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_mirror_that_never_answers_does_not_delay_the_primary() {
        let (started_tx, started_rx) = mpsc::unbounded_channel::<oneshot::Sender<()>>();
        let inner = service_fn(move |req: Request<Body>| {
            let started = started_tx.clone();
            async move {
                if req.extensions().get::<MirroredRequest>().is_some() {
                    // Hold a sender until this future is dropped.
                    let (alive, _gone) = oneshot::channel::<()>();
                    let _ = started.send(alive);
                    std::future::pending::<()>().await;
                }
                Ok::<_, Infallible>(Response::new(full("primary")))
            }
        });
        let max = Duration::from_secs(30);
        let mut svc = layer(1).max_duration(max).layer(inner);
        let start = tokio::time::Instant::now();
        let req = routed(empty(), vec![mirror("v2", 100.0)]);
        // Under paused time a pending primary would let the clock jump to
        // this timeout; answering first proves nothing waited on the mirror.
        let resp = tokio::time::timeout(Duration::from_millis(1), async {
            svc.ready().await.unwrap().call(req).await.unwrap()
        })
        .await
        .expect("the primary must not wait for the mirror");
        assert_eq!(body_text(resp).await, "primary");
        assert_eq!(tokio::time::Instant::now(), start);

        // The stuck copy is dropped at the layer's time limit.
        let mut started_rx = started_rx;
        let mut alive = started_rx.recv().await.unwrap();
        alive.closed().await;
        assert!(tokio::time::Instant::now() - start >= max);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_mirror_does_not_affect_the_primary() {
        let inner = service_fn(|req: Request<Body>| async move {
            if req.extensions().get::<MirroredRequest>().is_some() {
                return Err::<Response<Body>, BoxError>("mirror exploded".into());
            }
            let body = req.into_body().collect().await?.to_bytes();
            Ok(Response::new(full(body)))
        });
        let mut svc = layer(1).layer(inner);
        for _ in 0..10 {
            let req = routed(chunks(&[b"a", b"b"], None), vec![mirror("v2", 100.0)]);
            let resp = svc.ready().await.unwrap().call(req).await.unwrap();
            assert_eq!(resp.status(), http::StatusCode::OK);
            assert_eq!(body_text(resp).await, "ab");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_mirror_reader_does_not_slow_the_primary_body() {
        const CHUNK: usize = 16 * 1024;
        const TOTAL: usize = 4 * 1024 * 1024;
        let (release_tx, release_rx) = oneshot::channel::<()>();
        let release = Arc::new(tokio::sync::Mutex::new(Some(release_rx)));
        let (mirror_tx, mut mirror_rx) = mpsc::unbounded_channel::<(usize, bool)>();
        let inner = service_fn(move |req: Request<Body>| {
            let release = Arc::clone(&release);
            let mirror_tx = mirror_tx.clone();
            async move {
                let mirrored = req.extensions().get::<MirroredRequest>().is_some();
                let mut body = req.into_body();
                if mirrored {
                    // Stalled until the primary is done.
                    if let Some(rx) = release.lock().await.take() {
                        let _ = rx.await;
                    }
                }
                let mut read = 0usize;
                let mut failed = false;
                while let Some(frame) = body.frame().await {
                    match frame {
                        Ok(f) => read += f.data_ref().map_or(0, Bytes::len),
                        Err(e) => {
                            assert!(e.is::<MirrorAbandoned>(), "{e}");
                            failed = true;
                            break;
                        }
                    }
                }
                if mirrored {
                    let _ = mirror_tx.send((read, failed));
                }
                Ok::<_, Infallible>(Response::new(full(read.to_string())))
            }
        });
        let mut svc = layer(1).layer(inner);
        let chunk = Bytes::from(vec![7u8; CHUNK]);
        let frames = (0..TOTAL / CHUNK)
            .map(|_| Frame::data(chunk.clone()))
            .collect();
        let req = routed(boxed(Frames(frames)), vec![mirror("v2", 100.0)]);
        let start = tokio::time::Instant::now();
        let resp = tokio::time::timeout(Duration::from_millis(1), async {
            svc.ready().await.unwrap().call(req).await.unwrap()
        })
        .await
        .expect("the primary must not wait for the mirror reader");
        assert_eq!(body_text(resp).await, TOTAL.to_string());
        assert_eq!(tokio::time::Instant::now(), start);

        release_tx.send(()).unwrap();
        let (read, failed) = mirror_rx.recv().await.unwrap();
        assert!(failed, "the abandoned copy must end with an error");
        assert!(
            read <= DEFAULT_BUFFER_BYTES + CHUNK,
            "at most the buffer was held for the mirror: {read}"
        );
    }
}
