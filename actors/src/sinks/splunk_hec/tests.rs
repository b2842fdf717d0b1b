use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use vedette_config::Format;
use vedette_config::sinks::HecSinkConfig;

use super::*;
use crate::sinks::delivery::{Connector, Outcome};
use crate::sinks::test_support::batch;

/// An HEC endpoint with the collector's behaviour: token check, channel required with acks,
/// concatenated JSON parsed event by event (events before a bad one are indexed and the error
/// names the bad one), 503 when busy, acks that turn true after a few polls.
#[derive(Clone, Default)]
struct Hec {
    indexed: Arc<Mutex<Vec<Value>>>,
    busy: Arc<Mutex<bool>>,
    /// ackId → polls left before it reads true (`None`: never, the ack was lost).
    acks: Arc<Mutex<HashMap<u64, Option<u32>>>>,
    next_ack: Arc<Mutex<u64>>,
    lose_acks: Arc<Mutex<bool>>,
    /// An event whose `event.rule_id` equals this is "invalid".
    invalid_rule: Arc<Mutex<Option<String>>>,
    /// Requests in arrival order: `event:<events>` or `ack:<ids>`.
    log: Arc<Mutex<Vec<String>>>,
}

fn answer(status: u16, body: Value) -> (StatusCode, String) {
    (StatusCode::from_u16(status).unwrap(), body.to_string())
}

async fn event(State(h): State<Hec>, headers: HeaderMap, body: axum::body::Bytes) -> (StatusCode, String) {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Splunk tok") {
        return answer(401, json!({"text": "Invalid authorization", "code": 3}));
    }
    let Some(channel) = headers.get("x-splunk-request-channel") else {
        return answer(400, json!({"text": "Data channel is missing", "code": 10}));
    };
    assert_eq!(channel.len(), 36, "channel is a UUID");
    if *h.busy.lock().unwrap() {
        return answer(503, json!({"text": "Server is busy", "code": 9}));
    }
    let events = serde_json::Deserializer::from_slice(&body).into_iter::<Value>().count();
    h.log.lock().unwrap().push(format!("event:{events}"));
    for (i, item) in serde_json::Deserializer::from_slice(&body).into_iter::<Value>().enumerate() {
        let Ok(e) = item else {
            return answer(400, json!({"text": "Invalid data format", "code": 6, "invalid-event-number": i}));
        };
        if e.get("event").is_none_or(Value::is_null) {
            return answer(400, json!({"text": "Event field is required", "code": 12, "invalid-event-number": i}));
        }
        let invalid = h.invalid_rule.lock().unwrap().clone();
        if invalid.is_some_and(|r| e["event"]["rule_id"] == r.as_str()) {
            return answer(400, json!({"text": "Invalid data format", "code": 6, "invalid-event-number": i}));
        }
        h.indexed.lock().unwrap().push(e);
    }
    let mut next = h.next_ack.lock().unwrap();
    let id = *next;
    *next += 1;
    let polls = if *h.lose_acks.lock().unwrap() { None } else { Some(2) };
    h.acks.lock().unwrap().insert(id, polls);
    answer(200, json!({"text": "Success", "code": 0, "ackId": id}))
}

async fn ack(State(h): State<Hec>, body: axum::body::Bytes) -> (StatusCode, String) {
    let req: Value = serde_json::from_slice(&body).unwrap();
    h.log.lock().unwrap().push(format!("ack:{}", req["acks"]));
    let mut out = serde_json::Map::new();
    let mut acks = h.acks.lock().unwrap();
    for id in req["acks"].as_array().unwrap() {
        let id = id.as_u64().unwrap();
        let done = match acks.get_mut(&id) {
            Some(Some(0)) => true,
            Some(Some(n)) => {
                *n -= 1;
                false
            }
            _ => false,
        };
        out.insert(id.to_string(), json!(done));
    }
    answer(200, json!({"acks": out}))
}

async fn health(State(h): State<Hec>) -> (StatusCode, String) {
    if *h.busy.lock().unwrap() {
        return answer(503, json!({"text": "HEC is unhealthy, queues are full", "code": 18}));
    }
    answer(200, json!({"text": "HEC is healthy", "code": 17}))
}

async fn serve(h: Hec) -> String {
    let app = axum::Router::new()
        .route("/services/collector/event", axum::routing::post(event))
        .route("/services/collector/ack", axum::routing::post(ack))
        .route("/services/collector/health", axum::routing::get(health))
        .with_state(h);
    crate::sinks::test_support::serve(app).await
}

fn config(url: String, ack: bool) -> HecSinkConfig {
    HecSinkConfig {
        url,
        token: "tok".into(),
        index: Some("security".into()),
        sourcetype: "vedette:alert".into(),
        source: "vedette".into(),
        ack,
        channel: None,
        ack_timeout: Duration::from_millis(800),
        timeout: Duration::from_secs(5),
        max_request_bytes: 1_000_000,
    }
}

#[tokio::test]
async fn concatenated_events_with_metadata_are_delivered_once_acknowledged() {
    let h = Hec::default();
    let mut hec = SplunkHec::new("s", &config(serve(h.clone()).await, true), Format::Json).unwrap();
    assert_eq!(hec.send(&batch(Format::Json, 3)).await, vec![Outcome::Delivered; 3]);
    let got = h.indexed.lock().unwrap().clone();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0]["event"]["rule_id"], "r0");
    assert_eq!((got[0]["index"].as_str(), got[0]["sourcetype"].as_str()), (Some("security"), Some("vedette:alert")));
    assert_eq!(got[0]["host"], "web-1");
    assert!((got[0]["time"].as_f64().unwrap() - 1_700_000_000.123_456).abs() < 1e-3);
    assert!(h.acks.lock().unwrap().values().all(|v| *v == Some(0)), "acks were polled until true");
}

#[tokio::test]
async fn a_bad_event_is_refused_alone_earlier_ones_count_later_ones_are_resent() {
    let h = Hec::default();
    *h.invalid_rule.lock().unwrap() = Some("r1".into());
    let mut hec = SplunkHec::new("s", &config(serve(h.clone()).await, false), Format::Json).unwrap();
    let out = hec.send(&batch(Format::Json, 3)).await;
    assert_eq!(out[0], Outcome::Delivered);
    assert!(
        matches!(&out[1], Outcome::Reject(e) if e.contains("code 6") && e.contains("Invalid data format")),
        "{out:?}"
    );
    assert!(matches!(&out[2], Outcome::Retry(_)), "{out:?}");
    assert_eq!(h.indexed.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn busy_collectors_and_bad_tokens_are_retried() {
    let h = Hec::default();
    *h.busy.lock().unwrap() = true;
    let url = serve(h.clone()).await;
    let mut hec = SplunkHec::new("s", &config(url.clone(), false), Format::Json).unwrap();
    assert!(matches!(&hec.send(&batch(Format::Json, 1)).await[0], Outcome::Retry(e) if e.contains("code 9")));
    let mut bad = config(url, false);
    bad.token = "wrong".into();
    let mut hec = SplunkHec::new("s", &bad, Format::Json).unwrap();
    assert!(
        matches!(&hec.send(&batch(Format::Json, 1)).await[0], Outcome::Retry(e) if e.contains("check the sink's token"))
    );
}

#[tokio::test]
async fn an_ack_that_never_comes_sends_the_batch_again() {
    let h = Hec::default();
    *h.lose_acks.lock().unwrap() = true;
    let mut hec = SplunkHec::new("s", &config(serve(h.clone()).await, true), Format::Json).unwrap();
    let out = hec.send(&batch(Format::Json, 2)).await;
    assert!(matches!(&out[0], Outcome::Retry(e) if e.contains("did not acknowledge")), "{out:?}");
    *h.lose_acks.lock().unwrap() = false;
    assert_eq!(hec.send(&batch(Format::Json, 2)).await, vec![Outcome::Delivered; 2]);
    // At least once: the first, unacknowledged copy may have been indexed too.
    assert_eq!(h.indexed.lock().unwrap().len(), 4);
}

/// A config whose requests hold two sample events each.
fn two_per_request(url: String) -> HecSinkConfig {
    let mut c = config(url, true);
    let one = event_json(&c, Format::Json, &batch(Format::Json, 1)[0]).len() as u64;
    c.max_request_bytes = 2 * one + one / 2;
    c
}

#[tokio::test]
async fn a_large_batch_goes_out_as_several_requests_whose_acks_are_awaited_together() {
    let h = Hec::default();
    let mut hec = SplunkHec::new("s", &two_per_request(serve(h.clone()).await), Format::Json).unwrap();
    assert_eq!(hec.send(&batch(Format::Json, 6)).await, vec![Outcome::Delivered; 6]);
    let log = h.log.lock().unwrap().clone();
    // Three requests before the first ack poll; acks take three polls of all three ids.
    assert_eq!(log[..4], ["event:2", "event:2", "event:2", "ack:[0,1,2]"], "{log:?}");
    assert_eq!(log.len(), 6, "{log:?}");
    let rules: Vec<Value> = h.indexed.lock().unwrap().iter().map(|e| e["event"]["rule_id"].clone()).collect();
    assert_eq!(rules, ["r0", "r1", "r2", "r3", "r4", "r5"], "in order");
}

#[tokio::test]
async fn a_failed_request_stops_the_batch_and_earlier_requests_still_count_once_acknowledged() {
    let h = Hec::default();
    *h.invalid_rule.lock().unwrap() = Some("r2".into());
    let mut hec = SplunkHec::new("s", &two_per_request(serve(h.clone()).await), Format::Json).unwrap();
    let out = hec.send(&batch(Format::Json, 6)).await;
    assert_eq!(out[..2], [Outcome::Delivered, Outcome::Delivered], "{out:?}");
    assert!(matches!(&out[2], Outcome::Reject(e) if e.contains("code 6")), "{out:?}");
    assert!(out[3..].iter().all(|o| matches!(o, Outcome::Retry(_))), "{out:?}");
    assert!(matches!(&out[4], Outcome::Retry(e) if e.contains("earlier request")), "{out:?}");
    let log = h.log.lock().unwrap().clone();
    assert_eq!(log.iter().filter(|l| l.starts_with("event")).count(), 2, "the third request is not sent: {log:?}");
}

#[tokio::test]
async fn the_health_endpoint_says_whether_hec_takes_data() {
    let h = Hec::default();
    let url = serve(h.clone()).await;
    let mut hec = SplunkHec::new("s", &config(url, true), Format::Json).unwrap();
    assert_eq!(hec.health().await, Ok(()));
    *h.busy.lock().unwrap() = true;
    let e = hec.health().await.unwrap_err();
    assert!(e.contains("503") && e.contains("queues are full"), "{e}");
    let mut gone = SplunkHec::new("s", &config("http://127.0.0.1:9".into(), true), Format::Json).unwrap();
    assert!(gone.health().await.unwrap_err().contains("HEC health"));
}

#[test]
fn answers_map_to_outcomes() {
    use reqwest::StatusCode as S;
    assert_eq!(classify(S::OK, r#"{"text":"Success","code":0}"#, 2), vec![Outcome::Delivered; 2]);
    let r = classify(S::BAD_REQUEST, r#"{"text":"Event field cannot be blank","code":13}"#, 2);
    assert!(r.iter().all(|o| matches!(o, Outcome::Reject(_))), "{r:?}");
    let r = classify(S::BAD_REQUEST, r#"{"text":"Incorrect index","code":7}"#, 1);
    assert!(matches!(&r[0], Outcome::Retry(e) if e.contains("check the sink's index")));
    let r = classify(S::FORBIDDEN, r#"{"text":"Token disabled","code":1}"#, 1);
    assert!(matches!(&r[0], Outcome::Retry(_)));
    let r = classify(S::SERVICE_UNAVAILABLE, r#"{"text":"HEC is unhealthy, queues are full","code":18}"#, 1);
    assert!(matches!(&r[0], Outcome::Retry(_)));
}
