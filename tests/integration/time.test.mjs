// Server time (contract v1.1 "Time"): GET /v1/time, `at` on commands (bounded
// to an hour from now, passed through to live, batched, replayed and history
// frames), and `say` scheduling its commands on server time with `lead_ms`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { http, subscribe, uniqueCharacter, assertError, BASE, sleep } from "./helpers.mjs";

const HOUR = 60 * 60 * 1000;
const BATCH_BASE = process.env.GATEWAY_BATCH_URL;
const AUTH_BASE = process.env.GATEWAY_AUTH_URL;

async function serverNow(base = BASE) {
  const t0 = Date.now();
  const res = await fetch(`${base}/v1/time`);
  const t1 = Date.now();
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /application\/json/);
  const body = await res.json();
  return { body, t0, t1 };
}

test("GET /v1/time answers the server's clock in ms since the Unix epoch", async () => {
  const { body, t0, t1 } = await serverNow();
  assert.deepEqual(Object.keys(body), ["now"]);
  assert.ok(Number.isInteger(body.now), JSON.stringify(body));
  // Same machine: the server's clock is ours, within the round trip.
  assert.ok(body.now >= t0 - 1000 && body.now <= t1 + 1000, `${t0} <= ${body.now} <= ${t1}`);
  const head = await fetch(`${BASE}/v1/time`, { method: "HEAD" });
  assert.equal(head.status, 200);
  assertError(assert, await http("POST", "/v1/time", { body: {} }), 405, "method_not_allowed");
  assert.equal((await http("OPTIONS", "/v1/time")).status, 204);
});

test("GET /v1/time needs no credentials when auth is on", { skip: AUTH_BASE ? false : "GATEWAY_AUTH_URL not set (make test sets it)" }, async () => {
  const { body } = await serverNow(AUTH_BASE);
  assert.ok(Number.isInteger(body.now));
  // While everything else there still needs them.
  const h = await fetch(`${AUTH_BASE}/v1/characters/alice/history`);
  assert.equal(h.status, 401);
});

test("`at` is passed through to live frames, the publish answer's history and replays; frames without it say null", async () => {
  const c = uniqueCharacter("at");
  const s = await subscribe(c);
  const { body: { now } } = await serverNow();
  const at = now + 500;
  const r = await http("POST", `/v1/characters/${c}/commands`, { body: { commands: [
    { topic: "face", name: "smile", at },
    { topic: "face", name: "blink" },
    { topic: "face", name: "nod", at: null },
  ] } });
  assert.equal(r.status, 200, r.text);
  const live = await s.waitFor((fs) => { const cs = s.commands(); return cs.length === 3 && cs; });
  assert.deepEqual(live.map((f) => f.at), [at, null, null]);
  for (const f of live) assert.ok("at" in f && Number.isInteger(f.ts), JSON.stringify(f));
  // `at` sits beside `ts` in the frame.
  const keys = Object.keys(live[0]);
  assert.equal(keys[keys.indexOf("ts") + 1], "at", keys.join(","));
  const h = await http("GET", `/v1/characters/${c}/history`);
  assert.deepEqual(h.json.commands.map((f) => f.at), [at, null, null]);
  const again = await subscribe(c, { since: 0 });
  await again.waitFor((fs) => fs.some((f) => f.type === "recovered"));
  assert.deepEqual(again.commands().map((f) => f.at), [at, null, null]);
  // A client publish frame carries it too.
  const at2 = now + 1000;
  s.send({ type: "publish", ref: "p1", topic: "face", name: "wink", at: at2 });
  const wink = await s.waitFor(() => s.commands().find((f) => f.name === "wink"));
  assert.equal(wink.at, at2);
  await s.close();
  await again.close();
});

test("`at` more than an hour from now, or not an integer, is a 400 and nothing is published", async () => {
  const c = uniqueCharacter("at-bad");
  const { body: { now } } = await serverNow();
  for (const at of [now + HOUR + 60_000, now - HOUR - 60_000, 0, -1, 1.5, "soon", true, [now], 2 ** 53]) {
    const res = await http("POST", `/v1/characters/${c}/commands`, { body: { name: "wave", at } });
    assertError(assert, res, 400, "bad_request");
    assert.match(res.json.error.message, /`at`/);
  }
  // Inside the hour either way is fine.
  for (const at of [now + HOUR - 60_000, now - HOUR + 60_000]) {
    const res = await http("POST", `/v1/characters/${c}/commands`, { body: { name: "wave", at } });
    assert.equal(res.status, 200, res.text);
  }
  // One bad command refuses the whole batch.
  const batch = await http("POST", `/v1/characters/${c}/commands`, { body: { commands: [{ name: "a", at: now }, { name: "b", at: now + 2 * HOUR }] } });
  assertError(assert, batch, 400, "bad_request");
  assert.match(batch.json.error.message, /commands\[1\]/);
  const bc = await http("POST", "/v1/broadcast", { body: { characters: [c], name: "jump", at: now + 2 * HOUR } });
  assertError(assert, bc, 400, "bad_request");
  const h = await http("GET", `/v1/characters/${c}/history`);
  assert.equal(h.json.commands.length, 2);
  // A socket's publish frame gets an error frame with its ref; the socket stays open.
  const s = await subscribe(c);
  s.send({ type: "publish", ref: "late", name: "wave", at: now - 2 * HOUR });
  const err = await s.waitFor((fs) => fs.find((f) => f.type === "error"));
  assert.equal(err.code, "bad_request");
  assert.equal(err.ref, "late");
  assert.equal(s.closed, null);
  await s.close();
});

test("broadcast passes `at` to every character", async () => {
  const a = uniqueCharacter("at-bc"), b = uniqueCharacter("at-bc");
  const { body: { now } } = await serverNow();
  const r = await http("POST", "/v1/broadcast", { body: { characters: [a, b], name: "jump", at: now + 300 } });
  assert.equal(r.status, 200, r.text);
  for (const c of [a, b]) {
    const h = await http("GET", `/v1/characters/${c}/history`);
    assert.equal(h.json.commands[0].at, now + 300);
  }
});

test("batched frames carry `at` too", { skip: BATCH_BASE ? false : "GATEWAY_BATCH_URL not set (make test sets it)" }, async () => {
  const c = uniqueCharacter("at-batch");
  const ws = new (await import("ws")).default(`${BATCH_BASE.replace(/^http/, "ws")}/v1/characters/${c}/subscribe`);
  const frames = [];
  ws.on("message", (d) => frames.push(JSON.parse(d.toString())));
  await new Promise((r) => ws.once("open", r));
  const { body: { now } } = await serverNow(BATCH_BASE);
  const res = await fetch(`${BATCH_BASE}/v1/characters/${c}/commands`, {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ commands: [{ name: "a", at: now + 100 }, { name: "b" }] }),
  });
  assert.equal(res.status, 200);
  for (let i = 0; i < 100 && !frames.some((f) => f.type === "batch"); i++) await sleep(50);
  const batch = frames.find((f) => f.type === "batch");
  assert.ok(batch, JSON.stringify(frames));
  assert.deepEqual(batch.commands.map((f) => f.at), [now + 100, null]);
  ws.terminate();
});

test("say schedules its commands on server time with lead_ms", async () => {
  const c = uniqueCharacter("say-at");
  const plain = await http("POST", `/v1/characters/${c}/say`, { body: { text: "Hello there! Great :)" } });
  assert.equal(plain.status, 200, plain.text);
  assert.ok(plain.json.commands.every((x) => x.at === null), JSON.stringify(plain.json.commands));
  const t0 = (await serverNow()).body.now;
  const r = await http("POST", `/v1/characters/${c}/say`, { body: { text: "Hello there! Great :)", lead_ms: 400 } });
  const t1 = (await serverNow()).body.now;
  assert.equal(r.status, 200, r.text);
  const cmds = r.json.commands;
  const base = cmds[0].at - 400;
  assert.ok(base >= t0 && base <= t1, `${t0} <= ${base} <= ${t1}`);
  for (const x of cmds) assert.equal(x.at, base + 400 + (x.params.start_ms ?? 0), JSON.stringify(x));
  const h = await http("GET", `/v1/characters/${c}/history?since=${plain.json.seqs.at(-1)}`);
  assert.deepEqual(h.json.commands.map((f) => f.at), cmds.map((x) => x.at));
  for (const lead_ms of [-1, 60_001, 1.5, "1"]) {
    assertError(assert, await http("POST", `/v1/characters/${c}/say`, { body: { text: "hi", lead_ms } }), 400, "bad_request");
  }
});
