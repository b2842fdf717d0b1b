//! Trying rules out before shipping them: validate a pack (every error with its position) and
//! dry-run it over sample events — the code of `vedette rules validate|test`, with the running
//! engine's tables and reference tables, in a sandbox compiler (nothing here touches the
//! running rules).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use vedette_pipelines::RuleError;
use vedette_pipelines::compile::Compiler;
use vedette_pipelines::error::ErrorIn;
use vedette_pipelines::pack_check;
use vedette_pipelines::rule::Pack;

use super::ApiState;
use super::error::{ApiError, ApiResult, json_body};
use super::schema::{AuthErrors, ErrorBody};
use crate::error::EngineError;
use crate::rules_cli::EventError;

/// Rows per batch of a dry run (as `vedette rules test` by default).
const BATCH_ROWS: usize = 1024;

/// A pack to check.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PackText {
    /// The pack, as YAML (or JSON, which is YAML).
    pub pack: String,
}

/// A pack and the events to run it over.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DryRun {
    /// The pack, as YAML (or JSON).
    pub pack: String,
    /// Events, one JSON object per line.
    pub events: String,
    /// The events' table; by default the one table the pack reads (else each event names
    /// its table with `"_table"`).
    #[serde(default)]
    pub table: Option<String>,
}

/// One problem of a pack.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PackProblem {
    /// The rule, when the problem is one rule's.
    pub rule: Option<String>,
    /// What is wrong.
    pub message: String,
    /// Where `line` and `column` count from: `sql` (the rule's SQL text) or `pack`.
    #[schema(value_type = Option<String>)]
    pub r#in: Option<String>,
    /// 1-based line.
    pub line: Option<u64>,
    /// 1-based column.
    pub column: Option<u64>,
    /// 1-based line in the pack text, when known (also for errors inside a rule's SQL).
    pub pack_line: Option<u64>,
    /// 1-based column in the pack text, when known.
    pub pack_column: Option<u64>,
}

impl From<&pack_check::Problem> for PackProblem {
    fn from(p: &pack_check::Problem) -> Self {
        Self {
            rule: p.rule.clone(),
            pack_line: p.at.map(|a| a.0),
            pack_column: p.at.map(|a| a.1),
            ..Self::from(&p.error)
        }
    }
}

impl From<&RuleError> for PackProblem {
    fn from(e: &RuleError) -> Self {
        let pos = e.position();
        Self {
            rule: e.rule().map(str::to_string),
            message: e.to_string(),
            r#in: pos.map(|(w, _, _)| match w {
                ErrorIn::Sql => "sql".into(),
                ErrorIn::Pack => "pack".into(),
            }),
            line: pos.map(|p| p.1),
            column: pos.map(|p| p.2),
            pack_line: pos.filter(|p| p.0 == ErrorIn::Pack).map(|p| p.1),
            pack_column: pos.filter(|p| p.0 == ErrorIn::Pack).map(|p| p.2),
        }
    }
}

/// The outcome of a validation.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Validation {
    /// Whether every rule compiles.
    pub valid: bool,
    /// Every problem found.
    pub errors: Vec<PackProblem>,
}

/// The outcome of a dry run.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DryRunResult {
    /// Whether the pack compiled and every event was read.
    pub ok: bool,
    /// The pack's problems (then nothing ran).
    pub errors: Vec<PackProblem>,
    /// Events that could not be read (then no alerts are reported).
    pub event_errors: Vec<EventError>,
    /// Columns of the events their table does not have: ignored, so the rules never saw them
    /// (a misspelt column makes a test pass while testing nothing).
    pub warnings: Vec<EventError>,
    /// The alerts the pack produced: rule, time, sensor, window and the result row — as
    /// `vedette rules test` prints them.
    #[schema(value_type = Vec<Object>)]
    pub alerts: Vec<serde_json::Value>,
}

/// The pack and every problem of it (YAML and SQL together; the plans stay cached in
/// `compiler`).
async fn check(compiler: &Compiler, text: &str) -> (Option<Pack>, Vec<PackProblem>) {
    let (pack, problems) = pack_check::check(compiler, "pack", text).await;
    (pack, problems.iter().map(PackProblem::from).collect())
}

/// `POST /api/v1/rules/validate`: compiles a pack against the running engine's tables.
#[utoipa::path(post, path = "/api/v1/rules/validate", tag = "rules", operation_id = "validate_pack",
    description = "Needs an analyst. Changes nothing. Errors carry line and column where the \
        parser or planner knows them (`in`: `sql` counts inside the rule's SQL, `pack` inside the pack text).",
    request_body = PackText,
    responses((status = 200, description = "Valid or not, with every problem", body = Validation),
        (status = 413, description = "Larger than api.max_body_bytes", body = ErrorBody),
        (status = 422, description = "Malformed body", body = ErrorBody), AuthErrors), security(("bearer" = [])))]
pub async fn validate(
    State(s): State<ApiState>,
    body: Result<axum::Json<PackText>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let req = json_body(body)?;
    // Bound first: the rule manager's lock is not held while planning.
    let compiler = s.rules.lock().await.sandbox_compiler()?;
    let (_, errors) = check(&compiler, &req.pack).await;
    Ok(axum::Json(Validation { valid: errors.is_empty(), errors }).into_response())
}

/// `POST /api/v1/rules/test`: a dry run of a pack over sample events.
#[utoipa::path(post, path = "/api/v1/rules/test", tag = "rules", operation_id = "dry_run_pack",
    description = "Needs an analyst. Changes nothing, sends nothing: the same evaluation as \
        `vedette rules test`, with the running engine's tables and reference tables.",
    request_body = DryRun,
    responses((status = 200, description = "Alerts, or the problems that stopped the run", body = DryRunResult),
        (status = 400, description = "Unknown table", body = ErrorBody),
        (status = 413, description = "Larger than api.max_body_bytes", body = ErrorBody),
        (status = 422, description = "Malformed body", body = ErrorBody), AuthErrors), security(("bearer" = [])))]
pub async fn dry_run(
    State(s): State<ApiState>,
    body: Result<axum::Json<DryRun>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let req = json_body(body)?;
    let fail = |errors: Vec<PackProblem>| DryRunResult {
        ok: false,
        errors,
        event_errors: Vec::new(),
        warnings: Vec::new(),
        alerts: Vec::new(),
    };
    // One sandbox compiler: the run reuses the plans the check built.
    let compiler = s.rules.lock().await.sandbox_compiler()?;
    let pack = match check(&compiler, &req.pack).await {
        (Some(pack), errors) if errors.is_empty() => pack,
        (_, errors) => return Ok(axum::Json(fail(errors)).into_response()),
    };
    let warnings = match crate::rules_cli::unknown_columns(&pack, &req.events, req.table.as_deref(), &compiler).await {
        Ok(w) => w,
        Err(e) => return Err(e.into()),
    };
    let result = match crate::rules_cli::run_test(&pack, &req.events, req.table.as_deref(), BATCH_ROWS, &compiler).await
    {
        Ok(Ok(alerts)) => DryRunResult { ok: true, errors: Vec::new(), event_errors: Vec::new(), warnings, alerts },
        Ok(Err(event_errors)) => {
            DryRunResult { ok: false, errors: Vec::new(), event_errors, warnings, alerts: Vec::new() }
        }
        Err(EngineError::Rules(e)) if matches!(e, RuleError::Eval { .. }) => fail(vec![PackProblem::from(&e)]),
        Err(e @ EngineError::Schema(_)) => return Err(ApiError::bad_request(e.to_string())),
        Err(e) => return Err(e.into()),
    };
    Ok(axum::Json(result).into_response())
}
