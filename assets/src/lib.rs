//! The Rainbow pipeline: assets over the Rainbow DB. So far: [`generate`], the deterministic
//! source-data generator behind `rainbow seed-data`, and [`extract`], the daily-partitioned
//! extract of every source table into the Parquet master dataset.

pub mod extract;
pub mod generate;

/// Errors of the Rainbow pipeline's assets.
#[derive(Debug, thiserror::Error)]
pub enum AssetsError {
    /// The Rainbow DB cannot be reached or migrated.
    #[error(transparent)]
    Db(#[from] rainbow_db::DbError),
    /// A statement failed.
    #[error("{context}: {source}")]
    Sql {
        /// What was being done.
        context: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// Generation options make no sense or the target is not empty.
    #[error("{0}")]
    Invalid(String),
}
