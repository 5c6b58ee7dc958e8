//! A small gRPC service shared by the gRPC tests, written by hand in the
//! shape tonic's code generator gives (so no `protoc` is needed):
//!
//! ```text
//! package mesh.test;
//! service Echo {
//!   rpc Unary(EchoRequest) returns (EchoReply);
//!   rpc ServerStream(EchoRequest) returns (stream EchoReply);
//! }
//! ```
//!
//! The server answers with its own name in every reply, adds the trailer
//! `x-echo-trailer: <server name>` to every successful response, answers
//! `Unary` for the message `missing` with NOT_FOUND, and ends a stream whose
//! `fail_after` is set with FAILED_PRECONDITION after that many messages.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderValue;
use http::uri::PathAndQuery;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio_stream::Stream;
use tonic::body::Body as GrpcBody;
use tonic::client::GrpcService;
use tonic::server::{ServerStreamingService, UnaryService};
use tonic::{GrpcMethod, IntoRequest, Status};
use tonic_prost::ProstCodec;

/// The fully qualified service name.
pub const SERVICE: &str = "mesh.test.Echo";
/// The trailer the server adds to every successful response.
pub const TRAILER: &str = "x-echo-trailer";

/// The request of both methods.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {
    /// Text to echo.
    #[prost(string, tag = "1")]
    pub message: String,
    /// How many replies a stream sends.
    #[prost(uint32, tag = "2")]
    pub count: u32,
    /// When non-zero, the stream fails after this many replies.
    #[prost(uint32, tag = "3")]
    pub fail_after: u32,
}

/// One reply.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoReply {
    /// The request's text.
    #[prost(string, tag = "1")]
    pub message: String,
    /// Position in the stream (0 for unary).
    #[prost(uint32, tag = "2")]
    pub index: u32,
    /// The server that answered.
    #[prost(string, tag = "3")]
    pub served_by: String,
}

// ---------------------------------------------------------------- client

/// The client stub, over any transport tonic accepts.
#[derive(Clone)]
pub struct EchoClient<T> {
    inner: tonic::client::Grpc<T>,
}

impl<T> EchoClient<T>
where
    T: GrpcService<GrpcBody>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: http_body::Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    /// A client sending to `origin` (`http://echo:50051`) over `transport`.
    pub fn with_origin(transport: T, origin: http::Uri) -> Self {
        EchoClient {
            inner: tonic::client::Grpc::with_origin(transport, origin),
        }
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.inner
            .ready()
            .await
            .map_err(|e| Status::unknown(format!("transport not ready: {}", e.into())))
    }

    /// `rpc Unary`.
    pub async fn unary(
        &mut self,
        request: impl IntoRequest<EchoRequest>,
    ) -> Result<tonic::Response<EchoReply>, Status> {
        self.ready().await?;
        let mut request = request.into_request();
        request
            .extensions_mut()
            .insert(GrpcMethod::new(SERVICE, "Unary"));
        let path = PathAndQuery::from_static("/mesh.test.Echo/Unary");
        self.inner
            .unary(
                request,
                path,
                ProstCodec::<EchoRequest, EchoReply>::default(),
            )
            .await
    }

    /// `rpc ServerStream`.
    pub async fn server_stream(
        &mut self,
        request: impl IntoRequest<EchoRequest>,
    ) -> Result<tonic::Response<tonic::Streaming<EchoReply>>, Status> {
        self.ready().await?;
        let mut request = request.into_request();
        request
            .extensions_mut()
            .insert(GrpcMethod::new(SERVICE, "ServerStream"));
        let path = PathAndQuery::from_static("/mesh.test.Echo/ServerStream");
        self.inner
            .server_streaming(
                request,
                path,
                ProstCodec::<EchoRequest, EchoReply>::default(),
            )
            .await
    }
}

// ---------------------------------------------------------------- server

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send + 'static>>;

struct UnaryHandler(Arc<str>);

impl UnaryService<EchoRequest> for UnaryHandler {
    type Response = EchoReply;
    type Future = BoxFuture<Result<tonic::Response<EchoReply>, Status>>;

    fn call(&mut self, request: tonic::Request<EchoRequest>) -> Self::Future {
        let name = Arc::clone(&self.0);
        Box::pin(async move {
            let request = request.into_inner();
            if request.message == "missing" {
                return Err(Status::not_found(format!(
                    "no such key: {}",
                    request.message
                )));
            }
            Ok(tonic::Response::new(EchoReply {
                message: request.message,
                index: 0,
                served_by: name.to_string(),
            }))
        })
    }
}

struct StreamHandler(Arc<str>);

impl ServerStreamingService<EchoRequest> for StreamHandler {
    type Response = EchoReply;
    type ResponseStream = ReplyStream;
    type Future = BoxFuture<Result<tonic::Response<ReplyStream>, Status>>;

    fn call(&mut self, request: tonic::Request<EchoRequest>) -> Self::Future {
        let name = Arc::clone(&self.0);
        Box::pin(async move {
            let request = request.into_inner();
            let fail_after = (request.fail_after > 0).then_some(request.fail_after);
            let sent = request.count.min(fail_after.unwrap_or(u32::MAX));
            let mut items: Vec<Result<EchoReply, Status>> = (0..sent)
                .map(|index| {
                    Ok(EchoReply {
                        message: request.message.clone(),
                        index,
                        served_by: name.to_string(),
                    })
                })
                .collect();
            if let Some(n) = fail_after {
                items.push(Err(Status::failed_precondition(format!(
                    "stream stopped after {n}"
                ))));
            }
            let stream: ReplyStream = Box::pin(tokio_stream::iter(items));
            Ok(tonic::Response::new(stream))
        })
    }
}

/// The server as a tower service over hyper's request bodies: routes by
/// path, as generated servers do, and adds [`TRAILER`] to the trailers of
/// every response that has them.
#[derive(Clone)]
pub struct EchoServer {
    name: Arc<str>,
}

impl EchoServer {
    /// A server answering as `name`.
    pub fn new(name: &str) -> Self {
        EchoServer { name: name.into() }
    }
}

impl tower::Service<http::Request<Incoming>> for EchoServer {
    type Response = http::Response<GrpcBody>;
    type Error = Infallible;
    type Future = BoxFuture<Result<http::Response<GrpcBody>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Incoming>) -> Self::Future {
        let name = Arc::clone(&self.name);
        Box::pin(async move {
            let mut grpc =
                tonic::server::Grpc::new(ProstCodec::<EchoReply, EchoRequest>::default());
            // The mesh must speak HTTP/2 upstream for a `protocol: GRPC`
            // port; refuse anything else so a test notices.
            if req.version() != http::Version::HTTP_2 {
                return Ok(Status::failed_precondition("gRPC needs HTTP/2").into_http());
            }
            let resp = match req.uri().path() {
                "/mesh.test.Echo/Unary" => grpc.unary(UnaryHandler(Arc::clone(&name)), req).await,
                "/mesh.test.Echo/ServerStream" => {
                    grpc.server_streaming(StreamHandler(Arc::clone(&name)), req)
                        .await
                }
                _ => Status::unimplemented("no such method").into_http(),
            };
            let trailer = HeaderValue::from_str(&name).unwrap();
            Ok(resp.map(|body| {
                GrpcBody::new(body.map_frame(move |frame| match frame.into_trailers() {
                    Ok(mut trailers) => {
                        trailers.insert(TRAILER, trailer.clone());
                        http_body::Frame::trailers(trailers)
                    }
                    Err(frame) => frame,
                }))
            }))
        })
    }
}

/// Serves an [`EchoServer`] named `name` on 127.0.0.1:0 (HTTP/2 with prior
/// knowledge, and HTTP/1.1 which gRPC clients never use); returns the bound
/// address. The server runs until the runtime ends.
pub async fn spawn_echo_server(name: &str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = EchoServer::new(name);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let svc = TowerToHyperService::new(server.clone());
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// A ServiceEntry for host `host` on port `port` (`protocol: GRPC`), with
/// one endpoint per backend address.
pub fn service_entry(host: &str, port: u16, backends: &[SocketAddr]) -> String {
    let mut yaml = format!(
        "apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: {host}
spec:
  hosts: [{host}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{ number: {port}, name: grpc, protocol: GRPC }}
  endpoints:
"
    );
    for b in backends {
        yaml.push_str(&format!(
            "  - {{ address: 127.0.0.1, ports: {{ grpc: {} }} }}\n",
            b.port()
        ));
    }
    yaml
}
