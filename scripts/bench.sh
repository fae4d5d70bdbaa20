#!/usr/bin/env bash
# `make bench`: runs the gateway (ours), a minimal partyserver room and a native
# tokio broadcast server side by side on loopback, drives all three with the same
# load generator (bench/, binary `loadgen`) and regenerates BENCHMARKS.md from this
# run's numbers only.
#
# Usage: scripts/bench.sh [--ours-config TOML] [--out FILE]
#   --ours-config  wrangler config of our Worker (default wrangler.dev.toml, which
#                  builds it; pass a toml without [build] to bench a prebuilt copy)
#   --out          where to write the report (default BENCHMARKS.md)
# Sizes (environment): BENCH_SUBS (1000: subscribers in (a) and (d), characters in
# (c)), BENCH_SECS (8: length of each saturation phase), BENCH_RATE (5: commands/s
# of the fixed-rate latency phase of (a)), BENCH_RATE_SECS (5), BENCH_PUBLISHERS (4).
# Ports: free ones, or BENCH_PORT_BASE (ours, partyserver, native take base, +1, +2).
# All three servers are started, awaited (/healthz) and stopped by the one
# launcher, scripts/server.mjs. Both workerd-based servers run in wrangler's
# local runtime without the devtools inspector (scripts/serve-local.mjs), which
# under `wrangler dev` buffers every runtime event and so costs memory and CPU
# that production does not pay.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

OURS_CONFIG=wrangler.dev.toml
OUT=BENCHMARKS.md
ARGS_GIVEN="$*"
while [ $# -gt 0 ]; do
  case "$1" in
    --ours-config) OURS_CONFIG=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

SUBS=${BENCH_SUBS:-1000}
SECS=${BENCH_SECS:-8}
RATE=${BENCH_RATE:-5}
RATE_SECS=${BENCH_RATE_SECS:-5}
PUBLISHERS=${BENCH_PUBLISHERS:-4}
PORT_OURS=() PORT_PARTY=() PORT_NATIVE=()
if [ -n "${BENCH_PORT_BASE:-}" ]; then
  PORT_OURS=(--port "$BENCH_PORT_BASE")
  PORT_PARTY=(--port "$((BENCH_PORT_BASE + 1))")
  PORT_NATIVE=(--port "$((BENCH_PORT_BASE + 2))")
fi
WRANGLER=node_modules/.bin/wrangler

WORK=$(mktemp -d /tmp/gateway-bench.XXXXXX)
source scripts/server.sh
trap servers_stop EXIT

echo "bench: building the load generator (bench/)"
cargo build -q -p bench --release
BIN=$ROOT/target/release

# The servers do not build (scripts/serve-local.mjs): build our Worker first
# when benching the working tree.
if [ "$OURS_CONFIG" = wrangler.dev.toml ]; then bash scripts/build.sh; fi
echo "bench: starting ours ($OURS_CONFIG), partyserver and native"
# Ours without its static assets (the demo page): in the local runtime an
# assets router Worker then sits in front of the Worker and every request and
# WebSocket message passes through it; the partyserver peer has none.
# BENCHMARKS.md has the measured cost of that hop for both.
server_start ours --runtime local --config "$OURS_CONFIG" "${PORT_OURS[@]}" \
  --state "$WORK/state-ours" --log "$WORK/ours.log" --var AUTH_ENABLED:false -- --assets off
server_start partyserver --runtime local --config bench/peers/partyserver/wrangler.toml "${PORT_PARTY[@]}" \
  --state "$WORK/state-partyserver" --log "$WORK/partyserver.log"
server_start native --runtime exec "${PORT_NATIVE[@]}" --log "$WORK/native.log" \
  -- "$BIN/native-server" --listen "127.0.0.1:{port}"
# One publish each before the first measurement (loads the Durable Object code).
for server in ours partyserver native; do
  url_var="${server}_URL"
  curl -sf -o /dev/null -X POST -H 'content-type: application/json' \
    -d '{"topic":"main","name":"warmup"}' "${!url_var}/v1/characters/warmup/commands" ||
    { echo "bench: the warmup publish to $server failed" >&2; exit 1; }
done

RESULTS=$WORK/results.jsonl
RUN=$(date +%s)
url_of() { local v="${1}_URL"; echo "${!v}"; }
pid_of() { local v="${1}_PID"; echo "${!v}"; }
rss_args() {
  case "$1" in
    ours | partyserver) echo "--rss-pid $(pid_of "$1") --rss-match workerd" ;;
    native) echo "--rss-pid $(pid_of native) --rss-match native-server" ;;
  esac
}

run() { # scenario server args...
  local scenario=$1 server=$2
  shift 2
  # shellcheck disable=SC2046
  timeout 300 "$BIN/loadgen" --url "$(url_of "$server")" --label "$server" --scenario "$scenario" \
    --prefix "$scenario-$RUN-$server" --publishers "$PUBLISHERS" --out "$RESULTS" \
    --cpu-pid "$(pid_of "$server")" "$@" >/dev/null
}

# The three servers take turns within each scenario, so drift in the machine's
# load spreads over all of them.
for server in ours partyserver native; do
  # (a) and (e): the idle RSS is measured after (a)'s sockets are open.
  # shellcheck disable=SC2046
  run a "$server" --characters 1 --subs "$SUBS" $(rss_args "$server") \
    --phases "max:$SECS,rate:$RATE:$RATE_SECS"
done
for server in ours partyserver native; do
  run b "$server" --characters 100 --subs 10 --phases "max:$SECS"
done
for server in ours partyserver native; do
  run c "$server" --characters "$SUBS" --subs 1 --phases "max:$SECS"
done
for server in ours partyserver native; do
  run d "$server" --characters 1 --subs "$SUBS" --topics 10 --phases "max:$SECS"
done

# Machine, versions and the exact command, for the report.
{
  echo "command:     ${BENCH_COMMAND:-scripts/bench.sh $ARGS_GIVEN} (BENCH_SUBS=$SUBS BENCH_SECS=$SECS BENCH_RATE=$RATE BENCH_RATE_SECS=$RATE_SECS BENCH_PUBLISHERS=$PUBLISHERS, ours from $OURS_CONFIG with --assets off)"
  echo "date:        $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "cpu:         $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') x $(nproc)"
  echo "memory:      $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "load avg:    $(cut -d' ' -f1-3 /proc/loadavg) (at the end of the run)"
  echo "kernel:      $(uname -sr)"
  echo "rustc:       $(rustc --version)"
  echo "node:        $(node --version)"
  echo "wrangler:    $("$WRANGLER" --version 2>/dev/null | tail -1)"
  echo "workerd:     $(node -p 'require("./node_modules/workerd/package.json").version' 2>/dev/null || echo '?')"
  echo "partyserver: $(node -p 'require("./node_modules/partyserver/package.json").version')"
  for crate in tokio tokio-tungstenite hdrhistogram dashmap; do
    printf '%-12s %s\n' "$crate:" "$(awk -v n="$crate" '$0 == "name = \"" n "\"" {getline; gsub(/version = |"/, ""); print; exit}' Cargo.lock)"
  done
} >"$WORK/meta.txt"

FOOTER=()
[ -f bench/BENCHMARKS.footer.md ] && FOOTER=(--footer bench/BENCHMARKS.footer.md)
"$BIN/bench-report" --results "$RESULTS" --header bench/BENCHMARKS.header.md \
  --meta "$WORK/meta.txt" "${FOOTER[@]}" >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "bench: wrote $OUT (raw results in $RESULTS)"
