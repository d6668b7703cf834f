//! dbt snapshots: SCD type 2 tables kept by comparing each run's snapshot query with the
//! current rows (dbt's `timestamp` and `check` strategies, `hard_deletes`
//! ignore / invalidate / new_record, `snapshot_meta_column_names`, `dbt_valid_to_current`, and
//! the Rainbow extension `dbt_is_current`). Source: dbt's snapshot documentation.

use rainbow_warehouse::datafusion::arrow::datatypes::DataType;
use rainbow_warehouse::{Warehouse, WriteMode};
use serde_json::Value as Json;

use crate::compile::Node;
use crate::error::Result;
use crate::materialize::{config_error, unique_key};

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

pub(crate) fn q(name: &str) -> String {
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
        // The check strategy also takes `updated_at` for its validity when given (dbt).
        (_, Some(u)) => cast(&format!("__rb_q.{}", q(u))),
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
    let row_changed = match (&cfg.strategy[..], &cfg.check_cols) {
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
    // A version changes only when the source still has the row (a missing row is a hard
    // delete, not a change to NULLs); with `new_record`, a row back after its deletion marker
    // is a change whatever its values (dbt's snapshot_staging_table: `row_changed or
    // dbt_is_deleted`).
    let changed = if new_record {
        format!(
            "(src.{first_key} IS NOT NULL AND ({row_changed} OR COALESCE(cur.{}, FALSE)))",
            q(&cfg.is_deleted)
        )
    } else {
        format!("(src.{first_key} IS NOT NULL AND {row_changed})")
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

/// Every unique_key column is a column of the snapshot query.
pub(crate) fn check_keys(node: &Node, cfg: &SnapshotConfig, columns: &[String]) -> Result<()> {
    match cfg.keys.iter().find(|k| !columns.contains(k)) {
        Some(key) => Err(config_error(
            node,
            "unique_key",
            format!("`{key}` is not a column of the snapshot query"),
        )),
        None => Ok(()),
    }
}

/// The SQL type of the validity columns: the `updated_at` column's (`DATE`, `TIMESTAMP`, else
/// `DATETIME`; `columns` gives each query column's), `TIMESTAMP` without one.
pub(crate) fn validity_type(
    node: &Node,
    cfg: &SnapshotConfig,
    columns: &[(String, &'static str)],
) -> Result<&'static str> {
    match &cfg.updated_at {
        Some(u) => columns
            .iter()
            .find(|(c, _)| c == u)
            .map(|(_, t)| *t)
            .ok_or_else(|| {
                config_error(
                    node,
                    "updated_at",
                    format!("`{u}` is not a column of the snapshot query"),
                )
            }),
        None => Ok("TIMESTAMP"),
    }
}

/// The query counting unique_key values that appear more than once in the snapshot query.
pub(crate) fn duplicate_keys_sql(cfg: &SnapshotConfig, query: &str) -> String {
    let keys = cfg.keys.iter().map(|k| q(k)).collect::<Vec<_>>().join(", ");
    format!(
        "SELECT COUNT(*) FROM (SELECT {keys} FROM ({query}) AS s GROUP BY {keys} HAVING COUNT(*) > 1) AS d"
    )
}

/// Refuses a snapshot whose query repeats `dup` keys.
pub(crate) fn check_duplicates(node: &Node, dup: i64) -> Result<()> {
    if dup > 0 {
        return Err(config_error(
            node,
            "unique_key",
            format!("{dup} unique_key value(s) appear more than once in the snapshot query"),
        ));
    }
    Ok(())
}

/// The snapshot's time (the run's start) as text of the validity columns' type.
pub(crate) fn snapshot_time(run_started_at: &str, time_type: &str) -> String {
    let now = chrono::DateTime::parse_from_rfc3339(run_started_at)
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_else(|_| chrono::Utc::now());
    if time_type == "DATE" {
        now.format("%Y-%m-%d").to_string()
    } else {
        now.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
    }
}

/// A BigQuery column type as a validity type: `DATE`, `TIMESTAMP`, else `DATETIME`.
pub(crate) fn temporal_of_bigquery(t: &str) -> &'static str {
    match t {
        "DATE" => "DATE",
        "TIMESTAMP" => "TIMESTAMP",
        _ => "DATETIME",
    }
}

/// The snapshot query with the columns it no longer has (`kept`: `CAST(NULL AS T) AS c`) added,
/// so their history stays and new versions hold NULL.
pub(crate) fn with_kept(query: String, kept: &[String]) -> String {
    if kept.is_empty() {
        query
    } else {
        format!(
            "SELECT __rb_kept.*, {} FROM ({query}) AS __rb_kept",
            kept.join(", ")
        )
    }
}

/// The snapshot's metadata columns (those a query column leaving does not concern).
pub(crate) fn meta_columns(cfg: &SnapshotConfig) -> Vec<&String> {
    let mut meta = vec![
        &cfg.scd_id,
        &cfg.updated_at_column,
        &cfg.valid_from,
        &cfg.valid_to,
        &cfg.is_deleted,
    ];
    meta.extend(cfg.is_current.as_ref());
    meta
}

pub(crate) async fn snapshot(
    warehouse: &Warehouse,
    node: &Node,
    run_started_at: &str,
) -> Result<crate::materialize::Built> {
    let cfg = SnapshotConfig::from_node(node)?;
    let query = node.compiled.clone().unwrap_or_default();
    let context = crate::materialize::compiled_context(node);
    let plan = warehouse.plan(&query, &context).await?;
    let source_columns: Vec<String> = plan
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    check_keys(node, &cfg, &source_columns)?;
    let types: Vec<(String, &str)> = plan
        .schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), temporal_sql(f.data_type())))
        .collect();
    let time_type = validity_type(node, &cfg, &types)?;
    let dup = warehouse
        .count(&duplicate_keys_sql(&cfg, &query), &context)
        .await?;
    check_duplicates(node, dup)?;
    let now_text = snapshot_time(run_started_at, time_type);
    let (schema, name) = (node.schema.as_str(), node.relation.as_str());
    let existing = (warehouse.kind(schema, name) == Some(rainbow_warehouse::RelationKind::Table))
        .then(|| format!("{schema}.{name}"));
    let (mut query, mut source_columns) = (query, source_columns);
    if existing.is_some() {
        add_new_columns(warehouse, node, plan.schema().as_arrow()).await?;
        // A column the source no longer has stays in the snapshot (NULL in new versions), as
        // in dbt: its history is not dropped.
        let table = warehouse.schema_of(schema, name).await?;
        let meta = meta_columns(&cfg);
        let mut kept = Vec::new();
        for f in table.fields() {
            let c = f.name();
            if source_columns.contains(c) || meta.contains(&c) {
                continue;
            }
            let t = crate::unit_tests::bigquery_type(f.data_type()).ok_or_else(|| {
                config_error(
                    node,
                    "snapshot",
                    format!(
                        "column `{c}` left the query and its type {} cannot be kept",
                        f.data_type()
                    ),
                )
            })?;
            kept.push(format!("CAST(NULL AS {t}) AS {}", q(c)));
            source_columns.push(c.clone());
        }
        query = with_kept(query, &kept);
    }
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
    Ok(crate::materialize::Built {
        message: format!("SNAPSHOT {rows}"),
        rows: Some(rows as u64),
    })
}

/// Columns the snapshot query has and the snapshot table lacks are added to it (NULL in its
/// existing rows), as dbt does before comparing: one Delta commit, only when there are some.
async fn add_new_columns(
    warehouse: &Warehouse,
    node: &Node,
    source: &rainbow_warehouse::datafusion::arrow::datatypes::Schema,
) -> Result<()> {
    let table = warehouse.schema_of(&node.schema, &node.relation).await?;
    let added: Vec<_> = source
        .fields()
        .iter()
        .filter(|f| table.field_with_name(f.name()).is_err())
        .collect();
    if added.is_empty() {
        return Ok(());
    }
    let added: Vec<_> = added.into_iter().map(|f| f.as_ref().clone()).collect();
    crate::schema_change::add_columns(warehouse, node, &table, &added).await
}
