//! The sensor registry (sled tree `sensors`) and certificate revocations (tree `revoked`).
//!
//! A sensor is registered by its first HELLO (and later by enrollment); the registry keeps who
//! it is (id, tenant, certificate fingerprints), what it runs, and when it was seen. A
//! revocation names a certificate (by SHA-256 fingerprint) or a whole sensor id; both are kept
//! in sled and mirrored in memory, so the TLS handshake refuses them without touching disk.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Mutex, RwLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use vedette_schemas::fleet::{Action, ObserveLevel};

use crate::error::{ActorError, Result};
use crate::tls::PeerIdentity;

/// Fingerprints kept per sensor: the current certificate first, then previous ones.
const FINGERPRINTS_KEPT: usize = 4;

/// What the registry knows about a sensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SensorRecord {
    /// Sensor id (certificate CN).
    pub sensor_id: String,
    /// Tenant (certificate OU).
    pub tenant: String,
    /// SHA-256 fingerprints (lowercase hex) of its certificates, current first.
    pub fingerprints: Vec<String>,
    /// Labels (`env=prod`), used by selectors.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Sensor software version from its last HELLO.
    pub sensor_version: Option<String>,
    /// Table schema versions from its last HELLO.
    #[serde(default)]
    pub schemas: BTreeMap<String, u32>,
    /// Host name from its last HELLO.
    pub host: Option<String>,
    /// First HELLO.
    pub first_seen: DateTime<Utc>,
    /// Last HELLO, or when its last session ended.
    pub last_seen: DateTime<Utc>,
    /// Address of its last connection.
    pub remote_addr: Option<String>,
    /// When the sensor was revoked (every certificate of this id is refused).
    pub revoked_at: Option<DateTime<Utc>>,
    /// Observe level the sensor last acknowledged (`minimal`, `standard`, `verbose`).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub observe_level: Option<ObserveLevel>,
    /// Version of the configuration document the sensor last acknowledged.
    #[serde(default)]
    pub config_version: Option<u64>,
    /// When the sensor said GOODBYE (a deliberate stop: offline, never "silent"); cleared by
    /// its next HELLO.
    #[serde(default)]
    pub offline_at: Option<DateTime<Utc>>,
    /// When the sensor was last heard from before its current silence (set while silent).
    #[serde(default)]
    pub silent_since: Option<DateTime<Utc>>,
    /// Whether the `vedette.sensor_silent` alert of the current silence was delivered to the
    /// sinks' spools.
    #[serde(default)]
    pub silent_alerted: bool,
    /// Enrollment token it enrolled with, if it enrolled.
    #[serde(default)]
    pub enrolled_with: Option<String>,
    /// Edges that follow this engine's rules: the packs they run, as they last reported
    /// (`{"packs": [["name", version]], "error": "…"}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub rules: Option<vedette_schemas::fleet::RulesApplied>,
}

impl SensorRecord {
    fn new(sensor_id: &str, tenant: &str, now: DateTime<Utc>) -> Self {
        Self {
            sensor_id: sensor_id.to_string(),
            tenant: tenant.to_string(),
            fingerprints: Vec::new(),
            labels: BTreeMap::new(),
            sensor_version: None,
            schemas: BTreeMap::new(),
            host: None,
            first_seen: now,
            last_seen: now,
            remote_addr: None,
            revoked_at: None,
            observe_level: None,
            config_version: None,
            offline_at: None,
            silent_since: None,
            silent_alerted: false,
            rules: None,
            enrolled_with: None,
        }
    }

    /// Makes `fingerprint` the current certificate, keeping a few previous ones.
    fn use_certificate(&mut self, fingerprint: &str) {
        if self.fingerprints.first().map(String::as_str) != Some(fingerprint) {
            self.fingerprints.retain(|f| f != fingerprint);
            self.fingerprints.insert(0, fingerprint.to_string());
            self.fingerprints.truncate(FINGERPRINTS_KEPT);
        }
    }
}

/// One revocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Revocation {
    at: DateTime<Utc>,
}

/// Why a HELLO was refused by the registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryRefusal {
    /// The sensor or its certificate is revoked.
    #[error("this sensor or certificate is revoked")]
    Revoked,
    /// The id is registered to another tenant than the certificate's.
    #[error("sensor id `{sensor_id}` is registered to tenant `{registered}`, but this certificate says `{presented}`")]
    TenantMismatch {
        /// Sensor id.
        sensor_id: String,
        /// Tenant in the registry.
        registered: String,
        /// Tenant in the certificate.
        presented: String,
    },
    /// Enrollment for an id that is registered: deregister it first.
    #[error(
        "sensor id `{0}` is already registered; deregister it (`vedette sensors deregister {0}`) before enrolling it again"
    )]
    AlreadyRegistered(String),
}

/// The registry.
pub struct Registry {
    sensors: sled::Tree,
    revoked: sled::Tree,
    /// Mirror of `revoked`: `fp:<hex>` and `id:<sensor>` keys.
    cache: RwLock<HashSet<String>>,
    /// Serializes read-modify-write of records (sessions, the monitor and the API update them).
    write: Mutex<()>,
}

fn storage(tree: &str) -> impl Fn(sled::Error) -> ActorError + '_ {
    move |source| ActorError::Storage { path: tree.to_string(), source }
}

fn fp_key(fp: &str) -> String {
    format!("fp:{fp}")
}

fn id_key(id: &str) -> String {
    format!("id:{id}")
}

/// Normalizes a fingerprint as `openssl x509 -fingerprint -sha256` prints it (upper case,
/// colons) or as the registry stores it: 64 lowercase hex digits. `None` if it is not one.
pub fn normalize_fingerprint(s: &str) -> Option<String> {
    let s = s.trim();
    let s = s.strip_prefix("sha256 Fingerprint=").or_else(|| s.strip_prefix("SHA256 Fingerprint=")).unwrap_or(s);
    let hex: String = s.chars().filter(|c| *c != ':').collect::<String>().to_ascii_lowercase();
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

impl Registry {
    /// Opens the registry in the state store.
    pub fn open(db: &sled::Db) -> Result<Self> {
        let sensors = db.open_tree("sensors").map_err(storage("sensors"))?;
        let revoked = db.open_tree("revoked").map_err(storage("revoked"))?;
        let mut cache = HashSet::new();
        for kv in revoked.iter() {
            let (k, _) = kv.map_err(storage("revoked"))?;
            cache.insert(String::from_utf8_lossy(&k).into_owned());
        }
        Ok(Self { sensors, revoked, cache: RwLock::new(cache), write: Mutex::new(()) })
    }

    /// Whether a presented certificate is refused: its fingerprint or its sensor id is revoked.
    pub fn is_revoked(&self, peer: &PeerIdentity) -> bool {
        let cache = self.cache.read().expect("revocation lock is never poisoned");
        cache.contains(&fp_key(&peer.fingerprint)) || cache.contains(&id_key(&peer.sensor_id))
    }

    /// Records a HELLO: registers the sensor on first contact, updates it after. Refused when
    /// revoked or when the id belongs to another tenant.
    pub fn hello(
        &self,
        peer: &PeerIdentity,
        version: &str,
        host: Option<&str>,
        schemas: &BTreeMap<String, u32>,
        remote: &str,
    ) -> Result<std::result::Result<SensorRecord, RegistryRefusal>> {
        if self.is_revoked(peer) {
            return Ok(Err(RegistryRefusal::Revoked));
        }
        let now = Utc::now();
        let _w = self.lock();
        let mut rec = match self.get(&peer.sensor_id)? {
            Some(r) if r.tenant != peer.tenant => {
                return Ok(Err(RegistryRefusal::TenantMismatch {
                    sensor_id: peer.sensor_id.clone(),
                    registered: r.tenant,
                    presented: peer.tenant.clone(),
                }));
            }
            Some(r) => r,
            None => SensorRecord::new(&peer.sensor_id, &peer.tenant, now),
        };
        rec.use_certificate(&peer.fingerprint);
        rec.sensor_version = Some(version.to_string());
        rec.host = host.map(str::to_string).or(rec.host);
        rec.schemas.clone_from(schemas);
        rec.last_seen = now;
        rec.remote_addr = Some(remote.to_string());
        rec.offline_at = None;
        self.put(&rec)?;
        Ok(Ok(rec))
    }

    /// Registers an enrolled sensor with its first certificate. Refused when the id is
    /// registered already (deregister it first) or revoked.
    pub async fn enroll(
        &self,
        sensor_id: &str,
        tenant: &str,
        fingerprint: &str,
        labels: BTreeMap<String, String>,
        token_id: &str,
    ) -> Result<std::result::Result<SensorRecord, RegistryRefusal>> {
        let peer = PeerIdentity { sensor_id: sensor_id.into(), tenant: tenant.into(), fingerprint: fingerprint.into() };
        if self.is_revoked(&peer) {
            return Ok(Err(RegistryRefusal::Revoked));
        }
        let rec = {
            let _w = self.lock();
            if self.get(sensor_id)?.is_some() {
                return Ok(Err(RegistryRefusal::AlreadyRegistered(sensor_id.into())));
            }
            let mut rec = SensorRecord::new(sensor_id, tenant, Utc::now());
            rec.use_certificate(fingerprint);
            rec.labels = labels;
            rec.enrolled_with = Some(token_id.into());
            rec.offline_at = Some(rec.first_seen);
            self.put(&rec)?;
            rec
        };
        self.sensors.flush_async().await.map_err(storage("sensors"))?;
        Ok(Ok(rec))
    }

    /// Changes a record under the write lock; `None` if the sensor is not registered.
    pub fn update(&self, sensor_id: &str, f: impl FnOnce(&mut SensorRecord)) -> Result<Option<SensorRecord>> {
        let _w = self.lock();
        let Some(mut rec) = self.get(sensor_id)? else { return Ok(None) };
        f(&mut rec);
        self.put(&rec)?;
        Ok(Some(rec))
    }

    /// A renewed certificate became the sensor's current one.
    pub fn renewed(&self, sensor_id: &str, fingerprint: &str) -> Result<Option<SensorRecord>> {
        self.update(sensor_id, |r| r.use_certificate(fingerprint))
    }

    /// The sensor acknowledged `action` as applied.
    pub fn applied(&self, sensor_id: &str, action: &Action) -> Result<Option<SensorRecord>> {
        self.update(sensor_id, |r| match action {
            Action::SetLevel { level } => r.observe_level = Some(*level),
            Action::ApplyConfig { config } => r.config_version = Some(config.version),
            Action::RenewCertificate {} => {}
        })
    }

    /// An edge reported the rule set it runs (after a RULES).
    pub fn rules_applied(&self, sensor_id: &str, applied: vedette_schemas::fleet::RulesApplied) -> Result<()> {
        self.update(sensor_id, |r| r.rules = Some(applied))?;
        Ok(())
    }

    /// The sensor said GOODBYE: offline on purpose.
    pub fn goodbye(&self, sensor_id: &str) -> Result<()> {
        let now = Utc::now();
        self.update(sensor_id, |r| {
            r.offline_at = Some(now);
            r.last_seen = now;
        })?;
        Ok(())
    }

    /// Flushes the registry to disk.
    pub async fn flush(&self) -> Result<()> {
        self.sensors.flush_async().await.map_err(storage("sensors"))?;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.write.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A session of the sensor ended now.
    pub fn seen(&self, sensor_id: &str) -> Result<()> {
        let now = Utc::now();
        self.update(sensor_id, |r| r.last_seen = now)?;
        Ok(())
    }

    fn put(&self, rec: &SensorRecord) -> Result<()> {
        let bytes = serde_json::to_vec(rec).expect("sensor records serialize");
        self.sensors.insert(rec.sensor_id.as_bytes(), bytes).map_err(storage("sensors"))?;
        Ok(())
    }

    /// One sensor.
    pub fn get(&self, sensor_id: &str) -> Result<Option<SensorRecord>> {
        let v = self.sensors.get(sensor_id.as_bytes()).map_err(storage("sensors"))?;
        Ok(v.and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// Sensors with ids after `after` (in id order) that `keep` accepts, up to `limit`.
    pub fn list(&self, after: &str, limit: usize, keep: impl Fn(&SensorRecord) -> bool) -> Result<Vec<SensorRecord>> {
        let mut out = Vec::new();
        let start = std::ops::Bound::Excluded(after.as_bytes().to_vec());
        for kv in self.sensors.range::<Vec<u8>, _>((start, std::ops::Bound::Unbounded)) {
            let (_, v) = kv.map_err(storage("sensors"))?;
            if let Ok(rec) = serde_json::from_slice::<SensorRecord>(&v)
                && keep(&rec)
            {
                out.push(rec);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Revokes a sensor: its id and every certificate it has used are refused from now on
    /// (durably). `None` if no such sensor is registered.
    pub async fn revoke_sensor(&self, sensor_id: &str) -> Result<Option<SensorRecord>> {
        let Some(rec) = self.get(sensor_id)? else { return Ok(None) };
        let mut keys = vec![id_key(sensor_id)];
        keys.extend(rec.fingerprints.iter().map(|f| fp_key(f)));
        self.add_revocations(&keys).await?;
        let now = Utc::now();
        let rec = self
            .update(sensor_id, |r| {
                r.revoked_at.get_or_insert(now);
            })?
            .unwrap_or(rec);
        self.sensors.flush_async().await.map_err(storage("sensors"))?;
        Ok(Some(rec))
    }

    /// Revokes one certificate by fingerprint (durably); returns the sensor that used it, if
    /// one is registered.
    pub async fn revoke_fingerprint(&self, fingerprint: &str) -> Result<Option<SensorRecord>> {
        self.add_revocations(&[fp_key(fingerprint)]).await?;
        self.owner_of(fingerprint)
    }

    /// The registered sensor that used this certificate.
    pub fn owner_of(&self, fingerprint: &str) -> Result<Option<SensorRecord>> {
        Ok(self.list("", usize::MAX, |r| r.fingerprints.iter().any(|f| f == fingerprint))?.into_iter().next())
    }

    async fn add_revocations(&self, keys: &[String]) -> Result<()> {
        let value = serde_json::to_vec(&Revocation { at: Utc::now() }).expect("revocations serialize");
        for k in keys {
            self.revoked.insert(k.as_bytes(), value.as_slice()).map_err(storage("revoked"))?;
        }
        self.revoked.flush_async().await.map_err(storage("revoked"))?;
        let mut cache = self.cache.write().expect("revocation lock is never poisoned");
        cache.extend(keys.iter().cloned());
        Ok(())
    }

    /// Removes a decommissioned sensor: its record and the revocation of its id (the
    /// certificates it used stay revoked), so the id may enroll again with a new certificate.
    /// Returns the removed record.
    pub async fn deregister(&self, sensor_id: &str) -> Result<Option<SensorRecord>> {
        let Some(rec) = self.get(sensor_id)? else { return Ok(None) };
        {
            let _w = self.lock();
            self.sensors.remove(sensor_id.as_bytes()).map_err(storage("sensors"))?;
        }
        self.revoked.remove(id_key(sensor_id).as_bytes()).map_err(storage("revoked"))?;
        self.sensors.flush_async().await.map_err(storage("sensors"))?;
        self.revoked.flush_async().await.map_err(storage("revoked"))?;
        self.cache.write().expect("revocation lock is never poisoned").remove(&id_key(sensor_id));
        Ok(Some(rec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: &str, tenant: &str, fp: char) -> PeerIdentity {
        PeerIdentity { sensor_id: id.into(), tenant: tenant.into(), fingerprint: fp.to_string().repeat(64) }
    }

    #[tokio::test]
    async fn hello_registers_then_revocations_persist_and_deregistration_frees_the_id() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("s")).unwrap();
        let r = Registry::open(&db).unwrap();
        let none = BTreeMap::new();
        let a = peer("web-01", "acme", 'a');
        let rec = r.hello(&a, "s/1", Some("h1"), &none, "127.0.0.1:5000").unwrap().unwrap();
        assert_eq!((rec.tenant.as_str(), rec.fingerprints.len()), ("acme", 1));
        // Rotation: a new certificate becomes current, the previous one is kept.
        let b = peer("web-01", "acme", 'b');
        let rec = r.hello(&b, "s/2", None, &none, "127.0.0.1:5001").unwrap().unwrap();
        assert_eq!(rec.fingerprints, vec!["b".repeat(64), "a".repeat(64)]);
        assert_eq!(rec.host.as_deref(), Some("h1"), "a HELLO without host keeps the known one");
        // Same id, other tenant: refused.
        let evil = peer("web-01", "globex", 'c');
        assert!(matches!(r.hello(&evil, "x", None, &none, "r").unwrap(), Err(RegistryRefusal::TenantMismatch { .. })));

        assert_eq!(r.revoke_fingerprint(&"a".repeat(64)).await.unwrap().unwrap().sensor_id, "web-01");
        assert!(r.is_revoked(&a) && !r.is_revoked(&b));
        r.revoke_sensor("web-01").await.unwrap().unwrap();
        assert!(r.is_revoked(&b));
        assert!(r.is_revoked(&peer("web-01", "acme", 'd')), "any certificate of a revoked id");
        drop(r);
        let r = Registry::open(&db).unwrap();
        assert!(r.is_revoked(&b), "revocations survive a restart");
        assert_eq!(r.hello(&b, "x", None, &none, "r").unwrap(), Err(RegistryRefusal::Revoked));
        r.deregister("web-01").await.unwrap().unwrap();
        assert!(r.get("web-01").unwrap().is_none());
        let fresh = peer("web-01", "globex", 'e');
        assert!(!r.is_revoked(&fresh), "a deregistered id may come back with a new certificate");
        assert!(r.is_revoked(&b), "its old certificates stay revoked");
        assert!(r.hello(&fresh, "x", None, &none, "r").unwrap().is_ok());
    }

    #[test]
    fn fingerprints_are_read_as_openssl_prints_them() {
        let hex = "ab".repeat(32);
        let openssl = format!("sha256 Fingerprint={}", vec!["AB"; 32].join(":"));
        assert_eq!(normalize_fingerprint(&openssl), Some(hex.clone()));
        assert_eq!(normalize_fingerprint(&hex.to_uppercase()), Some(hex));
        assert_eq!(normalize_fingerprint("web-01"), None);
    }
}
