//! The home page: the asset lineage as a server-laid-out SVG, each node showing its state,
//! checks, partition health, group and kinds; filtered by the selection language, groups
//! collapsible. The layout is cached ([`crate::layout`]); `app.js` refreshes node states
//! from the JSON twin without laying out again.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::layout::{Drawn, LayoutKey, LineageLayout, NODE_H, NODE_W, compute, group_of};
use crate::shell::{Format, Query, encode, page, respond};
use crate::state::UiState;
use crate::status::{AssetState, NodeState, asset_states};

/// Selected assets above which groups start collapsed.
const COLLAPSE_ABOVE: usize = 300;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct LineageQuery {
    /// Selection expression (default `*`).
    #[serde(default)]
    select: Option<String>,
    /// `all`, `none`, or comma-separated group names.
    #[serde(default)]
    collapse: Option<String>,
}

/// One drawn node in the JSON twin.
#[derive(Debug, Serialize)]
struct NodeView {
    /// DOM id of the node's `<g>`.
    id: String,
    /// Asset key, or `group:NAME`.
    key: String,
    x: f64,
    y: f64,
    /// The node's state (a collapsed group: its worst member's).
    state: NodeState,
    /// Assets drawn in it (1 for an asset).
    assets: usize,
    /// The asset's state details.
    #[serde(skip_serializing_if = "Option::is_none")]
    asset: Option<AssetState>,
}

#[derive(Debug, Serialize)]
struct LineageData {
    definitions_hash: String,
    select: String,
    collapsed: Vec<String>,
    groups: Vec<String>,
    algorithm: &'static str,
    layout_ms: f64,
    width: f64,
    height: f64,
    nodes: Vec<NodeView>,
    /// Edges as [from, to] DOM ids of `nodes`.
    edges: Vec<(String, String)>,
    error: Option<String>,
}

/// Worst first: what a collapsed group shows.
fn severity(s: NodeState) -> u8 {
    match s {
        NodeState::Failed => 5,
        NodeState::Running => 4,
        NodeState::Stale => 3,
        NodeState::Missing => 2,
        NodeState::Materialized => 1,
        NodeState::Source => 0,
    }
}

/// `GET /`.
pub(crate) async fn lineage(
    State(ui): State<UiState>,
    format: Format,
    Query(q): Query<LineageQuery>,
) -> Result<Response> {
    let graph = ui.graph().clone();
    let select = q
        .select
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("*")
        .to_owned();
    let (selection, error) = match graph.select(&[select.as_str()], &[] as &[&str]) {
        Ok(s) => (s, None),
        Err(e) => (
            graph.select(&["*"], &[] as &[&str])?,
            Some(rainbow_engine::error::error_chain(&e)),
        ),
    };
    let groups: BTreeSet<String> = selection
        .iter()
        .map(|n| group_of(&graph, n).to_owned())
        .collect();
    let collapsed: BTreeSet<String> = match q.collapse.as_deref() {
        Some("all") => groups.clone(),
        Some("none") | Some("") => BTreeSet::new(),
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|g| groups.contains(*g))
            .map(str::to_owned)
            .collect(),
        None if selection.len() > COLLAPSE_ABOVE && groups.len() > 1 => groups.clone(),
        None => BTreeSet::new(),
    };
    let layout = cached_layout(&ui, &select, &selection, &collapsed).await;
    let states = asset_states(&ui, &selection).await?;
    let nodes: Vec<NodeView> = layout
        .nodes
        .iter()
        .enumerate()
        .map(|(i, (drawn, x, y))| match drawn {
            Drawn::Asset(node) => {
                let st = states[*node].clone();
                NodeView {
                    id: format!("n{i}"),
                    key: graph.node(*node).spec.key.to_string(),
                    x: *x,
                    y: *y,
                    state: st.as_ref().map_or(NodeState::Missing, |s| s.state),
                    assets: 1,
                    asset: st,
                }
            }
            Drawn::Group { name, members } => NodeView {
                id: format!("n{i}"),
                key: format!("group:{name}"),
                x: *x,
                y: *y,
                state: members
                    .iter()
                    .filter_map(|m| states[*m].as_ref().map(|s| s.state))
                    .max_by_key(|s| severity(*s))
                    .unwrap_or(NodeState::Missing),
                assets: members.len(),
                asset: None,
            },
        })
        .collect();
    let data = LineageData {
        definitions_hash: ui.inner.definitions_hash.clone(),
        select,
        collapsed: collapsed.into_iter().collect(),
        groups: groups.into_iter().collect(),
        algorithm: layout.algorithm,
        layout_ms: layout.elapsed.as_secs_f64() * 1000.0,
        width: layout.width,
        height: layout.height,
        edges: layout
            .edge_list
            .iter()
            .map(|(a, b)| (format!("n{a}"), format!("n{b}")))
            .collect(),
        nodes,
        error,
    };
    let status = if data.error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let response = respond(format, &data, |d| render(d, &layout));
    Ok((status, response).into_response())
}

/// The layout for this selection and collapsed set, computed once (on a blocking thread: a
/// large graph takes seconds) and cached for the process.
async fn cached_layout(
    ui: &UiState,
    select: &str,
    selection: &rainbow_engine::NodeSet,
    collapsed: &BTreeSet<String>,
) -> Arc<LineageLayout> {
    let key = LayoutKey {
        select: select.to_owned(),
        collapsed: collapsed.iter().cloned().collect(),
    };
    if let Ok(cache) = ui.inner.layouts.lock()
        && let Some(layout) = cache.get(&key)
    {
        return layout.clone();
    }
    let graph = ui.graph().clone();
    let selection = selection.clone();
    let collapsed = collapsed.clone();
    let max = ui.inner.options.sugiyama_max_nodes;
    let layout =
        match tokio::task::spawn_blocking(move || compute(&graph, &selection, &collapsed, max))
            .await
        {
            Ok(layout) => Arc::new(layout),
            Err(e) => {
                tracing::error!("lineage layout task failed: {e}");
                Arc::new(LineageLayout {
                    nodes: Vec::new(),
                    edges: Vec::new(),
                    edge_list: Vec::new(),
                    width: NODE_W,
                    height: NODE_H,
                    elapsed: std::time::Duration::ZERO,
                    algorithm: "none",
                })
            }
        };
    if let Ok(mut cache) = ui.inner.layouts.lock() {
        // Bounded: an operator trying many filters does not grow memory without limit.
        if cache.len() >= 64 {
            cache.clear();
        }
        cache.insert(key, layout.clone());
    }
    layout
}

/// The link to this page with another collapsed set.
fn href(select: &str, collapsed: &BTreeSet<&str>) -> String {
    let list = if collapsed.is_empty() {
        "none".to_owned()
    } else {
        collapsed.iter().copied().collect::<Vec<_>>().join(",")
    };
    format!("/?select={}&collapse={}", encode(select), encode(&list))
}

fn render(d: &LineageData, layout: &LineageLayout) -> String {
    let collapsed: BTreeSet<&str> = d.collapsed.iter().map(String::as_str).collect();
    let group_links = d
        .groups
        .iter()
        .map(|g| {
            let mut set = collapsed.clone();
            let (label, title) = if set.remove(g.as_str()) {
                (format!("⊞ {g}"), "expand")
            } else {
                set.insert(g.as_str());
                (format!("⊟ {g}"), "collapse")
            };
            let link = href(&d.select, &set);
            view! { <a class="chip" href=link title=title>{label}</a> }
        })
        .collect_view();
    let all = href(&d.select, &d.groups.iter().map(String::as_str).collect());
    let none = href(&d.select, &BTreeSet::new());
    let error = d
        .error
        .clone()
        .map(|e| view! { <p class="error field-error">{e}</p> });
    let select = d.select.clone();
    let summary = format!(
        "{} nodes, {} edges · layout {} in {:.0} ms (cached) · definitions {}",
        d.nodes.len(),
        d.edges.len(),
        d.algorithm,
        d.layout_ms,
        d.definitions_hash
    );
    let edges = layout
        .edges
        .iter()
        .map(|p| view! { <path d=p.clone()/> })
        .collect_view();
    let nodes = d.nodes.iter().map(node_view).collect_view();
    let (w, h) = (d.width, d.height);
    let body = view! {
        <div class="toolbar">
            <form method="get" action="/" class="inline">
                <label>"Select " <input name="select" value=select size="40" placeholder="e.g. +fact_sales, group:views, tag:layer=gold"/></label>
                <button type="submit">"Filter"</button>
            </form>
            <span class="muted">{summary}</span>
        </div>
        {error}
        <div class="groups">"Groups: " {group_links} " " <a href=all>"collapse all"</a> " · " <a href=none>"expand all"</a></div>
        <div class="legend">
            <span class="pill materialized">"materialized"</span><span class="pill stale">"stale"</span>
            <span class="pill missing">"missing"</span><span class="pill failed">"failed"</span>
            <span class="pill running">"running"</span><span class="pill source">"source"</span>
        </div>
        <div id="lineage" class="lineage" data-poll="3000">
            <svg id="lineage-svg" viewBox=format!("0 0 {w:.0} {h:.0}") width=format!("{w:.0}") height=format!("{h:.0}")>
                <g class="edges">{edges}</g>
                <g class="nodes">{nodes}</g>
            </svg>
        </div>
    }
    .into_any();
    page("Lineage", "/", body)
}

fn node_view(n: &NodeView) -> AnyView {
    let class = format!("node {}", n.state.as_str());
    let transform = format!("translate({:.0},{:.0})", n.x, n.y);
    let id = n.id.clone();
    let full = n.key.clone();
    let Some(a) = &n.asset else {
        // A collapsed group: a link that expands it is in the group bar; the node opens the
        // catalog filtered to the group.
        let name = n.key.trim_start_matches("group:").to_owned();
        let href = format!("/assets?group={}", encode(&name));
        let label = format!("▣ {name}");
        let sub = format!("{} assets · {}", n.assets, n.state.as_str());
        return view! {
            <g id=id class=format!("{class} group") transform=transform data-key=full>
                <a href=href>
                    <rect class="box" width=NODE_W height=NODE_H rx="8"/>
                    <text x="10" y="22" class="name">{label}</text>
                    <text x="10" y="42" class="sub">{sub}</text>
                </a>
            </g>
        }
        .into_any();
    };
    let label = if full.chars().count() > 25 {
        let tail: String = full
            .chars()
            .rev()
            .take(24)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("…{tail}")
    } else {
        full.clone()
    };
    let mut sub = a.state.as_str().to_owned();
    if let Some(p) = a.partitions {
        sub.push_str(&format!(" · {}/{}", p.materialized, p.total));
    }
    if a.checks.defined > 0 {
        sub.push_str(&format!(
            " · {}✓{}",
            a.checks.passed,
            if a.checks.failed + a.checks.warned > 0 {
                format!(" {}✗ {}⚠", a.checks.failed, a.checks.warned)
            } else {
                String::new()
            }
        ));
    }
    let mut tip = full.clone();
    for r in &a.reasons {
        tip.push('\n');
        tip.push_str(r);
    }
    let bar = a.partitions.map(|p| {
        let total = p.total.max(1) as f64;
        let w = NODE_W - 20.0;
        let mut x = 10.0;
        let segs: Vec<(f64, f64, &'static str)> = [
            (p.materialized, "materialized"),
            (p.failed, "failed"),
            (p.in_progress, "in_progress"),
            (p.missing, "missing"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, class)| {
            let width = (n as f64 / total * w).max(1.5);
            let at = x;
            x += width;
            (at, width, class)
        })
        .collect();
        segs.into_iter()
            .map(|(at, width, class)| {
                view! { <rect x=format!("{at:.1}") y="50" width=format!("{width:.1}") height="6" class=format!("seg {class}")/> }
            })
            .collect_view()
    });
    let href = crate::pages::assets::asset_href(&n.key);
    view! {
        <g id=id class=class transform=transform data-key=full>
            <a href=href>
                <title>{tip}</title>
                <rect class="box" width=NODE_W height=NODE_H rx="6"/>
                <text x="10" y="20" class="name">{label}</text>
                <text x="10" y="38" class="sub" data-state=a.state.as_str()>{sub}</text>
                {bar}
            </a>
        </g>
    }
    .into_any()
}
