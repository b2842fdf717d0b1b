//! The QUIC listener's endpoint, made to survive a crash gracefully.
//!
//! quinn gives every process a random stateless-reset key and connection-id key. After a
//! kill -9 the restarted engine would then drop the packets of its predecessor's connections
//! silently, and sensors would wait for their idle timeout before reconnecting. Both keys are
//! derived from a secret kept in the data dir (`quic-reset.key`, mode 600), so the new process
//! recognises the old connection ids and answers with stateless resets the sensors accept:
//! they reconnect at once.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use ring::hmac;

use crate::error::{EngineError, Result};

/// Binds the ingest endpoint on `listen` with keys from `data_dir`.
pub fn bind(server: quinn::ServerConfig, listen: SocketAddr, data_dir: &Path) -> Result<quinn::Endpoint> {
    let secret = secret(data_dir)?;
    let reset = hmac::Key::new(hmac::HMAC_SHA256, &derive(&secret, b"stateless reset"));
    let cids = hmac::Key::new(hmac::HMAC_SHA256, &derive(&secret, b"connection ids"));
    let mut endpoint = quinn::EndpointConfig::new(Arc::new(reset));
    endpoint.cid_generator(move || Box::new(KeyedCids(cids.clone())));
    let bind_err = || EngineError::io(format!("binding QUIC listener ingest.listen={listen}"));
    let socket = std::net::UdpSocket::bind(listen).map_err(bind_err())?;
    quinn::Endpoint::new(endpoint, Some(server), socket, Arc::new(quinn::TokioRuntime)).map_err(bind_err())
}

/// The data dir's QUIC secret (32 random bytes, hex), created on first use.
fn secret(data_dir: &Path) -> Result<Vec<u8>> {
    let path = data_dir.join("quic-reset.key");
    if let Ok(hex) = std::fs::read_to_string(&path)
        && let Some(bytes) = unhex(hex.trim())
        && bytes.len() == 32
    {
        return Ok(bytes);
    }
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| EngineError::io("generating the QUIC reset key")(std::io::Error::other("no randomness")))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    crate::pki::write_file(&path, &hex, true).map_err(EngineError::io(format!("writing {}", path.display())))?;
    Ok(bytes.to_vec())
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    s.len().is_multiple_of(2).then_some(())?;
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

fn derive(secret: &[u8], purpose: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), purpose).as_ref().to_vec()
}

const NONCE: usize = 8;
const TAG: usize = 8;

/// Connection ids = 8 random bytes + 8 bytes of HMAC over them: any process holding the key
/// recognises them.
struct KeyedCids(hmac::Key);

impl KeyedCids {
    fn tag(&self, nonce: &[u8]) -> [u8; TAG] {
        let mut out = [0u8; TAG];
        out.copy_from_slice(&hmac::sign(&self.0, nonce).as_ref()[..TAG]);
        out
    }
}

impl quinn::ConnectionIdGenerator for KeyedCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        let mut bytes = [0u8; NONCE + TAG];
        // A failed random source would repeat ids, not break anything security-relevant.
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes[..NONCE]);
        let tag = self.tag(&bytes[..NONCE]);
        bytes[NONCE..].copy_from_slice(&tag);
        quinn::ConnectionId::new(&bytes)
    }

    fn validate(&self, cid: &quinn::ConnectionId) -> std::result::Result<(), quinn_proto::InvalidCid> {
        let (nonce, tag) = cid.split_at(NONCE.min(cid.len()));
        if tag == self.tag(nonce) { Ok(()) } else { Err(quinn_proto::InvalidCid) }
    }

    fn cid_len(&self) -> usize {
        NONCE + TAG
    }

    fn cid_lifetime(&self) -> Option<std::time::Duration> {
        None
    }
}

#[cfg(test)]
mod tests {
    use quinn::ConnectionIdGenerator;

    use super::*;

    fn cids(dir: &Path) -> KeyedCids {
        KeyedCids(hmac::Key::new(hmac::HMAC_SHA256, &derive(&secret(dir).unwrap(), b"connection ids")))
    }

    #[test]
    fn a_restarted_process_recognises_its_predecessors_connection_ids_and_no_one_elses() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut before = cids(a.path());
        let id = before.generate_cid();
        assert_eq!(id.len(), 16);
        assert!(cids(a.path()).validate(&id).is_ok(), "same data dir, same key");
        assert!(cids(b.path()).validate(&id).is_err(), "another engine's ids are not ours");
        assert!(cids(a.path()).validate(&quinn::ConnectionId::new(&[7; 3])).is_err(), "short ids are refused");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(a.path().join("quic-reset.key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
