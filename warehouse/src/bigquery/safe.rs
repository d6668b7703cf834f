//! BigQuery's `SAFE.` prefix: `SAFE.f(args)` returns NULL where `f(args)` raises an error —
//! and only errors of `f` itself; an error while computing an argument still fails the query.
//! <https://cloud.google.com/bigquery/docs/reference/standard-sql/functions-reference#safe_prefix>
//!
//! Two halves:
//! - [`safe_expr`] (at rewrite time): `f` is first rewritten to BigQuery's meaning as usual, with
//!   its computed arguments held out as placeholders; in what `f` became, every `ERROR(…)` guard
//!   becomes NULL, every `CAST` a `TRY_CAST`, and every function call `g(…)` a call of its safe
//!   twin `bq_safe_g(…)`; then the arguments are put back.
//! - [`safe_twins`] (at session set-up): for each scalar function `g` of the session, a twin
//!   `bq_safe_g` with the same signature and return type whose evaluation, when `g` fails on a
//!   batch, evaluates the batch row by row and puts NULL in the rows where `g` fails.
//!
//! Aggregate and window functions cannot take the prefix (BigQuery refuses it as well).

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, new_null_array};
use datafusion::arrow::compute::concat;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};
use datafusion::sql::sqlparser::ast::helpers::attached_token::AttachedToken;
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, CaseWhen, CastKind, Expr, Function, FunctionArg, FunctionArgExpr,
    FunctionArguments, Ident, ObjectName, ObjectNamePart, Value, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};

/// Prefix of the safe twin of a scalar function (`bq_safe_` + the function's name).
pub const TWIN_PREFIX: &str = "bq_safe_";

/// Prefix of the placeholders standing for `f`'s computed arguments while it is made safe.
const PLACEHOLDER: &str = "__rainbow_safe_arg_";

/// The safe twins of `functions` (a session's scalar functions by every name they are
/// registered under, aliases included), to register beside them.
pub fn safe_twins<'a>(
    functions: impl IntoIterator<Item = (&'a String, &'a Arc<ScalarUDF>)>,
) -> Vec<ScalarUDF> {
    functions
        .into_iter()
        .filter(|(name, _)| !name.starts_with(TWIN_PREFIX))
        .map(|(name, f)| {
            ScalarUDF::new_from_impl(SafeTwin {
                name: format!("{TWIN_PREFIX}{name}"),
                inner: Arc::clone(f),
            })
        })
        .collect()
}

/// `SAFE.SUBSTR(…)`, `SAFE.LEFT(…)`: a keyword after `SAFE.` would stop sqlparser from reading
/// a function call, so the name after `SAFE.` and before `(` is read as a quoted identifier.
pub(crate) fn unreserve_safe_calls(tokens: &mut [TokenWithSpan]) {
    let significant: Vec<usize> = tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| !matches!(t.token, Token::Whitespace(_)))
        .map(|(i, _)| i)
        .collect();
    for w in significant.windows(4) {
        let is_safe = matches!(&tokens[w[0]].token, Token::Word(word) if word.quote_style.is_none() && word.value.eq_ignore_ascii_case("SAFE"));
        if is_safe
            && tokens[w[1]].token == Token::Period
            && tokens[w[3]].token == Token::LParen
            && let Token::Word(word) = &mut tokens[w[2]].token
            && word.keyword != Keyword::NoKeyword
        {
            word.quote_style = Some('`');
            word.keyword = Keyword::NoKeyword;
        }
    }
}

/// `f` of `SAFE.f(args)` made safe. `rewrite` turns the call of `f` (with placeholders for its
/// computed arguments) into BigQuery's meaning, `None` when DataFusion's function means the same.
pub(crate) fn safe_expr(
    function: &Function,
    rewrite: impl Fn(&Function) -> Result<Option<Expr>, String>,
) -> Result<Expr, String> {
    let mut inner = function.clone();
    inner.name = ObjectName(function.name.0[1..].to_vec());
    let mut held_out: Vec<Expr> = Vec::new();
    if let FunctionArguments::List(list) = &mut inner.args {
        for arg in &mut list.args {
            let (FunctionArg::Unnamed(FunctionArgExpr::Expr(e))
            | FunctionArg::Named {
                arg: FunctionArgExpr::Expr(e),
                ..
            }) = arg
            else {
                continue;
            };
            // Literals and column names cannot fail, and rewrites inspect literals (date
            // parts, time zones): only computed arguments are held out.
            if matches!(
                e,
                Expr::Value(_) | Expr::Identifier(_) | Expr::CompoundIdentifier(_)
            ) {
                continue;
            }
            let placeholder =
                Expr::Identifier(Ident::new(format!("{PLACEHOLDER}{}", held_out.len())));
            held_out.push(std::mem::replace(e, placeholder));
        }
    }
    let mut template = rewrite(&inner)?.unwrap_or(Expr::Function(inner));
    if let ControlFlow::Break(message) = template.visit(&mut MakeSafe {
        held_out: &held_out,
    }) {
        return Err(message);
    }
    Ok(template)
}

/// Turns a rewritten call into its safe form and puts the held-out arguments back.
struct MakeSafe<'a> {
    held_out: &'a [Expr],
}

impl VisitorMut for MakeSafe<'_> {
    type Break = String;

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<String> {
        match expr {
            Expr::Identifier(ident) if ident.value.starts_with(PLACEHOLDER) => {
                let index: usize = ident.value[PLACEHOLDER.len()..]
                    .parse()
                    .unwrap_or(usize::MAX);
                match self.held_out.get(index) {
                    Some(arg) => *expr = arg.clone(),
                    None => return ControlFlow::Break(format!("SAFE.: lost argument {index}")),
                }
            }
            Expr::Function(f) if f.name.0.len() == 1 => {
                let name = match &f.name.0[0] {
                    ObjectNamePart::Identifier(ident) => ident.value.to_lowercase(),
                    other => other.to_string().to_lowercase(),
                };
                if name == "bq_error" {
                    *expr = Expr::value(Value::Null);
                } else if !name.starts_with(TWIN_PREFIX) {
                    f.name = ObjectName::from(vec![Ident::new(format!("{TWIN_PREFIX}{name}"))]);
                }
            }
            // Division and modulo by zero: NULL.
            Expr::BinaryOp {
                right,
                op: op @ (BinaryOperator::Divide | BinaryOperator::Modulo),
                left,
            } => {
                let zero = Expr::BinaryOp {
                    left: right.clone(),
                    op: BinaryOperator::Eq,
                    right: Box::new(Expr::value(Value::Number("0".into(), false))),
                };
                let operation = Expr::BinaryOp {
                    left: left.clone(),
                    op: op.clone(),
                    right: right.clone(),
                };
                *expr = Expr::Case {
                    case_token: AttachedToken::empty(),
                    end_token: AttachedToken::empty(),
                    operand: None,
                    conditions: vec![CaseWhen {
                        condition: zero,
                        result: Expr::value(Value::Null),
                    }],
                    else_result: Some(Box::new(operation)),
                };
            }
            Expr::Cast { kind, .. } => *kind = CastKind::TryCast,
            _ => {}
        }
        ControlFlow::Continue(())
    }

    // Placeholders are replaced after their parents were visited, so the arguments put back
    // are never made safe themselves.
}

/// The safe twin of a scalar function: same signature and return type, NULL where the
/// function fails.
#[derive(Debug, PartialEq, Eq, Hash)]
struct SafeTwin {
    name: String,
    inner: Arc<ScalarUDF>,
}

impl ScalarUDFImpl for SafeTwin {
    fn name(&self) -> &str {
        &self.name
    }
    fn signature(&self) -> &Signature {
        self.inner.signature()
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let field = self.inner.return_field_from_args(args)?;
        Ok(Arc::new(Field::clone(&field).with_nullable(true)))
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let attempt = ScalarFunctionArgs {
            args: args.args.clone(),
            arg_fields: args.arg_fields.clone(),
            number_rows: args.number_rows,
            return_field: Arc::clone(&args.return_field),
            config_options: Arc::clone(&args.config_options),
        };
        if let Ok(value) = self.inner.invoke_with_args(attempt) {
            return Ok(value);
        }
        let data_type = args.return_field.data_type().clone();
        let any_array = args
            .args
            .iter()
            .any(|a| matches!(a, ColumnarValue::Array(_)));
        if !any_array {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from(&data_type)?));
        }
        // Row by row: NULL where the function fails.
        let mut rows: Vec<ArrayRef> = Vec::with_capacity(args.number_rows);
        for row in 0..args.number_rows {
            let one = ScalarFunctionArgs {
                args: args
                    .args
                    .iter()
                    .map(|a| match a {
                        ColumnarValue::Array(array) => ColumnarValue::Array(array.slice(row, 1)),
                        ColumnarValue::Scalar(s) => ColumnarValue::Scalar(s.clone()),
                    })
                    .collect(),
                arg_fields: args.arg_fields.clone(),
                number_rows: 1,
                return_field: Arc::clone(&args.return_field),
                config_options: Arc::clone(&args.config_options),
            };
            let value = match self.inner.invoke_with_args(one) {
                Ok(ColumnarValue::Array(array)) => array,
                Ok(ColumnarValue::Scalar(s)) => s.to_array_of_size(1)?,
                Err(_) => new_null_array(&data_type, 1),
            };
            rows.push(value);
        }
        let refs: Vec<&dyn datafusion::arrow::array::Array> =
            rows.iter().map(|a| a.as_ref()).collect();
        Ok(ColumnarValue::Array(concat(&refs)?))
    }
}
