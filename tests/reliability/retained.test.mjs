// Retained commands are durable: after the runtime is killed with SIGKILL
// and restarted on the same state, `GET .../state` lists the same retained
// commands (a cleared one stays cleared) and a late joiner gets them right
// after `welcome`, even though the history rows they came from were moved
// out to the KV archive long before (HISTORY_LIMIT 4): retained commands
// count toward no history limit.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import WebSocket from "ws";
import { start, sleep, progress } from "./helpers.mjs";

const STATE = mkdtempSync(join(tmpdir(), "gateway-retained-"));
const vars = { HISTORY_LIMIT: "4" };
let server = null;
const sockets = new Set();

after(async () => {
  for (const ws of sockets) ws.terminate();
  await server?.kill();
  rmSync(STATE, { recursive: true, force: true });
});

const json = async (res) => ({ status: res.status, body: await res.json() });

/** The frames a new socket gets until `count` frames arrived (welcome included). */
function firstFrames(base, character, topics, count) {
  const ws = new WebSocket(`${base.replace(/^http/, "ws")}/v1/characters/${character}/subscribe?topics=${topics}`, { closeTimeout: 500 });
  sockets.add(ws);
  const frames = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${JSON.stringify(frames)}`)), 10_000);
    ws.on("message", (d) => {
      frames.push(JSON.parse(d.toString()));
      if (frames.length === count) { clearTimeout(timer); resolve({ ws, frames }); }
    });
    ws.on("error", reject);
  });
}

test("retained commands survive SIGKILL and the archiving of their history rows", { timeout: 300_000 }, async () => {
  const character = `retained-${Date.now().toString(36)}`;
  const url = (base, rest) => `${base}/v1/characters/${character}${rest}`;
  const publish = async (base, body) => {
    const r = await json(await fetch(url(base, "/commands"), {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
    }));
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body.seqs;
  };
  let srv = server = await start(STATE, { vars });
  const [sit] = await publish(srv.url, { topic: "pose", name: "sit", retain: true });
  const [coat] = await publish(srv.url, { topic: "outfit", name: "coat", params: { color: "red" }, retain: true });
  const [smile] = await publish(srv.url, { topic: "face", name: "smile", retain: true });
  for (let i = 0; i < 30; i++) await publish(srv.url, { topic: i % 2 ? "face" : "pose", name: "step", params: { i } });
  const [frown] = await publish(srv.url, { topic: "face", name: "frown", retain: true }); // replaces smile
  const cleared = await json(await fetch(url(srv.url, "/retained/outfit"), { method: "DELETE" }));
  assert.deepEqual(cleared.body.cleared, true);
  const before = await json(await fetch(url(srv.url, "/state")));
  assert.deepEqual(before.body.retained.map((f) => [f.seq, f.name]), [[sit, "sit"], [frown, "frown"]]);
  assert.ok(coat < smile && smile < frown);
  // The history rows of `sit` are archived to KV before the kill.
  const pages = join(STATE, "v3/kv/animation-history-dev-preview/blobs");
  const archived = () => (existsSync(pages) ? readdirSync(pages).length : 0);
  for (let i = 0; i < 100 && archived() < 5; i++) await sleep(100);
  assert.ok(archived() >= 5, `history pages written to KV before the kill: ${archived()}`);
  progress("killing the server with SIGKILL");
  await srv.kill();
  srv = server = await start(STATE, { vars });

  const afterKill = await json(await fetch(url(srv.url, "/state")));
  assert.equal(afterKill.status, 200);
  assert.deepEqual(afterKill.body, before.body, "the same retained set, epoch and seq after the restart");
  const { ws, frames } = await firstFrames(srv.url, character, ">", 3);
  assert.equal(frames[0].type, "welcome");
  assert.deepEqual(frames.slice(1).map((f) => [f.type, f.seq, f.name, f.retained]), [
    ["command", sit, "sit", true],
    ["command", frown, "frown", true],
  ]);
  assert.equal(frames[0].epoch, before.body.epoch);
  ws.terminate();
  // Retaining and clearing go on from there.
  const [stand] = await publish(srv.url, { topic: "pose", name: "stand", retain: true });
  await fetch(url(srv.url, "/retained/face"), { method: "DELETE" });
  const last = await json(await fetch(url(srv.url, "/state")));
  assert.deepEqual(last.body.retained.map((f) => [f.seq, f.name]), [[stand, "stand"]]);
});

const RELAY_STATE = mkdtempSync(join(tmpdir(), "gateway-retained-relays-"));
let relayServer = null;
after(async () => {
  await relayServer?.kill();
  rmSync(RELAY_STATE, { recursive: true, force: true });
});

/**
 * A socket that records its frames; resolves once `welcome` and every frame
 * before the live `marker` seq arrived (call `upTo(seq)`).
 */
async function recorder(base, character, topics) {
  const ws = new WebSocket(`${base.replace(/^http/, "ws")}/v1/characters/${character}/subscribe?topics=${topics}`, { closeTimeout: 500, handshakeTimeout: 20_000 });
  sockets.add(ws);
  const r = { ws, frames: [] };
  ws.on("message", (d) => r.frames.push(JSON.parse(d.toString())));
  ws.on("error", () => {});
  await new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("unexpected-response", (_q, res) => reject(new Error(`upgrade refused ${res.statusCode}`)));
  });
  const end = Date.now() + 10_000;
  while (!r.frames.length && Date.now() < end) await sleep(20);
  r.upTo = async (seq) => {
    const stop = Date.now() + 10_000;
    while (Date.now() < stop) {
      const i = r.frames.findIndex((f) => f.type === "command" && f.seq === seq);
      if (i >= 0) return r.frames.slice(0, i);
      await sleep(20);
    }
    throw new Error(`no seq ${seq} in ${JSON.stringify(r.frames)}`);
  };
  return r;
}

test("relay-held late joiners get the retained set as the owner has it, replaced and cleared", { timeout: 300_000 }, async () => {
  const srv = relayServer = await start(RELAY_STATE, { vars: { FANOUT_LIMIT: "10", MAX_SUBSCRIBERS: "1000" } });
  const character = `retained-relay-${Date.now().toString(36)}`;
  const url = (rest) => `${srv.url}/v1/characters/${character}${rest}`;
  const publish = async (body) => {
    const r = await fetch(url("/commands"), { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    assert.equal(r.status, 200, await r.clone().text());
    return (await r.json()).seqs;
  };
  const [sit] = await publish({ topic: "pose", name: "sit", retain: true });
  const [smile] = await publish({ topic: "face", name: "smile", retain: true });
  await publish({ topic: "face", name: "blink" });
  // The owner holds FANOUT_LIMIT sockets; every later one goes to a relay.
  for (let i = 0; i < 10; i++) await recorder(srv.url, character, "nothing");
  const check = async (joiners, want, label) => {
    const [marker] = await publish({ topic: "marker", name: "live" });
    const listing = await (await fetch(`${srv.url}/v1/admin/characters/${character}/subscriptions`)).json();
    const relayOf = new Map(listing.subscribers.map((s) => [s.client_id, s.relay]));
    for (const j of joiners) {
      const first = await j.r.upTo(marker);
      assert.equal(first[0].type, "welcome", label);
      assert.ok(relayOf.get(first[0].client_id), `${label}: held by a relay`);
      const got = first.slice(1).map((f) => [f.seq, f.name, f.retained]);
      assert.deepEqual(got, want(j.topics), `${label}: ${j.topics}`);
    }
  };
  const open = async (n) => {
    const out = [];
    for (let i = 0; i < n; i++) {
      const topics = ["pose,marker", "face,marker", ">"][i % 3];
      out.push({ topics, r: await recorder(srv.url, character, topics) });
    }
    return out;
  };
  const first = await open(6);
  await check(first, (t) => ({
    "pose,marker": [[sit, "sit", true]],
    "face,marker": [[smile, "smile", true]],
    ">": [[sit, "sit", true], [smile, "smile", true]],
  })[t], "first joiners");
  // Replaced (reaches the relays' copies with the feed) and cleared (a new
  // revision: the relays fetch the owner's set again).
  const [frown] = await publish({ topic: "face", name: "frown", retain: true });
  const del = await fetch(url("/retained/pose"), { method: "DELETE" });
  assert.equal((await del.json()).cleared, true);
  const later = await open(6);
  await check(later, (t) => ({
    "pose,marker": [],
    "face,marker": [[frown, "frown", true]],
    ">": [[frown, "frown", true]],
  })[t], "later joiners");
  const listing = await (await fetch(`${srv.url}/v1/admin/characters/${character}/subscriptions`)).json();
  assert.ok(listing.relays >= 1, `relays serve the character: ${listing.relays}`);
});
