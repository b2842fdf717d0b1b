// The console's only way to the engine: the public HTTP API, with the token the user logged in
// with (kept in sessionStorage, sent as a Bearer header, never put in a URL).

const KEY = "vedette.token";

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(t) {
  if (t) sessionStorage.setItem(KEY, t);
  else sessionStorage.removeItem(KEY);
}

/** An error the user should read: `kind` is `auth` (token refused), `network` (engine
 * unreachable), `forbidden` or `request` (the API's own message, with `param` if any). */
export class ApiError extends Error {
  constructor(kind, message, status, param) {
    super(message);
    this.kind = kind;
    this.status = status;
    this.param = param;
  }
}

const listeners = new Set();
/** Called with every auth or network failure (the shell shows a banner or the login page). */
export function onTrouble(f) {
  listeners.add(f);
  return () => listeners.delete(f);
}
function trouble(e) {
  for (const f of listeners) f(e);
}

async function errorOf(resp) {
  let body = null;
  try {
    body = await resp.json();
  } catch (_) {
    /* not JSON */
  }
  const msg = (body && body.error) || `${resp.status} ${resp.statusText}`;
  if (resp.status === 401) return new ApiError("auth", msg, 401);
  if (resp.status === 403) return new ApiError("forbidden", msg, 403);
  return new ApiError("request", msg, resp.status, body && body.param);
}

/** Calls the API; returns parsed JSON (or text for non-JSON answers). */
export async function api(path, { method = "GET", body, raw = false, tokenOverride, signal } = {}) {
  const headers = { Authorization: `Bearer ${tokenOverride ?? token() ?? ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    const err = new ApiError("network", "The engine is unreachable (is `vedette serve` running?)", 0);
    trouble(err);
    throw err;
  }
  if (!resp.ok) {
    const err = await errorOf(resp);
    if (err.kind === "auth") trouble(err);
    throw err;
  }
  trouble(null);
  if (raw) return resp;
  const type = resp.headers.get("content-type") || "";
  return type.includes("json") ? resp.json() : resp.text();
}

/** Builds `?k=v&…` from an object, leaving out empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}

/** Parses Server-Sent Events from a fetch body. Calls `onEvent({id, event, data})`. */
async function readEvents(resp, onEvent, signal) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done || signal.aborted) return;
    buf += decoder.decode(value, { stream: true });
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      const ev = { id: null, event: "message", data: [] };
      for (const line of block.split("\n")) {
        const i = line.indexOf(":");
        const field = i < 0 ? line : line.slice(0, i);
        let v = i < 0 ? "" : line.slice(i + 1);
        if (v.startsWith(" ")) v = v.slice(1);
        if (field === "id") ev.id = v;
        else if (field === "event") ev.event = v;
        else if (field === "data") ev.data.push(v);
      }
      if (ev.data.length || ev.id) onEvent({ ...ev, data: ev.data.join("\n") });
    }
  }
}

/** A live SSE subscription over fetch (EventSource cannot send a Bearer header). Resumes
 * after a drop with `Last-Event-ID` (the last id seen), with backoff; `onState` gets
 * `live`, `reconnecting` or `closed`. Returns a function that stops it. */
export function subscribe(path, { onEvent, onState = () => {}, lastId = null, resume = true }) {
  const ctl = new AbortController();
  let last = lastId;
  let delay = 500;
  (async () => {
    while (!ctl.signal.aborted) {
      try {
        const headers = { Authorization: `Bearer ${token() ?? ""}` };
        if (resume && last !== null) headers["Last-Event-ID"] = String(last);
        const resp = await fetch(path, { headers, signal: ctl.signal });
        if (!resp.ok) {
          const err = await errorOf(resp);
          trouble(err.kind === "auth" ? err : null);
          onState("closed", err);
          if (err.kind === "auth" || err.kind === "forbidden" || resp.status === 400) return;
        } else {
          trouble(null);
          delay = 500;
          onState("live");
          await readEvents(
            resp,
            (ev) => {
              if (ev.id !== null) last = ev.id;
              onEvent(ev);
            },
            ctl.signal,
          );
        }
      } catch (e) {
        if (ctl.signal.aborted) return;
        trouble(new ApiError("network", "The engine is unreachable (is `vedette serve` running?)", 0));
      }
      if (ctl.signal.aborted) return;
      onState("reconnecting");
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 10000);
    }
  })();
  return () => ctl.abort();
}

/** Roles in order; `can(role, "analyst")` says whether `role` has at least analyst rights. */
const ROLES = ["viewer", "analyst", "admin"];
export function can(role, needed) {
  return ROLES.indexOf(role) >= ROLES.indexOf(needed);
}
