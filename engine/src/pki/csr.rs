//! Certificate signing requests: the engine signs them (enrollment, renewal over the control
//! stream, `vedette ca sign`), sensors make them (the private key never leaves the sensor).
//!
//! Only the CSR's public key and subject CN are used. The certificate's OU (the tenant), key
//! usages, extended key usage and validity are the engine's: a CSR cannot choose its tenant.

use rcgen::{CertificateParams, CertificateSigningRequestParams, DnType, Issuer, KeyPair};
use rustls_pki_types::CertificateSigningRequestDer;
use rustls_pki_types::pem::PemObject;
use sha2::Digest;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

use super::{CertPem, PkiError, sensor_params};

/// A signed CSR.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The certificate, PEM.
    pub cert: String,
    /// Sensor id (CN).
    pub sensor_id: String,
    /// Tenant (OU).
    pub tenant: String,
    /// End of validity.
    pub not_after: chrono::DateTime<chrono::Utc>,
    /// SHA-256 of the certificate DER, lowercase hex.
    pub fingerprint: String,
}

/// The subject of a CSR: CN and, if present, OU. Checks the CSR's signature.
pub fn subject(csr_pem: &str) -> Result<(String, Option<String>), PkiError> {
    let bad = |reason: String| PkiError::BadCsr(reason);
    let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
        .map_err(|e| bad(format!("not a PEM certificate request: {e}")))?;
    let (_, req) = X509CertificationRequest::from_der(der.as_ref())
        .map_err(|e| bad(format!("unparsable certificate request: {e}")))?;
    req.verify_signature().map_err(|_| bad("the request's signature does not verify".into()))?;
    let subject = &req.certification_request_info.subject;
    let cn = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .ok_or_else(|| bad("the request has no subject CN (the sensor id)".into()))?
        .to_string();
    let ou = subject.iter_organizational_unit().next().and_then(|a| a.as_str().ok()).map(str::to_string);
    Ok((cn, ou))
}

/// Signs a CSR as a sensor certificate valid for `days`. The tenant is `tenant`; a CSR that
/// names another OU is refused (it cannot choose its tenant). With `expect_id`, the CSR's CN
/// must be that sensor id (renewal).
pub fn sign_csr(
    ca: &CertPem,
    csr_pem: &str,
    tenant: &str,
    days: u32,
    expect_id: Option<&str>,
) -> Result<Signed, PkiError> {
    let (cn, ou) = subject(csr_pem)?;
    vedette_schemas::identity::check_sensor_id(&cn).map_err(|e| PkiError::BadCsr(format!("subject CN: {e}")))?;
    if let Some(ou) = ou.filter(|ou| ou != tenant) {
        return Err(PkiError::BadCsr(format!(
            "the request asks for tenant (OU) `{ou}`, but this enrollment is for tenant `{tenant}`; leave the OU out"
        )));
    }
    if let Some(id) = expect_id.filter(|id| *id != cn) {
        return Err(PkiError::BadCsr(format!("the request is for `{cn}`, but this sensor is `{id}`")));
    }
    let parsed = CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| PkiError::BadCsr(format!("certificate request: {e}")))?;
    let request =
        CertificateSigningRequestParams { params: sensor_params(&cn, tenant, days)?, public_key: parsed.public_key };
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, KeyPair::from_pem(&ca.key)?)?;
    let cert = request.signed_by(&issuer)?;
    let not_after = chrono::Utc::now() + chrono::Duration::days(i64::from(days));
    Ok(Signed {
        fingerprint: hex::encode(sha2::Sha256::digest(cert.der())),
        cert: cert.pem(),
        sensor_id: cn,
        tenant: tenant.to_string(),
        not_after,
    })
}

/// A new key and a CSR for `sensor_id` (CN only: the engine sets the tenant). Returns
/// `(csr_pem, key_pem)`.
pub fn new_csr(sensor_id: &str) -> Result<(String, String), PkiError> {
    vedette_schemas::identity::check_sensor_id(sensor_id).map_err(PkiError::BadName)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, sensor_id);
    let csr = params.serialize_request(&key)?;
    Ok((csr.pem()?, key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use proptest::prelude::*;

    use super::*;
    use crate::pki::new_ca;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// A CSR arrives from the network (enrollment, renewal): any bytes in PEM armour, or
        /// a real CSR with bytes flipped, are refused with an error, never a panic.
        #[test]
        fn any_csr_text_is_signed_or_refused(
            der in proptest::collection::vec(any::<u8>(), 0..600),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        ) {
            let ca = ca();
            let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
            let pem = format!("-----BEGIN CERTIFICATE REQUEST-----\n{b64}\n-----END CERTIFICATE REQUEST-----\n");
            prop_assert!(sign_csr(ca, &pem, "acme", 30, None).is_err());
            let (good, _) = new_csr("web-01").unwrap();
            let mut raw = CertificateSigningRequestDer::from_pem_slice(good.as_bytes()).unwrap().as_ref().to_vec();
            for (i, x) in &flips {
                let n = raw.len();
                raw[i % n] ^= x;
            }
            let b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
            let pem = format!("-----BEGIN CERTIFICATE REQUEST-----\n{b64}\n-----END CERTIFICATE REQUEST-----\n");
            let _ = sign_csr(ca, &pem, "acme", 30, Some("web-01"));
        }
    }

    /// One CA for every case (making one per case would dominate the run).
    fn ca() -> &'static crate::pki::CertPem {
        static CA: std::sync::OnceLock<crate::pki::CertPem> = std::sync::OnceLock::new();
        CA.get_or_init(|| new_ca("proptest CA").unwrap())
    }

    #[test]
    fn a_csr_gets_the_engines_tenant_and_usages_never_its_own() {
        let ca = new_ca("test CA").unwrap();
        let (csr, key) = new_csr("web-01").unwrap();
        assert!(key.contains("PRIVATE KEY"));
        let s = sign_csr(&ca, &csr, "acme", 30, None).unwrap();
        let der = vedette_actors::tls::certs_from_pem(s.cert.as_bytes(), "c").unwrap();
        let id = vedette_actors::tls::identity_from_cert(der[0].as_ref()).unwrap();
        assert_eq!((id.sensor_id.as_str(), id.tenant.as_str()), ("web-01", "acme"));
        assert_eq!(id.fingerprint, s.fingerprint);
        let e = sign_csr(&ca, &csr, "acme", 30, Some("web-02")).unwrap_err().to_string();
        assert!(e.contains("is for `web-01`"), "{e}");

        // A CSR asking for another tenant is refused.
        let k = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, "web-02");
        p.distinguished_name.push(DnType::OrganizationalUnitName, "globex");
        let evil = p.serialize_request(&k).unwrap().pem().unwrap();
        let e = sign_csr(&ca, &evil, "acme", 30, None).unwrap_err().to_string();
        assert!(e.contains("tenant (OU) `globex`"), "{e}");
        assert!(sign_csr(&ca, &evil, "globex", 30, None).is_ok(), "its own OU matches");

        for (bad, want) in [("garbage", "not a PEM"), (csr.replace("CERTIFICATE REQUEST", "X").as_str(), "PEM")] {
            let e = sign_csr(&ca, bad, "acme", 30, None).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, "../ca/ca");
        let e = sign_csr(&ca, &p.serialize_request(&k).unwrap().pem().unwrap(), "acme", 30, None).unwrap_err();
        assert!(e.to_string().contains("subject CN"), "{e}");
    }
}
