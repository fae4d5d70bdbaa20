// Hibernation: a character object with only idle sockets is evicted (pings
// are answered by the runtime's auto-response and do not wake it). When a
// publish wakes it, the constructor rebuilds subscriptions, presence flags and
// users from the sockets' attachments (and topic lists too long for an
// attachment from SQLite), and routing must stay exact.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import WebSocket from "ws";
import { start, sleep, progress } from "./helpers.mjs";

const STATE = mkdtempSync(join(tmpdir(), "gateway-hib-"));
const LOG = join(STATE, "wrangler.log");
const IDLE_MS = Number(process.env.HIBERNATION_IDLE_MS ?? 25_000);
let server = null;
const sockets = new Set();
after(async () => {
  for (const ws of sockets) ws.terminate();
  await server?.kill();
  rmSync(STATE, { recursive: true, force: true });
});

function open(base, character, query) {
  const ws = new WebSocket(`${base.replace(/^http/, "ws")}/v1/characters/${character}/subscribe?${query}`, { closeTimeout: 500, handshakeTimeout: 15_000 });
  sockets.add(ws);
  const s = { ws, frames: [], pongs: 0 };
  ws.on("message", (d) => {
    const t = d.toString();
    if (t === "pong") s.pongs++; else s.frames.push(JSON.parse(t));
  });
  s.ready = new Promise((resolve, reject) => { ws.once("open", resolve); ws.once("error", reject); });
  s.commands = () => s.frames.filter((f) => f.type === "command").map((f) => f.name);
  s.until = async (pred, ms = 10_000) => {
    const end = Date.now() + ms;
    while (Date.now() < end) { if (pred(s)) return; await sleep(20); }
    throw new Error(`timed out; frames ${JSON.stringify(s.frames).slice(0, 500)}`);
  };
  return s;
}

test("after eviction, subscriptions, presence and spilled topic lists are rebuilt and routing stays exact", { timeout: 180_000 }, async () => {
  server = await start(STATE, { logFile: LOG, logLevel: "log" });
  const c = `hib-${Date.now().toString(36)}`;
  // Long filters: 32 of them serialize to more than the attachment budget.
  const many = Array.from({ length: 32 }, (_, i) => `segment-number-${String(i).padStart(2, "0")}-abcdefghijkl.x`);
  const a = open(server.url, c, "topics=face&presence=true");
  const b = open(server.url, c, "topics=body.*,legs");
  const d = open(server.url, c, `topics=${many.join(",")}`);
  const e = open(server.url, c, "topics=hands");
  await Promise.all([a, b, d, e].map((s) => s.ready));
  await Promise.all([a, b, d, e].map((s) => s.until((x) => x.frames.some((f) => f.type === "welcome"))));
  // A subscription changed by frame must survive too (its attachment is rewritten).
  e.ws.send(JSON.stringify({ type: "subscribe", topics: ["eyes.*"] }));
  await e.until((x) => x.frames.some((f) => f.type === "subscribed"));
  const before = readFileSync(LOG, "utf8").split(c).length;

  progress(`idle ${IDLE_MS} ms with keep-alive pings`);
  const pingsEnd = Date.now() + IDLE_MS;
  while (Date.now() < pingsEnd) { a.ws.send("ping"); await sleep(5_000); }
  assert.ok(a.pongs >= 2, "pings were answered while idle");

  const publish = async (topic, name) => {
    const r = await fetch(`${server.url}/v1/characters/${c}/commands`, {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ topic, name }),
    });
    assert.equal(r.status, 200);
  };
  await publish("face", "smile");
  await publish("body.arms", "wave");
  await publish("legs", "kick");
  await publish("eyes.left", "blink");
  await publish("hands", "clap");
  await publish("segment-number-31-abcdefghijkl.x", "deep");
  await publish("main", "nobody");
  await sleep(800);
  const woke = readFileSync(LOG, "utf8").match(new RegExp(`character ${c}: woke with (\\d+) sockets`, "g")) ?? [];
  assert.ok(woke.length >= 1, "the object was evicted and woke with its sockets (log line)");
  assert.ok(woke.some((l) => l.endsWith("woke with 4 sockets")), woke.join("; "));
  assert.ok(readFileSync(LOG, "utf8").split(c).length > before);

  assert.deepEqual(a.commands(), ["smile"]);
  assert.deepEqual(b.commands(), ["wave", "kick"]);
  assert.deepEqual(e.commands(), ["blink", "clap"]);
  assert.deepEqual(d.commands(), ["deep"]);

  // Presence flags survived: a newcomer is announced to `a` only.
  const f = open(server.url, c, "topics=face");
  await f.ready;
  await f.until((x) => x.frames.some((fr) => fr.type === "welcome"));
  const fid = f.frames.find((fr) => fr.type === "welcome").client_id;
  await a.until((x) => x.frames.some((fr) => fr.type === "presence" && fr.client_id === fid));
  const join = a.frames.find((fr) => fr.type === "presence" && fr.client_id === fid);
  assert.equal(join.event, "join");
  assert.equal(join.count, 5);
  await sleep(300);
  assert.equal(b.frames.filter((fr) => fr.type === "presence").length, 0);

  // The admin view sees the rebuilt state.
  const detail = await (await fetch(`${server.url}/v1/admin/characters/${c}/subscriptions`)).json();
  assert.equal(detail.subscribers.length, 5);
  const byPresence = detail.subscribers.filter((s) => s.presence);
  assert.equal(byPresence.length, 1);
  assert.ok(detail.subscribers.some((s) => s.topics.length === 32), "spilled topic list restored");
  assert.ok(detail.subscribers.some((s) => JSON.stringify(s.topics) === JSON.stringify(["hands", "eyes.*"])));
});
