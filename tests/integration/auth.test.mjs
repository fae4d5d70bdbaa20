// Auth on (the server `make test` starts with AUTH_ENABLED=true): the whole
// credential matrix on every endpoint kind, ?token= for browsers, rights on
// socket publishes, and token expiry closing the socket with 4001.
import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { makeJwt, nowS, tryUpgrade, sleep, track, WS_OPTIONS } from "./helpers.mjs";

const BASE = process.env.GATEWAY_AUTH_URL;
const SECRET = process.env.TEST_JWT_SECRET;
const KEYS = (process.env.TEST_API_KEYS ?? "").split(",");
const skip = BASE && SECRET ? false : "GATEWAY_AUTH_URL / TEST_JWT_SECRET not set (make test sets them)";
const WS = BASE?.replace(/^http/, "ws");
const run = `${process.pid}-${Date.now().toString(36)}`;
const CH = `auth-${run}`;
const OTHER = `other-${run}`;

const token = (claims, { secret = SECRET, alg = "HS256" } = {}) =>
  makeJwt({ sub: "user-1", exp: nowS() + 600, ...claims }, secret, alg);
const bearer = (t) => ({ authorization: `Bearer ${t}` });

async function call(method, path, { headers = {}, body } = {}) {
  const init = { method, headers: { ...headers } };
  if (body !== undefined) { init.body = JSON.stringify(body); init.headers["content-type"] = "application/json"; }
  const res = await fetch(BASE + path, init);
  const text = await res.text();
  let json = null; try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, json, text };
}

// Each endpoint kind: how to call it with some headers; returns the status.
const endpoints = {
  subscribe: async (headers) => (await tryUpgrade(`${WS}/v1/characters/${CH}/subscribe`, headers)).status,
  publish: async (headers) => (await call("POST", `/v1/characters/${CH}/commands`, { headers, body: { name: "wave" } })).status,
  broadcast: async (headers) => (await call("POST", "/v1/broadcast", { headers, body: { characters: [CH], name: "wave" } })).status,
  history: async (headers) => (await call("GET", `/v1/characters/${CH}/history`, { headers })).status,
  admin: async (headers) => (await call("GET", "/v1/admin/subscriptions", { headers })).status,
  say: async (headers) => (await call("POST", `/v1/characters/${CH}/say`, { headers, body: { text: "Hello there!" } })).status,
};
// The lowest role each kind needs.
const needs = { subscribe: "subscriber", publish: "publisher", broadcast: "publisher", history: "subscriber", admin: "admin", say: "publisher" };
const rank = { subscriber: 0, publisher: 1, admin: 2 };

const noneToken = () => makeJwt({ sub: "u", exp: nowS() + 600, role: "admin" }, "", "none");

test("every endpoint refuses missing, malformed, expired, unsigned and wrongly signed credentials with 401", { skip }, async () => {
  const bad = {
    "no credentials": {},
    garbled: bearer("abc.def"),
    "not bearer": { authorization: `Basic ${Buffer.from("a:b").toString("base64")}` },
    "bad signature": bearer(token({ role: "admin" }, { secret: "wrong-secret" })),
    expired: bearer(token({ role: "admin", exp: nowS() - 10 })),
    "nbf in the future": bearer(token({ role: "admin", nbf: nowS() + 300 })),
    "missing sub": bearer(makeJwt({ exp: nowS() + 600, role: "admin" }, SECRET)),
    "missing exp": bearer(makeJwt({ sub: "u", role: "admin" }, SECRET)),
    "alg none": bearer(noneToken()),
    HS512: bearer(token({ role: "admin" }, { alg: "HS512" })),
    HS384: bearer(token({ role: "admin" }, { alg: "HS384" })),
    "unknown role": bearer(token({ role: "root" })),
    "wrong API key": { "x-api-key": "not-a-key" },
    "API key prefix": { "x-api-key": KEYS[0].slice(0, -1) },
  };
  for (const [kind, callIt] of Object.entries(endpoints)) {
    for (const [name, headers] of Object.entries(bad)) {
      assert.equal(await callIt(headers), 401, `${kind} with ${name}`);
    }
  }
  const r = await call("POST", `/v1/characters/${CH}/commands`, { body: { name: "x" } });
  assert.deepEqual(Object.keys(r.json.error).sort(), ["code", "message"]);
  assert.equal(r.json.error.code, "unauthorized");
});

test("valid credentials without the right are 403; with it, 2xx (roles x endpoints x chars)", { skip }, async () => {
  for (const [kind, callIt] of Object.entries(endpoints)) {
    for (const role of ["subscriber", "publisher", "admin"]) {
      const allowed = rank[role] >= rank[needs[kind]];
      const status = await callIt(bearer(token({ role })));
      if (allowed) assert.ok(status === 101 || (status >= 200 && status < 300), `${kind} as ${role}: ${status}`);
      else assert.equal(status, 403, `${kind} as ${role}`);
    }
    // Character scoping: exact, prefix, and a list that does not name it.
    const okExact = await callIt(bearer(token({ role: "admin", chars: [CH] })));
    const okPrefix = await callIt(bearer(token({ role: "admin", chars: ["auth-*"] })));
    const notMine = await callIt(bearer(token({ role: "admin", chars: [OTHER, "zzz-*"] })));
    if (kind === "admin") {
      // The cross-character listing needs a token that is not limited to some characters.
      assert.equal(okExact, 403, "admin listing with a character-limited token");
    } else {
      assert.ok(okExact === 101 || okExact < 300, `${kind} exact: ${okExact}`);
      assert.ok(okPrefix === 101 || okPrefix < 300, `${kind} prefix: ${okPrefix}`);
    }
    assert.equal(notMine, 403, `${kind} for a character outside chars`);
    // Each API key grants admin.
    for (const key of KEYS) {
      const s = await callIt({ "x-api-key": key });
      assert.ok(s === 101 || (s >= 200 && s < 300), `${kind} with API key: ${s}`);
    }
  }
});

test("browsers may pass the token as ?token= on the subscribe URL", { skip }, async () => {
  const good = await tryUpgrade(`${WS}/v1/characters/${CH}/subscribe?token=${token({})}`);
  assert.equal(good.status, 101);
  const bad = await tryUpgrade(`${WS}/v1/characters/${CH}/subscribe?token=${token({}, { secret: "nope" })}`);
  assert.equal(bad.status, 401);
  assert.equal(bad.body.error.code, "unauthorized");
  const outside = await tryUpgrade(`${WS}/v1/characters/${OTHER}/subscribe?token=${token({ chars: [CH] })}`);
  assert.equal(outside.status, 403);
  // ?token= is for subscribe only.
  const r = await call("GET", `/v1/characters/${CH}/history?token=${token({})}`);
  assert.equal(r.status, 401);
});

// The socket's record (its attachment) must fit the runtime's 2 KiB across
// hibernation; a client whose data cannot fit is refused before any socket
// exists, with the contract's 400, and one at the documented bound is served.
test("a token whose sub cannot be kept with the socket is refused 400 before the upgrade", { skip }, async () => {
  const listing = async () => (await call("GET", `/v1/admin/characters/${CH}-long/subscriptions`, { headers: { "x-api-key": KEYS[0] } })).json;
  const tooLong = await tryUpgrade(`${WS}/v1/characters/${CH}-long/subscribe`, bearer(token({ sub: "u".repeat(4000) })));
  assert.equal(tooLong.status, 400, JSON.stringify(tooLong.body));
  assert.equal(tooLong.body.error.code, "bad_request");
  assert.match(tooLong.body.error.message, /user/);
  assert.equal((await listing()).subscribers.length, 0, "no socket was accepted");
  // 256 bytes (MAX_USER_BYTES), non-ASCII included, always fits.
  const atBound = "é".repeat(128);
  const ok = await open(`${WS}/v1/characters/${CH}-long/subscribe`, bearer(token({ sub: atBound })));
  await until(() => ok.frames.length > 0, 5000, "welcome");
  const subs = (await listing()).subscribers;
  assert.equal(subs.length, 1);
  assert.equal(subs[0].user, atBound);
  ok.ws.close();
});

function open(url, headers) {
  const ws = track(new WebSocket(url, { headers, ...WS_OPTIONS }));
  const c = { ws, frames: [], closed: null };
  ws.on("message", (d) => c.frames.push(JSON.parse(d.toString())));
  ws.on("close", (code) => { c.closed = code; });
  return new Promise((resolve, reject) => { ws.once("open", () => resolve(c)); ws.once("unexpected-response", (_q, r) => reject(new Error(`status ${r.statusCode}`))); });
}
async function until(pred, ms = 5000, what = "condition") {
  const end = Date.now() + ms;
  while (Date.now() < end) { if (pred()) return; await sleep(20); }
  throw new Error(`timed out waiting for ${what}`);
}

test("a subscriber-only socket may not publish; its publish reaches nobody", { skip }, async () => {
  const c = `frames-${run}`;
  const sub = await open(`${WS}/v1/characters/${c}/subscribe`, bearer(token({ role: "subscriber" })));
  const watcher = await open(`${WS}/v1/characters/${c}/subscribe`, bearer(token({ role: "publisher" })));
  await until(() => sub.frames.length && watcher.frames.length);
  sub.ws.send(JSON.stringify({ type: "publish", ref: "no", name: "wave" }));
  await until(() => sub.frames.some((f) => f.type === "error"));
  const err = sub.frames.find((f) => f.type === "error");
  assert.equal(err.code, "forbidden");
  assert.equal(err.ref, "no");
  watcher.ws.send(JSON.stringify({ type: "publish", ref: "yes", name: "nod" }));
  await until(() => watcher.frames.some((f) => f.type === "published"));
  await until(() => sub.frames.some((f) => f.type === "command"));
  await sleep(300);
  const names = (s) => s.frames.filter((f) => f.type === "command").map((f) => f.name);
  assert.deepEqual(names(sub), ["nod"]);
  assert.deepEqual(names(watcher), ["nod"]);
  const h = await call("GET", `/v1/characters/${c}/history`, { headers: { "x-api-key": KEYS[0] } });
  assert.deepEqual(h.json.commands.map((f) => f.name), ["nod"]);
  sub.ws.close(); watcher.ws.close();
});

test("a socket whose token expires is closed with 4001 at expiry", { skip }, async () => {
  const c = `expiry-${run}`;
  const exp = nowS() + 3;
  const s = await open(`${WS}/v1/characters/${c}/subscribe?token=${token({ exp })}`);
  const keep = await open(`${WS}/v1/characters/${c}/subscribe`, bearer(token({})));
  await until(() => s.closed !== null, 9000, "4001 close");
  assert.equal(s.closed, 4001);
  const closedAt = Date.now() / 1000;
  assert.ok(closedAt >= exp - 0.5 && closedAt < exp + 4, `closed at ${closedAt}, exp ${exp}`);
  assert.equal(keep.closed, null, "a socket with a later expiry stays open");
  keep.ws.close();
});

test("history archived to KV beyond HISTORY_LIMIT: resume and history read across both, nothing lost or duplicated", { skip }, async () => {
  // This server runs with HISTORY_LIMIT=10 (pages of 2 seqs).
  const c = `archive-${run}`;
  const admin = { "x-api-key": KEYS[0] };
  const first = await open(`${WS}/v1/characters/${c}/subscribe?topics=face,body.*`, admin);
  await until(() => first.frames.length);
  const epoch = first.frames[0].epoch;
  first.ws.close();
  const topics = ["face", "body.arms", "legs"];
  for (let i = 1; i <= 60; i++) {
    const r = await call("POST", `/v1/characters/${c}/commands`, { headers: admin, body: { topic: topics[i % 3], name: "n", params: { i } } });
    assert.equal(r.status, 200, r.text);
  }
  await sleep(500); // let the archive move pages
  // One request reads at most 20 archive pages (of 2 seqs with HISTORY_LIMIT=10): page on.
  const seqs = [];
  for (let since = 0, i = 0; since !== undefined && i < 10; i++) {
    const h = await call("GET", `/v1/characters/${c}/history?limit=1000&since=${since}`, { headers: admin });
    assert.equal(h.json.complete, true, `complete from ${since}`);
    seqs.push(...h.json.commands.map((f) => f.seq));
    since = h.json.next_since;
  }
  assert.deepEqual(seqs, Array.from({ length: 60 }, (_, i) => i + 1), "history reads KV pages then SQLite");
  const mid = await call("GET", `/v1/characters/${c}/history?since=7&limit=5&topics=face`, { headers: admin });
  assert.deepEqual(mid.json.commands.map((f) => f.params.i), [9, 12, 15, 18, 21]);
  const back = await open(`${WS}/v1/characters/${c}/subscribe?topics=face,body.*&since=3&epoch=${epoch}`, admin);
  await until(() => back.frames.some((f) => f.type === "recovered"), 8000, "recovered");
  const rec = back.frames.find((f) => f.type === "recovered");
  assert.deepEqual({ ...rec, next_since: undefined, truncated: undefined }, { type: "recovered", since: 3, seq: 60, complete: true, next_since: undefined, truncated: undefined });
  const want = [];
  for (let i = 4; i <= 60; i++) if (topics[i % 3] !== "legs") want.push(i);
  const replayed = back.frames.filter((f) => f.type === "command").map((f) => f.seq);
  if (rec.truncated) {
    // A resume reads at most 20 archive pages (of 2 seqs here): once the archive is past
    // seq 42 the replay stops there, and history continues it.
    assert.equal(rec.next_since, 42);
    const rest = await call("GET", `/v1/characters/${c}/history?since=42&limit=1000&topics=face,body.*`, { headers: admin });
    replayed.push(...rest.json.commands.map((f) => f.seq));
  } else {
    assert.equal(rec.truncated, false);
    assert.equal("next_since" in rec, false);
  }
  assert.deepEqual(replayed, want);
  back.ws.close();
});
