//! Connected sensor sessions, and how acknowledgements reach them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::mpsc;
use vedette_schemas::frame::{Ack, Control, close_code};

use crate::ledger::SeqLedger;
use crate::metrics::Metrics;

/// Close code telling a sensor to reconnect and resend its unacknowledged frames because the
/// engine lost in-flight work (an actor restarted).
pub const RESEND_CLOSE_CODE: u32 = 7;

struct Entry {
    id: u64,
    fingerprint: String,
    conn: quinn::Connection,
    ctrl: mpsc::Sender<Control>,
}

/// Registry of live sessions by sensor id (one per sensor; a new one replaces the old).
#[derive(Default)]
pub struct Sessions {
    next_id: AtomicU64,
    inner: Mutex<HashMap<String, Entry>>,
}

impl Sessions {
    /// Registers a session; closes the one it replaces. Returns the session id.
    pub fn register(
        &self,
        sensor: &str,
        fingerprint: &str,
        conn: quinn::Connection,
        ctrl: mpsc::Sender<Control>,
    ) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let entry = Entry { id, fingerprint: fingerprint.to_string(), conn, ctrl };
        let old = self.lock().insert(sensor.to_string(), entry);
        if let Some(old) = old {
            old.conn.close(close_code::NORMAL.into(), b"superseded by a newer session of this sensor");
        }
        id
    }

    /// Removes a session if it is still the current one for its sensor.
    pub fn unregister(&self, sensor: &str, id: u64) {
        let mut map = self.lock();
        if map.get(sensor).is_some_and(|e| e.id == id) {
            map.remove(sensor);
        }
    }

    /// Sends a control message to the sensor's current session, if any. Acks are cumulative,
    /// so one lost to a full queue is repaired by the next one (or by WELCOME).
    pub fn send(&self, sensor: &str, msg: Control) {
        if let Some(e) = self.lock().get(sensor) {
            let _ = e.ctrl.try_send(msg);
        }
    }

    /// Closes session `id` of the sensor with `code`, if it is still the current one (a newer
    /// session of the same sensor is left alone).
    pub fn close_session(&self, sensor: &str, id: u64, code: u32, reason: &str) {
        let mut map = self.lock();
        if map.get(sensor).is_some_and(|e| e.id == id)
            && let Some(e) = map.remove(sensor)
        {
            e.conn.close(code.into(), reason.as_bytes());
        }
    }

    /// Closes the sensor's session if it runs on the certificate `fingerprint` (any
    /// certificate when `None`); returns whether one was closed.
    pub fn close_certificate(&self, sensor: &str, fingerprint: Option<&str>, code: u32, reason: &str) -> bool {
        let mut map = self.lock();
        let matches = map.get(sensor).is_some_and(|e| fingerprint.is_none_or(|f| e.fingerprint == f));
        if !matches {
            return false;
        }
        if let Some(e) = map.remove(sensor) {
            e.conn.close(code.into(), reason.as_bytes());
        }
        true
    }

    /// Whether the sensor has a session now.
    pub fn is_connected(&self, sensor: &str) -> bool {
        self.lock().contains_key(sensor)
    }

    /// Closes every session.
    pub fn close_all(&self, code: u32, reason: &str) {
        for (_, e) in self.lock().drain() {
            e.conn.close(code.into(), reason.as_bytes());
        }
    }

    /// Sessions connected.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no session is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.inner.lock().expect("sessions lock is never poisoned")
    }
}

/// Acknowledges frames whose effects are durable (their sequence numbers were committed with
/// the batch, see [`crate::commit`]).
pub struct Acker {
    /// Durable sequence state.
    pub ledger: Arc<SeqLedger>,
    /// Where acks go.
    pub sessions: Arc<Sessions>,
    /// Metrics.
    pub metrics: Metrics,
}

impl Acker {
    /// Completes frames that have no other effects (refused frames): persist, then ACK.
    pub async fn complete(&self, frames: &[(Arc<str>, u64)]) -> crate::Result<()> {
        let through = self.ledger.complete(frames).await?;
        self.ack(frames, &through);
        Ok(())
    }

    /// ACKs each of `frames` to its sensor, with the sensor's `through` after the commit.
    pub fn ack(&self, frames: &[(Arc<str>, u64)], through: &HashMap<Arc<str>, u64>) {
        for (sensor, seq) in frames {
            let through = through.get(sensor).copied().unwrap_or(0);
            self.sessions.send(sensor, Control::Ack(Ack { seq: *seq, through }));
        }
    }
}

/// A frame whose rows are in the pipeline. Completing it acks it; dropping it uncompleted
/// (an actor crashed with it) forgets it and asks the sensor to reconnect and resend.
pub struct FrameToken {
    /// Sensor id.
    pub sensor_id: Arc<str>,
    /// The session that received the frame.
    pub session: u64,
    /// Frame sequence number.
    pub seq: u64,
    /// When the frame arrived.
    pub received: Instant,
    acker: Arc<Acker>,
    _permit: OwnedSemaphorePermit,
    table_gauge: prometheus::IntGauge,
    done: bool,
}

impl FrameToken {
    /// Creates the token of an admitted frame holding one in-flight permit of its table.
    pub fn new(
        sensor_id: Arc<str>,
        session: u64,
        seq: u64,
        acker: Arc<Acker>,
        permit: OwnedSemaphorePermit,
        table: &str,
    ) -> Self {
        let table_gauge = acker.metrics.inflight_frames.with_label_values(&[table]);
        table_gauge.inc();
        Self { sensor_id, session, seq, received: Instant::now(), acker, _permit: permit, table_gauge, done: false }
    }

    /// Marks the token completed (the caller acked it through [`Acker::complete`]).
    pub fn finish(mut self) {
        self.done = true;
    }
}

impl Drop for FrameToken {
    fn drop(&mut self) {
        self.table_gauge.dec();
        if !self.done {
            self.acker.ledger.abort(&self.sensor_id, self.seq);
            // Only the session that sent the frame: a newer one resent it (or will) itself.
            self.acker.sessions.close_session(
                &self.sensor_id,
                self.session,
                RESEND_CLOSE_CODE,
                "in-flight frames were lost by an engine restart; reconnect and resend unacknowledged frames",
            );
        }
    }
}
