//! `rainbow bench …`: reproducible performance measurements. Each prints one JSON object as its
//! last line. These are benchmarks, not tests: nothing here asserts a time.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Subcommand;
use serde_json::json;

use crate::asset::{AssetSpec, MaterializeResult, asset};
use crate::config::RainbowConfig;
use crate::definitions::Definitions;
use crate::error::{BoxError, Error, Result};
use crate::executor::{Executor, RunOptions};
use crate::graph::AssetGraph;
use crate::storage::Storage;

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Materialize N no-op assets in a layered DAG (about sqrt(N) per layer, 1-3 deps each)
    /// with SQLite storage, every event written.
    Assets {
        /// Number of assets.
        #[arg(long, default_value_t = 1000)]
        n: usize,
        /// Most steps running at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Simulated work per asset, in milliseconds.
        #[arg(long, default_value_t = 0)]
        sleep_ms: u64,
        /// Storage URL; default: a fresh SQLite file in a temporary directory, removed after.
        #[arg(long = "storage")]
        database_url: Option<String>,
    },
    /// Backfill a 2-asset daily chain of no-op assets over P partitions from 2000-01-01 (one
    /// run per partition), SQLite storage, then read the status of the 10,000+ partitions.
    Backfill {
        /// Number of partitions.
        #[arg(long, default_value_t = 1000)]
        partitions: usize,
        /// Most runs at once.
        #[arg(long, default_value_t = 8)]
        max_concurrent: usize,
        /// Simulated work per asset partition, in milliseconds.
        #[arg(long, default_value_t = 0)]
        sleep_ms: u64,
        /// Storage URL; default: a fresh SQLite file in a temporary directory, removed after.
        #[arg(long = "storage")]
        database_url: Option<String>,
    },
    /// Build the asset graph of N assets and resolve typical selections.
    Graph {
        /// Number of assets.
        #[arg(long, default_value_t = 100_000)]
        n: usize,
    },
}

/// The layered DAG's specs: asset `a{i}`, group `g{layer}`.
pub fn layered_specs(n: usize) -> Vec<AssetSpec> {
    let width = ((n as f64).sqrt().ceil() as usize).max(1);
    // The project's one generator: every run benchmarks the same DAG.
    let mut rng = crate::random::SplitMix64::new(42);
    (0..n)
        .map(|i| {
            let layer = i / width;
            let mut spec = asset(format!("a{i}")).group(format!("g{layer}"));
            if layer > 0 {
                let earlier = layer * width;
                let mut deps: Vec<usize> =
                    (0..1 + rng.index(3)).map(|_| rng.index(earlier)).collect();
                deps.sort_unstable();
                deps.dedup();
                spec = spec.deps(deps.into_iter().map(|d| format!("a{d}")));
            }
            spec
        })
        .collect()
}

fn layered_definitions(n: usize, sleep: Duration) -> Definitions {
    Definitions::new().assets(layered_specs(n).into_iter().map(|spec| {
        spec.compute(move |_ctx| async move {
            if !sleep.is_zero() {
                tokio::time::sleep(sleep).await;
            }
            Ok::<_, BoxError>(MaterializeResult::new())
        })
    }))
}

/// Runs an engine benchmark.
pub async fn run(command: &BenchCommand) -> Result<ExitCode> {
    match command {
        BenchCommand::Assets {
            n,
            concurrency,
            sleep_ms,
            database_url,
        } => {
            assets(
                *n,
                *concurrency,
                Duration::from_millis(*sleep_ms),
                database_url.clone(),
            )
            .await
        }
        BenchCommand::Graph { n } => graph(*n).map(|()| ExitCode::SUCCESS),
        BenchCommand::Backfill {
            partitions,
            max_concurrent,
            sleep_ms,
            database_url,
        } => {
            backfill(
                *partitions,
                *max_concurrent,
                Duration::from_millis(*sleep_ms),
                database_url.clone(),
            )
            .await
        }
    }
}

async fn assets(
    n: usize,
    concurrency: usize,
    sleep: Duration,
    url: Option<String>,
) -> Result<ExitCode> {
    let temp_dir: Option<PathBuf> = url.is_none().then(|| {
        std::env::temp_dir().join(format!(
            "rainbow-bench-{}-{}",
            std::process::id(),
            crate::event::now_micros()
        ))
    });
    let storage = match (&url, &temp_dir) {
        (Some(url), _) => Storage::connect(url).await?,
        (None, Some(dir)) => Storage::open_sqlite_dir(dir).await?,
        (None, None) => return Err(Error::Internal("no storage for the benchmark".into())),
    };

    let started = Instant::now();
    let graph = std::sync::Arc::new(AssetGraph::build(layered_definitions(n, sleep))?);
    let executor = Executor::new(graph.clone(), storage, &RainbowConfig::default())?;
    let result = executor
        .materialize(
            &crate::selection::NodeSet::full(graph.len()),
            RunOptions {
                concurrency,
                selection: "*".into(),
                ..RunOptions::default()
            },
            super::cancel_on_ctrl_c(),
            None,
        )
        .await?;
    let seconds = started.elapsed().as_secs_f64();
    if let Some(dir) = temp_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    if !result.success() {
        eprintln!("benchmark run {} ended {}", result.run_id, result.status);
        return Ok(ExitCode::from(1));
    }
    println!("{{\"bench\":\"assets\",\"n\":{n},\"seconds\":{seconds}}}");
    Ok(ExitCode::SUCCESS)
}

/// A fresh temporary SQLite storage (with the directory to remove) or the given URL.
async fn bench_storage(url: Option<String>) -> Result<(Storage, Option<PathBuf>)> {
    match url {
        Some(url) => Ok((Storage::connect(&url).await?, None)),
        None => {
            let dir = std::env::temp_dir().join(format!(
                "rainbow-bench-{}-{}",
                std::process::id(),
                crate::event::now_micros()
            ));
            Ok((Storage::open_sqlite_dir(&dir).await?, Some(dir)))
        }
    }
}

async fn backfill(
    partitions: usize,
    max_concurrent: usize,
    sleep: Duration,
    url: Option<String>,
) -> Result<ExitCode> {
    use crate::backfill::{
        BackfillRequest, BackfillRunOptions, PartitionSelector, launch_backfill, run_backfill,
    };
    use crate::partitions::PartitionsDefinition;
    let (storage, temp_dir) = bench_storage(url).await?;
    let n = partitions.max(1);
    // Enough end offset that all n days exist whatever today is.
    let def = PartitionsDefinition::daily("2000-01-01").end_offset(n as i64);
    let noop = move |_ctx| async move {
        if !sleep.is_zero() {
            tokio::time::sleep(sleep).await;
        }
        Ok::<_, BoxError>(MaterializeResult::new())
    };
    let defs = Definitions::new()
        .asset(asset("bench/extract").partitions(def.clone()).compute(noop))
        .asset(
            asset("bench/load")
                .dep("bench/extract")
                .partitions(def)
                .compute(noop),
        );
    let graph = std::sync::Arc::new(AssetGraph::build(defs)?);
    let executor = Executor::new(graph.clone(), storage.clone(), &RainbowConfig::default())?;
    let last = chrono::NaiveDate::from_ymd_opt(2000, 1, 1)
        .and_then(|d| d.checked_add_days(chrono::Days::new(n as u64 - 1)))
        .ok_or_else(|| Error::Internal("date overflow".into()))?;
    let request = BackfillRequest {
        select: vec!["bench/*".into()],
        exclude: Vec::new(),
        partitions: PartitionSelector::Range {
            from: "2000-01-01".into(),
            to: last.format("%Y-%m-%d").to_string(),
        },
        max_concurrent,
        tags: Default::default(),
    };
    let started = Instant::now();
    let record = launch_backfill(&graph, &storage, &request, chrono::Utc::now()).await?;
    let planned = started.elapsed().as_secs_f64();
    let status = run_backfill(
        &executor,
        &record.backfill_id,
        &BackfillRunOptions::default(),
        super::cancel_on_ctrl_c(),
        None,
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();

    let read_started = Instant::now();
    let states = storage
        .partition_states(&crate::AssetKey::from("bench/load"))
        .await?;
    let ctx = crate::partitions::PartitionContext::at(chrono::Utc::now());
    let keys = ctx.keys_of(
        graph
            .partitions(0)
            .ok_or_else(|| Error::Internal("bench asset unpartitioned".into()))?,
    )?;
    let ranges = crate::partitions::status_ranges(&keys, &states);
    let status_read = read_started.elapsed().as_secs_f64();
    if let Some(dir) = temp_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    if status != crate::storage::backfills::BackfillStatus::Completed {
        eprintln!("benchmark backfill {} ended {status}", record.backfill_id);
        return Ok(ExitCode::from(1));
    }
    // Details first; the last line is exactly the benchmark's contract.
    println!(
        "{}",
        json!({"seconds_per_partition": seconds / n as f64, "plan_seconds": planned,
               "status_read_seconds": status_read, "status_ranges": ranges.len(),
               "status_partitions": keys.len()})
    );
    println!("{{\"bench\":\"backfill\",\"partitions\":{n},\"seconds\":{seconds}}}");
    Ok(ExitCode::SUCCESS)
}

/// Peak resident memory of this process, in MiB (Linux; 0 elsewhere).
/// The process's peak resident set size (`VmHWM`), in MiB; 0 where unknown.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn graph(n: usize) -> Result<()> {
    let defs = layered_definitions(n, Duration::ZERO);
    let started = Instant::now();
    let graph = AssetGraph::build(defs)?;
    let build = started.elapsed().as_secs_f64();
    let last = format!("a{}", n.saturating_sub(1));
    let middle = format!("a{}", n / 2);
    let expressions = [
        "*".to_owned(),
        format!("+{last}"),
        "a0+".to_owned(),
        format!("2+{middle}+2"),
        "group:g3,a9*".to_owned(),
    ];
    let started = Instant::now();
    let mut selected = Vec::new();
    for e in &expressions {
        selected.push(graph.select(&[e.as_str()], &[] as &[&str])?.len());
    }
    let select = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"bench": "graph", "n": n, "build_seconds": build, "select_seconds": select,
               "selections": expressions, "selected": selected})
    );
    Ok(())
}
