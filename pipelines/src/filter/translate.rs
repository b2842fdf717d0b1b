//! From a rule's WHERE clause to a boolean tree over atoms the shared filter evaluates.

use std::sync::Arc;

use arrow::datatypes::{DataType, Schema};
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{BinaryExpr, Expr, LogicalPlan, Operator};
use datafusion::physical_expr::PhysicalExpr;

/// How a text atom compares a row's value with its literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Equals,
    Prefix,
    Suffix,
    Contains,
}

/// What is done to the value (and the literal) before comparing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Fold {
    /// Byte for byte (`LIKE`, `=`, `IN`, `starts_with` …).
    None,
    /// `ILIKE`: Unicode case-insensitive, as arrow's `(?i)` regex (ASCII literal only).
    ILike,
    /// `lower(col)`: the value lowercased (literal has no ASCII uppercase, ASCII only).
    Lower,
    /// `upper(col)`: the value uppercased (literal has no ASCII lowercase, ASCII only).
    Upper,
}

/// One predicate on one row, evaluated once per batch for every rule that uses it.
#[derive(Debug, Clone)]
pub(crate) enum Atom {
    /// A string column compared with a literal.
    Text { column: String, literal: String, kind: Kind, fold: Fold },
    /// `regexp_like(col, 'pattern' [, 'flags'])`: `pattern` already carries the flags.
    Regex { column: String, pattern: String },
    /// `col IS NULL`.
    IsNull { column: String },
    /// Any other boolean expression, evaluated by DataFusion (`key`: its debug form).
    Generic { key: String, expr: Arc<dyn PhysicalExpr> },
}

impl Atom {
    /// Identity for sharing between rules: equal keys mean equal results on every row.
    pub(crate) fn key(&self) -> String {
        match self {
            Atom::Text { column, literal, kind, fold } => format!("text {column:?} {kind:?} {fold:?} {literal:?}"),
            Atom::Regex { column, pattern } => format!("regex {column:?} {pattern:?}"),
            Atom::IsNull { column } => format!("null {column:?}"),
            Atom::Generic { key, .. } => format!("expr {key}"),
        }
    }
}

/// SQL three-valued logic over atoms.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Atom(usize),
    Const(Option<bool>),
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
    /// TRUE stays TRUE; FALSE and NULL become FALSE.
    IsTrue(Box<Node>),
    /// FALSE becomes TRUE; TRUE and NULL become FALSE.
    IsFalse(Box<Node>),
}

impl Node {
    /// The same tree with every atom index mapped through `f`.
    pub(crate) fn remap(&self, f: &dyn Fn(usize) -> usize) -> Node {
        match self {
            Node::Atom(i) => Node::Atom(f(*i)),
            Node::Const(c) => Node::Const(*c),
            Node::And(v) => Node::And(v.iter().map(|n| n.remap(f)).collect()),
            Node::Or(v) => Node::Or(v.iter().map(|n| n.remap(f)).collect()),
            Node::Not(n) => Node::Not(Box::new(n.remap(f))),
            Node::IsTrue(n) => Node::IsTrue(Box::new(n.remap(f))),
            Node::IsFalse(n) => Node::IsFalse(Box::new(n.remap(f))),
        }
    }
}

/// A stateless rule's WHERE clause as a tree over atoms: the rows where it is TRUE are
/// exactly the rows where the SQL predicate is TRUE.
#[derive(Debug, Clone)]
pub struct RuleFilter {
    pub(crate) root: Node,
    pub(crate) atoms: Vec<Atom>,
}

/// The WHERE clause of a rule that only projects, sorts and limits the rows of one table
/// filtered once (no join, aggregate, window function or subquery), with columns unqualified.
/// Such a rule gives the same result rows on any subset of a batch holding every row where
/// this predicate is TRUE.
pub fn rule_predicate(plan: &LogicalPlan) -> Option<Expr> {
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
                // The filter must read the table's own columns: a projection below it could
                // give a computed value a column's name.
                let on_scan = match f.input.as_ref() {
                    LogicalPlan::TableScan(_) => true,
                    LogicalPlan::SubqueryAlias(a) => matches!(a.input.as_ref(), LogicalPlan::TableScan(_)),
                    _ => false,
                };
                if predicate.is_some() || !on_scan {
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
    let unqualified = predicate?
        .transform(|e| {
            Ok(match e {
                Expr::Column(c) if c.relation.is_some() => {
                    Transformed::yes(Expr::Column(datafusion::common::Column::new_unqualified(c.name)))
                }
                e => Transformed::no(e),
            })
        })
        .ok()?
        .data;
    Some(unqualified)
}

/// Builds the tree of `predicate` over the table `schema`; `physical` plans an expression
/// the filter does not evaluate itself. `None` when some part cannot be evaluated per row
/// ahead of the rule (a volatile function, a subquery …).
pub fn translate(
    predicate: &Expr,
    schema: &Schema,
    physical: &dyn Fn(&Expr) -> Option<Arc<dyn PhysicalExpr>>,
) -> Option<RuleFilter> {
    if predicate.is_volatile() {
        return None;
    }
    let mut t = Translator { schema, physical, atoms: Vec::new() };
    let root = t.node(predicate)?;
    Some(RuleFilter { root, atoms: t.atoms })
}

struct Translator<'a> {
    schema: &'a Schema,
    physical: &'a dyn Fn(&Expr) -> Option<Arc<dyn PhysicalExpr>>,
    atoms: Vec<Atom>,
}

impl Translator<'_> {
    fn atom(&mut self, atom: Atom) -> Node {
        self.atoms.push(atom);
        Node::Atom(self.atoms.len() - 1)
    }

    fn node(&mut self, e: &Expr) -> Option<Node> {
        if let Some(n) = self.native(e) {
            return Some(n);
        }
        // Anything else boolean: DataFusion evaluates it, once per batch for every rule.
        let expr = (self.physical)(e)?;
        if expr.data_type(self.schema).ok()? != DataType::Boolean {
            return None;
        }
        Some(self.atom(Atom::Generic { key: format!("{e:?}"), expr }))
    }

    /// The parts evaluated without DataFusion; `None` hands `e` to DataFusion.
    fn native(&mut self, e: &Expr) -> Option<Node> {
        match e {
            Expr::BinaryExpr(BinaryExpr { op: op @ (Operator::And | Operator::Or), .. }) => {
                let mut parts = Vec::new();
                flatten(e, *op, &mut parts);
                let nodes = parts.into_iter().map(|p| self.node(p)).collect::<Option<Vec<_>>>()?;
                Some(if *op == Operator::And { Node::And(nodes) } else { Node::Or(nodes) })
            }
            Expr::Not(inner) => Some(Node::Not(Box::new(self.node(inner)?))),
            Expr::IsTrue(inner) => Some(Node::IsTrue(Box::new(self.node(inner)?))),
            Expr::IsFalse(inner) => Some(Node::IsFalse(Box::new(self.node(inner)?))),
            Expr::IsNotTrue(inner) => Some(Node::Not(Box::new(Node::IsTrue(Box::new(self.node(inner)?))))),
            Expr::IsNotFalse(inner) => Some(Node::Not(Box::new(Node::IsFalse(Box::new(self.node(inner)?))))),
            Expr::Literal(ScalarValue::Boolean(b), _) => Some(Node::Const(*b)),
            Expr::IsNull(inner) | Expr::IsNotNull(inner) => {
                let Expr::Column(c) = inner.as_ref() else { return None };
                self.schema.field_with_name(&c.name).ok()?;
                let n = self.atom(Atom::IsNull { column: c.name.clone() });
                Some(if matches!(e, Expr::IsNull(_)) { n } else { Node::Not(Box::new(n)) })
            }
            // COALESCE(x, false) is x IS TRUE; COALESCE(x, true) is x IS NOT FALSE.
            Expr::ScalarFunction(f) if f.name() == "coalesce" && f.args.len() == 2 => {
                let Expr::Literal(ScalarValue::Boolean(Some(otherwise)), _) = &f.args[1] else { return None };
                let inner = self.node(&f.args[0])?;
                Some(if *otherwise {
                    Node::Not(Box::new(Node::IsFalse(Box::new(inner))))
                } else {
                    Node::IsTrue(Box::new(inner))
                })
            }
            Expr::Like(like) => {
                if like.escape_char.unwrap_or('\\') != '\\' {
                    return None;
                }
                let (column, fold) = self.text_column(&like.expr)?;
                let pattern = string_literal(&like.pattern)?;
                let n = match classify_like(pattern) {
                    Some((kind, literal)) => {
                        let fold = match (like.case_insensitive, fold) {
                            (false, f) => f,
                            (true, Fold::None) => Fold::ILike,
                            // ILIKE on lower(col): not worth a case of its own.
                            (true, _) => return None,
                        };
                        self.text(column, literal, kind, fold)?
                    }
                    // Other patterns: the regex arrow builds for them, compiled once.
                    None if fold == Fold::None => {
                        let pattern = like_regex(pattern, like.case_insensitive);
                        regex::Regex::new(&pattern).ok()?;
                        self.atom(Atom::Regex { column, pattern })
                    }
                    None => return None,
                };
                Some(if like.negated { Node::Not(Box::new(n)) } else { n })
            }
            Expr::BinaryExpr(BinaryExpr { left, op: op @ (Operator::Eq | Operator::NotEq), right }) => {
                let (col_side, lit_side) = if string_literal(right).is_some() { (left, right) } else { (right, left) };
                let (column, fold) = self.text_column(col_side)?;
                let literal = string_literal(lit_side)?.to_string();
                let n = self.text(column, literal, Kind::Equals, fold)?;
                Some(if *op == Operator::NotEq { Node::Not(Box::new(n)) } else { n })
            }
            Expr::InList(list) if !list.list.is_empty() => {
                let (column, fold) = self.text_column(&list.expr)?;
                let mut nodes = Vec::new();
                for item in &list.list {
                    let literal = string_literal(item)?.to_string();
                    nodes.push(self.text(column.clone(), literal, Kind::Equals, fold)?);
                }
                let n = Node::Or(nodes);
                Some(if list.negated { Node::Not(Box::new(n)) } else { n })
            }
            Expr::ScalarFunction(f) if matches!(f.name(), "starts_with" | "ends_with" | "contains") => {
                let [value, needle] = f.args.as_slice() else { return None };
                let (column, Fold::None) = self.text_column(value)? else { return None };
                let literal = string_literal(needle)?.to_string();
                let kind = match f.name() {
                    "starts_with" => Kind::Prefix,
                    "ends_with" => Kind::Suffix,
                    _ => Kind::Contains,
                };
                self.text(column, literal, kind, Fold::None)
            }
            Expr::ScalarFunction(f) if f.name() == "regexp_like" && (2..=3).contains(&f.args.len()) => {
                let (column, Fold::None) = self.text_column(&f.args[0])? else { return None };
                let pattern = string_literal(&f.args[1])?;
                let pattern = match f.args.get(2) {
                    None => pattern.to_string(),
                    Some(flags) => {
                        let flags = string_literal(flags)?;
                        // `g` is refused by DataFusion at run time: let it say so.
                        if flags.contains('g') {
                            return None;
                        }
                        format!("(?{flags}){pattern}")
                    }
                };
                regex::Regex::new(&pattern).ok()?;
                Some(self.atom(Atom::Regex { column, pattern }))
            }
            _ => None,
        }
    }

    /// A text atom, if the filter can evaluate it exactly.
    fn text(&mut self, column: String, literal: String, kind: Kind, fold: Fold) -> Option<Node> {
        let ok = match fold {
            Fold::None => true,
            Fold::ILike => literal.is_ascii(),
            // lower(x) holds no ASCII uppercase letter: such a literal never matches, leave
            // that (and non-ASCII literals) to DataFusion.
            Fold::Lower => literal.is_ascii() && !literal.bytes().any(|b| b.is_ascii_uppercase()),
            Fold::Upper => literal.is_ascii() && !literal.bytes().any(|b| b.is_ascii_lowercase()),
        };
        ok.then(|| self.atom(Atom::Text { column, literal, kind, fold }))
    }

    /// A string column, or `lower(column)` / `upper(column)`.
    fn text_column(&self, e: &Expr) -> Option<(String, Fold)> {
        let (c, fold) = match e {
            Expr::Column(c) => (c, Fold::None),
            Expr::ScalarFunction(f) if matches!(f.name(), "lower" | "upper") && f.args.len() == 1 => {
                let Expr::Column(c) = &f.args[0] else { return None };
                (c, if f.name() == "lower" { Fold::Lower } else { Fold::Upper })
            }
            _ => return None,
        };
        let field = self.schema.field_with_name(&c.name).ok()?;
        matches!(field.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
            .then(|| (c.name.clone(), fold))
    }
}

fn flatten<'a>(e: &'a Expr, op: Operator, out: &mut Vec<&'a Expr>) {
    match e {
        Expr::BinaryExpr(b) if b.op == op => {
            flatten(&b.left, op, out);
            flatten(&b.right, op, out);
        }
        e => out.push(e),
    }
}

fn string_literal(e: &Expr) -> Option<&str> {
    match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)),
            _,
        ) => Some(s),
        _ => None,
    }
}

/// A LIKE pattern that is one literal with `%` at neither, either or both ends, read as
/// arrow reads it (`\` escapes the next character; a trailing `\` is itself). `None` for
/// `_` and inner `%`.
pub(crate) fn classify_like(pattern: &str) -> Option<(Kind, String)> {
    let mut literal = String::new();
    let (mut lead, mut trail) = (false, false);
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '%' if literal.is_empty() && !trail => lead = true,
            '%' => trail = true,
            _ if trail => return None,
            '_' => return None,
            '\\' => literal.push(chars.next().unwrap_or('\\')),
            c => literal.push(c),
        }
    }
    let kind = match (lead, trail) {
        (true, _) if literal.is_empty() => Kind::Contains,
        (false, false) => Kind::Equals,
        (false, true) => Kind::Prefix,
        (true, false) => Kind::Suffix,
        (true, true) => Kind::Contains,
    };
    Some((kind, literal))
}

/// The regex arrow evaluates a LIKE (`case_insensitive`: ILIKE) pattern with, step by step
/// as arrow builds it: `%` is `.*`, `_` is `.`, `\` makes the next character literal (a
/// trailing `\` is itself), regex metacharacters are escaped, the pattern is anchored unless
/// it starts or ends with `%`, and `.` matches newlines.
pub(crate) fn like_regex(pattern: &str, case_insensitive: bool) -> String {
    let meta = |c: char| regex::escape(c.encode_utf8(&mut [0; 4])).len() > c.len_utf8();
    let mut out = String::with_capacity(pattern.len() * 2);
    let mut chars = pattern.chars().peekable();
    match chars.peek() {
        Some('%') => {
            chars.next();
        }
        _ => out.push('^'),
    }
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(next) => {
                    if meta(next) {
                        out.push('\\');
                    }
                    out.push(next);
                }
                None => out.push_str("\\\\"),
            },
            '%' => out.push_str(".*"),
            '_' => out.push('.'),
            c => {
                if meta(c) {
                    out.push('\\');
                }
                out.push(c);
            }
        }
    }
    if out.ends_with(".*") {
        out.truncate(out.len() - 2);
    } else {
        out.push('$');
    }
    format!("(?s{}){out}", if case_insensitive { "i" } else { "" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_are_read_as_arrow_reads_them() {
        let c = |p: &str| classify_like(p);
        assert_eq!(c("%/etc/shadow%"), Some((Kind::Contains, "/etc/shadow".into())));
        assert_eq!(c("%/bash"), Some((Kind::Suffix, "/bash".into())));
        assert_eq!(c("/tmp/%"), Some((Kind::Prefix, "/tmp/".into())));
        assert_eq!(c("sh"), Some((Kind::Equals, "sh".into())));
        assert_eq!(c("%%x%%"), Some((Kind::Contains, "x".into())));
        assert_eq!(c("100\\%%"), Some((Kind::Prefix, "100%".into())));
        assert_eq!(c("%C:\\\\Windows%"), Some((Kind::Contains, "C:\\Windows".into())));
        assert_eq!(c("a\\"), Some((Kind::Equals, "a\\".into())));
        assert_eq!(c("%\\_x"), Some((Kind::Suffix, "_x".into())));
        assert_eq!(c("%"), Some((Kind::Contains, String::new())));
        assert_eq!(c(""), Some((Kind::Equals, String::new())));
        assert_eq!(c("%a%b%"), None);
        assert_eq!(c("a_b"), None);
        assert_eq!(c("%a%b"), None);
    }

    #[test]
    fn other_like_patterns_become_arrows_regex() {
        assert_eq!(like_regex("%/etc/%.conf%", true), "(?si)/etc/.*\\.conf");
        assert_eq!(like_regex("a_b", false), "(?s)^a.b$");
        assert_eq!(like_regex("%a\\%b%", false), "(?s)a%b");
        assert_eq!(like_regex("a\\.x%y", false), "(?s)^a\\.x.*y$");
        assert_eq!(like_regex("x\\", false), "(?s)^x\\\\$");
        let re = regex::Regex::new(&like_regex("%/etc/%.CONF%", true)).unwrap();
        assert!(re.is_match("cat /ETC/app/x.conf.bak") && !re.is_match("cat /etc/app/xconf"));
    }
}
