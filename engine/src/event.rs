//! The run event log's vocabulary: [`Event`] and its [`EventData`], plus [`RunStatus`].
//!
//! Every event carries an optional partition key, so partitioned runs use the same storage.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::check::AssetCheckSeverity;
use crate::error::Error;
use crate::key::AssetKey;
use crate::metadata::Metadata;

/// Microseconds since the Unix epoch (UTC): how every timestamp is stored.
pub type Micros = i64;

pub use rainbow_db::now_micros;

/// Formats [`Micros`] as RFC 3339 (UTC, millisecond precision).
pub fn format_micros(ts: Micros) -> String {
    chrono::DateTime::from_timestamp_micros(ts)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| ts.to_string())
}

/// One entry of a run's event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Storage id (0 until stored); ids grow with time within a run.
    pub id: i64,
    /// The run the event belongs to.
    pub run_id: String,
    /// When it happened.
    pub timestamp: Micros,
    /// The step (asset definition name) it concerns, if any.
    pub step_key: Option<String>,
    /// The asset it concerns, if any.
    pub asset_key: Option<AssetKey>,
    /// The partition it concerns, if any.
    pub partition_key: Option<String>,
    /// What happened.
    pub data: EventData,
}

impl Event {
    /// A new (unstored) event timestamped now.
    pub fn new(run_id: impl Into<String>, data: EventData) -> Self {
        Event {
            id: 0,
            run_id: run_id.into(),
            timestamp: now_micros(),
            step_key: None,
            asset_key: None,
            partition_key: None,
            data,
        }
    }

    /// Sets the step key.
    pub fn step(mut self, step: impl Into<String>) -> Self {
        self.step_key = Some(step.into());
        self
    }

    /// Sets the asset key.
    pub fn asset(mut self, key: AssetKey) -> Self {
        self.asset_key = Some(key);
        self
    }

    /// Sets the partition key.
    pub fn partition(mut self, partition: Option<String>) -> Self {
        self.partition_key = partition;
        self
    }
}

/// A materialization as stored.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Materialization {
    /// Metadata reported by the compute (plus the engine's `duration`).
    pub metadata: Metadata,
    /// The definition's code version at materialization time.
    pub code_version: Option<String>,
    /// The data version reported by the compute.
    pub data_version: Option<String>,
}

/// A check evaluation as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckEvaluation {
    /// Check name.
    pub check_name: String,
    /// Passed?
    pub passed: bool,
    /// Effective severity.
    pub severity: AssetCheckSeverity,
    /// Was the check blocking?
    pub blocking: bool,
    /// Explanation.
    pub description: Option<String>,
    /// Metadata.
    pub metadata: Metadata,
}

/// Log levels of [`EventData::Log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    /// Debug.
    Debug,
    /// Info.
    Info,
    /// Warning.
    Warn,
    /// Error.
    Error,
}

/// What an event records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventData {
    /// The run began executing.
    RunStarted {
        /// Number of steps planned.
        steps: usize,
    },
    /// Every step succeeded.
    RunSucceeded,
    /// At least one step failed, or the run's process died.
    RunFailed {
        /// Why.
        reason: String,
    },
    /// The run was canceled.
    RunCanceled {
        /// Why.
        reason: String,
    },
    /// A step attempt began.
    StepStarted {
        /// 1-based attempt number.
        attempt: u32,
    },
    /// A step finished successfully.
    StepSucceeded {
        /// Wall time of the step, all attempts.
        duration_secs: f64,
    },
    /// A step failed for good.
    StepFailed {
        /// The error.
        error: String,
        /// The attempt that failed last.
        attempt: u32,
    },
    /// A step attempt failed and will be retried.
    StepUpForRetry {
        /// The error.
        error: String,
        /// The attempt that failed.
        attempt: u32,
        /// Delay before the next attempt.
        delay_secs: f64,
    },
    /// An asset's step failed: for these partitions, or (empty) the unpartitioned asset
    /// (partition status `failed`).
    AssetFailed {
        /// The partitions.
        partitions: Vec<String>,
        /// The step's error.
        error: String,
    },
    /// A step was not run because an upstream step failed.
    StepSkipped {
        /// Why.
        reason: String,
    },
    /// A running step was canceled.
    StepCanceled,
    /// An asset was materialized.
    Materialization(Materialization),
    /// A source asset was observed.
    Observation(Materialization),
    /// An asset check was evaluated.
    CheckEvaluation(CheckEvaluation),
    /// A log line from user code or the engine.
    Log {
        /// Level.
        level: LogLevel,
        /// The message.
        message: String,
    },
}

impl EventData {
    /// The stored `kind` column.
    pub fn kind(&self) -> &'static str {
        match self {
            EventData::RunStarted { .. } => "run_started",
            EventData::RunSucceeded => "run_succeeded",
            EventData::RunFailed { .. } => "run_failed",
            EventData::RunCanceled { .. } => "run_canceled",
            EventData::StepStarted { .. } => "step_started",
            EventData::StepSucceeded { .. } => "step_succeeded",
            EventData::StepFailed { .. } => "step_failed",
            EventData::StepUpForRetry { .. } => "step_up_for_retry",
            EventData::StepSkipped { .. } => "step_skipped",
            EventData::AssetFailed { .. } => "asset_failed",
            EventData::StepCanceled => "step_canceled",
            EventData::Materialization(_) => "materialization",
            EventData::Observation(_) => "observation",
            EventData::CheckEvaluation(_) => "check_evaluation",
            EventData::Log { .. } => "log",
        }
    }

    /// A one-line human summary.
    pub fn summary(&self) -> String {
        match self {
            EventData::RunStarted { steps } => format!("run started ({steps} steps)"),
            EventData::RunSucceeded => "run succeeded".into(),
            EventData::RunFailed { reason } => format!("run failed: {reason}"),
            EventData::RunCanceled { reason } => format!("run canceled: {reason}"),
            EventData::StepStarted { attempt } => format!("step started (attempt {attempt})"),
            EventData::StepSucceeded { duration_secs } => {
                format!("step succeeded in {duration_secs:.3}s")
            }
            EventData::StepFailed { error, attempt } => {
                format!("step failed after attempt {attempt}: {error}")
            }
            EventData::StepUpForRetry {
                error,
                attempt,
                delay_secs,
            } => format!("attempt {attempt} failed, retrying in {delay_secs:.2}s: {error}"),
            EventData::StepSkipped { reason } => format!("step skipped: {reason}"),
            EventData::AssetFailed { partitions, .. } if partitions.is_empty() => {
                "materialization failed".into()
            }
            EventData::AssetFailed { partitions, .. } => {
                format!(
                    "materialization failed for {} partition(s)",
                    partitions.len()
                )
            }
            EventData::StepCanceled => "step canceled".into(),
            EventData::Materialization(m) => {
                format!("materialized ({} metadata entries)", m.metadata.len())
            }
            EventData::Observation(m) => format!(
                "observed (data version {})",
                m.data_version.as_deref().unwrap_or("-")
            ),
            EventData::CheckEvaluation(c) => format!(
                "check `{}` {} ({}{})",
                c.check_name,
                if c.passed { "passed" } else { "FAILED" },
                c.severity,
                if c.blocking { ", blocking" } else { "" }
            ),
            EventData::Log { level, message } => format!("{level:?}: {message}").to_lowercase(),
        }
    }
}

/// The lifecycle state of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunStatus {
    /// Waiting for the run queue.
    Queued,
    /// Executing.
    Started,
    /// Every step succeeded.
    Success,
    /// A step failed, or the run's process died.
    Failure,
    /// Canceled.
    Canceled,
}

impl RunStatus {
    /// The stored text.
    pub fn as_str(&self) -> &'static str {
        match self {
            RunStatus::Queued => "QUEUED",
            RunStatus::Started => "STARTED",
            RunStatus::Success => "SUCCESS",
            RunStatus::Failure => "FAILURE",
            RunStatus::Canceled => "CANCELED",
        }
    }

    /// True once the run can no longer change.
    pub fn is_finished(&self) -> bool {
        matches!(
            self,
            RunStatus::Success | RunStatus::Failure | RunStatus::Canceled
        )
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunStatus {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Ok(match s.to_ascii_uppercase().as_str() {
            "QUEUED" => RunStatus::Queued,
            "STARTED" => RunStatus::Started,
            "SUCCESS" => RunStatus::Success,
            "FAILURE" => RunStatus::Failure,
            "CANCELED" => RunStatus::Canceled,
            other => {
                return Err(Error::Config {
                    location: "run status".into(),
                    message: format!(
                        "unknown status `{other}`; expected one of QUEUED, STARTED, SUCCESS, FAILURE, CANCELED"
                    ),
                });
            }
        })
    }
}

/// Where a run's events go: the context's logger writes through it, so what compute functions
/// see of the event log is this one method, not storage. Storage's writer implements it.
pub trait EventSink: Send + Sync {
    /// Queues `events` for the event log; never blocks. Events of one sink keep their order.
    fn emit(&self, events: Vec<Event>);
}
