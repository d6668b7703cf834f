//! # Rainbow's embedded warehouse
//!
//! BigQuery SQL (GoogleSQL) on DataFusion over Delta Lake tables in an object store (a local
//! directory by default): [`bigquery`] makes DataFusion speak BigQuery, [`Warehouse`] owns the
//! session and the tables/views, [`materialize`] runs a dbt project (seeds, models with every
//! materialization, snapshots, data tests) on it.
//!
//! Why Delta Lake rather than plain Parquet files: every write is one atomic commit (a crash
//! mid-write leaves the previous version readable), merges rewrite only touched files, and
//! the table history is kept for time travel and audits.

pub mod assets;
pub mod bigquery;
mod catalog;
pub mod error;
pub mod instrument;
pub mod materialize;
mod merge;
pub mod selection;
mod warehouse;

pub use assets::SqlProject;
pub use catalog::RelationKind;
pub use datafusion;
pub use error::{Result, WarehouseError};
pub use warehouse::{CATALOG, Warehouse, WriteMode};

#[cfg(test)]
mod tests;
