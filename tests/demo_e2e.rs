//! The demo scenario end to end over real QUIC: every built-in stateless rule fires.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::mpsc;
use vedette_engine::sensor::{self, SensorStats};
use vedette_pipelines::rule::Pack;
use vedette_tests::{TestEngine, http_get};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_scenario_fires_every_builtin_rule_with_the_certificate_identity() {
    // The closing event below is stamped up to a minute ahead (instead of waiting for it, as
    // `vedette sensor --demo` does): lift the bound on clocks running ahead.
    let t = TestEngine::start_with(|c| c.rules.max_clock_ahead = std::time::Duration::ZERO).await;
    let cfg = t.sensor("edge-42", "acme");
    let (tx, rx) = mpsc::channel(1024);
    let now = chrono::Utc::now().timestamp_micros();
    for ev in sensor::demo_scenario("web-1", now) {
        tx.send(ev).await.unwrap();
    }
    tx.send(sensor::demo_closing_event("web-1", sensor::demo_window_closes_at(now))).await.unwrap();
    drop(tx);
    let stats = Arc::new(SensorStats::default());
    // Returns once every frame is acknowledged, i.e. its alerts are on disk.
    tokio::time::timeout(std::time::Duration::from_secs(30), sensor::run(cfg, rx, Arc::clone(&stats)))
        .await
        .expect("sensor finishes")
        .expect("sensor succeeds");

    let alerts = t.alerts().await;
    let fired: BTreeSet<String> = alerts.iter().map(|a| a["rule_id"].as_str().unwrap().to_string()).collect();
    let builtin: BTreeSet<String> = Pack::builtin().rules.iter().map(|r| r.id.clone()).collect();
    assert_eq!(fired, builtin, "every built-in rule fires");
    assert_eq!(alerts.len(), builtin.len(), "each fires exactly once: {alerts:#?}");
    for a in &alerts {
        assert_eq!(a["sensor_id"], "edge-42");
        assert_eq!(a["tenant"], "acme");
        assert_eq!(a["host"], "web-1");
        for key in ["alert_id", "rule_name", "severity", "ts", "detected_at", "row"] {
            assert!(!a[key].is_null(), "alert has `{key}`: {a}");
        }
        assert!(a["ts"].as_str().unwrap().ends_with('Z'), "RFC 3339 UTC");
    }
    assert_eq!(stats.rows_rejected.load(std::sync::atomic::Ordering::Relaxed), 0);

    let (status, body) = http_get(t.engine.api_addr, "/health/ready").await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = http_get(t.engine.api_addr, "/health/live").await;
    assert_eq!(status, 200);
    let (_, metrics) = http_get(t.engine.api_addr, "/metrics").await;
    assert!(
        metrics.contains("vedette_alerts_total{rule=\"linux.reverse_shell_netcat\",severity=\"critical\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("vedette_ingest_events_total{table=\"process_events\"}"));
    t.engine.shutdown().await;
}

/// A second demo run, after the first one finished, fires the windowed rule again: its rows
/// are in a later minute than everything the first run sent, so they are never late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_demo_run_fires_the_windowed_rule_again() {
    let t = TestEngine::start_with(|c| c.rules.max_clock_ahead = std::time::Duration::ZERO).await;
    let first = chrono::Utc::now().timestamp_micros();
    // The second run starts when the first has ended: after its closing event's time.
    let second = sensor::demo_window_closes_at(first) + 1_000_000;
    for now in [first, second] {
        let (tx, rx) = mpsc::channel(1024);
        for ev in sensor::demo_scenario("web-1", now) {
            tx.send(ev).await.unwrap();
        }
        tx.send(sensor::demo_closing_event("web-1", sensor::demo_window_closes_at(now))).await.unwrap();
        drop(tx);
        let run = sensor::run(t.sensor("demo-sensor", "default"), rx, Arc::new(SensorStats::default()));
        tokio::time::timeout(std::time::Duration::from_secs(30), run).await.unwrap().unwrap();
    }
    let alerts = t.alerts().await;
    let brute: Vec<_> = alerts.iter().filter(|a| a["rule_id"] == "linux.ssh_bruteforce").collect();
    assert_eq!(brute.len(), 2, "one brute-force alert per demo run: {brute:#?}");
    assert_ne!(brute[0]["window_start"], brute[1]["window_start"]);
    t.engine.shutdown().await;
}
