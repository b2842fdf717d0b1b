//! The one error type of this crate.

/// Errors from starting or running the engine's actors.
#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    /// A certificate or key could not be loaded; check the paths and PEM contents.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// The embedded state store failed; check disk space and permissions of the data dir.
    #[error("state store at {path}: {source}")]
    Storage {
        /// Where the store lives.
        path: String,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// An actor could not be spawned (usually a bug or a shutdown race).
    #[error("could not start actor `{name}`: {reason}")]
    Spawn {
        /// Actor name.
        name: String,
        /// Why.
        reason: String,
    },
    /// A sink cannot run as configured; fix its `[[sinks]]` entry.
    #[error("sink `{sink}`: {reason}")]
    Sink {
        /// Sink name.
        sink: String,
        /// Why.
        reason: String,
    },
    /// A socket or file could not be opened.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Result alias for this crate.
pub type Result<T, E = ActorError> = std::result::Result<T, E>;
