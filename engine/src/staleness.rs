//! Staleness: whether each asset is missing, fresh or stale, and why. An asset is stale when an
//! upstream asset was materialized (or a source observed with a new data version) after it, when
//! its `code_version` changed since its last materialization, or when an upstream asset is
//! itself stale.

use serde::Serialize;

use crate::error::Result;
use crate::event::format_micros;
use crate::graph::AssetGraph;
use crate::key::AssetKey;
use crate::selection::NodeSet;
use crate::storage::{MaterializationRecord, Storage};

/// The state of an asset relative to its code and its upstream data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Staleness {
    /// Never materialized.
    Missing,
    /// Materialized with the current code after all of its upstream data.
    Fresh,
    /// Out of date; see the reasons.
    Stale,
    /// A source asset (observed, never materialized).
    Source,
}

/// Status of one asset.
#[derive(Debug, Clone, Serialize)]
pub struct AssetStatus {
    /// The asset.
    pub key: AssetKey,
    /// Its state.
    pub staleness: Staleness,
    /// Why it is stale (empty otherwise).
    pub reasons: Vec<String>,
    /// Its latest materialization (or observation).
    pub latest: Option<MaterializationRecord>,
}

/// Computes the status of the selected assets (upstream assets are evaluated as needed).
pub async fn asset_statuses(
    graph: &AssetGraph,
    storage: &Storage,
    selection: &NodeSet,
) -> Result<Vec<AssetStatus>> {
    let mut latest = storage.latest_materializations().await?;
    let mut states: Vec<Option<Staleness>> = vec![None; graph.len()];
    // (timestamp, is_observation) of each asset's latest record, filled in topological order.
    let mut upstream_times: Vec<Option<(i64, bool)>> = vec![None; graph.len()];
    let mut out = Vec::new();
    for &node in graph.topological_order() {
        let spec = &graph.node(node).spec;
        let record = latest.remove(&spec.key);
        let mut reasons = Vec::new();
        let staleness = if graph.node(node).is_source {
            Staleness::Source
        } else {
            match &record {
                None => Staleness::Missing,
                Some(mine) => {
                    if let Some(current) = &spec.code_version
                        && mine.materialization.code_version.as_ref() != Some(current)
                    {
                        reasons.push(format!(
                            "code version changed from `{}` to `{current}` since the last materialization",
                            mine.materialization.code_version.as_deref().unwrap_or("none")
                        ));
                    }
                    for &parent in graph.parents(node) {
                        let parent_key = &graph.node(parent).spec.key;
                        if states[parent] == Some(Staleness::Stale) {
                            reasons.push(format!("upstream `{parent_key}` is stale"));
                        }
                        if let Some(up) = upstream_times[parent]
                            && up.0 > mine.timestamp
                        {
                            reasons.push(format!(
                                "upstream `{parent_key}` was {} at {}, after this asset's last materialization at {}",
                                if up.1 { "observed with a new data version" } else { "materialized" },
                                format_micros(up.0),
                                format_micros(mine.timestamp)
                            ));
                        }
                    }
                    if reasons.is_empty() {
                        Staleness::Fresh
                    } else {
                        Staleness::Stale
                    }
                }
            }
        };
        states[node] = Some(staleness);
        upstream_times[node] = record.as_ref().map(|r| (r.timestamp, r.is_observation));
        if selection.contains(node) {
            out.push(AssetStatus {
                key: spec.key.clone(),
                staleness,
                reasons,
                latest: record,
            });
        }
    }
    Ok(out)
}
