//! Durable per-sensor sequence state (sled), shared by sessions and dispatchers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use vedette_schemas::seq::{Admit, SeqState, SeqTracker};

use crate::error::{ActorError, Result};

/// Which frames of which sensor are applied; survives restarts.
pub struct SeqLedger {
    db: sled::Db,
    tree: sled::Tree,
    trackers: Mutex<HashMap<String, SeqTracker>>,
}

impl SeqLedger {
    /// Opens the `seq` tree of `db`.
    pub fn open(db: sled::Db) -> Result<Self> {
        let tree = db.open_tree("seq").map_err(|source| ActorError::Storage { path: "seq".into(), source })?;
        Ok(Self { db, tree, trackers: Mutex::new(HashMap::new()) })
    }

    fn with<T>(&self, sensor: &str, f: impl FnOnce(&mut SeqTracker) -> T) -> T {
        let mut map = self.trackers.lock().expect("ledger lock is never poisoned");
        let tracker = map.entry(sensor.to_string()).or_insert_with(|| self.load(sensor));
        f(tracker)
    }

    /// Session start: applies the sensor's low-water mark and returns `(through, highest)`.
    pub fn welcome(&self, sensor: &str, low_seq: u64) -> Result<(u64, u64)> {
        let state = self.with(sensor, |t| {
            if low_seq > 0 {
                t.state.abandon_below(low_seq);
            }
            t.state.clone()
        });
        self.persist(sensor, &state)?;
        Ok((state.through, state.highest()))
    }

    /// Classifies an incoming frame (see [`Admit`]).
    pub fn admit(&self, sensor: &str, seq: u64) -> Admit {
        self.with(sensor, |t| t.admit(seq))
    }

    /// A frame was dropped before becoming durable.
    pub fn abort(&self, sensor: &str, seq: u64) {
        self.with(sensor, |t| t.abort(seq));
    }

    /// `through` for a sensor.
    pub fn through(&self, sensor: &str) -> u64 {
        self.with(sensor, |t| t.state.through)
    }

    /// Marks frames that have no other effects (refused frames) applied, persists and
    /// flushes. Returns each sensor's `through`.
    pub async fn complete(&self, frames: &[(Arc<str>, u64)]) -> Result<HashMap<Arc<str>, u64>> {
        let ((), through) = self.commit_with(frames, |states| {
            for (sensor, bytes) in states {
                self.tree
                    .insert(sensor.as_bytes(), bytes.as_slice())
                    .map_err(|source| ActorError::Storage { path: "seq".into(), source })?;
            }
            Ok::<_, ActorError>(())
        })?;
        self.db.flush_async().await.map_err(|source| ActorError::Storage { path: "seq".into(), source })?;
        Ok(through)
    }

    /// Completes `frames` as part of a larger atomic write: computes each touched sensor's new
    /// state, hands the serialized states to `write` (which must store them under their sensor
    /// id in the `seq` tree, e.g. inside one transaction with the frames' other effects), and
    /// applies them in memory only if `write` succeeded. The ledger is locked throughout, so
    /// two batches completing frames of one sensor never overwrite each other's state.
    /// Returns `write`'s value and each touched sensor's `through`.
    pub fn commit_with<T, E>(
        &self,
        frames: &[(Arc<str>, u64)],
        write: impl FnOnce(&[(Arc<str>, Vec<u8>)]) -> std::result::Result<T, E>,
    ) -> std::result::Result<(T, HashMap<Arc<str>, u64>), E> {
        let mut map = self.trackers.lock().expect("ledger lock is never poisoned");
        let mut next: HashMap<Arc<str>, SeqTracker> = HashMap::new();
        for (sensor, seq) in frames {
            let tracker = match next.get_mut(sensor) {
                Some(t) => t,
                None => {
                    let current = map.get(sensor.as_ref()).cloned().unwrap_or_else(|| self.load(sensor));
                    next.entry(Arc::clone(sensor)).or_insert(current)
                }
            };
            tracker.complete(*seq);
        }
        let states: Vec<(Arc<str>, Vec<u8>)> = next
            .iter()
            .map(|(s, t)| (Arc::clone(s), serde_json::to_vec(&t.state).expect("seq state serializes")))
            .collect();
        let out = write(&states)?;
        let through = next.iter().map(|(s, t)| (Arc::clone(s), t.state.through)).collect();
        // The lock was held since the clones were taken, so they are the live trackers plus
        // these completions.
        for (sensor, tracker) in next {
            map.insert(sensor.to_string(), tracker);
        }
        Ok((out, through))
    }

    /// The `seq` tree (for a transaction that includes sequence state).
    pub fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    fn load(&self, sensor: &str) -> SeqTracker {
        let state = self
            .tree
            .get(sensor.as_bytes())
            .ok()
            .flatten()
            .and_then(|v| serde_json::from_slice::<SeqState>(&v).ok())
            .unwrap_or_default();
        SeqTracker::new(state)
    }

    fn persist(&self, sensor: &str, state: &SeqState) -> Result<()> {
        let bytes = serde_json::to_vec(state).expect("seq state serializes");
        self.tree
            .insert(sensor.as_bytes(), bytes)
            .map_err(|source| ActorError::Storage { path: "seq".into(), source })?;
        Ok(())
    }
}
