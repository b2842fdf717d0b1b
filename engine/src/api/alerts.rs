//! The alert history: filtered pages (newest first, opaque cursors), one alert by id, and
//! export in any sink format. Every query is scoped to the caller's tenant.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use vedette_config::Format;
use vedette_pipelines::alert::Alert;

use super::error::{ApiError, ApiResult};
use super::schema::{
    AlertFilterParams, AlertItem, AlertPage, AuthErrors, ErrorBody, ExportFormat, ExportParams, PageParams,
};
use super::{ApiState, CallerExt};
use crate::auth::Caller;
use crate::history::query::{
    FILTER_PARAMS, Filter, ParamError, check_known, decode_cursor, encode_cursor, parse_limit,
};
use crate::history::{Dir, Stored};

/// Largest page.
pub const MAX_PAGE: usize = 1000;

/// The request's filters, narrowed to the caller's tenant. A tenant-scoped token may not pick
/// another tenant.
pub fn scoped_filter(caller: &Caller, params: &BTreeMap<String, String>) -> Result<Filter, ParamError> {
    let mut f = Filter::from_params(params)?;
    if !caller.fleet_wide() {
        if f.tenant.as_ref().is_some_and(|t| *t != caller.tenant) {
            return Err(ParamError::new("tenant", "only a fleet-wide token (tenant `*`) can choose the tenant"));
        }
        f.tenant = Some(caller.tenant.clone());
    }
    Ok(f)
}

fn allowed(extra: &[&'static str]) -> Vec<&'static str> {
    FILTER_PARAMS.iter().copied().chain(extra.iter().copied()).collect()
}

/// `GET /api/v1/alerts`: `{"items": [{"position", "alert"}], "next_cursor"}`, newest first.
#[utoipa::path(get, path = "/api/v1/alerts", tag = "alerts",
    params(AlertFilterParams, PageParams),
    responses((status = 200, description = "Newest first", body = AlertPage),
        (status = 400, description = "Bad or unknown parameter (named in `param`)", body = ErrorBody), AuthErrors), security(("bearer" = [])))]
pub async fn query(
    State(s): State<ApiState>,
    caller: CallerExt,
    Query(params): Query<BTreeMap<String, String>>,
) -> ApiResult<Response> {
    check_known(&params, &allowed(&["limit", "cursor"]))?;
    let filter = scoped_filter(&caller.0, &params)?;
    let limit = parse_limit(&params, 100, MAX_PAGE)?;
    let from = params.get("cursor").map(|c| decode_cursor(c, &filter)).transpose()?.unwrap_or(u64::MAX);
    let history = std::sync::Arc::clone(&s.history);
    let f = filter.clone();
    let (mut items, mut triage) = tokio::task::spawn_blocking(move || {
        let items = history.scan(&f, Dir::Desc, from, limit + 1)?;
        let triage = items.iter().map(|i| history.triage().get(&i.id)).collect::<crate::error::Result<Vec<_>>>()?;
        Ok::<_, crate::error::EngineError>((items, triage))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    let next = (items.len() > limit).then(|| {
        items.truncate(limit);
        triage.truncate(limit);
        encode_cursor(items.last().map_or(0, |i| i.position), &filter)
    });
    // The stored JSON goes out as is (no parse and re-serialize per alert).
    let mut body = Vec::with_capacity(items.iter().map(|i| i.json.len() + 32).sum::<usize>() + 64);
    body.extend_from_slice(b"{\"items\":[");
    for (n, (i, t)) in items.iter().zip(&triage).enumerate() {
        if n > 0 {
            body.push(b',');
        }
        body.extend_from_slice(format!("{{\"position\":{},\"alert\":", i.position).as_bytes());
        body.extend_from_slice(&i.json);
        body.extend_from_slice(b",\"triage\":");
        body.extend_from_slice(&serde_json::to_vec(t).expect("triage records serialize"));
        body.push(b'}');
    }
    body.extend_from_slice(b"],\"next_cursor\":");
    body.extend_from_slice(serde_json::to_string(&next).expect("strings serialize").as_bytes());
    body.push(b'}');
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// `GET /api/v1/alerts/{id}`: `{"position", "alert"}`; 404 for an unknown id or another
/// tenant's alert.
#[utoipa::path(get, path = "/api/v1/alerts/{id}", tag = "alerts", operation_id = "get_alert",
    params(("id" = uuid::Uuid, Path, description = "Alert id")),
    responses((status = 200, description = "The alert", body = AlertItem),
        (status = 400, description = "Not a UUID", body = ErrorBody),
        (status = 404, description = "Not in the history (or another tenant's)", body = ErrorBody), AuthErrors), security(("bearer" = [])))]
pub async fn one(State(s): State<ApiState>, caller: CallerExt, Path(id): Path<String>) -> ApiResult<Response> {
    let (uuid, stored) = visible(&s, &caller.0, &id)?;
    let triage = s.history.triage().get(&uuid).map_err(ApiError::internal)?;
    let mut body = format!("{{\"position\":{},\"alert\":", stored.position).into_bytes();
    body.extend_from_slice(&stored.json);
    body.extend_from_slice(b",\"triage\":");
    body.extend_from_slice(&serde_json::to_vec(&triage).expect("triage records serialize"));
    body.push(b'}');
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// `GET /api/v1/alerts/{id}/export?format=…`: one alert in a sink format.
#[utoipa::path(get, path = "/api/v1/alerts/{id}/export", tag = "alerts", operation_id = "export_alert",
    params(("id" = uuid::Uuid, Path, description = "Alert id"),
        ("format" = Option<ExportFormat>, Query, description = "`json` (default), `cef`, `stix` or `ocsf`")),
    responses((status = 200, description = "The alert in the format: a JSON object (json, stix, ocsf) or one CEF line",
            content((Object = "application/json"), (String = "text/plain"))),
        (status = 400, description = "Not a UUID, or a bad format (named in `param`)", body = ErrorBody),
        (status = 404, description = "Not in the history (or another tenant's)", body = ErrorBody), AuthErrors), security(("bearer" = [])))]
pub async fn export_one(
    State(s): State<ApiState>,
    caller: CallerExt,
    Path(id): Path<String>,
    Query(params): Query<BTreeMap<String, String>>,
) -> ApiResult<Response> {
    check_known(&params, &["format"])?;
    let format = export_format(&params)?;
    let (_, stored) = visible(&s, &caller.0, &id)?;
    let content_type = match format {
        Format::Cef => "text/plain; charset=utf-8",
        _ => "application/json",
    };
    Ok(([(header::CONTENT_TYPE, content_type)], encode_page(format, std::slice::from_ref(&stored))).into_response())
}

/// The stored alert `id` if the caller may see it: `400` for a malformed id, `404` for an
/// unknown one or another tenant's (indistinguishable).
fn visible(s: &ApiState, caller: &Caller, id: &str) -> ApiResult<(uuid::Uuid, Stored)> {
    let uuid =
        uuid::Uuid::parse_str(id).map_err(|_| ParamError::new("id", format!("`{id}` is not an alert id (a UUID)")))?;
    let missing = || ApiError::not_found(format!("no alert with id `{id}` in the history"));
    let stored = s.history.get(&uuid).map_err(ApiError::internal)?.ok_or_else(missing)?;
    let tenant = stored.tenant();
    if !caller.sees((!tenant.is_empty()).then_some(tenant.as_str())) {
        return Err(missing());
    }
    Ok((uuid, stored))
}

/// Parses `format` for export.
fn export_format(params: &BTreeMap<String, String>) -> Result<Format, ParamError> {
    match params.get("format").map(String::as_str) {
        None | Some("json") => Ok(Format::Json),
        Some("cef") => Ok(Format::Cef),
        Some("stix") => Ok(Format::Stix),
        Some("ocsf") => Ok(Format::Ocsf),
        Some(other) => Err(ParamError::new("format", format!("`{other}` is not one of: json, cef, stix, ocsf"))),
    }
}

/// `GET /api/v1/alerts/export?format=json|cef|stix|ocsf&…`: every matching alert, newest
/// first, one per line in the format (JSON, OCSF: one object per line; STIX: one bundle per
/// line; CEF: one CEF line each), streamed as it is read. `limit` caps the count.
#[utoipa::path(get, path = "/api/v1/alerts/export", tag = "alerts",
    params(AlertFilterParams, ExportParams),
    responses((status = 200, description = "One alert per line, newest first",
            content((String = "application/x-ndjson"), (String = "text/plain"))),
        (status = 400, description = "Bad or unknown parameter (named in `param`)", body = ErrorBody), AuthErrors), security(("bearer" = [])))]
pub async fn export(
    State(s): State<ApiState>,
    caller: CallerExt,
    Query(params): Query<BTreeMap<String, String>>,
) -> ApiResult<Response> {
    let (filter, format, cap) = export_request(&caller.0, &params)?;
    Ok(export_stream(std::sync::Arc::clone(&s.history), filter, format, cap, None))
}

/// What an export of the history selects: the filters (scoped to `caller`), the format and
/// the cap (`limit`).
pub(crate) fn export_request(
    caller: &Caller,
    params: &BTreeMap<String, String>,
) -> Result<(Filter, Format, usize), ParamError> {
    check_known(params, &allowed(&["format", "limit"]))?;
    let filter = scoped_filter(caller, params)?;
    let format = export_format(params)?;
    let cap = parse_limit(params, usize::MAX, usize::MAX)?;
    Ok((filter, format, cap))
}

/// The file name an export in `format` is saved as.
pub(crate) fn export_file_name(format: Format) -> &'static str {
    match format {
        Format::Cef => "vedette-alerts.cef",
        _ => "vedette-alerts.jsonl",
    }
}

/// Streams every alert matching `filter` (newest first, at most `cap`) in `format`, one per
/// line, as it is read; with `attachment`, as a file of that name.
pub(crate) fn export_stream(
    history: std::sync::Arc<crate::history::History>,
    filter: Filter,
    format: Format,
    cap: usize,
    attachment: Option<&str>,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let mut from = u64::MAX;
        let mut sent = 0usize;
        while sent < cap {
            let page = match history.scan(&filter, Dir::Desc, from, (cap - sent).min(500)) {
                Ok(p) => p,
                Err(e) => {
                    let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                    return;
                }
            };
            let Some(last) = page.last() else { return };
            from = last.position;
            sent += page.len();
            if tx.blocking_send(Ok(encode_page(format, &page))).is_err() {
                return; // client went away
            }
        }
    });
    let content_type = match format {
        Format::Cef => "text/plain; charset=utf-8",
        _ => "application/x-ndjson",
    };
    let body = axum::body::Body::from_stream(tokio_stream(rx));
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    if let Some(name) = attachment
        && let Ok(v) = header::HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
    {
        response.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    response
}

fn encode_page(format: Format, page: &[Stored]) -> Vec<u8> {
    let mut out = Vec::new();
    for stored in page {
        match format {
            Format::Json => out.extend_from_slice(&stored.json),
            _ => match serde_json::from_slice::<Alert>(&stored.json) {
                Ok(alert) => out.extend_from_slice(&vedette_pipelines::formats::encode(format, &alert)),
                Err(_) => continue,
            },
        }
        out.push(b'\n');
    }
    out
}

/// A receiver as a stream of body chunks.
pub(crate) fn tokio_stream<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Most buckets of a histogram.
pub const MAX_BUCKETS: i64 = 1440;
/// Most alerts a histogram reads; beyond, it says `truncated`.
pub const HISTOGRAM_READ_CAP: usize = 500_000;

/// Alerts per time bucket by severity.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Histogram {
    /// Bucket width, seconds.
    pub bucket_seconds: i64,
    /// Start of the first bucket.
    pub since: chrono::DateTime<chrono::Utc>,
    /// End of the last bucket (exclusive).
    pub until: chrono::DateTime<chrono::Utc>,
    /// Oldest first, every bucket (empty ones too).
    pub buckets: Vec<Bucket>,
    /// Whether more alerts matched than one histogram reads (500,000); counts are then low.
    pub truncated: bool,
}

/// One bucket.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Bucket {
    /// Bucket start.
    pub start: chrono::DateTime<chrono::Utc>,
    /// Info alerts.
    pub info: u64,
    /// Low.
    pub low: u64,
    /// Medium.
    pub medium: u64,
    /// High.
    pub high: u64,
    /// Critical.
    pub critical: u64,
}

/// Bucket width and range of a histogram.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct HistogramParams {
    /// Bucket width in seconds, 1–86400 (default 60). At most 1,440 buckets per request.
    #[param(minimum = 1, maximum = 86400)]
    pub bucket: Option<u32>,
}

/// `GET /api/v1/alerts/histogram`: matching alerts per bucket and severity; `since` defaults
/// to an hour before `until`, `until` to now (rounded up to a bucket).
#[utoipa::path(get, path = "/api/v1/alerts/histogram", tag = "alerts", operation_id = "alert_histogram",
    params(AlertFilterParams, HistogramParams),
    responses((status = 200, description = "Counts per bucket, oldest first", body = Histogram),
        (status = 400, description = "Bad or unknown parameter (named in `param`)", body = ErrorBody), AuthErrors), security(("bearer" = [])))]
pub async fn histogram(
    State(s): State<ApiState>,
    caller: CallerExt,
    Query(params): Query<BTreeMap<String, String>>,
) -> ApiResult<Response> {
    check_known(&params, &allowed(&["bucket"]))?;
    let mut filter = scoped_filter(&caller.0, &params)?;
    let width: i64 = match params.get("bucket") {
        None => 60,
        Some(v) => match v.parse::<i64>() {
            Ok(n) if (1..=86_400).contains(&n) => n,
            _ => {
                return Err(ParamError::new(
                    "bucket",
                    format!("`{v}` is not a whole number of seconds from 1 to 86400"),
                )
                .into());
            }
        },
    };
    let step = width * 1_000_000;
    let now = chrono::Utc::now().timestamp_micros();
    let until = filter.until.unwrap_or(now).div_euclid(step) * step + if filter.until.is_some() { 0 } else { step };
    let since = filter.since.unwrap_or(until - 3600 * 1_000_000).div_euclid(step) * step;
    let n = (until - since).div_euclid(step).max(1);
    if n > MAX_BUCKETS {
        return Err(ParamError::new(
            "bucket",
            format!("{n} buckets from `since` to `until`; at most {MAX_BUCKETS} (widen `bucket`)"),
        )
        .into());
    }
    filter.since = Some(since);
    filter.until = Some(until);
    let history = std::sync::Arc::clone(&s.history);
    let (counts, truncated) = tokio::task::spawn_blocking(move || {
        #[derive(serde::Deserialize)]
        struct Sev {
            severity: vedette_pipelines::rule::Severity,
        }
        let mut counts = vec![[0u64; 5]; n as usize];
        let (mut from, mut read) = (u64::MAX, 0usize);
        while read < HISTOGRAM_READ_CAP {
            let page = history.scan(&filter, Dir::Desc, from, 2000)?;
            let Some(last) = page.last() else { return Ok((counts, false)) };
            from = last.position;
            read += page.len();
            for item in &page {
                let b = ((item.detected_at - since).div_euclid(step)) as usize;
                if let (Some(slot), Ok(sev)) = (counts.get_mut(b), serde_json::from_slice::<Sev>(&item.json)) {
                    slot[sev.severity as usize] += 1;
                }
            }
        }
        Ok::<_, crate::error::EngineError>((counts, true))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    let at = |micros: i64| chrono::DateTime::from_timestamp_micros(micros).unwrap_or_default();
    let buckets = counts
        .iter()
        .enumerate()
        .map(|(i, c)| Bucket {
            start: at(since + i as i64 * step),
            info: c[0],
            low: c[1],
            medium: c[2],
            high: c[3],
            critical: c[4],
        })
        .collect();
    Ok(axum::Json(Histogram { bucket_seconds: width, since: at(since), until: at(until), buckets, truncated })
        .into_response())
}
