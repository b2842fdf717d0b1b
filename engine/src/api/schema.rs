//! Types that describe the API's bodies and parameters in the OpenAPI document, and the
//! document's frame (info, security scheme, tags). Handlers build their answers from the same
//! types, or — where they stream stored JSON as is — the shapes declared here.

use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use vedette_actors::sinks::spool::DeadLetter;
use vedette_pipelines::alert::Alert;

/// Every error: what is wrong and what to do; `param` names a bad query or path parameter.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The message.
    pub error: String,
    /// The parameter at fault, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
}

/// The refusals every authenticated route may answer before its handler runs.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum AuthErrors {
    /// No, bad, revoked or expired token.
    #[response(status = 401, description = "No, bad, revoked or expired token")]
    Unauthorized(ErrorBody),
    /// Role or scope too weak.
    #[response(status = 403, description = "Role or scope too weak")]
    Forbidden(ErrorBody),
    /// Rate limit of the token.
    #[response(status = 429, description = "Rate limit of the token; see Retry-After")]
    TooManyRequests(ErrorBody),
}

/// `GET /health/live`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Live {
    /// Always `live`.
    pub status: String,
}

/// `GET /health/ready`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Ready {
    /// `ready`, `degraded` (a sink fails but keeps its alerts; 200) or `not_ready` (503).
    pub status: String,
    /// Component name → `up` or `down`.
    #[schema(value_type = Object)]
    pub components: serde_json::Map<String, serde_json::Value>,
    /// Sink name → state (`ok`, `degraded`, `down`), reason, breaker, spooled, spool_bytes,
    /// dead_letters, last_error.
    #[schema(value_type = Object)]
    pub sinks: serde_json::Map<String, serde_json::Value>,
}

/// `GET /api/v1/whoami`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    /// Token id.
    pub token_id: String,
    /// Token name.
    pub name: String,
    /// Role.
    pub role: crate::auth::Role,
    /// Tenant or `*`.
    pub tenant: String,
}

/// A rule enabled or disabled.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RuleToggle {
    /// Rule id.
    pub id: String,
    /// Whether it runs now.
    pub enabled: bool,
}

/// One stored alert.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AlertItem {
    /// Position in the history (the live stream's event id).
    pub position: u64,
    /// The alert.
    pub alert: Alert,
    /// Its triage record; null while it is `new` and never triaged.
    #[serde(default)]
    pub triage: Option<crate::history::triage::Triage>,
}

/// A page of alerts, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AlertPage {
    /// The alerts.
    pub items: Vec<AlertItem>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    pub next_cursor: Option<String>,
}

/// A sink's dead letters.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DlqPage {
    /// Sink name.
    pub sink: String,
    /// Dead letters the caller may see.
    pub total: usize,
    /// Oldest first.
    pub entries: Vec<DeadLetter>,
}

/// Dead letters put back into the spool.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Replayed {
    /// Sink name.
    pub sink: String,
    /// How many.
    pub replayed: usize,
}

/// Dead letters deleted.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Purged {
    /// Sink name.
    pub sink: String,
    /// How many.
    pub purged: usize,
}

/// What a sink's destination said to a test alert.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SinkTest {
    /// Sink name.
    pub sink: String,
    /// Whether the destination confirmed it.
    pub delivered: bool,
    /// The destination's answer.
    pub detail: String,
    /// The answer again when it was not delivered.
    pub error: Option<String>,
}

/// A new token: its listing plus the token itself, shown this once.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    /// The listing.
    pub info: crate::auth::TokenInfo,
    /// The bearer token. Only its hash is kept.
    pub token: String,
}

/// A page of the audit log.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    /// Newest first.
    pub entries: Vec<crate::auth::audit::AuditEntry>,
}

/// Filters of the alert routes (documentation; handlers also refuse unknown parameters).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct AlertFilterParams {
    /// Rule id.
    pub rule: Option<String>,
    /// Minimum severity.
    #[param(inline)]
    pub severity: Option<vedette_pipelines::rule::Severity>,
    /// Sensor id.
    pub sensor: Option<String>,
    /// Host.
    pub host: Option<String>,
    /// Tenant; only fleet-wide tokens may pick another tenant than their own.
    pub tenant: Option<String>,
    /// Raised (`detected_at`) at or after this RFC 3339 time.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Raised before this RFC 3339 time.
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Triage state.
    #[param(inline)]
    pub triage: Option<crate::history::triage::TriageState>,
}

/// Paging of `GET /api/v1/alerts`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PageParams {
    /// Alerts per page, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page (valid only with the same filters).
    pub cursor: Option<String>,
}

/// Export format and cap.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ExportParams {
    /// `json` (default), `cef`, `stix` or `ocsf`.
    #[param(inline)]
    pub format: Option<ExportFormat>,
    /// At most this many alerts.
    #[param(minimum = 1)]
    pub limit: Option<u64>,
}

/// Export formats.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// Alert JSON, one per line.
    Json,
    /// ArcSight CEF lines.
    Cef,
    /// One STIX 2.1 bundle per line.
    Stix,
    /// One OCSF Detection Finding per line.
    Ocsf,
}

/// Resume point of the stream (the `Last-Event-ID` header wins).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct StreamParams {
    /// Send alerts after this position (an event id).
    pub after: Option<u64>,
}

/// `limit` alone.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct LimitParams {
    /// Most entries (default 100).
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<u32>,
}

/// Paging of the audit log.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct AuditParams {
    /// Most entries, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Entries with a smaller `seq` than this.
    pub before: Option<u64>,
}

/// The document's frame; paths are added by the router (`utoipa_axum::routes!`).
#[derive(OpenApi)]
#[openapi(
    info(title = "vedette API", description = "Alerts, rules, sinks and tokens of a vedette engine. \
        Every /api/v1 route needs `Authorization: Bearer <token>`; see docs/api.md."),
    modifiers(&BearerScheme),
    tags(
        (name = "health", description = "Liveness, readiness, metrics"),
        (name = "alerts", description = "Alert history, export and live stream"),
        (name = "rules", description = "Rules and reference tables (shared by every tenant)"),
        (name = "sinks", description = "Delivery state and dead letters"),
        (name = "fleet", description = "Registered sensors, revocation"),
        (name = "access", description = "Tokens, identity and the audit log"),
    )
)]
pub struct ApiDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("vdt token").build()),
        );
    }
}
