// Rights withdrawn while connected: an admin revokes a user (JWT `sub`);
// every socket of that user, on every character, is closed with 4003, other
// users' sockets stay, and the user's tokens are refused until the given
// time, then accepted again.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { startServer } from "../../scripts/server.mjs";
import { http, progress } from "./helpers.mjs";
import { makeJwt, nowS } from "../integration/helpers.mjs";

const SECRET = `revoke-${Date.now()}`;
const KEY = "revoke-key";
let server = null;
const sockets = [];
before(async () => {
  server = await startServer({ runtime: "dev", name: "abuse-revoke", vars: { AUTH_ENABLED: "true" }, secrets: { JWT_SECRET: SECRET, API_KEYS: KEY } });
});
after(async () => { for (const ws of sockets) ws.terminate(); await server?.stop(); });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const token = (sub, role = "subscriber") => makeJwt({ sub, exp: nowS() + 600, role }, SECRET);

const call = (method, path, headers = {}, body) => http(server.url, method, path, body, headers);

function open(character, sub) {
  return openAt(`/v1/characters/${character}/subscribe?token=${token(sub)}`);
}
/** A scene socket on `characters` (comma-separated). */
const openScene = (characters, sub) => openAt(`/v1/subscribe?characters=${characters}&token=${token(sub)}`);

function openAt(path) {
  const ws = new WebSocket(`${server.url.replace(/^http/, "ws")}${path}`, { closeTimeout: 500 });
  sockets.push(ws);
  const s = { ws, frames: [], closed: null, status: null };
  ws.on("message", (d) => s.frames.push(JSON.parse(d.toString())));
  ws.on("close", (code) => { s.closed = code; });
  s.ready = new Promise((resolve) => {
    ws.once("message", () => resolve(101));
    ws.once("unexpected-response", (_q, r) => { s.status = r.statusCode; resolve(r.statusCode); });
    ws.once("error", () => resolve(s.status ?? 0));
  });
  return s;
}
async function until(pred, ms, what) {
  const end = Date.now() + ms;
  while (Date.now() < end) { if (await pred()) return; await sleep(50); }
  assert.fail(`timed out: ${what}`);
}

test("revoking a user closes its sockets on every character with 4003 and refuses its tokens until `until`", { timeout: 120_000 }, async () => {
  const run = Date.now().toString(36);
  const [a, b] = [`rev-a-${run}`, `rev-b-${run}`];
  const u1a = open(a, "u1"), u1b = open(b, "u1"), u2a = open(a, "u2");
  assert.deepEqual(await Promise.all([u1a.ready, u1b.ready, u2a.ready]), [101, 101, 101]);
  progress("revocation: three sockets open");
  const admin = { "x-api-key": KEY };
  // The registry lists both characters (reports are coalesced over 200 ms).
  await until(async () => {
    const list = (await call("GET", "/v1/admin/subscriptions", admin)).json.characters.map((c) => c.character);
    return list.includes(a) && list.includes(b);
  }, 5_000, "both characters listed");

  // Only admins, with a valid body.
  const publisher = { authorization: `Bearer ${token("p1", "publisher")}` };
  assert.equal((await call("POST", "/v1/admin/revocations", publisher, { user: "u1" })).status, 403);
  assert.equal((await call("POST", "/v1/admin/revocations", admin, { user: "" })).status, 400);
  assert.equal((await call("POST", "/v1/admin/revocations", admin, { user: "u1", for_ms: 10 })).status, 400);

  progress("revocation: listed; revoking u1");
  const asked = Date.now();
  const r = await call("POST", "/v1/admin/revocations", admin, { user: "u1", for_ms: 6_000 });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  assert.equal(r.json.closed, 2);
  assert.equal(r.json.characters, 2);
  const lift = r.json.until;
  assert.ok(lift >= asked + 6_000 && lift <= Date.now() + 6_000, `until ${lift}`);
  await until(() => u1a.closed && u1b.closed, 5_000, "u1's sockets closed");
  assert.deepEqual([u1a.closed, u1b.closed], [4003, 4003]);
  assert.equal(u2a.closed, null, "another user's socket stays");
  assert.equal((await call("POST", `/v1/characters/${a}/commands`, publisher, { name: "wave" })).status, 200);
  await until(() => u2a.frames.some((f) => f.type === "command"), 5_000, "u2 still served");

  progress("revocation: u1 closed with 4003; u2 served");
  // Refused until `until`: a new socket (before the upgrade) and HTTP alike.
  const again = open(a, "u1");
  assert.equal(await again.ready, 401);
  const h = await call("GET", `/v1/characters/${a}/history`, { authorization: `Bearer ${token("u1")}` });
  assert.equal(h.status, 401);
  assert.match(h.json.error.message, /withdrawn/);
  progress("revocation: u1 refused; waiting for `until`");
  // After `until`, the user is served again.
  await sleep(Math.max(0, lift - Date.now()) + 200);
  const back = open(a, "u1");
  assert.equal(await back.ready, 101);
});

test("a revocation reaches scene sockets (4003), counted once however many characters the scene has", { timeout: 60_000 }, async () => {
  const run = Date.now().toString(36);
  const [a, b] = [`rsc-a-${run}`, `rsc-b-${run}`];
  // Scene sockets only: no socket on either character's own object.
  const gone = openScene(`${a},${b}`, "u3"), stays = openScene(`${a},${b}`, "u4");
  assert.deepEqual(await Promise.all([gone.ready, stays.ready]), [101, 101]);
  const admin = { "x-api-key": KEY };
  // The scene object reports its sockets under each character.
  await until(async () => {
    const list = (await call("GET", "/v1/admin/subscriptions", admin)).json.characters;
    return [a, b].every((c) => list.find((e) => e.character === c)?.subscribers === 2);
  }, 5_000, "both characters listed with the scene's sockets");
  const r = await call("POST", "/v1/admin/revocations", admin, { user: "u3", for_ms: 2_000 });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  assert.equal(r.json.closed, 1);
  assert.ok(r.json.characters >= 2);
  await until(() => gone.closed, 5_000, "u3's scene socket closed");
  assert.equal(gone.closed, 4003);
  assert.equal(stays.closed, null, "another user's scene socket stays");
  // Refused before the upgrade while revoked.
  assert.equal(await openScene(`${a},${b}`, "u3").ready, 401);
});
