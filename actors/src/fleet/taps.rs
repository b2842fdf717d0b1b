//! Live taps on sensors' raw telemetry (`GET /api/v1/events/stream?sensor=ID`): while someone
//! listens to a sensor, each of its accepted frames is also published as JSON lines. Nothing
//! is converted for sensors nobody listens to.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use arrow::array::RecordBatch;
use tokio::sync::broadcast;

/// Frames buffered per tap before a slow listener skips some (it is told how many).
const TAP_BUFFER: usize = 256;

/// One published frame: its table and its rows as JSON lines, each with `_table`.
#[derive(Debug, Clone)]
pub struct TapFrame {
    /// Table.
    pub table: Arc<str>,
    /// One JSON object per line.
    pub lines: Arc<str>,
}

/// The taps.
#[derive(Default)]
pub struct Taps {
    map: RwLock<HashMap<String, broadcast::Sender<TapFrame>>>,
}

impl Taps {
    /// Listens to a sensor's telemetry from now on.
    pub fn subscribe(&self, sensor: &str) -> broadcast::Receiver<TapFrame> {
        let mut map = self.map.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|_, s| s.receiver_count() > 0);
        map.entry(sensor.to_string()).or_insert_with(|| broadcast::channel(TAP_BUFFER).0).subscribe()
    }

    /// Whether anyone listens to `sensor`.
    pub fn is_tapped(&self, sensor: &str) -> bool {
        let map = self.map.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        !map.is_empty() && map.get(sensor).is_some_and(|s| s.receiver_count() > 0)
    }

    /// Publishes a frame's rows (engine-internal `__` columns left out, nulls omitted).
    pub fn publish(&self, sensor: &str, table: &str, batch: &RecordBatch) {
        let Some(tx) = self.map.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(sensor).cloned() else {
            return;
        };
        let Some(lines) = json_lines(table, batch) else { return };
        let _ = tx.send(TapFrame { table: Arc::from(table), lines: Arc::from(lines) });
    }

    /// Ends every listener of a deregistered sensor.
    pub fn close(&self, sensor: &str) {
        self.map.write().unwrap_or_else(std::sync::PoisonError::into_inner).remove(sensor);
    }
}

/// The batch as JSON lines, `_table` first.
pub fn json_lines(table: &str, batch: &RecordBatch) -> Option<String> {
    let keep: Vec<usize> =
        (0..batch.num_columns()).filter(|i| !batch.schema().field(*i).name().starts_with("__")).collect();
    let visible = batch.project(&keep).ok()?;
    let mut buf = Vec::new();
    {
        let mut w = arrow::json::LineDelimitedWriter::new(&mut buf);
        w.write(&visible).ok()?;
        w.finish().ok()?;
    }
    let text = String::from_utf8(buf).ok()?;
    let prefix = format!("{{\"_table\":{}", serde_json::Value::from(table));
    let mut out = String::with_capacity(text.len() + text.lines().count() * prefix.len());
    for line in text.lines() {
        out.push_str(&prefix);
        match line.strip_prefix('{') {
            Some("}") | None => out.push('}'),
            Some(rest) => {
                out.push(',');
                out.push_str(rest);
            }
        }
        out.push('\n');
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn frames_become_json_lines_for_listeners_only() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("user", DataType::Utf8, true),
            Field::new("__seq", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(StringArray::from(vec![Some("root"), None])), Arc::new(Int64Array::from(vec![1, 1]))],
        )
        .unwrap();
        assert_eq!(
            json_lines("auth_events", &batch).unwrap(),
            "{\"_table\":\"auth_events\",\"user\":\"root\"}\n{\"_table\":\"auth_events\"}\n"
        );
        let taps = Taps::default();
        assert!(!taps.is_tapped("s1"));
        let mut rx = taps.subscribe("s1");
        assert!(taps.is_tapped("s1") && !taps.is_tapped("s2"));
        taps.publish("s1", "auth_events", &batch);
        assert_eq!(&*rx.try_recv().unwrap().table, "auth_events");
        taps.close("s1");
        assert!(matches!(rx.try_recv(), Err(broadcast::error::TryRecvError::Closed)));
    }
}
