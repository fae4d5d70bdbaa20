// Failed authentication costs no KV write per request, and is limited per
// client address; publishes are limited per credential. Before, every
// 401/403 wrote one event-log key: 2,000 junk requests bought 2,000 billed
// KV writes and pushed real entries out of the window /v1/admin/logs scans.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer } from "../../scripts/server.mjs";
import { http } from "./helpers.mjs";
import { makeJwt, nowS } from "../integration/helpers.mjs";

const SECRET = `abuse-${Date.now()}`;
const KEY = "abuse-key";
let server = null;
before(async () => {
  server = await startServer({ runtime: "dev", name: "abuse-auth", vars: { AUTH_ENABLED: "true" }, secrets: { JWT_SECRET: SECRET, API_KEYS: KEY } });
});
after(async () => { await server?.stop(); });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const call = (method, path, headers = {}, body) => http(server.url, method, path, body, headers);
const admin = { "x-api-key": KEY };
const authEvents = async () => (await call("GET", "/v1/admin/logs?limit=1000", admin)).json.events
  .filter((e) => e.event === "auth_failure" || e.event === "auth_failures");
/** Runs `n` calls of `fn`, `width` at a time; their answers in order. */
async function many(n, width, fn) {
  const out = new Array(n);
  let next = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < n) { const i = next++; out[i] = await fn(i); }
  }));
  return out;
}

test("2,000 failed authentications write a handful of log keys, counted per minute; real entries stay visible", { timeout: 240_000 }, async () => {
  const c = `abuse-${Date.now().toString(36)}`;
  assert.equal((await call("POST", `/v1/characters/${c}/commands`, admin, { name: "smile" })).status, 200);
  const before = (await authEvents()).length;

  const startMinute = Math.floor(Date.now() / 60_000);
  const answers = await many(2000, 16, (i) => call("GET", i % 2 ? "/v1/admin/logs" : `/v1/characters/${c}/history`));
  // On a loaded machine the burst can cross a minute boundary: each minute it
  // touches gives one logged failure and one tally.
  const minutes = Math.floor(Date.now() / 60_000) - startMinute + 1;
  assert.ok(answers.every((a) => a.status === 401), "without an address every failure is a 401 (local clients share no budget)");
  // One more failure in the next minute makes the isolate write the tally.
  await sleep(60_000 - (Date.now() % 60_000) + 500);
  assert.equal((await call("GET", "/v1/admin/logs")).status, 401);
  let events = [];
  for (let i = 0; i < 40 && events.length - before < 2; i++) { await sleep(250); events = await authEvents(); }
  const added = events.length - before;
  assert.ok(added >= 2 && added <= 2 * minutes + 2, `auth events added: ${added} over ${minutes} minute(s) of failures (one key holds at most two)`);
  const counted = events.filter((e) => e.event === "auth_failures")
    .flatMap((e) => e.detail.counts).reduce((n, x) => n + x.count, 0);
  const samples = events.filter((e) => e.event === "auth_failure").length - before;
  assert.ok(counted + samples >= 2001 - 1, `every failure is accounted for: ${counted} counted + ${samples} logged`);
  const routes = new Set(events.filter((e) => e.event === "auth_failures").flatMap((e) => e.detail.counts.map((x) => x.route)));
  assert.ok(routes.has("history") && routes.has("admin.logs"), [...routes].join(","));
  // The character's own entries are still found.
  const own = (await call("GET", `/v1/admin/logs?character=${c}&limit=50`, admin)).json.events;
  assert.ok(own.some((e) => e.event === "publish"), JSON.stringify(own));
});

test("failed authentication is limited per client address: 429 rate_limited with Retry-After", { timeout: 120_000 }, async () => {
  const from = (ip) => ({ "cf-connecting-ip": ip });
  const answers = [];
  for (let i = 0; i < 70; i++) answers.push(await call("GET", "/v1/admin/subscriptions", from("198.51.100.9")));
  const statuses = answers.map((a) => a.status);
  assert.ok(statuses.slice(0, 50).every((s) => s === 401), statuses.join(","));
  const limited = answers.find((a) => a.status === 429);
  assert.ok(limited, `no 429 in ${statuses.join(",")}`);
  assert.equal(limited.json.error.code, "rate_limited");
  assert.equal(limited.headers.get("retry-after"), "60");
  // Another address, and valid credentials from the limited one, are served.
  assert.equal((await call("GET", "/v1/admin/subscriptions", from("198.51.100.10"))).status, 401);
  assert.equal((await call("GET", "/v1/admin/subscriptions", { ...from("198.51.100.9"), ...admin })).status, 200);
});

test("publishes are limited per credential: 429 rate_limited with Retry-After, other credentials unaffected", { timeout: 180_000 }, async () => {
  const token = (sub) => ({ authorization: `Bearer ${makeJwt({ sub, exp: nowS() + 600, role: "publisher" }, SECRET)}` });
  const loud = token("loud-publisher");
  const c = `abuse-pub-${Date.now().toString(36)}`;
  // The limiter counts in fixed 60 s windows: publish until the first
  // refusal (a run that spans two windows needs up to twice the limit).
  let accepted = 0;
  let refused = null;
  while (!refused && accepted < 13_000) {
    const batch = await many(100, 16, () => call("POST", `/v1/characters/${c}/commands`, loud, { name: "tick" }));
    accepted += batch.filter((a) => a.status === 200).length;
    refused = batch.find((a) => a.status === 429) ?? null;
    assert.ok(batch.every((a) => a.status === 200 || a.status === 429), batch.map((a) => a.status).join(","));
  }
  assert.ok(refused, `no refusal after ${accepted} publishes`);
  assert.ok(accepted >= 5_000, `refused after only ${accepted} (limit 6,000 a minute)`);
  assert.equal(refused.json.error.code, "rate_limited");
  assert.equal(refused.headers.get("retry-after"), "60");
  assert.equal((await call("POST", `/v1/characters/${c}/commands`, token("quiet-publisher"), { name: "tick" })).status, 200);
});
