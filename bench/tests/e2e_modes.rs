//! The end-to-end modes of `vedette-bench` run as a user runs them (the binary, its own engine
//! process, real QUIC, a real Kafka-protocol broker), briefly and with few sensors: the JSON
//! report has its keys and sane figures, the chart is written beside it, and the outage run
//! reads every alert back from the broker.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn bench(args: &[&str], json: &Path) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_vedette-bench"))
        .args(args)
        .arg("--json")
        .arg(json)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run vedette-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "vedette-bench {args:?} failed:\n{stderr}");
    let png = std::fs::read(json.with_extension("png")).expect("a chart beside the JSON");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap()
}

#[test]
fn throughput_reports_every_key_and_draws_its_chart() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let r = bench(
        &[
            "throughput",
            "--duration",
            "4s",
            "--warmup",
            "2s",
            "--sensors",
            "20",
            "--suspicious-every",
            "20",
            "--no-peers",
        ],
        &json,
    );
    for key in ["events_per_sec", "alerts_per_sec", "p50_ms", "p99_ms", "p999_ms", "rss_max_mib", "cpu_pct", "series"] {
        assert!(!r[key].is_null(), "key {key} missing: {r}");
    }
    assert_eq!(r["sensors_connected"], 20, "{r}");
    assert_eq!(r["rejected_rows"], 0, "{r}");
    assert!(r["events_per_sec"].as_f64().unwrap() > 1000.0, "{r}");
    assert!(r["alerts"].as_u64().unwrap() > 0, "one process event in 20 is suspicious: {r}");
    assert!(r["p50_ms"].as_f64().unwrap() > 0.0 && r["p99_ms"].as_f64() >= r["p50_ms"].as_f64(), "{r}");
    assert!(r["rss_max_mib"].as_u64().unwrap() > 10, "{r}");
    assert!(r["series"].as_array().unwrap().len() >= 5, "one sample per second: {r}");
}

#[test]
fn outage_loses_no_alert_and_measures_the_drain() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("o.json");
    let r = bench(
        &[
            "outage",
            "--rate",
            "4000",
            "--duration",
            "16s",
            "--warmup",
            "2s",
            "--outage",
            "4s",
            "--outage-at",
            "2s",
            "--sensors",
            "10",
            "--suspicious-every",
            "10",
            "--no-peers",
        ],
        &json,
    );
    let (o, k) = (&r["outage"], &r["kafka"]);
    assert!(o["events_per_sec_during"].as_f64().unwrap() > 1000.0, "ingest goes on while Kafka is down: {r}");
    assert!(
        o["kafka_spool_peak"].as_u64().unwrap() > o["kafka_spool_before"].as_u64().unwrap(),
        "alerts wait in the Kafka spool during the outage: {r}"
    );
    assert!(o["drain_s"].is_number(), "the spool drained once the broker was back: {r}");
    assert_eq!(k["missing"], 0, "{r}");
    assert!(k["file_alerts"].as_u64().unwrap() > 100, "{r}");
    assert!(k["distinct_alerts"].as_u64() >= k["file_alerts"].as_u64(), "{r}");
    assert!(r["series"].as_array().unwrap().iter().any(|s| s["kafka_spooled"].as_u64() > Some(0)), "{r}");
}

#[test]
fn an_outage_that_does_not_fit_the_run_is_refused_before_anything_starts() {
    let out = Command::new(env!("CARGO_BIN_EXE_vedette-bench"))
        .args(["outage", "--duration", "20s", "--outage", "15s", "--outage-at", "10s", "--no-peers"])
        .output()
        .expect("run vedette-bench");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--duration 20s is too short for an outage at 10s lasting 15s and 10 s to drain"),
        "{stderr}"
    );
}
