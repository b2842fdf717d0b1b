//! Webhook sink: each batch is one HTTP POST, signed with HMAC-SHA256 over the timestamp and
//! the body, so a receiver can check who sent it and refuse replays.

mod request;
mod service;
#[cfg(test)]
mod tests;

pub use request::{IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, body, idempotency_key, sign};
pub use service::Webhook;
