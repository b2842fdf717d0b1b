//! Appending, syncing and rotating the file.

use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use tokio::io::AsyncWriteExt;

use crate::sinks::delivery::{Connector, Outcome, Outgoing, all, lines};

/// Appends batches to a file.
pub struct FileSink {
    path: PathBuf,
    rotate_bytes: Option<u64>,
    keep: u32,
    file: Option<(tokio::fs::File, u64)>,
}

impl FileSink {
    /// A sink writing `path` (created with its directory on first write).
    pub fn new(path: PathBuf, rotate_bytes: Option<u64>, keep: u32) -> Self {
        Self { path, rotate_bytes, keep, file: None }
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
        if let Some(limit) = self.rotate_bytes
            && size > 0
            && size + buf.len() as u64 > limit
        {
            self.rotate().await?;
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
            let buf = lines(batch);
            match self.write(&buf).await {
                Ok(()) => all(batch, Outcome::Delivered),
                Err(e) => {
                    // Reopen next time: the file may have been moved or its disk remounted.
                    self.file = None;
                    all(batch, Outcome::Retry(format!("writing {}: {e}", self.path.display())))
                }
            }
        })
    }
}
