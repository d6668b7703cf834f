//! Asset checks: [`AssetCheckSpec`] (a named data-quality check attached to an asset),
//! [`AssetCheckDefinition`] (a spec plus its evaluation function) and [`AssetCheckResult`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::asset::ComputeFuture;
use crate::context::AssetContext;
use crate::error::BoxError;
use crate::key::AssetKey;
use crate::metadata::{Metadata, MetadataValue};

pub(crate) type CheckFn =
    Arc<dyn Fn(AssetContext) -> ComputeFuture<AssetCheckResult> + Send + Sync>;

/// How bad a failing check is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AssetCheckSeverity {
    /// A warning: recorded, never stops anything.
    Warn,
    /// An error: recorded; if the check is blocking it also fails the step and skips downstream.
    #[default]
    Error,
}

impl fmt::Display for AssetCheckSeverity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AssetCheckSeverity::Warn => "warn",
            AssetCheckSeverity::Error => "error",
        })
    }
}

/// A named check on an asset.
#[derive(Debug, Clone, PartialEq)]
pub struct AssetCheckSpec {
    /// Check name, unique per asset.
    pub name: String,
    /// The asset checked.
    pub asset: AssetKey,
    /// Human description.
    pub description: Option<String>,
    /// A failing blocking check with error severity fails the step and skips downstream.
    pub blocking: bool,
    /// Severity of a failure.
    pub severity: AssetCheckSeverity,
    /// Assets the check reads besides its asset (Dagster's `additional_deps`): in a run, the
    /// check's step waits for the steps materializing them, and a step failing among them
    /// skips it. They must not be downstream of the checked asset.
    pub additional_deps: Vec<AssetKey>,
    /// Extra selection attributes (`method` -> values), as [`crate::AssetSpec::selectors`]:
    /// `method:value` selects the check (a dbt test's `test_name`, `resource_type:test`).
    pub selectors: BTreeMap<String, BTreeSet<String>>,
    /// Evaluated before the asset's compute, in the same step, instead of after it (Rainbow's
    /// extension for dbt's unit tests, which run before their model is built): a failing
    /// blocking one fails the step without materializing. In a checks-only step it runs like
    /// any other check.
    pub before_materialization: bool,
}

impl AssetCheckSpec {
    /// A non-blocking, error-severity check named `name` on `asset`.
    pub fn new(name: impl Into<String>, asset: impl Into<AssetKey>) -> Self {
        AssetCheckSpec {
            name: name.into(),
            asset: asset.into(),
            description: None,
            blocking: false,
            severity: AssetCheckSeverity::Error,
            additional_deps: Vec::new(),
            selectors: BTreeMap::new(),
            before_materialization: false,
        }
    }

    /// Evaluates the check before the asset's compute (see
    /// [`AssetCheckSpec::before_materialization`]); it must have its own compute.
    pub fn before_materialization(mut self) -> Self {
        self.before_materialization = true;
        self
    }

    /// Adds an asset the check reads besides its asset.
    pub fn additional_dep(mut self, key: impl Into<AssetKey>) -> Self {
        self.additional_deps.push(key.into());
        self
    }

    /// Adds a selection attribute: `method:value` selects the check.
    pub fn selector(mut self, method: impl Into<String>, value: impl Into<String>) -> Self {
        crate::selection::add_selector(&mut self.selectors, method.into(), value.into());
        self
    }

    /// Sets the description.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }

    /// Makes the check blocking.
    pub fn blocking(mut self, blocking: bool) -> Self {
        self.blocking = blocking;
        self
    }

    /// Sets the severity.
    pub fn severity(mut self, severity: AssetCheckSeverity) -> Self {
        self.severity = severity;
        self
    }

    /// Finishes the check with the async function that evaluates it.
    pub fn compute<F, Fut, E>(self, f: F) -> AssetCheckDefinition
    where
        F: Fn(AssetContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<AssetCheckResult, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        let f = Arc::new(f);
        let compute: CheckFn = Arc::new(move |ctx: AssetContext| {
            let fut = f(ctx);
            Box::pin(async move { fut.await.map_err(Into::into) })
        });
        AssetCheckDefinition {
            spec: self,
            compute: Some(compute),
        }
    }

    /// A check whose results the asset's compute reports inline (in its [`crate::MaterializeResult`]).
    pub fn inline(self) -> AssetCheckDefinition {
        AssetCheckDefinition {
            spec: self,
            compute: None,
        }
    }
}

/// A check spec with the function that evaluates it (or none, for inline checks).
#[derive(Clone)]
pub struct AssetCheckDefinition {
    /// The spec.
    pub spec: AssetCheckSpec,
    pub(crate) compute: Option<CheckFn>,
}

impl fmt::Debug for AssetCheckDefinition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssetCheckDefinition")
            .field("spec", &self.spec)
            .field("inline", &self.compute.is_none())
            .finish()
    }
}

/// The outcome of evaluating a check.
#[derive(Debug, Clone, PartialEq)]
pub struct AssetCheckResult {
    /// Which check (needed only for inline results).
    pub check_name: Option<String>,
    /// Did the data pass?
    pub passed: bool,
    /// Overrides the spec's severity for this evaluation.
    pub severity: Option<AssetCheckSeverity>,
    /// Explanation shown in the UI.
    pub description: Option<String>,
    /// Metadata stored with the evaluation.
    pub metadata: Metadata,
}

impl AssetCheckResult {
    /// A passing result.
    pub fn passed() -> Self {
        AssetCheckResult::new(true)
    }

    /// A failing result.
    pub fn failed() -> Self {
        AssetCheckResult::new(false)
    }

    /// A result that passed or failed.
    pub fn new(passed: bool) -> Self {
        AssetCheckResult {
            check_name: None,
            passed,
            severity: None,
            description: None,
            metadata: Metadata::new(),
        }
    }

    /// Names the check (for inline results).
    pub fn check_name(mut self, name: impl Into<String>) -> Self {
        self.check_name = Some(name.into());
        self
    }

    /// Sets the explanation.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }

    /// Overrides the severity.
    pub fn severity(mut self, severity: AssetCheckSeverity) -> Self {
        self.severity = Some(severity);
        self
    }

    /// Adds a metadata entry.
    pub fn metadata(mut self, name: impl Into<String>, value: impl Into<MetadataValue>) -> Self {
        self.metadata.insert(name.into(), value.into());
        self
    }
}
