//! `vedette-bench`: drives a real in-process engine over QUIC with the reference sensor and
//! prints throughput. Run with `cargo run --release -p vedette-bench -- spine`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use serde_json::json;
use tokio::sync::mpsc;
use vedette_config::Config;
use vedette_engine::EngineHandle;
use vedette_engine::pki;
use vedette_engine::sensor::{self, Event, SensorConfig, SensorStats};

#[derive(Parser)]
#[command(about = "vedette benchmarks (print figures; not timed tests)")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Demo path: one reference sensor → QUIC → built-in stateless rules → file sink.
    Spine {
        /// Events to send.
        #[arg(long, default_value_t = 500_000)]
        events: u64,
        /// One event in this many matches a rule.
        #[arg(long, default_value_t = 1000)]
        match_every: u64,
        /// Rows per batch handed to the rules.
        #[arg(long, default_value_t = 8192)]
        batch_rows: usize,
    },
    /// Rule evaluation alone: N stateless rules (two LIKEs each) over process_events batches,
    /// continuous (plan once, per batch) against the same SQL as one batch query per rule.
    Rules {
        /// Number of rules.
        #[arg(long, default_value_t = 100)]
        rules: usize,
        /// Events.
        #[arg(long, default_value_t = 262_144)]
        events: usize,
        /// Rows per batch.
        #[arg(long, default_value_t = 8192)]
        batch_rows: usize,
    },
}

fn event(n: u64, match_every: u64) -> Event {
    let (exe, cmd) = if n.is_multiple_of(match_every) {
        ("/usr/bin/cat", format!("cat /etc/shadow #{n}"))
    } else {
        ("/usr/bin/python3", format!("python3 /opt/app/worker.py --job {n} --queue default"))
    };
    Event {
        table: "process_events".into(),
        row: json!({"ts": 1_700_000_000_000_000u64 + n, "event_type": "start", "pid": n % 65_536, "ppid": 1,
                    "uid": 1000, "user": "app", "exe": exe, "cmdline": cmd, "cwd": "/opt/app",
                    "parent_exe": "/usr/bin/bash", "parent_cmdline": "bash"}),
    }
}

async fn spine(events: u64, match_every: u64, batch_rows: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let text = format!(
        "data_dir = \"{}\"\n[ingest]\nlisten = \"127.0.0.1:0\"\n[api]\nlisten = \"127.0.0.1:0\"\n[pipeline]\nbatch_rows = {batch_rows}\nbatch_linger = \"50ms\"\n[log]\nlevel = \"warn\"\n[[sinks]]\nname = \"file\"\ntype = \"file\"\npath = \"alerts.jsonl\"\n",
        dir.path().display()
    );
    let engine = EngineHandle::start(Config::from_toml_str(&text)?).await?;
    let paths = pki::PkiPaths::new(dir.path());
    let (cert, key) = paths.sensor(pki::DEMO_SENSOR_ID);
    let cfg = SensorConfig {
        server: engine.ingest_addr,
        server_name: "localhost".into(),
        ca: paths.ca_cert,
        cert,
        key,
        host: "bench".into(),
        linger: Duration::from_millis(20),
    };
    let (tx, rx) = mpsc::channel(65_536);
    let stats = Arc::new(SensorStats::default());
    let started = Instant::now();
    let producer = tokio::spawn(async move {
        for n in 0..events {
            if tx.send(event(n, match_every)).await.is_err() {
                break;
            }
        }
    });
    sensor::run(cfg, rx, Arc::clone(&stats)).await?;
    producer.await?;
    let took = started.elapsed();
    let alerts = std::fs::read_to_string(dir.path().join("alerts.jsonl"))?.lines().count();
    let m = engine.metrics();
    let ingested = m.ingest_events.with_label_values(&["process_events"]).get();
    let rules =
        vedette_pipelines::rule::Pack::builtin().rules.iter().filter(|r| r.sql.contains("process_events")).count();
    println!("spine: {events} events, {ingested} ingested, {alerts} alerts in {:.2}s", took.as_secs_f64());
    println!(
        "spine: {:.0} events/s end to end (sensor JSON encode + QUIC + decode + {rules} process rules + file sink + acks)",
        events as f64 / took.as_secs_f64()
    );
    println!(
        "spine: frames sent {}, ACK messages {}, peak RSS {} (engine + sensor, one process)",
        stats.frames_sent.load(std::sync::atomic::Ordering::Relaxed),
        stats.frames_acked.load(std::sync::atomic::Ordering::Relaxed),
        peak_rss()
    );
    engine.shutdown().await;
    anyhow::ensure!(ingested == events, "lost events: {ingested} of {events}");
    anyhow::ensure!(alerts as u64 == events.div_ceil(match_every), "unexpected alert count {alerts}");
    Ok(())
}

fn rule_sql(i: usize) -> String {
    // Typical Sigma-like shape: a suffix test on exe and a substring test on cmdline.
    format!("SELECT exe, cmdline FROM process_events WHERE exe LIKE '%/tool{i}' AND cmdline LIKE '%--flag-{i}%'")
}

async fn rules_bench(n_rules: usize, events: usize, batch_rows: usize) -> anyhow::Result<()> {
    use std::sync::Arc as A;
    use vedette_pipelines::compile::{Compiler, TableRules};
    use vedette_pipelines::rule::{Pack, RuleDef, Severity};
    use vedette_schemas::decode::{Identity, decode_frame};
    use vedette_schemas::frame::{DataFrame, Encoding};
    use vedette_schemas::tables::Catalog;

    let catalog = A::new(Catalog::builtin());
    let compiler = Compiler::new(A::clone(&catalog))?;
    let rules: Vec<RuleDef> = (0..n_rules)
        .map(|i| RuleDef {
            id: format!("r{i}"),
            name: format!("r{i}"),
            version: None,
            severity: Severity::Low,
            description: String::new(),
            tags: vec![],
            sql: rule_sql(i),
            dedup_key: vec![],
            suppress: None,
            lateness: None,
            enabled: true,
        })
        .collect();
    let pack = Pack { name: "bench".into(), version: 1, description: String::new(), author: String::new(), rules };
    let plan_started = Instant::now();
    let mut by_table = compiler.compile_pack(&pack).await?;
    let planning = plan_started.elapsed();
    let table = TableRules::new(&compiler, "process_events", by_table.remove("process_events").unwrap_or_default());
    // Events: one in 1,000 matches rule (n mod rules).
    let id = Identity { sensor_id: "bench", tenant: "t", default_host: None, trust_rows: false };
    let def = catalog.get("process_events")?;
    let mut batches = Vec::new();
    for (k, start) in (0..events).step_by(batch_rows).enumerate() {
        let mut payload = String::new();
        for n in start..(start + batch_rows).min(events) {
            let i = n % n_rules;
            let (exe, cmd) = if n % 1000 == 0 {
                (format!("/usr/bin/tool{i}"), format!("tool{i} --flag-{i} x"))
            } else {
                ("/usr/bin/python3".to_string(), format!("python3 worker.py --job {n}"))
            };
            payload.push_str(&format!("{{\"ts\":{n},\"exe\":\"{exe}\",\"cmdline\":\"{cmd}\"}}\n"));
        }
        let frame = DataFrame {
            seq: k as u64 + 1,
            table: "process_events",
            encoding: Encoding::Ndjson,
            payload: payload.as_bytes(),
        };
        batches.extend(decode_frame(def, &frame, &id, usize::MAX)?.batch);
    }
    let now = chrono::Utc::now();
    let started = Instant::now();
    let mut continuous_alerts = 0;
    for b in &batches {
        let eval = table.evaluate(b, now).await;
        anyhow::ensure!(eval.errors.is_empty(), "{:?}", eval.errors);
        continuous_alerts += eval.alerts.len();
    }
    let continuous = started.elapsed();

    // Peer bound: the same SQL as one batch query per rule over all events.
    let ctx = datafusion_ctx(&batches)?;
    let started = Instant::now();
    let mut batch_rows_out = 0;
    for i in 0..n_rules {
        for b in ctx.sql(&rule_sql(i)).await?.collect().await? {
            batch_rows_out += b.num_rows();
        }
    }
    let batch = started.elapsed();
    anyhow::ensure!(continuous_alerts == batch_rows_out, "continuous {continuous_alerts} != batch {batch_rows_out}");
    let rate = |d: Duration| events as f64 / d.as_secs_f64();
    println!(
        "rules: {n_rules} stateless rules, {events} events in {} batches of {batch_rows}, planning {:.1} ms",
        batches.len(),
        planning.as_secs_f64() * 1e3
    );
    println!(
        "rules: continuous {:.0} events/s ({:.1} µs per rule-batch), {continuous_alerts} alerts",
        rate(continuous),
        continuous.as_secs_f64() * 1e6 / (n_rules * batches.len()) as f64
    );
    println!(
        "rules: one batch query per rule {:.0} events/s; continuous/batch ratio {:.2}",
        rate(batch),
        batch.as_secs_f64() / continuous.as_secs_f64()
    );
    Ok(())
}

fn datafusion_ctx(batches: &[arrow::array::RecordBatch]) -> anyhow::Result<datafusion::prelude::SessionContext> {
    use datafusion::prelude::{SessionConfig, SessionContext};
    let schema = batches.first().map(|b| b.schema()).ok_or_else(|| anyhow::anyhow!("no events"))?;
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
    let table = datafusion::datasource::MemTable::try_new(schema, vec![batches.to_vec()])?;
    ctx.register_table("process_events", std::sync::Arc::new(table))?;
    Ok(ctx)
}

/// Peak resident set size of this process (`VmHWM`).
fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(|l| l["VmHWM:".len()..].trim().to_string()))
        .unwrap_or_else(|| "unknown".into())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Spine { events, match_every, batch_rows } => spine(events, match_every, batch_rows).await,
        Cmd::Rules { rules, events, batch_rows } => rules_bench(rules, events, batch_rows).await,
    }
}
