#!/usr/bin/env bash
# The per-object costs behind docs/scaling.md, side by side on the load
# generator of `make bench` (same runtime, pinning and checks):
#   scripts/bench-scale.sh [OUT_DIR]      (default bench/scale; JSONL files)
# Four servers of ours, all Miniflare directly (BENCH_RUNTIME), auth off,
# started at once, pinned to BENCH_SERVER_CPUS (1), the load generator to
# BENCH_LOADGEN_CPU (0):
#   owner   FANOUT_LIMIT=10000: every socket on the character's own object
#   r10     FANOUT_LIMIT=10: 10 on the character's object, 10 on each relay
#   r500    FANOUT_LIMIT=500
#   wake    FANOUT_LIMIT=SCALE_WAKE_SUBS/2, log level "log" (for its wake lines)
# Each round (SCALE_ROUNDS, 3), alternating the order within each pair:
#   few:  1 character x (10 + 10 x SCALE_RELAYS) sockets (110), owner vs r10:
#         `rate:SCALE_RATE:SCALE_RATE_SECS` (20/s for 10 s: every command one
#         feed request per relay) then `max:SCALE_SECS`. The CPU per command
#         difference over the relays is the cost of feeding one relay one
#         command (owner's request + relay's turn), plus 10 relay-held
#         deliveries' difference; the latency difference is the extra hop.
#   many: 1 character x SCALE_SUBS (5000), owner vs r500: `max:SCALE_SECS`
#         then `rate:SCALE_MANY_RATE:SCALE_RATE_SECS` (4/s). With few, it
#         gives the CPU per delivery on the owner (slope over 110 -> 5000
#         sockets) and on a relay.
# Then once: scripts/relay-wake.mjs on `wake` (SCALE_WAKE_SUBS sockets, half
# on one relay; SCALE_WAKE_CYCLES idle periods of SCALE_WAKE_IDLE s).
# Outputs: OUT_DIR/costs.jsonl (loadgen lines, labels owner/r10/r500,
# scenarios few/many), OUT_DIR/wake.jsonl, OUT_DIR/meta.txt; and a summary
# (medians) on stdout, also in OUT_DIR/summary.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT_DIR=${1:-bench/scale}
ROUNDS=${SCALE_ROUNDS:-3}
SUBS=${SCALE_SUBS:-5000}
RELAYS=${SCALE_RELAYS:-10}
RATE=${SCALE_RATE:-20}
MANY_RATE=${SCALE_MANY_RATE:-4}
RATE_SECS=${SCALE_RATE_SECS:-10}
SECS=${SCALE_SECS:-8}
WAKE_SUBS=${SCALE_WAKE_SUBS:-1000}
WAKE_CYCLES=${SCALE_WAKE_CYCLES:-3}
WAKE_IDLE=${SCALE_WAKE_IDLE:-30}
RUNTIME=${BENCH_RUNTIME:-miniflare}
FEW=$((10 + 10 * RELAYS))

PIN_LOADGEN=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  SERVER_CPUS=${BENCH_SERVER_CPUS:-1}
  PIN_LOADGEN=(taskset -c "${BENCH_LOADGEN_CPU:-0}")
fi
need=$((SUBS + 1024))
have=$(ulimit -n)
if [ "$have" != unlimited ] && [ "$have" -lt "$need" ]; then
  ulimit -n "$need" 2>/dev/null || { echo "bench-scale: need $need open files (ulimit -n $have, hard $(ulimit -Hn))" >&2; exit 2; }
fi

mkdir -p "$OUT_DIR"
COSTS=$OUT_DIR/costs.jsonl
WAKE=$OUT_DIR/wake.jsonl
# SCALE_WAKE_ONLY=1: only the wake measurement, appended to wake.jsonl
# (label wake-SCALE_WAKE_SUBS), the cost results left as they are.
WAKE_ONLY=${SCALE_WAKE_ONLY:-}
if [ -z "$WAKE_ONLY" ]; then : >"$COSTS"; : >"$WAKE"; fi
WORK=$(mktemp -d /tmp/gateway-bench-scale.XXXXXX)
source scripts/server.sh
trap servers_stop EXIT
cargo build -q -p bench --release
BIN=$ROOT/target/release
[ "${SCALE_NO_BUILD:-}" = 1 ] || bash scripts/build.sh

common=(--runtime "$RUNTIME" --config wrangler.dev.toml --var AUTH_ENABLED:false --var MAX_SUBSCRIBERS:10000)
COST_SERVERS=(owner r10 r500)
[ -z "$WAKE_ONLY" ] || COST_SERVERS=()
[ -n "$WAKE_ONLY" ] || server_start owner "${common[@]}" --state "$WORK/state-owner" --log "$WORK/owner.log" --var FANOUT_LIMIT:10000 -- --assets off
[ -n "$WAKE_ONLY" ] || server_start r10 "${common[@]}" --state "$WORK/state-r10" --log "$WORK/r10.log" --var FANOUT_LIMIT:10 -- --assets off
[ -n "$WAKE_ONLY" ] || server_start r500 "${common[@]}" --state "$WORK/state-r500" --log "$WORK/r500.log" --var FANOUT_LIMIT:500 -- --assets off
server_start wake "${common[@]}" --state "$WORK/state-wake" --log "$WORK/wake.log" --log-level log \
  --var FANOUT_LIMIT:$((WAKE_SUBS / 2)) -- --assets off
for s in "${COST_SERVERS[@]}" wake; do
  url_var="${s}_URL"
  curl -sf -o /dev/null -X POST -H 'content-type: application/json' \
    -d '{"topic":"main","name":"warmup"}' "${!url_var}/v1/characters/warmup/commands"
done

FAILED=0
run() {
  local scenario=$1 server=$2 round=$3
  shift 3
  local url_var="${server}_URL" pid_var="${server}_PID" extra=()
  [ "$server" = owner ] || extra=(--delivered-owner-only)
  if ! timeout 600 "${PIN_LOADGEN[@]}" "$BIN/loadgen" --url "${!url_var}" --label "$server" \
    --scenario "$scenario" --round "$round" --prefix "scale-$scenario-$round-$server-$$" \
    --out "$COSTS" --cpu-pid "${!pid_var}" --listing "${extra[@]}" "$@" >/dev/null; then
    echo "bench-scale: loadgen FAILED: round $round, $scenario, $server" >&2
    FAILED=$((FAILED + 1))
  fi
}
for round in $(seq 1 "$ROUNDS"); do
  [ -z "$WAKE_ONLY" ] || break
  few=(owner r10) many=(owner r500)
  if [ $((round % 2)) -eq 0 ]; then few=(r10 owner) many=(r500 owner); fi
  echo "bench-scale: round $round of $ROUNDS"
  for s in "${few[@]}"; do
    run few "$s" "$round" --characters 1 --subs "$FEW" --phases "rate:$RATE:$RATE_SECS,max:$SECS"
  done
  for s in "${many[@]}"; do
    run many "$s" "$round" --characters 1 --subs "$SUBS" --phases "max:$SECS,rate:$MANY_RATE:$RATE_SECS"
  done
done
echo "bench-scale: relay wake ($WAKE_SUBS sockets, $WAKE_CYCLES idle periods of $WAKE_IDLE s)"
"${PIN_LOADGEN[@]}" node scripts/relay-wake.mjs --url "$wake_URL" --subs "$WAKE_SUBS" \
  --cycles "$WAKE_CYCLES" --idle "$WAKE_IDLE" --log "$wake_LOG" --out "$WAKE" --label "wake-$WAKE_SUBS" || FAILED=$((FAILED + 1))
if [ -n "$WAKE_ONLY" ]; then
  echo "bench-scale: wake only ($WAKE_SUBS sockets): appended to $WAKE"
  exit "$FAILED"
fi

{
  echo "command:   scripts/bench-scale.sh $OUT_DIR (SCALE_ROUNDS=$ROUNDS SCALE_SUBS=$SUBS SCALE_RELAYS=$RELAYS SCALE_RATE=$RATE SCALE_MANY_RATE=$MANY_RATE SCALE_RATE_SECS=$RATE_SECS SCALE_SECS=$SECS SCALE_WAKE_SUBS=$WAKE_SUBS SCALE_WAKE_CYCLES=$WAKE_CYCLES SCALE_WAKE_IDLE=$WAKE_IDLE BENCH_RUNTIME=$RUNTIME)"
  echo "date:      $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "cpu:       $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') x $(nproc); servers on CPU ${SERVER_CPUS:-any}, load generator on ${BENCH_LOADGEN_CPU:-0}"
  echo "load avg:  $(cut -d' ' -f1-3 /proc/loadavg) (at the end)"
  echo "workerd:   $(node -p 'require("./node_modules/workerd/package.json").version' 2>/dev/null || echo '?')"
  echo "commit:    $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src routing || echo ' (with uncommitted changes to src/ or routing/)')"
  echo "failed:    $FAILED run(s)"
} >"$OUT_DIR/meta.txt"

node - "$COSTS" "$WAKE" "$FEW" "$SUBS" "$RELAYS" <<'JS' | tee "$OUT_DIR/summary.txt"
const fs = require("fs");
const [costsFile, wakeFile, few, subs, relays] = process.argv.slice(2);
const rows = fs.readFileSync(costsFile, "utf8").trim().split("\n").filter(Boolean).map(JSON.parse);
const med = (xs) => { const s = xs.filter((x) => x !== undefined && x !== null).sort((a, b) => a - b); if (!s.length) return NaN; const n = s.length; return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2; };
const f = (x, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : "-");
const of = (sc, label, mode) => rows.filter((r) => r.scenario === sc && r.label === label && r.mode === mode);
const m = (sc, label, mode, k) => med(of(sc, label, mode).map((r) => r[k]));
for (const [sc, pair] of [["few", ["owner", "r10"]], ["many", ["owner", "r500"]]]) {
  for (const mode of ["rate", "max"]) {
    for (const label of pair) {
      const rs = of(sc, label, mode);
      if (!rs.length) continue;
      console.log(`${sc} ${mode} ${label} (median of ${rs.length}; objects ${m(sc, label, mode, "objects")}): ${f(m(sc, label, mode, "commands_per_s"))} commands/s, ${f(m(sc, label, mode, "deliveries_per_s"), 0)} deliveries/s, p50 ${f(m(sc, label, mode, "p50_ms"), 2)} ms, p99 ${f(m(sc, label, mode, "p99_ms"), 2)} ms, CPU ${f(m(sc, label, mode, "server_cpu_ms_per_command"), 3)} ms/command, ${f(m(sc, label, mode, "server_cpu_us_per_delivery"), 1)} us/delivery, lost ${rs.reduce((a, r) => a + r.lost, 0)}, failed ${rs.filter((r) => !r.ok).length}`);
    }
  }
}
// Per-round differences (same round, side by side), then their medians.
const perRound = (sc, a, b, mode, k) => {
  const out = [];
  for (const ra of of(sc, a, mode)) { const rb = of(sc, b, mode).find((r) => r.round === ra.round); if (rb) out.push(rb[k] - ra[k]); }
  return out;
};
// Relays holding sockets, from the admin listing of each run.
const nFew = m("few", "r10", "rate", "objects") - 1, nMany = m("many", "r500", "max", "objects") - 1;
console.log(`relays holding sockets: ${nFew} (few, r10), ${nMany} (many, r500)`);
for (const mode of ["rate", "max"]) {
  const d1 = perRound("few", "owner", "r10", mode, "server_cpu_ms_per_command").map((x) => (x * 1000) / nFew);
  const d2 = perRound("many", "owner", "r500", mode, "server_cpu_ms_per_command").map((x) => (x * 1000) / nMany);
  const D1 = med(d1), D2 = med(d2);
  const db = (D2 - D1) / (500 - 10), fwd = D1 - 10 * db;
  console.log(`${mode}: extra CPU per relay per command: ${f(D1)} us with 10 sockets per relay (rounds ${d1.map((x) => f(x)).join(", ")}), ${f(D2)} us with 500 (rounds ${d2.map((x) => f(x)).join(", ")}); so relay-held minus owner-held delivery ${f(db, 2)} us, feeding one relay one command ${f(fwd)} us`);
}
const oFew = m("few", "owner", "max", "server_cpu_ms_per_command"), oMany = m("many", "owner", "max", "server_cpu_ms_per_command");
const slope = ((oMany - oFew) * 1000) / (Number(subs) - Number(few));
console.log(`owner only, max: ${f(oFew, 3)} ms/command at ${few} sockets, ${f(oMany, 3)} ms/command at ${subs}: ${f(slope, 2)} us per added delivery, ${f(oFew * 1000 - Number(few) * slope)} us per command besides`);
const oFewR = m("few", "owner", "rate", "server_cpu_ms_per_command"), oManyR = m("many", "owner", "rate", "server_cpu_ms_per_command");
const slopeR = ((oManyR - oFewR) * 1000) / (Number(subs) - Number(few));
console.log(`owner only, fixed rate: ${f(oFewR, 3)} ms/command at ${few} sockets, ${f(oManyR, 3)} ms/command at ${subs}: ${f(slopeR, 2)} us per added delivery, ${f(oFewR * 1000 - Number(few) * slopeR)} us per command besides`);
for (const [sc, b] of [["few", "r10"], ["many", "r500"]]) {
  for (const k of ["p50_ms", "p99_ms"]) {
    const d = perRound(sc, "owner", b, "rate", k);
    console.log(`${sc} rate ${k}: ${b} minus owner ${f(med(d), 2)} ms (rounds ${d.map((x) => f(x, 2)).join(", ")})`);
  }
}
if (fs.existsSync(wakeFile) && fs.statSync(wakeFile).size) {
  const w = fs.readFileSync(wakeFile, "utf8").trim().split("\n").map(JSON.parse);
  for (const kind of ["warm", "cold", "warm-after"]) {
    const ws = w.filter((r) => r.kind === kind);
    if (!ws.length) continue;
    console.log(`wake ${kind} (${ws.length}): owner first ${f(med(ws.map((r) => r.owner_first_ms)))} ms, relay first ${f(med(ws.map((r) => r.relay_first_ms)))} ms, relay's first - owner's first ${f(med(ws.map((r) => r.relay_extra_first_ms)))} ms, owner last ${f(med(ws.map((r) => r.owner_last_ms)))} ms, relay last ${f(med(ws.map((r) => r.relay_last_ms)))} ms, publish answer ${f(med(ws.map((r) => r.publish_answer_ms)))} ms${ws[0].woke_lines === undefined ? "" : `, "woke with" lines ${ws.map((r) => r.woke_lines).join(",")}`}`);
  }
}
JS
echo "bench-scale: raw results in $OUT_DIR ($FAILED failed)"
[ "$FAILED" -eq 0 ]
