//! `mesh explain [--config PATH]... [--namespace NS] [--label k=v]... [-H 'name: value']... METHOD URL`

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use mesh_core::diag::Severity;
use mesh_core::identity::Workload;
use mesh_core::load::{LoadOptions, load_paths};
use mesh_core::snapshot::Snapshot;
use mesh_route::explain::ExplainQuery;
use mesh_route::routing::RoutingTable;

/// Arguments of `mesh explain`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Files or folders of configuration (repeatable).
    #[arg(long = "config", short = 'c', required = true)]
    config: Vec<PathBuf>,
    /// The caller's namespace (also the namespace of resources that name none).
    #[arg(long, short = 'n', env = "MESH_NAMESPACE", default_value = "default")]
    namespace: String,
    /// A caller label `key=value` (repeatable).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// A request header `name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Print JSON for tools.
    #[arg(long)]
    json: bool,
    /// The method (GET, POST, ...).
    method: String,
    /// The URL: `http://reviews:9080/path`, or a path with `-H 'host: reviews'`.
    url: String,
}

/// Runs the command: exit 0 when it could decide, 1 when the configuration
/// does not load, 2 for a request it cannot parse.
pub fn run(args: &Args) -> ExitCode {
    let labels = match Workload::parse_labels(args.labels.iter().map(String::as_str)) {
        Ok(labels) => labels,
        Err(e) => {
            eprintln!("mesh explain: {e}");
            return ExitCode::from(2);
        }
    };
    let query = match ExplainQuery::parse(
        &args.method,
        &args.url,
        &args.headers,
        &args.namespace,
        labels,
    ) {
        Ok(q) => q,
        Err(e) => {
            eprintln!("mesh explain: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = LoadOptions {
        default_namespace: args.namespace.clone(),
    };
    let loaded = load_paths(&args.config, &opts);
    if loaded.diagnostics.count(Severity::Error) > 0 {
        for d in loaded.diagnostics.iter() {
            if d.severity == Severity::Error {
                eprintln!("{d}");
            }
        }
        eprintln!("mesh explain: the configuration does not load");
        return ExitCode::FAILURE;
    }
    let table = RoutingTable::compile(Arc::new(Snapshot::compile(1, loaded)));
    let explained = query.explain(&table);
    if args.json {
        match serde_json::to_string_pretty(&explained) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("mesh explain: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{explained}");
    }
    ExitCode::SUCCESS
}
