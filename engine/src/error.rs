//! The engine's one error type, [`Error`], and the [`BoxError`] that user compute functions return.
//!
//! Expected kinds (a bad definition, a bad selection, a storage failure, bad configuration) are
//! kept apart from [`Error::Internal`], which always means a bug in the engine.

use std::path::PathBuf;

/// The error user code returns from compute functions: any error converts into it with `?`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias used throughout the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A definition is invalid: bad asset key, duplicate key, check on an unknown asset, ...
    #[error("invalid definitions: {0}")]
    Definition(String),

    /// The asset graph has a dependency cycle; the message names the whole cycle.
    #[error("dependency cycle: {cycle}")]
    Cycle {
        /// The cycle, rendered as `a -> b -> c -> a`.
        cycle: String,
    },

    /// An asset depends on a key that no definition provides.
    #[error("asset `{asset}` depends on unknown asset `{dependency}`{suggestion}")]
    UnknownDependency {
        /// The asset declaring the dependency.
        asset: String,
        /// The missing upstream key.
        dependency: String,
        /// A "did you mean" hint, already formatted (may be empty).
        suggestion: String,
    },

    /// A selection expression could not be parsed or selects something that does not exist.
    #[error("invalid selection `{expression}`: {message}")]
    Selection {
        /// The offending expression (or the part of it that failed).
        expression: String,
        /// What is wrong with it.
        message: String,
    },

    /// A partition key that the asset's partitions definition does not have, or a partitioned
    /// asset run without one.
    #[error("invalid partition for `{asset}`: {message}")]
    Partition {
        /// The asset.
        asset: String,
        /// What is wrong.
        message: String,
    },

    /// Configuration (config file, environment variable, resource config) is invalid.
    #[error("configuration error in {location}: {message}")]
    Config {
        /// Where the bad value came from: a file path, an environment variable, a resource name.
        location: String,
        /// What is wrong.
        message: String,
    },

    /// A resource was requested from a context but not provided by the definitions.
    #[error("resource `{0}` is not configured in these definitions")]
    MissingResource(&'static str),

    /// Connecting to or migrating a database failed.
    #[error(transparent)]
    Db(#[from] rainbow_db::DbError),

    /// A storage operation failed.
    #[error("storage error while {context}")]
    Storage {
        /// What the engine was doing.
        context: String,
        /// The database error.
        #[source]
        source: sqlx::Error,
    },

    /// Stored data could not be decoded (e.g. corrupt JSON in the event log).
    #[error("corrupt stored data in {location}: {message}")]
    CorruptStorage {
        /// Table and row.
        location: String,
        /// What failed to decode.
        message: String,
    },

    /// A run or backfill id that does not exist.
    #[error("no {kind} with id `{id}`")]
    NotFound {
        /// `run`, `backfill`, ...
        kind: &'static str,
        /// The id asked for.
        id: String,
    },

    /// File-system error with the path involved.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The path being read or written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The same error, shared by several waiters (e.g. every step whose events were in a batch
    /// that failed to commit).
    #[error(transparent)]
    Shared(std::sync::Arc<Error>),

    /// A bug in the engine: an invariant did not hold.
    #[error("internal error (this is a bug in rainbow): {0}")]
    Internal(String),
}

impl Error {
    /// Wraps a sqlx error with what the engine was doing when it happened.
    pub(crate) fn storage(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> Error {
        let context = context.into();
        move |source| Error::Storage { context, source }
    }

    /// Builds a selection error.
    pub(crate) fn selection(expression: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Selection {
            expression: expression.into(),
            message: message.into(),
        }
    }
}

pub use rainbow_suggest::did_you_mean;

/// `error: cause: cause` — an error with its whole source chain.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
