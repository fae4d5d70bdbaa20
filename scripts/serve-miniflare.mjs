#!/usr/bin/env node
// Runs a Worker on Miniflare directly: one workerd process serves it, with no
// wrangler proxy in front of every request and WebSocket message. That is the
// shape of production (Cloudflare has no such proxy) and of `make bench`:
// behind wrangler's proxy (`wrangler dev`, `unstable_startWorker`, so
// scripts/serve-local.mjs) the local server stops listening at about 3,300
// concurrent WebSockets, and the proxy's own work is charged to every server
// alike; Miniflare used directly held 6,000 sockets on one object and spent
// less CPU per delivery. The bindings (Durable Objects with their SQLite
// migrations, KV, rate limits, [vars]) come from the wrangler config through
// wrangler's own `unstable_getMiniflareWorkerOptions`; the config's `main` is
// bundled with esbuild (as wrangler does) into a throwaway directory, so
// neither an edit nor a rebuild can reload the Worker in the middle of a run.
// Build first (`make build`).
//
// Usage: node scripts/serve-miniflare.mjs --config TOML --port N --persist-to DIR
//          [--ip 127.0.0.1] [--var NAME:VALUE ...] [--env-file FILE]
//          [--assets on|off] [--log-level LEVEL]
// `--env-file` names the secrets file (without it an empty one is used, so a
// developer's `.dev.vars` never reaches the server). `--assets off` serves
// the Worker without the config's static assets (see serve-local.mjs).
// Prints "ready <url>" once it serves; stops on SIGTERM or SIGINT.
// scripts/server.mjs (`--runtime miniflare`) starts it on free ports.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { build } from "esbuild";
import { Log, LogLevel, Miniflare } from "miniflare";
import { unstable_getMiniflareWorkerOptions } from "wrangler";
import { parseServeArgs } from "./serve-args.mjs";

const opts = parseServeArgs(process.argv.slice(2), "serve-miniflare", "serve-miniflare.mjs --config TOML --port N --persist-to DIR [--ip IP] [--var NAME:VALUE ...] [--env-file FILE] [--assets on|off]");

const configDir = dirname(opts.config);
mkdirSync(join(configDir, ".serve-local"), { recursive: true });
const snapshot = mkdtempSync(join(configDir, ".serve-local", "miniflare-"));
const cleanup = () => rmSync(snapshot, { recursive: true, force: true });
process.on("exit", cleanup);

let envFile = opts.envFile;
if (!envFile) {
  envFile = join(snapshot, "empty.env");
  writeFileSync(envFile, "");
}
const { workerOptions, main } = unstable_getMiniflareWorkerOptions(opts.config, undefined, { envFiles: [envFile] });
if (!main) throw new Error(`serve-miniflare: no main in ${opts.config}`);
if (!opts.assets) delete workerOptions.assets;

// The Worker as wrangler would bundle it: ES modules, the runtime's own
// modules left as imports, wasm copied beside the bundle (Miniflare loads it
// as a compiled module through the config's module rules).
const outfile = join(snapshot, "worker.mjs");
await build({
  entryPoints: [resolve(configDir, main)],
  bundle: true,
  format: "esm",
  platform: "neutral",
  target: "es2022",
  conditions: ["workerd", "worker", "browser"],
  mainFields: ["module", "main"],
  external: ["cloudflare:*", "node:*"],
  loader: { ".wasm": "copy" },
  outfile,
  logLevel: "warning",
});

const levels = { debug: LogLevel.DEBUG, info: LogLevel.INFO, log: LogLevel.INFO, warn: LogLevel.WARN, error: LogLevel.ERROR, none: LogLevel.NONE };
const mf = new Miniflare({
  ...workerOptions,
  bindings: { ...(workerOptions.bindings ?? {}), ...opts.vars },
  modules: true,
  scriptPath: outfile,
  modulesRoot: snapshot,
  host: opts.ip,
  port: opts.port,
  durableObjectsPersist: join(opts.persist, "do"),
  kvPersist: join(opts.persist, "kv"),
  cachePersist: join(opts.persist, "cache"),
  log: new Log(levels[opts.logLevel] ?? LogLevel.WARN),
});
const url = await mf.ready;
console.log(`ready ${url}`);
let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await Promise.race([mf.dispose(), new Promise((r) => setTimeout(r, 5000))]).catch(() => {});
  cleanup();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
