//! Reference tables: loading their files into the compiler's registry, at start and on
//! reload (`vedette reference reload`, `POST /api/v1/reference/{name}/reload`, SIGHUP), and
//! replacing them through the API (`vedette reference upload`, `PUT /api/v1/reference/{name}`).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vedette_config::{Config, ReferenceTableConfig};
use vedette_pipelines::reference::{Format, RefTables, parse};
use vedette_schemas::tables::ColumnType;

use crate::error::{EngineError, Result};
use crate::ruleset::resolve;

/// A reference table as `GET /api/v1/reference` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct RefStatus {
    /// Table name.
    pub name: String,
    /// File it loads from.
    pub path: String,
    /// Rows loaded now.
    pub rows: usize,
    /// When the rows in use were loaded (RFC 3339).
    pub loaded_at: Option<String>,
    /// Why the last reload was refused (the previous rows stayed), if it was.
    pub last_error: Option<String>,
}

/// The registry declared by the config (every table empty until loaded).
pub fn registry(config: &Config) -> Arc<RefTables> {
    let defs: Vec<(String, Vec<(String, ColumnType)>)> = config
        .reference_tables
        .iter()
        .map(|r| {
            let cols = r
                .columns
                .iter()
                .map(|(n, t)| (n.clone(), ColumnType::parse(t).expect("column types are validated with the config")))
                .collect();
            (r.name.clone(), cols)
        })
        .collect();
    Arc::new(RefTables::new(&defs))
}

/// Reads and parses one table's file and swaps its rows in; returns the row count. On error
/// the rows in use are unchanged.
pub fn load(config: &Config, refs: &RefTables, def: &ReferenceTableConfig) -> Result<usize> {
    let batches = read(config, refs, def)?;
    refs.replace(&def.name, batches)?;
    Ok(refs.row_count(&def.name))
}

/// Reads and parses one table's file without putting its rows in use.
pub fn read(config: &Config, refs: &RefTables, def: &ReferenceTableConfig) -> Result<Vec<arrow::array::RecordBatch>> {
    let path = resolve(&config.data_dir, &def.path);
    let bytes = std::fs::read(&path).map_err(EngineError::io(format!(
        "reference table `{}`: reading {}",
        def.name,
        path.display()
    )))?;
    parse_for(refs, def, &bytes)
}

/// Replaces a table's contents with `bytes` (in the table's configured format): parsed and
/// checked first, then written over the table's file (temp file + rename, so a restart loads
/// the same rows), then swapped in. On error neither the file nor the rows in use change.
pub fn upload(config: &Config, refs: &RefTables, def: &ReferenceTableConfig, bytes: &[u8]) -> Result<usize> {
    let batches = parse_for(refs, def, bytes)?;
    let path = resolve(&config.data_dir, &def.path);
    let io = |what: &str| EngineError::io(format!("reference table `{}`: {what} {}", def.name, path.display()));
    let tmp = path.with_extension("upload.tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(io("creating a temporary file beside"))?;
        f.write_all(bytes).map_err(io("writing a temporary file beside"))?;
        f.sync_all().map_err(io("syncing a temporary file beside"))?;
    }
    std::fs::rename(&tmp, &path).map_err(io("replacing"))?;
    refs.replace(&def.name, batches)?;
    Ok(refs.row_count(&def.name))
}

fn parse_for(refs: &RefTables, def: &ReferenceTableConfig, bytes: &[u8]) -> Result<Vec<arrow::array::RecordBatch>> {
    let format = match def.effective_format() {
        Some("csv") => Format::Csv,
        _ => Format::Json,
    };
    Ok(parse(&def.name, refs.schema(&def.name)?, format, bytes, def.max_rows)?)
}

/// Status of every declared table, in config order.
pub fn initial_status(config: &Config, refs: &RefTables) -> Vec<RefStatus> {
    config
        .reference_tables
        .iter()
        .map(|r| RefStatus {
            name: r.name.clone(),
            path: resolve(&config.data_dir, &r.path).display().to_string(),
            rows: refs.row_count(&r.name),
            loaded_at: None,
            last_error: None,
        })
        .collect()
}
