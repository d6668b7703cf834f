//! What every BigQuery scalar UDF does around its row loop: all-scalar calls (constant
//! folding, `SELECT f('x')`) are computed on one row and answered as a scalar; otherwise every
//! argument is expanded to the batch's rows.

use datafusion::arrow::array::ArrayRef;
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs};

/// Whether every argument is a scalar, and the number of rows to compute (1 if so).
pub(crate) fn shape(args: &ScalarFunctionArgs) -> (bool, usize) {
    let scalar = args
        .args
        .iter()
        .all(|a| matches!(a, ColumnarValue::Scalar(_)));
    (scalar, if scalar { 1 } else { args.number_rows })
}

/// Every argument as an array of `rows` rows.
pub(crate) fn arrays(args: &ScalarFunctionArgs, rows: usize) -> Result<Vec<ArrayRef>> {
    args.args.iter().map(|a| a.to_array(rows)).collect()
}

/// The result: a scalar when every argument was one, else the array.
pub(crate) fn output(array: ArrayRef, scalar: bool) -> Result<ColumnarValue> {
    Ok(if scalar {
        ColumnarValue::Scalar(ScalarValue::try_from_array(&array, 0)?)
    } else {
        ColumnarValue::Array(array)
    })
}
