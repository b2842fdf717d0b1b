//! Where things are in a pack's YAML text, so that an error points into the file the analyst
//! edits (`pack.yaml:10:31`) rather than into a rule's SQL string.
//!
//! The YAML parser keeps no positions of values, so this reads the block layout packs are
//! written in (`rules:` then `- id: …` items, `sql: |` blocks, plain or quoted one-line
//! values). Every SQL mapping is checked: the SQL rebuilt from the file's lines must equal the
//! rule's parsed SQL, else no position is claimed (a flow-style or JSON pack gets its errors
//! without file positions, never with wrong ones).

/// A rule item of the `rules:` list.
#[derive(Debug, Clone)]
struct Item {
    /// 0-based line of its `- `.
    first: usize,
    /// 0-based line after its last line.
    end: usize,
    /// Column (0-based) of its keys.
    key_col: usize,
}

/// The layout of a pack's text.
#[derive(Debug)]
pub struct Layout<'a> {
    lines: Vec<&'a str>,
    items: Vec<Item>,
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_blank_or_comment(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

/// A `key:` at the start of `rest`: the value after the colon (untrimmed) and its offset.
fn after_key<'t>(rest: &'t str, key: &str) -> Option<(&'t str, usize)> {
    let r = rest.strip_prefix(key)?;
    let r2 = r.trim_start_matches(' ').strip_prefix(':')?;
    if !(r2.is_empty() || r2.starts_with(' ')) {
        return None;
    }
    Some((r2, rest.len() - r2.len()))
}

impl<'a> Layout<'a> {
    /// Reads the layout of `text` (nothing found for a flow-style or JSON pack).
    pub fn new(text: &'a str) -> Self {
        let lines: Vec<&str> = text.lines().collect();
        let mut items = Vec::new();
        let start = lines.iter().position(|l| {
            indent(l) == 0
                && after_key(l, "rules").is_some_and(|(v, _)| {
                    let v = v.trim();
                    v.is_empty() || v.starts_with('#')
                })
        });
        if let Some(start) = start {
            let mut item_col = None;
            for (i, line) in lines.iter().enumerate().skip(start + 1) {
                if is_blank_or_comment(line) {
                    continue;
                }
                let ind = indent(line);
                let dash = line[ind..].starts_with("- ") || &line[ind..] == "-";
                let col = *item_col.get_or_insert(ind);
                if ind < col || (ind == col && !dash) {
                    break;
                }
                if ind == col && dash {
                    if let Some(last) = items.last_mut() {
                        let last: &mut Item = last;
                        last.end = i;
                    }
                    let after = &line[ind + 1..];
                    let key_col = ind + 1 + (after.len() - after.trim_start_matches(' ').len());
                    items.push(Item { first: i, end: lines.len(), key_col });
                }
            }
            // The last item ends before the first line that is not part of the list.
            if let Some(last) = items.last_mut() {
                let col = item_col.unwrap_or(0);
                last.end = (last.first + 1..lines.len())
                    .find(|&i| {
                        let l = lines[i];
                        !is_blank_or_comment(l) && (indent(l) < col || (indent(l) == col && !l[col..].starts_with('-')))
                    })
                    .unwrap_or(lines.len());
            }
        }
        Self { lines, items }
    }

    /// The rule item whose `id:` is `id`.
    fn item_by_id(&self, id: &str) -> Option<&Item> {
        self.items.iter().find(|it| {
            self.key(it, "id").is_some_and(|(l, c)| {
                let v = self.lines[l][c..].trim();
                let v = v.split(" #").next().unwrap_or(v).trim();
                v.trim_matches(|ch| ch == '"' || ch == '\'') == id
            })
        })
    }

    /// 0-based line of `key:` in an item and the 0-based column right after its colon.
    fn key(&self, item: &Item, key: &str) -> Option<(usize, usize)> {
        (item.first..item.end).find_map(|l| {
            let line = self.lines[l];
            if line.len() < item.key_col || indent(&line.replace('-', " ")) != item.key_col {
                return None;
            }
            let (_, off) = after_key(&line[item.key_col..], key)?;
            Some((l, item.key_col + off))
        })
    }

    /// 1-based (line, column) of a key of the rule `id` (`None` key: the item's `- `).
    pub fn rule_key(&self, id: &str, key: Option<&str>) -> Option<(u64, u64)> {
        let item = self.item_by_id(id)?;
        self.item_key(item, key)
    }

    /// 1-based (line, column) of a key of the `index`-th rule (`None` key: the item's `- `).
    pub fn rule_key_at(&self, index: usize, key: Option<&str>) -> Option<(u64, u64)> {
        self.item_key(self.items.get(index)?, key)
    }

    fn item_key(&self, item: &Item, key: Option<&str>) -> Option<(u64, u64)> {
        match key {
            None => Some((item.first as u64 + 1, indent(self.lines[item.first]) as u64 + 1)),
            Some(k) => self.key(item, k).map(|(l, _)| (l as u64 + 1, item.key_col as u64 + 1)),
        }
    }

    /// 1-based (line, column) of a top-level key.
    pub fn top_key(&self, key: &str) -> Option<(u64, u64)> {
        self.lines.iter().position(|l| indent(l) == 0 && after_key(l, key).is_some()).map(|l| (l as u64 + 1, 1))
    }

    /// Where, in the file, a position counted inside rule `id`'s SQL is (1-based in and out);
    /// `None` unless the SQL rebuilt from the file is exactly `sql`.
    pub fn sql_position(&self, id: &str, sql: &str, line: u64, column: u64) -> Option<(u64, u64)> {
        let item = self.item_by_id(id)?;
        let (l, c) = self.key(item, "sql")?;
        let map = self.sql_map(item, l, c)?;
        let (text, origins) = map;
        if text.trim_end_matches('\n') != sql.trim_end_matches('\n') {
            return None;
        }
        // Walk the rebuilt SQL to the (line, column) the parser or planner gave.
        let (mut cur_line, mut cur_col) = (1u64, 1u64);
        for (ch, origin) in text.chars().zip(&origins) {
            if cur_line == line && cur_col == column {
                return Some((origin.0 as u64 + 1, origin.1 as u64 + 1));
            }
            if ch == '\n' {
                cur_line += 1;
                cur_col = 1;
            } else {
                cur_col += 1;
            }
        }
        // Just past the end (an "unexpected end of input").
        (cur_line == line && cur_col == column).then(|| {
            let last = origins.last().copied().unwrap_or((l, c));
            (last.0 as u64 + 1, last.1 as u64 + 2)
        })
    }

    /// The SQL as the file spells it and, per character, its 0-based (line, column).
    #[allow(clippy::type_complexity)]
    fn sql_map(&self, item: &Item, l: usize, c: usize) -> Option<(String, Vec<(usize, usize)>)> {
        let rest = &self.lines[l][c..];
        let value = rest.trim_start();
        let vcol = c + (rest.len() - value.len());
        let mut text = String::new();
        let mut origins: Vec<(usize, usize)> = Vec::new();
        fn push(s: &str, line: usize, col: usize, text: &mut String, origins: &mut Vec<(usize, usize)>) {
            for (k, ch) in s.chars().enumerate() {
                text.push(ch);
                origins.push((line, col + k));
            }
        }
        if value.starts_with('|') || value.starts_with('>') {
            let literal = value.starts_with('|');
            let key_indent = item.key_col;
            let body: Vec<usize> = (l + 1..item.end)
                .take_while(|&i| self.lines[i].trim().is_empty() || indent(self.lines[i]) > key_indent)
                .collect();
            let block_indent = body.iter().map(|&i| self.lines[i]).find(|s| !s.trim().is_empty()).map(indent)?;
            let mut prev_blank = true;
            for (n, &i) in body.iter().enumerate() {
                let line = self.lines[i];
                let content = line.get(block_indent..).unwrap_or("");
                if n > 0 {
                    let sep = if literal || content.is_empty() || prev_blank { '\n' } else { ' ' };
                    // The separator stands where the previous line ended.
                    let at = origins.last().map_or((i, block_indent), |&(pl, pc)| (pl, pc + 1));
                    if literal || !content.is_empty() || prev_blank {
                        text.push(sep);
                        origins.push(at);
                    }
                }
                push(content, i, block_indent, &mut text, &mut origins);
                prev_blank = content.is_empty();
            }
            return Some((text, origins));
        }
        let value = value.split(" #").next().unwrap_or(value).trim_end();
        if let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            if inner.contains('\\') {
                return None;
            }
            push(inner, l, vcol + 1, &mut text, &mut origins);
        } else if let Some(inner) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
            if inner.contains("''") {
                return None;
            }
            push(inner, l, vcol + 1, &mut text, &mut origins);
        } else {
            push(value, l, vcol, &mut text, &mut origins);
            // A plain scalar may go on over more-indented lines, folded with spaces.
            for i in l + 1..item.end {
                let line = self.lines[i];
                if line.trim().is_empty() || indent(line) <= item.key_col {
                    break;
                }
                let t = line.trim();
                let at = origins.last().map_or((i, 0), |&(pl, pc)| (pl, pc + 1));
                text.push(' ');
                origins.push(at);
                push(t, i, indent(line), &mut text, &mut origins);
            }
        }
        Some((text, origins))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACK: &str = "name: local
version: 2
rules:
  # the first
  - id: local.one
    name: One
    severity: low
    sql: |
      SELECT pid
      FROM process_events
      WHERE exe = 'x' AN cmdline = 'y'
  - name: Two
    id: \"local.two\"
    severity: high
    sql: SELECT pid FROM process_events WHERE nosuch = 1
  - id: local.three
    name: Three
    severity: info
    sql: >
      SELECT pid FROM process_events
      WHERE exe = 'z'
description: after the list
";

    #[test]
    fn sql_positions_of_literal_plain_and_folded_values_map_into_the_file() {
        let l = Layout::new(PACK);
        let one = "SELECT pid\nFROM process_events\nWHERE exe = 'x' AN cmdline = 'y'\n";
        // `AN` is at SQL 3:17 → file line 11, column 6 + 17.
        assert_eq!(l.sql_position("local.one", one, 3, 17), Some((11, 23)));
        assert_eq!(&PACK.lines().nth(10).unwrap()[22..24], "AN");
        let two = "SELECT pid FROM process_events WHERE nosuch = 1";
        assert_eq!(l.sql_position("local.two", two, 1, 38), Some((15, 47)));
        assert_eq!(&PACK.lines().nth(14).unwrap()[46..52], "nosuch");
        let three = "SELECT pid FROM process_events WHERE exe = 'z'\n";
        // Folded: SQL 1:32 (`WHERE`) is the start of file line 21.
        assert_eq!(l.sql_position("local.three", three, 1, 32), Some((21, 7)));
        // A SQL text that is not what the file says: no position rather than a wrong one.
        assert_eq!(l.sql_position("local.two", "SELECT 1", 1, 1), None);
        assert_eq!(l.sql_position("local.nope", two, 1, 1), None);
    }

    #[test]
    fn keys_and_items_are_found() {
        let l = Layout::new(PACK);
        assert_eq!(l.rule_key("local.two", None), Some((12, 3)));
        assert_eq!(l.rule_key("local.two", Some("sql")), Some((15, 5)));
        assert_eq!(l.rule_key("local.one", Some("id")), Some((5, 5)));
        assert_eq!(l.rule_key_at(2, Some("severity")), Some((18, 5)));
        assert_eq!(l.rule_key_at(3, None), None);
        assert_eq!(l.top_key("description"), Some((22, 1)));
        // Flow style: nothing claimed.
        let flow = Layout::new("{name: a, version: 1, rules: [{id: x, name: x, severity: low, sql: SELECT 1}]}");
        assert_eq!(flow.rule_key("x", None), None);
    }
}
