// TypeScript declarations for client.mjs, the animation gateway's client (wire
// contract v1 and v1.1, docs/protocol.md). Checked by `tsc` in `make check`
// (tsconfig.json) against tests/types/client-usage.ts.

/** A `command` frame (contract §2). */
export interface Command {
  type: "command";
  character: string;
  topic: string;
  seq: number;
  epoch: string;
  /** Server time when it was published, ms since the Unix epoch. */
  ts: number;
  /** When it should start playing (server time, ms since the Unix epoch), or null. */
  at: number | null;
  name: string;
  params: Record<string, unknown>;
  duration_ms: number | null;
  id: string | null;
  /**
   * True only in the retained commands sent after `welcome` (and in `state()`): the
   * character's current state on that topic, with its original seq. False (or absent,
   * from servers before v1.1) in live, batched, replayed and history frames.
   */
  retained?: boolean;
}

/** A command as published (request body, contract §2). */
export interface CommandInput {
  topic?: string | null;
  name: string;
  params?: Record<string, unknown> | null;
  duration_ms?: number | null;
  id?: string | null;
  /** Server time (ms since the Unix epoch) to start playing; within an hour of now. */
  at?: number | null;
  /** Make it its topic's retained command, sent to every later subscriber (contract §8). */
  retain?: boolean | null;
}

/** What `onGap` receives: commands after `since` up to `seq` may be missing. */
export interface GapInfo {
  /** "history": the server no longer holds every command after `since`; "epoch": history was lost. */
  reason: "history" | "epoch";
  since: number | null;
  seq: number;
  epoch: string | null;
  previousEpoch: string | null;
  /** The `recovered` / `welcome` / `command` frame (or history page) that revealed the gap. */
  frame?: object;
}

export type ClientState = "connecting" | "open" | "reconnecting" | "closed";

/** Details passed with each state change. */
export interface StateDetail {
  code?: number;
  reason?: string;
  httpStatus?: number;
  attempt?: number;
  delayMs?: number;
  fatal?: boolean;
  byClient?: boolean;
  clientId?: string | null;
  epoch?: string | null;
  seq?: number;
}

export interface CloseInfo {
  code: number;
  reason: string;
  fatal?: boolean;
  byClient?: boolean;
  httpStatus?: number;
}

/** What `onCommand` receives beside the command. */
export interface CommandMeta {
  /** Replayed after a resume (or read from history to complete one). */
  replay: boolean;
  /**
   * A retained command (state to apply, sent after `welcome` of a connect without
   * `since`; its seq may be long past). Delivered at once even with `sync`: never
   * scheduled, never late. It moves neither `seq` nor `lastDeliveredSeq`.
   */
  retained: boolean;
  /** Sync only: already past due when it could be delivered; delivered at once. */
  late?: boolean;
  /** Sync only: how far past due it was delivered (0 when not late). */
  lateByMs?: number;
  /** Sync only: the server time it was due (`at`, or `ts` + `playoutDelayMs`). */
  dueAt?: number;
}

/** One sample (the best of a round) of the server's clock. */
export interface ClockSample {
  /** Server minus local clock, ms. */
  offset: number;
  /** Round trip of the request, ms. */
  rtt: number;
  /** The server's `now`. */
  server: number;
  /** The local clock when the answer arrived. */
  local: number;
}

export interface ServerClockOptions {
  /** Gateway origin, http(s):// or ws(s)://; default: the page's origin. */
  baseUrl?: string;
  fetch?: typeof fetch;
  /** The local clock, ms since the Unix epoch (default `Date.now`). */
  now?: () => number;
  headers?: Record<string, string>;
  /** Requests per sampling round; the lowest round trip wins (default 5). */
  samples?: number;
  /** A new round this often, ms (default 30000; 0: only the first and `sync()` calls). */
  resampleMs?: number;
  /** Later corrections move the applied offset by at most this much per second (default 50). */
  maxSlewPerSecondMs?: number;
  /** A correction larger than this is applied at once (default 1000). */
  stepThresholdMs?: number;
  /** Start the first round in the constructor (default true). */
  autoStart?: boolean;
  onSync?: (sample: ClockSample) => void;
  onError?: (err: unknown) => void;
}

/** An estimate of the server's clock from `GET /v1/time`: `serverNow() = now() + offset`. */
export class ServerClock {
  constructor(options?: ServerClockOptions);
  samples: number;
  resampleMs: number;
  maxSlewPerSecondMs: number;
  stepThresholdMs: number;
  /** Whether a sampling round has succeeded. */
  readonly synced: boolean;
  /** The lowest round trip of the last successful round, ms. */
  readonly rtt: number | null;
  /** Resolves after the first round: its best sample, or null when every sample failed. */
  readonly ready: Promise<ClockSample | null>;
  /** The offset in force now (server minus local, ms). */
  readonly offset: number;
  /** The offset the clock is moving towards. */
  readonly targetOffset: number;
  /** Local time from the injected clock. */
  now(): number;
  /** The server's clock now, by this estimate. */
  serverNow(): number;
  /** The local time at which the server's clock reads `serverMs`. */
  toLocal(serverMs: number): number;
  /** Calls `fn` after each new estimate; returns an unsubscribe function. */
  onChange(fn: (sample: ClockSample) => void): () => void;
  /** Runs a sampling round now. */
  sync(): Promise<ClockSample | null>;
  /** Stops re-sampling. */
  close(): void;
}

export interface SyncOptions {
  /** Commands without `at` are due at `ts` + this, ms (default 150). */
  playoutDelayMs?: number;
  /** Reported late only when deliverable more than this past due, ms (default 0). */
  lateToleranceMs?: number;
  /** A clock to share; default: the subscription's own. Playback then reads its `now`. */
  clock?: ServerClock;
  samples?: number;
  resampleMs?: number;
  maxSlewPerSecondMs?: number;
}

export interface BackoffOptions {
  initialMs?: number;
  maxMs?: number;
  factor?: number;
  resetAfterMs?: number;
}

export interface SubscribeOptions {
  baseUrl?: string;
  /** Alias of `baseUrl`. */
  url?: string;
  topics?: string[] | string;
  since?: number;
  epoch?: string;
  token?: string | (() => string | Promise<string>);
  presence?: boolean;
  /** Extra upgrade headers (Node `ws` only). */
  headers?: Record<string, string>;
  onCommand?: (cmd: Command, meta: CommandMeta) => void;
  /** Deliver retained commands to `onCommand` (default true; false: ignore them). */
  retained?: boolean;
  onGap?: (gap: GapInfo) => void;
  onState?: (state: ClientState, detail: StateDetail) => void;
  onFrame?: (frame: Record<string, unknown>) => void;
  onWelcome?: (welcome: Record<string, unknown>) => void;
  onRecovered?: (frame: Record<string, unknown>) => void;
  onPresence?: (frame: Record<string, unknown>) => void;
  onClose?: (info: CloseInfo) => void;
  onError?: (err: unknown) => void;
  /** WebSocket implementation; default: the global one (Node 20: pass `ws`). */
  WebSocket?: unknown;
  fetch?: typeof fetch;
  historyPageSize?: number;
  backoff?: BackoffOptions;
  pingIntervalMs?: number;
  pongTimeoutMs?: number;
  connectTimeoutMs?: number;
  fatalCloseCodes?: number[];
  /** Synchronized playback on server time (off by default). */
  sync?: boolean | SyncOptions;
  /** The local clock, ms since the Unix epoch (default `Date.now`). */
  now?: () => number;
}

export interface Subscription {
  /** Stop for good: closes the socket (code 1000), cancels timers, drops waiting commands. */
  close(): void;
  /** Send a raw frame on the live socket (false when none is open). */
  send(frame: object | string): boolean;
  /** The seq the client is caught up to (sent as `since` on reconnect); retained commands leave it alone. */
  readonly seq: number | null;
  /** The seq of the last command given to `onCommand`, retained commands aside. */
  readonly lastDeliveredSeq: number | null;
  readonly epoch: string | null;
  readonly state: ClientState;
  readonly clientId: string | null;
  readonly connections: number;
  /** The sync clock (null without `sync`). */
  readonly clock: ServerClock | null;
  /** Sync only: commands received and waiting for their time. */
  readonly pending: number;
}

export function subscribe(character: string, options?: SubscribeOptions): Subscription;

export interface PublishOptions {
  token?: string;
  apiKey?: string;
  apiKeyHeader?: string;
  /** Extra request headers. */
  headers?: Record<string, string>;
  fetch?: typeof fetch;
  signal?: AbortSignal;
}

export interface PublishResult {
  character: string;
  epoch: string;
  seqs: number[];
  delivered: number;
}

/** Rejects with an Error carrying `status` and `body` on a non-2xx answer. */
export function publish(
  baseUrl: string | null | undefined,
  character: string,
  command: CommandInput | CommandInput[],
  opts?: PublishOptions,
): Promise<PublishResult>;

/** The server's clock once (`GET /v1/time`), ms since the Unix epoch. */
export function serverTime(
  baseUrl: string | null | undefined,
  opts?: { fetch?: typeof fetch },
): Promise<number>;

/** The answer of `GET /v1/characters/{c}/state`. */
export interface StateResult {
  character: string;
  epoch: string;
  /** The character's latest seq. */
  seq: number;
  /** Every retained command (`retained: true`), in seq order. */
  retained: Command[];
}

/** A character's retained commands (`GET .../state`, subscriber rights). Rejects like `publish`. */
export function state(
  baseUrl: string | null | undefined,
  character: string,
  opts?: PublishOptions,
): Promise<StateResult>;

export interface ClearRetainedResult {
  character: string;
  topic: string;
  /** False when the topic held no retained command (clearing is idempotent). */
  cleared: boolean;
}

/** Clears a topic's retained command (`DELETE .../retained/{topic}`, publisher rights). Rejects like `publish`. */
export function clearRetained(
  baseUrl: string | null | undefined,
  character: string,
  topic: string,
  opts?: PublishOptions,
): Promise<ClearRetainedResult>;
