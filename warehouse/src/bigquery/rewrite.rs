//! AST rewrites from BigQuery (GoogleSQL) to what DataFusion plans: functions whose argument
//! order or date-part arguments differ (`DATE_TRUNC(d, MONTH)`, `DATE_ADD(d, INTERVAL 1 DAY)`,
//! `FORMAT_DATE('%A', d)`…) become calls of the `bq_*` UDFs in [`super::functions`];
//! `SAFE_CAST` becomes `TRY_CAST`; `EXTRACT` follows BigQuery's numbering; table names in
//! backticks (`` `project.dataset.table` ``) lose the project part.
//!
//! Types (`INT64`, `NUMERIC`…) are not rewritten here: [`super::planner::BigQueryTypes`]
//! plans them. Integer division is planned by [`super::planner::BigQueryOperators`].

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::helpers::attached_token::AttachedToken;

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, CastKind, DataType, DateTimeField, Expr, Function, FunctionArg,
    FunctionArgExpr, FunctionArgumentList, FunctionArguments, Ident, ObjectName, ObjectNamePart,
    Statement, TableAliasColumnDef, TableFactor, UnaryOperator, Value, VisitMut, VisitorMut,
};

/// Rewrites one parsed statement in place; an error names the construct that has no
/// DataFusion equivalent.
pub(crate) fn rewrite(statement: &mut Statement) -> Result<(), String> {
    match statement.visit(&mut Rewriter) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(message) => Err(message),
    }
}

struct Rewriter;

impl VisitorMut for Rewriter {
    type Break = String;

    fn pre_visit_relation(&mut self, relation: &mut ObjectName) -> ControlFlow<String> {
        *relation = table_name(relation);
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<String> {
        // BigQuery: `UNNEST(arr) AS x` names the element column `x`.
        if let TableFactor::UNNEST {
            alias: Some(alias),
            array_exprs,
            ..
        } = factor
            && alias.columns.is_empty()
            && array_exprs.len() == 1
        {
            alias.columns = vec![TableAliasColumnDef {
                name: alias.name.clone(),
                data_type: None,
            }];
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<String> {
        match rewrite_expr(expr) {
            Ok(Some(new)) => *expr = new,
            Ok(None) => {}
            Err(message) => return ControlFlow::Break(message),
        }
        ControlFlow::Continue(())
    }
}

/// `` `project.dataset.table` `` (one quoted identifier or three parts) -> `dataset.table`.
pub(crate) fn table_name(name: &ObjectName) -> ObjectName {
    let mut parts: Vec<Ident> = Vec::new();
    for part in &name.0 {
        match part {
            ObjectNamePart::Identifier(ident) if ident.quote_style == Some('`') => {
                parts.extend(ident.value.split('.').map(Ident::new));
            }
            ObjectNamePart::Identifier(ident) => parts.push(ident.clone()),
            ObjectNamePart::Function(_) => return name.clone(),
        }
    }
    if parts.len() > 2 {
        parts.drain(..parts.len() - 2);
    }
    ObjectName::from(parts)
}

/// A call of `name(args…)`.
pub(crate) fn call(name: &str, args: Vec<Expr>) -> Expr {
    Expr::Function(Function {
        name: ObjectName::from(vec![Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: args
                .into_iter()
                .map(|e| FunctionArg::Unnamed(FunctionArgExpr::Expr(e)))
                .collect(),
            clauses: Vec::new(),
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: Vec::new(),
    })
}

fn string(text: impl Into<String>) -> Expr {
    Expr::value(Value::SingleQuotedString(text.into()))
}

fn cast(expr: Expr, data_type: DataType) -> Expr {
    Expr::Cast {
        kind: CastKind::Cast,
        expr: Box::new(expr),
        data_type,
        array: false,
        format: None,
    }
}

/// A date part given as an identifier (`MONTH`), a call (`WEEK(MONDAY)`) or a string.
fn part_name(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Identifier(ident) => Some(ident.value.to_uppercase()),
        Expr::Function(_) => Some(expr.to_string().to_uppercase().replace(' ', "")),
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Some(s.to_uppercase()),
            _ => None,
        },
        _ => None,
    }
}

fn field_name(field: &DateTimeField) -> String {
    match field {
        DateTimeField::Dow => "DAYOFWEEK".to_owned(),
        DateTimeField::Doy => "DAYOFYEAR".to_owned(),
        DateTimeField::Years => "YEAR".to_owned(),
        DateTimeField::Months => "MONTH".to_owned(),
        DateTimeField::Weeks => "WEEK".to_owned(),
        DateTimeField::Days => "DAY".to_owned(),
        DateTimeField::Hours => "HOUR".to_owned(),
        DateTimeField::Minutes => "MINUTE".to_owned(),
        DateTimeField::Seconds => "SECOND".to_owned(),
        DateTimeField::Milliseconds => "MILLISECOND".to_owned(),
        DateTimeField::Microseconds => "MICROSECOND".to_owned(),
        other => other.to_string().to_uppercase().replace(' ', ""),
    }
}

fn plain_args(function: &Function) -> Option<Vec<Expr>> {
    match &function.args {
        FunctionArguments::None => Some(Vec::new()),
        FunctionArguments::List(list) => list
            .args
            .iter()
            .map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
                _ => None,
            })
            .collect(),
        FunctionArguments::Subquery(_) => None,
    }
}

/// `INTERVAL n PART` -> `(n, PART)`.
fn interval(expr: &Expr) -> Option<(Expr, String)> {
    match expr {
        Expr::Interval(i) => {
            let part = i.leading_field.as_ref().map(field_name)?;
            Some(((*i.value).clone(), part))
        }
        _ => None,
    }
}

fn arity(name: &str, args: &[Expr], expected: &[usize]) -> Result<(), String> {
    if expected.contains(&args.len()) {
        Ok(())
    } else {
        let want: Vec<String> = expected.iter().map(usize::to_string).collect();
        Err(format!(
            "{name}() takes {} argument(s), got {}",
            want.join(" or "),
            args.len()
        ))
    }
}

/// sqlparser parses the right side of `IS [NOT] DISTINCT FROM` with the lowest precedence, so
/// `a IS DISTINCT FROM b OR c` comes out as `a IS DISTINCT FROM (b OR c)`; SQL (and BigQuery)
/// mean `(a IS DISTINCT FROM b) OR c`. Rotates AND/OR chains out of the right side.
fn distinct_from_precedence(expr: &Expr) -> Option<Expr> {
    let (left, right, negated) = match expr {
        Expr::IsDistinctFrom(l, r) => (l, r, false),
        Expr::IsNotDistinctFrom(l, r) => (l, r, true),
        _ => return None,
    };
    let Expr::BinaryOp {
        left: b,
        op,
        right: c,
    } = right.as_ref()
    else {
        return None;
    };
    if !matches!(op, BinaryOperator::And | BinaryOperator::Or) {
        return None;
    }
    let inner = if negated {
        Expr::IsNotDistinctFrom(left.clone(), b.clone())
    } else {
        Expr::IsDistinctFrom(left.clone(), b.clone())
    };
    let inner = distinct_from_precedence(&inner).unwrap_or(inner);
    Some(Expr::BinaryOp {
        left: Box::new(inner),
        op: op.clone(),
        right: c.clone(),
    })
}

fn rewrite_expr(expr: &Expr) -> Result<Option<Expr>, String> {
    if let Some(fixed) = distinct_from_precedence(expr) {
        return Ok(Some(fixed));
    }
    match expr {
        Expr::Cast {
            kind: CastKind::SafeCast,
            expr,
            data_type,
            array,
            format,
        } => Ok(Some(Expr::Cast {
            kind: CastKind::TryCast,
            expr: expr.clone(),
            data_type: data_type.clone(),
            array: *array,
            format: format.clone(),
        })),
        Expr::Extract { field, expr, .. } => {
            let part = field_name(field);
            Ok(Some(match part.as_str() {
                "DATE" => cast((**expr).clone(), DataType::Date),
                "DATETIME" => cast((**expr).clone(), DataType::Datetime(None)),
                _ => call("bq_extract", vec![string(part), (**expr).clone()]),
            }))
        }
        Expr::Function(function) => rewrite_function(function),
        _ => Ok(None),
    }
}

fn rewrite_function(function: &Function) -> Result<Option<Expr>, String> {
    if function.name.0.len() != 1 {
        return Ok(None);
    }
    let name = function.name.to_string().to_uppercase();
    let name = name.trim_matches('`');
    let Some(args) = plain_args(function) else {
        return Ok(None);
    };
    let renamed = |new: &str, args: Vec<Expr>| -> Expr {
        let mut f = function.clone();
        f.name = ObjectName::from(vec![Ident::new(new)]);
        if let FunctionArguments::List(list) = &mut f.args {
            list.args = args
                .into_iter()
                .map(|e| FunctionArg::Unnamed(FunctionArgExpr::Expr(e)))
                .collect();
        }
        Expr::Function(f)
    };
    let new = match name {
        "DATE" => match args.len() {
            1 => cast(args[0].clone(), DataType::Date),
            3 => call("make_date", args),
            _ => return Err("DATE() takes 1 or 3 arguments".into()),
        },
        "DATETIME" if args.len() == 1 => cast(args[0].clone(), DataType::Datetime(None)),
        "TIMESTAMP" if args.len() == 1 => cast(
            args[0].clone(),
            DataType::Timestamp(None, datafusion::sql::sqlparser::ast::TimezoneInfo::None),
        ),
        "FORMAT_DATE" | "FORMAT_TIMESTAMP" | "FORMAT_DATETIME" => {
            arity(name, &args, &[2])?;
            call("bq_format", args)
        }
        "PARSE_DATE" => {
            arity(name, &args, &[2])?;
            call("bq_parse_date", args)
        }
        "PARSE_TIMESTAMP" => {
            arity(name, &args, &[2])?;
            call("bq_parse_timestamp", args)
        }
        "PARSE_DATETIME" => {
            arity(name, &args, &[2])?;
            call("bq_parse_datetime", args)
        }
        "DATE_ADD" | "DATE_SUB" | "TIMESTAMP_ADD" | "TIMESTAMP_SUB" | "DATETIME_ADD"
        | "DATETIME_SUB" => {
            arity(name, &args, &[2])?;
            let (n, part) = interval(&args[1])
                .ok_or_else(|| format!("{name}(): the second argument must be INTERVAL n PART"))?;
            let n = if name.ends_with("_SUB") {
                Expr::UnaryOp {
                    op: UnaryOperator::Minus,
                    expr: Box::new(Expr::Nested(Box::new(n))),
                }
            } else {
                n
            };
            call("bq_date_add", vec![args[0].clone(), n, string(part)])
        }
        "DATE_TRUNC" | "TIMESTAMP_TRUNC" | "DATETIME_TRUNC" => {
            arity(name, &args, &[2])?;
            let part = part_name(&args[1])
                .ok_or_else(|| format!("{name}(): the second argument must be a date part"))?;
            call("bq_date_trunc", vec![args[0].clone(), string(part)])
        }
        "DATE_DIFF" | "TIMESTAMP_DIFF" | "DATETIME_DIFF" => {
            arity(name, &args, &[3])?;
            let part = part_name(&args[2])
                .ok_or_else(|| format!("{name}(): the third argument must be a date part"))?;
            call(
                "bq_date_diff",
                vec![args[0].clone(), args[1].clone(), string(part)],
            )
        }
        "IF" => {
            arity(name, &args, &[3])?;
            Expr::Case {
                case_token: AttachedToken::empty(),
                end_token: AttachedToken::empty(),
                operand: None,
                conditions: vec![datafusion::sql::sqlparser::ast::CaseWhen {
                    condition: args[0].clone(),
                    result: args[1].clone(),
                }],
                else_result: Some(Box::new(args[2].clone())),
            }
        }
        "TIMESTAMP_MICROS" | "TIMESTAMP_MILLIS" | "TIMESTAMP_SECONDS" => {
            arity(name, &args, &[1])?;
            let f = match name {
                "TIMESTAMP_MICROS" => "to_timestamp_micros",
                "TIMESTAMP_MILLIS" => "to_timestamp_millis",
                _ => "to_timestamp_seconds",
            };
            cast(
                call(f, vec![args[0].clone()]),
                DataType::Timestamp(None, datafusion::sql::sqlparser::ast::TimezoneInfo::None),
            )
        }
        "UNIX_MICROS" | "UNIX_MILLIS" | "UNIX_SECONDS" => {
            arity(name, &args, &[1])?;
            let micros = cast(
                cast(
                    args[0].clone(),
                    DataType::Timestamp(None, datafusion::sql::sqlparser::ast::TimezoneInfo::None),
                ),
                DataType::Int64,
            );
            let unit = match name {
                "UNIX_MICROS" => return Ok(Some(micros)),
                "UNIX_MILLIS" => "1000",
                _ => "1000000",
            };
            // BigQuery rounds down (toward the past).
            cast(
                call(
                    "floor",
                    vec![Expr::BinaryOp {
                        left: Box::new(cast(micros, DataType::Float64)),
                        op: BinaryOperator::Divide,
                        right: Box::new(Expr::value(Value::Number(unit.into(), false))),
                    }],
                ),
                DataType::Int64,
            )
        }
        "UNIX_DATE" => {
            arity(name, &args, &[1])?;
            call(
                "bq_date_diff",
                vec![
                    cast(args[0].clone(), DataType::Date),
                    cast(string("1970-01-01"), DataType::Date),
                    string("DAY"),
                ],
            )
        }
        "DATE_FROM_UNIX_DATE" => {
            arity(name, &args, &[1])?;
            call(
                "bq_date_add",
                vec![
                    cast(string("1970-01-01"), DataType::Date),
                    args[0].clone(),
                    string("DAY"),
                ],
            )
        }
        // BigQuery's MD5 returns BYTES, DataFusion's the hex text TO_HEX would make of them.
        "TO_HEX" if matches!(&args[..], [Expr::Function(f)] if f.name.to_string().eq_ignore_ascii_case("md5")) => {
            args[0].clone()
        }
        "IFNULL" => {
            arity(name, &args, &[2])?;
            call("coalesce", args)
        }
        "COUNTIF" => {
            arity(name, &args, &[1])?;
            let when = Expr::Case {
                case_token: AttachedToken::empty(),
                end_token: AttachedToken::empty(),
                operand: None,
                conditions: vec![datafusion::sql::sqlparser::ast::CaseWhen {
                    condition: args[0].clone(),
                    result: Expr::value(Value::Number("1".into(), false)),
                }],
                else_result: None,
            };
            renamed("count", vec![when])
        }
        "ANY_VALUE" => renamed("first_value", args),
        "LOGICAL_AND" => renamed("bool_and", args),
        "LOGICAL_OR" => renamed("bool_or", args),
        "STRING_AGG" if args.len() == 1 => {
            let mut args = args;
            args.push(string(","));
            renamed("string_agg", args)
        }
        "SAFE_DIVIDE" => {
            arity(name, &args, &[2])?;
            Expr::Case {
                case_token: AttachedToken::empty(),
                end_token: AttachedToken::empty(),
                operand: None,
                conditions: vec![datafusion::sql::sqlparser::ast::CaseWhen {
                    condition: Expr::BinaryOp {
                        left: Box::new(args[1].clone()),
                        op: BinaryOperator::Eq,
                        right: Box::new(Expr::value(Value::Number("0".into(), false))),
                    },
                    result: Expr::value(Value::Null),
                }],
                else_result: Some(Box::new(Expr::BinaryOp {
                    left: Box::new(Expr::Nested(Box::new(args[0].clone()))),
                    op: BinaryOperator::Divide,
                    right: Box::new(Expr::Nested(Box::new(args[1].clone()))),
                })),
            }
        }
        "DIV" => {
            arity(name, &args, &[2])?;
            call("bq_div", args)
        }
        "GENERATE_UUID" => {
            arity(name, &args, &[0])?;
            call("uuid", Vec::new())
        }
        "GENERATE_ARRAY" => {
            arity(name, &args, &[2, 3])?;
            call("generate_series", args)
        }
        "GENERATE_DATE_ARRAY" => {
            arity(name, &args, &[2, 3])?;
            let step = match args.get(2) {
                None => "1 DAY".to_owned(),
                Some(step) => {
                    let (n, part) = interval(step).ok_or_else(|| {
                        "GENERATE_DATE_ARRAY(): the step must be INTERVAL n PART".to_owned()
                    })?;
                    format!("{n} {part}")
                }
            };
            call(
                "generate_series",
                vec![
                    cast(args[0].clone(), DataType::Date),
                    cast(args[1].clone(), DataType::Date),
                    Expr::Interval(datafusion::sql::sqlparser::ast::Interval {
                        value: Box::new(string(step)),
                        leading_field: None,
                        leading_precision: None,
                        last_field: None,
                        fractional_seconds_precision: None,
                    }),
                ],
            )
        }
        "REGEXP_CONTAINS" => {
            arity(name, &args, &[2])?;
            call("regexp_like", args)
        }
        "SPLIT" => {
            let mut args = args;
            if args.len() == 1 {
                args.push(string(","));
            }
            call("string_to_array", args)
        }
        "CURRENT_DATE" if args.is_empty() => call("current_date", Vec::new()),
        "CURRENT_TIMESTAMP" | "CURRENT_DATETIME" if args.is_empty() => call("now", Vec::new()),
        "ERROR" => {
            arity(name, &args, &[1])?;
            call("bq_error", args)
        }
        _ => return Ok(None),
    };
    Ok(Some(new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::BigQueryDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn rewritten(sql: &str) -> String {
        let mut statements = Parser::parse_sql(&BigQueryDialect, sql).expect("parses");
        rewrite(&mut statements[0]).expect("rewrites");
        statements[0].to_string()
    }

    #[test]
    fn backticked_names_lose_the_project() {
        assert_eq!(
            rewritten("SELECT * FROM `proj.ds.tbl`"),
            "SELECT * FROM ds.tbl"
        );
        assert_eq!(
            rewritten("SELECT * FROM proj.ds.tbl"),
            "SELECT * FROM ds.tbl"
        );
    }

    #[test]
    fn date_functions_become_udf_calls() {
        assert_eq!(
            rewritten("SELECT DATE_TRUNC(d, MONTH), DATE_SUB(d, INTERVAL 2 DAY) FROM t"),
            "SELECT bq_date_trunc(d, 'MONTH'), bq_date_add(d, -(2), 'DAY') FROM t"
        );
        assert_eq!(
            rewritten("SELECT DATE_TRUNC(d, WEEK(MONDAY)) FROM t"),
            "SELECT bq_date_trunc(d, 'WEEK(MONDAY)') FROM t"
        );
    }

    #[test]
    fn is_distinct_from_binds_tighter_than_or() {
        assert_eq!(
            rewritten("SELECT a IS DISTINCT FROM b OR c = 1 OR d IS NOT DISTINCT FROM e AND f"),
            "SELECT a IS DISTINCT FROM b OR c = 1 OR d IS NOT DISTINCT FROM e AND f"
        );
        let mut statements =
            Parser::parse_sql(&BigQueryDialect, "SELECT a IS DISTINCT FROM b OR c")
                .expect("parses");
        rewrite(&mut statements[0]).expect("rewrites");
        let Statement::Query(q) = &statements[0] else {
            panic!("a query")
        };
        let datafusion::sql::sqlparser::ast::SetExpr::Select(select) = q.body.as_ref() else {
            panic!("a select")
        };
        let datafusion::sql::sqlparser::ast::SelectItem::UnnamedExpr(e) = &select.projection[0]
        else {
            panic!("an expression")
        };
        assert!(
            matches!(e, Expr::BinaryOp { op: BinaryOperator::Or, left, .. } if matches!(left.as_ref(), Expr::IsDistinctFrom(..))),
            "{e:?}"
        );
    }

    #[test]
    fn wrong_arity_is_named() {
        let mut statements =
            Parser::parse_sql(&BigQueryDialect, "SELECT FORMAT_DATE(d)").expect("parses");
        let err = rewrite(&mut statements[0]).expect_err("arity");
        assert!(err.contains("FORMAT_DATE() takes 2"), "{err}");
    }
}
