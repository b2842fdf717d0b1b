//! Arrow IPC stream payloads → the table's schema: columns cast where lossless, identity
//! stamped from the certificate, rows without `ts` or with a foreign identity rejected.

use std::io::Cursor;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, StringArray, UInt32Array, UInt64Array, new_null_array};
use arrow::compute::{cast, concat_batches, filter};
use arrow::datatypes::DataType;
use arrow::ipc::reader::StreamReader;

use super::{Decoded, Identity, Rejections};
use crate::error::{Result, SchemaError};
use crate::tables::{SENSOR_ID, TENANT, TS, TableDef};

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

pub(super) fn decode(
    table: &TableDef,
    seq: u64,
    payload: &[u8],
    id: &Identity<'_>,
    max_rows: usize,
) -> Result<Decoded> {
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
    use crate::decode::decode_frame;
    use crate::frame::{DataFrame, Encoding};
    use crate::tables::Catalog;
    use arrow::array::Int32Array;
    use arrow::datatypes::{Field, Schema};
    use arrow::ipc::writer::StreamWriter;

    const ID: Identity<'static> =
        Identity { sensor_id: "s-1", tenant: "acme", default_host: Some("web-1"), trust_rows: false };

    fn strings(batch: &RecordBatch, col: &str) -> Vec<Option<String>> {
        let a = batch.column_by_name(col).unwrap().as_any().downcast_ref::<StringArray>().unwrap();
        a.iter().map(|v| v.map(str::to_string)).collect()
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
