// Clients that go away in the middle of their upload: nothing of the partial
// body is stored, the server logs it as the client's doing (never as an
// internal error) and keeps answering everyone else. The log checks run when
// the runner shares the server's log (scripts/test.sh sets GATEWAY_LOG).
import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { openSync, readSync, closeSync, statSync } from "node:fs";
import { http, subscribe, uniqueCharacter, sleep, BASE } from "./helpers.mjs";

const LOG = process.env.GATEWAY_LOG;
// Client faults are logged as warnings, which a quieter log level hides.
const WARNINGS_SHOWN = !["error", "none"].includes(process.env.DEV_LOG_LEVEL ?? "warn");

/**
 * Sends a request head and part of its body (5 of a declared 5000 bytes, or
 * one chunk of a chunked body), then closes the connection while the server
 * waits for the rest.
 */
function abortUpload(path, { chunked = false } = {}) {
  const url = new URL(BASE);
  return new Promise((resolve, reject) => {
    const sock = net.connect(Number(url.port), url.hostname, () => {
      const head = [
        `POST ${path} HTTP/1.1`,
        `Host: ${url.host}`,
        "Content-Type: application/json",
        chunked ? "Transfer-Encoding: chunked" : "Content-Length: 5000",
        "",
        "",
      ].join("\r\n");
      sock.write(head + (chunked ? '5\r\n{"nam\r\n' : '{"nam'));
      setTimeout(() => { sock.destroy(); resolve(); }, 300);
    });
    sock.on("error", reject);
  });
}

const logSize = () => (LOG ? statSync(LOG).size : 0);

/** What the server logged since `from` (a byte offset). */
function logSince(from) {
  if (!LOG) return "";
  const fd = openSync(LOG, "r");
  try {
    const buf = Buffer.alloc(Math.max(0, statSync(LOG).size - from));
    readSync(fd, buf, 0, buf.length, from);
    return buf.toString("utf8");
  } finally {
    closeSync(fd);
  }
}

/** Waits until the log since `from` satisfies `done`, or `ms` passed; returns it. */
async function logAfter(from, done, ms = 5000) {
  const until = Date.now() + ms;
  let text = logSince(from);
  while (!done(text) && Date.now() < until) {
    await sleep(100);
    text = logSince(from);
  }
  return text;
}

const count = (text, re) => text.split("\n").filter((line) => re.test(line)).length;

test("uploads aborted while the router reads them are client faults, not internal errors", async () => {
  const c = uniqueCharacter("abort");
  const from = logSize();
  // Short of their declared length: the read fails.
  await abortUpload(`/v1/characters/${c}/say`);
  await abortUpload("/v1/broadcast");
  // Chunked: local `wrangler dev` sometimes ends such a body cleanly where
  // the client stopped, and the truncated JSON is a plain 400.
  await abortUpload(`/v1/characters/${c}/say`, { chunked: true });
  await abortUpload(`/v1/characters/${c}/commands`, { chunked: true });
  if (LOG) {
    const text = await logAfter(from, (t) => /internal error/.test(t) || count(t, /client fault/) >= 4, 3000);
    assert.equal(count(text, /internal error/), 0, `the log since the aborts:\n${text}`);
    if (WARNINGS_SHOWN) assert.ok(count(text, /client fault: request body could not be read/) >= 2, text);
  }
  const h = await http("GET", `/v1/characters/${c}/history`);
  assert.equal(h.status, 200);
  assert.deepEqual(h.json.commands, [], "nothing of an aborted upload was published");
});

test(
  "a publish body aborted while the character object reads it is not an internal error",
  async () => {
    const c = uniqueCharacter("abort-stream");
    const from = logSize();
    // With a declared length the body is streamed to the character's object.
    await abortUpload(`/v1/characters/${c}/commands`);
    const h = await http("GET", `/v1/characters/${c}/history`);
    assert.equal(h.status, 200);
    assert.deepEqual(h.json.commands, [], "nothing of an aborted upload was published");
    if (LOG) {
      const text = await logAfter(from, (t) => /client fault|internal error/.test(t));
      assert.equal(count(text, /internal error/), 0, `the log since the abort:\n${text}`);
    }
  },
);

test("after aborted uploads the server answers everyone else as usual", async () => {
  const c = uniqueCharacter("after-abort");
  await Promise.all([
    abortUpload(`/v1/characters/${c}/commands`),
    abortUpload(`/v1/characters/${c}/commands`, { chunked: true }),
    abortUpload(`/v1/characters/${c}/say`),
  ]);
  const s = await subscribe(c);
  const r = await http("POST", `/v1/characters/${c}/commands`, { body: { name: "ok" } });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json.seqs, [1], "the aborted uploads took no seq");
  await s.waitFor((fs) => fs.find((f) => f.type === "command" && f.name === "ok"));
  await s.close();
  assert.equal((await http("GET", "/healthz")).status, 200);
});
