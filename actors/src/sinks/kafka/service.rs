//! Producing a batch and reading the delivery reports.

use std::time::Duration;

use futures::future::BoxFuture;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer, PurgeConfig};
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
    /// The last batch was given up because no broker answered: the producer is replaced
    /// before the next batch once one does (a broker that comes back without its state would
    /// otherwise stall the old producer's idempotent sequence until `message_timeout`).
    stale: bool,
}

/// After this many batches in a row with nothing delivered while the cluster answers, the
/// producer is replaced.
pub const REPLACE_AFTER_FAILED_BATCHES: u32 = 1;

/// No delivery report for this long: ask whether any broker answers, and give the batch up
/// (purged, kept in the spool) if none does — an outage shows within seconds, not after
/// `message_timeout`.
pub const STALL: Duration = Duration::from_secs(3);

/// How long a metadata request may take to count as an answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

impl Kafka {
    /// A producer for sink `name` (connects lazily; an unreachable cluster is an outage, not
    /// a start failure).
    pub fn new(name: &str, config: &KafkaSinkConfig) -> Result<Self> {
        Ok(Self {
            name: name.to_string(),
            producer: Self::producer(name, config)?,
            config: config.clone(),
            failed_batches: 0,
            stale: false,
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
    /// [`REPLACE_AFTER_FAILED_BATCHES`] batch(es) in a row with nothing delivered *while the
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
        self.replace();
    }

    /// A new producer (new connections, new producer id) in place of the current one.
    fn replace(&mut self) {
        match Self::producer(&self.name, &self.config) {
            Ok(p) => {
                let old = std::mem::replace(&mut self.producer, p);
                // Dropping a producer flushes for up to 500 ms: not on the runtime's threads.
                tokio::task::spawn_blocking(move || drop(old));
                self.failed_batches = 0;
                self.stale = false;
            }
            Err(e) => tracing::error!(sink = %self.name, error = %e, "replacing the Kafka producer"),
        }
    }

    /// Whether a broker answers a metadata request within [`PROBE_TIMEOUT`].
    async fn cluster_answers(&self) -> bool {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.client().fetch_metadata(None, PROBE_TIMEOUT).is_ok())
            .await
            .unwrap_or(false)
    }

    /// Waits for one delivery report; while none comes for [`STALL`], asks whether any broker
    /// answers, and when none does purges every message still queued or in flight (their
    /// reports then come at once, as purged) — the batch is given up, not waited out.
    async fn report(&mut self, mut delivery: rdkafka::producer::DeliveryFuture, gave_up: &mut bool) -> Outcome {
        loop {
            match tokio::time::timeout(STALL, &mut delivery).await {
                Ok(Ok(Ok(_))) => return Outcome::Delivered,
                Ok(Ok(Err((e, _)))) if *gave_up => {
                    return Outcome::Retry(format!("no Kafka broker answers (purged from the producer: {e})"));
                }
                Ok(Ok(Err((e, _)))) => return failure_outcome(&e),
                Ok(Err(_)) => return Outcome::Retry("Kafka producer dropped the delivery report".into()),
                Err(_) if !*gave_up && !self.cluster_answers().await => {
                    tracing::warn!(sink = %self.name, stall = ?STALL,
                        "no Kafka delivery report and no broker answers; giving the batch up (it stays spooled)");
                    self.producer.purge(PurgeConfig::default().queue().inflight());
                    *gave_up = true;
                    self.stale = true;
                }
                Err(_) => {}
            }
        }
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
            if self.stale && self.cluster_answers().await {
                tracing::info!(sink = %self.name, "Kafka answers again; producing with a new producer");
                self.replace();
            }
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
            let mut gave_up = false;
            for p in pending {
                out.push(match p {
                    Err(e) => Outcome::Retry(format!("Kafka producer queue: {e}")),
                    Ok(delivery) => self.report(delivery, &mut gave_up).await,
                });
            }
            if !gave_up {
                self.after_batch(&out).await;
            }
            out
        })
    }

    fn health(&mut self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            if self.cluster_answers().await {
                Ok(())
            } else {
                Err(format!("no Kafka broker answers a metadata request within {PROBE_TIMEOUT:?}"))
            }
        })
    }

    fn probes_health(&self) -> bool {
        true
    }
}
