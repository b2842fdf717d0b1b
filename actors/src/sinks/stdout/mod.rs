//! Standard output: one encoded alert per line (readable `text` lines by default).

use futures::future::BoxFuture;
use tokio::io::AsyncWriteExt;

use super::delivery::{Connector, Outcome, Outgoing, all, lines};

/// Writes batches to stdout.
pub struct Stdout {
    out: tokio::io::Stdout,
}

impl Stdout {
    /// The process's standard output.
    pub fn new() -> Self {
        Self { out: tokio::io::stdout() }
    }
}

impl Default for Stdout {
    fn default() -> Self {
        Self::new()
    }
}

impl Connector for Stdout {
    fn send<'a>(&'a mut self, batch: &'a [Outgoing]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            let buf = lines(batch);
            match async {
                self.out.write_all(&buf).await?;
                self.out.flush().await
            }
            .await
            {
                Ok(()) => all(batch, Outcome::Delivered),
                Err(e) => all(batch, Outcome::Retry(format!("writing stdout: {e}"))),
            }
        })
    }
}
