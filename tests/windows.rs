//! Windowed rules end to end: state is checkpointed with the acks and survives a restart.

use std::sync::Arc;

use serde_json::json;
use vedette_engine::EngineHandle;
use vedette_schemas::frame::Control;
use vedette_tests::{RawClient, delivered_alerts, ndjson_frame, sensor_config, test_config};

/// Event times here are fixed, not the engine's clock: a replay, so no clock-skew bound.
fn replay_config(dir: &std::path::Path) -> vedette_config::Config {
    let mut c = test_config(dir);
    c.rules.max_clock_ahead = std::time::Duration::ZERO;
    c.rules.max_clock_behind = std::time::Duration::ZERO;
    c
}

fn failure(ts_s: i64) -> serde_json::Value {
    json!({"ts": ts_s * 1_000_000, "user": "admin", "host": "db-1", "service": "ssh", "outcome": "failure", "src_ip": "203.0.113.9"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_window_survives_an_engine_restart() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let base = 1_800_000_000 / 60 * 60; // a minute boundary, in seconds
    let engine = EngineHandle::start(replay_config(dir.path())).await.unwrap();
    let cfg = sensor_config(dir.path(), engine.ingest_addr, "s", "default");
    let mut c = RawClient::connect(&cfg, 0).await.unwrap();
    let mut s = c.data_stream().await;
    s.write_all(&ndjson_frame(1, "auth_events", &[failure(base + 1), failure(base + 2), failure(base + 3)]))
        .await
        .unwrap();
    c.until(|m| matches!(m, Control::Ack(a) if a.seq == 1)).await;
    engine.shutdown().await;

    let engine = EngineHandle::start(replay_config(dir.path())).await.unwrap();
    let cfg = sensor_config(dir.path(), engine.ingest_addr, "s", "default");
    let mut c = RawClient::connect(&cfg, 2).await.unwrap();
    let mut s = c.data_stream().await;
    // Two more failures in the same minute, then an event that moves the watermark past it.
    let later =
        json!({"ts": (base + 90) * 1_000_000, "user": "admin", "host": "db-1", "service": "ssh", "outcome": "success"});
    s.write_all(&ndjson_frame(2, "auth_events", &[failure(base + 40), failure(base + 41), later])).await.unwrap();
    c.until(|m| matches!(m, Control::Ack(a) if a.seq == 2)).await;
    let alerts: Vec<_> = delivered_alerts(&engine, &dir.path().join("alerts.jsonl"))
        .await
        .into_iter()
        .filter(|a| a["rule_id"] == "linux.ssh_bruteforce")
        .collect();
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0]["row"]["failures"], 5, "failures before and after the restart are counted together");
    assert_eq!(alerts[0]["sensor_id"], "s");
    assert_eq!(
        alerts[0]["window_start"].as_str().unwrap(),
        chrono::DateTime::from_timestamp(base, 0).unwrap().to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    );
    engine.shutdown().await;
}
