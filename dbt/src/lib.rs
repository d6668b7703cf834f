//! # Rainbow dbt
//!
//! dbt projects on Rainbow: [`Project::load`] reads `dbt_project.yml`, models, seeds, macros,
//! snapshots, singular tests and schema files; [`parse`] renders every file once with dbt's
//! Jinja context (minijinja) to find `ref`/`source`/`config` and orders the DAG; [`compile`]
//! substitutes relation names into the once-rendered SQL; [`data_tests`] compiles the tests
//! (recording the nodes each reads); [`materialize`] and [`snapshot`] are dbt's
//! materializations on the warehouse; [`SqlProject`] declares a project as engine assets (tests
//! as checks), and [`verbs`] runs dbt's verbs as engine runs; [`cli`] is their command line.
//!
//! ```text
//! files ─load─► Project ─parse (Jinja, once)─► Manifest ─compile─► SQL per node + DataTests
//!   SqlProject::declare ─► AssetDefinitions (+ checks) ─► engine AssetGraph ─► Executor run
//!   each step: compiled once per run ─► materialize::build_node ─► rainbow-warehouse
//!                                     (a BigQuery target: bigquery::build_node ─► rainbow-bigquery)
//! ```
//!
//! Invariants: parsing never executes SQL; one compilation per run and partition-variable set
//! fixes the DAG; a node or test is rendered again at execution only when its parse-time
//! rendering read `execute` (dbt's introspection: `statement`, `run_query`, `adapter`
//! methods) or a unit test overrides its vars, and a ref first seen then is an error.

pub mod bigquery;
pub mod cli;
pub mod compile;
pub mod data_tests;
pub mod deps;
pub mod error;
pub mod materialize;
pub mod project;
mod schema_change;
pub mod selectors;
pub mod snapshot;
mod source_map;
pub mod sql_project;
pub mod synthetic;
pub mod unit_tests;
pub mod verbs;

pub use compile::{
    CompileOptions, Manifest, Node, NodeKind, compile, parse, write_manifest, write_target,
};
pub use data_tests::{DataTest, Severity, data_tests, write_tests};
pub use error::{DbtError, Result};
pub use project::{ProfileTarget, Project};
pub use sql_project::{Declared, NodeInfo, SqlProject};
pub use verbs::{NodeResult, RunSummary, Status, Verb, VerbOptions, run_verb};
