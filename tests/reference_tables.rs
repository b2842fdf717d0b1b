//! Reference tables end to end: rules join an IOC list and use it in `IN (SELECT …)`;
//! reloading the file changes what later batches match, re-evaluates nothing, and a bad file
//! keeps the rows in use.

use std::sync::Arc;

use serde_json::{Value, json};
use vedette_engine::EngineHandle;
use vedette_schemas::frame::Control;
use vedette_tests::{RawClient, delivered_alerts, ndjson_frame, sensor_config, test_config};

const PACK: &str = r#"name: ioc
version: 1
description: IOC matching
author: a
rules:
  - id: ioc.join
    name: known bad binary (join)
    severity: critical
    sql: |
      SELECT p.exe, p.sha256, i.family
      FROM process_events p JOIN ioc_hashes i ON p.sha256 = i.sha256
  - id: ioc.in
    name: known bad binary (IN)
    severity: critical
    sql: SELECT exe, sha256 FROM process_events WHERE sha256 IN (SELECT sha256 FROM ioc_hashes)
"#;

fn ev(n: u64, sha: &str) -> Value {
    json!({"ts": 1_700_000_000_000_000u64 + n, "event_type": "start", "pid": n, "exe": format!("/tmp/x{n}"), "sha256": sha})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_see_reloaded_rows_from_the_next_batch_on() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    std::fs::create_dir_all(dir.path().join("packs")).unwrap();
    std::fs::write(dir.path().join("packs/ioc.yaml"), PACK).unwrap();
    let ioc = dir.path().join("ioc.csv");
    std::fs::write(&ioc, "sha256,family,first_seen\naaa,emotet,2024-01-01\nccc,qakbot,2024-02-01\n").unwrap();
    let mut config = test_config(dir.path());
    config.rules.builtin = false;
    config.rules.packs_dir = Some("packs".into());
    config.rules.allow_unsigned = true;
    config.reference_tables = vedette_config::Config::from_toml_str(
        "[[reference_tables]]\nname = \"ioc_hashes\"\npath = \"ioc.csv\"\ncolumns = { sha256 = \"string\", family = \"string\" }\n",
    )
    .unwrap()
    .reference_tables;
    let engine = EngineHandle::start(config).await.unwrap();
    let cfg = sensor_config(dir.path(), engine.ingest_addr, "s", "default");
    let mut c = RawClient::connect(&cfg, 0).await.unwrap();
    let mut send = async |seq: u64, rows: &[Value]| {
        let mut s = c.data_stream().await;
        s.write_all(&ndjson_frame(seq, "process_events", rows)).await.unwrap();
        s.finish().unwrap();
        c.until(|m| matches!(m, Control::Ack(a) if a.seq == seq)).await;
    };
    send(1, &[ev(1, "aaa"), ev(2, "bbb"), ev(3, "zzz")]).await;
    let alerts = delivered_alerts(&engine, &dir.path().join("alerts.jsonl")).await;
    let hits = |alerts: &[Value]| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = alerts
            .iter()
            .map(|a| (a["rule_id"].as_str().unwrap().to_string(), a["row"]["sha256"].as_str().unwrap().to_string()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(hits(&alerts), [("ioc.in".into(), "aaa".into()), ("ioc.join".into(), "aaa".into())]);
    let joined = alerts.iter().find(|a| a["rule_id"] == "ioc.join").unwrap();
    assert_eq!(joined["row"]["family"], "emotet");

    // Reload: bbb is now known, aaa no longer.
    std::fs::write(&ioc, "family,sha256\ntrickbot,bbb\n").unwrap();
    let status = engine.reload_reference("ioc_hashes").await.unwrap();
    assert_eq!(status.rows, 1);
    send(2, &[ev(4, "aaa"), ev(5, "bbb")]).await;
    let alerts = delivered_alerts(&engine, &dir.path().join("alerts.jsonl")).await;
    assert_eq!(alerts.len(), 4, "the first batch is not re-evaluated: {alerts:#?}");
    assert_eq!(hits(&alerts[2..]), [("ioc.in".into(), "bbb".into()), ("ioc.join".into(), "bbb".into())]);

    // A bad file is refused, naming the problem; the rows in use stay.
    std::fs::write(&ioc, "sha256\nddd\n").unwrap();
    let err = engine.reload_reference("ioc_hashes").await.unwrap_err().to_string();
    assert!(err.contains("ioc_hashes") && err.contains("no column `family`"), "{err}");
    let err = engine.reload_reference("nope").await.unwrap_err().to_string();
    assert!(err.contains("no such reference table"), "{err}");
    send(3, &[ev(6, "bbb"), ev(7, "ddd")]).await;
    let alerts = delivered_alerts(&engine, &dir.path().join("alerts.jsonl")).await;
    assert_eq!(hits(&alerts[4..]), [("ioc.in".into(), "bbb".into()), ("ioc.join".into(), "bbb".into())]);
    engine.shutdown().await;
}

#[tokio::test]
async fn a_missing_or_malformed_file_stops_the_start_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.reference_tables = vedette_config::Config::from_toml_str(
        "[[reference_tables]]\nname = \"allow\"\npath = \"allow.json\"\ncolumns = { user = \"string\" }\n",
    )
    .unwrap()
    .reference_tables;
    let err = EngineHandle::start(config.clone()).await.err().expect("refused").to_string();
    assert!(err.contains("reference table `allow`") && err.contains("allow.json"), "{err}");
    std::fs::write(dir.path().join("allow.json"), "{\"user\": \"root\"}\n[1]\n").unwrap();
    let err = EngineHandle::start(config).await.err().expect("refused").to_string();
    assert!(err.contains("line 2"), "{err}");
}
