//! The `vedette` engine: wiring of every stage, the HTTP API, fleet PKI and the reference
//! sensor. The binary (`main.rs`) is a thin CLI over this library, so tests can run an engine
//! in-process.
#![warn(missing_docs)]

pub mod api;
pub mod auth;
pub mod engine;
pub mod error;
pub mod forward;
pub mod history;
pub mod issuer;
pub mod pki;
pub mod preflight;
pub mod quic;
pub mod reference;
pub mod reload;
pub mod rules_cli;
pub mod ruleset;
pub mod rulesync;
pub mod sensor;
pub mod sinkset;

pub use engine::EngineHandle;
pub use error::{EngineError, Result};
