//! The history's connector: the internal `history` sink delivers from its own spool into the
//! history store, so every alert that was acknowledged (spooled) reaches the history, once.

use std::sync::Arc;

use futures::future::BoxFuture;
use vedette_actors::sinks::delivery::{Connector, Outcome, Outgoing, all};

use super::store::History;

/// Writes delivered batches into the history; a batch counts as delivered once flushed.
pub struct HistoryConnector {
    history: Arc<History>,
    metrics: vedette_actors::metrics::Metrics,
}

impl HistoryConnector {
    /// A connector into `history`.
    pub fn new(history: Arc<History>, metrics: vedette_actors::metrics::Metrics) -> Self {
        Self { history, metrics }
    }
}

/// Publishes the history's size.
pub fn publish_size(history: &History, metrics: &vedette_actors::metrics::Metrics) {
    let (alerts, bytes) = history.size();
    metrics.history_alerts.set(i64::try_from(alerts).unwrap_or(i64::MAX));
    metrics.history_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
}

impl Connector for HistoryConnector {
    fn send<'a>(&'a mut self, batch: &'a [Outgoing]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            let history = Arc::clone(&self.history);
            let bodies: Vec<Vec<u8>> = batch.iter().map(|o| o.body.clone()).collect();
            let stored = tokio::task::spawn_blocking(move || {
                let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
                history.append(&refs)
            })
            .await;
            let result = match stored {
                Ok(Ok(_)) => self.history.flush().await.map_err(|e| e.to_string()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(format!("history writer failed: {e}")),
            };
            publish_size(&self.history, &self.metrics);
            match result {
                Ok(()) => all(batch, Outcome::Delivered),
                Err(e) => all(batch, Outcome::Retry(e)),
            }
        })
    }
}
