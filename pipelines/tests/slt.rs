//! Rule-semantics tests written as sqllogictest files (`tests/slt/*.slt` at the repo root).
//!
//! Statements understood by this harness:
//! * `CREATE RULE <id> [LATENESS <duration>] AS <select>` — compile a rule;
//! * `EVENTS <table>` followed by one JSON object per line — one batch through every rule;
//! * `FLUSH` — end of input: the watermark passes every open window;
//! * query `ALERTS` — alerts since the last `ALERTS`: rule id, window start (or NULL), row JSON,
//!   sorted; query `LATE <rule>` — late rows counted by a windowed rule.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};
use vedette_pipelines::compile::{Compiler, Evaluation, TableRules};
use vedette_pipelines::rule::{Pack, RuleDef};
use vedette_schemas::decode::{Identity, decode_frame};
use vedette_schemas::frame::{DataFrame, Encoding};
use vedette_schemas::tables::Catalog;

#[derive(Debug)]
struct Error(String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

fn err(e: impl std::fmt::Display) -> Error {
    Error(e.to_string())
}

struct RuleDb {
    catalog: Arc<Catalog>,
    compiler: Compiler,
    rules: Vec<RuleDef>,
    tables: BTreeMap<String, TableRules>,
    alerts: Vec<Vec<String>>,
    seq: u64,
}

const NOW: DateTime<Utc> = DateTime::<Utc>::UNIX_EPOCH;

impl RuleDb {
    fn new() -> Self {
        let catalog = Arc::new(Catalog::builtin());
        Self {
            compiler: Compiler::new(Arc::clone(&catalog)).expect("compiler"),
            catalog,
            rules: Vec::new(),
            tables: BTreeMap::new(),
            alerts: Vec::new(),
            seq: 0,
        }
    }

    fn take(&mut self, table: &TableRules, eval: Evaluation) -> Result<(), Error> {
        if let Some(e) = eval.errors.into_iter().next() {
            return Err(err(e));
        }
        table.commit(eval.window_updates);
        for a in eval.alerts {
            let window =
                a.window_start.map_or("NULL".to_string(), |w| w.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));
            self.alerts.push(vec![a.rule_id, window, serde_json::Value::Object(a.row).to_string()]);
        }
        Ok(())
    }

    async fn create_rule(&mut self, rest: &str) -> Result<DBOutput<DefaultColumnType>, Error> {
        let (head, sql) = rest.split_once(" AS ").ok_or_else(|| err("CREATE RULE <id> [LATENESS <d>] AS <select>"))?;
        let mut words = head.split_whitespace();
        let id = words.next().ok_or_else(|| err("missing rule id"))?.to_string();
        let lateness = match (words.next(), words.next()) {
            (Some(w), Some(d)) if w.eq_ignore_ascii_case("LATENESS") => {
                Some(vedette_config::duration::parse(d).map_err(err)?)
            }
            (None, _) => None,
            _ => return Err(err("expected LATENESS <duration>")),
        };
        let rule = RuleDef { name: "slt".into(), lateness, ..RuleDef::new(id, sql.trim()) };
        let pack =
            Pack { name: "slt".into(), version: 1, description: String::new(), author: String::new(), rules: vec![] };
        self.compiler.compile(&pack, &rule).await.map_err(err)?;
        self.rules.push(rule);
        let pack = Pack { rules: self.rules.clone(), ..pack };
        let compiled = self.compiler.compile_pack(&pack).await.map_err(err)?;
        // The scripts' event times are fixed, not the clock's: no clock-skew bound (a replay).
        self.tables = compiled
            .into_iter()
            .map(|(t, r)| (t.clone(), TableRules::new(&self.compiler, &t, r).with_clock_skew(None, None)))
            .collect();
        Ok(DBOutput::StatementComplete(0))
    }

    async fn events(&mut self, table: &str, rows: &str) -> Result<DBOutput<DefaultColumnType>, Error> {
        self.seq += 1;
        let def = Arc::clone(self.catalog.get(table).map_err(err)?);
        let frame = DataFrame { seq: self.seq, table, encoding: Encoding::Ndjson, payload: rows.as_bytes() };
        let id = Identity { sensor_id: "s1", tenant: "default", default_host: None, trust_rows: true };
        let decoded = decode_frame(&def, &frame, &id, usize::MAX).map_err(err)?;
        if let Some(e) = decoded.errors.first() {
            return Err(err(format!("row {}: {}", e.row, e.reason)));
        }
        if let (Some(batch), Some(rules)) = (decoded.batch, self.tables.get(table).cloned()) {
            let eval = rules.evaluate(&batch, NOW).await;
            self.take(&rules, eval)?;
        }
        Ok(DBOutput::StatementComplete(decoded.accepted.into()))
    }
}

#[async_trait::async_trait]
impl AsyncDB for RuleDb {
    type Error = Error;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, Error> {
        let sql = sql.trim();
        let (first, rest) = sql.split_once(char::is_whitespace).unwrap_or((sql, ""));
        match first.to_ascii_uppercase().as_str() {
            "CREATE" => {
                let rest = rest.trim_start();
                let rest = rest.strip_prefix("RULE").ok_or_else(|| err("expected CREATE RULE"))?;
                self.create_rule(rest.trim()).await
            }
            "EVENTS" => {
                let (table, rows) = rest.split_once('\n').unwrap_or((rest, ""));
                self.events(table.trim(), rows).await
            }
            "FLUSH" => {
                for rules in self.tables.values().cloned().collect::<Vec<_>>() {
                    let eval = rules.tick(NOW, true).await;
                    self.take(&rules, eval)?;
                }
                Ok(DBOutput::StatementComplete(0))
            }
            "ALERTS" => {
                let mut rows = std::mem::take(&mut self.alerts);
                rows.sort();
                Ok(DBOutput::Rows { types: vec![DefaultColumnType::Text; 3], rows })
            }
            "LATE" => {
                let rule = rest.trim();
                let late =
                    self.tables.values().flat_map(|t| t.late_rows()).find(|(r, _)| r == rule).map_or(0, |(_, n)| n);
                Ok(DBOutput::Rows { types: vec![DefaultColumnType::Integer], rows: vec![vec![late.to_string()]] })
            }
            other => Err(err(format!("unknown statement `{other}`"))),
        }
    }

    async fn shutdown(&mut self) {}
}

fn main() {
    // Read at run time (cargo sets it, and runs tests in the package dir): a compile-time path
    // goes stale when a shared target dir is reused by a clone in another place.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| ".".into(), std::path::PathBuf::from);
    let dir = manifest.join("../tests/slt");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/slt exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let mut failed = 0;
    for f in &files {
        let mut runner = sqllogictest::Runner::new(|| async { Ok::<_, Error>(RuleDb::new()) });
        match rt.block_on(runner.run_file_async(f)) {
            Ok(()) => println!("slt {} ... ok", f.display()),
            Err(e) => {
                failed += 1;
                println!("slt {} ... FAILED\n{e}", f.display());
            }
        }
    }
    println!("{} passed, {failed} failed", files.len() - failed);
    if failed > 0 {
        std::process::exit(1);
    }
}
