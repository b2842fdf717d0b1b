//! One-time download links for alert exports. A browser downloads a large export to disk only
//! through a plain link — one that carries no `Authorization` header — so the console asks for
//! a link (`POST /api/v1/alerts/export/links`, with the caller's token and the same parameters
//! as `GET /api/v1/alerts/export`) and lets the browser fetch it. A link:
//!
//! * holds 256 random bits, of which only the SHA-256 is kept (in memory);
//! * works once, within [`TTL`] of its creation;
//! * exports what its creator could: the filters were narrowed to the creator's tenant when
//!   the link was made, and the creator's token must still be valid when it is used.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use sha2::Digest;
use vedette_config::Format;

use super::alerts::{export_file_name, export_request, export_stream};
use super::error::{ApiError, ApiResult};
use super::schema::{AlertFilterParams, AuthErrors, ErrorBody, ExportParams};
use super::{ApiState, CallerExt};
use crate::auth::token::Secret;
use crate::history::query::Filter;

/// How long a link works.
pub const TTL: Duration = Duration::from_secs(60);
/// Links waiting to be used at most (expired ones are dropped first).
const MAX_PENDING: usize = 1000;

/// An export a link stands for.
struct Pending {
    token_id: String,
    filter: Filter,
    format: Format,
    cap: usize,
    expires: Instant,
}

/// The links not used yet, by the SHA-256 of their secret.
#[derive(Default)]
pub struct ExportLinks {
    pending: Mutex<HashMap<[u8; 32], Pending>>,
}

fn digest(secret: &str) -> [u8; 32] {
    sha2::Sha256::digest(secret.as_bytes()).into()
}

impl ExportLinks {
    /// Records an export; returns the link's secret (`None`: too many links wait).
    fn create(&self, pending: Pending) -> Option<Secret> {
        let mut bytes = [0u8; 32];
        SystemRandom::new().fill(&mut bytes).expect("the system RNG works");
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let mut links = self.pending.lock().expect("export links lock is never poisoned");
        let now = Instant::now();
        links.retain(|_, p| p.expires > now);
        if links.len() >= MAX_PENDING {
            return None;
        }
        links.insert(digest(&secret), pending);
        Some(Secret::new(secret))
    }

    /// Takes the export of `secret` (a link works once); `None`: unknown, used or expired.
    fn take(&self, secret: &str) -> Option<Pending> {
        let mut links = self.pending.lock().expect("export links lock is never poisoned");
        links.remove(&digest(secret)).filter(|p| p.expires > Instant::now())
    }
}

/// A download link.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ExportLink {
    /// Path to GET, without a token, once, before `expires_at`.
    pub url: String,
    /// When the link stops working.
    pub expires_at: chrono::DateTime<chrono::Utc>,
    /// The file name the download is saved as.
    pub filename: String,
}

/// `POST /api/v1/alerts/export/links`: a one-time download link for an export.
#[utoipa::path(post, path = "/api/v1/alerts/export/links", tag = "alerts", operation_id = "create_export_link",
    description = "Takes the parameters of `GET /api/v1/alerts/export`; the link exports what the caller could, \
        works once within 60 s, and only while the caller's token is valid.",
    params(AlertFilterParams, ExportParams),
    responses((status = 201, description = "The link", body = ExportLink),
        (status = 400, description = "Bad or unknown parameter (named in `param`)", body = ErrorBody),
        (status = 503, description = "Too many links wait to be used", body = ErrorBody), AuthErrors),
    security(("bearer" = [])))]
pub async fn create(
    State(s): State<ApiState>,
    caller: CallerExt,
    Query(params): Query<BTreeMap<String, String>>,
) -> ApiResult<Response> {
    let (filter, format, cap) = export_request(&caller.0, &params)?;
    let pending = Pending { token_id: caller.0.token_id.clone(), filter, format, cap, expires: Instant::now() + TTL };
    let secret = s.export_links.create(pending).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_PENDING} export links wait to be used; retry in a minute"),
        )
    })?;
    let link = ExportLink {
        url: format!("/api/v1/alerts/export/download/{}", secret.expose()),
        expires_at: chrono::Utc::now() + TTL,
        filename: export_file_name(format).into(),
    };
    Ok((StatusCode::CREATED, axum::Json(link)).into_response())
}

/// `GET /api/v1/alerts/export/download/{link}`: the export, once, as a file.
#[utoipa::path(get, path = "/api/v1/alerts/export/download/{link}", tag = "alerts", operation_id = "download_export",
    description = "No token: the link is the credential. Works once, within 60 s of its creation, while the token \
        that created it is valid.",
    params(("link" = String, Path, description = "The link's secret, as `POST /api/v1/alerts/export/links` gave it")),
    responses((status = 200, description = "One alert per line, newest first, as an attachment",
            content((String = "application/x-ndjson"), (String = "text/plain"))),
        (status = 401, description = "The token that created the link is no longer valid", body = ErrorBody),
        (status = 404, description = "Unknown, used or expired link", body = ErrorBody)))]
pub async fn download(State(s): State<ApiState>, Path(link): Path<String>) -> ApiResult<Response> {
    let pending = s.export_links.take(&link).ok_or_else(|| {
        ApiError::not_found("unknown, used or expired export link (a link works once, within 60 s): create a new one")
    })?;
    let valid = s.tokens.get(&pending.token_id).ok().flatten().is_some_and(|t| t.usable(chrono::Utc::now()).is_ok());
    if !valid {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "the token that created this export link was revoked or expired",
        ));
    }
    let name = export_file_name(pending.format);
    Ok(export_stream(std::sync::Arc::clone(&s.history), pending.filter, pending.format, pending.cap, Some(name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(expires: Instant) -> Pending {
        Pending { token_id: "t".into(), filter: Filter::default(), format: Format::Json, cap: 1, expires }
    }

    #[test]
    fn a_link_works_once_and_not_after_it_expired() {
        let links = ExportLinks::default();
        let fresh = links.create(pending(Instant::now() + TTL)).unwrap();
        assert!(format!("{fresh:?}").contains("REDACTED"), "the secret never shows in logs");
        assert!(links.take(fresh.expose()).is_some());
        assert!(links.take(fresh.expose()).is_none(), "once");
        let old = links.create(pending(Instant::now() - Duration::from_secs(1))).unwrap();
        assert!(links.take(old.expose()).is_none(), "expired");
        assert!(links.take("not a link").is_none());
        // Expired links make room; live ones are bounded.
        for _ in 0..MAX_PENDING {
            links.create(pending(Instant::now() + TTL)).unwrap();
        }
        assert!(links.create(pending(Instant::now() + TTL)).is_none(), "bounded");
    }
}
