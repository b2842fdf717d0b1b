//! Fleet PKI: the development CA created on first start, and sensor certificates.
//!
//! Sensor identity lives in the certificate subject: CN = sensor id, OU = tenant.
//!
//! * [`csr`]: signing CSRs (enrollment, renewal, `vedette ca sign`) and making them (sensors).

pub mod csr;

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};

/// Sensor id of the demo sensor whose certificate `serve` creates.
pub const DEMO_SENSOR_ID: &str = "demo-sensor";

/// Default lifetime of a sensor certificate.
pub const SENSOR_CERT_DAYS: u32 = 30;
/// Lifetime of a CA made by `vedette ca init` or the first start.
pub const CA_DAYS: u32 = 3650;
/// Lifetime of the engine's generated server certificate.
pub const SERVER_CERT_DAYS: u32 = 397;
/// Generated certificates this close to expiry are issued again on start.
pub const RENEW_BEFORE_DAYS: u32 = 7;

/// Errors of the PKI tooling.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// The sensor id is not a valid name.
    #[error("{0}")]
    BadName(String),
    /// A certificate for this sensor id exists; pass `--force` to replace it (its key too).
    #[error("a certificate for sensor `{sensor_id}` already exists at {path}; pass --force to replace it and its key")]
    Exists {
        /// Sensor id.
        sensor_id: String,
        /// Existing certificate.
        path: String,
    },
    /// A certificate signing request is unusable (the text says why).
    #[error("{0}")]
    BadCsr(String),
    /// A certificate could not be parsed.
    #[error("{path}: not a usable PEM certificate: {reason}")]
    BadCertificate {
        /// File.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A file could not be read or written; check permissions of the data dir.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Paths of the PKI files inside a data dir.
#[derive(Debug, Clone)]
pub struct PkiPaths {
    /// CA certificate.
    pub ca_cert: PathBuf,
    /// CA key.
    pub ca_key: PathBuf,
    /// Engine server certificate.
    pub server_cert: PathBuf,
    /// Engine server key.
    pub server_key: PathBuf,
    /// Directory of issued sensor certificates.
    pub sensors: PathBuf,
}

impl PkiPaths {
    /// Layout under `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        let ca = data_dir.join("ca");
        Self {
            ca_cert: ca.join("ca.pem"),
            ca_key: ca.join("ca.key"),
            server_cert: ca.join("server.pem"),
            server_key: ca.join("server.key"),
            sensors: data_dir.join("sensors"),
        }
    }

    /// Certificate and key paths of a sensor.
    pub fn sensor(&self, sensor_id: &str) -> (PathBuf, PathBuf) {
        (self.sensors.join(format!("{sensor_id}.pem")), self.sensors.join(format!("{sensor_id}.key")))
    }
}

/// Writes a file, creating its directory; a `secret` file (private key) is mode 600 from the
/// moment it exists.
pub(crate) fn write_file(path: &Path, contents: &str, secret: bool) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        // An existing file keeps its mode on open: tighten it too.
        if path.exists() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    options.open(path)?.write_all(contents.as_bytes())
}

fn write(path: &Path, contents: &str, secret: bool) -> Result<(), PkiError> {
    write_file(path, contents, secret).map_err(|source| PkiError::Io { path: path.display().to_string(), source })
}

pub(crate) fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io { path: path.display().to_string(), source })
}

/// A generated certificate and its key, PEM. `Debug` never shows the key.
#[derive(Clone)]
pub struct CertPem {
    /// Certificate.
    pub cert: String,
    /// Private key.
    pub key: String,
}

impl std::fmt::Debug for CertPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertPem").field("cert", &self.cert).field("key", &"**REDACTED**").finish()
    }
}

impl CertPem {
    /// Loads a CA certificate and its key from files (`--ca-cert`/`--ca-key`, `ingest.ca_key`).
    pub fn load(cert: &Path, key: &Path) -> Result<Self, PkiError> {
        let ca = Self { cert: read(cert)?, key: read(key)? };
        // Fail now, naming the file, rather than at the first signature.
        KeyPair::from_pem(&ca.key)
            .map_err(|e| PkiError::BadCertificate { path: key.display().to_string(), reason: e.to_string() })?;
        Issuer::from_ca_cert_pem(&ca.cert, KeyPair::from_pem(&ca.key)?)
            .map_err(|e| PkiError::BadCertificate { path: cert.display().to_string(), reason: e.to_string() })?;
        Ok(ca)
    }
}

/// Sets a validity of `days` from five minutes ago (clock skew between hosts).
fn validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(i64::from(days));
}

/// Creates a self-signed CA valid for [`CA_DAYS`].
pub fn new_ca(name: &str) -> Result<CertPem, PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    validity(&mut params, CA_DAYS);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let cert = params.self_signed(&key)?;
    Ok(CertPem { cert: cert.pem(), key: key.serialize_pem() })
}

/// Issues a sensor (client) certificate valid for `days`: CN = sensor id, OU = tenant.
pub fn issue_sensor(ca: &CertPem, sensor_id: &str, tenant: &str, days: u32) -> Result<CertPem, PkiError> {
    sign(ca, sensor_params(sensor_id, tenant, days)?)
}

/// What every sensor certificate carries: CN = sensor id, OU = tenant, digital signature,
/// client authentication, `days` of validity.
pub(crate) fn sensor_params(sensor_id: &str, tenant: &str, days: u32) -> Result<CertificateParams, PkiError> {
    vedette_schemas::identity::check_sensor_id(sensor_id).map_err(PkiError::BadName)?;
    vedette_schemas::identity::check_tenant(tenant).map_err(PkiError::BadName)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    validity(&mut params, days);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.distinguished_name.push(DnType::CommonName, sensor_id);
    params.distinguished_name.push(DnType::OrganizationalUnitName, tenant);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    Ok(params)
}

/// Issues the engine's server certificate for `names` (DNS names or IP addresses).
pub fn issue_server(ca: &CertPem, names: &[&str]) -> Result<CertPem, PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, "vedette engine");
    validity(&mut params, SERVER_CERT_DAYS);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    for n in names {
        let san = match n.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName((*n).try_into()?),
        };
        params.subject_alt_names.push(san);
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    sign(ca, params)
}

fn sign(ca: &CertPem, params: CertificateParams) -> Result<CertPem, PkiError> {
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, KeyPair::from_pem(&ca.key)?)?;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(CertPem { cert: cert.pem(), key: key.serialize_pem() })
}

/// Creates the development CA, server certificate and demo sensor certificate under
/// `data_dir` if they do not exist yet. Returns true when something was created.
pub fn ensure_dev_pki(data_dir: &Path) -> Result<bool, PkiError> {
    let paths = PkiPaths::new(data_dir);
    let mut created = false;
    let ca = if paths.ca_cert.exists() && paths.ca_key.exists() {
        CertPem { cert: read(&paths.ca_cert)?, key: read(&paths.ca_key)? }
    } else {
        let ca = new_ca("vedette development fleet CA")?;
        write(&paths.ca_cert, &ca.cert, false)?;
        write(&paths.ca_key, &ca.key, true)?;
        created = true;
        ca
    };
    if created || !paths.server_cert.exists() || expires_soon(&paths.server_cert)? {
        let server = issue_server(&ca, &["localhost", "127.0.0.1", "::1", "vedette"])?;
        write(&paths.server_cert, &server.cert, false)?;
        write(&paths.server_key, &server.key, true)?;
        created = true;
    }
    let (cert, key) = paths.sensor(DEMO_SENSOR_ID);
    if created || !cert.exists() || expires_soon(&cert)? {
        let s = issue_sensor(&ca, DEMO_SENSOR_ID, "default", SENSOR_CERT_DAYS)?;
        write(&cert, &s.cert, false)?;
        write(&key, &s.key, true)?;
        created = true;
    }
    Ok(created)
}

/// When a certificate file expires.
pub fn not_after(path: &Path) -> Result<chrono::DateTime<chrono::Utc>, PkiError> {
    let pem = read(path)?;
    let bad = |reason: String| PkiError::BadCertificate { path: path.display().to_string(), reason };
    let der = vedette_actors::tls::certs_from_pem(pem.as_bytes(), "certificate").map_err(|e| bad(e.to_string()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(der[0].as_ref()).map_err(|e| bad(e.to_string()))?;
    chrono::DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0)
        .ok_or_else(|| bad("expiry out of range".into()))
}

fn expires_soon(path: &Path) -> Result<bool, PkiError> {
    Ok(not_after(path)? < chrono::Utc::now() + chrono::Duration::days(i64::from(RENEW_BEFORE_DAYS)))
}

/// Issues a sensor certificate (valid for `days`) with the data dir's CA and writes it under
/// `sensors/`. Refuses an invalid sensor id, and an id that already has a certificate unless
/// `force`.
pub fn issue_sensor_files(
    data_dir: &Path,
    sensor_id: &str,
    tenant: &str,
    days: u32,
    force: bool,
    ca: Option<&CertPem>,
) -> Result<(PathBuf, PathBuf), PkiError> {
    vedette_schemas::identity::check_sensor_id(sensor_id).map_err(PkiError::BadName)?;
    let paths = PkiPaths::new(data_dir);
    let (cert, key) = paths.sensor(sensor_id);
    if cert.exists() && !force {
        return Err(PkiError::Exists { sensor_id: sensor_id.into(), path: cert.display().to_string() });
    }
    let own;
    let ca = match ca {
        Some(ca) => ca,
        None => {
            own = CertPem { cert: read(&paths.ca_cert)?, key: read(&paths.ca_key)? };
            &own
        }
    };
    let s = issue_sensor(ca, sensor_id, tenant, days)?;
    write(&cert, &s.cert, false)?;
    write(&key, &s.key, true)?;
    Ok((cert, key))
}
