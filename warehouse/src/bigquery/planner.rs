//! BigQuery types and operators in DataFusion's planner.
//!
//! Types: `INT64`, `FLOAT64`, `NUMERIC` (DECIMAL(38, 9)), `BIGNUMERIC` (DECIMAL(76, 38)),
//! `STRING`, `BOOL`, `BYTES`, `TIMESTAMP` (microseconds, UTC), `DATETIME` (microseconds, no
//! zone), `DATE`. Operators: `/` on two integers is a FLOAT64 division, as in BigQuery.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, FieldRef, TimeUnit};
use datafusion::common::{DFSchema, Result};
use datafusion::logical_expr::expr::Cast;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr, TypePlanner};
use datafusion::logical_expr::{Expr, ExprSchemable};
use datafusion::sql::sqlparser::ast::{self, BinaryOperator, ExactNumberInfo};

use super::scalar::CheckedOp;

/// The UTC zone of BigQuery `TIMESTAMP`.
pub const UTC: &str = "UTC";

/// Plans BigQuery's type names.
#[derive(Debug, Default)]
pub struct BigQueryTypes;

fn field(data_type: DataType) -> Option<FieldRef> {
    Some(Arc::new(Field::new("", data_type, true)))
}

impl TypePlanner for BigQueryTypes {
    fn plan_type_field(&self, sql_type: &ast::DataType) -> Result<Option<FieldRef>> {
        use ast::DataType as T;
        Ok(match sql_type {
            T::Int64 | T::Integer(_) | T::Int(_) | T::BigInt(_) => field(DataType::Int64),
            T::Float64 | T::Double(_) | T::DoublePrecision | T::Float(_) => {
                field(DataType::Float64)
            }
            T::Numeric(info) | T::Decimal(info) | T::Dec(info) => match info {
                ExactNumberInfo::None => field(DataType::Decimal128(38, 9)),
                ExactNumberInfo::Precision(p) => field(DataType::Decimal128(*p as u8, 0)),
                ExactNumberInfo::PrecisionAndScale(p, s) => {
                    field(DataType::Decimal128(*p as u8, *s as i8))
                }
            },
            T::BigNumeric(ExactNumberInfo::None) | T::BigDecimal(ExactNumberInfo::None) => {
                field(DataType::Decimal256(76, 38))
            }
            T::String(_) => field(DataType::Utf8),
            T::Bool | T::Boolean => field(DataType::Boolean),
            T::Bytes(_) => field(DataType::Binary),
            T::Timestamp(_, _) => {
                field(DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())))
            }
            T::Datetime(_) => field(DataType::Timestamp(TimeUnit::Microsecond, None)),
            _ => None,
        })
    }
}

/// Plans BigQuery's operator semantics.
#[derive(Debug, Default)]
pub struct BigQueryOperators;

impl ExprPlanner for BigQueryOperators {
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        schema: &DFSchema,
    ) -> Result<PlannerResult<RawBinaryExpr>> {
        let type_of = |e: &Expr| e.get_type(schema).ok();
        // DATE ± INTERVAL is a DATETIME in BigQuery (DataFusion keeps a DATE).
        if matches!(expr.op, BinaryOperator::Plus | BinaryOperator::Minus) {
            let is_date =
                |t: &Option<DataType>| matches!(t, Some(DataType::Date32 | DataType::Date64));
            let is_interval = |t: &Option<DataType>| matches!(t, Some(DataType::Interval(_)));
            let (l, r) = (type_of(&expr.left), type_of(&expr.right));
            let datetime = |e: Expr| {
                Expr::Cast(Cast::new(
                    Box::new(e),
                    DataType::Timestamp(TimeUnit::Microsecond, None),
                ))
            };
            if is_date(&l) && is_interval(&r) {
                return Ok(PlannerResult::Original(RawBinaryExpr {
                    op: expr.op,
                    left: datetime(expr.left),
                    right: expr.right,
                }));
            }
            if is_interval(&l) && is_date(&r) && expr.op == BinaryOperator::Plus {
                return Ok(PlannerResult::Original(RawBinaryExpr {
                    op: expr.op,
                    left: expr.left,
                    right: datetime(expr.right),
                }));
            }
        }
        let integer = |e: &Expr| {
            e.get_type(schema)
                .map(|t| t.is_integer() || t == DataType::Null)
                .unwrap_or(false)
        };
        // INT64 + - * raise an error on overflow in BigQuery; DataFusion's wrap around.
        let checked = match expr.op {
            BinaryOperator::Plus => Some(CheckedOp::Add),
            BinaryOperator::Minus => Some(CheckedOp::Sub),
            BinaryOperator::Multiply => Some(CheckedOp::Mul),
            _ => None,
        };
        if let Some(op) = checked
            && integer(&expr.left)
            && integer(&expr.right)
        {
            let int64 = |e: Expr| Expr::Cast(Cast::new(Box::new(e), DataType::Int64));
            return Ok(PlannerResult::Planned(Expr::ScalarFunction(
                datafusion::logical_expr::expr::ScalarFunction::new_udf(
                    Arc::new(super::scalar::checked(op)),
                    vec![int64(expr.left), int64(expr.right)],
                ),
            )));
        }
        if expr.op != BinaryOperator::Divide {
            return Ok(PlannerResult::Original(expr));
        }
        // INT64 / INT64 is FLOAT64; FLOAT64 division by zero is an error (DataFusion: ±inf).
        let float_or_int = |e: &Expr| {
            e.get_type(schema)
                .map(|t| t.is_integer() || t.is_floating() || t == DataType::Null)
                .unwrap_or(false)
        };
        if float_or_int(&expr.left) && float_or_int(&expr.right) {
            let double = |e: Expr| Expr::Cast(Cast::new(Box::new(e), DataType::Float64));
            return Ok(PlannerResult::Planned(Expr::ScalarFunction(
                datafusion::logical_expr::expr::ScalarFunction::new_udf(
                    Arc::new(super::scalar::divide()),
                    vec![double(expr.left), double(expr.right)],
                ),
            )));
        }
        Ok(PlannerResult::Original(expr))
    }
}
