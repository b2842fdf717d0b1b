use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::Producer;
use vedette_config::Format;

use super::*;
use crate::sinks::delivery::{Connector, Delivery, Outcome};
use crate::sinks::test_support::batch;

fn sink_config(brokers: &str, extra: &str) -> vedette_config::SinkConfig {
    let text = format!(
        "[[sinks]]\nname = \"k\"\ntype = \"kafka\"\nbrokers = \"{brokers}\"\ntopic = \"alerts-{{severity}}\"\n\
         batch = {{ max_events = 50, linger = \"1ms\" }}\n\
         retry = {{ base = \"50ms\", cap = \"200ms\" }}\nbreaker = {{ failures = 100 }}\n{extra}"
    );
    vedette_config::Config::from_toml_str(&text).unwrap().sinks.remove(0)
}

fn kafka_config(c: &vedette_config::SinkConfig) -> vedette_config::sinks::KafkaSinkConfig {
    match &c.connector {
        vedette_config::Connector::Kafka(k) => k.clone(),
        _ => unreachable!(),
    }
}

fn alert(i: usize) -> vedette_pipelines::alert::Alert {
    let mut a = vedette_pipelines::formats::sample_alert();
    a.alert_id = uuid::Uuid::from_u128(i as u128 + 1);
    a.rule_id = format!("r{i}");
    a
}

/// Every message of `topic`, read back by an independent consumer until `n` arrived.
fn consume(brokers: &str, topic: &str, n: usize) -> Vec<(String, Vec<u8>, String)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("check-{}", uuid::Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            let header = m
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == "vedette-alert-id"))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            out.push((key, m.payload().unwrap_or_default().to_vec(), header));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_reports_confirm_messages_keyed_by_alert_id_on_the_routed_topic() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("alerts-high", 3, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let mut k = Kafka::new("k", &kafka_config(&sink_config(&brokers, ""))).unwrap();
    let batch = batch(Format::Json, 5);
    assert_eq!(k.send(&batch).await, vec![Outcome::Delivered; 5]);
    let got = tokio::task::spawn_blocking(move || consume(&brokers, "alerts-high", 5)).await.unwrap();
    let mut keys: Vec<String> = got.iter().map(|(k, _, _)| k.clone()).collect();
    keys.sort();
    let mut expected: Vec<String> = (0..5).map(|i| alert(i).alert_id.to_string()).collect();
    expected.sort();
    assert_eq!(keys, expected);
    assert!(got.iter().all(|(k, _, h)| k == h), "alert id header");
    let doc: serde_json::Value = serde_json::from_slice(&got[0].1).unwrap();
    assert_eq!(doc["severity"], "high");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_message_timeout_loses_nothing() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("alerts-high", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let Running { handle, metrics, stop, task, dir: _dir } = run(sink_config(&brokers, "message_timeout = \"1s\"\n"));
    let spool = |range| spool_alerts(&handle, range);
    spool(0..20).await;
    assert!(wait_empty(&handle, Duration::from_secs(10)).await, "delivered while the broker is up");

    // The broker goes down for 3 × message.timeout.ms while alerts keep coming.
    cluster.broker_down(1).unwrap();
    spool(20..60).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(handle.spool.depth().0 > 0, "nothing leaves the spool during the outage");
    assert!(metrics.sink_retried_alerts.with_label_values(&["k"]).get() > 0, "librdkafka timed the messages out");
    cluster.broker_up(1).unwrap();
    assert!(wait_empty(&handle, Duration::from_secs(30)).await, "the spool drains after the outage");
    stop.send(true).unwrap();
    task.await.unwrap();

    let got = tokio::task::spawn_blocking(move || consume(&brokers, "alerts-high", 60)).await.unwrap();
    let mut seen = std::collections::HashSet::new();
    let firsts: Vec<usize> = got
        .iter()
        .filter(|(k, _, _)| seen.insert(k.clone()))
        .map(|(_, p, _)| {
            serde_json::from_slice::<serde_json::Value>(p).unwrap()["rule_id"].as_str().unwrap()[1..].parse().unwrap()
        })
        .collect();
    assert_eq!(firsts, (0..60).collect::<Vec<_>>(), "every alert arrives; first copies in spool order");
}

/// A Kafka sink's delivery loop over a fresh spool.
struct Running {
    handle: Arc<crate::sinks::delivery::SinkHandle>,
    metrics: crate::metrics::Metrics,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    dir: tempfile::TempDir,
}

fn run(config: vedette_config::SinkConfig) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path().join("s")).unwrap();
    let handle = crate::sinks::open_sink(&db, config.clone()).unwrap();
    let metrics = crate::metrics::Metrics::new();
    let connector = Box::new(Kafka::new("k", &kafka_config(&config)).unwrap());
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(Delivery::new(Arc::clone(&handle), metrics.clone(), connector).run(rx));
    Running { handle, metrics, stop, task, dir }
}

/// Spools alerts `range` (their rule ids say their number).
async fn spool_alerts(handle: &Arc<crate::sinks::delivery::SinkHandle>, range: std::ops::Range<usize>) {
    let records: Vec<Vec<u8>> = range.map(|i| serde_json::to_vec(&alert(i)).unwrap()).collect();
    handle.spool.append(&records).await.unwrap();
}

async fn wait_empty(h: &crate::sinks::delivery::SinkHandle, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while h.spool.depth().0 > 0 {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_with_a_fatal_error_is_replaced_and_the_batch_produced_again() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("alerts-high", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let mut k = Kafka::new("k", &kafka_config(&sink_config(&brokers, ""))).unwrap();
    let batch = batch(Format::Json, 3);
    // What a broker that lost the producer's state answers: the idempotent producer's sequence
    // no longer lines up, which librdkafka treats as fatal for this producer instance.
    cluster.request_errors(RDKafkaApiKey::Produce, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER]);
    let first = k.send(&batch).await;
    assert!(first.iter().all(|o| matches!(o, Outcome::Retry(_))), "kept for a retry: {first:?}");
    assert!(k.producer.client().fatal_error().is_none(), "the fatal producer was replaced");
    assert_eq!(k.send(&batch).await, vec![Outcome::Delivered; 3]);
    let got = tokio::task::spawn_blocking(move || consume(&brokers, "alerts-high", 3)).await.unwrap();
    assert_eq!(got.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_shows_within_seconds_and_delivery_resumes_within_seconds_of_the_return() {
    // Default retry and breaker, and a long message timeout: neither may decide how soon the
    // outage shows or how soon delivery resumes.
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("alerts-high", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let text = format!(
        "[[sinks]]\nname = \"k\"\ntype = \"kafka\"\nbrokers = \"{brokers}\"\ntopic = \"alerts-{{severity}}\"\n\
         message_timeout = \"60s\"\nbatch = {{ max_events = 50, linger = \"1ms\" }}\n"
    );
    let config = vedette_config::Config::from_toml_str(&text).unwrap().sinks.remove(0);
    let Running { handle, metrics, stop, task, dir: _dir } = run(config);
    let spool = |range| spool_alerts(&handle, range);
    spool(0..10).await;
    assert!(wait_empty(&handle, Duration::from_secs(10)).await, "delivered while the broker is up");
    assert!(handle.status.lock().unwrap().last_success.is_some());

    cluster.broker_down(1).unwrap();
    let down = Instant::now();
    spool(10..40).await;
    // The spool gauge follows appends at once, whatever the delivery loop is doing.
    let gauge = metrics.sink_spool_records.with_label_values(&["k"]).get();
    assert_eq!(gauge as u64, handle.spool.depth().0, "gauge = depth right after the append");
    loop {
        let st = handle.status.lock().unwrap().clone();
        if st.last_error.is_some() {
            assert!(st.failing_since.is_some() && st.failed_attempts >= 1, "{st:?}");
            break;
        }
        assert!(down.elapsed() < Duration::from_secs(8), "the outage did not show within seconds: {st:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let shown = down.elapsed();
    // Until the breaker opens (5 failed attempts).
    loop {
        let st = handle.status.lock().unwrap().clone();
        if st.breaker == crate::sinks::policy::BreakerState::Open {
            break;
        }
        assert!(down.elapsed() < Duration::from_secs(40), "the breaker did not open: {st:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("breaker open after {:?}", down.elapsed());
    assert!(handle.spool.depth().0 > 0);
    cluster.broker_up(1).unwrap();
    let up = Instant::now();
    assert!(wait_empty(&handle, Duration::from_secs(8)).await, "delivery did not resume within seconds");
    let resumed = up.elapsed();
    let st = handle.status.lock().unwrap().clone();
    assert!(st.last_error.is_none() && st.failed_attempts == 0 && st.next_attempt.is_none(), "{st:?}");
    assert_eq!(st.breaker, crate::sinks::policy::BreakerState::Closed);
    assert_eq!(metrics.sink_spool_records.with_label_values(&["k"]).get(), 0);
    eprintln!("outage shown after {shown:?}; delivery resumed {resumed:?} after the broker's return");
    stop.send(true).unwrap();
    task.await.unwrap();
    let got = tokio::task::spawn_blocking(move || consume(&brokers, "alerts-high", 40)).await.unwrap();
    let ids: std::collections::HashSet<String> = got.iter().map(|(k, _, _)| k.clone()).collect();
    assert_eq!(ids.len(), 40, "every alert arrived");
}
