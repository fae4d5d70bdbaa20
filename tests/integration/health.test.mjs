import { test } from "node:test";
import assert from "node:assert/strict";
import { http, assertError } from "./helpers.mjs";

test("GET /healthz answers 200 {status: ok}", async () => {
  const res = await http("GET", "/healthz");
  assert.equal(res.status, 200);
  assert.deepEqual(res.json, { status: "ok" });
  assert.match(res.headers.get("content-type"), /application\/json/);
});

test("an unknown path answers 404 with the contract's error body", async () => {
  for (const path of ["/nope", "/v1", "/v1/characters", "/v2/characters/alice/commands"]) {
    assertError(assert, await http("GET", path), 404, "not_found");
  }
});

test("GET / serves the browser page (static assets)", async () => {
  const res = await http("GET", "/");
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type"), /text\/html/);
  assert.match(res.text, /<title>Animation Gateway<\/title>/);
});

test("a known path with the wrong method answers 405", async () => {
  assertError(assert, await http("POST", "/healthz", { body: {} }), 405, "method_not_allowed");
});
