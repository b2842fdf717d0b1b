//! The alert history on disk (`<data_dir>/history`): append-only segment files of alert
//! records with their indexes ([`super::segment`]), and an id → position map (its own small
//! sled database, `ids/`).
//!
//! * Positions are consecutive: segment `first` holds `first, first+1, …`. A query walks the
//!   segments newest first (or oldest first for the stream), intersecting the posting lists of
//!   its filters (tenant, rule, sensor, host, severity ≥) inside each segment, and skipping
//!   segments and 1,024-record blocks whose time range misses `since`/`until`; so a page costs
//!   in proportion to what it returns, not to the size of the history.
//! * An alert id is stored once: `ids` maps it to its position, and a position counts only if
//!   the record there carries that id (so an `ids` entry that outlived a torn segment tail is
//!   ignored, and the alert is stored again).
//! * Durability: a batch is appended to the active segment, then [`History::flush`] fsyncs the
//!   segment, then the id map; only then do readers (the live stream) see the new head. A torn
//!   tail is cut off on open, and the history's spool delivers the batch again.
//! * Retention drops whole sealed segments (age by their newest alert; bytes by alert JSON).

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde::Deserialize;
use tokio::sync::watch;
use uuid::Uuid;
use vedette_pipelines::rule::Severity;

use super::query::Filter;
use super::segment::{self, BLOCK, Segment};
use super::triage::TriageStore;
use crate::error::{EngineError, Result};

/// Alerts per segment before it is sealed (16 in unit tests, so tests cross segments).
const SEGMENT_ALERTS: u32 = if cfg!(test) { 16 } else { 131_072 };
/// Log bytes per segment before it is sealed.
const SEGMENT_BYTES: u64 = 128 << 20;
const TAG_TENANT: u8 = b'T';
const TAG_RULE: u8 = b'R';
const TAG_SENSOR: u8 = b'S';
const TAG_HOST: u8 = b'H';
const TAG_SEVERITY: u8 = b'V';

/// sled page cache of the id map.
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
    fn index_keys(&self) -> Vec<Vec<u8>> {
        let mut out = vec![
            key(TAG_TENANT, self.tenant.as_deref().unwrap_or("").as_bytes()),
            key(TAG_RULE, self.rule_id.as_bytes()),
            key(TAG_SEVERITY, &[self.severity as u8]),
        ];
        if let Some(s) = &self.sensor_id {
            out.push(key(TAG_SENSOR, s.as_bytes()));
        }
        if let Some(h) = &self.host {
            out.push(key(TAG_HOST, h.as_bytes()));
        }
        out
    }
}

fn key(tag: u8, value: &[u8]) -> Vec<u8> {
    let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
    let mut k = Vec::with_capacity(3 + value.len());
    k.push(tag);
    k.extend_from_slice(&len.to_be_bytes());
    k.extend_from_slice(&value[..usize::from(len)]);
    k
}

fn keys_of(json: &[u8]) -> Option<Vec<Vec<u8>>> {
    serde_json::from_slice::<Keys>(json).ok().map(|k| k.index_keys())
}

/// One stored alert: its position and JSON.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Position in the history (also the live stream's event id).
    pub position: u64,
    /// The alert's id.
    pub id: Uuid,
    /// When the engine raised it (µs).
    pub detected_at: i64,
    /// The alert as JSON.
    pub json: Vec<u8>,
}

impl Stored {
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

struct Inner {
    /// Ascending by first position; the last one is the active segment.
    segments: Vec<Segment>,
    count: u64,
    bytes: u64,
    /// Positions appended but not yet flushed.
    unflushed: bool,
}

impl Inner {
    fn next(&self) -> u64 {
        self.segments.last().map_or(1, |s| s.first + u64::from(s.count))
    }

    fn segment_of(&self, pos: u64) -> Option<&Segment> {
        let i = self.segments.partition_point(|s| s.first <= pos).checked_sub(1)?;
        let s = &self.segments[i];
        (pos < s.first + u64::from(s.count)).then_some(s)
    }
}

/// The alert history.
pub struct History {
    dir: PathBuf,
    db: sled::Db,
    ids: sled::Tree,
    inner: RwLock<Inner>,
    head: watch::Sender<u64>,
    retention: Retention,
    triage: TriageStore,
}

fn storage(what: &str) -> impl Fn(sled::Error) -> EngineError + '_ {
    move |source| EngineError::from(vedette_actors::ActorError::Storage { path: format!("history {what}"), source })
}

fn file_err(what: &str) -> impl Fn(std::io::Error) -> EngineError + '_ {
    move |source| EngineError::Io { what: format!("alert history: {what}"), source }
}

fn pos_of(v: &[u8]) -> Option<u64> {
    v.try_into().ok().map(u64::from_be_bytes)
}

impl History {
    /// Opens (or creates) the history in directory `path`.
    pub fn open(path: &Path, retention: Retention) -> Result<Self> {
        let db = sled::Config::new()
            .path(path.join("ids"))
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(storage(&path.display().to_string()))?;
        Self::with_db(path, db, retention)
    }

    /// The history in directory `path` whose id map is the opened database `db`.
    pub fn with_db(path: &Path, db: sled::Db, retention: Retention) -> Result<Self> {
        let ids = db.open_tree("ids").map_err(storage("ids"))?;
        let dir = path.join("segments");
        std::fs::create_dir_all(&dir).map_err(file_err("creating the segments directory"))?;
        let mut segments = Vec::new();
        let (mut count, mut bytes) = (0u64, 0u64);
        for first in segment::list(&dir).map_err(file_err("listing segments"))? {
            let (seg, active_ids) = Segment::open(&dir, first, &keys_of).map_err(file_err("opening a segment"))?;
            // Records that reached the active segment's file may lack their id entry (a crash
            // between the two writes): put them back, so a replayed batch is not stored twice.
            for (n, id) in active_ids.iter().enumerate() {
                ids.insert(id, &(first + n as u64).to_be_bytes()).map_err(storage("ids"))?;
            }
            count += u64::from(seg.count);
            bytes += seg.json_bytes;
            segments.push(seg);
        }
        if segments.last().is_none_or(Segment::is_sealed) {
            let first = segments.last().map_or(1, |s| s.first + u64::from(s.count));
            segments.push(Segment::create(&dir, first).map_err(file_err("creating a segment"))?);
        }
        let inner = Inner { segments, count, bytes, unflushed: false };
        let (head, _) = watch::channel(inner.next() - 1);
        let triage = TriageStore::open(&db)?;
        Ok(Self { dir, db, ids, inner: RwLock::new(inner), head, retention, triage })
    }

    fn read_inner(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().expect("history lock is never poisoned")
    }

    fn write_inner(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().expect("history lock is never poisoned")
    }

    /// Whether the alert `id` is stored (its id entry points at a record carrying it).
    fn is_stored(&self, inner: &Inner, id: &Uuid) -> Result<bool> {
        let Some(p) = self.ids.get(id.as_bytes()).map_err(storage("ids"))?.and_then(|v| pos_of(&v)) else {
            return Ok(false);
        };
        let Some(seg) = inner.segment_of(p) else { return Ok(false) };
        let rec = seg.read((p - seg.first) as u32).map_err(file_err("reading a record"))?;
        Ok(rec.id == *id.as_bytes())
    }

    /// Stores alerts (JSON, as spooled) in order; an id already stored is skipped. Returns how
    /// many were new. Durable (and visible to the live stream) after [`History::flush`].
    pub fn append(&self, records: &[&[u8]]) -> Result<usize> {
        let mut inner = self.write_inner();
        let mut bytes = Vec::with_capacity(records.iter().map(|r| r.len() + 28).sum());
        let mut meta = Vec::with_capacity(records.len());
        let mut ids = sled::Batch::default();
        let mut seen = std::collections::HashSet::new();
        let next = inner.next();
        for rec in records {
            // Anything the spool holds was serialized from an alert; a record that does not
            // parse would be an engine bug, and is skipped rather than blocking the history.
            let Ok(keys) = serde_json::from_slice::<Keys>(rec) else {
                tracing::error!("An alert in the history spool is not valid alert JSON; skipped.");
                continue;
            };
            if !seen.insert(keys.alert_id) || self.is_stored(&inner, &keys.alert_id)? {
                continue;
            }
            let at = keys.detected_at.timestamp_micros();
            ids.insert(keys.alert_id.as_bytes().as_slice(), &(next + meta.len() as u64).to_be_bytes());
            segment::encode(at, keys.alert_id.as_bytes(), rec, &mut bytes);
            meta.push((at, rec.len(), keys.index_keys()));
        }
        if meta.is_empty() {
            return Ok(0);
        }
        let added = meta.len();
        let active = inner.segments.last_mut().expect("there is always an active segment");
        active.append(&bytes, &meta).map_err(file_err("appending to a segment"))?;
        inner.count += added as u64;
        inner.bytes += meta.iter().map(|m| m.1 as u64).sum::<u64>();
        inner.unflushed = true;
        self.ids.apply_batch(ids).map_err(storage("ids"))?;
        Ok(added)
    }

    /// Makes everything appended durable (segment first, then the id map), seals a full
    /// segment, and publishes the new head.
    pub async fn flush(&self) -> Result<()> {
        let head = {
            let mut inner = self.write_inner();
            if inner.unflushed {
                let active = inner.segments.last_mut().expect("there is always an active segment");
                active.sync().map_err(file_err("syncing a segment"))?;
                if active.count >= SEGMENT_ALERTS || active.log_len >= SEGMENT_BYTES {
                    active.seal(&self.dir).map_err(file_err("sealing a segment"))?;
                    let first = inner.next();
                    let fresh = Segment::create(&self.dir, first).map_err(file_err("creating a segment"))?;
                    inner.segments.push(fresh);
                }
                inner.unflushed = false;
            }
            inner.next() - 1
        };
        self.db.flush_async().await.map_err(storage("flush"))?;
        self.head.send_if_modified(|h| std::mem::replace(h, head) != head);
        Ok(())
    }

    /// The newest durable position (0 when empty); changes as alerts are flushed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    /// The newest durable position now.
    pub fn head(&self) -> u64 {
        *self.head.borrow()
    }

    /// `(alerts, bytes of alert JSON)` stored.
    pub fn size(&self) -> (usize, u64) {
        let inner = self.read_inner();
        (usize::try_from(inner.count).unwrap_or(usize::MAX), inner.bytes)
    }

    /// Bytes the segments take on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.read_inner().segments.iter().map(Segment::disk_bytes).sum()
    }

    /// The triage records of the stored alerts.
    pub fn triage(&self) -> &TriageStore {
        &self.triage
    }

    /// How many durable alerts of `tenant` (`None`: of every tenant) the history holds.
    pub fn count(&self, tenant: Option<&str>) -> Result<u64> {
        let head = self.head();
        let inner = self.read_inner();
        let Some(t) = tenant else {
            let first = inner.segments.first().map_or(1, |s| s.first);
            return Ok((head + 1).saturating_sub(first));
        };
        let k = key(TAG_TENANT, t.as_bytes());
        let mut n = 0u64;
        for seg in &inner.segments {
            let end = (seg.first + u64::from(seg.count)).min(head + 1);
            if end <= seg.first {
                continue;
            }
            let limit = (end - seg.first) as u32;
            let postings = seg.postings(&k).map_err(file_err("reading an index"))?;
            n += postings.partition_point(|&p| p < limit) as u64;
        }
        Ok(n)
    }

    /// One alert by id.
    pub fn get(&self, id: &Uuid) -> Result<Option<Stored>> {
        let Some(p) = self.ids.get(id.as_bytes()).map_err(storage("ids"))?.and_then(|v| pos_of(&v)) else {
            return Ok(None);
        };
        let inner = self.read_inner();
        let Some(seg) = inner.segment_of(p) else { return Ok(None) };
        let rec = seg.read((p - seg.first) as u32).map_err(file_err("reading a record"))?;
        Ok((rec.id == *id.as_bytes()).then_some(Stored {
            position: p,
            id: *id,
            detected_at: rec.detected_at,
            json: rec.json,
        }))
    }

    /// Up to `limit` alerts matching `filter`, walking from `from` (exclusive) in `dir`:
    /// newest first below `from` (`u64::MAX` = from the newest), or oldest first above it.
    /// Only durable alerts (at or below [`History::head`]) are returned.
    pub fn scan(&self, filter: &Filter, dir: Dir, from: u64, limit: usize) -> Result<Vec<Stored>> {
        let groups = groups(filter);
        let head = self.head();
        let inner = self.read_inner();
        let mut out = Vec::new();
        let order: Box<dyn Iterator<Item = &Segment>> = match dir {
            Dir::Desc => Box::new(inner.segments.iter().rev()),
            Dir::Asc => Box::new(inner.segments.iter()),
        };
        for seg in order {
            if out.len() >= limit {
                break;
            }
            let end = (seg.first + u64::from(seg.count)).min(head + 1); // exclusive
            if end <= seg.first {
                continue;
            }
            // Local range [lo, hi) of candidates.
            let (lo, hi) = match dir {
                Dir::Desc => (0, end.min(from).saturating_sub(seg.first)),
                Dir::Asc => (from.saturating_add(1).max(seg.first) - seg.first, end - seg.first),
            };
            if lo >= hi || filter.since.is_some_and(|s| seg.max_t < s) || filter.until.is_some_and(|u| seg.min_t >= u) {
                continue;
            }
            let (lo, hi) = (lo as u32, hi as u32);
            let take = |n: u32, out: &mut Vec<Stored>| -> Result<()> {
                if filter.has_time() && !seg.block_overlaps(n / BLOCK, filter.since, filter.until) {
                    return Ok(());
                }
                let rec = seg.read(n).map_err(file_err("reading a record"))?;
                if filter.time_matches(rec.detected_at)
                    && filter.triage.is_none_or(|t| self.triage.state(&rec.id).is_ok_and(|s| s == t))
                {
                    out.push(Stored {
                        position: seg.first + u64::from(n),
                        id: Uuid::from_bytes(rec.id),
                        detected_at: rec.detected_at,
                        json: rec.json,
                    });
                }
                Ok(())
            };
            if groups.is_empty() {
                let mut range: Box<dyn Iterator<Item = u32>> = match dir {
                    Dir::Desc => Box::new((lo..hi).rev()),
                    Dir::Asc => Box::new(lo..hi),
                };
                while out.len() < limit {
                    let Some(n) = range.next() else { break };
                    if filter.has_time() && !seg.block_overlaps(n / BLOCK, filter.since, filter.until) {
                        // Skip to the block's edge.
                        let edge = match dir {
                            Dir::Desc => (n / BLOCK) * BLOCK,
                            Dir::Asc => (n / BLOCK + 1) * BLOCK,
                        };
                        range = match dir {
                            Dir::Desc => Box::new((lo..edge.max(lo)).rev()),
                            Dir::Asc => Box::new(edge.min(hi)..hi),
                        };
                        continue;
                    }
                    take(n, &mut out)?;
                }
            } else {
                let hits = intersect(seg, &groups).map_err(file_err("reading an index"))?;
                let window = &hits[hits.partition_point(|&n| n < lo)..hits.partition_point(|&n| n < hi)];
                match dir {
                    Dir::Desc => {
                        for &n in window.iter().rev() {
                            if out.len() >= limit {
                                break;
                            }
                            take(n, &mut out)?;
                        }
                    }
                    Dir::Asc => {
                        for &n in window {
                            if out.len() >= limit {
                                break;
                            }
                            take(n, &mut out)?;
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Deletes the oldest sealed segments while the history is over its byte bound or their
    /// newest alert is older than its age bound; returns how many alerts left.
    pub fn prune(&self, now_micros: i64) -> Result<usize> {
        let cutoff = now_micros - i64::try_from(self.retention.max_age.as_micros()).unwrap_or(i64::MAX);
        let mut removed = 0;
        loop {
            let seg = {
                let mut inner = self.write_inner();
                let Some(oldest) = inner.segments.first() else { break };
                let over = inner.bytes > self.retention.max_bytes || oldest.max_t < cutoff;
                if !oldest.is_sealed() || !over {
                    break;
                }
                let seg = inner.segments.remove(0);
                inner.count -= u64::from(seg.count);
                inner.bytes -= seg.json_bytes;
                seg
            };
            for n in 0..seg.count {
                let Ok(rec) = seg.read(n) else { continue };
                let pos = (seg.first + u64::from(n)).to_be_bytes();
                if self.ids.get(rec.id).map_err(storage("ids"))?.as_deref() == Some(&pos[..]) {
                    self.ids.remove(rec.id).map_err(storage("ids"))?;
                    self.triage.remove(&rec.id)?;
                }
            }
            removed += seg.count as usize;
            seg.remove(&self.dir).map_err(file_err("removing a segment"))?;
        }
        Ok(removed)
    }
}

/// Index keys per filter; each inner list is a union (severity ≥ x), the outer an
/// intersection.
fn groups(f: &Filter) -> Vec<Vec<Vec<u8>>> {
    let mut g = Vec::new();
    if let Some(t) = &f.tenant {
        g.push(vec![key(TAG_TENANT, t.as_bytes())]);
    }
    if let Some(r) = &f.rule {
        g.push(vec![key(TAG_RULE, r.as_bytes())]);
    }
    if let Some(x) = &f.sensor {
        g.push(vec![key(TAG_SENSOR, x.as_bytes())]);
    }
    if let Some(h) = &f.host {
        g.push(vec![key(TAG_HOST, h.as_bytes())]);
    }
    if let Some(min) = f.min_severity
        && min > Severity::Info
    {
        g.push((min as u8..=Severity::Critical as u8).map(|v| key(TAG_SEVERITY, &[v])).collect());
    }
    g
}

/// The ascending local record numbers of `seg` in every group (a union inside a group).
fn intersect(seg: &Segment, groups: &[Vec<Vec<u8>>]) -> std::io::Result<Vec<u32>> {
    let mut lists = Vec::with_capacity(groups.len());
    for group in groups {
        let mut list = Vec::new();
        for k in group {
            list.extend(seg.postings(k)?);
        }
        if group.len() > 1 {
            list.sort_unstable();
        }
        if list.is_empty() {
            return Ok(Vec::new());
        }
        lists.push(list);
    }
    lists.sort_by_key(Vec::len);
    let (first, rest) = lists.split_first().expect("at least one group");
    Ok(first.iter().copied().filter(|n| rest.iter().all(|l| l.binary_search(n).is_ok())).collect())
}

#[cfg(test)]
mod tests;
