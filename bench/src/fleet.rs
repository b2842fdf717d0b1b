//! `vedette-bench fleet`: N sensors connected at once from this one process to an engine in
//! its own process (so its RSS and CPU are its own): handshake rate and latency, the engine's
//! RSS with N sessions, its CPU while they only send heartbeats, and how long revoking one of
//! them takes to close its connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};
use vedette_actors::tls;
use vedette_engine::pki;
use vedette_engine::sensor::read_control;
use vedette_schemas::frame::{ALPN, Control, Heartbeat, Hello, PROTOCOL_VERSION};

/// Runs the engine of the bench in this process (the parent started it): `fleet-engine`.
pub async fn engine(data_dir: std::path::PathBuf, ingest: SocketAddr, api: SocketAddr) -> anyhow::Result<()> {
    let text = format!(
        "data_dir = \"{}\"\n[ingest]\nlisten = \"{ingest}\"\n[api]\nlisten = \"{api}\"\n[log]\nlevel = \"warn\"\n[[sinks]]\nname = \"file\"\ntype = \"file\"\npath = \"alerts.jsonl\"\n",
        data_dir.display()
    );
    crate::load::serve(&text).await
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub(crate) fn proc_status(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

/// CPU time (user + system) of a process, in clock ticks.
pub(crate) fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`: state is field 3; utime 14, stime 15.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<u64> = after.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
}

pub(crate) fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

struct Sensor {
    id: String,
    client: quinn::ClientConfig,
}

/// One sensor: connect, HELLO/WELCOME, then a heartbeat every `every` until the connection
/// closes; reports its handshake time, then how its connection ended.
async fn run_sensor(
    ep: quinn::Endpoint,
    server: SocketAddr,
    s: Sensor,
    every: Duration,
    connected: mpsc::UnboundedSender<(String, Duration, Option<quinn::Connection>)>,
) {
    let started = Instant::now();
    let session = async {
        let conn = ep.connect_with(s.client, server, "localhost").ok()?.await.ok()?;
        let (mut send, mut recv) = conn.open_bi().await.ok()?;
        let hello = Hello {
            protocol: PROTOCOL_VERSION,
            sensor_version: "bench/1".into(),
            host: Some(s.id.clone()),
            sensor_id: None,
            schemas: Default::default(),
            low_seq: 0,
        };
        send.write_all(&Control::Hello(hello).to_frame()).await.ok()?;
        match read_control(&mut recv).await.ok()? {
            Control::Welcome(_) => Some((conn, send, recv)),
            _ => None,
        }
    }
    .await;
    let Some((conn, mut send, mut recv)) = session else {
        let _ = connected.send((s.id, started.elapsed(), None));
        return;
    };
    let _ = connected.send((s.id, started.elapsed(), Some(conn.clone())));
    // Spread heartbeats over the interval.
    let offset = Duration::from_millis(fastrand_ms(every));
    tokio::time::sleep(offset).await;
    let reader = tokio::spawn(async move { while read_control(&mut recv).await.is_ok() {} });
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let hb = Control::Heartbeat(Heartbeat { ts: chrono::Utc::now().timestamp_micros() });
                if send.write_all(&hb.to_frame()).await.is_err() { break; }
            }
            _ = conn.closed() => break,
        }
    }
    reader.abort();
}

fn fastrand_ms(every: Duration) -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    u64::from(nanos) % every.as_millis().max(1) as u64
}

/// The bench.
pub async fn run(n: usize, concurrency: usize, idle: u64, json: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    pki::ensure_dev_pki(dir.path())?;
    let paths = pki::PkiPaths::new(dir.path());
    let ca =
        pki::CertPem { cert: std::fs::read_to_string(&paths.ca_cert)?, key: std::fs::read_to_string(&paths.ca_key)? };
    let t = Instant::now();
    let mut sensors = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("s{i:05}");
        let c = pki::issue_sensor(&ca, &id, "bench", 30)?;
        let client = tls::client_config(ca.cert.as_bytes(), Some((c.cert.as_bytes(), c.key.as_bytes())), ALPN)?;
        sensors.push(Sensor { id, client });
    }
    println!("fleet: {n} sensor certificates issued in {:.1}s", t.elapsed().as_secs_f64());

    let (ingest, api) =
        (SocketAddr::from(([127, 0, 0, 1], free_port()?)), SocketAddr::from(([127, 0, 0, 1], free_port()?)));
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["fleet-engine", "--data-dir"])
        .arg(dir.path())
        .args(["--ingest", &ingest.to_string(), "--api", &api.to_string()])
        .stdin(std::process::Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(api).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "the engine did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss_idle = proc_status(pid, "VmRSS:");

    let ep = crate::load::endpoint(None)?;
    let every = Duration::from_secs(5);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let permits = Arc::new(Semaphore::new(concurrency));
    let started = Instant::now();
    let cpu0 = cpu_ticks(pid);
    let feeder = {
        let (ep, permits, tx) = (ep.clone(), Arc::clone(&permits), tx.clone());
        tokio::spawn(async move {
            for s in sensors {
                let Ok(permit) = Arc::clone(&permits).acquire_owned().await else { return };
                let (ep, tx) = (ep.clone(), tx.clone());
                tokio::spawn(async move {
                    // The permit is held for the handshake only.
                    let (inner_tx, mut inner_rx) = mpsc::unbounded_channel();
                    let fwd = tokio::spawn(async move {
                        if let Some(first) = inner_rx.recv().await {
                            drop(permit);
                            let _ = tx.send(first);
                        }
                    });
                    run_sensor(ep, ingest, s, every, inner_tx).await;
                    let _ = fwd.await;
                });
            }
        })
    };
    drop(tx);
    let mut hist = hdrhistogram::Histogram::<u64>::new(3)?;
    let mut conns = std::collections::HashMap::new();
    let mut failed = 0usize;
    while conns.len() + failed < n {
        let Some((id, took, conn)) = rx.recv().await else { break };
        hist.record(took.as_micros() as u64)?;
        match conn {
            Some(c) => {
                conns.insert(id, c);
            }
            None => failed += 1,
        }
    }
    feeder.await?;
    let took = started.elapsed();
    let cpu_connect = (cpu_ticks(pid) - cpu0) as f64 / clock_ticks();
    println!(
        "fleet: {} connected, {failed} failed in {:.1}s: {:.0} handshakes/s (HELLO→WELCOME included), latency p50 {:.1} ms p99 {:.1} ms, engine CPU {:.1} s ({:.0}% of one core)",
        conns.len(),
        took.as_secs_f64(),
        conns.len() as f64 / took.as_secs_f64(),
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        cpu_connect,
        cpu_connect / took.as_secs_f64() * 100.0
    );

    // Idle: heartbeats only.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (c0, t0) = (cpu_ticks(pid), Instant::now());
    tokio::time::sleep(Duration::from_secs(idle)).await;
    let cpu = (cpu_ticks(pid) - c0) as f64 / clock_ticks() / t0.elapsed().as_secs_f64();
    let (_, metrics) = http(api, "GET", "/metrics", None).await?;
    let connected_metric = metrics
        .lines()
        .find(|l| l.starts_with("vedette_ingest_sensors_connected "))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?")
        .to_string();
    let rss_with_sessions = proc_status(pid, "VmRSS:");
    let mut report = serde_json::json!({
        "mode": "scale",
        "sensors": n,
        "sensors_connected": conns.len(),
        "sensors_failed": failed,
        "connect_s": took.as_secs_f64(),
        "handshakes_per_sec": (conns.len() as f64 / took.as_secs_f64()).round(),
        "handshake_p50_ms": hist.value_at_quantile(0.5) as f64 / 1000.0,
        "handshake_p99_ms": hist.value_at_quantile(0.99) as f64 / 1000.0,
        "rss_before_mib": rss_idle / 1024,
        "rss_mib": rss_with_sessions / 1024,
        "rss_max_mib": proc_status(pid, "VmHWM:") / 1024,
        "idle_cpu_pct": (cpu * 1000.0).round() / 10.0,
        "sessions_reported_by_engine": connected_metric,
    });
    println!(
        "fleet: engine with {connected_metric} sessions: RSS {} MiB (idle before: {} MiB, peak {} MiB); heartbeats ({:.0}/s) + QUIC keep-alives cost {:.1}% of one core over {idle}s",
        rss_with_sessions / 1024,
        rss_idle / 1024,
        proc_status(pid, "VmHWM:") / 1024,
        conns.len() as f64 / every.as_secs_f64(),
        cpu * 100.0
    );

    // Revoke one: its connection closes.
    let victim = format!("s{:05}", n / 2);
    if let Some(conn) = conns.get(&victim).cloned() {
        let token = std::fs::read_to_string(dir.path().join("admin.token"))?.trim().to_string();
        let t = Instant::now();
        let (status, body) = http(api, "POST", &format!("/api/v1/sensors/{victim}/revoke"), Some(&token)).await?;
        anyhow::ensure!(status == 200, "revoke answered {status}: {body}");
        tokio::time::timeout(Duration::from_secs(5), conn.closed()).await?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        println!("fleet: revoking {victim} among {} closed its connection in {ms:.0} ms", conns.len());
        report["revoke_ms"] = serde_json::json!((ms * 10.0).round() / 10.0);
    }
    stop_engine(&mut child, Duration::from_secs(30)).await;
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
        eprintln!("fleet: results in {}", path.display());
    }
    Ok(())
}

/// Closes the bench engine's stdin (its signal to shut down), waits up to `grace` for it to
/// exit, then kills it.
pub(crate) async fn stop_engine(child: &mut std::process::Child, grace: Duration) {
    drop(child.stdin.take());
    let _ = tokio::time::timeout(grace, async {
        while child.try_wait().ok().flatten().is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let _ = child.kill();
}

/// One HTTP/1.1 request over loopback (plain; the bench's engine listens on 127.0.0.1).
pub(crate) async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let req =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}
