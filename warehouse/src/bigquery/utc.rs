//! `TIMESTAMP_MICROS(n)` and `DATE(timestamp)` on UTC timestamps by arithmetic.
//!
//! A BigQuery TIMESTAMP is an instant: microseconds since the epoch, dated in UTC
//! (<https://cloud.google.com/bigquery/docs/reference/standard-sql/data-types#timestamp_type>).
//! Arrow's casts from a zone-less timestamp to one in `UTC`, and from a `UTC` timestamp to a
//! date, look the zone up in the IANA database for every value (chrono-tz): about 40 ns a
//! value, 0.3 s of CPU for the 3.6 million timestamps of the one-million-order history's order
//! lines (issue 17). The same answers need no zone: the number itself, and a floor division by
//! a day.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Int64Type, TimeUnit, TimestampMicrosecondType,
};
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use super::planner::UTC;

/// Microseconds in a day.
const DAY_MICROS: i64 = 86_400_000_000;

/// The UDFs of this module, to register in a session.
pub fn all() -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::new_from_impl(TimestampMicros {
            signature: Signature::uniform(1, vec![DataType::Int64], Volatility::Immutable),
        }),
        ScalarUDF::new_from_impl(DateOf {
            signature: Signature::any(1, Volatility::Immutable),
        }),
    ]
}

/// `bq_timestamp_micros(n)`: INT64 microseconds since the epoch as a TIMESTAMP (µs, UTC) —
/// the same number (BigQuery's `TIMESTAMP_MICROS`).
#[derive(Debug, PartialEq, Eq, Hash)]
struct TimestampMicros {
    signature: Signature,
}

impl ScalarUDFImpl for TimestampMicros {
    fn name(&self) -> &str {
        "bq_timestamp_micros"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let (scalar, rows) = super::udf::shape(&args);
        let micros = args.args[0].to_array(rows)?;
        let out: ArrayRef = Arc::new(
            micros
                .as_primitive::<Int64Type>()
                .reinterpret_cast::<TimestampMicrosecondType>()
                .with_timezone(UTC),
        );
        super::udf::output(out, scalar)
    }
}

/// `bq_date(x)`: BigQuery's one-argument `DATE(x)`. A TIMESTAMP (µs, UTC): its UTC date,
/// ⌊µs ÷ 86,400,000,000⌋ days since the epoch; anything else: `CAST(x AS DATE)`, an error for
/// a value that is not a date (never NULL for it).
#[derive(Debug, PartialEq, Eq, Hash)]
struct DateOf {
    signature: Signature,
}

impl ScalarUDFImpl for DateOf {
    fn name(&self) -> &str {
        "bq_date"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Date32)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let (scalar, rows) = super::udf::shape(&args);
        let value = args.args[0].to_array(rows)?;
        let out: ArrayRef = match value.data_type() {
            DataType::Timestamp(TimeUnit::Microsecond, Some(tz)) if tz.as_ref() == UTC => {
                Arc::new(
                    value
                        .as_primitive::<TimestampMicrosecondType>()
                        .unary::<_, Date32Type>(|micros| {
                            // |µs| ≤ 2⁶³ gives at most 106,751,992 days: an i32.
                            micros.div_euclid(DAY_MICROS) as i32
                        }),
                )
            }
            _ => cast_with_options(
                &value,
                &DataType::Date32,
                &CastOptions {
                    safe: false,
                    ..CastOptions::default()
                },
            )?,
        };
        debug_assert_eq!(out.len(), value.len());
        super::udf::output(out, scalar)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Date32Array, Int64Array, TimestampMicrosecondArray};
    use datafusion::arrow::datatypes::Field;
    use datafusion::config::ConfigOptions;

    fn invoke(udf: &ScalarUDF, value: ArrayRef) -> ArrayRef {
        try_invoke(udf, value).expect("invoke")
    }

    fn try_invoke(udf: &ScalarUDF, value: ArrayRef) -> Result<ArrayRef> {
        let rows = value.len();
        let field = Arc::new(Field::new("x", value.data_type().clone(), true));
        let return_type = udf
            .return_type(std::slice::from_ref(value.data_type()))
            .expect("type");
        let out = udf.invoke_with_args(ScalarFunctionArgs {
            args: vec![ColumnarValue::Array(value)],
            arg_fields: vec![field],
            number_rows: rows,
            return_field: Arc::new(Field::new("out", return_type, true)),
            config_options: Arc::new(ConfigOptions::default()),
        })?;
        match out {
            ColumnarValue::Array(a) => Ok(a),
            ColumnarValue::Scalar(s) => s.to_array(),
        }
    }

    #[test]
    fn dates_of_utc_timestamps_equal_arrows_cast_around_the_epoch_and_far_out() {
        let micros: Vec<Option<i64>> = vec![
            Some(0),
            Some(-1),
            Some(DAY_MICROS - 1),
            Some(DAY_MICROS),
            Some(-DAY_MICROS),
            Some(-DAY_MICROS - 1),
            Some(1_735_689_599_999_999),   // 2024-12-31 23:59:59.999999
            Some(253_402_300_799_999_999), // 9999-12-31 23:59:59.999999
            Some(-62_135_596_800_000_000), // 0001-01-01 00:00:00
            None,
        ];
        let timestamps: ArrayRef =
            Arc::new(TimestampMicrosecondArray::from(micros.clone()).with_timezone(UTC));
        let [timestamp_micros, date] = &all()[..] else {
            panic!("two UDFs")
        };
        let expected = cast_with_options(
            &timestamps,
            &DataType::Date32,
            &CastOptions {
                safe: false,
                ..CastOptions::default()
            },
        )
        .expect("arrow's cast");
        let got = invoke(date, timestamps.clone());
        assert_eq!(
            got.as_primitive::<Date32Type>(),
            expected.as_primitive::<Date32Type>()
        );
        let dates: &Date32Array = got.as_primitive();
        assert_eq!(
            dates.value(1),
            -1,
            "the instant before the epoch is 1969-12-31"
        );
        assert!(dates.is_null(9));

        // TIMESTAMP_MICROS keeps the number and says UTC.
        let back = invoke(timestamp_micros, Arc::new(Int64Array::from(micros)));
        assert_eq!(back.as_ref(), timestamps.as_ref());

        // Anything else is cast: a string date, and a bad one is an error, not NULL.
        let text: ArrayRef = Arc::new(datafusion::arrow::array::StringArray::from(vec![
            "2024-02-29",
        ]));
        let got = invoke(date, text);
        assert_eq!(got.as_primitive::<Date32Type>().value(0), 19_782);
        let bad: ArrayRef = Arc::new(datafusion::arrow::array::StringArray::from(vec![
            "2024-02-30",
        ]));
        assert!(try_invoke(date, bad).is_err());
    }
}
