#!/usr/bin/env bash
# Two (or more) builds of the gateway side by side in one run, on the load
# generator of `make bench`: for a change that may cost speed, before against
# after.
#   scripts/bench-ab.sh BUILD_DIR_A BUILD_DIR_B [ROUNDS]
#   BENCH_AB_MORE="DIR_C DIR_D" scripts/bench-ab.sh A B [ROUNDS]   (sides C, D...)
# Each BUILD_DIR is a copy of build/ (the output of scripts/build.sh). All are
# served at once as `make bench` serves ours (BENCH_RUNTIME, miniflare by
# default: Miniflare directly, no proxy; without static assets), pinned like
# it (servers on BENCH_SERVER_CPUS, 1; the load generator on BENCH_LOADGEN_CPU,
# 0), started by the one launcher; one scenario of BENCHMARKS.md (BENCH_AB_SCENARIO: a, the default,
# 1 character x BENCH_SUBS subscribers; b, 100 x 10; c, BENCH_SUBS characters x
# 1; d, 1 x BENCH_SUBS over 10 topics; r, (h)'s reconnect-and-resume loop),
# BENCH_AB_PAYLOAD bytes per command when set (the payload scenarios: e.g.
# BENCH_AB_SCENARIO=a BENCH_SUBS=100 BENCH_AB_PAYLOAD=16000 is p16k's shape),
# a saturation phase of BENCH_SECS s with
# BENCH_PUBLISHERS publishers, then runs against A and B in turn, A B A B ...,
# so drift in the machine's load hits every side alike. Prints one line per run and
# the median of each side; raw results go to a JSONL file named at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
rounds=${3:-3}
DIRS=("$(realpath "$1")" "$(realpath "$2")")
for more in ${BENCH_AB_MORE:-}; do DIRS+=("$(realpath "$more")"); done
SIDES=(A B C D E F)
SIDES=("${SIDES[@]:0:${#DIRS[@]}}")
RUNTIME=${BENCH_RUNTIME:-miniflare}
PIN_LOADGEN=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  SERVER_CPUS=${BENCH_SERVER_CPUS:-1}
  PIN_LOADGEN=(taskset -c "${BENCH_LOADGEN_CPU:-0}")
fi
SUBS=${BENCH_SUBS:-1000}
SECS=${BENCH_SECS:-8}
PUBLISHERS=${BENCH_PUBLISHERS:-4}
SCENARIO=${BENCH_AB_SCENARIO:-a}
case $SCENARIO in
  a) SHAPE=(--characters 1 --subs "$SUBS") ;;
  b) SHAPE=(--characters 100 --subs 10) ;;
  c) SHAPE=(--characters "$SUBS" --subs 1) ;;
  d) SHAPE=(--characters 1 --subs "$SUBS" --topics 10) ;;
  r) SHAPE=(--reconnect "$SECS" --resume) ;;
  *) echo "bench-ab: BENCH_AB_SCENARIO is a, b, c, d or r, not $SCENARIO" >&2; exit 2 ;;
esac
WORK=$(mktemp -d /tmp/gateway-bench-ab.XXXXXX)
source scripts/server.sh
trap servers_stop EXIT
cargo build -q -p bench --release
BIN=$ROOT/target/release
for i in "${!SIDES[@]}"; do
  side=${SIDES[$i]} dir=${DIRS[$i]}
  server_start_build "$side" "$dir" --runtime "$RUNTIME" \
    --state "$WORK/state-$side" --log "$WORK/$side.log" --var AUTH_ENABLED:false -- --assets off
  url_var="${side}_URL"
  curl -sf -o /dev/null -X POST -H 'content-type: application/json' \
    -d '{"topic":"main","name":"warmup"}' "${!url_var}/v1/characters/warmup/commands"
done
RESULTS=$WORK/results.jsonl
for i in $(seq 1 "$rounds"); do
  for side in "${SIDES[@]}"; do
    url_var="${side}_URL"; pid_var="${side}_PID"
    timeout 300 "${PIN_LOADGEN[@]}" "$BIN/loadgen" --url "${!url_var}" --label "$side" --scenario "$SCENARIO" \
      --prefix "ab-$i-$side" --publishers "$PUBLISHERS" --out "$RESULTS" \
      --cpu-pid "${!pid_var}" "${SHAPE[@]}" ${BENCH_AB_PAYLOAD:+--payload "$BENCH_AB_PAYLOAD"} $([ "$SCENARIO" = r ] || echo --phases "max:$SECS") >/dev/null
  done
done
node - "$RESULTS" "${SIDES[@]}" <<'JS'
const rows = require("fs").readFileSync(process.argv[2], "utf8").trim().split("\n").map(JSON.parse)
  .filter((r) => r.phase && (r.phase.startsWith("max") || r.phase.startsWith("reconnect")));
const med = (xs) => { const s = [...xs].sort((x, y) => x - y); return s[Math.floor(s.length / 2)]; };
const f = (x, d = 1) => (x === undefined ? "-" : Number(x).toFixed(d));
for (const r of rows) {
  if (r.mode === "reconnect") { console.log(`${r.label}: ${f(r.connects_per_s)} connects/s with since, p50 ${f(r.p50_ms)} ms, server CPU ${f(r.server_cpu_ms_per_connect, 3)} ms/connect`); continue; }
  console.log(`${r.label}: ${f(r.commands_per_s)} commands/s, ${f(r.deliveries_per_s, 0)} deliveries/s, p50 ${f(r.p50_ms)} ms, p99 ${f(r.p99_ms)} ms, server CPU ${f(r.server_cpu_ms_per_command, 3)} ms/command, ${f(r.server_cpu_us_per_delivery)} us/delivery, lost ${r.expected - r.delivered}`);
}
for (const side of process.argv.slice(3)) {
  const rs = rows.filter((r) => r.label === side);
  if (rs[0]?.mode === "reconnect") { console.log(`${side} median of ${rs.length}: ${f(med(rs.map((r) => r.connects_per_s)))} connects/s, ${f(med(rs.map((r) => r.server_cpu_ms_per_connect)), 3)} ms CPU/connect`); continue; }
  console.log(`${side} median of ${rs.length}: ${f(med(rs.map((r) => r.commands_per_s)))} commands/s, ${f(med(rs.map((r) => r.deliveries_per_s)), 0)} deliveries/s, p99 ${f(med(rs.map((r) => r.p99_ms)))} ms, ${f(med(rs.map((r) => r.server_cpu_ms_per_command)), 3)} ms CPU/command, ${f(med(rs.map((r) => r.server_cpu_us_per_delivery)))} us CPU/delivery`);
}
JS
echo "bench-ab: raw results in $RESULTS"
