// Minimal partyserver peer for the benchmark (see /BENCHMARKS.md): one room per
// character, subscribers tagged with their topics, each HTTP-posted command
// broadcast to the room's connections whose tag is the command's topic. It speaks
// the gateway's frame shapes (welcome, command, publish answer) so the same load
// generator can check it, but keeps seq in memory and stores nothing.
import { Server, routePartykitRequest } from "partyserver";

const PATH = /^\/v1\/characters\/([A-Za-z0-9_-]{1,64})\/(subscribe|commands)$/;

export class Room extends Server {
  static options = { hibernate: true };

  onStart() {
    this.seq = 0;
    this.epoch = crypto.randomUUID();
  }

  getConnectionTags(_connection, ctx) {
    const topics = new URL(ctx.request.url).searchParams.get("topics");
    const list = topics ? topics.split(",").filter(Boolean).slice(0, 9) : [];
    return list.length ? list : ["main"];
  }

  onConnect(connection, ctx) {
    const topics = new URL(ctx.request.url).searchParams.get("topics");
    connection.send(
      JSON.stringify({
        type: "welcome",
        client_id: connection.id,
        character: this.name,
        epoch: this.epoch,
        seq: this.seq,
        topics: topics ? topics.split(",") : ["main"],
      }),
    );
  }

  async onRequest(request) {
    if (request.method !== "POST") return new Response("method", { status: 405 });
    const body = await request.json();
    const topic = body.topic ?? "main";
    const seq = ++this.seq;
    const frame = JSON.stringify({
      type: "command",
      character: this.name,
      topic,
      seq,
      epoch: this.epoch,
      ts: Date.now(),
      name: body.name,
      params: body.params ?? {},
      duration_ms: body.duration_ms ?? null,
      id: body.id ?? null,
    });
    let delivered = 0;
    for (const connection of this.getConnections(topic)) {
      try {
        connection.send(frame);
        delivered++;
      } catch (_e) {
        // a socket closing under us: not delivered
      }
    }
    return Response.json({ character: this.name, epoch: this.epoch, seqs: [seq], delivered });
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
    url.pathname = `/parties/room/${m[1]}`;
    const routed = await routePartykitRequest(new Request(url, request), env);
    return routed ?? new Response("not found", { status: 404 });
  },
};
