//! dbt's materializations on the warehouse, one node at a time (the engine orders and runs
//! them; see [`crate::SqlProject`]):
//!
//! - `view`: the compiled SQL persisted as a view (checked by planning it);
//! - `table`: the query written as a new Delta version (atomic replace);
//! - `incremental`: first run (or `--full-refresh`) as `table`; then `merge` on `unique_key`
//!   (default when a key is set), `append`, or `delete+insert`; `on_schema_change` in every
//!   mode ([`crate::schema_change`]);
//! - `ephemeral`: nothing stored, inlined as a CTE by the compiler;
//! - seeds: CSV -> table, types inferred or set by `column_types` ([`Warehouse::load_csv`]);
//! - snapshots: SCD type 2 ([`crate::snapshot`]);
//! - tests: failing-row queries ([`failing_rows`]).
//!
//! Semantics follow dbt's documentation of each materialization and config.

use std::collections::BTreeMap;

use rainbow_warehouse::{CsvLoad, Warehouse, WarehouseError, WriteMode};
use serde_json::Value as Json;

use crate::compile::{Node, NodeKind};
use crate::data_tests::DataTest;
use crate::error::{DbtError, Result};
use crate::project::Project;
use crate::source_map::{self, NodeSource};

/// How SQL errors of a node name it: its file, and that line numbers are the compiled SQL's.
pub(crate) fn compiled_context(node: &Node) -> String {
    format!("{} (compiled SQL)", node.path)
}

/// What building a node did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// dbt's status message: `INSERT 3`, `CREATE TABLE`, `MERGE`, `SNAPSHOT 5`…
    pub message: String,
    /// The table's rows when the build knows them (it replaced the whole table and no
    /// post-hook ran after); `None` for views and for merges, appends and delete+insert.
    pub rows: Option<u64>,
}

impl Built {
    fn message(message: impl Into<String>) -> Self {
        Built {
            message: message.into(),
            rows: None,
        }
    }
}

/// How a node was compiled for this build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BuildOptions<'a> {
    /// Rebuild incremental models from scratch (`--full-refresh`).
    pub full_refresh: bool,
    /// `is_incremental()` was true when the node was compiled (its table existed then).
    pub compiled_incremental: bool,
    /// The run's start (RFC 3339): a snapshot's time.
    pub run_started_at: &'a str,
}

/// Builds one compiled node (seed, model or snapshot). Errors: the SQL fails, a config is
/// unusable, or an incremental model's table appeared or vanished since it was compiled (its
/// SQL would be wrong for the table as it is now: run again).
pub async fn build_node(
    project: &Project,
    warehouse: &Warehouse,
    node: &Node,
    options: BuildOptions<'_>,
) -> Result<Built> {
    match node.kind {
        NodeKind::Seed => seed(project, warehouse, node).await,
        NodeKind::Snapshot => crate::snapshot::snapshot(warehouse, node, options.run_started_at)
            .await
            .map_err(|e| at_file_line(e, project, node)),
        NodeKind::Model => model(project, warehouse, node, options)
            .await
            .map_err(|e| at_file_line(e, project, node)),
        NodeKind::Test => Err(config_error(
            node,
            "kind",
            "a singular test is not built; it runs as a test",
        )),
    }
}

/// A parse error in `node`'s compiled SQL put at the line of its file it comes from
/// ([`NodeSource::locate`]); any other error unchanged.
fn at_file_line(e: DbtError, project: &Project, node: &Node) -> DbtError {
    let DbtError::Warehouse(inner) = &e else {
        return e;
    };
    let WarehouseError::Parse { context, message } = inner.as_ref() else {
        return e;
    };
    let place = (*context == compiled_context(node))
        .then(|| NodeSource::of(project, node))
        .flatten()
        .and_then(|source| {
            // A parser that ran out of input gives no position: it stopped at the end.
            let (line, column) = source_map::parser_position(message).or_else(|| {
                message
                    .contains("found: EOF")
                    .then(|| source.end())
                    .flatten()
            })?;
            source.locate(line, column)
        });
    match place {
        Some(context) => DbtError::Warehouse(Box::new(WarehouseError::Parse {
            context,
            message: message.clone(),
        })),
        None => e,
    }
}

/// What a test's query found, as dbt's test materialization computes it: `failures` (its
/// `fail_calc` over the failing rows, NULL as 0), and whether its `warn_if` / `error_if`
/// conditions hold on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestOutcome {
    /// The failures (`count(*)` by default: failing rows).
    pub failures: i64,
    /// `failures <warn_if>` holds.
    pub warn: bool,
    /// `failures <error_if>` holds.
    pub error: bool,
}

/// Runs a test's failing-row query. Errors: the SQL fails.
pub async fn failing_rows(warehouse: &Warehouse, test: &DataTest) -> Result<TestOutcome> {
    let (calc, warn_if, error_if) = (&test.fail_calc, &test.warn_if, &test.error_if);
    let sql = format!(
        "SELECT CAST(COALESCE({calc}, 0) AS INT64) AS failures, COALESCE({calc} {warn_if}, FALSE) AS should_warn, COALESCE({calc} {error_if}, FALSE) AS should_error FROM (\n{}\n) AS dbt_test",
        test.sql
    );
    let batches = warehouse
        .query(&sql, &format!("test {}", test.name))
        .await?;
    let row = batches.iter().find(|b| b.num_rows() > 0);
    let value = |i: usize| -> Option<rainbow_warehouse::datafusion::common::ScalarValue> {
        let b = row?;
        rainbow_warehouse::datafusion::common::ScalarValue::try_from_array(b.column(i), 0).ok()
    };
    use rainbow_warehouse::datafusion::common::ScalarValue;
    let failures = match value(0) {
        Some(ScalarValue::Int64(Some(n))) => n,
        _ => 0,
    };
    let flag = |i| matches!(value(i), Some(ScalarValue::Boolean(Some(true))));
    Ok(TestOutcome {
        failures,
        warn: flag(1),
        error: flag(2),
    })
}

pub(crate) fn config_error(node: &Node, key: &str, message: impl Into<String>) -> DbtError {
    DbtError::Config {
        node: node.path.clone(),
        key: key.to_owned(),
        message: message.into(),
    }
}

/// `unique_key`: a string (maybe comma-separated) or a list.
pub(crate) fn unique_key(node: &Node) -> Result<Vec<String>> {
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

/// The node's `pre_hook`s (`when` = `pre`) or `post_hook`s, either spelling (`pre-hook`).
pub(crate) fn node_hooks(node: &Node, when: &str) -> Vec<String> {
    let mut all = hooks(node, &format!("{when}_hook"));
    all.extend(hooks(node, &format!("{when}-hook")));
    all
}

/// The error for a `materialized` config no materialization has.
pub(crate) fn unknown_materialization(node: &Node, other: &str) -> DbtError {
    config_error(
        node,
        "materialized",
        format!("unknown materialization `{other}` (view, table, incremental, ephemeral)"),
    )
}

/// Whether an incremental model is rebuilt whole (no table yet, or a full refresh), after
/// checking that its table still is as when the run compiled it (its `is_incremental()` SQL
/// would be wrong otherwise); then, for an incremental run, its strategy — `incremental_strategy`,
/// by default `merge` with a `unique_key` and `append` without — and its keys.
pub(crate) fn incremental_plan(
    node: &Node,
    exists: bool,
    options: BuildOptions<'_>,
) -> Result<Option<(String, Vec<String>)>> {
    let full_refresh = full_refresh_of(node, options.full_refresh);
    if !full_refresh && exists != options.compiled_incremental {
        return Err(config_error(
            node,
            "materialized",
            format!(
                "the table {}.{} {} since this run compiled the model; run again",
                node.schema,
                node.relation,
                if exists { "appeared" } else { "vanished" }
            ),
        ));
    }
    if !exists || full_refresh {
        return Ok(None);
    }
    if node.config.contains_key("incremental_predicates") {
        return Err(config_error(
            node,
            "incremental_predicates",
            "not supported yet (the merge would ignore them)",
        ));
    }
    let keys = unique_key(node)?;
    let strategy = node
        .config
        .get("incremental_strategy")
        .and_then(Json::as_str)
        .unwrap_or(if keys.is_empty() { "append" } else { "merge" })
        .to_owned();
    Ok(Some((strategy, keys)))
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

async fn model(
    project: &Project,
    warehouse: &Warehouse,
    node: &Node,
    options: BuildOptions<'_>,
) -> Result<Built> {
    let sql = node.compiled.clone().unwrap_or_default();
    // SQL errors give lines of the compiled SQL (`rainbow compile` writes it), not the file's.
    let context = compiled_context(node);
    for hook in node_hooks(node, "pre") {
        warehouse
            .execute(&hook, &format!("{context} pre-hook"))
            .await?;
    }
    let (schema, name) = (node.schema.as_str(), node.relation.as_str());
    enforce_contract(project, warehouse, node, &sql, &context).await?;
    let mut built = match node.materialized() {
        "ephemeral" => Built::message("EPHEMERAL"),
        "view" => {
            warehouse.create_view(schema, name, &sql, &context).await?;
            Built::message("CREATE VIEW")
        }
        "table" => {
            let df = warehouse.dataframe(&sql, &context).await?;
            let rows = warehouse
                .write_table(schema, name, df, WriteMode::Replace)
                .await?;
            Built {
                message: "CREATE TABLE".into(),
                rows,
            }
        }
        "incremental" => incremental(warehouse, node, &sql, options).await?,
        other => return Err(unknown_materialization(node, other)),
    };
    for hook in node_hooks(node, "post") {
        warehouse
            .execute(&hook, &format!("{context} post-hook"))
            .await?;
        // A post-hook may change the table: its rows are counted afresh.
        built.rows = None;
    }
    Ok(built)
}

async fn incremental(
    warehouse: &Warehouse,
    node: &Node,
    sql: &str,
    options: BuildOptions<'_>,
) -> Result<Built> {
    let (schema, name) = (node.schema.as_str(), node.relation.as_str());
    let exists = warehouse.kind(schema, name) == Some(rainbow_warehouse::RelationKind::Table);
    let plan = incremental_plan(node, exists, options)?;
    let df = warehouse.dataframe(sql, &compiled_context(node)).await?;
    let Some((strategy, keys)) = plan else {
        let rows = warehouse
            .write_table(schema, name, df, WriteMode::Replace)
            .await?;
        return Ok(Built {
            message: "CREATE TABLE".into(),
            rows,
        });
    };
    let shaped =
        crate::schema_change::apply(warehouse, node, crate::schema_change::Mode::of(node)?, df)
            .await?;
    let message = |m: &str| match &shaped.note {
        Some(note) => Built::message(format!("{m} ({note})")),
        None => Built::message(m),
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
            let columns: Vec<String> = (shaped.own.schema().fields().iter())
                .map(|f| f.name().clone())
                .collect();
            let update = merge_update_columns(node, &columns)?;
            warehouse
                .merge_updating(
                    schema,
                    name,
                    shaped.own.clone(),
                    &keys,
                    false,
                    update.as_deref(),
                )
                .await?;
            Ok(message("MERGE"))
        }
        "delete+insert" => {
            need_keys("delete+insert")?;
            warehouse
                .delete_insert(schema, name, shaped.full.clone(), &keys)
                .await?;
            Ok(message("DELETE+INSERT"))
        }
        "append" => {
            warehouse.append(schema, name, shaped.full.clone()).await?;
            Ok(message("APPEND"))
        }
        other => Err(config_error(
            node,
            "incremental_strategy",
            format!("`{other}` is not supported (merge, append, delete+insert)"),
        )),
    }
}

async fn seed(project: &Project, warehouse: &Warehouse, node: &Node) -> Result<Built> {
    let load = csv_load(node)?;
    let rows = warehouse
        .load_csv(
            &node.schema,
            &node.relation,
            &project.root.join(&node.path),
            &load,
            &node.path,
        )
        .await?;
    Ok(Built {
        message: format!("INSERT {rows}"),
        rows: Some(rows as u64),
    })
}

/// How a seed's CSV file is read: its `delimiter` and `column_types` configs.
pub(crate) fn csv_load(node: &Node) -> Result<CsvLoad> {
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
    let mut column_types = BTreeMap::new();
    match node.config.get("column_types") {
        None | Some(Json::Null) => {}
        Some(Json::Object(types)) => {
            for (column, t) in types {
                let t = t.as_str().ok_or_else(|| {
                    config_error(
                        node,
                        "column_types",
                        format!("`{column}`: expected a type name"),
                    )
                })?;
                column_types.insert(column.clone(), t.to_owned());
            }
        }
        Some(_) => {
            return Err(config_error(
                node,
                "column_types",
                "expected a mapping of column to type",
            ));
        }
    }
    Ok(CsvLoad {
        delimiter,
        column_types,
    })
}

/// dbt's `merge_update_columns` (only these are updated in matched rows) or
/// `merge_exclude_columns` (all but these); `None`: every column. Errors: both given, or not a
/// list of column names.
pub(crate) fn merge_update_columns(node: &Node, columns: &[String]) -> Result<Option<Vec<String>>> {
    let list = |key: &str| -> Result<Option<Vec<String>>> {
        match node.config.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| config_error(node, key, "expected column names"))
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(_) => Err(config_error(node, key, "expected a list of column names")),
        }
    };
    match (
        list("merge_update_columns")?,
        list("merge_exclude_columns")?,
    ) {
        (Some(_), Some(_)) => Err(config_error(
            node,
            "merge_exclude_columns",
            "merge_update_columns and merge_exclude_columns cannot both be set",
        )),
        (Some(update), None) => Ok(Some(update)),
        (None, Some(exclude)) => Ok(Some(
            columns
                .iter()
                .filter(|c| !exclude.contains(c))
                .cloned()
                .collect(),
        )),
        (None, None) => Ok(None),
    }
}

/// Whether `node` is rebuilt from scratch: its `full_refresh` config when set (dbt: `false`
/// protects a table from `--full-refresh`, `true` always rebuilds), else the run's flag.
pub(crate) fn full_refresh_of(node: &Node, run_full_refresh: bool) -> bool {
    match node.config.get("full_refresh") {
        Some(Json::Bool(b)) => *b,
        _ => run_full_refresh,
    }
}

/// dbt's model contract (`config: {contract: {enforced: true}}`): the model's columns must be
/// exactly the schema file's, each of its declared `data_type` (BigQuery's names; `INTEGER`
/// is `INT64`, …) — else the build fails naming every difference, before anything is written.
async fn enforce_contract(
    project: &Project,
    warehouse: &Warehouse,
    node: &Node,
    sql: &str,
    context: &str,
) -> Result<()> {
    let enforced = node
        .config
        .get("contract")
        .and_then(|c| c.get("enforced"))
        .and_then(Json::as_bool)
        .unwrap_or(false);
    if !enforced {
        return Ok(());
    }
    let declared = project
        .declared_columns
        .get(&node.name)
        .cloned()
        .unwrap_or_default();
    let plan = warehouse.plan(sql, context).await?;
    let normal = |t: &str| -> String {
        match t.trim().to_ascii_uppercase().as_str() {
            "INTEGER" | "INT" | "BIGINT" | "SMALLINT" | "TINYINT" | "BYTEINT" => "INT64".into(),
            "FLOAT" => "FLOAT64".into(),
            "BOOLEAN" => "BOOL".into(),
            "DECIMAL" => "NUMERIC".into(),
            "BIGDECIMAL" => "BIGNUMERIC".into(),
            other => other.split('(').next().unwrap_or(other).trim().to_owned(),
        }
    };
    let mut problems = Vec::new();
    for f in plan.schema().fields() {
        match declared
            .iter()
            .find(|(c, _)| c.eq_ignore_ascii_case(f.name()))
        {
            None => problems.push(format!("`{}` is not in the contract", f.name())),
            Some((_, Some(t))) => {
                let actual = crate::unit_tests::bigquery_type(f.data_type())
                    .map(str::to_owned)
                    .unwrap_or_else(|| f.data_type().to_string());
                if normal(t) != actual {
                    problems.push(format!("`{}` is {actual}, the contract says {t}", f.name()));
                }
            }
            Some((_, None)) => {
                problems.push(format!("`{}` has no data_type in the contract", f.name()))
            }
        }
    }
    for (c, _) in &declared {
        if plan
            .schema()
            .fields()
            .iter()
            .all(|f| !f.name().eq_ignore_ascii_case(c))
        {
            problems.push(format!("the contract's `{c}` is not a column of the model"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(config_error(node, "contract", problems.join("; ")))
    }
}
