// The admin listing never shows dead subscribers for long: registry entries
// are leases that each character object refreshes while it has sockets. When
// the runtime dies with its sockets (SIGKILL here; a crash or a deploy in
// production), nobody closes them, so only the lease can clear the entry:
// within REGISTRY_LEASE_SECONDS it is gone, without anyone touching that
// character. Live subscribers stay listed past many leases.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import WebSocket from "ws";
import { startServer } from "../../scripts/server.mjs";

const LEASE_S = 6;
const STATE = mkdtempSync(join(tmpdir(), "gateway-lease-"));
const VARS = { AUTH_ENABLED: "false", REGISTRY_LEASE_SECONDS: String(LEASE_S) };
const sockets = [];
let server = null;
after(async () => {
  for (const ws of sockets) ws.terminate();
  await server?.kill();
  rmSync(STATE, { recursive: true, force: true });
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function listing() {
  const r = await fetch(`${server.url}/v1/admin/subscriptions`);
  assert.equal(r.status, 200);
  return r.json();
}
const listed = async (c) => (await listing()).characters.find((x) => x.character === c);

async function open(c, n) {
  for (let i = 0; i < n; i++) {
    const ws = new WebSocket(`${server.url.replace(/^http/, "ws")}/v1/characters/${c}/subscribe`);
    sockets.push(ws);
    await new Promise((resolve, reject) => { ws.once("message", resolve); ws.once("error", reject); });
  }
}

test("a dead object's subscribers leave the listing within one lease; live ones stay", { timeout: 120_000 }, async () => {
  server = await startServer({ runtime: "dev", name: "lease", state: STATE, vars: VARS });
  const dead = `lease-dead-${Date.now().toString(36)}`;
  const live = `lease-live-${Date.now().toString(36)}`;
  await open(dead, 3);
  await open(live, 2);
  const until = async (pred, ms, what) => {
    const end = Date.now() + ms;
    while (Date.now() < end) { if (await pred()) return; await sleep(200); }
    assert.fail(`timed out: ${what}`);
  };
  await until(async () => (await listed(dead))?.subscribers === 3, 5_000, "the 3 sockets listed");

  // SIGKILL: the sockets die with the runtime, no close event reaches the object.
  const killed = Date.now();
  await server.kill();
  for (const ws of sockets.splice(0)) ws.terminate();
  server = await startServer({ runtime: "dev", name: "lease", state: STATE, vars: VARS });
  // Before leases the entry stayed until someone next connected to `dead`.
  await until(async () => !(await listed(dead)), (LEASE_S + 4) * 1000, "the dead entry to lapse");
  const gone = (Date.now() - killed) / 1000;
  assert.ok(gone <= LEASE_S + 4, `gone ${gone} s after the kill, lease ${LEASE_S} s`);

  // Live sockets on the new runtime are refreshed (at half the lease) and stay listed.
  await open(live, 2);
  await until(async () => (await listed(live))?.subscribers === 2, 5_000, "the live sockets listed");
  for (let i = 0; i < 3; i++) {
    await sleep(LEASE_S * 1000);
    assert.equal((await listed(live))?.subscribers, 2, `listed after ${(i + 1) * LEASE_S} s`);
  }
  assert.equal(await listed(dead), undefined, "nothing woke the dead character back into the listing");
});
