//! `vedette top`: a live view of a running engine, refreshed every interval — events per
//! second per table, rule evaluations and alerts per rule, late rows, and each sink's delivery
//! rate, backlog and breaker (what `vector top` shows for a Vector pipeline). Rates are the
//! difference of two readings of the engine's counters (`/metrics`, `GET /api/v1/rules`,
//! `GET /api/v1/sinks`) over the time between them.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use vedette_engine::api::SinkView;
use vedette_engine::ruleset::RulesStatus;

use super::client::{ApiArgs, api_call, send};
use super::table::Table;

/// `vedette top` arguments.
#[derive(clap::Args)]
pub struct TopArgs {
    /// Time between two readings (`1s`, `500ms`).
    #[arg(long, default_value = "2s", value_parser = parse_interval)]
    pub interval: Duration,
    /// Print one view (after one interval) and exit, for scripts and logs.
    #[arg(long)]
    pub once: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = vedette_config::duration::parse(s)?;
    if d < Duration::from_millis(100) {
        return Err("at least 100ms".into());
    }
    Ok(d)
}

/// `1.5s`, `42s`, `3m 20s`, `2h 05m`, `3d 04h`.
pub fn human_secs(secs: f64) -> String {
    let s = secs.max(0.0);
    if s < 10.0 {
        format!("{s:.1}s")
    } else if s < 60.0 {
        format!("{}s", s as u64)
    } else if s < 3600.0 {
        format!("{}m {:02}s", s as u64 / 60, s as u64 % 60)
    } else if s < 86_400.0 {
        format!("{}h {:02}m", s as u64 / 3600, s as u64 % 3600 / 60)
    } else {
        format!("{}d {:02}h", s as u64 / 86_400, s as u64 % 86_400 / 3600)
    }
}

/// One reading of the engine's counters.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Table → (rows accepted, rows rejected).
    pub tables: BTreeMap<String, (f64, f64)>,
    /// Connected sensor sessions.
    pub sensors: f64,
    /// The rules' counters.
    pub rules: RulesStatus,
    /// The sinks' state and counters.
    pub sinks: Vec<SinkView>,
}

/// The value of a label in a Prometheus sample's label set (`table="dns"` → `dns`).
fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    labels.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_matches('"'))
    })
}

/// Reads what `top` needs from Prometheus text: rows accepted and rejected per table, and
/// connected sensors.
pub fn parse_metrics(text: &str, into: &mut Sample) {
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        match name {
            "vedette_ingest_events_total" | "vedette_ingest_rows_rejected_total" => {
                let Some(table) = label(labels, "table") else { continue };
                let entry = into.tables.entry(table.to_string()).or_default();
                if name == "vedette_ingest_events_total" {
                    entry.0 = value;
                } else {
                    entry.1 = value;
                }
            }
            "vedette_ingest_sensors_connected" => into.sensors = value,
            _ => {}
        }
    }
}

fn rate(now: f64, before: f64, secs: f64) -> String {
    format!("{:.1}", ((now - before).max(0.0)) / secs.max(1e-3))
}

/// The view of two readings `secs` apart.
pub fn render(before: &Sample, now: &Sample, secs: f64) -> String {
    let mut out = Vec::new();
    out.push(format!("vedette top — every {} — {} sensors connected", human_secs(secs), now.sensors));
    out.push(String::new());
    let mut t = Table::new(&["TABLE", ">EVENTS/S", ">EVENTS", ">REJECTED/S", ">REJECTED"]);
    for (name, (events, rejected)) in &now.tables {
        let (e0, r0) = before.tables.get(name).copied().unwrap_or_default();
        t.row([
            name.clone(),
            rate(*events, e0, secs),
            format!("{events}"),
            rate(*rejected, r0, secs),
            format!("{rejected}"),
        ]);
    }
    out.push(t.render());
    out.push(String::new());
    let old: BTreeMap<&str, &vedette_engine::ruleset::RuleStatus> =
        before.rules.rules.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut rules: Vec<_> = now.rules.rules.iter().collect();
    // Busiest first: alerts per second, then evaluations.
    let alerts_rate = |r: &vedette_engine::ruleset::RuleStatus| {
        r.alerts.saturating_sub(old.get(r.id.as_str()).map_or(r.alerts, |o| o.alerts))
    };
    rules.sort_by(|a, b| {
        alerts_rate(b).cmp(&alerts_rate(a)).then(b.evaluations.cmp(&a.evaluations)).then(a.id.cmp(&b.id))
    });
    let mut t = Table::new(&["RULE", "STATE", ">EVALS/S", ">ALERTS/S", ">ALERTS", ">ERRORS", ">LATE_ROWS"]);
    for r in rules {
        let o = old.get(r.id.as_str());
        t.row([
            r.id.clone(),
            if r.enabled { "enabled".into() } else { "disabled".into() },
            rate(r.evaluations as f64, o.map_or(r.evaluations, |o| o.evaluations) as f64, secs),
            rate(r.alerts as f64, o.map_or(r.alerts, |o| o.alerts) as f64, secs),
            r.alerts.to_string(),
            r.errors.to_string(),
            r.late_rows.to_string(),
        ]);
    }
    out.push(t.render());
    out.push(String::new());
    let old: BTreeMap<&str, &SinkView> = before.sinks.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut t = Table::new(&["SINK", "STATE", "BREAKER", ">DELIVERED/S", ">SPOOLED", ">OLDEST", ">DLQ"]);
    for s in &now.sinks {
        let o = old.get(s.name.as_str()).map_or(s.delivered, |o| o.delivered);
        t.row([
            s.name.clone(),
            s.state_label(),
            s.breaker.clone(),
            rate(s.delivered as f64, o as f64, secs),
            s.spooled.to_string(),
            s.oldest_spooled_age_secs.map_or_else(|| "-".into(), human_secs),
            s.dead_letters.to_string(),
        ]);
        if let Some(r) = &s.reason {
            t.note(r.clone());
        }
    }
    out.push(t.render());
    out.join("\n")
}

async fn sample(api: &ApiArgs) -> anyhow::Result<Sample> {
    let mut s = Sample::default();
    let metrics = send(api, api.request(reqwest::Method::GET, "/metrics")?.timeout(Duration::from_secs(10))).await?;
    parse_metrics(&metrics.text().await?, &mut s);
    s.rules = serde_json::from_value(api_call(api, reqwest::Method::GET, "/api/v1/rules", None).await?)?;
    s.sinks = serde_json::from_value(api_call(api, reqwest::Method::GET, "/api/v1/sinks", None).await?)?;
    Ok(s)
}

/// Runs `vedette top` until interrupted (or one view with `--once`).
pub async fn run(args: TopArgs) -> anyhow::Result<()> {
    let terminal = std::io::stdout().is_terminal();
    let mut before = sample(&args.api).await?;
    let mut at = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(args.interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        let now = sample(&args.api).await?;
        let secs = at.elapsed().as_secs_f64();
        at = Instant::now();
        let view = render(&before, &now, secs);
        if terminal && !args.once {
            // Home and clear, then the view: a refreshing screen.
            println!("\x1b[H\x1b[2J{view}");
        } else {
            println!("{view}\n");
        }
        if args.once {
            return Ok(());
        }
        before = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_two_readings_of_the_counters() {
        let text = "# HELP x\nvedette_ingest_events_total{table=\"process_events\"} 100\n\
                    vedette_ingest_rows_rejected_total{table=\"process_events\"} 2\n\
                    vedette_ingest_sensors_connected 3\nvedette_other 9\n";
        let mut before = Sample::default();
        parse_metrics(text, &mut before);
        assert_eq!(before.tables["process_events"], (100.0, 2.0));
        assert_eq!(before.sensors, 3.0);
        let mut now = before.clone();
        parse_metrics(&text.replace(" 100", " 300").replace(" 2\n", " 6\n"), &mut now);
        let view = render(&before, &now, 2.0);
        assert!(view.contains("3 sensors connected"), "{view}");
        let line = view.lines().find(|l| l.starts_with("process_events")).unwrap();
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells, ["process_events", "100.0", "300", "2.0", "6"], "{view}");
    }

    #[test]
    fn durations_read_like_a_person_would_say_them() {
        assert_eq!(human_secs(1.25), "1.2s");
        assert_eq!(human_secs(42.0), "42s");
        assert_eq!(human_secs(200.0), "3m 20s");
        assert_eq!(human_secs(7500.0), "2h 05m");
        assert_eq!(human_secs(3.0 * 86_400.0 + 4.0 * 3600.0), "3d 04h");
    }
}
