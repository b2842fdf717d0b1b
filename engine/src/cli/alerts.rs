//! `vedette alerts query|get|export|ack|resolve|reopen` and `vedette tail`: the alert history and live stream of
//! a running engine.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use vedette_pipelines::alert::Alert;

use super::client::{ApiArgs, api_call, send};

/// Filters shared by every alert command.
#[derive(clap::Args, Clone, Default)]
pub struct AlertFilter {
    /// Rule id.
    #[arg(long)]
    pub rule: Option<String>,
    /// Minimum severity: info, low, medium, high, critical.
    #[arg(long)]
    pub severity: Option<String>,
    /// Sensor id.
    #[arg(long)]
    pub sensor: Option<String>,
    /// Host.
    #[arg(long)]
    pub host: Option<String>,
    /// Tenant (fleet-wide tokens only).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Raised at or after this RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Raised before this RFC 3339 time.
    #[arg(long)]
    pub until: Option<String>,
    /// Triage state: new, acknowledged, resolved.
    #[arg(long)]
    pub triage: Option<String>,
}

impl AlertFilter {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        [
            ("rule", &self.rule),
            ("severity", &self.severity),
            ("sensor", &self.sensor),
            ("host", &self.host),
            ("tenant", &self.tenant),
            ("since", &self.since),
            ("until", &self.until),
            ("triage", &self.triage),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect()
    }
}

/// Builds `path?k=v&…` with percent-encoding.
pub(crate) fn with_query(path: &str, pairs: &[(&str, String)]) -> String {
    if pairs.is_empty() {
        return path.to_string();
    }
    let q: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect();
    format!("{path}?{}", q.join("&"))
}

pub(crate) fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Alert history of a running engine.
#[derive(Subcommand)]
pub enum AlertsCommand {
    /// Alerts newest first, one readable line each (or JSON lines with --json); pages with
    /// --cursor, or every page with --all.
    Query {
        #[command(flatten)]
        filter: AlertFilter,
        /// Alerts per page (1–1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Continue after a previous page (its `next_cursor`).
        #[arg(long)]
        cursor: Option<String>,
        /// Follow every page to the end.
        #[arg(long)]
        all: bool,
        /// Print each alert as one JSON line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// One alert by id, as JSON.
    Get {
        /// Alert id.
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Every matching alert in a sink format, streamed to stdout (or --out).
    Export {
        /// json, cef, stix or ocsf.
        #[arg(long, default_value = "json")]
        format: String,
        #[command(flatten)]
        filter: AlertFilter,
        /// At most this many alerts.
        #[arg(long)]
        limit: Option<usize>,
        /// Write to this file instead of stdout.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Acknowledge alerts: someone is on them (needs an analyst token).
    Ack(TriageArgs),
    /// Resolve alerts (needs an analyst token).
    Resolve(TriageArgs),
    /// Reopen alerts: back to `new` (needs an analyst token).
    Reopen(TriageArgs),
}

/// The alerts of a triage command and its note.
#[derive(clap::Args)]
pub struct TriageArgs {
    /// Alert ids.
    #[arg(required = true)]
    ids: Vec<String>,
    /// Why, or what was done.
    #[arg(long)]
    note: Option<String>,
    #[command(flatten)]
    api: ApiArgs,
}

/// Sets the triage state of `ids`; fails naming the ids the engine does not know.
async fn triage(state: &str, TriageArgs { ids, note, api }: TriageArgs) -> anyhow::Result<()> {
    for id in &ids {
        uuid::Uuid::parse_str(id).map_err(|_| anyhow::anyhow!("`{id}` is not an alert id (a UUID)"))?;
    }
    let body = serde_json::json!({"state": state, "note": note, "ids": ids});
    let r = super::client::api_json(&api, reqwest::Method::POST, "/api/v1/alerts/triage", &body).await?;
    let (matched, changed) = (r["matched"].as_u64().unwrap_or(0), r["changed"].as_u64().unwrap_or(0));
    let word = if state == "new" { "reopened" } else { state };
    println!(
        "{word} {changed} alert(s){}",
        if matched > changed { format!(" ({} already were)", matched - changed) } else { String::new() }
    );
    let unknown: Vec<&str> = r["unknown"].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
    if !unknown.is_empty() {
        anyhow::bail!("not in the history (or another tenant's): {}", unknown.join(", "));
    }
    Ok(())
}

/// Runs an `alerts` command.
pub async fn run(command: AlertsCommand) -> anyhow::Result<()> {
    match command {
        AlertsCommand::Query { filter, limit, mut cursor, all, json, api } => loop {
            let mut pairs = filter.pairs();
            pairs.push(("limit", limit.to_string()));
            if let Some(c) = &cursor {
                pairs.push(("cursor", c.clone()));
            }
            let page = api_call(&api, reqwest::Method::GET, &with_query("/api/v1/alerts", &pairs), None).await?;
            for item in page["items"].as_array().into_iter().flatten() {
                if json {
                    println!("{}", item["alert"]);
                } else if let Ok(a) = serde_json::from_value::<Alert>(item["alert"].clone()) {
                    match item["triage"]["state"].as_str() {
                        Some(state) if state != "new" => println!("{} [{state}]", a.render_line()),
                        _ => println!("{}", a.render_line()),
                    }
                }
            }
            cursor = page["next_cursor"].as_str().map(str::to_string);
            match (&cursor, all) {
                (Some(_), true) => continue,
                (Some(c), false) => eprintln!("more: --cursor {c}"),
                (None, _) => {}
            }
            return Ok(());
        },
        AlertsCommand::Ack(args) => triage("acknowledged", args).await,
        AlertsCommand::Resolve(args) => triage("resolved", args).await,
        AlertsCommand::Reopen(args) => triage("new", args).await,
        AlertsCommand::Get { id, api } => {
            let a = api_call(&api, reqwest::Method::GET, &format!("/api/v1/alerts/{}", encode(&id)), None).await?;
            println!("{}", serde_json::to_string_pretty(&a["alert"])?);
            Ok(())
        }
        AlertsCommand::Export { format, filter, limit, out, api } => {
            let mut pairs = filter.pairs();
            pairs.push(("format", format));
            if let Some(l) = limit {
                pairs.push(("limit", l.to_string()));
            }
            let req = api.request(reqwest::Method::GET, &with_query("/api/v1/alerts/export", &pairs))?;
            let mut resp = send(&api, req).await?;
            let mut sink: Box<dyn Write> = match &out {
                Some(p) => Box::new(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?),
                None => Box::new(std::io::stdout().lock()),
            };
            while let Some(chunk) = resp.chunk().await.context("reading the export")? {
                sink.write_all(&chunk)?;
            }
            sink.flush()?;
            Ok(())
        }
    }
}

/// One server-sent event.
#[derive(Debug, Default, PartialEq)]
pub struct SseEvent {
    /// `id:`.
    pub id: Option<String>,
    /// `event:` (default `message`).
    pub event: String,
    /// `data:` lines joined by newlines.
    pub data: String,
}

/// Splits complete events off the front of `buf` (the rest waits for more bytes).
pub fn take_events(buf: &mut String) -> Vec<SseEvent> {
    let mut out = Vec::new();
    while let Some(end) = buf.find("\n\n") {
        let block: String = buf.drain(..end + 2).collect();
        let mut ev = SseEvent { event: "message".into(), ..SseEvent::default() };
        let mut data = Vec::new();
        for line in block.lines() {
            let (field, value) =
                line.split_once(':').map_or((line, ""), |(f, v)| (f, v.strip_prefix(' ').unwrap_or(v)));
            match field {
                "id" => ev.id = Some(value.to_string()),
                "event" => ev.event = value.to_string(),
                "data" => data.push(value),
                _ => {} // comments (keep-alives) and unknown fields
            }
        }
        ev.data = data.join("\n");
        if !ev.data.is_empty() {
            out.push(ev);
        }
    }
    out
}

/// `vedette tail`: prints the live stream, one line per alert; reconnects and resumes from the
/// last event id on its own.
pub async fn tail(filter: AlertFilter, after: Option<u64>, json: bool, api: ApiArgs) -> anyhow::Result<()> {
    let mut last: Option<String> = after.map(|a| a.to_string());
    let mut backoff = Duration::from_millis(500);
    loop {
        let path = with_query("/api/v1/alerts/stream", &filter.pairs());
        let mut req = api.request(reqwest::Method::GET, &path)?;
        if let Some(id) = &last {
            req = req.header("last-event-id", id.as_str());
        }
        match req.send().await {
            Ok(resp) if resp.status().is_success() => {
                backoff = Duration::from_millis(500);
                let mut resp = resp;
                let mut buf = String::new();
                while let Ok(Some(chunk)) = resp.chunk().await {
                    buf.push_str(&String::from_utf8_lossy(&chunk));
                    for ev in take_events(&mut buf) {
                        if ev.id.is_some() {
                            last.clone_from(&ev.id);
                        }
                        match ev.event.as_str() {
                            "alert" if json => println!("{}", ev.data),
                            "alert" => match serde_json::from_str::<Alert>(&ev.data) {
                                Ok(a) => println!("{}", a.render_line()),
                                Err(_) => println!("{}", ev.data),
                            },
                            "cutoff" => eprintln!("(stream cut off by the engine: {}; resuming)", ev.data),
                            _ => {}
                        }
                    }
                }
                eprintln!("(stream ended; reconnecting)");
            }
            Ok(resp) if resp.status().is_client_error() => {
                // A refusal (bad token, bad filter) will not fix itself.
                let status = resp.status();
                let body: serde_json::Value = resp.json().await.unwrap_or_default();
                anyhow::bail!("{}", body["error"].as_str().map_or_else(|| status.to_string(), str::to_string));
            }
            Ok(resp) => eprintln!("(engine answered {}; retrying)", resp.status()),
            Err(e) => eprintln!("(cannot reach {}: {e}; retrying)", api.api),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_split_at_blank_lines_and_keepalives_ignored() {
        let mut buf = ": keep-alive\n\nid: 7\nevent: alert\ndata: {\"a\":1}\n\nid: 8\nda".to_string();
        let evs = take_events(&mut buf);
        assert_eq!(evs, vec![SseEvent { id: Some("7".into()), event: "alert".into(), data: "{\"a\":1}".into() }]);
        assert_eq!(buf, "id: 8\nda");
        assert_eq!(
            with_query("/x", &[("since", "2026-12-01T00:00:00+01:00".into())]),
            "/x?since=2026-12-01T00%3A00%3A00%2B01%3A00"
        );
    }
}
