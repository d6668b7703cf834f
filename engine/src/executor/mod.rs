//! The tokio executor: runs a selection's steps in dependency order with a concurrency limit.
//!
//! Invariants:
//! - a step starts only after every planned upstream step succeeded and its events committed;
//! - a failed step skips all its planned downstream steps (recorded as skipped); unrelated
//!   branches keep running;
//! - a step's materializations, check evaluations and final status commit in one transaction,
//!   so a crash or cancel never leaves a step half-recorded;
//! - the run row is updated (heartbeat, final status) through the same writer, in order.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

mod step;
use step::StepRun;

/// Metadata entry on every materialization of a range run (`FROM..TO (N partitions)`): its
/// other metadata describes the whole range, not the one partition it is recorded under.
pub const PARTITION_RANGE_METADATA: &str = "rainbow/partition_range";
use tokio_util::sync::CancellationToken;

use crate::asset::Kind;
use crate::config::RainbowConfig;
use crate::error::Error;
use crate::error::Result;
use crate::event::{Event, EventData, RunStatus, now_micros};
use crate::graph::AssetGraph;
use crate::partitions::{PartitionContext, PartitionsDefinition};
use crate::resource::Resources;
use crate::selection::NodeSet;
use crate::storage::{EventWriter, NewRun, RunRecord, RunUpdate, Storage, WriteSet};
use crate::tags;

/// Options of one run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Most steps running at once (at least 1).
    pub concurrency: usize,
    /// Partitions to materialize: none for an unpartitioned run, one key, or several (a range
    /// run: each partitioned step computes them all at once, one materialization per key).
    pub partitions: Vec<String>,
    /// Job launched, if any.
    pub job_name: Option<String>,
    /// The selection expression, as recorded on the run.
    pub selection: String,
    /// Tags recorded on the run.
    pub tags: BTreeMap<String, String>,
    /// How often the run's heartbeat is written.
    pub heartbeat_interval: Duration,
    /// The backfill launching the run.
    pub backfill_id: Option<String>,
    /// Idempotence key (schedule tick, sensor evaluation): a second run with it is refused.
    pub run_key: Option<String>,
    /// Which checks to evaluate, by index into [`AssetGraph::checks`]: `None` evaluates every
    /// check of each materialized asset; `Some(set)` exactly the checks in `set` — a check
    /// whose asset is not materialized by the run is evaluated in a checks-only step for that
    /// asset (after its planned upstream steps), as `dbt test` does. Inline checks are only
    /// reported by their asset's compute, so a checks-only step leaves them out.
    pub checks: Option<NodeSet>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            concurrency: 8,
            partitions: Vec::new(),
            job_name: None,
            selection: "*".into(),
            tags: BTreeMap::new(),
            heartbeat_interval: Duration::from_secs(15),
            backfill_id: None,
            run_key: None,
            checks: None,
        }
    }
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepStatus {
    /// Materialized, and no blocking check failed.
    Succeeded,
    /// Failed (after retries), or a blocking check failed.
    Failed(String),
    /// Not run because an upstream step failed.
    Skipped(String),
    /// Canceled while running.
    Canceled,
    /// Never started (the run was canceled first).
    NotStarted,
}

/// Progress notifications for UIs (the CLI's progress bar).
#[derive(Debug, Clone)]
pub struct Progress {
    /// The step.
    pub step: String,
    /// Its new status.
    pub status: StepStatus,
    /// Steps finished so far.
    pub done: usize,
    /// Steps planned.
    pub total: usize,
}

/// Callback receiving [`Progress`].
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The run id.
    pub run_id: String,
    /// Final status.
    pub status: RunStatus,
    /// Every planned step and how it ended.
    pub steps: BTreeMap<String, StepStatus>,
}

impl RunResult {
    /// True when the run succeeded.
    pub fn success(&self) -> bool {
        self.status == RunStatus::Success
    }
}

/// Executes runs of one asset graph against one storage. Cloning shares everything (graph,
/// storage pool, resources, event writer).
#[derive(Clone)]
pub struct Executor {
    graph: Arc<AssetGraph>,
    storage: Storage,
    resources: Arc<Resources>,
    writer: EventWriter,
}

/// A planned step: its index in the graph, what it does, and its planned neighbours.
struct PlannedStep {
    step: usize,
    mode: StepMode,
    parents: Vec<usize>,
    children: Vec<usize>,
}

/// What a planned step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StepMode {
    /// Compute (materialize or observe) its assets, then evaluate their selected checks.
    Materialize,
    /// Only evaluate the selected checks of its assets.
    ChecksOnly,
}

pub(crate) enum Outcome {
    Succeeded,
    Failed(String),
    Canceled,
}

impl Executor {
    /// An executor; resolves the graph's resources from `config`. Must be called inside a
    /// tokio runtime (it spawns the event writer).
    pub fn new(graph: Arc<AssetGraph>, storage: Storage, config: &RainbowConfig) -> Result<Self> {
        let resources = Arc::new(Resources::resolve(&graph.resources, config)?);
        let writer = EventWriter::spawn(storage.clone());
        Ok(Executor {
            graph,
            storage,
            resources,
            writer,
        })
    }

    /// The graph.
    pub fn graph(&self) -> &Arc<AssetGraph> {
        &self.graph
    }

    /// The storage.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The event writer shared by this executor's runs.
    pub fn writer(&self) -> &EventWriter {
        &self.writer
    }

    /// The steps a selection plans, in topological order: a step per selected asset's
    /// definition (source assets without an observe function are not executable and are left
    /// out), plus a checks-only step for each asset with a selected check that no planned step
    /// materializes.
    fn plan(&self, selection: &NodeSet, checks: Option<&NodeSet>) -> Vec<PlannedStep> {
        let g = &self.graph;
        let mut check_nodes = NodeSet::empty(g.len());
        if let Some(checks) = checks {
            for c in checks.iter() {
                if let Some(node) = g.check_node(c) {
                    check_nodes.insert(node);
                }
            }
        }
        let mut order: Vec<(usize, StepMode)> = Vec::new();
        let mut position: HashMap<usize, usize> = HashMap::new();
        for &node in g.topological_order() {
            let step = g.node(node).step;
            let mode =
                if selection.contains(node) && !matches!(g.steps[step].kind, Kind::Source(None)) {
                    StepMode::Materialize
                } else if check_nodes.contains(node) {
                    StepMode::ChecksOnly
                } else {
                    continue;
                };
            match position.get(&step) {
                Some(&i) => {
                    if mode == StepMode::Materialize {
                        order[i].1 = StepMode::Materialize;
                    }
                }
                None => {
                    position.insert(step, order.len());
                    order.push((step, mode));
                }
            }
        }
        let mut planned: Vec<PlannedStep> = order
            .iter()
            .map(|&(step, mode)| PlannedStep {
                step,
                mode,
                parents: Vec::new(),
                children: Vec::new(),
            })
            .collect();
        for (i, &(step, mode)) in order.iter().enumerate() {
            // Upstream assets, and the additional deps of the checks the step evaluates. A
            // checks-only step waits only for what the run builds: checks never wait for (nor
            // are skipped by) other checks-only steps, as `dbt test` runs every selected test.
            let check_deps = g.steps[step]
                .nodes
                .iter()
                .flat_map(|&n| g.check_ids_for(n).iter().copied())
                .filter(|&c| checks.is_none_or(|set| set.contains(c)))
                .flat_map(|c| g.checks()[c].spec.additional_deps.iter())
                .filter_map(|key| g.node_id(key));
            let mut parents: Vec<usize> = g.steps[step]
                .nodes
                .iter()
                .flat_map(|&n| g.parents(n).iter().copied())
                .chain(check_deps)
                .filter_map(|p| position.get(&g.node(p).step).copied())
                .filter(|&p| p != i)
                .filter(|&p| mode == StepMode::Materialize || order[p].1 == StepMode::Materialize)
                .collect();
            parents.sort_unstable();
            parents.dedup();
            for &p in &parents {
                planned[p].children.push(i);
            }
            planned[i].parents = parents;
        }
        planned
    }

    /// Materializes the selected assets in one run.
    pub async fn materialize(
        &self,
        selection: &NodeSet,
        options: RunOptions,
        cancel: CancellationToken,
        progress: Option<ProgressFn>,
    ) -> Result<RunResult> {
        let plan = self.plan(selection, options.checks.as_ref());
        let step_partitions = self.step_partitions(&plan, &options.partitions).await?;
        let mut tags = options.tags.clone();
        if options.partitions.len() > 1 {
            tags.insert(
                tags::PARTITION_RANGE_START.into(),
                options.partitions[0].clone(),
            );
            tags.insert(
                tags::PARTITION_RANGE_END.into(),
                options.partitions[options.partitions.len() - 1].clone(),
            );
        }
        let new_run = NewRun {
            job_name: options.job_name.clone(),
            selection: options.selection.clone(),
            partition_key: single(&options.partitions),
            tags,
            status: Some(RunStatus::Started),
            backfill_id: options.backfill_id.clone(),
            run_key: options.run_key.clone(),
        };
        let run = if options.run_key.is_some() {
            // Keyed runs are created alone: a duplicate key must not fail others' writes.
            self.storage
                .create_run_once(new_run)
                .await?
                .ok_or_else(|| Error::Config {
                    location: "run key".into(),
                    message: format!(
                        "a run with key `{}` exists already",
                        options.run_key.clone().unwrap_or_default()
                    ),
                })?
        } else {
            let run = RunRecord::new(new_run);
            self.writer
                .commit_set(WriteSet {
                    new_runs: vec![run.clone()],
                    ..WriteSet::default()
                })
                .await?;
            run
        };
        self.execute(run, &plan, step_partitions, options, cancel, progress)
            .await
    }

    /// Executes a stored run (status `STARTED`, e.g. claimed from the queue) over `selection`.
    pub async fn execute_run(
        &self,
        run: RunRecord,
        selection: &NodeSet,
        options: RunOptions,
        cancel: CancellationToken,
        progress: Option<ProgressFn>,
    ) -> Result<RunResult> {
        let plan = self.plan(selection, options.checks.as_ref());
        let step_partitions = self.step_partitions(&plan, &options.partitions).await?;
        self.execute(run, &plan, step_partitions, options, cancel, progress)
            .await
    }

    /// The partitions each planned step materializes (empty for unpartitioned steps), checked
    /// against the steps' partitions definitions.
    async fn step_partitions(
        &self,
        plan: &[PlannedStep],
        keys: &[String],
    ) -> Result<Vec<Vec<String>>> {
        let g = &self.graph;
        let defs: Vec<Option<&PartitionsDefinition>> = plan
            .iter()
            .map(|p| g.partitions(g.steps[p.step].nodes[0]))
            .collect();
        if defs.iter().all(Option::is_none) {
            if let Some(k) = keys.first() {
                return Err(Error::Partition {
                    asset: g.steps[plan.first().map(|p| p.step).unwrap_or(0)]
                        .name
                        .clone(),
                    message: format!(
                        "none of the selected assets is partitioned, but partition `{k}` was given"
                    ),
                });
            }
            return Ok(vec![Vec::new(); plan.len()]);
        }
        let mut ctx = PartitionContext::at(chrono::Utc::now());
        if defs.iter().flatten().any(|d| d.uses_dynamic()) {
            ctx.dynamic = self.storage.dynamic_partitions().await?;
        }
        let mut out = Vec::with_capacity(plan.len());
        for (p, def) in plan.iter().zip(&defs) {
            let Some(def) = def else {
                out.push(Vec::new());
                continue;
            };
            let asset = g.steps[p.step].name.clone();
            if keys.is_empty() {
                return Err(Error::Partition {
                    asset,
                    message: format!("the asset is partitioned ({def}); give a partition key"),
                });
            }
            for k in keys {
                if !def.has_key(k, &ctx)? {
                    return Err(Error::Partition {
                        asset,
                        message: format!("`{k}` is not one of its partitions ({def})"),
                    });
                }
            }
            out.push(keys.to_vec());
        }
        Ok(out)
    }

    async fn execute(
        &self,
        run: RunRecord,
        plan: &[PlannedStep],
        step_partitions: Vec<Vec<String>>,
        options: RunOptions,
        cancel: CancellationToken,
        progress: Option<ProgressFn>,
    ) -> Result<RunResult> {
        let run_id = run.run_id.clone();
        self.writer.send(vec![Event::new(
            &run_id,
            EventData::RunStarted { steps: plan.len() },
        )]);

        let heartbeat = {
            let writer = self.writer.clone();
            let run_id = run_id.clone();
            let every = options.heartbeat_interval.max(Duration::from_millis(10));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let update = RunUpdate {
                        run_id: run_id.clone(),
                        heartbeat_at: Some(now_micros()),
                        ..RunUpdate::default()
                    };
                    if let Err(e) = writer.commit(Vec::new(), vec![update]).await {
                        tracing::error!("heartbeat failed: {}", error_chain(&e));
                    }
                }
            })
        };

        let result = self
            .drive(&run_id, plan, &step_partitions, &options, &cancel, progress)
            .await;
        heartbeat.abort();
        let (steps, canceled) = result;

        let failed: Vec<&String> = steps
            .iter()
            .filter(|(_, s)| matches!(s, StepStatus::Failed(_)))
            .map(|(k, _)| k)
            .collect();
        let (status, data) = if canceled {
            (
                RunStatus::Canceled,
                EventData::RunCanceled {
                    reason: "canceled by the user".into(),
                },
            )
        } else if failed.is_empty() {
            let never: Vec<String> = steps
                .iter()
                .filter(|(_, s)| matches!(s, StepStatus::NotStarted))
                .map(|(k, _)| format!("`{k}`"))
                .collect();
            if never.is_empty() {
                (RunStatus::Success, EventData::RunSucceeded)
            } else {
                // Unreachable with a validated graph; never report success for work not done.
                (
                    RunStatus::Failure,
                    EventData::RunFailed {
                        reason: format!("steps never started: {}", never.join(", ")),
                    },
                )
            }
        } else {
            let names: Vec<String> = failed.iter().map(|s| format!("`{s}`")).collect();
            (
                RunStatus::Failure,
                EventData::RunFailed {
                    reason: format!("steps failed: {}", names.join(", ")),
                },
            )
        };
        let reason = match &data {
            EventData::RunFailed { reason } | EventData::RunCanceled { reason } => {
                Some(reason.clone())
            }
            _ => None,
        };
        self.writer
            .commit(
                vec![Event::new(&run_id, data)],
                vec![RunUpdate {
                    run_id: run_id.clone(),
                    status: Some(status),
                    ended_at: Some(now_micros()),
                    heartbeat_at: None,
                    reason,
                }],
            )
            .await?;
        Ok(RunResult {
            run_id,
            status,
            steps,
        })
    }

    /// Runs the plan; returns every step's status and whether the run was canceled.
    async fn drive(
        &self,
        run_id: &str,
        plan: &[PlannedStep],
        step_partitions: &[Vec<String>],
        options: &RunOptions,
        cancel: &CancellationToken,
        progress: Option<ProgressFn>,
    ) -> (BTreeMap<String, StepStatus>, bool) {
        let g = &self.graph;
        let total = plan.len();
        let mut status: Vec<Option<StepStatus>> = vec![None; total];
        let mut waiting: Vec<usize> = plan.iter().map(|p| p.parents.len()).collect();
        let mut ready: VecDeque<usize> = (0..total).filter(|&i| waiting[i] == 0).collect();
        let mut running: JoinSet<(usize, Outcome)> = JoinSet::new();
        let mut task_pos: HashMap<tokio::task::Id, usize> = HashMap::new();
        let concurrency = options.concurrency.max(1);
        let checks = options.checks.clone().map(Arc::new);
        let mut canceled = false;
        let mut done = 0;

        let notify = |step: usize, s: &StepStatus, done: usize| {
            if let Some(p) = &progress {
                p(&Progress {
                    step: g.steps[step].name.clone(),
                    status: s.clone(),
                    done,
                    total,
                });
            }
        };

        loop {
            while !canceled && running.len() < concurrency {
                let Some(pos) = ready.pop_front() else { break };
                let handle = running.spawn(
                    StepRun {
                        graph: self.graph.clone(),
                        step: plan[pos].step,
                        mode: plan[pos].mode,
                        checks: checks.clone(),
                        run_id: run_id.to_owned(),
                        partitions: step_partitions[pos].clone(),
                        resources: self.resources.clone(),
                        writer: self.writer.clone(),
                        cancel: cancel.child_token(),
                    }
                    .into_pos(pos),
                );
                task_pos.insert(handle.id(), pos);
            }
            if running.is_empty() {
                break;
            }
            let joined = tokio::select! {
                biased;
                _ = cancel.cancelled(), if !canceled => {
                    canceled = true;
                    continue;
                }
                joined = running.join_next_with_id() => joined,
            };
            let Some(joined) = joined else { break };
            let (pos, outcome) = match joined {
                Ok((id, (pos, outcome))) => {
                    task_pos.remove(&id);
                    (pos, outcome)
                }
                Err(join_error) => {
                    let Some(pos) = task_pos.remove(&join_error.id()) else {
                        continue;
                    };
                    let message = format!("the step panicked: {}", panic_message(join_error));
                    let events = failure_events(
                        g,
                        plan[pos].step,
                        run_id,
                        &step_partitions[pos],
                        &message,
                        1,
                    );
                    if let Err(e) = self.writer.commit(events, Vec::new()).await {
                        tracing::error!("recording a panicked step failed: {}", error_chain(&e));
                    }
                    (pos, Outcome::Failed(message))
                }
            };
            done += 1;
            let step_status = match outcome {
                Outcome::Succeeded => {
                    for &child in &plan[pos].children {
                        waiting[child] -= 1;
                        if waiting[child] == 0 && status[child].is_none() {
                            ready.push_back(child);
                        }
                    }
                    StepStatus::Succeeded
                }
                Outcome::Canceled => StepStatus::Canceled,
                Outcome::Failed(message) => {
                    let failed_name = g.steps[plan[pos].step].name.clone();
                    let mut skipped_events = Vec::new();
                    let mut stack: Vec<usize> = plan[pos].children.clone();
                    while let Some(child) = stack.pop() {
                        if status[child].is_some() {
                            continue;
                        }
                        let reason = format!("upstream step `{failed_name}` failed");
                        let name = g.steps[plan[child].step].name.clone();
                        skipped_events.push(
                            Event::new(
                                run_id,
                                EventData::StepSkipped {
                                    reason: reason.clone(),
                                },
                            )
                            .step(name)
                            .partition(single(&step_partitions[child])),
                        );
                        let s = StepStatus::Skipped(reason);
                        done += 1;
                        notify(plan[child].step, &s, done);
                        status[child] = Some(s);
                        stack.extend(plan[child].children.iter().copied());
                    }
                    self.writer.send(skipped_events);
                    StepStatus::Failed(message)
                }
            };
            notify(plan[pos].step, &step_status, done);
            status[pos] = Some(step_status);
        }

        let steps = plan
            .iter()
            .zip(status)
            .map(|(p, s)| {
                (
                    g.steps[p.step].name.clone(),
                    s.unwrap_or(StepStatus::NotStarted),
                )
            })
            .collect();
        (steps, canceled)
    }
}

/// The one key of a single-partition run.
pub(crate) fn single(keys: &[String]) -> Option<String> {
    match keys {
        [k] => Some(k.clone()),
        _ => None,
    }
}

/// What a step failure records: `step_failed`, and for partitioned steps one `asset_failed`
/// per asset naming the partitions (so partition status shows them failed).
pub(crate) fn failure_events(
    graph: &AssetGraph,
    step: usize,
    run_id: &str,
    partitions: &[String],
    error: &str,
    attempt: u32,
) -> Vec<Event> {
    let s = &graph.steps[step];
    let mut events = vec![
        Event::new(
            run_id,
            EventData::StepFailed {
                error: error.to_owned(),
                attempt,
            },
        )
        .step(s.name.clone())
        .partition(single(partitions)),
    ];
    // Every asset of the step failed (an unpartitioned one with no partitions), so its latest
    // outcome is a failure wherever it is read (partition status, the UI's lineage).
    for &node in &s.nodes {
        events.push(
            Event::new(
                run_id,
                EventData::AssetFailed {
                    partitions: partitions.to_vec(),
                    error: error.to_owned(),
                },
            )
            .step(s.name.clone())
            .asset(graph.node(node).spec.key.clone())
            .partition(single(partitions)),
        );
    }
    events
}

/// The message of a panicked (or aborted) task.
pub(crate) fn panic_message(join: tokio::task::JoinError) -> String {
    if !join.is_panic() {
        return "the task was aborted".into();
    }
    let panic = join.into_panic();
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

pub use crate::error::error_chain;
