//! Sensors resend unacknowledged frames after a reconnect; the engine applies each once.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use vedette_engine::EngineHandle;
use vedette_engine::sensor::{self, Event, SensorStats};
use vedette_schemas::frame::Control;
use vedette_tests::{RawClient, TestEngine, ndjson_frame, sensor_config, shadow_cat, test_config};

#[tokio::test]
async fn resent_frames_are_acked_again_but_not_applied_twice() {
    let t = TestEngine::start().await;
    let cfg = t.sensor("s", "default");
    let mut c = RawClient::connect(&cfg, 0).await.unwrap();
    let mut s = c.data_stream().await;
    for seq in 1..=3 {
        s.write_all(&ndjson_frame(seq, "process_events", &[shadow_cat(seq as i64)])).await.unwrap();
    }
    c.until(|m| matches!(m, Control::Ack(a) if a.through == 3)).await;
    c.session.conn.close(0u32.into(), b"network cut");

    // The sensor did not see the acks (say): it resends 2 and 3, then sends 4.
    let mut c = RawClient::connect(&cfg, 2).await.unwrap();
    assert_eq!(c.session.welcome.acked_through, 3);
    let mut s = c.data_stream().await;
    for seq in 2..=4 {
        s.write_all(&ndjson_frame(seq, "process_events", &[shadow_cat(seq as i64)])).await.unwrap();
    }
    c.until(|m| matches!(m, Control::Ack(a) if a.seq == 4 && a.through == 4)).await;
    let alerts = t.alerts().await;
    let ids: BTreeSet<_> = alerts.iter().map(|a| a["alert_id"].as_str().unwrap().to_string()).collect();
    assert_eq!((alerts.len(), ids.len()), (4, 4), "one alert per event, none twice");
    let m = t.engine.metrics();
    assert_eq!(m.ingest_frames.with_label_values(&["duplicate"]).get(), 2);
    assert_eq!(m.ingest_events.with_label_values(&["process_events"]).get(), 4);
    t.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_sensor_survives_an_engine_restart_without_loss_or_duplicates() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let engine = EngineHandle::start(test_config(dir.path())).await.unwrap();
    let addr = engine.ingest_addr;
    let mut cfg = sensor_config(dir.path(), addr, "s", "default");
    cfg.linger = Duration::from_millis(5);
    let (tx, rx) = mpsc::channel(64);
    let stats = Arc::new(SensorStats::default());
    let run = tokio::spawn(sensor::run(cfg, rx, Arc::clone(&stats)));
    const N: i64 = 300;
    let producer = tokio::spawn(async move {
        for n in 0..N {
            tx.send(Event { table: "process_events".into(), row: shadow_cat(n) }).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(250)).await;
    engine.shutdown().await;
    // Same data dir, same port: the sensor reconnects by itself and resends.
    let mut config = test_config(dir.path());
    config.ingest.listen = addr;
    let engine = EngineHandle::start(config).await.unwrap();
    producer.await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), run).await.expect("sensor finishes").unwrap().unwrap();
    assert!(stats.connections.load(Ordering::Relaxed) >= 2, "the sensor reconnected");
    let alerts = vedette_tests::delivered_alerts(&engine, &dir.path().join("alerts.jsonl")).await;
    let cmds: BTreeSet<_> = alerts.iter().map(|a| a["row"]["cmdline"].as_str().unwrap().to_string()).collect();
    assert_eq!(cmds.len() as i64, N, "every event was detected");
    assert_eq!(alerts.len() as i64, N, "and none twice");
    engine.shutdown().await;
}
