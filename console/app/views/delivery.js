// Delivery: each sink's breaker, state (ok, degraded, down) and why, spool, delivery rate, and
// its dead letters (list; replay for analysts; purge for admins).
import { html, useState, useEffect, useRef } from "../vendor/htm-preact.js";
import { api, query, can } from "../api.js";
import { Empty, ErrorNote, Time, fmtBytes } from "./common.js";

function DeadLetters({ me, sink, onChange }) {
  const [page, setPage] = useState(null);
  const [error, setError] = useState(null);
  const [msg, setMsg] = useState(null);
  const load = () =>
    api(`/api/v1/sinks/${encodeURIComponent(sink)}/dlq${query({ limit: 100 })}`)
      .then(setPage)
      .catch(setError);
  useEffect(() => {
    load();
  }, [sink]);
  const act = async (what) => {
    if (what === "purge" && !confirm(`Delete every dead letter of ${sink}? They are gone for good.`)) return;
    try {
      const r =
        what === "replay"
          ? await api(`/api/v1/sinks/${encodeURIComponent(sink)}/dlq/replay`, { method: "POST" })
          : await api(`/api/v1/sinks/${encodeURIComponent(sink)}/dlq`, { method: "DELETE" });
      setMsg(what === "replay" ? `${r.replayed} put back into the spool.` : `${r.purged} deleted.`);
      load();
      onChange();
    } catch (e) {
      setMsg(e.message);
    }
  };
  return html`<section class="dlq" aria-labelledby="h-dlq-${sink}">
    <h2 id="h-dlq-${sink}">Dead letters of ${sink}</h2>
    <${ErrorNote} error=${error} />
    ${page && page.total === 0 && html`<p class="muted">None.</p>`}
    ${page &&
    page.total > 0 &&
    html`<p>${page.total} dead letter(s)${page.total > page.entries.length ? `, oldest ${page.entries.length} shown` : ""}.</p>
      <table class="grid"><thead><tr><th>When</th><th>Reason</th><th>Alert</th></tr></thead><tbody>
        ${page.entries.map(
          (d) => html`<tr><td><${Time} t=${d.at} full /></td><td>${d.reason}</td>
            <td>${d.record && d.record.alert_id
              ? html`<a href="#/alerts/${d.record.alert_id}">${d.record.rule_id ?? d.record.alert_id}</a>`
              : html`<code>#${d.id}</code>`}</td></tr>`,
        )}
      </tbody></table>`}
    <div class="row">
      ${can(me.role, "analyst") && html`<button onClick=${() => act("replay")} disabled=${!page || !page.total}>Replay all</button>`}
      ${can(me.role, "admin") && html`<button class="danger" onClick=${() => act("purge")} disabled=${!page || !page.total}>Purge…</button>`}
      <span role="status">${msg}</span>
    </div>
  </section>`;
}

export function DeliveryView({ me }) {
  const [sinks, setSinks] = useState(null);
  const [rates, setRates] = useState({});
  const [error, setError] = useState(null);
  const [open, setOpen] = useState(null);
  const prev = useRef(null);
  const load = () =>
    api("/api/v1/sinks")
      .then((list) => {
        const now = performance.now();
        if (prev.current) {
          const dt = (now - prev.current.at) / 1000;
          const r = {};
          for (const s of list) {
            const before = prev.current.delivered[s.name];
            if (before !== undefined && dt > 0) r[s.name] = Math.max(0, (s.delivered - before) / dt);
          }
          setRates(r);
        }
        prev.current = { at: now, delivered: Object.fromEntries(list.map((s) => [s.name, s.delivered])) };
        setSinks(list);
        setError(null);
      })
      .catch(setError);
  useEffect(() => {
    load();
    const t = setInterval(load, 3000);
    return () => clearInterval(t);
  }, []);
  return html`<main class="delivery">
    <div class="head"><h1>Delivery</h1></div>
    <${ErrorNote} error=${error} />
    ${sinks === null && !error
      ? html`<p class="muted">Loading…</p>`
      : sinks && sinks.length === 0
        ? html`<${Empty} title="No sinks">Add sinks to the config (docs/sinks.md).</${Empty}>`
        : sinks &&
          html`<div class="scroller"><table class="grid" id="sink-table">
            <thead><tr><th>Sink</th><th>Type</th><th>Format</th><th>Breaker</th><th>State</th><th class="num">Spooled</th><th class="num">Spool bytes</th>
              <th class="num">Delivered/s</th><th class="num">Delivered</th><th class="num">Dead letters</th><th>Why</th></tr></thead>
            <tbody>${sinks.map(
              (s) => html`<tr key=${s.name} data-sink=${s.name}>
                <td><b>${s.name}</b></td><td>${s.type}</td><td>${s.format}</td>
                <td><span class="chip br-${s.breaker}">${s.breaker}</span></td>
                <td><span class="chip st-${s.state}">${s.state}</span>${s.removed ? html` <span class="chip" title="removed from the config: delivers what it holds, then goes">removed</span>` : null}</td>
                <td class="num">${s.spooled}</td>
                <td class="num">${fmtBytes(s.spool_bytes)} / ${fmtBytes(s.spool_max_bytes)}</td>
                <td class="num">${rates[s.name] === undefined ? "…" : rates[s.name].toFixed(1)}</td>
                <td class="num">${s.delivered}</td>
                <td class="num"><button class="link" aria-expanded=${open === s.name}
                  onClick=${() => setOpen(open === s.name ? null : s.name)}>${s.dead_letters}</button></td>
                <td class=${s.reason ? "error" : "muted"}>${s.reason ?? "—"}</td>
              </tr>`,
            )}</tbody></table></div>`}
    ${open && html`<${DeadLetters} me=${me} sink=${open} onChange=${load} />`}
  </main>`;
}
