//! Webhook sink: each batch is one HTTP POST, signed with HMAC-SHA256 over the timestamp and
//! the body, so a receiver can check who sent it and refuse replays.

mod request;
mod service;
#[cfg(test)]
mod tests;

pub use request::{SIGNATURE_HEADER, TIMESTAMP_HEADER, body, sign};
pub use service::Webhook;
