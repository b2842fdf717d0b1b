//! Enrollment tokens: `POST/GET /api/v1/enrollment-tokens`, `DELETE …/{id}`. A tenant's admin
//! manages its tenant's tokens; a token always enrolls into exactly one tenant.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::{ApiError, ApiResult, json_body};
use super::schema::{AuthErrors, ErrorBody};
use super::{ApiState, CallerExt};
use crate::auth::enrollment::{DEFAULT_TTL, DEFAULT_USES, EnrollmentInfo, MAX_USES};

/// Longest enrollment token lifetime.
const MAX_TTL: std::time::Duration = std::time::Duration::from_secs(365 * 86_400);

/// Body of `POST /api/v1/enrollment-tokens`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollment {
    /// Tenant the enrolled sensors belong to; default: the caller's (a fleet-wide caller must
    /// name one).
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    pub tenant: Option<String>,
    /// Sensors it may enroll (default 1, at most 100000).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100000)]
    pub uses: Option<u32>,
    /// Lifetime like `24h`, `7d` (default 24h, at most 365d).
    #[serde(default)]
    #[schema(pattern = "^[0-9]*[1-9][0-9]*(ms|s|m|h|d)$")]
    pub ttl: Option<String>,
    /// Labels given to the sensors it enrolls: `env=prod,role=db`.
    #[serde(default)]
    pub labels: Option<String>,
}

/// An enrollment token, shown once with its secret.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct CreatedEnrollment {
    /// The token's listing.
    #[serde(flatten)]
    pub info: EnrollmentInfo,
    /// The token (`vde_…`): shown this once; only its hash is kept.
    pub token: String,
}

/// `POST /api/v1/enrollment-tokens`.
#[utoipa::path(post, path = "/api/v1/enrollment-tokens", tag = "fleet", operation_id = "create_enrollment_token",
    request_body = CreateEnrollment,
    responses((status = 201, description = "Created; `token` is shown this once", body = CreatedEnrollment),
        (status = 400, description = "Bad field (named in the message)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody), (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Malformed JSON body", body = ErrorBody), AuthErrors),
    security(("bearer" = [])))]
pub async fn create(
    State(s): State<ApiState>,
    caller: CallerExt,
    body: Result<axum::Json<CreateEnrollment>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let c = caller.0;
    let req = json_body(body)?;
    let field = |f: &str, m: String| ApiError::bad_request(format!("`{f}`: {m}"));
    let tenant = match req.tenant {
        Some(t) => t,
        None if c.fleet_wide() => return Err(field("tenant", "a fleet-wide token must name the tenant".into())),
        None => c.tenant.clone(),
    };
    vedette_schemas::identity::check_tenant(&tenant).map_err(|e| field("tenant", e))?;
    if !c.fleet_wide() && tenant != c.tenant {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("this token is scoped to tenant `{}`; it can only enroll sensors into that tenant", c.tenant),
        ));
    }
    let uses = req.uses.unwrap_or(DEFAULT_USES);
    if !(1..=MAX_USES).contains(&uses) {
        return Err(field("uses", format!("{uses} is not between 1 and {MAX_USES}")));
    }
    let ttl = match req.ttl.as_deref() {
        None => DEFAULT_TTL,
        Some(t) => {
            let d = vedette_config::duration::parse(t).map_err(|e| field("ttl", e))?;
            if d.is_zero() || d > MAX_TTL {
                return Err(field("ttl", format!("`{t}` is not between 1ms and 365d")));
            }
            chrono::Duration::from_std(d).map_err(|_| field("ttl", format!("`{t}` is too long")))?
        }
    };
    let labels =
        vedette_schemas::fleet::parse_labels(req.labels.as_deref().unwrap_or("")).map_err(|e| field("labels", e))?;
    let (info, secret) = s.enrollments.create(&tenant, uses, ttl, labels).map_err(ApiError::internal)?;
    let body = CreatedEnrollment { info, token: secret.expose().to_string() };
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

/// `GET /api/v1/enrollment-tokens`: the caller's tenant's tokens (every one for a fleet-wide
/// admin), without secrets.
#[utoipa::path(get, path = "/api/v1/enrollment-tokens", tag = "fleet", operation_id = "list_enrollment_tokens",
    responses((status = 200, description = "Enrollment tokens, oldest first", body = Vec<EnrollmentInfo>), AuthErrors),
    security(("bearer" = [])))]
pub async fn list(State(s): State<ApiState>, caller: CallerExt) -> ApiResult<Response> {
    let c = caller.0;
    let all = s.enrollments.list().map_err(ApiError::internal)?;
    let mine: Vec<EnrollmentInfo> = all.into_iter().filter(|t| c.sees(Some(&t.tenant))).collect();
    Ok(axum::Json(mine).into_response())
}

/// `DELETE /api/v1/enrollment-tokens/{id}`: no further enrollment with it.
#[utoipa::path(delete, path = "/api/v1/enrollment-tokens/{id}", tag = "fleet", operation_id = "revoke_enrollment_token",
    params(("id" = String, Path, description = "Enrollment token id")),
    responses((status = 200, description = "Revoked", body = EnrollmentInfo),
        (status = 404, description = "No such token (or another tenant's)", body = ErrorBody), AuthErrors),
    security(("bearer" = [])))]
pub async fn revoke(State(s): State<ApiState>, caller: CallerExt, Path(id): Path<String>) -> ApiResult<Response> {
    let missing = || ApiError::not_found(format!("no enrollment token with id `{id}`"));
    let info = s.enrollments.get(&id).map_err(ApiError::internal)?.ok_or_else(missing)?;
    if !caller.0.sees(Some(&info.tenant)) {
        return Err(missing());
    }
    let info = s.enrollments.revoke(&id).map_err(ApiError::internal)?.ok_or_else(missing)?;
    Ok(axum::Json(info).into_response())
}
