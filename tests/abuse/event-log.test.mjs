// The event log off the per-command path (docs/protocol.md, "Event-log buffer
// and flushes"): a character's events wait in its object's SQLite and go to KV
// in large batches. Checked against real servers, counting the KV writes in the
// local KV simulator's state (one blob file per put; every batch has a new key):
// * 100 publishes to a quiet character are in `/v1/admin/logs?character=` at
//   once, before any flush, while the global view (KV only) lacks them; they
//   then reach KV in at most a couple of writes, and the per-character view
//   still lists each exactly once across the flush boundary;
// * connects and disconnects without any publish (staged in memory for at
//   most LOG_STAGE_MS, then written to SQLite together) are listed by the
//   object's tail at once, and reach KV on their own, each once;
// * events whose KV writes failed (TEST_FAIL_LOG_WRITES) stay buffered, survive
//   a SIGKILL of the runtime, and are written after the restart (same state
//   directory), unprompted, by the object's alarm.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { start, http, until, progress, open } from "./helpers.mjs";

const servers = [];
const dirs = [];
after(async () => {
  for (const s of servers) await s.kill();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** Each log batch written to the local KV of `state` for `character` (one per put). */
function kvBatches(state, character) {
  const root = join(state, "v3", "kv");
  if (!existsSync(root)) return [];
  const batches = [];
  for (const ns of readdirSync(root).filter((n) => n.includes("logs"))) {
    const blobs = join(root, ns, "blobs");
    if (!existsSync(blobs)) continue;
    for (const f of readdirSync(blobs)) {
      let events;
      try { events = JSON.parse(readFileSync(join(blobs, f), "utf8")); } catch { continue; }
      if (Array.isArray(events) && events.some((e) => e.character === character)) batches.push(events);
    }
  }
  return batches;
}

const seqsOf = (events, character) => events
  .filter((e) => e.event === "publish" && e.character === character)
  .flatMap((e) => e.detail.seqs);
const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

async function publish(base, character, n) {
  for (let i = 0; i < n; i++) {
    const r = await http(base, "POST", `/v1/characters/${character}/commands`, { topic: "face", name: "smile" });
    assert.equal(r.status, 200, r.text);
  }
}

test("a quiet character: visible at once, flushed in a couple of KV writes, listed once across the flush", { timeout: 240_000 }, async () => {
  const FLUSH_S = 5;
  const state = mkdtempSync(join(tmpdir(), "gateway-eventlog-"));
  dirs.push(state);
  const server = await start({ state, vars: { AUTH_ENABLED: "false", LOG_FLUSH_SECONDS: String(FLUSH_S) } });
  servers.push(server);
  const c = `quiet-${Date.now().toString(36)}`;

  const t0 = Date.now();
  await publish(server.url, c, 100);
  const own = (await http(server.url, "GET", `/v1/admin/logs?character=${c}&limit=1000`)).json.events;
  const seconds = (Date.now() - t0) / 1000;
  progress(`100 publishes and the read took ${seconds.toFixed(1)} s`);
  assert.deepEqual(seqsOf(own, c), range(1, 100).reverse(), "every publish at once, newest first");
  const limited = (await http(server.url, "GET", `/v1/admin/logs?character=${c}&limit=7`)).json.events;
  assert.deepEqual(seqsOf(limited, c), range(94, 100).reverse(), "limit takes the newest");
  if (seconds < FLUSH_S - 1) {
    // Nothing was due yet: no KV write, and the global view (KV only) lags.
    assert.equal(kvBatches(state, c).length, 0, "no KV write before the flush interval");
    const global = (await http(server.url, "GET", "/v1/admin/logs?limit=1000")).json.events;
    assert.deepEqual(seqsOf(global, c), [], "the global view reads KV only");
  }

  // The alarm flushes once the interval after the first event has passed.
  await until(async () => {
    const global = (await http(server.url, "GET", "/v1/admin/logs?limit=1000")).json.events;
    return seqsOf(global, c).length === 100;
  }, 60_000, "the 100 publishes in KV");
  const batches = kvBatches(state, c);
  const writes = batches.length;
  progress(`KV writes for the 100 publishes: ${writes}`);
  // One per interval the publishes spanned, plus one.
  assert.ok(writes >= 1 && writes <= Math.ceil(seconds / FLUSH_S) + 1, `${writes} KV writes for 100 publishes over ${seconds} s`);
  assert.ok(writes <= 3, `at most a couple of KV writes, got ${writes}`);
  const inKv = batches.flatMap((b) => seqsOf(b, c)).sort((a, b) => a - b);
  assert.deepEqual(inKv, range(1, 100), "each event written once");

  // Flushed rows are still in the object's tail for a while: the merge lists
  // each event once, and a new one is seen at once next to the flushed ones.
  await publish(server.url, c, 1);
  const merged = (await http(server.url, "GET", `/v1/admin/logs?character=${c}&limit=1000`)).json.events;
  assert.deepEqual(seqsOf(merged, c), range(1, 101).reverse(), "no duplicates across the flush boundary");
  await server.stop();
  servers.splice(servers.indexOf(server), 1);
});

test("connects and disconnects alone: listed at once, then in KV on their own, each once", { timeout: 240_000 }, async () => {
  const state = mkdtempSync(join(tmpdir(), "gateway-eventlog-staged-"));
  dirs.push(state);
  const server = await start({ state, vars: { AUTH_ENABLED: "false", LOG_FLUSH_SECONDS: "2" } });
  servers.push(server);
  const c = `staged-${Date.now().toString(36)}`;
  const ids = [];
  for (let i = 0; i < 5; i++) {
    const s = await open(server.url, c, { topics: "face" });
    ids.push(s.frames[0].client_id);
    assert.equal(typeof ids[i], "string", "welcome names the client");
    s.ws.close(1000);
    await until(() => s.closed !== null, 10_000, "the close");
  }
  const of = (events, kind) => events.filter((e) => e.character === c && e.event === kind).map((e) => e.client_id).sort();
  // The tail writes what is staged before it reads: nothing waits.
  await until(async () => {
    const own = (await http(server.url, "GET", `/v1/admin/logs?character=${c}&limit=100`)).json.events;
    return of(own, "disconnect").length === 5;
  }, 10_000, "the five disconnects in the object's tail");
  const own = (await http(server.url, "GET", `/v1/admin/logs?character=${c}&limit=100`)).json.events;
  assert.deepEqual(of(own, "connect"), [...ids].sort(), "every connect listed");
  // Without any publish or read, the stage timer writes them to SQLite and
  // the flush takes them to KV.
  const c2 = `${c}-alone`;
  const s = await open(server.url, c2, { topics: "face" });
  const id2 = s.frames[0].client_id;
  s.ws.close(1000);
  await until(() => kvBatches(state, c2).flat().filter((e) => e.character === c2).length >= 2, 60_000, "connect and disconnect in KV");
  const inKv = kvBatches(state, c2).flat().filter((e) => e.character === c2);
  assert.deepEqual(inKv.map((e) => [e.event, e.client_id]).sort(), [["connect", id2], ["disconnect", id2]], "each once");
});

test("events whose KV writes failed survive a SIGKILL and are flushed after the restart", { timeout: 300_000 }, async () => {
  const state = mkdtempSync(join(tmpdir(), "gateway-eventlog-kill-"));
  dirs.push(state);
  const c = `killed-${Date.now().toString(36)}`;
  const failing = await start({
    state,
    vars: { AUTH_ENABLED: "false", LOG_FLUSH_SECONDS: "1", TEST_FAIL_LOG_WRITES: "true" },
  });
  servers.push(failing);
  await publish(failing.url, c, 20);
  // Several flushes are due and fail meanwhile (1 s, then 1 s, 2 s, … of backoff).
  await new Promise((r) => setTimeout(r, 4_000));
  const held = (await http(failing.url, "GET", `/v1/admin/logs?character=${c}&limit=100`)).json.events;
  assert.deepEqual(seqsOf(held, c), range(1, 20).reverse(), "kept in the object");
  assert.equal(kvBatches(state, c).length, 0, "every write failed");
  progress("SIGKILL with 20 unwritten events");
  await failing.kill();
  servers.splice(servers.indexOf(failing), 1);

  // Same state, writes working. Nothing touches the character: the persisted
  // alarm wakes the object, which flushes what it finds in its SQLite.
  const server = await start({ state, vars: { AUTH_ENABLED: "false", LOG_FLUSH_SECONDS: "1" } });
  servers.push(server);
  await until(() => seqsOf(kvBatches(state, c).flat(), c).length === 20, 90_000, "the buffered events in KV");
  const inKv = kvBatches(state, c).flatMap((b) => seqsOf(b, c)).sort((a, b) => a - b);
  assert.deepEqual(inKv, range(1, 20), "each written once");
  const own = (await http(server.url, "GET", `/v1/admin/logs?character=${c}&limit=100`)).json.events;
  assert.deepEqual(seqsOf(own, c), range(1, 20).reverse(), "listed once");
});
