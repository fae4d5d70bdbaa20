// Animation gateway client: a small, dependency-free ES module for browsers and
// Node (wire contract v1, docs/protocol.md).
//
//   Browser:  import { subscribe, publish } from "/client.mjs";
//   Node 20:  import WebSocket from "ws";
//             import { subscribe } from "./public/client.mjs";
//             subscribe("alice", { baseUrl: "http://127.0.0.1:8787", WebSocket, ... });
//
// `subscribe` keeps one WebSocket to /v1/characters/{character}/subscribe open,
// reconnects after unexpected closes with exponential backoff and full jitter,
// resumes with `since`/`epoch` so no command is missed, drops duplicates, and
// reports history gaps through `onGap`. A resume the server cut short (`recovered`
// with `truncated: true`, contract §8) is completed from paged
// `GET .../history?since=&limit=` while live frames are held back, so every
// command still reaches `onCommand` exactly once, in seq order. It never reconnects after the close
// codes 4001 (token expired), 4003 (rights withdrawn) or 4010 (disconnected by
// an admin), nor after an HTTP refusal of the upgrade that Node can see
// (400/401/403/404; browsers cannot see the status of a refused upgrade).
//
// Synchronized playback (`sync` option, docs/protocol.md "Synchronized playback"):
// a `ServerClock` estimates the offset to the server's clock from `GET /v1/time`
// (several samples at start, again every `resampleMs`, the lowest round trip wins,
// later corrections slewed in gradually), and `onCommand` is then called when the
// local clock reaches each command's `at` (or `ts` + `playoutDelayMs` without one),
// still in seq order. A command already past that time is delivered at once with
// `late: true`. Types: client.d.ts.
//
// Retained commands (contract §8, docs/protocol.md "Retained commands"): a connect
// without `since` (the first one, unless `since` was given) is followed by the
// character's retained commands its filters match, `retained: true`, with their
// original (older) seqs. They reach `onCommand` with `meta.retained: true`, at once
// (state to apply, never held for synchronized playback), before any live command;
// they never move the resume cursor (`seq`) nor count as duplicates of the live
// stream. A reconnect resumes with `since` and so never receives them again.
// `state()` reads them over HTTP, `clearRetained()` clears one, and `publish` takes
// `retain: true` in a command.

/**
 * A `command` frame (contract §2; `at` and `retained` from §8).
 * @typedef {object} Command
 * @property {"command"} type
 * @property {string} character
 * @property {string} topic
 * @property {number} seq
 * @property {string} epoch
 * @property {number} ts            server time, ms since the Unix epoch
 * @property {number|null} at       when to start playing (server time, ms since the Unix epoch), or null
 * @property {string} name
 * @property {Record<string, unknown>} params
 * @property {number|null} duration_ms
 * @property {string|null} id
 * @property {boolean} [retained]  true only in the retained commands sent after `welcome`
 *   (and in `state()`); false (or absent, before v1.1) everywhere else
 */

/**
 * What `onGap` receives: commands after `since` up to `seq` may be missing.
 * @typedef {object} GapInfo
 * @property {"history"|"epoch"} reason  "history": the server no longer holds every
 *   command after `since` (or `since` was ahead of it); "epoch": the character's stored
 *   history was lost, so seqs restarted under a new epoch.
 * @property {number|null} since      the seq the client resumed from (null: none)
 * @property {number} seq             the character's latest seq the server reported
 * @property {string|null} epoch      the epoch now in force
 * @property {string|null} previousEpoch the epoch the client knew before (when it changed)
 * @property {object} [frame]         the `recovered` / `welcome` / `command` frame that revealed the gap
 */

/**
 * @typedef {"connecting"|"open"|"reconnecting"|"closed"} ClientState
 *   connecting: a socket is being opened; open: `welcome` arrived; reconnecting: waiting
 *   out the backoff before the next attempt; closed: final, no more attempts.
 */

/**
 * Details passed with each state change.
 * @typedef {object} StateDetail
 * @property {number} [code]       close code of the socket that just ended
 * @property {string} [reason]     close reason (or a description of the local cause)
 * @property {number} [httpStatus] status of a refused upgrade (Node only)
 * @property {number} [attempt]    reconnect attempt number (1 = first retry)
 * @property {number} [delayMs]    backoff delay before that attempt
 * @property {boolean} [fatal]     true when the close code forbids reconnecting
 * @property {boolean} [byClient]  true when `close()` ended the client
 */

/**
 * @typedef {object} SubscribeOptions
 * @property {string} [baseUrl]     origin of the gateway, http(s):// or ws(s)://, optionally
 *   with a path prefix. Default: the page's origin (`location.origin`) in browsers.
 * @property {string} [url]         alias of `baseUrl`
 * @property {string[]|string} [topics] filters (array or comma-separated); none = `>`
 * @property {number} [since]       resume after this seq on the first connect
 * @property {string} [epoch]       the epoch `since` belongs to
 * @property {string|(() => string|Promise<string>)} [token] JWT sent as `?token=`;
 *   a function is called before every connect (to refresh it)
 * @property {boolean} [presence]   ask for `presence` frames (delivered to `onPresence`)
 * @property {Record<string,string>} [headers] extra upgrade headers (Node `ws` only, e.g.
 *   `{"X-API-Key": "..."}` or `{"Authorization": "Bearer ..."}`); ignored by browsers
 * @property {(cmd: Command, meta: CommandMeta) => void} [onCommand] each new command,
 *   in seq order, exactly once; `replay` is true for commands replayed after a resume
 *   (including those fetched from history to complete a truncated resume). With `sync`
 *   on, called when the command is due on server time (see `SyncOptions`). Retained
 *   commands (after `welcome` of a connect without `since`) come first, at once, with
 *   `retained: true`; their seqs are at or below the welcome's seq.
 * @property {boolean} [retained] deliver retained commands to `onCommand` (default true;
 *   false: ignore them)
 * @property {boolean|SyncOptions} [sync] synchronized playback on server time (off by default)
 * @property {() => number} [now] the local clock, ms since the Unix epoch (default
 *   `Date.now`); only the sync clock and scheduler read it, so tests can shift it
 * @property {(gap: GapInfo) => void} [onGap]
 * @property {(state: ClientState, detail: StateDetail) => void} [onState]
 * @property {(frame: object) => void} [onFrame]     every parsed frame, before handling
 * @property {(welcome: object) => void} [onWelcome] each `welcome` frame
 * @property {(frame: object) => void} [onRecovered] each `recovered` frame; with
 *   `truncated: true` the rest is then fetched from history (see `historyPageSize`)
 * @property {(frame: object) => void} [onPresence]  each `presence` frame
 * @property {(info: {code: number, reason: string, fatal?: boolean, byClient?: boolean, httpStatus?: number}) => void} [onClose]
 *   called once, when the client ends for good
 * @property {(err: unknown) => void} [onError]      socket errors, error frames, callback throws
 * @property {typeof WebSocket} [WebSocket] WebSocket implementation; default: the global one
 *   (Node 20 has none: pass `WebSocket` from the `ws` package)
 * @property {typeof fetch} [fetch] fetch implementation for history reads; default: the global one
 * @property {number} [historyPageSize] `limit` of each history read that completes a
 *   truncated resume (1..1000, default 1000). The reads carry the token as
 *   `Authorization: Bearer` and `headers`; live frames that arrive meanwhile are held and
 *   delivered after them. If a read fails, the socket is dropped and the client
 *   reconnects (with backoff) resuming from the last command it delivered.
 * @property {{initialMs?: number, maxMs?: number, factor?: number, resetAfterMs?: number}} [backoff]
 *   reconnect delay: random(0, min(maxMs, initialMs * factor^(attempt-1))); defaults
 *   500 / 30000 / 2; the attempt counter resets after a connection that got `welcome`
 *   and stayed open `resetAfterMs` (default 3000)
 * @property {number} [pingIntervalMs] keep-alive: send `ping` this often (default 25000; 0 = off)
 * @property {number} [pongTimeoutMs]  drop the socket when nothing (no `pong`, no frame)
 *   arrives this long after a `ping` (default min(10000, pingIntervalMs))
 * @property {number} [connectTimeoutMs] give up on a connect without `welcome` after this
 *   long and retry (default 15000)
 * @property {number[]} [fatalCloseCodes] close codes that end the client (default [4001, 4003, 4010])
 */

/**
 * What `onCommand` receives beside the command.
 * @typedef {object} CommandMeta
 * @property {boolean} replay     replayed after a resume (or read from history to complete one)
 * @property {boolean} retained   a retained command: the character's current state on
 *   that topic, sent after `welcome` (original seq, possibly long past); delivered at once
 *   even with `sync` (never scheduled, never `late`)
 * @property {boolean} [late]     sync only: the command's due time had passed when it
 *   could be delivered (it arrived too late, or waited for an earlier seq); delivered at once
 * @property {number} [lateByMs]  sync only: how far past its due time it was delivered (0 when not late)
 * @property {number} [dueAt]     sync only: the server time it was due (`at`, or `ts` + `playoutDelayMs`)
 */

/**
 * @typedef {object} SyncOptions
 * @property {number} [playoutDelayMs] commands without `at` are due at `ts` + this
 *   (default 150): a fixed delay behind the server, so viewers with different network
 *   delays still play them together
 * @property {number} [lateToleranceMs] a command is reported late only when it became
 *   deliverable more than this past its due time (default 0)
 * @property {ServerClock} [clock] a clock to share (e.g. between subscriptions); default:
 *   one of its own, closed with the subscription
 * @property {number} [samples] `ServerClock` option when the subscription makes its own
 * @property {number} [resampleMs] `ServerClock` option when the subscription makes its own
 * @property {number} [maxSlewPerSecondMs] `ServerClock` option when the subscription makes its own
 */

/**
 * @typedef {object} Subscription
 * @property {() => void} close    stop for good: closes the socket (code 1000), cancels timers
 * @property {number|null} seq     the seq the client is caught up to: the last delivered
 *   command's seq, or higher when the server confirmed nothing matching came in between
 *   (`welcome` of a fresh start, `recovered`); sent as `since` on reconnect
 * @property {number|null} lastDeliveredSeq the seq of the last command given to `onCommand`
 *   (retained commands aside: they leave it unchanged)
 * @property {string|null} epoch   the character's epoch as last seen
 * @property {ClientState} state
 * @property {string|null} clientId the `client_id` of the current (or last) connection
 * @property {number} connections  how many sockets were opened so far
 * @property {(frame: object|string) => boolean} send send a raw frame on the live socket
 *   (false when none is open); note `subscribe`/`unsubscribe` frames are not replayed on reconnect
 * @property {ServerClock|null} clock the sync clock (null without `sync`)
 * @property {number} pending      sync only: commands received and waiting for their time
 */

const DEFAULT_FATAL = [4001, 4003, 4010];
const FATAL_HTTP = [400, 401, 403, 404];

/**
 * Subscribes to a character's animation commands and keeps the subscription alive.
 * @param {string} character
 * @param {SubscribeOptions} [options]
 * @returns {Subscription}
 */
export function subscribe(character, options = {}) {
  if (typeof character !== "string" || !character) throw new TypeError("subscribe: character must be a non-empty string");
  const o = options;
  const WS = o.WebSocket ?? globalThis.WebSocket;
  if (typeof WS !== "function") throw new TypeError("subscribe: no WebSocket implementation (pass options.WebSocket, e.g. from the `ws` package)");
  const base = wsBase(o.baseUrl ?? o.url);
  const httpRoot = httpBase(o.baseUrl ?? o.url);
  const historyPageSize = Math.min(1000, Math.max(1, Math.floor(o.historyPageSize ?? 1000)));
  const topics = Array.isArray(o.topics) ? o.topics.join(",") : (o.topics ?? "");
  const bo = { initialMs: 500, maxMs: 30000, factor: 2, resetAfterMs: 3000, ...(o.backoff ?? {}) };
  const pingIntervalMs = o.pingIntervalMs ?? 25000;
  const pongTimeoutMs = o.pongTimeoutMs ?? Math.min(10000, pingIntervalMs || 10000);
  const connectTimeoutMs = o.connectTimeoutMs ?? 15000;
  const fatalCodes = o.fatalCloseCodes ?? DEFAULT_FATAL;
  const wantRetained = o.retained !== false;
  const now = typeof o.now === "function" ? o.now : Date.now;
  const syncOpts = o.sync ? (o.sync === true ? {} : o.sync) : null;
  const ownClock = syncOpts && !syncOpts.clock;
  /** @type {ServerClock|null} */
  const clock = !syncOpts ? null : syncOpts.clock ?? new ServerClock({
    baseUrl: o.baseUrl ?? o.url, fetch: o.fetch, now, headers: o.headers,
    samples: syncOpts.samples, resampleMs: syncOpts.resampleMs, maxSlewPerSecondMs: syncOpts.maxSlewPerSecondMs,
    onError: (err) => call(o.onError, err),
  });
  const playout = !syncOpts ? null : new Playout({
    // The clock's own local time: a shared clock may have been given another `now`.
    clock, now: () => clock.now(),
    playoutDelayMs: syncOpts.playoutDelayMs ?? 150,
    lateToleranceMs: syncOpts.lateToleranceMs ?? 0,
    deliver: (cmd, meta) => { lastDelivered = cmd.seq; call(o.onCommand, cmd, meta); },
  });

  /** @type {number|null} */ let cursor = Number.isInteger(o.since) ? o.since : null;
  /** @type {number|null} */ let lastDelivered = null;
  /** @type {string|null} */ let epoch = o.epoch ?? null;
  /** @type {ClientState} */ let state = "connecting";
  /** @type {string|null} */ let clientId = null;
  let ws = null;          // the live socket
  let attempt = 0;        // consecutive failed attempts
  let connections = 0;
  let stopped = false;
  let retryTimer = null, pingTimer = null, pongTimer = null, connectTimer = null;
  // Per-connection state.
  let conn = null;

  const call = (fn, ...args) => {
    if (typeof fn !== "function") return;
    try { fn(...args); } catch (err) { if (fn !== o.onError) call(o.onError, err); }
  };
  const setState = (s, detail = {}) => { state = s; call(o.onState, s, detail); };

  function clearTimers() {
    clearTimeout(retryTimer); clearInterval(pingTimer); clearTimeout(pongTimer); clearTimeout(connectTimer);
    retryTimer = pingTimer = pongTimer = connectTimer = null;
  }

  /** Detaches every handler from a socket and closes it without waiting. */
  function discard(sock, code = 1000, reason = "") {
    if (!sock) return;
    sock.onopen = sock.onmessage = sock.onclose = null;
    sock.onerror = () => {}; // `ws` throws on an 'error' event without a listener
    try {
      if (code !== 1000 && typeof sock.terminate === "function") sock.terminate();
      else sock.close(code, reason);
    } catch { try { sock.terminate?.(); } catch { /* already gone */ } }
  }

  async function connect() {
    if (stopped) return;
    setState("connecting", { attempt });
    let token = o.token;
    if (typeof token === "function") {
      try { token = await token(); } catch (err) { call(o.onError, err); token = undefined; }
      if (stopped) return;
    }
    const q = new URLSearchParams();
    if (topics) q.set("topics", topics);
    const resumeFrom = cursor;
    if (resumeFrom !== null) {
      q.set("since", String(resumeFrom));
      if (epoch) q.set("epoch", epoch);
    }
    if (o.presence) q.set("presence", "true");
    if (token) q.set("token", String(token));
    const qs = q.toString();
    const url = `${base}/v1/characters/${encodeURIComponent(character)}/subscribe${qs ? "?" + qs : ""}`;
    let sock;
    try {
      sock = o.headers ? new WS(url, undefined, { headers: o.headers }) : new WS(url);
    } catch (err) {
      call(o.onError, err);
      return fail({ code: 1006, reason: String(err?.message ?? err) });
    }
    connections += 1;
    ws = sock;
    conn = { sock, token, welcomed: false, welcomedAt: 0, resumeFrom, expectRecovered: resumeFrom !== null, pendingEpochGap: null, replaying: resumeFrom !== null, httpStatus: undefined, filling: false, held: [] };
    const c = conn;
    connectTimer = setTimeout(() => {
      if (conn !== c || c.welcomed) return;
      drop(c, 4000, "connect timeout");
    }, connectTimeoutMs);
    sock.onopen = () => { if (conn === c) startKeepAlive(c); };
    sock.onmessage = (ev) => { if (conn === c) onMessage(c, ev.data); };
    sock.onerror = (ev) => {
      if (conn !== c) return;
      const msg = ev?.message ?? ev?.error?.message ?? "";
      const m = /Unexpected server response: (\d{3})/.exec(msg);
      if (m) c.httpStatus = Number(m[1]);
      call(o.onError, ev?.error ?? new Error(msg || "websocket error"));
    };
    sock.onclose = (ev) => {
      if (conn !== c) return;
      ended(c, { code: ev?.code ?? 1006, reason: String(ev?.reason ?? "") });
    };
  }

  function startKeepAlive(c) {
    clearInterval(pingTimer);
    if (!pingIntervalMs) return;
    pingTimer = setInterval(() => {
      if (conn !== c) return;
      // A socket the server is closing gets no ping; its close event follows.
      if (c.sock.readyState !== 1) return;
      try { c.sock.send("ping"); } catch { return drop(c, 4000, "ping failed"); }
      if (!pongTimer) pongTimer = setTimeout(() => { if (conn === c) drop(c, 4000, "keep-alive timeout"); }, pongTimeoutMs);
    }, pingIntervalMs);
  }

  /** Any sign of life from the server clears the keep-alive deadline. */
  function alive() { clearTimeout(pongTimer); pongTimer = null; }

  /** Local decision to abandon the current socket (dead or stuck) and reconnect. */
  function drop(c, code, reason) {
    discard(c.sock, code, reason);
    ended(c, { code: 1006, reason });
  }

  function ended(c, { code, reason }) {
    if (conn !== c) return;
    conn = null; ws = null;
    clearTimers();
    discard(c.sock);
    if (stopped) return;
    if (fatalCodes.includes(code)) return finish({ code, reason, fatal: true });
    if (!c.welcomed && c.httpStatus && FATAL_HTTP.includes(c.httpStatus)) {
      return finish({ code, reason: reason || `upgrade refused with HTTP ${c.httpStatus}`, fatal: true, httpStatus: c.httpStatus });
    }
    if (c.welcomed && Date.now() - c.welcomedAt >= bo.resetAfterMs) attempt = 0;
    fail({ code, reason, httpStatus: c.httpStatus });
  }

  function fail(detail) {
    if (stopped) return;
    attempt += 1;
    const cap = Math.min(bo.maxMs, bo.initialMs * Math.pow(bo.factor, attempt - 1));
    const delayMs = Math.floor(Math.random() * cap);
    setState("reconnecting", { ...detail, attempt, delayMs });
    retryTimer = setTimeout(() => { retryTimer = null; connect(); }, delayMs);
  }

  function finish(info) {
    stopped = true;
    clearTimers();
    playout?.close();
    if (ownClock) clock.close();
    setState("closed", info);
    call(o.onClose, info);
  }

  function onMessage(c, data) {
    alive();
    if (typeof data !== "string") {
      // Some Node WebSocket implementations hand text over as a Buffer; anything else
      // (Blob, ArrayBuffer) is a binary frame, which the protocol does not use.
      if (data?.constructor?.name === "Buffer") data = data.toString("utf8");
      else return;
    }
    if (data === "pong") return;
    let frame;
    try { frame = JSON.parse(data); } catch { return call(o.onError, new Error(`unparseable frame: ${String(data).slice(0, 100)}`)); }
    if (!frame || typeof frame !== "object") return;
    call(o.onFrame, frame);
    if (conn !== c) return; // a callback closed us
    if (c.filling && (frame.type === "command" || frame.type === "batch")) {
      // Live frames wait until history has filled in what came before them.
      c.held.push(frame);
      return;
    }
    switch (frame.type) {
      case "welcome": return onWelcome(c, frame);
      case "command": return deliver(c, frame);
      case "batch":
        for (const cmd of frame.commands ?? []) { if (conn !== c) return; deliver(c, cmd); }
        return;
      case "recovered": return onRecovered(c, frame);
      case "presence": return call(o.onPresence, frame);
      case "error": return call(o.onError, Object.assign(new Error(`${frame.code}: ${frame.message}`), { frame }));
      default: return;
    }
  }

  function onWelcome(c, w) {
    c.welcomed = true;
    c.welcomedAt = Date.now();
    clearTimeout(connectTimer); connectTimer = null;
    clientId = w.client_id ?? null;
    const previousEpoch = epoch;
    if (typeof w.epoch === "string") {
      if (previousEpoch && w.epoch !== previousEpoch) {
        // History was lost: seqs of the old epoch mean nothing any more.
        c.pendingEpochGap = { reason: "epoch", since: cursor, seq: w.seq, epoch: w.epoch, previousEpoch, frame: w };
        cursor = 0; lastDelivered = null;
      }
      epoch = w.epoch;
    }
    if (c.resumeFrom === null) {
      // Fresh start: live delivery begins after the seq the server has now.
      if (Number.isInteger(w.seq)) cursor = c.pendingEpochGap ? w.seq : Math.max(cursor ?? 0, w.seq);
    }
    call(o.onWelcome, w);
    if (conn !== c) return;
    setState("open", { clientId, epoch, seq: w.seq });
    if (c.pendingEpochGap && !c.expectRecovered) {
      const gap = c.pendingEpochGap; c.pendingEpochGap = null;
      call(o.onGap, gap);
    }
  }

  function onRecovered(c, r) {
    c.replaying = false;
    c.expectRecovered = false;
    const epochGap = c.pendingEpochGap; c.pendingEpochGap = null;
    if (r.complete === false || epochGap) {
      call(o.onGap, {
        reason: epochGap ? "epoch" : "history",
        since: r.since ?? c.resumeFrom,
        seq: r.seq,
        epoch,
        previousEpoch: epochGap ? epochGap.previousEpoch : null,
        frame: r,
      });
    }
    if (r.truncated === true && Number.isInteger(r.next_since) && Number.isInteger(r.seq)) {
      // Everything matching up to next_since was replayed; the rest up to r.seq comes
      // from history, before any live frame.
      if (cursor === null || r.next_since > cursor) cursor = r.next_since;
      c.filling = true;
      c.replaying = true;
      call(o.onRecovered, r);
      if (conn === c) fill(c, r);
      return;
    }
    // Everything matching up to r.seq has been replayed (or is lost): move on. After an
    // incomplete recovery the server's seq is authoritative (our `since` may even have
    // been ahead of it); live commands follow r.seq.
    if (Number.isInteger(r.seq)) {
      if (r.complete === false || epochGap || cursor === null || r.seq > cursor) cursor = r.seq;
    }
    call(o.onRecovered, r);
  }

  /**
   * Completes a truncated resume: pages through history from `r.next_since` until it
   * reaches `r.seq` (or history ends), then delivers the live frames held meanwhile.
   * Any failure drops the socket; the reconnect resumes from the last delivered seq.
   */
  async function fill(c, r) {
    let since = r.next_since;
    try {
      while (since < r.seq) {
        const page = await historyPage(c, since);
        if (conn !== c) return;
        if (typeof page?.epoch === "string" && epoch && page.epoch !== epoch) {
          // History was lost meanwhile; a fresh resume sorts it out.
          return drop(c, 4000, "epoch changed while filling from history");
        }
        for (const cmd of page?.commands ?? []) {
          deliver(c, cmd);
          if (conn !== c) return;
        }
        // `next_since` says where a cut read continues; a full page without it (an
        // older server) continues after its last command.
        const cmds = page?.commands ?? [];
        const next = Number.isInteger(page?.next_since) ? page.next_since
          : cmds.length >= historyPageSize ? cmds.at(-1)?.seq : undefined;
        if (page?.complete === false) {
          call(o.onGap, { reason: "history", since, seq: Number.isInteger(next) ? next : r.seq, epoch, previousEpoch: null, frame: page });
          if (conn !== c) return;
        }
        if (!Number.isInteger(next) || next <= since) break; // history ends here
        since = next;
      }
    } catch (err) {
      if (conn !== c) return;
      call(o.onError, err);
      if (conn === c) drop(c, 4000, "history read failed");
      return;
    }
    if (conn !== c) return;
    // History was read through r.seq: nothing matching is left before the live frames.
    if (cursor === null || r.seq > cursor) cursor = r.seq;
    c.filling = false;
    c.replaying = false;
    const held = c.held; c.held = [];
    for (const frame of held) {
      if (conn !== c) return;
      if (frame.type === "command") deliver(c, frame);
      else for (const cmd of frame.commands ?? []) { if (conn !== c) return; deliver(c, cmd); }
    }
  }

  /** One page of `GET .../history` after `since`, with this connection's credentials. */
  async function historyPage(c, since) {
    const f = o.fetch ?? globalThis.fetch;
    if (typeof f !== "function") throw new TypeError("subscribe: no fetch implementation to complete a truncated resume (pass options.fetch)");
    const q = new URLSearchParams({ since: String(since), limit: String(historyPageSize) });
    if (topics) q.set("topics", topics);
    const headers = { ...(o.headers ?? {}) };
    if (c.token) headers.authorization = `Bearer ${c.token}`;
    const res = await f(`${httpRoot}/v1/characters/${encodeURIComponent(character)}/history?${q}`, { headers });
    const text = await res.text();
    if (!res.ok) throw Object.assign(new Error(`history read failed: ${res.status} ${text.slice(0, 200)}`), { status: res.status });
    return JSON.parse(text);
  }

  function deliver(c, cmd) {
    if (!cmd || !Number.isInteger(cmd.seq)) return;
    if (cmd.retained === true) return deliverRetained(c, cmd);
    if (typeof cmd.epoch === "string" && epoch && cmd.epoch !== epoch) {
      const previousEpoch = epoch;
      epoch = cmd.epoch;
      cursor = 0; lastDelivered = null;
      call(o.onGap, { reason: "epoch", since: null, seq: cmd.seq, epoch, previousEpoch, frame: cmd });
    } else if (typeof cmd.epoch === "string") epoch = cmd.epoch;
    if (cursor !== null && cmd.seq <= cursor) return; // duplicate (or out of order): already delivered
    cursor = cmd.seq;
    if (playout) return playout.push(cmd, { replay: c.replaying, retained: false });
    lastDelivered = cmd.seq;
    call(o.onCommand, cmd, { replay: c.replaying, retained: false });
  }

  /**
   * A retained command (contract §8): the server sends them only after the `welcome` of
   * a connect without `since`, before anything live, with seqs at or below the welcome's.
   * They are state, not new events: delivered at once (with `sync` too), leaving the
   * cursor, `lastDeliveredSeq` and duplicate detection of the live stream alone.
   */
  function deliverRetained(c, cmd) {
    if (!wantRetained || !c.welcomed || c.resumeFrom !== null) return;
    call(o.onCommand, cmd, playout ? { replay: false, retained: true, late: false, lateByMs: 0 } : { replay: false, retained: true });
  }

  /** @type {Subscription} */
  const handle = {
    close() {
      if (stopped) return;
      const c = conn;
      conn = null; ws = null;
      if (c) discard(c.sock, 1000, "client closed");
      finish({ code: 1000, reason: "client closed", byClient: true });
    },
    send(frame) {
      const sock = ws;
      if (!sock || !conn?.welcomed || sock.readyState !== 1) return false;
      try { sock.send(typeof frame === "string" ? frame : JSON.stringify(frame)); return true; } catch { return false; }
    },
    get seq() { return cursor; },
    get lastDeliveredSeq() { return lastDelivered; },
    get epoch() { return epoch; },
    get state() { return state; },
    get clientId() { return clientId; },
    get connections() { return connections; },
    get clock() { return clock; },
    get pending() { return playout ? playout.size : 0; },
  };
  connect();
  return handle;
}

/**
 * Publishes one command, or several (an array: `{"commands":[...]}`, up to 100).
 * @param {string|null|undefined} baseUrl gateway origin (default: the page's origin)
 * @param {string} character
 * @param {object|object[]} command `{topic?, name, params?, duration_ms?, id?, at?, retain?}` or an
 *   array of them; `retain: true` makes it its topic's retained command (contract §8)
 * @param {{token?: string, apiKey?: string, apiKeyHeader?: string, headers?: Record<string,string>, fetch?: typeof fetch, signal?: AbortSignal}} [opts]
 * @returns {Promise<{character: string, epoch: string, seqs: number[], delivered: number}>}
 *   rejects with an Error carrying `status` and `body` on a non-2xx answer
 */
export async function publish(baseUrl, character, command, opts = {}) {
  const body = JSON.stringify(Array.isArray(command) ? { commands: command } : command);
  return request("publish", "POST", `${httpBase(baseUrl)}/v1/characters/${encodeURIComponent(character)}/commands`, opts, body);
}

/**
 * Reads a character's retained commands: `GET /v1/characters/{c}/state` (subscriber
 * rights). Each is a `command` frame with `retained: true`, in seq order.
 * @param {string|null|undefined} baseUrl gateway origin (default: the page's origin)
 * @param {string} character
 * @param {{token?: string, apiKey?: string, apiKeyHeader?: string, headers?: Record<string,string>, fetch?: typeof fetch, signal?: AbortSignal}} [opts]
 * @returns {Promise<{character: string, epoch: string, seq: number, retained: Command[]}>}
 *   rejects with an Error carrying `status` and `body` on a non-2xx answer
 */
export async function state(baseUrl, character, opts = {}) {
  return request("state", "GET", `${httpBase(baseUrl)}/v1/characters/${encodeURIComponent(character)}/state`, opts);
}

/**
 * Clears a topic's retained command: `DELETE /v1/characters/{c}/retained/{topic}`
 * (publisher rights). Idempotent: `cleared` is false when the topic held none. Sends no
 * frame: subscribers connected before keep what they got.
 * @param {string|null|undefined} baseUrl gateway origin (default: the page's origin)
 * @param {string} character
 * @param {string} topic a topic, not a filter
 * @param {{token?: string, apiKey?: string, apiKeyHeader?: string, headers?: Record<string,string>, fetch?: typeof fetch, signal?: AbortSignal}} [opts]
 * @returns {Promise<{character: string, topic: string, cleared: boolean}>}
 *   rejects with an Error carrying `status` and `body` on a non-2xx answer
 */
export async function clearRetained(baseUrl, character, topic, opts = {}) {
  const url = `${httpBase(baseUrl)}/v1/characters/${encodeURIComponent(character)}/retained/${encodeURIComponent(topic)}`;
  return request("clearRetained", "DELETE", url, opts);
}

/** One JSON request with the caller's credentials; throws with `status` and `body` on non-2xx. */
async function request(what, method, url, opts, body) {
  const f = opts.fetch ?? globalThis.fetch;
  const headers = { ...(opts.headers ?? {}) };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  if (opts.apiKey) headers[opts.apiKeyHeader ?? "X-API-Key"] = opts.apiKey;
  const res = await f(url, { method, headers, body, signal: opts.signal });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  if (!res.ok) {
    const err = new Error(`${what} failed: ${res.status} ${json?.error?.code ?? ""} ${json?.error?.message ?? text}`.trim());
    err.status = res.status; err.body = json ?? text;
    throw err;
  }
  return json;
}

/**
 * An estimate of the server's clock, from `GET /v1/time`: `serverNow() = now() + offset`.
 *
 * A sampling round sends `samples` requests one after another and keeps the one with
 * the lowest round trip (the least room for queueing to skew it), taking the server's
 * `now` to be the local midpoint of that request. The first round sets the offset at
 * once; later rounds (every `resampleMs`) only set a target that the applied offset
 * moves towards by at most `maxSlewPerSecondMs` per second, so scheduled playback never
 * jumps, unless the target is more than `stepThresholdMs` away (then it steps).
 */
export class ServerClock {
  /**
   * @param {{baseUrl?: string, fetch?: typeof fetch, now?: () => number, headers?: Record<string,string>,
   *   samples?: number, resampleMs?: number, maxSlewPerSecondMs?: number, stepThresholdMs?: number,
   *   autoStart?: boolean, onSync?: (info: ClockSample) => void, onError?: (err: unknown) => void}} [options]
   */
  constructor(options = {}) {
    const o = options;
    this._url = `${httpBase(o.baseUrl)}/v1/time`;
    // Called unbound: a browser's fetch refuses any `this` but the window's.
    const fetchFn = o.fetch ?? globalThis.fetch;
    this._fetch = typeof fetchFn === "function" ? (url, init) => fetchFn(url, init) : undefined;
    const nowFn = typeof o.now === "function" ? o.now : Date.now;
    this._now = () => nowFn();
    this._headers = o.headers;
    this.samples = Math.max(1, Math.floor(o.samples ?? 5));
    this.resampleMs = o.resampleMs ?? 30000;
    this.maxSlewPerSecondMs = o.maxSlewPerSecondMs ?? 50;
    this.stepThresholdMs = o.stepThresholdMs ?? 1000;
    this._onSync = o.onSync;
    this._onError = o.onError;
    /** Whether a round has succeeded (before that the offset is 0). */
    this.synced = false;
    /** The lowest round trip of the last successful round, ms. */
    this.rtt = null;
    this._applied = 0;      // offset in force at _appliedAt (local ms)
    this._appliedAt = 0;
    this._target = 0;
    this._timer = null;
    this._closed = false;
    this._listeners = new Set();
    /** Resolves after the first round: with its best sample, or null when every sample
     *  failed (the offset stays 0 until a round succeeds; see `onError`). Never rejects. */
    this.ready = new Promise((resolve) => { this._resolveReady = resolve; });
    if (o.autoStart !== false) this.sync();
  }

  /** Local time, ms since the Unix epoch, from the injected clock. */
  now() { return this._now(); }

  /** The offset in force now (server minus local, ms), with any correction in progress. */
  get offset() {
    const t = this._now();
    const diff = this._target - this._applied;
    if (diff === 0) return this._applied;
    const step = Math.max(0, t - this._appliedAt) * this.maxSlewPerSecondMs / 1000;
    return Math.abs(diff) <= step ? this._target : this._applied + Math.sign(diff) * step;
  }

  /** The offset the clock is moving towards (the last round's estimate). */
  get targetOffset() { return this._target; }

  /** The server's clock now, by this estimate. */
  serverNow() { return this._now() + this.offset; }

  /** The local time at which the server's clock reads `serverMs`. */
  toLocal(serverMs) { return serverMs - this.offset; }

  /** Calls `fn` after each change of the target offset; returns an unsubscribe function. */
  onChange(fn) { this._listeners.add(fn); return () => this._listeners.delete(fn); }

  /**
   * Runs one sampling round now and re-arms the periodic one.
   * @returns {Promise<ClockSample|null>} the round's best sample (null when every sample failed)
   */
  async sync() {
    if (this._closed) return null;
    clearTimeout(this._timer); this._timer = null;
    let best = null, lastErr = null;
    for (let i = 0; i < this.samples && !this._closed; i++) {
      try {
        const s = await this._sample();
        if (!best || s.rtt < best.rtt) best = s;
      } catch (err) { lastErr = err; }
    }
    if (this._closed) return best;
    if (best) this._apply(best);
    else {
      this._report(lastErr ?? new Error("time sync failed"));
      // Playback waits for `ready`; without any sample it goes by the local clock
      // (offset 0) until a later round succeeds and steps the offset in.
      this._resolveReady(null);
    }
    if (this.resampleMs > 0) {
      // A failed round is retried sooner than a good one is repeated.
      const wait = best ? this.resampleMs : Math.min(this.resampleMs, 2000);
      this._timer = setTimeout(() => { this._timer = null; this.sync(); }, wait);
      this._timer.unref?.();
    }
    return best;
  }

  /** Stops re-sampling. */
  close() { this._closed = true; clearTimeout(this._timer); this._timer = null; this._listeners.clear(); }

  async _sample() {
    if (typeof this._fetch !== "function") throw new TypeError("ServerClock: no fetch implementation (pass options.fetch)");
    const t0 = this._now();
    const res = await this._fetch(this._url, { headers: this._headers ?? {}, cache: "no-store" });
    const t1 = this._now();
    const body = await res.json();
    if (!res.ok || !Number.isFinite(body?.now)) throw new Error(`GET /v1/time answered ${res.status}`);
    const rtt = Math.max(0, t1 - t0);
    return { offset: body.now - (t0 + t1) / 2, rtt, server: body.now, local: t1 };
  }

  _apply(sample) {
    const t = this._now();
    const current = this.offset;
    this.rtt = sample.rtt;
    this._target = sample.offset;
    if (!this.synced || Math.abs(sample.offset - current) > this.stepThresholdMs) this._applied = sample.offset;
    else this._applied = current;
    this._appliedAt = t;
    this.synced = true;
    this._resolveReady(sample);
    try { this._onSync?.(sample); } catch (err) { this._report(err); }
    for (const fn of [...this._listeners]) { try { fn(sample); } catch (err) { this._report(err); } }
  }

  _report(err) { try { this._onError?.(err); } catch { /* the caller's problem */ } }
}

/**
 * @typedef {object} ClockSample
 * @property {number} offset server minus local clock, ms (the estimate of this sample)
 * @property {number} rtt    round trip of the request, ms
 * @property {number} server the server's `now`
 * @property {number} local  the local clock when the answer arrived
 */

/**
 * Holds commands until their due time on the server's clock, in seq order: the head
 * of the queue waits for `at` (or `ts` + playoutDelayMs), each later one for the head.
 * Commands are pushed in seq order (the subscription guarantees it).
 */
class Playout {
  constructor({ clock, now, playoutDelayMs, lateToleranceMs, deliver }) {
    this.clock = clock; this.now = () => now(); this.delay = playoutDelayMs; this.tolerance = lateToleranceMs;
    this.deliver = deliver;
    this.queue = [];
    this.timer = null;
    this.closed = false;
    this.ready = false;
    // Until the first sampling round, the offset means nothing: hold everything.
    clock.ready.then(() => { this.ready = true; this.pump(); });
    // A new target offset moves due times: re-arm.
    this.unlisten = clock.onChange(() => this.pump());
  }

  get size() { return this.queue.length; }

  push(cmd, meta) {
    if (this.closed) return;
    const dueAt = Number.isFinite(cmd.at) ? cmd.at : cmd.ts + this.delay;
    // `eligibleAt`: when it could first be delivered (nothing before it waiting).
    this.queue.push({ cmd, meta, dueAt, eligibleAt: null });
    this.pump();
  }

  pump() {
    if (this.closed || !this.ready) return;
    clearTimeout(this.timer); this.timer = null;
    while (this.queue.length) {
      const head = this.queue[0];
      const t = this.now();
      if (head.eligibleAt === null) head.eligibleAt = t;
      const localDue = this.clock.toLocal(head.dueAt);
      if (localDue > t) {
        // Not yet: wake up at its time (a timer that fires early just re-arms).
        this.timer = setTimeout(() => { this.timer = null; this.pump(); }, Math.max(1, Math.ceil(localDue - t)));
        return;
      }
      this.queue.shift();
      // Late when it was already past due when it became deliverable; a timer firing
      // a little after its time is not the command's lateness.
      const lateByMs = Math.max(0, Math.round(head.eligibleAt - localDue));
      const late = lateByMs > this.tolerance;
      this.deliver(head.cmd, { ...head.meta, late, lateByMs: late ? lateByMs : 0, dueAt: head.dueAt });
      if (this.closed) return;
      // The next one becomes deliverable now.
      if (this.queue.length && this.queue[0].eligibleAt === null) this.queue[0].eligibleAt = this.now();
    }
  }

  close() { this.closed = true; clearTimeout(this.timer); this.timer = null; this.queue = []; this.unlisten?.(); }
}

/**
 * Reads the server's clock once: `GET /v1/time` (no credentials needed).
 * @param {string|null|undefined} baseUrl gateway origin (default: the page's origin)
 * @param {{fetch?: typeof fetch}} [opts]
 * @returns {Promise<number>} the server's `now`, ms since the Unix epoch
 */
export async function serverTime(baseUrl, opts = {}) {
  const f = opts.fetch ?? globalThis.fetch;
  const res = await f(`${httpBase(baseUrl)}/v1/time`, { cache: "no-store" });
  const body = await res.json();
  if (!res.ok || !Number.isFinite(body?.now)) throw Object.assign(new Error(`GET /v1/time answered ${res.status}`), { status: res.status, body });
  return body.now;
}

function defaultOrigin() {
  const loc = globalThis.location;
  if (loc && loc.origin && loc.origin !== "null") return loc.origin;
  throw new TypeError("no baseUrl given and no page origin to default to");
}

function trimSlash(u) { return u.replace(/\/+$/, ""); }

/** http(s)/ws(s) base -> ws(s) base. */
function wsBase(u) {
  const b = trimSlash(u ?? defaultOrigin());
  if (/^wss?:\/\//i.test(b)) return b;
  if (/^https?:\/\//i.test(b)) return b.replace(/^http/i, "ws");
  throw new TypeError(`baseUrl must start with http(s):// or ws(s)://: ${b}`);
}

/** http(s)/ws(s) base -> http(s) base. */
function httpBase(u) {
  const b = trimSlash(u ?? defaultOrigin());
  if (/^https?:\/\//i.test(b)) return b;
  if (/^wss?:\/\//i.test(b)) return b.replace(/^ws/i, "http");
  throw new TypeError(`baseUrl must start with http(s):// or ws(s)://: ${b}`);
}
