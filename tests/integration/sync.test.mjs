// Synchronized playback with public/client.mjs against a real gateway: two Node
// clients, one whose clock runs 3 s fast and whose socket delivers every frame
// ~150 ms late, both call onCommand for a command published with
// `at = now + 500 ms` within 25 ms of each other and of `at` on the real clock.
// Then: the playout delay for commands without `at`, late commands, seq order,
// and the ServerClock's estimate (lowest round trip wins, gradual correction)
// against a scripted fetch.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { subscribe, publish, serverTime, ServerClock } from "../../public/client.mjs";
import { BASE, uniqueCharacter, sleep, WS_OPTIONS } from "./helpers.mjs";

const TOLERANCE_MS = 25;
const SKEW_MS = 3000;
const SOCKET_DELAY_MS = 150;

const open = new Set();
after(() => { for (const h of open) h.close(); });

/** The real clock, read independently of any client's injected one. */
const realNow = () => performance.timeOrigin + performance.now();

/** A `ws` WebSocket whose incoming messages reach the client `delayMs` late. */
function delayedWebSocket(delayMs) {
  return class Delayed extends WebSocket {
    constructor(url, protocols, options = {}) { super(url, protocols, { ...WS_OPTIONS, ...options }); }
    get onmessage() { return super.onmessage; }
    set onmessage(fn) { super.onmessage = fn && ((ev) => setTimeout(() => fn(ev), delayMs)); }
  };
}

class Plain extends WebSocket {
  constructor(url, protocols, options = {}) { super(url, protocols, { ...WS_OPTIONS, ...options }); }
}

/** A synchronized client recording, for each command, the real time onCommand ran. */
async function viewer(character, { now, WebSocket: WS = Plain, sync = {} } = {}) {
  const rec = { fired: [], errors: [], welcomed: false };
  const h = subscribe(character, {
    baseUrl: BASE, WebSocket: WS, now, sync: { resampleMs: 0, ...sync },
    onCommand: (cmd, meta) => rec.fired.push({ cmd, meta, real: realNow() }),
    onWelcome: () => { rec.welcomed = true; },
    onError: (e) => rec.errors.push(e),
  });
  open.add(h);
  await h.clock.ready;
  for (let i = 0; i < 200 && !rec.welcomed; i++) await sleep(10);
  assert.ok(rec.welcomed, "welcome");
  return { h, rec };
}

async function waitFired(rec, n, timeoutMs = 5000) {
  const end = Date.now() + timeoutMs;
  while (rec.fired.length < n && Date.now() < end) await sleep(5);
  assert.ok(rec.fired.length >= n, `fired ${rec.fired.length} of ${n}`);
}

test("two viewers, one 3 s fast with a 150 ms slower socket, play a command at `at` within 25 ms", async (t) => {
  const c = uniqueCharacter("sync");
  const a = await viewer(c);
  const b = await viewer(c, { now: () => Date.now() + SKEW_MS, WebSocket: delayedWebSocket(SOCKET_DELAY_MS) });
  // The skewed client found its clock 3 s ahead of the server's.
  assert.ok(Math.abs(b.h.clock.offset + SKEW_MS) <= TOLERANCE_MS, `offset ${b.h.clock.offset}`);
  assert.ok(Math.abs(a.h.clock.offset) <= TOLERANCE_MS, `offset ${a.h.clock.offset}`);
  const rounds = 5;
  const spreads = [], errors = [];
  for (let i = 0; i < rounds; i++) {
    const at = (await serverTime(BASE)) + 500;
    await publish(BASE, c, { topic: "body", name: "wave", at });
    await waitFired(a.rec, i + 1);
    await waitFired(b.rec, i + 1);
    const fa = a.rec.fired[i], fb = b.rec.fired[i];
    assert.equal(fa.cmd.at, at);
    assert.equal(fb.cmd.at, at);
    assert.equal(fa.meta.late, false);
    assert.equal(fb.meta.late, false);
    const spread = Math.abs(fa.real - fb.real);
    const err = Math.max(Math.abs(fa.real - at), Math.abs(fb.real - at));
    spreads.push(spread); errors.push(err);
    assert.ok(spread <= TOLERANCE_MS, `round ${i}: viewers ${spread.toFixed(1)} ms apart`);
    assert.ok(err <= TOLERANCE_MS, `round ${i}: ${(fa.real - at).toFixed(1)} / ${(fb.real - at).toFixed(1)} ms from at`);
  }
  const fmt = (xs) => xs.map((x) => x.toFixed(1)).join(", ");
  t.diagnostic(`offsets a ${a.h.clock.offset.toFixed(1)} (rtt ${a.h.clock.rtt}) b ${b.h.clock.offset.toFixed(1)} (rtt ${b.h.clock.rtt}) ms`);
  t.diagnostic(`spread between viewers, ms: ${fmt(spreads)}; worst distance from at, ms: ${fmt(errors)}`);
  assert.deepEqual(a.rec.errors, []);
  assert.deepEqual(b.rec.errors, []);
});

test("commands without `at` play at ts + playoutDelayMs on both viewers", async (t) => {
  const c = uniqueCharacter("sync-ts");
  const sync = { playoutDelayMs: 300 };
  const a = await viewer(c, { sync });
  const b = await viewer(c, { sync, now: () => Date.now() + SKEW_MS, WebSocket: delayedWebSocket(SOCKET_DELAY_MS) });
  await publish(BASE, c, { name: "nod" });
  await waitFired(a.rec, 1);
  await waitFired(b.rec, 1);
  const [fa, fb] = [a.rec.fired[0], b.rec.fired[0]];
  assert.equal(fa.cmd.at, null);
  const due = fa.cmd.ts + 300;
  assert.equal(fa.meta.dueAt, due);
  assert.equal(fb.meta.late, false);
  const spread = Math.abs(fa.real - fb.real);
  t.diagnostic(`spread ${spread.toFixed(1)} ms; from ts+300: ${(fa.real - due).toFixed(1)} / ${(fb.real - due).toFixed(1)} ms`);
  assert.ok(spread <= TOLERANCE_MS, `${spread} ms apart`);
  assert.ok(Math.abs(fa.real - due) <= TOLERANCE_MS && Math.abs(fb.real - due) <= TOLERANCE_MS);
});

test("a late command is delivered at once and reported late; seq order holds over `at`", async () => {
  const c = uniqueCharacter("sync-late");
  const a = await viewer(c);
  const now = await serverTime(BASE);
  const t0 = realNow();
  await publish(BASE, c, [
    { name: "past", at: now - 2000 },
    { name: "later", at: now + 400 },
    { name: "sooner", at: now + 100 },
  ]);
  await waitFired(a.rec, 3);
  const [past, later, sooner] = a.rec.fired;
  assert.deepEqual(a.rec.fired.map((f) => f.cmd.name), ["past", "later", "sooner"]);
  assert.equal(past.meta.late, true);
  assert.ok(past.meta.lateByMs >= 1900, `lateByMs ${past.meta.lateByMs}`);
  assert.ok(past.real - t0 < 300, "delivered at once");
  assert.equal(later.meta.late, false);
  assert.ok(Math.abs(later.real - (now + 400)) <= TOLERANCE_MS);
  // `sooner` waited for the seq before it, so it is late and plays right after it.
  assert.equal(sooner.meta.late, true);
  assert.ok(sooner.real - later.real < TOLERANCE_MS);
  assert.equal(a.h.pending, 0);
  assert.equal(a.h.lastDeliveredSeq, sooner.cmd.seq);
});

test("a shared clock serves several subscriptions, its own `now` included", async () => {
  const c = uniqueCharacter("sync-shared");
  const clock = new ServerClock({ baseUrl: BASE, now: () => Date.now() - SKEW_MS, resampleMs: 0 });
  await clock.ready;
  assert.ok(Math.abs(clock.offset - SKEW_MS) <= TOLERANCE_MS, `offset ${clock.offset}`);
  // The subscriptions' own `now` (unshifted) is not what the shared clock reads.
  const a = await viewer(c, { sync: { clock } });
  const b = await viewer(c, { sync: { clock }, WebSocket: delayedWebSocket(SOCKET_DELAY_MS) });
  assert.equal(a.h.clock, clock);
  const at = (await serverTime(BASE)) + 400;
  await publish(BASE, c, { name: "wave", at });
  await waitFired(a.rec, 1);
  await waitFired(b.rec, 1);
  for (const v of [a, b]) assert.ok(Math.abs(v.rec.fired[0].real - at) <= TOLERANCE_MS, `${v.rec.fired[0].real - at} ms from at`);
  a.h.close(); b.h.close();
  // Closing the subscriptions leaves a shared clock running.
  assert.ok(Number.isFinite((await clock.sync())?.offset));
  clock.close();
});

test("closing a synchronized subscription drops what waits and stops its clock", async () => {
  const c = uniqueCharacter("sync-close");
  const a = await viewer(c);
  const now = await serverTime(BASE);
  await publish(BASE, c, { name: "wave", at: now + 300 });
  for (let i = 0; i < 100 && a.h.pending === 0; i++) await sleep(5);
  assert.equal(a.h.pending, 1);
  a.h.close();
  await sleep(450);
  assert.equal(a.rec.fired.length, 0);
  assert.equal(a.h.pending, 0);
});

/** A fetch answering /v1/time from a scripted server clock after scripted delays. */
function scriptedFetch(clock, serverOffset, delays) {
  let i = 0;
  return async (url) => {
    assert.match(String(url), /\/v1\/time$/);
    const [up, down] = delays[i++ % delays.length];
    clock.t += up;
    const now = clock.t + serverOffset;
    clock.t += down;
    return { ok: true, status: 200, json: async () => ({ now }) };
  };
}

test("ServerClock: the lowest round trip wins, corrections slew, big ones step", async () => {
  const clock = { t: 1_000_000 };
  const now = () => clock.t;
  // True offset 5000; asymmetric delays skew every sample but the fastest one.
  const fetch = scriptedFetch(clock, 5000, [[80, 10], [3, 3], [40, 200], [25, 5]]);
  const sc = new ServerClock({ baseUrl: "http://gw.test", fetch, now, samples: 4, resampleMs: 0, maxSlewPerSecondMs: 50 });
  const first = await sc.ready;
  assert.equal(first.rtt, 6);
  assert.equal(sc.offset, 5000);
  assert.equal(sc.rtt, 6);
  assert.equal(sc.serverNow(), clock.t + 5000);
  assert.equal(sc.toLocal(clock.t + 5000 + 100), clock.t + 100);
  // The server's clock moves by 100 ms: the next round slews towards it, 50 ms/s.
  sc._fetch = scriptedFetch(clock, 5100, [[2, 2]]);
  await sc.sync();
  assert.equal(sc.targetOffset, 5100);
  assert.equal(sc.offset, 5000);
  clock.t += 1000;
  assert.equal(sc.offset, 5050);
  clock.t += 1000;
  assert.equal(sc.offset, 5100);
  clock.t += 5000;
  assert.equal(sc.offset, 5100);
  // More than stepThresholdMs away: stepped at once.
  sc._fetch = scriptedFetch(clock, 9000, [[2, 2]]);
  await sc.sync();
  assert.equal(sc.offset, 9000);
  // Every sample failing keeps the estimate and reports it.
  const errors = [];
  const failing = new ServerClock({ baseUrl: "http://gw.test", fetch: async () => { throw new Error("down"); }, now, samples: 2, resampleMs: 0, onError: (e) => errors.push(e) });
  assert.equal(await failing.ready, null);
  assert.equal(failing.synced, false);
  assert.equal(failing.offset, 0);
  assert.equal(errors.length, 1);
  sc.close(); failing.close();
});
