//! [`PartitionMapping`]: which partitions of an upstream asset a downstream partition needs.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use super::{KeyWindow, PartitionContext, PartitionsDefinition, split_multi};
use crate::error::{Error, Result};

/// How a downstream asset's partitions map to its upstream asset's partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionMapping {
    /// The same key upstream (both assets share a definition).
    Identity,
    /// Time windows: the upstream windows overlapping the downstream window, shifted by offsets
    /// counted in upstream partitions. `(-1, -1)` is "the previous day"; a monthly asset on a
    /// daily one with `(0, 0)` needs every day of its month (coarsening).
    TimeWindow {
        /// Shift of the first upstream partition.
        start_offset: i64,
        /// Shift of the last upstream partition.
        end_offset: i64,
    },
    /// Every upstream partition (an unpartitioned asset downstream of a partitioned one).
    AllPartitions,
    /// Explicit: upstream key -> the downstream keys that need it.
    Static(BTreeMap<String, BTreeSet<String>>),
    /// Between a multi-dimensional asset and a single-dimensional one, through the named
    /// dimension (either side may be the multi-dimensional one).
    MultiToSingleDimension {
        /// The shared dimension.
        dimension: String,
    },
}

impl PartitionMapping {
    /// The previous time window (`TimeWindow { -1, -1 }`).
    pub fn previous_window() -> Self {
        PartitionMapping::TimeWindow {
            start_offset: -1,
            end_offset: -1,
        }
    }

    /// A static mapping from `(upstream, downstream)` pairs.
    pub fn static_pairs<U: Into<String>, D: Into<String>>(
        pairs: impl IntoIterator<Item = (U, D)>,
    ) -> Self {
        let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (u, d) in pairs {
            map.entry(u.into()).or_default().insert(d.into());
        }
        PartitionMapping::Static(map)
    }

    /// The mapping used when a dependency declares none.
    pub fn default_for(
        downstream: Option<&PartitionsDefinition>,
        upstream: &PartitionsDefinition,
    ) -> Self {
        match downstream {
            None => PartitionMapping::AllPartitions,
            Some(d) if d == upstream => PartitionMapping::Identity,
            Some(d) if d.is_time_window() && upstream.is_time_window() => {
                PartitionMapping::TimeWindow {
                    start_offset: 0,
                    end_offset: 0,
                }
            }
            Some(PartitionsDefinition::Multi(dims)) => {
                match dims.iter().find(|(_, dd)| dd == upstream) {
                    Some((name, _)) => PartitionMapping::MultiToSingleDimension {
                        dimension: name.clone(),
                    },
                    None => PartitionMapping::Identity,
                }
            }
            Some(d) => match upstream {
                PartitionsDefinition::Multi(dims) => match dims.iter().find(|(_, ud)| ud == d) {
                    Some((name, _)) => PartitionMapping::MultiToSingleDimension {
                        dimension: name.clone(),
                    },
                    None => PartitionMapping::Identity,
                },
                _ => PartitionMapping::Identity,
            },
        }
    }

    /// The upstream keys the downstream keys need. `downstream_keys` is empty for an
    /// unpartitioned downstream asset. Upstream keys outside the upstream definition (e.g. the
    /// day before the first day) are left out.
    pub fn upstream_keys(
        &self,
        downstream_keys: &[String],
        downstream: Option<&PartitionsDefinition>,
        upstream: &PartitionsDefinition,
        ctx: &PartitionContext,
    ) -> Result<BTreeSet<String>> {
        let mut out = BTreeSet::new();
        match self {
            PartitionMapping::AllPartitions => out.extend(ctx.keys_of(upstream)?.iter().cloned()),
            PartitionMapping::Identity => {
                for k in downstream_keys {
                    if upstream.has_key(k, ctx)? {
                        out.insert(k.clone());
                    }
                }
            }
            PartitionMapping::Static(map) => {
                for (u, downs) in map {
                    if downstream_keys.iter().any(|k| downs.contains(k)) {
                        out.insert(u.clone());
                    }
                }
            }
            PartitionMapping::TimeWindow {
                start_offset,
                end_offset,
            } => {
                let down = downstream.ok_or_else(|| {
                    Error::Definition(
                        "a time-window partition mapping needs a partitioned downstream asset"
                            .into(),
                    )
                })?;
                let windows = ctx.windows_of(upstream).map_err(|_| {
                    Error::Definition(format!("a time-window partition mapping needs a time-window upstream, not {upstream}"))
                })?;
                for k in downstream_keys {
                    let Some(w) = down.time_window(k)? else {
                        return Err(Error::Definition(format!(
                            "a time-window partition mapping needs a time-window downstream, not {down}"
                        )));
                    };
                    let (s, e) = (w.start.with_timezone(&Utc), w.end.with_timezone(&Utc));
                    if let Some((first, last)) = overlapping(&windows, s, e) {
                        let lo = first as i64 + start_offset;
                        let hi = last as i64 + end_offset;
                        for i in lo.max(0)..=hi.min(windows.len() as i64 - 1) {
                            out.insert(windows[i as usize].0.clone());
                        }
                    }
                }
            }
            PartitionMapping::MultiToSingleDimension { dimension } => {
                if let Some((pos, _)) = downstream.and_then(|d| d.dimension(dimension)) {
                    // Multi downstream, single-dimensional upstream: the shared component.
                    let n = match downstream {
                        Some(PartitionsDefinition::Multi(dims)) => dims.len(),
                        _ => 2,
                    };
                    for k in downstream_keys {
                        let part = split_multi(k, n)?[pos];
                        if upstream.has_key(part, ctx)? {
                            out.insert(part.to_owned());
                        }
                    }
                } else if let Some((pos, _)) = upstream.dimension(dimension) {
                    // Single-dimensional downstream, multi upstream: every upstream key whose
                    // shared component is the downstream key.
                    for u in ctx.keys_of(upstream)?.iter().cloned() {
                        let n = match upstream {
                            PartitionsDefinition::Multi(dims) => dims.len(),
                            _ => 2,
                        };
                        let part = split_multi(&u, n)?[pos];
                        if downstream_keys.iter().any(|k| k == part) {
                            out.insert(u);
                        }
                    }
                } else {
                    return Err(Error::Definition(format!(
                        "neither side of the dependency has a partition dimension named `{dimension}`"
                    )));
                }
            }
        }
        Ok(out)
    }
}

/// Indexes of the first and last windows overlapping `[s, e)`, by binary search.
fn overlapping(
    windows: &[KeyWindow],
    s: DateTime<Utc>,
    e: DateTime<Utc>,
) -> Option<(usize, usize)> {
    let first = windows.partition_point(|w| w.2 <= s);
    let end = windows.partition_point(|w| w.1 < e);
    if first >= end {
        None
    } else {
        Some((first, end - 1))
    }
}
