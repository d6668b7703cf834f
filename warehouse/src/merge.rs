//! BigQuery's `MERGE` statement, executed as one Delta Lake merge commit.
//!
//! `MERGE [INTO] target [AS t] USING source|(query) [AS s] ON cond` with any of
//! `WHEN MATCHED [AND p] THEN UPDATE SET …|DELETE`, `WHEN NOT MATCHED [BY TARGET] [AND p] THEN
//! INSERT (cols) VALUES (…)|INSERT ROW`, `WHEN NOT MATCHED BY SOURCE [AND p] THEN UPDATE|DELETE`.

use std::sync::Arc;

use datafusion::sql::sqlparser::ast::{
    AssignmentTarget, Merge, MergeAction, MergeClauseKind, MergeInsertKind, ObjectName,
    ObjectNamePart, TableFactor,
};

use crate::error::{Result, WarehouseError};
use crate::warehouse::Warehouse;

fn unsupported(context: &str, message: impl Into<String>) -> WarehouseError {
    WarehouseError::Unsupported {
        context: context.to_owned(),
        message: message.into(),
    }
}

fn last_part(name: &ObjectName) -> String {
    match name.0.last() {
        Some(ObjectNamePart::Identifier(i)) => i.value.clone(),
        _ => name.to_string(),
    }
}

/// Runs one parsed (and rewritten) `MERGE`.
pub(crate) async fn execute(warehouse: &Warehouse, merge: Merge, context: &str) -> Result<()> {
    let TableFactor::Table {
        name: target_name,
        alias: target_alias,
        ..
    } = &merge.table
    else {
        return Err(unsupported(context, "MERGE target must be a table"));
    };
    let (schema, name) = warehouse.split_name(target_name, context)?;
    let target_alias = target_alias
        .as_ref()
        .map(|a| a.name.value.clone())
        .unwrap_or_else(|| name.clone());
    let (source, source_alias) = match merge.source {
        TableFactor::Table {
            name: source_name,
            alias,
            ..
        } => {
            let df = warehouse
                .dataframe(&format!("SELECT * FROM {source_name}"), context)
                .await?;
            let alias = alias
                .map(|a| a.name.value)
                .unwrap_or_else(|| last_part(&source_name));
            (df, alias)
        }
        TableFactor::Derived {
            subquery, alias, ..
        } => {
            let df = warehouse.query_frame(*subquery, context).await?;
            let alias = alias
                .map(|a| a.name.value)
                .unwrap_or_else(|| "source".to_owned());
            (df, alias)
        }
        _ => {
            return Err(unsupported(
                context,
                "MERGE source must be a table or a subquery",
            ));
        }
    };
    let source_columns: Vec<String> = source
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let table = warehouse.delta(&schema, &name).await?;
    let what = format!("MERGE INTO {schema}.{name}");
    let mut builder = table
        .merge(source, merge.on.to_string())
        .with_source_alias(source_alias.clone())
        .with_target_alias(target_alias)
        .with_session_state(Arc::new(warehouse.context().state()));
    for clause in merge.clauses {
        let predicate = clause.predicate.map(|p| p.to_string());
        builder = match (clause.clause_kind, clause.action) {
            (
                MergeClauseKind::Matched | MergeClauseKind::NotMatchedBySource,
                MergeAction::Update(update),
            ) => {
                let mut sets = Vec::new();
                for a in update.assignments {
                    let AssignmentTarget::ColumnName(column) = a.target else {
                        return Err(unsupported(context, "tuple assignments in MERGE"));
                    };
                    sets.push((last_part(&column), a.value.to_string()));
                }
                let apply = |mut u: deltalake::operations::merge::UpdateBuilder| {
                    if let Some(p) = &predicate {
                        u = u.predicate(p.clone());
                    }
                    for (c, v) in &sets {
                        u = u.update(c.as_str(), v.clone());
                    }
                    u
                };
                if clause.clause_kind == MergeClauseKind::Matched {
                    builder.when_matched_update(apply)
                } else {
                    builder.when_not_matched_by_source_update(apply)
                }
            }
            (
                kind @ (MergeClauseKind::Matched | MergeClauseKind::NotMatchedBySource),
                MergeAction::Delete { .. },
            ) => {
                let apply = |mut d: deltalake::operations::merge::DeleteBuilder| {
                    if let Some(p) = &predicate {
                        d = d.predicate(p.clone());
                    }
                    d
                };
                if kind == MergeClauseKind::Matched {
                    builder.when_matched_delete(apply)
                } else {
                    builder.when_not_matched_by_source_delete(apply)
                }
            }
            (
                MergeClauseKind::NotMatched | MergeClauseKind::NotMatchedByTarget,
                MergeAction::Insert(insert),
            ) => {
                let pairs: Vec<(String, String)> = match insert.kind {
                    MergeInsertKind::Row => source_columns
                        .iter()
                        .map(|c| (c.clone(), format!("{source_alias}.\"{c}\"")))
                        .collect(),
                    MergeInsertKind::Values(values) => {
                        let Some(row) = values.rows.into_iter().next() else {
                            return Err(unsupported(context, "MERGE INSERT without values"));
                        };
                        let columns: Vec<String> = if insert.columns.is_empty() {
                            source_columns.clone()
                        } else {
                            insert.columns.iter().map(last_part).collect()
                        };
                        if columns.len() != row.content.len() {
                            return Err(unsupported(
                                context,
                                format!(
                                    "MERGE INSERT names {} columns but gives {} values",
                                    columns.len(),
                                    row.content.len()
                                ),
                            ));
                        }
                        columns
                            .into_iter()
                            .zip(row.content.iter().map(|v| v.to_string()))
                            .collect()
                    }
                };
                builder.when_not_matched_insert(|mut i| {
                    if let Some(p) = &predicate {
                        i = i.predicate(p.clone());
                    }
                    for (c, v) in &pairs {
                        i = i.set(c.as_str(), v.clone());
                    }
                    i
                })
            }
            (kind, action) => {
                return Err(unsupported(
                    context,
                    format!("MERGE clause `WHEN {kind} THEN {action}` is not valid"),
                ));
            }
        }
        .map_err(WarehouseError::delta(&what))?;
    }
    builder.await.map_err(WarehouseError::delta(&what))?;
    warehouse.refresh(&schema, &name);
    Ok(())
}
