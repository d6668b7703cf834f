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
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::asset::{Kind, MaterializeResult};
use crate::check::{AssetCheckResult, AssetCheckSeverity};
use crate::context::{AssetContext, ContextParts};
use crate::error::Error;
use crate::error::Result;
use crate::event::{CheckEvaluation, Event, EventData, Materialization, RunStatus, now_micros};
use crate::graph::{AssetGraph, NodeId};
use crate::key::AssetKey;
use crate::metadata::MetadataValue;
use crate::partitions::{PartitionContext, PartitionsDefinition};
use crate::resource::{RainbowConfig, Resources};
use crate::selection::NodeSet;
use crate::storage::{EventWriter, NewRun, RunRecord, RunUpdate, Storage, WriteSet};

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

/// A planned step: its index in the graph and its planned neighbours.
struct PlannedStep {
    step: usize,
    parents: Vec<usize>,
    children: Vec<usize>,
}

enum Outcome {
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

    /// The steps a selection plans, in topological order (source assets without an observe
    /// function are not executable and are left out).
    fn plan(&self, selection: &NodeSet) -> Vec<PlannedStep> {
        let g = &self.graph;
        let mut order: Vec<usize> = Vec::new();
        let mut position: HashMap<usize, usize> = HashMap::new();
        for &node in g.topological_order() {
            if !selection.contains(node) {
                continue;
            }
            let step = g.node(node).step;
            if matches!(g.steps[step].kind, Kind::Source(None)) || position.contains_key(&step) {
                continue;
            }
            position.insert(step, order.len());
            order.push(step);
        }
        let mut planned: Vec<PlannedStep> = order
            .iter()
            .map(|&step| PlannedStep {
                step,
                parents: Vec::new(),
                children: Vec::new(),
            })
            .collect();
        for (i, &step) in order.iter().enumerate() {
            let mut parents: Vec<usize> = g.steps[step]
                .nodes
                .iter()
                .flat_map(|&n| g.parents(n).iter())
                .filter_map(|&p| position.get(&g.node(p).step).copied())
                .filter(|&p| p != i)
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
        let plan = self.plan(selection);
        let step_partitions = self.step_partitions(&plan, &options.partitions).await?;
        let mut tags = options.tags.clone();
        if options.partitions.len() > 1 {
            tags.insert(
                "rainbow/partition_range_start".into(),
                options.partitions[0].clone(),
            );
            tags.insert(
                "rainbow/partition_range_end".into(),
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
        let plan = self.plan(selection);
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
fn single(keys: &[String]) -> Option<String> {
    match keys {
        [k] => Some(k.clone()),
        _ => None,
    }
}

/// What a step failure records: `step_failed`, and for partitioned steps one `asset_failed`
/// per asset naming the partitions (so partition status shows them failed).
fn failure_events(
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
    if !partitions.is_empty() {
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
    }
    events
}

/// Everything a step task needs (owned, so the task is `'static`).
struct StepRun {
    graph: Arc<AssetGraph>,
    step: usize,
    run_id: String,
    partitions: Vec<String>,
    resources: Arc<Resources>,
    writer: EventWriter,
    cancel: CancellationToken,
}

impl StepRun {
    async fn into_pos(self, pos: usize) -> (usize, Outcome) {
        (pos, self.run().await)
    }

    fn event(&self, data: EventData) -> Event {
        Event::new(&self.run_id, data)
            .step(self.graph.steps[self.step].name.clone())
            .partition(single(&self.partitions))
    }

    /// The time window spanning the step's partitions, for time-partitioned assets.
    fn time_window(&self) -> Option<crate::partitions::PartitionTimeWindow> {
        let def = self
            .graph
            .partitions(self.graph.steps[self.step].nodes[0])?;
        let first = def.time_window(self.partitions.first()?).ok()??;
        let last = def.time_window(self.partitions.last()?).ok()??;
        Some(crate::partitions::PartitionTimeWindow {
            start: first.start,
            end: last.end,
        })
    }

    fn failure(&self, error: &str, attempt: u32) -> Vec<Event> {
        failure_events(
            &self.graph,
            self.step,
            &self.run_id,
            &self.partitions,
            error,
            attempt,
        )
    }

    fn context(&self, attempt: u32, check: Option<crate::AssetCheckSpec>) -> AssetContext {
        let step = &self.graph.steps[self.step];
        AssetContext::new(ContextParts {
            run_id: self.run_id.clone(),
            step_key: step.name.clone(),
            asset_keys: step
                .nodes
                .iter()
                .map(|&n| self.graph.node(n).spec.key.clone())
                .collect(),
            check,
            partitions: self.partitions.clone(),
            time_window: self.time_window(),
            attempt,
            resources: self.resources.clone(),
            writer: self.writer.clone(),
            cancel: self.cancel.clone(),
        })
    }

    async fn run(self) -> Outcome {
        let started = Instant::now();
        let step = &self.graph.steps[self.step];
        let retry = step.retry.clone();
        let mut attempt = 1;
        let produced = loop {
            self.writer
                .send(vec![self.event(EventData::StepStarted { attempt })]);
            let ctx = self.context(attempt, None);
            let fut = match &step.kind {
                Kind::Materialize(compute) => Produced::materialized(compute(ctx)),
                Kind::Source(Some(observe)) => Produced::observed(observe(ctx)),
                Kind::Source(None) => {
                    return Outcome::Failed("source asset is not executable".into());
                }
            };
            let result = tokio::select! {
                r = fut => r,
                _ = self.cancel.cancelled() => return self.canceled().await,
            };
            match result {
                Ok(produced) => break produced,
                Err(error) => {
                    let error = error_chain(error.as_ref());
                    if attempt <= retry.max_retries {
                        let delay = retry.delay_for(attempt);
                        self.writer.send(vec![self.event(EventData::StepUpForRetry {
                            error,
                            attempt,
                            delay_secs: delay.as_secs_f64(),
                        })]);
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = self.cancel.cancelled() => return self.canceled().await,
                        }
                        attempt += 1;
                        continue;
                    }
                    return match self
                        .writer
                        .commit(self.failure(&error, attempt), Vec::new())
                        .await
                    {
                        Ok(()) => Outcome::Failed(error),
                        Err(e) => Outcome::Failed(format!(
                            "{error} (and recording it failed: {})",
                            error_chain(&e)
                        )),
                    };
                }
            }
        };
        let duration = started.elapsed();

        let mut events = Vec::new();
        let mut failure: Option<String> = None;
        let mut inline_results: Vec<(AssetKey, AssetCheckResult)> = Vec::new();
        let mut materialized: Vec<NodeId> = Vec::new();
        match produced {
            Produced::Materialized(results) => {
                for result in results {
                    match self.resolve_key(result.asset_key.as_ref()) {
                        Ok(node) => {
                            let spec = &self.graph.node(node).spec;
                            let mut metadata = result.metadata;
                            metadata
                                .entry("rainbow/duration".into())
                                .or_insert(MetadataValue::Duration(duration.as_secs_f64()));
                            let materialization = Materialization {
                                metadata,
                                code_version: spec.code_version.clone(),
                                data_version: result.data_version,
                            };
                            // One materialization per partition the step computed.
                            if self.partitions.is_empty() {
                                events.push(
                                    self.event(EventData::Materialization(materialization))
                                        .asset(spec.key.clone()),
                                );
                            } else {
                                for p in &self.partitions {
                                    events.push(
                                        self.event(EventData::Materialization(
                                            materialization.clone(),
                                        ))
                                        .asset(spec.key.clone())
                                        .partition(Some(p.clone())),
                                    );
                                }
                            }
                            inline_results.extend(
                                result
                                    .check_results
                                    .into_iter()
                                    .map(|r| (spec.key.clone(), r)),
                            );
                            materialized.push(node);
                        }
                        Err(message) => failure = Some(message),
                    }
                }
            }
            Produced::Observed(observation) => {
                for &node in &step.nodes {
                    let spec = &self.graph.node(node).spec;
                    events.push(
                        self.event(EventData::Observation(Materialization {
                            metadata: observation.metadata.clone(),
                            code_version: spec.code_version.clone(),
                            data_version: observation.data_version.clone(),
                        }))
                        .asset(spec.key.clone()),
                    );
                    materialized.push(node);
                }
            }
        }

        if failure.is_none() {
            let missing: Vec<String> = step
                .nodes
                .iter()
                .filter(|n| !materialized.contains(n))
                .map(|&n| format!("`{}`", self.graph.node(n).spec.key))
                .collect();
            if !missing.is_empty() {
                failure = Some(format!(
                    "`{}` returned no result for {}",
                    step.name,
                    missing.join(", ")
                ));
            }
        }
        if failure.is_none() {
            for &node in &materialized {
                for check in self.graph.checks_for(node) {
                    let spec = &check.spec;
                    let outcome = match &check.compute {
                        Some(compute) => {
                            let ctx = self.context(attempt, Some(spec.clone()));
                            // Its own task, so a panicking check fails the check, not the step
                            // (the materialization above is kept).
                            let mut task = tokio::spawn(compute(ctx));
                            tokio::select! {
                                joined = &mut task => match joined {
                                    Ok(Ok(result)) => result,
                                    Ok(Err(e)) => AssetCheckResult::failed().description(format!(
                                        "the check raised an error: {}", error_chain(e.as_ref())
                                    )),
                                    Err(join) => AssetCheckResult::failed().description(format!(
                                        "the check panicked: {}", panic_message(join)
                                    )),
                                },
                                _ = self.cancel.cancelled() => {
                                    task.abort();
                                    // The asset was materialized: keep that, then stop.
                                    events.push(self.event(EventData::StepCanceled));
                                    if let Err(e) = self.writer.commit(events, Vec::new()).await {
                                        tracing::error!("recording a canceled step failed: {}", error_chain(&e));
                                    }
                                    return Outcome::Canceled;
                                }
                            }
                        }
                        None => {
                            let position = inline_results.iter().position(|(k, r)| {
                                *k == spec.asset
                                    && r.check_name.as_deref() == Some(spec.name.as_str())
                            });
                            match position {
                                Some(i) => inline_results.remove(i).1,
                                None => AssetCheckResult::failed().description(
                                    "the asset did not report a result for this inline check",
                                ),
                            }
                        }
                    };
                    let severity = outcome.severity.unwrap_or(spec.severity);
                    if !outcome.passed
                        && spec.blocking
                        && severity == AssetCheckSeverity::Error
                        && failure.is_none()
                    {
                        failure = Some(format!(
                            "blocking check `{}` on `{}` failed",
                            spec.name, spec.asset
                        ));
                    }
                    events.push(
                        self.event(EventData::CheckEvaluation(CheckEvaluation {
                            check_name: spec.name.clone(),
                            passed: outcome.passed,
                            severity,
                            blocking: spec.blocking,
                            description: outcome.description,
                            metadata: outcome.metadata,
                        }))
                        .asset(spec.asset.clone()),
                    );
                }
            }
            if let Some((key, result)) = inline_results.first() {
                failure = Some(format!(
                    "the step reported a result for undeclared check `{}` on `{key}`",
                    result.check_name.as_deref().unwrap_or("<unnamed>")
                ));
            }
        }

        let outcome = match &failure {
            None => {
                events.push(self.event(EventData::StepSucceeded {
                    duration_secs: started.elapsed().as_secs_f64(),
                }));
                Outcome::Succeeded
            }
            Some(message) => {
                events.extend(self.failure(message, attempt));
                Outcome::Failed(message.clone())
            }
        };
        match self.writer.commit(events, Vec::new()).await {
            Ok(()) => outcome,
            Err(e) => Outcome::Failed(format!(
                "recording the step's results failed: {}",
                error_chain(&e)
            )),
        }
    }

    /// Maps a result's key to the step's node: a single-asset step may omit the key.
    fn resolve_key(&self, key: Option<&AssetKey>) -> std::result::Result<NodeId, String> {
        let step = &self.graph.steps[self.step];
        match key {
            None if step.nodes.len() == 1 => Ok(step.nodes[0]),
            None => Err(format!(
                "multi-asset `{}` returned a MaterializeResult without an asset key",
                step.name
            )),
            Some(key) => step
                .nodes
                .iter()
                .copied()
                .find(|&n| self.graph.node(n).spec.key == *key)
                .ok_or_else(|| {
                    format!(
                        "`{}` returned a result for `{key}`, which it does not declare",
                        step.name
                    )
                }),
        }
    }

    async fn canceled(&self) -> Outcome {
        if let Err(e) = self
            .writer
            .commit(vec![self.event(EventData::StepCanceled)], Vec::new())
            .await
        {
            tracing::error!("recording a canceled step failed: {}", error_chain(&e));
        }
        Outcome::Canceled
    }
}

/// What a step's compute produced.
enum Produced {
    Materialized(Vec<MaterializeResult>),
    Observed(crate::asset::ObserveResult),
}

impl Produced {
    fn materialized(
        fut: crate::asset::ComputeFuture<Vec<MaterializeResult>>,
    ) -> crate::asset::ComputeFuture<Produced> {
        Box::pin(async move { fut.await.map(Produced::Materialized) })
    }

    fn observed(
        fut: crate::asset::ComputeFuture<crate::asset::ObserveResult>,
    ) -> crate::asset::ComputeFuture<Produced> {
        Box::pin(async move { fut.await.map(Produced::Observed) })
    }
}

/// The message of a panicked (or aborted) task.
fn panic_message(join: tokio::task::JoinError) -> String {
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

/// `error: cause: cause` — an error with its whole source chain.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
