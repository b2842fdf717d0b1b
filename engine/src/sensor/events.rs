//! `vedette sensor --events FILE|-`: JSON lines, each an event with a `_table` key naming its
//! table, sent as they are (so an analyst can try a rule live without writing a client).

use std::io::BufRead;

use serde_json::Value;
use tokio::sync::mpsc;

use super::Event;

/// A line that is not an event; the error names the line.
#[derive(Debug, thiserror::Error)]
#[error("{source_name} line {line}: {reason}")]
pub struct BadLine {
    /// File name or `-`.
    pub source_name: String,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// Parses one line: `None` for a blank line.
pub fn parse_line(text: &str) -> Result<Option<Event>, String> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let mut row: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let obj = row.as_object_mut().ok_or("not a JSON object")?;
    let table = match obj.remove("_table") {
        Some(Value::String(t)) => t,
        Some(_) => return Err("`_table` must be a string".into()),
        None => return Err("no `_table` key (the table this event belongs to, e.g. \"process_events\")".into()),
    };
    if !obj.contains_key("ts") {
        obj.insert("ts".into(), chrono::Utc::now().timestamp_micros().into());
    }
    Ok(Some(Event { table, row }))
}

/// Reads events from `reader` (a blocking reader: run it off the runtime) into `tx`. Stops at
/// the first bad line, naming it.
pub fn pump(reader: impl BufRead, source_name: &str, tx: &mpsc::Sender<Event>) -> Result<usize, BadLine> {
    let mut n = 0;
    for (i, line) in reader.lines().enumerate() {
        let bad = |reason: String| BadLine { source_name: source_name.into(), line: i + 1, reason };
        let line = line.map_err(|e| bad(e.to_string()))?;
        if let Some(ev) = parse_line(&line).map_err(bad)? {
            if tx.blocking_send(ev).is_err() {
                break;
            }
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_need_a_table_and_get_a_timestamp() {
        let ev = parse_line(r#"{"_table":"auth_events","user":"root"}"#).unwrap().unwrap();
        assert_eq!(ev.table, "auth_events");
        assert!(ev.row.get("_table").is_none() && ev.row["ts"].is_i64());
        assert!(parse_line("   ").unwrap().is_none());
        assert!(parse_line(r#"{"user":"root"}"#).unwrap_err().contains("_table"));
        assert!(parse_line("[1]").unwrap_err().contains("object"));
        assert!(parse_line("{").unwrap_err().contains("not JSON"));
        let (tx, mut rx) = mpsc::channel(8);
        let text = "{\"_table\":\"t\"}\n\n{\"x\":1}\n";
        let err = std::thread::spawn(move || pump(text.as_bytes(), "ev.jsonl", &tx)).join().unwrap().unwrap_err();
        assert_eq!((err.line, err.to_string().starts_with("ev.jsonl line 3")), (3, true));
        assert_eq!(rx.try_recv().unwrap().table, "t");
    }
}
