//! Alert encodings for sinks: JSON, CEF, STIX 2.1, OCSF and a readable text line. Pure
//! functions of an [`Alert`]; each module has conformance tests against its spec's rules.

pub mod cef;
pub mod ocsf;
pub mod stix;

use vedette_config::Format;

use crate::alert::Alert;

/// Product name in CEF headers, OCSF metadata and STIX identities.
pub const PRODUCT: &str = "vedette";
/// Vendor name.
pub const VENDOR: &str = "vedette";
/// Product version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Encodes one alert (no trailing newline).
pub fn encode(format: Format, alert: &Alert) -> Vec<u8> {
    match format {
        Format::Json => serde_json::to_vec(alert).expect("alerts serialize"),
        Format::Text => alert.render_line().into_bytes(),
        Format::Cef => cef::encode(alert).into_bytes(),
        Format::Stix => serde_json::to_vec(&stix::bundle(alert)).expect("json values serialize"),
        Format::Ocsf => serde_json::to_vec(&ocsf::detection_finding(alert)).expect("json values serialize"),
    }
}

/// A string cell of the alert's result row.
pub(crate) fn row_str<'a>(alert: &'a Alert, key: &str) -> Option<&'a str> {
    alert.row.get(key).and_then(|v| v.as_str()).filter(|s| !s.is_empty())
}

/// An integer cell of the alert's result row.
pub(crate) fn row_int(alert: &Alert, key: &str) -> Option<i64> {
    alert.row.get(key).and_then(|v| v.as_i64())
}

/// A sample process alert with awkward characters in every text field: what `vedette sinks
/// test` sends, and the fixture of the encoders' conformance tests.
pub fn sample_alert() -> Alert {
    fixtures::process_alert()
}

pub(crate) mod fixtures {
    use chrono::TimeZone;

    use crate::alert::Alert;
    use crate::rule::Severity;

    /// A process alert with awkward characters in every text field.
    pub fn process_alert() -> Alert {
        let row = serde_json::json!({
            "exe": "/usr/bin/cur|l", "cmdline": "curl -d a=b\\c 'x'\nsecond line", "pid": 4242,
            "user": "root", "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "src_ip": "10.0.0.5", "dst_ip": "203.0.113.9", "dst_port": 443
        });
        Alert {
            alert_id: uuid::Uuid::from_u128(0x7a1c_6b0e_2f3b_5c57_9e21_7a4b_d0c3_e812),
            rule_id: "linux.curl_pipe".into(),
            rule_name: "Download | piped to shell".into(),
            rule_version: 3,
            pack: "linux".into(),
            severity: Severity::High,
            tags: vec!["attack.t1105".into(), "attack.execution".into()],
            description: "curl output = piped \\ to a shell\r\nsecond line".into(),
            sensor_id: Some("sensor-7".into()),
            tenant: Some("acme".into()),
            host: Some("web-1".into()),
            table: "process_events".into(),
            ts: chrono::Utc.timestamp_micros(1_700_000_000_123_456).single().unwrap_or_default(),
            window_start: None,
            window_end: None,
            edge: None,
            detected_at: chrono::Utc.timestamp_micros(1_700_000_001_000_000).single().unwrap_or_default(),
            row: row.as_object().cloned().unwrap_or_default(),
        }
    }
}
