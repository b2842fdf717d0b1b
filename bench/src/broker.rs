//! A tansu (Kafka-protocol) broker process for the end-to-end benches: started on 127.0.0.1
//! with in-memory storage, paused (SIGSTOP) and resumed (SIGCONT) for an outage — the broker
//! keeps what it stored, so everything delivered can be read back at the end — and read back
//! by an independent consumer.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// The topic the bench's Kafka sink writes.
pub(crate) const TOPIC: &str = "alerts";

pub(crate) struct Tansu {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub brokers: String,
}

/// `VEDETTE_TANSU`, else `tansu` on `PATH`, else `~/.cargo/bin/tansu` (where the README's test
/// command installs it).
fn binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("VEDETTE_TANSU") {
        return Ok(PathBuf::from(p));
    }
    let on_path =
        std::env::var_os("PATH").iter().flat_map(std::env::split_paths).map(|d| d.join("tansu")).find(|p| p.is_file());
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    on_path.or_else(|| home.map(|h| h.join("bin/tansu")).filter(|p| p.is_file())).context(
        "the `tansu` broker is not installed: run ./run-tests.sh once (it installs it), or \
         `cargo install tansu --locked --features dynostore`, or set VEDETTE_TANSU to its path",
    )
}

impl Tansu {
    /// Starts a broker on a free loopback port and creates the topic (3 partitions).
    pub(crate) fn start() -> anyhow::Result<Self> {
        let port = crate::fleet::free_port()?;
        let url = format!("tcp://127.0.0.1:{port}");
        let bin = binary()?;
        let child = Command::new(&bin)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let broker = Self { child, brokers: format!("127.0.0.1:{port}") };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&broker.brokers).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "tansu did not listen on {}", broker.brokers);
            std::thread::sleep(Duration::from_millis(20));
        }
        let status = Command::new(&bin)
            .args(["topic", "create", TOPIC, "--partitions", "3", "--broker", &url])
            .stdout(Stdio::null())
            .status()
            .context("running `tansu topic create`")?;
        anyhow::ensure!(status.success(), "tansu topic create: {status}");
        Ok(broker)
    }

    fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let status = Command::new("kill").args([sig, &self.child.id().to_string()]).status()?;
        anyhow::ensure!(status.success(), "kill {sig} {}: {status}", self.child.id());
        Ok(())
    }

    /// Freezes the broker (SIGSTOP): connections stay open, nothing is answered.
    pub(crate) fn pause(&self) -> anyhow::Result<()> {
        self.signal("-STOP")
    }

    /// Lets a paused broker run again (SIGCONT), with everything it had stored.
    pub(crate) fn resume(&self) -> anyhow::Result<()> {
        self.signal("-CONT")
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.resume();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the whole topic from the beginning with a fresh consumer group until `expect`
/// messages have arrived and a second passes without more (or `timeout`): (messages read,
/// distinct alert ids).
pub(crate) fn read_alert_ids(
    brokers: &str,
    expect: usize,
    timeout: Duration,
) -> anyhow::Result<(usize, HashSet<String>)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("bench-read-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[TOPIC])?;
    let deadline = Instant::now() + timeout;
    let (mut messages, mut ids) = (0usize, HashSet::new());
    let mut quiet_since: Option<Instant> = None;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                messages += 1;
                quiet_since = None;
                let alert: serde_json::Value = serde_json::from_slice(m.payload().unwrap_or_default())
                    .context("a Kafka message that is not a JSON alert")?;
                if let Some(id) = alert["alert_id"].as_str() {
                    ids.insert(id.to_string());
                }
            }
            Some(Err(e)) => anyhow::bail!("Kafka consumer: {e}"),
            None if messages >= expect
                && quiet_since.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(1) =>
            {
                break;
            }
            None => {}
        }
    }
    Ok((messages, ids))
}
