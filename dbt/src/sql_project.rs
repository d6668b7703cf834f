//! A dbt project as engine assets ([`SqlProject`]): every seed, model and snapshot is an asset
//! keyed `<schema>/<relation>`, with its `ref()`s and `source()`s as dependencies; every data test
//! is an asset check on the last node it reads (in the project's dependency order), the other
//! nodes it reads being the check's additional deps (severity `error` = blocking, `warn` =
//! warning). Sources that no other asset produces become source assets keyed
//! `<source schema>/<table>`; a Rust asset with that key is the source's producer instead, so
//! Rust assets and SQL models depend on each other in both directions.
//!
//! Assets carry dbt's selection methods as selection attributes (`name`, `path:`,
//! `resource_type:`, `config.materialized:`, `source:`; checks `test_name:` and
//! `resource_type:test`), so the engine's selection language is dbt's.
//!
//! The project is parsed once when declared, and compiled once per run (and per
//! partition-variable set): the first step of a run renders the project against the warehouse's
//! state (`is_incremental()`), refreshes the warehouse catalog and declares the external tables;
//! every other step and check of the run reuses that compilation.
//!
//! Partitioned models ([`SqlProject::partitioned`]) see `partition_key`, `partition_start` and
//! `partition_end` (ISO 8601) as template variables, e.g.
//! `where order_date = '{{ partition_key }}'`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rainbow_engine::AssetCheckDefinition;
use rainbow_engine::prelude::*;
use rainbow_warehouse::{RelationKind, Warehouse};
use serde_json::Value as Json;
use tokio::sync::OnceCell;

use crate::compile::{CompileOptions, Manifest, Node, NodeKind};
use crate::data_tests::{DataTest, Severity};
use crate::error::{DbtError, Result};
use crate::materialize::{build_node, failing_rows};
use crate::project::Project;

/// How many compilations (one per run and partition-variable set) a project keeps.
const COMPILED_KEPT: usize = 16;

/// Template variables a partitioned model reads; placeholders outside a partitioned run.
const PARTITION_VARS: [&str; 3] = ["partition_key", "partition_start", "partition_end"];

/// A dbt project to expose as assets.
#[derive(Clone)]
pub struct SqlProject {
    dir: PathBuf,
    location: String,
    schema: String,
    target_name: String,
    group: Option<String>,
    partitions: BTreeMap<String, PartitionsDefinition>,
    vars: BTreeMap<String, Json>,
    full_refresh: bool,
    run_started_at: Option<chrono::DateTime<chrono::Utc>>,
    retry: RetryPolicy,
    externals: Vec<External>,
    warehouse: Arc<OnceCell<Warehouse>>,
    /// A BigQuery target instead of the embedded warehouse, and its client (connected on
    /// first use).
    bigquery: Option<Arc<rainbow_bigquery::BigQueryTarget>>,
    bigquery_client: Arc<OnceCell<rainbow_bigquery::BigQuery>>,
    /// Catalog refreshes and external-table declarations take turns: two declaring the same
    /// table at once would each drop the other's declaration.
    refreshing: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for SqlProject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlProject")
            .field("dir", &self.dir)
            .field("location", &self.location)
            .field("schema", &self.schema)
            .field("target_name", &self.target_name)
            .finish_non_exhaustive()
    }
}

/// An external table the project reads (dbt-external-tables' `stage_external_sources`).
#[derive(Debug, Clone)]
struct External {
    schema: String,
    name: String,
    location: String,
    /// The same files as BigQuery reads them (`gs://…`), for a BigQuery target.
    bigquery_uri: Option<String>,
}

/// What dbt calls a node, for an asset key: reports name nodes as dbt does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// `seed`, `model`, `snapshot` or `source`.
    pub resource: &'static str,
    /// The node's name (`stg_orders`), or `source.table`.
    pub name: String,
    /// `schema.relation`.
    pub relation: String,
}

/// A declared project: its asset definitions and what each asset key is in dbt's terms.
pub struct Declared {
    /// Assets (with their tests as checks) and source assets.
    pub assets: Vec<AssetDefinition>,
    /// Tests that read only a source another definition produces: checks on that asset (add
    /// them with [`Definitions::check`]).
    pub checks: Vec<AssetCheckDefinition>,
    /// dbt's view of every declared asset key.
    pub nodes: BTreeMap<AssetKey, NodeInfo>,
}

/// One run's compilation.
struct Compiled {
    manifest: Manifest,
    unit_tests: HashMap<String, crate::unit_tests::CompiledUnitTest>,
    /// The options it was compiled with (a node rendered again for execution uses them).
    options: crate::compile::CompileOptions,
    /// Models compiled with `is_incremental()` true.
    incremental: std::collections::BTreeSet<String>,
    node_index: HashMap<String, usize>,
    tests: HashMap<String, DataTest>,
    run_started_at: String,
    target: Target,
}

/// Where a run's nodes are built.
#[derive(Clone)]
enum Target {
    /// The embedded DataFusion warehouse.
    Embedded(Warehouse),
    /// BigQuery.
    BigQuery(rainbow_bigquery::BigQuery),
}

impl Compiled {
    fn node(&self, name: &str) -> std::result::Result<&Node, String> {
        self.node_index
            .get(name)
            .map(|&i| &self.manifest.nodes[i])
            .ok_or_else(|| format!("`{name}` is no longer in the project"))
    }
}

/// The compilations of recent runs, oldest first.
#[derive(Default)]
struct CompiledRuns {
    by_key: HashMap<String, Arc<OnceCell<Arc<Compiled>>>>,
    order: VecDeque<String>,
}

/// What every asset of a project shares.
struct Shared {
    project: Project,
    config: SqlProject,
    compiled: Mutex<CompiledRuns>,
}

fn key_of(schema: &str, name: &str) -> AssetKey {
    AssetKey::new([schema, name])
}

fn resource_of(kind: NodeKind) -> &'static str {
    match kind {
        NodeKind::Seed => "seed",
        NodeKind::Snapshot => "snapshot",
        NodeKind::Test => "test",
        NodeKind::Model => "model",
    }
}

impl Shared {
    /// This run's compilation (the first caller of a run compiles; the others wait for it).
    async fn compiled(&self, ctx: &AssetContext) -> Result<Arc<Compiled>> {
        let key = format!("{}|{}", ctx.run_id(), ctx.partition_keys().join(","));
        let cell = {
            let mut runs = self.compiled.lock().map_err(|_| DbtError::Input {
                location: "SqlProject".into(),
                message: "a step panicked while compiling".into(),
            })?;
            match runs.by_key.get(&key) {
                Some(cell) => cell.clone(),
                None => {
                    let cell = Arc::new(OnceCell::new());
                    runs.by_key.insert(key.clone(), cell.clone());
                    runs.order.push_back(key);
                    while runs.order.len() > COMPILED_KEPT {
                        if let Some(old) = runs.order.pop_front() {
                            runs.by_key.remove(&old);
                        }
                    }
                    cell
                }
            }
        };
        cell.get_or_try_init(|| async { self.compile(ctx).await.map(Arc::new) })
            .await
            .cloned()
    }

    async fn compile(&self, ctx: &AssetContext) -> Result<Compiled> {
        let target = self.config.target().await?;
        if let Target::Embedded(warehouse) = &target {
            // What other processes wrote since, and the external tables, are seen from here on.
            let _turn = self.config.refreshing.lock().await;
            warehouse.refresh_catalog().await?;
            for e in &self.config.externals {
                if warehouse.kind(&e.schema, &e.name).is_none() {
                    warehouse
                        .create_external_table(&e.schema, &e.name, &e.location)
                        .await?;
                }
            }
        } else if let Target::BigQuery(bq) = &target {
            // The lake's tables copied in (new and changed partitions only).
            let _turn = self.config.refreshing.lock().await;
            let mut loads: HashMap<String, HashMap<String, BTreeMap<String, String>>> =
                HashMap::new();
            for e in &self.config.externals {
                let uri = match (&e.bigquery_uri, e.location.starts_with("gs://")) {
                    (Some(uri), _) => uri.clone(),
                    (None, true) => e.location.clone(),
                    (None, false) => {
                        return Err(DbtError::Input {
                            location: format!("external table {}.{}", e.schema, e.name),
                            message: format!(
                                "BigQuery reads the lake from Cloud Storage: {} is not a gs:// URL (set the pipeline's `bigquery_lake`)",
                                e.location
                            ),
                        });
                    }
                };
                if !loads.contains_key(&e.schema) {
                    let known = crate::bigquery::lake_loads(bq, &e.schema).await?;
                    loads.insert(e.schema.clone(), known);
                }
                let none = BTreeMap::new();
                let loaded = loads
                    .get(&e.schema)
                    .and_then(|l| l.get(&e.name))
                    .unwrap_or(&none);
                let copied = crate::bigquery::load_lake_table(
                    bq,
                    &e.schema,
                    &e.name,
                    &e.location,
                    &uri,
                    ctx.run_id(),
                    loaded,
                )
                .await?;
                if copied > 0 {
                    tracing::info!(
                        "{}.{}: {copied} partition(s) loaded into BigQuery",
                        e.schema,
                        e.name
                    );
                }
            }
        }
        let mut extra = placeholders();
        if let Some(key) = ctx.partition_key() {
            extra.insert("partition_key".to_owned(), Json::from(key));
        }
        if let Some(window) = ctx.partition_time_window() {
            extra.insert(
                "partition_start".to_owned(),
                Json::from(window.start.to_rfc3339()),
            );
            extra.insert(
                "partition_end".to_owned(),
                Json::from(window.end.to_rfc3339()),
            );
        }
        let mut options = self.config.compile_options(extra);
        options.invocation_id = ctx.run_id().to_owned();
        options.run_started_at = self
            .config
            .run_started_at
            .unwrap_or_else(chrono::Utc::now)
            .to_rfc3339();
        options.full_refresh = self.config.full_refresh;
        let mut manifest = parse_incremental(&self.project, &mut options, &target).await?;
        crate::compile::compile(&mut manifest);
        let tests = crate::data_tests::data_tests(&self.project, &manifest, &options)?
            .into_iter()
            .map(|t| (t.name.clone(), t))
            .collect();
        let unit_tests = crate::unit_tests::compile(&self.project, &manifest, &options)?
            .into_iter()
            .map(|t| (unit_test_id(&t.decl.model, &t.decl.name), t))
            .collect();
        let node_index = manifest
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        Ok(Compiled {
            manifest,
            unit_tests,
            options: options.clone(),
            incremental: options.incremental.clone(),
            node_index,
            tests,
            run_started_at: options.run_started_at,
            target,
        })
    }
}

/// The project parsed as a run renders it: `is_incremental()` true where the incremental
/// model's table exists on `target` and the model is not fully refreshed (`--full-refresh`,
/// unless its `full_refresh: false`), recorded in `options.incremental`.
async fn parse_incremental(
    project: &Project,
    options: &mut CompileOptions,
    target: &Target,
) -> Result<Manifest> {
    let manifest = crate::compile::parse(project, options)?;
    let candidates = manifest
        .nodes
        .iter()
        .filter(|n| n.kind == NodeKind::Model && n.materialized() == "incremental")
        .filter(|n| !crate::materialize::full_refresh_of(n, options.full_refresh));
    let mut incremental = Vec::new();
    for n in candidates {
        let table = match target {
            Target::Embedded(w) => w.kind(&n.schema, &n.relation) == Some(RelationKind::Table),
            Target::BigQuery(bq) => bq
                .relation(&n.schema, &n.relation)
                .await?
                .is_some_and(|r| r.kind == rainbow_bigquery::RelationKind::Table),
        };
        if table {
            incremental.push(n.name.clone());
        }
    }
    if incremental.is_empty() {
        return Ok(manifest);
    }
    options.incremental.extend(incremental);
    crate::compile::parse(project, options)
}

/// The partition variables with placeholder values (parsing never executes SQL).
fn placeholders() -> BTreeMap<String, Json> {
    PARTITION_VARS
        .into_iter()
        .map(|k| (k.to_owned(), Json::from("1970-01-01")))
        .collect()
}

impl SqlProject {
    /// The project in `dir`, built into the warehouse at `location` (a directory or URL), target
    /// `dev` with schema `main` (see [`SqlProject::from_profile`]).
    pub fn new(dir: impl Into<PathBuf>, location: impl Into<String>) -> Self {
        SqlProject {
            dir: dir.into(),
            location: location.into(),
            schema: "main".into(),
            target_name: "dev".into(),
            group: None,
            partitions: BTreeMap::new(),
            vars: BTreeMap::new(),
            full_refresh: false,
            run_started_at: None,
            retry: RetryPolicy::default(),
            externals: Vec::new(),
            warehouse: Arc::new(OnceCell::new()),
            bigquery: None,
            bigquery_client: Arc::new(OnceCell::new()),
            refreshing: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// The project in `dir` on the target its `profiles.yml` (in `profiles_dir`, as dbt's
    /// `--profiles-dir`) names: `target` or the profile's default output gives `target.name`,
    /// its `schema` the target schema and, for the embedded warehouse (`type: datafusion`), its
    /// `location` the warehouse; for a `type: bigquery` target, BigQuery (see
    /// [`rainbow_bigquery::BigQueryTarget`] for its settings); without a profiles file or an entry
    /// for the project's profile, target `target` (default `dev`), schema `main` and
    /// `default_location`. Errors: an unusable BigQuery output (named with its setting).
    pub fn from_profile(
        dir: impl Into<PathBuf>,
        profiles_dir: &Path,
        target: Option<&str>,
        default_location: impl Into<String>,
    ) -> Result<Self> {
        let dir = dir.into();
        let project = Project::load(&dir)?;
        let mut out = SqlProject::new(dir, default_location);
        if let Some(t) = target {
            out.target_name = t.to_owned();
        }
        let Some(profile) = project.profile_target(profiles_dir, target)? else {
            return Ok(out);
        };
        match profile.kind.as_str() {
            "datafusion" => {
                if let Some(location) = &profile.location {
                    out.location = location.clone();
                }
            }
            "bigquery" => {
                let where_ = format!(
                    "{}/profiles.yml: target `{}`",
                    profiles_dir.display(),
                    profile.name
                );
                let target = rainbow_bigquery::BigQueryTarget::from_profile(
                    &profile.output,
                    &where_,
                    profiles_dir,
                    |k| std::env::var(k).ok(),
                )?;
                out.schema = target.dataset.clone();
                out = out.bigquery(target);
            }
            // dbt-duckdb's profiles: the embedded warehouse (its `path` is not a DuckDB file
            // here; the location stays the default).
            "duckdb" => tracing::info!(
                "target `{}` has type `duckdb`: running on the embedded DataFusion warehouse",
                profile.name
            ),
            other => {
                return Err(DbtError::Input {
                    location: format!("{}/profiles.yml", profiles_dir.display()),
                    message: format!(
                        "target `{}` has type `{other}`: Rainbow builds on `datafusion` (the embedded warehouse; `duckdb` profiles run there too) or `bigquery`",
                        profile.name
                    ),
                });
            }
        }
        out.target_name = profile.name;
        if let Some(schema) = profile.schema {
            out.schema = schema;
        }
        Ok(out)
    }

    /// Declares `<schema>.<name>` as an external table over the Parquet files under
    /// `location` (Hive `key=value` folders become columns) before anything is built, as
    /// dbt-external-tables' `stage_external_sources` does. Declared once files exist.
    pub fn external_table(
        mut self,
        schema: impl Into<String>,
        name: impl Into<String>,
        location: impl Into<String>,
    ) -> Self {
        self.externals.push(External {
            schema: schema.into(),
            name: name.into(),
            location: location.into(),
            bigquery_uri: None,
        });
        self
    }

    /// On a BigQuery target, the external tables' files as BigQuery reads them: a location
    /// starting with `lake` is read from `uri` instead (`/home/u/lake` → `gs://bucket/lake`);
    /// locations already on `gs://` need none. BigQuery copies them into native tables
    /// ([`crate::bigquery`]'s lake loads) before anything is built.
    pub fn bigquery_lake(mut self, lake: &str, uri: &str) -> Self {
        let lake = lake.trim_end_matches('/');
        for e in &mut self.externals {
            if let Some(rest) = e.location.strip_prefix(lake) {
                e.bigquery_uri = Some(format!("{}{rest}", uri.trim_end_matches('/')));
            }
        }
        self
    }

    /// Builds on BigQuery (`target`) instead of the embedded warehouse; the target schema
    /// becomes the target's dataset unless set after.
    pub fn bigquery(mut self, target: rainbow_bigquery::BigQueryTarget) -> Self {
        self.schema = target.dataset.clone();
        self.bigquery = Some(Arc::new(target));
        self.bigquery_client = Arc::new(OnceCell::new());
        self
    }

    /// What runs a node's queries while it renders (`run_query`, `statement`) on this
    /// project's target.
    pub(crate) async fn query_fn(&self) -> Result<crate::compile::QueryFn> {
        Ok(match self.target().await? {
            Target::Embedded(warehouse) => warehouse_query(warehouse),
            Target::BigQuery(bq) => bigquery_query(bq),
        })
    }

    /// The columns of the relation `schema.name` on the project's target, in order (a table
    /// at its latest version; a name the embedded catalog does not know makes it read the
    /// directory again). Errors: no such relation.
    pub async fn relation_columns(&self, schema: &str, name: &str) -> Result<Vec<String>> {
        match self.target().await? {
            Target::Embedded(warehouse) => Ok(warehouse
                .schema_of(schema, name)
                .await?
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect()),
            Target::BigQuery(bq) => Ok(bq
                .relation(schema, name)
                .await?
                .ok_or_else(|| DbtError::Input {
                    location: format!("{schema}.{name}"),
                    message: "no such relation on BigQuery".into(),
                })?
                .columns
                .into_iter()
                .map(|c| c.name)
                .collect()),
        }
    }

    /// Runs a query on the project's target: the rows as Arrow batches and their schema (on
    /// BigQuery, unqualified names resolve in the target's dataset, and each column gets the
    /// Arrow type the embedded warehouse gives its BigQuery type). `context` names it in
    /// errors.
    pub async fn query(
        &self,
        sql: &str,
        context: &str,
    ) -> Result<(
        rainbow_warehouse::datafusion::arrow::datatypes::SchemaRef,
        Vec<rainbow_warehouse::datafusion::arrow::record_batch::RecordBatch>,
    )> {
        match self.target().await? {
            Target::Embedded(warehouse) => {
                warehouse.refresh_catalog().await?;
                let df = warehouse.dataframe(sql, context).await?;
                let schema = std::sync::Arc::new(df.schema().as_arrow().clone());
                let batches = df
                    .collect()
                    .await
                    .map_err(rainbow_warehouse::WarehouseError::datafusion(context))?;
                Ok((schema, batches))
            }
            Target::BigQuery(bq) => {
                let options = rainbow_bigquery::JobOptions {
                    context: context.to_owned(),
                    read_rows: true,
                    default_dataset: Some(self.schema.clone()),
                    ..Default::default()
                };
                let result = bq.run(sql, &options).await?;
                crate::bigquery::arrow_batches(&result, context).await
            }
        }
    }

    /// The project parsed as a run on this project's target renders it (`is_incremental()` from
    /// the target's tables), with `options` (their `incremental` filled in).
    pub(crate) async fn parse_for_run(
        &self,
        project: &Project,
        options: &mut CompileOptions,
    ) -> Result<Manifest> {
        parse_incremental(project, options, &self.target().await?).await
    }

    /// The project's BigQuery client (connected on first use), when it builds there.
    pub(crate) async fn bigquery_client(&self) -> Result<Option<rainbow_bigquery::BigQuery>> {
        match self.target().await? {
            Target::BigQuery(bq) => Ok(Some(bq)),
            Target::Embedded(_) => Ok(None),
        }
    }

    /// The BigQuery target, when the project builds there.
    pub fn bigquery_target(&self) -> Option<&rainbow_bigquery::BigQueryTarget> {
        self.bigquery.as_deref()
    }

    /// Where this project's nodes are built (the client connected, or the warehouse opened,
    /// on first use).
    async fn target(&self) -> Result<Target> {
        match &self.bigquery {
            Some(target) => Ok(Target::BigQuery(
                self.bigquery_client
                    .get_or_try_init(|| rainbow_bigquery::BigQuery::connect((**target).clone()))
                    .await?
                    .clone(),
            )),
            None => Ok(Target::Embedded(self.warehouse().await?.clone())),
        }
    }

    /// The project's embedded warehouse, shared by every asset of the project (opened on first
    /// use). Errors: the project builds on BigQuery (this command needs the embedded
    /// warehouse), the warehouse cannot be opened.
    pub async fn warehouse(&self) -> Result<&Warehouse> {
        if let Some(target) = &self.bigquery {
            return Err(DbtError::Input {
                location: format!("target `{}`", self.target_name),
                message: format!(
                    "this command runs on the embedded warehouse, and the target is BigQuery (project {}, dataset {})",
                    target.project, target.dataset
                ),
            });
        }
        Ok(self
            .warehouse
            .get_or_try_init(|| Warehouse::open(&self.location, &self.schema))
            .await?)
    }

    /// The project directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Builds into the warehouse at `location` instead (a directory or URL).
    pub fn location(mut self, location: impl Into<String>) -> Self {
        self.location = location.into();
        self.warehouse = Arc::new(OnceCell::new());
        self
    }

    /// The target schema (default `main`).
    pub fn target_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The target name, `target.name` in templates (default `dev`).
    pub fn target_name(mut self, name: impl Into<String>) -> Self {
        self.target_name = name.into();
        self
    }

    /// The group of every asset (default: the node's first folder under its resource path).
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Partitions the model `name`: it is built per partition with the partition variables.
    pub fn partitioned(
        mut self,
        name: impl Into<String>,
        partitions: PartitionsDefinition,
    ) -> Self {
        self.partitions.insert(name.into(), partitions);
        self
    }

    /// Project variables (`var()`), as `--vars` would set them.
    pub fn var(mut self, name: impl Into<String>, value: impl Into<Json>) -> Self {
        self.vars.insert(name.into(), value.into());
        self
    }

    /// Retries a failing node per `policy` (`--retries`; default: no retry).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Rebuilds incremental models from scratch (`--full-refresh`).
    pub fn full_refresh(mut self, full_refresh: bool) -> Self {
        self.full_refresh = full_refresh;
        self
    }

    /// Fixes `run_started_at` (a snapshot's time) instead of each run's start: for reproducible
    /// rebuilds and tests.
    pub fn run_started_at(mut self, at: chrono::DateTime<chrono::Utc>) -> Self {
        self.run_started_at = Some(at);
        self
    }

    /// Compile options for this project's target (`extra`: template variables).
    pub fn compile_options(&self, extra: BTreeMap<String, Json>) -> CompileOptions {
        CompileOptions {
            target_name: self.target_name.clone(),
            target_type: match self.bigquery {
                Some(_) => "bigquery".into(),
                None => "datafusion".into(),
            },
            database: self.bigquery.as_ref().map(|t| t.project.clone()),
            target_schema: self.schema.clone(),
            vars: self.vars.clone(),
            extra,
            ..Default::default()
        }
    }

    /// Adds the project's assets and checks to `defs`; `produced` are the keys other
    /// definitions already produce (their sources are not declared again).
    pub fn definitions(
        &self,
        defs: Definitions,
        produced: &HashSet<AssetKey>,
    ) -> Result<Definitions> {
        let declared = self.declare(produced)?;
        Ok(declared
            .checks
            .into_iter()
            .fold(defs.assets(declared.assets), Definitions::check))
    }

    /// Parses the project (once, partition variables as placeholders) and declares its assets
    /// and checks; also returns what each asset key is in dbt's terms.
    pub fn declare(&self, produced: &HashSet<AssetKey>) -> Result<Declared> {
        let project = Project::load(&self.dir)?;
        let options = self.compile_options(placeholders());
        let mut manifest = crate::compile::parse(&project, &options)?;
        crate::compile::compile(&mut manifest);
        let tests = crate::data_tests::data_tests(&project, &manifest, &options)?;
        let unit_tests = crate::unit_tests::compile(&project, &manifest, &options)?;
        let shared = Arc::new(Shared {
            project,
            config: self.clone(),
            compiled: Mutex::new(CompiledRuns::default()),
        });
        let keys: HashMap<&str, AssetKey> = manifest
            .nodes
            .iter()
            .filter(|n| n.kind != NodeKind::Test)
            .map(|n| (n.name.as_str(), key_of(&n.schema, &n.relation)))
            .collect();
        let position: HashMap<&str, usize> = manifest
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.as_str(), i))
            .collect();
        let source_key = |source: &str, table: &str| {
            let name = format!("{source}.{table}");
            let relation = manifest.sources.get(&name).cloned().unwrap_or(name);
            let (schema, table) = relation.split_once('.').unwrap_or(("main", &relation));
            key_of(schema, table)
        };
        // Each test on the last node it reads; the others are its additional deps.
        let mut checks: HashMap<&str, Vec<AssetCheckDefinition>> = HashMap::new();
        // Unit tests on their model, evaluated before it is built.
        for u in &unit_tests {
            let key = keys[u.decl.model.as_str()].clone();
            checks
                .entry(u.decl.model.as_str())
                .or_default()
                .push(unit_test_check(&shared, &u.decl.model, &u.decl.name, key));
        }
        let mut source_checks: BTreeMap<AssetKey, Vec<AssetCheckDefinition>> = BTreeMap::new();
        for test in &tests {
            let mut reads: Vec<&str> = test
                .refs
                .iter()
                .map(String::as_str)
                .filter(|r| keys.contains_key(r))
                .collect();
            reads.sort_by_key(|r| position[r]);
            reads.dedup();
            // Reads are all known nodes (filtered above), so indexing cannot fail.
            let read_keys: Vec<AssetKey> = reads.iter().map(|r| keys[r].clone()).collect();
            match reads.last() {
                Some(last) => {
                    let check = self.check(&shared, test, &read_keys);
                    checks.entry(last).or_default().push(check);
                }
                None => match test.sources.first() {
                    Some((source, table)) => {
                        let key = source_key(source, table);
                        let check = self.check(&shared, test, std::slice::from_ref(&key));
                        source_checks.entry(key).or_default().push(check);
                    }
                    None => {
                        return Err(DbtError::Project {
                            path: shared.project.root.join(&test.path),
                            message: format!(
                                "test `{}` reads no model, seed, snapshot or source",
                                test.name
                            ),
                        });
                    }
                },
            }
        }
        let mut declared = Declared {
            assets: Vec::new(),
            checks: Vec::new(),
            nodes: BTreeMap::new(),
        };
        let mut sources: BTreeMap<AssetKey, String> = BTreeMap::new();
        // A source whose table a node of this project builds (a seed loaded into the source's
        // schema, as jaffle_shop does) is that node, not a source asset.
        let own: HashSet<AssetKey> = manifest
            .nodes
            .iter()
            .filter(|n| n.kind != NodeKind::Test)
            .map(|n| keys[n.name.as_str()].clone())
            .collect();
        let produced: HashSet<AssetKey> = produced.iter().chain(&own).cloned().collect();
        let produced = &produced;
        // Sources only tests read are source assets too (their checks sit on them).
        for test in &tests {
            for (source, table) in &test.sources {
                let key = source_key(source, table);
                if !produced.contains(&key) {
                    sources.insert(key, format!("{source}.{table}"));
                }
            }
        }
        for node in manifest.nodes.iter().filter(|n| n.kind != NodeKind::Test) {
            let key = keys[node.name.as_str()].clone();
            let mut spec = self.spec(&shared, node, key.clone());
            let mut refs: Vec<&String> = node.refs.iter().collect();
            refs.sort();
            refs.dedup();
            for r in refs {
                spec = spec.dep(keys[r.as_str()].clone());
            }
            let mut node_sources: Vec<&(String, String)> = node.sources.iter().collect();
            node_sources.sort();
            node_sources.dedup();
            for (source, table) in node_sources {
                let key = source_key(source, table);
                if !produced.contains(&key) {
                    sources.insert(key.clone(), format!("{source}.{table}"));
                }
                spec = spec.dep(key);
            }
            let mut definition =
                materialization(&shared, spec, &node.name).retry_policy(self.retry.clone());
            for check in checks.remove(node.name.as_str()).unwrap_or_default() {
                definition = definition.check(check);
            }
            declared.nodes.insert(
                key,
                NodeInfo {
                    resource: resource_of(node.kind),
                    name: node.name.clone(),
                    relation: format!("{}.{}", node.schema, node.relation),
                },
            );
            declared.assets.push(definition);
        }
        for (key, name) in sources {
            let (source, _) = name.split_once('.').unwrap_or((name.as_str(), ""));
            let mut definition = AssetSpec::new(key.clone())
                .group("sources")
                .kind("source")
                .selector("resource_type", "source")
                .selector("source", source)
                .selector("source", name.clone())
                .selector("name", name.clone())
                .source();
            for check in source_checks.remove(&key).unwrap_or_default() {
                definition = definition.check(check);
            }
            declared.nodes.insert(
                key.clone(),
                NodeInfo {
                    resource: "source",
                    name,
                    relation: key.segments().join("."),
                },
            );
            declared.assets.push(definition);
        }
        // Tests on sources another definition produces: checks on that asset.
        declared
            .checks
            .extend(source_checks.into_values().flatten());
        Ok(declared)
    }

    /// The spec of a seed, model or snapshot node.
    fn spec(&self, shared: &Shared, node: &Node, key: AssetKey) -> AssetSpec {
        let group = self.group.clone().unwrap_or_else(|| {
            let parts: Vec<&str> = node.path.split('/').collect();
            if parts.len() > 2 {
                parts[1].to_owned()
            } else {
                parts[0].to_owned()
            }
        });
        let resource = resource_of(node.kind);
        let package = node
            .package
            .clone()
            .unwrap_or_else(|| shared.project.file.name.clone());
        let mut spec = AssetSpec::new(key)
            .group(group)
            .kind(match node.kind {
                NodeKind::Seed => "seed",
                NodeKind::Snapshot => "snapshot",
                _ => "sql",
            })
            .kind("datafusion")
            .metadata("path", node.path.clone())
            .metadata("materialized", node.materialized().to_owned())
            .selector("name", node.name.clone())
            .selector("path", node.path.clone())
            .selector("resource_type", resource)
            .selector("config.materialized", node.materialized().to_owned())
            .selector("file", file_name(&node.path))
            .selector("package", package.clone())
            .code_version(code_version(node.compiled.as_deref().unwrap_or(&node.path)));
        let inner = match shared.project.package_of(&node.path) {
            Some(p) => &node.path[p.install_prefix.len() + 1..],
            None => node.path.as_str(),
        };
        for prefix in fqn_prefixes(&package, inner, &node.name) {
            spec = spec.selector("fqn", prefix);
        }
        // `config.<key>:` for every config that is a value or a list of values (dbt's method).
        for (key, value) in &node.config {
            let values: Vec<String> = match value {
                Json::Array(items) => items.iter().filter_map(config_text).collect(),
                v => config_text(v).into_iter().collect(),
            };
            for v in values {
                spec = spec.selector(format!("config.{key}"), v);
            }
        }
        if let Some(d) = shared.project.descriptions.get(&node.name) {
            spec = spec.description(d.clone());
        }
        if let Some(Json::Array(tags)) = node.config.get("tags") {
            for t in tags.iter().filter_map(Json::as_str) {
                spec = spec.tag(t, "");
            }
        }
        if let Some(p) = self.partitions.get(&node.name) {
            spec = spec.partitions(p.clone());
        }
        spec
    }

    /// A data test as a check on the last of `reads` (the assets it reads, in dependency
    /// order; never empty), the others its additional deps.
    fn check(
        &self,
        shared: &Arc<Shared>,
        test: &DataTest,
        reads: &[AssetKey],
    ) -> AssetCheckDefinition {
        let (asset, others) = match reads.split_last() {
            Some((last, others)) => (last.clone(), others),
            None => (AssetKey::new([test.name.as_str()]), &[][..]),
        };
        // A schema file's test is compiled to `<schema file>/<name>.sql`.
        let generic = test.path.contains(".yml/") || test.path.contains(".yaml/");
        let mut spec = AssetCheckSpec::new(test.name.clone(), asset)
            .description(format!("dbt test `{}` ({})", test.test, test.path))
            .severity(match test.severity {
                Severity::Warn => AssetCheckSeverity::Warn,
                Severity::Error => AssetCheckSeverity::Error,
            })
            .blocking(test.severity == Severity::Error)
            .selector("test_name", test.test.clone())
            .selector("resource_type", "test")
            .selector("path", test.path.clone())
            .selector("file", file_name(&test.path))
            .selector("package", shared.project.file.name.clone())
            // dbt's test types: `generic` (a schema file's test), `singular` (a SQL file of
            // tests/); `schema` and `data` are their older names.
            .selector("test_type", if generic { "generic" } else { "singular" })
            .selector("test_type", if generic { "schema" } else { "data" });
        for key in others {
            spec = spec.additional_dep(key.clone());
        }
        let shared = shared.clone();
        let name = test.name.clone();
        spec.compute(move |ctx: AssetContext| {
            let shared = shared.clone();
            let name = name.clone();
            async move {
                let compiled = shared.compiled(&ctx).await?;
                let test = compiled
                    .tests
                    .get(&name)
                    .ok_or_else(|| format!("test `{name}` is no longer in the project"))?;
                let executed;
                let test = match &test.rerender {
                    Some(rerender) => {
                        let sql = execute_test(&shared, &compiled, rerender, &test.path).await?;
                        executed = DataTest {
                            sql,
                            ..test.clone()
                        };
                        &executed
                    }
                    None => test,
                };
                let outcome = match &compiled.target {
                    Target::Embedded(warehouse) => {
                        let outcome = {
                            let _permit = warehouse_pool().acquire().await?;
                            rainbow_warehouse::instrument::work(failing_rows(warehouse, test))
                                .await?
                        };
                        if test.store_failures {
                            // dbt's audit table: the failing rows of this run, under the
                            // test's name.
                            let audit = format!("{}_dbt_test__audit", shared.config.schema);
                            let rows = warehouse
                                .dataframe(&test.sql, &format!("test {}", test.name))
                                .await?;
                            rainbow_warehouse::instrument::work(warehouse.write_table(
                                &audit,
                                &test.name,
                                rows,
                                rainbow_warehouse::WriteMode::Replace,
                            ))
                            .await?;
                        }
                        outcome
                    }
                    Target::BigQuery(bq) => {
                        let mut jobs = crate::bigquery::Jobs::new(bq, &test.name, ctx.run_id());
                        let outcome = crate::bigquery::failing_rows(&mut jobs, test).await?;
                        if test.store_failures {
                            let audit = format!("{}_dbt_test__audit", shared.config.schema);
                            crate::bigquery::store_failures(&mut jobs, &audit, test).await?;
                        }
                        outcome
                    }
                };
                // dbt's test status: error_if decides an error-severity test's failure, then
                // warn_if a warning; otherwise it passes.
                let result = if outcome.error && test.severity == Severity::Error {
                    AssetCheckResult::new(false)
                } else if outcome.warn {
                    AssetCheckResult::new(false).severity(AssetCheckSeverity::Warn)
                } else {
                    AssetCheckResult::new(true)
                };
                Ok::<_, BoxError>(result.metadata("failing_rows", outcome.failures))
            }
        })
    }
}

/// The warehouse pool: at most one model build or data test query per core at a time, across
/// runs of this process (Dagster's concurrency pools). A DataFusion query already uses every
/// core, so more at once mostly adds memory (issue 17, the SQL project at one million orders on
/// 2 cores: eight steps at once peaked at 1.45 GB in 4.4–4.6 s, the pool at 1.28–1.40 GB in
/// 4.2–4.4 s).
fn warehouse_pool() -> &'static tokio::sync::Semaphore {
    static POOL: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    POOL.get_or_init(|| tokio::sync::Semaphore::new(rainbow_engine::process::cores()))
}

/// The asset definition building node `name` from this run's compilation.
fn materialization(shared: &Arc<Shared>, spec: AssetSpec, name: &str) -> AssetDefinition {
    let shared = shared.clone();
    let name = name.to_owned();
    spec.compute(move |ctx: AssetContext| {
        let shared = shared.clone();
        let name = name.clone();
        async move {
            let compiled = shared.compiled(&ctx).await?;
            let node = compiled.node(&name)?;
            let executed;
            let node = if node.needs_execute {
                executed = execute_node(&shared, &compiled, node).await?;
                &executed
            } else {
                node
            };
            let options = crate::materialize::BuildOptions {
                full_refresh: shared.config.full_refresh,
                compiled_incremental: compiled.incremental.contains(&node.name),
                run_started_at: &compiled.run_started_at,
            };
            let warehouse = match &compiled.target {
                Target::Embedded(warehouse) => warehouse,
                Target::BigQuery(bq) => {
                    let mut jobs = crate::bigquery::Jobs::new(bq, &node.name, ctx.run_id());
                    let built =
                        crate::bigquery::build_node(&mut jobs, &shared.project, node, options)
                            .await?;
                    let mut result = MaterializeResult::new()
                        .metadata("status", built.message)
                        .metadata("relation", bq.quoted(&node.schema, &node.relation));
                    // Rows the build knows (a seed, a snapshot), else counted.
                    let rows = match built.rows {
                        Some(rows) => Some(rows),
                        None => crate::bigquery::table_rows(&mut jobs, node).await?,
                    };
                    if let Some(rows) = rows {
                        result = result.row_count(rows);
                    }
                    let stats = jobs.stats;
                    return Ok::<_, BoxError>(
                        result
                            .metadata("bigquery_job_ids", stats.job_ids.join(", "))
                            .metadata(
                                "bytes_processed",
                                i64::try_from(stats.bytes_processed).unwrap_or(i64::MAX),
                            )
                            .metadata(
                                "bytes_billed",
                                i64::try_from(stats.bytes_billed).unwrap_or(i64::MAX),
                            )
                            .metadata("slot_ms", i64::try_from(stats.slot_ms).unwrap_or(i64::MAX)),
                    );
                }
            };
            let permit = warehouse_pool().acquire().await?;
            let built = rainbow_warehouse::instrument::work(build_node(
                &shared.project,
                warehouse,
                node,
                options,
            ))
            .await?;
            drop(permit);
            let mut result = MaterializeResult::new()
                .metadata("status", built.message)
                .metadata("relation", format!("{}.{}", node.schema, node.relation));
            let is_table =
                warehouse.kind(&node.schema, &node.relation) == Some(RelationKind::Table);
            match built.rows {
                Some(rows) if is_table => result = result.row_count(rows),
                // Merged, appended or hooked: the table's rows are counted.
                _ if is_table => {
                    let n = rainbow_warehouse::instrument::work(warehouse.count(
                        &format!("SELECT COUNT(*) FROM {}.{}", node.schema, node.relation),
                        &node.path,
                    ))
                    .await?;
                    result = result.row_count(u64::try_from(n).unwrap_or(0));
                }
                _ => {}
            }
            Ok::<_, BoxError>(result)
        }
    })
}

/// A short stable hash of the compiled SQL (FNV-1a, 64 bits): the asset's code version.
fn code_version(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The file name of a project path (`models/staging/stg_orders.sql` → `stg_orders.sql`): dbt's
/// `file:` method.
fn file_name(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_owned()
}

/// dbt's fqn of a node — the project, the folders under the resource's path, the node's name
/// — as every prefix joined by `.` (`shop`, `shop.staging`, `shop.staging.stg_orders`): the
/// `fqn:` method matches a prefix, or the name alone.
fn fqn_prefixes(project: &str, path: &str, name: &str) -> Vec<String> {
    let folders: Vec<&str> = path.split('/').collect();
    let folders = &folders[1.min(folders.len())..folders.len().saturating_sub(1)];
    let mut parts = vec![project.to_owned()];
    parts.extend(folders.iter().map(|f| (*f).to_owned()));
    parts.push(name.to_owned());
    let mut out: Vec<String> = (1..=parts.len()).map(|n| parts[..n].join(".")).collect();
    // A node's own name matches its fqn too (dbt: `fqn[-1] == selector`).
    out.push(name.to_owned());
    out
}

/// A config value as selection text (`true`, `table`, `3`); None for maps and NULL.
fn config_text(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Bool(b) => Some(b.to_string()),
        Json::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `node` rendered again with `execute` true, its queries run on the warehouse (dbt's
/// introspective Jinja, [`crate::compile::render_for_execution`]): rendering is synchronous, so
/// it runs on a blocking thread whose queries wait on the runtime.
async fn execute_node(shared: &Arc<Shared>, compiled: &Arc<Compiled>, node: &Node) -> Result<Node> {
    let options = execute_options(compiled);
    let (shared, compiled, target) = (shared.clone(), compiled.clone(), node.clone());
    let sql = tokio::task::spawn_blocking(move || {
        crate::compile::render_for_execution(&shared.project, &compiled.manifest, &target, &options)
    })
    .await
    .map_err(|e| DbtError::Input {
        location: node.path.clone(),
        message: format!("rendering panicked: {e}"),
    })??;
    let mut node = node.clone();
    node.compiled = Some(sql);
    Ok(node)
}

/// A test's SQL rendered again with `execute` true (see [`crate::data_tests::Rerender`]).
async fn execute_test(
    shared: &Arc<Shared>,
    compiled: &Arc<Compiled>,
    rerender: &crate::data_tests::Rerender,
    path: &str,
) -> Result<String> {
    let options = execute_options(compiled);
    let (shared, compiled, rerender) = (shared.clone(), compiled.clone(), rerender.clone());
    tokio::task::spawn_blocking(move || -> Result<String> {
        match rerender {
            crate::data_tests::Rerender::Singular(name) => {
                let node = compiled.node(&name).map_err(|message| DbtError::Input {
                    location: name.clone(),
                    message,
                })?;
                crate::compile::render_for_execution(
                    &shared.project,
                    &compiled.manifest,
                    node,
                    &options,
                )
            }
            crate::data_tests::Rerender::Generic { source, ctx } => {
                let env = crate::compile::macro_environment(&shared.project, &options)?;
                let relations = crate::compile::relations(&compiled.manifest);
                crate::compile::render_snippet(&env, &source, ctx, &relations)
                    .map(|s| s.sql.trim().to_owned())
                    .map_err(|e| DbtError::Input {
                        location: "test".into(),
                        message: e.to_string(),
                    })
            }
        }
    })
    .await
    .map_err(|e| DbtError::Input {
        location: path.to_owned(),
        message: format!("rendering panicked: {e}"),
    })?
}

/// The run's compile options with `execute` true and queries on the run's warehouse.
fn execute_options(compiled: &Compiled) -> crate::compile::CompileOptions {
    let mut options = compiled.options.clone();
    options.execute = true;
    options.query = Some(match &compiled.target {
        Target::Embedded(warehouse) => warehouse_query(warehouse.clone()),
        Target::BigQuery(bq) => bigquery_query(bq.clone()),
    });
    options
}

/// Queries on BigQuery for a render on a blocking thread (they wait on the runtime).
fn bigquery_query(bq: rainbow_bigquery::BigQuery) -> crate::compile::QueryFn {
    let handle = tokio::runtime::Handle::current();
    crate::compile::QueryFn(Arc::new(move |sql: &str| {
        handle.block_on(crate::bigquery::query_result(&bq, sql))
    }))
}

/// Queries on `warehouse` for a render on a blocking thread (they wait on the runtime).
pub(crate) fn warehouse_query(warehouse: Warehouse) -> crate::compile::QueryFn {
    let handle = tokio::runtime::Handle::current();
    crate::compile::QueryFn(Arc::new(move |sql: &str| {
        let warehouse = warehouse.clone();
        let sql = sql.to_owned();
        handle
            .block_on(async move {
                let context = "a query while rendering";
                let df = warehouse.dataframe(&sql, context).await?;
                let schema = df.schema().as_arrow().clone();
                let batches = df
                    .collect()
                    .await
                    .map_err(rainbow_warehouse::WarehouseError::datafusion(context))?;
                Ok::<_, rainbow_warehouse::WarehouseError>((schema, batches))
            })
            .map_err(|e| e.to_string())
            .and_then(|(schema, batches)| query_result(&schema, &batches))
    }))
}

/// Record batches as rows of JSON values, encoded as `rainbow query --format json` encodes
/// them (arrow's JSON writer: numbers stay numbers, times become text).
fn query_result(
    schema: &rainbow_warehouse::datafusion::arrow::datatypes::Schema,
    batches: &[rainbow_warehouse::datafusion::arrow::record_batch::RecordBatch],
) -> std::result::Result<crate::compile::QueryResult, String> {
    use rainbow_warehouse::datafusion::arrow::json::ArrayWriter;
    let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let mut text = Vec::new();
    let mut writer = ArrayWriter::new(&mut text);
    for b in batches {
        writer.write(b).map_err(|e| e.to_string())?;
    }
    writer.finish().map_err(|e| e.to_string())?;
    let objects: Vec<serde_json::Map<String, Json>> = if text.is_empty() {
        Vec::new()
    } else {
        serde_json::from_slice(&text).map_err(|e| e.to_string())?
    };
    Ok(crate::compile::QueryResult {
        types: schema
            .fields()
            .iter()
            .map(|f| {
                crate::unit_tests::bigquery_type(f.data_type())
                    .map(str::to_owned)
                    .unwrap_or_else(|| f.data_type().to_string())
            })
            .collect(),
        // The writer leaves NULLs out of each object.
        rows: objects
            .into_iter()
            .map(|mut o| {
                columns
                    .iter()
                    .map(|c| o.remove(c).unwrap_or(Json::Null))
                    .collect()
            })
            .collect(),
        columns,
    })
}

/// A unit test as a blocking check on its model, evaluated before the model is built (dbt
/// build's order); `resource_type:unit_test` / `test_type:unit` select it.
fn unit_test_check(
    shared: &Arc<Shared>,
    model_name: &str,
    name: &str,
    model: AssetKey,
) -> AssetCheckDefinition {
    // Unique per model, as dbt's `unit_test.<package>.<model>.<name>`.
    let id = unit_test_id(model_name, name);
    let spec = AssetCheckSpec::new(name.to_owned(), model)
        .description(format!("dbt unit test `{name}`"))
        .blocking(true)
        .before_materialization()
        .selector("resource_type", "unit_test")
        .selector("test_type", "unit")
        .selector("unit_test", name.to_owned())
        .selector("package", shared.project.file.name.clone());
    let shared = shared.clone();
    let name = id;
    spec.compute(move |ctx: AssetContext| {
        let shared = shared.clone();
        let name = name.clone();
        async move {
            let compiled = shared.compiled(&ctx).await?;
            let test = compiled
                .unit_tests
                .get(&name)
                .ok_or_else(|| format!("unit test `{name}` is no longer in the project"))?;
            let target = match &compiled.target {
                Target::Embedded(w) => crate::unit_tests::UnitTarget::Embedded(w),
                Target::BigQuery(bq) => crate::unit_tests::UnitTarget::BigQuery(bq),
            };
            let outcome =
                rainbow_warehouse::instrument::work(crate::unit_tests::run(target, test)).await?;
            let mut result = AssetCheckResult::new(outcome.passed);
            if !outcome.passed {
                result = result.description(format!(
                    "actual (+) and expected (-) rows differ:\n{}",
                    outcome.diff
                ));
            }
            Ok::<_, BoxError>(result)
        }
    })
}

/// A unit test's key: its model and name (two models may have tests of the same name).
fn unit_test_id(model: &str, name: &str) -> String {
    format!("{model}.{name}")
}
