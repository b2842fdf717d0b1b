//! `vedette-bench throughput` / `latency`: a real engine in its own process, driven over QUIC
//! by N simulated sensors holding real certificates, with the standard pack and ten windowed
//! rules, alerts to a file sink. Each sensor's frames are encoded once and replayed with fresh
//! sequence numbers and timestamps, so the load generator costs little. In the same run, the
//! peers that bound what vedette can do here: raw QUIC loopback with the same frames, decoding
//! alone, and the same rule SQL as DataFusion batch queries.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use vedette_actors::tls;
use vedette_engine::pki;
use vedette_engine::sensor::read_control;
use vedette_schemas::frame::{self, ALPN, Control, Encoding, Hello, PROTOCOL_VERSION};

use crate::fleet::{clock_ticks, cpu_ticks, free_port, proc_status};
use crate::mix::{PROGRAMS, SUSPICIOUS};

/// What to run.
pub struct Load {
    pub duration: Duration,
    pub warmup: Duration,
    pub sensors: usize,
    pub encoding: Encoding,
    pub pack: Option<PathBuf>,
    pub suspicious_every: usize,
    pub frame_rows: usize,
    /// Total events/s to offer (latency mode); `None`: as fast as the engine acknowledges.
    pub rate: Option<u64>,
    pub window_frames: u64,
    pub json: Option<PathBuf>,
    pub peers: bool,
    /// Extra top-level TOML lines for the engine's config.
    pub engine_config: Vec<String>,
    /// The file sink's `batch.linger`.
    pub sink_linger: Duration,
}

/// The placeholder every `ts` starts as, so a frame's timestamps can be overwritten in place.
const TS_SENTINEL: i64 = 4_444_444_444_444_444;
const TS_DIGITS: usize = 16;

/// One pre-encoded frame: its table, payload, and where each row's `ts` sits in the payload.
struct Template {
    table: &'static str,
    payload: Vec<u8>,
    ts_at: TsAt,
    rows: u64,
}

enum TsAt {
    /// NDJSON: byte offset of each row's 16 ASCII digits.
    Digits(Vec<usize>),
    /// Arrow IPC: byte offset of the first of the `ts` column's little-endian i64 values.
    Int64(usize),
}

impl Template {
    /// Writes the frame for `seq` into `out`, every row stamped `ts` (µs).
    fn encode(&self, out: &mut Vec<u8>, encoding: Encoding, seq: u64, ts: i64) {
        out.clear();
        frame::encode_data(out, encoding, seq, self.table, &self.payload);
        let base = out.len() - self.payload.len();
        match &self.ts_at {
            TsAt::Digits(at) => {
                let digits = format!("{ts:016}");
                for a in at {
                    out[base + a..base + a + TS_DIGITS].copy_from_slice(digits.as_bytes());
                }
            }
            TsAt::Int64(at) => {
                for r in 0..self.rows as usize {
                    let o = base + at + r * 8;
                    out[o..o + 8].copy_from_slice(&ts.to_le_bytes());
                }
            }
        }
    }
}

/// One event of the mix (`ts` left as the sentinel), and whether it should alert.
fn event(table: &str, n: usize, host: &str, every: usize) -> (serde_json::Value, bool) {
    let ts = TS_SENTINEL;
    match table {
        "process_events" => {
            let bad = n % every == every / 2;
            let (exe, cmd) = if bad {
                let (e, c) = SUSPICIOUS[(n / every) % SUSPICIOUS.len()];
                (e.to_string(), c.to_string())
            } else {
                let (e, c) = PROGRAMS[n % PROGRAMS.len()];
                (e.to_string(), c.replace("{n}", &n.to_string()))
            };
            let row = json!({"ts": ts, "host": host, "event_type": "start", "pid": 1000 + n % 60_000,
                "ppid": 1, "uid": 1000, "user": "app", "exe": exe, "cmdline": cmd, "cwd": "/home/app",
                "parent_exe": "/usr/bin/bash", "parent_cmdline": "bash"});
            (row, bad)
        }
        "network_events" => (
            json!({"ts": ts, "host": host, "pid": 1000 + n % 60_000, "exe": "/usr/bin/node", "user": "app",
                "direction": "outbound", "protocol": "tcp", "src_ip": "10.0.3.17", "src_port": 30_000 + n % 30_000,
                "dst_ip": format!("10.0.{}.{}", n % 7, n % 250), "dst_port": 443, "dst_host": "api.internal.example"}),
            false,
        ),
        "file_events" => (
            json!({"ts": ts, "host": host, "pid": 1000 + n % 60_000, "exe": "/usr/bin/python3", "user": "app",
                "uid": 1000, "action": "write", "path": format!("/var/lib/app/cache/{}.json", n % 5000),
                "mode": 420, "sha256": format!("{:064x}", n)}),
            false,
        ),
        _ => (
            json!({"ts": ts, "host": host, "user": format!("user{}", n % 50), "src_ip": format!("10.1.{}.{}", n % 3, n % 200),
                "service": "sshd", "method": "publickey", "outcome": if n.is_multiple_of(10) { "failure" } else { "success" }}),
            false,
        ),
    }
}

/// Frames of one cycle of the mix: six of process events, two of network, one of files,
/// one of logins.
const CYCLE: [&str; 10] = [
    "process_events",
    "network_events",
    "process_events",
    "file_events",
    "process_events",
    "process_events",
    "auth_events",
    "process_events",
    "network_events",
    "process_events",
];

fn templates(host: &str, load: &Load, catalog: &vedette_schemas::tables::Catalog) -> anyhow::Result<Vec<Template>> {
    let mut out = Vec::new();
    for (f, table) in CYCLE.iter().enumerate() {
        let rows: Vec<serde_json::Value> = (0..load.frame_rows)
            .map(|r| event(table, f * load.frame_rows + r, host, load.suspicious_every).0)
            .collect();
        out.push(encode_template(table, &rows, load.encoding, catalog)?);
    }
    Ok(out)
}

fn encode_template(
    table: &'static str,
    rows: &[serde_json::Value],
    encoding: Encoding,
    catalog: &vedette_schemas::tables::Catalog,
) -> anyhow::Result<Template> {
    let mut payload = Vec::new();
    let mut at = Vec::new();
    for row in rows {
        let line = row.to_string();
        let needle = format!("\"ts\":{TS_SENTINEL}");
        let pos = line.find(&needle).ok_or_else(|| anyhow::anyhow!("ts not found"))?;
        at.push(payload.len() + pos + 5);
        payload.extend_from_slice(line.as_bytes());
        payload.push(b'\n');
    }
    if encoding == Encoding::Ndjson {
        return Ok(Template { table, payload, ts_at: TsAt::Digits(at), rows: rows.len() as u64 });
    }
    // Arrow: the sensor-facing columns of the table, `ts` as Int64.
    let def = catalog.get(table)?;
    let fields: Vec<arrow::datatypes::Field> = def
        .schema()
        .fields()
        .iter()
        .filter(|f| !matches!(f.name().as_str(), "sensor_id" | "tenant") && !f.name().starts_with("__"))
        .map(|f| {
            if f.name() == "ts" {
                arrow::datatypes::Field::new("ts", arrow::datatypes::DataType::Int64, false)
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    let schema = Arc::new(arrow::datatypes::Schema::new(fields));
    let mut decoder = arrow::json::ReaderBuilder::new(Arc::clone(&schema)).build_decoder()?;
    decoder.serialize(rows)?;
    let batch = decoder.flush()?.ok_or_else(|| anyhow::anyhow!("no rows"))?;
    let mut ipc = Vec::new();
    {
        let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut ipc, &schema)?;
        w.write(&batch)?;
        w.finish()?;
    }
    let pattern: Vec<u8> = std::iter::repeat_n(TS_SENTINEL.to_le_bytes(), rows.len()).flatten().collect();
    let pos = ipc
        .windows(pattern.len())
        .position(|w| w == pattern.as_slice())
        .ok_or_else(|| anyhow::anyhow!("ts column not found in the IPC stream"))?;
    Ok(Template { table, payload: ipc, ts_at: TsAt::Int64(pos), rows: rows.len() as u64 })
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Counters shared by every sensor task.
#[derive(Default)]
struct Counters {
    sent_events: AtomicU64,
    acked_events: AtomicU64,
    rejected_rows: AtomicU64,
    errors: AtomicU64,
}

struct SensorIdentity {
    id: String,
    client: quinn::ClientConfig,
}

/// One sensor: HELLO, one data stream, frames replayed as long as the engine acknowledges
/// them (at most `window` outstanding), or at `frames_per_sec`.
/// What every sensor task shares.
#[derive(Clone)]
struct Run {
    server: SocketAddr,
    encoding: Encoding,
    window: u64,
    frames_per_sec: Option<f64>,
    counters: Arc<Counters>,
    stop: tokio::sync::watch::Receiver<bool>,
    handshakes: Arc<tokio::sync::Semaphore>,
}

async fn run_sensor(
    ep: quinn::Endpoint,
    me: SensorIdentity,
    templates: Arc<Vec<Template>>,
    run: Run,
) -> anyhow::Result<()> {
    let Run { server, encoding, window, frames_per_sec, counters, stop, handshakes } = run;
    // A few handshakes at a time (as a fleet reconnecting after an engine restart would be
    // paced by its backoff), retried until the run ends.
    let permit = handshakes.acquire_owned().await?;
    let conn = loop {
        match ep.connect_with(me.client.clone(), server, "localhost")?.await {
            Ok(c) => break c,
            Err(e) if *stop.borrow() => return Err(e.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let (mut control, mut recv) = conn.open_bi().await?;
    let hello = Hello {
        protocol: PROTOCOL_VERSION,
        sensor_version: "vedette-bench/1".into(),
        host: Some(me.id.clone()),
        sensor_id: None,
        schemas: Default::default(),
        low_seq: 0,
    };
    control.write_all(&Control::Hello(hello).to_frame()).await?;
    match read_control(&mut recv).await? {
        Control::Welcome(_) => {}
        other => anyhow::bail!("{}: expected WELCOME, got {other:?}", me.id),
    }
    drop(permit);
    let acked = Arc::new(AtomicU64::new(0));
    let notify = Arc::new(tokio::sync::Notify::new());
    let rows_of = |seq: u64| templates[(seq as usize - 1) % templates.len()].rows;
    let reader = {
        let (acked, notify, counters, templates) =
            (Arc::clone(&acked), Arc::clone(&notify), Arc::clone(&counters), Arc::clone(&templates));
        tokio::spawn(async move {
            let rows = |seq: u64| templates[(seq as usize - 1) % templates.len()].rows;
            while let Ok(msg) = read_control(&mut recv).await {
                match msg {
                    Control::Ack(a) => {
                        let before = acked.load(Ordering::Acquire);
                        if a.through > before {
                            let n: u64 = (before + 1..=a.through).map(rows).sum();
                            counters.acked_events.fetch_add(n, Ordering::Relaxed);
                            acked.store(a.through, Ordering::Release);
                            notify.notify_one();
                        }
                    }
                    Control::RowErrors(e) => {
                        counters.rejected_rows.fetch_add(e.errors.len() as u64, Ordering::Relaxed);
                    }
                    Control::Error(_) => {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        })
    };
    let mut data = conn.open_uni().await?;
    let mut buf = Vec::new();
    let mut tick = frames_per_sec.map(|f| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / f.max(0.001)));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        t
    });
    let mut seq = 0u64;
    while !*stop.borrow() {
        if let Some(t) = &mut tick {
            t.tick().await;
        }
        while seq >= acked.load(Ordering::Acquire) + window {
            if *stop.borrow() {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), notify.notified()).await;
        }
        seq += 1;
        let t = &templates[(seq as usize - 1) % templates.len()];
        t.encode(&mut buf, encoding, seq, now_us());
        data.write_all(&buf).await?;
        counters.sent_events.fetch_add(rows_of(seq), Ordering::Relaxed);
    }
    let _ = data.finish();
    // Let the last acknowledgements arrive before closing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    reader.abort();
    conn.close(0u32.into(), b"bench done");
    Ok(())
}

/// Reads new alert lines from the file sink: (alerts, latencies µs from the event's `ts`).
struct AlertTail {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl AlertTail {
    fn poll(&mut self, hist: &mut hdrhistogram::Histogram<u64>, window: &mut hdrhistogram::Histogram<u64>) -> u64 {
        use std::io::{Read, Seek};
        let Ok(mut f) = std::fs::File::open(&self.path) else { return 0 };
        if f.seek(std::io::SeekFrom::Start(self.offset)).is_err() {
            return 0;
        }
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_err() {
            return 0;
        }
        self.offset += buf.len() as u64;
        let now = now_us();
        self.partial.extend_from_slice(&buf);
        let Some(last) = self.partial.iter().rposition(|b| *b == b'\n') else { return 0 };
        let complete: Vec<u8> = self.partial.drain(..=last).collect();
        let mut n = 0;
        for line in complete.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            n += 1;
            let ts = serde_json::from_slice::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("ts")?.as_str().map(str::to_string))
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(&s).ok())
                .map(|t| t.timestamp_micros());
            if let Some(ts) = ts {
                let us = (now - ts).max(1) as u64;
                let _ = hist.record(us);
                let _ = window.record(us);
            }
        }
        n
    }
}

/// One second of the run.
#[derive(serde::Serialize)]
struct Sample {
    t: f64,
    events_per_sec: f64,
    alerts_per_sec: f64,
    p99_ms: f64,
    rss_mib: f64,
    cpu_pct: f64,
}

pub async fn run(load: Load) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let catalog = vedette_schemas::tables::Catalog::builtin();
    pki::ensure_dev_pki(dir.path())?;
    let paths = pki::PkiPaths::new(dir.path());
    let ca =
        pki::CertPem { cert: std::fs::read_to_string(&paths.ca_cert)?, key: std::fs::read_to_string(&paths.ca_key)? };
    let pack = load.pack.clone().unwrap_or_else(default_pack);
    write_packs(dir.path(), &pack)?;
    let (ingest, api) =
        (SocketAddr::from(([127, 0, 0, 1], free_port()?)), SocketAddr::from(([127, 0, 0, 1], free_port()?)));
    let extra: String = load.engine_config.iter().map(|l| format!("{l}\n")).collect();
    let config = format!(
        "data_dir = \"{}\"\n{extra}[ingest]\nlisten = \"{ingest}\"\n[api]\nlisten = \"{api}\"\n[log]\nlevel = \"warn\"\n\
         [rules]\nbuiltin = false\npacks_dir = \"packs\"\nallow_unsigned = true\n\
         [alerts]\nstorm_max_per_rule = 0\n\
         [[sinks]]\nname = \"file\"\ntype = \"file\"\npath = \"alerts.jsonl\"\nbatch = {{ linger = \"{}ms\" }}\n",
        dir.path().display(),
        load.sink_linger.as_millis()
    );
    let config_path = dir.path().join("bench.toml");
    std::fs::write(&config_path, config)?;

    let t = Instant::now();
    let mut sensors = Vec::with_capacity(load.sensors);
    for i in 0..load.sensors {
        let id = format!("bench-{i:05}");
        let c = pki::issue_sensor(&ca, &id, "bench", 30)?;
        let client = tls::client_config(ca.cert.as_bytes(), Some((c.cert.as_bytes(), c.key.as_bytes())), ALPN)?;
        sensors.push(SensorIdentity { id, client });
    }
    eprintln!("bench: {} sensor certificates in {:.1}s", load.sensors, t.elapsed().as_secs_f64());
    // Every sensor replays the same cycle under its own host name.
    let mut per_sensor = Vec::with_capacity(load.sensors);
    for s in &sensors {
        per_sensor.push(Arc::new(templates(&s.id, &load, &catalog)?));
    }
    let cycle_events: u64 = per_sensor[0].iter().map(|t| t.rows).sum();
    let frame_bytes = per_sensor[0].iter().map(|t| t.payload.len()).sum::<usize>() as f64 / CYCLE.len() as f64;

    let peers = if load.peers { Some(run_peers(&per_sensor[0], &load, &catalog, &pack, &paths).await?) } else { None };

    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["engine", "--config"])
        .arg(&config_path)
        .stdin(std::process::Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::net::TcpStream::connect(api).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "the engine did not start");
        anyhow::ensure!(child.try_wait()?.is_none(), "the engine exited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let counters = Arc::new(Counters::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let frames_per_sec = load.rate.map(|r| r as f64 / load.sensors as f64 / (cycle_events as f64 / CYCLE.len() as f64));
    let endpoints: Vec<quinn::Endpoint> =
        (0..4).map(|_| quinn::Endpoint::client("127.0.0.1:0".parse().expect("address"))).collect::<Result<_, _>>()?;
    let mut tasks = Vec::new();
    let handshakes = Arc::new(tokio::sync::Semaphore::new(32));
    for (i, (s, tpl)) in sensors.into_iter().zip(per_sensor).enumerate() {
        let ep = endpoints[i % endpoints.len()].clone();
        let run = Run {
            server: ingest,
            encoding: load.encoding,
            window: load.window_frames,
            frames_per_sec,
            counters: Arc::clone(&counters),
            stop: stop_rx.clone(),
            handshakes: Arc::clone(&handshakes),
        };
        tasks.push(tokio::spawn(run_sensor(ep, s, tpl, run)));
    }

    let mut tail = AlertTail { path: dir.path().join("alerts.jsonl"), offset: 0, partial: Vec::new() };
    let mut hist = hdrhistogram::Histogram::<u64>::new(3)?;
    let mut scratch = hdrhistogram::Histogram::<u64>::new(3)?;
    let total = load.warmup + load.duration;
    let bar = indicatif::ProgressBar::new(total.as_secs());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len}s {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let ticks = clock_ticks();
    let mut series = Vec::new();
    let (mut last_acked, mut last_cpu, mut last_t) = (0u64, cpu_ticks(pid), Instant::now());
    let (mut measured_from, mut acked_at_start, mut cpu_at_start, mut alerts_total, mut alerts_at_start) =
        (None, 0u64, 0u64, 0u64, 0u64);
    let mut rss_max = 0u64;
    let mut own_cpu_at_start = 0u64;
    let mut second = Instant::now();
    let mut alerts_this_second = 0u64;
    while started.elapsed() < total {
        tokio::time::sleep(Duration::from_millis(10)).await;
        // Latencies are only recorded in the measured part.
        let in_window = started.elapsed() >= load.warmup;
        let n = if in_window {
            tail.poll(&mut hist, &mut scratch)
        } else {
            tail.poll(&mut hdrhistogram::Histogram::<u64>::new(3)?, &mut scratch)
        };
        alerts_total += n;
        alerts_this_second += n;
        if in_window && measured_from.is_none() {
            measured_from = Some(Instant::now());
            acked_at_start = counters.acked_events.load(Ordering::Relaxed);
            cpu_at_start = cpu_ticks(pid);
            own_cpu_at_start = cpu_ticks(std::process::id());
            alerts_at_start = alerts_total;
        }
        if second.elapsed() >= Duration::from_secs(1) {
            let now = Instant::now();
            let dt = now.duration_since(last_t).as_secs_f64();
            let acked = counters.acked_events.load(Ordering::Relaxed);
            let cpu = cpu_ticks(pid);
            let rss = proc_status(pid, "VmRSS:");
            rss_max = rss_max.max(rss);
            let s = Sample {
                t: started.elapsed().as_secs_f64(),
                events_per_sec: (acked - last_acked) as f64 / dt,
                alerts_per_sec: alerts_this_second as f64 / dt,
                p99_ms: scratch.value_at_quantile(0.99) as f64 / 1000.0,
                rss_mib: rss as f64 / 1024.0,
                cpu_pct: (cpu - last_cpu) as f64 / ticks / dt * 100.0,
            };
            bar.set_position(started.elapsed().as_secs());
            bar.set_message(format!(
                "{:.0} events/s, {:.0} alerts/s, p99 {:.1} ms, engine CPU {:.0}%, RSS {:.0} MiB",
                s.events_per_sec, s.alerts_per_sec, s.p99_ms, s.cpu_pct, s.rss_mib
            ));
            series.push(s);
            scratch.reset();
            (last_acked, last_cpu, last_t, second, alerts_this_second) = (acked, cpu, now, now, 0);
        }
    }
    let measured = measured_from.map_or(Duration::ZERO, |t| t.elapsed()).as_secs_f64().max(0.001);
    let acked = counters.acked_events.load(Ordering::Relaxed) - acked_at_start;
    let cpu_pct = (cpu_ticks(pid) - cpu_at_start) as f64 / ticks / measured * 100.0;
    let own_cpu_pct = (cpu_ticks(std::process::id()) - own_cpu_at_start) as f64 / ticks / measured * 100.0;
    let alerts = alerts_total - alerts_at_start;
    bar.finish_and_clear();
    let _ = stop_tx.send(true);
    let mut failed = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed.push(e.to_string()),
            Err(e) => failed.push(e.to_string()),
        }
    }
    crate::fleet::stop_engine(&mut child, Duration::from_secs(20)).await;

    let q = |p: f64| if hist.is_empty() { 0.0 } else { hist.value_at_quantile(p) as f64 / 1000.0 };
    let events_per_sec = acked as f64 / measured;
    let mut report = json!({
        "mode": if load.rate.is_some() { "latency" } else { "throughput" },
        "sensors": load.sensors,
        "encoding": if load.encoding == Encoding::Arrow { "arrow" } else { "ndjson" },
        "frame_rows": load.frame_rows,
        "frame_bytes_avg": frame_bytes.round(),
        "offered_events_per_sec": load.rate,
        "duration_s": measured,
        "events_per_sec": events_per_sec.round(),
        "alerts_per_sec": (alerts as f64 / measured * 10.0).round() / 10.0,
        "alerts": alerts,
        "p50_ms": q(0.5),
        "p99_ms": q(0.99),
        "p999_ms": q(0.999),
        "rss_max_mib": rss_max / 1024,
        "cpu_pct": cpu_pct.round(),
        "load_generator_cpu_pct": own_cpu_pct.round(),
        "sensors_connected": load.sensors - failed.len(),
        "rejected_rows": counters.rejected_rows.load(Ordering::Relaxed),
        "engine_errors": counters.errors.load(Ordering::Relaxed),
        "sensors_failed": failed.len(),
        "pack": pack.display().to_string(),
        "engine_config": load.engine_config,
        "sink_linger_ms": load.sink_linger.as_millis() as u64,
        "machine": {"cores": std::thread::available_parallelism().map_or(1, usize::from)},
        "series": series,
    });
    println!("{:<44} {:>14}", "measure", "value");
    for (k, label) in [
        ("events_per_sec", "events/s accepted (acknowledged)"),
        ("alerts_per_sec", "alerts/s delivered (file sink)"),
        ("p50_ms", "event → alert p50, ms"),
        ("p99_ms", "event → alert p99, ms"),
        ("p999_ms", "event → alert p99.9, ms"),
        ("cpu_pct", "engine CPU, % of one core"),
        ("load_generator_cpu_pct", "load generator CPU, % of one core"),
        ("rss_max_mib", "engine RSS max, MiB"),
        ("rejected_rows", "rejected rows"),
    ] {
        println!("{label:<44} {:>14}", report[k]);
    }
    if let Some(p) = peers {
        let ratio = |peer: f64| (events_per_sec / peer * 1000.0).round() / 1000.0;
        for (name, label, v) in [
            ("quinn_loopback", "peer: raw QUIC loopback, same frames", p.quinn),
            ("decode", "peer: decoding alone, all cores", p.decode),
            ("datafusion_batch", "peer: rule SQL as batch queries", p.batch),
        ] {
            println!("{label:<44} {:>14.0}  vedette = {:.3} of it", v, ratio(v));
            report["peers"][name] = json!({"events_per_sec": v.round(), "ratio": ratio(v)});
        }
    }
    if !failed.is_empty() {
        eprintln!("bench: {} sensors failed, first: {}", failed.len(), failed[0]);
    }
    if let Some(path) = &load.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        eprintln!("bench: results in {}", path.display());
    }
    Ok(())
}

/// The standard pack, found from the current directory or the bench crate's.
fn default_pack() -> PathBuf {
    let here = PathBuf::from("bench/packs/sigma-linux.yaml");
    if here.exists() { here } else { PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("packs/sigma-linux.yaml") }
}

/// The pack under test and ten tumbling-window rules, in the engine's packs directory.
fn write_packs(data_dir: &Path, pack: &Path) -> anyhow::Result<()> {
    let dir = data_dir.join("packs");
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(pack, dir.join("pack-under-test.yaml"))?;
    let mut windows = String::from("name: bench-windows\nversion: 1\nrules:\n");
    for (id, sql) in crate::window_rules(crate::WindowKindArg::Tumble) {
        windows.push_str(&format!(
            "  - id: bench.{id}\n    name: \"Bench window {id}\"\n    severity: low\n    sql: {}\n",
            serde_json::to_string(&sql)?
        ));
    }
    std::fs::write(dir.join("bench-windows.yaml"), windows)?;
    Ok(())
}

struct Peers {
    quinn: f64,
    decode: f64,
    batch: f64,
}

async fn run_peers(
    templates: &[Template],
    load: &Load,
    catalog: &vedette_schemas::tables::Catalog,
    pack: &Path,
    paths: &pki::PkiPaths,
) -> anyhow::Result<Peers> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    // Decoding alone, on every core.
    let decode = {
        let per_thread = Duration::from_secs(2);
        let counts: Vec<u64> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..cores)
                .map(|_| {
                    s.spawn(|| {
                        let id = vedette_schemas::decode::Identity {
                            sensor_id: "bench",
                            tenant: "bench",
                            default_host: None,
                            trust_rows: false,
                        };
                        let (started, mut n, mut seq) = (Instant::now(), 0u64, 0u64);
                        let mut buf = Vec::new();
                        while started.elapsed() < per_thread {
                            for t in templates {
                                seq += 1;
                                t.encode(&mut buf, load.encoding, seq, now_us());
                                let body = &buf[frame::HEADER_LEN..];
                                let ty = if load.encoding == Encoding::Arrow {
                                    frame::FrameType::DataArrow
                                } else {
                                    frame::FrameType::DataNdjson
                                };
                                if let (Ok(f), Ok(def)) = (frame::parse_data(ty, body), catalog.get(t.table))
                                    && vedette_schemas::decode::decode_frame(def, &f, &id, usize::MAX).is_ok()
                                {
                                    n += t.rows;
                                }
                            }
                        }
                        n
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0)).collect()
        });
        counts.iter().sum::<u64>() as f64 / per_thread.as_secs_f64()
    };

    // The rule SQL as one DataFusion batch query per rule over the process events.
    let batch = {
        let text = std::fs::read_to_string(pack)?;
        let p = vedette_pipelines::rule::Pack::from_yaml(&pack.display().to_string(), &text)?;
        let rows: Vec<String> = (0..65_536)
            .map(|n| {
                let (mut v, _) = event("process_events", n, "peer", load.suspicious_every);
                v["ts"] = json!(1_700_000_000_000_000i64 + n as i64);
                v.to_string()
            })
            .collect();
        let batches = crate::decode_batches("process_events", rows.into_iter(), 8192)?;
        let ctx = crate::datafusion_ctx(&batches)?;
        let started = Instant::now();
        for r in p.rules.iter().filter(|r| r.sql.contains("process_events")) {
            ctx.sql(&r.sql).await?.collect().await?;
        }
        65_536.0 / started.elapsed().as_secs_f64()
    };

    // Raw QUIC loopback: the same frames, received and dropped.
    let quinn = quinn_peer(templates, load.encoding, paths, load.sensors.min(64)).await?;
    Ok(Peers { quinn, decode, batch })
}

struct NoRevocations;

impl tls::RevocationCheck for NoRevocations {
    fn is_revoked(&self, _: &tls::PeerIdentity) -> bool {
        false
    }
}

async fn quinn_peer(
    templates: &[Template],
    encoding: Encoding,
    paths: &pki::PkiPaths,
    conns: usize,
) -> anyhow::Result<f64> {
    let ca = std::fs::read(&paths.ca_cert)?;
    let server = tls::server_config(
        &ca,
        &std::fs::read(&paths.server_cert)?,
        &std::fs::read(&paths.server_key)?,
        Duration::from_secs(30),
        Arc::new(NoRevocations),
        false,
    )?;
    let ep = quinn::Endpoint::server(server, "127.0.0.1:0".parse()?)?;
    let addr = ep.local_addr()?;
    let received = Arc::new(AtomicU64::new(0));
    let acceptor = {
        let (ep, received) = (ep.clone(), Arc::clone(&received));
        tokio::spawn(async move {
            while let Some(incoming) = ep.accept().await {
                let received = Arc::clone(&received);
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    while let Ok(mut s) = conn.accept_uni().await {
                        let received = Arc::clone(&received);
                        tokio::spawn(async move {
                            while let Ok(Some(chunk)) = s.read_chunk(usize::MAX, true).await {
                                received.fetch_add(chunk.bytes.len() as u64, Ordering::Relaxed);
                            }
                        });
                    }
                });
            }
        })
    };
    let ca_pem = std::fs::read(&paths.ca_cert)?;
    let (cert, key) = paths.sensor(pki::DEMO_SENSOR_ID);
    let (cert, key) = (std::fs::read(cert)?, std::fs::read(key)?);
    let client = tls::client_config(&ca_pem, Some((&cert, &key)), ALPN)?;
    let frames: Arc<Vec<(Vec<u8>, u64)>> = Arc::new(
        templates
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mut b = Vec::new();
                t.encode(&mut b, encoding, i as u64 + 1, now_us());
                (b, t.rows)
            })
            .collect(),
    );
    let cycle_bytes: u64 = frames.iter().map(|(b, _)| b.len() as u64).sum();
    let cycle_rows: u64 = frames.iter().map(|(_, r)| *r).sum();
    let run_for = Duration::from_secs(3);
    let client_ep = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    let mut senders = Vec::new();
    for _ in 0..conns {
        let (client_ep, client, frames) = (client_ep.clone(), client.clone(), Arc::clone(&frames));
        senders.push(tokio::spawn(async move {
            let conn = client_ep.connect_with(client, addr, "localhost").ok()?.await.ok()?;
            let mut s = conn.open_uni().await.ok()?;
            let started = Instant::now();
            while started.elapsed() < run_for {
                for (b, _) in frames.iter() {
                    s.write_all(b).await.ok()?;
                }
            }
            let _ = s.finish();
            Some(conn)
        }));
    }
    let started = Instant::now();
    let mut conns_done = Vec::new();
    for s in senders {
        conns_done.push(s.await?);
    }
    let secs = started.elapsed().as_secs_f64();
    let bytes = received.load(Ordering::Relaxed);
    drop(conns_done);
    acceptor.abort();
    ep.close(0u32.into(), b"");
    Ok(bytes as f64 / cycle_bytes as f64 * cycle_rows as f64 / secs)
}

/// The engine of the bench, in this process (the parent started it): `engine --config FILE`.
pub async fn engine(config: &Path) -> anyhow::Result<()> {
    serve(&std::fs::read_to_string(config)?).await
}

/// Runs an engine on this config until the parent closes our stdin.
pub async fn serve(config: &str) -> anyhow::Result<()> {
    let engine = vedette_engine::EngineHandle::start(vedette_config::Config::from_toml_str(config)?).await?;
    tokio::task::spawn_blocking(|| {
        let mut buf = [0u8; 1];
        let _ = std::io::Read::read(&mut std::io::stdin(), &mut buf);
    })
    .await?;
    engine.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A replayed frame decodes to the template's rows with every `ts` the one given.
    #[test]
    fn replayed_frames_carry_fresh_timestamps_in_both_encodings() {
        assert_eq!(TS_SENTINEL.to_string().len(), TS_DIGITS);
        let catalog = vedette_schemas::tables::Catalog::builtin();
        for encoding in [Encoding::Ndjson, Encoding::Arrow] {
            let load = Load {
                duration: Duration::ZERO,
                warmup: Duration::ZERO,
                sensors: 1,
                encoding,
                pack: None,
                suspicious_every: 7,
                frame_rows: 50,
                rate: None,
                window_frames: 1,
                json: None,
                peers: false,
                engine_config: Vec::new(),
                sink_linger: Duration::ZERO,
            };
            let tpl = templates("host-1", &load, &catalog).unwrap();
            let id = vedette_schemas::decode::Identity {
                sensor_id: "s",
                tenant: "t",
                default_host: None,
                trust_rows: false,
            };
            let mut buf = Vec::new();
            for (i, t) in tpl.iter().enumerate() {
                let ts = 1_764_000_000_000_000 + i as i64;
                t.encode(&mut buf, encoding, 9, ts);
                let ty = if encoding == Encoding::Arrow {
                    frame::FrameType::DataArrow
                } else {
                    frame::FrameType::DataNdjson
                };
                let f = frame::parse_data(ty, &buf[frame::HEADER_LEN..]).unwrap();
                assert_eq!((f.seq, f.table), (9, t.table));
                let d =
                    vedette_schemas::decode::decode_frame(catalog.get(t.table).unwrap(), &f, &id, usize::MAX).unwrap();
                assert!(d.errors.is_empty(), "{:?}", d.errors);
                let batch = d.batch.unwrap();
                assert_eq!(batch.num_rows(), 50);
                let col = batch.column_by_name("ts").unwrap();
                let col = arrow::compute::cast(col, &arrow::datatypes::DataType::Int64).unwrap();
                let col = col.as_any().downcast_ref::<arrow::array::Int64Array>().unwrap();
                assert!(col.iter().all(|v| v == Some(ts)), "{encoding:?} {}", t.table);
            }
        }
    }
}
