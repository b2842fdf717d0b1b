//! The alert history on disk: its own sled database (`<data_dir>/history`).
//!
//! * `alerts`: position (u64, big-endian, append order) → `detected_at` (i64 µs, BE) + the
//!   alert's JSON exactly as spooled.
//! * `ids`: alert id (16 bytes) → position. An alert delivered twice (a replayed spool batch)
//!   is stored once.
//! * `idx`: `[tag][len u16][value][position]` → empty, one entry per filterable field (tenant,
//!   rule, sensor, host, severity). A query intersects the lists of its filters (leapfrog
//!   join over positions), so a page costs in proportion to what it returns, not to the size
//!   of the history.
//! * `chunks`: per 4,096 positions, the min and max `detected_at`: time ranges skip whole
//!   chunks (positions follow arrival, so times are nearly ordered).
//! * `meta`: next position and stored bytes.
//!
//! Write order makes a crash harmless: `ids` and `meta.next` first, then `idx`, then `alerts`.
//! A batch cut short is delivered again by the history's spool; an id whose record is missing
//! gets a fresh position, and index entries left behind point at positions no record will
//! ever use.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use serde::Deserialize;
use tokio::sync::watch;
use uuid::Uuid;
use vedette_pipelines::rule::Severity;

use super::query::Filter;
use crate::error::{EngineError, Result};

/// Positions per time summary: 4,096 (16 in unit tests, so tests cross chunk boundaries).
const CHUNK_BITS: u32 = if cfg!(test) { 4 } else { 12 };
const TAG_TENANT: u8 = b'T';
const TAG_RULE: u8 = b'R';
const TAG_SENSOR: u8 = b'S';
const TAG_HOST: u8 = b'H';
const TAG_SEVERITY: u8 = b'V';

/// sled page cache of the history database.
pub const CACHE_BYTES: u64 = 32 << 20;

/// The fields of an alert the history indexes (the rest stays in the JSON).
#[derive(Debug, Deserialize)]
struct Keys {
    alert_id: Uuid,
    rule_id: String,
    severity: Severity,
    sensor_id: Option<String>,
    tenant: Option<String>,
    host: Option<String>,
    detected_at: chrono::DateTime<chrono::Utc>,
}

impl Keys {
    fn index_keys(&self, pos: u64) -> Vec<Vec<u8>> {
        let mut out = vec![
            idx_key(TAG_TENANT, self.tenant.as_deref().unwrap_or("").as_bytes(), pos),
            idx_key(TAG_RULE, self.rule_id.as_bytes(), pos),
            idx_key(TAG_SEVERITY, &[self.severity as u8], pos),
        ];
        if let Some(s) = &self.sensor_id {
            out.push(idx_key(TAG_SENSOR, s.as_bytes(), pos));
        }
        if let Some(h) = &self.host {
            out.push(idx_key(TAG_HOST, h.as_bytes(), pos));
        }
        out
    }
}

fn prefix(tag: u8, value: &[u8]) -> Vec<u8> {
    let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
    let mut k = Vec::with_capacity(3 + value.len() + 8);
    k.push(tag);
    k.extend_from_slice(&len.to_be_bytes());
    k.extend_from_slice(&value[..usize::from(len)]);
    k
}

fn idx_key(tag: u8, value: &[u8], pos: u64) -> Vec<u8> {
    let mut k = prefix(tag, value);
    k.extend_from_slice(&pos.to_be_bytes());
    k
}

fn pos_of(key: &[u8]) -> u64 {
    key.len().checked_sub(8).and_then(|i| key[i..].try_into().ok()).map(u64::from_be_bytes).unwrap_or_default()
}

/// One stored alert: its position and JSON.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Position in the history (also the live stream's event id).
    pub position: u64,
    /// When the engine raised it (µs).
    pub detected_at: i64,
    /// The alert as JSON.
    pub json: sled::IVec,
}

impl Stored {
    fn from_value(position: u64, v: sled::IVec) -> Option<Self> {
        let detected_at = i64::from_be_bytes(v.get(..8)?.try_into().ok()?);
        Some(Self { position, detected_at, json: v.subslice(8, v.len() - 8) })
    }

    /// The alert's tenant ("" when it has none).
    pub fn tenant(&self) -> String {
        #[derive(Deserialize)]
        struct T {
            tenant: Option<String>,
        }
        serde_json::from_slice::<T>(&self.json).ok().and_then(|t| t.tenant).unwrap_or_default()
    }
}

/// Which way a scan walks positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Newest first, positions below a bound.
    Desc,
    /// Oldest first, positions above a bound.
    Asc,
}

/// Retention bounds.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Oldest `detected_at` kept.
    pub max_age: std::time::Duration,
    /// Most stored bytes.
    pub max_bytes: u64,
}

struct Counters {
    next: u64,
    count: u64,
    bytes: u64,
    chunks: BTreeMap<u64, (i64, i64)>,
}

/// The alert history.
pub struct History {
    db: sled::Db,
    alerts: sled::Tree,
    ids: sled::Tree,
    idx: sled::Tree,
    chunks: sled::Tree,
    meta: sled::Tree,
    counters: Mutex<Counters>,
    head: watch::Sender<u64>,
    retention: Retention,
}

fn storage(what: &str) -> impl Fn(sled::Error) -> EngineError + '_ {
    move |source| EngineError::from(vedette_actors::ActorError::Storage { path: format!("history {what}"), source })
}

fn u64_of(v: Option<sled::IVec>) -> u64 {
    v.and_then(|v| v.as_ref().try_into().ok()).map(u64::from_be_bytes).unwrap_or_default()
}

impl History {
    /// Opens (or creates) the history at `path`.
    pub fn open(path: &Path, retention: Retention) -> Result<Self> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(storage(&path.display().to_string()))?;
        Self::with_db(db, retention)
    }

    /// The history in an opened database.
    pub fn with_db(db: sled::Db, retention: Retention) -> Result<Self> {
        let tree = |n: &str| db.open_tree(n).map_err(storage(n));
        let (alerts, ids, idx, chunks, meta) =
            (tree("alerts")?, tree("ids")?, tree("idx")?, tree("chunks")?, tree("meta")?);
        let last = alerts.last().map_err(storage("alerts"))?.map(|(k, _)| pos_of(&k)).unwrap_or(0);
        let next = u64_of(meta.get("next").map_err(storage("meta"))?).max(last + 1);
        let bytes = u64_of(meta.get("bytes").map_err(storage("meta"))?);
        // sled counts a tree by walking it: the count is kept in `meta`.
        let count = match meta.get("count").map_err(storage("meta"))? {
            Some(v) => u64_of(Some(v)),
            None => alerts.len() as u64,
        };
        let mut summary = BTreeMap::new();
        for kv in chunks.iter() {
            let (k, v) = kv.map_err(storage("chunks"))?;
            if let (Ok(k), Some(min), Some(max)) = (k.as_ref().try_into(), v.get(..8), v.get(8..16)) {
                let min = i64::from_be_bytes(min.try_into().expect("8 bytes"));
                let max = i64::from_be_bytes(max.try_into().expect("8 bytes"));
                summary.insert(u64::from_be_bytes(k), (min, max));
            }
        }
        let (head, _) = watch::channel(next - 1);
        Ok(Self {
            db,
            alerts,
            ids,
            idx,
            chunks,
            meta,
            counters: Mutex::new(Counters { next, count, bytes, chunks: summary }),
            head,
            retention,
        })
    }

    /// Stores alerts (JSON, as spooled) in order; an id already stored is skipped. Returns how
    /// many were new. Durable after [`History::flush`].
    pub fn append(&self, records: &[&[u8]]) -> Result<usize> {
        let mut c = self.counters.lock().expect("history lock is never poisoned");
        let (mut ids, mut idx, mut alerts) = (sled::Batch::default(), sled::Batch::default(), sled::Batch::default());
        let mut touched = BTreeMap::new();
        let mut added = 0;
        let mut seen = std::collections::HashSet::new();
        for rec in records {
            // Anything the spool holds was serialized from an alert; a record that does not
            // parse would be an engine bug, and is skipped rather than blocking the history.
            let Ok(keys) = serde_json::from_slice::<Keys>(rec) else {
                tracing::error!("An alert in the history spool is not valid alert JSON; skipped.");
                continue;
            };
            if !seen.insert(keys.alert_id) || self.is_stored(&keys.alert_id)? {
                continue;
            }
            let pos = c.next;
            c.next += 1;
            let at = keys.detected_at.timestamp_micros();
            ids.insert(keys.alert_id.as_bytes().as_slice(), &pos.to_be_bytes());
            for k in keys.index_keys(pos) {
                idx.insert(k, &[]);
            }
            let mut value = Vec::with_capacity(8 + rec.len());
            value.extend_from_slice(&at.to_be_bytes());
            value.extend_from_slice(rec);
            alerts.insert(&pos.to_be_bytes(), value);
            c.bytes += rec.len() as u64;
            c.count += 1;
            let e = touched.entry(pos >> CHUNK_BITS).or_insert((at, at));
            *e = (e.0.min(at), e.1.max(at));
            added += 1;
        }
        if added == 0 {
            return Ok(0);
        }
        self.ids.apply_batch(ids).map_err(storage("ids"))?;
        self.meta.insert("next", &c.next.to_be_bytes()).map_err(storage("meta"))?;
        self.idx.apply_batch(idx).map_err(storage("idx"))?;
        self.alerts.apply_batch(alerts).map_err(storage("alerts"))?;
        self.save_sizes(&c)?;
        for (chunk, (min, max)) in touched {
            let e = c.chunks.entry(chunk).or_insert((min, max));
            *e = (e.0.min(min), e.1.max(max));
            let mut v = e.0.to_be_bytes().to_vec();
            v.extend_from_slice(&e.1.to_be_bytes());
            self.chunks.insert(chunk.to_be_bytes(), v).map_err(storage("chunks"))?;
        }
        let last = c.next - 1;
        drop(c);
        self.head.send_replace(last);
        Ok(added)
    }

    fn is_stored(&self, id: &Uuid) -> Result<bool> {
        match self.ids.get(id.as_bytes()).map_err(storage("ids"))? {
            Some(p) => Ok(self.alerts.contains_key(&p).map_err(storage("alerts"))?),
            None => Ok(false),
        }
    }

    /// Makes everything appended durable.
    pub async fn flush(&self) -> Result<()> {
        self.db.flush_async().await.map_err(storage("flush"))?;
        Ok(())
    }

    /// The newest position (0 when empty); changes as alerts are appended.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    /// The newest position now.
    pub fn head(&self) -> u64 {
        *self.head.borrow()
    }

    /// `(alerts, bytes)` stored.
    pub fn size(&self) -> (usize, u64) {
        let c = self.counters.lock().expect("history lock is never poisoned");
        (usize::try_from(c.count).unwrap_or(usize::MAX), c.bytes)
    }

    fn save_sizes(&self, c: &Counters) -> Result<()> {
        self.meta.insert("bytes", &c.bytes.to_be_bytes()).map_err(storage("meta"))?;
        self.meta.insert("count", &c.count.to_be_bytes()).map_err(storage("meta"))?;
        Ok(())
    }

    /// One alert by id.
    pub fn get(&self, id: &Uuid) -> Result<Option<Stored>> {
        let Some(p) = self.ids.get(id.as_bytes()).map_err(storage("ids"))? else { return Ok(None) };
        Ok(self.alerts.get(&p).map_err(storage("alerts"))?.and_then(|v| Stored::from_value(pos_of(&p), v)))
    }

    /// Up to `limit` alerts matching `filter`, walking from `from` (exclusive) in `dir`:
    /// newest first below `from` (`u64::MAX` = from the newest), or oldest first above it.
    pub fn scan(&self, filter: &Filter, dir: Dir, from: u64, limit: usize) -> Result<Vec<Stored>> {
        let sources = self.sources(filter);
        let chunks = filter.has_time().then(|| self.counters.lock().expect("history lock").chunks.clone());
        let mut out = Vec::new();
        let mut bound = from;
        while out.len() < limit {
            let Some(cand) = self.leapfrog(&sources, dir, bound)? else { break };
            bound = cand;
            if let Some(chunks) = &chunks {
                let chunk = cand >> CHUNK_BITS;
                let overlaps = chunks.get(&chunk).is_none_or(|&(min, max)| {
                    filter.since.is_none_or(|s| max >= s) && filter.until.is_none_or(|u| min < u)
                });
                if !overlaps {
                    // Jump over the whole chunk.
                    bound = match dir {
                        Dir::Desc => chunk << CHUNK_BITS,
                        Dir::Asc => ((chunk + 1) << CHUNK_BITS) - 1,
                    };
                    continue;
                }
            }
            let Some(v) = self.alerts.get(cand.to_be_bytes()).map_err(storage("alerts"))? else { continue };
            let Some(stored) = Stored::from_value(cand, v) else { continue };
            if filter.time_matches(stored.detected_at) {
                out.push(stored);
            }
        }
        Ok(out)
    }

    /// Index prefixes per filter; each inner list is a union (severity ≥ x), the outer an
    /// intersection.
    fn sources(&self, f: &Filter) -> Vec<Vec<Vec<u8>>> {
        let mut s = Vec::new();
        if let Some(t) = &f.tenant {
            s.push(vec![prefix(TAG_TENANT, t.as_bytes())]);
        }
        if let Some(r) = &f.rule {
            s.push(vec![prefix(TAG_RULE, r.as_bytes())]);
        }
        if let Some(x) = &f.sensor {
            s.push(vec![prefix(TAG_SENSOR, x.as_bytes())]);
        }
        if let Some(h) = &f.host {
            s.push(vec![prefix(TAG_HOST, h.as_bytes())]);
        }
        if let Some(min) = f.min_severity
            && min > Severity::Info
        {
            s.push((min as u8..=Severity::Critical as u8).map(|v| prefix(TAG_SEVERITY, &[v])).collect());
        }
        s
    }

    /// The next position past `bound` (in `dir`) present in every source.
    fn leapfrog(&self, sources: &[Vec<Vec<u8>>], dir: Dir, mut bound: u64) -> Result<Option<u64>> {
        if sources.is_empty() {
            return self.next_alert(dir, bound);
        }
        'outer: loop {
            let Some(cand) = self.next_in(&sources[0], dir, bound)? else { return Ok(None) };
            for s in &sources[1..] {
                // Probe from just before `cand` so `cand` itself can match.
                let probe = match dir {
                    Dir::Desc => cand + 1,
                    Dir::Asc => cand - 1,
                };
                let Some(c) = self.next_in(s, dir, probe)? else { return Ok(None) };
                if c != cand {
                    bound = match dir {
                        Dir::Desc => c + 1,
                        Dir::Asc => c - 1,
                    };
                    continue 'outer;
                }
            }
            return Ok(Some(cand));
        }
    }

    fn next_alert(&self, dir: Dir, bound: u64) -> Result<Option<u64>> {
        let kv = match dir {
            Dir::Desc => self.alerts.range(..bound.to_be_bytes()).next_back(),
            Dir::Asc if bound == u64::MAX => None,
            Dir::Asc => self.alerts.range((bound + 1).to_be_bytes()..).next(),
        };
        Ok(kv.transpose().map_err(storage("alerts"))?.map(|(k, _)| pos_of(&k)))
    }

    /// The nearest position past `bound` in the union of `prefixes`.
    fn next_in(&self, prefixes: &[Vec<u8>], dir: Dir, bound: u64) -> Result<Option<u64>> {
        let mut best: Option<u64> = None;
        for p in prefixes {
            let key = |pos: u64| {
                let mut k = p.clone();
                k.extend_from_slice(&pos.to_be_bytes());
                k
            };
            let kv = match dir {
                Dir::Desc => self.idx.range(key(0)..key(bound)).next_back(),
                Dir::Asc if bound == u64::MAX => None,
                Dir::Asc => self.idx.range(key(bound + 1)..=key(u64::MAX)).next(),
            };
            if let Some((k, _)) = kv.transpose().map_err(storage("idx"))? {
                let pos = pos_of(&k);
                best = Some(match (best, dir) {
                    (None, _) => pos,
                    (Some(b), Dir::Desc) => b.max(pos),
                    (Some(b), Dir::Asc) => b.min(pos),
                });
            }
        }
        Ok(best)
    }

    /// Deletes the oldest alerts while the history is over its byte bound or they are older
    /// than its age bound; returns how many. Positions are in arrival order, so "oldest" is by
    /// position, and age stops at the first alert young enough.
    pub fn prune(&self, now_micros: i64) -> Result<usize> {
        let cutoff = now_micros - i64::try_from(self.retention.max_age.as_micros()).unwrap_or(i64::MAX);
        let mut removed = 0;
        loop {
            let mut c = self.counters.lock().expect("history lock is never poisoned");
            let Some((k, v)) = self.alerts.first().map_err(storage("alerts"))? else { break };
            let pos = pos_of(&k);
            let Some(stored) = Stored::from_value(pos, v) else { break };
            if c.bytes <= self.retention.max_bytes && stored.detected_at >= cutoff {
                break;
            }
            if let Ok(keys) = serde_json::from_slice::<Keys>(&stored.json) {
                let mut idx = sled::Batch::default();
                for key in keys.index_keys(pos) {
                    idx.remove(key);
                }
                self.idx.apply_batch(idx).map_err(storage("idx"))?;
                if self.ids.get(keys.alert_id.as_bytes()).map_err(storage("ids"))?.as_deref() == Some(&k[..]) {
                    self.ids.remove(keys.alert_id.as_bytes()).map_err(storage("ids"))?;
                }
            }
            self.alerts.remove(&k).map_err(storage("alerts"))?;
            c.bytes = c.bytes.saturating_sub(stored.json.len() as u64);
            c.count = c.count.saturating_sub(1);
            let chunk = pos >> CHUNK_BITS;
            let stale: Vec<u64> = c.chunks.range(..chunk).map(|(k, _)| *k).collect();
            for s in stale {
                c.chunks.remove(&s);
                self.chunks.remove(s.to_be_bytes()).map_err(storage("chunks"))?;
            }
            removed += 1;
            if removed % 1024 == 0 {
                self.save_sizes(&c)?;
            }
        }
        if removed > 0 {
            self.save_sizes(&self.counters.lock().expect("history lock is never poisoned"))?;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests;
