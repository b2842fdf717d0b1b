//! How listing commands print: an aligned table whose columns are as wide as their longest
//! cell (long ids never push the next column out of line), or `--output json` — the API's
//! answer, for scripts.

/// A listing's output format.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Output {
    /// Aligned columns for people.
    #[default]
    Table,
    /// The API's JSON answer, pretty-printed.
    Json,
}

/// `--output table|json` of a listing command.
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct OutputArgs {
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

impl OutputArgs {
    /// Prints `value` as JSON and returns true when `--output json`; false for a table.
    pub fn json(&self, value: &serde_json::Value) -> bool {
        if self.output == Output::Json {
            println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
            return true;
        }
        false
    }
}

/// An aligned table; a column whose header starts with `>` is right-aligned (numbers).
pub struct Table {
    headers: Vec<(String, bool)>,
    rows: Vec<Row>,
}

enum Row {
    Cells(Vec<String>),
    /// A line under the row before it, indented, not part of the columns.
    Note(String),
}

impl Table {
    /// A table with these headers (`">COUNT"` = right-aligned column `COUNT`).
    pub fn new(headers: &[&str]) -> Self {
        let headers = headers
            .iter()
            .map(|h| match h.strip_prefix('>') {
                Some(name) => (name.to_string(), true),
                None => (h.to_string(), false),
            })
            .collect();
        Self { headers, rows: Vec::new() }
    }

    /// Adds a row (missing cells are empty).
    pub fn row<I, S>(&mut self, cells: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rows.push(Row::Cells(cells.into_iter().map(Into::into).collect()));
        self
    }

    /// Adds an indented line under the last row.
    pub fn note(&mut self, text: impl Into<String>) -> &mut Self {
        self.rows.push(Row::Note(text.into()));
        self
    }

    /// The table as text, one line per row, no trailing spaces.
    pub fn render(&self) -> String {
        let width = |i: usize| {
            let cells = self.rows.iter().filter_map(|r| match r {
                Row::Cells(c) => Some(c.get(i).map_or(0, |s| s.chars().count())),
                Row::Note(_) => None,
            });
            cells.chain([self.headers[i].0.chars().count()]).max().unwrap_or(0)
        };
        let widths: Vec<usize> = (0..self.headers.len()).map(width).collect();
        let line = |cells: &[String]| {
            let mut out = String::new();
            for (i, (_, right)) in self.headers.iter().enumerate() {
                let cell = cells.get(i).map_or("", String::as_str);
                let pad = widths[i].saturating_sub(cell.chars().count());
                if i > 0 {
                    out.push_str("  ");
                }
                if *right {
                    out.push_str(&" ".repeat(pad));
                    out.push_str(cell);
                } else {
                    out.push_str(cell);
                    out.push_str(&" ".repeat(pad));
                }
            }
            out.trim_end().to_string()
        };
        let mut out = vec![line(&self.headers.iter().map(|h| h.0.clone()).collect::<Vec<_>>())];
        for r in &self.rows {
            out.push(match r {
                Row::Cells(c) => line(c),
                Row::Note(n) => format!("  {n}"),
            });
        }
        out.join("\n")
    }

    /// Prints the table to stdout.
    pub fn print(&self) {
        println!("{}", self.render());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_longest_cell_and_numbers_align_right() {
        let mut t = Table::new(&["RULE", ">ALERTS", "STATE"]);
        t.row(["linux.reverse_shell_via_a_very_long_rule_identifier", "7", "enabled"]);
        t.row(["a", "1234", "disabled"]).note("last error: boom");
        assert_eq!(
            t.render(),
            "RULE                                                 ALERTS  STATE\n\
             linux.reverse_shell_via_a_very_long_rule_identifier       7  enabled\n\
             a                                                      1234  disabled\n  \
             last error: boom"
        );
    }
}
