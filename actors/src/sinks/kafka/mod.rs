//! Kafka sink (rdkafka): idempotent producer, `acks=all`, topic and key routing per alert.
//! The spool, not librdkafka's queue, is the source of truth: a record leaves the spool only
//! after its delivery report succeeded; a `message.timeout.ms` expiry during an outage just
//! means the batch is produced again later.

mod config;
mod service;
#[cfg(test)]
mod tests;

pub use config::{client_config, key, topic};
pub use service::Kafka;
