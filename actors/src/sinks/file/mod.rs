//! File sink: encoded alerts appended one per line, fsync'd before they count as delivered,
//! with optional size-based rotation (`PATH.1` newest … `PATH.keep`).

mod service;
#[cfg(test)]
mod tests;

pub use service::{FileSink, append_line};
