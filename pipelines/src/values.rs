//! Arrow cells → JSON values for alert rows (timestamps become RFC 3339 UTC strings).

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, TimeUnit};
use arrow::datatypes::{UInt8Type, UInt16Type, UInt32Type, UInt64Type};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

/// Formats µs since the epoch as RFC 3339 UTC (`2026-11-22T06:00:00.123456Z`).
pub fn micros_to_rfc3339(us: i64) -> String {
    micros_to_datetime(us).to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// µs since the epoch → `DateTime<Utc>` (saturating at the representable range).
pub fn micros_to_datetime(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn timestamp_micros(array: &dyn Array, i: usize, unit: TimeUnit) -> i64 {
    use arrow::datatypes::{
        TimestampMicrosecondType as Us, TimestampMillisecondType as Ms, TimestampNanosecondType as Ns,
        TimestampSecondType as S,
    };
    match unit {
        TimeUnit::Second => array.as_primitive::<S>().value(i).saturating_mul(1_000_000),
        TimeUnit::Millisecond => array.as_primitive::<Ms>().value(i).saturating_mul(1_000),
        TimeUnit::Microsecond => array.as_primitive::<Us>().value(i),
        TimeUnit::Nanosecond => array.as_primitive::<Ns>().value(i) / 1_000,
    }
}

/// Reads a timestamp cell as µs since the epoch, if the column is a timestamp and not null.
pub fn cell_micros(array: &dyn Array, i: usize) -> Option<i64> {
    match array.data_type() {
        DataType::Timestamp(unit, _) if array.is_valid(i) => Some(timestamp_micros(array, i, *unit)),
        _ => None,
    }
}

/// Reads a string cell, if the column is Utf8 and not null.
pub fn cell_str(array: &dyn Array, i: usize) -> Option<&str> {
    match array.data_type() {
        DataType::Utf8 if array.is_valid(i) => Some(array.as_string::<i32>().value(i)),
        DataType::LargeUtf8 if array.is_valid(i) => Some(array.as_string::<i64>().value(i)),
        DataType::Utf8View if array.is_valid(i) => Some(array.as_string_view().value(i)),
        _ => None,
    }
}

/// Reads an unsigned or signed integer cell as u64.
pub fn cell_u64(array: &dyn Array, i: usize) -> Option<u64> {
    if array.is_null(i) {
        return None;
    }
    match array.data_type() {
        DataType::UInt64 => Some(array.as_primitive::<UInt64Type>().value(i)),
        DataType::UInt32 => Some(array.as_primitive::<UInt32Type>().value(i).into()),
        DataType::Int64 => u64::try_from(array.as_primitive::<Int64Type>().value(i)).ok(),
        _ => None,
    }
}

/// Converts one cell to JSON.
pub fn cell_to_json(array: &dyn Array, i: usize) -> Value {
    if array.is_null(i) {
        return Value::Null;
    }
    macro_rules! prim {
        ($t:ty) => {
            Value::from(array.as_primitive::<$t>().value(i))
        };
    }
    match array.data_type() {
        DataType::Boolean => Value::Bool(array.as_boolean().value(i)),
        DataType::Int8 => prim!(Int8Type),
        DataType::Int16 => prim!(Int16Type),
        DataType::Int32 => prim!(Int32Type),
        DataType::Int64 => prim!(Int64Type),
        DataType::UInt8 => prim!(UInt8Type),
        DataType::UInt16 => prim!(UInt16Type),
        DataType::UInt32 => prim!(UInt32Type),
        DataType::UInt64 => prim!(UInt64Type),
        DataType::Float32 => finite(f64::from(array.as_primitive::<Float32Type>().value(i))),
        DataType::Float64 => finite(array.as_primitive::<Float64Type>().value(i)),
        DataType::Timestamp(unit, _) => Value::String(micros_to_rfc3339(timestamp_micros(array, i, *unit))),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            Value::String(cell_str(array, i).unwrap_or_default().to_string())
        }
        _ => ArrayFormatter::try_new(array, &FormatOptions::default())
            .map(|f| Value::String(f.value(i).to_string()))
            .unwrap_or(Value::Null),
    }
}

fn finite(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or_else(|| Value::String(v.to_string()), Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, StringArray, TimestampMicrosecondArray};

    #[test]
    fn cells_convert_to_json() {
        let ts = TimestampMicrosecondArray::from(vec![Some(1_700_000_000_123_456), None]).with_timezone("UTC");
        assert_eq!(cell_to_json(&ts, 0), Value::String("2023-11-14T22:13:20.123456Z".into()));
        assert_eq!(cell_to_json(&ts, 1), Value::Null);
        assert_eq!(cell_micros(&ts, 0), Some(1_700_000_000_123_456));
        let f = Float64Array::from(vec![1.5, f64::NAN]);
        assert_eq!(cell_to_json(&f, 0), serde_json::json!(1.5));
        assert_eq!(cell_to_json(&f, 1), Value::String("NaN".into()));
        let s = StringArray::from(vec!["x"]);
        assert_eq!(cell_str(&s, 0), Some("x"));
    }
}
