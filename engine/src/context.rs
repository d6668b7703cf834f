//! [`AssetContext`]: what a compute or check function sees of its run — run id, asset keys,
//! partition key, resources, a logger writing to the event log, and cancellation.

use std::any::Any;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::check::AssetCheckSpec;
use crate::error::Result;
use crate::event::{Event, EventData, EventSink, LogLevel};
use crate::key::AssetKey;
use crate::partitions::PartitionTimeWindow;
use crate::resource::Resources;

/// The context handed to compute and check functions. Cheap to clone.
#[derive(Clone)]
pub struct AssetContext {
    inner: Arc<Inner>,
}

struct Inner {
    run_id: String,
    step_key: String,
    asset_keys: Vec<AssetKey>,
    check: Option<AssetCheckSpec>,
    partitions: Vec<String>,
    time_window: Option<PartitionTimeWindow>,
    attempt: u32,
    resources: Arc<Resources>,
    events: Arc<dyn EventSink>,
    cancel: CancellationToken,
}

/// Fields the executor fills in.
pub(crate) struct ContextParts {
    pub run_id: String,
    pub step_key: String,
    pub asset_keys: Vec<AssetKey>,
    pub check: Option<AssetCheckSpec>,
    pub partitions: Vec<String>,
    pub time_window: Option<PartitionTimeWindow>,
    pub attempt: u32,
    pub resources: Arc<Resources>,
    pub events: Arc<dyn EventSink>,
    pub cancel: CancellationToken,
}

impl AssetContext {
    pub(crate) fn new(parts: ContextParts) -> Self {
        AssetContext {
            inner: Arc::new(Inner {
                run_id: parts.run_id,
                step_key: parts.step_key,
                asset_keys: parts.asset_keys,
                check: parts.check,
                partitions: parts.partitions,
                time_window: parts.time_window,
                attempt: parts.attempt,
                resources: parts.resources,
                events: parts.events,
                cancel: parts.cancel,
            }),
        }
    }

    /// The run's id.
    pub fn run_id(&self) -> &str {
        &self.inner.run_id
    }

    /// The key of the asset being computed (the first one, for multi-assets) or checked.
    pub fn asset_key(&self) -> &AssetKey {
        match &self.inner.check {
            Some(check) => &check.asset,
            None => &self.inner.asset_keys[0],
        }
    }

    /// All keys the current step materializes.
    pub fn asset_keys(&self) -> &[AssetKey] {
        &self.inner.asset_keys
    }

    /// The check being evaluated, inside a check function.
    pub fn check(&self) -> Option<&AssetCheckSpec> {
        self.inner.check.as_ref()
    }

    /// The partition being materialized, when the run covers exactly one.
    pub fn partition_key(&self) -> Option<&str> {
        match self.inner.partitions.as_slice() {
            [k] => Some(k),
            _ => None,
        }
    }

    /// Every partition being materialized (several in a range run; empty if unpartitioned).
    pub fn partition_keys(&self) -> &[String] {
        &self.inner.partitions
    }

    /// First and last partition of the run, if partitioned.
    pub fn partition_key_range(&self) -> Option<(&str, &str)> {
        Some((
            self.inner.partitions.first()?,
            self.inner.partitions.last()?,
        ))
    }

    /// The time window covered by the run's partitions (time-partitioned assets): from the
    /// first partition's start to the last one's end.
    pub fn partition_time_window(&self) -> Option<PartitionTimeWindow> {
        self.inner.time_window
    }

    /// The 1-based attempt number (greater than 1 on retries).
    pub fn attempt(&self) -> u32 {
        self.inner.attempt
    }

    /// The resource of type `T`, as configured in the definitions.
    pub fn resource<T: Any + Send + Sync>(&self) -> Result<Arc<T>> {
        self.inner.resources.get::<T>()
    }

    /// True once the run has been asked to stop; long computations should check it.
    pub fn is_canceled(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// Completes when the run is canceled (for `tokio::select!`).
    pub async fn canceled(&self) {
        self.inner.cancel.cancelled().await
    }

    /// Writes an info line to the run's event log (and to tracing).
    pub fn log_info(&self, message: impl Into<String>) {
        self.log(LogLevel::Info, message.into());
    }

    /// Writes a warning to the run's event log (and to tracing).
    pub fn log_warn(&self, message: impl Into<String>) {
        self.log(LogLevel::Warn, message.into());
    }

    /// Writes an error line to the run's event log (and to tracing).
    pub fn log_error(&self, message: impl Into<String>) {
        self.log(LogLevel::Error, message.into());
    }

    fn log(&self, level: LogLevel, message: String) {
        let step = &self.inner.step_key;
        match level {
            LogLevel::Error => tracing::error!(step = %step, "{message}"),
            LogLevel::Warn => tracing::warn!(step = %step, "{message}"),
            LogLevel::Info => tracing::info!(step = %step, "{message}"),
            LogLevel::Debug => tracing::debug!(step = %step, "{message}"),
        }
        let event = Event::new(&self.inner.run_id, EventData::Log { level, message })
            .step(step.clone())
            .partition(self.partition_key().map(str::to_owned));
        self.inner.events.emit(vec![event]);
    }
}
