// Durability and reconnect storm: a publish answered 200 is in the character's
// history, whatever happens after. The runtime (wrangler dev and its workerd)
// is killed with SIGKILL in the middle of a publish stream, restarted on the
// same persisted state, and every subscriber resumes with `since` and
// `epoch`: each must end with every acknowledged seq exactly once, in order,
// and the epoch unchanged. Repeated at several kill points; the last round
// drops many subscribers at once and has them all reconnect together.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import WebSocket from "ws";
import { start as startIn, sleep, progress } from "./helpers.mjs";

const STATE = mkdtempSync(join(tmpdir(), "gateway-kill-"));
const ARCHIVE_STATE = mkdtempSync(join(tmpdir(), "gateway-kill-archive-"));
const STORM = Number(process.env.STORM_SUBSCRIBERS ?? 1000);
let server = null;
let archiveServer = null;
const sockets = new Set();
const start = () => startIn(STATE);

after(async () => {
  for (const ws of sockets) ws.terminate();
  await server?.kill();
  await archiveServer?.kill();
  rmSync(STATE, { recursive: true, force: true });
  rmSync(ARCHIVE_STATE, { recursive: true, force: true });
});

/** A subscriber that records the seqs it receives and can resume. */
function subscriber(base, character, since, epoch) {
  const q = new URLSearchParams({ topics: ">" });
  if (since !== undefined) { q.set("since", String(since)); q.set("epoch", epoch); }
  const ws = new WebSocket(`${base.replace(/^http/, "ws")}/v1/characters/${character}/subscribe?${q}`, { closeTimeout: 500, handshakeTimeout: 15_000 });
  sockets.add(ws);
  const s = { ws, seqs: [], welcome: null, recovered: null, closed: false };
  ws.on("message", (d) => {
    const f = JSON.parse(d.toString());
    if (f.type === "welcome") s.welcome = f;
    else if (f.type === "command") s.seqs.push(f.seq);
    else if (f.type === "recovered") s.recovered = f;
  });
  ws.on("close", () => { s.closed = true; sockets.delete(ws); });
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
  while (Date.now() < end) { if (pred()) return; await sleep(20); }
  throw new Error(`timed out waiting for ${what}`);
}

async function openMany(base, character, n, resumeFrom) {
  const subs = [];
  for (let i = 0; i < n; i += 100) {
    const batch = Array.from({ length: Math.min(100, n - i) }, (_, k) => {
      const prev = resumeFrom?.[i + k];
      return subscriber(base, character, prev?.since, prev?.epoch);
    });
    await Promise.all(batch.map((s) => s.ready));
    subs.push(...batch);
  }
  return subs;
}

/**
 * Publishes as fast as `concurrency` allows until `killAfter` publishes are
 * acknowledged, then kills the server while more are in flight.
 */
async function publishThenKill(srv, character, killAfter, concurrency = 4) {
  const acked = [];
  let sent = 0;
  let killed = false;
  let killing = null;
  const worker = async () => {
    while (!killed) {
      const i = sent++;
      try {
        const r = await fetch(`${srv.url}/v1/characters/${character}/commands`, {
          method: "POST", headers: { "content-type": "application/json" },
          body: JSON.stringify({ name: "step", params: { i } }),
        });
        if (r.status === 200) {
          acked.push((await r.json()).seqs[0]);
          if (acked.length >= killAfter && !killed) { killed = true; killing = srv.kill(); }
        }
      } catch { /* the server died under this request: not acknowledged */ }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  await killing; // every process of the old server is gone before the next starts on its state
  return acked.sort((a, b) => a - b);
}

test("acknowledged publishes survive SIGKILL; every subscriber resumes with each seq once, in order", { timeout: 600_000 }, async () => {
  const character = `durable-${Date.now().toString(36)}`;
  let srv = server = await start();
  const first = await openMany(srv.url, character, 20);
  await until(() => first.every((s) => s.welcome), 10_000, "welcome");
  const epoch = first[0].welcome.epoch;
  let subs = first;
  const allAcked = new Set();
  const history = new Map(); // subscriber index -> every seq it has received over all connections

  for (const [round, killAfter] of [25, 40, 10].entries()) {
    progress(`round ${round + 1}: publishing until ${killAfter} acknowledged, then kill`);
    const acked = await publishThenKill(srv, character, killAfter);
    for (const s of acked) allAcked.add(s);
    subs.forEach((s, i) => history.set(i, [...(history.get(i) ?? []), ...s.seqs]));
    // Restart on the same state; every subscriber resumes where it stopped.
    srv = server = await start();
    const resumeFrom = subs.map((s, i) => ({ since: (history.get(i) ?? []).at(-1) ?? 0, epoch }));
    const t0 = Date.now();
    subs = await openMany(srv.url, character, subs.length, resumeFrom);
    progress(`round ${round + 1}: ${subs.length} resumed sockets open`);
    await until(() => subs.every((s) => s.recovered), 20_000, `recovered after kill ${round + 1}`);
    const recoverMs = Date.now() - t0;
    for (const [i, s] of subs.entries()) {
      assert.equal(s.welcome.epoch, epoch, "epoch unchanged by the restart");
      assert.equal(s.recovered.complete, true, `subscriber ${i} complete`);
      const all = [...history.get(i), ...s.seqs];
      const sorted = [...all].sort((a, b) => a - b);
      assert.deepEqual(all, sorted, `subscriber ${i}: in order`);
      assert.equal(new Set(all).size, all.length, `subscriber ${i}: no duplicates`);
      for (const a of allAcked) assert.ok(all.includes(a), `subscriber ${i} is missing acknowledged seq ${a}`);
      // Nothing beyond what the character holds, and no gaps inside it.
      assert.deepEqual(sorted, Array.from({ length: sorted.length }, (_, k) => k + 1), `subscriber ${i}: gapless`);
      history.set(i, all);
      s.seqs = [];
    }
    const h = await (await fetch(`${srv.url}/v1/characters/${character}/history?limit=1000`)).json();
    const stored = h.commands.map((c) => c.seq);
    for (const a of allAcked) assert.ok(stored.includes(a), `history is missing acknowledged seq ${a}`);
    assert.equal(h.epoch, epoch);
    console.log(`kill ${round + 1}: ${acked.length} acknowledged (total ${allAcked.size}), history ${stored.length}, ${subs.length} resumed in ${recoverMs} ms`);
  }
  for (const s of subs) s.ws.terminate();
});

test(`reconnect storm: ${STORM} subscribers dropped at once all resume with nothing lost`, { timeout: 600_000 }, async () => {
  const character = `storm-${Date.now().toString(36)}`;
  let srv = server ?? (server = await start());
  const subs = await openMany(srv.url, character, STORM);
  await until(() => subs.every((s) => s.welcome), 30_000, "welcome");
  const epoch = subs[0].welcome.epoch;
  const acked = await publishThenKill(srv, character, 30);
  srv = server = await start();
  // While everyone reconnects at once, publishing goes on.
  const t0 = Date.now();
  const resumeFrom = subs.map((s) => ({ since: s.seqs.at(-1) ?? 0, epoch }));
  const more = [];
  let stop = false;
  const publisher = (async () => {
    while (!stop) {
      const r = await fetch(`${srv.url}/v1/characters/${character}/commands`, {
        method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ name: "live" }),
      });
      if (r.status === 200) more.push((await r.json()).seqs[0]);
      await sleep(50);
    }
  })();
  const back = await Promise.all(resumeFrom.map((r) => {
    const s = subscriber(srv.url, character, r.since, r.epoch);
    return s.ready.then(() => s);
  }));
  await until(() => back.every((s) => s.recovered), 30_000, "every subscriber recovered");
  const recoverMs = Date.now() - t0;
  stop = true;
  await publisher;
  const last = more.at(-1) ?? acked.at(-1);
  await until(() => back.every((s) => (s.seqs.at(-1) ?? 0) >= last), 15_000, "live commands after the storm");
  for (const [i, s] of back.entries()) {
    const all = [...subs[i].seqs, ...s.seqs];
    assert.equal(s.recovered.complete, true);
    assert.deepEqual(all, Array.from({ length: all.length }, (_, k) => k + 1), `subscriber ${i}: every seq once, in order`);
    for (const a of [...acked, ...more]) assert.ok(all.includes(a), `subscriber ${i} missing ${a}`);
  }
  console.log(`storm: ${STORM} subscribers recovered in ${recoverMs} ms; ${acked.length} acknowledged before the kill, ${more.length} during the storm`);
  for (const s of back) s.ws.terminate();
});

test("after SIGKILL, seq goes on past archived history and idempotency keys still hold", { timeout: 300_000 }, async () => {
  // A small HISTORY_LIMIT makes the object move most of its history to KV,
  // so SQLite holds only the newest rows when the runtime dies.
  const vars = { HISTORY_LIMIT: "4" };
  const character = `archived-${Date.now().toString(36)}`;
  const url = (base, rest) => `${base}/v1/characters/${character}${rest}`;
  const publish = async (base, id) => {
    const r = await fetch(url(base, "/commands"), {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ name: "step", id }),
    });
    assert.equal(r.status, 200, `publish ${id}: ${await r.clone().text()}`);
    return r.json();
  };
  let srv = archiveServer = await startIn(ARCHIVE_STATE, { vars });
  const first = [];
  for (let i = 1; i <= 30; i++) first.push(await publish(srv.url, `step-${i}`));
  assert.deepEqual(first.map((a) => a.seqs[0]), Array.from({ length: 30 }, (_, k) => k + 1));
  const epoch = first[0].epoch;
  // The archive task runs after the publishes; wait until pages are in KV
  // (the local KV keeps values as files under the persisted state), so the
  // object's SQLite holds only the newest rows when the runtime dies.
  const pages = join(ARCHIVE_STATE, "v3/kv/animation-history-dev-preview/blobs");
  const archived = () => (existsSync(pages) ? readdirSync(pages).length : 0);
  for (let i = 0; i < 100 && archived() < 5; i++) await sleep(100);
  assert.ok(archived() >= 5, `history pages written to KV before the kill: ${archived()}`);
  await srv.kill();
  srv = archiveServer = await startIn(ARCHIVE_STATE, { vars });
  const next = await publish(srv.url, "step-31");
  assert.equal(next.epoch, epoch, "epoch survives the restart");
  assert.deepEqual(next.seqs, [31], "seq goes on after the newest stored command");
  const again = await publish(srv.url, "step-7");
  assert.deepEqual(again.seqs, [7], "an idempotency key from before the kill answers its original seq");
  // One history request reads at most 20 archive pages (of 1 seq here): page on with next_since.
  const seqs = [];
  for (let since = 0, i = 0; since !== undefined && i < 10; i++) {
    const h = await (await fetch(url(srv.url, `/history?since=${since}&limit=100`))).json();
    assert.equal(h.epoch, epoch);
    assert.equal(h.complete, true, `history complete from ${since}`);
    seqs.push(...h.commands.map((c) => c.seq));
    since = h.next_since;
  }
  assert.deepEqual(seqs, Array.from({ length: 31 }, (_, k) => k + 1), "history 1..31 across KV and SQLite");
});
