//! Alert sinks of the spine: stdout (readable lines) and JSON-lines files (fsync'd).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::io::AsyncWriteExt;
use vedette_pipelines::alert::Alert;

use crate::metrics::Metrics;
use crate::supervisor::Slot;

/// Where a sink writes.
#[derive(Debug, Clone)]
pub enum Output {
    /// Standard output, one readable line per alert.
    Stdout,
    /// A file, one JSON object per line, appended and fsync'd.
    File(PathBuf),
}

/// Sink messages.
pub enum SinkMsg {
    /// Write alerts; replies once they are written (and, for files, on disk).
    Deliver(Arc<Vec<Alert>>, RpcReplyPort<Result<(), String>>),
}

/// A sink actor.
pub struct SinkActor {
    /// Sink name.
    pub name: String,
    /// Destination.
    pub output: Output,
    /// Metrics.
    pub metrics: Metrics,
}

/// Open destination.
pub enum SinkState {
    /// stdout.
    Stdout(tokio::io::Stdout),
    /// file.
    File(tokio::fs::File),
}

impl Actor for SinkActor {
    type Msg = SinkMsg;
    type State = SinkState;
    type Arguments = ();

    async fn pre_start(&self, _myself: ActorRef<SinkMsg>, _args: ()) -> Result<SinkState, ActorProcessingErr> {
        Ok(match &self.output {
            Output::Stdout => SinkState::Stdout(tokio::io::stdout()),
            Output::File(path) => {
                if let Some(dir) = path.parent() {
                    tokio::fs::create_dir_all(dir).await?;
                }
                let f = tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .await
                    .map_err(|e| format!("sink `{}`: cannot open {}: {e}", self.name, path.display()))?;
                SinkState::File(f)
            }
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<SinkMsg>,
        msg: SinkMsg,
        state: &mut SinkState,
    ) -> Result<(), ActorProcessingErr> {
        let SinkMsg::Deliver(alerts, reply) = msg;
        let result = write(state, &alerts).await.map_err(|e| format!("sink `{}`: {e}", self.name));
        match &result {
            Ok(()) => self.metrics.sink_delivered.with_label_values(&[&self.name]).inc_by(alerts.len() as u64),
            Err(_) => self.metrics.sink_errors.with_label_values(&[&self.name]).inc(),
        }
        let _ = reply.send(result);
        Ok(())
    }
}

async fn write(state: &mut SinkState, alerts: &[Alert]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(alerts.len() * 512);
    match state {
        SinkState::Stdout(out) => {
            for a in alerts {
                buf.extend_from_slice(a.render_line().as_bytes());
                buf.push(b'\n');
            }
            out.write_all(&buf).await?;
            out.flush().await
        }
        SinkState::File(f) => {
            for a in alerts {
                serde_json::to_writer(&mut buf, a).map_err(std::io::Error::other)?;
                buf.push(b'\n');
            }
            f.write_all(&buf).await?;
            f.sync_data().await
        }
    }
}

/// Every sink; delivering means every sink confirmed.
#[derive(Clone, Default)]
pub struct SinkSet {
    sinks: Vec<(String, Slot<SinkMsg>)>,
}

impl SinkSet {
    /// Adds a sink slot.
    pub fn push(&mut self, name: String, slot: Slot<SinkMsg>) {
        self.sinks.push((name, slot));
    }

    /// Sinks by name.
    pub fn slots(&self) -> &[(String, Slot<SinkMsg>)] {
        &self.sinks
    }

    /// Delivers to every sink; the first failure is returned (the caller retries the batch).
    pub async fn deliver(&self, alerts: Arc<Vec<Alert>>) -> Result<(), String> {
        if alerts.is_empty() {
            return Ok(());
        }
        for (name, slot) in &self.sinks {
            let sink =
                slot.wait(Duration::from_secs(5)).await.ok_or_else(|| format!("sink `{name}` is not running"))?;
            match sink.call(|r| SinkMsg::Deliver(Arc::clone(&alerts), r), None).await {
                Ok(ractor::rpc::CallResult::Success(r)) => r?,
                Ok(_) => return Err(format!("sink `{name}` stopped while delivering")),
                Err(e) => return Err(format!("sink `{name}`: {e}")),
            }
        }
        Ok(())
    }
}
