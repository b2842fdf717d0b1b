//! In-test destinations that implement the real protocols, kept in the test process so they
//! outlive engine crashes: an Elasticsearch `_bulk` endpoint and a Splunk HEC collector.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

/// Serves `app` on 127.0.0.1 (OS-chosen port); returns `http://addr`.
pub async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// Elasticsearch's `_bulk` with `create` semantics: a document per `_id`; creating an existing
/// `_id` is a per-item 409.
#[derive(Clone, Default)]
pub struct Elasticsearch {
    /// Documents by `_id`.
    pub docs: Arc<Mutex<BTreeMap<String, Value>>>,
    /// Creates refused with 409 (the same alert sent again).
    pub conflicts: Arc<Mutex<u64>>,
}

async fn bulk(State(es): State<Elasticsearch>, body: axum::body::Bytes) -> (StatusCode, String) {
    let lines: Vec<Value> = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap_or(Value::Null))
        .collect();
    let mut items = Vec::new();
    for pair in lines.chunks(2) {
        let (Some(action), Some(doc)) = (pair.first().and_then(|a| a.get("create")), pair.get(1)) else {
            return (StatusCode::BAD_REQUEST, json!({"error": "malformed bulk body"}).to_string());
        };
        let id = action["_id"].as_str().unwrap_or_default().to_string();
        let mut docs = es.docs.lock().expect("lock");
        let status = if docs.contains_key(&id) {
            *es.conflicts.lock().expect("lock") += 1;
            409
        } else {
            docs.insert(id.clone(), doc.clone());
            201
        };
        let mut item = json!({"_index": action["_index"], "_id": id, "status": status});
        if status == 409 {
            item["error"] = json!({"type": "version_conflict_engine_exception", "reason": "document already exists"});
        }
        items.push(json!({"create": item}));
    }
    let errors = items.iter().any(|i| i["create"]["status"] != 201);
    (StatusCode::OK, json!({"took": 1, "errors": errors, "items": items}).to_string())
}

impl Elasticsearch {
    /// Starts the endpoint; returns its base URL.
    pub async fn start(&self) -> String {
        serve(axum::Router::new().route("/_bulk", axum::routing::post(bulk)).with_state(self.clone())).await
    }

    /// The stored documents.
    pub fn documents(&self) -> Vec<Value> {
        self.docs.lock().expect("lock").values().cloned().collect()
    }
}

/// A Splunk HEC collector (no indexer acknowledgement): checks the token, indexes every event
/// of a concatenated-JSON body, in order. Like Splunk, it keeps duplicates.
#[derive(Clone, Default)]
pub struct Hec {
    /// Indexed events (`event` payloads).
    pub events: Arc<Mutex<Vec<Value>>>,
}

async fn hec_event(State(h): State<Hec>, headers: HeaderMap, body: axum::body::Bytes) -> (StatusCode, String) {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Splunk test-token") {
        return (StatusCode::UNAUTHORIZED, json!({"text": "Invalid authorization", "code": 3}).to_string());
    }
    let mut parsed = Vec::new();
    for (i, item) in serde_json::Deserializer::from_slice(&body).into_iter::<Value>().enumerate() {
        match item {
            Ok(e) if e.get("event").is_some_and(|v| !v.is_null()) => parsed.push(e["event"].clone()),
            _ => {
                let body = json!({"text": "Invalid data format", "code": 6, "invalid-event-number": i});
                return (StatusCode::BAD_REQUEST, body.to_string());
            }
        }
    }
    h.events.lock().expect("lock").extend(parsed);
    (StatusCode::OK, json!({"text": "Success", "code": 0}).to_string())
}

async fn hec_health() -> (StatusCode, String) {
    (StatusCode::OK, json!({"text": "HEC is healthy", "code": 17}).to_string())
}

impl Hec {
    /// Starts the collector; returns its base URL (token `test-token`).
    pub async fn start(&self) -> String {
        let app = axum::Router::new()
            .route("/services/collector/event", axum::routing::post(hec_event))
            .route("/services/collector/health", axum::routing::get(hec_health))
            .with_state(self.clone());
        serve(app).await
    }

    /// The indexed events.
    pub fn events(&self) -> Vec<Value> {
        self.events.lock().expect("lock").clone()
    }
}
