// What the reliability tests share: progress lines on stderr, and servers
// started by the one launcher (scripts/server.mjs) as `wrangler dev` on a
// state directory the test owns, so a test can SIGKILL one (`server.kill()`,
// the whole process group, no shutdown) and start another on the same state.
import { startServer } from "../../scripts/server.mjs";

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const t0 = Date.now();
/** Progress on stderr, so a stall shows where it is. */
export const progress = (msg) => process.stderr.write(`[reliability +${((Date.now() - t0) / 1000).toFixed(1)}s] ${msg}\n`);

/** `wrangler dev` on `state` with auth off, up once /healthz answers. `vars` override [vars]. */
export const start = (state, { logFile, logLevel, vars = {} } = {}) =>
  startServer({ runtime: "dev", name: "reliability", state, logFile, logLevel, vars: { AUTH_ENABLED: "false", ...vars }, onProgress: progress });
