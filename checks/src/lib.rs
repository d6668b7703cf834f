//! # Rainbow checks
//!
//! Data-quality checks that are not SQL: they look at files in an object store rather than at
//! warehouse tables (the SQL project's data tests cover keys, relationships and SCD2 validity).
//!
//! - [`freshness_check`]: a daily-partitioned dataset holds its latest partition (as of now,
//!   or the definition's end), give or take an allowed lag. Stale is not wrong: severity warn,
//!   non-blocking.
//! - [`completeness_check`]: no partition is missing between the first partition and the
//!   newest one stored. A gap would silently drop a day of data downstream: blocking.
//!
//! A dataset is a prefix of Hive-style folders, `<prefix>/<column>=<partition key>/…`
//! ([`HiveDataset`]).

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use object_store::ObjectStore;
use object_store::path::Path as StorePath;
use rainbow_engine::AssetCheckDefinition;
use rainbow_engine::partitions::PartitionContext;
use rainbow_engine::prelude::*;

/// Errors of the checks (a check that cannot evaluate fails its run step, it does not pass).
#[derive(Debug, thiserror::Error)]
pub enum ChecksError {
    /// Listing the object store failed.
    #[error("listing {prefix}: {source}")]
    Store {
        /// The dataset prefix.
        prefix: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// The partitions definition cannot enumerate its keys.
    #[error("partitions of {asset}: {message}")]
    Partitions {
        /// The asset checked.
        asset: String,
        /// What went wrong.
        message: String,
    },
}

/// A Hive-partitioned dataset: `<prefix>/<column>=<key>/…` in `store`.
#[derive(Clone)]
pub struct HiveDataset {
    /// The object store.
    pub store: Arc<dyn ObjectStore>,
    /// The dataset's folder, e.g. `raw/orders`.
    pub prefix: String,
    /// The partition column, e.g. `dt`.
    pub column: String,
}

impl HiveDataset {
    /// The partition keys that have a folder, sorted.
    pub async fn stored_keys(&self) -> Result<BTreeSet<String>, ChecksError> {
        let prefix = StorePath::from(self.prefix.as_str());
        let listing = self
            .store
            .list_with_delimiter(Some(&prefix))
            .await
            .map_err(|source| ChecksError::Store {
                prefix: self.prefix.clone(),
                source,
            })?;
        let marker = format!("{}=", self.column);
        Ok(listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename())
            .filter_map(|f| f.strip_prefix(&marker))
            .map(str::to_owned)
            .collect())
    }
}

/// The clock checks read: the engine's [`rainbow_engine::clock::Clock`] (a
/// [`rainbow_engine::clock::ManualClock`] in tests).
pub type Clock = Arc<dyn rainbow_engine::clock::Clock>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(rainbow_engine::clock::SystemClock)
}

fn keys_as_of(
    asset: &AssetKey,
    partitions: &PartitionsDefinition,
    now: DateTime<Utc>,
) -> Result<Vec<String>, ChecksError> {
    partitions
        .keys(&PartitionContext::at(now))
        .map_err(|e| ChecksError::Partitions {
            asset: asset.to_string(),
            message: e.to_string(),
        })
}

/// `freshness`: the dataset holds one of the newest `max_lag + 1` partitions of `partitions`
/// as of the clock (a bounded definition's newest is its last). Severity warn, not blocking.
pub fn freshness_check(
    asset: AssetKey,
    dataset: HiveDataset,
    partitions: PartitionsDefinition,
    max_lag: usize,
    clock: Clock,
) -> AssetCheckDefinition {
    AssetCheckSpec::new("freshness", asset.clone())
        .description(format!(
            "`{}` holds its latest partition, at most {max_lag} partition(s) behind",
            dataset.prefix
        ))
        .severity(AssetCheckSeverity::Warn)
        .blocking(false)
        .compute(move |_ctx: AssetContext| {
            let (asset, dataset, partitions, clock) = (
                asset.clone(),
                dataset.clone(),
                partitions.clone(),
                clock.clone(),
            );
            async move { evaluate_freshness(&asset, &dataset, &partitions, max_lag, clock.now()).await }
        })
}

/// `completeness`: every partition of `partitions` from the first to the newest stored has
/// a folder in the dataset. Blocking: a gap would drop a day of data downstream.
pub fn completeness_check(
    asset: AssetKey,
    dataset: HiveDataset,
    partitions: PartitionsDefinition,
    clock: Clock,
) -> AssetCheckDefinition {
    AssetCheckSpec::new("completeness", asset.clone())
        .description(format!(
            "no partition of `{}` is missing up to the newest one stored",
            dataset.prefix
        ))
        .severity(AssetCheckSeverity::Error)
        .blocking(true)
        .compute(move |_ctx: AssetContext| {
            let (asset, dataset, partitions, clock) = (
                asset.clone(),
                dataset.clone(),
                partitions.clone(),
                clock.clone(),
            );
            async move { evaluate_completeness(&asset, &dataset, &partitions, clock.now()).await }
        })
}

/// Evaluates [`freshness_check`] as of `now`.
pub async fn evaluate_freshness(
    asset: &AssetKey,
    dataset: &HiveDataset,
    partitions: &PartitionsDefinition,
    max_lag: usize,
    now: DateTime<Utc>,
) -> Result<AssetCheckResult, ChecksError> {
    let expected = keys_as_of(asset, partitions, now)?;
    let stored = dataset.stored_keys().await?;
    let Some(latest) = expected.last() else {
        return Ok(AssetCheckResult::passed().description("no partition is due yet"));
    };
    let newest_stored = stored.iter().next_back().cloned();
    // How many partitions the newest stored one is behind the latest due (all, if none is).
    let lag = newest_stored
        .as_ref()
        .and_then(|newest| expected.iter().rev().position(|k| k == newest))
        .unwrap_or(expected.len());
    // Nothing stored is stale whatever the allowed lag.
    let fresh = newest_stored.is_some() && lag <= max_lag;
    let mut result = AssetCheckResult::new(fresh)
        .metadata("latest_due", latest.clone())
        .metadata("newest_stored", newest_stored.clone().unwrap_or_default())
        .metadata("lag_partitions", lag as i64);
    if !fresh {
        result = result.description(format!(
            "{lag} partition(s) behind: the latest due is {latest}, the newest stored {}",
            newest_stored.as_deref().unwrap_or("none")
        ));
    }
    Ok(result)
}

/// Evaluates [`completeness_check`] as of `now`.
pub async fn evaluate_completeness(
    asset: &AssetKey,
    dataset: &HiveDataset,
    partitions: &PartitionsDefinition,
    now: DateTime<Utc>,
) -> Result<AssetCheckResult, ChecksError> {
    let expected = keys_as_of(asset, partitions, now)?;
    let stored = dataset.stored_keys().await?;
    let upto = stored
        .iter()
        .next_back()
        .and_then(|n| expected.iter().position(|k| k == n))
        .map_or(0, |i| i + 1);
    let missing: Vec<&String> = expected[..upto]
        .iter()
        .filter(|k| !stored.contains(*k))
        .collect();
    let mut result = AssetCheckResult::new(missing.is_empty())
        .metadata("stored_partitions", stored.len() as i64)
        .metadata("missing_partitions", missing.len() as i64);
    if let Some(first) = missing.first() {
        result = result.description(format!(
            "{} partition(s) missing, the first {first}",
            missing.len()
        ));
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use object_store::ObjectStoreExt;

    async fn dataset(days: &[&str]) -> (tempfile::TempDir, HiveDataset) {
        let dir = tempfile::tempdir().expect("dir");
        let store: Arc<dyn ObjectStore> = Arc::new(
            object_store::local::LocalFileSystem::new_with_prefix(dir.path()).expect("store"),
        );
        for d in days {
            store
                .put(
                    &StorePath::from(format!("raw/t/dt={d}/t.parquet")),
                    b"x".to_vec().into(),
                )
                .await
                .expect("put");
        }
        (
            dir,
            HiveDataset {
                store,
                prefix: "raw/t".into(),
                column: "dt".into(),
            },
        )
    }

    fn at(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, day, 3, 0, 0)
            .single()
            .expect("t")
    }

    async fn fresh(
        ds: &HiveDataset,
        p: &PartitionsDefinition,
        lag: usize,
        now: DateTime<Utc>,
    ) -> AssetCheckResult {
        evaluate_freshness(&AssetKey::new(["raw", "t"]), ds, p, lag, now)
            .await
            .expect("evaluates")
    }

    async fn complete(ds: &HiveDataset, p: &PartitionsDefinition) -> AssetCheckResult {
        evaluate_completeness(&AssetKey::new(["raw", "t"]), ds, p, at(10))
            .await
            .expect("evaluates")
    }

    #[tokio::test]
    async fn freshness_passes_within_the_lag_and_warns_beyond_it() {
        let (_d, ds) = dataset(&["2026-01-01", "2026-01-02", "2026-01-03"]).await;
        let daily = PartitionsDefinition::daily("2026-01-01");
        // On the 4th the 3rd is the latest complete day: fresh.
        let r = fresh(&ds, &daily, 0, at(4)).await;
        assert!(r.passed, "{r:?}");
        // On the 6th two days are missing: stale with lag 1, fine with lag 2.
        let r = fresh(&ds, &daily, 1, at(6)).await;
        assert!(!r.passed);
        assert_eq!(
            r.description.as_deref(),
            Some(
                "2 partition(s) behind: the latest due is 2026-01-05, the newest stored 2026-01-03"
            )
        );
        assert!(fresh(&ds, &daily, 2, at(6)).await.passed);
        // A bounded definition is fresh when its last partition is stored, whatever the date.
        let bounded = PartitionsDefinition::daily("2026-01-01").end("2026-01-04");
        let r = fresh(&ds, &bounded, 0, at(20)).await;
        assert!(r.passed, "{r:?}");
        let (_e, empty) = dataset(&[]).await;
        assert!(!fresh(&empty, &daily, 5, at(4)).await.passed);
    }

    #[tokio::test]
    async fn completeness_names_the_first_gap() {
        let (_d, ds) = dataset(&["2026-01-01", "2026-01-03"]).await;
        let daily = PartitionsDefinition::daily("2026-01-01");
        let r = complete(&ds, &daily).await;
        assert!(!r.passed);
        assert_eq!(
            r.description.as_deref(),
            Some("1 partition(s) missing, the first 2026-01-02")
        );
        let (_d, ds) = dataset(&["2026-01-01", "2026-01-02"]).await;
        let r = complete(&ds, &daily).await;
        assert!(
            r.passed,
            "later days not stored yet are freshness's business"
        );
    }
}
