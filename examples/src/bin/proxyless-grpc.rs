//! Proxyless gRPC: a tonic client whose transport is `mesh::Client`.
//!
//! Starts two `greeter` gRPC servers (v1, v2) on 127.0.0.1, writes a
//! ServiceEntry (`protocol: GRPC`, so the mesh speaks HTTP/2 upstream), a
//! DestinationRule and a VirtualService (requests with the metadata
//! `x-user: beta` go to v2, the rest to v1) to a temporary folder, builds a
//! `mesh::Client` and makes unary and server-streaming calls through it.
//!
//! The service and its client are written by hand in the shape tonic's
//! code generator produces, so the example needs no `protoc`:
//!
//! ```text
//! package example;
//! service Greeter {
//!   rpc SayHello(HelloRequest) returns (HelloReply);
//!   rpc Countdown(HelloRequest) returns (stream HelloReply);
//! }
//! ```
//!
//! ```text
//! cargo run -p mesh-examples --bin proxyless-grpc
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::uri::PathAndQuery;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use mesh_route::random::SplitMix;
use tokio_stream::Stream;
use tonic::body::Body as GrpcBody;
use tonic::server::{ServerStreamingService, UnaryService};
use tonic::{GrpcMethod, Status};
use tonic_prost::ProstCodec;

type Error = Box<dyn std::error::Error + Send + Sync>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
type ReplyStream = Pin<Box<dyn Stream<Item = Result<HelloReply, Status>> + Send + 'static>>;

/// `message HelloRequest { string name = 1; uint32 count = 2; }`
#[derive(Clone, PartialEq, prost::Message)]
struct HelloRequest {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(uint32, tag = "2")]
    count: u32,
}

/// `message HelloReply { string message = 1; string served_by = 2; }`
#[derive(Clone, PartialEq, prost::Message)]
struct HelloReply {
    #[prost(string, tag = "1")]
    message: String,
    #[prost(string, tag = "2")]
    served_by: String,
}

// ----------------------------------------------------------------- client

/// The client stub, over any transport tonic accepts (here `mesh::Client`).
struct GreeterClient {
    inner: tonic::client::Grpc<mesh::Client>,
}

impl GreeterClient {
    fn new(transport: mesh::Client, origin: http::Uri) -> Self {
        GreeterClient {
            inner: tonic::client::Grpc::with_origin(transport, origin),
        }
    }

    async fn say_hello(
        &mut self,
        request: tonic::Request<HelloRequest>,
    ) -> Result<tonic::Response<HelloReply>, Status> {
        self.inner
            .ready()
            .await
            .map_err(|e| Status::unknown(e.to_string()))?;
        let mut request = request;
        request
            .extensions_mut()
            .insert(GrpcMethod::new("example.Greeter", "SayHello"));
        self.inner
            .unary(
                request,
                PathAndQuery::from_static("/example.Greeter/SayHello"),
                ProstCodec::<HelloRequest, HelloReply>::default(),
            )
            .await
    }

    async fn countdown(
        &mut self,
        request: tonic::Request<HelloRequest>,
    ) -> Result<tonic::Response<tonic::Streaming<HelloReply>>, Status> {
        self.inner
            .ready()
            .await
            .map_err(|e| Status::unknown(e.to_string()))?;
        let mut request = request;
        request
            .extensions_mut()
            .insert(GrpcMethod::new("example.Greeter", "Countdown"));
        self.inner
            .server_streaming(
                request,
                PathAndQuery::from_static("/example.Greeter/Countdown"),
                ProstCodec::<HelloRequest, HelloReply>::default(),
            )
            .await
    }
}

// ----------------------------------------------------------------- server

struct SayHello(Arc<str>);

impl UnaryService<HelloRequest> for SayHello {
    type Response = HelloReply;
    type Future = BoxFuture<Result<tonic::Response<HelloReply>, Status>>;

    fn call(&mut self, request: tonic::Request<HelloRequest>) -> Self::Future {
        let name = Arc::clone(&self.0);
        Box::pin(async move {
            let who = request.into_inner().name;
            if who.is_empty() {
                return Err(Status::invalid_argument("name is required"));
            }
            Ok(tonic::Response::new(HelloReply {
                message: format!("hello, {who}"),
                served_by: name.to_string(),
            }))
        })
    }
}

struct Countdown(Arc<str>);

impl ServerStreamingService<HelloRequest> for Countdown {
    type Response = HelloReply;
    type ResponseStream = ReplyStream;
    type Future = BoxFuture<Result<tonic::Response<ReplyStream>, Status>>;

    fn call(&mut self, request: tonic::Request<HelloRequest>) -> Self::Future {
        let name = Arc::clone(&self.0);
        Box::pin(async move {
            let request = request.into_inner();
            let replies: Vec<Result<HelloReply, Status>> = (1..=request.count)
                .rev()
                .map(|n| {
                    Ok(HelloReply {
                        message: format!("{n}, {}", request.name),
                        served_by: name.to_string(),
                    })
                })
                .collect();
            let stream: ReplyStream = Box::pin(tokio_stream::iter(replies));
            Ok(tonic::Response::new(stream))
        })
    }
}

/// The server: routes by path as generated servers do.
#[derive(Clone)]
struct GreeterServer(Arc<str>);

impl tower::Service<http::Request<Incoming>> for GreeterServer {
    type Response = http::Response<GrpcBody>;
    type Error = Infallible;
    type Future = BoxFuture<Result<http::Response<GrpcBody>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Incoming>) -> Self::Future {
        let name = Arc::clone(&self.0);
        Box::pin(async move {
            let mut grpc =
                tonic::server::Grpc::new(ProstCodec::<HelloReply, HelloRequest>::default());
            Ok(match req.uri().path() {
                "/example.Greeter/SayHello" => grpc.unary(SayHello(name), req).await,
                "/example.Greeter/Countdown" => grpc.server_streaming(Countdown(name), req).await,
                _ => Status::unimplemented("no such method").into_http(),
            })
        })
    }
}

async fn greeter(name: &str) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = GreeterServer(name.into());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let svc = TowerToHyperService::new(server.clone());
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn config(v1: SocketAddr, v2: SocketAddr) -> String {
    format!(
        "apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: greeter
spec:
  hosts: [greeter]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{ number: 50051, name: grpc, protocol: GRPC }}
  endpoints:
  - {{ address: 127.0.0.1, ports: {{ grpc: {} }}, labels: {{ version: v1 }} }}
  - {{ address: 127.0.0.1, ports: {{ grpc: {} }}, labels: {{ version: v2 }} }}
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: greeter
spec:
  host: greeter
  subsets:
  - {{ name: v1, labels: {{ version: v1 }} }}
  - {{ name: v2, labels: {{ version: v2 }} }}
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: greeter
spec:
  hosts: [greeter]
  http:
  - match: [ {{ headers: {{ x-user: {{ exact: beta }} }} }} ]
    route: [ {{ destination: {{ host: greeter, subset: v2 }} }} ]
  - route: [ {{ destination: {{ host: greeter, subset: v1 }} }} ]
",
        v1.port(),
        v2.port()
    )
}

fn hello(name: &str, count: u32, beta: bool) -> tonic::Request<HelloRequest> {
    let mut req = tonic::Request::new(HelloRequest {
        name: name.to_owned(),
        count,
    });
    if beta {
        req.metadata_mut().insert(
            "x-user",
            tonic::metadata::MetadataValue::from_static("beta"),
        );
    }
    req
}

fn expect(what: &str, got: &str, want: &str) -> Result<(), Error> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: expected {want}, got {got}").into())
    }
}

async fn run() -> Result<(), Error> {
    let v1 = greeter("greeter-v1").await?;
    let v2 = greeter("greeter-v2").await?;
    println!("backends: greeter-v1 on {v1}, greeter-v2 on {v2}");
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("greeter.yaml"), config(v1, v2))?;

    let transport = mesh::Client::builder()
        .config([dir.path()])
        .random(Arc::new(SplitMix::seeded(7)))
        .watch(false)
        .build()
        .await?;
    let mut client = GreeterClient::new(transport, "http://greeter:50051".parse()?);

    let reply = client.say_hello(hello("ada", 0, false)).await?.into_inner();
    println!("SayHello(ada) -> {} ({:?})", reply.served_by, reply.message);
    expect("SayHello", &reply.served_by, "greeter-v1")?;

    let reply = client
        .say_hello(hello("grace", 0, true))
        .await?
        .into_inner();
    println!(
        "SayHello(grace, x-user: beta) -> {} ({:?})",
        reply.served_by, reply.message
    );
    expect("SayHello beta", &reply.served_by, "greeter-v2")?;

    let mut stream = client
        .countdown(hello("linus", 3, true))
        .await?
        .into_inner();
    let mut received = 0;
    while let Some(reply) = stream.message().await? {
        println!(
            "Countdown(linus) <- {} ({:?})",
            reply.served_by, reply.message
        );
        expect("Countdown", &reply.served_by, "greeter-v2")?;
        received += 1;
    }
    println!("Countdown(linus) streamed {received} messages");
    if received != 3 {
        return Err(format!("expected 3 streamed messages, got {received}").into());
    }

    let status = match client.say_hello(hello("", 0, false)).await {
        Ok(_) => return Err("an empty name was accepted".into()),
        Err(status) => status,
    };
    println!(
        "SayHello(\"\") -> {:?}: {}",
        status.code(),
        status.message()
    );
    if status.code() != tonic::Code::InvalidArgument {
        return Err(format!("expected INVALID_ARGUMENT, got {status}").into());
    }
    println!("proxyless-grpc: ok");
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("proxyless-grpc: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
