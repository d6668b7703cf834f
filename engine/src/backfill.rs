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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::asset::BackfillPolicy;
use crate::error::{Error, Result};
use crate::executor::{Executor, RunOptions, error_chain};
use crate::graph::{AssetGraph, NodeId};
use crate::key::AssetKey;
use crate::partitions::{PartitionContext, PartitionMapping, PartitionsDefinition};
use crate::selection::NodeSet;
use crate::storage::backfills::{
    BackfillProgress, BackfillRecord, BackfillStatus, BackfillUnit, UnitStatus, UnitUpdate,
};
use crate::storage::partitions::{Lease, PartitionState};
use crate::storage::{Storage, WriteSet};

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

/// Plans `request` against the graph and the stored partition states, as of `now`.
pub async fn plan_backfill(
    graph: &AssetGraph,
    storage: &Storage,
    request: &BackfillRequest,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<BackfillUnit>> {
    let selected = graph.select(&request.select, &request.exclude)?;
    let nodes: Vec<NodeId> = graph
        .topological_order()
        .iter()
        .copied()
        .filter(|&n| selected.contains(n) && !graph.node(n).is_source)
        .collect();
    if nodes.is_empty() {
        return Err(Error::selection(
            request.select.join(" "),
            "selects no materializable assets to backfill",
        ));
    }
    let mut ctx = PartitionContext::at(now);
    if nodes
        .iter()
        .filter_map(|&n| graph.partitions(n))
        .any(|d| d.uses_dynamic())
    {
        ctx.dynamic = storage.dynamic_partitions().await?;
    }

    // Target keys per node, in each definition's order.
    let mut targets: HashMap<NodeId, Vec<String>> = HashMap::new();
    let mut unknown_keys: BTreeSet<String> = match &request.partitions {
        PartitionSelector::Keys { keys } => keys.iter().cloned().collect(),
        _ => BTreeSet::new(),
    };
    let mut range_found = false;
    for &n in &nodes {
        let Some(def) = graph.partitions(n) else {
            targets.insert(n, Vec::new());
            continue;
        };
        let all = ctx.keys_of(def)?;
        let keys: Vec<String> = match &request.partitions {
            PartitionSelector::All => all.to_vec(),
            PartitionSelector::Range { from, to } => match range(&all, from, to, def, &ctx)? {
                Some(keys) => {
                    range_found = true;
                    keys
                }
                None => Vec::new(),
            },
            PartitionSelector::Keys { keys } => {
                let wanted: HashSet<&String> = keys.iter().collect();
                let found: Vec<String> =
                    all.iter().filter(|k| wanted.contains(k)).cloned().collect();
                for k in &found {
                    unknown_keys.remove(k);
                }
                found
            }
            PartitionSelector::Missing | PartitionSelector::Failed => {
                let states = storage.partition_states(&graph.node(n).spec.key).await?;
                let want_failed = request.partitions == PartitionSelector::Failed;
                all.iter()
                    .filter(|k| match states.get(*k) {
                        Some(PartitionState::Failed) => true,
                        Some(_) => false,
                        None => !want_failed,
                    })
                    .cloned()
                    .collect()
            }
        };
        targets.insert(n, keys);
    }
    if let PartitionSelector::Range { from, to } = &request.partitions
        && !range_found
    {
        return Err(Error::Partition {
            asset: request.select.join(" "),
            message: format!("no selected asset has the partitions `{from}` to `{to}`"),
        });
    }
    if let Some(k) = unknown_keys.first() {
        return Err(Error::Partition {
            asset: request.select.join(" "),
            message: format!("no selected asset has a partition `{k}`"),
        });
    }

    // Group nodes by partitions definition (unpartitioned nodes form one group).
    let mut groups: Vec<(Option<PartitionsDefinition>, Vec<NodeId>)> = Vec::new();
    for &n in &nodes {
        let def = graph.partitions(n).cloned();
        match groups.iter_mut().find(|(d, _)| *d == def) {
            Some((_, members)) => members.push(n),
            None => groups.push((def, vec![n])),
        }
    }

    let mut units: Vec<BackfillUnit> = Vec::new();
    // (asset, key) -> the unit computing it ("" for unpartitioned assets), and asset -> group.
    let mut unit_of: HashMap<(NodeId, String), usize> = HashMap::new();
    let mut group_of: HashMap<NodeId, usize> = HashMap::new();
    for (g, (def, members)) in groups.iter().enumerate() {
        for &m in members {
            group_of.insert(m, g);
        }
        let Some(def) = def else {
            for &m in members {
                unit_of.insert((m, String::new()), units.len());
            }
            units.push(new_unit(units.len(), graph, members, Vec::new()));
            continue;
        };
        let wanted: HashSet<&String> = members.iter().flat_map(|m| targets[m].iter()).collect();
        let ordered: Vec<String> = ctx
            .keys_of(def)?
            .iter()
            .filter(|k| wanted.contains(k))
            .cloned()
            .collect();
        if ordered.is_empty() {
            continue;
        }
        let size = members
            .iter()
            .map(|&m| match graph.node(m).spec.backfill_policy {
                BackfillPolicy::MultiRun(n) => n,
                BackfillPolicy::SingleRun => usize::MAX,
            })
            .min()
            .unwrap_or(1)
            .max(1);
        let member_targets: Vec<(NodeId, HashSet<&String>)> = members
            .iter()
            .map(|&m| (m, targets[&m].iter().collect()))
            .collect();
        for chunk in ordered.chunks(size.min(ordered.len())) {
            // Assets needing different keys of the chunk (`--missing`, `--failed`) get units
            // of their own, so nothing already materialized is computed again.
            let mut subsets: Vec<(Vec<String>, Vec<NodeId>)> = Vec::new();
            for (m, t) in &member_targets {
                let keys: Vec<String> = chunk.iter().filter(|k| t.contains(k)).cloned().collect();
                if keys.is_empty() {
                    continue;
                }
                match subsets.iter_mut().find(|(k, _)| *k == keys) {
                    Some((_, assets)) => assets.push(*m),
                    None => subsets.push((keys, vec![*m])),
                }
            }
            for (keys, assets) in subsets {
                for &m in &assets {
                    for k in &keys {
                        unit_of.insert((m, k.clone()), units.len());
                    }
                }
                units.push(new_unit(units.len(), graph, &assets, keys));
            }
        }
    }

    // Dependencies between units through partition mappings.
    let index: HashMap<AssetKey, NodeId> = nodes
        .iter()
        .map(|&n| (graph.node(n).spec.key.clone(), n))
        .collect();
    let mut all_deps: Vec<Vec<i64>> = Vec::with_capacity(units.len());
    for (u, unit) in units.iter().enumerate() {
        let mut deps: BTreeSet<i64> = BTreeSet::new();
        let unit_assets: Vec<NodeId> = unit
            .assets
            .iter()
            .filter_map(|k| index.get(k).copied())
            .collect();
        for &a in &unit_assets {
            for &b in graph.parents(a) {
                let Some(&h) = group_of.get(&b) else { continue };
                let mut upstream_keys: Vec<String> = Vec::new();
                if graph.partitions(b).is_none() {
                    upstream_keys.push(String::new());
                }
                for mapping in graph.partition_mappings(a, b) {
                    if mapping == PartitionMapping::Identity && group_of.get(&a) == Some(&h) {
                        upstream_keys.extend(units[u].partitions.iter().cloned());
                        continue;
                    }
                    let Some(up_def) = graph.partitions(b) else {
                        continue;
                    };
                    upstream_keys.extend(mapping.upstream_keys(
                        &units[u].partitions,
                        graph.partitions(a),
                        up_def,
                        &ctx,
                    )?);
                }
                for k in upstream_keys {
                    if let Some(&v) = unit_of.get(&(b, k))
                        && v != u
                    {
                        deps.insert(v as i64);
                    }
                }
            }
        }
        all_deps.push(deps.into_iter().collect());
    }
    for (unit, deps) in units.iter_mut().zip(all_deps) {
        unit.deps = deps;
    }
    check_unit_cycles(&units)?;
    Ok(units)
}

/// Units are runs of the assets sharing a partitions definition; when such a group depends on
/// itself through another group (daily -> monthly -> daily) the runs would wait for each other
/// forever. That is an error naming the assets, before anything runs.
fn check_unit_cycles(units: &[BackfillUnit]) -> Result<()> {
    let mut waiting: Vec<usize> = units.iter().map(|u| u.deps.len()).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); units.len()];
    for (i, u) in units.iter().enumerate() {
        for &d in &u.deps {
            dependents[d as usize].push(i);
        }
    }
    let mut ready: Vec<usize> = (0..units.len()).filter(|&i| waiting[i] == 0).collect();
    let mut done = 0;
    while let Some(i) = ready.pop() {
        done += 1;
        for &d in &dependents[i] {
            waiting[d] -= 1;
            if waiting[d] == 0 {
                ready.push(d);
            }
        }
    }
    if done == units.len() {
        return Ok(());
    }
    let stuck: BTreeSet<String> = (0..units.len())
        .filter(|&i| waiting[i] > 0)
        .flat_map(|i| units[i].assets.iter().map(ToString::to_string))
        .collect();
    let names: Vec<String> = stuck.iter().take(6).map(|k| format!("`{k}`")).collect();
    Err(Error::Definition(format!(
        "this selection cannot be backfilled in one backfill: the runs of {} would wait for each \
         other (assets sharing a partitions definition run together, and here they depend on each \
         other through assets partitioned differently); backfill them in separate backfills",
        names.join(", ")
    )))
}

fn new_unit(
    id: usize,
    graph: &AssetGraph,
    assets: &[NodeId],
    partitions: Vec<String>,
) -> BackfillUnit {
    BackfillUnit {
        unit_id: id as i64,
        status: UnitStatus::Pending,
        assets: assets
            .iter()
            .map(|&n| graph.node(n).spec.key.clone())
            .collect(),
        partitions,
        deps: Vec::new(),
        attempts: 0,
        run_id: None,
    }
}

/// Keys from `from` to `to` of one definition; `None` if it has neither. For time windows
/// whose keys differ (a monthly asset in a daily range), the keys overlapping the range's time
/// span are used.
fn range(
    all: &[String],
    from: &str,
    to: &str,
    def: &PartitionsDefinition,
    ctx: &PartitionContext,
) -> Result<Option<Vec<String>>> {
    let (a, b) = (
        all.iter().position(|k| k == from),
        all.iter().position(|k| k == to),
    );
    match (a, b) {
        (Some(a), Some(b)) if a <= b => Ok(Some(all[a..=b].to_vec())),
        (Some(_), Some(_)) => Err(Error::Partition {
            asset: def.to_string(),
            message: format!("`{from}` comes after `{to}`"),
        }),
        _ if def.is_time_window() => {
            // The span of the range in any daily-or-finer reading of the keys, in the
            // definition's own timezone.
            let parse = |k: &str| {
                chrono::NaiveDate::parse_from_str(k.get(..10).unwrap_or(k), "%Y-%m-%d").ok()
            };
            let (Some(f), Some(t)) = (parse(from), parse(to)) else {
                return Ok(None);
            };
            let windows = ctx.windows_of(def)?;
            let start = def.local_instant(f.and_time(chrono::NaiveTime::MIN))?;
            let end = def
                .local_instant((t + chrono::Duration::days(1)).and_time(chrono::NaiveTime::MIN))?;
            let keys: Vec<String> = windows
                .iter()
                .filter(|w| w.1 < end && w.2 > start)
                .map(|w| w.0.clone())
                .collect();
            Ok((!keys.is_empty()).then_some(keys))
        }
        _ => Ok(None),
    }
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
        (Some(h), Some(pid)) if h == crate::monitor::hostname() => {
            crate::monitor::process_alive(pid)
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Running,
    Done,
    Failed,
    Skipped,
}

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
    let outcome = drive(
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

/// How a backfill pass ended.
struct DriveOutcome {
    total: usize,
    failed: usize,
    never_ready: usize,
}

/// Schedules a claimed backfill's units until none is left to run. On an error it stops its
/// runs, waits for them and gives its leases back before returning the error.
#[allow(clippy::too_many_arguments)]
async fn drive(
    executor: &Executor,
    id: &str,
    request: &BackfillRequest,
    options: &BackfillRunOptions,
    cancel: &CancellationToken,
    user_cancel: &CancellationToken,
    progress: Option<BackfillProgressFn>,
) -> Result<DriveOutcome> {
    let storage = executor.storage().clone();
    let graph = executor.graph().clone();
    let units = storage.backfill_units(id).await?;
    let mut nodes_of: Vec<Vec<NodeId>> = Vec::with_capacity(units.len());
    for u in &units {
        let mut ids = Vec::with_capacity(u.assets.len());
        for key in &u.assets {
            ids.push(graph.node_id(key).ok_or_else(|| {
                Error::Definition(format!(
                    "backfill {id} refers to asset `{key}`, which is no longer defined"
                ))
            })?);
        }
        nodes_of.push(ids);
    }
    let resumed = units.iter().any(|u| u.attempts > 0);
    let already: HashSet<(String, String)> = if resumed {
        storage.materialized_by_backfill(id).await?
    } else {
        HashSet::new()
    };

    let n = units.len();
    let mut state: Vec<State> = units
        .iter()
        .map(|u| match u.status {
            UnitStatus::Done => State::Done,
            UnitStatus::Failed => State::Failed,
            UnitStatus::Skipped => State::Skipped,
            UnitStatus::Pending | UnitStatus::Running => State::Pending,
        })
        .collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut waiting: Vec<usize> = vec![0; n];
    for (i, u) in units.iter().enumerate() {
        for &d in &u.deps {
            let d = usize::try_from(d).unwrap_or(usize::MAX);
            if d >= n {
                return Err(Error::CorruptStorage {
                    location: format!("backfill_units {id}/{i}"),
                    message: format!("depends on unit {d}, which does not exist"),
                });
            }
            dependents[d].push(i);
            if state[d] != State::Done {
                waiting[i] += 1;
            }
        }
    }
    let mut ready: VecDeque<usize> = (0..n)
        .filter(|&i| state[i] == State::Pending && waiting[i] == 0)
        .collect();
    let mut blocked: Vec<usize> = Vec::new();
    let writer = executor.writer().clone();
    // Units whose upstream failed before this process started are skipped now.
    let mut skips = Vec::new();
    for i in 0..n {
        if state[i] == State::Pending
            && units[i]
                .deps
                .iter()
                .any(|&d| matches!(state[d as usize], State::Failed | State::Skipped))
        {
            skip_from(i, &mut state, &dependents, &mut skips);
        }
    }
    ready.retain(|&i| state[i] == State::Pending);
    send_unit_updates(&writer, id, &skips, UnitStatus::Skipped);

    let max = request.max_concurrent.max(1);
    let mut running: JoinSet<(usize, std::result::Result<(), String>, Option<String>)> =
        JoinSet::new();
    let mut tick = tokio::time::interval(options.poll_interval.max(Duration::from_millis(10)));
    let mut last_renew = tokio::time::Instant::now();
    let mut canceled = false;
    let report = |state: &[State]| {
        if let Some(p) = &progress {
            let mut pr = BackfillProgress {
                total: state.len(),
                ..BackfillProgress::default()
            };
            for s in state {
                match s {
                    State::Pending => pr.pending += 1,
                    State::Running => pr.running += 1,
                    State::Done => pr.done += 1,
                    State::Failed => pr.failed += 1,
                    State::Skipped => pr.skipped += 1,
                }
            }
            p(&pr);
        }
    };
    report(&state);

    // Units whose leases are held, waiting for a slot. Leases are taken for a look-ahead batch
    // of ready units in one transaction, not one transaction per unit.
    let mut leased: VecDeque<usize> = VecDeque::new();
    let result: Result<()> = async {
        loop {
            if !canceled && leased.len() < max && !ready.is_empty() {
                let batch: Vec<usize> = ready.drain(..ready.len().min(LEASE_LOOKAHEAD.max(max))).collect();
                let groups: Vec<Vec<Lease>> = batch.iter().map(|&i| leases_of(id, &units[i])).collect();
                let got = storage.acquire_lease_groups(&groups, options.lease_ttl).await?;
                for (i, ok) in batch.into_iter().zip(got) {
                    if ok { leased.push_back(i) } else { blocked.push(i) }
                }
            }
            while !canceled && running.len() < max {
                let Some(i) = leased.pop_front() else { break };
                state[i] = State::Running;
                writer.send_set(WriteSet {
                    unit_updates: vec![UnitUpdate {
                        backfill_id: id.to_owned(),
                        unit_id: i as i64,
                        status: UnitStatus::Running,
                        run_id: None,
                        add_attempt: true,
                    }],
                    ..WriteSet::default()
                });
                let work = UnitWork {
                    backfill_id: id.to_owned(),
                    unit: i,
                    runs: remaining_runs(&graph, &nodes_of[i], &units[i].partitions, &already),
                    tags: request.tags.clone(),
                    run_concurrency: options.run_concurrency,
                };
                running.spawn(run_unit(executor.clone(), work, cancel.clone()));
            }
            if running.is_empty()
                && (ready.is_empty() || canceled)
                && (blocked.is_empty() || canceled)
                && (leased.is_empty() || canceled)
            {
                return Ok(());
            }
            tokio::select! {
                joined = running.join_next(), if !running.is_empty() => {
                    let Some(joined) = joined else { continue };
                    let (i, outcome, run_id) = joined.map_err(|e| Error::Internal(format!("a backfill unit task failed: {e}")))?;
                    let mut set = WriteSet {
                        lease_releases: leases_of(id, &units[i]),
                        ..WriteSet::default()
                    };
                    match outcome {
                        Ok(()) => {
                            state[i] = State::Done;
                            set.unit_updates.push(UnitUpdate { backfill_id: id.to_owned(), unit_id: i as i64, status: UnitStatus::Done, run_id, add_attempt: false });
                            for &d in &dependents[i] {
                                waiting[d] -= 1;
                                if waiting[d] == 0 && state[d] == State::Pending {
                                    ready.push_back(d);
                                }
                            }
                        }
                        Err(_) if cancel.is_cancelled() => {
                            state[i] = State::Pending;
                            set.unit_updates.push(UnitUpdate { backfill_id: id.to_owned(), unit_id: i as i64, status: UnitStatus::Pending, run_id, add_attempt: false });
                        }
                        Err(message) => {
                            tracing::warn!(backfill = id, unit = i, "unit failed: {message}");
                            state[i] = State::Failed;
                            set.unit_updates.push(UnitUpdate { backfill_id: id.to_owned(), unit_id: i as i64, status: UnitStatus::Failed, run_id, add_attempt: false });
                            let mut skipped = Vec::new();
                            for &d in &dependents[i] {
                                skip_from(d, &mut state, &dependents, &mut skipped);
                            }
                            for s in skipped {
                                set.unit_updates.push(UnitUpdate { backfill_id: id.to_owned(), unit_id: s as i64, status: UnitStatus::Skipped, run_id: None, add_attempt: false });
                            }
                            ready.retain(|&r| state[r] == State::Pending);
                        }
                    }
                    writer.send_set(set);
                    report(&state);
                }
                _ = tick.tick() => {
                    storage.heartbeat_backfill(id).await?;
                    if last_renew.elapsed() >= options.lease_ttl / 3 {
                        storage.renew_leases(id, options.lease_ttl).await?;
                        last_renew = tokio::time::Instant::now();
                    }
                    if !canceled
                        && matches!(storage.get_backfill(id).await?.map(|r| r.status), Some(BackfillStatus::Canceling))
                    {
                        user_cancel.cancel();
                        cancel.cancel();
                    }
                    ready.extend(blocked.drain(..));
                }
                _ = cancel.cancelled(), if !canceled => {
                    canceled = true;
                }
            }
        }
    }
    .await;
    if result.is_err() {
        // Stop and wait for the runs in flight, so none is left half-done or orphaned.
        cancel.cancel();
        while let Some(joined) = running.join_next().await {
            if let Ok((i, _, run_id)) = joined {
                state[i] = State::Pending;
                writer.send_set(WriteSet {
                    unit_updates: vec![UnitUpdate {
                        backfill_id: id.to_owned(),
                        unit_id: i as i64,
                        status: UnitStatus::Pending,
                        run_id,
                        add_attempt: false,
                    }],
                    lease_releases: leases_of(id, &units[i]),
                    ..WriteSet::default()
                });
            }
        }
    }
    // Leases taken for units that never started are given back.
    let unused: Vec<Lease> = leased
        .iter()
        .flat_map(|&i| leases_of(id, &units[i]))
        .collect();
    writer.send_set(WriteSet {
        lease_releases: unused,
        ..WriteSet::default()
    });
    // Everything written by the units is committed before the final status.
    let flushed = writer.commit_set(WriteSet::default()).await;
    result?;
    flushed?;
    Ok(DriveOutcome {
        total: n,
        failed: state
            .iter()
            .filter(|s| matches!(s, State::Failed | State::Skipped))
            .count(),
        never_ready: state.iter().filter(|s| **s == State::Pending).count(),
    })
}

/// One unit's work: runs to execute in order, each some assets over some partitions.
struct UnitWork {
    backfill_id: String,
    unit: usize,
    runs: Vec<(Vec<NodeId>, Vec<String>)>,
    tags: BTreeMap<String, String>,
    run_concurrency: usize,
}

/// What is left of a unit: each asset over its partitions not yet materialized by this
/// backfill, grouped into runs of assets needing the same partitions (in dependency order).
fn remaining_runs(
    graph: &AssetGraph,
    nodes: &[NodeId],
    partitions: &[String],
    already: &HashSet<(String, String)>,
) -> Vec<(Vec<NodeId>, Vec<String>)> {
    if already.is_empty() {
        return vec![(nodes.to_vec(), partitions.to_vec())];
    }
    if partitions.is_empty() {
        let left: Vec<NodeId> = nodes
            .iter()
            .copied()
            .filter(|&n| !already.contains(&(graph.node(n).spec.key.to_string(), String::new())))
            .collect();
        return if left.is_empty() {
            Vec::new()
        } else {
            vec![(left, Vec::new())]
        };
    }
    let mut runs: Vec<(Vec<NodeId>, Vec<String>)> = Vec::new();
    for &n in nodes {
        let key = graph.node(n).spec.key.to_string();
        let left: Vec<String> = partitions
            .iter()
            .filter(|p| !already.contains(&(key.clone(), (*p).clone())))
            .cloned()
            .collect();
        if left.is_empty() {
            continue;
        }
        match runs.iter_mut().find(|(_, keys)| *keys == left) {
            Some((members, _)) => members.push(n),
            None => runs.push((vec![n], left)),
        }
    }
    runs
}

async fn run_unit(
    executor: Executor,
    work: UnitWork,
    cancel: CancellationToken,
) -> (usize, std::result::Result<(), String>, Option<String>) {
    let graph = executor.graph().clone();
    let mut last_run = None;
    for (nodes, partitions) in work.runs {
        let mut set = NodeSet::empty(graph.len());
        for &n in &nodes {
            set.insert(n);
        }
        let selection: Vec<String> = nodes
            .iter()
            .map(|&n| graph.node(n).spec.key.to_string())
            .collect();
        let mut tags = work.tags.clone();
        tags.insert("rainbow/backfill".into(), work.backfill_id.clone());
        let options = RunOptions {
            concurrency: work.run_concurrency,
            partitions,
            selection: selection.join(" "),
            tags,
            backfill_id: Some(work.backfill_id.clone()),
            ..RunOptions::default()
        };
        match executor
            .materialize(&set, options, cancel.child_token(), None)
            .await
        {
            Ok(result) => {
                last_run = Some(result.run_id.clone());
                if !result.success() {
                    return (
                        work.unit,
                        Err(format!("run {} ended {}", result.run_id, result.status)),
                        last_run,
                    );
                }
            }
            Err(e) => return (work.unit, Err(error_chain(&e)), last_run),
        }
    }
    (work.unit, Ok(()), last_run)
}

fn skip_from(
    start: usize,
    state: &mut [State],
    dependents: &[Vec<usize>],
    skipped: &mut Vec<usize>,
) {
    let mut stack = vec![start];
    while let Some(u) = stack.pop() {
        if state[u] != State::Pending {
            continue;
        }
        state[u] = State::Skipped;
        skipped.push(u);
        stack.extend(dependents[u].iter().copied());
    }
}

fn send_unit_updates(
    writer: &crate::storage::EventWriter,
    id: &str,
    units: &[usize],
    status: UnitStatus,
) {
    if units.is_empty() {
        return;
    }
    writer.send_set(WriteSet {
        unit_updates: units
            .iter()
            .map(|&u| UnitUpdate {
                backfill_id: id.to_owned(),
                unit_id: u as i64,
                status,
                run_id: None,
                add_attempt: false,
            })
            .collect(),
        ..WriteSet::default()
    });
}

/// The leases a unit takes: each of its assets over each of its partitions (`""` if none).
fn leases_of(owner: &str, unit: &BackfillUnit) -> Vec<Lease> {
    let parts: Vec<String> = if unit.partitions.is_empty() {
        vec![String::new()]
    } else {
        unit.partitions.clone()
    };
    unit.assets
        .iter()
        .flat_map(|a| {
            parts.iter().map(move |p| Lease {
                owner: owner.to_owned(),
                asset_key: a.to_string(),
                partition_key: p.clone(),
            })
        })
        .collect()
}
