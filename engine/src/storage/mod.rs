//! Run and event storage through sqlx: SQLite (the embedded default, under the project's state
//! directory) or PostgreSQL (`RAINBOW_DATABASE_URL=postgres://…`), with one set of queries.
//!
//! Owns the schema and its migrations, run records, the event log, the materialization index
//! (a partial index on `events`, and `asset_latest` for O(1) "latest per asset partition" reads) and
//! check results. Writes go through one transaction per batch, so a batch is all or nothing.

pub mod backfills;
pub mod partitions;
pub mod schedules;
mod write;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::str::FromStr;

use sqlx::any::AnyRow;
// Dynamic SQL here is only ever built from constants and numbered placeholders; values are
// always bound, never formatted in, hence `AssertSqlSafe`.
use sqlx::{AnyPool, AssertSqlSafe, Row};

pub use write::WriteSet;
pub(crate) use write::write_batch_on;
use write::{bind_run, write_events};

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;
pub use writer::EventWriter;

use crate::check::AssetCheckSeverity;
use crate::error::{Error, Result};
use crate::event::{
    CheckEvaluation, Event, EventData, LogLevel, Materialization, Micros, RunStatus,
};
use crate::key::AssetKey;

/// Key of the PostgreSQL advisory lock serializing migrations of run storage.
const SCHEMA_LOCK: i64 = 0x0052_4149_4E42_4F57; // "RAINBOW"
/// Migrations, in order: (version, SQL). Applied versions are recorded in `rainbow_schema`.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/0001_runs_events.sql")),
    (
        2,
        include_str!("../../migrations/0002_partitions_backfills_schedules.sql"),
    ),
];
/// Row counts of multi-row INSERTs, largest first. A batch of n rows is written as chunks of
/// these sizes, so each table has at most seven distinct INSERT texts and every one stays in the
/// connection's prepared-statement cache (bind parameters stay far below SQLite's limit).
const CHUNK_SIZES: [usize; 7] = [64, 32, 16, 8, 4, 2, 1];

/// Splits `items` into chunks whose lengths are all in [`CHUNK_SIZES`].
fn chunks<T>(mut items: &[T]) -> Vec<&[T]> {
    let mut out = Vec::new();
    for size in CHUNK_SIZES {
        while items.len() >= size {
            let (head, tail) = items.split_at(size);
            out.push(head);
            items = tail;
        }
    }
    out
}

pub use rainbow_db::{Backend, sqlite_url};

/// Handle to run storage. Cheap to clone (a connection pool).
#[derive(Clone, Debug)]
pub struct Storage {
    pool: AnyPool,
    backend: Backend,
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunRecord {
    /// Run id (a UUIDv7, so ids sort by creation time).
    pub run_id: String,
    /// Status.
    pub status: RunStatus,
    /// Job launched, if any.
    pub job_name: Option<String>,
    /// Selection expression.
    pub selection: String,
    /// Partition, for partitioned runs.
    pub partition_key: Option<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Creation time.
    pub created_at: Micros,
    /// Start time.
    pub started_at: Option<Micros>,
    /// End time.
    pub ended_at: Option<Micros>,
    /// Last heartbeat of the process executing it.
    pub heartbeat_at: Option<Micros>,
    /// Process id executing it.
    pub pid: Option<i64>,
    /// Host executing it.
    pub hostname: Option<String>,
    /// Why it failed or was canceled.
    pub reason: Option<String>,
    /// The process (see [`crate::process::worker_id`]) executing it.
    pub worker_id: Option<String>,
    /// The backfill that launched it.
    pub backfill_id: Option<String>,
    /// Idempotence key of the schedule tick or sensor evaluation that requested it.
    pub run_key: Option<String>,
}

impl RunRecord {
    /// A new run record (not stored), owned by this process.
    pub fn new(run: NewRun) -> RunRecord {
        let now = crate::event::now_micros();
        let status = run.status.unwrap_or(RunStatus::Started);
        let started = (status == RunStatus::Started).then_some(now);
        RunRecord {
            run_id: uuid::Uuid::now_v7().to_string(),
            status,
            job_name: run.job_name,
            selection: run.selection,
            partition_key: run.partition_key,
            tags: run.tags,
            created_at: now,
            started_at: started,
            ended_at: None,
            heartbeat_at: started,
            pid: Some(i64::from(std::process::id())),
            hostname: Some(crate::process::hostname()),
            reason: None,
            worker_id: Some(crate::process::worker_id().to_owned()),
            backfill_id: run.backfill_id,
            run_key: run.run_key,
        }
    }
}

/// A run to create.
#[derive(Debug, Clone, Default)]
pub struct NewRun {
    /// Job launched, if any.
    pub job_name: Option<String>,
    /// Selection expression.
    pub selection: String,
    /// Partition, for partitioned runs.
    pub partition_key: Option<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Initial status (`Started` for runs executed right away).
    pub status: Option<RunStatus>,
    /// The backfill launching it.
    pub backfill_id: Option<String>,
    /// Idempotence key: a second run with the same key is refused.
    pub run_key: Option<String>,
}

/// A change to a run's row, applied in the same transaction as its events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunUpdate {
    /// The run.
    pub run_id: String,
    /// New status (ignored once the run is finished: finished runs never change status).
    pub status: Option<RunStatus>,
    /// End time.
    pub ended_at: Option<Micros>,
    /// Heartbeat time.
    pub heartbeat_at: Option<Micros>,
    /// Reason.
    pub reason: Option<String>,
}

/// A stored materialization or observation.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MaterializationRecord {
    /// Run that produced it.
    pub run_id: String,
    /// Asset.
    pub asset_key: AssetKey,
    /// Partition.
    pub partition_key: Option<String>,
    /// When.
    pub timestamp: Micros,
    /// True for source-asset observations.
    pub is_observation: bool,
    /// Metadata, code and data version.
    pub materialization: Materialization,
}

/// A stored check evaluation.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CheckResultRecord {
    /// Run.
    pub run_id: String,
    /// Asset checked.
    pub asset_key: AssetKey,
    /// Partition.
    pub partition_key: Option<String>,
    /// When.
    pub timestamp: Micros,
    /// The evaluation.
    pub evaluation: CheckEvaluation,
}

/// Filter for [`Storage::list_runs`]; every condition given must hold.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only runs with this status.
    pub status: Option<RunStatus>,
    /// Only runs of this job (launched as the job, or tagged `rainbow/job` with it by a
    /// backfill or schedule).
    pub job_name: Option<String>,
    /// Only runs carrying this tag key (with this value, if given).
    pub tag: Option<(String, Option<String>)>,
    /// Only runs with an event about this asset (step, materialization, check, failure).
    pub asset: Option<AssetKey>,
    /// Only runs launched by this backfill.
    pub backfill_id: Option<String>,
    /// Only runs created before this run (keyset paging: pass the last id of a page).
    pub before_run_id: Option<String>,
    /// At most this many (newest first); default 100.
    pub limit: Option<i64>,
}

/// A `LIKE … ESCAPE '!'` pattern matching runs whose tags (compact JSON) hold `key`, with
/// `value` if given.
fn tag_pattern(key: &str, value: Option<&str>) -> Result<String> {
    let member = match value {
        Some(v) => format!("{}:{}", json(&key)?, json(&v)?),
        None => format!("{}:", json(&key)?),
    };
    let escaped = member
        .replace('!', "!!")
        .replace('%', "!%")
        .replace('_', "!_");
    Ok(format!("%{escaped}%"))
}

fn json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|e| Error::Internal(format!("cannot serialize to JSON: {e}")))
}

fn parse_json<T: serde::de::DeserializeOwned>(
    text: &str,
    location: impl FnOnce() -> String,
) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::CorruptStorage {
        location: location(),
        message: e.to_string(),
    })
}

fn none_if_empty(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}

/// `($1, $2, ...), ($n+1, ...)` for `rows` rows of `cols` columns.
fn placeholders(rows: usize, cols: usize) -> String {
    placeholders_from(rows, cols, 1)
}

/// Like [`placeholders`], numbering from `$first`.
pub(crate) fn placeholders_from(rows: usize, cols: usize, first: usize) -> String {
    let mut s = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        if r > 0 {
            s.push_str(", ");
        }
        s.push('(');
        for c in 0..cols {
            if c > 0 {
                s.push_str(", ");
            }
            s.push('$');
            s.push_str(&(first + r * cols + c).to_string());
        }
        s.push(')');
    }
    s
}

type AnyTx<'a> = sqlx::Transaction<'a, sqlx::Any>;

impl Storage {
    /// Connects to `url` (`sqlite://PATH` or `postgres://…`) and applies migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        let max = match rainbow_db::backend_of(url)? {
            Backend::Sqlite => 4,
            Backend::Postgres => 10,
        };
        let db = rainbow_db::connect(url, max).await?;
        rainbow_db::migrate(&db, "rainbow_schema", MIGRATIONS, SCHEMA_LOCK).await?;
        Ok(Storage {
            pool: db.pool,
            backend: db.backend,
        })
    }

    /// Opens (creating if needed) the embedded SQLite storage at `DIR/rainbow.db`.
    pub async fn open_sqlite_dir(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_owned(),
            source,
        })?;
        let dir = std::fs::canonicalize(dir).map_err(|source| Error::Io {
            path: dir.to_owned(),
            source,
        })?;
        Storage::connect(&sqlite_url(&dir.join("rainbow.db"))).await
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The connection pool (for tests and tools).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Creates a run row; returns the stored record.
    pub async fn create_run(&self, run: NewRun) -> Result<RunRecord> {
        let record = RunRecord::new(run);
        self.write(&WriteSet {
            new_runs: vec![record.clone()],
            ..WriteSet::default()
        })
        .await?;
        Ok(record)
    }

    /// Creates a run unless one with the same `run_key` exists (then `None`): how a schedule
    /// tick or sensor evaluation is launched at most once, even by two daemons.
    pub async fn create_run_once(&self, run: NewRun) -> Result<Option<RunRecord>> {
        let record = RunRecord::new(run);
        let sql = format!(
            "INSERT INTO runs ({RUN_COLUMNS}) VALUES {} ON CONFLICT (run_key) DO NOTHING",
            placeholders(1, 16)
        );
        let inserted = bind_run(sqlx::query(AssertSqlSafe(sql)), &record)?
            .execute(&self.pool)
            .await
            .map_err(Error::storage("creating a keyed run"))?
            .rows_affected();
        Ok((inserted == 1).then_some(record))
    }

    /// Moves a `QUEUED` run to `STARTED` for this process; false if another process took it.
    pub async fn claim_queued_run(&self, run_id: &str) -> Result<bool> {
        let now = crate::event::now_micros();
        let changed = sqlx::query(
            "UPDATE runs SET status = 'STARTED', started_at = $2, heartbeat_at = $2, pid = $3, \
             hostname = $4, worker_id = $5 WHERE run_id = $1 AND status = 'QUEUED'",
        )
        .bind(run_id)
        .bind(now)
        .bind(i64::from(std::process::id()))
        .bind(crate::process::hostname())
        .bind(crate::process::worker_id())
        .execute(&self.pool)
        .await
        .map_err(Error::storage(format!("claiming queued run {run_id}")))?
        .rows_affected();
        Ok(changed == 1)
    }

    /// The run with id `run_id`.
    pub async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE run_id = $1"
        )))
        .bind(run_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(Error::storage(format!("reading run {run_id}")))?;
        row.map(|r| decode_run(&r)).transpose()
    }

    /// Runs, newest first, matching `filter`. The conditions are fixed SQL with bound values.
    pub async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>> {
        let limit = filter.limit.unwrap_or(100).max(0);
        // (condition with `?` for each value, its values)
        let mut conditions: Vec<(&str, Vec<String>)> = Vec::new();
        if let Some(status) = filter.status {
            conditions.push(("status = ?", vec![status.as_str().to_owned()]));
        }
        if let Some(job) = &filter.job_name {
            // Launched as the job, or by a backfill or schedule of it (tag `rainbow/job`).
            conditions.push((
                "(job_name = ? OR tags LIKE ? ESCAPE '!')",
                vec![job.clone(), tag_pattern(crate::tags::JOB, Some(job))?],
            ));
        }
        if let Some((key, value)) = &filter.tag {
            conditions.push((
                "tags LIKE ? ESCAPE '!'",
                vec![tag_pattern(key, value.as_deref())?],
            ));
        }
        if let Some(asset) = &filter.asset {
            conditions.push((
                "EXISTS (SELECT 1 FROM events e WHERE e.run_id = runs.run_id AND e.asset_key = ?)",
                vec![asset.to_string()],
            ));
        }
        if let Some(backfill) = &filter.backfill_id {
            conditions.push(("backfill_id = ?", vec![backfill.clone()]));
        }
        if let Some(before) = &filter.before_run_id {
            conditions.push(("run_id < ?", vec![before.clone()]));
        }
        let mut sql = format!("SELECT {RUN_COLUMNS} FROM runs");
        let mut values: Vec<String> = Vec::new();
        for (i, (condition, vs)) in conditions.into_iter().enumerate() {
            sql.push_str(if i == 0 { " WHERE " } else { " AND " });
            for (j, part) in condition.split('?').enumerate() {
                if j > 0 {
                    values.push(vs[j - 1].clone());
                    sql.push_str(&format!("${}", values.len()));
                }
                sql.push_str(part);
            }
        }
        sql.push_str(&format!(
            " ORDER BY created_at DESC, run_id DESC LIMIT ${}",
            values.len() + 1
        ));
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for v in values {
            query = query.bind(v);
        }
        let rows = query
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(Error::storage("listing runs"))?;
        rows.iter().map(decode_run).collect()
    }

    /// A run's events in order, after event id `after` (0 for all), at most `limit`.
    pub async fn events_for_run(&self, run_id: &str, after: i64, limit: i64) -> Result<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT id, run_id, ts, step_key, asset_key, partition_key, payload FROM events \
             WHERE run_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(run_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(Error::storage(format!("reading events of run {run_id}")))?;
        rows.iter().map(decode_event).collect()
    }

    /// A run's step lifecycle events in order (started, succeeded, failed, skipped, canceled):
    /// what step summaries, Gantt charts and "which steps are running" need, without reading
    /// (or decoding) a long run's logs and materializations.
    pub async fn step_events(&self, run_id: &str) -> Result<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT id, run_id, ts, step_key, asset_key, partition_key, payload FROM events \
             WHERE run_id = $1 AND kind IN \
             ('step_started', 'step_succeeded', 'step_failed', 'step_skipped', 'step_canceled') \
             ORDER BY id",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await
        .map_err(Error::storage(format!(
            "reading step events of run {run_id}"
        )))?;
        rows.iter().map(decode_event).collect()
    }

    /// A page of a run's events after event id `after`, at most `limit`, only those of `step`
    /// (if given) and at or above `min_level` (if given): errors are failures and error logs;
    /// warnings add retries, skips, cancellations, failed checks and warning logs; info is
    /// everything but debug logs. Filtered in SQL, so pages stay full (keyset paging on `id`).
    pub async fn events_filtered(
        &self,
        run_id: &str,
        step: Option<&str>,
        min_level: Option<LogLevel>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Event>> {
        // Fixed SQL per level; request values only ever bound.
        let level_sql = match min_level {
            None | Some(LogLevel::Debug) => "",
            Some(LogLevel::Info) => {
                " AND NOT (kind = 'log' AND payload LIKE '%\"level\":\"debug\"%')"
            }
            Some(LogLevel::Warn) => {
                " AND (kind IN ('step_failed', 'run_failed', 'asset_failed', 'step_up_for_retry', \
                 'step_skipped', 'step_canceled', 'run_canceled') \
                 OR (kind = 'check_evaluation' AND payload LIKE '%\"passed\":false%') \
                 OR (kind = 'log' AND (payload LIKE '%\"level\":\"warn\"%' OR payload LIKE '%\"level\":\"error\"%')))"
            }
            Some(LogLevel::Error) => {
                " AND (kind IN ('step_failed', 'run_failed', 'asset_failed') \
                 OR (kind = 'log' AND payload LIKE '%\"level\":\"error\"%'))"
            }
        };
        let step_sql = if step.is_some() {
            " AND step_key = $4"
        } else {
            ""
        };
        let sql = format!(
            "SELECT id, run_id, ts, step_key, asset_key, partition_key, payload FROM events \
             WHERE run_id = $1 AND id > $2{step_sql}{level_sql} ORDER BY id LIMIT $3"
        );
        let mut query = sqlx::query(AssertSqlSafe(sql))
            .bind(run_id)
            .bind(after)
            .bind(limit);
        if let Some(step) = step {
            query = query.bind(step);
        }
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(Error::storage(format!("reading events of run {run_id}")))?;
        rows.iter().map(decode_event).collect()
    }

    /// The latest materialization (or observation) of every asset that has one: for partitioned
    /// assets, of its most recently materialized partition.
    pub async fn latest_materializations(
        &self,
    ) -> Result<HashMap<AssetKey, MaterializationRecord>> {
        // Only each asset's newest row is decoded: the (asset_key, ts) index answers the
        // GROUP BY, so a 40,000-partition asset costs an index scan, not 40,000 decodes.
        let columns = LATEST_COLUMNS
            .split(", ")
            .map(|c| format!("l.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {columns} FROM asset_latest l JOIN \
             (SELECT asset_key, MAX(ts) AS ts FROM asset_latest GROUP BY asset_key) m \
             ON l.asset_key = m.asset_key AND l.ts = m.ts"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(Error::storage("reading latest materializations"))?;
        // Ties (two partitions at the same time) keep one.
        let mut out: HashMap<AssetKey, MaterializationRecord> = HashMap::new();
        for row in &rows {
            let record = decode_latest(row)?;
            match out.get(&record.asset_key) {
                Some(existing) if existing.timestamp >= record.timestamp => {}
                _ => {
                    out.insert(record.asset_key.clone(), record);
                }
            }
        }
        Ok(out)
    }

    /// The latest materialization of one asset partition (`None` partition = unpartitioned).
    pub async fn latest_materialization(
        &self,
        key: &AssetKey,
        partition: Option<&str>,
    ) -> Result<Option<MaterializationRecord>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {LATEST_COLUMNS} FROM asset_latest WHERE asset_key = $1 AND partition_key = $2"
        )))
        .bind(key.to_string())
        .bind(partition.unwrap_or(""))
        .fetch_optional(&self.pool)
        .await
        .map_err(Error::storage(format!(
            "reading the latest materialization of {key}"
        )))?;
        row.map(|r| decode_latest(&r)).transpose()
    }

    /// Materialization (and observation) history of one asset, newest first.
    pub async fn materializations(
        &self,
        key: &AssetKey,
        limit: i64,
    ) -> Result<Vec<MaterializationRecord>> {
        self.materialization_history(key, None, limit).await
    }

    /// Materialization (and observation) history of one asset — of one of its partitions when
    /// `partition` is given — newest first, at most `limit`.
    pub async fn materialization_history(
        &self,
        key: &AssetKey,
        partition: Option<&str>,
        limit: i64,
    ) -> Result<Vec<MaterializationRecord>> {
        let partition_sql = if partition.is_some() {
            " AND partition_key = $3"
        } else {
            ""
        };
        let mut query = sqlx::query(AssertSqlSafe(format!(
            "SELECT id, run_id, ts, step_key, asset_key, partition_key, payload FROM events \
             WHERE asset_key = $1 AND kind IN ('materialization', 'observation'){partition_sql} \
             ORDER BY id DESC LIMIT $2"
        )))
        .bind(key.to_string())
        .bind(limit);
        if let Some(p) = partition {
            query = query.bind(p);
        }
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(Error::storage(format!("reading materializations of {key}")))?;
        rows.iter()
            .map(|row| {
                let event = decode_event(row)?;
                let (materialization, is_observation) = match event.data {
                    EventData::Materialization(m) => (m, false),
                    EventData::Observation(m) => (m, true),
                    other => {
                        return Err(Error::CorruptStorage {
                            location: format!("event {}", event.id),
                            message: format!("expected a materialization, found {}", other.kind()),
                        });
                    }
                };
                Ok(MaterializationRecord {
                    run_id: event.run_id,
                    asset_key: key.clone(),
                    partition_key: event.partition_key,
                    timestamp: event.timestamp,
                    is_observation,
                    materialization,
                })
            })
            .collect()
    }

    /// The latest materialization of each partition of `key` (unpartitioned: the one row), for
    /// the `limit` greatest partition keys (the most recent, for time partitions), in
    /// descending key order.
    pub async fn latest_by_partition(
        &self,
        key: &AssetKey,
        limit: i64,
    ) -> Result<Vec<MaterializationRecord>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {LATEST_COLUMNS} FROM asset_latest WHERE asset_key = $1 \
             ORDER BY partition_key DESC LIMIT $2"
        )))
        .bind(key.to_string())
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(Error::storage(format!(
            "reading latest materializations of {key}"
        )))?;
        rows.iter().map(decode_latest).collect()
    }

    /// Check results of one asset, newest first.
    pub async fn check_results(
        &self,
        key: &AssetKey,
        limit: i64,
    ) -> Result<Vec<CheckResultRecord>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {CHECK_COLUMNS} FROM check_results WHERE asset_key = $1 ORDER BY id DESC LIMIT $2"
        )))
        .bind(key.to_string())
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(Error::storage(format!("reading check results of {key}")))?;
        rows.iter().map(decode_check).collect()
    }

    /// The latest result of every check of every asset (one query; the lineage page's check
    /// badges).
    pub async fn latest_check_results(&self) -> Result<Vec<CheckResultRecord>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {CHECK_COLUMNS} FROM check_results WHERE id IN \
             (SELECT MAX(id) FROM check_results GROUP BY asset_key, check_name)"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(Error::storage("reading the latest check results"))?;
        rows.iter().map(decode_check).collect()
    }

    /// Writes events and run updates in one transaction: all of them or none.
    pub async fn write_batch(&self, events: &[Event], updates: &[RunUpdate]) -> Result<()> {
        self.write(&WriteSet {
            events: events.to_vec(),
            run_updates: updates.to_vec(),
            ..WriteSet::default()
        })
        .await
    }

    /// Writes a [`WriteSet`] in one transaction.
    pub async fn write(&self, set: &WriteSet) -> Result<()> {
        let mut conn = self.connection().await?;
        write_batch_on(&mut conn, set).await
    }

    /// A connection from the pool, for callers that write many batches (the event writer).
    pub(crate) async fn connection(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>> {
        self.pool
            .acquire()
            .await
            .map_err(Error::storage("acquiring a storage connection"))
    }

    /// Marks a `STARTED` run failed with `reason`, writing `events` with it, unless another
    /// process changed its status first. Returns whether this call did it.
    pub async fn fail_started_run(
        &self,
        run_id: &str,
        reason: &str,
        events: &[Event],
    ) -> Result<bool> {
        let ctx = "failing an orphaned run";
        let mut tx = self.pool.begin().await.map_err(Error::storage(ctx))?;
        let changed = sqlx::query(
            "UPDATE runs SET status = 'FAILURE', ended_at = $2, reason = $3 WHERE run_id = $1 AND status = 'STARTED'",
        )
        .bind(run_id)
        .bind(crate::event::now_micros())
        .bind(reason)
        .execute(&mut *tx)
        .await
        .map_err(Error::storage(ctx))?
        .rows_affected();
        if changed == 0 {
            tx.rollback().await.map_err(Error::storage(ctx))?;
            return Ok(false);
        }
        write_events(&mut tx, events).await?;
        tx.commit().await.map_err(Error::storage(ctx))?;
        Ok(true)
    }
}

const CHECK_COLUMNS: &str = "run_id, asset_key, partition_key, ts, check_name, passed, severity, blocking, description, metadata";

const RUN_COLUMNS: &str = "run_id, status, job_name, selection, partition_key, tags, created_at, \
    started_at, ended_at, heartbeat_at, pid, hostname, reason, worker_id, backfill_id, run_key";
const LATEST_COLUMNS: &str =
    "run_id, asset_key, partition_key, ts, kind, code_version, data_version, metadata";

fn decode_run(row: &AnyRow) -> Result<RunRecord> {
    let get = |e: sqlx::Error| Error::CorruptStorage {
        location: "runs".into(),
        message: e.to_string(),
    };
    let run_id: String = row.try_get("run_id").map_err(get)?;
    let status: String = row.try_get("status").map_err(get)?;
    let tags: String = row.try_get("tags").map_err(get)?;
    Ok(RunRecord {
        status: RunStatus::from_str(&status).map_err(|e| Error::CorruptStorage {
            location: format!("runs.status of {run_id}"),
            message: e.to_string(),
        })?,
        tags: parse_json(&tags, || format!("runs.tags of {run_id}"))?,
        job_name: row.try_get("job_name").map_err(get)?,
        selection: row.try_get("selection").map_err(get)?,
        partition_key: row.try_get("partition_key").map_err(get)?,
        created_at: row.try_get("created_at").map_err(get)?,
        started_at: row.try_get("started_at").map_err(get)?,
        ended_at: row.try_get("ended_at").map_err(get)?,
        heartbeat_at: row.try_get("heartbeat_at").map_err(get)?,
        pid: row.try_get("pid").map_err(get)?,
        hostname: row.try_get("hostname").map_err(get)?,
        reason: row.try_get("reason").map_err(get)?,
        worker_id: row.try_get("worker_id").map_err(get)?,
        backfill_id: row.try_get("backfill_id").map_err(get)?,
        run_key: row.try_get("run_key").map_err(get)?,
        run_id,
    })
}

/// Decodes a row of `SELECT {CHECK_COLUMNS}`.
fn decode_check(row: &AnyRow) -> Result<CheckResultRecord> {
    let get = |e: sqlx::Error| Error::CorruptStorage {
        location: "check_results".into(),
        message: e.to_string(),
    };
    let severity: String = row.try_get("severity").map_err(get)?;
    let metadata: String = row.try_get("metadata").map_err(get)?;
    Ok(CheckResultRecord {
        run_id: row.try_get("run_id").map_err(get)?,
        asset_key: AssetKey::from(row.try_get::<String, _>("asset_key").map_err(get)?),
        partition_key: row.try_get("partition_key").map_err(get)?,
        timestamp: row.try_get("ts").map_err(get)?,
        evaluation: CheckEvaluation {
            check_name: row.try_get("check_name").map_err(get)?,
            passed: row.try_get::<i64, _>("passed").map_err(get)? != 0,
            severity: if severity == "warn" {
                AssetCheckSeverity::Warn
            } else {
                AssetCheckSeverity::Error
            },
            blocking: row.try_get::<i64, _>("blocking").map_err(get)? != 0,
            description: row.try_get("description").map_err(get)?,
            metadata: parse_json(&metadata, || "check_results.metadata".into())?,
        },
    })
}

fn decode_event(row: &AnyRow) -> Result<Event> {
    let get = |e: sqlx::Error| Error::CorruptStorage {
        location: "events".into(),
        message: e.to_string(),
    };
    let id: i64 = row.try_get("id").map_err(get)?;
    let payload: String = row.try_get("payload").map_err(get)?;
    Ok(Event {
        id,
        run_id: row.try_get("run_id").map_err(get)?,
        timestamp: row.try_get("ts").map_err(get)?,
        step_key: row.try_get("step_key").map_err(get)?,
        asset_key: row
            .try_get::<Option<String>, _>("asset_key")
            .map_err(get)?
            .map(AssetKey::from),
        partition_key: row.try_get("partition_key").map_err(get)?,
        data: parse_json(&payload, || format!("events.payload of event {id}"))?,
    })
}

fn decode_latest(row: &AnyRow) -> Result<MaterializationRecord> {
    let get = |e: sqlx::Error| Error::CorruptStorage {
        location: "asset_latest".into(),
        message: e.to_string(),
    };
    let asset_key: String = row.try_get("asset_key").map_err(get)?;
    let metadata: String = row.try_get("metadata").map_err(get)?;
    let kind: String = row.try_get("kind").map_err(get)?;
    Ok(MaterializationRecord {
        run_id: row.try_get("run_id").map_err(get)?,
        partition_key: row
            .try_get::<Option<String>, _>("partition_key")
            .map_err(get)?
            .and_then(none_if_empty),
        timestamp: row.try_get("ts").map_err(get)?,
        is_observation: kind == "observation",
        materialization: Materialization {
            metadata: parse_json(&metadata, || format!("metadata of {asset_key}"))?,
            code_version: row.try_get("code_version").map_err(get)?,
            data_version: row.try_get("data_version").map_err(get)?,
        },
        asset_key: AssetKey::from(asset_key),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_use_the_fixed_sizes() {
        let items: Vec<u32> = (0..90).collect();
        let lens: Vec<usize> = chunks(&items).iter().map(|c| c.len()).collect();
        assert_eq!(lens, [64, 16, 8, 2]);
        assert_eq!(chunks(&items).concat(), items);
    }

    #[test]
    fn placeholders_number_rows_and_columns() {
        assert_eq!(placeholders(2, 3), "($1, $2, $3), ($4, $5, $6)");
    }
}
