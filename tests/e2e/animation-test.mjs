#!/usr/bin/env node
// End-to-end check of a running gateway (wire contract v1, docs/protocol.md).
//
//   npm run itest                      # against http://127.0.0.1:8787 (`make dev`)
//   npm run itest:prod                 # against $ITEST_BASE_URL (a deployment)
//   node tests/e2e/animation-test.mjs --base-url http://127.0.0.1:PORT   # any server
//
// For several characters at once (unique names per run: itest-<runid>-a, -b, ...)
// it opens subscribers with different filters, publishes across topics (single,
// batch and broadcast publishes), and checks that every socket got exactly the
// commands its filters match, in seq order, and nothing else; then the admin
// listings, history, and a resume with since/epoch. With credentials in the
// environment it also runs the auth matrix. It prints a report per character,
// socket and topic with publish->receive latencies, always closes its sockets,
// gives up after a global timeout, and exits non-zero on any failure.
//
// Environment:
//   ITEST_BASE_URL        gateway origin (required for --env prod; overrides the dev default)
//   ITEST_API_KEY         an API key (grants admin) sent in ITEST_API_KEY_HEADER (default X-API-Key)
//   ITEST_JWT             a ready JWT (its `role`/`chars`/`exp` claims decide what it should be allowed)
//   ITEST_JWT_SECRET      the HS256 secret: lets the suite mint its own tokens (every role,
//                         expired, not-yet-valid, wrong signature, alg none, chars limits, 4001)
//   ITEST_QUIET_MS        silence that counts as "nothing more arrives" (default 750, prod 1500)
//   ITEST_TIMEOUT_MS      global timeout (default 120000)
//   ITEST_CHARACTERS      how many characters run at once (default 3)
// Node 20+, no dependencies but `ws`.
import WebSocket from "ws";
import { createHmac, randomBytes } from "node:crypto";
import { performance } from "node:perf_hooks";
import { subscribe as clientSubscribe } from "../../public/client.mjs";

// ---------------------------------------------------------------- options ---

function parseArgs(argv) {
  const a = { env: "dev" };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const val = () => { const v = argv[++i]; if (v === undefined) usage(`${k} needs a value`); return v; };
    if (k === "--env") a.env = val();
    else if (k.startsWith("--env=")) a.env = k.slice(6);
    else if (k === "--base-url") a.baseUrl = val();
    else if (k.startsWith("--base-url=")) a.baseUrl = k.slice(11);
    else if (k === "--characters") a.characters = Number(val());
    else if (k === "--quiet-ms") a.quietMs = Number(val());
    else if (k === "--timeout-ms") a.timeoutMs = Number(val());
    else if (k === "--verbose" || k === "-v") a.verbose = true;
    else if (k === "--help" || k === "-h") usage();
    else usage(`unknown argument ${k}`);
  }
  if (!["dev", "prod"].includes(a.env)) usage(`--env must be dev or prod, not ${a.env}`);
  return a;
}

function usage(err) {
  const text = `usage: node tests/e2e/animation-test.mjs [--env dev|prod] [--base-url URL] [--characters N]
                                       [--quiet-ms MS] [--timeout-ms MS] [--verbose]
  dev:  base URL http://127.0.0.1:8787 (make dev) unless ITEST_BASE_URL or --base-url
  prod: base URL from --base-url or ITEST_BASE_URL (required)
  credentials (when auth is on): ITEST_API_KEY [ITEST_API_KEY_HEADER], ITEST_JWT, ITEST_JWT_SECRET`;
  if (err) { console.error(`error: ${err}\n${text}`); process.exit(2); }
  console.log(text); process.exit(0);
}

const args = parseArgs(process.argv.slice(2));
const ENV = process.env;
const BASE = (args.baseUrl ?? ENV.ITEST_BASE_URL ?? (args.env === "dev" ? "http://127.0.0.1:8787" : usage("--env prod needs ITEST_BASE_URL or --base-url"))).replace(/\/+$/, "");
if (!/^https?:\/\//.test(BASE)) usage(`base URL must be http(s)://: ${BASE}`);
const WS_BASE = BASE.replace(/^http/, "ws");
const API_KEY = ENV.ITEST_API_KEY || null;
const API_KEY_HEADER = ENV.ITEST_API_KEY_HEADER || "X-API-Key";
const JWT = ENV.ITEST_JWT || null;
const JWT_SECRET = ENV.ITEST_JWT_SECRET || null;
const QUIET_MS = args.quietMs ?? Number(ENV.ITEST_QUIET_MS ?? (args.env === "prod" ? 1500 : 750));
const TIMEOUT_MS = args.timeoutMs ?? Number(ENV.ITEST_TIMEOUT_MS ?? 120000);
const N_CHARS = Math.max(1, Math.min(26, args.characters ?? Number(ENV.ITEST_CHARACTERS ?? 3)));
const WAIT_MS = args.env === "prod" ? 15000 : 8000;
const RUN_ID = `${Date.now().toString(36)}${randomBytes(2).toString("hex")}`;

// ---------------------------------------------------------- bookkeeping ---

const color = process.stdout.isTTY && !ENV.NO_COLOR;
const paint = (code, s) => (color ? `\x1b[${code}m${s}\x1b[0m` : s);
const OK = paint(32, "ok  "), FAIL = paint(31, "FAIL");
/** @type {{section: string, name: string, ok: boolean, detail?: string}[]} */
const results = [];
let section = "setup";

/** Records a check and prints it (a `quiet` check prints only when it fails). */
function check(name, ok, detail, { quiet = false } = {}) {
  results.push({ section, name, ok: !!ok, detail });
  if (quiet && ok && !args.verbose) return true;
  const line = `  ${ok ? OK : FAIL} ${name}`;
  console.log(detail && (!ok || args.verbose) ? `${line}\n         ${String(detail).split("\n").join("\n         ")}` : line);
  return !!ok;
}
function note(s) { console.log(`  ${paint(2, "·")} ${s}`); }
function heading(s) { section = s; console.log(`\n${paint(1, "== " + s)}`); }

/** Runs a step; an exception counts as one failed check instead of aborting the run. */
async function step(name, fn) {
  try { return await fn(); } catch (err) { check(`${name}: ${err?.message ?? err}`, false, args.verbose ? err?.stack : undefined); return undefined; }
}

const sockets = new Set();   // every raw ws we opened
const clients = new Set();   // every client.mjs handle we opened
function closeEverything() {
  for (const h of clients) { try { h.close(); } catch { /* ignore */ } }
  for (const ws of sockets) { try { ws.terminate(); } catch { /* ignore */ } }
}

const globalTimer = setTimeout(() => {
  console.error(`\n${FAIL} global timeout after ${TIMEOUT_MS} ms (section: ${section}); closing all sockets`);
  closeEverything();
  summary(true);
  process.exit(1);
}, TIMEOUT_MS);
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => { closeEverything(); process.exit(130); });

// ------------------------------------------------------------- helpers ---

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => performance.now();
const eq = (a, b) => JSON.stringify(a) === JSON.stringify(b);
const short = (x, n = 300) => { const s = typeof x === "string" ? x : JSON.stringify(x); return s.length > n ? s.slice(0, n) + "…" : s; };
const seqList = (xs) => compactRanges(xs);

/** [1,2,3,5,7,8] -> "1-3,5,7-8" for readable reports. */
function compactRanges(xs) {
  if (!xs.length) return "(none)";
  const out = [];
  let start = xs[0], prev = xs[0];
  for (const x of xs.slice(1).concat([NaN])) {
    if (x === prev + 1) { prev = x; continue; }
    out.push(start === prev ? `${start}` : `${start}-${prev}`);
    start = prev = x;
  }
  return out.join(",");
}

async function until(pred, timeoutMs, what) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = pred();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(15);
  }
}

/** Credentials as request headers / subscribe query for one identity. */
function credHeaders(cred) {
  if (!cred) return {};
  if (cred.apiKey !== undefined) return { [API_KEY_HEADER]: cred.apiKey };
  if (cred.bearer !== undefined) return { authorization: `Bearer ${cred.bearer}` };
  return {};
}

/**
 * GET a history path and page on with `next_since` (one request reads at most 20
 * archive pages): the first answer with every page's commands, and whether all
 * said `complete`.
 */
async function historyAll(path, cred) {
  let r = await http("GET", path, { cred });
  if (r.status !== 200 || !r.json) return r;
  const json = { ...r.json, commands: [...(r.json.commands ?? [])] };
  let complete = r.json.complete === true;
  let pages = 1;
  while (Number.isInteger(r.json.next_since) && pages < 100) {
    const base = path.replace(/([?&])since=\d+&?/, "$1").replace(/[?&]$/, "");
    r = await http("GET", `${base}${base.includes("?") ? "&" : "?"}since=${r.json.next_since}`, { cred });
    if (r.status !== 200 || !r.json) return r;
    json.commands.push(...(r.json.commands ?? []));
    complete &&= r.json.complete === true;
    pages += 1;
  }
  return { ...r, json, complete, pages };
}

async function http(method, path, { body, cred, headers = {} } = {}) {
  const init = { method, headers: { ...credHeaders(cred), ...headers } };
  if (body !== undefined) { init.body = JSON.stringify(body); init.headers["content-type"] = "application/json"; }
  const res = await fetch(BASE + path, init);
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, json, text, headers: res.headers };
}

/** The contract's topic-filter semantics (§1): `*` = one segment, trailing `>` = one or more. */
function filterMatches(filter, topic) {
  const f = filter.split("."), t = topic.split(".");
  for (let i = 0; i < f.length; i++) {
    if (f[i] === ">") return i === f.length - 1 && t.length > i;
    if (i >= t.length) return false;
    if (f[i] !== "*" && f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}
const matchesAny = (filters, topic) => filters.some((f) => filterMatches(f, topic));

function stats(xs) {
  if (!xs.length) return "-";
  const s = [...xs].sort((a, b) => a - b);
  const p50 = s[Math.floor((s.length - 1) / 2)];
  const f = (x) => (x < 10 ? x.toFixed(1) : Math.round(x).toString());
  return `${f(s[0])}/${f(p50)}/${f(s.at(-1))}`;
}

/**
 * Opens a raw subscriber socket that records every frame with its arrival time.
 * Resolves after `welcome`; rejects with .status when the upgrade is refused.
 */
function openSocket(character, { label, filters, since, epoch, presence, cred, tokenInQuery } = {}) {
  const q = new URLSearchParams();
  if (filters?.length) q.set("topics", filters.join(","));
  if (since !== undefined) q.set("since", String(since));
  if (epoch !== undefined) q.set("epoch", epoch);
  if (presence) q.set("presence", "true");
  let headers = credHeaders(cred);
  if (tokenInQuery && cred?.bearer !== undefined) { q.set("token", cred.bearer); headers = {}; }
  const qs = q.toString();
  const url = `${WS_BASE}/v1/characters/${encodeURIComponent(character)}/subscribe${qs ? "?" + qs : ""}`;
  // closeTimeout: end TCP soon after a server-started close handshake, as browsers do
  // (local wrangler dev leaves it open after an admin kick or a token expiry).
  const ws = new WebSocket(url, { headers, handshakeTimeout: 10000, closeTimeout: 500 });
  sockets.add(ws);
  const s = {
    label, character, filters: filters?.length ? filters : [">"], ws, url,
    frames: [], cmds: [], welcome: null, closed: null, raw: [],
  };
  ws.on("message", (data, isBinary) => {
    const t = now();
    const text = isBinary ? data : data.toString();
    s.raw.push(text);
    let f;
    try { f = JSON.parse(text); } catch { f = { type: "__raw", text: String(text) }; }
    s.frames.push(f);
    if (f.type === "welcome" && !s.welcome) s.welcome = f;
    if (f.type === "command") s.cmds.push({ f, t });
    if (f.type === "batch") for (const c of f.commands ?? []) s.cmds.push({ f: c, t });
  });
  ws.on("close", (code, reason) => { s.closed = { code, reason: reason.toString() }; sockets.delete(ws); });
  s.close = () => new Promise((resolve) => {
    if (ws.readyState === WebSocket.CLOSED) return resolve();
    const timer = setTimeout(() => { ws.terminate(); resolve(); }, 3000);
    ws.once("close", () => { clearTimeout(timer); resolve(); });
    ws.close(1000);
  });
  return new Promise((resolve, reject) => {
    ws.once("unexpected-response", (_req, res) => {
      let body = "";
      res.on("data", (c) => { body += c; });
      res.on("end", () => {
        const err = new Error(`subscribe refused: HTTP ${res.statusCode} ${short(body, 200)}`);
        err.status = res.statusCode;
        try { err.body = JSON.parse(body); } catch { err.body = body; }
        sockets.delete(ws); ws.terminate();
        reject(err);
      });
    });
    ws.once("error", (e) => { sockets.delete(ws); reject(e); });
    ws.once("open", () => {
      until(() => s.welcome || s.closed, 10000, `welcome on ${label ?? url}`)
        .then(() => (s.welcome ? resolve(s) : reject(new Error(`closed before welcome: ${JSON.stringify(s.closed)}`))), reject);
    });
  });
}

// ----------------------------------------------------------------- JWTs ---

const b64u = (x) => Buffer.from(typeof x === "string" ? x : JSON.stringify(x)).toString("base64url");
function signJwt(payload, secret = JWT_SECRET, header = { alg: "HS256", typ: "JWT" }) {
  const head = `${b64u(header)}.${b64u(payload)}`;
  if (header.alg === "none") return `${head}.`;
  return `${head}.${createHmac("sha256", secret).update(head).digest("base64url")}`;
}
function decodeJwt(token) {
  try { return JSON.parse(Buffer.from(token.split(".")[1], "base64url").toString()); } catch { return null; }
}
const nowS = () => Math.floor(Date.now() / 1000);
function mint(claims = {}) {
  return signJwt({ sub: `itest-${RUN_ID}`, exp: nowS() + 600, ...claims });
}
function charAllowed(chars, c) {
  if (!Array.isArray(chars)) return true;
  return chars.some((p) => (typeof p === "string" && p.endsWith("*") ? c.startsWith(p.slice(0, -1)) : p === c));
}

/** The identity the suite itself uses (null when auth is off or nothing was given). */
function primaryCred() {
  if (API_KEY) return { name: "api key", apiKey: API_KEY };
  if (JWT_SECRET) return { name: "minted admin JWT", bearer: mint({ role: "admin" }) };
  if (JWT) return { name: "ITEST_JWT", bearer: JWT };
  return null;
}

// ------------------------------------------------------------ the suite ---

const TOPICS = ["face", "body.arms", "body.legs", "body.arms.left", "main", "eyes.left.blink", "legs", "face.mouth"];
const SOCKETS = [
  { label: "exact", filters: ["face"] },
  { label: "star", filters: ["body.*"] },
  { label: "all", filters: [">"] },
  { label: "none", filters: [], presence: true },
];
const CLIENT_FILTERS = ["face", "body.>"];

/** Per-character state. */
function newCharacter(letter) {
  return {
    name: `itest-${RUN_ID}-${letter}`,
    published: [],      // {seq, topic, name, params, t}
    socks: {},          // label -> socket record (the original ones)
    resumed: null,      // the star socket reopened with since/epoch
    client: null,       // { h, cmds: [{f, t}], gaps, states }
    epoch: null,
    resumeFrom: null,
  };
}

let cred = null;
let authOn = false;

async function main() {
  console.log(`animation gateway itest — env ${args.env}, ${BASE}, run ${RUN_ID}, ${N_CHARS} character(s), quiet window ${QUIET_MS} ms`);

  heading("setup");
  const health = await step("GET /healthz", () => http("GET", "/healthz"));
  if (!health) { console.error(`\ncannot reach ${BASE}: is the server running? (\`make dev\` serves http://127.0.0.1:8787)`); return; }
  check("GET /healthz answers 200 {status: ok}", health.status === 200 && health.json?.status === "ok", `${health.status} ${short(health.text)}`);
  const probe = await http("GET", `/v1/characters/itest-${RUN_ID}-probe/history`);
  authOn = probe.status === 401;
  cred = authOn ? primaryCred() : (API_KEY || JWT || JWT_SECRET ? primaryCred() : null);
  note(`auth ${authOn ? "is ON (unauthenticated history answers 401)" : `looks OFF (unauthenticated history answers ${probe.status})`}; suite identity: ${cred ? cred.name : "none"}`);
  if (authOn && !cred) {
    check("credentials for a server with auth on", false, "set ITEST_API_KEY (or ITEST_JWT / ITEST_JWT_SECRET) to test this server");
    return;
  }
  if (JWT) {
    const p = decodeJwt(JWT);
    note(`ITEST_JWT: role ${p?.role ?? "subscriber"}, chars ${p?.chars ? JSON.stringify(p.chars) : "all"}, exp in ${p?.exp ? p.exp - nowS() : "?"} s`);
  }
  await step("GET /client.mjs (served browser client)", async () => {
    const r = await http("GET", "/client.mjs");
    check("GET /client.mjs is served as JavaScript exporting subscribe", r.status === 200 && /javascript/.test(r.headers.get("content-type") ?? "") && /export function subscribe/.test(r.text), `${r.status} ${r.headers.get("content-type")}`);
  });

  const chars = Array.from({ length: N_CHARS }, (_, i) => newCharacter(String.fromCharCode(97 + i)));

  // 1. Subscribers with different filters, plus one through public/client.mjs.
  heading("subscribe");
  await Promise.all(chars.map((ch) => step(`${ch.name}: open subscribers`, async () => {
    for (const spec of SOCKETS) {
      const s = await openSocket(ch.name, { ...spec, cred });
      ch.socks[spec.label] = s;
      const w = s.welcome;
      const okW = w.character === ch.name && typeof w.client_id === "string" && w.client_id && typeof w.epoch === "string" && w.seq === 0 && eq(w.topics, s.filters);
      check(`${ch.name} ${spec.label.padEnd(5)} welcome (filters ${s.filters.join(",")})`, okW, short(w));
      ch.epoch ??= w.epoch;
    }
    const rec = { cmds: [], gaps: [], states: [], errors: [] };
    const opts = { baseUrl: BASE, WebSocket, topics: CLIENT_FILTERS, pingIntervalMs: 10000, backoff: { initialMs: 200, maxMs: 2000 },
      onCommand: (f) => rec.cmds.push({ f, t: now() }), onGap: (g) => rec.gaps.push(g), onState: (s, d) => rec.states.push({ s, ...d }), onError: (e) => rec.errors.push(e) };
    if (cred?.apiKey !== undefined) opts.headers = credHeaders(cred);
    if (cred?.bearer !== undefined) opts.token = cred.bearer;
    rec.h = clientSubscribe(ch.name, opts);
    clients.add(rec.h);
    ch.client = rec;
    await until(() => rec.h.state === "open" || rec.h.state === "closed", WAIT_MS, "client.mjs welcome");
    check(`${ch.name} client.mjs subscriber open (filters ${CLIENT_FILTERS.join(",")})`, rec.h.state === "open", JSON.stringify(rec.states.at(-1)));
  })));

  // 2. Publish: single commands across topics, one batch, then a broadcast to all.
  heading("publish");
  const publishOne = async (ch, body) => {
    const t = now();
    const r = await http("POST", `/v1/characters/${ch.name}/commands`, { body, cred });
    if (r.status !== 200) throw new Error(`POST commands answered ${r.status} ${short(r.text)}`);
    const cmds = body.commands ?? [body];
    if (!Array.isArray(r.json?.seqs) || r.json.seqs.length !== cmds.length) throw new Error(`bad answer ${short(r.text)}`);
    cmds.forEach((c, i) => ch.published.push({ seq: r.json.seqs[i], topic: c.topic ?? "main", name: c.name, params: c.params ?? {}, t }));
    return r.json;
  };
  const body = (topic, name, extra = {}) => (topic === "main" ? { name, ...extra } : { topic, name, ...extra });
  await Promise.all(chars.map((ch) => step(`${ch.name}: publish`, async () => {
    for (const [i, topic] of TOPICS.entries()) await publishOne(ch, body(topic, "move", { params: { i, phase: 1 }, duration_ms: 100 + i }));
    const batch = TOPICS.map((topic, i) => body(topic, "blink", { params: { i, phase: "batch" } }));
    const r = await publishOne(ch, { commands: batch });
    const seqs = ch.published.map((p) => p.seq);
    check(`${ch.name} ${TOPICS.length} single publishes + a batch of ${batch.length}: seqs 1..${seqs.length}`, eq(seqs, Array.from({ length: seqs.length }, (_, i) => i + 1)), seqList(seqs));
    check(`${ch.name} batch answer: epoch as in welcome, delivered counts sockets`, r.epoch === ch.epoch && Number.isInteger(r.delivered), short(r));
  })));
  await step("POST /v1/broadcast", async () => {
    const t = now();
    const r = await http("POST", "/v1/broadcast", { body: { characters: chars.map((c) => c.name), topic: "face", name: "smile", params: { broadcast: RUN_ID } }, cred });
    const okShape = r.status === 200 && Array.isArray(r.json?.results) && eq(r.json.results.map((x) => x.character), chars.map((c) => c.name));
    check(`broadcast to ${chars.length} characters answers 200 with one result each`, okShape, `${r.status} ${short(r.text)}`);
    if (!okShape) return;
    for (const [i, ch] of chars.entries()) {
      const res = r.json.results[i];
      ch.published.push({ seq: res.seq, topic: "face", name: "smile", params: { broadcast: RUN_ID }, t });
      // face matches: exact, all, none, client.mjs (face) = 4 sockets.
      check(`${ch.name} broadcast seq ${res.seq} delivered to ${res.delivered} sockets (expected 4)`, res.seq === ch.published.length && res.delivered === 4);
    }
  });

  const expectedFor = (ch, filters, fromSeq = 0, toSeq = Infinity) => ch.published.filter((p) => p.seq > fromSeq && p.seq <= toSeq && matchesAny(filters, p.topic));

  // 3. Resume: close the body.* socket once it has phase 1, publish more, reopen with since+epoch.
  heading("resume");
  await Promise.all(chars.map((ch) => step(`${ch.name}: resume`, async () => {
    const star = ch.socks.star;
    const want1 = expectedFor(ch, star.filters);
    await until(() => star.cmds.length >= want1.length, WAIT_MS, `${ch.name} star: ${want1.length} commands before closing`);
    const lastSeen = star.cmds.at(-1)?.f.seq ?? star.welcome.seq;
    await star.close();
    ch.resumeFrom = lastSeen;
    const before = ch.published.length;
    for (const [i, topic] of ["body.arms", "face", "legs", "body.legs", "body.arms.left", "body.arms", "main"].entries()) {
      await publishOne(ch, body(topic, "move", { params: { i, phase: 2 } }));
    }
    const missed = expectedFor(ch, star.filters, lastSeen);
    const again = await openSocket(ch.name, { label: "star*", filters: star.filters, since: lastSeen, epoch: ch.epoch, cred });
    ch.resumed = again;
    const rec = await until(() => again.frames.find((f) => f.type === "recovered"), WAIT_MS, `${ch.name}: recovered frame`);
    const latest = ch.published.length;
    check(`${ch.name} resume since=${lastSeen}: recovered {since ${lastSeen}, seq ${latest}, complete true, truncated false}`, eq(rec, { type: "recovered", since: lastSeen, seq: latest, complete: true, truncated: false }), short(rec));
    const replayed = again.cmds.map((c) => c.f.seq);
    check(`${ch.name} resume replays exactly the ${missed.length} missed matching commands (of ${latest - before} published while away)`, eq(replayed, missed.map((p) => p.seq)), `expected ${seqList(missed.map((p) => p.seq))}, got ${seqList(replayed)}`);
    const types = again.frames.map((f) => f.type);
    check(`${ch.name} resume frame order: welcome, replay, recovered`, types[0] === "welcome" && types.at(-1) === "recovered" && types.slice(1, -1).every((t) => t === "command" || t === "batch"), types.join(","));
  })));

  // 4. Delivery: every socket got exactly what its filters match, in order, nothing else.
  heading("delivery");
  const all = [];
  for (const ch of chars) {
    for (const [label, s] of Object.entries(ch.socks)) {
      const upTo = label === "star" ? ch.resumeFrom ?? Infinity : Infinity;
      all.push({ ch, label, filters: s.filters, got: () => s.cmds, want: () => expectedFor(ch, s.filters, 0, upTo), sock: s });
    }
    if (ch.resumed) all.push({ ch, label: "star*", filters: ch.resumed.filters, got: () => ch.resumed.cmds, want: () => expectedFor(ch, ch.resumed.filters, ch.resumeFrom), sock: ch.resumed, replayFrom: ch.resumeFrom });
    if (ch.client) all.push({ ch, label: "client", filters: CLIENT_FILTERS, got: () => ch.client.cmds, want: () => expectedFor(ch, CLIENT_FILTERS), client: ch.client });
  }
  await step("waiting for every expected command", () => until(() => all.every((x) => x.got().length >= x.want().length), WAIT_MS, "all expected commands").catch((e) => { note(e.message); }));
  await sleep(QUIET_MS);

  for (const ch of chars) {
    section = `delivery ${ch.name}`;
    console.log(`\n${paint(1, `-- ${ch.name}`)}  epoch ${ch.epoch}, ${ch.published.length} commands published`);
    console.log(`        ${"socket".padEnd(7)} ${"filters".padEnd(14)} ${"expected seqs".padEnd(26)} ${"arrived seqs".padEnd(26)} latency ms min/p50/max`);
    const perTopic = new Map(TOPICS.map((t) => [t, { published: 0, deliveries: 0, lat: [] }]));
    for (const p of ch.published) perTopic.get(p.topic).published += 1;
    const byPub = new Map(ch.published.map((p) => [p.seq, p]));
    for (const x of all.filter((y) => y.ch === ch)) {
      const got = x.got(), want = x.want();
      const gotSeqs = got.map((c) => c.f.seq), wantSeqs = want.map((p) => p.seq);
      const lat = [];
      // Latency publish -> receive, live deliveries only (star* got its commands by replay).
      if (x.replayFrom === undefined) {
        for (const c of got) {
          const p = byPub.get(c.f.seq);
          if (!p) continue;
          const l = c.t - p.t;
          lat.push(l);
          const pt = perTopic.get(p.topic); pt.deliveries += 1; pt.lat.push(l);
        }
      }
      const contentOk = got.every((c) => { const p = byPub.get(c.f.seq); return p && c.f.topic === p.topic && c.f.name === p.name && eq(c.f.params, p.params) && c.f.character === ch.name && c.f.epoch === ch.epoch; });
      const rowOk = [];
      const q = (name, ok, detail) => rowOk.push({ name, ok, detail });
      q(`${ch.name} ${x.label}: exactly the ${want.length} commands its filters match, in seq order, nothing else`, eq(gotSeqs, wantSeqs) && contentOk, `expected ${seqList(wantSeqs)} got ${seqList(gotSeqs)}${contentOk ? "" : " (content differs from what was published)"}`);
      if (x.sock) {
        const bad = x.sock.frames.filter((f) => !["welcome", "command", "batch", "recovered", "presence"].includes(f.type));
        const pres = x.sock.frames.filter((f) => f.type === "presence");
        q(`${ch.name} ${x.label}: no error or unknown frames${x.sock === ch.socks.none ? "" : ", no presence frames (not asked for)"}`, !bad.length && (x.sock === ch.socks.none || !pres.length), short(bad.concat(x.sock === ch.socks.none ? [] : pres)));
        if (x.label !== "star") q(`${ch.name} ${x.label}: socket still open`, !x.sock.closed, JSON.stringify(x.sock.closed));
      }
      if (x.client) q(`${ch.name} client.mjs: no gap reported, still open, caught up at seq ${x.client.h.seq}`, !x.client.gaps.length && x.client.h.state === "open" && x.client.h.seq === (want.at(-1)?.seq ?? 0), short({ gaps: x.client.gaps, state: x.client.h.state, seq: x.client.h.seq, errors: x.client.errors.map(String) }));
      const allOk = rowOk.every((r) => r.ok);
      console.log(`   ${allOk ? OK : FAIL} ${x.label.padEnd(7)} ${x.filters.join(",").padEnd(14)} ${seqList(wantSeqs).padEnd(26)} ${seqList(gotSeqs).padEnd(26)} ${x.label === "star*" ? "(by replay)" : stats(lat)}`);
      for (const r of rowOk) check(r.name, r.ok, r.detail, { quiet: true });

    }
    // Presence: the `none` socket asked for it and saw the star socket leave and come back.
    const none = ch.socks.none, star = ch.socks.star;
    if (none && star && ch.resumed) {
      const pres = none.frames.filter((f) => f.type === "presence");
      const left = pres.find((f) => f.event === "leave" && f.client_id === star.welcome.client_id);
      const joined = pres.find((f) => f.event === "join" && f.client_id === ch.resumed.welcome.client_id);
      check(`${ch.name} presence: the presence socket (none) saw star leave and star* join`, !!left && !!joined, short(pres));
    }
    console.log(`\n        ${"topic".padEnd(16)} ${"published".padEnd(10)} ${"deliveries".padEnd(11)} latency ms min/p50/max (publish sent -> frame received, live only)`);
    for (const [t, v] of perTopic) console.log(`        ${t.padEnd(16)} ${String(v.published).padEnd(10)} ${String(v.deliveries).padEnd(11)} ${stats(v.lat)}`);
  }

  // 5. Admin listings equal the sockets this run has open.
  heading("admin");
  const openIds = (ch) => {
    const xs = [];
    for (const s of [...Object.values(ch.socks), ch.resumed]) if (s && !s.closed) xs.push({ client_id: s.welcome.client_id, topics: s.filters, presence: !!(s === ch.socks.none) });
    if (ch.client?.h.state === "open") xs.push({ client_id: ch.client.h.clientId, topics: CLIENT_FILTERS, presence: false });
    return xs.sort((a, b) => a.client_id.localeCompare(b.client_id));
  };
  for (const ch of chars) {
    await step(`${ch.name}: GET /v1/admin/characters/{c}/subscriptions`, async () => {
      const want = openIds(ch);
      let r, got;
      const norm = (subs) => (subs ?? []).map((s) => ({ client_id: s.client_id, topics: s.topics, presence: s.presence })).sort((a, b) => String(a.client_id).localeCompare(String(b.client_id)));
      const deadline = Date.now() + 3000;
      do {
        r = await http("GET", `/v1/admin/characters/${ch.name}/subscriptions`, { cred });
        got = r.status === 200 ? norm(r.json?.subscribers) : null;
        if (got && eq(got, want)) break;
        await sleep(200);
      } while (Date.now() < deadline && r.status === 200);
      check(`${ch.name} admin subscriptions: 200, ${want.length} subscribers = this run's open sockets (ids, topics, presence)`, r.status === 200 && eq(got, want), r.status === 200 ? `expected ${short(want, 600)}\ngot      ${short(got, 600)}` : `${r.status} ${short(r.text)}`);
      if (r.status === 200) {
        const j = r.json;
        const fieldsOk = j.character === ch.name && j.epoch === ch.epoch && j.seq === ch.published.length &&
          (j.subscribers ?? []).every((s) => (s.user === null || typeof s.user === "string") && Number.isFinite(s.connected_at) && Math.abs(s.connected_at - Date.now()) < 10 * 60 * 1000);
        check(`${ch.name} admin subscriptions: character, epoch, seq ${ch.published.length}, user, connected_at`, fieldsOk, short(j, 500));
      }
    });
  }
  await step("GET /v1/admin/subscriptions", async () => {
    const r = await http("GET", "/v1/admin/subscriptions", { cred });
    if (!check("GET /v1/admin/subscriptions answers 200 with characters and total_subscribers", r.status === 200 && Array.isArray(r.json?.characters) && Number.isInteger(r.json?.total_subscribers), `${r.status} ${short(r.text)}`)) return;
    let sum = 0;
    for (const ch of chars) {
      const subs = openIds(ch);
      sum += subs.length;
      const topics = {};
      for (const s of subs) for (const f of s.topics) topics[f] = (topics[f] ?? 0) + 1;
      const entry = r.json.characters.find((x) => x.character === ch.name);
      const sortObj = (o) => Object.fromEntries(Object.entries(o ?? {}).sort());
      check(`${ch.name} in the global listing: ${subs.length} subscribers, filter counts ${short(sortObj(topics))}`, entry && entry.subscribers === subs.length && eq(sortObj(entry.topics), sortObj(topics)), short(entry));
    }
    check(`total_subscribers (${r.json.total_subscribers}) counts at least this run's ${sum}`, r.json.total_subscribers >= sum);
  });
  await step("GET /v1/admin/logs", async () => {
    // The contract leaves the body's shape open: accept {"events":[...]} or a bare array.
    // Logs are written off the hot path, so wait a little for this run's events.
    const ch = chars[0];
    const ids = new Set([...Object.values(ch.socks), ch.resumed].filter(Boolean).map((s) => s.welcome.client_id));
    const eventsOf = (r) => (Array.isArray(r.json) ? r.json : Array.isArray(r.json?.events) ? r.json.events : null);
    let r, events;
    const deadline = Date.now() + 6000;
    do {
      r = await http("GET", `/v1/admin/logs?character=${ch.name}&limit=100`, { cred });
      events = r.status === 200 ? eventsOf(r) : null;
      if (events?.some((e) => e.event === "publish") && events.some((e) => ids.has(e.client_id))) break;
      await sleep(500);
    } while (Date.now() < deadline && r.status === 200);
    if (!check(`GET /v1/admin/logs?character=${ch.name}&limit=100 answers 200 with a list of events`, r.status === 200 && Array.isArray(events), `${r.status} ${short(r.text)}`)) return;
    const ts = events.map((e) => e.ts).filter(Number.isFinite);
    check("logs: only this character's events, newest first", events.every((e) => e.character === undefined || e.character === ch.name) && eq(ts, [...ts].sort((a, b) => b - a)), short(events, 600));
    check("logs: this run's connects and publishes are there", events.some((e) => e.event === "publish") && events.some((e) => ids.has(e.client_id)), short(events.map((e) => e.event), 300));
  });

  // 6. History equals what was published (and what the `>` socket saw).
  heading("history");
  for (const ch of chars) {
    await step(`${ch.name}: history`, async () => {
      const r = await historyAll(`/v1/characters/${ch.name}/history?limit=1000`, cred);
      if (!check(`${ch.name} GET history answers 200`, r.status === 200, `${r.status} ${short(r.text)}`)) return;
      const h = r.json;
      check(`${ch.name} history: complete on every page (${r.pages} pages)`, r.complete === true);
      check(`${ch.name} history: character, epoch, seq ${ch.published.length}`, h.character === ch.name && h.epoch === ch.epoch && h.seq === ch.published.length, short({ character: h.character, epoch: h.epoch, seq: h.seq }));
      const asPublished = (h.commands ?? []).map((c) => ({ seq: c.seq, topic: c.topic, name: c.name, params: c.params }));
      const want = ch.published.map((p) => ({ seq: p.seq, topic: p.topic, name: p.name, params: p.params }));
      check(`${ch.name} history: the ${want.length} published commands, oldest first`, eq(asPublished, want), `expected ${seqList(want.map((x) => x.seq))} got ${seqList(asPublished.map((x) => x.seq))}`);
      check(`${ch.name} history frames are identical to what the ">" socket received`, eq(h.commands, ch.socks.all.cmds.map((c) => c.f)));
      const face = await historyAll(`/v1/characters/${ch.name}/history?topics=face&since=2`, cred);
      const wantFace = expectedFor(ch, ["face"], 2).map((p) => p.seq);
      check(`${ch.name} history?topics=face&since=2 = ${seqList(wantFace)}`, face.status === 200 && eq(face.json?.commands?.map((c) => c.seq), wantFace), `${face.status} ${seqList(face.json?.commands?.map((c) => c.seq) ?? [])}`);
    });
  }

  // 7. Auth matrix (only with credentials; only where auth is on, or in prod).
  heading("auth");
  if (!(API_KEY || JWT || JWT_SECRET)) note("no ITEST_API_KEY / ITEST_JWT / ITEST_JWT_SECRET: auth matrix skipped");
  else if (!authOn && args.env === "dev") note("credentials given but the server answers without them (AUTH_ENABLED off): auth matrix skipped in dev");
  else await authMatrix(`itest-${RUN_ID}-auth`);
}

// ---------------------------------------------------------- auth matrix ---

/** Runs one operation with one identity and returns the HTTP status (101 for an accepted subscribe). */
async function attempt(op, character, c, { tokenInQuery } = {}) {
  if (op === "subscribe") {
    try {
      const s = await openSocket(character, { label: "auth", cred: c, tokenInQuery });
      await s.close();
      return { status: 101 };
    } catch (err) {
      return { status: err.status ?? 0, json: typeof err.body === "object" ? err.body : null, text: String(err.body ?? err.message) };
    }
  }
  if (op === "publish") return http("POST", `/v1/characters/${character}/commands`, { body: { name: "auth-probe" }, cred: c });
  if (op === "history") return http("GET", `/v1/characters/${character}/history`, { cred: c });
  if (op === "admin") return http("GET", "/v1/admin/subscriptions", { cred: c });
  throw new Error(op);
}

const OPS = ["subscribe", "publish", "history", "admin"];
const NEED = { subscribe: 0, history: 0, publish: 1, admin: 2 };
const RANK = { subscriber: 0, publisher: 1, admin: 2 };

/** What a JWT with these claims should get for op on character: 2xx, 401 or 403. */
function expectFor(claims, op, character) {
  if (!claims || typeof claims.sub !== "string" || !Number.isFinite(claims.exp) || claims.exp <= nowS()) return 401;
  if (Number.isFinite(claims.nbf) && claims.nbf > nowS() + 5) return 401;
  const rank = RANK[claims.role ?? "subscriber"];
  if (rank === undefined) return 403;
  if (rank < NEED[op]) return 403;
  if (op !== "admin" && !charAllowed(claims.chars, character)) return 403;
  return 200;
}

async function authMatrix(character) {
  const rows = [
    { name: "no credentials", cred: null, expect: () => 401 },
    { name: "garbled bearer token", cred: { bearer: "garbled.not-a.jwt" }, expect: () => 401, queryToo: true },
    { name: "wrong API key", cred: { apiKey: `wrong-${RUN_ID}` }, expect: () => 401 },
  ];
  if (API_KEY) rows.push({ name: "right API key", cred: { apiKey: API_KEY }, expect: () => 200 });
  if (JWT) rows.push({ name: "ITEST_JWT", cred: { bearer: JWT }, expect: (op) => expectFor(decodeJwt(JWT), op, character), queryToo: true });
  if (JWT_SECRET) {
    const add = (name, claims, token = mint(claims)) => rows.push({ name, cred: { bearer: token }, expect: (op) => (name.startsWith("bad:") ? 401 : expectFor({ sub: "x", exp: nowS() + 600, ...claims }, op, character)), queryToo: true });
    add("JWT role subscriber", { role: "subscriber" });
    add("JWT role publisher", { role: "publisher" });
    add("JWT role admin", { role: "admin" });
    add("JWT no role (= subscriber)", {});
    add("JWT chars [itest-*] publisher", { role: "publisher", chars: ["itest-*"] });
    add("JWT chars [someone-else] publisher", { role: "publisher", chars: ["someone-else", "npc-*"] });
    add("JWT chars [exact name] subscriber", { role: "subscriber", chars: [character] });
    add("bad: JWT expired", {}, signJwt({ sub: "x", role: "admin", exp: nowS() - 60 }));
    add("bad: JWT nbf in the future", {}, signJwt({ sub: "x", role: "admin", exp: nowS() + 600, nbf: nowS() + 300 }));
    add("bad: JWT without exp", {}, signJwt({ sub: "x", role: "admin" }));
    add("bad: JWT without sub", {}, signJwt({ role: "admin", exp: nowS() + 600 }));
    add("bad: JWT wrong secret", {}, signJwt({ sub: "x", role: "admin", exp: nowS() + 600 }, `${JWT_SECRET}-wrong`));
    add("bad: JWT alg none", {}, signJwt({ sub: "x", role: "admin", exp: nowS() + 600 }, null, { alg: "none", typ: "JWT" }));
    add("bad: JWT alg HS512", {}, (() => {
      const head = `${b64u({ alg: "HS512", typ: "JWT" })}.${b64u({ sub: "x", role: "admin", exp: nowS() + 600 })}`;
      return `${head}.${createHmac("sha512", JWT_SECRET).update(head).digest("base64url")}`;
    })());
  }
  console.log(`   expected -> got per operation (2xx/101 = allowed; subscribe also with ?token= for JWTs)`);
  console.log(`   ${"identity".padEnd(36)} ${["subscribe", "subscribe?token", "publish", "history", "admin"].map((o) => o.padEnd(16)).join("")}`);
  for (const row of rows) {
    const cells = [];
    for (const op of OPS) {
      const want = row.expect(op);
      const variants = op === "subscribe" ? [{ tokenInQuery: false }, { tokenInQuery: true }] : [{}];
      for (const v of variants) {
        if (v.tokenInQuery && !row.queryToo) { cells.push("-"); continue; }
        const r = await attempt(op, character, row.cred, v);
        const got = r.status;
        const ok = want === 200 ? got >= 200 && got < 300 || got === 101 : got === want && r.json?.error?.code === (want === 401 ? "unauthorized" : "forbidden");
        const label = `${op}${v.tokenInQuery ? " (?token=)" : ""}`;
        results.push({ section: "auth", name: `${row.name}: ${label} -> ${want === 200 ? "2xx" : want}`, ok, detail: `got ${got} ${short(r.text ?? "", 200)}` });
        cells.push(`${ok ? "ok" : "FAIL"} ${want === 200 ? "2xx" : want}->${got}`);
      }
    }
    const line = `   ${row.name.padEnd(36)} ${cells.map((c) => c.padEnd(16)).join("")}`;
    console.log(cells.some((c) => c.startsWith("FAIL")) ? paint(31, line) : line);
  }

  if (JWT_SECRET) {
    await step("a socket whose token expires is closed with 4001", async () => {
      const token = mint({ role: "subscriber", exp: nowS() + 3 });
      const s = await openSocket(character, { label: "expiring", cred: { bearer: token }, tokenInQuery: true });
      await sleep(4000);
      // Give a lazily checking server a reason to look at the socket.
      await http("POST", `/v1/characters/${character}/commands`, { body: { name: "after-expiry" }, cred: primaryCred() });
      try { s.ws.send("{\"type\":\"subscribe\",\"topics\":[\">\"]}"); } catch { /* closed already */ }
      await until(() => s.closed, 8000, "close 4001").catch(() => {});
      check("a socket whose token expired is closed with code 4001", s.closed?.code === 4001, JSON.stringify(s.closed));
      if (!s.closed) await s.close();
    });
  }
}

// -------------------------------------------------------------- summary ---

function summary(timedOut = false) {
  const failed = results.filter((r) => !r.ok);
  const bySection = new Map();
  for (const r of results) {
    const key = r.section.replace(/^delivery .*/, "delivery");
    const v = bySection.get(key) ?? { ok: 0, fail: 0 };
    r.ok ? v.ok++ : v.fail++;
    bySection.set(key, v);
  }
  console.log(`\n${paint(1, "== summary")} (${BASE}, run ${RUN_ID})`);
  for (const [s, v] of bySection) console.log(`   ${s.padEnd(12)} ${String(v.ok).padStart(4)} ok ${v.fail ? paint(31, `${String(v.fail).padStart(4)} failed`) : ""}`);
  if (failed.length) {
    console.log(`\n${paint(31, `${failed.length} check(s) failed`)}${timedOut ? " (global timeout)" : ""}:`);
    for (const r of failed) console.log(`   [${r.section}] ${r.name}${r.detail ? ` — ${short(r.detail, 400)}` : ""}`);
  } else if (!timedOut && results.length) console.log(paint(32, `\nall ${results.length} checks passed`));
}

let exitCode = 1;
try {
  await main();
  exitCode = results.length && results.every((r) => r.ok) ? 0 : 1;
} catch (err) {
  check(`unexpected error: ${err?.stack ?? err}`, false);
} finally {
  clearTimeout(globalTimer);
  closeEverything();
  summary();
  // Let close frames go out, then exit even if something still holds the loop.
  setTimeout(() => process.exit(exitCode), 200);
}
