// A wake from hibernation keeps the registry's lease: the waking object finds
// the sockets its entry names, so it does not report again but resumes the
// lease refresh from the stored time of its last listing report
// (routing::lease). Here the lease is 60 s (refresh every 30 s); the object
// is evicted while its sockets idle, woken by a publish before its refresh
// is due (so the wake itself decides what to do), and the global
// listing must show its sockets at every poll for more than one lease after
// the wake. Then the sockets close and the entry goes.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import WebSocket from "ws";
import { start, sleep, progress } from "./helpers.mjs";

const STATE = mkdtempSync(join(tmpdir(), "gateway-wake-lease-"));
const LOG = join(STATE, "wrangler.log");
const LEASE_S = 60;
const IDLE_MS = Number(process.env.HIBERNATION_IDLE_MS ?? 25_000);
let server = null;
const sockets = [];
after(async () => {
  for (const ws of sockets) ws.terminate();
  await server?.kill();
  rmSync(STATE, { recursive: true, force: true });
});

async function open(c) {
  const ws = new WebSocket(`${server.url.replace(/^http/, "ws")}/v1/characters/${c}/subscribe?topics=face`);
  sockets.push(ws);
  const frames = [];
  ws.on("message", (d) => { if (d.toString() !== "pong") frames.push(JSON.parse(d.toString())); });
  await new Promise((resolve, reject) => { ws.once("message", resolve); ws.once("error", reject); });
  return { ws, frames };
}

const listed = async (c) => {
  const r = await fetch(`${server.url}/v1/admin/subscriptions`);
  assert.equal(r.status, 200);
  return (await r.json()).characters.find((x) => x.character === c)?.subscribers;
};

test("a wake from hibernation keeps its sockets listed through the next leases", { timeout: 240_000 }, async () => {
  server = await start(STATE, { logFile: LOG, logLevel: "log", vars: { REGISTRY_LEASE_SECONDS: String(LEASE_S) } });
  const c = `wl-${Date.now().toString(36)}`;
  const a = await open(c);
  const b = await open(c);
  const end = Date.now() + 5_000;
  while ((await listed(c)) !== 2) {
    assert.ok(Date.now() < end, "the 2 sockets listed");
    await sleep(100);
  }

  progress(`idle ${IDLE_MS} ms with keep-alive pings`);
  const pingsEnd = Date.now() + IDLE_MS;
  while (Date.now() < pingsEnd) {
    for (const s of [a, b]) s.ws.send("ping");
    await sleep(2_000);
  }
  const r = await fetch(`${server.url}/v1/characters/${c}/commands`, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ topic: "face", name: "smile" }),
  });
  assert.equal(r.status, 200);
  const woke = Date.now();
  // The runtime's log reaches the file a little later.
  const logged = () => readFileSync(LOG, "utf8").includes(`character ${c}: woke with 2 sockets`);
  while (!logged() && Date.now() < woke + 10_000) await sleep(200);
  assert.ok(logged(), "the object was evicted and woke with its sockets");

  progress(`polling the listing for ${LEASE_S + 5} s after the wake`);
  while (Date.now() < woke + (LEASE_S + 5) * 1000) {
    assert.equal(await listed(c), 2, `listed ${((Date.now() - woke) / 1000).toFixed(1)} s after the wake`);
    await sleep(1_000);
  }
  for (const s of [a, b]) assert.ok(s.frames.some((f) => f.type === "command" && f.name === "smile"), "the waking publish arrived");

  for (const s of [a, b]) s.ws.close();
  const gone = Date.now() + 5_000;
  while ((await listed(c)) !== undefined) {
    assert.ok(Date.now() < gone, "the entry leaves once the sockets closed");
    await sleep(200);
  }
});
