//! The event batch and the meaning of HEC answers.

use serde_json::{Value, json};
use vedette_config::Format;
use vedette_config::sinks::HecSinkConfig;

use crate::sinks::delivery::{Outcome, Outgoing};

/// One HEC event object: `{"time":…,"host":…,"source":…,"sourcetype":…,"index":…,"event":…}`.
/// JSON-based formats go in as objects, `cef` and `text` as strings.
pub fn event_json(config: &HecSinkConfig, format: Format, o: &Outgoing) -> Vec<u8> {
    let event = match format {
        Format::Json | Format::Stix | Format::Ocsf => {
            serde_json::from_slice(&o.body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&o.body).into()))
        }
        Format::Cef | Format::Text => Value::String(String::from_utf8_lossy(&o.body).into_owned()),
    };
    let mut e = json!({
        "time": o.alert.ts.timestamp_micros() as f64 / 1e6,
        "source": config.source,
        "sourcetype": config.sourcetype,
        "event": event,
    });
    if let Some(h) = &o.alert.host {
        e["host"] = json!(h);
    }
    if let Some(i) = &config.index {
        e["index"] = json!(i);
    }
    serde_json::to_vec(&e).expect("json values serialize")
}

/// Splits a batch's events into request bodies of concatenated event objects (not a JSON
/// array), each at most `max_bytes` (an event larger than that goes alone). Returns, per
/// request, the number of events and the body.
pub fn request_bodies(events: Vec<Vec<u8>>, max_bytes: u64) -> Vec<(usize, Vec<u8>)> {
    let mut out: Vec<(usize, Vec<u8>)> = Vec::new();
    for e in events {
        match out.last_mut() {
            Some((n, body)) if (body.len() + e.len()) as u64 <= max_bytes => {
                body.extend_from_slice(&e);
                *n += 1;
            }
            _ => out.push((1, e)),
        }
    }
    out
}

/// Maps an HEC answer (HTTP status and body `{"text":…,"code":N[,"invalid-event-number":K]}`)
/// to one outcome per event of a batch of `n`.
///
/// * 2xx: delivered (subject to the indexer acknowledgement when enabled);
/// * codes 5, 6, 12, 13, 15 (no data, invalid data format, event field required or blank,
///   bad indexed fields): the data is at fault — with `invalid-event-number` K, events before
///   K were indexed, K is refused and the rest is sent again; without it, the batch is refused;
/// * token, index, channel and ack configuration errors (codes 1–4, 7, 10, 11, 14) and 429 /
///   5xx / busy (8, 9, 18): retried — nothing is lost while an operator fixes the token or
///   the collector recovers.
pub fn classify(status: reqwest::StatusCode, body: &str, n: usize) -> Vec<Outcome> {
    if status.is_success() {
        return vec![Outcome::Delivered; n];
    }
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let code = v["code"].as_i64();
    let text = v["text"].as_str().unwrap_or(body);
    let reason = format!("HEC {status} code {}: {text}", code.map_or("?".into(), |c| c.to_string()));
    let data_error = matches!(code, Some(5 | 6 | 12 | 13 | 15))
        || (code.is_none() && status.is_client_error() && !matches!(status.as_u16(), 401 | 403 | 408 | 429));
    if !data_error {
        let hint = match code {
            Some(1..=4) => " (check the sink's token)",
            Some(7) => " (check the sink's index)",
            Some(10 | 11 | 14) => " (check indexer acknowledgement and the channel)",
            _ => "",
        };
        return vec![Outcome::Retry(format!("{reason}{hint}")); n];
    }
    match v["invalid-event-number"].as_u64().map(|k| k as usize) {
        Some(k) if k < n => (0..n)
            .map(|i| match i.cmp(&k) {
                std::cmp::Ordering::Less => Outcome::Delivered,
                std::cmp::Ordering::Equal => Outcome::Reject(reason.clone()),
                std::cmp::Ordering::Greater => Outcome::Retry(format!("sent after refused event {k}")),
            })
            .collect(),
        _ => vec![Outcome::Reject(reason); n],
    }
}
