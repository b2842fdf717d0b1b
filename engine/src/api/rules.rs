//! Rules and reference tables. Both are shared by every tenant: reading is open to any
//! viewer, changing them needs a fleet-wide analyst (see `ROUTES`).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::ApiState;
use super::error::{ApiError, ApiResult};
use super::schema::{AuthErrors, ErrorBody, RuleToggle};
use crate::reference::RefStatus;
use crate::ruleset::{ApplyReport, RulesStatus};

/// `GET /api/v1/rules`.
#[utoipa::path(get, path = "/api/v1/rules", tag = "rules", operation_id = "list_rules",
    responses((status = 200, description = "Applied packs and rules", body = RulesStatus), AuthErrors), security(("bearer" = [])))]
pub async fn list(State(s): State<ApiState>) -> impl IntoResponse {
    axum::Json(s.rules.lock().await.status())
}

/// `POST /api/v1/rules/apply`: re-read the packs directory, all or nothing.
#[utoipa::path(post, path = "/api/v1/rules/apply", tag = "rules",
    description = "Needs a fleet-wide analyst. On error the running rules are unchanged.",
    responses((status = 200, description = "Applied", body = ApplyReport),
        (status = 422, description = "A pack or rule was refused", body = ErrorBody), AuthErrors), security(("bearer" = [])))]
pub async fn apply(State(s): State<ApiState>) -> ApiResult<Response> {
    let report = s.rules.lock().await.apply().await?;
    Ok(axum::Json(report).into_response())
}

/// `POST /api/v1/config/reload`: re-read the engine's config file, as SIGHUP does.
#[utoipa::path(post, path = "/api/v1/config/reload", tag = "rules",
    description = "Needs a fleet-wide admin. The config file is read again (with the environment \
        overrides) and checked as `vedette validate` checks it. The log level, API rate limits, \
        packs (`rules.builtin`, `packs_dir`, `trusted_keys`, `allow_unsigned`) and reference table \
        files (`path`, `format`, `max_rows`) are applied all at once; a change of any other key \
        refuses the whole reload and names the keys. On any problem nothing changes.",
    responses((status = 200, description = "Applied", body = crate::reload::ReloadReport),
        (status = 422, description = "Refused: every problem, or every key that needs a restart", body = ErrorBody), AuthErrors), security(("bearer" = [])))]
pub async fn config_reload(State(s): State<ApiState>) -> ApiResult<Response> {
    let report = s.reloader.reload().await?;
    Ok(axum::Json(report).into_response())
}

/// `POST /api/v1/rules/{id}/enable`.
#[utoipa::path(post, path = "/api/v1/rules/{id}/enable", tag = "rules",
    params(("id" = String, Path, description = "Rule id")),
    responses((status = 200, description = "Enabled (persisted)", body = RuleToggle),
        (status = 404, description = "No such rule", body = ErrorBody), (status = 422, description = "Refused", body = ErrorBody), AuthErrors), security(("bearer" = [])))]
pub async fn enable(s: State<ApiState>, id: Path<String>) -> ApiResult<Response> {
    set_enabled(s, id, true).await
}

/// `POST /api/v1/rules/{id}/disable`.
#[utoipa::path(post, path = "/api/v1/rules/{id}/disable", tag = "rules",
    params(("id" = String, Path, description = "Rule id")),
    responses((status = 200, description = "Disabled (persisted)", body = RuleToggle),
        (status = 404, description = "No such rule", body = ErrorBody), (status = 422, description = "Refused", body = ErrorBody), AuthErrors), security(("bearer" = [])))]
pub async fn disable(s: State<ApiState>, id: Path<String>) -> ApiResult<Response> {
    set_enabled(s, id, false).await
}

async fn set_enabled(State(s): State<ApiState>, Path(id): Path<String>, enabled: bool) -> ApiResult<Response> {
    s.rules.lock().await.set_enabled(&id, enabled).await?;
    Ok(axum::Json(json!({"id": id, "enabled": enabled})).into_response())
}

/// `GET /api/v1/reference`.
#[utoipa::path(get, path = "/api/v1/reference", tag = "rules",
    responses((status = 200, description = "Reference tables", body = Vec<RefStatus>), AuthErrors), security(("bearer" = [])))]
pub async fn reference_list(State(s): State<ApiState>) -> impl IntoResponse {
    axum::Json(s.rules.lock().await.references())
}

/// `POST /api/v1/reference/{name}/reload`.
#[utoipa::path(post, path = "/api/v1/reference/{name}/reload", tag = "rules",
    params(("name" = String, Path, description = "Reference table")),
    responses((status = 200, description = "Reloaded from its file", body = RefStatus),
        (status = 422, description = "Unknown table or refused file (previous rows stay)", body = ErrorBody), AuthErrors), security(("bearer" = [])))]
pub async fn reference_reload(s: State<ApiState>, Path(name): Path<String>) -> ApiResult<Response> {
    replace(s, name, None).await
}

/// `PUT /api/v1/reference/{name}`: replace the rows (checked first; nothing changes on error).
#[utoipa::path(put, path = "/api/v1/reference/{name}", tag = "rules",
    params(("name" = String, Path, description = "Reference table")),
    request_body(content = String, content_type = "text/plain", description = "The table in its configured format (CSV with a header, or JSON)"),
    responses((status = 200, description = "Replaced", body = RefStatus),
        (status = 413, description = "Larger than api.max_upload_bytes", body = ErrorBody),
        (status = 422, description = "Unknown table or refused contents", body = ErrorBody), AuthErrors), security(("bearer" = [])))]
pub async fn reference_upload(
    s: State<ApiState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    replace(s, name, Some(body)).await
}

/// Parses and writes outside the rule manager's lock (a large upload must not hold up rule
/// changes or the runtime), then records the outcome under it.
async fn replace(State(s): State<ApiState>, name: String, upload: Option<axum::body::Bytes>) -> ApiResult<Response> {
    let target = s.rules.lock().await.reference_target(&name)?;
    let target = std::sync::Arc::new(target);
    let t = std::sync::Arc::clone(&target);
    let how = if upload.is_some() { "upload" } else { "reload" };
    let result = tokio::task::spawn_blocking(move || match upload {
        Some(bytes) => t.upload(&bytes),
        None => t.load(),
    })
    .await
    .map_err(ApiError::internal)?;
    let status = s.rules.lock().await.record_reference(&target, how, result)?;
    Ok(axum::Json(status).into_response())
}
