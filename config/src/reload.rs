//! What a running engine may take from a re-read config (SIGHUP, `vedette reload`) and what
//! only a restart changes. Pure: compares two configs.

use serde_json::Value;

use crate::{Config, SinkConfig};

/// Keys a reload applies to the running engine.
pub const LIVE_KEYS: &[&str] = &[
    "log.level",
    "api.rate_limit_per_sec",
    "api.rate_limit_burst",
    "rules.builtin",
    "rules.packs_dir",
    "rules.trusted_keys",
    "rules.allow_unsigned",
    "reference_tables[].path",
    "reference_tables[].format",
    "reference_tables[].max_rows",
];

/// Every sink is live too: sinks are compared by name ([`sink_changes`]), not by position.
fn as_value(c: &Config) -> Value {
    let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.remove("sinks");
    }
    v
}

/// How the sinks (the effective ones: the defaults when none is configured) differ between two
/// configs, by name.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SinkChanges {
    /// Sinks only the new config has.
    pub added: Vec<String>,
    /// Sinks only the running config has.
    pub removed: Vec<String>,
    /// Sinks in both whose settings differ.
    pub changed: Vec<String>,
}

impl SinkChanges {
    /// Nothing differs.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

fn sink_value(s: &SinkConfig) -> Value {
    serde_json::to_value(s).unwrap_or(Value::Null)
}

/// The sinks added, removed and changed from `running` to `new`.
pub fn sink_changes(running: &Config, new: &Config) -> SinkChanges {
    let (old, new) = (running.effective_sinks(), new.effective_sinks());
    let find = |list: &[SinkConfig], name: &str| list.iter().find(|s| s.name() == name).map(sink_value);
    let mut out = SinkChanges::default();
    for s in &new {
        match find(&old, s.name()) {
            None => out.added.push(s.name().to_string()),
            Some(v) if v != sink_value(s) => out.changed.push(s.name().to_string()),
            Some(_) => {}
        }
    }
    out.removed = old.iter().filter(|s| find(&new, s.name()).is_none()).map(|s| s.name().to_string()).collect();
    out
}

/// The changed keys of the sinks, named `sinks[NAME]` (added or removed) and
/// `sinks[NAME].key`.
fn sink_keys(running: &Config, new: &Config, out: &mut Vec<String>) {
    let c = sink_changes(running, new);
    out.extend(c.added.iter().chain(&c.removed).map(|n| format!("sinks[{n}]")));
    let (old, new) = (running.effective_sinks(), new.effective_sinks());
    for name in &c.changed {
        let value = |list: &[SinkConfig]| list.iter().find(|s| s.name() == name).map(sink_value);
        diff(&value(&old).unwrap_or_default(), &value(&new).unwrap_or_default(), &format!("sinks[{name}]"), out);
    }
}

/// The config with every live key blanked, so that what is left differs only where a restart
/// is needed.
fn without_live_keys(c: &Config) -> Value {
    let mut v = as_value(c);
    for key in LIVE_KEYS {
        match key.split_once("[].") {
            Some((list, field)) => {
                for item in v.get_mut(list).and_then(Value::as_array_mut).into_iter().flatten() {
                    if let Some(o) = item.as_object_mut() {
                        o.remove(field);
                    }
                }
            }
            None => {
                let (section, field) = key.split_once('.').unwrap_or((key, ""));
                if let Some(o) = v.get_mut(section).and_then(Value::as_object_mut) {
                    o.remove(field);
                }
            }
        }
    }
    v
}

/// Key paths where `a` and `b` differ (`sinks[1].url`, `ingest.listen`, `sinks` when the
/// lists differ in length).
fn diff(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    if a == b {
        return;
    }
    let join = |k: &str| if path.is_empty() { k.to_string() } else { format!("{path}.{k}") };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                diff(x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null), &join(k), out);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() && !path.is_empty() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                diff(p, q, &format!("{path}[{i}]"), out);
            }
        }
        _ => out.push(if path.is_empty() { "(the whole config)".into() } else { path.to_string() }),
    }
}

/// The keys changed from `running` to `new` that only a restart applies (empty: a reload
/// can take `new`).
pub fn restart_only_changes(running: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    diff(&without_live_keys(running), &without_live_keys(new), "", &mut out);
    out
}

/// Every key changed from `running` to `new` (sinks by name: `sinks[hook].url`).
pub fn changes(running: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    diff(&as_value(running), &as_value(new), "", &mut out);
    sink_keys(running, new, &mut out);
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::from_toml_str(text).unwrap()
    }

    #[test]
    fn live_keys_reload_and_every_other_change_is_named_for_a_restart() {
        let base = "[api]\nrate_limit_per_sec = 100\n[rules]\npacks_dir = \"packs\"\n[[reference_tables]]\nname = \"iocs\"\npath = \"a.csv\"\ncolumns = { sha256 = \"string\" }\n[[sinks]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/a\"\n";
        let running = parse(base);
        let live = parse(
            &base
                .replace("rate_limit_per_sec = 100", "rate_limit_per_sec = 5")
                .replace("path = \"a.csv\"", "path = \"b.csv\"")
                .replace("packs_dir = \"packs\"", "packs_dir = \"packs2\"\nallow_unsigned = true"),
        );
        assert!(restart_only_changes(&running, &live).is_empty());
        assert_eq!(
            changes(&running, &live),
            ["api.rate_limit_per_sec", "reference_tables[0].path", "rules.allow_unsigned", "rules.packs_dir"]
        );
        let restart = parse(
            &base
                .replace("sha256 = \"string\"", "sha256 = \"string\", family = \"string\"")
                .replace("[api]\n", "[api]\nlisten = \"127.0.0.1:1\"\n"),
        );
        assert_eq!(restart_only_changes(&running, &restart), ["api.listen", "reference_tables[0].columns.family"]);
    }

    #[test]
    fn sinks_are_compared_by_name_and_all_their_changes_are_live() {
        let hook = "[[sinks]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/a\"\n";
        let file = "[[sinks]]\nname = \"file\"\ntype = \"file\"\npath = \"a.jsonl\"\n";
        let running = parse(&format!("{hook}{file}"));
        // Reordered: nothing changed.
        let same = parse(&format!("{file}{hook}"));
        assert!(sink_changes(&running, &same).is_empty());
        assert!(changes(&running, &same).is_empty());
        let new = parse(&format!(
            "{}[[sinks]]\nname = \"out\"\ntype = \"stdout\"\n",
            hook.replace("9/a", "9/b").replace("\"webhook\"\n", "\"webhook\"\nformat = \"cef\"\n")
        ));
        let c = sink_changes(&running, &new);
        assert_eq!((c.added, c.removed, c.changed), (vec!["out".into()], vec!["file".into()], vec!["hook".into()]));
        assert!(restart_only_changes(&running, &new).is_empty());
        assert_eq!(changes(&running, &new), ["sinks[file]", "sinks[hook].format", "sinks[hook].url", "sinks[out]"]);
        // No sinks configured: the defaults are the running ones.
        let defaults = parse("");
        let c = sink_changes(&defaults, &parse(hook));
        assert_eq!((c.added, c.removed), (vec!["hook".into()], vec!["stdout".into(), "alerts_file".into()]));
    }
}
