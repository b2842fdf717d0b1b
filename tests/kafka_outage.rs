//! Kafka down for longer than `message.timeout.ms` while sensors keep sending: detection and
//! the file sink go on, the Kafka spool holds the alerts, and once the broker is back every
//! alert reaches Kafka (read back by an independent consumer), first copies in order.

use std::collections::HashSet;
use std::time::Duration;

use rdkafka::mocking::MockCluster;
use serde_json::Value;
use vedette_schemas::frame::Control;
use vedette_tests::{RawClient, TestEngine, eventually, kafka_alerts, ndjson_frame, read_alerts, shadow_cat};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_outage_loses_nothing_and_does_not_hold_up_the_file_sink() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("alerts", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let b = brokers.clone();
    let t = TestEngine::start_with(move |c| {
        let text = format!(
            "[[sinks]]\nname = \"kafka\"\ntype = \"kafka\"\nbrokers = \"{b}\"\ntopic = \"alerts\"\nmessage_timeout = \"1s\"\n\
             batch = {{ linger = \"1ms\" }}\nretry = {{ base = \"50ms\", cap = \"300ms\" }}\nbreaker = {{ open_for = \"300ms\" }}\n"
        );
        c.sinks.extend(vedette_config::Config::from_toml_str(&text).unwrap().sinks);
    })
    .await;
    let mut c = RawClient::connect(&t.sensor("s", "default"), 0).await.unwrap();
    let mut send = async |seq: u64| {
        let rows: Vec<Value> = (0..5).map(|i| shadow_cat(seq as i64 * 10 + i)).collect();
        let mut s = c.data_stream().await;
        s.write_all(&ndjson_frame(seq, "process_events", &rows)).await.unwrap();
        s.finish().unwrap();
        c.until(|m| matches!(m, Control::Ack(a) if a.seq == seq)).await;
    };
    for seq in 1..=4 {
        send(seq).await;
    }
    assert!(t.engine.wait_delivered(Duration::from_secs(20)).await);

    cluster.broker_down(1).unwrap();
    let file = t.data_dir().join("alerts.jsonl");
    for seq in 5..=12 {
        send(seq).await;
    }
    // Three message timeouts later the file sink has everything; Kafka's spool holds 40.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(eventually(Duration::from_secs(5), || read_alerts(&file).len() == 60).await, "file sink kept delivering");
    let r = t.api("GET", "/api/v1/sinks").await;
    let (_, body) = (r.status, r.body);
    let sinks: Value = serde_json::from_str(&body).unwrap();
    let kafka = sinks.as_array().unwrap().iter().find(|s| s["name"] == "kafka").unwrap();
    assert_eq!(kafka["spooled"], 40, "the outage's alerts wait in the Kafka spool: {kafka}");

    cluster.broker_up(1).unwrap();
    assert!(t.engine.wait_delivered(Duration::from_secs(30)).await, "the Kafka spool drains");
    let got = tokio::task::spawn_blocking(move || kafka_alerts(&brokers, "check", 60)).await.unwrap();
    let mut seen = HashSet::new();
    let pids: Vec<i64> = got
        .iter()
        .filter(|a| seen.insert(a["alert_id"].as_str().unwrap().to_string()))
        .map(|a| a["row"]["pid"].as_i64().unwrap())
        .collect();
    let expected: Vec<i64> = (1..=12).flat_map(|s| (0..5).map(move |i| s * 10 + i)).collect();
    assert_eq!(pids, expected, "every alert once (first copies), in order");
    t.engine.shutdown().await;
}
