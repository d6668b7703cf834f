//! A SQL project as engine assets: every seed, model and snapshot is an asset keyed
//! `<schema>/<name>` (its relation), with its `ref()`s and `source()`s as dependencies;
//! every data test is an asset check on the last node it reads (severity `error` = blocking,
//! `warn` = warning). Sources that no other asset produces become source assets keyed
//! `<source schema>/<table>`; a Rust asset with that key is the source's producer instead, so
//! Rust assets and SQL models depend on each other in both directions.
//!
//! Partitioned models ([`SqlProject::partitioned`]) see `partition_key`, `partition_start` and
//! `partition_end` (ISO 8601) as template variables, e.g.
//! `where order_date = '{{ partition_key }}'`.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use rainbow_engine::prelude::*;
use rainbow_sql::{DataTest, Manifest, NodeKind, Project, Severity};
use serde_json::Value as Json;
use tokio::sync::OnceCell;

use crate::error::Result;
use crate::materialize::{self, RunOptions};
use crate::warehouse::Warehouse;

/// A dbt project to expose as assets.
#[derive(Clone)]
pub struct SqlProject {
    dir: PathBuf,
    location: String,
    schema: String,
    group: Option<String>,
    partitions: BTreeMap<String, PartitionsDefinition>,
    vars: BTreeMap<String, Json>,
    externals: Vec<External>,
    warehouse: Arc<OnceCell<Warehouse>>,
    refreshing: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for SqlProject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlProject")
            .field("dir", &self.dir)
            .field("location", &self.location)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// An external table the project reads (dbt-external-tables' `stage_external_sources`).
#[derive(Debug, Clone)]
struct External {
    schema: String,
    name: String,
    location: String,
}

/// What every asset of a project shares: the parsed project and its configuration (whose
/// warehouse handle is shared too).
struct Shared {
    project: Project,
    config: SqlProject,
}

/// Opens (once) the project's warehouse, refreshes it so that what other processes wrote is
/// visible, and declares the external tables not declared yet.
/// Concurrent steps take turns (`refreshing`): two declaring the same table at once would
/// each drop the other's declaration.
async fn open_warehouse<'a>(
    cell: &'a OnceCell<Warehouse>,
    refreshing: &tokio::sync::Mutex<()>,
    location: &str,
    schema: &str,
    externals: &[External],
) -> Result<&'a Warehouse> {
    let warehouse = cell
        .get_or_try_init(|| Warehouse::open(location, schema))
        .await?;
    let _turn = refreshing.lock().await;
    warehouse.refresh_catalog().await?;
    for e in externals {
        if warehouse.kind(&e.schema, &e.name).is_none() {
            warehouse
                .create_external_table(&e.schema, &e.name, &e.location)
                .await?;
        }
    }
    Ok(warehouse)
}

impl Shared {
    async fn warehouse(&self) -> Result<&Warehouse> {
        self.config.warehouse().await
    }

    /// Compiles the project for one materialization (partition variables included).
    async fn compile(
        &self,
        ctx: &AssetContext,
    ) -> Result<(&Warehouse, Manifest, Vec<DataTest>, RunOptions, String)> {
        let warehouse = self.warehouse().await?;
        // The whole project compiles for each node: partitioned models other than this one
        // see placeholders (the engine only builds a partitioned asset with its partition).
        let mut extra: BTreeMap<String, Json> =
            ["partition_key", "partition_start", "partition_end"]
                .into_iter()
                .map(|k| (k.to_owned(), Json::from("1970-01-01")))
                .collect();
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
        let options = RunOptions {
            vars: self.config.vars.clone(),
            extra,
            ..Default::default()
        };
        let (manifest, tests, compile_options) =
            materialize::compile(&self.project, warehouse, &options)?;
        Ok((
            warehouse,
            manifest,
            tests,
            options,
            compile_options.run_started_at,
        ))
    }
}

fn key_of(schema: &str, name: &str) -> AssetKey {
    AssetKey::new([schema, name])
}

impl SqlProject {
    /// The project in `dir`, built into the warehouse at `location` (a directory or URL).
    pub fn new(dir: impl Into<PathBuf>, location: impl Into<String>) -> Self {
        SqlProject {
            dir: dir.into(),
            location: location.into(),
            schema: "main".into(),
            group: None,
            partitions: BTreeMap::new(),
            vars: BTreeMap::new(),
            externals: Vec::new(),
            warehouse: Arc::new(OnceCell::new()),
            refreshing: Arc::new(tokio::sync::Mutex::new(())),
        }
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
        });
        self
    }

    /// The project's warehouse, shared by every asset of the project (opened on first use,
    /// refreshed on each call).
    pub async fn warehouse(&self) -> Result<&Warehouse> {
        open_warehouse(
            &self.warehouse,
            &self.refreshing,
            &self.location,
            &self.schema,
            &self.externals,
        )
        .await
    }

    /// The target schema (default `main`).
    pub fn target_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
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

    /// Parses the project and declares its assets and checks. `produced` are the keys other
    /// definitions already produce (their sources are not declared again).
    pub fn assets(&self, produced: &HashSet<AssetKey>) -> Result<Vec<AssetDefinition>> {
        let project = Project::load(&self.dir)?;
        // Declaring parses once without a partition: its variables get placeholder values
        // (rendering never executes SQL).
        let extra = ["partition_key", "partition_start", "partition_end"]
            .into_iter()
            .map(|k| (k.to_owned(), Json::from("1970-01-01")))
            .collect();
        let options = rainbow_sql::CompileOptions {
            target_schema: self.schema.clone(),
            vars: self.vars.clone(),
            extra,
            ..Default::default()
        };
        let mut manifest = rainbow_sql::parse(&project, &options)?;
        rainbow_sql::compile(&mut manifest);
        let tests = rainbow_sql::data_tests(&project, &manifest, &options)?;
        let shared = Arc::new(Shared {
            project,
            config: self.clone(),
        });
        let keys: BTreeMap<&str, AssetKey> = manifest
            .nodes
            .iter()
            .filter(|n| n.kind != NodeKind::Test)
            .map(|n| (n.name.as_str(), key_of(&n.schema, &n.relation)))
            .collect();
        let mut out = Vec::new();
        let mut sources: BTreeMap<AssetKey, ()> = BTreeMap::new();
        for node in &manifest.nodes {
            if node.kind == NodeKind::Test {
                continue;
            }
            let key = keys[node.name.as_str()].clone();
            let group = self.group.clone().unwrap_or_else(|| {
                let parts: Vec<&str> = node.path.split('/').collect();
                if parts.len() > 2 {
                    parts[1].to_owned()
                } else {
                    parts[0].to_owned()
                }
            });
            let mut spec = AssetSpec::new(key.clone())
                .group(group)
                .kind(match node.kind {
                    NodeKind::Seed => "seed",
                    NodeKind::Snapshot => "snapshot",
                    _ => "sql",
                })
                .kind("datafusion")
                .metadata("path", node.path.clone())
                .metadata("materialized", node.materialized().to_owned())
                .code_version(code_version(node.compiled.as_deref().unwrap_or(&node.path)));
            if let Some(d) = shared.project.descriptions.get(&node.name) {
                spec = spec.description(d.clone());
            }
            if let Some(Json::Array(tags)) = node.config.get("tags") {
                for t in tags.iter().filter_map(Json::as_str) {
                    spec = spec.tag(t, "");
                }
            }
            for r in &node.refs {
                spec = spec.dep(keys[r.as_str()].clone());
            }
            for (source, table) in &node.sources {
                let relation = manifest
                    .sources
                    .get(&format!("{source}.{table}"))
                    .cloned()
                    .unwrap_or_else(|| format!("{source}.{table}"));
                let (schema, name) = relation.split_once('.').unwrap_or(("main", &relation));
                let source_key = key_of(schema, name);
                if !produced.contains(&source_key) {
                    sources.insert(source_key.clone(), ());
                }
                spec = spec.dep(source_key);
            }
            if let Some(p) = self.partitions.get(&node.name) {
                spec = spec.partitions(p.clone());
            }
            let name = node.name.clone();
            let shared_node = shared.clone();
            let mut definition = spec.compute(move |ctx: AssetContext| {
                let shared = shared_node.clone();
                let name = name.clone();
                async move {
                    let (warehouse, manifest, _, options, started) = shared.compile(&ctx).await?;
                    let node = manifest
                        .nodes
                        .iter()
                        .find(|n| n.name == name)
                        .ok_or_else(|| format!("`{name}` is no longer in the project"))?;
                    let message = crate::instrument::work(materialize::build_node(
                        &shared.project,
                        warehouse,
                        node,
                        &options,
                        &started,
                    ))
                    .await?;
                    let mut result = MaterializeResult::new()
                        .metadata("status", message)
                        .metadata("relation", format!("{}.{}", node.schema, node.relation));
                    if warehouse.kind(&node.schema, &node.relation)
                        == Some(crate::RelationKind::Table)
                    {
                        let n = crate::instrument::work(warehouse.count(
                            &format!("SELECT COUNT(*) FROM {}.{}", node.schema, node.relation),
                            &node.path,
                        ))
                        .await?;
                        result = result.row_count(u64::try_from(n).unwrap_or(0));
                    }
                    Ok::<_, BoxError>(result)
                }
            });
            // A test checks the last node it reads (a singular test over a staging model and
            // a fact is evaluated once the fact is built).
            for test in tests
                .iter()
                .filter(|t| materialize::reads(t, &manifest).last() == Some(&node.name))
            {
                let check = AssetCheckSpec::new(test.name.clone(), key.clone())
                    .description(format!("dbt test `{}` ({})", test.test, test.path))
                    .severity(match test.severity {
                        Severity::Warn => AssetCheckSeverity::Warn,
                        Severity::Error => AssetCheckSeverity::Error,
                    })
                    .blocking(test.severity == Severity::Error);
                let shared_test = shared.clone();
                let test_name = test.name.clone();
                definition = definition.check(check.compute(move |ctx: AssetContext| {
                    let shared = shared_test.clone();
                    let test_name = test_name.clone();
                    async move {
                        let (warehouse, _, tests, _, _) = shared.compile(&ctx).await?;
                        let test = tests.iter().find(|t| t.name == test_name).ok_or_else(|| {
                            format!("test `{test_name}` is no longer in the project")
                        })?;
                        let failing =
                            crate::instrument::work(materialize::failing_rows(warehouse, test))
                                .await?;
                        Ok::<_, BoxError>(
                            AssetCheckResult::new(failing == 0)
                                .metadata("failing_rows", failing as i64),
                        )
                    }
                }));
            }
            out.push(definition);
        }
        for key in sources.into_keys() {
            out.push(AssetSpec::new(key).group("sources").kind("source").source());
        }
        Ok(out)
    }
}

/// A short stable hash of the compiled SQL: the asset's code version.
fn code_version(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}
