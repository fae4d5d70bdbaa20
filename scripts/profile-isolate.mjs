#!/usr/bin/env node
// CPU profile of the gateway's isolate in a running `wrangler dev`, taken
// over the runtime's own V8 inspector (not wrangler's inspector proxy, which
// replays everything it buffered to whoever connects).
//
// Usage: node scripts/profile-isolate.mjs --port DEV_PORT [--seconds 5]
//          [--out profile.cpuprofile] [--top 40] [--focus PATTERN,PATTERN...]
//        node scripts/profile-isolate.mjs --profile FILE [--top 40] [--focus ...]
// --focus prints, for each pattern, the share of samples with a function
// whose name contains it on the stack (async Rust is inlined into closures,
// so a named leaf or a runtime call is often the only handle on a cost).
// --profile reads a profile written before instead of taking one.
// Start load first (e.g. the load generator); the profile covers the next
// SECONDS. Prints self and inclusive time per function (wasm functions carry
// their Rust names) and writes the raw profile, which Chrome DevTools opens.
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { openInspector } from "./inspector.mjs";

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const devPort = opt("port");
const seconds = Number(opt("seconds", 5));
const out = opt("out", "isolate.cpuprofile");
const top = Number(opt("top", 40));
const focus = (opt("focus", "") || "").split(",").filter(Boolean);
const saved = opt("profile");
if (!devPort && !saved) {
  console.error("usage: profile-isolate.mjs --port DEV_PORT | --profile FILE [--seconds 5] [--out FILE] [--top 40] [--focus P,Q]");
  process.exit(2);
}

let profile;
let target = saved;
if (saved) {
  profile = JSON.parse(readFileSync(saved, "utf8"));
} else {
  // wrangler dev runs two workerd processes: the proxy listens on DEV_PORT, the
  // runtime (entry=127.0.0.1:0) is its sibling; one of the runtime's loopback
  // ports answers /json with the isolate's inspector URL.
  const ps = execFileSync("ps", ["-e", "-o", "pid=,ppid=,args="]).toString().trim().split("\n")
    .map((l) => { const [pid, ppid, ...cmd] = l.trim().split(/\s+/); return { pid, ppid, cmd: cmd.join(" ") }; });
  const proxy = ps.find((p) => p.cmd.includes("workerd") && p.cmd.includes(`entry=127.0.0.1:${devPort} `));
  if (!proxy) throw new Error(`no workerd listening on ${devPort}`);
  const runtime = ps.find((p) => p.ppid === proxy.ppid && p.pid !== proxy.pid && p.cmd.includes("workerd"));
  if (!runtime) throw new Error("no runtime workerd next to the proxy");
  const ports = [...execFileSync("ss", ["-ltnpH"]).toString().matchAll(/127\.0\.0\.1:(\d+)\s.*pid=(\d+),/g)]
    .filter((m) => m[2] === runtime.pid).map((m) => m[1]);
  target = null;
  for (const port of ports) {
    try {
      const list = await (await fetch(`http://127.0.0.1:${port}/json`)).json();
      target = list.find((t) => t.id.startsWith("core:user:"))?.webSocketDebuggerUrl ?? target;
    } catch { /* not the inspector */ }
  }
  if (!target) throw new Error(`no inspector among the runtime's ports ${ports.join(", ")}`);

  // The runtime drops the first session opened beside wrangler's own one;
  // openInspector probes each session and retries.
  const s = await openInspector(target);
  let stopped;
  try {
    await s.call("Profiler.enable");
    await s.call("Profiler.setSamplingInterval", { interval: 500 });
    await s.call("Profiler.start");
    await new Promise((r) => setTimeout(r, seconds * 1000));
    stopped = await s.call("Profiler.stop");
  } finally {
    s.close();
  }
  profile = stopped?.profile;
  if (!profile) throw new Error(`no profile: ${JSON.stringify(stopped).slice(0, 200)}`);
  writeFileSync(out, JSON.stringify(profile));
}
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const name = (n) => {
  const f = n.callFrame;
  return `${f.functionName || "(anonymous)"} ${f.url.split("/").pop()}${f.lineNumber >= 0 ? `:${f.lineNumber + 1}` : ""}`;
};
const self = new Map();
const incl = new Map();
let total = 0;
profile.samples.forEach((sample, i) => {
  const dt = profile.timeDeltas[i] ?? 0;
  total += dt;
  const k = name(byId.get(sample));
  self.set(k, (self.get(k) ?? 0) + dt);
  const seen = new Set();
  for (let n = sample; n !== undefined; n = parent.get(n)) {
    const key = name(byId.get(n));
    if (!seen.has(key)) { seen.add(key); incl.set(key, (incl.get(key) ?? 0) + dt); }
  }
});
const show = (title, m) => {
  console.log(`\n${title}`);
  for (const [k, t] of [...m].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    console.log(`${(100 * t / total).toFixed(1).padStart(6)} %  ${k.slice(0, 150)}`);
  }
};
console.log(`isolate ${target}: ${(total / 1000).toFixed(0)} ms sampled; raw profile in ${out}`);
show("self time", self);
show("inclusive time", incl);
if (focus.length) {
  console.log("\nfocus (share of samples with a matching function on the stack)");
  for (const pattern of focus) {
    let t = 0;
    profile.samples.forEach((sample, i) => {
      for (let n = sample; n !== undefined; n = parent.get(n)) {
        if (name(byId.get(n)).includes(pattern)) { t += profile.timeDeltas[i] ?? 0; break; }
      }
    });
    console.log(`${(100 * t / total).toFixed(1).padStart(6)} %  ${pattern}`);
  }
}
