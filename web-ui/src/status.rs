//! The state each asset is shown in — materialized, stale (with the reasons), missing,
//! failed, running or source — with its check results and partition counts, read from run
//! storage in a fixed number of queries whatever the number of assets (the lineage page and
//! the catalog render 10,000 assets from it).

use std::collections::HashMap;

use rainbow_engine::event::{EventData, Micros};
use rainbow_engine::graph::NodeId;
use rainbow_engine::selection::NodeSet;
use rainbow_engine::staleness::{Staleness, asset_statuses};
use rainbow_engine::storage::RunFilter;
use rainbow_engine::{AssetCheckSeverity, RunStatus};
use serde::Serialize;

use crate::error::Result;
use crate::state::UiState;

/// How an asset is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum NodeState {
    /// Up to date.
    Materialized,
    /// Out of date (see the reasons).
    Stale,
    /// Never materialized.
    Missing,
    /// Its latest attempt failed (or some of its partitions).
    Failed,
    /// A step or backfill is computing it now.
    Running,
    /// A source asset (observed only).
    Source,
}

impl NodeState {
    /// Lower-case name (also the CSS class).
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Materialized => "materialized",
            NodeState::Stale => "stale",
            NodeState::Missing => "missing",
            NodeState::Failed => "failed",
            NodeState::Running => "running",
            NodeState::Source => "source",
        }
    }

    /// Parses [`NodeState::as_str`].
    pub fn parse(s: &str) -> Option<NodeState> {
        [
            NodeState::Materialized,
            NodeState::Stale,
            NodeState::Missing,
            NodeState::Failed,
            NodeState::Running,
            NodeState::Source,
        ]
        .into_iter()
        .find(|n| n.as_str() == s)
    }
}

/// Latest results of an asset's checks.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct CheckSummary {
    /// Checks defined.
    pub defined: usize,
    /// Latest result passed.
    pub passed: usize,
    /// Latest result failed with severity error.
    pub failed: usize,
    /// Latest result failed with severity warn.
    pub warned: usize,
}

/// Partition counts of a partitioned asset.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct PartitionSummary {
    /// Partitions defined now.
    pub total: usize,
    /// Latest outcome materialized.
    pub materialized: usize,
    /// Latest outcome failed.
    pub failed: usize,
    /// Being computed.
    pub in_progress: usize,
    /// Neither.
    pub missing: usize,
}

/// One asset's state.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AssetState {
    /// Asset key.
    pub key: String,
    /// State.
    pub state: NodeState,
    /// Why it is stale or failed.
    pub reasons: Vec<String>,
    /// Latest materialization time (µs since the epoch).
    pub last_materialized: Option<Micros>,
    /// Run of the latest materialization or failure.
    pub last_run_id: Option<String>,
    /// Checks.
    pub checks: CheckSummary,
    /// Partitions, for partitioned assets.
    pub partitions: Option<PartitionSummary>,
}

/// The state of every asset in `selection`, indexed by node id (`None` outside it).
///
/// Every asset's state is computed at once and kept until storage's change marker moves (a
/// new event, a lease taken or expired, a dynamic partition added) or [`STATES_TTL`] passes
/// (time partitions appear with time), so page views between two events cost one query.
pub(crate) async fn asset_states(
    ui: &UiState,
    selection: &NodeSet,
) -> Result<Vec<Option<AssetState>>> {
    let all = all_states(ui).await?;
    Ok(all
        .iter()
        .enumerate()
        .map(|(node, state)| {
            if selection.contains(node) {
                state.clone()
            } else {
                None
            }
        })
        .collect())
}

/// How long computed states are reused at most while the change marker stays put.
const STATES_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// The cached states of every asset (see [`asset_states`]).
pub(crate) type StatesCache = Option<(
    (i64, i64, i64, i64),
    std::time::Instant,
    std::sync::Arc<Vec<Option<AssetState>>>,
)>;

async fn all_states(ui: &UiState) -> Result<std::sync::Arc<Vec<Option<AssetState>>>> {
    let marker = ui.storage().change_marker().await?;
    if let Ok(cache) = ui.inner.states.lock()
        && let Some((m, at, states)) = cache.as_ref()
        && *m == marker
        && at.elapsed() < STATES_TTL
    {
        return Ok(states.clone());
    }
    let graph = ui.graph();
    let states = std::sync::Arc::new(compute_states(ui, &NodeSet::full(graph.len())).await?);
    if let Ok(mut cache) = ui.inner.states.lock() {
        *cache = Some((marker, std::time::Instant::now(), states.clone()));
    }
    Ok(states)
}

/// Computes the state of every asset in `selection` from storage.
async fn compute_states(ui: &UiState, selection: &NodeSet) -> Result<Vec<Option<AssetState>>> {
    let graph = ui.graph();
    let storage = ui.storage();
    let statuses = asset_statuses(graph, storage, selection).await?;
    let outcomes = storage.unpartitioned_outcomes().await?;
    let counts = storage.partition_counts().await?;
    let mut checks: HashMap<String, CheckSummary> = HashMap::new();
    for r in storage.latest_check_results().await? {
        let c = checks.entry(r.asset_key.to_string()).or_default();
        match (r.evaluation.passed, r.evaluation.severity) {
            (true, _) => c.passed += 1,
            (false, AssetCheckSeverity::Warn) => c.warned += 1,
            (false, AssetCheckSeverity::Error) => c.failed += 1,
        }
    }
    let running = running_nodes(ui).await?;
    let ctx = ui.partition_context().await?;
    let mut out: Vec<Option<AssetState>> = vec![None; graph.len()];
    for status in statuses {
        let Some(node) = graph.node_id(&status.key) else {
            continue;
        };
        let key = status.key.to_string();
        let mut check_summary = checks.get(&key).copied().unwrap_or_default();
        check_summary.defined = graph.check_ids_for(node).len();
        let mut reasons = status.reasons.clone();
        let mut last_run_id = status.latest.as_ref().map(|m| m.run_id.clone());
        let partitions = match graph.partitions(node) {
            Some(def) => {
                let total = ctx.keys_of(def).map(|k| k.len()).unwrap_or(0);
                let c = counts.get(&key).copied().unwrap_or_default();
                Some(PartitionSummary {
                    total,
                    materialized: c.materialized,
                    failed: c.failed,
                    in_progress: c.in_progress,
                    missing: total.saturating_sub(c.materialized + c.failed + c.in_progress),
                })
            }
            None => None,
        };
        let state = if running.contains(&node) || partitions.is_some_and(|p| p.in_progress > 0) {
            NodeState::Running
        } else if let Some(p) = partitions
            && p.failed > 0
        {
            reasons.push(format!("{} partition(s) failed", p.failed));
            NodeState::Failed
        } else if let Some((rainbow_engine::partitions::PartitionState::Failed, run, ts)) =
            outcomes.get(&key)
            && status.latest.as_ref().is_none_or(|m| m.timestamp <= *ts)
        {
            reasons.push(format!(
                "the latest attempt failed at {}",
                crate::shell::time(Some(*ts))
            ));
            last_run_id = Some(run.clone());
            NodeState::Failed
        } else {
            match status.staleness {
                Staleness::Missing => NodeState::Missing,
                Staleness::Fresh => NodeState::Materialized,
                Staleness::Stale => NodeState::Stale,
                Staleness::Source => NodeState::Source,
            }
        };
        out[node] = Some(AssetState {
            key,
            state,
            reasons,
            last_materialized: status.latest.as_ref().map(|m| m.timestamp),
            last_run_id,
            checks: check_summary,
            partitions,
        });
    }
    Ok(out)
}

/// Assets whose step is executing in a run in progress now.
async fn running_nodes(ui: &UiState) -> Result<std::collections::HashSet<NodeId>> {
    let graph = ui.graph();
    let storage = ui.storage();
    let runs = storage
        .list_runs(&RunFilter {
            status: Some(RunStatus::Started),
            limit: Some(200),
            ..Default::default()
        })
        .await?;
    let mut out = std::collections::HashSet::new();
    if runs.is_empty() {
        return Ok(out);
    }
    let mut by_step: HashMap<&str, Vec<NodeId>> = HashMap::new();
    for id in 0..graph.len() {
        by_step.entry(graph.step_name(id)).or_default().push(id);
    }
    for run in runs {
        let mut open: HashMap<String, bool> = HashMap::new();
        for e in storage.step_events(&run.run_id).await? {
            let Some(step) = e.step_key else { continue };
            open.insert(step, matches!(e.data, EventData::StepStarted { .. }));
        }
        for (step, is_open) in open {
            if is_open && let Some(nodes) = by_step.get(step.as_str()) {
                out.extend(nodes.iter().copied());
            }
        }
    }
    Ok(out)
}
