//! The bulk body and the meaning of per-item results.

use serde_json::{Value, json};
use vedette_config::Format;

use crate::sinks::delivery::{Outcome, Outgoing};

/// `pattern` with `%Y`, `%m`, `%d` replaced from `ts` (UTC).
pub fn index_name(pattern: &str, ts: chrono::DateTime<chrono::Utc>) -> String {
    pattern
        .replace("%Y", &ts.format("%Y").to_string())
        .replace("%m", &ts.format("%m").to_string())
        .replace("%d", &ts.format("%d").to_string())
}

/// The document of one alert: the encoded JSON object with `@timestamp` (the alert's time)
/// added; `cef` and `text` go under `message`.
fn document(format: Format, o: &Outgoing) -> Value {
    let mut doc = match format {
        Format::Json | Format::Stix | Format::Ocsf => serde_json::from_slice(&o.body).unwrap_or(Value::Null),
        Format::Cef | Format::Text => Value::Null,
    };
    if !doc.is_object() {
        doc = json!({"message": String::from_utf8_lossy(&o.body)});
    }
    doc["@timestamp"] = json!(o.alert.ts.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
    doc
}

/// NDJSON `_bulk` body: a `create` action (index, `_id`; no `_type`) and a document per alert.
pub fn bulk_body(index_pattern: &str, format: Format, batch: &[Outgoing]) -> Vec<u8> {
    let mut out = Vec::new();
    for o in batch {
        let action =
            json!({"create": {"_index": index_name(index_pattern, o.alert.ts), "_id": o.alert.alert_id.to_string()}});
        serde_json::to_writer(&mut out, &action).expect("json values serialize");
        out.push(b'\n');
        serde_json::to_writer(&mut out, &document(format, o)).expect("json values serialize");
        out.push(b'\n');
    }
    out
}

/// Outcome of one bulk item (`{"create": {"status": …, "error": {…}}}`): 2xx delivered, 409
/// (the document exists: delivered before) delivered, 429 / 5xx retried, other errors refused
/// with the error's type and reason.
pub fn item_outcome(item: &Value) -> Outcome {
    let result = item.as_object().and_then(|m| m.values().next()).cloned().unwrap_or(Value::Null);
    let status = result["status"].as_u64().unwrap_or(0);
    let error = || {
        let e = &result["error"];
        format!(
            "status {status}: {}: {}",
            e["type"].as_str().unwrap_or("error"),
            e["reason"].as_str().unwrap_or(&e.to_string())
        )
    };
    match status {
        200..=299 | 409 => Outcome::Delivered,
        429 | 500..=599 => Outcome::Retry(error()),
        _ => Outcome::Reject(error()),
    }
}
