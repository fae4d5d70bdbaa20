// The durable JS peer of the benchmark (see /BENCHMARKS.md): a plain Worker and
// Durable Object (no framework) that gives each command the guarantee ours gives:
// it is inserted into the object's SQLite (`ctx.storage.sql`) with its seq before
// its frame is sent, so the runtime's output gate holds the frames until the write
// is durable. One object per character; subscribers are hibernatable WebSockets
// tagged with their topics; `since` replays the stored commands after it, then a
// `recovered` frame, as ours does. It speaks the gateway's shapes (welcome,
// command, recovered, the publish answer) so the same load generator checks it.
// What it leaves out: auth, validation beyond the shapes, logging, the KV archive
// (it keeps the newest HISTORY_LIMIT rows and deletes older ones), idempotency.
import { DurableObject } from "cloudflare:workers";

const PATH = /^\/v1\/characters\/([A-Za-z0-9_-]{1,64})\/(subscribe|commands)$/;
const HISTORY_LIMIT = 1000;
const RESUME_LIMIT = 1000;

function topicsOf(url) {
  const topics = url.searchParams.get("topics");
  const list = topics ? topics.split(",").filter(Boolean).slice(0, 10) : [];
  return list.length ? list : ["main"];
}

export class Channel extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec(`CREATE TABLE IF NOT EXISTS commands (seq INTEGER PRIMARY KEY, topic TEXT NOT NULL, frame TEXT NOT NULL)`);
    this.sql.exec(`CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)`);
    let epoch = [...this.sql.exec(`SELECT v FROM meta WHERE k = 'epoch'`)][0]?.v;
    if (!epoch) {
      epoch = crypto.randomUUID();
      this.sql.exec(`INSERT INTO meta (k, v) VALUES ('epoch', ?)`, epoch);
    }
    this.epoch = epoch;
    this.seq = [...this.sql.exec(`SELECT COALESCE(MAX(seq), 0) AS s FROM commands`)][0].s;
  }

  async fetch(request) {
    const url = new URL(request.url);
    const character = request.headers.get("x-character");
    if (request.headers.get("upgrade") === "websocket") return this.subscribe(url, character);
    if (request.method !== "POST") return new Response("method", { status: 405 });
    const body = await request.json();
    const list = Array.isArray(body.commands) ? body.commands : [body];
    const seqs = [];
    let delivered = 0;
    for (const c of list) {
      const topic = c.topic ?? "main";
      const seq = ++this.seq;
      const frame = JSON.stringify({
        type: "command", character, topic, seq, epoch: this.epoch, ts: Date.now(),
        name: c.name, params: c.params ?? {}, duration_ms: c.duration_ms ?? null, id: c.id ?? null,
      });
      // Stored first; the frames below leave only once this write is durable.
      this.sql.exec(`INSERT INTO commands (seq, topic, frame) VALUES (?, ?, ?)`, seq, topic, frame);
      for (const ws of this.ctx.getWebSockets(topic)) {
        try {
          ws.send(frame);
          delivered++;
        } catch {
          // a socket closing under us: not delivered
        }
      }
      seqs.push(seq);
    }
    if (this.seq % 100 < list.length) {
      this.sql.exec(`DELETE FROM commands WHERE seq <= ?`, this.seq - HISTORY_LIMIT);
    }
    return Response.json({ character, epoch: this.epoch, seqs, delivered });
  }

  subscribe(url, character) {
    const topics = topicsOf(url);
    const { 0: client, 1: server } = new WebSocketPair();
    this.ctx.acceptWebSocket(server, topics);
    server.send(JSON.stringify({
      type: "welcome", client_id: crypto.randomUUID(), character, epoch: this.epoch, seq: this.seq, topics,
    }));
    const sinceText = url.searchParams.get("since");
    if (sinceText !== null) {
      const since = Number(sinceText);
      const marks = topics.map(() => "?").join(",");
      const rows = this.sql.exec(
        `SELECT frame FROM commands WHERE seq > ? AND topic IN (${marks}) ORDER BY seq LIMIT ?`,
        since, ...topics, RESUME_LIMIT,
      );
      for (const row of rows) server.send(row.frame);
      server.send(JSON.stringify({ type: "recovered", since, seq: this.seq, complete: true, truncated: false }));
    }
    return new Response(null, { status: 101, webSocket: client });
  }

  webSocketMessage() {}

  webSocketClose(ws, code) {
    try { ws.close(code === 1005 ? 1000 : code); } catch { /* already closed */ }
  }
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const m = PATH.exec(url.pathname);
    if (!m) {
      // What scripts/server.mjs waits for, as on the gateway.
      if (url.pathname === "/healthz") return Response.json({ status: "ok" });
      return new Response("not found", { status: 404 });
    }
    const stub = env.CHANNELS.get(env.CHANNELS.idFromName(m[1]));
    const headers = new Headers(request.headers);
    headers.set("x-character", m[1]);
    return stub.fetch(new Request(request, { headers }));
  },
};
