//! `mesh sidecar`: the outbound, inbound and admin listeners of DESIGN.md's
//! contract, built from the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use mesh::sidecar::{Sidecar, SidecarConfig};
use mesh_core::identity::Workload;

use crate::serve;

/// Arguments of `mesh sidecar`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Configuration file or folder (repeatable; watched for changes).
    #[arg(long = "config", short = 'c', required = true)]
    config: Vec<PathBuf>,
    /// The workload's namespace.
    #[arg(long, env = "MESH_NAMESPACE", default_value = "default")]
    namespace: String,
    /// The workload's service account.
    #[arg(long, env = "MESH_SERVICE_ACCOUNT", default_value = "default")]
    service_account: String,
    /// A workload label `key=value` (repeatable; env: comma-separated).
    #[arg(long = "label", env = "MESH_LABELS", value_delimiter = ',')]
    labels: Vec<String>,
    /// The local application that inbound traffic goes to.
    #[arg(long)]
    app: Option<SocketAddr>,
    /// Outbound listener (application -> mesh).
    #[arg(long, default_value = "127.0.0.1:15001")]
    outbound: SocketAddr,
    /// Inbound listener (mesh -> application).
    #[arg(long, default_value = "0.0.0.0:15006")]
    inbound: SocketAddr,
    /// Admin listener (/ready, /live, /config_dump).
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin: SocketAddr,
    /// `HOST:PORT=ADDR`: listen on ADDR and send every connection there as
    /// outbound TCP to HOST:PORT, for clients that cannot use a proxy
    /// (repeatable).
    #[arg(long = "outbound-tcp", value_name = "HOST:PORT=ADDR", value_parser = parse_outbound_tcp)]
    outbound_tcp: Vec<(String, u16, SocketAddr)>,
    /// Worker threads (default: the machine's cores); 1 runs the proxy on
    /// the main thread alone (a current-thread runtime).
    #[arg(long)]
    concurrency: Option<usize>,
    /// How long a drain (SIGTERM) waits for in-flight requests, in seconds.
    #[arg(long, default_value_t = 30)]
    drain_timeout: u64,
}

/// Runs the sidecar until SIGTERM or Ctrl-C, then drains.
pub fn run(args: &Args) -> ExitCode {
    let labels = match serve::labels("sidecar", &args.labels) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let mut config = SidecarConfig::new(args.config.clone());
    config.workload = Workload {
        namespace: args.namespace.clone(),
        service_account: args.service_account.clone(),
        labels,
    };
    config.outbound = args.outbound;
    config.inbound = args.inbound;
    config.admin = args.admin;
    config.app = args.app;
    config.outbound_tcp.clone_from(&args.outbound_tcp);
    config.drain_timeout = Duration::from_secs(args.drain_timeout);
    serve::until_signal(
        "sidecar",
        args.concurrency,
        Sidecar::start(config),
        |sidecar| {
            println!("outbound listening on {}", sidecar.outbound);
            if let Some(inbound) = sidecar.inbound {
                println!("inbound listening on {inbound}");
            }
            for ((host, port, _), addr) in args.outbound_tcp.iter().zip(&sidecar.outbound_tcp) {
                println!("outbound-tcp {host}:{port} listening on {addr}");
            }
            println!("admin listening on {}", sidecar.admin);
        },
        async |sidecar| sidecar.shutdown().await,
    )
}

/// Parses `--outbound-tcp HOST:PORT=ADDR` (`[v6]:PORT` hosts too).
fn parse_outbound_tcp(text: &str) -> Result<(String, u16, SocketAddr), String> {
    let (target, addr) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not HOST:PORT=ADDR"))?;
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("listen address {addr:?}: {e}"))?;
    let (host, port) = target
        .rsplit_once(':')
        .ok_or_else(|| format!("{target:?} is not HOST:PORT"))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err(format!("{target:?} has no host"));
    }
    let port: u16 = port
        .parse()
        .map_err(|e| format!("port {port:?} of {target:?}: {e}"))?;
    Ok((host.to_owned(), port, addr))
}

#[cfg(test)]
mod tests {
    use super::parse_outbound_tcp;

    #[test]
    fn outbound_tcp_flags_parse() {
        assert_eq!(
            parse_outbound_tcp("postgres.rds.amazonaws.com:5432=127.0.0.1:15432").unwrap(),
            (
                "postgres.rds.amazonaws.com".to_owned(),
                5432,
                "127.0.0.1:15432".parse().unwrap()
            )
        );
        assert_eq!(
            parse_outbound_tcp("[::1]:5432=127.0.0.1:1").unwrap().0,
            "::1"
        );
        assert!(parse_outbound_tcp("db:5432").is_err());
        assert!(parse_outbound_tcp("db=127.0.0.1:1").is_err());
        assert!(parse_outbound_tcp(":5432=127.0.0.1:1").is_err());
        assert!(parse_outbound_tcp("db:99999=127.0.0.1:1").is_err());
    }
}
