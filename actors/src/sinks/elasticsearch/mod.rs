//! Elasticsearch (and OpenSearch) `_bulk`: `create` actions with `_id` = alert id, so a
//! resent alert is a 409 (already delivered) instead of a duplicate; per-item results decide
//! what is delivered, retried (429, 5xx) or refused (mapping errors); a 413 splits the batch.

mod request;
mod service;
#[cfg(test)]
mod tests;

pub use request::{bulk_body, index_name, item_outcome};
pub use service::Elasticsearch;
