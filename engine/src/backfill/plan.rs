//! Planning a backfill: a [`BackfillRequest`] becomes units — the selected assets sharing one
//! partitions definition, over one partition or a chunk of partitions per their
//! [`BackfillPolicy`] — with the dependencies between units that the partition mappings imply.
//! Three steps: the target keys of every asset ([`target_keys`]), the units ([`units_of`]),
//! their dependencies ([`link_units`]).

use std::collections::{BTreeSet, HashMap, HashSet};

use super::{BackfillRequest, PartitionSelector};
use crate::asset::BackfillPolicy;
use crate::error::{Error, Result};
use crate::graph::{AssetGraph, NodeId};
use crate::key::AssetKey;
use crate::partitions::{PartitionContext, PartitionMapping, PartitionState, PartitionsDefinition};
use crate::storage::Storage;
use crate::storage::backfills::{BackfillUnit, UnitStatus};

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

    let targets = target_keys(graph, storage, request, &nodes, &ctx).await?;
    let mut planned = units_of(graph, &nodes, &targets, &ctx)?;
    link_units(graph, &nodes, &mut planned, &ctx)?;
    check_unit_cycles(&planned.units)?;
    Ok(planned.units)
}

/// The keys each selected asset is to compute, in its definition's order (empty for
/// unpartitioned assets). Errors: a range no selected asset has, a listed key none has.
async fn target_keys(
    graph: &AssetGraph,
    storage: &Storage,
    request: &BackfillRequest,
    nodes: &[NodeId],
    ctx: &PartitionContext,
) -> Result<HashMap<NodeId, Vec<String>>> {
    // Target keys per node, in each definition's order.
    let mut targets: HashMap<NodeId, Vec<String>> = HashMap::new();
    let mut unknown_keys: BTreeSet<String> = match &request.partitions {
        PartitionSelector::Keys { keys } => keys.iter().cloned().collect(),
        _ => BTreeSet::new(),
    };
    let mut range_found = false;
    for &n in nodes {
        let Some(def) = graph.partitions(n) else {
            targets.insert(n, Vec::new());
            continue;
        };
        let all = ctx.keys_of(def)?;
        let keys: Vec<String> = match &request.partitions {
            PartitionSelector::All => all.to_vec(),
            PartitionSelector::Range { from, to } => match range(&all, from, to, def, ctx)? {
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

    Ok(targets)
}

/// Units and where each asset partition is computed.
struct Planned {
    units: Vec<BackfillUnit>,
    /// (asset, key) -> the unit computing it (`""` for unpartitioned assets).
    unit_of: HashMap<(NodeId, String), usize>,
    /// asset -> its group (assets sharing a partitions definition).
    group_of: HashMap<NodeId, usize>,
}

/// Groups the assets by partitions definition and cuts each group's keys into units per the
/// members' backfill policies (the smallest chunk wins); assets needing different keys of a
/// chunk get units of their own.
fn units_of(
    graph: &AssetGraph,
    nodes: &[NodeId],
    targets: &HashMap<NodeId, Vec<String>>,
    ctx: &PartitionContext,
) -> Result<Planned> {
    // Group nodes by partitions definition (unpartitioned nodes form one group).
    let mut groups: Vec<(Option<PartitionsDefinition>, Vec<NodeId>)> = Vec::new();
    for &n in nodes {
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

    Ok(Planned {
        units,
        unit_of,
        group_of,
    })
}

/// Each unit's dependencies: the units computing the upstream partitions its partitions map to.
fn link_units(
    graph: &AssetGraph,
    nodes: &[NodeId],
    planned: &mut Planned,
    ctx: &PartitionContext,
) -> Result<()> {
    let Planned {
        units,
        unit_of,
        group_of,
    } = planned;
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
                        ctx,
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
    Ok(())
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
