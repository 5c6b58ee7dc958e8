//! The `mesh` command. Everything it does is built from the library crates;
//! this file only parses arguments and wires them up.

#![forbid(unsafe_code)]

mod explain;
mod gateway;
mod serve;
mod sidecar;
mod validate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// An embeddable service mesh configured from Istio, Linkerd and Gateway API YAML.
#[derive(Parser, Debug)]
#[command(name = "mesh", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Load and check configuration: prints `file:line:col: error|warning: Kind/ns/name: field: message`
    /// per problem; exits 1 on any error (or warning, with --warnings-as-errors).
    Validate(validate::Args),
    /// Run as a sidecar: outbound, inbound and admin listeners; drains on SIGTERM.
    Sidecar(sidecar::Args),
    /// Run as an ingress gateway: a listener per Gateway server port (HTTP, HTTPS
    /// with certificates from --credentials-dir), and admin; drains on SIGTERM.
    Gateway(gateway::Args),
    /// Explain a request: the resource and rule that decide it (file:line), the rules it
    /// shadows, its destinations and endpoints, and the timeout, retry, fault and mirror
    /// policy in force.
    Explain(explain::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MESH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Validate(args) => validate::run(&args),
        Command::Sidecar(args) => sidecar::run(&args),
        Command::Gateway(args) => gateway::run(&args),
        Command::Explain(args) => explain::run(&args),
    }
}
