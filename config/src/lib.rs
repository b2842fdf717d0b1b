//! vedette configuration: typed, documented, validated with key paths. Pure: no I/O.
//!
//! [`Config::from_toml_str`] parses a whole file and reports *every* problem it finds, each
//! named by its key path (`sinks[1].path`), so an operator fixes them in one pass.
#![warn(missing_docs)]

pub mod bytes;
pub mod duration;
mod paths;
pub mod reload;
pub mod sinks;

pub use sinks::{Connector, FileSinkConfig, Format, OverflowPolicy, Route, SinkCommon, SinkConfig};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Name of the internal sink that feeds the alert history (reserved: no configured sink may
/// use it).
pub const HISTORY_SINK: &str = "history";

/// The configuration `vedette serve` uses when no `--config` is given.
pub const EMBEDDED_DEFAULT: &str = include_str!("default.toml");

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path, e.g. `ingest.listen` or `sinks[0].type`; empty for whole-file syntax errors.
    pub path: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() { write!(f, "{}", self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

/// The one error type of this crate.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file has problems; fix each one (all are listed).
    #[error("invalid configuration ({} problem{}):\n{}", .0.len(), if .0.len() == 1 { "" } else { "s" },
        .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// The individual problems.
    pub fn problems(&self) -> &[Problem] {
        match self {
            Self::Invalid(p) => p,
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory for the CA, certificates, sled state and file sinks. Created on start.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// QUIC listener for sensors.
    #[serde(default)]
    pub ingest: IngestConfig,
    /// HTTP API (health, metrics).
    #[serde(default)]
    pub api: ApiConfig,
    /// Batching between ingest and rules.
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// Where rules come from.
    #[serde(default)]
    pub rules: RulesConfig,
    /// Extra telemetry tables beyond the built-in ones.
    #[serde(default)]
    pub tables: Vec<TableConfig>,
    /// Reference tables (IOC lists, allow-lists …) loaded from files, usable in rules.
    #[serde(default)]
    pub reference_tables: Vec<ReferenceTableConfig>,
    /// Where alerts go. Empty means: stdout plus `<data_dir>/alerts.jsonl`.
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
    /// What happens to alerts between the rules and the sinks.
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// The local alert history behind `/api/v1/alerts`.
    #[serde(default)]
    pub history: HistoryConfig,
    /// Sensor fleet: silence detection, certificates issued by enrollment and renewal.
    #[serde(default)]
    pub fleet: FleetConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./vedette-data")
}

/// QUIC ingest settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// UDP address the QUIC endpoint binds.
    #[serde(default = "default_ingest_listen")]
    pub listen: SocketAddr,
    /// Largest frame (type byte + body) accepted, in bytes.
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: u32,
    /// Largest number of rows one data frame may carry.
    #[serde(default = "default_max_frame_rows")]
    pub max_frame_rows: u32,
    /// Bytes a sensor may have sent that the engine has not read yet (QUIC flow control, per
    /// connection): bounds the memory a fleet's in-flight data takes, and a sensor's rate to
    /// about this much per round trip.
    #[serde(default = "default_receive_window")]
    pub receive_window_bytes: u32,
    /// Interval sensors are asked to send heartbeats at.
    #[serde(default = "default_heartbeat", with = "duration")]
    pub heartbeat_interval: Duration,
    /// A connection silent for this long is closed (QUIC idle timeout).
    #[serde(default = "default_idle_timeout", with = "duration")]
    pub idle_timeout: Duration,
    /// Fleet CA certificate (PEM). Default: `<data_dir>/ca/ca.pem`, generated on first start.
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    /// Engine server certificate (PEM). Default: generated under `<data_dir>/ca/`.
    #[serde(default)]
    pub server_cert: Option<PathBuf>,
    /// Engine server private key (PEM). Must be set together with `server_cert`.
    #[serde(default)]
    pub server_key: Option<PathBuf>,
}

fn default_ingest_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7700))
}
fn default_max_frame_bytes() -> u32 {
    4 * 1024 * 1024
}
fn default_max_frame_rows() -> u32 {
    65_536
}
/// 32 KiB: measured best at full load with 1,000 sensors (docs/benchmarks.md).
fn default_receive_window() -> u32 {
    32 * 1024
}
fn default_heartbeat() -> Duration {
    Duration::from_secs(5)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(30)
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            listen: default_ingest_listen(),
            max_frame_bytes: default_max_frame_bytes(),
            max_frame_rows: default_max_frame_rows(),
            receive_window_bytes: default_receive_window(),
            heartbeat_interval: default_heartbeat(),
            idle_timeout: default_idle_timeout(),
            ca_cert: None,
            server_cert: None,
            server_key: None,
        }
    }
}

/// HTTP API settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// TCP address the HTTP server binds.
    #[serde(default = "default_api_listen")]
    pub listen: SocketAddr,
    /// Certificate chain (PEM) for HTTPS. With `tls_key`, the API speaks HTTPS only.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) for HTTPS; set together with `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address. Bearer tokens then cross the network in
    /// clear text: only behind a TLS-terminating proxy on the same host.
    #[serde(default)]
    pub insecure_http: bool,
    /// Who may read `/health/ready` and `/metrics` without a token: `loopback` (clients on
    /// 127.0.0.0/8 or ::1), `always`, or `never` (then a viewer token is required).
    #[serde(default)]
    pub open_status: OpenStatus,
    /// Requests per second each token may make (token bucket); beyond it, 429 with
    /// `Retry-After`.
    #[serde(default = "default_rate_per_sec")]
    pub rate_limit_per_sec: u32,
    /// Burst size of each token's bucket.
    #[serde(default = "default_rate_burst")]
    pub rate_limit_burst: u32,
    /// Largest request body on routes that take JSON (413 beyond). Reference table uploads
    /// have their own bound, `max_upload_bytes`.
    #[serde(default = "default_max_body", with = "crate::bytes")]
    pub max_body_bytes: u64,
    /// Largest reference table upload (`PUT /api/v1/reference/{name}`).
    #[serde(default = "default_max_upload", with = "crate::bytes")]
    pub max_upload_bytes: u64,
}

/// Which clients may read the status routes without a token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpenStatus {
    /// Clients connecting from a loopback address.
    #[default]
    Loopback,
    /// Every client.
    Always,
    /// Nobody: a token with role `viewer` or higher is required.
    Never,
}

fn default_api_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7780))
}
fn default_rate_per_sec() -> u32 {
    100
}
fn default_rate_burst() -> u32 {
    400
}
fn default_max_body() -> u64 {
    1 << 20
}
fn default_max_upload() -> u64 {
    256 << 20
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: default_api_listen(),
            tls_cert: None,
            tls_key: None,
            insecure_http: false,
            open_status: OpenStatus::default(),
            rate_limit_per_sec: default_rate_per_sec(),
            rate_limit_burst: default_rate_burst(),
            max_body_bytes: default_max_body(),
            max_upload_bytes: default_max_upload(),
        }
    }
}

impl ApiConfig {
    /// Whether the API speaks HTTPS.
    pub fn tls(&self) -> bool {
        self.tls_cert.is_some() && self.tls_key.is_some()
    }
}

/// The local alert history: every alert is kept (fed from its own spool) and can be queried,
/// exported and streamed through the API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// Alerts older than this (by `detected_at`) are deleted.
    #[serde(default = "default_history_age", with = "crate::duration")]
    pub max_age: Duration,
    /// When the stored alerts exceed this many bytes, the oldest are deleted.
    #[serde(default = "default_history_bytes", with = "crate::bytes")]
    pub max_bytes: u64,
    /// Bound of the history's own spool (alerts waiting to be written into the history).
    #[serde(default = "default_history_spool", with = "crate::bytes")]
    pub spool_max_bytes: u64,
    /// A live-stream client that reads nothing for this long is cut off with a final
    /// `cutoff` event saying where to resume.
    #[serde(default = "default_stream_stall", with = "crate::duration")]
    pub stream_stall_timeout: Duration,
}

fn default_history_age() -> Duration {
    Duration::from_secs(30 * 86_400)
}
fn default_history_bytes() -> u64 {
    4 << 30
}
fn default_history_spool() -> u64 {
    256 << 20
}
fn default_stream_stall() -> Duration {
    Duration::from_secs(15)
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            max_age: default_history_age(),
            max_bytes: default_history_bytes(),
            spool_max_bytes: default_history_spool(),
            stream_stall_timeout: default_stream_stall(),
        }
    }
}

/// Sensor fleet settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// A sensor not heard from for this long raises `vedette.sensor_silent`. Default: three
    /// heartbeat intervals.
    #[serde(default, with = "crate::duration::option")]
    pub silent_after: Option<Duration>,
    /// Days a certificate issued by enrollment or renewal is valid.
    #[serde(default = "default_cert_days")]
    pub cert_days: u32,
    /// A connected sensor renews its certificate when less than this much validity is left.
    #[serde(default = "default_renew_before", with = "crate::duration")]
    pub renew_before: Duration,
    /// Fleet CA private key (PEM) used to sign enrollments and renewals when `ingest.ca_cert`
    /// is set. Without it such an engine neither enrolls nor renews (the development CA's key
    /// is used otherwise).
    #[serde(default)]
    pub ca_key: Option<PathBuf>,
}

fn default_cert_days() -> u32 {
    30
}
fn default_renew_before() -> Duration {
    Duration::from_secs(10 * 86_400)
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self { silent_after: None, cert_days: default_cert_days(), renew_before: default_renew_before(), ca_key: None }
    }
}

impl Config {
    /// When a sensor counts as silent: `fleet.silent_after`, else three heartbeat intervals.
    pub fn silent_after(&self) -> Duration {
        self.fleet.silent_after.unwrap_or(self.ingest.heartbeat_interval * 3)
    }
}

/// Batching and queueing between ingest and the rule workers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// A table's batch is flushed to the rules once it holds this many rows.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// …or once its oldest row has waited this long.
    #[serde(default = "default_linger", with = "duration")]
    pub batch_linger: Duration,
    /// Frames that may be in flight (received, not yet durable) per table; when reached,
    /// sessions stop reading and QUIC flow control slows the sensors.
    #[serde(default = "default_inflight")]
    pub max_inflight_frames: usize,
}

fn default_batch_rows() -> usize {
    8192
}
fn default_linger() -> Duration {
    Duration::from_millis(100)
}
fn default_inflight() -> usize {
    256
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            batch_rows: default_batch_rows(),
            batch_linger: default_linger(),
            max_inflight_frames: default_inflight(),
        }
    }
}

/// Rule sources.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// Load the built-in Linux detection pack.
    #[serde(default = "yes")]
    pub builtin: bool,
    /// Directory of rule pack files (`*.yaml`, each with a `*.yaml.sig` beside it) loaded at start.
    #[serde(default)]
    pub packs_dir: Option<PathBuf>,
    /// Public key files (`ed25519 <base64>`, from `vedette keys generate`) trusted to sign packs.
    #[serde(default)]
    pub trusted_keys: Vec<PathBuf>,
    /// Load packs that are unsigned or badly signed (logged as warnings). Development only.
    #[serde(default)]
    pub allow_unsigned: bool,
    /// Tasks evaluating one batch's stateless rules at once; 0 = one per core.
    #[serde(default)]
    pub eval_threads: usize,
    /// Windowed rules: a row stamped further ahead of the engine's clock never advances its
    /// sensor's time; `0` = unbounded.
    #[serde(default = "default_max_clock_ahead", with = "crate::duration")]
    pub max_clock_ahead: Duration,
    /// Windowed rules: a sensor further behind the engine's clock counts as only this far
    /// behind; `0` = unbounded (replaying old data).
    #[serde(default = "default_max_clock_behind", with = "crate::duration")]
    pub max_clock_behind: Duration,
    /// Run the rule set of the upstream this engine forwards to (its `forward` sink): packs
    /// arrive over the forward connection, are verified against `trusted_keys` and applied
    /// atomically; `packs_dir`, `rules apply` and SIGHUP no longer change the rules.
    #[serde(default)]
    pub follow_upstream: bool,
}

fn yes() -> bool {
    true
}

fn default_max_clock_ahead() -> Duration {
    Duration::from_secs(30)
}

fn default_max_clock_behind() -> Duration {
    Duration::from_secs(600)
}

impl RulesConfig {
    /// The clock-skew bounds (ahead, behind), `None` when unbounded.
    pub fn clock_skew(&self) -> (Option<Duration>, Option<Duration>) {
        let bound = |d: Duration| (!d.is_zero()).then_some(d);
        (bound(self.max_clock_ahead), bound(self.max_clock_behind))
    }
}

impl Default for RulesConfig {
    fn default() -> Self {
        Self {
            builtin: true,
            packs_dir: None,
            trusted_keys: Vec::new(),
            allow_unsigned: false,
            eval_threads: 0,
            max_clock_ahead: default_max_clock_ahead(),
            max_clock_behind: default_max_clock_behind(),
            follow_upstream: false,
        }
    }
}

/// An operator-declared telemetry table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// Table name (lowercase letters, digits, `_`).
    pub name: String,
    /// Columns beyond `ts`, `sensor_id`, `tenant`, `host`: name → type
    /// (`string`, `int64`, `float64`, `boolean`, `timestamp`).
    pub columns: BTreeMap<String, String>,
}

/// A reference table: rows loaded from a CSV or JSON file that rules can join or use in
/// `IN (SELECT …)`. Reloaded without restart (`vedette reference reload`, SIGHUP).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceTableConfig {
    /// Table name as rules use it (lowercase letters, digits, `_`; not a telemetry table).
    pub name: String,
    /// File path; relative paths are inside `data_dir`.
    pub path: PathBuf,
    /// `csv` (with a header line) or `json` (one object per line, or one array); default from
    /// the file extension.
    #[serde(default)]
    pub format: Option<String>,
    /// Columns: name → type (`string`, `int64`, `float64`, `boolean`, `timestamp`). CSV files
    /// must have every column in their header; JSON rows may omit some (NULL).
    pub columns: BTreeMap<String, String>,
    /// Refuse files with more rows than this (protects memory).
    #[serde(default = "default_reference_max_rows")]
    pub max_rows: usize,
}

fn default_reference_max_rows() -> usize {
    1_000_000
}

impl ReferenceTableConfig {
    /// `csv` or `json`, from `format` or the file extension.
    pub fn effective_format(&self) -> Option<&str> {
        match self.format.as_deref() {
            Some(f) => Some(f),
            None => match self.path.extension().and_then(|e| e.to_str()) {
                Some("csv") => Some("csv"),
                Some("json" | "jsonl" | "ndjson") => Some("json"),
                _ => None,
            },
        }
    }
}

/// Alert handling between the rules and the sinks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Alert-storm guard: at most this many alerts per rule and tenant per `storm_interval`;
    /// the excess is folded into one summary alert (`vedette.alert_storm`) with the count.
    /// 0 turns the guard off.
    #[serde(default = "default_storm_max")]
    pub storm_max_per_rule: u32,
    /// The guard's interval.
    #[serde(default = "default_storm_interval", with = "crate::duration")]
    pub storm_interval: Duration,
    /// How long the dedup ledger remembers an alert id: the same id produced again within
    /// this time (a replay, a second routing path, another node) is dropped before any spool.
    /// `0s` turns the ledger off.
    #[serde(default = "default_dedup_ttl", with = "crate::duration")]
    pub dedup_ttl: Duration,
    /// Most ids the dedup ledger keeps; past it the oldest are forgotten first (trimmed once a
    /// second).
    #[serde(default = "default_dedup_max")]
    pub dedup_max_entries: u64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            storm_max_per_rule: default_storm_max(),
            storm_interval: default_storm_interval(),
            dedup_ttl: default_dedup_ttl(),
            dedup_max_entries: default_dedup_max(),
        }
    }
}

fn default_dedup_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_dedup_max() -> u64 {
    10_000_000
}

fn default_storm_max() -> u32 {
    1000
}

fn default_storm_interval() -> Duration {
    Duration::from_secs(60)
}

/// Log output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `pretty` or `json`.
    #[serde(default = "default_log_format")]
    pub format: String,
    /// Filter directive, e.g. `info` or `vedette=debug,info`. `RUST_LOG` wins when set.
    #[serde(default = "default_log_level")]
    pub level: String,
}

fn default_log_format() -> String {
    "pretty".into()
}
fn default_log_level() -> String {
    "info".into()
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: default_log_format(), level: default_log_level() }
    }
}

impl Config {
    /// The embedded default configuration.
    pub fn embedded_default() -> Self {
        Self::from_toml_str(EMBEDDED_DEFAULT).expect("the embedded default config is valid")
    }

    /// Parses and validates a TOML document, listing every problem with its key path.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        Self::from_toml_with_env(text, std::iter::empty::<(String, String)>())
    }

    /// Like [`Config::from_toml_str`], then applies `VEDETTE__SECTION__KEY=value` overrides
    /// (values are read as TOML when they parse, else as strings).
    pub fn from_toml_with_env<I, K, V>(text: &str, env: I) -> Result<Self>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        match Self::parse_all(text, env) {
            (Some(c), problems) if problems.is_empty() => Ok(c),
            (_, problems) => Err(ConfigError::Invalid(problems)),
        }
    }

    /// Every problem of a config (with overrides), plus the config itself whenever it could be
    /// built: a key that failed is at its default, so checks that need the whole config (the
    /// files it names) can still run on the rest and report in the same pass.
    pub fn parse_all<I, K, V>(text: &str, env: I) -> (Option<Self>, Vec<Problem>)
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut table: toml::Table = match text.parse() {
            Ok(t) => t,
            Err(e) => {
                let e: toml::de::Error = e;
                return (None, vec![Problem { path: String::new(), message: e.to_string() }]);
            }
        };
        let mut problems = Vec::new();
        apply_env(&mut table, env, &mut problems);
        let config = deserialize_sections(table, &mut problems);
        if let Some(c) = &config {
            c.validate(&mut problems);
        }
        (config, problems)
    }

    fn validate(&self, problems: &mut Vec<Problem>) {
        let mut push = |path: String, message: String| problems.push(Problem { path, message });
        if self.ingest.max_frame_bytes < 1024 {
            push("ingest.max_frame_bytes".into(), "must be at least 1024".into());
        }
        if self.ingest.max_frame_rows == 0 {
            push("ingest.max_frame_rows".into(), "must be at least 1".into());
        }
        if !(4096..=64 << 20).contains(&self.ingest.receive_window_bytes) {
            push("ingest.receive_window_bytes".into(), "must be from 4096 to 67108864 (64 MiB)".into());
        }
        if self.ingest.server_cert.is_some() != self.ingest.server_key.is_some() {
            push("ingest.server_key".into(), "`server_cert` and `server_key` must be set together".into());
        }
        if self.ingest.heartbeat_interval.is_zero() {
            push("ingest.heartbeat_interval".into(), "must be longer than 0".into());
        }
        if self.ingest.idle_timeout <= self.ingest.heartbeat_interval {
            push("ingest.idle_timeout".into(), "must be longer than `heartbeat_interval`".into());
        }
        if self.pipeline.batch_rows == 0 {
            push("pipeline.batch_rows".into(), "must be at least 1".into());
        }
        if self.pipeline.max_inflight_frames == 0 {
            push("pipeline.max_inflight_frames".into(), "must be at least 1".into());
        }
        self.validate_api(&mut push);
        if self.history.max_age.is_zero() {
            push("history.max_age".into(), "must be longer than 0".into());
        }
        if self.history.max_bytes < (1 << 20) {
            push("history.max_bytes".into(), "must be at least 1MiB".into());
        }
        if self.fleet.silent_after.is_some_and(|s| s < self.ingest.heartbeat_interval) {
            push("fleet.silent_after".into(), "must be at least `ingest.heartbeat_interval`".into());
        }
        if !(1..=3650).contains(&self.fleet.cert_days) {
            push("fleet.cert_days".into(), "must be between 1 and 3650".into());
        }
        if self.fleet.renew_before.as_secs() >= u64::from(self.fleet.cert_days) * 86_400 {
            push("fleet.renew_before".into(), "must be shorter than `cert_days`".into());
        }
        if self.history.stream_stall_timeout.is_zero() {
            push("history.stream_stall_timeout".into(), "must be longer than 0".into());
        }
        if !self.alerts.dedup_ttl.is_zero() && self.alerts.dedup_max_entries == 0 {
            push("alerts.dedup_max_entries".into(), "must be at least 1 (or set `dedup_ttl = \"0s\"`)".into());
        }
        if !["pretty", "json"].contains(&self.log.format.as_str()) {
            push("log.format".into(), format!("`{}` is not one of: pretty, json", self.log.format));
        }
        let mut names = BTreeMap::new();
        for (i, sink) in self.sinks.iter().enumerate() {
            if sink.name().is_empty() {
                push(format!("sinks[{i}].name"), "must not be empty".into());
            } else if sink.name() == HISTORY_SINK {
                push(format!("sinks[{i}].name"), format!("`{HISTORY_SINK}` is reserved for the alert history"));
            } else if let Some(first) = names.insert(sink.name().to_string(), i) {
                push(format!("sinks[{i}].name"), format!("`{}` is already used by sinks[{first}]", sink.name()));
            }
            for (key, message) in sink.problems() {
                push(format!("sinks[{i}].{key}"), message);
            }
        }
        let forwards = self.sinks.iter().filter(|s| matches!(s.connector, Connector::Forward(_))).count();
        if self.rules.follow_upstream && forwards == 0 {
            push("rules.follow_upstream".into(), "needs a sink of type `forward` (the upstream to follow)".into());
        }
        if forwards > 1 {
            push("sinks".into(), "at most one sink may be of type `forward` (one upstream)".into());
        }
        for (i, sink) in self.sinks.iter().enumerate() {
            if sink.common.route != sinks::Route::Direct && forwards == 0 {
                push(
                    format!("sinks[{i}].route"),
                    "`proxy` and `hybrid` need a sink of type `forward` (the upstream)".into(),
                );
            }
        }
        let column_types = |base: String, columns: &BTreeMap<String, String>, push: &mut dyn FnMut(String, String)| {
            for (col, ty) in columns {
                if !["string", "int64", "float64", "boolean", "timestamp"].contains(&ty.as_str()) {
                    push(
                        format!("{base}.columns.{col}"),
                        format!("`{ty}` is not one of: string, int64, float64, boolean, timestamp"),
                    );
                }
            }
        };
        for (i, t) in self.tables.iter().enumerate() {
            column_types(format!("tables[{i}]"), &t.columns, &mut push);
        }
        let mut ref_names = BTreeMap::new();
        for (i, r) in self.reference_tables.iter().enumerate() {
            let base = format!("reference_tables[{i}]");
            column_types(base.clone(), &r.columns, &mut push);
            if r.name.is_empty() || !r.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
                push(format!("{base}.name"), format!("`{}`: use lowercase letters, digits and `_`", r.name));
            } else if let Some(first) = ref_names.insert(r.name.clone(), i) {
                push(format!("{base}.name"), format!("`{}` is already used by reference_tables[{first}]", r.name));
            } else if self.tables.iter().any(|t| t.name == r.name) {
                push(format!("{base}.name"), format!("`{}` is already a telemetry table", r.name));
            }
            if r.columns.is_empty() {
                push(format!("{base}.columns"), "declare at least one column".into());
            }
            match r.effective_format() {
                Some("csv" | "json") => {}
                Some(other) => push(format!("{base}.format"), format!("`{other}` is not one of: csv, json")),
                None => push(
                    format!("{base}.format"),
                    format!(
                        "cannot tell the format of {} from its extension; set `format` (csv or json)",
                        r.path.display()
                    ),
                ),
            }
            if r.max_rows == 0 {
                push(format!("{base}.max_rows"), "must be at least 1".into());
            }
        }
    }

    fn validate_api(&self, push: &mut impl FnMut(String, String)) {
        let api = &self.api;
        if api.tls_cert.is_some() != api.tls_key.is_some() {
            push("api.tls_key".into(), "`tls_cert` and `tls_key` must be set together".into());
        }
        if !api.listen.ip().is_loopback() && !api.tls() && !api.insecure_http {
            push(
                "api.listen".into(),
                format!(
                    "{} is not a loopback address: set `api.tls_cert` and `api.tls_key` for HTTPS, or \
                     `api.insecure_http = true` to send bearer tokens in clear text",
                    api.listen
                ),
            );
        }
        if api.rate_limit_per_sec == 0 {
            push("api.rate_limit_per_sec".into(), "must be at least 1".into());
        }
        if api.rate_limit_burst == 0 {
            push("api.rate_limit_burst".into(), "must be at least 1".into());
        }
        if api.max_body_bytes < 1024 {
            push("api.max_body_bytes".into(), "must be at least 1KiB".into());
        }
        if api.max_upload_bytes < 1024 {
            push("api.max_upload_bytes".into(), "must be at least 1KiB".into());
        }
    }

    /// Sinks to use: the configured ones, or stdout + `alerts.jsonl` when none are configured.
    pub fn effective_sinks(&self) -> Vec<SinkConfig> {
        if self.sinks.is_empty() {
            vec![SinkConfig::stdout("stdout"), SinkConfig::file("alerts_file", PathBuf::from("alerts.jsonl"))]
        } else {
            self.sinks.clone()
        }
    }
}

/// `[[sinks]]`: each table's shared keys and connector keys are read separately (serde cannot
/// combine a tagged enum, flattening and unknown-key errors), both reported under `sinks[i]`.
fn sinks(table: &mut toml::Table, problems: &mut Vec<Problem>, ok: &mut bool) -> Vec<SinkConfig> {
    let items = match table.remove("sinks") {
        None => return Vec::new(),
        Some(toml::Value::Array(items)) => items,
        Some(other) => {
            *ok = false;
            problems.push(Problem {
                path: "sinks".into(),
                message: format!("expected an array of tables (`[[sinks]]`), found {}", other.type_str()),
            });
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let base = format!("sinks[{i}]");
        let toml::Value::Table(t) = item else {
            *ok = false;
            problems.push(Problem { path: base, message: "expected a table".into() });
            continue;
        };
        let (common, connector) = SinkConfig::split(t);
        let common = de_value(toml::Value::Table(common), &base, problems);
        let connector = sink_connector(connector, &base, problems);
        match (common, connector) {
            (Some(common), Some(connector)) => out.push(SinkConfig { common, connector }),
            _ => *ok = false,
        }
    }
    out
}

/// The connector of a sink. An internally tagged enum (`type = "…"`) loses the key path of an
/// error inside its variant, so each connector's own settings are deserialized on their own:
/// `sinks[0].max_request_bytes: …` rather than `sinks[0]: …`.
fn sink_connector(table: toml::Table, base: &str, problems: &mut Vec<Problem>) -> Option<Connector> {
    let before = problems.len();
    let connector = sink_connector_settings(table, base, problems);
    // The connector's own keys are only part of what a sink accepts: name the shared ones too
    // (a misspelt `format` must not be answered with a list that lacks `format`).
    for p in &mut problems[before..] {
        if p.message.starts_with("unknown field") && p.message.contains("expected one of") {
            let shared: Vec<String> = sinks::COMMON_KEYS.iter().chain(&["type"]).map(|k| format!("`{k}`")).collect();
            p.message = format!("{}, or a key every sink has: {}", p.message, shared.join(", "));
        }
    }
    connector
}

fn sink_connector_settings(table: toml::Table, base: &str, problems: &mut Vec<Problem>) -> Option<Connector> {
    let kind = table.get("type").and_then(|v| v.as_str()).map(str::to_owned);
    let settings = |mut t: toml::Table| {
        t.remove("type");
        toml::Value::Table(t)
    };
    match kind.as_deref() {
        Some("file") => de_value(settings(table), base, problems).map(Connector::File),
        Some("webhook") => de_value(settings(table), base, problems).map(Connector::Webhook),
        Some("splunk_hec") => de_value(settings(table), base, problems).map(Connector::SplunkHec),
        Some("elasticsearch") => de_value(settings(table), base, problems).map(Connector::Elasticsearch),
        Some("kafka") => de_value(settings(table), base, problems).map(Connector::Kafka),
        Some("forward") => de_value(settings(table), base, problems).map(Connector::Forward),
        // stdout (no settings), a missing or an unknown type: the enum's own errors.
        _ => de_value(toml::Value::Table(table), base, problems),
    }
}

/// Deserializes each top-level key (and each array element) on its own so that one bad
/// section does not hide the problems of the next.
fn deserialize_sections(mut table: toml::Table, problems: &mut Vec<Problem>) -> Option<Config> {
    fn section<T: DeserializeOwned + Default>(
        table: &mut toml::Table,
        key: &str,
        problems: &mut Vec<Problem>,
        ok: &mut bool,
    ) -> T {
        let Some(value) = table.remove(key) else { return T::default() };
        de_value(value, key, problems).unwrap_or_else(|| {
            *ok = false;
            T::default()
        })
    }
    fn list<T: DeserializeOwned>(
        table: &mut toml::Table,
        key: &str,
        problems: &mut Vec<Problem>,
        ok: &mut bool,
    ) -> Vec<T> {
        match table.remove(key) {
            None => Vec::new(),
            Some(toml::Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .filter_map(|(i, v)| {
                    let r = de_value(v, &format!("{key}[{i}]"), problems);
                    *ok &= r.is_some();
                    r
                })
                .collect(),
            Some(other) => {
                *ok = false;
                problems.push(Problem {
                    path: key.into(),
                    message: format!("expected an array of tables (`[[{key}]]`), found {}", other.type_str()),
                });
                Vec::new()
            }
        }
    }
    let mut ok = true;
    let data_dir = match table.remove("data_dir") {
        None => default_data_dir(),
        Some(v) => de_value(v, "data_dir", problems).unwrap_or_else(|| {
            ok = false;
            default_data_dir()
        }),
    };
    let config = Config {
        data_dir,
        ingest: section(&mut table, "ingest", problems, &mut ok),
        api: section(&mut table, "api", problems, &mut ok),
        pipeline: section(&mut table, "pipeline", problems, &mut ok),
        rules: section(&mut table, "rules", problems, &mut ok),
        tables: list(&mut table, "tables", problems, &mut ok),
        reference_tables: list(&mut table, "reference_tables", problems, &mut ok),
        sinks: sinks(&mut table, problems, &mut ok),
        alerts: section(&mut table, "alerts", problems, &mut ok),
        history: section(&mut table, "history", problems, &mut ok),
        fleet: section(&mut table, "fleet", problems, &mut ok),
        log: section(&mut table, "log", problems, &mut ok),
    };
    // Reported, and the rest is still checked: an unknown section changes nothing else.
    for key in table.keys() {
        problems.push(Problem {
            path: key.clone(),
            message: "unknown key (expected one of: data_dir, ingest, api, pipeline, rules, tables, reference_tables, sinks, alerts, history, fleet, log)".into(),
        });
    }
    ok.then_some(config)
}

/// Deserializes `value`, reporting every bad key rather than the first: a key that fails is
/// reported, taken out and the rest read again (the default stands in for it), so a typo in
/// one key hides neither the next one nor the cross-key checks run on the result. `None` when
/// a problem cannot be taken out (a missing required key, a value of the wrong shape).
fn de_value<T: DeserializeOwned>(mut value: toml::Value, base: &str, problems: &mut Vec<Problem>) -> Option<T> {
    let mut removed: Vec<Vec<String>> = Vec::new();
    // Each round removes one key; a table has far fewer bad keys than this.
    for _ in 0..256 {
        match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(v) => return Some(v),
            Err(e) => {
                let segments: Vec<String> = e
                    .path()
                    .iter()
                    .map(|s| match s {
                        serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                        serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                        _ => None,
                    })
                    .collect::<Option<_>>()
                    .unwrap_or_default();
                let inner = e.path().to_string();
                let path = if inner == "." || inner.is_empty() { base.to_string() } else { format!("{base}.{inner}") };
                let message = e.into_inner().to_string();
                // A required key taken out a round ago: already reported as bad, not missing.
                if let Some(field) = message.strip_prefix("missing field `").and_then(|m| m.split('`').next()) {
                    let mut key = segments.clone();
                    key.push(field.to_string());
                    if removed.contains(&key) {
                        return None;
                    }
                }
                // toml appends "in `key`" lines; the path already says where.
                let message =
                    message.lines().filter(|l| !l.starts_with("in `") && !l.trim().is_empty()).collect::<Vec<_>>();
                let problem = Problem { path, message: message.join(" ") };
                let repeated = problems.last() == Some(&problem);
                if !repeated {
                    problems.push(problem);
                }
                if repeated || !remove_path(&mut value, &segments) {
                    return None;
                }
                removed.push(segments);
            }
        }
    }
    None
}

/// Removes the key or element at `path` (keys and array indexes) from `value`.
fn remove_path(value: &mut toml::Value, path: &[String]) -> bool {
    match (value, path) {
        (_, []) => false,
        (toml::Value::Table(t), [last]) => t.remove(last).is_some(),
        (toml::Value::Array(a), [last]) => match last.parse::<usize>() {
            Ok(i) if i < a.len() => {
                a.remove(i);
                true
            }
            _ => false,
        },
        (toml::Value::Table(t), [first, rest @ ..]) => t.get_mut(first).is_some_and(|v| remove_path(v, rest)),
        (toml::Value::Array(a), [first, rest @ ..]) => {
            first.parse::<usize>().ok().and_then(|i| a.get_mut(i)).is_some_and(|v| remove_path(v, rest))
        }
        _ => false,
    }
}

fn apply_env<I, K, V>(table: &mut toml::Table, env: I, problems: &mut Vec<Problem>)
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    for (k, v) in env {
        let Some(rest) = k.as_ref().strip_prefix("VEDETTE__") else { continue };
        let keys: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        let raw = v.as_ref();
        let value = format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.to_string()));
        if !set_path(table, &keys, value) {
            problems.push(Problem {
                path: keys.join("."),
                message: format!("environment override {} does not name a table key", k.as_ref()),
            });
        }
    }
}

/// Sets `keys` (a dotted path) in `table`, creating intermediate tables; false when a parent
/// key holds a non-table value.
fn set_path(table: &mut toml::Table, keys: &[String], value: toml::Value) -> bool {
    match keys {
        [] => false,
        [last] => {
            table.insert(last.clone(), value);
            true
        }
        [first, rest @ ..] => {
            match table.entry(first.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new())) {
                toml::Value::Table(t) => set_path(t, rest, value),
                _ => false,
            }
        }
    }
}

#[cfg(test)]
mod tests;
