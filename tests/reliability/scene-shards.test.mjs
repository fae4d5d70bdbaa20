// Scenes past one object (docs/protocol.md, "Scenes"): with FANOUT_LIMIT=10,
// 25 sockets of one scene are spread over its shards `~s<hash>`,
// `~s<hash>~1`, `~s<hash>~2` (10, 10, 5), each shard fed by the characters
// like any scene object, so every socket gets every command of its
// characters exactly once, in seq order. Scene sockets count towards each
// character's MAX_SUBSCRIBERS (30 here): once a character holds 30 sockets
// (scene-held included), a subscribe to it, direct or through a scene, is
// `503 character_full` before the upgrade. Then the shards are left idle
// until the runtime evicts them: they wake on the next feed with their
// sockets, deliver exactly, and a kick still finds a socket on a shard.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import WebSocket from "ws";
import { start as startIn, sleep, progress } from "./helpers.mjs";

const STATE = mkdtempSync(join(tmpdir(), "gateway-scene-shards-"));
const LOG = join(STATE, "wrangler.log");
const IDLE_MS = Number(process.env.HIBERNATION_IDLE_MS ?? 25_000);
let server = null;
const sockets = new Set();
after(async () => {
  for (const ws of sockets) ws.terminate();
  await server?.kill();
  rmSync(STATE, { recursive: true, force: true });
});

async function until(pred, ms, what) {
  const end = Date.now() + ms;
  while (Date.now() < end) { if (await pred()) return; await sleep(50); }
  throw new Error(`timed out waiting for ${what}`);
}

/** Opens a socket on `path`; resolves with its frames once `welcome` came, or with the refusal. */
function open(base, path) {
  const ws = new WebSocket(`${base.replace(/^http/, "ws")}${path}`, { closeTimeout: 500 });
  sockets.add(ws);
  const s = { ws, frames: [] };
  ws.on("message", (d) => { if (d.toString() !== "pong") s.frames.push(JSON.parse(d.toString())); });
  ws.on("error", () => {});
  return new Promise((resolve) => {
    ws.once("message", () => resolve(s));
    ws.once("unexpected-response", (_q, res) => {
      let body = "";
      res.on("data", (d) => { body += d; });
      res.on("end", () => resolve({ status: res.statusCode, retry: res.headers["retry-after"], body: JSON.parse(body || "{}") }));
    });
  });
}

const get = async (base, path) => (await fetch(`${base}${path}`)).json();
const publish = (base, character, i) => fetch(`${base}/v1/characters/${character}/commands`, {
  method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ topic: "face", name: "n", params: { i } }),
}).then((r) => r.json());

test("a scene's sockets are sharded past FANOUT_LIMIT, delivery stays exact, and they count towards MAX_SUBSCRIBERS", { timeout: 240_000 }, async () => {
  const srv = server = await startIn(STATE, { logFile: LOG, logLevel: "log", vars: { FANOUT_LIMIT: "10", MAX_SUBSCRIBERS: "30" } });
  const run = Date.now().toString(36);
  const [a, b] = [`sha-${run}`, `shb-${run}`];
  const scene = [];
  for (let i = 0; i < 25; i++) {
    const s = await open(srv.url, `/v1/subscribe?characters=${a},${b}`);
    assert.ok(s.frames, `scene socket ${i} refused: ${JSON.stringify(s)}`);
    scene.push(s);
  }
  progress("25 scene sockets open");
  const listing = await get(srv.url, `/v1/admin/characters/${a}/subscriptions`);
  const perObject = {};
  for (const e of listing.subscribers) perObject[e.relay] = (perObject[e.relay] ?? 0) + 1;
  const names = Object.keys(perObject).sort();
  assert.equal(names.length, 3, JSON.stringify(perObject));
  assert.match(names[0], /^~s[0-9a-f]{16}$/);
  assert.deepEqual(names.slice(1), [`${names[0]}~1`, `${names[0]}~2`]);
  assert.deepEqual(names.map((n) => perObject[n]), [10, 10, 5]);
  assert.equal(listing.scenes, 3);
  assert.equal(listing.scene_sockets, 25);

  for (let i = 1; i <= 20; i++) await publish(srv.url, a, i);
  for (let i = 1; i <= 5; i++) await publish(srv.url, b, i);
  const seqs = (s, c) => s.frames.filter((f) => f.type === "command" && f.character === c).map((f) => f.seq);
  await until(() => scene.every((s) => seqs(s, a).length >= 20 && seqs(s, b).length >= 5), 20_000, "every command on every shard");
  await sleep(300);
  const want = (n) => Array.from({ length: n }, (_, i) => i + 1);
  for (const [i, s] of scene.entries()) {
    assert.deepEqual(seqs(s, a), want(20), `socket ${i}, ${a}`);
    assert.deepEqual(seqs(s, b), want(5), `socket ${i}, ${b}`);
  }
  progress("delivery exact on every shard");

  // MAX_SUBSCRIBERS (30) counts the 25 scene sockets: 5 more on a's own object.
  for (let i = 0; i < 5; i++) {
    const s = await open(srv.url, `/v1/characters/${a}/subscribe`);
    assert.ok(s.frames, `own socket ${i} refused: ${JSON.stringify(s)}`);
  }
  const direct = await open(srv.url, `/v1/characters/${a}/subscribe`);
  assert.equal(direct.status, 503, JSON.stringify(direct));
  assert.equal(direct.body.error.code, "character_full");
  assert.ok(direct.retry, "Retry-After");
  const viaScene = await open(srv.url, `/v1/subscribe?characters=${a},${b}`);
  assert.equal(viaScene.status, 503, JSON.stringify(viaScene));
  assert.equal(viaScene.body.error.code, "character_full");
  assert.ok(viaScene.retry, "Retry-After");
  // b is not full (25): a scene of b alone is served.
  const other = await open(srv.url, `/v1/subscribe?characters=${b}`);
  assert.ok(other.frames, JSON.stringify(other));
  // Room again once a scene socket leaves (its scene tells a's object).
  scene[24].ws.close();
  await until(async () => {
    const s = await open(srv.url, `/v1/characters/${a}/subscribe`);
    if (s.ws) return true;
    return false;
  }, 10_000, "room after a scene socket left");
  progress(`idle ${IDLE_MS} ms with keep-alive pings`);
  const open24 = scene.slice(0, 24);
  const end = Date.now() + IDLE_MS;
  while (Date.now() < end) { for (const s of open24) s.ws.send("ping"); await sleep(5_000); }
  await publish(srv.url, a, 21);
  await until(() => open24.every((s) => seqs(s, a).length >= 21), 15_000, "a command after the eviction");
  await sleep(300);
  for (const [i, s] of open24.entries()) assert.deepEqual(seqs(s, a), want(21), `socket ${i} after the eviction`);
  const log = readFileSync(LOG, "utf8");
  for (const name of names.slice(0, 2)) {
    assert.ok(log.includes(`scene ${name}: woke with 10 sockets`), `${name} was evicted and woke with its sockets`);
  }
  // A kick after the wake finds a socket on the last shard.
  const after = await get(srv.url, `/v1/admin/characters/${b}/subscriptions`);
  const onLast = after.subscribers.find((e) => e.relay === names[2]);
  const victim = open24.find((s) => s.frames[0].client_id === onLast.client_id);
  const closed = new Promise((r) => victim.ws.once("close", r));
  const kick = await fetch(`${srv.url}/v1/admin/characters/${b}/subscriptions/${onLast.client_id}`, { method: "DELETE" });
  assert.equal(kick.status, 200);
  assert.equal(await closed, 4010);
  console.log(`scene shards: 25 sockets over ${names.length} objects ${JSON.stringify(names.map((n) => perObject[n]))}, every command once in order; MAX_SUBSCRIBERS counted them; evicted shards woke with their sockets, delivery and a kick exact`);
});
