//! Token format: `vdt_<id>_<secret>`. The id (16 hex digits) is public: it names the token in
//! listings, the audit log and revocation. The secret is 32 random bytes (256 bits), base64url;
//! only its SHA-256 is stored.

use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use sha2::Digest;

const PREFIX: &str = "vdt_";
/// Prefix of enrollment tokens (`vde_<id>_<secret>`, same shape as API tokens).
pub const ENROLLMENT_PREFIX: &str = "vde_";

/// A secret string (token, password, key) that never shows itself in `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself, for the one place that must use it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("**REDACTED**")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("**REDACTED**")
    }
}

/// A fresh token: `(id, token)`.
pub fn generate() -> (String, Secret) {
    generate_with(PREFIX)
}

/// A fresh token with `prefix`: `(id, token)`.
pub fn generate_with(prefix: &str) -> (String, Secret) {
    let rng = SystemRandom::new();
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    rng.fill(&mut id).expect("the system RNG works");
    rng.fill(&mut secret).expect("the system RNG works");
    let id = hex::encode(id);
    let token = format!("{prefix}{id}_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret));
    (id, Secret::new(token))
}

/// Splits a presented token into `(id, secret part)`; `None` if it is not shaped like one.
pub fn split(token: &str) -> Option<(&str, &str)> {
    split_with(PREFIX, token)
}

/// [`split`] for tokens with `prefix`.
pub fn split_with<'a>(prefix: &str, token: &'a str) -> Option<(&'a str, &'a str)> {
    let rest = token.strip_prefix(prefix)?;
    let (id, secret) = rest.split_once('_')?;
    let id_ok = id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit());
    let secret_ok = secret.len() == 43 && secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (id_ok && secret_ok).then_some((id, secret))
}

/// What is stored for a token: SHA-256 of its whole text, hex. Tokens carry 256 random bits,
/// so a fast hash is enough (no dictionary to attack).
pub fn hash(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// Compares two hashes without an early exit.
pub fn same_hash(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_well_formed_and_redacted() {
        let (id, t) = generate();
        let (id2, t2) = generate();
        assert_ne!(t, t2);
        assert_ne!(id, id2);
        assert_eq!(split(t.expose()).map(|(i, _)| i), Some(id.as_str()));
        assert_eq!(format!("{t:?} {t}"), "**REDACTED** **REDACTED**");
        assert!(split("vdt_short_x").is_none());
        assert!(split("Bearer abc").is_none());
        assert!(same_hash(&hash(t.expose()), &hash(t.expose())));
        assert!(!same_hash(&hash(t.expose()), &hash(t2.expose())));
    }
}

#[cfg(test)]
mod no_panic {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_presented_token_is_split_or_refused(t in "(vdt_)?[0-9a-f_A-Za-z-]{0,80}|.{0,100}") {
            if let Some((id, secret)) = super::split(&t) {
                prop_assert_eq!(id.len(), 16);
                prop_assert_eq!(secret.len(), 43);
            }
        }
    }
}
