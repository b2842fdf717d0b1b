//! `vedette sensor`: run the reference sensor, or `vedette sensor enroll` it with a token.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use clap::{Args, Subcommand};
use tokio::sync::mpsc;
use vedette_engine::auth::Secret;
use vedette_engine::pki::{DEMO_SENSOR_ID, PkiPaths};
use vedette_engine::sensor::enroll::{EnrollRequest, SensorIdentity};
use vedette_engine::sensor::{self, SensorConfig, SensorStats};

/// Default engine address.
const DEFAULT_SERVER: &str = "127.0.0.1:7700";

/// How to run the sensor.
#[derive(Args)]
pub struct RunArgs {
    /// Engine QUIC address (default: from `<data-dir>/sensor.json`, else 127.0.0.1:7700).
    #[arg(long)]
    server: Option<SocketAddr>,
    /// Name in the engine's server certificate (default: from sensor.json, else localhost).
    #[arg(long)]
    server_name: Option<String>,
    /// Data dir holding `ca/ca.pem` and `sensors/<id>.{pem,key}` (and `sensor.json` after
    /// enrollment).
    #[arg(long, default_value = "./vedette-data")]
    data_dir: PathBuf,
    /// Sensor id (selects the certificate; default: from sensor.json, else demo-sensor).
    #[arg(long)]
    sensor_id: Option<String>,
    /// Explicit certificate (overrides the data dir lookup).
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Explicit private key.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Explicit CA certificate.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Replay the scripted attack scenario (every built-in rule fires).
    #[arg(long)]
    demo: bool,
    /// Do not watch /proc (with --demo: exit once the scenario is acknowledged).
    #[arg(long)]
    no_proc: bool,
    /// Renew the certificate over the control stream when less validity than this is left
    /// (e.g. `10d`, `36h`).
    #[arg(long, default_value = "10d", value_parser = vedette_config::duration::parse)]
    renew_before: std::time::Duration,
    /// Send the events of this file (`-`: stdin), one JSON object per line with `_table`
    /// naming its table; exit once all are acknowledged and say what was sent.
    #[arg(long)]
    events: Option<PathBuf>,
}

/// `vedette sensor` subcommands.
#[derive(Subcommand)]
pub enum SensorAction {
    /// Obtain a certificate with an enrollment token: the key is made here and never leaves
    /// this machine; the engine's CA is pinned by its SHA-256 fingerprint.
    Enroll {
        /// Engine QUIC address.
        #[arg(long)]
        server: SocketAddr,
        /// Name in the engine's server certificate.
        #[arg(long, default_value = "localhost")]
        server_name: String,
        /// Enrollment token (`vedette tokens create-enrollment`).
        #[arg(long, env = "VEDETTE_ENROLL_TOKEN", hide_env_values = true)]
        token: String,
        /// SHA-256 fingerprint of the engine's CA certificate, as `openssl x509 -noout
        /// -fingerprint -sha256 -in ca.pem` prints it (colons optional).
        #[arg(long)]
        ca_sha256: String,
        /// Where to write the key, certificate, CA and sensor.json.
        #[arg(long, default_value = "./vedette-sensor")]
        data_dir: PathBuf,
        /// Sensor id to enroll as (default: the host name).
        #[arg(long)]
        sensor_id: Option<String>,
        /// Replace an identity already in the data dir.
        #[arg(long)]
        force: bool,
    },
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "localhost".into())
}

/// Runs `vedette sensor enroll`.
pub async fn enroll(action: SensorAction) -> anyhow::Result<()> {
    let SensorAction::Enroll { server, server_name, token, ca_sha256, data_dir, sensor_id, force } = action;
    let host = host_name();
    let req = EnrollRequest {
        server,
        server_name,
        token: Secret::new(token),
        ca_sha256,
        sensor_id: sensor_id.unwrap_or_else(|| host.clone()),
        host,
        data_dir: data_dir.clone(),
        force,
    };
    let e = sensor::enroll::enroll(&req).await?;
    println!(
        "enrolled as {} (tenant {}), certificate valid until {}\n  key:         {}\n  certificate: {}\n  CA:          {}\nrun it with: vedette sensor --data-dir {}",
        e.identity.sensor_id,
        e.identity.tenant,
        e.not_after,
        e.key.display(),
        e.cert.display(),
        e.ca.display(),
        data_dir.display()
    );
    Ok(())
}

/// Runs the sensor until it is stopped (or, with `--events`/`--demo --no-proc`, until what it
/// had to send is acknowledged).
pub async fn run(a: RunArgs, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    let identity = SensorIdentity::load(&a.data_dir)?;
    let sensor_id = a
        .sensor_id
        .or_else(|| identity.as_ref().map(|i| i.sensor_id.clone()))
        .unwrap_or_else(|| DEMO_SENSOR_ID.to_string());
    vedette_schemas::identity::check_sensor_id(&sensor_id).map_err(anyhow::Error::msg)?;
    let server = match (a.server, &identity) {
        (Some(s), _) => s,
        (None, Some(i)) => i.server,
        (None, None) => DEFAULT_SERVER.parse().expect("valid default address"),
    };
    let server_name = a
        .server_name
        .or_else(|| identity.as_ref().map(|i| i.server_name.clone()))
        .unwrap_or_else(|| "localhost".into());
    let paths = PkiPaths::new(&a.data_dir);
    let (cert, key) = match (a.cert, a.key) {
        (Some(c), Some(k)) => (c, k),
        _ => paths.sensor(&sensor_id),
    };
    let host = host_name();
    let mut cfg = SensorConfig::new(server, a.ca.unwrap_or(paths.ca_cert), cert, key, &host);
    cfg.server_name = server_name;
    cfg.renew_before = a.renew_before;
    let stats = Arc::new(SensorStats::with_state(paths.sensors.join(format!("{sensor_id}.state.json"))));
    let (tx, rx) = mpsc::channel(10_000);
    if a.demo {
        let now = chrono::Utc::now().timestamp_micros();
        for ev in sensor::demo_scenario(&host, now) {
            tx.send(ev).await?;
        }
        // The windowed brute-force rule fires when its one-minute window closes: once the
        // minute is over, send an event stamped then (the channel, and so the sensor, stays
        // open until it is sent).
        let at = sensor::demo_window_closes_at(now);
        eprintln!(
            "demo: scenario sent; the windowed rule linux.ssh_bruteforce fires when its one-minute window closes, in {} s",
            (at - now + 999_999) / 1_000_000
        );
        let (closer, host) = (tx.clone(), host.clone());
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_micros((at - now).max(0).unsigned_abs())).await;
            let now = chrono::Utc::now().timestamp_micros();
            let _ = closer.send(sensor::demo_closing_event(&host, now.max(at))).await;
        });
    }
    let reader = match a.events {
        Some(path) => {
            let tx = tx.clone();
            Some(tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
                let name = path.display().to_string();
                let n = if name == "-" {
                    sensor::events::pump(std::io::stdin().lock(), "stdin", &tx)?
                } else {
                    let f = std::fs::File::open(&path).with_context(|| format!("opening {name}"))?;
                    sensor::events::pump(std::io::BufReader::new(f), &name, &tx)?
                };
                Ok(n)
            }))
        }
        None => None,
    };
    let once = reader.is_some() || a.no_proc;
    if once {
        drop(tx);
    } else {
        tokio::spawn(sensor::watch_proc(host, tx, stats.controls.subscribe()));
    }
    tokio::select! {
        r = sensor::run(cfg, rx, Arc::clone(&stats)) => r?,
        _ = shutdown => {}
    }
    if let Some(reader) = reader {
        reader.await.context("the events reader failed")??;
        let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        eprintln!(
            "sent {} event(s) ({} filtered out by the sensor's config) in {} frame(s); {} acknowledged; {} row(s) rejected by the engine",
            n(&stats.events_sent),
            n(&stats.events_filtered),
            n(&stats.frames_sent),
            n(&stats.frames_acked),
            n(&stats.rows_rejected)
        );
        for e in stats.errors.lock().expect("not poisoned").iter() {
            eprintln!("engine: {e}");
        }
    }
    Ok(())
}
