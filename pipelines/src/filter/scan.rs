//! One pass per string column finds every text atom of every rule.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;

use super::translate::{Fold, Kind};

/// The text atoms of one column with one kind of folding (byte for byte, or case-folded):
/// an Aho-Corasick automaton over their literals reports every occurrence in a row, and the
/// occurrence's position tells which kinds (equals, prefix, suffix, contains) it satisfies.
#[derive(Debug)]
pub(crate) struct TextScan {
    pub(crate) column: String,
    /// The atom slots this scan decides.
    pub(crate) slots: Vec<usize>,
    automaton: Option<AhoCorasick>,
    /// Per automaton pattern: the atom slots it decides and how.
    targets: Vec<Vec<(usize, Kind)>>,
    /// Atoms with an empty literal (decided by the value's length alone).
    empties: Vec<(usize, Kind)>,
    /// Case-folded scans: the exact check of every atom for a row that is not ASCII (Unicode
    /// case folding can map non-ASCII text onto an ASCII literal: the Kelvin sign `K` is `k`).
    exact: Vec<(usize, Exact)>,
    folded: bool,
}

/// How a case-folded atom is decided on a non-ASCII value, exactly as DataFusion decides it.
#[derive(Debug)]
enum Exact {
    /// `ILIKE`: arrow's own translation of the pattern to a case-insensitive regex.
    Regex(regex::Regex),
    /// `lower(col)` then a byte comparison.
    Lower(String, Kind),
    /// `upper(col)` then a byte comparison.
    Upper(String, Kind),
}

/// One text atom handed to [`TextScan::new`].
pub(crate) struct TextAtom<'a> {
    pub(crate) slot: usize,
    pub(crate) literal: &'a str,
    pub(crate) kind: Kind,
    pub(crate) fold: Fold,
}

impl TextScan {
    /// The scan of `atoms` (all of one column, all folded or none); `None` if an automaton
    /// or regex cannot be built (the rules using them then see every row).
    pub(crate) fn new(column: &str, folded: bool, atoms: &[TextAtom<'_>]) -> Option<Self> {
        let mut literals: Vec<String> = Vec::new();
        let mut targets: Vec<Vec<(usize, Kind)>> = Vec::new();
        let mut empties = Vec::new();
        let mut exact = Vec::new();
        for a in atoms {
            if folded {
                let check = match a.fold {
                    Fold::ILike => Exact::Regex(ilike_regex(a.literal, a.kind)?),
                    Fold::Lower => Exact::Lower(a.literal.to_string(), a.kind),
                    Fold::Upper => Exact::Upper(a.literal.to_string(), a.kind),
                    Fold::None => return None,
                };
                exact.push((a.slot, check));
            }
            if a.literal.is_empty() {
                empties.push((a.slot, a.kind));
                continue;
            }
            let literal = if folded { a.literal.to_ascii_lowercase() } else { a.literal.to_string() };
            let id = match literals.iter().position(|l| *l == literal) {
                Some(i) => i,
                None => {
                    literals.push(literal);
                    targets.push(Vec::new());
                    literals.len() - 1
                }
            };
            targets[id].push((a.slot, a.kind));
        }
        // A DFA is fastest; a very large literal set (an IOC list in an IN) can exceed its size
        // limit, and then the builder's own choice (an NFA) still beats evaluating per rule.
        let build = |kind| {
            AhoCorasickBuilder::new()
                .kind(kind)
                .ascii_case_insensitive(folded)
                .match_kind(MatchKind::Standard)
                .build(&literals)
        };
        let automaton = match literals.is_empty() {
            true => None,
            false => Some(build(Some(aho_corasick::AhoCorasickKind::DFA)).or_else(|_| build(None)).ok()?),
        };
        Some(Self {
            column: column.to_string(),
            slots: atoms.iter().map(|a| a.slot).collect(),
            automaton,
            targets,
            empties,
            exact,
            folded,
        })
    }

    /// Sets, for every non-null row of `col`, the bit of each atom that holds (`bits[slot]`,
    /// one word per 64 rows). `false` if the column is not a string column.
    pub(crate) fn run(&self, col: &dyn Array, bits: &mut [Vec<u64>]) -> bool {
        match col.data_type() {
            DataType::Utf8 => {
                let a = col.as_string::<i32>();
                let offsets: Vec<usize> = a.value_offsets().iter().map(|o| *o as usize).collect();
                self.run_contiguous(a.value_data(), &offsets, a.nulls(), bits);
            }
            DataType::LargeUtf8 => {
                let a = col.as_string::<i64>();
                let offsets: Vec<usize> = a.value_offsets().iter().map(|o| *o as usize).collect();
                self.run_contiguous(a.value_data(), &offsets, a.nulls(), bits);
            }
            DataType::Utf8View => {
                let a = col.as_string_view();
                for row in 0..a.len() {
                    if a.is_valid(row) {
                        self.run_row(row, a.value(row), bits);
                    }
                }
            }
            _ => return false,
        }
        true
    }

    /// One row on its own (string views have no contiguous text).
    fn run_row(&self, row: usize, text: &str, bits: &mut [Vec<u64>]) {
        self.empties(row, text.len(), bits);
        if self.folded && !text.is_ascii() {
            self.exact(row, text, bits);
            return;
        }
        let Some(automaton) = &self.automaton else { return };
        for m in automaton.find_overlapping_iter(text) {
            self.hit(m.pattern().as_usize(), row, m.start(), m.end(), text.len(), bits);
        }
    }

    /// Every row of an offset-based string array in one pass over its text: the automaton
    /// runs over the whole buffer (no per-row start-up), and each match is given to the row
    /// holding it (matches across two rows are dropped).
    fn run_contiguous(
        &self,
        data: &[u8],
        offsets: &[usize],
        nulls: Option<&arrow::buffer::NullBuffer>,
        bits: &mut [Vec<u64>],
    ) {
        let rows = offsets.len().saturating_sub(1);
        let valid = |row: usize| nulls.is_none_or(|n| n.is_valid(row));
        let (first, last) = (offsets[0], offsets[rows]);
        let text = &data[first..last];
        if !self.empties.is_empty() {
            for row in (0..rows).filter(|r| valid(*r)) {
                self.empties(row, offsets[row + 1] - offsets[row], bits);
            }
        }
        // Case-folded scans decide non-ASCII rows exactly, and ignore the automaton there.
        let mut skip: Option<Vec<bool>> = None;
        if self.folded && !text.is_ascii() {
            let mut flags = vec![false; rows];
            for row in (0..rows).filter(|r| valid(*r)) {
                let value = &data[offsets[row]..offsets[row + 1]];
                if !value.is_ascii() {
                    flags[row] = true;
                    // Offsets of a valid UTF-8 array delimit valid UTF-8.
                    if let Ok(value) = std::str::from_utf8(value) {
                        self.exact(row, value, bits);
                    }
                }
            }
            skip = Some(flags);
        }
        let Some(automaton) = &self.automaton else { return };
        // Matches come in order of their end: the row holding a match's last byte only moves
        // forward.
        let mut row = 0;
        for m in automaton.find_overlapping_iter(text) {
            let (start, end) = (first + m.start(), first + m.end());
            while row < rows && offsets[row + 1] < end {
                row += 1;
            }
            if row >= rows || start < offsets[row] || !valid(row) || skip.as_ref().is_some_and(|s| s[row]) {
                continue;
            }
            let (row_start, len) = (offsets[row], offsets[row + 1] - offsets[row]);
            self.hit(m.pattern().as_usize(), row, start - row_start, end - row_start, len, bits);
        }
    }

    fn empties(&self, row: usize, len: usize, bits: &mut [Vec<u64>]) {
        for (slot, kind) in &self.empties {
            if *kind != Kind::Equals || len == 0 {
                set(bits, *slot, row);
            }
        }
    }

    /// A match of `pattern` at `start..end` of a row of `len` bytes.
    fn hit(&self, pattern: usize, row: usize, start: usize, end: usize, len: usize, bits: &mut [Vec<u64>]) {
        for (slot, kind) in &self.targets[pattern] {
            let holds = match kind {
                Kind::Contains => true,
                Kind::Prefix => start == 0,
                Kind::Suffix => end == len,
                Kind::Equals => start == 0 && end == len,
            };
            if holds {
                set(bits, *slot, row);
            }
        }
    }

    /// Every atom of a case-folded scan on a non-ASCII value, as DataFusion decides it.
    fn exact(&self, row: usize, text: &str, bits: &mut [Vec<u64>]) {
        let (mut lower, mut upper) = (None, None);
        for (slot, check) in &self.exact {
            let hit = match check {
                Exact::Regex(re) => re.is_match(text),
                Exact::Lower(lit, kind) => holds(lower.get_or_insert_with(|| text.to_lowercase()), lit, *kind),
                Exact::Upper(lit, kind) => holds(upper.get_or_insert_with(|| text.to_uppercase()), lit, *kind),
            };
            if hit {
                set(bits, *slot, row);
            }
        }
    }
}

fn set(bits: &mut [Vec<u64>], slot: usize, row: usize) {
    bits[slot][row / 64] |= 1 << (row % 64);
}

fn holds(text: &str, literal: &str, kind: Kind) -> bool {
    match kind {
        Kind::Equals => text == literal,
        Kind::Prefix => text.starts_with(literal),
        Kind::Suffix => text.ends_with(literal),
        Kind::Contains => text.contains(literal),
    }
}

/// The regex arrow builds for an `ILIKE` pattern of this kind and literal: the literal
/// escaped, anchored where the pattern has no `%`, case-insensitive, `.` matching newlines.
fn ilike_regex(literal: &str, kind: Kind) -> Option<regex::Regex> {
    let escaped = regex::escape(literal);
    let pattern = match kind {
        Kind::Equals => format!("^{escaped}$"),
        Kind::Prefix => format!("^{escaped}"),
        Kind::Suffix => format!("{escaped}$"),
        Kind::Contains => escaped,
    };
    regex::RegexBuilder::new(&pattern).case_insensitive(true).dot_matches_new_line(true).build().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_literal_set_builds_one_scan_deciding_each_row() {
        let lits: Vec<String> = (0..20_000).map(|i| format!("ioc-{i:05}")).collect();
        let atoms: Vec<TextAtom<'_>> = lits
            .iter()
            .enumerate()
            .map(|(slot, literal)| TextAtom { slot, literal, kind: Kind::Equals, fold: Fold::None })
            .collect();
        let scan = TextScan::new("c", false, &atoms).expect("one automaton for every literal");
        let col = arrow::array::StringArray::from(vec![Some("ioc-00042"), Some("x ioc-00043"), None]);
        let mut bits: Vec<Vec<u64>> = (0..lits.len()).map(|_| vec![0u64; 1]).collect();
        assert!(scan.run(&col, &mut bits));
        assert_eq!(bits[42][0], 0b1);
        // Contained, not equal.
        assert_eq!(bits[43][0], 0);
    }

    #[test]
    fn ilike_regexes_fold_unicode_as_arrow_does() {
        let re = ilike_regex("kelvin", Kind::Contains).unwrap();
        assert!(re.is_match("\u{212A}ELVIN"));
        assert!(ilike_regex("a.b", Kind::Equals).unwrap().is_match("A.B"));
        assert!(!ilike_regex("a.b", Kind::Equals).unwrap().is_match("AxB"));
        assert!(!ilike_regex("x", Kind::Prefix).unwrap().is_match("ax"));
    }
}
