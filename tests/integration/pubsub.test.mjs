// Publish/subscribe through a real wrangler dev: welcome, delivery, isolation
// between characters and topics, ordering, idempotency, broadcast, presence.
import { test } from "node:test";
import assert from "node:assert/strict";
import { http, subscribe, uniqueCharacter, sleep } from "./helpers.mjs";

/** How long a socket must stay silent to count as "received nothing more". */
const QUIET_MS = 400;

const publish = (character, body) => http("POST", `/v1/characters/${character}/commands`, { body });

test("welcome frame opens every subscription", async () => {
  const c = uniqueCharacter("welcome");
  const s = await subscribe(c, { topics: "face,body.*" });
  const w = s.frames[0];
  assert.equal(w.type, "welcome");
  assert.equal(w.character, c);
  assert.equal(typeof w.client_id, "string");
  assert.ok(w.client_id.length > 0);
  assert.equal(typeof w.epoch, "string");
  assert.equal(w.seq, 0);
  assert.deepEqual(w.topics, ["face", "body.*"]);
  const all = await subscribe(c);
  assert.deepEqual(all.frames[0].topics, [">"], "no topics means everything");
  assert.notEqual(all.frames[0].client_id, w.client_id);
  await s.close(); await all.close();
});

test("a published command reaches its subscriber with every contract field", async () => {
  const c = uniqueCharacter("fields");
  const s = await subscribe(c);
  const res = await publish(c, { topic: "face", name: "smile", params: { intensity: 0.8 }, duration_ms: 500, id: "k1" });
  assert.equal(res.status, 200, res.text);
  assert.equal(res.json.character, c);
  assert.deepEqual(res.json.seqs, [1]);
  assert.equal(res.json.delivered, 1);
  assert.equal(res.json.epoch, s.frames[0].epoch);
  const [cmd] = await s.waitFor((fs) => { const x = fs.filter((f) => f.type === "command"); return x.length ? x : null; });
  assert.deepEqual(Object.keys(cmd).sort(), ["at", "character", "duration_ms", "epoch", "id", "name", "params", "retained", "seq", "topic", "ts", "type"]);
  assert.equal(cmd.at, null, "no `at` published: null");
  assert.equal(cmd.retained, false, "a live frame: retained false");
  assert.equal(cmd.character, c);
  assert.equal(cmd.topic, "face");
  assert.equal(cmd.seq, 1);
  assert.equal(cmd.epoch, res.json.epoch);
  assert.equal(cmd.name, "smile");
  assert.deepEqual(cmd.params, { intensity: 0.8 });
  assert.equal(cmd.duration_ms, 500);
  assert.equal(cmd.id, "k1");
  assert.ok(Math.abs(cmd.ts - Date.now()) < 60_000, "ts is server time in ms");
  // Defaults: topic main, params {}, duration_ms and id null.
  await publish(c, { name: "wave" });
  const second = await s.waitFor((fs) => fs.find((f) => f.type === "command" && f.seq === 2));
  assert.equal(second.topic, "main");
  assert.deepEqual(second.params, {});
  assert.equal(second.duration_ms, null);
  assert.equal(second.id, null);
  await s.close();
});

test("commands never reach another character's sockets", async () => {
  const a = uniqueCharacter("iso-a");
  const b = uniqueCharacter("iso-b");
  const sa = await subscribe(a);
  const sb = await subscribe(b);
  for (let i = 0; i < 5; i++) assert.equal((await publish(a, { name: "wave", params: { i } })).status, 200);
  await sa.waitFor((fs) => fs.filter((f) => f.type === "command").length === 5);
  await sleep(QUIET_MS);
  assert.equal(sb.commands().length, 0, "b received a command for a");
  assert.ok(sa.commands().every((f) => f.character === a));
  await sa.close(); await sb.close();
});

test("each socket gets exactly the topics its filters match, in seq order", async () => {
  const c = uniqueCharacter("topics");
  const filters = {
    exact: "face",
    star: "body.*",
    gt: "body.>",
    all: ">",
    none: undefined,
    multi: "face,eyes.*.blink",
    midstar: "*.arms",
  };
  const subs = {};
  for (const [k, f] of Object.entries(filters)) subs[k] = await subscribe(c, f === undefined ? {} : { topics: f });
  const topics = ["face", "body.arms", "body.arms.left", "main", "eyes.left.blink", "body", "face.mouth", "legs.arms"];
  const seqOf = {};
  for (const t of topics) {
    const r = await publish(c, { topic: t, name: "move" });
    assert.equal(r.status, 200, r.text);
    seqOf[t] = r.json.seqs[0];
  }
  const expected = {
    exact: ["face"],
    star: ["body.arms"],
    gt: ["body.arms", "body.arms.left"],
    all: topics,
    none: topics,
    multi: ["face", "eyes.left.blink"],
    midstar: ["body.arms", "legs.arms"],
  };
  for (const [k, want] of Object.entries(expected)) {
    await subs[k].waitFor((fs) => fs.filter((f) => f.type === "command").length >= want.length, 5000, `${k} commands`);
  }
  await sleep(QUIET_MS);
  for (const [k, want] of Object.entries(expected)) {
    const got = subs[k].commands();
    assert.deepEqual(got.map((f) => f.topic), want, `socket ${k} (${filters[k]})`);
    assert.deepEqual(got.map((f) => f.seq), want.map((t) => seqOf[t]), `socket ${k} seqs`);
  }
  await Promise.all(Object.values(subs).map((s) => s.close()));
});

test("delivered counts the sockets a command was sent to", async () => {
  const c = uniqueCharacter("delivered");
  const s1 = await subscribe(c, { topics: "face" });
  const s2 = await subscribe(c, { topics: ">" });
  const s3 = await subscribe(c, { topics: "body" });
  assert.equal((await publish(c, { topic: "face", name: "smile" })).json.delivered, 2);
  assert.equal((await publish(c, { topic: "legs", name: "jump" })).json.delivered, 1);
  await Promise.all([s1, s2, s3].map((s) => s.close()));
  await sleep(100);
  assert.equal((await publish(c, { topic: "face", name: "smile" })).json.delivered, 0);
});

test("seq is strictly increasing with no gaps under concurrent publishers", async () => {
  const c = uniqueCharacter("order");
  const s = await subscribe(c);
  const answers = await Promise.all(Array.from({ length: 40 }, (_, i) => publish(c, { name: "nod", params: { i } })));
  const seqs = answers.map((r) => { assert.equal(r.status, 200, r.text); return r.json.seqs[0]; }).sort((x, y) => x - y);
  assert.deepEqual(seqs, Array.from({ length: 40 }, (_, i) => i + 1));
  await s.waitFor((fs) => fs.filter((f) => f.type === "command").length === 40, 8000);
  await sleep(QUIET_MS);
  const got = s.commands().map((f) => f.seq);
  assert.deepEqual(got, seqs, "received in strictly increasing seq order, each once");
  await s.close();
});

test("a batch publish assigns consecutive seqs and delivers in order", async () => {
  const c = uniqueCharacter("batchpub");
  const s = await subscribe(c);
  const commands = Array.from({ length: 100 }, (_, i) => ({ topic: i % 2 ? "face" : "body.arms", name: "blink", params: { i } }));
  const r = await publish(c, { commands });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json.seqs, Array.from({ length: 100 }, (_, i) => i + 1));
  assert.equal(r.json.delivered, 100);
  await s.waitFor((fs) => fs.filter((f) => f.type === "command").length === 100);
  assert.deepEqual(s.commands().map((f) => f.params.i), commands.map((x) => x.params.i));
  await s.close();
});

test("an idempotency id is delivered once and answers the first seq", async () => {
  const c = uniqueCharacter("idem");
  const s = await subscribe(c);
  const first = await publish(c, { name: "wave", id: "once" });
  const again = await publish(c, { name: "wave", id: "once" });
  assert.equal(again.status, 200);
  assert.deepEqual(again.json.seqs, first.json.seqs);
  assert.equal(again.json.delivered, 0);
  const other = await publish(c, { name: "wave", id: "twice" });
  assert.deepEqual(other.json.seqs, [first.json.seqs[0] + 1]);
  // Inside one batch too.
  const batch = await publish(c, { commands: [{ name: "a", id: "in-batch" }, { name: "b", id: "in-batch" }, { name: "c", id: "once" }] });
  assert.equal(batch.json.seqs[0], batch.json.seqs[1]);
  assert.equal(batch.json.seqs[2], first.json.seqs[0]);
  await s.waitFor((fs) => fs.filter((f) => f.type === "command").length >= 3);
  await sleep(QUIET_MS);
  assert.deepEqual(s.commands().map((f) => f.id), ["once", "twice", "in-batch"]);
  // The same id on another character is independent.
  const c2 = uniqueCharacter("idem2");
  assert.deepEqual((await publish(c2, { name: "wave", id: "once" })).json.seqs, [1]);
  await s.close();
});

test("broadcast fans out to every named character", async () => {
  const chars = [uniqueCharacter("bc"), uniqueCharacter("bc"), uniqueCharacter("bc")];
  const outsider = uniqueCharacter("bc-out");
  const subs = await Promise.all(chars.map((c) => subscribe(c)));
  const out = await subscribe(outsider);
  await publish(chars[1], { name: "warmup" });
  const r = await http("POST", "/v1/broadcast", { body: { characters: chars, topic: "face", name: "smile", params: { all: true } } });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json.results.map((x) => x.character), chars);
  assert.deepEqual(r.json.results.map((x) => x.seq), [1, 2, 1]);
  assert.deepEqual(r.json.results.map((x) => x.delivered), [1, 1, 1]);
  for (const [i, s] of subs.entries()) {
    const cmd = await s.waitFor((fs) => fs.find((f) => f.type === "command" && f.name === "smile"));
    assert.equal(cmd.character, chars[i]);
    assert.deepEqual(cmd.params, { all: true });
  }
  await sleep(QUIET_MS);
  assert.equal(out.commands().length, 0);
  await Promise.all([...subs, out].map((s) => s.close()));
});

test("presence events go only to sockets that asked for them", async () => {
  const c = uniqueCharacter("presence");
  const watcher = await subscribe(c, { presence: "true" });
  const quiet = await subscribe(c);
  const joiner = await subscribe(c);
  const join = await watcher.waitFor((fs) => fs.find((f) => f.type === "presence" && f.client_id === joiner.frames[0].client_id));
  assert.equal(join.event, "join");
  assert.equal(join.user, null);
  assert.equal(join.count, 3);
  await joiner.close();
  const leave = await watcher.waitFor((fs) => fs.find((f) => f.type === "presence" && f.event === "leave"));
  assert.equal(leave.client_id, joiner.frames[0].client_id);
  assert.equal(leave.count, 2);
  await sleep(QUIET_MS);
  assert.equal(quiet.ofType("presence").length, 0);
  await watcher.close(); await quiet.close();
});
