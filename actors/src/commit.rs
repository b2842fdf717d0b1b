//! One batch's effects made durable together: its alerts in every sink's spool, its window
//! checkpoints, its frames' sequence numbers and its alert ids in the dedup ledger are written
//! in **one** sled transaction and flushed once, before any frame of the batch is acknowledged.
//! After a crash either all of a batch's effects are on disk or none are: a resent frame is
//! either recognised as applied or applied for the first time, never half.

use std::collections::HashMap;
use std::sync::Arc;

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use vedette_pipelines::alert::Alert;
use vedette_pipelines::window::checkpoint::WindowWrite;

use crate::dedup::DedupLedger;
use crate::ledger::SeqLedger;
use crate::sinks::delivery::SinkHandle;
use crate::sinks::spool::Spool;

/// The durable state a batch touches.
pub struct StateStore {
    /// The state store (flushed once per commit).
    pub db: sled::Db,
    /// Per-sensor sequence state.
    pub ledger: Arc<SeqLedger>,
    /// Window checkpoints by state key (tree `windows`).
    pub windows: sled::Tree,
    /// Alert ids already spooled (`None`: dedup off).
    pub dedup: Option<DedupLedger>,
}

/// What one batch (or one window tick) changes.
#[derive(Debug, Default)]
pub struct Effects {
    /// Alerts for the sinks (after the alert-storm guard).
    pub alerts: Vec<Alert>,
    /// Window checkpoint writes (tree `windows`).
    pub windows: Vec<WindowWrite>,
    /// Frames applied: sensor id and sequence number.
    pub frames: Vec<(Arc<str>, u64)>,
    /// Per alert (empty, or parallel to `alerts`): sink names it must not be spooled to (an
    /// edge delivers it to those destinations itself).
    pub claimed: Vec<Vec<String>>,
}

/// What a commit did.
#[derive(Debug, Default)]
pub struct Committed {
    /// Each touched sensor's `through` after the commit (for its ACK).
    pub through: HashMap<Arc<str>, u64>,
    /// Alerts spooled.
    pub spooled: usize,
    /// Ids of the alerts dropped because the dedup ledger had them, once per dropped alert.
    pub repeated: Vec<uuid::Uuid>,
}

/// Why a commit failed. Nothing of the batch is durable, nothing in memory changed: the
/// caller may evaluate the batch again.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// A sink's spool could not make room.
    #[error("{0}")]
    Spool(String),
    /// The state store refused the transaction.
    #[error("state store transaction failed: {0} (is the data dir's disk full or read-only?)")]
    Transaction(String),
    /// The transaction is in memory but the flush to disk failed: the batch must not be
    /// evaluated again, and its frames must not be acknowledged.
    #[error("flushing the state store failed: {0} (is the data dir's disk full or read-only?)")]
    Flush(String),
}

/// Spools `records` (alerts as JSON, with their ids) into every sink of `sinks` (or, with
/// `targets`, the sinks marked for each record) and writes `windows` and `frames`, in one
/// transaction, then flushes. `make_room` must already have been awaited for these bytes on
/// each spool.
pub async fn commit(
    store: &StateStore,
    sinks: &[Arc<SinkHandle>],
    ids: &[uuid::Uuid],
    records: &[Vec<u8>],
    targets: Option<&[Vec<bool>]>,
    windows: &[WindowWrite],
    frames: &[(Arc<str>, u64)],
) -> Result<Committed, CommitError> {
    let to = |i: usize, s: usize| targets.is_none_or(|t| t.get(i).is_none_or(|m| m.get(s).copied().unwrap_or(true)));
    if records.is_empty() && windows.is_empty() && frames.is_empty() {
        return Ok(Committed::default());
    }
    let firsts = sinks
        .iter()
        .map(|s| s.spool.allocate(records.len() as u64))
        .collect::<crate::Result<Vec<u64>>>()
        .map_err(|e| CommitError::Transaction(e.to_string()))?;
    let mut trees: Vec<&sled::Tree> = vec![store.ledger.tree(), &store.windows];
    if let Some(d) = &store.dedup {
        trees.push(d.tree());
    }
    let spool_at = trees.len();
    trees.extend(sinks.iter().map(|s| s.spool.tree()));
    let now_us = chrono::Utc::now().timestamp_micros();

    let write = |states: &[(Arc<str>, Vec<u8>)]| {
        let (fresh, recorded) = trees[..].transaction(|t| {
            for (sensor, bytes) in states {
                t[0].insert(sensor.as_bytes(), bytes.as_slice())?;
            }
            for w in windows {
                match w {
                    WindowWrite::Put(key, bytes) => t[1].insert(key.as_slice(), bytes.as_slice())?,
                    WindowWrite::Remove(key) => t[1].remove(key.as_slice())?,
                };
            }
            let (fresh, recorded) = match &store.dedup {
                Some(d) => {
                    let (fresh, r) = d.record(&t[2], ids, now_us)?;
                    (fresh, Some(r))
                }
                None => (vec![true; ids.len()], None),
            };
            for (s, first) in firsts.iter().enumerate() {
                for (i, r) in records.iter().enumerate().filter(|(i, _)| fresh[*i] && to(*i, s)) {
                    t[spool_at + s].insert(&Spool::key(first + i as u64), r.as_slice())?;
                }
            }
            Ok::<_, ConflictableTransactionError<std::convert::Infallible>>((fresh, recorded))
        })?;
        // Still under the sequence ledger's lock: no other commit runs between the dedup
        // check and this.
        if let (Some(d), Some(r)) = (&store.dedup, recorded) {
            d.apply(r);
        }
        Ok::<_, TransactionError<std::convert::Infallible>>(fresh)
    };
    let (fresh, through) = store.ledger.commit_with(frames, write).map_err(|e| match e {
        TransactionError::Storage(e) => CommitError::Transaction(e.to_string()),
        TransactionError::Abort(never) => match never {},
    })?;
    for (s, sink) in sinks.iter().enumerate() {
        let (n, bytes) = (0..records.len())
            .filter(|i| fresh[*i] && to(*i, s))
            .fold((0u64, 0u64), |(n, b), i| (n + 1, b + records[i].len() as u64));
        sink.spool.appended(n, bytes);
    }
    let repeated: Vec<uuid::Uuid> = ids.iter().zip(&fresh).filter(|(_, f)| !**f).map(|(id, _)| *id).collect();
    if let Some(d) = &store.dedup {
        d.hits(repeated.len() as u64);
    }
    store.db.flush_async().await.map_err(|e| CommitError::Flush(e.to_string()))?;
    Ok(Committed { through, spooled: fresh.len() - repeated.len(), repeated })
}
