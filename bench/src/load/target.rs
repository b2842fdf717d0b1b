//! The engine under test: started by the bench in its own process (the pack under test, ten
//! tumbling-window rules, a file sink and, with `--kafka`, a Kafka sink on a tansu broker), or
//! one already running at an address (`--engine`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::Context;
use vedette_engine::pki;

use super::Load;
use crate::broker::Tansu;
use crate::fleet::free_port;

/// An engine already running, given on the command line.
#[derive(Clone)]
pub struct Remote {
    /// Its QUIC ingest address.
    pub ingest: SocketAddr,
    /// Its data dir (or a copy of its `pki/`): the CA that issues the bench's sensor
    /// certificates, `admin.token`, and `alerts.jsonl` if it has such a file sink.
    pub dir: PathBuf,
    /// Its API address (sink status, spool depths).
    pub api: Option<SocketAddr>,
    /// Its process id on this machine (CPU and RSS).
    pub pid: Option<u32>,
}

pub(super) struct Target {
    pub ingest: SocketAddr,
    pub pid: Option<u32>,
    pub ca: pki::CertPem,
    /// The file sink's output, tailed for alerts and latency.
    pub alerts_file: Option<PathBuf>,
    pub kafka: Option<Tansu>,
    api: Option<SocketAddr>,
    token: Option<String>,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

impl Target {
    /// Starts the bench's own engine (in a child process) and waits for its API.
    pub(super) async fn start_local(load: &Load, pack: &Path) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        pki::ensure_dev_pki(dir.path())?;
        let paths = pki::PkiPaths::new(dir.path());
        let ca = pki::CertPem {
            cert: std::fs::read_to_string(&paths.ca_cert)?,
            key: std::fs::read_to_string(&paths.ca_key)?,
        };
        write_packs(dir.path(), pack, load.windows)?;
        let kafka = if load.kafka { Some(Tansu::start()?) } else { None };
        let (ingest, api) =
            (SocketAddr::from(([127, 0, 0, 1], free_port()?)), SocketAddr::from(([127, 0, 0, 1], free_port()?)));
        let extra: String = load.engine_config.iter().map(|l| format!("{l}\n")).collect();
        let linger = load.sink_linger.as_millis();
        let mut config = format!(
            "data_dir = \"{}\"\n{extra}[ingest]\nlisten = \"{ingest}\"\n[api]\nlisten = \"{api}\"\n[log]\nlevel = \"warn\"\n\
             [rules]\nbuiltin = false\npacks_dir = \"packs\"\nallow_unsigned = true\n\
             [alerts]\nstorm_max_per_rule = 0\n\
             [[sinks]]\nname = \"file\"\ntype = \"file\"\npath = \"alerts.jsonl\"\nbatch = {{ linger = \"{linger}ms\" }}\n",
            dir.path().display(),
        );
        if let Some(k) = &kafka {
            // The sink's own defaults otherwise (message_timeout, retry, breaker, compression).
            config.push_str(&format!(
                "[[sinks]]\nname = \"kafka\"\ntype = \"kafka\"\nbrokers = \"{}\"\ntopic = \"{}\"\nkey = \"sensor_id\"\n\
                 batch = {{ linger = \"{linger}ms\" }}\n",
                k.brokers,
                crate::broker::TOPIC
            ));
        }
        let config_path = dir.path().join("bench.toml");
        std::fs::write(&config_path, config)?;
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .args(["engine", "--config"])
            .arg(&config_path)
            .stdin(std::process::Stdio::piped())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::net::TcpStream::connect(api).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "the engine did not start");
            anyhow::ensure!(child.try_wait()?.is_none(), "the engine exited");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let token = std::fs::read_to_string(dir.path().join("admin.token")).ok().map(|t| t.trim().to_string());
        Ok(Self {
            ingest,
            pid: Some(child.id()),
            ca,
            alerts_file: Some(dir.path().join("alerts.jsonl")),
            kafka,
            api: Some(api),
            token,
            child: Some(child),
            _dir: Some(dir),
        })
    }

    /// An engine already running: its CA must be readable to issue the sensors' certificates.
    pub(super) fn attach(remote: &Remote) -> anyhow::Result<Self> {
        let paths = pki::PkiPaths::new(&remote.dir);
        let read = |p: &Path| {
            std::fs::read_to_string(p).with_context(|| {
                format!("--engine-dir: reading {} (the engine's CA issues the bench's sensors)", p.display())
            })
        };
        let ca = pki::CertPem { cert: read(&paths.ca_cert)?, key: read(&paths.ca_key)? };
        Ok(Self {
            ingest: remote.ingest,
            pid: remote.pid,
            ca,
            // Tailed if it appears (a file sink with `path = "alerts.jsonl"`).
            alerts_file: Some(remote.dir.join("alerts.jsonl")),
            kafka: None,
            api: remote.api,
            token: std::fs::read_to_string(remote.dir.join("admin.token")).ok().map(|t| t.trim().to_string()),
            child: None,
            _dir: None,
        })
    }

    /// `GET /api/v1/sinks`: each sink's status (`spooled`, `breaker`, …), when the API is known.
    pub(super) async fn sinks(&self) -> Option<Vec<serde_json::Value>> {
        let api = self.api?;
        let get = crate::fleet::http(api, "GET", "/api/v1/sinks", self.token.as_deref());
        match tokio::time::timeout(Duration::from_secs(2), get).await {
            Ok(Ok((200, body))) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    }

    /// Alerts waiting in the spool of the sink called `name`.
    pub(super) async fn spooled(&self, name: &str) -> Option<u64> {
        self.sinks().await?.iter().find(|s| s["name"] == name)?["spooled"].as_u64()
    }

    /// Waits until every sink's spool is empty (everything delivered): false on timeout or
    /// when the API cannot be read.
    pub(super) async fn wait_spools_empty(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(sinks) = self.sinks().await
                && sinks.iter().all(|s| s["spooled"].as_u64() == Some(0))
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }

    /// Stops the bench's own engine (an attached one is left running).
    pub(super) async fn stop(&mut self) {
        if let Some(child) = &mut self.child {
            crate::fleet::stop_engine(child, Duration::from_secs(20)).await;
        }
    }
}

/// The standard pack, found from the current directory or the bench crate's.
pub(super) fn default_pack() -> PathBuf {
    let here = PathBuf::from("bench/packs/sigma-linux.yaml");
    if here.exists() { here } else { PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("packs/sigma-linux.yaml") }
}

/// The pack under test and the first `windows` of the ten tumbling-window rules, in the
/// engine's packs directory.
fn write_packs(data_dir: &Path, pack: &Path, windows: usize) -> anyhow::Result<()> {
    let dir = data_dir.join("packs");
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(pack, dir.join("pack-under-test.yaml"))?;
    let rules = crate::window_rules(crate::WindowKindArg::Tumble);
    if windows == 0 {
        return Ok(());
    }
    let mut text = String::from("name: bench-windows\nversion: 1\nrules:\n");
    for (id, sql) in rules.into_iter().take(windows) {
        text.push_str(&format!(
            "  - id: bench.{id}\n    name: \"Bench window {id}\"\n    severity: low\n    sql: {}\n",
            serde_json::to_string(&sql)?
        ));
    }
    std::fs::write(dir.join("bench-windows.yaml"), text)?;
    Ok(())
}
