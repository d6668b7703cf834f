//! Asset declarations: [`AssetSpec`] (what an asset is), [`AssetDefinition`] (a spec plus the
//! compute that materializes it, or several specs for a multi-asset, or a source asset that is
//! only observed), [`MaterializeResult`] and [`RetryPolicy`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::check::{AssetCheckDefinition, AssetCheckResult};
use crate::context::AssetContext;
use crate::error::BoxError;
use crate::key::AssetKey;
use crate::metadata::{Metadata, MetadataValue, TableSchema};
use crate::partitions::{PartitionMapping, PartitionsDefinition};

/// A boxed future returned by user compute functions.
pub type ComputeFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send + 'static>>;

/// The compute of an asset or multi-asset: one result per materialized key.
pub(crate) type AssetComputeFn =
    Arc<dyn Fn(AssetContext) -> ComputeFuture<Vec<MaterializeResult>> + Send + Sync>;

/// The observation function of a source asset.
pub(crate) type ObserveFn = Arc<dyn Fn(AssetContext) -> ComputeFuture<ObserveResult> + Send + Sync>;

/// Starts declaring an asset: `asset("warehouse/fact_sales").group("warehouse")...`.
pub fn asset(key: impl Into<AssetKey>) -> AssetSpec {
    AssetSpec::new(key)
}

/// A dependency of an asset on an upstream asset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetDep {
    /// The upstream asset.
    pub key: AssetKey,
    /// Which upstream partitions a downstream partition needs; `None` picks the default
    /// (identity for equal definitions, all partitions for an unpartitioned downstream, time
    /// windows between time-window definitions, the shared dimension for multi-dimensional ones).
    pub partition_mapping: Option<PartitionMapping>,
}

impl AssetDep {
    /// A dependency on `key` with the default partition mapping.
    pub fn new(key: impl Into<AssetKey>) -> Self {
        AssetDep {
            key: key.into(),
            partition_mapping: None,
        }
    }

    /// Sets the partition mapping.
    pub fn partition_mapping(mut self, mapping: PartitionMapping) -> Self {
        self.partition_mapping = Some(mapping);
        self
    }
}

impl<K: Into<AssetKey>> From<K> for AssetDep {
    fn from(key: K) -> Self {
        AssetDep::new(key)
    }
}

/// How a backfill groups an asset's partitions into runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackfillPolicy {
    /// Runs of at most this many consecutive partitions (1 = one run per partition, the default).
    MultiRun(usize),
    /// One run over every requested partition.
    SingleRun,
}

impl BackfillPolicy {
    /// One run over every requested partition.
    pub fn single_run() -> Self {
        BackfillPolicy::SingleRun
    }

    /// Runs of at most `max_partitions_per_run` partitions.
    pub fn multi_run(max_partitions_per_run: usize) -> Self {
        BackfillPolicy::MultiRun(max_partitions_per_run.max(1))
    }
}

impl Default for BackfillPolicy {
    fn default() -> Self {
        BackfillPolicy::MultiRun(1)
    }
}

/// Declarative automation: when the daemon should materialize an asset on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AutomationCondition {
    /// Whenever an upstream asset was updated after this one (and no run of it is in flight).
    Eager,
    /// After each tick of the cron schedule (UTC), once every upstream asset was updated since
    /// that tick.
    OnCron(String),
}

impl AutomationCondition {
    /// [`AutomationCondition::Eager`].
    pub fn eager() -> Self {
        AutomationCondition::Eager
    }

    /// [`AutomationCondition::OnCron`].
    pub fn on_cron(cron: impl Into<String>) -> Self {
        AutomationCondition::OnCron(cron.into())
    }
}

/// Everything known about an asset except how to compute it.
#[derive(Debug, Clone)]
pub struct AssetSpec {
    /// The asset's key.
    pub key: AssetKey,
    /// Upstream assets.
    pub deps: Vec<AssetDep>,
    /// Group shown in the UI and selectable with `group:NAME`.
    pub group: Option<String>,
    /// Free-form `key=value` tags, selectable with `tag:KEY` or `tag:KEY=VALUE`.
    pub tags: BTreeMap<String, String>,
    /// Kinds (technologies) such as `sql`, `parquet`, `bigquery`; selectable with `kind:NAME`.
    pub kinds: BTreeSet<String>,
    /// Human description.
    pub description: Option<String>,
    /// Owners (people or teams).
    pub owners: Vec<String>,
    /// Version of the code that computes the asset; a change makes the asset stale.
    pub code_version: Option<String>,
    /// Static metadata about the asset definition.
    pub metadata: Metadata,
    /// How the asset is partitioned, if it is.
    pub partitions: Option<PartitionsDefinition>,
    /// How backfills group its partitions into runs.
    pub backfill_policy: BackfillPolicy,
    /// When the daemon materializes it on its own.
    pub automation_condition: Option<AutomationCondition>,
    /// Extra selection attributes: `method` -> values, matched by the selection language's
    /// `method:value` beyond its built-in methods (a dbt node's `path`, `resource_type`,
    /// `config.materialized`; `name` is also matched by a bare selector). See
    /// [`crate::selection`].
    pub selectors: BTreeMap<String, BTreeSet<String>>,
}

impl AssetSpec {
    /// A spec with only a key.
    pub fn new(key: impl Into<AssetKey>) -> Self {
        AssetSpec {
            key: key.into(),
            deps: Vec::new(),
            group: None,
            tags: BTreeMap::new(),
            kinds: BTreeSet::new(),
            description: None,
            owners: Vec::new(),
            code_version: None,
            metadata: Metadata::new(),
            partitions: None,
            backfill_policy: BackfillPolicy::default(),
            automation_condition: None,
            selectors: BTreeMap::new(),
        }
    }

    /// Adds a selection attribute: `method:value` selects the asset (see [`crate::selection`]).
    pub fn selector(mut self, method: impl Into<String>, value: impl Into<String>) -> Self {
        crate::selection::add_selector(&mut self.selectors, method.into(), value.into());
        self
    }

    /// Partitions the asset.
    pub fn partitions(mut self, partitions: PartitionsDefinition) -> Self {
        self.partitions = Some(partitions);
        self
    }

    /// Sets the backfill policy.
    pub fn backfill_policy(mut self, policy: BackfillPolicy) -> Self {
        self.backfill_policy = policy;
        self
    }

    /// Sets the automation condition.
    pub fn automation_condition(mut self, condition: AutomationCondition) -> Self {
        self.automation_condition = Some(condition);
        self
    }

    /// Adds one upstream dependency.
    pub fn dep(mut self, dep: impl Into<AssetDep>) -> Self {
        self.deps.push(dep.into());
        self
    }

    /// Adds several upstream dependencies.
    pub fn deps<D: Into<AssetDep>>(mut self, deps: impl IntoIterator<Item = D>) -> Self {
        self.deps.extend(deps.into_iter().map(Into::into));
        self
    }

    /// Sets the group.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Adds a tag.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// Adds a kind.
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kinds.insert(kind.into());
        self
    }

    /// Sets the description.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }

    /// Adds an owner.
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owners.push(owner.into());
        self
    }

    /// Sets the code version.
    pub fn code_version(mut self, version: impl Into<String>) -> Self {
        self.code_version = Some(version.into());
        self
    }

    /// Adds a static metadata entry.
    pub fn metadata(mut self, name: impl Into<String>, value: impl Into<MetadataValue>) -> Self {
        self.metadata.insert(name.into(), value.into());
        self
    }

    /// Finishes the declaration with the async function that materializes the asset.
    pub fn compute<F, Fut, E>(self, f: F) -> AssetDefinition
    where
        F: Fn(AssetContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<MaterializeResult, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        let f = Arc::new(f);
        let compute: AssetComputeFn = Arc::new(move |ctx: AssetContext| {
            let fut = f(ctx);
            Box::pin(async move { fut.await.map(|r| vec![r]).map_err(Into::into) })
        });
        AssetDefinition::new(self.key.to_string(), vec![self], Kind::Materialize(compute))
    }

    /// Declares this spec as a source (external) asset: it is observed, never materialized.
    pub fn source(self) -> AssetDefinition {
        AssetDefinition::new(self.key.to_string(), vec![self], Kind::Source(None))
    }
}

/// How a definition is executed.
#[derive(Clone)]
pub(crate) enum Kind {
    /// Materializes its specs.
    Materialize(AssetComputeFn),
    /// A source asset, optionally observable.
    Source(Option<ObserveFn>),
}

/// One executable unit of the graph: one or several asset specs, and how to compute them.
#[derive(Clone)]
pub struct AssetDefinition {
    pub(crate) name: String,
    pub(crate) specs: Vec<AssetSpec>,
    pub(crate) kind: Kind,
    pub(crate) retry: RetryPolicy,
    pub(crate) checks: Vec<AssetCheckDefinition>,
}

impl fmt::Debug for AssetDefinition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssetDefinition")
            .field("name", &self.name)
            .field("keys", &self.keys().collect::<Vec<_>>())
            .field("source", &self.is_source())
            .finish()
    }
}

impl AssetDefinition {
    fn new(name: String, specs: Vec<AssetSpec>, kind: Kind) -> Self {
        AssetDefinition {
            name,
            specs,
            kind,
            retry: RetryPolicy::default(),
            checks: Vec::new(),
        }
    }

    /// A multi-asset: one compute materializing several keys. The compute returns one
    /// [`MaterializeResult`] per key it materialized, each naming its key with
    /// [`MaterializeResult::for_asset`].
    pub fn multi<F, Fut, E>(name: impl Into<String>, specs: Vec<AssetSpec>, f: F) -> Self
    where
        F: Fn(AssetContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<MaterializeResult>, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        let f = Arc::new(f);
        let compute: AssetComputeFn = Arc::new(move |ctx: AssetContext| {
            let fut = f(ctx);
            Box::pin(async move { fut.await.map_err(Into::into) })
        });
        AssetDefinition::new(name.into(), specs, Kind::Materialize(compute))
    }

    /// Gives a source asset a function that observes it (reports a data version).
    pub fn observe<F, Fut, E>(mut self, f: F) -> Self
    where
        F: Fn(AssetContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ObserveResult, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        let f = Arc::new(f);
        let observe: ObserveFn = Arc::new(move |ctx: AssetContext| {
            let fut = f(ctx);
            Box::pin(async move { fut.await.map_err(Into::into) })
        });
        if let Kind::Source(slot) = &mut self.kind {
            *slot = Some(observe);
        }
        self
    }

    /// Sets the retry policy.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Attaches an asset check evaluated after this definition's step.
    pub fn check(mut self, check: AssetCheckDefinition) -> Self {
        self.checks.push(check);
        self
    }

    /// The definition's name (the step key in runs).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The keys this definition provides.
    pub fn keys(&self) -> impl Iterator<Item = &AssetKey> {
        self.specs.iter().map(|s| &s.key)
    }

    /// The specs this definition provides.
    pub fn specs(&self) -> &[AssetSpec] {
        &self.specs
    }

    /// True for source (external) assets.
    pub fn is_source(&self) -> bool {
        matches!(self.kind, Kind::Source(_))
    }
}

/// What a compute function reports about one materialized asset.
#[derive(Debug, Clone, Default)]
pub struct MaterializeResult {
    /// Which asset this result is for; required in multi-assets, optional otherwise.
    pub asset_key: Option<AssetKey>,
    /// Metadata stored with the materialization.
    pub metadata: Metadata,
    /// An optional data version (e.g. a content hash).
    pub data_version: Option<String>,
    /// Check results computed inline by the asset itself.
    pub check_results: Vec<AssetCheckResult>,
}

impl MaterializeResult {
    /// An empty result.
    pub fn new() -> Self {
        MaterializeResult::default()
    }

    /// A result for a named asset (used by multi-assets).
    pub fn for_asset(key: impl Into<AssetKey>) -> Self {
        MaterializeResult {
            asset_key: Some(key.into()),
            ..MaterializeResult::default()
        }
    }

    /// Adds a metadata entry.
    pub fn metadata(mut self, name: impl Into<String>, value: impl Into<MetadataValue>) -> Self {
        self.metadata.insert(name.into(), value.into());
        self
    }

    /// Records the number of rows (metadata `row_count`).
    pub fn row_count(self, rows: u64) -> Self {
        self.metadata("row_count", MetadataValue::RowCount(rows))
    }

    /// Records where the data lives (metadata `path`).
    pub fn path(self, path: impl Into<String>) -> Self {
        self.metadata("path", MetadataValue::Path(path.into()))
    }

    /// Records a URL for the data (metadata `url`).
    pub fn url(self, url: impl Into<String>) -> Self {
        self.metadata("url", MetadataValue::Url(url.into()))
    }

    /// Records the table schema (metadata `schema`).
    pub fn schema(self, schema: TableSchema) -> Self {
        self.metadata("schema", schema)
    }

    /// Sets the data version.
    pub fn data_version(mut self, version: impl Into<String>) -> Self {
        self.data_version = Some(version.into());
        self
    }

    /// Adds an inline check result.
    pub fn check_result(mut self, result: AssetCheckResult) -> Self {
        self.check_results.push(result);
        self
    }
}

/// What observing a source asset reports.
#[derive(Debug, Clone, Default)]
pub struct ObserveResult {
    /// The source's current data version; a change makes downstream assets stale.
    pub data_version: Option<String>,
    /// Metadata stored with the observation.
    pub metadata: Metadata,
}

impl ObserveResult {
    /// An observation with a data version.
    pub fn new(data_version: impl Into<String>) -> Self {
        ObserveResult {
            data_version: Some(data_version.into()),
            metadata: Metadata::new(),
        }
    }

    /// Adds a metadata entry.
    pub fn metadata(mut self, name: impl Into<String>, value: impl Into<MetadataValue>) -> Self {
        self.metadata.insert(name.into(), value.into());
        self
    }
}

/// How often and how patiently a failed step is retried.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 = never retry).
    pub max_retries: u32,
    /// Delay before the first retry.
    pub delay: Duration,
    /// Multiplier applied to the delay after each retry (2.0 = exponential backoff).
    pub backoff: f64,
    /// Upper bound for any single delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 0,
            delay: Duration::from_secs(1),
            backoff: 2.0,
            max_delay: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// Exponential backoff: `max_retries` retries, the first after `delay`, doubling each time.
    pub fn exponential(max_retries: u32, delay: Duration) -> Self {
        RetryPolicy {
            max_retries,
            delay,
            ..RetryPolicy::default()
        }
    }

    /// The delay before retry number `retry` (1-based).
    pub fn delay_for(&self, retry: u32) -> Duration {
        let factor = self.backoff.max(1.0).powi(retry.saturating_sub(1) as i32);
        let secs = (self.delay.as_secs_f64() * factor).min(self.max_delay.as_secs_f64());
        Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(self.max_delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_exponentially_and_cap() {
        let mut p = RetryPolicy::exponential(5, Duration::from_millis(100));
        p.max_delay = Duration::from_millis(350);
        let delays: Vec<u128> = (1..=4).map(|r| p.delay_for(r).as_millis()).collect();
        assert_eq!(delays, [100, 200, 350, 350]);
    }
}
