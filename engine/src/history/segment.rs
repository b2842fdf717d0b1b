//! History segments: append-only files of alert records, each with an index.
//!
//! A segment holds the alerts of consecutive positions, starting at `first` (its file name).
//! `<first>.log` holds records `[u32 len][i64 detected_at][16-byte alert id][alert JSON]`
//! (`len` counts what follows it), appended and fsync'd per batch. While a segment is active its
//! index lives in memory (rebuilt from the log on open; a torn tail is cut off); when it is
//! full it is **sealed**: `<first>.idx` is written (then renamed into place) with the record
//! offsets, the posting list of every indexed key (`[tag][u16 len][value]` → ascending local
//! record numbers) and the segment's time range. Only a sealed segment's key table stays in
//! memory; offsets and posting lists are read from the file when a query needs them.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Records per time block: a query with a time range skips blocks outside it (4 in unit tests).
pub const BLOCK: u32 = if cfg!(test) { 4 } else { 1024 };

/// Length of a record's header after its `u32` length: time and id.
const RECORD_HEAD: usize = 8 + 16;
const IDX_MAGIC: &[u8; 8] = b"VDHIDX01";

/// A record's index keys from its JSON (`None`: not an alert, the segment ends before it).
pub type KeysOf = dyn Fn(&[u8]) -> Option<Vec<Vec<u8>>>;

/// One record read back.
#[derive(Debug, Clone)]
pub struct Record {
    /// `detected_at`, µs.
    pub detected_at: i64,
    /// Alert id.
    pub id: [u8; 16],
    /// The alert's JSON.
    pub json: Vec<u8>,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("{}: {e}", path.display()))
}

/// Encodes one record.
pub fn encode(detected_at: i64, id: &[u8; 16], json: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(RECORD_HEAD + json.len()).expect("alerts are far below 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&detected_at.to_le_bytes());
    out.extend_from_slice(id);
    out.extend_from_slice(json);
}

fn read_record(file: &File, offset: u64) -> std::io::Result<Record> {
    let mut len = [0u8; 4];
    file.read_exact_at(&mut len, offset)?;
    let len = u32::from_le_bytes(len) as usize;
    if len < RECORD_HEAD {
        return Err(std::io::Error::other("record shorter than its header"));
    }
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset + 4)?;
    let detected_at = i64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
    let id: [u8; 16] = buf[8..24].try_into().expect("16 bytes");
    buf.drain(..RECORD_HEAD);
    Ok(Record { detected_at, id, json: buf })
}

/// The in-memory index of the active segment.
#[derive(Default)]
pub struct ActiveIndex {
    /// File offset of each record.
    pub offsets: Vec<u64>,
    /// Posting lists by key.
    pub postings: HashMap<Vec<u8>, Vec<u32>>,
    /// Time range.
    pub min_t: i64,
    /// Time range.
    pub max_t: i64,
    /// Min and max time of each block of [`BLOCK`] records.
    pub blocks: Vec<(i64, i64)>,
}

/// Where a sealed segment's posting list is.
#[derive(Debug, Clone, Copy)]
struct ListRef {
    at: u64,
    len: u32,
}

/// What a sealed segment keeps in memory.
pub struct Sealed {
    idx: File,
    offsets_at: u64,
    keys: HashMap<Vec<u8>, ListRef>,
    blocks: Vec<(i64, i64)>,
}

/// A segment.
pub struct Segment {
    /// Position of its first record.
    pub first: u64,
    /// Records in it.
    pub count: u32,
    /// Bytes of alert JSON in it.
    pub json_bytes: u64,
    /// Time range of its records (µs).
    pub min_t: i64,
    /// Time range of its records (µs).
    pub max_t: i64,
    /// Log file length.
    pub log_len: u64,
    log: File,
    log_path: PathBuf,
    /// `None` while active.
    sealed: Option<Sealed>,
    active: ActiveIndex,
}

fn name(first: u64) -> String {
    format!("{first:020}")
}

impl Segment {
    /// Creates an empty active segment.
    pub fn create(dir: &Path, first: u64) -> std::io::Result<Self> {
        let log_path = dir.join(format!("{}.log", name(first)));
        let log = File::options().create(true).read(true).append(true).open(&log_path)?;
        Ok(Self::new(first, log, log_path))
    }

    fn new(first: u64, log: File, log_path: PathBuf) -> Self {
        Self {
            first,
            count: 0,
            json_bytes: 0,
            min_t: i64::MAX,
            max_t: i64::MIN,
            log_len: 0,
            log,
            log_path,
            sealed: None,
            active: ActiveIndex::default(),
        }
    }

    /// Opens a segment: sealed if its index exists, else active (its index rebuilt from the
    /// log, whose torn tail, if any, is cut off). `index_keys` gives a record's keys from its
    /// JSON. Returns the segment and the ids of an active segment's records.
    pub fn open(dir: &Path, first: u64, index_keys: &KeysOf) -> std::io::Result<(Self, Vec<[u8; 16]>)> {
        let log_path = dir.join(format!("{}.log", name(first)));
        let idx_path = dir.join(format!("{}.idx", name(first)));
        let log = File::options().read(true).append(true).open(&log_path)?;
        let mut seg = Self::new(first, log, log_path);
        if idx_path.exists() {
            seg.load_index(&idx_path)?;
            return Ok((seg, Vec::new()));
        }
        let len = seg.log.metadata()?.len();
        let mut ids = Vec::new();
        let mut at = 0u64;
        while at < len {
            let Ok(rec) = read_record(&seg.log, at) else { break };
            let Some(keys) = index_keys(&rec.json) else { break };
            seg.index_record(at, rec.detected_at, rec.json.len(), &keys);
            ids.push(rec.id);
            at += 4 + (RECORD_HEAD + rec.json.len()) as u64;
        }
        if at < len {
            tracing::warn!(segment = %seg.log_path.display(), kept = at, len, "Alert history: cut a torn record off the end of a segment.");
            seg.log.set_len(at)?;
        }
        seg.log_len = at;
        Ok((seg, ids))
    }

    fn index_record(&mut self, offset: u64, detected_at: i64, json_len: usize, keys: &[Vec<u8>]) {
        let n = self.count;
        self.active.offsets.push(offset);
        if n.is_multiple_of(BLOCK) {
            self.active.blocks.push((detected_at, detected_at));
        }
        let b = self.active.blocks.last_mut().expect("a block for every record");
        *b = (b.0.min(detected_at), b.1.max(detected_at));
        for k in keys {
            self.active.postings.entry(k.clone()).or_default().push(n);
        }
        self.count += 1;
        self.json_bytes += json_len as u64;
        self.min_t = self.min_t.min(detected_at);
        self.max_t = self.max_t.max(detected_at);
    }

    /// Appends encoded records (one write; durable after [`Segment::sync`]). `records` are
    /// `(detected_at, json_len, keys)` in the order of `bytes`.
    pub fn append(&mut self, bytes: &[u8], records: &[(i64, usize, Vec<Vec<u8>>)]) -> std::io::Result<()> {
        debug_assert!(self.sealed.is_none(), "appends go to the active segment");
        (&self.log).write_all(bytes)?;
        let mut at = self.log_len;
        for (t, len, keys) in records {
            self.index_record(at, *t, *len, keys);
            at += 4 + (RECORD_HEAD + len) as u64;
        }
        self.log_len = at;
        Ok(())
    }

    /// Makes appended records durable.
    pub fn sync(&self) -> std::io::Result<()> {
        self.log.sync_data()
    }

    /// Writes the index file and drops the in-memory postings.
    pub fn seal(&mut self, dir: &Path) -> std::io::Result<()> {
        self.sync()?;
        let idx_path = dir.join(format!("{}.idx", name(self.first)));
        let tmp = idx_path.with_extension("idx.tmp");
        let mut keys: Vec<(&Vec<u8>, &Vec<u32>)> = self.active.postings.iter().collect();
        keys.sort();
        let mut buf = Vec::with_capacity(64 + self.active.offsets.len() * 8);
        buf.extend_from_slice(IDX_MAGIC);
        for v in [u64::from(self.count), self.json_bytes, self.min_t as u64, self.max_t as u64, self.log_len] {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        let table_at_slot = buf.len();
        buf.extend_from_slice(&[0u8; 16]); // key table offset and count, filled below
        for o in &self.active.offsets {
            buf.extend_from_slice(&o.to_le_bytes());
        }
        for (lo, hi) in &self.active.blocks {
            buf.extend_from_slice(&lo.to_le_bytes());
            buf.extend_from_slice(&hi.to_le_bytes());
        }
        let mut refs = Vec::with_capacity(keys.len());
        for (_, list) in &keys {
            refs.push((buf.len() as u64, list.len() as u32));
            for n in *list {
                buf.extend_from_slice(&n.to_le_bytes());
            }
        }
        let table_at = buf.len() as u64;
        for ((k, _), (at, len)) in keys.iter().zip(&refs) {
            buf.extend_from_slice(&(k.len() as u32).to_le_bytes());
            buf.extend_from_slice(k);
            buf.extend_from_slice(&at.to_le_bytes());
            buf.extend_from_slice(&len.to_le_bytes());
        }
        buf[table_at_slot..table_at_slot + 8].copy_from_slice(&table_at.to_le_bytes());
        buf[table_at_slot + 8..table_at_slot + 16].copy_from_slice(&(keys.len() as u64).to_le_bytes());
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&buf)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &idx_path)?;
        File::open(dir)?.sync_all()?;
        self.load_index(&idx_path)?;
        self.active = ActiveIndex::default();
        Ok(())
    }

    fn load_index(&mut self, path: &Path) -> std::io::Result<()> {
        let idx = File::open(path)?;
        let mut head = [0u8; 8 + 5 * 8 + 16];
        idx.read_exact_at(&mut head, 0)?;
        if &head[..8] != IDX_MAGIC {
            return Err(io_err(path, "not a history index file"));
        }
        let u = |i: usize| u64::from_le_bytes(head[8 + i * 8..16 + i * 8].try_into().expect("8 bytes"));
        self.count = u32::try_from(u(0)).map_err(|e| io_err(path, e))?;
        self.json_bytes = u(1);
        self.min_t = u(2) as i64;
        self.max_t = u(3) as i64;
        self.log_len = u(4);
        let (table_at, nkeys) = (u(5), u(6));
        let offsets_at = head.len() as u64;
        let file_len = idx.metadata()?.len();
        let mut table = vec![0u8; usize::try_from(file_len.saturating_sub(table_at)).map_err(|e| io_err(path, e))?];
        idx.read_exact_at(&mut table, table_at)?;
        let nblocks = u64::from(self.count.div_ceil(BLOCK));
        let mut raw = vec![0u8; usize::try_from(nblocks * 16).map_err(|e| io_err(path, e))?];
        idx.read_exact_at(&mut raw, offsets_at + u64::from(self.count) * 8)?;
        let blocks = raw
            .chunks_exact(16)
            .map(|c| {
                let lo = i64::from_le_bytes(c[..8].try_into().expect("8"));
                (lo, i64::from_le_bytes(c[8..].try_into().expect("8")))
            })
            .collect();
        let mut keys = HashMap::with_capacity(nkeys as usize);
        let mut at = 0usize;
        for _ in 0..nkeys {
            let bad = || io_err(path, "truncated key table");
            let klen = u32::from_le_bytes(table.get(at..at + 4).ok_or_else(bad)?.try_into().expect("4")) as usize;
            let key = table.get(at + 4..at + 4 + klen).ok_or_else(bad)?.to_vec();
            let rest = table.get(at + 4 + klen..at + 16 + klen).ok_or_else(bad)?;
            let list_at = u64::from_le_bytes(rest[..8].try_into().expect("8"));
            let len = u32::from_le_bytes(rest[8..12].try_into().expect("4"));
            keys.insert(key, ListRef { at: list_at, len });
            at += 16 + klen;
        }
        self.sealed = Some(Sealed { idx, offsets_at, keys, blocks });
        Ok(())
    }

    /// Whether the segment is sealed.
    pub fn is_sealed(&self) -> bool {
        self.sealed.is_some()
    }

    /// The ascending local record numbers carrying `key`.
    pub fn postings(&self, key: &[u8]) -> std::io::Result<Vec<u32>> {
        match &self.sealed {
            None => Ok(self.active.postings.get(key).cloned().unwrap_or_default()),
            Some(s) => {
                let Some(r) = s.keys.get(key) else { return Ok(Vec::new()) };
                let mut buf = vec![0u8; r.len as usize * 4];
                s.idx.read_exact_at(&mut buf, r.at)?;
                Ok(buf.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().expect("4"))).collect())
            }
        }
    }

    /// Whether block `b` may hold a record in `[since, until)`.
    pub fn block_overlaps(&self, b: u32, since: Option<i64>, until: Option<i64>) -> bool {
        let blocks = self.sealed.as_ref().map_or(&self.active.blocks, |s| &s.blocks);
        blocks.get(b as usize).is_none_or(|&(lo, hi)| since.is_none_or(|s| hi >= s) && until.is_none_or(|u| lo < u))
    }

    /// Record number `n` of the segment.
    pub fn read(&self, n: u32) -> std::io::Result<Record> {
        let offset = match &self.sealed {
            None => *self.active.offsets.get(n as usize).ok_or_else(|| io_err(&self.log_path, "no such record"))?,
            Some(s) => {
                let mut b = [0u8; 8];
                s.idx.read_exact_at(&mut b, s.offsets_at + u64::from(n) * 8)?;
                u64::from_le_bytes(b)
            }
        };
        read_record(&self.log, offset)
    }

    /// Deletes the segment's files.
    pub fn remove(self, dir: &Path) -> std::io::Result<()> {
        std::fs::remove_file(&self.log_path)?;
        let idx = dir.join(format!("{}.idx", name(self.first)));
        if idx.exists() {
            std::fs::remove_file(idx)?;
        }
        Ok(())
    }

    /// Bytes on disk (log and index).
    pub fn disk_bytes(&self) -> u64 {
        self.log_len + self.sealed.as_ref().and_then(|s| s.idx.metadata().ok()).map_or(0, |m| m.len())
    }
}

/// First positions of the segments in `dir`, ascending.
pub fn list(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".log")
            && let Ok(first) = stem.parse::<u64>()
        {
            out.push(first);
        }
    }
    out.sort_unstable();
    Ok(out)
}
