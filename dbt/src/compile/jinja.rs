//! dbt's Jinja context on minijinja: the environment ([`Jinja`]) with the project's macros
//! (generic tests as `test_<name>` macros, `_private` macros re-exported), dbt's globals
//! (`target`, `run_started_at`, `exceptions`, `adapter`, partition variables) and functions
//! (`ref`, `source`, `config`, `var`, `env_var`, `is_incremental`, `log`); the [`Collector`]
//! a render records its calls in; relation placeholders and their substitution. Errors map
//! back to file:line:column, macros to their own file.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use minijinja::value::{DynObject, Kwargs, Object, ObjectRepr, Serde, Value};
use minijinja::{Environment, Error as JinjaError, ErrorKind, State, UndefinedBehavior};
use serde_json::Value as Json;

use super::CompileOptions;
use crate::error::DbtError;
use crate::project::{Project, merge_config};

/// What a render records (one per node render).
#[derive(Debug, Default)]
pub(crate) struct Collector {
    pub(crate) refs: Mutex<Vec<String>>,
    pub(crate) sources: Mutex<Vec<(String, String)>>,
    /// The node's config: the folder-level config, then each `config()` call merged in.
    pub(crate) config: Mutex<BTreeMap<String, Json>>,
    /// The answers `is_incremental()` gave, which the final config may contradict (a
    /// `config(materialized=…)` after the call).
    pub(crate) incremental_answers: Mutex<Vec<bool>>,
    /// Whether the render ran (or, at parse, would have run) a query: `statement`/`run_query`.
    pub(crate) executes: Mutex<bool>,
    /// Statement results by name (`load_result`).
    pub(crate) results: super::execute::Results,
    /// Whether the render read a relation's part as a placeholder (rendered again once the
    /// names are known).
    pub(crate) parts_read: Mutex<bool>,
}

impl Object for Collector {}

/// Relations known when compiling: node name -> `schema.relation`; under [`DATABASE_KEY`],
/// the target's database when relations are written `` `database.schema.relation` ``.
pub(crate) type Relations = HashMap<String, String>;

/// The key of [`Relations`] holding the target's database (no placeholder key starts with NUL).
pub(crate) const DATABASE_KEY: &str = "\u{0}database";

/// `exceptions.raise_compiler_error(msg)`.
#[derive(Debug)]
pub(crate) struct Exceptions;

impl Object for Exceptions {
    fn call_method(
        self: &Arc<Self>,
        _: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, JinjaError> {
        match method {
            "raise_compiler_error" => {
                let msg = args.first().map(|a| a.to_string()).unwrap_or_default();
                Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
            }
            "warn" => {
                tracing::warn!(
                    "{}",
                    args.first().map(|a| a.to_string()).unwrap_or_default()
                );
                Ok(Value::from(""))
            }
            _ => Err(JinjaError::from(ErrorKind::UnknownMethod)),
        }
    }
}

/// Where each macro namespace lives: the root project, each package, and `dbt` (the built-in
/// macros, [`INTERNAL_MACROS`]).
#[derive(Debug, Default)]
pub(crate) struct Registry {
    /// Namespace name -> (template, its macro names).
    namespaces: BTreeMap<String, (String, Vec<String>)>,
    /// The root project's name.
    root: String,
    /// `dispatch:` search orders by macro namespace.
    dispatch: BTreeMap<String, Vec<String>>,
    /// Adapter prefixes tried in order (`<target type>`, `bigquery`, `default`).
    prefixes: Vec<String>,
}

impl Registry {
    fn has(&self, namespace: &str, name: &str) -> Option<&str> {
        let (template, names) = self.namespaces.get(namespace)?;
        names.iter().any(|n| n == name).then_some(template.as_str())
    }
}

/// The built-in `dbt` namespace's macros (our own BigQuery bodies).
pub(crate) const INTERNAL_MACROS: &str = include_str!("dbt_macros.sql");

/// The keys of a render's context that macros of other templates see too.
const SHARED_CONTEXT: [&str; 6] = ["__rainbow", "__name", "this", "model", "node", "execute"];

/// Calls macro `name` of `template` (a macro template of the project, a package or `dbt`) from
/// `state`: the template is evaluated with the caller's context and the macro called there —
/// no template imports another, so packages may refer to each other in any direction.
fn call_in_template(
    state: &State,
    template: &str,
    name: &str,
    args: &[Value],
) -> Result<Value, JinjaError> {
    let ctx: BTreeMap<&str, Value> = SHARED_CONTEXT
        .iter()
        .filter_map(|k| state.lookup(k).map(|v| (*k, v)))
        .collect();
    let tmpl = state.env().get_template(template)?;
    let mut module = tmpl.render_captured_to(Value::from(ctx), std::io::sink())?;
    module.with_state_mut(|module| {
        let m = module
            .lookup(name)
            .filter(|m| !m.is_undefined())
            .ok_or_else(|| {
                JinjaError::new(
                    ErrorKind::UndefinedError,
                    format!("no macro `{name}` in {template}"),
                )
            })?;
        m.call(module, args)
    })
}

/// The dbt version whose behaviour Rainbow follows (`dbt_version`).
pub(crate) const DBT_VERSION: &str = "1.10.5";

/// A macro of another template, callable from any render ([`call_in_template`]).
#[derive(Debug)]
pub(crate) struct MacroRef {
    template: String,
    name: String,
}

impl Object for MacroRef {
    fn call(
        self: &Arc<Self>,
        state: &mut State<'_, '_>,
        args: &[Value],
    ) -> Result<Value, JinjaError> {
        call_in_template(state, &self.template, &self.name, args)
    }

    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<macro {}>", self.name)
    }
}

/// A package's (or the project's, or `dbt`'s) macros as `namespace.macro(…)`.
#[derive(Debug)]
pub(crate) struct Namespace {
    name: String,
    registry: Arc<Registry>,
}

impl Object for Namespace {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let name = key.as_str()?;
        let template = self.registry.has(&self.name, name)?;
        Some(Value::from_object(MacroRef {
            template: template.to_owned(),
            name: name.to_owned(),
        }))
    }

    fn call_method(
        self: &Arc<Self>,
        state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, JinjaError> {
        match self.registry.has(&self.name, method) {
            Some(template) => call_in_template(state, template, method, args),
            None => Err(JinjaError::new(
                ErrorKind::InvalidOperation,
                format!(
                    "`{}` has no macro `{method}`{}",
                    self.name,
                    rainbow_suggest::did_you_mean(
                        method,
                        self.registry
                            .namespaces
                            .get(&self.name)
                            .into_iter()
                            .flat_map(|(_, n)| n.iter().map(String::as_str))
                    )
                ),
            )),
        }
    }
}

/// dbt's `adapter`: `dispatch(name, macro_namespace=None)` in dbt's search order — for a
/// namespace, the `dispatch:` search order of dbt_project.yml, else the root project then the
/// namespace; without one, the caller's own macros, the root project's, then `dbt`'s — trying
/// in each the adapter prefixes in order (`bigquery__` before `default__`: Rainbow speaks
/// BigQuery SQL). Source: docs.getdbt.com/reference/dbt-jinja-functions/dispatch.
#[derive(Debug)]
pub(crate) struct Adapter {
    registry: Arc<Registry>,
    /// What runs the introspective methods' queries (when executing).
    query: Option<super::execute::QueryFn>,
}

impl Adapter {
    /// `get_columns_in_relation`, `get_relation`, `load_relation`, `already_exists`,
    /// `quote`: at parse (`execute` false) they answer nothing (and the node is rendered
    /// again when built); then they ask the warehouse.
    fn introspect(&self, state: &State, method: &str, args: &[Value]) -> Result<Value, JinjaError> {
        use super::execute::adapter_query;
        let (positional, kwargs) = super::datetime::split_args(args)?;
        let arg = |i: usize, name: &str| -> Result<Option<Value>, JinjaError> {
            if let Some(v) = positional.get(i) {
                return Ok(Some(v.clone()));
            }
            match &kwargs {
                Some(k) => k.get::<Option<Value>>(name),
                None => Ok(None),
            }
        };
        let failed = |e: String| JinjaError::new(ErrorKind::InvalidOperation, e);
        match method {
            "quote" => Ok(Value::from(format!(
                "`{}`",
                arg(0, "identifier")?
                    .map(|v| v.to_string())
                    .unwrap_or_default()
            ))),
            "get_columns_in_relation" => {
                let relation = arg(0, "relation")?.ok_or_else(|| {
                    failed("adapter.get_columns_in_relation needs a relation".into())
                })?;
                match adapter_query(
                    state,
                    &self.query,
                    &format!("SELECT * FROM {relation} LIMIT 0"),
                ) {
                    None => Ok(Value::from(Vec::<Value>::new())),
                    Some(result) => {
                        let result = result.map_err(failed)?;
                        Ok(Value::from(
                            result
                                .columns
                                .into_iter()
                                .zip(result.types)
                                .map(|(n, t)| super::execute::Column::value(n, t))
                                .collect::<Vec<_>>(),
                        ))
                    }
                }
            }
            "get_relation" | "already_exists" => {
                let (schema, identifier) = if method == "get_relation" {
                    (arg(1, "schema")?, arg(2, "identifier")?)
                } else {
                    (arg(0, "schema")?, arg(1, "name")?)
                };
                let (Some(schema), Some(identifier)) = (schema, identifier) else {
                    return Err(failed(format!(
                        "adapter.{method} needs a schema and an identifier"
                    )));
                };
                let name = format!("{schema}.{identifier}");
                let exists = matches!(
                    adapter_query(state, &self.query, &format!("SELECT 1 FROM {name} LIMIT 0")),
                    Some(Ok(_))
                );
                Ok(match (method, exists) {
                    ("already_exists", e) => Value::from(e),
                    (_, true) => Relation::value(name),
                    (_, false) => Value::from(()),
                })
            }
            "load_relation" => {
                let relation = arg(0, "relation")?.unwrap_or_default();
                let exists = matches!(
                    adapter_query(
                        state,
                        &self.query,
                        &format!("SELECT 1 FROM {relation} LIMIT 0")
                    ),
                    Some(Ok(_))
                );
                Ok(if exists { relation } else { Value::from(()) })
            }
            _ => Err(JinjaError::from(ErrorKind::UnknownMethod)),
        }
    }
}

impl Object for Adapter {
    fn call_method(
        self: &Arc<Self>,
        state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, JinjaError> {
        if method != "dispatch" {
            return self.introspect(state, method, args);
        }
        let (positional, kwargs) = super::datetime::split_args(args)?;
        let name = positional
            .first()
            .and_then(|a| a.as_str())
            .ok_or_else(|| {
                JinjaError::new(
                    ErrorKind::InvalidOperation,
                    "adapter.dispatch needs a macro name",
                )
            })?
            .to_owned();
        let namespace: Option<String> = match positional.get(1) {
            Some(v) if !v.is_none() => v.as_str().map(str::to_owned),
            _ => match &kwargs {
                Some(k) => k.get::<Option<String>>("macro_namespace")?,
                None => None,
            },
        };
        let r = &self.registry;
        let search: Vec<Option<String>> = match &namespace {
            Some(ns) => match r.dispatch.get(ns) {
                Some(order) => order.iter().cloned().map(Some).collect(),
                None => vec![Some(r.root.clone()), Some(ns.clone())],
            },
            None => vec![None, Some(r.root.clone()), Some("dbt".into())],
        };
        let mut tried = Vec::new();
        for package in &search {
            for prefix in &r.prefixes {
                let candidate = format!("{prefix}__{name}");
                match package {
                    None => {
                        if let Some(m) = state.lookup(&candidate).filter(|m| !m.is_undefined()) {
                            return Ok(m);
                        }
                    }
                    Some(p) => {
                        if let Some(template) = r.has(p, &candidate) {
                            return Ok(Value::from_object(MacroRef {
                                template: template.to_owned(),
                                name: candidate,
                            }));
                        }
                    }
                }
                tried.push(match package {
                    Some(p) => format!("{p}.{candidate}"),
                    None => candidate.clone(),
                });
            }
        }
        Err(JinjaError::new(
            ErrorKind::UndefinedError,
            format!("adapter.dispatch('{name}'): no macro {}", tried.join(", ")),
        ))
    }
}

/// dbt's `config`: called, it records the node's config (`config(materialized='table')`);
/// `config.get(key, default=None)` and `config.require(key)` read it.
#[derive(Debug)]
pub(crate) struct Config;

impl Object for Config {
    fn call(
        self: &Arc<Self>,
        state: &mut State<'_, '_>,
        args: &[Value],
    ) -> Result<Value, JinjaError> {
        let c = collector(state)?;
        if let Some(kwargs) = args.last().filter(|a| a.is_kwargs()) {
            let kwargs = Kwargs::try_from(kwargs.clone())?;
            if let Ok(mut config) = c.config.lock() {
                for key in kwargs.args() {
                    let v: Value = kwargs.get(key)?;
                    merge_config(&mut config, key, to_json(&v));
                }
            }
        }
        Ok(Value::from(""))
    }

    fn call_method(
        self: &Arc<Self>,
        state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, JinjaError> {
        let (positional, kwargs) = super::datetime::split_args(args)?;
        let key = positional.first().and_then(|a| a.as_str()).ok_or_else(|| {
            JinjaError::new(
                ErrorKind::InvalidOperation,
                format!("config.{method} needs a key"),
            )
        })?;
        // `config.get(key, default)` or `config.get(key, default=…)`.
        let default = match (positional.get(1), &kwargs) {
            (Some(d), _) => Some(d.clone()),
            (None, Some(k)) => k.get::<Option<Value>>("default")?,
            (None, None) => None,
        };
        let value = collector(state)?
            .config
            .lock()
            .ok()
            .and_then(|c| c.get(key).cloned());
        match (method, value) {
            ("get", Some(v)) | ("require", Some(v)) => Ok(Value::from(Serde(v))),
            ("get", None) => Ok(default.unwrap_or(Value::from(()))),
            ("require", None) => Err(JinjaError::new(
                ErrorKind::InvalidOperation,
                format!("the config `{key}` is required"),
            )),
            _ => Err(JinjaError::from(ErrorKind::UnknownMethod)),
        }
    }
}

/// `api.Column.translate_type(name)` (dbt's portable type names in BigQuery's words) and
/// `api.Relation.create(database, schema, identifier)`.
#[derive(Debug)]
struct Api(&'static str);

impl Object for Api {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "Column" => Some(Value::from_object(Api("Column"))),
            "Relation" => Some(Value::from_object(Api("Relation"))),
            _ => None,
        }
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, JinjaError> {
        match (self.0, method) {
            ("Column", "translate_type") => {
                let t = args.first().and_then(|a| a.as_str()).unwrap_or("");
                Ok(Value::from(match t.to_ascii_lowercase().as_str() {
                    "text" | "string" | "varchar" => "string".to_owned(),
                    "integer" | "int" | "bigint" => "int64".to_owned(),
                    "float" | "double" => "float64".to_owned(),
                    "boolean" | "bool" => "bool".to_owned(),
                    other => other.to_owned(),
                }))
            }
            ("Relation", "create") => {
                let kwargs = match args.last() {
                    Some(k) if k.is_kwargs() => Some(Kwargs::try_from(k.clone())?),
                    _ => None,
                };
                let part = |i: usize, name: &str| -> Result<Option<String>, JinjaError> {
                    if let Some(v) = args.get(i).filter(|v| !v.is_kwargs() && !v.is_none()) {
                        return Ok(Some(v.to_string()));
                    }
                    Ok(match &kwargs {
                        Some(k) => k.get::<Option<String>>(name)?,
                        None => None,
                    })
                };
                let (_database, schema, identifier) = (
                    part(0, "database")?,
                    part(1, "schema")?,
                    part(2, "identifier")?,
                );
                if let Some(k) = &kwargs {
                    let _: Option<Value> = k.get("type")?;
                }
                let identifier = identifier.ok_or_else(|| {
                    JinjaError::new(
                        ErrorKind::InvalidOperation,
                        "api.Relation.create needs an identifier",
                    )
                })?;
                Ok(Relation::value(match schema {
                    Some(s) => format!("{s}.{identifier}"),
                    None => identifier,
                }))
            }
            ("Relation", "add_ephemeral_prefix") => Ok(Value::from(format!(
                "__dbt__cte__{}",
                args.first().map(|a| a.to_string()).unwrap_or_default()
            ))),
            _ => Err(JinjaError::from(ErrorKind::UnknownMethod)),
        }
    }
}

pub(crate) fn collector(state: &State) -> Result<Arc<Collector>, JinjaError> {
    state
        .lookup("__rainbow")
        .and_then(|v| v.downcast_object::<Collector>())
        .ok_or_else(|| JinjaError::new(ErrorKind::InvalidOperation, "internal: no collector"))
}

pub(crate) fn to_json(v: &Value) -> Json {
    serde_json::to_value(v).unwrap_or(Json::Null)
}

/// Names of the macros defined in `text` (`{% macro name(` … ).
pub(crate) fn macro_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("macro ") {
        let before = rest[..i].trim_end();
        let after = &rest[i + 6..];
        rest = after;
        if !(before.ends_with("{%") || before.ends_with("{%-")) {
            continue;
        }
        let name: String = after
            .trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.push(name);
        }
    }
    out
}

/// Relations are rendered as `\u{1}key\u{2}` and replaced by [`compile`] once every
/// node's schema and alias are known: one Jinja pass per file at parse (another at build only
/// for a node whose rendering read `execute`).
pub(crate) fn placeholder(key: &str) -> String {
    format!("\u{1}{key}\u{2}")
}

/// Separates a relation's key from the part asked for (`{{ this.schema }}`) in a placeholder.
pub(crate) const PART: char = '\u{3}';

/// What `ref()`, `source()` and `this` return: renders as the relation's placeholder and
/// has dbt's Relation attributes (`schema`, `identifier`/`name`/`table`, `database`), each a
/// placeholder for that part; all are resolved once every node's schema and alias are known.
#[derive(Debug)]
pub(crate) struct Relation {
    key: String,
}

impl Relation {
    fn value(key: String) -> Value {
        Value::from_object(Relation { key })
    }
}

impl Object for Relation {
    /// A mapping, as dbt's Relation is (`relation is mapping`, `.get('metadata')`); it prints,
    /// compares and serialises as its relation.
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn enumerate(self: &Arc<Self>) -> minijinja::value::Enumerator {
        minijinja::value::Enumerator::Str(&["database", "schema", "identifier"])
    }

    fn is_true(self: &Arc<Self>) -> bool {
        true
    }

    fn custom_cmp(self: &Arc<Self>, other: &DynObject) -> Option<std::cmp::Ordering> {
        Some(self.key.cmp(&other.downcast_ref::<Self>()?.key))
    }

    fn get_value(self: &Arc<Self>, field: &Value) -> Option<Value> {
        let part = match field.as_str()? {
            "schema" => "schema",
            "identifier" | "name" | "table" => "identifier",
            "database" => "database",
            "metadata" => {
                return Some(Value::from(Serde(
                    serde_json::json!({"type": "BigQueryRelation"}),
                )));
            }
            "is_cte" => return Some(Value::from(false)),
            "type" => return Some(Value::from("table")),
            _ => return None,
        };
        // Once every node's schema and alias are known (a second render), the part itself;
        // before, a placeholder, and the render is marked for that second pass.
        if let Some(known) = KNOWN_RELATIONS.with(|k| k.borrow().clone()) {
            let relation = known.get(&self.key).cloned().unwrap_or_else(|| {
                self.key
                    .strip_prefix("source:")
                    .unwrap_or(&self.key)
                    .to_owned()
            });
            let value = match (part, relation.split_once('.')) {
                ("database", _) => known
                    .get(DATABASE_KEY)
                    .cloned()
                    .unwrap_or_else(|| "rainbow".to_owned()),
                ("schema", Some((schema, _))) => schema.to_owned(),
                ("identifier", Some((_, identifier))) => identifier.to_owned(),
                _ => relation,
            };
            return Some(Value::from(value));
        }
        PARTS_READ.with(|r| r.set(true));
        Some(Value::from(placeholder(&format!(
            "{}{PART}{part}",
            self.key
        ))))
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, JinjaError> {
        match method {
            // `relation.get(key, default)`: dbt's Relation is a mapping.
            "get" => {
                let key = args.first().cloned().unwrap_or_default();
                Ok(self
                    .get_value(&key)
                    .or_else(|| args.get(1).cloned())
                    .unwrap_or(Value::from(())))
            }
            "render" => Ok(Value::from(placeholder(&self.key))),
            // Quoting and path policies do not change a BigQuery name here.
            "include" | "quote" | "incorporate" | "replace_path" => {
                Ok(Value::from_dyn_object(self.clone()))
            }
            _ => Err(JinjaError::from(ErrorKind::UnknownMethod)),
        }
    }

    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&placeholder(&self.key))
    }
}

thread_local! {
    /// Whether a render on this thread read a relation's part (`this.identifier`) while the
    /// names were placeholders.
    static PARTS_READ: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The relation names a render on this thread sees parts of (set by [`KnownRelations`]).
    static KNOWN_RELATIONS: std::cell::RefCell<Option<Arc<Relations>>> =
        const { std::cell::RefCell::new(None) };
}

/// Forgets and returns whether a relation's part was read on this thread as a placeholder.
pub(crate) fn take_parts_read() -> bool {
    PARTS_READ.with(|r| r.replace(false))
}

/// While alive, renders on this thread see relations' parts (`this.schema`,
/// `ref('x').identifier`) as the names themselves, not placeholders.
pub(crate) struct KnownRelations(Option<Arc<Relations>>);

impl KnownRelations {
    pub(crate) fn set(relations: Arc<Relations>) -> Self {
        KnownRelations(KNOWN_RELATIONS.with(|k| k.replace(Some(relations))))
    }
}

impl Drop for KnownRelations {
    fn drop(&mut self) {
        let previous = self.0.take();
        KNOWN_RELATIONS.with(|k| *k.borrow_mut() = previous);
    }
}

/// Replaces placeholders with relation names (unknown keys keep their key).
pub(crate) fn substitute(text: &str, relations: &Relations) -> String {
    let mut out = String::with_capacity(text.len() + 32);
    let mut rest = text;
    while let Some(start) = rest.find('\u{1}') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after.find('\u{2}') {
            Some(end) => {
                let (key, part) = match after[..end].split_once(PART) {
                    Some((key, part)) => (key, Some(part)),
                    None => (&after[..end], None),
                };
                let relation = relations
                    .get(key)
                    .map(String::as_str)
                    .unwrap_or_else(|| key.strip_prefix("source:").unwrap_or(key));
                match (part, relation.split_once('.'), relations.get(DATABASE_KEY)) {
                    (Some("schema"), Some((schema, _)), _) => out.push_str(schema),
                    (Some("identifier"), Some((_, identifier)), _) => out.push_str(identifier),
                    (Some("database"), _, database) => {
                        out.push_str(database.map_or("rainbow", String::as_str))
                    }
                    // A relation (not an ephemeral model's CTE) on a target with a database.
                    (None, Some(_), Some(database)) => {
                        out.push_str(&format!("`{database}.{relation}`"))
                    }
                    _ => out.push_str(relation),
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The Jinja environment of a project; files are rendered from the project's own text.
pub(crate) struct Jinja<'p> {
    env: Environment<'p>,
    /// The root project's name (`project_name`, a node's `package_name`).
    project_name: String,
    /// The root project's macro names (read once).
    root_macros: Vec<String>,
    /// First line of each macro file in the combined macro template, and the file.
    macro_lines: Vec<(String, usize, String)>,
    /// Length of the macro import prepended to every file's first line.
    prefix_len: usize,
}

/// Prefix of the public alias under which a `_private` macro is exported.
pub(crate) const PRIVATE_ALIAS: &str = "rainbow_private";

/// `{% set` statements, appended after every macro file (so line numbers are unchanged),
/// that export each `_private` macro under a public alias.
pub(crate) fn private_exports(names: &[String]) -> String {
    names
        .iter()
        .filter(|n| n.starts_with('_'))
        .map(|n| format!("{{% set {PRIVATE_ALIAS}{n} = {n} %}}"))
        .collect()
}

/// The import of every project macro, prepended to each file (on its first line, so line
/// numbers stay those of the file). The built-in `dbt` macros need none: they are globals
/// (see `Jinja::with_macros`), which a project's own macro of the same name shadows.
pub(crate) fn macro_prefix(names: &[String]) -> String {
    macro_prefix_from("__macros__", names)
}

/// The imports prepended to a file of `project`'s at `path`: its package's macros for a
/// package's file (`dbt_packages/<package>/…`), else the project's.
pub(crate) fn file_prefix(project: &Project, path: &str) -> String {
    match project.package_of(path) {
        Some(package) => macro_prefix_from(
            &format!("__macros__{}", package.file.name),
            &project_macros(package),
        ),
        None => macro_prefix(&project_macros(project)),
    }
}

/// `{% from "<template>" import … %}` of `names` (`_private` ones through their alias).
fn macro_prefix_from(template: &str, names: &[String]) -> String {
    if names.is_empty() {
        return String::new();
    }
    let imports: Vec<String> = names
        .iter()
        .map(|n| match n.strip_prefix('_') {
            // Jinja does not export or import `_private` names: the macro template
            // re-exports them under a public alias (see `private_exports`).
            Some(_) => format!("{PRIVATE_ALIAS}{n} as {n}"),
            None => n.clone(),
        })
        .collect();
    format!("{{% from \"{template}\" import {} %}}", imports.join(", "))
}

/// The names of every project macro.
pub(crate) fn project_macros(project: &Project) -> Vec<String> {
    project
        .macros
        .iter()
        .flat_map(|f| macro_names(&generic_tests_as_macros(&f.text)))
        .collect()
}

/// Rewrites the `{% … %}` tags of `text`: `f(tag, inner)` gets each tag and its inside
/// (without delimiters, whitespace control or surrounding spaces) and returns a replacement,
/// or `None` to keep the tag. Everything outside tags is kept as is.
pub(crate) fn rewrite_tags(text: &str, mut f: impl FnMut(&str, &str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text;
    while let Some(i) = rest.find("{%") {
        out.push_str(&rest[..i]);
        let tag = &rest[i..];
        let end = tag.find("%}").map(|e| e + 2).unwrap_or(tag.len());
        let block = &tag[..end];
        let inner = block
            .trim_start_matches("{%")
            .trim_start_matches('-')
            .trim_end_matches("%}")
            .trim_end_matches('-')
            .trim();
        match f(block, inner) {
            Some(replacement) => out.push_str(&replacement),
            None => out.push_str(block),
        }
        rest = &tag[end..];
    }
    out.push_str(rest);
    out
}

/// dbt's `{% test name(model, column_name) %}…{% endtest %}` blocks become macros named
/// `test_<name>` (minijinja has no test blocks); line structure is kept.
pub(crate) fn generic_tests_as_macros(text: &str) -> String {
    rewrite_tags(text, |block, inner| {
        if let Some(after) = inner.strip_prefix("test ") {
            let dash = if block.starts_with("{%-") { "-" } else { "" };
            let end = if block.ends_with("-%}") { "-%}" } else { "%}" };
            let head = format!("{{%{dash} macro test_{}", after.trim_start());
            // Keep the tag's line count (trimming may have dropped trailing newlines).
            let lost = block.matches('\n').count() - head.matches('\n').count();
            Some(format!("{head}{} {end}", "\n".repeat(lost)))
        } else if inner == "endtest" {
            Some(block.replacen("endtest", "endmacro", 1))
        } else {
            None
        }
    })
}

/// dbt's `{% snapshot name %}…{% endsnapshot %}` block: its name and its body, the two tags
/// blanked out (their newlines kept, so line numbers stay those of the file).
pub(crate) fn snapshot_block(text: &str) -> (Option<String>, String) {
    let mut name = None;
    let body = rewrite_tags(text, |block, inner| {
        let blank = || "\n".repeat(block.matches('\n').count());
        if let Some(after) = inner.strip_prefix("snapshot ") {
            name = Some(after.trim().to_owned());
            Some(blank())
        } else if inner == "endsnapshot" {
            Some(blank())
        } else {
            None
        }
    });
    (name, body)
}

impl<'p> Jinja<'p> {
    /// The environment for `project` under `options`: its macros, dbt's globals and
    /// functions.
    pub(crate) fn new(project: &'p Project, options: &CompileOptions) -> Result<Self, DbtError> {
        let mut jinja = Self::with_macros(project, options)?;
        super::execute::register(&mut jinja.env, options.query.clone(), options.execute);
        jinja.add_globals(options);
        jinja.add_functions(project_vars(project, options), options);
        Ok(jinja)
    }

    /// An environment (strict undefined, Python's semantics) holding one macro template per
    /// namespace: `__macros__` (the project's macros, generic tests as `test_<name>` macros,
    /// `_private` macros re-exported), `__macros__<package>` for each package, `__macros__dbt`
    /// for the built-in ones; each namespace is a global (`dbt_utils.star(…)`), and `adapter`
    /// dispatches across them.
    fn with_macros(project: &'p Project, options: &CompileOptions) -> Result<Self, DbtError> {
        let mut env = Environment::new();
        // Jinja2's Undefined, as dbt executes with it: it prints as nothing and iterates as
        // empty (dbt_utils' equal_rowcount prints a variable it sets only sometimes); an
        // attribute of it or a call is an error naming it.
        env.set_undefined_behavior(UndefinedBehavior::Lenient);
        // Python's semantics: mutable lists and dicts, `return()`, string/list/dict methods.
        super::python::register(&mut env);
        let mut jinja = Jinja {
            env,
            project_name: project.file.name.clone(),
            root_macros: Vec::new(),
            macro_lines: Vec::new(),
            prefix_len: 0,
        };
        let mut registry = Registry {
            root: project.file.name.clone(),
            dispatch: project
                .file
                .dispatch
                .iter()
                .map(|d| (d.macro_namespace.clone(), d.search_order.clone()))
                .collect(),
            prefixes: [options.target_type.as_str(), "bigquery", "default"]
                .into_iter()
                .fold(Vec::new(), |mut v, p| {
                    if !v.iter().any(|x: &String| x == p) {
                        v.push(p.to_owned());
                    }
                    v
                }),
            ..Registry::default()
        };
        let internal = super::python::python_compat(INTERNAL_MACROS);
        jinja
            .env
            .add_template_owned("__macros__dbt", internal)
            .map_err(|e| jinja.error(&e, "__macros__dbt"))?;
        registry.namespaces.insert(
            "dbt".into(),
            ("__macros__dbt".into(), macro_names(INTERNAL_MACROS)),
        );
        let templates = std::iter::once(("__macros__".to_owned(), project)).chain(
            project
                .packages
                .iter()
                .map(|p| (format!("__macros__{}", p.file.name), p)),
        );
        for (template, p) in templates {
            let mut names = Vec::new();
            let mut text = String::new();
            let mut files = Vec::new();
            for f in &p.macros {
                let body = super::python::python_compat(&generic_tests_as_macros(&f.text));
                files.push((text.lines().count() + 1, f.path.clone()));
                names.extend(macro_names(&body));
                text.push_str(&body);
                text.push('\n');
            }
            text.push_str(&private_exports(&names));
            for (line, path) in files {
                let path = if template == "__macros__" {
                    path
                } else {
                    format!("{}/{path}", p.root.display())
                };
                jinja.macro_lines.push((template.clone(), line, path));
            }
            jinja
                .env
                .add_template_owned(template.clone(), text)
                .map_err(|e| jinja.error(&e, &template))?;
            if template == "__macros__" {
                jinja.prefix_len = macro_prefix(&names).len();
                jinja.root_macros = names.clone();
            }
            registry
                .namespaces
                .insert(p.file.name.clone(), (template, names));
        }
        // dbt's built-in macros are callable unqualified everywhere, as in dbt: each a global
        // that evaluates the `dbt` template only when called (an import into every file would
        // evaluate it once per render: 3x the parse time of a 10,000-model project). A
        // project's or package's own macro of the same name is local and wins.
        for name in macro_names(INTERNAL_MACROS) {
            jinja.env.add_global(
                name.clone(),
                Value::from_object(MacroRef {
                    template: "__macros__dbt".into(),
                    name,
                }),
            );
        }
        let registry = Arc::new(registry);
        for name in registry.namespaces.keys() {
            jinja.env.add_global(
                name.clone(),
                Value::from_object(Namespace {
                    name: name.clone(),
                    registry: registry.clone(),
                }),
            );
        }
        jinja.env.add_global(
            "adapter",
            Value::from_object(Adapter {
                registry,
                query: options.query.clone(),
            }),
        );
        Ok(jinja)
    }

    /// dbt's globals: `target`, `run_started_at`, `exceptions`, `adapter`, and the extra
    /// variables (partition key and window).
    fn add_globals(&mut self, options: &CompileOptions) {
        let env = &mut self.env;
        env.add_global(
            "target",
            Value::from(Serde(serde_json::json!({
                "name": options.target_name, "type": options.target_type,
                "schema": options.target_schema,
                "database": options.database.as_deref().unwrap_or("rainbow"),
                // dbt-bigquery's names for them.
                "project": options.database.as_deref().unwrap_or("rainbow"),
                "dataset": options.target_schema,
            }))),
        );
        // A datetime in UTC, as dbt's (`run_started_at.strftime(…)`; it prints as Python's
        // `str()`: `2024-01-01 10:00:00.123456+00:00`).
        env.add_global(
            "run_started_at",
            super::datetime::utc_datetime(&options.run_started_at),
        );
        env.add_global("invocation_id", Value::from(options.invocation_id.clone()));
        env.add_global("exceptions", Value::from_object(Exceptions));
        env.add_global("project_name", Value::from(self.project_name.clone()));
        env.add_global("api", Value::from_object(Api("api")));
        env.add_global("config", Value::from_object(Config));
        // The dbt version Rainbow implements the behaviour of (packages check it with
        // require-dbt-version).
        env.add_global("dbt_version", Value::from(DBT_VERSION));
        env.add_global(
            "flags",
            Value::from(Serde(serde_json::json!({
                "STORE_FAILURES": false, "FULL_REFRESH": options.full_refresh, "WHICH": "run",
            }))),
        );
        env.add_global("modules", super::python::modules());
        for (k, v) in &options.extra {
            env.add_global(k.clone(), Value::from(Serde(v.clone())));
        }
    }

    /// dbt's functions: `is_incremental`, `var` (over `vars`), `env_var`, `log`, and the
    /// recording ones, `ref`, `source`, `config`.
    fn add_functions(&mut self, vars: BTreeMap<String, Json>, options: &CompileOptions) {
        let env = &mut self.env;
        let incremental = options.incremental.clone();
        env.add_function(
            "is_incremental",
            move |state: &State| -> Result<bool, JinjaError> {
                let this = state
                    .lookup("__name")
                    .map(|v| v.to_string())
                    .unwrap_or_default();
                let c = collector(state)?;
                let materialized = c
                    .config
                    .lock()
                    .map(|c| c.get("materialized").cloned())
                    .ok()
                    .flatten();
                let is = incremental.contains(&this)
                    && materialized.as_ref().and_then(Json::as_str) == Some("incremental");
                if let Ok(mut answers) = c.incremental_answers.lock() {
                    answers.push(is);
                }
                Ok(is)
            },
        );
        env.add_function(
            "var",
            move |name: String, rest: minijinja::value::Rest<Value>| -> Result<Value, JinjaError> {
                // `var('x', none)` has a default (none); `var('x')` has none.
                match (vars.get(&name), rest.first()) {
                    (Some(v), _) => Ok(Value::from(Serde(v.clone()))),
                    (None, Some(d)) => Ok(d.clone()),
                    (None, None) => Err(JinjaError::new(
                        ErrorKind::UndefinedError,
                        format!("var(`{name}`) is not defined in dbt_project.yml vars or --vars, and has no default"),
                    )),
                }
            },
        );
        let overrides = options.env.clone();
        env.add_function(
            "env_var",
            move |name: String, default: Option<String>| -> Result<String, JinjaError> {
                if let Some(v) = overrides.get(&name) {
                    return Ok(v.clone());
                }
                match (std::env::var(&name), default) {
                    (Ok(v), _) => Ok(v),
                    (Err(_), Some(d)) => Ok(d),
                    (Err(_), None) => Err(JinjaError::new(
                        ErrorKind::UndefinedError,
                        format!(
                            "environment variable `{name}` is not set and env_var() has no default"
                        ),
                    )),
                }
            },
        );
        env.add_function("log", |msg: Value, _kwargs: Kwargs| -> String {
            tracing::info!("{msg}");
            String::new()
        });
        env.add_function(
            "ref",
            |state: &State, first: String, second: Option<String>| -> Result<Value, JinjaError> {
                // ref('model') or ref('package', 'model'): a placeholder compile() replaces.
                let name = second.unwrap_or(first);
                collector(state)?
                    .refs
                    .lock()
                    .map(|mut r| r.push(name.clone()))
                    .ok();
                Ok(Relation::value(name))
            },
        );
        env.add_function(
            "source",
            |state: &State, source: String, table: String| -> Result<Value, JinjaError> {
                collector(state)?
                    .sources
                    .lock()
                    .map(|mut s| s.push((source.clone(), table.clone())))
                    .ok();
                Ok(Relation::value(format!("source:{source}.{table}")))
            },
        );
    }

    /// A minijinja error as file:line:column.
    pub(crate) fn error(&self, e: &JinjaError, default_file: &str) -> DbtError {
        let name = e.name().unwrap_or(default_file).to_owned();
        let mut line = e.line().unwrap_or(0);
        let mut file = name.clone();
        if name.starts_with("__macros__") {
            // Map back from the combined macro template to the macro's own file.
            if let Some((_, start, path)) = self
                .macro_lines
                .iter()
                .rev()
                .find(|(template, start, _)| *template == name && *start <= line)
            {
                line = line - start + 1;
                file = path.clone();
            }
        }
        let column = match (e.range(), e.template_source()) {
            (Some(r), Some(src)) => {
                let before = &src[..r.start.min(src.len())];
                let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
                if line == 1 && !name.starts_with("__macros__") {
                    col.saturating_sub(self.prefix_len).max(1)
                } else {
                    col
                }
            }
            _ => 0,
        };
        let message = match e.detail() {
            Some(d) => format!("{}: {d}", e.kind()),
            None => e.kind().to_string(),
        };
        DbtError::Jinja {
            file,
            line,
            column,
            message,
        }
    }

    /// Whether the root project defines macro `name` (`generate_schema_name` and its kind).
    pub(crate) fn defines(&self, name: &str) -> bool {
        self.root_macros.iter().any(|m| m == name)
    }

    /// Calls the project's macro `name(custom, node)` (`generate_schema_name` and its kind)
    /// and returns its text; errors name `path`, the node it was called for.
    pub(crate) fn call_project_macro(
        &self,
        path: &str,
        name: &str,
        custom: Option<&str>,
        node: Json,
    ) -> Result<String, DbtError> {
        let mut ctx = BTreeMap::new();
        ctx.insert(
            "__rainbow".to_owned(),
            Value::from_dyn_object(Arc::new(Collector::default())),
        );
        ctx.insert("__custom".to_owned(), Value::from(custom));
        ctx.insert("__node".to_owned(), Value::from(Serde(node)));
        self.env
            .render_str(
                &format!(
                    "{{% from \"__macros__\" import {name} %}}{{{{ {name}(__custom, __node) }}}}"
                ),
                Value::from(ctx),
            )
            .map_err(|e| {
                let mut err = self.error(&e, path);
                if let DbtError::Jinja { message, .. } = &mut err {
                    *message = format!("{name}() for {path}: {message}");
                }
                err
            })
    }

    /// Renders one file; returns the text (relations as placeholders) and what it recorded.
    pub(crate) fn render(
        &self,
        path: &'p str,
        text: &'p str,
        name: &str,
        config: BTreeMap<String, Json>,
    ) -> Result<(String, Arc<Collector>), DbtError> {
        let model = self.model_of(path, name);
        self.render_as(path, text, name, config, model)
    }

    /// dbt's `model` of a node: `name`, `unique_id`, `resource_type`, `package_name`, `path`,
    /// `original_file_path`.
    fn model_of(&self, path: &str, name: &str) -> Value {
        let resource_type = match path
            .split('/')
            .find(|p| ["models", "seeds", "snapshots", "tests", "data-tests"].contains(p))
        {
            Some("seeds") => "seed",
            Some("snapshots") => "snapshot",
            Some("tests") | Some("data-tests") => "test",
            _ => "model",
        };
        let package = match path.strip_prefix("dbt_packages/") {
            Some(rest) => rest.split('/').next().unwrap_or(&self.project_name),
            None => &self.project_name,
        };
        Value::from(Serde(serde_json::json!({
            "name": name,
            "unique_id": format!("{resource_type}.{package}.{name}"),
            "resource_type": resource_type,
            "package_name": package,
            "path": path,
            "original_file_path": path,
        })))
    }

    fn render_as(
        &self,
        path: &'p str,
        text: &'p str,
        name: &str,
        config: BTreeMap<String, Json>,
        model: Value,
    ) -> Result<(String, Arc<Collector>), DbtError> {
        let collector = Arc::new(Collector {
            config: Mutex::new(config),
            ..Collector::default()
        });
        let mut ctx = BTreeMap::new();
        ctx.insert(
            "__rainbow".to_owned(),
            Value::from_dyn_object(collector.clone()),
        );
        ctx.insert("__name".to_owned(), Value::from(name.to_owned()));
        ctx.insert("this".to_owned(), Relation::value(name.to_owned()));
        ctx.insert("model".to_owned(), model);
        let tmpl = self
            .env
            .template_from_named_str(path, text)
            .map_err(|e| self.error(&e, path))?;
        super::execute::take_execute_read();
        take_parts_read();
        let rendered = tmpl
            .render(Value::from(ctx))
            .map_err(|e| self.error(&e, path))?;
        if take_parts_read()
            && let Ok(mut parts) = collector.parts_read.lock()
        {
            *parts = true;
        }
        if super::execute::take_execute_read()
            && let Ok(mut executes) = collector.executes.lock()
        {
            *executes = true;
        }
        Ok((rendered, collector))
    }
}

/// An environment holding the project's macros (generic tests as `test_<name>`), for
/// rendering snippets such as custom generic tests.
pub(crate) fn macro_environment<'p>(
    project: &'p Project,
    options: &CompileOptions,
) -> Result<Environment<'p>, DbtError> {
    Ok(Jinja::new(project, options)?.env)
}

/// The variables `var()` sees: each package's own `vars` (its defaults), then the project's
/// global `vars`, then those it scopes to itself or to a package (`vars: {<name>: {...}}`),
/// then `--vars` — later ones win. (dbt scopes a package's defaults to its own macros; here
/// they are visible everywhere, under the project's values.)
fn project_vars(project: &Project, options: &CompileOptions) -> BTreeMap<String, Json> {
    let names: Vec<&str> = std::iter::once(project.file.name.as_str())
        .chain(project.packages.iter().map(|p| p.file.name.as_str()))
        .collect();
    let mut out = BTreeMap::new();
    for p in &project.packages {
        out.extend(
            p.file
                .vars
                .iter()
                .filter(|(k, _)| !names.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        if let Some(own) = p.file.vars.get(&p.file.name).and_then(Json::as_object) {
            out.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
    out.extend(
        project
            .file
            .vars
            .iter()
            .filter(|(k, _)| !names.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    for name in names.iter().rev() {
        if let Some(scoped) = project.file.vars.get(*name).and_then(Json::as_object) {
            out.extend(scoped.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
    out.extend(options.vars.clone());
    out
}
