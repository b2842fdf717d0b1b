//! Shared literal prefilter: one multi-literal scan per batch instead of one scan per rule.
//!
//! Most detection rules (and nearly all Sigma-style rules) can only match a row whose string
//! column contains some literal: `cmdline LIKE '%-enc %'` needs `-enc ` in `cmdline`,
//! `exe IN ('/bin/nc', '/usr/bin/ncat')` needs one of the two in `exe`. For each stateless rule
//! the compiler derives such a **necessary condition** from its WHERE clause — a set of
//! `(column, literal)` alternatives, at least one of which a matching row contains. Per batch,
//! one Aho-Corasick automaton per column finds every literal in every row in a single pass;
//! each rule then runs only on its candidate rows (or not at all when it has none).
//!
//! The condition is necessary, not sufficient: the rule's full SQL still decides. So the
//! alerts are exactly those of running every rule on the whole batch — the rows removed could
//! not have matched, and stateless rules (projection, filter, sort, limit) give the same
//! result rows in the same order on a subset holding every matching row.

use std::collections::HashMap;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::{BinaryExpr, Expr, LogicalPlan, Operator};

/// One literal a row must contain in one column.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Needle {
    /// Column name.
    pub column: String,
    /// The literal (lowercase when `case_insensitive`).
    pub literal: String,
    /// ASCII case-insensitive containment (`ILIKE`, `lower(col) LIKE`).
    pub case_insensitive: bool,
}

/// A rule's necessary condition: a matching row contains at least one of these.
pub type Need = Vec<Needle>;

/// Derives the necessary condition of a stateless rule's plan, if it has one: the plan must
/// only project, filter, sort and limit one table scan, and its filter must require literals.
pub fn rule_need(plan: &LogicalPlan, string_columns: &dyn Fn(&str) -> bool) -> Option<Need> {
    let mut simple = true;
    let mut predicate = None;
    let mut scans = 0;
    plan.apply_with_subqueries(|node| {
        match node {
            LogicalPlan::Projection(_)
            | LogicalPlan::Sort(_)
            | LogicalPlan::Limit(_)
            | LogicalPlan::SubqueryAlias(_) => {}
            LogicalPlan::Filter(f) => {
                if predicate.is_some() {
                    simple = false;
                }
                predicate = Some(f.predicate.clone());
            }
            LogicalPlan::TableScan(t) => {
                scans += 1;
                if !t.filters.is_empty() {
                    simple = false;
                }
            }
            _ => simple = false,
        }
        Ok(if simple { TreeNodeRecursion::Continue } else { TreeNodeRecursion::Stop })
    })
    .ok()?;
    if !simple || scans != 1 {
        return None;
    }
    need(&predicate?, string_columns)
}

fn need(e: &Expr, string_columns: &dyn Fn(&str) -> bool) -> Option<Need> {
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::And, right }) => {
            match (need(left, string_columns), need(right, string_columns)) {
                (Some(a), Some(b)) => Some(if selectivity(&a) >= selectivity(&b) { a } else { b }),
                (a, b) => a.or(b),
            }
        }
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Or, right }) => {
            let mut a = need(left, string_columns)?;
            a.extend(need(right, string_columns)?);
            Some(a)
        }
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Eq, right }) => {
            let (col, ci) = column_of(left).or_else(|| column_of(right))?;
            let lit = string_literal(right).or_else(|| string_literal(left))?;
            needle(col, &lit, ci, string_columns).map(|n| vec![n])
        }
        Expr::Like(like) if !like.negated => {
            let (col, lowered) = column_of(&like.expr)?;
            let pattern = string_literal(&like.pattern)?;
            let lit = longest_literal(&pattern, like.escape_char.unwrap_or('\\'))?;
            needle(col, &lit, like.case_insensitive || lowered, string_columns).map(|n| vec![n])
        }
        Expr::InList(list) if !list.negated => {
            let (col, ci) = column_of(&list.expr)?;
            list.list
                .iter()
                .map(|item| needle(col, &string_literal(item)?, ci, string_columns))
                .collect::<Option<Vec<_>>>()
        }
        // `COALESCE(x, false)` and `x IS TRUE` hold only where `x` holds (Sigma-style rules wrap
        // every selection so that a NULL field never matches).
        Expr::ScalarFunction(f)
            if f.name() == "coalesce"
                && f.args.len() == 2
                && matches!(f.args[1], Expr::Literal(ScalarValue::Boolean(Some(false)), _)) =>
        {
            need(&f.args[0], string_columns)
        }
        Expr::IsTrue(inner) => need(inner, string_columns),
        Expr::ScalarFunction(f) if matches!(f.name(), "starts_with" | "ends_with" | "strpos" | "contains") => {
            let (col, ci) = column_of(f.args.first()?)?;
            let lit = string_literal(f.args.get(1)?)?;
            needle(col, &lit, ci, string_columns).map(|n| vec![n])
        }
        _ => None,
    }
}

/// How much a condition narrows the rows: its shortest literal, fewer alternatives first.
fn selectivity(need: &Need) -> (usize, std::cmp::Reverse<usize>) {
    (need.iter().map(|n| n.literal.len()).min().unwrap_or(0), std::cmp::Reverse(need.len()))
}

/// A column (or `lower(column)`, `upper(column)`: matched case-insensitively).
fn column_of(e: &Expr) -> Option<(&str, bool)> {
    match e {
        Expr::Column(c) => Some((c.name.as_str(), false)),
        Expr::ScalarFunction(f) if matches!(f.name(), "lower" | "upper") && f.args.len() == 1 => {
            column_of(&f.args[0]).map(|(c, _)| (c, true))
        }
        _ => None,
    }
}

fn string_literal(e: &Expr) -> Option<String> {
    match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)),
            _,
        ) => Some(s.clone()),
        _ => None,
    }
}

fn needle(column: &str, literal: &str, ci: bool, string_columns: &dyn Fn(&str) -> bool) -> Option<Needle> {
    // Case-insensitive matching is ASCII-only in the automaton: other literals get no needle.
    if literal.is_empty() || !string_columns(column) || (ci && !literal.is_ascii()) {
        return None;
    }
    let literal = if ci { literal.to_ascii_lowercase() } else { literal.to_string() };
    Some(Needle { column: column.to_string(), literal, case_insensitive: ci })
}

/// The longest run of literal characters of a LIKE pattern: text between wildcards (`%`,
/// `_`). An escape character and the character it escapes also end a run, so the result is a
/// substring of every match whether or not the engine treats the escape as one.
pub fn longest_literal(pattern: &str, escape: char) -> Option<String> {
    let mut best = String::new();
    let mut cur = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        let boundary = if c == escape {
            chars.next();
            true
        } else {
            c == '%' || c == '_'
        };
        if boundary {
            if cur.len() > best.len() {
                best = std::mem::take(&mut cur);
            }
            cur.clear();
        } else {
            cur.push(c);
        }
    }
    if cur.len() > best.len() {
        best = cur;
    }
    (!best.is_empty()).then_some(best)
}

/// The automata of one table's rules.
#[derive(Debug)]
pub struct Prefilter {
    /// One automaton per (column, case-insensitive); pattern id → rule indexes needing it.
    scans: Vec<Scan>,
    /// Per rule index: whether it has a need (else it runs on every row).
    filtered: Vec<bool>,
}

#[derive(Debug)]
struct Scan {
    column: String,
    automaton: AhoCorasick,
    rules_of: Vec<Vec<u32>>,
    /// Case-insensitive scan: Unicode case folding can turn non-ASCII text into an ASCII
    /// literal (`K`, the Kelvin sign, lowercases to `k`), so non-ASCII rows go to every rule
    /// of the scan (`all_rules`) instead of through the ASCII-only automaton.
    case_insensitive: bool,
    all_rules: Vec<u32>,
}

/// Which rows each rule must see for one batch.
#[derive(Debug)]
pub enum Rows {
    /// Every row.
    All,
    /// Only these rows (ascending); empty: the rule cannot match this batch.
    Some(Vec<u32>),
}

impl Prefilter {
    /// Builds the automata for rules with the given needs (by rule index); `None` when no rule
    /// has one.
    pub fn new(needs: &[Option<Need>]) -> Option<Self> {
        // Per (column, case-insensitive): the literals, and per literal the rules needing it.
        type Literals = (Vec<String>, Vec<Vec<u32>>);
        let mut groups: HashMap<(String, bool), Literals> = HashMap::new();
        for (rule, need) in needs.iter().enumerate() {
            for n in need.iter().flatten() {
                let (lits, rules_of) = groups.entry((n.column.clone(), n.case_insensitive)).or_default();
                let id = match lits.iter().position(|l| l == &n.literal) {
                    Some(i) => i,
                    None => {
                        lits.push(n.literal.clone());
                        rules_of.push(Vec::new());
                        lits.len() - 1
                    }
                };
                if rules_of[id].last() != Some(&(rule as u32)) {
                    rules_of[id].push(rule as u32);
                }
            }
        }
        if groups.is_empty() {
            return None;
        }
        let mut scans = Vec::new();
        let mut keys: Vec<_> = groups.into_iter().collect();
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        for ((column, ci), (lits, rules_of)) in keys {
            let automaton = AhoCorasickBuilder::new()
                .ascii_case_insensitive(ci)
                .match_kind(MatchKind::Standard)
                .build(&lits)
                .ok()?;
            let mut all_rules: Vec<u32> = rules_of.iter().flatten().copied().collect();
            all_rules.sort_unstable();
            all_rules.dedup();
            scans.push(Scan { column, automaton, rules_of, case_insensitive: ci, all_rules });
        }
        Some(Self { scans, filtered: needs.iter().map(Option::is_some).collect() })
    }

    /// Candidate rows of every rule for `batch`, by rule index.
    pub fn candidates(&self, batch: &RecordBatch) -> Vec<Rows> {
        let mut out: Vec<Rows> =
            self.filtered.iter().map(|f| if *f { Rows::Some(Vec::new()) } else { Rows::All }).collect();
        for scan in &self.scans {
            let Some(col) = batch.column_by_name(&scan.column) else {
                // Cannot happen for a table's own batches; be safe: every rule sees every row.
                return self.filtered.iter().map(|_| Rows::All).collect();
            };
            let mut visit = |row: usize, text: &str| {
                let mut mark = |rule: u32| {
                    if let Rows::Some(rows) = &mut out[rule as usize]
                        && rows.last() != Some(&(row as u32))
                    {
                        rows.push(row as u32);
                    }
                };
                if scan.case_insensitive && !text.is_ascii() {
                    scan.all_rules.iter().for_each(|r| mark(*r));
                    return;
                }
                for m in scan.automaton.find_overlapping_iter(text) {
                    scan.rules_of[m.pattern().as_usize()].iter().for_each(|r| mark(*r));
                }
            };
            match col.data_type() {
                DataType::Utf8 => {
                    let a = col.as_string::<i32>();
                    for i in 0..a.len() {
                        if a.is_valid(i) {
                            visit(i, a.value(i));
                        }
                    }
                }
                DataType::Utf8View => {
                    let a = col.as_string_view();
                    for i in 0..a.len() {
                        if a.is_valid(i) {
                            visit(i, a.value(i));
                        }
                    }
                }
                _ => return self.filtered.iter().map(|_| Rows::All).collect(),
            }
        }
        // Rows found through several scans were appended out of order.
        for rows in &mut out {
            if let Rows::Some(r) = rows
                && !r.is_sorted()
            {
                r.sort_unstable();
                r.dedup();
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_literal_of_like_patterns() {
        assert_eq!(longest_literal("%/etc/shadow%", '\\').as_deref(), Some("/etc/shadow"));
        assert_eq!(longest_literal("%ab_cdef%", '\\').as_deref(), Some("cdef"));
        assert_eq!(longest_literal("100\\%%", '\\').as_deref(), Some("100"));
        assert_eq!(longest_literal("%C:\\Windows\\x%", '\\').as_deref(), Some("indows"));
        assert_eq!(longest_literal("%_%", '\\'), None);
    }

    #[test]
    fn coalesce_false_and_is_true_keep_the_condition_of_what_they_wrap() {
        use datafusion::functions::expr_fn::coalesce;
        use std::ops::Not;

        use datafusion::prelude::{col, lit};
        let strings = |_: &str| true;
        let shadow = col("cmdline").ilike(lit("%shadow%"));
        let wrapped = coalesce(vec![shadow.clone(), lit(false)]);
        let expect = Some(vec![Needle { column: "cmdline".into(), literal: "shadow".into(), case_insensitive: true }]);
        assert_eq!(need(&wrapped, &strings), expect);
        assert_eq!(need(&shadow.clone().is_true(), &strings), expect);
        // AND with a negated filter (no condition of its own): the selection's condition stands.
        let filter = coalesce(vec![col("user").eq(lit("root")), lit(false)]);
        assert_eq!(need(&wrapped.clone().and(filter.clone().not()), &strings), expect);
        // COALESCE(x, true) holds where x is NULL too: no condition.
        assert_eq!(need(&coalesce(vec![shadow, lit(true)]), &strings), None);
        assert_eq!(need(&filter.not(), &strings), None);
    }

    #[test]
    fn candidates_are_found_in_one_pass_per_column() {
        let n = |c: &str, l: &str, ci| Needle { column: c.into(), literal: l.into(), case_insensitive: ci };
        let needs = vec![
            Some(vec![n("cmdline", "shadow", false)]),
            None,
            Some(vec![n("cmdline", "-enc", true), n("exe", "/nc", false)]),
            Some(vec![n("exe", "/nope", false)]),
        ];
        let p = Prefilter::new(&needs).unwrap();
        let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("cmdline", DataType::Utf8, true),
            arrow::datatypes::Field::new("exe", DataType::Utf8, true),
        ]));
        let cmd = arrow::array::StringArray::from(vec![Some("cat /etc/shadow"), Some("ps -ENC x"), None, Some("x")]);
        let exe = arrow::array::StringArray::from(vec![Some("/bin/cat"), Some("/bin/ps"), Some("/bin/nc"), None]);
        let batch = RecordBatch::try_new(schema, vec![std::sync::Arc::new(cmd), std::sync::Arc::new(exe)]).unwrap();
        let c = p.candidates(&batch);
        let rows = |r: &Rows| match r {
            Rows::All => None,
            Rows::Some(v) => Some(v.clone()),
        };
        assert_eq!(rows(&c[0]), Some(vec![0]));
        assert_eq!(rows(&c[1]), None);
        assert_eq!(rows(&c[2]), Some(vec![1, 2]));
        assert_eq!(rows(&c[3]), Some(vec![]));
    }
}
