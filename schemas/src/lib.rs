//! Telemetry schemas and the vedette wire protocol, as pure functions.
//!
//! * [`tables`]: the built-in telemetry tables and operator-declared ones.
//! * [`frame`]: protocol v1 frames and control messages (no sockets here).
//! * [`seq`]: per-sensor sequence bookkeeping (applied / in flight).
//! * [`decode`]: NDJSON / Arrow IPC payloads → Arrow batches, with per-row errors.
//! * [`identity`]: the rule for sensor ids and tenant names.
//! * [`fleet`]: commands to sensors, observe levels, configs, renewal and enrollment messages.
#![warn(missing_docs)]

pub mod decode;
pub mod error;
pub mod fleet;
pub mod frame;
pub mod identity;
pub mod seq;
pub mod tables;

pub use error::{Result, SchemaError};
