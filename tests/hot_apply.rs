//! Hot apply while sensors stream: a pack swap, a refused pack and a runtime disable each take
//! effect between two batches — no event is dropped or evaluated twice — and survive a restart.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use vedette_engine::EngineHandle;
use vedette_schemas::frame::Control;
use vedette_tests::{RawClient, delivered_alerts, eventually, ndjson_frame, sensor_config, test_config};

const ALPHA: &str = "  - id: t.alpha\n    name: alpha\n    severity: low\n    sql: SELECT pid, cmdline FROM process_events WHERE cmdline LIKE '%alpha%'\n";
const BETA: &str = "  - id: t.beta\n    name: beta\n    severity: low\n    sql: SELECT pid FROM process_events WHERE cmdline LIKE '%beta%'\n";
const BROKEN: &str =
    "  - id: t.broken\n    name: broken\n    severity: low\n    sql: SELECT nope FROM process_events\n";

fn pack(version: u32, rules: &[&str]) -> String {
    format!("name: team\nversion: {version}\ndescription: d\nauthor: a\nrules:\n{}", rules.concat())
}

const FRAMES: u64 = 240;
const ROWS: u64 = 4;

fn config(dir: &std::path::Path) -> vedette_config::Config {
    let mut c = test_config(dir);
    c.rules.builtin = false;
    c.rules.packs_dir = Some("packs".into());
    c.rules.allow_unsigned = true;
    c
}

/// Pids with an alert of `rule`, checking no event has two.
fn pids(alerts: &[Value], rule: &str) -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    for a in alerts.iter().filter(|a| a["rule_id"] == rule) {
        let pid = a["row"]["pid"].as_u64().unwrap();
        assert!(out.insert(pid), "event {pid} evaluated twice by {rule}");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaps_refusals_and_disables_take_effect_between_batches() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    std::fs::create_dir_all(dir.path().join("packs")).unwrap();
    let write = |text: String| std::fs::write(dir.path().join("packs/team.yaml"), text).unwrap();
    write(pack(1, &[ALPHA]));
    let engine = EngineHandle::start(config(dir.path())).await.unwrap();
    let cfg = sensor_config(dir.path(), engine.ingest_addr, "s", "default");
    let mut client = RawClient::connect(&cfg, 0).await.unwrap();
    let mut stream = client.data_stream().await;
    let sent = Arc::new(AtomicU64::new(0));
    let sender = {
        let sent = Arc::clone(&sent);
        tokio::spawn(async move {
            for seq in 1..=FRAMES {
                let rows: Vec<Value> = (0..ROWS)
                    .map(|i| {
                        let pid = seq * ROWS + i;
                        json!({"ts": 1_700_000_000_000_000u64 + pid, "event_type": "start", "pid": pid,
                               "exe": "/bin/x", "cmdline": format!("x alpha beta {pid}")})
                    })
                    .collect();
                stream.write_all(&ndjson_frame(seq, "process_events", &rows)).await.unwrap();
                sent.store(seq, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(4)).await;
            }
            stream
        })
    };
    let reached = |n: u64| {
        let sent = Arc::clone(&sent);
        async move { assert!(eventually(Duration::from_secs(30), || sent.load(Ordering::SeqCst) >= n).await) }
    };

    reached(FRAMES / 4).await;
    write(pack(2, &[ALPHA, BETA]));
    let report = engine.apply_rules().await.expect("v2 applies");
    assert_eq!(report.planned, 1, "only the new rule is planned; t.alpha keeps its plan");
    assert_eq!(report.active_rules, 2);

    reached(FRAMES / 2).await;
    write(pack(3, &[ALPHA, BETA, BROKEN]));
    let err = engine.apply_rules().await.expect_err("v3 is refused").to_string();
    assert!(err.contains("t.broken") && err.contains("nope"), "{err}");
    let status = engine.rules_status().await;
    assert_eq!(status.packs, vec![("team".to_string(), 2)], "the running set is unchanged");
    assert!(status.last_error.as_deref().is_some_and(|e| e.contains("t.broken")));

    reached(3 * FRAMES / 4).await;
    engine.set_rule_enabled("t.alpha", false).await.unwrap();
    let unknown = engine.set_rule_enabled("t.nope", false).await.expect_err("unknown rule").to_string();
    assert!(unknown.contains("t.nope"), "{unknown}");

    let _stream = sender.await.unwrap();
    client.until(|m| matches!(m, Control::Ack(a) if a.through >= FRAMES)).await;
    let alerts = delivered_alerts(&engine, &dir.path().join("alerts.jsonl")).await;
    let ids: HashSet<&str> = alerts.iter().map(|a| a["alert_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), alerts.len(), "no alert twice");
    let all: Vec<u64> = (ROWS..(FRAMES + 1) * ROWS).collect();
    let alpha = pids(&alerts, "t.alpha");
    let beta = pids(&alerts, "t.beta");
    // Alpha ran from the first event up to the disable, beta from the swap to the end: each a
    // contiguous run of the stream (batches follow the stream's order), overlapping between.
    let prefix: BTreeSet<u64> = all.iter().copied().take(alpha.len()).collect();
    assert_eq!(alpha, prefix, "t.alpha saw a prefix of the stream, without gaps");
    let suffix: BTreeSet<u64> = all.iter().copied().skip(all.len() - beta.len()).collect();
    assert_eq!(beta, suffix, "t.beta saw a suffix of the stream, without gaps");
    assert!(alpha.len() < all.len() && !beta.is_empty() && beta.len() < all.len());
    assert!(alpha.len() + beta.len() > all.len(), "both ran between the swap and the disable");
    engine.shutdown().await;

    // Restart: the broken v3 is still in the directory, so the engine comes back with the set
    // applied last (v2) and the runtime disable.
    let engine = EngineHandle::start(config(dir.path())).await.expect("restarts on the applied set");
    let status = engine.rules_status().await;
    assert_eq!(status.packs, vec![("team".to_string(), 2)]);
    assert!(status.last_error.as_deref().is_some_and(|e| e.contains("t.broken")), "{status:?}");
    let enabled: Vec<(&str, bool)> = status.rules.iter().map(|r| (r.id.as_str(), r.enabled)).collect();
    assert_eq!(enabled, vec![("t.alpha", false), ("t.beta", true)]);
    engine.set_rule_enabled("t.alpha", true).await.unwrap();
    assert!(engine.rules_status().await.rules.iter().all(|r| r.enabled));
    engine.shutdown().await;
}
