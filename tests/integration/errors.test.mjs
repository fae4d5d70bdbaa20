// Every contract error of the publish, broadcast, subscribe and history
// endpoints, with its status and body.
import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { http, subscribe, uniqueCharacter, assertError, BASE, WS_BASE } from "./helpers.mjs";

const cmdPath = (c) => `/v1/characters/${c}/commands`;

test("publish: malformed JSON and wrong field types are 400", async () => {
  const c = uniqueCharacter("err");
  const bad = [
    "{not json",
    "[]",
    "42",
    "null",
    JSON.stringify({}),
    JSON.stringify({ name: 5 }),
    JSON.stringify({ name: "" }),
    JSON.stringify({ name: "has space" }),
    JSON.stringify({ name: "x".repeat(65) }),
    JSON.stringify({ name: "ok", topic: "Face" }),
    JSON.stringify({ name: "ok", topic: "a.b.c.d.e" }),
    JSON.stringify({ name: "ok", topic: "face.*" }),
    JSON.stringify({ name: "ok", topic: 7 }),
    JSON.stringify({ name: "ok", params: [1] }),
    JSON.stringify({ name: "ok", params: "x" }),
    JSON.stringify({ name: "ok", duration_ms: -1 }),
    JSON.stringify({ name: "ok", duration_ms: 600001 }),
    JSON.stringify({ name: "ok", duration_ms: 1.5 }),
    JSON.stringify({ name: "ok", duration_ms: "100" }),
    JSON.stringify({ name: "ok", id: "" }),
    JSON.stringify({ name: "ok", id: "x".repeat(65) }),
    JSON.stringify({ name: "ok", id: 3 }),
    JSON.stringify({ commands: [] }),
    JSON.stringify({ commands: "x" }),
    JSON.stringify({ commands: [{ name: "ok" }, { name: 1 }] }),
  ];
  for (const raw of bad) {
    assertError(assert, await http("POST", cmdPath(c), { raw, headers: { "content-type": "application/json" } }), 400, "bad_request");
  }
  const h = await http("GET", `/v1/characters/${c}/history`);
  assert.deepEqual(h.json.commands, [], "nothing invalid was stored, not even half a batch");
});

test("invalid character names are 400 on every endpoint", async () => {
  for (const name of ["bad.name", "x".repeat(65), "sp%20ace", "%C3%A9"]) {
    assertError(assert, await http("POST", cmdPath(name), { body: { name: "smile" } }), 400, "bad_request");
    assertError(assert, await http("GET", `/v1/characters/${name}/history`), 400, "bad_request");
    assertError(assert, await http("GET", `/v1/characters/${name}/subscribe`), 400, "bad_request");
  }
});

test("oversize bodies, commands and batches are 413", async () => {
  const c = uniqueCharacter("big");
  const body = JSON.stringify({ name: "x", params: { pad: "y".repeat(65 * 1024) } });
  assertError(assert, await http("POST", cmdPath(c), { raw: body, headers: { "content-type": "application/json" } }), 413, "payload_too_large");
  assertError(assert, await http("POST", cmdPath(c), { body: { name: "x", params: { pad: "y".repeat(17 * 1024) } } }), 413, "payload_too_large");
  const many = Array.from({ length: 101 }, () => ({ name: "x" }));
  assertError(assert, await http("POST", cmdPath(c), { body: { commands: many } }), 413, "payload_too_large");
  assertError(assert, await http("POST", "/v1/broadcast", { body: { characters: Array.from({ length: 101 }, (_, i) => `c${i}`), name: "x" } }), 413, "payload_too_large");
  const exactly = await http("POST", cmdPath(c), { body: { commands: Array.from({ length: 100 }, () => ({ name: "x" })) } });
  assert.equal(exactly.status, 200, "100 commands are allowed");
});

// Big ones are refused with 413 as soon as they pass 64 KiB, before the upload
// ends: tests/abuse/bodies.test.mjs checks that, on a server of its own.
test("bodies without a declared length (chunked) are measured: small ones publish", async () => {
  const c = uniqueCharacter("chunked");
  // A stream body makes fetch send Transfer-Encoding: chunked, no Content-Length.
  const chunked = (text, pieces) => {
    const bytes = new TextEncoder().encode(text);
    const step = Math.ceil(bytes.length / pieces);
    return new ReadableStream({
      start(ctl) {
        for (let i = 0; i < bytes.length; i += step) ctl.enqueue(bytes.slice(i, i + step));
        ctl.close();
      },
    });
  };
  const post = async (text, pieces) => {
    const res = await fetch(BASE + cmdPath(c), {
      method: "POST", headers: { "content-type": "application/json" }, body: chunked(text, pieces), duplex: "half",
    });
    const body = await res.text();
    let json = null;
    try { json = JSON.parse(body); } catch { /* not JSON */ }
    return { status: res.status, json, text: body };
  };
  const ok = await post(JSON.stringify({ topic: "face", name: "smile", params: { via: "chunks" } }), 3);
  assert.equal(ok.status, 200, ok.text);
  assert.deepEqual(ok.json.seqs, [1]);
  const history = await http("GET", `/v1/characters/${c}/history`);
  assert.equal(history.status, 200);
  assert.deepEqual(history.json.commands.map((x) => [x.seq, x.name, x.params.via]), [[1, "smile", "chunks"]]);
});

test("broadcast: bad bodies are 400", async () => {
  for (const body of [{ name: "x" }, { characters: [], name: "x" }, { characters: "a", name: "x" }, { characters: ["bad name"], name: "x" }, { characters: ["a"] }, { characters: [1], name: "x" }]) {
    assertError(assert, await http("POST", "/v1/broadcast", { body }), 400, "bad_request");
  }
});

test("subscribe without an upgrade is 426; bad query values are 400 and open no socket", async () => {
  const c = uniqueCharacter("sub-err");
  assertError(assert, await http("GET", `/v1/characters/${c}/subscribe`), 426, "upgrade_required");
  for (const q of ["topics=Face", "topics=a,,b", "since=x", "since=-3", "presence=maybe", "topics=a.>.b"]) {
    const res = await new Promise((resolve) => {
      const ws = new WebSocket(`${WS_BASE}/v1/characters/${c}/subscribe?${q}`);
      ws.on("unexpected-response", (_req, r) => {
        let b = ""; r.on("data", (d) => { b += d; }); r.on("end", () => resolve({ status: r.statusCode, body: JSON.parse(b) }));
      });
      ws.on("open", () => { ws.close(); resolve({ status: 101 }); });
      ws.on("error", () => {});
    });
    assert.equal(res.status, 400, q);
    assert.equal(res.body.error.code, "bad_request", q);
  }
});

test("wrong methods are 405", async () => {
  const c = uniqueCharacter("method");
  assertError(assert, await http("GET", cmdPath(c)), 405, "method_not_allowed");
  assertError(assert, await http("PUT", cmdPath(c), { body: {} }), 405, "method_not_allowed");
  assertError(assert, await http("POST", `/v1/characters/${c}/history`, { body: {} }), 405, "method_not_allowed");
  assertError(assert, await http("POST", `/v1/characters/${c}/subscribe`, { body: {} }), 405, "method_not_allowed");
  assertError(assert, await http("GET", "/v1/broadcast"), 405, "method_not_allowed");
  assertError(assert, await http("DELETE", "/healthz"), 405, "method_not_allowed");
  // Methods the runtime library does not know must not be served as GET.
  assertError(assert, await http("QUERY", "/healthz"), 405, "method_not_allowed");
  assertError(assert, await http("PROPFIND", `/v1/characters/${c}/history`), 405, "method_not_allowed");
  assertError(assert, await http("QUERY", "/v1/admin/subscriptions"), 405, "method_not_allowed");
});

test("the service is still healthy after all of that", async () => {
  const c = uniqueCharacter("after");
  const s = await subscribe(c);
  const r = await http("POST", cmdPath(c), { body: { name: "ok" } });
  assert.equal(r.status, 200);
  await s.waitFor((fs) => fs.find((f) => f.type === "command"));
  await s.close();
  assert.equal((await fetch(BASE + "/healthz")).status, 200);
});
