//! The one error type of the engine library.

/// Errors starting or running the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The configuration is invalid; every problem is listed with its key path.
    #[error(transparent)]
    Config(#[from] vedette_config::ConfigError),
    /// CA or certificate files could not be created or read.
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
    /// A rule or pack was refused; fix the rule named in the message.
    #[error(transparent)]
    Rules(#[from] vedette_pipelines::RuleError),
    /// A telemetry table definition is invalid.
    #[error(transparent)]
    Schema(#[from] vedette_schemas::SchemaError),
    /// An actor, TLS setup or the state store failed.
    #[error(transparent)]
    Actor(#[from] vedette_actors::ActorError),
    /// The request does not fit how this engine is set up; the message says what to do.
    #[error("{0}")]
    Refused(String),
    /// No applied rule has this id.
    #[error("no applied rule has the id `{id}`; `vedette rules list` shows the rule ids")]
    UnknownRule {
        /// The id asked for.
        id: String,
    },
    /// A file, directory or socket could not be used.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
}

impl EngineError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}

/// Result alias.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
