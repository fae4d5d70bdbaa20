// History and lossless resume: `since`/`epoch` replay, the `recovered` frame,
// and GET .../history.
import { test } from "node:test";
import assert from "node:assert/strict";
import { http, subscribe, uniqueCharacter, sleep, assertError } from "./helpers.mjs";

const publish = (character, body) => http("POST", `/v1/characters/${character}/commands`, { body });

test("a client that reconnects with since gets every missed command, then recovered", async () => {
  const c = uniqueCharacter("resume");
  const s = await subscribe(c, { topics: "face,body.*" });
  const epoch = s.frames[0].epoch;
  for (let i = 1; i <= 3; i++) await publish(c, { topic: "face", name: "smile", params: { i } });
  await s.waitFor((fs) => fs.filter((f) => f.type === "command").length === 3);
  const lastSeen = s.commands().at(-1).seq;
  await s.close();
  // Missed while away: matching and non-matching topics.
  const missed = [];
  for (let i = 4; i <= 12; i++) {
    const topic = i % 3 === 0 ? "legs" : i % 3 === 1 ? "face" : "body.arms";
    const r = await publish(c, { topic, name: "move", params: { i } });
    if (topic !== "legs") missed.push(r.json.seqs[0]);
  }
  const back = await subscribe(c, { topics: "face,body.*", since: String(lastSeen), epoch });
  const rec = await back.waitFor((fs) => fs.find((f) => f.type === "recovered"));
  assert.deepEqual(rec, { type: "recovered", since: lastSeen, seq: 12, complete: true, truncated: false });
  const types = back.frames.map((f) => f.type);
  assert.equal(types[0], "welcome");
  assert.equal(types.at(-1), "recovered", "recovered comes after the replay");
  assert.deepEqual(back.commands().map((f) => f.seq), missed, "exactly the missed matching commands, in order");
  // Live delivery continues after the replay without a gap or duplicate.
  const live = await publish(c, { topic: "face", name: "nod" });
  await back.waitFor((fs) => fs.find((f) => f.type === "command" && f.seq === live.json.seqs[0]));
  assert.deepEqual(back.commands().map((f) => f.seq), [...missed, 13]);
  await back.close();
});

test("since at the latest seq replays nothing and is complete", async () => {
  const c = uniqueCharacter("resume-now");
  await publish(c, { name: "a" });
  await publish(c, { name: "b" });
  const s = await subscribe(c, { since: "2" });
  const rec = await s.waitFor((fs) => fs.find((f) => f.type === "recovered"));
  assert.equal(rec.complete, true);
  assert.equal(s.commands().length, 0);
  await s.close();
});

test("a changed epoch makes the recovery incomplete", async () => {
  const c = uniqueCharacter("resume-epoch");
  await publish(c, { name: "a" });
  const s = await subscribe(c, { since: "0", epoch: "not-the-epoch" });
  const rec = await s.waitFor((fs) => fs.find((f) => f.type === "recovered"));
  assert.equal(rec.complete, false);
  assert.equal(rec.since, 0);
  assert.equal(rec.seq, 1);
  await s.close();
});

test("since ahead of the character's seq is incomplete, not silently accepted", async () => {
  const c = uniqueCharacter("resume-ahead");
  await publish(c, { name: "a" });
  const s = await subscribe(c, { since: "50" });
  const rec = await s.waitFor((fs) => fs.find((f) => f.type === "recovered"));
  assert.equal(rec.complete, false);
  await s.close();
});

test("history answers stored commands oldest first, with since, limit and topics", async () => {
  const c = uniqueCharacter("history");
  for (let i = 1; i <= 10; i++) await publish(c, { topic: i % 2 ? "face" : "body.arms", name: "n" + i, params: { i } });
  const all = await http("GET", `/v1/characters/${c}/history`);
  assert.equal(all.status, 200, all.text);
  assert.equal(all.json.character, c);
  assert.equal(all.json.seq, 10);
  assert.equal(typeof all.json.epoch, "string");
  assert.deepEqual(all.json.commands.map((f) => f.seq), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  assert.equal(all.json.commands[0].type, "command");
  assert.equal(all.json.commands[0].name, "n1");
  const page = await http("GET", `/v1/characters/${c}/history?since=3&limit=4`);
  assert.deepEqual(page.json.commands.map((f) => f.seq), [4, 5, 6, 7]);
  const face = await http("GET", `/v1/characters/${c}/history?topics=face&limit=3`);
  assert.deepEqual(face.json.commands.map((f) => f.seq), [1, 3, 5]);
  const none = await http("GET", `/v1/characters/${uniqueCharacter("empty")}/history`);
  assert.equal(none.status, 200);
  assert.deepEqual(none.json.commands, []);
  assert.equal(none.json.seq, 0);
  for (const bad of ["limit=0", "limit=1001", "limit=abc", "since=-1", "topics=Bad"]) {
    assertError(assert, await http("GET", `/v1/characters/${c}/history?${bad}`), 400, "bad_request");
  }
});

test("history and replay agree with what live subscribers saw", async () => {
  const c = uniqueCharacter("agree");
  const s = await subscribe(c);
  await Promise.all(Array.from({ length: 20 }, (_, i) => publish(c, { name: "x", params: { i } })));
  await s.waitFor((fs) => fs.filter((f) => f.type === "command").length === 20);
  const h = await http("GET", `/v1/characters/${c}/history?limit=1000`);
  assert.deepEqual(h.json.commands, s.commands());
  await s.close();
  await sleep(50);
});
