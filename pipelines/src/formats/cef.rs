//! ArcSight Common Event Format (CEF 0), one line per alert:
//! `CEF:0|vedette|vedette|VERSION|<rule id>|<rule name>|<severity 0–10>|<extension>`.
//!
//! Escaping follows the CEF specification: in header fields `\` → `\\` and `|` → `\|`; in
//! extension values `\` → `\\` and `=` → `\=`; in both, line breaks are written `\n` / `\r`
//! so an event is always one line.

use crate::alert::Alert;
use crate::rule::Severity;

use super::{PRODUCT, VENDOR, VERSION, row_int, row_str};

/// CEF severity (0–10) of an alert severity.
pub fn severity(s: Severity) -> u8 {
    match s {
        Severity::Info => 1,
        Severity::Low => 3,
        Severity::Medium => 5,
        Severity::High => 8,
        Severity::Critical => 10,
    }
}

/// Escapes a header field.
pub fn header(s: &str) -> String {
    escape(s, '|')
}

/// Escapes an extension value.
pub fn value(s: &str) -> String {
    escape(s, '=')
}

fn escape(s: &str, special: char) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == special => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// The CEF line of an alert (no trailing newline).
pub fn encode(a: &Alert) -> String {
    let mut ext: Vec<(&str, String)> = vec![
        ("rt", a.detected_at.timestamp_millis().to_string()),
        ("start", a.window_start.unwrap_or(a.ts).timestamp_millis().to_string()),
    ];
    if let Some(end) = a.window_end {
        ext.push(("end", end.timestamp_millis().to_string()));
    }
    ext.push(("externalId", a.alert_id.to_string()));
    let opt = |v: &Option<String>| v.clone();
    for (k, v) in [("dvchost", opt(&a.host)), ("deviceExternalId", opt(&a.sensor_id))] {
        if let Some(v) = v {
            ext.push((k, v));
        }
    }
    ext.push(("cat", a.table.clone()));
    ext.push(("msg", a.description.clone()));
    for (k, col) in [("suser", "user"), ("sproc", "exe"), ("fileHash", "sha256"), ("src", "src_ip"), ("dst", "dst_ip")]
    {
        if let Some(v) = row_str(a, col) {
            ext.push((k, v.to_string()));
        }
    }
    for (k, col) in [("spid", "pid"), ("spt", "src_port"), ("dpt", "dst_port")] {
        if let Some(v) = row_int(a, col) {
            ext.push((k, v.to_string()));
        }
    }
    let custom = [
        ("cs1", "ruleId", a.rule_id.clone()),
        ("cs2", "pack", a.pack.clone()),
        ("cs3", "tags", a.tags.join(",")),
        ("cs4", "tenant", a.tenant.clone().unwrap_or_default()),
        ("cs5", "row", serde_json::Value::Object(a.row.clone()).to_string()),
    ];
    let mut out = format!(
        "CEF:0|{}|{}|{}|{}|{}|{}|",
        header(VENDOR),
        header(PRODUCT),
        header(VERSION),
        header(&a.rule_id),
        header(&a.rule_name),
        severity(a.severity)
    );
    let mut fields: Vec<String> = ext.iter().map(|(k, v)| format!("{k}={}", value(v))).collect();
    fields.push(format!("cn1Label=ruleVersion cn1={}", a.rule_version));
    for (k, label, v) in custom {
        fields.push(format!("{k}Label={label} {k}={}", value(&v)));
    }
    out.push_str(&fields.join(" "));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::fixtures::process_alert;

    /// Splits a CEF line into its 7 header fields and the extension, honouring `\|`.
    fn split_header(line: &str) -> (Vec<String>, String) {
        let mut fields = Vec::new();
        let mut cur = String::new();
        let mut chars = line.chars();
        while fields.len() < 7 {
            match chars.next() {
                Some('\\') => {
                    cur.push('\\');
                    cur.extend(chars.next());
                }
                Some('|') => fields.push(std::mem::take(&mut cur)),
                Some(c) => cur.push(c),
                None => panic!("fewer than 8 header fields: {line}"),
            }
        }
        (fields, chars.collect())
    }

    /// Parses the extension into key/value pairs, unescaping values (keys are the tokens
    /// directly before an unescaped `=`).
    fn parse_extension(ext: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        let mut cur = String::new();
        let mut chars = ext.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => cur.push('\n'),
                    Some('r') => cur.push('\r'),
                    Some(e) => cur.push(e),
                    None => {}
                },
                '=' => {
                    // `cur` is "<previous value> <key>": split off the key.
                    let (prev, key) = match cur.rfind(' ') {
                        Some(i) => (cur[..i].to_string(), cur[i + 1..].to_string()),
                        None => (String::new(), cur.clone()),
                    };
                    if let Some(last) = out.last_mut() {
                        last.1 = prev;
                    }
                    out.push((key, String::new()));
                    cur.clear();
                }
                c => cur.push(c),
            }
        }
        if let Some(last) = out.last_mut() {
            last.1 = cur;
        }
        out
    }

    #[test]
    fn header_escapes_pipes_and_backslashes_and_stays_on_one_line() {
        assert_eq!(header("a|b\\c"), "a\\|b\\\\c");
        assert_eq!(header("x=y"), "x=y", "= needs no escape in the header");
        assert_eq!(value("a=b\\c|d"), "a\\=b\\\\c|d", "| needs no escape in extensions");
        assert_eq!(value("one\ntwo\r"), "one\\ntwo\\r");
        let line = encode(&process_alert());
        assert!(!line.contains('\n') && !line.contains('\r'), "{line}");
        let (h, _) = split_header(&line);
        assert_eq!(h[0], "CEF:0");
        assert_eq!(h[4], "linux.curl_pipe");
        assert_eq!(h[5], "Download \\| piped to shell");
        assert_eq!(h[6], "8");
    }

    #[test]
    fn extension_values_round_trip_through_a_cef_parser() {
        let a = process_alert();
        let (_, ext) = split_header(&encode(&a));
        let kv = parse_extension(&ext);
        let get = |k: &str| kv.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("msg"), Some(a.description.as_str()));
        assert_eq!(get("sproc"), Some("/usr/bin/cur|l"));
        assert_eq!(get("suser"), Some("root"));
        assert_eq!(get("spid"), Some("4242"));
        assert_eq!(get("dpt"), Some("443"));
        assert_eq!(get("rt"), Some("1700000001000"));
        assert_eq!(get("start"), Some("1700000000123"));
        assert_eq!(get("externalId"), Some(a.alert_id.to_string().as_str()));
        assert_eq!(get("cs1Label"), Some("ruleId"));
        assert_eq!(get("cs3"), Some("attack.t1105,attack.execution"));
        let row: serde_json::Value = serde_json::from_str(get("cs5").unwrap()).unwrap();
        assert_eq!(row["cmdline"], "curl -d a=b\\c 'x'\nsecond line");
        // Every key is a plain alphanumeric token.
        assert!(kv.iter().all(|(k, _)| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric())), "{kv:?}");
    }

    #[test]
    fn severities_span_zero_to_ten() {
        use Severity::*;
        let s: Vec<u8> = [Info, Low, Medium, High, Critical].into_iter().map(severity).collect();
        assert_eq!(s, [1, 3, 5, 8, 10]);
    }
}
