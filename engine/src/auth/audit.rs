//! The audit log: every call to a mutating route (allowed or refused), kept in sled tree
//! `audit` (sequence number → entry), bounded to the newest [`MAX_ENTRIES`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

/// Entries kept; older ones are deleted as new ones arrive.
pub const MAX_ENTRIES: u64 = 100_000;

/// One audited call.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Sequence number (ascending).
    pub seq: u64,
    /// When (RFC 3339).
    pub at: DateTime<Utc>,
    /// Token id (`-` when none or invalid was presented).
    pub token_id: String,
    /// Token name.
    pub token_name: String,
    /// Caller's tenant (`-` when unknown).
    pub tenant: String,
    /// HTTP method.
    pub method: String,
    /// Route template, e.g. `/api/v1/rules/{id}/disable`.
    pub route: String,
    /// Path called, e.g. `/api/v1/rules/linux.shadow/disable`.
    pub target: String,
    /// HTTP status answered.
    pub status: u16,
    /// `ok`, `refused` (401/403/404/429) or `failed`.
    pub outcome: String,
}

/// The audit log.
#[derive(Clone)]
pub struct AuditLog {
    tree: sled::Tree,
    next: std::sync::Arc<std::sync::Mutex<u64>>,
}

fn storage(source: sled::Error) -> EngineError {
    vedette_actors::ActorError::Storage { path: "audit".into(), source }.into()
}

impl AuditLog {
    /// Opens the log in the state store.
    pub fn open(db: &sled::Db) -> Result<Self> {
        let tree = db.open_tree("audit").map_err(storage)?;
        let next = tree.last().map_err(storage)?.map(|(k, _)| be(&k) + 1).unwrap_or(1);
        Ok(Self { tree, next: std::sync::Arc::new(std::sync::Mutex::new(next)) })
    }

    /// Appends an entry (its `seq` is assigned here).
    pub fn record(&self, mut entry: AuditEntry) -> Result<()> {
        let mut next = self.next.lock().expect("audit lock is never poisoned");
        let seq = *next;
        *next += 1;
        entry.seq = seq;
        self.tree.insert(seq.to_be_bytes(), serde_json::to_vec(&entry).expect("audit serializes")).map_err(storage)?;
        if seq > MAX_ENTRIES {
            self.tree.remove((seq - MAX_ENTRIES).to_be_bytes()).map_err(storage)?;
        }
        Ok(())
    }

    /// Up to `limit` entries newest first, below `before` (a `seq`), that `keep` accepts.
    pub fn list(&self, before: u64, limit: usize, keep: impl Fn(&AuditEntry) -> bool) -> Result<Vec<AuditEntry>> {
        let mut out = Vec::new();
        for kv in self.tree.range(..before.to_be_bytes()).rev() {
            let (_, v) = kv.map_err(storage)?;
            if let Ok(e) = serde_json::from_slice::<AuditEntry>(&v)
                && keep(&e)
            {
                out.push(e);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }
}

fn be(k: &[u8]) -> u64 {
    k.try_into().map(u64::from_be_bytes).unwrap_or_default()
}
