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
    /// Window checkpoints: state key and bytes.
    pub windows: Vec<(String, Vec<u8>)>,
    /// Frames applied: sensor id and sequence number.
    pub frames: Vec<(Arc<str>, u64)>,
}

/// What a commit did.
#[derive(Debug, Default)]
pub struct Committed {
    /// Each touched sensor's `through` after the commit (for its ACK).
    pub through: HashMap<Arc<str>, u64>,
    /// Alerts spooled.
    pub spooled: usize,
    /// Alerts dropped because the dedup ledger had their id.
    pub duplicates: usize,
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

/// Spools `records` (alerts as JSON, with their ids) into every sink of `sinks` and writes
/// `windows` and `frames`, in one transaction, then flushes. `make_room` must already have
/// been awaited for these bytes on each spool.
pub async fn commit(
    store: &StateStore,
    sinks: &[Arc<SinkHandle>],
    ids: &[uuid::Uuid],
    records: &[Vec<u8>],
    windows: &[(String, Vec<u8>)],
    frames: &[(Arc<str>, u64)],
) -> Result<Committed, CommitError> {
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
        trees.extend(d.trees());
    }
    let spool_at = trees.len();
    trees.extend(sinks.iter().map(|s| s.spool.tree()));
    let now_us = chrono::Utc::now().timestamp_micros();

    let write = |states: &[(Arc<str>, Vec<u8>)]| {
        trees[..].transaction(|t| {
            for (sensor, bytes) in states {
                t[0].insert(sensor.as_bytes(), bytes.as_slice())?;
            }
            for (key, bytes) in windows {
                t[1].insert(key.as_bytes(), bytes.as_slice())?;
            }
            let fresh = match &store.dedup {
                Some(d) => d.record(&t[2], &t[3], ids, now_us)?,
                None => vec![true; ids.len()],
            };
            for (s, first) in firsts.iter().enumerate() {
                for (i, r) in records.iter().enumerate().filter(|(i, _)| fresh[*i]) {
                    t[spool_at + s].insert(&Spool::key(first + i as u64), r.as_slice())?;
                }
            }
            Ok::<_, ConflictableTransactionError<std::convert::Infallible>>(fresh)
        })
    };
    let (fresh, through) = store.ledger.commit_with(frames, write).map_err(|e| match e {
        TransactionError::Storage(e) => CommitError::Transaction(e.to_string()),
        TransactionError::Abort(never) => match never {},
    })?;
    let (kept, kept_bytes) =
        fresh.iter().zip(records).filter(|(f, _)| **f).fold((0u64, 0u64), |(n, b), (_, r)| (n + 1, b + r.len() as u64));
    for s in sinks {
        s.spool.appended(kept, kept_bytes);
    }
    let duplicates = fresh.len() - kept as usize;
    if let Some(d) = &store.dedup {
        d.hits(duplicates as u64);
    }
    store.db.flush_async().await.map_err(|e| CommitError::Flush(e.to_string()))?;
    Ok(Committed { through, spooled: kept as usize, duplicates })
}
