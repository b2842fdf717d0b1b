//! Producing a batch and reading the delivery reports.

use std::time::Duration;

use futures::future::BoxFuture;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use vedette_config::sinks::KafkaSinkConfig;

use super::config::{client_config, key, topic};
use crate::error::{ActorError, Result};
use crate::sinks::delivery::{Connector, Outcome, Outgoing};

/// Produces batches to Kafka.
pub struct Kafka {
    name: String,
    pub(super) producer: FutureProducer,
    config: KafkaSinkConfig,
    /// Batches in a row of which nothing was delivered.
    failed_batches: u32,
}

/// After this many batches in a row with nothing delivered, the producer is replaced.
pub const REPLACE_AFTER_FAILED_BATCHES: u32 = 3;

impl Kafka {
    /// A producer for sink `name` (connects lazily; an unreachable cluster is an outage, not
    /// a start failure).
    pub fn new(name: &str, config: &KafkaSinkConfig) -> Result<Self> {
        Ok(Self {
            name: name.to_string(),
            producer: Self::producer(name, config)?,
            config: config.clone(),
            failed_batches: 0,
        })
    }

    fn producer(name: &str, config: &KafkaSinkConfig) -> Result<FutureProducer> {
        client_config(name, config).create().map_err(|e| ActorError::Sink {
            sink: name.to_string(),
            reason: format!("creating the Kafka producer: {e}"),
        })
    }

    /// Replaces the producer (new connections, new producer id) when it cannot recover by
    /// itself: at once after a fatal error (an idempotent producer whose sequence no longer
    /// lines up with the broker's fails every later message), and after
    /// [`REPLACE_AFTER_FAILED_BATCHES`] batches in a row with nothing delivered *while the
    /// cluster answers* — a broker that restarted without its state answers
    /// `UNKNOWN_PRODUCER_ID`, and librdkafka's own recovery (bumping the epoch of the producer
    /// id the broker no longer knows) can loop until every message times out. During a plain
    /// outage (no metadata answer) the producer is kept: replacing it would only churn
    /// connections and memory. The failed batch is still spooled; the new producer sends it
    /// again.
    async fn after_batch(&mut self, outcomes: &[Outcome]) {
        if outcomes.iter().any(|o| matches!(o, Outcome::Delivered)) {
            self.failed_batches = 0;
            return;
        }
        self.failed_batches = self.failed_batches.saturating_add(1);
        let fatal = self.producer.client().fatal_error();
        if fatal.is_none() && (self.failed_batches < REPLACE_AFTER_FAILED_BATCHES || !self.cluster_answers().await) {
            return;
        }
        match &fatal {
            Some((code, reason)) => {
                tracing::warn!(sink = %self.name, ?code, %reason, "Kafka producer hit a fatal error; replacing it")
            }
            None => tracing::warn!(
                sink = %self.name,
                batches = self.failed_batches,
                "no Kafka delivery for several batches in a row; replacing the producer"
            ),
        }
        match Self::producer(&self.name, &self.config) {
            Ok(p) => {
                let old = std::mem::replace(&mut self.producer, p);
                // Dropping a producer flushes for up to 500 ms: not on the runtime's threads.
                tokio::task::spawn_blocking(move || drop(old));
                self.failed_batches = 0;
            }
            Err(e) => tracing::error!(sink = %self.name, error = %e, "replacing the Kafka producer"),
        }
    }

    /// Whether a broker answers a metadata request within a second.
    async fn cluster_answers(&self) -> bool {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.client().fetch_metadata(None, Duration::from_secs(1)).is_ok())
            .await
            .unwrap_or(false)
    }
}

/// Outcome of a failed delivery report: oversized or invalid messages are refused for good,
/// everything else (timeouts, broker or network errors, authorization while an operator fixes
/// ACLs) is produced again later.
pub fn failure_outcome(e: &KafkaError) -> Outcome {
    match e.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessage | RDKafkaErrorCode::InvalidRecord,
        ) => Outcome::Reject(format!("Kafka refused the message: {e}")),
        _ => Outcome::Retry(format!("Kafka delivery failed: {e}")),
    }
}

impl Connector for Kafka {
    fn send<'a>(&'a mut self, batch: &'a [Outgoing]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            // Enqueue the whole batch first (librdkafka batches and pipelines it), then wait for
            // every delivery report, in order.
            let mut pending = Vec::with_capacity(batch.len());
            for o in batch {
                let topic = topic(&self.config.topic, &o.alert);
                let key = key(&self.config.key, &o.alert);
                let alert_id = o.alert.alert_id.to_string();
                let headers =
                    OwnedHeaders::new().insert(Header { key: "vedette-alert-id", value: Some(alert_id.as_bytes()) });
                let mut record = FutureRecord::to(&topic).payload(&o.body).headers(headers);
                if let Some(k) = &key {
                    record = record.key(k);
                }
                pending.push(match self.producer.send_result(record) {
                    Ok(delivery) => Ok(delivery),
                    Err((e, _)) => Err(e),
                });
            }
            let mut out = Vec::with_capacity(batch.len());
            for p in pending {
                out.push(match p {
                    Err(e) => Outcome::Retry(format!("Kafka producer queue: {e}")),
                    Ok(delivery) => match delivery.await {
                        Ok(Ok(_)) => Outcome::Delivered,
                        Ok(Err((e, _))) => failure_outcome(&e),
                        Err(_) => Outcome::Retry("Kafka producer dropped the delivery report".into()),
                    },
                });
            }
            self.after_batch(&out).await;
            out
        })
    }
}
