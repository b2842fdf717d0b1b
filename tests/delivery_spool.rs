//! Spools between detection and delivery: a dead destination with `block` slows the sensor
//! (acknowledgements stop) instead of growing memory, and loses nothing once it returns; with
//! `drop_oldest` the sensor keeps going, drops are counted and reported as an internal alert
//! through the other sinks, which keep delivering.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;
use vedette_schemas::frame::Control;
use vedette_tests::{RawClient, TestEngine, eventually, http_get, ndjson_frame, read_alerts, shadow_cat};

const FRAMES: u64 = 30;
const ROWS: i64 = 20;

async fn sinks(t: &TestEngine) -> Value {
    let r = t.api("GET", "/api/v1/sinks").await;
    let (status, body) = (r.status, r.body);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn sink<'a>(all: &'a Value, name: &str) -> &'a Value {
    all.as_array().unwrap().iter().find(|s| s["name"] == name).unwrap()
}

/// Sends FRAMES frames of ROWS matching events each, every frame on its own stream.
async fn send_all(c: &RawClient) -> Vec<quinn::SendStream> {
    let mut streams = Vec::new();
    for seq in 1..=FRAMES {
        let rows: Vec<Value> = (0..ROWS).map(|i| shadow_cat(seq as i64 * 1000 + i)).collect();
        let mut s = c.data_stream().await;
        s.write_all(&ndjson_frame(seq, "process_events", &rows)).await.unwrap();
        s.finish().unwrap();
        streams.push(s);
    }
    streams
}

/// Highest `through` acknowledged within `wait` (returns early once every frame is).
async fn acked_within(c: &mut RawClient, wait: Duration) -> u64 {
    let mut through = 0;
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Ok(m)) =
        tokio::time::timeout_at(deadline, vedette_engine::sensor::read_control(&mut c.session.ctrl_recv)).await
    {
        if let Control::Ack(a) = m {
            through = through.max(a.through);
        }
        if through == FRAMES {
            break;
        }
    }
    through
}

fn sink_config(name: &str, path: &str, policy: &str) -> vedette_config::SinkConfig {
    let text = format!(
        "[[sinks]]\nname = \"{name}\"\ntype = \"file\"\npath = \"{path}\"\nspool = {{ max_bytes = \"64KiB\", policy = \"{policy}\" }}\n\
         batch = {{ linger = \"1ms\" }}\nretry = {{ base = \"10ms\", cap = \"50ms\" }}\nbreaker = {{ open_for = \"200ms\" }}\n"
    );
    vedette_config::Config::from_toml_str(&text).unwrap().sinks.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_blocking_spool_stops_acknowledgements_and_loses_nothing() {
    let t = TestEngine::start_with(|c| {
        let dir = c.data_dir.clone();
        std::fs::write(dir.join("down"), "a file where the sink's directory should be").unwrap();
        c.sinks = vec![sink_config("siem", "down/alerts.jsonl", "block")];
    })
    .await;
    let mut c = RawClient::connect(&t.sensor("s", "default"), 0).await.unwrap();
    let _streams = send_all(&c).await;
    // Each alert is ~700 bytes: 64 KiB holds about 90 of the 600. Acknowledgements stop.
    let through = acked_within(&mut c, Duration::from_secs(2)).await;
    assert!(through < FRAMES / 2, "acked through {through} with the destination down");
    let s = sinks(&t).await;
    let spool = sink(&s, "siem");
    assert!(spool["spool_bytes"].as_u64().unwrap() <= 64 * 1024, "{spool}");
    assert!(spool["spooled"].as_u64().unwrap() > 0);
    assert_eq!(spool["breaker"], "open", "{spool}");
    let (_, metrics) = http_get(t.engine.api_addr, "/metrics").await;
    assert!(metrics.contains("vedette_sink_breaker_state{sink=\"siem\"} 1"), "breaker gauge");

    // The destination returns: everything is acknowledged and delivered exactly once.
    std::fs::remove_file(t.data_dir().join("down")).unwrap();
    let through = acked_within(&mut c, Duration::from_secs(10)).await;
    assert_eq!(through, FRAMES);
    assert!(t.engine.wait_delivered(Duration::from_secs(20)).await);
    let alerts = read_alerts(&t.data_dir().join("down/alerts.jsonl"));
    let ids: HashSet<&str> = alerts.iter().map(|a| a["alert_id"].as_str().unwrap()).collect();
    assert_eq!((alerts.len(), ids.len()), ((FRAMES as i64 * ROWS) as usize, (FRAMES as i64 * ROWS) as usize));
    t.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_keeps_the_sensor_going_counts_drops_and_raises_an_internal_alert() {
    let t = TestEngine::start_with(|c| {
        let dir = c.data_dir.clone();
        std::fs::write(dir.join("down"), "blocked").unwrap();
        let good = c.sinks.remove(0);
        c.sinks = vec![sink_config("lossy", "down/alerts.jsonl", "drop_oldest"), good];
    })
    .await;
    let mut c = RawClient::connect(&t.sensor("s", "default"), 0).await.unwrap();
    let _streams = send_all(&c).await;
    assert_eq!(acked_within(&mut c, Duration::from_secs(5)).await, FRAMES, "nothing blocks");
    let s = sinks(&t).await;
    assert!(sink(&s, "lossy")["spool_bytes"].as_u64().unwrap() <= 64 * 1024);
    let (_, metrics) = http_get(t.engine.api_addr, "/metrics").await;
    let dropped: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("vedette_sink_dropped_total{sink=\"lossy\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(dropped > 400, "dropped {dropped}");
    // The healthy sink has every alert plus the internal report of the drops.
    let path = t.data_dir().join("alerts.jsonl");
    assert!(
        eventually(Duration::from_secs(10), || read_alerts(&path).len() as u64 == FRAMES * ROWS as u64 + 1).await,
        "{}",
        read_alerts(&path).len()
    );
    let internal: Vec<Value> =
        read_alerts(&path).into_iter().filter(|a| a["rule_id"] == "vedette.sink_overflow").collect();
    assert_eq!(internal.len(), 1, "one report per minute at most");
    assert_eq!(internal[0]["row"]["sink"], "lossy");
    assert!(internal[0]["row"]["dropped"].as_u64().unwrap() > 0);
    t.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_storm_is_capped_per_rule_and_summarised() {
    let t = TestEngine::start_with(|c| {
        c.alerts.storm_max_per_rule = 5;
        c.alerts.storm_interval = Duration::from_millis(300);
    })
    .await;
    let mut c = RawClient::connect(&t.sensor("s", "default"), 0).await.unwrap();
    let rows: Vec<Value> = (0..40).map(shadow_cat).collect();
    let mut s = c.data_stream().await;
    s.write_all(&ndjson_frame(1, "process_events", &rows)).await.unwrap();
    s.finish().unwrap();
    c.until(|m| matches!(m, Control::Ack(a) if a.seq == 1)).await;
    let path = t.data_dir().join("alerts.jsonl");
    // The summary follows once the interval is over (the rule workers' periodic tick).
    assert!(
        eventually(Duration::from_secs(10), || read_alerts(&path).len() == 6).await,
        "{:?}",
        read_alerts(&path).len()
    );
    let alerts = read_alerts(&path);
    assert_eq!(alerts.iter().filter(|a| a["rule_id"] == "linux.shadow_in_cmdline").count(), 5);
    let summary = alerts.iter().find(|a| a["rule_id"] == "vedette.alert_storm").expect("summary alert");
    assert_eq!(summary["row"]["rule_id"], "linux.shadow_in_cmdline");
    assert_eq!(summary["row"]["suppressed"], 35);
    assert_eq!(summary["tenant"], "default");
    let (_, metrics) = http_get(t.engine.api_addr, "/metrics").await;
    assert!(metrics.contains("vedette_alerts_suppressed_total 35"), "metric");
    t.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suppress_folds_repeats_of_a_key_into_the_first_alert_and_summarises_the_count() {
    let t = TestEngine::start_with(|c| {
        let packs = c.data_dir.join("packs");
        std::fs::create_dir_all(&packs).unwrap();
        let pack = "name: team\nversion: 1\ndescription: d\nauthor: a\nrules:\n  - id: t.shadow\n    name: shadow\n    \
                    severity: high\n    dedup_key: [user]\n    suppress: 2s\n    \
                    sql: SELECT user, cmdline FROM process_events WHERE cmdline LIKE '%/etc/shadow%'\n";
        std::fs::write(packs.join("team.yaml"), pack).unwrap();
        c.rules.builtin = false;
        c.rules.packs_dir = Some("packs".into());
        c.rules.allow_unsigned = true;
    })
    .await;
    // Every event in the next 2-second period (aligned to the epoch): root five times, bob once.
    let now = chrono::Utc::now().timestamp_micros();
    let period = (now / 2_000_000 + 1) * 2_000_000;
    let row = |n: i64, user: &str| {
        serde_json::json!({"ts": period + n * 1000, "event_type": "start", "pid": n, "exe": "/usr/bin/cat",
                           "cmdline": format!("cat /etc/shadow #{n}"), "user": user})
    };
    let rows: Vec<Value> = (0..5).map(|n| row(n, "root")).chain([row(9, "bob")]).collect();
    let mut c = RawClient::connect(&t.sensor("s", "default"), 0).await.unwrap();
    let mut s = c.data_stream().await;
    s.write_all(&ndjson_frame(1, "process_events", &rows)).await.unwrap();
    s.finish().unwrap();
    c.until(|m| matches!(m, Control::Ack(a) if a.seq == 1)).await;
    let path = t.data_dir().join("alerts.jsonl");
    // The summary follows once the period is over (the rule workers' periodic tick).
    assert!(eventually(Duration::from_secs(10), || read_alerts(&path).len() == 3).await, "{:?}", read_alerts(&path));
    let alerts = read_alerts(&path);
    let firsts: Vec<&Value> = alerts.iter().filter(|a| a["rule_id"] == "t.shadow").collect();
    assert_eq!(firsts.len(), 2, "one alert per user: {alerts:#?}");
    let root = firsts.iter().find(|a| a["row"]["user"] == "root").unwrap();
    assert_eq!(root["row"]["cmdline"], "cat /etc/shadow #0", "the first one stands for the repeats");
    let summary = alerts.iter().find(|a| a["rule_id"] == "vedette.suppressed").expect("summary alert");
    assert_eq!(summary["row"]["suppressed"], 4);
    assert_eq!(summary["row"]["first_alert_id"], root["alert_id"]);
    assert_eq!(summary["severity"], "high");
    let (_, metrics) = http_get(t.engine.api_addr, "/metrics").await;
    assert!(metrics.contains("vedette_dedup_hits_total 4"), "repeats are dedup hits");
    t.engine.shutdown().await;
}
