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
    #[error("rule `{rule}`: {message}{at}")]
    Plan {
        /// Rule id.
        rule: String,
        /// DataFusion's message, without the engine's internal columns (`__seq`, `__row`)
        /// among the fields it offers.
        message: String,
        /// ` (line L, column C)` when DataFusion knows where, else empty.
        at: String,
        /// DataFusion's error.
        #[source]
        source: datafusion::error::DataFusionError,
    },
    /// A rule's error, located in its pack's text (line and column in the pack file).
    #[error("pack `{pack}` line {line}, column {column}: {message}")]
    InPack {
        /// Pack name.
        pack: String,
        /// Rule id.
        rule: String,
        /// 1-based line in the pack text.
        line: u64,
        /// 1-based column in the pack text.
        column: u64,
        /// The rule's error, without positions counted inside its SQL.
        message: String,
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

/// Where a rule error points: in the rule's SQL text, or in the pack's YAML text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorIn {
    /// Line and column count from the first character of the rule's `sql`.
    Sql,
    /// Line and column count from the start of the pack file.
    Pack,
}

impl RuleError {
    /// The rule the error is about, if any.
    pub fn rule(&self) -> Option<&str> {
        match self {
            Self::InvalidRule { rule, .. }
            | Self::Sql { rule, .. }
            | Self::SourceTable { rule, .. }
            | Self::Plan { rule, .. }
            | Self::InPack { rule, .. }
            | Self::Eval { rule, .. } => Some(rule),
            _ => None,
        }
    }

    /// Where the error points (1-based line and column), when its message says: `(line L,
    /// column C)` (vedette's checks, DataFusion's planner), `Line: L, Column: C` (the SQL
    /// parser) in the SQL; `at line L column C` (the YAML parser) in the pack.
    pub fn position(&self) -> Option<(ErrorIn, u64, u64)> {
        if let Self::InPack { line, column, .. } = self {
            return Some((ErrorIn::Pack, *line, *column));
        }
        let text = self.to_string();
        let pairs: [(&str, &str, ErrorIn); 3] = [
            ("(line ", ", column ", ErrorIn::Sql),
            ("Line: ", ", Column: ", ErrorIn::Sql),
            ("at line ", " column ", ErrorIn::Pack),
        ];
        let found = pairs.iter().find_map(|(a, b, kind)| {
            let i = text.rfind(a)?;
            let rest = &text[i + a.len()..];
            let (line, rest) = split_number(rest)?;
            let (column, _) = split_number(rest.strip_prefix(b)?)?;
            Some((*kind, line, column))
        })?;
        let kind = if matches!(self, Self::PackSyntax { .. }) { ErrorIn::Pack } else { found.0 };
        (found.1 > 0).then_some((kind, found.1, found.2))
    }
}

fn split_number(s: &str) -> Option<(u64, &str)> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    Some((s[..end].parse().ok()?, &s[end..]))
}

/// Result alias for this crate.
pub type Result<T, E = RuleError> = std::result::Result<T, E>;

#[cfg(test)]
mod position_tests {
    use super::*;

    #[test]
    fn positions_are_read_from_every_parser_and_planner_message() {
        let sql = RuleError::Sql {
            rule: "r".into(),
            reason: "SQL error: ParserError(\"Expected: end of statement, found: AN at Line: 3, Column: 30\")".into(),
        };
        assert_eq!(sql.position(), Some((ErrorIn::Sql, 3, 30)));
        assert_eq!(sql.rule(), Some("r"));
        let checked =
            RuleError::Sql { rule: "r".into(), reason: "table `procs` does not exist (line 1, column 17)".into() };
        assert_eq!(checked.position(), Some((ErrorIn::Sql, 1, 17)));
        let yaml = RuleError::PackSyntax {
            pack: "p".into(),
            reason: "rules[0]: missing field `sql` at line 4 column 5".into(),
        };
        assert_eq!(yaml.position(), Some((ErrorIn::Pack, 4, 5)));
        assert_eq!(yaml.rule(), None);
        let none = RuleError::InvalidRule { rule: "r".into(), reason: "duplicate id".into() };
        assert_eq!(none.position(), None);
        let zero = RuleError::Sql { rule: "r".into(), reason: "x (line 0, column 0)".into() };
        assert_eq!(zero.position(), None, "0 means unknown");
    }
}

#[cfg(test)]
mod no_panic {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Packs now come from the API too (validate, dry run): any text parses or is refused
        /// with an error, and reading a position from any message never panics.
        #[test]
        fn any_pack_text_parses_or_is_refused_and_positions_never_panic(
            text in "(name: [a-z]{1,5}\nversion: [0-9]{1,3}\nrules:\n  - id: [a-z.]{1,5}\n    sql: .{0,40}\n)?.{0,200}",
            reason in ".{0,120}(\\(line [0-9]{0,25}, column [0-9]{0,25}\\)|Line: [0-9]{0,25}, Column: [0-9]{0,3}|at line [0-9]{0,3} column)?.{0,10}",
        ) {
            if let Err(e) = crate::rule::Pack::from_yaml("p", &text) {
                let _ = e.position();
            }
            for e in [
                RuleError::Sql { rule: "r".into(), reason: reason.clone() },
                RuleError::PackSyntax { pack: "p".into(), reason },
            ] {
                if let Some((_, line, _)) = e.position() {
                    prop_assert!(line > 0);
                }
            }
        }
    }
}
