//! Data tests: the generic tests of schema files (`unique`, `not_null`, `accepted_values`,
//! `relationships`, and custom `{% test name(model, column_name) %}` blocks) compiled to queries
//! that return the failing rows, like dbt's. Singular tests (files under `tests/`) are nodes
//! already. A test fails when its query returns rows; its severity says whether that is a
//! warning or an error.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use minijinja::value::Value;
use serde::Serialize;
use serde_json::Value as Json;

use crate::compile::{CompileOptions, Manifest, NodeKind};
use crate::error::DbtError;
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

/// How a test whose rendering read `execute` (or asked the adapter about the warehouse) is
/// rendered again when it runs, with `execute` true, as dbt compiles tests at execution.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Rerender {
    /// A singular test: its file, by node name.
    Singular(String),
    /// A generic test: the snippet calling its macro and the snippet's arguments.
    Generic {
        source: String,
        ctx: BTreeMap<String, Value>,
    },
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
    /// The nodes it reads, by name, recorded when it was rendered: the tested node, a
    /// relationships test's `to`, the refs of a custom test's arguments and body, a singular
    /// test's refs. (Sources are not nodes and are not listed.)
    pub refs: Vec<String>,
    /// The sources it reads, `(source, table)`, recorded when it was rendered (singular tests).
    pub sources: Vec<(String, String)>,
    /// Where its compiled SQL goes under `target/compiled/<project>/`, dbt style: the
    /// schema file's path then the test name (`models/schema.yml/unique_x_id.sql`), or the
    /// singular test's own path.
    pub path: String,
    /// dbt's `fail_calc` (default `count(*)`): the failures, computed over the failing rows.
    pub fail_calc: String,
    /// dbt's `warn_if` (default `!= 0`): the condition on the failures that warns.
    pub warn_if: String,
    /// dbt's `error_if` (default `!= 0`): the condition that fails (with error severity).
    pub error_if: String,
    /// dbt's `store_failures`: its failing rows are kept in `<target schema>_dbt_test__audit`
    /// under its name after each run.
    pub store_failures: bool,
    /// Rendered again when it runs (it read `execute` when compiled), else `None`.
    #[serde(skip)]
    pub(crate) rerender: Option<Rerender>,
}

/// Writes each test's SQL to `out/compiled/<project>/<path>`.
pub fn write_tests(tests: &[DataTest], project: &str, out: &Path) -> Result<(), DbtError> {
    for t in tests {
        let path = out.join("compiled").join(project).join(&t.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| DbtError::Io {
                path: parent.to_owned(),
                source,
            })?;
        }
        std::fs::write(&path, &t.sql).map_err(|source| DbtError::Io { path, source })?;
    }
    Ok(())
}

fn quote_literal(v: &Json) -> String {
    match v {
        Json::String(s) => format!("'{}'", s.replace('\'', "''")),
        other => other.to_string(),
    }
}

/// The generic tests built in (the rest are `{% test %}` blocks of the project).
const BUILT_IN: [&str; 4] = ["unique", "not_null", "accepted_values", "relationships"];

/// Test arguments that configure the test rather than parameterise its query.
const TEST_CONFIG_KEYS: [&str; 13] = [
    "severity",
    "where",
    "tags",
    "enabled",
    "limit",
    "warn_if",
    "error_if",
    "store_failures",
    "meta",
    "name",
    "description",
    "fail_calc",
    "column_name",
];

/// An expression (such as `a || b`) as a name fragment: alphanumerics and `_`.
fn slug(expr: &str) -> String {
    expr.chars()
        .map(|c| if c.is_alphanumeric() { c } else { '_' })
        .collect::<String>()
        .split('_')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("_")
}

/// The node a `ref('x')` YAML argument names (None for sources and other values).
fn ref_of(expr: &str, manifest: &Manifest) -> Option<String> {
    let inner = expr.trim().strip_prefix("ref(")?.strip_suffix(')')?;
    let name = inner
        .split(',')
        .map(|a| a.trim().trim_matches(|c| c == '\'' || c == '"'))
        .rfind(|a| !a.is_empty())?;
    manifest
        .nodes
        .iter()
        .find(|n| n.name == name)
        .map(|n| n.name.clone())
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
        return Some(manifest.relation_name(&format!("{}.{}", n.schema, n.relation)));
    }
    if let Some(inner) = e.strip_prefix("source(").and_then(|r| r.strip_suffix(')')) {
        let a = args(inner);
        return manifest
            .sources
            .get(&format!("{}.{}", a.first()?, a.get(1)?))
            .map(|r| manifest.relation_name(r));
    }
    None
}

/// Compiles every data test: the generic ones of schema files, then the singular ones.
pub fn data_tests(
    project: &Project,
    manifest: &Manifest,
    options: &CompileOptions,
) -> Result<Vec<DataTest>, DbtError> {
    let mut out = Vec::new();
    let bad = |t: &ColumnTest, message: String| DbtError::Project {
        path: t.file.clone(),
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
    // Built once: looked up by every test.
    let nodes: HashMap<&str, &crate::compile::Node> = manifest
        .nodes
        .iter()
        .filter(|n| n.kind != NodeKind::Test)
        .map(|n| (n.name.as_str(), n))
        .collect();
    let relations = crate::compile::relations(manifest);
    // A custom test's declared parameters, by macro.
    let mut declared_args: HashMap<String, String> = HashMap::new();
    for t in &project.column_tests {
        // A test on a source table (`model: source:<source>.<table>`) reads its relation.
        let source = t.model.strip_prefix("source:");
        let table = match source {
            Some(key) => manifest
                .sources
                .get(key)
                .map(|r| manifest.relation_name(r))
                .ok_or_else(|| bad(t, "the source table is not declared".into()))?,
            None => {
                let node = *nodes
                    .get(t.model.as_str())
                    .ok_or_else(|| bad(t, "the model does not exist".into()))?;
                manifest.relation_name(&format!("{}.{}", node.schema, node.relation))
            }
        };
        // Settings given inline or under `config:` (the project loader flattened both).
        let setting = |key: &str| t.args.get(key).and_then(Json::as_str);
        if t.args.get("enabled").and_then(Json::as_bool) == Some(false) {
            continue;
        }
        let filter = setting("where");
        // The model as a FROM item under `alias`: the table, or the `where:`-filtered rows.
        let from_item = |alias: &str| match filter {
            Some(w) => format!("(select * from {table} where {w}) {alias}"),
            None if alias == "dbt_subquery" => table.clone(),
            None => format!("{table} {alias}"),
        };
        let relation = from_item("dbt_subquery");
        // A column test's column, or a model-level test's `column_name:` argument.
        let col = t
            .column
            .clone()
            .or_else(|| {
                t.args
                    .get("column_name")
                    .and_then(Json::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        let mut refs = match source {
            Some(_) => Vec::new(),
            None => vec![t.model.clone()],
        };
        if col.is_empty() && BUILT_IN.contains(&t.name.as_str()) {
            return Err(bad(
                t,
                "needs a column (declare it under `columns:` or give `column_name:`)".into(),
            ));
        }
        // The test's own severity, else the project's `data_tests:` config (`+severity: warn`)
        // for the schema file's folder.
        let rel = t
            .file
            .strip_prefix(&project.root)
            .unwrap_or(&t.file)
            .to_string_lossy()
            .replace('\\', "/");
        let folder = project.node_config(NodeKind::Test, &rel, "");
        let project_severity = folder
            .get("severity")
            .and_then(Json::as_str)
            .map(str::to_owned);
        let severity = match setting("severity")
            .map(str::to_owned)
            .or(project_severity)
            .map(|s| s.to_ascii_lowercase())
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
        let mut rerender = None;
        // A generic test's macro may set its own config (`{{ config(fail_calc=…) }}`); the
        // schema file's settings win.
        let mut macro_config: BTreeMap<String, Json> = BTreeMap::new();
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
                refs.extend(ref_of(to, manifest));
                let child = from_item("child");
                format!(
                    "select child.{col} as from_field from {child} left join {parent} as parent \
                     on child.{col} = parent.{field} where child.{col} is not null and parent.{field} is null"
                )
            }
            custom => {
                // `package.test` names a package's generic test (`dbt_utils.expression_is_true`).
                let (template, test_name) = match (custom.split_once('.'), &t.package) {
                    (Some((package, test)), _) => (format!("__macros__{package}"), test),
                    // A package's schema file names its own tests unqualified.
                    (None, Some(package)) => (format!("__macros__{package}"), custom),
                    (None, None) => ("__macros__".to_owned(), custom),
                };
                let macro_name = format!("test_{test_name}");
                let no_test = |e: minijinja::Error| {
                    bad(
                        t,
                        format!(
                            "no generic test `{custom}` (define it with {{% test {custom}(model, column_name) %}}): {e}"
                        ),
                    )
                };
                // Only the arguments the test declares are passed (dbt strips config keys
                // such as severity, where, tags; `column_name` only if the test takes it).
                let declared = match declared_args.get(&macro_name) {
                    Some(d) => d,
                    None => {
                        let d = env
                            .render_str(
                                &format!("{{% from \"{template}\" import {macro_name} %}}{{{{ {macro_name}.arguments|join(',') }}}}"),
                                (),
                            )
                            .map_err(no_test)?;
                        declared_args.entry(macro_name.clone()).or_insert(d)
                    }
                };
                let declared: Vec<&str> = declared.split(',').collect();
                let mut ctx: BTreeMap<String, Value> = BTreeMap::new();
                for (k, v) in &t.args {
                    if !declared.contains(&k.as_str()) {
                        if TEST_CONFIG_KEYS.contains(&k.as_str()) {
                            continue;
                        }
                        return Err(bad(
                            t,
                            format!(
                                "argument `{k}` is not a parameter of the test (it takes {})",
                                declared.join(", ")
                            ),
                        ));
                    }
                    // `ref('x')` / `source('a', 'b')` arguments are relations, as in dbt.
                    let v = match v.as_str() {
                        Some(e)
                            if e.trim_start().starts_with("ref(")
                                || e.trim_start().starts_with("source(") =>
                        {
                            refs.extend(ref_of(e, manifest));
                            Value::from(relation_of(e, manifest).ok_or_else(|| {
                                bad(t, format!("`{k}: {e}` names no known model or source"))
                            })?)
                        }
                        _ => Value::from(minijinja::value::Serde(v.clone())),
                    };
                    ctx.insert(k.clone(), v);
                }
                if declared.contains(&"model") {
                    ctx.insert("model".into(), Value::from(relation.clone()));
                }
                if declared.contains(&"column_name") {
                    ctx.insert("column_name".into(), Value::from(col.clone()));
                }
                let call_args: Vec<String> = ctx.keys().map(|k| format!("{k}={k}")).collect();
                let source = format!(
                    "{{% from \"{template}\" import {macro_name} %}}{{{{ {macro_name}({}) }}}}",
                    call_args.join(", ")
                );
                let args = ctx.clone();
                crate::compile::take_execute_read();
                let snippet = crate::compile::render_snippet(&env, &source, ctx, &relations)
                    .map_err(|e| bad(t, e.to_string()))?;
                if crate::compile::take_execute_read() {
                    rerender = Some(Rerender::Generic {
                        source: source.clone(),
                        ctx: args,
                    });
                }
                macro_config = snippet.config.clone();
                for r in &snippet.refs {
                    if !nodes.contains_key(r.as_str()) {
                        return Err(bad(t, format!("its body refers to unknown `{r}`")));
                    }
                }
                refs.extend(snippet.refs);
                snippet.sql.trim().to_owned()
            }
        };
        // dbt's names: a package's test is prefixed by the package (`dbt_utils_expression_is_true_…`).
        let test_name = t.name.replace('.', "_");
        // A source's test: `source_<test>_<source>_<table>…`, dbt style.
        let (test_name, model) = match source {
            Some(key) => (format!("source_{test_name}"), key.replace('.', "_")),
            None => (test_name, t.model.clone()),
        };
        // A test's own `name:` wins over the generated one.
        let mut name = match (setting("name"), t.column.as_deref(), col.is_empty()) {
            (Some(own), _, _) => own.to_owned(),
            (None, Some(c), _) => format!("{test_name}_{model}_{c}"),
            (None, None, false) => format!("{test_name}_{model}_{}", slug(&col)),
            (None, None, true) => format!("{test_name}_{model}"),
        };
        // A second test of the same kind on the same column gets a numbered name.
        let base = name.clone();
        let mut n = 1;
        while out.iter().any(|d: &DataTest| d.name == name) {
            n += 1;
            name = format!("{base}_{n}");
        }
        refs.dedup();
        out.push(DataTest {
            model: t.model.clone(),
            refs,
            sources: source
                .and_then(|key| key.split_once('.'))
                .map(|(s, t)| vec![(s.to_owned(), t.to_owned())])
                .unwrap_or_default(),
            column: t.column.clone(),
            test: t.name.clone(),
            severity,
            // `limit:` caps the failing rows counted, as dbt's test query does.
            sql: match t.args.get("limit").and_then(Json::as_u64) {
                Some(n) => format!("select * from (\n{sql}\n) as dbt_limited limit {n}"),
                None => sql,
            },
            rerender,
            store_failures: t
                .args
                .get("store_failures")
                .and_then(Json::as_bool)
                .unwrap_or(
                    folder
                        .get("store_failures")
                        .and_then(Json::as_bool)
                        .unwrap_or(false),
                ),
            fail_calc: threshold(&t.args, &macro_config, "fail_calc", "count(*)"),
            warn_if: threshold(&t.args, &macro_config, "warn_if", "!= 0"),
            error_if: threshold(&t.args, &macro_config, "error_if", "!= 0"),
            path: format!(
                "{}/{name}.sql",
                t.file
                    .strip_prefix(&project.root)
                    .unwrap_or(&t.file)
                    .to_string_lossy()
            ),
            name,
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
            refs: n.refs.clone(),
            sources: n.sources.clone(),
            column: None,
            test: n.name.clone(),
            severity,
            sql: n.compiled.clone().unwrap_or_default(),
            path: n.path.clone(),
            rerender: n.needs_execute.then(|| Rerender::Singular(n.name.clone())),
            fail_calc: threshold(&n.config, &BTreeMap::new(), "fail_calc", "count(*)"),
            warn_if: threshold(&n.config, &BTreeMap::new(), "warn_if", "!= 0"),
            error_if: threshold(&n.config, &BTreeMap::new(), "error_if", "!= 0"),
            store_failures: n
                .config
                .get("store_failures")
                .and_then(Json::as_bool)
                .unwrap_or(false),
        });
    }
    Ok(out)
}

/// A test's `fail_calc` / `warn_if` / `error_if`: the schema file's (or the singular test's
/// own) setting, else the test macro's `config()`, else dbt's default.
fn threshold(
    own: &BTreeMap<String, Json>,
    from_macro: &BTreeMap<String, Json>,
    key: &str,
    default: &str,
) -> String {
    own.get(key)
        .or_else(|| from_macro.get(key))
        .and_then(|v| match v {
            Json::String(s) => Some(s.clone()),
            Json::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .unwrap_or_else(|| default.to_owned())
}
