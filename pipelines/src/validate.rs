//! Rule SQL validation by allow-list over the whole sqlparser AST.
//!
//! A rule is exactly one `SELECT` query. Every relation must be a known table (or a CTE of the
//! query), every function must be on the allow-list, and table functions (`read_csv(…)`,
//! `generate_series(…)`) are refused. The walk covers subqueries, CTEs, CASE, IN lists and
//! function arguments, because the visitor descends into every expression.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArguments, ObjectName, Query, SetExpr, Spanned, Statement, TableFactor, Visit, Visitor,
};
use datafusion::sql::sqlparser::tokenizer::Span;

use crate::error::{Result, RuleError};

/// Functions a rule may call (lowercase). Non-deterministic functions (`now`, `random`,
/// `uuid`) are left out on purpose: continuous and batch evaluation must agree.
pub const ALLOWED_FUNCTIONS: &[&str] = &[
    // strings
    "ascii",
    "bit_length",
    "btrim",
    "char_length",
    "character_length",
    "chr",
    "concat",
    "concat_ws",
    "contains",
    "ends_with",
    "find_in_set",
    "initcap",
    "instr",
    "left",
    "length",
    "levenshtein",
    "lower",
    "lpad",
    "ltrim",
    "octet_length",
    "overlay",
    "position",
    "repeat",
    "replace",
    "reverse",
    "right",
    "rpad",
    "rtrim",
    "split_part",
    "starts_with",
    "strpos",
    "substr",
    "substring",
    "substr_index",
    "to_hex",
    "translate",
    "trim",
    "upper",
    // regular expressions
    "regexp_like",
    "regexp_match",
    "regexp_replace",
    "regexp_count",
    "regexp_instr",
    // math
    "abs",
    "ceil",
    "floor",
    "round",
    "trunc",
    "power",
    "pow",
    "sqrt",
    "cbrt",
    "ln",
    "log",
    "log2",
    "log10",
    "exp",
    "signum",
    "greatest",
    "least",
    // date and time (event time only; no wall clock)
    "date_trunc",
    "date_part",
    "date_bin",
    "to_timestamp",
    "to_timestamp_seconds",
    "to_timestamp_millis",
    "to_timestamp_micros",
    "to_unixtime",
    "from_unixtime",
    "to_char",
    "to_date",
    // conditionals and types
    "coalesce",
    "nullif",
    "nvl",
    "nvl2",
    "arrow_cast",
    "arrow_typeof",
    // hashing and encoding
    "md5",
    "sha224",
    "sha256",
    "sha384",
    "sha512",
    "digest",
    "encode",
    "decode",
    // arrays
    "array_has",
    "array_has_any",
    "array_has_all",
    "make_array",
    "cardinality",
    "string_to_array",
    // aggregates
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "mean",
    "approx_distinct",
    "array_agg",
    "first_value",
    "last_value",
    "bool_and",
    "bool_or",
    "median",
    "stddev",
    "var",
    // event-time windows
    "tumble",
    "hop",
    "session",
];

/// Where in the SQL text a problem is.
fn at(span: Span) -> String {
    if span.start.line == 0 {
        String::new()
    } else {
        format!(" (line {}, column {})", span.start.line, span.start.column)
    }
}

fn last_ident(name: &ObjectName) -> String {
    name.0.last().and_then(|p| p.as_ident()).map(|i| i.value.to_lowercase()).unwrap_or_else(|| name.to_string())
}

struct AllowList<'a> {
    rule: &'a str,
    known_tables: &'a dyn Fn(&str) -> bool,
    ctes: BTreeSet<String>,
}

impl AllowList<'_> {
    fn refuse(&self, reason: String) -> ControlFlow<RuleError> {
        ControlFlow::Break(RuleError::Sql { rule: self.rule.into(), reason })
    }
}

impl Visitor for AllowList<'_> {
    type Break = RuleError;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<RuleError> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                self.ctes.insert(cte.alias.name.value.to_lowercase());
            }
        }
        if let SetExpr::Select(select) = query.body.as_ref()
            && let Some(into) = &select.into
        {
            return self.refuse(format!(
                "`SELECT … INTO {}` is not allowed in rules{}",
                into.name,
                at(into.name.span())
            ));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<RuleError> {
        match factor {
            TableFactor::Table { name, args: Some(_), .. } => {
                self.refuse(format!("table function `{}` is not allowed in rules{}", last_ident(name), at(name.span())))
            }
            TableFactor::Table { name, .. } => {
                let table = last_ident(name);
                if name.0.len() > 1 {
                    return self.refuse(format!("qualified table name `{name}` is not allowed{}", at(name.span())));
                }
                if !(self.known_tables)(&table) && !self.ctes.contains(&table) {
                    return self.refuse(format!("table `{table}` does not exist{}", at(name.span())));
                }
                ControlFlow::Continue(())
            }
            TableFactor::Derived { .. } | TableFactor::NestedJoin { .. } | TableFactor::UNNEST { .. } => {
                ControlFlow::Continue(())
            }
            other => self.refuse(format!("`{other}` is not allowed in FROM{}", at(other.span()))),
        }
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<RuleError> {
        if let Expr::Function(f) = expr {
            let name = last_ident(&f.name);
            // `user` without parentheses parses as the SQL keyword function but resolves to
            // the `user` column.
            if matches!(f.args, FunctionArguments::None) && name == "user" {
                return ControlFlow::Continue(());
            }
            if f.name.0.len() > 1 || !ALLOWED_FUNCTIONS.contains(&name.as_str()) {
                return self.refuse(format!("function `{}` is not allowed in rules{}", f.name, at(f.name.span())));
            }
        }
        ControlFlow::Continue(())
    }
}

/// The parser's own words (`Expected: …, found: AN at Line: 3, Column: 30`), without the
/// debug formatting DataFusion wraps them in (`SQL error: ParserError("…")`).
fn parser_message(e: datafusion::error::DataFusionError) -> String {
    use datafusion::sql::sqlparser::parser::ParserError;
    // The parser's error arrives wrapped (with a diagnostic): look at the innermost one.
    match e.find_root() {
        datafusion::error::DataFusionError::SQL(p, _) => match p.as_ref() {
            ParserError::ParserError(m) | ParserError::TokenizerError(m) => m.clone(),
            ParserError::RecursionLimitExceeded => "the query is nested too deeply".into(),
        },
        _ => e.to_string(),
    }
}

/// Parses `sql` and checks it against the allow-list; returns the single statement.
pub fn validate_sql(rule: &str, sql: &str, known_tables: &dyn Fn(&str) -> bool) -> Result<DfStatement> {
    let err = |reason: String| RuleError::Sql { rule: rule.into(), reason };
    let mut statements = DFParser::parse_sql(sql).map_err(|e| err(parser_message(e)))?;
    if statements.len() != 1 {
        return Err(err(format!("expected exactly one SQL statement, found {}", statements.len())));
    }
    let statement = statements.pop_front().expect("length checked");
    let DfStatement::Statement(inner) = &statement else {
        return Err(err(format!("only a SELECT query is allowed, found `{}`", first_words(&statement.to_string()))));
    };
    let Statement::Query(_) = inner.as_ref() else {
        return Err(err(format!(
            "only a SELECT query is allowed, found `{}`{}",
            first_words(&inner.to_string()),
            at(inner.span())
        )));
    };
    let mut v = AllowList { rule, known_tables, ctes: BTreeSet::new() };
    if let ControlFlow::Break(e) = inner.visit(&mut v) {
        return Err(e);
    }
    Ok(statement)
}

fn first_words(s: &str) -> String {
    s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(sql: &str) -> std::result::Result<(), String> {
        let known = |t: &str| ["process_events", "ioc_hashes"].contains(&t);
        validate_sql("r", sql, &known).map(|_| ()).map_err(|e| e.to_string())
    }

    #[test]
    fn syntax_errors_are_the_parsers_words_with_their_position() {
        let e = check("SELECT exe\nFROM process_events\nWHERE cmdline LIKE '%x%' AN pid > 1").unwrap_err();
        assert_eq!(e, "rule `r`: Expected: end of statement, found: AN at Line: 3, Column: 26");
        let e = check("SELECT 'open FROM process_events").unwrap_err();
        assert!(!e.contains("Error(") && e.contains("Line: 1"), "{e}");
    }

    #[test]
    fn ordinary_rules_pass() {
        check("SELECT exe FROM process_events WHERE lower(exe) LIKE '%nc' AND pid IN (1, 2)").unwrap();
        check("WITH x AS (SELECT * FROM process_events) SELECT exe FROM x").unwrap();
        check("SELECT exe FROM process_events WHERE sha256 IN (SELECT sha256 FROM ioc_hashes)").unwrap();
        check("SELECT CASE WHEN regexp_like(cmdline, 'a') THEN 1 ELSE 0 END FROM process_events").unwrap();
        check("SELECT user, host FROM process_events WHERE user = 'root'").unwrap();
    }

    #[test]
    fn everything_else_is_refused_with_a_position() {
        let cases = [
            ("DROP TABLE process_events", "only a SELECT query is allowed, found `DROP TABLE process_events`"),
            ("INSERT INTO process_events VALUES (1)", "only a SELECT query is allowed"),
            ("COPY process_events TO '/tmp/x'", "only a SELECT query is allowed"),
            ("CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'", "only a SELECT query is allowed"),
            ("SELECT 1; SELECT 2", "exactly one SQL statement, found 2"),
            (
                "SELECT * FROM read_csv('/etc/passwd')",
                "table function `read_csv` is not allowed in rules (line 1, column 15)",
            ),
            ("SELECT exe FROM procs", "table `procs` does not exist (line 1, column 17)"),
            (
                "SELECT exe FROM process_events\nWHERE pid IN (SELECT pid FROM secrets)",
                "table `secrets` does not exist (line 2, column 31)",
            ),
            ("SELECT now() FROM process_events", "function `now` is not allowed in rules (line 1, column 8)"),
            ("SELECT CASE WHEN random() > 0.5 THEN 1 END FROM process_events", "function `random`"),
            ("SELECT exe FROM process_events WHERE exe IN (lower(version()))", "function `version`"),
            ("SELECT * INTO copy FROM process_events", "SELECT … INTO copy"),
            ("SELECT * FROM other.process_events", "qualified table name"),
            ("SELECT current_timestamp FROM process_events", "function `current_timestamp`"),
        ];
        for (sql, needle) in cases {
            let err = check(sql).expect_err(sql);
            assert!(err.contains(needle), "{sql}: {err}");
            assert!(err.starts_with("rule `r`: "), "{err}");
        }
    }
}
