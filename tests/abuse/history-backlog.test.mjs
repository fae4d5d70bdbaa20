// No acknowledged command is lost when archiving falls behind. A server with
// a small HISTORY_LIMIT and HISTORY_BACKLOG_LIMIT, whose archive writes all
// fail (TEST_FAIL_ARCHIVE, development only): publishes are acknowledged up
// to the mark, then refused with 503 history_backlog and Retry-After,
// nothing stored; every acknowledged command stays readable; the archive
// retries on its own with growing waits, and the lag shows in the admin
// listing and the logs. Restarted on the same state without the switch, the
// archive catches up and publishes succeed again.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { start, http, until, open, closeAll, progress, sleep } from "./helpers.mjs";

const STATE = mkdtempSync(join(tmpdir(), "gateway-backlog-"));
const LIMIT = 4; // pages of 1 seq
const MARK = 10;
let server = null;

after(async () => {
  closeAll();
  await server?.stop();
  rmSync(STATE, { recursive: true, force: true });
});

const character = `backlog-${process.pid}`;
const cmd = (i) => ({ topic: "face", name: "smile", id: `cmd-${i}` });
const listing = async (base) => (await http(base, "GET", `/v1/admin/characters/${character}/subscriptions`)).json;
const history = async (base) => (await http(base, "GET", `/v1/characters/${character}/history?since=0&limit=1000`)).json;

test("a lagging archive refuses publishes past the mark and loses nothing", async () => {
  server = await start({
    state: STATE,
    vars: { HISTORY_LIMIT: String(LIMIT), HISTORY_BACKLOG_LIMIT: String(MARK), TEST_FAIL_ARCHIVE: "true" },
  });
  const base = server.url;
  const acked = [];
  let refused = null;
  for (let i = 1; i <= MARK + 5 && !refused; i++) {
    const r = await http(base, "POST", `/v1/characters/${character}/commands`, cmd(i));
    if (r.status === 200) acked.push(r.json.seqs[0]);
    else refused = r;
  }
  assert.deepEqual(acked, Array.from({ length: MARK }, (_, i) => i + 1), "acknowledged up to the mark");
  assert.ok(refused, "a publish past the mark was refused");
  assert.equal(refused.status, 503, refused.text);
  assert.equal(refused.json.error.code, "history_backlog");
  const retryAfter = Number(refused.headers.get("retry-after"));
  assert.ok(Number.isInteger(retryAfter) && retryAfter >= 1, `Retry-After ${refused.headers.get("retry-after")}`);

  // Refused again, a batch too; an idempotent repeat stores nothing new and is answered.
  const batch = await http(base, "POST", `/v1/characters/${character}/commands`, { commands: [cmd(100), cmd(101)] });
  assert.equal(batch.status, 503);
  assert.ok(batch.headers.get("retry-after"));
  const repeat = await http(base, "POST", `/v1/characters/${character}/commands`, cmd(3));
  assert.equal(repeat.status, 200, repeat.text);
  assert.deepEqual(repeat.json.seqs, [3]);

  // A socket's publish frame gets an error frame and the socket stays open.
  const ws = await open(base, character);
  ws.ws.send(JSON.stringify({ type: "publish", ref: "p1", ...cmd(200) }));
  const err = await until(() => ws.frames.find((f) => f.type === "error"), 5_000, "error frame");
  assert.equal(err.code, "history_backlog");
  assert.equal(err.ref, "p1");
  await sleep(300);
  assert.equal(ws.closed, null, "the socket stays open");
  assert.ok(!ws.frames.some((f) => f.type === "command"), "nothing delivered");
  ws.ws.close();

  // Every acknowledged command is readable.
  const h = await history(base);
  assert.deepEqual(h.commands.map((c) => c.seq), acked);
  assert.equal(h.seq, MARK);

  // The lag is visible, and the archive retries on its own (no publish
  // starts it while a retry waits), with growing waits.
  const first = await listing(base);
  progress(`archive lag: ${JSON.stringify(first.archive)}`);
  assert.equal(first.archive.unarchived, MARK);
  assert.equal(first.archive.backlog_limit, MARK);
  assert.ok(first.archive.failures >= 1);
  assert.ok(Number.isInteger(first.archive.retry_at));
  const later = await until(async () => {
    const l = await listing(base);
    return l.archive.failures >= first.archive.failures + 2 && l;
  }, 20_000, "two more timed retries");
  assert.ok(later.archive.retry_at > first.archive.retry_at);
  const logs = await until(async () => {
    const r = await http(base, "GET", `/v1/admin/logs?character=${character}&limit=1000`);
    const failed = r.json.events.filter((e) => e.event === "archive_failed");
    return failed.length >= 2 && failed;
  }, 10_000, "archive_failed events");
  const waits = logs.map((e) => e.detail.retry_at - e.ts).sort((a, b) => a - b);
  assert.ok(waits[0] >= 1000 && waits.at(-1) >= 2000, `backoff waits ${waits}`);
  assert.equal(logs[0].detail.unarchived, MARK);

  // Restart on the same state without the switch: the archive catches up.
  await server.stop();
  server = await start({ state: STATE, vars: { HISTORY_LIMIT: String(LIMIT), HISTORY_BACKLOG_LIMIT: String(MARK) } });
  const caught = await until(async () => {
    const l = await listing(server.url);
    return l.archive.unarchived <= LIMIT && l;
  }, 20_000, "the archive to catch up");
  assert.equal(caught.archive.failures, 0);
  assert.equal(caught.archive.retry_at, null);
  const next = await http(server.url, "POST", `/v1/characters/${character}/commands`, cmd(MARK + 1));
  assert.equal(next.status, 200, next.text);
  assert.deepEqual(next.json.seqs, [MARK + 1]);
  const all = await history(server.url);
  assert.deepEqual(all.commands.map((c) => c.seq), Array.from({ length: MARK + 1 }, (_, i) => i + 1));
  assert.deepEqual(all.commands.slice(0, MARK).map((c) => c.id), acked.map((s) => `cmd-${s}`));
});
