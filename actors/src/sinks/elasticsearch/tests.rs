use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use vedette_config::Format;
use vedette_config::sinks::EsSinkConfig;

use super::*;
use crate::sinks::delivery::{Connector, Outcome};
use crate::sinks::test_support::batch;

/// A `_bulk` endpoint with Elasticsearch's behaviour: `create` of an existing `_id` is a 409,
/// a document whose `row.pid` is a string fails mapping (400), selected ids are throttled once
/// (429), bodies over `max_body` are a 413, and `busy` answers the whole request with 429.
#[derive(Clone, Default)]
struct Es {
    docs: Arc<Mutex<BTreeMap<(String, String), Value>>>,
    throttle_once: Arc<Mutex<HashSet<String>>>,
    max_body: Arc<Mutex<Option<usize>>>,
    busy: Arc<Mutex<bool>>,
    requests: Arc<Mutex<Vec<usize>>>,
}

async fn bulk(State(es): State<Es>, headers: HeaderMap, body: axum::body::Bytes) -> (StatusCode, String) {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("ApiKey k3y") {
        return (StatusCode::UNAUTHORIZED, json!({"error": {"type": "security_exception"}, "status": 401}).to_string());
    }
    assert_eq!(headers.get("content-type").unwrap(), "application/x-ndjson");
    if *es.busy.lock().unwrap() {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            json!({"error": {"type": "es_rejected_execution_exception"}}).to_string(),
        );
    }
    if es.max_body.lock().unwrap().is_some_and(|m| body.len() > m) {
        return (StatusCode::PAYLOAD_TOO_LARGE, String::new());
    }
    let lines: Vec<Value> =
        body.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap()).collect();
    es.requests.lock().unwrap().push(lines.len() / 2);
    let mut items = Vec::new();
    for pair in lines.chunks(2) {
        let action = &pair[0]["create"];
        assert!(action.get("_type").is_none(), "no _type");
        let (index, id) = (action["_index"].as_str().unwrap().to_string(), action["_id"].as_str().unwrap().to_string());
        let doc = pair[1].clone();
        let (status, error) = if es.throttle_once.lock().unwrap().remove(&id) {
            (429, json!({"type": "es_rejected_execution_exception", "reason": "rejected execution"}))
        } else if doc["row"]["pid"].is_string() {
            (
                400,
                json!({"type": "mapper_parsing_exception", "reason": "failed to parse field [row.pid] of type [long]"}),
            )
        } else {
            match es.docs.lock().unwrap().entry((index.clone(), id.clone())) {
                std::collections::btree_map::Entry::Occupied(_) => (
                    409,
                    json!({"type": "version_conflict_engine_exception", "reason": format!("[{id}]: version conflict, document already exists")}),
                ),
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(doc);
                    (201, Value::Null)
                }
            }
        };
        let mut item = json!({"_index": index, "_id": id, "status": status});
        if !error.is_null() {
            item["error"] = error;
        }
        items.push(json!({"create": item}));
    }
    let errors = items.iter().any(|i| i["create"]["status"] != 201);
    (StatusCode::OK, json!({"took": 3, "errors": errors, "items": items}).to_string())
}

async fn serve(es: Es) -> String {
    let app = axum::Router::new().route("/_bulk", axum::routing::post(bulk)).with_state(es);
    crate::sinks::test_support::serve(app).await
}

fn config(url: String) -> EsSinkConfig {
    EsSinkConfig {
        url,
        index: "vedette-alerts-%Y.%m.%d".into(),
        username: None,
        password: None,
        api_key: Some("k3y".into()),
        timeout: Duration::from_secs(5),
    }
}

fn id(n: u128) -> String {
    uuid::Uuid::from_u128(n).to_string()
}

#[tokio::test]
async fn creates_with_the_alert_id_in_a_dated_index_and_a_resend_is_a_409_not_a_duplicate() {
    let es = Es::default();
    let mut sink = Elasticsearch::new("es", &config(serve(es.clone()).await), Format::Json).unwrap();
    let b = batch(Format::Json, 3);
    assert_eq!(sink.send(&b).await, vec![Outcome::Delivered; 3]);
    assert_eq!(sink.send(&b).await, vec![Outcome::Delivered; 3], "409 = already delivered");
    let docs = es.docs.lock().unwrap().clone();
    assert_eq!(docs.len(), 3);
    let ((index, first_id), doc) = docs.iter().next().unwrap();
    assert_eq!(index, "vedette-alerts-2023.11.14");
    assert_eq!(first_id, &id(1));
    assert_eq!(doc["@timestamp"], "2023-11-14T22:13:20.123456Z");
    assert_eq!(doc["rule_id"], "r0");
}

#[tokio::test]
async fn mixed_item_results_are_delivered_retried_or_refused_one_by_one() {
    let es = Es::default();
    let url = serve(es.clone()).await;
    let mut sink = Elasticsearch::new("es", &config(url), Format::Json).unwrap();
    let mut b = batch(Format::Json, 4);
    // Item 0 exists already (409), item 1 is throttled (429), item 2 fails mapping (400).
    assert_eq!(sink.send(&b[..1]).await, [Outcome::Delivered]);
    es.throttle_once.lock().unwrap().insert(id(2));
    b[2].alert.row.insert("pid".into(), json!("not a number"));
    b[2].body = vedette_pipelines::formats::encode(Format::Json, &b[2].alert);
    let out = sink.send(&b).await;
    assert_eq!(out[0], Outcome::Delivered);
    assert!(matches!(&out[1], Outcome::Retry(e) if e.contains("429")), "{out:?}");
    assert!(
        matches!(&out[2], Outcome::Reject(e) if e.contains("mapper_parsing_exception") && e.contains("row.pid")),
        "{out:?}"
    );
    assert_eq!(out[3], Outcome::Delivered);
    assert_eq!(sink.send(&b[1..2]).await, [Outcome::Delivered], "the throttled item goes through on retry");
}

#[tokio::test]
async fn a_413_splits_the_batch_until_it_fits() {
    let es = Es::default();
    let b = batch(Format::Json, 8);
    let one = bulk_body("vedette-alerts-%Y.%m.%d", Format::Json, &b[..1]).len();
    *es.max_body.lock().unwrap() = Some(one * 2 + 10);
    let mut sink = Elasticsearch::new("es", &config(serve(es.clone()).await), Format::Json).unwrap();
    assert_eq!(sink.send(&b).await, vec![Outcome::Delivered; 8]);
    assert_eq!(es.docs.lock().unwrap().len(), 8);
    assert!(es.requests.lock().unwrap().iter().all(|n| *n <= 2));
    *es.max_body.lock().unwrap() = Some(10);
    assert!(matches!(&sink.send(&batch(Format::Json, 1)).await[0], Outcome::Reject(e) if e.contains("413")));
}

#[tokio::test]
async fn request_level_throttling_and_bad_credentials_are_retried() {
    let es = Es::default();
    *es.busy.lock().unwrap() = true;
    let url = serve(es.clone()).await;
    let mut sink = Elasticsearch::new("es", &config(url.clone()), Format::Json).unwrap();
    assert!(
        sink.send(&batch(Format::Json, 2)).await.iter().all(|o| matches!(o, Outcome::Retry(e) if e.contains("429")))
    );
    let mut bad = config(url);
    bad.api_key = Some("wrong".into());
    let mut sink = Elasticsearch::new("es", &bad, Format::Json).unwrap();
    assert!(matches!(&sink.send(&batch(Format::Json, 1)).await[0], Outcome::Retry(e) if e.contains("credentials")));
}

#[test]
fn index_patterns_take_the_alert_date() {
    let ts = chrono::DateTime::parse_from_rfc3339("2026-03-09T23:59:59Z").unwrap().to_utc();
    assert_eq!(index_name("vedette-alerts-%Y.%m.%d", ts), "vedette-alerts-2026.03.09");
    assert_eq!(index_name("alerts", ts), "alerts");
}
