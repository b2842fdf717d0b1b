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
}

/// The router.
pub fn router(metrics: Metrics, readiness: Readiness, rules: Arc<tokio::sync::Mutex<RuleManager>>) -> Router {
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
        .with_state(ApiState { metrics, readiness, rules })
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
