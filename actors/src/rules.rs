//! Rule workers: one per telemetry table, running that table's compiled rules on each batch.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use arrow::array::RecordBatch;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::warn;
use vedette_pipelines::alert::Alert;
use vedette_pipelines::compile::TableRules;
use vedette_pipelines::suppress::{Suppressions, period_start};

use crate::commit::{CommitError, Committed, Effects};
use crate::metrics::Metrics;
use crate::sinks::Router;

/// Rule worker messages.
pub enum RuleWorkerMsg {
    /// Evaluate a batch of the given frames and commit its effects (alerts in every spool,
    /// window checkpoints, the frames' sequence numbers) in one durable step; replies with
    /// what was committed, or with the error (nothing was committed: the caller retries).
    Evaluate(RecordBatch, Vec<(Arc<str>, u64)>, RpcReplyPort<Result<Committed, EvalError>>),
    /// Advance event-time windows without new rows (closes windows of idle sensors).
    Tick,
    /// Switch to the rule set in the shared handle (a hot apply). Handled between two
    /// batches, so every batch is evaluated by exactly one rule set.
    Swap(RpcReplyPort<usize>),
}

/// How often windows are advanced without new rows.
pub const TICK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The rule set a table's worker runs; the engine replaces it on a hot apply. Shared with the
/// worker's factory, so a restarted worker starts on the current set.
pub type SharedRules = Arc<RwLock<TableRules>>;

/// A rule worker.
pub struct RuleWorker {
    /// Compiled rules of the table (plans are shared, never re-planned on restart or apply).
    pub rules: SharedRules,
    /// Where alerts go (every sink's spool) and where a batch's effects are committed
    /// together (its state store holds the window checkpoints, tree `windows`).
    pub sinks: Router,
    /// Metrics.
    pub metrics: Metrics,
    /// Repeats of suppressing rules' alerts, waiting for their period to end (shared by the
    /// worker's incarnations).
    pub suppressions: Arc<std::sync::Mutex<Suppressions>>,
}

/// Why a batch's effects were not committed.
#[derive(Debug, Clone)]
pub enum EvalError {
    /// Nothing was committed: evaluating the batch again is safe.
    Retry(String),
    /// The commit may be partly in memory but is not on disk: do not evaluate the batch again
    /// and do not acknowledge its frames (the sensors resend them after reconnecting).
    Abandon(String),
}

impl std::fmt::Display for EvalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Retry(e) | Self::Abandon(e) => f.write_str(e),
        }
    }
}

/// Reads the current rule set out of a shared handle.
pub fn current(rules: &SharedRules) -> TableRules {
    rules.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
}

impl RuleWorker {
    /// Records metrics, commits the batch's effects in one durable step, and only then applies
    /// its window state in memory, so a batch retried after a failure is never counted twice.
    async fn deliver(
        &self,
        rules: &TableRules,
        mut eval: vedette_pipelines::compile::Evaluation,
        frames: Vec<(Arc<str>, u64)>,
    ) -> Result<Committed, EvalError> {
        for (meta, took) in &eval.timings {
            self.metrics.rule_eval.with_label_values(&[&meta.id]).observe(took.as_secs_f64());
        }
        for e in &eval.errors {
            if let vedette_pipelines::RuleError::Eval { rule, .. } = e {
                self.metrics.rule_errors.with_label_values(&[rule]).inc();
            }
            warn!(table = %rules.table(), error = %e, "Rule failed on a batch; other rules continue.");
        }
        let windows =
            rules.checkpoint_updates(&mut eval.window_updates).map_err(|e| EvalError::Retry(e.to_string()))?;
        // Alerts of suppressing rules, with the end of their suppression period.
        let suppressing: Vec<(Alert, i64)> = {
            let periods: HashMap<&str, i64> =
                rules.rules().iter().filter_map(|r| Some((r.meta.id.as_str(), r.meta.suppress_us?))).collect();
            eval.alerts
                .iter()
                .filter_map(|a| {
                    let p = *periods.get(a.rule_id.as_str())?;
                    let at = a.window_start.unwrap_or(a.ts).timestamp_micros();
                    Some((a.clone(), period_start(at, p).saturating_add(p)))
                })
                .collect()
        };
        let effects = Effects { alerts: eval.alerts, windows, frames, claimed: Vec::new() };
        let alerts: Vec<(String, &'static str)> =
            effects.alerts.iter().map(|a| (a.rule_id.clone(), a.severity.as_str())).collect();
        let committed = match self.sinks.commit(effects).await {
            Ok(c) => c,
            Err(e @ CommitError::Flush(_)) => {
                // The transaction is applied (only the flush failed): keep memory in step.
                rules.commit(eval.window_updates);
                return Err(EvalError::Abandon(e.to_string()));
            }
            Err(e) => return Err(EvalError::Retry(e.to_string())),
        };
        for (rule, severity) in alerts {
            self.metrics.alerts.with_label_values(&[&rule, severity]).inc();
        }
        if !suppressing.is_empty() {
            let mut repeats: HashMap<uuid::Uuid, usize> = HashMap::new();
            for id in &committed.repeated {
                *repeats.entry(*id).or_default() += 1;
            }
            let mut s = self.suppressions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for (alert, end) in &suppressing {
                match repeats.get_mut(&alert.alert_id) {
                    Some(n) if *n > 0 => {
                        *n -= 1;
                        s.repeated(alert, *end);
                    }
                    _ => s.first(alert, *end),
                }
            }
        }
        rules.commit(eval.window_updates);
        for (rule, late) in rules.late_rows() {
            self.metrics.late_rows.with_label_values(&[&rule]).set(late as i64);
        }
        Ok(committed)
    }
}

impl Actor for RuleWorker {
    type Msg = RuleWorkerMsg;
    /// The rule set in use; replaced only by [`RuleWorkerMsg::Swap`].
    type State = TableRules;
    type Arguments = ();

    async fn pre_start(&self, myself: ActorRef<Self::Msg>, _args: ()) -> Result<TableRules, ActorProcessingErr> {
        // Ticks are cheap without windowed rules, and a hot apply may add some.
        myself.send_interval(TICK_EVERY, || RuleWorkerMsg::Tick);
        Ok(current(&self.rules))
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        rules: &mut TableRules,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RuleWorkerMsg::Evaluate(batch, frames, reply) => {
                let eval = rules.evaluate(&batch, chrono::Utc::now()).await;
                let _ = reply.send(self.deliver(rules, eval, frames).await);
            }
            RuleWorkerMsg::Tick => {
                if let Err(e) = self.sinks.tick().await {
                    warn!(error = %e, "Spooling alert-storm summaries failed.");
                }
                let summaries = self
                    .suppressions
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .expired(chrono::Utc::now());
                if !summaries.is_empty()
                    && let Err(e) =
                        self.sinks.commit_admitted(Effects { alerts: summaries, ..Effects::default() }).await
                {
                    warn!(error = %e, "Spooling suppression summaries failed (their counts are lost).");
                }
                if !rules.rules().iter().any(|r| r.is_windowed()) {
                    return Ok(());
                }
                let eval = rules.tick(chrono::Utc::now(), false).await;
                if let Err(e) = self.deliver(rules, eval, Vec::new()).await {
                    // The window state was not committed: the next tick or batch retries.
                    warn!(table = %rules.table(), error = %e, "Delivering window alerts failed; will retry.");
                }
            }
            RuleWorkerMsg::Swap(reply) => {
                *rules = current(&self.rules);
                if let Some(store) = self.sinks.store() {
                    for key in rules.prune_windows() {
                        crate::windows::remove(&store.windows, &key);
                    }
                } else {
                    rules.prune_windows();
                }
                let _ = reply.send(rules.rules().len());
            }
        }
        Ok(())
    }
}
