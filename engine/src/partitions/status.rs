//! The status of an asset's partitions: [`PartitionState`] per key and [`status_ranges`],
//! runs of consecutive keys in one state (what `rainbow partitions` and the UI's health bar
//! show). Pure: the states come from storage's callers.

use std::collections::HashMap;

use serde::Serialize;

/// The state of one asset partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum PartitionState {
    /// Its latest run materialized it.
    Materialized,
    /// Its latest run failed to materialize it.
    Failed,
    /// A process holds its lease right now.
    InProgress,
    /// Never materialized.
    Missing,
}

impl PartitionState {
    /// Lower-case name.
    pub fn as_str(&self) -> &'static str {
        match self {
            PartitionState::Materialized => "materialized",
            PartitionState::Failed => "failed",
            PartitionState::InProgress => "in_progress",
            PartitionState::Missing => "missing",
        }
    }
}

/// A run of consecutive partitions (in the definition's key order) in the same state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusRange {
    /// First key.
    pub start: String,
    /// Last key.
    pub end: String,
    /// Their state.
    pub state: PartitionState,
    /// How many partitions.
    pub count: usize,
}

/// Compresses per-partition states into ranges over `keys` (absent keys are missing).
pub fn status_ranges(
    keys: &[String],
    states: &HashMap<String, PartitionState>,
) -> Vec<StatusRange> {
    let mut out: Vec<StatusRange> = Vec::new();
    for k in keys {
        let state = states.get(k).copied().unwrap_or(PartitionState::Missing);
        match out.last_mut() {
            Some(r) if r.state == state => {
                r.end = k.clone();
                r.count += 1;
            }
            _ => out.push(StatusRange {
                start: k.clone(),
                end: k.clone(),
                state,
                count: 1,
            }),
        }
    }
    out
}
