//! HTTP API of the spine: health and metrics.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;
use vedette_actors::metrics::Metrics;

/// Reports each component's readiness.
pub type Readiness = Arc<dyn Fn() -> Vec<(String, bool)> + Send + Sync>;

#[derive(Clone)]
struct ApiState {
    metrics: Metrics,
    readiness: Readiness,
}

/// The router.
pub fn router(metrics: Metrics, readiness: Readiness) -> Router {
    Router::new()
        .route("/health/live", get(|| async { axum::Json(json!({"status": "live"})) }))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .with_state(ApiState { metrics, readiness })
}

async fn ready(State(s): State<ApiState>) -> impl IntoResponse {
    let components = (s.readiness)();
    let all = components.iter().all(|(_, ok)| *ok);
    let body = json!({
        "status": if all { "ready" } else { "not_ready" },
        "components": components.iter().map(|(n, ok)| (n.clone(), json!(if *ok { "up" } else { "down" }))).collect::<serde_json::Map<_, _>>(),
    });
    (if all { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, axum::Json(body))
}

async fn metrics_text(State(s): State<ApiState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render())
}
