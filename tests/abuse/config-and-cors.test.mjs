// Configuration cannot open a deployment by accident, and browsers on other
// origins get exactly what CORS_ORIGINS and ALLOWED_ORIGINS allow, through
// real `wrangler dev` servers:
// * AUTH_ENABLED other than exactly true/false refuses every request with 500
//   and names the setting in the log (never silently open);
// * the dev config as shipped has auth on; the local .dev.vars (as made from
//   .dev.vars.example by `make dev`) turns it off;
// * preflight OPTIONS, CORS headers on answers and errors, HEAD on GET routes,
//   and the Origin check of WebSocket upgrades (403 before any socket).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { startServer } from "../../scripts/server.mjs";
import { makeJwt, nowS, tryUpgrade, uniqueCharacter } from "../integration/helpers.mjs";
import { http, progress, until } from "./helpers.mjs";

const SECRET = `abuse-cors-${process.pid}-${Date.now()}`;
const KEY = `key-${process.pid}`;
const APP = "https://app.example";
const EVIL = "https://evil.example";
const servers = [];
const start = async (o) => { const s = await startServer({ onProgress: progress, ...o }); servers.push(s); return s; };
after(() => Promise.all(servers.map((s) => s.stop())));

const publish = (base, c, headers = {}) => http(base, "POST", `/v1/characters/${c}/commands`, { topic: "face", name: "smile" }, headers);

for (const bad of ["TRUE", "1"]) {
  test(`AUTH_ENABLED=${bad} refuses every request and says why in the log`, async () => {
    // /healthz is refused too, so the server counts as up once a static file is served.
    const s = await start({ name: "abuse-badauth", vars: { AUTH_ENABLED: bad }, readyPath: "/client.mjs" });
    for (const [method, path, body] of [
      ["GET", "/healthz"],
      ["POST", `/v1/characters/${uniqueCharacter("cfg")}/commands`, { name: "smile" }],
      ["GET", "/v1/admin/subscriptions"],
      ["GET", `/v1/characters/${uniqueCharacter("cfg")}/history`],
    ]) {
      const r = await http(s.url, method, path, body);
      assert.equal(r.status, 500, `${method} ${path}: ${r.text}`);
      assert.equal(r.json?.error?.code, "internal");
      assert.match(r.json.error.message, /misconfigured/);
    }
    const ws = await tryUpgrade(`${s.url.replace(/^http/, "ws")}/v1/characters/${uniqueCharacter("cfg")}/subscribe`);
    assert.equal(ws.status, 500, "no socket on a misconfigured gateway");
    // The runtime's console reaches wrangler's log a little later.
    const said = new RegExp(`configuration error in AUTH_ENABLED: must be "true" or "false", got "${bad}"`);
    await until(() => said.test(s.logTail(400)), 10_000, "the configuration error in the log");
    await s.stop();
  });
}

test("the dev config as shipped has auth on; .dev.vars.example turns it off", async () => {
  assert.match(readFileSync(".dev.vars.example", "utf8"), /^AUTH_ENABLED=false$/m);
  const [shipped, local] = await Promise.all([
    // No AUTH_ENABLED and no secrets given: the config's own values.
    start({ name: "abuse-shipped" }),
    // As `make dev` runs it: the example file as the local secrets file.
    start({ name: "abuse-devvars", args: ["--env-file", ".dev.vars.example"] }),
  ]);
  const c = uniqueCharacter("cfg");
  let r = await publish(shipped.url, c);
  assert.equal(r.status, 401, r.text);
  r = await http(shipped.url, "GET", "/v1/admin/subscriptions");
  assert.equal(r.status, 401, r.text);
  r = await http(shipped.url, "GET", "/healthz");
  assert.equal(r.status, 200);
  r = await publish(local.url, c);
  assert.equal(r.status, 200, r.text);
  // The example's secrets are in force where auth is turned on locally.
  r = await http(local.url, "GET", "/v1/admin/subscriptions", undefined, { "x-api-key": "dev-key-1" });
  assert.equal(r.status, 200, r.text);
});

let cors;
let star;
before(async () => {
  [cors, star] = await Promise.all([
    start({
      name: "abuse-cors",
      vars: { AUTH_ENABLED: "true", CORS_ORIGINS: `${APP}, http://localhost:5173`, ALLOWED_ORIGINS: APP },
      secrets: { JWT_SECRET: SECRET, API_KEYS: KEY },
    }),
    start({ name: "abuse-cors-star", vars: { AUTH_ENABLED: "false", CORS_ORIGINS: "*" } }),
  ]);
});
const publisher = () => ({ authorization: `Bearer ${makeJwt({ sub: "p", role: "publisher", exp: nowS() + 600 }, SECRET)}` });

test("preflight OPTIONS: allowed origins get the CORS answer, others only Allow", async () => {
  const c = uniqueCharacter("cors");
  const pre = (path, origin) => fetch(cors.url + path, {
    method: "OPTIONS",
    headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "authorization, content-type" },
  });
  let r = await pre(`/v1/characters/${c}/commands`, APP);
  assert.equal(r.status, 204);
  assert.equal(r.headers.get("access-control-allow-origin"), APP);
  assert.equal(r.headers.get("access-control-allow-methods"), "POST, OPTIONS");
  assert.equal(r.headers.get("access-control-allow-headers"), "Authorization, Content-Type, X-API-Key");
  assert.equal(r.headers.get("access-control-max-age"), "600");
  assert.equal(r.headers.get("allow"), "POST, OPTIONS");
  assert.match(r.headers.get("vary") ?? "", /Origin/);
  // No credentials needed, on admin paths too, and names are not checked there.
  r = await pre("/v1/admin/subscriptions", "http://localhost:5173");
  assert.equal(r.status, 204);
  assert.equal(r.headers.get("access-control-allow-origin"), "http://localhost:5173");
  assert.equal(r.headers.get("allow"), "GET, HEAD, OPTIONS");
  r = await pre("/v1/characters/bad.name/history", APP);
  assert.equal(r.status, 204);
  // Another origin: Allow, no CORS headers (the browser stops there).
  r = await pre(`/v1/characters/${c}/commands`, EVIL);
  assert.equal(r.status, 204);
  assert.equal(r.headers.get("access-control-allow-origin"), null);
  assert.equal(r.headers.get("access-control-allow-methods"), null);
  assert.equal(r.headers.get("allow"), "POST, OPTIONS");
  r = await pre("/nope", APP);
  assert.equal(r.status, 404);
  // Nothing was published by the preflights.
  const h = await http(cors.url, "GET", `/v1/characters/${c}/history`, undefined, publisher());
  assert.equal(h.status, 200, h.text);
  assert.equal(h.json.commands.length, 0);
});

test("answers and errors carry CORS headers for allowed origins only", async () => {
  const c = uniqueCharacter("cors");
  const expect = (r, origin, what) => {
    assert.equal(r.headers.get("access-control-allow-origin"), origin, what);
    if (origin) assert.equal(r.headers.get("access-control-expose-headers"), "Retry-After, Allow", what);
  };
  let r = await publish(cors.url, c, { origin: APP, ...publisher() });
  assert.equal(r.status, 200, r.text);
  expect(r, APP, "200 from the object");
  r = await publish(cors.url, c, { origin: APP });
  assert.equal(r.status, 401);
  expect(r, APP, "401");
  r = await http(cors.url, "GET", `/v1/characters/${c}/commands`, undefined, { origin: APP });
  assert.equal(r.status, 405);
  expect(r, APP, "405");
  r = await http(cors.url, "POST", `/v1/characters/bad.name/commands`, {}, { origin: APP, ...publisher() });
  assert.equal(r.status, 400);
  expect(r, APP, "400");
  r = await http(cors.url, "GET", "/nope", undefined, { origin: APP });
  assert.equal(r.status, 404);
  expect(r, APP, "404");
  r = await publish(cors.url, c, { origin: EVIL, ...publisher() });
  assert.equal(r.status, 200, "CORS is the browser's check: the request itself is served");
  expect(r, null, "another origin");
  r = await publish(cors.url, c, publisher());
  expect(r, null, "no Origin");
  // `*`: any origin, answered with `*`.
  r = await publish(star.url, c, { origin: EVIL });
  assert.equal(r.status, 200, r.text);
  expect(r, "*", "CORS_ORIGINS=*");
});

test("HEAD is served wherever GET is: same status and headers, no body", async () => {
  const c = uniqueCharacter("head");
  await publish(cors.url, c, publisher());
  for (const [path, headers, status] of [
    ["/healthz", {}, 200],
    [`/v1/characters/${c}/history`, publisher(), 200],
    [`/v1/characters/${c}/history`, {}, 401],
    [`/v1/characters/${c}/history?limit=0`, publisher(), 400],
    ["/v1/admin/subscriptions", { "x-api-key": KEY }, 200],
    [`/v1/admin/characters/${c}/subscriptions`, { "x-api-key": KEY }, 200],
    ["/v1/admin/logs?limit=1", { "x-api-key": KEY }, 200],
    [`/v1/characters/${c}/subscribe`, publisher(), 426],
  ]) {
    const r = await fetch(cors.url + path, { method: "HEAD", headers: { origin: APP, ...headers } });
    assert.equal(r.status, status, `HEAD ${path}`);
    assert.equal((await r.arrayBuffer()).byteLength, 0, `HEAD ${path}: no body`);
    assert.equal(r.headers.get("access-control-allow-origin"), APP, `HEAD ${path}`);
    if (status === 200) assert.match(r.headers.get("content-type") ?? "", /application\/json/);
  }
  const r = await fetch(`${cors.url}/v1/characters/${c}/commands`, { method: "HEAD" });
  assert.equal(r.status, 405);
  assert.equal(r.headers.get("allow"), "POST, OPTIONS");
});

test("WebSocket upgrades: an Origin outside ALLOWED_ORIGINS is refused with 403 before any socket", async () => {
  const c = uniqueCharacter("origin");
  const url = `${cors.url.replace(/^http/, "ws")}/v1/characters/${c}/subscribe?token=${makeJwt({ sub: "v", role: "subscriber", exp: nowS() + 600 }, SECRET)}`;
  const refused = await tryUpgrade(url, { origin: EVIL });
  assert.equal(refused.status, 403);
  assert.equal(refused.body?.error?.code, "forbidden");
  assert.match(refused.body.error.message, /ALLOWED_ORIGINS/);
  // Refused before credentials are looked at: no token, same answer.
  const noToken = await tryUpgrade(url.replace(/\?token=.*/, ""), { origin: EVIL });
  assert.equal(noToken.status, 403);
  // Nothing of the refused attempts reached the object.
  const subs = await http(cors.url, "GET", `/v1/admin/characters/${c}/subscriptions`, undefined, { "x-api-key": KEY });
  assert.equal(subs.status, 200, subs.text);
  assert.deepEqual(subs.json.subscribers, []);
  const other = url.replace(`/characters/${c}/`, `/characters/${c}-ok/`);
  assert.equal((await tryUpgrade(other, { origin: APP })).status, 101);
  assert.equal((await tryUpgrade(other, { origin: APP.toUpperCase() })).status, 101, "origins compare without case");
  assert.equal((await tryUpgrade(other)).status, 101, "no Origin: not a browser, credentials decide");
});
