//! # Rainbow SQL projects
//!
//! dbt-compatible SQL projects: [`Project::load`] reads `dbt_project.yml`, models, seeds,
//! macros, snapshots, singular tests and schema files; [`parse`] renders every file once with
//! dbt's Jinja context (minijinja) to find `ref`/`source`/`config` and orders the DAG;
//! [`compile`] substitutes relation names into the once-rendered SQL; [`write_target`] writes
//! `target/compiled/` and `target/manifest.json`. Executing models (DataFusion, BigQuery) builds on this.
//!
//! Invariant: rendering never executes SQL.

pub mod compile;
pub mod error;
pub mod project;
pub mod synthetic;
pub mod tests;

pub use compile::{
    CompileOptions, Manifest, Node, NodeKind, compile, parse, write_manifest, write_target,
};
pub use error::SqlError;
pub use project::{ProfileTarget, Project};
pub use tests::{DataTest, Severity, data_tests, write_tests};
