//! Alert triage: set one alert's state, set many (by ids or by the alert filters), and count
//! alerts by state. Scoped like the history: a caller only sees and changes its tenant's
//! alerts (another tenant's alert answers 404, as if it did not exist).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::alerts::scoped_filter;
use super::error::{ApiError, ApiResult, json_body};
use super::schema::{AuthErrors, ErrorBody};
use super::{ApiState, CallerExt};
use crate::auth::Caller;
use crate::history::query::{ParamError, check_known};
use crate::history::triage::{Triage, TriageNotice, TriageState, check_note};
use crate::history::{Dir, History};

/// Most ids in one bulk request.
pub const MAX_IDS: usize = 10_000;

/// A state change.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriageChange {
    /// The new state (`new` reopens).
    pub state: TriageState,
    /// Why, or what was done (at most 4,096 bytes).
    #[serde(default)]
    pub note: Option<String>,
}

/// A state change for many alerts: `ids`, or every alert matching `filter` (the alert
/// filters of `GET /api/v1/alerts`, e.g. `{"rule": "…", "triage": "new"}`). Exactly one of
/// the two.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkTriage {
    /// The new state.
    pub state: TriageState,
    /// Why, or what was done.
    #[serde(default)]
    pub note: Option<String>,
    /// Alert ids (at most 10,000).
    #[serde(default)]
    pub ids: Option<Vec<Uuid>>,
    /// Alert filters, as query parameters of `GET /api/v1/alerts`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub filter: Option<BTreeMap<String, String>>,
}

/// What a bulk change did.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BulkResult {
    /// Alerts selected (visible to the caller).
    pub matched: usize,
    /// Of those, whose state changed.
    pub changed: usize,
    /// Ids that are not in the history (or are another tenant's).
    pub unknown: Vec<Uuid>,
}

/// Alerts in the history by triage state.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TriageCounts {
    /// Alerts the caller sees in the history.
    pub total: u64,
    /// Not acknowledged nor resolved.
    pub new: u64,
    /// Acknowledged.
    pub acknowledged: u64,
    /// Resolved.
    pub resolved: u64,
}

/// Tenant selection of the counts.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct CountParams {
    /// Tenant; only fleet-wide tokens may pick one (default: theirs; fleet-wide: all).
    pub tenant: Option<String>,
}

fn who(c: &Caller) -> String {
    format!("{} ({})", c.name, c.token_id)
}

/// Sets `state` on each alert (id and tenant) the caller may see; the others are `unknown`.
/// Live clients hear of the changes.
fn set_all(
    history: &History,
    caller: &Caller,
    alerts: impl IntoIterator<Item = (Uuid, String)>,
    state: TriageState,
    note: &Option<String>,
    out: &mut BulkResult,
) -> ApiResult<()> {
    let at = chrono::Utc::now();
    let mut notice = TriageNotice { state, by: who(caller), at, note: note.clone(), alerts: Vec::new() };
    let result = (|| {
        for (id, tenant) in alerts {
            if !caller.sees((!tenant.is_empty()).then_some(tenant.as_str())) {
                out.unknown.push(id);
                continue;
            }
            out.matched += 1;
            let record = Triage { state, by: notice.by.clone(), at, note: note.clone(), tenant: tenant.clone() };
            if history.triage().set(&id, &record).map_err(ApiError::internal)? {
                out.changed += 1;
                notice.alerts.push((id, tenant));
            }
        }
        Ok(())
    })();
    // What changed before a failure is announced too.
    history.triage().announce(notice);
    result
}

/// Sets `state` on each of `ids` the caller may see; ids not in the history are `unknown`.
fn apply(
    history: &History,
    caller: &Caller,
    ids: &[Uuid],
    state: TriageState,
    note: Option<String>,
) -> ApiResult<BulkResult> {
    let mut out = BulkResult { matched: 0, changed: 0, unknown: Vec::new() };
    let mut found = Vec::with_capacity(ids.len());
    for id in ids {
        match history.get(id).map_err(ApiError::internal)? {
            Some(stored) => found.push((*id, stored.tenant())),
            None => out.unknown.push(*id),
        }
    }
    set_all(history, caller, found, state, &note, &mut out)?;
    Ok(out)
}

/// `PUT /api/v1/alerts/{id}/triage`: sets one alert's state; answers its triage record.
#[utoipa::path(put, path = "/api/v1/alerts/{id}/triage", tag = "alerts", operation_id = "set_alert_triage",
    description = "Needs an analyst. `new` reopens an alert. Each change is in the audit log.",
    params(("id" = uuid::Uuid, Path, description = "Alert id")),
    request_body = TriageChange,
    responses((status = 200, description = "The alert's triage record", body = Triage),
        (status = 400, description = "Not a UUID, or a bad note", body = ErrorBody),
        (status = 404, description = "Not in the history (or another tenant's)", body = ErrorBody),
        (status = 422, description = "Malformed body", body = ErrorBody), AuthErrors), security(("bearer" = [])))]
pub async fn set_one(
    State(s): State<ApiState>,
    caller: CallerExt,
    Path(id): Path<String>,
    body: Result<axum::Json<TriageChange>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let uuid =
        Uuid::parse_str(&id).map_err(|_| ParamError::new("id", format!("`{id}` is not an alert id (a UUID)")))?;
    let change = json_body(body)?;
    let note = check_note(change.note.as_deref()).map_err(ApiError::bad_request)?;
    let history = Arc::clone(&s.history);
    let c = caller.0.clone();
    let result = tokio::task::spawn_blocking(move || apply(&history, &c, &[uuid], change.state, note))
        .await
        .map_err(ApiError::internal)??;
    if result.matched == 0 {
        return Err(ApiError::not_found(format!("no alert with id `{id}` in the history")));
    }
    let record = s.history.triage().get(&uuid).map_err(ApiError::internal)?;
    Ok(axum::Json(record).into_response())
}

/// `POST /api/v1/alerts/triage`: sets the state of many alerts.
#[utoipa::path(post, path = "/api/v1/alerts/triage", tag = "alerts", operation_id = "set_alerts_triage",
    description = "Needs an analyst. Selects `ids` or every alert matching `filter`; only the \
        caller's tenant's alerts are touched (others count as unknown).",
    request_body = BulkTriage,
    responses((status = 200, description = "What changed", body = BulkResult),
        (status = 400, description = "Neither or both of ids and filter, too many ids, a bad filter (named in `param`) or note", body = ErrorBody),
        (status = 422, description = "Malformed body", body = ErrorBody), AuthErrors), security(("bearer" = [])))]
pub async fn set_many(
    State(s): State<ApiState>,
    caller: CallerExt,
    body: Result<axum::Json<BulkTriage>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let bulk = json_body(body)?;
    let note = check_note(bulk.note.as_deref()).map_err(ApiError::bad_request)?;
    let history = Arc::clone(&s.history);
    let c = caller.0.clone();
    let result = match (bulk.ids, bulk.filter) {
        (Some(ids), None) => {
            if ids.len() > MAX_IDS {
                return Err(ApiError::bad_request(format!(
                    "`ids` has {} ids; at most {MAX_IDS} per request",
                    ids.len()
                )));
            }
            tokio::task::spawn_blocking(move || apply(&history, &c, &ids, bulk.state, note))
                .await
                .map_err(ApiError::internal)??
        }
        (None, Some(params)) => {
            check_known(&params, crate::history::query::FILTER_PARAMS)?;
            let filter = scoped_filter(&caller.0, &params)?;
            tokio::task::spawn_blocking(move || {
                let mut from = u64::MAX;
                let mut total = BulkResult { matched: 0, changed: 0, unknown: Vec::new() };
                loop {
                    let page = history.scan(&filter, Dir::Desc, from, 1000).map_err(ApiError::internal)?;
                    let Some(last) = page.last() else { break };
                    from = last.position;
                    // The scan read each alert already: no second lookup by id.
                    let alerts = page.iter().map(|p| (p.id, p.tenant()));
                    set_all(&history, &c, alerts, bulk.state, &note, &mut total)?;
                }
                Ok::<_, ApiError>(total)
            })
            .await
            .map_err(ApiError::internal)??
        }
        _ => return Err(ApiError::bad_request("give exactly one of `ids` and `filter`")),
    };
    Ok(axum::Json(result).into_response())
}

/// `GET /api/v1/alerts/triage`: alerts in the history by state (the unacknowledged count is
/// `new`).
#[utoipa::path(get, path = "/api/v1/alerts/triage", tag = "alerts", operation_id = "count_alerts_by_triage",
    params(CountParams),
    responses((status = 200, description = "Counts", body = TriageCounts),
        (status = 400, description = "Bad or unknown parameter (named in `param`)", body = ErrorBody), AuthErrors), security(("bearer" = [])))]
pub async fn counts(
    State(s): State<ApiState>,
    caller: CallerExt,
    Query(params): Query<BTreeMap<String, String>>,
) -> ApiResult<Response> {
    check_known(&params, &["tenant"])?;
    // The alert routes' tenant rule: a tenant-scoped token counts its own tenant only.
    let tenant = scoped_filter(&caller.0, &params)?.tenant;
    let history = Arc::clone(&s.history);
    let t = tenant.clone();
    let total = tokio::task::spawn_blocking(move || history.count(t.as_deref()))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let c = s.history.triage().counts(tenant.as_deref());
    let new = total.saturating_sub(c.acknowledged + c.resolved);
    Ok(axum::Json(TriageCounts { total, new, acknowledged: c.acknowledged, resolved: c.resolved }).into_response())
}
