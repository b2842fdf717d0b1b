//! CLI commands that talk to a running engine's API.

pub mod alerts;
pub mod client;
pub mod sensors;
pub mod tokens;
