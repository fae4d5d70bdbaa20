// Hot characters on relay objects (docs/protocol.md, "Relays"): with
// FANOUT_LIMIT=50, 500 real WebSocket subscribers of one character are
// spread over the character's own object and at least 9 relays; every one
// gets each of 100 commands exactly once, in seq order. Then the runtime is
// killed with SIGKILL in the middle of a publish stream and restarted on
// the same state: every subscriber resumes with since/epoch (through
// whichever object now holds it) and ends with every acknowledged seq once,
// in order. Also: an admin kick reaches a relay-held socket (4010), and a
// relay whose sockets all left stops being fed.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import WebSocket from "ws";
import { start as startIn, sleep, progress } from "./helpers.mjs";

const N = Number(process.env.RELAY_SUBSCRIBERS ?? 500);
const FANOUT = 50;
const VARS = { FANOUT_LIMIT: String(FANOUT), MAX_SUBSCRIBERS: "5000" };
const STATE = mkdtempSync(join(tmpdir(), "gateway-relays-"));
let server = null;
const sockets = new Set();

after(async () => {
  for (const ws of sockets) ws.terminate();
  await server?.kill();
  rmSync(STATE, { recursive: true, force: true });
});

function subscriber(base, character, since, epoch) {
  const q = new URLSearchParams({ topics: ">" });
  if (since !== undefined) { q.set("since", String(since)); q.set("epoch", epoch); }
  const ws = new WebSocket(`${base.replace(/^http/, "ws")}/v1/characters/${character}/subscribe?${q}`, { closeTimeout: 500, handshakeTimeout: 20_000 });
  sockets.add(ws);
  const s = { ws, seqs: [], ats: [], welcome: null, recovered: null, closeCode: null };
  ws.on("message", (d) => {
    if (d.toString() === "pong") return;
    const f = JSON.parse(d.toString());
    if (f.type === "welcome") s.welcome = f;
    else if (f.type === "command") { s.seqs.push(f.seq); s.ats.push(f.at); }
    else if (f.type === "recovered") s.recovered = f;
    else if (f.type === "published" || f.type === "error") s.answer = f;
  });
  s.closed = new Promise((resolve) => ws.on("close", (code) => { s.closeCode = code; sockets.delete(ws); resolve(code); }));
  ws.on("error", () => {});
  s.ready = new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("unexpected-response", (_q, r) => reject(new Error(`upgrade refused ${r.statusCode}`)));
    ws.once("error", reject);
  });
  return s;
}

async function until(pred, ms, what) {
  const end = Date.now() + ms;
  while (Date.now() < end) { if (await pred()) return; await sleep(50); }
  throw new Error(`timed out waiting for ${what}`);
}

/** Opens subscribers in batches (placement fills one object after another). */
async function openMany(base, character, n, resumeFrom) {
  const subs = [];
  for (let i = 0; i < n; i += 50) {
    const batch = Array.from({ length: Math.min(50, n - i) }, (_, k) => {
      const prev = resumeFrom?.[i + k];
      return subscriber(base, character, prev?.since, prev?.epoch);
    });
    await Promise.all(batch.map((s) => s.ready));
    subs.push(...batch);
  }
  return subs;
}

const listing = async (base, character) =>
  (await fetch(`${base}/v1/admin/characters/${character}/subscriptions`)).json();

/** Command i carries `at` = AT_BASE + i (the local clock is the server's), which
 *  relays must pass through like every other field. */
const AT_BASE = Date.now() + 30 * 60 * 1000;

async function publish(base, character, i) {
  const r = await fetch(`${base}/v1/characters/${character}/commands`, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ name: "step", params: { i }, at: AT_BASE + i }),
  });
  assert.equal(r.status, 200, await r.clone().text());
  return (await r.json()).seqs[0];
}

function assertEverySeqOnce(all, upTo, who) {
  assert.deepEqual(all, Array.from({ length: upTo }, (_, k) => k + 1), `${who}: every seq 1..${upTo} once, in order`);
}

test(`${N} subscribers with FANOUT_LIMIT=${FANOUT} spread over relays; each gets every command once, in order`, { timeout: 600_000 }, async () => {
  const character = `hot-${Date.now().toString(36)}`;
  const srv = server = await startIn(STATE, { vars: VARS });
  const subs = await openMany(srv.url, character, N);
  await until(() => subs.every((s) => s.welcome), 30_000, "welcome");
  // Presence subscribers stay with the character's own object, past FANOUT_LIMIT.
  const p = new WebSocket(`${srv.url.replace(/^http/, "ws")}/v1/characters/${character}/subscribe?presence=true`);
  sockets.add(p);
  const pWelcome = await new Promise((resolve, reject) => { p.once("message", (d) => resolve(JSON.parse(d.toString()))); p.once("error", reject); });
  const pEntry = (await listing(srv.url, character)).subscribers.find((e) => e.client_id === pWelcome.client_id);
  assert.equal(pEntry.relay, null, "a presence subscriber is held by the character's own object");
  p.terminate();
  await until(async () => (await listing(srv.url, character)).subscribers.length === N, 10_000, "the presence socket gone");
  const l = await listing(srv.url, character);
  assert.equal(l.subscribers.length, N, "the listing counts every socket wherever held");
  const holders = new Map();
  for (const e of l.subscribers) holders.set(e.relay, (holders.get(e.relay) ?? 0) + 1);
  progress(`placement: ${JSON.stringify([...holders])}`);
  assert.ok(holders.size >= 10, `spread over ${holders.size} objects`);
  assert.equal(l.relays, holders.size - 1, "`relays` counts the relays holding sockets");
  for (const [, n] of holders) assert.ok(n <= FANOUT, `an object holds ${n} > FANOUT_LIMIT`);
  assert.equal(holders.get(null), FANOUT, "the character's own object holds FANOUT_LIMIT");
  // The global listing counts relay-held sockets under the character.
  await until(async () => {
    const g = await (await fetch(`${srv.url}/v1/admin/subscriptions`)).json();
    return g.characters.some((c) => c.character === character && c.subscribers === N);
  }, 10_000, "the global listing to count every socket");

  for (let i = 1; i <= 100; i++) await publish(srv.url, character, i);
  await until(() => subs.every((s) => s.seqs.length >= 100), 30_000, "every command everywhere");
  await sleep(300);
  for (const [i, s] of subs.entries()) assertEverySeqOnce(s.seqs, 100, `subscriber ${i}`);
  for (const [i, s] of subs.entries()) assert.deepEqual(s.ats, s.seqs.map((q) => AT_BASE + q), `subscriber ${i}: \`at\` passed through`);
  console.log(`relays: ${N} subscribers over ${holders.size} objects, 100 commands each exactly once in order`);

  // Kick a relay-held socket: 4010.
  const relayHeld = l.subscribers.find((e) => e.relay !== null);
  const kicked = subs.find((s) => s.welcome.client_id === relayHeld.client_id);
  const k = await fetch(`${srv.url}/v1/admin/characters/${character}/subscriptions/${relayHeld.client_id}`, { method: "DELETE" });
  assert.equal(k.status, 200);
  assert.equal(await kicked.closed, 4010, "a relay-held socket kicked with 4010");
  const live = subs.filter((s) => s !== kicked);

  // The next publish tells the owner that relay has room again; a resume
  // placed there replays from the relay's ring, then goes on live.
  await publish(srv.url, character, 101);
  const resumed = subscriber(srv.url, character, 95, subs[0].welcome.epoch);
  await resumed.ready;
  await until(() => resumed.recovered, 10_000, "the resume on a relay");
  assert.deepEqual(resumed.seqs, [96, 97, 98, 99, 100, 101]);
  assert.deepEqual(resumed.ats, resumed.seqs.map((q) => AT_BASE + q), "replayed from the relay's ring with `at`");
  assert.equal(resumed.recovered.complete, true);
  assert.equal(resumed.recovered.truncated, false);
  assert.equal(resumed.recovered.seq, 101);
  const where = (await listing(srv.url, character)).subscribers.find((e) => e.client_id === resumed.welcome.client_id);
  assert.equal(where.relay, relayHeld.relay, "placed on the relay that had room");

  // A publish frame on a relay-held socket goes to the character's object.
  resumed.ws.send(JSON.stringify({ type: "publish", ref: "p1", name: "wave", at: AT_BASE + 102 }));
  await until(() => resumed.answer, 10_000, "the answer to a relayed publish");
  assert.equal(resumed.answer.type, "published", JSON.stringify(resumed.answer));
  assert.equal(resumed.answer.seq, 102);
  assert.equal(resumed.answer.ref, "p1");
  subs.push(resumed);
  await until(() => live.concat(resumed).every((s) => s.seqs.at(-1) === 102), 10_000, "the relayed publish everywhere");
  for (const [i, s] of live.entries()) assertEverySeqOnce(s.seqs, 102, `subscriber ${i} after the relayed publish`);
  for (const s of live) assert.equal(s.ats.at(-1), AT_BASE + 102, "a relayed publish frame keeps its `at`");

  // Empty one relay: its sockets leave, the next publish finds it empty
  // and the owner stops feeding it.
  const before = await listing(srv.url, character);
  const last = [...new Set(before.subscribers.map((e) => e.relay).filter((r) => r !== null))].sort().at(-1);
  const leaving = new Set(before.subscribers.filter((e) => e.relay === last).map((e) => e.client_id));
  const gone = subs.filter((s) => leaving.has(s.welcome.client_id));
  for (const s of gone) s.ws.close(1000);
  await Promise.all(gone.map((s) => s.closed));
  await sleep(300);
  await publish(srv.url, character, 103);
  await until(async () => (await listing(srv.url, character)).relays_fed === before.relays_fed - 1, 10_000, "the emptied relay to leave the fed set");
  const afterEmpty = await listing(srv.url, character);
  assert.equal(afterEmpty.relays, before.relays - 1);
  assert.equal(afterEmpty.subscribers.length, before.subscribers.length - gone.length);
  console.log(`relays: kick 4010 ok; relay ${last} emptied, fed relays ${before.relays_fed} -> ${afterEmpty.relays_fed}`);
  for (const s of subs) s.ws.terminate();
  await server.kill();
  server = null;
});

test(`SIGKILL in the middle: ${N} subscribers on relays resume and end with every seq once`, { timeout: 600_000 }, async () => {
  const character = `hotkill-${Date.now().toString(36)}`;
  let srv = server = await startIn(STATE, { vars: VARS });
  let subs = await openMany(srv.url, character, N);
  await until(() => subs.every((s) => s.welcome), 30_000, "welcome");
  const epoch = subs[0].welcome.epoch;
  assert.ok((await listing(srv.url, character)).relays >= 9);
  // Publish until 50 are acknowledged, then kill with more in flight.
  const acked = [];
  let killing = null;
  let stop = false;
  const worker = async () => {
    while (!stop) {
      try {
        const r = await fetch(`${srv.url}/v1/characters/${character}/commands`, {
          method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ name: "step" }),
        });
        if (r.status === 200) {
          acked.push((await r.json()).seqs[0]);
          if (acked.length >= 50 && !stop) { stop = true; killing = srv.kill(); }
        }
      } catch { /* died under this request */ }
    }
  };
  await Promise.all([worker(), worker()]);
  await killing;
  const history = subs.map((s) => [...s.seqs]);
  progress(`killed after ${acked.length} acknowledged; restarting`);
  srv = server = await startIn(STATE, { vars: VARS });
  const resumeFrom = history.map((h) => ({ since: h.at(-1) ?? 0, epoch }));
  subs = await openMany(srv.url, character, N, resumeFrom);
  await until(() => subs.every((s) => s.recovered), 60_000, "every subscriber recovered");
  const l = await listing(srv.url, character);
  assert.ok(l.relays >= 9, `resumed sockets spread again: ${l.relays} relays`);
  for (const s of subs) {
    assert.equal(s.welcome.epoch, epoch);
    assert.equal(s.recovered.complete, true);
    assert.equal(s.recovered.truncated, false);
  }
  // The rest of the 100, live.
  const start = Math.max(...acked);
  const h = await (await fetch(`${srv.url}/v1/characters/${character}/history?limit=1000`)).json();
  let top = h.seq;
  while (top < 100) top = await publish(srv.url, character, top + 1);
  await until(() => subs.every((s, i) => [...history[i], ...s.seqs].at(-1) >= top), 30_000, "the live rest everywhere");
  await sleep(300);
  for (const [i, s] of subs.entries()) {
    const all = [...history[i], ...s.seqs];
    for (const a of acked) assert.ok(all.includes(a), `subscriber ${i} missing acknowledged ${a}`);
    assertEverySeqOnce(all, top, `subscriber ${i}`);
  }
  console.log(`relays kill: ${acked.length} acknowledged before the kill (last ${start}), ${N} resumed over ${l.relays + 1} objects, all ${top} seqs once each`);
  for (const s of subs) s.ws.terminate();
});

test("relays hibernate: an evicted relay wakes with its sockets and its place in the stream", { timeout: 240_000 }, async () => {
  const IDLE_MS = Number(process.env.HIBERNATION_IDLE_MS ?? 25_000);
  const state = mkdtempSync(join(tmpdir(), "gateway-relays-hib-"));
  const log = join(state, "wrangler.log");
  const srv = server = await startIn(state, { logFile: log, logLevel: "log", vars: { FANOUT_LIMIT: "10", MAX_SUBSCRIBERS: "15" } });
  try {
    const character = `hothib-${Date.now().toString(36)}`;
    const subs = await openMany(srv.url, character, 15);
    await until(() => subs.every((s) => s.welcome), 20_000, "welcome");
    for (let i = 1; i <= 5; i++) await publish(srv.url, character, i);
    await until(() => subs.every((s) => s.seqs.length === 5), 10_000, "the first commands");
    const l = await listing(srv.url, character);
    assert.equal(l.relays, 1);
    const relayHeld = subs.filter((s) => l.subscribers.find((e) => e.client_id === s.welcome.client_id).relay !== null);
    assert.equal(relayHeld.length, 5);
    // MAX_SUBSCRIBERS counts relay-held sockets: the 16th is refused before the upgrade.
    const full = await new Promise((resolve, reject) => {
      const ws = new WebSocket(`${srv.url.replace(/^http/, "ws")}/v1/characters/${character}/subscribe`);
      ws.once("open", () => { ws.terminate(); reject(new Error("a 16th socket was opened")); });
      ws.once("unexpected-response", (_q, res) => {
        let body = "";
        res.on("data", (d) => { body += d; });
        res.on("end", () => resolve({ status: res.statusCode, retry: res.headers["retry-after"], body: JSON.parse(body) }));
      });
      ws.once("error", () => {});
    });
    assert.equal(full.status, 503);
    assert.equal(full.body.error.code, "character_full");
    assert.ok(full.retry, "Retry-After");
    progress(`idle ${IDLE_MS} ms with keep-alive pings`);
    const end = Date.now() + IDLE_MS;
    while (Date.now() < end) { for (const s of relayHeld) s.ws.send("ping"); await sleep(5_000); }
    for (let i = 6; i <= 8; i++) await publish(srv.url, character, i);
    await until(() => subs.every((s) => s.seqs.length >= 8), 15_000, "commands after the eviction");
    await sleep(300);
    for (const [i, s] of subs.entries()) assertEverySeqOnce(s.seqs, 8, `subscriber ${i}`);
    const text = (await import("node:fs")).readFileSync(log, "utf8");
    assert.ok(text.includes(`character ${character}~r0: woke with 5 sockets`), "the relay was evicted and woke with its sockets");
    // A resume on the woken relay (its ring is empty: the owner's read).
    relayHeld[0].ws.close(1000);
    await relayHeld[0].closed;
    await publish(srv.url, character, 9);
    const back = subscriber(srv.url, character, 3, subs[0].welcome.epoch);
    await back.ready;
    await until(() => back.recovered, 10_000, "the resume");
    assert.deepEqual(back.seqs, [4, 5, 6, 7, 8, 9]);
    assert.equal(back.recovered.complete, true);
    const where = (await listing(srv.url, character)).subscribers.find((e) => e.client_id === back.welcome.client_id);
    assert.equal(where.relay, "r0");
    await publish(srv.url, character, 10);
    await until(() => back.seqs.at(-1) === 10, 10_000, "live after the resume");
    assert.deepEqual(back.seqs, [4, 5, 6, 7, 8, 9, 10]);
    console.log("relays hibernation: the relay woke with 5 sockets, delivery and resume exact");
    for (const s of subs) s.ws.terminate();
    back.ws.terminate();
  } finally {
    await srv.kill();
    server = null;
    rmSync(state, { recursive: true, force: true });
  }
});
