//! One sensor connection: HELLO/WELCOME on the control stream, then data streams.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};
use vedette_schemas::SchemaError;
use vedette_schemas::decode::{Identity, decode_frame};
use vedette_schemas::fleet::{CommandResult, EDGE_TENANT, ENROLL_ALPN};
use vedette_schemas::frame::{
    self, Ack, Control, ErrorMsg, FrameType, HEADER_LEN, Heartbeat, PROTOCOL_VERSION, RowErrors, Welcome, close_code,
};
use vedette_schemas::seq::Admit;

use super::IngestContext;
use crate::batcher::BatcherMsg;
use crate::fleet::commands::CommandRecord;
use crate::fleet::liveness::Activity;
use crate::registry::RegistryRefusal;
use crate::sessions::FrameToken;
use crate::tls::{PeerIdentity, peer_identity};

/// Stable error code for a schema error (see `docs/protocol.md`).
fn error_code(e: &SchemaError) -> &'static str {
    match e {
        SchemaError::FrameTooLarge { .. } => "frame_too_large",
        SchemaError::MalformedFrame { .. } => "malformed_frame",
        SchemaError::MalformedControl { .. } => "malformed_message",
        SchemaError::UnknownTable { .. } => "unknown_table",
        SchemaError::SchemaMismatch { .. } => "schema_mismatch",
        SchemaError::TooManyRows { .. } => "too_many_rows",
        SchemaError::BadPayload { .. } => "bad_payload",
        SchemaError::BadTableDefinition { .. } | SchemaError::Arrow(_) => "internal",
    }
}

pub(super) fn error_msg(code: &str, message: impl Into<String>, seq: Option<u64>) -> Control {
    Control::Error(ErrorMsg { code: code.into(), message: message.into(), seq })
}

/// Reads one frame: `Ok(None)` on a clean end of stream before a header.
pub(super) async fn read_frame(
    recv: &mut quinn::RecvStream,
    max: u32,
) -> Result<Option<(FrameType, Vec<u8>)>, ReadError> {
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match recv.read(&mut header[got..]).await.map_err(|e| ReadError::Stream(e.to_string()))? {
            None if got == 0 => return Ok(None),
            None => {
                return Err(ReadError::Schema(SchemaError::MalformedFrame {
                    reason: "stream ended inside a frame header".into(),
                }));
            }
            Some(n) => got += n,
        }
    }
    let (len, ty) = match frame::parse_header(header, max) {
        Ok(h) => h,
        Err(e @ SchemaError::FrameTooLarge { .. }) => {
            // A data frame's sequence number is its first 8 body bytes: read them, so the
            // frame can be consumed (the sensor resends its rows in smaller, new frames).
            let mut seq = None;
            if FrameType::from_byte(header[4]).is_ok_and(FrameType::is_data) {
                let mut b = [0u8; 8];
                if recv.read_exact(&mut b).await.is_ok() {
                    seq = frame::peek_seq(&b);
                }
            }
            return Err(ReadError::TooLarge(e, seq));
        }
        Err(e) => return Err(ReadError::Schema(e)),
    };
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await.map_err(|e| match e {
        quinn::ReadExactError::FinishedEarly(_) => {
            ReadError::Schema(SchemaError::MalformedFrame { reason: format!("stream ended inside a {len}-byte frame") })
        }
        quinn::ReadExactError::ReadError(e) => ReadError::Stream(e.to_string()),
    })?;
    Ok(Some((ty, body)))
}

pub(super) enum ReadError {
    /// The bytes are bad: tell the sensor.
    Schema(SchemaError),
    /// A frame longer than allowed, with its sequence number if it is a data frame.
    TooLarge(SchemaError, Option<u64>),
    /// The stream or connection failed: nothing to tell.
    Stream(String),
}

/// Unregisters the session when the task ends, however it ends.
struct Registration {
    ctx: Arc<IngestContext>,
    sensor: String,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.ctx.sessions.unregister(&self.sensor, self.id);
        self.ctx.metrics.sensors_connected.dec();
        if let Err(e) = self.ctx.registry.seen(&self.sensor) {
            warn!(sensor = %self.sensor, error = %e, "Recording the end of a session in the registry failed.");
        }
    }
}

/// Runs a connection from handshake to close.
pub async fn run(ctx: Arc<IngestContext>, incoming: quinn::Incoming) {
    let remote_addr = incoming.remote_address();
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            // Unknown CA, missing client certificate, wrong ALPN: refused at the handshake.
            info!(%remote, error = %e, "Sensor handshake refused.");
            ctx.metrics.ingest_refused.with_label_values(&["handshake"]).inc();
            return;
        }
    };
    let alpn = conn
        .handshake_data()
        .and_then(|h| h.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|h| h.protocol);
    if alpn.as_deref() == Some(ENROLL_ALPN) {
        return super::enroll::serve(ctx, conn, remote_addr).await;
    }
    let peer = match peer_identity(&conn) {
        Ok(p) => p,
        Err(e) if conn.peer_identity().is_none() => {
            // Client certificates are optional at the handshake only because enrollment
            // shares the port: ingest without one is refused here.
            info!(%remote, "Sensor refused: no client certificate.");
            ctx.metrics.ingest_refused.with_label_values(&["handshake"]).inc();
            let reason = format!("{e}: ingest needs a client certificate (enroll first: `vedette sensor enroll`)");
            conn.close(close_code::CERTIFICATE_REQUIRED.into(), reason.as_bytes());
            return;
        }
        Err(e) => {
            ctx.metrics.ingest_refused.with_label_values(&["identity"]).inc();
            conn.close(close_code::PROTOCOL_VIOLATION.into(), e.as_bytes());
            return;
        }
    };
    if let Err(reason) = serve(&ctx, &conn, &peer, remote_addr).await {
        debug!(sensor = %peer.sensor_id, %reason, "Session ended.");
    }
}

async fn serve(
    ctx: &Arc<IngestContext>,
    conn: &quinn::Connection,
    peer: &PeerIdentity,
    remote: std::net::SocketAddr,
) -> Result<(), String> {
    let refuse = |code: u32, reason: &str| {
        ctx.metrics.ingest_refused.with_label_values(&["hello"]).inc();
        conn.close(code.into(), reason.as_bytes());
        reason.to_string()
    };
    let (mut send, mut recv) = match tokio::time::timeout(ctx.limits.hello_timeout, conn.accept_bi()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err(refuse(close_code::HELLO_TIMEOUT, "no control stream opened in time")),
    };
    let hello = match tokio::time::timeout(ctx.limits.hello_timeout, read_frame(&mut recv, ctx.limits.max_frame_bytes))
        .await
    {
        Err(_) => return Err(refuse(close_code::HELLO_TIMEOUT, "no HELLO received in time")),
        Ok(Ok(Some((FrameType::Hello, body)))) => match Control::decode(FrameType::Hello, &body) {
            Ok(Control::Hello(h)) => h,
            Ok(_) => unreachable!("HELLO frames decode to HELLO"),
            Err(e) => {
                tell(&mut send, error_msg("malformed_message", e.to_string(), None)).await;
                return Err(refuse(close_code::PROTOCOL_VIOLATION, "malformed HELLO"));
            }
        },
        Ok(_) => {
            return Err(refuse(close_code::PROTOCOL_VIOLATION, "the first frame on the control stream must be HELLO"));
        }
    };
    if hello.protocol != PROTOCOL_VERSION {
        let msg = format!("protocol {} is not supported (this engine speaks {PROTOCOL_VERSION})", hello.protocol);
        tell(&mut send, error_msg("unsupported_version", &msg, None)).await;
        return Err(refuse(close_code::UNSUPPORTED_VERSION, &msg));
    }
    if let Some(claimed) = hello.sensor_id.as_deref().filter(|c| *c != peer.sensor_id) {
        let msg = format!("HELLO claims sensor id `{claimed}` but the certificate says `{}`", peer.sensor_id);
        tell(&mut send, error_msg("identity_mismatch", &msg, None)).await;
        return Err(refuse(close_code::IDENTITY_MISMATCH, &msg));
    }
    let registered = ctx
        .registry
        .hello(peer, &hello.sensor_version, hello.host.as_deref(), &hello.schemas, &remote.to_string())
        .map_err(|e| e.to_string())?;
    if let Err(refusal) = registered {
        let (code, err) = match refusal {
            RegistryRefusal::Revoked => (close_code::REVOKED, "revoked"),
            RegistryRefusal::TenantMismatch { .. } => (close_code::REFUSED, "tenant_mismatch"),
            RegistryRefusal::AlreadyRegistered(_) => (close_code::REFUSED, "refused"),
        };
        let msg = refusal.to_string();
        tell(&mut send, error_msg(err, &msg, None)).await;
        return Err(refuse(code, &msg));
    }
    let (through, highest) = ctx.acker.ledger.welcome(&peer.sensor_id, hello.low_seq).map_err(|e| e.to_string())?;
    let waiting = ctx.commands.open_commands(&peer.sensor_id).unwrap_or_else(|e| {
        warn!(sensor = %peer.sensor_id, error = %e, "Reading pending commands failed.");
        Vec::new()
    });
    let welcome = Control::Welcome(Welcome {
        sensor_id: peer.sensor_id.clone(),
        tenant: peer.tenant.clone(),
        acked_through: through,
        highest_seq: highest,
        max_frame_bytes: ctx.limits.max_frame_bytes,
        max_frame_rows: ctx.limits.max_frame_rows,
        heartbeat_interval_ms: ctx.limits.heartbeat.as_millis() as u64,
        tables: ctx.catalog.names().iter().map(|s| s.to_string()).collect(),
        commands: u32::try_from(waiting.len()).unwrap_or(u32::MAX),
    });
    send.write_all(&welcome.to_frame()).await.map_err(|e| e.to_string())?;

    let (ctrl_tx, ctrl_rx) = mpsc::channel::<Control>(1024);
    let id = ctx.sessions.register(&peer.sensor_id, &peer.fingerprint, conn.clone(), ctrl_tx.clone());
    ctx.metrics.sensors_connected.inc();
    let _registration = Registration { ctx: Arc::clone(ctx), sensor: peer.sensor_id.clone(), id };
    info!(sensor = %peer.sensor_id, tenant = %peer.tenant, version = %hello.sensor_version, acked_through = through, "Sensor connected.");

    let activity = ctx.liveness.activity(&peer.sensor_id);
    activity.heard();
    let sensor = Arc::new(Sensor {
        id: Arc::from(peer.sensor_id.as_str()),
        session: id,
        tenant: peer.tenant.clone(),
        host: hello.host.clone(),
        ctrl: ctrl_tx,
        peer: peer.clone(),
        activity,
    });
    send_commands(ctx, &sensor, waiting).await;
    let mut tasks = JoinSet::new();
    tasks.spawn(write_control(send, ctrl_rx));
    if sensor.tenant == EDGE_TENANT
        && let Some(sets) = &ctx.rule_sets
    {
        tasks.spawn(send_rule_sets(sets.clone(), Arc::clone(&sensor)));
    }
    let mut control = tokio::spawn(read_control(Arc::clone(ctx), recv, Arc::clone(&sensor)));
    let _abort_control = AbortOnDrop(control.abort_handle());
    loop {
        tokio::select! {
            stream = conn.accept_uni() => match stream {
                Ok(s) => { tasks.spawn(read_data(Arc::clone(ctx), s, Arc::clone(&sensor))); }
                Err(e) => return Err(e.to_string()),
            },
            done = &mut control => {
                // GOODBYE, or the control stream finished: the session is over (a sensor sends
                // GOODBYE only once everything it sent is acknowledged).
                let reason = match done {
                    Ok(Ok(())) => {
                        conn.close(close_code::NORMAL.into(), b"goodbye");
                        return Ok(());
                    }
                    Ok(Err(reason)) => reason,
                    Err(e) => e.to_string(),
                };
                conn.close(close_code::PROTOCOL_VIOLATION.into(), reason.as_bytes());
                return Err(reason);
            }
            Some(done) = tasks.join_next() => {
                if let Ok(Err(reason)) = done {
                    conn.close(close_code::PROTOCOL_VIOLATION.into(), reason.as_bytes());
                    return Err(reason);
                }
            }
        }
    }
}

/// Aborts a task when the session ends, however it ends.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends a last message before refusing a session and waits (briefly) until the sensor has
/// it, so the close does not overtake the explanation.
pub(super) async fn tell(send: &mut quinn::SendStream, msg: Control) {
    if send.write_all(&msg.to_frame()).await.is_ok() && send.finish().is_ok() {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), send.stopped()).await;
    }
}

/// Per-session facts the stream tasks need.
pub(super) struct Sensor {
    pub(super) id: Arc<str>,
    /// Session id in [`crate::sessions::Sessions`].
    session: u64,
    pub(super) tenant: String,
    host: Option<String>,
    ctrl: mpsc::Sender<Control>,
    peer: PeerIdentity,
    pub(super) activity: Arc<Activity>,
}

/// Sends the commands that waited for this sensor (queued while it was offline, or sent to a
/// session that ended before the sensor answered); WELCOME announced how many.
async fn send_commands(ctx: &Arc<IngestContext>, sensor: &Arc<Sensor>, open: Vec<CommandRecord>) {
    for rec in open {
        sensor.say(Control::Command(rec.command())).await;
        if let Err(e) = ctx.commands.sent(&sensor.id, &rec.id) {
            warn!(sensor = %sensor.id, error = %e, "Recording a sent command failed.");
        }
    }
}

impl Sensor {
    pub(super) async fn say(&self, msg: Control) {
        let _ = self.ctrl.send(msg).await;
    }
}

/// Sends an edge this engine's rule set now and after every apply (RULES); edges that follow
/// their upstream apply it and answer RULES_APPLIED.
async fn send_rule_sets(
    mut sets: tokio::sync::watch::Receiver<Arc<vedette_schemas::fleet::RuleSet>>,
    sensor: Arc<Sensor>,
) -> Result<(), String> {
    loop {
        let set = sets.borrow_and_update().clone();
        sensor.say(Control::Rules((*set).clone())).await;
        if sets.changed().await.is_err() {
            return Ok(());
        }
    }
}

async fn write_control(mut send: quinn::SendStream, mut rx: mpsc::Receiver<Control>) -> Result<(), String> {
    let mut buf = Vec::new();
    while let Some(msg) = rx.recv().await {
        buf.clear();
        msg.encode(&mut buf);
        // Coalesce whatever else is queued into the same write.
        while let Ok(more) = rx.try_recv() {
            more.encode(&mut buf);
        }
        send.write_all(&buf).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn read_control(ctx: Arc<IngestContext>, mut recv: quinn::RecvStream, sensor: Arc<Sensor>) -> Result<(), String> {
    loop {
        match read_frame(&mut recv, ctx.limits.max_frame_bytes).await {
            Ok(None) => return Ok(()),
            Ok(Some((ty, body))) => match Control::decode(ty, &body) {
                Ok(Control::Heartbeat(_)) => {
                    sensor.activity.heard();
                    sensor.say(Control::Heartbeat(Heartbeat { ts: Utc::now().timestamp_micros() })).await;
                }
                Ok(Control::Goodbye(g)) => {
                    debug!(sensor = %sensor.id, reason = %g.reason, "Sensor said goodbye.");
                    sensor.activity.goodbye();
                    if let Err(e) = ctx.registry.goodbye(&sensor.id) {
                        warn!(sensor = %sensor.id, error = %e, "Recording a goodbye failed.");
                    }
                    return Ok(());
                }
                Ok(Control::RulesApplied(_)) if sensor.tenant != EDGE_TENANT => {
                    let msg = format!("RULES_APPLIED is sent by edge engines (tenant `{EDGE_TENANT}`) only");
                    sensor.say(error_msg("unexpected_message", msg, None)).await;
                }
                Ok(Control::RulesApplied(r)) => {
                    sensor.activity.heard();
                    match &r.error {
                        None => info!(edge = %sensor.id, packs = ?r.packs, "Edge runs this engine's rule set."),
                        Some(e) => {
                            warn!(edge = %sensor.id, packs = ?r.packs, error = %e, "Edge refused this engine's rule set.")
                        }
                    }
                    if let Err(e) = ctx.registry.rules_applied(&sensor.id, r) {
                        warn!(edge = %sensor.id, error = %e, "Recording an edge's rule set failed.");
                    }
                }
                Ok(Control::CommandResult(r)) => {
                    sensor.activity.heard();
                    command_result(&ctx, &sensor, r).await;
                }
                Ok(Control::Csr(req)) => {
                    sensor.activity.heard();
                    let answer = match &ctx.issuer {
                        None => error_msg(
                            "renewal_refused",
                            "this engine has no CA key: it cannot renew certificates",
                            None,
                        ),
                        Some(issuer) => match issuer.renew(&sensor.peer, &req.csr).await {
                            Ok(issued) => {
                                info!(sensor = %sensor.id, not_after = %issued.not_after, "Certificate renewed.");
                                Control::Certificate(issued)
                            }
                            Err(e) => {
                                ctx.metrics.ingest_refused.with_label_values(&["renewal"]).inc();
                                error_msg("renewal_refused", e, None)
                            }
                        },
                    };
                    sensor.say(answer).await;
                }
                Ok(other) => {
                    sensor
                        .say(error_msg("unexpected_message", format!("{other:?} is not sent by sensors"), None))
                        .await;
                }
                Err(e) => sensor.say(error_msg(error_code(&e), e.to_string(), None)).await,
            },
            Err(ReadError::Schema(e) | ReadError::TooLarge(e, _)) => {
                sensor.say(error_msg(error_code(&e), e.to_string(), None)).await;
                return Err(format!("control stream: {e}"));
            }
            Err(ReadError::Stream(e)) => return Err(format!("control stream: {e}")),
        }
    }
}

/// Records a command's outcome. A result for a command this sensor was not sent is refused
/// and counted (it may be another sensor's command id).
async fn command_result(ctx: &Arc<IngestContext>, sensor: &Arc<Sensor>, r: CommandResult) {
    // What the sensor applied is in the registry before the command reads as done: a client
    // that sees `done` then reads the sensor sees its new level or config version.
    if r.ok
        && let Ok(Some(open)) = ctx.commands.get(&sensor.id, &r.id)
        && open.state.is_open()
        && let Err(e) = ctx.registry.applied(&sensor.id, &open.action)
    {
        warn!(sensor = %sensor.id, error = %e, "Recording an applied command failed.");
    }
    match ctx.commands.complete(&sensor.id, &r).await {
        Ok(Some(rec)) => {
            info!(sensor = %sensor.id, command = %rec.id, kind = rec.action.name(), ok = r.ok, message = %r.message, "Command answered.");
        }
        Ok(None) => {
            ctx.metrics.ingest_refused.with_label_values(&["command_result"]).inc();
            let msg = format!("no open command `{}` for sensor `{}`", r.id, sensor.id);
            sensor.say(error_msg("unknown_command", msg, None)).await;
        }
        Err(e) => warn!(sensor = %sensor.id, error = %e, "Recording a command result failed."),
    }
}

async fn read_data(ctx: Arc<IngestContext>, mut recv: quinn::RecvStream, sensor: Arc<Sensor>) -> Result<(), String> {
    loop {
        if !ctx.accepting.load(Ordering::Acquire) {
            let _ = recv.stop(close_code::SHUTTING_DOWN.into());
            return Ok(());
        }
        match read_frame(&mut recv, ctx.limits.max_frame_bytes).await {
            Ok(None) => return Ok(()),
            Ok(Some((ty, body))) => handle_data(&ctx, &sensor, ty, &body).await,
            Err(ReadError::TooLarge(e, seq)) => {
                // The rest of the frame is not read: report (consuming its sequence number),
                // reset this stream only. Other streams and sensors are unaffected.
                warn!(sensor = %sensor.id, error = %e, "Frame too large on a data stream; stream reset.");
                reject_frame(&ctx, &sensor, seq, &e).await;
                let _ = recv.stop(close_code::FRAME_TOO_LARGE.into());
                return Ok(());
            }
            Err(ReadError::Schema(e)) => {
                // The framing is lost: report, reset this stream only.
                ctx.metrics.ingest_frames.with_label_values(&["error"]).inc();
                warn!(sensor = %sensor.id, error = %e, "Bad framing on a data stream; stream reset.");
                sensor.say(error_msg(error_code(&e), e.to_string(), None)).await;
                let _ = recv.stop(close_code::MALFORMED_FRAME.into());
                return Ok(());
            }
            Err(ReadError::Stream(_)) => return Ok(()),
        }
    }
}

/// Classifies a data frame's sequence number; answers duplicates and refusals itself.
/// Returns whether the frame is new (and now in flight).
pub(super) async fn admit(ctx: &Arc<IngestContext>, sensor: &Arc<Sensor>, seq: u64) -> bool {
    match ctx.acker.ledger.admit(&sensor.id, seq) {
        Admit::New => true,
        Admit::Applied => {
            ctx.metrics.ingest_frames.with_label_values(&["duplicate"]).inc();
            let through = ctx.acker.ledger.through(&sensor.id);
            sensor.say(Control::Ack(Ack { seq, through })).await;
            false
        }
        Admit::InFlight => {
            ctx.metrics.ingest_frames.with_label_values(&["duplicate"]).inc();
            false
        }
        Admit::TooFar { max } => {
            ctx.metrics.ingest_frames.with_label_values(&["error"]).inc();
            let msg = format!(
                "sequence number {seq} is too far ahead: at most {max} is accepted now (the acknowledged number + {})",
                vedette_schemas::seq::SEQ_WINDOW
            );
            sensor.say(error_msg("seq_out_of_window", msg, Some(seq))).await;
            false
        }
    }
}

async fn handle_data(ctx: &Arc<IngestContext>, sensor: &Arc<Sensor>, ty: FrameType, body: &[u8]) {
    if ty == FrameType::Alerts {
        return super::alerts::handle(ctx, sensor, body).await;
    }
    let frame = match frame::parse_data(ty, body) {
        Ok(f) => f,
        // Only a data frame's first bytes are a sequence number (a control frame sent on a
        // data stream must change no sequence state).
        Err(e) => return reject_frame(ctx, sensor, ty.is_data().then(|| frame::peek_seq(body)).flatten(), &e).await,
    };
    ctx.metrics.ingest_bytes.inc_by(frame.payload.len() as u64);
    let table = match ctx.catalog.get(frame.table) {
        Ok(t) => Arc::clone(t),
        Err(e) => return reject_frame(ctx, sensor, Some(frame.seq), &e).await,
    };
    if !admit(ctx, sensor, frame.seq).await {
        return;
    }
    let identity = Identity {
        sensor_id: &sensor.id,
        tenant: &sensor.tenant,
        default_host: sensor.host.as_deref(),
        trust_rows: false,
    };
    let decoded = match decode_frame(&table, &frame, &identity, ctx.limits.max_frame_rows as usize) {
        Ok(d) => d,
        Err(e) => return reject_admitted(ctx, sensor, frame.seq, &e).await,
    };
    ctx.metrics.ingest_frames.with_label_values(&["accepted"]).inc();
    ctx.metrics.ingest_events.with_label_values(&[table.name()]).inc_by(decoded.accepted.into());
    sensor.activity.events(decoded.accepted.into());
    if decoded.rejected > 0 {
        ctx.metrics.ingest_rows_rejected.with_label_values(&[table.name()]).inc_by(decoded.rejected.into());
        sensor
            .say(Control::RowErrors(RowErrors {
                seq: frame.seq,
                table: table.name().into(),
                accepted: decoded.accepted,
                rejected: decoded.rejected,
                errors: decoded.errors,
            }))
            .await;
    }
    let Some(batch) = decoded.batch else {
        return complete_now(ctx, sensor, frame.seq).await;
    };
    if ctx.taps.is_tapped(&sensor.id) {
        ctx.taps.publish(&sensor.id, table.name(), &batch);
    }
    let route = &ctx.routes[table.name()];
    // Back-pressure: wait for an in-flight slot; meanwhile this stream is not read and QUIC
    // flow control slows the sensor.
    let Ok(permit) = Arc::clone(&route.inflight).acquire_owned().await else { return };
    let token = FrameToken::new(
        Arc::clone(&sensor.id),
        sensor.session,
        frame.seq,
        Arc::clone(&ctx.acker),
        permit,
        table.name(),
    );
    match route.batcher.get() {
        Some(b) => {
            if let Err(ractor::MessagingErr::SendErr(BatcherMsg::Frame(_, token))) =
                b.send_message(BatcherMsg::Frame(batch, token))
            {
                drop(token); // aborts and asks the sensor to resend
            }
        }
        None => drop(token),
    }
}

/// A frame that cannot be used: report it and consume its sequence number, so the sensor
/// does not resend it forever.
pub(super) async fn reject_frame(ctx: &Arc<IngestContext>, sensor: &Arc<Sensor>, seq: Option<u64>, e: &SchemaError) {
    ctx.metrics.ingest_frames.with_label_values(&["error"]).inc();
    let admit = seq.map(|s| (s, ctx.acker.ledger.admit(&sensor.id, s)));
    // A number too far ahead is not consumed: the ERROR then names no frame.
    let consumed = admit.filter(|(_, a)| !matches!(a, Admit::TooFar { .. })).map(|(s, _)| s);
    sensor.say(error_msg(error_code(e), e.to_string(), consumed)).await;
    if let Some((seq, Admit::New)) = admit {
        complete_now(ctx, sensor, seq).await;
    }
}

/// Like [`reject_frame`] for a frame already admitted (in flight).
async fn reject_admitted(ctx: &Arc<IngestContext>, sensor: &Arc<Sensor>, seq: u64, e: &SchemaError) {
    ctx.metrics.ingest_frames.with_label_values(&["error"]).inc();
    sensor.say(error_msg(error_code(e), e.to_string(), Some(seq))).await;
    complete_now(ctx, sensor, seq).await;
}

pub(super) async fn complete_now(ctx: &Arc<IngestContext>, sensor: &Arc<Sensor>, seq: u64) {
    if let Err(e) = ctx.acker.complete(&[(Arc::clone(&sensor.id), seq)]).await {
        warn!(sensor = %sensor.id, seq, error = %e, "Could not persist sequence state.");
        ctx.acker.ledger.abort(&sensor.id, seq);
    }
}
