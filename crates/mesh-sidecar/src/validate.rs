//! `mesh validate PATH...`

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use mesh_core::diag::Severity;
use mesh_core::load::{LoadOptions, load_paths};

/// Arguments of `mesh validate`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Files or folders of YAML (`-` reads standard input).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Namespace of resources that do not name one.
    #[arg(long, short = 'n', env = "MESH_NAMESPACE", default_value = "default")]
    namespace: String,
    /// Fail (exit 1) on warnings too, for CI pipelines.
    #[arg(long)]
    warnings_as_errors: bool,
    /// Print skipped non-mesh documents too.
    #[arg(long, short = 'v')]
    verbose: bool,
    /// Print diagnostics as JSON lines.
    #[arg(long)]
    json: bool,
}

/// Runs the command.
pub fn run(args: &Args) -> ExitCode {
    let opts = LoadOptions {
        default_namespace: args.namespace.clone(),
    };
    let loaded = load_paths(&args.paths, &opts);
    let mut out = std::io::stdout().lock();
    for d in loaded.diagnostics.iter() {
        if d.severity == Severity::Note && !args.verbose {
            continue;
        }
        let written = if args.json {
            serde_json::to_string(d)
                .map_err(std::io::Error::other)
                .and_then(|line| writeln!(out, "{line}"))
        } else {
            writeln!(out, "{d}")
        };
        if written.is_err() {
            // stdout closed (`mesh validate ... | head`): nothing more to say.
            break;
        }
    }
    let errors = loaded.diagnostics.count(Severity::Error);
    let warnings = loaded.diagnostics.count(Severity::Warning);
    let skipped = loaded.diagnostics.count(Severity::Note);
    eprintln!(
        "{} resources loaded, {errors} errors, {warnings} warnings, {skipped} documents skipped",
        loaded.resources.len()
    );
    if errors > 0 || (args.warnings_as_errors && warnings > 0) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
