#!/usr/bin/env bash
# The project's main job (README "Run it"): a `mesh` sidecar in front of
# demo backends, on the seed document's configuration (fixtures/seed, every
# YAML block of it) plus endpoints for the seed's hosts
# (examples/seed-demo). It sends requests through the sidecar and shows
# where each went, then stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p mesh-sidecar --bin mesh -p mesh-examples --bin backend

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

for spec in reviews-v1:39081 reviews-v2:39082 webapp-v1:39083 webapp-v2:39084 api-v1:39085 api-v2:39086; do
  ./target/release/backend --name "${spec%%:*}" --listen "127.0.0.1:${spec##*:}" >/dev/null &
  pids+=($!)
done

echo "== mesh validate: the seed's configuration and the demo endpoints"
./target/release/mesh validate fixtures/seed examples/seed-demo || true

./target/release/mesh sidecar --config fixtures/seed --config examples/seed-demo \
  --outbound 127.0.0.1:15001 --admin 127.0.0.1:15000 &
pids+=($!)
for _ in $(seq 1 100); do
  curl -fs http://127.0.0.1:15000/ready >/dev/null 2>&1 && break
  sleep 0.1
done

proxy=http://127.0.0.1:15001
count() { sort | uniq -c | sed 's/^/    /'; }

echo
echo "== canary (reviews-vs): 200 requests, 90/10 between v1 and v2"
for _ in $(seq 1 200); do curl -s -x "$proxy" http://reviews:9080/ | cut -d' ' -f1; done | count
echo "== canary override: x-canary: true always reaches v2"
for _ in $(seq 1 5); do curl -s -x "$proxy" -H 'x-canary: true' http://reviews:9080/ | cut -d' ' -f1; done | count
echo "== A/B (ab-test): user-group: beta-testers -> v2, everyone else -> v1"
curl -s -x "$proxy" -H 'user-group: beta-testers' http://webapp/
curl -s -x "$proxy" http://webapp/
echo "== api (traffic-mirror governs it: primary v1)"
curl -s -x "$proxy" http://api:8080/users/1
echo "== a host nobody defines: 503 with flag UH"
curl -s -o /dev/null -w '    %{http_code} %header{x-mesh-response-flags}\n' -x "$proxy" http://unknown/
echo "== configuration generation in force"
curl -s http://127.0.0.1:15000/config_dump | grep -m1 '"generation"'
