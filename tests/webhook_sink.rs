//! A webhook destination that is down for a while: detection goes on, alerts wait in the spool,
//! and once the receiver answers 200 every alert arrives once, in order, signed. Sinks added,
//! changed and removed by a config reload while alerts flow.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use vedette_actors::sinks::webhook::{SIGNATURE_HEADER, TIMESTAMP_HEADER, sign};
use vedette_schemas::frame::Control;
use vedette_tests::{RawClient, TestEngine, eventually, ndjson_frame, shadow_cat};

#[derive(Clone, Default)]
struct Receiver {
    /// Path prefix of every request received (`/in`, `/v2`).
    paths: Arc<Mutex<Vec<String>>>,
    up: Arc<Mutex<bool>>,
    refused: Arc<Mutex<u32>>,
    alerts: Arc<Mutex<Vec<Value>>>,
}

async fn receive(
    State(r): State<Receiver>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let ts: i64 = h(TIMESTAMP_HEADER).parse().unwrap_or(0);
    if h(SIGNATURE_HEADER) != sign("k3y", ts, &body) {
        return StatusCode::UNAUTHORIZED;
    }
    if !*r.up.lock().unwrap() {
        *r.refused.lock().unwrap() += 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let batch: Vec<Value> = serde_json::from_slice(&body).unwrap();
    r.paths.lock().unwrap().extend(batch.iter().map(|_| uri.path().to_string()));
    r.alerts.lock().unwrap().extend(batch);
    StatusCode::OK
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_wait_out_a_webhook_outage_and_arrive_once_in_order() {
    let r = Receiver::default();
    let app = axum::Router::new().route("/in", axum::routing::post(receive)).with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/in", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let t = TestEngine::start_with(|c| {
        let text = format!(
            "[[sinks]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{url}\"\nsecret = \"k3y\"\n\
             batch = {{ max_events = 7, linger = \"1ms\" }}\nretry = {{ base = \"5ms\", cap = \"50ms\" }}\n\
             breaker = {{ failures = 3, open_for = \"100ms\" }}\n"
        );
        c.sinks.extend(vedette_config::Config::from_toml_str(&text).unwrap().sinks);
    })
    .await;
    let mut c = RawClient::connect(&t.sensor("s", "default"), 0).await.unwrap();
    for seq in 1..=10u64 {
        let rows: Vec<Value> = (0..5).map(|i| shadow_cat(seq as i64 * 10 + i)).collect();
        let mut s = c.data_stream().await;
        s.write_all(&ndjson_frame(seq, "process_events", &rows)).await.unwrap();
        s.finish().unwrap();
        // Acknowledged while the receiver is down: the alerts are spooled.
        c.until(|m| matches!(m, Control::Ack(a) if a.seq == seq)).await;
    }
    assert!(eventually(Duration::from_secs(10), || *r.refused.lock().unwrap() >= 3).await);
    let body = t.api("GET", "/api/v1/sinks").await.body;
    let sinks: Value = serde_json::from_str(&body).unwrap();
    let hook = sinks.as_array().unwrap().iter().find(|s| s["name"] == "hook").unwrap();
    assert_eq!(hook["spooled"], 50, "{hook}");
    assert!(hook["last_error"].as_str().unwrap().contains("503"), "{hook}");
    // The file sink was not held up by the webhook.
    let file = t.data_dir().join("alerts.jsonl");
    assert!(eventually(Duration::from_secs(10), || vedette_tests::read_alerts(&file).len() == 50).await);

    *r.up.lock().unwrap() = true;
    assert!(t.engine.wait_delivered(Duration::from_secs(20)).await);
    let got = r.alerts.lock().unwrap().clone();
    let pids: Vec<i64> = got.iter().map(|a| a["row"]["pid"].as_i64().unwrap()).collect();
    let expected: Vec<i64> = (1..=10).flat_map(|s| (0..5).map(move |i| s * 10 + i)).collect();
    assert_eq!(pids, expected, "every alert once, in spool order");

    // `vedette sinks test`: one sample alert straight to the destination.
    let answer = t.api("POST", "/api/v1/sinks/hook/test").await;
    let (status, body) = (answer.status, answer.body);
    assert_eq!(status, 200, "{body}");
    assert_eq!(r.alerts.lock().unwrap().last().unwrap()["rule_id"], "vedette.test");

    // On a file sink the sample is appended beside the running sink; its next write and a
    // restart keep the line (the sink records the file's real length), and nothing is lost.
    let answer = t.api("POST", "/api/v1/sinks/file/test").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let lines = vedette_tests::read_alerts(&file);
    assert_eq!((lines.len(), lines[50]["rule_id"].as_str()), (51, Some("vedette.test")));
    let rows: Vec<Value> = (0..5).map(|i| shadow_cat(110 + i)).collect();
    let mut s = c.data_stream().await;
    s.write_all(&ndjson_frame(11, "process_events", &rows)).await.unwrap();
    s.finish().unwrap();
    c.until(|m| matches!(m, Control::Ack(a) if a.seq == 11)).await;
    assert!(eventually(Duration::from_secs(10), || vedette_tests::read_alerts(&file).len() == 56).await);
    drop(c);
    let t = t.restart().await;
    // The restarted sink checks the file against its position record on its first write.
    let mut c = RawClient::connect(&t.sensor("s", "default"), 0).await.unwrap();
    let rows: Vec<Value> = (0..5).map(|i| shadow_cat(120 + i)).collect();
    let mut s = c.data_stream().await;
    s.write_all(&ndjson_frame(12, "process_events", &rows)).await.unwrap();
    s.finish().unwrap();
    c.until(|m| matches!(m, Control::Ack(a) if a.seq == 12)).await;
    assert!(t.engine.wait_delivered(Duration::from_secs(20)).await);
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("whole lines only")).collect();
    assert_eq!(lines.len(), 61, "nothing cut or lost after a restart");
    assert_eq!(lines[50]["rule_id"], "vedette.test");
    t.engine.shutdown().await;
}

/// Sends frame `seq` of 5 shadow-copy rows (pids `seq*10 ..`) and waits for its ack.
async fn send(c: &mut RawClient, seq: u64) {
    let rows: Vec<Value> = (0..5).map(|i| shadow_cat(seq as i64 * 10 + i)).collect();
    let mut s = c.data_stream().await;
    s.write_all(&ndjson_frame(seq, "process_events", &rows)).await.unwrap();
    s.finish().unwrap();
    c.until(|m| matches!(m, Control::Ack(a) if a.seq == seq)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_changes_and_removes_sinks_while_alerts_flow_and_loses_nothing() {
    let r = Receiver::default();
    let app = axum::Router::new()
        .route("/in", axum::routing::post(receive))
        .route("/v2", axum::routing::post(receive))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    *r.up.lock().unwrap() = true;

    let dir = tempfile::tempdir().unwrap();
    let file_sink =
        "[[sinks]]\nname = \"file\"\ntype = \"file\"\npath = \"alerts.jsonl\"\nbatch = { linger = \"1ms\" }\n";
    let hook = |path: &str, extra: &str| {
        format!(
            "[[sinks]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{base}{path}\"\nsecret = \"k3y\"\n\
             batch = {{ max_events = 7, linger = \"1ms\" }}\nretry = {{ base = \"5ms\", cap = \"50ms\" }}\n\
             breaker = {{ failures = 3, open_for = \"100ms\" }}\n{extra}"
        )
    };
    let path = dir.path().join("vedette.toml");
    let write = |sinks: &str| {
        let text = format!(
            "[ingest]\nlisten = \"127.0.0.1:0\"\n[api]\nlisten = \"127.0.0.1:0\"\n\
             [pipeline]\nbatch_linger = \"20ms\"\n{sinks}"
        );
        std::fs::write(&path, &text).unwrap();
        text
    };
    let text = write(file_sink);
    let data_dir = dir.path().join("data");
    let mut config = vedette_config::Config::from_toml_str(&text).unwrap();
    config.data_dir = data_dir.clone();
    let engine = vedette_engine::EngineHandle::start(config).await.unwrap();
    engine.reloader().set_source(vedette_engine::reload::Source {
        path: Some(path.clone()),
        data_dir: Some(data_dir.clone()),
        log_level: None,
    });
    let token = std::fs::read_to_string(data_dir.join("admin.token")).unwrap();
    let sinks = || async {
        let a = vedette_tests::http_call(engine.api_addr, "GET", "/api/v1/sinks", Some(token.trim()), None).await;
        let list: Vec<Value> = serde_json::from_str(&a.body).unwrap();
        list.into_iter()
            .map(|s| (s["name"].as_str().unwrap().to_string(), s))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let file = data_dir.join("alerts.jsonl");
    let sensor = vedette_tests::sensor_config(&data_dir, engine.ingest_addr, "s", "default");
    let mut c = RawClient::connect(&sensor, 0).await.unwrap();
    send(&mut c, 1).await;

    // Added: alerts from then on reach it.
    write(&format!("{file_sink}{}", hook("/in", "")));
    let report = engine.reloader().reload().await.unwrap();
    assert_eq!(
        (report.sinks.added.as_slice(), report.changed.as_slice()),
        (&["hook".to_string()][..], &["sinks[hook]".to_string()][..])
    );
    send(&mut c, 2).await;
    assert!(eventually(Duration::from_secs(10), || r.alerts.lock().unwrap().len() == 5).await);

    // Changed while its destination is down: what it holds moves with it to the new settings.
    *r.up.lock().unwrap() = false;
    send(&mut c, 3).await;
    assert!(eventually(Duration::from_secs(10), || *r.refused.lock().unwrap() >= 2).await);
    write(&format!("{file_sink}{}", hook("/v2", "")));
    let report = engine.reloader().reload().await.unwrap();
    assert_eq!(report.sinks.changed, ["hook"]);
    assert_eq!(report.changed, ["sinks[hook].url"]);
    assert_eq!(sinks().await["hook"]["spooled"], 5, "the changed sink kept its spool");
    *r.up.lock().unwrap() = true;
    assert!(eventually(Duration::from_secs(10), || r.alerts.lock().unwrap().len() == 10).await);
    assert_eq!(r.paths.lock().unwrap()[5..], ["/v2"; 5], "delivered with the new settings");

    // A sink whose connector cannot be built: refused, nothing changes.
    write(&format!("{file_sink}{}", hook("/v2", "tls_ca = \"missing-ca.pem\"\n")));
    let refused = engine.reloader().reload().await.unwrap_err().to_string();
    assert!(refused.contains("sinks[1].tls_ca") && refused.contains("missing-ca.pem"), "{refused}");
    write(&format!("{file_sink}{}", hook("/v2", "")));

    // Removed while down: no new alerts go to it; it keeps what it holds and, named again,
    // carries on with it.
    *r.up.lock().unwrap() = false;
    send(&mut c, 4).await;
    assert!(eventually(Duration::from_secs(10), || *r.refused.lock().unwrap() >= 4).await);
    write(file_sink);
    let report = engine.reloader().reload().await.unwrap();
    assert_eq!(report.sinks.removed, ["hook"]);
    let hook_now = sinks().await["hook"].clone();
    assert_eq!((hook_now["removed"].as_bool(), hook_now["spooled"].as_u64()), (Some(true), Some(5)), "{hook_now}");
    assert!(hook_now["reason"].as_str().unwrap().contains("removed from the config"), "{hook_now}");
    send(&mut c, 5).await;
    assert_eq!(sinks().await["hook"]["spooled"], 5, "a removed sink gets no new alerts");
    write(&format!("{file_sink}{}", hook("/v2", "")));
    let report = engine.reloader().reload().await.unwrap();
    assert_eq!(report.sinks.added, ["hook"]);
    assert_eq!(
        (sinks().await["hook"]["removed"].as_bool(), sinks().await["hook"]["spooled"].as_u64()),
        (Some(false), Some(5))
    );
    send(&mut c, 6).await;
    assert!(eventually(Duration::from_secs(10), || *r.refused.lock().unwrap() >= 6).await);
    write(file_sink);
    engine.reloader().reload().await.unwrap();
    let (_, ready) = vedette_tests::http_get(engine.api_addr, "/health/ready").await;
    assert!(ready.contains("sink:hook"), "still delivering: {ready}");
    // Back up: it delivers what it held, then goes.
    *r.up.lock().unwrap() = true;
    assert!(eventually(Duration::from_secs(10), || r.alerts.lock().unwrap().len() == 20).await);
    let gone = async {
        for _ in 0..100 {
            if !sinks().await.contains_key("hook") {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    assert!(gone.await, "a removed sink goes once its spool is delivered");
    let (_, ready) = vedette_tests::http_get(engine.api_addr, "/health/ready").await;
    assert!(!ready.contains("sink:hook"), "{ready}");
    let (_, metrics) = vedette_tests::http_get(engine.api_addr, "/metrics").await;
    assert!(metrics.contains("sink=\"file\""), "the file sink's series stay");
    assert!(!metrics.contains("sink=\"hook\""), "a gone sink's series go with it");

    // Every alert reached the hook once, in order: frames 2, 3, 4 and 6 (5 came while it was
    // removed); the file sink has all six frames.
    let pids: Vec<i64> = r.alerts.lock().unwrap().iter().map(|a| a["row"]["pid"].as_i64().unwrap()).collect();
    let expected: Vec<i64> = [2, 3, 4, 6].into_iter().flat_map(|s| (0..5).map(move |i| s * 10 + i)).collect();
    assert_eq!(pids, expected);
    assert!(engine.wait_delivered(Duration::from_secs(10)).await);
    assert_eq!(vedette_tests::read_alerts(&file).len(), 30);
    engine.shutdown().await;
}
