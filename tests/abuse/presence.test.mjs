// Presence frames are bounded: a presence socket hears joins and leaves only
// while the character has at most 256 sockets (MAX_PRESENCE_SOCKETS), so a
// crowd does not turn every connect and disconnect into a fan-out.
import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import { start, http, until, open, closeAll, sleep } from "./helpers.mjs";

const BOUND = 256;
let server = null;

before(async () => { server = await start(); });
after(async () => {
  closeAll();
  await server?.stop();
});

test("joins and leaves stop past 256 sockets and resume below", async () => {
  const c = `presence-${process.pid}`;
  const watcher = await open(server.url, c, { topics: ">", presence: "true" });
  const others = [];
  for (let i = 1; i < BOUND; i += 15) {
    const n = Math.min(15, BOUND - i);
    others.push(...(await Promise.all(Array.from({ length: n }, () => open(server.url, c, { topics: ">" })))));
  }
  assert.equal(others.length, BOUND - 1);
  const presence = () => watcher.frames.filter((f) => f.type === "presence");
  await until(() => presence().length === BOUND - 1, 20_000, `${BOUND - 1} joins`);
  assert.equal(Math.max(...presence().map((f) => f.count)), BOUND);

  const over = await open(server.url, c, { topics: ">" });
  const listing = await http(server.url, "GET", `/v1/admin/characters/${c}/subscriptions`);
  assert.equal(listing.json.subscribers.length, BOUND + 1, "the 257th socket is connected");
  over.ws.close(1000);
  await until(async () => (await http(server.url, "GET", `/v1/admin/characters/${c}/subscriptions`)).json.subscribers.length === BOUND, 10_000, "its close");
  await sleep(300);
  assert.equal(presence().length, BOUND - 1, "no join or leave for the socket past the bound");

  others[0].ws.close(1000);
  const leave = await until(() => presence().find((f) => f.event === "leave"), 10_000, "a leave at the bound");
  assert.equal(leave.count, BOUND - 1);
});
