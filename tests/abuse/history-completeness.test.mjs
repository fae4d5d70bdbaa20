// History completeness (contract §8): `GET .../history` says `complete: false`
// when part of the range it read could not be read (here: an archive page
// deleted from the server's local KV state), reads at most HISTORY_MAX_PAGES
// (20) archive pages per request whether or not its filter matches, and
// answers `next_since` when it stopped early, so a client pages on even when
// nothing matched. Normal reads say `complete: true`.
//
// A server of its own with HISTORY_LIMIT=10: archive pages of 2 seqs, so 200
// commands fill about 95 pages. The missing page is made by deleting its key
// with `wrangler kv key delete --local --preview --persist-to <the server's
// state>` while the server runs (local `wrangler dev` keeps KV in the
// namespace's preview id); no switch in the gateway is involved.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { join } from "node:path";
import { startServer, ROOT } from "../../scripts/server.mjs";

const run = promisify(execFile);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
/** Seqs per archive page with HISTORY_LIMIT=10 (routing::archive::page_size). */
const PAGE = 2;
/** HISTORY_MAX_PAGES (routing::catalogue). */
const MAX_PAGES = 20;
const N = 200;
let server = null;

before(async () => {
  server = await startServer({ runtime: "dev", name: "abuse-history", vars: { AUTH_ENABLED: "false", HISTORY_LIMIT: "10" } });
});
after(async () => { await server?.stop(); });

let counter = 0;
const uniqueCharacter = (prefix) => `${prefix}-${process.pid}-${Date.now().toString(36)}-${++counter}`;
const range = (from, to) => Array.from({ length: Math.max(0, to - from + 1) }, (_, k) => from + k);

async function publishN(character, n) {
  let epoch = null;
  for (let i = 1; i <= n; i += 100) {
    const commands = range(i, Math.min(n, i + 99)).map((j) => ({ topic: "face", name: "n", params: { i: j } }));
    const res = await fetch(`${server.url}/v1/characters/${character}/commands`, {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ commands }),
    });
    const body = await res.json();
    assert.equal(res.status, 200, JSON.stringify(body));
    epoch = body.epoch;
  }
  return epoch;
}

async function history(character, query) {
  const res = await fetch(`${server.url}/v1/characters/${character}/history?${new URLSearchParams(query)}`);
  const body = await res.json();
  assert.equal(res.status, 200, JSON.stringify(body));
  return body;
}

/** Every answer of a history read paged on with `next_since` until it has none. */
async function pageThrough(character, query, maxRequests = 100) {
  const answers = [];
  let since = 0;
  for (let i = 0; i < maxRequests; i++) {
    const a = await history(character, { ...query, since: String(since) });
    answers.push({ since, ...a });
    if (a.next_since === undefined) return answers;
    assert.ok(a.next_since > since, `next_since moves on: ${since} -> ${a.next_since}`);
    since = a.next_since;
  }
  throw new Error(`no end after ${maxRequests} requests`);
}

/**
 * Publishes N commands to a fresh character and waits until the archive holds more than
 * MAX_PAGES pages: a read of a filter matching nothing is then cut by the page bound.
 */
async function archivedCharacter(prefix) {
  const c = uniqueCharacter(prefix);
  const epoch = await publishN(c, N);
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const a = await history(c, { since: "0", topics: "nothing.matches", limit: "1000" });
    if (a.next_since !== undefined) return { c, epoch };
    await sleep(250);
  }
  throw new Error("the archive did not get past 20 pages");
}

test("normal reads say complete: true and page through every command exactly once", async () => {
  const { c } = await archivedCharacter("complete");
  const answers = await pageThrough(c, { limit: "1000" });
  assert.ok(answers.length > 1, "the page bound split the read");
  for (const a of answers) {
    assert.equal(a.complete, true, `complete from since=${a.since}`);
    assert.equal(a.seq, N);
  }
  assert.deepEqual(answers.flatMap((a) => a.commands.map((f) => f.seq)), range(1, N));
  // A read cut by `limit` continues after its last command.
  const cut = await history(c, { since: "0", limit: "5" });
  assert.deepEqual(cut.commands.map((f) => f.seq), range(1, 5));
  assert.equal(cut.next_since, 5);
  assert.equal(cut.complete, true);
  // Reaching the newest seq: no next_since.
  const end = await history(c, { since: String(N - 3) });
  assert.deepEqual(end.commands.map((f) => f.seq), range(N - 2, N));
  assert.equal(end.complete, true);
  assert.equal("next_since" in end, false);
});

test("a filter matching nothing reads at most 20 archive pages per request and says where to go on", async () => {
  const { c } = await archivedCharacter("nomatch");
  const answers = await pageThrough(c, { topics: "nothing.matches", limit: "1000" });
  // The first request reads exactly 20 pages of 2 seqs, returns nothing, and says so.
  assert.deepEqual(
    { commands: answers[0].commands, next_since: answers[0].next_since, complete: answers[0].complete },
    { commands: [], next_since: MAX_PAGES * PAGE, complete: true },
  );
  for (const a of answers) {
    assert.deepEqual(a.commands, []);
    assert.equal(a.complete, true);
    if (a.next_since !== undefined) {
      assert.ok(a.next_since - a.since <= MAX_PAGES * PAGE, `one request covered ${a.since}..${a.next_since}: more than 20 pages`);
    }
  }
  // 200 commands, at most ~95 archived pages: 5 requests cut by the bound, then the end.
  assert.ok(answers.length >= 5 && answers.length <= 7, `${answers.length} requests`);
});

test("a missing archive page answers 200 with complete: false and the commands around it", async () => {
  const { c, epoch } = await archivedCharacter("hole");
  // Page 3 holds seqs 7 and 8.
  const key = `hist:${c}:${epoch}:${String(3).padStart(12, "0")}`;
  const wrangler = join(ROOT, "node_modules", ".bin", "wrangler");
  const args = ["kv", "key", "delete", key, "--binding", "ANIMATION_HISTORY", "--preview", "--local", "--persist-to", server.state, "-c", join(ROOT, "wrangler.dev.toml")];
  await run(wrangler, args, { cwd: ROOT, timeout: 60_000 });

  const a = await history(c, { since: "0", limit: "1000" });
  assert.equal(a.complete, false, "the hole is reported");
  const seqs = a.commands.map((f) => f.seq);
  assert.ok(!seqs.includes(7) && !seqs.includes(8), "nothing made up for the hole");
  assert.deepEqual(seqs.filter((s) => s < 7), range(1, 6), "the commands before it");
  assert.ok(seqs.includes(9) && seqs.includes(10), "the read goes on past the hole");
  assert.equal(a.next_since, MAX_PAGES * PAGE, "the page bound still holds");
  // A read that does not cover the hole is complete.
  const later = await history(c, { since: "8", limit: "1000" });
  assert.equal(later.complete, true);
  assert.equal(later.commands[0].seq, 9);
  // One that starts inside it (seq 8 is missing) is not.
  const inside = await history(c, { since: "7", limit: "1000" });
  assert.equal(inside.complete, false);
  // A filtered read over the hole is incomplete too, even though it matched nothing.
  const filtered = await history(c, { since: "0", topics: "nothing.matches", limit: "1000" });
  assert.equal(filtered.complete, false);
  assert.deepEqual(filtered.commands, []);
});
