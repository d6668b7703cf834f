//! Parsing and compiling: every model, seed, snapshot and singular test rendered with dbt's
//! Jinja context on minijinja. Parsing records `ref`/`source`/`config` calls (the DAG);
//! compiling substitutes relation names into the rendered SQL under `target/compiled/` and
//! writes `target/manifest.json`. A node whose rendering read `execute` is rendered again
//! when it is built ([`render_for_execution`]). Errors name file:line:column.

mod datetime;
mod execute;
mod jinja;
mod python;
pub(crate) use execute::take_execute_read;
pub use execute::{QueryFn, QueryResult};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use minijinja::value::Value;
use minijinja::{Environment, Error as JinjaError};
use serde::Serialize;
use serde_json::Value as Json;

use rainbow_suggest::did_you_mean;

pub(crate) use jinja::macro_environment;
use jinja::snapshot_block;
use jinja::{Collector, Jinja, Relations, file_prefix, macro_prefix, project_macros, substitute};

use crate::error::DbtError;
use crate::project::Project;

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
    /// Its rendering read a relation's part (`this.identifier`): parse renders it again once
    /// every node's schema and alias are known.
    #[serde(skip)]
    pub(crate) parts_read: bool,
    /// The package it comes from (`None`: the root project).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    /// Its rendering queries the warehouse (`statement`, `run_query`): it is rendered again,
    /// with `execute` true, when it is built ([`render_for_execution`]).
    #[serde(skip)]
    pub needs_execute: bool,
    /// Lines at the top of [`Node::compiled`] that are ephemeral models' CTEs, not this
    /// node's own SQL (0 without any).
    #[serde(skip)]
    pub(crate) inlined_lines: usize,
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

    /// A model `name` of SQL `sql` in `models/<name>.sql`, schema `main` (for tests).
    #[cfg(test)]
    pub(crate) fn test_model(name: &str, sql: &str) -> Node {
        Node {
            kind: NodeKind::Model,
            name: name.to_owned(),
            path: format!("models/{name}.sql"),
            config: BTreeMap::new(),
            refs: Vec::new(),
            sources: Vec::new(),
            schema: "main".to_owned(),
            relation: name.to_owned(),
            compiled: Some(sql.to_owned()),
            rendered: None,
            parts_read: false,
            package: None,
            needs_execute: false,
            inlined_lines: 0,
        }
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
    /// dbt's `execute`: false when parsing (queries are not run), true when a node that
    /// queries while rendering is rendered again to be built.
    pub execute: bool,
    /// What runs those queries (only with `execute`).
    pub query: Option<QueryFn>,
    /// Environment variables `env_var()` sees before the process's (a unit test's
    /// `overrides: {env_vars: …}`).
    pub env: BTreeMap<String, String>,
    /// dbt's `invocation_id`: the engine run's id when compiled for a run, else empty.
    pub invocation_id: String,
    /// `--full-refresh` (dbt's `flags.FULL_REFRESH`).
    pub full_refresh: bool,
    /// The target's database (BigQuery's project, `target.database`): relations then compile
    /// to `` `project.dataset.table` ``, as dbt-bigquery quotes them; `None` on the embedded
    /// warehouse (`schema.table`).
    pub database: Option<String>,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            target_name: "dev".into(),
            target_type: "datafusion".into(),
            target_schema: "main".into(),
            database: None,
            vars: BTreeMap::new(),
            run_started_at: String::new(),
            incremental: BTreeSet::new(),
            extra: BTreeMap::new(),
            execute: false,
            query: None,
            env: BTreeMap::new(),
            invocation_id: String::new(),
            full_refresh: false,
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
    /// The target's database (see [`CompileOptions::database`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

impl Manifest {
    /// A relation (`schema.table`) as compiled SQL names it: `` `database.schema.table` `` on a
    /// target with a database (BigQuery), else as is.
    pub fn relation_name(&self, relation: &str) -> String {
        match &self.database {
            Some(database) => format!("`{database}.{relation}`"),
            None => relation.to_owned(),
        }
    }
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

/// `enabled: false` (dbt leaves the node out of the project).
fn disabled(config: &BTreeMap<String, Json>) -> bool {
    matches!(config.get("enabled"), Some(Json::Bool(false)))
}

/// The project with the Jinja in its `dbt_project.yml` configs rendered (dbt renders that file
/// with `var()` over `--vars` only, `env_var()` and `target`, natively: `"False"` is a
/// boolean). `None` when there is none.
fn render_project_file(
    project: &Project,
    options: &CompileOptions,
) -> Result<Option<Project>, DbtError> {
    fn has_jinja(v: &Json) -> bool {
        match v {
            Json::String(s) => s.contains("{{") || s.contains("{%"),
            Json::Array(items) => items.iter().any(has_jinja),
            Json::Object(map) => map.values().any(has_jinja),
            _ => false,
        }
    }
    let f = &project.file;
    if ![&f.models, &f.seeds, &f.snapshots, &f.data_tests]
        .into_iter()
        .any(has_jinja)
    {
        return Ok(None);
    }
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    let vars = options.vars.clone();
    env.add_function(
        "var",
        move |name: String, default: Option<Value>| -> Result<Value, JinjaError> {
            match (vars.get(&name), default) {
                (Some(v), _) => Ok(Value::from(minijinja::value::Serde(v.clone()))),
                (None, Some(d)) => Ok(d),
                (None, None) => Err(JinjaError::new(
                    minijinja::ErrorKind::UndefinedError,
                    format!("var(`{name}`) is not given with --vars and has no default (dbt_project.yml sees only --vars)"),
                )),
            }
        },
    );
    env.add_function(
        "env_var",
        |name: String, default: Option<String>| -> Result<String, JinjaError> {
            std::env::var(&name).ok().or(default).ok_or_else(|| {
                JinjaError::new(
                    minijinja::ErrorKind::UndefinedError,
                    format!(
                        "environment variable `{name}` is not set and env_var() has no default"
                    ),
                )
            })
        },
    );
    env.add_global(
        "target",
        Value::from(minijinja::value::Serde(serde_json::json!({
            "name": options.target_name, "type": options.target_type,
            "schema": options.target_schema,
        }))),
    );
    let path = project.root.join("dbt_project.yml");
    fn render(env: &Environment<'_>, v: &mut Json, path: &std::path::Path) -> Result<(), DbtError> {
        match v {
            Json::String(s) if s.contains("{{") || s.contains("{%") => {
                let text = env.render_str(s, ()).map_err(|e| DbtError::Project {
                    path: path.to_owned(),
                    message: format!("`{s}`: {e}"),
                })?;
                let t = text.trim();
                *v = match t {
                    "True" | "true" => Json::Bool(true),
                    "False" | "false" => Json::Bool(false),
                    "None" | "none" => Json::Null,
                    _ => t
                        .parse::<i64>()
                        .map(Json::from)
                        .or_else(|_| t.parse::<f64>().map(Json::from))
                        .unwrap_or(Json::String(text)),
                };
            }
            Json::Array(items) => {
                for item in items {
                    render(env, item, path)?;
                }
            }
            Json::Object(map) => {
                for (key, item) in map.iter_mut() {
                    // Hooks are rendered when they run, with the node (`this`), as dbt does.
                    let key = key.trim_start_matches('+').replace('-', "_");
                    if key != "pre_hook" && key != "post_hook" {
                        render(env, item, path)?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
    let mut out = project.clone();
    for section in [
        &mut out.file.models,
        &mut out.file.seeds,
        &mut out.file.snapshots,
        &mut out.file.data_tests,
    ] {
        render(&env, section, &path)?;
    }
    Ok(Some(out))
}

/// A node's schema and relation name: the project's own `generate_schema_name` /
/// `generate_alias_name` macros when it defines them (called as dbt does, with the custom
/// value or none and the node: `resource_type`, `name`, `path`, `original_file_path`,
/// `package_name`, `fqn`, `config`; their output trimmed), else dbt's defaults.
fn schema_and_alias(
    jinja: &Jinja<'_>,
    project: &Project,
    kind: NodeKind,
    name: &str,
    path: &str,
    config: &BTreeMap<String, Json>,
    options: &CompileOptions,
) -> Result<(String, String), DbtError> {
    let resource_type = match kind {
        NodeKind::Model => "model",
        NodeKind::Seed => "seed",
        NodeKind::Snapshot => "snapshot",
        NodeKind::Test => "test",
    };
    let node = || {
        serde_json::json!({
            "resource_type": resource_type, "name": name, "path": path,
            "original_file_path": path, "package_name": project.file.name,
            "unique_id": format!("{resource_type}.{}.{name}", project.file.name),
            "fqn": [project.file.name.clone(), name.to_owned()], "config": config,
        })
    };
    let call = |macro_name: &str, custom: Option<&str>| -> Result<Option<String>, DbtError> {
        if !jinja.defines(macro_name) {
            return Ok(None);
        }
        jinja
            .call_project_macro(path, macro_name, custom, node())
            .map(|s| Some(s.trim().to_owned()))
    };
    // A snapshot's `target_schema` is used as is (dbt's legacy snapshot config).
    let schema = match config.get("target_schema").and_then(Json::as_str) {
        Some(schema) => schema.to_owned(),
        None => {
            let custom = config.get("schema").and_then(Json::as_str);
            match call("generate_schema_name", custom)? {
                Some(s) => s,
                None => schema_name(config, options),
            }
        }
    };
    let custom_alias = config.get("alias").and_then(Json::as_str);
    let alias = match call("generate_alias_name", custom_alias)? {
        Some(a) => a,
        None => custom_alias.unwrap_or(name).to_owned(),
    };
    Ok((schema, alias))
}

/// A node file as the template rendered: a snapshot's block name and body, Python's
/// semantics rewritten in, the macro imports prefixed (on its first line).
fn template_of(kind: NodeKind, text: &str, prefix: &str) -> (Option<String>, String) {
    let (name, text) = match kind {
        NodeKind::Snapshot => snapshot_block(text),
        _ => (None, text.to_owned()),
    };
    (name, format!("{prefix}{}", python::python_compat(&text)))
}

/// Renders `node`'s file again with `options`: the text with relation placeholders. Errors:
/// the file is gone, the Jinja fails, or a ref appears that parsing did not see (the run's
/// order was fixed then).
fn render_node(
    project: &Project,
    node: &Node,
    options: &CompileOptions,
) -> Result<String, DbtError> {
    let files = match node.kind {
        NodeKind::Model => &project.models,
        NodeKind::Snapshot => &project.snapshots,
        NodeKind::Test => &project.tests,
        NodeKind::Seed => return Ok(String::new()),
    };
    let file = files
        .iter()
        .find(|f| f.path == node.path)
        .ok_or_else(|| DbtError::Project {
            path: project.root.join(&node.path),
            message: "the file is no longer in the project".into(),
        })?;
    let (_, source) = template_of(node.kind, &file.text, &file_prefix(project, &node.path));
    let jinja = Jinja::new(project, options)?;
    // Knowing the final materialization, as parse's second render does (`is_incremental()`
    // before a `config(materialized=…)`).
    let mut start = project.node_config(node.kind, &node.path, &node.name);
    if let Some(m) = node.config.get("materialized") {
        start.insert("materialized".to_owned(), m.clone());
    }
    let (rendered, recorded) = jinja.render(&node.path, &source, &node.name, start)?;
    let refs = recorded.refs.lock().map(|r| r.clone()).unwrap_or_default();
    if let Some(new) = refs.iter().find(|r| !node.refs.contains(r)) {
        return Err(DbtError::Project {
            path: project.root.join(&node.path),
            message: format!(
                "ref('{new}') appears only when rendered again (with `execute` or a unit test's overrides): refs must not depend on them"
            ),
        });
    }
    Ok(rendered)
}

/// Renders `node` again with `options` (`execute` true and a query function): for a node whose
/// rendering queries the warehouse, just before it is built. Returns its compiled SQL
/// (relations substituted, ephemeral models inlined).
pub fn render_for_execution(
    project: &Project,
    manifest: &Manifest,
    node: &Node,
    options: &CompileOptions,
) -> Result<String, DbtError> {
    if node.kind == NodeKind::Seed {
        return Ok(node.compiled.clone().unwrap_or_default());
    }
    // Queries name relations through ref()/source() too: substituted before they run.
    let mut options = options.clone();
    if let Some(query) = options.query.take() {
        let names = relations(manifest);
        options.query = Some(QueryFn(Arc::new(move |sql: &str| {
            (query.0)(&substitute(sql, &names))
        })));
    }
    let _known = jinja::KnownRelations::set(Arc::new(relations(manifest)));
    let rendered = render_node(project, node, &options)?;
    // The ephemeral models `node` inlines, transitively: those that read `execute` are
    // rendered again inside it (their parents are `node`'s, so they are built by now).
    let names = relations(manifest);
    let mut ephemeral = Ephemerals::new();
    let mut pending: Vec<&str> = node.refs.iter().map(String::as_str).collect();
    while let Some(name) = pending.pop() {
        let Some(n) = manifest.nodes.iter().find(|n| {
            n.name == name && n.kind == NodeKind::Model && n.materialized() == "ephemeral"
        }) else {
            continue;
        };
        if ephemeral.contains_key(name) {
            continue;
        }
        let text = match n.needs_execute {
            true => render_node(project, n, &options)?,
            false => n.rendered.clone().unwrap_or_default(),
        };
        let sql = substitute(&text, &names).trim().to_owned();
        ephemeral.insert(name.to_owned(), (n.refs.clone(), sql));
        pending.extend(n.refs.iter().map(String::as_str));
    }
    let sql = substitute(&rendered, &names).trim().to_owned();
    Ok(with_ephemerals(&sql, &node.refs, &ephemeral).0)
}

/// `node`'s SQL with the relations of `replace` (placeholder key -> name) instead of the
/// manifest's — a unit test's fixtures — rendered again with `options` when given (a unit
/// test's overrides), else as parsed.
pub(crate) fn render_with_relations(
    project: &Project,
    manifest: &Manifest,
    node: &Node,
    options: Option<&CompileOptions>,
    replace: &HashMap<String, String>,
) -> Result<String, DbtError> {
    let rendered = match options {
        Some(options) => {
            let _known = jinja::KnownRelations::set(Arc::new(relations(manifest)));
            render_node(project, node, options)?
        }
        None => node.rendered.clone().unwrap_or_default(),
    };
    let mut relations = relations(manifest);
    relations.extend(replace.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(substitute(&rendered, &relations).trim().to_owned())
}

/// `with <ctes>` in front of `sql`, merged into its own `WITH` if it has one.
pub(crate) fn with_ctes(ctes: &str, sql: &str) -> String {
    inject_ctes(ctes, sql)
}

/// Parses every node: renders each once, records refs, sources and config, checks that
/// every ref and source exists and that refs have no cycle, and orders the nodes.
pub fn parse(project: &Project, options: &CompileOptions) -> Result<Manifest, DbtError> {
    let rendered_project;
    let project = match render_project_file(project, options)? {
        Some(p) => {
            rendered_project = p;
            &rendered_project
        }
        None => project,
    };
    for (key, hooks) in [
        ("on-run-start", &project.file.on_run_start),
        ("on-run-end", &project.file.on_run_end),
    ] {
        let empty = match hooks {
            Json::Null => true,
            Json::Array(items) => items.is_empty(),
            Json::String(s) => s.trim().is_empty(),
            _ => false,
        };
        if !empty {
            return Err(DbtError::Project {
                path: project.root.join("dbt_project.yml"),
                message: format!(
                    "`{key}` hooks are not supported yet (they would not run); remove them or run that SQL as a model or an operation of your own"
                ),
            });
        }
    }
    let root_prefix = macro_prefix(&project_macros(project));
    let prefix_of = |path: &str| match project.package_of(path) {
        Some(_) => file_prefix(project, path),
        None => root_prefix.clone(),
    };
    let files: Vec<(NodeKind, &str, Option<String>, String)> = project
        .models
        .iter()
        .map(|f| (NodeKind::Model, f))
        .chain(project.snapshots.iter().map(|f| (NodeKind::Snapshot, f)))
        .chain(project.tests.iter().map(|f| (NodeKind::Test, f)))
        .map(|(kind, f)| {
            let (name, text) = template_of(kind, &f.text, &prefix_of(&f.path));
            (kind, f.path.as_str(), name, text)
        })
        .collect();
    let jinja = Jinja::new(project, options)?;
    let mut nodes: Vec<Node> = Vec::new();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    for seed in &project.seeds {
        let name = stem(&seed.path);
        let config = project.node_config(NodeKind::Seed, &seed.path, &name);
        if disabled(&config) {
            continue;
        }
        let (schema, relation) = schema_and_alias(
            &jinja,
            project,
            NodeKind::Seed,
            &name,
            &seed.path,
            &config,
            options,
        )?;
        push_node(
            &mut nodes,
            &mut by_name,
            Node {
                kind: NodeKind::Seed,
                name: name.clone(),
                path: seed.path.clone(),
                schema,
                config,
                refs: Vec::new(),
                sources: Vec::new(),
                relation,
                rendered: None,
                compiled: None,
                needs_execute: false,
                inlined_lines: 0,
                parts_read: false,
                package: project.package_of(&seed.path).map(|p| p.file.name.clone()),
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
        if disabled(&folder) {
            continue;
        }
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
        let needs_execute = recorded.executes.lock().map(|e| *e).unwrap_or(false);
        let sources = recorded
            .sources
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        if disabled(&config) {
            continue;
        }
        // Hooks are Jinja too, rendered with the node's context (`this`); their relations are
        // substituted by `compile` like the node's SQL.
        for key in ["pre_hook", "post_hook"] {
            let Some(Json::Array(hooks)) = config.get(key).cloned() else {
                continue;
            };
            let mut rendered_hooks = Vec::new();
            for hook in hooks {
                let text = match &hook {
                    Json::String(s) => s.clone(),
                    Json::Object(o) => o.get("sql").and_then(Json::as_str).unwrap_or("").to_owned(),
                    _ => String::new(),
                };
                let (text, _) = jinja.render(
                    path,
                    &format!("{}{}", prefix_of(path), python::python_compat(&text)),
                    &name,
                    config.clone(),
                )?;
                rendered_hooks.push(Json::String(text));
            }
            config.insert(key.to_owned(), Json::Array(rendered_hooks));
        }
        let (schema, relation) =
            schema_and_alias(&jinja, project, kind, &name, path, &config, options)?;
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
                needs_execute,
                inlined_lines: 0,
                parts_read: recorded.parts_read.lock().map(|p| *p).unwrap_or(false),
                package: project.package_of(path).map(|p| p.file.name.clone()),
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
            s.tables.iter().map(move |t| {
                let identifier = s.identifiers.get(t).unwrap_or(t);
                (
                    format!("{}.{t}", s.name),
                    format!("{}.{identifier}", s.schema),
                )
            })
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
    let mut nodes: Vec<Node> = order.into_iter().map(|i| nodes[i].clone()).collect();
    // A node inlining an ephemeral model that renders differently when executing (it read
    // `execute`) is rendered again when built too, with that model rendered again inside it.
    let mut executing_ephemerals: BTreeSet<String> = BTreeSet::new();
    for n in &mut nodes {
        if n.refs.iter().any(|r| executing_ephemerals.contains(r)) {
            n.needs_execute = true;
        }
        if n.kind == NodeKind::Model && n.materialized() == "ephemeral" && n.needs_execute {
            executing_ephemerals.insert(n.name.clone());
        }
    }
    let mut manifest = Manifest {
        project: project.file.name.clone(),
        database: options.database.clone(),
        nodes,
        sources,
    };
    // Files that read a relation's part (`this.identifier == 'x'`) while names were
    // placeholders are rendered again, now that every schema and alias is known: the part is
    // then the name itself, as dbt's is.
    if manifest.nodes.iter().any(|n| n.parts_read) {
        let known = Arc::new(relations(&manifest));
        let _known = jinja::KnownRelations::set(known);
        for i in 0..manifest.nodes.len() {
            if !manifest.nodes[i].parts_read {
                continue;
            }
            let node = &manifest.nodes[i];
            let Some((_, _, _, source)) = files.iter().find(|(_, path, _, _)| *path == node.path)
            else {
                continue;
            };
            let mut start = project.node_config(node.kind, &node.path, &node.name);
            if let Some(m) = node.config.get("materialized") {
                start.insert("materialized".to_owned(), m.clone());
            }
            let (rendered, _) = jinja.render(&node.path, source, &node.name, start)?;
            manifest.nodes[i].rendered = Some(rendered);
        }
    }
    Ok(manifest)
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
        for key in ["pre_hook", "post_hook"] {
            if let Some(Json::Array(hooks)) = node.config.get_mut(key) {
                for hook in hooks {
                    if let Json::String(s) = hook {
                        *s = substitute(s, &relations).trim().to_owned();
                    }
                }
            }
        }
    }
    let ephemeral: Ephemerals = manifest
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
        if let Some(sql) = &mut node.compiled {
            let (inlined, lines) = with_ephemerals(sql, &node.refs, &ephemeral);
            *sql = inlined;
            node.inlined_lines = lines;
        }
    }
}

/// An ephemeral model's refs and SQL, by name.
type Ephemerals = HashMap<String, (Vec<String>, String)>;

/// `sql` with the ephemeral models among `refs` (transitively) inlined as
/// `__dbt__cte__<name>` CTEs, dependencies first, as dbt does; and how many lines at its top
/// the CTEs take (`sql` itself starts on the next).
fn with_ephemerals(sql: &str, refs: &[String], ephemeral: &Ephemerals) -> (String, usize) {
    fn visit<'a>(name: &'a str, ephemeral: &'a Ephemerals, order: &mut Vec<&'a str>) {
        if let Some((refs, _)) = ephemeral.get(name)
            && !order.contains(&name)
        {
            for r in refs {
                visit(r, ephemeral, order);
            }
            order.push(name);
        }
    }
    let mut order: Vec<&str> = Vec::new();
    for r in refs {
        visit(r, ephemeral, &mut order);
    }
    if order.is_empty() {
        return (sql.to_owned(), 0);
    }
    let ctes: Vec<String> = order
        .iter()
        .map(|name| format!("__dbt__cte__{name} as (\n{}\n)", ephemeral[*name].1))
        .collect();
    let ctes = ctes.join(",\n");
    // `with <ctes>` (`,` merged into sql's own WITH): sql starts on the line after.
    let lines = ctes.split('\n').count();
    (inject_ctes(&ctes, sql), lines)
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
    if let Some(database) = &manifest.database {
        relations.insert(jinja::DATABASE_KEY.to_owned(), database.clone());
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
        config: collector
            .config
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default(),
    })
}

/// A rendered snippet, what it read and the config it set (`{{ config(fail_calc=…) }}`).
pub(crate) struct Snippet {
    pub(crate) sql: String,
    pub(crate) refs: Vec<String>,
    pub(crate) config: BTreeMap<String, Json>,
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
///
/// A node whose rendering read `execute` is written as parse rendered it, under a comment
/// saying so: its SQL is rendered again, with the warehouse, when it is built.
pub fn write_target(manifest: &Manifest, out: &std::path::Path) -> Result<(), DbtError> {
    for node in &manifest.nodes {
        if let Some(sql) = &node.compiled {
            let text = if node.needs_execute {
                format!(
                    "-- Rendered with execute = false (as parsed): this node queries the warehouse while\n-- rendering, so the SQL it runs is rendered again when it is built.\n{sql}"
                )
            } else {
                sql.clone()
            };
            write_file(
                out.join("compiled")
                    .join(&manifest.project)
                    .join(&node.path),
                &text,
            )?;
        }
    }
    write_manifest(manifest, out)
}

#[cfg(test)]
mod tests;
