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
        let tracker = map.entry(sensor.to_string()).or_insert_with(|| {
            let state = self
                .tree
                .get(sensor.as_bytes())
                .ok()
                .flatten()
                .and_then(|v| serde_json::from_slice::<SeqState>(&v).ok())
                .unwrap_or_default();
            SeqTracker::new(state)
        });
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

    /// Marks frames applied, persists, and flushes to disk. Returns each sensor's `through`.
    pub async fn complete(&self, frames: &[(Arc<str>, u64)]) -> Result<HashMap<Arc<str>, u64>> {
        let mut touched: HashMap<Arc<str>, SeqState> = HashMap::new();
        for (sensor, seq) in frames {
            let state = self.with(sensor, |t| {
                t.complete(*seq);
                t.state.clone()
            });
            touched.insert(sensor.clone(), state);
        }
        for (sensor, state) in &touched {
            self.persist(sensor, state)?;
        }
        self.db.flush_async().await.map_err(|source| ActorError::Storage { path: "seq".into(), source })?;
        Ok(touched.into_iter().map(|(k, v)| (k, v.through)).collect())
    }

    fn persist(&self, sensor: &str, state: &SeqState) -> Result<()> {
        let bytes = serde_json::to_vec(state).expect("seq state serializes");
        self.tree
            .insert(sensor.as_bytes(), bytes)
            .map_err(|source| ActorError::Storage { path: "seq".into(), source })?;
        Ok(())
    }
}
