//! Parsing and compiling: every model, seed, snapshot and singular test rendered with dbt's
//! Jinja context on minijinja. Parsing records `ref`/`source`/`config` calls (the DAG);
//! compiling substitutes relation names into the once-rendered SQL under `target/compiled/` and writes
//! `target/manifest.json`. Errors name file:line:column.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use minijinja::value::{DynObject, Kwargs, Object, ObjectRepr, Serde, Value};
use minijinja::{Environment, Error as JinjaError, ErrorKind, State, UndefinedBehavior};
use serde::Serialize;
use serde_json::Value as Json;

use rainbow_suggest::did_you_mean;

use crate::error::DbtError;
use crate::project::{Project, merge_config};

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    /// `models/**/*.sql`.
    Model,
    /// `seeds/*.csv`.
    Seed,
    /// `snapshots/*.sql`.
    Snapshot,
    /// `tests/*.sql` (singular test).
    Test,
}

/// A parsed node.
#[derive(Debug, Clone, Serialize)]
pub struct Node {
    /// Kind.
    pub kind: NodeKind,
    /// Name (file stem).
    pub name: String,
    /// File, relative to the project root.
    pub path: String,
    /// Resolved config: folder configs, then `config()` in the file.
    pub config: BTreeMap<String, Json>,
    /// Nodes it refs, by name.
    pub refs: Vec<String>,
    /// Sources it uses, `(source, table)`.
    pub sources: Vec<(String, String)>,
    /// Schema (dataset) of its relation.
    pub schema: String,
    /// Its relation's name (alias or name).
    pub relation: String,
    /// Compiled SQL (after [`compile`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compiled: Option<String>,
    /// The file rendered once at parse time, relations still as placeholders.
    #[serde(skip)]
    rendered: Option<String>,
}

impl Node {
    /// The materialization: `view` unless configured.
    pub fn materialized(&self) -> &str {
        self.config
            .get("materialized")
            .and_then(Json::as_str)
            .unwrap_or(match self.kind {
                NodeKind::Seed | NodeKind::Snapshot => "table",
                _ => "view",
            })
    }
}

/// Settings of a parse or compile.
#[derive(Debug, Clone)]
pub struct CompileOptions {
    /// Target name (`target.name`).
    pub target_name: String,
    /// Warehouse type (`target.type`): `datafusion` or `bigquery`; picks dispatched macros.
    pub target_type: String,
    /// Default schema (`target.schema`).
    pub target_schema: String,
    /// `--vars` overrides.
    pub vars: BTreeMap<String, Json>,
    /// `run_started_at` as text.
    pub run_started_at: String,
    /// Models for which `is_incremental()` is true (existing incremental tables).
    pub incremental: BTreeSet<String>,
    /// Extra variables visible to every template (partition key, window start/end…).
    pub extra: BTreeMap<String, Json>,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            target_name: "dev".into(),
            target_type: "datafusion".into(),
            target_schema: "main".into(),
            vars: BTreeMap::new(),
            run_started_at: String::new(),
            incremental: BTreeSet::new(),
            extra: BTreeMap::new(),
        }
    }
}

/// The parsed project: nodes by name, in dependency order.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    /// Project name.
    pub project: String,
    /// Nodes in dependency order (parents before children).
    pub nodes: Vec<Node>,
    /// Declared sources: `source.table` -> `schema.table`.
    pub sources: BTreeMap<String, String>,
}

/// What a render records (one per node render).
#[derive(Debug, Default)]
struct Collector {
    refs: Mutex<Vec<String>>,
    sources: Mutex<Vec<(String, String)>>,
    /// The node's config: the folder-level config, then each `config()` call merged in.
    config: Mutex<BTreeMap<String, Json>>,
    /// The answers `is_incremental()` gave, which the final config may contradict (a
    /// `config(materialized=…)` after the call).
    incremental_answers: Mutex<Vec<bool>>,
}

impl Object for Collector {}

/// Relations known when compiling: node name -> `schema.relation`.
pub(crate) type Relations = HashMap<String, String>;

/// `exceptions.raise_compiler_error(msg)`.
#[derive(Debug)]
struct Exceptions;

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

/// `adapter.dispatch('name')`: `<target>__name`, else `default__name`.
#[derive(Debug)]
struct Adapter {
    target_type: String,
}

impl Object for Adapter {
    fn call_method(
        self: &Arc<Self>,
        state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, JinjaError> {
        if method != "dispatch" {
            return Err(JinjaError::from(ErrorKind::UnknownMethod));
        }
        let name = args.first().and_then(|a| a.as_str()).ok_or_else(|| {
            JinjaError::new(
                ErrorKind::InvalidOperation,
                "adapter.dispatch needs a macro name",
            )
        })?;
        for candidate in [
            format!("{}__{name}", self.target_type),
            format!("default__{name}"),
        ] {
            if let Some(m) = state.lookup(&candidate)
                && !m.is_undefined()
            {
                return Ok(m);
            }
        }
        Err(JinjaError::new(
            ErrorKind::UndefinedError,
            format!(
                "no macro `{}__{name}` or `default__{name}` to dispatch to",
                self.target_type
            ),
        ))
    }
}

fn collector(state: &State) -> Result<Arc<Collector>, JinjaError> {
    state
        .lookup("__rainbow")
        .and_then(|v| v.downcast_object::<Collector>())
        .ok_or_else(|| JinjaError::new(ErrorKind::InvalidOperation, "internal: no collector"))
}

fn to_json(v: &Value) -> Json {
    serde_json::to_value(v).unwrap_or(Json::Null)
}

/// Names of the macros defined in `text` (`{% macro name(` … ).
fn macro_names(text: &str) -> Vec<String> {
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
/// node's schema and alias are known: one Jinja pass per file.
fn placeholder(key: &str) -> String {
    format!("\u{1}{key}\u{2}")
}

/// Separates a relation's key from the part asked for (`{{ this.schema }}`) in a placeholder.
const PART: char = '\u{3}';

/// What `ref()`, `source()` and `this` return: renders as the relation's placeholder and
/// has dbt's Relation attributes (`schema`, `identifier`/`name`/`table`, `database`), each a
/// placeholder for that part; all are resolved once every node's schema and alias are known.
#[derive(Debug)]
struct Relation {
    key: String,
}

impl Relation {
    fn value(key: String) -> Value {
        Value::from_object(Relation { key })
    }
}

impl Object for Relation {
    /// A plain value (not a map): it prints, compares and serialises as its relation.
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn custom_cmp(self: &Arc<Self>, other: &DynObject) -> Option<std::cmp::Ordering> {
        Some(self.key.cmp(&other.downcast_ref::<Self>()?.key))
    }

    fn get_value(self: &Arc<Self>, field: &Value) -> Option<Value> {
        let part = match field.as_str()? {
            "schema" => "schema",
            "identifier" | "name" | "table" => "identifier",
            "database" => return Some(Value::from("rainbow")),
            _ => return None,
        };
        Some(Value::from(placeholder(&format!(
            "{}{PART}{part}",
            self.key
        ))))
    }

    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&placeholder(&self.key))
    }
}

/// Replaces placeholders with relation names (unknown keys keep their key).
fn substitute(text: &str, relations: &Relations) -> String {
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
                out.push_str(match (part, relation.split_once('.')) {
                    (Some("schema"), Some((schema, _))) => schema,
                    (Some("identifier"), Some((_, identifier))) => identifier,
                    _ => relation,
                });
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
struct Jinja<'p> {
    env: Environment<'p>,
    /// First line of each macro file in the combined macro template, and the file.
    macro_lines: Vec<(usize, String)>,
    /// Length of the macro import prepended to every file's first line.
    prefix_len: usize,
}

/// Prefix of the public alias under which a `_private` macro is exported.
const PRIVATE_ALIAS: &str = "rainbow_private";

/// `{% set` statements, appended after every macro file (so line numbers are unchanged),
/// that export each `_private` macro under a public alias.
fn private_exports(names: &[String]) -> String {
    names
        .iter()
        .filter(|n| n.starts_with('_'))
        .map(|n| format!("{{% set {PRIVATE_ALIAS}{n} = {n} %}}"))
        .collect()
}

/// The import of every project macro, prepended to each file (on its first line, so line
/// numbers stay those of the file).
fn macro_prefix(names: &[String]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        let imports: Vec<String> = names
            .iter()
            .map(|n| match n.strip_prefix('_') {
                // Jinja does not export or import `_private` names: the macro template
                // re-exports them under a public alias (see `private_exports`).
                Some(_) => format!("{PRIVATE_ALIAS}{n} as {n}"),
                None => n.clone(),
            })
            .collect();
        format!("{{% from \"__macros__\" import {} %}}", imports.join(", "))
    }
}

/// The names of every project macro.
fn project_macros(project: &Project) -> Vec<String> {
    project
        .macros
        .iter()
        .flat_map(|f| macro_names(&generic_tests_as_macros(&f.text)))
        .collect()
}

/// Rewrites the `{% … %}` tags of `text`: `f(tag, inner)` gets each tag and its inside
/// (without delimiters, whitespace control or surrounding spaces) and returns a replacement,
/// or `None` to keep the tag. Everything outside tags is kept as is.
fn rewrite_tags(text: &str, mut f: impl FnMut(&str, &str) -> Option<String>) -> String {
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
    fn new(project: &'p Project, options: &CompileOptions) -> Result<Self, DbtError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Python string, list and dict methods (`.upper()`, `.items()`, `.get()`, …) as dbt has.
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        let mut macros = String::new();
        let mut macro_lines = Vec::new();
        let mut names = Vec::new();
        for f in &project.macros {
            let text = generic_tests_as_macros(&f.text);
            macro_lines.push((macros.lines().count() + 1, f.path.clone()));
            macros.push_str(&text);
            macros.push('\n');
            names.extend(macro_names(&text));
        }
        let mut jinja = Jinja {
            env,
            macro_lines,
            prefix_len: 0,
        };
        if !names.is_empty() {
            macros.push_str(&private_exports(&names));
            jinja
                .env
                .add_template_owned("__macros__", macros)
                .map_err(|e| jinja.error(&e, "__macros__"))?;
            jinja.prefix_len = macro_prefix(&names).len();
        }
        // Global vars, then those scoped to this project (`vars: {<project>: {...}}`), then
        // --vars.
        let scoped = project
            .file
            .vars
            .get(&project.file.name)
            .and_then(Json::as_object);
        let vars: BTreeMap<String, Json> = project
            .file
            .vars
            .iter()
            .filter(|(k, _)| scoped.is_none() || **k != project.file.name)
            .chain(scoped.into_iter().flatten())
            .map(|(k, v)| (k.clone(), v.clone()))
            .chain(options.vars.clone())
            .collect();
        let env = &mut jinja.env;
        env.add_global(
            "target",
            Value::from(Serde(serde_json::json!({
                "name": options.target_name, "type": options.target_type,
                "schema": options.target_schema, "database": "rainbow",
            }))),
        );
        env.add_global(
            "run_started_at",
            Value::from(options.run_started_at.clone()),
        );
        env.add_global("exceptions", Value::from_object(Exceptions));
        env.add_global(
            "adapter",
            Value::from_object(Adapter {
                target_type: options.target_type.clone(),
            }),
        );
        for (k, v) in &options.extra {
            env.add_global(k.clone(), Value::from(Serde(v.clone())));
        }
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
        env.add_function("var", move |name: String, default: Option<Value>| -> Result<Value, JinjaError> {
            match (vars.get(&name), default) {
                (Some(v), _) => Ok(Value::from(Serde(v.clone()))),
                (None, Some(d)) => Ok(d),
                (None, None) => Err(JinjaError::new(
                    ErrorKind::UndefinedError,
                    format!("var(`{name}`) is not defined in dbt_project.yml vars or --vars, and has no default"),
                )),
            }
        });
        env.add_function(
            "env_var",
            |name: String, default: Option<String>| -> Result<String, JinjaError> {
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
        env.add_function(
            "config",
            |state: &State, kwargs: Kwargs| -> Result<String, JinjaError> {
                let c = collector(state)?;
                if let Ok(mut config) = c.config.lock() {
                    for key in kwargs.args() {
                        let v: Value = kwargs.get(key)?;
                        merge_config(&mut config, key, to_json(&v));
                    }
                }
                Ok(String::new())
            },
        );
        Ok(jinja)
    }

    /// A minijinja error as file:line:column.
    fn error(&self, e: &JinjaError, default_file: &str) -> DbtError {
        let name = e.name().unwrap_or(default_file).to_owned();
        let mut line = e.line().unwrap_or(0);
        let mut file = name.clone();
        if name == "__macros__" {
            // Map back from the combined macro template to the macro's own file.
            if let Some((start, path)) = self
                .macro_lines
                .iter()
                .rev()
                .find(|(start, _)| *start <= line)
            {
                line = line - start + 1;
                file = path.clone();
            }
        }
        let column = match (e.range(), e.template_source()) {
            (Some(r), Some(src)) => {
                let before = &src[..r.start.min(src.len())];
                let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
                if line == 1 && name != "__macros__" {
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

    /// Renders one file; returns the text (relations as placeholders) and what it recorded.
    fn render(
        &self,
        path: &'p str,
        text: &'p str,
        name: &str,
        config: BTreeMap<String, Json>,
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
        let tmpl = self
            .env
            .template_from_named_str(path, text)
            .map_err(|e| self.error(&e, path))?;
        let rendered = tmpl
            .render(Value::from(ctx))
            .map_err(|e| self.error(&e, path))?;
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

/// dbt's default `generate_schema_name`: `<target schema>_<custom schema>`, or the target
/// schema when the node sets none (a snapshot's `target_schema` wins).
fn schema_name(config: &BTreeMap<String, Json>, options: &CompileOptions) -> String {
    // A snapshot's `target_schema` is used as is.
    if let Some(schema) = config.get("target_schema").and_then(Json::as_str) {
        return schema.to_owned();
    }
    match config.get("schema").and_then(Json::as_str) {
        Some(custom) => format!("{}_{custom}", options.target_schema),
        None => options.target_schema.clone(),
    }
}

/// Parses every node: renders each once, records refs, sources and config, checks that
/// every ref and source exists and that refs have no cycle, and orders the nodes.
pub fn parse(project: &Project, options: &CompileOptions) -> Result<Manifest, DbtError> {
    let prefix = macro_prefix(&project_macros(project));
    let files: Vec<(NodeKind, &str, Option<String>, String)> = project
        .models
        .iter()
        .map(|f| (NodeKind::Model, f))
        .chain(project.snapshots.iter().map(|f| (NodeKind::Snapshot, f)))
        .chain(project.tests.iter().map(|f| (NodeKind::Test, f)))
        .map(|(kind, f)| {
            let (name, text) = match kind {
                NodeKind::Snapshot => snapshot_block(&f.text),
                _ => (None, f.text.clone()),
            };
            (kind, f.path.as_str(), name, format!("{prefix}{text}"))
        })
        .collect();
    let jinja = Jinja::new(project, options)?;
    let mut nodes: Vec<Node> = Vec::new();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    for seed in &project.seeds {
        let name = stem(&seed.path);
        let config = project.node_config(NodeKind::Seed, &seed.path, &name);
        push_node(
            &mut nodes,
            &mut by_name,
            Node {
                kind: NodeKind::Seed,
                name: name.clone(),
                path: seed.path.clone(),
                schema: schema_name(&config, options),
                config,
                refs: Vec::new(),
                sources: Vec::new(),
                relation: name,
                rendered: None,
                compiled: None,
            },
        )
        .map_err(|m| DbtError::Project {
            path: project.root.join(&seed.path),
            message: m,
        })?;
    }
    for (kind, path, block_name, source) in &files {
        let (kind, path) = (*kind, *path);
        let name = block_name.clone().unwrap_or_else(|| stem(path));
        let folder = project.node_config(kind, path, &name);
        let (mut rendered, mut recorded) = jinja.render(path, source, &name, folder.clone())?;
        let mut config = recorded.config.lock().map(|c| c.clone()).unwrap_or(folder);
        let materialized = config.get("materialized").cloned();
        let final_answer = options.incremental.contains(&name)
            && materialized.as_ref().and_then(Json::as_str) == Some("incremental");
        let answers = recorded
            .incremental_answers
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default();
        if answers.iter().any(|a| *a != final_answer) {
            // A `config(materialized=…)` after `is_incremental()` changed the answer: render
            // again knowing the final materialization (dbt's parse-then-execute gives the same).
            let mut start = project.node_config(kind, path, &name);
            if let Some(m) = materialized {
                start.insert("materialized".to_owned(), m);
            }
            (rendered, recorded) = jinja.render(path, source, &name, start)?;
            config = recorded
                .config
                .lock()
                .map(|c| c.clone())
                .unwrap_or_default();
        }
        let refs = recorded.refs.lock().map(|r| r.clone()).unwrap_or_default();
        let sources = recorded
            .sources
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        let schema = schema_name(&config, options);
        let relation = config
            .get("alias")
            .and_then(Json::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| name.clone());
        push_node(
            &mut nodes,
            &mut by_name,
            Node {
                kind,
                name,
                path: path.to_owned(),
                config,
                refs,
                sources,
                schema,
                relation,
                rendered: Some(rendered),
                compiled: None,
            },
        )
        .map_err(|m| DbtError::Project {
            path: project.root.join(path),
            message: m,
        })?;
    }

    let sources: BTreeMap<String, String> = project
        .sources
        .iter()
        .flat_map(|s| {
            s.tables
                .iter()
                .map(move |t| (format!("{}.{t}", s.name), format!("{}.{t}", s.schema)))
        })
        .collect();
    let names: Vec<String> = nodes
        .iter()
        .filter(|n| n.kind != NodeKind::Test)
        .map(|n| n.name.clone())
        .collect();
    for n in &nodes {
        for r in &n.refs {
            if !by_name.contains_key(r) || nodes[by_name[r]].kind == NodeKind::Test {
                return Err(DbtError::UnknownRef {
                    file: n.path.clone(),
                    model: n.name.clone(),
                    reference: r.clone(),
                    suggestion: did_you_mean(r, names.iter().map(String::as_str)),
                });
            }
        }
        for (s, t) in &n.sources {
            if !sources.contains_key(&format!("{s}.{t}")) {
                let known: Vec<&str> = sources.keys().map(String::as_str).collect();
                return Err(DbtError::UnknownSource {
                    file: n.path.clone(),
                    model: n.name.clone(),
                    source_name: s.clone(),
                    table: t.clone(),
                    suggestion: did_you_mean(&format!("{s}.{t}"), known),
                });
            }
        }
    }
    let order = topological(&nodes, &by_name)?;
    let nodes = order.into_iter().map(|i| nodes[i].clone()).collect();
    Ok(Manifest {
        project: project.file.name.clone(),
        nodes,
        sources,
    })
}

fn stem(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.rsplit_once('.')
        .map(|(s, _)| s)
        .unwrap_or(file)
        .to_owned()
}

fn push_node(
    nodes: &mut Vec<Node>,
    by_name: &mut HashMap<String, usize>,
    node: Node,
) -> Result<(), String> {
    if let Some(&i) = by_name.get(&node.name) {
        return Err(format!(
            "`{}` is defined twice (also by {})",
            node.name, nodes[i].path
        ));
    }
    by_name.insert(node.name.clone(), nodes.len());
    nodes.push(node);
    Ok(())
}

/// Parents before children (petgraph's topological sort); a cycle is an error naming it
/// whole (`a -> b -> a`).
fn topological(nodes: &[Node], by_name: &HashMap<String, usize>) -> Result<Vec<usize>, DbtError> {
    use petgraph::graph::{DiGraph, NodeIndex};
    let mut graph: DiGraph<usize, ()> = DiGraph::with_capacity(nodes.len(), nodes.len());
    for i in 0..nodes.len() {
        graph.add_node(i);
    }
    for (i, node) in nodes.iter().enumerate() {
        for r in &node.refs {
            if let Some(&parent) = by_name.get(r) {
                graph.add_edge(NodeIndex::new(parent), NodeIndex::new(i), ());
            }
        }
    }
    match petgraph::algo::toposort(&graph, None) {
        Ok(order) => Ok(order.into_iter().map(NodeIndex::index).collect()),
        Err(cycle) => {
            let start = cycle.node_id();
            // The shortest way from `start` back to itself: the cycle to show.
            let mut previous: HashMap<NodeIndex, NodeIndex> = HashMap::new();
            let mut queue = std::collections::VecDeque::from([start]);
            'search: while let Some(at) = queue.pop_front() {
                for next in graph.neighbors(at) {
                    if next == start {
                        previous.insert(start, at);
                        break 'search;
                    }
                    if let std::collections::hash_map::Entry::Vacant(e) = previous.entry(next) {
                        e.insert(at);
                        queue.push_back(next);
                    }
                }
            }
            let mut path = vec![nodes[start.index()].name.as_str()];
            let mut at = previous.get(&start).copied();
            while let Some(node) = at.filter(|&n| n != start) {
                path.push(nodes[node.index()].name.as_str());
                at = previous.get(&node).copied();
            }
            path.reverse();
            // Shown from its smallest name, so the same cycle always reads the same.
            if let Some(first) = (0..path.len()).min_by_key(|&i| path[i]) {
                path.rotate_left(first);
            }
            path.push(path[0]);
            Err(DbtError::Cycle(path.join(" -> ")))
        }
    }
}

/// Compiles every parsed node in memory: relation placeholders become `schema.relation`;
/// refs to `ephemeral` models become CTEs named `__dbt__cte__<name>` injected at the top of
/// the referencing node's SQL (as dbt does), transitively.
pub fn compile(manifest: &mut Manifest) {
    let relations = relations(manifest);
    for node in &mut manifest.nodes {
        if let Some(rendered) = &node.rendered {
            node.compiled = Some(substitute(rendered, &relations).trim().to_owned());
        }
    }
    let ephemeral: HashMap<String, (Vec<String>, String)> = manifest
        .nodes
        .iter()
        .filter(|n| n.kind == NodeKind::Model && n.materialized() == "ephemeral")
        .map(|n| {
            (
                n.name.clone(),
                (n.refs.clone(), n.compiled.clone().unwrap_or_default()),
            )
        })
        .collect();
    if ephemeral.is_empty() {
        return;
    }
    for node in &mut manifest.nodes {
        let mut order: Vec<&str> = Vec::new();
        fn visit<'a>(
            name: &'a str,
            ephemeral: &'a HashMap<String, (Vec<String>, String)>,
            order: &mut Vec<&'a str>,
        ) {
            if let Some((refs, _)) = ephemeral.get(name)
                && !order.contains(&name)
            {
                for r in refs {
                    visit(r, ephemeral, order);
                }
                order.push(name);
            }
        }
        for r in &node.refs {
            visit(r, &ephemeral, &mut order);
        }
        if order.is_empty() {
            continue;
        }
        let ctes: Vec<String> = order
            .iter()
            .map(|name| format!("__dbt__cte__{name} as (\n{}\n)", ephemeral[*name].1))
            .collect();
        if let Some(sql) = &mut node.compiled {
            *sql = inject_ctes(&ctes.join(",\n"), sql);
        }
    }
}

/// `with <ctes>` in front of `sql`, merged into its own `WITH` if it has one.
fn inject_ctes(ctes: &str, sql: &str) -> String {
    let trimmed = sql.trim_start();
    let starts_with_with = trimmed.len() > 4
        && trimmed[..4].eq_ignore_ascii_case("with")
        && trimmed[4..].starts_with(|c: char| c.is_whitespace());
    if starts_with_with {
        format!("with {ctes},\n{}", trimmed[4..].trim_start())
    } else {
        format!("with {ctes}\n{sql}")
    }
}

/// Every node's and source's relation name, by placeholder key.
pub(crate) fn relations(manifest: &Manifest) -> Relations {
    let mut relations: Relations = manifest
        .nodes
        .iter()
        .map(|n| {
            let relation = if n.kind == NodeKind::Model && n.materialized() == "ephemeral" {
                format!("__dbt__cte__{}", n.name)
            } else {
                format!("{}.{}", n.schema, n.relation)
            };
            (n.name.clone(), relation)
        })
        .collect();
    for (k, v) in &manifest.sources {
        relations.insert(format!("source:{k}"), v.clone());
    }
    relations
}

/// Renders a snippet (such as a generic test call) in `env` with `ctx`; `ref()` and
/// `source()` inside it resolve to `relations`.
/// Renders a snippet (a generic test's macro call) with the project's macros: its SQL with
/// relations substituted, and the nodes it `ref`ed while rendering.
pub(crate) fn render_snippet(
    env: &Environment<'_>,
    source: &str,
    mut ctx: BTreeMap<String, Value>,
    relations: &Relations,
) -> Result<Snippet, JinjaError> {
    let collector = Arc::new(Collector::default());
    ctx.insert(
        "__rainbow".to_owned(),
        Value::from_dyn_object(collector.clone()),
    );
    ctx.entry("__name".to_owned())
        .or_insert_with(|| Value::from(""));
    let rendered = env.render_str(source, Value::from(ctx))?;
    Ok(Snippet {
        sql: substitute(&rendered, relations),
        refs: collector.refs.lock().map(|r| r.clone()).unwrap_or_default(),
    })
}

/// A rendered snippet and what it read.
pub(crate) struct Snippet {
    pub(crate) sql: String,
    pub(crate) refs: Vec<String>,
}

fn write_file(path: std::path::PathBuf, text: &str) -> Result<(), DbtError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| DbtError::Io {
            path: parent.to_owned(),
            source,
        })?;
    }
    std::fs::write(&path, text).map_err(|source| DbtError::Io { path, source })
}

/// Writes `out/manifest.json` (nodes, dependencies, configs, compiled SQL).
pub fn write_manifest(manifest: &Manifest, out: &std::path::Path) -> Result<(), DbtError> {
    let json = serde_json::to_string_pretty(manifest).map_err(|e| DbtError::Project {
        path: out.join("manifest.json"),
        message: e.to_string(),
    })?;
    write_file(out.join("manifest.json"), &json)
}

/// Writes the compiled SQL of every node under `out/compiled/<project>/` and the manifest.
pub fn write_target(manifest: &Manifest, out: &std::path::Path) -> Result<(), DbtError> {
    for node in &manifest.nodes {
        if let Some(sql) = &node.compiled {
            write_file(
                out.join("compiled")
                    .join(&manifest.project)
                    .join(&node.path),
                sql,
            )?;
        }
    }
    write_manifest(manifest, out)
}

#[cfg(test)]
mod tests;
