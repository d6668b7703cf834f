//! Test helpers: fresh storages on each backend, small asset builders, event queries.

#![allow(dead_code)]

use std::sync::Arc;

use rainbow_engine::prelude::*;
use rainbow_engine::{EventData, Executor, NodeSet, RainbowConfig, RunOptions, RunResult, Storage};
use sqlx::AssertSqlSafe;
use tokio_util::sync::CancellationToken;

/// The storage backends every storage-backed test runs on.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, empty storage and the URL to reach it; the guard keeps SQLite's directory alive.
pub struct TestStorage {
    pub storage: Storage,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

/// Admin URL of the test PostgreSQL server. Missing configuration fails loudly: the PostgreSQL
/// half of the suite is part of the contract, not optional.
pub fn postgres_admin_url() -> String {
    std::env::var("RAINBOW_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "RAINBOW_TEST_POSTGRES_URL is not set: run the suite with scripts/test.sh, which starts \
             a PostgreSQL server, or point it at one (postgres://USER@HOST:PORT/postgres)"
        )
    })
}

/// A URL to a new, empty database (not yet migrated) and what keeps it alive.
pub async fn fresh_url(backend: Backend) -> (String, Option<tempfile::TempDir>) {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = rainbow_engine::storage::sqlite_url(&dir.path().join("rainbow.db"));
            (url, Some(dir))
        }
        Backend::Postgres => {
            let admin = postgres_admin_url();
            sqlx::any::install_default_drivers();
            let pool = sqlx::AnyPool::connect(&admin)
                .await
                .expect("connect to test PostgreSQL");
            drop_stale_databases(&pool).await;
            let name = format!("rainbow_test_{}", uuid::Uuid::now_v7().simple());
            sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&pool)
                .await
                .expect("create test database");
            pool.close().await;
            let base = admin
                .rsplit_once('/')
                .map(|(b, _)| b)
                .expect("URL with a database");
            (format!("{base}/{name}"), None)
        }
    }
}

/// Once per test process: drops the test databases of earlier runs (created more than an
/// hour ago, by the UUIDv7 time in their name), so a long-lived development server does not
/// fill its disk. CI's server is thrown away anyway.
async fn drop_stale_databases(pool: &sqlx::AnyPool) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::SeqCst) {
        return;
    }
    let names: Vec<(String,)> =
        sqlx::query_as("SELECT datname::text FROM pg_database WHERE datname LIKE 'rainbow_test_%'")
            .fetch_all(pool)
            .await
            .unwrap_or_default();
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let created = |name: &str| {
        uuid::Uuid::parse_str(name.trim_start_matches("rainbow_test_"))
            .ok()
            .and_then(|id| id.get_timestamp())
            .map(|t| {
                let (secs, nanos) = t.to_unix();
                std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos)
            })
    };
    // Replication slots of earlier runs' speed-layer tests (a failed test leaves its slot,
    // which holds WAL and a slot of the server's few, and keeps its database from dropping).
    let slots: Vec<(String,)> = sqlx::query_as(
        "SELECT slot_name::text FROM pg_replication_slots WHERE slot_name LIKE 'rainbow_test_%' AND NOT active",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    for (slot,) in slots {
        if created(&slot).is_some_and(|c| c < hour_ago) {
            let _ = sqlx::query("SELECT pg_drop_replication_slot($1)")
                .bind(&slot)
                .execute(pool)
                .await;
        }
    }
    for (name,) in names {
        if created(&name).is_some_and(|c| c < hour_ago) {
            let _ = sqlx::query(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name}")))
                .execute(pool)
                .await;
        }
    }
}

pub async fn fresh_storage(backend: Backend) -> TestStorage {
    let (url, dir) = fresh_url(backend).await;
    let storage = Storage::connect(&url).await.expect("storage");
    TestStorage {
        storage,
        url,
        _dir: dir,
    }
}

/// Generates `NAME_sqlite` and `NAME_postgres` tests calling `NAME(Backend)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::support::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::support::Backend::Postgres).await
                }
            }
        )*
    };
}

/// A no-op asset.
pub fn noop(spec: AssetSpec) -> AssetDefinition {
    spec.compute(|_| async { Ok::<_, BoxError>(MaterializeResult::new()) })
}

/// An asset that always fails with `message`.
pub fn failing(spec: AssetSpec, message: &'static str) -> AssetDefinition {
    spec.compute(move |_| async move { Err::<MaterializeResult, BoxError>(message.into()) })
}

/// Materializes `select` of `defs` on `storage`.
pub async fn materialize(defs: Definitions, storage: &Storage, select: &str) -> RunResult {
    materialize_with(
        defs,
        storage,
        select,
        RunOptions::default(),
        CancellationToken::new(),
    )
    .await
}

pub async fn materialize_with(
    defs: Definitions,
    storage: &Storage,
    select: &str,
    options: RunOptions,
    cancel: CancellationToken,
) -> RunResult {
    let graph = Arc::new(AssetGraph::build(defs).expect("valid definitions"));
    let set: NodeSet = graph
        .select(&[select], &[] as &[&str])
        .expect("valid selection");
    let executor =
        Executor::new(graph, storage.clone(), &RainbowConfig::default()).expect("executor");
    executor
        .materialize(
            &set,
            RunOptions {
                selection: select.into(),
                ..options
            },
            cancel,
            None,
        )
        .await
        .expect("run completes")
}

/// The kinds of a run's events, in order, for one step.
pub async fn step_event_kinds(storage: &Storage, run_id: &str, step: &str) -> Vec<&'static str> {
    storage
        .events_for_run(run_id, 0, 10_000)
        .await
        .expect("events")
        .into_iter()
        .filter(|e| e.step_key.as_deref() == Some(step))
        .map(|e| e.data.kind())
        .collect()
}

/// Every event of a run.
pub async fn events(storage: &Storage, run_id: &str) -> Vec<rainbow_engine::Event> {
    storage
        .events_for_run(run_id, 0, 100_000)
        .await
        .expect("events")
}

/// Whether the run has a materialization event for `key`.
pub fn materialized(events: &[rainbow_engine::Event], key: &str) -> bool {
    events.iter().any(|e| {
        matches!(e.data, EventData::Materialization(_))
            && e.asset_key.as_ref().map(ToString::to_string).as_deref() == Some(key)
    })
}

/// Every row of a warehouse statement's result, cells joined by `|` (NULL as `NULL`).
pub async fn warehouse_rows(wh: &rainbow_warehouse::Warehouse, sql: &str) -> Vec<String> {
    try_warehouse_rows(wh, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// [`warehouse_rows`], or the warehouse's error.
pub async fn try_warehouse_rows(
    wh: &rainbow_warehouse::Warehouse,
    sql: &str,
) -> Result<Vec<String>, rainbow_warehouse::error::WarehouseError> {
    use rainbow_warehouse::datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    let batches = wh.execute(sql, "test").await?;
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("formatter"))
            .collect();
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = formatters
                .iter()
                .map(|f| f.value(row).to_string())
                .collect();
            out.push(cells.join("|"));
        }
    }
    Ok(out)
}

/// Options of a dbt verb in tests (the CLI's flags).
#[derive(Debug, Clone, Default)]
pub struct DbtOptions {
    pub select: Vec<String>,
    pub exclude: Vec<String>,
    pub full_refresh: bool,
    pub vars: std::collections::BTreeMap<String, serde_json::Value>,
    pub run_started_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Runs a dbt verb over the project in `root` into `wh`'s location as an engine run recorded in
/// a throw-away SQLite run storage, two threads; `wh` then sees what the run wrote.
pub async fn dbt(
    root: &std::path::Path,
    wh: &rainbow_warehouse::Warehouse,
    verb: rainbow_dbt::Verb,
    options: &DbtOptions,
) -> Result<rainbow_dbt::RunSummary, rainbow_dbt::DbtError> {
    let project = rainbow_dbt::SqlProject::new(root, wh.location().as_str())
        .target_schema(wh.default_schema());
    let summary = dbt_on(project, verb, options).await?;
    wh.refresh_catalog().await.expect("refresh");
    Ok(summary)
}

/// Runs a dbt verb over `project` (any target) as [`dbt`] does.
pub async fn dbt_on(
    project: rainbow_dbt::SqlProject,
    verb: rainbow_dbt::Verb,
    options: &DbtOptions,
) -> Result<rainbow_dbt::RunSummary, rainbow_dbt::DbtError> {
    let mut project = project.full_refresh(options.full_refresh);
    for (k, v) in &options.vars {
        project = project.var(k.clone(), v.clone());
    }
    if let Some(at) = options.run_started_at {
        project = project.run_started_at(at);
    }
    let runs = tempfile::tempdir().expect("temp dir");
    let storage = Storage::open_sqlite_dir(runs.path())
        .await
        .expect("run storage");
    let summary = rainbow_dbt::run_verb(
        &project,
        storage,
        &RainbowConfig::default(),
        &rainbow_dbt::VerbOptions {
            verb,
            select: options.select.clone(),
            exclude: options.exclude.clone(),
            threads: 2,
        },
        CancellationToken::new(),
        None,
    )
    .await?;
    Ok(summary)
}
