//! The Rainbow code location: the batch layer as one asset graph.
//!
//! ```text
//! Rainbow DB ──extract──> raw/<table>            daily partitions, Parquet master dataset
//!                          │  checks: completeness (blocking), freshness (warn)
//!                          ▼  external tables raw.<table>
//!             main_staging/stg_*                  views over the master dataset
//!             main_warehouse/dim_* (SCD2), dim_dates, fact_sales (incremental merge)
//!             main_views/<view>                   the six batch views (tables)
//!                          │  dbt tests as checks (error = blocking)
//!                          ▼
//!             serving/<view>                      Parquet exports for the serving layer
//! ```
//!
//! `batch_job` selects all of it; the `nightly_batch` schedule runs it at 00:00 UTC on the
//! previous day's partition (missed nights are all caught up: a skipped day would be a gap
//! in the master dataset). Settings come from `<home>/pipeline.toml` when present, then
//! environment variables ([`PipelineSettings::load`]).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::NaiveDate;
use object_store::ObjectStore;
use rainbow_checks::{HiveDataset, completeness_check, freshness_check, system_clock};
use rainbow_engine::prelude::*;
use rainbow_warehouse::SqlProject;
use serde::{Deserialize, Serialize};

use crate::AssetsError;
use crate::export::export_assets;
use crate::extract::{ExtractSettings, extract_assets};

/// Where the pipeline reads and writes, and its partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSettings {
    /// The Rainbow DB (`sqlite://…` or `postgres://…`).
    pub source_url: String,
    /// The lake: a local directory, or an object store URL (`gs://bucket/prefix`). Holds
    /// `raw/` (the master dataset) and `serving/` (the views' exports).
    pub lake: String,
    /// The embedded warehouse's location (a directory or URL).
    pub warehouse: String,
    /// The first daily partition.
    pub start_date: NaiveDate,
    /// The exclusive end of the partitions (none: up to yesterday, growing daily).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_date: Option<NaiveDate>,
    /// The SQL project's directory.
    pub sql_models: PathBuf,
    /// How many daily partitions the master dataset may lag before freshness warns.
    #[serde(default = "default_lag")]
    pub freshness_lag: usize,
}

fn default_lag() -> usize {
    1
}

/// The settings file in a Rainbow home.
pub const SETTINGS_FILE: &str = "pipeline.toml";

/// The partition start when nothing says otherwise (the demo's history starts there).
pub const DEFAULT_START: &str = "2026-01-01";

impl PipelineSettings {
    /// Defaults for a home directory: the embedded SQLite source `<home>/source.db`, the lake
    /// `<home>/lake`, the warehouse `<home>/warehouse` (where `rainbow query` looks),
    /// partitions from [`DEFAULT_START`], the repository's `sql_models/`.
    pub fn defaults(home: &Path) -> Self {
        PipelineSettings {
            source_url: rainbow_db::sqlite_url(&home.join("source.db")),
            lake: home.join("lake").display().to_string(),
            warehouse: home.join("warehouse").display().to_string(),
            start_date: NaiveDate::parse_from_str(DEFAULT_START, "%Y-%m-%d")
                .unwrap_or(NaiveDate::MIN),
            end_date: None,
            sql_models: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../sql_models")),
            freshness_lag: default_lag(),
        }
    }

    /// `<home>/pipeline.toml` if it exists (else the defaults), then the environment:
    /// `RAINBOW_SOURCE_URL`, `RAINBOW_LAKE`, `RAINBOW_WAREHOUSE`, `RAINBOW_SQL_MODELS`.
    pub fn load(home: &Path) -> Result<Self, AssetsError> {
        let file = home.join(SETTINGS_FILE);
        let mut settings = match std::fs::read_to_string(&file) {
            Ok(text) => toml::from_str(&text)
                .map_err(|e| AssetsError::Invalid(format!("{}: {e}", file.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::defaults(home),
            Err(e) => return Err(AssetsError::Invalid(format!("{}: {e}", file.display()))),
        };
        if let Ok(url) = std::env::var("RAINBOW_SOURCE_URL") {
            settings.source_url = url;
        }
        if let Ok(lake) = std::env::var("RAINBOW_LAKE") {
            settings.lake = lake;
        }
        if let Ok(location) = std::env::var("RAINBOW_WAREHOUSE") {
            settings.warehouse = location;
        }
        if let Ok(dir) = std::env::var("RAINBOW_SQL_MODELS") {
            settings.sql_models = dir.into();
        }
        Ok(settings)
    }

    /// Writes `<home>/pipeline.toml`.
    pub fn save(&self, home: &Path) -> Result<(), AssetsError> {
        let file = home.join(SETTINGS_FILE);
        let text = toml::to_string(self)
            .map_err(|e| AssetsError::Invalid(format!("{}: {e}", file.display())))?;
        std::fs::create_dir_all(home)
            .and_then(|()| std::fs::write(&file, text))
            .map_err(|e| AssetsError::Invalid(format!("{}: {e}", file.display())))
    }

    /// The daily partitions of the extract.
    pub fn partitions(&self) -> PartitionsDefinition {
        let daily = PartitionsDefinition::daily(&self.start_date.format("%Y-%m-%d").to_string());
        match self.end_date {
            Some(end) => daily.end(end.format("%Y-%m-%d").to_string()),
            None => daily,
        }
    }

    /// A path or URL under the lake.
    pub fn lake_path(&self, rest: &str) -> String {
        format!("{}/{rest}", self.lake.trim_end_matches('/'))
    }

    /// The lake's object store (a local directory is created if missing).
    pub fn store(&self) -> Result<Arc<dyn ObjectStore>, AssetsError> {
        let bad =
            |e: &dyn std::fmt::Display| AssetsError::Invalid(format!("lake {}: {e}", self.lake));
        if self.lake.contains("://") {
            let url = url::Url::parse(&self.lake).map_err(|e| bad(&e))?;
            let (store, prefix) = object_store::parse_url_opts(
                &url,
                std::env::vars().map(|(k, v)| (k.to_ascii_lowercase(), v)),
            )
            .map_err(|e| bad(&e))?;
            return Ok(if prefix.as_ref().is_empty() {
                Arc::from(store)
            } else {
                Arc::new(object_store::prefix::PrefixStore::new(store, prefix))
            });
        }
        std::fs::create_dir_all(&self.lake).map_err(|e| bad(&e))?;
        Ok(Arc::new(
            object_store::local::LocalFileSystem::new_with_prefix(&self.lake)
                .map_err(|e| bad(&e))?,
        ))
    }

    /// The SQL project over this lake's warehouse, with the master dataset as external
    /// tables `raw.<table>`.
    pub fn sql_project(&self) -> SqlProject {
        let mut project = SqlProject::new(&self.sql_models, &self.warehouse).target_schema("main");
        for table in rainbow_db::source::tables() {
            let location = self.lake_path(&format!("raw/{}", table.name));
            project = project.external_table("raw", table.name, location);
        }
        project
    }
}

/// The job running the whole batch layer.
pub const BATCH_JOB: &str = "batch_job";

/// The nightly schedule's name.
pub const NIGHTLY: &str = "nightly_batch";

/// The Rainbow code location: extract, warehouse models and their tests, exports, checks,
/// `batch_job` and the nightly schedule.
pub fn definitions(settings: &PipelineSettings) -> Result<Definitions, AssetsError> {
    let store = settings.store()?;
    let partitions = settings.partitions();
    let extract = extract_assets(ExtractSettings {
        database_url: settings.source_url.clone(),
        store: store.clone(),
        store_url: settings.lake.clone(),
        partitions: partitions.clone(),
        reprocess: false,
    });
    let produced: HashSet<AssetKey> = extract.iter().flat_map(|a| a.keys().cloned()).collect();
    let project = settings.sql_project();
    let models = project.assets(&produced)?;
    let views: Vec<AssetKey> = models
        .iter()
        .flat_map(|a| a.keys().cloned())
        .filter(|k| k.segments().first().is_some_and(|s| s == "main_views"))
        .collect();
    let exports = export_assets(&project, store.clone(), &settings.lake, &views);
    let mut defs = Definitions::new()
        .assets(extract)
        .assets(models)
        .assets(exports);
    for key in produced {
        let Some(table) = key.segments().get(1).cloned() else {
            continue;
        };
        let dataset = HiveDataset {
            store: store.clone(),
            prefix: format!("raw/{table}"),
            column: "dt".into(),
        };
        defs = defs
            .check(completeness_check(
                key.clone(),
                dataset.clone(),
                partitions.clone(),
                system_clock(),
            ))
            .check(freshness_check(
                key,
                dataset,
                partitions.clone(),
                settings.freshness_lag,
                system_clock(),
            ));
    }
    Ok(defs
        .job(
            JobDefinition::new(BATCH_JOB, "*")
                .description("The batch layer: extract, warehouse models, checks, exports"),
        )
        .schedule(
            ScheduleDefinition::new(NIGHTLY, "0 0 * * *", BATCH_JOB)
                .catch_up(rainbow_engine::CatchUpPolicy::AllMissed),
        ))
}
