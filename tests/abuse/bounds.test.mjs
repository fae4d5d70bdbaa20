// Bounded memory per character, through a real server: at most
// MAX_SUBSCRIBERS sockets (503 character_full with Retry-After before any
// upgrade), batch frames split below the runtime's 1 MiB message limit, and
// at most 10,000 idempotency ids held (the oldest forgotten first).
import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import { start, http, until, open, closeAll, sleep } from "./helpers.mjs";

const MAX = 3;
const BATCH_FRAME_CAP = 512 * 1024; // MAX_BATCH_FRAME_BYTES
const IDS_CAP = 10_000; // MAX_IDEMPOTENCY_IDS
let server = null;
let base = "";

before(async () => {
  server = await start({ vars: { MAX_SUBSCRIBERS: String(MAX), BATCH_WINDOW_MS: "1500" } });
  base = server.url;
});
after(async () => {
  closeAll();
  await server?.stop();
});

const name = (tag) => `bounds-${tag}-${process.pid}`;

test("a character refuses sockets past MAX_SUBSCRIBERS before the upgrade", async () => {
  const c = name("full");
  const sockets = [];
  for (let i = 0; i < MAX; i++) {
    const s = await open(base, c, { topics: ">" });
    assert.ok(!s.refused, `socket ${i} refused with ${s.refused}`);
    sockets.push(s);
  }
  const refused = await open(base, c, { topics: ">" });
  assert.equal(refused.refused, 503);
  assert.equal(refused.headers["retry-after"], "5");
  assert.equal(refused.body.error.code, "character_full");
  const listing = await http(base, "GET", `/v1/admin/characters/${c}/subscriptions`);
  assert.equal(listing.json.subscribers.length, MAX, "the refused socket was never accepted");
  // A resume is refused the same way.
  const resumed = await open(base, c, { topics: ">", since: "0" });
  assert.equal(resumed.refused, 503);
  // A socket that leaves frees its place.
  sockets[0].ws.close(1000);
  await until(async () => (await http(base, "GET", `/v1/admin/characters/${c}/subscriptions`)).json.subscribers.length === MAX - 1, 10_000, "the close");
  const again = await open(base, c, { topics: ">" });
  assert.ok(!again.refused, `refused with ${again.refused}`);
  // Publishing still reaches every socket held.
  const pub = await http(base, "POST", `/v1/characters/${c}/commands`, { topic: "face", name: "smile" });
  assert.equal(pub.json.delivered, MAX);
});

test("a batch window larger than a WebSocket message is split into frames below 512 KiB", async () => {
  const c = name("batch");
  const sub = await open(base, c, { topics: ">" });
  const text = "x".repeat(14_000);
  const body = { commands: Array.from({ length: 4 }, () => ({ topic: "face", name: "talk", params: { text } })) };
  const answers = await Promise.all(Array.from({ length: 25 }, () => http(base, "POST", `/v1/characters/${c}/commands`, body)));
  assert.ok(answers.every((a) => a.status === 200), answers.map((a) => a.status).join(","));
  const seqs = () => sub.frames.filter((f) => f.type === "batch").flatMap((f) => f.commands.map((x) => x.seq));
  await until(() => seqs().length >= 100, 20_000, "100 commands");
  await sleep(300);
  assert.deepEqual(seqs(), Array.from({ length: 100 }, (_, i) => i + 1), "every command once, in order");
  const batchSizes = sub.sizes.filter((_, i) => sub.frames[i].type === "batch");
  const total = batchSizes.reduce((a, b) => a + b, 0);
  assert.ok(total > 1024 * 1024, `${total} bytes of batches`);
  assert.ok(batchSizes.length >= 3, `${batchSizes.length} batch frames`);
  for (const size of batchSizes) assert.ok(size <= BATCH_FRAME_CAP, `a ${size}-byte batch frame`);
});

test("the hub holds at most 10,000 idempotency ids, forgetting the oldest first", async () => {
  const c = name("ids");
  const total = IDS_CAP + 100;
  const cmd = (i) => ({ topic: "face", name: "nod", id: `id-${i}` });
  for (let first = 0; first < total; first += 100) {
    const r = await http(base, "POST", `/v1/characters/${c}/commands`, { commands: Array.from({ length: 100 }, (_, k) => cmd(first + k)) });
    assert.equal(r.status, 200, r.text);
  }
  const newest = await http(base, "POST", `/v1/characters/${c}/commands`, cmd(total - 1));
  assert.deepEqual(newest.json.seqs, [total], "a recent id is still deduplicated");
  const kept = await http(base, "POST", `/v1/characters/${c}/commands`, cmd(100));
  assert.deepEqual(kept.json.seqs, [101], "the oldest id still held");
  const oldest = await http(base, "POST", `/v1/characters/${c}/commands`, cmd(0));
  assert.deepEqual(oldest.json.seqs, [total + 1], "forgotten within its 5 minutes: published again");
});
