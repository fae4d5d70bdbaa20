// Shared helpers for the integration tests: the base URL of the server under
// test, JSON HTTP calls, and WebSocket clients that record every frame.
import { after } from "node:test";
import WebSocket from "ws";

// Every socket a test opens is terminated when its file ends, passed or
// failed, so a failing test can never keep the process (and CI) waiting.
const openSockets = new Set();
/**
 * Options for every test socket. A close the server starts outside the
 * socket's own event (an admin kick, a token expiry) completes its closing
 * handshake, but local `wrangler dev` then leaves the TCP connection open;
 * like a browser, the client ends it itself shortly after the handshake.
 */
export const WS_OPTIONS = { closeTimeout: 500 };
after(() => { for (const ws of openSockets) ws.terminate(); });
/** Registers a socket opened outside these helpers for termination at the end. */
export function track(ws) { openSockets.add(ws); return ws; }

export const BASE = process.env.GATEWAY_URL ?? "http://127.0.0.1:8787";
export const WS_BASE = BASE.replace(/^http/, "ws");

let counter = 0;
/** A character name no other test uses, so tests never see each other's traffic. */
export function uniqueCharacter(prefix = "t") {
  counter += 1;
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${counter}`;
}

export async function http(method, path, { body, headers = {}, raw } = {}) {
  const init = { method, headers: { ...headers } };
  if (raw !== undefined) init.body = raw;
  else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["content-type"] = "application/json";
  }
  const res = await fetch(BASE + path, init);
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, json, text, headers: res.headers };
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` until `pred` holds of its answer; the last answer after `ms` either way. */
export async function eventually(fn, pred, ms = 3000) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    last = await fn();
    if (pred(last)) return last;
    await sleep(100);
  }
  return last;
}

/**
 * Opens a subscriber socket and records every frame it receives.
 * Resolves once the `welcome` frame has arrived.
 */
export async function subscribe(character, query = {}, { headers } = {}) {
  const qs = new URLSearchParams(query).toString();
  const url = `${WS_BASE}/v1/characters/${encodeURIComponent(character)}/subscribe${qs ? "?" + qs : ""}`;
  const ws = new WebSocket(url, { headers, ...WS_OPTIONS });
  openSockets.add(ws);
  const client = { ws, frames: [], closed: null, waiters: [] };
  ws.on("message", (data, isBinary) => {
    const text = isBinary ? data : data.toString();
    let frame;
    try { frame = JSON.parse(text); } catch { frame = { type: "__raw", text }; }
    client.frames.push(frame);
    for (const w of [...client.waiters]) w();
  });
  ws.on("close", (code, reason) => {
    client.closed = { code, reason: reason.toString() };
    for (const w of [...client.waiters]) w();
  });
  client.send = (obj) => ws.send(typeof obj === "string" ? obj : JSON.stringify(obj));
  client.close = () => new Promise((resolve) => {
    if (ws.readyState === WebSocket.CLOSED) return resolve();
    ws.once("close", resolve);
    ws.close();
  });
  /** Waits until pred(frames) is truthy; rejects after timeoutMs. */
  client.waitFor = (pred, timeoutMs = 5000, what = "frames") => new Promise((resolve, reject) => {
    const check = () => {
      const v = pred(client.frames, client);
      if (v) { cleanup(); resolve(v); return true; }
      return false;
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`timed out waiting for ${what}; got ${JSON.stringify(client.frames).slice(0, 2000)}`));
    }, timeoutMs);
    const cleanup = () => { clearTimeout(timer); client.waiters = client.waiters.filter((w) => w !== waiter); };
    const waiter = () => { check(); };
    client.waiters.push(waiter);
    check();
  });
  client.ofType = (type) => client.frames.filter((f) => f.type === type);
  client.commands = () => client.frames.flatMap((f) => f.type === "command" ? [f] : f.type === "batch" ? f.commands : []);
  await new Promise((resolve, reject) => {
    ws.once("unexpected-response", (_req, res) => {
      let body = "";
      res.on("data", (c) => { body += c; });
      res.on("end", () => {
        const err = new Error(`upgrade refused: ${res.statusCode} ${body}`);
        err.status = res.statusCode;
        try { err.body = JSON.parse(body); } catch { err.body = body; }
        reject(err);
      });
    });
    ws.once("error", reject);
    ws.once("open", resolve);
  });
  await client.waitFor((fs) => fs.find((f) => f.type === "welcome"), 5000, "welcome");
  return client;
}

/** Asserts an HTTP answer has the contract's error body with this status and code. */
export function assertError(assert, res, status, code) {
  assert.equal(res.status, status, `status of ${res.text}`);
  assert.equal(res.json?.error?.code, code, `code in ${res.text}`);
  assert.equal(typeof res.json?.error?.message, "string", `message in ${res.text}`);
  assert.ok(res.json.error.message.length > 0);
}

import { createHmac } from "node:crypto";

const b64url = (v) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");

/** Signs a JWT with an HMAC algorithm (HS256/HS384/HS512), or `none`. */
export function makeJwt(claims, secret, alg = "HS256") {
  const head = b64url({ alg, typ: "JWT" }) + "." + b64url(claims);
  if (alg === "none") return head + ".";
  const hash = { HS256: "sha256", HS384: "sha384", HS512: "sha512" }[alg];
  return head + "." + createHmac(hash, secret).update(head).digest("base64url");
}

export const nowS = () => Math.floor(Date.now() / 1000);

/**
 * Tries a WebSocket upgrade and resolves with the HTTP status: 101 when the
 * socket opened (it is closed again at once), else the refusal's status and body.
 */
export function tryUpgrade(url, headers = {}) {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { headers, ...WS_OPTIONS });
    openSockets.add(ws);
    ws.on("unexpected-response", (_req, res) => {
      let b = "";
      res.on("data", (d) => { b += d; });
      res.on("end", () => { let body = null; try { body = JSON.parse(b); } catch { body = b; } resolve({ status: res.statusCode, body }); });
    });
    ws.on("open", () => { ws.terminate(); resolve({ status: 101 }); });
    ws.on("error", () => {});
  });
}
