//! Sink configuration: settings every sink shares (format, spool, batching, retry, circuit
//! breaker, rate limit) and the connector's own settings, side by side in one `[[sinks]]`
//! table:
//!
//! ```toml
//! [[sinks]]
//! name = "siem"
//! type = "webhook"
//! url = "https://siem.example/alerts"
//! format = "json"
//! spool = { max_bytes = "1GiB", policy = "block" }
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One sink: shared settings plus its connector.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(try_from = "toml::Table")]
pub struct SinkConfig {
    /// Settings every sink has.
    #[serde(flatten)]
    pub common: SinkCommon,
    /// The destination and its own settings (`type = …`).
    #[serde(flatten)]
    pub connector: Connector,
}

/// Keys of a `[[sinks]]` table that belong to [`SinkCommon`]; the others are the connector's.
pub const COMMON_KEYS: &[&str] = &["name", "format", "route", "spool", "batch", "retry", "breaker", "rate_limit"];

impl SinkConfig {
    /// The sink's unique name.
    pub fn name(&self) -> &str {
        &self.common.name
    }

    /// Splits a `[[sinks]]` table into its shared part and its connector part.
    pub fn split(mut table: toml::Table) -> (toml::Table, toml::Table) {
        let mut common = toml::Table::new();
        for k in COMMON_KEYS {
            if let Some(v) = table.remove(*k) {
                common.insert((*k).to_string(), v);
            }
        }
        (common, table)
    }

    /// The encoding in effect (`format`, or the connector's default).
    pub fn format(&self) -> Format {
        self.common.format.unwrap_or(match self.connector {
            Connector::Stdout {} => Format::Text,
            _ => Format::Json,
        })
    }

    /// Problems beyond types: (key below `sinks[i]`, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        let mut push = |k: &str, m: String| out.push((k.to_string(), m));
        let c = &self.common;
        if self.format() == Format::Text && !matches!(self.connector, Connector::Stdout {} | Connector::File(_)) {
            push("format", "`text` is for stdout and file sinks; use json, cef, stix or ocsf".into());
        }
        if c.spool.max_bytes < 64 << 10 {
            push("spool.max_bytes", "must be at least 64KiB".into());
        }
        if c.batch.max_events == 0 {
            push("batch.max_events", "must be at least 1".into());
        }
        if c.batch.max_bytes < 1024 {
            push("batch.max_bytes", "must be at least 1KiB".into());
        }
        if c.retry.base.is_zero() || c.retry.base > c.retry.cap {
            push("retry.base", "must be positive and at most retry.cap".into());
        }
        if c.breaker.failures == 0 {
            push("breaker.failures", "must be at least 1".into());
        }
        if let Some(r) = &c.rate_limit
            && !(r.per_second.is_finite() && r.per_second > 0.0)
        {
            push("rate_limit.per_second", "must be a positive number".into());
        }
        let http_url = |push: &mut dyn FnMut(&str, String), url: &str| {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                push("url", format!("`{url}` is not an http:// or https:// URL"));
            }
        };
        if matches!(self.connector, Connector::Forward(_)) {
            if c.route != Route::Direct {
                push("route", "a forward sink is the route itself: leave `route` out".into());
            }
            if self.format() != Format::Json {
                push("format", "a forward sink sends alerts as json".into());
            }
        }
        match &self.connector {
            Connector::Stdout {} | Connector::File(_) | Connector::History {} => {}
            Connector::Forward(f) => {
                if f.server.parse::<std::net::SocketAddr>().is_err() {
                    push("server", format!("`{}` is not an ip:port address", f.server));
                }
                if f.ack_timeout.is_zero() {
                    push("ack_timeout", "must be longer than 0".into());
                }
            }
            Connector::Webhook(w) => http_url(&mut push, &w.url),
            Connector::SplunkHec(h) => {
                http_url(&mut push, &h.url);
                if h.token.is_empty() {
                    push("token", "must not be empty".into());
                }
                if let Some(ch) = &h.channel
                    && !is_uuid(ch)
                {
                    push("channel", format!("`{ch}` is not a UUID"));
                }
                if h.max_request_bytes < 1024 {
                    push(
                        "max_request_bytes",
                        format!("{} bytes cannot hold an event (at least 1KiB)", h.max_request_bytes),
                    );
                }
            }
            Connector::Elasticsearch(e) => {
                http_url(&mut push, &e.url);
                if e.api_key.is_some() && (e.username.is_some() || e.password.is_some()) {
                    push("api_key", "use either api_key or username/password, not both".into());
                }
                if e.username.is_some() != e.password.is_some() {
                    push("username", "username and password go together".into());
                }
            }
            Connector::Kafka(k) => {
                if k.brokers.trim().is_empty() {
                    push("brokers", "must list at least one host:port".into());
                }
                if k.topic.is_empty() {
                    push("topic", "must not be empty".into());
                }
                if !["alert_id", "rule_id", "sensor_id", "tenant", "none"].contains(&k.key.as_str()) {
                    push("key", format!("`{}`: use alert_id, rule_id, sensor_id, tenant or none", k.key));
                }
                if !["none", "gzip", "snappy", "lz4", "zstd"].contains(&k.compression.as_str()) {
                    push("compression", format!("`{}`: use none, gzip, snappy, lz4 or zstd", k.compression));
                }
                if let Some(m) = &k.sasl_mechanism {
                    if !["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"].contains(&m.as_str()) {
                        push("sasl_mechanism", format!("`{m}`: use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"));
                    }
                    if k.sasl_username.is_none() || k.sasl_password.is_none() {
                        push("sasl_username", "SASL needs sasl_username and sasl_password".into());
                    }
                }
                if k.tls_cert.is_some() != k.tls_key.is_some() {
                    push("tls_cert", "tls_cert and tls_key go together".into());
                }
            }
        }
        out
    }

    /// Stdout sink with defaults (readable lines).
    pub fn stdout(name: &str) -> Self {
        Self { common: SinkCommon::named(name, Format::Text), connector: Connector::Stdout {} }
    }

    /// The internal sink feeding the alert history (JSON, its own spool of `spool_max_bytes`
    /// with `block`: the history never loses an acknowledged alert).
    pub fn history(spool_max_bytes: u64) -> Self {
        let mut common = SinkCommon::named(crate::HISTORY_SINK, Format::Json);
        common.spool.max_bytes = spool_max_bytes;
        common.batch.max_events = 1000;
        common.batch.linger = Duration::from_millis(5);
        Self { common, connector: Connector::History {} }
    }

    /// File sink with defaults (JSON lines, no rotation).
    pub fn file(name: &str, path: PathBuf) -> Self {
        Self {
            common: SinkCommon::named(name, Format::Json),
            connector: Connector::File(FileSinkConfig { path, rotate_bytes: None, keep: default_keep() }),
        }
    }
}

impl TryFrom<toml::Table> for SinkConfig {
    type Error = String;

    fn try_from(table: toml::Table) -> Result<Self, String> {
        let (common, connector) = Self::split(table);
        let common = SinkCommon::deserialize(toml::Value::Table(common)).map_err(|e| e.to_string())?;
        let connector = Connector::deserialize(toml::Value::Table(connector)).map_err(|e| e.to_string())?;
        Ok(Self { common, connector })
    }
}

/// Settings every sink has.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SinkCommon {
    /// Unique sink name (metrics label, spool and dead-letter queue name).
    pub name: String,
    /// Encoding of each alert: `json`, `cef`, `stix`, `ocsf`, or `text` (one readable line;
    /// stdout and file only). Default: `text` for stdout, `json` otherwise.
    #[serde(default)]
    pub format: Option<Format>,
    /// Durable spool between detection and delivery.
    #[serde(default)]
    pub spool: SpoolConfig,
    /// How many alerts go to the destination at once.
    #[serde(default)]
    pub batch: BatchConfig,
    /// Retry of failed deliveries.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Circuit breaker in front of the destination.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// Token-bucket limit on alerts per second sent to the destination (none by default).
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// How alerts reach this destination when the engine forwards to an upstream vedette
    /// (a `forward` sink): `direct` (this node delivers), `proxy` (only the upstream, through
    /// its sink of the same name) or `hybrid` (both; see `docs/delivery.md`).
    #[serde(default)]
    pub route: Route,
}

/// How alerts reach a destination (see [`SinkCommon::route`]).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    /// This node delivers; the upstream does not (the forwarded alert claims the sink).
    #[default]
    Direct,
    /// Only the upstream delivers (this node keeps no spool for the sink).
    Proxy,
    /// This node and the upstream both deliver: destinations that fold repeats by alert id
    /// (Elasticsearch, Kafka keyed by alert id) get it from whichever comes first; the others
    /// are claimed by this node like `direct`.
    Hybrid,
}

impl SinkCommon {
    fn named(name: &str, format: Format) -> Self {
        Self {
            name: name.into(),
            format: Some(format),
            spool: SpoolConfig::default(),
            batch: BatchConfig::default(),
            retry: RetryConfig::default(),
            breaker: BreakerConfig::default(),
            rate_limit: None,
            route: Route::Direct,
        }
    }
}

/// Alert encodings.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// The alert as one JSON object (rule metadata and the result row included).
    Json,
    /// ArcSight Common Event Format, one line per alert.
    Cef,
    /// A STIX 2.1 bundle per alert (indicator, observed-data, SCOs).
    Stix,
    /// OCSF Detection Finding (class 2004).
    Ocsf,
    /// One human-readable line (stdout and file sinks only).
    Text,
}

/// What a full spool does.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum OverflowPolicy {
    /// Wait for room: back-pressure reaches the rule workers, then the sensors (QUIC flow
    /// control). Nothing is lost; ingestion slows while this sink's spool is full.
    #[default]
    Block,
    /// Drop the oldest spooled alerts to make room (counted in
    /// `vedette_sink_dropped_total`, logged, and reported as an internal alert).
    DropOldest,
}

/// Durable spool settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Largest total size of spooled alerts (`256MiB`, `1GiB`, or bytes).
    #[serde(default = "default_spool_bytes", with = "crate::bytes")]
    pub max_bytes: u64,
    /// `block` or `drop_oldest`.
    #[serde(default)]
    pub policy: OverflowPolicy,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self { max_bytes: default_spool_bytes(), policy: OverflowPolicy::default() }
    }
}

fn default_spool_bytes() -> u64 {
    256 << 20
}

/// Batching toward the destination: a batch leaves when it has `max_events` alerts or
/// `max_bytes` bytes, or when its oldest alert has waited `linger`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Most alerts per request.
    #[serde(default = "default_batch_events")]
    pub max_events: usize,
    /// Most encoded bytes per request.
    #[serde(default = "default_batch_bytes", with = "crate::bytes")]
    pub max_bytes: u64,
    /// Longest wait for a batch to fill.
    #[serde(default = "default_linger", with = "crate::duration")]
    pub linger: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self { max_events: default_batch_events(), max_bytes: default_batch_bytes(), linger: default_linger() }
    }
}

fn default_batch_events() -> usize {
    500
}
fn default_batch_bytes() -> u64 {
    1 << 20
}
fn default_linger() -> Duration {
    Duration::from_millis(200)
}

/// Retry with exponential backoff and full jitter: attempt `n` waits a random time in
/// `[0, min(cap, base · 2^n))`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// First backoff bound.
    #[serde(default = "default_retry_base", with = "crate::duration")]
    pub base: Duration,
    /// Largest backoff bound.
    #[serde(default = "default_retry_cap", with = "crate::duration")]
    pub cap: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self { base: default_retry_base(), cap: default_retry_cap() }
    }
}

fn default_retry_base() -> Duration {
    Duration::from_millis(200)
}
fn default_retry_cap() -> Duration {
    Duration::from_secs(30)
}

/// Circuit breaker: after `failures` consecutive failed attempts the sink stops calling the
/// destination for `open_for` (open), then tries one batch (half-open): success closes it,
/// failure opens it again.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    #[serde(default = "default_breaker_failures")]
    pub failures: u32,
    /// How long it stays open before a trial.
    #[serde(default = "default_open_for", with = "crate::duration")]
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self { failures: default_breaker_failures(), open_for: default_open_for() }
    }
}

fn default_breaker_failures() -> u32 {
    5
}
fn default_open_for() -> Duration {
    Duration::from_secs(30)
}

/// Token bucket: `per_second` alerts on average, bursts up to `burst`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained alerts per second.
    pub per_second: f64,
    /// Bucket size (default: one second's worth).
    #[serde(default)]
    pub burst: Option<u32>,
}

/// The destination.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Connector {
    /// Standard output.
    Stdout {},
    /// A local file, appended and fsync'd before alerts count as delivered.
    File(FileSinkConfig),
    /// HTTP POST of each batch, HMAC-signed.
    Webhook(WebhookSinkConfig),
    /// Splunk HTTP Event Collector.
    SplunkHec(HecSinkConfig),
    /// Elasticsearch / OpenSearch `_bulk`.
    Elasticsearch(EsSinkConfig),
    /// Apache Kafka (or any Kafka-protocol broker).
    Kafka(KafkaSinkConfig),
    /// An upstream vedette: alerts over QUIC + mTLS, acknowledged once durable there.
    Forward(ForwardSinkConfig),
    /// The engine's own alert history (`/api/v1/alerts`); added by the engine, never
    /// configured.
    #[serde(skip)]
    History {},
}

impl Connector {
    /// The `type` name.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Stdout {} => "stdout",
            Self::File(_) => "file",
            Self::Webhook(_) => "webhook",
            Self::SplunkHec(_) => "splunk_hec",
            Self::Elasticsearch(_) => "elasticsearch",
            Self::Kafka(_) => "kafka",
            Self::Forward(_) => "forward",
            Self::History {} => "history",
        }
    }
}

/// File sink.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// File path; relative paths are inside `data_dir`.
    pub path: PathBuf,
    /// Rotate when the file would grow beyond this size (`100MiB`); none by default.
    #[serde(default, with = "crate::bytes::option")]
    pub rotate_bytes: Option<u64>,
    /// Rotated files kept (`PATH.1` newest … `PATH.N`).
    #[serde(default = "default_keep")]
    pub keep: u32,
}

fn default_keep() -> u32 {
    5
}

/// Webhook sink.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookSinkConfig {
    /// Endpoint (`http://` or `https://`).
    pub url: String,
    /// Shared secret for the `X-Vedette-Signature` HMAC-SHA256 header (none: unsigned).
    #[serde(default)]
    pub secret: Option<String>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Request timeout.
    #[serde(default = "default_http_timeout", with = "crate::duration")]
    pub timeout: Duration,
    /// Extra CA certificate (PEM) trusted for `https://` (system roots are always trusted).
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
}

fn default_http_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Forward sink: an upstream vedette's ingest (QUIC + mTLS). The certificate must be an edge
/// certificate of the upstream's CA (tenant `vedette-edge`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ForwardSinkConfig {
    /// Upstream ingest address (`ip:port`).
    pub server: String,
    /// Name in the upstream's server certificate.
    #[serde(default = "default_server_name")]
    pub server_name: String,
    /// The upstream's CA certificate (PEM); relative paths are inside the data dir.
    pub ca: PathBuf,
    /// This edge's certificate (PEM).
    pub cert: PathBuf,
    /// This edge's private key (PEM).
    pub key: PathBuf,
    /// Longest wait for the upstream's acknowledgement before the batch is sent again.
    #[serde(default = "default_forward_ack_timeout", with = "crate::duration")]
    pub ack_timeout: Duration,
}

fn default_server_name() -> String {
    "localhost".into()
}

fn default_forward_ack_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Splunk HEC sink.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HecSinkConfig {
    /// Base URL of the collector, e.g. `https://splunk:8088`.
    pub url: String,
    /// HEC token (sent as `Authorization: Splunk <token>`).
    pub token: String,
    /// Target index (the token's default when unset).
    #[serde(default)]
    pub index: Option<String>,
    /// Sourcetype of the events.
    #[serde(default = "default_sourcetype")]
    pub sourcetype: String,
    /// Source of the events.
    #[serde(default = "default_source")]
    pub source: String,
    /// Use indexer acknowledgement: a batch counts as delivered only once `/ack` confirms it.
    #[serde(default)]
    pub ack: bool,
    /// Channel id for acknowledgement (a UUID; generated per sink when unset).
    #[serde(default)]
    pub channel: Option<String>,
    /// Longest wait for an acknowledgement before the batch is sent again.
    #[serde(default = "default_ack_timeout", with = "crate::duration")]
    pub ack_timeout: Duration,
    /// Request timeout.
    #[serde(default = "default_http_timeout", with = "crate::duration")]
    pub timeout: Duration,
    /// Largest request body (HEC's `max_content_length`; 1 MB on Splunk Cloud). A larger batch
    /// goes out as several requests, one after another, whose acknowledgements are awaited
    /// together.
    #[serde(default = "default_hec_request_bytes", with = "crate::bytes")]
    pub max_request_bytes: u64,
}

fn default_hec_request_bytes() -> u64 {
    1_000_000
}

fn default_sourcetype() -> String {
    "vedette:alert".into()
}
fn default_source() -> String {
    "vedette".into()
}
fn default_ack_timeout() -> Duration {
    Duration::from_secs(60)
}

/// Elasticsearch sink.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EsSinkConfig {
    /// Base URL, e.g. `https://es:9200`.
    pub url: String,
    /// Index name; `%Y`, `%m`, `%d` are replaced from the alert's time (UTC).
    #[serde(default = "default_es_index")]
    pub index: String,
    /// Basic auth user.
    #[serde(default)]
    pub username: Option<String>,
    /// Basic auth password.
    #[serde(default)]
    pub password: Option<String>,
    /// API key (`Authorization: ApiKey <key>`), instead of basic auth.
    #[serde(default)]
    pub api_key: Option<String>,
    /// Request timeout.
    #[serde(default = "default_http_timeout", with = "crate::duration")]
    pub timeout: Duration,
}

fn default_es_index() -> String {
    "vedette-alerts-%Y.%m.%d".into()
}

/// Kafka sink.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Bootstrap servers, `host:port,host:port`.
    pub brokers: String,
    /// Topic; `{rule_id}`, `{severity}`, `{tenant}`, `{table}` are replaced per alert.
    pub topic: String,
    /// Message key: `alert_id` (default), `rule_id`, `sensor_id`, `tenant` or `none`.
    #[serde(default = "default_kafka_key")]
    pub key: String,
    /// `none`, `gzip`, `snappy`, `lz4` or `zstd`.
    #[serde(default = "default_compression")]
    pub compression: String,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` (none: no SASL).
    #[serde(default)]
    pub sasl_mechanism: Option<String>,
    /// SASL user.
    #[serde(default)]
    pub sasl_username: Option<String>,
    /// SASL password.
    #[serde(default)]
    pub sasl_password: Option<String>,
    /// Use TLS to the brokers.
    #[serde(default)]
    pub tls: bool,
    /// CA bundle (PEM) to verify the brokers.
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// How long one produce attempt may take before it is retried from the spool.
    #[serde(default = "default_kafka_timeout", with = "crate::duration")]
    pub message_timeout: Duration,
    /// Extra librdkafka properties (e.g. `"linger.ms" = "5"`).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

fn default_kafka_key() -> String {
    "alert_id".into()
}
fn default_compression() -> String {
    "lz4".into()
}
fn default_kafka_timeout() -> Duration {
    Duration::from_secs(30)
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}
