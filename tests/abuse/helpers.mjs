// What the abuse suites share: servers of their own from the one launcher
// (scripts/server.mjs), JSON HTTP calls against a given base URL, and
// WebSocket clients that record every frame.
import WebSocket from "ws";
import { startServer } from "../../scripts/server.mjs";

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const t0 = Date.now();
/** Progress on stderr, so a stall shows where it is. */
export const progress = (msg) => process.stderr.write(`[abuse +${((Date.now() - t0) / 1000).toFixed(1)}s] ${msg}\n`);

/** `wrangler dev` with auth off and `vars` over [vars], on `state` when given. */
export const start = ({ state, vars = {} } = {}) =>
  startServer({ runtime: "dev", name: "abuse", state, vars: { AUTH_ENABLED: "false", ...vars }, onProgress: progress });

export async function http(base, method, path, body, headers = {}) {
  const init = { method, headers: { ...headers } };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["content-type"] = "application/json";
  }
  const res = await fetch(base + path, init);
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, json, text, headers: res.headers };
}

/** Polls `pred` (async allowed) until it is truthy; its value. */
export async function until(pred, ms, what) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await pred();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

const sockets = new Set();
/** Terminates every socket opened with `open`. */
export function closeAll() { for (const ws of sockets) ws.terminate(); sockets.clear(); }

/**
 * A socket on `character` that records frames and its close; resolves once
 * `welcome` arrived, or with `{ refused: status, body }` when the upgrade is refused.
 */
export function open(base, character, query = {}) {
  const qs = new URLSearchParams(query).toString();
  const url = `${base.replace(/^http/, "ws")}/v1/characters/${character}/subscribe${qs ? "?" + qs : ""}`;
  const ws = new WebSocket(url, { closeTimeout: 500, handshakeTimeout: 15_000 });
  sockets.add(ws);
  const c = { ws, frames: [], sizes: [], closed: null };
  ws.on("message", (d) => { c.sizes.push(d.length); c.frames.push(JSON.parse(d.toString())); });
  ws.on("close", (code) => { c.closed = code; sockets.delete(ws); });
  return new Promise((resolve, reject) => {
    ws.once("unexpected-response", (_req, res) => {
      let body = "";
      res.on("data", (d) => { body += d; });
      res.on("end", () => resolve({ refused: res.statusCode, headers: res.headers, body: body ? JSON.parse(body) : null }));
      ws.on("error", () => {});
    });
    ws.once("error", reject);
    ws.on("message", function first() {
      if (c.frames[0]?.type === "welcome") { ws.off("message", first); resolve(c); }
    });
  });
}
