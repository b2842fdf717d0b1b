//! API tokens, `whoami` and the audit log. A tenant's admin manages only its tenant's tokens
//! and sees only its tenant's audit entries; only a fleet-wide admin makes fleet-wide tokens.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::error::{ApiError, ApiResult, json_body};
use super::schema::{AuditPage, AuditParams, AuthErrors, CreatedToken, ErrorBody, WhoAmI};
use super::{ApiState, CallerExt};
use crate::auth::TokenInfo;
use crate::auth::{Role, valid_tenant};
use crate::history::query::{ParamError, check_known, parse_limit};

/// Longest token lifetime (ten years; expiry times stay four-digit years, as RFC 3339 needs).
const MAX_TTL: std::time::Duration = std::time::Duration::from_secs(3650 * 86_400);

/// `GET /api/v1/whoami`: the caller's token id, name, role and tenant.
#[utoipa::path(get, path = "/api/v1/whoami", tag = "access",
    responses((status = 200, description = "The caller", body = WhoAmI), AuthErrors), security(("bearer" = [])))]
pub async fn whoami(caller: CallerExt) -> impl IntoResponse {
    let c = caller.0;
    axum::Json(json!({"token_id": c.token_id, "name": c.name, "role": c.role, "tenant": c.tenant}))
}

/// `GET /api/v1/tokens`: tokens of the caller's tenant (every token for a fleet-wide admin).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "access", operation_id = "list_tokens",
    responses((status = 200, description = "Tokens, without secrets", body = Vec<TokenInfo>), AuthErrors), security(("bearer" = [])))]
pub async fn list(State(s): State<ApiState>, caller: CallerExt) -> ApiResult<Response> {
    let c = caller.0;
    let tokens: Vec<_> = s
        .tokens
        .list()
        .map_err(ApiError::internal)?
        .into_iter()
        .filter(|t| c.fleet_wide() || t.tenant == c.tenant)
        .collect();
    Ok(axum::Json(tokens).into_response())
}

/// Body of `POST /api/v1/tokens`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// A name for listings and the audit log.
    #[schema(min_length = 1, max_length = 128, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$")]
    pub name: String,
    /// `viewer`, `analyst` or `admin`.
    #[schema(value_type = Role)]
    pub role: String,
    /// Tenant (`*` = every tenant); default: the caller's.
    #[serde(default)]
    #[schema(pattern = "^(\\*|[A-Za-z0-9._-]{1,64})$")]
    pub tenant: Option<String>,
    /// Lifetime like `30d`, `12h` (at most `3650d`); default: no expiry.
    #[serde(default)]
    #[schema(pattern = "^[0-9]*[1-9][0-9]*(ms|s|m|h|d)$")]
    pub ttl: Option<String>,
}

/// `POST /api/v1/tokens`: creates a token and returns it once (`token`); only its hash is kept.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "access",
    request_body = CreateToken,
    responses((status = 201, description = "Created; `token` is shown this once", body = CreatedToken),
        (status = 400, description = "Bad field", body = ErrorBody), (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody), (status = 422, description = "Malformed JSON body", body = ErrorBody), AuthErrors), security(("bearer" = [])))]
pub async fn create(
    State(s): State<ApiState>,
    caller: CallerExt,
    body: Result<axum::Json<CreateToken>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let c = caller.0;
    let req = json_body(body)?;
    let field = |f: &str, m: String| ApiError::bad_request(format!("`{f}`: {m}"));
    if req.name.is_empty() || req.name.chars().count() > 128 || req.name.chars().any(char::is_control) {
        return Err(field("name", "1 to 128 printable characters".into()));
    }
    let role = Role::parse(&req.role)
        .ok_or_else(|| field("role", format!("`{}` is not one of: viewer, analyst, admin", req.role)))?;
    let tenant = req.tenant.unwrap_or_else(|| c.tenant.clone());
    if !valid_tenant(&tenant) {
        return Err(field("tenant", format!("`{tenant}`: use `*` or 1-64 of A-Z a-z 0-9 . _ -")));
    }
    if !c.fleet_wide() && tenant != c.tenant {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("this token is scoped to tenant `{}`; it can only create tokens of that tenant", c.tenant),
        ));
    }
    let ttl = match req.ttl.as_deref() {
        None => None,
        Some(t) => {
            let d = vedette_config::duration::parse(t).map_err(|e| field("ttl", e))?;
            if d.is_zero() {
                return Err(field("ttl", "must be longer than 0".into()));
            }
            if d > MAX_TTL {
                return Err(field("ttl", format!("`{t}` is longer than the maximum, 3650d")));
            }
            Some(chrono::Duration::from_std(d).map_err(|_| field("ttl", format!("`{t}` is too long")))?)
        }
    };
    let (info, secret) = s.tokens.create(&req.name, role, &tenant, ttl).map_err(ApiError::internal)?;
    let mut body = serde_json::to_value(&info).expect("tokens serialize");
    body["token"] = secret.expose().into();
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

/// `DELETE /api/v1/tokens/{id}`: revokes a token; it is refused from its next request on.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "access", operation_id = "revoke_token",
    params(("id" = String, Path, description = "Token id")),
    responses((status = 200, description = "Revoked", body = TokenInfo),
        (status = 404, description = "No such token (or another tenant's)", body = ErrorBody), AuthErrors), security(("bearer" = [])))]
pub async fn revoke(State(s): State<ApiState>, caller: CallerExt, Path(id): Path<String>) -> ApiResult<Response> {
    let c = caller.0;
    let missing = || ApiError::not_found(format!("no token with id `{id}` (`vedette tokens list` shows ids)"));
    let info = s.tokens.get(&id).map_err(ApiError::internal)?.ok_or_else(missing)?;
    if !c.fleet_wide() && info.tenant != c.tenant {
        return Err(missing());
    }
    let info = s.tokens.revoke(&id).map_err(ApiError::internal)?.ok_or_else(missing)?;
    Ok(axum::Json(info).into_response())
}

/// `GET /api/v1/audit?limit=N&before=SEQ`: audited calls, newest first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "access",
    params(AuditParams),
    responses((status = 200, description = "Audited calls, newest first", body = AuditPage),
        (status = 400, description = "Bad parameter", body = ErrorBody), AuthErrors), security(("bearer" = [])))]
pub async fn audit(
    State(s): State<ApiState>,
    caller: CallerExt,
    Query(params): Query<BTreeMap<String, String>>,
) -> ApiResult<Response> {
    let c = caller.0;
    check_known(&params, &["limit", "before"])?;
    let limit = parse_limit(&params, 100, 1000)?;
    let before = match params.get("before") {
        None => u64::MAX,
        Some(v) => v.parse().map_err(|_| ParamError::new("before", format!("`{v}` is not a sequence number")))?,
    };
    let entries =
        s.audit.list(before, limit, |e| c.fleet_wide() || e.tenant == c.tenant).map_err(ApiError::internal)?;
    Ok(axum::Json(json!({"entries": entries})).into_response())
}
