//! The HTTP API. Every route is listed once in [`ROUTES`] with the role and tenant scope it
//! needs; [`access`] enforces it for every request before a handler runs, so handlers receive
//! an established [`Caller`] and only scope their data by its tenant.
//!
//! * [`access`]: bearer token → caller, role check, rate limit, audit log.
//! * [`error`]: JSON errors.
//! * [`ops`]: health and metrics. [`rules`]: rules and reference tables. [`sinks`]: sinks and
//!   dead letters. [`tokens`]: tokens, `whoami`, audit log. [`alerts`]: history query, one
//!   alert, export, histogram. [`triage`]: alert triage states. [`stream`]: the live alert
//!   stream (SSE). [`rule_check`]: validating and dry-running packs.
//! * [`listener`]: HTTPS (rustls) accept loop. [`console`]: the web console's files at `/ui/`.

pub mod access;
pub mod alerts;
pub mod commands;
pub mod console;
pub mod enrollment;
pub mod error;
pub mod events;
pub mod export_links;
pub mod listener;
pub mod ops;
pub mod rule_check;
pub mod rules;
pub mod schema;
pub mod sensors;
pub mod sinks;
pub mod stream;
pub mod tokens;
pub mod triage;

use std::sync::Arc;

use axum::Router;
use axum::http::Method;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
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
    r("GET", "/api/v1/openapi.json", Open, false),
    r("GET", "/api/v1/whoami", Tenant(Viewer), false),
    r("GET", "/api/v1/rules", Tenant(Viewer), false),
    r("POST", "/api/v1/rules/apply", Fleet(Analyst), true),
    r("POST", "/api/v1/rules/validate", Tenant(Analyst), false),
    r("POST", "/api/v1/rules/test", Tenant(Analyst), false),
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
    r("POST", "/api/v1/alerts/export/links", Tenant(Viewer), false),
    // The link is the credential (one use, 60 s, its creator's token still valid).
    r("GET", "/api/v1/alerts/export/download/{link}", Open, false),
    r("GET", "/api/v1/alerts/stream", Tenant(Viewer), false),
    r("GET", "/api/v1/alerts/histogram", Tenant(Viewer), false),
    r("GET", "/api/v1/alerts/triage", Tenant(Viewer), false),
    r("POST", "/api/v1/alerts/triage", Tenant(Analyst), true),
    r("GET", "/api/v1/alerts/{id}", Tenant(Viewer), false),
    r("PUT", "/api/v1/alerts/{id}/triage", Tenant(Analyst), true),
    r("GET", "/api/v1/alerts/{id}/export", Tenant(Viewer), false),
    r("GET", "/api/v1/sensors", Tenant(Viewer), false),
    r("GET", "/api/v1/sensors/{id}", Tenant(Viewer), false),
    r("POST", "/api/v1/sensors/{id}/revoke", Tenant(Admin), true),
    r("DELETE", "/api/v1/sensors/{id}", Tenant(Admin), true),
    r("POST", "/api/v1/certificates/{fingerprint}/revoke", Tenant(Admin), true),
    r("GET", "/api/v1/sensors/{id}/commands", Tenant(Viewer), false),
    r("POST", "/api/v1/sensors/{id}/commands", Tenant(Admin), true),
    r("PUT", "/api/v1/sensors/{id}/labels", Tenant(Admin), true),
    r("POST", "/api/v1/commands", Tenant(Admin), true),
    r("GET", "/api/v1/events/stream", Tenant(Analyst), false),
    r("GET", "/api/v1/enrollment-tokens", Tenant(Admin), false),
    r("POST", "/api/v1/enrollment-tokens", Tenant(Admin), true),
    r("DELETE", "/api/v1/enrollment-tokens/{id}", Tenant(Admin), true),
    r("GET", "/api/v1/tokens", Tenant(Admin), false),
    r("POST", "/api/v1/tokens", Tenant(Admin), true),
    r("DELETE", "/api/v1/tokens/{id}", Tenant(Admin), true),
    r("GET", "/api/v1/audit", Tenant(Admin), false),
    r("POST", "/api/v1/config/reload", Fleet(Admin), true),
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
    pub(crate) document: Arc<std::sync::OnceLock<String>>,
    pub(crate) registry: Arc<vedette_actors::registry::Registry>,
    pub(crate) sessions: Arc<vedette_actors::sessions::Sessions>,
    pub(crate) commands: Arc<vedette_actors::fleet::commands::Commands>,
    pub(crate) liveness: Arc<vedette_actors::fleet::liveness::Liveness>,
    pub(crate) enrollments: crate::auth::enrollment::EnrollmentTokens,
    pub(crate) taps: Arc<vedette_actors::fleet::taps::Taps>,
    pub(crate) reloader: Arc<crate::reload::Reloader>,
    pub(crate) export_links: Arc<export_links::ExportLinks>,
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
    /// Registered sensors and revocations.
    pub registry: Arc<vedette_actors::registry::Registry>,
    /// Live sensor sessions.
    pub sessions: Arc<vedette_actors::sessions::Sessions>,
    /// Commands to sensors.
    pub commands: Arc<vedette_actors::fleet::commands::Commands>,
    /// Sensor activity.
    pub liveness: Arc<vedette_actors::fleet::liveness::Liveness>,
    /// Enrollment tokens.
    pub enrollments: crate::auth::enrollment::EnrollmentTokens,
    /// Live taps on sensors' telemetry.
    pub taps: Arc<vedette_actors::fleet::taps::Taps>,
    /// Re-reads the engine's config (and owns the API's rate limiter, which a reload changes).
    pub reloader: Arc<crate::reload::Reloader>,
}

/// The router and its OpenAPI document, built from the same annotated handlers (so no route
/// exists that the document lacks), every route behind the access layer.
pub fn router(parts: ApiParts) -> Router {
    router_and_doc(parts).0
}

/// [`router`] and the document it serves at `/api/v1/openapi.json`.
pub fn router_and_doc(parts: ApiParts) -> (Router, utoipa::openapi::OpenApi) {
    let limiter = parts.reloader.limiter();
    let body_limit = usize::try_from(parts.config.max_body_bytes).unwrap_or(usize::MAX);
    let upload_limit = usize::try_from(parts.config.max_upload_bytes).unwrap_or(usize::MAX);
    let document = Arc::new(std::sync::OnceLock::new());
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
        document: Arc::clone(&document),
        registry: parts.registry,
        sessions: parts.sessions,
        commands: parts.commands,
        liveness: parts.liveness,
        enrollments: parts.enrollments,
        taps: parts.taps,
        reloader: parts.reloader,
        export_links: Arc::default(),
    };
    let (schemas, paths, upload) = routes!(rules::reference_upload);
    let upload = (schemas, paths, upload.layer(axum::extract::DefaultBodyLimit::max(upload_limit)));
    let (router, doc) = OpenApiRouter::with_openapi(schema::ApiDoc::openapi())
        .routes(routes!(ops::live))
        .routes(routes!(ops::ready))
        .routes(routes!(ops::metrics_text))
        .routes(routes!(openapi_json))
        .routes(routes!(tokens::whoami))
        .routes(routes!(rules::list))
        .routes(routes!(rules::apply))
        .routes(routes!(rules::config_reload))
        .routes(routes!(rule_check::validate))
        .routes(routes!(rule_check::dry_run))
        .routes(routes!(rules::enable))
        .routes(routes!(rules::disable))
        .routes(routes!(rules::reference_list))
        .routes(routes!(rules::reference_reload))
        .routes(upload)
        .routes(routes!(sinks::list))
        .routes(routes!(sinks::test))
        .routes(routes!(sinks::dlq_list, sinks::dlq_purge))
        .routes(routes!(sinks::dlq_replay))
        .routes(routes!(alerts::query))
        .routes(routes!(alerts::export))
        .routes(routes!(export_links::create))
        .routes(routes!(export_links::download))
        .routes(routes!(stream::stream))
        .routes(routes!(alerts::histogram))
        .routes(routes!(triage::counts, triage::set_many))
        .routes(routes!(alerts::one))
        .routes(routes!(triage::set_one))
        .routes(routes!(alerts::export_one))
        .routes(routes!(sensors::list))
        .routes(routes!(sensors::one, sensors::deregister))
        .routes(routes!(sensors::revoke))
        .routes(routes!(sensors::revoke_certificate))
        .routes(routes!(commands::list, commands::command_one))
        .routes(routes!(commands::set_labels))
        .routes(routes!(commands::command_many))
        .routes(routes!(events::stream))
        .routes(routes!(enrollment::list, enrollment::create))
        .routes(routes!(enrollment::revoke))
        .routes(routes!(tokens::list, tokens::create))
        .routes(routes!(tokens::revoke))
        .routes(routes!(tokens::audit))
        .split_for_parts();
    let _ = document.set(doc.to_json().expect("the OpenAPI document serializes"));
    let router = router
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), access::layer))
        .fallback(error::not_found)
        .merge(console::router())
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .with_state(state);
    (router, doc)
}

/// `GET /api/v1/openapi.json`: this document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "health",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json", body = Object)))]
async fn openapi_json(axum::extract::State(s): axum::extract::State<ApiState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let doc = s.document.get().cloned().unwrap_or_default();
    ([(axum::http::header::CONTENT_TYPE, "application/json")], doc).into_response()
}

/// The caller of a request (set by [`access::layer`]).
pub type CallerExt = axum::Extension<Caller>;

#[cfg(test)]
mod tests {
    use super::*;

    /// The router is built only from documented handlers; this checks the document against the
    /// access table both ways, so a route can be neither undocumented nor without a rule.
    #[test]
    fn the_document_and_the_access_table_list_the_same_routes() {
        let doc = test_doc();
        let ops = |item: &utoipa::openapi::PathItem| {
            [
                ("GET", &item.get),
                ("POST", &item.post),
                ("PUT", &item.put),
                ("DELETE", &item.delete),
                ("PATCH", &item.patch),
            ]
            .into_iter()
            .filter_map(|(m, op)| op.clone().map(|op| (m, op)))
            .collect::<Vec<_>>()
        };
        let mut documented: Vec<(String, String)> = Vec::new();
        for (path, item) in &doc.paths.paths {
            documented.extend(ops(item).into_iter().map(|(m, _)| (m.to_string(), path.clone())));
        }
        documented.sort();
        let mut table: Vec<(String, String)> =
            ROUTES.iter().map(|r| (r.method.to_string(), r.path.to_string())).collect();
        table.sort();
        assert_eq!(documented, table);
        let mut ids: Vec<String> =
            doc.paths.paths.values().flat_map(ops).filter_map(|(_, op)| op.operation_id).collect();
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n, "operation ids are unique");
        assert_eq!(n, ROUTES.len(), "every operation has an id");
        // Every route behind a token documents the access layer's refusals.
        for r in ROUTES.iter().filter(|r| matches!(r.access, Access::Tenant(_) | Access::Fleet(_))) {
            let (_, op) = ops(&doc.paths.paths[r.path]).into_iter().find(|(m, _)| *m == r.method).unwrap();
            let codes: Vec<&String> = op.responses.responses.keys().collect();
            for code in ["401", "403", "429"] {
                assert!(
                    codes.iter().any(|c| *c == code),
                    "{} {} does not document {code}: {codes:?}",
                    r.method,
                    r.path
                );
            }
        }
        let json: serde_json::Value = serde_json::from_str(&doc.to_json().unwrap()).unwrap();
        assert_eq!(json["openapi"], "3.1.0");
    }

    fn test_doc() -> utoipa::openapi::OpenApi {
        // Only the document is needed: build the router over throwaway state.
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("s")).unwrap();
        let history = History::open(
            &dir.path().join("h"),
            crate::history::Retention { max_age: std::time::Duration::from_secs(60), max_bytes: 1 << 30 },
        )
        .unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let manager = Arc::new(tokio::sync::Mutex::new(rt.block_on(test_manager(&db))));
        let limiter = Arc::new(RateLimiter::new(100, 100));
        let reloader = crate::reload::Reloader::new(
            vedette_config::Config::embedded_default(),
            Arc::clone(&manager),
            limiter,
            None,
        );
        router_and_doc(ApiParts {
            metrics: Metrics::new(),
            readiness: Arc::new(|| (Vec::new(), serde_json::Map::new())),
            rules: manager,
            sinks: vedette_actors::sinks::Router::default(),
            data_dir: dir.path().to_path_buf(),
            tokens: TokenStore::open(&db).unwrap(),
            audit: AuditLog::open(&db).unwrap(),
            history: Arc::new(history),
            config: ApiConfig::default(),
            stream_stall: std::time::Duration::from_secs(1),
            registry: Arc::new(vedette_actors::registry::Registry::open(&db).unwrap()),
            sessions: Arc::default(),
            commands: Arc::new(vedette_actors::fleet::commands::Commands::open(&db).unwrap()),
            liveness: Arc::default(),
            enrollments: crate::auth::enrollment::EnrollmentTokens::open(&db).unwrap(),
            taps: Arc::default(),
            reloader: Arc::new(reloader),
        })
        .1
    }

    async fn test_manager(db: &sled::Db) -> RuleManager {
        let config = vedette_config::Config::embedded_default();
        let catalog = Arc::new(crate::engine::build_catalog(&config).unwrap());
        let compiler = vedette_pipelines::compile::Compiler::with_references(
            Arc::clone(&catalog),
            crate::reference::registry(&config),
        )
        .unwrap();
        let tables: Vec<String> = catalog.tables().map(|t| t.name().to_string()).collect();
        RuleManager::start(config, compiler, db.clone(), &tables, Metrics::new()).await.unwrap()
    }
}
