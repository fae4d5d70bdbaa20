// Bounded resume (contract §8): one resume replays at most RESUME_LIMIT
// commands and reads at most RESUME_MAX_PAGES (20) KV archive pages; a cut
// replay ends with `recovered` {truncated: true, next_since}, and every other
// `recovered` says `truncated: false`. The JS client (public/client.mjs) fills
// the rest from paged history while it holds live frames back, so its user
// still gets every command exactly once, in seq order.
//
// Two servers of their own: a small one (RESUME_LIMIT=50, HISTORY_LIMIT=100,
// so archive pages of 25 seqs) for the rules, and one with the default vars
// for a 10,000-command absence.
import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { startServer } from "../../scripts/server.mjs";
import { subscribe as clientSubscribe } from "../../public/client.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const sockets = new Set();
const clients = new Set();
let small = null;
let stock = null;

before(async () => {
  small = await startServer({ runtime: "dev", name: "abuse-resume", vars: { AUTH_ENABLED: "false", RESUME_LIMIT: "50", HISTORY_LIMIT: "100" } });
});

after(async () => {
  for (const h of clients) h.close();
  for (const ws of sockets) ws.terminate();
  await small?.stop();
  await stock?.stop();
});

let counter = 0;
const uniqueCharacter = (prefix) => `${prefix}-${process.pid}-${Date.now().toString(36)}-${++counter}`;

/** The topic of the command numbered `i` (1-based) in a publish stream. */
const topicOf = (i) => (i % 2 ? "face" : "body.arms");

/** Publishes commands `from..=to` of the stream in batches of 100; returns their seqs. */
async function publishRange(base, character, from, to) {
  const seqs = [];
  for (let i = from; i <= to; i += 100) {
    const commands = [];
    for (let j = i; j <= Math.min(to, i + 99); j++) commands.push({ topic: topicOf(j), name: "n", params: { i: j } });
    const res = await fetch(`${base}/v1/characters/${character}/commands`, {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ commands }),
    });
    const body = await res.json();
    assert.equal(res.status, 200, JSON.stringify(body));
    seqs.push(...body.seqs);
  }
  return seqs;
}

/** Opens a raw subscriber with `query`; resolves with its replayed commands and `recovered` frame. */
function resume(base, character, query) {
  const qs = new URLSearchParams(query);
  const ws = new WebSocket(`${base.replace(/^http/, "ws")}/v1/characters/${character}/subscribe?${qs}`, { closeTimeout: 500 });
  sockets.add(ws);
  return new Promise((resolve, reject) => {
    const commands = [];
    const timer = setTimeout(() => reject(new Error(`no recovered frame for ${qs}`)), 30_000);
    ws.on("message", (d) => {
      const f = JSON.parse(d.toString());
      if (f.type === "command") commands.push(f.seq);
      if (f.type === "recovered") {
        clearTimeout(timer);
        ws.terminate();
        sockets.delete(ws);
        resolve({ commands, recovered: f });
      }
    });
    ws.on("error", (e) => { clearTimeout(timer); reject(e); });
  });
}

const range = (from, to) => Array.from({ length: Math.max(0, to - from + 1) }, (_, k) => from + k);

test("a resume replays at most RESUME_LIMIT commands and says where history continues", async () => {
  const c = uniqueCharacter("bounded");
  await publishRange(small.url, c, 1, 1000);

  const cut = await resume(small.url, c, { since: "0" });
  assert.deepEqual(cut.commands, range(1, 50), "the first RESUME_LIMIT commands, in order");
  assert.deepEqual(cut.recovered, { type: "recovered", since: 0, seq: 1000, complete: true, truncated: true, next_since: 50 });

  // Fewer missing than the limit: not truncated, no next_since.
  const short = await resume(small.url, c, { since: "960" });
  assert.deepEqual(short.commands, range(961, 1000));
  assert.deepEqual(short.recovered, { type: "recovered", since: 960, seq: 1000, complete: true, truncated: false });
  // Exactly the limit missing: everything was replayed, so not truncated.
  const exact = await resume(small.url, c, { since: "950" });
  assert.deepEqual(exact.commands, range(951, 1000));
  assert.equal(exact.recovered.truncated, false);
  assert.equal("next_since" in exact.recovered, false);

  // The limit counts commands matching the socket's filters; next_since is the last one replayed.
  const face = await resume(small.url, c, { since: "0", topics: "face" });
  const faceSeqs = range(1, 1000).filter((s) => topicOf(s) === "face");
  assert.deepEqual(face.commands, faceSeqs.slice(0, 50));
  assert.equal(face.recovered.truncated, true);
  assert.equal(face.recovered.next_since, faceSeqs[49]);
});

test("a resume reads at most 20 archive pages: a filter matching nothing stops there", async () => {
  const c = uniqueCharacter("pages");
  await publishRange(small.url, c, 1, 1000);
  // The archive moves pages of 25 seqs out of SQLite after each publish; it keeps the
  // newest 100, so it ends at seq 900. Until it is past seq 500 the read may still be
  // answered from SQLite whole.
  let r = null;
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    r = await resume(small.url, c, { since: "0", topics: "nothing.matches" });
    if (r.recovered.truncated) break;
    await sleep(250);
  }
  assert.equal(r.recovered.truncated, true, `the page bound cut the read: ${JSON.stringify(r.recovered)}`);
  assert.deepEqual(r.commands, []);
  // 20 pages of 25 seqs each, and not one more.
  assert.deepEqual(r.recovered, { type: "recovered", since: 0, seq: 1000, complete: true, truncated: true, next_since: 500 });
  // From next_since at most 16 archive pages are left (the archive stops at seq 900),
  // then SQLite: read to the end.
  const next = await resume(small.url, c, { since: "500", topics: "nothing.matches" });
  assert.deepEqual(next.recovered, { type: "recovered", since: 500, seq: 1000, complete: true, truncated: false });
});

/**
 * A client of public/client.mjs whose network can be switched off: while `offline`, every
 * connect attempt fails at once, so the client keeps retrying (with backoff) and misses
 * whatever is published meanwhile.
 */
function gatedClient(base, character, topics, options = {}) {
  const net = { offline: false, sockets: [], historyReads: 0, recovered: [], cmds: [], metas: [], gaps: [], errors: [], heldLive: 0 };
  class Gated extends WebSocket {
    constructor(url, protocols, options = {}) {
      if (net.offline) throw new Error("offline");
      super(url, protocols, { closeTimeout: 500, ...options });
      net.sockets.push(this);
    }
  }
  const countingFetch = (url, init) => {
    if (String(url).includes("/history?")) net.historyReads += 1;
    return fetch(url, init);
  };
  const h = clientSubscribe(character, {
    baseUrl: base, WebSocket: Gated, fetch: countingFetch, topics,
    backoff: { initialMs: 50, maxMs: 200 },
    ...options,
    // A live frame that arrives while the client is still behind the truncated
    // resume's seq must be held back until history has filled the hole.
    onFrame: (f) => {
      const r = net.recovered.at(-1);
      if ((f.type === "command" || f.type === "batch") && r?.truncated && net.handle.seq < r.seq) net.heldLive += 1;
    },
    onCommand: (cmd, meta) => { net.cmds.push(cmd.seq); net.metas.push(meta); },
    onRecovered: (r) => net.recovered.push(r),
    onGap: (g) => net.gaps.push(g),
    onError: (e) => net.errors.push(String(e?.message ?? e)),
  });
  clients.add(h);
  net.handle = h;
  net.goOffline = () => { net.offline = true; for (const s of net.sockets) s.terminate(); };
  return net;
}

async function until(pred, ms, what) {
  const end = Date.now() + ms;
  while (Date.now() < end) { if (pred()) return; await sleep(25); }
  throw new Error(`timed out waiting for ${what}`);
}

/**
 * Runs an absence: clients see `before` commands, lose their network while `absent` more
 * are published, come back while `during` more are published, and must end with every
 * seq exactly once, in order (per filter).
 */
async function absence(base, { before: nBefore, absent, during, options }, timeoutMs) {
  const c = uniqueCharacter("absent");
  const all = gatedClient(base, c, [">"], options);
  const face = gatedClient(base, c, ["face"], options);
  await until(() => all.handle.state === "open" && face.handle.state === "open", 20_000, "clients open");
  await publishRange(base, c, 1, nBefore);
  await until(() => all.cmds.length === nBefore, 20_000, "the first commands");

  all.goOffline(); face.goOffline();
  await until(() => all.handle.state !== "open" && face.handle.state !== "open", 10_000, "clients dropped");
  await publishRange(base, c, nBefore + 1, nBefore + absent);

  const resumed = [all.recovered.length, face.recovered.length];
  all.offline = false; face.offline = false;
  // Live commands come while the clients fill from history.
  await until(() => all.recovered.length > resumed[0] && face.recovered.length > resumed[1], 20_000, "the resumes");
  const last = nBefore + absent + during;
  await publishRange(base, c, nBefore + absent + 1, last);
  await until(() => all.cmds.at(-1) === last && face.cmds.at(-1) === last - (last % 2 === 0 ? 1 : 0), timeoutMs, `every command (all at ${all.cmds.at(-1)}, face at ${face.cmds.at(-1)})`);
  await sleep(300); // nothing more may follow

  assert.deepEqual(all.cmds, range(1, last), "every command exactly once, in seq order");
  assert.deepEqual(face.cmds, range(1, last).filter((s) => topicOf(s) === "face"), "every matching command exactly once, in seq order");
  for (const n of [all, face]) {
    assert.ok(n.recovered.some((r) => r.truncated === true), "the resume was truncated");
    assert.ok(n.historyReads >= 1, "history filled the rest");
    assert.deepEqual(n.gaps, [], "no gap reported");
    assert.deepEqual(n.errors.filter((e) => e !== "offline"), [], "no errors but the gate's own");
  }
  assert.ok(all.heldLive > 0, "live frames arrived during the fill (and were held)");
  return { all, face };
}

test("the JS client fills a truncated resume from history: every command once, in order", async () => {
  // Pages of 100 make the fill take several reads, so live frames arrive during it.
  const { all } = await absence(small.url, { before: 10, absent: 1000, during: 300, options: { historyPageSize: 100 } }, 60_000);
  // RESUME_LIMIT=50 replayed over the socket, the rest from history.
  assert.ok(all.metas.slice(10, 1010).every((m) => m.replay), "missed commands are marked replay");
});

test("default RESUME_LIMIT: 10,000 missed commands, resumed, filled and delivered once each", { timeout: 240_000 }, async () => {
  stock = await startServer({ runtime: "dev", name: "abuse-resume-default", vars: { AUTH_ENABLED: "false" } });
  const c = uniqueCharacter("ten-thousand");
  await publishRange(stock.url, c, 1, 10_000);
  const raw = await resume(stock.url, c, { since: "0" });
  assert.equal(raw.commands.length, 1000, "at most RESUME_LIMIT (1,000) frames in one turn");
  assert.deepEqual(raw.recovered, { type: "recovered", since: 0, seq: 10_000, complete: true, truncated: true, next_since: 1000 });

  const t0 = Date.now();
  const { all } = await absence(stock.url, { before: 10, absent: 10_000, during: 200 }, 120_000);
  const r = all.recovered.find((f) => f.truncated);
  assert.equal(r.next_since, 1010, "1,000 replayed after seq 10");
  console.log(`10,000-command absence: filled with ${all.historyReads} history reads, ${Date.now() - t0} ms for the whole absence`);
});
