//! The load's frames: a realistic event mix encoded once per sensor (NDJSON or Arrow IPC) and
//! replayed with a fresh sequence number and every row's `ts` overwritten in place.

use std::sync::Arc;

use serde_json::json;
use vedette_schemas::frame::{self, Encoding};

use super::Load;
use crate::mix::{PROGRAMS, SUSPICIOUS};

/// The placeholder every `ts` starts as, so a frame's timestamps can be overwritten in place.
pub(super) const TS_SENTINEL: i64 = 4_444_444_444_444_444;
const TS_DIGITS: usize = 16;

/// One pre-encoded frame: its table, payload, and where each row's `ts` sits in the payload.
pub(super) struct Template {
    pub(super) table: &'static str,
    pub(super) payload: Vec<u8>,
    ts_at: TsAt,
    pub(super) rows: u64,
}

enum TsAt {
    /// NDJSON: byte offset of each row's 16 ASCII digits.
    Digits(Vec<usize>),
    /// Arrow IPC: byte offset of the first of the `ts` column's little-endian i64 values.
    Int64(usize),
}

impl Template {
    /// Writes the frame for `seq` into `out`, every row stamped `ts` (µs).
    pub(super) fn encode(&self, out: &mut Vec<u8>, encoding: Encoding, seq: u64, ts: i64) {
        out.clear();
        frame::encode_data(out, encoding, seq, self.table, &self.payload);
        let base = out.len() - self.payload.len();
        match &self.ts_at {
            TsAt::Digits(at) => {
                let digits = format!("{ts:016}");
                for a in at {
                    out[base + a..base + a + TS_DIGITS].copy_from_slice(digits.as_bytes());
                }
            }
            TsAt::Int64(at) => {
                for r in 0..self.rows as usize {
                    let o = base + at + r * 8;
                    out[o..o + 8].copy_from_slice(&ts.to_le_bytes());
                }
            }
        }
    }
}

/// One event of the mix (`ts` left as the sentinel), and whether it should alert.
pub(super) fn event(table: &str, n: usize, host: &str, every: usize) -> (serde_json::Value, bool) {
    let ts = TS_SENTINEL;
    match table {
        "process_events" => {
            let bad = n % every == every / 2;
            let (exe, cmd) = if bad {
                let (e, c) = SUSPICIOUS[(n / every) % SUSPICIOUS.len()];
                (e.to_string(), c.to_string())
            } else {
                let (e, c) = PROGRAMS[n % PROGRAMS.len()];
                (e.to_string(), c.replace("{n}", &n.to_string()))
            };
            let row = json!({"ts": ts, "host": host, "event_type": "start", "pid": 1000 + n % 60_000,
                "ppid": 1, "uid": 1000, "user": "app", "exe": exe, "cmdline": cmd, "cwd": "/home/app",
                "parent_exe": "/usr/bin/bash", "parent_cmdline": "bash"});
            (row, bad)
        }
        "network_events" => (
            json!({"ts": ts, "host": host, "pid": 1000 + n % 60_000, "exe": "/usr/bin/node", "user": "app",
                "direction": "outbound", "protocol": "tcp", "src_ip": "10.0.3.17", "src_port": 30_000 + n % 30_000,
                "dst_ip": format!("10.0.{}.{}", n % 7, n % 250), "dst_port": 443, "dst_host": "api.internal.example"}),
            false,
        ),
        "file_events" => (
            json!({"ts": ts, "host": host, "pid": 1000 + n % 60_000, "exe": "/usr/bin/python3", "user": "app",
                "uid": 1000, "action": "write", "path": format!("/var/lib/app/cache/{}.json", n % 5000),
                "mode": 420, "sha256": format!("{:064x}", n)}),
            false,
        ),
        _ => (
            json!({"ts": ts, "host": host, "user": format!("user{}", n % 50), "src_ip": format!("10.1.{}.{}", n % 3, n % 200),
                "service": "sshd", "method": "publickey", "outcome": if n.is_multiple_of(10) { "failure" } else { "success" }}),
            false,
        ),
    }
}

/// Frames of one cycle of the mix: six of process events, two of network, one of files,
/// one of logins.
pub(super) const CYCLE: [&str; 10] = [
    "process_events",
    "network_events",
    "process_events",
    "file_events",
    "process_events",
    "process_events",
    "auth_events",
    "process_events",
    "network_events",
    "process_events",
];

pub(super) fn templates(
    host: &str,
    load: &Load,
    catalog: &vedette_schemas::tables::Catalog,
) -> anyhow::Result<Vec<Template>> {
    let mut out = Vec::new();
    for (f, table) in CYCLE.iter().enumerate() {
        let rows: Vec<serde_json::Value> = (0..load.frame_rows)
            .map(|r| event(table, f * load.frame_rows + r, host, load.suspicious_every).0)
            .collect();
        out.push(encode_template(table, &rows, load.encoding, catalog)?);
    }
    Ok(out)
}

fn encode_template(
    table: &'static str,
    rows: &[serde_json::Value],
    encoding: Encoding,
    catalog: &vedette_schemas::tables::Catalog,
) -> anyhow::Result<Template> {
    let mut payload = Vec::new();
    let mut at = Vec::new();
    for row in rows {
        let line = row.to_string();
        let needle = format!("\"ts\":{TS_SENTINEL}");
        let pos = line.find(&needle).ok_or_else(|| anyhow::anyhow!("ts not found"))?;
        at.push(payload.len() + pos + 5);
        payload.extend_from_slice(line.as_bytes());
        payload.push(b'\n');
    }
    if encoding == Encoding::Ndjson {
        return Ok(Template { table, payload, ts_at: TsAt::Digits(at), rows: rows.len() as u64 });
    }
    // Arrow: the sensor-facing columns of the table, `ts` as Int64.
    let def = catalog.get(table)?;
    let fields: Vec<arrow::datatypes::Field> = def
        .schema()
        .fields()
        .iter()
        .filter(|f| !matches!(f.name().as_str(), "sensor_id" | "tenant") && !f.name().starts_with("__"))
        .map(|f| {
            if f.name() == "ts" {
                arrow::datatypes::Field::new("ts", arrow::datatypes::DataType::Int64, false)
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    let schema = Arc::new(arrow::datatypes::Schema::new(fields));
    let mut decoder = arrow::json::ReaderBuilder::new(Arc::clone(&schema)).build_decoder()?;
    decoder.serialize(rows)?;
    let batch = decoder.flush()?.ok_or_else(|| anyhow::anyhow!("no rows"))?;
    let mut ipc = Vec::new();
    {
        let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut ipc, &schema)?;
        w.write(&batch)?;
        w.finish()?;
    }
    let pattern: Vec<u8> = std::iter::repeat_n(TS_SENTINEL.to_le_bytes(), rows.len()).flatten().collect();
    let pos = ipc
        .windows(pattern.len())
        .position(|w| w == pattern.as_slice())
        .ok_or_else(|| anyhow::anyhow!("ts column not found in the IPC stream"))?;
    Ok(Template { table, payload: ipc, ts_at: TsAt::Int64(pos), rows: rows.len() as u64 })
}

pub(super) fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A replayed frame decodes to the template's rows with every `ts` the one given.
    #[test]
    fn replayed_frames_carry_fresh_timestamps_in_both_encodings() {
        assert_eq!(TS_SENTINEL.to_string().len(), TS_DIGITS);
        let catalog = vedette_schemas::tables::Catalog::builtin();
        for encoding in [Encoding::Ndjson, Encoding::Arrow] {
            let load = Load {
                duration: Duration::ZERO,
                warmup: Duration::ZERO,
                sensors: 1,
                encoding,
                pack: None,
                suspicious_every: 7,
                frame_rows: 50,
                rate: None,
                window_frames: 1,
                json: None,
                peers: false,
                engine_config: Vec::new(),
                sink_linger: Duration::ZERO,
                mode: "throughput",
                kafka: false,
                outage: None,
                remote: None,
                windows: 10,
            };
            let tpl = templates("host-1", &load, &catalog).unwrap();
            let id = vedette_schemas::decode::Identity {
                sensor_id: "s",
                tenant: "t",
                default_host: None,
                trust_rows: false,
            };
            let mut buf = Vec::new();
            for (i, t) in tpl.iter().enumerate() {
                let ts = 1_764_000_000_000_000 + i as i64;
                t.encode(&mut buf, encoding, 9, ts);
                let ty = if encoding == Encoding::Arrow {
                    frame::FrameType::DataArrow
                } else {
                    frame::FrameType::DataNdjson
                };
                let f = frame::parse_data(ty, &buf[frame::HEADER_LEN..]).unwrap();
                assert_eq!((f.seq, f.table), (9, t.table));
                let d =
                    vedette_schemas::decode::decode_frame(catalog.get(t.table).unwrap(), &f, &id, usize::MAX).unwrap();
                assert!(d.errors.is_empty(), "{:?}", d.errors);
                let batch = d.batch.unwrap();
                assert_eq!(batch.num_rows(), 50);
                let col = batch.column_by_name("ts").unwrap();
                let col = arrow::compute::cast(col, &arrow::datatypes::DataType::Int64).unwrap();
                let col = col.as_any().downcast_ref::<arrow::array::Int64Array>().unwrap();
                assert!(col.iter().all(|v| v == Some(ts)), "{encoding:?} {}", t.table);
            }
        }
    }
}
