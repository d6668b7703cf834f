//! dbt's verbs (`seed`, `run`, `snapshot`, `test`, `build`) as engine runs: the project is
//! declared as assets ([`SqlProject::declare`]), the selection resolved by the engine's
//! selection language (dbt's methods are the assets' selection attributes), and one run
//! executed by the engine's executor — concurrently up to `threads`, recorded in run storage
//! (history, staleness, `rainbow runs`), cancelable. The dbt-style report ([`RunSummary`]) is
//! read back from the run's event log.
//!
//! What each verb runs (dbt's documentation of the commands):
//! - `seed` / `run` / `snapshot`: the selected seeds / models / snapshots, no tests;
//! - `test`: the selected tests (a test of a selected node is selected: dbt's eager indirect
//!   selection), nothing built — each in a checks-only step;
//! - `build`: seeds, models, snapshots and tests in DAG order; a failing `error` test fails its
//!   node's step, so everything downstream is skipped.

use std::collections::{BTreeMap, HashMap, HashSet};

use rainbow_engine::executor::{ProgressFn, RunOptions};
use rainbow_engine::{
    AssetGraph, AssetKey, Definitions, EventData, Executor, MetadataValue, NodeSet, RainbowConfig,
    Storage,
};
use tokio_util::sync::CancellationToken;

use crate::error::{DbtError, Result};
use crate::sql_project::{NodeInfo, SqlProject};

/// Which dbt verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// Seeds only.
    Seed,
    /// Models only.
    Run,
    /// Snapshots only.
    Snapshot,
    /// Data tests only.
    Test,
    /// Seeds, models, snapshots and tests in DAG order.
    Build,
}

impl Verb {
    /// The command's name.
    pub fn name(self) -> &'static str {
        match self {
            Verb::Seed => "seed",
            Verb::Run => "run",
            Verb::Snapshot => "snapshot",
            Verb::Test => "test",
            Verb::Build => "build",
        }
    }

    /// Whether the verb builds nodes of dbt resource type `resource`.
    fn builds(self, resource: &str) -> bool {
        match self {
            Verb::Seed => resource == "seed",
            Verb::Run => resource == "model",
            Verb::Snapshot => resource == "snapshot",
            Verb::Test => false,
            Verb::Build => resource != "source",
        }
    }
}

/// Options of one verb's run.
#[derive(Debug, Clone)]
pub struct VerbOptions {
    /// The verb.
    pub verb: Verb,
    /// `--select` expressions (union; empty: everything).
    pub select: Vec<String>,
    /// `--exclude` expressions.
    pub exclude: Vec<String>,
    /// Nodes built at once (`--threads`, at least 1).
    pub threads: usize,
}

/// Outcome of one node or test, as dbt reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Built.
    Success,
    /// Test passed.
    Pass,
    /// Test failed with severity warn.
    Warn,
    /// Test failed with severity error.
    Fail,
    /// Node or test errored.
    Error,
    /// Not run: something upstream failed (or the run was canceled first).
    Skipped,
}

/// What happened to one node or test.
#[derive(Debug, Clone)]
pub struct NodeResult {
    /// `seed`, `model`, `snapshot`, `test` or `unit_test`.
    pub resource: &'static str,
    /// Node or test name.
    pub name: String,
    /// `schema.relation` for nodes.
    pub relation: Option<String>,
    /// Outcome.
    pub status: Status,
    /// `INSERT 3`, `CREATE VIEW`, `MERGE`, `Got 2 failing row(s)`, an error…
    pub message: String,
    /// Wall time of a node's step, in seconds (None for tests: they run inside the step).
    pub seconds: Option<f64>,
}

/// Every result of a run, in the order they completed.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// The engine run's id.
    pub run_id: String,
    /// Results.
    pub results: Vec<NodeResult>,
    /// Wall time of the whole run, in seconds.
    pub seconds: f64,
    /// True when the run was canceled.
    pub canceled: bool,
}

impl RunSummary {
    /// Results with `status`.
    pub fn count(&self, status: Status) -> usize {
        self.results.iter().filter(|r| r.status == status).count()
    }

    /// True when nothing errored or failed and the run was not canceled.
    pub fn success(&self) -> bool {
        !self.canceled && self.count(Status::Error) == 0 && self.count(Status::Fail) == 0
    }

    /// dbt's last line: `Done. PASS=… WARN=… ERROR=… SKIP=… TOTAL=…` (errors and failures
    /// both count as ERROR, as in dbt).
    pub fn done_line(&self) -> String {
        format!(
            "Done. PASS={} WARN={} ERROR={} SKIP={} TOTAL={}",
            self.count(Status::Success) + self.count(Status::Pass),
            self.count(Status::Warn),
            self.count(Status::Error) + self.count(Status::Fail),
            self.count(Status::Skipped),
            self.results.len()
        )
    }
}

/// Runs `options.verb` over `project` as one engine run recorded in `storage`; resources come
/// from `config`. Errors: the project does not parse or declare (file, line), the selection is
/// invalid or selects nothing for the verb, storage fails. A failing node or test is not an
/// error: it is in the summary.
pub async fn run_verb(
    project: &SqlProject,
    storage: Storage,
    config: &RainbowConfig,
    options: &VerbOptions,
    cancel: CancellationToken,
    progress: Option<ProgressFn>,
) -> Result<RunSummary> {
    let started = std::time::Instant::now();
    let declared = project.declare(&HashSet::new())?;
    let nodes = declared.nodes;
    let defs = declared.checks.into_iter().fold(
        Definitions::new().assets(declared.assets),
        Definitions::check,
    );
    let graph = std::sync::Arc::new(AssetGraph::build(defs)?);
    let selected = graph.select_with_checks(&options.select, &options.exclude)?;
    let mut assets = NodeSet::empty(graph.len());
    for id in selected.assets.iter() {
        let key = &graph.node(id).spec.key;
        if nodes
            .get(key)
            .is_some_and(|n| options.verb.builds(n.resource))
        {
            assets.insert(id);
        }
    }
    let checks = match options.verb {
        // dbt test: every test reading a selected node, wherever it sits (eager); no node is
        // built, so a test never waits for one it does not read.
        Verb::Test => {
            let mut checks = selected.checks.clone();
            checks.union_with(&graph.checks_reading(&selected.assets));
            checks
        }
        // dbt build: the tests on the nodes it builds (and those selected by name) — like
        // dbt's `buildable` indirect selection: a test reading a node this run does not build
        // is left out (dbt's default, `eager`, runs it against whatever that node holds, and
        // fails where it was never built).
        Verb::Build => selected.checks,
        _ => NodeSet::empty(graph.checks().len()),
    };
    if assets.is_empty() && checks.is_empty() {
        return Err(DbtError::Input {
            location: "--select".into(),
            message: format!(
                "nothing to {}: the selection matches no {}",
                options.verb.name(),
                match options.verb {
                    Verb::Seed => "seed",
                    Verb::Run => "model",
                    Verb::Snapshot => "snapshot",
                    Verb::Test => "test",
                    Verb::Build => "seed, model, snapshot or test",
                }
            ),
        });
    }
    let expression = if options.select.is_empty() {
        "*".to_owned()
    } else {
        options.select.join(" ")
    };
    let mut tags = BTreeMap::new();
    tags.insert(
        rainbow_engine::tags::COMMAND.to_owned(),
        options.verb.name().to_owned(),
    );
    if !options.exclude.is_empty() {
        tags.insert("rainbow/exclude".to_owned(), options.exclude.join(" "));
    }
    let executor = Executor::new(graph.clone(), storage.clone(), config)?;
    let result = executor
        .materialize(
            &assets,
            RunOptions {
                concurrency: options.threads.max(1),
                selection: expression,
                tags,
                checks: Some(checks.clone()),
                ..RunOptions::default()
            },
            cancel,
            progress,
        )
        .await?;
    let mut summary = summarize(&storage, &graph, &nodes, &assets, &checks, &result.run_id).await?;
    summary.canceled = result.status == rainbow_engine::RunStatus::Canceled;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// dbt's report of a finished run, from its event log: each built node when its step ended,
/// followed by the tests evaluated in that step; selected tests that never ran are skipped.
async fn summarize(
    storage: &Storage,
    graph: &AssetGraph,
    nodes: &BTreeMap<AssetKey, NodeInfo>,
    assets: &NodeSet,
    checks: &NodeSet,
    run_id: &str,
) -> Result<RunSummary> {
    let events = storage.events_for_run(run_id, 0, i64::MAX).await?;
    // The assets of each step, and whether the step built them.
    let mut step_assets: HashMap<&str, Vec<usize>> = HashMap::new();
    for id in 0..graph.len() {
        step_assets.entry(graph.step_name(id)).or_default().push(id);
    }
    let mut summary = RunSummary {
        run_id: run_id.to_owned(),
        ..RunSummary::default()
    };
    let mut statuses: HashMap<AssetKey, String> = HashMap::new();
    let mut evaluated: HashSet<(AssetKey, String)> = HashSet::new();
    let mut pending_checks: Vec<NodeResult> = Vec::new();
    let node_result = |id: usize, status: Status, message: String, seconds: Option<f64>| {
        let key = &graph.node(id).spec.key;
        let info = nodes.get(key);
        NodeResult {
            resource: info.map_or("model", |n| n.resource),
            name: info.map_or_else(|| key.to_string(), |n| n.name.clone()),
            relation: info.map(|n| n.relation.clone()),
            status,
            message,
            seconds,
        }
    };
    for event in &events {
        let step = event.step_key.as_deref().unwrap_or_default();
        let built: Vec<usize> = step_assets
            .get(step)
            .map(|ids| {
                ids.iter()
                    .copied()
                    .filter(|&i| assets.contains(i))
                    .collect()
            })
            .unwrap_or_default();
        match &event.data {
            EventData::Materialization(m) => {
                if let (Some(key), Some(MetadataValue::Text(text))) =
                    (&event.asset_key, m.metadata.get("status"))
                {
                    statuses.insert(key.clone(), text.clone());
                }
            }
            EventData::CheckEvaluation(c) => {
                let Some(key) = &event.asset_key else {
                    continue;
                };
                evaluated.insert((key.clone(), c.check_name.clone()));
                let failing = match c.metadata.get("failing_rows") {
                    Some(MetadataValue::Int(n)) => Some(*n),
                    _ => None,
                };
                let (status, message) = match (c.passed, failing) {
                    (true, _) => (Status::Pass, "PASS".to_owned()),
                    (false, Some(n)) => (
                        match c.severity {
                            rainbow_engine::AssetCheckSeverity::Warn => Status::Warn,
                            rainbow_engine::AssetCheckSeverity::Error => Status::Fail,
                        },
                        format!("Got {n} failing row(s)"),
                    ),
                    (false, None) => (
                        Status::Error,
                        c.description.clone().unwrap_or_else(|| "error".into()),
                    ),
                };
                pending_checks.push(NodeResult {
                    resource: check_resource(graph, key, &c.check_name),
                    name: c.check_name.clone(),
                    relation: None,
                    status,
                    message,
                    seconds: None,
                });
            }
            EventData::StepSucceeded { duration_secs } => {
                for &id in &built {
                    let key = &graph.node(id).spec.key;
                    let message = statuses.remove(key).unwrap_or_else(|| "OK".into());
                    summary.results.push(node_result(
                        id,
                        Status::Success,
                        message,
                        Some(*duration_secs),
                    ));
                }
                summary.results.append(&mut pending_checks);
            }
            EventData::StepFailed { error, .. } => {
                for &id in &built {
                    let key = &graph.node(id).spec.key;
                    // Built, then a blocking test failed: the node itself is fine.
                    let (status, message) = match statuses.remove(key) {
                        Some(text) => (Status::Success, text),
                        None => (Status::Error, error.clone()),
                    };
                    summary.results.push(node_result(id, status, message, None));
                }
                summary.results.append(&mut pending_checks);
            }
            EventData::StepSkipped { reason } => {
                for &id in &built {
                    summary.results.push(node_result(
                        id,
                        Status::Skipped,
                        format!("skipped: {reason}"),
                        None,
                    ));
                }
            }
            EventData::StepCanceled => {
                for &id in &built {
                    summary
                        .results
                        .push(node_result(id, Status::Skipped, "canceled".into(), None));
                }
                summary.results.append(&mut pending_checks);
            }
            _ => {}
        }
    }
    // Selected tests that never ran: their node failed, was skipped or the run was canceled.
    for c in checks.iter() {
        let spec = &graph.checks()[c].spec;
        if !evaluated.contains(&(spec.asset.clone(), spec.name.clone())) {
            summary.results.push(NodeResult {
                resource: check_resource(graph, &spec.asset, &spec.name),
                name: spec.name.clone(),
                relation: None,
                status: Status::Skipped,
                message: format!("skipped: `{}` was not built", spec.asset),
                seconds: None,
            });
        }
    }
    Ok(summary)
}

/// `unit_test` for a dbt unit test's check, else `test`.
fn check_resource(
    graph: &rainbow_engine::AssetGraph,
    asset: &AssetKey,
    name: &str,
) -> &'static str {
    let unit = graph.checks().iter().any(|c| {
        c.spec.asset == *asset
            && c.spec.name == name
            && c.spec
                .selectors
                .get("resource_type")
                .is_some_and(|r| r.contains("unit_test"))
    });
    if unit { "unit_test" } else { "test" }
}
