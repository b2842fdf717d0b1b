//! Rule compilation and evaluation, alerts and their ids. Pure: no actors, no sockets.
//!
//! * [`rule`]: rules and packs as analysts write them (YAML), plus the built-in pack.
//! * [`compile`]: plan each rule once with DataFusion; evaluate compiled rules per batch.
//! * [`prefilter`]: one multi-literal scan per batch selects each rule's candidate rows.
//! * [`alert`]: the alert shape and deterministic alert ids.
//! * [`health`]: fleet health alerts (`vedette.sensor_silent`, `vedette.sensor_back`).
#![warn(missing_docs)]

pub mod alert;
pub mod compile;
pub mod error;
pub mod formats;
pub mod health;
pub mod prefilter;
pub mod reference;
pub mod rule;
pub mod signature;
pub mod storm;
pub mod suppress;
pub mod validate;
pub mod values;
pub mod window;

pub use error::{Result, RuleError};
