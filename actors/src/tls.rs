//! QUIC + mutual TLS configuration and peer identity.

use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use vedette_schemas::frame::ALPN;

use crate::error::{ActorError, Result};

/// Tenant used when a sensor certificate carries no organizational unit.
pub const DEFAULT_TENANT: &str = "default";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses every certificate of a PEM document.
pub fn certs_from_pem(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| ActorError::Tls(format!("{what}: not a PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(ActorError::Tls(format!("{what}: no certificate found in PEM")));
    }
    Ok(certs)
}

/// Parses a private key from PEM (PKCS#8, PKCS#1 or SEC1).
pub fn key_from_pem(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| ActorError::Tls(format!("{what}: not a PEM private key: {e}")))
}

/// Decides whether a verified client certificate is revoked (checked at every handshake).
pub trait RevocationCheck: Send + Sync + 'static {
    /// True when the certificate must be refused.
    fn is_revoked(&self, peer: &PeerIdentity) -> bool;
}

impl RevocationCheck for crate::registry::Registry {
    fn is_revoked(&self, peer: &PeerIdentity) -> bool {
        crate::registry::Registry::is_revoked(self, peer)
    }
}

/// WebPKI verification (chain to the fleet CA, validity period), then the revocation check.
struct RevokingVerifier {
    inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    revocations: Arc<dyn RevocationCheck>,
}

impl std::fmt::Debug for RevokingVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RevokingVerifier")
    }
}

impl rustls::server::danger::ClientCertVerifier for RevokingVerifier {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls_pki_types::UnixTime,
    ) -> std::result::Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        let peer = identity_from_cert(end_entity.as_ref())
            .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
        if self.revocations.is_revoked(&peer) {
            return Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Server side: our certificate; client certificates must chain to `ca`, be within their
/// validity period and not be revoked. With `enrollment`, the enrollment ALPN is offered too
/// and a client certificate is optional at the handshake (the ingest session refuses a
/// connection without one); the fleet CA is sent with the server certificate so an enrolling
/// sensor can pin it. `receive_window` bounds what each sensor may have sent that the engine
/// has not read yet (QUIC flow control, per connection and per stream; quinn's default is
/// 1.25 MB per stream and no connection limit).
pub fn server_config(
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
    idle_timeout: Duration,
    receive_window: u32,
    revocations: Arc<dyn RevocationCheck>,
    enrollment: bool,
) -> Result<quinn::ServerConfig> {
    let mut roots = RootCertStore::empty();
    let cas = certs_from_pem(ca_pem, "fleet CA")?;
    for ca in &cas {
        roots.add(ca.clone()).map_err(|e| ActorError::Tls(format!("fleet CA: {e}")))?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    let builder = if enrollment { builder.allow_unauthenticated() } else { builder };
    let inner = builder.build().map_err(|e| ActorError::Tls(format!("client verifier: {e}")))?;
    let verifier = Arc::new(RevokingVerifier { inner, revocations });
    let mut chain = certs_from_pem(cert_pem, "server certificate")?;
    let extra: Vec<_> = cas.into_iter().filter(|ca| !chain.contains(ca)).collect();
    chain.extend(extra);
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ActorError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key_from_pem(key_pem, "server key")?)
        .map_err(|e| ActorError::Tls(format!("server certificate/key: {e}")))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    if enrollment {
        tls.alpn_protocols.push(vedette_schemas::fleet::ENROLL_ALPN.to_vec());
    }
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| ActorError::Tls(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(Some(idle_timeout.try_into().map_err(|_| ActorError::Tls("idle timeout too long".into()))?))
        .max_concurrent_bidi_streams(4u32.into())
        .max_concurrent_uni_streams(64u32.into())
        .receive_window(receive_window.into())
        .stream_receive_window(receive_window.into());
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Client side (sensors): trust `ca`, present `cert`/`key` if given.
pub fn client_config(ca_pem: &[u8], client: Option<(&[u8], &[u8])>, alpn: &[u8]) -> Result<quinn::ClientConfig> {
    let mut roots = RootCertStore::empty();
    for ca in certs_from_pem(ca_pem, "fleet CA")? {
        roots.add(ca).map_err(|e| ActorError::Tls(format!("fleet CA: {e}")))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ActorError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    let mut tls = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(certs_from_pem(cert, "sensor certificate")?, key_from_pem(key, "sensor key")?)
            .map_err(|e| ActorError::Tls(format!("sensor certificate/key: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| ActorError::Tls(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(Duration::from_secs(2)));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// The SHA-256 fingerprint of a certificate (DER), lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Verifies the engine's certificate against a CA known only by its SHA-256 fingerprint
/// (enrollment, kubeadm-style): the CA must be in the chain the engine sends, have that
/// fingerprint, and the server certificate must chain to it and name the server.
#[derive(Debug)]
struct PinnedCaVerifier {
    pin: String,
}

impl rustls::client::danger::ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates.iter().find(|c| fingerprint(c.as_ref()) == self.pin) else {
            return Err(rustls::Error::General(format!(
                "the engine's CA does not have the pinned SHA-256 fingerprint {} (a man in the middle, or the wrong --ca-sha256)",
                self.pin
            )));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned()).map_err(|e| rustls::Error::General(format!("pinned CA: {e}")))?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        provider().signature_verification_algorithms.supported_schemes()
    }
}

/// Client side for enrollment: no client certificate, the engine's CA pinned by its SHA-256
/// fingerprint (64 lowercase hex digits).
pub fn enrollment_client_config(ca_sha256: &str) -> Result<quinn::ClientConfig> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ActorError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCaVerifier { pin: ca_sha256.to_string() }))
        .with_no_client_auth();
    tls.alpn_protocols = vec![vedette_schemas::fleet::ENROLL_ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| ActorError::Tls(e.to_string()))?;
    Ok(quinn::ClientConfig::new(Arc::new(crypto)))
}

/// Who a sensor is, according to its verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// Subject common name.
    pub sensor_id: String,
    /// Subject organizational unit, or [`DEFAULT_TENANT`].
    pub tenant: String,
    /// SHA-256 of the certificate DER, lowercase hex.
    pub fingerprint: String,
}

/// Reads the identity from a leaf certificate (DER).
pub fn identity_from_cert(der: &[u8]) -> std::result::Result<PeerIdentity, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| format!("unparsable certificate: {e}"))?;
    let subject = cert.subject();
    let cn = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .ok_or("certificate has no subject common name (the sensor id)")?;
    let ou = subject.iter_organizational_unit().next().and_then(|a| a.as_str().ok());
    vedette_schemas::identity::check_sensor_id(cn).map_err(|e| format!("certificate common name: {e}"))?;
    let tenant = ou.unwrap_or(DEFAULT_TENANT);
    vedette_schemas::identity::check_tenant(tenant).map_err(|e| format!("certificate organizational unit: {e}"))?;
    Ok(PeerIdentity { sensor_id: cn.to_string(), tenant: tenant.to_string(), fingerprint: fingerprint(der) })
}

/// Identity of the peer of an established connection.
pub fn peer_identity(conn: &quinn::Connection) -> std::result::Result<PeerIdentity, String> {
    let any = conn.peer_identity().ok_or("no client certificate presented")?;
    let certs = any.downcast::<Vec<CertificateDer<'static>>>().map_err(|_| "unexpected peer identity type")?;
    let leaf = certs.first().ok_or("empty client certificate chain")?;
    identity_from_cert(leaf.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str, ou: Option<&str>) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        if let Some(ou) = ou {
            params.distinguished_name.push(rcgen::DnType::OrganizationalUnitName, ou);
        }
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn identities_come_from_the_subject_and_must_be_plain_names() {
        let id = identity_from_cert(&cert("web-01", Some("acme"))).unwrap();
        assert_eq!((id.sensor_id.as_str(), id.tenant.as_str()), ("web-01", "acme"));
        assert_eq!(id.fingerprint.len(), 64);
        assert_eq!(identity_from_cert(&cert("web-01", None)).unwrap().tenant, DEFAULT_TENANT);
        let e = identity_from_cert(&cert("../ca/ca", Some("acme"))).unwrap_err();
        assert!(e.contains("common name"), "{e}");
        let e = identity_from_cert(&cert("web-01", Some("a cme"))).unwrap_err();
        assert!(e.contains("organizational unit"), "{e}");
    }
}
