// The admin view: every character with subscribers, their topic filters and clients,
// polled about once a second, with a button to disconnect a client (close code 4010).
//
// DOM for tests: `.admin-char[data-character][data-subscribers]` per character and
// `.admin-client[data-client-id][data-character]` per connected client.

import { api, enc, ApiError } from "./api.js";
import { colorFor } from "./character.js";

const POLL_MS = 1000;
const MAX_DETAILED = 24; // characters whose clients are fetched on every poll

export class AdminView {
  /** @param {HTMLElement} root  @param {{watchUrl: (c: string) => string, toast: (msg: string, kind?: string) => void}} hooks */
  constructor(root, hooks) {
    this.root = root;
    this.hooks = hooks;
    this.list = root.querySelector("#admin-list");
    this.banner = root.querySelector("#admin-error");
    this.stats = {
      characters: root.querySelector("[data-stat=characters]"),
      subscribers: root.querySelector("[data-stat=subscribers]"),
      updated: root.querySelector("[data-stat=updated]"),
    };
    this.toggle = root.querySelector("#admin-pause");
    this.running = false;
    this.paused = false;
    this.timer = null;
    this.lastOk = 0;
    this.rows = new Map(); // character -> element
    this.toggle.addEventListener("click", () => {
      this.paused = !this.paused;
      this.toggle.textContent = this.paused ? "Resume" : "Pause";
      this.toggle.setAttribute("aria-pressed", String(this.paused));
      this.root.dataset.paused = String(this.paused);
      if (!this.paused) this.#tick();
    });
    setInterval(() => this.#updateAge(), 250);
    document.addEventListener("visibilitychange", () => { if (!document.hidden && this.running) this.#tick(); });
  }

  start() {
    if (this.running) return;
    this.running = true;
    this.#tick();
  }

  stop() {
    this.running = false;
    clearTimeout(this.timer);
  }

  async #tick() {
    clearTimeout(this.timer);
    if (!this.running || this.paused) return;
    const started = performance.now();
    try {
      const summary = await api("GET", "/v1/admin/subscriptions");
      const chars = (summary.characters ?? []).slice().sort((a, b) => a.character.localeCompare(b.character));
      const details = await Promise.all(chars.slice(0, MAX_DETAILED).map((c) =>
        api("GET", `/v1/admin/characters/${enc(c.character)}/subscriptions`).catch((err) => ({ error: err }))));
      if (!this.running) return;
      this.#render(chars, details, summary.total_subscribers ?? 0);
      this.lastOk = Date.now();
      this.#showError(null);
    } catch (err) {
      this.#showError(err);
    }
    if (this.running && !this.paused && !document.hidden) {
      this.timer = setTimeout(() => this.#tick(), Math.max(200, POLL_MS - (performance.now() - started)));
    }
  }

  #showError(err) {
    const b = this.banner;
    if (!err) { b.hidden = true; this.root.dataset.error = ""; return; }
    b.hidden = false;
    this.root.dataset.error = String(err.status ?? "network");
    const auth = err instanceof ApiError && (err.status === 401 || err.status === 403);
    if (auth && !this.credsShown) { this.credsShown = true; this.root.querySelector("details.creds").open = true; }
    b.textContent = auth
      ? `The gateway refused the admin listing (${err.status}). Add an admin token or an API key under Credentials.`
      : `Could not load subscriptions: ${err.message ?? err}. Retrying…`;
  }

  #updateAge() {
    if (!this.lastOk) return;
    const s = (Date.now() - this.lastOk) / 1000;
    this.stats.updated.textContent = this.paused ? "paused" : s < 2 ? "just now" : `${Math.round(s)} s ago`;
    this.root.dataset.stale = String(s > 5);
  }

  #render(chars, details, total) {
    this.stats.characters.textContent = String(chars.length);
    this.stats.subscribers.textContent = String(total);
    this.root.dataset.characters = String(chars.length);
    const seen = new Set();
    let prev = null;
    chars.forEach((c, i) => {
      seen.add(c.character);
      let row = this.rows.get(c.character);
      if (!row) { row = this.#buildRow(c.character); this.rows.set(c.character, row); }
      this.#fillRow(row, c, details[i]);
      const want = prev ? prev.nextSibling : this.list.firstChild;
      if (want !== row) this.list.insertBefore(row, want);
      prev = row;
    });
    for (const [name, row] of this.rows) if (!seen.has(name)) { row.remove(); this.rows.delete(name); }
    this.root.querySelector("#admin-empty").hidden = chars.length > 0;
  }

  #buildRow(character) {
    const row = document.createElement("article");
    row.className = "admin-char card";
    row.dataset.character = character;
    row.style.setProperty("--char", colorFor(character));
    row.innerHTML = `
      <header class="admin-char-head">
        <span class="avatar" aria-hidden="true"></span>
        <div class="admin-char-title"><h3></h3><span class="muted small" data-role="seq"></span></div>
        <div class="admin-count"><b data-role="count">0</b><span>subscribers</span></div>
        <a class="btn small ghost" data-role="watch">Watch</a>
      </header>
      <div class="topic-chips" data-role="topics"></div>
      <div class="client-table" role="table" aria-label="Connected clients">
        <div class="client-row head" role="row">
          <span role="columnheader">Client</span><span role="columnheader">User</span>
          <span role="columnheader">Topics</span><span role="columnheader">Connected</span><span role="columnheader"></span>
        </div>
        <div data-role="clients"></div>
      </div>`;
    row.querySelector("h3").textContent = character;
    row.querySelector(".avatar").textContent = character.slice(0, 1).toUpperCase();
    row.querySelector("[data-role=watch]").href = this.hooks.watchUrl(character);
    return row;
  }

  #fillRow(row, c, detail) {
    row.dataset.subscribers = String(c.subscribers);
    row.querySelector("[data-role=count]").textContent = String(c.subscribers);
    row.querySelector("[data-role=count]").nextElementSibling.textContent = c.subscribers === 1 ? "subscriber" : "subscribers";
    const chips = row.querySelector("[data-role=topics]");
    const topics = Object.entries(c.topics ?? {}).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
    const chipKey = JSON.stringify(topics);
    if (chips.dataset.key !== chipKey) {
      chips.dataset.key = chipKey;
      chips.replaceChildren(...topics.map(([filter, n]) => {
        const chip = document.createElement("span");
        chip.className = "topic-chip";
        chip.dataset.topic = filter;
        chip.innerHTML = `<code></code><span class="n"></span>`;
        chip.querySelector("code").textContent = filter;
        chip.querySelector(".n").textContent = String(n);
        chip.title = `${n} subscriber${n === 1 ? "" : "s"} with filter ${filter}`;
        return chip;
      }));
    }
    const seq = row.querySelector("[data-role=seq]");
    const box = row.querySelector("[data-role=clients]");
    if (!detail) { seq.textContent = ""; box.replaceChildren(note("Client list not loaded (too many characters).")); return; }
    if (detail.error) { box.replaceChildren(note(`Could not load clients: ${detail.error.message}`)); return; }
    seq.textContent = `seq ${detail.seq ?? 0}`;
    const subs = (detail.subscribers ?? []).slice().sort((a, b) => (a.connected_at ?? 0) - (b.connected_at ?? 0));
    const existing = new Map([...box.querySelectorAll(".admin-client")].map((el) => [el.dataset.clientId, el]));
    const keep = new Set();
    let prev = null;
    for (const s of subs) {
      keep.add(s.client_id);
      let el = existing.get(s.client_id);
      if (!el) el = this.#buildClient(row.dataset.character, s);
      el.querySelector("[data-role=age]").textContent = age(s.connected_at);
      const want = prev ? prev.nextSibling : box.firstChild;
      if (want !== el) box.insertBefore(el, want);
      prev = el;
    }
    for (const [id, el] of existing) if (!keep.has(id)) el.remove();
    for (const n of box.querySelectorAll(".note")) n.remove();
    if (!subs.length) box.append(note("No clients right now."));
  }

  #buildClient(character, s) {
    const el = document.createElement("div");
    el.className = "client-row admin-client";
    el.setAttribute("role", "row");
    el.dataset.clientId = s.client_id;
    el.dataset.character = character;
    el.innerHTML = `
      <span role="cell" class="mono client-id"></span>
      <span role="cell" class="user"></span>
      <span role="cell" class="topics"></span>
      <span role="cell" class="age" data-role="age"></span>
      <span role="cell" class="actions"><button type="button" class="btn small danger" data-role="kick">Disconnect</button></span>`;
    const id = el.querySelector(".client-id");
    id.textContent = s.client_id;
    id.title = s.client_id;
    el.querySelector(".user").textContent = s.user ?? "anonymous";
    el.querySelector(".topics").textContent = (s.topics ?? []).join(", ") || "(none)";
    if (s.presence) el.querySelector(".topics").append(Object.assign(document.createElement("span"), { className: "tag", textContent: "presence" }));
    const btn = el.querySelector("[data-role=kick]");
    btn.addEventListener("click", async () => {
      btn.disabled = true;
      btn.textContent = "Disconnecting…";
      try {
        await api("DELETE", `/v1/admin/characters/${enc(character)}/subscriptions/${enc(s.client_id)}`);
        el.classList.add("leaving");
        this.hooks.toast(`Disconnected ${shortId(s.client_id)} from ${character}`);
        this.#tick();
      } catch (err) {
        btn.disabled = false;
        btn.textContent = "Disconnect";
        this.hooks.toast(`Disconnect failed: ${err.message}`, "error");
      }
    });
    return el;
  }
}

function note(text) {
  const el = document.createElement("p");
  el.className = "note muted small";
  el.textContent = text;
  return el;
}

function shortId(id) { return id.length > 12 ? `${id.slice(0, 8)}…` : id; }

function age(ms) {
  if (!Number.isFinite(ms)) return "–";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${s % 60}s`;
  const h = Math.floor(m / 60);
  return `${h}h ${m % 60}m`;
}
