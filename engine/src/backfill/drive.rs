//! Running a claimed backfill's units: [`drive`] schedules them as their dependencies finish,
//! at most `max_concurrent` at once, each after taking leases on the asset partitions it
//! computes (in look-ahead batches, one transaction each); the heartbeat renews the leases and
//! notices cancel requests. A [`Driver`] holds the units' states; its methods are the jobs of
//! one pass: loading (and skipping what upstream failures doomed), leasing, starting, recording
//! a finished unit, stopping on an error, and giving back unused leases.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{BackfillProgressFn, BackfillRequest, BackfillRunOptions, LEASE_LOOKAHEAD};
use crate::error::{Error, Result, error_chain};
use crate::executor::{Executor, RunOptions};
use crate::graph::{AssetGraph, NodeId};
use crate::selection::NodeSet;
use crate::storage::backfills::{
    BackfillProgress, BackfillStatus, BackfillUnit, UnitStatus, UnitUpdate,
};
use crate::storage::partitions::Lease;
use crate::storage::{EventWriter, WriteSet};

/// A unit's state in this pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Running,
    Done,
    Failed,
    Skipped,
}

/// How a backfill pass ended.
pub(super) struct DriveOutcome {
    pub(super) total: usize,
    pub(super) failed: usize,
    pub(super) never_ready: usize,
}

/// A finished unit task: (unit, outcome, its last run).
type Finished = (usize, std::result::Result<(), String>, Option<String>);

/// The scheduling state of one pass over a backfill's units.
struct Driver<'a> {
    executor: &'a Executor,
    id: &'a str,
    request: &'a BackfillRequest,
    options: &'a BackfillRunOptions,
    cancel: &'a CancellationToken,
    progress: Option<BackfillProgressFn>,
    writer: EventWriter,
    units: Vec<BackfillUnit>,
    /// Each unit's assets, as graph nodes.
    nodes_of: Vec<Vec<NodeId>>,
    /// (asset, partition) materialized by this backfill's earlier runs (on resume).
    already: HashSet<(String, String)>,
    state: Vec<State>,
    dependents: Vec<Vec<usize>>,
    /// Dependencies not done yet, per unit.
    waiting: Vec<usize>,
    ready: VecDeque<usize>,
    /// Ready units whose leases another owner holds; retried at each tick.
    blocked: Vec<usize>,
    /// Units whose leases are held, waiting for a slot.
    leased: VecDeque<usize>,
}

/// Schedules a claimed backfill's units until none is left to run. On an error it stops its
/// runs, waits for them and gives its leases back before returning the error.
pub(super) async fn drive(
    executor: &Executor,
    id: &str,
    request: &BackfillRequest,
    options: &BackfillRunOptions,
    cancel: &CancellationToken,
    user_cancel: &CancellationToken,
    progress: Option<BackfillProgressFn>,
) -> Result<DriveOutcome> {
    let mut d = Driver::load(executor, id, request, options, cancel, progress).await?;
    let storage = executor.storage().clone();
    let max = request.max_concurrent.max(1);
    let mut running: JoinSet<Finished> = JoinSet::new();
    let mut tick = tokio::time::interval(options.poll_interval.max(Duration::from_millis(10)));
    let mut last_renew = tokio::time::Instant::now();
    let mut canceled = false;
    d.report();
    let result: Result<()> = async {
        loop {
            if !canceled {
                d.lease_ready(max).await?;
                d.start_leased(max, &mut running);
            }
            if running.is_empty() && (canceled || d.idle()) {
                return Ok(());
            }
            tokio::select! {
                joined = running.join_next(), if !running.is_empty() => {
                    let Some(joined) = joined else { continue };
                    let finished = joined.map_err(|e| {
                        Error::Internal(format!("a backfill unit task failed: {e}"))
                    })?;
                    d.finish(finished);
                }
                _ = tick.tick() => {
                    storage.heartbeat_backfill(id).await?;
                    if last_renew.elapsed() >= options.lease_ttl / 3 {
                        storage.renew_leases(id, options.lease_ttl).await?;
                        last_renew = tokio::time::Instant::now();
                    }
                    if !canceled
                        && matches!(
                            storage.get_backfill(id).await?.map(|r| r.status),
                            Some(BackfillStatus::Canceling)
                        )
                    {
                        user_cancel.cancel();
                        cancel.cancel();
                    }
                    let blocked: Vec<usize> = d.blocked.drain(..).collect();
                    d.ready.extend(blocked);
                }
                _ = cancel.cancelled(), if !canceled => {
                    canceled = true;
                }
            }
        }
    }
    .await;
    if result.is_err() {
        d.stop(&mut running).await;
    }
    d.release_unused();
    // Everything written by the units is committed before the final status.
    let flushed = d.writer.commit_set(WriteSet::default()).await;
    result?;
    flushed?;
    Ok(d.outcome())
}

impl<'a> Driver<'a> {
    /// Loads the units, their states and dependency counts; units whose upstream failed before
    /// this process started are skipped now.
    async fn load(
        executor: &'a Executor,
        id: &'a str,
        request: &'a BackfillRequest,
        options: &'a BackfillRunOptions,
        cancel: &'a CancellationToken,
        progress: Option<BackfillProgressFn>,
    ) -> Result<Self> {
        let storage = executor.storage();
        let graph = executor.graph();
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
        let already = if units.iter().any(|u| u.attempts > 0) {
            storage.materialized_by_backfill(id).await?
        } else {
            HashSet::new()
        };
        let n = units.len();
        let state: Vec<State> = units
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
        let mut driver = Driver {
            executor,
            id,
            request,
            options,
            cancel,
            progress,
            writer: executor.writer().clone(),
            units,
            nodes_of,
            already,
            state,
            dependents,
            waiting,
            ready: VecDeque::new(),
            blocked: Vec::new(),
            leased: VecDeque::new(),
        };
        let mut skipped = Vec::new();
        for i in 0..n {
            let doomed = driver.units[i]
                .deps
                .iter()
                .any(|&d| matches!(driver.state[d as usize], State::Failed | State::Skipped));
            if driver.state[i] == State::Pending && doomed {
                driver.skip_from(i, &mut skipped);
            }
        }
        let updates: Vec<UnitUpdate> = skipped
            .iter()
            .map(|&u| driver.update(u, UnitStatus::Skipped, None))
            .collect();
        if !updates.is_empty() {
            driver.writer.send_set(WriteSet {
                unit_updates: updates,
                ..WriteSet::default()
            });
        }
        driver.ready = (0..n)
            .filter(|&i| driver.state[i] == State::Pending && driver.waiting[i] == 0)
            .collect();
        Ok(driver)
    }

    /// A unit's new status for storage.
    fn update(&self, unit: usize, status: UnitStatus, run_id: Option<String>) -> UnitUpdate {
        UnitUpdate {
            backfill_id: self.id.to_owned(),
            unit_id: unit as i64,
            status,
            run_id,
            add_attempt: status == UnitStatus::Running,
        }
    }

    /// Marks `start` and everything depending on it skipped (pending ones only).
    fn skip_from(&mut self, start: usize, skipped: &mut Vec<usize>) {
        let mut stack = vec![start];
        while let Some(u) = stack.pop() {
            if self.state[u] != State::Pending {
                continue;
            }
            self.state[u] = State::Skipped;
            skipped.push(u);
            stack.extend(self.dependents[u].iter().copied());
        }
    }

    /// Nothing can start any more: nothing ready, blocked or leased.
    fn idle(&self) -> bool {
        self.ready.is_empty() && self.blocked.is_empty() && self.leased.is_empty()
    }

    fn report(&self) {
        let Some(p) = &self.progress else { return };
        let mut pr = BackfillProgress {
            total: self.state.len(),
            ..BackfillProgress::default()
        };
        for s in &self.state {
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

    /// Takes the leases of a look-ahead batch of ready units in one transaction, when fewer
    /// than `max` units hold leases; units whose leases another owner holds are blocked.
    async fn lease_ready(&mut self, max: usize) -> Result<()> {
        if self.leased.len() >= max || self.ready.is_empty() {
            return Ok(());
        }
        let take = self.ready.len().min(LEASE_LOOKAHEAD.max(max));
        let batch: Vec<usize> = self.ready.drain(..take).collect();
        let groups: Vec<Vec<Lease>> = batch
            .iter()
            .map(|&i| leases_of(self.id, &self.units[i]))
            .collect();
        let got = self
            .executor
            .storage()
            .acquire_lease_groups(&groups, self.options.lease_ttl)
            .await?;
        for (i, ok) in batch.into_iter().zip(got) {
            if ok {
                self.leased.push_back(i);
            } else {
                self.blocked.push(i);
            }
        }
        Ok(())
    }

    /// Starts leased units while fewer than `max` run.
    fn start_leased(&mut self, max: usize, running: &mut JoinSet<Finished>) {
        while running.len() < max {
            let Some(i) = self.leased.pop_front() else {
                break;
            };
            self.state[i] = State::Running;
            self.writer.send_set(WriteSet {
                unit_updates: vec![self.update(i, UnitStatus::Running, None)],
                ..WriteSet::default()
            });
            let work = UnitWork {
                backfill_id: self.id.to_owned(),
                unit: i,
                runs: remaining_runs(
                    self.executor.graph(),
                    &self.nodes_of[i],
                    &self.units[i].partitions,
                    &self.already,
                ),
                tags: self.request.tags.clone(),
                run_concurrency: self.options.run_concurrency,
            };
            running.spawn(run_unit(self.executor.clone(), work, self.cancel.clone()));
        }
    }

    /// Records a finished unit: done (its dependents may become ready), back to pending when
    /// the backfill is being canceled, or failed (its dependents are skipped); its leases go
    /// back in the same write.
    fn finish(&mut self, (i, outcome, run_id): Finished) {
        let mut set = WriteSet {
            lease_releases: leases_of(self.id, &self.units[i]),
            ..WriteSet::default()
        };
        match outcome {
            Ok(()) => {
                self.state[i] = State::Done;
                set.unit_updates
                    .push(self.update(i, UnitStatus::Done, run_id));
                for d in self.dependents[i].clone() {
                    self.waiting[d] -= 1;
                    if self.waiting[d] == 0 && self.state[d] == State::Pending {
                        self.ready.push_back(d);
                    }
                }
            }
            Err(_) if self.cancel.is_cancelled() => {
                self.state[i] = State::Pending;
                set.unit_updates
                    .push(self.update(i, UnitStatus::Pending, run_id));
            }
            Err(message) => {
                tracing::warn!(backfill = self.id, unit = i, "unit failed: {message}");
                self.state[i] = State::Failed;
                set.unit_updates
                    .push(self.update(i, UnitStatus::Failed, run_id));
                let mut skipped = Vec::new();
                for d in self.dependents[i].clone() {
                    self.skip_from(d, &mut skipped);
                }
                for s in skipped {
                    set.unit_updates
                        .push(self.update(s, UnitStatus::Skipped, None));
                }
                let state = &self.state;
                self.ready.retain(|&r| state[r] == State::Pending);
            }
        }
        self.writer.send_set(set);
        self.report();
    }

    /// After an error: stops the runs in flight and waits for them, so none is left half-done
    /// or orphaned; their units go back to pending and their leases are given back.
    async fn stop(&mut self, running: &mut JoinSet<Finished>) {
        self.cancel.cancel();
        while let Some(joined) = running.join_next().await {
            if let Ok((i, _, run_id)) = joined {
                self.state[i] = State::Pending;
                self.writer.send_set(WriteSet {
                    unit_updates: vec![self.update(i, UnitStatus::Pending, run_id)],
                    lease_releases: leases_of(self.id, &self.units[i]),
                    ..WriteSet::default()
                });
            }
        }
    }

    /// Gives back the leases taken for units that never started.
    fn release_unused(&self) {
        let unused: Vec<Lease> = self
            .leased
            .iter()
            .flat_map(|&i| leases_of(self.id, &self.units[i]))
            .collect();
        self.writer.send_set(WriteSet {
            lease_releases: unused,
            ..WriteSet::default()
        });
    }

    fn outcome(&self) -> DriveOutcome {
        DriveOutcome {
            total: self.state.len(),
            failed: self
                .state
                .iter()
                .filter(|s| matches!(s, State::Failed | State::Skipped))
                .count(),
            never_ready: self.state.iter().filter(|s| **s == State::Pending).count(),
        }
    }
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
