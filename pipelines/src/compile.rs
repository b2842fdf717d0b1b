//! Rule compilation (plan once) and per-batch evaluation.
//!
//! Every telemetry table is registered as a streaming table whose single partition yields
//! "the current batch", read from the [`TaskContext`] of the execution. A rule is planned once
//! into a physical plan; evaluating it on a batch only builds a task context carrying that
//! batch and executes the plan. The compiled set holds no mutable state, so the same plans can
//! run on several batches at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use chrono::{DateTime, Utc};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::common::Column;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, when};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream, collect};
use datafusion::prelude::{SessionConfig, SessionContext};
use serde_json::Map;
use vedette_schemas::tables::{Catalog, RESERVED_PREFIX};

use crate::alert::{Alert, Identity, RuleMeta, alert_id};
use crate::error::{Result, RuleError};
use crate::filter::{Rows, RuleFilter, SharedFilter};
use crate::reference::RefTables;
use crate::rule::Pack;
use crate::values::{cell_micros, cell_str, cell_to_json, cell_u64};
use crate::window::checkpoint::{Stored, WindowWrite};
use crate::window::{Clock, DEFAULT_LATENESS_US, WindowPlans, WindowSpec, WindowState, find_window};

/// Hidden output column carrying a windowed result row's window start.
pub const WINDOW_START: &str = "__window_start";
/// Hidden output column carrying a session window's newest event time (its end is that plus
/// the gap).
pub const SESSION_LAST_EVENT: &str = "__window_last";

/// Columns appended to non-aggregating rules so every alert knows its event.
const HIDDEN: [(&str, &str); 6] = [
    ("ts", "__ts"),
    ("sensor_id", "__sensor_id"),
    ("tenant", "__tenant"),
    ("host", "__host"),
    ("__seq", "__seq"),
    ("__row", "__row"),
];

/// Batches handed to one execution, by source name (a table name, or an internal stage of a
/// windowed rule). Carried in the task context, so compiled plans hold no data.
#[derive(Debug, Default)]
pub(crate) struct Injected(pub(crate) std::collections::HashMap<String, Vec<RecordBatch>>);

/// A source whose only partition yields whatever the task context injects under `key`.
#[derive(Debug)]
pub(crate) struct InjectedPartition {
    pub(crate) key: String,
    pub(crate) schema: SchemaRef,
}

impl PartitionStream for InjectedPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let batches = match self.key.strip_prefix(crate::reference::KEY_PREFIX) {
            Some(name) => ctx
                .session_config()
                .get_extension::<RefTables>()
                .map(|r| r.rows(name).as_ref().clone())
                .unwrap_or_default(),
            None => ctx
                .session_config()
                .get_extension::<Injected>()
                .and_then(|i| i.0.get(&self.key).cloned())
                .unwrap_or_default(),
        };
        let stream = MemoryStream::try_new(batches, self.schema.clone(), None)
            .expect("a memory stream without projection cannot fail");
        Box::pin(stream)
    }
}

/// A task context like `base` carrying `injected`.
pub(crate) fn task_with(base: &TaskContext, injected: Injected) -> Arc<TaskContext> {
    let config = base.session_config().clone().with_extension(Arc::new(injected));
    Arc::new(task_with_config(base, config))
}

/// A rule planned once.
#[derive(Debug)]
pub struct CompiledRule {
    /// Rule metadata copied into every alert.
    pub meta: Arc<RuleMeta>,
    /// Whether the pack enables the rule (`enabled:`); the engine may override it at runtime.
    pub enabled_in_pack: bool,
    /// Digest of what determines the plan and its state (SQL, lateness): rules with the same
    /// fingerprint share one plan, and window state survives a re-apply with the same one.
    pub fingerprint: String,
    plans: Arc<Planned>,
}

/// The physical side of a rule, shared by every rule with the same fingerprint.
#[derive(Debug)]
struct Planned {
    table: String,
    plan: Arc<dyn ExecutionPlan>,
    /// Incremental stages, for windowed rules.
    window: Option<Arc<WindowPlans>>,
    lateness_us: i64,
    /// The WHERE clause over shared atoms (stateless rules; see [`crate::filter`]).
    filter: Option<RuleFilter>,
    /// With a `filter`: the plan without its WHERE clause, run on exactly the rows the shared
    /// filter found TRUE (DataFusion does not evaluate the predicate a second time).
    unfiltered: Option<Arc<dyn ExecutionPlan>>,
}

impl CompiledRule {
    /// Whether the rule aggregates over event-time windows.
    pub fn is_windowed(&self) -> bool {
        self.plans.window.is_some()
    }

    /// Key of the rule's window state: the state of another rule, or of the same rule with
    /// other SQL, is never restored into this one.
    pub fn state_key(&self) -> String {
        format!("{}/{}#{}", self.meta.table, self.meta.id, self.fingerprint)
    }
}

/// Digest of the parts of a rule that determine its plan and window state.
pub fn rule_fingerprint(rule: &crate::rule::RuleDef) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(rule.sql.trim().as_bytes());
    h.update([0]);
    h.update(rule.lateness.map_or(u128::MAX, |d| d.as_micros()).to_be_bytes());
    hex_prefix(&h.finalize()[..8])
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The planning context: one session with every telemetry table registered, and the plans
/// built so far (by fingerprint), so re-applying a pack never re-plans an unchanged rule.
pub struct Compiler {
    ctx: SessionContext,
    catalog: Arc<Catalog>,
    refs: Arc<RefTables>,
    planned: std::sync::Mutex<HashMap<String, Arc<Planned>>>,
    plans_built: std::sync::atomic::AtomicUsize,
}

impl Compiler {
    /// Registers every table of `catalog` (no reference tables).
    pub fn new(catalog: Arc<Catalog>) -> Result<Self> {
        Self::with_references(catalog, Arc::new(RefTables::default()))
    }

    /// Registers every table of `catalog` and every reference table of `refs`.
    pub fn with_references(catalog: Arc<Catalog>, refs: Arc<RefTables>) -> Result<Self> {
        // One partition per plan: plans are re-executed per batch and parallelised across
        // batches by the caller (see NOTES: RepartitionExec cannot be re-executed).
        let mut config = SessionConfig::new().with_target_partitions(1).with_batch_size(8192);
        // Keep source positions so planning errors can point at the offending token.
        config.options_mut().sql_parser.collect_spans = true;
        // Dynamic filters (TopK, joins, aggregates) keep state inside a plan across
        // executions; plans here are executed once per batch, thousands of times.
        config.options_mut().optimizer.enable_dynamic_filter_pushdown = false;
        let config = config.with_extension(Arc::clone(&refs));
        let ctx = SessionContext::new_with_config(config);
        ctx.register_udf(crate::window::tumble_udf());
        ctx.register_udf(crate::window::session_udf());
        for udf in crate::window::hop_udfs() {
            ctx.register_udf(udf);
        }
        for t in catalog.tables() {
            let part = InjectedPartition { key: t.name().into(), schema: t.schema().clone() };
            let table = StreamingTable::try_new(t.schema().clone(), vec![Arc::new(part)])
                .map_err(|source| plan_error(format!("<table {}>", t.name()), source))?;
            ctx.register_table(t.name(), Arc::new(table))
                .map_err(|source| plan_error(format!("<table {}>", t.name()), source))?;
        }
        for (name, schema) in refs.schemas() {
            if catalog.get(name).is_ok() {
                return Err(RuleError::Reference { table: name.clone(), reason: "is also a telemetry table".into() });
            }
            let key = format!("{}{name}", crate::reference::KEY_PREFIX);
            let part = InjectedPartition { key, schema: schema.clone() };
            let table = StreamingTable::try_new(schema.clone(), vec![Arc::new(part)])
                .map_err(|source| plan_error(format!("<reference table {name}>"), source))?;
            ctx.register_table(name.as_str(), Arc::new(table))
                .map_err(|source| plan_error(format!("<reference table {name}>"), source))?;
        }
        Ok(Self {
            ctx,
            catalog,
            refs,
            planned: std::sync::Mutex::new(HashMap::new()),
            plans_built: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// The telemetry tables.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// The reference tables' registry (replace rows there to reload a table).
    pub fn references(&self) -> &Arc<RefTables> {
        &self.refs
    }

    /// How many rules were planned so far (re-applied unchanged rules reuse their plan).
    pub fn plans_built(&self) -> usize {
        self.plans_built.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Forgets plans whose fingerprint is not in `keep` (rules no longer applied).
    pub fn retain_plans(&self, keep: &std::collections::HashSet<String>) {
        self.planned.lock().expect("plan cache lock is never poisoned").retain(|fp, _| keep.contains(fp));
    }

    /// Plans one rule, or reuses the plan of an identical one; returns the compiled rule (its
    /// table is `meta.table`).
    pub async fn compile(&self, pack: &Pack, rule: &crate::rule::RuleDef) -> Result<CompiledRule> {
        let fingerprint = rule_fingerprint(rule);
        let cached = self.planned.lock().expect("plan cache lock is never poisoned").get(&fingerprint).cloned();
        let plans = match cached {
            Some(p) => p,
            None => {
                let p = Arc::new(self.plan(rule).await.map_err(|e| regex_error_in(e, &rule.sql))?);
                self.plans_built.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.planned.lock().expect("plan cache lock is never poisoned").insert(fingerprint.clone(), p.clone());
                p
            }
        };
        let output = plans.plan.schema();
        let visible: Vec<&str> =
            output.fields().iter().map(|f| f.name().as_str()).filter(|n| !n.starts_with(RESERVED_PREFIX)).collect();
        if let Some(missing) = rule.dedup_key.iter().find(|c| !visible.contains(&c.as_str())) {
            return Err(RuleError::Sql {
                rule: rule.id.clone(),
                reason: format!(
                    "dedup_key column `{missing}` is not a column of the rule's result (it has: {})",
                    visible.join(", ")
                ),
            });
        }
        if rule.suppress.is_some() && rule.dedup_key.is_empty() {
            return Err(RuleError::Sql {
                rule: rule.id.clone(),
                reason: "suppress needs a dedup_key: the result columns that make two alerts the same detection".into(),
            });
        }
        let suppress_us = rule.suppress.map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX).max(1));
        let meta = RuleMeta {
            id: rule.id.clone(),
            dedup_key: rule.dedup_key.clone(),
            suppress_us,
            name: rule.name.clone(),
            version: pack.rule_version(rule),
            pack: pack.name.clone(),
            severity: rule.severity,
            description: rule.description.trim().to_string(),
            tags: rule.tags.clone(),
            table: plans.table.clone(),
        };
        Ok(CompiledRule { meta: Arc::new(meta), enabled_in_pack: rule.enabled, fingerprint, plans })
    }

    async fn plan(&self, rule: &crate::rule::RuleDef) -> Result<Planned> {
        let id = || rule.id.clone();
        let known = |t: &str| self.catalog.get(t).is_ok() || self.refs.schemas().contains_key(t);
        let statement = crate::validate::validate_sql(&rule.id, &rule.sql, &known)?;
        let state = self.ctx.state();
        let plan = state.statement_to_plan(statement).await.map_err(|source| plan_error(id(), source))?;
        let table = self.source_table(&rule.id, &plan)?;
        let window = find_window(&plan).map_err(|source| plan_error(id(), source))?;
        if window.is_none() && is_aggregating(&plan).map_err(|source| plan_error(id(), source))? {
            return Err(RuleError::Sql {
                rule: id(),
                reason: "aggregating rules need an event-time window: GROUP BY tumble(ts, INTERVAL '1 minute'), …"
                    .into(),
            });
        }
        let plan = match window {
            Some(_) => {
                let plan = crate::window::expand_hops(plan)
                    .and_then(crate::window::expand_sessions)
                    .map_err(|source| plan_error(id(), source))?;
                scope_windows(plan).map_err(|source| plan_error(id(), source))?
            }
            None => plan,
        };
        let filter = match window {
            Some(_) => None,
            None => self.rule_filter(&table, &plan),
        };
        let plan = add_hidden_columns(plan, window).map_err(|source| plan_error(id(), source))?;
        let unfiltered = match &filter {
            Some(_) => {
                let without = without_filter(plan.clone()).map_err(|source| plan_error(id(), source))?;
                Some(state.create_physical_plan(&without).await.map_err(|source| plan_error(id(), source))?)
            }
            None => None,
        };
        let plan = state.create_physical_plan(&plan).await.map_err(|source| plan_error(id(), source))?;
        let window = match window {
            Some(spec) => {
                Some(Arc::new(WindowPlans::new(spec, Arc::clone(&plan)).map_err(|source| plan_error(id(), source))?))
            }
            None => None,
        };
        let lateness_us = rule.lateness.map_or(DEFAULT_LATENESS_US, |d| d.as_micros() as i64);
        Ok(Planned { table, plan, window, lateness_us, filter, unfiltered })
    }

    /// A stateless rule's WHERE clause as a shared filter tree, when it has one the filter
    /// can evaluate row by row.
    fn rule_filter(&self, table: &str, plan: &LogicalPlan) -> Option<RuleFilter> {
        let predicate = crate::filter::rule_predicate(plan)?;
        let schema = self.catalog.get(table).ok()?.schema().clone();
        let df = datafusion::common::DFSchema::try_from(schema.as_ref().clone()).ok()?;
        let state = self.ctx.state();
        let physical = |e: &Expr| state.create_physical_expr(e.clone(), &df).ok();
        crate::filter::translate(&predicate, &schema, &physical)
    }

    /// Compiles every rule of `pack` (disabled ones too: they are validated, and can be
    /// enabled at runtime without planning), grouped by table. All or nothing.
    pub async fn compile_pack(&self, pack: &Pack) -> Result<BTreeMap<String, Vec<Arc<CompiledRule>>>> {
        let mut by_table: BTreeMap<String, Vec<Arc<CompiledRule>>> = BTreeMap::new();
        for rule in &pack.rules {
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

/// Windows never mix tenants: `tenant` joins the GROUP BY. The window's sensor and host are
/// carried as min/max aggregates, so an alert names them when one sensor (host) accounts for
/// every event of the window.
fn scope_windows(plan: LogicalPlan) -> datafusion::error::Result<LogicalPlan> {
    use datafusion::functions_aggregate::expr_fn::{max, min};
    use datafusion::logical_expr::Aggregate;
    plan.transform_up(|node| match node {
        LogicalPlan::Aggregate(a) => {
            let schema = a.input.schema();
            let column = |name: &str| -> datafusion::error::Result<Expr> {
                let (q, f) = schema.qualified_field_with_unqualified_name(name)?;
                Ok(Expr::Column(Column::new(q.cloned(), f.name())))
            };
            let mut group = a.group_expr.clone();
            group.push(column("tenant")?.alias("__tenant_key"));
            let mut aggs = a.aggr_expr.clone();
            for (col, lo, hi) in [("sensor_id", "__sensor_min", "__sensor_max"), ("host", "__host_min", "__host_max")] {
                aggs.push(min(column(col)?).alias(lo));
                aggs.push(max(column(col)?).alias(hi));
            }
            Ok(Transformed::yes(LogicalPlan::Aggregate(Aggregate::try_new(Arc::clone(&a.input), group, aggs)?)))
        }
        other => Ok(Transformed::yes(other.recompute_schema()?)),
    })
    .map(|t| t.data)
}

/// `plan` with its filter removed (the rows it runs on are already the filtered ones).
fn without_filter(plan: LogicalPlan) -> datafusion::error::Result<LogicalPlan> {
    plan.transform_up(|node| match node {
        LogicalPlan::Filter(f) => Ok(Transformed::yes(Arc::unwrap_or_clone(f.input))),
        node => Ok(Transformed::no(node)),
    })
    .map(|t| t.data)
}

fn is_aggregating(plan: &LogicalPlan) -> datafusion::error::Result<bool> {
    plan.exists(|n| Ok(matches!(n, LogicalPlan::Aggregate(_) | LogicalPlan::Window(_) | LogicalPlan::Distinct(_))))
}

/// Appends hidden columns to the rule's projection so each result row can be traced: for a
/// stateless rule the triggering event (`__ts`, `__sensor_id`, …), for a windowed rule the
/// window start (`__window_start`).
fn add_hidden_columns(plan: LogicalPlan, window: Option<WindowSpec>) -> datafusion::error::Result<LogicalPlan> {
    let LogicalPlan::Projection(p) = &plan else { return Ok(plan) };
    let input_schema = p.input.schema();
    let mut exprs = p.expr.clone();
    if let Some(spec) = window {
        let mut agg_schema = None;
        p.input.apply(|n| {
            if let LogicalPlan::Aggregate(a) = n {
                agg_schema = Some(Arc::clone(&a.schema));
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        let Some(agg_schema) = agg_schema else { return Ok(plan) };
        let agg_col = |i: usize| {
            let (qualifier, field) = agg_schema.qualified_field(i);
            Expr::Column(Column::new(qualifier.cloned(), field.name()))
        };
        let by_name = |name: &str| agg_schema.index_of_column_by_name(None, name).map(agg_col);
        exprs.push(agg_col(spec.group_index).alias(WINDOW_START));
        if let Some(last) = by_name(crate::window::SESSION_LAST) {
            exprs.push(last.alias(SESSION_LAST_EVENT));
        }
        if let Some(t) = by_name("__tenant_key") {
            exprs.push(t.alias("__tenant"));
        }
        for (lo, hi, alias) in [("__sensor_min", "__sensor_max", "__sensor_id"), ("__host_min", "__host_max", "__host")]
        {
            if let (Some(lo), Some(hi)) = (by_name(lo), by_name(hi)) {
                exprs.push(when(lo.clone().eq(hi), lo).end()?.alias(alias));
            }
        }
    } else if is_aggregating(&plan)? || plan.exists(|n| Ok(matches!(n, LogicalPlan::Union(_))))? {
        return Ok(plan);
    } else {
        for (source, alias) in HIDDEN {
            if plan.schema().has_column_with_unqualified_name(alias) {
                continue;
            }
            if let Ok((qualifier, field)) = input_schema.qualified_field_with_unqualified_name(source) {
                exprs.push(Expr::Column(Column::new(qualifier.cloned(), field.name())).alias(alias));
            }
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
    /// Window state by [`CompiledRule::state_key`]; shared by clones and by the rule sets
    /// derived with [`TableRules::with_rules`], so a restarted worker or a re-applied pack
    /// resumes it.
    windows: Arc<std::sync::Mutex<HashMap<String, WindowState>>>,
    /// The table's schema (what the shared filter's atoms are planned against).
    schema: Option<SchemaRef>,
    /// Shared filter over the stateless rules (by rule index).
    prefilter: Option<Arc<SharedFilter>>,
    use_prefilter: bool,
    /// Stateless rules of one batch run on up to this many tasks at once.
    parallelism: usize,
    /// Bounds on sensor clock skew for windowed rules (ahead, behind), µs (`i64::MAX`: none).
    skew_us: (i64, i64),
}

impl std::fmt::Debug for TableRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableRules").field("table", &self.table).field("rules", &self.rules.len()).finish()
    }
}

impl TableRules {
    /// Groups already compiled rules of `table`; rules their pack disables are left out.
    pub fn new(compiler: &Compiler, table: &str, rules: Vec<Arc<CompiledRule>>) -> Self {
        let rules: Vec<_> = rules.into_iter().filter(|r| r.enabled_in_pack).collect();
        let schema = compiler.catalog.get(table).ok().map(|t| t.schema().clone());
        Self {
            table: table.into(),
            base: Arc::new(compiler.task_context()),
            prefilter: build_prefilter(schema.as_deref(), &rules),
            schema,
            rules,
            windows: Arc::new(std::sync::Mutex::new(HashMap::new())),
            use_prefilter: true,
            parallelism: std::thread::available_parallelism().map_or(1, usize::from),
            skew_us: (crate::window::DEFAULT_MAX_AHEAD_US, crate::window::DEFAULT_MAX_BEHIND_US),
        }
    }

    /// Runs the stateless rules of a batch on up to `n` tasks at once (default: one per core).
    pub fn with_parallelism(mut self, n: usize) -> Self {
        self.parallelism = n.max(1);
        self
    }

    /// Bounds how far ahead of and behind the engine's clock a sensor's event times may be
    /// for windowed rules (`None`: unbounded, e.g. to replay old data).
    pub fn with_clock_skew(mut self, ahead: Option<std::time::Duration>, behind: Option<std::time::Duration>) -> Self {
        let us =
            |d: Option<std::time::Duration>| d.map_or(i64::MAX, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        self.skew_us = (us(ahead), us(behind));
        self
    }

    /// Turns the shared filter off: every rule runs on every row (benchmarks and tests compare
    /// both; results are equal).
    pub fn with_prefilter(mut self, on: bool) -> Self {
        self.use_prefilter = on;
        self
    }

    /// The same table with exactly `rules` active (a hot apply). Window state of rules kept
    /// (same id and fingerprint) carries over; a newly active windowed rule starts from
    /// `load(state_key)` if a checkpoint exists. State of rules no longer active is dropped by
    /// [`TableRules::prune_windows`] once the old set is no longer running.
    pub fn with_rules(&self, rules: Vec<Arc<CompiledRule>>, load: impl Fn(&str) -> Option<Stored>) -> Result<Self> {
        let next = Self { prefilter: build_prefilter(self.schema.as_deref(), &rules), rules, ..self.clone() };
        next.load_states(load, false)?;
        Ok(next)
    }

    /// The rows of `batch` each rule (in [`TableRules::rules`] order) runs on: for a stateless
    /// rule with a WHERE clause the shared filter evaluates, exactly the rows where it is
    /// TRUE; for the others, every row.
    pub fn candidates(&self, batch: &RecordBatch) -> Vec<Rows> {
        match (&self.prefilter, self.use_prefilter) {
            (Some(p), true) => p.candidates(batch),
            _ => self.rules.iter().map(|_| Rows::All).collect(),
        }
    }

    /// [`TableRules::candidates`] on up to `parallelism` tasks at once, each filtering a
    /// slice of the batch.
    async fn candidates_parallel(&self, batch: &RecordBatch) -> Vec<Rows> {
        const MIN_SLICE: usize = 2048;
        let (Some(filter), true) = (&self.prefilter, self.use_prefilter) else {
            return self.candidates(batch);
        };
        let n = batch.num_rows();
        let parts = self.parallelism.min(n / MIN_SLICE);
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return self.candidates(batch) };
        if parts < 2 {
            return self.candidates(batch);
        }
        // Slices of whole 64-row words, so each part's bitmaps line up.
        let step = n.div_ceil(parts).div_ceil(64) * 64;
        let mut handles = Vec::new();
        for offset in (step..n).step_by(step) {
            let (filter, slice) = (Arc::clone(filter), batch.slice(offset, step.min(n - offset)));
            handles.push((offset, rt.spawn(async move { filter.candidates(&slice) })));
        }
        let mut rows = filter.candidates(&batch.slice(0, step.min(n)));
        for (offset, h) in handles {
            let Ok(part) = h.await else { return self.candidates(batch) };
            for (all, more) in rows.iter_mut().zip(part) {
                match (all, more) {
                    (Rows::Some(all), Rows::Some(more)) => all.extend(more.into_iter().map(|r| r + offset as u32)),
                    (all, _) => *all = Rows::All,
                }
            }
        }
        rows
    }

    /// Drops window state of rules not in this set; returns the state keys dropped.
    pub fn prune_windows(&self) -> Vec<String> {
        let live: std::collections::HashSet<String> = self.rules.iter().map(|r| r.state_key()).collect();
        let mut windows = self.windows.lock().expect("window lock is never poisoned");
        let dropped: Vec<String> = windows.keys().filter(|k| !live.contains(*k)).cloned().collect();
        for k in &dropped {
            windows.remove(k);
        }
        dropped
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
    /// and does not stop the others. Window state changes are returned in
    /// [`Evaluation::window_updates`] and take effect only through [`TableRules::commit`].
    pub async fn evaluate(&self, batch: &RecordBatch, detected_at: DateTime<Utc>) -> Evaluation {
        self.run(Some(batch), detected_at, false).await
    }

    /// Advances windows without new rows (idle sensors, periodic ticks); `flush_all` closes
    /// every open window (end of input in `vedette rules test`).
    pub async fn tick(&self, now: DateTime<Utc>, flush_all: bool) -> Evaluation {
        self.run(None, now, flush_all).await
    }

    /// Applies the window state of an evaluation whose alerts were delivered.
    pub fn commit(&self, updates: Vec<(String, WindowState)>) {
        let mut windows = self.windows.lock().expect("window lock is never poisoned");
        windows.extend(updates);
    }

    /// Checkpoint bytes of the given windows' current state, by state key.
    pub fn checkpoint(&self, state_keys: &[String]) -> Result<Vec<(String, Vec<u8>)>> {
        let windows = self.windows.lock().expect("window lock is never poisoned");
        state_keys
            .iter()
            .filter_map(|key| Some((key.clone(), windows.get(key)?)))
            .map(|(key, state)| {
                let bytes = state.to_bytes().map_err(|source| RuleError::Eval { rule: key.clone(), source })?;
                Ok((key, bytes))
            })
            .collect()
    }

    /// The writes that checkpoint an evaluation's window updates, before they are committed
    /// (so they go into the same transaction as the batch's alerts): a delta per rule whose
    /// states were only appended to, a new base otherwise (see [`crate::window::checkpoint`]).
    /// Records in each update how many deltas follow its base.
    pub fn checkpoint_updates(&self, updates: &mut [(String, WindowState)]) -> Result<Vec<WindowWrite>> {
        let windows = self.windows.lock().expect("window lock is never poisoned");
        let mut writes = Vec::new();
        for (key, state) in updates.iter_mut() {
            let w = state
                .checkpoint_after(key, windows.get(key.as_str()))
                .map_err(|source| RuleError::Eval { rule: key.clone(), source })?;
            writes.extend(w);
        }
        Ok(writes)
    }

    /// Restores window state from checkpoints; `load` returns what is stored under a state key.
    pub fn restore(&self, load: impl Fn(&str) -> Option<Stored>) -> Result<usize> {
        self.load_states(load, true)
    }

    /// Loads checkpointed state of this set's windowed rules (all of them, or only those with
    /// no state in memory); returns how many were loaded.
    fn load_states(&self, load: impl Fn(&str) -> Option<Stored>, overwrite: bool) -> Result<usize> {
        let mut loaded = 0;
        let mut windows = self.windows.lock().expect("window lock is never poisoned");
        for rule in self.rules.iter().filter(|r| r.is_windowed()) {
            let key = rule.state_key();
            if !overwrite && windows.contains_key(&key) {
                continue;
            }
            if let Some(stored) = load(&key) {
                let state = WindowState::from_stored(&stored)
                    .map_err(|source| RuleError::Eval { rule: key.clone(), source })?;
                windows.insert(key, state);
                loaded += 1;
            }
        }
        Ok(loaded)
    }

    /// Rows stamped beyond the clock-skew bound ahead of the engine's clock, per active
    /// windowed rule id and sensor.
    pub fn skewed_rows(&self) -> Vec<(String, HashMap<String, u64>)> {
        let windows = self.windows.lock().expect("window lock is never poisoned");
        self.rules
            .iter()
            .filter_map(|r| windows.get(&r.state_key()).map(|w| (r.meta.id.clone(), w.skewed.clone())))
            .filter(|(_, s)| !s.is_empty())
            .collect()
    }

    /// The committed window state of the rule with state key `key`.
    pub fn window_state(&self, key: &str) -> Option<WindowState> {
        self.windows.lock().expect("window lock is never poisoned").get(key).cloned()
    }

    /// Late rows dropped so far, per active windowed rule id.
    pub fn late_rows(&self) -> Vec<(String, u64)> {
        let windows = self.windows.lock().expect("window lock is never poisoned");
        self.rules
            .iter()
            .filter_map(|r| windows.get(&r.state_key()).map(|w| (r.meta.id.clone(), w.late_rows)))
            .collect()
    }

    /// Open window keys (groups) held in memory, per active windowed rule id.
    pub fn open_windows(&self) -> Vec<(String, usize)> {
        let windows = self.windows.lock().expect("window lock is never poisoned");
        self.rules
            .iter()
            .filter_map(|r| windows.get(&r.state_key()).map(|w| (r.meta.id.clone(), w.open_rows())))
            .collect()
    }

    async fn run(&self, batch: Option<&RecordBatch>, now: DateTime<Utc>, flush_all: bool) -> Evaluation {
        let mut eval = Evaluation::default();
        if self.rules.is_empty() || batch.is_some_and(|b| b.num_rows() == 0) {
            return eval;
        }
        // Per rule, in rule order: its alerts, error and time, merged at the end so the output
        // order does not depend on which task ran which rule.
        let mut outcomes: Vec<Option<Outcome>> = (0..self.rules.len()).map(|_| None).collect();
        // Windowed rules first (the heavier jobs), then stateless rules with candidate rows.
        let mut jobs: Vec<(usize, Arc<CompiledRule>, Job)> = Vec::new();
        {
            let windows = self.windows.lock().expect("window lock is never poisoned");
            for (i, rule) in self.rules.iter().enumerate().filter(|(_, r)| r.is_windowed()) {
                let state = windows.get(&rule.state_key()).cloned().unwrap_or_default();
                jobs.push((i, Arc::clone(rule), Job::Windowed(state)));
            }
        }
        if let Some(batch) = batch {
            let candidates = self.candidates_parallel(batch).await;
            let task_of =
                |b: RecordBatch| task_with(&self.base, Injected([(self.table.clone(), vec![b])].into_iter().collect()));
            let full = task_of(batch.clone());
            for (i, (rule, rows)) in self.rules.iter().zip(candidates).enumerate() {
                if rule.is_windowed() {
                    continue;
                }
                let job = match rows {
                    Rows::Some(rows) if rows.is_empty() => continue,
                    // Exactly the rows where the WHERE clause holds: the plan without it.
                    Rows::Some(rows) => {
                        let sub = match rows.len() == batch.num_rows() {
                            true => Ok(batch.clone()),
                            false => arrow::compute::take_record_batch(batch, &arrow::array::UInt32Array::from(rows)),
                        };
                        match sub {
                            Ok(sub) => Job::Stateless(task_of(sub), true),
                            Err(_) => Job::Stateless(Arc::clone(&full), false),
                        }
                    }
                    Rows::All => Job::Stateless(Arc::clone(&full), false),
                };
                jobs.push((i, Arc::clone(rule), job));
            }
        }
        let ctx = Arc::new(JobContext {
            base: Arc::clone(&self.base),
            table: self.table.clone(),
            batch: batch.cloned(),
            now,
            flush_all,
            skew_us: self.skew_us,
        });
        // Rules of one batch are independent (each windowed rule has its own state): spread
        // them round-robin over the shards; results are put back in rule order below.
        let shards = self.parallelism.min(jobs.len()).max(1);
        let mut chunks: Vec<Vec<_>> = (0..shards).map(|_| Vec::new()).collect();
        for (k, job) in jobs.into_iter().enumerate() {
            chunks[k % shards].push(job);
        }
        let mut inline = chunks.pop();
        let mut handles = Vec::new();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                for chunk in chunks {
                    handles.push(rt.spawn(run_jobs(chunk, Arc::clone(&ctx))));
                }
            }
            Err(_) => inline = Some(chunks.into_iter().flatten().chain(inline.unwrap_or_default()).collect()),
        }
        let mut done = Vec::new();
        if let Some(chunk) = inline {
            done.extend(run_jobs(chunk, Arc::clone(&ctx)).await);
        }
        for h in handles {
            match h.await {
                Ok(d) => done.extend(d),
                Err(e) => eval.errors.push(RuleError::Eval {
                    rule: format!("<{} shard>", self.table),
                    source: datafusion::error::DataFusionError::External(Box::new(e)),
                }),
            }
        }
        for (i, o, update) in done {
            outcomes[i] = Some(o);
            eval.window_updates.extend(update);
        }
        for (rule, outcome) in self.rules.iter().zip(outcomes) {
            let Some(o) = outcome else { continue };
            eval.alerts.extend(o.alerts);
            eval.errors.extend(o.error);
            eval.timings.push((Arc::clone(&rule.meta), o.took));
        }
        eval
    }
}

/// Runs a reset copy of a compiled plan. Operators keep per-execution state in their plan
/// node — limits, joins, and in **every** operator the metrics each execution registers in the
/// node's metrics set — so running the long-lived plan itself again and again would grow
/// memory with every batch (it did: ~1 KiB per rule execution). A reset copy shares the
/// expressions and properties and costs a few microseconds.
pub(crate) async fn run_plan(
    plan: &Arc<dyn ExecutionPlan>,
    task: Arc<TaskContext>,
) -> datafusion::error::Result<Vec<RecordBatch>> {
    let plan = datafusion::physical_plan::execution_plan::reset_plan_states(Arc::clone(plan))?;
    collect(plan, task).await
}

/// The shared filter of a rule list (rule index = position), if any rule has one.
fn build_prefilter(
    schema: Option<&arrow::datatypes::Schema>,
    rules: &[Arc<CompiledRule>],
) -> Option<Arc<SharedFilter>> {
    let filters: Vec<Option<&RuleFilter>> = rules.iter().map(|r| r.plans.filter.as_ref()).collect();
    SharedFilter::new(schema?, &filters).map(Arc::new)
}

#[derive(Default)]
struct Outcome {
    alerts: Vec<Alert>,
    error: Option<RuleError>,
    took: std::time::Duration,
}

/// What one rule does on one batch (or tick).
enum Job {
    /// Execute the plan on this task context: the whole batch, or (`true`) exactly the rows
    /// where the rule's WHERE clause holds, with the plan without it.
    Stateless(Arc<TaskContext>, bool),
    /// Advance the windows from this state.
    Windowed(WindowState),
}

/// What every job of one evaluation shares.
struct JobContext {
    base: Arc<TaskContext>,
    table: String,
    batch: Option<RecordBatch>,
    now: DateTime<Utc>,
    flush_all: bool,
    skew_us: (i64, i64),
}

/// Runs jobs one after the other; returns each rule's outcome and new window state.
async fn run_jobs(
    jobs: Vec<(usize, Arc<CompiledRule>, Job)>,
    ctx: Arc<JobContext>,
) -> Vec<(usize, Outcome, Option<(String, WindowState)>)> {
    let mut out = Vec::with_capacity(jobs.len());
    for (i, rule, job) in jobs {
        let started = std::time::Instant::now();
        let mut o = Outcome::default();
        let mut update = None;
        match job {
            Job::Stateless(task, filtered) => {
                let plan = match (filtered, &rule.plans.unfiltered) {
                    (true, Some(unfiltered)) => unfiltered,
                    _ => &rule.plans.plan,
                };
                let run = run_plan(plan, task).await;
                match run {
                    Ok(batches) => {
                        for b in &batches {
                            rows_to_alerts(&rule.meta, b, ctx.now, None, &mut o.alerts);
                        }
                    }
                    Err(source) => o.error = Some(RuleError::Eval { rule: rule.meta.id.clone(), source }),
                }
            }
            Job::Windowed(state) => {
                let Some(w) = &rule.plans.window else { continue };
                let clock = Clock {
                    now_us: ctx.now.timestamp_micros(),
                    lateness_us: rule.plans.lateness_us,
                    flush_all: ctx.flush_all,
                    ahead_us: ctx.skew_us.0,
                    behind_us: ctx.skew_us.1,
                };
                match w.advance(&ctx.base, &ctx.table, &state, ctx.batch.as_ref(), clock).await {
                    Ok((closed, next)) => {
                        for b in &closed.batches {
                            rows_to_alerts(&rule.meta, b, ctx.now, Some(w.spec), &mut o.alerts);
                        }
                        update = Some((rule.state_key(), next));
                    }
                    Err(source) => o.error = Some(RuleError::Eval { rule: rule.meta.id.clone(), source }),
                }
            }
        }
        o.took = started.elapsed();
        out.push((i, o, update));
    }
    out
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
    /// New window state by state key, to [`TableRules::commit`] after delivery.
    pub window_updates: Vec<(String, WindowState)>,
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

/// A missing `dedup_key` value.
static NULL: serde_json::Value = serde_json::Value::Null;

fn rows_to_alerts(
    meta: &Arc<RuleMeta>,
    batch: &RecordBatch,
    detected_at: DateTime<Utc>,
    window: Option<WindowSpec>,
    out: &mut Vec<Alert>,
) {
    let schema = batch.schema();
    let col = |name: &str| schema.index_of(name).ok().map(|i| batch.column(i).as_ref());
    let (ts, sensor, tenant, host) = (
        col("__ts").or_else(|| col("ts")),
        col("__sensor_id").or_else(|| col("sensor_id")),
        col("__tenant").or_else(|| col("tenant")),
        col("__host").or_else(|| col("host")),
    );
    let (seq, row_idx) = (col("__seq"), col("__row"));
    let (window_start, session_last) = (col(WINDOW_START), col(SESSION_LAST_EVENT));
    let visible: Vec<usize> =
        (0..schema.fields().len()).filter(|i| !schema.field(*i).name().starts_with(RESERVED_PREFIX)).collect();
    for i in 0..batch.num_rows() {
        let mut row = Map::new();
        for &c in &visible {
            row.insert(schema.field(c).name().clone(), cell_to_json(batch.column(c).as_ref(), i));
        }
        let window =
            window_start.and_then(|a| cell_micros(a, i)).zip(window).map(|(s, spec)| match spec.session_gap() {
                Some(gap) => (s, session_last.and_then(|a| cell_micros(a, i)).unwrap_or(s).saturating_add(gap)),
                None => (s, s + spec.size_us),
            });
        let ts_micros = match window {
            Some((_, end)) => end,
            None => ts.and_then(|a| cell_micros(a, i)).unwrap_or_else(|| detected_at.timestamp_micros()),
        };
        let sensor_id = sensor.and_then(|a| cell_str(a, i)).map(str::to_string);
        let tenant = tenant.and_then(|a| cell_str(a, i)).map(str::to_string);
        let key: Vec<&serde_json::Value> = meta.dedup_key.iter().map(|c| row.get(c).unwrap_or(&NULL)).collect();
        let identity = match (&sensor_id, seq.and_then(|a| cell_u64(a, i)), row_idx.and_then(|a| cell_u64(a, i))) {
            _ if !key.is_empty() => {
                let start = window.map(|w| w.0);
                // Suppression: one id per key and period (by window start or event time).
                let start = match meta.suppress_us {
                    Some(p) => Some(crate::suppress::period_start(start.unwrap_or(ts_micros), p)),
                    None => start,
                };
                Identity::Key { values: &key, window_start: start }
            }
            (Some(s), Some(seq), Some(r)) => Identity::Event { sensor_id: s, seq, row: r },
            _ => Identity::Row { ts_micros: window.map_or(ts_micros, |w| w.0), row: &row },
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
            window_start: window.map(|w| crate::values::micros_to_datetime(w.0)),
            window_end: window.map(|w| crate::values::micros_to_datetime(w.1)),
            edge: None,
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
    let message = without_internal_fields(&source.to_string());
    RuleError::Plan { rule, at, message, source }
}

/// The optimizer compiles regex literals and reports a bad one without a position: name the
/// pattern, say what is wrong with it, and point at it in the SQL.
fn regex_error_in(e: RuleError, sql: &str) -> RuleError {
    let RuleError::Plan { rule, at, message, source } = e else { return e };
    let Some(rest) = message.find("regex parse error:").map(|i| &message[i + "regex parse error:".len()..]) else {
        return RuleError::Plan { rule, at, message, source };
    };
    let mut lines = rest.lines().map(str::trim).filter(|l| !l.is_empty());
    let pattern = lines.next().unwrap_or_default().to_string();
    let what = rest.lines().find_map(|l| l.trim().strip_prefix("error: ")).unwrap_or("not a valid pattern");
    let message = format!("invalid regular expression '{pattern}': {what}");
    let at = if at.is_empty() {
        sql.find(&format!("'{pattern}'"))
            .map(|i| {
                let before = &sql[..=i];
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().unwrap_or(before).chars().count() + 1;
                format!(" (line {line}, column {column})")
            })
            .unwrap_or_default()
    } else {
        at
    };
    RuleError::Plan { rule, at, message, source }
}

/// DataFusion lists every column of the scanned table as valid, the engine's bookkeeping
/// columns (`__seq`, `__row`) too; rules must not use them, so they are not offered.
fn without_internal_fields(message: &str) -> String {
    const LEAD: &str = "Valid fields are ";
    let Some(start) = message.find(LEAD).map(|i| i + LEAD.len()) else { return message.to_string() };
    let end = message[start..].find(".\n").or_else(|| message[start..].rfind('.')).map_or(message.len(), |e| start + e);
    let fields: Vec<&str> = message[start..end]
        .split(", ")
        .filter(|f| !f.rsplit('.').next().is_some_and(|name| name.starts_with("__")))
        .collect();
    format!("{}{}{}", &message[..start], fields.join(", "), &message[end..])
}
