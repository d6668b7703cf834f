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
    AccessExpr, BinaryOperator, CastKind, DataType, DateTimeField, Expr, Function, FunctionArg,
    FunctionArgExpr, FunctionArgumentClause, FunctionArgumentList, FunctionArguments, Ident,
    NullTreatment, ObjectName, ObjectNamePart, Statement, Subscript, TableAlias,
    TableAliasColumnDef, TableFactor, UnaryOperator, Value, VisitMut, VisitorMut,
};

/// Rewrites one parsed statement in place; an error names the construct that has no
/// DataFusion equivalent.
pub(crate) fn rewrite(statement: &mut Statement) -> Result<(), String> {
    match statement.visit(&mut Rewriter { unnamed_unnests: 0 }) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(message) => Err(message),
    }
}

struct Rewriter {
    /// Alias-less `UNNEST`s named so far (each gets its own synthetic table name).
    unnamed_unnests: usize,
}

/// Table name prefix of an alias-less `UNNEST` (its element column is `f0_`, BigQuery's name);
/// [`unnamed_struct_unnest`] refuses one whose elements are STRUCTs.
pub(crate) const UNNAMED_UNNEST: &str = "__rainbow_unnest_";

impl VisitorMut for Rewriter {
    type Break = String;

    fn pre_visit_relation(&mut self, relation: &mut ObjectName) -> ControlFlow<String> {
        *relation = table_name(relation);
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<String> {
        // BigQuery: `SELECT * FROM UNNEST([1, 2])` names the element column `f0_`.
        if let TableFactor::UNNEST {
            alias: alias @ None,
            array_exprs,
            with_offset: false,
            ..
        } = factor
            && array_exprs.len() == 1
        {
            self.unnamed_unnests += 1;
            *alias = Some(TableAlias {
                explicit: true,
                name: Ident::new(format!("{UNNAMED_UNNEST}{}", self.unnamed_unnests)),
                columns: vec![TableAliasColumnDef {
                    name: Ident::new("f0_"),
                    data_type: None,
                }],
                at: None,
            });
            return ControlFlow::Continue(());
        }
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

    fn post_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<String> {
        match super::pivot::rewrite(factor) {
            Ok(Some(new)) => *factor = new,
            Ok(None) => {}
            Err(message) => return ControlFlow::Break(message),
        }
        match unnest_with_offset(factor) {
            Ok(Some(new)) => *factor = new,
            Ok(None) => {}
            Err(message) => return ControlFlow::Break(message),
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

/// The error for a plan reading an alias-less `UNNEST` of STRUCTs: BigQuery makes each field a
/// column, the embedded warehouse would give one STRUCT column — so it refuses instead.
pub(crate) fn unnamed_struct_unnest(
    plan: &datafusion::logical_expr::LogicalPlan,
) -> Option<String> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let mut found = None;
    let _ = plan.apply(|node| {
        for (qualifier, field) in node.schema().iter() {
            if qualifier.is_some_and(|q| q.table().starts_with(UNNAMED_UNNEST))
                && matches!(
                    field.data_type(),
                    datafusion::arrow::datatypes::DataType::Struct(_)
                )
            {
                found = Some(
                    "UNNEST of an ARRAY of STRUCTs without an alias is not supported by the \
                     embedded warehouse (BigQuery makes each field a column): write \
                     UNNEST(…) AS t and select t.field"
                        .to_owned(),
                );
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// `UNNEST(arr) AS x WITH OFFSET AS off` (DataFusion has no offset for UNNEST) becomes a
/// derived table zipping the elements with their zero-based positions:
/// `(SELECT unnest(arr) AS x, unnest(range(0, array_length(arr))) AS off) AS x`. An empty or
/// NULL array gives no rows, as in BigQuery.
fn unnest_with_offset(factor: &TableFactor) -> Result<Option<TableFactor>, String> {
    let TableFactor::UNNEST {
        alias,
        array_exprs,
        with_offset: true,
        with_offset_alias,
        ..
    } = factor
    else {
        return Ok(None);
    };
    let [array] = array_exprs.as_slice() else {
        return Err("UNNEST … WITH OFFSET takes one array".into());
    };
    let element = alias
        .as_ref()
        .map(|a| a.name.clone())
        .ok_or_else(|| "UNNEST(…) WITH OFFSET needs an alias for the elements (AS x)".to_owned())?;
    let offset = with_offset_alias
        .clone()
        .unwrap_or_else(|| Ident::new("offset"));
    let sql = format!(
        "SELECT * FROM (SELECT unnest({array}) AS {element}, \
         unnest(range(0, array_length({array}))) AS {offset}) AS {element}"
    );
    let parsed = datafusion::sql::sqlparser::parser::Parser::parse_sql(
        &datafusion::sql::sqlparser::dialect::GenericDialect {},
        &sql,
    )
    .map_err(|e| format!("UNNEST … WITH OFFSET: {e}"))?;
    let derived = match parsed.into_iter().next() {
        Some(Statement::Query(query)) => match *query.body {
            datafusion::sql::sqlparser::ast::SetExpr::Select(select) => {
                select.from.into_iter().next().map(|from| from.relation)
            }
            _ => None,
        },
        _ => None,
    };
    derived
        .map(Some)
        .ok_or_else(|| "UNNEST … WITH OFFSET could not be rewritten".to_owned())
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

/// `CASE WHEN c1 THEN r1 … ELSE e END`.
fn case(whens: Vec<(Expr, Expr)>, else_result: Option<Expr>) -> Expr {
    Expr::Case {
        case_token: AttachedToken::empty(),
        end_token: AttachedToken::empty(),
        operand: None,
        conditions: whens
            .into_iter()
            .map(
                |(condition, result)| datafusion::sql::sqlparser::ast::CaseWhen {
                    condition,
                    result,
                },
            )
            .collect(),
        else_result: else_result.map(Box::new),
    }
}

/// `x OP n` for a numeric literal `n`.
fn compare(x: &Expr, op: BinaryOperator, n: &str) -> Expr {
    Expr::BinaryOp {
        left: Box::new(x.clone()),
        op,
        right: Box::new(Expr::value(Value::Number(n.into(), false))),
    }
}

/// `CASE WHEN condition THEN ERROR(message) ELSE value END`.
fn guarded(condition: Expr, message: &str, value: Expr) -> Expr {
    case(
        vec![(condition, call("bq_error", vec![string(message)]))],
        Some(value),
    )
}

/// `array[index]` with BigQuery's subscript specifiers (`OFFSET`, `ORDINAL`, `SAFE_OFFSET`,
/// `SAFE_ORDINAL`; a bare index is `OFFSET`).
fn array_element(array: Expr, index: &Expr) -> Result<Expr, String> {
    let (specifier, n) = match index {
        Expr::Function(f) if f.name.0.len() == 1 => {
            let name = f.name.to_string().to_uppercase();
            match name.as_str() {
                "OFFSET" | "ORDINAL" | "SAFE_OFFSET" | "SAFE_ORDINAL" => {
                    let args = plain_args(f)
                        .filter(|a| a.len() == 1)
                        .ok_or_else(|| format!("{name}() in a subscript takes one index"))?;
                    (name, args[0].clone())
                }
                _ => ("OFFSET".to_owned(), index.clone()),
            }
        }
        _ => ("OFFSET".to_owned(), index.clone()),
    };
    let number = |n: &str| Expr::value(Value::Number(n.into(), false));
    // Zero-based position.
    let k = if specifier.ends_with("ORDINAL") {
        Expr::Nested(Box::new(Expr::BinaryOp {
            left: Box::new(n.clone()),
            op: BinaryOperator::Minus,
            right: Box::new(number("1")),
        }))
    } else {
        Expr::Nested(Box::new(n.clone()))
    };
    let out_of_range = Expr::BinaryOp {
        left: Box::new(Expr::BinaryOp {
            left: Box::new(k.clone()),
            op: BinaryOperator::Lt,
            right: Box::new(number("0")),
        }),
        op: BinaryOperator::Or,
        right: Box::new(Expr::BinaryOp {
            left: Box::new(k.clone()),
            op: BinaryOperator::GtEq,
            right: Box::new(call("array_length", vec![array.clone()])),
        }),
    };
    let when_out = if specifier.starts_with("SAFE_") {
        Expr::value(Value::Null)
    } else {
        call(
            "bq_error",
            vec![Expr::BinaryOp {
                left: Box::new(string(format!("Array index out of bounds: {specifier}("))),
                op: BinaryOperator::StringConcat,
                right: Box::new(Expr::BinaryOp {
                    left: Box::new(cast(n, DataType::String(None))),
                    op: BinaryOperator::StringConcat,
                    right: Box::new(string(")")),
                }),
            }],
        )
    };
    Ok(case(
        vec![(out_of_range, when_out)],
        Some(call(
            "array_element",
            vec![
                array,
                Expr::BinaryOp {
                    left: Box::new(k),
                    op: BinaryOperator::Plus,
                    right: Box::new(number("1")),
                },
            ],
        )),
    ))
}

/// `.a` field accesses as `['a']` subscripts (unquoted names lowercased, as DataFusion
/// normalizes them).
fn dots_as_subscripts(chain: Vec<AccessExpr>) -> Vec<AccessExpr> {
    chain
        .into_iter()
        .map(|access| match access {
            AccessExpr::Dot(Expr::Identifier(ident)) => {
                let name = if ident.quote_style.is_some() {
                    ident.value
                } else {
                    ident.value.to_lowercase()
                };
                AccessExpr::Subscript(Subscript::Index {
                    index: string(name),
                })
            }
            other => other,
        })
        .collect()
}

fn is_string_literal(expr: &Expr) -> bool {
    matches!(expr, Expr::Value(v) if matches!(v.value, Value::SingleQuotedString(_) | Value::DoubleQuotedString(_)))
}

/// BigQuery's INT64 and its aliases (INT, SMALLINT, INTEGER, BIGINT, TINYINT, BYTEINT).
fn is_int64(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Int64
            | DataType::Int(_)
            | DataType::Integer(_)
            | DataType::BigInt(_)
            | DataType::SmallInt(_)
            | DataType::TinyInt(_)
    ) || matches!(data_type, DataType::Custom(name, _) if name.to_string().eq_ignore_ascii_case("BYTEINT"))
}

/// Already wrapped by a previous rewrite (a statement is never rewritten twice, but be safe).
fn is_int_rounded(expr: &Expr) -> bool {
    matches!(expr, Expr::Function(f) if f.name.to_string() == "bq_int_round")
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
        // `0xF001` is an INT64 in BigQuery (bytes literals are `b'…'`).
        Expr::Value(v) if matches!(v.value, Value::HexStringLiteral(_)) => {
            let Value::HexStringLiteral(hex) = &v.value else {
                return Ok(None);
            };
            let n = i64::from_str_radix(hex, 16)
                .map_err(|_| format!("the hex literal 0x{hex} does not fit in INT64"))?;
            Ok(Some(Expr::value(Value::Number(n.to_string(), false))))
        }
        // NULL elements make `x IN UNNEST(arr)` NULL where DataFusion's array_has is false.
        Expr::InUnnest { .. } => Err(
            "x IN UNNEST(array) is not supported by the embedded warehouse yet (BigQuery's NULL \
             handling has no DataFusion equivalent)"
                .into(),
        ),
        // `b'abc'`: a BYTES literal.
        Expr::Value(v)
            if matches!(
                v.value,
                Value::SingleQuotedByteStringLiteral(_) | Value::DoubleQuotedByteStringLiteral(_)
            ) =>
        {
            let (Value::SingleQuotedByteStringLiteral(text)
            | Value::DoubleQuotedByteStringLiteral(text)) = &v.value
            else {
                return Ok(None);
            };
            Ok(Some(cast(string(text.clone()), DataType::Bytea)))
        }
        // CAST(x AS STRING): BigQuery's canonical text of each type (DataFusion's differs for
        // TIMESTAMP, DATETIME, NUMERIC and FLOAT64).
        Expr::Cast {
            expr,
            data_type: DataType::String(_),
            ..
        } => Ok(Some(call("bq_to_string", vec![(**expr).clone()]))),
        // CAST(x AS BOOL): only 'true'/'false' strings (DataFusion also takes 'yes', '1'…).
        Expr::Cast {
            kind,
            expr,
            data_type: DataType::Bool | DataType::Boolean,
            ..
        } => Ok(Some(call(
            "bq_to_bool",
            vec![
                (**expr).clone(),
                Expr::value(Value::Boolean(matches!(
                    kind,
                    CastKind::SafeCast | CastKind::TryCast
                ))),
            ],
        ))),
        Expr::Cast {
            kind,
            expr,
            data_type,
            array,
            format,
        } if *kind == CastKind::SafeCast || is_int64(data_type) => {
            // BigQuery's CAST to INT64 rounds FLOAT64 and NUMERIC half away from zero;
            // DataFusion's truncates toward zero. SAFE_CAST is DataFusion's TRY_CAST.
            let inner = if is_int64(data_type) && !is_int_rounded(expr) {
                call("bq_int_round", vec![(**expr).clone()])
            } else {
                (**expr).clone()
            };
            Ok(Some(Expr::Cast {
                kind: if *kind == CastKind::SafeCast {
                    CastKind::TryCast
                } else {
                    kind.clone()
                },
                expr: Box::new(inner),
                data_type: data_type.clone(),
                array: *array,
                format: format.clone(),
            }))
        }
        // Array subscripts: BigQuery's `arr[i]` and `arr[OFFSET(i)]` are zero-based,
        // `arr[ORDINAL(i)]` one-based, and out of range is an error (NULL with SAFE_);
        // DataFusion's `arr[i]` is one-based and NULL out of range.
        Expr::CompoundFieldAccess { root, access_chain }
            if access_chain.iter().any(|a| matches!(a, AccessExpr::Subscript(Subscript::Index { index }) if !is_string_literal(index))) =>
        {
            let mut current = (**root).clone();
            let mut dots: Vec<AccessExpr> = Vec::new();
            for access in access_chain {
                match access {
                    AccessExpr::Subscript(Subscript::Index { index }) if !is_string_literal(index) => {
                        if !dots.is_empty() {
                            current = Expr::CompoundFieldAccess {
                                root: Box::new(current),
                                access_chain: std::mem::take(&mut dots),
                            };
                        }
                        current = array_element(current, index)?;
                    }
                    other => dots.push(other.clone()),
                }
            }
            if !dots.is_empty() {
                current = Expr::CompoundFieldAccess {
                    root: Box::new(current),
                    access_chain: dots_as_subscripts(dots),
                };
            }
            Ok(Some(current))
        }
        // `STRUCT<a INT64, b STRING>(1, 'x')`: each value cast to its field's type, named.
        Expr::Struct { values, fields } if !fields.is_empty() => {
            if values.len() != fields.len() {
                return Err(format!(
                    "STRUCT<…> declares {} fields but is given {} values",
                    fields.len(),
                    values.len()
                ));
            }
            let values = values
                .iter()
                .zip(fields)
                .map(|(value, field)| {
                    let typed = cast(value.clone(), field.field_type.clone());
                    let typed = rewrite_expr(&typed)?.unwrap_or(typed);
                    Ok(match &field.field_name {
                        Some(name) => Expr::Named {
                            expr: Box::new(typed),
                            name: name.clone(),
                        },
                        None => typed,
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            Ok(Some(Expr::Struct {
                values,
                fields: Vec::new(),
            }))
        }
        // `STRUCT(1 AS a).a`, `f(x).a`, `arr[OFFSET(0)].a`: field access on a computed struct
        // is a `['a']` subscript for DataFusion.
        Expr::CompoundFieldAccess { root, access_chain }
            if access_chain
                .iter()
                .any(|a| matches!(a, AccessExpr::Dot(Expr::Identifier(_)))) =>
        {
            Ok(Some(Expr::CompoundFieldAccess {
                root: root.clone(),
                access_chain: dots_as_subscripts(access_chain.clone()),
            }))
        }
        // `ts AT TIME ZONE tz` (inside EXTRACT): the civil time the zone shows.
        Expr::AtTimeZone {
            timestamp,
            time_zone,
        } => Ok(Some(call(
            "bq_at_tz",
            vec![(**timestamp).clone(), (**time_zone).clone()],
        ))),
        // SUBSTR/SUBSTRING: BigQuery's positions (0 is 1, negative counts from the end).
        Expr::Substring {
            expr,
            substring_from,
            substring_for,
            ..
        } => {
            let mut args = vec![
                (**expr).clone(),
                substring_from
                    .as_deref()
                    .cloned()
                    .unwrap_or_else(|| Expr::value(Value::Number("1".into(), false))),
            ];
            if let Some(len) = substring_for {
                args.push((**len).clone());
            }
            Ok(Some(call("bq_substr", args)))
        }
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
        let full = function.name.to_string();
        if function.name.0.len() == 2 && full.to_uppercase().starts_with("SAFE.") {
            let name = full[5..].trim_matches('`').to_uppercase();
            if SAME_MEANING_AGGREGATES.contains(&name.as_str())
                || REWRITTEN_AGGREGATES.contains(&name.as_str())
                || function.over.is_some()
            {
                return Err(format!(
                    "SAFE.{name}: the SAFE. prefix cannot be used with aggregate or window functions"
                ));
            }
            return super::safe::safe_expr(function, |inner| {
                // SUBSTR is parsed as its own expression when it has no prefix.
                match plain_args(inner) {
                    Some(args) if matches!(name.as_str(), "SUBSTR" | "SUBSTRING") => {
                        arity(&name, &args, &[2, 3])?;
                        Ok(Some(call("bq_substr", args)))
                    }
                    _ => rewrite_function(inner),
                }
            })
            .map(Some);
        }
        return Err(format!(
            "{full}: user-defined functions are not supported by the embedded warehouse"
        ));
    }
    let name = function.name.to_string().to_uppercase();
    let name = name.trim_matches('`');
    // ARRAY_AGG(x [ORDER BY …] LIMIT n): the first n elements of the ordered array.
    if name == "ARRAY_AGG"
        && let FunctionArguments::List(list) = &function.args
        && let Some(at) = list
            .clauses
            .iter()
            .position(|c| matches!(c, FunctionArgumentClause::Limit(_)))
    {
        let mut all = function.clone();
        let mut limit = None;
        if let FunctionArguments::List(l) = &mut all.args
            && let FunctionArgumentClause::Limit(n) = l.clauses.remove(at)
        {
            limit = Some(n);
        }
        let limit = limit.ok_or("ARRAY_AGG: LIMIT without a count")?;
        return Ok(Some(call(
            "array_slice",
            vec![
                Expr::Function(all),
                Expr::value(Value::Number("1".into(), false)),
                limit,
            ],
        )));
    }
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
            // A TIMESTAMP's UTC date by arithmetic, anything else cast (`utc`).
            1 => call("bq_date", args),
            // DATE(timestamp, time_zone): the date the timestamp shows in the zone.
            2 => cast(
                call("bq_at_tz", vec![args[0].clone(), args[1].clone()]),
                DataType::Date,
            ),
            3 => call("make_date", args),
            _ => return Err("DATE() takes 1, 2 or 3 arguments".into()),
        },
        "DATETIME" if args.len() == 1 => cast(args[0].clone(), DataType::Datetime(None)),
        // DATETIME(timestamp, time_zone); DATETIME(date, time) is not supported yet.
        "DATETIME" if args.len() == 2 => {
            if !is_string_literal(&args[1]) {
                return Err(
                    "DATETIME(date, time) is not supported by the embedded warehouse; DATETIME(timestamp, 'time zone') is"
                        .into(),
                );
            }
            call("bq_at_tz", args)
        }
        "TIMESTAMP" if args.len() == 1 => cast(
            args[0].clone(),
            DataType::Timestamp(None, datafusion::sql::sqlparser::ast::TimezoneInfo::None),
        ),
        // TIMESTAMP(civil datetime or string, time_zone): the instant the zone shows it.
        "TIMESTAMP" if args.len() == 2 => call(
            "bq_from_tz",
            vec![
                cast(args[0].clone(), DataType::Datetime(None)),
                args[1].clone(),
            ],
        ),
        "FORMAT_TIMESTAMP" if args.len() == 3 => {
            // The civil time in the zone, formatted; the zone's own name or offset (%Z, %z)
            // would need the instant, which is not supported yet.
            if let Expr::Value(v) = &args[0]
                && let Value::SingleQuotedString(f) | Value::DoubleQuotedString(f) = &v.value
                && (f.contains("%Z") || f.contains("%z") || f.contains("%Ez"))
            {
                return Err(
                    "FORMAT_TIMESTAMP with a time zone and %Z/%z is not supported by the embedded warehouse"
                        .into(),
                );
            }
            call(
                "bq_format",
                vec![
                    args[0].clone(),
                    call("bq_at_tz", vec![args[1].clone(), args[2].clone()]),
                ],
            )
        }
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
        // TIMESTAMP_TRUNC(ts, part, time_zone): truncated in the zone's civil time.
        "TIMESTAMP_TRUNC" if args.len() == 3 => {
            let part = part_name(&args[1])
                .ok_or_else(|| format!("{name}(): the second argument must be a date part"))?;
            call(
                "bq_from_tz",
                vec![
                    call(
                        "bq_date_trunc",
                        vec![
                            call("bq_at_tz", vec![args[0].clone(), args[2].clone()]),
                            string(part),
                        ],
                    ),
                    args[2].clone(),
                ],
            )
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
            case(
                vec![(args[0].clone(), args[1].clone())],
                Some(args[2].clone()),
            )
        }
        // The number itself, as a UTC TIMESTAMP (`utc`).
        "TIMESTAMP_MICROS" => {
            arity(name, &args, &[1])?;
            call("bq_timestamp_micros", args)
        }
        "TIMESTAMP_MILLIS" | "TIMESTAMP_SECONDS" => {
            arity(name, &args, &[1])?;
            let f = match name {
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
        "IFNULL" => {
            arity(name, &args, &[2])?;
            call("coalesce", args)
        }
        "COUNTIF" => {
            arity(name, &args, &[1])?;
            let when = case(
                vec![(
                    args[0].clone(),
                    Expr::value(Value::Number("1".into(), false)),
                )],
                None,
            );
            renamed("count", vec![when])
        }
        // BigQuery's ANY_VALUE ignores NULLs (NULL only when every value is NULL).
        "ANY_VALUE" => {
            arity(name, &args, &[1])?;
            let mut first = renamed("first_value", args);
            if let Expr::Function(f) = &mut first {
                f.null_treatment = Some(NullTreatment::IgnoreNulls);
            }
            first
        }
        // BigQuery's GREATEST/LEAST are NULL when any argument is (DataFusion skips NULLs).
        "GREATEST" | "LEAST" => {
            if args.is_empty() {
                return Err(format!("{name}() needs at least one argument"));
            }
            let any_null = args
                .iter()
                .map(|a| Expr::IsNull(Box::new(a.clone())))
                .reduce(|a, b| Expr::BinaryOp {
                    left: Box::new(a),
                    op: BinaryOperator::Or,
                    right: Box::new(b),
                })
                .unwrap_or(Expr::value(Value::Boolean(false)));
            case(
                vec![(any_null, Expr::value(Value::Null))],
                Some(call(&name.to_lowercase(), args)),
            )
        }
        // BigQuery's CONCAT is NULL when any argument is (DataFusion's skips NULLs); `||`
        // propagates NULL.
        "CONCAT" => {
            if args.is_empty() {
                return Err("CONCAT() needs at least one argument".into());
            }
            let mut it = args.into_iter();
            let first = it.next().unwrap_or(Expr::value(Value::Null));
            let joined = it.fold(first.clone(), |a, b| Expr::BinaryOp {
                left: Box::new(a),
                op: BinaryOperator::StringConcat,
                right: Box::new(b),
            });
            if matches!(joined, Expr::BinaryOp { .. }) {
                Expr::Nested(Box::new(joined))
            } else {
                call("concat", vec![first])
            }
        }
        // SIGN keeps its argument's type (INT64 in, INT64 out); NaN stays NaN.
        "SIGN" => {
            arity(name, &args, &[1])?;
            let x = args[0].clone();
            let compare = |op: BinaryOperator| Expr::BinaryOp {
                left: Box::new(x.clone()),
                op,
                right: Box::new(Expr::value(Value::Number("0".into(), false))),
            };
            case(
                vec![
                    (
                        compare(BinaryOperator::Gt),
                        Expr::value(Value::Number("1".into(), false)),
                    ),
                    (
                        compare(BinaryOperator::Lt),
                        Expr::value(Value::Number("-1".into(), false)),
                    ),
                ],
                Some(x),
            )
        }
        // Domain errors instead of NaN/-inf (BigQuery raises an error).
        "SQRT" => {
            arity(name, &args, &[1])?;
            guarded(
                compare(&args[0], BinaryOperator::Lt, "0"),
                "SQRT: the argument is negative",
                call("sqrt", args),
            )
        }
        "LN" | "LOG10" => {
            arity(name, &args, &[1])?;
            guarded(
                compare(&args[0], BinaryOperator::LtEq, "0"),
                &format!("{name}: the argument is zero or negative"),
                call(&name.to_lowercase(), args),
            )
        }
        // LOG(X) is the natural logarithm (DataFusion's one-argument log is base 10);
        // LOG(X, Y) is log base Y of X (DataFusion's log takes the base first).
        "LOG" => {
            arity(name, &args, &[1, 2])?;
            match args.as_slice() {
                [x] => guarded(
                    compare(x, BinaryOperator::LtEq, "0"),
                    "LOG: the argument is zero or negative",
                    call("ln", vec![x.clone()]),
                ),
                [x, y] => guarded(
                    Expr::BinaryOp {
                        left: Box::new(Expr::BinaryOp {
                            left: Box::new(compare(x, BinaryOperator::LtEq, "0")),
                            op: BinaryOperator::Or,
                            right: Box::new(compare(y, BinaryOperator::LtEq, "0")),
                        }),
                        op: BinaryOperator::Or,
                        right: Box::new(compare(y, BinaryOperator::Eq, "1")),
                    },
                    "LOG: X and Y must be positive and Y must not be 1",
                    call("log", vec![y.clone(), x.clone()]),
                ),
                _ => return Err("LOG() takes 1 or 2 arguments".into()),
            }
        }
        // A negative length is an error in BigQuery (DataFusion counts it from the end).
        "LEFT" | "RIGHT" => {
            arity(name, &args, &[2])?;
            guarded(
                compare(&args[1], BinaryOperator::Lt, "0"),
                &format!("{name}: the length is negative"),
                call(&name.to_lowercase(), args),
            )
        }
        "REGEXP_EXTRACT" | "REGEXP_SUBSTR" => {
            arity(name, &args, &[2])?;
            call("bq_regexp_extract", args)
        }
        "CEILING" => {
            arity(name, &args, &[1])?;
            call("ceil", args)
        }
        // MOD(X, Y): the sign of X; Y = 0 is an error (DataFusion's `%` on integers).
        "MOD" => {
            arity(name, &args, &[2])?;
            Expr::Nested(Box::new(Expr::BinaryOp {
                left: Box::new(args[0].clone()),
                op: BinaryOperator::Modulo,
                right: Box::new(args[1].clone()),
            }))
        }
        // A negative length or count is an error in BigQuery, an empty string in DataFusion.
        // … and LPAD/RPAD with an empty pattern is an error too (DataFusion pads with nothing).
        "LPAD" | "RPAD" | "REPEAT" => {
            arity(name, &args, if name == "REPEAT" { &[2] } else { &[2, 3] })?;
            let negative = compare(&args[1], BinaryOperator::Lt, "0");
            let value = call(&name.to_lowercase(), args.clone());
            let checked = guarded(
                negative,
                &format!("{name}: the length or count is negative"),
                value,
            );
            match args.get(2) {
                Some(pattern) => guarded(
                    Expr::BinaryOp {
                        left: Box::new(pattern.clone()),
                        op: BinaryOperator::Eq,
                        right: Box::new(string("")),
                    },
                    &format!("{name}: the pattern is empty"),
                    checked,
                ),
                None => checked,
            }
        }
        // JSON extractors on JSON-formatted strings (path `$` when omitted).
        "JSON_VALUE" | "JSON_EXTRACT_SCALAR" | "JSON_QUERY" | "JSON_EXTRACT" => {
            arity(name, &args, &[1, 2])?;
            let mut args = args;
            if args.len() == 1 {
                args.push(string("$"));
            }
            let udf = if matches!(name, "JSON_VALUE" | "JSON_EXTRACT_SCALAR") {
                "bq_json_value"
            } else {
                "bq_json_query"
            };
            call(udf, args)
        }
        // BigQuery replaces every match; DataFusion only the first unless told `g`.
        "REGEXP_REPLACE" => {
            arity(name, &args, &[3])?;
            let mut args = args;
            args.push(string("g"));
            call("regexp_replace", args)
        }
        // BigQuery's MD5 is BYTES; TO_HEX turns BYTES into lower-case hex.
        "MD5" => {
            arity(name, &args, &[1])?;
            call("decode", vec![call("md5", args), string("hex")])
        }
        "TO_HEX" => {
            arity(name, &args, &[1])?;
            call("encode", vec![args[0].clone(), string("hex")])
        }
        "LOGICAL_AND" => renamed("bool_and", args),
        // BigQuery's VARIANCE is the sample variance.
        "VARIANCE" => renamed("var_samp", args),
        "LOGICAL_OR" => renamed("bool_or", args),
        "STRING_AGG" if args.len() == 1 => {
            let mut args = args;
            args.push(string(","));
            renamed("string_agg", args)
        }
        "SAFE_DIVIDE" => {
            arity(name, &args, &[2])?;
            case(
                vec![(
                    Expr::BinaryOp {
                        left: Box::new(args[1].clone()),
                        op: BinaryOperator::Eq,
                        right: Box::new(Expr::value(Value::Number("0".into(), false))),
                    },
                    Expr::value(Value::Null),
                )],
                Some(Expr::BinaryOp {
                    left: Box::new(Expr::Nested(Box::new(args[0].clone()))),
                    op: BinaryOperator::Divide,
                    right: Box::new(Expr::Nested(Box::new(args[1].clone()))),
                }),
            )
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
        // BigQuery's SPLIT: '' is [''] and an empty delimiter splits into characters
        // (DataFusion's string_to_array gives [] and the whole string).
        "SPLIT" => {
            arity(name, &args, &[1, 2])?;
            let mut args = args;
            if args.len() == 1 {
                args.push(string(","));
            }
            call("bq_split", args)
        }
        "CURRENT_DATE" if args.is_empty() => call("current_date", Vec::new()),
        "CURRENT_TIMESTAMP" | "CURRENT_DATETIME" if args.is_empty() => call("now", Vec::new()),
        "TO_JSON_STRING" => {
            arity(name, &args, &[1, 2])?;
            call("bq_to_json_string", args)
        }
        "ERROR" => {
            arity(name, &args, &[1])?;
            call("bq_error", args)
        }
        _ => return same_meaning(name),
    };
    Ok(Some(new))
}

/// BigQuery functions DataFusion implements with the same meaning, checked against BigQuery's
/// documented edge cases (NULLs, empty input, signs, rounding) in `bigquery-cases/`. Any other
/// function is an error naming it: a function that shares a name but not a meaning must never
/// run silently.
/// Aggregate and window functions DataFusion implements with BigQuery's meaning (checked
/// like [`SAME_MEANING`]).
const SAME_MEANING_AGGREGATES: &[&str] = &[
    // Aggregates: NULLs ignored, NULL over no rows (COUNT: 0).
    "COUNT",
    "SUM",
    "AVG",
    "MIN",
    "MAX",
    "BIT_AND",
    "BIT_OR",
    "BIT_XOR",
    "STDDEV",
    "STDDEV_SAMP",
    "STDDEV_POP",
    "VARIANCE",
    "VAR_SAMP",
    "VAR_POP",
    "CORR",
    "COVAR_POP",
    "COVAR_SAMP",
    // Numbering and navigation (window) functions.
    "ROW_NUMBER",
    "RANK",
    "DENSE_RANK",
    "PERCENT_RANK",
    "CUME_DIST",
    "NTILE",
    "LAG",
    "LEAD",
    "FIRST_VALUE",
    "LAST_VALUE",
    "NTH_VALUE",
    // ARRAY_AGG keeps NULL elements where BigQuery refuses them in a final result.
    "ARRAY_AGG",
    // STRING_AGG(x, delimiter): NULLs skipped, NULL over no rows (one argument: rewritten).
    "STRING_AGG",
];

const SAME_MEANING: &[&str] = &[
    // Conditional.
    "COALESCE",
    "NULLIF",
    // Strings (characters, not bytes).
    "LENGTH",
    "CHAR_LENGTH",
    "CHARACTER_LENGTH",
    "LOWER",
    "UPPER",
    "REPLACE",
    "REVERSE",
    "STARTS_WITH",
    "ENDS_WITH",
    "STRPOS",
    "LPAD",
    "RPAD",
    "REPEAT",
    "ASCII",
    "CHR",
    "LTRIM",
    "RTRIM",
    // Math.
    "ABS",
    "SIGN",
    "ROUND",
    "FLOOR",
    "CEIL",
    "CEILING",
    "TRUNC",
    "POW",
    "POWER",
    "MOD",
    // Hashes returning BYTES.
    "SHA256",
    "SHA512",
    // Arrays. ARRAY_AGG keeps NULL elements where BigQuery refuses them in a final result.
    "ARRAY_LENGTH",
];

/// Aggregates rewritten to BigQuery's meaning. With [`SAME_MEANING_AGGREGATES`]: the functions
/// the `SAFE.` prefix is refused for, as in BigQuery.
const REWRITTEN_AGGREGATES: &[&str] = &["COUNTIF", "ANY_VALUE", "LOGICAL_AND", "LOGICAL_OR"];

/// Calls that are part of their parent's syntax, consumed by it: date parts (`WEEK(MONDAY)` in
/// `DATE_TRUNC`, `DATE_DIFF`, `EXTRACT`) and array subscript specifiers (`arr[OFFSET(1)]`).
const CONSUMED_BY_PARENT: &[&str] = &["WEEK", "OFFSET", "ORDINAL", "SAFE_OFFSET", "SAFE_ORDINAL"];

fn same_meaning(name: &str) -> Result<Option<Expr>, String> {
    if SAME_MEANING.contains(&name)
        || SAME_MEANING_AGGREGATES.contains(&name)
        || CONSUMED_BY_PARENT.contains(&name)
    {
        Ok(None)
    } else {
        Err(format!(
            "BigQuery function {name} is not supported by the embedded warehouse (see the \
             function coverage table in docs/bigquery.md)"
        ))
    }
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
