//! vedette's actors: QUIC ingest, per-table batchers, rule workers, alert sinks, and the
//! supervisor that restarts them. Logic lives in `vedette-schemas` and `vedette-pipelines`;
//! actors only move data and keep it safe.
#![warn(missing_docs)]

pub mod batcher;
pub mod commit;
pub mod dedup;
pub mod error;
pub mod fleet;
pub mod ingest;
pub mod ledger;
pub mod metrics;
pub mod registry;
pub mod rules;
pub mod sessions;
pub mod sinks;
pub mod supervisor;
pub mod tls;
pub mod windows;

pub use error::{ActorError, Result};
