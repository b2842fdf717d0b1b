//! The engine's certificate issuer: enrollment (token + CSR → certificate + registration) and
//! renewal over the control stream, signed with the fleet CA's key.

use std::sync::Arc;

use futures::future::BoxFuture;
use vedette_actors::fleet::CertIssuer;
use vedette_actors::registry::Registry;
use vedette_actors::tls::PeerIdentity;
use vedette_schemas::fleet::{CertificateIssued, Enroll};

use crate::auth::enrollment::EnrollmentTokens;
use crate::pki::CertPem;
use crate::pki::csr::{self, Signed};

/// Signs enrollments and renewals.
pub struct Issuer {
    /// Fleet CA and its key.
    pub ca: CertPem,
    /// Enrollment tokens.
    pub tokens: EnrollmentTokens,
    /// Sensor registry.
    pub registry: Arc<Registry>,
    /// Validity of issued certificates.
    pub days: u32,
}

impl Issuer {
    fn issued(&self, s: Signed, labels: std::collections::BTreeMap<String, String>) -> CertificateIssued {
        CertificateIssued {
            sensor_id: s.sensor_id,
            tenant: s.tenant,
            certificate: s.cert,
            ca: self.ca.cert.clone(),
            not_after: s.not_after.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            labels,
        }
    }

    async fn enroll_inner(&self, req: &Enroll) -> Result<CertificateIssued, String> {
        let now = chrono::Utc::now();
        // Check everything before spending a use of the token.
        let grant = self.tokens.check(&req.token, now).map_err(|e| e.to_string())?;
        let (sensor_id, _) = csr::subject(&req.csr).map_err(|e| e.to_string())?;
        vedette_schemas::identity::check_sensor_id(&sensor_id).map_err(|e| format!("CSR subject CN: {e}"))?;
        if self.registry.get(&sensor_id).map_err(|e| e.to_string())?.is_some() {
            return Err(format!(
                "sensor id `{sensor_id}` is already registered; an admin must deregister it (`vedette sensors deregister {sensor_id}`) before it enrolls again"
            ));
        }
        let signed = csr::sign_csr(&self.ca, &req.csr, &grant.tenant, self.days, None).map_err(|e| e.to_string())?;
        let grant = match self.tokens.consume(&req.token, &sensor_id, now).await.map_err(|e| e.to_string())? {
            Ok(g) => g,
            Err(refusal) => return Err(refusal.to_string()),
        };
        let registered = self
            .registry
            .enroll(&sensor_id, &grant.tenant, &signed.fingerprint, grant.labels.clone(), &grant.token_id)
            .await
            .map_err(|e| e.to_string())?;
        registered.map_err(|e| e.to_string())?;
        if let Some(host) = &req.host {
            let _ = self.registry.update(&sensor_id, |r| r.host = Some(host.clone()));
        }
        Ok(self.issued(signed, grant.labels))
    }
}

impl CertIssuer for Issuer {
    fn enroll<'a>(&'a self, request: &'a Enroll, _remote: &'a str) -> BoxFuture<'a, Result<CertificateIssued, String>> {
        Box::pin(self.enroll_inner(request))
    }

    fn renew<'a>(
        &'a self,
        peer: &'a PeerIdentity,
        csr_pem: &'a str,
    ) -> BoxFuture<'a, Result<CertificateIssued, String>> {
        Box::pin(async move {
            let signed = csr::sign_csr(&self.ca, csr_pem, &peer.tenant, self.days, Some(&peer.sensor_id))
                .map_err(|e| e.to_string())?;
            self.registry.renewed(&peer.sensor_id, &signed.fingerprint).map_err(|e| e.to_string())?;
            self.registry.flush().await.map_err(|e| e.to_string())?;
            Ok(self.issued(signed, Default::default()))
        })
    }
}
