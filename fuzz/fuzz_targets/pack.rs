//! A rule pack posted to the API (`POST /api/v1/rules/validate`, `…/test`) by an analyst, or
//! read from the packs directory: any bytes parse or are refused with errors, never panic —
//! the lenient rule-by-rule parse, the positions read from the errors, the file positions
//! found by the layout reader and the rendered messages included.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vedette_pipelines::pack_check;
use vedette_pipelines::pack_text::Layout;
use vedette_pipelines::rule::Pack;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = Pack::from_yaml("fuzz", text) {
        let _ = e.position();
    }
    let (pack, problems) = pack_check::parse("fuzz", text);
    for p in &problems {
        let _ = p.render("fuzz.yaml");
    }
    let layout = Layout::new(text);
    for rule in pack.iter().flat_map(|p| &p.rules) {
        let _ = layout.rule_key(&rule.id, Some("sql"));
        let _ = layout.rule_key(&rule.id, None);
        // Positions the parser could report: every line and column of the SQL, and past it.
        let lines = rule.sql.lines().count() as u64 + 1;
        for line in 1..=lines.min(8) {
            for column in [1, 2, 5, 40, 200] {
                let _ = layout.sql_position(&rule.id, &rule.sql, line, column);
            }
        }
    }
    let _ = layout.rule_key_at(0, Some("id"));
    let _ = layout.top_key("rules");
});
