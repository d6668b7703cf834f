//! # Rainbow's embedded warehouse
//!
//! BigQuery SQL (GoogleSQL) on DataFusion over Delta Lake tables in an object store (a local
//! directory by default): [`bigquery`] makes DataFusion speak BigQuery, [`Warehouse`] owns the
//! session, the catalog of tables, views and external tables, and every write (replace, append,
//! merge, delete+insert, CSV loads), each one Delta commit. It knows nothing of dbt projects
//! (`rainbow-dbt` builds them on it) nor of the engine.
//!
//! Why Delta Lake rather than plain Parquet files: every write is one atomic commit (a crash
//! mid-write leaves the previous version readable), merges rewrite only touched files, and
//! the table history is kept for time travel and audits.

pub mod bigquery;
mod catalog;
pub mod error;
pub mod instrument;
pub mod interval_join;
pub mod io_pool;
mod lake;
mod load;
mod merge;
mod parallel_write;
pub mod sorted_window;
mod statement;
mod warehouse;
mod wildcard;
mod write;

pub use catalog::RelationKind;
pub use datafusion;
pub use error::{Result, WarehouseError};
pub use lake::{LakeDataset, LakeFile};
pub use load::CsvLoad;
pub use warehouse::{CATALOG, Warehouse, WriteMode};

#[cfg(test)]
mod tests;
