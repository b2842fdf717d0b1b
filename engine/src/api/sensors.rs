//! The fleet: registered sensors, their status, revocation and deregistration. A tenant-scoped
//! token sees and acts on its tenant's sensors only; another tenant's sensor answers 404.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use vedette_actors::registry::{SensorRecord, normalize_fingerprint};
use vedette_schemas::frame::close_code;

use super::error::{ApiError, ApiResult};
use super::schema::{AuthErrors, ErrorBody};
use super::{ApiState, CallerExt};
use crate::auth::Caller;
use crate::history::query::{ParamError, check_known, parse_limit};

pub use vedette_actors::fleet::liveness::SensorStatus;

/// A sensor as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SensorView {
    /// What the registry knows.
    #[serde(flatten)]
    pub record: SensorRecord,
    /// `online` (heard from within the silence threshold), `silent` (not heard from past it,
    /// without saying GOODBYE: a `vedette.sensor_silent` alert was raised), `offline` (stopped
    /// on purpose, or enrolled and never connected), `revoked`.
    pub status: SensorStatus,
    /// Whether a session is connected now.
    pub connected: bool,
    /// Events per second over the last seconds.
    pub events_per_sec: f64,
}

/// A page of sensors, by id.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SensorPage {
    /// Sensors, ordered by id.
    pub items: Vec<SensorView>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Filters of `GET /api/v1/sensors`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct SensorParams {
    /// Tenant; only fleet-wide tokens may pick another tenant than their own.
    pub tenant: Option<String>,
    /// `online`, `silent`, `offline` or `revoked`.
    #[param(inline)]
    pub status: Option<SensorStatus>,
    /// Label selector: `env=prod,role=db` (every pair must match).
    pub label: Option<String>,
    /// Sensors per page, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

fn view(s: &ApiState, record: SensorRecord) -> SensorView {
    let connected = s.sessions.is_connected(&record.sensor_id);
    let mut status = SensorStatus::of(&record);
    if status == SensorStatus::Offline && connected {
        status = SensorStatus::Online;
    }
    let events_per_sec = (s.liveness.rate(&record.sensor_id) * 10.0).round() / 10.0;
    SensorView { record, status, connected, events_per_sec }
}

/// Parses `env=prod,role=db`.
pub fn parse_selector(s: &str) -> Result<BTreeMap<String, String>, ParamError> {
    let out = vedette_schemas::fleet::parse_labels(s).map_err(|e| ParamError::new("label", e))?;
    if out.is_empty() {
        return Err(ParamError::new("label", "empty selector (e.g. env=prod,role=db)"));
    }
    Ok(out)
}

fn parse_status(v: &str) -> Result<SensorStatus, ParamError> {
    match v {
        "online" => Ok(SensorStatus::Online),
        "silent" => Ok(SensorStatus::Silent),
        "offline" => Ok(SensorStatus::Offline),
        "revoked" => Ok(SensorStatus::Revoked),
        _ => Err(ParamError::new("status", format!("`{v}` is not one of: online, silent, offline, revoked"))),
    }
}

/// The registered sensor `id` if the caller may see it.
pub(super) fn visible(s: &ApiState, caller: &Caller, id: &str) -> ApiResult<SensorRecord> {
    let missing = || ApiError::not_found(format!("no sensor `{id}` is registered"));
    let rec = s.registry.get(id).map_err(ApiError::internal)?.ok_or_else(missing)?;
    if !caller.sees(Some(&rec.tenant)) {
        return Err(missing());
    }
    Ok(rec)
}

/// `GET /api/v1/sensors`.
#[utoipa::path(get, path = "/api/v1/sensors", tag = "fleet", operation_id = "list_sensors",
    params(SensorParams),
    responses((status = 200, description = "Sensors by id", body = SensorPage),
        (status = 400, description = "Bad or unknown parameter (named in `param`)", body = ErrorBody), AuthErrors),
    security(("bearer" = [])))]
pub async fn list(
    State(s): State<ApiState>,
    caller: CallerExt,
    Query(params): Query<BTreeMap<String, String>>,
) -> ApiResult<Response> {
    check_known(&params, &["tenant", "status", "label", "limit", "cursor"])?;
    let c = caller.0;
    let tenant = match params.get("tenant") {
        Some(t) if !c.fleet_wide() && *t != c.tenant => {
            return Err(ParamError::new("tenant", "only a fleet-wide token (tenant `*`) can choose the tenant").into());
        }
        Some(t) => Some(t.clone()),
        None if c.fleet_wide() => None,
        None => Some(c.tenant.clone()),
    };
    let status = params.get("status").map(String::as_str).map(parse_status).transpose()?;
    let selector = params.get("label").map(String::as_str).map(parse_selector).transpose()?;
    let limit = parse_limit(&params, 100, 1000)?;
    let after = params.get("cursor").cloned().unwrap_or_default();
    let records = s
        .registry
        .list(&after, usize::MAX, |r| {
            tenant.as_ref().is_none_or(|t| r.tenant == *t)
                && selector.as_ref().is_none_or(|sel| sel.iter().all(|(k, v)| r.labels.get(k) == Some(v)))
        })
        .map_err(ApiError::internal)?;
    let mut items: Vec<SensorView> = Vec::new();
    let mut more = false;
    for r in records {
        let v = view(&s, r);
        if status.is_some_and(|st| st != v.status) {
            continue;
        }
        if items.len() == limit {
            more = true;
            break;
        }
        items.push(v);
    }
    let next_cursor = more.then(|| items.last().map(|v| v.record.sensor_id.clone())).flatten();
    Ok(axum::Json(SensorPage { items, next_cursor }).into_response())
}

/// `GET /api/v1/sensors/{id}`.
#[utoipa::path(get, path = "/api/v1/sensors/{id}", tag = "fleet", operation_id = "get_sensor",
    params(("id" = String, Path, description = "Sensor id")),
    responses((status = 200, description = "The sensor", body = SensorView),
        (status = 404, description = "Not registered (or another tenant's)", body = ErrorBody), AuthErrors),
    security(("bearer" = [])))]
pub async fn one(State(s): State<ApiState>, caller: CallerExt, Path(id): Path<String>) -> ApiResult<Response> {
    let rec = visible(&s, &caller.0, &id)?;
    Ok(axum::Json(view(&s, rec)).into_response())
}

/// `POST /api/v1/sensors/{id}/revoke`: every certificate of the sensor is refused from now on
/// (across restarts); a connected session is closed at once.
#[utoipa::path(post, path = "/api/v1/sensors/{id}/revoke", tag = "fleet", operation_id = "revoke_sensor",
    params(("id" = String, Path, description = "Sensor id")),
    responses((status = 200, description = "Revoked", body = SensorView),
        (status = 404, description = "Not registered (or another tenant's)", body = ErrorBody), AuthErrors),
    security(("bearer" = [])))]
pub async fn revoke(State(s): State<ApiState>, caller: CallerExt, Path(id): Path<String>) -> ApiResult<Response> {
    visible(&s, &caller.0, &id)?;
    let rec = s.registry.revoke_sensor(&id).await.map_err(ApiError::internal)?;
    let rec = rec.ok_or_else(|| ApiError::not_found(format!("no sensor `{id}` is registered")))?;
    s.sessions.close_certificate(&id, None, close_code::REVOKED, "this sensor was revoked");
    tracing::warn!(sensor = %id, by = %caller.0.name, "Sensor revoked.");
    Ok(axum::Json(view(&s, rec)).into_response())
}

/// `DELETE /api/v1/sensors/{id}`: deregisters a decommissioned sensor (its certificates stay
/// revoked if they were; the id may enroll again with a new certificate).
#[utoipa::path(delete, path = "/api/v1/sensors/{id}", tag = "fleet",
    params(("id" = String, Path, description = "Sensor id")),
    responses((status = 200, description = "Removed from the registry", body = SensorRecord),
        (status = 404, description = "Not registered (or another tenant's)", body = ErrorBody), AuthErrors),
    security(("bearer" = [])))]
pub async fn deregister(State(s): State<ApiState>, caller: CallerExt, Path(id): Path<String>) -> ApiResult<Response> {
    visible(&s, &caller.0, &id)?;
    s.sessions.close_certificate(&id, None, close_code::REVOKED, "this sensor was deregistered");
    let rec = s.registry.deregister(&id).await.map_err(ApiError::internal)?;
    let rec = rec.ok_or_else(|| ApiError::not_found(format!("no sensor `{id}` is registered")))?;
    s.commands.remove_sensor(&id).map_err(ApiError::internal)?;
    s.liveness.remove(&id);
    s.taps.close(&id);
    Ok(axum::Json(rec).into_response())
}

/// What revoking a certificate did.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RevokedCertificate {
    /// The fingerprint, normalized (64 lowercase hex digits).
    pub fingerprint: String,
    /// The registered sensor that used it, if any.
    pub sensor_id: Option<String>,
    /// Whether a live session on it was closed.
    pub disconnected: bool,
}

/// `POST /api/v1/certificates/{fingerprint}/revoke`: refuses one certificate from now on.
#[utoipa::path(post, path = "/api/v1/certificates/{fingerprint}/revoke", tag = "fleet",
    params(("fingerprint" = String, Path, description = "SHA-256 of the certificate: 64 hex digits, colons allowed")),
    responses((status = 200, description = "Revoked", body = RevokedCertificate),
        (status = 400, description = "Not a SHA-256 fingerprint", body = ErrorBody),
        (status = 404, description = "A tenant-scoped token named a certificate none of its sensors used", body = ErrorBody), AuthErrors),
    security(("bearer" = [])))]
pub async fn revoke_certificate(
    State(s): State<ApiState>,
    caller: CallerExt,
    Path(fingerprint): Path<String>,
) -> ApiResult<Response> {
    let fp = normalize_fingerprint(&fingerprint)
        .ok_or_else(|| ParamError::new("fingerprint", "not a SHA-256 fingerprint (64 hex digits, colons allowed)"))?;
    let c = caller.0;
    let owner = s.registry.owner_of(&fp).map_err(ApiError::internal)?;
    // A fleet-wide admin may revoke any certificate, even one never seen; a tenant's admin
    // only those its sensors used.
    if !c.fleet_wide() && owner.as_ref().is_none_or(|o| o.tenant != c.tenant) {
        return Err(ApiError::not_found(format!("no sensor of tenant `{}` used certificate {fp}", c.tenant)));
    }
    s.registry.revoke_fingerprint(&fp).await.map_err(ApiError::internal)?;
    let disconnected = owner.as_ref().is_some_and(|o| {
        s.sessions.close_certificate(&o.sensor_id, Some(&fp), close_code::REVOKED, "this certificate was revoked")
    });
    let sensor_id = owner.map(|o| o.sensor_id);
    Ok(axum::Json(RevokedCertificate { fingerprint: fp, sensor_id, disconnected }).into_response())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn selectors_are_key_value_pairs() {
        let s = parse_selector("env=prod, role=db").unwrap();
        assert_eq!(s.get("env").map(String::as_str), Some("prod"));
        assert_eq!(s.len(), 2);
        assert_eq!(parse_selector("env").unwrap_err().param, "label");
        assert!(parse_selector(" , ").is_err());
    }

    proptest! {
        #[test]
        fn any_selector_or_fingerprint_text_is_read_or_refused(s in ".{0,120}") {
            let _ = parse_selector(&s);
            if let Some(fp) = normalize_fingerprint(&s) {
                prop_assert_eq!(fp.len(), 64);
            }
        }
    }
}
