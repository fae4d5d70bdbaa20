#!/usr/bin/env bash
# `make bench` (benchmark v2): runs the gateway (ours; also ours with a 20 ms
# batching window for (a')), a minimal partyserver room, the durable JS peer (a
# plain Durable Object that stores each command in SQLite before sending it)
# and a native tokio broadcast server side by side on loopback, drives them all
# with the same load generator (bench/, binary `loadgen`) over several rounds in
# alternating order, and regenerates BENCHMARKS.md and BENCHMARKS.jsonl (the raw
# results) from this run's numbers only.
#
# Usage: scripts/bench.sh [--ours-config TOML] [--out FILE]
#   --ours-config  wrangler config of our Worker (default wrangler.dev.toml, which
#                  builds it; pass a toml without [build] to bench a prebuilt copy)
#   --out          where to write the report (default BENCHMARKS.md; the raw
#                  results go beside it with the extension .jsonl). A run of a
#                  subset (BENCH_ONLY) needs --out: it never replaces the
#                  committed BENCHMARKS.md and BENCHMARKS.jsonl.
# Scenarios (BENCH_ONLY, space-separated; default all): a (with (e), idle
# memory), a_batch, b, c, d, p100, p1k, p16k, b64 ((b)'s shape with 64
# publishers), r (reconnect and resume), sweep (needs a and c in the same run
# for the capacities), slow, f (one character x BENCH_FANOUT_SUBS on ours
# without relays and with FANOUT_LIMIT=BENCH_FANOUT_LIMIT). Only the servers
# the chosen scenarios use are started.
# Sizes (environment; the defaults are the full-size run):
#   BENCH_ROUNDS (3)        rounds; odd rounds run ours, partyserver, durable,
#                           native, even rounds the reverse
#   BENCH_SUBS (1000)       subscribers in (a), (a') and (d), characters in (c)
#   BENCH_SECS (8)          length of each saturation phase
#   BENCH_RATE (5), BENCH_RATE_SECS (5): the fixed-rate latency phase of (a)
#   BENCH_PUBLISHERS (4)    publisher connections (64 in (b64))
#   BENCH_EXTRA_SUBS (100)  subscribers of the payload and slow-subscriber scenarios
#   BENCH_SWEEP_SECS (30)   length of each step of the open-loop sweep (0: no sweep)
#   BENCH_SWEEP_PCTS ("25 50 75 90 110"): sweep steps, % of the measured capacity
#   BENCH_FANOUT_SUBS (5000) subscribers of the one character in (f)
#   BENCH_FANOUT_LIMIT (500) FANOUT_LIMIT of (f)'s relay server
#   BENCH_LOADGEN_CPU (0), BENCH_SERVER_CPUS (1): the taskset split
#   BENCH_RUNTIME (miniflare): how the workerd-based servers run, all alike:
#                           miniflare (scripts/serve-miniflare.mjs: Miniflare
#                           directly, one workerd and no proxy in front, the
#                           shape of production) or local (serve-local.mjs:
#                           behind wrangler's proxy, as earlier runs)
# Ports: free ones. All servers are started, awaited (/healthz) and stopped by
# the one launcher, scripts/server.mjs.
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

ROUNDS=${BENCH_ROUNDS:-3}
SUBS=${BENCH_SUBS:-1000}
SECS=${BENCH_SECS:-8}
RATE=${BENCH_RATE:-5}
RATE_SECS=${BENCH_RATE_SECS:-5}
PUBLISHERS=${BENCH_PUBLISHERS:-4}
EXTRA_SUBS=${BENCH_EXTRA_SUBS:-100}
SWEEP_SECS=${BENCH_SWEEP_SECS:-30}
SWEEP_PCTS=${BENCH_SWEEP_PCTS:-25 50 75 90 110}
FANOUT_SUBS=${BENCH_FANOUT_SUBS:-5000}
FANOUT_RELAY_LIMIT=${BENCH_FANOUT_LIMIT:-500}
ALL_SCENARIOS="a a_batch b c d p100 p1k p16k b64 r sweep slow f"
ONLY=${BENCH_ONLY:-}
for s in $ONLY; do
  case " $ALL_SCENARIOS " in *" $s "*) ;; *) echo "bench: unknown scenario in BENCH_ONLY: $s (one of: $ALL_SCENARIOS)" >&2; exit 2 ;; esac
done
if [ -n "$ONLY" ] && [ "$OUT" = BENCHMARKS.md ]; then
  echo "bench: BENCH_ONLY runs a subset: give --out FILE (BENCHMARKS.md is the full run's report)" >&2
  exit 2
fi
# want SCENARIO: chosen by BENCH_ONLY (or no BENCH_ONLY).
want() { [ -z "$ONLY" ] || [[ " $ONLY " == *" $1 "* ]]; }
any_of() { local s; for s in "$@"; do want "$s" && return 0; done; return 1; }
PEER_SCENARIOS=(a b c d p100 p1k p16k b64 r sweep slow)
LOADGEN_CPU=${BENCH_LOADGEN_CPU:-0}
SERVER_CPUS=${BENCH_SERVER_CPUS:-1}
WRANGLER=node_modules/.bin/wrangler

# The load generator on its own core, every server on the other.
PIN_LOADGEN=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  PIN_LOADGEN=(taskset -c "$LOADGEN_CPU")
  CPU_SPLIT="load generator on CPU $LOADGEN_CPU (taskset -c $LOADGEN_CPU), every server on CPU $SERVER_CPUS (taskset -c $SERVER_CPUS)"
else
  SERVER_CPUS=""
  CPU_SPLIT="no split (fewer than 2 CPUs or no taskset): load generator and servers share the machine"
fi

# (f): the load generator holds BENCH_FANOUT_SUBS sockets and so does one
# workerd (the servers inherit this shell's limit): raise the soft limit on
# open files up to the hard one when it is too low for that.
if want f; then
  if [ "$FANOUT_SUBS" -gt 32768 ]; then
    echo "bench: BENCH_FANOUT_SUBS is at most 32768 (the WebSocket bound of one object, which (f)'s owner-only server needs)" >&2
    exit 2
  fi
  need=$((FANOUT_SUBS + 1024))
  have=$(ulimit -n)
  if [ "$have" != unlimited ] && [ "$have" -lt "$need" ]; then
    ulimit -n "$need" 2>/dev/null || {
      echo "bench: (f) needs $need open files (ulimit -n is $have, hard limit $(ulimit -Hn)); raise it or lower BENCH_FANOUT_SUBS" >&2
      exit 2
    }
  fi
  echo "bench: open files limit $(ulimit -n) (need $need for (f))"
fi

WORK=$(mktemp -d /tmp/gateway-bench.XXXXXX)
source scripts/server.sh
trap servers_stop EXIT

echo "bench: building the load generator (bench/)"
cargo build -q -p bench --release
BIN=$ROOT/target/release

RUNTIME=${BENCH_RUNTIME:-miniflare}
case $RUNTIME in miniflare | local) ;; *) echo "bench: BENCH_RUNTIME is miniflare or local, not $RUNTIME" >&2; exit 2 ;; esac
# The servers do not build (they serve a snapshot): build our Worker first
# when benching the working tree.
if [ "$OURS_CONFIG" = wrangler.dev.toml ]; then bash scripts/build.sh; fi
echo "bench: starting the servers for ${ONLY:-every scenario} ($RUNTIME; $CPU_SPLIT)"
STARTED=()
# Ours without its static assets (the demo page): in the local runtime an
# assets router Worker then sits in front of the Worker and every request and
# WebSocket message passes through it; the peers have none. Auth is off
# explicitly (the config ships with it on).
if any_of "${PEER_SCENARIOS[@]}"; then
  server_start ours --runtime "$RUNTIME" --config "$OURS_CONFIG" \
    --state "$WORK/state-ours" --log "$WORK/ours.log" --var AUTH_ENABLED:false -- --assets off
  STARTED+=(ours)
fi
if want a_batch; then
  server_start ours_batch --runtime "$RUNTIME" --config "$OURS_CONFIG" \
    --state "$WORK/state-ours-batch" --log "$WORK/ours-batch.log" \
    --var AUTH_ENABLED:false --var BATCH_WINDOW_MS:20 -- --assets off
  STARTED+=(ours_batch)
fi
if any_of "${PEER_SCENARIOS[@]}"; then
  server_start partyserver --runtime "$RUNTIME" --config bench/peers/partyserver/wrangler.toml \
    --state "$WORK/state-partyserver" --log "$WORK/partyserver.log"
  server_start durable --runtime "$RUNTIME" --config bench/peers/durable/wrangler.toml \
    --state "$WORK/state-durable" --log "$WORK/durable.log"
  server_start native --runtime exec --log "$WORK/native.log" \
    -- "$BIN/native-server" --listen "127.0.0.1:{port}"
  STARTED+=(partyserver durable native)
fi
# (f): ours holding every socket on the character's own object (FANOUT_LIMIT
# at least the subscribers), and ours with relays past FANOUT_LIMIT sockets.
FANOUT_MAX_SUBS=$((FANOUT_SUBS > 10000 ? FANOUT_SUBS : 10000))
if want f; then
  server_start ours_owner --runtime "$RUNTIME" --config "$OURS_CONFIG" \
    --state "$WORK/state-ours-owner" --log "$WORK/ours-owner.log" --var AUTH_ENABLED:false \
    --var FANOUT_LIMIT:"$((FANOUT_SUBS > 1000 ? FANOUT_SUBS : 1000))" \
    --var MAX_SUBSCRIBERS:"$FANOUT_MAX_SUBS" -- --assets off
  server_start ours_relays --runtime "$RUNTIME" --config "$OURS_CONFIG" \
    --state "$WORK/state-ours-relays" --log "$WORK/ours-relays.log" --var AUTH_ENABLED:false \
    --var FANOUT_LIMIT:"$FANOUT_RELAY_LIMIT" --var MAX_SUBSCRIBERS:"$FANOUT_MAX_SUBS" -- --assets off
  STARTED+=(ours_owner ours_relays)
fi
# One publish each before the first measurement (loads the Durable Object code).
for server in "${STARTED[@]}"; do
  url_var="${server}_URL"
  curl -sf -o /dev/null -X POST -H 'content-type: application/json' \
    -d '{"topic":"main","name":"warmup"}' "${!url_var}/v1/characters/warmup/commands" ||
    { echo "bench: the warmup publish to $server failed" >&2; exit 1; }
done

RESULTS=$WORK/results.jsonl
RUN=$(date +%s)
FAILED=()
url_of() { local v="${1}_URL"; echo "${!v}"; }
pid_of() { local v="${1}_PID"; echo "${!v}"; }
rss_args() {
  case "$1" in
    native) echo "--rss-pid $(pid_of native) --rss-match native-server" ;;
    *) echo "--rss-pid $(pid_of "$1") --rss-match workerd" ;;
  esac
}

# run SCENARIO SERVER ROUND LOADGEN-ARGS...: a loadgen that fails its checks
# (loss, duplicate, reorder, misroute, delivered count) is recorded and the
# run goes on; the report lists it and the script exits 1 at the end.
run() {
  local scenario=$1 server=$2 round=$3
  shift 3
  if ! timeout "${RUN_TIMEOUT:-600}" "${PIN_LOADGEN[@]}" "$BIN/loadgen" --url "$(url_of "$server")" \
    --label "$server" --scenario "$scenario" --round "$round" \
    --prefix "$scenario-$RUN-$round-$server" --publishers "$PUBLISHERS" --out "$RESULTS" \
    --cpu-pid "$(pid_of "$server")" "$@" >/dev/null; then
    echo "bench: loadgen FAILED: round $round, scenario $scenario, server $server" >&2
    FAILED+=("round $round, scenario $scenario, server $server")
  fi
}

SERVERS=(ours partyserver durable native)
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) -eq 1 ]; then order=("${SERVERS[@]}"); else order=(native durable partyserver ours); fi
  echo "bench: round $round of $ROUNDS (${order[*]})"
  if want a; then
    for server in "${order[@]}"; do
      # (a) and (e): the idle RSS is measured after (a)'s sockets are open.
      # shellcheck disable=SC2046
      run a "$server" "$round" --characters 1 --subs "$SUBS" $(rss_args "$server") \
        --phases "max:$SECS,rate:$RATE:$RATE_SECS"
    done
  fi
  # (a'): ours with a 20 ms batching window, against the others' (a).
  if want a_batch; then
    run a_batch ours_batch "$round" --characters 1 --subs "$SUBS" --phases "max:$SECS,rate:$RATE:$RATE_SECS"
  fi
  if want b; then
    for server in "${order[@]}"; do
      run b "$server" "$round" --characters 100 --subs 10 --phases "max:$SECS"
    done
  fi
  if want c; then
    for server in "${order[@]}"; do
      run c "$server" "$round" --characters "$SUBS" --subs 1 --phases "max:$SECS"
    done
  fi
  if want d; then
    for server in "${order[@]}"; do
      run d "$server" "$round" --characters 1 --subs "$SUBS" --topics 10 --phases "max:$SECS"
    done
  fi
  # Payload sizes: the command's JSON body is 100 B, 1 KiB, or 16,000 B (our
  # per-command cap is 16 KiB serialized).
  for payload in 100:p100 1024:p1k 16000:p16k; do
    want "${payload#*:}" || continue
    for server in "${order[@]}"; do
      run "${payload#*:}" "$server" "$round" --characters 1 --subs "$EXTRA_SUBS" \
        --payload "${payload%%:*}" --phases "max:$SECS"
    done
  done
  # (b64) 64 concurrent publishers on (b)'s shape.
  if want b64; then
    for server in "${order[@]}"; do
      run b64 "$server" "$round" --characters 100 --subs 10 --phases "max:$SECS" --publishers 64
    done
  fi
  # (h) reconnect-and-resume: connections per second with `since` (ours and
  # the durable peer replay 10 commands and end with `recovered`; partyserver
  # and native do not resume, so they only send the welcome).
  if want r; then
    for server in "${order[@]}"; do
      resume=()
      case $server in ours | durable) resume=(--resume) ;; esac
      run r "$server" "$round" --reconnect "$SECS" "${resume[@]}"
    done
  fi
  # (f) one character x BENCH_FANOUT_SUBS: every socket on the character's own
  # object, against relays past FANOUT_LIMIT (the listing says how many
  # objects held them; relays deliver after the publish answer, so the
  # answer's `delivered` counts the character's own object only).
  if want f; then
    fan=(ours_owner ours_relays)
    [ $((round % 2)) -eq 1 ] || fan=(ours_relays ours_owner)
    for server in "${fan[@]}"; do
      extra=()
      [ "$server" = ours_relays ] && extra=(--delivered-owner-only)
      run f "$server" "$round" --characters 1 --subs "$FANOUT_SUBS" --phases "max:$SECS" \
        --listing "${extra[@]}"
    done
  fi
done

# Open-loop latency sweep of (a) and (c): fixed rates at BENCH_SWEEP_PCTS of
# each server's median capacity over the rounds (commands/s of the `max`
# phase), latency from each command's scheduled send time.
if [ "$SWEEP_SECS" != 0 ] && want sweep; then
  for scenario in a c; do
    for server in ours partyserver durable; do
      cap=$(jq -s --arg s "$scenario" --arg l "$server" '
        [.[] | select(.scenario == $s and .label == $l and .mode == "max") | .commands_per_s] | sort
        | if length == 0 then 0 else .[(length - 1) / 2 | floor] end' "$RESULTS")
      phases=$(for pct in $SWEEP_PCTS; do
        awk -v c="$cap" -v p="$pct" -v s="$SWEEP_SECS" 'BEGIN { r = c * p / 100; if (r < 0.5) r = 0.5; printf "rate:%.2f:%s\n", r, s }'
      done | paste -sd, -)
      if [ "$cap" = 0 ]; then
        echo "bench: sweep ($scenario) $server skipped: no capacity measured ((${scenario}) did not run)" >&2
        continue
      fi
      echo "bench: sweep ($scenario) $server: capacity $cap commands/s, phases $phases"
      characters=1 subs=$SUBS
      [ "$scenario" = c ] && characters=$SUBS subs=1
      RUN_TIMEOUT=$((7 * SWEEP_SECS * 5 + 600)) run "sweep_$scenario" "$server" 0 \
        --characters "$characters" --subs "$subs" --phases "$phases"
    done
  done
fi

# (g) one slow subscriber (stops reading after its welcome) beside EXTRA_SUBS
# readers, 16,000 B commands: compare with p16k. Once, last: in a trial run it
# wedged a server for good (wrangler's proxy workerd stopped answering even
# /healthz), which would have spoilt every run after it.
if want slow; then
  for server in "${SERVERS[@]}"; do
    run slow "$server" 1 --characters 1 --subs "$EXTRA_SUBS" --slow 1 \
      --payload 16000 --phases "max:$SECS"
  done
fi

# Machine, versions and the exact command, for the report.
{
  echo "command:     ${BENCH_COMMAND:-scripts/bench.sh $ARGS_GIVEN} (BENCH_ROUNDS=$ROUNDS BENCH_SUBS=$SUBS BENCH_SECS=$SECS BENCH_RATE=$RATE BENCH_RATE_SECS=$RATE_SECS BENCH_PUBLISHERS=$PUBLISHERS BENCH_EXTRA_SUBS=$EXTRA_SUBS BENCH_SWEEP_SECS=$SWEEP_SECS BENCH_SWEEP_PCTS=\"$SWEEP_PCTS\" BENCH_FANOUT_SUBS=$FANOUT_SUBS BENCH_FANOUT_LIMIT=$FANOUT_RELAY_LIMIT BENCH_ONLY=\"${ONLY:-all}\" BENCH_RUNTIME=$RUNTIME, ours from $OURS_CONFIG with --assets off)"
  echo "cpu split:   $CPU_SPLIT"
  case $RUNTIME in
    miniflare) echo "runtime:     Miniflare directly (scripts/serve-miniflare.mjs): one workerd per server, no wrangler proxy" ;;
    local) echo "runtime:     wrangler's local runtime (scripts/serve-local.mjs): a proxy workerd in front of each server" ;;
  esac
  echo "date:        $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "cpu:         $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') x $(nproc)"
  echo "memory:      $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "load avg:    $(cut -d' ' -f1-3 /proc/loadavg) (at the end of the run)"
  echo "kernel:      $(uname -sr)"
  echo "open files:  $(ulimit -n) (ulimit -n of the load generator and the servers)"
  echo "rustc:       $(rustc --version)"
  echo "node:        $(node --version)"
  echo "wrangler:    $("$WRANGLER" --version 2>/dev/null | tail -1)"
  echo "workerd:     $(node -p 'require("./node_modules/workerd/package.json").version' 2>/dev/null || echo '?')"
  echo "partyserver: $(node -p 'require("./node_modules/partyserver/package.json").version')"
  for crate in tokio tokio-tungstenite hdrhistogram dashmap; do
    printf '%-12s %s\n' "$crate:" "$(awk -v n="$crate" '$0 == "name = \"" n "\"" {getline; gsub(/version = |"/, ""); print; exit}' Cargo.lock)"
  done
  if [ "${#FAILED[@]}" -gt 0 ]; then
    echo "FAILED:      ${#FAILED[@]} loadgen run(s) failed their checks:"
    printf '             %s\n' "${FAILED[@]}"
  else
    echo "checks:      every loadgen run passed (no loss, duplicate, reorder or misroute; delivered counts match)"
  fi
} >"$WORK/meta.txt"

FOOTER=()
[ -f bench/BENCHMARKS.footer.md ] && FOOTER=(--footer bench/BENCHMARKS.footer.md)
"$BIN/bench-report" --results "$RESULTS" --header bench/BENCHMARKS.header.md \
  --meta "$WORK/meta.txt" "${FOOTER[@]}" >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
cp "$RESULTS" "${OUT%.md}.jsonl"
echo "bench: wrote $OUT and ${OUT%.md}.jsonl"
if [ "${#FAILED[@]}" -gt 0 ]; then
  printf 'bench: loadgen failed its checks in: %s\n' "${FAILED[@]}" >&2
  exit 1
fi
