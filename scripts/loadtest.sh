#!/usr/bin/env bash
# The load harness (issue 6; docs/performance.md "Load harness"): the mesh
# sidecar side by side with HAProxy and nginx, one hop and two hops, against
# the same fast upstream on 127.0.0.1, in one invocation.
#
#   scripts/loadtest.sh [--repeat N] [--duration S] [--quick]
#                       [--concurrency N] [--only ID,ID...]
#                       [--gen-cpu C] [--proxy-cpu C] [--upstream-cpu C]
#
# It installs what is missing (Debian's haproxy, nginx, openssl, python3;
# oha from crates.io into target/tools), builds `mesh` and the upstream in
# release, then for each round and each setup: starts the proxies fresh,
# warms up, runs fixed 1,000 and 5,000 req/s (32 connections, latency
# corrected) and closed-loop maximum throughput (64 connections), reading
# the proxies' CPU time and peak RSS from /proc around each phase. Results:
# a markdown table on stdout and in target/loadtest/results-<date>.md, the
# raw oha reports next to it. Not part of CI. Everything it starts is
# stopped on exit, Ctrl-C or SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
HERE=$ROOT/scripts/loadtest

usage() {
  sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
  cat <<'EOF'
Options:
  --repeat N        rounds; each setup runs once per round (default 3)
  --duration S      seconds per measured phase (default 15)
  --quick           smoke run: 1 round of 3 s phases (flags given too win)
  --concurrency N   worker threads of every proxy: mesh --concurrency,
                    HAProxy nbthread, nginx worker_processes (default 1)
  --only IDS        comma-separated setups to run (default: all), from
                    direct haproxy-1 nginx-1 mesh-1 haproxy-2 nginx-2 mesh-2
                    haproxy-2-mtls nginx-2-mtls mesh-2-mtls
  --gen-cpu C       CPU list for the load generator (default 0)
  --upstream-cpu C  CPU list for the upstream (default 0)
  --proxy-cpu C     CPU list for the proxies (default 1)
EOF
}

REPEAT="" DURATION="" QUICK=0 CONCURRENCY=1 ONLY=""
GEN_CPU=0 UPSTREAM_CPU=0 PROXY_CPU=1
while [ $# -gt 0 ]; do
  case "$1" in
    --repeat) REPEAT=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --concurrency) CONCURRENCY=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --gen-cpu) GEN_CPU=$2; shift 2 ;;
    --upstream-cpu) UPSTREAM_CPU=$2; shift 2 ;;
    --proxy-cpu) PROXY_CPU=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "loadtest: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ "$QUICK" = 1 ]; then
  REPEAT=${REPEAT:-1}
  DURATION=${DURATION:-3}
fi
REPEAT=${REPEAT:-3}
DURATION=${DURATION:-15}
RATES=(1000 5000)
FIXED_CONNS=32
MAX_CONNS=64
ALL_SETUPS=(direct haproxy-1 nginx-1 mesh-1 haproxy-2 nginx-2 mesh-2 haproxy-2-mtls nginx-2-mtls mesh-2-mtls)
if [ -n "$ONLY" ]; then IFS=, read -r -a SETUPS <<<"$ONLY"; else SETUPS=("${ALL_SETUPS[@]}"); fi
ARGS_SHOWN="scripts/loadtest.sh --repeat $REPEAT --duration $DURATION --concurrency $CONCURRENCY"
[ -n "$ONLY" ] && ARGS_SHOWN+=" --only $ONLY"

say() { printf '== %s\n' "$*" >&2; }
die() { printf 'loadtest: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------------ tools
TOOLS=$ROOT/target/tools
OHA=$TOOLS/bin/oha
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

ensure_tools() {
  local apt=()
  command -v haproxy >/dev/null || apt+=(haproxy)
  command -v nginx >/dev/null || apt+=(nginx)
  command -v openssl >/dev/null || apt+=(openssl)
  command -v curl >/dev/null || apt+=(curl)
  command -v taskset >/dev/null || apt+=(util-linux)
  command -v ss >/dev/null || apt+=(iproute2)
  [ -x /usr/bin/python3 ] || apt+=(python3)
  if [ ${#apt[@]} -gt 0 ]; then
    say "installing ${apt[*]} (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt[@]}" >/dev/null
  fi
  if [ ! -x "$OHA" ]; then
    # oha: a Rust load generator with a fixed-rate mode (-q) that corrects
    # for coordinated omission (--latency-correction) and writes JSON.
    say "installing oha into $TOOLS (cargo install; takes a few minutes once)"
    cargo install oha --locked --root "$TOOLS"
  fi
  "$OHA" --help | grep -q -- '--latency-correction' || die "$OHA has no --latency-correction"
}

build() {
  say "building mesh and loadtest-upstream (release)"
  cargo build --release -p mesh-sidecar --bin mesh -p mesh-examples --bin loadtest-upstream
  MESH=$TARGET_DIR/release/mesh
  UPSTREAM_BIN=$TARGET_DIR/release/loadtest-upstream
  "$MESH" sidecar --help | grep -q -- '--concurrency' || die "mesh sidecar has no --concurrency"
}

# -------------------------------------------------------------- processes
WORK=""
PIDS=()       # everything started in the background, for the EXIT trap
cleanup() {
  trap - EXIT INT TERM
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  [ -n "$WORK" ] && rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME CPU CMD...: runs CMD pinned to CPU in the background (never
# call it in a subshell: the EXIT trap must know the pid). Sets LAST_PID.
start() {
  local name=$1 cpu=$2
  shift 2
  taskset -c "$cpu" "$@" >"$WORK/$name.log" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

# stop PID...: SIGTERM, wait (bounded), SIGKILL what is left.
stop() {
  local pid keep=() p
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "$@"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  for p in "${PIDS[@]}"; do
    case " $* " in *" $p "*) ;; *) keep+=("$p") ;; esac
  done
  PIDS=("${keep[@]}")
}

# free_port VAR: sets VAR to a free TCP port on 127.0.0.1, never handed out
# twice in one run (not called in a subshell, so the record survives).
USED_PORTS=" "
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    case "$USED_PORTS" in *" $p "*) continue ;; esac
    if [ -z "$(ss -Htan "sport = :$p")" ]; then
      USED_PORTS+="$p "
      printf -v "$1" '%s' "$p"
      return
    fi
  done
}

# render TEMPLATE OUT NAME=VALUE...: replaces each @NAME@ by VALUE.
render() {
  local text kv
  text=$(<"$1")
  local out=$2
  shift 2
  for kv in "$@"; do text=${text//@${kv%%=*}@/${kv#*=}}; done
  printf '%s\n' "$text" >"$out"
}

# wait_ready PORT: the setup answers 200 with the 1 KiB body (10 s deadline).
wait_ready() {
  local code deadline=$((SECONDS + 10))
  while [ $SECONDS -lt $deadline ]; do
    code=$(curl -s -o "$WORK/probe" -w '%{http_code}' -H 'Host: upstream' \
      "http://127.0.0.1:$1/" 2>/dev/null || true)
    if [ "$code" = 200 ] && [ "$(stat -c %s "$WORK/probe")" = 1024 ]; then return 0; fi
    sleep 0.05
  done
  return 1
}

# check_mtls PORT: the second hop of an mTLS row refuses a client without a
# certificate and answers one with the client certificate, so the row
# really measures mutual TLS between the hops.
check_mtls() {
  local pki=$WORK/pki code
  code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$pki/ca.crt" \
    "https://127.0.0.1:$1/" 2>/dev/null || true)
  if [ "$code" = 200 ]; then
    say "hop on port $1 answered a client without a certificate"
    return 1
  fi
  code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$pki/ca.crt" \
    --cert "$pki/client.crt" --key "$pki/client.key" "https://127.0.0.1:$1/" 2>/dev/null || true)
  if [ "$code" != 200 ]; then
    say "hop on port $1 refused the client certificate ($code)"
    return 1
  fi
}

# The processes of a proxy instance: it and its children (nginx workers).
expand_pids() {
  local pid
  for pid in "$@"; do
    echo "$pid"
    pgrep -P "$pid" || true
  done
}

# CPU ticks (utime + stime, /proc/PID/stat fields 14 and 15) of the
# processes, summed.
cpu_ticks() {
  local total=0 pid f=()
  for pid in $(expand_pids "$@"); do
    [ -r "/proc/$pid/stat" ] || continue
    # Fields from the third on (the command name may hold spaces): utime
    # and stime are the 12th and 13th of those.
    read -r -a f <<<"$(sed 's/^.*) //' "/proc/$pid/stat")"
    total=$((total + f[11] + f[12]))
  done
  echo "$total"
}

# Peak RSS (VmHWM, kB) of the largest single process among them.
peak_rss_kb() {
  local max=0 pid v
  for pid in $(expand_pids "$@"); do
    v=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    [ "${v:-0}" -gt "$max" ] && max=$v
  done
  echo "$max"
}

# ------------------------------------------------------------------ certs
make_certs() {
  local d=$WORK/pki
  mkdir -p "$d"
  (
    cd "$d"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -keyout ca.key -out ca.crt -days 2 -subj /CN=loadtest-ca 2>/dev/null
    for who in server client; do
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout $who.key -out $who.csr -subj "/CN=$who.loadtest" 2>/dev/null
    done
    printf 'subjectAltName=DNS:server.loadtest,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >server.ext
    printf 'subjectAltName=URI:spiffe://cluster.local/ns/default/sa/client\nextendedKeyUsage=clientAuth\n' >client.ext
    for who in server client; do
      openssl x509 -req -in $who.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
        -out $who.crt -days 2 -extfile $who.ext 2>/dev/null
      cat $who.crt $who.key >$who.pem
    done
  )
}

# ---------------------------------------------------------------- setups
label_of() {
  case "$1" in
    direct) echo "direct (no proxy)" ;;
    haproxy-1) echo "HAProxy, one hop" ;;
    nginx-1) echo "nginx, one hop" ;;
    mesh-1) echo "mesh, one hop" ;;
    haproxy-2) echo "HAProxy, two hops" ;;
    nginx-2) echo "nginx, two hops" ;;
    mesh-2) echo "mesh, two hops" ;;
    haproxy-2-mtls) echo "HAProxy, two hops, mTLS" ;;
    nginx-2-mtls) echo "nginx, two hops, mTLS" ;;
    mesh-2-mtls) echo "mesh, two hops, mTLS" ;;
    *) return 1 ;;
  esac
}

# haproxy_hop NAME LISTEN TARGET IN_TLS OUT_TLS: one HAProxy instance.
haproxy_hop() {
  local name=$1 listen=$2 target=$3 bind_tls="" server_tls="" pki=$WORK/pki
  [ "$4" = tls ] && bind_tls="ssl crt $pki/server.pem ca-file $pki/ca.crt verify required"
  [ "$5" = tls ] && server_tls="ssl crt $pki/client.pem ca-file $pki/ca.crt verify required verifyhost server.loadtest sni str(server.loadtest)"
  render "$HERE/haproxy.cfg.in" "$WORK/$name.cfg" THREADS="$CONCURRENCY" \
    LISTEN_PORT="$listen" TARGET_PORT="$target" BIND_TLS="$bind_tls" SERVER_TLS="$server_tls"
  start "$name" "$PROXY_CPU" haproxy -db -f "$WORK/$name.cfg"
  PROXY_PIDS+=("$LAST_PID")
}

# nginx_hop NAME LISTEN TARGET IN_TLS OUT_TLS: one nginx instance.
nginx_hop() {
  local name=$1 listen=$2 target=$3 pki=$WORK/pki dir=$WORK/$1
  local listen_tls="" server_tls="" proxy_tls="" scheme=http
  mkdir -p "$dir"
  if [ "$4" = tls ]; then
    listen_tls=ssl
    server_tls="ssl_certificate $pki/server.crt; ssl_certificate_key $pki/server.key; ssl_client_certificate $pki/ca.crt; ssl_verify_client on;"
  fi
  if [ "$5" = tls ]; then
    scheme=https
    proxy_tls="proxy_ssl_certificate $pki/client.crt; proxy_ssl_certificate_key $pki/client.key; proxy_ssl_trusted_certificate $pki/ca.crt; proxy_ssl_verify on; proxy_ssl_name server.loadtest; proxy_ssl_server_name on; proxy_ssl_session_reuse on;"
  fi
  render "$HERE/nginx.conf.in" "$dir/nginx.conf" WORKERS="$CONCURRENCY" DIR="$dir" \
    LISTEN_PORT="$listen" TARGET_PORT="$target" LISTEN_TLS="$listen_tls" \
    SERVER_TLS="$server_tls" PROXY_TLS="$proxy_tls" SCHEME="$scheme"
  start "$name" "$PROXY_CPU" nginx -p "$dir" -c "$dir/nginx.conf"
  PROXY_PIDS+=("$LAST_PID")
}

# mesh_hop NAME OUTBOUND TARGET [INBOUND APP]: one sidecar whose outbound
# listener routes host `upstream` to 127.0.0.1:TARGET; with INBOUND and APP
# it also forwards its inbound listener to the application at APP.
mesh_hop() {
  local name=$1 outbound=$2 target=$3 dir=$WORK/$1 extra=() admin
  mkdir -p "$dir"
  free_port admin
  render "$HERE/mesh.yaml.in" "$dir/mesh.yaml" TARGET_PORT="$target"
  if [ $# -ge 5 ]; then extra=(--inbound "127.0.0.1:$4" --app "127.0.0.1:$5"); fi
  start "$name" "$PROXY_CPU" "$MESH" sidecar --config "$dir" \
    --outbound "127.0.0.1:$outbound" --admin "127.0.0.1:$admin" \
    --concurrency "$CONCURRENCY" --drain-timeout 1 "${extra[@]}"
  PROXY_PIDS+=("$LAST_PID")
}

# mesh_mtls_supported: true once the sidecar can speak mTLS between hops.
# Hook the flags in here when it can (see mesh_hop).
mesh_mtls_supported() { return 1; }

# start_setup ID: starts the proxies of a setup; sets ENTRY (the port the
# load generator calls) and PROXY_PIDS. Non-zero if it is skipped.
start_setup() {
  local b c
  PROXY_PIDS=() MTLS_PORT=""
  case "$1" in
    direct) ENTRY=$UPSTREAM_PORT ;;
    haproxy-1 | nginx-1)
      free_port ENTRY
      "${1%-1}_hop" "$1-a" "$ENTRY" "$UPSTREAM_PORT" plain plain ;;
    haproxy-2 | nginx-2 | haproxy-2-mtls | nginx-2-mtls)
      local kind=${1%%-*} tls=plain
      case "$1" in *-mtls) tls=tls ;; esac
      free_port ENTRY
      free_port b
      "${kind}_hop" "$1-b" "$b" "$UPSTREAM_PORT" "$tls" plain
      "${kind}_hop" "$1-a" "$ENTRY" "$b" plain "$tls"
      if [ "$tls" = tls ]; then MTLS_PORT=$b; fi ;;
    mesh-1)
      free_port ENTRY
      mesh_hop "$1-a" "$ENTRY" "$UPSTREAM_PORT" ;;
    mesh-2)
      free_port ENTRY
      free_port b
      free_port c
      mesh_hop "$1-b" "$c" "$UPSTREAM_PORT" "$b" "$UPSTREAM_PORT"
      mesh_hop "$1-a" "$ENTRY" "$b" ;;
    mesh-2-mtls)
      mesh_mtls_supported || { SKIP_REASON="skipped: mTLS not built yet"; return 1; } ;;
    *) die "unknown setup $1" ;;
  esac
}

# --------------------------------------------------------------- measuring
# emit FIELDS...: one JSON line of the raw results.
emit() { printf '%s\n' "$1" >>"$RAW"; }

meta() { # setup -> the JSON fields describing it
  local hops=1 tls=false kind=${1%%-*}
  case "$1" in *-2*) hops=2 ;; direct) hops=0 ;; esac
  case "$1" in *-mtls) tls=true ;; esac
  printf '"setup":"%s","label":"%s","kind":"%s","hops":%d,"tls":%s' \
    "$1" "$(label_of "$1")" "$kind" "$hops" "$tls"
}

# phase SETUP ROUND NAME OHA-ARGS...: one measured run of oha.
phase() {
  local setup=$1 round=$2 name=$3 out t0 t1 rss cpu=null rssj=null status=ok
  shift 3
  out=$OUT/$setup-$name-r$round.json
  t0=$(cpu_ticks "${PROXY_PIDS[@]}")
  if ! taskset -c "$GEN_CPU" "$OHA" "$@" --worker-threads "$GEN_THREADS" --no-tui --output-format json -o "$out" \
    --host upstream "http://127.0.0.1:$ENTRY/" 2>"$out.err"; then
    status="failed: oha exited non-zero (see $out.err)"
  fi
  t1=$(cpu_ticks "${PROXY_PIDS[@]}")
  if [ ${#PROXY_PIDS[@]} -gt 0 ]; then
    cpu=$((t1 - t0))
    rss=$(peak_rss_kb "${PROXY_PIDS[@]}")
    rssj=$rss
  fi
  emit "{$(meta "$setup"),\"phase\":\"$name\",\"round\":$round,\"oha\":\"$out\",\"cpu_ticks\":$cpu,\"clk_tck\":$CLK_TCK,\"rss_kb\":$rssj,\"status\":\"$status\"}"
  if [ "$status" = ok ]; then
    python3 - "$out" "$name" <<'EOF' >&2
import json, sys
o = json.load(open(sys.argv[1]))
p = o.get("latencyPercentiles", {})
c = o.get("statusCodeDistribution", {})
e = {k: v for k, v in o.get("errorDistribution", {}).items() if k != "aborted due to deadline"}
ms = lambda k: "%.3f" % (p[k] * 1000) if p.get(k) is not None else "-"
print("     %-9s %8.0f req/s  p50 %s  p99 %s  p99.9 %s ms  codes %s%s" % (
    sys.argv[2], o["summary"]["requestsPerSec"], ms("p50"), ms("p99"),
    ms("p99.9"), dict(c), ("  errors %s" % e) if e else ""))
EOF
  fi
}

run_setup() {
  local setup=$1 round=$2 rate
  SKIP_REASON=""
  if ! start_setup "$setup"; then
    say "$setup: ${SKIP_REASON:-could not start}"
    emit "{$(meta "$setup"),\"phase\":\"\",\"round\":$round,\"status\":\"${SKIP_REASON:-failed: could not start}\"}"
    return
  fi
  if ! wait_ready "$ENTRY"; then
    say "$setup: not answering 200 with 1 KiB on port $ENTRY; logs:"
    tail -n 5 "$WORK/$setup"-*.log >&2 2>/dev/null || true
    emit "{$(meta "$setup"),\"phase\":\"\",\"round\":$round,\"status\":\"failed: no 200 with a 1 KiB body\"}"
    stop "${PROXY_PIDS[@]}"
    return
  fi
  if [ -n "$MTLS_PORT" ] && ! check_mtls "$MTLS_PORT"; then
    emit "{$(meta "$setup"),\"phase\":\"\",\"round\":$round,\"status\":\"failed: second hop does not enforce mTLS\"}"
    stop "${PROXY_PIDS[@]}"
    return
  fi
  say "$setup (round $round/$REPEAT, entry 127.0.0.1:$ENTRY, proxy pids ${PROXY_PIDS[*]:-none})"
  # Warm-up: connections, pools and caches, at the lower fixed rate so the
  # peak RSS that follows is the fixed-rate phases' own.
  taskset -c "$GEN_CPU" "$OHA" -z 1s -c "$FIXED_CONNS" -q "${RATES[0]}" \
    --worker-threads "$GEN_THREADS" --no-tui \
    --output-format quiet --host upstream "http://127.0.0.1:$ENTRY/" >/dev/null 2>&1 || true
  for rate in "${RATES[@]}"; do
    phase "$setup" "$round" "rate$rate" -z "${DURATION}s" -c "$FIXED_CONNS" -q "$rate" \
      --latency-correction
  done
  phase "$setup" "$round" max -z "${DURATION}s" -c "$MAX_CONNS"
  stop "${PROXY_PIDS[@]}"
}

# -------------------------------------------------------------------- main
for s in "${SETUPS[@]}"; do label_of "$s" >/dev/null || die "unknown setup $s (see --help)"; done
ensure_tools
build

STAMP=$(date +%Y%m%d-%H%M%S)
OUT=$TARGET_DIR/loadtest/$STAMP
mkdir -p "$OUT"
RAW=$OUT/raw.jsonl
RESULTS=$TARGET_DIR/loadtest/results-$STAMP.md
: >"$RAW"
CLK_TCK=$(getconf CLK_TCK)
# Room for every connection of every process (HAProxy sizes its FD limit
# from maxconn; nginx from worker_rlimit_nofile).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# oha's default is one tokio worker per physical core, whatever the pinning.
GEN_THREADS=$(taskset -c "$GEN_CPU" nproc)
WORK=$(mktemp -d /tmp/loadtest.XXXXXX)
chmod 755 "$WORK" # nginx workers run as nobody
make_certs

free_port UPSTREAM_PORT
start upstream "$UPSTREAM_CPU" "$UPSTREAM_BIN" --listen "127.0.0.1:$UPSTREAM_PORT"
wait_ready "$UPSTREAM_PORT" || die "the upstream did not start: $(cat "$WORK/upstream.log")"

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
say "load average before the run: $LOAD_BEFORE (numbers are only worth keeping on a quiet machine)"
for round in $(seq 1 "$REPEAT"); do
  for setup in "${SETUPS[@]}"; do run_setup "$setup" "$round"; done
done

{
  echo "## Load harness, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo '```sh'
  echo "$ARGS_SHOWN"
  echo '```'
  echo
  echo "- machine: $(nproc) cores, $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'),"\
    "kernel $(uname -r), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
  echo "- load average before the run: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- $(haproxy -v | head -n1 | cut -d' ' -f1-3), nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'),"\
    "$("$OHA" --version), mesh $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo '+changes')"
  echo "- pinning: load generator on CPU $GEN_CPU, upstream on CPU $UPSTREAM_CPU, every proxy on CPU $PROXY_CPU;"\
    "$CONCURRENCY worker thread(s) per proxy"
  echo "- $REPEAT round(s) of ${DURATION} s per phase; medians over rounds, spread = min–max over rounds"
  echo "- raw oha reports: ${OUT#"$ROOT"/}/"
  echo
  python3 "$HERE/report.py" "$RAW"
} | tee "$RESULTS"
say "results written to ${RESULTS#"$ROOT"/}"
