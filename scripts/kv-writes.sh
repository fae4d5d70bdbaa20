#!/usr/bin/env bash
# KV writes of the event log per 1,000 commands, two builds side by side in one
# run (BENCHMARKS.md, "KV writes per 1,000 commands"):
#   scripts/kv-writes.sh BUILD_DIR_BEFORE BUILD_DIR_AFTER
# Each BUILD_DIR is a copy of build/ (the output of scripts/build.sh). Both are
# served at once in the inspector-less local runtime (scripts/serve-local.mjs,
# without static assets, as `make bench` serves ours) with the dev config's
# vars (LOG_FLUSH_SECONDS unset: its default). The load generator of `make
# bench` then runs scenario (b) (100 characters x 10 subscribers) and (c)
# (BENCH_SUBS characters x 1 subscriber), `max:BENCH_SECS` with
# BENCH_PUBLISHERS publishers over HTTP, before then after for each. Once every
# buffer was flushed (no put for LOG_WAIT_SECONDS, default 40: longer than the
# default flush interval), the ANIMATION_LOGS puts of each run
# are counted in each server's local KV state: the simulator keeps one blob file
# per put, and every batch has a key of its own, so blobs holding events of a
# run's characters = that run's KV writes (connects, disconnects and the final
# flush included).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
before=$(realpath "$1"); after=$(realpath "$2")
SUBS=${BENCH_SUBS:-1000}
SECS=${BENCH_SECS:-8}
PUBLISHERS=${BENCH_PUBLISHERS:-4}
WAIT=${LOG_WAIT_SECONDS:-40}
WORK=$(mktemp -d /tmp/gateway-kv-writes.XXXXXX)
source scripts/server.sh
trap servers_stop EXIT
cargo build -q -p bench --release
BIN=$ROOT/target/release
for side in before after; do
  dir=$before; [ "$side" = after ] && dir=$after
  server_start_build "$side" "$dir" --runtime local \
    --state "$WORK/state-$side" --log "$WORK/$side.log" --var AUTH_ENABLED:false -- --assets off
done
RESULTS=$WORK/results.jsonl
RUN=$(date +%s)
run() { # scenario side characters subs
  local url_var="${2}_URL" pid_var="${2}_PID"
  echo "kv-writes: ($1) $3 x $4 against $2"
  timeout 300 "$BIN/loadgen" --url "${!url_var}" --label "$2" --scenario "$1" \
    --prefix "kv-$1-$RUN-$2" --publishers "$PUBLISHERS" --out "$RESULTS" \
    --cpu-pid "${!pid_var}" --characters "$3" --subs "$4" --phases "max:$SECS" >/dev/null
}
for side in before after; do run b "$side" 100 10; done
for side in before after; do run c "$side" "$SUBS" 1; done
# Until no put came for WAIT seconds (longer than the flush interval), so every
# buffer was flushed; at most 10 minutes.
blobs() { find "$WORK"/state-*/v3/kv -path '*logs*/blobs/*' -type f 2>/dev/null | wc -l; }
echo "kv-writes: waiting until no event-log put came for ${WAIT} s"
last=$(blobs) quiet=0 waited=0
while [ "$quiet" -lt "$WAIT" ] && [ "$waited" -lt 600 ]; do
  sleep 5; waited=$((waited + 5)); now=$(blobs)
  if [ "$now" = "$last" ]; then quiet=$((quiet + 5)); else quiet=0 last=$now; fi
done
node - "$RESULTS" "$WORK" "$RUN" <<'JS'
const fs = require("fs"), path = require("path");
const [results, work, run] = process.argv.slice(2);
const rows = fs.readFileSync(results, "utf8").trim().split("\n").map(JSON.parse);
/** Per character-name prefix: puts (blobs) and events, from a server's local KV. */
function kvWrites(state) {
  const root = path.join(state, "v3", "kv");
  const blobs = [];
  for (const ns of fs.readdirSync(root).filter((n) => n.includes("logs"))) {
    const dir = path.join(root, ns, "blobs");
    if (!fs.existsSync(dir)) continue;
    for (const f of fs.readdirSync(dir)) {
      try { blobs.push(JSON.parse(fs.readFileSync(path.join(dir, f), "utf8"))); } catch { /* not a batch */ }
    }
  }
  return (prefix) => {
    const mine = blobs.filter((b) => Array.isArray(b) && b.some((e) => (e.character ?? "").startsWith(prefix)));
    return { puts: mine.length, events: mine.reduce((n, b) => n + b.length, 0) };
  };
}
const states = { before: kvWrites(path.join(work, "state-before")), after: kvWrites(path.join(work, "state-after")) };
const out = {};
for (const r of rows) {
  const kv = states[r.label](`kv-${r.scenario}-${run}-${r.label}-`);
  out[`${r.scenario} ${r.label}`] = { ...kv, commands: r.commands, per1000: (kv.puts * 1000) / Math.max(1, r.commands) };
}
const f = (x, d = 1) => Number(x).toFixed(d);
console.log("\n| scenario | build | commands | log events | KV writes | KV writes per 1,000 commands |");
console.log("|---|---|---:|---:|---:|---:|");
for (const s of ["b", "c"]) for (const side of ["before", "after"]) {
  const o = out[`${s} ${side}`];
  if (o) console.log(`| (${s}) | ${side} | ${o.commands} | ${o.events} | ${o.puts} | ${f(o.per1000)} |`);
}
JS
echo "kv-writes: raw loadgen results in $RESULTS"
