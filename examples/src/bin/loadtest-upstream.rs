//! The load harness's upstream (`scripts/loadtest.sh`): the cheapest honest
//! HTTP/1.1 server we can write, so that every row of the harness measures
//! the proxy in front of it and not the application behind it.
//!
//! Every request, whatever its method or path, is answered `200` with the
//! same 1 KiB body (a shared `Bytes`, so nothing is copied or formatted per
//! request), `content-type: text/plain` and keep-alive. One thread: the
//! harness pins it to a core.
//!
//! ```text
//! loadtest-upstream --listen 127.0.0.1:18080
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use clap::Parser;
use http::{HeaderValue, Request, Response, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;

/// The size of every response body.
const BODY_LEN: usize = 1024;

/// Arguments.
#[derive(Parser, Debug)]
struct Args {
    /// Where to listen (use a free port on 127.0.0.1).
    #[arg(long)]
    listen: SocketAddr,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("loadtest-upstream listening on {}", listener.local_addr()?);
    // 1 KiB of printable text ending in a newline, built once.
    let mut body = vec![b'x'; BODY_LEN];
    body[BODY_LEN - 1] = b'\n';
    let body = Bytes::from(body);
    loop {
        let (stream, _) = listener.accept().await?;
        // Small responses on a keep-alive connection: do not wait for Nagle.
        stream.set_nodelay(true)?;
        let body = body.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                let mut resp = Response::new(Full::new(body.clone()));
                resp.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                std::future::ready(Ok::<_, Infallible>(resp))
            });
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
