// The console's shell: login, navigation (hash routes), the unacknowledged-alerts badge, and
// the banners for an unreachable engine or a refused token.
import { html, render, useState, useEffect, useCallback } from "./vendor/htm-preact.js";
import { api, setToken, token, onTrouble, subscribe } from "./api.js";
import { AlertsView, AlertDetail } from "./views/alerts.js";
import { FleetView, SensorView } from "./views/fleet.js";
import { RulesView, EditorView } from "./views/rules.js";
import { DeliveryView } from "./views/delivery.js";

function useRoute() {
  const read = () => (location.hash.replace(/^#\/?/, "") || "alerts").split("/").map(decodeURIComponent);
  const [route, setRoute] = useState(read());
  useEffect(() => {
    const f = () => setRoute(read());
    addEventListener("hashchange", f);
    return () => removeEventListener("hashchange", f);
  }, []);
  return route;
}

function Login({ onLogin, message }) {
  const [value, setValue] = useState("");
  const [error, setError] = useState(message || "");
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    const t = value.trim();
    if (!t) {
      setError("Paste an API token.");
      return;
    }
    setBusy(true);
    try {
      const me = await api("/api/v1/whoami", { tokenOverride: t });
      setToken(t);
      onLogin(me);
    } catch (err) {
      setError(
        err.kind === "auth"
          ? `This token was refused: ${err.message}`
          : err.kind === "network"
            ? err.message
            : `Could not log in: ${err.message}`,
      );
    } finally {
      setBusy(false);
    }
  };
  return html`<main class="login">
    <form onSubmit=${submit} aria-labelledby="login-title">
      <h1 id="login-title"><span class="logo" aria-hidden="true">◆</span> vedette</h1>
      <p>Log in with an API token. <code>vedette serve</code> writes an admin token to
        <code>DATA_DIR/admin.token</code>; <code>vedette tokens create</code> makes others.</p>
      <label for="token">API token</label>
      <input id="token" name="token" type="password" autocomplete="off" autofocus value=${value}
        onInput=${(e) => setValue(e.target.value)} aria-describedby="login-error" />
      <p id="login-error" class="error" role="alert">${error}</p>
      <button type="submit" disabled=${busy}>${busy ? "Checking…" : "Log in"}</button>
    </form>
  </main>`;
}

function Badge({ me }) {
  const [counts, setCounts] = useState(null);
  const refresh = useCallback(() => {
    api("/api/v1/alerts/triage")
      .then(setCounts)
      .catch(() => {});
  }, []);
  useEffect(() => {
    refresh();
    let timer = null;
    // New alerts raise the count at once (debounced); triage changes announce themselves.
    const stop = subscribe("/api/v1/alerts/stream", {
      onEvent: (ev) => {
        if (ev.event !== "alert" || timer) return;
        timer = setTimeout(() => {
          timer = null;
          refresh();
        }, 300);
      },
    });
    const every = setInterval(refresh, 15000);
    addEventListener("vedette:triage", refresh);
    return () => {
      stop();
      clearInterval(every);
      clearTimeout(timer);
      removeEventListener("vedette:triage", refresh);
    };
  }, [me.token_id]);
  const n = counts ? counts.new : null;
  return html`<span class="badge ${n ? "hot" : ""}" id="unack-badge" title="Unacknowledged alerts"
    aria-label=${n === null ? "Unacknowledged alerts: loading" : `${n} unacknowledged alerts`}
    data-count=${n ?? ""}>${n === null ? "…" : n}</span>`;
}

const NAV = [
  ["alerts", "Alerts", "a"],
  ["fleet", "Fleet", "f"],
  ["rules", "Rules", "r"],
  ["delivery", "Delivery", "d"],
];

function Shell({ me, onLogout, problem }) {
  const route = useRoute();
  const [page, ...rest] = route;
  useEffect(() => {
    // g then a letter: go to a view (like many consoles); `/` focuses the first filter.
    let pending = false;
    const f = (e) => {
      if (e.target.closest("input, textarea, select, [contenteditable]") || e.ctrlKey || e.metaKey || e.altKey) return;
      if (e.key === "g") {
        pending = true;
        setTimeout(() => (pending = false), 1000);
        return;
      }
      if (pending) {
        const hit = NAV.find((n) => n[2] === e.key);
        if (hit) location.hash = `#/${hit[0]}`;
        pending = false;
      } else if (e.key === "/") {
        const first = document.querySelector("main .filters input, main .filters select");
        if (first) {
          e.preventDefault();
          const box = first.closest("details");
          if (box) box.open = true;
          first.focus();
        }
      }
    };
    addEventListener("keydown", f);
    return () => removeEventListener("keydown", f);
  }, []);
  let view;
  if (page === "alerts" && rest[0]) view = html`<${AlertDetail} me=${me} id=${rest[0]} />`;
  else if (page === "alerts") view = html`<${AlertsView} me=${me} />`;
  else if (page === "fleet" && rest[0]) view = html`<${SensorView} me=${me} id=${rest[0]} />`;
  else if (page === "fleet") view = html`<${FleetView} me=${me} />`;
  else if (page === "rules" && rest[0] === "editor") view = html`<${EditorView} me=${me} />`;
  else if (page === "rules") view = html`<${RulesView} me=${me} />`;
  else if (page === "delivery") view = html`<${DeliveryView} me=${me} />`;
  else view = html`<main><h1>Not found</h1><p>No view <code>${route.join("/")}</code>. <a href="#/alerts">Go to alerts</a>.</p></main>`;
  return html`
    <a class="skip" href="#content">Skip to content</a>
    <header class="top">
      <span class="brand"><span class="logo" aria-hidden="true">◆</span> vedette</span>
      <nav aria-label="Views">
        ${NAV.map(
          ([id, label, key]) =>
            html`<a href="#/${id}" aria-current=${page === id ? "page" : null} title="g ${key}">${label}${id === "alerts"
              ? html` <${Badge} me=${me} />`
              : null}</a>`,
        )}
      </nav>
      <span class="who" title="token ${me.token_id}">${me.name} · <b data-role=${me.role}>${me.role}</b>${me.tenant === "*"
          ? " · all tenants"
          : ` · ${me.tenant}`}</span>
      <button class="link" onClick=${onLogout}>Log out</button>
    </header>
    ${problem &&
    html`<div class="banner ${problem.kind}" role="alert" id="trouble">
      ${problem.kind === "network" ? problem.message : `Your token no longer works: ${problem.message}`}
      ${problem.kind === "auth" && html` <button class="link" onClick=${onLogout}>Log in again</button>`}
    </div>`}
    <div id="content">${view}</div>
  `;
}

function App() {
  const [me, setMe] = useState(null);
  const [checking, setChecking] = useState(!!token());
  const [problem, setProblem] = useState(null);
  const [loginMessage, setLoginMessage] = useState("");
  useEffect(() => onTrouble(setProblem), []);
  useEffect(() => {
    if (!token()) return;
    api("/api/v1/whoami")
      .then(setMe)
      .catch((e) => {
        if (e.kind === "auth") {
          setToken(null);
          setLoginMessage(`Your token was refused: ${e.message}`);
        }
      })
      .finally(() => setChecking(false));
  }, []);
  const logout = () => {
    setToken(null);
    setMe(null);
    setProblem(null);
    setLoginMessage("");
  };
  if (checking) return html`<main class="login"><p>Connecting…</p></main>`;
  if (!me) return html`<${Login} message=${loginMessage} onLogin=${(m) => (setProblem(null), setMe(m))} />`;
  return html`<${Shell} me=${me} onLogout=${logout} problem=${problem} />`;
}

render(html`<${App} />`, document.getElementById("app"));
