//! dbt unit tests (`unit_tests:` in schema files): a model's SQL run on fixed input rows must
//! give the expected rows. Source: docs.getdbt.com/docs/build/unit-tests.
//!
//! As in dbt: every `ref`/`source` of the model is replaced by its `given` rows (a CTE); each
//! given value is cast to the type of the input relation's column (so inputs must exist — a
//! build runs unit tests after the model's parents and before the model, see
//! [`rainbow_engine::AssetCheckSpec::before_materialization`]); a column a given row leaves
//! out is NULL; only the expected rows' columns are compared, each expected value cast to the
//! model's column type; rows compare as multisets. `overrides: {vars: …, env_vars: …,
//! macros: {is_incremental: …}}` render the model again with those (an incremental override
//! needs `this` given); other macro overrides are refused by name.

use std::collections::{BTreeMap, HashMap};

use rainbow_warehouse::Warehouse;
use rainbow_warehouse::datafusion::arrow::datatypes::{DataType, Schema};
use rainbow_warehouse::datafusion::arrow::record_batch::RecordBatch;
use rainbow_warehouse::datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::Value as Json;

use crate::compile::{CompileOptions, Manifest, NodeKind};
use crate::error::DbtError;
use crate::project::{Fixture, Project, UnitTestDecl};

/// A unit test compiled against the manifest: the model's SQL over fixture CTEs.
#[derive(Debug, Clone)]
pub struct CompiledUnitTest {
    /// The unit test as declared.
    pub decl: UnitTestDecl,
    /// The model's SQL with every input replaced by `__dbt__given__<n>`.
    pub sql: String,
    /// Per fixture CTE: its name, the input's relation (`schema.table`) and rows.
    pub inputs: Vec<(String, String, Fixture)>,
}

fn bad(u: &UnitTestDecl, message: String) -> DbtError {
    DbtError::Project {
        path: u.file.clone(),
        message: format!("unit test `{}`: {message}", u.name),
    }
}

/// The placeholder key and relation of `ref('x')` / `source('a', 'b')` / `this`.
fn input_key(input: &str, manifest: &Manifest, model: &str) -> Option<(String, String)> {
    let args = |inner: &str| -> Vec<String> {
        inner
            .split(',')
            .map(|a| a.trim().trim_matches(|c| c == '\'' || c == '"').to_owned())
            .filter(|a| !a.is_empty())
            .collect()
    };
    let e = input.trim();
    if e == "this" {
        let n = manifest.nodes.iter().find(|n| n.name == model)?;
        return Some((model.to_owned(), format!("{}.{}", n.schema, n.relation)));
    }
    if let Some(inner) = e.strip_prefix("ref(").and_then(|r| r.strip_suffix(')')) {
        let name = args(inner).pop()?;
        let n = manifest.nodes.iter().find(|n| n.name == name)?;
        return Some((name, format!("{}.{}", n.schema, n.relation)));
    }
    if let Some(inner) = e.strip_prefix("source(").and_then(|r| r.strip_suffix(')')) {
        let a = args(inner);
        let key = format!("{}.{}", a.first()?, a.get(1)?);
        let relation = manifest.sources.get(&key)?.clone();
        return Some((format!("source:{key}"), relation));
    }
    None
}

/// Compiles the project's unit tests. Errors: an unknown model or input, a model input not
/// given, an unsupported override.
pub fn compile(
    project: &Project,
    manifest: &Manifest,
    options: &CompileOptions,
) -> Result<Vec<CompiledUnitTest>, DbtError> {
    let mut out = Vec::new();
    for u in &project.unit_tests {
        let node = manifest
            .nodes
            .iter()
            .find(|n| n.name == u.model && n.kind == NodeKind::Model)
            .ok_or_else(|| bad(u, format!("no model `{}`", u.model)))?;
        let mut replace = HashMap::new();
        let mut inputs = Vec::new();
        for (i, (input, rows)) in u.given.iter().enumerate() {
            let (key, relation) = input_key(input, manifest, &u.model).ok_or_else(|| {
                bad(
                    u,
                    format!("`{input}` names no model, seed, snapshot or source"),
                )
            })?;
            let cte = format!("__dbt__given__{i}");
            replace.insert(key, cte.clone());
            inputs.push((cte, relation, rows.clone()));
        }
        for r in &node.refs {
            if !replace.contains_key(r) {
                return Err(bad(
                    u,
                    format!("the model reads ref('{r}'), which has no `given`"),
                ));
            }
        }
        for (s, t) in &node.sources {
            if !replace.contains_key(&format!("source:{s}.{t}")) {
                return Err(bad(
                    u,
                    format!("the model reads source('{s}', '{t}'), which has no `given`"),
                ));
            }
        }
        let mut options = options.clone();
        let overridden = !u.overrides.is_null();
        if let Some(env) = u.overrides.get("env_vars").and_then(Json::as_object) {
            for (k, v) in env {
                let v = match v {
                    Json::String(s) => s.clone(),
                    other => other.to_string(),
                };
                options.env.insert(k.clone(), v);
            }
        }
        if let Some(vars) = u.overrides.get("vars").and_then(Json::as_object) {
            options
                .vars
                .extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        if let Some(macros) = u.overrides.get("macros").and_then(Json::as_object) {
            for (name, value) in macros {
                match (name.as_str(), value) {
                    ("is_incremental", Json::Bool(true)) => {
                        options.incremental.insert(u.model.clone());
                    }
                    ("is_incremental", Json::Bool(false)) => {
                        options.incremental.remove(&u.model);
                    }
                    (other, _) => {
                        return Err(bad(
                            u,
                            format!(
                                "overriding macro `{other}` is not supported (is_incremental and vars are)"
                            ),
                        ));
                    }
                }
            }
        }
        let sql = crate::compile::render_with_relations(
            project,
            manifest,
            node,
            overridden.then_some(&options),
            &replace,
        )?;
        out.push(CompiledUnitTest {
            decl: u.clone(),
            sql,
            inputs,
        });
    }
    Ok(out)
}

/// BigQuery's name for an Arrow type (what a given value is cast to).
pub(crate) fn bigquery_type(t: &DataType) -> Option<&'static str> {
    Some(match t {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => "INT64",
        DataType::Float16 | DataType::Float32 | DataType::Float64 => "FLOAT64",
        DataType::Decimal128(_, s) if *s <= 9 => "NUMERIC",
        DataType::Decimal128(..) | DataType::Decimal256(..) => "BIGNUMERIC",
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => "STRING",
        DataType::Boolean => "BOOL",
        DataType::Date32 | DataType::Date64 => "DATE",
        DataType::Timestamp(_, Some(_)) => "TIMESTAMP",
        DataType::Timestamp(_, None) => "DATETIME",
        DataType::Time32(_) | DataType::Time64(_) => "TIME",
        DataType::Binary | DataType::BinaryView | DataType::LargeBinary => "BYTES",
        DataType::Null => "INT64",
        _ => return None,
    })
}

fn literal(v: &Json) -> String {
    match v {
        Json::Null => "NULL".into(),
        Json::Bool(b) => if *b { "TRUE" } else { "FALSE" }.into(),
        Json::Number(n) => n.to_string(),
        Json::String(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        other => format!("'{}'", other.to_string().replace('\'', "\\'")),
    }
}

fn quote(c: &str) -> String {
    format!("`{}`", c.replace('`', "\\`"))
}

/// Rows as a query with `schema`'s columns and types (a column a row leaves out is NULL).
fn rows_sql(
    rows: &[serde_json::Map<String, Json>],
    schema: &Schema,
    what: &str,
) -> Result<String, String> {
    let mut typed = Vec::new();
    for f in schema.fields() {
        let t = bigquery_type(f.data_type()).ok_or_else(|| {
            format!(
                "{what}: column `{}` has type {}, which a given value cannot be cast to",
                f.name(),
                f.data_type()
            )
        })?;
        typed.push((f.name().clone(), t));
    }
    for row in rows {
        for k in row.keys() {
            if !typed.iter().any(|(c, _)| c.eq_ignore_ascii_case(k)) {
                return Err(format!(
                    "{what}: `{k}` is not one of its columns ({})",
                    typed
                        .iter()
                        .map(|(c, _)| c.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
    }
    let select = |row: Option<&serde_json::Map<String, Json>>| {
        let cols: Vec<String> = typed
            .iter()
            .map(|(c, t)| {
                let v = row
                    .and_then(|r| r.iter().find(|(k, _)| k.eq_ignore_ascii_case(c)))
                    .map(|(_, v)| literal(v))
                    .unwrap_or_else(|| "NULL".into());
                format!("CAST({v} AS {t}) AS {}", quote(c))
            })
            .collect();
        format!("SELECT {}", cols.join(", "))
    };
    Ok(if rows.is_empty() {
        format!(
            "SELECT * FROM ({}) AS __dbt__none WHERE FALSE",
            select(None)
        )
    } else {
        rows.iter()
            .map(|r| select(Some(r)))
            .collect::<Vec<_>>()
            .join("\nUNION ALL\n")
    })
}

/// `batch` with `like`'s column types (by position), when it has the same number of columns.
fn cast_like(batch: &RecordBatch, like: Option<&RecordBatch>) -> Result<RecordBatch, String> {
    let Some(like) = like.filter(|l| l.num_columns() == batch.num_columns()) else {
        return Ok(batch.clone());
    };
    let columns = batch
        .columns()
        .iter()
        .zip(like.schema().fields())
        .map(|(c, f)| {
            rainbow_warehouse::datafusion::arrow::compute::cast(c, f.data_type())
                .map_err(|e| format!("expected column `{}`: {e}", f.name()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(like.schema(), columns).map_err(|e| e.to_string())
}

fn formatted(batches: &[RecordBatch]) -> Result<Vec<String>, String> {
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in batches {
        let formatters = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        for row in 0..b.num_rows() {
            out.push(
                formatters
                    .iter()
                    .map(|f| f.value(row).to_string())
                    .collect::<Vec<_>>()
                    .join(" | "),
            );
        }
    }
    out.sort();
    Ok(out)
}

/// What a unit test found: whether it passed, and the differing rows when not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitTestOutcome {
    /// Actual rows equal the expected rows (on the expected columns).
    pub passed: bool,
    /// The compared columns and the rows only one side has (`+` actual, `-` expected).
    pub diff: String,
}

/// Where a unit test runs: the embedded warehouse, or BigQuery — its columns and rows typed as
/// the embedded warehouse types their BigQuery types, so fixtures, casts and the comparison
/// are the same on both.
#[derive(Clone, Copy)]
pub enum UnitTarget<'a> {
    /// The embedded warehouse.
    Embedded(&'a Warehouse),
    /// BigQuery.
    BigQuery(&'a rainbow_bigquery::BigQuery),
}

impl UnitTarget<'_> {
    /// The columns of the relation `schema.table`. Errors: it does not exist.
    async fn relation_schema(&self, schema: &str, table: &str) -> Result<Schema, String> {
        match self {
            UnitTarget::Embedded(w) => w
                .schema_of(schema, table)
                .await
                .map(|s| s.as_ref().clone())
                .map_err(|e| e.to_string()),
            UnitTarget::BigQuery(bq) => {
                let relation = bq
                    .relation(schema, table)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("{schema}.{table} does not exist"))?;
                Ok(crate::bigquery::arrow_schema(&relation.columns)
                    .await
                    .map_err(|e| e.to_string())?
                    .as_ref()
                    .clone())
            }
        }
    }

    /// The columns `sql` returns (planned, or a BigQuery dry run).
    async fn query_schema(&self, sql: &str, context: &str) -> Result<Schema, String> {
        match self {
            UnitTarget::Embedded(w) => w
                .plan(sql, context)
                .await
                .map(|p| p.schema().as_arrow().clone())
                .map_err(|e| e.to_string()),
            UnitTarget::BigQuery(bq) => {
                let options = rainbow_bigquery::JobOptions {
                    context: context.to_owned(),
                    dry_run: true,
                    ..Default::default()
                };
                let result = bq.run(sql, &options).await.map_err(|e| e.to_string())?;
                Ok(crate::bigquery::arrow_schema(&result.columns)
                    .await
                    .map_err(|e| e.to_string())?
                    .as_ref()
                    .clone())
            }
        }
    }

    /// The rows of `sql`.
    async fn query(&self, sql: &str, context: &str) -> Result<Vec<RecordBatch>, String> {
        match self {
            UnitTarget::Embedded(w) => w.query(sql, context).await.map_err(|e| e.to_string()),
            UnitTarget::BigQuery(bq) => {
                let options = rainbow_bigquery::JobOptions {
                    context: context.to_owned(),
                    read_rows: true,
                    ..Default::default()
                };
                let result = bq.run(sql, &options).await.map_err(|e| e.to_string())?;
                crate::bigquery::arrow_batches(&result, context)
                    .await
                    .map(|(_, batches)| batches)
                    .map_err(|e| e.to_string())
            }
        }
    }
}

/// Runs a compiled unit test on `target`. Errors: an input relation that does not exist,
/// SQL that fails, an expected column the model does not have.
pub async fn run(target: UnitTarget<'_>, t: &CompiledUnitTest) -> Result<UnitTestOutcome, String> {
    let mut ctes = Vec::new();
    for (cte, relation, fixture) in &t.inputs {
        let body = match fixture {
            Fixture::Sql(sql) => sql.clone(),
            Fixture::Rows(rows) => {
                let (schema, table) = relation.split_once('.').unwrap_or(("", relation));
                let columns = target.relation_schema(schema, table).await.map_err(|_| {
                    format!("its input {relation} does not exist yet: build it first (a build runs unit tests after the model's parents)")
                })?;
                rows_sql(rows, &columns, relation)?
            }
        };
        ctes.push(format!("{cte} AS (\n{body}\n)"));
    }
    let model = crate::compile::with_ctes(&ctes.join(",\n"), &t.sql);
    let context = format!("unit test {}", t.decl.name);
    let actual_schema = target.query_schema(&model, &context).await?;
    let rows = match &t.decl.expect {
        Fixture::Rows(rows) => rows.clone(),
        Fixture::Sql(_) => Vec::new(),
    };
    let mut columns: Vec<String> = Vec::new();
    for r in &rows {
        for k in r.keys() {
            if !columns.iter().any(|c| c.eq_ignore_ascii_case(k)) {
                columns.push(k.clone());
            }
        }
    }
    let expected_sql = match &t.decl.expect {
        Fixture::Sql(sql) => sql.clone(),
        // `expect: {rows: []}`: the model returns no row.
        Fixture::Rows(rows) if rows.is_empty() => {
            format!("SELECT * FROM (\n{model}\n) AS __dbt__none WHERE FALSE")
        }
        Fixture::Rows(rows) => {
            let mut fields = Vec::new();
            for c in &columns {
                let f = actual_schema
                    .fields()
                    .iter()
                    .find(|f| f.name().eq_ignore_ascii_case(c))
                    .ok_or_else(|| format!("expected column `{c}` is not a column of the model"))?;
                fields.push(f.as_ref().clone());
            }
            rows_sql(rows, &Schema::new(fields), "expect")?
        }
    };
    // The model's own spelling of each expected column (quoted names are case-sensitive).
    let projection = if columns.is_empty() {
        "*".to_owned()
    } else {
        columns
            .iter()
            .map(|c| {
                actual_schema
                    .fields()
                    .iter()
                    .find(|f| f.name().eq_ignore_ascii_case(c))
                    .map(|f| quote(f.name()))
                    .unwrap_or_else(|| quote(c))
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let actual = target
        .query(
            &format!("SELECT {projection} FROM (\n{model}\n) AS __dbt__actual"),
            &context,
        )
        .await?;
    let expected = target
        .query(&expected_sql, &format!("{context} (expect)"))
        .await?;
    // Expected values in the model's exact column types (a BigQuery type name is coarser:
    // NUMERIC for every decimal), so equal values print alike.
    let expected = expected
        .iter()
        .map(|b| cast_like(b, actual.first()))
        .collect::<Result<Vec<_>, _>>()?;
    let (actual, expected) = (formatted(&actual)?, formatted(&expected)?);
    let mut only_actual: BTreeMap<&String, i64> = BTreeMap::new();
    for r in &actual {
        *only_actual.entry(r).or_default() += 1;
    }
    for r in &expected {
        *only_actual.entry(r).or_default() -= 1;
    }
    let mut diff = format!("columns: {}\n", columns.join(" | "));
    let mut passed = true;
    for (row, n) in only_actual {
        if n != 0 {
            passed = false;
            let sign = if n > 0 { '+' } else { '-' };
            for _ in 0..n.abs() {
                diff.push_str(&format!("{sign} {row}\n"));
            }
        }
    }
    Ok(UnitTestOutcome { passed, diff })
}
