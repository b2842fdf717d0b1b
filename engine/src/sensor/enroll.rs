//! Enrollment: the sensor makes its key, sends a CSR with a one-time token to the engine's
//! enrollment ALPN, and receives its certificate. The engine's CA is pinned by its SHA-256
//! fingerprint (given out of band, like kubeadm's `--discovery-token-ca-cert-hash`), so a man
//! in the middle gets neither the token nor the sensor. The key never leaves the sensor.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vedette_schemas::fleet::{CertificateIssued, Enroll};
use vedette_schemas::frame::Control;

use super::{SensorError, bind_client, read_control};
use crate::auth::Secret;
use crate::pki::PkiPaths;

/// Where an enrolled sensor finds its engine and identity: `<data_dir>/sensor.json`, written
/// by enrollment and read by `vedette sensor --data-dir`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorIdentity {
    /// Sensor id (certificate CN).
    pub sensor_id: String,
    /// Tenant (certificate OU).
    pub tenant: String,
    /// Engine QUIC address.
    pub server: SocketAddr,
    /// Name in the engine's certificate.
    pub server_name: String,
}

impl SensorIdentity {
    /// The identity file of a data dir.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("sensor.json")
    }

    /// Reads the identity file, if the data dir has one.
    pub fn load(data_dir: &Path) -> Result<Option<Self>, SensorError> {
        let path = Self::path(data_dir);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| SensorError::Protocol(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(SensorError::Io { path: path.display().to_string(), source }),
        }
    }
}

/// What to enroll.
#[derive(Debug, Clone)]
pub struct EnrollRequest {
    /// Engine QUIC address.
    pub server: SocketAddr,
    /// Name in the engine's certificate.
    pub server_name: String,
    /// Enrollment token.
    pub token: Secret,
    /// SHA-256 fingerprint of the engine's CA certificate (hex, colons allowed).
    pub ca_sha256: String,
    /// The sensor id to enroll as.
    pub sensor_id: String,
    /// Host name.
    pub host: String,
    /// Where to write key, certificate, CA and `sensor.json`.
    pub data_dir: PathBuf,
    /// Replace an existing identity in the data dir.
    pub force: bool,
}

/// An enrolled sensor's files.
#[derive(Debug, Clone)]
pub struct Enrolled {
    /// The identity written to `sensor.json`.
    pub identity: SensorIdentity,
    /// Certificate file.
    pub cert: PathBuf,
    /// Key file (0600).
    pub key: PathBuf,
    /// CA file.
    pub ca: PathBuf,
    /// End of validity.
    pub not_after: String,
    /// Labels the token gave.
    pub labels: BTreeMap<String, String>,
}

/// Enrolls: pins the CA, sends token + CSR, writes the files. Refusals (bad, used-up or
/// expired token, id taken, wrong CA fingerprint) are [`SensorError::Refused`].
pub async fn enroll(req: &EnrollRequest) -> Result<Enrolled, SensorError> {
    vedette_schemas::identity::check_sensor_id(&req.sensor_id).map_err(SensorError::Protocol)?;
    let pin = vedette_actors::registry::normalize_fingerprint(&req.ca_sha256).ok_or_else(|| {
        SensorError::Protocol(format!(
            "--ca-sha256 `{}` is not a SHA-256 fingerprint (64 hex digits, colons allowed; `openssl x509 -noout -fingerprint -sha256 -in ca.pem`)",
            req.ca_sha256
        ))
    })?;
    let paths = PkiPaths::new(&req.data_dir);
    let (cert_path, key_path) = paths.sensor(&req.sensor_id);
    if !req.force && (SensorIdentity::path(&req.data_dir).exists() || key_path.exists()) {
        return Err(SensorError::Protocol(format!(
            "{} already holds a sensor identity; pass --force to replace it",
            req.data_dir.display()
        )));
    }
    let (csr, key_pem) = crate::pki::csr::new_csr(&req.sensor_id).map_err(|e| SensorError::Protocol(e.to_string()))?;
    let mut ep = bind_client(req.server)?;
    ep.set_default_client_config(vedette_actors::tls::enrollment_client_config(&pin)?);
    let refused = |message: String| SensorError::Refused { message, revoked: false };
    let conn =
        ep.connect(req.server, &req.server_name).map_err(|e| SensorError::Connection(e.to_string()))?.await.map_err(
            |e| match &e {
                quinn::ConnectionError::TransportError(t) if t.reason.contains("pinned") => refused(t.reason.clone()),
                _ => SensorError::Connection(e.to_string()),
            },
        )?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| SensorError::Connection(e.to_string()))?;
    let request = Enroll {
        token: req.token.expose().to_string(),
        csr,
        sensor_version: Some(format!("vedette-sensor/{}", env!("CARGO_PKG_VERSION"))),
        host: Some(req.host.clone()),
    };
    send.write_all(&Control::Enroll(request).to_frame()).await.map_err(|e| SensorError::Connection(e.to_string()))?;
    let _ = send.finish();
    let answer = tokio::time::timeout(Duration::from_secs(30), read_control(&mut recv))
        .await
        .map_err(|_| SensorError::Connection("no answer to ENROLL within 30 s".into()))?;
    conn.close(0u32.into(), b"enrolled");
    let issued: CertificateIssued = match answer {
        Ok(Control::Certificate(c)) => c,
        Ok(Control::Error(e)) => return Err(refused(format!("{}: {}", e.code, e.message))),
        Ok(other) => return Err(SensorError::Protocol(format!("expected CERTIFICATE, got {other:?}"))),
        Err(e) => return Err(e),
    };
    // The CA the engine hands over must be the pinned one.
    let ca_der = vedette_actors::tls::certs_from_pem(issued.ca.as_bytes(), "fleet CA")?;
    if !ca_der.iter().any(|c| vedette_actors::tls::fingerprint(c.as_ref()) == pin) {
        return Err(refused("the CA the engine sent does not have the pinned fingerprint".into()));
    }
    let write = |p: &Path, text: &str, secret: bool| {
        crate::pki::write_file(p, text, secret)
            .map_err(|source| SensorError::Io { path: p.display().to_string(), source })
    };
    write(&key_path, &key_pem, true)?;
    write(&cert_path, &issued.certificate, false)?;
    write(&paths.ca_cert, &issued.ca, false)?;
    let identity = SensorIdentity {
        sensor_id: issued.sensor_id.clone(),
        tenant: issued.tenant.clone(),
        server: req.server,
        server_name: req.server_name.clone(),
    };
    write(
        &SensorIdentity::path(&req.data_dir),
        &serde_json::to_string_pretty(&identity).expect("identities serialize"),
        false,
    )?;
    let _ = tokio::time::timeout(Duration::from_secs(1), ep.wait_idle()).await;
    Ok(Enrolled {
        identity,
        cert: cert_path,
        key: key_path,
        ca: paths.ca_cert,
        not_after: issued.not_after,
        labels: issued.labels,
    })
}
