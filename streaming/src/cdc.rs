//! Change data capture: the Rainbow DB on PostgreSQL into Kafka.
//!
//! A logical replication slot with the `wal2json` plugin is polled over SQL
//! (`pg_logical_slot_peek_changes`, which returns whole transactions and consumes nothing);
//! each row change becomes one message on its table's topic (key = primary key, value = the
//! Debezium envelope of [`crate::envelope`]); once Kafka acknowledged every message of the
//! batch, `pg_replication_slot_advance` moves the slot past the batch's last commit. The slot is
//! therefore the durable cursor: a crash before the advance replays the batch with the same
//! `(commit_lsn, lsn)`, never loses it. (A pgoutput stream, e.g. `pg_walstream`, would save the
//! polling but adds a replication-protocol client; ARCHITECTURE.md says why polling was chosen.)
//!
//! A new slot starts with a snapshot of the tables (op `r`, read in one REPEATABLE READ
//! transaction after the slot exists, stamped with the slot's confirmed position, so every
//! later change orders after it); `rainbow_cdc_snapshots` records that it finished, and an
//! interrupted snapshot is simply taken again (the sink keeps the newest version per key).

use std::time::Duration;

use futures::StreamExt;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use serde_json::{Map, Value};
use sqlx::Row;
use tokio_util::sync::CancellationToken;

use crate::envelope::{ChangeEvent, Lsn, Op, Wal2Json, decode_wal2json};
use crate::kafka::KafkaSettings;
use crate::{Result, StreamingError};

/// What the CDC process reads and where it writes.
#[derive(Debug, Clone)]
pub struct CdcSettings {
    /// The Rainbow DB (`postgres://…`; needs `wal_level=logical` and the wal2json plugin).
    pub database_url: String,
    /// The replication slot (one per consumer of the changes; cluster-wide names).
    pub slot: String,
    /// The captured tables (schema `public`).
    pub tables: Vec<String>,
    /// Changes read per poll (whole transactions: a poll may return more).
    pub batch_size: usize,
    /// Pause after a poll that found nothing.
    pub poll_interval: Duration,
    /// The topics.
    pub kafka: KafkaSettings,
}

impl CdcSettings {
    /// Settings capturing the Rainbow DB's tables into `kafka` through `slot`.
    pub fn rainbow_db(database_url: &str, slot: &str, kafka: KafkaSettings) -> CdcSettings {
        CdcSettings {
            database_url: database_url.to_owned(),
            slot: slot.to_owned(),
            tables: rainbow_db::source::tables()
                .into_iter()
                .map(|t| t.name)
                .collect(),
            batch_size: 5_000,
            poll_interval: Duration::from_millis(100),
            kafka,
        }
    }
}

/// What a CDC run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CdcStats {
    /// Rows read by the initial snapshot.
    pub snapshot_rows: u64,
    /// Row changes produced.
    pub changes: u64,
    /// Batches acknowledged and advanced past.
    pub batches: u64,
    /// The slot's position after the last batch.
    pub position: Lsn,
}

/// Runs the CDC loop until `cancel` fires (between batches); returns what it did.
pub async fn run(settings: &CdcSettings, cancel: CancellationToken) -> Result<CdcStats> {
    if !matches!(
        rainbow_db::backend_of(&settings.database_url),
        Ok(rainbow_db::Backend::Postgres)
    ) {
        return Err(StreamingError::Setup(format!(
            "the Rainbow DB must be on PostgreSQL (a postgres:// URL in [pipeline] \
             source_url) to capture its changes; it is {}",
            rainbow_db::redact(&settings.database_url)
        )));
    }
    let db = rainbow_db::connect(&settings.database_url, 2)
        .await
        .map_err(StreamingError::Connect)?;
    let pool = &db.pool;
    let wal_level: String = sqlx::query_scalar("SELECT current_setting('wal_level')")
        .fetch_one(pool)
        .await
        .map_err(StreamingError::db("reading wal_level"))?;
    if wal_level != "logical" {
        return Err(StreamingError::Setup(format!(
            "PostgreSQL runs with wal_level={wal_level}; change data capture needs \
             wal_level=logical (postgresql.conf, then a restart) and the wal2json plugin"
        )));
    }
    let topics: Vec<String> = settings
        .tables
        .iter()
        .map(|t| settings.kafka.topic(t))
        .collect();
    settings.kafka.ensure_topics(&topics).await?;
    let producer = settings.kafka.producer()?;
    let db_name: String = sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(pool)
        .await
        .map_err(StreamingError::db("reading the database name"))?;

    let mut stats = CdcStats::default();
    ensure_slot(pool, settings, &producer, &db_name, &mut stats).await?;

    let add_tables = settings
        .tables
        .iter()
        .map(|t| format!("public.{t}"))
        .collect::<Vec<_>>()
        .join(",");
    while !cancel.is_cancelled() {
        let rows = sqlx::query(
            "SELECT lsn::text, data FROM pg_logical_slot_peek_changes($1, NULL, $2, \
             'format-version', '2', 'include-lsn', '1', 'include-xids', '1', 'include-pk', '1', \
             'include-timestamp', '1', 'add-tables', $3)",
        )
        .bind(&settings.slot)
        .bind(i32::try_from(settings.batch_size).unwrap_or(i32::MAX))
        .bind(&add_tables)
        .fetch_all(pool)
        .await
        .map_err(StreamingError::db(format!(
            "reading changes from the slot {}",
            settings.slot
        )))?;
        let (events, last_commit) = transactions(&rows)?;
        let Some(last_commit) = last_commit else {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = tokio::time::sleep(settings.poll_interval) => {}
            }
            continue;
        };
        produce(&producer, &settings.kafka, &db_name, &events).await?;
        sqlx::query("SELECT pg_replication_slot_advance($1, $2::pg_lsn)::text")
            .bind(&settings.slot)
            .bind(last_commit.to_string())
            .fetch_one(pool)
            .await
            .map_err(StreamingError::db("advancing the replication slot"))?;
        stats.changes += events.len() as u64;
        stats.batches += 1;
        stats.position = last_commit;
        tracing::debug!(changes = events.len(), position = %last_commit, "batch produced");
    }
    Ok(stats)
}

/// The committed transactions of a poll, their changes stamped with their commit, and the
/// last commit's position (`None` when the poll found no complete transaction).
fn transactions(rows: &[sqlx::any::AnyRow]) -> Result<(Vec<ChangeEvent>, Option<Lsn>)> {
    let mut done: Vec<ChangeEvent> = Vec::new();
    let mut open: Vec<ChangeEvent> = Vec::new();
    let mut last_commit = None;
    for row in rows {
        let lsn_text: String = row
            .try_get(0)
            .map_err(StreamingError::db("reading a change's LSN"))?;
        let data: String = row
            .try_get(1)
            .map_err(StreamingError::db("reading a change"))?;
        let lsn = Lsn::parse(&lsn_text).ok_or_else(|| StreamingError::Decode {
            lsn: lsn_text.clone(),
            message: "not an LSN".into(),
        })?;
        match decode_wal2json(&data, lsn).map_err(|message| StreamingError::Decode {
            lsn: lsn_text.clone(),
            message,
        })? {
            Wal2Json::Begin => open.clear(),
            Wal2Json::Changes(events) => open.extend(events),
            Wal2Json::Commit { time_us } => {
                let time_us = time_us.unwrap_or_else(now_us);
                for mut event in open.drain(..) {
                    event.commit_lsn = lsn;
                    event.commit_time_us = time_us;
                    done.push(event);
                }
                last_commit = Some(lsn);
            }
            Wal2Json::Other(action) => {
                tracing::debug!(%action, lsn = %lsn, "wal2json row without row changes skipped");
            }
        }
    }
    Ok((done, last_commit))
}

/// Sends `events` and waits until Kafka acknowledged every one.
async fn produce(
    producer: &FutureProducer,
    kafka: &KafkaSettings,
    db: &str,
    events: &[ChangeEvent],
) -> Result<()> {
    let now_ms = now_us() / 1000;
    let messages: Vec<(String, String, String)> = events
        .iter()
        .map(|e| {
            (
                kafka.topic(&e.table),
                e.key_json(),
                e.value_json(db, now_ms),
            )
        })
        .collect();
    let sends = messages.iter().map(|(topic, key, value)| {
        producer.send(
            FutureRecord::to(topic).key(key).payload(value),
            Timeout::After(Duration::from_secs(30)),
        )
    });
    let results = futures::future::join_all(sends).await;
    for ((topic, _, _), result) in messages.iter().zip(results) {
        result.map_err(|(source, _)| StreamingError::Kafka {
            context: format!("producing to {topic}"),
            source,
        })?;
    }
    Ok(())
}

/// Creates the slot if missing and takes the snapshot if it was not finished.
async fn ensure_slot(
    pool: &sqlx::AnyPool,
    settings: &CdcSettings,
    producer: &FutureProducer,
    db_name: &str,
    stats: &mut CdcStats,
) -> Result<()> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS rainbow_cdc_snapshots (slot TEXT PRIMARY KEY, \
         lsn TEXT NOT NULL, finished_at_us BIGINT NOT NULL)",
    )
    .execute(pool)
    .await
    .map_err(StreamingError::db("creating rainbow_cdc_snapshots"))?;
    let exists: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1")
            .bind(&settings.slot)
            .fetch_one(pool)
            .await
            .map_err(StreamingError::db("looking up the replication slot"))?;
    if exists == 0 {
        sqlx::query("SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'wal2json')")
            .bind(&settings.slot)
            .fetch_one(pool)
            .await
            .map_err(StreamingError::db(format!(
                "creating the replication slot {} with the wal2json plugin",
                settings.slot
            )))?;
        tracing::info!(slot = %settings.slot, "replication slot created");
    }
    let finished: i64 =
        sqlx::query_scalar("SELECT count(*) FROM rainbow_cdc_snapshots WHERE slot = $1")
            .bind(&settings.slot)
            .fetch_one(pool)
            .await
            .map_err(StreamingError::db("reading rainbow_cdc_snapshots"))?;
    if finished > 0 {
        return Ok(());
    }
    // Every change not yet acknowledged orders after this position.
    let position: String = sqlx::query_scalar(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
    )
    .bind(&settings.slot)
    .fetch_one(pool)
    .await
    .map_err(StreamingError::db("reading the slot's position"))?;
    let lsn = Lsn::parse(&position).ok_or_else(|| StreamingError::Decode {
        lsn: position.clone(),
        message: "not an LSN".into(),
    })?;
    let mut tx = pool
        .begin()
        .await
        .map_err(StreamingError::db("starting the snapshot"))?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *tx)
        .await
        .map_err(StreamingError::db("starting the snapshot"))?;
    let time_us = now_us();
    for table in &settings.tables {
        let key_columns: Vec<String> = sqlx::query_scalar(
            "SELECT a.attname::text FROM pg_index i JOIN pg_attribute a \
             ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = ('public.' || $1)::regclass AND i.indisprimary ORDER BY a.attnum",
        )
        .bind(table)
        .fetch_all(&mut *tx)
        .await
        .map_err(StreamingError::db(format!(
            "reading the primary key of {table}"
        )))?;
        if key_columns.is_empty() {
            return Err(StreamingError::Setup(format!(
                "the table {table} has no primary key: its changes cannot be keyed"
            )));
        }
        let sql = format!("SELECT row_to_json(t)::text FROM public.\"{table}\" t");
        let mut rows = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql)).fetch(&mut *tx);
        let mut chunk: Vec<ChangeEvent> = Vec::with_capacity(settings.batch_size);
        while let Some(row) = rows.next().await {
            let row = row.map_err(StreamingError::db(format!("reading {table}")))?;
            let Ok(Value::Object(after)) = serde_json::from_str::<Value>(&row) else {
                return Err(StreamingError::Decode {
                    lsn: lsn.to_string(),
                    message: format!("a row of {table} is not a JSON object"),
                });
            };
            let key: Map<String, Value> = key_columns
                .iter()
                .map(|c| (c.clone(), after.get(c).cloned().unwrap_or(Value::Null)))
                .collect();
            chunk.push(ChangeEvent {
                schema: "public".into(),
                table: table.clone(),
                op: Op::Read,
                key,
                before: None,
                after: Some(after),
                lsn,
                commit_lsn: lsn,
                commit_time_us: time_us,
                xid: 0,
            });
            if chunk.len() >= settings.batch_size {
                produce(producer, &settings.kafka, db_name, &chunk).await?;
                stats.snapshot_rows += chunk.len() as u64;
                chunk.clear();
            }
        }
        drop(rows);
        produce(producer, &settings.kafka, db_name, &chunk).await?;
        stats.snapshot_rows += chunk.len() as u64;
    }
    tx.commit()
        .await
        .map_err(StreamingError::db("ending the snapshot"))?;
    sqlx::query(
        "INSERT INTO rainbow_cdc_snapshots (slot, lsn, finished_at_us) VALUES ($1, $2, $3) \
         ON CONFLICT (slot) DO NOTHING",
    )
    .bind(&settings.slot)
    .bind(lsn.to_string())
    .bind(time_us)
    .execute(pool)
    .await
    .map_err(StreamingError::db("recording the snapshot"))?;
    tracing::info!(slot = %settings.slot, rows = stats.snapshot_rows, "snapshot produced");
    Ok(())
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}
