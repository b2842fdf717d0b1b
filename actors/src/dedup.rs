//! The dedup ledger: alert ids already spooled, so the same detection made again — a replay, a
//! second routing path, another node forwarding it — is dropped before it reaches any spool.
//!
//! Two sled trees: `dedup` maps an alert id (16 bytes) to its expiry (µs since the epoch,
//! big-endian) and holds the entry count under the key `count`; `dedup_expiry` indexes the
//! same entries by `expiry ++ id`, so the oldest expire first. Ids are recorded inside the
//! batch's one transaction ([`crate::commit`]), so a crash never leaves an alert spooled but
//! unrecorded or recorded but not spooled. [`DedupLedger::prune`] removes expired entries and,
//! past `max_entries`, the oldest.

use sled::transaction::{ConflictableTransactionResult, TransactionalTree};
use sled::{Transactional, Tree};
use uuid::Uuid;

use crate::error::{ActorError, Result};
use crate::metrics::Metrics;

const COUNT_KEY: &[u8] = b"count";

/// Entries removed by one [`DedupLedger::prune`] transaction at most (keeps each short).
const PRUNE_CHUNK: usize = 10_000;

/// The dedup ledger.
pub struct DedupLedger {
    ids: Tree,
    expiry: Tree,
    ttl_us: i64,
    max_entries: u64,
    metrics: Option<Metrics>,
}

fn storage(path: &'static str) -> impl Fn(sled::Error) -> ActorError {
    move |source| ActorError::Storage { path: path.into(), source }
}

fn count_of(v: Option<sled::IVec>) -> u64 {
    v.and_then(|v| v.as_ref().try_into().ok()).map(u64::from_be_bytes).unwrap_or(0)
}

/// What [`DedupLedger::prune`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Entries past their TTL.
    pub expired: u64,
    /// Oldest entries removed to stay within `max_entries`.
    pub evicted: u64,
}

impl DedupLedger {
    /// Opens the ledger's trees in `db`; ids are remembered for `ttl`, at most `max_entries`.
    pub fn open(db: &sled::Db, ttl: std::time::Duration, max_entries: u64, metrics: Option<Metrics>) -> Result<Self> {
        let ids = db.open_tree("dedup").map_err(storage("dedup"))?;
        let expiry = db.open_tree("dedup_expiry").map_err(storage("dedup_expiry"))?;
        let ttl_us = i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX);
        let ledger = Self { ids, expiry, ttl_us, max_entries, metrics };
        ledger.report();
        Ok(ledger)
    }

    /// The two trees, for a transaction that records ids ([`DedupLedger::record`]).
    pub fn trees(&self) -> [&Tree; 2] {
        [&self.ids, &self.expiry]
    }

    /// Inside a transaction over [`DedupLedger::trees`]: records each id not seen (or expired)
    /// and returns, per id, whether it is new. Ids repeated within `ids` count once.
    pub fn record<E>(
        &self,
        ids: &TransactionalTree,
        expiry: &TransactionalTree,
        alerts: &[Uuid],
        now_us: i64,
    ) -> ConflictableTransactionResult<Vec<bool>, E> {
        let until = now_us.saturating_add(self.ttl_us);
        let mut added = 0u64;
        let mut out = Vec::with_capacity(alerts.len());
        for id in alerts {
            let seen =
                ids.get(id.as_bytes())?.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok()).map(i64::from_be_bytes);
            let fresh = seen.is_none_or(|exp| exp <= now_us);
            if fresh {
                if seen.is_none() {
                    added += 1;
                }
                ids.insert(id.as_bytes(), &until.to_be_bytes())?;
                expiry.insert(expiry_key(until, id).as_slice(), &[])?;
            }
            out.push(fresh);
        }
        if added > 0 {
            let count = count_of(ids.get(COUNT_KEY)?) + added;
            ids.insert(COUNT_KEY, &count.to_be_bytes())?;
        }
        Ok(out)
    }

    /// Ids in the ledger.
    pub fn len(&self) -> u64 {
        count_of(self.ids.get(COUNT_KEY).ok().flatten())
    }

    /// Whether the ledger is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `id` is in the ledger and not expired at `now_us`.
    pub fn contains(&self, id: &Uuid, now_us: i64) -> bool {
        self.ids
            .get(id.as_bytes())
            .ok()
            .flatten()
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .is_some_and(|exp| i64::from_be_bytes(exp) > now_us)
    }

    /// Counts metrics for ids found already spooled.
    pub fn hits(&self, n: u64) {
        if let Some(m) = &self.metrics
            && n > 0
        {
            m.dedup_hits.inc_by(n);
        }
    }

    /// Removes entries expired at `now_us`, then the oldest past `max_entries`.
    pub fn prune(&self, now_us: i64) -> Result<Pruned> {
        let mut out = Pruned::default();
        loop {
            let over = self.len().saturating_sub(self.max_entries);
            let chunk: Vec<sled::IVec> = self
                .expiry
                .iter()
                .keys()
                .take(PRUNE_CHUNK)
                .map_while(|k| k.ok())
                .enumerate()
                .take_while(|(i, k)| expiry_of(k) <= now_us || (*i as u64) < over)
                .map(|(_, k)| k)
                .collect();
            if chunk.is_empty() {
                break;
            }
            let (expired, evicted) = [&self.ids, &self.expiry]
                .transaction(|t| {
                    let (ids, expiry) = (&t[0], &t[1]);
                    let (mut expired, mut evicted) = (0u64, 0u64);
                    for k in &chunk {
                        expiry.remove(k)?;
                        let id = &k[8..];
                        // A re-recorded id has a later expiry: only its newest index entry
                        // removes it.
                        if ids.get(id)?.is_some_and(|v| v.as_ref() == &k[..8]) {
                            ids.remove(id)?;
                            if expiry_of(k) <= now_us { expired += 1 } else { evicted += 1 }
                        }
                    }
                    let count = count_of(ids.get(COUNT_KEY)?).saturating_sub(expired + evicted);
                    ids.insert(COUNT_KEY, &count.to_be_bytes())?;
                    Ok::<_, sled::transaction::ConflictableTransactionError<std::convert::Infallible>>((
                        expired, evicted,
                    ))
                })
                .map_err(|e| match e {
                    sled::transaction::TransactionError::Storage(source) => {
                        ActorError::Storage { path: "dedup".into(), source }
                    }
                    sled::transaction::TransactionError::Abort(never) => match never {},
                })?;
            out.expired += expired;
            out.evicted += evicted;
            if chunk.len() < PRUNE_CHUNK && self.len() <= self.max_entries {
                break;
            }
        }
        if let Some(m) = &self.metrics {
            m.dedup_evicted.with_label_values(&["expired"]).inc_by(out.expired);
            m.dedup_evicted.with_label_values(&["capacity"]).inc_by(out.evicted);
        }
        self.report();
        Ok(out)
    }

    /// Updates the entry gauge.
    pub fn report(&self) {
        if let Some(m) = &self.metrics {
            m.dedup_entries.set(i64::try_from(self.len()).unwrap_or(i64::MAX));
        }
    }
}

fn expiry_key(until: i64, id: &Uuid) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&until.to_be_bytes());
    k[8..].copy_from_slice(id.as_bytes());
    k
}

fn expiry_of(key: &[u8]) -> i64 {
    key.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()).map_or(i64::MAX, i64::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(l: &DedupLedger, ids: &[Uuid], now: i64) -> Vec<bool> {
        let [a, b] = l.trees();
        [a, b]
            .transaction(|t| l.record(&t[0], &t[1], ids, now))
            .map_err(|e: sled::transaction::TransactionError<()>| format!("{e:?}"))
            .unwrap()
    }

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn ids_are_new_once_until_they_expire_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let ttl = std::time::Duration::from_secs(10);
        {
            let db = sled::open(dir.path()).unwrap();
            let l = DedupLedger::open(&db, ttl, 100, None).unwrap();
            assert_eq!(record(&l, &[id(1), id(2), id(1)], 0), [true, true, false]);
            assert_eq!(record(&l, &[id(2), id(3)], 1_000_000), [false, true]);
            assert_eq!(l.len(), 3);
            db.flush().unwrap();
        }
        let db = sled::open(dir.path()).unwrap();
        let l = DedupLedger::open(&db, ttl, 100, None).unwrap();
        assert_eq!(l.len(), 3);
        assert!(l.contains(&id(1), 9_999_999));
        assert!(!l.contains(&id(1), 10_000_000), "expired at its TTL");
        // An expired id is new again; re-recording it does not count it twice.
        assert_eq!(record(&l, &[id(1)], 10_000_000), [true]);
        assert_eq!(l.len(), 3);
        // Pruning at 10.5 s: id 2 (expired at 10 s) goes; id 1's stale index entry goes but id 1
        // (now valid until 20 s) stays.
        let p = l.prune(10_500_000).unwrap();
        assert_eq!(p, Pruned { expired: 1, evicted: 0 });
        assert_eq!(l.len(), 2);
        assert!(l.contains(&id(1), 10_500_000) && l.contains(&id(3), 10_500_000));
    }

    #[test]
    fn past_max_entries_the_oldest_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let l = DedupLedger::open(&db, std::time::Duration::from_secs(3600), 5, None).unwrap();
        for n in 0..12u128 {
            record(&l, &[id(n)], n as i64);
        }
        let p = l.prune(100).unwrap();
        assert_eq!(p, Pruned { expired: 0, evicted: 7 });
        assert_eq!(l.len(), 5);
        assert!((0..7).all(|n| !l.contains(&id(n), 100)));
        assert!((7..12).all(|n| l.contains(&id(n), 100)));
    }
}
