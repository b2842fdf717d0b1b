//! Fleet messages of protocol v1: commands to sensors and their results, observe levels and
//! sensor configuration documents, certificate renewal and enrollment, and label selectors.
//! Pure types and checks; the engine and the reference sensor share them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// ALPN of the enrollment service (same QUIC port as ingest; no client certificate needed).
pub const ENROLL_ALPN: &[u8] = b"vedette-enroll/1";

/// The tenant (certificate OU) of edge nodes: an engine accepts forwarded alerts (ALERTS
/// frames) only from sessions whose certificate names it, and trusts their alerts' tenants.
pub const EDGE_TENANT: &str = "vedette-edge";

/// How much the reference sensor collects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum ObserveLevel {
    /// No host collection: heartbeats, and events given to the sensor explicitly (`--events`,
    /// `--demo`). No process events from `/proc`.
    Minimal,
    /// Process starts from `/proc`, polled every 500 ms.
    #[default]
    Standard,
    /// Process starts and exits from `/proc`, polled every 100 ms.
    Verbose,
}

impl ObserveLevel {
    /// Every level, in order.
    pub const ALL: [ObserveLevel; 3] = [Self::Minimal, Self::Standard, Self::Verbose];

    /// The level's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Minimal => "minimal",
            Self::Standard => "standard",
            Self::Verbose => "verbose",
        }
    }

    /// How often `/proc` is polled at this level (`None`: not at all).
    pub fn proc_poll_ms(self) -> Option<u64> {
        match self {
            Self::Minimal => None,
            Self::Standard => Some(500),
            Self::Verbose => Some(100),
        }
    }

    /// Whether process exits are reported.
    pub fn reports_exits(self) -> bool {
        self == Self::Verbose
    }
}

impl std::str::FromStr for ObserveLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| format!("observe level `{s}` is not one of minimal, standard, verbose"))
    }
}

impl std::fmt::Display for ObserveLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A versioned sensor configuration document (`apply_config`). Absent fields keep the
/// sensor's defaults. The latest version sent to a sensor wins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SensorSettings {
    /// Version of this document (1 or more); a sensor ignores a version older than the one it
    /// applied.
    pub version: u64,
    /// Tables the sensor sends; events of other tables are dropped on the sensor. Absent:
    /// every table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<Vec<String>>,
    /// Fraction of rows sent per table, 0.0–1.0 (absent: 1.0). Deterministic: 0.25 sends
    /// every fourth row.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sampling: BTreeMap<String, f64>,
    /// Executable base names (e.g. `chrome`) whose process events are not sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub elide_processes: Vec<String>,
    /// Heartbeat interval, ms (1000–300000); absent: the engine's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval_ms: Option<u64>,
}

impl SensorSettings {
    /// Checks the document; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.version == 0 {
            return Err("config.version: must be 1 or more".into());
        }
        for t in self.tables.iter().flatten() {
            check_label_part("config.tables", t)?;
        }
        for (t, rate) in &self.sampling {
            check_label_part("config.sampling", t)?;
            if !(0.0..=1.0).contains(rate) || rate.is_nan() {
                return Err(format!("config.sampling.{t}: {rate} is not between 0.0 and 1.0"));
            }
        }
        for p in &self.elide_processes {
            if p.is_empty() || p.len() > 255 || p.contains('/') {
                return Err(format!("config.elide_processes: `{p}` must be an executable base name (no `/`)"));
            }
        }
        if let Some(ms) = self.heartbeat_interval_ms
            && !(1_000..=300_000).contains(&ms)
        {
            return Err(format!("config.heartbeat_interval_ms: {ms} is not between 1000 and 300000"));
        }
        Ok(())
    }
}

/// What a command asks of a sensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Collect at this level.
    SetLevel {
        /// The level.
        level: ObserveLevel,
    },
    /// Apply this configuration document.
    ApplyConfig {
        /// The document.
        config: SensorSettings,
    },
    /// Renew the certificate now: new key, CSR on the control stream, new certificate.
    RenewCertificate {},
}

impl Action {
    /// The command's name as on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Self::SetLevel { .. } => "set_level",
            Self::ApplyConfig { .. } => "apply_config",
            Self::RenewCertificate {} => "renew_certificate",
        }
    }
}

/// Engine → sensor (COMMAND): do something, then answer with a [`CommandResult`] of the same id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// Command id (unique per engine).
    pub id: String,
    /// What to do.
    #[serde(flatten)]
    pub action: Action,
}

/// Sensor → engine (COMMAND_RESULT): the outcome of a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandResult {
    /// The command's id.
    pub id: String,
    /// Whether it was applied.
    pub ok: bool,
    /// What happened (why not, when `ok` is false).
    #[serde(default)]
    pub message: String,
}

/// Sensor → engine (CSR, control stream): renew this sensor's certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateRequest {
    /// PKCS#10 CSR, PEM; subject CN must be the sensor's id.
    pub csr: String,
}

/// Engine → sensor (CERTIFICATE, control stream or enrollment): the sensor's new certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertificateIssued {
    /// Sensor id (certificate CN).
    pub sensor_id: String,
    /// Tenant (certificate OU).
    pub tenant: String,
    /// The certificate, PEM.
    pub certificate: String,
    /// The fleet CA certificate, PEM.
    pub ca: String,
    /// End of validity, RFC 3339.
    pub not_after: String,
    /// Labels the sensor was registered with (enrollment).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Sensor → engine (ENROLL, on the enrollment ALPN): a one-time token and a CSR.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enroll {
    /// Enrollment token (`vde_…`).
    pub token: String,
    /// PKCS#10 CSR, PEM; subject CN = the sensor id it asks for. An OU, if present, must equal
    /// the token's tenant (the token decides the tenant).
    pub csr: String,
    /// Sensor software version.
    #[serde(default)]
    pub sensor_version: Option<String>,
    /// Host name.
    #[serde(default)]
    pub host: Option<String>,
}

/// Checks one part of a label (key or value) or a table name in a config: 1–63 of
/// `A-Z a-z 0-9 . _ - /`, starting with a letter or digit.
fn check_label_part(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 63 {
        return Err(format!("{what}: `{}` must be 1 to 63 characters", s.escape_default()));
    }
    if !s.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(format!("{what}: `{}` must start with a letter or a digit", s.escape_default()));
    }
    if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || "._-/".contains(*c))) {
        return Err(format!("{what}: `{}` contains `{}`", s.escape_default(), c.escape_default()));
    }
    Ok(())
}

/// Parses labels or a label selector: `k=v` pairs separated by commas (`env=prod,role=db`).
/// Keys and values are 1–63 of `A-Z a-z 0-9 . _ - /`, starting with a letter or digit.
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| format!("label `{pair}` must be key=value"))?;
        let (k, v) = (k.trim(), v.trim());
        check_label_part("label key", k)?;
        check_label_part("label value", v)?;
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(format!("label `{k}` is given twice"));
        }
    }
    Ok(out)
}

/// Whether `labels` carry every `k=v` of `selector` (an empty selector matches everything).
pub fn selector_matches(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// What a sensor sends, from its level and applied configuration.
#[derive(Debug, Clone, Default)]
pub struct SendPolicy {
    /// Level in force.
    pub level: ObserveLevel,
    /// Configuration in force.
    pub settings: Option<SensorSettings>,
    counters: BTreeMap<String, u64>,
}

impl SendPolicy {
    /// A policy at `level` with `settings`.
    pub fn new(level: ObserveLevel, settings: Option<SensorSettings>) -> Self {
        Self { level, settings, counters: BTreeMap::new() }
    }

    /// Whether a row of `table` (for process events, with executable `exe`) is sent.
    /// Sampling is deterministic per table: a rate of 0.25 keeps rows 4, 8, 12, …
    pub fn admit(&mut self, table: &str, exe: Option<&str>) -> bool {
        let Some(s) = &self.settings else { return true };
        if s.tables.as_ref().is_some_and(|t| !t.iter().any(|t| t == table)) {
            return false;
        }
        if let Some(exe) = exe {
            let base = exe.rsplit('/').next().unwrap_or(exe);
            if s.elide_processes.iter().any(|p| p == base) {
                return false;
            }
        }
        let Some(rate) = s.sampling.get(table).copied() else { return true };
        let n = self.counters.entry(table.to_string()).or_default();
        *n += 1;
        // Keep row n when floor(n·rate) steps up.
        ((*n as f64) * rate).floor() > (((*n - 1) as f64) * rate).floor()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_have_a_stable_wire_shape() {
        let c = Command { id: "c1".into(), action: Action::SetLevel { level: ObserveLevel::Minimal } };
        let j = serde_json::to_value(&c).unwrap();
        assert_eq!(j, serde_json::json!({"id": "c1", "command": "set_level", "level": "minimal"}));
        assert_eq!(serde_json::from_value::<Command>(j).unwrap(), c);
        let r: Command = serde_json::from_str(r#"{"id":"c2","command":"renew_certificate"}"#).unwrap();
        assert_eq!(r.action, Action::RenewCertificate {});
        let bad = serde_json::from_str::<Command>(r#"{"id":"c3","command":"set_level","level":"loud"}"#);
        assert!(bad.unwrap_err().to_string().contains("loud"));
    }

    #[test]
    fn config_documents_are_checked_field_by_field() {
        let ok: SensorSettings =
            serde_json::from_str(r#"{"version":2,"tables":["auth_events"],"sampling":{"process_events":0.5}}"#)
                .unwrap();
        ok.validate().unwrap();
        let bad = |j: &str| serde_json::from_str::<SensorSettings>(j).unwrap().validate().unwrap_err();
        assert!(bad(r#"{"version":0}"#).contains("config.version"));
        assert!(bad(r#"{"version":1,"sampling":{"t":1.5}}"#).contains("config.sampling.t"));
        assert!(bad(r#"{"version":1,"elide_processes":["/usr/bin/x"]}"#).contains("elide_processes"));
        assert!(bad(r#"{"version":1,"heartbeat_interval_ms":5}"#).contains("heartbeat_interval_ms"));
        assert!(bad(r#"{"version":1,"tables":["../x"]}"#).contains("config.tables"));
        let unknown = serde_json::from_str::<SensorSettings>(r#"{"version":1,"tabels":[]}"#).unwrap_err();
        assert!(unknown.to_string().contains("tabels"), "{unknown}");
    }

    #[test]
    fn labels_and_selectors() {
        let l = parse_labels("env=prod, role=db").unwrap();
        assert_eq!(l.len(), 2);
        assert!(selector_matches(&parse_labels("env=prod").unwrap(), &l));
        assert!(!selector_matches(&parse_labels("env=dev").unwrap(), &l));
        assert!(selector_matches(&BTreeMap::new(), &l));
        assert!(parse_labels("env").unwrap_err().contains("key=value"));
        assert!(parse_labels("env=a,env=b").unwrap_err().contains("twice"));
        assert!(parse_labels("e nv=a").unwrap_err().contains("label key"));
    }

    #[test]
    fn send_policy_filters_tables_processes_and_samples() {
        let settings = SensorSettings {
            version: 1,
            tables: Some(vec!["process_events".into(), "auth_events".into()]),
            sampling: [("auth_events".to_string(), 0.25)].into(),
            elide_processes: vec!["chrome".into()],
            heartbeat_interval_ms: None,
        };
        let mut p = SendPolicy::new(ObserveLevel::Standard, Some(settings));
        assert!(!p.admit("file_events", None));
        assert!(!p.admit("process_events", Some("/opt/google/chrome")));
        assert!(p.admit("process_events", Some("/usr/bin/bash")));
        let kept = (0..100).filter(|_| p.admit("auth_events", None)).count();
        assert_eq!(kept, 25);
        assert!(SendPolicy::default().admit("anything", None));
    }

    #[test]
    fn levels_parse_and_order() {
        assert_eq!("verbose".parse::<ObserveLevel>().unwrap(), ObserveLevel::Verbose);
        assert!("loud".parse::<ObserveLevel>().unwrap_err().contains("minimal, standard, verbose"));
        assert_eq!(ObserveLevel::Minimal.proc_poll_ms(), None);
    }
}

/// One pack of an upstream's applied rule set (RULES).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncedPack {
    /// Pack name.
    pub name: String,
    /// Pack version.
    pub version: u32,
    /// The pack's YAML text; `None` for the built-in pack (the edge uses its own copy).
    #[serde(default)]
    pub yaml: Option<String>,
    /// The pack's signature file (`name.yaml.sig`), if the upstream has one.
    #[serde(default)]
    pub signature: Option<String>,
}

/// Upstream → edge: the upstream's applied rule set (RULES), sent after WELCOME and after
/// every apply on the upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSet {
    /// The packs, built-in included when the upstream runs it.
    pub packs: Vec<SyncedPack>,
}

/// Edge → upstream: the packs the edge runs after a RULES (RULES_APPLIED), and why it refused
/// the set if it did (it then keeps running its previous set).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesApplied {
    /// `(name, version)` of every pack running on the edge.
    pub packs: Vec<(String, u32)>,
    /// Why the set was refused (bad signature, a rule that does not compile here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
