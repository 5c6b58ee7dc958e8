//! `mesh gateway`: the ingress gateway of DESIGN.md's contract, built from
//! the library (`mesh::gateway`). It serves the Istio Gateway servers whose
//! selector matches its labels and the Gateway API Gateways of its class
//! (`--gateway-class`, narrowed by `--gateway`), one listener per server
//! port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use mesh::gateway::{Gateway, GatewayConfig};
use mesh_core::identity::Workload;

use crate::serve;

/// Arguments of `mesh gateway`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Configuration file or folder (repeatable; watched for changes).
    #[arg(long = "config", short = 'c', required = true)]
    config: Vec<PathBuf>,
    /// The gateway workload's namespace.
    #[arg(long, env = "MESH_NAMESPACE", default_value = "default")]
    namespace: String,
    /// A gateway workload label `key=value` (repeatable; env: comma-separated).
    /// Gateways whose `selector` matches these labels are served.
    #[arg(long = "label", env = "MESH_LABELS", value_delimiter = ',')]
    labels: Vec<String>,
    /// Gateway API: serve the Gateways whose `gatewayClassName` is NAME.
    #[arg(long, value_name = "NAME", default_value = mesh_route::gateway::DEFAULT_GATEWAY_CLASS)]
    gateway_class: String,
    /// Gateway API: serve only this Gateway, `NAMESPACE/NAME` (or `NAME` in
    /// --namespace); repeatable. It must also be of --gateway-class. The
    /// label `gateway.networking.k8s.io/gateway-name=NAME` does the same.
    #[arg(long = "gateway", value_name = "NS/NAME")]
    gateways: Vec<String>,
    /// Bind a Gateway server port on an address: `PORT=ADDR`, e.g.
    /// `443=127.0.0.1:18443` (repeatable). Without it a server port binds
    /// `0.0.0.0:PORT` (or the server's `bind` IP).
    #[arg(long = "listen", value_name = "PORT=ADDR", value_parser = parse_listen)]
    listen: Vec<(u16, SocketAddr)>,
    /// Folder of TLS credentials: `credentialName: X` reads `DIR/X/tls.crt`
    /// and `DIR/X/tls.key` (watched; rotation without restart).
    #[arg(long, value_name = "DIR")]
    credentials_dir: Option<PathBuf>,
    /// Admin listener (/ready, /live, /config_dump).
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin: SocketAddr,
    /// Worker threads (default: the machine's cores); 1 runs the proxy on
    /// the main thread alone (a current-thread runtime).
    #[arg(long)]
    concurrency: Option<usize>,
    /// How long a drain (SIGTERM) waits for in-flight requests, in seconds.
    #[arg(long, default_value_t = 30)]
    drain_timeout: u64,
}

fn parse_listen(value: &str) -> Result<(u16, SocketAddr), String> {
    GatewayConfig::parse_listen(value)
}

/// Runs the gateway until SIGTERM or Ctrl-C, then drains.
pub fn run(args: &Args) -> ExitCode {
    let labels = match serve::labels("gateway", &args.labels) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let mut config = GatewayConfig::new(args.config.clone());
    config.workload = Workload {
        namespace: args.namespace.clone(),
        labels,
        ..Workload::default()
    };
    config.gateway_class.clone_from(&args.gateway_class);
    config.gateways.clone_from(&args.gateways);
    config.listen = args.listen.iter().copied().collect();
    config.credentials_dir.clone_from(&args.credentials_dir);
    config.admin = args.admin;
    config.drain_timeout = Duration::from_secs(args.drain_timeout);
    serve::until_signal(
        "gateway",
        args.concurrency,
        Gateway::start(config),
        |gateway| {
            for l in &gateway.listeners {
                println!(
                    "gateway port {} ({}) listening on {}",
                    l.port, l.protocol, l.addr
                );
            }
            println!("admin listening on {}", gateway.admin);
        },
        async |gateway| gateway.shutdown().await,
    )
}
