//! Backfills: materialize a selection over many partitions, as runs, with progress stored so a
//! killed process resumes exactly where it stopped.
//!
//! Planning turns a [`BackfillRequest`] (selection x partitions: a key range, a list, all
//! missing, all failed, all) into **units**: the selected assets sharing one partitions
//! definition, over one partition (the default [`BackfillPolicy`]) or a chunk of partitions
//! (`multi_run(n)`, `single_run()`), each executed as one run. A unit depends on the units
//! holding the upstream partitions its partitions map to (previous day, month of days, ...).
//!
//! Running: units start when their dependencies are done, at most `max_concurrent` at once,
//! each after taking a lease on every asset partition it computes — so two backfills (or two
//! processes sharing PostgreSQL) never compute the same asset partition at the same time. The
//! backfill's heartbeat renews its leases; a dead process's leases expire. On resume, asset
//! partitions already materialized by the backfill's runs are never computed again.

mod drive;
mod plan;

pub use plan::plan_backfill;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result, error_chain};
use crate::executor::Executor;
use crate::graph::AssetGraph;
use crate::storage::Storage;
use crate::storage::backfills::{BackfillProgress, BackfillRecord, BackfillStatus};

/// Which partitions a backfill covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PartitionSelector {
    /// From `from` to `to`, inclusive, in each asset's key order.
    Range {
        /// First key.
        from: String,
        /// Last key.
        to: String,
    },
    /// These keys.
    Keys {
        /// The keys.
        keys: Vec<String>,
    },
    /// Every partition not materialized (never attempted, or failed).
    Missing,
    /// Every partition whose latest attempt failed.
    Failed,
    /// Every partition.
    All,
}

/// What an operator asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackfillRequest {
    /// Selection expressions (union).
    pub select: Vec<String>,
    /// Exclusions.
    pub exclude: Vec<String>,
    /// Which partitions.
    pub partitions: PartitionSelector,
    /// Most units (runs) executing at once.
    pub max_concurrent: usize,
    /// Tags put on every run.
    pub tags: BTreeMap<String, String>,
}

/// Plans and stores a backfill (status `requested`); run it with [`run_backfill`].
pub async fn launch_backfill(
    graph: &AssetGraph,
    storage: &Storage,
    request: &BackfillRequest,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<BackfillRecord> {
    let units = plan_backfill(graph, storage, request, now).await?;
    let json = serde_json::to_value(request)
        .map_err(|e| Error::Internal(format!("backfill request to JSON: {e}")))?;
    storage
        .create_backfill(&request.select.join(" "), &json, &units)
        .await
}

/// The stored backfill `id`, or a not-found error naming it.
async fn load_backfill(storage: &Storage, id: &str) -> Result<BackfillRecord> {
    storage
        .get_backfill(id)
        .await?
        .ok_or_else(|| Error::NotFound {
            kind: "backfill",
            id: id.to_owned(),
        })
}

/// Requests cancellation: a running backfill stops its runs; a requested one is canceled now.
pub async fn cancel_backfill(storage: &Storage, id: &str) -> Result<BackfillStatus> {
    let record = load_backfill(storage, id).await?;
    match record.status {
        BackfillStatus::Requested | BackfillStatus::Running => {
            // Requested: canceled now. Running: its process stops it at the next heartbeat.
            let (to, from) = if record.status == BackfillStatus::Requested {
                (BackfillStatus::Canceled, BackfillStatus::Requested)
            } else {
                (BackfillStatus::Canceling, BackfillStatus::Running)
            };
            if storage
                .set_backfill_status(id, to, Some("canceled by the user"), &[from])
                .await?
            {
                return Ok(to);
            }
            // Its status changed meanwhile (claimed, finished): decide again on the new one.
            return Box::pin(cancel_backfill(storage, id)).await;
        }
        other => Ok(other),
    }
}

/// Makes a stopped backfill runnable again: every unit not done goes back to pending (failed
/// and skipped ones are retried) and the status to `requested`. A backfill whose process is
/// alive and heartbeating is refused.
pub async fn resume_backfill(
    storage: &Storage,
    id: &str,
    heartbeat_timeout: Duration,
) -> Result<()> {
    let record = load_backfill(storage, id).await?;
    if matches!(
        record.status,
        BackfillStatus::Running | BackfillStatus::Canceling
    ) && owner_alive(&record, heartbeat_timeout)
    {
        return Err(Error::Config {
            location: format!("backfill {id}"),
            message: format!(
                "it is running in pid {} on {}; cancel it first",
                record.pid.unwrap_or(0),
                record.hostname.as_deref().unwrap_or("?")
            ),
        });
    }
    if record.status == BackfillStatus::Completed {
        return Err(Error::Config {
            location: format!("backfill {id}"),
            message: "it completed; there is nothing to resume".into(),
        });
    }
    storage.reset_unfinished_units(id).await?;
    storage
        .set_backfill_status(id, BackfillStatus::Requested, None, &[])
        .await?;
    Ok(())
}

fn owner_alive(record: &BackfillRecord, heartbeat_timeout: Duration) -> bool {
    let beat = record.heartbeat_at.unwrap_or(record.updated_at);
    let fresh = crate::event::now_micros() - beat
        < i64::try_from(heartbeat_timeout.as_micros()).unwrap_or(i64::MAX);
    match (record.hostname.as_deref(), record.pid) {
        // On this host the pid tells (this very process included: it may be running it).
        (Some(h), Some(pid)) if h == crate::process::hostname() => {
            crate::process::process_alive(pid)
        }
        _ => fresh,
    }
}

/// How a backfill process behaves.
#[derive(Debug, Clone)]
pub struct BackfillRunOptions {
    /// Lease duration; renewed every third of it.
    pub lease_ttl: Duration,
    /// How often to heartbeat, check for cancel requests and retry blocked units.
    pub poll_interval: Duration,
    /// Concurrency of each unit's run.
    pub run_concurrency: usize,
    /// When the cancel token fires (process shutdown) put the backfill back to `requested`
    /// for the next process, instead of finishing it as canceled (the daemon sets this).
    pub requeue_on_interrupt: bool,
}

impl Default for BackfillRunOptions {
    fn default() -> Self {
        BackfillRunOptions {
            lease_ttl: Duration::from_secs(120),
            poll_interval: Duration::from_millis(200),
            run_concurrency: 8,
            requeue_on_interrupt: false,
        }
    }
}

/// Ready units whose leases are taken together, at least.
const LEASE_LOOKAHEAD: usize = 64;

/// Progress callback.
pub type BackfillProgressFn = Arc<dyn Fn(&BackfillProgress) + Send + Sync>;

/// Runs backfill `id` to the end in this process: claims it, executes its pending units and
/// records the final status. Cancel with `cancel` or [`cancel_backfill`] from anywhere.
pub async fn run_backfill(
    executor: &Executor,
    id: &str,
    options: &BackfillRunOptions,
    cancel: CancellationToken,
    progress: Option<BackfillProgressFn>,
) -> Result<BackfillStatus> {
    let storage = executor.storage().clone();
    let record = load_backfill(&storage, id).await?;
    let request: BackfillRequest =
        serde_json::from_value(record.request.clone()).map_err(|e| Error::CorruptStorage {
            location: format!("backfills.request of {id}"),
            message: e.to_string(),
        })?;
    if record.status == BackfillStatus::Canceling {
        storage
            .set_backfill_status(
                id,
                BackfillStatus::Canceled,
                Some("canceled by the user"),
                &[],
            )
            .await?;
        return Ok(BackfillStatus::Canceled);
    }
    if !storage.claim_backfill(id).await? {
        return Err(Error::Config {
            location: format!("backfill {id}"),
            message: format!(
                "it is {} (another process may be running it); resume a stopped backfill to run it again",
                record.status
            ),
        });
    }
    let user_cancel = CancellationToken::new();
    let run_cancel = cancel.child_token();
    let outcome = drive::drive(
        executor,
        id,
        &request,
        options,
        &run_cancel,
        &user_cancel,
        progress,
    )
    .await;
    let storage = executor.storage();
    let (status, reason) = match &outcome {
        Err(e) => (
            BackfillStatus::Failed,
            Some(format!("the backfill process failed: {}", error_chain(e))),
        ),
        Ok(_) if user_cancel.is_cancelled() => (
            BackfillStatus::Canceled,
            Some("canceled by the user".to_owned()),
        ),
        Ok(_) if cancel.is_cancelled() && options.requeue_on_interrupt => (
            BackfillStatus::Requested,
            Some("interrupted; the next daemon or `backfill resume` carries on".to_owned()),
        ),
        Ok(_) if cancel.is_cancelled() => (
            BackfillStatus::Canceled,
            Some("canceled by the user".to_owned()),
        ),
        Ok(o) if o.failed > 0 => (
            BackfillStatus::Failed,
            Some(format!(
                "{} of {} units failed or were skipped",
                o.failed, o.total
            )),
        ),
        Ok(o) if o.never_ready > 0 => (
            BackfillStatus::Failed,
            Some(format!(
                "{} of {} units never became ready",
                o.never_ready, o.total
            )),
        ),
        Ok(_) => (BackfillStatus::Completed, None),
    };
    storage
        .set_backfill_status(id, status, reason.as_deref(), &[])
        .await?;
    outcome.map(|_| status)
}
