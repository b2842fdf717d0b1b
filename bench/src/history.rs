//! `vedette-bench history`: the alert history at scale. Fills a history with N alerts (a
//! realistic mix of tenants, rules, sensors and severities) at the rate the history sink writes
//! (batches of 1,000, flushed), then starts a real engine on that data dir and measures:
//! filtered pages over HTTP (p50/p99 of 1,000 queries), and the extra RSS of 100 live-stream
//! clients receiving alerts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use vedette_engine::history::{History, Retention};

const TENANTS: usize = 20;
const RULES: usize = 100;
const SENSORS: usize = 1000;
const SEVERITIES: [&str; 5] = ["info", "low", "medium", "high", "critical"];

/// Alert `i` of the mix: rule popularity is skewed (rule r fires ∝ 1/(r+1)), severities too.
fn alert(i: u64, base: chrono::DateTime<chrono::Utc>) -> Vec<u8> {
    let mut a = vedette_pipelines::formats::sample_alert();
    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let rule = skewed(h, RULES);
    a.alert_id = uuid::Uuid::from_u64_pair(0xbe9c_0000_0000_0000, i);
    a.rule_id = format!("bench.rule_{rule:03}");
    a.severity = serde_json::from_value(SEVERITIES[skewed(h >> 20, 5)].into()).expect("severity");
    let sensor = (h >> 32) as usize % SENSORS;
    a.sensor_id = Some(format!("sensor-{sensor:04}"));
    a.host = Some(format!("host-{sensor:04}"));
    a.tenant = Some(format!("tenant-{:02}", sensor % TENANTS));
    // 10 M alerts over the last ~3 days: one every ~25 ms.
    a.detected_at = base + chrono::Duration::milliseconds(i as i64 * 25);
    a.ts = a.detected_at;
    serde_json::to_vec(&a).expect("alerts serialize")
}

fn skewed(h: u64, n: usize) -> usize {
    // Zipf-like: index k with weight 1/(k+1).
    let total: f64 = (1..=n).map(|k| 1.0 / k as f64).sum();
    let mut x = (h % 1_000_000) as f64 / 1_000_000.0 * total;
    for k in 0..n {
        x -= 1.0 / (k + 1) as f64;
        if x <= 0.0 {
            return k;
        }
    }
    n - 1
}

pub(crate) fn dir_bytes(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Runs the bench; `keep` reuses a filled data dir (`--data-dir`) instead of a temp one.
pub async fn run(
    alerts: u64,
    data_dir: Option<std::path::PathBuf>,
    queries: usize,
    clients: usize,
) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = data_dir.unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let base = chrono::Utc::now() - chrono::Duration::milliseconds(alerts as i64 * 25);
    {
        let retention = Retention { max_age: Duration::from_secs(3650 * 86_400), max_bytes: u64::MAX };
        let history = History::open(&dir.join("history"), retention)?;
        let have = history.size().0 as u64;
        if have < alerts {
            let started = Instant::now();
            let mut last_report = Instant::now();
            let mut i = have;
            let (mut t_gen, mut t_append, mut t_flush) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
            while i < alerts {
                let n = (alerts - i).min(1000);
                let t0 = Instant::now();
                let batch: Vec<Vec<u8>> = (i..i + n).map(|k| alert(k, base)).collect();
                let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
                let t1 = Instant::now();
                history.append(&refs)?;
                let t2 = Instant::now();
                history.flush().await?;
                t_gen += t1 - t0;
                t_append += t2 - t1;
                t_flush += t2.elapsed();
                i += n;
                if last_report.elapsed() > Duration::from_secs(10) {
                    last_report = Instant::now();
                    let rate = (i - have) as f64 / started.elapsed().as_secs_f64();
                    println!(
                        "history: {i} stored, {rate:.0} alerts/s, RSS {} MiB (time: generating {:.0}%, append {:.0}%, flush {:.0}%)",
                        super::rss_kb() / 1024,
                        100.0 * t_gen.as_secs_f64() / started.elapsed().as_secs_f64(),
                        100.0 * t_append.as_secs_f64() / started.elapsed().as_secs_f64(),
                        100.0 * t_flush.as_secs_f64() / started.elapsed().as_secs_f64()
                    );
                }
            }
            let took = started.elapsed().as_secs_f64();
            let own = (t_append + t_flush).as_secs_f64();
            println!(
                "history: the history's own share (append + flush, without generating the alerts): {:.0} alerts/s",
                (alerts - have) as f64 / own
            );
            let (n, bytes) = history.size();
            println!(
                "history: write {} alerts in batches of 1,000 (flushed each): {:.0} alerts/s ({:.1} MB/s of alert JSON); \
                 {n} stored, {:.1} GB of JSON, {:.1} GB on disk",
                alerts - have,
                (alerts - have) as f64 / took,
                bytes as f64 / took / 1e6 * ((alerts - have) as f64 / n as f64),
                bytes as f64 / 1e9,
                (history.disk_bytes() + dir_bytes(&dir.join("history/ids"))) as f64 / 1e9
            );
        } else {
            println!("history: reusing {have} stored alerts in {}", dir.display());
        }
    }
    query_and_stream(&dir, base, alerts, queries, clients).await
}

async fn query_and_stream(
    dir: &std::path::Path,
    base: chrono::DateTime<chrono::Utc>,
    alerts: u64,
    queries: usize,
    clients: usize,
) -> anyhow::Result<()> {
    vedette_actors::sinks::http::ensure_crypto_provider();
    let text = format!(
        "data_dir = \"{}\"\n[ingest]\nlisten = \"127.0.0.1:0\"\n[api]\nlisten = \"127.0.0.1:0\"\n\
         rate_limit_per_sec = 1000000\nrate_limit_burst = 1000000\n[history]\nmax_bytes = \"1000GiB\"\nmax_age = \"3650d\"\n\
         [[sinks]]\nname = \"file\"\ntype = \"file\"\npath = \"alerts.jsonl\"\n",
        dir.display()
    );
    let engine = vedette_engine::EngineHandle::start(vedette_config::Config::from_toml_str(&text)?).await?;
    let token = std::fs::read_to_string(dir.join("admin.token"))?.trim().to_string();
    let client = reqwest::Client::new();
    let url = |q: &str| format!("http://{}/api/v1/alerts?{q}", engine.api_addr);
    let span_ms = alerts as i64 * 25;
    let mut hist = Histogram::<u64>::new(3)?;
    let mut returned = 0usize;
    let mut kinds = [0usize; 6];
    for q in 0..queries {
        let h = (q as u64).wrapping_mul(0x2545_F491_4F6C_DD1D);
        let t0 = base + chrono::Duration::milliseconds((h % span_ms.max(1) as u64) as i64);
        let time = |hours: i64| {
            format!(
                "since={}&until={}",
                t0.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                (t0 + chrono::Duration::hours(hours)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
        };
        let kind = q % 6;
        kinds[kind] += 1;
        let query = match kind {
            0 => format!("rule=bench.rule_{:03}", h % RULES as u64),
            1 => format!("sensor=sensor-{:04}&severity=high", (h >> 8) % SENSORS as u64),
            2 => format!("tenant=tenant-{:02}&rule=bench.rule_{:03}", h % TENANTS as u64, (h >> 16) % 10),
            3 => time(1),
            4 => format!("severity=critical&{}", time(6)),
            _ => String::from("limit=100"),
        };
        let started = Instant::now();
        let resp = client.get(url(&format!("{query}&limit=100"))).bearer_auth(&token).send().await?;
        anyhow::ensure!(resp.status().is_success(), "{query}: {}", resp.status());
        let body: serde_json::Value = resp.json().await?;
        hist.record(started.elapsed().as_micros() as u64)?;
        returned += body["items"].as_array().map_or(0, Vec::len);
    }
    println!(
        "history: {queries} filtered pages (limit 100; rule | sensor+severity | tenant+rule | 1 h range | critical in 6 h | \
         newest) over {alerts} alerts via HTTP: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {:.0} alerts per page on average",
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.max() as f64 / 1000.0,
        returned as f64 / queries as f64
    );

    // Live stream clients.
    let before = super::rss_kb();
    let mut tasks = Vec::new();
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    for _ in 0..clients {
        let resp =
            client.get(format!("http://{}/api/v1/alerts/stream", engine.api_addr)).bearer_auth(&token).send().await?;
        anyhow::ensure!(resp.status().is_success(), "stream: {}", resp.status());
        let received = Arc::clone(&received);
        tasks.push(tokio::spawn(async move {
            let mut resp = resp;
            // `event: alert` may be split across chunks: keep the tail of the previous one.
            let mut carry: Vec<u8> = Vec::new();
            while let Ok(Some(chunk)) = resp.chunk().await {
                carry.extend_from_slice(&chunk);
                let n = carry.windows(12).filter(|w| *w == b"event: alert").count();
                received.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                let keep = carry.len().min(11);
                carry.drain(..carry.len() - keep);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let connected = super::rss_kb();
    let live = 2000u64;
    let history = Arc::clone(engine.history());
    let now = chrono::Utc::now();
    // Ids of this run only (a reused history already holds earlier runs' live alerts).
    let run = (now.timestamp_micros() as u64 % 1_000_000_000) * 10_000 + 1_000_000_000;
    for chunk in (0..live).collect::<Vec<_>>().chunks(100) {
        let batch: Vec<Vec<u8>> = chunk.iter().map(|k| alert(run + k, now)).collect();
        let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        history.append(&refs)?;
        history.flush().await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.load(std::sync::atomic::Ordering::Relaxed) < live * clients as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = super::rss_kb();
    println!(
        "history: {clients} live-stream clients: RSS {} MiB before, {} MiB connected, {} MiB after {live} alerts to each \
         ({} of {} delivered) — extra {} MiB (engine and clients share this process)",
        before / 1024,
        connected / 1024,
        after / 1024,
        received.load(std::sync::atomic::Ordering::Relaxed),
        live * clients as u64,
        after.saturating_sub(before) / 1024
    );
    for t in tasks {
        t.abort();
    }
    engine.shutdown().await;
    Ok(())
}
