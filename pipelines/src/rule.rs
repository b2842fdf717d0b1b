//! Rule and rule-pack definitions as analysts write them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Result, RuleError};

/// Alert severity, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Informational.
    Info,
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical.
    Critical,
}

impl Severity {
    /// Lowercase name as written in packs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

/// One detection rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDef {
    /// Stable unique id, e.g. `linux.reverse_shell_nc`.
    pub id: String,
    /// Short human title.
    pub name: String,
    /// Rule version; part of the alert id. Defaults to the pack version.
    #[serde(default)]
    pub version: Option<u32>,
    /// Severity of its alerts.
    pub severity: Severity,
    /// What the rule detects and why it matters.
    #[serde(default)]
    pub description: String,
    /// Tags such as MITRE ATT&CK technique ids.
    #[serde(default)]
    pub tags: Vec<String>,
    /// One SELECT over one telemetry table; each result row is one alert.
    pub sql: String,
    /// Columns whose values identify "the same detection" (part of the alert id).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dedup_key: Vec<String>,
    /// Fold repeats of the same dedup key within this duration into one alert (`5m`).
    #[serde(default, with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub suppress: Option<Duration>,
    /// Allowed event-time lateness for windowed rules (`10s`).
    #[serde(default, with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub lateness: Option<Duration>,
    /// Whether the rule runs.
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl RuleDef {
    /// A rule with an id and SQL and defaults for the rest (name = id, severity low, enabled):
    /// for tools, tests and benchmarks that build rules in code.
    pub fn new(id: impl Into<String>, sql: impl Into<String>) -> Self {
        let id = id.into();
        Self {
            name: id.clone(),
            id,
            version: None,
            severity: Severity::Low,
            description: String::new(),
            tags: Vec::new(),
            sql: sql.into(),
            dedup_key: Vec::new(),
            suppress: None,
            lateness: None,
            enabled: true,
        }
    }
}

mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| vedette_config::duration::parse(&s).map_err(serde::de::Error::custom))
            .transpose()
    }

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&vedette_config::duration::format(*d)),
            None => s.serialize_none(),
        }
    }
}

fn yes() -> bool {
    true
}

/// A rule pack file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pack {
    /// Pack name, unique among packs.
    pub name: String,
    /// Pack version; only ever increases.
    pub version: u32,
    /// What the pack covers.
    #[serde(default)]
    pub description: String,
    /// Who maintains it.
    #[serde(default)]
    pub author: String,
    /// The rules.
    pub rules: Vec<RuleDef>,
}

/// The built-in Linux detection pack, as YAML.
pub const BUILTIN_PACK: &str = include_str!("builtin_linux.yaml");

impl Pack {
    /// Parses a pack from YAML; `origin` names the file in errors.
    pub fn from_yaml(origin: &str, text: &str) -> Result<Self> {
        let pack: Pack = serde_yaml_ng::from_str(text)
            .map_err(|e| RuleError::PackSyntax { pack: origin.into(), reason: e.to_string() })?;
        pack.check()?;
        Ok(pack)
    }

    /// The built-in pack.
    pub fn builtin() -> Self {
        Self::from_yaml("builtin_linux.yaml", BUILTIN_PACK).expect("the built-in pack is valid")
    }

    /// Rule versions default to the pack version.
    pub fn rule_version(&self, rule: &RuleDef) -> u32 {
        rule.version.unwrap_or(self.version)
    }

    fn check(&self) -> Result<()> {
        match self.problems().into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Every problem of a parsed pack's rules (bad or repeated ids, empty SQL).
    pub fn problems(&self) -> Vec<RuleError> {
        let mut seen = std::collections::BTreeSet::new();
        let mut problems = Vec::new();
        for r in &self.rules {
            let bad = |reason: &str| RuleError::InvalidRule { rule: r.id.clone(), reason: reason.into() };
            if r.id.is_empty() || !r.id.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
                problems.push(bad("ids use letters, digits, `.`, `_` and `-`"));
            } else if !seen.insert(r.id.as_str()) {
                problems.push(bad("id appears twice in the pack"));
            }
            if r.sql.trim().is_empty() {
                problems.push(bad("`sql` is empty"));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_pack_parses() {
        let p = Pack::builtin();
        assert!(p.rules.len() >= 6);
        assert!(p.rules.iter().all(|r| r.enabled));
    }

    /// Engines refuse a pack whose contents changed without a version bump. When you edit
    /// `builtin_linux.yaml`, bump its `version` and update the pinned digest here.
    #[test]
    fn builtin_pack_contents_are_pinned_to_its_version() {
        use sha2::Digest;
        let p = Pack::builtin();
        let digest = hex_string(&sha2::Sha256::digest(crate::signature::canonical_bytes(&p)));
        assert_eq!((p.version, digest.as_str()), (1, PINNED_BUILTIN_SHA256), "bump the built-in pack version");
    }

    const PINNED_BUILTIN_SHA256: &str = "36f1e18b6aff7ac390a913710344fe71520824bc3b6f564fc82710231f074448";

    fn hex_string(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn unknown_keys_and_duplicates_are_errors() {
        let err = Pack::from_yaml("x.yaml", "name: x\nversion: 1\nrules: []\nowner: me\n").unwrap_err().to_string();
        assert!(err.contains("unknown field `owner`"), "{err}");
        let dup = "name: x\nversion: 1\nrules:\n - {id: a, name: A, severity: low, sql: 'select 1'}\n - {id: a, name: B, severity: low, sql: 'select 1'}\n";
        assert!(Pack::from_yaml("x.yaml", dup).unwrap_err().to_string().contains("id appears twice"));
        let dur =
            "name: x\nversion: 1\nrules:\n - {id: a, name: A, severity: low, sql: 'select 1', suppress: 5 minutes}\n";
        let err = Pack::from_yaml("x.yaml", dur).unwrap_err().to_string();
        assert!(err.contains("unknown unit") && err.contains("line 4"), "{err}");
        let sev = "name: x\nversion: 1\nrules:\n - {id: a, name: A, severity: dire, sql: 'select 1'}\n";
        let err = Pack::from_yaml("x.yaml", sev).unwrap_err().to_string();
        assert!(err.contains("unknown variant `dire`") && err.contains("line 4"), "{err}");
    }
}
