//! The one error type of this crate.

/// Errors from loading, compiling or evaluating rules.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// The pack file could not be parsed; fix the YAML at the given location.
    #[error("pack `{pack}`: {reason}")]
    PackSyntax {
        /// Pack file name or pack name.
        pack: String,
        /// Parser message (with line and column).
        reason: String,
    },
    /// A rule field is invalid (empty id, duplicate id …).
    #[error("rule `{rule}`: {reason}")]
    InvalidRule {
        /// Rule id.
        rule: String,
        /// What is wrong.
        reason: String,
    },
    /// A reference table could not be loaded; fix the file (the message names the line) or
    /// the table's declaration.
    #[error("reference table `{table}`: {reason}")]
    Reference {
        /// Table name.
        table: String,
        /// What is wrong.
        reason: String,
    },
    /// A pack's signature is missing, malformed, by an untrusted key, or does not match.
    #[error("pack `{pack}`: {reason}")]
    Signature {
        /// Pack name or file.
        pack: String,
        /// What is wrong.
        reason: String,
    },
    /// The SQL does not parse, or is not a single SELECT.
    #[error("rule `{rule}`: {reason}")]
    Sql {
        /// Rule id.
        rule: String,
        /// Parser message or what is not allowed.
        reason: String,
    },
    /// The rule reads no telemetry table, or more than one.
    #[error("rule `{rule}`: {reason} (telemetry tables: {known})")]
    SourceTable {
        /// Rule id.
        rule: String,
        /// What is wrong.
        reason: String,
        /// Known telemetry tables.
        known: String,
    },
    /// DataFusion refused the rule while planning (unknown column, type error …).
    #[error("rule `{rule}`: {source}{at}")]
    Plan {
        /// Rule id.
        rule: String,
        /// ` (line L, column C)` when DataFusion knows where, else empty.
        at: String,
        /// DataFusion's error.
        #[source]
        source: datafusion::error::DataFusionError,
    },
    /// Evaluating a compiled rule on a batch failed; the batch should be retried or reported.
    #[error("rule `{rule}`: evaluation failed: {source}")]
    Eval {
        /// Rule id.
        rule: String,
        /// DataFusion's error.
        #[source]
        source: datafusion::error::DataFusionError,
    },
}

/// Result alias for this crate.
pub type Result<T, E = RuleError> = std::result::Result<T, E>;
