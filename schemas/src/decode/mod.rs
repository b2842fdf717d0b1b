//! Data frame payloads (NDJSON, Arrow IPC) → Arrow batches in the table's schema.
//!
//! Decoding stamps the identity taken from the certificate (`sensor_id`, `tenant`), fills a
//! missing `host`, and adds the internal `__seq`/`__row` columns. A bad row is reported and
//! skipped; its batch-mates still flow.

mod arrow_ipc;
mod ndjson;

use arrow::array::RecordBatch;

use crate::error::Result;
use crate::frame::{DataFrame, Encoding, RowError};
use crate::tables::TableDef;

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
        Encoding::Ndjson => ndjson::decode(table, frame.seq, frame.payload, id, max_rows),
        Encoding::Arrow => arrow_ipc::decode(table, frame.seq, frame.payload, id, max_rows),
    }
}

pub(crate) struct Rejections {
    count: u32,
    details: Vec<RowError>,
}

impl Rejections {
    pub(crate) fn new() -> Self {
        Self { count: 0, details: Vec::new() }
    }

    pub(crate) fn push(&mut self, row: usize, column: Option<&str>, reason: String) {
        self.count += 1;
        if self.details.len() < MAX_DETAILED_ROW_ERRORS {
            self.details.push(RowError { row: row as u32, column: column.map(str::to_string), reason });
        }
    }
}

/// Parses an RFC 3339 timestamp into µs since the epoch.
pub fn parse_rfc3339_micros(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp_micros())
}
