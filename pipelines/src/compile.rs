//! Rule compilation (plan once) and per-batch evaluation.
//!
//! Every telemetry table is registered as a streaming table whose single partition yields
//! "the current batch", read from the [`TaskContext`] of the execution. A rule is planned once
//! into a physical plan; evaluating it on a batch only builds a task context carrying that
//! batch and executes the plan. The compiled set holds no mutable state, so the same plans can
//! run on several batches at once.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use chrono::{DateTime, Utc};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::common::Column;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream, collect};
use datafusion::prelude::{SessionConfig, SessionContext};
use serde_json::Map;
use vedette_schemas::tables::{Catalog, RESERVED_PREFIX};

use crate::alert::{Alert, Identity, RuleMeta, alert_id};
use crate::error::{Result, RuleError};
use crate::rule::Pack;
use crate::values::{cell_micros, cell_str, cell_to_json, cell_u64};

/// Columns appended to non-aggregating rules so every alert knows its event.
const HIDDEN: [(&str, &str); 6] = [
    ("ts", "__ts"),
    ("sensor_id", "__sensor_id"),
    ("tenant", "__tenant"),
    ("host", "__host"),
    ("__seq", "__seq"),
    ("__row", "__row"),
];

/// The batch a table's partition yields during one evaluation.
#[derive(Debug)]
struct CurrentBatch {
    table: String,
    batch: RecordBatch,
}

/// A telemetry table's only partition: whatever batch the task context carries.
#[derive(Debug)]
struct CurrentBatchPartition {
    table: String,
    schema: SchemaRef,
}

impl PartitionStream for CurrentBatchPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let batches = match ctx.session_config().get_extension::<CurrentBatch>() {
            Some(cur) if cur.table == self.table => vec![cur.batch.clone()],
            _ => Vec::new(),
        };
        let stream = MemoryStream::try_new(batches, self.schema.clone(), None)
            .expect("a memory stream without projection cannot fail");
        Box::pin(stream)
    }
}

/// A rule planned once.
#[derive(Debug)]
pub struct CompiledRule {
    /// Rule metadata copied into every alert.
    pub meta: Arc<RuleMeta>,
    plan: Arc<dyn ExecutionPlan>,
}

/// The planning context: one session with every telemetry table registered.
pub struct Compiler {
    ctx: SessionContext,
    catalog: Arc<Catalog>,
}

impl Compiler {
    /// Registers every table of `catalog`.
    pub fn new(catalog: Arc<Catalog>) -> Result<Self> {
        // One partition per plan: plans are re-executed per batch and parallelised across
        // batches by the caller (see NOTES: RepartitionExec cannot be re-executed).
        let mut config = SessionConfig::new().with_target_partitions(1).with_batch_size(8192);
        // Keep source positions so planning errors can point at the offending token.
        config.options_mut().sql_parser.collect_spans = true;
        let ctx = SessionContext::new_with_config(config);
        for t in catalog.tables() {
            let part = CurrentBatchPartition { table: t.name().into(), schema: t.schema().clone() };
            let table = StreamingTable::try_new(t.schema().clone(), vec![Arc::new(part)])
                .map_err(|source| plan_error(format!("<table {}>", t.name()), source))?;
            ctx.register_table(t.name(), Arc::new(table))
                .map_err(|source| plan_error(format!("<table {}>", t.name()), source))?;
        }
        Ok(Self { ctx, catalog })
    }

    /// Plans one rule; returns the compiled rule (its table is `meta.table`).
    pub async fn compile(&self, pack: &Pack, rule: &crate::rule::RuleDef) -> Result<CompiledRule> {
        let id = || rule.id.clone();
        let known = |t: &str| self.catalog.get(t).is_ok();
        let statement = crate::validate::validate_sql(&rule.id, &rule.sql, &known)?;
        let state = self.ctx.state();
        let plan = state.statement_to_plan(statement).await.map_err(|source| plan_error(id(), source))?;
        let table = self.source_table(&rule.id, &plan)?;
        let plan = add_hidden_columns(plan).map_err(|source| plan_error(id(), source))?;
        let plan = state.create_physical_plan(&plan).await.map_err(|source| plan_error(id(), source))?;
        let meta = RuleMeta {
            id: rule.id.clone(),
            name: rule.name.clone(),
            version: pack.rule_version(rule),
            pack: pack.name.clone(),
            severity: rule.severity,
            description: rule.description.trim().to_string(),
            tags: rule.tags.clone(),
            table,
        };
        Ok(CompiledRule { meta: Arc::new(meta), plan })
    }

    /// Compiles every enabled rule of `pack`, grouped by table. All or nothing.
    pub async fn compile_pack(&self, pack: &Pack) -> Result<BTreeMap<String, Vec<Arc<CompiledRule>>>> {
        let mut by_table: BTreeMap<String, Vec<Arc<CompiledRule>>> = BTreeMap::new();
        for rule in pack.rules.iter().filter(|r| r.enabled) {
            let c = self.compile(pack, rule).await?;
            by_table.entry(c.meta.table.clone()).or_default().push(Arc::new(c));
        }
        Ok(by_table)
    }

    fn source_table(&self, rule: &str, plan: &LogicalPlan) -> Result<String> {
        let mut tables = Vec::new();
        plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node {
                let name = scan.table_name.table().to_string();
                if self.catalog.get(&name).is_ok() && !tables.contains(&name) {
                    tables.push(name);
                }
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .map_err(|source| plan_error(rule.into(), source))?;
        let err = |reason: String| RuleError::SourceTable {
            rule: rule.into(),
            reason,
            known: self.catalog.names().join(", "),
        };
        match tables.len() {
            1 => Ok(tables.remove(0)),
            0 => Err(err("reads no telemetry table".into())),
            _ => Err(err(format!("reads several telemetry tables ({}); a rule reads exactly one", tables.join(", ")))),
        }
    }

    /// Base task context; evaluation clones it with the current batch attached.
    pub fn task_context(&self) -> TaskContext {
        TaskContext::from(&self.ctx)
    }
}

/// Appends `__ts`, `__sensor_id`, … to a non-aggregating rule's projection so each result row
/// can be traced to its event. Aggregating rules keep their plan.
fn add_hidden_columns(plan: LogicalPlan) -> datafusion::error::Result<LogicalPlan> {
    let aggregating = plan.exists(|n| {
        Ok(matches!(
            n,
            LogicalPlan::Aggregate(_) | LogicalPlan::Window(_) | LogicalPlan::Distinct(_) | LogicalPlan::Union(_)
        ))
    })?;
    let LogicalPlan::Projection(p) = &plan else { return Ok(plan) };
    if aggregating {
        return Ok(plan);
    }
    let input_schema = p.input.schema();
    let mut exprs = p.expr.clone();
    for (source, alias) in HIDDEN {
        if plan.schema().has_column_with_unqualified_name(alias) {
            continue;
        }
        if let Ok((qualifier, field)) = input_schema.qualified_field_with_unqualified_name(source) {
            exprs.push(Expr::Column(Column::new(qualifier.cloned(), field.name())).alias(alias));
        }
    }
    LogicalPlanBuilder::from(Arc::clone(&p.input)).project(exprs)?.build()
}

/// The compiled rules of one table: what a rule worker runs on each batch.
#[derive(Clone)]
pub struct TableRules {
    table: String,
    base: Arc<TaskContext>,
    rules: Vec<Arc<CompiledRule>>,
}

impl std::fmt::Debug for TableRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableRules").field("table", &self.table).field("rules", &self.rules.len()).finish()
    }
}

impl TableRules {
    /// Groups already compiled rules of `table`.
    pub fn new(compiler: &Compiler, table: &str, rules: Vec<Arc<CompiledRule>>) -> Self {
        Self { table: table.into(), base: Arc::new(compiler.task_context()), rules }
    }

    /// Table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Compiled rules.
    pub fn rules(&self) -> &[Arc<CompiledRule>] {
        &self.rules
    }

    /// Runs every rule on `batch`. A rule that fails is reported in [`Evaluation::errors`]
    /// and does not stop the others.
    pub async fn evaluate(&self, batch: &RecordBatch, detected_at: DateTime<Utc>) -> Evaluation {
        let mut eval = Evaluation::default();
        if batch.num_rows() == 0 || self.rules.is_empty() {
            return eval;
        }
        let config = self
            .base
            .session_config()
            .clone()
            .with_extension(Arc::new(CurrentBatch { table: self.table.clone(), batch: batch.clone() }));
        let task = Arc::new(task_with_config(&self.base, config));
        for rule in &self.rules {
            let started = std::time::Instant::now();
            match collect(Arc::clone(&rule.plan), Arc::clone(&task)).await {
                Ok(out) => {
                    for b in &out {
                        rows_to_alerts(&rule.meta, b, detected_at, &mut eval.alerts);
                    }
                }
                Err(source) => eval.errors.push(RuleError::Eval { rule: rule.meta.id.clone(), source }),
            }
            eval.timings.push((Arc::clone(&rule.meta), started.elapsed()));
        }
        eval
    }
}

/// Outcome of evaluating a table's rules on one batch.
#[derive(Debug, Default)]
pub struct Evaluation {
    /// Alerts, in rule order then row order.
    pub alerts: Vec<Alert>,
    /// Rules that failed on this batch.
    pub errors: Vec<RuleError>,
    /// Time spent per rule.
    pub timings: Vec<(Arc<RuleMeta>, std::time::Duration)>,
}

/// A copy of `base` whose session config is `config` (TaskContext is not `Clone`).
fn task_with_config(base: &TaskContext, config: SessionConfig) -> TaskContext {
    TaskContext::new(
        base.task_id(),
        base.session_id(),
        config,
        base.scalar_functions().clone(),
        base.higher_order_functions().clone(),
        base.aggregate_functions().clone(),
        base.window_functions().clone(),
        base.runtime_env(),
    )
}

fn rows_to_alerts(meta: &Arc<RuleMeta>, batch: &RecordBatch, detected_at: DateTime<Utc>, out: &mut Vec<Alert>) {
    let schema = batch.schema();
    let col = |name: &str| schema.index_of(name).ok().map(|i| batch.column(i).as_ref());
    let (ts, sensor, tenant, host) = (
        col("__ts").or_else(|| col("ts")),
        col("__sensor_id").or_else(|| col("sensor_id")),
        col("__tenant").or_else(|| col("tenant")),
        col("__host").or_else(|| col("host")),
    );
    let (seq, row_idx) = (col("__seq"), col("__row"));
    let visible: Vec<usize> =
        (0..schema.fields().len()).filter(|i| !schema.field(*i).name().starts_with(RESERVED_PREFIX)).collect();
    for i in 0..batch.num_rows() {
        let mut row = Map::new();
        for &c in &visible {
            row.insert(schema.field(c).name().clone(), cell_to_json(batch.column(c).as_ref(), i));
        }
        let ts_micros = ts.and_then(|a| cell_micros(a, i)).unwrap_or_else(|| detected_at.timestamp_micros());
        let sensor_id = sensor.and_then(|a| cell_str(a, i)).map(str::to_string);
        let tenant = tenant.and_then(|a| cell_str(a, i)).map(str::to_string);
        let identity = match (&sensor_id, seq.and_then(|a| cell_u64(a, i)), row_idx.and_then(|a| cell_u64(a, i))) {
            (Some(s), Some(seq), Some(r)) => Identity::Event { sensor_id: s, seq, row: r },
            _ => Identity::Row { ts_micros, row: &row },
        };
        let alert_id = alert_id(tenant.as_deref().unwrap_or(""), meta, identity);
        out.push(Alert {
            alert_id,
            rule_id: meta.id.clone(),
            rule_name: meta.name.clone(),
            rule_version: meta.version,
            pack: meta.pack.clone(),
            severity: meta.severity,
            tags: meta.tags.clone(),
            description: meta.description.clone(),
            sensor_id,
            tenant,
            host: host.and_then(|a| cell_str(a, i)).map(str::to_string),
            table: meta.table.clone(),
            ts: crate::values::micros_to_datetime(ts_micros),
            detected_at,
            row,
        });
    }
}

#[cfg(test)]
#[path = "compile/tests.rs"]
mod tests;

/// A planning error, with the position DataFusion's diagnostic points at (if any).
fn plan_error(rule: String, source: datafusion::error::DataFusionError) -> RuleError {
    let at = source
        .diagnostic()
        .and_then(|d| d.span)
        .map(|s| format!(" (line {}, column {})", s.start.line, s.start.column))
        .unwrap_or_default();
    RuleError::Plan { rule, at, source }
}
