//! BigQuery date and time functions as DataFusion scalar UDFs, with BigQuery's semantics:
//! weeks start on Sunday unless `WEEK(<WEEKDAY>)`/`ISOWEEK` says otherwise, `DAYOFWEEK` is
//! 1 (Sunday) to 7, month arithmetic clamps to the month's last day, `DATE_DIFF` counts part
//! boundaries (`TIMESTAMP_DIFF` counts whole intervals), format strings are BigQuery's
//! format elements (strftime plus `%Q` and `%E*S`/`%E<n>S`).
//!
//! The rewrite in [`super::rewrite`] turns BigQuery calls into these (`bq_date_trunc(d, 'MONTH')`).

use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{Datelike, Months, NaiveDate, NaiveDateTime, Timelike, Weekday};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Int64Type, TimeUnit, TimestampMicrosecondType,
};
use datafusion::common::{DataFusionError, Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// Every BigQuery UDF, to register in a session.
pub fn all() -> Vec<ScalarUDF> {
    [
        Kind::Extract,
        Kind::DateAdd,
        Kind::DateTrunc,
        Kind::DateDiff,
        Kind::Format,
        Kind::ParseDate,
        Kind::ParseTimestamp,
        Kind::ParseDatetime,
        Kind::Div,
        Kind::Error,
    ]
    .into_iter()
    .map(|kind| ScalarUDF::new_from_impl(BigQueryFunction::new(kind)))
    .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Extract,
    DateAdd,
    DateTrunc,
    DateDiff,
    Format,
    ParseDate,
    ParseTimestamp,
    ParseDatetime,
    Div,
    Error,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct BigQueryFunction {
    kind: Kind,
    signature: Signature,
}

impl BigQueryFunction {
    fn new(kind: Kind) -> Self {
        let volatility = if kind == Kind::Error {
            Volatility::Volatile
        } else {
            Volatility::Immutable
        };
        BigQueryFunction {
            kind,
            signature: Signature::user_defined(volatility),
        }
    }
}

const EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// A DATE or a TIMESTAMP/DATETIME (UTC wall time, microseconds).
#[derive(Debug, Clone, Copy)]
enum Temporal {
    Date(NaiveDate),
    Time(NaiveDateTime),
}

impl Temporal {
    fn date(self) -> NaiveDate {
        match self {
            Temporal::Date(d) => d,
            Temporal::Time(t) => t.date(),
        }
    }

    fn with_date(self, date: NaiveDate) -> Temporal {
        match self {
            Temporal::Date(_) => Temporal::Date(date),
            Temporal::Time(t) => Temporal::Time(date.and_time(t.time())),
        }
    }
}

/// The temporal type an argument is coerced to: strings and dates become DATE, timestamps
/// become microsecond timestamps keeping their zone.
fn temporal_type(t: &DataType) -> Result<DataType> {
    match t {
        DataType::Date32 | DataType::Date64 | DataType::Null => Ok(DataType::Date32),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Ok(DataType::Date32),
        DataType::Timestamp(_, tz) => Ok(DataType::Timestamp(TimeUnit::Microsecond, tz.clone())),
        other => exec_err!("expected a DATE, DATETIME or TIMESTAMP, got {other}"),
    }
}

fn read(array: &ArrayRef, row: usize) -> Result<Option<Temporal>> {
    if array.is_null(row) {
        return Ok(None);
    }
    match array.data_type() {
        DataType::Date32 => {
            let days = array.as_primitive::<Date32Type>().value(row);
            NaiveDate::from_num_days_from_ce_opt(days + EPOCH_DAYS_FROM_CE)
                .map(|d| Some(Temporal::Date(d)))
                .ok_or_else(|| DataFusionError::Execution(format!("date out of range: {days}")))
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            let micros = array.as_primitive::<TimestampMicrosecondType>().value(row);
            chrono::DateTime::from_timestamp_micros(micros)
                .map(|t| Some(Temporal::Time(t.naive_utc())))
                .ok_or_else(|| {
                    DataFusionError::Execution(format!("timestamp out of range: {micros}"))
                })
        }
        other => exec_err!("expected a DATE or TIMESTAMP, got {other}"),
    }
}

fn text(array: &ArrayRef, row: usize) -> Option<&str> {
    if array.is_null(row) {
        return None;
    }
    match array.data_type() {
        DataType::Utf8 => Some(array.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => Some(array.as_string::<i64>().value(row)),
        DataType::Utf8View => Some(array.as_string_view().value(row)),
        _ => None,
    }
}

fn int(array: &ArrayRef, row: usize) -> Option<i64> {
    (!array.is_null(row)).then(|| array.as_primitive::<Int64Type>().value(row))
}

/// Builds an array of `data_type` (DATE or microsecond TIMESTAMP) from values.
fn temporal_array(values: Vec<Option<Temporal>>, data_type: &DataType) -> Result<ArrayRef> {
    match data_type {
        DataType::Date32 => {
            Ok(Arc::new(Date32Array::from_iter(values.into_iter().map(
                |v| v.map(|t| t.date().num_days_from_ce() - EPOCH_DAYS_FROM_CE),
            ))))
        }
        DataType::Timestamp(TimeUnit::Microsecond, tz) => {
            let micros = values.into_iter().map(|v| {
                v.map(|t| match t {
                    Temporal::Time(t) => t.and_utc().timestamp_micros(),
                    Temporal::Date(d) => d
                        .and_time(chrono::NaiveTime::MIN)
                        .and_utc()
                        .timestamp_micros(),
                })
            });
            Ok(Arc::new(
                TimestampMicrosecondArray::from_iter(micros).with_timezone_opt(tz.clone()),
            ))
        }
        other => exec_err!("cannot build a {other} result"),
    }
}

fn weekday(name: &str) -> Option<Weekday> {
    Some(match name {
        "SUNDAY" => Weekday::Sun,
        "MONDAY" => Weekday::Mon,
        "TUESDAY" => Weekday::Tue,
        "WEDNESDAY" => Weekday::Wed,
        "THURSDAY" => Weekday::Thu,
        "FRIDAY" => Weekday::Fri,
        "SATURDAY" => Weekday::Sat,
        _ => return None,
    })
}

/// `WEEK` (Sunday), `WEEK(MONDAY)`… -> the weekday weeks start on.
fn week_start(part: &str) -> Option<Weekday> {
    match part {
        "WEEK" => Some(Weekday::Sun),
        "ISOWEEK" => Some(Weekday::Mon),
        _ => part
            .strip_prefix("WEEK(")
            .and_then(|p| p.strip_suffix(')'))
            .and_then(weekday),
    }
}

fn start_of_week(date: NaiveDate, start: Weekday) -> NaiveDate {
    let back = (7 + date.weekday().num_days_from_sunday() - start.num_days_from_sunday()) % 7;
    date - chrono::Duration::days(i64::from(back))
}

/// Microseconds in a sub-day part.
fn micros_of(part: &str) -> Option<i64> {
    Some(match part {
        "MICROSECOND" => 1,
        "MILLISECOND" => 1_000,
        "SECOND" => 1_000_000,
        "MINUTE" => 60_000_000,
        "HOUR" => 3_600_000_000,
        "DAY" => 86_400_000_000,
        _ => return None,
    })
}

fn bad_part(function: &str, part: &str) -> DataFusionError {
    DataFusionError::Execution(format!("{function}: unsupported date part `{part}`"))
}

fn trunc(value: Temporal, part: &str) -> Result<Temporal> {
    let date = value.date();
    let day = |d: NaiveDate| match value {
        Temporal::Date(_) => Temporal::Date(d),
        Temporal::Time(_) => Temporal::Time(d.and_time(chrono::NaiveTime::MIN)),
    };
    if let Some(start) = week_start(part) {
        return Ok(day(start_of_week(date, start)));
    }
    let first = |y: i32, m: u32| {
        NaiveDate::from_ymd_opt(y, m, 1).ok_or_else(|| bad_part("DATE_TRUNC", part))
    };
    Ok(match part {
        "DAY" => day(date),
        "MONTH" => day(first(date.year(), date.month())?),
        "QUARTER" => day(first(date.year(), (date.month0() / 3) * 3 + 1)?),
        "YEAR" => day(first(date.year(), 1)?),
        "ISOYEAR" => day(
            NaiveDate::from_isoywd_opt(date.iso_week().year(), 1, Weekday::Mon)
                .ok_or_else(|| bad_part("DATE_TRUNC", part))?,
        ),
        _ => match (value, micros_of(part)) {
            (Temporal::Time(t), Some(unit)) => {
                let micros = t.and_utc().timestamp_micros();
                let truncated = micros - micros.rem_euclid(unit);
                Temporal::Time(
                    chrono::DateTime::from_timestamp_micros(truncated)
                        .ok_or_else(|| bad_part("TIMESTAMP_TRUNC", part))?
                        .naive_utc(),
                )
            }
            _ => return Err(bad_part("DATE_TRUNC", part)),
        },
    })
}

fn add(value: Temporal, n: i64, part: &str) -> Result<Temporal> {
    let overflow = || DataFusionError::Execution(format!("DATE_ADD: {n} {part} overflows"));
    let months = |m: i64| -> Result<Temporal> {
        let date = value.date();
        let shifted = if m >= 0 {
            date.checked_add_months(Months::new(u32::try_from(m).map_err(|_| overflow())?))
        } else {
            date.checked_sub_months(Months::new(u32::try_from(-m).map_err(|_| overflow())?))
        };
        Ok(value.with_date(shifted.ok_or_else(overflow)?))
    };
    match part {
        "DAY" | "WEEK" => {
            let days = if part == "WEEK" {
                n.checked_mul(7).ok_or_else(overflow)?
            } else {
                n
            };
            let date = value
                .date()
                .checked_add_signed(chrono::Duration::try_days(days).ok_or_else(overflow)?)
                .ok_or_else(overflow)?;
            Ok(value.with_date(date))
        }
        "MONTH" => months(n),
        "QUARTER" => months(n.checked_mul(3).ok_or_else(overflow)?),
        "YEAR" => months(n.checked_mul(12).ok_or_else(overflow)?),
        _ => match (value, micros_of(part)) {
            (Temporal::Time(t), Some(unit)) => {
                let delta =
                    chrono::Duration::microseconds(n.checked_mul(unit).ok_or_else(overflow)?);
                Ok(Temporal::Time(
                    t.checked_add_signed(delta).ok_or_else(overflow)?,
                ))
            }
            _ => Err(bad_part("DATE_ADD", part)),
        },
    }
}

/// `a - b` in `part`s. `whole_intervals`: TIMESTAMP_DIFF's whole intervals for sub-day and
/// DAY parts; otherwise part boundaries (DATE_DIFF, DATETIME_DIFF).
fn diff(a: Temporal, b: Temporal, part: &str, whole_intervals: bool) -> Result<i64> {
    let (da, db) = (a.date(), b.date());
    if let Some(start) = week_start(part) {
        return Ok((start_of_week(da, start) - start_of_week(db, start)).num_days() / 7);
    }
    let months = |d: NaiveDate| i64::from(d.year()) * 12 + i64::from(d.month0());
    Ok(match part {
        "MONTH" => months(da) - months(db),
        "QUARTER" => months(da) / 3 - months(db) / 3,
        "YEAR" => i64::from(da.year() - db.year()),
        "ISOYEAR" => i64::from(da.iso_week().year() - db.iso_week().year()),
        _ => {
            let unit = micros_of(part).ok_or_else(|| bad_part("DATE_DIFF", part))?;
            match (a, b) {
                (Temporal::Date(_), Temporal::Date(_)) if part == "DAY" => (da - db).num_days(),
                (Temporal::Time(ta), Temporal::Time(tb)) => {
                    let (ma, mb) = (
                        ta.and_utc().timestamp_micros(),
                        tb.and_utc().timestamp_micros(),
                    );
                    if whole_intervals {
                        (ma - mb) / unit
                    } else {
                        ma.div_euclid(unit) - mb.div_euclid(unit)
                    }
                }
                _ => return Err(bad_part("DATE_DIFF", part)),
            }
        }
    })
}

fn extract(value: Temporal, part: &str) -> Result<i64> {
    let date = value.date();
    let time = match value {
        Temporal::Time(t) => Some(t),
        Temporal::Date(_) => None,
    };
    let need_time = || {
        time.ok_or_else(|| DataFusionError::Execution(format!("EXTRACT({part}) needs a TIMESTAMP")))
    };
    Ok(match part {
        "YEAR" => i64::from(date.year()),
        "ISOYEAR" => i64::from(date.iso_week().year()),
        "QUARTER" => i64::from(date.month0() / 3 + 1),
        "MONTH" => i64::from(date.month()),
        "ISOWEEK" => i64::from(date.iso_week().week()),
        "DAY" => i64::from(date.day()),
        "DAYOFWEEK" => i64::from(date.weekday().num_days_from_sunday() + 1),
        "DAYOFYEAR" => i64::from(date.ordinal()),
        "HOUR" => i64::from(need_time()?.hour()),
        "MINUTE" => i64::from(need_time()?.minute()),
        "SECOND" => i64::from(need_time()?.second()),
        "MILLISECOND" => i64::from(need_time()?.nanosecond() / 1_000_000),
        "MICROSECOND" => i64::from(need_time()?.nanosecond() / 1_000),
        _ => match week_start(part) {
            // Weeks numbered from the first `start` day of the year; days before it are week 0.
            Some(start) => {
                let first = NaiveDate::from_ymd_opt(date.year(), 1, 1)
                    .ok_or_else(|| bad_part("EXTRACT", part))?;
                let offset =
                    (7 + start.num_days_from_sunday() - first.weekday().num_days_from_sunday()) % 7;
                let first_start = first + chrono::Duration::days(i64::from(offset));
                if date < first_start {
                    0
                } else {
                    (date - first_start).num_days() / 7 + 1
                }
            }
            None => return Err(bad_part("EXTRACT", part)),
        },
    })
}

/// BigQuery format elements -> chrono's: `%Q` (quarter) is expanded here, `%E*S` and
/// `%E<n>S` become seconds with a fraction.
fn format(format: &str, value: Temporal) -> Result<String> {
    let mut chrono_format = String::with_capacity(format.len());
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            chrono_format.push(c);
            continue;
        }
        match chars.next() {
            Some('Q') => {
                let _ = write!(chrono_format, "{}", value.date().month0() / 3 + 1);
            }
            Some('E') => {
                let mut spec = String::new();
                while let Some(&n) = chars.peek() {
                    chars.next();
                    if n == 'S' {
                        break;
                    }
                    spec.push(n);
                }
                chrono_format.push_str(match spec.as_str() {
                    "*" | "6" => "%S%.6f",
                    "3" => "%S%.3f",
                    _ => "%S",
                });
            }
            Some(other) => {
                chrono_format.push('%');
                chrono_format.push(other);
            }
            None => chrono_format.push('%'),
        }
    }
    let items: Vec<chrono::format::Item<'_>> =
        chrono::format::StrftimeItems::new(&chrono_format).collect();
    if items.contains(&chrono::format::Item::Error) {
        return exec_err!("FORMAT_DATE: invalid format string `{format}`");
    }
    let mut out = String::new();
    let written = match value {
        Temporal::Date(d) => write!(out, "{}", d.format_with_items(items.into_iter())),
        Temporal::Time(t) => write!(out, "{}", t.format_with_items(items.into_iter())),
    };
    written.map(|()| out).map_err(|_| {
        DataFusionError::Execution(format!(
            "FORMAT_DATE: `{format}` needs a time of day, got a DATE"
        ))
    })
}

fn parse_time(format: &str, text: &str) -> Result<NaiveDateTime> {
    if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
        return Ok(t);
    }
    if let Ok(t) = chrono::DateTime::parse_from_str(text, format) {
        return Ok(t.naive_utc());
    }
    NaiveDate::parse_from_str(text, format)
        .map(|d| d.and_time(chrono::NaiveTime::MIN))
        .map_err(|e| {
            DataFusionError::Execution(format!(
                "PARSE_TIMESTAMP: `{text}` does not match `{format}`: {e}"
            ))
        })
}

impl ScalarUDFImpl for BigQueryFunction {
    fn name(&self) -> &str {
        match self.kind {
            Kind::Extract => "bq_extract",
            Kind::DateAdd => "bq_date_add",
            Kind::DateTrunc => "bq_date_trunc",
            Kind::DateDiff => "bq_date_diff",
            Kind::Format => "bq_format",
            Kind::ParseDate => "bq_parse_date",
            Kind::ParseTimestamp => "bq_parse_timestamp",
            Kind::ParseDatetime => "bq_parse_datetime",
            Kind::Div => "bq_div",
            Kind::Error => "bq_error",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        let want = |n: usize| -> Result<()> {
            if args.len() == n {
                Ok(())
            } else {
                exec_err!("{}() takes {n} arguments, got {}", self.name(), args.len())
            }
        };
        Ok(match self.kind {
            Kind::Extract | Kind::Format => {
                want(2)?;
                vec![DataType::Utf8, temporal_type(&args[1])?]
            }
            Kind::DateAdd => {
                want(3)?;
                vec![temporal_type(&args[0])?, DataType::Int64, DataType::Utf8]
            }
            Kind::DateTrunc => {
                want(2)?;
                vec![temporal_type(&args[0])?, DataType::Utf8]
            }
            Kind::DateDiff => {
                want(3)?;
                let (a, b) = (temporal_type(&args[0])?, temporal_type(&args[1])?);
                let common = if a == DataType::Date32 && b != DataType::Date32 {
                    b
                } else {
                    a
                };
                vec![common.clone(), common, DataType::Utf8]
            }
            Kind::ParseDate | Kind::ParseTimestamp | Kind::ParseDatetime => {
                want(2)?;
                vec![DataType::Utf8, DataType::Utf8]
            }
            Kind::Div => {
                want(2)?;
                vec![DataType::Int64, DataType::Int64]
            }
            Kind::Error => {
                want(1)?;
                vec![DataType::Utf8]
            }
        })
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(match self.kind {
            Kind::Extract | Kind::DateDiff | Kind::Div => DataType::Int64,
            Kind::DateAdd | Kind::DateTrunc => temporal_type(&args[0])?,
            Kind::Format => DataType::Utf8,
            Kind::ParseDate => DataType::Date32,
            Kind::ParseTimestamp => {
                DataType::Timestamp(TimeUnit::Microsecond, Some(super::planner::UTC.into()))
            }
            Kind::ParseDatetime => DataType::Timestamp(TimeUnit::Microsecond, None),
            Kind::Error => DataType::Null,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let (scalar, rows) = super::udf::shape(&args);
        let arrays = super::udf::arrays(&args, rows)?;
        // Strings coerced to DATE arrive as Utf8 only when DataFusion skipped coercion.
        let arrays = arrays
            .into_iter()
            .map(|a| match a.data_type() {
                DataType::Date64 => datafusion::arrow::compute::cast(&a, &DataType::Date32)
                    .map_err(DataFusionError::from),
                _ => Ok(a),
            })
            .collect::<Result<Vec<_>>>()?;
        let out_type = args.return_field.data_type().clone();
        let result: ArrayRef =
            match self.kind {
                Kind::Extract => {
                    let mut out = Vec::with_capacity(rows);
                    for row in 0..rows {
                        out.push(match (text(&arrays[0], row), read(&arrays[1], row)?) {
                            (Some(part), Some(v)) => Some(extract(v, part)?),
                            _ => None,
                        });
                    }
                    Arc::new(Int64Array::from(out))
                }
                Kind::DateAdd => {
                    let mut out = Vec::with_capacity(rows);
                    for row in 0..rows {
                        out.push(
                            match (
                                read(&arrays[0], row)?,
                                int(&arrays[1], row),
                                text(&arrays[2], row),
                            ) {
                                (Some(v), Some(n), Some(part)) => Some(add(v, n, part)?),
                                _ => None,
                            },
                        );
                    }
                    temporal_array(out, &out_type)?
                }
                Kind::DateTrunc => {
                    let mut out = Vec::with_capacity(rows);
                    for row in 0..rows {
                        out.push(match (read(&arrays[0], row)?, text(&arrays[1], row)) {
                            (Some(v), Some(part)) => Some(trunc(v, part)?),
                            _ => None,
                        });
                    }
                    temporal_array(out, &out_type)?
                }
                Kind::DateDiff => {
                    let whole = matches!(arrays[0].data_type(), DataType::Timestamp(_, Some(_)));
                    let mut out = Vec::with_capacity(rows);
                    for row in 0..rows {
                        out.push(
                            match (
                                read(&arrays[0], row)?,
                                read(&arrays[1], row)?,
                                text(&arrays[2], row),
                            ) {
                                (Some(a), Some(b), Some(part)) => Some(diff(a, b, part, whole)?),
                                _ => None,
                            },
                        );
                    }
                    Arc::new(Int64Array::from(out))
                }
                Kind::Format => {
                    let mut out = Vec::with_capacity(rows);
                    for row in 0..rows {
                        out.push(match (text(&arrays[0], row), read(&arrays[1], row)?) {
                            (Some(f), Some(v)) => Some(format(f, v)?),
                            _ => None,
                        });
                    }
                    Arc::new(StringArray::from(out))
                }
                Kind::ParseDate | Kind::ParseTimestamp | Kind::ParseDatetime => {
                    let mut out = Vec::with_capacity(rows);
                    for row in 0..rows {
                        out.push(match (text(&arrays[0], row), text(&arrays[1], row)) {
                            (Some(f), Some(s)) if self.kind == Kind::ParseDate => Some(
                                Temporal::Date(NaiveDate::parse_from_str(s, f).map_err(|e| {
                                    DataFusionError::Execution(format!(
                                        "PARSE_DATE: `{s}` does not match `{f}`: {e}"
                                    ))
                                })?),
                            ),
                            (Some(f), Some(s)) => Some(Temporal::Time(parse_time(f, s)?)),
                            _ => None,
                        });
                    }
                    temporal_array(out, &out_type)?
                }
                Kind::Div => {
                    let mut out = Vec::with_capacity(rows);
                    for row in 0..rows {
                        out.push(match (int(&arrays[0], row), int(&arrays[1], row)) {
                            (Some(_), Some(0)) => return exec_err!("DIV: division by zero"),
                            (Some(a), Some(b)) => Some(a.checked_div(b).ok_or_else(|| {
                                DataFusionError::Execution("DIV: overflow".into())
                            })?),
                            _ => None,
                        });
                    }
                    Arc::new(Int64Array::from(out))
                }
                Kind::Error => {
                    for row in 0..rows {
                        if let Some(message) = text(&arrays[0], row) {
                            return exec_err!("ERROR: {message}");
                        }
                    }
                    Arc::new(datafusion::arrow::array::NullArray::new(rows))
                }
            };
        super::udf::output(result, scalar)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> Temporal {
        Temporal::Date(NaiveDate::from_ymd_opt(y, m, day).expect("valid date"))
    }

    #[test]
    fn weeks_start_on_sunday_unless_told() {
        // 2024-03-13 is a Wednesday.
        assert_eq!(
            trunc(d(2024, 3, 13), "WEEK").expect("trunc").date(),
            d(2024, 3, 10).date()
        );
        assert_eq!(
            trunc(d(2024, 3, 13), "WEEK(MONDAY)").expect("trunc").date(),
            d(2024, 3, 11).date()
        );
        assert_eq!(extract(d(2024, 3, 10), "DAYOFWEEK").expect("dow"), 1);
        assert_eq!(extract(d(2024, 3, 16), "DAYOFWEEK").expect("dow"), 7);
    }

    #[test]
    fn month_arithmetic_clamps() {
        assert_eq!(
            add(d(2024, 1, 31), 1, "MONTH").expect("add").date(),
            d(2024, 2, 29).date()
        );
        assert_eq!(
            add(d(2024, 3, 1), -1, "DAY").expect("add").date(),
            d(2024, 2, 29).date()
        );
        assert!(add(d(2024, 3, 1), 1, "HOUR").is_err());
    }

    #[test]
    fn diffs_count_boundaries() {
        assert_eq!(
            diff(d(2024, 1, 1), d(2023, 12, 31), "YEAR", false).expect("diff"),
            1
        );
        assert_eq!(
            diff(d(2024, 3, 10), d(2024, 3, 9), "WEEK", false).expect("diff"),
            1
        );
        assert_eq!(
            diff(d(2024, 3, 9), d(2024, 3, 10), "DAY", false).expect("diff"),
            -1
        );
    }

    #[test]
    fn format_elements() {
        assert_eq!(format("%A %Q", d(2024, 5, 3)).expect("fmt"), "Friday 2");
        assert!(format("%H", d(2024, 5, 3)).is_err());
    }
}
