// A DevTools (V8 inspector) session on the Worker's isolate, and what the
// scripts read through it. `make soak` uses isolateMemory: the gateway
// isolate's own memory, the JS heap after a full collection and the size of
// the wasm linear memory (resident memory of the runtime's processes also
// holds the runtime's own isolates, allocator caches and per-socket buffers,
// so it cannot tell a leak of ours from the runtime's warm-up).
// scripts/profile-isolate.mjs takes CPU profiles through openInspector.
import WebSocket from "ws";

/**
 * A DevTools session on `url` (wrangler's inspector proxy, ws://127.0.0.1:PORT/ws,
 * or a target of the runtime's own inspector): { call(method, params, timeoutMs),
 * listeners (method -> handler), close() }.
 */
export async function openInspector(url) {
  for (let attempt = 1; ; attempt++) {
    try {
      const s = await session(url);
      // A first session is sometimes dropped right away; probe it.
      await s.call("Runtime.getHeapUsage", {}, 5000);
      return s;
    } catch (e) {
      if (attempt >= 5) throw e;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

async function session(url) {
  const ws = new WebSocket(url, { maxPayload: 1 << 30 });
  await new Promise((resolve, reject) => { ws.once("open", resolve); ws.once("error", reject); });
  let id = 0;
  const pending = new Map();
  const listeners = new Map();
  // Every event is read and dropped unless someone listens: the proxy relays
  // them to this session instead of buffering them.
  ws.on("message", (d) => {
    const m = JSON.parse(d.toString());
    if (m.id && pending.has(m.id)) {
      const p = pending.get(m.id);
      pending.delete(m.id);
      if (m.error) p.reject(new Error(JSON.stringify(m.error))); else p.resolve(m.result);
    } else if (m.method) listeners.get(m.method)?.(m.params);
  });
  ws.on("close", () => { for (const p of pending.values()) p.reject(new Error("inspector closed")); pending.clear(); });
  ws.on("error", () => {});
  const call = (method, params = {}, timeout = 120_000) => new Promise((resolve, reject) => {
    if (ws.readyState !== WebSocket.OPEN) return reject(new Error("inspector closed"));
    const n = ++id;
    const timer = setTimeout(() => { pending.delete(n); reject(new Error(`${method} timed out`)); }, timeout);
    pending.set(n, {
      resolve: (v) => { clearTimeout(timer); resolve(v); },
      reject: (e) => { clearTimeout(timer); reject(e); },
    });
    ws.send(JSON.stringify({ id: n, method, params }));
  });
  return { call, listeners, close: () => ws.terminate() };
}

/**
 * Takes a heap snapshot (which runs a full collection first) and returns
 * { heapKiB, wasmKiB }: the JS heap in use after that collection, and the
 * byte length of the wasm Memory's buffer (null if no wasm memory was found).
 */
export async function isolateMemory(s) {
  const chunks = [];
  s.listeners.set("HeapProfiler.addHeapSnapshotChunk", (p) => chunks.push(p.chunk));
  try {
    await s.call("HeapProfiler.takeHeapSnapshot", { reportProgress: false }, 300_000);
  } finally {
    s.listeners.delete("HeapProfiler.addHeapSnapshotChunk");
  }
  const usage = await s.call("Runtime.getHeapUsage");
  return { heapKiB: usage.usedSize / 1024, wasmKiB: wasmMemoryBytes(JSON.parse(chunks.join(""))) / 1024 };
}

/** Size of the largest backing store held by a WebAssembly `Memory`'s ArrayBuffer. */
function wasmMemoryBytes(snap) {
  const meta = snap.snapshot.meta;
  const N = meta.node_fields.length;
  const E = meta.edge_fields.length;
  const iName = meta.node_fields.indexOf("name");
  const iSize = meta.node_fields.indexOf("self_size");
  const iEdges = meta.node_fields.indexOf("edge_count");
  const eTo = meta.edge_fields.indexOf("to_node");
  const { nodes, edges, strings } = snap;
  const count = nodes.length / N;
  const firstEdge = new Uint32Array(count + 1);
  for (let i = 0; i < count; i++) firstEdge[i + 1] = firstEdge[i] + nodes[i * N + iEdges];
  const children = (i) => {
    const out = [];
    for (let e = firstEdge[i]; e < firstEdge[i + 1]; e++) out.push(edges[e * E + eTo] / N);
    return out;
  };
  const name = (i) => strings[nodes[i * N + iName]];
  let best = null;
  for (let i = 0; i < count; i++) {
    if (name(i) !== "Memory") continue;
    for (const buffer of children(i).filter((c) => name(c) === "ArrayBuffer")) {
      for (const store of children(buffer)) {
        const size = nodes[store * N + iSize];
        if (size > 0 && /backing|ArrayBufferData/i.test(name(store))) best = Math.max(best ?? 0, size);
      }
    }
  }
  return best;
}
