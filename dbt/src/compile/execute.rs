//! dbt's introspective Jinja: `statement` blocks, `load_result`, `store_result`, `run_query` and
//! `execute`. Parsing renders with `execute` false: a statement runs nothing and
//! `load_result`/`run_query` give none (dbt's parse-time behaviour), and the node is marked as
//! needing execution. When such a node is built, its file is rendered again with `execute`
//! true and a [`QueryFn`] over the warehouse, so the queries run then — after the node's
//! parents were built, as in dbt. Results are agate-like tables ([`Table`]: `rows`, `columns`
//! with `values()`, `column_names`, rows indexable by position or column name). Source:
//! docs.getdbt.com/reference/dbt-jinja-functions/statement-blocks and run_query.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use minijinja::value::{Enumerator, Kwargs, Object, ObjectRepr, Value};
use minijinja::{Environment, Error, ErrorKind, State};

use super::jinja::collector;

/// What a query returned: column names and types and rows of JSON values.
#[derive(Debug, Clone, Default)]
pub struct QueryResult {
    /// Column names.
    pub columns: Vec<String>,
    /// Their BigQuery types (`STRING`, `INT64`, `NUMERIC`…), one per column.
    pub types: Vec<String>,
    /// Rows, one value per column.
    pub rows: Vec<Vec<serde_json::Value>>,
}

/// Runs one SQL statement on the warehouse while a node renders (blocking; rendering is
/// synchronous). Errors are the warehouse's message.
#[derive(Clone)]
pub struct QueryFn(pub Arc<RunQuery>);

/// The function behind a [`QueryFn`]: SQL in, rows or the warehouse's message out.
pub type RunQuery = dyn Fn(&str) -> Result<QueryResult, String> + Send + Sync;

impl std::fmt::Debug for QueryFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueryFn")
    }
}

/// Statement results of one render, by name.
#[derive(Debug, Default)]
pub(crate) struct Results(pub(crate) Mutex<BTreeMap<String, Value>>);

/// An agate-like table.
#[derive(Debug)]
pub(crate) struct Table {
    columns: Arc<Vec<String>>,
    rows: Vec<Value>,
}

impl Table {
    fn value(result: QueryResult) -> Value {
        let columns = Arc::new(result.columns);
        let rows = result
            .rows
            .into_iter()
            .map(|r| {
                Value::from_object(Row {
                    columns: columns.clone(),
                    values: r.into_iter().map(json_value).collect(),
                })
            })
            .collect();
        Value::from_object(Table { columns, rows })
    }
}

fn json_value(v: serde_json::Value) -> Value {
    Value::from(minijinja::value::Serde(v))
}

impl Object for Table {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        if let Some(i) = key.as_i64() {
            let i = if i < 0 { self.rows.len() as i64 + i } else { i };
            return self.rows.get(usize::try_from(i).ok()?).cloned();
        }
        match key.as_str()? {
            "rows" => Some(Value::from(self.rows.clone())),
            "column_names" => Some(Value::from(
                self.columns
                    .iter()
                    .map(|c| Value::from(c.as_str()))
                    .collect::<Vec<_>>(),
            )),
            "columns" => Some(Value::from_object(Columns(
                (0..self.columns.len())
                    .map(|i| {
                        (
                            self.columns[i].clone(),
                            Value::from_object(Column {
                                name: self.columns[i].clone(),
                                data_type: String::new(),
                                values: self
                                    .rows
                                    .iter()
                                    .map(|r| r.get_item_by_index(i).unwrap_or_default())
                                    .collect(),
                            }),
                        )
                    })
                    .collect(),
            ))),
            _ => None,
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.rows.clone())
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        _args: &[Value],
    ) -> Result<Value, Error> {
        match method {
            "print_table" => Ok(Value::from("")),
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

/// agate's `table.columns`: a sequence of columns, also indexed by name, with `keys()`,
/// `values()` and `items()`.
#[derive(Debug)]
struct Columns(Vec<(String, Value)>);

impl Object for Columns {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        if let Some(i) = key.as_i64() {
            let i = if i < 0 { self.0.len() as i64 + i } else { i };
            return self.0.get(usize::try_from(i).ok()?).map(|(_, c)| c.clone());
        }
        let name = key.as_str()?;
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, c)| c.clone())
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.0.iter().map(|(_, c)| c.clone()).collect())
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        _args: &[Value],
    ) -> Result<Value, Error> {
        Ok(Value::from(match method {
            "keys" => self
                .0
                .iter()
                .map(|(n, _)| Value::from(n.as_str()))
                .collect::<Vec<_>>(),
            "values" => self.0.iter().map(|(_, c)| c.clone()).collect(),
            "items" => self
                .0
                .iter()
                .map(|(n, c)| Value::from(vec![Value::from(n.as_str()), c.clone()]))
                .collect(),
            _ => return Err(Error::from(ErrorKind::UnknownMethod)),
        }))
    }
}

/// A row: by position, or by column name.
#[derive(Debug)]
struct Row {
    columns: Arc<Vec<String>>,
    values: Vec<Value>,
}

impl Object for Row {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        if let Some(i) = key.as_i64() {
            let i = if i < 0 {
                self.values.len() as i64 + i
            } else {
                i
            };
            return self.values.get(usize::try_from(i).ok()?).cloned();
        }
        let name = key.as_str()?;
        let i = self
            .columns
            .iter()
            .position(|c| c.eq_ignore_ascii_case(name))?;
        self.values.get(i).cloned()
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.values.clone())
    }
}

thread_local! {
    /// Whether the render on this thread read `execute` (or asked the adapter about the
    /// warehouse) while parsing: such a node must be rendered again when it is built, since
    /// what it renders then differs (dbt_utils.star gives `*` at parse, the columns after).
    static EXECUTE_READ: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Forgets and returns whether `execute` was read on this thread since the last call.
pub(crate) fn take_execute_read() -> bool {
    EXECUTE_READ.with(|r| r.replace(false))
}

/// Records that a render depends on `execute`.
pub(crate) fn mark_execute_read() {
    EXECUTE_READ.with(|r| r.set(true));
}

/// dbt's `execute`: a boolean whose reading is recorded ([`take_execute_read`]).
#[derive(Debug)]
struct Execute(bool);

impl Object for Execute {
    fn is_true(self: &Arc<Self>) -> bool {
        mark_execute_read();
        self.0
    }

    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        mark_execute_read();
        f.write_str(if self.0 { "True" } else { "False" })
    }
}

fn executing(state: &State) -> bool {
    state.lookup("execute").is_some_and(|v| v.is_true())
}

/// Runs `sql` for the adapter (columns of a relation, whether it exists): `None` when not
/// executing (recorded, as a read of `execute`).
pub(crate) fn adapter_query(
    state: &State,
    query: &Option<QueryFn>,
    sql: &str,
) -> Option<Result<QueryResult, String>> {
    if !executing(state) {
        mark_execute_read();
        return None;
    }
    let query = query.as_ref()?;
    Some((query.0)(sql))
}

/// A column as dbt's adapter gives it: `name`, `column`, `quoted`, `data_type`, `dtype`;
/// `is_string()`, `is_number()`, `is_numeric()`, `is_float()`, `is_integer()`.
#[derive(Debug)]
pub(crate) struct Column {
    name: String,
    data_type: String,
    values: Vec<Value>,
}

impl Column {
    pub(crate) fn value(name: String, data_type: String) -> Value {
        Value::from_object(Column {
            name,
            data_type,
            values: Vec::new(),
        })
    }
}

/// Runs `sql` if executing; marks the node as needing execution otherwise. `None` at parse.
fn run(state: &State, query: &Option<QueryFn>, sql: &str) -> Result<Option<Value>, Error> {
    if !executing(state) {
        if let Ok(c) = collector(state)
            && let Ok(mut e) = c.executes.lock()
        {
            *e = true;
        }
        return Ok(None);
    }
    let query = query.as_ref().ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidOperation,
            "a query while rendering needs a warehouse (this render cannot run SQL)",
        )
    })?;
    let result = (query.0)(sql).map_err(|e| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("query while rendering failed: {e}\n{sql}"),
        )
    })?;
    Ok(Some(Table::value(result)))
}

fn results(state: &State) -> Result<Arc<super::jinja::Collector>, Error> {
    collector(state)
}

/// `{% call statement(name, fetch_result=False) %}sql{% endcall %}`.
#[derive(Debug)]
struct Statement(Option<QueryFn>);

impl Object for Statement {
    fn call(self: &Arc<Self>, state: &mut State<'_, '_>, args: &[Value]) -> Result<Value, Error> {
        let (positional, kwargs) = super::datetime::split_args(args)?;
        let get = |k: &str| -> Result<Option<Value>, Error> {
            match &kwargs {
                Some(kw) => kw.get::<Option<Value>>(k),
                None => Ok(None),
            }
        };
        let name = match positional.first() {
            Some(n) => n.to_string(),
            None => get("name")?
                .map(|n| n.to_string())
                .unwrap_or_else(|| "main".into()),
        };
        let fetch = match positional.get(1) {
            Some(f) => f.is_true(),
            None => get("fetch_result")?.is_some_and(|f| f.is_true()),
        };
        let caller = get("caller")?.ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidOperation,
                "statement() is called as a block: {% call statement('name') %}…{% endcall %}",
            )
        })?;
        let sql = caller.call(state, &[])?.to_string();
        if let Some(table) = run(state, &self.0, &sql)? {
            let stored = stored_result(table, fetch);
            results(state)?
                .results
                .0
                .lock()
                .map_err(|_| Error::new(ErrorKind::InvalidOperation, "results lock poisoned"))?
                .insert(name, stored);
        }
        Ok(Value::from(""))
    }
}

/// `load_result`'s shape: `{response, data, table}`.
fn stored_result(table: Value, fetch: bool) -> Value {
    let rows: Vec<Value> = if fetch {
        table.try_iter().map(Iterator::collect).unwrap_or_default()
    } else {
        Vec::new()
    };
    let count = rows.len();
    let mut map = BTreeMap::new();
    map.insert("data", Value::from(rows));
    map.insert(
        "response",
        Value::from(minijinja::value::Serde(
            serde_json::json!({"code": "SELECT", "rows_affected": count}),
        )),
    );
    map.insert("table", if fetch { table } else { Value::from(()) });
    Value::from(map)
}

/// Registers `statement`, `load_result`, `store_result`, `run_query` with `query` (none: the
/// render cannot run SQL) and `execute`.
pub(crate) fn register(env: &mut Environment<'_>, query: Option<QueryFn>, execute: bool) {
    env.add_global("execute", Value::from_object(Execute(execute)));
    env.add_global("statement", Value::from_object(Statement(query.clone())));
    env.add_function(
        "load_result",
        |state: &State, name: String| -> Result<Value, Error> {
            Ok(results(state)?
                .results
                .0
                .lock()
                .ok()
                .and_then(|r| r.get(&name).cloned())
                .unwrap_or(Value::from(())))
        },
    );
    env.add_function(
        "store_result",
        |state: &State, name: String, kwargs: Kwargs| -> Result<Value, Error> {
            let table: Option<Value> = kwargs.get("agate_table")?;
            let _: Option<Value> = kwargs.get("response")?;
            if let Some(table) = table
                && let Ok(mut r) = results(state)?.results.0.lock()
            {
                r.insert(name, stored_result(table, true));
            }
            Ok(Value::from(""))
        },
    );
    env.add_function(
        "run_query",
        move |state: &State, sql: String| -> Result<Value, Error> {
            Ok(run(state, &query, &sql)?.unwrap_or(Value::from(())))
        },
    );
}

impl Object for Column {
    /// A result column is also the sequence of its values (agate: `columns[0][0]`).
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        if self.values.is_empty() {
            ObjectRepr::Plain
        } else {
            ObjectRepr::Seq
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.values.clone())
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        if let Some(i) = key.as_i64() {
            let i = if i < 0 {
                self.values.len() as i64 + i
            } else {
                i
            };
            return self.values.get(usize::try_from(i).ok()?).cloned();
        }
        Some(match key.as_str()? {
            "name" | "column" => Value::from(self.name.as_str()),
            "quoted" => Value::from(format!("`{}`", self.name)),
            "data_type" | "dtype" => Value::from(self.data_type.as_str()),
            _ => return None,
        })
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        _args: &[Value],
    ) -> Result<Value, Error> {
        let t = self.data_type.to_ascii_uppercase();
        let numeric = t.starts_with("NUMERIC") || t.starts_with("BIGNUMERIC");
        Ok(Value::from(match method {
            "values" => return Ok(Value::from(self.values.clone())),
            "is_string" => t == "STRING",
            "is_integer" => t == "INT64",
            "is_float" => t == "FLOAT64",
            "is_numeric" => numeric,
            "is_number" => numeric || t == "INT64" || t == "FLOAT64",
            // dbt's Column: a string without a size is 256; `can_expand_to` another column
            // only between strings (union_relations asks).
            "string_size" if t == "STRING" => return Ok(Value::from(256)),
            "can_expand_to" => {
                let other = _args
                    .first()
                    .and_then(|o| o.get_attr("data_type").ok())
                    .map(|d| d.to_string().to_ascii_uppercase());
                t == "STRING" && other.as_deref() == Some("STRING")
            }
            _ => return Err(Error::from(ErrorKind::UnknownMethod)),
        }))
    }

    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}
