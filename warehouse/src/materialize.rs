//! Running a dbt project on the warehouse: dbt's verbs (`seed`, `run`, `snapshot`, `test`,
//! `build`) over the parsed manifest, in DAG order, with dbt's materializations.
//!
//! - `view`: the compiled SQL persisted as a view (checked by planning it);
//! - `table`: the query written as a new Delta version (atomic replace);
//! - `incremental`: first run (or `--full-refresh`) as `table`; then `merge` on `unique_key`
//!   (default when a key is set), `append`, or `delete+insert`; `on_schema_change` `ignore`
//!   (default), `append_new_columns` or `fail`;
//! - `ephemeral`: nothing stored, inlined as a CTE by the compiler;
//! - seeds: CSV -> table, types inferred or set by `column_types`;
//! - snapshots: SCD type 2 ([`snapshot_sql`]);
//! - tests: failing-row queries; severity `warn` reports, `error` fails and, in `build`,
//!   skips everything downstream of the tested node.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Instant;

use datafusion::arrow::datatypes::DataType;
use rainbow_sql::{CompileOptions, DataTest, Manifest, Node, NodeKind, Project, Severity};
use serde_json::Value as Json;

use crate::error::{Result, WarehouseError};
use crate::selection::Selection;
use crate::warehouse::{Warehouse, WriteMode};

/// Which dbt verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// Seeds only.
    Seed,
    /// Models only.
    Run,
    /// Snapshots only.
    Snapshot,
    /// Data tests only.
    Test,
    /// Seeds, models, snapshots and tests in DAG order.
    Build,
}

/// Options of a run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// `--select` expressions (union).
    pub select: Vec<String>,
    /// `--exclude` expressions.
    pub exclude: Vec<String>,
    /// Rebuild incremental models and seeds from scratch.
    pub full_refresh: bool,
    /// `--vars`.
    pub vars: BTreeMap<String, Json>,
    /// `target.name` (default `dev`).
    pub target_name: Option<String>,
    /// Extra template variables (partition key, window start/end).
    pub extra: BTreeMap<String, Json>,
    /// `run_started_at` (default: now).
    pub run_started_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Outcome of one node or test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Built.
    Success,
    /// Test passed.
    Pass,
    /// Test failed with severity warn.
    Warn,
    /// Test failed with severity error.
    Fail,
    /// Node or test errored.
    Error,
    /// Not run: something upstream failed.
    Skipped,
}

/// What happened to one node.
#[derive(Debug, Clone)]
pub struct NodeResult {
    /// `seed`, `model`, `snapshot` or `test`.
    pub resource: &'static str,
    /// Node or test name.
    pub name: String,
    /// `schema.relation` for nodes.
    pub relation: Option<String>,
    /// Outcome.
    pub status: Status,
    /// `INSERT 3`, `CREATE VIEW`, `MERGE`, `Got 2 failing rows`, an error…
    pub message: String,
    /// Wall time.
    pub seconds: f64,
}

/// Every result of a run, in execution order.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// Results.
    pub results: Vec<NodeResult>,
    /// Wall time of the whole run.
    pub seconds: f64,
}

impl RunSummary {
    /// Results with `status`.
    pub fn count(&self, status: Status) -> usize {
        self.results.iter().filter(|r| r.status == status).count()
    }

    /// True when nothing errored or failed.
    pub fn success(&self) -> bool {
        self.count(Status::Error) == 0 && self.count(Status::Fail) == 0
    }

    /// dbt's last line: `Done. PASS=… WARN=… ERROR=… SKIP=… TOTAL=…` (errors and failures
    /// both count as ERROR, as in dbt).
    pub fn done_line(&self) -> String {
        format!(
            "Done. PASS={} WARN={} ERROR={} SKIP={} TOTAL={}",
            self.count(Status::Success) + self.count(Status::Pass),
            self.count(Status::Warn),
            self.count(Status::Error) + self.count(Status::Fail),
            self.count(Status::Skipped),
            self.results.len()
        )
    }
}

/// Parses and compiles `project` against the warehouse's state: `is_incremental()` is true
/// for incremental models whose table exists (unless `full_refresh`).
pub fn compile(
    project: &Project,
    warehouse: &Warehouse,
    options: &RunOptions,
) -> Result<(Manifest, Vec<DataTest>, CompileOptions)> {
    let mut compile_options = CompileOptions {
        target_name: options.target_name.clone().unwrap_or_else(|| "dev".into()),
        target_type: "datafusion".into(),
        target_schema: warehouse.default_schema().to_owned(),
        vars: options.vars.clone(),
        run_started_at: options
            .run_started_at
            .unwrap_or_else(chrono::Utc::now)
            .to_rfc3339(),
        incremental: BTreeSet::new(),
        extra: options.extra.clone(),
    };
    let mut manifest = rainbow_sql::parse(project, &compile_options)?;
    if !options.full_refresh {
        let existing: BTreeSet<String> = manifest
            .nodes
            .iter()
            .filter(|n| n.kind == NodeKind::Model && n.materialized() == "incremental")
            .filter(|n| warehouse.kind(&n.schema, &n.relation) == Some(crate::RelationKind::Table))
            .map(|n| n.name.clone())
            .collect();
        if !existing.is_empty() {
            compile_options.incremental = existing;
            manifest = rainbow_sql::parse(project, &compile_options)?;
        }
    }
    rainbow_sql::compile(&mut manifest);
    let tests = rainbow_sql::data_tests(project, &manifest, &compile_options)?;
    Ok((manifest, tests, compile_options))
}

/// One step of a run.
enum Step<'a> {
    Node(&'a Node),
    /// A test and the nodes it reads.
    Test(&'a DataTest, &'a [String]),
}

/// Runs `verb` over the project; `report` sees each result as it completes.
pub async fn run(
    project: &Project,
    warehouse: &Warehouse,
    verb: Verb,
    options: &RunOptions,
    report: &mut dyn FnMut(&NodeResult, usize, usize),
) -> Result<RunSummary> {
    let started = Instant::now();
    let (manifest, tests, compile_options) = compile(project, warehouse, options)?;
    let selection = Selection::new(&manifest, &tests);
    let selected = selection.resolve(&options.select, &options.exclude)?;
    let wanted = |kind: NodeKind| match verb {
        Verb::Seed => kind == NodeKind::Seed,
        Verb::Run => kind == NodeKind::Model,
        Verb::Snapshot => kind == NodeKind::Snapshot,
        Verb::Test => false,
        Verb::Build => kind != NodeKind::Test,
    };
    let run_tests = matches!(verb, Verb::Test | Verb::Build);
    let test_deps: Vec<(&DataTest, Vec<String>)> =
        tests.iter().map(|t| (t, reads(t, &manifest))).collect();
    let mut steps: Vec<Step<'_>> = Vec::new();
    for node in &manifest.nodes {
        if node.kind == NodeKind::Test {
            continue;
        }
        if wanted(node.kind) && selected.contains(&node.name) {
            steps.push(Step::Node(node));
        }
        if run_tests {
            // A test runs once the last node it reads is built.
            for (test, deps) in test_deps
                .iter()
                .filter(|(_, deps)| deps.last() == Some(&node.name))
            {
                if selected.contains(&test.name) {
                    steps.push(Step::Test(test, deps));
                }
            }
        }
    }
    let total = steps.len();
    let mut summary = RunSummary::default();
    // Nodes that errored or were skipped, and nodes whose error-severity tests failed: both
    // skip what is downstream; only the first skips the node's own tests.
    let mut broken: HashSet<String> = HashSet::new();
    let mut untrusted: HashSet<String> = HashSet::new();
    let parents = |name: &str| -> Vec<String> {
        manifest
            .nodes
            .iter()
            .find(|n| n.name == name)
            .map(|n| n.refs.clone())
            .unwrap_or_default()
    };
    for (i, step) in steps.iter().enumerate() {
        let t0 = Instant::now();
        let result = match step {
            Step::Node(node) => {
                let relation = Some(format!("{}.{}", node.schema, node.relation));
                let resource = match node.kind {
                    NodeKind::Seed => "seed",
                    NodeKind::Snapshot => "snapshot",
                    _ => "model",
                };
                if let Some(p) = parents(&node.name)
                    .iter()
                    .find(|p| broken.contains(*p) || untrusted.contains(*p))
                {
                    broken.insert(node.name.clone());
                    NodeResult {
                        resource,
                        name: node.name.clone(),
                        relation,
                        status: Status::Skipped,
                        message: format!("skipped: upstream `{p}` failed"),
                        seconds: 0.0,
                    }
                } else {
                    let outcome = build_node(
                        project,
                        warehouse,
                        node,
                        options,
                        &compile_options.run_started_at,
                    )
                    .await;
                    let (status, message) = match outcome {
                        Ok(m) => (Status::Success, m),
                        Err(e) => {
                            broken.insert(node.name.clone());
                            (Status::Error, e.to_string())
                        }
                    };
                    NodeResult {
                        resource,
                        name: node.name.clone(),
                        relation,
                        status,
                        message,
                        seconds: t0.elapsed().as_secs_f64(),
                    }
                }
            }
            Step::Test(test, deps) => {
                let failed_dep = deps.iter().find(|d| broken.contains(*d));
                let (status, message) = if let Some(dep) = failed_dep
                    && verb == Verb::Build
                {
                    (Status::Skipped, format!("skipped: `{dep}` failed"))
                } else {
                    match failing_rows(warehouse, test).await {
                        Ok(0) => (Status::Pass, "PASS".to_owned()),
                        Ok(n) => {
                            let status = match test.severity {
                                Severity::Warn => Status::Warn,
                                Severity::Error => {
                                    untrusted.insert(test.model.clone());
                                    Status::Fail
                                }
                            };
                            (status, format!("Got {n} failing row(s)"))
                        }
                        Err(e) => {
                            untrusted.insert(test.model.clone());
                            (Status::Error, e.to_string())
                        }
                    }
                };
                NodeResult {
                    resource: "test",
                    name: test.name.clone(),
                    relation: None,
                    status,
                    message,
                    seconds: t0.elapsed().as_secs_f64(),
                }
            }
        };
        report(&result, i + 1, total);
        summary.results.push(result);
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Builds one compiled node (seed, model or snapshot); returns dbt's status message
/// (`INSERT 3`, `CREATE TABLE`, `MERGE`, `SNAPSHOT 5`…).
pub async fn build_node(
    project: &Project,
    warehouse: &Warehouse,
    node: &Node,
    options: &RunOptions,
    run_started_at: &str,
) -> Result<String> {
    match node.kind {
        NodeKind::Seed => seed(project, warehouse, node).await,
        NodeKind::Snapshot => snapshot(warehouse, node, run_started_at).await,
        NodeKind::Model => model(warehouse, node, options).await,
        NodeKind::Test => Err(config_error(
            node,
            "kind",
            "a singular test is not built; it runs as a test",
        )),
    }
}

/// The nodes a test reads, in build order (the tested node and every relation its compiled
/// SQL names, such as a relationships test's `to` or a singular test's refs).
pub(crate) fn reads(test: &DataTest, manifest: &Manifest) -> Vec<String> {
    let names = |relation: &str| {
        let mut rest = test.sql.as_str();
        while let Some(i) = rest.find(relation) {
            let after = rest[i + relation.len()..].chars().next();
            let before = rest[..i].chars().next_back();
            let word =
                |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.');
            if !word(after) && !word(before) {
                return true;
            }
            rest = &rest[i + relation.len()..];
        }
        false
    };
    manifest
        .nodes
        .iter()
        .filter(|n| n.kind != NodeKind::Test)
        .filter(|n| {
            n.name == test.model
                || names(&format!("{}.{}", n.schema, n.relation))
                || names(&format!("__dbt__cte__{}", n.name))
        })
        .map(|n| n.name.clone())
        .collect()
}

/// Rows returned by a test's failing-row query.
pub async fn failing_rows(warehouse: &Warehouse, test: &DataTest) -> Result<u64> {
    let sql = format!(
        "SELECT COUNT(*) AS failures FROM (\n{}\n) AS dbt_test",
        test.sql
    );
    let count = warehouse
        .count(&sql, &format!("test {}", test.name))
        .await?;
    Ok(u64::try_from(count).unwrap_or(0))
}

fn config_error(node: &Node, key: &str, message: impl Into<String>) -> WarehouseError {
    WarehouseError::Config {
        node: node.path.clone(),
        key: key.to_owned(),
        message: message.into(),
    }
}

/// `unique_key`: a string (maybe comma-separated) or a list.
fn unique_key(node: &Node) -> Result<Vec<String>> {
    match node.config.get("unique_key") {
        None | Some(Json::Null) => Ok(Vec::new()),
        Some(Json::String(s)) => Ok(s
            .split(',')
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty())
            .collect()),
        Some(Json::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| config_error(node, "unique_key", "expected column names"))
            })
            .collect(),
        Some(_) => Err(config_error(
            node,
            "unique_key",
            "expected a column name or a list of them",
        )),
    }
}

fn hooks(node: &Node, key: &str) -> Vec<String> {
    match node.config.get(key) {
        Some(Json::String(s)) => vec![s.clone()],
        Some(Json::Array(items)) => items
            .iter()
            .filter_map(|v| match v {
                Json::String(s) => Some(s.clone()),
                Json::Object(o) => o.get("sql").and_then(Json::as_str).map(str::to_owned),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

async fn model(warehouse: &Warehouse, node: &Node, options: &RunOptions) -> Result<String> {
    let sql = node.compiled.clone().unwrap_or_default();
    let context = node.path.clone();
    for hook in hooks(node, "pre_hook")
        .iter()
        .chain(&hooks(node, "pre-hook"))
    {
        warehouse
            .execute(hook, &format!("{context} pre-hook"))
            .await?;
    }
    let (schema, name) = (node.schema.as_str(), node.relation.as_str());
    let message = match node.materialized() {
        "ephemeral" => "EPHEMERAL".to_owned(),
        "view" => {
            warehouse.create_view(schema, name, &sql).await?;
            "CREATE VIEW".to_owned()
        }
        "table" => {
            let df = warehouse.dataframe(&sql, &context).await?;
            warehouse
                .write_table(schema, name, df, WriteMode::Replace)
                .await?;
            "CREATE TABLE".to_owned()
        }
        "incremental" => incremental(warehouse, node, &sql, options).await?,
        other => {
            return Err(config_error(
                node,
                "materialized",
                format!("unknown materialization `{other}` (view, table, incremental, ephemeral)"),
            ));
        }
    };
    for hook in hooks(node, "post_hook")
        .iter()
        .chain(&hooks(node, "post-hook"))
    {
        warehouse
            .execute(hook, &format!("{context} post-hook"))
            .await?;
    }
    Ok(message)
}

async fn incremental(
    warehouse: &Warehouse,
    node: &Node,
    sql: &str,
    options: &RunOptions,
) -> Result<String> {
    let (schema, name) = (node.schema.as_str(), node.relation.as_str());
    let df = warehouse.dataframe(sql, &node.path).await?;
    let exists = warehouse.kind(schema, name) == Some(crate::RelationKind::Table);
    if !exists || options.full_refresh {
        warehouse
            .write_table(schema, name, df, WriteMode::Replace)
            .await?;
        return Ok("CREATE TABLE".to_owned());
    }
    let keys = unique_key(node)?;
    let strategy = node
        .config
        .get("incremental_strategy")
        .and_then(Json::as_str)
        .unwrap_or(if keys.is_empty() { "append" } else { "merge" })
        .to_owned();
    let on_schema_change = node
        .config
        .get("on_schema_change")
        .and_then(Json::as_str)
        .unwrap_or("ignore");
    let target = warehouse.schema_of(schema, name).await?;
    let new_columns: Vec<String> = df
        .schema()
        .fields()
        .iter()
        .filter(|f| target.field_with_name(f.name()).is_err())
        .map(|f| f.name().clone())
        .collect();
    let add_columns = match on_schema_change {
        "ignore" => false,
        "append_new_columns" => true,
        "fail" if !new_columns.is_empty() => {
            return Err(config_error(
                node,
                "on_schema_change",
                format!("the model has new columns {new_columns:?} and on_schema_change is fail"),
            ));
        }
        "fail" => false,
        other => {
            return Err(config_error(
                node,
                "on_schema_change",
                format!("`{other}` is not supported (ignore, append_new_columns, fail)"),
            ));
        }
    };
    let need_keys = |what: &str| {
        if keys.is_empty() {
            Err(config_error(
                node,
                "unique_key",
                format!("the {what} strategy needs a unique_key"),
            ))
        } else {
            Ok(())
        }
    };
    match strategy.as_str() {
        "merge" => {
            need_keys("merge")?;
            warehouse
                .merge(schema, name, df, &keys, add_columns)
                .await?;
            Ok("MERGE".to_owned())
        }
        "delete+insert" => {
            need_keys("delete+insert")?;
            warehouse.delete_insert(schema, name, df, &keys).await?;
            Ok("DELETE+INSERT".to_owned())
        }
        "append" => {
            warehouse.append(schema, name, df).await?;
            Ok("APPEND".to_owned())
        }
        other => Err(config_error(
            node,
            "incremental_strategy",
            format!("`{other}` is not supported (merge, append, delete+insert)"),
        )),
    }
}

async fn seed(project: &Project, warehouse: &Warehouse, node: &Node) -> Result<String> {
    let path = project.root.join(&node.path);
    let delimiter = match node.config.get("delimiter").and_then(Json::as_str) {
        None => b',',
        Some(d) if d.len() == 1 => d.as_bytes()[0],
        Some(d) => {
            return Err(config_error(
                node,
                "delimiter",
                format!("`{d}` must be one character"),
            ));
        }
    };
    let file = path.to_str().ok_or_else(|| WarehouseError::Io {
        path: path.clone(),
        source: std::io::Error::other("not UTF-8"),
    })?;
    let read = datafusion::prelude::CsvReadOptions::new()
        .has_header(true)
        .delimiter(delimiter)
        .file_extension(".csv")
        .schema_infer_max_records(1_000_000);
    let context = node.path.clone();
    let mut df = warehouse
        .context()
        .read_csv(file, read)
        .await
        .map_err(WarehouseError::datafusion(&context))?;
    if let Some(Json::Object(types)) = node.config.get("column_types") {
        let mut exprs = Vec::new();
        for field in df.schema().fields() {
            let expr = datafusion::logical_expr::ident(field.name());
            exprs.push(match types.get(field.name()).and_then(Json::as_str) {
                Some(t) => {
                    let target = sql_type(warehouse, t)
                        .await
                        .map_err(|e| config_error(node, "column_types", format!("`{t}`: {e}")))?;
                    datafusion::logical_expr::cast(expr, target).alias(field.name())
                }
                None => expr,
            });
        }
        for column in types.keys() {
            if df.schema().field_with_unqualified_name(column).is_err() {
                return Err(config_error(
                    node,
                    "column_types",
                    format!("`{column}` is not a column of {}", node.path),
                ));
            }
        }
        df = df
            .select(exprs)
            .map_err(WarehouseError::datafusion(&context))?;
    }
    let (rows, df) = warehouse.collect_frame(df, &context).await?;
    warehouse
        .write_table(&node.schema, &node.relation, df, WriteMode::Replace)
        .await?;
    Ok(format!("INSERT {rows}"))
}

/// The Arrow type of a BigQuery type name.
async fn sql_type(warehouse: &Warehouse, name: &str) -> Result<DataType> {
    let plan = warehouse
        .plan(&format!("SELECT CAST(NULL AS {name}) AS t"), "column type")
        .await?;
    Ok(plan.schema().field(0).data_type().clone())
}

/// The SQL type name for an updated_at column's Arrow type.
fn temporal_sql(t: &DataType) -> &'static str {
    match t {
        DataType::Date32 | DataType::Date64 => "DATE",
        DataType::Timestamp(_, Some(_)) => "TIMESTAMP",
        _ => "DATETIME",
    }
}

/// Snapshot settings from a snapshot node's config.
#[derive(Debug, Clone)]
pub struct SnapshotConfig {
    /// Business key columns.
    pub keys: Vec<String>,
    /// `timestamp` or `check`.
    pub strategy: String,
    /// `updated_at` column (timestamp strategy).
    pub updated_at: Option<String>,
    /// `check_cols` (None = all).
    pub check_cols: Option<Vec<String>>,
    /// `ignore`, `invalidate` or `new_record`.
    pub hard_deletes: String,
    /// Column names: valid_from, valid_to, scd_id, updated_at, is_deleted, is_current.
    pub valid_from: String,
    /// See `valid_from`.
    pub valid_to: String,
    /// See `valid_from`.
    pub scd_id: String,
    /// See `valid_from`.
    pub updated_at_column: String,
    /// See `valid_from`.
    pub is_deleted: String,
    /// Rainbow extension: a boolean current-row flag, when named.
    pub is_current: Option<String>,
    /// SQL for the open end of current rows (`dbt_valid_to_current`), or NULL.
    pub open_end: Option<String>,
}

impl SnapshotConfig {
    /// Reads dbt's snapshot configs (`unique_key`, `strategy`, `updated_at`, `check_cols`,
    /// `hard_deletes`/`invalidate_hard_deletes`, `snapshot_meta_column_names`,
    /// `dbt_valid_to_current`).
    pub fn from_node(node: &Node) -> Result<Self> {
        let keys = unique_key(node)?;
        if keys.is_empty() {
            return Err(config_error(
                node,
                "unique_key",
                "a snapshot needs a unique_key",
            ));
        }
        let text = |k: &str| node.config.get(k).and_then(Json::as_str).map(str::to_owned);
        let strategy = text("strategy").unwrap_or_else(|| "timestamp".into());
        let updated_at = text("updated_at");
        match strategy.as_str() {
            "timestamp" if updated_at.is_none() => {
                return Err(config_error(
                    node,
                    "updated_at",
                    "the timestamp strategy needs updated_at",
                ));
            }
            "timestamp" | "check" => {}
            other => {
                return Err(config_error(
                    node,
                    "strategy",
                    format!("`{other}` is not timestamp or check"),
                ));
            }
        }
        let check_cols = match node.config.get("check_cols") {
            None | Some(Json::Null) => None,
            Some(Json::String(s)) if s == "all" => None,
            Some(Json::Array(items)) => Some(
                items
                    .iter()
                    .filter_map(Json::as_str)
                    .map(str::to_owned)
                    .collect(),
            ),
            Some(_) => return Err(config_error(node, "check_cols", "expected 'all' or a list")),
        };
        let hard_deletes = match (
            text("hard_deletes"),
            node.config.get("invalidate_hard_deletes"),
        ) {
            (Some(h), _) => h,
            (None, Some(Json::Bool(true))) => "invalidate".into(),
            _ => "ignore".into(),
        };
        if !matches!(
            hard_deletes.as_str(),
            "ignore" | "invalidate" | "new_record"
        ) {
            return Err(config_error(
                node,
                "hard_deletes",
                format!("`{hard_deletes}` is not ignore, invalidate or new_record"),
            ));
        }
        let names = node.config.get("snapshot_meta_column_names");
        let name = |k: &str, default: &str| {
            names
                .and_then(|n| n.get(k))
                .and_then(Json::as_str)
                .unwrap_or(default)
                .to_owned()
        };
        Ok(SnapshotConfig {
            keys,
            strategy,
            updated_at,
            check_cols,
            hard_deletes,
            valid_from: name("dbt_valid_from", "dbt_valid_from"),
            valid_to: name("dbt_valid_to", "dbt_valid_to"),
            scd_id: name("dbt_scd_id", "dbt_scd_id"),
            updated_at_column: name("dbt_updated_at", "dbt_updated_at"),
            is_deleted: name("dbt_is_deleted", "dbt_is_deleted"),
            is_current: names
                .and_then(|n| n.get("dbt_is_current"))
                .and_then(Json::as_str)
                .map(str::to_owned),
            open_end: text("dbt_valid_to_current"),
        })
    }
}

fn q(name: &str) -> String {
    format!("`{}`", name.replace('`', "\\`"))
}

/// The SQL computing a snapshot's next full content (SCD type 2): `existing` is the snapshot
/// table (None on the first run), `source_columns` the snapshot query's columns, `time_type`
/// the SQL type of its validity columns, `now` the snapshot time as text.
pub fn snapshot_sql(
    cfg: &SnapshotConfig,
    query: &str,
    source_columns: &[String],
    time_type: &str,
    existing: Option<&str>,
    now: &str,
) -> String {
    let cast = |e: &str| format!("CAST({e} AS {time_type})");
    let now = cast(&format!("'{now}'"));
    let open = cast(cfg.open_end.as_deref().unwrap_or("NULL"));
    let upd = match (&cfg.strategy[..], &cfg.updated_at) {
        ("timestamp", Some(u)) => cast(&format!("__rb_q.{}", q(u))),
        _ => now.clone(),
    };
    let scd = |alias: &str, at: &str| {
        let parts: Vec<String> = cfg
            .keys
            .iter()
            .map(|k| format!("COALESCE(CAST({alias}.{} AS STRING), '')", q(k)))
            .chain(std::iter::once(format!("CAST({at} AS STRING)")))
            .collect();
        format!("md5(concat({}))", parts.join(", '|', "))
    };
    let cols = |alias: &str| {
        source_columns
            .iter()
            .map(|c| format!("{alias}.{}", q(c)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let new_record = cfg.hard_deletes == "new_record";
    let extra_new = |deleted: &str, current: &str| {
        let mut s = String::new();
        if new_record {
            s.push_str(&format!(", {deleted} AS {}", q(&cfg.is_deleted)));
        }
        if let Some(c) = &cfg.is_current {
            s.push_str(&format!(", {current} AS {}", q(c)));
        }
        s
    };
    let src = format!("SELECT __rb_q.*, {upd} AS __rb_upd FROM ({query}) AS __rb_q");
    let insert_new = |from: &str| {
        format!(
            "SELECT {}, {} AS {}, src.__rb_upd AS {}, src.__rb_upd AS {}, {open} AS {}{} FROM {from}",
            cols("src"),
            scd("src", "src.__rb_upd"),
            q(&cfg.scd_id),
            q(&cfg.updated_at_column),
            q(&cfg.valid_from),
            q(&cfg.valid_to),
            extra_new("FALSE", "TRUE")
        )
    };
    let Some(existing) = existing else {
        return format!("WITH src AS ({src})\n{}", insert_new("src"));
    };
    let is_current = match &cfg.open_end {
        Some(_) => format!("COALESCE(snap.{} = {open}, FALSE)", q(&cfg.valid_to)),
        None => format!("snap.{} IS NULL", q(&cfg.valid_to)),
    };
    let on = cfg
        .keys
        .iter()
        .map(|k| format!("cur.{} = src.{}", q(k), q(k)))
        .collect::<Vec<_>>()
        .join(" AND ");
    let first_key = q(&cfg.keys[0]);
    let changed = match (&cfg.strategy[..], &cfg.check_cols) {
        ("timestamp", _) => format!("src.__rb_upd > cur.{}", q(&cfg.updated_at_column)),
        (_, checked) => {
            let checked: Vec<&String> = match checked {
                Some(c) => c.iter().collect(),
                None => source_columns
                    .iter()
                    .filter(|c| !cfg.keys.contains(c))
                    .collect(),
            };
            let diffs: Vec<String> = checked
                .iter()
                .map(|c| format!("(src.{0} IS DISTINCT FROM cur.{0})", q(c)))
                .collect();
            if diffs.is_empty() {
                "FALSE".to_owned()
            } else {
                format!("({})", diffs.join(" OR "))
            }
        }
    };
    let deleted_flag = if new_record {
        format!(" AND NOT COALESCE(cur.{}, FALSE)", q(&cfg.is_deleted))
    } else {
        String::new()
    };
    let closes_gone = cfg.hard_deletes != "ignore";
    let snap_cols = {
        let mut c: Vec<String> = source_columns.iter().map(|c| q(c)).collect();
        for m in [
            &cfg.scd_id,
            &cfg.updated_at_column,
            &cfg.valid_from,
            &cfg.valid_to,
        ] {
            c.push(q(m));
        }
        if new_record {
            c.push(q(&cfg.is_deleted));
        }
        if let Some(cur) = &cfg.is_current {
            c.push(q(cur));
        }
        c.join(", ")
    };
    let mut current_keep = format!(
        "SELECT {}, j.{}, j.{}, j.{}, CASE WHEN j.__rb_changed THEN j.__rb_new_upd WHEN j.__rb_gone AND {closes_gone} THEN {now} ELSE j.{} END AS {}",
        cols("j"),
        q(&cfg.scd_id),
        q(&cfg.updated_at_column),
        q(&cfg.valid_from),
        q(&cfg.valid_to),
        q(&cfg.valid_to),
    );
    if new_record {
        current_keep.push_str(&format!(", j.{}", q(&cfg.is_deleted)));
    }
    if let Some(c) = &cfg.is_current {
        current_keep.push_str(&format!(
            ", NOT (j.__rb_changed OR (j.__rb_gone AND {closes_gone})) AS {}",
            q(c)
        ));
    }
    current_keep.push_str(" FROM joined AS j");
    let mut sql = format!(
        "WITH src AS ({src}),\n\
         snap AS (SELECT * FROM {existing}),\n\
         cur AS (SELECT * FROM snap WHERE {is_current}),\n\
         joined AS (SELECT cur.*, src.__rb_upd AS __rb_new_upd, src.{first_key} IS NULL{deleted_flag} AS __rb_gone, COALESCE({changed}, FALSE) AS __rb_changed FROM cur LEFT JOIN src ON {on})\n\
         SELECT {snap_cols} FROM snap WHERE NOT ({is_current})\n\
         UNION ALL\n{current_keep}\n\
         UNION ALL\n{}",
        insert_new(&format!(
            "src LEFT JOIN cur ON {on} WHERE cur.{first_key} IS NULL OR COALESCE({changed}, FALSE)"
        )),
    );
    if new_record {
        sql.push_str(&format!(
            "\nUNION ALL\nSELECT {}, {} AS {}, {now} AS {}, {now} AS {}, {open} AS {}, TRUE AS {}{} FROM joined AS j WHERE j.__rb_gone",
            cols("j"),
            scd("j", &now),
            q(&cfg.scd_id),
            q(&cfg.updated_at_column),
            q(&cfg.valid_from),
            q(&cfg.valid_to),
            q(&cfg.is_deleted),
            cfg.is_current
                .as_ref()
                .map(|c| format!(", TRUE AS {}", q(c)))
                .unwrap_or_default()
        ));
    }
    sql
}

async fn snapshot(warehouse: &Warehouse, node: &Node, run_started_at: &str) -> Result<String> {
    let cfg = SnapshotConfig::from_node(node)?;
    let query = node.compiled.clone().unwrap_or_default();
    let context = node.path.clone();
    let plan = warehouse.plan(&query, &context).await?;
    let source_columns: Vec<String> = plan
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    for key in &cfg.keys {
        if !source_columns.contains(key) {
            return Err(config_error(
                node,
                "unique_key",
                format!("`{key}` is not a column of the snapshot query"),
            ));
        }
    }
    let time_type = match (&cfg.strategy[..], &cfg.updated_at) {
        ("timestamp", Some(u)) => {
            let field = plan
                .schema()
                .fields()
                .iter()
                .find(|f| f.name() == u)
                .ok_or_else(|| {
                    config_error(
                        node,
                        "updated_at",
                        format!("`{u}` is not a column of the snapshot query"),
                    )
                })?;
            temporal_sql(field.data_type())
        }
        _ => "TIMESTAMP",
    };
    let keys = cfg.keys.iter().map(|k| q(k)).collect::<Vec<_>>().join(", ");
    let dup = warehouse
        .count(
            &format!("SELECT COUNT(*) FROM (SELECT {keys} FROM ({query}) AS s GROUP BY {keys} HAVING COUNT(*) > 1) AS d"),
            &context,
        )
        .await?;
    if dup > 0 {
        return Err(config_error(
            node,
            "unique_key",
            format!("{dup} unique_key value(s) appear more than once in the snapshot query"),
        ));
    }
    let now = chrono::DateTime::parse_from_rfc3339(run_started_at)
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_else(|_| chrono::Utc::now());
    let now_text = if time_type == "DATE" {
        now.format("%Y-%m-%d").to_string()
    } else {
        now.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
    };
    let (schema, name) = (node.schema.as_str(), node.relation.as_str());
    let existing = (warehouse.kind(schema, name) == Some(crate::RelationKind::Table))
        .then(|| format!("{schema}.{name}"));
    let sql = snapshot_sql(
        &cfg,
        &query,
        &source_columns,
        time_type,
        existing.as_deref(),
        &now_text,
    );
    let next = warehouse
        .dataframe(&sql, &format!("{context} (snapshot)"))
        .await?;
    // The next version reads the current one: collected before the overwrite commits.
    let (rows, df) = warehouse.collect_frame(next, &context).await?;
    warehouse
        .write_table(schema, name, df, WriteMode::Replace)
        .await?;
    Ok(format!("SNAPSHOT {rows}"))
}
