//! Producing a batch and reading the delivery reports.

use futures::future::BoxFuture;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use vedette_config::sinks::KafkaSinkConfig;

use super::config::{client_config, key, topic};
use crate::error::{ActorError, Result};
use crate::sinks::delivery::{Connector, Outcome, Outgoing};

/// Produces batches to Kafka.
pub struct Kafka {
    producer: FutureProducer,
    config: KafkaSinkConfig,
}

impl Kafka {
    /// A producer for sink `name` (connects lazily; an unreachable cluster is an outage, not
    /// a start failure).
    pub fn new(name: &str, config: &KafkaSinkConfig) -> Result<Self> {
        let producer = client_config(name, config).create().map_err(|e| ActorError::Sink {
            sink: name.to_string(),
            reason: format!("creating the Kafka producer: {e}"),
        })?;
        Ok(Self { producer, config: config.clone() })
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
            out
        })
    }
}
