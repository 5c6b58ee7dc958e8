//! The life of a long-running command (`mesh sidecar`, `mesh gateway`):
//! a runtime with `--concurrency` workers, signal handlers installed before
//! anything is printed, start, print the listeners, wait for SIGTERM or
//! Ctrl-C, drain. Exit 0 after a clean drain, 1 when starting failed or the
//! drain deadline passed with requests in flight.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::process::ExitCode;

use mesh_core::identity::Workload;

/// `--label k=v` values as a label map; a malformed one is a usage error
/// (exit 2) naming the command.
pub(crate) fn labels(
    command: &str,
    values: &[String],
) -> Result<BTreeMap<String, String>, ExitCode> {
    Workload::parse_labels(values.iter().map(String::as_str)).map_err(|e| {
        eprintln!("mesh {command}: {e}");
        ExitCode::from(2)
    })
}

/// Runs `start` on a fresh runtime, calls `announce` with what it started,
/// then waits for a signal and `drain`s it.
pub(crate) fn until_signal<S, E: Display>(
    command: &str,
    concurrency: Option<usize>,
    start: impl Future<Output = Result<S, E>>,
    announce: impl FnOnce(&S),
    drain: impl AsyncFnOnce(S) -> bool,
) -> ExitCode {
    let runtime = match runtime(concurrency) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mesh {command}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        // Install the signal handlers before anything is printed: a SIGTERM
        // that arrives right after "listening" must drain, not kill.
        let signals = match Signals::install() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("mesh {command}: cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
        let started = match start.await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("mesh {command}: {e}");
                return ExitCode::FAILURE;
            }
        };
        announce(&started);
        signals.wait().await;
        eprintln!("mesh {command}: draining");
        if drain(started).await {
            ExitCode::SUCCESS
        } else {
            eprintln!("mesh {command}: drain deadline passed with requests in flight");
            ExitCode::FAILURE
        }
    })
}

/// The runtime of a long-running command, with `concurrency` worker threads
/// (default: the machine's cores). One worker is a current-thread runtime
/// driven by the main thread, as linkerd2-proxy does on one core: a task
/// woken by I/O runs on the thread that polls the reactor, with no
/// cross-thread queue, work stealing or idle-worker wakeups per request,
/// which a one-worker multi-threaded runtime still pays for.
fn runtime(concurrency: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match concurrency {
        Some(1) | Some(0) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all();
    builder.build()
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
