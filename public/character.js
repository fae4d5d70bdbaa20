// One animated character: an SVG puppet that performs gateway commands.
//
// Every command plays on a "channel" (body, head, arm, face, eyes, mouth, move, fx); a new
// command on a channel replaces the one playing there, commands on different channels
// overlap (talk while waving). Commands this page does not know show as a labelled pulse.
//
// Some commands set a pose that lasts rather than a gesture that ends: `move` (where the
// character stands), `idle` (back home, gestures stopped) and `mood` (the face it keeps
// between gestures: params.expression = neutral | happy | sad | surprised). The page
// publishes them with `retain: true`, so a viewer that connects later gets them right
// after `welcome` (`meta.retained`) and shows the pose at once, without playing them.
//
// The element exposes its state for people and tests:
//   data-character, data-animation (newest command still playing, or "idle"),
//   data-active (every playing command), data-last-command, data-last-seq,
//   data-last-topic, data-x / data-y (offset from home after `move`), data-mood,
//   data-retained-seqs (seqs of the retained commands applied, in order).

const SVG_NS = "http://www.w3.org/2000/svg";

/** Default durations (ms) when a command carries none. */
const DEFAULT_MS = {
  idle: 400, wave: 1200, jump: 700, spin: 900, nod: 600, shake_head: 800, smile: 1500,
  frown: 1500, blink: 220, talk: 1500, move: 600, laugh: 1500, wink: 400, heart: 1500,
  head_tilt: 1000, bounce: 1000, bow_head: 1000, surprise: 1000,
};

/** The channel each known command plays on. */
const CHANNEL = {
  wave: "arm", jump: "body", spin: "body", bounce: "body",
  nod: "head", shake_head: "head", head_tilt: "head", bow_head: "head",
  smile: "face", frown: "face", laugh: "face", surprise: "face", wink: "face",
  blink: "eyes", talk: "mouth", move: "move", heart: "fx",
};

/** Commands this page draws with their own animation (the rest pulse). */
export const KNOWN_COMMANDS = ["idle", "mood", ...Object.keys(CHANNEL)];

/** Commands that set a lasting pose: applied at once when they arrive retained. */
export const POSE_COMMANDS = ["move", "idle", "mood"];

const PALETTE = ["#7363f2", "#f0784f", "#1fa89a", "#e7a320", "#3d8bf2", "#e0609f", "#52b152", "#9a6cf0"];

/** A stable colour for a character name. */
export function colorFor(name) {
  let h = 2166136261;
  for (const ch of name) h = Math.imul(h ^ ch.codePointAt(0), 16777619);
  return PALETTE[(h >>> 0) % PALETTE.length];
}

const num = (v, dflt, lo = -Infinity, hi = Infinity) => {
  const n = typeof v === "number" ? v : typeof v === "string" && v.trim() !== "" ? Number(v) : NaN;
  return Number.isFinite(n) ? Math.min(hi, Math.max(lo, n)) : dflt;
};
const clamp01 = (v, dflt) => num(v, dflt, 0, 1);

// Mouth shapes share one path structure, so the browser can morph between them.
function mouthPath(w, corner, top, bottom) {
  const l = 200 - w, r = 200 + w, a = 200 - w * 0.55, b = 200 + w * 0.55;
  return `M${l} ${corner} C${a} ${top} ${b} ${top} ${r} ${corner} C${b} ${bottom} ${a} ${bottom} ${l} ${corner} Z`;
}
const MOUTH = {
  neutral: () => mouthPath(12, 165, 170, 170),
  smile: (i) => mouthPath(13 + 8 * i, 163 - 2 * i, 166 + 6 * i, 168 + 14 * i),
  frown: (i) => mouthPath(13, 172, 170 - 10 * i, 170 - 10 * i),
  open: (o) => mouthPath(10, 166, 163 - 4 * o, 168 + 12 * o),
  laugh: (o) => mouthPath(20, 160, 160, 176 + 10 * o),
  surprise: () => mouthPath(8, 170, 157, 183),
};
/** Held expressions (`mood`): the face between gestures. */
const MOODS = {
  neutral: { mouth: () => MOUTH.neutral(), brows: "neutral", cheeks: "" },
  happy: { mouth: () => MOUTH.smile(0.6), brows: "neutral", cheeks: "0.65" },
  sad: { mouth: () => MOUTH.frown(0.6), brows: "frown", cheeks: "0" },
  surprised: { mouth: () => MOUTH.surprise(), brows: "up", cheeks: "0.2" },
};
export const MOOD_NAMES = Object.keys(MOODS);
const MOOD_ALIASES = { smile: "happy", frown: "sad", surprise: "surprised", calm: "neutral" };

const BROWS = {
  neutral: ["M166 110 Q177 104 188 110", "M212 110 Q223 104 234 110"],
  frown: ["M166 106 Q177 108 189 115", "M211 115 Q223 108 234 106"],
  up: ["M166 100 Q177 92 188 100", "M212 100 Q223 92 234 100"],
};

const FEET = "200px 272px";
const HEART = "M0 6 C-6 -2 -14 3 -10 10 L0 19 L10 10 C14 3 6 -2 0 6 Z";

function svgEl(tag, attrs = {}, children = []) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(c);
  return el;
}

function buildPuppet(name) {
  const svg = svgEl("svg", { viewBox: "-40 0 480 290", class: "puppet", role: "img", "aria-label": `${name}, animated` });
  const shadow = svgEl("ellipse", { class: "shadow", cx: 200, cy: 275, rx: 58, ry: 9 });
  const ring = svgEl("circle", { class: "pulse-ring", cx: 200, cy: 170, r: 90 });
  const feet = svgEl("g", { class: "feet" }, [
    svgEl("ellipse", { cx: 177, cy: 263, rx: 18, ry: 10 }),
    svgEl("ellipse", { cx: 223, cy: 263, rx: 18, ry: 10 }),
  ]);
  const armL = svgEl("g", { class: "arm arm-l" }, [svgEl("rect", { x: 138, y: 196, width: 24, height: 54, rx: 12 })]);
  const armR = svgEl("g", { class: "arm arm-r" }, [svgEl("rect", { x: 238, y: 196, width: 24, height: 54, rx: 12 })]);
  const torso = svgEl("g", { class: "torso" }, [
    svgEl("ellipse", { class: "skin", cx: 200, cy: 226, rx: 50, ry: 45 }),
    svgEl("ellipse", { class: "belly", cx: 200, cy: 237, rx: 31, ry: 26 }),
  ]);
  const eye = (cx, side) => svgEl("g", { class: `eye eye-${side}` }, [
    svgEl("ellipse", { class: "pupil", cx, cy: 134, rx: 8, ry: 11 }),
    svgEl("circle", { class: "glint", cx: cx + 3, cy: 129, r: 3 }),
  ]);
  const browL = svgEl("path", { class: "brow brow-l", d: BROWS.neutral[0] });
  const browR = svgEl("path", { class: "brow brow-r", d: BROWS.neutral[1] });
  const mouth = svgEl("path", { class: "mouth", d: MOUTH.neutral() });
  const head = svgEl("g", { class: "head" }, [
    svgEl("line", { class: "antenna", x1: 200, y1: 80, x2: 200, y2: 58 }),
    svgEl("circle", { class: "antenna-ball", cx: 200, cy: 53, r: 8 }),
    svgEl("circle", { class: "skin", cx: 200, cy: 140, r: 64 }),
    svgEl("ellipse", { class: "face-plate", cx: 200, cy: 146, rx: 50, ry: 42 }),
    svgEl("g", { class: "cheeks" }, [
      svgEl("ellipse", { cx: 164, cy: 160, rx: 11, ry: 7 }),
      svgEl("ellipse", { cx: 236, cy: 160, rx: 11, ry: 7 }),
    ]),
    svgEl("g", { class: "brows" }, [browL, browR]),
    svgEl("g", { class: "eyes" }, [eye(178, "l"), eye(222, "r")]),
    mouth,
  ]);
  const hearts = svgEl("g", { class: "hearts" }, [
    [150, 70, 0.9], [200, 40, 1.2], [252, 66, 0.8],
  ].map(([x, y, s]) => svgEl("g", { class: "heart", transform: `translate(${x} ${y}) scale(${s})` }, [svgEl("path", { d: HEART })])));
  const breath = svgEl("g", { class: "breath" }, [armL, armR, torso, head]);
  const actor = svgEl("g", { class: "actor" }, [feet, breath]);
  const rig = svgEl("g", { class: "rig" }, [ring, actor, hearts]);
  svg.append(shadow, rig);
  return { svg, shadow, ring, rig, actor, head, armR, armL, eyes: head.querySelector(".eyes"), eyeR: head.querySelector(".eye-r"), browL, browR, mouth, cheeks: head.querySelector(".cheeks"), hearts };
}

export class CharacterView {
  /**
   * @param {string} name
   * @param {{onRemove?: (name: string) => void, onReconnect?: (name: string) => void}} [hooks]
   */
  constructor(name, hooks = {}) {
    this.name = name;
    this.hooks = hooks;
    this.channels = new Map(); // channel -> {name, seq, token, timers:[], anims:[], started}
    this.pos = { x: 0, y: 0 };
    this.mood = "neutral";
    this.tokens = 0;
    this.el = this.#buildCard();
    this.#publishState();
  }

  #buildCard() {
    const card = document.createElement("article");
    card.className = "char-card";
    card.dataset.character = this.name;
    card.dataset.state = "connecting";
    card.dataset.animation = "idle";
    card.dataset.active = "";
    card.dataset.lastSeq = "";
    card.dataset.lastCommand = "";
    card.dataset.lastTopic = "";
    card.dataset.gaps = "0";
    card.dataset.mood = "neutral";
    card.dataset.retainedSeqs = "";
    card.style.setProperty("--char", colorFor(this.name));
    card.innerHTML = `
      <header class="char-head">
        <span class="avatar" aria-hidden="true"></span>
        <h3 class="char-name"></h3>
        <span class="state-pill" data-role="state"><span class="dot"></span><span class="state-text">Connecting</span></span>
        <button type="button" class="icon-btn" data-role="remove" title="Stop watching" aria-label="Stop watching">
          <svg viewBox="0 0 20 20" aria-hidden="true"><path d="M5 5l10 10M15 5L5 15"/></svg></button>
      </header>
      <div class="stage">
        <div class="bubble" data-role="bubble" hidden></div>
        <div class="pulse-label" data-role="pulse" hidden></div>
        <div class="notice" data-role="notice" hidden>
          <span class="notice-text"></span>
          <button type="button" class="btn small" data-role="reconnect">Reconnect</button>
        </div>
      </div>
      <footer class="char-meta">
        <span class="meta"><span class="k">Now</span><b data-role="anim">idle</b></span>
        <span class="meta"><span class="k">Seq</span><b data-role="seq">–</b></span>
        <span class="meta"><span class="k">Latency</span><b data-role="latency">–</b></span>
        <span class="gap-chip" data-role="gap" hidden></span>
      </footer>`;
    card.querySelector(".char-name").textContent = this.name;
    card.querySelector(".avatar").textContent = this.name.slice(0, 1).toUpperCase();
    this.puppet = buildPuppet(this.name);
    this.stage = card.querySelector(".stage");
    this.stage.prepend(this.puppet.svg);
    this.ui = {};
    for (const el of card.querySelectorAll("[data-role]")) this.ui[el.dataset.role] = el;
    this.ui.remove.addEventListener("click", () => this.hooks.onRemove?.(this.name));
    this.ui.reconnect.addEventListener("click", () => this.hooks.onReconnect?.(this.name));
    return card;
  }

  /** Connection state from the client (`connecting`, `open`, `reconnecting`, `closed`). */
  setConnection(state, detail = {}) {
    const el = this.el;
    el.dataset.state = state;
    const text = {
      connecting: detail.attempt ? `Connecting (try ${detail.attempt + 1})` : "Connecting",
      open: "Live",
      reconnecting: `Reconnecting in ${((detail.delayMs ?? 0) / 1000).toFixed(1)} s`,
      closed: "Closed",
    }[state] ?? state;
    this.ui.state.querySelector(".state-text").textContent = text;
    this.ui.state.title = detail.reason ? `${detail.reason}${detail.code ? ` (${detail.code})` : ""}` : "";
    if (state === "open") el.dataset.clientId = detail.clientId ?? "";
    if (state === "closed" && !detail.byClient) {
      const why = detail.code === 4010 ? "Disconnected by an admin"
        : detail.code === 4001 ? "Token expired"
        : detail.code === 4003 ? "Access withdrawn"
        : detail.httpStatus ? `Refused (HTTP ${detail.httpStatus})`
        : `Connection closed${detail.code ? ` (${detail.code})` : ""}`;
      this.ui.notice.querySelector(".notice-text").textContent = why;
      this.ui.notice.hidden = false;
    } else if (state === "reconnecting" && !this.everOpened && (detail.attempt ?? 0) >= 2) {
      // Browsers cannot see why an upgrade was refused; a missing token is the usual cause.
      this.ui.notice.querySelector(".notice-text").textContent = "Can't connect. If auth is on, add a token under Credentials.";
      this.ui.notice.hidden = false;
    } else if (state !== "reconnecting" && state !== "connecting") {
      this.ui.notice.hidden = true;
    }
    if (state === "open") this.everOpened = true;
  }

  /** Records a resume gap: commands after `since` up to `seq` may be missing. */
  showGap(gap) {
    const n = Number(this.el.dataset.gaps) + 1;
    this.el.dataset.gaps = String(n);
    const chip = this.ui.gap;
    chip.hidden = false;
    chip.textContent = gap.reason === "epoch" ? "History reset" : `Gap after seq ${gap.since ?? 0}`;
    chip.title = gap.reason === "epoch"
      ? `The character's history was lost; seqs restarted (now ${gap.seq})`
      : `Commands after seq ${gap.since ?? 0} up to ${gap.seq} may be missing`;
  }

  /**
   * Receives a command frame: records it at once, and performs it (after
   * `params.start_ms` when a `say` gesture carries one).
   */
  receive(cmd, { replay = false, retained = false, dueAt } = {}) {
    const el = this.el;
    el.dataset.lastSeq = String(cmd.seq);
    el.dataset.lastCommand = cmd.name;
    el.dataset.lastTopic = cmd.topic;
    el.dataset.epoch = cmd.epoch ?? "";
    this.ui.seq.textContent = `#${cmd.seq}`;
    if (retained) {
      // The character's state when this page joined: show the pose now, play nothing.
      this.ui.latency.textContent = "retained";
      el.dataset.retainedSeqs = `${el.dataset.retainedSeqs} ${cmd.seq}`.trim();
      this.applyPose(cmd);
      return;
    }
    if (!replay && Number.isFinite(cmd.ts)) this.ui.latency.textContent = `${Math.max(0, Date.now() - cmd.ts)} ms`;
    else if (replay) this.ui.latency.textContent = "replay";
    const params = cmd.params && typeof cmd.params === "object" ? cmd.params : {};
    // A command the client delivered at its `at` (synchronized playback) is already
    // at its start: `say` put `start_ms` into `at`.
    const onTime = dueAt !== undefined && Number.isFinite(cmd.at);
    const delay = cmd.name === "talk" || onTime ? 0 : num(params.start_ms, 0, 0, 60000);
    if (delay > 0) setTimeout(() => this.play(cmd), delay);
    else this.play(cmd);
  }

  /**
   * Applies a retained command at once, without animating: a pose command sets where
   * the character stands or the face it keeps; anything else someone retained (a
   * gesture) is a moment already past, so it is only recorded.
   */
  applyPose(cmd) {
    const params = cmd.params && typeof cmd.params === "object" && !Array.isArray(cmd.params) ? cmd.params : {};
    if (cmd.name === "move") this.#moveTo(Math.round(num(params.x, this.pos.x, -150, 150)), Math.round(num(params.y, this.pos.y, -40, 10)), 0);
    else if (cmd.name === "idle") this.#moveTo(0, 0, 0);
    else if (cmd.name === "mood") this.#setMood(params.expression);
  }

  /** Performs one command now. */
  play(cmd) {
    const name = String(cmd.name);
    // When it started, on the wall clock (ms since the Unix epoch): compared across
    // windows by the browser test of synchronized playback.
    this.el.dataset.playedSeq = String(cmd.seq);
    this.el.dataset.playedAt = (performance.timeOrigin + performance.now()).toFixed(1);
    const params = cmd.params && typeof cmd.params === "object" && !Array.isArray(cmd.params) ? cmd.params : {};
    const dur = Number.isInteger(cmd.duration_ms) ? Math.max(0, cmd.duration_ms) : (DEFAULT_MS[name] ?? 1000);
    if (name === "idle") return this.#idle(dur, cmd);
    if (name === "mood") { this.#setMood(params.expression); return; }
    const channel = CHANNEL[name] ?? "fx";
    const run = this.#begin(channel, name, cmd, dur);
    const fn = this[`anim_${name}`];
    try {
      if (typeof fn === "function") fn.call(this, run, params, dur);
      else this.#pulse(run, name, dur);
    } catch (err) {
      // A drawing problem must never break the stream: fall back to the pulse.
      console.warn("animation failed", name, err);
      this.#pulse(run, name, dur);
    }
  }

  // --- channel bookkeeping -------------------------------------------------

  #begin(channel, name, cmd, dur) {
    this.#stop(channel);
    const run = { channel, name, seq: cmd.seq, token: ++this.tokens, timers: [], anims: [], cleanup: [], started: performance.now() };
    this.channels.set(channel, run);
    run.timers.push(setTimeout(() => this.#finish(run), dur));
    this.#publishState();
    return run;
  }

  #finish(run) {
    if (this.channels.get(run.channel) !== run) return;
    this.#stop(run.channel);
    this.#publishState();
  }

  #stop(channel) {
    const run = this.channels.get(channel);
    if (!run) return;
    this.channels.delete(channel);
    for (const t of run.timers) { clearTimeout(t); clearInterval(t); }
    for (const a of run.anims) a.cancel();
    for (const f of run.cleanup) f();
  }

  #publishState() {
    const runs = [...this.channels.values()].sort((a, b) => a.token - b.token);
    const current = runs.length ? runs[runs.length - 1].name : "idle";
    this.el.dataset.animation = current;
    this.el.dataset.active = runs.map((r) => r.name).join(" ");
    if (this.ui) this.ui.anim.textContent = runs.length ? runs.map((r) => r.name).join(" + ") : "idle";
  }

  #idle(dur, cmd) {
    for (const ch of [...this.channels.keys()]) this.#stop(ch);
    this.#moveTo(0, 0, dur);
    this.#restFace();
    this.#begin("body", "idle", cmd, dur);
  }

  /** `mood`: the held expression, shown whenever no gesture holds the face. */
  #setMood(expression) {
    const key = String(expression ?? "neutral").toLowerCase();
    this.mood = MOODS[key] ? key : MOOD_ALIASES[key] ?? "neutral";
    this.el.dataset.mood = this.mood;
    this.#restFace({ keepMouth: this.channels.has("mouth") || this.channels.has("face"), keepBrows: this.channels.has("face") });
  }

  /** Puts the face back to the mood (after a gesture, or when the mood changes). */
  #restFace({ keepMouth = false, keepBrows = false } = {}) {
    const m = MOODS[this.mood] ?? MOODS.neutral;
    if (!keepMouth) this.#setMouth(m.mouth());
    if (!keepBrows) {
      this.#setBrows(m.brows);
      this.puppet.cheeks.style.opacity = m.cheeks;
    }
  }

  #animate(run, el, keyframes, options, origin) {
    const frames = origin ? keyframes.map((k) => ({ ...k, transformOrigin: origin })) : keyframes;
    const a = el.animate(frames, { fill: "none", easing: "ease-in-out", ...options });
    run.anims.push(a);
    return a;
  }

  #every(run, ms, fn) { run.timers.push(setInterval(fn, ms)); }

  #setMouth(d) {
    this.puppet.mouth.setAttribute("d", d);
    this.puppet.mouth.style.d = `path("${d}")`;
  }

  #setBrows(kind) {
    const [l, r] = BROWS[kind];
    for (const [el, d] of [[this.puppet.browL, l], [this.puppet.browR, r]]) {
      el.setAttribute("d", d);
      el.style.d = `path("${d}")`;
    }
  }

  /** Sets a facial expression for the run; restores neutral when it ends. */
  #expression(run, { mouth, brows = "neutral", cheeks = 0.25 }) {
    if (mouth) this.#setMouth(mouth);
    this.#setBrows(brows);
    this.puppet.cheeks.style.opacity = String(cheeks);
    run.cleanup.push(() => {
      this.#restFace({ keepMouth: !mouth || this.channels.has("mouth") });
    });
  }

  #moveTo(x, y, dur) {
    this.pos = { x, y };
    const rig = this.puppet.rig;
    rig.style.transition = `transform ${dur}ms cubic-bezier(.45,.05,.25,1)`;
    rig.style.transform = `translate(${x}px, ${y}px)`;
    this.puppet.shadow.style.transition = rig.style.transition;
    this.puppet.shadow.style.transform = `translateX(${x}px)`;
    this.el.dataset.x = String(x);
    this.el.dataset.y = String(y);
    this.#placeOverlays();
  }

  /** Keeps the bubble and the pulse label next to the character after a move. */
  #placeOverlays() {
    const { x, y } = this.pos;
    const px = ((250 + x + 40) / 480) * 100;
    const py = ((72 + y) / 290) * 100;
    this.stage.style.setProperty("--cx", `${px}%`);
    this.stage.style.setProperty("--cy", `${py}%`);
    this.stage.classList.toggle("bubble-left", px > 72);
  }

  #pulse(run, label, dur) {
    const d = Math.max(dur, 600);
    const ring = this.puppet.ring;
    this.#animate(run, ring, [
      { opacity: 0.65, transform: "scale(0.55)" },
      { opacity: 0, transform: "scale(1.35)" },
    ], { duration: Math.min(900, d), iterations: Math.max(1, Math.round(d / 900)), easing: "ease-out" });
    this.#animate(run, this.puppet.actor, [
      { transform: "scale(1)" }, { transform: "scale(1.04, 0.97)" }, { transform: "scale(1)" },
    ], { duration: 450 });
    const pill = this.ui.pulse;
    pill.textContent = label;
    pill.hidden = false;
    pill.dataset.command = label;
    run.cleanup.push(() => { pill.hidden = true; });
  }

  // --- the animations ------------------------------------------------------

  anim_wave(run, p, dur) {
    const edge = Math.min(0.3, 250 / Math.max(dur, 1)); // raise and lower in about 250 ms
    const swings = Math.max(2, Math.round(num(p.times, (dur * (1 - 2 * edge)) / 280, 1, 40)));
    const frames = [{ transform: "rotate(0deg)", offset: 0 }, { transform: "rotate(-150deg)", offset: edge }];
    for (let i = 1; i <= swings; i++) {
      frames.push({ transform: `rotate(${i % 2 ? -112 : -150}deg)`, offset: edge + ((1 - 2 * edge) * i) / swings });
    }
    frames.push({ transform: "rotate(0deg)", offset: 1 });
    this.#animate(run, this.puppet.armR, frames, { duration: dur });
  }

  anim_jump(run, p, dur) {
    const h = 40 + 60 * clamp01(p.height, 0.6);
    this.#animate(run, this.puppet.actor, [
      { transform: "translateY(0) scale(1, 1)" },
      { transform: "translateY(6px) scale(1.08, 0.9)", offset: 0.15 },
      { transform: `translateY(-${h}px) scale(0.95, 1.06)`, offset: 0.5, easing: "ease-in" },
      { transform: "translateY(4px) scale(1.07, 0.92)", offset: 0.85 },
      { transform: "translateY(0) scale(1, 1)" },
    ], { duration: dur }, FEET);
    this.#animate(run, this.puppet.shadow, [
      { transform: `translateX(${this.pos.x}px) scale(1)`, opacity: 1 },
      { transform: `translateX(${this.pos.x}px) scale(0.6)`, opacity: 0.5, offset: 0.5 },
      { transform: `translateX(${this.pos.x}px) scale(1)`, opacity: 1 },
    ], { duration: dur });
  }

  anim_spin(run, p, dur) {
    const turns = num(p.turns, 1, -5, 5) || 1;
    const dir = p.direction === "left" || p.direction === "ccw" ? -1 : 1;
    this.#animate(run, this.puppet.actor, [
      { transform: "rotate(0deg)" },
      { transform: `rotate(${dir * 360 * turns}deg)` },
    ], { duration: dur, easing: "cubic-bezier(.6,0,.3,1)" });
  }

  anim_bounce(run, p, dur) {
    const h = 12 + 40 * clamp01(p.height, 0.3);
    const n = Math.max(1, Math.round(num(p.times, dur / 330, 1, 20)));
    this.#animate(run, this.puppet.actor, [
      { transform: "translateY(0) scale(1.05, 0.94)" },
      { transform: `translateY(-${h}px) scale(0.97, 1.04)`, easing: "ease-in" },
      { transform: "translateY(0) scale(1.05, 0.94)" },
    ], { duration: dur / n, iterations: n, easing: "ease-out" }, FEET);
  }

  anim_nod(run, p, dur) {
    const n = Math.round(num(p.times, 2, 1, 10));
    this.#animate(run, this.puppet.head, [
      { transform: "translateY(0) rotate(0deg)" },
      { transform: "translateY(7px) rotate(0deg) scale(1, 0.96)" },
      { transform: "translateY(0) rotate(0deg)" },
    ], { duration: dur / n, iterations: n });
  }

  anim_shake_head(run, p, dur) {
    const n = Math.round(num(p.times, 2, 1, 10));
    this.#animate(run, this.puppet.head, [
      { transform: "translateX(0) rotate(0deg)" },
      { transform: "translateX(-9px) rotate(-6deg)", offset: 0.25 },
      { transform: "translateX(9px) rotate(6deg)", offset: 0.75 },
      { transform: "translateX(0) rotate(0deg)" },
    ], { duration: dur / n, iterations: n });
  }

  anim_head_tilt(run, p, dur) {
    const angle = num(p.angle, 15, -45, 45);
    this.#animate(run, this.puppet.head, [
      { transform: "rotate(0deg)" },
      { transform: `rotate(${angle}deg)`, offset: 0.25 },
      { transform: `rotate(${angle}deg)`, offset: 0.75 },
      { transform: "rotate(0deg)" },
    ], { duration: dur });
  }

  anim_bow_head(run, p, dur) {
    const depth = clamp01(p.depth, 0.5);
    this.#animate(run, this.puppet.head, [
      { transform: "translateY(0) scale(1, 1)" },
      { transform: `translateY(${8 + 14 * depth}px) scale(1, ${1 - 0.12 * depth})`, offset: 0.3 },
      { transform: `translateY(${8 + 14 * depth}px) scale(1, ${1 - 0.12 * depth})`, offset: 0.7 },
      { transform: "translateY(0) scale(1, 1)" },
    ], { duration: dur });
    this.#animate(run, this.puppet.eyes, [
      { transform: "scaleY(1)" }, { transform: "scaleY(0.15)", offset: 0.3 },
      { transform: "scaleY(0.15)", offset: 0.7 }, { transform: "scaleY(1)" },
    ], { duration: dur });
  }

  anim_smile(run, p) {
    const i = clamp01(p.intensity, 0.7);
    this.#expression(run, { mouth: MOUTH.smile(i), cheeks: 0.35 + 0.5 * i });
  }

  anim_frown(run, p) {
    const i = clamp01(p.intensity, 0.7);
    this.#expression(run, { mouth: MOUTH.frown(i), brows: "frown", cheeks: 0 });
  }

  anim_surprise(run, p, dur) {
    this.#expression(run, { mouth: MOUTH.surprise(), brows: "up", cheeks: 0.2 });
    this.#animate(run, this.puppet.eyes, [
      { transform: "scale(1)" }, { transform: "scale(1.25)", offset: 0.15 },
      { transform: "scale(1.25)", offset: 0.85 }, { transform: "scale(1)" },
    ], { duration: dur });
    this.#animate(run, this.puppet.actor, [
      { transform: "translateY(0)" }, { transform: "translateY(-14px)", offset: 0.12 },
      { transform: "translateY(0)", offset: 0.3 },
    ], { duration: Math.min(dur, 700) });
  }

  anim_laugh(run, p, dur) {
    const i = clamp01(p.intensity, 0.8);
    this.#expression(run, { mouth: MOUTH.laugh(1), brows: "up", cheeks: 0.5 + 0.5 * i });
    let open = true;
    this.#every(run, 140, () => { open = !open; this.#setMouth(MOUTH.laugh(open ? 1 : 0.3)); });
    this.#animate(run, this.puppet.head, [
      { transform: "rotate(0deg) translateY(0)" }, { transform: "rotate(-4deg) translateY(-3px)" },
      { transform: "rotate(3deg) translateY(0)" }, { transform: "rotate(0deg) translateY(0)" },
    ], { duration: 420, iterations: Math.max(1, Math.round(dur / 420)) });
    this.#animate(run, this.puppet.eyes, [{ transform: "scaleY(0.35)" }, { transform: "scaleY(0.35)" }], { duration: dur });
  }

  anim_wink(run, p, dur) {
    this.#expression(run, { mouth: MOUTH.smile(0.5), cheeks: 0.5 });
    this.#animate(run, this.puppet.eyeR, [
      { transform: "scaleY(1)" }, { transform: "scaleY(0.08)", offset: 0.3 },
      { transform: "scaleY(0.08)", offset: 0.7 }, { transform: "scaleY(1)" },
    ], { duration: Math.max(dur, 200) });
  }

  anim_blink(run, p, dur) {
    const n = Math.round(num(p.times, 1, 1, 10));
    this.#animate(run, this.puppet.eyes, [
      { transform: "scaleY(1)" }, { transform: "scaleY(0.08)" }, { transform: "scaleY(1)" },
    ], { duration: Math.max(dur, 120) / n, iterations: n });
  }

  anim_heart(run, p, dur) {
    this.#expression(run, { mouth: MOUTH.smile(0.6), cheeks: 0.9 });
    this.puppet.hearts.querySelectorAll(".heart path").forEach((h, i) => {
      this.#animate(run, h, [
        { transform: "translateY(20px) scale(0.3)", opacity: 0 },
        { transform: "translateY(0) scale(1)", opacity: 1, offset: 0.3 },
        { transform: "translateY(-34px) scale(1.1)", opacity: 0 },
      ], { duration: dur, delay: i * Math.min(160, dur / 6), easing: "ease-out" });
    });
  }

  anim_talk(run, p, dur) {
    const text = typeof p.text === "string" && p.text.trim() ? p.text.trim() : "…";
    const bubble = this.ui.bubble;
    bubble.textContent = text.length > 280 ? `${text.slice(0, 279)}…` : text;
    bubble.hidden = false;
    let open = 0;
    this.#every(run, 110, () => {
      open = (open + 1) % 4;
      this.#setMouth(open % 2 ? MOUTH.open(open === 1 ? 0.9 : 0.5) : MOUTH.open(0.1));
    });
    run.cleanup.push(() => {
      bubble.hidden = true;
      if (!this.channels.has("face")) this.#setMouth((MOODS[this.mood] ?? MOODS.neutral).mouth());
    });
  }

  anim_move(run, p, dur) {
    const x = num(p.x, this.pos.x, -150, 150);
    const y = num(p.y, this.pos.y, -40, 10);
    this.#moveTo(Math.round(x), Math.round(y), dur);
    // A little walk cycle while moving.
    if (dur >= 200) {
      this.#animate(run, this.puppet.actor, [
        { transform: "translateY(0) rotate(0deg)" }, { transform: "translateY(-6px) rotate(-3deg)" },
        { transform: "translateY(0) rotate(0deg)" }, { transform: "translateY(-6px) rotate(3deg)" },
        { transform: "translateY(0) rotate(0deg)" },
      ], { duration: 360, iterations: Math.max(1, Math.round(dur / 360)) });
    }
  }

  destroy() {
    for (const ch of [...this.channels.keys()]) this.#stop(ch);
    this.el.remove();
  }
}
