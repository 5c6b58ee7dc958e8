//! `mesh sidecar`: the outbound, inbound and admin listeners of DESIGN.md's
//! contract, built from the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use mesh::sidecar::{Sidecar, SidecarConfig};
use mesh_core::identity::Workload;

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
    /// Worker threads (default: the machine's cores).
    #[arg(long)]
    concurrency: Option<usize>,
    /// How long a drain (SIGTERM) waits for in-flight requests, in seconds.
    #[arg(long, default_value_t = 30)]
    drain_timeout: u64,
}

/// Runs the sidecar until SIGTERM or Ctrl-C, then drains.
pub fn run(args: &Args) -> ExitCode {
    let labels = match Workload::parse_labels(args.labels.iter().map(String::as_str)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mesh sidecar: {e}");
            return ExitCode::from(2);
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = args.concurrency {
        builder.worker_threads(n.max(1));
    }
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mesh sidecar: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
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
    config.drain_timeout = Duration::from_secs(args.drain_timeout);
    runtime.block_on(async move {
        // Install the signal handlers before anything is printed: a SIGTERM
        // that arrives right after "listening" must drain, not kill.
        let signals = match Signals::install() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("mesh sidecar: cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
        let sidecar = match Sidecar::start(config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("mesh sidecar: {e}");
                return ExitCode::FAILURE;
            }
        };
        println!("outbound listening on {}", sidecar.outbound);
        if let Some(inbound) = sidecar.inbound {
            println!("inbound listening on {inbound}");
        }
        println!("admin listening on {}", sidecar.admin);
        signals.wait().await;
        eprintln!("mesh sidecar: draining");
        if sidecar.shutdown().await {
            ExitCode::SUCCESS
        } else {
            eprintln!("mesh sidecar: drain deadline passed with requests in flight");
            ExitCode::FAILURE
        }
    })
}

/// SIGTERM and Ctrl-C, listening from the moment they are installed.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            #[cfg(unix)]
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?,
            #[cfg(unix)]
            interrupt: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?,
        })
    }

    async fn wait(mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => {}
                _ = self.interrupt.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
