#!/usr/bin/env node
// Bounded soak (`make soak`): a local server of its own for SOAK_SECONDS
// (default 600) with steady publishing, churning subscribers that resume with
// `since`, periodic admin kicks, and resident memory of the runtime sampled
// every 10 s (SOAK_SAMPLE_SECONDS). Ends with a report; exits non-zero if any
// subscriber lost, duplicated or reordered a command, or the gateway's own
// memory kept growing.
//
// Memory is judged on the gateway isolate itself, read over the inspector every
// third sample (30 s): the JS heap after a full collection and the wasm linear
// memory. The resident memory of the runtime's processes is reported per
// process but not judged: it also holds the runtime's own isolates (KV and
// assets simulators, the entry worker), garbage they have not collected yet,
// the allocator's high-water mark and per-socket compression buffers, and it
// grows the same way under a minimal JS worker (docs/reliability.md has the
// comparison).
// The server is scripts/serve-local.mjs, started by scripts/server.mjs, with
// this script attached to its inspector for the whole run (an unattached
// inspector proxy buffers events). A short smoke run samples more often to
// take the six isolate readings the verdict needs, e.g.
// SOAK_SECONDS=40 SOAK_SAMPLE_SECONDS=2 make soak.
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import WebSocket from "ws";
import { openInspector, isolateMemory } from "../../scripts/inspector.mjs";
import { ROOT, startServer } from "../../scripts/server.mjs";

const SECONDS = Number(process.env.SOAK_SECONDS ?? 600);
const SAMPLE_MS = Number(process.env.SOAK_SAMPLE_SECONDS ?? 10) * 1000;
const STABLE = Number(process.env.SOAK_STABLE ?? 50);
const CHURN = Number(process.env.SOAK_CHURN ?? 50);
const RATE = Number(process.env.SOAK_RATE ?? 20); // publishes per second
const CHARACTER = `soak-${Date.now().toString(36)}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The server does not build (scripts/serve-local.mjs); build now if needed.
execFileSync("bash", [join(ROOT, "scripts/build.sh")], { stdio: "inherit" });
let server;
try {
  server = await startServer({ runtime: "local", name: "soak", vars: { AUTH_ENABLED: "false" }, inspector: true, timeoutMs: 180_000 });
} catch (e) {
  console.error(`soak: ${e.message}`);
  process.exit(2);
}
const port = server.port;
const BASE = server.url;
const WS = BASE.replace(/^http/, "ws");
const sockets = new Set();
async function shutdown(code) {
  for (const ws of sockets) ws.terminate();
  await server.stop().catch((e) => console.error(`soak: stopping the server: ${e.message}`));
  process.exit(code);
}
process.on("SIGINT", () => shutdown(130));
const hardStop = setTimeout(() => { console.error("soak: hard timeout"); shutdown(2); }, (SECONDS + 300) * 1000);

const inspector = await openInspector(`ws://127.0.0.1:${server.inspectorPort}/ws`);

/**
 * Resident memory (KiB) of every process under the server, in total and by
 * role: `runtime` is the workerd that runs the gateway, `proxy` the workerd
 * in front of it (it listens on the public port), `node` the launcher.
 */
function rssKiB() {
  const out = execFileSync("ps", ["-e", "-o", "pid=,ppid=,rss=,args="]).toString();
  const rows = out.trim().split("\n").map((l) => {
    const [pid, ppid, rss, ...cmd] = l.trim().split(/\s+/);
    return { pid: Number(pid), ppid: Number(ppid), rss: Number(rss), cmd: cmd.join(" ") };
  });
  const kids = new Map();
  for (const r of rows) kids.set(r.ppid, [...(kids.get(r.ppid) ?? []), r]);
  const by = { total: 0, runtime: 0, proxy: 0, node: 0 };
  const stack = rows.filter((r) => r.pid === server.pid);
  while (stack.length) {
    const r = stack.pop();
    const role = !r.cmd.includes("workerd") ? "node"
      : r.cmd.includes(`entry=127.0.0.1:${port}`) ? "proxy" : "runtime";
    by[role] += r.rss;
    by.total += r.rss;
    stack.push(...(kids.get(r.pid) ?? []));
  }
  return by;
}

const failures = [];
let epoch = null;
/** A subscriber; `history` carries the seqs it got over earlier connections. */
function open(kind, history = [], since) {
  const q = new URLSearchParams({ topics: ">" });
  if (since !== undefined && epoch) { q.set("since", String(since)); q.set("epoch", epoch); }
  const ws = new WebSocket(`${WS}/v1/characters/${CHARACTER}/subscribe?${q}`, { closeTimeout: 500 });
  sockets.add(ws);
  const s = { kind, ws, seqs: [...history], id: null, recovered: null, closedWith: null };
  ws.on("message", (d) => {
    const f = JSON.parse(d.toString());
    if (f.type === "welcome") { s.id = f.client_id; epoch ??= f.epoch; if (f.epoch !== epoch) failures.push(`epoch changed to ${f.epoch}`); }
    else if (f.type === "command") {
      const last = s.seqs.at(-1) ?? 0;
      if (f.seq !== last + 1) failures.push(`${kind} ${s.id}: got seq ${f.seq} after ${last}`);
      s.seqs.push(f.seq);
    } else if (f.type === "recovered") {
      s.recovered = f;
      if (!f.complete) failures.push(`${kind} ${s.id}: incomplete recovery ${JSON.stringify(f)}`);
    }
  });
  ws.on("close", (code) => { s.closedWith = code; sockets.delete(ws); });
  ws.on("error", () => {});
  s.ready = new Promise((resolve) => ws.once("open", resolve));
  return s;
}

const stable = [];
for (let i = 0; i < STABLE; i++) stable.push(open("stable", [], 0));
await Promise.all(stable.map((s) => s.ready));
let churn = [];
for (let i = 0; i < CHURN; i++) churn.push(open("churn", [], 0));
await Promise.all(churn.map((s) => s.ready));

const acked = [];
let publishErrors = 0;
const started = Date.now();
const endAt = started + SECONDS * 1000;
const memory = [];
let kicks = 0;
let resumes = 0;

const publisher = (async () => {
  let i = 0;
  while (Date.now() < endAt) {
    const due = started + (i * 1000) / RATE;
    if (due > Date.now()) await sleep(due - Date.now());
    i++;
    try {
      const r = await fetch(`${BASE}/v1/characters/${CHARACTER}/commands`, {
        method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ topic: "face", name: "blink", params: { i } }),
      });
      if (r.status === 200) acked.push((await r.json()).seqs[0]); else publishErrors++;
    } catch { publishErrors++; }
  }
})();

const churner = (async () => {
  let tick = 0;
  while (Date.now() < endAt) {
    await sleep(2000);
    tick++;
    // Replace a few churning subscribers: close them, resume them later from their last seq.
    const next = [];
    for (const s of churn) {
      if (Math.random() < 0.1) {
        s.ws.close();
        const r = open("churn", s.seqs, s.seqs.at(-1) ?? 0);
        resumes++;
        next.push(r);
      } else next.push(s);
    }
    churn = next;
    // Every 30 s an admin kicks one; it comes back and resumes.
    if (tick % 15 === 0) {
      const victim = churn.find((s) => s.id && s.closedWith === null);
      if (victim) {
        const r = await fetch(`${BASE}/v1/admin/characters/${CHARACTER}/subscriptions/${victim.id}`, { method: "DELETE" });
        if (r.status === 200) {
          kicks++;
          await sleep(700);
          if (victim.closedWith !== 4010) failures.push(`kicked socket closed with ${victim.closedWith}`);
          churn = churn.map((s) => (s === victim ? open("churn", s.seqs, s.seqs.at(-1) ?? 0) : s));
          resumes++;
        } else failures.push(`kick answered ${r.status}`);
      }
    }
  }
})();

const gateway = []; // { t, heapKiB, wasmKiB } of the gateway isolate
const sampler = (async () => {
  for (let n = 0; Date.now() < endAt; n++) {
    const t = Math.round((Date.now() - started) / 1000);
    const by = rssKiB();
    memory.push({ t, kib: by.total, by });
    if (n % 3 === 0) {
      try { gateway.push({ t, ...(await isolateMemory(inspector)) }); }
      catch (e) { console.error(`soak: isolate memory at ${t} s: ${e.message}`); }
    }
    await sleep(Math.max(0, started + (n + 1) * SAMPLE_MS - Date.now()));
  }
})();

await Promise.all([publisher, churner, sampler]);
const last = acked.at(-1) ?? 0;
const settle = Date.now() + 15_000;
const everyone = () => [...stable, ...churn];
while (Date.now() < settle && everyone().some((s) => (s.seqs.at(-1) ?? 0) < last)) await sleep(100);
for (const s of everyone()) {
  const want = Array.from({ length: last }, (_, k) => k + 1);
  const got = s.seqs.filter((x) => x <= last);
  if (got.length !== want.length || got.some((x, k) => x !== want[k])) {
    failures.push(`${s.kind} ${s.id}: has ${got.length} of ${last} seqs`);
  }
}
// Memory: compare the first and last thirds of the samples (after warm-up).
const samples = memory.slice(1);
const third = Math.max(1, Math.floor(samples.length / 3));
const avg = (xs) => xs.reduce((a, b) => a + b.kib, 0) / xs.length;
const early = avg(samples.slice(0, third));
const late = avg(samples.slice(-third));
const growth = (late - early) / early;
const role = (name, xs) => xs.reduce((a, b) => a + b.by[name], 0) / xs.length / 1024;
const roles = Object.fromEntries(["runtime", "proxy", "node"].map((name) => [name, {
  early_avg: +role(name, samples.slice(0, third)).toFixed(1),
  late_avg: +role(name, samples.slice(-third)).toFixed(1),
}]));
// The gateway's own memory: the first sample is before warm-up, so compare
// the first and last thirds of the rest. The JS heap after a full collection
// may vary by a few hundred KiB; wasm memory never shrinks, so any growth in
// the late part is kept.
const g = gateway.slice(1);
const gThird = Math.max(1, Math.floor(g.length / 3));
const mean = (xs, k) => xs.reduce((a, b) => a + b[k], 0) / Math.max(1, xs.length);
const heapEarly = mean(g.slice(0, gThird), "heapKiB");
const heapLate = mean(g.slice(-gThird), "heapKiB");
const wasmEarly = Math.max(...g.slice(0, gThird).map((x) => x.wasmKiB ?? 0));
const wasmLate = Math.max(...g.slice(-gThird).map((x) => x.wasmKiB ?? 0));
if (g.length < 6) failures.push(`only ${g.length} readings of the gateway isolate's memory`);
if (g.some((x) => x.wasmKiB === null)) failures.push("wasm memory not found in a heap snapshot");
if (heapLate > heapEarly * 1.2 + 512) failures.push(`gateway JS heap grew from ${heapEarly.toFixed(0)} to ${heapLate.toFixed(0)} KiB`);
if (wasmLate > wasmEarly + 1024) failures.push(`gateway wasm memory grew from ${wasmEarly} to ${wasmLate} KiB`);
const report = {
  seconds: SECONDS, stable: STABLE, churning: CHURN, publishes_acknowledged: acked.length,
  publish_errors: publishErrors, resumes, kicks, failures: failures.length,
  rss_mib: { first: +(samples[0]?.kib / 1024).toFixed(1), early_avg: +(early / 1024).toFixed(1), late_avg: +(late / 1024).toFixed(1), max: +(Math.max(...samples.map((s) => s.kib)) / 1024).toFixed(1) },
  gateway_isolate: {
    readings: gateway.length,
    js_heap_after_gc_kib: { early_avg: Math.round(heapEarly), late_avg: Math.round(heapLate), min: Math.round(Math.min(...g.map((x) => x.heapKiB))), max: Math.round(Math.max(...g.map((x) => x.heapKiB))) },
    wasm_memory_kib: { early_max: wasmEarly, late_max: wasmLate },
  },
  rss_growth_early_to_late: `${(growth * 100).toFixed(1)}% (reported, not judged)`,
  rss_mib_by_process: roles,
};
console.log(JSON.stringify(report, null, 2));
console.log("rss samples (s: MiB):", memory.map((m) => `${m.t}:${(m.kib / 1024).toFixed(0)}`).join(" "));
console.log("gateway isolate (s: JS heap KiB / wasm KiB):", gateway.map((x) => `${x.t}:${x.heapKiB.toFixed(0)}/${x.wasmKiB}`).join(" "));
for (const f of failures.slice(0, 20)) console.log("FAIL", f);
clearTimeout(hardStop);
inspector.close();
shutdown(failures.length === 0 && publishErrors === 0 ? 0 : 1);
