// Fleet: sensors with status, and one sensor's page (live telemetry tail, commands, observe
// level, revoke).
import { html, useState, useEffect, useRef } from "../vendor/htm-preact.js";
import { api, query, subscribe, can } from "../api.js";
import { Empty, ErrorNote, Time, Status } from "./common.js";

export function FleetView({ me }) {
  const [status, setStatus] = useState("");
  const [label, setLabel] = useState("");
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    let gone = false;
    const load = () =>
      api(`/api/v1/sensors${query({ status, label, limit: 1000 })}`)
        .then((d) => !gone && (setData(d), setError(null)))
        .catch((e) => !gone && setError(e));
    load();
    const t = setInterval(load, 5000);
    return () => {
      gone = true;
      clearInterval(t);
    };
  }, [status, label]);
  const items = data ? data.items : null;
  return html`<main class="fleet">
    <div class="head"><h1>Fleet</h1>${items && html`<span class="muted">${items.length} sensor(s)</span>`}</div>
    <form class="filters" aria-label="Sensor filters" onSubmit=${(e) => e.preventDefault()}>
      <label>Status
        <select name="status" value=${status} onChange=${(e) => setStatus(e.target.value)}>
          <option value="">any</option>
          ${["online", "silent", "offline", "revoked"].map((s) => html`<option value=${s}>${s}</option>`)}
        </select></label>
      <label>Labels <input name="label" placeholder="env=prod,role=db" value=${label} onChange=${(e) => setLabel(e.target.value)} /></label>
    </form>
    <${ErrorNote} error=${error} />
    ${items === null && !error
      ? html`<p class="muted">Loading…</p>`
      : items && items.length === 0
        ? html`<${Empty} title="No sensors">${status || label ? "None match the filters." : "Enroll one: see docs/fleet.md, or run `vedette sensor --demo`."}</${Empty}>`
        : items &&
          html`<div class="scroller"><table class="grid" id="sensor-table">
            <thead><tr><th>Sensor</th><th>Status</th><th>Last seen</th><th>Version</th><th>Host</th><th>Labels</th><th class="num">Events/s</th>${me.tenant === "*" && html`<th>Tenant</th>`}</tr></thead>
            <tbody>${items.map(
              (s) => html`<tr key=${s.sensor_id} data-sensor=${s.sensor_id}>
                <td><a href="#/fleet/${encodeURIComponent(s.sensor_id)}">${s.sensor_id}</a></td>
                <td><${Status} s=${s.status} /></td>
                <td><${Time} t=${s.last_seen} full /></td>
                <td>${s.sensor_version ?? "—"}</td>
                <td>${s.host ?? "—"}</td>
                <td>${Object.entries(s.labels || {}).map(([k, v]) => html`<span class="tag">${k}=${v}</span> `)}</td>
                <td class="num">${(s.events_per_sec ?? 0).toFixed(1)}</td>
                ${me.tenant === "*" && html`<td>${s.tenant}</td>`}
              </tr>`,
            )}</tbody></table></div>`}
  </main>`;
}

const TAIL = 200;

function Tail({ id }) {
  const [rows, setRows] = useState([]);
  const [state, setState] = useState("connecting");
  const [paused, setPaused] = useState(false);
  const pausedRef = useRef(false);
  pausedRef.current = paused;
  useEffect(() => {
    setRows([]);
    return subscribe(`/api/v1/events/stream${query({ sensor: id })}`, {
      resume: false,
      onState: setState,
      onEvent: (ev) => {
        if (ev.event !== "row" || pausedRef.current) return;
        setRows((r) => [ev.data, ...r].slice(0, TAIL));
      },
    });
  }, [id]);
  return html`<section aria-labelledby="h-tail">
    <div class="head"><h2 id="h-tail">Live telemetry</h2>
      <span class="live ${state}" role="status">${state === "live" ? "● live" : state}</span>
      <button class="secondary" onClick=${() => setPaused(!paused)} aria-pressed=${paused}>${paused ? "Resume" : "Pause"}</button></div>
    ${rows.length === 0
      ? html`<p class="muted">Waiting for the sensor's next events…</p>`
      : html`<pre class="tail" id="tail" tabindex="0" aria-label="Latest events, newest first">${rows.join("\n")}</pre>`}
  </section>`;
}

export function SensorView({ me, id }) {
  const [s, setS] = useState(null);
  const [cmds, setCmds] = useState([]);
  const [error, setError] = useState(null);
  const [level, setLevel] = useState("standard");
  const [msg, setMsg] = useState(null);
  const load = () =>
    Promise.all([
      api(`/api/v1/sensors/${encodeURIComponent(id)}`).then(setS),
      api(`/api/v1/sensors/${encodeURIComponent(id)}/commands`).then(setCmds),
    ]).catch(setError);
  useEffect(() => {
    load();
    const t = setInterval(load, 5000);
    return () => clearInterval(t);
  }, [id]);
  const admin = can(me.role, "admin");
  const command = async () => {
    setMsg(null);
    try {
      await api(`/api/v1/sensors/${encodeURIComponent(id)}/commands`, { method: "POST", body: { level } });
      setMsg(`Observe level ${level} queued.`);
      load();
    } catch (e) {
      setMsg(e.message);
    }
  };
  const revoke = async () => {
    if (!confirm(`Revoke sensor ${id}? Its certificates are refused from now on and its connection is closed.`)) return;
    try {
      await api(`/api/v1/sensors/${encodeURIComponent(id)}/revoke`, { method: "POST" });
      setMsg("Revoked.");
      load();
    } catch (e) {
      setMsg(e.message);
    }
  };
  if (error) return html`<main><p><a href="#/fleet">← Fleet</a></p><${ErrorNote} error=${error} /></main>`;
  if (!s) return html`<main><p class="muted">Loading…</p></main>`;
  return html`<main class="sensor" id="sensor-page">
    <p><a href="#/fleet">← Fleet</a></p>
    <div class="head"><h1>${s.sensor_id}</h1> <${Status} s=${s.status} /></div>
    <div class="cols">
      <section aria-labelledby="h-sensor"><h2 id="h-sensor">Sensor</h2>
        <dl class="kv">
          <dt>Host</dt><dd>${s.host ?? "—"}</dd>
          <dt>Tenant</dt><dd>${s.tenant}</dd>
          <dt>Version</dt><dd>${s.sensor_version ?? "—"}</dd>
          <dt>Last seen</dt><dd><${Time} t=${s.last_seen} full /></dd>
          <dt>First seen</dt><dd><${Time} t=${s.first_seen} full /></dd>
          <dt>Address</dt><dd>${s.remote_addr ?? "—"}</dd>
          <dt>Events/s</dt><dd>${(s.events_per_sec ?? 0).toFixed(1)}</dd>
          <dt>Observe level</dt><dd>${s.observe_level ?? "default"}</dd>
          <dt>Labels</dt><dd>${Object.entries(s.labels || {}).map(([k, v]) => html`<span class="tag">${k}=${v}</span> `)}</dd>
          ${s.revoked_at && html`<dt>Revoked</dt><dd><${Time} t=${s.revoked_at} full /></dd>`}
        </dl>
      </section>
      <section aria-labelledby="h-cmd"><h2 id="h-cmd">Commands</h2>
        ${cmds.length === 0
          ? html`<p class="muted">No commands.</p>`
          : html`<table class="grid" id="command-table"><thead><tr><th>Created</th><th>Command</th><th>State</th><th>Message</th></tr></thead><tbody>
              ${cmds.slice(-20).reverse().map((c) => html`<tr><td><${Time} t=${c.created_at} /></td><td><code>${JSON.stringify(c.action)}</code></td>
                <td><span class="chip">${c.state}</span></td><td>${c.message ?? ""}</td></tr>`)}
            </tbody></table>`}
        ${admin
          ? html`<div class="row">
              <label>Observe level <select value=${level} onChange=${(e) => setLevel(e.target.value)}>
                ${["minimal", "standard", "verbose"].map((l) => html`<option value=${l} selected=${l === level}>${l}</option>`)}</select></label>
              <button onClick=${command}>Send</button>
              ${!s.revoked_at && html`<button class="danger" onClick=${revoke} id="revoke">Revoke…</button>`}
            </div>`
          : html`<p class="muted">Commands and revocation need an admin token.</p>`}
        <p role="status">${msg}</p>
      </section>
    </div>
    ${can(me.role, "analyst") ? html`<${Tail} id=${id} />` : html`<p class="muted">The live telemetry tail needs an analyst token.</p>`}
  </main>`;
}
