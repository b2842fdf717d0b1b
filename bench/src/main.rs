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
    }
}
