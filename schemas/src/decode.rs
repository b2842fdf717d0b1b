//! Data frame payloads (NDJSON, Arrow IPC) → Arrow batches in the table's schema.
//!
//! Decoding stamps the identity taken from the certificate (`sensor_id`, `tenant`), fills a
//! missing `host`, and adds the internal `__seq`/`__row` columns. A bad row is reported and
//! skipped; its batch-mates still flow.

use std::io::Cursor;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch, StringArray,
    StringBuilder, TimestampMicrosecondBuilder, UInt32Array, UInt64Array, new_null_array,
};
use arrow::compute::{cast, concat_batches, filter};
use arrow::datatypes::DataType;
use arrow::ipc::reader::StreamReader;
use serde_json::Value;

use crate::error::{Result, SchemaError};
use crate::frame::{DataFrame, Encoding, RowError};
use crate::tables::{ColumnType, HOST, SENSOR_ID, TENANT, TS, TableDef};

/// Row errors detailed per frame; the rest are only counted.
pub const MAX_DETAILED_ROW_ERRORS: usize = 100;

/// Who sent the frame, as established by the TLS handshake.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    /// Sensor id from the certificate.
    pub sensor_id: &'a str,
    /// Tenant from the certificate.
    pub tenant: &'a str,
    /// Host announced in HELLO; used where a row has no `host`.
    pub default_host: Option<&'a str>,
    /// Offline tools only (`vedette rules test`): take `sensor_id`/`tenant` from the row when
    /// present instead of rejecting a mismatch. Never set on the network path.
    pub trust_rows: bool,
}

/// Result of decoding one data frame.
#[derive(Debug)]
pub struct Decoded {
    /// Accepted rows in the table's full schema; `None` when no row was accepted.
    pub batch: Option<RecordBatch>,
    /// Rows accepted.
    pub accepted: u32,
    /// Rows rejected.
    pub rejected: u32,
    /// Details of the first [`MAX_DETAILED_ROW_ERRORS`] rejected rows.
    pub errors: Vec<RowError>,
}

/// Decodes a data frame for `table`. Frame-level problems (bad encoding, schema mismatch, too
/// many rows) are errors; row-level problems are reported in [`Decoded::errors`].
pub fn decode_frame(table: &TableDef, frame: &DataFrame<'_>, id: &Identity<'_>, max_rows: usize) -> Result<Decoded> {
    match frame.encoding {
        Encoding::Ndjson => decode_ndjson(table, frame.seq, frame.payload, id, max_rows),
        Encoding::Arrow => decode_arrow(table, frame.seq, frame.payload, id, max_rows),
    }
}

struct Rejections {
    count: u32,
    details: Vec<RowError>,
}

impl Rejections {
    fn new() -> Self {
        Self { count: 0, details: Vec::new() }
    }

    fn push(&mut self, row: usize, column: Option<&str>, reason: String) {
        self.count += 1;
        if self.details.len() < MAX_DETAILED_ROW_ERRORS {
            self.details.push(RowError { row: row as u32, column: column.map(str::to_string), reason });
        }
    }
}

enum ColBuilder {
    Str(StringBuilder),
    I64(Int64Builder),
    F64(Float64Builder),
    Bool(BooleanBuilder),
    Ts(TimestampMicrosecondBuilder),
}

impl ColBuilder {
    fn new(ty: ColumnType) -> Self {
        match ty {
            ColumnType::String => Self::Str(StringBuilder::new()),
            ColumnType::Int64 => Self::I64(Int64Builder::new()),
            ColumnType::Float64 => Self::F64(Float64Builder::new()),
            ColumnType::Boolean => Self::Bool(BooleanBuilder::new()),
            ColumnType::Timestamp => Self::Ts(TimestampMicrosecondBuilder::new().with_timezone("UTC")),
        }
    }

    /// Appends an already validated cell.
    fn append(&mut self, cell: Cell<'_>) {
        match (self, cell) {
            (Self::Str(b), Cell::Str(s)) => b.append_value(s),
            (Self::I64(b), Cell::I64(v)) => b.append_value(v),
            (Self::F64(b), Cell::F64(v)) => b.append_value(v),
            (Self::Bool(b), Cell::Bool(v)) => b.append_value(v),
            (Self::Ts(b), Cell::I64(v)) => b.append_value(v),
            (Self::Str(b), _) => b.append_null(),
            (Self::I64(b), _) => b.append_null(),
            (Self::F64(b), _) => b.append_null(),
            (Self::Bool(b), _) => b.append_null(),
            (Self::Ts(b), _) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Str(b) => Arc::new(b.finish()),
            Self::I64(b) => Arc::new(b.finish()),
            Self::F64(b) => Arc::new(b.finish()),
            Self::Bool(b) => Arc::new(b.finish()),
            Self::Ts(b) => Arc::new(b.finish()),
        }
    }
}

#[derive(Clone, Copy)]
enum Cell<'a> {
    Null,
    Str(&'a str),
    I64(i64),
    F64(f64),
    Bool(bool),
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses an RFC 3339 timestamp into µs since the epoch.
pub fn parse_rfc3339_micros(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp_micros())
}

fn to_cell<'a>(ty: ColumnType, v: &'a Value) -> std::result::Result<Cell<'a>, String> {
    let wrong = || format!("expected {}, found {}", ty.name(), json_type(v));
    Ok(match (ty, v) {
        (_, Value::Null) => Cell::Null,
        (ColumnType::String, Value::String(s)) => Cell::Str(s),
        (ColumnType::Int64, Value::Number(n)) => {
            Cell::I64(n.as_i64().ok_or_else(|| format!("expected int64, found {n} (not an integer in range)"))?)
        }
        (ColumnType::Float64, Value::Number(n)) => Cell::F64(n.as_f64().ok_or_else(wrong)?),
        (ColumnType::Boolean, Value::Bool(b)) => Cell::Bool(*b),
        (ColumnType::Timestamp, Value::Number(n)) => {
            Cell::I64(n.as_i64().ok_or_else(|| format!("expected µs since epoch as an integer, found {n}"))?)
        }
        (ColumnType::Timestamp, Value::String(s)) => {
            Cell::I64(parse_rfc3339_micros(s).ok_or_else(|| format!("`{s}` is not an RFC 3339 timestamp"))?)
        }
        _ => return Err(wrong()),
    })
}

/// Checks one row against the table and fills `cells` (one per column) on success.
fn validate_row<'a>(
    cols: &'a [crate::tables::Column],
    obj: &'a serde_json::Map<String, Value>,
    id: &Identity<'a>,
    cells: &mut Vec<Cell<'a>>,
) -> std::result::Result<(), (&'a str, String)> {
    for col in cols {
        let v = obj.get(&col.name).unwrap_or(&Value::Null);
        let cell = to_cell(col.ty, v).map_err(|reason| (col.name.as_str(), reason))?;
        let cell = match (col.name.as_str(), cell) {
            (TS, Cell::Null) => return Err((TS, "ts is required (µs since epoch or RFC 3339)".into())),
            (SENSOR_ID | TENANT, c @ Cell::Str(_)) if id.trust_rows => c,
            (SENSOR_ID, Cell::Str(s)) if s != id.sensor_id => {
                return Err((
                    SENSOR_ID,
                    format!("row claims sensor_id `{s}` but the certificate says `{}`", id.sensor_id),
                ));
            }
            (TENANT, Cell::Str(s)) if s != id.tenant => {
                return Err((TENANT, format!("row claims tenant `{s}` but the certificate says `{}`", id.tenant)));
            }
            (SENSOR_ID, _) => Cell::Str(id.sensor_id),
            (TENANT, _) => Cell::Str(id.tenant),
            (HOST, Cell::Null) => id.default_host.map_or(Cell::Null, Cell::Str),
            (_, c) => c,
        };
        cells.push(cell);
    }
    Ok(())
}

fn decode_ndjson(table: &TableDef, seq: u64, payload: &[u8], id: &Identity<'_>, max_rows: usize) -> Result<Decoded> {
    let text = std::str::from_utf8(payload)
        .map_err(|e| SchemaError::BadPayload { encoding: "ndjson", reason: format!("not UTF-8: {e}") })?;
    let cols = table.columns();
    let mut builders: Vec<ColBuilder> = cols.iter().map(|c| ColBuilder::new(c.ty)).collect();
    let mut rows_idx: Vec<u32> = Vec::new();
    let mut rej = Rejections::new();
    for (row, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        if row >= max_rows {
            return Err(SchemaError::TooManyRows { rows: row + 1, max: max_rows });
        }
        let obj = match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(obj)) => obj,
            Ok(other) => {
                rej.push(row, None, format!("expected a JSON object, found {}", json_type(&other)));
                continue;
            }
            Err(e) => {
                rej.push(row, None, format!("invalid JSON: {e}"));
                continue;
            }
        };
        let mut cells: Vec<Cell<'_>> = Vec::with_capacity(cols.len());
        match validate_row(cols, &obj, id, &mut cells) {
            Ok(()) => {
                for (b, cell) in builders.iter_mut().zip(cells.iter()) {
                    b.append(*cell);
                }
                rows_idx.push(row as u32);
            }
            Err((column, reason)) => rej.push(row, Some(column), reason),
        }
    }
    let accepted = rows_idx.len();
    let batch = if accepted == 0 {
        None
    } else {
        let mut arrays: Vec<ArrayRef> = builders.iter_mut().map(ColBuilder::finish).collect();
        arrays.push(Arc::new(UInt64Array::from(vec![seq; accepted])));
        arrays.push(Arc::new(UInt32Array::from(rows_idx)));
        Some(RecordBatch::try_new(table.schema().clone(), arrays)?)
    };
    Ok(Decoded { batch, accepted: accepted as u32, rejected: rej.count, errors: rej.details })
}

fn castable(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    match to {
        Utf8 => matches!(from, Utf8 | LargeUtf8 | Utf8View),
        Int64 => matches!(from, Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32),
        Float64 => matches!(from, Float16 | Float32 | Float64 | Int8 | Int16 | Int32 | Int64),
        Boolean => matches!(from, Boolean),
        Timestamp(..) => matches!(from, Timestamp(..) | Int64),
        _ => from == to,
    }
}

fn decode_arrow(table: &TableDef, seq: u64, payload: &[u8], id: &Identity<'_>, max_rows: usize) -> Result<Decoded> {
    let bad = |e: arrow::error::ArrowError| SchemaError::BadPayload { encoding: "arrow", reason: e.to_string() };
    check_ipc_bounds(payload)?;
    let reader = StreamReader::try_new(Cursor::new(payload), None).map_err(bad)?;
    let mut rej = Rejections::new();
    let mut out = Vec::new();
    let mut offset = 0usize;
    for batch in reader {
        let batch = batch.map_err(bad)?;
        if offset + batch.num_rows() > max_rows {
            return Err(SchemaError::TooManyRows { rows: offset + batch.num_rows(), max: max_rows });
        }
        if let Some(b) = conform_arrow_batch(table, seq, &batch, offset, id, &mut rej)? {
            out.push(b);
        }
        offset += batch.num_rows();
    }
    let batch = match out.len() {
        0 => None,
        1 => out.pop(),
        _ => Some(concat_batches(table.schema(), &out)?),
    };
    let accepted = batch.as_ref().map_or(0, RecordBatch::num_rows) as u32;
    Ok(Decoded { batch, accepted, rejected: rej.count, errors: rej.details })
}

/// Walks the IPC stream's message framing and checks that every declared length fits in the
/// payload, so a forged length cannot make the reader allocate gigabytes.
fn check_ipc_bounds(payload: &[u8]) -> Result<()> {
    let bad = |reason: String| SchemaError::BadPayload { encoding: "arrow", reason };
    let mut pos = 0usize;
    let read_u32 = |at: usize| payload.get(at..at + 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
    while pos < payload.len() {
        let mut len = read_u32(pos).ok_or_else(|| bad(format!("truncated message length at byte {pos}")))?;
        pos += 4;
        if len == 0xFFFF_FFFF {
            len = read_u32(pos).ok_or_else(|| bad(format!("truncated message length at byte {pos}")))?;
            pos += 4;
        }
        if len == 0 {
            return Ok(()); // end-of-stream marker
        }
        let meta = payload.get(pos..pos + len as usize).ok_or_else(|| {
            bad(format!("message at byte {pos} declares {len} metadata bytes, past the end of the frame"))
        })?;
        let message = arrow::ipc::root_as_message(meta).map_err(|e| bad(format!("invalid message metadata: {e}")))?;
        pos += len as usize;
        let body = usize::try_from(message.bodyLength()).map_err(|_| bad("negative body length".into()))?;
        if body > payload.len() - pos {
            return Err(bad(format!("message declares a {body}-byte body, past the end of the frame")));
        }
        pos += body;
    }
    Ok(())
}

fn conform_arrow_batch(
    table: &TableDef,
    seq: u64,
    input: &RecordBatch,
    offset: usize,
    id: &Identity<'_>,
    rej: &mut Rejections,
) -> Result<Option<RecordBatch>> {
    let n = input.num_rows();
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(table.schema().fields().len());
    for col in table.columns() {
        let to = col.ty.data_type();
        let array = match input.column_by_name(&col.name) {
            None => new_null_array(&to, n),
            Some(a) if a.data_type() == &to => a.clone(),
            Some(a) if castable(a.data_type(), &to) => cast(a, &to)?,
            Some(a) => {
                return Err(SchemaError::SchemaMismatch {
                    table: table.name().into(),
                    column: col.name.clone(),
                    found: a.data_type().to_string(),
                    expected: col.ty.name().into(),
                });
            }
        };
        arrays.push(array);
    }
    // Row checks: ts present, claimed identity matches the certificate.
    let mut keep = Vec::with_capacity(n);
    let ts = &arrays[0];
    let claimed = |idx: usize| arrays[idx].as_any().downcast_ref::<StringArray>().cloned();
    let (sensor_col, tenant_col) = (claimed(1), claimed(2));
    for i in 0..n {
        let row = offset + i;
        let ok = if ts.is_null(i) {
            rej.push(row, Some(TS), "ts is required (µs since epoch or RFC 3339)".into());
            false
        } else if !id.trust_rows
            && let Some(s) = sensor_col.as_ref().filter(|c| c.is_valid(i)).map(|c| c.value(i))
            && s != id.sensor_id
        {
            rej.push(
                row,
                Some(SENSOR_ID),
                format!("row claims sensor_id `{s}` but the certificate says `{}`", id.sensor_id),
            );
            false
        } else if !id.trust_rows
            && let Some(t) = tenant_col.as_ref().filter(|c| c.is_valid(i)).map(|c| c.value(i))
            && t != id.tenant
        {
            rej.push(row, Some(TENANT), format!("row claims tenant `{t}` but the certificate says `{}`", id.tenant));
            false
        } else {
            true
        };
        keep.push(ok);
    }
    let fill = |a: &ArrayRef, default: &str| -> ArrayRef {
        let a = a.as_any().downcast_ref::<StringArray>().expect("identity columns are Utf8");
        Arc::new(a.iter().map(|v| Some(v.unwrap_or(default))).collect::<StringArray>())
    };
    if id.trust_rows {
        arrays[1] = fill(&arrays[1], id.sensor_id);
        arrays[2] = fill(&arrays[2], id.tenant);
    } else {
        arrays[1] = Arc::new(StringArray::from(vec![id.sensor_id; n]));
        arrays[2] = Arc::new(StringArray::from(vec![id.tenant; n]));
    }
    if let Some(default_host) = id.default_host {
        arrays[3] = fill(&arrays[3], default_host);
    }
    arrays.push(Arc::new(UInt64Array::from(vec![seq; n])));
    arrays.push(Arc::new(UInt32Array::from_iter_values((offset..offset + n).map(|r| r as u32))));
    let mask = BooleanArray::from(keep);
    if mask.true_count() < n {
        arrays = arrays.iter().map(|a| filter(a, &mask)).collect::<std::result::Result<_, _>>()?;
    }
    let batch = RecordBatch::try_new(table.schema().clone(), arrays)?;
    Ok((batch.num_rows() > 0).then_some(batch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::Catalog;
    use arrow::array::{Int32Array, TimestampMicrosecondArray};
    use arrow::datatypes::{Field, Schema};
    use arrow::ipc::writer::StreamWriter;

    const ID: Identity<'static> =
        Identity { sensor_id: "s-1", tenant: "acme", default_host: Some("web-1"), trust_rows: false };

    fn ndjson(payload: &str) -> Decoded {
        let cat = Catalog::builtin();
        let frame =
            DataFrame { seq: 9, table: "process_events", encoding: Encoding::Ndjson, payload: payload.as_bytes() };
        decode_frame(cat.get("process_events").unwrap(), &frame, &ID, 1000).unwrap()
    }

    fn strings(batch: &RecordBatch, col: &str) -> Vec<Option<String>> {
        let a = batch.column_by_name(col).unwrap().as_any().downcast_ref::<StringArray>().unwrap();
        a.iter().map(|v| v.map(str::to_string)).collect()
    }

    #[test]
    fn ndjson_rows_are_stamped_with_certificate_identity() {
        let d = ndjson(concat!(
            r#"{"ts":1700000000000000,"exe":"/bin/sh","pid":10}"#,
            "\n\n",
            r#"{"ts":"2024-01-01T00:00:00Z","exe":"/bin/ls","host":"db-2","sensor_id":"s-1"}"#,
            "\n"
        ));
        assert_eq!((d.accepted, d.rejected), (2, 0));
        let b = d.batch.unwrap();
        assert_eq!(strings(&b, "sensor_id"), [Some("s-1".into()), Some("s-1".into())]);
        assert_eq!(strings(&b, "tenant"), [Some("acme".into()), Some("acme".into())]);
        assert_eq!(strings(&b, "host"), [Some("web-1".into()), Some("db-2".into())]);
        let ts = b.column(0).as_any().downcast_ref::<TimestampMicrosecondArray>().unwrap();
        assert_eq!(ts.value(1), 1_704_067_200_000_000);
        let rows = b.column_by_name("__row").unwrap().as_any().downcast_ref::<UInt32Array>().unwrap();
        assert_eq!(rows.values().to_vec(), [0, 1]);
    }

    #[test]
    fn bad_rows_are_reported_and_their_batch_mates_kept() {
        let d = ndjson(concat!(
            r#"{"ts":1,"exe":"/bin/ok"}"#,
            "\n",
            r#"{"ts":1,"pid":"ten"}"#,
            "\n",
            "not json\n",
            r#"[1,2]"#,
            "\n",
            r#"{"exe":"/bin/no-ts"}"#,
            "\n",
            r#"{"ts":1,"sensor_id":"someone-else"}"#,
            "\n",
            r#"{"ts":"yesterday"}"#,
            "\n",
            r#"{"ts":2,"exe":"/bin/ok2","pid":1.5}"#,
            "\n",
            r#"{"ts":3,"exe":"/bin/ok3","unknown_field":true}"#,
            "\n",
        ));
        assert_eq!((d.accepted, d.rejected), (2, 7));
        let b = d.batch.unwrap();
        assert_eq!(strings(&b, "exe"), [Some("/bin/ok".into()), Some("/bin/ok3".into())]);
        let by_row: Vec<_> = d.errors.iter().map(|e| (e.row, e.column.as_deref())).collect();
        assert_eq!(
            by_row,
            [
                (1, Some("pid")),
                (2, None),
                (3, None),
                (4, Some("ts")),
                (5, Some("sensor_id")),
                (6, Some("ts")),
                (7, Some("pid"))
            ]
        );
        assert!(d.errors[0].reason.contains("expected int64, found a string"), "{:?}", d.errors[0]);
        assert!(d.errors[4].reason.contains("certificate says `s-1`"));
    }

    #[test]
    fn too_many_rows_and_bad_utf8_are_frame_errors() {
        let cat = Catalog::builtin();
        let t = cat.get("process_events").unwrap();
        let payload = "{\"ts\":1}\n".repeat(5);
        let frame =
            DataFrame { seq: 1, table: "process_events", encoding: Encoding::Ndjson, payload: payload.as_bytes() };
        assert!(matches!(decode_frame(t, &frame, &ID, 4), Err(SchemaError::TooManyRows { max: 4, .. })));
        let frame = DataFrame { seq: 1, table: "process_events", encoding: Encoding::Ndjson, payload: &[0xff, 0xfe] };
        assert!(decode_frame(t, &frame, &ID, 4).unwrap_err().to_string().contains("not UTF-8"));
    }

    fn ipc(batch: &RecordBatch) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut w = StreamWriter::try_new(&mut buf, &batch.schema()).unwrap();
        w.write(batch).unwrap();
        w.finish().unwrap();
        drop(w);
        buf
    }

    #[test]
    fn arrow_frames_are_conformed_cast_and_checked() {
        let schema = Schema::new(vec![
            Field::new("ts", DataType::Int64, true),
            Field::new("pid", DataType::Int32, true),
            Field::new("sensor_id", DataType::Utf8, true),
            Field::new("extra", DataType::Utf8, true),
        ]);
        let input = RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(arrow::array::Int64Array::from(vec![Some(5), None, Some(7)])),
                Arc::new(Int32Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec![None, None, Some("evil")])),
                Arc::new(StringArray::from(vec!["a", "b", "c"])),
            ],
        )
        .unwrap();
        let payload = ipc(&input);
        let cat = Catalog::builtin();
        let frame = DataFrame { seq: 3, table: "process_events", encoding: Encoding::Arrow, payload: &payload };
        let d = decode_frame(cat.get("process_events").unwrap(), &frame, &ID, 100).unwrap();
        assert_eq!((d.accepted, d.rejected), (1, 2));
        assert_eq!(d.errors.iter().map(|e| e.row).collect::<Vec<_>>(), [1, 2]);
        let b = d.batch.unwrap();
        assert_eq!(b.schema(), *cat.get("process_events").unwrap().schema());
        assert_eq!(strings(&b, "sensor_id"), [Some("s-1".into())]);
        assert_eq!(strings(&b, "host"), [Some("web-1".into())]);
    }

    #[test]
    fn arrow_type_mismatch_and_garbage_are_frame_errors() {
        let schema = Schema::new(vec![Field::new("pid", DataType::Utf8, true)]);
        let input = RecordBatch::try_new(Arc::new(schema), vec![Arc::new(StringArray::from(vec!["x"]))]).unwrap();
        let payload = ipc(&input);
        let cat = Catalog::builtin();
        let t = cat.get("process_events").unwrap();
        let frame = DataFrame { seq: 3, table: "process_events", encoding: Encoding::Arrow, payload: &payload };
        let err = decode_frame(t, &frame, &ID, 100).unwrap_err().to_string();
        assert!(err.contains("column `pid` has type Utf8, expected int64"), "{err}");
        let frame =
            DataFrame { seq: 3, table: "process_events", encoding: Encoding::Arrow, payload: b"garbage!garbage!" };
        assert!(decode_frame(t, &frame, &ID, 100).unwrap_err().to_string().starts_with("bad arrow payload"));
    }
}
