//! Workspace integration tests: one binary, one module per feature. Storage-backed tests run on
//! both SQLite and a real PostgreSQL (`RAINBOW_TEST_POSTGRES_URL`, started by scripts/test.sh).

mod support;

mod api;
mod backfills;
mod batch;
mod bigquery;
mod browser;
mod cli;
mod daemon;
mod dbt_packages;
mod execution;
mod extract;
mod lake_s3;
mod pipeline;
mod recovery;
mod seed_data;
mod selection;
mod sql_models;
mod staleness;
mod storage;
mod streaming;
mod tidy;
mod ui;
mod warehouse_peer;
