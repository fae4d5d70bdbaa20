#!/usr/bin/env bash
# What waking an object costs, ours against the durable JS peer: N characters
# with one subscriber each (scenario (c)'s shape), one publish to each while
# the objects are awake, then, after IDLE seconds without events (the runtime
# hibernates them), one more publish to each. Prints the wall time per publish
# and the server's CPU per publish (its whole process tree, from /proc) for
# both rounds. Servers are started like `make bench` starts them (Miniflare
# directly, pinned to CPU 1; the client on CPU 0), one after the other.
#   scripts/wake-cost.sh            (N=200, IDLE=40)
#   WAKE_N=500 WAKE_IDLE=60 scripts/wake-cost.sh
#   scripts/wake-cost.sh BUILD_A BUILD_B   (copies of build/, side by side
#                                           with the durable peer, ROUNDS times
#                                           in turn: WAKE_ROUNDS, default 1)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${WAKE_N:-200}
IDLE=${WAKE_IDLE:-40}
source scripts/server.sh
trap servers_stop EXIT
[ -d build ] || scripts/build.sh
PIN_CLIENT=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  SERVER_CPUS=1
  PIN_CLIENT=(taskset -c 0)
fi
SIDES=()
if [ "$#" -gt 0 ]; then
  i=0
  for build in "$@"; do
    i=$((i + 1))
    server_start_build "ours$i" "$build" --runtime miniflare --var AUTH_ENABLED:false -- --assets off
    SIDES+=("ours$i")
  done
else
  server_start ours --runtime miniflare --var AUTH_ENABLED:false -- --assets off
  SIDES+=(ours)
fi
server_start durable --runtime miniflare --config bench/peers/durable/wrangler.toml
SIDES+=(durable)
ORDER=()
for round in $(seq "${WAKE_ROUNDS:-1}"); do ORDER+=("${SIDES[@]}"); done
for side in "${ORDER[@]}"; do
  url_var="${side}_URL" pid_var="${side}_PID"
  "${PIN_CLIENT[@]}" node - "${!url_var}" "$side" "$(pgrep -g "${!pid_var}" | tr '\n' ' ')" "$N" "$IDLE" <<'JS'
const fs = require("fs");
const WebSocket = require("ws");
const [base, label, pidList, nText, idleText] = process.argv.slice(2);
const pids = pidList.trim().split(/\s+/);
const n = Number(nText);
const cpuMs = () => pids.reduce((sum, p) => {
  try {
    const f = fs.readFileSync(`/proc/${p}/stat`, "utf8").split(") ")[1].split(" ");
    return sum + (Number(f[11]) + Number(f[12])) * 10;
  } catch { return sum; }
}, 0);
const tag = `wake-${label}-${Date.now().toString(36)}`;
const publish = async (c) => {
  const r = await fetch(`${base}/v1/characters/${c}/commands`, {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ topic: "main", name: "n" }),
  });
  await r.text();
  if (!r.ok) throw new Error(`${label}: publish answered ${r.status}`);
};
const round = async () => {
  const c0 = cpuMs(), t0 = performance.now();
  for (let i = 0; i < n; i++) await publish(`${tag}-${i}`);
  return { wall: (performance.now() - t0) / n, cpu: (cpuMs() - c0) / n };
};
(async () => {
  let got = 0;
  const sockets = [];
  for (let i = 0; i < n; i++) {
    const ws = new WebSocket(`${base.replace(/^http/, "ws")}/v1/characters/${tag}-${i}/subscribe?topics=main`);
    ws.on("message", (m) => { if (String(m).includes('"type":"command"')) got++; });
    await new Promise((ok, fail) => { ws.on("open", ok); ws.on("error", fail); });
    sockets.push(ws);
  }
  for (let i = 0; i < n; i++) await publish(`${tag}-${i}`); // every object has stored once
  const awake = await round();
  await new Promise((r) => setTimeout(r, Number(idleText) * 1000));
  const woken = await round();
  await new Promise((r) => setTimeout(r, 1000));
  const f = (x) => x.toFixed(2);
  console.log(`${label}: awake ${f(awake.wall)} ms wall, ${f(awake.cpu)} ms server CPU per publish; ` +
    `after ${idleText} s idle ${f(woken.wall)} ms wall, ${f(woken.cpu)} ms server CPU per publish; ` +
    `deliveries ${got} of ${3 * n}`);
  for (const s of sockets) s.terminate();
  if (got !== 3 * n) process.exit(1);
})().catch((e) => { console.error(e); process.exit(1); });
JS
done
