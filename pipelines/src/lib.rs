//! Rule compilation and evaluation, alerts and their ids. Pure: no actors, no sockets.
//!
//! * [`rule`]: rules and packs as analysts write them (YAML), plus the built-in pack.
//! * [`compile`]: plan each rule once with DataFusion; evaluate compiled rules per batch.
//! * [`filter`]: each distinct predicate of a table's rules once per batch selects the rows
//!   each rule runs on.
//! * [`alert`]: the alert shape and deterministic alert ids.
//! * [`health`]: fleet health alerts (`vedette.sensor_silent`, `vedette.sensor_back`).
#![warn(missing_docs)]

pub mod alert;
pub mod compile;
pub mod error;
pub mod filter;
pub mod formats;
pub mod health;
pub mod pack_check;
pub mod pack_text;
pub mod reference;
pub mod rule;
pub mod signature;
pub mod storm;
pub mod suppress;
pub mod validate;
pub mod values;
pub mod window;

pub use error::{Result, RuleError};
