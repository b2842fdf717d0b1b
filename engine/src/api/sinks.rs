//! Sinks and their dead-letter queues. Dead letters are alerts: a tenant-scoped token lists,
//! replays and purges only its tenant's; sinks themselves are shared infrastructure.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use vedette_actors::sinks::delivery::SinkHandle;

use super::error::{ApiError, ApiResult};
use super::schema::{AuthErrors, DlqPage, ErrorBody, LimitParams, Purged, Replayed, SinkTest};
use super::{ApiState, CallerExt};
use crate::auth::Caller;

/// A sink as `GET /api/v1/sinks` shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, utoipa::ToSchema)]
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
    /// Alerts delivered since the engine started (a client derives the rate from two reads).
    #[serde(default)]
    pub delivered: u64,
    /// Failed delivery attempts since the engine started (one per batch or health check).
    #[serde(default)]
    pub errors: u64,
    /// `ok`, `degraded` (failing or spool nearly full, every alert kept) or `down` (failing
    /// with a full spool).
    #[serde(default)]
    pub state: String,
    /// Why the state is not `ok`.
    #[serde(default)]
    pub reason: Option<String>,
    /// Failed attempts in a row (0 while delivering).
    #[serde(default)]
    pub failed_attempts: u32,
    /// When the current run of failures began (RFC 3339).
    #[serde(default)]
    pub failing_since: Option<String>,
    /// When an attempt last succeeded (RFC 3339); absent: none since the engine started.
    #[serde(default)]
    pub last_success: Option<String>,
    /// When the next attempt is due, while waiting after a failure (RFC 3339).
    #[serde(default)]
    pub next_attempt: Option<String>,
    /// Age in seconds of the oldest spooled alert (since its detection).
    #[serde(default)]
    pub oldest_spooled_age_secs: Option<f64>,
    /// Removed from the config by a reload: it gets no new alerts and goes once its spool is
    /// delivered.
    #[serde(default)]
    pub removed: bool,
}

impl SinkView {
    /// The state as listings show it: `ok`, `degraded (removed)`.
    pub fn state_label(&self) -> String {
        if self.removed { format!("{} (removed)", self.state) } else { self.state.clone() }
    }
}

/// Seconds since the oldest spooled alert of `h` was detected.
fn oldest_age(h: &SinkHandle) -> Option<f64> {
    #[derive(serde::Deserialize)]
    struct Detected {
        detected_at: chrono::DateTime<chrono::Utc>,
    }
    let bytes = h.spool.oldest()?;
    let d: Detected = serde_json::from_slice(&bytes).ok()?;
    Some(((chrono::Utc::now() - d.detected_at).num_milliseconds().max(0) as f64) / 1000.0)
}

fn rfc3339(t: Option<chrono::DateTime<chrono::Utc>>) -> Option<String> {
    t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// The view of one sink.
pub fn view(h: &SinkHandle, metrics: &vedette_actors::metrics::Metrics) -> SinkView {
    let vedette_actors::sinks::delivery::SinkReading { status, spooled, spool_bytes, health, reason } = h.reading();
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
        delivered: metrics.sink_delivered.with_label_values(&[h.name.as_str()]).get(),
        errors: metrics.sink_failed_attempts.with_label_values(&[h.name.as_str()]).get(),
        state: health.as_str().into(),
        reason,
        failed_attempts: status.failed_attempts,
        failing_since: rfc3339(status.failing_since),
        last_success: rfc3339(status.last_success),
        next_attempt: rfc3339(status.next_attempt),
        oldest_spooled_age_secs: if spooled > 0 { oldest_age(h) } else { None },
        removed: status.removed,
    }
}

/// `GET /api/v1/sinks`.
#[utoipa::path(get, path = "/api/v1/sinks", tag = "sinks", operation_id = "list_sinks",
    responses((status = 200, description = "Every sink's delivery state", body = Vec<SinkView>), AuthErrors), security(("bearer" = [])))]
pub async fn list(State(s): State<ApiState>) -> impl IntoResponse {
    let views: Vec<SinkView> = s.sinks.sinks().iter().map(|h| view(h, &s.metrics)).collect();
    axum::Json(views)
}

fn sink(s: &ApiState, name: &str) -> ApiResult<Arc<SinkHandle>> {
    let all = s.sinks.sinks();
    all.iter().find(|h| h.name == name).cloned().ok_or_else(|| {
        let known: Vec<&str> = all.iter().map(|h| h.name.as_str()).collect();
        ApiError::not_found(format!("no sink named `{name}` (sinks: {})", known.join(", ")))
    })
}

/// `GET /api/v1/sinks/{name}/dlq?limit=N`: the caller's tenant's dead letters, oldest first.
#[utoipa::path(get, path = "/api/v1/sinks/{name}/dlq", tag = "sinks",
    params(("name" = String, Path, description = "Sink name"), LimitParams),
    responses((status = 200, description = "Dead letters of the caller's tenant", body = DlqPage),
        (status = 400, description = "Bad parameter", body = ErrorBody), (status = 404, description = "No such sink", body = ErrorBody), AuthErrors), security(("bearer" = [])))]
pub async fn dlq_list(
    State(s): State<ApiState>,
    caller: CallerExt,
    Path(name): Path<String>,
    Query(params): Query<std::collections::BTreeMap<String, String>>,
) -> ApiResult<Response> {
    crate::history::query::check_known(&params, &["limit"])?;
    let limit = crate::history::query::parse_limit(&params, 100, 10_000)?;
    let h = sink(&s, &name)?;
    let c: Caller = caller.0;
    let (entries, total) = if c.fleet_wide() {
        (h.dead_letters.list(limit).map_err(ApiError::internal)?, h.dead_letters.len())
    } else {
        // One pass: the tenant's entries, counted and cut to the page.
        let mut all = h.dead_letters.list_where(usize::MAX, |d| c.sees(d.tenant())).map_err(ApiError::internal)?;
        let total = all.len();
        all.truncate(limit);
        (all, total)
    };
    Ok(axum::Json(json!({"sink": name, "total": total, "entries": entries})).into_response())
}

/// `POST /api/v1/sinks/{name}/dlq/replay`: the caller's tenant's dead letters back into the spool.
#[utoipa::path(post, path = "/api/v1/sinks/{name}/dlq/replay", tag = "sinks",
    params(("name" = String, Path, description = "Sink name")),
    responses((status = 200, description = "Put back into the spool", body = Replayed),
        (status = 404, description = "No such sink", body = ErrorBody), AuthErrors), security(("bearer" = [])))]
pub async fn dlq_replay(State(s): State<ApiState>, caller: CallerExt, Path(name): Path<String>) -> ApiResult<Response> {
    let h = sink(&s, &name)?;
    let c = caller.0;
    let n = h.dead_letters.replay_where(&h.spool, |d| c.sees(d.tenant())).await.map_err(ApiError::internal)?;
    Ok(axum::Json(json!({"sink": name, "replayed": n})).into_response())
}

/// `DELETE /api/v1/sinks/{name}/dlq`: delete the caller's tenant's dead letters.
#[utoipa::path(delete, path = "/api/v1/sinks/{name}/dlq", tag = "sinks",
    params(("name" = String, Path, description = "Sink name")),
    responses((status = 200, description = "Deleted", body = Purged),
        (status = 404, description = "No such sink", body = ErrorBody), AuthErrors), security(("bearer" = [])))]
pub async fn dlq_purge(State(s): State<ApiState>, caller: CallerExt, Path(name): Path<String>) -> ApiResult<Response> {
    let h = sink(&s, &name)?;
    let c = caller.0;
    let n = h.dead_letters.purge_where(|d| c.sees(d.tenant())).map_err(ApiError::internal)?;
    Ok(axum::Json(json!({"sink": name, "purged": n})).into_response())
}

/// `POST /api/v1/sinks/{name}/test`: one sample alert (rule `vedette.test`) straight to the
/// destination, bypassing the spool; reports what the destination said.
#[utoipa::path(post, path = "/api/v1/sinks/{name}/test", tag = "sinks",
    params(("name" = String, Path, description = "Sink name")),
    responses((status = 200, description = "Delivered", body = SinkTest),
        (status = 502, description = "The destination failed or refused it", body = SinkTest),
        (status = 404, description = "No such sink", body = ErrorBody),
        (status = 422, description = "This sink cannot be tested (the internal history sink)", body = ErrorBody), AuthErrors), security(("bearer" = [])))]
pub async fn test(State(s): State<ApiState>, Path(name): Path<String>) -> ApiResult<Response> {
    use vedette_actors::sinks::delivery::{Outcome, Outgoing};
    let h = sink(&s, &name)?;
    let mut alert = vedette_pipelines::formats::sample_alert();
    alert.rule_id = "vedette.test".into();
    alert.rule_name = "vedette test alert".into();
    alert.description = "Sent by `vedette sinks test`; not a detection.".into();
    alert.detected_at = chrono::Utc::now();
    alert.alert_id = uuid::Uuid::new_v4();
    let body = vedette_pipelines::formats::encode(h.config.format(), &alert);
    let outcome = if let vedette_config::Connector::File(f) = &h.config.connector {
        // Appended beside the running sink, never through a second instance of it (which would
        // repair the file against the running sink's position record).
        let path = vedette_actors::sinks::file_path(f, &s.data_dir);
        match vedette_actors::sinks::file::append_line(&path, &body).await {
            Ok(()) => Outcome::Delivered,
            Err(e) => Outcome::Retry(format!("writing {}: {e}", path.display())),
        }
    } else {
        let mut connector = vedette_actors::sinks::connector(&h.config, &s.data_dir, h.spool.instance())
            .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
        let batch = [Outgoing { seq: 0, alert, body }];
        connector.send(&batch).await.pop().unwrap_or(Outcome::Retry("no answer".into()))
    };
    let (ok, detail) = match outcome {
        Outcome::Delivered => (true, "delivered".to_string()),
        Outcome::Retry(e) => (false, format!("failed (would be retried): {e}")),
        Outcome::Reject(e) => (false, format!("refused (would be dead-lettered): {e}")),
    };
    let status = if ok { StatusCode::OK } else { StatusCode::BAD_GATEWAY };
    Ok((
        status,
        axum::Json(json!({"sink": name, "delivered": ok, "detail": detail, "error": (!ok).then_some(&detail)})),
    )
        .into_response())
}
