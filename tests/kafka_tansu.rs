//! The Kafka sink against a real Kafka-protocol broker process (`tansu`, on 127.0.0.1 with
//! in-memory storage), stopped for longer than `message.timeout.ms` and started again while
//! sensors keep sending. tansu's in-memory storage starts empty after a restart, so what the
//! broker held is read back (by an independent consumer) before it is stopped, and what the
//! spool delivers after the restart is read back from the new broker: together they must be
//! every alert, first copies in order per key, and the file sink must have kept delivering.
//!
//! The broker binary comes from `VEDETTE_TANSU`, `PATH` or `~/.cargo/bin/tansu`; `./run-tests.sh`
//! installs it when missing (`cargo install tansu --locked --features dynostore`).

use std::collections::{BTreeMap, HashSet};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vedette_schemas::frame::Control;
use vedette_tests::{RawClient, TestEngine, eventually, kafka_alerts, ndjson_frame, read_alerts, shadow_cat};

fn tansu_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("VEDETTE_TANSU") {
        return PathBuf::from(p);
    }
    let on_path =
        std::env::var_os("PATH").iter().flat_map(std::env::split_paths).map(|d| d.join("tansu")).find(|p| p.is_file());
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    on_path.or_else(|| home.map(|h| h.join("bin/tansu")).filter(|p| p.is_file())).unwrap_or_else(|| {
        panic!(
            "the `tansu` broker is not installed: run ./run-tests.sh (it installs it), or \
             `cargo install tansu --locked --features dynostore`, or set VEDETTE_TANSU to its path"
        )
    })
}

/// A tansu broker process on 127.0.0.1, killed on drop.
struct Broker {
    child: Child,
}

impl Broker {
    fn start(port: u16) -> Self {
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu_binary())
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on 127.0.0.1:{port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        let status = Command::new(tansu_binary())
            .args(["topic", "create", "alerts", "--partitions", "3", "--broker", &url])
            .status()
            .expect("run tansu topic create");
        assert!(status.success(), "tansu topic create: {status}");
        Self { child }
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// First copies per key (sensor), in the order read: the pids.
fn first_copies_per_key(alerts: &[Value]) -> BTreeMap<String, Vec<i64>> {
    let mut seen = HashSet::new();
    let mut per_key: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for a in alerts {
        if seen.insert(a["alert_id"].as_str().unwrap().to_string()) {
            per_key
                .entry(a["sensor_id"].as_str().unwrap().to_string())
                .or_default()
                .push(a["row"]["pid"].as_i64().unwrap());
        }
    }
    per_key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_broker_stopped_and_restarted_mid_run_gets_every_alert() {
    let port = free_port();
    let brokers = format!("127.0.0.1:{port}");
    let broker = Broker::start(port);
    let b = brokers.clone();
    let t = TestEngine::start_with(move |c| {
        let text = format!(
            "[[sinks]]\nname = \"kafka\"\ntype = \"kafka\"\nbrokers = \"{b}\"\ntopic = \"alerts\"\nkey = \"sensor_id\"\n\
             message_timeout = \"1s\"\nbatch = {{ linger = \"1ms\" }}\nretry = {{ base = \"50ms\", cap = \"300ms\" }}\n\
             breaker = {{ open_for = \"300ms\" }}\n"
        );
        c.sinks.extend(vedette_config::Config::from_toml_str(&text).unwrap().sinks);
    })
    .await;
    // Two sensors = two message keys; frame n of sensor k carries pids n*10 + k*5 .. +4.
    let mut sensors = Vec::new();
    for id in ["s0", "s1"] {
        sensors.push(RawClient::connect(&t.sensor(id, "default"), 0).await.unwrap());
    }
    let send = async |sensors: &mut Vec<RawClient>, seq: u64| {
        for (k, c) in sensors.iter_mut().enumerate() {
            let rows: Vec<Value> = (0..5).map(|i| shadow_cat(seq as i64 * 10 + k as i64 * 5 + i)).collect();
            let mut s = c.data_stream().await;
            s.write_all(&ndjson_frame(seq, "process_events", &rows)).await.unwrap();
            s.finish().unwrap();
            c.until(|m| matches!(m, Control::Ack(a) if a.seq == seq)).await;
        }
    };
    let expected = |seqs: std::ops::RangeInclusive<i64>, k: i64| -> Vec<i64> {
        seqs.flat_map(|s| (0..5).map(move |i| s * 10 + k * 5 + i)).collect()
    };

    for seq in 1..=4 {
        send(&mut sensors, seq).await;
    }
    assert!(t.engine.wait_delivered(Duration::from_secs(30)).await, "delivered to the live broker");
    let b = brokers.clone();
    let before = tokio::task::spawn_blocking(move || kafka_alerts(&b, "before", 40)).await.unwrap();

    // The broker goes away (with everything it stored) for 3× message.timeout.ms.
    broker.stop();
    for seq in 5..=12 {
        send(&mut sensors, seq).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let file = t.data_dir().join("alerts.jsonl");
    assert!(eventually(Duration::from_secs(5), || read_alerts(&file).len() == 120).await, "file sink kept delivering");
    let r = t.api("GET", "/api/v1/sinks").await;
    let (_, body) = (r.status, r.body);
    let sinks: Value = serde_json::from_str(&body).unwrap();
    let kafka = sinks.as_array().unwrap().iter().find(|s| s["name"] == "kafka").unwrap();
    assert_eq!(kafka["spooled"], 80, "the outage's alerts wait in the Kafka spool: {kafka}");

    // A new broker process on the same address; alerts keep coming meanwhile.
    let _broker = Broker::start(port);
    send(&mut sensors, 13).await;
    assert!(t.engine.wait_delivered(Duration::from_secs(60)).await, "the Kafka spool drains into the new broker");
    let b = brokers.clone();
    let after = tokio::task::spawn_blocking(move || kafka_alerts(&b, "after", 90)).await.unwrap();

    let per_key_before = first_copies_per_key(&before);
    let per_key_after = first_copies_per_key(&after);
    for (k, id) in ["s0", "s1"].iter().enumerate() {
        assert_eq!(per_key_before[*id], expected(1..=4, k as i64), "{id}: before the stop, every alert in order");
        assert_eq!(per_key_after[*id], expected(5..=13, k as i64), "{id}: after the restart, the rest in order");
    }
    let copies = before.len() + after.len();
    assert!(copies <= 130 + 10, "at-least-once, not a flood of duplicates: {copies} messages for 130 alerts");
    t.engine.shutdown().await;
}
