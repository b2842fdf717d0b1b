//! A webhook destination that is down for a while: detection goes on, alerts wait in the spool,
//! and once the receiver answers 200 every alert arrives once, in order, signed.

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
    up: Arc<Mutex<bool>>,
    refused: Arc<Mutex<u32>>,
    alerts: Arc<Mutex<Vec<Value>>>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: axum::body::Bytes) -> StatusCode {
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
