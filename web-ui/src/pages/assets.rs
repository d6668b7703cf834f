//! The asset catalog (search, filters, sorting), the asset page (definition, latest
//! materialization and its metadata, metadata charts over time and over partitions,
//! staleness, check history, the materialize button) and the materialize action, which only
//! queues a run for the daemon.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use leptos::prelude::*;
use rainbow_engine::graph::NodeId;
use rainbow_engine::storage::{MaterializationRecord, NewRun};
use rainbow_engine::{AssetKey, MetadataValue, RunStatus};
use serde::{Deserialize, Serialize};

use crate::error::{Result, UiError};
use crate::layout::group_of;
use crate::shell::{Form, Format, Query, csrf_field, encode, page, pill, respond, time};
use crate::state::UiState;
use crate::status::{AssetState, NodeState, asset_states};
use crate::svg::{Point, line_chart};

/// The node of asset `key`, or a not-found error suggesting near keys.
pub(crate) fn find_asset(ui: &UiState, key: &str) -> Result<NodeId> {
    let graph = ui.graph();
    graph.node_id(&AssetKey::from(key)).ok_or_else(|| {
        let keys: Vec<String> = graph
            .nodes()
            .iter()
            .map(|n| n.spec.key.to_string())
            .collect();
        UiError::NotFound {
            kind: "asset",
            id: key.to_owned(),
            hint: rainbow_engine::error::did_you_mean(key, keys.iter().map(String::as_str)),
        }
    })
}

/// The link to an asset's page.
pub(crate) fn asset_href(key: &str) -> String {
    format!("/assets/{}", encode(key))
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct CatalogQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    group: String,
    #[serde(default)]
    kind: String,
    /// `KEY` or `KEY=VALUE`.
    #[serde(default)]
    tag: String,
    #[serde(default)]
    state: String,
    /// `key` (default) or `last_materialized`.
    #[serde(default)]
    sort: String,
    /// `asc` or `desc`.
    #[serde(default)]
    dir: String,
}

#[derive(Debug, Serialize)]
struct CatalogRow {
    key: String,
    group: String,
    kinds: Vec<String>,
    tags: BTreeMap<String, String>,
    state: AssetState,
}

#[derive(Debug, Serialize)]
struct CatalogData {
    total: usize,
    shown: usize,
    groups: Vec<String>,
    kinds: Vec<String>,
    assets: Vec<CatalogRow>,
}

/// Rows shown on one catalog page at most (the JSON twin returns every match).
const CATALOG_HTML_ROWS: usize = 2_000;

/// `GET /assets`.
pub(crate) async fn catalog(
    State(ui): State<UiState>,
    format: Format,
    Query(q): Query<CatalogQuery>,
) -> Result<Response> {
    let graph = ui.graph();
    let all = graph.select(&["*"], &[] as &[&str])?;
    let states = asset_states(&ui, &all).await?;
    let state_filter = if q.state.is_empty() {
        None
    } else {
        Some(NodeState::parse(&q.state).ok_or_else(|| {
            UiError::BadRequest(format!(
                "state `{}`: expected materialized, stale, missing, failed, running or source",
                q.state
            ))
        })?)
    };
    let known = |what: &str, value: &str, all: &mut dyn Iterator<Item = String>| -> Result<()> {
        let all: Vec<String> = all.collect();
        if value.is_empty() || all.iter().any(|v| v == value) {
            return Ok(());
        }
        Err(UiError::BadRequest(format!(
            "{what} `{value}` is not in the definitions{}",
            rainbow_engine::error::did_you_mean(value, all.iter().map(String::as_str))
        )))
    };
    known(
        "group",
        &q.group,
        &mut (0..graph.len()).map(|n| group_of(graph, n).to_owned()),
    )?;
    known(
        "kind",
        &q.kind,
        &mut graph
            .nodes()
            .iter()
            .flat_map(|n| n.spec.kinds.iter().cloned()),
    )?;
    if !["", "key", "last_materialized"].contains(&q.sort.as_str()) {
        return Err(UiError::BadRequest(format!(
            "sort `{}`: expected key or last_materialized",
            q.sort
        )));
    }
    if !["", "asc", "desc"].contains(&q.dir.as_str()) {
        return Err(UiError::BadRequest(format!(
            "dir `{}`: expected asc or desc",
            q.dir
        )));
    }
    let needle = q.q.to_lowercase();
    let (tag_key, tag_value) = match q.tag.split_once('=') {
        Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
        None => (q.tag.clone(), None),
    };
    let mut groups = std::collections::BTreeSet::new();
    let mut kinds = std::collections::BTreeSet::new();
    let mut rows = Vec::new();
    for (id, node) in graph.nodes().iter().enumerate() {
        let spec = &node.spec;
        let group = group_of(graph, id).to_owned();
        groups.insert(group.clone());
        kinds.extend(spec.kinds.iter().cloned());
        let Some(state) = states[id].clone() else {
            continue;
        };
        let key = spec.key.to_string();
        let keep = (needle.is_empty()
            || key.to_lowercase().contains(&needle)
            || spec
                .description
                .as_deref()
                .is_some_and(|d| d.to_lowercase().contains(&needle)))
            && (q.group.is_empty() || group == q.group)
            && (q.kind.is_empty() || spec.kinds.contains(&q.kind))
            && (tag_key.is_empty()
                || spec
                    .tags
                    .get(&tag_key)
                    .is_some_and(|v| tag_value.as_ref().is_none_or(|want| want == v)))
            && state_filter.is_none_or(|s| s == state.state);
        if keep {
            rows.push(CatalogRow {
                key,
                group,
                kinds: spec.kinds.iter().cloned().collect(),
                tags: spec.tags.clone(),
                state,
            });
        }
    }
    match q.sort.as_str() {
        "last_materialized" => rows.sort_by(|a, b| {
            a.state
                .last_materialized
                .cmp(&b.state.last_materialized)
                .then_with(|| a.key.cmp(&b.key))
        }),
        _ => rows.sort_by(|a, b| a.key.cmp(&b.key)),
    }
    if q.dir == "desc" {
        rows.reverse();
    }
    let data = CatalogData {
        total: graph.len(),
        shown: rows.len(),
        groups: groups.into_iter().collect(),
        kinds: kinds.into_iter().collect(),
        assets: rows,
    };
    Ok(respond(format, &data, |d| render_catalog(d, &q)))
}

fn options(values: &[String], selected: &str) -> impl IntoView + use<> {
    let selected = selected.to_owned();
    let mut all = vec![String::new()];
    all.extend(values.iter().cloned());
    all.into_iter()
        .map(|v| {
            let is = v == selected;
            let label = if v.is_empty() {
                "any".to_owned()
            } else {
                v.clone()
            };
            view! { <option value=v selected=is>{label}</option> }
        })
        .collect_view()
}

fn render_catalog(d: &CatalogData, q: &CatalogQuery) -> String {
    let states: Vec<String> = [
        "materialized",
        "stale",
        "missing",
        "failed",
        "running",
        "source",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let sort_link = |field: &str| {
        let dir = if q.sort == field && q.dir != "desc" {
            "desc"
        } else {
            "asc"
        };
        format!(
            "/assets?q={}&group={}&kind={}&tag={}&state={}&sort={field}&dir={dir}",
            encode(&q.q),
            encode(&q.group),
            encode(&q.kind),
            encode(&q.tag),
            encode(&q.state)
        )
    };
    let rows = d
        .assets
        .iter()
        .take(CATALOG_HTML_ROWS)
        .map(|r| {
            let href = asset_href(&r.key);
            let key = r.key.clone();
            let group = r.group.clone();
            let kinds = r.kinds.join(", ");
            let last = time(r.state.last_materialized);
            let checks = if r.state.checks.defined == 0 {
                "-".to_owned()
            } else {
                format!(
                    "{} passed, {} failed, {} warned of {}",
                    r.state.checks.passed,
                    r.state.checks.failed,
                    r.state.checks.warned,
                    r.state.checks.defined
                )
            };
            let parts = r.state.partitions.map_or("-".to_owned(), |p| {
                format!(
                    "{}/{} materialized, {} failed",
                    p.materialized, p.total, p.failed
                )
            });
            let st = r.state.state.as_str();
            view! {
                <tr>
                    <td><a href=href>{key}</a></td>
                    <td>{group}</td>
                    <td>{kinds}</td>
                    <td>{pill(st, st)}</td>
                    <td>{last}</td>
                    <td>{checks}</td>
                    <td>{parts}</td>
                </tr>
            }
        })
        .collect_view();
    let more = (d.assets.len() > CATALOG_HTML_ROWS).then(|| {
        let msg = format!(
            "showing the first {CATALOG_HTML_ROWS} of {} matches; narrow the filters (or use ?format=json)",
            d.assets.len()
        );
        view! { <p class="muted">{msg}</p> }
    });
    let summary = format!("{} of {} assets", d.shown, d.total);
    let body = view! {
        <h1>"Assets"</h1>
        <form method="get" action="/assets" class="inline filters">
            <label>"Search " <input name="q" value=q.q.clone()/></label>
            <label>"Group " <select name="group">{options(&d.groups, &q.group)}</select></label>
            <label>"Kind " <select name="kind">{options(&d.kinds, &q.kind)}</select></label>
            <label>"Tag " <input name="tag" value=q.tag.clone() placeholder="key or key=value" size="14"/></label>
            <label>"State " <select name="state">{options(&states, &q.state)}</select></label>
            <input type="hidden" name="sort" value=q.sort.clone()/>
            <input type="hidden" name="dir" value=q.dir.clone()/>
            <button type="submit">"Filter"</button>
        </form>
        <p class="muted">{summary}</p>
        <table class="grid">
            <thead><tr>
                <th><a href=sort_link("key")>"Asset"</a></th><th>"Group"</th><th>"Kinds"</th><th>"State"</th>
                <th><a href=sort_link("last_materialized")>"Last materialized"</a></th><th>"Checks"</th><th>"Partitions"</th>
            </tr></thead>
            <tbody>{rows}</tbody>
        </table>
        {more}
    }
    .into_any();
    page("Assets", "/assets", body)
}

#[derive(Debug, Serialize)]
struct AssetData {
    key: String,
    group: String,
    kinds: Vec<String>,
    owners: Vec<String>,
    tags: BTreeMap<String, String>,
    description: Option<String>,
    code_version: Option<String>,
    partitions: Option<String>,
    upstream: Vec<String>,
    downstream: Vec<String>,
    checks: Vec<String>,
    state: Option<AssetState>,
    compiled_sql: Option<String>,
    materializations: Vec<MaterializationRecord>,
    by_partition: Vec<MaterializationRecord>,
    check_history: Vec<rainbow_engine::storage::CheckResultRecord>,
    /// An error of the materialize form, shown next to it.
    materialize_error: Option<String>,
}

/// History rows read for the asset page's charts and tables.
const HISTORY: i64 = 200;
/// Partitions on the "by partition" charts: the most recent ones.
const PARTITION_CHART_POINTS: i64 = 500;

async fn asset_data(
    ui: &UiState,
    key: &str,
    materialize_error: Option<String>,
) -> Result<AssetData> {
    let node = find_asset(ui, key)?;
    let graph = ui.graph();
    let spec = &graph.node(node).spec;
    let asset_key = spec.key.clone();
    let mut only = rainbow_engine::NodeSet::empty(graph.len());
    only.insert(node);
    let state = asset_states(ui, &only).await?.swap_remove(node);
    let storage = ui.storage();
    let materializations = storage.materializations(&asset_key, HISTORY).await?;
    let mut by_partition = if spec.partitions.is_some() {
        storage
            .latest_by_partition(&asset_key, PARTITION_CHART_POINTS)
            .await?
    } else {
        Vec::new()
    };
    by_partition.sort_by(|a, b| a.partition_key.cmp(&b.partition_key));
    let check_history = storage.check_results(&asset_key, 50).await?;
    let keys = |ids: &[NodeId]| -> Vec<String> {
        ids.iter()
            .map(|&i| graph.node(i).spec.key.to_string())
            .collect()
    };
    Ok(AssetData {
        key: asset_key.to_string(),
        group: group_of(graph, node).to_owned(),
        kinds: spec.kinds.iter().cloned().collect(),
        owners: spec.owners.clone(),
        tags: spec.tags.clone(),
        description: spec.description.clone(),
        code_version: spec.code_version.clone(),
        partitions: spec.partitions.as_ref().map(ToString::to_string),
        upstream: keys(graph.parents(node)),
        downstream: keys(graph.children(node)),
        checks: graph
            .checks_for(node)
            .map(|c| c.spec.name.clone())
            .collect(),
        state,
        compiled_sql: ui
            .inner
            .code_location
            .as_ref()
            .and_then(|c| c.compiled_sql(&asset_key)),
        materializations,
        by_partition,
        check_history,
        materialize_error,
    })
}

/// `GET /assets/{*key}`.
pub(crate) async fn asset_page(
    State(ui): State<UiState>,
    format: Format,
    Path(key): Path<String>,
) -> Result<Response> {
    let data = asset_data(&ui, &key, None).await?;
    Ok(respond(format, &data, |d| render_asset(&ui, d)))
}

/// A metadata value as text ([`MetadataValue::text`]; durations as the UI writes them).
pub(crate) fn metadata_text(v: &MetadataValue) -> String {
    match v {
        MetadataValue::Duration(d) => crate::shell::seconds(*d),
        other => other.text(),
    }
}

fn numeric(v: &MetadataValue) -> Option<f64> {
    match v {
        MetadataValue::Int(i) => Some(*i as f64),
        MetadataValue::Float(f) => Some(*f),
        MetadataValue::RowCount(n) => Some(*n as f64),
        MetadataValue::Duration(d) => Some(*d),
        _ => None,
    }
}

/// `<table>` of metadata entries (values escaped).
pub(crate) fn metadata_table(m: &rainbow_engine::Metadata) -> AnyView {
    if m.is_empty() {
        return view! { <p class="muted">"no metadata"</p> }.into_any();
    }
    let rows = m
        .iter()
        .map(|(k, v)| {
            let k = k.clone();
            let v = metadata_text(v);
            view! { <tr><th>{k}</th><td><code>{v}</code></td></tr> }
        })
        .collect_view();
    view! { <table class="kv">{rows}</table> }.into_any()
}

/// Charts of every numeric metadata entry (at most 6): `records` in the order given.
fn metadata_charts(
    records: &[&MaterializationRecord],
    label: impl Fn(&MaterializationRecord) -> String,
    suffix: &str,
) -> AnyView {
    let mut names: Vec<String> = Vec::new();
    for r in records {
        for (k, v) in &r.materialization.metadata {
            if numeric(v).is_some() && !names.contains(k) && names.len() < 6 {
                names.push(k.clone());
            }
        }
    }
    names
        .into_iter()
        .map(|name| {
            let points: Vec<Point> = records
                .iter()
                .filter_map(|r| {
                    r.materialization
                        .metadata
                        .get(&name)
                        .and_then(numeric)
                        .map(|value| Point {
                            label: label(r),
                            value,
                        })
                })
                .collect();
            line_chart(&format!("{name} {suffix}"), &points)
        })
        .collect_view()
        .into_any()
}

fn list_links(keys: &[String]) -> AnyView {
    if keys.is_empty() {
        return view! { <span class="muted">"none"</span> }.into_any();
    }
    keys.iter()
        .map(|k| {
            let href = asset_href(k);
            let k = k.clone();
            view! { <a class="chip" href=href>{k}</a> }
        })
        .collect_view()
        .into_any()
}

fn render_asset(ui: &UiState, d: &AssetData) -> String {
    let key = d.key.clone();
    let st = d.state.as_ref().map_or("missing", |s| s.state.as_str());
    let reasons = d
        .state
        .as_ref()
        .map(|s| s.reasons.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|r| view! { <li>{r}</li> })
        .collect_view();
    let partitioned = d.partitions.is_some();
    let partition_field = partitioned.then(|| {
        view! { <label>"Partition " <input name="partition" placeholder="partition key" required/></label> }
    });
    let error = d
        .materialize_error
        .clone()
        .map(|e| view! { <span class="error field-error">{e}</span> });
    let materialize = view! {
        <form method="post" action="/assets-materialize" class="inline card">
            {csrf_field(ui.csrf_token())}
            <input type="hidden" name="asset" value=key.clone()/>
            {partition_field}
            <button type="submit">"Materialize"</button>
            {error}
        </form>
    };
    let partitions_link = partitioned.then(|| {
        let href = format!("/partitions?asset={}", encode(&d.key));
        view! { <a href=href>"Partitions"</a> " · " }
    });
    let runs_link = format!("/runs?asset={}", encode(&d.key));
    let backfill_link = crate::pages::backfills::launch_href(&d.key);
    let tags = d
        .tags
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ");
    let latest = d.materializations.first().map(|m| {
        let run = format!("/runs/{}", m.run_id);
        let run_id = m.run_id.clone();
        let when = time(Some(m.timestamp));
        let partition = m.partition_key.clone().unwrap_or_else(|| "-".into());
        let code = m.materialization.code_version.clone().unwrap_or_else(|| "-".into());
        view! {
            <p>{when} " · partition " {partition} " · code version " {code} " · run " <a href=run>{run_id}</a></p>
            {metadata_table(&m.materialization.metadata)}
        }
    });
    // A range run records the same metadata once per partition: one point per run over time,
    // and none per partition (its numbers describe the whole range).
    let is_range = |r: &MaterializationRecord| {
        r.materialization
            .metadata
            .contains_key(rainbow_engine::executor::PARTITION_RANGE_METADATA)
    };
    let mut seen_runs = std::collections::HashSet::new();
    let over_time: Vec<&MaterializationRecord> = d
        .materializations
        .iter()
        .rev()
        .filter(|r| !is_range(r) || seen_runs.insert(r.run_id.as_str()))
        .collect();
    let time_charts = metadata_charts(&over_time, |r| time(Some(r.timestamp)), "over time");
    let by_partition: Vec<&MaterializationRecord> =
        d.by_partition.iter().filter(|r| !is_range(r)).collect();
    let by_range = d.by_partition.len() - by_partition.len();
    let partition_charts = partitioned.then(|| {
        let note = (by_range > 0).then(|| {
            let text = format!(
                "{by_range} of the latest {} partitions were materialized by range runs: their metadata describes the whole range, so they are left out of the charts by partition",
                d.by_partition.len()
            );
            view! { <p class="muted">{text}</p> }
        });
        view! {
            {metadata_charts(
                &by_partition,
                |r| r.partition_key.clone().unwrap_or_default(),
                "by partition (latest 500)",
            )}
            {note}
        }
    });
    let history = d
        .materializations
        .iter()
        .take(20)
        .map(|m| {
            let run = format!("/runs/{}", m.run_id);
            let run_id = m.run_id.clone();
            let when = time(Some(m.timestamp));
            let partition = m.partition_key.clone().unwrap_or_else(|| "-".into());
            let kind = if m.is_observation { "observation" } else { "materialization" };
            view! { <tr><td>{when}</td><td>{kind}</td><td>{partition}</td><td><a href=run>{run_id}</a></td></tr> }
        })
        .collect_view();
    let checks = d
        .check_history
        .iter()
        .map(|c| {
            let when = time(Some(c.timestamp));
            let name = c.evaluation.check_name.clone();
            let outcome = if c.evaluation.passed {
                "passed"
            } else if c.evaluation.severity == rainbow_engine::AssetCheckSeverity::Warn {
                "warn"
            } else {
                "failed"
            };
            let desc = c.evaluation.description.clone().unwrap_or_default();
            let run = format!("/runs/{}", c.run_id);
            let run_id = c.run_id.clone();
            view! { <tr><td>{when}</td><td>{name}</td><td>{pill(outcome, outcome)}</td><td>{desc}</td><td><a href=run>{run_id}</a></td></tr> }
        })
        .collect_view();
    let sql = d.compiled_sql.clone().map(|sql| {
        view! { <h2>"Compiled SQL"</h2><pre class="sql">{sql}</pre> }
    });
    let body = view! {
        <h1>{key.clone()} " " {pill(st, st)}</h1>
        <ul class="reasons">{reasons}</ul>
        <p>{partitions_link} <a href=runs_link>"Runs"</a> " · " <a href=backfill_link>"Launch backfill"</a></p>
        {materialize}
        <h2>"Definition"</h2>
        <table class="kv">
            <tr><th>"Description"</th><td>{d.description.clone().unwrap_or_default()}</td></tr>
            <tr><th>"Group"</th><td>{d.group.clone()}</td></tr>
            <tr><th>"Kinds"</th><td>{d.kinds.join(", ")}</td></tr>
            <tr><th>"Owners"</th><td>{d.owners.join(", ")}</td></tr>
            <tr><th>"Tags"</th><td>{tags}</td></tr>
            <tr><th>"Code version"</th><td>{d.code_version.clone().unwrap_or_default()}</td></tr>
            <tr><th>"Partitions"</th><td>{d.partitions.clone().unwrap_or_else(|| "unpartitioned".into())}</td></tr>
            <tr><th>"Upstream"</th><td>{list_links(&d.upstream)}</td></tr>
            <tr><th>"Downstream"</th><td>{list_links(&d.downstream)}</td></tr>
            <tr><th>"Checks"</th><td>{d.checks.join(", ")}</td></tr>
        </table>
        {sql}
        <h2>"Latest materialization"</h2>
        {latest}
        <h2>"Metadata"</h2>
        <div class="charts">{time_charts}{partition_charts}</div>
        <h2>"Materializations"</h2>
        <table class="grid"><thead><tr><th>"When"</th><th>"Kind"</th><th>"Partition"</th><th>"Run"</th></tr></thead><tbody>{history}</tbody></table>
        <h2>"Check history"</h2>
        <table class="grid"><thead><tr><th>"When"</th><th>"Check"</th><th>"Outcome"</th><th>"Description"</th><th>"Run"</th></tr></thead><tbody>{checks}</tbody></table>
    }
    .into_any();
    page(&d.key, "/assets", body)
}

#[derive(Debug, Deserialize)]
pub(crate) struct MaterializeForm {
    asset: String,
    #[serde(default)]
    partition: String,
}

/// `POST /assets-materialize`: queues a run of the asset (one partition of a partitioned
/// one) for the daemon, then shows the run. Bad input re-renders the asset page with the
/// error next to the button.
pub(crate) async fn materialize(
    State(ui): State<UiState>,
    Form(form): Form<MaterializeForm>,
) -> Result<Response> {
    let node = find_asset(&ui, &form.asset)?;
    let graph = ui.graph();
    let spec = &graph.node(node).spec;
    let partition = form.partition.trim().to_owned();
    let problem = match graph.partitions(node) {
        Some(_) if partition.is_empty() => {
            Some("a partitioned asset needs a partition key".to_owned())
        }
        Some(def) => {
            let ctx = ui.partition_context().await?;
            match def.has_key(&partition, &ctx) {
                Ok(true) => None,
                Ok(false) => Some(format!("`{partition}` is not a partition of {def}")),
                Err(e) => Some(rainbow_engine::error::error_chain(&e)),
            }
        }
        None if !partition.is_empty() => Some("the asset is not partitioned".to_owned()),
        None => None,
    };
    if let Some(problem) = problem {
        let data = asset_data(&ui, &form.asset, Some(problem)).await?;
        return Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::response::Html(render_asset(&ui, &data)),
        )
            .into_response());
    }
    let mut tags = BTreeMap::new();
    tags.insert("rainbow/launched_by".to_owned(), "ui".to_owned());
    let run = ui
        .storage()
        .create_run(NewRun {
            selection: format!("key:{}", spec.key),
            partition_key: (!partition.is_empty()).then_some(partition),
            tags,
            status: Some(RunStatus::Queued),
            ..Default::default()
        })
        .await?;
    Ok(Redirect::to(&format!("/runs/{}", run.run_id)).into_response())
}
