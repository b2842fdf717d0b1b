//! Window checkpoints on disk: a **base** (the whole state) under the rule's state key, then a
//! **log** of deltas under `state key ++ 0x00 ++ n` (n = 0, 1, … as u64 big-endian).
//!
//! A batch's window effects are written in the batch's own transaction (so they are atomic
//! with its alerts and frame acknowledgements). Writing the whole state each time made the
//! cost of a batch grow with the open windows, not with the batch: a batch that only
//! *appended* accumulator states (the common case — states are merged every
//! `MERGE_EVERY` batches and when windows close) is logged as a delta holding just the new
//! states, the sensors whose watermark entry changed, and the scalar fields. A batch that
//! rewrote the states (merge, close) — or the `MAX_LOG`th delta — writes a new base and
//! removes the log. Restoring reads the base and applies the deltas in order, which gives
//! exactly the state held in memory when the last of them was committed.
//!
//! Both records are `u32 BE header length | JSON header | Arrow IPC stream of states`.

use std::collections::HashMap;

use arrow::array::RecordBatch;
use datafusion::common::DataFusionError;

use super::WindowState;

/// Deltas logged before a base is written again.
pub const MAX_LOG: u64 = 64;

type Result<T> = datafusion::error::Result<T>;

#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    sensors: HashMap<String, (i64, i64)>,
    closed_upto: i64,
    late_rows: u64,
    #[serde(default)]
    merged: usize,
    #[serde(default)]
    skewed: HashMap<String, u64>,
    #[serde(default)]
    closed: HashMap<String, i64>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct DeltaHeader {
    /// Sensors added or changed.
    sensors: HashMap<String, (i64, i64)>,
    /// Sensors forgotten.
    forgotten: Vec<String>,
    closed_upto: i64,
    late_rows: u64,
    merged: usize,
    skewed: HashMap<String, u64>,
    closed: HashMap<String, i64>,
}

/// One write to the store of window checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowWrite {
    /// Store `value` under `key`.
    Put(Vec<u8>, Vec<u8>),
    /// Remove `key`.
    Remove(Vec<u8>),
}

/// A rule's checkpoint as read back from the store: its base and its log in order.
#[derive(Debug, Clone, Default)]
pub struct Stored {
    /// The base record.
    pub base: Vec<u8>,
    /// The deltas logged after it, oldest first.
    pub log: Vec<Vec<u8>>,
}

/// Key of delta `n` of the rule with state key `key`.
pub fn log_key(key: &str, n: u64) -> Vec<u8> {
    let mut k = log_prefix(key);
    k.extend_from_slice(&n.to_be_bytes());
    k
}

/// Prefix of every delta key of the rule with state key `key` (state keys hold no NUL).
pub fn log_prefix(key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 9);
    k.extend_from_slice(key.as_bytes());
    k.push(0);
    k
}

fn corrupt(what: &str) -> DataFusionError {
    DataFusionError::Internal(format!("corrupt window checkpoint: {what}"))
}

fn encode<H: serde::Serialize>(header: &H, states: &[RecordBatch]) -> Result<Vec<u8>> {
    let header = serde_json::to_vec(header).map_err(|e| DataFusionError::Internal(e.to_string()))?;
    let len = u32::try_from(header.len())
        .map_err(|_| DataFusionError::Internal("window checkpoint header over 4 GiB".into()))?;
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(&header);
    if let Some(first) = states.first() {
        let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut out, &first.schema())?;
        for b in states {
            w.write(b)?;
        }
        w.finish()?;
    }
    Ok(out)
}

fn decode<H: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<(H, Vec<RecordBatch>)> {
    let len = bytes.get(..4).ok_or_else(|| corrupt("too short"))?;
    let len = u32::from_be_bytes(len.try_into().map_err(|_| corrupt("too short"))?) as usize;
    let header = bytes.get(4..4 + len).ok_or_else(|| corrupt("truncated header"))?;
    let h: H = serde_json::from_slice(header).map_err(|e| corrupt(&e.to_string()))?;
    let rest = &bytes[4 + len..];
    let states = if rest.is_empty() {
        Vec::new()
    } else {
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(rest), None)?
            .collect::<std::result::Result<Vec<_>, _>>()?
    };
    Ok((h, states))
}

/// Whether `next` only appended states to `prev` (same batches, by identity, then new ones).
fn appends_to(prev: &WindowState, next: &WindowState) -> bool {
    next.merged == prev.merged
        && next.states.len() >= prev.states.len()
        && prev.states.iter().zip(&next.states).all(|(a, b)| {
            a.num_rows() == b.num_rows()
                && a.num_columns() == b.num_columns()
                && a.columns().iter().zip(b.columns()).all(|(x, y)| std::sync::Arc::ptr_eq(x, y))
        })
}

impl WindowState {
    /// The whole state as a base record.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        encode(
            &Header {
                sensors: self.sensors.clone(),
                closed_upto: self.closed_upto,
                late_rows: self.late_rows,
                merged: self.merged,
                skewed: self.skewed.clone(),
                closed: self.closed.clone(),
            },
            &self.states,
        )
    }

    /// Reads a base record written by [`WindowState::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let (h, states): (Header, _) = decode(bytes)?;
        let merged = h.merged.min(states.len());
        Ok(Self {
            states,
            sensors: h.sensors,
            closed_upto: h.closed_upto,
            late_rows: h.late_rows,
            merged,
            skewed: h.skewed,
            closed: h.closed,
            logged: 0,
        })
    }

    /// Reads a rule's base and applies its log.
    pub fn from_stored(stored: &Stored) -> Result<Self> {
        let mut state = Self::from_bytes(&stored.base)?;
        for delta in &stored.log {
            let (h, states): (DeltaHeader, _) = decode(delta)?;
            state.states.extend(states);
            for s in h.forgotten {
                state.sensors.remove(&s);
            }
            state.sensors.extend(h.sensors);
            state.closed_upto = h.closed_upto;
            state.late_rows = h.late_rows;
            state.merged = h.merged.min(state.states.len());
            state.skewed = h.skewed;
            state.closed = h.closed;
            state.logged += 1;
        }
        Ok(state)
    }

    /// What to write so that the store, holding `prev` (the state last committed, with its
    /// `logged` deltas; `None` if nothing is stored), holds `self` under state key `key`.
    /// Sets `self.logged` accordingly.
    pub fn checkpoint_after(&mut self, key: &str, prev: Option<&WindowState>) -> Result<Vec<WindowWrite>> {
        match prev {
            Some(prev) if prev.logged < MAX_LOG && appends_to(prev, self) => {
                let sensors = self
                    .sensors
                    .iter()
                    .filter(|(s, v)| prev.sensors.get(*s) != Some(v))
                    .map(|(s, v)| (s.clone(), *v))
                    .collect();
                let forgotten = prev.sensors.keys().filter(|s| !self.sensors.contains_key(*s)).cloned().collect();
                let header = DeltaHeader {
                    sensors,
                    forgotten,
                    closed_upto: self.closed_upto,
                    late_rows: self.late_rows,
                    merged: self.merged,
                    skewed: self.skewed.clone(),
                    closed: self.closed.clone(),
                };
                let bytes = encode(&header, &self.states[prev.states.len()..])?;
                self.logged = prev.logged + 1;
                Ok(vec![WindowWrite::Put(log_key(key, prev.logged), bytes)])
            }
            _ => {
                let mut writes = vec![WindowWrite::Put(key.as_bytes().to_vec(), self.to_bytes()?)];
                writes.extend((0..prev.map_or(0, |p| p.logged)).map(|n| WindowWrite::Remove(log_key(key, n))));
                self.logged = 0;
                Ok(writes)
            }
        }
    }
}
