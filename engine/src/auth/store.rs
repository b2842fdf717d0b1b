//! The token registry: sled tree `tokens` in the state store, keyed by token id, holding the
//! token's hash (never the token), role, tenant, expiry and revocation.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::token::{self, Secret};
use super::{Caller, Role};
use crate::error::{EngineError, Result};

/// A token as listed: everything but the secret.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct TokenInfo {
    /// Public id.
    pub id: String,
    /// Name given at creation.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Tenant or `*`.
    pub tenant: String,
    /// Creation time (RFC 3339).
    pub created_at: DateTime<Utc>,
    /// Expiry, if any.
    pub expires_at: Option<DateTime<Utc>>,
    /// Revocation time, if revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl TokenInfo {
    /// Whether the token may be used at `now`: not revoked, not expired.
    pub fn usable(&self, now: DateTime<Utc>) -> std::result::Result<(), Refusal> {
        if self.revoked_at.is_some() {
            return Err(Refusal::Revoked);
        }
        if self.expires_at.is_some_and(|e| e <= now) {
            return Err(Refusal::Expired);
        }
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
struct Record {
    #[serde(flatten)]
    info: TokenInfo,
    sha256: String,
}

/// Why a presented token was refused. Each says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No `Authorization: Bearer` header.
    #[error("this route needs `Authorization: Bearer <token>` (create one with `vedette tokens create`)")]
    Missing,
    /// Not a vedette token, or no such token.
    #[error("the bearer token is not valid")]
    Invalid,
    /// Revoked.
    #[error("the bearer token was revoked; ask an admin for a new one")]
    Revoked,
    /// Expired.
    #[error("the bearer token expired; ask an admin for a new one")]
    Expired,
}

/// The token registry.
#[derive(Clone)]
pub struct TokenStore {
    tree: sled::Tree,
}

fn storage(source: sled::Error) -> EngineError {
    vedette_actors::ActorError::Storage { path: "tokens".into(), source }.into()
}

impl TokenStore {
    /// Opens the registry in the state store.
    pub fn open(db: &sled::Db) -> Result<Self> {
        Ok(Self { tree: db.open_tree("tokens").map_err(storage)? })
    }

    /// Creates a token; the returned secret is shown once and never stored.
    pub fn create(
        &self,
        name: &str,
        role: Role,
        tenant: &str,
        ttl: Option<chrono::Duration>,
    ) -> Result<(TokenInfo, Secret)> {
        let (id, secret) = token::generate();
        let now = Utc::now();
        let info = TokenInfo {
            id: id.clone(),
            name: name.into(),
            role,
            tenant: tenant.into(),
            created_at: now,
            expires_at: ttl.map(|t| now + t),
            revoked_at: None,
        };
        let rec = Record { info: info.clone(), sha256: token::hash(secret.expose()) };
        self.tree.insert(id.as_bytes(), serde_json::to_vec(&rec).expect("tokens serialize")).map_err(storage)?;
        self.tree.flush().map_err(storage)?;
        Ok((info, secret))
    }

    /// The caller a presented token stands for, or why it is refused.
    pub fn verify(&self, presented: &str, now: DateTime<Utc>) -> std::result::Result<Caller, Refusal> {
        let (id, _) = token::split(presented).ok_or(Refusal::Invalid)?;
        let rec = self.record(id).ok().flatten().ok_or(Refusal::Invalid)?;
        if !token::same_hash(&rec.sha256, &token::hash(presented)) {
            return Err(Refusal::Invalid);
        }
        rec.info.usable(now)?;
        Ok(Caller { token_id: rec.info.id, name: rec.info.name, role: rec.info.role, tenant: rec.info.tenant })
    }

    fn record(&self, id: &str) -> Result<Option<Record>> {
        Ok(self.tree.get(id.as_bytes()).map_err(storage)?.and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// Every token, oldest first.
    pub fn list(&self) -> Result<Vec<TokenInfo>> {
        let mut out = Vec::new();
        for kv in self.tree.iter() {
            let (_, v) = kv.map_err(storage)?;
            if let Ok(r) = serde_json::from_slice::<Record>(&v) {
                out.push(r.info);
            }
        }
        out.sort_by_key(|t| t.created_at);
        Ok(out)
    }

    /// One token's listing.
    pub fn get(&self, id: &str) -> Result<Option<TokenInfo>> {
        Ok(self.record(id)?.map(|r| r.info))
    }

    /// Revokes a token (kept, marked revoked, for the audit trail). `None` if there is no such
    /// token; revoking twice keeps the first time.
    pub fn revoke(&self, id: &str) -> Result<Option<TokenInfo>> {
        let Some(mut rec) = self.record(id)? else { return Ok(None) };
        if rec.info.revoked_at.is_none() {
            rec.info.revoked_at = Some(Utc::now());
            self.tree.insert(id.as_bytes(), serde_json::to_vec(&rec).expect("tokens serialize")).map_err(storage)?;
            self.tree.flush().map_err(storage)?;
        }
        Ok(Some(rec.info))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_hash_is_stored_and_revoked_or_expired_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("s")).unwrap();
        let store = TokenStore::open(&db).unwrap();
        let (info, secret) = store.create("ci", Role::Analyst, "acme", Some(chrono::Duration::hours(1))).unwrap();
        let raw: Vec<u8> = db.open_tree("tokens").unwrap().get(info.id.as_bytes()).unwrap().unwrap().to_vec();
        assert!(!String::from_utf8_lossy(&raw).contains(secret.expose()), "the token itself is never stored");
        let now = Utc::now();
        let caller = store.verify(secret.expose(), now).unwrap();
        assert_eq!((caller.role, caller.tenant.as_str()), (Role::Analyst, "acme"));
        assert_eq!(store.verify(secret.expose(), now + chrono::Duration::hours(2)), Err(Refusal::Expired));
        // Same id, other secret.
        let forged = format!("{}AAAA", &secret.expose()[..secret.expose().len() - 4]);
        assert_eq!(store.verify(&forged, now), Err(Refusal::Invalid));
        assert_eq!(store.verify("nonsense", now), Err(Refusal::Invalid));
        store.revoke(&info.id).unwrap().unwrap();
        assert_eq!(store.verify(secret.expose(), now), Err(Refusal::Revoked));
        assert!(store.revoke("0000000000000000").unwrap().is_none());
        assert_eq!(store.list().unwrap().len(), 1);
    }
}
