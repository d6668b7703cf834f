//! The lineage layout: where each drawn node (an asset, or a collapsed group) sits, computed
//! on the server once per (definitions, selection, collapsed groups) and cached, so refreshing
//! state never lays out again.
//!
//! Layered (Sugiyama) layout by `rust-sugiyama` (crossing reduction, Brandes–Köpf placement),
//! drawn left to right: the library's layers become columns. Above
//! [`crate::UiOptions::sugiyama_max_nodes`] drawn nodes — or if the library panics — a
//! longest-path layering with one barycenter pass places nodes in linear time, so 10,000
//! assets still render.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use rainbow_engine::AssetGraph;
use rainbow_engine::graph::NodeId;
use rainbow_engine::selection::NodeSet;

/// Width of a drawn node (SVG user units).
pub(crate) const NODE_W: f64 = 210.0;
/// Height of a drawn node.
pub(crate) const NODE_H: f64 = 62.0;
const GAP_X: f64 = 70.0;
const GAP_Y: f64 = 18.0;

/// What a layout is cached under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct LayoutKey {
    /// The normalized selection (`*` for everything).
    pub select: String,
    /// Collapsed group names, sorted.
    pub collapsed: Vec<String>,
}

/// One drawn node.
#[derive(Debug, Clone)]
pub(crate) enum Drawn {
    /// An asset.
    Asset(NodeId),
    /// A collapsed group and its selected members.
    Group {
        /// Group name.
        name: String,
        /// Its assets in the selection.
        members: Vec<NodeId>,
    },
}

/// A computed layout.
#[derive(Debug)]
pub(crate) struct LineageLayout {
    /// Drawn nodes with their top-left corner.
    pub nodes: Vec<(Drawn, f64, f64)>,
    /// Edge paths (`d` attributes), precomputed.
    pub edges: Vec<String>,
    /// The edges as (from, to) indexes into `nodes`, in the order of `edges`.
    pub edge_list: Vec<(usize, usize)>,
    /// Canvas width.
    pub width: f64,
    /// Canvas height.
    pub height: f64,
    /// Time spent laying out.
    pub elapsed: Duration,
    /// Which algorithm placed the nodes (`sugiyama` or `layers`).
    pub algorithm: &'static str,
}

/// The group an asset is drawn in (`default` when it has none).
pub(crate) fn group_of(graph: &AssetGraph, node: NodeId) -> &str {
    graph.node(node).spec.group.as_deref().unwrap_or("default")
}

/// Lays out `selection` with `collapsed` groups drawn as one node each.
pub(crate) fn compute(
    graph: &AssetGraph,
    selection: &NodeSet,
    collapsed: &BTreeSet<String>,
    sugiyama_max_nodes: usize,
) -> LineageLayout {
    let started = Instant::now();
    let mut drawn: Vec<Drawn> = Vec::new();
    let mut index_of: HashMap<NodeId, usize> = HashMap::new();
    let mut group_index: HashMap<String, usize> = HashMap::new();
    for &node in graph.topological_order() {
        if !selection.contains(node) {
            continue;
        }
        let group = group_of(graph, node);
        if collapsed.contains(group) {
            let i = *group_index.entry(group.to_owned()).or_insert_with(|| {
                drawn.push(Drawn::Group {
                    name: group.to_owned(),
                    members: Vec::new(),
                });
                drawn.len() - 1
            });
            if let Drawn::Group { members, .. } = &mut drawn[i] {
                members.push(node);
            }
            index_of.insert(node, i);
        } else {
            index_of.insert(node, drawn.len());
            drawn.push(Drawn::Asset(node));
        }
    }
    let mut edges: BTreeSet<(usize, usize)> = BTreeSet::new();
    for (&node, &to) in &index_of {
        for parent in graph.parents(node) {
            if let Some(&from) = index_of.get(parent)
                && from != to
            {
                edges.insert((from, to));
            }
        }
    }
    let edges: Vec<(usize, usize)> = edges.into_iter().collect();
    let cyclic = {
        let g = petgraph::graph::DiGraph::<(), ()>::from_edges(
            edges.iter().map(|&(a, b)| (a as u32, b as u32)),
        );
        petgraph::algo::is_cyclic_directed(&g)
    };
    // Collapsed groups can make cycles, which layered layout libraries do not all accept.
    let (positions, algorithm) = if drawn.len() <= sugiyama_max_nodes && !cyclic {
        match std::panic::catch_unwind(|| sugiyama(drawn.len(), &edges)) {
            Ok(p) => (p, "sugiyama"),
            Err(_) => {
                tracing::warn!("the Sugiyama layout panicked; falling back to plain layers");
                (layers(drawn.len(), &edges), "layers")
            }
        }
    } else {
        (layers(drawn.len(), &edges), "layers")
    };
    let width = positions
        .iter()
        .map(|p| p.0 + NODE_W)
        .fold(NODE_W, f64::max)
        + 20.0;
    let height = positions
        .iter()
        .map(|p| p.1 + NODE_H)
        .fold(NODE_H, f64::max)
        + 20.0;
    let paths = edges
        .iter()
        .map(|&(from, to)| {
            let (x1, y1) = (positions[from].0 + NODE_W, positions[from].1 + NODE_H / 2.0);
            let (x2, y2) = (positions[to].0, positions[to].1 + NODE_H / 2.0);
            let mid = (x1 + x2) / 2.0;
            format!("M{x1:.0},{y1:.0} C{mid:.0},{y1:.0} {mid:.0},{y2:.0} {x2:.0},{y2:.0}")
        })
        .collect();
    let nodes = drawn
        .into_iter()
        .zip(positions)
        .map(|(d, (x, y))| (d, x, y))
        .collect();
    LineageLayout {
        nodes,
        edges: paths,
        edge_list: edges,
        width,
        height,
        elapsed: started.elapsed(),
        algorithm,
    }
}

/// Top-left corners from rust-sugiyama: its layers (y) become columns, its in-layer
/// coordinate (x) rows. Components are stacked vertically.
fn sugiyama(n: usize, edges: &[(usize, usize)]) -> Vec<(f64, f64)> {
    let vertices: Vec<(u32, (f64, f64))> =
        (0..n).map(|i| (i as u32, (NODE_H + GAP_Y, 1.0))).collect();
    let edges: Vec<(u32, u32)> = edges.iter().map(|&(a, b)| (a as u32, b as u32)).collect();
    let config = rust_sugiyama::configure::Config {
        vertex_spacing: 1.0,
        dummy_vertices: true,
        transpose: n <= 500,
        ..Default::default()
    };
    let components = rust_sugiyama::from_vertices_and_edges(&vertices, &edges, &config);
    let mut out = vec![(0.0, 0.0); n];
    let mut offset_y = 10.0;
    for (component, _, _) in components {
        // Layer rank from the distinct y values; rows from x.
        let mut ys: Vec<f64> = component.iter().map(|(_, (_, y))| *y).collect();
        ys.sort_by(f64::total_cmp);
        ys.dedup();
        let min_x = component
            .iter()
            .map(|(_, (x, _))| *x)
            .fold(f64::INFINITY, f64::min);
        let mut max_y: f64 = 0.0;
        for (id, (x, y)) in &component {
            let layer = ys.partition_point(|v| v < y);
            let px = 10.0 + layer as f64 * (NODE_W + GAP_X);
            let py = offset_y + (x - min_x);
            max_y = max_y.max(py);
            if let Some(slot) = out.get_mut(*id) {
                *slot = (px, py);
            }
        }
        offset_y = max_y + NODE_H + GAP_Y * 2.0;
    }
    out
}

/// Longest-path layers, each ordered once by the mean row of its parents: linear time.
/// Collapsed groups can make cycles (group → asset → group): Kahn's order, breaking a cycle at
/// its lowest index, and edges against that order are ignored for ranking.
fn layers(n: usize, edges: &[(usize, usize)]) -> Vec<(f64, f64)> {
    let mut parents: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut indegree = vec![0usize; n];
    for &(a, b) in edges {
        parents[b].push(a);
        children[a].push(b);
        indegree[b] += 1;
    }
    let mut ready: std::collections::BTreeSet<usize> =
        (0..n).filter(|&v| indegree[v] == 0).collect();
    let mut done = vec![false; n];
    let mut rank = vec![0usize; n];
    let mut next_unplaced = 0;
    for _ in 0..n {
        let v = match ready.pop_first() {
            Some(v) => v,
            None => {
                while done[next_unplaced] {
                    next_unplaced += 1;
                }
                next_unplaced
            }
        };
        done[v] = true;
        rank[v] = parents[v]
            .iter()
            .filter(|&&p| done[p] && p != v)
            .map(|&p| rank[p] + 1)
            .max()
            .unwrap_or(0);
        for &c in &children[v] {
            if !done[c] {
                indegree[c] = indegree[c].saturating_sub(1);
                if indegree[c] == 0 {
                    ready.insert(c);
                }
            }
        }
    }
    let depth = rank.iter().copied().max().map_or(0, |m| m + 1);
    let mut by_layer: Vec<Vec<usize>> = vec![Vec::new(); depth];
    for v in 0..n {
        by_layer[rank[v]].push(v);
    }
    let mut row = vec![0.0f64; n];
    let mut out = vec![(0.0, 0.0); n];
    for (layer, members) in by_layer.iter_mut().enumerate() {
        let key = |v: usize| {
            let ps = &parents[v];
            if ps.is_empty() {
                v as f64
            } else {
                ps.iter().map(|&p| row[p]).sum::<f64>() / ps.len() as f64
            }
        };
        let mut keyed: Vec<(f64, usize)> = members.iter().map(|&v| (key(v), v)).collect();
        keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for (i, (_, v)) in keyed.into_iter().enumerate() {
            row[v] = i as f64;
            out[v] = (
                10.0 + layer as f64 * (NODE_W + GAP_X),
                10.0 + i as f64 * (NODE_H + GAP_Y),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlaps(p: &[(f64, f64)]) -> bool {
        for (i, a) in p.iter().enumerate() {
            for b in &p[i + 1..] {
                if (a.0 - b.0).abs() < NODE_W && (a.1 - b.1).abs() < NODE_H {
                    return true;
                }
            }
        }
        false
    }

    #[test]
    fn parents_are_left_of_children_and_nodes_never_overlap() {
        // A diamond plus a chain and an isolated node.
        let edges = [(0, 1), (0, 2), (1, 3), (2, 3), (3, 4)];
        for positions in [sugiyama(6, &edges), layers(6, &edges)] {
            for &(a, b) in &edges {
                assert!(positions[a].0 < positions[b].0, "{positions:?}");
            }
            assert!(!overlaps(&positions), "{positions:?}");
        }
    }

    #[test]
    fn cycles_from_collapsed_groups_still_lay_out() {
        // group(0) → asset(1) → group(0), plus a tail.
        let positions = layers(3, &[(0, 1), (1, 0), (1, 2)]);
        assert_eq!(positions.len(), 3);
        assert!(!overlaps(&positions), "{positions:?}");
        assert!(positions[1].0 < positions[2].0, "{positions:?}");
    }
}
