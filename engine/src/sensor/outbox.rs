//! The sensor's outbox: rows waiting to be framed, and frames waiting for their ACK.

use std::collections::{BTreeMap, HashMap};

use vedette_schemas::frame::{self, Encoding, Hello, PROTOCOL_VERSION};

use super::Event;

/// The sensor's delivery state, kept across reconnects.
#[derive(Default)]
pub(super) struct Outbox {
    /// Encoded frames not yet acknowledged, by seq.
    pub(super) unacked: BTreeMap<u64, Vec<u8>>,
    /// Next sequence number (0: not known yet, taken from WELCOME).
    pub(super) next_seq: u64,
    /// Rows waiting to become a frame, per table.
    pub(super) pending: HashMap<String, Vec<u8>>,
    pending_rows: HashMap<String, u32>,
}

impl Outbox {
    pub(super) fn hello(&self, host: &str) -> Hello {
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

    pub(super) fn ack(&mut self, seq: u64, through: u64) {
        self.unacked.remove(&seq);
        self.unacked = self.unacked.split_off(&(through + 1));
    }

    pub(super) fn push_row(&mut self, ev: &Event) -> bool {
        let buf = self.pending.entry(ev.table.clone()).or_default();
        serde_json::to_writer(&mut *buf, &ev.row).expect("JSON values serialize");
        buf.push(b'\n');
        let rows = self.pending_rows.entry(ev.table.clone()).or_default();
        *rows += 1;
        *rows >= 2048 || buf.len() >= 1 << 20
    }

    /// Turns buffered rows into frames; returns the encoded frames to send.
    pub(super) fn seal(&mut self) -> Vec<u8> {
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
