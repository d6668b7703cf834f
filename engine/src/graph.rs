//! [`AssetGraph`]: the validated, indexed dependency graph built once from [`Definitions`].
//!
//! Owns cycle and unknown-dependency detection, topological order, and the mapping from asset
//! keys to executable steps. Knows nothing about storage or execution.

use std::collections::{HashMap, HashSet, VecDeque};

use petgraph::graph::{DiGraph, NodeIndex};

use crate::asset::{AssetSpec, Kind, RetryPolicy};
use crate::check::AssetCheckDefinition;
use crate::definitions::{Definitions, JobDefinition, ScheduleDefinition, SensorDefinition};
use crate::error::{Error, Result, did_you_mean};
use crate::key::AssetKey;
use crate::partitions::{PartitionMapping, PartitionsDefinition};
use crate::resource::ResourceDef;

/// Index of an asset in an [`AssetGraph`].
pub type NodeId = usize;

/// One asset in the graph.
#[derive(Debug, Clone)]
pub struct AssetNode {
    /// The asset's spec.
    pub spec: AssetSpec,
    /// The step (definition) providing it.
    pub step: usize,
    /// Source assets are observed, never materialized.
    pub is_source: bool,
}

/// One executable unit: an asset definition's compute and the assets it provides.
#[derive(Clone)]
pub(crate) struct Step {
    pub(crate) name: String,
    pub(crate) nodes: Vec<NodeId>,
    pub(crate) kind: Kind,
    pub(crate) retry: RetryPolicy,
}

/// The asset graph: nodes, edges, steps, checks, jobs and schedules.
#[derive(Clone)]
pub struct AssetGraph {
    nodes: Vec<AssetNode>,
    index: HashMap<AssetKey, NodeId>,
    parents: Vec<Vec<NodeId>>,
    children: Vec<Vec<NodeId>>,
    topo: Vec<NodeId>,
    pub(crate) steps: Vec<Step>,
    pub(crate) checks: Vec<AssetCheckDefinition>,
    checks_by_node: Vec<Vec<usize>>,
    /// The partition mapping of every declared dependency by (downstream, upstream); `None` is
    /// the default mapping. An asset may depend on one upstream through several mappings.
    mappings: HashMap<(NodeId, NodeId), Vec<Option<PartitionMapping>>>,
    jobs: Vec<JobDefinition>,
    schedules: Vec<ScheduleDefinition>,
    sensors: Vec<SensorDefinition>,
    pub(crate) resources: Vec<ResourceDef>,
}

impl AssetGraph {
    /// Validates `defs` and builds the graph. Errors name the offending keys: duplicate keys,
    /// unknown dependencies (with close names), cycles (the whole cycle), checks on unknown
    /// assets, jobs with bad selections, schedules with bad cron expressions or unknown jobs.
    pub fn build(defs: Definitions) -> Result<Self> {
        let Definitions {
            assets,
            checks: loose_checks,
            jobs,
            schedules,
            sensors,
            resources,
        } = defs;

        let mut nodes = Vec::new();
        let mut index: HashMap<AssetKey, NodeId> = HashMap::new();
        let mut steps = Vec::with_capacity(assets.len());
        let mut step_names: HashSet<String> = HashSet::new();
        let mut checks = loose_checks;

        for def in assets {
            if def.specs.is_empty() {
                return Err(Error::Definition(format!(
                    "definition `{}` declares no assets",
                    def.name
                )));
            }
            let step_id = steps.len();
            let mut step_nodes = Vec::with_capacity(def.specs.len());
            let is_source = def.is_source();
            let first_partitions = def.specs[0].partitions.clone();
            for spec in def.specs {
                spec.key.validate()?;
                if let Some(p) = &spec.partitions {
                    p.validate().map_err(|e| {
                        Error::Definition(format!(
                            "asset `{}` has invalid partitions: {e}",
                            spec.key
                        ))
                    })?;
                }
                if spec.partitions != first_partitions {
                    return Err(Error::Definition(format!(
                        "the assets of `{}` must share one partitions definition (`{}` differs)",
                        def.name, spec.key
                    )));
                }
                if let Some(crate::asset::AutomationCondition::OnCron(expr)) =
                    &spec.automation_condition
                {
                    crate::definitions::parse_cron(expr).map_err(|e| {
                        Error::Definition(format!(
                            "asset `{}` has an invalid on_cron expression: {e}",
                            spec.key
                        ))
                    })?;
                }
                if index.contains_key(&spec.key) {
                    return Err(Error::Definition(format!(
                        "asset key `{}` is defined twice (again by `{}`)",
                        spec.key, def.name
                    )));
                }
                let id = nodes.len();
                index.insert(spec.key.clone(), id);
                step_nodes.push(id);
                nodes.push(AssetNode {
                    spec,
                    step: step_id,
                    is_source,
                });
            }
            if !step_names.insert(def.name.clone()) {
                return Err(Error::Definition(format!(
                    "two definitions are named `{}`",
                    def.name
                )));
            }
            checks.extend(def.checks);
            steps.push(Step {
                name: def.name,
                nodes: step_nodes,
                kind: def.kind,
                retry: def.retry,
            });
        }

        let mut parents = vec![Vec::new(); nodes.len()];
        let mut mappings: HashMap<(NodeId, NodeId), Vec<Option<PartitionMapping>>> = HashMap::new();
        let mut children = vec![Vec::new(); nodes.len()];
        for (id, node) in nodes.iter().enumerate() {
            for dep in &node.spec.deps {
                let Some(&up) = index.get(&dep.key) else {
                    let dependency = dep.key.to_string();
                    let keys: Vec<String> = index.keys().map(ToString::to_string).collect();
                    return Err(Error::UnknownDependency {
                        asset: node.spec.key.to_string(),
                        suggestion: did_you_mean(&dependency, keys.iter().map(String::as_str)),
                        dependency,
                    });
                };
                if !parents[id].contains(&up) {
                    parents[id].push(up);
                    children[up].push(id);
                }
                if let Some(mapping) = &dep.partition_mapping {
                    validate_mapping(mapping, &node.spec, &nodes[up].spec)?;
                }
                mappings
                    .entry((id, up))
                    .or_default()
                    .push(dep.partition_mapping.clone());
            }
        }

        let topo = topological_order(&nodes, &children)?;

        let mut checks_by_node = vec![Vec::new(); nodes.len()];
        // (additional dep, checked asset): a check's step waits for its additional deps.
        let mut check_edges: Vec<(NodeId, NodeId)> = Vec::new();
        for (i, check) in checks.iter().enumerate() {
            let Some(&node) = index.get(&check.spec.asset) else {
                let asset = check.spec.asset.to_string();
                let keys: Vec<String> = index.keys().map(ToString::to_string).collect();
                return Err(Error::Definition(format!(
                    "check `{}` is on unknown asset `{asset}`{}",
                    check.spec.name,
                    did_you_mean(&asset, keys.iter().map(String::as_str))
                )));
            };
            let duplicate = checks_by_node[node]
                .iter()
                .any(|&j: &usize| checks[j].spec.name == check.spec.name);
            if duplicate {
                return Err(Error::Definition(format!(
                    "asset `{}` has two checks named `{}`",
                    check.spec.asset, check.spec.name
                )));
            }
            for dep in &check.spec.additional_deps {
                let Some(&from) = index.get(dep) else {
                    let keys: Vec<String> = index.keys().map(ToString::to_string).collect();
                    return Err(Error::Definition(format!(
                        "check `{}` on `{}` reads unknown asset `{dep}`{}",
                        check.spec.name,
                        check.spec.asset,
                        did_you_mean(&dep.to_string(), keys.iter().map(String::as_str))
                    )));
                };
                check_edges.push((from, node));
            }
            checks_by_node[node].push(i);
        }
        check_step_cycles(&nodes, &children, &steps, &check_edges)?;

        let graph = AssetGraph {
            nodes,
            index,
            parents,
            children,
            topo,
            steps,
            checks,
            checks_by_node,
            mappings,
            jobs,
            schedules,
            sensors,
            resources,
        };
        graph.validate_jobs_and_schedules()?;
        Ok(graph)
    }

    fn validate_jobs_and_schedules(&self) -> Result<()> {
        let mut names = HashSet::new();
        for job in &self.jobs {
            if !names.insert(job.name.as_str()) {
                return Err(Error::Definition(format!(
                    "two jobs are named `{}`",
                    job.name
                )));
            }
            self.select_job(job).map_err(|e| {
                Error::Definition(format!("job `{}` has an invalid selection: {e}", job.name))
            })?;
        }
        for sensor in &self.sensors {
            if self.job(&sensor.job).is_none() {
                return Err(Error::Definition(format!(
                    "sensor `{}` launches unknown job `{}`",
                    sensor.name, sensor.job
                )));
            }
            let crate::definitions::SensorKind::Asset(key) = &sensor.kind;
            if self.node_id(key).is_none() {
                return Err(Error::Definition(format!(
                    "sensor `{}` watches unknown asset `{key}`",
                    sensor.name
                )));
            }
        }
        for schedule in &self.schedules {
            schedule.cron()?;
            schedule.tz()?;
            if self.job(&schedule.job).is_none() {
                return Err(Error::Definition(format!(
                    "schedule `{}` launches unknown job `{}`",
                    schedule.name, schedule.job
                )));
            }
        }
        Ok(())
    }

    /// Number of assets (including source assets).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when the graph has no assets.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The asset with id `id`.
    pub fn node(&self, id: NodeId) -> &AssetNode {
        &self.nodes[id]
    }

    /// All assets, by id.
    pub fn nodes(&self) -> &[AssetNode] {
        &self.nodes
    }

    /// The id of `key`.
    pub fn node_id(&self, key: &AssetKey) -> Option<NodeId> {
        self.index.get(key).copied()
    }

    /// Direct upstream assets of `id`.
    pub fn parents(&self, id: NodeId) -> &[NodeId] {
        &self.parents[id]
    }

    /// How asset `id` is partitioned.
    pub fn partitions(&self, id: NodeId) -> Option<&PartitionsDefinition> {
        self.nodes[id].spec.partitions.as_ref()
    }

    /// The partition mappings from downstream `child` to upstream `parent` (one per declared
    /// dependency, defaults resolved); empty when the upstream is unpartitioned.
    pub fn partition_mappings(&self, child: NodeId, parent: NodeId) -> Vec<PartitionMapping> {
        let Some(up) = self.partitions(parent) else {
            return Vec::new();
        };
        let default = || PartitionMapping::default_for(self.partitions(child), up);
        match self.mappings.get(&(child, parent)) {
            Some(list) => list
                .iter()
                .map(|m| m.clone().unwrap_or_else(default))
                .collect(),
            None => vec![default()],
        }
    }

    /// Direct downstream assets of `id`.
    pub fn children(&self, id: NodeId) -> &[NodeId] {
        &self.children[id]
    }

    /// All assets in a dependency-respecting order.
    pub fn topological_order(&self) -> &[NodeId] {
        &self.topo
    }

    /// Checks attached to asset `id`.
    pub fn checks_for(&self, id: NodeId) -> impl Iterator<Item = &AssetCheckDefinition> {
        self.checks_by_node[id].iter().map(|&i| &self.checks[i])
    }

    /// The indices (into [`AssetGraph::checks`]) of the checks attached to asset `id`.
    pub fn check_ids_for(&self, id: NodeId) -> &[usize] {
        &self.checks_by_node[id]
    }

    /// The asset a check (by index into [`AssetGraph::checks`]) is attached to.
    pub fn check_node(&self, check: usize) -> Option<NodeId> {
        self.node_id(&self.checks.get(check)?.spec.asset)
    }

    /// Every check.
    pub fn checks(&self) -> &[AssetCheckDefinition] {
        &self.checks
    }

    /// The name of the step providing asset `id`.
    pub fn step_name(&self, id: NodeId) -> &str {
        &self.steps[self.nodes[id].step].name
    }

    /// The jobs.
    pub fn jobs(&self) -> &[JobDefinition] {
        &self.jobs
    }

    /// The job named `name`.
    pub fn job(&self, name: &str) -> Option<&JobDefinition> {
        self.jobs.iter().find(|j| j.name == name)
    }

    /// The schedules.
    pub fn schedules(&self) -> &[ScheduleDefinition] {
        &self.schedules
    }

    /// The sensors.
    pub fn sensors(&self) -> &[SensorDefinition] {
        &self.sensors
    }

    /// Resolves a job's selection.
    pub fn select_job(&self, job: &JobDefinition) -> Result<crate::selection::NodeSet> {
        let exclude: Vec<&str> = job.exclude.iter().map(String::as_str).collect();
        self.select(&[job.selection.as_str()], &exclude)
    }
}

/// Rejects mappings that cannot work between the two assets' definitions.
fn validate_mapping(mapping: &PartitionMapping, down: &AssetSpec, up: &AssetSpec) -> Result<()> {
    let problem = match (mapping, &down.partitions, &up.partitions) {
        (_, _, None) => Some("the upstream asset is not partitioned".to_owned()),
        (PartitionMapping::TimeWindow { .. }, Some(d), Some(u))
            if !(d.is_time_window() && u.is_time_window()) =>
        {
            Some("a time-window mapping needs time-window partitions on both sides".to_owned())
        }
        (PartitionMapping::TimeWindow { .. }, None, _) => {
            Some("the downstream asset is not partitioned".to_owned())
        }
        (PartitionMapping::MultiToSingleDimension { dimension }, d, Some(u)) => {
            let found = u.dimension(dimension).is_some()
                || d.as_ref().is_some_and(|d| d.dimension(dimension).is_some());
            (!found).then(|| format!("neither asset has a partition dimension named `{dimension}`"))
        }
        _ => None,
    };
    match problem {
        Some(p) => Err(Error::Definition(format!(
            "the partition mapping from `{}` to its upstream `{}` is invalid: {p}",
            down.key, up.key
        ))),
        None => Ok(()),
    }
}

/// Topological order of the graph, or the cycle that prevents one.
fn topological_order(nodes: &[AssetNode], children: &[Vec<NodeId>]) -> Result<Vec<NodeId>> {
    let mut g: DiGraph<(), ()> = DiGraph::with_capacity(nodes.len(), nodes.len());
    for _ in nodes {
        g.add_node(());
    }
    for (from, outs) in children.iter().enumerate() {
        for &to in outs {
            g.add_edge(NodeIndex::new(from), NodeIndex::new(to), ());
        }
    }
    match petgraph::algo::toposort(&g, None) {
        Ok(order) => Ok(order.into_iter().map(NodeIndex::index).collect()),
        Err(_) => Err(Error::Cycle {
            cycle: describe_cycle(&g, nodes, children),
        }),
    }
}

/// Assets may be acyclic while the steps providing them are not: a multi-asset `m` providing
/// `a` and `c`, with `b` depending on `a` and `c` on `b`, would have `m` wait for `b` and `b`
/// wait for `m`. That is an error naming the definitions involved.
fn check_step_cycles(
    nodes: &[AssetNode],
    children: &[Vec<NodeId>],
    steps: &[Step],
    check_edges: &[(NodeId, NodeId)],
) -> Result<()> {
    let mut g: DiGraph<(), ()> = DiGraph::with_capacity(steps.len(), nodes.len());
    for _ in steps {
        g.add_node(());
    }
    let edges = children
        .iter()
        .enumerate()
        .flat_map(|(from, outs)| outs.iter().map(move |&to| (from, to)))
        .chain(check_edges.iter().copied());
    for (from, to) in edges {
        let (a, b) = (nodes[from].step, nodes[to].step);
        if a != b {
            g.update_edge(NodeIndex::new(a), NodeIndex::new(b), ());
        }
    }
    for scc in petgraph::algo::tarjan_scc(&g) {
        if scc.len() > 1 {
            let mut names: Vec<String> = scc
                .iter()
                .map(|n| format!("`{}`", steps[n.index()].name))
                .collect();
            names.sort();
            return Err(Error::Cycle {
                cycle: format!(
                    "the definitions {} depend on each other through their assets or their checks' \
                     additional deps (a multi-asset's outputs cannot depend on each other through \
                     other assets; a check cannot read what is downstream of its asset)",
                    names.join(", ")
                ),
            });
        }
    }
    Ok(())
}

/// Finds one cycle and renders it `a -> b -> c -> a`, starting at the smallest key.
fn describe_cycle(g: &DiGraph<(), ()>, nodes: &[AssetNode], children: &[Vec<NodeId>]) -> String {
    let key = |id: NodeId| nodes[id].spec.key.to_string();
    for scc in petgraph::algo::tarjan_scc(g) {
        let members: HashSet<NodeId> = scc.iter().map(|n| n.index()).collect();
        let is_cycle = members.len() > 1 || members.iter().any(|&n| children[n].contains(&n));
        if !is_cycle {
            continue;
        }
        let Some(start) = members.iter().copied().min_by_key(|&n| key(n)) else {
            continue;
        };
        // Shortest path start -> ... -> start inside the component (BFS).
        let mut prev: HashMap<NodeId, NodeId> = HashMap::new();
        let mut queue = VecDeque::from([start]);
        let mut closing = None;
        'bfs: while let Some(n) = queue.pop_front() {
            let mut next: Vec<NodeId> = children[n]
                .iter()
                .copied()
                .filter(|c| members.contains(c))
                .collect();
            next.sort_by_key(|&c| key(c));
            for c in next {
                if c == start {
                    closing = Some(n);
                    break 'bfs;
                }
                if let std::collections::hash_map::Entry::Vacant(e) = prev.entry(c) {
                    e.insert(n);
                    queue.push_back(c);
                }
            }
        }
        let Some(mut at) = closing else { continue };
        let mut inner = Vec::new();
        while at != start {
            inner.push(at);
            match prev.get(&at) {
                Some(&p) => at = p,
                None => break,
            }
        }
        let mut path = vec![start];
        path.extend(inner.into_iter().rev());
        path.push(start);
        return path.into_iter().map(key).collect::<Vec<_>>().join(" -> ");
    }
    "unknown cycle".into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asset::{MaterializeResult, asset};
    use crate::error::BoxError;

    fn noop(spec: AssetSpec) -> crate::AssetDefinition {
        spec.compute(|_| async { Ok::<_, BoxError>(MaterializeResult::new()) })
    }

    #[test]
    fn cycle_error_names_the_whole_cycle() {
        let defs = Definitions::new()
            .asset(noop(asset("a").dep("c")))
            .asset(noop(asset("b").dep("a")))
            .asset(noop(asset("c").dep("b")))
            .asset(noop(asset("d").dep("a")));
        let err = AssetGraph::build(defs).err().expect("cycle");
        assert_eq!(err.to_string(), "dependency cycle: a -> b -> c -> a");
    }

    #[test]
    fn multi_asset_step_cycle_is_an_error() {
        let m =
            crate::AssetDefinition::multi("m", vec![asset("a"), asset("c").dep("b")], |_| async {
                Ok::<_, BoxError>(vec![])
            });
        let defs = Definitions::new().asset(m).asset(noop(asset("b").dep("a")));
        let err = AssetGraph::build(defs)
            .err()
            .expect("step cycle")
            .to_string();
        assert!(
            err.contains("the definitions `b`, `m` depend on each other"),
            "{err}"
        );
    }

    #[test]
    fn self_dependency_is_a_cycle() {
        let defs = Definitions::new().asset(noop(asset("x/a").dep("x/a")));
        let err = AssetGraph::build(defs).err().expect("cycle");
        assert_eq!(err.to_string(), "dependency cycle: x/a -> x/a");
    }

    #[test]
    fn unknown_dependency_names_both_keys_and_suggests() {
        let defs = Definitions::new()
            .asset(noop(asset("raw/orders")))
            .asset(noop(asset("stg/orders").dep("raw/order")));
        let err = AssetGraph::build(defs).err().expect("unknown dep");
        assert_eq!(
            err.to_string(),
            "asset `stg/orders` depends on unknown asset `raw/order` (did you mean `raw/orders`?)"
        );
    }

    #[test]
    fn duplicate_keys_and_bad_keys_are_errors() {
        let defs = Definitions::new()
            .asset(noop(asset("a")))
            .asset(noop(asset("a")));
        assert!(
            AssetGraph::build(defs)
                .err()
                .expect("dup")
                .to_string()
                .contains("defined twice")
        );
        let defs = Definitions::new().asset(noop(asset("a b")));
        assert!(
            AssetGraph::build(defs)
                .err()
                .expect("bad")
                .to_string()
                .contains("invalid segment")
        );
    }

    #[test]
    fn topological_order_respects_edges() {
        let defs = Definitions::new()
            .asset(noop(asset("c").deps(["a", "b"])))
            .asset(noop(asset("b").dep("a")))
            .asset(noop(asset("a")));
        let g = AssetGraph::build(defs).expect("valid");
        let pos = |k: &str| {
            let id = g.node_id(&AssetKey::from(k)).expect("exists");
            g.topological_order()
                .iter()
                .position(|&n| n == id)
                .expect("in order")
        };
        assert!(pos("a") < pos("b") && pos("b") < pos("c"));
    }
}
