//! Appending, syncing and rotating the file, and remembering how far it got.
//!
//! After each synced write the sink records, in `PATH.vedette-pos`, the file's length and the
//! highest spool key it wrote (one 24-byte record with a checksum, rewritten in place and
//! synced). On start it truncates anything past the recorded length (a write whose position was
//! not recorded: its alerts are still spooled and are written again) and skips spooled records
//! at or below the recorded key (written, but the engine stopped before removing them from the
//! spool). So a kill -9 at any point leaves every alert in the file exactly once.

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
}

impl Position {
    fn encode(self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[..8].copy_from_slice(&self.len.to_be_bytes());
        b[8..16].copy_from_slice(&self.last_seq.to_be_bytes());
        b[16..].copy_from_slice(&check(self.len, self.last_seq).to_be_bytes());
        b
    }

    /// `None` for anything but a whole, consistent record (then nothing is truncated or
    /// skipped: at worst an alert is written twice).
    fn decode(b: &[u8]) -> Option<Self> {
        let word = |i: usize| b.get(i..i + 8).and_then(|s| <[u8; 8]>::try_from(s).ok()).map(u64::from_be_bytes);
        let (len, last_seq, sum) = (word(0)?, word(8)?, word(16)?);
        (b.len() == 24 && sum == check(len, last_seq)).then_some(Self { len, last_seq })
    }
}

/// FNV-1a over the two words.
fn check(a: u64, b: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in a.to_be_bytes().into_iter().chain(b.to_be_bytes()) {
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
}

/// `PATH.vedette-pos`.
pub fn position_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".vedette-pos");
    PathBuf::from(s)
}

impl FileSink {
    /// A sink writing `path` (created with its directory on first write).
    pub fn new(path: PathBuf, rotate_bytes: Option<u64>, keep: u32) -> Self {
        Self { path, rotate_bytes, keep, file: None, pos: None }
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
        let pos = Position::decode(&buf).unwrap_or(Position { len: u64::MAX, last_seq: 0 });
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
            self.record(Position { len: 0, last_seq }).await?;
        }
        let (f, size) = self.open().await?;
        f.write_all(buf).await?;
        f.sync_data().await?;
        *size += buf.len() as u64;
        Ok(())
    }
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
                    self.record(Position { len, last_seq: last }).await?;
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
