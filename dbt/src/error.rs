//! [`DbtError`], the dbt crate's one error: every failure names the file (and line and
//! column when known), the node and config key, or the selector.

use std::path::PathBuf;

/// Errors of loading, parsing, compiling and building a dbt project.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbtError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A YAML file is invalid.
    #[error("{path}:{line}:{column}: {message}")]
    Yaml {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 when unknown).
        line: usize,
        /// 1-based column (0 when unknown).
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// The project is inconsistent (missing dbt_project.yml, two models with one name, ...).
    #[error("{path}: {message}")]
    Project {
        /// Where.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Jinja failed: syntax, an undefined name, `exceptions.raise_compiler_error`, a bad call.
    #[error("{file}:{line}:{column}: {message}")]
    Jinja {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What failed.
        message: String,
    },
    /// `ref()` names a model, seed or snapshot that does not exist.
    #[error("{file}: model `{model}` refers to unknown `{reference}`{suggestion}")]
    UnknownRef {
        /// The model's file.
        file: String,
        /// The model.
        model: String,
        /// The missing name.
        reference: String,
        /// "did you mean" hint (may be empty).
        suggestion: String,
    },
    /// `source()` names a source table no schema file declares.
    #[error("{file}: model `{model}` uses unknown source `{source_name}.{table}`{suggestion}")]
    UnknownSource {
        /// The model's file.
        file: String,
        /// The model.
        model: String,
        /// Source name.
        source_name: String,
        /// Table name.
        table: String,
        /// "did you mean" hint (may be empty).
        suggestion: String,
    },
    /// Models refer to each other in a cycle.
    #[error("ref cycle: {0}")]
    Cycle(String),
    /// A node's configuration cannot be used (a model's `config()`, a seed's column types, a
    /// snapshot's strategy…).
    #[error("{node}: config `{key}`: {message}")]
    Config {
        /// The node's file.
        node: String,
        /// The config key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A command-line value that cannot be used (`--vars`, `--target`, a profile).
    #[error("{location}: {message}")]
    Input {
        /// The flag or file.
        location: String,
        /// What is wrong.
        message: String,
    },
    /// The warehouse failed (SQL that does not plan, a write, a missing relation); boxed, as
    /// the warehouse's error is large.
    #[error(transparent)]
    Warehouse(Box<rainbow_warehouse::WarehouseError>),
    /// BigQuery failed (a job BigQuery rejected, naming the node's file and the job; an API
    /// call; credentials); boxed.
    #[error(transparent)]
    BigQuery(Box<rainbow_bigquery::BigQueryError>),
    /// The engine failed (declaring the project's assets, run storage); boxed.
    #[error(transparent)]
    Engine(Box<rainbow_engine::Error>),
}

impl From<rainbow_warehouse::WarehouseError> for DbtError {
    fn from(e: rainbow_warehouse::WarehouseError) -> Self {
        DbtError::Warehouse(Box::new(e))
    }
}

impl From<rainbow_bigquery::BigQueryError> for DbtError {
    fn from(e: rainbow_bigquery::BigQueryError) -> Self {
        DbtError::BigQuery(Box::new(e))
    }
}

impl From<rainbow_engine::Error> for DbtError {
    fn from(e: rainbow_engine::Error) -> Self {
        DbtError::Engine(Box::new(e))
    }
}

/// Result with [`DbtError`].
pub type Result<T, E = DbtError> = std::result::Result<T, E>;
