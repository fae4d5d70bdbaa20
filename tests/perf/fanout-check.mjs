#!/usr/bin/env node
// Fan-out check: one character, N subscribers (default 1000), P publishes
// (default 100) sent one after another over HTTP. Verifies every subscriber
// got every command exactly once in seq order, and reports the
// publish-to-receive latency (from just before the POST to the frame's
// arrival at each subscriber) as p50/p99/max over all deliveries.
//   node tests/perf/fanout-check.mjs --base-url http://127.0.0.1:8787 [--subs 1000] [--publishes 100]
import WebSocket from "ws";

const arg = (name, def) => { const i = process.argv.indexOf(`--${name}`); return i > 0 ? process.argv[i + 1] : def; };
const BASE = arg("base-url", "http://127.0.0.1:8787");
const SUBS = Number(arg("subs", 1000));
const PUBS = Number(arg("publishes", 100));
const character = `fanout-${Date.now().toString(36)}`;
const wsUrl = `${BASE.replace(/^http/, "ws")}/v1/characters/${character}/subscribe`;

const sentAt = new Map(); // seq -> ms
const pendingByIndex = []; // publish index -> send time, before the seq is known
const latencies = [];
const received = Array.from({ length: SUBS }, () => []);
const early = []; // frames that arrived before their publish answer: [seq, t]

const sockets = [];
const deadline = setTimeout(() => { console.error("fanout-check: timed out"); process.exit(2); }, 120_000);

async function openAll() {
  const batch = 50;
  for (let i = 0; i < SUBS; i += batch) {
    await Promise.all(Array.from({ length: Math.min(batch, SUBS - i) }, (_, k) => new Promise((resolve, reject) => {
      const idx = i + k;
      const ws = new WebSocket(wsUrl, { perMessageDeflate: false });
      sockets.push(ws);
      ws.on("message", (data) => {
        const t = performance.now();
        const f = JSON.parse(data.toString());
        if (f.type === "welcome") return resolve();
        if (f.type !== "command") return;
        received[idx].push(f.seq);
        const s = sentAt.get(f.seq);
        if (s === undefined) early.push([f.seq, t]); else latencies.push(t - s);
      });
      ws.once("error", reject);
    })));
  }
}

const t0 = performance.now();
await openAll();
const openMs = performance.now() - t0;
for (let i = 0; i < PUBS; i++) {
  const t = performance.now();
  pendingByIndex[i] = t;
  const r = await fetch(`${BASE}/v1/characters/${character}/commands`, {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ topic: "face", name: "smile", params: { i } }),
  });
  const body = await r.json();
  if (r.status !== 200) { console.error("publish failed", r.status, body); process.exit(1); }
  sentAt.set(body.seqs[0], t);
}
for (const [seq, t] of early) latencies.push(t - sentAt.get(seq));
const want = Array.from({ length: PUBS }, (_, i) => i + 1);
const until = Date.now() + 30_000;
while (Date.now() < until && received.some((r) => r.length < PUBS)) await new Promise((r) => setTimeout(r, 50));
let bad = 0;
for (const r of received) if (r.length !== PUBS || r.some((s, i) => s !== want[i])) bad++;
latencies.sort((a, b) => a - b);
const q = (p) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))].toFixed(1);
console.log(`subscribers ${SUBS}, publishes ${PUBS}, sockets opened in ${openMs.toFixed(0)} ms`);
console.log(`deliveries ${latencies.length} of ${SUBS * PUBS}; subscribers missing, duplicating or reordering: ${bad}`);
console.log(`publish-to-receive latency ms: p50 ${q(0.5)}  p99 ${q(0.99)}  max ${latencies.at(-1).toFixed(1)}`);
for (const ws of sockets) ws.terminate();
clearTimeout(deadline);
process.exit(bad === 0 && latencies.length === SUBS * PUBS ? 0 : 1);
