//! API authentication and authorization: bearer tokens (stored hashed), roles, tenants, the
//! audit log and per-token rate limits. The HTTP layer that applies them is `api::access`.
//!
//! * [`token`]: token format, generation and hashing (pure).
//! * [`store`]: the token registry in sled.
//! * [`audit`]: the audit log of mutating calls in sled.
//! * [`ratelimit`]: per-token token buckets.
//! * [`enrollment`]: one-time (or n-time) tokens that let sensors obtain certificates.

pub mod audit;
pub mod enrollment;
pub mod local;
pub mod ratelimit;
pub mod store;
pub mod token;

use serde::{Deserialize, Serialize};

pub use store::{TokenInfo, TokenStore};
pub use token::Secret;

/// The tenant of a fleet-wide token: it sees every tenant.
pub const ALL_TENANTS: &str = "*";

/// What a token may do; each role includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read alerts, sensors, rules, sinks.
    Viewer,
    /// Viewer, plus rules, packs, reference tables, dead-letter replay, sink tests.
    Analyst,
    /// Everything: tokens, dead-letter purge, the audit log.
    Admin,
}

impl Role {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Analyst => "analyst",
            Self::Admin => "admin",
        }
    }

    /// Parses a role name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(Self::Viewer),
            "analyst" => Some(Self::Analyst),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// Who is calling: established once per request from the bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Token id (public part of the token).
    pub token_id: String,
    /// Token name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Tenant, or [`ALL_TENANTS`].
    pub tenant: String,
}

impl Caller {
    /// Whether the caller sees every tenant.
    pub fn fleet_wide(&self) -> bool {
        self.tenant == ALL_TENANTS
    }

    /// Whether the caller may see objects of `tenant` (`None`: engine-internal objects, which
    /// only fleet-wide callers see).
    pub fn sees(&self, tenant: Option<&str>) -> bool {
        self.fleet_wide() || tenant == Some(self.tenant.as_str())
    }
}

/// Checks a tenant name: `*`, or 1–64 of `A-Z a-z 0-9 . _ -`.
pub fn valid_tenant(t: &str) -> bool {
    t == ALL_TENANTS
        || (!t.is_empty() && t.len() <= 64 && t.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)))
}
