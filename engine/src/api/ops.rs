//! Health and metrics.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use super::ApiState;
use super::schema::{ErrorBody, Live, Ready};

/// `GET /health/live`: the process answers.
#[utoipa::path(get, path = "/health/live", tag = "health",
    responses((status = 200, description = "The process answers", body = Live)))]
pub async fn live() -> impl IntoResponse {
    axum::Json(json!({"status": "live"}))
}

/// `GET /health/ready`: `ready`; `degraded` (200) when a sink fails but keeps every alert in
/// its spool; `not_ready` (503) when a component is down or a failing sink's spool is full.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    description = "Open to loopback clients by default (`api.open_status`); otherwise a viewer token.",
    responses((status = 200, description = "Ready", body = Ready), (status = 503, description = "A component is down, or a failing sink's spool is full", body = Ready),
        (status = 401, description = "Token needed", body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn ready(State(s): State<ApiState>) -> impl IntoResponse {
    let (components, sinks) = (s.readiness)();
    let sink_state = |want: &str| sinks.values().any(|v| v["state"] == want);
    let all = components.iter().all(|(_, ok)| *ok) && !sink_state("down");
    let status = if !all {
        "not_ready"
    } else if sink_state("degraded") {
        "degraded"
    } else {
        "ready"
    };
    let body = json!({
        "status": status,
        "components": components.iter().map(|(n, ok)| (n.clone(), json!(if *ok { "up" } else { "down" }))).collect::<serde_json::Map<_, _>>(),
        "sinks": sinks,
    });
    (if all { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, axum::Json(body))
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "health",
    description = "Open to loopback clients by default (`api.open_status`); otherwise a viewer token.",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
        (status = 401, description = "Token needed", body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn metrics_text(State(s): State<ApiState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render())
}
