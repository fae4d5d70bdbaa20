// Starts and kills wrangler dev servers of the reliability tests' own: each
// in its own process group (so SIGKILL takes workerd with it), on free ports,
// with a given persisted state directory, its output kept in a log file.
import { spawn } from "node:child_process";
import { openSync } from "node:fs";
import { join } from "node:path";
import net from "node:net";

export const ROOT = new URL("../..", import.meta.url).pathname;
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const t0 = Date.now();
/** Progress on stderr, so a stall shows where it is. */
export const progress = (msg) => process.stderr.write(`[reliability +${((Date.now() - t0) / 1000).toFixed(1)}s] ${msg}\n`);

export const freePort = () => new Promise((resolve) => {
  const s = net.createServer();
  s.listen(0, "127.0.0.1", () => { const { port } = s.address(); s.close(() => resolve(port)); });
});

/** Starts wrangler dev on `state`; resolves once /healthz answers. `vars` override [vars]. */
export async function start(state, { logFile, logLevel = "warn", vars = {} } = {}) {
  const port = await freePort();
  const inspector = await freePort();
  const out = logFile ? openSync(logFile, "a") : "ignore";
  const child = spawn(join(ROOT, "node_modules/.bin/wrangler"), [
    "dev", "-c", join(ROOT, "wrangler.dev.toml"), "--ip", "127.0.0.1", "--port", String(port),
    "--inspector-port", String(inspector), "--persist-to", state,
    "--show-interactive-dev-session=false", "--log-level", logLevel,
    ...Object.entries(vars).flatMap(([name, value]) => ["--var", `${name}:${value}`]),
  ], { cwd: ROOT, detached: true, stdio: ["ignore", out, out] });
  const base = `http://127.0.0.1:${port}`;
  progress(`starting wrangler dev on ${port}`);
  for (let i = 0; i < 720; i++) {
    try { if ((await fetch(`${base}/healthz`)).status === 200) { progress("up"); return { child, base }; } } catch { /* not up yet */ }
    await sleep(250);
  }
  kill({ child });
  throw new Error("wrangler dev did not come up");
}

/** SIGKILL to wrangler and its workerd: the whole process group, no shutdown. */
export function kill(s) {
  progress(`SIGKILL process group ${s.child.pid}`);
  try { process.kill(-s.child.pid, "SIGKILL"); } catch { /* already gone */ }
}
