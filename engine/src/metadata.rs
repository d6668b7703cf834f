//! Materialization metadata: typed values ([`MetadataValue`]) attached to materializations and
//! check results, and stored with them as JSON.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A map of metadata entries, ordered by name so stored JSON is stable.
pub type Metadata = BTreeMap<String, MetadataValue>;

/// One metadata value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum MetadataValue {
    /// An integer.
    Int(i64),
    /// A float; NaN and infinities are stored as the strings `NaN`, `inf`, `-inf`.
    Float(#[serde(with = "float_repr")] f64),
    /// Free text.
    Text(String),
    /// A boolean.
    Bool(bool),
    /// Arbitrary JSON.
    Json(serde_json::Value),
    /// The schema of a table.
    TableSchema(TableSchema),
    /// A number of rows.
    RowCount(u64),
    /// A file-system or object-store path.
    Path(String),
    /// A URL.
    Url(String),
    /// A duration in seconds.
    Duration(f64),
}

/// A table's columns, as shown in the UI.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TableSchema {
    /// The columns, in order.
    pub columns: Vec<TableColumn>,
}

/// One column of a [`TableSchema`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableColumn {
    /// Column name.
    pub name: String,
    /// Type as the warehouse names it.
    #[serde(rename = "type")]
    pub data_type: String,
    /// Optional description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl TableSchema {
    /// A schema from `(name, type)` pairs.
    pub fn new<N: Into<String>, T: Into<String>>(
        columns: impl IntoIterator<Item = (N, T)>,
    ) -> Self {
        TableSchema {
            columns: columns
                .into_iter()
                .map(|(name, data_type)| TableColumn {
                    name: name.into(),
                    data_type: data_type.into(),
                    description: None,
                })
                .collect(),
        }
    }
}

impl MetadataValue {
    /// The value as text: numbers plain, text, paths and URLs as given, JSON as JSON, a table
    /// schema as `name TYPE, …`, a duration in seconds (`1.250s`).
    pub fn text(&self) -> String {
        match self {
            MetadataValue::Int(i) => i.to_string(),
            MetadataValue::Float(f) => f.to_string(),
            MetadataValue::Text(s) | MetadataValue::Path(s) | MetadataValue::Url(s) => s.clone(),
            MetadataValue::Bool(b) => b.to_string(),
            MetadataValue::Json(j) => j.to_string(),
            MetadataValue::TableSchema(s) => s
                .columns
                .iter()
                .map(|c| format!("{} {}", c.name, c.data_type))
                .collect::<Vec<_>>()
                .join(", "),
            MetadataValue::RowCount(n) => n.to_string(),
            MetadataValue::Duration(d) => format!("{d:.3}s"),
        }
    }
}

impl From<i64> for MetadataValue {
    fn from(v: i64) -> Self {
        MetadataValue::Int(v)
    }
}
impl From<i32> for MetadataValue {
    fn from(v: i32) -> Self {
        MetadataValue::Int(v.into())
    }
}
impl From<u32> for MetadataValue {
    fn from(v: u32) -> Self {
        MetadataValue::Int(v.into())
    }
}
impl From<f64> for MetadataValue {
    fn from(v: f64) -> Self {
        MetadataValue::Float(v)
    }
}
impl From<bool> for MetadataValue {
    fn from(v: bool) -> Self {
        MetadataValue::Bool(v)
    }
}
impl From<&str> for MetadataValue {
    fn from(v: &str) -> Self {
        MetadataValue::Text(v.to_owned())
    }
}
impl From<String> for MetadataValue {
    fn from(v: String) -> Self {
        MetadataValue::Text(v)
    }
}
impl From<serde_json::Value> for MetadataValue {
    fn from(v: serde_json::Value) -> Self {
        MetadataValue::Json(v)
    }
}
impl From<TableSchema> for MetadataValue {
    fn from(v: TableSchema) -> Self {
        MetadataValue::TableSchema(v)
    }
}
impl From<Duration> for MetadataValue {
    fn from(v: Duration) -> Self {
        MetadataValue::Duration(v.as_secs_f64())
    }
}

/// JSON has no NaN or infinity: store them as strings and read them back.
mod float_repr {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if v.is_nan() {
            s.serialize_str("NaN")
        } else if *v > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Number(f64),
        Text(String),
        Null(()),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(match Repr::deserialize(d)? {
            Repr::Number(v) => v,
            Repr::Text(t) => t.parse().unwrap_or(f64::NAN),
            Repr::Null(()) => f64::NAN,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_floats_round_trip() {
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1.5] {
            let json = serde_json::to_string(&MetadataValue::Float(v)).expect("serialize");
            let back: MetadataValue = serde_json::from_str(&json).expect("deserialize");
            match back {
                MetadataValue::Float(b) => assert!(b == v || (b.is_nan() && v.is_nan()), "{json}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn round_trips_through_json() {
        let mut m = Metadata::new();
        m.insert("rows".into(), MetadataValue::RowCount(3));
        m.insert("schema".into(), TableSchema::new([("id", "INT64")]).into());
        m.insert("took".into(), Duration::from_millis(1500).into());
        let json = serde_json::to_string(&m).expect("serialize");
        assert!(
            json.contains(r#""rows":{"type":"row_count","value":3}"#),
            "{json}"
        );
        let back: Metadata = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, m);
    }
}
