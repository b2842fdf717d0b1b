//! CLI commands that talk to a running engine's API.

pub mod alerts;
pub mod client;
pub mod sensor;
pub mod sensors;
pub mod table;
pub mod tokens;
pub mod top;
