//! Triage of stored alerts: each is `new`, `acknowledged` or `resolved`, with who changed it,
//! when, and an optional note. Records live beside the history, in its id database (tree
//! `triage`: alert id → JSON record); an alert without a record is `new`. Per-tenant counts of
//! acknowledged and resolved alerts are kept in memory (read once on open, changed with every
//! write), so the unacknowledged count costs no scan. Each request's changes are announced to
//! live clients ([`TriageNotice`], `event: triage` of the alert stream).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{EngineError, Result};

/// Longest note, in bytes.
pub const MAX_NOTE: usize = 4096;

/// Where an alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TriageState {
    /// Nobody has looked at it (or it was reopened).
    New,
    /// Someone is on it.
    Acknowledged,
    /// Done.
    Resolved,
}

impl TriageState {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Acknowledged => "acknowledged",
            Self::Resolved => "resolved",
        }
    }

    /// Parses a name (as in query parameters).
    pub fn parse(v: &str) -> Option<Self> {
        match v {
            "new" => Some(Self::New),
            "acknowledged" => Some(Self::Acknowledged),
            "resolved" => Some(Self::Resolved),
            _ => None,
        }
    }
}

/// An alert's triage record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Triage {
    /// The state.
    pub state: TriageState,
    /// Name of the token that set it (`name (token id)`).
    pub by: String,
    /// When.
    pub at: DateTime<Utc>,
    /// Why, or what was done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The alert's tenant ("" for none).
    #[serde(default)]
    pub tenant: String,
}

/// Acknowledged and resolved counts of one tenant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Acknowledged.
    pub acknowledged: u64,
    /// Resolved.
    pub resolved: u64,
}

impl Counts {
    fn slot(&mut self, state: TriageState) -> Option<&mut u64> {
        match state {
            TriageState::New => None,
            TriageState::Acknowledged => Some(&mut self.acknowledged),
            TriageState::Resolved => Some(&mut self.resolved),
        }
    }
}

/// The triage changes of one request (or one page of a change by filter), for live clients.
#[derive(Debug, Clone)]
pub struct TriageNotice {
    /// The new state.
    pub state: TriageState,
    /// Who.
    pub by: String,
    /// When.
    pub at: DateTime<Utc>,
    /// The note.
    pub note: Option<String>,
    /// Alerts whose state changed, each with its tenant ("" for none).
    pub alerts: Vec<(Uuid, String)>,
}

/// Notices kept for a live client that reads slowly; beyond, it is told it lagged.
const NOTICES: usize = 256;

/// The triage records.
pub struct TriageStore {
    tree: sled::Tree,
    counts: Mutex<HashMap<String, Counts>>,
    notices: tokio::sync::broadcast::Sender<Arc<TriageNotice>>,
}

fn storage(source: sled::Error) -> EngineError {
    EngineError::from(vedette_actors::ActorError::Storage { path: "history triage".into(), source })
}

fn decode(v: &[u8]) -> Option<Triage> {
    serde_json::from_slice(v).ok()
}

impl TriageStore {
    /// Opens the `triage` tree of `db` and counts its records.
    pub fn open(db: &sled::Db) -> Result<Self> {
        let tree = db.open_tree("triage").map_err(storage)?;
        let mut counts: HashMap<String, Counts> = HashMap::new();
        for kv in tree.iter() {
            let (_, v) = kv.map_err(storage)?;
            if let Some(t) = decode(&v)
                && let Some(n) = counts.entry(t.tenant.clone()).or_default().slot(t.state)
            {
                *n += 1;
            }
        }
        Ok(Self { tree, counts: Mutex::new(counts), notices: tokio::sync::broadcast::channel(NOTICES).0 })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Counts>> {
        self.counts.lock().expect("triage counts lock is never poisoned")
    }

    /// The record of alert `id` (`None` = new, never triaged).
    pub fn get(&self, id: &Uuid) -> Result<Option<Triage>> {
        Ok(self.tree.get(id.as_bytes()).map_err(storage)?.and_then(|v| decode(&v)))
    }

    /// The state of alert `id`.
    pub fn state(&self, id: &[u8; 16]) -> Result<TriageState> {
        Ok(self.tree.get(id).map_err(storage)?.and_then(|v| decode(&v)).map_or(TriageState::New, |t| t.state))
    }

    /// Sets the record of alert `id`; returns whether the state changed.
    pub fn set(&self, id: &Uuid, record: &Triage) -> Result<bool> {
        let bytes = serde_json::to_vec(record).expect("a triage record serializes");
        let mut counts = self.lock();
        let old = self.tree.insert(id.as_bytes(), bytes).map_err(storage)?.and_then(|v| decode(&v));
        let entry = counts.entry(record.tenant.clone()).or_default();
        if let Some(n) = old.as_ref().and_then(|o| entry.slot(o.state)) {
            *n = n.saturating_sub(1);
        }
        if let Some(n) = entry.slot(record.state) {
            *n += 1;
        }
        Ok(old.is_none_or(|o| o.state != record.state))
    }

    /// Tells live clients about changes (nothing happens without one).
    pub fn announce(&self, notice: TriageNotice) {
        if !notice.alerts.is_empty() {
            let _ = self.notices.send(Arc::new(notice));
        }
    }

    /// Triage changes from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<TriageNotice>> {
        self.notices.subscribe()
    }

    /// Forgets alert `id` (it left the history).
    pub fn remove(&self, id: &[u8; 16]) -> Result<()> {
        let mut counts = self.lock();
        if let Some(old) = self.tree.remove(id).map_err(storage)?.and_then(|v| decode(&v))
            && let Some(n) = counts.entry(old.tenant.clone()).or_default().slot(old.state)
        {
            *n = n.saturating_sub(1);
        }
        Ok(())
    }

    /// Acknowledged and resolved counts of `tenant` (`None`: every tenant).
    pub fn counts(&self, tenant: Option<&str>) -> Counts {
        let counts = self.lock();
        match tenant {
            Some(t) => counts.get(t).copied().unwrap_or_default(),
            None => counts.values().fold(Counts::default(), |a, c| Counts {
                acknowledged: a.acknowledged + c.acknowledged,
                resolved: a.resolved + c.resolved,
            }),
        }
    }
}

/// Checks a note: at most [`MAX_NOTE`] bytes, no control characters but newlines and tabs.
pub fn check_note(note: Option<&str>) -> std::result::Result<Option<String>, String> {
    let Some(n) = note.map(str::trim).filter(|n| !n.is_empty()) else { return Ok(None) };
    if n.len() > MAX_NOTE {
        return Err(format!("`note` is {} bytes; at most {MAX_NOTE}", n.len()));
    }
    if n.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err("`note` contains control characters".into());
    }
    Ok(Some(n.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(state: TriageState, tenant: &str) -> Triage {
        Triage { state, by: "t".into(), at: Utc::now(), note: None, tenant: tenant.into() }
    }

    #[test]
    fn counts_follow_every_change_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let store = TriageStore::open(&db).unwrap();
        let (a, b, c) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        assert!(store.set(&a, &record(TriageState::Acknowledged, "acme")).unwrap());
        assert!(!store.set(&a, &record(TriageState::Acknowledged, "acme")).unwrap(), "same state: no change");
        assert!(store.set(&b, &record(TriageState::Resolved, "acme")).unwrap());
        assert!(store.set(&c, &record(TriageState::Acknowledged, "other")).unwrap());
        assert!(store.set(&a, &record(TriageState::Resolved, "acme")).unwrap());
        assert_eq!(store.counts(Some("acme")), Counts { acknowledged: 0, resolved: 2 });
        assert_eq!(store.counts(None), Counts { acknowledged: 1, resolved: 2 });
        assert!(store.set(&b, &record(TriageState::New, "acme")).unwrap(), "reopened");
        assert_eq!(store.counts(Some("acme")), Counts { acknowledged: 0, resolved: 1 });
        assert_eq!(store.state(a.as_bytes()).unwrap(), TriageState::Resolved);
        assert_eq!(store.state(Uuid::from_u128(9).as_bytes()).unwrap(), TriageState::New);
        store.remove(a.as_bytes()).unwrap();
        assert_eq!(store.counts(Some("acme")), Counts::default());
        drop(store);
        let again = TriageStore::open(&db).unwrap();
        assert_eq!(again.counts(None), Counts { acknowledged: 1, resolved: 0 });
        assert_eq!(again.get(&b).unwrap().unwrap().state, TriageState::New);
    }

    #[test]
    fn notes_are_checked() {
        assert_eq!(check_note(Some("  ")), Ok(None));
        assert_eq!(check_note(Some(" looked at it\n")), Ok(Some("looked at it".into())));
        assert!(check_note(Some("\u{1b}[31m")).unwrap_err().contains("control"));
        assert!(check_note(Some(&"x".repeat(MAX_NOTE + 1))).unwrap_err().contains("at most"));
    }
}
