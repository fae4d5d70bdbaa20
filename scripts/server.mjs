#!/usr/bin/env node
// The one launcher of local servers: `make test` (through scripts/server.sh),
// the reliability tests, `make soak`, `make bench` and scripts/fanout-compare.sh
// all start and stop their servers here. A server gets free ports (a distinct
// inspector port for `wrangler dev`), a throwaway directory for its state and
// log unless the caller names them, its own process group (so stopping it takes
// workerd with it), and counts as up once GET /healthz answers 200. If it exits
// or does not come up in time, its log's tail is in the error.
//
// Runtimes:
//   dev    `wrangler dev` (rebuilds through the config's [build]; tests use it)
//   local  scripts/serve-local.mjs: the same local runtime without the devtools
//          inspector, serving a snapshot of build/ (soak)
//   miniflare  scripts/serve-miniflare.mjs: Miniflare directly, one workerd
//          and no wrangler proxy in front, serving a snapshot (bench)
//   exec   any other command; `{port}` in its arguments becomes the port (the
//          bench's native peer)
//
// JavaScript:
//   import { startServer } from "./scripts/server.mjs";
//   const s = await startServer({ runtime: "dev", vars: { HISTORY_LIMIT: "10" } });
//   s.url, s.port, s.inspectorPort, s.pid (= its process group), s.state, s.logFile
//   await s.stop();   // SIGTERM to the group, SIGKILL after a grace period
//   await s.kill();   // SIGKILL to the group at once (crash tests)
// A server does not keep the process alive; servers still running when it
// exits (or dies of SIGINT, SIGTERM, SIGHUP) are killed with it.
//
// Command line (bash callers use it through scripts/server.sh):
//   node scripts/server.mjs start [--runtime dev|local|miniflare|exec] [--name NAME]
//       [--config TOML] [--state DIR] [--log FILE] [--var NAME:VALUE]...
//       [--secret NAME:VALUE]...
//       [--port N] [--inspector] [--log-level LEVEL] [--timeout SECONDS]
//       [-- EXTRA...]
//     starts the server in the background, waits for /healthz and prints
//     name=, url=, port=, inspector_port=, pid=, state=, log= and dir= lines
//     (dir: the throwaway directory it made, to be removed by the caller; empty
//     if --state and --log were both given). EXTRA goes to wrangler dev or
//     serve-local.mjs, or is the command for exec.
//   node scripts/server.mjs stop [--kill] [--grace SECONDS] PID...
//     stops those servers' process groups and waits until they are gone.
// SERVER_LOG_LEVEL sets the default log level (warn).
//
// Vars and secrets: `vars` (--var) override the config's [vars]; `secrets`
// (--secret) reach the Worker as secrets, through an env file in the server's
// throwaway directory (`--env-file`), as `.dev.vars` would. That file is
// always given, even empty, so a developer's own `.dev.vars` (which turns
// auth off for `make dev`) never reaches a test, bench or soak server: each
// says AUTH_ENABLED itself.
import { spawn } from "node:child_process";
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import net from "node:net";

export const ROOT = fileURLToPath(new URL("..", import.meta.url));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** `n` distinct free loopback ports (all held open at once, so never the same one twice). */
export async function freePorts(n = 1) {
  const servers = await Promise.all(Array.from({ length: n }, () => new Promise((res, rej) => {
    const s = net.createServer();
    s.once("error", rej);
    s.listen(0, "127.0.0.1", () => res(s));
  })));
  const ports = servers.map((s) => s.address().port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

/** Process ids (not zombies) in process group `pgid`, from /proc. */
function groupMembers(pgid) {
  if (!existsSync("/proc/self/stat")) {
    try { process.kill(-pgid, 0); return [pgid]; } catch { return []; }
  }
  const members = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let stat;
    try { stat = readFileSync(`/proc/${entry}/stat`, "utf8"); } catch { continue; }
    // pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
    const [state, , pgrp] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (Number(pgrp) === pgid && state !== "Z") members.push(Number(entry));
  }
  return members;
}

function signalGroup(pgid, signal) {
  try { process.kill(-pgid, signal); return true; } catch { return false; }
}

async function waitGone(pgid, ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (groupMembers(pgid).length === 0) return true;
    await sleep(100);
  }
  return groupMembers(pgid).length === 0;
}

/**
 * Stops the process group `pgid`: SIGTERM, then SIGKILL after `graceMs` if
 * anything is left (or SIGKILL at once with `signal: "SIGKILL"`); resolves once
 * no process of the group is left.
 */
export async function stopGroup(pgid, { signal = "SIGTERM", graceMs = 10_000 } = {}) {
  if (!signalGroup(pgid, signal)) return;
  if (signal !== "SIGKILL" && await waitGone(pgid, graceMs)) return;
  signalGroup(pgid, "SIGKILL");
  if (!await waitGone(pgid, 10_000)) throw new Error(`process group ${pgid} survived SIGKILL: ${groupMembers(pgid).join(" ")}`);
}

/** The last `lines` lines of a file ("" if it cannot be read). */
export function tail(file, lines = 60) {
  try { return readFileSync(file, "utf8").split("\n").slice(-lines - 1).join("\n"); } catch { return ""; }
}

// Servers this process started and has not stopped: killed when it exits.
const live = new Set();
let exitHooks = false;
function installExitHooks() {
  if (exitHooks) return;
  exitHooks = true;
  const killAll = () => {
    for (const s of live) {
      signalGroup(s.pid, "SIGKILL");
      if (s.dir) rmSync(s.dir, { recursive: true, force: true });
    }
    live.clear();
  };
  process.on("exit", killAll);
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) {
    process.on(sig, function onSignal() {
      killAll();
      // Alone with this signal: die of it as the default would have.
      if (process.listenerCount(sig) === 1) { process.removeListener(sig, onSignal); process.kill(process.pid, sig); }
    });
  }
}

/** The command line of a runtime. */
function commandOf(o, port, inspectorPort) {
  const vars = Object.entries(o.vars).flatMap(([k, v]) => ["--var", `${k}:${v}`]);
  switch (o.runtime) {
    case "dev":
      return [join(ROOT, "node_modules/.bin/wrangler"), [
        "dev", "-c", o.config, "--ip", "127.0.0.1", "--port", String(port),
        "--inspector-port", String(inspectorPort), "--persist-to", o.state,
        "--show-interactive-dev-session=false", "--log-level", o.logLevel, "--env-file", o.envFile,
        ...vars, ...o.args,
      ]];
    case "local":
      return [process.execPath, [
        join(ROOT, "scripts/serve-local.mjs"), "--config", o.config, "--port", String(port),
        "--persist-to", o.state, "--log-level", o.logLevel, "--env-file", o.envFile,
        ...(inspectorPort ? ["--inspector-port", String(inspectorPort)] : []), ...vars, ...o.args,
      ]];
    case "miniflare":
      return [process.execPath, [
        join(ROOT, "scripts/serve-miniflare.mjs"), "--config", o.config, "--port", String(port),
        "--persist-to", o.state, "--log-level", o.logLevel, "--env-file", o.envFile, ...vars, ...o.args,
      ]];
    case "exec": {
      if (o.args.length === 0) throw new Error("server: exec needs a command");
      const [cmd, ...rest] = o.args.map((a) => a.replaceAll("{port}", String(port)));
      return [cmd, rest];
    }
    default:
      throw new Error(`server: unknown runtime ${o.runtime} (dev, local, miniflare or exec)`);
  }
}

/**
 * Starts a server and resolves once GET /healthz answers 200.
 *
 * Options: runtime ("dev" | "local" | "miniflare" | "exec", default "dev"); name (for
 * messages and the temporary directory); config (default wrangler.dev.toml,
 * relative to the current directory); state (persisted state directory;
 * default a throwaway one); logFile (default server.log in the throwaway
 * directory); vars ({ NAME: value }, over the config's [vars]); secrets
 * ({ NAME: value }, given as secrets through an env file); args (extra
 * arguments, or the command for exec); port (default a free one); inspector
 * (local: open the devtools inspector on a free port; dev always has one);
 * logLevel; readyPath ("/healthz"); timeoutMs (180 s); onProgress(message);
 * background (the command line's start: once up, the server outlives this
 * process and the caller stops it).
 */
export async function startServer(options = {}) {
  const o = {
    runtime: "dev", config: "wrangler.dev.toml", vars: {}, secrets: {}, args: [], inspector: false,
    logLevel: process.env.SERVER_LOG_LEVEL ?? "warn", readyPath: "/healthz", timeoutMs: 180_000,
    onProgress: () => {}, background: false,
    // An option given as undefined keeps its default.
    ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)),
  };
  o.name ??= o.runtime;
  o.config = resolve(o.config);
  // Every workerd server gets one, for its env file at least.
  const needsDir = o.runtime !== "exec" || !o.logFile;
  const dir = needsDir ? mkdtempSync(join(tmpdir(), `gateway-${o.name}-`)) : null;
  if (o.runtime !== "exec") {
    o.state = resolve(o.state ?? join(dir, "state"));
    o.envFile = join(dir, "secrets.env");
    const lines = Object.entries(o.secrets).map(([k, v]) => `${k}=${JSON.stringify(String(v))}\n`);
    writeFileSync(o.envFile, lines.join(""), { mode: 0o600 });
  }
  o.logFile = resolve(o.logFile ?? join(dir, "server.log"));
  mkdirSync(dirname(o.logFile), { recursive: true });
  // Also in the background: a launcher interrupted while it waits takes its server with it.
  installExitHooks();

  // A free port can be taken by someone else before the server binds it; then
  // the server fails with EADDRINUSE and is started again on other ports.
  for (let attempt = 1; ; attempt++) {
    const [free, freeInspector] = await freePorts(2);
    const port = o.port ?? free;
    const inspectorPort = o.runtime === "dev" || (o.runtime === "local" && o.inspector) ? freeInspector : null;
    const [cmd, argv] = commandOf(o, port, inspectorPort);
    const out = openSync(o.logFile, "a");
    const child = spawn(cmd, argv, { cwd: ROOT, detached: true, stdio: ["ignore", out, out] });
    closeSync(out);
    // A server does not keep this process alive: one left running when it ends is killed.
    child.unref();
    const server = {
      name: o.name, runtime: o.runtime, url: `http://127.0.0.1:${port}`, port, inspectorPort,
      pid: child.pid, child, state: o.state ?? null, logFile: o.logFile, dir, onProgress: o.onProgress,
      stop: (opts) => stop(server, opts),
      kill: () => stop(server, { signal: "SIGKILL" }),
      logTail: (lines) => tail(o.logFile, lines),
    };
    let exited = null;
    child.once("exit", (code, signal) => { exited = signal ?? `code ${code}`; });
    child.once("error", (e) => { exited = e.message; });
    if (child.pid === undefined) await sleep(50); // spawn failed; `error` is on its way
    if (child.pid !== undefined) live.add(server);
    o.onProgress(`starting ${o.runtime} server ${o.name} on port ${port} (log ${o.logFile})`);

    const end = Date.now() + o.timeoutMs;
    let why = null;
    while (!why) {
      try {
        const r = await fetch(server.url + o.readyPath, { signal: AbortSignal.timeout(5000) });
        await r.arrayBuffer();
        if (r.status === 200) break;
      } catch { /* not up yet */ }
      if (exited) why = `exited (${exited})`;
      else if (Date.now() > end) why = `did not answer ${o.readyPath} within ${o.timeoutMs / 1000} s`;
      else await sleep(250);
    }
    if (!why) {
      o.onProgress(`${o.name} up at ${server.url}`);
      if (o.background) live.delete(server);
      return server;
    }
    if (child.pid !== undefined) await stopGroup(child.pid, { signal: "SIGKILL" }).catch(() => {});
    live.delete(server);
    const log = tail(o.logFile);
    if (!o.port && attempt < 3 && /EADDRINUSE|address already in use/i.test(log)) {
      o.onProgress(`${o.name}: port taken, starting again`);
      continue;
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
    throw new Error(`${o.runtime} server ${o.name} on port ${port} ${why}; the tail of its log:\n${log}`);
  }
}

/** Stops a server of startServer and removes its throwaway directory (unless `keep`). */
async function stop(server, { signal = "SIGTERM", graceMs, keep = false } = {}) {
  if (!server.child.pid) return;
  server.stopping ??= (async () => {
    server.onProgress(`${signal} to process group ${server.pid} (${server.name})`);
    await stopGroup(server.pid, { signal, graceMs });
    live.delete(server);
    if (server.dir && !keep) rmSync(server.dir, { recursive: true, force: true });
  })();
  return server.stopping;
}

// ------------------------------------------------------------ command line ---

function usage(message) {
  if (message) console.error(`server: ${message}`);
  console.error(`usage: node scripts/server.mjs start [--runtime dev|local|miniflare|exec] [--name NAME] [--config TOML]
           [--state DIR] [--log FILE] [--var NAME:VALUE]... [--secret NAME:VALUE]... [--port N] [--inspector]
           [--log-level LEVEL] [--timeout SECONDS] [-- EXTRA...]
       node scripts/server.mjs stop [--kill] [--grace SECONDS] PID...`);
  process.exit(2);
}

async function cli(argv) {
  const [command, ...rest] = argv;
  if (command === "start") {
    const o = { vars: {}, secrets: {}, args: [], background: true };
    for (let i = 0; i < rest.length; i++) {
      const flag = rest[i];
      if (flag === "--") { o.args = rest.slice(i + 1); break; }
      if (flag === "--inspector") { o.inspector = true; continue; }
      const value = rest[++i];
      if (value === undefined) usage(`${flag} needs a value`);
      switch (flag) {
        case "--runtime": o.runtime = value; break;
        case "--name": o.name = value; break;
        case "--config": o.config = value; break;
        case "--state": o.state = value; break;
        case "--log": o.logFile = value; break;
        case "--port": o.port = Number(value); break;
        case "--log-level": o.logLevel = value; break;
        case "--timeout": o.timeoutMs = Number(value) * 1000; break;
        case "--var":
        case "--secret": {
          const at = value.indexOf(":");
          if (at < 1) usage(`${flag} wants NAME:VALUE, got ${value}`);
          o[flag === "--var" ? "vars" : "secrets"][value.slice(0, at)] = value.slice(at + 1);
          break;
        }
        default: usage(`unknown argument ${flag}`);
      }
    }
    let s;
    try { s = await startServer(o); } catch (e) { console.error(`server: ${e.message}`); process.exit(1); }
    const fields = { name: s.name, url: s.url, port: s.port, inspector_port: s.inspectorPort ?? "",
      pid: s.pid, state: s.state ?? "", log: s.logFile, dir: s.dir ?? "" };
    for (const [k, v] of Object.entries(fields)) console.log(`${k}=${v}`);
    process.exit(0);
  }
  if (command === "stop") {
    let signal = "SIGTERM";
    let graceMs = 10_000;
    const pids = [];
    for (let i = 0; i < rest.length; i++) {
      if (rest[i] === "--kill") signal = "SIGKILL";
      else if (rest[i] === "--grace") graceMs = Number(rest[++i]) * 1000;
      else if (/^\d+$/.test(rest[i])) pids.push(Number(rest[i]));
      else usage(`unknown argument ${rest[i]}`);
    }
    await Promise.all(pids.map((pid) => stopGroup(pid, { signal, graceMs })));
    return;
  }
  usage(command ? `unknown command ${command}` : "a command is needed");
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await cli(process.argv.slice(2));
}
