//! Per-table batcher: gathers admitted frames into batches (flush on rows or linger time) and
//! hands them, in order, to the table's rule worker; acknowledges frames once the worker has
//! committed their effects.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{error, warn};

use crate::metrics::Metrics;
use crate::rules::{EvalError, RuleWorkerMsg};
use crate::sessions::{Acker, FrameToken};
use crate::supervisor::Slot;

/// Batcher messages.
pub enum BatcherMsg {
    /// Rows of one admitted frame.
    Frame(RecordBatch, FrameToken),
    /// Linger timer for batch `epoch` fired.
    Linger(u64),
    /// Flush now and reply once everything handed over so far is acknowledged.
    Drain(RpcReplyPort<()>),
}

/// Batching settings.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Flush at this many rows.
    pub rows: usize,
    /// Flush when the oldest row waited this long.
    pub linger: Duration,
}

/// The batcher of one table.
pub struct Batcher {
    /// Table name.
    pub table: String,
    /// Table schema.
    pub schema: SchemaRef,
    /// Limits.
    pub limits: BatchLimits,
    /// The table's rule worker.
    pub worker: Slot<RuleWorkerMsg>,
    /// Acknowledges completed frames.
    pub acker: Arc<Acker>,
    /// Metrics.
    pub metrics: Metrics,
}

struct Pending {
    batches: Vec<RecordBatch>,
    tokens: Vec<FrameToken>,
    drained: Option<RpcReplyPort<()>>,
}

/// Batcher state.
pub struct BatcherState {
    pending: Vec<RecordBatch>,
    tokens: Vec<FrameToken>,
    rows: usize,
    epoch: u64,
    tx: Option<mpsc::Sender<Pending>>,
    dispatcher: Option<JoinHandle<()>>,
}

impl Actor for Batcher {
    type Msg = BatcherMsg;
    type State = BatcherState;
    type Arguments = ();

    async fn pre_start(&self, _myself: ActorRef<BatcherMsg>, _args: ()) -> Result<BatcherState, ActorProcessingErr> {
        // Two batches may wait while one is evaluated: enough to overlap batching and rules.
        let (tx, rx) = mpsc::channel(2);
        let dispatcher = Dispatcher {
            table: self.table.clone(),
            schema: self.schema.clone(),
            worker: self.worker.clone(),
            acker: Arc::clone(&self.acker),
            metrics: self.metrics.clone(),
        };
        let handle = tokio::spawn(dispatcher.run(rx));
        Ok(BatcherState {
            pending: Vec::new(),
            tokens: Vec::new(),
            rows: 0,
            epoch: 0,
            tx: Some(tx),
            dispatcher: Some(handle),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<BatcherMsg>,
        msg: BatcherMsg,
        state: &mut BatcherState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            BatcherMsg::Frame(batch, token) => {
                if state.pending.is_empty() {
                    let epoch = state.epoch;
                    myself.send_after(self.limits.linger, move || BatcherMsg::Linger(epoch));
                }
                state.rows += batch.num_rows();
                state.pending.push(batch);
                state.tokens.push(token);
                if state.rows >= self.limits.rows {
                    self.flush(state, None).await?;
                }
            }
            BatcherMsg::Linger(epoch) => {
                if epoch == state.epoch && !state.pending.is_empty() {
                    self.flush(state, None).await?;
                }
            }
            BatcherMsg::Drain(reply) => self.flush(state, Some(reply)).await?,
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<BatcherMsg>,
        state: &mut BatcherState,
    ) -> Result<(), ActorProcessingErr> {
        // Hand over what is pending, close the channel, and let the dispatcher finish it.
        self.flush(state, None).await?;
        state.tx = None;
        if let Some(h) = state.dispatcher.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), h).await;
        }
        Ok(())
    }
}

impl Batcher {
    async fn flush(
        &self,
        state: &mut BatcherState,
        drained: Option<RpcReplyPort<()>>,
    ) -> Result<(), ActorProcessingErr> {
        state.epoch += 1;
        state.rows = 0;
        let pending =
            Pending { batches: std::mem::take(&mut state.pending), tokens: std::mem::take(&mut state.tokens), drained };
        let tx = state.tx.as_ref().ok_or("batcher is stopping")?;
        tx.send(pending).await.map_err(|_| format!("dispatcher of `{}` stopped", self.table))?;
        Ok(())
    }
}

struct Dispatcher {
    table: String,
    schema: SchemaRef,
    worker: Slot<RuleWorkerMsg>,
    acker: Arc<Acker>,
    metrics: Metrics,
}

impl Dispatcher {
    async fn run(self, mut rx: mpsc::Receiver<Pending>) {
        while let Some(p) = rx.recv().await {
            if !p.batches.is_empty() {
                self.process(p.batches, p.tokens).await;
            }
            if let Some(reply) = p.drained {
                let _ = reply.send(());
            }
        }
    }

    /// Evaluates until the worker confirms delivery (retrying across worker restarts and
    /// delivery failures), then acks. Tokens dropped without completion make sensors resend.
    async fn process(&self, batches: Vec<RecordBatch>, tokens: Vec<FrameToken>) {
        let batch = match concat_batches(&self.schema, &batches) {
            Ok(b) => b,
            Err(e) => {
                error!(table = %self.table, error = %e, "Could not assemble a batch; its frames will be resent.");
                return;
            }
        };
        drop(batches);
        self.metrics.batch_rows.observe(batch.num_rows() as f64);
        let frames: Vec<_> = tokens.iter().map(|t| (Arc::clone(&t.sensor_id), t.seq)).collect();
        let mut backoff = Duration::from_millis(20);
        let committed = loop {
            let Some(worker) = self.worker.wait(Duration::from_secs(30)).await else {
                error!(table = %self.table, "No rule worker came back; frames will be resent by their sensors.");
                return;
            };
            match worker.call(|r| RuleWorkerMsg::Evaluate(batch.clone(), frames.clone(), r), None).await {
                Ok(ractor::rpc::CallResult::Success(Ok(c))) => break c,
                Ok(ractor::rpc::CallResult::Success(Err(EvalError::Abandon(e)))) => {
                    error!(table = %self.table, error = %e, "Could not make a batch durable; its frames will be resent.");
                    return;
                }
                Ok(ractor::rpc::CallResult::Success(Err(EvalError::Retry(e)))) => {
                    warn!(table = %self.table, error = %e, backoff_ms = backoff.as_millis() as u64, "Alert delivery failed, retrying.");
                }
                _ => warn!(table = %self.table, "Rule worker stopped mid-batch; retrying on its successor."),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        };
        self.acker.ack(&frames, &committed.through);
        for t in tokens {
            self.metrics.frame_latency.observe(t.received.elapsed().as_secs_f64());
            t.finish();
        }
    }
}
