//! What every layer shares on the request path: the boxed body type, local
//! replies, and the failures a caller can see (SPEC 2) with their status and
//! Envoy-style response flag.
//!
//! One place maps a failure to a response, so the same failure looks the same
//! whichever layer produced it, in the sidecar and in-process alike.

use std::fmt;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, combinators::UnsyncBoxBody};

/// The error type bodies and services use.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The body type of the mesh's stacks: any body, boxed at stage boundaries.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Boxes any body whose error converts to [`BoxError`].
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// The downstream peer's address, which listeners put in every request's
/// extensions (consistent hashing on `useSourceIp` reads it; authorization
/// will too). In-process callers have none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer(pub std::net::SocketAddr);

/// Marks a response the mesh answered itself because a request could not be
/// served (every [`MeshError`] reply carries it), so a layer above can tell
/// a local failure (a refused connection, a reset, no healthy endpoint) from
/// an upstream application's own response with the same status, which may
/// even carry a further hop's `x-mesh-response-flags`. The retry layer
/// reads it: `connect-failure` matches only [`FailureKind::Connect`], and
/// bare status codes in `retryOn` match only responses without it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalFailure(pub FailureKind);

/// What kind of local failure a [`LocalFailure`] reply stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// Connecting to the endpoint failed or timed out (UF); no request byte
    /// reached the upstream.
    Connect,
    /// The connection or stream was reset or closed mid-request (UC).
    Reset,
    /// The HTTP/2 stream was refused (`REFUSED_STREAM`): the upstream did
    /// not process it.
    RefusedStream,
    /// A timeout expired (UT).
    Timeout,
    /// A connection-pool limit was hit (UO); never retried.
    Overflow,
    /// No endpoint could take the request (UH, NC).
    NoHealthyUpstream,
    /// Anything else the mesh answered itself (NR, 400, RL, ...).
    Other,
}

/// The response header that carries the response flags of a reply the mesh
/// produced or shaped (also in the access log and the `response_flags`
/// metric label).
pub const RESPONSE_FLAGS_HEADER: &str = "x-mesh-response-flags";

/// The failures a caller can see (SPEC 2), each with its status and flag.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MeshError {
    /// The host has routes but none matched (404 NR).
    #[error("no route matched")]
    NoRoute,
    /// The route names a subset or service that does not exist (503 NC).
    #[error("no cluster for {0}")]
    NoCluster(String),
    /// The destination has no endpoint that can take the request (503 UH).
    #[error("no healthy upstream for {0}")]
    NoHealthyUpstream(String),
    /// A connection-pool limit was hit (503 UO).
    #[error("upstream overflow")]
    Overflow,
    /// Connecting to the endpoint failed (503 UF).
    #[error("upstream connect error: {0}")]
    ConnectFailure(String),
    /// The upstream reset or closed the connection mid-request (503 UC).
    #[error("upstream connection terminated: {0}")]
    UpstreamReset(String),
    /// The route or final per-try timeout expired (504 UT).
    #[error("upstream request timeout")]
    Timeout,
    /// The request could not be read or is malformed (400).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A local rate limit refused the request (429 RL); the text names the
    /// limit that was hit.
    #[error("local rate limit exceeded: {0}")]
    RateLimited(&'static str),
    /// The host is not in the service registry and meshConfig
    /// `outboundTrafficPolicy.mode` is `REGISTRY_ONLY` (SPEC 2, 6.2: 502).
    /// SPEC 2 gives no flag; Istio answers with a direct response on its
    /// `block_all` route (the HTTP side of the BlackHoleCluster), which
    /// Envoy logs without a flag, so the flag is `-`.
    #[error(
        "BlackHoleCluster: {0} is not in the service registry (outboundTrafficPolicy REGISTRY_ONLY)"
    )]
    Unregistered(String),
    /// The request would be sent back into this proxy's own listener (a
    /// passthrough to the proxy's address), which would repeat forever:
    /// 508 Loop Detected, refused instead, as Envoy's blackhole for its own
    /// outbound port does.
    #[error("request to {0} would loop back into this proxy")]
    Loop(String),
}

impl MeshError {
    /// The status the caller sees.
    pub fn status(&self) -> StatusCode {
        match self {
            MeshError::NoRoute => StatusCode::NOT_FOUND,
            MeshError::NoCluster(_)
            | MeshError::NoHealthyUpstream(_)
            | MeshError::Overflow
            | MeshError::ConnectFailure(_)
            | MeshError::UpstreamReset(_) => StatusCode::SERVICE_UNAVAILABLE,
            MeshError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            MeshError::BadRequest(_) => StatusCode::BAD_REQUEST,
            MeshError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            MeshError::Unregistered(_) => StatusCode::BAD_GATEWAY,
            MeshError::Loop(_) => StatusCode::LOOP_DETECTED,
        }
    }

    /// The Envoy response flag (`-` when none applies).
    pub fn flag(&self) -> &'static str {
        match self {
            MeshError::NoRoute => "NR",
            MeshError::NoCluster(_) => "NC",
            MeshError::NoHealthyUpstream(_) => "UH",
            MeshError::Overflow => "UO",
            MeshError::ConnectFailure(_) => "UF",
            MeshError::UpstreamReset(_) => "UC",
            MeshError::Timeout => "UT",
            MeshError::BadRequest(_) => "DPE",
            MeshError::RateLimited(_) => "RL",
            MeshError::Unregistered(_) | MeshError::Loop(_) => "-",
        }
    }

    /// The kind of local failure this is, for the [`LocalFailure`] marker
    /// of its reply.
    pub fn failure_kind(&self) -> FailureKind {
        match self {
            MeshError::ConnectFailure(_) => FailureKind::Connect,
            MeshError::UpstreamReset(_) => FailureKind::Reset,
            MeshError::Timeout => FailureKind::Timeout,
            MeshError::Overflow => FailureKind::Overflow,
            MeshError::NoHealthyUpstream(_) | MeshError::NoCluster(_) => {
                FailureKind::NoHealthyUpstream
            }
            _ => FailureKind::Other,
        }
    }

    /// Whether the request never reached the upstream application, so that
    /// sending it again cannot repeat a side effect.
    pub fn is_retry_safe(&self) -> bool {
        matches!(
            self,
            MeshError::NoHealthyUpstream(_) | MeshError::ConnectFailure(_)
        )
    }

    /// The local reply for this failure to a request with these headers:
    /// gRPC callers get a gRPC status (SPEC 2, last row), others HTTP.
    pub fn reply_to(&self, request_headers: &http::HeaderMap) -> Response<Body> {
        if is_grpc(request_headers) {
            self.to_grpc_response()
        } else {
            self.to_response()
        }
    }

    /// The gRPC status code a gRPC caller sees for this failure: 503 is
    /// UNAVAILABLE, 504 DEADLINE_EXCEEDED, 404 NOT_FOUND, 400 INTERNAL,
    /// 429 RESOURCE_EXHAUSTED.
    pub fn grpc_status(&self) -> u8 {
        match self.status().as_u16() {
            404 => 5,
            504 => 4,
            403 => 7,
            400 => 13,
            429 => 8,
            _ => 14,
        }
    }

    /// A trailers-only gRPC reply: HTTP 200 with `grpc-status` and
    /// `grpc-message` in the headers, as gRPC proxies answer.
    pub fn to_grpc_response(&self) -> Response<Body> {
        let mut resp = Response::new(empty());
        let headers = resp.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(
            "grpc-status",
            HeaderValue::from(u16::from(self.grpc_status())),
        );
        if let Ok(v) = HeaderValue::from_str(&percent_encode_grpc(&self.to_string())) {
            headers.insert("grpc-message", v);
        }
        if let Ok(v) = HeaderValue::from_str(self.flag()) {
            headers.insert(RESPONSE_FLAGS_HEADER, v);
        }
        resp.extensions_mut()
            .insert(LocalFailure(self.failure_kind()));
        resp
    }

    /// The local reply for this failure.
    pub fn to_response(&self) -> Response<Body> {
        let mut resp = local_reply(self.status(), self.flag(), self.to_string());
        resp.extensions_mut()
            .insert(LocalFailure(self.failure_kind()));
        if matches!(self, MeshError::Overflow) {
            resp.headers_mut()
                .insert("x-envoy-overloaded", HeaderValue::from_static("true"));
        }
        resp
    }
}

/// Whether a request is gRPC (`content-type: application/grpc...`).
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2, "Responses").
fn percent_encode_grpc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A reply the mesh answers itself: status, flag header, a short text body.
pub fn local_reply(status: StatusCode, flag: &str, text: impl fmt::Display) -> Response<Body> {
    let body = format!("{text}\n");
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    if let Ok(v) = HeaderValue::from_str(flag) {
        headers.insert(RESPONSE_FLAGS_HEADER, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_map_to_spec_statuses_and_flags() {
        let cases = [
            (MeshError::NoRoute, 404, "NR"),
            (MeshError::NoCluster("x".into()), 503, "NC"),
            (MeshError::NoHealthyUpstream("x".into()), 503, "UH"),
            (MeshError::Overflow, 503, "UO"),
            (MeshError::ConnectFailure("x".into()), 503, "UF"),
            (MeshError::Timeout, 504, "UT"),
            (MeshError::RateLimited("total"), 429, "RL"),
            (MeshError::Unregistered("x".into()), 502, "-"),
        ];
        for (e, status, flag) in cases {
            let r = e.to_response();
            assert_eq!(r.status().as_u16(), status, "{e}");
            assert_eq!(r.headers()[RESPONSE_FLAGS_HEADER], flag);
        }
        assert_eq!(
            MeshError::Overflow.to_response().headers()["x-envoy-overloaded"],
            "true"
        );
    }

    #[test]
    fn grpc_callers_get_grpc_statuses() {
        let mut req = http::HeaderMap::new();
        req.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        let r = MeshError::NoHealthyUpstream("echo".into()).reply_to(&req);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["grpc-status"], "14");
        assert_eq!(r.headers()["grpc-message"], "no healthy upstream for echo");
        assert_eq!(r.headers()[RESPONSE_FLAGS_HEADER], "UH");
        assert_eq!(
            MeshError::NoRoute.reply_to(&req).headers()["grpc-status"],
            "5"
        );
        assert_eq!(
            MeshError::Timeout.reply_to(&req).headers()["grpc-status"],
            "4"
        );
        let plain = MeshError::NoRoute.reply_to(&http::HeaderMap::new());
        assert_eq!(plain.status(), StatusCode::NOT_FOUND);
        assert_eq!(percent_encode_grpc("a%b é"), "a%25b %C3%A9");
    }
}
