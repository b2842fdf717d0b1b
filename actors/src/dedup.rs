//! The dedup ledger: alert ids already spooled, so the same detection made again — a replay, a
//! second routing path, another node forwarding it — is dropped before it reaches any spool.
//!
//! Ids are kept as 64-bit fingerprints (the UUID's two halves XORed; alert ids are SHA-1 based,
//! so two different ids share a fingerprint with probability 2⁻⁶⁴ per pair — about 3·10⁻⁶ for a
//! full 10-million-id ledger) in time buckets of 1/24 of the TTL: the newest bucket is a hash
//! set, older ones sorted arrays (8 bytes per id). A bucket is forgotten whole once its newest
//! id is older than the TTL, and the oldest buckets first when the ledger holds more than its
//! bound. On disk (sled tree `dedup`) each commit adds **one** record — key `bucket ++ counter`,
//! value the packed fingerprints — inside the batch's transaction ([`crate::commit`]), so a
//! crash never leaves an alert spooled but unrecorded or recorded but not spooled. The ledger
//! is read back into memory at start.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use sled::Tree;
use sled::transaction::{ConflictableTransactionResult, TransactionalTree};
use uuid::Uuid;

use crate::error::{ActorError, Result};
use crate::metrics::Metrics;

/// Buckets per TTL.
const BUCKETS_PER_TTL: i64 = 24;

/// A 64-bit fingerprint of an alert id.
fn fingerprint(id: &Uuid) -> u64 {
    let (hi, lo) = id.as_u64_pair();
    hi ^ lo
}

#[derive(Debug, Default)]
struct Bucket {
    /// Ids of the bucket still being filled.
    open: HashSet<u64>,
    /// Ids of a closed bucket, sorted.
    closed: Box<[u64]>,
}

impl Bucket {
    fn contains(&self, f: u64) -> bool {
        self.open.contains(&f) || self.closed.binary_search(&f).is_ok()
    }

    fn len(&self) -> usize {
        self.open.len() + self.closed.len()
    }

    fn close(&mut self) {
        if !self.open.is_empty() {
            let mut all: Vec<u64> = self.closed.iter().copied().chain(self.open.drain()).collect();
            all.sort_unstable();
            all.dedup();
            self.closed = all.into_boxed_slice();
            self.open = HashSet::new();
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    buckets: BTreeMap<i64, Bucket>,
    total: u64,
    next_record: u64,
}

/// Fingerprints a committed transaction recorded, to apply in memory.
#[derive(Debug)]
pub struct Recorded {
    bucket: i64,
    fingerprints: Vec<u64>,
}

/// The dedup ledger.
pub struct DedupLedger {
    tree: Tree,
    bucket_us: i64,
    ttl_us: i64,
    max_entries: u64,
    inner: Mutex<Inner>,
    metrics: Option<Metrics>,
}

/// What [`DedupLedger::prune`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Ids past their TTL.
    pub expired: u64,
    /// Oldest ids removed to stay within `max_entries`.
    pub evicted: u64,
}

fn storage(source: sled::Error) -> ActorError {
    ActorError::Storage { path: "dedup".into(), source }
}

fn record_key(bucket: i64, n: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&bucket.to_be_bytes());
    k[8..].copy_from_slice(&n.to_be_bytes());
    k
}

fn word(b: &[u8], at: usize) -> Option<[u8; 8]> {
    b.get(at..at + 8).and_then(|s| s.try_into().ok())
}

impl DedupLedger {
    /// Opens the ledger in `db` and reads it into memory; ids are remembered for `ttl`, at
    /// most `max_entries`.
    pub fn open(db: &sled::Db, ttl: std::time::Duration, max_entries: u64, metrics: Option<Metrics>) -> Result<Self> {
        let tree = db.open_tree("dedup").map_err(storage)?;
        let ttl_us = i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX).max(1);
        let bucket_us = (ttl_us / BUCKETS_PER_TTL).max(1_000_000);
        let mut inner = Inner::default();
        for kv in tree.iter() {
            let (k, v) = kv.map_err(storage)?;
            let (Some(bucket), Some(n)) = (word(&k, 0), word(&k, 8)) else { continue };
            let bucket = i64::from_be_bytes(bucket);
            inner.next_record = inner.next_record.max(u64::from_be_bytes(n) + 1);
            let b = inner.buckets.entry(bucket).or_default();
            b.open.extend(v.chunks_exact(8).filter_map(|c| c.try_into().ok()).map(u64::from_be_bytes));
        }
        for b in inner.buckets.values_mut() {
            b.close();
        }
        inner.total = inner.buckets.values().map(|b| b.len() as u64).sum();
        let ledger = Self { tree, bucket_us, ttl_us, max_entries, inner: Mutex::new(inner), metrics };
        ledger.report();
        Ok(ledger)
    }

    /// The ledger's tree, for the transaction that records ids ([`DedupLedger::record`]).
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("dedup lock is never poisoned")
    }

    /// Inside a transaction over [`DedupLedger::tree`]: returns, per id, whether it is new (not
    /// in the ledger, and not earlier in `ids`), and writes the new ones as one record. Apply
    /// the returned [`Recorded`] with [`DedupLedger::apply`] once the transaction committed.
    /// Callers serialize record-commit-apply (the engine does it under the sequence ledger's
    /// lock), so two batches never both find the same id new.
    pub fn record<E>(
        &self,
        tree: &TransactionalTree,
        ids: &[Uuid],
        now_us: i64,
    ) -> ConflictableTransactionResult<(Vec<bool>, Recorded), E> {
        let bucket = now_us.div_euclid(self.bucket_us);
        let mut inner = self.lock();
        let mut batch = HashSet::with_capacity(ids.len());
        let fresh: Vec<bool> = ids
            .iter()
            .map(|id| {
                let f = fingerprint(id);
                !inner.buckets.values().any(|b| b.contains(f)) && batch.insert(f)
            })
            .collect();
        let fingerprints: Vec<u64> =
            ids.iter().zip(&fresh).filter(|(_, n)| **n).map(|(id, _)| fingerprint(id)).collect();
        if !fingerprints.is_empty() {
            let bytes: Vec<u8> = fingerprints.iter().flat_map(|f| f.to_be_bytes()).collect();
            let key = record_key(bucket, inner.next_record);
            inner.next_record += 1;
            tree.insert(&key, bytes)?;
        }
        Ok((fresh, Recorded { bucket, fingerprints }))
    }

    /// Applies a committed [`DedupLedger::record`] in memory.
    pub fn apply(&self, r: Recorded) {
        if r.fingerprints.is_empty() {
            return;
        }
        let mut inner = self.lock();
        let n = r.fingerprints.len() as u64;
        // A new bucket: the previous ones will not grow any more.
        if inner.buckets.last_key_value().is_some_and(|(b, _)| *b < r.bucket) {
            for b in inner.buckets.values_mut() {
                b.close();
            }
        }
        inner.buckets.entry(r.bucket).or_default().open.extend(r.fingerprints);
        inner.total += n;
    }

    /// Ids in the ledger.
    pub fn len(&self) -> u64 {
        self.lock().total
    }

    /// Whether the ledger is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `id` is in the ledger.
    pub fn contains(&self, id: &Uuid) -> bool {
        let f = fingerprint(id);
        self.lock().buckets.values().any(|b| b.contains(f))
    }

    /// Counts ids found already spooled.
    pub fn hits(&self, n: u64) {
        if let Some(m) = &self.metrics
            && n > 0
        {
            m.dedup_hits.inc_by(n);
        }
    }

    /// Forgets buckets whose newest id is older than the TTL at `now_us`, then the oldest
    /// buckets while the ledger holds more than `max_entries`.
    pub fn prune(&self, now_us: i64) -> Result<Pruned> {
        let mut out = Pruned::default();
        let mut dropped = Vec::new();
        {
            let mut inner = self.lock();
            let expired_before = now_us.saturating_sub(self.ttl_us).div_euclid(self.bucket_us);
            while let Some(&bucket) = inner.buckets.keys().next() {
                // The bucket's newest id was recorded before (bucket + 1) · width.
                let expired = bucket < expired_before;
                // Over the bound, drop the oldest — but never the bucket being filled.
                let over = inner.total > self.max_entries && inner.buckets.len() > 1;
                if !expired && !over {
                    break;
                }
                let n = inner.buckets.remove(&bucket).map_or(0, |b| b.len() as u64);
                inner.total -= n;
                if expired {
                    out.expired += n
                } else {
                    out.evicted += n
                }
                dropped.push(bucket);
            }
        }
        if let Some(last) = dropped.last() {
            let end = record_key(last + 1, 0);
            let mut batch = sled::Batch::default();
            for k in self.tree.range(..end).keys() {
                batch.remove(k.map_err(storage)?);
            }
            self.tree.apply_batch(batch).map_err(storage)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: std::time::Duration = std::time::Duration::from_secs(3600);
    const BUCKET_US: i64 = 3_600_000_000 / BUCKETS_PER_TTL;

    fn record(l: &DedupLedger, ids: &[Uuid], now: i64) -> Vec<bool> {
        let (fresh, r) = l.tree().transaction(|t| l.record::<()>(t, ids, now)).map_err(|e| format!("{e:?}")).unwrap();
        l.apply(r);
        fresh
    }

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
    }

    #[test]
    fn ids_are_new_once_until_they_expire_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let l = DedupLedger::open(&db, HOUR, 100, None).unwrap();
            assert_eq!(record(&l, &[id(1), id(2), id(1)], 0), [true, true, false]);
            assert_eq!(record(&l, &[id(2), id(3)], BUCKET_US + 1), [false, true]);
            assert_eq!(l.len(), 3);
            db.flush().unwrap();
        }
        let db = sled::open(dir.path()).unwrap();
        let l = DedupLedger::open(&db, HOUR, 100, None).unwrap();
        assert_eq!(l.len(), 3);
        assert!(l.contains(&id(1)) && l.contains(&id(3)) && !l.contains(&id(4)));
        assert_eq!(record(&l, &[id(1), id(4)], BUCKET_US + 2), [false, true]);
        // An hour after the first bucket ended, its ids (1 and 2) are forgotten; the second
        // bucket's (3, 4) are not.
        let p = l.prune(BUCKET_US + 3_600_000_000).unwrap();
        assert_eq!(p, Pruned { expired: 2, evicted: 0 });
        assert!(!l.contains(&id(1)) && l.contains(&id(3)) && l.contains(&id(4)));
        assert_eq!(record(&l, &[id(1)], 2 * BUCKET_US + 3_600_000_000), [true], "expired ids are new again");
        drop(l);
        let l = DedupLedger::open(&db, HOUR, 100, None).unwrap();
        assert_eq!(l.len(), 3, "pruned records are gone from disk too");
    }

    #[test]
    fn past_max_entries_the_oldest_buckets_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let l = DedupLedger::open(&db, HOUR, 5, None).unwrap();
        for n in 0..12u128 {
            // Three ids per bucket.
            record(&l, &[id(n)], (n as i64 / 3) * BUCKET_US);
        }
        let p = l.prune(4 * BUCKET_US).unwrap();
        assert_eq!(p, Pruned { expired: 0, evicted: 9 }, "three old buckets leave; the newest stays");
        assert_eq!(l.len(), 3);
        assert!((0..9).all(|n| !l.contains(&id(n))));
        assert!((9..12).all(|n| l.contains(&id(n))));
    }
}
