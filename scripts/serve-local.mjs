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
// It serves what is already built and never rebuilds: the config's [build]
// command (and its file watcher, which runs even with `watch: false`) is
// switched off, so an edit to the sources cannot reload the Worker and drop
// its sockets in the middle of a long run. Build first (`make build`).
//
// Usage: node scripts/serve-local.mjs --config TOML --port N --persist-to DIR
//          [--ip 127.0.0.1] [--var NAME:VALUE ...]
// Prints "ready <url>" once it serves; stops on SIGTERM or SIGINT.
import { unstable_startWorker } from "wrangler";

const args = process.argv.slice(2);
const opts = { ip: "127.0.0.1", vars: {} };
for (let i = 0; i < args.length; i += 2) {
  const [flag, value] = [args[i], args[i + 1]];
  if (value === undefined) throw new Error(`serve-local: ${flag} needs a value`);
  switch (flag) {
    case "--config": opts.config = value; break;
    case "--port": opts.port = Number(value); break;
    case "--persist-to": opts.persist = value; break;
    case "--ip": opts.ip = value; break;
    case "--var": {
      const at = value.indexOf(":");
      if (at < 1) throw new Error(`serve-local: --var wants NAME:VALUE, got ${value}`);
      opts.vars[value.slice(0, at)] = value.slice(at + 1);
      break;
    }
    default: throw new Error(`serve-local: unknown argument ${flag}`);
  }
}
if (!opts.config || !Number.isInteger(opts.port) || !opts.persist) {
  console.error("usage: serve-local.mjs --config TOML --port N --persist-to DIR [--ip IP] [--var NAME:VALUE ...]");
  process.exit(2);
}

const bindings = Object.fromEntries(
  Object.entries(opts.vars).map(([name, value]) => [name, { type: "plain_text", value }]),
);
const worker = await unstable_startWorker({
  config: opts.config,
  bindings,
  // An empty command: no custom build and no watcher; the bundle is built from
  // `main` as it is on disk.
  build: { custom: { command: "" } },
  dev: {
    server: { hostname: opts.ip, port: opts.port },
    inspector: false,
    persist: opts.persist,
    watch: false,
    logLevel: "warn",
  },
});
await worker.ready;
console.log(`ready ${await worker.url}`);
let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await worker.dispose();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
