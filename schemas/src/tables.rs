//! Telemetry tables: the built-in set and operator-declared extras.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::error::{Result, SchemaError};

/// Event time column, microseconds since the Unix epoch, UTC.
pub const TS: &str = "ts";
/// Sensor identity column, set by the engine from the client certificate.
pub const SENSOR_ID: &str = "sensor_id";
/// Tenant column, set by the engine from the client certificate.
pub const TENANT: &str = "tenant";
/// Host name column, sent by the sensor (defaults to the host announced in HELLO).
pub const HOST: &str = "host";
/// Engine-assigned: the sequence number of the frame that carried the row.
pub const SEQ: &str = "__seq";
/// Engine-assigned: the row's position inside its frame (0-based).
pub const ROW: &str = "__row";
/// Prefix reserved for engine-internal columns; such columns never appear in alert rows.
pub const RESERVED_PREFIX: &str = "__";

/// The type of a telemetry column, as written in config and docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// UTF-8 text.
    String,
    /// 64-bit signed integer.
    Int64,
    /// 64-bit float.
    Float64,
    /// true / false.
    Boolean,
    /// Timestamp in microseconds, UTC.
    Timestamp,
}

impl ColumnType {
    /// Parses the config spelling (`string`, `int64`, `float64`, `boolean`, `timestamp`).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "string" => Self::String,
            "int64" => Self::Int64,
            "float64" => Self::Float64,
            "boolean" => Self::Boolean,
            "timestamp" => Self::Timestamp,
            _ => return None,
        })
    }

    /// The Arrow type used in batches.
    pub fn data_type(self) -> DataType {
        match self {
            Self::String => DataType::Utf8,
            Self::Int64 => DataType::Int64,
            Self::Float64 => DataType::Float64,
            Self::Boolean => DataType::Boolean,
            Self::Timestamp => timestamp_type(),
        }
    }

    /// Name used in docs and error messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Int64 => "int64",
            Self::Float64 => "float64",
            Self::Boolean => "boolean",
            Self::Timestamp => "timestamp",
        }
    }
}

/// `Timestamp(Microsecond, "UTC")`, the type of every `ts` column.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// One column of a telemetry table.
#[derive(Debug, Clone)]
pub struct Column {
    /// Column name as used in SQL.
    pub name: String,
    /// Column type.
    pub ty: ColumnType,
}

/// A telemetry table: name plus its columns (common columns first, then table columns, then
/// the engine-internal `__seq` and `__row`).
#[derive(Debug, Clone)]
pub struct TableDef {
    name: String,
    columns: Vec<Column>,
    schema: SchemaRef,
}

impl TableDef {
    /// Builds a table from its own columns; `ts`, `sensor_id`, `tenant`, `host` are prepended
    /// and `__seq`, `__row` appended.
    pub fn new(name: &str, own: &[(&str, ColumnType)]) -> Result<Self> {
        let bad = |reason: String| SchemaError::BadTableDefinition { table: name.to_string(), reason };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
            return Err(bad("table names use lowercase letters, digits and `_`".into()));
        }
        let mut columns = vec![
            Column { name: TS.into(), ty: ColumnType::Timestamp },
            Column { name: SENSOR_ID.into(), ty: ColumnType::String },
            Column { name: TENANT.into(), ty: ColumnType::String },
            Column { name: HOST.into(), ty: ColumnType::String },
        ];
        for (col, ty) in own {
            if col.starts_with(RESERVED_PREFIX) {
                return Err(bad(format!("column `{col}`: names starting with `__` are reserved")));
            }
            if columns.iter().any(|c| c.name == *col) {
                return Err(bad(format!("column `{col}` is declared twice (or is a common column)")));
            }
            columns.push(Column { name: (*col).into(), ty: *ty });
        }
        let mut fields: Vec<Field> =
            columns.iter().map(|c| Field::new(&c.name, c.ty.data_type(), c.name != TS)).collect();
        fields.push(Field::new(SEQ, DataType::UInt64, false));
        fields.push(Field::new(ROW, DataType::UInt32, false));
        Ok(Self { name: name.into(), columns, schema: Arc::new(Schema::new(fields)) })
    }

    /// Table name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Columns a sensor may send (everything but the internal ones).
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// Full Arrow schema of batches of this table, internal columns included.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }
}

/// The set of tables the engine accepts.
#[derive(Debug, Clone)]
pub struct Catalog {
    tables: BTreeMap<String, Arc<TableDef>>,
}

impl Catalog {
    /// The built-in tables only.
    pub fn builtin() -> Self {
        let mut tables = BTreeMap::new();
        for def in builtin_tables() {
            tables.insert(def.name().to_string(), Arc::new(def));
        }
        Self { tables }
    }

    /// Adds an operator-declared table; names may not shadow an existing table.
    pub fn add(&mut self, def: TableDef) -> Result<()> {
        if self.tables.contains_key(def.name()) {
            return Err(SchemaError::BadTableDefinition {
                table: def.name().into(),
                reason: "a table with this name already exists".into(),
            });
        }
        self.tables.insert(def.name().to_string(), Arc::new(def));
        Ok(())
    }

    /// Looks a table up by name.
    pub fn get(&self, name: &str) -> Result<&Arc<TableDef>> {
        self.tables.get(name).ok_or_else(|| SchemaError::UnknownTable {
            table: name.chars().take(64).collect(),
            known: self.names().join(", "),
        })
    }

    /// All table names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.tables.keys().map(String::as_str).collect()
    }

    /// All tables.
    pub fn tables(&self) -> impl Iterator<Item = &Arc<TableDef>> {
        self.tables.values()
    }
}

fn builtin_tables() -> Vec<TableDef> {
    use ColumnType::{Float64 as F, Int64 as I, String as S};
    let defs: [(&str, &[(&str, ColumnType)]); 5] = [
        (
            "process_events",
            &[
                ("event_type", S),
                ("pid", I),
                ("ppid", I),
                ("uid", I),
                ("user", S),
                ("exe", S),
                ("cmdline", S),
                ("cwd", S),
                ("parent_exe", S),
                ("parent_cmdline", S),
                ("sha256", S),
            ],
        ),
        (
            "network_events",
            &[
                ("pid", I),
                ("exe", S),
                ("user", S),
                ("direction", S),
                ("protocol", S),
                ("src_ip", S),
                ("src_port", I),
                ("dst_ip", S),
                ("dst_port", I),
                ("dst_host", S),
            ],
        ),
        (
            "file_events",
            &[("pid", I), ("exe", S), ("user", S), ("uid", I), ("action", S), ("path", S), ("mode", I), ("sha256", S)],
        ),
        ("auth_events", &[("user", S), ("src_ip", S), ("service", S), ("method", S), ("outcome", S)]),
        ("metrics", &[("name", S), ("value", F), ("labels", S)]),
    ];
    defs.iter().map(|(name, cols)| TableDef::new(name, cols).expect("built-in table definitions are valid")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_tables_have_common_and_internal_columns() {
        let cat = Catalog::builtin();
        assert_eq!(cat.names(), ["auth_events", "file_events", "metrics", "network_events", "process_events"]);
        let p = cat.get("process_events").unwrap();
        let names: Vec<_> = p.schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(&names[..4], ["ts", "sensor_id", "tenant", "host"]);
        assert_eq!(&names[names.len() - 2..], ["__seq", "__row"]);
        assert!(names.contains(&"parent_cmdline".to_string()));
    }

    #[test]
    fn unknown_table_error_lists_known_tables() {
        let err = Catalog::builtin().get("proc").unwrap_err().to_string();
        assert!(err.contains("unknown table `proc`"), "{err}");
        assert!(err.contains("process_events"), "{err}");
    }

    #[test]
    fn reserved_and_duplicate_columns_are_refused() {
        assert!(TableDef::new("t", &[("__x", ColumnType::String)]).is_err());
        assert!(TableDef::new("t", &[("host", ColumnType::String)]).is_err());
        assert!(TableDef::new("T-1", &[]).is_err());
    }
}
