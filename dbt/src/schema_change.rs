//! `on_schema_change` for incremental models: how the model's columns differ from its table's
//! ([`SchemaChanges`]), the table evolved as the mode says ([`apply`]), and the model's rows
//! shaped to the table for each strategy ([`Shaped`]).
//!
//! Modes, as dbt documents them (docs.getdbt.com, "Incremental models: what if the columns of
//! my incremental model change?"), with one rule of Rainbow's on top — no mode loses a value
//! silently:
//! - `ignore` (default): a new column is not added (dbt's documented behaviour; the build
//!   message and a warning name it); a column the model no longer has fails the build, as in
//!   dbt;
//! - `fail`: any difference fails the build, naming the columns;
//! - `append_new_columns`: new columns are added to the table (old rows NULL); columns the
//!   model no longer has stay (NULL in new rows; a merge leaves them as they are);
//! - `sync_all_columns`: the table takes the model's columns: new ones added, missing ones
//!   dropped, changed types converted (refused if an existing value does not convert back to
//!   itself).
//!
//! A type change is one the model's values cannot be written into the table's column without
//! loss (an INT64 model column into a FLOAT64 table column is none; a STRING into an INT64
//! is). Only `sync_all_columns` changes a column's type; every other mode refuses, naming it.

use std::sync::Arc;

use rainbow_warehouse::datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use rainbow_warehouse::datafusion::common::{ScalarValue, TableReference};
use rainbow_warehouse::datafusion::logical_expr::{Expr, cast, ident, lit, try_cast};
use rainbow_warehouse::datafusion::prelude::DataFrame;
use rainbow_warehouse::error::WarehouseError;
use rainbow_warehouse::{Warehouse, WriteMode};

use crate::compile::Node;
use crate::error::Result;
use crate::materialize::config_error;

/// The four modes of dbt's `on_schema_change`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `ignore`.
    Ignore,
    /// `fail`.
    Fail,
    /// `append_new_columns`.
    AppendNewColumns,
    /// `sync_all_columns`.
    SyncAllColumns,
}

impl Mode {
    /// The node's `on_schema_change` (default `ignore`). Errors: an unknown mode.
    pub(crate) fn of(node: &Node) -> Result<Self> {
        match node
            .config
            .get("on_schema_change")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("ignore")
        {
            "ignore" => Ok(Mode::Ignore),
            "fail" => Ok(Mode::Fail),
            "append_new_columns" => Ok(Mode::AppendNewColumns),
            "sync_all_columns" => Ok(Mode::SyncAllColumns),
            other => Err(config_error(
                node,
                "on_schema_change",
                format!(
                    "`{other}` is not one of ignore, fail, append_new_columns, sync_all_columns"
                ),
            )),
        }
    }
}

/// How the model's columns differ from the table's.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct SchemaChanges {
    /// The model's columns the table lacks (model order).
    pub(crate) added: Vec<Field>,
    /// The table's columns the model lacks (table order).
    pub(crate) removed: Vec<String>,
    /// Columns whose model type cannot be written into the table's type without loss:
    /// (name, table type, model type).
    pub(crate) changed: Vec<(String, DataType, DataType)>,
}

impl SchemaChanges {
    /// Compares the model's schema with the table's.
    pub(crate) fn between(model: &Schema, table: &Schema) -> Self {
        let mut changes = SchemaChanges::default();
        for field in model.fields() {
            match table.field_with_name(field.name()) {
                Err(_) => changes.added.push(field.as_ref().clone()),
                Ok(existing) if !fits(field.data_type(), existing.data_type()) => {
                    changes.changed.push((
                        field.name().clone(),
                        existing.data_type().clone(),
                        field.data_type().clone(),
                    ));
                }
                Ok(_) => {}
            }
        }
        changes.removed = table
            .fields()
            .iter()
            .filter(|f| model.field_with_name(f.name()).is_err())
            .map(|f| f.name().clone())
            .collect();
        changes
    }

    fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.added.is_empty() {
            parts.push(format!(
                "new columns {}",
                names(self.added.iter().map(|f| f.name()))
            ));
        }
        if !self.removed.is_empty() {
            parts.push(format!(
                "the table's columns {} are no longer in the model",
                names(self.removed.iter())
            ));
        }
        for (name, table, model) in &self.changed {
            parts.push(format!(
                "column `{name}` is {model} in the model but {table} in the table"
            ));
        }
        parts.join("; ")
    }
}

/// What `on_schema_change` makes of a model's differences with its table.
#[derive(Debug, PartialEq)]
pub(crate) enum Decision {
    /// Written into the table as it is (with a note for the build's message).
    Keep(Option<String>),
    /// The table takes the model's new columns (`append_new_columns`), or all its columns and
    /// types (`sync_all_columns`), before the rows are written.
    Evolve,
}

/// The mode's answer to `changes`. Errors: the mode refuses them (naming every column).
pub(crate) fn decide(node: &Node, mode: Mode, changes: &SchemaChanges) -> Result<Decision> {
    let refuse = |why: String| Err(config_error(node, "on_schema_change", why));
    if changes.is_empty() {
        return Ok(Decision::Keep(None));
    }
    match mode {
        Mode::Fail => refuse(format!(
            "{} and on_schema_change is fail",
            changes.describe()
        )),
        Mode::Ignore | Mode::AppendNewColumns if !changes.changed.is_empty() => refuse(format!(
            "{}: only sync_all_columns changes a column's type (or run with --full-refresh)",
            SchemaChanges {
                changed: changes.changed.clone(),
                ..Default::default()
            }
            .describe()
        )),
        Mode::Ignore if !changes.removed.is_empty() => refuse(format!(
            "the table's columns {} are no longer in the model and on_schema_change is ignore (as in dbt, the build fails): use append_new_columns or sync_all_columns, or --full-refresh",
            names(changes.removed.iter())
        )),
        Mode::Ignore => {
            let ignored = names(changes.added.iter().map(|f| f.name()));
            tracing::warn!(
                "{}: new columns {ignored} are not written: on_schema_change is ignore",
                node.path
            );
            Ok(Decision::Keep(Some(format!(
                "new columns {ignored} ignored (on_schema_change)"
            ))))
        }
        Mode::AppendNewColumns | Mode::SyncAllColumns => Ok(Decision::Evolve),
    }
}

fn names<'a>(it: impl Iterator<Item = &'a String>) -> String {
    it.map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

/// The type as stored (what the warehouse's writer makes of it: string and binary layouts
/// are one type, timestamps are microseconds in UTC, unsigned integers INT64).
fn stored(t: &DataType) -> DataType {
    match t {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        DataType::Timestamp(_, tz) => {
            DataType::Timestamp(TimeUnit::Microsecond, tz.as_ref().map(|_| "UTC".into()))
        }
        DataType::Null
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => DataType::Int64,
        DataType::Dictionary(_, value) => stored(value),
        other => other.clone(),
    }
}

/// Whether every value of type `from` is written into a column of type `to` unchanged.
fn fits(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    let (from, to) = (stored(from), stored(to));
    if from == to {
        return true;
    }
    match (&from, &to) {
        (Int8, Int16 | Int32 | Int64) | (Int16, Int32 | Int64) | (Int32, Int64) => true,
        (Int8 | Int16 | Int32, Float64) | (Float32, Float64) => true,
        (Int8 | Int16 | Int32 | Int64, Decimal128(p, s)) => i32::from(*p) - i32::from(*s) >= 19,
        (Decimal128(p1, s1), Decimal128(p2, s2)) => {
            s2 >= s1 && (*p2 as i16 - *s2 as i16) >= (*p1 as i16 - *s1 as i16)
        }
        _ => false,
    }
}

/// The model's rows shaped for the table after [`apply`].
pub(crate) struct Shaped {
    /// Every column of the table in its order and type; the table's columns the model lacks
    /// are NULL (for append and delete+insert).
    pub(crate) full: DataFrame,
    /// Only the model's columns the table has, in the table's types (for merge: the table's
    /// other columns keep their values in matched rows).
    pub(crate) own: DataFrame,
    /// What the build message adds (a new column `ignore` left out), if anything.
    pub(crate) note: Option<String>,
}

/// Applies `mode` to the table `schema.name` for the model's rows `model`: evolves the table
/// (one Delta commit, only when `append_new_columns`/`sync_all_columns` find a difference) and
/// shapes the rows. Errors: `fail` with any difference, a column the model lost under
/// `ignore`, a type change outside `sync_all_columns`, an existing value `sync_all_columns`
/// cannot convert, or the warehouse's.
pub(crate) async fn apply(
    warehouse: &Warehouse,
    node: &Node,
    mode: Mode,
    model: DataFrame,
) -> Result<Shaped> {
    let (schema, name) = (node.schema.as_str(), node.relation.as_str());
    let table = warehouse.schema_of(schema, name).await?;
    let model_schema = Arc::new(model.schema().as_arrow().clone());
    let changes = SchemaChanges::between(&model_schema, &table);
    let (table, note) = match decide(node, mode, &changes)? {
        Decision::Keep(note) => (table, note),
        Decision::Evolve => (
            evolve(warehouse, node, mode, &model_schema, &table, &changes).await?,
            None,
        ),
    };
    let what = format!("{} (on_schema_change)", node.path);
    let full: Vec<Expr> = table
        .fields()
        .iter()
        .map(|f| match model_schema.field_with_name(f.name()) {
            Ok(_) => cast(ident(f.name()), f.data_type().clone()).alias(f.name()),
            Err(_) => typed_null(f.data_type()).alias(f.name()),
        })
        .collect();
    let own: Vec<Expr> = table
        .fields()
        .iter()
        .filter(|f| model_schema.field_with_name(f.name()).is_ok())
        .map(|f| cast(ident(f.name()), f.data_type().clone()).alias(f.name()))
        .collect();
    Ok(Shaped {
        full: model
            .clone()
            .select(full)
            .map_err(WarehouseError::datafusion(&what))?,
        own: model
            .select(own)
            .map_err(WarehouseError::datafusion(&what))?,
        note,
    })
}

fn typed_null(t: &DataType) -> Expr {
    lit(ScalarValue::try_from(t).unwrap_or(ScalarValue::Null))
}

/// Rewrites the table with the columns `mode` gives it; returns its new schema.
async fn evolve(
    warehouse: &Warehouse,
    node: &Node,
    mode: Mode,
    model: &Schema,
    table: &Schema,
    changes: &SchemaChanges,
) -> Result<Arc<Schema>> {
    let (schema, name) = (node.schema.as_str(), node.relation.as_str());
    let what = format!("{} (on_schema_change {mode:?})", node.path);
    let current = warehouse
        .context()
        .table(TableReference::partial(schema, name))
        .await
        .map_err(WarehouseError::datafusion(&what))?;
    let exprs: Vec<Expr> = match mode {
        // The table's columns as they are, then the new ones.
        Mode::AppendNewColumns => appended(table, &changes.added),
        // The model's columns: kept, converted, or new.
        _ => model
            .fields()
            .iter()
            .map(|f| match table.field_with_name(f.name()) {
                Err(_) => typed_null(f.data_type()).alias(f.name()),
                Ok(_) if changes.changed.iter().any(|(c, _, _)| c == f.name()) => {
                    cast(ident(f.name()), f.data_type().clone()).alias(f.name())
                }
                Ok(_) => ident(f.name()),
            })
            .collect(),
    };
    if mode == Mode::SyncAllColumns {
        for (column, from, to) in &changes.changed {
            // A value converts if it comes back to itself: no overflow, no rounding, no text
            // that is not a number.
            let converted = try_cast(ident(column), to.clone());
            let lost = current
                .clone()
                .filter(
                    ident(column).is_not_null().and(
                        converted
                            .clone()
                            .is_null()
                            .or(cast(converted, from.clone()).not_eq(ident(column))),
                    ),
                )
                .map_err(WarehouseError::datafusion(&what))?
                .count()
                .await
                .map_err(WarehouseError::datafusion(&what))?;
            if lost > 0 {
                return Err(config_error(
                    node,
                    "on_schema_change",
                    format!(
                        "column `{column}` cannot change from {from} to {to}: {lost} existing value(s) do not convert (run with --full-refresh to rebuild it)"
                    ),
                ));
            }
        }
    }
    rewrite(warehouse, node, current, exprs, &what).await?;
    tracing::info!("{}: {} ({mode:?})", node.path, changes.describe());
    Ok(warehouse.schema_of(schema, name).await?)
}

/// The table's columns as they are, then `added` as NULLs of their types.
fn appended(table: &Schema, added: &[Field]) -> Vec<Expr> {
    table
        .fields()
        .iter()
        .map(|f| ident(f.name()))
        .chain(
            added
                .iter()
                .map(|f| typed_null(f.data_type()).alias(f.name())),
        )
        .collect()
}

/// Adds `added` to the node's table (NULL in its rows): one Delta commit. A snapshot's new
/// source columns, as `append_new_columns` adds a model's.
pub(crate) async fn add_columns(
    warehouse: &Warehouse,
    node: &Node,
    table: &Schema,
    added: &[Field],
) -> Result<()> {
    let what = format!("{} (new columns)", node.path);
    let current = warehouse
        .context()
        .table(TableReference::partial(
            node.schema.as_str(),
            node.relation.as_str(),
        ))
        .await
        .map_err(WarehouseError::datafusion(&what))?;
    rewrite(warehouse, node, current, appended(table, added), &what).await
}

/// Replaces the node's table by `exprs` over its current rows, in one commit.
async fn rewrite(
    warehouse: &Warehouse,
    node: &Node,
    current: DataFrame,
    exprs: Vec<Expr>,
    what: &str,
) -> Result<()> {
    let next = current
        .select(exprs)
        .map_err(WarehouseError::datafusion(what))?;
    // The new version reads the current one: collected before the overwrite commits.
    let (_, next) = warehouse.collect_frame(next, what).await?;
    warehouse
        .write_table(&node.schema, &node.relation, next, WriteMode::Replace)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(fields: &[(&str, DataType)]) -> Schema {
        Schema::new(
            fields
                .iter()
                .map(|(n, t)| Field::new(*n, t.clone(), true))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn differences_are_named_and_lossless_widening_is_none() {
        let table = schema(&[
            ("id", DataType::Int64),
            ("v", DataType::Utf8),
            ("x", DataType::Float64),
        ]);
        let model = schema(&[
            ("id", DataType::Utf8View),
            ("x", DataType::Int32),
            ("w", DataType::Utf8),
        ]);
        let c = SchemaChanges::between(&model, &table);
        assert_eq!(
            c.added
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>(),
            ["w"]
        );
        assert_eq!(c.removed, ["v"]);
        assert_eq!(
            c.changed,
            [("id".to_owned(), DataType::Int64, DataType::Utf8View)]
        );
        assert_eq!(
            SchemaChanges::between(&table, &table),
            SchemaChanges::default()
        );
        assert!(fits(&DataType::Utf8View, &DataType::Utf8));
        assert!(!fits(&DataType::Float64, &DataType::Int64));
        assert!(!fits(&DataType::Int64, &DataType::Int32));
        assert!(fits(
            &DataType::Decimal128(10, 2),
            &DataType::Decimal128(38, 9)
        ));
        assert!(!fits(
            &DataType::Decimal128(38, 9),
            &DataType::Decimal128(10, 2)
        ));
    }
}
