//! BigQuery's time-zone arguments, on the IANA database (chrono-tz):
//!
//! - `bq_at_tz(ts, tz)`: the civil DATETIME a TIMESTAMP shows in `tz` (what `DATE(ts, tz)`,
//!   `DATETIME(ts, tz)`, `EXTRACT(… FROM ts AT TIME ZONE tz)`, `FORMAT_TIMESTAMP(f, ts, tz)` and
//!   `TIMESTAMP_TRUNC(ts, part, tz)` read).
//! - `bq_from_tz(dt, tz)`: the TIMESTAMP at which `tz` shows the civil DATETIME `dt` (what
//!   `TIMESTAMP(dt, tz)` and `TIMESTAMP_TRUNC(ts, part, tz)` return). A time that occurs twice
//!   (clocks going back) is the earlier instant; a time that never occurs (clocks going
//!   forward) is an error naming it, never a silently shifted instant.
//!
//! <https://cloud.google.com/bigquery/docs/reference/standard-sql/timestamp_functions#timezone_definitions>

use std::sync::Arc;

use chrono::{LocalResult, TimeZone};
use chrono_tz::Tz;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampMicrosecondType};
use datafusion::common::{DataFusionError, Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// The UDFs of this module, to register in a session.
pub fn all() -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::new_from_impl(Zoned::new(Direction::ToCivil)),
        ScalarUDF::new_from_impl(Zoned::new(Direction::FromCivil)),
    ]
}

/// A time zone name or fixed offset (`America/Los_Angeles`, `UTC`, `+05:30`).
fn zone(name: &str) -> Result<ZoneKind> {
    if let Ok(tz) = name.parse::<Tz>() {
        return Ok(ZoneKind::Named(tz));
    }
    // BigQuery accepts fixed offsets: `+HH[:MM]`, `-HH[:MM]`, optionally after `UTC`.
    let offset = name.strip_prefix("UTC").unwrap_or(name);
    let (sign, rest) = match offset.chars().next() {
        Some('+') => (1, &offset[1..]),
        Some('-') => (-1, &offset[1..]),
        _ => return exec_err!("unknown time zone `{name}`"),
    };
    let (h, m) = rest.split_once(':').unwrap_or((rest, "0"));
    match (h.parse::<i32>(), m.parse::<i32>()) {
        (Ok(h), Ok(m)) if h <= 14 && m < 60 => {
            chrono::FixedOffset::east_opt(sign * (h * 3600 + m * 60))
                .map(ZoneKind::Fixed)
                .ok_or_else(|| DataFusionError::Execution(format!("unknown time zone `{name}`")))
        }
        _ => exec_err!("unknown time zone `{name}`"),
    }
}

#[derive(Debug, Clone, Copy)]
enum ZoneKind {
    Named(Tz),
    Fixed(chrono::FixedOffset),
}

/// UTC microseconds → the civil time (as microseconds of a naive datetime) in `zone`.
fn to_civil(micros: i64, zone: ZoneKind) -> Result<i64> {
    let utc = chrono::DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| DataFusionError::Execution(format!("timestamp out of range: {micros}")))?;
    let civil = match zone {
        ZoneKind::Named(tz) => utc.with_timezone(&tz).naive_local(),
        ZoneKind::Fixed(offset) => utc.with_timezone(&offset).naive_local(),
    };
    Ok(civil.and_utc().timestamp_micros())
}

/// Civil time (naive microseconds) in `zone` → UTC microseconds.
fn from_civil(micros: i64, zone: ZoneKind, name: &str) -> Result<i64> {
    let civil = chrono::DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| DataFusionError::Execution(format!("datetime out of range: {micros}")))?
        .naive_utc();
    let resolved = match zone {
        ZoneKind::Named(tz) => tz.from_local_datetime(&civil).map(|t| t.timestamp_micros()),
        ZoneKind::Fixed(offset) => offset
            .from_local_datetime(&civil)
            .map(|t| t.timestamp_micros()),
    };
    match resolved {
        LocalResult::Single(t) => Ok(t),
        // Clocks going back: the civil time happens twice; BigQuery takes the earlier.
        LocalResult::Ambiguous(earlier, _) => Ok(earlier),
        LocalResult::None => {
            exec_err!("{civil} does not exist in time zone {name} (the clocks skip it)")
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Direction {
    ToCivil,
    FromCivil,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Zoned {
    direction: Direction,
    signature: Signature,
}

impl Zoned {
    fn new(direction: Direction) -> Self {
        Zoned {
            direction,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for Zoned {
    fn name(&self) -> &str {
        match self.direction {
            Direction::ToCivil => "bq_at_tz",
            Direction::FromCivil => "bq_from_tz",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        if args.len() != 2 {
            return exec_err!("{}() takes 2 arguments, got {}", self.name(), args.len());
        }
        let first = match self.direction {
            Direction::ToCivil => {
                DataType::Timestamp(TimeUnit::Microsecond, Some(super::planner::UTC.into()))
            }
            Direction::FromCivil => DataType::Timestamp(TimeUnit::Microsecond, None),
        };
        Ok(vec![first, DataType::Utf8])
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(match self.direction {
            Direction::ToCivil => DataType::Timestamp(TimeUnit::Microsecond, None),
            Direction::FromCivil => {
                DataType::Timestamp(TimeUnit::Microsecond, Some(super::planner::UTC.into()))
            }
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let (scalar, rows) = super::udf::shape(&args);
        let arrays = super::udf::arrays(&args, rows)?;
        let times = arrays[0].as_primitive::<TimestampMicrosecondType>();
        let zones = arrays[1].as_string::<i32>();
        let mut cache: Option<(String, ZoneKind)> = None;
        let mut out = Vec::with_capacity(rows);
        for row in 0..rows {
            if times.is_null(row) || zones.is_null(row) {
                out.push(None);
                continue;
            }
            let name = zones.value(row);
            let zone = match &cache {
                Some((n, z)) if n == name => *z,
                _ => {
                    let z = zone(name)?;
                    cache = Some((name.to_owned(), z));
                    z
                }
            };
            let micros = times.value(row);
            out.push(Some(match self.direction {
                Direction::ToCivil => to_civil(micros, zone)?,
                Direction::FromCivil => from_civil(micros, zone, name)?,
            }));
        }
        let tz: Option<Arc<str>> = match self.direction {
            Direction::ToCivil => None,
            Direction::FromCivil => Some(super::planner::UTC.into()),
        };
        let array: ArrayRef = Arc::new(TimestampMicrosecondArray::from(out).with_timezone_opt(tz));
        super::udf::output(array, scalar)
    }
}

#[cfg(test)]
mod tests {
    use super::{ZoneKind, from_civil, to_civil, zone};

    fn micros(s: &str) -> i64 {
        chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
            .expect("datetime")
            .and_utc()
            .timestamp_micros()
    }

    #[test]
    fn zones_by_name_and_offset() {
        assert!(matches!(
            zone("America/Los_Angeles"),
            Ok(ZoneKind::Named(_))
        ));
        assert!(matches!(zone("+05:30"), Ok(ZoneKind::Fixed(_))));
        assert!(matches!(zone("UTC-8"), Ok(ZoneKind::Fixed(_))));
        assert!(zone("Mars/Olympus").is_err());
    }

    #[test]
    fn daylight_saving_gaps_and_overlaps() {
        let ny = zone("America/New_York").expect("zone");
        // 2024-03-10 02:30 never happens in New York.
        assert!(from_civil(micros("2024-03-10 02:30:00"), ny, "America/New_York").is_err());
        // 2024-11-03 01:30 happens twice: the earlier (EDT, UTC-4) is taken.
        assert_eq!(
            from_civil(micros("2024-11-03 01:30:00"), ny, "America/New_York").expect("time"),
            micros("2024-11-03 05:30:00")
        );
        assert_eq!(
            to_civil(micros("2024-07-01 12:00:00"), ny).expect("time"),
            micros("2024-07-01 08:00:00")
        );
    }
}
