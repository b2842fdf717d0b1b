//! The durable per-sink spool (sled tree `spool:<sink>`) and dead-letter queue (`dlq:<sink>`).
//!
//! Records are keyed by a big-endian `u64` sequence number, so the tree's order is arrival
//! order. A record is appended when an alert is routed to the sink and removed only when the
//! destination confirmed it (or it was dead-lettered). Alerts of a batch enter every spool in
//! the batch's one state-store transaction ([`crate::commit`]): [`Spool::make_room`] waits for
//! room first, [`Spool::allocate`] hands out keys, and [`Spool::appended`] counts what the
//! transaction wrote.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use vedette_config::OverflowPolicy;

use crate::error::{ActorError, Result};

/// One spooled record: sequence number and bytes (an alert as JSON).
pub type Record = (u64, sled::IVec);

/// What [`Spool::append`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Records added.
    pub added: usize,
    /// Oldest records dropped to make room (`drop_oldest`).
    pub dropped: u64,
}

#[derive(Debug)]
struct Counters {
    next_seq: u64,
    /// Keys below this may have been handed out (persisted in tree `spool_meta`), so a
    /// restart never hands out a key twice, even after the spool emptied: sinks that remember
    /// the last key they wrote (the file sink) rely on it.
    reserved_to: u64,
    bytes: u64,
    records: u64,
    /// The bound and what happens at it (a config reload may change both).
    max_bytes: u64,
    policy: OverflowPolicy,
}

/// Keys reserved at a time in `spool_meta` (one small write per this many records).
const KEY_BLOCK: u64 = 1 << 20;

/// A sink's spool.
pub struct Spool {
    name: String,
    /// Random id given to the spool when it was created (its keys count from 1 again only in
    /// a new instance).
    instance: u64,
    tree: sled::Tree,
    meta: sled::Tree,
    counters: Mutex<Counters>,
    /// Signalled when records are removed (room for a blocked append).
    room: Notify,
    /// Signalled when records are appended (work for the delivery loop).
    data: Notify,
    /// `vedette_sink_spool_records` / `_bytes` of this sink, set on every change.
    gauges: std::sync::OnceLock<(prometheus::IntGauge, prometheus::IntGauge)>,
}

fn storage(path: &str) -> impl Fn(sled::Error) -> ActorError + '_ {
    move |source| ActorError::Storage { path: path.to_string(), source }
}

impl Spool {
    /// Opens (or creates) the spool of sink `name`; counts what a previous run left in it.
    pub fn open(db: &sled::Db, name: &str, max_bytes: u64, policy: OverflowPolicy) -> Result<Self> {
        let tree_name = format!("spool:{name}");
        let tree = db.open_tree(&tree_name).map_err(storage(&tree_name))?;
        let (mut bytes, mut records) = (0u64, 0u64);
        for kv in tree.iter() {
            let (_, v) = kv.map_err(storage(&tree_name))?;
            bytes += v.len() as u64;
            records += 1;
        }
        let meta = db.open_tree("spool_meta").map_err(storage("spool_meta"))?;
        let instance_key = format!("instance:{name}");
        let instance = match meta.get(instance_key.as_bytes()).map_err(storage("spool_meta"))? {
            Some(v) => seq_of(&v),
            None => {
                // Durable with the flush of the first records spooled under it.
                let id = uuid::Uuid::new_v4().as_u64_pair().0;
                meta.insert(instance_key.as_bytes(), &id.to_be_bytes()).map_err(storage("spool_meta"))?;
                id
            }
        };
        let reserved_to = meta.get(name.as_bytes()).map_err(storage("spool_meta"))?.map_or(1, |v| seq_of(&v));
        let next_seq = match tree.last().map_err(storage(&tree_name))? {
            Some((k, _)) => seq_of(&k) + 1,
            None => 1,
        }
        .max(reserved_to);
        Ok(Self {
            name: name.to_string(),
            instance,
            tree,
            meta,
            counters: Mutex::new(Counters { next_seq, reserved_to, bytes, records, max_bytes, policy }),
            room: Notify::new(),
            data: Notify::new(),
            gauges: std::sync::OnceLock::new(),
        })
    }

    /// Keeps `records` and `bytes` equal to the spool's depth from now on (every append and
    /// removal sets them, so they follow the spool while an attempt is in flight too).
    pub fn publish_to(&self, records: prometheus::IntGauge, bytes: prometheus::IntGauge) {
        let c = self.counters.lock().expect("spool lock is never poisoned");
        let _ = self.gauges.set((records, bytes));
        self.publish(&c);
    }

    fn publish(&self, c: &Counters) {
        if let Some((records, bytes)) = self.gauges.get() {
            records.set(i64::try_from(c.records).unwrap_or(i64::MAX));
            bytes.set(i64::try_from(c.bytes).unwrap_or(i64::MAX));
        }
    }

    /// The oldest spooled record, if any.
    pub fn oldest(&self) -> Option<Vec<u8>> {
        self.tree.first().ok().flatten().map(|(_, v)| v.to_vec())
    }

    /// Sink name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The spool's instance id: a destination that remembers spool keys (the file sink's
    /// position record) must remember it too, since a new spool counts its keys from 1 again.
    pub fn instance(&self) -> u64 {
        self.instance
    }

    /// Changes the bound and the overflow policy (a config reload). Appends waiting for room
    /// look again: a larger bound or `drop_oldest` lets them through; a smaller bound only
    /// holds back new alerts (nothing spooled is dropped by the change itself).
    pub fn set_limits(&self, max_bytes: u64, policy: OverflowPolicy) {
        let mut c = self.counters.lock().expect("spool lock is never poisoned");
        c.max_bytes = max_bytes;
        c.policy = policy;
        drop(c);
        self.room.notify_waiters();
    }

    /// `(records, bytes)` spooled now.
    pub fn depth(&self) -> (u64, u64) {
        let c = self.counters.lock().expect("spool lock is never poisoned");
        (c.records, c.bytes)
    }

    /// Appends records in order. With `block`, waits until they fit (a record larger than the
    /// whole spool is accepted into an empty spool, so nothing waits forever); with
    /// `drop_oldest`, removes the oldest records until they fit.
    pub async fn append(&self, records: &[Vec<u8>]) -> Result<Appended> {
        let mut out = Appended::default();
        for r in records {
            let size = r.len() as u64;
            loop {
                // Register interest before checking, so a removal in between is not missed.
                let room = self.room.notified();
                tokio::pin!(room);
                room.as_mut().enable();
                {
                    let mut c = self.counters.lock().expect("spool lock is never poisoned");
                    let fits = c.bytes + size <= c.max_bytes || c.records == 0;
                    if fits {
                        self.insert(&mut c, r)?;
                        break;
                    }
                    if c.policy == OverflowPolicy::DropOldest {
                        out.dropped += self.drop_oldest(&mut c, size)?;
                        self.insert(&mut c, r)?;
                        break;
                    }
                }
                // Wake the delivery loop before waiting: it frees the room this append needs.
                self.data.notify_one();
                room.await;
            }
            out.added += 1;
        }
        if out.added > 0 {
            self.data.notify_one();
        }
        Ok(out)
    }

    /// Before a transactional append of `bytes`: with `block`, waits until they fit (an empty
    /// spool takes anything, so nothing waits forever); with `drop_oldest`, drops the oldest
    /// records until they fit and returns how many. Concurrent appenders may each pass the check
    /// before either writes, so a spool can exceed its bound by at most one batch per writer.
    pub async fn make_room(&self, bytes: u64) -> Result<u64> {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut c = self.counters.lock().expect("spool lock is never poisoned");
                if c.bytes + bytes <= c.max_bytes || c.records == 0 {
                    return Ok(0);
                }
                if c.policy == OverflowPolicy::DropOldest {
                    return self.drop_oldest(&mut c, bytes);
                }
            }
            self.data.notify_one();
            room.await;
        }
    }

    /// Reserves `n` consecutive keys; returns the first. Unused keys are simply skipped; no
    /// key is ever handed out twice, across restarts too.
    pub fn allocate(&self, n: u64) -> Result<u64> {
        let mut c = self.counters.lock().expect("spool lock is never poisoned");
        self.take_keys(&mut c, n)
    }

    fn take_keys(&self, c: &mut Counters, n: u64) -> Result<u64> {
        let first = c.next_seq;
        c.next_seq += n;
        if c.next_seq > c.reserved_to {
            // Durable with the flush that makes the records using these keys durable (it
            // comes later in the same store).
            c.reserved_to = c.next_seq + KEY_BLOCK;
            self.meta.insert(self.name.as_bytes(), &c.reserved_to.to_be_bytes()).map_err(storage("spool_meta"))?;
        }
        Ok(first)
    }

    /// The spool's tree, for a transaction that appends to it under keys from
    /// [`Spool::allocate`].
    pub fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    /// Counts records a committed transaction appended and wakes the delivery loop.
    pub fn appended(&self, records: u64, bytes: u64) {
        if records == 0 {
            return;
        }
        let mut c = self.counters.lock().expect("spool lock is never poisoned");
        c.records += records;
        c.bytes += bytes;
        self.publish(&c);
        drop(c);
        self.data.notify_one();
    }

    /// The key of spool record `seq`.
    pub fn key(seq: u64) -> [u8; 8] {
        seq.to_be_bytes()
    }

    fn insert(&self, c: &mut Counters, bytes: &[u8]) -> Result<()> {
        let key = self.take_keys(c, 1)?.to_be_bytes();
        self.tree.insert(key, bytes).map_err(storage(&self.name))?;
        c.bytes += bytes.len() as u64;
        c.records += 1;
        self.publish(c);
        Ok(())
    }

    fn drop_oldest(&self, c: &mut Counters, need: u64) -> Result<u64> {
        let mut dropped = 0;
        while c.records > 0 && c.bytes + need > c.max_bytes {
            let Some((_, v)) = self.tree.pop_min().map_err(storage(&self.name))? else { break };
            c.bytes -= v.len() as u64;
            c.records -= 1;
            dropped += 1;
        }
        self.publish(c);
        Ok(dropped)
    }

    /// Up to `max_records` records (and `max_bytes`, at least one record) with sequence numbers
    /// above `after`, oldest first.
    pub fn read(&self, after: u64, max_records: usize, max_bytes: u64) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        let mut bytes = 0u64;
        for kv in self.tree.range((after + 1).to_be_bytes()..) {
            let (k, v) = kv.map_err(storage(&self.name))?;
            if !out.is_empty() && (out.len() >= max_records || bytes + v.len() as u64 > max_bytes) {
                break;
            }
            bytes += v.len() as u64;
            out.push((seq_of(&k), v));
        }
        Ok(out)
    }

    /// Removes confirmed records (already removed ones are skipped) and wakes blocked appends.
    pub fn remove(&self, seqs: &[u64]) -> Result<()> {
        let mut c = self.counters.lock().expect("spool lock is never poisoned");
        for s in seqs {
            if let Some(v) = self.tree.remove(s.to_be_bytes()).map_err(storage(&self.name))? {
                c.bytes -= v.len() as u64;
                c.records -= 1;
            }
        }
        self.publish(&c);
        drop(c);
        self.room.notify_waiters();
        Ok(())
    }

    /// One record's bytes, if still spooled.
    pub fn get(&self, seq: u64) -> Option<Vec<u8>> {
        self.tree.get(seq.to_be_bytes()).ok().flatten().map(|v| v.to_vec())
    }

    /// Waits until records are appended (or returns at once if some were appended since the
    /// last wait).
    pub async fn wait_for_data(&self) {
        self.data.notified().await;
    }
}

fn seq_of(key: &[u8]) -> u64 {
    key.try_into().map(u64::from_be_bytes).unwrap_or_default()
}

/// One dead-lettered record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct DeadLetter {
    /// Position in the dead-letter queue.
    pub id: u64,
    /// Why the destination refused it, as it said.
    pub reason: String,
    /// When it was dead-lettered (RFC 3339).
    pub at: String,
    /// The record (an alert as JSON).
    pub record: serde_json::Value,
}

/// A sink's dead-letter queue: records the destination refused permanently.
pub struct DeadLetters {
    tree: sled::Tree,
    name: String,
}

impl DeadLetters {
    /// Opens (or creates) the dead-letter queue of sink `name`.
    pub fn open(db: &sled::Db, name: &str) -> Result<Self> {
        let tree_name = format!("dlq:{name}");
        let tree = db.open_tree(&tree_name).map_err(storage(&tree_name))?;
        Ok(Self { tree, name: tree_name })
    }

    /// Adds a refused record with the destination's reason.
    pub fn push(&self, record: &[u8], reason: &str) -> Result<u64> {
        let id = match self.tree.last().map_err(storage(&self.name))? {
            Some((k, _)) => seq_of(&k) + 1,
            None => 1,
        };
        let record = serde_json::from_slice(record)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(record).into_owned()));
        let entry = DeadLetter { id, reason: reason.to_string(), at: chrono::Utc::now().to_rfc3339(), record };
        let bytes = serde_json::to_vec(&entry).expect("dead letters serialize");
        self.tree.insert(id.to_be_bytes(), bytes).map_err(storage(&self.name))?;
        Ok(id)
    }

    /// Records in the queue.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// Whether the queue is empty.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// Up to `limit` entries, oldest first.
    pub fn list(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        self.list_where(limit, |_| true)
    }

    /// Up to `limit` entries that `keep` accepts, oldest first.
    pub fn list_where(&self, limit: usize, keep: impl Fn(&DeadLetter) -> bool) -> Result<Vec<DeadLetter>> {
        let mut out = Vec::new();
        for kv in self.tree.iter() {
            if out.len() >= limit {
                break;
            }
            let (_, v) = kv.map_err(storage(&self.name))?;
            if let Ok(d) = serde_json::from_slice::<DeadLetter>(&v)
                && keep(&d)
            {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Moves every entry back into `spool` (oldest first) for another delivery attempt;
    /// returns how many.
    pub async fn replay(&self, spool: &Spool) -> Result<usize> {
        self.replay_where(spool, |_| true).await
    }

    /// Moves the entries `keep` accepts back into `spool` (oldest first); returns how many.
    pub async fn replay_where(&self, spool: &Spool, keep: impl Fn(&DeadLetter) -> bool) -> Result<usize> {
        let entries = self.list_where(usize::MAX, keep)?;
        let mut n = 0;
        for e in entries {
            let bytes = serde_json::to_vec(&e.record).expect("json values serialize");
            spool.append(&[bytes]).await?;
            self.tree.remove(e.id.to_be_bytes()).map_err(storage(&self.name))?;
            n += 1;
        }
        Ok(n)
    }

    /// Deletes every entry; returns how many.
    pub fn purge(&self) -> Result<usize> {
        let n = self.tree.len();
        self.tree.clear().map_err(storage(&self.name))?;
        Ok(n)
    }

    /// Deletes the entries `keep` accepts; returns how many.
    pub fn purge_where(&self, keep: impl Fn(&DeadLetter) -> bool) -> Result<usize> {
        let entries = self.list_where(usize::MAX, keep)?;
        for e in &entries {
            self.tree.remove(e.id.to_be_bytes()).map_err(storage(&self.name))?;
        }
        Ok(entries.len())
    }
}

impl DeadLetter {
    /// The tenant of the dead-lettered alert, if it has one.
    pub fn tenant(&self) -> Option<&str> {
        self.record.get("tenant").and_then(|t| t.as_str())
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    fn db() -> (tempfile::TempDir, sled::Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("state")).unwrap();
        (dir, db)
    }

    fn rec(i: u32) -> Vec<u8> {
        format!("{{\"n\":{}}}", 1000 + i).into_bytes()
    }

    #[tokio::test]
    async fn records_survive_reopening_in_order_and_leave_only_when_removed() {
        let (dir, db) = db();
        let s = Spool::open(&db, "k", 1 << 20, OverflowPolicy::Block).unwrap();
        s.append(&(0..10).map(rec).collect::<Vec<_>>()).await.unwrap();
        let first = s.read(0, 4, u64::MAX).unwrap();
        assert_eq!(first.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 3, 4]);
        s.remove(&[1, 2]).unwrap();
        assert_eq!(s.depth(), (8, 8 * 10));
        db.flush().unwrap();
        drop(s);
        drop(db);
        let db = sled::open(dir.path().join("state")).unwrap();
        let s = Spool::open(&db, "k", 1 << 20, OverflowPolicy::Block).unwrap();
        assert_eq!(s.depth(), (8, 80));
        let all = s.read(0, 100, u64::MAX).unwrap();
        assert_eq!(all.first().unwrap().1.as_ref(), rec(2).as_slice());
        s.append(&[rec(10)]).await.unwrap();
        assert_eq!(s.read(all.last().unwrap().0, 10, u64::MAX).unwrap().len(), 1, "new records after the old ones");
        // Byte bound of a read: at least one record, then only what fits.
        assert_eq!(s.read(0, 100, 25).unwrap().len(), 2);
        assert_eq!(s.read(0, 100, 1).unwrap().len(), 1);
    }

    #[tokio::test]
    async fn block_waits_for_room_and_drop_oldest_counts_what_it_dropped() {
        let (_dir, db) = db();
        let s = std::sync::Arc::new(Spool::open(&db, "b", 30, OverflowPolicy::Block).unwrap());
        s.append(&[rec(0), rec(1), rec(2)]).await.unwrap();
        let s2 = std::sync::Arc::clone(&s);
        let blocked = tokio::spawn(async move { s2.append(&[rec(3)]).await.unwrap() });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!blocked.is_finished(), "a full spool with `block` waits");
        assert_eq!(s.depth(), (3, 30));
        s.remove(&[1]).unwrap();
        assert_eq!(blocked.await.unwrap(), Appended { added: 1, dropped: 0 });
        assert_eq!(s.depth(), (3, 30));

        let d = Spool::open(&db, "d", 30, OverflowPolicy::DropOldest).unwrap();
        let out = d.append(&(0..5).map(rec).collect::<Vec<_>>()).await.unwrap();
        assert_eq!(out, Appended { added: 5, dropped: 2 });
        let left: Vec<_> = d.read(0, 10, u64::MAX).unwrap().into_iter().map(|r| r.1.to_vec()).collect();
        assert_eq!(left, [rec(2), rec(3), rec(4)]);
    }

    #[tokio::test]
    async fn new_limits_apply_at_once_and_let_a_waiting_append_through() {
        let (_dir, db) = db();
        let s = std::sync::Arc::new(Spool::open(&db, "l", 30, OverflowPolicy::Block).unwrap());
        s.append(&[rec(0), rec(1), rec(2)]).await.unwrap();
        let s2 = std::sync::Arc::clone(&s);
        let blocked = tokio::spawn(async move { s2.append(&[rec(3)]).await.unwrap() });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!blocked.is_finished());
        s.set_limits(40, OverflowPolicy::Block);
        assert_eq!(blocked.await.unwrap(), Appended { added: 1, dropped: 0 }, "a larger bound lets it in");
        // A smaller bound keeps what is spooled and holds new records back; drop_oldest then
        // makes room.
        s.set_limits(20, OverflowPolicy::Block);
        assert_eq!(s.depth(), (4, 40));
        assert!(s.make_room(10).now_or_never().is_none(), "waits for room");
        s.set_limits(20, OverflowPolicy::DropOldest);
        assert_eq!(s.make_room(10).await.unwrap(), 3);
        assert_eq!(s.depth(), (1, 10));
    }

    #[tokio::test]
    async fn dead_letters_keep_the_reason_and_replay_into_the_spool() {
        let (_dir, db) = db();
        let s = Spool::open(&db, "es", 1 << 20, OverflowPolicy::Block).unwrap();
        let q = DeadLetters::open(&db, "es").unwrap();
        q.push(&rec(7), "mapper_parsing_exception: failed to parse field [n]").unwrap();
        q.push(b"not json", "400 Bad Request").unwrap();
        let l = q.list(10).unwrap();
        assert_eq!((l.len(), l[0].id, l[1].id), (2, 1, 2));
        assert_eq!(l[0].record, serde_json::json!({"n": 1007}));
        assert!(l[0].reason.contains("mapper_parsing_exception"));
        assert_eq!(l[1].record, serde_json::json!("not json"));
        assert_eq!(q.replay(&s).await.unwrap(), 2);
        assert!(q.is_empty());
        assert_eq!(s.depth().0, 2);
        q.push(&rec(8), "x").unwrap();
        assert_eq!(q.purge().unwrap(), 1);
        assert_eq!(q.len(), 0);
    }
}
