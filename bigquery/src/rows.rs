//! Result rows: BigQuery's REST cells (`{"f": [{"v": "1"}, …]}`, every scalar a string) as
//! typed JSON by the result's schema — INT64 as numbers, FLOAT64 as numbers (NaN and ±Infinity
//! stay strings), BOOL as booleans, NUMERIC/BIGNUMERIC as decimal text without trailing zeros
//! (`2.25`, exact), TIMESTAMP as RFC 3339 UTC text (`2024-01-02T03:04:05.5Z`; BigQuery sends
//! seconds as `1.7041646455E9`, some emulators µs as an integer: both are read), DATE/DATETIME/TIME/STRING/BYTES(base64)/JSON as
//! BigQuery's text, ARRAY as arrays, STRUCT as objects, NULL as null.

use gcp_bigquery_client::model::field_type::FieldType;
use gcp_bigquery_client::model::table_field_schema::TableFieldSchema;
use gcp_bigquery_client::model::table_row::TableRow;
use serde_json::Value as Json;

/// A result or table column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Name.
    pub name: String,
    /// GoogleSQL type: `INT64`, `STRING`, `ARRAY<INT64>`, `STRUCT<x INT64>`…
    pub data_type: String,
}

/// The column of a schema field.
pub(crate) fn column_of(field: &TableFieldSchema) -> Column {
    Column {
        name: field.name.clone(),
        data_type: type_name(field),
    }
}

fn type_name(field: &TableFieldSchema) -> String {
    let scalar = match field.r#type {
        FieldType::String => "STRING".to_owned(),
        FieldType::Bytes => "BYTES".to_owned(),
        FieldType::Integer | FieldType::Int64 => "INT64".to_owned(),
        FieldType::Float | FieldType::Float64 => "FLOAT64".to_owned(),
        FieldType::Numeric => "NUMERIC".to_owned(),
        FieldType::Bignumeric => "BIGNUMERIC".to_owned(),
        FieldType::Boolean | FieldType::Bool => "BOOL".to_owned(),
        FieldType::Timestamp => "TIMESTAMP".to_owned(),
        FieldType::Date => "DATE".to_owned(),
        FieldType::Time => "TIME".to_owned(),
        FieldType::Datetime => "DATETIME".to_owned(),
        FieldType::Geography => "GEOGRAPHY".to_owned(),
        FieldType::Json => "JSON".to_owned(),
        FieldType::Interval => "INTERVAL".to_owned(),
        FieldType::Record | FieldType::Struct => {
            let inner: Vec<String> = field
                .fields
                .as_deref()
                .unwrap_or_default()
                .iter()
                .map(|f| format!("{} {}", f.name, type_name(f)))
                .collect();
            format!("STRUCT<{}>", inner.join(", "))
        }
    };
    if field.mode.as_deref() == Some("REPEATED") {
        format!("ARRAY<{scalar}>")
    } else {
        scalar
    }
}

/// One row's values, by the schema's fields.
pub(crate) fn row_values(fields: &[TableFieldSchema], row: &TableRow) -> Vec<Json> {
    let cells = row.columns.as_deref().unwrap_or_default();
    fields
        .iter()
        .enumerate()
        .map(|(i, f)| {
            cells
                .get(i)
                .and_then(|c| c.value.as_ref())
                .map_or(Json::Null, |v| value(f, v))
        })
        .collect()
}

/// A cell's value (`{"v": …}` unwrapped) as typed JSON.
fn value(field: &TableFieldSchema, v: &Json) -> Json {
    if field.mode.as_deref() == Some("REPEATED") {
        let element = TableFieldSchema {
            mode: Some("NULLABLE".into()),
            ..field.clone()
        };
        return match v {
            Json::Array(items) => Json::Array(
                items
                    .iter()
                    .map(|item| item.get("v").map_or(Json::Null, |v| value(&element, v)))
                    .collect(),
            ),
            _ => Json::Null,
        };
    }
    match (&field.r#type, v) {
        (_, Json::Null) => Json::Null,
        (FieldType::Record | FieldType::Struct, Json::Object(o)) => {
            let inner = field.fields.as_deref().unwrap_or_default();
            let cells = o.get("f").and_then(Json::as_array);
            Json::Object(
                inner
                    .iter()
                    .enumerate()
                    .map(|(i, f)| {
                        let cell = cells
                            .and_then(|c| c.get(i))
                            .and_then(|c| c.get("v"))
                            .map_or(Json::Null, |v| value(f, v));
                        (f.name.clone(), cell)
                    })
                    .collect(),
            )
        }
        (_, Json::String(s)) => scalar(&field.r#type, s),
        (_, other) => other.clone(),
    }
}

fn scalar(kind: &FieldType, s: &str) -> Json {
    match kind {
        FieldType::Integer | FieldType::Int64 => {
            s.parse::<i64>().map_or_else(|_| s.into(), Json::from)
        }
        FieldType::Float | FieldType::Float64 => s
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or_else(|| s.into(), Json::Number),
        FieldType::Boolean | FieldType::Bool => Json::Bool(s.eq_ignore_ascii_case("true")),
        FieldType::Numeric | FieldType::Bignumeric => Json::String(decimal(s)),
        FieldType::Timestamp => timestamp(s).map_or_else(|| s.into(), Json::String),
        _ => Json::String(s.to_owned()),
    }
}

/// `2.250000000` → `2.25`, `3.000` → `3`.
fn decimal(s: &str) -> String {
    if s.contains('.') && !s.contains(['e', 'E']) {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s.to_owned()
    }
}

/// µs since the epoch (or seconds in floating point, BigQuery's default encoding) as RFC 3339.
fn timestamp(s: &str) -> Option<String> {
    let micros = match s.parse::<i64>() {
        Ok(us) => us,
        // `1.7041646455E9`: seconds, read exactly (an f64 loses microseconds far from 1970:
        // `9999-12-31 23:59:59.999999` would become the year 10000).
        Err(_) => seconds_to_micros(s)?,
    };
    let at = chrono::DateTime::from_timestamp_micros(micros)?;
    Some(at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

/// Decimal seconds (`2.53402300799999999E11`, `-1.5`, `12`) as µs, exactly (rounded half up
/// below the microsecond); `None` when it is not a number or does not fit.
fn seconds_to_micros(s: &str) -> Option<i64> {
    let (mantissa, exponent) = match s.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().ok()?),
        None => (s, 0),
    };
    let negative = mantissa.starts_with('-');
    let unsigned = mantissa.trim_start_matches(['-', '+']);
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    if int.is_empty() && frac.is_empty()
        || !(int.chars().chain(frac.chars())).all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let digits: i128 = format!("{int}{frac}").parse().ok()?;
    let scale = exponent + 6 - i32::try_from(frac.len()).ok()?;
    let magnitude = if scale >= 0 {
        digits.checked_mul(10i128.checked_pow(u32::try_from(scale).ok()?)?)?
    } else {
        let divisor = 10i128.checked_pow(u32::try_from(-scale).ok()?)?;
        (digits + divisor / 2) / divisor
    };
    i64::try_from(if negative { -magnitude } else { magnitude }).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(text: Json) -> Vec<TableFieldSchema> {
        serde_json::from_value(text).expect("ok")
    }

    #[test]
    fn cells_become_typed_json() {
        let fields = schema(json!([
            {"name": "a", "type": "INTEGER", "mode": "NULLABLE"},
            {"name": "f", "type": "FLOAT"},
            {"name": "n", "type": "NUMERIC"},
            {"name": "ts", "type": "TIMESTAMP"},
            {"name": "z", "type": "STRING"},
            {"name": "arr", "type": "INTEGER", "mode": "REPEATED"},
            {"name": "s", "type": "RECORD", "fields": [{"name": "x", "type": "BOOLEAN"}]},
            {"name": "d", "type": "DATE"}
        ]));
        let row: TableRow = serde_json::from_value(json!({"f": [
            {"v": "1"}, {"v": "1.5"}, {"v": "2.250000000"}, {"v": "1704164645500000"},
            {"v": null}, {"v": [{"v": "1"}, {"v": "2"}]}, {"v": {"f": [{"v": "true"}]}},
            {"v": "2024-01-02"}
        ]}))
        .expect("ok");
        assert_eq!(
            row_values(&fields, &row),
            vec![
                json!(1),
                json!(1.5),
                json!("2.25"),
                json!("2024-01-02T03:04:05.500Z"),
                Json::Null,
                json!([1, 2]),
                json!({"x": true}),
                json!("2024-01-02")
            ]
        );
        let types: Vec<String> = fields.iter().map(|f| column_of(f).data_type).collect();
        assert_eq!(types[5], "ARRAY<INT64>");
        assert_eq!(types[6], "STRUCT<x BOOL>");
    }

    #[test]
    fn far_timestamps_keep_their_microseconds() {
        assert_eq!(
            timestamp("2.53402300799999999E11").as_deref(),
            Some("9999-12-31T23:59:59.999999Z")
        );
        assert_eq!(seconds_to_micros("-1.5"), Some(-1_500_000));
        assert_eq!(seconds_to_micros("12"), Some(12_000_000));
        assert_eq!(seconds_to_micros("1.0000005E0"), Some(1_000_001));
        assert_eq!(seconds_to_micros("abc"), None);
        assert_eq!(seconds_to_micros("."), None);
    }

    #[test]
    fn float_seconds_timestamps_and_special_floats() {
        assert_eq!(
            timestamp("1.7041646455E9").as_deref(),
            Some("2024-01-02T03:04:05.500Z")
        );
        assert_eq!(scalar(&FieldType::Float64, "NaN"), json!("NaN"));
        assert_eq!(decimal("3.000"), "3");
        assert_eq!(decimal("-10"), "-10");
    }
}
