//! A demo backend: answers every request with its name and what it saw, so
//! routing decisions are visible from the caller. Used by `scripts/run.sh`.
//!
//! ```text
//! backend --name reviews-v1 --listen 127.0.0.1:18081
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use clap::Parser;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// Arguments.
#[derive(Parser, Debug)]
struct Args {
    /// The name to answer with (`reviews-v1`).
    #[arg(long)]
    name: String,
    /// Where to listen.
    #[arg(long)]
    listen: SocketAddr,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("{} listening on {}", args.name, listener.local_addr()?);
    let name: &'static str = Box::leak(args.name.into_boxed_str());
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                let host = req
                    .headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .or_else(|| req.uri().authority().map(|a| a.as_str()))
                    .unwrap_or("-")
                    .to_owned();
                let body = format!("{name} host={host} path={}\n", req.uri().path());
                let mut resp = Response::new(Full::new(Bytes::from(body)));
                resp.headers_mut()
                    .insert("x-backend", http::HeaderValue::from_static(name));
                Ok::<_, Infallible>(resp)
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
