// The browser page against a real gateway, in Debian's Chromium driven by playwright-core
// (no browser download). Two pages each watch one character; commands published over
// HTTP must change the right page's character and leave the other alone; the admin view
// must list both pages' subscriptions and disconnect one; with synchronized playback on,
// two windows (one with its socket 150 ms slower) play a gesture within 50 ms of each
// other; a page opened after retained pose commands starts in that pose at once. Screenshots of the viewer and the admin view go to $ARTIFACTS_DIR/browser/.
//
//   GATEWAY_URL=http://127.0.0.1:8787 ARTIFACTS_DIR=artifacts \
//     node --test --test-concurrency=1 tests/browser/*.test.mjs
//
// CHROMIUM_PATH overrides /usr/bin/chromium; BROWSER_TEST_CHARACTERS=alice,bob uses
// those names instead of unique ones (for README screenshots against a fresh server).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdir } from "node:fs/promises";
import { existsSync } from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

const BASE = (process.env.GATEWAY_URL ?? "http://127.0.0.1:8787").replace(/\/+$/, "");
const WS_BASE = BASE.replace(/^http/, "ws");
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const OUT = path.join(process.env.ARTIFACTS_DIR ?? "artifacts", "browser");
const suffix = `${process.pid.toString(36)}${Date.now().toString(36).slice(-4)}`;
const [A, B] = process.env.BROWSER_TEST_CHARACTERS?.split(",") ?? [`alice-${suffix}`, `bob-${suffix}`];
const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const DESKTOP = { width: 1280, height: 860 };
const PHONE = { width: 390, height: 844 };

let browser;
/** Every page opened, with what it requested and any error it raised. */
const opened = [];

before(async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: scripts/bootstrap.sh installs Debian's chromium`);
  await mkdir(OUT, { recursive: true });
  // launch() gives every run a fresh temporary profile (--user-data-dir) of its own.
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, timeout: 60_000 });
});

after(async () => { await browser?.close(); });

async function openPage(query, viewport = DESKTOP) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1, colorScheme: "light", reducedMotion: "no-preference" });
  const page = await context.newPage();
  const rec = { page, requests: [], sockets: [], errors: [] };
  page.on("request", (r) => rec.requests.push(r.url()));
  page.on("websocket", (ws) => rec.sockets.push(ws.url()));
  page.on("pageerror", (err) => rec.errors.push(`pageerror: ${err.message}`));
  page.on("console", (m) => {
    // Chromium logs this when client.mjs's keep-alive `ping` fires on a socket the server
    // is closing (its close event not yet delivered): harmless, and not this page's code.
    if (m.type() === "error") rec.errors.push(`console: ${m.text()}`);
  });
  opened.push(rec);
  await page.goto(`${BASE}/${query}`);
  await page.waitForSelector("body[data-ready=true]");
  return page;
}

const card = (c) => `.char-card[data-character="${c}"]`;

/** Waits until every named character's card is subscribed (`data-state="open"`). */
async function waitLive(page, ...chars) {
  for (const c of chars) await page.waitForSelector(`${card(c)}[data-state="open"]`, { timeout: 20_000 });
}

async function post(pathname, body) {
  const res = await fetch(BASE + pathname, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  const json = await res.json();
  assert.equal(res.status, 200, `POST ${pathname}: ${JSON.stringify(json)}`);
  return json;
}
const publish = (c, cmd) => post(`/v1/characters/${encodeURIComponent(c)}/commands`, cmd);

/** The state a character card exposes. */
const cardState = (page, c) => page.$eval(card(c), (el) => ({ ...el.dataset }));

async function waitSeq(page, c, seq) {
  await page.waitForSelector(`${card(c)}[data-last-seq="${seq}"]`, { timeout: 10_000 });
  return cardState(page, c);
}

let pageA, pageB;

test("GET / serves the page; it loads nothing from outside the gateway", async () => {
  const res = await fetch(`${BASE}/`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type"), /text\/html/);
  pageA = await openPage(`?characters=${A}`);
  pageB = await openPage(`?characters=${B}`);
  await waitLive(pageA, A);
  await waitLive(pageB, B);
  assert.equal(await pageA.title(), "Animation Gateway");
  assert.deepEqual(await pageA.$$eval(".char-card", (els) => els.map((e) => e.dataset.character)), [A]);
  assert.match(await pageA.$eval(card(A), (el) => el.dataset.clientId), /\S/);
});

test("a command published over HTTP changes the right page's character, not the other", async () => {
  const before = await cardState(pageB, B);
  const res = await publish(A, { topic: "body", name: "jump", params: { height: 0.8 }, duration_ms: 4000 });
  const [seq] = res.seqs;
  assert.equal(res.delivered, 1, "exactly one socket (page A) watches A");
  const a = await waitSeq(pageA, A, seq);
  assert.equal(a.animation, "jump");
  assert.equal(a.lastCommand, "jump");
  assert.equal(a.lastTopic, "body");
  // The live log shows seq, topic and a latency.
  const row = await pageA.$eval(`.log-row.cmd[data-character="${A}"][data-seq="${seq}"]`, (el) => ({
    topic: el.querySelector(".topic").textContent, name: el.querySelector(".name b").textContent,
    seq: el.querySelector(".seq").textContent, latency: el.querySelector(".lat").textContent,
  }));
  assert.deepEqual({ topic: row.topic, name: row.name, seq: row.seq }, { topic: "body", name: "jump", seq: `#${seq}` });
  assert.match(row.latency, /^\d+ ms$/);
  // Page B saw nothing.
  await pageB.waitForTimeout(500);
  const b = await cardState(pageB, B);
  assert.equal(b.lastSeq, "", "page B must not receive A's command");
  assert.equal(b.animation, "idle");
  assert.equal(b.lastCommand, before.lastCommand);
  assert.equal(await pageB.$$eval(".log-row.cmd", (rows) => rows.length), 0);

  // And the other way round.
  const res2 = await publish(B, { topic: "face", name: "smile", params: { intensity: 1 }, duration_ms: 4000 });
  const b2 = await waitSeq(pageB, B, res2.seqs[0]);
  assert.equal(b2.animation, "smile");
  assert.equal((await cardState(pageA, A)).lastSeq, String(seq), "page A must not receive B's command");
});

test("every command plays for its duration; an unknown one shows as a labelled pulse", async () => {
  const commands = [
    ["wave", "body", { style: "hello" }], ["spin", "body", {}], ["bounce", "body", { height: 0.3 }],
    ["nod", "head", { times: 2 }], ["shake_head", "head", { times: 2 }], ["head_tilt", "head", { angle: 15 }],
    ["bow_head", "head", { depth: 0.5 }], ["frown", "face", {}], ["laugh", "face", {}], ["surprise", "face", {}],
    ["wink", "face", {}], ["heart", "face", {}], ["blink", "face", {}], ["idle", "body", {}],
  ];
  for (const [name, topic, params] of commands) {
    const { seqs: [seq] } = await publish(A, { topic, name, params, duration_ms: 2500 });
    const s = await waitSeq(pageA, A, seq);
    assert.equal(s.animation, name, `${name} plays`);
    assert.equal(s.lastCommand, name);
  }

  // talk: a speech bubble with the text from params.
  const text = "Hello from the browser test!";
  let r = await publish(A, { topic: "mouth", name: "talk", params: { text }, duration_ms: 3000 });
  await waitSeq(pageA, A, r.seqs[0]);
  assert.equal(await pageA.$eval(`${card(A)} .bubble`, (el) => !el.hidden && el.textContent), text);

  // move: x/y from params.
  r = await publish(A, { topic: "body", name: "move", params: { x: 80, y: -20 }, duration_ms: 600 });
  const moved = await waitSeq(pageA, A, r.seqs[0]);
  assert.deepEqual([moved.animation, moved.x, moved.y], ["move", "80", "-20"]);

  // Unknown: a labelled pulse, never an error.
  r = await publish(A, { topic: "body", name: "moonwalk", params: { speed: 2 }, duration_ms: 1500 });
  const u = await waitSeq(pageA, A, r.seqs[0]);
  assert.equal(u.animation, "moonwalk");
  assert.equal(await pageA.$eval(`${card(A)} .pulse-label`, (el) => !el.hidden && el.textContent), "moonwalk");
  // It ends after its duration_ms.
  await pageA.waitForFunction((sel) => !document.querySelector(sel).dataset.active.includes("moonwalk"), card(A), { timeout: 5000 });
  assert.equal(await pageA.$eval(`${card(A)} .pulse-label`, (el) => el.hidden), true);
  await pageA.waitForFunction((sel) => !document.querySelector(sel).dataset.active.includes("talk"), card(A), { timeout: 5000 });
  assert.equal(await pageA.$eval(`${card(A)} .bubble`, (el) => el.hidden), true, "the bubble goes when talk ends");
});

test("the URL holds the page state: characters and topic filters", async () => {
  const page = await openPage(`?characters=${A},${B}&topics=face,body.*`);
  await waitLive(page, A, B);
  assert.deepEqual(await page.$$eval(".char-card", (els) => els.map((e) => e.dataset.character)), [A, B]);
  assert.equal(await page.inputValue("#topics-input"), "face, body.*");
  const before = await cardState(page, B);
  // mouth matches neither filter: nothing changes; face does.
  await publish(B, { topic: "mouth", name: "talk", params: { text: "filtered out" }, duration_ms: 3000 });
  const { seqs: [seq] } = await publish(B, { topic: "face", name: "wink", duration_ms: 3000 });
  const s = await waitSeq(page, B, seq);
  assert.equal(s.animation, "wink");
  assert.equal(await page.$$eval(`.log-row.cmd[data-character="${B}"][data-name="talk"]`, (r) => r.length), 0);
  assert.notEqual(before.lastSeq, s.lastSeq);
  // Removing a character updates the URL and closes its subscription.
  await page.click(`.chip[data-character="${A}"] button`);
  await page.waitForFunction(() => document.querySelectorAll(".char-card").length === 1);
  assert.equal(new URL(page.url()).searchParams.get("characters"), B);
  assert.equal(await page.$$eval(".char-card", (els) => els.length), 1);
  await page.context().close();
});

test("say: the publisher panel's text box makes the character talk", async () => {
  await pageA.fill("#pub-character", A);
  await pageA.fill("#say-text", "Hello! Thanks, that is great :)");
  await pageA.click("#say-form button[type=submit]");
  await pageA.waitForSelector("#pub-result[data-kind=ok]");
  assert.match(await pageA.textContent("#pub-result"), /talk/);
  await pageA.waitForSelector(`${card(A)}[data-active~="talk"]`);
  assert.match(await pageA.$eval(`${card(A)} .bubble`, (el) => el.textContent), /Hello! Thanks/);
  // The JSON editor sends any command.
  await pageA.fill("#json-editor", JSON.stringify({ topic: "fx", name: "confetti", duration_ms: 2000 }));
  await pageA.click("#json-form button[type=submit]");
  await pageA.waitForSelector(`${card(A)}[data-last-command="confetti"]`);
  // A quick button.
  await pageA.click('.cmd-btn[data-cmd="spin"]');
  await pageA.waitForSelector(`${card(A)}[data-last-command="spin"]`);
});

test("screenshots of the viewer, desktop and phone", async () => {
  for (const [name, viewport] of [["viewer-desktop", DESKTOP], ["viewer-phone", PHONE]]) {
    const page = await openPage(`?characters=${A},${B}`, viewport);
    await waitLive(page, A, B);
    await publish(A, { topic: "body", name: "wave", params: { style: "hello" }, duration_ms: 8000 });
    await publish(A, { topic: "mouth", name: "talk", params: { text: "Hi! I'm streaming live from the gateway." }, duration_ms: 8000 });
    await publish(B, { topic: "face", name: "laugh", params: { intensity: 0.8 }, duration_ms: 8000 });
    const { seqs } = await publish(B, { topic: "fx", name: "sparkle", duration_ms: 8000 });
    await waitSeq(page, B, seqs[0]);
    await page.waitForTimeout(700);
    await page.screenshot({ path: path.join(OUT, `${name}.png`) });
    await page.context().close();
  }
});

test("the admin view lists both pages' subscriptions and disconnects a client", async () => {
  const idA = (await cardState(pageA, A)).clientId;
  const idB = (await cardState(pageB, B)).clientId;
  const admin = await openPage("?view=admin");
  assert.equal(await admin.$$eval(".char-card", (els) => els.length), 0, "the admin view subscribes to nothing itself");
  await admin.waitForSelector(`.admin-client[data-client-id="${idA}"]`, { timeout: 10_000 });
  await admin.waitForSelector(`.admin-client[data-client-id="${idB}"]`, { timeout: 10_000 });
  for (const [c, id] of [[A, idA], [B, idB]]) {
    const row = await admin.$eval(`.admin-char[data-character="${c}"]`, (el) => ({
      subscribers: Number(el.dataset.subscribers), topics: [...el.querySelectorAll(".topic-chip")].map((t) => t.dataset.topic),
      clients: [...el.querySelectorAll(".admin-client")].map((x) => x.dataset.clientId),
    }));
    assert.ok(row.subscribers >= 1, `${c} has subscribers`);
    assert.ok(row.topics.includes(">"), `${c} lists the filter >`);
    assert.ok(row.clients.includes(id), `${c} lists the page's client ${id}`);
  }
  await admin.screenshot({ path: path.join(OUT, "admin-desktop.png") });

  // Live: a new subscriber shows up within a few polls, without reloading.
  const extra = await openPage(`?characters=${B}`);
  await waitLive(extra, B);
  const idExtra = (await cardState(extra, B)).clientId;
  await admin.waitForSelector(`.admin-client[data-client-id="${idExtra}"]`, { timeout: 10_000 });
  await extra.context().close();
  await admin.waitForSelector(`.admin-client[data-client-id="${idExtra}"]`, { state: "detached", timeout: 10_000 });

  // Disconnect page B's client: its card shows the admin close, page A stays live.
  await admin.click(`.admin-client[data-client-id="${idB}"] [data-role=kick]`);
  await pageB.waitForSelector(`${card(B)}[data-state="closed"]`, { timeout: 10_000 });
  assert.match(await pageB.$eval(`${card(B)} .notice`, (el) => !el.hidden && el.textContent), /Disconnected by an admin/);
  await admin.waitForSelector(`.admin-client[data-client-id="${idB}"]`, { state: "detached", timeout: 10_000 });
  assert.equal((await cardState(pageA, A)).state, "open");
  // Reconnect brings it back with a new client id.
  await pageB.click(`${card(B)} [data-role=reconnect]`);
  await waitLive(pageB, B);
  assert.notEqual((await cardState(pageB, B)).clientId, idB);

  const phone = await openPage("?view=admin", PHONE);
  await phone.waitForSelector(`.admin-client[data-client-id="${idA}"]`, { timeout: 10_000 });
  await phone.screenshot({ path: path.join(OUT, "admin-phone.png") });
  await phone.context().close();
  await admin.context().close();
});

test("synchronized playback: two windows of one character play a gesture within 50 ms", async (t) => {
  const C = `sync-${suffix}`;
  const near = [];
  const one = await openPage(`?characters=${C}&sync=1`);
  const two = await openPage(`?characters=${C}&sync=1`);
  // The second window's socket hands every frame over 150 ms late (a slower network).
  await two.routeWebSocket(/\/subscribe/, (ws) => {
    const server = ws.connectToServer();
    server.onMessage((m) => setTimeout(() => ws.send(m), 150));
  });
  await two.reload();
  await two.waitForSelector("body[data-ready=true]");
  for (const page of [one, two]) {
    await waitLive(page, C);
    await page.waitForSelector("body[data-clock-offset]", { timeout: 10_000 });
    assert.equal(await page.isChecked("#sync-input"), true);
  }
  const played = async (page, seq) => {
    await page.waitForSelector(`${card(C)}[data-played-seq="${seq}"]`, { timeout: 10_000 });
    return Number(await page.$eval(card(C), (el) => el.dataset.playedAt));
  };
  // Published over HTTP with `at` 800 ms ahead on the server's clock.
  const now = (await (await fetch(`${BASE}/v1/time`)).json()).now;
  const { seqs: [seq] } = await publish(C, { topic: "body", name: "wave", params: { style: "hello" }, duration_ms: 1500, at: now + 800 });
  const [a, b] = [await played(one, seq), await played(two, seq)];
  near.push(Math.abs(a - b));
  assert.ok(Math.abs(a - b) <= 50, `windows ${Math.abs(a - b).toFixed(1)} ms apart`);
  assert.ok(Math.abs(a - (now + 800)) <= 50 && Math.abs(b - (now + 800)) <= 50, `${(a - now - 800).toFixed(1)} / ${(b - now - 800).toFixed(1)} ms from at`);
  // The first window's publisher panel: its quick button schedules the gesture itself.
  await one.fill("#pub-character", C);
  await one.click('.cmd-btn[data-cmd="jump"]');
  await one.waitForSelector("#pub-result[data-kind=ok]");
  const seq2 = Number(/seq (\d+)/.exec(await one.textContent("#pub-result"))[1]);
  const [a2, b2] = [await played(one, seq2), await played(two, seq2)];
  near.push(Math.abs(a2 - b2));
  assert.ok(Math.abs(a2 - b2) <= 50, `windows ${Math.abs(a2 - b2).toFixed(1)} ms apart`);
  for (const page of [one, two]) assert.equal((await cardState(page, C)).animation, "jump");
  t.diagnostic(`synchronized windows apart by ${near.map((x) => x.toFixed(1)).join(", ")} ms`);
  await one.context().close();
  await two.context().close();
});

test("viewers join into the current pose: retained pose commands apply at once on a new page", async () => {
  const C = `pose-${suffix}`;
  const rigTransform = (page) => page.$eval(`${card(C)} .rig`, (el) => getComputedStyle(el).transform);
  await publish(C, { topic: "pose", name: "move", params: { x: 90, y: -20 }, duration_ms: 700, retain: true }); // 1
  await publish(C, { topic: "mood", name: "mood", params: { expression: "happy" }, retain: true });          // 2, replaced by 3
  await publish(C, { topic: "mood", name: "mood", params: { expression: "sad" }, retain: true });            // 3
  await publish(C, { topic: "body", name: "wave", duration_ms: 5000 });                                      // 4, not retained
  await publish(C, { topic: "fx", name: "sparkle", duration_ms: 5000, retain: true });                       // 5: a retained gesture
  const late = await openPage(`?characters=${C}`);
  await waitLive(late, C);
  // Right after connecting: the retained frames follow `welcome` at once.
  await late.waitForSelector(`${card(C)}[data-retained-seqs="1 3 5"]`, { timeout: 2000 });
  let s = await cardState(late, C);
  assert.deepEqual([s.x, s.y, s.mood], ["90", "-20", "sad"], "in the retained pose");
  assert.equal(s.animation, "idle", "retained commands are applied, not played (nor the retained gesture)");
  assert.equal(s.active, "");
  assert.equal(await rigTransform(late), "matrix(1, 0, 0, 1, 90, -20)", "moved there at once, no walk");
  assert.deepEqual(await late.$$eval(".log-row.cmd[data-retained=true]", (rows) => rows.map((r) => [r.dataset.seq, r.querySelector(".lat").textContent])),
    [["5", "retained"], ["3", "retained"], ["1", "retained"]], "the log marks them (newest first)");
  assert.equal(await late.$$eval(".log-row.cmd:not([data-retained])", (rows) => rows.length), 0, "nothing else replayed");
  // Live commands follow as usual.
  const { seqs: [live] } = await publish(C, { topic: "mood", name: "mood", params: { expression: "happy" } });
  s = await waitSeq(late, C, live);
  assert.equal(s.mood, "happy");
  assert.equal(s.retainedSeqs, "1 3 5");

  // The publisher panel retains what it publishes for a pose: `move` and `mood` from the
  // late page, then a page with synchronized playback opened after them starts in it.
  await late.fill("#pub-character", C);
  await late.click('.cmd-btn[data-cmd="move"]');
  await late.waitForSelector("#pub-result[data-kind=ok]");
  const moveSeq = Number(/seq (\d+)/.exec(await late.textContent("#pub-result"))[1]);
  s = await waitSeq(late, C, moveSeq);
  await late.click('.cmd-btn[data-cmd="mood"]');
  await late.waitForFunction(([sel, seq]) => Number(document.querySelector(sel).dataset.lastSeq) > seq, [card(C), moveSeq]);
  const shown = await cardState(late, C);
  assert.equal(shown.mood, "sad", "the mood button steps from happy to the next mood");
  const later = await openPage(`?characters=${C}&sync=1`);
  await waitLive(later, C);
  await later.waitForSelector(`${card(C)}[data-retained-seqs="5 ${moveSeq} ${moveSeq + 1}"]`, { timeout: 2000 });
  const t = await cardState(later, C);
  assert.deepEqual([t.x, t.y, t.mood], [shown.x, shown.y, "sad"], "the later page starts in the pose the panel set");
  assert.equal(t.animation, "idle");
  await later.context().close();
  await late.context().close();
});

test("no page requested anything outside the gateway or raised an error", () => {
  for (const { requests, sockets, errors } of opened) {
    for (const url of requests) assert.ok(url.startsWith(`${BASE}/`) || url.startsWith("data:"), `external request: ${url}`);
    for (const url of sockets) assert.ok(url.startsWith(`${WS_BASE}/`), `external socket: ${url}`);
    assert.deepEqual(errors, []);
  }
  assert.ok(opened.length >= 6);
});
