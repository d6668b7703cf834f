//! Rainbow on BigQuery: a `profiles.yml` target of `type: bigquery` ([`BigQueryTarget`]), and
//! the client ([`BigQuery`]) that runs a project's SQL there as query jobs through
//! gcp-bigquery-client — Rainbow's job ids and labels, dry runs, `maximum_bytes_billed`, job
//! statistics (bytes processed/billed, slot-ms) and BigQuery's errors with the job id and the
//! position in the SQL. dbt-bigquery's materializations on top of it live in `rainbow-dbt`.

mod client;
pub mod error;
pub mod rows;
mod target;

pub use client::{BigQuery, JobOptions, JobResult, Relation, RelationKind};
pub use error::{BigQueryError, Result};
pub use rows::Column;
pub use target::{Auth, BigQueryTarget, Priority};
