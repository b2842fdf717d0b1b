//! The end-to-end modes (`throughput`, `latency`, `soak`, `outage`): a real engine — started by
//! the bench in its own process, or one already running — driven over QUIC by N simulated
//! sensors holding real certificates, with the standard pack and ten windowed rules, alerts to a
//! file sink (and a Kafka sink on a real Kafka-protocol broker with `--kafka`). Each sensor's
//! frames are encoded once and replayed with fresh sequence numbers and timestamps, so the load
//! generator costs little. In the same run, the peers that bound what vedette can do here: raw
//! QUIC loopback with the same frames, decoding alone, and the same rule SQL as DataFusion batch
//! queries.

mod frames;
mod peers;
mod sensor;
mod target;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;
use vedette_actors::tls;
use vedette_engine::pki;
use vedette_schemas::frame::{ALPN, Encoding};

use crate::fleet::{clock_ticks, cpu_ticks, proc_status};
use frames::{CYCLE, now_us, templates};
use peers::{Peers, run_peers};
use sensor::{Counters, Run, SensorIdentity, run_sensor};
pub use target::Remote;
use target::{Target, default_pack};

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
    /// `throughput`, `latency`, `soak` or `outage` (in the report).
    pub mode: &'static str,
    /// A Kafka sink (on a tansu broker the bench starts) beside the file sink.
    pub kafka: bool,
    /// Stop the broker for a while during the measured time.
    pub outage: Option<Outage>,
    /// Drive an engine already running instead of starting one.
    pub remote: Option<Remote>,
    /// Tumbling-window rules on `auth_events` beside the pack (0–10).
    pub windows: usize,
}

/// When the broker is stopped (after the warm-up) and for how long.
pub struct Outage {
    pub at: Duration,
    pub length: Duration,
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
            // Event → alert latency is a stateless rule's: a window's alert (it has a
            // `window_start`) waits for its window to close by design.
            let ts = serde_json::from_slice::<serde_json::Value>(line)
                .ok()
                .filter(|v| v.get("window_start").is_none())
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
    #[serde(skip_serializing_if = "Option::is_none")]
    kafka_spooled: Option<u64>,
}

pub async fn run(load: Load) -> anyhow::Result<()> {
    let catalog = vedette_schemas::tables::Catalog::builtin();
    let pack = load.pack.clone().unwrap_or_else(default_pack);
    anyhow::ensure!(
        load.remote.is_none() || !load.kafka,
        "--kafka and outage runs start their own engine and broker: leave out --engine"
    );
    // Frames first and the peers next, so the peers have the machine to themselves (no
    // engine or broker running yet). Every sensor replays the same cycle under its own host name.
    let ids: Vec<String> = (0..load.sensors).map(|i| format!("bench-{i:05}")).collect();
    let mut per_sensor = Vec::with_capacity(load.sensors);
    for id in &ids {
        per_sensor.push(Arc::new(templates(id, &load, &catalog)?));
    }
    let cycle_events: u64 = per_sensor[0].iter().map(|t| t.rows).sum();
    let frame_bytes = per_sensor[0].iter().map(|t| t.payload.len()).sum::<usize>() as f64 / CYCLE.len() as f64;
    let peers = if load.peers { Some(run_peers(&per_sensor[0], &load, &catalog, &pack).await?) } else { None };

    let mut target = match &load.remote {
        Some(r) => Target::attach(r)?,
        None => Target::start_local(&load, &pack).await?,
    };
    let t = Instant::now();
    let mut sensors = Vec::with_capacity(load.sensors);
    for id in ids {
        let c = pki::issue_sensor(&target.ca, &id, "bench", 30)?;
        let client = tls::client_config(target.ca.cert.as_bytes(), Some((c.cert.as_bytes(), c.key.as_bytes())), ALPN)?;
        sensors.push(SensorIdentity { id, client });
    }
    eprintln!("bench: {} sensor certificates in {:.1}s", load.sensors, t.elapsed().as_secs_f64());

    let counters = Arc::new(Counters::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let frames_per_sec = load.rate.map(|r| r as f64 / load.sensors as f64 / (cycle_events as f64 / CYCLE.len() as f64));
    let endpoints: Vec<quinn::Endpoint> = (0..4).map(|_| endpoint(None)).collect::<anyhow::Result<_>>()?;
    let mut tasks = Vec::new();
    let handshakes = Arc::new(tokio::sync::Semaphore::new(32));
    for (i, (s, tpl)) in sensors.into_iter().zip(per_sensor).enumerate() {
        let ep = endpoints[i % endpoints.len()].clone();
        let run = Run {
            server: target.ingest,
            encoding: load.encoding,
            window: load.window_frames,
            frames_per_sec,
            counters: Arc::clone(&counters),
            stop: stop_rx.clone(),
            handshakes: Arc::clone(&handshakes),
        };
        tasks.push(tokio::spawn(run_sensor(ep, s, tpl, run)));
    }

    let measured = measure(&load, &target, &counters).await?;
    let _ = stop_tx.send(true);
    let mut failed = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed.push(format!("{e:#}")),
            Err(e) => failed.push(e.to_string()),
        }
    }
    let kafka = if target.kafka.is_some() { Some(check_kafka(&target).await?) } else { None };
    target.stop().await;

    let report = report(&load, &pack, frame_bytes, &measured, &counters, failed.len(), kafka, peers);
    print_table(&report);
    if !failed.is_empty() {
        eprintln!("bench: {} sensors failed; the first few:", failed.len());
        for f in failed.iter().take(5) {
            eprintln!("  {f}");
        }
    }
    if let Some(path) = &load.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        let png = crate::chart::beside(path);
        write_chart(&png, &report, &measured.series, &load)?;
        eprintln!("bench: results in {}, chart in {}", path.display(), png.display());
    }
    if let Some(k) = report.get("kafka") {
        anyhow::ensure!(k["missing"] == 0, "alerts delivered to the file sink are missing from Kafka: {k}");
    }
    Ok(())
}

/// A QUIC endpoint on 127.0.0.1 with the large socket buffers the engine's listener asks for
/// (so neither side of the bench drops datagrams the engine would not): a client, or a server
/// with `server`.
pub(crate) fn endpoint(server: Option<quinn::ServerConfig>) -> anyhow::Result<quinn::Endpoint> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    vedette_engine::quic::enlarge_buffers(&socket);
    let runtime = Arc::new(quinn::TokioRuntime);
    Ok(quinn::Endpoint::new(quinn::EndpointConfig::default(), server, socket, runtime)?)
}

/// What the measuring loop saw.
struct Measured {
    seconds: f64,
    acked: u64,
    alerts: u64,
    cpu_pct: Option<f64>,
    own_cpu_pct: f64,
    rss_max_kib: u64,
    hist: hdrhistogram::Histogram<u64>,
    series: Vec<Sample>,
    /// Seconds from the start when the broker was paused and resumed.
    outage: Option<(f64, f64)>,
}

/// Samples the run once a second (and tails alerts every 10 ms) through warm-up and the
/// measured time, pausing and resuming the Kafka broker on the outage's schedule.
async fn measure(load: &Load, target: &Target, counters: &Counters) -> anyhow::Result<Measured> {
    let mut tail = target.alerts_file.clone().map(|path| AlertTail { path, offset: 0, partial: Vec::new() });
    let mut hist = hdrhistogram::Histogram::<u64>::new(3)?;
    let mut scratch = hdrhistogram::Histogram::<u64>::new(3)?;
    let mut discard = hdrhistogram::Histogram::<u64>::new(3)?;
    let total = load.warmup + load.duration;
    let bar = indicatif::ProgressBar::new(total.as_secs());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len}s {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let pid = target.pid;
    let cpu = |p: Option<u32>| p.map_or(0, cpu_ticks);
    let started = Instant::now();
    let ticks = clock_ticks();
    let mut series = Vec::new();
    let (mut last_acked, mut last_cpu, mut last_t) = (0u64, cpu(pid), Instant::now());
    let (mut measured_from, mut acked_at_start, mut cpu_at_start, mut alerts_total, mut alerts_at_start) =
        (None, 0u64, 0u64, 0u64, 0u64);
    let (mut rss_max, mut own_cpu_at_start) = (0u64, 0u64);
    let mut second = Instant::now();
    let mut alerts_this_second = 0u64;
    let (mut paused_at, mut resumed_at) = (None, None);
    while started.elapsed() < total {
        tokio::time::sleep(Duration::from_millis(10)).await;
        // Latencies are only recorded in the measured part.
        let in_window = started.elapsed() >= load.warmup;
        let n = match &mut tail {
            Some(t) => t.poll(if in_window { &mut hist } else { &mut discard }, &mut scratch),
            None => 0,
        };
        alerts_total += n;
        alerts_this_second += n;
        if in_window && measured_from.is_none() {
            measured_from = Some(Instant::now());
            acked_at_start = counters.acked_events.load(Ordering::Relaxed);
            cpu_at_start = cpu(pid);
            own_cpu_at_start = cpu_ticks(std::process::id());
            alerts_at_start = alerts_total;
        }
        if let (Some(o), Some(broker)) = (&load.outage, &target.kafka) {
            let now = started.elapsed();
            if paused_at.is_none() && now >= load.warmup + o.at {
                broker.pause()?;
                paused_at = Some(now.as_secs_f64());
            }
            if paused_at.is_some() && resumed_at.is_none() && now >= load.warmup + o.at + o.length {
                broker.resume()?;
                resumed_at = Some(now.as_secs_f64());
            }
        }
        if second.elapsed() >= Duration::from_secs(1) {
            let now = Instant::now();
            let dt = now.duration_since(last_t).as_secs_f64();
            let acked = counters.acked_events.load(Ordering::Relaxed);
            let c = cpu(pid);
            let rss = pid.map_or(0, |p| proc_status(p, "VmRSS:"));
            rss_max = rss_max.max(rss);
            let kafka_spooled = if target.kafka.is_some() { target.spooled("kafka").await } else { None };
            let s = Sample {
                t: started.elapsed().as_secs_f64(),
                events_per_sec: (acked - last_acked) as f64 / dt,
                alerts_per_sec: alerts_this_second as f64 / dt,
                p99_ms: scratch.value_at_quantile(0.99) as f64 / 1000.0,
                rss_mib: rss as f64 / 1024.0,
                cpu_pct: (c - last_cpu) as f64 / ticks / dt * 100.0,
                kafka_spooled,
            };
            bar.set_position(started.elapsed().as_secs());
            let spool = s.kafka_spooled.map(|k| format!(", Kafka spool {k}")).unwrap_or_default();
            bar.set_message(format!(
                "{:.0} events/s, {:.0} alerts/s, p99 {:.1} ms, engine CPU {:.0}%, RSS {:.0} MiB{spool}",
                s.events_per_sec, s.alerts_per_sec, s.p99_ms, s.cpu_pct, s.rss_mib
            ));
            series.push(s);
            scratch.reset();
            (last_acked, last_cpu, last_t, second, alerts_this_second) = (acked, c, now, now, 0);
        }
    }
    if let (Some(broker), Some(_), None) = (&target.kafka, paused_at, resumed_at) {
        broker.resume()?;
        resumed_at = Some(started.elapsed().as_secs_f64());
    }
    bar.finish_and_clear();
    let seconds = measured_from.map_or(Duration::ZERO, |t| t.elapsed()).as_secs_f64().max(0.001);
    Ok(Measured {
        seconds,
        acked: counters.acked_events.load(Ordering::Relaxed) - acked_at_start,
        alerts: alerts_total - alerts_at_start,
        cpu_pct: pid.map(|p| (cpu_ticks(p) - cpu_at_start) as f64 / ticks / seconds * 100.0),
        own_cpu_pct: (cpu_ticks(std::process::id()) - own_cpu_at_start) as f64 / ticks / seconds * 100.0,
        rss_max_kib: rss_max,
        hist,
        series,
        outage: paused_at.zip(resumed_at),
    })
}

/// After the load stops: every spool drained, then the whole topic read back by an
/// independent consumer and compared with the file sink's alerts.
async fn check_kafka(target: &Target) -> anyhow::Result<serde_json::Value> {
    let t = Instant::now();
    let drained = target.wait_spools_empty(Duration::from_secs(300)).await;
    let tail_drain_s = t.elapsed().as_secs_f64();
    let file_ids: std::collections::HashSet<String> = match &target.alerts_file {
        Some(p) => std::fs::read_to_string(p)?
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["alert_id"].as_str().map(String::from))
            .collect(),
        None => Default::default(),
    };
    let brokers = target.kafka.as_ref().map(|k| k.brokers.clone()).unwrap_or_default();
    let expect = file_ids.len();
    let (messages, kafka_ids) =
        tokio::task::spawn_blocking(move || crate::broker::read_alert_ids(&brokers, expect, Duration::from_secs(120)))
            .await??;
    let missing = file_ids.difference(&kafka_ids).count();
    Ok(json!({
        "spools_drained": drained,
        "drain_after_load_s": (tail_drain_s * 10.0).round() / 10.0,
        "file_alerts": file_ids.len(),
        "messages": messages,
        "distinct_alerts": kafka_ids.len(),
        "duplicates": messages - kafka_ids.len(),
        "missing": missing,
    }))
}

#[allow(clippy::too_many_arguments)]
fn report(
    load: &Load,
    pack: &Path,
    frame_bytes: f64,
    m: &Measured,
    counters: &Counters,
    failed: usize,
    kafka: Option<serde_json::Value>,
    peers: Option<Peers>,
) -> serde_json::Value {
    let q = |p: f64| if m.hist.is_empty() { 0.0 } else { m.hist.value_at_quantile(p) as f64 / 1000.0 };
    let events_per_sec = m.acked as f64 / m.seconds;
    let mut report = json!({
        "mode": load.mode,
        "sensors": load.sensors,
        "encoding": if load.encoding == Encoding::Arrow { "arrow" } else { "ndjson" },
        "frame_rows": load.frame_rows,
        "frame_bytes_avg": frame_bytes.round(),
        "offered_events_per_sec": load.rate,
        "duration_s": m.seconds,
        "events_per_sec": events_per_sec.round(),
        "alerts_per_sec": (m.alerts as f64 / m.seconds * 10.0).round() / 10.0,
        "alerts": m.alerts,
        "p50_ms": q(0.5),
        "p99_ms": q(0.99),
        "p999_ms": q(0.999),
        "rss_max_mib": m.rss_max_kib / 1024,
        "cpu_pct": m.cpu_pct.map(f64::round),
        "load_generator_cpu_pct": m.own_cpu_pct.round(),
        "sensors_connected": load.sensors - failed,
        "rejected_rows": counters.rejected_rows.load(Ordering::Relaxed),
        "engine_errors": counters.errors.load(Ordering::Relaxed),
        "sensors_failed": failed,
        "pack": pack.display().to_string(),
        "window_rules": load.windows,
        "engine": load.remote.as_ref().map_or("started by the bench".to_string(), |r| format!("attached at {}", r.ingest)),
        "engine_config": load.engine_config,
        "sink_linger_ms": load.sink_linger.as_millis() as u64,
        "machine": {"cores": std::thread::available_parallelism().map_or(1, usize::from)},
        "series": m.series,
    });
    // Memory over a long run: the first and the last minute of the measured part.
    let measured: Vec<&Sample> = m.series.iter().filter(|s| s.t >= load.warmup.as_secs_f64()).collect();
    if measured.len() >= 120 {
        let mean = |s: &[&Sample]| s.iter().map(|s| s.rss_mib).sum::<f64>() / s.len() as f64;
        let (first, last) = (mean(&measured[..60]), mean(&measured[measured.len() - 60..]));
        report["rss_first_minute_mib"] = json!(first.round());
        report["rss_last_minute_mib"] = json!(last.round());
        report["rss_growth_mib"] = json!((last - first).round());
    }
    if let (Some(o), Some((paused, resumed))) = (&load.outage, m.outage) {
        report["outage"] = outage_summary(o, &m.series, paused, resumed);
    }
    if let Some(k) = kafka {
        report["kafka"] = k;
    }
    if let Some(p) = peers {
        let ratio = |peer: f64| (events_per_sec / peer * 1000.0).round() / 1000.0;
        for (name, v) in [("quinn_loopback", p.quinn), ("decode", p.decode), ("datafusion_batch", p.batch)] {
            report["peers"][name] = json!({"events_per_sec": v.round(), "ratio": ratio(v)});
        }
    }
    report
}

/// Ingest before, during and after the broker's outage, the Kafka spool's peak, and how long
/// it took to drain back to its level before the outage once the broker was back.
fn outage_summary(o: &Outage, series: &[Sample], paused: f64, resumed: f64) -> serde_json::Value {
    let mean = |from: f64, to: f64| {
        let v: Vec<f64> = series.iter().filter(|s| s.t > from && s.t <= to).map(|s| s.events_per_sec).collect();
        if v.is_empty() { 0.0 } else { (v.iter().sum::<f64>() / v.len() as f64).round() }
    };
    let end = series.last().map_or(resumed, |s| s.t);
    let spool = |s: &Sample| s.kafka_spooled.unwrap_or(0);
    let before = series.iter().filter(|s| s.t > paused - 5.0 && s.t <= paused).map(spool).max().unwrap_or(0);
    let peak = series.iter().filter(|s| s.t > paused).map(spool).max().unwrap_or(0);
    let drained = series.iter().find(|s| s.t > resumed && spool(s) <= before.max(peak / 100)).map(|s| s.t - resumed);
    json!({
        "at_s": o.at.as_secs_f64(),
        "length_s": o.length.as_secs_f64(),
        "events_per_sec_before": mean(paused - o.at.as_secs_f64(), paused),
        "events_per_sec_during": mean(paused, resumed),
        "events_per_sec_after": mean(resumed, end),
        "kafka_spool_before": before,
        "kafka_spool_peak": peak,
        "drain_s": drained.map(|d| (d * 10.0).round() / 10.0),
        "drain_alerts_per_sec": drained.filter(|d| *d > 0.0).map(|d| ((peak - before) as f64 / d).round()),
    })
}

fn print_table(report: &serde_json::Value) {
    println!("{:<44} {:>14}", "measure", "value");
    for (k, label) in [
        ("events_per_sec", "events/s accepted (acknowledged)"),
        ("alerts_per_sec", "alerts/s delivered (file sink)"),
        ("p50_ms", "event → alert p50 (stateless rules), ms"),
        ("p99_ms", "event → alert p99, ms"),
        ("p999_ms", "event → alert p99.9, ms"),
        ("cpu_pct", "engine CPU, % of one core"),
        ("load_generator_cpu_pct", "load generator CPU, % of one core"),
        ("rss_max_mib", "engine RSS max, MiB"),
        ("rss_first_minute_mib", "engine RSS, first measured minute, MiB"),
        ("rss_last_minute_mib", "engine RSS, last minute, MiB"),
        ("rejected_rows", "rejected rows"),
    ] {
        if !report[k].is_null() {
            println!("{label:<44} {:>14}", report[k]);
        }
    }
    if let Some(o) = report.get("outage") {
        for (k, label) in [
            ("events_per_sec_before", "outage: events/s before"),
            ("events_per_sec_during", "outage: events/s while Kafka is down"),
            ("events_per_sec_after", "outage: events/s after"),
            ("kafka_spool_peak", "outage: Kafka spool peak, alerts"),
            ("drain_s", "outage: drained back in, s"),
            ("drain_alerts_per_sec", "outage: net drain rate, alerts/s"),
        ] {
            println!("{label:<44} {:>14}", o[k]);
        }
    }
    if let Some(k) = report.get("kafka") {
        for (key, label) in [
            ("file_alerts", "Kafka: alerts in the file sink"),
            ("distinct_alerts", "Kafka: distinct alerts read back"),
            ("duplicates", "Kafka: duplicate messages"),
            ("missing", "Kafka: missing (must be 0)"),
        ] {
            println!("{label:<44} {:>14}", k[key]);
        }
    }
    if let Some(p) = report.get("peers") {
        for (name, label) in [
            ("quinn_loopback", "peer: raw QUIC loopback, same frames"),
            ("decode", "peer: decoding alone, all cores"),
            ("datafusion_batch", "peer: rule SQL as batch queries"),
        ] {
            println!("{label:<44} {:>14}  vedette = {} of it", p[name]["events_per_sec"], p[name]["ratio"]);
        }
    }
}

/// Throughput, p99 latency, the engine's RSS and CPU (and the Kafka spool, with a broker) over
/// the run, one point per second.
fn write_chart(path: &Path, report: &serde_json::Value, series: &[Sample], load: &Load) -> anyhow::Result<()> {
    use crate::chart::{BLUE_, GREEN_, Mark, ORANGE_, Panel, RED_};
    let line = |f: fn(&Sample) -> f64| series.iter().map(|s| (s.t, f(s))).collect::<Vec<_>>();
    let caption = format!(
        "vedette-bench {}: {} sensors, {} frames — {:.0} events/s, p99 {:.0} ms, RSS max {} MiB",
        report["mode"].as_str().unwrap_or("?"),
        report["sensors"],
        report["encoding"].as_str().unwrap_or("?"),
        report["events_per_sec"].as_f64().unwrap_or(0.0),
        report["p99_ms"].as_f64().unwrap_or(0.0),
        report["rss_max_mib"],
    );
    let mut panels = vec![
        Panel { y_label: "events/s accepted", lines: vec![("events/s", BLUE_, line(|s| s.events_per_sec))] },
        Panel { y_label: "event → alert p99, ms", lines: vec![("p99 (per second)", RED_, line(|s| s.p99_ms))] },
        Panel {
            y_label: "engine",
            lines: vec![
                ("RSS, MiB", GREEN_, line(|s| s.rss_mib)),
                ("CPU, % of one core", ORANGE_, line(|s| s.cpu_pct)),
            ],
        },
    ];
    if series.iter().any(|s| s.kafka_spooled.is_some()) {
        let spool = line(|s| s.kafka_spooled.unwrap_or(0) as f64);
        panels.push(Panel { y_label: "Kafka spool, alerts", lines: vec![("spooled", ORANGE_, spool)] });
    }
    let mut marks = vec![Mark { t: load.warmup.as_secs_f64(), label: "measuring from here" }];
    if let Some(o) = &report.get("outage") {
        let paused = load.warmup.as_secs_f64() + o["at_s"].as_f64().unwrap_or(0.0);
        marks.push(Mark { t: paused, label: "broker stopped" });
        marks.push(Mark { t: paused + o["length_s"].as_f64().unwrap_or(0.0), label: "broker back" });
    }
    crate::chart::write_png(path, &caption, &panels, &marks)
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
