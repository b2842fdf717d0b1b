//! Fleet health alerts: `vedette.sensor_silent` when a sensor is not heard from past its
//! threshold, `vedette.sensor_back` when it returns. They have the shape of every other alert
//! and go through the same sinks. Ids are deterministic per silence episode (sensor, tenant,
//! and when it was last heard before going quiet), so raising one again after a crash or a
//! restart gives the same id.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::alert::{ALERT_NAMESPACE, Alert};
use crate::rule::Severity;

/// Rule id of the silence alert.
pub const SILENT_RULE: &str = "vedette.sensor_silent";
/// Rule id of the return alert.
pub const BACK_RULE: &str = "vedette.sensor_back";
/// Pack name of engine-made fleet alerts.
pub const FLEET_PACK: &str = "vedette.fleet";
/// `table` of fleet alerts (not a telemetry table).
pub const FLEET_TABLE: &str = "sensors";

/// A silence episode of one sensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Episode<'a> {
    /// Sensor id.
    pub sensor_id: &'a str,
    /// Its tenant.
    pub tenant: &'a str,
    /// Its host, if known.
    pub host: Option<&'a str>,
    /// When it was last heard from before going quiet (identifies the episode).
    pub last_heard: DateTime<Utc>,
    /// The threshold in force.
    pub threshold: std::time::Duration,
}

fn episode_id(rule: &str, e: &Episode<'_>) -> uuid::Uuid {
    let name = format!("{rule}\0{}\0{}\0{}", e.tenant, e.sensor_id, e.last_heard.timestamp_micros());
    uuid::Uuid::new_v5(&ALERT_NAMESPACE, name.as_bytes())
}

fn base(rule: &str, name: &str, severity: Severity, description: String, e: &Episode<'_>, ts: DateTime<Utc>) -> Alert {
    let mut row = Map::new();
    row.insert("sensor_id".into(), json!(e.sensor_id));
    row.insert("last_heard".into(), json!(e.last_heard.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)));
    row.insert("threshold_s".into(), json!(e.threshold.as_secs_f64()));
    Alert {
        alert_id: episode_id(rule, e),
        rule_id: rule.into(),
        rule_name: name.into(),
        rule_version: 1,
        pack: FLEET_PACK.into(),
        severity,
        tags: vec!["vedette.fleet".into()],
        description,
        sensor_id: Some(e.sensor_id.into()),
        tenant: Some(e.tenant.into()),
        host: e.host.map(str::to_string),
        table: FLEET_TABLE.into(),
        ts,
        window_start: None,
        window_end: None,
        edge: None,
        detected_at: Utc::now(),
        row,
    }
}

/// The alert for a sensor silent since `e.last_heard`.
pub fn silent_alert(e: &Episode<'_>) -> Alert {
    let description = format!(
        "Sensor `{}` has not been heard from since {} (threshold {}s): it may be down, cut off, or tampered with.",
        e.sensor_id,
        e.last_heard.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        e.threshold.as_secs()
    );
    let ts = e.last_heard + chrono::Duration::from_std(e.threshold).unwrap_or_default();
    base(SILENT_RULE, "Sensor silent", Severity::Medium, description, e, ts)
}

/// The alert for a sensor heard from again at `back_at` after the episode `e`.
pub fn back_alert(e: &Episode<'_>, back_at: DateTime<Utc>) -> Alert {
    let silent_s = (back_at - e.last_heard).num_milliseconds().max(0) as f64 / 1000.0;
    let description = format!("Sensor `{}` is reporting again after {silent_s:.0}s of silence.", e.sensor_id);
    let mut a = base(BACK_RULE, "Sensor back", Severity::Info, description, e, back_at);
    a.row.insert("silent_s".into(), Value::from(silent_s));
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn episodes_have_stable_ids_and_the_alert_shape() {
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().to_utc();
        let e = Episode {
            sensor_id: "web-01",
            tenant: "acme",
            host: Some("h"),
            last_heard: t0,
            threshold: std::time::Duration::from_secs(15),
        };
        let a = silent_alert(&e);
        assert_eq!(a.alert_id, silent_alert(&e).alert_id, "same episode, same id");
        assert_eq!((a.rule_id.as_str(), a.tenant.as_deref()), (SILENT_RULE, Some("acme")));
        assert_eq!(a.ts, t0 + chrono::Duration::seconds(15));
        let b = back_alert(&e, t0 + chrono::Duration::seconds(60));
        assert_ne!(a.alert_id, b.alert_id);
        assert_eq!(b.row["silent_s"], json!(60.0));
        let later = Episode { last_heard: t0 + chrono::Duration::seconds(1), ..e.clone() };
        assert_ne!(silent_alert(&later).alert_id, a.alert_id, "another episode, another id");
        // Same JSON shape as rule alerts.
        let v = serde_json::to_value(&a).unwrap();
        for k in ["alert_id", "rule_id", "severity", "sensor_id", "tenant", "ts", "detected_at", "row"] {
            assert!(v.get(k).is_some(), "{k}");
        }
    }
}
