//! The request: body and signature headers.

use ring::hmac;
use vedette_config::Format;

use crate::sinks::delivery::Outgoing;

/// Unix time (seconds) the request was signed at.
pub const TIMESTAMP_HEADER: &str = "X-Vedette-Timestamp";
/// `sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub const SIGNATURE_HEADER: &str = "X-Vedette-Signature";
/// The same value for every attempt at delivering the same alerts (see [`idempotency_key`]).
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// A batch's idempotency key: hex SHA-256 over its alert ids in order. A retry of the batch
/// carries the same key, so a receiver that remembers keys drops a batch it already took;
/// each alert's own `alert_id` (in the body) allows the same per alert.
pub fn idempotency_key(batch: &[Outgoing]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for o in batch {
        h.update(o.alert.alert_id.as_bytes());
    }
    hex::encode(h.finalize())
}

/// The body of a batch and its content type: a JSON array of the encoded alerts (`json`,
/// `stix`, `ocsf`), or one alert per line (`cef`, `text`).
pub fn body(format: Format, batch: &[Outgoing]) -> (Vec<u8>, &'static str) {
    match format {
        Format::Json | Format::Stix | Format::Ocsf => {
            let mut out = Vec::with_capacity(batch.iter().map(|o| o.body.len() + 1).sum::<usize>() + 2);
            out.push(b'[');
            for (i, o) in batch.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&o.body);
            }
            out.push(b']');
            (out, "application/json")
        }
        Format::Cef | Format::Text => {
            let mut out = Vec::new();
            for o in batch {
                out.extend_from_slice(&o.body);
                out.push(b'\n');
            }
            (out, "text/plain; charset=utf-8")
        }
    }
}

/// The signature header value for `body` sent at `timestamp`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("sha256={}", hex::encode(ctx.sign().as_ref()))
}
