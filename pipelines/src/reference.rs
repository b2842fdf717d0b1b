//! Reference tables: named sets of rows (IOC hash lists, allow-lists, asset inventories)
//! that rules join or use in `IN (SELECT …)`.
//!
//! Their rows live in a [`RefTables`] registry attached to the planning session; compiled
//! plans read the registry's current rows at each execution, so replacing a table's rows
//! (a reload) takes effect from the next batch on, without re-planning, and never re-evaluates
//! past batches.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use vedette_schemas::tables::ColumnType;

use crate::error::{Result, RuleError};

/// Injected-source key prefix of reference tables.
pub(crate) const KEY_PREFIX: &str = "ref:";

/// Current rows of every reference table, shared by the compiler and all rule sets.
#[derive(Debug, Default)]
pub struct RefTables {
    tables: RwLock<HashMap<String, Arc<Vec<RecordBatch>>>>,
    schemas: HashMap<String, SchemaRef>,
}

impl RefTables {
    /// Declares the tables (name, columns); they start empty.
    pub fn new(defs: &[(String, Vec<(String, ColumnType)>)]) -> Self {
        let schemas = defs.iter().map(|(name, cols)| (name.clone(), reference_schema(cols))).collect();
        Self { tables: RwLock::new(HashMap::new()), schemas }
    }

    /// Declared tables and their schemas.
    pub fn schemas(&self) -> &HashMap<String, SchemaRef> {
        &self.schemas
    }

    /// The schema of one table.
    pub fn schema(&self, name: &str) -> Result<&SchemaRef> {
        self.schemas.get(name).ok_or_else(|| RuleError::Reference {
            table: name.into(),
            reason: match self.names() {
                names if names.is_empty() => "no such reference table (none are declared)".into(),
                names => format!("no such reference table (declared: {})", names.join(", ")),
            },
        })
    }

    fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self.schemas.keys().cloned().collect();
        n.sort();
        n
    }

    /// Replaces a table's rows; the next execution of every plan sees them.
    pub fn replace(&self, name: &str, batches: Vec<RecordBatch>) -> Result<()> {
        let schema = self.schema(name)?;
        if let Some(b) = batches.iter().find(|b| b.schema().fields() != schema.fields()) {
            return Err(RuleError::Reference {
                table: name.into(),
                reason: format!("rows do not have the declared columns: {:?}", b.schema().fields()),
            });
        }
        self.tables.write().unwrap_or_else(std::sync::PoisonError::into_inner).insert(name.into(), Arc::new(batches));
        Ok(())
    }

    /// Current rows of a table.
    pub fn rows(&self, name: &str) -> Arc<Vec<RecordBatch>> {
        self.tables.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(name).cloned().unwrap_or_default()
    }

    /// Row count of a table.
    pub fn row_count(&self, name: &str) -> usize {
        self.rows(name).iter().map(RecordBatch::num_rows).sum()
    }
}

/// The Arrow schema of a reference table (every column nullable).
pub fn reference_schema(cols: &[(String, ColumnType)]) -> SchemaRef {
    Arc::new(Schema::new(cols.iter().map(|(n, t)| Field::new(n, t.data_type(), true)).collect::<Vec<_>>()))
}

/// File formats of reference tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated, first line is the header; columns are matched by name, extra columns
    /// are ignored.
    Csv,
    /// One JSON object per line, or one JSON array of objects; missing keys are NULL.
    Json,
}

/// Parses a reference table file's bytes into batches of `schema`. Errors name the table and
/// the line.
pub fn parse(
    table: &str,
    schema: &SchemaRef,
    format: Format,
    bytes: &[u8],
    max_rows: usize,
) -> Result<Vec<RecordBatch>> {
    let err = |reason: String| RuleError::Reference { table: table.into(), reason };
    let batches = match format {
        Format::Csv => parse_csv(schema, bytes).map_err(err)?,
        Format::Json => parse_json(schema, bytes).map_err(err)?,
    };
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if rows > max_rows {
        return Err(RuleError::Reference {
            table: table.into(),
            reason: format!("{rows} rows exceed max_rows = {max_rows}"),
        });
    }
    Ok(batches)
}

fn parse_csv(schema: &SchemaRef, bytes: &[u8]) -> std::result::Result<Vec<RecordBatch>, String> {
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(bytes);
    let header: Vec<String> =
        reader.headers().map_err(|e| format!("header line: {e}"))?.iter().map(|h| h.trim().to_string()).collect();
    for f in schema.fields() {
        if !header.iter().any(|h| h == f.name()) {
            return Err(format!("the header (line 1) has no column `{}` (found: {})", f.name(), header.join(", ")));
        }
    }
    // The CSV reader maps columns by position: read in the file's order, declared types for
    // declared columns and text for the rest, then keep the declared ones.
    let file_schema = Arc::new(Schema::new(
        header
            .iter()
            .map(|h| match schema.field_with_name(h) {
                Ok(f) => f.as_ref().clone(),
                Err(_) => Field::new(h, DataType::Utf8, true),
            })
            .collect::<Vec<_>>(),
    ));
    let projection: Vec<usize> =
        schema.fields().iter().map(|f| header.iter().position(|h| h == f.name()).unwrap_or_default()).collect();
    let reader = arrow_csv::ReaderBuilder::new(file_schema)
        .with_header(true)
        .with_batch_size(8192)
        .with_projection(projection)
        .build(std::io::Cursor::new(bytes))
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for b in reader {
        let b = b.map_err(|e| e.to_string())?;
        out.push(b.with_schema(Arc::clone(schema)).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

fn parse_json(schema: &SchemaRef, bytes: &[u8]) -> std::result::Result<Vec<RecordBatch>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    let mut rows: Vec<(usize, serde_json::Value)> = Vec::new();
    if text.trim_start().starts_with('[') {
        let values: Vec<serde_json::Value> = serde_json::from_str(text).map_err(|e| format!("{e}"))?;
        rows.extend(values.into_iter().enumerate().map(|(i, v)| (i + 1, v)));
    } else {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v = serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
            rows.push((i + 1, v));
        }
    }
    let decode = |rows: &[(usize, serde_json::Value)]| -> std::result::Result<Option<RecordBatch>, String> {
        let mut decoder =
            arrow::json::ReaderBuilder::new(Arc::clone(schema)).build_decoder().map_err(|e| e.to_string())?;
        for (line, v) in rows {
            if !v.is_object() {
                return Err(format!("line {line}: expected a JSON object"));
            }
            decoder.serialize(std::slice::from_ref(v)).map_err(|e| format!("line {line}: {e}"))?;
        }
        decoder.flush().map_err(|e| e.to_string())
    };
    let mut out = Vec::new();
    for chunk in rows.chunks(8192) {
        match decode(chunk) {
            Ok(b) => out.extend(b),
            // Conversion errors surface for the whole chunk: find the first bad line.
            Err(e) => {
                for row in chunk {
                    decode(std::slice::from_ref(row)).map_err(|e| format!("line {}: {e}", row.0))?;
                }
                return Err(e);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> SchemaRef {
        reference_schema(&[("sha256".into(), ColumnType::String), ("score".into(), ColumnType::Int64)])
    }

    #[test]
    fn csv_columns_by_name_and_errors_by_line() {
        let b = parse("ioc", &schema(), Format::Csv, b"family,score,sha256\nx,5,aa\ny,,bb\n", 10).unwrap();
        assert_eq!(b[0].num_rows(), 2);
        assert_eq!(b[0].schema(), schema());
        let err = parse("ioc", &schema(), Format::Csv, b"sha256\naa\n", 10).unwrap_err().to_string();
        assert!(err.contains("reference table `ioc`") && err.contains("no column `score`"), "{err}");
        let err = parse("ioc", &schema(), Format::Csv, b"sha256,score\naa,1\nbb,many\n", 10).unwrap_err().to_string();
        assert!(err.contains("many"), "{err}");
        let err = parse("ioc", &schema(), Format::Csv, b"sha256,score\na,1\nb,2\nc,3\n", 2).unwrap_err().to_string();
        assert!(err.contains("3 rows exceed max_rows = 2"), "{err}");
    }

    #[test]
    fn json_lines_or_array() {
        let lines = b"{\"sha256\":\"aa\",\"score\":1}\n\n{\"sha256\":\"bb\"}\n";
        assert_eq!(parse("ioc", &schema(), Format::Json, lines, 10).unwrap()[0].num_rows(), 2);
        let array = b"[{\"sha256\":\"aa\"},{\"sha256\":\"bb\",\"score\":2}]";
        assert_eq!(parse("ioc", &schema(), Format::Json, array, 10).unwrap()[0].num_rows(), 2);
        let err = parse("ioc", &schema(), Format::Json, b"{\"sha256\":\"aa\"}\n{oops\n", 10).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        let err = parse("ioc", &schema(), Format::Json, b"{\"score\":\"high\"}\n", 10).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }
}
