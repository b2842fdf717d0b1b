//! Alerts: the stable JSON shape every sink and `vedette rules test` emit, and their ids.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::rule::Severity;

/// Namespace of alert ids (UUIDv5).
pub const ALERT_NAMESPACE: Uuid = Uuid::from_u128(0x5d1c_6a0e_8f3b_4c57_9e21_7a4b_d0c3_e812);

/// Rule metadata carried by every alert of the rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleMeta {
    /// Rule id.
    pub id: String,
    /// Rule title.
    pub name: String,
    /// Rule version (part of the alert id).
    pub version: u32,
    /// Result columns whose values identify the detection (part of the alert id).
    pub dedup_key: Vec<String>,
    /// `suppress` period, µs: alerts of one key within one period share an id.
    pub suppress_us: Option<i64>,
    /// Pack the rule belongs to.
    pub pack: String,
    /// Severity.
    pub severity: Severity,
    /// Description.
    pub description: String,
    /// Tags (MITRE ATT&CK ids …).
    pub tags: Vec<String>,
    /// Telemetry table the rule reads.
    pub table: String,
}

/// One alert. Field names and meanings are stable (see `docs/alerts.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Alert {
    /// Deterministic id: the same detection always has the same id.
    pub alert_id: Uuid,
    /// Rule id.
    pub rule_id: String,
    /// Rule title.
    pub rule_name: String,
    /// Rule version.
    pub rule_version: u32,
    /// Pack of the rule.
    pub pack: String,
    /// Severity.
    pub severity: Severity,
    /// Rule tags.
    pub tags: Vec<String>,
    /// Rule description.
    pub description: String,
    /// Sensor that sent the triggering event (from its certificate).
    pub sensor_id: Option<String>,
    /// Tenant of that sensor (from its certificate).
    pub tenant: Option<String>,
    /// Host of the triggering event.
    pub host: Option<String>,
    /// Telemetry table the rule reads.
    pub table: String,
    /// Event time of the triggering event, RFC 3339 UTC.
    pub ts: DateTime<Utc>,
    /// Windowed rules: start of the window (inclusive), RFC 3339 UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_start: Option<DateTime<Utc>>,
    /// Windowed rules: end of the window (exclusive); also the alert's `ts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_end: Option<DateTime<Utc>>,
    /// When the engine made the detection, RFC 3339 UTC.
    pub detected_at: DateTime<Utc>,
    /// The edge node that forwarded the alert to this engine (set by the receiving engine
    /// from the edge's certificate; absent for local detections).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge: Option<String>,
    /// The rule's result row (engine-internal `__` columns removed).
    #[schema(value_type = Object)]
    pub row: Map<String, Value>,
}

/// One line of an ALERTS frame (edge → upstream): the alert, and the sinks the edge delivers
/// it to itself, by name — the upstream skips its own sinks of those names for this alert, so
/// a destination both nodes know receives it once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forwarded {
    /// The alert.
    pub alert: Alert,
    /// Sink names the edge delivers this alert to itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claimed: Vec<String>,
}

/// What identifies the detection inside its rule.
#[derive(Debug, Clone, Copy)]
pub enum Identity<'a> {
    /// A stateless rule's triggering event: sensor, frame sequence number, row in the frame.
    Event {
        /// Sensor id.
        sensor_id: &'a str,
        /// Frame sequence number.
        seq: u64,
        /// Row in the frame.
        row: u64,
    },
    /// The rule has a `dedup_key`: its columns' values, and the window start for windowed
    /// rules.
    Key {
        /// Values of the `dedup_key` columns, in the rule's order.
        values: &'a [&'a Value],
        /// Windowed rules: window start, µs.
        window_start: Option<i64>,
    },
    /// No event identity is available: the result row's content and event time.
    Row {
        /// Event time, µs.
        ts_micros: i64,
        /// The result row.
        row: &'a Map<String, Value>,
    },
}

/// Computes the deterministic alert id: UUIDv5 (namespace [`ALERT_NAMESPACE`]) over tenant,
/// rule id, rule version and the detection's identity, each part followed by a NUL byte:
///
/// * `key\0` + each `dedup_key` value as compact JSON + NUL, then for windowed rules the window
///   start (µs, 8 bytes big-endian) — rules with a `dedup_key`;
/// * `event\0` + sensor id + NUL + frame sequence number and row index in the frame (8 bytes
///   big-endian each) — stateless rules;
/// * `row\0` + event time or window start (µs, 8 bytes big-endian) + the result row as compact
///   JSON with sorted keys — windowed rules without a `dedup_key` (their row holds the group
///   keys and the aggregates).
pub fn alert_id(tenant: &str, rule: &RuleMeta, identity: Identity<'_>) -> Uuid {
    let mut name = Vec::with_capacity(128);
    for part in [tenant.as_bytes(), rule.id.as_bytes(), rule.version.to_string().as_bytes()] {
        name.extend_from_slice(part);
        name.push(0);
    }
    match identity {
        Identity::Event { sensor_id, seq, row } => {
            name.extend_from_slice(b"event\0");
            name.extend_from_slice(sensor_id.as_bytes());
            name.push(0);
            name.extend_from_slice(&seq.to_be_bytes());
            name.extend_from_slice(&row.to_be_bytes());
        }
        Identity::Key { values, window_start } => {
            name.extend_from_slice(b"key\0");
            for v in values {
                name.extend_from_slice(v.to_string().as_bytes());
                name.push(0);
            }
            if let Some(start) = window_start {
                name.extend_from_slice(&start.to_be_bytes());
            }
        }
        Identity::Row { ts_micros, row } => {
            name.extend_from_slice(b"row\0");
            name.extend_from_slice(&ts_micros.to_be_bytes());
            // serde_json maps are ordered by key, so this is canonical.
            name.extend_from_slice(Value::Object(row.clone()).to_string().as_bytes());
        }
    }
    Uuid::new_v5(&ALERT_NAMESPACE, &name)
}

impl Alert {
    /// One readable line for terminals: time, severity, rule, sensor, and the row.
    pub fn render_line(&self) -> String {
        let row: Vec<String> = self
            .row
            .iter()
            .filter(|(k, v)| !v.is_null() && k.as_str() != "host")
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}={s:?}"),
                other => format!("{k}={other}"),
            })
            .collect();
        format!(
            "{} {:<8} {} [{}] sensor={} host={} {}",
            self.ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            self.severity.as_str().to_uppercase(),
            self.rule_id,
            self.rule_name,
            self.sensor_id.as_deref().unwrap_or("-"),
            self.host.as_deref().unwrap_or("-"),
            row.join(" ")
        )
    }
}

/// Shared rule metadata handle.
pub type RuleMetaRef = Arc<RuleMeta>;

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> RuleMeta {
        RuleMeta {
            id: "r1".into(),
            name: "R".into(),
            version: 1,
            dedup_key: vec![],
            suppress_us: None,
            pack: "p".into(),
            severity: Severity::High,
            description: String::new(),
            tags: vec![],
            table: "process_events".into(),
        }
    }

    #[test]
    fn ids_are_deterministic_and_sensitive_to_every_part() {
        let m = meta();
        let ev = |seq| Identity::Event { sensor_id: "s1", seq, row: 0 };
        let a = alert_id("t", &m, ev(1));
        assert_eq!(a, alert_id("t", &m, ev(1)));
        assert_eq!(a.get_version_num(), 5);
        assert_ne!(a, alert_id("t", &m, ev(2)));
        assert_ne!(a, alert_id("u", &m, ev(1)));
        let mut m2 = meta();
        m2.version = 2;
        assert_ne!(a, alert_id("t", &m2, ev(1)));
    }

    #[test]
    fn a_dedup_key_makes_the_same_key_in_the_same_window_one_detection() {
        let m = meta();
        let (root, web) = (Value::from("root"), Value::from("web-1"));
        let key = |v: &[&Value], w| alert_id("t", &m, Identity::Key { values: v, window_start: w });
        assert_eq!(key(&[&root, &web], Some(60)), key(&[&root, &web], Some(60)));
        assert_ne!(key(&[&root, &web], Some(60)), key(&[&root, &web], Some(120)), "another window");
        assert_ne!(key(&[&root, &web], None), key(&[&web, &root], None), "values in order");
        assert_ne!(key(&[&Value::from(1)], None), key(&[&Value::from("1")], None), "typed values");
    }
}
