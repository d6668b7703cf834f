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
//! in the master dataset). Settings are the `[pipeline]` section of the one configuration
//! (`<home>/rainbow.toml`, `./rainbow.toml`, `RAINBOW_PIPELINE__*`; [`PipelineSettings::load`]).
//! The SQL project is built into the binary ([`SQL_MODELS`]) unless `sql_models` names one.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use object_store::ObjectStore;
use rainbow_checks::{HiveDataset, completeness_check, freshness_check, system_clock};
use rainbow_dbt::SqlProject;
use rainbow_engine::RainbowConfig;
use rainbow_engine::backfill::{
    BackfillRequest, BackfillRunOptions, PartitionSelector, launch_backfill, run_backfill,
};
use rainbow_engine::prelude::*;
use rainbow_engine::storage::Storage;
use rainbow_engine::storage::backfills::BackfillStatus;
use rainbow_engine::{Executor, RunOptions};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::AssetsError;
use crate::export::export_assets;
use crate::extract::{ExtractSettings, extract_assets};
use crate::generate::{GenerateOptions, Generator};

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
    /// The SQL project's directory; none: the `sql_models/` project built into the binary
    /// ([`SQL_MODELS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql_models: Option<PathBuf>,
    /// How many daily partitions the master dataset may lag before freshness warns.
    #[serde(default = "default_lag")]
    pub freshness_lag: usize,
    /// Where the SQL project's `profiles.yml` is: its `rainbow` profile's target (a
    /// `type: bigquery` one: BigQuery builds the models) replaces the embedded warehouse.
    /// None: the embedded warehouse at `warehouse`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profiles_dir: Option<PathBuf>,
    /// The profile's target to use (default: the profile's `target:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The lake as BigQuery reads it (`gs://bucket/prefix`), when `lake` is not already that
    /// URL: the same objects seen through Cloud Storage (a bucket mounted as a directory; an
    /// emulator's Cloud Storage root) — not a copy synchronised later, since what is copied
    /// into BigQuery is recorded with the fingerprint `lake` shows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bigquery_lake: Option<String>,
}

fn default_lag() -> usize {
    1
}

/// The configuration file of a Rainbow home (its `[pipeline]` section holds these settings).
pub const SETTINGS_FILE: &str = "rainbow.toml";

/// The Rainbow SQL project (`sql_models/`), built into the binary: a release runs without
/// the source tree.
pub static SQL_MODELS: include_dir::Dir<'static> =
    include_dir::include_dir!("$CARGO_MANIFEST_DIR/../sql_models");

/// The partition start when nothing says otherwise (the demo's history starts there).
pub const DEFAULT_START: &str = "2026-01-01";

impl PipelineSettings {
    /// Defaults for a home directory: the embedded SQLite source `<home>/rainbow_db.sqlite`
    /// (where `rainbow seed-data` and the orders API write by default), the lake
    /// `<home>/lake`, the warehouse `<home>/warehouse` (where `rainbow query` looks),
    /// partitions from [`DEFAULT_START`], the built-in SQL project.
    pub fn defaults(home: &Path) -> Self {
        // Absolute, so the settings written to `<home>/rainbow.toml` mean the same from any
        // working directory.
        let absolute = std::path::absolute(home).unwrap_or_else(|_| home.to_owned());
        let home = absolute.as_path();
        PipelineSettings {
            source_url: rainbow_db::sqlite_url(&home.join("rainbow_db.sqlite")),
            lake: home.join("lake").display().to_string(),
            warehouse: home.join("warehouse").display().to_string(),
            start_date: NaiveDate::parse_from_str(DEFAULT_START, "%Y-%m-%d")
                .unwrap_or(NaiveDate::MIN),
            end_date: None,
            sql_models: None,
            freshness_lag: default_lag(),
            profiles_dir: None,
            target: None,
            bigquery_lake: None,
        }
    }

    /// The `[pipeline]` section of `config` over [`PipelineSettings::defaults`] for `home`.
    /// Errors name the bad key and where it came from.
    pub fn load(home: &Path, config: &RainbowConfig) -> Result<Self, AssetsError> {
        Ok(config.get_or("pipeline", &Self::defaults(home))?)
    }

    /// Writes these settings as the `[pipeline]` section of `<home>/rainbow.toml` (its other
    /// sections are kept).
    pub fn save(&self, home: &Path) -> Result<(), AssetsError> {
        let file = home.join(SETTINGS_FILE);
        let bad =
            |e: &dyn std::fmt::Display| AssetsError::Invalid(format!("{}: {e}", file.display()));
        let mut table: toml::Table = match std::fs::read_to_string(&file) {
            Ok(text) => toml::from_str(&text).map_err(|e| bad(&e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => toml::Table::new(),
            Err(e) => return Err(bad(&e)),
        };
        table.insert(
            "pipeline".into(),
            toml::Value::try_from(self).map_err(|e| bad(&e))?,
        );
        let text = toml::to_string(&table).map_err(|e| bad(&e))?;
        std::fs::create_dir_all(home)
            .and_then(|()| std::fs::write(&file, text))
            .map_err(|e| bad(&e))
    }

    /// The SQL project's directory: the configured one, or the built-in project written once
    /// to a directory named by its content's hash (so it always matches this binary).
    pub fn sql_models_dir(&self) -> Result<PathBuf, AssetsError> {
        match &self.sql_models {
            Some(dir) if dir.join("dbt_project.yml").is_file() => Ok(dir.clone()),
            Some(dir) => Err(AssetsError::Invalid(format!(
                "pipeline.sql_models: {} holds no dbt_project.yml",
                dir.display()
            ))),
            None => materialize_sql_models(&std::env::temp_dir()),
        }
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
    /// On the target `profiles_dir` names, when set.
    pub fn sql_project(&self) -> Result<SqlProject, AssetsError> {
        let mut project = match &self.profiles_dir {
            Some(profiles) if !profiles.join("profiles.yml").is_file() => {
                return Err(AssetsError::Invalid(format!(
                    "pipeline.profiles_dir: {} holds no profiles.yml",
                    profiles.display()
                )));
            }
            Some(profiles) => SqlProject::from_profile(
                self.sql_models_dir()?,
                profiles,
                self.target.as_deref(),
                &self.warehouse,
            )?,
            None => SqlProject::new(self.sql_models_dir()?, &self.warehouse).target_schema("main"),
        };
        for table in rainbow_db::source::tables() {
            let location = self.lake_path(&format!("raw/{}", table.name));
            project = project.external_table("raw", table.name, location);
        }
        if let Some(uri) = &self.bigquery_lake {
            project = project.bigquery_lake(&self.lake, uri);
        }
        Ok(project)
    }
}

/// Writes [`SQL_MODELS`] under `parent` as `rainbow-sql_models-<hash>` unless already there
/// (written to a temporary directory first, then renamed: never half a project).
fn materialize_sql_models(parent: &Path) -> Result<PathBuf, AssetsError> {
    let mut files = Vec::new();
    collect_files(&SQL_MODELS, &mut files);
    files.sort_by(|a, b| a.0.cmp(&b.0));
    // FNV-1a over names and contents.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (path, bytes) in &files {
        for b in path.to_string_lossy().bytes().chain(bytes.iter().copied()) {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    let dir = parent.join(format!("rainbow-sql_models-{hash:016x}"));
    // Reused only when every file is there as built in (a temp cleaner or another user may
    // have changed it); otherwise this process writes its own copy.
    let intact = |d: &Path| {
        files
            .iter()
            .all(|(path, bytes)| std::fs::read(d.join(path)).is_ok_and(|b| b == *bytes))
    };
    if dir.join("dbt_project.yml").is_file() {
        if intact(&dir) {
            return Ok(dir);
        }
        let own = parent.join(format!(
            "rainbow-sql_models-{hash:016x}-{}",
            std::process::id()
        ));
        write_files(&own, &files)?;
        return Ok(own);
    }
    let bad = |e: std::io::Error| AssetsError::Invalid(format!("writing {}: {e}", dir.display()));
    let staging = parent.join(format!(
        "rainbow-sql_models-{hash:016x}.{}.tmp",
        std::process::id()
    ));
    write_files(&staging, &files)?;
    match std::fs::rename(&staging, &dir) {
        Ok(()) => Ok(dir),
        // Another process got there first: its copy is the same.
        Err(_) if dir.join("dbt_project.yml").is_file() => {
            let _ = std::fs::remove_dir_all(&staging);
            Ok(dir)
        }
        Err(e) => Err(bad(e)),
    }
}

/// Writes `files` under `dir`.
fn write_files(dir: &Path, files: &[(PathBuf, &'static [u8])]) -> Result<(), AssetsError> {
    let bad = |e: std::io::Error| AssetsError::Invalid(format!("writing {}: {e}", dir.display()));
    for (path, bytes) in files {
        let target = dir.join(path);
        if let Some(p) = target.parent() {
            std::fs::create_dir_all(p).map_err(bad)?;
        }
        std::fs::write(&target, bytes).map_err(bad)?;
    }
    Ok(())
}

fn collect_files(dir: &include_dir::Dir<'static>, out: &mut Vec<(PathBuf, &'static [u8])>) {
    for file in dir.files() {
        out.push((file.path().to_owned(), file.contents()));
    }
    for sub in dir.dirs() {
        collect_files(sub, out);
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
    let project = settings.sql_project()?;
    let models = project.declare(&produced)?;
    let views: Vec<AssetKey> = models
        .nodes
        .keys()
        .filter(|k| k.segments().first().is_some_and(|s| s == "main_views"))
        .cloned()
        .collect();
    let exports = export_assets(&project, store.clone(), &settings.lake, &views);
    let mut defs = Definitions::new()
        .assets(extract)
        .assets(models.assets)
        .assets(exports);
    for check in models.checks {
        defs = defs.check(check);
    }
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

/// What [`replay`] did and measured.
#[derive(Debug, Clone)]
pub struct Replay {
    /// False when the history was already in place (only the backfill ran).
    pub generated: bool,
    /// Time spent generating source data.
    pub generation: Duration,
    /// Time spent in the nightly extract runs.
    pub extracts: Duration,
    /// Time spent in the backfill.
    pub backfill: Duration,
    /// The backfill's id.
    pub backfill_id: String,
    /// Materializable assets.
    pub assets: usize,
    /// Checks whose latest result passed.
    pub checks_passed: usize,
    /// Checks whose latest result failed with severity warn.
    pub checks_warned: usize,
    /// Checks whose latest result failed with severity error.
    pub checks_failed: usize,
}

/// Replays a generated history the way production lives it, then backfills `batch_job`:
/// unless `<home>/demo-history.done` exists, a new source DB gets the generator's reference
/// data and then, day after day, that day's rows followed by that night's extract of its
/// partition (so every intermediate version reaches the master dataset); `day_done` is
/// called after each day. Then one backfill of every asset over every partition (extracts
/// find their days stored; models, checks and exports run once). A backfill that does not
/// complete is an error; failed checks are counted in the report.
pub async fn replay(
    home: &Path,
    settings: &PipelineSettings,
    options: &GenerateOptions,
    concurrency: usize,
    day_done: &(dyn Fn() + Sync),
) -> Result<Replay, AssetsError> {
    let defs = definitions(settings)?;
    let graph = Arc::new(AssetGraph::build(defs)?);
    let storage = Storage::open_sqlite_dir(home).await?;
    let executor = Executor::new(graph.clone(), storage.clone(), &RainbowConfig::default())?;
    let marker = home.join("demo-history.done");
    let mut report = Replay {
        generated: false,
        generation: Duration::ZERO,
        extracts: Duration::ZERO,
        backfill: Duration::ZERO,
        backfill_id: String::new(),
        assets: graph.nodes().iter().filter(|n| !n.is_source).count(),
        checks_passed: 0,
        checks_warned: 0,
        checks_failed: 0,
    };
    // The marker records what history is in place: a replay asking for another one (another
    // seed or size) is refused rather than silently reusing it.
    let wanted = format!(
        "start={} days={} orders_per_day={} seed={}",
        options.start, options.days, options.orders_per_day, options.seed
    );
    if let Ok(had) = std::fs::read_to_string(&marker)
        && !had.trim().is_empty()
        && had.trim() != wanted
    {
        return Err(AssetsError::Invalid(format!(
            "{} holds a history generated with {}, not {wanted}: use another --home, or remove it to start over",
            home.display(),
            had.trim()
        )));
    }
    if !marker.exists() {
        report.generated = true;
        let db = rainbow_db::connect(&settings.source_url, 4).await?;
        rainbow_db::source::migrate(&db).await?;
        let mut generator = Generator::new(options.clone())?;
        let started = Instant::now();
        // A source DB with data but no completed history (an interrupted replay, or another
        // application's data) is refused before anything is written.
        generator.write_reference_data(&db).await.map_err(|e| {
            AssetsError::Invalid(format!(
                "{e}: {} has no completed history; remove {} to start over",
                rainbow_db::redact(&settings.source_url),
                home.display()
            ))
        })?;
        Generator::sync_sequences(&db).await?;
        report.generation += started.elapsed();
        let raw = graph.select(&["group:raw"], &[] as &[&str])?;
        for day in 0..options.days {
            let started = Instant::now();
            generator.write_day(&db, day).await?;
            Generator::sync_sequences(&db).await?;
            report.generation += started.elapsed();
            let key = (options.start + chrono::Duration::days(i64::from(day)))
                .format("%Y-%m-%d")
                .to_string();
            let started = Instant::now();
            let result = executor
                .materialize(
                    &raw,
                    RunOptions {
                        selection: "group:raw".into(),
                        partitions: vec![key.clone()],
                        concurrency,
                        tags: BTreeMap::from([("rainbow/replay".to_owned(), NIGHTLY.to_owned())]),
                        ..Default::default()
                    },
                    CancellationToken::new(),
                    None,
                )
                .await?;
            report.extracts += started.elapsed();
            if !result.success() {
                return Err(AssetsError::Invalid(format!(
                    "the extract of {key} failed: see `rainbow runs show {}`",
                    result.run_id
                )));
            }
            day_done();
        }
        std::fs::write(&marker, wanted.as_bytes())
            .map_err(|e| AssetsError::Invalid(format!("{}: {e}", marker.display())))?;
    }
    let started = Instant::now();
    let record = launch_backfill(
        &graph,
        &storage,
        &BackfillRequest {
            select: vec!["*".into()],
            exclude: Vec::new(),
            partitions: PartitionSelector::All,
            max_concurrent: 1,
            tags: BTreeMap::from([(rainbow_engine::tags::JOB.to_owned(), BATCH_JOB.to_owned())]),
        },
        chrono::Utc::now(),
    )
    .await?;
    let status = run_backfill(
        &executor,
        &record.backfill_id,
        &BackfillRunOptions {
            run_concurrency: concurrency,
            ..Default::default()
        },
        CancellationToken::new(),
        None,
    )
    .await?;
    report.backfill = started.elapsed();
    report.backfill_id = record.backfill_id.clone();
    if status != BackfillStatus::Completed {
        return Err(AssetsError::Invalid(format!(
            "backfill {} ended {status:?}: see `rainbow backfill show {}` and `rainbow runs`",
            record.backfill_id, record.backfill_id
        )));
    }
    // The latest result of every check.

    for node in graph.nodes() {
        let results = storage.check_results(&node.spec.key, 1000).await?;
        let mut seen = std::collections::HashSet::new();
        for r in results {
            if !seen.insert(r.evaluation.check_name.clone()) {
                continue;
            }
            match (r.evaluation.passed, r.evaluation.severity) {
                (true, _) => report.checks_passed += 1,
                (false, AssetCheckSeverity::Warn) => report.checks_warned += 1,
                (false, _) => report.checks_failed += 1,
            }
        }
    }
    Ok(report)
}
