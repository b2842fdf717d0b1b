// Small pieces every view uses.
import { html } from "../vendor/htm-preact.js";

export const SEVERITIES = ["info", "low", "medium", "high", "critical"];

export function Empty({ title, children }) {
  return html`<div class="empty" role="status"><p><b>${title}</b></p><p class="muted">${children}</p></div>`;
}

/** An API error, in words a user can act on. */
export function ErrorNote({ error }) {
  if (!error) return null;
  const text =
    error.kind === "forbidden"
      ? `Your token may not do this: ${error.message}`
      : error.kind === "network"
        ? error.message
        : error.message || String(error);
  return html`<p class="error" role="alert">${text}</p>`;
}

export function Time({ t, full }) {
  if (!t) return "—";
  const d = new Date(t);
  const text = full ? d.toLocaleString() : d.toLocaleTimeString();
  return html`<time datetime=${t} title=${d.toISOString()}>${text}</time>`;
}

export function Sev({ s }) {
  return html`<span class="sev sev-${s}">${s}</span>`;
}

export function TriageChip({ t }) {
  const state = t ? t.state : "new";
  return html`<span class="chip st-${state}" title=${t && t.by ? `${state} by ${t.by}` : state}>${state}</span>`;
}

export function Status({ s }) {
  return html`<span class="chip ss-${s}">${s}</span>`;
}

/** Saves a blob as a file. */
export function download(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

export function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  const u = ["KiB", "MiB", "GiB", "TiB"];
  let i = -1;
  do {
    n /= 1024;
    i++;
  } while (n >= 1024 && i < u.length - 1);
  return `${n.toFixed(1)} ${u[i]}`;
}
