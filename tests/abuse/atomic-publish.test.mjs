// A publish batch is stored atomically: when storing one of its rows fails,
// nothing of the batch is stored, delivered or remembered, and later
// publishes get consecutive seqs, also after a restart on the same state.
//
// The failure is injected with the test-only var TEST_FAIL_STORE_AT_ROW=N
// (src/config.rs): the insert of row N of any publish throws inside the
// publish's transaction, after rows 1..N-1 were inserted. With N=2 every
// single-command publish stores normally and every batch of two or more fails.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import WebSocket from "ws";
import { startServer } from "../../scripts/server.mjs";
import { assertError, sleep, uniqueCharacter, WS_OPTIONS } from "../integration/helpers.mjs";

const state = mkdtempSync(join(tmpdir(), "abuse-atomic-"));
const vars = { AUTH_ENABLED: "false", TEST_FAIL_STORE_AT_ROW: "2" };
let server;
const sockets = [];
before(async () => { server = await startServer({ name: "abuse-atomic", state, vars }); });
after(async () => {
  for (const ws of sockets) ws.terminate();
  await server?.stop();
  rmSync(state, { recursive: true, force: true });
});

async function call(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) { init.body = JSON.stringify(body); init.headers["content-type"] = "application/json"; }
  const r = await fetch(server.url + path, init);
  const text = await r.text();
  let json = null; try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, json, text };
}

/** A subscriber of everything on `character`; `.seqs()` are the command seqs it got. */
async function subscriber(character) {
  const ws = new WebSocket(`${server.url.replace(/^http/, "ws")}/v1/characters/${character}/subscribe`, WS_OPTIONS);
  sockets.push(ws);
  const frames = [];
  ws.on("message", (d) => frames.push(JSON.parse(String(d))));
  await new Promise((resolve, reject) => { ws.once("open", resolve); ws.once("error", reject); });
  for (let i = 0; i < 50 && !frames.some((f) => f.type === "welcome"); i++) await sleep(100);
  return { seqs: () => frames.filter((f) => f.type === "command").map((f) => f.seq) };
}

const history = async (c) => {
  const h = await call("GET", `/v1/characters/${c}/history?since=0`);
  assert.equal(h.status, 200, h.text);
  return h.json;
};

test("a batch whose second row fails stores and delivers nothing; later publishes are consecutive", async () => {
  const c = uniqueCharacter("atomic");
  const sub = await subscriber(c);
  const failed = await call("POST", `/v1/characters/${c}/commands`, {
    commands: [{ name: "a", id: "k-a" }, { name: "b" }, { name: "c", id: "k-c" }],
  });
  assertError(assert, failed, 500, "internal");
  let h = await history(c);
  assert.equal(h.seq, 0, "the failed batch left no seq behind");
  assert.deepEqual(h.commands, [], "no row of the failed batch is stored");

  // Single commands store normally, from seq 1; the failed batch's ids were
  // not remembered, so publishing them now stores them.
  const seqs = [];
  for (const body of [{ name: "a", id: "k-a" }, { name: "b" }, { name: "c", id: "k-c" }]) {
    const r = await call("POST", `/v1/characters/${c}/commands`, body);
    assert.equal(r.status, 200, r.text);
    seqs.push(...r.json.seqs);
  }
  assert.deepEqual(seqs, [1, 2, 3]);

  // A second failed batch, on top of stored history, changes nothing either.
  assertError(assert, await call("POST", `/v1/characters/${c}/commands`, { commands: [{ name: "d" }, { name: "e" }] }), 500, "internal");
  const next = await call("POST", `/v1/characters/${c}/commands`, { name: "f" });
  assert.equal(next.status, 200, next.text);
  assert.deepEqual(next.json.seqs, [4]);
  h = await history(c);
  assert.deepEqual(h.commands.map((x) => [x.seq, x.name]), [[1, "a"], [2, "b"], [3, "c"], [4, "f"]]);
  assert.equal(h.seq, 4);
  for (let i = 0; i < 50 && sub.seqs().length < 4; i++) await sleep(100);
  assert.deepEqual(sub.seqs(), [1, 2, 3, 4], "the subscriber got the stored commands only, in order");

  // After a restart on the same state, the seq read back from storage is the
  // one the hub had: the next publish is 5, and the ids are still known.
  await server.stop();
  server = await startServer({ name: "abuse-atomic", state, vars });
  const again = await call("POST", `/v1/characters/${c}/commands`, { name: "g" });
  assert.equal(again.status, 200, again.text);
  assert.deepEqual(again.json.seqs, [5]);
  const replay = await call("POST", `/v1/characters/${c}/commands`, { name: "a", id: "k-a" });
  assert.deepEqual(replay.json.seqs, [1], "an id stored before the restart answers its first seq");
  h = await history(c);
  assert.deepEqual(h.commands.map((x) => x.seq), [1, 2, 3, 4, 5]);
});
