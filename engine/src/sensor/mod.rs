//! The reference sensor: QUIC + mTLS client with an unacknowledged-frame buffer that obeys the
//! engine's commands (observe level, configuration, certificate renewal).
//!
//! * [`outbox`]: rows waiting for a frame, frames waiting for their ACK.
//! * [`host`]: what it observes (`/proc`, the demo scenario).
//! * [`control`]: its level and configuration, and the filter they set.
//! * [`enroll`]: enrollment with a one-time token.
//! * [`events`]: `--events FILE`: JSON lines sent as they are.

pub mod control;
pub mod enroll;
pub mod events;
pub mod host;
mod outbox;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tracing::{error, info, warn};
use vedette_schemas::fleet::{Action, CertificateRequest, Command, CommandResult};
use vedette_schemas::frame::{self, Control, Goodbye, HEADER_LEN, Heartbeat, Hello, Welcome, close_code};

pub use control::Controls;
pub use host::{demo_closing_event, demo_scenario, demo_window_closes_at, watch_proc};
use outbox::Outbox;

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
                close_code::REFUSED
                | close_code::IDENTITY_MISMATCH
                | close_code::UNSUPPORTED_VERSION
                | close_code::CERTIFICATE_REQUIRED => refused(&reason, false),
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
    /// Renew the certificate over the control stream when less than this validity is left.
    pub renew_before: Duration,
}

impl SensorConfig {
    /// A configuration with the default linger (50 ms) and renewal margin (10 days).
    pub fn new(server: SocketAddr, ca: PathBuf, cert: PathBuf, key: PathBuf, host: &str) -> Self {
        Self {
            server,
            server_name: "localhost".into(),
            ca,
            cert,
            key,
            host: host.into(),
            linger: Duration::from_millis(50),
            renew_before: Duration::from_secs(10 * 86_400),
        }
    }
}

/// One telemetry row for a table.
#[derive(Debug, Clone)]
pub struct Event {
    /// Table name.
    pub table: String,
    /// Row as a JSON object.
    pub row: Value,
}

/// Counters a caller can watch, and the sensor's level and configuration.
#[derive(Default)]
pub struct SensorStats {
    /// Frames sent (resends included).
    pub frames_sent: AtomicU64,
    /// Frames acknowledged.
    pub frames_acked: AtomicU64,
    /// Events put into frames.
    pub events_sent: AtomicU64,
    /// Events the configuration filtered out (tables, sampling, elided processes).
    pub events_filtered: AtomicU64,
    /// Rows rejected by the engine.
    pub rows_rejected: AtomicU64,
    /// Connections established.
    pub connections: AtomicU64,
    /// Commands applied (or refused) from the engine.
    pub commands: AtomicU64,
    /// Certificates renewed.
    pub renewals: AtomicU64,
    /// Errors reported by the engine (code: message).
    pub errors: Mutex<Vec<String>>,
    /// Level and configuration.
    pub controls: Controls,
}

impl SensorStats {
    /// Stats with the level and configuration kept in `state_file`.
    pub fn with_state(state_file: PathBuf) -> Self {
        Self { controls: Controls::load(Some(state_file)), ..Self::default() }
    }
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

/// The client TLS configuration from the sensor's files (read again at every connect, so a
/// renewed certificate is used from the next connection on).
fn client_config(cfg: &SensorConfig) -> Result<quinn::ClientConfig, SensorError> {
    let (ca, cert, key) = (read_file(&cfg.ca)?, read_file(&cfg.cert)?, read_file(&cfg.key)?);
    Ok(vedette_actors::tls::client_config(&ca, Some((&cert, &key)), frame::ALPN)?)
}

/// A client endpoint for `server`'s address family.
pub(crate) fn bind_client(server: SocketAddr) -> Result<quinn::Endpoint, SensorError> {
    let bind: SocketAddr = if server.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }.parse().expect("valid address");
    quinn::Endpoint::client(bind).map_err(|e| SensorError::Connection(e.to_string()))
}

/// Opens a client endpoint configured with the sensor's certificate.
pub fn endpoint(cfg: &SensorConfig) -> Result<quinn::Endpoint, SensorError> {
    let mut ep = bind_client(cfg.server)?;
    ep.set_default_client_config(client_config(cfg)?);
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
            if ["revoked", "tenant_mismatch", "identity_mismatch", "unsupported_version", "refused"]
                .contains(&e.code.as_str()) =>
        {
            Err(SensorError::Refused { message: format!("{}: {}", e.code, e.message), revoked: e.code == "revoked" })
        }
        Control::Error(e) => Err(SensorError::Protocol(format!("{}: {}", e.code, e.message))),
        other => Err(SensorError::Protocol(format!("expected WELCOME, got {other:?}"))),
    }
}

/// Longest wait between attempts after the engine refused the sensor (other than revoked).
const REFUSED_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// How a session ended without error.
enum Ended {
    /// Every event is sent and acknowledged.
    Done,
    /// The certificate was renewed: reconnect with it now.
    Renewed,
}

/// Runs the sensor until `events` is closed and every frame is acknowledged. Reconnects with
/// backoff and resends unacknowledged frames after each reconnect. Stops with an error when
/// the engine revoked the sensor; other refusals are retried slowly.
pub async fn run(
    cfg: SensorConfig,
    mut events: mpsc::Receiver<Event>,
    stats: Arc<SensorStats>,
) -> Result<(), SensorError> {
    let mut ep = endpoint(&cfg)?;
    let mut out = Outbox::default();
    let mut closed = false;
    let mut backoff = Duration::from_millis(100);
    loop {
        ep.set_default_client_config(client_config(&cfg)?);
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
        info!(sensor = %w.sensor_id, tenant = %w.tenant, acked_through = w.acked_through, level = %stats.controls.level(), "Connected to engine.");
        out.ack(0, w.acked_through);
        if out.next_seq == 0 {
            out.next_seq = w.highest_seq.saturating_add(1);
        }
        let conn = session.conn.clone();
        let awaiting = session.welcome.commands;
        let mut pump = Pump {
            cfg: &cfg,
            out: &mut out,
            events: &mut events,
            closed: &mut closed,
            stats: &stats,
            renewing: None,
            awaiting,
        };
        match pump.run(session).await {
            Ok(Ended::Done) => {
                // Let the close reach the engine before the process may exit.
                let _ = tokio::time::timeout(Duration::from_secs(2), ep.wait_idle()).await;
                return Ok(());
            }
            Ok(Ended::Renewed) => {
                info!("Certificate renewed; reconnecting with it.");
                conn.close(close_code::NORMAL.into(), b"reconnecting with a renewed certificate");
            }
            Err(e) => match conn.close_reason().and_then(|r| refusal(&r)) {
                Some(r @ SensorError::Refused { revoked: true, .. }) => return Err(r),
                _ => warn!(error = %e, unacked = out.unacked.len(), "Session lost; reconnecting and resending."),
            },
        }
    }
}

/// A renewal in progress: the command that asked for it (if any) and the new key.
struct Renewal {
    command: Option<String>,
    key_pem: String,
}

/// One session's work: send events, heartbeats and command results; read acks and commands.
struct Pump<'a> {
    cfg: &'a SensorConfig,
    out: &'a mut Outbox,
    events: &'a mut mpsc::Receiver<Event>,
    closed: &'a mut bool,
    stats: &'a SensorStats,
    renewing: Option<Renewal>,
    /// Commands WELCOME announced that have not arrived yet (answered before GOODBYE).
    awaiting: u32,
}

fn conn_err(e: &dyn std::fmt::Display) -> SensorError {
    SensorError::Connection(e.to_string())
}

impl Pump<'_> {
    async fn run(&mut self, mut s: Session) -> Result<Ended, SensorError> {
        let mut data = s.conn.open_uni().await.map_err(|e| conn_err(&e))?;
        let resend: Vec<u8> = self.out.unacked.values().flatten().copied().collect();
        if !resend.is_empty() {
            self.stats.frames_sent.fetch_add(self.out.unacked.len() as u64, Ordering::Relaxed);
            data.write_all(&resend).await.map_err(|e| conn_err(&e))?;
        }
        let mut linger = tokio::time::interval(self.cfg.linger);
        let beat_ms = |c: &Controls, w: &Welcome| c.heartbeat_ms().unwrap_or(w.heartbeat_interval_ms).max(100);
        let mut heartbeat = tokio::time::interval(Duration::from_millis(beat_ms(&self.stats.controls, &s.welcome)));
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
        if self.expires_soon() {
            info!("The certificate expires soon; renewing it.");
            self.start_renewal(&mut s.ctrl_send, &s.welcome.sensor_id, None).await?;
        }
        loop {
            let idle = self.out.pending.is_empty() && self.out.unacked.is_empty();
            if *self.closed && idle && self.renewing.is_none() && self.awaiting == 0 {
                let _ = s.ctrl_send.write_all(&Control::Goodbye(Goodbye { reason: "done".into() }).to_frame()).await;
                let _ = data.finish();
                let _ = s.ctrl_send.finish();
                // The engine closes the connection once it has read everything up to GOODBYE
                // (command results included); closing first could cut that short.
                let _ = tokio::time::timeout(Duration::from_secs(2), s.conn.closed()).await;
                s.conn.close(0u32.into(), b"done");
                return Ok(Ended::Done);
            }
            tokio::select! {
                ev = self.events.recv(), if !*self.closed && self.out.unacked.len() < MAX_UNACKED_FRAMES => match ev {
                    Some(ev) => {
                        if !self.stats.controls.admit(&ev) {
                            self.stats.events_filtered.fetch_add(1, Ordering::Relaxed);
                        } else {
                            self.stats.events_sent.fetch_add(1, Ordering::Relaxed);
                            if self.out.push_row(&ev) {
                                send(&mut data, self.out, self.stats).await?;
                            }
                        }
                    }
                    None => {
                        *self.closed = true;
                        send(&mut data, self.out, self.stats).await?;
                    }
                },
                _ = linger.tick() => send(&mut data, self.out, self.stats).await?,
                _ = heartbeat.tick() => {
                    let hb = Control::Heartbeat(Heartbeat { ts: chrono::Utc::now().timestamp_micros() });
                    s.ctrl_send.write_all(&hb.to_frame()).await.map_err(|e| conn_err(&e))?;
                }
                msg = ctrl_rx.recv() => match msg {
                    Some(Ok(Control::Ack(a))) => {
                        self.stats.frames_acked.fetch_add(1, Ordering::Relaxed);
                        self.out.ack(a.seq, a.through);
                    }
                    Some(Ok(Control::RowErrors(r))) => {
                        self.stats.rows_rejected.fetch_add(r.rejected.into(), Ordering::Relaxed);
                        for e in r.errors.iter().take(5) {
                            warn!(seq = r.seq, table = %r.table, row = e.row, column = ?e.column, reason = %e.reason, "Row rejected by the engine.");
                        }
                    }
                    Some(Ok(Control::Command(cmd))) => {
                        self.awaiting = self.awaiting.saturating_sub(1);
                        if let Some(ms) = self.command(&mut s.ctrl_send, &s.welcome.sensor_id, cmd).await? {
                            heartbeat = tokio::time::interval(Duration::from_millis(ms.max(100)));
                        }
                    }
                    Some(Ok(Control::Certificate(issued))) => {
                        if self.finish_renewal(&mut s.ctrl_send, &issued).await? {
                            // End the session in order: the engine reads the command result
                            // before the end of the control stream, then closes.
                            let _ = s.ctrl_send.finish();
                            let _ = tokio::time::timeout(Duration::from_secs(2), s.conn.closed()).await;
                            return Ok(Ended::Renewed);
                        }
                    }
                    Some(Ok(Control::Error(e))) => {
                        warn!(code = %e.code, seq = ?e.seq, message = %e.message, "Engine reported an error.");
                        self.stats.errors.lock().expect("not poisoned").push(format!("{}: {}", e.code, e.message));
                        if e.code == "renewal_refused"
                            && let Some(r) = self.renewing.take()
                        {
                            self.answer(&mut s.ctrl_send, r.command, false, e.message).await?;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e),
                    None => return Err(SensorError::Connection("control stream closed".into())),
                },
            }
        }
    }

    fn expires_soon(&self) -> bool {
        let Ok(pem) = std::fs::read(&self.cfg.cert) else { return false };
        let Ok(der) = vedette_actors::tls::certs_from_pem(&pem, "sensor certificate") else { return false };
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der[0].as_ref()) else { return false };
        let left = cert.validity().not_after.timestamp() - chrono::Utc::now().timestamp();
        left < i64::try_from(self.cfg.renew_before.as_secs()).unwrap_or(i64::MAX)
    }

    /// Applies a command; returns a new heartbeat interval if the config set one.
    async fn command(
        &mut self,
        ctrl: &mut quinn::SendStream,
        sensor_id: &str,
        cmd: Command,
    ) -> Result<Option<u64>, SensorError> {
        if let Some(done) = self.stats.controls.recall(&cmd.id) {
            // Delivered again after a reconnect: answer again, do not apply twice.
            self.answer(ctrl, Some(done.id), done.ok, done.message).await?;
            return Ok(None);
        }
        self.stats.commands.fetch_add(1, Ordering::Relaxed);
        if let Action::RenewCertificate {} = cmd.action {
            if self.renewing.is_none() {
                self.start_renewal(ctrl, sensor_id, Some(cmd.id)).await?;
            }
            return Ok(None);
        }
        let applied = self.stats.controls.apply(&cmd);
        info!(command = %cmd.id, kind = cmd.action.name(), ok = applied.result.ok, message = %applied.result.message, "Command from the engine.");
        let r = applied.result;
        self.answer(ctrl, Some(r.id), r.ok, r.message).await?;
        Ok(applied.heartbeat_ms)
    }

    async fn answer(
        &self,
        ctrl: &mut quinn::SendStream,
        id: Option<String>,
        ok: bool,
        message: String,
    ) -> Result<(), SensorError> {
        let Some(id) = id else { return Ok(()) };
        let result = CommandResult { id, ok, message };
        self.stats.controls.remember(&result);
        ctrl.write_all(&Control::CommandResult(result).to_frame()).await.map_err(|e| conn_err(&e))
    }

    /// New key, CSR on the control stream; the certificate comes back as CERTIFICATE.
    async fn start_renewal(
        &mut self,
        ctrl: &mut quinn::SendStream,
        sensor_id: &str,
        command: Option<String>,
    ) -> Result<(), SensorError> {
        let (csr, key_pem) = match crate::pki::csr::new_csr(sensor_id) {
            Ok(k) => k,
            Err(e) => return self.answer(ctrl, command, false, format!("making a CSR failed: {e}")).await,
        };
        ctrl.write_all(&Control::Csr(CertificateRequest { csr }).to_frame()).await.map_err(|e| conn_err(&e))?;
        self.renewing = Some(Renewal { command, key_pem });
        Ok(())
    }

    /// Installs a renewed certificate with its key; true when the sensor should reconnect.
    async fn finish_renewal(
        &mut self,
        ctrl: &mut quinn::SendStream,
        issued: &vedette_schemas::fleet::CertificateIssued,
    ) -> Result<bool, SensorError> {
        let Some(r) = self.renewing.take() else {
            warn!("The engine sent a certificate this sensor did not ask for; ignored.");
            return Ok(false);
        };
        match install(&self.cfg.cert, &self.cfg.key, &issued.certificate, &r.key_pem) {
            Ok(()) => {
                self.stats.renewals.fetch_add(1, Ordering::Relaxed);
                info!(not_after = %issued.not_after, "Installed the renewed certificate.");
                self.answer(ctrl, r.command, true, format!("renewed until {}", issued.not_after)).await?;
                Ok(true)
            }
            Err(e) => {
                self.answer(ctrl, r.command, false, format!("installing the certificate failed: {e}")).await?;
                Ok(false)
            }
        }
    }
}

/// Replaces a certificate and its key: both are written beside the old ones, then renamed
/// over them (key first); the key file is 0600 from the start.
pub(crate) fn install(
    cert: &std::path::Path,
    key: &std::path::Path,
    cert_pem: &str,
    key_pem: &str,
) -> std::io::Result<()> {
    let (cert_tmp, key_tmp) = (cert.with_extension("pem.new"), key.with_extension("key.new"));
    crate::pki::write_file(&key_tmp, key_pem, true)?;
    crate::pki::write_file(&cert_tmp, cert_pem, false)?;
    std::fs::rename(&key_tmp, key)?;
    std::fs::rename(&cert_tmp, cert)
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
