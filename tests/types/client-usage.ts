// Uses every export of public/client.mjs the way an application would, so that
// `tsc -p tests/types` fails when client.d.ts stops describing the API.
import {
  subscribe, publish, serverTime, ServerClock, state, clearRetained,
  type Command, type CommandMeta, type Subscription, type GapInfo, type ClockSample,
  type StateResult, type ClearRetainedResult,
} from "../../public/client.mjs";

const clock = new ServerClock({ baseUrl: "http://127.0.0.1:8787", samples: 5, resampleMs: 30_000, now: () => Date.now() });
const ready: Promise<ClockSample | null> = clock.ready;
const offset: number = clock.offset + clock.targetOffset;
const local: number = clock.toLocal(clock.serverNow());
const stop: () => void = clock.onChange((s) => { const rtt: number = s.rtt; void rtt; });

const sub: Subscription = subscribe("alice", {
  baseUrl: "http://127.0.0.1:8787",
  topics: ["face", "body.*"],
  sync: { playoutDelayMs: 200, clock },
  onCommand(cmd: Command, meta: CommandMeta) {
    const at: number | null = cmd.at;
    const late: boolean | undefined = meta.late;
    const retained: boolean = meta.retained;
    const frameRetained: boolean | undefined = cmd.retained;
    void retained; void frameRetained;
    void at; void late; void meta.lateByMs; void meta.dueAt; void cmd.params["start_ms"];
  },
  onGap: (g: GapInfo) => { void g.reason; },
  onState: (state, detail) => { void state; void detail.attempt; },
  onClose: (info) => { void info.code; },
  backoff: { initialMs: 100 },
  retained: true,
});
const waiting: number = sub.pending;
const shared: ServerClock | null = sub.clock;
sub.send({ type: "subscribe", topics: ["mouth"] });
sub.close();

subscribe("bob", { sync: true, now: () => Date.now() + 3000 }).close();

async function run(): Promise<void> {
  const now: number = await serverTime("http://127.0.0.1:8787");
  const res = await publish("http://127.0.0.1:8787", "alice", { name: "wave", at: now + 500 }, { token: "t" });
  const seqs: number[] = res.seqs;
  await publish(null, "alice", [{ name: "a" }, { topic: "face", name: "b", params: { i: 1 }, at: null }]);
  await publish(null, "alice", { topic: "pose", name: "sit", retain: true });
  const s: StateResult = await state("http://127.0.0.1:8787", "alice", { token: "t" });
  const first: Command | undefined = s.retained[0];
  const cleared: ClearRetainedResult = await clearRetained(null, "alice", "pose", { apiKey: "k" });
  const ok: boolean = cleared.cleared;
  void seqs; void first; void ok;
}

// @ts-expect-error: `at` is a number of ms, not a Date.
publish(null, "alice", { name: "wave", at: new Date() });

void ready; void offset; void local; void stop; void waiting; void shared; void run;
