//! The warehouse's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in the warehouse.
#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    /// SQL that does not parse (BigQuery dialect).
    #[error("{context}: SQL does not parse: {message}")]
    Parse {
        /// What was being parsed (a model's file, `query`, …).
        context: String,
        /// The parser's message (with line and column).
        message: String,
    },
    /// SQL that parses but uses something the embedded warehouse cannot run.
    #[error("{context}: {message}")]
    Unsupported {
        /// What was being planned.
        context: String,
        /// What is unsupported.
        message: String,
    },
    /// Planning or execution failed in DataFusion.
    #[error("{context}: {source}")]
    DataFusion {
        /// What was running.
        context: String,
        /// The DataFusion error.
        #[source]
        source: datafusion::error::DataFusionError,
    },
    /// A Delta Lake operation failed.
    #[error("{context}: {source}")]
    Delta {
        /// Which table and operation.
        context: String,
        /// The deltalake error.
        #[source]
        source: deltalake::DeltaTableError,
    },
    /// Object store (listing, view definitions).
    #[error("{context}: {source}")]
    Store {
        /// Which location.
        context: String,
        /// The object store error.
        #[source]
        source: deltalake::ObjectStoreError,
    },
    /// A relation that does not exist.
    #[error("relation `{name}` does not exist{suggestion}")]
    UnknownRelation {
        /// The name asked for.
        name: String,
        /// ` (did you mean …?)` or empty.
        suggestion: String,
    },
    /// A configuration value that cannot be used (a location URL, a seed's column types…).
    #[error("{node}: config `{key}`: {message}")]
    Config {
        /// Node name or file.
        node: String,
        /// Config key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The IO pool's threads (local file reads and writes) could not be started.
    #[error("cannot start the IO pool")]
    IoPool {
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A local file (seed CSV, warehouse directory).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl WarehouseError {
    /// Wraps a DataFusion error with what was running.
    pub fn datafusion(
        context: impl Into<String>,
    ) -> impl FnOnce(datafusion::error::DataFusionError) -> Self {
        let context = context.into();
        move |source| WarehouseError::DataFusion { context, source }
    }

    /// Wraps a Delta Lake error with the table and operation.
    pub fn delta(context: impl Into<String>) -> impl FnOnce(deltalake::DeltaTableError) -> Self {
        let context = context.into();
        move |source| WarehouseError::Delta { context, source }
    }
}

/// Result with [`WarehouseError`].
pub type Result<T, E = WarehouseError> = std::result::Result<T, E>;
