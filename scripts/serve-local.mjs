#!/usr/bin/env node
// Runs a Worker in wrangler's local runtime (the same workerd, Durable Object
// and KV simulators as `wrangler dev`) WITHOUT the devtools inspector, for
// long or heavy runs: `make soak` and `make bench`.
//
// Why: `wrangler dev` always attaches its inspector proxy to the runtime and
// enables the DevTools Network domain. With no DevTools window attached, the
// proxy keeps every runtime message (one per subrequest, console call, ...)
// in an in-memory buffer, so resident memory of both workerd processes grows
// with traffic for as long as the server runs, whatever the Worker does.
// docs/reliability.md has the measurements. Tests keep using `wrangler dev`.
//
// It serves a snapshot of what is already built and never rebuilds: the
// config's [build] command (and its file watcher, which runs even with
// `watch: false`) is switched off, and the Worker's bundle and assets are
// copied to a temporary directory first, because wrangler's bundler watches
// `main` in any case. So neither an edit nor a rebuild can reload the Worker
// and drop its sockets in the middle of a long run. Build first (`make build`).
//
// Usage: node scripts/serve-local.mjs --config TOML --port N --persist-to DIR
//          [--ip 127.0.0.1] [--var NAME:VALUE ...] [--inspector-port N]
//          [--assets on|off] [--log-level LEVEL] [--env-file FILE]
// `--env-file` names the secrets file (as `wrangler dev --env-file`); without
// it wrangler would read the config directory's `.dev.vars`.
// `--assets off` serves the Worker without the config's static assets: then
// no assets router sits between the client and the Worker. That router is a
// Worker of its own in the local runtime, and every request and every
// WebSocket message passes through it (`make bench` compares the gateway's
// API with a peer that has no static assets; BENCHMARKS.md has the cost).
// With --inspector-port the inspector is on; whoever starts the server should
// then stay attached to ws://127.0.0.1:N/ws for the whole run (as DevTools
// would), which keeps wrangler's proxy from buffering (`make soak` does, to
// read the gateway isolate's heap).
// Prints "ready <url>" once it serves; stops on SIGTERM or SIGINT.
// scripts/server.mjs (`--runtime local`) starts it on free ports and waits for it.
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { unstable_startWorker } from "wrangler";
import { parseServeArgs } from "./serve-args.mjs";

const opts = parseServeArgs(process.argv.slice(2), "serve-local", "serve-local.mjs --config TOML --port N --persist-to DIR [--ip IP] [--var NAME:VALUE ...]");

// The snapshot: the top directory (or file) of `main`, and the assets directory.
const configPath = opts.config;
const configDir = dirname(configPath);
const toml = readFileSync(configPath, "utf8");
const main = toml.match(/^main\s*=\s*"([^"]+)"/m)?.[1];
if (!main) throw new Error(`serve-local: no main in ${configPath}`);
const assetsDir = opts.assets
  ? toml.match(/^\[assets\][^[]*?^directory\s*=\s*"([^"]+)"/ms)?.[1]
  : undefined;
// Inside the config's directory, so the bundle's imports still resolve
// against the project's node_modules.
mkdirSync(join(configDir, ".serve-local"), { recursive: true });
const snapshot = mkdtempSync(join(configDir, ".serve-local", "snapshot-"));
const top = main.replace(/^\.\//, "").split("/")[0];
cpSync(join(configDir, top), join(snapshot, top), { recursive: true });
if (assetsDir) cpSync(join(configDir, assetsDir), join(snapshot, "assets"), { recursive: true });
// Without assets: the same config minus its [assets] table, written next to
// the snapshot of `main` (wrangler takes assets from the config whatever the
// caller passes).
let runConfig = configPath;
if (!opts.assets) {
  let inAssets = false;
  const kept = toml.split("\n").filter((line) => {
    if (/^\s*\[/.test(line)) inAssets = /^\s*\[assets\]\s*$/.test(line);
    return !inAssets;
  });
  runConfig = join(snapshot, basename(configPath));
  writeFileSync(runConfig, kept.join("\n"));
}

const bindings = Object.fromEntries(
  Object.entries(opts.vars).map(([name, value]) => [name, { type: "plain_text", value }]),
);
const worker = await unstable_startWorker({
  config: runConfig,
  entrypoint: join(snapshot, main),
  ...(assetsDir ? { assets: join(snapshot, "assets") } : {}),
  bindings,
  ...(opts.envFile ? { envFiles: [opts.envFile] } : {}),
  // An empty command: no custom build and no watcher; the bundle is built from
  // `main` as it is on disk.
  build: { custom: { command: "" } },
  dev: {
    server: { hostname: opts.ip, port: opts.port },
    inspector: opts.inspectorPort ? { hostname: "127.0.0.1", port: opts.inspectorPort } : false,
    persist: opts.persist,
    watch: false,
    logLevel: opts.logLevel,
  },
});
await worker.ready;
console.log(`ready ${await worker.url}`);
let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  rmSync(snapshot, { recursive: true, force: true });
  await Promise.race([worker.dispose(), new Promise((r) => setTimeout(r, 5000))]).catch(() => {});
  process.exit(0);
};
process.on("exit", () => rmSync(snapshot, { recursive: true, force: true }));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
