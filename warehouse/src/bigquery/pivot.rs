//! BigQuery's `PIVOT` and `UNPIVOT` operators, rewritten into queries DataFusion plans.
//! <https://cloud.google.com/bigquery/docs/reference/standard-sql/query-syntax#pivot_operator>
//! <https://cloud.google.com/bigquery/docs/reference/standard-sql/query-syntax#unpivot_operator>
//!
//! - `t PIVOT(agg(x) [AS a], … FOR col IN (v [AS name], …)) [AS alias]` groups `t` by every
//!   column not used by the aggregates or the pivot column (`SELECT * EXCEPT (…) … GROUP BY
//!   ALL`) and computes, per value, the aggregate over the rows whose pivot column equals it
//!   (`agg(x) FILTER (WHERE col = v)`). Columns are named by the value (`'Q1'` → `Q1`, `1` →
//!   `_1`, `true` → `true`, NULL → `NULL`) or its alias, prefixed by the aggregate's alias
//!   (`a_Q1`) when it has one; with several aggregates each must have an alias.
//! - `t UNPIVOT [INCLUDE NULLS] (value FOR name IN (c1 [AS 'x'], …)) [AS alias]` is a UNION ALL
//!   of `SELECT * EXCEPT (c1, …), ci AS value, 'ci' AS name FROM t`, without the rows whose
//!   value is NULL unless `INCLUDE NULLS`.
//!
//! Both run after the table's own expressions were rewritten (a post-visit), so the
//! aggregates are already BigQuery's meaning.

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, ExprWithAlias, Ident, NullInclusion, PivotValueSource, Query, SelectItem,
    SetExpr, Statement, TableAlias, TableFactor, UnaryOperator, Value, Visit, Visitor,
};
use datafusion::sql::sqlparser::dialect::BigQueryDialect;
use datafusion::sql::sqlparser::parser::Parser;
use std::ops::ControlFlow;

/// Rewrites a `PIVOT` or `UNPIVOT` table factor; `None` for any other factor.
pub(crate) fn rewrite(factor: &TableFactor) -> Result<Option<TableFactor>, String> {
    match factor {
        TableFactor::Pivot {
            table,
            aggregate_functions,
            value_column,
            value_source,
            default_on_null,
            alias,
        } => {
            if default_on_null.is_some() {
                return Err("PIVOT … DEFAULT ON NULL is not BigQuery syntax".into());
            }
            pivot(
                table,
                aggregate_functions,
                value_column,
                value_source,
                alias,
            )
            .map(Some)
        }
        TableFactor::Unpivot {
            table,
            value,
            name,
            columns,
            null_inclusion,
            alias,
        } => unpivot(
            table,
            value,
            name,
            columns,
            matches!(null_inclusion, Some(NullInclusion::IncludeNulls)),
            alias,
        )
        .map(Some),
        _ => Ok(None),
    }
}

fn pivot(
    table: &TableFactor,
    aggregates: &[ExprWithAlias],
    value_column: &[Expr],
    values: &PivotValueSource,
    alias: &Option<TableAlias>,
) -> Result<TableFactor, String> {
    let [column] = value_column else {
        return Err("PIVOT takes one pivot column (FOR column IN (…))".into());
    };
    let PivotValueSource::List(values) = values else {
        return Err("PIVOT takes a list of values (IN ('a', 'b' AS b, …))".into());
    };
    if aggregates.is_empty() || values.is_empty() {
        return Err("PIVOT needs an aggregate and at least one value".into());
    }
    if aggregates.len() > 1 && aggregates.iter().any(|a| a.alias.is_none()) {
        return Err(
            "PIVOT with several aggregates needs an alias for each (SUM(x) AS total, …)".into(),
        );
    }
    // The grouping columns: every column the aggregates and the pivot column do not use.
    let mut used = Vec::new();
    for aggregate in aggregates {
        columns_in(&aggregate.expr, &mut used);
    }
    columns_in(column, &mut used);
    used.sort();
    used.dedup();
    // Per value, every aggregate: `total_Q1, count_Q1, total_Q2, …` (BigQuery's order).
    let mut projection = Vec::new();
    for value in values {
        let value_name = value_name(value)?;
        for aggregate in aggregates {
            let Expr::Function(function) = &aggregate.expr else {
                return Err(format!(
                    "PIVOT takes aggregate function calls, not `{}`",
                    aggregate.expr
                ));
            };
            let name = match &aggregate.alias {
                Some(a) => format!("{}_{value_name}", a.value),
                None => value_name.clone(),
            };
            let matches = Expr::BinaryOp {
                left: Box::new(column.clone()),
                op: BinaryOperator::Eq,
                right: Box::new(value.expr.clone()),
            };
            let mut filtered = function.clone();
            filtered.filter = Some(Box::new(match filtered.filter.take() {
                Some(existing) => Expr::BinaryOp {
                    left: existing,
                    op: BinaryOperator::And,
                    right: Box::new(matches),
                },
                None => matches,
            }));
            // Column names are case-insensitive in BigQuery; the warehouse keeps them lowercase.
            projection.push(SelectItem::ExprWithAlias {
                expr: Expr::Function(filtered),
                alias: Ident::with_quote('`', name.to_lowercase()),
            });
        }
    }
    let except = used
        .iter()
        .map(|c| Ident::with_quote('`', c).to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let mut query = template(&format!(
        "SELECT * EXCEPT ({except}) FROM __rainbow_pivot_input GROUP BY ALL"
    ))?;
    let select = select_of(&mut query)?;
    select.projection.extend(projection);
    replace_input(select, table)?;
    Ok(derived(query, alias.clone()))
}

fn unpivot(
    table: &TableFactor,
    value: &Expr,
    name: &Ident,
    columns: &[ExprWithAlias],
    include_nulls: bool,
    alias: &Option<TableAlias>,
) -> Result<TableFactor, String> {
    let Expr::Identifier(value) = value else {
        return Err(
            "UNPIVOT into several value columns is not supported by the embedded warehouse yet"
                .into(),
        );
    };
    let mut names = Vec::new();
    for column in columns {
        let Expr::Identifier(ident) = &column.expr else {
            return Err(format!(
                "UNPIVOT takes column names, not `{}` (several columns per row are not supported yet)",
                column.expr
            ));
        };
        // The name of the row: the alias (a string or an integer literal) or the column's.
        let label = match &column.alias {
            Some(a) if a.quote_style == Some('\'') || a.quote_style == Some('"') => {
                Value::SingleQuotedString(a.value.clone()).to_string()
            }
            Some(a) if a.value.parse::<i64>().is_ok() => a.value.clone(),
            Some(a) => {
                return Err(format!(
                    "UNPIVOT: the alias `{a}` must be a string or an integer literal"
                ));
            }
            None => Value::SingleQuotedString(ident.value.clone()).to_string(),
        };
        names.push((ident.clone(), label));
    }
    let except = names
        .iter()
        .map(|(c, _)| Ident::with_quote('`', normalized(c)).to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let branches = names
        .iter()
        .map(|(column, label)| {
            format!(
                "SELECT * EXCEPT ({except}), {column} AS {value}, {label} AS {name} FROM __rainbow_pivot_input"
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let filter = if include_nulls {
        String::new()
    } else {
        format!(" WHERE {value} IS NOT NULL")
    };
    let mut query = template(&format!("SELECT * FROM ({branches}){filter}"))?;
    // Put the input table into every branch.
    let SetExpr::Select(outer) = query.body.as_mut() else {
        return Err("UNPIVOT could not be rewritten".into());
    };
    let Some(TableFactor::Derived { subquery, .. }) =
        outer.from.first_mut().map(|f| &mut f.relation)
    else {
        return Err("UNPIVOT could not be rewritten".into());
    };
    replace_inputs(subquery.body.as_mut(), table)?;
    Ok(derived(query, alias.clone()))
}

/// The column names an expression reads (the last part of qualified names).
fn columns_in(expr: &Expr, out: &mut Vec<String>) {
    struct Columns<'a>(&'a mut Vec<String>);
    impl Visitor for Columns<'_> {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            match expr {
                Expr::Identifier(i) => self.0.push(normalized(i)),
                Expr::CompoundIdentifier(parts) => {
                    if let Some(last) = parts.last() {
                        self.0.push(normalized(last));
                    }
                }
                _ => {}
            }
            ControlFlow::Continue(())
        }
    }
    let _ = expr.visit(&mut Columns(out));
}

/// The name DataFusion resolves an identifier to: unquoted names are lowercased.
fn normalized(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

/// The column name BigQuery gives a pivot value without an alias.
fn value_name(value: &ExprWithAlias) -> Result<String, String> {
    if let Some(alias) = &value.alias {
        return Ok(alias.value.clone());
    }
    if let Expr::UnaryOp {
        op: UnaryOperator::Minus,
        expr,
    } = &value.expr
        && let Expr::Value(v) = expr.as_ref()
        && let Value::Number(n, _) = &v.value
        && n.chars().all(|c| c.is_ascii_digit())
    {
        return Ok(format!("minus_{n}"));
    }
    let literal = match &value.expr {
        Expr::Value(v) => &v.value,
        _ => &Value::Placeholder(String::new()),
    };
    match literal {
        Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Ok(s.clone()),
        Value::Number(n, _) if n.chars().all(|c| c.is_ascii_digit()) => Ok(format!("_{n}")),
        Value::Boolean(b) => Ok(b.to_string()),
        Value::Null => Ok("NULL".into()),
        _ => Err(format!(
            "PIVOT: the value `{}` needs an alias (IN ({} AS name))",
            value.expr, value.expr
        )),
    }
}

fn template(sql: &str) -> Result<Box<Query>, String> {
    match Parser::parse_sql(&BigQueryDialect, sql)
        .map_err(|e| format!("PIVOT/UNPIVOT could not be rewritten: {e}"))?
        .pop()
    {
        Some(Statement::Query(query)) => Ok(query),
        _ => Err("PIVOT/UNPIVOT could not be rewritten".into()),
    }
}

fn select_of(query: &mut Query) -> Result<&mut datafusion::sql::sqlparser::ast::Select, String> {
    match query.body.as_mut() {
        SetExpr::Select(select) => Ok(select),
        _ => Err("PIVOT could not be rewritten".into()),
    }
}

/// Puts `table` where the template reads `__rainbow_pivot_input`.
fn replace_input(
    select: &mut datafusion::sql::sqlparser::ast::Select,
    table: &TableFactor,
) -> Result<(), String> {
    match select.from.first_mut() {
        Some(from) => {
            from.relation = table.clone();
            Ok(())
        }
        None => Err("PIVOT/UNPIVOT could not be rewritten".into()),
    }
}

fn replace_inputs(body: &mut SetExpr, table: &TableFactor) -> Result<(), String> {
    match body {
        SetExpr::Select(select) => replace_input(select, table),
        SetExpr::SetOperation { left, right, .. } => {
            replace_inputs(left, table)?;
            replace_inputs(right, table)
        }
        _ => Err("UNPIVOT could not be rewritten".into()),
    }
}

fn derived(subquery: Box<Query>, alias: Option<TableAlias>) -> TableFactor {
    TableFactor::Derived {
        lateral: false,
        subquery,
        alias,
        sample: None,
    }
}
