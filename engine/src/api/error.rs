//! JSON errors: every refusal is `{"error": "…"}` (plus `"param"` for a bad parameter) with a
//! status that says whose fault it is.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::EngineError;
use crate::history::query::ParamError;

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    param: Option<String>,
    retry_after: Option<u64>,
}

/// The body of a JSON request, or the rejection (415, 422, 413) as an API error.
pub fn json_body<T>(body: Result<axum::Json<T>, axum::extract::rejection::JsonRejection>) -> ApiResult<T> {
    body.map(|axum::Json(b)| b).map_err(|e| ApiError::new(e.status(), e.body_text()))
}

impl ApiError {
    /// An error with `status`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), param: None, retry_after: None }
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 400 for a request body or parameter.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 429 with `Retry-After` (whole seconds, at least 1).
    pub fn too_many(wait: std::time::Duration) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate limit of this token exceeded; retry later");
        e.retry_after = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
        e
    }

    /// 500 for a storage failure (the message names what failed).
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl From<ParamError> for ApiError {
    fn from(e: ParamError) -> Self {
        Self { status: StatusCode::BAD_REQUEST, message: e.to_string(), param: Some(e.param), retry_after: None }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let status = match &e {
            EngineError::UnknownRule { .. } => StatusCode::NOT_FOUND,
            EngineError::Refused(_) => StatusCode::CONFLICT,
            EngineError::Rules(_) | EngineError::Io { .. } | EngineError::Config(_) => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.message});
        if let Some(p) = self.param {
            body["param"] = p.into();
        }
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, s.into());
        }
        resp
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

/// Unknown paths.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route {} (see /api/v1/openapi.json)", uri.path()))
}

/// Known path, other method.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, format!("{} does not accept {method}", uri.path()))
}

/// Turns axum's plain-text rejections (bad JSON body, body too large, bad path) into JSON
/// errors with the same status.
pub async fn json_rejections(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/event-stream"));
    let too_large = status == StatusCode::PAYLOAD_TOO_LARGE;
    if !(status.is_client_error() || status.is_server_error()) || (is_json && !too_large) {
        return resp;
    }
    let retry_after = resp.headers().get(header::RETRY_AFTER).cloned();
    let bytes = axum::body::to_bytes(resp.into_body(), 64 << 10).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).trim().to_string();
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "request body too large for this route (limits: `api.max_body_bytes`; \
                                           reference uploads: `api.max_upload_bytes`)"
            .to_string(),
        _ if text.is_empty() => status.canonical_reason().unwrap_or("error").to_string(),
        _ => text,
    };
    let mut out = (status, axum::Json(json!({"error": message}))).into_response();
    if let Some(r) = retry_after {
        out.headers_mut().insert(header::RETRY_AFTER, r);
    }
    out
}
