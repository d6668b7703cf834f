//! Parsing and compiling: every model, seed, snapshot and singular test rendered with dbt's
//! Jinja context on minijinja. Parsing records `ref`/`source`/`config` calls (the DAG);
//! compiling substitutes relation names into the once-rendered SQL under `target/compiled/` and writes
//! `target/manifest.json`. Errors name file:line:column.

mod jinja;
mod python;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use minijinja::value::Value;
use minijinja::{Environment, Error as JinjaError};
use serde::Serialize;
use serde_json::Value as Json;

use rainbow_suggest::did_you_mean;

pub(crate) use jinja::macro_environment;
use jinja::snapshot_block;
use jinja::{Collector, Jinja, Relations, macro_prefix, project_macros, substitute};

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
            let text = python::python_compat(&text);
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
