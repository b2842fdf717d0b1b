//! OCSF 1.3 Detection Finding (class 2004, category 2 Findings), activity Create.
//!
//! The rule is the finding's analytic, the triggering row becomes an evidence with `process`
//! (and its `file`, `user`), `src_endpoint` / `dst_endpoint` objects; the sensor's host is the
//! `device`; the whole row is kept under `unmapped`.

use serde_json::{Map, Value, json};

use crate::alert::Alert;
use crate::rule::Severity;

use super::{PRODUCT, VENDOR, VERSION, row_int, row_str};

/// OCSF schema version written in `metadata.version`.
pub const SCHEMA_VERSION: &str = "1.3.0";
/// Detection Finding.
pub const CLASS_UID: u32 = 2004;
/// Findings.
pub const CATEGORY_UID: u32 = 2;
/// Activity: Create.
pub const ACTIVITY_CREATE: u32 = 1;

/// OCSF `severity_id` (1 Informational … 5 Critical) and its caption.
pub fn severity(s: Severity) -> (u8, &'static str) {
    match s {
        Severity::Info => (1, "Informational"),
        Severity::Low => (2, "Low"),
        Severity::Medium => (3, "Medium"),
        Severity::High => (4, "High"),
        Severity::Critical => (5, "Critical"),
    }
}

fn process(a: &Alert) -> Option<Value> {
    let (exe, cmd, pid, user, sha) =
        (row_str(a, "exe"), row_str(a, "cmdline"), row_int(a, "pid"), row_str(a, "user"), row_str(a, "sha256"));
    if exe.is_none() && cmd.is_none() && pid.is_none() {
        return None;
    }
    let mut p = Map::new();
    if let Some(pid) = pid {
        p.insert("pid".into(), json!(pid));
    }
    if let Some(c) = cmd {
        p.insert("cmd_line".into(), json!(c));
    }
    if let Some(e) = exe {
        let name = e.rsplit('/').next().unwrap_or(e);
        p.insert("name".into(), json!(name));
        let mut file = json!({"name": name, "path": e, "type_id": 1, "type": "Regular File"});
        if let Some(h) = sha {
            file["hashes"] = json!([{"algorithm_id": 3, "algorithm": "SHA-256", "value": h}]);
        }
        p.insert("file".into(), file);
    }
    if let Some(u) = user {
        p.insert("user".into(), json!({"name": u}));
    }
    Some(Value::Object(p))
}

fn endpoint(a: &Alert, ip: &str, port: &str) -> Option<Value> {
    let ip = row_str(a, ip)?;
    let mut e = json!({"ip": ip});
    if let Some(p) = row_int(a, port) {
        e["port"] = json!(p);
    }
    Some(e)
}

/// The Detection Finding of an alert.
pub fn detection_finding(a: &Alert) -> Value {
    let (severity_id, severity_name) = severity(a.severity);
    let time = a.detected_at.timestamp_millis();
    let mut evidence = Map::new();
    if let Some(p) = process(a) {
        evidence.insert("process".into(), p);
    }
    for (key, ip, port) in [("src_endpoint", "src_ip", "src_port"), ("dst_endpoint", "dst_ip", "dst_port")] {
        if let Some(e) = endpoint(a, ip, port) {
            evidence.insert(key.into(), e);
        }
    }
    let mut f = json!({
        "activity_id": ACTIVITY_CREATE,
        "activity_name": "Create",
        "category_uid": CATEGORY_UID,
        "category_name": "Findings",
        "class_uid": CLASS_UID,
        "class_name": "Detection Finding",
        "type_uid": CLASS_UID * 100 + ACTIVITY_CREATE,
        "type_name": "Detection Finding: Create",
        "severity_id": severity_id,
        "severity": severity_name,
        "status_id": 1,
        "status": "New",
        "time": time,
        "message": a.rule_name,
        "metadata": {
            "version": SCHEMA_VERSION,
            "uid": a.alert_id.to_string(),
            "product": {"name": PRODUCT, "vendor_name": VENDOR, "version": VERSION},
            "tenant_uid": a.tenant,
            "labels": a.tags,
        },
        "finding_info": {
            "uid": a.alert_id.to_string(),
            "title": a.rule_name,
            "desc": a.description,
            "created_time": time,
            "first_seen_time": a.window_start.unwrap_or(a.ts).timestamp_millis(),
            "last_seen_time": a.window_end.unwrap_or(a.ts).timestamp_millis(),
            "types": [a.table],
            "analytic": {
                "uid": a.rule_id, "name": a.rule_name, "version": a.rule_version.to_string(),
                "type_id": 1, "type": "Rule", "category": a.pack,
            },
        },
        "unmapped": {"row": Value::Object(a.row.clone())},
    });
    if !evidence.is_empty() {
        f["evidences"] = json!([Value::Object(evidence)]);
    }
    if a.host.is_some() || a.sensor_id.is_some() {
        let mut d = json!({"type_id": 0, "type": "Unknown"});
        if let Some(h) = &a.host {
            d["hostname"] = json!(h);
        }
        if let Some(s) = &a.sensor_id {
            d["uid"] = json!(s);
        }
        f["device"] = d;
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::fixtures::process_alert;

    #[test]
    fn detection_finding_has_the_required_attributes_and_consistent_ids() {
        let f = detection_finding(&process_alert());
        // Required by the Detection Finding class (and its Finding / Base Event parents).
        for key in
            ["activity_id", "category_uid", "class_uid", "type_uid", "severity_id", "time", "metadata", "finding_info"]
        {
            assert!(f.get(key).is_some_and(|v| !v.is_null()), "missing {key}: {f}");
        }
        assert_eq!(f["class_uid"], 2004);
        assert_eq!(f["category_uid"], 2);
        assert_eq!(f["type_uid"], f["class_uid"].as_u64().unwrap() * 100 + f["activity_id"].as_u64().unwrap());
        assert_eq!(f["severity_id"], 4);
        assert_eq!(f["time"], 1_700_000_001_000i64);
        assert_eq!(f["metadata"]["version"], SCHEMA_VERSION);
        assert!(f["metadata"]["product"]["vendor_name"].is_string());
        assert_eq!(f["finding_info"]["uid"], "7a1c6b0e-2f3b-5c57-9e21-7a4bd0c3e812");
        assert_eq!(f["finding_info"]["title"], "Download | piped to shell");
        assert_eq!(f["finding_info"]["analytic"]["type_id"], 1);
        let p = &f["evidences"][0]["process"];
        assert_eq!(p["pid"], 4242);
        assert_eq!(p["name"], "cur|l");
        assert_eq!(p["file"]["hashes"][0]["algorithm_id"], 3);
        assert_eq!(p["user"]["name"], "root");
        assert_eq!(f["evidences"][0]["dst_endpoint"], json!({"ip": "203.0.113.9", "port": 443}));
        assert_eq!(f["device"]["hostname"], "web-1");
        assert_eq!(f["unmapped"]["row"]["cmdline"], "curl -d a=b\\c 'x'\nsecond line");
    }

    #[test]
    fn severity_ids_cover_one_to_five() {
        use Severity::*;
        let ids: Vec<u8> = [Info, Low, Medium, High, Critical].into_iter().map(|s| severity(s).0).collect();
        assert_eq!(ids, [1, 2, 3, 4, 5]);
    }
}
