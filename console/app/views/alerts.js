// Alerts: the live list (history page + SSE stream, resumed without gaps; other analysts'
// triage changes arrive on the same stream), filters, the per-minute chart, triage (one or
// many), export, and one alert's detail.
import { html, useState, useEffect, useRef, useCallback, useMemo } from "../vendor/htm-preact.js";
import { api, query, subscribe, can } from "../api.js";
import { Empty, ErrorNote, Time, Sev, TriageChip, download, SEVERITIES } from "./common.js";

const PAGE = 100;
const MAX_ROWS = 2000;

function localToRfc3339(v) {
  return v ? new Date(v).toISOString() : "";
}

/** The filters as API parameters. */
function params(f) {
  return {
    rule: f.rule,
    severity: f.severity,
    sensor: f.sensor,
    triage: f.triage,
    since: localToRfc3339(f.since),
    until: localToRfc3339(f.until),
  };
}

function Filters({ value, onChange, rules }) {
  const set = (k) => (e) => onChange({ ...value, [k]: e.target.value });
  const active = Object.values(value).filter((v) => v).length;
  // Open on wide screens; on a phone the filters fold away under their summary.
  return html`<details class="filterbox" open=${matchMedia("(min-width: 700px)").matches || undefined}>
    <summary>Filters${active ? ` (${active})` : ""}</summary>
    <form class="filters" aria-label="Alert filters" onSubmit=${(e) => e.preventDefault()}>
    <label>Rule
      <select name="rule" value=${value.rule} onChange=${set("rule")}>
        <option value="">any</option>
        ${rules.map((r) => html`<option value=${r.id}>${r.id}</option>`)}
      </select></label>
    <label>Severity ≥
      <select name="severity" value=${value.severity} onChange=${set("severity")}>
        <option value="">any</option>
        ${SEVERITIES.map((s) => html`<option value=${s}>${s}</option>`)}
      </select></label>
    <label>Sensor
      <input name="sensor" value=${value.sensor} onChange=${set("sensor")} placeholder="sensor id" size="14" /></label>
    <label>State
      <select name="triage" value=${value.triage} onChange=${set("triage")}>
        <option value="">any</option>
        <option value="new">new</option>
        <option value="acknowledged">acknowledged</option>
        <option value="resolved">resolved</option>
      </select></label>
    <label>Since <input name="since" type="datetime-local" value=${value.since} onChange=${set("since")} /></label>
    <label>Until <input name="until" type="datetime-local" value=${value.until} onChange=${set("until")} /></label>
    <button type="button" class="link" onClick=${() => onChange(EMPTY)}>Clear</button>
  </form></details>`;
}

const EMPTY = { rule: "", severity: "", sensor: "", triage: "", since: "", until: "" };

/** Alerts per minute by severity over the last hour (stacked SVG bars). */
function Chart({ filter, bump }) {
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    const p = params(filter);
    delete p.since;
    delete p.until;
    let gone = false;
    const load = () =>
      api(`/api/v1/alerts/histogram${query({ ...p, bucket: 60 })}`)
        .then((d) => !gone && (setData(d), setError(null)))
        .catch((e) => !gone && setError(e));
    load();
    const t = setInterval(load, 30000);
    return () => {
      gone = true;
      clearInterval(t);
    };
  }, [JSON.stringify(filter), bump]);
  if (error) return html`<${ErrorNote} error=${error} />`;
  const W = 720,
    H = 90;
  const buckets = data ? data.buckets : [];
  const totals = buckets.map((b) => SEVERITIES.reduce((n, s) => n + b[s], 0));
  const max = Math.max(1, ...totals);
  const bw = buckets.length ? W / buckets.length : W;
  const sum = totals.reduce((a, b) => a + b, 0);
  return html`<figure class="chart" aria-label="Alerts per minute by severity, last hour">
    <svg viewBox="0 0 ${W} ${H + 1}" preserveAspectRatio="none" role="img"
      aria-label=${`${sum} alerts in the last hour`} width="100%" height=${H + 1}>
      ${buckets.map((b, i) => {
        let y = H;
        return SEVERITIES.map((s) => {
          const h = (b[s] / max) * H;
          y -= h;
          return h > 0
            ? html`<rect class="sev-fill-${s}" x=${i * bw + 0.5} y=${y} width=${Math.max(bw - 1, 1)} height=${h}><title>${new Date(
                b.start,
              ).toLocaleTimeString()}: ${b[s]} ${s}</title></rect>`
            : null;
        });
      })}
      <line x1="0" y1=${H + 0.5} x2=${W} y2=${H + 0.5} class="axis" />
    </svg>
    <div class="ticks" aria-hidden="true"><span>−60 min</span><span>now</span></div>
    <figcaption>${sum} alerts in the last hour · max ${max}/min
      <span class="legend">${SEVERITIES.map((s) => html`<span class="sev-${s}">${s}</span>`)}</span></figcaption>
  </figure>`;
}

function TriageBar({ selected, filter, onDone, total }) {
  const [note, setNote] = useState("");
  const [busy, setBusy] = useState(false);
  const [msg, setMsg] = useState(null);
  const act = async (state, all) => {
    setBusy(true);
    setMsg(null);
    try {
      const p = params(filter);
      const f = Object.fromEntries(Object.entries(p).filter(([, v]) => v));
      const body = all ? { state, note, filter: f } : { state, note, ids: [...selected] };
      const r = await api("/api/v1/alerts/triage", { method: "POST", body });
      setMsg(`${r.changed} of ${r.matched} alert(s) now ${state}.`);
      setNote("");
      dispatchEvent(new Event("vedette:triage"));
      onDone();
    } catch (e) {
      setMsg(e.message);
    } finally {
      setBusy(false);
    }
  };
  const n = selected.size;
  return html`<div class="triagebar" role="group" aria-label="Triage">
    <input aria-label="Note" placeholder="note (optional)" value=${note} onInput=${(e) => setNote(e.target.value)} />
    <button disabled=${busy || !n} onClick=${() => act("acknowledged")} id="ack-selected">Acknowledge ${n || ""}</button>
    <button disabled=${busy || !n} onClick=${() => act("resolved")} id="resolve-selected">Resolve ${n || ""}</button>
    <button disabled=${busy || !total} class="secondary" onClick=${() => {
      if (confirm("Acknowledge every alert matching the filters (not only those listed)?")) act("acknowledged", true);
    }}>Acknowledge all matching</button>
    <span class="status" role="status">${msg}</span>
  </div>`;
}

function Export({ filter }) {
  const [format, setFormat] = useState("json");
  const [error, setError] = useState(null);
  const go = async () => {
    setError(null);
    try {
      // A one-time link the browser downloads itself: streamed to disk, no size cap, no
      // token in the URL (the link's secret works once, for a minute).
      const link = await api(`/api/v1/alerts/export/links${query({ ...params(filter), format })}`, { method: "POST" });
      const a = document.createElement("a");
      a.href = link.url;
      a.download = link.filename;
      a.id = "export-link";
      a.click();
    } catch (e) {
      setError(e.message);
    }
  };
  return html`<span class="export">
    <select aria-label="Export format" value=${format} onChange=${(e) => setFormat(e.target.value)}>
      <option value="json">JSON</option><option value="cef">CEF</option><option value="stix">STIX 2.1</option><option value="ocsf">OCSF</option>
    </select>
    <button class="secondary" onClick=${go}>Export</button>${error && html` <span class="error">${error}</span>`}
  </span>`;
}

export function AlertsView({ me }) {
  const [filter, setFilter] = useState(() => ({ ...EMPTY, ...JSON.parse(sessionStorage.getItem("vedette.filter") || "{}") }));
  const [items, setItems] = useState(null);
  const [cursor, setCursor] = useState(null);
  const [pending, setPending] = useState([]);
  const [live, setLive] = useState("connecting");
  const [error, setError] = useState(null);
  const [rules, setRules] = useState([]);
  const [selected, setSelected] = useState(new Set());
  const [bump, setBump] = useState(0);
  const [reload, setReload] = useState(0);
  const scroller = useRef(null);
  const analyst = can(me.role, "analyst");

  useEffect(() => {
    api("/api/v1/rules")
      .then((r) => setRules(r.rules))
      .catch(() => {});
  }, []);

  useEffect(() => {
    sessionStorage.setItem("vedette.filter", JSON.stringify(filter));
    let stop = () => {};
    let gone = false;
    setItems(null);
    setPending([]);
    setSelected(new Set());
    setError(null);
    const p = params(filter);
    api(`/api/v1/alerts${query({ ...p, limit: PAGE })}`)
      .then((page) => {
        if (gone) return;
        setItems(page.items);
        setCursor(page.next_cursor);
        // Resume the stream right after the newest alert listed: nothing is missed between
        // the page and the stream (0 when none matched: every later match is sent).
        const lastId = page.items.length ? page.items[0].position : 0;
        stop = subscribe(`/api/v1/alerts/stream${query(p)}`, {
          lastId,
          onState: setLive,
          onEvent: (ev) => {
            if (ev.event === "triage") {
              // Another analyst (or this one) changed alerts' state: show it in place.
              const t = JSON.parse(ev.data);
              if (!Array.isArray(t.ids)) {
                // Too many to list, or changes were missed: read the list again.
                setReload((r) => r + 1);
                return;
              }
              const ids = new Set(t.ids);
              const rec = { state: t.state, by: t.by, at: t.at, note: t.note };
              const upd = (list) => list && list.map((it) => (ids.has(it.alert.alert_id) ? { ...it, triage: rec } : it));
              setItems(upd);
              setPending(upd);
              dispatchEvent(new Event("vedette:triage"));
              return;
            }
            if (ev.event !== "alert") return;
            const item = { position: Number(ev.id), alert: JSON.parse(ev.data), triage: null, fresh: true };
            const el = scroller.current;
            if (el && el.scrollTop > 4) {
              // The reader is further down: keep the rows still, offer the new ones.
              setPending((q) => [item, ...q]);
            } else {
              setItems((cur) => [item, ...(cur || [])].slice(0, MAX_ROWS));
            }
            setBump((b) => b + 1);
          },
        });
      })
      .catch((e) => !gone && setError(e));
    return () => {
      gone = true;
      stop();
    };
  }, [JSON.stringify(filter), reload]);

  const showPending = () => {
    setItems((cur) => [...pending, ...(cur || [])].slice(0, MAX_ROWS));
    setPending([]);
    if (scroller.current) scroller.current.scrollTop = 0;
  };
  const older = async () => {
    try {
      const page = await api(`/api/v1/alerts${query({ ...params(filter), limit: PAGE, cursor })}`);
      setItems((cur) => [...cur, ...page.items]);
      setCursor(page.next_cursor);
    } catch (e) {
      setError(e);
    }
  };
  const toggle = (id) =>
    setSelected((s) => {
      const n = new Set(s);
      n.has(id) ? n.delete(id) : n.add(id);
      return n;
    });
  const chartFilter = useMemo(() => ({ ...filter }), [JSON.stringify(filter)]);
  const debouncedBump = useDebounced(bump, 2000);
  return html`<main class="alerts">
    <div class="head">
      <h1>Alerts</h1>
      <span class="live ${live}" role="status" id="live-status">${live === "live" ? "● live" : live === "reconnecting" ? "◌ reconnecting…" : live}</span>
      <${Export} filter=${filter} />
    </div>
    <${Filters} value=${filter} onChange=${setFilter} rules=${rules} />
    <${Chart} filter=${chartFilter} bump=${debouncedBump} />
    ${analyst && html`<${TriageBar} selected=${selected} filter=${filter} total=${items ? items.length : 0}
      onDone=${() => setReload((r) => r + 1)} />`}
    ${error && html`<${ErrorNote} error=${error} />`}
    <div class="listwrap">
      ${pending.length > 0 &&
      html`<button class="pending" onClick=${showPending} id="show-pending">${pending.length} new alert${pending.length > 1 ? "s" : ""} — show</button>`}
      <div class="scroller" ref=${scroller} tabindex="-1">
        ${items === null && !error
          ? html`<p class="muted">Loading…</p>`
          : items && items.length === 0
            ? html`<${Empty} title="No alerts match">
                ${Object.values(filter).some((v) => v) ? "Change or clear the filters." : "Alerts appear here as soon as a rule fires."}
              </${Empty}>`
            : items &&
              html`<table class="grid" id="alert-table">
                <thead><tr>
                  ${analyst && html`<th class="pick"><span class="sr">Select</span></th>`}
                  <th>Detected</th><th>Severity</th><th>Rule</th><th>Sensor</th><th>Host</th><th>State</th>
                </tr></thead>
                <tbody>
                  ${items.map(
                    (it) => html`<tr key=${it.alert.alert_id} class=${it.fresh ? "fresh" : ""} data-rule=${it.alert.rule_id}>
                      ${analyst &&
                      html`<td class="pick"><input type="checkbox" aria-label="Select alert ${it.alert.alert_id}"
                        checked=${selected.has(it.alert.alert_id)} onChange=${() => toggle(it.alert.alert_id)} /></td>`}
                      <td><${Time} t=${it.alert.detected_at} /></td>
                      <td><${Sev} s=${it.alert.severity} /></td>
                      <td><a href="#/alerts/${it.alert.alert_id}" title=${it.alert.rule_name}>${it.alert.rule_id}</a></td>
                      <td>${it.alert.sensor_id ?? "—"}</td>
                      <td>${it.alert.host ?? "—"}</td>
                      <td><${TriageChip} t=${it.triage} /></td>
                    </tr>`,
                  )}
                </tbody>
              </table>
              ${cursor && html`<button class="secondary more" onClick=${older}>Load older</button>`}`}
      </div>
    </div>
  </main>`;
}

function useDebounced(value, ms) {
  const [v, setV] = useState(value);
  useEffect(() => {
    const t = setTimeout(() => setV(value), ms);
    return () => clearTimeout(t);
  }, [value]);
  return v;
}

export function AlertDetail({ me, id }) {
  const [item, setItem] = useState(null);
  const [error, setError] = useState(null);
  const [note, setNote] = useState("");
  const [busy, setBusy] = useState(false);
  const load = useCallback(
    () =>
      api(`/api/v1/alerts/${encodeURIComponent(id)}`)
        .then(setItem)
        .catch(setError),
    [id],
  );
  useEffect(() => {
    load();
  }, [id]);
  const set = async (state) => {
    setBusy(true);
    try {
      await api(`/api/v1/alerts/${encodeURIComponent(id)}/triage`, { method: "PUT", body: { state, note } });
      setNote("");
      dispatchEvent(new Event("vedette:triage"));
      await load();
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  const exportAs = async (format) => {
    try {
      const resp = await api(`/api/v1/alerts/${encodeURIComponent(id)}/export${query({ format })}`, { raw: true });
      download(await resp.blob(), `alert-${id}.${format === "cef" ? "cef" : "json"}`);
    } catch (e) {
      setError(e);
    }
  };
  if (error) return html`<main><p><a href="#/alerts">← Alerts</a></p><${ErrorNote} error=${error} /></main>`;
  if (!item) return html`<main><p class="muted">Loading…</p></main>`;
  const a = item.alert;
  const t = item.triage;
  const state = t ? t.state : "new";
  return html`<main class="detail" id="alert-detail">
    <p><a href="#/alerts">← Alerts</a></p>
    <h1><${Sev} s=${a.severity} /> ${a.rule_name}</h1>
    <p class="muted">${a.description}</p>
    <div class="cols">
      <section aria-labelledby="h-alert">
        <h2 id="h-alert">Alert</h2>
        <dl class="kv">
          <dt>Id</dt><dd><code>${a.alert_id}</code></dd>
          <dt>Detected</dt><dd><${Time} t=${a.detected_at} full /></dd>
          <dt>Event time</dt><dd><${Time} t=${a.ts} full /></dd>
          ${a.window_start && html`<dt>Window</dt><dd><${Time} t=${a.window_start} full /> – <${Time} t=${a.window_end} full /></dd>`}
          <dt>Sensor</dt><dd>${a.sensor_id ? html`<a href="#/fleet/${encodeURIComponent(a.sensor_id)}">${a.sensor_id}</a>` : "—"}</dd>
          <dt>Host</dt><dd>${a.host ?? "—"}</dd>
          <dt>Tenant</dt><dd>${a.tenant ?? "—"}</dd>
          <dt>Table</dt><dd>${a.table}</dd>
        </dl>
      </section>
      <section aria-labelledby="h-rule">
        <h2 id="h-rule">Rule</h2>
        <dl class="kv">
          <dt>Id</dt><dd><code>${a.rule_id}</code> v${a.rule_version}</dd>
          <dt>Pack</dt><dd>${a.pack}</dd>
          <dt>Severity</dt><dd><${Sev} s=${a.severity} /></dd>
          <dt>Tags</dt><dd>${(a.tags || []).map((g) => html`<span class="tag">${g}</span> `)}</dd>
        </dl>
      </section>
      <section aria-labelledby="h-triage">
        <h2 id="h-triage">Triage</h2>
        <p>State: <${TriageChip} t=${t} />
          ${t && t.by && html` by ${t.by}, <${Time} t=${t.at} full />`}</p>
        ${t && t.note && html`<blockquote>${t.note}</blockquote>`}
        ${can(me.role, "analyst")
          ? html`<div class="row">
              <input aria-label="Note" placeholder="note (optional)" value=${note} onInput=${(e) => setNote(e.target.value)} />
              ${state !== "acknowledged" && html`<button id="ack" disabled=${busy} onClick=${() => set("acknowledged")}>Acknowledge</button>`}
              ${state !== "resolved" && html`<button id="resolve" disabled=${busy} onClick=${() => set("resolved")}>Resolve</button>`}
              ${state !== "new" && html`<button class="secondary" disabled=${busy} onClick=${() => set("new")}>Reopen</button>`}
            </div>`
          : html`<p class="muted">Your role (${me.role}) can read alerts but not triage them.</p>`}
      </section>
    </div>
    <section aria-labelledby="h-row">
      <h2 id="h-row">Triggering row</h2>
      <table class="grid kvt" id="row-table"><tbody>
        ${Object.entries(a.row || {}).map(
          ([k, v]) => html`<tr><th scope="row">${k}</th><td><code>${v === null ? "null" : typeof v === "object" ? JSON.stringify(v) : String(v)}</code></td></tr>`,
        )}
      </tbody></table>
    </section>
    <section aria-labelledby="h-export">
      <h2 id="h-export">Export</h2>
      ${["json", "cef", "stix", "ocsf"].map((f) => html`<button class="secondary" onClick=${() => exportAs(f)}>${f.toUpperCase()}</button> `)}
    </section>
  </main>`;
}
