#!/usr/bin/env bash
# The project's main job (README "Run it"). Today: build the `mesh` command
# and validate the seed document's configuration, every YAML block of it
# together. Exit status is mesh validate's: 0 when everything loads.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p mesh-sidecar --bin mesh
exec ./target/release/mesh validate fixtures/seed "$@"
