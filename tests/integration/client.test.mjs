// The browser/Node client of public/client.mjs against a real gateway:
// ordered delivery, lossless reconnect after forced disconnects, duplicate
// dropping, gap reporting, no reconnect after 4010, ping keep-alive. A few
// checks of the client's own logic use a tiny local `ws` server that misbehaves
// on purpose (fatal close codes, a server that never answers `ping`).
import { test, after } from "node:test";
import assert from "node:assert/strict";
import WebSocket, { WebSocketServer } from "ws";
import { createHmac } from "node:crypto";
import { subscribe, publish, state, clearRetained } from "../../public/client.mjs";
import { BASE, http, uniqueCharacter, sleep, WS_OPTIONS } from "./helpers.mjs";

/** How long a client must stay silent to count as "received nothing more". */
const QUIET_MS = 400;

/** Every client a test opened, closed in `after` even when an assertion failed. */
const open = new Set();
after(() => { for (const h of open) h.close(); });

/** A WebSocket class for the client that records every socket it creates and its raw messages. */
function trackedWebSocket() {
  const sockets = [];
  const urls = [];
  const raw = [];
  const sent = [];
  let rewrite = null;
  class Tracked extends WebSocket {
    constructor(url, protocols, options = {}) {
      const u = rewrite ? rewrite(url, sockets.length) : url;
      // See WS_OPTIONS in helpers.mjs: end TCP shortly after a server-started close.
      super(u, protocols, { ...WS_OPTIONS, ...options });
      urls.push(u);
      sockets.push(this);
      this.on("message", (d, isBinary) => raw.push(isBinary ? d : d.toString()));
    }
    send(data, ...rest) { sent.push(data); return super.send(data, ...rest); }
  }
  return {
    WebSocket: Tracked, sockets, urls, raw, sent,
    /** (url, index) -> url, applied to every socket the client opens from now on. */
    setRewrite(fn) { rewrite = fn; },
    live() { return sockets.filter((s) => s.readyState === WebSocket.OPEN).at(-1); },
  };
}

/**
 * Starts a client with recording callbacks.
 * @returns the handle plus `cmds`, `gaps`, `states`, `closes`, `frames`, and `waitFor`.
 */
function start(character, opts = {}) {
  const rec = { cmds: [], metas: [], gaps: [], states: [], closes: [], frames: [], errors: [] };
  const h = subscribe(character, {
    baseUrl: BASE,
    WebSocket,
    backoff: { initialMs: 50, maxMs: 300 },
    ...opts,
    onCommand: (c, meta) => { rec.cmds.push(c); rec.metas.push(meta); },
    onGap: (g) => rec.gaps.push(g),
    onState: (s, d) => rec.states.push({ s, ...d }),
    onClose: (i) => rec.closes.push(i),
    onFrame: (f) => rec.frames.push(f),
    onError: (e) => rec.errors.push(e),
  });
  open.add(h);
  rec.h = h;
  rec.seqs = () => rec.cmds.map((c) => c.seq);
  rec.close = () => { h.close(); open.delete(h); };
  return rec;
}

async function until(pred, timeoutMs = 5000, what = "condition") {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = pred();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

const range = (a, b) => Array.from({ length: b - a + 1 }, (_, i) => a + i);
const pub = (c, cmd) => publish(BASE, c, cmd);
const isOpen = (r) => r.h.state === "open";

test("client: commands matching its filters are delivered once, in seq order", async () => {
  const c = uniqueCharacter("cl-basic");
  const r = start(c, { topics: ["face", "body.*"] });
  await until(() => isOpen(r), 5000, "open");
  assert.equal(typeof r.h.clientId, "string");
  assert.ok(r.h.clientId.length > 0);
  assert.equal(r.h.seq, 0, "fresh character: caught up at seq 0");
  const topics = ["face", "legs", "body.arms", "face", "body.arms.left", "main", "body.legs", "face"];
  const expected = [];
  let epoch;
  for (const [i, topic] of topics.entries()) {
    const res = await pub(c, { topic, name: "move", params: { i } });
    epoch = res.epoch;
    if (topic === "face" || /^body\.[^.]+$/.test(topic)) expected.push(res.seqs[0]);
  }
  await until(() => r.cmds.length >= expected.length, 5000, "commands");
  await sleep(QUIET_MS);
  assert.deepEqual(r.seqs(), expected);
  assert.ok(r.cmds.every((x) => x.character === c && x.type === "command"));
  assert.ok(r.metas.every((m) => m.replay === false), "live commands are not flagged as replay");
  assert.equal(r.h.seq, topics.length, "caught up to the last command");
  assert.equal(r.h.lastDeliveredSeq, expected.at(-1));
  assert.equal(r.h.epoch, epoch);
  assert.equal(r.gaps.length, 0);
  assert.deepEqual(r.states.map((s) => s.s), ["connecting", "open"]);
  r.close();
  assert.equal(r.h.state, "closed");
  assert.equal(r.closes.length, 1);
  assert.equal(r.closes[0].byClient, true);
});

test("client: forced disconnects mid-stream lose nothing and duplicate nothing", async (tc) => {
  const c = uniqueCharacter("cl-drop");
  const t = trackedWebSocket();
  const r = start(c, { WebSocket: t.WebSocket, topics: [">"] });
  await until(() => isOpen(r), 5000, "open");
  const N = 200;
  const killAt = new Set([30, 75, 76, 120, 170]); // two in a row: a kill during a reconnect's replay
  let kills = 0;
  for (let i = 1; i <= N; i++) {
    const res = await pub(c, { topic: i % 3 ? "face" : "body.arms", name: "step", params: { i } });
    assert.deepEqual(res.seqs, [i]);
    if (killAt.has(i)) {
      const live = t.live();
      if (live) { live.terminate(); kills += 1; }
    }
    await sleep(4); // a steady stream, not one burst
  }
  await until(() => r.cmds.length >= N, 15000, `all ${N} commands (got ${r.cmds.length})`);
  await sleep(QUIET_MS);
  assert.deepEqual(r.seqs(), range(1, N), "every seq exactly once, in order");
  assert.deepEqual(r.cmds.map((x) => x.params.i), range(1, N));
  assert.equal(r.gaps.length, 0, `no gap reported: ${JSON.stringify(r.gaps)}`);
  assert.ok(kills >= 3, `sockets were killed (${kills})`);
  assert.ok(t.sockets.length >= kills + 1, `the client reconnected (${t.sockets.length} sockets for ${kills} kills)`);
  assert.ok(t.urls.slice(1).every((u) => /[?&]since=\d+/.test(u) && /[?&]epoch=/.test(u)), `reconnects resume with since and epoch: ${t.urls.join(" ")}`);
  assert.ok(r.states.filter((s) => s.s === "reconnecting").length >= kills - 1);
  assert.equal(r.h.state, "open");
  assert.equal(r.h.seq, N);
  tc.diagnostic(`${kills} kills, ${t.sockets.length} sockets, ${r.metas.filter((m) => m.replay).length} commands recovered by replay`);
  r.close();
});

test("client: a replay of already delivered commands is dropped, not delivered twice", async () => {
  const c = uniqueCharacter("cl-dup");
  const t = trackedWebSocket();
  const r = start(c, { WebSocket: t.WebSocket });
  await until(() => isOpen(r), 5000, "open");
  for (let i = 1; i <= 5; i++) await pub(c, { name: "a", params: { i } });
  await until(() => r.cmds.length === 5, 5000, "first five");
  // The next connection asks for everything again (a stale cursor), so the server
  // replays 1..5 that the client already delivered.
  t.setRewrite((url) => url.replace(/([?&])since=\d+/, "$1since=0"));
  t.live().terminate();
  await until(() => t.sockets.length === 2 && isOpen(r), 5000, "reconnect");
  t.setRewrite(null);
  for (let i = 6; i <= 8; i++) await pub(c, { name: "b", params: { i } });
  await until(() => r.cmds.length >= 8, 5000, "eight");
  await sleep(QUIET_MS);
  assert.match(t.urls[1], /[?&]since=0(&|$)/);
  const replayed = r.frames.filter((f) => f.type === "command" && f.seq <= 5);
  assert.ok(replayed.length >= 10, `the server really sent 1..5 twice (${replayed.length} frames)`);
  assert.deepEqual(r.seqs(), range(1, 8), "onCommand saw every seq exactly once");
  assert.equal(new Set(r.seqs()).size, r.seqs().length);
  assert.equal(r.gaps.length, 0);
  r.close();
});

test("client: onGap when the epoch is not the character's, delivery continues", async () => {
  const c = uniqueCharacter("cl-gap-epoch");
  for (let i = 1; i <= 3; i++) await pub(c, { name: "old", params: { i } });
  const r = start(c, { since: 0, epoch: "not-the-epoch" });
  await until(() => r.gaps.length === 1, 5000, "onGap");
  const g = r.gaps[0];
  assert.equal(g.reason, "epoch");
  assert.equal(g.since, 0);
  assert.equal(g.seq, 3);
  assert.equal(g.previousEpoch, "not-the-epoch");
  assert.equal(g.epoch, r.h.epoch);
  assert.notEqual(r.h.epoch, "not-the-epoch");
  assert.equal(g.frame.type, "recovered");
  assert.equal(g.frame.complete, false);
  const live = await pub(c, { name: "new" });
  await until(() => r.cmds.some((x) => x.seq === live.seqs[0]), 5000, "live command after the gap");
  await sleep(QUIET_MS);
  assert.equal(r.gaps.length, 1, "one gap, reported once");
  assert.deepEqual(r.seqs().filter((s) => s === live.seqs[0]), [4]);
  assert.equal(new Set(r.seqs()).size, r.seqs().length);
  r.close();
});

test("client: onGap when since is ahead of the character, and live delivery resumes", async () => {
  const c = uniqueCharacter("cl-gap-ahead");
  await pub(c, { name: "a" });
  const r = start(c, { since: 50 });
  await until(() => r.gaps.length === 1, 5000, "onGap");
  assert.equal(r.gaps[0].reason, "history");
  assert.equal(r.gaps[0].since, 50);
  assert.equal(r.gaps[0].seq, 1);
  assert.equal(r.gaps[0].frame.complete, false);
  assert.equal(r.h.seq, 1, "the cursor follows the server after an incomplete recovery");
  const live = await pub(c, { name: "b" });
  await until(() => r.cmds.length === 1, 5000, "live command");
  assert.equal(r.cmds[0].seq, live.seqs[0]);
  r.close();
});

test("client: a resume with since replays the missed commands, flagged as replay, without a gap", async () => {
  const c = uniqueCharacter("cl-resume");
  const first = start(c);
  await until(() => isOpen(first), 5000, "open");
  await pub(c, { name: "a" });
  await until(() => first.cmds.length === 1, 5000, "first");
  const { seq, epoch } = first.h;
  first.close();
  for (let i = 0; i < 4; i++) await pub(c, { name: "missed", params: { i } });
  const r = start(c, { since: seq, epoch });
  await until(() => r.cmds.length === 4 && r.frames.some((f) => f.type === "recovered"), 5000, "replay");
  assert.deepEqual(r.seqs(), [2, 3, 4, 5]);
  assert.ok(r.metas.every((m) => m.replay === true));
  assert.equal(r.gaps.length, 0);
  const live = await pub(c, { name: "live" });
  await until(() => r.cmds.length === 5, 5000, "live");
  assert.equal(r.cmds[4].seq, live.seqs[0]);
  assert.equal(r.metas[4].replay, false);
  r.close();
});

test("client: a late joiner gets the retained commands first, marked, then live ones; a resume does not repeat them", async () => {
  const c = uniqueCharacter("cl-retain");
  await pub(c, { topic: "face", name: "smile", retain: true });             // 1, replaced by 4
  await pub(c, { topic: "pose", name: "sit", params: { h: 1 }, retain: true }); // 2
  await pub(c, { topic: "face", name: "blink" });                           // 3, not retained
  await pub(c, { topic: "face", name: "frown", retain: true });             // 4
  const t = trackedWebSocket();
  const r = start(c, { WebSocket: t.WebSocket });
  await until(() => isOpen(r) && r.cmds.length >= 2, 5000, "retained commands");
  await sleep(QUIET_MS);
  assert.deepEqual(r.cmds.map((x) => [x.seq, x.topic, x.name, x.retained]), [[2, "pose", "sit", true], [4, "face", "frown", true]]);
  assert.deepEqual(r.metas, [{ replay: false, retained: true }, { replay: false, retained: true }]);
  assert.deepEqual(r.cmds[0].params, { h: 1 });
  assert.equal(r.h.seq, 4, "the cursor is the welcome's seq, whatever the retained seqs");
  assert.equal(r.h.lastDeliveredSeq, null, "retained commands leave lastDeliveredSeq alone");
  // Live commands follow, including a retained one (live: retained false) and seq 5
  // right after the retained seq 4: nothing is taken for a duplicate or lost.
  await pub(c, { topic: "face", name: "wink" });                             // 5
  await pub(c, { topic: "pose", name: "stand", retain: true });              // 6
  await until(() => r.cmds.length >= 4, 5000, "live commands");
  assert.deepEqual(r.cmds.slice(2).map((x) => [x.seq, x.name, x.retained]), [[5, "wink", false], [6, "stand", false]]);
  assert.deepEqual(r.metas.slice(2), [{ replay: false, retained: false }, { replay: false, retained: false }]);
  assert.equal(r.h.seq, 6);
  assert.equal(r.h.lastDeliveredSeq, 6);
  // Drop the socket, publish while it is away: the reconnect resumes with since and
  // gets the missed command replayed, never the retained set again. The first
  // reconnect goes to a closed port, so the client is surely away (not reconnected
  // already) when 7 is published.
  t.setRewrite((url) => url.replace(/^ws:\/\/[^/]+/, "ws://127.0.0.1:9"));
  t.live().terminate();
  await until(() => t.sockets.length >= 2, 5000, "a reconnect attempt");
  await pub(c, { topic: "face", name: "laugh", retain: true });             // 7
  t.setRewrite(null);
  await until(() => isOpen(r) && r.cmds.length >= 5, 10000, "resume");
  await pub(c, { topic: "face", name: "nod" });                             // 8
  await until(() => r.cmds.length >= 6, 5000, "live after resume");
  await sleep(QUIET_MS);
  assert.match(t.urls.at(-1), /[?&]since=6(&|$)/);
  assert.deepEqual(r.cmds.slice(4).map((x) => [x.seq, x.name, x.retained]), [[7, "laugh", false], [8, "nod", false]]);
  assert.deepEqual(r.metas.slice(4).map((m) => [m.replay, m.retained]), [[true, false], [false, false]]);
  assert.equal(r.frames.filter((f) => f.type === "command" && f.retained === true).length, 2, "retained frames only on the first connect");
  assert.deepEqual(r.seqs(), [2, 4, 5, 6, 7, 8]);
  assert.equal(r.gaps.length, 0);
  assert.ok(r.errors.every((e) => /ECONNREFUSED/.test(String(e))), "only the refused attempts: " + String(r.errors));
  r.close();
});

test("client: with sync, retained commands are delivered at once (never scheduled); retained: false ignores them", async () => {
  const c = uniqueCharacter("cl-retain-sync");
  await pub(c, { topic: "pose", name: "sit", retain: true });               // 1
  await pub(c, { topic: "face", name: "smile", retain: true });             // 2
  const r = start(c, { sync: { playoutDelayMs: 300 }, topics: ["pose"] });
  const plain = start(c, { retained: false });
  await until(() => isOpen(r) && isOpen(plain) && r.cmds.length >= 1, 5000, "retained under sync");
  // Delivered on arrival, whatever the playout delay and before the clock's first round.
  assert.deepEqual(r.cmds.map((x) => [x.seq, x.name]), [[1, "sit"]], "only what the filters match");
  assert.deepEqual(r.metas[0], { replay: false, retained: true, late: false, lateByMs: 0 });
  const { seqs: [live] } = await pub(c, { topic: "pose", name: "stand" });  // 3
  const t0 = Date.now();
  await until(() => r.cmds.length >= 2 && plain.cmds.length >= 1, 5000, "live");
  const m = r.metas[1];
  assert.equal(r.cmds[1].seq, live);
  assert.equal(m.retained, false);
  assert.ok(Number.isFinite(m.dueAt), "live commands are scheduled");
  assert.ok(Date.now() - t0 >= 150, "the live one waited for its playout time");
  assert.deepEqual(plain.seqs(), [live], "retained: false delivers only live commands");
  assert.equal(plain.h.seq, live);
  r.close(); plain.close();
});

test("client: state(), clearRetained() and publish with retain", async () => {
  const c = uniqueCharacter("cl-state");
  const a = await publish(BASE, c, [{ topic: "pose", name: "sit", retain: true }, { topic: "face", name: "smile", retain: true }]);
  const s = await state(BASE, c);
  assert.equal(s.character, c);
  assert.equal(s.epoch, a.epoch);
  assert.equal(s.seq, 2);
  assert.deepEqual(s.retained.map((x) => [x.seq, x.topic, x.name, x.retained]), [[1, "pose", "sit", true], [2, "face", "smile", true]]);
  assert.deepEqual(await clearRetained(BASE, c, "pose"), { character: c, topic: "pose", cleared: true });
  assert.deepEqual(await clearRetained(BASE, c, "pose"), { character: c, topic: "pose", cleared: false });
  assert.deepEqual((await state(BASE, c)).retained.map((x) => x.name), ["smile"]);
  await assert.rejects(clearRetained(BASE, c, "face.*"), (err) => err.status === 400 && /clearRetained failed: 400/.test(err.message));
  await assert.rejects(publish(BASE, c, { name: "x", retain: "yes" }), (err) => err.status === 400);
});

test("client: no reconnect after an admin disconnect (close code 4010)", async () => {
  const c = uniqueCharacter("cl-4010");
  const t = trackedWebSocket();
  const r = start(c, { WebSocket: t.WebSocket });
  await until(() => isOpen(r), 5000, "open");
  const id = r.h.clientId;
  const res = await http("DELETE", `/v1/admin/characters/${c}/subscriptions/${encodeURIComponent(id)}`);
  assert.equal(res.status, 200, `DELETE admin subscription: ${res.status} ${res.text}`);
  assert.deepEqual(res.json, { disconnected: true });
  await until(() => r.h.state === "closed", 5000, "state closed");
  assert.equal(r.closes.length, 1);
  assert.equal(r.closes[0].code, 4010);
  assert.equal(r.closes[0].fatal, true);
  await sleep(1000);
  assert.equal(t.sockets.length, 1, "no new connection after 4010");
  assert.equal(r.h.state, "closed");
  // And the server no longer knows that client.
  const again = await http("DELETE", `/v1/admin/characters/${c}/subscriptions/${encodeURIComponent(id)}`);
  assert.equal(again.status, 404);
  r.close();
});

test("client: ping keep-alive gets pong and keeps one connection", async () => {
  const c = uniqueCharacter("cl-ping");
  const t = trackedWebSocket();
  const r = start(c, { WebSocket: t.WebSocket, pingIntervalMs: 150, pongTimeoutMs: 1000 });
  await until(() => isOpen(r), 5000, "open");
  await until(() => t.raw.filter((m) => m === "pong").length >= 4, 5000, "four pongs");
  assert.ok(t.sent.filter((m) => m === "ping").length >= 4, "the client sent ping");
  assert.equal(t.sockets.length, 1, "no reconnect while pongs arrive");
  assert.equal(r.h.state, "open");
  assert.equal(r.errors.length, 0, `no errors: ${r.errors.map(String).join("; ")}`);
  assert.equal(r.frames.length, 1, "pong is not a JSON frame; only welcome was handed to onFrame");
  r.close();
});

test("client: a refused upgrade (400, invalid character) ends the client without retrying", async () => {
  const t = trackedWebSocket();
  const r = start("not a valid name!", { WebSocket: t.WebSocket });
  await until(() => r.h.state === "closed", 5000, "closed");
  assert.equal(r.closes[0].httpStatus, 400);
  assert.equal(r.closes[0].fatal, true);
  await sleep(300);
  assert.equal(t.sockets.length, 1);
});

// ---- the client's own logic against a scripted local server -----------------

/** A local WebSocket server; `onConnection(ws, req, n)` scripts each connection. */
async function fakeServer(onConnection) {
  const wss = new WebSocketServer({ port: 0, host: "127.0.0.1" });
  await new Promise((res) => wss.once("listening", res));
  const seen = [];
  wss.on("connection", (ws, req) => { seen.push(req.url); onConnection(ws, req, seen.length); });
  return {
    base: `http://127.0.0.1:${wss.address().port}`,
    seen,
    close: () => new Promise((res) => { for (const c of wss.clients) c.terminate(); wss.close(() => res()); }),
  };
}
const welcome = (n, seq = 0) => JSON.stringify({ type: "welcome", client_id: `c${n}`, character: "x", epoch: "e1", seq, topics: [">"] });

for (const code of [4001, 4003, 4010]) {
  test(`client: close code ${code} is final (scripted server)`, async () => {
    const srv = await fakeServer((ws, _req, n) => { ws.send(welcome(n)); setTimeout(() => ws.close(code, "bye"), 50); });
    try {
      const r = start("x", { baseUrl: srv.base });
      await until(() => r.h.state === "closed", 3000, "closed");
      assert.equal(r.closes[0].code, code);
      assert.equal(r.closes[0].fatal, true);
      await sleep(500);
      assert.equal(srv.seen.length, 1, "never reconnected");
      r.close();
    } finally { await srv.close(); }
  });
}

test("client: other close codes reconnect with since/epoch (scripted server)", async () => {
  const srv = await fakeServer((ws, _req, n) => {
    ws.send(welcome(n, 0));
    if (n === 1) {
      ws.send(JSON.stringify({ type: "command", character: "x", topic: "main", seq: 1, epoch: "e1", ts: Date.now(), name: "a", params: {}, duration_ms: null, id: null }));
      setTimeout(() => ws.close(1011, "oops"), 50);
    }
  });
  try {
    const r = start("x", { baseUrl: srv.base });
    await until(() => srv.seen.length >= 2 && isOpen(r), 3000, "reconnect");
    assert.match(srv.seen[1], /since=1&epoch=e1/);
    assert.ok(r.states.some((s) => s.s === "reconnecting" && s.code === 1011));
    r.close();
  } finally { await srv.close(); }
});

test("client: retained frames count only after the welcome of a connect without since (scripted server)", async () => {
  const cmd = (seq, name, retained) => JSON.stringify({ type: "command", character: "x", topic: "main", seq, epoch: "e1", ts: Date.now(), at: null, name, params: {}, duration_ms: null, id: null, retained });
  const srv = await fakeServer((ws, _req, n) => {
    ws.send(welcome(n, 3));
    // The retained seq equals the welcome's; the live seq 4 still follows it.
    ws.send(cmd(3, n === 1 ? "pose" : "stale", true));
    ws.send(cmd(n === 1 ? 4 : 5, "live", false));
    if (n === 1) setTimeout(() => ws.close(1011, "again"), 50);
  });
  try {
    const r = start("x", { baseUrl: srv.base });
    await until(() => srv.seen.length >= 2 && isOpen(r) && r.cmds.length >= 3, 3000, "reconnect");
    await sleep(100);
    assert.match(srv.seen[1], /since=4&epoch=e1/);
    assert.deepEqual(r.cmds.map((x) => [x.seq, x.name]), [[3, "pose"], [4, "live"], [5, "live"]], "a retained frame after a resume is not delivered");
    assert.deepEqual(r.metas.map((m) => m.retained), [true, false, false]);
    r.close();
  } finally { await srv.close(); }
});

test("client: a server that stops answering ping is dropped and reconnected (scripted server)", async () => {
  // The first connection never answers; the second answers `ping` with `pong`.
  const srv = await fakeServer((ws, _req, n) => {
    ws.send(welcome(n));
    if (n > 1) ws.on("message", (m) => { if (String(m) === "ping") ws.send("pong"); });
  });
  try {
    const r = start("x", { baseUrl: srv.base, pingIntervalMs: 100, pongTimeoutMs: 200 });
    await until(() => srv.seen.length >= 2 && isOpen(r), 3000, "reconnect after keep-alive timeout");
    assert.ok(r.states.some((s) => s.s === "reconnecting" && /keep-alive/.test(s.reason)));
    await sleep(600);
    assert.equal(srv.seen.length, 2, "the answering server keeps the connection");
    r.close();
  } finally { await srv.close(); }
});

test("client: backoff grows with full jitter while the server is down", async () => {
  const srv = await fakeServer((ws) => ws.terminate());
  try {
    const r = start("x", { baseUrl: srv.base, backoff: { initialMs: 20, maxMs: 160, factor: 2 } });
    await until(() => r.states.filter((s) => s.s === "reconnecting").length >= 6, 5000, "six retries");
    const waits = r.states.filter((s) => s.s === "reconnecting");
    waits.forEach((w, i) => {
      assert.equal(w.attempt, i + 1);
      assert.ok(w.delayMs >= 0 && w.delayMs < Math.min(160, 20 * 2 ** i), `attempt ${w.attempt}: ${w.delayMs}ms`);
    });
    r.close();
    const n = srv.seen.length;
    await sleep(400);
    assert.equal(srv.seen.length, n, "close() stops reconnecting");
  } finally { await srv.close(); }
});

// ---- against the auth-on server `make test` starts (skipped without it) ------

const AUTH_BASE = process.env.GATEWAY_AUTH_URL;
const SECRET = process.env.TEST_JWT_SECRET;
const authSkip = AUTH_BASE && SECRET ? false : "GATEWAY_AUTH_URL / TEST_JWT_SECRET not set (make test sets them)";
const b64u = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
function jwt(claims) {
  const head = `${b64u({ alg: "HS256", typ: "JWT" })}.${b64u({ sub: "client-test", exp: Math.floor(Date.now() / 1000) + 600, ...claims })}`;
  return `${head}.${createHmac("sha256", SECRET).update(head).digest("base64url")}`;
}

test("client (auth on): ?token= from a token function, refreshed on every reconnect", { skip: authSkip }, async () => {
  const c = uniqueCharacter("cl-auth");
  const t = trackedWebSocket();
  let calls = 0;
  const r = start(c, { baseUrl: AUTH_BASE, WebSocket: t.WebSocket, token: async () => { calls += 1; return jwt({ role: "subscriber" }); } });
  await until(() => isOpen(r), 5000, "open with ?token=");
  assert.match(t.urls[0], /[?&]token=/);
  const pubToken = jwt({ role: "publisher" });
  await publish(AUTH_BASE, c, { name: "a" }, { token: pubToken });
  await until(() => r.cmds.length === 1, 5000, "first command");
  t.live().terminate();
  await publish(AUTH_BASE, c, { name: "b" }, { token: pubToken });
  await until(() => r.cmds.length === 2 && t.sockets.length >= 2, 5000, "second command after reconnect");
  assert.deepEqual(r.seqs(), [1, 2]);
  assert.ok(calls >= 2, `token() called per connect (${calls})`);
  await assert.rejects(publish(AUTH_BASE, c, { name: "x" }, { token: jwt({ role: "subscriber" }) }), (e) => e.status === 403);
  r.close();
});

test("client (auth on): token expiry closes with 4001 and the client stays closed", { skip: authSkip }, async () => {
  const c = uniqueCharacter("cl-exp");
  const t = trackedWebSocket();
  const r = start(c, { baseUrl: AUTH_BASE, WebSocket: t.WebSocket, token: jwt({ exp: Math.floor(Date.now() / 1000) + 2 }) });
  await until(() => isOpen(r), 5000, "open");
  await until(() => r.h.state === "closed", 9000, "closed by expiry");
  assert.equal(r.closes[0].code, 4001);
  assert.equal(r.closes[0].fatal, true);
  await sleep(1000);
  assert.equal(t.sockets.length, 1, "no reconnect after 4001");
});

test("client (auth on): a refused token (401) ends the client without retrying", { skip: authSkip }, async () => {
  const t = trackedWebSocket();
  const r = start(uniqueCharacter("cl-401"), { baseUrl: AUTH_BASE, WebSocket: t.WebSocket, token: "garbled.token.value" });
  await until(() => r.h.state === "closed", 5000, "closed");
  assert.equal(r.closes[0].httpStatus, 401);
  await sleep(300);
  assert.equal(t.sockets.length, 1);
});
