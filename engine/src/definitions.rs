//! [`Definitions`]: everything a code location declares — assets, checks, jobs (named
//! selections), schedules and resources. The asset graph is built from it once.

use std::any::Any;

use serde::de::DeserializeOwned;

use crate::asset::AssetDefinition;
use crate::check::AssetCheckDefinition;
use crate::error::{Error, Result};
use crate::resource::ResourceDef;

/// A job: a named asset selection that can be launched and scheduled.
#[derive(Debug, Clone, PartialEq)]
pub struct JobDefinition {
    /// Job name.
    pub name: String,
    /// Selection expression (see [`crate::selection`]).
    pub selection: String,
    /// Optional exclusion expression.
    pub exclude: Option<String>,
    /// Human description.
    pub description: Option<String>,
    /// Tags put on the job's runs (the run queue limits runs by tag).
    pub tags: std::collections::BTreeMap<String, String>,
}

impl JobDefinition {
    /// A job named `name` selecting `selection`.
    pub fn new(name: impl Into<String>, selection: impl Into<String>) -> Self {
        JobDefinition {
            name: name.into(),
            selection: selection.into(),
            exclude: None,
            description: None,
            tags: std::collections::BTreeMap::new(),
        }
    }

    /// Adds a tag to the job's runs.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// Excludes assets from the job.
    pub fn exclude(mut self, selection: impl Into<String>) -> Self {
        self.exclude = Some(selection.into());
        self
    }

    /// Sets the description.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }
}

/// A schedule: a cron expression in a timezone that launches a job.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleDefinition {
    /// Schedule name.
    pub name: String,
    /// Cron expression, 5 fields (`0 0 * * *`) or 6 with seconds.
    pub cron_schedule: String,
    /// The job it launches.
    pub job: String,
    /// IANA timezone name; `UTC` by default.
    pub timezone: String,
    /// What a daemon that was down does with the ticks it missed.
    pub catch_up: CatchUpPolicy,
}

/// What to do with schedule ticks missed while the daemon was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CatchUpPolicy {
    /// Launch only the latest missed tick; record the others as skipped.
    #[default]
    LatestOnly,
    /// Launch every missed tick.
    AllMissed,
}

/// A sensor: watches something and requests runs of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorDefinition {
    /// Sensor name.
    pub name: String,
    /// What it watches.
    pub kind: SensorKind,
    /// The job it launches.
    pub job: String,
}

/// What a sensor watches.
#[derive(Debug, Clone, PartialEq)]
pub enum SensorKind {
    /// Each new materialization of this asset requests one run.
    Asset(crate::AssetKey),
}

impl SensorDefinition {
    /// Runs `job` whenever `asset` is materialized.
    pub fn asset_sensor(
        name: impl Into<String>,
        asset: impl Into<crate::AssetKey>,
        job: impl Into<String>,
    ) -> Self {
        SensorDefinition {
            name: name.into(),
            kind: SensorKind::Asset(asset.into()),
            job: job.into(),
        }
    }
}

impl ScheduleDefinition {
    /// A UTC schedule launching `job` on `cron_schedule`.
    pub fn new(
        name: impl Into<String>,
        cron_schedule: impl Into<String>,
        job: impl Into<String>,
    ) -> Self {
        ScheduleDefinition {
            name: name.into(),
            cron_schedule: cron_schedule.into(),
            job: job.into(),
            timezone: "UTC".into(),
            catch_up: CatchUpPolicy::default(),
        }
    }

    /// Sets the catch-up policy.
    pub fn catch_up(mut self, policy: CatchUpPolicy) -> Self {
        self.catch_up = policy;
        self
    }

    /// Sets the timezone.
    pub fn timezone(mut self, tz: impl Into<String>) -> Self {
        self.timezone = tz.into();
        self
    }

    /// Parses the cron expression (5-field expressions get a leading seconds field of 0).
    pub fn cron(&self) -> Result<cron::Schedule> {
        parse_cron(&self.cron_schedule).map_err(|e| {
            Error::Definition(format!(
                "schedule `{}` has an invalid cron expression {e}",
                self.name
            ))
        })
    }

    /// Parses the timezone.
    pub fn tz(&self) -> Result<chrono_tz::Tz> {
        self.timezone.parse().map_err(|_| {
            Error::Definition(format!(
                "schedule `{}` has an unknown timezone `{}` (use an IANA name such as `Europe/Paris`)",
                self.name, self.timezone
            ))
        })
    }
}

/// Parses a cron expression: 5 fields (`0 0 * * *`, minutes first) or 6-7 with seconds. The
/// error names the expression.
pub fn parse_cron(expr: &str) -> std::result::Result<cron::Schedule, String> {
    let fields = expr.split_whitespace().count();
    let full = if fields == 5 {
        format!("0 {expr}")
    } else {
        expr.to_owned()
    };
    full.parse::<cron::Schedule>()
        .map_err(|e| format!("`{expr}`: {e}"))
}

/// Everything a code location declares.
#[derive(Clone, Default)]
pub struct Definitions {
    pub(crate) assets: Vec<AssetDefinition>,
    pub(crate) checks: Vec<AssetCheckDefinition>,
    pub(crate) jobs: Vec<JobDefinition>,
    pub(crate) schedules: Vec<ScheduleDefinition>,
    pub(crate) sensors: Vec<SensorDefinition>,
    pub(crate) resources: Vec<ResourceDef>,
}

impl Definitions {
    /// Empty definitions.
    pub fn new() -> Self {
        Definitions::default()
    }

    /// Adds an asset (or multi-asset, or source asset).
    pub fn asset(mut self, asset: AssetDefinition) -> Self {
        self.assets.push(asset);
        self
    }

    /// Adds several assets.
    pub fn assets(mut self, assets: impl IntoIterator<Item = AssetDefinition>) -> Self {
        self.assets.extend(assets);
        self
    }

    /// Adds an asset check (its spec names the asset it checks).
    pub fn check(mut self, check: AssetCheckDefinition) -> Self {
        self.checks.push(check);
        self
    }

    /// Adds a job.
    pub fn job(mut self, job: JobDefinition) -> Self {
        self.jobs.push(job);
        self
    }

    /// Adds a schedule.
    pub fn schedule(mut self, schedule: ScheduleDefinition) -> Self {
        self.schedules.push(schedule);
        self
    }

    /// Adds a sensor.
    pub fn sensor(mut self, sensor: SensorDefinition) -> Self {
        self.sensors.push(sensor);
        self
    }

    /// Adds a resource given as a ready value, reachable as `ctx.resource::<T>()`.
    pub fn resource<T: Any + Send + Sync>(mut self, value: T) -> Self {
        self.resources.push(ResourceDef::value(value));
        self
    }

    /// Adds a resource built from config: `[resources.NAME]` in `rainbow.toml`, overridden by
    /// `RAINBOW_RESOURCES__NAME__FIELD` environment variables, deserialized into `T`.
    pub fn resource_from_config<T: DeserializeOwned + Any + Send + Sync>(
        mut self,
        name: impl Into<String>,
    ) -> Self {
        self.resources
            .push(ResourceDef::from_config::<T>(name.into()));
        self
    }

    /// Combines two sets of definitions.
    pub fn merge(mut self, other: Definitions) -> Self {
        self.assets.extend(other.assets);
        self.checks.extend(other.checks);
        self.jobs.extend(other.jobs);
        self.schedules.extend(other.schedules);
        self.sensors.extend(other.sensors);
        self.resources.extend(other.resources);
        self
    }

    /// The asset definitions.
    pub fn asset_definitions(&self) -> &[AssetDefinition] {
        &self.assets
    }

    /// The jobs.
    pub fn jobs(&self) -> &[JobDefinition] {
        &self.jobs
    }

    /// The schedules.
    pub fn schedules(&self) -> &[ScheduleDefinition] {
        &self.schedules
    }

    /// The declared resource names.
    pub fn resource_names(&self) -> impl Iterator<Item = &str> {
        self.resources.iter().map(|r| r.name.as_str())
    }
}
