#!/usr/bin/env node
// docs/scaling.md's model tables from the measured per-object costs in
// OUT_DIR (scripts/bench-scale.sh's costs.jsonl) and Cloudflare's published
// prices (docs/scaling.md, "Cloudflare's published limits and prices"):
//   node scripts/scaling-model.mjs [OUT_DIR]     (default bench/scale)
// Assumptions, all printed with the tables: HOP_MS (a feed request between
// two objects in production, default 5 ms: not measured here), WRITE_MS (a
// durable SQLite write's wait before frames leave, default 0), F (sockets per
// object, FANOUT_LIMIT, default 1000), OWNER_ROWS (SQLite rows the owner
// writes per publish, default 2), RELAY_ROWS (per feed request that applies
// rows, 1: the relay's last seq), BR_US (see below).
import { readFileSync } from "node:fs";

const dir = process.argv[2] ?? "bench/scale";
const rows = readFileSync(`${dir}/costs.jsonl`, "utf8").trim().split("\n").map(JSON.parse);
const med = (xs) => { const s = xs.filter(Number.isFinite).sort((a, b) => a - b); const n = s.length; return n ? (n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2) : NaN; };
const of = (sc, label, mode) => rows.filter((r) => r.scenario === sc && r.label === label && r.mode === mode);
const m = (sc, label, mode, k) => med(of(sc, label, mode).map((r) => r[k]));
const diff = (sc, a, b, mode, k) => med(of(sc, a, mode).map((ra) => { const rb = of(sc, b, mode).find((r) => r.round === ra.round); return rb ? rb[k] - ra[k] : NaN; }));
const env = (k, d) => (process.env[k] === undefined ? d : Number(process.env[k]));

// Measured (µs, ms): see bench-scale.sh's summary for the same arithmetic.
const few = of("few", "owner", "max")[0].subscribers, many = of("many", "owner", "max")[0].subscribers;
const kFew = m("few", "r10", "rate", "objects") - 1, kMany = m("many", "r500", "max", "objects") - 1;
const perMany = (many - 500) / kMany;
// The fixed-rate phases: each command is its own turn and its own feed
// request, as at the low publish rates of an animation stream.
const slope = (m("many", "owner", "rate", "server_cpu_ms_per_command") - m("few", "owner", "rate", "server_cpu_ms_per_command")) * 1000 / (many - few);
const fixed = m("few", "owner", "rate", "server_cpu_ms_per_command") * 1000 - few * slope;
const D1 = (diff("few", "owner", "r10", "rate", "server_cpu_ms_per_command") * 1000) / kFew;
const D2 = (diff("many", "owner", "r500", "rate", "server_cpu_ms_per_command") * 1000) / kMany;
const dB = (D2 - D1) / (perMany - 10);
const feed = D1 - 10 * dB;
const bo = slope;
// BR_US overrides the relay's CPU per delivery (e.g. with b_o when the
// derived difference is within the noise).
const br = env("BR_US", slope + dB);
const hopLocal = diff("few", "owner", "r10", "rate", "p50_ms");

const H = env("HOP_MS", 5), W = env("WRITE_MS", 0), F = env("F", 1000);
const OWNER_ROWS = env("OWNER_ROWS", 2), RELAY_ROWS = env("RELAY_ROWS", 1);
const MAX_RELAYS = 100, WS_LIMIT = 32768;
const f = (x, d = 1) => (Number.isFinite(x) ? x.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d }) : "–");
const usd = (x) => `$${x < 0.01 ? x.toPrecision(2) : x.toFixed(4)}`;

console.log(`Measured (medians over the rounds, ${dir}): owner CPU per delivery b_o = ${f(bo, 1)} µs (slope of the owner-only fixed-rate phases, ${few} -> ${many} sockets); per command besides deliveries a = ${f(fixed / 1000, 2)} ms; one feed request (owner's send + relay's turn, uncoalesced, rate phase) f = ${f(feed, 0)} µs; relay CPU per delivery: derived b_o + (${f(dB, 1)}) = ${f(slope + dB, 1)} µs, used ${f(br, 1)} µs; local hop (few, rate p50, r10 - owner) ${f(hopLocal, 2)} ms.`);
console.log(`Assumed: hop between objects in production H = ${H} ms, durable write wait W = ${W} ms, F = FANOUT_LIMIT = ${F}; the 6-connection bound applied to feeds (extra ceil(K/6)-1 hops).`);
console.log("");

function plan(N, levels) {
  const O = Math.ceil(N / F);
  if (levels === 1) {
    const K = O - 1;
    const ok = K <= MAX_RELAYS && F <= WS_LIMIT;
    const waves = Math.max(0, Math.ceil(K / 6) - 1);
    const owner = fixed / 1000 + (F * bo) / 1000 + (K * feed) / 1000;
    const relay = feed / 1000 + (F * br) / 1000;
    const last = K === 0 ? fixed / 1000 + (Math.min(N, F) * bo) / 1000 + W
      : fixed / 1000 + (F * bo) / 1000 + W + H * (1 + waves) + relay + W;
    return { O, K1: K, K2: 0, ok, owner, l1: K ? relay : 0, l2: 0, last, note: ok ? "" : `needs ${K} relays > MAX_RELAYS` };
  }
  // Two levels: the owner feeds k first-level relays, each feeds up to k of
  // its own (with one object or no second level, the same as one level).
  if (O <= 2) return { ...plan(N, 1), note: "not in the code" };
  let k = 1;
  while (1 + k + k * k < O) k++;
  const K1 = Math.min(k, O - 1), K2 = Math.max(0, O - 1 - K1);
  const per = K1 ? Math.ceil(K2 / K1) : 0;
  const waves1 = Math.max(0, Math.ceil(K1 / 6) - 1), waves2 = Math.max(0, Math.ceil(per / 6) - 1);
  const owner = fixed / 1000 + (F * bo) / 1000 + (K1 * feed) / 1000;
  const l1 = feed / 1000 + (F * br) / 1000 + (per * feed) / 1000;
  const l2 = feed / 1000 + (F * br) / 1000;
  const last = fixed / 1000 + (F * bo) / 1000 + W + H * (1 + waves1) + (feed / 1000 + (F * br) / 1000) + W
    + (per ? H * (1 + waves2) + l2 + W : 0);
  return { O, K1, K2, ok: K1 <= MAX_RELAYS && per <= MAX_RELAYS, owner, l1, l2, last, note: "not in the code" };
}

console.log("| viewers | levels | objects (owner + relays) | relays fed by the owner | owner CPU per command | a first-level relay's CPU per command | last socket's latency (estimate) | most commands/s (busiest object) |");
console.log("|---:|---:|---:|---:|---:|---:|---:|---:|");
for (const N of [10_000, 100_000, 1_000_000]) {
  for (const L of [1, 2]) {
    const p = plan(N, L);
    const busiest = Math.max(p.owner, p.l1, p.l2);
    console.log(`| ${f(N, 0)} | ${L} | ${f(p.O, 0)}${L === 2 ? ` (${p.K1} + ${p.K2})` : ""} | ${p.K1} | ${f(p.owner, 1)} ms | ${p.l1 ? f(p.l1, 1) + " ms" : "–"} | ${f(p.last, 0)} ms | ${f(1000 / busiest, 0)}${p.note ? ` (${p.note})` : ""} |`);
  }
}
console.log("");
// Cost per million deliveries, N viewers, one level (two levels add the
// first-level relays' feeds: the same count of feed requests, objects - 1).
console.log("| viewers | commands per million deliveries | object requests | SQLite rows written | object duration GB-s | Worker requests | cost per million deliveries |");
console.log("|---:|---:|---:|---:|---:|---:|---:|");
for (const N of [10_000, 100_000, 1_000_000]) {
  const p = plan(N, N > 101 * F ? 2 : 1);
  const cmds = 1e6 / N;
  const feeds = p.O - 1;
  const requests = cmds * (1 + feeds);
  const rowsW = cmds * (OWNER_ROWS + feeds * RELAY_ROWS);
  // Active time: every object's CPU for the command, plus the owner (and a
  // first-level relay) waiting for its feeds to answer (a hop there and back
  // and the relay's turn), at 128 MB.
  const cpuS = (fixed + N * ((bo + br) / 2) + feeds * feed) / 1e6;
  const waitS = feeds ? (2 * H + (feed + F * br) / 1000) / 1000 : 0;
  const gbs = cmds * 0.128 * (cpuS + waitS * (p.K2 ? 1 + p.K1 : 1));
  const cost = (requests * 0.15 + rowsW * 1.0 + gbs * 12.5 + cmds * 0.30) / 1e6;
  console.log(`| ${f(N, 0)} | ${f(cmds, 0)} | ${f(requests, 0)} | ${f(rowsW, 0)} | ${f(gbs, 2)} | ${f(cmds, 0)} | ${usd(cost)} |`);
}
