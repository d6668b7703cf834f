//! Data tests: the generic tests of schema files (`unique`, `not_null`, `accepted_values`,
//! `relationships`, and custom `{% test name(model, column_name) %}` blocks) compiled to queries
//! that return the failing rows, like dbt's. Singular tests (files under `tests/`) are nodes
//! already. A test fails when its query returns rows; its severity says whether that is a
//! warning or an error.

use std::collections::BTreeMap;

use minijinja::value::Value;
use serde::Serialize;
use serde_json::Value as Json;

use crate::compile::{CompileOptions, Manifest, NodeKind};
use crate::error::SqlError;
use crate::project::{ColumnTest, Project};

/// Warn or error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Reported, never blocking.
    Warn,
    /// Fails the check.
    Error,
}

/// A compiled data test.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataTest {
    /// Unique name, dbt style: `not_null_stg_orders_id`.
    pub name: String,
    /// The model (or seed, snapshot) it checks.
    pub model: String,
    /// The column, for column tests.
    pub column: Option<String>,
    /// The test: `unique`, `not_null`, …, or the singular test's name.
    pub test: String,
    /// Severity.
    pub severity: Severity,
    /// A query returning the failing rows.
    pub sql: String,
}

fn quote_literal(v: &Json) -> String {
    match v {
        Json::String(s) => format!("'{}'", s.replace('\'', "''")),
        other => other.to_string(),
    }
}

/// `ref('x')` / `source('a', 'b')` in a YAML argument, resolved against the manifest.
fn relation_of(expr: &str, manifest: &Manifest) -> Option<String> {
    let args = |inner: &str| -> Vec<String> {
        inner
            .split(',')
            .map(|a| a.trim().trim_matches(|c| c == '\'' || c == '"').to_owned())
            .filter(|a| !a.is_empty())
            .collect()
    };
    let e = expr.trim();
    if let Some(inner) = e.strip_prefix("ref(").and_then(|r| r.strip_suffix(')')) {
        let a = args(inner);
        let name = a.last()?;
        let n = manifest.nodes.iter().find(|n| &n.name == name)?;
        return Some(format!("{}.{}", n.schema, n.relation));
    }
    if let Some(inner) = e.strip_prefix("source(").and_then(|r| r.strip_suffix(')')) {
        let a = args(inner);
        return manifest
            .sources
            .get(&format!("{}.{}", a.first()?, a.get(1)?))
            .cloned();
    }
    None
}

/// Compiles every data test: the generic ones of schema files, then the singular ones.
pub fn data_tests(
    project: &Project,
    manifest: &Manifest,
    options: &CompileOptions,
) -> Result<Vec<DataTest>, SqlError> {
    let mut out = Vec::new();
    let schema_file = project.root.join("models");
    let bad = |t: &ColumnTest, message: String| SqlError::Project {
        path: schema_file.clone(),
        message: format!(
            "test `{}` on `{}{}`: {message}",
            t.name,
            t.model,
            t.column
                .as_ref()
                .map(|c| format!(".{c}"))
                .unwrap_or_default()
        ),
    };
    let env = crate::compile::macro_environment(project, options)?;
    for t in &project.column_tests {
        let node = manifest
            .nodes
            .iter()
            .find(|n| n.name == t.model && n.kind != NodeKind::Test)
            .ok_or_else(|| bad(t, "the model does not exist".into()))?;
        let mut relation = format!("{}.{}", node.schema, node.relation);
        if let Some(w) = t.args.get("where").and_then(Json::as_str) {
            relation = format!("(select * from {relation} where {w}) dbt_subquery");
        }
        let col = t.column.clone().unwrap_or_default();
        let severity = match t
            .args
            .get("severity")
            .and_then(Json::as_str)
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("warn") => Severity::Warn,
            None | Some("error") => Severity::Error,
            Some(other) => {
                return Err(bad(
                    t,
                    format!("severity `{other}` is neither warn nor error"),
                ));
            }
        };
        let sql = match t.name.as_str() {
            "unique" => format!(
                "select {col} as unique_field, count(*) as n_records from {relation} where {col} is not null group by {col} having count(*) > 1"
            ),
            "not_null" => format!("select * from {relation} where {col} is null"),
            "accepted_values" => {
                let values = t
                    .args
                    .get("values")
                    .and_then(Json::as_array)
                    .ok_or_else(|| bad(t, "needs `values: [...]`".into()))?;
                let quote = t.args.get("quote").and_then(Json::as_bool).unwrap_or(true);
                let list: Vec<String> = values
                    .iter()
                    .map(|v| {
                        if quote {
                            quote_literal(v)
                        } else {
                            v.as_str()
                                .map(str::to_owned)
                                .unwrap_or_else(|| v.to_string())
                        }
                    })
                    .collect();
                format!(
                    "select {col} as value_field, count(*) as n_records from {relation} where {col} not in ({}) group by {col}",
                    list.join(", ")
                )
            }
            "relationships" => {
                let to = t
                    .args
                    .get("to")
                    .and_then(Json::as_str)
                    .ok_or_else(|| bad(t, "needs `to: ref('model')`".into()))?;
                let field = t
                    .args
                    .get("field")
                    .and_then(Json::as_str)
                    .ok_or_else(|| bad(t, "needs `field:`".into()))?;
                let parent = relation_of(to, manifest)
                    .ok_or_else(|| bad(t, format!("`to: {to}` names no known model or source")))?;
                format!(
                    "select child.{col} as from_field from {relation} as child left join {parent} as parent \
                     on child.{col} = parent.{field} where child.{col} is not null and parent.{field} is null"
                )
            }
            custom => {
                let macro_name = format!("test_{custom}");
                let mut ctx: BTreeMap<String, Value> = t
                    .args
                    .iter()
                    .filter(|(k, _)| k.as_str() != "severity" && k.as_str() != "where")
                    .map(|(k, v)| (k.clone(), Value::from(minijinja::value::Serde(v.clone()))))
                    .collect();
                ctx.insert("model".into(), Value::from(relation.clone()));
                ctx.insert("column_name".into(), Value::from(col.clone()));
                let call_args: Vec<String> = ctx.keys().map(|k| format!("{k}={k}")).collect();
                let source = format!(
                    "{{% from \"__macros__\" import {macro_name} %}}{{{{ {macro_name}({}) }}}}",
                    call_args.join(", ")
                );
                let tmpl = env
                    .template_from_str(&source)
                    .map_err(|e| bad(t, e.to_string()))?;
                let rendered = tmpl.render(Value::from(ctx)).map_err(|e| {
                    if e.kind() == minijinja::ErrorKind::UndefinedError || e.to_string().contains(&macro_name) {
                        bad(t, format!("no generic test `{custom}` (define it with {{% test {custom}(model, column_name) %}}): {e}"))
                    } else {
                        bad(t, e.to_string())
                    }
                })?;
                rendered.trim().to_owned()
            }
        };
        let name = match &t.column {
            Some(c) => format!("{}_{}_{c}", t.name, t.model),
            None => format!("{}_{}", t.name, t.model),
        };
        out.push(DataTest {
            name,
            model: t.model.clone(),
            column: t.column.clone(),
            test: t.name.clone(),
            severity,
            sql,
        });
    }
    for n in manifest.nodes.iter().filter(|n| n.kind == NodeKind::Test) {
        let severity = match n.config.get("severity").and_then(Json::as_str) {
            Some(s) if s.eq_ignore_ascii_case("warn") => Severity::Warn,
            _ => Severity::Error,
        };
        out.push(DataTest {
            name: n.name.clone(),
            model: n.refs.first().cloned().unwrap_or_default(),
            column: None,
            test: n.name.clone(),
            severity,
            sql: n.compiled.clone().unwrap_or_default(),
        });
    }
    Ok(out)
}
