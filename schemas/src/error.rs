//! The one error type of this crate.

/// Errors raised while decoding frames or payloads, or while defining tables.
///
/// Every variant is a *permanent* problem with the input: resending the same bytes gives the
/// same error, so the sender has to fix its encoder (or its data).
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The length prefix announces a frame larger than the negotiated maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes; split the batch into smaller frames")]
    FrameTooLarge {
        /// Announced length.
        len: u64,
        /// Configured maximum.
        max: u64,
    },
    /// The frame could not be parsed at all (bad length, unknown type, truncated header…).
    #[error("malformed frame: {reason}")]
    MalformedFrame {
        /// What was wrong.
        reason: String,
    },
    /// A control message body is not the JSON object its type requires.
    #[error("malformed {kind} message: {reason}")]
    MalformedControl {
        /// Message type name.
        kind: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// A data frame names a table the engine does not know.
    #[error("unknown table `{table}` (known: {known})")]
    UnknownTable {
        /// The table named by the frame.
        table: String,
        /// Comma-separated list of known tables.
        known: String,
    },
    /// An Arrow IPC payload has a column whose type cannot be converted to the table's type.
    #[error("table `{table}`: column `{column}` has type {found}, expected {expected}")]
    SchemaMismatch {
        /// Table name.
        table: String,
        /// Column name.
        column: String,
        /// Type found in the payload.
        found: String,
        /// Type the table declares.
        expected: String,
    },
    /// The payload holds more rows than one frame may carry.
    #[error("frame carries {rows} rows, more than the maximum of {max}; split it")]
    TooManyRows {
        /// Rows found.
        rows: usize,
        /// Configured maximum.
        max: usize,
    },
    /// The payload bytes are not a valid encoding (bad Arrow IPC stream, invalid UTF-8 …).
    #[error("bad {encoding} payload: {reason}")]
    BadPayload {
        /// `ndjson` or `arrow`.
        encoding: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// A table definition is invalid (duplicate or reserved column name, bad type…).
    #[error("table `{table}`: {reason}")]
    BadTableDefinition {
        /// Table name.
        table: String,
        /// What was wrong.
        reason: String,
    },
    /// Arrow failed while assembling a batch; this is a bug, please report it.
    #[error("internal Arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

/// Result alias for this crate.
pub type Result<T, E = SchemaError> = std::result::Result<T, E>;
