//! What HTTP connectors share: the client (rustls, system roots plus an optional CA) and the
//! mapping of answers to outcomes.

use std::path::Path;
use std::time::Duration;

use super::delivery::Outcome;
use crate::error::{ActorError, Result};

/// Installs ring as the process-wide rustls provider, which reqwest's TLS uses (an error
/// means one is installed already). Call before building any `reqwest::Client`.
pub fn ensure_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client with `timeout` per request, trusting the system roots and `extra_ca` (PEM).
pub fn client(sink: &str, timeout: Duration, extra_ca: Option<&Path>) -> Result<reqwest::Client> {
    ensure_crypto_provider();
    let err = |reason: String| ActorError::Sink { sink: sink.to_string(), reason };
    let mut b = reqwest::Client::builder().timeout(timeout).user_agent(concat!("vedette/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = extra_ca {
        let pem = std::fs::read(path).map_err(|e| err(format!("reading tls_ca {}: {e}", path.display())))?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| err(format!("tls_ca {}: {e}", path.display())))?;
        b = b.add_root_certificate(cert);
    }
    b.build().map_err(|e| err(format!("building the HTTP client: {e}")))
}

/// Outcome of an HTTP status for a whole request: 2xx delivered; 408, 429 and 5xx retried;
/// other 4xx (and anything else) refused for good, with the status and the start of the body.
pub fn status_outcome(status: reqwest::StatusCode, body: &str) -> Outcome {
    let detail = || {
        let snippet: String = body.chars().take(300).collect();
        format!("HTTP {status}: {snippet}")
    };
    match status.as_u16() {
        200..=299 => Outcome::Delivered,
        408 | 429 | 500..=599 => Outcome::Retry(detail()),
        _ => Outcome::Reject(detail()),
    }
}

/// Outcome of a request that got no answer (connect error, timeout): retried.
pub fn transport_outcome(e: &reqwest::Error) -> Outcome {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    Outcome::Retry(format!("request {what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_retry_or_reject() {
        use reqwest::StatusCode as S;
        assert_eq!(status_outcome(S::OK, ""), Outcome::Delivered);
        assert_eq!(status_outcome(S::NO_CONTENT, ""), Outcome::Delivered);
        for s in [S::REQUEST_TIMEOUT, S::TOO_MANY_REQUESTS, S::INTERNAL_SERVER_ERROR, S::SERVICE_UNAVAILABLE] {
            assert!(matches!(status_outcome(s, "x"), Outcome::Retry(_)), "{s}");
        }
        for s in [S::BAD_REQUEST, S::UNAUTHORIZED, S::FORBIDDEN, S::NOT_FOUND, S::PAYLOAD_TOO_LARGE] {
            assert!(matches!(status_outcome(s, "bad field"), Outcome::Reject(r) if r.contains("bad field")), "{s}");
        }
    }
}
