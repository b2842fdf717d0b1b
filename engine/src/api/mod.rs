//! The HTTP API. Every route is listed once in [`ROUTES`] with the role and tenant scope it
//! needs; [`access`] enforces it for every request before a handler runs, so handlers receive
//! an established [`Caller`] and only scope their data by its tenant.
//!
//! * [`access`]: bearer token → caller, role check, rate limit, audit log.
//! * [`error`]: JSON errors.
//! * [`ops`]: health and metrics. [`rules`]: rules and reference tables. [`sinks`]: sinks and
//!   dead letters. [`tokens`]: tokens, `whoami`, audit log. [`alerts`]: history query, one
//!   alert, export. [`stream`]: the live alert stream (SSE).
//! * [`listener`]: HTTPS (rustls) accept loop.

pub mod access;
pub mod alerts;
pub mod error;
pub mod listener;
pub mod ops;
pub mod rules;
pub mod sinks;
pub mod stream;
pub mod tokens;

use std::sync::Arc;

use axum::Router;
use axum::http::Method;
use axum::routing::{delete, get, post, put};
use vedette_actors::metrics::Metrics;
use vedette_config::ApiConfig;

use crate::auth::audit::AuditLog;
use crate::auth::ratelimit::RateLimiter;
use crate::auth::{Caller, Role, TokenStore};
use crate::history::History;
use crate::ruleset::RuleManager;

pub use sinks::SinkView;

/// Reports each component's readiness, and each sink's delivery state (breaker, spool).
pub type Readiness = Arc<dyn Fn() -> (Vec<(String, bool)>, serde_json::Map<String, serde_json::Value>) + Send + Sync>;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (liveness).
    Open,
    /// Open per `api.open_status`, else a viewer token.
    Status,
    /// A token with at least this role, of any tenant; the handler scopes data by tenant.
    Tenant(Role),
    /// A fleet-wide (`*`) token with at least this role: the route changes what every tenant
    /// shares (rules, reference tables, sink destinations).
    Fleet(Role),
}

/// One route: method, path template (as axum matches it), access, and whether it changes
/// state (then it is audited).
#[derive(Debug, Clone, Copy)]
pub struct RouteSpec {
    /// HTTP method.
    pub method: &'static str,
    /// Path template.
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// Whether it changes state (audited).
    pub mutating: bool,
}

const fn r(method: &'static str, path: &'static str, access: Access, mutating: bool) -> RouteSpec {
    RouteSpec { method, path, access, mutating }
}

use Access::{Fleet, Open, Status, Tenant};
use Role::{Admin, Analyst, Viewer};

/// Every route of the API, with its access rule. A request to a route missing here is refused
/// (a test checks the router and this table agree).
pub const ROUTES: &[RouteSpec] = &[
    r("GET", "/health/live", Open, false),
    r("GET", "/health/ready", Status, false),
    r("GET", "/metrics", Status, false),
    r("GET", "/api/v1/whoami", Tenant(Viewer), false),
    r("GET", "/api/v1/rules", Tenant(Viewer), false),
    r("POST", "/api/v1/rules/apply", Fleet(Analyst), true),
    r("POST", "/api/v1/rules/{id}/enable", Fleet(Analyst), true),
    r("POST", "/api/v1/rules/{id}/disable", Fleet(Analyst), true),
    r("GET", "/api/v1/reference", Tenant(Viewer), false),
    r("POST", "/api/v1/reference/{name}/reload", Fleet(Analyst), true),
    r("PUT", "/api/v1/reference/{name}", Fleet(Analyst), true),
    r("GET", "/api/v1/sinks", Tenant(Viewer), false),
    r("POST", "/api/v1/sinks/{name}/test", Fleet(Analyst), true),
    r("GET", "/api/v1/sinks/{name}/dlq", Tenant(Viewer), false),
    r("DELETE", "/api/v1/sinks/{name}/dlq", Tenant(Admin), true),
    r("POST", "/api/v1/sinks/{name}/dlq/replay", Tenant(Analyst), true),
    r("GET", "/api/v1/alerts", Tenant(Viewer), false),
    r("GET", "/api/v1/alerts/export", Tenant(Viewer), false),
    r("GET", "/api/v1/alerts/stream", Tenant(Viewer), false),
    r("GET", "/api/v1/alerts/{id}", Tenant(Viewer), false),
    r("GET", "/api/v1/tokens", Tenant(Admin), false),
    r("POST", "/api/v1/tokens", Tenant(Admin), true),
    r("DELETE", "/api/v1/tokens/{id}", Tenant(Admin), true),
    r("GET", "/api/v1/audit", Tenant(Admin), false),
];

/// The route spec for a request, if the route exists.
pub fn route_spec(method: &Method, path: &str) -> Option<&'static RouteSpec> {
    ROUTES.iter().find(|r| r.method == method.as_str() && r.path == path)
}

/// Everything handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub(crate) metrics: Metrics,
    pub(crate) readiness: Readiness,
    pub(crate) rules: Arc<tokio::sync::Mutex<RuleManager>>,
    pub(crate) sinks: vedette_actors::sinks::Router,
    pub(crate) data_dir: std::path::PathBuf,
    pub(crate) tokens: TokenStore,
    pub(crate) audit: AuditLog,
    pub(crate) limiter: Arc<RateLimiter>,
    pub(crate) history: Arc<History>,
    pub(crate) config: Arc<ApiConfig>,
    pub(crate) stream_stall: std::time::Duration,
}

/// What the API is built from.
pub struct ApiParts {
    /// Engine metrics.
    pub metrics: Metrics,
    /// Component readiness.
    pub readiness: Readiness,
    /// The rule set.
    pub rules: Arc<tokio::sync::Mutex<RuleManager>>,
    /// The sinks.
    pub sinks: vedette_actors::sinks::Router,
    /// The data dir.
    pub data_dir: std::path::PathBuf,
    /// API tokens.
    pub tokens: TokenStore,
    /// Audit log.
    pub audit: AuditLog,
    /// Alert history.
    pub history: Arc<History>,
    /// `[api]` settings.
    pub config: ApiConfig,
    /// `history.stream_stall_timeout`.
    pub stream_stall: std::time::Duration,
}

/// The router: every route of [`ROUTES`] behind the access layer.
pub fn router(parts: ApiParts) -> Router {
    let limiter = Arc::new(RateLimiter::new(parts.config.rate_limit_per_sec, parts.config.rate_limit_burst));
    let body_limit = usize::try_from(parts.config.max_body_bytes).unwrap_or(usize::MAX);
    let upload_limit = usize::try_from(parts.config.max_upload_bytes).unwrap_or(usize::MAX);
    let state = ApiState {
        metrics: parts.metrics,
        readiness: parts.readiness,
        rules: parts.rules,
        sinks: parts.sinks,
        data_dir: parts.data_dir,
        tokens: parts.tokens,
        audit: parts.audit,
        limiter,
        history: parts.history,
        config: Arc::new(parts.config),
        stream_stall: parts.stream_stall,
    };
    Router::new()
        .route("/health/live", get(ops::live))
        .route("/health/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics_text))
        .route("/api/v1/whoami", get(tokens::whoami))
        .route("/api/v1/rules", get(rules::list))
        .route("/api/v1/rules/apply", post(rules::apply))
        .route("/api/v1/rules/{id}/enable", post(rules::enable))
        .route("/api/v1/rules/{id}/disable", post(rules::disable))
        .route("/api/v1/reference", get(rules::reference_list))
        .route("/api/v1/reference/{name}/reload", post(rules::reference_reload))
        .route(
            "/api/v1/reference/{name}",
            put(rules::reference_upload).layer(axum::extract::DefaultBodyLimit::max(upload_limit)),
        )
        .route("/api/v1/sinks", get(sinks::list))
        .route("/api/v1/sinks/{name}/test", post(sinks::test))
        .route("/api/v1/sinks/{name}/dlq", get(sinks::dlq_list).delete(sinks::dlq_purge))
        .route("/api/v1/sinks/{name}/dlq/replay", post(sinks::dlq_replay))
        .route("/api/v1/alerts", get(alerts::query))
        .route("/api/v1/alerts/export", get(alerts::export))
        .route("/api/v1/alerts/stream", get(stream::stream))
        .route("/api/v1/alerts/{id}", get(alerts::one))
        .route("/api/v1/tokens", get(tokens::list).post(tokens::create))
        .route("/api/v1/tokens/{id}", delete(tokens::revoke))
        .route("/api/v1/audit", get(tokens::audit))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), access::layer))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// The caller of a request (set by [`access::layer`]).
pub type CallerExt = axum::Extension<Caller>;
