use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use vedette_config::Format;
use vedette_config::sinks::WebhookSinkConfig;

use super::*;
use crate::sinks::delivery::{Connector, Outcome};
use crate::sinks::test_support::batch;

/// (content type, body, idempotency key) of a request.
type Request = (String, Vec<u8>, String);

#[derive(Clone, Default)]
struct Receiver {
    /// Status to answer with, in order (then 200).
    statuses: Arc<Mutex<Vec<u16>>>,
    /// (content type, body, idempotency key) of every request whose signature verified.
    got: Arc<Mutex<Vec<Request>>>,
    /// Idempotency keys of every request that reached the receiver, answered or not.
    keys: Arc<Mutex<Vec<String>>>,
}

const SECRET: &str = "s3cret";

/// A receiver as docs/sinks.md tells one to write it: recompute the HMAC over
/// "<timestamp>.<body>", compare, refuse timestamps older than 5 minutes.
async fn serve(r: Receiver) -> String {
    let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(r);
    format!("{}/hook", crate::sinks::test_support::serve(app).await)
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: axum::body::Bytes) -> (StatusCode, String) {
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let ts: i64 = h(TIMESTAMP_HEADER).parse().unwrap_or(0);
    if (chrono::Utc::now().timestamp() - ts).abs() > 300 || h(SIGNATURE_HEADER) != sign(SECRET, ts, &body) {
        return (StatusCode::UNAUTHORIZED, "bad signature".into());
    }
    r.keys.lock().unwrap().push(h("idempotency-key"));
    if h("x-team") != "soc" {
        return (StatusCode::BAD_REQUEST, "missing X-Team".into());
    }
    let next = {
        let mut s = r.statuses.lock().unwrap();
        if s.is_empty() { 200 } else { s.remove(0) }
    };
    if next == 200 {
        r.got.lock().unwrap().push((h("content-type"), body.to_vec(), h("idempotency-key")));
    }
    (StatusCode::from_u16(next).unwrap(), format!("answer {next}"))
}

fn config(url: String, secret: Option<&str>) -> WebhookSinkConfig {
    WebhookSinkConfig {
        url,
        secret: secret.map(str::to_string),
        headers: [("X-Team".to_string(), "soc".to_string())].into_iter().collect(),
        timeout: std::time::Duration::from_secs(5),
        tls_ca: None,
    }
}

#[tokio::test]
async fn signed_json_batches_verify_at_the_receiver() {
    let r = Receiver::default();
    let mut hook = Webhook::new("w", &config(serve(r.clone()).await, Some(SECRET)), Format::Json).unwrap();
    assert_eq!(hook.send(&batch(Format::Json, 3)).await, vec![Outcome::Delivered; 3]);
    let got = r.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, "application/json");
    let alerts: Vec<serde_json::Value> = serde_json::from_slice(&got[0].1).unwrap();
    assert_eq!(alerts.iter().map(|a| a["rule_id"].as_str().unwrap()).collect::<Vec<_>>(), ["r0", "r1", "r2"]);
}

#[tokio::test]
async fn a_wrong_secret_is_refused_and_dead_lettered() {
    let r = Receiver::default();
    let mut hook = Webhook::new("w", &config(serve(r.clone()).await, Some("wrong")), Format::Json).unwrap();
    let out = hook.send(&batch(Format::Json, 2)).await;
    assert!(matches!(&out[0], Outcome::Reject(e) if e.contains("401") && e.contains("bad signature")), "{out:?}");
}

#[tokio::test]
async fn server_errors_and_throttling_are_retried_client_errors_are_not() {
    let r = Receiver { statuses: Arc::new(Mutex::new(vec![503, 429, 400])), ..Default::default() };
    let mut hook = Webhook::new("w", &config(serve(r.clone()).await, Some(SECRET)), Format::Json).unwrap();
    let b = batch(Format::Json, 1);
    assert!(matches!(&hook.send(&b).await[0], Outcome::Retry(e) if e.contains("503")));
    assert!(matches!(&hook.send(&b).await[0], Outcome::Retry(e) if e.contains("429")));
    assert!(matches!(&hook.send(&b).await[0], Outcome::Reject(e) if e.contains("400") && e.contains("answer 400")));
    assert_eq!(hook.send(&b).await, [Outcome::Delivered]);
    // Every attempt at the same alerts carries the same idempotency key; other alerts another.
    let keys = r.keys.lock().unwrap().clone();
    assert_eq!(keys.len(), 4);
    assert!(keys.iter().all(|k| *k == keys[0] && k.len() == 64), "{keys:?}");
    assert_eq!(keys[0], idempotency_key(&b));
    assert_ne!(idempotency_key(&batch(Format::Json, 2)), keys[0]);
}

#[tokio::test]
async fn an_unreachable_receiver_is_retried() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut hook = Webhook::new("w", &config(format!("http://127.0.0.1:{port}/hook"), None), Format::Json).unwrap();
    let out = hook.send(&batch(Format::Json, 1)).await;
    assert!(matches!(&out[0], Outcome::Retry(e) if e.contains("could not connect")), "{out:?}");
}

#[tokio::test]
async fn cef_batches_are_one_line_per_alert() {
    let r = Receiver::default();
    let mut hook = Webhook::new("w", &config(serve(r.clone()).await, Some(SECRET)), Format::Cef).unwrap();
    assert_eq!(hook.send(&batch(Format::Cef, 2)).await, vec![Outcome::Delivered; 2]);
    let got = r.got.lock().unwrap().clone();
    assert!(got[0].0.starts_with("text/plain"));
    let text = String::from_utf8(got[0].1.clone()).unwrap();
    assert_eq!(text.lines().count(), 2);
    assert!(text.lines().all(|l| l.starts_with("CEF:0|vedette|")));
}
