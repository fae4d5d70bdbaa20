// POST .../say: text becomes timed commands, published like any others.
import { test } from "node:test";
import assert from "node:assert/strict";
import { http, subscribe, uniqueCharacter, assertError } from "./helpers.mjs";

test("say derives a talk command and gestures, publishes them in order and answers them", async () => {
  const c = uniqueCharacter("say");
  const s = await subscribe(c);
  const r = await http("POST", `/v1/characters/${c}/say`, { body: { text: "Hello there! Thank you, that is great :)" } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.character, c);
  assert.equal(typeof r.json.epoch, "string");
  const names = r.json.commands.map((x) => x.name);
  assert.equal(names[0], "talk");
  assert.equal(r.json.commands[0].params.text, "Hello there! Thank you, that is great :)");
  assert.ok(r.json.commands[0].duration_ms > 0);
  for (const want of ["wave", "smile"]) assert.ok(names.includes(want), `${want} in ${names}`);
  assert.equal(r.json.seqs.length, r.json.commands.length);
  assert.deepEqual(r.json.seqs, r.json.seqs.map((_, i) => r.json.seqs[0] + i));
  const starts = r.json.commands.map((x) => x.params.start_ms);
  assert.ok(starts.every((t) => Number.isInteger(t) && t >= 0), `start_ms ${starts}`);
  assert.deepEqual(starts, [...starts].sort((x, y) => x - y), "gestures ordered in time");
  await s.waitFor((fs) => fs.filter((f) => f.type === "command").length === names.length);
  assert.deepEqual(s.commands().map((f) => f.name), names);
  assert.deepEqual(s.commands().map((f) => f.seq), r.json.seqs);
  assert.equal(r.json.delivered, names.length);
});

test("say refuses bad bodies with the contract's errors", async () => {
  const c = uniqueCharacter("say-bad");
  for (const body of [{}, { text: 5 }, { text: "" }, { text: "   " }, { text: "hi", topic: "Bad Topic" }, { text: "hi", topic: 3 }]) {
    assertError(assert, await http("POST", `/v1/characters/${c}/say`, { body }), 400, "bad_request");
  }
  assertError(assert, await http("POST", `/v1/characters/${c}/say`, { raw: "{nope", headers: { "content-type": "application/json" } }), 400, "bad_request");
  assertError(assert, await http("POST", `/v1/characters/${c}/say`, { body: { text: "a".repeat(17 * 1024) } }), 413, "payload_too_large");
  assertError(assert, await http("GET", `/v1/characters/${c}/say`), 405, "method_not_allowed");
  const h = await http("GET", `/v1/characters/${c}/history`);
  assert.deepEqual(h.json.commands, []);
});
