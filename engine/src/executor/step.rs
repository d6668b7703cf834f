//! One step of a run: its compute with retries, the materializations (or observations) it
//! records, and the evaluation of its assets' checks — all committed in one write.

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::{Outcome, PARTITION_RANGE_METADATA, StepMode, failure_events, panic_message, single};
use crate::asset::{Kind, MaterializeResult};
use crate::check::{AssetCheckResult, AssetCheckSeverity};
use crate::context::{AssetContext, ContextParts};
use crate::event::{CheckEvaluation, Event, EventData, Materialization};
use crate::executor::error_chain;
use crate::graph::{AssetGraph, NodeId};
use crate::key::AssetKey;
use crate::metadata::MetadataValue;
use crate::resource::Resources;
use crate::selection::NodeSet;
use crate::storage::EventWriter;

/// When checks are evaluated: before the compute (those marked
/// [`crate::AssetCheckSpec::before_materialization`]) or after it (the others).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Before,
    After,
}

/// Everything a step task needs (owned, so the task is `'static`).
pub(super) struct StepRun {
    pub(super) graph: Arc<AssetGraph>,
    pub(super) step: usize,
    pub(super) mode: StepMode,
    /// The run's check selection (`None`: every check of the step's assets).
    pub(super) checks: Option<Arc<NodeSet>>,
    pub(super) run_id: String,
    pub(super) partitions: Vec<String>,
    pub(super) resources: Arc<Resources>,
    pub(super) writer: EventWriter,
    pub(super) cancel: CancellationToken,
}

impl StepRun {
    pub(super) async fn into_pos(self, pos: usize) -> (usize, Outcome) {
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
            events: Arc::new(self.writer.clone()),
            cancel: self.cancel.clone(),
        })
    }

    async fn run(self) -> Outcome {
        let started = Instant::now();
        self.writer
            .send(vec![self.event(EventData::StepStarted { attempt: 1 })]);
        let (attempt, mut events, mut inline_results, mut failure) = match self.mode {
            StepMode::ChecksOnly => (1, Vec::new(), Vec::new(), None),
            StepMode::Materialize => {
                // Checks that run before the compute (dbt's unit tests): a failing blocking
                // one fails the step, nothing is materialized.
                let mut before = Vec::new();
                match self
                    .evaluate_checks(1, &mut Vec::new(), &mut before, Phase::Before)
                    .await
                {
                    Ok(None) => {}
                    Ok(Some(message)) => {
                        before.extend(self.failure(&message, 1));
                        return match self.writer.commit(before, Vec::new()).await {
                            Ok(()) => Outcome::Failed(message),
                            Err(e) => Outcome::Failed(format!(
                                "{message} (and recording it failed: {})",
                                error_chain(&e)
                            )),
                        };
                    }
                    Err(outcome) => return outcome,
                }
                let (attempt, produced) = match self.compute_with_retries().await {
                    Ok(done) => done,
                    Err(outcome) => return outcome,
                };
                let (events, inline, failure) = self.record(produced, started.elapsed());
                before.extend(events);
                (attempt, before, inline, failure)
            }
        };
        if failure.is_none() {
            match self
                .evaluate_checks(attempt, &mut inline_results, &mut events, Phase::After)
                .await
            {
                Ok(f) => failure = f,
                Err(outcome) => return outcome,
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

    /// Runs the step's compute, retrying per its policy: the attempt that succeeded and what
    /// it produced, or the step's final outcome (failed after retries, canceled).
    async fn compute_with_retries(&self) -> Result<(u32, Produced), Outcome> {
        let step = &self.graph.steps[self.step];
        let retry = step.retry.clone();
        let mut attempt = 1;
        loop {
            if attempt > 1 {
                self.writer
                    .send(vec![self.event(EventData::StepStarted { attempt })]);
            }
            let ctx = self.context(attempt, None);
            let fut = match &step.kind {
                Kind::Materialize(compute) => Produced::materialized(compute(ctx)),
                Kind::Source(Some(observe)) => Produced::observed(observe(ctx)),
                Kind::Source(None) => {
                    return Err(Outcome::Failed("source asset is not executable".into()));
                }
            };
            let result = tokio::select! {
                r = fut => r,
                _ = self.cancel.cancelled() => return Err(self.canceled().await),
            };
            let error = match result {
                Ok(produced) => return Ok((attempt, produced)),
                Err(error) => error_chain(error.as_ref()),
            };
            if attempt <= retry.max_retries {
                let delay = retry.delay_for(attempt);
                self.writer.send(vec![self.event(EventData::StepUpForRetry {
                    error,
                    attempt,
                    delay_secs: delay.as_secs_f64(),
                })]);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = self.cancel.cancelled() => return Err(self.canceled().await),
                }
                attempt += 1;
                continue;
            }
            let recorded = self
                .writer
                .commit(self.failure(&error, attempt), Vec::new())
                .await;
            return Err(match recorded {
                Ok(()) => Outcome::Failed(error),
                Err(e) => Outcome::Failed(format!(
                    "{error} (and recording it failed: {})",
                    error_chain(&e)
                )),
            });
        }
    }

    /// The events of what the compute produced (one materialization per asset and
    /// partition, or an observation), the inline check results it reported, and a failure
    /// when it reported a result for an undeclared asset or none for a declared one.
    fn record(
        &self,
        produced: Produced,
        duration: std::time::Duration,
    ) -> (
        Vec<Event>,
        Vec<(AssetKey, AssetCheckResult)>,
        Option<String>,
    ) {
        let step = &self.graph.steps[self.step];
        let mut events = Vec::new();
        let mut failure: Option<String> = None;
        let mut inline_results: Vec<(AssetKey, AssetCheckResult)> = Vec::new();
        let mut materialized: Vec<NodeId> = Vec::new();
        match produced {
            Produced::Materialized(results) => {
                for result in results {
                    let node = match self.resolve_key(result.asset_key.as_ref()) {
                        Ok(node) => node,
                        Err(message) => {
                            failure = Some(message);
                            continue;
                        }
                    };
                    let spec = &self.graph.node(node).spec;
                    let mut metadata = result.metadata;
                    metadata
                        .entry("rainbow/duration".into())
                        .or_insert(MetadataValue::Duration(duration.as_secs_f64()));
                    // A range run reports once for all its partitions: say so on each copy, so
                    // nobody reads the range's row count as one partition's.
                    if let [first, .., last] = self.partitions.as_slice() {
                        metadata.insert(
                            PARTITION_RANGE_METADATA.into(),
                            MetadataValue::Text(format!(
                                "{first}..{last} ({} partitions)",
                                self.partitions.len()
                            )),
                        );
                    }
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
                                self.event(EventData::Materialization(materialization.clone()))
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
        (events, inline_results, failure)
    }

    /// Evaluates the selected checks of the step's assets, pushing their events: the failure
    /// of the first failing blocking error check, or the step's outcome when it was canceled
    /// (what was materialized is kept).
    async fn evaluate_checks(
        &self,
        attempt: u32,
        inline_results: &mut Vec<(AssetKey, AssetCheckResult)>,
        events: &mut Vec<Event>,
        phase: Phase,
    ) -> Result<Option<String>, Outcome> {
        let mut failure = None;
        // The checks of this phase, in declaration order.
        let mut selected = Vec::new();
        for &node in &self.graph.steps[self.step].nodes {
            for &check_id in self.graph.check_ids_for(node) {
                if self.checks.as_ref().is_some_and(|c| !c.contains(check_id)) {
                    continue;
                }
                let check = &self.graph.checks()[check_id];
                let before =
                    check.spec.before_materialization && self.mode == StepMode::Materialize;
                if before != (phase == Phase::Before) {
                    continue;
                }
                // Inline results come only with the asset's compute.
                if check.compute.is_none() && self.mode == StepMode::ChecksOnly {
                    continue;
                }
                selected.push(check_id);
            }
        }
        // Computed checks run a few at a time, each its own task (a panicking check fails the
        // check, not the step); results are recorded in declaration order. Up to one per core:
        // a SQL step's data tests are independent queries (issue 17: the 13 of fact_sales ran
        // one after another on an otherwise idle machine).
        let ahead = crate::process::cores();
        let mut tasks: Vec<Option<tokio::task::JoinHandle<_>>> = std::iter::repeat_with(|| None)
            .take(selected.len())
            .collect();
        for i in 0..selected.len() {
            for j in i..selected.len().min(i + ahead) {
                let check = &self.graph.checks()[selected[j]];
                if let (Some(compute), None) = (&check.compute, &tasks[j]) {
                    let ctx = self.context(attempt, Some(check.spec.clone()));
                    tasks[j] = Some(tokio::spawn(compute(ctx)));
                }
            }
            let check = &self.graph.checks()[selected[i]];
            let spec = &check.spec;
            let outcome = match tasks[i].take() {
                Some(mut task) => {
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
                            for other in tasks.iter().flatten() {
                                other.abort();
                            }
                            let mut kept = std::mem::take(events);
                            kept.push(self.event(EventData::StepCanceled));
                            if let Err(e) = self.writer.commit(kept, Vec::new()).await {
                                tracing::error!("recording a canceled step failed: {}", error_chain(&e));
                            }
                            return Err(Outcome::Canceled);
                        }
                    }
                }
                None => {
                    let position = inline_results.iter().position(|(k, r)| {
                        *k == spec.asset && r.check_name.as_deref() == Some(spec.name.as_str())
                    });
                    match position {
                        Some(i) => inline_results.remove(i).1,
                        None => AssetCheckResult::failed()
                            .description("the asset did not report a result for this inline check"),
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
        if failure.is_none()
            && let Some((key, result)) = inline_results.first()
        {
            failure = Some(format!(
                "the step reported a result for undeclared check `{}` on `{key}`",
                result.check_name.as_deref().unwrap_or("<unnamed>")
            ));
        }
        Ok(failure)
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
