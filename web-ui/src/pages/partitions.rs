//! An asset's partitions: the health bar (one rectangle per status range, so 40,000
//! partitions draw as a handful of rectangles), counts per state, drill-down to a key range,
//! and one partition's history.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::Response;
use leptos::prelude::*;
use rainbow_engine::AssetKey;
use rainbow_engine::partitions::{PartitionState, StatusRange, status_ranges};
use rainbow_engine::storage::MaterializationRecord;
use serde::{Deserialize, Serialize};

use crate::error::{Result, UiError};
use crate::pages::assets::{asset_href, find_asset, metadata_table};
use crate::shell::{Format, Query, encode, page, pill, respond, time};
use crate::state::UiState;
use crate::svg::{Segment, health_bar};

#[derive(Debug, Deserialize)]
pub(crate) struct PartitionsQuery {
    asset: String,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    partition: Option<String>,
}

#[derive(Debug, Serialize)]
struct PartitionsData {
    asset: String,
    definition: String,
    /// Partitions defined now.
    total: usize,
    /// Partitions in the range shown.
    shown: usize,
    from: Option<String>,
    to: Option<String>,
    counts: BTreeMap<&'static str, usize>,
    ranges: Vec<StatusRange>,
    /// One partition's state and history, when asked for.
    partition: Option<PartitionHistory>,
}

#[derive(Debug, Serialize)]
struct PartitionHistory {
    key: String,
    state: PartitionState,
    materializations: Vec<MaterializationRecord>,
}

/// Ranges listed in the HTML table at most.
const RANGE_ROWS: usize = 500;

/// `GET /partitions?asset=K[&from=&to=][&partition=P]`.
pub(crate) async fn partitions(
    State(ui): State<UiState>,
    format: Format,
    Query(q): Query<PartitionsQuery>,
) -> Result<Response> {
    let node = find_asset(&ui, &q.asset)?;
    let graph = ui.graph();
    let def = graph
        .partitions(node)
        .ok_or_else(|| UiError::BadRequest(format!("asset `{}` is not partitioned", q.asset)))?;
    let storage = ui.storage();
    let ctx = ui.partition_context().await?;
    let keys = ctx.keys_of(def)?;
    let key = AssetKey::from(q.asset.as_str());
    let states = storage.partition_states(&key).await?;
    let position = |k: &str, field: &str| {
        keys.iter().position(|x| x == k).ok_or_else(|| {
            UiError::BadRequest(format!("{field}: `{k}` is not a partition of {def}"))
        })
    };
    let (lo, hi) = match (&q.from, &q.to) {
        (Some(f), Some(t)) if !f.is_empty() && !t.is_empty() => {
            let (lo, hi) = (position(f, "from")?, position(t, "to")?);
            if lo > hi {
                return Err(UiError::BadRequest(format!(
                    "from `{f}` comes after to `{t}`"
                )));
            }
            (lo, hi + 1)
        }
        _ => (0, keys.len()),
    };
    let slice = &keys[lo..hi];
    let ranges = status_ranges(slice, &states);
    let mut counts = BTreeMap::new();
    for r in &ranges {
        *counts.entry(r.state.as_str()).or_insert(0usize) += r.count;
    }
    let partition = match &q.partition {
        Some(p) if !p.is_empty() => {
            position(p, "partition")?;
            Some(PartitionHistory {
                key: p.clone(),
                state: states.get(p).copied().unwrap_or(PartitionState::Missing),
                materializations: storage.materialization_history(&key, Some(p), 50).await?,
            })
        }
        _ => None,
    };
    let data = PartitionsData {
        asset: q.asset.clone(),
        definition: def.to_string(),
        total: keys.len(),
        shown: slice.len(),
        from: (lo > 0 || hi < keys.len())
            .then(|| slice.first().cloned())
            .flatten(),
        to: (lo > 0 || hi < keys.len())
            .then(|| slice.last().cloned())
            .flatten(),
        counts,
        ranges,
        partition,
    };
    Ok(respond(format, &data, render))
}

fn range_href(asset: &str, r: &StatusRange) -> String {
    if r.count == 1 {
        format!(
            "/partitions?asset={}&partition={}",
            encode(asset),
            encode(&r.start)
        )
    } else {
        format!(
            "/partitions?asset={}&from={}&to={}",
            encode(asset),
            encode(&r.start),
            encode(&r.end)
        )
    }
}

fn render(d: &PartitionsData) -> String {
    let segments: Vec<Segment> = d
        .ranges
        .iter()
        .map(|r| Segment {
            state: r.state.as_str(),
            count: r.count,
            tip: format!("{}..{}: {} {}", r.start, r.end, r.count, r.state.as_str()),
            href: Some(range_href(&d.asset, r)),
        })
        .collect();
    let bar = health_bar(&segments, 900.0, 28.0);
    let counts = d
        .counts
        .iter()
        .map(|(s, n)| {
            let label = format!("{n} {s}");
            view! { {pill(s, label)} " " }
        })
        .collect_view();
    let rows = d
        .ranges
        .iter()
        .take(RANGE_ROWS)
        .map(|r| {
            let href = range_href(&d.asset, r);
            let label = if r.count == 1 {
                r.start.clone()
            } else {
                format!("{} .. {}", r.start, r.end)
            };
            let st = r.state.as_str();
            let count = r.count;
            view! { <tr><td><a href=href>{label}</a></td><td>{pill(st, st)}</td><td>{count}</td></tr> }
        })
        .collect_view();
    let more = (d.ranges.len() > RANGE_ROWS).then(|| {
        let msg = format!(
            "{} more ranges: drill down with the bar",
            d.ranges.len() - RANGE_ROWS
        );
        view! { <p class="muted">{msg}</p> }
    });
    let scope = match (&d.from, &d.to) {
        (Some(f), Some(t)) => {
            let all = format!("/partitions?asset={}", encode(&d.asset));
            let label = format!("{} partitions from {f} to {t} · ", d.shown);
            view! { <p>{label} <a href=all>"all partitions"</a></p> }.into_any()
        }
        _ => {
            let label = format!("{} partitions · {}", d.total, d.definition);
            view! { <p>{label}</p> }.into_any()
        }
    };
    let history = d.partition.as_ref().map(|p| {
        let title = format!("Partition {}", p.key);
        let st = p.state.as_str();
        let rows = p
            .materializations
            .iter()
            .map(|m| {
                let when = time(Some(m.timestamp));
                let run = format!("/runs/{}", m.run_id);
                let run_id = m.run_id.clone();
                view! { <tr><td>{when}</td><td><a href=run>{run_id}</a></td><td>{metadata_table(&m.materialization.metadata)}</td></tr> }
            })
            .collect_view();
        let backfill = format!(
            "/backfills/new?select={}&mode=keys&keys={}",
            encode(&d.asset),
            encode(&p.key)
        );
        view! {
            <h2>{title} " " {pill(st, st)}</h2>
            <p><a href=backfill>"Backfill this partition"</a></p>
            <table class="grid"><thead><tr><th>"When"</th><th>"Run"</th><th>"Metadata"</th></tr></thead><tbody>{rows}</tbody></table>
        }
    });
    let asset = d.asset.clone();
    let asset_link = asset_href(&d.asset);
    // Within a drill-down range: that range; else every missing partition.
    let missing = match (&d.from, &d.to) {
        (Some(f), Some(t)) => format!(
            "/backfills/new?select={}&mode=range&from={}&to={}",
            encode(&d.asset),
            encode(f),
            encode(t)
        ),
        _ => format!("/backfills/new?select={}&mode=missing", encode(&d.asset)),
    };
    let missing_label = if d.from.is_some() {
        "Backfill this range"
    } else {
        "Backfill missing partitions"
    };
    let body = view! {
        <h1>"Partitions of " <a href=asset_link>{asset}</a></h1>
        {scope}
        <div class="healthbar">{bar}</div>
        <p>{counts}</p>
        <p><a href=missing>{missing_label}</a></p>
        {history}
        <h2>"Status ranges"</h2>
        <table class="grid"><thead><tr><th>"Partitions"</th><th>"State"</th><th>"Count"</th></tr></thead><tbody>{rows}</tbody></table>
        {more}
    }
    .into_any();
    page(&format!("Partitions of {}", d.asset), "/assets", body)
}
