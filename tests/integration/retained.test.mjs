// Retained commands (contract §8): `retain: true` on single, batched,
// broadcast and socket publishes; a late joiner without `since` gets exactly
// the retained commands its filters match right after `welcome`, in seq
// order and marked `retained: true`, before anything live; replacement,
// DELETE .../retained/{topic}, GET .../state, the bound on retained topics,
// and (on the auth server) who may read and clear them.
import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import {
  http, subscribe, uniqueCharacter, assertError, makeJwt, nowS, sleep, track, WS_BASE, WS_OPTIONS,
} from "./helpers.mjs";

const publish = (character, body) => http("POST", `/v1/characters/${character}/commands`, { body });
const state = (character) => http("GET", `/v1/characters/${character}/state`);
const clear = (character, topic) => http("DELETE", `/v1/characters/${character}/retained/${topic}`);

/** Publishes a plain marker on `topic` and waits for it: every frame before it is what the socket got first. */
async function framesBeforeLive(s, character, topic) {
  const marker = await publish(character, { topic, name: "marker" });
  assert.equal(marker.status, 200, marker.text);
  const seq = marker.json.seqs[0];
  await s.waitFor((fs) => fs.find((f) => f.type === "command" && f.seq === seq), 5000, "the live marker");
  const idx = s.frames.findIndex((f) => f.type === "command" && f.seq === seq);
  const live = s.frames[idx];
  assert.equal(live.retained, false, "a live frame says retained: false");
  return s.frames.slice(0, idx);
}

test("a late joiner gets exactly the retained commands its filters match right after welcome", async () => {
  const c = uniqueCharacter("retain");
  const seqOf = async (body) => {
    const r = await publish(c, body);
    assert.equal(r.status, 200, r.text);
    return r.json.seqs;
  };
  const [smile] = await seqOf({ topic: "face", name: "smile", retain: true });
  const [wave] = await seqOf({ topic: "body.arms", name: "wave", params: { side: "left" }, retain: true });
  await seqOf({ topic: "face", name: "blink" }); // not retained: never replayed to late joiners
  const [sit, frown] = await seqOf({ commands: [
    { topic: "pose", name: "sit", retain: true },
    { topic: "face", name: "frown", retain: true, duration_ms: 300 }, // replaces smile
  ] });
  await seqOf({ topic: "legs", name: "kick", retain: false });
  assert.ok(smile < wave && wave < sit && sit < frown);

  const late = await subscribe(c, { topics: "face,body.*" });
  const first = await framesBeforeLive(late, c, "face");
  assert.equal(first[0].type, "welcome");
  const retained = first.slice(1);
  assert.deepEqual(retained.map((f) => [f.type, f.seq, f.topic, f.name, f.retained]), [
    ["command", wave, "body.arms", "wave", true],
    ["command", frown, "face", "frown", true],
  ], "exactly the matching retained commands, in seq order, then live");
  assert.deepEqual(retained[0].params, { side: "left" });
  assert.equal(retained[1].duration_ms, 300);
  assert.equal(retained[1].epoch, first[0].epoch);
  assert.equal(retained[1].character, c);

  const all = await subscribe(c);
  const allFirst = await framesBeforeLive(all, c, "other");
  assert.deepEqual(allFirst.slice(1).map((f) => [f.seq, f.retained]), [[wave, true], [sit, true], [frown, true]]);

  const none = await subscribe(c, { topics: "legs" });
  assert.deepEqual((await framesBeforeLive(none, c, "legs")).map((f) => f.type), ["welcome"], "legs has nothing retained");

  // A socket that resumes gets its replay, never the retained frames.
  const resumed = await subscribe(c, { topics: "face", since: String(frown) });
  await resumed.waitFor((fs) => fs.find((f) => f.type === "recovered"));
  assert.deepEqual(resumed.frames.map((f) => [f.type, f.name, f.retained]),
    [["welcome", undefined, undefined], ["command", "marker", false], ["recovered", undefined, undefined]],
    "only the replay (the live marker on face after frown), nothing retained");
  for (const s of [late, all, none, resumed]) await s.close();
});

test("history and replayed frames say retained: false; state lists the retained set", async () => {
  const c = uniqueCharacter("retain-state");
  const empty = await state(c);
  assert.equal(empty.status, 200, empty.text);
  assert.deepEqual(Object.keys(empty.json).sort(), ["character", "epoch", "retained", "seq"]);
  assert.deepEqual(empty.json.retained, []);
  assert.equal(empty.json.seq, 0);
  await publish(c, { topic: "pose", name: "sit", retain: true });
  await publish(c, { topic: "face", name: "smile", retain: true });
  await publish(c, { topic: "pose", name: "stand", retain: true });
  const s = await state(c);
  assert.equal(s.json.character, c);
  assert.equal(s.json.seq, 3);
  assert.deepEqual(s.json.retained.map((f) => [f.type, f.seq, f.topic, f.name, f.retained]), [
    ["command", 2, "face", "smile", true],
    ["command", 3, "pose", "stand", true],
  ]);
  const h = await http("GET", `/v1/characters/${c}/history`);
  assert.deepEqual(h.json.commands.map((f) => f.retained), [false, false, false]);
  const replay = await subscribe(c, { since: "0" });
  await replay.waitFor((fs) => fs.find((f) => f.type === "recovered"));
  assert.deepEqual(replay.commands().map((f) => f.retained), [false, false, false]);
  await replay.close();
});

test("DELETE clears a topic's retained command; a later retain sets it again", async () => {
  const c = uniqueCharacter("retain-clear");
  await publish(c, { topic: "face", name: "smile", retain: true });
  await publish(c, { topic: "pose", name: "sit", retain: true });
  const r = await clear(c, "face");
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json, { character: c, topic: "face", cleared: true });
  const again = await clear(c, "face");
  assert.deepEqual(again.json, { character: c, topic: "face", cleared: false }, "clearing nothing is no error");
  assert.deepEqual((await state(c)).json.retained.map((f) => f.topic), ["pose"]);
  const late = await subscribe(c);
  assert.deepEqual((await framesBeforeLive(late, c, "x")).slice(1).map((f) => f.topic), ["pose"]);
  const re = await publish(c, { topic: "face", name: "grin", retain: true });
  const s = await subscribe(c, { topics: "face" });
  const got = (await framesBeforeLive(s, c, "face")).slice(1);
  assert.deepEqual(got.map((f) => [f.seq, f.name]), [[re.json.seqs[0], "grin"]]);
  for (const x of [late, s]) await x.close();
});

test("bad input gets the contract's errors", async () => {
  const c = uniqueCharacter("retain-bad");
  for (const retain of [1, "true", [], {}]) {
    assertError(assert, await publish(c, { name: "a", retain }), 400, "bad_request");
  }
  assertError(assert, await publish(c, { commands: [{ name: "a" }, { name: "b", retain: "yes" }] }), 400, "bad_request");
  assert.equal((await state(c)).json.seq, 0, "a refused batch stores nothing");
  assertError(assert, await clear(c, "body.*"), 400, "bad_request");
  assertError(assert, await clear(c, "FACE"), 400, "bad_request");
  assertError(assert, await clear("bad.name", "face"), 400, "bad_request");
  assertError(assert, await http("GET", `/v1/characters/${c}/retained/face`), 405, "method_not_allowed");
  assertError(assert, await http("POST", `/v1/characters/${c}/state`), 405, "method_not_allowed");
  assertError(assert, await http("DELETE", `/v1/characters/${c}/retained`), 404, "not_found");
});

test("a character retains at most 64 topics; past that a retaining publish is 413, nothing stored", async () => {
  const c = uniqueCharacter("retain-bound");
  const topics = Array.from({ length: 64 }, (_, i) => `t${i}`);
  for (let i = 0; i < 64; i += 32) {
    const r = await publish(c, { commands: topics.slice(i, i + 32).map((topic) => ({ topic, name: "n", retain: true })) });
    assert.equal(r.status, 200, r.text);
  }
  const before = (await state(c)).json;
  assert.equal(before.retained.length, 64);
  assertError(assert, await publish(c, { topic: "one-more", name: "n", retain: true }), 413, "payload_too_large");
  assertError(assert, await publish(c, { commands: [{ name: "plain" }, { topic: "x", name: "n", retain: true }] }), 413, "payload_too_large");
  const bc = await http("POST", "/v1/broadcast", { body: { characters: [c], topic: "one-more", name: "n", retain: true } });
  assertError(assert, bc, 413, "payload_too_large");
  assert.equal((await state(c)).json.seq, before.seq, "nothing stored");
  // Replacing a held topic, plain commands and a clear-then-retain all work.
  assert.equal((await publish(c, { topic: "t0", name: "again", retain: true })).status, 200);
  assert.equal((await publish(c, { topic: "free", name: "plain" })).status, 200);
  assert.equal((await clear(c, "t1")).json.cleared, true);
  assert.equal((await publish(c, { topic: "one-more", name: "n", retain: true })).status, 200);
  // A socket publish past the bound gets an error frame with its ref.
  const s = await subscribe(c, { topics: "nothing" });
  s.send({ type: "publish", ref: "r9", topic: "another", name: "n", retain: true });
  const err = await s.waitFor((fs) => fs.find((f) => f.type === "error"));
  assert.equal(err.code, "payload_too_large");
  assert.equal(err.ref, "r9");
  await s.close();
});

test("socket publishes and broadcasts can retain", async () => {
  const a = uniqueCharacter("retain-bc-a");
  const b = uniqueCharacter("retain-bc-b");
  const pub = await subscribe(a, { topics: "nothing" });
  pub.send({ type: "publish", ref: "p1", topic: "pose", name: "sit", retain: true });
  const ok = await pub.waitFor((fs) => fs.find((f) => f.type === "published"));
  assert.equal(ok.ref, "p1");
  assert.deepEqual((await state(a)).json.retained.map((f) => [f.seq, f.name]), [[ok.seq, "sit"]]);
  const bc = await http("POST", "/v1/broadcast", { body: { characters: [a, b], topic: "outfit", name: "coat", retain: true } });
  assert.equal(bc.status, 200, bc.text);
  for (const c of [a, b]) {
    const names = (await state(c)).json.retained.map((f) => f.name);
    assert.ok(names.includes("coat"), `${c} retains the broadcast: ${names}`);
  }
  await pub.close();
});

test("a scene socket gets each character's retained commands after welcome, updated while the scene lives", async () => {
  const a = uniqueCharacter("retain-sa");
  const b = uniqueCharacter("retain-sb");
  const [aFace] = (await publish(a, { topic: "face", name: "smile", retain: true })).json.seqs;
  const [aPose] = (await publish(a, { topic: "pose", name: "sit", retain: true })).json.seqs;
  const [bFace] = (await publish(b, { topic: "face", name: "frown", retain: true })).json.seqs;
  const open = (topics) => new Promise((resolve, reject) => {
    const ws = track(new WebSocket(`${WS_BASE}/v1/subscribe?characters=${a},${b}&topics=${topics}`, WS_OPTIONS));
    const frames = [];
    ws.on("message", (d) => frames.push(JSON.parse(d.toString())));
    ws.once("open", () => resolve({ ws, frames }));
    ws.once("unexpected-response", (_q, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
  });
  /** The frames before a's live marker (a plain command on `marker`). */
  const firstOf = async (s) => {
    const [m] = (await publish(a, { topic: "marker", name: "live" })).json.seqs;
    for (let i = 0; i < 250; i++) {
      const idx = s.frames.findIndex((f) => f.type === "command" && f.character === a && f.seq === m);
      if (idx >= 0) return s.frames.slice(0, idx);
      await sleep(20);
    }
    throw new Error(`no marker: ${JSON.stringify(s.frames)}`);
  };
  const first = await open("face,marker");
  const got = await firstOf(first);
  assert.equal(got[0].type, "welcome");
  const key = (f) => [f.character, f.seq, f.name, f.retained];
  const sorted = [[a, aFace, "smile", true], [b, bFace, "frown", true]].sort((x, y) => (x[0] < y[0] ? -1 : 1));
  assert.deepEqual(got.slice(1).map(key), sorted, "face of each character, nothing else");
  // Replaced while the scene is fed: a second viewer gets the new one.
  const [aGrin] = (await publish(a, { topic: "face", name: "grin", retain: true })).json.seqs;
  const second = await open(">");
  const got2 = (await firstOf(second)).slice(1).filter((f) => f.character === a);
  assert.deepEqual(got2.map(key), [[a, aPose, "sit", true], [a, aGrin, "grin", true]]);
  first.ws.close();
  second.ws.close();
});

const AUTH = process.env.GATEWAY_AUTH_URL;
const SECRET = process.env.TEST_JWT_SECRET;
test("with auth on: state needs subscriber rights, DELETE publisher rights, on that character",
  { skip: AUTH && SECRET ? false : "GATEWAY_AUTH_URL / TEST_JWT_SECRET not set (make test sets them)" }, async () => {
    const c = uniqueCharacter("retain-auth");
    const token = (claims) => ({ authorization: `Bearer ${makeJwt({ sub: "u1", exp: nowS() + 600, ...claims }, SECRET)}` });
    const call = async (method, path, headers = {}, body) => {
      const init = { method, headers: { ...headers } };
      if (body) { init.body = JSON.stringify(body); init.headers["content-type"] = "application/json"; }
      const res = await fetch(AUTH + path, init);
      const text = await res.text();
      let json = null; try { json = JSON.parse(text); } catch { /* not JSON */ }
      return { status: res.status, json, text };
    };
    const publisher = token({ role: "publisher" });
    const subscriber = token({ role: "subscriber" });
    const elsewhere = token({ role: "publisher", chars: ["someone-else"] });
    const r = await call("POST", `/v1/characters/${c}/commands`, publisher, { topic: "pose", name: "sit", retain: true });
    assert.equal(r.status, 200, r.text);
    const statePath = `/v1/characters/${c}/state`;
    const clearPath = `/v1/characters/${c}/retained/pose`;
    assertError(assert, await call("GET", statePath), 401, "unauthorized");
    assertError(assert, await call("GET", statePath, elsewhere), 403, "forbidden");
    const s = await call("GET", statePath, subscriber);
    assert.equal(s.status, 200, s.text);
    assert.deepEqual(s.json.retained.map((f) => f.name), ["sit"]);
    assertError(assert, await call("DELETE", clearPath), 401, "unauthorized");
    assertError(assert, await call("DELETE", clearPath, subscriber), 403, "forbidden");
    assertError(assert, await call("DELETE", clearPath, elsewhere), 403, "forbidden");
    const d = await call("DELETE", clearPath, publisher);
    assert.equal(d.status, 200, d.text);
    assert.equal(d.json.cleared, true);
    assert.deepEqual((await call("GET", statePath, subscriber)).json.retained, []);
  });
