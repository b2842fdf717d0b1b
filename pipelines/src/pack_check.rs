//! Every problem of a pack's text in one report — its YAML (each rule read on its own, so one
//! bad rule hides neither the next nor the SQL of the good ones), the rule checks and each
//! rule's SQL — each located in the pack file (`pack.yaml:10:31: rule `id`: …`).

use std::sync::LazyLock;

use regex::Regex;

use crate::compile::Compiler;
use crate::error::{ErrorIn, RuleError};
use crate::pack_text::Layout;
use crate::rule::{Pack, RuleDef};

/// One problem, with where it is in the pack file when that is known.
#[derive(Debug)]
pub struct Problem {
    /// What is wrong.
    pub error: RuleError,
    /// The rule it is about, when it is one rule's.
    pub rule: Option<String>,
    /// 1-based line and column in the pack file.
    pub at: Option<(u64, u64)>,
}

/// Positions the parser and planner write into their messages; the file position replaces them.
static POSITION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r" ?\(line \d+, column \d+\)| at Line: \d+, Column: \d+| at line \d+ column \d+").expect("valid regex")
});

impl Problem {
    /// The message without positions that count inside the SQL or the YAML (the file position
    /// says where), starting with the rule when there is one.
    pub fn message(&self) -> String {
        let text = match &self.error {
            RuleError::PackSyntax { reason, .. } => match &self.rule {
                Some(rule) => format!("rule `{rule}`: {reason}"),
                None => reason.clone(),
            },
            other => other.to_string(),
        };
        if self.at.is_some() { POSITION.replace_all(&text, "").into_owned() } else { text }
    }

    /// `file:line:column: message` (or `file: message` when the position is unknown).
    pub fn render(&self, file: &str) -> String {
        match self.at {
            Some((l, c)) => format!("{file}:{l}:{c}: {}", self.message()),
            None => format!("{file}: {}", self.message()),
        }
    }
}

fn syntax(origin: &str, reason: String, rule: Option<String>, at: Option<(u64, u64)>) -> Problem {
    Problem { error: RuleError::PackSyntax { pack: origin.into(), reason }, rule, at }
}

/// The key a deserialization error is about: the last key of its path, or the field an
/// "unknown field" message names.
fn error_key(path: &serde_path_to_error::Path, message: &str) -> Option<String> {
    let from_path = path.iter().find_map(|s| match s {
        serde_path_to_error::Segment::Map { key } => Some(key.clone()),
        _ => None,
    });
    from_path.or_else(|| message.strip_prefix("unknown field `").and_then(|m| m.split('`').next()).map(str::to_string))
}

/// Parses a pack, reporting every YAML problem (rules with problems are left out of the pack
/// returned) and every rule check. `None` when the text is not YAML or its top level is bad.
pub fn parse(origin: &str, text: &str) -> (Option<Pack>, Vec<Problem>) {
    let layout = Layout::new(text);
    let mut problems = Vec::new();
    let pack = match Pack::from_yaml(origin, text) {
        Ok(pack) => Some(pack),
        Err(RuleError::InvalidRule { .. }) => serde_yaml_ng::from_str::<Pack>(text).ok(),
        Err(first) => lenient(origin, text, &layout, first, &mut problems),
    };
    if let Some(pack) = &pack {
        for e in pack.problems() {
            let rule = e.rule().map(str::to_string);
            let at = rule.as_deref().and_then(|r| layout.rule_key(r, Some("id")));
            problems.push(Problem { error: e, rule, at });
        }
    }
    (pack, problems)
}

/// Reads the pack rule by rule after a YAML error; returns the pack of the rules that read.
fn lenient(
    origin: &str,
    text: &str,
    layout: &Layout<'_>,
    first: RuleError,
    problems: &mut Vec<Problem>,
) -> Option<Pack> {
    let not_yaml = |e: RuleError| {
        let at = e.position().filter(|p| p.0 == ErrorIn::Pack).map(|p| (p.1, p.2));
        let reason = match e {
            RuleError::PackSyntax { reason, .. } => reason,
            other => other.to_string(),
        };
        syntax(origin, reason, None, at)
    };
    let Ok(mut value) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text) else {
        problems.push(not_yaml(first));
        return None;
    };
    let Some(map) = value.as_mapping_mut() else {
        problems.push(not_yaml(first));
        return None;
    };
    let before = problems.len();
    if let Some(serde_yaml_ng::Value::Sequence(items)) = map.get_mut("rules") {
        let mut good = Vec::new();
        for (i, item) in std::mem::take(items).into_iter().enumerate() {
            let id = item.get("id").and_then(|v| v.as_str()).map(str::to_string);
            match serde_path_to_error::deserialize::<_, RuleDef>(item.clone()) {
                Ok(_) => good.push(item),
                Err(e) => {
                    let message = e.inner().to_string();
                    let key = error_key(e.path(), &message);
                    let at = layout.rule_key_at(i, key.as_deref()).or_else(|| layout.rule_key_at(i, None));
                    let path = e.path().to_string();
                    let reason = if path == "." {
                        format!("rules[{i}]: {message}")
                    } else {
                        format!("rules[{i}].{path}: {message}")
                    };
                    problems.push(syntax(origin, reason, id, at));
                }
            }
        }
        *items = good;
    }
    match serde_path_to_error::deserialize::<_, Pack>(value) {
        Ok(pack) => Some(pack),
        // The first error alone, as the YAML parser located it (line and column).
        Err(_) if problems.len() == before => {
            problems.push(not_yaml(first));
            None
        }
        Err(e) => {
            let message = e.inner().to_string();
            let key = error_key(e.path(), &message);
            let at = key.as_deref().and_then(|k| layout.top_key(k)).or(Some((1, 1)));
            let path = e.path().to_string();
            let reason = if path == "." { message } else { format!("{path}: {message}") };
            problems.push(syntax(origin, reason, None, at));
            None
        }
    }
}

/// Where `error`, raised by rule `rule` of `pack`, is in the pack's `text`: the error located
/// there (`RuleError::InPack`), or unchanged when the text does not show it.
pub fn locate(error: RuleError, pack: &Pack, text: &str) -> RuleError {
    let Some(rule) = error.rule().and_then(|id| pack.rules.iter().find(|r| r.id == id)) else { return error };
    let layout = Layout::new(text);
    let at = match error.position() {
        Some((ErrorIn::Sql, l, c)) => layout.sql_position(&rule.id, &rule.sql, l, c),
        _ => None,
    }
    .or_else(|| layout.rule_key(&rule.id, Some("sql")));
    let Some((line, column)) = at else { return error };
    let id = rule.id.clone();
    let message = Problem { error, rule: Some(id.clone()), at: Some((line, column)) }.message();
    RuleError::InPack { pack: pack.name.clone(), rule: id, line, column, message }
}

/// [`parse`], then every rule that read is compiled: all the pack's problems, in file terms.
pub async fn check(compiler: &Compiler, origin: &str, text: &str) -> (Option<Pack>, Vec<Problem>) {
    let (pack, mut problems) = parse(origin, text);
    let Some(pack) = pack else { return (None, problems) };
    let layout = Layout::new(text);
    for rule in &pack.rules {
        if problems.iter().any(|p| p.rule.as_deref() == Some(rule.id.as_str())) {
            continue;
        }
        if let Err(e) = compiler.compile(&pack, rule).await {
            let at = match e.position() {
                Some((ErrorIn::Sql, l, c)) => layout.sql_position(&rule.id, &rule.sql, l, c),
                _ => None,
            }
            .or_else(|| layout.rule_key(&rule.id, Some("sql")));
            problems.push(Problem { error: e, rule: Some(rule.id.clone()), at });
        }
    }
    (Some(pack), problems)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use vedette_schemas::tables::Catalog;

    use super::*;

    const PACK: &str = "name: local
version: 1
rules:
  - id: local.typo
    name: Typo
    title: Not a key
    severity: low
    sql: SELECT pid FROM process_events
  - id: local.syntax
    name: Syntax
    severity: high
    sql: |
      SELECT pid
      FROM process_events
      WHERE exe = 'x' AN cmdline = 'y'
  - id: local.column
    name: Column
    severity: urgent
    sql: SELECT pid FROM process_events
  - id: local.planner
    name: Planner
    severity: low
    sql: SELECT pid FROM process_events WHERE nosuchcolumn = 1
";

    #[tokio::test]
    async fn yaml_and_sql_problems_are_reported_together_at_their_place_in_the_file() {
        let compiler = Compiler::new(Arc::new(Catalog::builtin())).unwrap();
        let (pack, problems) = check(&compiler, "local.yaml", PACK).await;
        let rendered: Vec<String> = problems.iter().map(|p| p.render("local.yaml")).collect();
        assert_eq!(rendered.len(), 4, "{rendered:#?}");
        assert!(rendered[0].starts_with("local.yaml:6:5: rule `local.typo`: rules[0]"), "{}", rendered[0]);
        assert!(rendered[0].contains("unknown field `title`"), "{}", rendered[0]);
        assert!(rendered[1].starts_with("local.yaml:18:5: rule `local.column`: rules[2].severity:"), "{}", rendered[1]);
        // The parser's position (SQL 3:17) becomes the file's (15:23); no SQL position is left.
        assert!(rendered[2].starts_with("local.yaml:15:23: rule `local.syntax`: "), "{}", rendered[2]);
        assert!(rendered[2].contains("found: AN") && !rendered[2].contains("Line:"), "{}", rendered[2]);
        assert!(rendered[3].starts_with("local.yaml:23:47: rule `local.planner`: "), "{}", rendered[3]);
        assert!(rendered[3].contains("nosuchcolumn") && !rendered[3].contains("(line"), "{}", rendered[3]);
        // The rules that read are in the pack returned.
        let ids: Vec<_> = pack.unwrap().rules.iter().map(|r| r.id.clone()).collect();
        assert_eq!(ids, ["local.syntax", "local.planner"]);
        // Internal columns are never offered as fields.
        assert!(!rendered[3].contains("__seq") && !rendered[3].contains("__row"), "{}", rendered[3]);
    }

    #[test]
    fn text_that_is_not_yaml_is_one_problem_at_its_place() {
        let (pack, problems) = parse("p.yaml", "name: x\nrules: [\n");
        assert!(pack.is_none());
        assert_eq!(problems.len(), 1);
        let r = problems[0].render("p.yaml");
        assert!(r.starts_with("p.yaml:"), "{r}");
        let (_, problems) = parse("p.yaml", "name: x\nversion: one\nrules: []\n");
        assert_eq!(problems[0].render("p.yaml"), problems[0].render("p.yaml"));
        assert!(problems[0].render("p.yaml").starts_with("p.yaml:2:"), "{}", problems[0].render("p.yaml"));
        let (_, problems) = parse(
            "p.yaml",
            "name: x\nversion: 1\nrules:\n  - id: a b\n    name: A\n    severity: low\n    sql: SELECT 1\n",
        );
        assert_eq!(problems[0].render("p.yaml"), "p.yaml:4:5: rule `a b`: ids use letters, digits, `.`, `_` and `-`");
    }
}
