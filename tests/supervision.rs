//! A crashed rule worker is restarted by its supervisor and no batch is lost.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use vedette_engine::sensor::{self, Event, SensorStats};
use vedette_tests::{TestEngine, eventually, shadow_cat};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_rule_worker_is_restarted_and_no_batch_is_lost() {
    let t = TestEngine::start().await;
    let mut cfg = t.sensor("s", "default");
    cfg.linger = Duration::from_millis(2);
    let (tx, rx) = mpsc::channel(64);
    let run = tokio::spawn(sensor::run(cfg, rx, Arc::new(SensorStats::default())));
    const N: i64 = 400;
    let producer = tokio::spawn(async move {
        for n in 0..N {
            tx.send(Event { table: "process_events".into(), row: shadow_cat(n) }).await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    let mut killed = BTreeSet::new();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(80)).await;
        // The previous kill's restart may still be under way: wait for the new incarnation.
        assert!(eventually(Duration::from_secs(10), || t.engine.rule_worker("process_events").is_some()).await);
        let worker = t.engine.rule_worker("process_events").expect("worker running");
        killed.insert(worker.get_id());
        worker.kill();
    }
    producer.await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), run).await.expect("sensor finishes").unwrap().unwrap();

    let now = t.engine.rule_worker("process_events").expect("worker came back");
    assert!(!killed.contains(&now.get_id()), "a new incarnation runs");
    let restarts = t.engine.metrics().actor_restarts.with_label_values(&["rules:process_events"]).get();
    assert_eq!(restarts, 3);
    // Every acknowledged event produced its alert (retries may repeat an id, never lose one).
    let alerts = t.alerts().await;
    let cmds: BTreeSet<_> = alerts.iter().map(|a| a["row"]["cmdline"].as_str().unwrap().to_string()).collect();
    assert_eq!(cmds.len() as i64, N);
    let ids: BTreeSet<_> = alerts.iter().map(|a| a["alert_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids.len() as i64, N, "a redelivered alert keeps its id");
    t.engine.shutdown().await;
}
