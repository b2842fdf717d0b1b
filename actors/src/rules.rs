//! Rule workers: one per telemetry table, running that table's compiled rules on each batch.

use std::sync::Arc;

use arrow::array::RecordBatch;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::warn;
use vedette_pipelines::compile::TableRules;

use crate::metrics::Metrics;
use crate::sink::SinkSet;

/// Rule worker messages.
pub enum RuleWorkerMsg {
    /// Evaluate a batch and deliver its alerts; replies with the alert count once every sink
    /// confirmed, or with the delivery error (the caller retries).
    Evaluate(RecordBatch, RpcReplyPort<Result<usize, String>>),
}

/// A rule worker.
pub struct RuleWorker {
    /// Compiled rules of the table (plans are shared, never re-planned on restart).
    pub rules: TableRules,
    /// Where alerts go.
    pub sinks: SinkSet,
    /// Metrics.
    pub metrics: Metrics,
}

impl Actor for RuleWorker {
    type Msg = RuleWorkerMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _myself: ActorRef<Self::Msg>, _args: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        _state: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        let RuleWorkerMsg::Evaluate(batch, reply) = msg;
        let eval = self.rules.evaluate(&batch, chrono::Utc::now()).await;
        for (meta, took) in &eval.timings {
            self.metrics.rule_eval.with_label_values(&[&meta.id]).observe(took.as_secs_f64());
        }
        for e in &eval.errors {
            if let vedette_pipelines::RuleError::Eval { rule, .. } = e {
                self.metrics.rule_errors.with_label_values(&[rule]).inc();
            }
            warn!(table = %self.rules.table(), error = %e, "Rule failed on a batch; other rules continue.");
        }
        for a in &eval.alerts {
            self.metrics.alerts.with_label_values(&[&a.rule_id, a.severity.as_str()]).inc();
        }
        let n = eval.alerts.len();
        let result = self.sinks.deliver(Arc::new(eval.alerts)).await.map(|()| n);
        let _ = reply.send(result);
        Ok(())
    }
}
