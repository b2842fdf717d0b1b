//! Enrollment tokens (sled tree `enrollment_tokens`): a sensor presents one, with a CSR, to
//! obtain its certificate. A token fixes the tenant and labels of the sensors it enrolls, has
//! a number of uses and an expiry; only its SHA-256 is stored.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::token::{self, ENROLLMENT_PREFIX, Secret};
use crate::error::{EngineError, Result};

/// Default number of sensors one token enrolls.
pub const DEFAULT_USES: u32 = 1;
/// Default lifetime of an enrollment token.
pub const DEFAULT_TTL: chrono::Duration = chrono::Duration::hours(24);
/// Most uses one token may have.
pub const MAX_USES: u32 = 100_000;

/// An enrollment token as listed: everything but the secret.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct EnrollmentInfo {
    /// Public id.
    pub id: String,
    /// Tenant of the sensors it enrolls.
    pub tenant: String,
    /// Labels given to the sensors it enrolls.
    pub labels: BTreeMap<String, String>,
    /// Enrollments allowed in total.
    pub uses: u32,
    /// Enrollments made.
    pub used: u32,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
    /// Revocation time, if revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Sensor ids enrolled with it.
    #[serde(default)]
    pub sensors: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct Record {
    #[serde(flatten)]
    info: EnrollmentInfo,
    sha256: String,
}

/// Why an enrollment token was refused; each says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrollRefusal {
    /// Not an enrollment token, or unknown.
    #[error("the enrollment token is not valid (create one with `vedette tokens create-enrollment`)")]
    Invalid,
    /// Every use is spent.
    #[error("the enrollment token is used up ({0} of {0} enrollments made); ask an admin for a new one")]
    UsedUp(u32),
    /// Expired.
    #[error("the enrollment token expired at {0}; ask an admin for a new one")]
    Expired(DateTime<Utc>),
    /// Revoked.
    #[error("the enrollment token was revoked; ask an admin for a new one")]
    Revoked,
}

/// What a valid token grants.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    /// Token id.
    pub token_id: String,
    /// Tenant.
    pub tenant: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// The enrollment token store.
#[derive(Clone)]
pub struct EnrollmentTokens {
    tree: sled::Tree,
}

fn storage(source: sled::Error) -> EngineError {
    vedette_actors::ActorError::Storage { path: "enrollment_tokens".into(), source }.into()
}

impl EnrollmentTokens {
    /// Opens the store in the state database.
    pub fn open(db: &sled::Db) -> Result<Self> {
        Ok(Self { tree: db.open_tree("enrollment_tokens").map_err(storage)? })
    }

    /// Creates a token; the secret is returned once and never stored.
    pub fn create(
        &self,
        tenant: &str,
        uses: u32,
        ttl: chrono::Duration,
        labels: BTreeMap<String, String>,
    ) -> Result<(EnrollmentInfo, Secret)> {
        let (id, secret) = token::generate_with(ENROLLMENT_PREFIX);
        let now = Utc::now();
        let info = EnrollmentInfo {
            id: id.clone(),
            tenant: tenant.into(),
            labels,
            uses,
            used: 0,
            created_at: now,
            expires_at: now + ttl,
            revoked_at: None,
            sensors: Vec::new(),
        };
        self.put(&Record { info: info.clone(), sha256: token::hash(secret.expose()) })?;
        self.tree.flush().map_err(storage)?;
        Ok((info, secret))
    }

    fn put(&self, rec: &Record) -> Result<()> {
        let bytes = serde_json::to_vec(rec).expect("enrollment tokens serialize");
        self.tree.insert(rec.info.id.as_bytes(), bytes).map_err(storage)?;
        Ok(())
    }

    fn record(&self, id: &str) -> Result<Option<Record>> {
        Ok(self.tree.get(id.as_bytes()).map_err(storage)?.and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// Checks a presented token without using it.
    pub fn check(&self, presented: &str, now: DateTime<Utc>) -> std::result::Result<Grant, EnrollRefusal> {
        let rec = self.verified(presented, now)?;
        Ok(Grant { token_id: rec.info.id, tenant: rec.info.tenant, labels: rec.info.labels })
    }

    fn verified(&self, presented: &str, now: DateTime<Utc>) -> std::result::Result<Record, EnrollRefusal> {
        let (id, _) = token::split_with(ENROLLMENT_PREFIX, presented).ok_or(EnrollRefusal::Invalid)?;
        let rec = self.record(id).ok().flatten().ok_or(EnrollRefusal::Invalid)?;
        if !token::same_hash(&rec.sha256, &token::hash(presented)) {
            return Err(EnrollRefusal::Invalid);
        }
        if rec.info.revoked_at.is_some() {
            return Err(EnrollRefusal::Revoked);
        }
        if rec.info.expires_at <= now {
            return Err(EnrollRefusal::Expired(rec.info.expires_at));
        }
        if rec.info.used >= rec.info.uses {
            return Err(EnrollRefusal::UsedUp(rec.info.uses));
        }
        Ok(rec)
    }

    /// Spends one use of a token for `sensor_id`, atomically (two sensors racing for the last
    /// use: one wins) and durably.
    pub async fn consume(
        &self,
        presented: &str,
        sensor_id: &str,
        now: DateTime<Utc>,
    ) -> Result<std::result::Result<Grant, EnrollRefusal>> {
        loop {
            let rec = match self.verified(presented, now) {
                Ok(r) => r,
                Err(refusal) => return Ok(Err(refusal)),
            };
            let old = serde_json::to_vec(&rec).expect("enrollment tokens serialize");
            let mut next = rec;
            next.info.used += 1;
            next.info.sensors.push(sensor_id.to_string());
            let new = serde_json::to_vec(&next).expect("enrollment tokens serialize");
            let key = next.info.id.as_bytes().to_vec();
            if self.tree.compare_and_swap(&key, Some(old), Some(new)).map_err(storage)?.is_ok() {
                self.tree.flush_async().await.map_err(storage)?;
                let i = next.info;
                return Ok(Ok(Grant { token_id: i.id, tenant: i.tenant, labels: i.labels }));
            }
        }
    }

    /// Every token, oldest first.
    pub fn list(&self) -> Result<Vec<EnrollmentInfo>> {
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

    /// One token.
    pub fn get(&self, id: &str) -> Result<Option<EnrollmentInfo>> {
        Ok(self.record(id)?.map(|r| r.info))
    }

    /// Revokes a token (kept for the record). `None` if unknown.
    pub fn revoke(&self, id: &str) -> Result<Option<EnrollmentInfo>> {
        let Some(mut rec) = self.record(id)? else { return Ok(None) };
        if rec.info.revoked_at.is_none() {
            rec.info.revoked_at = Some(Utc::now());
            self.put(&rec)?;
            self.tree.flush().map_err(storage)?;
        }
        Ok(Some(rec.info))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tokens_are_hashed_counted_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let store = EnrollmentTokens::open(&db).unwrap();
        let labels: BTreeMap<_, _> = [("env".to_string(), "prod".to_string())].into();
        let (info, secret) = store.create("acme", 2, DEFAULT_TTL, labels.clone()).unwrap();
        assert!(secret.expose().starts_with("vde_"));
        assert!(!format!("{secret:?}").contains("vde_"));
        let raw: Vec<u8> = db.open_tree("enrollment_tokens").unwrap().get(&info.id).unwrap().unwrap().to_vec();
        assert!(!String::from_utf8_lossy(&raw).contains(secret.expose()), "only the hash is stored");

        let now = Utc::now();
        let g = store.consume(secret.expose(), "s1", now).await.unwrap().unwrap();
        assert_eq!((g.tenant.as_str(), &g.labels), ("acme", &labels));
        store.consume(secret.expose(), "s2", now).await.unwrap().unwrap();
        assert_eq!(store.consume(secret.expose(), "s3", now).await.unwrap(), Err(EnrollRefusal::UsedUp(2)));
        assert_eq!(store.get(&info.id).unwrap().unwrap().sensors, vec!["s1", "s2"]);

        let (_, short) = store.create("acme", 1, chrono::Duration::seconds(1), BTreeMap::new()).unwrap();
        let later = now + chrono::Duration::seconds(5);
        assert!(matches!(store.check(short.expose(), later), Err(EnrollRefusal::Expired(_))));
        let (rev, revoked) = store.create("acme", 1, DEFAULT_TTL, BTreeMap::new()).unwrap();
        store.revoke(&rev.id).unwrap().unwrap();
        assert_eq!(store.check(revoked.expose(), now), Err(EnrollRefusal::Revoked));
        assert_eq!(store.check("vdt_0000000000000000_x", now), Err(EnrollRefusal::Invalid));
        let t = secret.expose();
        let forged = format!("{}{}", &t[..t.len() - 1], if t.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(store.check(&forged, now).unwrap_err(), EnrollRefusal::Invalid);
    }
}
