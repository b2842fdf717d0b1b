//! Sensor liveness and commands over real QUIC and HTTP: a silent sensor raises
//! `vedette.sensor_silent` through the normal sinks and `vedette.sensor_back` when it returns,
//! also across engine restarts (once per episode); observe level and config commands change
//! what the reference sensor sends, reach a sensor that was offline when they were given, and
//! a sensor cannot answer another sensor's command.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use vedette_engine::sensor::{self, Event, SensorStats};
use vedette_schemas::fleet::CommandResult;
use vedette_schemas::frame::{Control, Heartbeat};
use vedette_tests::{RawClient, TestEngine, eventually, http_call, shadow_cat};

fn of_rule<'a>(alerts: &'a [Value], rule: &str, sensor: &str) -> Vec<&'a Value> {
    alerts.iter().filter(|a| a["rule_id"] == rule && a["sensor_id"] == sensor).collect()
}

async fn wait_alerts(t: &TestEngine, rule: &str, sensor: &str, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let alerts = t.alerts().await;
        if of_rule(&alerts, rule, sensor).len() >= n || std::time::Instant::now() > deadline {
            return alerts;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn quick_silence() -> TestEngine {
    TestEngine::start_with(|c| {
        c.ingest.heartbeat_interval = Duration::from_secs(1);
        c.fleet.silent_after = Some(Duration::from_secs(2));
    })
    .await
}

#[tokio::test]
async fn a_silent_sensor_raises_an_alert_and_another_when_back_also_across_restarts() {
    let t = quick_silence().await;
    let cfg = t.sensor("quiet-1", "acme");
    let mut client = RawClient::connect(&cfg, 0).await.unwrap();
    // No heartbeats: silent after two seconds.
    let alerts = wait_alerts(&t, "vedette.sensor_silent", "quiet-1", 1).await;
    let silent = of_rule(&alerts, "vedette.sensor_silent", "quiet-1");
    assert_eq!(silent.len(), 1, "{alerts:?}");
    assert_eq!((silent[0]["tenant"].as_str(), silent[0]["severity"].as_str()), (Some("acme"), Some("medium")));
    assert_eq!(silent[0]["table"], "sensors");
    let s = t.api("GET", "/api/v1/sensors/quiet-1").await.json();
    assert_eq!((s["status"].as_str(), s["connected"].as_bool()), (Some("silent"), Some(true)), "{s}");
    let r = t.api("GET", "/api/v1/sensors?status=silent").await.json();
    assert_eq!(r["items"].as_array().unwrap().len(), 1);

    let hb = Control::Heartbeat(Heartbeat { ts: 0 }).to_frame();
    client.session.ctrl_send.write_all(&hb).await.unwrap();
    let alerts = wait_alerts(&t, "vedette.sensor_back", "quiet-1", 1).await;
    assert_eq!(of_rule(&alerts, "vedette.sensor_back", "quiet-1").len(), 1, "{alerts:?}");
    assert_eq!(t.api("GET", "/api/v1/sensors/quiet-1").await.json()["status"], "online");
    let _ = client.until(|m| matches!(m, Control::Heartbeat(_))).await;

    // The engine restarts; the sensor never comes back: reported once more (a new episode)…
    let t = t.restart().await;
    drop(client);
    let alerts = wait_alerts(&t, "vedette.sensor_silent", "quiet-1", 2).await;
    let silent = of_rule(&alerts, "vedette.sensor_silent", "quiet-1");
    assert_eq!(silent.len(), 2, "{alerts:?}");
    assert_ne!(silent[0]["alert_id"], silent[1]["alert_id"]);
    // …and not again for the same episode after another restart.
    let t = t.restart().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let alerts = t.alerts().await;
    assert_eq!(of_rule(&alerts, "vedette.sensor_silent", "quiet-1").len(), 2, "{alerts:?}");
    assert_eq!(t.api("GET", "/api/v1/sensors/quiet-1").await.json()["status"], "silent");
    t.engine.shutdown().await;
}

#[tokio::test]
async fn a_sensor_that_says_goodbye_is_offline_not_silent() {
    let t = quick_silence().await;
    let cfg = t.sensor("polite-1", "default");
    let (tx, rx) = mpsc::channel(4);
    drop(tx);
    sensor::run(cfg, rx, Arc::new(SensorStats::default())).await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(t.api("GET", "/api/v1/sensors/polite-1").await.json()["status"], "offline");
    let alerts = t.alerts().await;
    assert!(of_rule(&alerts, "vedette.sensor_silent", "polite-1").is_empty(), "{alerts:?}");
    t.engine.shutdown().await;
}

async fn post(t: &TestEngine, path: &str, body: Value) -> (u16, Value) {
    let body = serde_json::to_vec(&body).unwrap();
    let r = http_call(t.engine.api_addr, "POST", path, Some(&t.admin_token()), Some(&body)).await;
    let json = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    (r.status, json)
}

fn process_events(t: &TestEngine) -> u64 {
    t.engine.metrics().ingest_events.with_label_values(&["process_events"]).get()
}

fn auth_events(t: &TestEngine) -> u64 {
    t.engine.metrics().ingest_events.with_label_values(&["auth_events"]).get()
}

fn spawn_processes(n: usize) -> Vec<std::process::Child> {
    (0..n).map(|_| std::process::Command::new("sleep").arg("3").spawn().unwrap()).collect()
}

async fn command_state(t: &TestEngine, sensor: &str, id: &str) -> String {
    let list = t.api("GET", &format!("/api/v1/sensors/{sensor}/commands")).await.json();
    list.as_array().unwrap().iter().find(|c| c["id"] == id).map(|c| c["state"].as_str().unwrap().to_string()).unwrap()
}

async fn until_state(t: &TestEngine, sensor: &str, id: &str, want: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while command_state(t, sensor, id).await != want {
        assert!(std::time::Instant::now() < deadline, "command {id} never became {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn level_and_config_commands_change_what_the_sensor_sends_and_wait_for_offline_sensors() {
    let t = TestEngine::start().await;
    let cfg = t.sensor("cmd-1", "default");
    let state = t.data_dir().join("cmd-1.state.json");
    let stats = Arc::new(SensorStats::with_state(state.clone()));
    let (tx, rx) = mpsc::channel(1024);
    let watcher = tokio::spawn(sensor::watch_proc("cmd-host".into(), tx.clone(), stats.controls.subscribe()));
    let run = tokio::spawn(sensor::run(cfg.clone(), rx, Arc::clone(&stats)));
    assert!(eventually(Duration::from_secs(10), || t.engine.sensors_connected() == 1).await);

    // Standard: new processes are reported, with the SHA-256 of their executable.
    let before = process_events(&t);
    let children = spawn_processes(2);
    assert!(
        eventually(Duration::from_secs(10), || process_events(&t) >= before + 2).await,
        "standard reports processes"
    );

    // Minimal: no process events from /proc.
    let (status, q) = post(&t, "/api/v1/sensors/cmd-1/commands", json!({"level": "minimal"})).await;
    assert_eq!((status, q["sent_now"].as_u64()), (202, Some(1)), "{q}");
    until_state(&t, "cmd-1", q["commands"][0]["id"].as_str().unwrap(), "done").await;
    assert_eq!(t.api("GET", "/api/v1/sensors/cmd-1").await.json()["observe_level"], "minimal");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let quiet = process_events(&t);
    let more = spawn_processes(3);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(process_events(&t), quiet, "at minimal the sensor sends no process events from /proc");

    // A config that sends only auth events.
    let config = json!({"version": 1, "tables": ["auth_events"]});
    let (status, q) = post(&t, "/api/v1/sensors/cmd-1/commands", json!({"config": config})).await;
    assert_eq!(status, 202, "{q}");
    until_state(&t, "cmd-1", q["commands"][0]["id"].as_str().unwrap(), "done").await;
    let auth_before = auth_events(&t);
    tx.send(Event { table: "process_events".into(), row: shadow_cat(1) }).await.unwrap();
    tx.send(Event { table: "auth_events".into(), row: json!({"ts": 1, "user": "u", "outcome": "success"}) })
        .await
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || auth_events(&t) == auth_before + 1).await);
    assert_eq!(process_events(&t), quiet, "process events are filtered by the config");
    assert_eq!(stats.events_filtered.load(Ordering::Relaxed), 1);
    assert_eq!(t.api("GET", "/api/v1/sensors/cmd-1").await.json()["config_version"], 1);

    // Bad commands name the field.
    for (body, want) in [
        (json!({"level": "loud"}), "level"),
        (json!({"config": {"version": 0}}), "config.version"),
        (json!({"config": {"version": 2, "tabels": []}}), "tabels"),
        (json!({"level": "minimal", "renew_certificate": true}), "exactly one"),
    ] {
        let (status, e) = post(&t, "/api/v1/sensors/cmd-1/commands", body.clone()).await;
        assert_eq!(status, 400, "{body}: {e}");
        assert!(e["error"].as_str().unwrap_or_default().contains(want), "{body}: {e}");
    }

    // The sensor stops; a level given meanwhile waits and is applied when it is back.
    watcher.abort();
    drop(tx);
    tokio::time::timeout(Duration::from_secs(20), run).await.unwrap().unwrap().unwrap();
    for mut c in children.into_iter().chain(more) {
        let _ = c.kill();
        let _ = c.wait();
    }
    let (status, q) = post(&t, "/api/v1/sensors/cmd-1/commands", json!({"level": "verbose"})).await;
    assert_eq!((status, q["sent_now"].as_u64()), (202, Some(0)), "{q}");
    let id = q["commands"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(command_state(&t, "cmd-1", &id).await, "pending");
    let stats = Arc::new(SensorStats::with_state(state.clone()));
    assert_eq!(stats.controls.level().as_str(), "minimal", "the sensor kept its level across its restart");
    let (tx, rx) = mpsc::channel(8);
    let run = tokio::spawn(sensor::run(cfg, rx, Arc::clone(&stats)));
    until_state(&t, "cmd-1", &id, "done").await;
    assert_eq!(stats.controls.level().as_str(), "verbose");
    assert_eq!(t.api("GET", "/api/v1/sensors/cmd-1").await.json()["observe_level"], "verbose");
    drop(tx);
    tokio::time::timeout(Duration::from_secs(20), run).await.unwrap().unwrap().unwrap();
    t.engine.shutdown().await;
}

#[tokio::test]
async fn selectors_target_labelled_sensors_and_a_sensor_cannot_answer_anothers_command() {
    let t = TestEngine::start().await;
    let a = RawClient::connect(&t.sensor("db-1", "default"), 0).await.unwrap();
    let mut evil = RawClient::connect(&t.sensor("web-1", "default"), 0).await.unwrap();
    let body = serde_json::to_vec(&json!({"labels": "env=prod,role=db"})).unwrap();
    let r =
        http_call(t.engine.api_addr, "PUT", "/api/v1/sensors/db-1/labels", Some(&t.admin_token()), Some(&body)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (status, q) = post(&t, "/api/v1/commands", json!({"selector": "role=db", "level": "minimal"})).await;
    assert_eq!(status, 202, "{q}");
    let cmds = q["commands"].as_array().unwrap();
    assert_eq!(cmds.len(), 1, "{q}");
    assert_eq!(cmds[0]["sensor_id"], "db-1");
    let (_, none) = post(&t, "/api/v1/commands", json!({"selector": "role=web", "level": "minimal"})).await;
    assert_eq!(none["commands"].as_array().unwrap().len(), 0);
    let (status, e) = post(&t, "/api/v1/commands", json!({"selector": "", "level": "minimal"})).await;
    assert_eq!(status, 400, "{e}");

    // web-1 answers db-1's command: refused, counted, and db-1's command stays open.
    let id = cmds[0]["id"].as_str().unwrap().to_string();
    let forged = Control::CommandResult(CommandResult { id: id.clone(), ok: true, message: String::new() });
    evil.session.ctrl_send.write_all(&forged.to_frame()).await.unwrap();
    let Control::Error(err) = evil.until(|m| matches!(m, Control::Error(_))).await else { unreachable!() };
    assert_eq!(err.code, "unknown_command", "{err:?}");
    assert_eq!(command_state(&t, "db-1", &id).await, "sent");
    let refused = t.engine.metrics().ingest_refused.with_label_values(&["command_result"]).get();
    assert_eq!(refused, 1);
    drop(a);
    t.engine.shutdown().await;
}

#[tokio::test]
async fn a_sensors_raw_events_stream_live_and_unknown_or_foreign_sensors_are_404() {
    let t = TestEngine::start().await;
    let cfg = t.sensor("tap-1", "acme");
    let client = RawClient::connect(&cfg, 0).await.unwrap();
    let admin = t.admin_token();
    let mut sse = vedette_tests::SseClient::open(
        t.engine.api_addr,
        "/api/v1/events/stream?sensor=tap-1&table=process_events",
        &admin,
        None,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut data = client.data_stream().await;
    data.write_all(&vedette_tests::ndjson_frame(1, "auth_events", &[json!({"ts": 1, "user": "x"})])).await.unwrap();
    data.write_all(&vedette_tests::ndjson_frame(2, "process_events", &[shadow_cat(7), shadow_cat(8)])).await.unwrap();
    for pid in [7, 8] {
        let ev = sse.next(Duration::from_secs(5)).await.expect("a row");
        assert_eq!(ev.event, "row");
        let row: Value = serde_json::from_str(&ev.data).unwrap();
        assert_eq!((row["_table"].as_str(), row["pid"].as_i64()), (Some("process_events"), Some(pid)), "{row}");
        assert_eq!((row["sensor_id"].as_str(), row["tenant"].as_str()), (Some("tap-1"), Some("acme")));
        assert!(row.get("__seq").is_none(), "engine-internal columns are left out");
    }
    // Another tenant's token, an unknown sensor, a missing parameter.
    let body = serde_json::to_vec(&json!({"name": "g", "role": "analyst", "tenant": "globex"})).unwrap();
    let globex = http_call(t.engine.api_addr, "POST", "/api/v1/tokens", Some(&admin), Some(&body)).await.json();
    let globex = globex["token"].as_str().unwrap();
    let r = http_call(t.engine.api_addr, "GET", "/api/v1/events/stream?sensor=tap-1", Some(globex), None).await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = t.api("GET", "/api/v1/events/stream?sensor=nobody").await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.body.contains("nobody"), "{}", r.body);
    let r = t.api("GET", "/api/v1/events/stream").await;
    assert_eq!((r.status, r.json()["param"].as_str()), (400, Some("sensor")));
    // Deregistered: the stream ends, and a new one is refused.
    assert_eq!(t.api("DELETE", "/api/v1/sensors/tap-1").await.status, 200);
    let end = sse.next(Duration::from_secs(5)).await.expect("an end event");
    assert_eq!(end.event, "end");
    let r = t.api("GET", "/api/v1/events/stream?sensor=tap-1").await;
    assert_eq!(r.status, 404, "{}", r.body);
    t.engine.shutdown().await;
}
