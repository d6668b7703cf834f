//! `TO_JSON_STRING(value[, pretty_print])` — `bq_to_json_string`: a value of any type as JSON
//! text, with BigQuery's encodings:
//! <https://cloud.google.com/bigquery/docs/reference/standard-sql/json_functions#json_encodings>
//!
//! - NULL is `null`; BOOL `true`/`false`.
//! - INT64 is a number within [-2^53, 2^53] and a quoted string outside (beyond what a JSON
//!   reader's double keeps exactly); NUMERIC the same when it has no fractional part, a quoted
//!   string otherwise (`"1.5"`).
//! - FLOAT64 as `CAST(x AS STRING)` gives it (`1`, `0.1`, `1e+20`); NaN and ±infinity are the
//!   strings `"NaN"`, `"Infinity"`, `"-Infinity"`.
//! - STRING quoted and escaped (`"`, `\` and U+0000–U+001F); BYTES base64 in quotes.
//! - DATE `"2017-01-02"`; DATETIME `"2017-01-02T03:04:05.6"`; TIMESTAMP
//!   `"2017-01-02T03:04:05.6Z"` (fractional seconds only when non-zero).
//! - ARRAY `[…]`; STRUCT `{"field":…}` in field order.
//!
//! Compact by default (`{"a":1,"b":[1,2]}`); `pretty_print` true puts each member and element
//! on its own line indented by two spaces.

use std::fmt::Write as _;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float64Type, Int64Type, TimeUnit,
    TimestampMicrosecondType,
};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use super::scalar::{decimal_text, float_text, fraction};

/// The UDF of this module, to register in a session.
pub fn udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(ToJsonString {
        signature: Signature::user_defined(Volatility::Immutable),
    })
}

/// 2^53: the largest integer a JSON reader's double holds exactly.
const EXACT: i128 = 1 << 53;

#[derive(Debug, PartialEq, Eq, Hash)]
struct ToJsonString {
    signature: Signature,
}

impl ScalarUDFImpl for ToJsonString {
    fn name(&self) -> &str {
        "bq_to_json_string"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        match args {
            [value] => Ok(vec![value.clone()]),
            [value, _] => Ok(vec![value.clone(), DataType::Boolean]),
            _ => exec_err!("TO_JSON_STRING takes 1 or 2 arguments, got {}", args.len()),
        }
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let (scalar, rows) = super::udf::shape(&args);
        let arrays = super::udf::arrays(&args, rows)?;
        let values = prepared(&arrays[0])?;
        let pretty = arrays.get(1).map(|a| a.as_boolean().clone());
        let mut out: Vec<Option<String>> = Vec::with_capacity(rows);
        for row in 0..rows {
            let pretty = match &pretty {
                Some(p) if p.is_null(row) => {
                    out.push(None);
                    continue;
                }
                Some(p) => p.value(row),
                None => false,
            };
            let mut text = String::new();
            write_json(&values, row, pretty.then_some(0), &mut text)?;
            out.push(Some(text));
        }
        let array: ArrayRef = Arc::new(StringArray::from(out));
        super::udf::output(array, scalar)
    }
}

/// Casts the leaves that have several Arrow representations to one (Int64, Float64,
/// microsecond timestamps, Utf8), keeping lists and structs.
fn prepared(array: &ArrayRef) -> Result<ArrayRef> {
    use datafusion::arrow::compute::cast;
    Ok(match array.data_type() {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => cast(array, &DataType::Int64)?,
        DataType::Float16 | DataType::Float32 => cast(array, &DataType::Float64)?,
        DataType::LargeUtf8 | DataType::Utf8View => cast(array, &DataType::Utf8)?,
        DataType::LargeBinary | DataType::BinaryView => cast(array, &DataType::Binary)?,
        DataType::Timestamp(unit, tz) if *unit != TimeUnit::Microsecond => cast(
            array,
            &DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
        )?,
        DataType::List(_) => {
            let list = array.as_list::<i32>();
            let values = prepared(list.values())?;
            let field = Arc::new(datafusion::arrow::datatypes::Field::new_list_field(
                values.data_type().clone(),
                true,
            ));
            Arc::new(datafusion::arrow::array::ListArray::try_new(
                field,
                list.offsets().clone(),
                values,
                list.nulls().cloned(),
            )?)
        }
        DataType::LargeList(_) | DataType::FixedSizeList(..) | DataType::ListView(_) => {
            let field = datafusion::arrow::datatypes::Field::new_list_field(
                match array.data_type() {
                    DataType::LargeList(f)
                    | DataType::FixedSizeList(f, _)
                    | DataType::ListView(f) => f.data_type().clone(),
                    _ => DataType::Null,
                },
                true,
            );
            prepared(&cast(array, &DataType::List(Arc::new(field)))?)?
        }
        DataType::Struct(_) => {
            let s = array.as_struct();
            let columns = s
                .columns()
                .iter()
                .map(prepared)
                .collect::<Result<Vec<_>>>()?;
            let fields: Vec<_> = s
                .fields()
                .iter()
                .zip(&columns)
                .map(|(f, c)| {
                    Arc::new(datafusion::arrow::datatypes::Field::new(
                        f.name(),
                        c.data_type().clone(),
                        true,
                    ))
                })
                .collect();
            Arc::new(datafusion::arrow::array::StructArray::try_new(
                fields.into(),
                columns,
                s.nulls().cloned(),
            )?)
        }
        _ => Arc::clone(array),
    })
}

/// Writes row `row` of `array` as JSON; `indent` is the current depth when pretty printing.
fn write_json(array: &ArrayRef, row: usize, indent: Option<usize>, out: &mut String) -> Result<()> {
    if array.is_null(row) {
        out.push_str("null");
        return Ok(());
    }
    match array.data_type() {
        DataType::Null => out.push_str("null"),
        DataType::Boolean => out.push_str(if array.as_boolean().value(row) {
            "true"
        } else {
            "false"
        }),
        DataType::Int64 => {
            let v = array.as_primitive::<Int64Type>().value(row);
            number_or_string(i128::from(v).abs() <= EXACT, &v.to_string(), out);
        }
        DataType::UInt64 => {
            let v = array
                .as_primitive::<datafusion::arrow::datatypes::UInt64Type>()
                .value(row);
            number_or_string(i128::from(v) <= EXACT, &v.to_string(), out);
        }
        DataType::Float64 => {
            let x = array.as_primitive::<Float64Type>().value(row);
            if x.is_nan() {
                out.push_str("\"NaN\"");
            } else if x.is_infinite() {
                out.push_str(if x > 0.0 {
                    "\"Infinity\""
                } else {
                    "\"-Infinity\""
                });
            } else {
                out.push_str(&float_text(x));
            }
        }
        DataType::Decimal128(_, scale) => {
            let v = array.as_primitive::<Decimal128Type>().value(row);
            let text = decimal_text(v, *scale);
            let whole = !text.contains('.');
            let small = text
                .trim_start_matches('-')
                .parse::<i128>()
                .is_ok_and(|n| n <= EXACT);
            number_or_string(whole && small, &text, out);
        }
        DataType::Utf8 => quoted(array.as_string::<i32>().value(row), out),
        DataType::Binary => {
            use base64::Engine as _;
            let bytes = array.as_binary::<i32>().value(row);
            quoted(
                &base64::engine::general_purpose::STANDARD.encode(bytes),
                out,
            );
        }
        DataType::Date32 => {
            let days = array.as_primitive::<Date32Type>().value(row);
            let date = chrono::NaiveDate::from_num_days_from_ce_opt(days + 719_163);
            match date {
                Some(d) => quoted(&d.format("%Y-%m-%d").to_string(), out),
                None => return exec_err!("TO_JSON_STRING: the date {days} is out of range"),
            }
        }
        DataType::Timestamp(_, tz) => {
            let micros = array.as_primitive::<TimestampMicrosecondType>().value(row);
            let Some(t) = chrono::DateTime::from_timestamp_micros(micros) else {
                return exec_err!("TO_JSON_STRING: the timestamp {micros} µs is out of range");
            };
            let text = format!(
                "{}{}{}",
                t.naive_utc().format("%Y-%m-%dT%H:%M:%S"),
                fraction(micros),
                if tz.is_some() { "Z" } else { "" }
            );
            quoted(&text, out);
        }
        DataType::List(_) => {
            let list = array.as_list::<i32>();
            let values = list.values();
            let offsets = list.value_offsets();
            let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
            out.push('[');
            for (n, i) in (start..end).enumerate() {
                if n > 0 {
                    out.push(',');
                }
                newline(indent.map(|d| d + 1), out);
                write_json(values, i, indent.map(|d| d + 1), out)?;
            }
            if end > start {
                newline(indent, out);
            }
            out.push(']');
        }
        DataType::Struct(fields) => {
            let s = array.as_struct();
            out.push('{');
            for (n, (field, column)) in fields.iter().zip(s.columns()).enumerate() {
                if n > 0 {
                    out.push(',');
                }
                newline(indent.map(|d| d + 1), out);
                quoted(field.name(), out);
                out.push_str(if indent.is_some() { ": " } else { ":" });
                write_json(column, row, indent.map(|d| d + 1), out)?;
            }
            if !fields.is_empty() {
                newline(indent, out);
            }
            out.push('}');
        }
        other => {
            return exec_err!(
                "TO_JSON_STRING of a {other} value is not supported by the embedded warehouse"
            );
        }
    }
    Ok(())
}

fn number_or_string(number: bool, text: &str, out: &mut String) {
    if number {
        out.push_str(text);
    } else {
        quoted(text, out);
    }
}

/// A JSON string: `"`, `\` and U+0000–U+001F escaped.
fn quoted(text: &str, out: &mut String) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// When pretty printing: a line break and `depth` levels of two-space indentation.
fn newline(depth: Option<usize>, out: &mut String) {
    if let Some(depth) = depth {
        out.push('\n');
        out.push_str(&"  ".repeat(depth));
    }
}
