//! HTTP API: health, metrics, the rule set (list, apply, enable/disable) and reference tables
//! (list, reload, upload).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use vedette_actors::metrics::Metrics;

use crate::error::EngineError;
use crate::ruleset::RuleManager;

/// Largest reference table upload accepted (`PUT /api/v1/reference/{name}`).
pub const MAX_UPLOAD_BYTES: usize = 256 << 20;

/// Reports each component's readiness, and each sink's delivery state (breaker, spool).
pub type Readiness = Arc<dyn Fn() -> (Vec<(String, bool)>, serde_json::Map<String, serde_json::Value>) + Send + Sync>;

#[derive(Clone)]
struct ApiState {
    metrics: Metrics,
    readiness: Readiness,
    rules: Arc<tokio::sync::Mutex<RuleManager>>,
    sinks: vedette_actors::sinks::Router,
    data_dir: std::path::PathBuf,
}

/// A sink as `GET /api/v1/sinks` shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct SinkView {
    /// Sink name.
    pub name: String,
    /// Connector type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Encoding.
    pub format: String,
    /// Circuit breaker: closed, open or half_open.
    pub breaker: String,
    /// Alerts waiting in the spool.
    pub spooled: u64,
    /// Bytes in the spool.
    pub spool_bytes: u64,
    /// The spool's bound.
    pub spool_max_bytes: u64,
    /// Alerts in the dead-letter queue.
    pub dead_letters: usize,
    /// Last delivery error, while failing.
    pub last_error: Option<String>,
}

/// The router.
pub fn router(
    metrics: Metrics,
    readiness: Readiness,
    rules: Arc<tokio::sync::Mutex<RuleManager>>,
    sinks: vedette_actors::sinks::Router,
    data_dir: std::path::PathBuf,
) -> Router {
    Router::new()
        .route("/health/live", get(|| async { axum::Json(json!({"status": "live"})) }))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/rules", get(rules_list))
        .route("/api/v1/rules/apply", post(rules_apply))
        .route("/api/v1/rules/{id}/enable", post(|s, p| rule_enable(s, p, true)))
        .route("/api/v1/rules/{id}/disable", post(|s, p| rule_enable(s, p, false)))
        .route("/api/v1/reference", get(reference_list))
        .route("/api/v1/reference/{name}/reload", post(reference_reload))
        .route(
            "/api/v1/reference/{name}",
            axum::routing::put(reference_upload).layer(axum::extract::DefaultBodyLimit::max(MAX_UPLOAD_BYTES)),
        )
        .route("/api/v1/sinks", get(sinks_list))
        .route("/api/v1/sinks/{name}/dlq", get(dlq_list).delete(dlq_purge))
        .route("/api/v1/sinks/{name}/dlq/replay", post(dlq_replay))
        .route("/api/v1/sinks/{name}/test", post(sink_test))
        .with_state(ApiState { metrics, readiness, rules, sinks, data_dir })
}

async fn ready(State(s): State<ApiState>) -> impl IntoResponse {
    let (components, sinks) = (s.readiness)();
    let all = components.iter().all(|(_, ok)| *ok);
    let body = json!({
        "status": if all { "ready" } else { "not_ready" },
        "components": components.iter().map(|(n, ok)| (n.clone(), json!(if *ok { "up" } else { "down" }))).collect::<serde_json::Map<_, _>>(),
        "sinks": sinks,
    });
    (if all { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, axum::Json(body))
}

async fn metrics_text(State(s): State<ApiState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render())
}

async fn rules_list(State(s): State<ApiState>) -> impl IntoResponse {
    axum::Json(s.rules.lock().await.status())
}

fn error_response(e: &EngineError) -> Response {
    let status = match e {
        EngineError::UnknownRule { .. } => StatusCode::NOT_FOUND,
        EngineError::Rules(_) | EngineError::Io { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, axum::Json(json!({"error": e.to_string()}))).into_response()
}

async fn rules_apply(State(s): State<ApiState>) -> Response {
    match s.rules.lock().await.apply().await {
        Ok(report) => axum::Json(report).into_response(),
        Err(e) => error_response(&e),
    }
}

async fn rule_enable(State(s): State<ApiState>, Path(id): Path<String>, enabled: bool) -> Response {
    match s.rules.lock().await.set_enabled(&id, enabled).await {
        Ok(()) => axum::Json(json!({"id": id, "enabled": enabled})).into_response(),
        Err(e) => error_response(&e),
    }
}

async fn reference_list(State(s): State<ApiState>) -> impl IntoResponse {
    axum::Json(s.rules.lock().await.references())
}

async fn reference_reload(State(s): State<ApiState>, Path(name): Path<String>) -> Response {
    match s.rules.lock().await.reload_reference(&name) {
        Ok(status) => axum::Json(status).into_response(),
        Err(e) => error_response(&e),
    }
}

async fn reference_upload(State(s): State<ApiState>, Path(name): Path<String>, body: axum::body::Bytes) -> Response {
    match s.rules.lock().await.upload_reference(&name, &body) {
        Ok(status) => axum::Json(status).into_response(),
        Err(e) => error_response(&e),
    }
}

async fn sinks_list(State(s): State<ApiState>) -> impl IntoResponse {
    let views: Vec<SinkView> = s
        .sinks
        .sinks()
        .iter()
        .map(|h| {
            let status = h.status.lock().expect("status lock is never poisoned").clone();
            let (spooled, spool_bytes) = h.spool.depth();
            SinkView {
                name: h.name.clone(),
                kind: h.config.connector.kind().into(),
                format: format!("{:?}", h.config.format()).to_lowercase(),
                breaker: status.breaker.as_str().into(),
                spooled,
                spool_bytes,
                spool_max_bytes: h.config.common.spool.max_bytes,
                dead_letters: h.dead_letters.len(),
                last_error: status.last_error,
            }
        })
        .collect();
    axum::Json(views)
}

fn sink(s: &ApiState, name: &str) -> Result<Arc<vedette_actors::sinks::delivery::SinkHandle>, Box<Response>> {
    s.sinks.sinks().iter().find(|h| h.name == name).cloned().ok_or_else(|| {
        let known: Vec<&str> = s.sinks.sinks().iter().map(|h| h.name.as_str()).collect();
        let msg = format!("no sink named `{name}` (sinks: {})", known.join(", "));
        Box::new((StatusCode::NOT_FOUND, axum::Json(json!({"error": msg}))).into_response())
    })
}

#[derive(serde::Deserialize)]
struct Limit {
    limit: Option<usize>,
}

async fn dlq_list(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    axum::extract::Query(q): axum::extract::Query<Limit>,
) -> Response {
    let h = match sink(&s, &name) {
        Ok(h) => h,
        Err(r) => return *r,
    };
    match h.dead_letters.list(q.limit.unwrap_or(100)) {
        Ok(entries) => {
            axum::Json(json!({"sink": name, "total": h.dead_letters.len(), "entries": entries})).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({"error": e.to_string()}))).into_response(),
    }
}

async fn dlq_replay(State(s): State<ApiState>, Path(name): Path<String>) -> Response {
    let h = match sink(&s, &name) {
        Ok(h) => h,
        Err(r) => return *r,
    };
    match h.dead_letters.replay(&h.spool).await {
        Ok(n) => axum::Json(json!({"sink": name, "replayed": n})).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({"error": e.to_string()}))).into_response(),
    }
}

async fn dlq_purge(State(s): State<ApiState>, Path(name): Path<String>) -> Response {
    let h = match sink(&s, &name) {
        Ok(h) => h,
        Err(r) => return *r,
    };
    match h.dead_letters.purge() {
        Ok(n) => axum::Json(json!({"sink": name, "purged": n})).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({"error": e.to_string()}))).into_response(),
    }
}

/// Sends one sample alert (rule `vedette.test`) straight to the sink's destination, bypassing
/// its spool, and reports what the destination said.
async fn sink_test(State(s): State<ApiState>, Path(name): Path<String>) -> Response {
    use vedette_actors::sinks::delivery::{Outcome, Outgoing};
    let h = match sink(&s, &name) {
        Ok(h) => h,
        Err(r) => return *r,
    };
    let mut connector = match vedette_actors::sinks::connector(&h.config, &s.data_dir) {
        Ok(c) => c,
        Err(e) => {
            return (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(json!({"error": e.to_string()}))).into_response();
        }
    };
    let mut alert = vedette_pipelines::formats::sample_alert();
    alert.rule_id = "vedette.test".into();
    alert.rule_name = "vedette test alert".into();
    alert.description = "Sent by `vedette sinks test`; not a detection.".into();
    alert.detected_at = chrono::Utc::now();
    alert.alert_id = uuid::Uuid::new_v4();
    let body = vedette_pipelines::formats::encode(h.config.format(), &alert);
    let batch = [Outgoing { seq: 0, alert, body }];
    let outcome = connector.send(&batch).await.pop().unwrap_or(Outcome::Retry("no answer".into()));
    let (ok, detail) = match outcome {
        Outcome::Delivered => (true, "delivered".to_string()),
        Outcome::Retry(e) => (false, format!("failed (would be retried): {e}")),
        Outcome::Reject(e) => (false, format!("refused (would be dead-lettered): {e}")),
    };
    let status = if ok { StatusCode::OK } else { StatusCode::BAD_GATEWAY };
    (status, axum::Json(json!({"sink": name, "delivered": ok, "detail": detail, "error": (!ok).then_some(&detail)})))
        .into_response()
}
