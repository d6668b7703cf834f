//! The Rainbow pipeline: assets over the Rainbow DB. [`generate`] is the deterministic
//! source-data generator behind `rainbow seed-data`; [`extract`] the daily-partitioned extract
//! of every source table into the Parquet master dataset; [`export`] writes the batch views
//! for the serving layer; [`pipeline`] puts them, the SQL project (`sql_models/`) and the
//! checks together as the Rainbow code location.

pub mod export;
pub mod extract;
pub mod generate;
pub mod pipeline;

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
    /// The engine refused or failed (definitions, storage, a backfill).
    #[error(transparent)]
    Engine(#[from] rainbow_engine::Error),
    /// The warehouse failed (boxed: the warehouse's error is large).
    #[error(transparent)]
    Warehouse(Box<rainbow_warehouse::WarehouseError>),
    /// The SQL project failed to load, parse, compile or build (boxed, as the warehouse's).
    #[error(transparent)]
    Dbt(Box<rainbow_dbt::DbtError>),
}

impl From<rainbow_warehouse::WarehouseError> for AssetsError {
    fn from(e: rainbow_warehouse::WarehouseError) -> Self {
        AssetsError::Warehouse(Box::new(e))
    }
}

impl From<rainbow_dbt::DbtError> for AssetsError {
    fn from(e: rainbow_dbt::DbtError) -> Self {
        AssetsError::Dbt(Box::new(e))
    }
}
