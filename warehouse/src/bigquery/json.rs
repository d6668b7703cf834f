//! BigQuery's JSON extractors on JSON-formatted STRINGs:
//!
//! - `bq_json_value(json, path)` — `JSON_VALUE`, `JSON_EXTRACT_SCALAR`: the scalar at `path` as
//!   a STRING (strings unquoted and unescaped, numbers and booleans as written); NULL for an
//!   object, an array, JSON `null` or a missing path.
//! - `bq_json_query(json, path)` — `JSON_QUERY`, `JSON_EXTRACT`: the value at `path` as JSON
//!   text (compact); NULL for a missing path.
//!
//! Paths: `$`, `.name`, `."quoted name"`, `['name']`, `[index]`. Malformed JSON or a malformed
//! path is an error naming it.
//! <https://cloud.google.com/bigquery/docs/reference/standard-sql/json_functions>

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use serde_json::Value;

/// The UDFs of this module, to register in a session.
pub fn all() -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::new_from_impl(Extract::new(Kind::Value)),
        ScalarUDF::new_from_impl(Extract::new(Kind::Query)),
    ]
}

/// One step of a JSONPath.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

/// Parses BigQuery's JSONPath subset.
fn parse_path(path: &str) -> Result<Vec<Step>> {
    let bad = |why: &str| DataFusionError::Execution(format!("invalid JSONPath `{path}`: {why}"));
    let rest = path
        .strip_prefix('$')
        .ok_or_else(|| bad("it must start with `$`"))?;
    let chars: Vec<char> = rest.chars().collect();
    let mut steps = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                i += 1;
                if chars.get(i) == Some(&'"') {
                    let end = chars[i + 1..]
                        .iter()
                        .position(|&c| c == '"')
                        .ok_or_else(|| bad("unclosed `\"`"))?;
                    steps.push(Step::Key(chars[i + 1..i + 1 + end].iter().collect()));
                    i += end + 2;
                } else {
                    let start = i;
                    while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                        i += 1;
                    }
                    if start == i {
                        return Err(bad("an empty name"));
                    }
                    steps.push(Step::Key(chars[start..i].iter().collect()));
                }
            }
            '[' => {
                let end = chars[i..]
                    .iter()
                    .position(|&c| c == ']')
                    .ok_or_else(|| bad("unclosed `[`"))?;
                let inside: String = chars[i + 1..i + end].iter().collect();
                let inside = inside.trim();
                if let Some(key) = inside
                    .strip_prefix('\'')
                    .and_then(|k| k.strip_suffix('\''))
                    .or_else(|| inside.strip_prefix('"').and_then(|k| k.strip_suffix('"')))
                {
                    steps.push(Step::Key(key.to_owned()));
                } else {
                    let n: usize = inside
                        .parse()
                        .map_err(|_| bad("an index must be a non-negative integer"))?;
                    steps.push(Step::Index(n));
                }
                i += end + 1;
            }
            c => return Err(bad(&format!("unexpected `{c}`"))),
        }
    }
    Ok(steps)
}

fn select<'a>(mut value: &'a Value, steps: &[Step]) -> Option<&'a Value> {
    for step in steps {
        value = match (step, value) {
            (Step::Key(k), Value::Object(map)) => map.get(k)?,
            (Step::Index(n), Value::Array(items)) => items.get(*n)?,
            _ => return None,
        };
    }
    Some(value)
}

/// JSON_VALUE of one document.
fn json_value(json: &str, steps: &[Step]) -> Result<Option<String>> {
    let doc: Value = serde_json::from_str(json)
        .map_err(|e| DataFusionError::Execution(format!("JSON_VALUE: invalid JSON: {e}")))?;
    Ok(match select(&doc, steps) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::Bool(b)) => Some(b.to_string()),
        _ => None,
    })
}

/// JSON_QUERY of one document.
fn json_query(json: &str, steps: &[Step]) -> Result<Option<String>> {
    let doc: Value = serde_json::from_str(json)
        .map_err(|e| DataFusionError::Execution(format!("JSON_QUERY: invalid JSON: {e}")))?;
    select(&doc, steps)
        .map(|v| {
            serde_json::to_string(v)
                .map_err(|e| DataFusionError::Execution(format!("JSON_QUERY: {e}")))
        })
        .transpose()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Value,
    Query,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Extract {
    kind: Kind,
    signature: Signature,
}

impl Extract {
    fn new(kind: Kind) -> Self {
        Extract {
            kind,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for Extract {
    fn name(&self) -> &str {
        match self.kind {
            Kind::Value => "bq_json_value",
            Kind::Query => "bq_json_query",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        if args.len() != 2 {
            return exec_err!("{}() takes 2 arguments, got {}", self.name(), args.len());
        }
        Ok(vec![DataType::Utf8, DataType::Utf8])
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let (scalar, rows) = super::udf::shape(&args);
        let arrays = super::udf::arrays(&args, rows)?;
        let docs = arrays[0].as_string::<i32>();
        let paths = arrays[1].as_string::<i32>();
        let mut parsed: Option<(String, Vec<Step>)> = None;
        let mut out: Vec<Option<String>> = Vec::with_capacity(rows);
        for row in 0..rows {
            if docs.is_null(row) || paths.is_null(row) {
                out.push(None);
                continue;
            }
            let path = paths.value(row);
            if parsed.as_ref().is_none_or(|(p, _)| p != path) {
                parsed = Some((path.to_owned(), parse_path(path)?));
            }
            let steps = parsed.as_ref().map(|(_, s)| s.as_slice()).unwrap_or(&[]);
            out.push(match self.kind {
                Kind::Value => json_value(docs.value(row), steps)?,
                Kind::Query => json_query(docs.value(row), steps)?,
            });
        }
        let array: ArrayRef = Arc::new(StringArray::from(out));
        super::udf::output(array, scalar)
    }
}

#[cfg(test)]
mod tests {
    use super::{Step, parse_path};

    #[test]
    fn paths() {
        assert_eq!(parse_path("$").expect("path"), vec![]);
        assert_eq!(
            parse_path("$.a[2].\"b.c\"['d']").expect("path"),
            vec![
                Step::Key("a".into()),
                Step::Index(2),
                Step::Key("b.c".into()),
                Step::Key("d".into())
            ]
        );
        assert!(parse_path("a.b").is_err());
        assert!(parse_path("$.a[x]").is_err());
        assert!(parse_path("$.").is_err());
    }
}
