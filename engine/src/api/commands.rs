//! Commands to sensors: `POST /api/v1/sensors/{id}/commands` (one sensor),
//! `POST /api/v1/commands` (every sensor a label selector matches), `GET
//! /api/v1/sensors/{id}/commands`, and `PUT /api/v1/sensors/{id}/labels`. A command to a
//! disconnected sensor waits and is delivered when it reconnects; the latest level or config
//! wins. Only sensors the caller's tenant sees are targeted.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use vedette_actors::fleet::commands::CommandRecord;
use vedette_actors::registry::SensorRecord;
use vedette_schemas::fleet::{Action, ObserveLevel, SensorSettings, parse_labels};

use super::error::{ApiError, ApiResult, json_body};
use super::schema::{AuthErrors, ErrorBody};
use super::sensors::visible;
use super::{ApiState, CallerExt};
use crate::auth::Caller;

/// What to ask of the sensor: exactly one of `level`, `config`, `renew_certificate`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandBody {
    /// Observe level: `minimal`, `standard` or `verbose`.
    #[serde(default)]
    #[schema(pattern = "^(minimal|standard|verbose)$")]
    pub level: Option<String>,
    /// Configuration document: `{"version": N, "tables": […], "sampling": {table: 0.0–1.0},
    /// "elide_processes": […], "heartbeat_interval_ms": N}` (see docs/fleet.md).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub config: Option<serde_json::Value>,
    /// `true`: renew the certificate now.
    #[serde(default)]
    pub renew_certificate: Option<bool>,
}

impl CommandBody {
    fn action(self) -> ApiResult<Action> {
        let field = |f: &str, m: String| ApiError::bad_request(format!("`{f}`: {m}"));
        let set = [self.level.is_some(), self.config.is_some(), self.renew_certificate == Some(true)];
        if set.iter().filter(|s| **s).count() != 1 {
            return Err(ApiError::bad_request(
                "give exactly one of `level`, `config`, `renew_certificate: true`".to_string(),
            ));
        }
        if let Some(level) = self.level {
            return Ok(Action::SetLevel { level: level.parse::<ObserveLevel>().map_err(|e| field("level", e))? });
        }
        if let Some(config) = self.config {
            let config: SensorSettings = serde_json::from_value(config).map_err(|e| field("config", e.to_string()))?;
            config.validate().map_err(ApiError::bad_request)?;
            return Ok(Action::ApplyConfig { config });
        }
        Ok(Action::RenewCertificate {})
    }
}

/// Body of `POST /api/v1/commands`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FleetCommand {
    /// Label selector: `env=prod,role=db` (every pair must match).
    #[schema(
        pattern = "^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}=[A-Za-z0-9][A-Za-z0-9._/-]{0,62}(,[A-Za-z0-9][A-Za-z0-9._/-]{0,62}=[A-Za-z0-9][A-Za-z0-9._/-]{0,62})*$"
    )]
    pub selector: String,
    /// Tenant of the sensors; default the caller's (a fleet-wide caller: every tenant).
    #[serde(default)]
    pub tenant: Option<String>,
    /// Observe level: `minimal`, `standard` or `verbose`.
    #[serde(default)]
    #[schema(pattern = "^(minimal|standard|verbose)$")]
    pub level: Option<String>,
    /// Configuration document (see `CommandBody`).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub config: Option<serde_json::Value>,
    /// `true`: renew the certificates now.
    #[serde(default)]
    pub renew_certificate: Option<bool>,
}

/// Commands queued.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Queued {
    /// One per targeted sensor.
    pub commands: Vec<CommandRecord>,
    /// Of those, sent right away (the sensor is connected); the others wait for it.
    pub sent_now: usize,
}

async fn queue(s: &ApiState, targets: &[SensorRecord], action: &Action) -> ApiResult<Queued> {
    let mut out = Queued { commands: Vec::new(), sent_now: 0 };
    for t in targets {
        let rec = s.commands.enqueue(&t.sensor_id, &t.tenant, action.clone()).await.map_err(ApiError::internal)?;
        if vedette_actors::fleet::dispatch(&s.commands, &s.sessions, &rec).map_err(ApiError::internal)? {
            out.sent_now += 1;
        }
        out.commands.push(s.commands.get(&t.sensor_id, &rec.id).map_err(ApiError::internal)?.unwrap_or(rec));
    }
    Ok(out)
}

/// `POST /api/v1/sensors/{id}/commands`: queues a command for one sensor.
#[utoipa::path(post, path = "/api/v1/sensors/{id}/commands", tag = "fleet", operation_id = "command_sensor",
    params(("id" = String, Path, description = "Sensor id")),
    request_body = CommandBody,
    responses((status = 202, description = "Queued (and sent, if the sensor is connected)", body = Queued),
        (status = 400, description = "Bad command (the field is named)", body = ErrorBody),
        (status = 404, description = "Not registered (or another tenant's)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody), (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Malformed JSON body", body = ErrorBody), AuthErrors),
    security(("bearer" = [])))]
pub async fn command_one(
    State(s): State<ApiState>,
    caller: CallerExt,
    Path(id): Path<String>,
    body: Result<axum::Json<CommandBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let rec = visible(&s, &caller.0, &id)?;
    let action = json_body(body)?.action()?;
    if rec.revoked_at.is_some() {
        return Err(ApiError::new(StatusCode::CONFLICT, format!("sensor `{id}` is revoked")));
    }
    let q = queue(&s, &[rec], &action).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(q)).into_response())
}

/// `POST /api/v1/commands`: queues a command for every (non-revoked) sensor the selector
/// matches in the caller's tenant.
#[utoipa::path(post, path = "/api/v1/commands", tag = "fleet", operation_id = "command_sensors",
    request_body = FleetCommand,
    responses((status = 202, description = "Queued, one per matching sensor", body = Queued),
        (status = 400, description = "Bad selector or command (the field is named)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody), (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Malformed JSON body", body = ErrorBody), AuthErrors),
    security(("bearer" = [])))]
pub async fn command_many(
    State(s): State<ApiState>,
    caller: CallerExt,
    body: Result<axum::Json<FleetCommand>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let c: Caller = caller.0;
    let req = json_body(body)?;
    let selector = parse_labels(&req.selector).map_err(|e| ApiError::bad_request(format!("`selector`: {e}")))?;
    if selector.is_empty() {
        return Err(ApiError::bad_request("`selector`: give at least one key=value (e.g. env=prod)"));
    }
    if let Some(t) = &req.tenant
        && !c.sees(Some(t))
    {
        return Err(ApiError::new(StatusCode::FORBIDDEN, format!("this token cannot command tenant `{t}`")));
    }
    let action =
        CommandBody { level: req.level, config: req.config, renew_certificate: req.renew_certificate }.action()?;
    let tenant = req.tenant.clone();
    let targets = s
        .registry
        .list("", usize::MAX, |r| {
            r.revoked_at.is_none()
                && c.sees(Some(&r.tenant))
                && tenant.as_ref().is_none_or(|t| r.tenant == *t)
                && vedette_schemas::fleet::selector_matches(&selector, &r.labels)
        })
        .map_err(ApiError::internal)?;
    let q = queue(&s, &targets, &action).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(q)).into_response())
}

/// `GET /api/v1/sensors/{id}/commands`: the sensor's commands (pending, sent, done, failed,
/// superseded), oldest first.
#[utoipa::path(get, path = "/api/v1/sensors/{id}/commands", tag = "fleet", operation_id = "list_sensor_commands",
    params(("id" = String, Path, description = "Sensor id")),
    responses((status = 200, description = "Commands, oldest first", body = Vec<CommandRecord>),
        (status = 404, description = "Not registered (or another tenant's)", body = ErrorBody), AuthErrors),
    security(("bearer" = [])))]
pub async fn list(State(s): State<ApiState>, caller: CallerExt, Path(id): Path<String>) -> ApiResult<Response> {
    visible(&s, &caller.0, &id)?;
    Ok(axum::Json(s.commands.list(&id).map_err(ApiError::internal)?).into_response())
}

/// Body of `PUT /api/v1/sensors/{id}/labels`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Labels {
    /// The sensor's labels, replacing the old ones: `env=prod,role=db` (empty: none).
    pub labels: String,
}

/// `PUT /api/v1/sensors/{id}/labels`: replaces a sensor's labels.
#[utoipa::path(put, path = "/api/v1/sensors/{id}/labels", tag = "fleet", operation_id = "set_sensor_labels",
    params(("id" = String, Path, description = "Sensor id")),
    request_body = Labels,
    responses((status = 200, description = "The labels now", body = std::collections::BTreeMap<String, String>),
        (status = 400, description = "Bad label (named)", body = ErrorBody),
        (status = 404, description = "Not registered (or another tenant's)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody), (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Malformed JSON body", body = ErrorBody), AuthErrors),
    security(("bearer" = [])))]
pub async fn set_labels(
    State(s): State<ApiState>,
    caller: CallerExt,
    Path(id): Path<String>,
    body: Result<axum::Json<Labels>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    visible(&s, &caller.0, &id)?;
    let labels = parse_labels(&json_body(body)?.labels).map_err(|e| ApiError::bad_request(format!("`labels`: {e}")))?;
    let rec = s.registry.update(&id, |r| r.labels = labels).map_err(ApiError::internal)?;
    let rec = rec.ok_or_else(|| ApiError::not_found(format!("no sensor `{id}` is registered")))?;
    s.registry.flush().await.map_err(ApiError::internal)?;
    Ok(axum::Json(rec.labels).into_response())
}
