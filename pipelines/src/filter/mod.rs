//! Shared rule filters: each distinct predicate once per batch, for every rule of a table.
//!
//! Detection rules are mostly WHERE clauses over a few string columns, and real packs share
//! their pieces: dozens of Sigma rules test `exe ILIKE '%/bash'` or `cmdline ILIKE '% -c %'`.
//! Running each rule's plan on each batch evaluates every piece once per rule, and builds each
//! `ILIKE` pattern's regex again on every batch. Instead, for each stateless rule the compiler
//! turns the WHERE clause into a boolean tree ([`RuleFilter`]) over **atoms**:
//!
//! * text atoms — a string column (or `lower(col)`, `upper(col)`) against a literal: `=`,
//!   `IN`, `LIKE`/`ILIKE` with `%` only at the ends, `starts_with`, `ends_with`, `contains`.
//!   All text atoms of one column are found in one Aho-Corasick pass over the column's text
//!   per batch (per folding);
//! * `regexp_like(col, 'literal')`, compiled once;
//! * `col IS NULL`;
//! * anything else boolean, planned by DataFusion and evaluated by it.
//!
//! Atoms equal between rules are evaluated once per batch; each rule's tree then combines
//! their results with SQL's three-valued logic (`AND`, `OR`, `NOT`, `IS TRUE`,
//! `COALESCE(x, false)` …). The rows where the tree is TRUE are exactly the rows where the
//! rule's predicate is TRUE: text atoms are decided as arrow decides them (ASCII rows by the
//! automaton, other rows by arrow's own regex or by `to_lowercase`), the rest by the same
//! code DataFusion runs. Each rule's plan then runs on those rows only — most batches, for
//! most rules, on none — and since a stateless rule (projection, filter, sort, limit over one
//! table) gives the same result rows on any subset holding every matching row, the alerts are
//! exactly those of running every rule on the whole batch. `tests/filter_equivalence.rs`
//! checks this on random rows.

mod scan;
mod translate;

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, BooleanArray, RecordBatch};
use arrow::buffer::{BooleanBuffer, Buffer};
use arrow::compute::{and_kleene, not, or_kleene};
use arrow::datatypes::{DataType, Schema};
use datafusion::physical_expr::PhysicalExpr;

use scan::{TextAtom, TextScan};
use translate::{Atom, Fold, Node};
pub use translate::{RuleFilter, rule_predicate, translate};

/// Which rows each rule must see for one batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Rows {
    /// Every row.
    All,
    /// Only these rows (ascending); empty: the rule cannot match this batch.
    Some(Vec<u32>),
}

/// The filters of one table's rules, with their atoms shared.
#[derive(Debug)]
pub struct SharedFilter {
    /// Name and type of each column of the batches the atoms were built for.
    fields: Vec<(String, DataType)>,
    /// Distinct atoms, by slot.
    atoms: Vec<Slot>,
    scans: Vec<TextScan>,
    /// Per rule index: its tree over slots (`None`: the rule sees every row).
    rules: Vec<Option<Node>>,
}

#[derive(Debug)]
enum Slot {
    /// Filled by a text scan.
    Text,
    Regex {
        column: String,
        regex: regex::Regex,
    },
    IsNull {
        column: String,
    },
    Generic(Arc<dyn PhysicalExpr>),
}

/// Why one batch could not be filtered (its rules then see every row).
struct Unfiltered;

impl SharedFilter {
    /// The shared filter of rules with these filters (by rule index) over batches of
    /// `schema`; `None` when no rule has one.
    pub fn new(schema: &Schema, filters: &[Option<&RuleFilter>]) -> Option<Self> {
        let mut slots: Vec<Slot> = Vec::new();
        let mut by_key: HashMap<String, usize> = HashMap::new();
        // Per (column, folded): the text atoms, by slot.
        let mut texts: HashMap<(String, bool), Vec<(usize, Atom)>> = HashMap::new();
        let mut rules = Vec::with_capacity(filters.len());
        for filter in filters {
            let Some(f) = filter else {
                rules.push(None);
                continue;
            };
            let mut map = Vec::with_capacity(f.atoms.len());
            for atom in &f.atoms {
                let key = atom.key();
                let slot = match by_key.get(&key) {
                    Some(s) => *s,
                    None => {
                        let slot = slots.len();
                        slots.push(match atom {
                            Atom::Text { column, fold, .. } => {
                                texts
                                    .entry((column.clone(), *fold != Fold::None))
                                    .or_default()
                                    .push((slot, atom.clone()));
                                Slot::Text
                            }
                            Atom::Regex { column, pattern } => {
                                Slot::Regex { column: column.clone(), regex: regex::Regex::new(pattern).ok()? }
                            }
                            Atom::IsNull { column } => Slot::IsNull { column: column.clone() },
                            Atom::Generic { expr, .. } => Slot::Generic(Arc::clone(expr)),
                        });
                        by_key.insert(key, slot);
                        slot
                    }
                };
                map.push(slot);
            }
            rules.push(Some(f.root.remap(&|i| map[i])));
        }
        if rules.iter().all(Option::is_none) {
            return None;
        }
        let mut scans = Vec::new();
        let mut groups: Vec<_> = texts.into_iter().collect();
        groups.sort_by(|a, b| a.0.cmp(&b.0));
        for ((column, folded), atoms) in groups {
            let atoms: Vec<TextAtom<'_>> = atoms
                .iter()
                .filter_map(|(slot, a)| match a {
                    Atom::Text { literal, kind, fold, .. } => {
                        Some(TextAtom { slot: *slot, literal, kind: *kind, fold: *fold })
                    }
                    _ => None,
                })
                .collect();
            scans.push(TextScan::new(&column, folded, &atoms)?);
        }
        let fields = schema.fields().iter().map(|f| (f.name().clone(), f.data_type().clone())).collect();
        Some(Self { fields, atoms: slots, scans, rules })
    }

    /// The rows each rule (by index) must see for `batch`: exactly the rows where its
    /// predicate is TRUE, or every row for rules without a filter.
    pub fn candidates(&self, batch: &RecordBatch) -> Vec<Rows> {
        match self.evaluate(batch) {
            Ok(rows) => rows,
            Err(Unfiltered) => self.rules.iter().map(|_| Rows::All).collect(),
        }
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<Vec<Rows>, Unfiltered> {
        let schema = batch.schema();
        let same = schema.fields().len() == self.fields.len()
            && schema.fields().iter().zip(&self.fields).all(|(f, (n, t))| f.name() == n && f.data_type() == t);
        if !same {
            return Err(Unfiltered);
        }
        let n = batch.num_rows();
        let mut values: Vec<Option<BooleanArray>> = (0..self.atoms.len()).map(|_| None).collect();
        let mut bits: Vec<Vec<u64>> = (0..self.atoms.len()).map(|_| Vec::new()).collect();
        for scan in &self.scans {
            let col = batch.column_by_name(&scan.column).ok_or(Unfiltered)?;
            for slot in &scan.slots {
                bits[*slot] = vec![0; n.div_ceil(64)];
            }
            if !scan.run(col.as_ref(), &mut bits) {
                return Err(Unfiltered);
            }
            // A text atom is NULL where its column is.
            for slot in &scan.slots {
                let buffer = BooleanBuffer::new(Buffer::from_vec(std::mem::take(&mut bits[*slot])), 0, n);
                values[*slot] = Some(BooleanArray::new(buffer, col.nulls().cloned()));
            }
        }
        let mut out = Vec::with_capacity(self.rules.len());
        for rule in &self.rules {
            let Some(root) = rule else {
                out.push(Rows::All);
                continue;
            };
            let rows = match self.node(root, batch, &mut values) {
                Ok(result) => {
                    let matched = is_true(&result);
                    Rows::Some(matched.values().set_indices().map(|i| i as u32).collect())
                }
                Err(Unfiltered) => Rows::All,
            };
            out.push(rows);
        }
        Ok(out)
    }

    fn atom(
        &self,
        slot: usize,
        batch: &RecordBatch,
        values: &mut [Option<BooleanArray>],
    ) -> Result<BooleanArray, Unfiltered> {
        if let Some(v) = &values[slot] {
            return Ok(v.clone());
        }
        let v = match &self.atoms[slot] {
            Slot::Text => return Err(Unfiltered),
            Slot::IsNull { column } => {
                let col = batch.column_by_name(column).ok_or(Unfiltered)?;
                arrow::compute::is_null(col.as_ref()).map_err(|_| Unfiltered)?
            }
            Slot::Regex { column, regex } => {
                let col = batch.column_by_name(column).ok_or(Unfiltered)?;
                regex_matches(col.as_ref(), regex).ok_or(Unfiltered)?
            }
            Slot::Generic(expr) => {
                let v = expr.evaluate(batch).and_then(|v| v.into_array(batch.num_rows())).map_err(|_| Unfiltered)?;
                v.as_any().downcast_ref::<BooleanArray>().ok_or(Unfiltered)?.clone()
            }
        };
        values[slot] = Some(v.clone());
        Ok(v)
    }

    fn node(
        &self,
        node: &Node,
        batch: &RecordBatch,
        values: &mut [Option<BooleanArray>],
    ) -> Result<BooleanArray, Unfiltered> {
        let n = batch.num_rows();
        let err = |_| Unfiltered;
        Ok(match node {
            Node::Atom(slot) => self.atom(*slot, batch, values)?,
            Node::Const(Some(b)) => {
                BooleanArray::new(if *b { BooleanBuffer::new_set(n) } else { BooleanBuffer::new_unset(n) }, None)
            }
            Node::Const(None) => BooleanArray::new_null(n),
            Node::And(parts) => {
                let mut acc = self.node(&parts[0], batch, values)?;
                for p in &parts[1..] {
                    // FALSE everywhere stays FALSE whatever follows: skip the rest.
                    if acc.null_count() == 0 && acc.true_count() == 0 {
                        break;
                    }
                    acc = and_kleene(&acc, &self.node(p, batch, values)?).map_err(err)?;
                }
                acc
            }
            Node::Or(parts) => {
                let mut acc = self.node(&parts[0], batch, values)?;
                for p in &parts[1..] {
                    if acc.null_count() == 0 && acc.true_count() == n {
                        break;
                    }
                    acc = or_kleene(&acc, &self.node(p, batch, values)?).map_err(err)?;
                }
                acc
            }
            Node::Not(inner) => not(&self.node(inner, batch, values)?).map_err(err)?,
            Node::IsTrue(inner) => is_true(&self.node(inner, batch, values)?),
            Node::IsFalse(inner) => is_true(&not(&self.node(inner, batch, values)?).map_err(err)?),
        })
    }
}

/// `regexp_like` as arrow computes it: NULL for NULL values.
fn regex_matches(col: &dyn Array, regex: &regex::Regex) -> Option<BooleanArray> {
    use arrow::array::AsArray;
    let test = |v: Option<&str>| v.map(|s| regex.is_match(s));
    Some(match col.data_type() {
        DataType::Utf8 => col.as_string::<i32>().iter().map(test).collect(),
        DataType::LargeUtf8 => col.as_string::<i64>().iter().map(test).collect(),
        DataType::Utf8View => col.as_string_view().iter().map(test).collect(),
        _ => return None,
    })
}

/// TRUE where `a` is TRUE, FALSE elsewhere (NULL included), without nulls.
fn is_true(a: &BooleanArray) -> BooleanArray {
    match a.nulls() {
        Some(nulls) => BooleanArray::new(a.values() & nulls.inner(), None),
        None => a.clone(),
    }
}
