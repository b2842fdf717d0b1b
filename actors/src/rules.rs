//! Rule workers: one per telemetry table, running that table's compiled rules on each batch.

use std::sync::{Arc, RwLock};

use arrow::array::RecordBatch;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::warn;
use vedette_pipelines::compile::TableRules;

use crate::metrics::Metrics;
use crate::sinks::Router;

/// Rule worker messages.
pub enum RuleWorkerMsg {
    /// Evaluate a batch and deliver its alerts; replies with the alert count once every sink
    /// confirmed, or with the delivery error (the caller retries).
    Evaluate(RecordBatch, RpcReplyPort<Result<usize, String>>),
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
    /// Where alerts go (every sink's spool).
    pub sinks: Router,
    /// Metrics.
    pub metrics: Metrics,
    /// Where window state is checkpointed (the sled tree `windows`). The ledger's flush before
    /// each ack makes it durable together with the frame's sequence number.
    pub checkpoints: Option<sled::Tree>,
}

/// Reads the current rule set out of a shared handle.
pub fn current(rules: &SharedRules) -> TableRules {
    rules.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
}

impl RuleWorker {
    /// Records metrics, delivers the alerts, and only then commits window state, so a batch
    /// retried after a failure is never counted twice.
    async fn deliver(&self, rules: &TableRules, eval: vedette_pipelines::compile::Evaluation) -> Result<usize, String> {
        for (meta, took) in &eval.timings {
            self.metrics.rule_eval.with_label_values(&[&meta.id]).observe(took.as_secs_f64());
        }
        for e in &eval.errors {
            if let vedette_pipelines::RuleError::Eval { rule, .. } = e {
                self.metrics.rule_errors.with_label_values(&[rule]).inc();
            }
            warn!(table = %rules.table(), error = %e, "Rule failed on a batch; other rules continue.");
        }
        for a in &eval.alerts {
            self.metrics.alerts.with_label_values(&[&a.rule_id, a.severity.as_str()]).inc();
        }
        let n = eval.alerts.len();
        self.sinks.route(eval.alerts).await?;
        let updated: Vec<String> = eval.window_updates.iter().map(|(key, _)| key.clone()).collect();
        rules.commit(eval.window_updates);
        if let Some(tree) = &self.checkpoints {
            for (key, bytes) in rules.checkpoint(&updated).map_err(|e| e.to_string())? {
                tree.insert(key.as_bytes(), bytes).map_err(|e| format!("window checkpoint: {e}"))?;
            }
        }
        for (rule, late) in rules.late_rows() {
            self.metrics.late_rows.with_label_values(&[&rule]).set(late as i64);
        }
        Ok(n)
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
            RuleWorkerMsg::Evaluate(batch, reply) => {
                let eval = rules.evaluate(&batch, chrono::Utc::now()).await;
                let _ = reply.send(self.deliver(rules, eval).await);
            }
            RuleWorkerMsg::Tick => {
                if let Err(e) = self.sinks.tick().await {
                    warn!(error = %e, "Spooling alert-storm summaries failed.");
                }
                if !rules.rules().iter().any(|r| r.is_windowed()) {
                    return Ok(());
                }
                let eval = rules.tick(chrono::Utc::now(), false).await;
                let closed = !eval.alerts.is_empty() || !eval.window_updates.is_empty();
                if let Err(e) = self.deliver(rules, eval).await {
                    // The window state was not committed: the next tick or batch retries.
                    warn!(table = %rules.table(), error = %e, "Delivering window alerts failed; will retry.");
                } else if closed && let Some(tree) = &self.checkpoints {
                    // No frame ack follows a tick: make its spooled alerts and window state
                    // durable together now.
                    if let Err(e) = tree.flush_async().await {
                        warn!(table = %rules.table(), error = %e, "Flushing window alerts failed.");
                    }
                }
            }
            RuleWorkerMsg::Swap(reply) => {
                *rules = current(&self.rules);
                for key in rules.prune_windows() {
                    if let Some(tree) = &self.checkpoints {
                        let _ = tree.remove(key.as_bytes());
                    }
                }
                let _ = reply.send(rules.rules().len());
            }
        }
        Ok(())
    }
}
