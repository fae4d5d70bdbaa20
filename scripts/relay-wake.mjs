#!/usr/bin/env node
// The cost of waking a relay (docs/scaling.md, "Measured here"): one
// character whose sockets fill its own object and one relay (start the server
// with FANOUT_LIMIT = half of --subs). Each command is published with its send
// time; every socket records when it arrived, and the answer is split by
// holder (the character's own object, the relay; from the admin listing).
// First --warm commands 1 s apart with both objects awake, then --cycles
// times: --idle seconds with nothing published (the runtime evicts both
// hibernated objects; each socket sends "ping" every 5 s, answered by the
// runtime's auto-response, which wakes nothing, as the reliability tests do),
// then one command, which wakes the character's object (the publish) and the
// relay (its feed). The relay's wake shows as the relay-held sockets' extra
// latency after an idle period over their extra latency when warm. With --log
// (the server's log, at level "log"), each cycle also counts the runtime's
// "woke with N sockets" lines, to show that the objects were evicted.
//
//   node scripts/relay-wake.mjs --url URL --subs 1000 [--warm 5] [--cycles 3]
//       [--idle 30] [--log FILE] [--out FILE.jsonl] [--label NAME]
// Prints one line per command and appends one JSON line per command to --out.
import { appendFileSync, existsSync, readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import WebSocket from "ws";

const { values: o } = parseArgs({
  options: {
    url: { type: "string" },
    subs: { type: "string", default: "1000" },
    warm: { type: "string", default: "5" },
    cycles: { type: "string", default: "3" },
    idle: { type: "string", default: "30" },
    log: { type: "string" },
    out: { type: "string" },
    label: { type: "string", default: "wake" },
  },
});
if (!o.url) throw new Error("relay-wake: --url is required");
const N = Number(o.subs);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const character = `wake-${Date.now().toString(36)}`;
const base = o.url.replace(/\/$/, "");

function subscriber() {
  const ws = new WebSocket(`${base.replace(/^http/, "ws")}/v1/characters/${character}/subscribe?topics=main`, { handshakeTimeout: 30_000 });
  const s = { ws, welcome: null, got: new Map(), closed: false };
  ws.on("message", (d) => {
    const at = performance.now();
    const t = d.toString();
    if (t === "pong") return;
    const f = JSON.parse(t);
    if (f.type === "welcome") s.welcome = f;
    else if (f.type === "command") s.got.set(f.seq, at);
  });
  ws.on("close", () => { s.closed = true; });
  ws.on("error", () => {});
  s.ready = new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("unexpected-response", (_q, r) => reject(new Error(`upgrade refused ${r.statusCode}`)));
    ws.once("error", reject);
  });
  return s;
}

// Placement fills the character's object first: open in batches.
const subs = [];
for (let i = 0; i < N; i += 50) {
  const batch = Array.from({ length: Math.min(50, N - i) }, subscriber);
  await Promise.all(batch.map((s) => s.ready));
  subs.push(...batch);
}
const until = async (pred, ms, what) => {
  const end = Date.now() + ms;
  while (Date.now() < end) { if (pred()) return; await sleep(5); }
  throw new Error(`relay-wake: timed out waiting for ${what}`);
};
await until(() => subs.every((s) => s.welcome), 30_000, "every welcome");
const listing = await (await fetch(`${base}/v1/admin/characters/${character}/subscriptions`)).json();
const holder = new Map(listing.subscribers.map((e) => [e.client_id, e.relay ?? "owner"]));
for (const s of subs) s.holder = holder.get(s.welcome.client_id) ?? "?";
const counts = {};
for (const s of subs) counts[s.holder] = (counts[s.holder] ?? 0) + 1;
console.error(`relay-wake: ${N} sockets of ${character}: ${JSON.stringify(counts)}`);
if (!counts.owner || Object.keys(counts).length < 2) throw new Error("relay-wake: the sockets are not on the character's object and a relay (FANOUT_LIMIT = subs / 2)");

const pinger = setInterval(() => { for (const s of subs) if (!s.closed) s.ws.send("ping"); }, 5_000);
const woke = () => (o.log && existsSync(o.log) ? (readFileSync(o.log, "utf8").match(/woke with \d+ sockets/g) ?? []).length : null);

const q = (xs, p) => xs[Math.min(xs.length - 1, Math.floor(p * xs.length))];
async function command(kind, cycle) {
  const wokeBefore = woke();
  const sent = performance.now();
  const r = await fetch(`${base}/v1/characters/${character}/commands`, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ topic: "main", name: "step" }),
  });
  const answered = performance.now() - sent;
  if (r.status !== 200) throw new Error(`relay-wake: publish answered ${r.status}: ${await r.text()}`);
  const seq = (await r.json()).seqs[0];
  await until(() => subs.every((s) => s.got.has(seq)), 30_000, `seq ${seq} everywhere`);
  await sleep(200);
  const row = { label: o.label, kind, cycle, seq, subscribers: N, idle_s: kind === "cold" ? Number(o.idle) : 0, publish_answer_ms: answered };
  for (const h of ["owner", "relay"]) {
    const ms = subs.filter((s) => (h === "owner" ? s.holder === "owner" : s.holder !== "owner"))
      .map((s) => s.got.get(seq) - sent).sort((a, b) => a - b);
    row[`${h}_sockets`] = ms.length;
    row[`${h}_first_ms`] = ms[0];
    row[`${h}_p50_ms`] = q(ms, 0.5);
    row[`${h}_last_ms`] = ms.at(-1);
  }
  row.relay_extra_first_ms = row.relay_first_ms - row.owner_first_ms;
  const after = woke();
  if (after !== null) row.woke_lines = after - wokeBefore;
  row.relay_first_after_owner_last_ms = row.relay_first_ms - row.owner_last_ms;
  console.log(`${kind} ${cycle}: seq ${seq}, answer ${answered.toFixed(1)} ms; owner first/p50/last ${row.owner_first_ms.toFixed(1)}/${row.owner_p50_ms.toFixed(1)}/${row.owner_last_ms.toFixed(1)} ms; relay ${row.relay_first_ms.toFixed(1)}/${row.relay_p50_ms.toFixed(1)}/${row.relay_last_ms.toFixed(1)} ms; relay's first - owner's first ${row.relay_extra_first_ms.toFixed(1)} ms${row.woke_lines === undefined ? "" : `; "woke with" lines ${row.woke_lines}`}`);
  if (o.out) appendFileSync(o.out, JSON.stringify(row) + "\n");
  return row;
}

await sleep(1000);
for (let i = 1; i <= Number(o.warm); i++) { await command("warm", i); await sleep(1000); }
for (let c = 1; c <= Number(o.cycles); c++) {
  await sleep(Number(o.idle) * 1000);
  await command("cold", c);
  // Warm again right after, for a side-by-side pair per cycle.
  await sleep(1000);
  await command("warm-after", c);
}
clearInterval(pinger);
for (const s of subs) s.ws.terminate();
// The log reaches its file through the launcher's pipe, so lines can land
// after the command that caused them: the per-command counts above are a
// hint; these totals over the whole run are what the log says.
if (o.log && existsSync(o.log)) {
  await sleep(1000);
  const text = readFileSync(o.log, "utf8");
  const count = (re) => (text.match(re) ?? []).length;
  const row = { label: o.label, kind: "log", subscribers: N, cycles: Number(o.cycles),
    owner_wakes: count(new RegExp(`character ${character}: woke with`, "g")),
    relay_wakes: count(new RegExp(`character ${character}~r0: woke with`, "g")) };
  console.log(`log: the character's object woke ${row.owner_wakes} times, relay r0 ${row.relay_wakes} times (${o.cycles} idle periods)`);
  if (o.out) appendFileSync(o.out, JSON.stringify(row) + "\n");
}
