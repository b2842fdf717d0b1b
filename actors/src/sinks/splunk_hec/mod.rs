//! Splunk HTTP Event Collector: batches of concatenated JSON events (not an array) to
//! `/services/collector/event`, `Authorization: Splunk <token>`, optional indexer
//! acknowledgement through a channel (`/services/collector/ack`), error codes mapped to retry
//! or refusal, per event where HEC says which event was bad.

mod request;
mod service;
#[cfg(test)]
mod tests;

pub use request::{classify, event_json, request_bodies};
pub use service::SplunkHec;
