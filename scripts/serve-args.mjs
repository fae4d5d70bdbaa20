// The command line scripts/serve-local.mjs and scripts/serve-miniflare.mjs
// share (scripts/server.mjs builds it for both):
//   --config TOML --port N --persist-to DIR [--ip 127.0.0.1] [--var NAME:VALUE ...]
//   [--env-file FILE] [--inspector-port N] [--assets on|off] [--log-level LEVEL]
// Paths come back absolute; a missing required flag prints `usage` and exits 2.
import { resolve } from "node:path";

export function parseServeArgs(argv, name, usage) {
  const opts = { ip: "127.0.0.1", vars: {}, assets: true, logLevel: "warn" };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (value === undefined) throw new Error(`${name}: ${flag} needs a value`);
    switch (flag) {
      case "--config": opts.config = resolve(value); break;
      case "--port": opts.port = Number(value); break;
      case "--persist-to": opts.persist = resolve(value); break;
      case "--ip": opts.ip = value; break;
      case "--inspector-port": opts.inspectorPort = Number(value); break;
      case "--log-level": opts.logLevel = value; break;
      case "--env-file": opts.envFile = resolve(value); break;
      case "--assets":
        if (value !== "on" && value !== "off") throw new Error(`${name}: --assets wants on or off, got ${value}`);
        opts.assets = value === "on";
        break;
      case "--var": {
        const at = value.indexOf(":");
        if (at < 1) throw new Error(`${name}: --var wants NAME:VALUE, got ${value}`);
        opts.vars[value.slice(0, at)] = value.slice(at + 1);
        break;
      }
      default: throw new Error(`${name}: unknown argument ${flag}`);
    }
  }
  if (!opts.config || !Number.isInteger(opts.port) || !opts.persist) {
    console.error(`usage: ${usage}`);
    process.exit(2);
  }
  return opts;
}
