// Credentials and HTTP calls to the gateway (same origin as the page).
//
// The token (a JWT) and the API key are kept in localStorage so they survive reloads;
// they never go into the page URL. Every input marked `data-cred="token"` or
// `data-cred="apiKey"` on the page edits the same value.

const STORE = { token: "gateway.token", apiKey: "gateway.apiKey" };
const listeners = new Set();

function read(key) {
  try { return localStorage.getItem(STORE[key]) ?? ""; } catch { return ""; }
}

export const credentials = {
  get token() { return read("token").trim(); },
  get apiKey() { return read("apiKey").trim(); },
  set(key, value) {
    try { value ? localStorage.setItem(STORE[key], value) : localStorage.removeItem(STORE[key]); } catch { /* private mode */ }
    for (const fn of listeners) fn(key);
  },
  onChange(fn) { listeners.add(fn); },
};

/** Wires every `[data-cred]` input to the shared credentials. */
export function bindCredentialInputs(root = document) {
  const inputs = [...root.querySelectorAll("[data-cred]")];
  const sync = () => { for (const i of inputs) if (document.activeElement !== i) i.value = credentials[i.dataset.cred]; };
  for (const input of inputs) {
    input.value = credentials[input.dataset.cred];
    input.addEventListener("input", () => credentials.set(input.dataset.cred, input.value.trim()));
  }
  credentials.onChange(sync);
  const badge = () => {
    const mode = credentials.token && credentials.apiKey ? "token + API key"
      : credentials.token ? "token" : credentials.apiKey ? "API key" : "none";
    for (const el of root.querySelectorAll("[data-cred-status]")) {
      el.textContent = mode === "none" ? "Auth off" : `Using ${mode}`;
      el.dataset.mode = mode === "none" ? "none" : "set";
    }
  };
  credentials.onChange(badge);
  badge();
}

/** Headers for publish and admin calls: Bearer token and/or API key. */
export function authHeaders() {
  const h = {};
  if (credentials.token) h.authorization = `Bearer ${credentials.token}`;
  if (credentials.apiKey) h["X-API-Key"] = credentials.apiKey;
  return h;
}

/** An HTTP error carrying the contract's error body. */
export class ApiError extends Error {
  constructor(status, body) {
    const code = body?.error?.code ?? "";
    const message = body?.error?.message ?? (typeof body === "string" ? body : "");
    super(`${status}${code ? ` ${code}` : ""}${message ? `: ${message}` : ""}`);
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

/** JSON request to the gateway; rejects with ApiError on a non-2xx answer. */
export async function api(method, path, body, { signal } = {}) {
  const headers = { ...authHeaders() };
  const init = { method, headers, signal };
  if (body !== undefined) {
    headers["content-type"] = "application/json";
    init.body = typeof body === "string" ? body : JSON.stringify(body);
  }
  const res = await fetch(path, init);
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  if (!res.ok) throw new ApiError(res.status, json ?? text);
  return json;
}

export const enc = encodeURIComponent;
