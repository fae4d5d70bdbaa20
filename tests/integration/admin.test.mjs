// Admin: listing across characters (registry), one character's subscribers,
// kicking a client (4010), and the event log in KV. Auth is off here.
import { test } from "node:test";
import assert from "node:assert/strict";
import { http, subscribe, uniqueCharacter, sleep, assertError, eventually } from "./helpers.mjs";

const entryOf = (listing, c) => listing.json?.characters?.find((x) => x.character === c);

test("the admin listing matches the sockets actually open, after connects, disconnects and kicks", async () => {
  const a = uniqueCharacter("adm-a");
  const b = uniqueCharacter("adm-b");
  const a1 = await subscribe(a, { topics: "face,body.*" });
  const a2 = await subscribe(a, { topics: "face" });
  const b1 = await subscribe(b);
  const list = () => http("GET", "/v1/admin/subscriptions");
  let l = await eventually(list, (r) => entryOf(r, a)?.subscribers === 2 && entryOf(r, b)?.subscribers === 1);
  assert.equal(l.status, 200, l.text);
  assert.deepEqual(entryOf(l, a).topics, { face: 2, "body.*": 1 });
  assert.deepEqual(entryOf(l, b).topics, { ">": 1 });
  assert.equal(typeof l.json.total_subscribers, "number");
  assert.ok(l.json.total_subscribers >= 3);

  const detail = await http("GET", `/v1/admin/characters/${a}/subscriptions`);
  assert.equal(detail.status, 200, detail.text);
  assert.equal(detail.json.character, a);
  assert.equal(typeof detail.json.epoch, "string");
  assert.equal(detail.json.seq, 0);
  const ids = detail.json.subscribers.map((s) => s.client_id).sort();
  assert.deepEqual(ids, [a1.frames[0].client_id, a2.frames[0].client_id].sort());
  const s1 = detail.json.subscribers.find((s) => s.client_id === a1.frames[0].client_id);
  assert.deepEqual(s1.topics, ["face", "body.*"]);
  assert.equal(s1.presence, false);
  assert.equal(s1.user, null);
  assert.ok(Math.abs(s1.connected_at - Date.now()) < 60_000);

  // Disconnect one, kick another.
  await a2.close();
  const kick = await http("DELETE", `/v1/admin/characters/${b}/subscriptions/${b1.frames[0].client_id}`);
  assert.equal(kick.status, 200, kick.text);
  assert.deepEqual(kick.json, { disconnected: true });
  await b1.waitFor((_f, c) => c.closed, 3000, "kick close");
  assert.equal(b1.closed.code, 4010);
  l = await eventually(list, (r) => entryOf(r, a)?.subscribers === 1 && !entryOf(r, b));
  assert.equal(entryOf(l, a).subscribers, 1);
  assert.deepEqual(entryOf(l, a).topics, { face: 1, "body.*": 1 });
  assert.equal(entryOf(l, b), undefined, "a character without subscribers is not listed");
  const after = await http("GET", `/v1/admin/characters/${a}/subscriptions`);
  assert.deepEqual(after.json.subscribers.map((s) => s.client_id), [a1.frames[0].client_id]);
  await a1.close();
  l = await eventually(list, (r) => !entryOf(r, a));
  assert.equal(entryOf(l, a), undefined);
});

test("kicking an unknown client is 404; bad admin paths and methods are refused", async () => {
  const c = uniqueCharacter("adm-404");
  const s = await subscribe(c);
  assertError(assert, await http("DELETE", `/v1/admin/characters/${c}/subscriptions/nope0000`), 404, "not_found");
  assertError(assert, await http("DELETE", `/v1/admin/characters/bad.name/subscriptions/x`), 400, "bad_request");
  assertError(assert, await http("POST", "/v1/admin/subscriptions", { body: {} }), 405, "method_not_allowed");
  assertError(assert, await http("GET", `/v1/admin/characters/${c}/subscriptions/x`), 405, "method_not_allowed");
  assertError(assert, await http("GET", "/v1/admin/nothing"), 404, "not_found");
  assertError(assert, await http("GET", "/v1/admin/logs?limit=0"), 400, "bad_request");
  assertError(assert, await http("GET", "/v1/admin/logs?character=bad.name"), 400, "bad_request");
  assert.equal(s.closed, null, "the real client was not touched");
  await s.close();
});

test("connect, publish, disconnect and admin actions appear in the event log, newest first", async () => {
  const c = uniqueCharacter("logs");
  const s = await subscribe(c);
  const id = s.frames[0].client_id;
  await http("POST", `/v1/characters/${c}/commands`, { body: { name: "smile" } });
  await s.close();
  await http("GET", `/v1/admin/characters/${c}/subscriptions`);
  const logs = await eventually(
    () => http("GET", `/v1/admin/logs?character=${c}&limit=50`),
    (r) => ["connect", "publish", "disconnect", "admin"].every((e) => r.json?.events?.some((x) => x.event === e)),
    6000,
  );
  assert.equal(logs.status, 200, logs.text);
  const events = logs.json.events;
  for (const e of ["connect", "publish", "disconnect", "admin"]) assert.ok(events.some((x) => x.event === e), `${e} in ${JSON.stringify(events)}`);
  assert.ok(events.every((x) => x.character === c), "filtered by character");
  const ts = events.map((x) => x.ts);
  assert.deepEqual(ts, [...ts].sort((x, y) => y - x), "newest first");
  assert.equal(events.find((x) => x.event === "connect").client_id, id);
  assert.deepEqual(events.find((x) => x.event === "publish").detail.seqs, [1]);
  const limited = await http("GET", `/v1/admin/logs?character=${c}&limit=2`);
  assert.equal(limited.json.events.length, 2);
  assert.deepEqual(limited.json.events, events.slice(0, 2));
});

// Regression: a socket closed for ten bad frames in a row (4400) was closed
// but never logged; every way a socket ends is logged exactly once.
test("every way a socket ends is logged once: 4400, 4010 and a client close", async () => {
  const c = uniqueCharacter("ends");
  const bad = await subscribe(c);
  const kicked = await subscribe(c);
  const leaver = await subscribe(c);
  const ids = [bad, kicked, leaver].map((s) => s.frames[0].client_id);
  for (let i = 0; i < 10; i++) bad.send("not a frame");
  await bad.waitFor((_, s) => s.closed, 5000, "the 4400 close");
  assert.equal(bad.closed.code, 4400);
  const kick = await http("DELETE", `/v1/admin/characters/${c}/subscriptions/${ids[1]}`);
  assert.equal(kick.status, 200, kick.text);
  await kicked.waitFor((_, s) => s.closed, 5000, "the 4010 close");
  leaver.ws.close(1000, "bye");
  await leaver.waitFor((_, s) => s.closed, 5000, "the client's own close");
  const disconnects = (r) => (r.json?.events ?? []).filter((x) => x.event === "disconnect");
  const logs = await eventually(
    () => http("GET", `/v1/admin/logs?character=${c}&limit=100`),
    (r) => disconnects(r).length >= 3,
    8000,
  );
  const byClient = Object.fromEntries(ids.map((id) => [id, disconnects(logs).filter((x) => x.client_id === id)]));
  assert.deepEqual(ids.map((id) => byClient[id].length), [1, 1, 1], JSON.stringify(disconnects(logs)));
  assert.deepEqual(byClient[ids[0]][0].detail, { reason: "too many bad frames", code: 4400 });
  assert.deepEqual(byClient[ids[1]][0].detail, { reason: "disconnected by admin", code: 4010 });
  assert.equal(byClient[ids[2]][0].detail.reason, "closed by client");
  assert.equal(byClient[ids[2]][0].detail.code, 1000);
});
