//! Helpers for end-to-end tests: an in-process engine on 127.0.0.1 with a temp data dir,
//! sensor certificates, a raw protocol client and polling with deadlines.

pub mod child;
pub mod receivers;
pub mod relay;
pub mod tcp_relay;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;
use vedette_config::Config;
use vedette_engine::EngineHandle;
use vedette_engine::pki::{self, PkiPaths};
use vedette_engine::sensor::{self, SensorConfig};
use vedette_schemas::frame::{self, Control, Encoding, Hello, PROTOCOL_VERSION};

/// Config for tests: loopback with OS-chosen ports, file sink only, short linger.
pub fn test_config(dir: &std::path::Path) -> Config {
    let text = format!(
        r#"
        data_dir = "{}"
        [ingest]
        listen = "127.0.0.1:0"
        [api]
        listen = "127.0.0.1:0"
        [pipeline]
        batch_linger = "20ms"
        [[sinks]]
        name = "file"
        type = "file"
        path = "alerts.jsonl"
        batch = {{ linger = "1ms" }}
        "#,
        dir.display()
    );
    Config::from_toml_str(&text).expect("test config is valid")
}

/// A running engine and its temp dir.
pub struct TestEngine {
    /// The engine.
    pub engine: EngineHandle,
    /// Keeps the data dir alive.
    pub dir: Arc<TempDir>,
    config: Config,
}

impl TestEngine {
    /// Starts an engine with [`test_config`], tweaked by `f`.
    pub async fn start_with(f: impl FnOnce(&mut Config)) -> Self {
        // `VEDETTE_TEST_LOG=vedette_actors=debug,info` shows the engine's log while debugging a test.
        if let Ok(filter) = std::env::var("VEDETTE_TEST_LOG") {
            let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
        }
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        let mut config = test_config(dir.path());
        f(&mut config);
        let engine = EngineHandle::start(config.clone()).await.expect("engine starts");
        Self { engine, dir, config }
    }

    /// Shuts the engine down gracefully and starts a new one on the same data dir and config
    /// (the ports chosen anew).
    pub async fn restart(self) -> Self {
        let Self { engine, dir, config } = self;
        engine.shutdown().await;
        let engine = EngineHandle::start(config.clone()).await.expect("engine restarts");
        Self { engine, dir, config }
    }

    /// Starts an engine with [`test_config`].
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Data dir.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// The engine's local admin token (fleet-wide).
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("admin.token")).expect("admin.token").trim().to_string()
    }

    /// `method path` on the API with the local admin token.
    pub async fn api(&self, method: &str, path: &str) -> HttpAnswer {
        http_call(self.engine.api_addr, method, path, Some(&self.admin_token()), None).await
    }

    /// Alerts in the file sink once every spooled alert is delivered.
    pub async fn alerts(&self) -> Vec<Value> {
        delivered_alerts(&self.engine, &self.dir.path().join("alerts.jsonl")).await
    }

    /// Sensor config for `sensor_id` (issuing its certificate if needed).
    pub fn sensor(&self, sensor_id: &str, tenant: &str) -> SensorConfig {
        sensor_config(&self.data_dir(), self.engine.ingest_addr, sensor_id, tenant)
    }
}

/// Issues (if missing) a certificate for `sensor_id` and returns a sensor config.
pub fn sensor_config(
    data_dir: &std::path::Path,
    server: std::net::SocketAddr,
    sensor_id: &str,
    tenant: &str,
) -> SensorConfig {
    let paths = PkiPaths::new(data_dir);
    let (cert, key) = paths.sensor(sensor_id);
    if !cert.exists() {
        pki::issue_sensor_files(data_dir, sensor_id, tenant, 30, false, None).expect("issue sensor certificate");
    }
    SensorConfig {
        linger: Duration::from_millis(10),
        ..SensorConfig::new(server, paths.ca_cert, cert, key, "test-host")
    }
}

/// Reads a JSON-lines alert file (missing file = no alerts).
pub fn read_alerts(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("alert lines are JSON"))
        .collect()
}

/// Waits until `engine` delivered everything spooled, then reads the alerts at `path`.
pub async fn delivered_alerts(engine: &EngineHandle, path: &std::path::Path) -> Vec<Value> {
    assert!(engine.wait_delivered(Duration::from_secs(20)).await, "sinks did not deliver within 20 s");
    read_alerts(path)
}

/// Polls `f` until it returns true or `timeout` passes.
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A hello with protocol 1.
pub fn hello(low_seq: u64) -> Hello {
    Hello {
        protocol: PROTOCOL_VERSION,
        sensor_version: "test/1".into(),
        host: Some("raw-host".into()),
        sensor_id: None,
        schemas: Default::default(),
        low_seq,
    }
}

/// A raw protocol client: the tests write exact bytes and read exact control messages.
pub struct RawClient {
    /// The session.
    pub session: sensor::Session,
    /// The client endpoint.
    pub endpoint: quinn::Endpoint,
}

impl RawClient {
    /// Connects and completes HELLO/WELCOME.
    pub async fn connect(cfg: &SensorConfig, low_seq: u64) -> anyhow::Result<Self> {
        let endpoint = sensor::endpoint(cfg)?;
        let session = sensor::connect(&endpoint, cfg, hello(low_seq)).await?;
        Ok(Self { session, endpoint })
    }

    /// Opens a data stream.
    pub async fn data_stream(&self) -> quinn::SendStream {
        self.session.conn.open_uni().await.expect("open data stream")
    }

    /// Next control message, within 5 s.
    pub async fn next(&mut self) -> Control {
        tokio::time::timeout(Duration::from_secs(5), sensor::read_control(&mut self.session.ctrl_recv))
            .await
            .expect("a control message within 5 s")
            .expect("a valid control message")
    }

    /// Reads control messages until `f` matches one, within 10 s; returns it.
    pub async fn until(&mut self, mut f: impl FnMut(&Control) -> bool) -> Control {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < deadline, "expected control message did not arrive");
            let m = self.next().await;
            if f(&m) {
                return m;
            }
        }
    }
}

/// Encodes an NDJSON data frame.
pub fn ndjson_frame(seq: u64, table: &str, rows: &[Value]) -> Vec<u8> {
    let mut payload = Vec::new();
    for r in rows {
        serde_json::to_writer(&mut payload, r).expect("serialize");
        payload.push(b'\n');
    }
    let mut out = Vec::new();
    frame::encode_data(&mut out, Encoding::Ndjson, seq, table, &payload);
    out
}

/// A process start that the built-in rule `linux.shadow_in_cmdline` flags; `n` makes it unique.
pub fn shadow_cat(n: i64) -> Value {
    serde_json::json!({"ts": 1_700_000_000_000_000i64 + n, "event_type": "start", "pid": n, "exe": "/usr/bin/cat",
        "cmdline": format!("cat /etc/shadow #{n}"), "user": "root"})
}

/// Minimal HTTP/1.1 GET over loopback without a token: returns (status, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let r = http_call(addr, "GET", path, None, None).await;
    (r.status, r.body)
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct HttpAnswer {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Body (chunked encoding removed).
    pub body: String,
}

impl HttpAnswer {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Minimal HTTP/1.1 request over loopback, with an optional bearer token and body.
pub async fn http_call(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> HttpAnswer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect API");
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let body = body.unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write request");
    s.write_all(body).await.expect("write body");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read response");
    parse_http(&buf)
}

/// Parses a whole HTTP/1.1 response (chunked bodies decoded).
pub fn parse_http(buf: &[u8]) -> HttpAnswer {
    let text = String::from_utf8_lossy(buf);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked { dechunk(rest) } else { rest.to_string() };
    HttpAnswer { status, headers, body }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// Everything on topic `alerts`, read by a fresh consumer group until `n` messages arrived and
/// then one more quiet second (so duplicates beyond `n` are seen too).
pub fn kafka_alerts(brokers: &str, group: &str, n: usize) -> Vec<Value> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&["alerts"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut out = Vec::new();
    let mut quiet_since: Option<Instant> = None;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                out.push(serde_json::from_slice(m.payload().unwrap_or_default()).unwrap());
                quiet_since = None;
            }
            Some(Err(e)) => panic!("consumer: {e}"),
            None if out.len() >= n
                && quiet_since.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(1) =>
            {
                break;
            }
            None => {}
        }
    }
    out
}

/// One server-sent event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SseEvent {
    /// `id:`.
    pub id: Option<String>,
    /// `event:`.
    pub event: String,
    /// `data:`.
    pub data: String,
}

/// A live SSE connection (reqwest, so chunked encoding is handled).
pub struct SseClient {
    resp: reqwest::Response,
    buf: String,
    /// Events received so far and not taken.
    pub events: std::collections::VecDeque<SseEvent>,
}

impl SseClient {
    /// Opens `path` with `token`, optionally resuming after `last_event_id`.
    pub async fn open(addr: std::net::SocketAddr, path: &str, token: &str, last_event_id: Option<&str>) -> Self {
        vedette_actors::sinks::http::ensure_crypto_provider();
        let mut req = reqwest::Client::new().get(format!("http://{addr}{path}")).bearer_auth(token);
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let resp = req.send().await.expect("stream request");
        assert_eq!(resp.status(), 200, "stream refused");
        Self { resp, buf: String::new(), events: Default::default() }
    }

    /// The next event (keep-alive comments skipped), within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(e) = self.events.pop_front() {
                return Some(e);
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk()).await.ok()?.ok()??;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut ev = SseEvent::default();
                for line in block.lines() {
                    if let Some((k, v)) = line.split_once(':') {
                        let v = v.strip_prefix(' ').unwrap_or(v).to_string();
                        match k {
                            "id" => ev.id = Some(v),
                            "event" => ev.event = v,
                            "data" => ev.data.push_str(&v),
                            _ => {}
                        }
                    }
                }
                if !ev.data.is_empty() {
                    self.events.push_back(ev);
                }
            }
        }
    }
}
