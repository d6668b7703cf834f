//! `rainbow bench cdc`: the speed layer end to end on a real PostgreSQL and Kafka broker —
//! from a PostgreSQL commit to the change being visible in the warehouse's speed tables.
//!
//! A fresh database gets the Rainbow DB schema; the CDC process and the sink run in-process
//! with the configuration's defaults. Two phases, `customers` inserts in multi-row
//! transactions:
//! - **steady**: `rate` changes/s for `seconds`; each transaction's latency is the time from
//!   its commit returning to the sink's commit that made its last change visible. Reports
//!   p50/p99/max in ms.
//! - **burst**: `burst` changes committed as fast as one connection can; throughput is changes
//!   / (last visible − first commit), in changes/s.
//!
//! The database, slot and warehouse are dropped afterwards; topics have a unique prefix.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::cdc::CdcSettings;
use crate::config::StreamingConfig;
use crate::sink::SinkSettings;
use crate::{Result, StreamingError};

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Admin URL of a PostgreSQL server with wal2json (`postgres://…/postgres`).
    pub postgres: String,
    /// Kafka brokers.
    pub brokers: String,
    /// Changes per second in the steady phase.
    pub rate: u32,
    /// Seconds of steady load.
    pub seconds: u32,
    /// Changes per transaction.
    pub per_transaction: u32,
    /// Changes in the burst phase.
    pub burst: u32,
}

/// What was measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    /// Changes offered per second in the steady phase.
    pub offered_rate: u32,
    /// Changes in the steady phase.
    pub steady_changes: u64,
    /// Commit-to-visible latency percentiles of the steady phase, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Worst, ms.
    pub max_ms: f64,
    /// Changes in the burst phase.
    pub burst_changes: u64,
    /// Burst throughput, changes/s end to end.
    pub burst_changes_per_s: f64,
}

/// Runs both phases.
pub async fn run(options: &BenchOptions) -> Result<BenchReport> {
    let admin = rainbow_db::connect(&options.postgres, 2)
        .await
        .map_err(StreamingError::Connect)?;
    let id = format!("{:x}", chrono::Utc::now().timestamp_micros());
    let name = format!("rainbow_bench_{id}");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin.pool)
        .await
        .map_err(StreamingError::db("creating the benchmark database"))?;
    let url = match options.postgres.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => {
            return Err(StreamingError::Setup(
                "the PostgreSQL URL names no database".into(),
            ));
        }
    };
    let result = measure(options, &url, &name).await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT pg_drop_replication_slot('{name}')"
    )))
    .execute(&admin.pool)
    .await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name}"
    )))
    .execute(&admin.pool)
    .await;
    result
}

async fn measure(options: &BenchOptions, url: &str, slot: &str) -> Result<BenchReport> {
    let db = rainbow_db::connect(url, 2)
        .await
        .map_err(StreamingError::Connect)?;
    rainbow_db::source::migrate(&db)
        .await
        .map_err(StreamingError::Connect)?;
    let config = StreamingConfig {
        brokers: options.brokers.clone(),
        topic_prefix: format!("bench{slot}."),
        slot: slot.to_owned(),
        ..StreamingConfig::default()
    };
    let cdc: CdcSettings = config.cdc(url);
    let (progress, mut visible) = tokio::sync::watch::channel(0u64);
    let sink = SinkSettings {
        progress: Some(progress),
        group_id: format!("bench-{slot}"),
        ..config.sink()
    };
    let dir = tempfile::tempdir()
        .map_err(|e| StreamingError::Setup(format!("a temporary warehouse directory: {e}")))?;
    let location = dir
        .path()
        .to_str()
        .ok_or_else(|| StreamingError::Setup("the temporary directory is not UTF-8".into()))?
        .to_owned();
    let warehouse = rainbow_warehouse::Warehouse::open(&location, "main")
        .await
        .map_err(StreamingError::warehouse("opening the benchmark warehouse"))?;
    let cancel = CancellationToken::new();
    let cdc_task = tokio::spawn({
        let cancel = cancel.clone();
        async move { crate::cdc::run(&cdc, cancel).await }
    });
    let sink_task = tokio::spawn({
        let (cancel, warehouse) = (cancel.clone(), warehouse.clone());
        async move { crate::sink::run(&sink, &warehouse, cancel).await }
    });

    // Warm-up: one change seen end to end (slot, topics, group, tables all exist).
    insert(&db, 1).await?;
    wait_for(&mut visible, 1).await?;
    let mut seen = 1u64;

    // Every moment the sink made more changes visible: (total, when).
    let seen_at = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(u64, Instant)>::new()));
    let recorder = tokio::spawn({
        let (mut visible, seen_at) = (visible.clone(), seen_at.clone());
        async move {
            while visible.changed().await.is_ok() {
                let total = *visible.borrow_and_update();
                if let Ok(mut log) = seen_at.lock() {
                    log.push((total, Instant::now()));
                }
            }
        }
    });

    // Steady phase.
    let per_tx = u64::from(options.per_transaction.max(1));
    let transactions = u64::from(options.rate) * u64::from(options.seconds) / per_tx;
    let interval = Duration::from_secs_f64(per_tx as f64 / f64::from(options.rate.max(1)));
    let start = Instant::now();
    let mut commits: Vec<(u64, Instant)> = Vec::with_capacity(transactions as usize);
    for i in 0..transactions {
        tokio::time::sleep_until((start + interval.mul_f64(i as f64)).into()).await;
        insert(&db, per_tx).await?;
        seen += per_tx;
        commits.push((seen, Instant::now()));
    }
    wait_for(&mut visible, seen).await?;
    let mut latencies: Vec<f64> = {
        let log = seen_at
            .lock()
            .map_err(|_| StreamingError::Setup("the progress log was poisoned".into()))?;
        commits
            .iter()
            .filter_map(|(total, committed)| {
                log.iter()
                    .find(|(v, _)| v >= total)
                    .map(|(_, at)| at.saturating_duration_since(*committed).as_secs_f64() * 1000.0)
            })
            .collect()
    };
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };

    // Burst phase.
    let burst_start = Instant::now();
    let mut remaining = u64::from(options.burst);
    while remaining > 0 {
        let n = remaining.min(1_000);
        insert(&db, n).await?;
        remaining -= n;
    }
    seen += u64::from(options.burst);
    wait_for(&mut visible, seen).await?;
    let burst_secs = burst_start.elapsed().as_secs_f64();

    cancel.cancel();
    recorder.abort();
    let _ = cdc_task.await;
    let _ = sink_task.await;
    Ok(BenchReport {
        offered_rate: options.rate,
        steady_changes: transactions * per_tx,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        max_ms: latencies.last().copied().unwrap_or(0.0),
        burst_changes: u64::from(options.burst),
        burst_changes_per_s: f64::from(options.burst) / burst_secs.max(1e-9),
    })
}

/// Inserts `n` customers in one transaction (one multi-row statement).
async fn insert(db: &rainbow_db::Database, n: u64) -> Result<()> {
    let now = chrono::Utc::now().timestamp_micros();
    let rows = (0..n)
        .map(|i| format!("('bench {i}', 'bench{i}@example.com', 'Hà Nội', {now}, {now})"))
        .collect::<Vec<_>>()
        .join(", ");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO customers (name, email, city, created_at, updated_at) VALUES {rows}"
    )))
    .execute(&db.pool)
    .await
    .map_err(StreamingError::db("inserting benchmark rows"))?;
    Ok(())
}

async fn wait_for(visible: &mut tokio::sync::watch::Receiver<u64>, total: u64) -> Result<()> {
    tokio::time::timeout(Duration::from_secs(180), visible.wait_for(|v| *v >= total))
        .await
        .map_err(|_| StreamingError::Setup(format!("{total} changes not visible within 180 s")))?
        .map_err(|_| StreamingError::Setup("the sink stopped".into()))?;
    Ok(())
}
