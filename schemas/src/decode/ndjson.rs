//! NDJSON payloads → Arrow, one pass per line straight into the table's column builders.
//!
//! Each line is read by serde_json's streaming parser with a visitor that knows the table: a
//! key is looked up among the table's columns, its value checked against the column's type as
//! it is parsed (strings borrowed from the payload unless they hold escapes), and unknown keys
//! skipped without building anything. No `serde_json::Value` tree, no map of owned keys per
//! row. The rules are those of the JSON reading of a row (see `docs/protocol.md`): the whole
//! line must be valid JSON and an object; a later duplicate key wins; the first column, in the
//! table's order, whose value has the wrong type names the row's error.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
    UInt32Array, UInt64Array,
};
use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::{Decoded, Identity, Rejections, parse_rfc3339_micros};
use crate::error::{Result, SchemaError};
use crate::tables::{Column, ColumnType, HOST, SENSOR_ID, TENANT, TS, TableDef};

pub(super) fn decode(
    table: &TableDef,
    seq: u64,
    payload: &[u8],
    id: &Identity<'_>,
    max_rows: usize,
) -> Result<Decoded> {
    let text = std::str::from_utf8(payload)
        .map_err(|e| SchemaError::BadPayload { encoding: "ndjson", reason: format!("not UTF-8: {e}") })?;
    let cols = table.columns();
    let mut builders: Vec<ColBuilder> = cols.iter().map(|c| ColBuilder::new(c.ty)).collect();
    let mut rows_idx: Vec<u32> = Vec::new();
    let mut rej = Rejections::new();
    let mut slots: Vec<Slot<'_>> = Vec::with_capacity(cols.len());
    for (row, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        if row >= max_rows {
            return Err(SchemaError::TooManyRows { rows: row + 1, max: max_rows });
        }
        slots.clear();
        slots.resize_with(cols.len(), || Slot::Null);
        match read_line(line, cols, &mut slots) {
            Ok(Shape::Object) => {}
            Ok(Shape::Other(found)) => {
                rej.push(row, None, format!("expected a JSON object, found {found}"));
                continue;
            }
            Err(e) => {
                rej.push(row, None, format!("invalid JSON: {e}"));
                continue;
            }
        }
        match check_row(cols, &slots, id) {
            Ok(()) => {
                for ((b, col), slot) in builders.iter_mut().zip(cols).zip(&slots) {
                    b.append(stamped(col, slot, id));
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

/// One cell as read from a line, before the row's checks.
#[derive(Debug)]
enum Slot<'de> {
    /// Absent or JSON `null`.
    Null,
    Str(Cow<'de, str>),
    I64(i64),
    F64(f64),
    Bool(bool),
    /// A value of the wrong type for its column: the reason.
    Bad(String),
}

/// What a line turned out to be.
enum Shape {
    Object,
    /// Valid JSON but not an object: "an array", "a number", …
    Other(&'static str),
}

/// Parses one line into `slots` (one per column, `Slot::Null` on entry).
fn read_line<'de>(line: &'de str, cols: &[Column], slots: &mut [Slot<'de>]) -> serde_json::Result<Shape> {
    let mut de = serde_json::Deserializer::from_str(line);
    let shape = de.deserialize_any(LineVisitor { cols, slots })?;
    de.end()?;
    Ok(shape)
}

/// The row checks of the protocol, in the table's column order: the first bad column names the
/// error.
fn check_row<'a>(
    cols: &'a [Column],
    slots: &[Slot<'_>],
    id: &Identity<'_>,
) -> std::result::Result<(), (&'a str, String)> {
    for (col, slot) in cols.iter().zip(slots) {
        let name = col.name.as_str();
        match (name, slot) {
            (_, Slot::Bad(reason)) => return Err((name, reason.clone())),
            (TS, Slot::Null) => return Err((TS, "ts is required (µs since epoch or RFC 3339)".into())),
            (SENSOR_ID, Slot::Str(s)) if !id.trust_rows && s != id.sensor_id => {
                return Err((
                    SENSOR_ID,
                    format!("row claims sensor_id `{s}` but the certificate says `{}`", id.sensor_id),
                ));
            }
            (TENANT, Slot::Str(s)) if !id.trust_rows && s != id.tenant => {
                return Err((TENANT, format!("row claims tenant `{s}` but the certificate says `{}`", id.tenant)));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The cell stored for a checked slot: identity from the certificate (or the row, for offline
/// tools), `host` defaulted from HELLO.
fn stamped<'a>(col: &Column, slot: &'a Slot<'a>, id: &Identity<'a>) -> Cell<'a> {
    let cell = match slot {
        Slot::Null | Slot::Bad(_) => Cell::Null,
        Slot::Str(s) => Cell::Str(s),
        Slot::I64(v) => Cell::I64(*v),
        Slot::F64(v) => Cell::F64(*v),
        Slot::Bool(v) => Cell::Bool(*v),
    };
    match (col.name.as_str(), cell) {
        (SENSOR_ID | TENANT, c @ Cell::Str(_)) if id.trust_rows => c,
        (SENSOR_ID, _) => Cell::Str(id.sensor_id),
        (TENANT, _) => Cell::Str(id.tenant),
        (HOST, Cell::Null) => id.default_host.map_or(Cell::Null, Cell::Str),
        (_, c) => c,
    }
}

struct LineVisitor<'c, 's, 'de> {
    cols: &'c [Column],
    slots: &'s mut [Slot<'de>],
}

impl<'de> Visitor<'de> for LineVisitor<'_, '_, 'de> {
    type Value = Shape;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Shape, A::Error> {
        while let Some(key) = map.next_key_seed(KeySeed(self.cols))? {
            match key {
                Some(i) => self.slots[i] = map.next_value_seed(CellSeed(self.cols[i].ty))?,
                None => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(Shape::Object)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Shape, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Shape::Other("an array"))
    }

    fn visit_unit<E: de::Error>(self) -> std::result::Result<Shape, E> {
        Ok(Shape::Other("null"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> std::result::Result<Shape, E> {
        Ok(Shape::Other("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> std::result::Result<Shape, E> {
        Ok(Shape::Other("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> std::result::Result<Shape, E> {
        Ok(Shape::Other("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> std::result::Result<Shape, E> {
        Ok(Shape::Other("a number"))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> std::result::Result<Shape, E> {
        Ok(Shape::Other("a string"))
    }
}

/// A key of the line's object → the index of the table column it names, if any.
struct KeySeed<'c>(&'c [Column]);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> std::result::Result<Option<usize>, E> {
        Ok(self.0.iter().position(|c| c.name == key))
    }
}

/// A value read for a column of type `.0`.
struct CellSeed(ColumnType);

impl CellSeed {
    fn wrong<'de>(&self, found: &str) -> Slot<'de> {
        Slot::Bad(format!("expected {}, found {found}", self.0.name()))
    }

    fn integer<'de>(&self, v: i128) -> Slot<'de> {
        match (self.0, i64::try_from(v)) {
            (ColumnType::Int64, Ok(v)) | (ColumnType::Timestamp, Ok(v)) => Slot::I64(v),
            (ColumnType::Int64, Err(_)) => Slot::Bad(format!("expected int64, found {v} (not an integer in range)")),
            (ColumnType::Timestamp, Err(_)) => Slot::Bad(format!("expected µs since epoch as an integer, found {v}")),
            (ColumnType::Float64, _) => Slot::F64(v as f64),
            _ => self.wrong("a number"),
        }
    }

    fn string<'de>(&self, s: Cow<'de, str>) -> Slot<'de> {
        match self.0 {
            ColumnType::String => Slot::Str(s),
            ColumnType::Timestamp => match parse_rfc3339_micros(&s) {
                Some(v) => Slot::I64(v),
                None => Slot::Bad(format!("`{s}` is not an RFC 3339 timestamp")),
            },
            _ => self.wrong("a string"),
        }
    }
}

impl<'de> DeserializeSeed<'de> for CellSeed {
    type Value = Slot<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Slot<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for CellSeed {
    type Value = Slot<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a JSON value for a {} column", self.0.name())
    }

    fn visit_unit<E: de::Error>(self) -> std::result::Result<Slot<'de>, E> {
        Ok(Slot::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> std::result::Result<Slot<'de>, E> {
        Ok(if self.0 == ColumnType::Boolean { Slot::Bool(v) } else { self.wrong("a boolean") })
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Slot<'de>, E> {
        Ok(self.integer(i128::from(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Slot<'de>, E> {
        Ok(self.integer(i128::from(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<Slot<'de>, E> {
        // Shown as JSON shows a number that is not an integer (serde_json's own formatting).
        let shown = || serde_json::Number::from_f64(v).map_or_else(|| v.to_string(), |n| n.to_string());
        Ok(match self.0 {
            ColumnType::Float64 => Slot::F64(v),
            ColumnType::Int64 => Slot::Bad(format!("expected int64, found {} (not an integer in range)", shown())),
            ColumnType::Timestamp => Slot::Bad(format!("expected µs since epoch as an integer, found {}", shown())),
            _ => self.wrong("a number"),
        })
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> std::result::Result<Slot<'de>, E> {
        Ok(self.string(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Slot<'de>, E> {
        Ok(self.string(Cow::Owned(v.to_owned())))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Slot<'de>, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(self.wrong("an array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Slot<'de>, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(self.wrong("an object"))
    }
}

/// A value that is read (so the line is checked exactly as a full JSON parse would: numbers in
/// range, escapes valid) and dropped without building anything.
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Skip, D::Error> {
        d.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> std::result::Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> std::result::Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> std::result::Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> std::result::Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> std::result::Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> std::result::Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
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

    /// Appends an already checked cell.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::decode_frame;
    use crate::frame::{DataFrame, Encoding};
    use crate::tables::Catalog;
    use arrow::array::{Array, StringArray, TimestampMicrosecondArray};
    use proptest::prelude::*;

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

    /// A JSON value of any shape, as text, including the corners of number and string syntax.
    fn json_value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
            any::<i64>().prop_map(|v| v.to_string()),
            any::<u64>().prop_map(|v| v.to_string()),
            Just("-0".to_string()),
            Just("1.0".to_string()),
            Just("1e3".to_string()),
            Just("-2.5E-3".to_string()),
            Just("1e400".to_string()),
            Just("18446744073709551616".to_string()),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| f.to_string()),
            "[a-z/ ]{0,12}".prop_map(|s| format!("\"{s}\"")),
            Just(r#""esc\"aped\n\u00e9\ud83d\ude00""#.to_string()),
            Just(r#""2024-01-01T00:00:00Z""#.to_string()),
            Just(r#""2024-02-30T00:00:00+02:00""#.to_string()),
            Just(r#""s-1""#.to_string()),
            Just(r#""acme""#.to_string()),
        ];
        leaf.prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec(("[a-z]{1,3}", inner), 0..3).prop_map(|kv| {
                    let body: Vec<String> = kv.into_iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                    format!("{{{}}}", body.join(","))
                }),
            ]
        })
    }

    /// One NDJSON line: mostly objects over the table's columns (duplicates and unknown keys
    /// included), sometimes other JSON, sometimes broken JSON.
    fn line() -> impl Strategy<Value = String> {
        let key = prop_oneof![
            Just("ts"),
            Just("sensor_id"),
            Just("tenant"),
            Just("host"),
            Just("s"),
            Just("i"),
            Just("f"),
            Just("b"),
            Just("__seq"),
            Just("unknown"),
            Just("t\\u0073"),
        ];
        let object = prop::collection::vec((key, json_value()), 0..9)
            .prop_map(|kv| {
                let body: Vec<String> = kv.into_iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
                format!("{{{}}}", body.join(", "))
            })
            .boxed();
        prop_oneof![
            6 => object.clone(),
            1 => json_value(),
            1 => (object, any::<prop::sample::Index>()).prop_map(|(o, at)| o[..at.index(o.len() + 1)].to_string()),
            1 => "[{}\\[\\]\":, a1.e-]{0,12}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn typed_decoder_gives_exactly_what_the_value_decoder_gave(
            lines in prop::collection::vec(line(), 1..12),
            trust_rows in any::<bool>(),
            default_host in prop::option::of(Just("web-1")),
        ) {
            let table = TableDef::new(
                "t",
                &[("s", ColumnType::String), ("i", ColumnType::Int64), ("f", ColumnType::Float64), ("b", ColumnType::Boolean)],
            )
            .unwrap();
            let id = Identity { sensor_id: "s-1", tenant: "acme", default_host, trust_rows };
            let payload = lines.join("\n");
            let new = decode(&table, 4, payload.as_bytes(), &id, 1000).unwrap();
            let old = reference::decode(&table, 4, payload.as_bytes(), &id, 1000).unwrap();
            prop_assert_eq!((new.accepted, new.rejected), (old.accepted, old.rejected), "{}", payload);
            prop_assert_eq!(&new.errors, &old.errors, "{}", payload);
            prop_assert_eq!(&new.batch, &old.batch, "{}", payload);
        }
    }

    /// The decoder this module replaced: each line parsed into a `serde_json::Value` and then
    /// checked column by column. The typed decoder must give exactly its results.
    mod reference {
        use std::sync::Arc;

        use arrow::array::{ArrayRef, RecordBatch, UInt32Array, UInt64Array};
        use serde_json::Value;

        use super::super::{Cell, ColBuilder};
        use crate::decode::{Decoded, Identity, Rejections, parse_rfc3339_micros};
        use crate::error::{Result, SchemaError};
        use crate::tables::{ColumnType, HOST, SENSOR_ID, TENANT, TS, TableDef};

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
                        return Err((
                            TENANT,
                            format!("row claims tenant `{s}` but the certificate says `{}`", id.tenant),
                        ));
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

        pub(super) fn decode(
            table: &TableDef,
            seq: u64,
            payload: &[u8],
            id: &Identity<'_>,
            max_rows: usize,
        ) -> Result<Decoded> {
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
    }
}
