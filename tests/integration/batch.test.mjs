// BATCH_WINDOW_MS above 0: the commands of each window reach a socket as one
// `batch` frame. Runs against the second server that `make test` starts with
// `--var BATCH_WINDOW_MS:<ms>` (GATEWAY_BATCH_URL).
import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { track } from "./helpers.mjs";

const BASE = process.env.GATEWAY_BATCH_URL;
const skip = BASE ? false : "GATEWAY_BATCH_URL is not set (make test sets it)";
const uniq = () => `batch-${process.pid}-${Date.now().toString(36)}-${Math.floor(Math.random() * 1e6)}`;

async function open(character, topics) {
  const ws = track(new WebSocket(`${BASE.replace(/^http/, "ws")}/v1/characters/${character}/subscribe?topics=${topics}`));
  const frames = [];
  ws.on("message", (d) => frames.push(JSON.parse(d.toString())));
  await new Promise((r, j) => { ws.once("open", r); ws.once("error", j); });
  return { ws, frames };
}

async function until(pred, ms = 5000) {
  const end = Date.now() + ms;
  while (Date.now() < end) { if (pred()) return; await new Promise((r) => setTimeout(r, 10)); }
  throw new Error("timed out");
}

test("commands inside one window arrive as one batch frame per socket, in seq order", { skip }, async () => {
  const c = uniq();
  const face = await open(c, "face");
  const all = await open(c, ">");
  await until(() => face.frames.length && all.frames.length);
  const post = (body) => fetch(`${BASE}/v1/characters/${c}/commands`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) }).then((r) => r.json());
  const answers = await Promise.all([
    post({ topic: "face", name: "a" }),
    post({ topic: "body", name: "b" }),
    post({ topic: "face", name: "c" }),
  ]);
  const seqs = answers.map((a) => a.seqs[0]).sort((x, y) => x - y);
  assert.deepEqual(seqs, [1, 2, 3]);
  assert.equal(answers.reduce((n, a) => n + a.delivered, 0), 5, "delivered counts sockets as without batching");
  const commandsOf = (s) => s.frames.flatMap((f) => (f.type === "batch" ? f.commands : f.type === "command" ? [f] : []));
  await until(() => commandsOf(all).length === 3 && commandsOf(face).length === 2);
  await new Promise((r) => setTimeout(r, 300));
  for (const s of [face, all]) {
    assert.equal(s.frames.filter((f) => f.type === "command").length, 0, "no single command frames with batching on");
    for (const b of s.frames.filter((f) => f.type === "batch")) {
      assert.equal(b.character, c);
      assert.ok(b.commands.length >= 1);
      for (const cmd of b.commands) assert.equal(cmd.type, "command");
    }
  }
  assert.deepEqual(commandsOf(all).map((f) => f.seq), [1, 2, 3]);
  assert.deepEqual(commandsOf(face).map((f) => f.topic), ["face", "face"]);
  const batches = all.frames.filter((f) => f.type === "batch");
  assert.ok(batches.length < 3, `three concurrent publishes shared a window (${batches.length} batches)`);
  face.ws.close(); all.ws.close();
});

test("SAY_RULES replaces the shipped say rules", { skip }, async () => {
  const c = uniq();
  const post = (text) => fetch(`${BASE}/v1/characters/${c}/say`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ text }) }).then(async (r) => ({ status: r.status, json: await r.json() }));
  const r = await post("Hello, beep!");
  assert.equal(r.status, 200, JSON.stringify(r.json));
  assert.deepEqual(r.json.commands.map((x) => x.name), ["talk", "beep_boop"], "only the configured rule fires; no default wave for Hello");
  assert.equal(r.json.commands[1].topic, "face");
});
