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

/// mimalloc instead of glibc's malloc: the engine allocates per frame and per batch on many
/// threads, and glibc's malloc/free took ~18 % of its time at full load (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod broker;
mod chart;
mod dedup;
mod fleet;
mod history;
mod load;
mod mix;

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
        /// Tasks evaluating one batch's rules at once (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
        /// A pack file to run instead of the synthetic rules (its `process_events` rules), e.g.
        /// `bench/packs/sigma-linux.yaml`; suspicious commands are then the events that match.
        #[arg(long)]
        pack: Option<std::path::PathBuf>,
        /// Only the continuous run with the shared filter (no comparison runs, no batch peer):
        /// for profiling.
        #[arg(long)]
        no_peers: bool,
        /// One event in this many is a suspicious command (or, without a pack, matches a
        /// rule).
        #[arg(long, default_value_t = 1000)]
        suspicious_every: usize,
    },
    /// Reference tables: one IN (SELECT …) rule and one JOIN rule against an IOC list of
    /// N hashes; prints events/s.
    Reference {
        /// Rows of the IOC list.
        #[arg(long, default_value_t = 100_000)]
        rows: usize,
        /// Events.
        #[arg(long, default_value_t = 262_144)]
        events: usize,
    },
    /// The dedup ledger at scale: N ids, then alert batches committed through it (one
    /// transaction per batch with a sink's spool, as the engine does): alerts/s, RSS, disk.
    Dedup {
        /// Ids in the ledger before measuring.
        #[arg(long, default_value_t = 10_000_000)]
        entries: u64,
        /// Alerts committed while measuring.
        #[arg(long, default_value_t = 200_000)]
        alerts: usize,
        /// Alerts per commit (one rule batch's worth).
        #[arg(long, default_value_t = 100)]
        per_commit: usize,
        /// One alert in this many repeats an id already in the ledger (0: none).
        #[arg(long, default_value_t = 2)]
        repeat_every: usize,
    },
    /// Sink spools: append and drain throughput of a sled spool, then a delivery loop
    /// draining a backlog into a file sink (the drain after an outage).
    Spool {
        /// Alerts.
        #[arg(long, default_value_t = 200_000)]
        alerts: usize,
        /// Alerts per append (one rule batch's worth).
        #[arg(long, default_value_t = 100)]
        per_append: usize,
    },
    /// Kafka sink against librdkafka's MockCluster: steady alerts at `rate`/s, the broker down
    /// for `outage` seconds, then the drain: throughput, drain/live ratio, RSS during the outage.
    Kafka {
        /// Live alert rate (alerts/s).
        #[arg(long, default_value_t = 2000)]
        rate: u64,
        /// Outage length, seconds.
        #[arg(long, default_value_t = 20)]
        outage: u64,
    },
    /// The alert history: write rate, filtered pages over HTTP on N stored alerts (p50/p99),
    /// and the RSS cost of live-stream clients.
    History {
        /// Alerts to store (10 million by default; ~10 GB of disk).
        #[arg(long, default_value_t = 10_000_000)]
        alerts: u64,
        /// Keep the filled data dir here (reused by the next run) instead of a temp dir.
        #[arg(long)]
        data_dir: Option<std::path::PathBuf>,
        /// Filtered pages to time.
        #[arg(long, default_value_t = 1000)]
        queries: usize,
        /// Live-stream clients.
        #[arg(long, default_value_t = 100)]
        clients: usize,
    },
    /// N sensors (10,000 by default) connected at once, heartbeats only, to an engine in its
    /// own process: handshake rate, engine RSS and heartbeat CPU, and revocation of one of them.
    #[command(name = "scale", alias = "fleet")]
    Fleet {
        /// Sensors.
        #[arg(long, default_value_t = 10_000)]
        sensors: usize,
        /// Handshakes in flight at once.
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        /// Seconds of heartbeats-only load measured.
        #[arg(long, default_value_t = 30)]
        idle: u64,
        /// Write the results as JSON here.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// The engine process of `fleet` (started by it).
    #[command(hide = true)]
    FleetEngine {
        #[arg(long)]
        data_dir: std::path::PathBuf,
        #[arg(long)]
        ingest: std::net::SocketAddr,
        #[arg(long)]
        api: std::net::SocketAddr,
    },
    /// End to end at full speed: a real engine in its own process (the standard Sigma pack +
    /// 10 tumbling-window rules, a file sink), N sensors over QUIC replaying pre-encoded
    /// frames as fast as it acknowledges them; events/s, alerts/s, event → alert latency,
    /// engine CPU and RSS, and the peers (raw QUIC, decoding, DataFusion batch) in the same run.
    Throughput {
        #[command(flatten)]
        load: LoadArgs,
    },
    /// End to end at a fixed offered rate (e.g. half of `throughput`'s): the latency figures.
    Latency {
        #[command(flatten)]
        load: LoadArgs,
        /// Events per second offered, all sensors together.
        #[arg(long)]
        rate: u64,
    },
    /// A long run (10 minutes by default) at full speed or at `--rate`: the engine's RSS over
    /// time (first and last measured minute) as well as the throughput figures.
    Soak {
        #[command(flatten)]
        load: LoadArgs,
        /// Events per second offered (default: as fast as the engine acknowledges).
        #[arg(long)]
        rate: Option<u64>,
    },
    /// Kafka down in the middle of a run: a Kafka sink (beside the file sink) on a real
    /// Kafka-protocol broker (tansu) that is stopped (SIGSTOP) for `--outage`: ingest before,
    /// during and after, the Kafka spool's growth and drain, and every alert of the file sink
    /// read back from the broker at the end (the run fails if one is missing).
    Outage {
        #[command(flatten)]
        load: LoadArgs,
        /// Events per second offered, all sensors together.
        #[arg(long, default_value_t = 200_000)]
        rate: u64,
        /// How long the broker is stopped.
        #[arg(long, default_value = "20s", value_parser = vedette_config::duration::parse)]
        outage: Duration,
        /// When it stops, counted from the end of the warm-up.
        #[arg(long, default_value = "10s", value_parser = vedette_config::duration::parse)]
        outage_at: Duration,
    },
    /// The engine process of `throughput` / `latency` (started by them).
    #[command(hide = true)]
    Engine {
        #[arg(long)]
        config: std::path::PathBuf,
    },
    /// Windowed rules alone: 10 rules (windows, GROUP BY keys, HAVING) over auth_events in
    /// event-time order; prints events/s and window state per open key.
    Windows {
        /// Window kind: tumble (sizes 1–10 min), hop (30 s slide, sizes 1–10 min) or session
        /// (gaps 1–10 s).
        #[arg(long, value_enum, default_value_t = WindowKindArg::Tumble)]
        kind: WindowKindArg,
        /// Events.
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
        /// Distinct users (keys per window grow with it).
        #[arg(long, default_value_t = 1000)]
        users: usize,
        /// Rows per batch.
        #[arg(long, default_value_t = 8192)]
        batch_rows: usize,
    },
}

/// Options of the end-to-end modes.
#[derive(clap::Args)]
struct LoadArgs {
    /// Measured time, after the warm-up (`30s`, `2m`); default 30 s (`soak`: 10 min, `outage`:
    /// 60 s).
    #[arg(long, value_parser = vedette_config::duration::parse)]
    duration: Option<Duration>,
    /// Warm-up before measuring.
    #[arg(long, default_value = "5s", value_parser = vedette_config::duration::parse)]
    warmup: Duration,
    /// Simulated sensors, each with its own certificate and connection.
    #[arg(long, default_value_t = 1000)]
    sensors: usize,
    /// Frame encoding.
    #[arg(long, value_enum, default_value_t = EncodingArg::Ndjson)]
    encoding: EncodingArg,
    /// Pack under test (default: bench/packs/sigma-linux.yaml).
    #[arg(long)]
    pack: Option<std::path::PathBuf>,
    /// One process event in this many is a suspicious command.
    #[arg(long, default_value_t = 1000)]
    suspicious_every: usize,
    /// Events per frame.
    #[arg(long, default_value_t = 200)]
    frame_rows: usize,
    /// Frames a sensor keeps unacknowledged at most.
    #[arg(long, default_value_t = 8)]
    window_frames: u64,
    /// Write the results (and one sample per second) as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Skip the peers (raw QUIC, decoding, DataFusion batch).
    #[arg(long)]
    no_peers: bool,
    /// The file sink's `batch.linger` (longest wait for a batch of alerts to fill).
    #[arg(long, default_value = "200ms", value_parser = vedette_config::duration::parse)]
    sink_linger: Duration,
    /// Extra lines for the engine's TOML config, e.g.
    /// `--engine-config 'pipeline.batch_linger = "10ms"'` (top-level dotted keys).
    #[arg(long)]
    engine_config: Vec<String>,
    /// Tumbling-window rules on `auth_events` beside the pack (0–10; keys up to host × user).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(0..=10))]
    windows: u16,
    /// Add a Kafka sink on a tansu broker started by the bench (installed by the README's test
    /// command; `VEDETTE_TANSU` or `tansu` on PATH otherwise).
    #[arg(long)]
    kafka: bool,
    /// Drive an engine already running at this QUIC address instead of starting one (needs
    /// `--engine-dir`).
    #[arg(long, requires = "engine_dir")]
    engine: Option<std::net::SocketAddr>,
    /// That engine's data dir (or a copy of its `pki/`): its CA issues the bench's sensor
    /// certificates; its `alerts.jsonl` (a file sink), if any, is tailed for alerts and latency.
    #[arg(long, requires = "engine")]
    engine_dir: Option<std::path::PathBuf>,
    /// That engine's API address (sink spools in the report).
    #[arg(long, requires = "engine")]
    engine_api: Option<std::net::SocketAddr>,
    /// That engine's process id on this machine (its CPU and RSS in the report).
    #[arg(long, requires = "engine")]
    engine_pid: Option<u32>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum EncodingArg {
    Ndjson,
    Arrow,
}

impl LoadArgs {
    fn into_load(self, mode: &'static str, rate: Option<u64>, default_duration: Duration) -> load::Load {
        let remote = match (self.engine, self.engine_dir) {
            (Some(ingest), Some(dir)) => Some(load::Remote { ingest, dir, api: self.engine_api, pid: self.engine_pid }),
            _ => None,
        };
        load::Load {
            duration: self.duration.unwrap_or(default_duration),
            warmup: self.warmup,
            sensors: self.sensors.max(1),
            encoding: match self.encoding {
                EncodingArg::Ndjson => vedette_schemas::frame::Encoding::Ndjson,
                EncodingArg::Arrow => vedette_schemas::frame::Encoding::Arrow,
            },
            pack: self.pack,
            suspicious_every: self.suspicious_every.max(2),
            frame_rows: self.frame_rows.max(1),
            rate,
            window_frames: self.window_frames.max(1),
            json: self.json,
            peers: !self.no_peers,
            engine_config: self.engine_config,
            sink_linger: self.sink_linger,
            mode,
            kafka: self.kafka,
            outage: None,
            remote,
            windows: usize::from(self.windows),
        }
    }
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
        linger: Duration::from_millis(20),
        ..SensorConfig::new(engine.ingest_addr, paths.ca_cert, cert, key, "bench")
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
    // Acknowledged means spooled; delivery to the file follows (not part of the timing).
    let took = started.elapsed();
    anyhow::ensure!(engine.wait_delivered(Duration::from_secs(30)).await, "sink did not deliver");
    let alerts = std::fs::read_to_string(dir.path().join("alerts.jsonl"))?.lines().count();
    let m = engine.metrics();
    let ingested = m.ingest_events.with_label_values(&["process_events"]).get();
    let rules =
        vedette_pipelines::rule::Pack::builtin().rules.iter().filter(|r| r.sql.contains("process_events")).count();
    println!("spine: {events} events, {ingested} ingested, {alerts} alerts in {:.2}s", took.as_secs_f64());
    println!(
        "spine: {:.0} events/s end to end (sensor JSON encode + QUIC + decode + {rules} process rules + spool + acks)",
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

fn decode_batches(
    table: &str,
    rows: impl Iterator<Item = String>,
    batch_rows: usize,
) -> anyhow::Result<Vec<arrow::array::RecordBatch>> {
    use vedette_schemas::decode::{Identity, decode_frame};
    use vedette_schemas::frame::{DataFrame, Encoding};
    let catalog = vedette_schemas::tables::Catalog::builtin();
    let def = catalog.get(table)?;
    let id = Identity { sensor_id: "bench", tenant: "t", default_host: None, trust_rows: true };
    let rows: Vec<String> = rows.collect();
    let mut batches = Vec::new();
    for (k, chunk) in rows.chunks(batch_rows).enumerate() {
        let payload: String = chunk.iter().map(|r| format!("{r}\n")).collect();
        let frame = DataFrame { seq: k as u64 + 1, table, encoding: Encoding::Ndjson, payload: payload.as_bytes() };
        let d = decode_frame(def, &frame, &id, usize::MAX)?;
        anyhow::ensure!(d.rejected == 0, "bench rows rejected: {:?}", d.errors.first());
        batches.extend(d.batch);
    }
    Ok(batches)
}

async fn rules_bench(
    n_rules: usize,
    events: usize,
    batch_rows: usize,
    threads: Option<usize>,
    pack_file: Option<std::path::PathBuf>,
    no_peers: bool,
    every: usize,
) -> anyhow::Result<()> {
    use std::sync::Arc as A;
    use vedette_pipelines::compile::{Compiler, TableRules};
    use vedette_pipelines::rule::Pack;
    use vedette_schemas::tables::Catalog;

    let catalog = A::new(Catalog::builtin());
    let compiler = Compiler::new(A::clone(&catalog))?;
    let pack = match &pack_file {
        Some(path) => Pack::from_yaml(&path.display().to_string(), &std::fs::read_to_string(path)?)?,
        None => {
            let rules =
                (0..n_rules).map(|i| vedette_pipelines::rule::RuleDef::new(format!("r{i}"), rule_sql(i))).collect();
            Pack { name: "bench".into(), version: 1, description: String::new(), author: String::new(), rules }
        }
    };
    let plan_started = Instant::now();
    let mut by_table = compiler.compile_pack(&pack).await?;
    let planning = plan_started.elapsed();
    let compiled = by_table.remove("process_events").unwrap_or_default();
    let sqls: Vec<String> = compiled
        .iter()
        .map(|r| pack.rules.iter().find(|d| d.id == r.meta.id).map(|d| d.sql.clone()).unwrap_or_default())
        .collect();
    let n_rules = compiled.len();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let threads = threads.unwrap_or(cores);
    // Events: varied process starts (20 programs, arguments with paths and numbers) that no
    // rule of the standard pack flags; one in 1,000 matches rule (n mod rules), or for a pack
    // is a suspicious command.
    use mix::{PROGRAMS, SUSPICIOUS};
    let real = pack_file.is_some();
    let rows = (0..events).map(|n| {
        let i = n % n_rules.max(1);
        let (exe, cmd) = if n % every == 0 && real {
            let (exe, cmd) = SUSPICIOUS[(n / every) % SUSPICIOUS.len()];
            (exe.to_string(), cmd.to_string())
        } else if n % every == 0 {
            (format!("/usr/bin/tool{i}"), format!("tool{i} --flag-{i} x"))
        } else {
            let (exe, cmd) = PROGRAMS[n % PROGRAMS.len()];
            (exe.to_string(), cmd.replace("{n}", &n.to_string()))
        };
        json!({"ts": n, "event_type": "start", "exe": exe, "cmdline": cmd, "user": "app", "pid": n,
               "parent_exe": "/usr/bin/bash", "parent_cmdline": "bash", "cwd": "/home/app"})
        .to_string()
    });
    let batches = decode_batches("process_events", rows, batch_rows)?;
    let now = chrono::Utc::now();
    let mut results = Vec::new();
    let mut by_rule: std::collections::BTreeMap<String, usize> = Default::default();
    let modes = [
        ("continuous, shared filter", true, threads),
        ("continuous, shared filter", true, 1),
        ("continuous, no shared filter", false, threads),
        ("continuous, no shared filter", false, 1),
    ];
    for (label, prefilter, t) in modes.into_iter().take(if no_peers { 1 } else { 4 }) {
        let table = TableRules::new(&compiler, "process_events", compiled.clone())
            .with_prefilter(prefilter)
            .with_parallelism(t);
        let started = Instant::now();
        let mut alerts = 0;
        for b in &batches {
            let eval = table.evaluate(b, now).await;
            anyhow::ensure!(eval.errors.is_empty(), "{:?}", eval.errors);
            alerts += eval.alerts.len();
            if results.is_empty() {
                for a in &eval.alerts {
                    *by_rule.entry(a.rule_id.clone()).or_default() += 1;
                }
            }
        }
        results.push((format!("{label}, {t} task(s)"), started.elapsed(), alerts));
    }

    // Peer bound: the same SQL as one batch query per rule over all events.
    let ctx = datafusion_ctx(&batches)?;
    let started = Instant::now();
    let mut batch_rows_out = 0;
    for sql in sqls.iter().filter(|_| !no_peers) {
        for b in ctx.sql(sql).await?.collect().await? {
            batch_rows_out += b.num_rows();
        }
    }
    let batch = started.elapsed();
    let rate = |d: Duration| events as f64 / d.as_secs_f64();
    println!(
        "rules: {n_rules} stateless rules, {events} events in {} batches of {batch_rows}, planning {:.1} ms, {cores} cores",
        batches.len(),
        planning.as_secs_f64() * 1e3
    );
    let mut busiest: Vec<_> = by_rule.into_iter().collect();
    busiest.sort_by_key(|b| std::cmp::Reverse(b.1));
    let busiest: Vec<String> = busiest.iter().take(5).map(|(r, n)| format!("{r} {n}")).collect();
    println!("rules: busiest rules: {}", busiest.join(", "));
    for (label, took, alerts) in &results {
        anyhow::ensure!(no_peers || *alerts == batch_rows_out, "{label}: {alerts} alerts != batch {batch_rows_out}");
        println!(
            "rules: {label}: {:.0} events/s ({:.1} µs per rule-batch), {alerts} alerts, continuous/batch ratio {:.2}",
            rate(*took),
            took.as_secs_f64() * 1e6 / (n_rules * batches.len()) as f64,
            batch.as_secs_f64() / took.as_secs_f64()
        );
    }
    if !no_peers {
        println!("rules: one DataFusion batch query per rule over all events: {:.0} events/s", rate(batch));
    }
    Ok(())
}

async fn reference_bench(rows: usize, events: usize) -> anyhow::Result<()> {
    use std::sync::Arc as A;
    use vedette_pipelines::compile::{Compiler, TableRules};
    use vedette_pipelines::reference::{Format, RefTables, parse};
    use vedette_pipelines::rule::{Pack, RuleDef};
    use vedette_schemas::tables::{Catalog, ColumnType};

    let refs = A::new(RefTables::new(&[(
        "ioc".to_string(),
        vec![("sha256".to_string(), ColumnType::String), ("family".to_string(), ColumnType::String)],
    )]));
    let csv: String = std::iter::once("sha256,family\n".to_string())
        .chain((0..rows).map(|i| format!("{:064x},fam{}\n", i * 7919, i % 50)))
        .collect();
    refs.replace("ioc", parse("ioc", refs.schema("ioc")?, Format::Csv, csv.as_bytes(), usize::MAX)?)?;
    let compiler = Compiler::with_references(A::new(Catalog::builtin()), A::clone(&refs))?;
    let run = async |sql: &str| -> anyhow::Result<(f64, usize)> {
        let pack = Pack {
            name: "bench".into(),
            version: 1,
            description: String::new(),
            author: String::new(),
            rules: vec![RuleDef::new("r", sql)],
        };
        let mut by_table = compiler.compile_pack(&pack).await?;
        let table = TableRules::new(&compiler, "process_events", by_table.remove("process_events").unwrap_or_default());
        // One event in 1,000 carries a listed hash.
        let ev = (0..events).map(|n| {
            let sha = if n % 1000 == 0 { format!("{:064x}", (n % rows) * 7919) } else { format!("{n:064x}f") };
            json!({"ts": n, "exe": "/usr/bin/x", "sha256": sha, "pid": n}).to_string()
        });
        let batches = decode_batches("process_events", ev, 8192)?;
        let started = Instant::now();
        let mut alerts = 0;
        for b in &batches {
            let eval = table.evaluate(b, chrono::Utc::now()).await;
            anyhow::ensure!(eval.errors.is_empty(), "{:?}", eval.errors);
            alerts += eval.alerts.len();
        }
        Ok((events as f64 / started.elapsed().as_secs_f64(), alerts))
    };
    for (label, sql) in [
        ("IN (SELECT …)", "SELECT exe FROM process_events WHERE sha256 IN (SELECT sha256 FROM ioc)"),
        ("JOIN", "SELECT p.exe, i.family FROM process_events p JOIN ioc i ON p.sha256 = i.sha256"),
    ] {
        let (rate, alerts) = run(sql).await?;
        println!("reference: {label} against {rows} IOC rows: {rate:.0} events/s, {alerts} alerts");
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum WindowKindArg {
    Tumble,
    Hop,
    Session,
}

/// 10 windowed rules (windows of 1–10 minutes, or session gaps of 1–10 seconds; keys of
/// growing cardinality).
fn window_rules(kind: WindowKindArg) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, (keys, size, having)) in [
        ("host, user", "1 minute", "count(*) >= 5"),
        ("user", "1 minute", "count(DISTINCT src_ip) >= 3"),
        ("src_ip", "1 minute", "count(DISTINCT user) >= 10"),
        ("host", "5 minutes", "count(*) >= 1000"),
        ("host, user", "10 minutes", "count(*) >= 50"),
        ("src_ip, user", "1 minute", "count(*) >= 20"),
        ("host, service", "1 minute", "count(*) >= 500"),
        ("user", "5 minutes", "count(DISTINCT host) >= 5"),
        ("src_ip", "10 minutes", "count(*) >= 200"),
        ("host, src_ip", "2 minutes", "min(ts) < max(ts) AND count(*) >= 30"),
    ]
    .into_iter()
    .enumerate()
    {
        let window = match kind {
            WindowKindArg::Tumble => format!("tumble(ts, INTERVAL '{size}')"),
            WindowKindArg::Hop => format!("hop(ts, INTERVAL '30 seconds', INTERVAL '{size}')"),
            // "1 minute" → a 1 second gap, "10 minutes" → 10 seconds.
            WindowKindArg::Session => format!("session(ts, INTERVAL '{}')", size.replace("minute", "second")),
        };
        out.push((
            format!("w{i}"),
            format!(
                "SELECT {keys}, count(*) AS n FROM auth_events WHERE outcome = 'failure' \
                 GROUP BY {window}, {keys} HAVING {having}"
            ),
        ));
    }
    out
}

async fn windows_bench(kind: WindowKindArg, events: usize, users: usize, batch_rows: usize) -> anyhow::Result<()> {
    use std::sync::Arc as A;
    use vedette_pipelines::compile::{Compiler, TableRules};
    use vedette_pipelines::rule::Pack;
    use vedette_pipelines::window::checkpoint::WindowWrite;
    use vedette_schemas::tables::Catalog;

    let compiler = Compiler::new(A::new(Catalog::builtin()))?;
    let rules =
        window_rules(kind).into_iter().map(|(id, sql)| vedette_pipelines::rule::RuleDef::new(id, sql)).collect();
    let pack = Pack { name: "bench".into(), version: 1, description: String::new(), author: String::new(), rules };
    let mut by_table = compiler.compile_pack(&pack).await?;
    // Synthetic event times from 2023: no clock-skew bound.
    let table = TableRules::new(&compiler, "auth_events", by_table.remove("auth_events").unwrap_or_default())
        .with_clock_skew(None, None);
    // 10,000 events per second of event time, 20 hosts, `users` users, 500 source addresses.
    let rows = (0..events).map(|n| {
        let ts = 1_700_000_000_000_000u64 + n as u64 * 100;
        json!({"ts": ts, "host": format!("h{}", n % 20), "user": format!("u{}", (n * 7) % users),
               "src_ip": format!("10.0.{}.{}", (n / 7) % 2, n % 250), "service": "ssh",
               "outcome": if n % 3 == 0 { "success" } else { "failure" }})
        .to_string()
    });
    let batches = decode_batches("auth_events", rows, batch_rows)?;
    let now = chrono::Utc::now();
    let started = Instant::now();
    let mut alerts = 0;
    let (mut peak_keys, mut peak_bytes, mut written) = (0usize, 0usize, 0usize);
    for b in &batches {
        let mut eval = table.evaluate(b, now).await;
        anyhow::ensure!(eval.errors.is_empty(), "{:?}", eval.errors);
        alerts += eval.alerts.len();
        let bytes: usize = eval.window_updates.iter().map(|(_, s)| s.state_bytes()).sum();
        // The checkpoint writes the engine puts into each batch's transaction.
        let writes = table.checkpoint_updates(&mut eval.window_updates)?;
        written +=
            writes.iter().map(|w| if let WindowWrite::Put(k, v) = w { k.len() + v.len() } else { 0 }).sum::<usize>();
        table.commit(eval.window_updates);
        let keys: usize = table.open_windows().iter().map(|(_, n)| n).sum();
        if keys > peak_keys {
            (peak_keys, peak_bytes) = (keys, bytes);
        }
    }
    let took = started.elapsed();
    let flushed = table.tick(now, true).await;
    alerts += flushed.alerts.len();
    println!(
        "windows: 10 {kind:?} rules, {events} events ({} batches of {batch_rows}, {users} users): {:.0} events/s, {alerts} alerts",
        batches.len(),
        events as f64 / took.as_secs_f64()
    );
    println!(
        "windows: peak open window keys (all rules) {peak_keys}, accumulator state {:.1} MiB = {:.0} bytes per open key",
        peak_bytes as f64 / (1 << 20) as f64,
        peak_bytes as f64 / peak_keys.max(1) as f64
    );
    println!(
        "windows: checkpoints written {:.1} MiB ({:.0} KiB per batch)",
        written as f64 / (1 << 20) as f64,
        written as f64 / 1024.0 / batches.len().max(1) as f64
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
        Cmd::Rules { rules, events, batch_rows, threads, pack, no_peers, suspicious_every } => {
            rules_bench(rules, events, batch_rows, threads, pack, no_peers, suspicious_every.max(1)).await
        }
        Cmd::Spool { alerts, per_append } => spool_bench(alerts, per_append).await,
        Cmd::Dedup { entries, alerts, per_commit, repeat_every } => {
            dedup::run(entries, alerts, per_commit, repeat_every).await
        }
        Cmd::Kafka { rate, outage } => kafka_bench(rate, outage).await,
        Cmd::Windows { kind, events, users, batch_rows } => windows_bench(kind, events, users, batch_rows).await,
        Cmd::Reference { rows, events } => reference_bench(rows, events).await,
        Cmd::History { alerts, data_dir, queries, clients } => history::run(alerts, data_dir, queries, clients).await,
        Cmd::Fleet { sensors, concurrency, idle, json } => fleet::run(sensors, concurrency, idle, json).await,
        Cmd::FleetEngine { data_dir, ingest, api } => fleet::engine(data_dir, ingest, api).await,
        Cmd::Throughput { load } => load::run(load.into_load("throughput", None, secs(30))).await,
        Cmd::Latency { load, rate } => load::run(load.into_load("latency", Some(rate), secs(30))).await,
        Cmd::Soak { load, rate } => load::run(load.into_load("soak", rate, secs(600))).await,
        Cmd::Outage { load, rate, outage, outage_at } => {
            let mut load = load.into_load("outage", Some(rate), secs(60));
            anyhow::ensure!(
                outage_at + outage + secs(10) <= load.duration,
                "--duration {}s is too short for an outage at {}s lasting {}s and 10 s to drain",
                load.duration.as_secs(),
                outage_at.as_secs(),
                outage.as_secs()
            );
            load.kafka = true;
            load.outage = Some(load::Outage { at: outage_at, length: outage });
            load::run(load).await
        }
        Cmd::Engine { config } => load::engine(&config).await,
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

async fn spool_bench(n: usize, per_append: usize) -> anyhow::Result<()> {
    use vedette_actors::sinks::delivery::Delivery;
    use vedette_actors::sinks::{connector, open_sink};

    let dir = tempfile::tempdir()?;
    let db = vedette_engine::engine::state_config(&dir.path().join("state")).open()?;
    let text = "[[sinks]]\nname = \"bench\"\ntype = \"file\"\npath = \"out.jsonl\"\n\
                spool = { max_bytes = \"8GiB\" }\nbatch = { max_events = 1000, max_bytes = \"4MiB\", linger = \"1ms\" }\n";
    let config = vedette_config::Config::from_toml_str(text)?.sinks.remove(0);
    let handle = open_sink(&db, config.clone())?;
    let records: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let mut a = vedette_pipelines::formats::sample_alert();
            a.rule_id = format!("bench.{}", i % 100);
            serde_json::to_vec(&a).expect("alerts serialize")
        })
        .collect();
    let bytes: usize = records.iter().map(Vec::len).sum();
    let mb = bytes as f64 / 1e6;

    let started = Instant::now();
    for chunk in records.chunks(per_append) {
        handle.spool.append(chunk).await?;
    }
    db.flush_async().await?;
    let took = started.elapsed().as_secs_f64();
    println!(
        "spool: append {n} alerts ({:.0} B each, {per_append} per append) + flush: {:.0} alerts/s, {:.1} MB/s",
        bytes as f64 / n as f64,
        n as f64 / took,
        mb / took
    );

    // Drain through the real delivery loop into a file sink (JSON lines, fsync per batch).
    let metrics = vedette_actors::metrics::Metrics::new();
    let sink = connector(&config, dir.path(), handle.spool.instance())?;
    let (stop, rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let task = tokio::spawn(Delivery::new(Arc::clone(&handle), metrics, sink).run(rx));
    while handle.spool.depth().0 > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed().as_secs_f64();
    stop.send(true)?;
    task.await?;
    let written = std::fs::read_to_string(dir.path().join("out.jsonl"))?.lines().count();
    anyhow::ensure!(written == n, "delivered {written} of {n}");
    println!(
        "spool: drain {n} alerts through the delivery loop into a file sink: {:.0} alerts/s, {:.1} MB/s",
        n as f64 / took,
        mb / took
    );
    println!("spool: peak RSS {}", peak_rss());
    Ok(())
}

async fn kafka_bench(rate: u64, outage_s: u64) -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use vedette_actors::sinks::delivery::Delivery;
    use vedette_actors::sinks::{connector, open_sink};

    let cluster = rdkafka::mocking::MockCluster::new(1)?;
    cluster.create_topic("alerts", 3, 1)?;
    let dir = tempfile::tempdir()?;
    let db = vedette_engine::engine::state_config(&dir.path().join("state")).open()?;
    let text = format!(
        "[[sinks]]\nname = \"kafka\"\ntype = \"kafka\"\nbrokers = \"{}\"\ntopic = \"alerts\"\nmessage_timeout = \"5s\"\n\
         spool = {{ max_bytes = \"4GiB\" }}\nbatch = {{ max_events = 5000, max_bytes = \"8MiB\", linger = \"5ms\" }}\n\
         retry = {{ base = \"100ms\", cap = \"1s\" }}\nbreaker = {{ open_for = \"1s\" }}\n",
        cluster.bootstrap_servers()
    );
    let config = vedette_config::Config::from_toml_str(&text)?.sinks.remove(0);
    let handle = open_sink(&db, config.clone())?;
    let metrics = vedette_actors::metrics::Metrics::new();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(
        Delivery::new(Arc::clone(&handle), metrics.clone(), connector(&config, dir.path(), handle.spool.instance())?)
            .run(rx),
    );

    // Steady producer: `rate` alerts/s in 10 ms chunks.
    let produced = Arc::new(AtomicU64::new(0));
    let running = Arc::new(AtomicBool::new(true));
    let producer = {
        let (h, produced, running) = (Arc::clone(&handle), Arc::clone(&produced), Arc::clone(&running));
        tokio::spawn(async move {
            let per_tick = (rate / 100).max(1);
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            while running.load(Ordering::Relaxed) {
                tick.tick().await;
                let records: Vec<Vec<u8>> = (0..per_tick)
                    .map(|_| {
                        let mut a = vedette_pipelines::formats::sample_alert();
                        a.alert_id = uuid::Uuid::new_v4();
                        serde_json::to_vec(&a).expect("alerts serialize")
                    })
                    .collect();
                h.spool.append(&records).await.expect("spool append");
                produced.fetch_add(per_tick, Ordering::Relaxed);
            }
        })
    };
    let delivered = || metrics.sink_delivered.with_label_values(&["kafka"]).get();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let live_backlog = handle.spool.depth().0;
    println!("kafka: live {rate} alerts/s for 3 s: backlog {live_backlog} (keeps up), delivered {}", delivered());

    cluster.broker_down(1)?;
    let down_at = Instant::now();
    let mut peak_rss = 0u64;
    let mut next_report = Duration::from_secs(60);
    while down_at.elapsed() < Duration::from_secs(outage_s) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        peak_rss = peak_rss.max(rss_kb());
        if down_at.elapsed() >= next_report {
            let depth = handle.spool.depth();
            println!(
                "kafka:   down {:>4} s: backlog {} alerts ({:.1} MB), RSS {} kB",
                next_report.as_secs(),
                depth.0,
                depth.1 as f64 / 1e6,
                rss_kb()
            );
            next_report += Duration::from_secs(60);
        }
    }
    let backlog = handle.spool.depth();
    println!(
        "kafka: broker down {outage_s} s: backlog {} alerts ({:.1} MB spooled), peak RSS during the outage {} kB",
        backlog.0,
        backlog.1 as f64 / 1e6,
        peak_rss
    );
    cluster.broker_up(1)?;
    let up_at = Instant::now();
    let before = delivered();
    while handle.spool.depth().0 > (rate / 10).max(10) {
        anyhow::ensure!(up_at.elapsed() < Duration::from_secs(300), "backlog not drained in 5 min");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = up_at.elapsed().as_secs_f64();
    let drain_rate = (delivered() - before) as f64 / took;
    println!(
        "kafka: drained {} alerts in {took:.2} s while live traffic continued: {drain_rate:.0} alerts/s = {:.1}× the live rate",
        backlog.0,
        drain_rate / rate as f64
    );
    running.store(false, Ordering::Relaxed);
    producer.await?;
    while handle.spool.depth().0 > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(true)?;
    task.await?;
    let total = produced.load(Ordering::Relaxed);
    anyhow::ensure!(delivered() >= total, "delivered {} of {total}", delivered());
    println!("kafka: {total} produced, {} delivered (≥, at least once), 0 lost", delivered());
    Ok(())
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
