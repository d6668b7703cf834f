//! `rainbow backfill …` and `rainbow partitions ASSET`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;

use super::{GlobalArgs, SelectArgs, cancel_on_ctrl_c};
use crate::backfill::{
    BackfillProgressFn, BackfillRequest, BackfillRunOptions, PartitionSelector, cancel_backfill,
    launch_backfill, resume_backfill, run_backfill,
};
use crate::error::{Error, Result};
use crate::event::format_micros;
use crate::executor::Executor;
use crate::graph::AssetGraph;
use crate::partitions::{PartitionContext, status_ranges};
use crate::storage::Storage;
use crate::storage::backfills::BackfillStatus;

/// `rainbow backfill`: launch one (flags), or manage them (subcommands).
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BackfillArgs {
    #[command(subcommand)]
    command: Option<BackfillCommand>,
    #[command(flatten)]
    launch: LaunchArgs,
}

#[derive(Debug, Args)]
struct LaunchArgs {
    #[command(flatten)]
    selection: SelectArgs,
    /// First partition of a range.
    #[arg(long, requires = "to")]
    from: Option<String>,
    /// Last partition of a range (inclusive).
    #[arg(long, requires = "from")]
    to: Option<String>,
    /// Explicit partitions, comma-separated.
    #[arg(long, value_delimiter = ',')]
    partitions: Vec<String>,
    /// Every partition not materialized yet (never attempted or failed).
    #[arg(long)]
    missing: bool,
    /// Every partition whose latest attempt failed.
    #[arg(long)]
    failed: bool,
    /// Every partition.
    #[arg(long)]
    all: bool,
    /// Most runs (units of partitions) executing at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=4096))]
    max_concurrent: u32,
    /// Only store the backfill (status `requested`) for the daemon to run.
    #[arg(long)]
    detach: bool,
}

#[derive(Debug, Subcommand)]
enum BackfillCommand {
    /// Recent backfills with their progress.
    List {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One backfill, its progress and units.
    Show {
        /// Backfill id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a backfill (a running one stops its runs).
    Cancel {
        /// Backfill id.
        id: String,
    },
    /// Resume a stopped backfill in this process: retries failed units, continues the rest.
    Resume {
        /// Backfill id.
        id: String,
    },
}

impl LaunchArgs {
    fn selector(&self) -> Result<PartitionSelector> {
        let mut chosen = Vec::new();
        if let (Some(from), Some(to)) = (&self.from, &self.to) {
            chosen.push(PartitionSelector::Range {
                from: from.clone(),
                to: to.clone(),
            });
        }
        if !self.partitions.is_empty() {
            chosen.push(PartitionSelector::Keys {
                keys: self.partitions.clone(),
            });
        }
        if self.missing {
            chosen.push(PartitionSelector::Missing);
        }
        if self.failed {
            chosen.push(PartitionSelector::Failed);
        }
        if self.all {
            chosen.push(PartitionSelector::All);
        }
        match chosen.len() {
            1 => Ok(chosen.remove(0)),
            0 => Err(Error::Config {
                location: "rainbow backfill".into(),
                message: "say which partitions: --from K --to K, --partitions K,K, --missing, --failed or --all".into(),
            }),
            _ => Err(Error::Config {
                location: "rainbow backfill".into(),
                message: "give only one of --from/--to, --partitions, --missing, --failed, --all".into(),
            }),
        }
    }
}

pub(super) async fn run(
    cli: &GlobalArgs,
    graph: Arc<AssetGraph>,
    args: &BackfillArgs,
) -> Result<ExitCode> {
    let storage = cli.storage().await?;
    let timeout = Duration::from_secs(cli.heartbeat_timeout()?);
    match &args.command {
        None => {
            let launch = &args.launch;
            if launch.selection.select.is_empty() {
                return Err(Error::selection(
                    "",
                    "give --select SELECTION for the backfill",
                ));
            }
            let request = BackfillRequest {
                select: launch.selection.select.clone(),
                exclude: launch.selection.exclude.clone(),
                partitions: launch.selector()?,
                max_concurrent: launch.max_concurrent as usize,
                tags: Default::default(),
            };
            let record = launch_backfill(&graph, &storage, &request, chrono::Utc::now()).await?;
            let progress = storage.backfill_progress(&record.backfill_id).await?;
            outln!(
                "backfill {} created: {} run(s) planned",
                record.backfill_id,
                progress.total
            )?;
            if launch.detach {
                return Ok(ExitCode::SUCCESS);
            }
            execute(cli, graph, storage, &record.backfill_id).await
        }
        Some(BackfillCommand::List { limit, json }) => {
            let list = storage.list_backfills(None, *limit).await?;
            let mut rows = Vec::new();
            for b in &list {
                let p = storage.backfill_progress(&b.backfill_id).await?;
                rows.push((b, p));
            }
            if *json {
                let items: Vec<serde_json::Value> = rows
                    .iter()
                    .map(|(b, p)| json!({"backfill": b, "progress": p}))
                    .collect();
                super::output::print_json(&serde_json::Value::Array(items))?;
            } else {
                outln!(
                    "{:<38} {:<10} {:<25} {:>6} {:>6} {:>6} {:>8}  SELECTION",
                    "BACKFILL",
                    "STATUS",
                    "CREATED",
                    "DONE",
                    "FAILED",
                    "TOTAL",
                    "RUNNING"
                )?;
                for (b, p) in rows {
                    outln!(
                        "{:<38} {:<10} {:<25} {:>6} {:>6} {:>6} {:>8}  {}",
                        b.backfill_id,
                        b.status.as_str(),
                        format_micros(b.created_at),
                        p.done,
                        p.failed + p.skipped,
                        p.total,
                        p.running,
                        b.selection
                    )?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(BackfillCommand::Show { id, json }) => {
            let b = storage
                .get_backfill(id)
                .await?
                .ok_or_else(|| Error::NotFound {
                    kind: "backfill",
                    id: id.clone(),
                })?;
            let p = storage.backfill_progress(id).await?;
            let units = storage.backfill_units(id).await?;
            if *json {
                super::output::print_json(&json!({"backfill": b, "progress": p, "units": units}))?;
            } else {
                outln!("backfill  {}", b.backfill_id)?;
                outln!("status    {}", b.status)?;
                outln!("selection {}", b.selection)?;
                outln!("created   {}", format_micros(b.created_at))?;
                if let Some(r) = &b.reason {
                    outln!("reason    {r}")?;
                }
                outln!(
                    "progress  {} done, {} failed, {} skipped, {} running, {} pending, of {}",
                    p.done,
                    p.failed,
                    p.skipped,
                    p.running,
                    p.pending,
                    p.total
                )?;
                for u in units
                    .iter()
                    .filter(|u| u.status.as_str() != "done")
                    .take(20)
                {
                    let parts = match u.partitions.as_slice() {
                        [] => "-".to_owned(),
                        [k] => k.clone(),
                        ks => format!("{}..{}", ks[0], ks[ks.len() - 1]),
                    };
                    outln!(
                        "  unit {:>5} {:<8} {parts}  run {}",
                        u.unit_id,
                        u.status.as_str(),
                        u.run_id.as_deref().unwrap_or("-")
                    )?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(BackfillCommand::Cancel { id }) => {
            let status = cancel_backfill(&storage, id).await?;
            outln!("backfill {id}: {status}")?;
            Ok(ExitCode::SUCCESS)
        }
        Some(BackfillCommand::Resume { id }) => {
            resume_backfill(&storage, id, timeout).await?;
            execute(cli, graph, storage, id).await
        }
    }
}

/// Runs a stored backfill in this process with a progress bar (or log lines).
async fn execute(
    cli: &GlobalArgs,
    graph: Arc<AssetGraph>,
    storage: Storage,
    id: &str,
) -> Result<ExitCode> {
    let executor = Executor::new(graph, storage, &cli.config()?)?;
    let bar = super::progress_bar(0);
    let progress: BackfillProgressFn = {
        let bar = bar.0.clone();
        Arc::new(move |p| match &bar {
            Some(bar) => {
                bar.set_length(p.total as u64);
                bar.set_position((p.done + p.failed + p.skipped) as u64);
                bar.set_message(format!(
                    "{} running, {} failed",
                    p.running,
                    p.failed + p.skipped
                ));
            }
            None => tracing::debug!(
                done = p.done,
                failed = p.failed,
                total = p.total,
                "backfill progress"
            ),
        })
    };
    let status = run_backfill(
        &executor,
        id,
        &BackfillRunOptions::default(),
        cancel_on_ctrl_c(),
        Some(progress),
    )
    .await?;
    bar.finish();
    let p = executor.storage().backfill_progress(id).await?;
    outln!(
        "backfill {id} {status}: {} done, {} failed, {} skipped, {} pending, of {}",
        p.done,
        p.failed,
        p.skipped,
        p.pending,
        p.total
    )?;
    Ok(if status == BackfillStatus::Completed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `rainbow partitions ASSET`.
pub(super) async fn show_partitions(
    graph: &AssetGraph,
    storage: &Storage,
    asset: &str,
    json: bool,
) -> Result<()> {
    let key = crate::AssetKey::from(asset);
    let node = graph.node_id(&key).ok_or_else(|| {
        let keys: Vec<String> = graph
            .nodes()
            .iter()
            .map(|n| n.spec.key.to_string())
            .collect();
        Error::selection(
            asset,
            format!(
                "unknown asset `{asset}`{}",
                crate::error::did_you_mean(asset, keys.iter().map(String::as_str))
            ),
        )
    })?;
    let def = graph.partitions(node).ok_or_else(|| Error::Partition {
        asset: asset.to_owned(),
        message: "the asset is not partitioned".into(),
    })?;
    let mut ctx = PartitionContext::at(chrono::Utc::now());
    if def.uses_dynamic() {
        ctx.dynamic = storage.dynamic_partitions().await?;
    }
    let keys = ctx.keys_of(def)?;
    let states = storage.partition_states(&key).await?;
    let ranges = status_ranges(&keys, &states);
    let mut counts = std::collections::BTreeMap::new();
    for r in &ranges {
        *counts.entry(r.state.as_str()).or_insert(0usize) += r.count;
    }
    if json {
        return super::output::print_json(&json!({
            "asset": asset, "definition": def.to_string(), "total": keys.len(),
            "counts": counts, "ranges": ranges,
        }));
    }
    outln!("{asset}: {def}, {} partitions", keys.len())?;
    let summary: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    outln!("{}", summary.join(", "))?;
    for r in &ranges {
        if r.count == 1 {
            outln!("  {:<24} {}", r.start, r.state.as_str())?;
        } else {
            outln!(
                "  {:<24} {} ({})",
                format!("{}..{}", r.start, r.end),
                r.state.as_str(),
                r.count
            )?;
        }
    }
    Ok(())
}
