//! dbt-bigquery's materializations on a BigQuery target, as SQL jobs
//! (<https://docs.getdbt.com/reference/resource-configs/bigquery-configs>):
//!
//! - `view`: `CREATE OR REPLACE VIEW`;
//! - `table`: `CREATE OR REPLACE TABLE … [PARTITION BY …] [CLUSTER BY …] AS (…)`;
//! - `incremental`: first run (or `--full-refresh`) as `table`; then `merge` on `unique_key`
//!   (`MERGE … WHEN MATCHED THEN UPDATE … WHEN NOT MATCHED THEN INSERT`), `append`
//!   (`INSERT INTO`), or `insert_overwrite`: the partitions the new rows fall in are replaced
//!   whole — the `partitions` config's list, else the new rows' own (dbt-bigquery's dynamic
//!   mode: a temporary table, an array of its partitions, one `MERGE … WHEN NOT MATCHED BY
//!   SOURCE … THEN DELETE`). The default strategy is the embedded warehouse's (`merge` with a
//!   key, else `append`), so one project gives the same tables on both;
//! - `ephemeral`: nothing (inlined by the compiler);
//! - seeds: the CSV read as the embedded warehouse reads it (same inferred types and
//!   `column_types`), then `CREATE OR REPLACE TABLE` with its columns and `INSERT … VALUES`
//!   in batches (DML, not a load job: the emulator cannot load into a new table);
//! - tests: the failing-row query with `fail_calc`/`warn_if`/`error_if`, as on DataFusion.
//!
//! - snapshots: the embedded warehouse's SCD2 SQL ([`crate::snapshot::snapshot_sql`]) as
//!   `CREATE OR REPLACE TABLE … AS`.
//!
//! Every job carries the labels
//! `dbt_invocation_id`, `dbt_model` and `rainbow_run_id`; their ids and bytes are returned as
//! [`JobStats`] for the materialization's metadata.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use rainbow_bigquery::{BigQuery, BigQueryError, JobOptions, JobResult, RelationKind};
use rainbow_warehouse::Warehouse;
use rainbow_warehouse::datafusion::arrow::array::Array;
use rainbow_warehouse::datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use rainbow_warehouse::datafusion::arrow::json::ReaderBuilder;
use rainbow_warehouse::datafusion::arrow::record_batch::RecordBatch;
use rainbow_warehouse::datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::Value as Json;
use tokio::sync::OnceCell;

use crate::compile::{Node, NodeKind};
use crate::data_tests::DataTest;
use crate::error::{DbtError, Result};
use crate::materialize::{
    BuildOptions, Built, TestOutcome, compiled_context, config_error, csv_load, incremental_plan,
    merge_update_columns, node_hooks, unknown_materialization,
};
use crate::project::Project;
use crate::source_map::NodeSource;

/// Rows per `INSERT … VALUES` statement of a seed.
const SEED_ROWS_PER_INSERT: usize = 500;

/// What a node's jobs did: their ids and what they cost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobStats {
    /// Every job's id, in order.
    pub job_ids: Vec<String>,
    /// Bytes read, summed over the jobs.
    pub bytes_processed: u64,
    /// Bytes billed, summed.
    pub bytes_billed: u64,
    /// Slot time, summed (milliseconds).
    pub slot_ms: u64,
}

/// The jobs of one node: labels, and their statistics summed.
pub(crate) struct Jobs<'a> {
    bq: &'a BigQuery,
    labels: BTreeMap<String, String>,
    /// What the jobs cost so far.
    pub stats: JobStats,
    /// The last dry run (its SQL and result): a node's SQL is dry-run once.
    dry: Option<(String, JobResult)>,
    /// The node's file and compiled SQL, to put errors at the file's lines.
    source: Option<NodeSource>,
}

impl<'a> Jobs<'a> {
    /// Jobs labelled with the node's name and the run's id.
    pub(crate) fn new(bq: &'a BigQuery, node: &str, run_id: &str) -> Self {
        let mut labels = BTreeMap::new();
        labels.insert("dbt_model".to_owned(), node.to_owned());
        labels.insert("dbt_invocation_id".to_owned(), run_id.to_owned());
        labels.insert("rainbow_run_id".to_owned(), run_id.to_owned());
        Jobs {
            bq,
            labels,
            stats: JobStats::default(),
            dry: None,
            source: None,
        }
    }

    /// Runs `sql`, whose first `header` lines are Rainbow's (the node's compiled SQL follows):
    /// BigQuery's line numbers in an error are turned into the compiled SQL's, and into the
    /// node's file when the job holds the compiled SQL verbatim ([`located`]).
    async fn run(
        &mut self,
        sql: &str,
        context: &str,
        header: usize,
        read_rows: bool,
    ) -> Result<JobResult> {
        let options = JobOptions {
            context: context.to_owned(),
            labels: self.labels.clone(),
            read_rows,
            ..Default::default()
        };
        let result = self
            .bq
            .run(sql, &options)
            .await
            .map_err(|e| located(e, sql, header, self.source.as_ref()))?;
        self.stats.job_ids.push(result.job_id.clone());
        self.stats.bytes_processed += result.bytes_processed;
        self.stats.bytes_billed += result.bytes_billed;
        self.stats.slot_ms += result.slot_ms;
        Ok(result)
    }

    /// The columns `sql` returns, from a dry run (nothing runs, nothing is billed).
    pub(crate) async fn dry_run_columns(
        &mut self,
        sql: &str,
        context: &str,
    ) -> Result<Vec<rainbow_bigquery::Column>> {
        Ok(self.dry(sql, context).await?.columns)
    }

    /// The bytes `sql` would read (a dry-run job: nothing runs, nothing is billed).
    pub(crate) async fn dry_run(&mut self, sql: &str, context: &str) -> Result<u64> {
        Ok(self.dry(sql, context).await?.bytes_processed)
    }

    /// A dry run of `sql` (the last one reused for the same SQL).
    async fn dry(&mut self, sql: &str, context: &str) -> Result<JobResult> {
        if let Some((last, result)) = &self.dry
            && last == sql
        {
            return Ok(result.clone());
        }
        let options = JobOptions {
            context: format!("dry run of {context}"),
            labels: self.labels.clone(),
            dry_run: true,
            ..Default::default()
        };
        let result = self
            .bq
            .run(sql, &options)
            .await
            .map_err(|e| located(e, sql, 0, self.source.as_ref()))?;
        self.dry = Some((sql.to_owned(), result.clone()));
        Ok(result)
    }
}

/// A job error's line made relative to the node's compiled SQL (the job's first `header` lines
/// are the DDL around it) and, when `sql` holds `source`'s compiled SQL verbatim after them,
/// put at the node file's line ([`source_map::origin`]).
fn located(e: BigQueryError, sql: &str, header: usize, source: Option<&NodeSource>) -> DbtError {
    let skip = u32::try_from(header).unwrap_or(u32::MAX);
    match e {
        BigQueryError::Job {
            context,
            job_id,
            reason,
            message,
            position: Some((line, column)),
        } if line > skip => {
            let compiled_line = line - skip;
            let in_file = source.filter(|s| s.holds_compiled_at(sql, header));
            if let Some(place) = in_file.and_then(|s| s.locate(compiled_line, column)) {
                return BigQueryError::Job {
                    context: place,
                    job_id,
                    reason,
                    message,
                    position: None,
                }
                .into();
            }
            BigQueryError::Job {
                context,
                job_id,
                reason,
                message,
                position: Some((compiled_line, column)),
            }
            .into()
        }
        other => other.into(),
    }
}

/// Builds one compiled node on BigQuery (seed or model). Errors: BigQuery rejects a job (the
/// error names the node's file, the job and BigQuery's message), a config is unusable, a
/// snapshot (not supported on BigQuery yet).
pub(crate) async fn build_node(
    jobs: &mut Jobs<'_>,
    project: &Project,
    node: &Node,
    options: BuildOptions<'_>,
) -> Result<Built> {
    jobs.bq.ensure_dataset(&node.schema).await?;
    jobs.source = match node.kind {
        NodeKind::Model | NodeKind::Snapshot => NodeSource::of(project, node),
        NodeKind::Seed | NodeKind::Test => None,
    };
    match node.kind {
        NodeKind::Seed => seed(jobs, &project.root.join(&node.path), node).await,
        NodeKind::Model => model(jobs, node, options).await,
        NodeKind::Snapshot => snapshot(jobs, node, options.run_started_at).await,
        NodeKind::Test => Err(config_error(
            node,
            "kind",
            "a singular test is not built; it runs as a test",
        )),
    }
}

/// The error for an incremental strategy BigQuery targets do not have.
fn unsupported_strategy(node: &Node, strategy: &str) -> DbtError {
    config_error(
        node,
        "incremental_strategy",
        format!(
            "`{strategy}` is not supported on a BigQuery target (merge, append, insert_overwrite)"
        ),
    )
}

/// Checks a model's BigQuery configs before anything runs: `partition_by`, `cluster_by`, and
/// an incremental model's strategy (on its first build too, not only once it is incremental).
pub(crate) fn validate(node: &Node) -> Result<()> {
    let partition = PartitionBy::of(node)?;
    cluster_by(node)?;
    // Table options Rainbow does not render yet: refused rather than silently dropped.
    for key in [
        "partition_expiration_days",
        "require_partition_filter",
        "labels",
        "kms_key_name",
        "hours_to_expiration",
        "grant_access_to",
        "grants",
    ] {
        if node.config.get(key).is_some_and(|v| !v.is_null()) {
            return Err(config_error(
                node,
                key,
                "not supported on a BigQuery target yet (it would be ignored)",
            ));
        }
    }
    if node.materialized() == "incremental"
        && let Some(strategy) = node
            .config
            .get("incremental_strategy")
            .and_then(Json::as_str)
    {
        match strategy {
            "merge" | "append" => {}
            "insert_overwrite" if partition.is_none() => {
                return Err(config_error(
                    node,
                    "partition_by",
                    "the insert_overwrite strategy needs partition_by",
                ));
            }
            "insert_overwrite" => {}
            other => return Err(unsupported_strategy(node, other)),
        }
    }
    Ok(())
}

async fn model(jobs: &mut Jobs<'_>, node: &Node, options: BuildOptions<'_>) -> Result<Built> {
    validate(node)?;
    let sql = node.compiled.clone().unwrap_or_default();
    let context = compiled_context(node);
    for hook in node_hooks(node, "pre") {
        jobs.run(&hook, &format!("{context} pre-hook"), 0, false)
            .await?;
    }
    let target = jobs.bq.quoted(&node.schema, &node.relation);
    let existing = jobs.bq.relation(&node.schema, &node.relation).await?;
    // A model that would scan more than the target allows is refused before it runs (BigQuery
    // refuses the job too; this names the model and the estimate first).
    if let (Some(limit), "table" | "incremental") =
        (jobs.bq.target().maximum_bytes_billed, node.materialized())
    {
        let bytes = jobs.dry_run(&sql, &context).await?;
        if bytes > limit {
            return Err(config_error(
                node,
                "maximum_bytes_billed",
                format!(
                    "the model would scan {bytes} bytes, over the target's limit of {limit} bytes (a dry run; `rainbow plan` lists every model's)"
                ),
            ));
        }
    }
    let mut built = match node.materialized() {
        "ephemeral" => Built {
            message: "EPHEMERAL".into(),
            rows: None,
        },
        "view" => {
            if existing
                .as_ref()
                .is_some_and(|r| r.kind == RelationKind::Table)
            {
                jobs.run(&format!("DROP TABLE {target}"), &context, 0, false)
                    .await?;
            }
            let ddl = format!("CREATE OR REPLACE VIEW {target} AS\n{sql}");
            jobs.run(&ddl, &context, 1, false).await?;
            Built {
                message: "CREATE VIEW".into(),
                rows: None,
            }
        }
        "table" => create_table(jobs, node, &sql, existing.as_ref()).await?,
        "incremental" => incremental(jobs, node, &sql, existing.as_ref(), options).await?,
        other => return Err(unknown_materialization(node, other)),
    };
    for hook in node_hooks(node, "post") {
        jobs.run(&hook, &format!("{context} post-hook"), 0, false)
            .await?;
        built.rows = None;
    }
    Ok(built)
}

/// `CREATE OR REPLACE TABLE` with the node's partitioning and clustering.
async fn create_table(
    jobs: &mut Jobs<'_>,
    node: &Node,
    sql: &str,
    existing: Option<&rainbow_bigquery::Relation>,
) -> Result<Built> {
    let target = jobs.bq.quoted(&node.schema, &node.relation);
    let context = compiled_context(node);
    if existing.is_some_and(|r| r.kind != RelationKind::Table) {
        jobs.run(&format!("DROP VIEW {target}"), &context, 0, false)
            .await?;
    } else if let Some(table) = existing
        && !replaceable(node, table)?
    {
        // BigQuery refuses `CREATE OR REPLACE` across a partitioning or clustering change;
        // dbt-bigquery drops the table first, as here.
        jobs.run(&format!("DROP TABLE {target}"), &context, 0, false)
            .await?;
    }
    let mut ddl = format!(
        "CREATE OR REPLACE TABLE {target}\n{}AS (\n",
        table_options(node)?
    );
    let header = ddl.lines().count();
    ddl.push_str(sql);
    ddl.push_str("\n)");
    jobs.run(&ddl, &context, header, false).await?;
    Ok(Built {
        message: "CREATE TABLE".into(),
        rows: None,
    })
}

/// Whether `table` has the partitioning and clustering the node's config asks for (BigQuery
/// replaces a table in place only then).
fn replaceable(node: &Node, table: &rainbow_bigquery::Relation) -> Result<bool> {
    let wanted = PartitionBy::of(node)?.map(|p| match (p.data_type.as_str(), p.range) {
        ("int64", Some((start, end, interval))) => {
            format!("{}:range:{start}:{end}:{interval}", p.field)
        }
        _ => format!("{}:{}", p.field, p.granularity.to_uppercase()),
    });
    let clustering: Vec<String> = cluster_by(node)?
        .unwrap_or_default()
        .iter()
        .map(|c| c.trim_matches('`').to_owned())
        .collect();
    let same_partitioning = match (&wanted, &table.partitioning) {
        (None, None) => true,
        (Some(w), Some(t)) => w.eq_ignore_ascii_case(t),
        _ => false,
    };
    Ok(same_partitioning && clustering == table.clustering)
}

/// The node's `PARTITION BY …` and `CLUSTER BY …` lines (empty without them).
fn table_options(node: &Node) -> Result<String> {
    let mut options = String::new();
    if let Some(partition) = PartitionBy::of(node)? {
        options.push_str(&format!("PARTITION BY {}\n", partition.expression(None)));
    }
    if let Some(columns) = cluster_by(node)? {
        options.push_str(&format!("CLUSTER BY {}\n", columns.join(", ")));
    }
    Ok(options)
}

/// `on_schema_change` on BigQuery: the model's columns (a dry run) compared with the table's as
/// on the embedded warehouse ([`crate::schema_change`]: the same decisions, types compared as
/// the embedded warehouse types them); the table evolved by `ALTER TABLE` (new columns added,
/// with `sync_all_columns` gone ones dropped and changed types converted — refused, naming the
/// column, when a stored value does not convert back to itself). Returns the columns to write
/// (the table's that the model has) and the note for the build's message.
async fn shape_for_model(
    jobs: &mut Jobs<'_>,
    node: &Node,
    sql: &str,
    existing: &rainbow_bigquery::Relation,
) -> Result<(Vec<String>, Option<String>)> {
    use crate::schema_change::{Decision, Mode, SchemaChanges, decide};
    let context = compiled_context(node);
    let mode = Mode::of(node)?;
    let model = jobs.dry_run_columns(sql, &context).await?;
    let changes = SchemaChanges::between(
        arrow_schema(&model).await?.as_ref(),
        arrow_schema(&existing.columns).await?.as_ref(),
    );
    let (table, note) = match decide(node, mode, &changes)? {
        Decision::Keep(note) => (existing.columns.clone(), note),
        Decision::Evolve => {
            let target = jobs.bq.quoted(&node.schema, &node.relation);
            let type_of = |cols: &[rainbow_bigquery::Column], name: &str| {
                cols.iter()
                    .find(|c| c.name == name)
                    .map(|c| c.data_type.clone())
                    .unwrap_or_default()
            };
            let mut alters: Vec<String> = changes
                .added
                .iter()
                .map(|f| format!("ADD COLUMN `{}` {}", f.name(), type_of(&model, f.name())))
                .collect();
            let sync = mode == Mode::SyncAllColumns;
            if sync {
                alters.extend(changes.removed.iter().map(|c| format!("DROP COLUMN `{c}`")));
            }
            if !alters.is_empty() {
                // One statement per column, as one script (one job).
                let script: Vec<String> = alters
                    .iter()
                    .map(|a| format!("ALTER TABLE {target} {a}"))
                    .collect();
                jobs.run(&script.join(";\n"), &context, 0, false).await?;
            }
            if sync && !changes.changed.is_empty() {
                let mut casts = Vec::new();
                for (name, _, _) in &changes.changed {
                    let (old, new) = (type_of(&existing.columns, name), type_of(&model, name));
                    let lost = jobs
                        .run(
                            &format!("SELECT COUNTIF(`{name}` IS NOT NULL AND (SAFE_CAST(`{name}` AS {new}) IS NULL OR CAST(SAFE_CAST(`{name}` AS {new}) AS {old}) != `{name}`)) FROM {target}"),
                            &context,
                            0,
                            true,
                        )
                        .await?;
                    let lost = lost
                        .rows
                        .first()
                        .and_then(|r| r.first())
                        .and_then(Json::as_i64);
                    if lost.unwrap_or(0) > 0 {
                        return Err(config_error(
                            node,
                            "on_schema_change",
                            format!(
                                "column `{name}` cannot become {new}: {} stored value(s) would change (run with --full-refresh to rebuild)",
                                lost.unwrap_or(0)
                            ),
                        ));
                    }
                    casts.push(format!("CAST(`{name}` AS {new}) AS `{name}`"));
                }
                jobs.run(
                    &format!(
                        "CREATE OR REPLACE TABLE {target}\n{}AS SELECT * REPLACE ({}) FROM {target}",
                        table_options(node)?,
                        casts.join(", ")
                    ),
                    &context,
                    0,
                    false,
                )
                .await?;
            }
            // The table's columns now: its own (less those dropped), then the new ones.
            let mut evolved: Vec<rainbow_bigquery::Column> = existing
                .columns
                .iter()
                .filter(|c| !(sync && changes.removed.contains(&c.name)))
                .cloned()
                .collect();
            evolved.extend(changes.added.iter().map(|f| rainbow_bigquery::Column {
                name: f.name().clone(),
                data_type: type_of(&model, f.name()),
            }));
            (evolved, None)
        }
    };
    let columns = table
        .iter()
        .filter(|c| model.iter().any(|m| m.name.eq_ignore_ascii_case(&c.name)))
        .map(|c| c.name.clone())
        .collect();
    Ok((columns, note))
}

async fn incremental(
    jobs: &mut Jobs<'_>,
    node: &Node,
    sql: &str,
    existing: Option<&rainbow_bigquery::Relation>,
    options: BuildOptions<'_>,
) -> Result<Built> {
    let exists = existing.is_some_and(|r| r.kind == RelationKind::Table);
    let (Some((strategy, keys)), Some(existing)) =
        (incremental_plan(node, exists, options)?, existing)
    else {
        return create_table(jobs, node, sql, existing).await;
    };
    let (columns, note) = shape_for_model(jobs, node, sql, existing).await?;
    let target = jobs.bq.quoted(&node.schema, &node.relation);
    let context = compiled_context(node);
    let list = |prefix: &str| -> String {
        columns
            .iter()
            .map(|c| format!("{prefix}`{c}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let insert = format!("INSERT ({}) VALUES ({})", list(""), list(""));
    let (message, statement, header) = match strategy.as_str() {
        "merge" => {
            if keys.is_empty() {
                return Err(config_error(
                    node,
                    "unique_key",
                    "the merge strategy needs a unique_key",
                ));
            }
            let on: Vec<String> = keys
                .iter()
                .map(|k| format!("DBT_INTERNAL_SOURCE.`{k}` = DBT_INTERNAL_DEST.`{k}`"))
                .collect();
            let update = merge_update_columns(node, &columns)?.unwrap_or_else(|| columns.clone());
            let set: Vec<String> = update
                .iter()
                .map(|c| format!("`{c}` = DBT_INTERNAL_SOURCE.`{c}`"))
                .collect();
            (
                "MERGE",
                format!(
                    "MERGE INTO {target} AS DBT_INTERNAL_DEST\nUSING (\n{sql}\n) AS DBT_INTERNAL_SOURCE\nON {}\nWHEN MATCHED THEN UPDATE SET {}\nWHEN NOT MATCHED THEN {insert}",
                    on.join(" AND "),
                    set.join(", ")
                ),
                2,
            )
        }
        "append" => (
            "APPEND",
            format!(
                "INSERT INTO {target} ({})\nSELECT {} FROM (\n{sql}\n)",
                list(""),
                list("")
            ),
            2,
        ),
        "insert_overwrite" => {
            let partition = PartitionBy::of(node)?.ok_or_else(|| {
                config_error(
                    node,
                    "partition_by",
                    "the insert_overwrite strategy needs partition_by",
                )
            })?;
            let dest = partition.value(Some("DBT_INTERNAL_DEST"));
            let replace = format!(
                "MERGE INTO {target} AS DBT_INTERNAL_DEST\nUSING {{source}} AS DBT_INTERNAL_SOURCE\nON FALSE\nWHEN NOT MATCHED BY SOURCE AND {dest} IN {{partitions}} THEN DELETE\nWHEN NOT MATCHED THEN {insert}"
            );
            match node.config.get("partitions") {
                // Static: the partitions listed (SQL expressions).
                Some(Json::Array(parts)) => {
                    let parts: Vec<String> = parts
                        .iter()
                        .map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_owned))
                        .collect();
                    let source = format!("(\n{sql}\n)");
                    (
                        "INSERT_OVERWRITE",
                        replace
                            .replace("{partitions}", &format!("({})", parts.join(", ")))
                            .replacen("{source}", &source, 1),
                        2,
                    )
                }
                Some(other) => {
                    return Err(config_error(
                        node,
                        "partitions",
                        format!("expected a list of partition values (SQL literals), not {other}"),
                    ));
                }
                // Dynamic: the partitions of the new rows.
                None => {
                    let tmp = format!("{}__dbt_tmp", node.relation);
                    let script = format!(
                        "DECLARE dbt_partitions_for_replacement ARRAY<{value_type}>;\nCREATE OR REPLACE TEMP TABLE `{tmp}` AS (\n{sql}\n);\nSET dbt_partitions_for_replacement = (SELECT ARRAY_AGG(DISTINCT {value}) FROM `{tmp}` WHERE {value} IS NOT NULL);\n{merge};\nDROP TABLE `{tmp}`",
                        value_type = partition.value_type(),
                        value = partition.value(Some(&format!("`{tmp}`"))),
                        merge = replace
                            .replace("{partitions}", "UNNEST(dbt_partitions_for_replacement)")
                            .replacen("{source}", &format!("`{tmp}`"), 1),
                    );
                    ("INSERT_OVERWRITE", script, 2)
                }
            }
        }
        other => {
            return Err(unsupported_strategy(node, other));
        }
    };
    jobs.run(&statement, &context, header, false).await?;
    Ok(Built {
        message: match note {
            Some(note) => format!("{message} ({note})"),
            None => message.into(),
        },
        rows: None,
    })
}

/// dbt-bigquery's `partition_by` config: `{field, data_type, granularity}` or, for integers,
/// `{field, data_type: int64, range: {start, end, interval}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PartitionBy {
    field: String,
    data_type: String,
    granularity: String,
    range: Option<(i64, i64, i64)>,
}

impl PartitionBy {
    fn of(node: &Node) -> Result<Option<Self>> {
        let Some(config) = node.config.get("partition_by").filter(|v| !v.is_null()) else {
            return Ok(None);
        };
        let bad = |m: &str| config_error(node, "partition_by", m);
        let text = |k: &str| config.get(k).and_then(Json::as_str).map(str::to_lowercase);
        let field = config
            .get("field")
            .and_then(Json::as_str)
            .ok_or_else(|| bad("needs `field:` (the partitioning column)"))?
            .to_owned();
        let data_type = text("data_type").unwrap_or_else(|| "date".into());
        let granularity = text("granularity").unwrap_or_else(|| "day".into());
        if !["date", "timestamp", "datetime", "int64"].contains(&data_type.as_str()) {
            return Err(bad(
                "`data_type` must be date, timestamp, datetime or int64",
            ));
        }
        if !["hour", "day", "month", "year"].contains(&granularity.as_str()) {
            return Err(bad("`granularity` must be hour, day, month or year"));
        }
        let range = match (data_type.as_str(), config.get("range")) {
            ("int64", Some(r)) => {
                let n = |k: &str| r.get(k).and_then(Json::as_i64);
                match (n("start"), n("end"), n("interval")) {
                    (Some(s), Some(e), Some(i)) if i > 0 => Some((s, e, i)),
                    _ => return Err(bad("`range` needs whole numbers start, end, interval > 0")),
                }
            }
            ("int64", None) => return Err(bad("an int64 partition needs `range:`")),
            _ => None,
        };
        Ok(Some(PartitionBy {
            field,
            data_type,
            granularity,
            range,
        }))
    }

    /// The partitioning expression over `field` (of `table` when given): what `PARTITION BY`
    /// says and what a partition's value is.
    fn expression(&self, table: Option<&str>) -> String {
        let column = match table {
            Some(t) => format!("{t}.`{}`", self.field),
            None => format!("`{}`", self.field),
        };
        let unit = self.granularity.to_uppercase();
        match (self.data_type.as_str(), self.range) {
            ("int64", Some((start, end, interval))) => {
                format!("RANGE_BUCKET({column}, GENERATE_ARRAY({start}, {end}, {interval}))")
            }
            ("date", _) if self.granularity == "day" => column,
            ("date", _) => format!("DATE_TRUNC({column}, {unit})"),
            ("timestamp", _) => format!("TIMESTAMP_TRUNC({column}, {unit})"),
            _ => format!("DATETIME_TRUNC({column}, {unit})"),
        }
    }

    /// A row's partition value as `insert_overwrite` compares it (dbt-bigquery's `render()`):
    /// the partitioning expression, except for an integer-range partition, whose value is the
    /// column itself (comparing bucket numbers would replace other rows than the new ones').
    fn value(&self, table: Option<&str>) -> String {
        match self.data_type.as_str() {
            "int64" => match table {
                Some(t) => format!("{t}.`{}`", self.field),
                None => format!("`{}`", self.field),
            },
            _ => self.expression(table),
        }
    }

    /// The type of [`PartitionBy::value`].
    fn value_type(&self) -> &'static str {
        match self.data_type.as_str() {
            "date" => "DATE",
            "timestamp" => "TIMESTAMP",
            "datetime" => "DATETIME",
            _ => "INT64",
        }
    }
}

/// `cluster_by`: a column or a list of up to four.
fn cluster_by(node: &Node) -> Result<Option<Vec<String>>> {
    let columns: Vec<String> = match node.config.get("cluster_by") {
        None | Some(Json::Null) => return Ok(None),
        Some(Json::String(c)) => vec![c.clone()],
        Some(Json::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| config_error(node, "cluster_by", "expected column names"))
            })
            .collect::<Result<_>>()?,
        Some(_) => {
            return Err(config_error(
                node,
                "cluster_by",
                "expected a column name or a list of them",
            ));
        }
    };
    if columns.len() > 4 {
        return Err(config_error(
            node,
            "cluster_by",
            "BigQuery clusters by at most four columns",
        ));
    }
    Ok(Some(columns.iter().map(|c| format!("`{c}`")).collect()))
}

/// A dbt snapshot (SCD type 2) on BigQuery: the same next-content SQL as on the embedded
/// warehouse ([`crate::snapshot::snapshot_sql`], BigQuery SQL), written by
/// `CREATE OR REPLACE TABLE … AS` (BigQuery reads the current version while replacing it);
/// columns new in the query are added first (`ALTER TABLE … ADD COLUMN`), columns gone from it
/// kept (NULL in new versions), as dbt does.
async fn snapshot(jobs: &mut Jobs<'_>, node: &Node, run_started_at: &str) -> Result<Built> {
    use crate::snapshot::{
        SnapshotConfig, check_duplicates, check_keys, duplicate_keys_sql, meta_columns, q,
        snapshot_sql, snapshot_time, temporal_of_bigquery, validity_type, with_kept,
    };
    let cfg = SnapshotConfig::from_node(node)?;
    let mut query = node.compiled.clone().unwrap_or_default();
    let context = compiled_context(node);
    let shape = jobs.dry_run_columns(&query, &context).await?;
    let mut source_columns: Vec<String> = shape.iter().map(|c| c.name.clone()).collect();
    check_keys(node, &cfg, &source_columns)?;
    let types: Vec<(String, &str)> = shape
        .iter()
        .map(|c| (c.name.clone(), temporal_of_bigquery(&c.data_type)))
        .collect();
    let time_type = validity_type(node, &cfg, &types)?;
    let dup = jobs
        .run(&duplicate_keys_sql(&cfg, &query), &context, 0, true)
        .await?;
    check_duplicates(
        node,
        dup.rows
            .first()
            .and_then(|r| r.first())
            .and_then(Json::as_i64)
            .unwrap_or(0),
    )?;
    let now = snapshot_time(run_started_at, time_type);
    let target = jobs.bq.quoted(&node.schema, &node.relation);
    let existing = jobs
        .bq
        .relation(&node.schema, &node.relation)
        .await?
        .filter(|r| r.kind == RelationKind::Table);
    if let Some(table) = &existing {
        // New query columns join the snapshot (NULL in its existing rows).
        let added: Vec<String> = shape
            .iter()
            .filter(|c| table.columns.iter().all(|t| t.name != c.name))
            .map(|c| format!("ADD COLUMN {} {}", q(&c.name), c.data_type))
            .collect();
        if !added.is_empty() {
            jobs.run(
                &format!("ALTER TABLE {target} {}", added.join(", ")),
                &context,
                0,
                false,
            )
            .await?;
        }
        // A column the query no longer has stays, NULL in new versions.
        let meta = meta_columns(&cfg);
        let gone: Vec<&rainbow_bigquery::Column> = table
            .columns
            .iter()
            .filter(|c| !source_columns.contains(&c.name) && !meta.contains(&&c.name))
            .collect();
        let kept: Vec<String> = gone
            .iter()
            .map(|c| format!("CAST(NULL AS {}) AS {}", c.data_type, q(&c.name)))
            .collect();
        source_columns.extend(gone.iter().map(|c| c.name.clone()));
        query = with_kept(query, &kept);
    }
    let sql = snapshot_sql(
        &cfg,
        &query,
        &source_columns,
        time_type,
        existing.as_ref().map(|_| target.as_str()),
        &now,
    );
    jobs.run(
        &format!("CREATE OR REPLACE TABLE {target} AS (\n{sql}\n)"),
        &format!("{context} (snapshot)"),
        1,
        false,
    )
    .await?;
    let rows = table_rows(jobs, node).await?;
    Ok(Built {
        message: format!("SNAPSHOT {}", rows.unwrap_or(0)),
        rows,
    })
}

/// The embedded warehouse that reads seed files (in memory, opened once).
async fn csv_reader() -> Result<&'static Warehouse> {
    static READER: OnceCell<Warehouse> = OnceCell::const_new();
    Ok(READER
        .get_or_try_init(|| Warehouse::open("memory:///", "seeds"))
        .await?)
}

async fn seed(jobs: &mut Jobs<'_>, path: &Path, node: &Node) -> Result<Built> {
    let load = csv_load(node)?;
    let reader = csv_reader().await?;
    let df = reader.read_csv(path, &load, &node.path).await?;
    let schema = df.schema().as_arrow().clone();
    let batches = df
        .collect()
        .await
        .map_err(rainbow_warehouse::WarehouseError::datafusion(&node.path))?;
    let mut columns = Vec::new();
    for f in schema.fields() {
        let t = crate::unit_tests::bigquery_type(f.data_type()).ok_or_else(|| {
            config_error(
                node,
                "column_types",
                format!(
                    "`{}` is read as {}, which BigQuery has no type for",
                    f.name(),
                    f.data_type()
                ),
            )
        })?;
        columns.push((f.name().clone(), t));
    }
    let target = jobs.bq.quoted(&node.schema, &node.relation);
    let definition: Vec<String> = columns.iter().map(|(c, t)| format!("`{c}` {t}")).collect();
    jobs.run(
        &format!(
            "CREATE OR REPLACE TABLE {target} ({})",
            definition.join(", ")
        ),
        &node.path,
        0,
        false,
    )
    .await?;
    let names: Vec<String> = columns.iter().map(|(c, _)| format!("`{c}`")).collect();
    let rows = seed_rows(&batches, &columns)?;
    for chunk in rows.chunks(SEED_ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO {target} ({}) VALUES\n{}",
            names.join(", "),
            chunk.join(",\n")
        );
        jobs.run(&sql, &node.path, 0, false).await?;
    }
    Ok(Built {
        message: format!("INSERT {}", rows.len()),
        rows: Some(rows.len() as u64),
    })
}

/// A value (Arrow's text of it) as a GoogleSQL literal of `kind`: numbers and booleans as
/// written, dates, times and decimals as typed literals (`DATE '2024-09-01'`), bytes from hex
/// (Arrow writes them so), anything else cast from its text. Plain literals, not casts: the
/// emulator parses a 500-row `VALUES` list of casts 2.5× slower (2.2 s vs 0.9 s, measured).
fn literal(text: &str, kind: &str) -> String {
    match kind {
        "INT64" | "BOOL" => text.to_owned(),
        "FLOAT64" if text.parse::<f64>().is_ok_and(f64::is_finite) => text.to_owned(),
        "STRING" => string_literal(text),
        "DATE" | "DATETIME" | "TIMESTAMP" | "TIME" | "NUMERIC" | "BIGNUMERIC" => {
            format!("{kind} {}", string_literal(text))
        }
        "BYTES" => format!("FROM_HEX({})", string_literal(text)),
        _ => format!("CAST({} AS {kind})", string_literal(text)),
    }
}

/// Each row as a `(…)` tuple of BigQuery literals (see [`literal`]; `NULL`).
fn seed_rows(batches: &[RecordBatch], columns: &[(String, &str)]) -> Result<Vec<String>> {
    let options = FormatOptions::default();
    let mut rows = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| DbtError::Input {
                location: "seed".into(),
                message: e.to_string(),
            })?;
        for row in 0..batch.num_rows() {
            let values: Vec<String> = formatters
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    if batch.column(i).is_null(row) {
                        "NULL".to_owned()
                    } else {
                        literal(&f.value(row).to_string(), columns[i].1)
                    }
                })
                .collect();
            rows.push(format!("({})", values.join(", ")));
        }
    }
    Ok(rows)
}

/// A GoogleSQL string literal: `'…'` with `\`, `'` and control characters escaped.
pub(crate) fn string_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Runs a test's failing-row query on BigQuery (see [`crate::materialize::failing_rows`]).
pub(crate) async fn failing_rows(jobs: &mut Jobs<'_>, test: &DataTest) -> Result<TestOutcome> {
    let (calc, warn_if, error_if) = (&test.fail_calc, &test.warn_if, &test.error_if);
    let sql = format!(
        "SELECT CAST(COALESCE({calc}, 0) AS INT64) AS failures, COALESCE({calc} {warn_if}, FALSE) AS should_warn, COALESCE({calc} {error_if}, FALSE) AS should_error FROM (\n{}\n) AS dbt_test",
        test.sql
    );
    let result = jobs
        .run(&sql, &format!("test {}", test.name), 1, true)
        .await?;
    let row = result.rows.first();
    let value = |i: usize| row.and_then(|r| r.get(i));
    Ok(TestOutcome {
        failures: value(0).and_then(Json::as_i64).unwrap_or(0),
        warn: value(1).and_then(Json::as_bool).unwrap_or(false),
        error: value(2).and_then(Json::as_bool).unwrap_or(false),
    })
}

/// What [`load_lake_table`] copied into `dataset` so far: table → partition → fingerprint (one
/// query per dataset and run; the loads table is created when missing).
pub(crate) async fn lake_loads(
    bq: &BigQuery,
    dataset: &str,
) -> Result<HashMap<String, BTreeMap<String, String>>> {
    bq.ensure_dataset(dataset).await?;
    let loads = bq.quoted(dataset, LOADS_TABLE);
    let context = format!("reading {dataset}.{LOADS_TABLE}");
    let mut jobs = Jobs::new(bq, LOADS_TABLE, "lake");
    if bq.relation(dataset, LOADS_TABLE).await?.is_none() {
        jobs.run(
            &format!("CREATE TABLE IF NOT EXISTS {loads} (table_name STRING, partition_value STRING, fingerprint STRING, loaded_at TIMESTAMP)"),
            &context,
            0,
            false,
        )
        .await?;
        return Ok(HashMap::new());
    }
    let rows = jobs
        .run(
            &format!("SELECT table_name, partition_value, fingerprint FROM {loads}"),
            &context,
            0,
            true,
        )
        .await?
        .rows;
    let mut out: HashMap<String, BTreeMap<String, String>> = HashMap::new();
    for r in &rows {
        if let (Some(t), Some(p), Some(f)) = (
            r.first().and_then(Json::as_str),
            r.get(1).and_then(Json::as_str),
            r.get(2).and_then(Json::as_str),
        ) {
            out.entry(t.to_owned())
                .or_default()
                .insert(p.to_owned(), f.to_owned());
        }
    }
    Ok(out)
}

/// The table of partitions copied from the lake (table, partition, fingerprint) in each raw
/// dataset: a partition whose files changed (a reprocessed day) is copied again.
const LOADS_TABLE: &str = "_rainbow_lake_loads";

/// Copies the lake's Parquet dataset at `location` (as Rainbow reads it) into the BigQuery
/// table `dataset.name`, one partition (`dt=…` folder) at a time — each new or changed
/// partition loaded into a staging table by a load job from `uri` (the same files as BigQuery
/// reads them, `gs://bucket/…/raw/<table>`: the same objects, not an asynchronous copy, or a
/// day changed in one and not yet in the other is recorded as copied), then swapped in by one
/// transaction that also records its fingerprint; a partition gone from the lake is deleted.
/// Unchanged partitions cost nothing. The partition column is text, as the embedded
/// warehouse's external table has it. Returns the partitions copied or deleted.
///
/// Why loads rather than an external table: a native table is read faster and cheaper by every
/// model, pruned by partition, and a nightly copies one day; the master dataset in the lake stays
/// the source of truth (a partition is copied again when its files change).
pub(crate) async fn load_lake_table(
    bq: &BigQuery,
    dataset: &str,
    name: &str,
    location: &str,
    uri: &str,
    run_id: &str,
    loaded: &BTreeMap<String, String>,
) -> Result<usize> {
    let reader = csv_reader().await?;
    let Some(lake) = reader.lake_dataset(location).await? else {
        return Ok(0);
    };
    let context = format!("loading {location} into {dataset}.{name}");
    let mut jobs = Jobs::new(bq, name, run_id);
    bq.ensure_dataset(dataset).await?;
    let mut columns = Vec::new();
    for f in lake.schema.fields() {
        let t = crate::unit_tests::bigquery_type(f.data_type()).ok_or_else(|| DbtError::Input {
            location: context.clone(),
            message: format!(
                "column `{}` is {}, which BigQuery has no type for",
                f.name(),
                f.data_type()
            ),
        })?;
        columns.push((f.name().clone(), t));
    }
    let key = lake.partition_key.clone();
    let file_columns: Vec<&(String, &str)> = columns
        .iter()
        .filter(|(c, _)| Some(c) != key.as_ref())
        .collect();
    let definition = |cols: &[&(String, &str)]| -> String {
        cols.iter()
            .map(|(c, t)| format!("`{c}` {t}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let all: Vec<&(String, &str)> = columns.iter().collect();
    let target = bq.quoted(dataset, name);
    let loads = bq.quoted(dataset, LOADS_TABLE);
    // A missing table (first copy, or dropped by hand) is created and copied whole, whatever
    // the loads table remembers of it.
    let no_loads = BTreeMap::new();
    let loaded = if bq.relation(dataset, name).await?.is_some() {
        loaded
    } else {
        jobs.run(
            &format!(
                "CREATE TABLE {target} ({});\nDELETE FROM {loads} WHERE table_name = {}",
                definition(&all),
                string_literal(name)
            ),
            &context,
            0,
            false,
        )
        .await?;
        &no_loads
    };
    let pending: Vec<&String> = lake
        .partitions
        .keys()
        .filter(|p| loaded.get(*p) != Some(&lake.fingerprint(p)))
        .collect();
    // Partitions gone from the lake leave the table too, as they leave the embedded
    // warehouse's external table.
    let gone: Vec<&String> = loaded
        .keys()
        .filter(|p| !lake.partitions.contains_key(*p))
        .collect();
    if let Some(k) = &key {
        for partition in &gone {
            let value = string_literal(partition);
            jobs.run(
                &format!(
                    "BEGIN TRANSACTION;\nDELETE FROM {target} WHERE `{k}` = {value};\nDELETE FROM {loads} WHERE table_name = {} AND partition_value = {value};\nCOMMIT TRANSACTION",
                    string_literal(name)
                ),
                &format!("{context}: partition {partition} left the lake"),
                0,
                false,
            )
            .await?;
        }
    }
    if pending.is_empty() {
        return Ok(gone.len());
    }
    // The staging table has the partition column too: a load reads it from the folder names
    // (`key=value`, hive partitioning).
    // A staging table of this call's own: two runs copying at once do not mix their days.
    let staging = format!("__rainbow_load_{name}_{}", uuid_suffix());
    jobs.run(
        &format!(
            "CREATE OR REPLACE TABLE {} ({})",
            bq.quoted(dataset, &staging),
            definition(&all)
        ),
        &context,
        0,
        false,
    )
    .await?;
    let names = |cols: &[&(String, &str)]| -> String {
        cols.iter()
            .map(|(c, _)| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let uri = uri.trim_end_matches('/');
    for partition in &pending {
        let uris = lake.partitions[*partition]
            .iter()
            .map(|f| format!("{uri}/{}", f.path))
            .collect();
        let options = JobOptions {
            context: format!("{context}: partition {partition}"),
            labels: jobs.labels.clone(),
            ..Default::default()
        };
        let hive = key.as_ref().map(|_| uri);
        let result = bq
            .load_parquet(uris, hive, dataset, &staging, &options)
            .await?;
        jobs.stats.job_ids.push(result.job_id);
        let value = string_literal(partition);
        let (filter, select) = match &key {
            Some(k) => (
                format!("`{k}` = {value}"),
                format!("{}, {value}", names(&file_columns)),
            ),
            None => ("TRUE".to_owned(), names(&file_columns)),
        };
        let swap = format!(
            "BEGIN TRANSACTION;
DELETE FROM {target} WHERE {filter};
INSERT INTO {target} ({}) SELECT {select} FROM {};
DELETE FROM {loads} WHERE table_name = {} AND partition_value = {value};
INSERT INTO {loads} (table_name, partition_value, fingerprint, loaded_at) VALUES ({}, {value}, {}, CURRENT_TIMESTAMP());
COMMIT TRANSACTION",
            names(&all),
            bq.quoted(dataset, &staging),
            string_literal(name),
            string_literal(name),
            string_literal(&lake.fingerprint(partition)),
        );
        jobs.run(
            &swap,
            &format!("{context}: partition {partition}"),
            0,
            false,
        )
        .await?;
    }
    jobs.run(
        &format!("DROP TABLE {}", bq.quoted(dataset, &staging)),
        &context,
        0,
        false,
    )
    .await?;
    Ok(pending.len() + gone.len())
}

/// A short unique suffix for a scratch table's name.
fn uuid_suffix() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// dbt's audit table for a test with `store_failures`: its failing rows, replaced each run.
pub(crate) async fn store_failures(
    jobs: &mut Jobs<'_>,
    audit_dataset: &str,
    test: &DataTest,
) -> Result<()> {
    jobs.bq.ensure_dataset(audit_dataset).await?;
    let target = jobs.bq.quoted(audit_dataset, &test.name);
    let sql = format!("CREATE OR REPLACE TABLE {target} AS (\n{}\n)", test.sql);
    jobs.run(&sql, &format!("test {}", test.name), 1, false)
        .await?;
    Ok(())
}

/// The rows of the node's table after its build (`None` for a view or an ephemeral model):
/// `COUNT(*)` of a table reads only its metadata (0 bytes billed).
pub(crate) async fn table_rows(jobs: &mut Jobs<'_>, node: &Node) -> Result<Option<u64>> {
    if node.kind == NodeKind::Model && matches!(node.materialized(), "view" | "ephemeral") {
        return Ok(None);
    }
    let target = jobs.bq.quoted(&node.schema, &node.relation);
    let result = jobs
        .run(
            &format!("SELECT COUNT(*) FROM {target}"),
            &node.path,
            0,
            true,
        )
        .await?;
    Ok(result
        .rows
        .first()
        .and_then(|r| r.first())
        .and_then(Json::as_i64)
        .and_then(|n| u64::try_from(n).ok()))
}

/// BigQuery columns as the Arrow schema the embedded warehouse gives their types (text for a
/// type it cannot map).
pub(crate) async fn arrow_schema(columns: &[rainbow_bigquery::Column]) -> Result<SchemaRef> {
    let reader = csv_reader().await?;
    let mut fields = Vec::new();
    for c in columns {
        let t = match reader.sql_type(&c.data_type).await {
            Ok(t) if !t.is_nested() => t,
            _ => DataType::Utf8,
        };
        fields.push(Field::new(&c.name, t, true));
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// A job's rows as Arrow: each column typed as the embedded warehouse types its BigQuery type
/// (`NUMERIC` → Decimal128(38, 9), `DATE` → Date32, `TIMESTAMP` → µs UTC…), so a result
/// exported from BigQuery has the types an embedded build gives; a type it cannot map
/// (`GEOGRAPHY`, `JSON`, nested) is text.
pub(crate) async fn arrow_batches(
    result: &JobResult,
    context: &str,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let schema = arrow_schema(&result.columns).await?;
    let rows: Vec<serde_json::Map<String, Json>> = result
        .rows
        .iter()
        .map(|row| {
            (schema.fields().iter().zip(row))
                .map(|(f, v)| -> Result<(String, Json)> {
                    let v = match (f.data_type(), v) {
                        (DataType::Utf8, Json::Array(_) | Json::Object(_) | Json::Number(_)) => {
                            Json::from(v.to_string())
                        }
                        // `NaN`, `Infinity`, `-Infinity` as BigQuery writes them, in Rust's
                        // spelling (the decoder parses text as Rust does).
                        (DataType::Float64, Json::String(s)) => {
                            Json::from(s.replace("Infinity", "inf"))
                        }
                        // BYTES come as base64; Arrow's JSON decoder reads binary as hex.
                        (DataType::Binary, Json::String(s)) => {
                            use base64::Engine as _;
                            let bytes = base64::engine::general_purpose::STANDARD
                                .decode(s)
                                .map_err(|e| DbtError::Input {
                                    location: context.to_owned(),
                                    message: format!(
                                        "column `{}`: BYTES value `{s}` is not base64: {e}",
                                        f.name()
                                    ),
                                })?;
                            Json::from(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
                        }
                        _ => v.clone(),
                    };
                    Ok((f.name().clone(), v))
                })
                .collect::<Result<serde_json::Map<String, Json>>>()
        })
        .collect::<Result<_>>()?;
    let error = |e: rainbow_warehouse::datafusion::arrow::error::ArrowError| DbtError::Input {
        location: context.to_owned(),
        message: format!("reading BigQuery's rows: {e}"),
    };
    let mut decoder = ReaderBuilder::new(schema.clone())
        .build_decoder()
        .map_err(error)?;
    decoder.serialize(&rows).map_err(error)?;
    let batches = decoder.flush().map_err(error)?.into_iter().collect();
    Ok((schema, batches))
}

/// Rows of a query while rendering (`run_query`, `statement`), as the compiler reads them.
pub(crate) async fn query_result(
    bq: &BigQuery,
    sql: &str,
) -> std::result::Result<crate::compile::QueryResult, String> {
    let options = JobOptions {
        context: "a query while rendering".into(),
        read_rows: true,
        ..Default::default()
    };
    let result = bq.run(sql, &options).await.map_err(|e| e.to_string())?;
    // Decimals as numbers, as the embedded warehouse gives them (a template compares them
    // with numbers).
    let decimal: Vec<bool> = result
        .columns
        .iter()
        .map(|c| matches!(c.data_type.as_str(), "NUMERIC" | "BIGNUMERIC"))
        .collect();
    let rows = result
        .rows
        .into_iter()
        .map(|row| {
            row.into_iter()
                .zip(&decimal)
                .map(|(v, &d)| match (d, &v) {
                    (true, Json::String(s)) => s
                        .parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                        .map_or(v, Json::Number),
                    _ => v,
                })
                .collect()
        })
        .collect();
    Ok(crate::compile::QueryResult {
        types: result.columns.iter().map(|c| c.data_type.clone()).collect(),
        columns: result.columns.iter().map(|c| c.name.clone()).collect(),
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(config: Json) -> Node {
        let mut n = Node::test_model("m", "select 1");
        if let Json::Object(o) = config {
            n.config.extend(o);
        }
        n
    }

    #[test]
    fn partition_by_renders_as_dbt_bigquery_does() {
        let p = |c: Json| PartitionBy::of(&node(serde_json::json!({ "partition_by": c })));
        let e = |c: Json| p(c).expect("ok").expect("ok").expression(None);
        assert_eq!(e(serde_json::json!({"field": "d"})), "`d`");
        assert_eq!(
            e(serde_json::json!({"field": "d", "granularity": "month"})),
            "DATE_TRUNC(`d`, MONTH)"
        );
        assert_eq!(
            e(serde_json::json!({"field": "ts", "data_type": "timestamp"})),
            "TIMESTAMP_TRUNC(`ts`, DAY)"
        );
        assert_eq!(
            e(serde_json::json!({"field": "n", "data_type": "int64",
                "range": {"start": 0, "end": 100, "interval": 10}})),
            "RANGE_BUCKET(`n`, GENERATE_ARRAY(0, 100, 10))"
        );
        let int = p(serde_json::json!({"field": "n", "data_type": "int64",
            "range": {"start": 0, "end": 100, "interval": 10}}))
        .expect("ok")
        .expect("some");
        // The DDL buckets; the replacement compares the values themselves.
        assert_eq!(int.value(Some("T")), "T.`n`");
        let message = |c: Json| p(c).expect_err("an error").to_string();
        assert!(message(serde_json::json!({"data_type": "date"})).contains("needs `field:`"));
        assert!(
            message(serde_json::json!({"field": "n", "data_type": "int64"}))
                .contains("needs `range:`")
        );
        assert!(
            message(serde_json::json!({"field": "d", "data_type": "string"}))
                .contains("`data_type` must be")
        );
    }

    #[test]
    fn cluster_by_takes_one_to_four_columns() {
        let c = |v: Json| cluster_by(&node(serde_json::json!({ "cluster_by": v })));
        assert_eq!(
            c(Json::from("a")).expect("ok"),
            Some(vec!["`a`".to_owned()])
        );
        assert!(c(serde_json::json!(["a", "b", "c", "d", "e"])).is_err());
        assert!(c(serde_json::json!([1])).is_err());
    }

    #[test]
    fn seed_values_become_typed_literals() {
        assert_eq!(literal("12", "INT64"), "12");
        assert_eq!(literal("1.5", "FLOAT64"), "1.5");
        assert_eq!(literal("NaN", "FLOAT64"), "CAST('NaN' AS FLOAT64)");
        assert_eq!(literal("2024-09-01", "DATE"), "DATE '2024-09-01'");
        assert_eq!(literal("O'Brien", "STRING"), "'O\\'Brien'");
        assert_eq!(literal("0a0b", "BYTES"), "FROM_HEX('0a0b')");
    }

    #[tokio::test]
    async fn job_rows_become_arrow_with_the_embedded_types() {
        let column = |name: &str, t: &str| rainbow_bigquery::Column {
            name: name.into(),
            data_type: t.into(),
        };
        let result = JobResult {
            columns: vec![
                column("n", "INT64"),
                column("x", "FLOAT64"),
                column("d", "DATE"),
                column("amount", "NUMERIC"),
                column("tags", "ARRAY<STRING>"),
                column("raw", "BYTES"),
            ],
            rows: vec![
                vec![
                    Json::from(1),
                    Json::from("-Infinity"),
                    Json::from("2024-01-02"),
                    Json::from("2.25"),
                    serde_json::json!(["a"]),
                    Json::from("AAAA"),
                ],
                vec![
                    Json::Null,
                    Json::from(0.5),
                    Json::Null,
                    Json::Null,
                    Json::Null,
                    Json::Null,
                ],
            ],
            ..Default::default()
        };
        let (schema, batches) = arrow_batches(&result, "t").await.expect("batches");
        let types: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| f.data_type().to_string())
            .collect();
        assert_eq!(
            types,
            [
                "Int64",
                "Float64",
                "Date32",
                "Decimal128(38, 9)",
                "Utf8",
                "Binary"
            ]
        );
        let text =
            rainbow_warehouse::datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                .expect("format")
                .to_string();
        assert!(
            text.contains("| 1 | -inf | 2024-01-02 | 2.250000000 | [\"a\"] | 000000 |"),
            "{text}"
        );
    }

    #[test]
    fn job_errors_give_the_compiled_sqls_line() {
        let job = |position| BigQueryError::Job {
            context: "models/m.sql (compiled SQL)".into(),
            job_id: "rainbow_1".into(),
            reason: "invalidQuery".into(),
            message: "Unrecognized name: x at [5:3]".into(),
            position,
        };
        // Two lines of DDL in front of the model's SQL: BigQuery's line 5 is the model's 3.
        let text = located(job(Some((5, 3))), "", 2, None).to_string();
        assert!(
            text.starts_with("models/m.sql (compiled SQL) line 3 column 3: BigQuery job rainbow_1 failed (invalidQuery)"),
            "{text}"
        );
        // A position inside the DDL itself stays as BigQuery gave it.
        let text = located(job(Some((1, 8))), "", 2, None).to_string();
        assert!(text.contains("line 1 column 8"), "{text}");
    }

    #[test]
    fn string_literals_escape_quotes_and_controls() {
        assert_eq!(string_literal("it's a \\ b\n"), "'it\\'s a \\\\ b\\n'");
    }
}
