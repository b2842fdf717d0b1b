//! Detached Ed25519 signatures over the canonical bytes of a whole pack (SQL included).
//!
//! Canonical bytes: `vedette-pack-v1\n` followed by the pack serialized as compact JSON in
//! the fixed field order of [`Pack`]. Reformatting the YAML or editing comments keeps the
//! signature valid; changing any field — a rule's SQL, severity, a tag — invalidates it.
//!
//! Text formats (one line each):
//! * public key `PREFIX.pub`: `ed25519 <base64 32-byte key>`
//! * secret key `PREFIX.key`: `ed25519-secret <base64 32-byte seed>`
//! * signature `PACK.sig`: `ed25519 <key id> <base64 64-byte signature>`, key id = first 16 hex
//!   digits of SHA-256 of the public key.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::error::{Result, RuleError};
use crate::rule::Pack;

const DOMAIN: &[u8] = b"vedette-pack-v1\n";

/// The bytes a pack signature covers.
pub fn canonical_bytes(pack: &Pack) -> Vec<u8> {
    let mut out = DOMAIN.to_vec();
    serde_json::to_writer(&mut out, pack).expect("packs serialize");
    out
}

fn sig_err(pack: &str, reason: impl Into<String>) -> RuleError {
    RuleError::Signature { pack: pack.into(), reason: reason.into() }
}

/// A trusted public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parses `ed25519 <base64>`; `origin` names the file in errors.
    pub fn from_text(origin: &str, text: &str) -> Result<Self> {
        let bad = |r: &str| sig_err(origin, format!("not an ed25519 public key file: {r}"));
        let b64 = text.trim().strip_prefix("ed25519 ").ok_or_else(|| bad("expected `ed25519 <base64>`"))?;
        let bytes: [u8; 32] = B64
            .decode(b64.trim())
            .map_err(|e| bad(&e.to_string()))?
            .try_into()
            .map_err(|_| bad("key is not 32 bytes"))?;
        VerifyingKey::from_bytes(&bytes).map(Self).map_err(|e| bad(&e.to_string()))
    }

    /// `ed25519 <base64>` plus newline.
    pub fn to_text(&self) -> String {
        format!("ed25519 {}\n", B64.encode(self.0.as_bytes()))
    }

    /// Short id: first 16 hex digits of SHA-256 of the key.
    pub fn key_id(&self) -> String {
        hex16(&Sha256::digest(self.0.as_bytes()))
    }
}

fn hex16(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// A signing key (keep it secret).
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// From 32 random bytes (the caller supplies the randomness).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&seed))
    }

    /// Parses `ed25519-secret <base64 seed>`.
    pub fn from_text(origin: &str, text: &str) -> Result<Self> {
        let bad = |r: &str| sig_err(origin, format!("not an ed25519 secret key file: {r}"));
        let b64 =
            text.trim().strip_prefix("ed25519-secret ").ok_or_else(|| bad("expected `ed25519-secret <base64>`"))?;
        let seed: [u8; 32] = B64
            .decode(b64.trim())
            .map_err(|e| bad(&e.to_string()))?
            .try_into()
            .map_err(|_| bad("seed is not 32 bytes"))?;
        Ok(Self::from_seed(seed))
    }

    /// `ed25519-secret <base64 seed>` plus newline.
    pub fn to_text(&self) -> String {
        format!("ed25519-secret {}\n", B64.encode(self.0.to_bytes()))
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Signs a pack; returns the signature file text.
    pub fn sign(&self, pack: &Pack) -> String {
        let sig = self.0.sign(&canonical_bytes(pack));
        format!("ed25519 {} {}\n", self.public().key_id(), B64.encode(sig.to_bytes()))
    }
}

/// Verifies a pack's signature file against trusted keys; returns the id of the key that
/// signed it.
pub fn verify(pack: &Pack, sig_text: &str, trusted: &[PublicKey]) -> Result<String> {
    let bad = |r: String| sig_err(&pack.name, r);
    let mut parts = sig_text.split_whitespace();
    let (Some("ed25519"), Some(key_id), Some(b64), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("signature file is not `ed25519 <key id> <base64 signature>`".into()));
    };
    let bytes: [u8; 64] = B64
        .decode(b64)
        .map_err(|e| bad(format!("signature is not base64: {e}")))?
        .try_into()
        .map_err(|_| bad("signature is not 64 bytes".into()))?;
    let sig = Signature::from_bytes(&bytes);
    let key = trusted
        .iter()
        .find(|k| k.key_id() == key_id)
        .ok_or_else(|| bad(format!("signed by key {key_id}, which is not trusted")))?;
    key.0.verify_strict(&canonical_bytes(pack), &sig).map_err(|_| {
        bad(format!("signature by key {key_id} does not match the pack contents (tampered or re-edited?)"))
    })?;
    Ok(key_id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack() -> Pack {
        Pack::from_yaml(
            "p.yaml",
            "name: p\nversion: 1\nrules:\n  - {id: a, name: A, severity: low, sql: \"SELECT exe FROM process_events\"}\n",
        )
        .unwrap()
    }

    #[test]
    fn sign_verify_round_trip_and_key_files() {
        let sk = SecretKey::from_seed([7; 32]);
        let sk2 = SecretKey::from_text("k", &sk.to_text()).unwrap();
        let pk = PublicKey::from_text("p", &sk2.public().to_text()).unwrap();
        let sig = sk.sign(&pack());
        assert_eq!(verify(&pack(), &sig, std::slice::from_ref(&pk)).unwrap(), pk.key_id());
        // Reformatting the YAML keeps the signature valid.
        let reformatted = Pack::from_yaml(
            "p.yaml",
            "# comment\nname: p\nversion: 1\nrules:\n- id: a\n  name: A\n  severity: low\n  sql: SELECT exe FROM process_events\n",
        )
        .unwrap();
        verify(&reformatted, &sig, &[pk]).unwrap();
    }

    #[test]
    fn tampering_with_sql_or_metadata_or_key_fails() {
        let sk = SecretKey::from_seed([7; 32]);
        let pk = sk.public();
        let sig = sk.sign(&pack());
        let mut sql = pack();
        sql.rules[0].sql.push_str(" WHERE 1 = 0");
        assert!(verify(&sql, &sig, std::slice::from_ref(&pk)).unwrap_err().to_string().contains("does not match"));
        let mut meta = pack();
        meta.version = 2;
        assert!(verify(&meta, &sig, std::slice::from_ref(&pk)).is_err());
        let other = SecretKey::from_seed([8; 32]).public();
        assert!(verify(&pack(), &sig, &[other]).unwrap_err().to_string().contains("not trusted"));
        assert!(
            verify(&pack(), "garbage", std::slice::from_ref(&pk)).unwrap_err().to_string().contains("is not `ed25519")
        );
        let mut flipped = sig.clone();
        flipped.replace_range(flipped.len() - 6..flipped.len() - 5, "A");
        assert!(verify(&pack(), &flipped, &[pk]).is_err());
    }
}
