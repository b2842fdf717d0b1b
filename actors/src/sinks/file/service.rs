//! Appending, syncing and rotating the file, and remembering how far it got.
//!
//! After each synced write the sink records, in `PATH.vedette-pos`, the file's length, the
//! highest spool key it wrote and the spool's instance id (one 32-byte record with a checksum,
//! rewritten in place and synced). On start it truncates anything past the recorded length (a
//! write whose position was not recorded: its alerts are still spooled and are written again)
//! and skips spooled records at or below the recorded key (written, but the engine stopped
//! before removing them from the spool). So a kill -9 at any point leaves every alert in the
//! file exactly once. A position recorded for another spool (the data dir was reset, or another
//! engine wrote the file) is not used: nothing is cut or skipped, new alerts are appended.

use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use crate::sinks::delivery::{Connector, Outcome, Outgoing, all, lines};

/// What the position file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    /// Length of the file after the last recorded write.
    len: u64,
    /// Highest spool key written.
    last_seq: u64,
    /// Instance id of the spool whose keys `last_seq` counts (`None`: a record from before
    /// instance ids, taken as this spool's).
    instance: Option<u64>,
}

impl Position {
    fn encode(self) -> [u8; 32] {
        let instance = self.instance.unwrap_or(0);
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&self.len.to_be_bytes());
        b[8..16].copy_from_slice(&self.last_seq.to_be_bytes());
        b[16..24].copy_from_slice(&instance.to_be_bytes());
        b[24..].copy_from_slice(&check(&[self.len, self.last_seq, instance]).to_be_bytes());
        b
    }

    /// `None` for anything but a whole, consistent record (then nothing is truncated or
    /// skipped: at worst an alert is written twice).
    fn decode(b: &[u8]) -> Option<Self> {
        let word = |i: usize| b.get(i..i + 8).and_then(|s| <[u8; 8]>::try_from(s).ok()).map(u64::from_be_bytes);
        let (len, last_seq) = (word(0)?, word(8)?);
        match b.len() {
            24 => (word(16)? == check(&[len, last_seq])).then_some(Self { len, last_seq, instance: None }),
            32 => {
                let instance = word(16)?;
                (word(24)? == check(&[len, last_seq, instance])).then_some(Self {
                    len,
                    last_seq,
                    instance: Some(instance),
                })
            }
            _ => None,
        }
    }
}

/// FNV-1a over the words.
fn check(words: &[u64]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in words.iter().flat_map(|w| w.to_be_bytes()) {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Appends batches to a file.
pub struct FileSink {
    path: PathBuf,
    rotate_bytes: Option<u64>,
    keep: u32,
    file: Option<(tokio::fs::File, u64)>,
    /// The position file, once opened (and the file repaired against it).
    pos: Option<(tokio::fs::File, Position)>,
    /// Instance id of the spool this sink delivers from ([`crate::sinks::spool::Spool::instance`]).
    instance: u64,
}

/// `PATH.vedette-pos`.
pub fn position_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".vedette-pos");
    PathBuf::from(s)
}

impl FileSink {
    /// A sink writing `path` (created with its directory on first write), delivering from the
    /// spool with instance id `instance`.
    pub fn new(path: PathBuf, rotate_bytes: Option<u64>, keep: u32, instance: u64) -> Self {
        Self { path, rotate_bytes, keep, file: None, pos: None, instance }
    }

    /// Opens the position file and cuts the output back to the recorded length.
    async fn recover(&mut self) -> std::io::Result<Position> {
        if let Some((_, p)) = &self.pos {
            return Ok(*p);
        }
        if let Some(dir) = self.path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let mut f = tokio::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(position_path(&self.path))
            .await?;
        let mut buf = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut f, &mut buf).await?;
        let unknown = Position { len: u64::MAX, last_seq: 0, instance: Some(self.instance) };
        let pos = match Position::decode(&buf) {
            Some(p) if p.instance.is_none_or(|i| i == self.instance) => p,
            Some(_) => {
                tracing::warn!(path = %self.path.display(), "File sink: the position file was written for another spool (was the data dir reset?); appending after what the file holds, nothing is cut or skipped.");
                unknown
            }
            None => unknown,
        };
        match tokio::fs::metadata(&self.path).await {
            // Longer than recorded: the tail's alerts are still spooled. (Shorter: rotated
            // or moved away by someone else; nothing to cut.)
            Ok(m) if m.len() > pos.len => {
                let out = tokio::fs::OpenOptions::new().write(true).open(&self.path).await?;
                out.set_len(pos.len).await?;
                out.sync_all().await?;
                tracing::info!(path = %self.path.display(), cut = m.len() - pos.len, "File sink: removed a write whose alerts are still spooled (they are written again).");
            }
            _ => {}
        }
        self.file = None;
        self.pos = Some((f, pos));
        Ok(pos)
    }

    async fn record(&mut self, pos: Position) -> std::io::Result<()> {
        let (f, p) = self.pos.as_mut().expect("recovered before writing");
        f.seek(std::io::SeekFrom::Start(0)).await?;
        f.write_all(&pos.encode()).await?;
        f.sync_data().await?;
        *p = pos;
        Ok(())
    }

    async fn open(&mut self) -> std::io::Result<&mut (tokio::fs::File, u64)> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                tokio::fs::create_dir_all(dir).await?;
            }
            let f = tokio::fs::OpenOptions::new().create(true).append(true).open(&self.path).await?;
            let len = f.metadata().await?.len();
            self.file = Some((f, len));
        }
        Ok(self.file.as_mut().expect("opened above"))
    }

    /// Shifts `PATH.1 … PATH.(keep-1)` up by one, moves `PATH` to `PATH.1`, drops the oldest.
    async fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        if self.keep == 0 {
            return tokio::fs::remove_file(&self.path).await;
        }
        let numbered = |n: u32| -> PathBuf { rotated(&self.path, n) };
        let _ = tokio::fs::remove_file(numbered(self.keep)).await;
        for n in (1..self.keep).rev() {
            if tokio::fs::try_exists(numbered(n)).await? {
                tokio::fs::rename(numbered(n), numbered(n + 1)).await?;
            }
        }
        tokio::fs::rename(&self.path, numbered(1)).await
    }

    async fn write(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let size = self.open().await?.1;
        let last_seq = self.pos.as_ref().map_or(0, |p| p.1.last_seq);
        if let Some(limit) = self.rotate_bytes
            && size > 0
            && size + buf.len() as u64 > limit
        {
            self.rotate().await?;
            // The new file starts empty: record that before writing into it.
            self.record(Position { len: 0, last_seq, instance: Some(self.instance) }).await?;
        }
        let (f, size) = self.open().await?;
        f.write_all(buf).await?;
        f.sync_data().await?;
        // The file's real length: a line another writer appended meanwhile (`vedette sinks
        // test`) is then never taken for a torn write and cut on the next start.
        *size = f.metadata().await?.len();
        Ok(())
    }
}

/// Appends one line to the file at `path` (as `vedette sinks test` does), beside a running
/// sink: one `O_APPEND` write, synced. The running sink records the file's real length after
/// its next write, so the line is kept.
pub async fn append_line(path: &Path, body: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let mut line = body.to_vec();
    line.push(b'\n');
    let mut f = tokio::fs::OpenOptions::new().create(true).append(true).open(path).await?;
    f.write_all(&line).await?;
    f.sync_data().await
}

/// `PATH.n`.
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl Connector for FileSink {
    fn send<'a>(&'a mut self, batch: &'a [Outgoing]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            let result = async {
                let written = self.recover().await?.last_seq;
                // Records at or below the recorded key are in the file already.
                let fresh: Vec<Outgoing> = batch.iter().filter(|o| o.seq > written).cloned().collect();
                if let Some(last) = fresh.iter().map(|o| o.seq).max() {
                    self.write(&lines(&fresh)).await?;
                    let len = self.file.as_ref().map_or(0, |f| f.1);
                    self.record(Position { len, last_seq: last, instance: Some(self.instance) }).await?;
                }
                Ok::<_, std::io::Error>(())
            };
            match result.await {
                Ok(()) => all(batch, Outcome::Delivered),
                Err(e) => {
                    // Reopen and re-check next time: the file may have been moved or its
                    // disk remounted, and a write may have landed partly.
                    self.file = None;
                    self.pos = None;
                    all(batch, Outcome::Retry(format!("writing {}: {e}", self.path.display())))
                }
            }
        })
    }
}
