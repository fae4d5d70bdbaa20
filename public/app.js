// The gateway's browser page: a viewer (characters performing live commands), a
// publisher panel and an admin view. Its state lives in the URL, so it can be linked:
//
//   /?characters=alice,bob&topics=face,body.*        watch alice and bob, those filters
//   /?characters=alice&sync=1                         synchronized playback on server time
//   /?view=admin                                      the admin view
//
// It uses /client.mjs for subscribing (reconnect, lossless resume) and publishing.
// With synchronized playback on, every window plays a command at the same moment: the
// page estimates the server's clock (one ServerClock for all its subscriptions), plays
// each command at its `at` (or `ts` + PLAYOUT_DELAY_MS), and what it publishes carries
// `at` = server time + PUBLISH_LEAD_MS (`lead_ms` for say).
//
// Viewers join into the current pose: the pose commands (`move`, `idle`, `mood`; see
// character.js) are published with `retain: true`, on topics of their own, so the
// gateway sends them to every viewer that connects later, right after `welcome`, and
// the page applies them at once (`meta.retained`) instead of playing them.

import { subscribe, publish, ServerClock } from "./client.mjs";
import { CharacterView, KNOWN_COMMANDS, POSE_COMMANDS, MOOD_NAMES, colorFor } from "./character.js";
import { AdminView } from "./admin.js";
import { api, enc, credentials, bindCredentialInputs } from "./api.js";

const NAME_RE = /^[A-Za-z0-9_-]{1,64}$/;
const FILTER_RE = /^(?:(?:[a-z0-9_-]{1,32}|\*)\.){0,3}(?:[a-z0-9_-]{1,32}|\*|>)$/;
const LOG_LIMIT = 300;
/** Synchronized playback: commands without `at` play this long after their `ts`. */
const PLAYOUT_DELAY_MS = 300;
/** Synchronized playback: what this page publishes is due this long from now. */
const PUBLISH_LEAD_MS = 600;

/** Buttons of the publisher panel: name, default topic, params, duration. */
const QUICK = [
  ["wave", "body", { style: "hello" }, 1200],
  ["jump", "body", { height: 0.6 }, 700],
  ["spin", "body", {}, 900],
  ["bounce", "body", { height: 0.3 }, 1000],
  ["nod", "head", { times: 2 }, 700],
  ["shake_head", "head", { times: 2 }, 800],
  ["head_tilt", "head", { angle: 15 }, 1000],
  ["bow_head", "head", { depth: 0.5 }, 1000],
  ["smile", "face", { intensity: 0.8 }, 1500],
  ["frown", "face", { intensity: 0.8 }, 1500],
  ["laugh", "face", { intensity: 0.8 }, 1500],
  ["surprise", "face", { intensity: 0.8 }, 1000],
  ["wink", "face", {}, 400],
  ["blink", "face", {}, 220],
  ["heart", "face", { intensity: 1 }, 1500],
  ["talk", "mouth", { text: "Hi there! Nice to see you." }, 2000],
  ["move", "pose", null, 700],
  ["idle", "pose", {}, 400],
  ["mood", "mood", null, null],
];

const $ = (sel, root = document) => root.querySelector(sel);

// --- URL state ---------------------------------------------------------------

function readUrl() {
  const q = new URLSearchParams(location.search);
  const view = q.get("view") === "admin" ? "admin" : "viewer";
  const raw = q.has("characters") ? q.get("characters") : q.get("character");
  const characters = raw === null ? (view === "admin" ? [] : ["alice"]) : splitList(raw).filter((c) => NAME_RE.test(c));
  const topics = splitList(q.get("topics") ?? "").filter((t) => FILTER_RE.test(t));
  const sync = q.get("sync") === "1";
  return { view, characters: [...new Set(characters)], topics: [...new Set(topics)], sync };
}

function splitList(s) { return s.split(",").map((x) => x.trim()).filter(Boolean); }

function urlFor({ view, characters, topics, sync }) {
  const q = new URLSearchParams();
  if (view === "admin") q.set("view", "admin");
  q.set("characters", characters.join(","));
  if (topics.length) q.set("topics", topics.join(","));
  if (sync) q.set("sync", "1");
  // Keep `,`, `*` and `>` readable in the address bar.
  return `/?${q.toString().replace(/%2C/g, ",").replace(/%2A/g, "*").replace(/%3E/g, ">")}`;
}

const state = { ...readUrl() };

function pushUrl(replace = false) {
  const url = urlFor(state);
  if (url === location.pathname + location.search) return;
  history[replace ? "replaceState" : "pushState"](null, "", url);
}

// --- toasts --------------------------------------------------------------------

function toast(message, kind = "info") {
  const box = $("#toasts");
  const el = document.createElement("div");
  el.className = `toast ${kind}`;
  el.setAttribute("role", kind === "error" ? "alert" : "status");
  el.textContent = message;
  box.append(el);
  setTimeout(() => el.classList.add("out"), 3200);
  setTimeout(() => el.remove(), 3600);
}

// --- live log --------------------------------------------------------------------

const log = {
  el: null, count: 0, paused: false, filter: "",
  add(row) {
    this.count += 1;
    $("#log-count").textContent = String(this.count);
    if (this.paused) return;
    this.el.prepend(row);
    while (this.el.childElementCount > LOG_LIMIT) this.el.lastElementChild.remove();
    $("#log-empty").hidden = true;
    this.applyFilter(row);
  },
  applyFilter(row) { row.hidden = !!this.filter && row.dataset.character !== this.filter; },
};

function time(ts = Date.now()) {
  const d = new Date(ts);
  return `${d.toLocaleTimeString([], { hour12: false })}.${String(d.getMilliseconds()).padStart(3, "0")}`;
}

function logCommand(cmd, { replay, late, retained }) {
  const li = document.createElement("li");
  li.className = "log-row cmd";
  li.dataset.character = cmd.character;
  li.dataset.seq = String(cmd.seq);
  li.dataset.topic = cmd.topic;
  li.dataset.name = cmd.name;
  if (retained) li.dataset.retained = "true";
  const latency = retained ? "retained" : replay ? "replay" : Number.isFinite(cmd.ts) ? `${Math.max(0, Date.now() - cmd.ts)} ms` : "–";
  const known = KNOWN_COMMANDS.includes(cmd.name);
  li.style.setProperty("--char", colorFor(cmd.character));
  li.innerHTML = `<span class="t mono"></span><span class="who"><i></i><span></span></span><span class="seq mono"></span>
    <span class="topic"><code></code></span><span class="name"><b></b><span class="params mono"></span></span><span class="lat mono"></span>`;
  li.querySelector(".t").textContent = time();
  li.querySelector(".who span").textContent = cmd.character;
  li.querySelector(".seq").textContent = `#${cmd.seq}`;
  li.querySelector(".topic code").textContent = cmd.topic;
  li.querySelector(".name b").textContent = cmd.name;
  if (!known) li.querySelector(".name b").classList.add("unknown");
  const params = cmd.params && Object.keys(cmd.params).length ? JSON.stringify(cmd.params) : "";
  const dur = Number.isInteger(cmd.duration_ms) ? `${cmd.duration_ms} ms` : "";
  li.querySelector(".params").textContent = [params, dur].filter(Boolean).join(" · ");
  li.querySelector(".params").title = params;
  const lat = li.querySelector(".lat");
  lat.textContent = latency;
  lat.title = "Time from the gateway's timestamp to arrival in this page";
  if (replay || retained) lat.classList.add("replay");
  if (retained) lat.title = "Retained: the character's state when this page connected, applied at once";
  if (late) { li.dataset.late = "true"; lat.title += " (played late: past its due time on arrival)"; }
  log.add(li);
}

function logEvent(character, kind, text) {
  const li = document.createElement("li");
  li.className = `log-row event ${kind}`;
  li.dataset.character = character;
  li.dataset.event = kind;
  li.style.setProperty("--char", colorFor(character));
  li.innerHTML = `<span class="t mono"></span><span class="who"><i></i><span></span></span><span class="msg"></span>`;
  li.querySelector(".t").textContent = time();
  li.querySelector(".who span").textContent = character;
  li.querySelector(".msg").textContent = text;
  log.add(li);
}

// --- viewer ----------------------------------------------------------------------

const watched = new Map(); // character -> {view, sub}

/** The page's estimate of the server's clock, shared by its subscriptions (sync only). */
let clock = null;
function serverClock() {
  if (!clock) {
    clock = new ServerClock({ onSync: showClock, onError: (err) => console.warn("time sync", err) });
  }
  return clock;
}

function showClock() {
  const el = $("[data-role=sync-status]");
  if (!state.sync || !clock?.synced) { el.textContent = state.sync ? "Syncing with the server's clock…" : "Every window plays on server time"; return; }
  const off = Math.round(clock.offset);
  el.textContent = `Server clock ${off >= 0 ? "+" : "−"}${Math.abs(off)} ms · rtt ${clock.rtt} ms`;
  document.body.dataset.clockOffset = String(off);
}

function connect(name) {
  const entry = watched.get(name);
  entry.sub?.close();
  const view = entry.view;
  let lastState = null;
  entry.sub = subscribe(name, {
    topics: state.topics,
    sync: state.sync ? { clock: serverClock(), playoutDelayMs: PLAYOUT_DELAY_MS } : false,
    token: () => credentials.token || undefined,
    onState: (s, detail) => {
      if (entry.sub && watched.get(name) !== entry) return;
      view.setConnection(s, detail);
      if (s === "open") {
        logEvent(name, "open", `Connected · client ${shortId(detail.clientId)} · seq ${detail.seq ?? 0}`);
      } else if (s === "reconnecting" && lastState !== "reconnecting") {
        logEvent(name, "warn", `Connection lost${detail.code ? ` (${detail.code})` : ""}; reconnecting and resuming`);
      } else if (s === "closed" && !detail.byClient) {
        logEvent(name, "error", detail.code === 4010 ? "Disconnected by an admin (4010)" : `Closed (${detail.code ?? "?"}) ${detail.reason ?? ""}`);
      }
      lastState = s;
      updateSummary();
    },
    onCommand: (cmd, meta) => {
      view.receive(cmd, meta);
      logCommand(cmd, meta);
    },
    onGap: (gap) => {
      view.showGap(gap);
      const text = gap.reason === "epoch"
        ? `History reset: seqs restarted under a new epoch (now at ${gap.seq})`
        : `Resume gap: commands after #${gap.since ?? 0} up to #${gap.seq} may be missing`;
      logEvent(name, "gap", text);
    },
    onRecovered: (r) => {
      if (r.complete) logEvent(name, "info", `Resumed from #${r.since} with nothing missed`);
    },
  });
}

function setCharacters(names) {
  for (const [name, entry] of watched) {
    if (!names.includes(name)) { entry.sub?.close(); entry.view.destroy(); watched.delete(name); }
  }
  const box = $("#stages");
  for (const name of names) {
    if (watched.has(name)) continue;
    const view = new CharacterView(name, {
      onRemove: (n) => { state.characters = state.characters.filter((c) => c !== n); applyState(); pushUrl(); },
      onReconnect: (n) => connect(n),
    });
    watched.set(name, { view, sub: null });
    connect(name);
  }
  for (const name of names) box.append(watched.get(name).view.el); // keep URL order
  $("#stages-empty").hidden = names.length > 0;
  document.body.dataset.characters = names.join(",");
}

function reconnectAll() { for (const name of watched.keys()) connect(name); }

function updateSummary() {
  const el = $("#conn-summary");
  const all = [...watched.values()];
  const live = all.filter((e) => e.view.el.dataset.state === "open").length;
  el.querySelector(".text").textContent = all.length ? `${live}/${all.length} live` : "Not watching";
  el.dataset.state = !all.length ? "idle" : live === all.length ? "open" : live ? "partial" : "down";
}

// --- characters & topics form ------------------------------------------------

function renderChips() {
  const box = $("#character-chips");
  box.replaceChildren(...state.characters.map((name) => {
    const chip = document.createElement("span");
    chip.className = "chip";
    chip.dataset.character = name;
    chip.style.setProperty("--char", colorFor(name));
    chip.innerHTML = `<i></i><span></span><button type="button" aria-label="Remove">×</button>`;
    chip.querySelector("span").textContent = name;
    chip.querySelector("button").setAttribute("aria-label", `Stop watching ${name}`);
    chip.querySelector("button").addEventListener("click", () => {
      state.characters = state.characters.filter((c) => c !== name);
      applyState(); pushUrl();
    });
    return chip;
  }));
  $("#topics-input").value = state.topics.join(", ");
  const targets = $("#pub-targets");
  targets.replaceChildren(...state.characters.map((c) => Object.assign(document.createElement("option"), { value: c })));
  const pc = $("#pub-character");
  if (!pc.value || (!state.characters.includes(pc.value) && pc.dataset.auto !== "false")) {
    pc.value = state.characters[0] ?? "";
    pc.dataset.auto = "true";
  }
}

function addCharactersFromInput() {
  const input = $("#character-input");
  const names = splitList(input.value.replace(/\s+/g, ","));
  const bad = names.filter((n) => !NAME_RE.test(n));
  if (bad.length) {
    input.setCustomValidity("Names use letters, digits, _ and - (up to 64)");
    input.reportValidity();
    return false;
  }
  input.setCustomValidity("");
  input.value = "";
  const before = state.characters.length;
  state.characters = [...new Set([...state.characters, ...names])];
  return state.characters.length !== before;
}

function readTopics() {
  const input = $("#topics-input");
  const topics = [...new Set(splitList(input.value.replace(/\s+/g, ",")))];
  const bad = topics.filter((t) => !FILTER_RE.test(t));
  if (bad.length || topics.length > 32) {
    input.setCustomValidity(bad.length ? `Not a topic filter: ${bad[0]}` : "At most 32 filters");
    input.reportValidity();
    return null;
  }
  input.setCustomValidity("");
  return topics;
}

let appliedTopics = null;
function applyState() {
  document.body.dataset.view = state.view;
  $("#viewer-view").hidden = state.view !== "viewer";
  $("#admin-view").hidden = state.view !== "admin";
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.setAttribute("aria-current", a.dataset.nav === state.view ? "page" : "false");
    a.href = urlFor({ ...state, view: a.dataset.nav });
  }
  const topicsKey = `${state.topics.join(",")}|${state.sync}`;
  $("#sync-input").checked = state.sync;
  document.body.dataset.sync = String(state.sync);
  if (state.sync) serverClock();
  showClock();
  if (appliedTopics !== null && appliedTopics !== topicsKey) {
    appliedTopics = topicsKey;
    setCharacters(state.characters);
    reconnectAll();
  } else {
    appliedTopics = topicsKey;
    setCharacters(state.characters);
  }
  $("#topics-current").textContent = state.topics.length ? state.topics.join(", ") : "> (everything)";
  renderChips();
  updateSummary();
  if (state.view === "admin") admin.start(); else admin.stop();
  document.title = state.view === "admin" ? "Admin · Animation Gateway" : "Animation Gateway";
}

// --- publisher ---------------------------------------------------------------------

function pubTarget() {
  const input = $("#pub-character");
  const name = input.value.trim();
  if (!NAME_RE.test(name)) {
    input.setCustomValidity("Pick a character name (letters, digits, _ and -)");
    input.reportValidity();
    return null;
  }
  input.setCustomValidity("");
  return name;
}

function showResult(kind, text) {
  const el = $("#pub-result");
  el.dataset.kind = kind;
  el.textContent = text;
}

/** With synchronized playback on, what this page publishes is due PUBLISH_LEAD_MS from now. */
function scheduled(commands) {
  if (!state.sync || !clock?.synced) return commands;
  const at = Math.round(clock.serverNow()) + PUBLISH_LEAD_MS;
  return commands.map((c) => (c.at == null ? { ...c, at } : c));
}

async function sendCommands(commands, label) {
  const character = pubTarget();
  if (!character) return;
  commands = scheduled(commands);
  try {
    const res = await publish(null, character, commands.length === 1 ? commands[0] : commands, {
      token: credentials.token || undefined, apiKey: credentials.apiKey || undefined,
    });
    const seqs = res.seqs ?? [];
    showResult("ok", `${label} → ${character} · seq ${seqs.join(", ")} · delivered to ${res.delivered} socket${res.delivered === 1 ? "" : "s"}`);
  } catch (err) {
    showResult("error", `${label} failed: ${err.body?.error?.message ?? err.message}`);
  }
}

/** The `mood` button steps through the expressions from the target character's current one. */
function nextMood() {
  const view = watched.get($("#pub-character").value.trim())?.view;
  const i = MOOD_NAMES.indexOf(view?.mood ?? "neutral");
  return MOOD_NAMES[(i + 1) % MOOD_NAMES.length];
}

function buildQuickButtons() {
  const grid = $("#quick-grid");
  for (const [name, topic, params, dur] of QUICK) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "cmd-btn";
    b.dataset.cmd = name;
    b.dataset.group = topic;
    b.innerHTML = `<i aria-hidden="true"></i><span></span>`;
    b.querySelector("span").textContent = name.replace("_", " ");
    b.title = `${name} on topic ${topic}`;
    b.addEventListener("click", () => {
      const durInput = $("#pub-duration").value.trim();
      const cmd = {
        topic: $("#pub-topic").value.trim() || topic,
        name,
        params: name === "move"
          ? { x: Math.round((Math.random() * 2 - 1) * 150), y: Math.round(-Math.random() * 30) }
          : name === "mood" ? { expression: nextMood() }
          : name === "talk" ? { text: $("#say-text").value.trim() || params.text } : params,
        duration_ms: durInput ? Number(durInput) : dur,
      };
      // A pose lasts: retained, so viewers that join later start in it.
      if (POSE_COMMANDS.includes(name)) cmd.retain = true;
      if (name === "talk") cmd.duration_ms = durInput ? Number(durInput) : Math.min(10000, Math.max(1200, cmd.params.text.length * 60));
      sendCommands([cmd], name);
    });
    grid.append(b);
  }
}


function setupJsonEditor() {
  const ta = $("#json-editor");
  const status = $("#json-status");
  const check = () => {
    try {
      const v = JSON.parse(ta.value);
      const list = Array.isArray(v) ? v : v && Array.isArray(v.commands) ? v.commands : [v];
      if (!list.length || list.some((c) => !c || typeof c !== "object" || typeof c.name !== "string")) throw new Error("each command needs a string \"name\"");
      status.textContent = list.length === 1 ? `✓ ${list[0].name}` : `✓ ${list.length} commands`;
      status.dataset.kind = "ok";
      return list;
    } catch (err) {
      status.textContent = err.message.replace(/^JSON\.parse: /, "");
      status.dataset.kind = "error";
      return null;
    }
  };
  ta.addEventListener("input", check);
  ta.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); $("#json-form").requestSubmit(); }
    if (e.key === "Tab" && !e.shiftKey) { e.preventDefault(); document.execCommand("insertText", false, "  "); }
  });
  $("#json-format").addEventListener("click", () => {
    const list = check();
    if (list) { ta.value = JSON.stringify(list.length === 1 ? list[0] : list, null, 2); check(); }
  });
  $("#json-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const list = check();
    if (!list) { showResult("error", "Fix the JSON first"); return; }
    sendCommands(list, list.length === 1 ? list[0].name : `${list.length} commands`);
  });
  check();
}

function setupSay() {
  $("#say-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const character = pubTarget();
    const text = $("#say-text").value.trim();
    if (!character || !text) return;
    try {
      const body = state.sync ? { text, lead_ms: PUBLISH_LEAD_MS } : { text };
      const res = await api("POST", `/v1/characters/${enc(character)}/say`, body);
      const names = (res.commands ?? []).map((c) => c.name);
      showResult("ok", `say → ${character} · ${names.join(", ")} · seq ${(res.seqs ?? []).join(", ")}`);
    } catch (err) {
      showResult("error", `say failed: ${err.body?.error?.message ?? err.message}`);
    }
  });
}

function shortId(id) { return id && id.length > 12 ? `${id.slice(0, 8)}…` : (id ?? "?"); }

// --- boot --------------------------------------------------------------------------

const admin = new AdminView($("#admin-view"), {
  watchUrl: (c) => urlFor({ view: "viewer", characters: [c], topics: [] }),
  toast,
});

function boot() {
  log.el = $("#log");
  bindCredentialInputs();
  buildQuickButtons();
  setupJsonEditor();
  setupSay();

  $("#watch-form").addEventListener("submit", (e) => {
    e.preventDefault();
    if ($("#character-input").value.trim() && !addCharactersFromInput()) { /* duplicates are fine */ }
    const topics = readTopics();
    if (!topics) return;
    state.topics = topics;
    applyState(); pushUrl();
  });
  $("#sync-input").addEventListener("change", (e) => {
    state.sync = e.target.checked;
    applyState(); pushUrl();
  });
  $("#character-input").addEventListener("keydown", (e) => {
    if ((e.key === "," || e.key === " ") && e.target.value.trim()) {
      e.preventDefault();
      if (addCharactersFromInput()) { applyState(); pushUrl(); }
    } else if (e.key === "Backspace" && !e.target.value && state.characters.length) {
      state.characters = state.characters.slice(0, -1);
      applyState(); pushUrl();
    }
  });
  for (const b of document.querySelectorAll("[data-add]")) {
    b.addEventListener("click", () => {
      state.characters = [...new Set([...state.characters, ...splitList(b.dataset.add)])];
      applyState(); pushUrl();
    });
  }
  $("#pub-character").addEventListener("input", (e) => { e.target.dataset.auto = "false"; });
  $("#log-pause").addEventListener("click", (e) => {
    log.paused = !log.paused;
    e.currentTarget.textContent = log.paused ? "Resume" : "Pause";
    e.currentTarget.setAttribute("aria-pressed", String(log.paused));
  });
  $("#log-clear").addEventListener("click", () => { log.el.replaceChildren(); $("#log-empty").hidden = false; });
  $("#log-filter").addEventListener("change", (e) => {
    log.filter = e.target.value;
    for (const row of log.el.children) log.applyFilter(row);
  });
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.addEventListener("click", (e) => {
      if (e.metaKey || e.ctrlKey || e.shiftKey) return;
      e.preventDefault();
      state.view = a.dataset.nav;
      applyState(); pushUrl();
    });
  }
  window.addEventListener("popstate", () => { Object.assign(state, readUrl()); applyState(); });
  let credTimer = null;
  credentials.onChange((key) => {
    if (key !== "token") return;
    clearTimeout(credTimer);
    credTimer = setTimeout(reconnectAll, 800); // resubscribe with the new token
  });
  const filterSync = new MutationObserver(() => {
    const sel = $("#log-filter");
    const cur = sel.value;
    sel.replaceChildren(new Option("All characters", ""), ...state.characters.map((c) => new Option(c, c)));
    sel.value = state.characters.includes(cur) ? cur : "";
    log.filter = sel.value;
  });
  filterSync.observe($("#character-chips"), { childList: true });

  applyState();
  pushUrl(true);
  document.body.dataset.ready = "true";
  // For people poking around in the console.
  window.gateway = { state, watched, subscribe, publish, get clock() { return clock; } };
}

boot();
