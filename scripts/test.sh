#!/usr/bin/env bash
# The project's test command (README "Run the tests"; .ci/run calls it too).
# Doctests (which nextest cannot run) under cargo test --doc, then every unit,
# integration and end-to-end test under cargo-nextest, whose summary closes
# the output. One shared target dir.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "cargo-nextest is missing; installing it (once)" >&2
  cargo install cargo-nextest --locked
fi
cargo test --workspace --doc --quiet "$@"
cargo nextest run --workspace --no-fail-fast "$@"
