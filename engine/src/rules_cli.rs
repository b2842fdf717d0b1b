//! Analyst tooling: `vedette keys generate`, `vedette rules sign|verify|validate|test`.

use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value, json};
use vedette_pipelines::compile::{Compiler, TableRules};
use vedette_pipelines::signature::{PublicKey, SecretKey};
use vedette_schemas::decode::{Identity, decode_frame};
use vedette_schemas::frame::{DataFrame, Encoding};
use vedette_schemas::tables::{Catalog, RESERVED_PREFIX};

use crate::error::{EngineError, Result};
use crate::ruleset::{read_pack, signature_path};

fn write_file(path: &Path, text: &str, secret: bool) -> Result<()> {
    crate::pki::write_file(path, text, secret).map_err(EngineError::io(format!("writing {}", path.display())))
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(EngineError::io(format!("reading {}", path.display())))
}

/// Writes `PREFIX.key` (mode 600) and `PREFIX.pub`; returns the key id.
pub fn generate_keys(prefix: &Path) -> Result<String> {
    let mut seed = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed).map_err(|_| EngineError::Io {
        what: "system randomness".into(),
        source: std::io::Error::other("unavailable"),
    })?;
    let sk = SecretKey::from_seed(seed);
    let with_ext = |ext: &str| {
        let mut s = prefix.as_os_str().to_owned();
        s.push(ext);
        std::path::PathBuf::from(s)
    };
    write_file(&with_ext(".key"), &sk.to_text(), true)?;
    write_file(&with_ext(".pub"), &sk.public().to_text(), false)?;
    Ok(sk.public().key_id())
}

/// Signs a pack file; writes `NAME.yaml.sig` beside `NAME.yaml` and returns its path.
pub fn sign_pack(pack_path: &Path, key_path: &Path) -> Result<std::path::PathBuf> {
    let pack = read_pack(pack_path)?;
    let sk = SecretKey::from_text(&key_path.display().to_string(), &read_text(key_path)?)?;
    let sig_path = signature_path(pack_path);
    write_file(&sig_path, &sk.sign(&pack), false)?;
    Ok(sig_path)
}

/// Verifies a pack file's signature against one public key file.
pub fn verify_pack(pack_path: &Path, pub_path: &Path) -> Result<String> {
    let pack = read_pack(pack_path)?;
    let pk = PublicKey::from_text(&pub_path.display().to_string(), &read_text(pub_path)?)?;
    crate::ruleset::check_signature(pack_path, &pack, &[pk])
}

/// The planning context of the analyst tools: the built-in tables, plus — with a config —
/// its extra telemetry tables and its reference tables (loaded from their files).
fn tool_compiler(config: Option<&vedette_config::Config>) -> Result<(Arc<Catalog>, Compiler)> {
    let Some(config) = config else {
        let catalog = Arc::new(Catalog::builtin());
        return Ok((Arc::clone(&catalog), Compiler::new(catalog)?));
    };
    let catalog = Arc::new(crate::engine::build_catalog(config)?);
    let refs = crate::reference::registry(config);
    for def in &config.reference_tables {
        crate::reference::load(config, &refs, def)?;
    }
    Ok((Arc::clone(&catalog), Compiler::with_references(catalog, refs)?))
}

/// Reads and compiles every rule of a pack; returns every problem — YAML and SQL together,
/// each located in the file (empty = valid).
pub async fn validate_pack(
    pack_path: &Path,
    config: Option<&vedette_config::Config>,
) -> Result<Vec<vedette_pipelines::pack_check::Problem>> {
    let text = read_text(pack_path)?;
    let (_, compiler) = tool_compiler(config)?;
    Ok(vedette_pipelines::pack_check::check(&compiler, &pack_path.display().to_string(), &text).await.1)
}

/// A problem in the events file of `rules test`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct EventError {
    /// 1-based line in the events file.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// Key naming an event's table in a multi-table events file.
pub const TABLE_KEY: &str = "_table";

/// What `vedette rules test` reports.
#[derive(Debug)]
pub struct TestRun {
    /// The alerts, or every malformed event.
    pub alerts: std::result::Result<Vec<Value>, Vec<EventError>>,
    /// Columns of the events their table does not have ([`unknown_columns`]).
    pub warnings: Vec<EventError>,
}

/// Runs `pack` over the events of a JSONL file with the engine's evaluation code (batches of
/// `batch_rows`): [`run_test`] with the tool compiler of `config`, plus [`unknown_columns`].
pub async fn test_pack(
    pack_path: &Path,
    events_path: &Path,
    table: Option<&str>,
    batch_rows: usize,
    config: Option<&vedette_config::Config>,
) -> Result<TestRun> {
    let pack = read_pack(pack_path)?;
    let (_, compiler) = tool_compiler(config)?;
    let text = read_text(events_path)?;
    let alerts = run_test(&pack, &text, table, batch_rows, &compiler).await?;
    let warnings = unknown_columns(&pack, &text, table, &compiler).await?;
    Ok(TestRun { alerts, warnings })
}

/// Runs `pack` over JSONL events `text` with the engine's evaluation code (batches of
/// `batch_rows`); `vedette rules test` and the API's dry run (`POST /api/v1/rules/test`) both
/// come here. Events belong to `table`, or — when the pack reads one table — to that table;
/// otherwise each line names its table with `"_table"`. Returns one stable JSON object per
/// alert (tables in name order, then production order), or every malformed event.
pub async fn run_test(
    pack: &vedette_pipelines::rule::Pack,
    text: &str,
    table: Option<&str>,
    batch_rows: usize,
    compiler: &Compiler,
) -> Result<std::result::Result<Vec<Value>, Vec<EventError>>> {
    let catalog = Arc::clone(compiler.catalog());
    let mut by_table = compiler.compile_pack(pack).await?;
    let fixed = match table {
        Some(t) => Some(catalog.get(t)?.name().to_string()),
        None if by_table.len() == 1 => by_table.keys().next().cloned(),
        None => None,
    };
    let mut errors = Vec::new();
    // Per table: (file line, event text), in file order.
    let mut per_table: std::collections::BTreeMap<String, Vec<(usize, String)>> = Default::default();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let line_no = i + 1;
        let target = match &fixed {
            Some(t) => Ok((t.clone(), line.to_string())),
            None => split_table(line, &catalog),
        };
        match target {
            Ok((t, row)) => per_table.entry(t).or_default().push((line_no, row)),
            Err(reason) => errors.push(EventError { line: line_no, reason }),
        }
    }
    let identity = Identity { sensor_id: "rules-test", tenant: "default", default_host: None, trust_rows: true };
    let mut out = Vec::new();
    // A fixed processing time: sensors never count as idle, so output depends on input only.
    let now = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
    for (table, lines) in per_table {
        // The events' own times, not the clock's: no clock-skew bound.
        let rules =
            TableRules::new(compiler, &table, by_table.remove(&table).unwrap_or_default()).with_clock_skew(None, None);
        let table_def = Arc::clone(catalog.get(&table)?);
        for (chunk_no, chunk) in lines.chunks(batch_rows.max(1)).enumerate() {
            let payload: String = chunk.iter().map(|(_, l)| format!("{l}\n")).collect();
            let frame = DataFrame {
                seq: chunk_no as u64 + 1,
                table: &table,
                encoding: Encoding::Ndjson,
                payload: payload.as_bytes(),
            };
            let decoded = decode_frame(&table_def, &frame, &identity, usize::MAX)?;
            for e in &decoded.errors {
                let column = e.column.as_deref().map(|c| format!("column `{c}`: ")).unwrap_or_default();
                errors.push(EventError { line: chunk[e.row as usize].0, reason: format!("{column}{}", e.reason) });
            }
            if let Some(batch) = decoded.batch {
                let eval = rules.evaluate(&batch, now).await;
                out.extend(commit(&rules, eval)?);
            }
        }
        // End of input: the watermark moves past every open window.
        out.extend(commit(&rules, rules.tick(now, true).await)?);
    }
    errors.sort_by_key(|e| e.line);
    Ok(if errors.is_empty() { Ok(out) } else { Err(errors) })
}

/// Columns of the events that their table does not have: the decoder ignores them, so a
/// misspelt column would let a test pass while testing nothing. One warning per table and
/// column, naming the first lines it appears on. Events are assigned to tables as
/// [`run_test`] does; lines that are not JSON objects are left to its errors.
pub async fn unknown_columns(
    pack: &vedette_pipelines::rule::Pack,
    text: &str,
    table: Option<&str>,
    compiler: &Compiler,
) -> Result<Vec<EventError>> {
    let catalog = Arc::clone(compiler.catalog());
    let by_table = compiler.compile_pack(pack).await?;
    let fixed = match table {
        Some(t) => Some(t.to_string()),
        None if by_table.len() == 1 => by_table.keys().next().cloned(),
        None => None,
    };
    // (table, column) → (first lines, count)
    let mut unknown: std::collections::BTreeMap<(String, String), (Vec<usize>, usize)> = Default::default();
    for (i, line) in text.lines().enumerate() {
        let Ok(Value::Object(mut event)) = serde_json::from_str::<Value>(line) else { continue };
        let name = match (&fixed, event.remove(TABLE_KEY)) {
            (Some(t), _) => t.clone(),
            (None, Some(Value::String(t))) => t,
            _ => continue,
        };
        let Ok(def) = catalog.get(&name) else { continue };
        for key in event.keys() {
            if !def.columns().iter().any(|c| &c.name == key) || key.starts_with(RESERVED_PREFIX) {
                let e = unknown.entry((name.clone(), key.clone())).or_default();
                if e.0.len() < 3 {
                    e.0.push(i + 1);
                }
                e.1 += 1;
            }
        }
    }
    Ok(unknown
        .into_iter()
        .map(|((table, column), (lines, count))| {
            let at: Vec<String> = lines.iter().map(usize::to_string).collect();
            let more = if count > lines.len() { ", …" } else { "" };
            EventError {
                line: lines[0],
                reason: format!(
                    "`{column}` is not a column of `{table}`: ignored in {count} event(s) (lines {}{more}); \
                     the table's columns: {}",
                    at.join(", "),
                    catalog
                        .get(&table)
                        .map(|d| d
                            .columns()
                            .iter()
                            .filter(|c| !c.name.starts_with(RESERVED_PREFIX))
                            .map(|c| c.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", "))
                        .unwrap_or_default()
                ),
            }
        })
        .collect())
}

/// Takes `"_table"` out of an event line: (table, the event without it).
fn split_table(line: &str, catalog: &Catalog) -> std::result::Result<(String, String), String> {
    let mut v: Map<String, Value> = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let table = match v.remove(TABLE_KEY) {
        Some(Value::String(t)) => t,
        _ => {
            return Err(format!(
                "the pack reads several tables: name this event's table with \"{TABLE_KEY}\" (or pass --table)"
            ));
        }
    };
    catalog.get(&table).map_err(|e| e.to_string())?;
    Ok((table, Value::Object(v).to_string()))
}

fn commit(rules: &TableRules, eval: vedette_pipelines::compile::Evaluation) -> Result<Vec<Value>> {
    if let Some(e) = eval.errors.into_iter().next() {
        return Err(e.into());
    }
    rules.commit(eval.window_updates);
    Ok(eval.alerts.iter().map(stable_alert).collect())
}

/// The stable subset of an alert printed by `rules test` (no wall-clock fields).
fn stable_alert(a: &vedette_pipelines::alert::Alert) -> Value {
    let mut o = Map::new();
    o.insert("rule_id".into(), json!(a.rule_id));
    if let (Some(s), Some(e)) = (a.window_start, a.window_end) {
        o.insert("window_start".into(), json!(s));
        o.insert("window_end".into(), json!(e));
    }
    o.insert("ts".into(), json!(a.ts));
    o.insert("sensor_id".into(), json!(a.sensor_id));
    o.insert("row".into(), Value::Object(a.row.clone()));
    Value::Object(o)
}
