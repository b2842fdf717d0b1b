//! Event-time windows: `GROUP BY tumble(ts, INTERVAL '1 minute'), keys … HAVING …`, hopping
//! windows (`hop(ts, slide, size)`) and session windows (`session(ts, gap)`).
//!
//! A windowed rule runs incrementally with DataFusion's own two-phase aggregation, so its
//! results are exactly those of the batch query:
//!
//! * per batch, a `Partial` aggregate turns the batch's rows into accumulator states;
//! * states are merged with `PartialReduce` (state in, state out);
//! * once the watermark passes a window's end, its states go through `Final`, then through
//!   the rule's HAVING and projection, and each result row becomes an alert.
//!
//! Each tenant has its own watermark (windows never mix tenants: every window groups by the
//! tenant): the minimum, over the tenant's sensors that sent events recently, of the highest
//! event time seen from that sensor, minus the rule's allowed lateness: one sensor's fast clock
//! cannot close another's windows, and a silent sensor stops holding windows open once idle.
//! Clock skew is bounded against the engine's clock (`Clock::ahead_us`, `Clock::behind_us`):
//! a row stamped further in the future never advances its sensor's time (it is counted per
//! sensor), and a sensor further behind holds the watermark back by at most the bound (its
//! older rows become late). Rows that arrive for an already closed window are late: counted, never silently
//! merged. Sensors idle for [`FORGET_AFTER_US`] are forgotten.
//!
//! Session windows group by the event time itself (plus a hidden `max(ts)`); partial state
//! rows of a key whose spans `[start, last + gap)` overlap are merged into one session by
//! rewriting their window column to the session start before the reduce stage.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch, TimestampMicrosecondArray};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, SchemaRef, TimeUnit, TimestampMicrosecondType};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, ScalarValue, exec_err, plan_err};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::streaming::StreamingTableExec;

use crate::compile::{Injected, InjectedPartition, run_plan, task_with};

pub mod checkpoint;

/// Default allowed lateness when a rule sets none.
pub const DEFAULT_LATENESS_US: i64 = 5_000_000;
/// A sensor silent for this long (processing time) stops holding windows open.
pub const IDLE_AFTER_US: i64 = 60_000_000;
/// Partial state batches kept before they are merged.
const MERGE_EVERY: usize = 16;

const STATE: &str = "__window_state";
const CLOSED: &str = "__window_closed";
const AGG_OUT: &str = "__window_agg";

/// `tumble(ts, INTERVAL '…')`: the start of the fixed window holding `ts` (epoch-aligned).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Tumble {
    signature: Signature,
}

impl Default for Tumble {
    fn default() -> Self {
        Self { signature: Signature::any(2, Volatility::Immutable) }
    }
}

/// Window size in µs from an interval literal; months are refused (not a fixed length).
pub fn interval_micros(v: &ScalarValue) -> datafusion::error::Result<i64> {
    let us = match v {
        ScalarValue::IntervalMonthDayNano(Some(i)) if i.months == 0 => {
            i64::from(i.days) * 86_400_000_000 + i.nanoseconds / 1_000
        }
        ScalarValue::IntervalDayTime(Some(i)) => i64::from(i.days) * 86_400_000_000 + i64::from(i.milliseconds) * 1_000,
        other => return plan_err!("window size must be a fixed INTERVAL such as INTERVAL '1 minute', found {other}"),
    };
    if us <= 0 {
        return plan_err!("window size must be positive");
    }
    Ok(us)
}

impl ScalarUDFImpl for Tumble {
    fn name(&self) -> &str {
        "tumble"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> datafusion::error::Result<DataType> {
        match args.first() {
            Some(DataType::Timestamp(..)) => Ok(utc_micros()),
            other => plan_err!("tumble(ts, INTERVAL …): first argument must be a timestamp, found {other:?}"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> datafusion::error::Result<ColumnarValue> {
        let ColumnarValue::Scalar(size) = &args.args[1] else {
            return exec_err!("tumble: the window size must be a constant INTERVAL");
        };
        let size = interval_micros(size)?;
        let ts = args.args[0].to_array(args.number_rows)?;
        let ts = arrow::compute::cast(&ts, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
        let out: TimestampMicrosecondArray =
            ts.as_primitive::<TimestampMicrosecondType>().unary(|t| t.div_euclid(size) * size);
        Ok(ColumnarValue::Array(Arc::new(out.with_timezone("UTC"))))
    }
}

/// The `tumble` UDF.
pub fn tumble_udf() -> ScalarUDF {
    ScalarUDF::from(Tumble::default())
}

/// Most windows one row may belong to with `hop` (size / slide): bounds state per row.
pub const MAX_HOPS_PER_ROW: i64 = 60;

/// `hop(ts, slide, size)`: marks hopping windows in GROUP BY. Rewritten by the compiler into
/// one row per window the event belongs to (`hop_starts` + UNNEST); never evaluated itself.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Hop {
    signature: Signature,
}

impl Default for Hop {
    fn default() -> Self {
        Self { signature: Signature::any(3, Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for Hop {
    fn name(&self) -> &str {
        "hop"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> datafusion::error::Result<DataType> {
        match args.first() {
            Some(DataType::Timestamp(..)) => Ok(utc_micros()),
            other => {
                plan_err!("hop(ts, INTERVAL slide, INTERVAL size): first argument must be a timestamp, found {other:?}")
            }
        }
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> datafusion::error::Result<ColumnarValue> {
        exec_err!("hop(…) is only valid as a GROUP BY key of a windowed rule")
    }
}

/// `hop_starts(ts, slide, size)`: the starts of every hopping window holding `ts` (a list;
/// `[s, s + size)` with `s` a multiple of `slide`), oldest first.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct HopStarts {
    signature: Signature,
}

impl Default for HopStarts {
    fn default() -> Self {
        Self { signature: Signature::any(3, Volatility::Immutable) }
    }
}

fn hop_item() -> Arc<arrow::datatypes::Field> {
    Arc::new(arrow::datatypes::Field::new("item", utc_micros(), true))
}

impl ScalarUDFImpl for HopStarts {
    fn name(&self) -> &str {
        "hop_starts"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::List(hop_item()))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> datafusion::error::Result<ColumnarValue> {
        let (ColumnarValue::Scalar(slide), ColumnarValue::Scalar(size)) = (&args.args[1], &args.args[2]) else {
            return exec_err!("hop_starts: slide and size must be constant INTERVALs");
        };
        let (slide, size) = hop_params(interval_micros(slide)?, interval_micros(size)?)?;
        let ts = args.args[0].to_array(args.number_rows)?;
        let ts = arrow::compute::cast(&ts, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
        let ts = ts.as_primitive::<TimestampMicrosecondType>();
        let values = arrow::array::TimestampMicrosecondBuilder::new().with_timezone("UTC");
        let mut out = arrow::array::ListBuilder::new(values).with_field(hop_item());
        for t in ts.iter() {
            match t {
                Some(t) => {
                    let last = t.div_euclid(slide) * slide;
                    let mut s = last - size + slide;
                    while s <= last {
                        out.values().append_value(s);
                        s += slide;
                    }
                    out.append(true);
                }
                None => out.append(false),
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// Checks hop parameters: size a multiple of slide, at most [`MAX_HOPS_PER_ROW`] windows per row.
pub fn hop_params(slide: i64, size: i64) -> datafusion::error::Result<(i64, i64)> {
    if size % slide != 0 {
        return plan_err!("hop(ts, slide, size): the size must be a multiple of the slide");
    }
    if size / slide > MAX_HOPS_PER_ROW {
        return plan_err!(
            "hop(ts, slide, size): at most {MAX_HOPS_PER_ROW} windows per event (size / slide); use a longer slide"
        );
    }
    Ok((slide, size))
}

/// The `hop` and `hop_starts` UDFs.
pub fn hop_udfs() -> [ScalarUDF; 2] {
    [ScalarUDF::from(Hop::default()), ScalarUDF::from(HopStarts::default())]
}

/// `session(ts, INTERVAL gap)`: marks session windows in GROUP BY. A session of a key is a
/// run of its events in which consecutive events are less than `gap` apart; it spans
/// `[first event, last event + gap)`. Rewritten by the compiler ([`expand_sessions`]); never
/// evaluated itself.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Session {
    signature: Signature,
}

impl Default for Session {
    fn default() -> Self {
        Self { signature: Signature::any(2, Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for Session {
    fn name(&self) -> &str {
        "session"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> datafusion::error::Result<DataType> {
        match args.first() {
            Some(DataType::Timestamp(..)) => Ok(utc_micros()),
            other => plan_err!("session(ts, INTERVAL gap): first argument must be a timestamp, found {other:?}"),
        }
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> datafusion::error::Result<ColumnarValue> {
        exec_err!("session(…) is only valid as a GROUP BY key of a windowed rule")
    }
}

/// The `session` UDF.
pub fn session_udf() -> ScalarUDF {
    ScalarUDF::from(Session::default())
}

fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The kind of event-time window of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// `tumble(ts, size)`: fixed, epoch-aligned, non-overlapping.
    Tumble,
    /// `hop(ts, slide, size)`: fixed length, a new one every `slide`.
    Hop,
    /// `session(ts, gap)`: per key, closed after `gap` without events.
    Session,
}

/// Where the window is in a windowed rule's aggregate.
#[derive(Debug, Clone, Copy)]
pub struct WindowSpec {
    /// Position of the window among the GROUP BY expressions (and aggregate output columns).
    pub group_index: usize,
    /// Window length, µs.
    pub size_us: i64,
    /// Distance between window starts, µs (= size for tumbling windows).
    pub slide_us: i64,
    /// Tumbling, hopping or session window. For sessions `size_us` and `slide_us` hold the gap.
    pub kind: WindowKind,
}

impl WindowSpec {
    /// Session gap, µs, for session windows.
    pub fn session_gap(&self) -> Option<i64> {
        (self.kind == WindowKind::Session).then_some(self.size_us)
    }
}

/// Finds `tumble(…)`, `hop(…)` or `session(…)` among the GROUP BY expressions of the
/// (single) aggregate of `plan`. Windows are on event time: their first argument is `ts`.
pub fn find_window(plan: &LogicalPlan) -> datafusion::error::Result<Option<WindowSpec>> {
    let mut found = None;
    plan.apply(|node| {
        if let LogicalPlan::Aggregate(agg) = node {
            for (i, e) in agg.group_expr.iter().enumerate() {
                let Expr::ScalarFunction(f) = e else { continue };
                let interval = |k: usize, what: &str| match f.args.get(k) {
                    Some(Expr::Literal(v, _)) => interval_micros(v),
                    _ => plan_err!("{}(…): the {what} must be an INTERVAL literal", f.name()),
                };
                let kind = match f.name() {
                    "tumble" => WindowKind::Tumble,
                    "hop" => WindowKind::Hop,
                    "session" => WindowKind::Session,
                    _ => continue,
                };
                if found.is_some() {
                    return plan_err!("a windowed rule groups by exactly one window");
                }
                if !matches!(f.args.first(), Some(Expr::Column(c)) if c.name == vedette_schemas::tables::TS) {
                    return plan_err!(
                        "{}(…): windows are on event time, the first argument must be the `ts` column",
                        f.name()
                    );
                }
                found = Some(match kind {
                    WindowKind::Tumble => {
                        let size = interval(1, "size")?;
                        WindowSpec { group_index: i, size_us: size, slide_us: size, kind }
                    }
                    WindowKind::Hop => {
                        let (slide, size) = hop_params(interval(1, "slide")?, interval(2, "size")?)?;
                        WindowSpec { group_index: i, size_us: size, slide_us: slide, kind }
                    }
                    WindowKind::Session => {
                        let gap = interval(1, "gap")?;
                        WindowSpec { group_index: i, size_us: gap, slide_us: gap, kind }
                    }
                });
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(found)
}

/// Name of the column holding a row's hopping window start after [`expand_hops`].
pub const HOP_COLUMN: &str = "__hop_start";

/// Rewrites `GROUP BY hop(ts, slide, size), …` into one input row per window each event
/// belongs to (`UNNEST(hop_starts(ts, slide, size))`), grouped by that window start under the
/// original expression's name, so HAVING and the projection are unchanged.
pub fn expand_hops(plan: LogicalPlan) -> datafusion::error::Result<LogicalPlan> {
    use datafusion::logical_expr::{Aggregate, LogicalPlanBuilder};
    plan.transform_up(|node| match node {
        LogicalPlan::Aggregate(a) => {
            let Some((i, f)) = a.group_expr.iter().enumerate().find_map(|(i, e)| match e {
                Expr::ScalarFunction(f) if f.name() == "hop" => Some((i, f.clone())),
                _ => None,
            }) else {
                return Ok(Transformed::no(LogicalPlan::Aggregate(a)));
            };
            let name = a.group_expr[i].schema_name().to_string();
            let starts = Expr::ScalarFunction(datafusion::logical_expr::expr::ScalarFunction::new_udf(
                Arc::new(ScalarUDF::from(HopStarts::default())),
                f.args.clone(),
            ));
            let mut exprs: Vec<Expr> = a.input.schema().columns().into_iter().map(Expr::Column).collect();
            exprs.push(starts.alias(HOP_COLUMN));
            let input = LogicalPlanBuilder::from(Arc::unwrap_or_clone(Arc::clone(&a.input)))
                .project(exprs)?
                .unnest_column(HOP_COLUMN)?
                .build()?;
            let mut group = a.group_expr.clone();
            group[i] = Expr::Column(datafusion::common::Column::from_name(HOP_COLUMN)).alias(name);
            Ok(Transformed::yes(LogicalPlan::Aggregate(Aggregate::try_new(
                Arc::new(input),
                group,
                a.aggr_expr.clone(),
            )?)))
        }
        other => Ok(Transformed::yes(other.recompute_schema()?)),
    })
    .map(|t| t.data)
}

/// Name of the hidden aggregate holding the newest event time of a session.
pub const SESSION_LAST: &str = "__session_last";

/// Rewrites `GROUP BY session(ts, gap), …` into a grouping by the event time itself (under the
/// original expression's name) plus a hidden `max(ts)` aggregate: each partial state row is
/// then a session of one instant, which [`WindowPlans::advance`] merges into sessions by
/// rewriting the group column to the session start before the states are reduced.
pub fn expand_sessions(plan: LogicalPlan) -> datafusion::error::Result<LogicalPlan> {
    use datafusion::logical_expr::{Aggregate, cast};
    plan.transform_up(|node| match node {
        LogicalPlan::Aggregate(a) => {
            let Some((i, f)) = a.group_expr.iter().enumerate().find_map(|(i, e)| match e {
                Expr::ScalarFunction(f) if f.name() == "session" => Some((i, f.clone())),
                _ => None,
            }) else {
                return Ok(Transformed::no(LogicalPlan::Aggregate(a)));
            };
            let name = a.group_expr[i].schema_name().to_string();
            let ts = cast(f.args[0].clone(), utc_micros());
            let mut group = a.group_expr.clone();
            group[i] = ts.clone().alias(name);
            let mut aggs = a.aggr_expr.clone();
            aggs.push(datafusion::functions_aggregate::expr_fn::max(ts).alias(SESSION_LAST));
            Ok(Transformed::yes(LogicalPlan::Aggregate(Aggregate::try_new(Arc::clone(&a.input), group, aggs)?)))
        }
        other => Ok(Transformed::yes(other.recompute_schema()?)),
    })
    .map(|t| t.data)
}

/// The four physical stages of a windowed rule.
#[derive(Debug)]
pub struct WindowPlans {
    /// Window position and size.
    pub spec: WindowSpec,
    /// GROUP BY columns at the front of a state row (the window's among them).
    group_count: usize,
    /// For session windows: the state column holding the session's newest event time.
    session_last: Option<usize>,
    partial: Arc<dyn ExecutionPlan>,
    reduce: Arc<dyn ExecutionPlan>,
    final_: Arc<dyn ExecutionPlan>,
    upper: Arc<dyn ExecutionPlan>,
}

#[cfg(test)]
impl WindowPlans {
    /// The stages' plans (partial, reduce, final, upper).
    pub(crate) fn stages(&self) -> [&Arc<dyn ExecutionPlan>; 4] {
        [&self.partial, &self.reduce, &self.final_, &self.upper]
    }
}

fn injected_exec(key: &str, schema: SchemaRef) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
    let part = InjectedPartition { key: key.into(), schema: schema.clone() };
    Ok(Arc::new(StreamingTableExec::try_new(schema, vec![Arc::new(part)], None, Vec::new(), false, None)?))
}

impl WindowPlans {
    /// Splits the physical plan of a windowed rule into its incremental stages.
    pub fn new(spec: WindowSpec, plan: Arc<dyn ExecutionPlan>) -> datafusion::error::Result<Self> {
        let mut agg: Option<AggregateExec> = None;
        plan.apply(|node| {
            if let Some(a) = node.downcast_ref::<AggregateExec>() {
                if agg.is_some() {
                    return plan_err!("a windowed rule has exactly one GROUP BY");
                }
                agg = Some(a.clone());
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        let Some(single) = agg else { return plan_err!("windowed rule without an aggregate") };
        if *single.mode() != AggregateMode::Single {
            return plan_err!("unsupported aggregate plan shape ({:?})", single.mode());
        }
        let filters = single.filter_expr().to_vec();
        let input_schema = single.input_schema();
        let partial = AggregateExec::try_new(
            AggregateMode::Partial,
            single.group_expr().clone(),
            single.aggr_expr().to_vec(),
            filters.clone(),
            Arc::clone(single.input()),
            Arc::clone(&input_schema),
        )?;
        let state_schema = partial.schema();
        let group_count = partial.group_expr().expr().len();
        let session_last = match spec.kind {
            WindowKind::Session => {
                let prefix = format!("{SESSION_LAST}[");
                match state_schema.fields().iter().position(|f| f.name().starts_with(&prefix)) {
                    Some(i) => Some(i),
                    None => return plan_err!("session window plan without its `{SESSION_LAST}` state"),
                }
            }
            _ => None,
        };
        let aggs = partial.aggr_expr().to_vec();
        let final_groups = partial.group_expr().as_final();
        let reduce = AggregateExec::try_new(
            AggregateMode::PartialReduce,
            final_groups.clone(),
            aggs.clone(),
            filters.clone(),
            injected_exec(STATE, Arc::clone(&state_schema))?,
            Arc::clone(&input_schema),
        )?;
        let final_ = AggregateExec::try_new(
            AggregateMode::Final,
            final_groups,
            aggs,
            filters,
            injected_exec(CLOSED, state_schema)?,
            input_schema,
        )?;
        let agg_schema = single.schema();
        let upper = plan
            .transform_down(|node| {
                if node.downcast_ref::<AggregateExec>().is_some() {
                    Ok(Transformed::yes(injected_exec(AGG_OUT, Arc::clone(&agg_schema))?))
                } else {
                    Ok(Transformed::no(node))
                }
            })?
            .data;
        Ok(Self {
            spec,
            group_count,
            session_last,
            partial: Arc::new(partial),
            reduce: Arc::new(reduce),
            final_: Arc::new(final_),
            upper,
        })
    }
}

/// Default bound on how far ahead of the engine's clock a row may be and still move time.
pub const DEFAULT_MAX_AHEAD_US: i64 = 30_000_000;
/// Default bound on how far behind the engine's clock a sensor holds its tenant's windows.
pub const DEFAULT_MAX_BEHIND_US: i64 = 600_000_000;

/// Sensors not heard from for this long leave the watermark's sensor map (the most advanced
/// one stays, so windows keep closing when every sensor is idle).
pub const FORGET_AFTER_US: i64 = 3_600_000_000;

/// Mutable state of one windowed rule: open windows' accumulator states and the watermark.
#[derive(Debug, Clone, Default)]
pub struct WindowState {
    /// Accumulator states of open windows (group columns first, window start at `group_index`).
    pub states: Vec<RecordBatch>,
    /// Per sensor: highest event time seen (µs) and when it was last heard from (µs).
    pub sensors: HashMap<String, (i64, i64)>,
    /// Every window ending at or before this is closed and emitted (for tenants without an
    /// entry in `closed`; checkpoints from before per-tenant watermarks).
    pub closed_upto: i64,
    /// Per tenant: every window of the tenant ending at or before this is closed and emitted.
    pub closed: HashMap<String, i64>,
    /// Rows that arrived for already closed windows.
    pub late_rows: u64,
    /// Session windows: the first `merged` batches of `states` hold merged sessions (per key,
    /// non-overlapping); the rest are partial states not merged yet.
    pub merged: usize,
    /// Per sensor: rows stamped further in the future than the skew bound.
    pub skewed: HashMap<String, u64>,
    /// Deltas logged on disk after the last full checkpoint ([`checkpoint`]); in memory only.
    pub logged: u64,
}

impl WindowState {
    /// Up to where the tenant's windows are closed.
    pub fn closed_for(&self, tenant: &str) -> i64 {
        self.closed.get(tenant).copied().unwrap_or(self.closed_upto)
    }

    /// Accumulator state rows held (open window keys; until the next merge a key may be
    /// counted once per unmerged batch).
    pub fn open_rows(&self) -> usize {
        self.states.iter().map(RecordBatch::num_rows).sum()
    }

    /// Memory held by accumulator states, bytes.
    pub fn state_bytes(&self) -> usize {
        self.states.iter().map(RecordBatch::get_array_memory_size).sum()
    }
}

/// Time inputs of one window step.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Processing time, µs (decides which sensors are idle).
    pub now_us: i64,
    /// The rule's allowed lateness, µs.
    pub lateness_us: i64,
    /// Close every open window (end of input).
    pub flush_all: bool,
    /// How far ahead of `now_us` a row may be and still advance its sensor's time, µs.
    pub ahead_us: i64,
    /// How far behind `now_us` a sensor may hold its tenant's windows, µs.
    pub behind_us: i64,
}

/// Result rows of windows that closed, with the window start of each row.
#[derive(Debug, Default)]
pub struct Closed {
    /// Output of the rule's projection (may contain the hidden `__window_start`).
    pub batches: Vec<RecordBatch>,
}

impl WindowPlans {
    /// Feeds one table batch; returns the rows of windows that closed and the new state.
    /// `state` is not modified: the caller commits the returned state once the alerts are
    /// delivered, so a retried batch is never counted twice.
    pub async fn advance(
        &self,
        base: &TaskContext,
        table: &str,
        state: &WindowState,
        batch: Option<&RecordBatch>,
        clock: Clock,
    ) -> datafusion::error::Result<(Closed, WindowState)> {
        let Clock { now_us, lateness_us, flush_all, ahead_us, behind_us } = clock;
        let mut next = state.clone();
        if let Some(batch) = batch {
            let batch = self.drop_late(batch, &mut next)?;
            note_sensors(&batch, now_us, ahead_us, &mut next);
            if batch.num_rows() > 0 {
                let task = task_with(base, Injected([(table.to_string(), vec![batch])].into_iter().collect()));
                let mut states = run_plan(&self.partial, task).await?;
                if let Some(last) = self.session_last {
                    // One partial row per (event time, key): merge the batch's own rows into
                    // sessions first, so pending state grows with the keys, not the events.
                    let merged = sessionize(states, self.spec.group_index, self.group_count, last, self.spec.size_us)?;
                    let task = task_with(base, Injected([(STATE.to_string(), merged)].into_iter().collect()));
                    states = run_plan(&self.reduce, task).await?;
                }
                // With hopping windows a kept row may still belong to some closed windows:
                // those contributions are dropped so a closed window is never emitted twice.
                next.states.extend(self.drop_closed_windows(states, state)?);
            }
        }
        forget_idle(&mut next.sensors, now_us);
        let marks = if flush_all {
            Watermarks { by_tenant: HashMap::new(), default: i64::MAX }
        } else {
            watermarks(&next.sensors, now_us, lateness_us, behind_us)
        };
        let closing = self.closing(&marks);
        let must_close = next.states.iter().any(|b| closing.any_in(b));
        let mut closed_states = Vec::new();
        if let Some(last) = self.session_last {
            if next.states.len() - next.merged.min(next.states.len()) > MERGE_EVERY || must_close {
                closed_states = self.merge_sessions(base, &mut next, last, &closing).await?;
            }
        } else if next.states.len() > MERGE_EVERY || must_close {
            let states = std::mem::take(&mut next.states);
            let task = task_with(base, Injected([(STATE.to_string(), states)].into_iter().collect()));
            next.states = run_plan(&self.reduce, task).await?;
        }
        if must_close && self.session_last.is_none() {
            let mut open = Vec::new();
            for b in &next.states {
                let mask = closing.mask(b);
                closed_states.push(filter_record_batch(b, &mask)?);
                open.push(filter_record_batch(b, &arrow::compute::not(&mask)?)?);
            }
            next.states = open.into_iter().filter(|b| b.num_rows() > 0).collect();
        }
        if must_close && !flush_all {
            // A tenant's windows count as closed up to its watermark once some closed.
            for b in &closed_states {
                for t in closing.tenants(b) {
                    let w = marks.of(&t);
                    let c = next.closed_for(&t).max(w);
                    next.closed.insert(t, c);
                }
            }
        }
        let mut closed = Closed::default();
        closed_states.retain(|b| b.num_rows() > 0);
        if !closed_states.is_empty() {
            let task = task_with(base, Injected([(CLOSED.to_string(), closed_states)].into_iter().collect()));
            let agg_out = run_plan(&self.final_, task).await?;
            let task = task_with(base, Injected([(AGG_OUT.to_string(), agg_out)].into_iter().collect()));
            closed.batches = run_plan(&self.upper, task).await?;
        }
        Ok((closed, next))
    }

    fn drop_closed_windows(
        &self,
        states: Vec<RecordBatch>,
        state: &WindowState,
    ) -> datafusion::error::Result<Vec<RecordBatch>> {
        if (state.closed_upto == 0 && state.closed.is_empty()) || self.spec.kind != WindowKind::Hop {
            return Ok(states);
        }
        let size = self.spec.size_us;
        states
            .into_iter()
            .map(|b| {
                let starts = b.column(self.spec.group_index).as_primitive::<TimestampMicrosecondType>();
                let tenants = Tenants::of(&b, TENANT_KEY);
                let mask: BooleanArray = starts
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let closed = state.closed_for(tenants.tenant(i));
                        Some(s.is_some_and(|s| s + size > closed))
                    })
                    .collect();
                Ok(filter_record_batch(&b, &mask)?)
            })
            .collect()
    }

    /// Merges pending session states into sessions and splits off those that close. Only the
    /// keys with new rows, and sessions that may close, are re-merged: a merged session of a
    /// key without new rows cannot change, so the work per batch follows the batch, not the
    /// number of open sessions.
    async fn merge_sessions(
        &self,
        base: &TaskContext,
        next: &mut WindowState,
        last: usize,
        closing: &Closing,
    ) -> datafusion::error::Result<Vec<RecordBatch>> {
        use arrow::row::{RowConverter, SortField};
        let pending = next.states.split_off(next.merged.min(next.states.len()));
        let merged = std::mem::take(&mut next.states);
        let Some(schema) = pending.first().or(merged.first()).map(|b| b.schema()) else { return Ok(Vec::new()) };
        let keys: Vec<usize> = (0..self.group_count).filter(|i| *i != self.spec.group_index).collect();
        let converter =
            RowConverter::new(keys.iter().map(|&i| SortField::new(schema.field(i).data_type().clone())).collect())?;
        let key_rows = |b: &RecordBatch| {
            converter.convert_columns(&keys.iter().map(|&i| Arc::clone(b.column(i))).collect::<Vec<_>>())
        };
        let mut touched_keys: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
        for b in &pending {
            let rows = key_rows(b)?;
            touched_keys.extend(rows.iter().map(|r| r.as_ref().to_vec()));
        }
        let (mut work, mut keep) = (pending, Vec::new());
        for b in merged {
            let rows = key_rows(&b)?;
            let closes = closing.mask(&b);
            let mask: BooleanArray = (0..b.num_rows())
                .map(|r| Some(closes.value(r) || touched_keys.contains(rows.row(r).as_ref())))
                .collect();
            match mask.true_count() {
                0 => keep.push(b),
                n if n == b.num_rows() => work.push(b),
                _ => {
                    work.push(filter_record_batch(&b, &mask)?);
                    keep.push(filter_record_batch(&b, &arrow::compute::not(&mask)?)?);
                }
            }
        }
        let work = sessionize(work, self.spec.group_index, self.group_count, last, self.spec.size_us)?;
        let task = task_with(base, Injected([(STATE.to_string(), work)].into_iter().collect()));
        let mut closed = Vec::new();
        for b in run_plan(&self.reduce, task).await? {
            let mask = closing.mask(&b);
            closed.push(filter_record_batch(&b, &mask)?);
            let open = filter_record_batch(&b, &arrow::compute::not(&mask)?)?;
            if open.num_rows() > 0 {
                keep.push(open);
            }
        }
        // Merged sessions are final per key: fragments are concatenated, never reduced again.
        if keep.len() > MERGE_EVERY {
            keep = vec![arrow::compute::concat_batches(&schema, &keep)?];
        }
        next.merged = keep.len();
        next.states = keep;
        Ok(closed)
    }

    /// Which state rows close at these watermarks (each row at its tenant's).
    fn closing(&self, marks: &Watermarks) -> Closing {
        let size = self.spec.size_us;
        // A session [start, last + gap) closes once the watermark reaches its end; a window
        // [start, start + size) once start + size <= watermark.
        let below = |w: i64| if w == i64::MAX { i64::MAX } else { w.saturating_sub(size).saturating_add(1) };
        Closing {
            column: self.session_last.unwrap_or(self.spec.group_index),
            below: marks.by_tenant.iter().map(|(t, w)| (t.clone(), below(*w))).collect(),
            default: below(marks.default),
        }
    }

    /// Removes (and counts) rows whose window already closed.
    fn drop_late(&self, batch: &RecordBatch, state: &mut WindowState) -> datafusion::error::Result<RecordBatch> {
        if state.closed_upto == 0 && state.closed.is_empty() {
            return Ok(batch.clone());
        }
        let (size, slide) = (self.spec.size_us, self.spec.slide_us);
        let ts = ts_column(batch)?;
        let tenants = Tenants::of(batch, vedette_schemas::tables::TENANT);
        let mut last: (&str, i64) = ("\u{0}", 0);
        let mut closed = |i: usize| {
            let tenant = tenants.tenant(i);
            if tenant != last.0 {
                last = (tenant, state.closed_for(tenant));
            }
            last.1
        };
        let mask: BooleanArray = ts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                Some(t.is_some_and(|t| match self.spec.kind {
                    // A row older than the last closing watermark could belong to a session
                    // already emitted (one ending after the row's time): late.
                    WindowKind::Session => t >= closed(i),
                    // A row is late when even its last window (the newest start <= ts) closed.
                    WindowKind::Tumble | WindowKind::Hop => t.div_euclid(slide) * slide + size > closed(i),
                }))
            })
            .collect();
        let kept = mask.true_count();
        state.late_rows += (batch.num_rows() - kept) as u64;
        Ok(if kept == batch.num_rows() { batch.clone() } else { filter_record_batch(batch, &mask)? })
    }
}

fn ts_column(batch: &RecordBatch) -> datafusion::error::Result<&TimestampMicrosecondArray> {
    batch
        .column_by_name(vedette_schemas::tables::TS)
        .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
        .ok_or_else(|| DataFusionError::Internal("telemetry batch without a µs `ts` column".into()))
}

fn note_sensors(batch: &RecordBatch, now_us: i64, ahead_us: i64, state: &mut WindowState) {
    let Ok(ts) = ts_column(batch) else { return };
    let ahead_limit = now_us.saturating_add(ahead_us);
    let Some(ids) = batch.column_by_name(vedette_schemas::tables::SENSOR_ID).and_then(|c| c.as_string_opt::<i32>())
    else {
        return;
    };
    // A batch usually holds few sensors: take each sensor's maximum here, without allocating
    // per row, then fold it into the state.
    let tenants = batch.column_by_name(vedette_schemas::tables::TENANT).and_then(|c| c.as_string_opt::<i32>());
    let tenant = |i: usize| tenants.filter(|t| !t.is_null(i)).map_or("", |t| t.value(i));
    let mut batch_max: HashMap<(&str, &str), i64> = HashMap::new();
    // Rows of one sensor come in runs: fold a run, touch the map once per run.
    let mut run: Option<((&str, &str), i64)> = None;
    for i in 0..batch.num_rows() {
        if ts.is_null(i) {
            continue;
        }
        let id = if ids.is_null(i) { "" } else { ids.value(i) };
        let t = ts.value(i);
        if t > ahead_limit {
            // A clock running ahead: the row is evaluated, but never moves time forward.
            *state.skewed.entry(id.to_string()).or_default() += 1;
            continue;
        }
        let key = (tenant(i), id);
        match &mut run {
            Some((k, max)) if *k == key => *max = (*max).max(t),
            _ => {
                if let Some((k, max)) = run.replace((key, t)) {
                    let e = batch_max.entry(k).or_insert(max);
                    *e = (*e).max(max);
                }
            }
        }
    }
    if let Some((k, max)) = run {
        let e = batch_max.entry(k).or_insert(max);
        *e = (*e).max(max);
    }
    let sensors = &mut state.sensors;
    for ((tenant, id), t) in batch_max {
        let key = sensor_key(tenant, id);
        match sensors.get_mut(&key) {
            Some(e) => {
                e.0 = e.0.max(t);
                e.1 = now_us;
            }
            None => {
                sensors.insert(key, (t, now_us));
            }
        }
    }
}

/// Forgets sensors idle for [`FORGET_AFTER_US`], keeping each tenant's most advanced one.
fn forget_idle(sensors: &mut HashMap<String, (i64, i64)>, now_us: i64) {
    let stale = |seen: i64| now_us.saturating_sub(seen) >= FORGET_AFTER_US;
    if !sensors.values().any(|(_, seen)| stale(*seen)) {
        return;
    }
    let mut keep: HashMap<&str, (&String, i64)> = HashMap::new();
    for (k, (max, _)) in sensors.iter() {
        let e = keep.entry(key_tenant(k)).or_insert((k, *max));
        if *max > e.1 {
            *e = (k, *max);
        }
    }
    let keep: std::collections::HashSet<String> = keep.values().map(|(k, _)| (*k).clone()).collect();
    sensors.retain(|k, (_, seen)| !stale(*seen) || keep.contains(k));
}

/// Minimum over non-idle sensors of their highest event time (a sensor further behind the
/// engine's clock than `behind_us` counts as that far behind), minus lateness.
fn watermark(sensors: &HashMap<String, (i64, i64)>, now_us: i64, lateness_us: i64, behind_us: i64) -> i64 {
    let floor = now_us.saturating_sub(behind_us);
    let active = sensors.values().filter(|(_, seen)| now_us.saturating_sub(*seen) < IDLE_AFTER_US);
    let min = active.map(|(max, _)| (*max).max(floor)).min();
    // All sensors idle: the most advanced one's time stands (windows still close).
    let min = min.or_else(|| sensors.values().map(|(max, _)| *max).max()).unwrap_or(i64::MIN);
    min.saturating_sub(lateness_us)
}

/// Group column carrying each state row's tenant.
const TENANT_KEY: &str = "__tenant_key";

/// Key of a sensor in [`WindowState::sensors`]: `tenant/sensor` (`/` is in neither).
fn sensor_key(tenant: &str, sensor: &str) -> String {
    format!("{tenant}/{sensor}")
}

/// The tenant of a [`WindowState::sensors`] key (`""` for keys from before per-tenant
/// watermarks).
fn key_tenant(key: &str) -> &str {
    key.split_once('/').map_or("", |(t, _)| t)
}

/// A batch's tenant column as UTF-8 strings (cast if stored otherwise), without copying per
/// row; `tenant(i)` is `""` when the column or the value is missing.
struct Tenants(Option<arrow::array::StringArray>);

impl Tenants {
    fn of(batch: &RecordBatch, column: &str) -> Self {
        Self(
            batch
                .column_by_name(column)
                .and_then(|c| arrow::compute::cast(c, &DataType::Utf8).ok())
                .map(|c| c.as_string::<i32>().clone()),
        )
    }

    fn tenant(&self, i: usize) -> &str {
        match &self.0 {
            Some(c) if !c.is_null(i) => c.value(i),
            _ => "",
        }
    }
}

/// Watermarks per tenant: a tenant's windows close on its own sensors' time only.
struct Watermarks {
    by_tenant: HashMap<String, i64>,
    /// For state rows of a tenant without sensors (all forgotten).
    default: i64,
}

impl Watermarks {
    fn of(&self, tenant: &str) -> i64 {
        self.by_tenant.get(tenant).copied().unwrap_or(self.default)
    }
}

fn watermarks(sensors: &HashMap<String, (i64, i64)>, now_us: i64, lateness_us: i64, behind_us: i64) -> Watermarks {
    let mut by: HashMap<&str, HashMap<String, (i64, i64)>> = HashMap::new();
    for (k, v) in sensors {
        by.entry(key_tenant(k)).or_default().insert(k.clone(), *v);
    }
    let by_tenant: HashMap<String, i64> =
        by.iter().map(|(t, s)| (t.to_string(), watermark(s, now_us, lateness_us, behind_us))).collect();
    let default = by_tenant.values().copied().min().unwrap_or(i64::MIN);
    Watermarks { by_tenant, default }
}

/// State rows whose timestamp in `column` (window start, or a session's newest event) is
/// below their tenant's `below` close.
#[derive(Debug, Clone)]
struct Closing {
    column: usize,
    below: HashMap<String, i64>,
    default: i64,
}

impl Closing {
    /// The threshold every row gets when all tenants share one (the common, single-tenant case).
    fn uniform(&self) -> Option<i64> {
        self.below.values().all(|b| *b == self.default).then_some(self.default)
    }

    fn any_in(&self, b: &RecordBatch) -> bool {
        let highest = self.below.values().copied().fold(self.default, i64::max);
        let min = arrow::compute::min(b.column(self.column).as_primitive::<TimestampMicrosecondType>());
        // Nothing is below even the highest threshold: nothing closes (no per-row work).
        min.is_some_and(|m| m < highest) && self.mask(b).true_count() > 0
    }

    fn mask(&self, b: &RecordBatch) -> BooleanArray {
        let times = b.column(self.column).as_primitive::<TimestampMicrosecondType>();
        if let Some(below) = self.uniform() {
            return times.iter().map(|t| Some(t.is_some_and(|t| t < below))).collect();
        }
        let tenants = Tenants::of(b, TENANT_KEY);
        let mut last: (&str, i64) = ("\u{0}", 0);
        times
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let tenant = tenants.tenant(i);
                if tenant != last.0 {
                    last = (tenant, self.below.get(tenant).copied().unwrap_or(self.default));
                }
                Some(t.is_some_and(|t| t < last.1))
            })
            .collect()
    }

    /// Tenants of the rows of `b`.
    fn tenants(&self, b: &RecordBatch) -> std::collections::BTreeSet<String> {
        let tenants = Tenants::of(b, TENANT_KEY);
        let mut out = std::collections::BTreeSet::new();
        let mut last = "\u{0}";
        for i in 0..b.num_rows() {
            let t = tenants.tenant(i);
            if t != last {
                out.insert(t.to_string());
                last = t;
            }
        }
        out
    }
}

/// Merges session state rows: per key (the GROUP BY columns other than the window), rows
/// whose spans `[start, last + gap)` overlap form one session, and each row's window column
/// is set to its session's start, so the reduce step merges their accumulator states.
fn sessionize(
    states: Vec<RecordBatch>,
    window: usize,
    group_count: usize,
    last: usize,
    gap: i64,
) -> datafusion::error::Result<Vec<RecordBatch>> {
    use arrow::row::{RowConverter, SortField};
    let Some(first) = states.first() else { return Ok(states) };
    let schema = first.schema();
    let keys: Vec<usize> = (0..group_count).filter(|i| *i != window).collect();
    let converter =
        RowConverter::new(keys.iter().map(|&i| SortField::new(schema.field(i).data_type().clone())).collect())?;
    let rows = states
        .iter()
        .map(|b| converter.convert_columns(&keys.iter().map(|&i| Arc::clone(b.column(i))).collect::<Vec<_>>()))
        .collect::<Result<Vec<_>, _>>()?;
    // (key, start, last, batch, row) for every state row, then each key's rows by start.
    let mut key_ids: HashMap<arrow::row::Row<'_>, u32> = HashMap::new();
    let mut entries: Vec<(u32, i64, i64, u32, u32)> = Vec::with_capacity(states.iter().map(|b| b.num_rows()).sum());
    for (bi, b) in states.iter().enumerate() {
        let starts = b.column(window).as_primitive::<TimestampMicrosecondType>();
        let lasts = b.column(last).as_primitive::<TimestampMicrosecondType>();
        for r in 0..b.num_rows() {
            if starts.is_null(r) || lasts.is_null(r) {
                continue;
            }
            let next_id = key_ids.len() as u32;
            let key = *key_ids.entry(rows[bi].row(r)).or_insert(next_id);
            entries.push((key, starts.value(r), lasts.value(r), bi as u32, r as u32));
        }
    }
    entries.sort_unstable_by_key(|e| (e.0, e.1));
    let mut new_starts: Vec<Vec<i64>> =
        states.iter().map(|b| b.column(window).as_primitive::<TimestampMicrosecondType>().values().to_vec()).collect();
    let mut current: Option<(u32, i64, i64)> = None; // (key, session start, session end)
    for &(key, start, last, bi, r) in &entries {
        let end = last.saturating_add(gap);
        current = match current {
            Some((k, s, e)) if k == key && start < e => Some((k, s, e.max(end))),
            _ => Some((key, start, end)),
        };
        if let Some((_, s, _)) = current {
            new_starts[bi as usize][r as usize] = s;
        }
    }
    states
        .iter()
        .zip(new_starts)
        .map(|(b, starts)| {
            let old = b.column(window).as_primitive::<TimestampMicrosecondType>();
            let col = TimestampMicrosecondArray::new(starts.into(), old.nulls().cloned())
                .with_data_type(old.data_type().clone());
            let mut columns = b.columns().to_vec();
            columns[window] = Arc::new(col);
            Ok(RecordBatch::try_new(b.schema(), columns)?)
        })
        .collect()
}
