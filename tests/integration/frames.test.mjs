// Client frames over the socket: subscribe, unsubscribe, publish, ping, and
// every kind of bad frame.
import { test } from "node:test";
import assert from "node:assert/strict";
import { http, subscribe, uniqueCharacter, sleep } from "./helpers.mjs";

const publish = (character, body) => http("POST", `/v1/characters/${character}/commands`, { body });
const lastOf = (s, type) => s.frames.filter((f) => f.type === type).at(-1);

test("subscribe and unsubscribe frames change what the socket receives", async () => {
  const c = uniqueCharacter("frames-sub");
  const s = await subscribe(c, { topics: "face" });
  s.send({ type: "subscribe", topics: ["body.*", "face"], ref: "r1" });
  const sub = await s.waitFor((fs) => fs.find((f) => f.type === "subscribed"));
  assert.deepEqual(sub.topics, ["face", "body.*"]);
  await publish(c, { topic: "body.arms", name: "wave" });
  await s.waitFor((fs) => fs.find((f) => f.type === "command" && f.topic === "body.arms"));
  s.send({ type: "unsubscribe", topics: ["face"] });
  await s.waitFor((fs) => fs.filter((f) => f.type === "subscribed").length === 2);
  assert.deepEqual(lastOf(s, "subscribed").topics, ["body.*"]);
  await publish(c, { topic: "face", name: "smile" });
  await publish(c, { topic: "body.legs", name: "kick" });
  await s.waitFor((fs) => fs.find((f) => f.type === "command" && f.topic === "body.legs"));
  await sleep(300);
  assert.deepEqual(s.commands().map((f) => f.topic), ["body.arms", "body.legs"]);
  await s.close();
});

test("a publish frame is stored, delivered to matching sockets and acknowledged", async () => {
  const c = uniqueCharacter("frames-pub");
  const pub = await subscribe(c, { topics: "none.here" });
  const sub = await subscribe(c, { topics: "face" });
  pub.send({ type: "publish", ref: "p1", topic: "face", name: "smile", params: { from: "socket" } });
  const ack = await pub.waitFor((fs) => fs.find((f) => f.type === "published"));
  assert.deepEqual(ack, { type: "published", seq: 1, ref: "p1" });
  const cmd = await sub.waitFor((fs) => fs.find((f) => f.type === "command"));
  assert.equal(cmd.seq, 1);
  assert.deepEqual(cmd.params, { from: "socket" });
  pub.send({ type: "publish", name: "wave" });
  const ack2 = await pub.waitFor((fs) => fs.filter((f) => f.type === "published")[1]);
  assert.deepEqual(ack2, { type: "published", seq: 2, ref: null });
  const h = await http("GET", `/v1/characters/${c}/history`);
  assert.deepEqual(h.json.commands.map((f) => f.name), ["smile", "wave"]);
  assert.equal(pub.commands().length, 0, "the publisher's filters did not match");
  await pub.close(); await sub.close();
});

test("bad client frames get an error frame and the socket stays open", async () => {
  const c = uniqueCharacter("frames-bad");
  const s = await subscribe(c);
  const cases = [
    ["not json", "bad_message", null],
    [JSON.stringify([1, 2]), "bad_message", null],
    [JSON.stringify({ type: "dance", ref: "u1" }), "bad_message", "u1"],
    [JSON.stringify({ topics: ["a"] }), "bad_message", null],
    [JSON.stringify({ type: "subscribe", topics: ["Bad Filter"], ref: "f1" }), "bad_request", "f1"],
    [JSON.stringify({ type: "subscribe", topics: "face", ref: "f2" }), "bad_request", "f2"],
    [JSON.stringify({ type: "publish", ref: "p1", topic: "face" }), "bad_request", "p1"],
    [JSON.stringify({ type: "publish", ref: "p2", name: "x", duration_ms: -1 }), "bad_request", "p2"],
    [JSON.stringify({ type: "publish", ref: "p3", name: "x", params: "nope" }), "bad_request", "p3"],
    [JSON.stringify({ type: "publish", ref: "big", name: "x", params: { pad: "y".repeat(17 * 1024) } }), "payload_too_large", null],
  ];
  for (const [i, [text, code, ref]] of cases.entries()) {
    if (i === 5) {
      // A good frame in between: the 4400 limit counts consecutive bad frames.
      s.send({ type: "subscribe", topics: [">"] });
      await s.waitFor((fs) => fs.find((f) => f.type === "subscribed"));
    }
    s.send(text);
    const err = await s.waitFor((fs) => fs.filter((f) => f.type === "error")[i], 3000, `error for ${text.slice(0, 60)}`);
    assert.equal(err.code, code, text.slice(0, 80));
    assert.equal(typeof err.message, "string");
    if (ref !== null) assert.equal(err.ref, ref);
  }
  s.ws.send(Buffer.from([1, 2, 3]), { binary: true });
  const bin = await s.waitFor((fs) => fs.filter((f) => f.type === "error")[cases.length]);
  assert.equal(bin.code, "bad_message");
  assert.equal(s.closed, null, "the socket stays open");
  // Still works afterwards.
  await publish(c, { name: "after" });
  await s.waitFor((fs) => fs.find((f) => f.type === "command" && f.name === "after"));
  const h = await http("GET", `/v1/characters/${c}/history`);
  assert.deepEqual(h.json.commands.map((f) => f.name), ["after"], "no bad frame published anything");
  await s.close();
});

test("more than 32 filters are refused, on the URL and by frame", async () => {
  const c = uniqueCharacter("frames-32");
  const many = Array.from({ length: 33 }, (_, i) => `t${i}`);
  await assert.rejects(subscribe(c, { topics: many.join(",") }), (e) => e.status === 400 && e.body.error.code === "bad_request");
  const s = await subscribe(c, { topics: many.slice(0, 32).join(",") });
  assert.equal(s.frames[0].topics.length, 32);
  s.send({ type: "subscribe", topics: ["one-more"], ref: "x" });
  const err = await s.waitFor((fs) => fs.find((f) => f.type === "error"));
  assert.equal(err.code, "bad_request");
  assert.equal(err.ref, "x");
  s.send({ type: "subscribe", topics: ["t0"] });
  const ok = await s.waitFor((fs) => fs.find((f) => f.type === "subscribed"));
  assert.equal(ok.topics.length, 32, "re-subscribing a held filter is fine");
  await s.close();
});

test("ping is answered pong", async () => {
  const c = uniqueCharacter("ping");
  const s = await subscribe(c);
  s.send("ping");
  const pong = await s.waitFor((fs) => fs.find((f) => f.type === "__raw" && f.text === "pong"));
  assert.ok(pong);
  assert.equal(s.ofType("error").length, 0);
  await s.close();
});

test("a socket that keeps sending bad frames is closed with 4400", async () => {
  const c = uniqueCharacter("frames-4400");
  const s = await subscribe(c);
  for (let i = 0; i < 30 && !s.closed; i++) { s.send("garbage"); await sleep(10); }
  await s.waitFor((_fs, cl) => cl.closed, 3000, "close");
  assert.equal(s.closed.code, 4400);
});
