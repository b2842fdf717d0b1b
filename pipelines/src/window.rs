//! Event-time windows: `GROUP BY tumble(ts, INTERVAL '1 minute'), keys … HAVING …`.
//!
//! A windowed rule runs incrementally with DataFusion's own two-phase aggregation, so its
//! results are exactly those of the batch query:
//!
//! * per batch, a `Partial` aggregate turns the batch's rows into accumulator states;
//! * states are merged with `PartialReduce` (state in, state out);
//! * once the watermark passes a window's end, its states go through `Final`, then through
//!   the rule's HAVING and projection, and each result row becomes an alert.
//!
//! The watermark is the minimum, over sensors that sent events recently, of the highest event
//! time seen from that sensor, minus the rule's allowed lateness: one sensor's fast clock
//! cannot close another's windows, and a silent sensor stops holding windows open once idle.
//! Rows that arrive for an already closed window are late: counted, never silently merged.

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
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::streaming::StreamingTableExec;
use datafusion::physical_plan::{ExecutionPlan, collect};

use crate::compile::{Injected, InjectedPartition, task_with};

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
            Some(DataType::Timestamp(..)) => Ok(DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))),
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
            Some(DataType::Timestamp(..)) => Ok(DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))),
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
    Arc::new(arrow::datatypes::Field::new("item", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), true))
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

/// Where the window is in a windowed rule's aggregate.
#[derive(Debug, Clone, Copy)]
pub struct WindowSpec {
    /// Position of the window among the GROUP BY expressions (and aggregate output columns).
    pub group_index: usize,
    /// Window length, µs.
    pub size_us: i64,
    /// Distance between window starts, µs (= size for tumbling windows).
    pub slide_us: i64,
}

/// Finds `tumble(…)` or `hop(…)` among the GROUP BY expressions of the (single) aggregate of
/// `plan`.
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
                match f.name() {
                    "tumble" => {
                        let size = interval(1, "size")?;
                        found = Some(WindowSpec { group_index: i, size_us: size, slide_us: size });
                    }
                    "hop" => {
                        let (slide, size) = hop_params(interval(1, "slide")?, interval(2, "size")?)?;
                        found = Some(WindowSpec { group_index: i, size_us: size, slide_us: slide });
                    }
                    _ => {}
                }
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

/// The four physical stages of a windowed rule.
#[derive(Debug)]
pub struct WindowPlans {
    /// Window position and size.
    pub spec: WindowSpec,
    partial: Arc<dyn ExecutionPlan>,
    reduce: Arc<dyn ExecutionPlan>,
    final_: Arc<dyn ExecutionPlan>,
    upper: Arc<dyn ExecutionPlan>,
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
        Ok(Self { spec, partial: Arc::new(partial), reduce: Arc::new(reduce), final_: Arc::new(final_), upper })
    }
}

/// Mutable state of one windowed rule: open windows' accumulator states and the watermark.
#[derive(Debug, Clone, Default)]
pub struct WindowState {
    /// Accumulator states of open windows (group columns first, window start at `group_index`).
    pub states: Vec<RecordBatch>,
    /// Per sensor: highest event time seen (µs) and when it was last heard from (µs).
    pub sensors: HashMap<String, (i64, i64)>,
    /// Every window ending at or before this is closed and emitted.
    pub closed_upto: i64,
    /// Rows that arrived for already closed windows.
    pub late_rows: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    sensors: HashMap<String, (i64, i64)>,
    closed_upto: i64,
    late_rows: u64,
}

impl WindowState {
    /// Accumulator state rows held (open window keys; until the next merge a key may be
    /// counted once per unmerged batch).
    pub fn open_rows(&self) -> usize {
        self.states.iter().map(RecordBatch::num_rows).sum()
    }

    /// Memory held by accumulator states, bytes.
    pub fn state_bytes(&self) -> usize {
        self.states.iter().map(RecordBatch::get_array_memory_size).sum()
    }

    /// Checkpoint bytes: `u32 BE header length | JSON header | Arrow IPC stream of the states`.
    pub fn to_bytes(&self) -> datafusion::error::Result<Vec<u8>> {
        let header = serde_json::to_vec(&Header {
            sensors: self.sensors.clone(),
            closed_upto: self.closed_upto,
            late_rows: self.late_rows,
        })
        .map_err(|e| DataFusionError::Internal(e.to_string()))?;
        let mut out = (header.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&header);
        if let Some(first) = self.states.first() {
            let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut out, &first.schema())?;
            for b in &self.states {
                w.write(b)?;
            }
            w.finish()?;
        }
        Ok(out)
    }

    /// Reads a checkpoint written by [`WindowState::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> datafusion::error::Result<Self> {
        let bad = |r: &str| DataFusionError::Internal(format!("corrupt window checkpoint: {r}"));
        let len = bytes.get(..4).ok_or_else(|| bad("too short"))?;
        let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
        let header = bytes.get(4..4 + len).ok_or_else(|| bad("truncated header"))?;
        let h: Header = serde_json::from_slice(header).map_err(|e| bad(&e.to_string()))?;
        let rest = &bytes[4 + len..];
        let states = if rest.is_empty() {
            Vec::new()
        } else {
            arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(rest), None)?
                .collect::<Result<Vec<_>, _>>()?
        };
        Ok(Self { states, sensors: h.sensors, closed_upto: h.closed_upto, late_rows: h.late_rows })
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
        let Clock { now_us, lateness_us, flush_all } = clock;
        let mut next = state.clone();
        if let Some(batch) = batch {
            let batch = self.drop_late(batch, &mut next)?;
            note_sensors(&batch, now_us, &mut next.sensors);
            if batch.num_rows() > 0 {
                let task = task_with(base, Injected([(table.to_string(), vec![batch])].into_iter().collect()));
                let states = collect(Arc::clone(&self.partial), task).await?;
                // With hopping windows a kept row may still belong to some closed windows:
                // those contributions are dropped so a closed window is never emitted twice.
                next.states.extend(self.drop_closed_windows(states, state.closed_upto)?);
            }
        }
        let watermark = if flush_all { i64::MAX } else { watermark(&next.sensors, now_us, lateness_us) };
        let size = self.spec.size_us;
        // Windows [start, start + size) with start + size <= watermark close now.
        let close_before =
            if watermark == i64::MAX { i64::MAX } else { watermark.saturating_sub(size).saturating_add(1) };
        let must_close = next.states.iter().any(|b| min_window_start(b, self.spec.group_index) < Some(close_before));
        if next.states.len() > MERGE_EVERY || must_close {
            let task = task_with(
                base,
                Injected([(STATE.to_string(), std::mem::take(&mut next.states))].into_iter().collect()),
            );
            next.states = collect(Arc::clone(&self.reduce), task).await?;
        }
        let mut closed_states = Vec::new();
        if must_close {
            let mut open = Vec::new();
            for b in &next.states {
                let starts = b.column(self.spec.group_index).as_primitive::<TimestampMicrosecondType>();
                let mask: BooleanArray = starts.iter().map(|s| Some(s.is_some_and(|s| s < close_before))).collect();
                closed_states.push(filter_record_batch(b, &mask)?);
                open.push(filter_record_batch(b, &arrow::compute::not(&mask)?)?);
            }
            next.states = open.into_iter().filter(|b| b.num_rows() > 0).collect();
            if watermark != i64::MAX {
                next.closed_upto = next.closed_upto.max(watermark);
            }
        }
        let mut closed = Closed::default();
        closed_states.retain(|b| b.num_rows() > 0);
        if !closed_states.is_empty() {
            let task = task_with(base, Injected([(CLOSED.to_string(), closed_states)].into_iter().collect()));
            let agg_out = collect(Arc::clone(&self.final_), task).await?;
            let task = task_with(base, Injected([(AGG_OUT.to_string(), agg_out)].into_iter().collect()));
            closed.batches = collect(Arc::clone(&self.upper), task).await?;
        }
        Ok((closed, next))
    }

    fn drop_closed_windows(
        &self,
        states: Vec<RecordBatch>,
        closed_upto: i64,
    ) -> datafusion::error::Result<Vec<RecordBatch>> {
        if closed_upto == 0 || self.spec.slide_us == self.spec.size_us {
            return Ok(states);
        }
        let size = self.spec.size_us;
        states
            .into_iter()
            .map(|b| {
                let starts = b.column(self.spec.group_index).as_primitive::<TimestampMicrosecondType>();
                let mask: BooleanArray =
                    starts.iter().map(|s| Some(s.is_some_and(|s| s + size > closed_upto))).collect();
                Ok(filter_record_batch(&b, &mask)?)
            })
            .collect()
    }

    /// Removes (and counts) rows whose window already closed.
    fn drop_late(&self, batch: &RecordBatch, state: &mut WindowState) -> datafusion::error::Result<RecordBatch> {
        if state.closed_upto == 0 {
            return Ok(batch.clone());
        }
        let (size, slide) = (self.spec.size_us, self.spec.slide_us);
        // A row is late when even its last window (the newest start <= ts) has closed.
        let ts = ts_column(batch)?;
        let mask: BooleanArray = ts
            .iter()
            .map(|t| Some(t.is_some_and(|t| t.div_euclid(slide) * slide + size > state.closed_upto)))
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

fn note_sensors(batch: &RecordBatch, now_us: i64, sensors: &mut HashMap<String, (i64, i64)>) {
    let Ok(ts) = ts_column(batch) else { return };
    let Some(ids) = batch.column_by_name(vedette_schemas::tables::SENSOR_ID).and_then(|c| c.as_string_opt::<i32>())
    else {
        return;
    };
    // A batch usually holds few sensors: take each sensor's maximum here, without allocating
    // per row, then fold it into the state.
    let mut batch_max: HashMap<&str, i64> = HashMap::new();
    for i in 0..batch.num_rows() {
        if ts.is_null(i) {
            continue;
        }
        let id = if ids.is_null(i) { "" } else { ids.value(i) };
        let t = ts.value(i);
        let e = batch_max.entry(id).or_insert(t);
        *e = (*e).max(t);
    }
    for (id, t) in batch_max {
        match sensors.get_mut(id) {
            Some(e) => {
                e.0 = e.0.max(t);
                e.1 = now_us;
            }
            None => {
                sensors.insert(id.to_string(), (t, now_us));
            }
        }
    }
}

/// Minimum over non-idle sensors of their highest event time, minus lateness.
fn watermark(sensors: &HashMap<String, (i64, i64)>, now_us: i64, lateness_us: i64) -> i64 {
    let active = sensors.values().filter(|(_, seen)| now_us.saturating_sub(*seen) < IDLE_AFTER_US);
    let min = active.map(|(max, _)| *max).min();
    // All sensors idle: the most advanced one's time stands (windows still close).
    let min = min.or_else(|| sensors.values().map(|(max, _)| *max).max()).unwrap_or(i64::MIN);
    min.saturating_sub(lateness_us)
}

fn min_window_start(b: &RecordBatch, idx: usize) -> Option<i64> {
    arrow::compute::min(b.column(idx).as_primitive::<TimestampMicrosecondType>())
}
