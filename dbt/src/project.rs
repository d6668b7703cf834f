//! Loading a dbt project: `dbt_project.yml`, the files under its paths, folder-level configs
//! (`models: {project: {+materialized: …, folder: {+schema: …}}}`) and schema files (sources,
//! model descriptions, column tests under `tests:` or `data_tests:`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::compile::NodeKind;
use crate::error::DbtError;

/// `dbt_project.yml`.
#[derive(Debug, Clone, Deserialize)]
pub struct ProjectFile {
    /// Project name.
    pub name: String,
    /// Profile (warehouse connection) name.
    #[serde(default)]
    pub profile: Option<String>,
    /// Where models live.
    #[serde(default = "models_dir", rename = "model-paths")]
    pub model_paths: Vec<String>,
    /// Where seeds live.
    #[serde(default = "seeds_dir", rename = "seed-paths")]
    pub seed_paths: Vec<String>,
    /// Where singular tests live.
    #[serde(default = "tests_dir", rename = "test-paths")]
    pub test_paths: Vec<String>,
    /// Where macros live.
    #[serde(default = "macros_dir", rename = "macro-paths")]
    pub macro_paths: Vec<String>,
    /// Where snapshots live.
    #[serde(default = "snapshots_dir", rename = "snapshot-paths")]
    pub snapshot_paths: Vec<String>,
    /// Project variables (`var()` defaults).
    #[serde(default)]
    pub vars: BTreeMap<String, Value>,
    /// Folder-level model configs.
    #[serde(default)]
    pub models: Value,
    /// Folder-level seed configs.
    #[serde(default)]
    pub seeds: Value,
    /// Folder-level snapshot configs.
    #[serde(default)]
    pub snapshots: Value,
    /// Folder-level test configs (`data_tests:`, or the older `tests:`).
    #[serde(default, alias = "tests")]
    pub data_tests: Value,
    /// Where `rainbow deps` installs packages (default `dbt_packages`).
    #[serde(default = "packages_dir", rename = "packages-install-path")]
    pub packages_install_path: String,
    /// `on-run-start` hooks (refused by parse: not run yet).
    #[serde(default, rename = "on-run-start")]
    pub on_run_start: Value,
    /// `on-run-end` hooks (refused by parse: not run yet).
    #[serde(default, rename = "on-run-end")]
    pub on_run_end: Value,
    /// `dispatch:` — per macro namespace, the packages searched in order
    /// (`[{macro_namespace: dbt_utils, search_order: [my_project, dbt_utils]}]`).
    #[serde(default)]
    pub dispatch: Vec<DispatchConfig>,
}

/// One `dispatch:` entry of `dbt_project.yml`.
#[derive(Debug, Clone, Deserialize)]
pub struct DispatchConfig {
    /// The namespace whose `adapter.dispatch(…, macro_namespace)` calls it orders.
    pub macro_namespace: String,
    /// The packages searched, in order.
    pub search_order: Vec<String>,
}

fn packages_dir() -> String {
    "dbt_packages".into()
}

fn models_dir() -> Vec<String> {
    vec!["models".into()]
}
fn seeds_dir() -> Vec<String> {
    vec!["seeds".into()]
}
fn tests_dir() -> Vec<String> {
    vec!["tests".into()]
}
fn macros_dir() -> Vec<String> {
    vec!["macros".into()]
}
fn snapshots_dir() -> Vec<String> {
    vec!["snapshots".into()]
}

/// One file of the project, with its path relative to the project root.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path relative to the project root, `/`-separated.
    pub path: String,
    /// Contents.
    pub text: String,
}

/// A declared source (`sources:` in a schema file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceDecl {
    /// Source name.
    pub name: String,
    /// Schema (dataset) holding its tables; defaults to the source name.
    pub schema: String,
    /// Table names.
    pub tables: Vec<String>,
    /// A table's relation when it differs from its name (`identifier:`), by name.
    pub identifiers: BTreeMap<String, String>,
}

/// A generic test on a model column, from a schema file.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnTest {
    /// The model tested.
    pub model: String,
    /// The column (none for model-level tests).
    pub column: Option<String>,
    /// Test name: `unique`, `not_null`, `accepted_values`, `relationships`, or a custom one.
    pub name: String,
    /// Its arguments (`values`, `to`, `field`, `severity`, `where`, …).
    pub args: BTreeMap<String, Value>,
    /// The schema file declaring it.
    pub file: PathBuf,
    /// The package whose schema file declares it (its unqualified custom tests are that
    /// package's); `None` for the root project.
    pub package: Option<String>,
}

/// A loaded project.
#[derive(Debug, Clone)]
pub struct Project {
    /// Root directory.
    pub root: PathBuf,
    /// `dbt_project.yml`.
    pub file: ProjectFile,
    /// Model files (`*.sql` under the model paths).
    pub models: Vec<SourceFile>,
    /// Seed files (`*.csv`).
    pub seeds: Vec<SourceFile>,
    /// Macro files.
    pub macros: Vec<SourceFile>,
    /// Singular tests.
    pub tests: Vec<SourceFile>,
    /// Snapshot files.
    pub snapshots: Vec<SourceFile>,
    /// Sources declared in schema files.
    pub sources: Vec<SourceDecl>,
    /// Descriptions of models from schema files.
    pub descriptions: BTreeMap<String, String>,
    /// Generic tests from schema files.
    pub column_tests: Vec<ColumnTest>,
    /// `config:` of model, seed and snapshot entries in schema files, by node name.
    pub property_configs: BTreeMap<String, BTreeMap<String, Value>>,
    /// Installed packages (`<packages-install-path>/<name>/`), each loaded as a project of
    /// its own: macros, generic tests and variables (see [`Project::load`]).
    pub packages: Vec<Project>,
    /// `unit_tests:` of schema files.
    pub unit_tests: Vec<UnitTestDecl>,
    /// The columns schema files declare per node (name, `data_type`): a model contract's.
    pub declared_columns: BTreeMap<String, Vec<(String, Option<String>)>>,
    /// For a package, its directory relative to the root project (`dbt_packages/dbt_utils`):
    /// its files appear in the root project's lists under this prefix. Empty for the root.
    pub install_prefix: String,
}

/// A unit test's rows: `format: dict` (a list of mappings), `csv` (text with a header) or
/// `sql` (a query giving them).
#[derive(Debug, Clone, PartialEq)]
pub enum Fixture {
    /// Rows as column -> value (dict, and csv parsed to text values).
    Rows(Vec<serde_json::Map<String, Value>>),
    /// A query.
    Sql(String),
}

/// Reads one `unit_tests:` entry.
fn unit_test(file: &Path, u: &Value) -> Result<UnitTestDecl, String> {
    let name = u["name"]
        .as_str()
        .ok_or("a unit test has no `name`")?
        .to_owned();
    let model = u["model"]
        .as_str()
        .ok_or_else(|| format!("unit test `{name}` has no `model`"))?
        .to_owned();
    let fixture = |v: &Value, what: &str| -> Result<Fixture, String> {
        let format = v["format"].as_str().unwrap_or("dict");
        if v.get("fixture").is_some() {
            return Err(format!(
                "unit test `{name}`: {what}: `fixture:` files are not supported yet; give `rows:`"
            ));
        }
        match (format, &v["rows"]) {
            ("dict", Value::Array(rows)) => rows
                .iter()
                .map(|r| {
                    r.as_object().cloned().ok_or_else(|| {
                        format!("unit test `{name}`: {what}: a row is not a mapping: {r}")
                    })
                })
                .collect::<Result<_, _>>()
                .map(Fixture::Rows),
            ("dict", Value::Null) => Ok(Fixture::Rows(Vec::new())),
            ("csv", Value::String(text)) => {
                let mut reader = text.lines().filter(|l| !l.trim().is_empty());
                let header: Vec<String> = reader
                    .next()
                    .map(|h| h.split(',').map(|c| c.trim().to_owned()).collect())
                    .unwrap_or_default();
                Ok(Fixture::Rows(
                    reader
                        .map(|line| {
                            header
                                .iter()
                                .cloned()
                                .zip(line.split(',').map(|v| match v.trim() {
                                    "" | "null" | "NULL" => Value::Null,
                                    t => Value::String(t.to_owned()),
                                }))
                                .collect()
                        })
                        .collect(),
                ))
            }
            ("sql", Value::String(sql)) => Ok(Fixture::Sql(sql.clone())),
            (format, rows) => Err(format!(
                "unit test `{name}`: {what}: `format: {format}` with rows {rows} (dict takes a list of mappings, csv and sql a text)"
            )),
        }
    };
    let given = u["given"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| {
            let input = g["input"]
                .as_str()
                .ok_or_else(|| format!("unit test `{name}`: a `given` has no `input`"))?;
            Ok((input.trim().to_owned(), fixture(g, input)?))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(UnitTestDecl {
        expect: fixture(&u["expect"], "expect")?,
        name,
        model,
        given,
        overrides: u.get("overrides").cloned().unwrap_or(Value::Null),
        file: file.to_owned(),
    })
}

/// A dbt unit test (`unit_tests:` in a schema file): the model's SQL run on `given` rows
/// must return the `expect` rows. Source: docs.getdbt.com/docs/build/unit-tests.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitTestDecl {
    /// Its name.
    pub name: String,
    /// The model tested.
    pub model: String,
    /// The inputs: `ref('x')` / `source('s', 't')` text and their rows.
    pub given: Vec<(String, Fixture)>,
    /// The expected rows (only their columns are compared).
    pub expect: Fixture,
    /// `overrides: {vars: {…}, macros: {…}}`.
    pub overrides: Value,
    /// The schema file declaring it.
    pub file: PathBuf,
}

fn read(path: &Path) -> Result<String, DbtError> {
    std::fs::read_to_string(path).map_err(|source| DbtError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Parses YAML into JSON values, with the error's line and column.
pub(crate) fn parse_yaml<T: serde::de::DeserializeOwned>(
    text: &str,
    path: &Path,
) -> Result<T, DbtError> {
    serde_norway::from_str(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        DbtError::Yaml {
            path: path.to_owned(),
            line,
            column,
            message: e.to_string(),
        }
    })
}

/// Files under `root/dir` ending in `ext`, sorted, with paths relative to `root`.
fn collect(root: &Path, dirs: &[String], ext: &str) -> Result<Vec<SourceFile>, DbtError> {
    let mut out = Vec::new();
    for dir in dirs {
        let mut stack = vec![root.join(dir)];
        while let Some(d) = stack.pop() {
            if !d.is_dir() {
                continue;
            }
            let entries = std::fs::read_dir(&d).map_err(|source| DbtError::Io {
                path: d.clone(),
                source,
            })?;
            for entry in entries {
                let entry = entry.map_err(|source| DbtError::Io {
                    path: d.clone(),
                    source,
                })?;
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().and_then(|e| e.to_str()) == Some(ext) {
                    let rel = path
                        .strip_prefix(root)
                        .unwrap_or(&path)
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join("/");
                    out.push(SourceFile {
                        path: rel,
                        text: read(&path)?,
                    });
                }
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The packages installed for the project at `root`: every directory of its
/// `packages-install-path` holding a `dbt_project.yml`, loaded (macros, generic tests, vars;
/// their own packages are the root's, as dbt installs them flat). Errors: a package named in
/// `packages.yml`/`dependencies.yml` that is not installed, a package with models, seeds or
/// snapshots (not supported yet), an unreadable package.
fn load_packages(root: &Path, file: &ProjectFile) -> Result<Vec<Project>, DbtError> {
    let dir = root.join(&file.packages_install_path);
    let mut out = Vec::new();
    if dir.is_dir() {
        let entries = std::fs::read_dir(&dir).map_err(|source| DbtError::Io {
            path: dir.clone(),
            source,
        })?;
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("dbt_project.yml").is_file())
            .collect();
        dirs.sort();
        for package_root in dirs {
            let mut package = Project::load_one(&package_root)?;
            package.install_prefix = package_root
                .strip_prefix(root)
                .unwrap_or(&package_root)
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            out.push(package);
        }
    }
    for spec in ["packages.yml", "dependencies.yml"] {
        let path = root.join(spec);
        if !path.is_file() {
            continue;
        }
        let doc: Value = parse_yaml(&read(&path)?, &path)?;
        if let Some(unknown) = doc
            .as_object()
            .into_iter()
            .flat_map(|o| o.keys())
            .find(|k| !["packages", "projects"].contains(&k.as_str()))
        {
            return Err(DbtError::Project {
                path,
                message: format!("unknown key `{unknown}` (expected `packages:`)"),
            });
        }
        for p in doc["packages"].as_array().into_iter().flatten() {
            // A hub package's installed name is its last part (dbt-labs/dbt_utils → dbt_utils);
            // git and local packages are named by their own dbt_project.yml.
            let Some(hub) = p.get("package").and_then(Value::as_str) else {
                continue;
            };
            let name = hub.rsplit('/').next().unwrap_or(hub);
            if !out.iter().any(|pkg| pkg.file.name == name) {
                return Err(DbtError::Project {
                    path,
                    message: format!(
                        "package `{hub}` is not installed in {}/: run `rainbow deps`",
                        file.packages_install_path
                    ),
                });
            }
        }
    }
    Ok(out)
}

impl Project {
    /// Loads the project in `root` with its installed packages (`Project::packages`): each
    /// package is a project of its own (macros, vars, configs), and its models, seeds,
    /// snapshots, tests, sources and unit tests join the root project's lists, their paths
    /// under the package's `install_prefix` (dbt builds package nodes with the project's).
    pub fn load(root: &Path) -> Result<Self, DbtError> {
        let mut project = Self::load_one(root)?;
        project.packages = load_packages(root, &project.file)?;
        for package in &project.packages {
            let prefixed = |files: &[SourceFile]| -> Vec<SourceFile> {
                files
                    .iter()
                    .map(|f| SourceFile {
                        path: format!("{}/{}", package.install_prefix, f.path),
                        text: f.text.clone(),
                    })
                    .collect()
            };
            project.models.extend(prefixed(&package.models));
            project.seeds.extend(prefixed(&package.seeds));
            project.snapshots.extend(prefixed(&package.snapshots));
            project.tests.extend(prefixed(&package.tests));
            project.sources.extend(package.sources.iter().cloned());
            project.descriptions.extend(
                package
                    .descriptions
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
            for (name, config) in &package.property_configs {
                project
                    .property_configs
                    .entry(name.clone())
                    .or_insert_with(|| config.clone());
            }
            project
                .column_tests
                .extend(package.column_tests.iter().map(|t| ColumnTest {
                    package: Some(package.file.name.clone()),
                    ..t.clone()
                }));
            project
                .unit_tests
                .extend(package.unit_tests.iter().cloned());
        }
        Ok(project)
    }

    /// The package a project path (`dbt_packages/<package>/models/x.sql`) belongs to, if any.
    pub fn package_of(&self, path: &str) -> Option<&Project> {
        self.packages.iter().find(|p| {
            path.strip_prefix(&p.install_prefix)
                .is_some_and(|rest| rest.starts_with('/'))
        })
    }

    /// Loads one project directory (no packages).
    fn load_one(root: &Path) -> Result<Self, DbtError> {
        let project_path = root.join("dbt_project.yml");
        if !project_path.exists() {
            return Err(DbtError::Project {
                path: project_path,
                message: "no dbt_project.yml: is this a dbt project directory? (--project-dir)"
                    .into(),
            });
        }
        let file: ProjectFile = parse_yaml(&read(&project_path)?, &project_path)?;
        let models = collect(root, &file.model_paths, "sql")?;
        // Generic test definitions (`{% test name(model, column_name) %}`) live in macro paths
        // or in `<test-path>/generic/`; the other files under test paths are singular tests.
        let (generic, singular): (Vec<SourceFile>, Vec<SourceFile>) =
            collect(root, &file.test_paths, "sql")?
                .into_iter()
                .partition(|f| f.path.split('/').nth(1) == Some("generic"));
        let mut macros = collect(root, &file.macro_paths, "sql")?;
        macros.extend(generic);
        let mut project = Project {
            root: root.to_owned(),
            seeds: collect(root, &file.seed_paths, "csv")?,
            macros,
            tests: singular,
            snapshots: collect(root, &file.snapshot_paths, "sql")?,
            models,
            file,
            sources: Vec::new(),
            descriptions: BTreeMap::new(),
            column_tests: Vec::new(),
            property_configs: BTreeMap::new(),
            packages: Vec::new(),
            unit_tests: Vec::new(),
            declared_columns: BTreeMap::new(),
            install_prefix: String::new(),
        };
        let mut schema_files = Vec::new();
        // Property files may sit under any resource path (dbt reads tests/ and macros/ too).
        for paths in [
            &project.file.model_paths,
            &project.file.seed_paths,
            &project.file.snapshot_paths,
            &project.file.test_paths,
        ] {
            schema_files.extend(collect(root, paths, "yml")?);
            schema_files.extend(collect(root, paths, "yaml")?);
        }
        for f in &schema_files {
            project.read_schema_file(f)?;
        }
        Ok(project)
    }

    fn read_schema_file(&mut self, f: &SourceFile) -> Result<(), DbtError> {
        let path = self.root.join(&f.path);
        let doc: Value = parse_yaml(&f.text, &path)?;
        let bad = |message: String| DbtError::Project {
            path: path.clone(),
            message,
        };
        for source in doc["sources"].as_array().into_iter().flatten() {
            let name = source["name"]
                .as_str()
                .ok_or_else(|| bad("a source has no `name`".into()))?
                .to_owned();
            let tables = source["tables"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    t["name"]
                        .as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| bad(format!("a table of source `{name}` has no `name`")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            // Tests on a source table and its columns: checks on the source.
            for t in source["tables"].as_array().into_iter().flatten() {
                let Some(table) = t["name"].as_str() else {
                    continue;
                };
                let model = format!("source:{name}.{table}");
                let table_tests = t.get("data_tests").or_else(|| t.get("tests"));
                for test in table_tests.and_then(Value::as_array).into_iter().flatten() {
                    self.column_tests
                        .push(column_test(&path, &model, None, test).map_err(&bad)?);
                }
                for column in t["columns"].as_array().into_iter().flatten() {
                    let Some(col) = column["name"].as_str() else {
                        continue;
                    };
                    let tests = column.get("data_tests").or_else(|| column.get("tests"));
                    for test in tests.and_then(Value::as_array).into_iter().flatten() {
                        self.column_tests
                            .push(column_test(&path, &model, Some(col), test).map_err(&bad)?);
                    }
                }
            }
            let schema = source["schema"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| name.clone());
            // A table's `identifier:` is the relation it reads (its `name` is only how
            // `source()` calls it).
            let identifiers = source["tables"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| {
                    Some((
                        t["name"].as_str()?.to_owned(),
                        t["identifier"].as_str()?.to_owned(),
                    ))
                })
                .collect();
            self.sources.push(SourceDecl {
                name,
                schema,
                tables,
                identifiers,
            });
        }
        // dbt 1.9's YAML snapshots (`snapshots: [{name, relation, config}]`): a snapshot of
        // `select * from <relation>`, its config from the entry (read below).
        for snap in doc["snapshots"].as_array().into_iter().flatten() {
            let Some(relation) = snap.get("relation").and_then(Value::as_str) else {
                continue;
            };
            let name = snap["name"]
                .as_str()
                .ok_or_else(|| bad("a snapshot entry has no `name`".into()))?;
            let dir = f.path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
            self.snapshots.push(SourceFile {
                path: format!("{dir}/{name}.sql").trim_start_matches('/').to_owned(),
                text: format!(
                    "{{% snapshot {name} %}}\nselect * from {{{{ {relation} }}}}\n{{% endsnapshot %}}\n"
                ),
            });
        }
        for u in doc["unit_tests"].as_array().into_iter().flatten() {
            self.unit_tests.push(unit_test(&path, u).map_err(&bad)?);
        }
        let entries = ["models", "seeds", "snapshots"]
            .into_iter()
            .flat_map(|section| doc[section].as_array().into_iter().flatten());
        for model in entries {
            let name = model["name"]
                .as_str()
                .ok_or_else(|| bad("a model entry has no `name`".into()))?
                .to_owned();
            if let Some(config) = model.get("config").and_then(Value::as_object) {
                let target = self.property_configs.entry(name.clone()).or_default();
                for (k, v) in config {
                    merge_config(target, k, v.clone());
                }
            }
            if let Some(d) = model["description"].as_str() {
                self.descriptions.insert(name.clone(), d.to_owned());
            }
            let model_tests = model.get("data_tests").or_else(|| model.get("tests"));
            for t in model_tests.and_then(Value::as_array).into_iter().flatten() {
                self.column_tests
                    .push(column_test(&path, &name, None, t).map_err(&bad)?);
            }
            for column in model["columns"].as_array().into_iter().flatten() {
                let col = column["name"]
                    .as_str()
                    .ok_or_else(|| bad(format!("a column of model `{name}` has no `name`")))?;
                self.declared_columns
                    .entry(name.clone())
                    .or_default()
                    .push((
                        col.to_owned(),
                        column["data_type"].as_str().map(str::to_owned),
                    ));
                let tests = column.get("data_tests").or_else(|| column.get("tests"));
                for t in tests.and_then(Value::as_array).into_iter().flatten() {
                    self.column_tests
                        .push(column_test(&path, &name, Some(col), t).map_err(&bad)?);
                }
            }
        }
        Ok(())
    }

    /// The config a node starts from before its own `config()` calls: the folder-level
    /// config, then its `config:` in a schema file (dbt's precedence).
    pub fn node_config(&self, kind: NodeKind, path: &str, name: &str) -> BTreeMap<String, Value> {
        let mut config = match self.package_of(path) {
            // A package's node: its own project file's folder configs, then the root
            // project's `models: {<package>: …}` over them (dbt's precedence).
            Some(package) => {
                let inner = &path[package.install_prefix.len() + 1..];
                let mut config = package.folder_config(kind, inner);
                for (k, v) in folder_config_in(
                    section(kind, &self.file),
                    &package.file.name,
                    roots(kind, &package.file),
                    kind,
                    inner,
                ) {
                    merge_config(&mut config, &k, v);
                }
                config
            }
            None => self.folder_config(kind, path),
        };
        if let Some(props) = self.property_configs.get(name) {
            for (k, v) in props {
                merge_config(&mut config, k, v.clone());
            }
        }
        config
    }

    /// The folder-level config that applies to a node of `kind` at `path` (e.g.
    /// `models/staging/x.sql`): `+key` entries of the project file's section for that kind
    /// (`models:`, `seeds:`, `snapshots:`, `data_tests:`), from the project level down to the
    /// node's folder, deeper ones winning; `tags` and hooks accumulate as in dbt.
    pub fn folder_config(&self, kind: NodeKind, path: &str) -> BTreeMap<String, Value> {
        folder_config_in(
            section(kind, &self.file),
            &self.file.name,
            roots(kind, &self.file),
            kind,
            path,
        )
    }
}

/// The project file's config section for a resource kind.
fn section(kind: NodeKind, file: &ProjectFile) -> &Value {
    match kind {
        NodeKind::Model => &file.models,
        NodeKind::Seed => &file.seeds,
        NodeKind::Snapshot => &file.snapshots,
        NodeKind::Test => &file.data_tests,
    }
}

/// The resource paths of a kind.
fn roots(kind: NodeKind, file: &ProjectFile) -> &[String] {
    match kind {
        NodeKind::Model => &file.model_paths,
        NodeKind::Seed => &file.seed_paths,
        NodeKind::Snapshot => &file.snapshot_paths,
        NodeKind::Test => &file.test_paths,
    }
}

/// The `+key` configs of `section[project]` that apply at `path` (under one of `roots`),
/// from the project level down to the node's folder, deeper ones winning; `tags` and hooks
/// accumulate.
fn folder_config_in(
    section: &Value,
    project: &str,
    roots: &[String],
    _kind: NodeKind,
    path: &str,
) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    // `+key`s at the top of the section apply to every project (`data_tests: {+severity:
    // warn}`), under the project's own.
    for (k, v) in section.as_object().into_iter().flatten() {
        if let Some(key) = k.strip_prefix('+') {
            merge_config(&mut out, key, v.clone());
        }
    }
    let Some(mut node) = section.get(project) else {
        return out;
    };
    // The folders between the resource path (which may have several components) and the
    // file name.
    let relative = roots
        .iter()
        .find_map(|root| {
            let root = root.trim_start_matches("./").trim_end_matches('/');
            path.strip_prefix(root)?.strip_prefix('/')
        })
        .unwrap_or(path);
    let mut folders: Vec<&str> = relative.split('/').collect();
    folders.pop();
    let mut apply = |node: &Value| {
        for (k, v) in node.as_object().into_iter().flatten() {
            if let Some(key) = k.strip_prefix('+') {
                merge_config(&mut out, key, v.clone());
            } else if !v.is_object() {
                merge_config(&mut out, k, v.clone());
            }
        }
    };
    apply(node);
    for folder in folders {
        match node.get(folder) {
            Some(next) if next.is_object() => {
                node = next;
                apply(node);
            }
            _ => break,
        }
    }
    out
}

/// Config keys whose values accumulate (folder, then file) instead of being replaced.
const ACCUMULATING: [&str; 3] = ["tags", "pre_hook", "post_hook"];

/// Sets `key` in `config`: `tags` and hooks are appended (a string counts as a one-element
/// list, duplicates of tags dropped), every other key is replaced.
pub fn merge_config(config: &mut BTreeMap<String, Value>, key: &str, value: Value) {
    // `+pre-hook:` in YAML and `pre_hook=` in `config()` are one setting.
    let key = match key {
        "pre-hook" => "pre_hook",
        "post-hook" => "post_hook",
        other => other,
    };
    if !ACCUMULATING.contains(&key) {
        config.insert(key.to_owned(), value);
        return;
    }
    let as_list = |v: Value| match v {
        Value::Array(items) => items,
        Value::Null => Vec::new(),
        other => vec![other],
    };
    let mut items = config.remove(key).map(as_list).unwrap_or_default();
    for v in as_list(value) {
        if key != "tags" || !items.contains(&v) {
            items.push(v);
        }
    }
    config.insert(key.to_owned(), Value::Array(items));
}

fn column_test(
    file: &Path,
    model: &str,
    column: Option<&str>,
    t: &Value,
) -> Result<ColumnTest, String> {
    match t {
        Value::String(name) => Ok(ColumnTest {
            model: model.to_owned(),
            column: column.map(str::to_owned),
            name: name.clone(),
            args: BTreeMap::new(),
            file: file.to_owned(),
            package: None,
        }),
        Value::Object(map) if map.len() == 1 => {
            let (name, args) = map.iter().next().ok_or("empty test")?;
            let mut args: BTreeMap<String, Value> = args
                .as_object()
                .map(|a| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default();
            // dbt 1.8+ nests arguments under `arguments:` and settings under `config:`.
            for nested in ["arguments", "config"] {
                if let Some(Value::Object(inner)) = args.remove(nested) {
                    args.extend(inner);
                }
            }
            Ok(ColumnTest {
                model: model.to_owned(),
                column: column.map(str::to_owned),
                name: name.clone(),
                args,
                file: file.to_owned(),
                package: None,
            })
        }
        other => Err(format!(
            "a test of `{model}`{} is neither a name nor a single-key mapping: {other}",
            column.map(|c| format!(".{c}")).unwrap_or_default()
        )),
    }
}

/// The output a `profiles.yml` target names: which warehouse and schema a run uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileTarget {
    /// Target name (`target.name`).
    pub name: String,
    /// Warehouse type (`datafusion`, `bigquery`, or another adapter's name).
    pub kind: String,
    /// Default schema (dataset), if given.
    pub schema: Option<String>,
    /// Warehouse location (`location:` or dbt-duckdb's `path:`), if given.
    pub location: Option<String>,
    /// The whole output, for adapter-specific settings (a BigQuery target's `project`,
    /// `method`, `keyfile`…).
    pub output: Value,
}

impl Project {
    /// Reads the project's profile from `profiles.yml` in `dir` (dbt's `--profiles-dir`):
    /// `target` picks the output (default: the profile's `target:`). `None` when there is no
    /// profiles file (the embedded default). Errors: the file lacks this project's profile, or
    /// the output `target` names.
    pub fn profile_target(
        &self,
        dir: &Path,
        target: Option<&str>,
    ) -> Result<Option<ProfileTarget>, DbtError> {
        let path = dir.join("profiles.yml");
        if !path.exists() {
            return Ok(None);
        }
        let doc: Value = parse_yaml(&read(&path)?, &path)?;
        let Some(profile_name) = &self.file.profile else {
            return Ok(None);
        };
        let bad = |message: String| DbtError::Project {
            path: path.clone(),
            message,
        };
        // A profiles file without the project's profile is a mistake (dbt refuses it too), not
        // a reason to build somewhere else.
        let Some(profile) = doc.get(profile_name) else {
            let known: Vec<&str> = doc
                .as_object()
                .map(|o| o.keys().map(String::as_str).collect())
                .unwrap_or_default();
            return Err(bad(format!(
                "no profile `{profile_name}` (dbt_project.yml's `profile:`); profiles here: {}",
                known.join(", ")
            )));
        };
        let name = match target {
            Some(t) => t.to_owned(),
            None => profile["target"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| bad(format!("profile `{profile_name}` has no `target:`")))?,
        };
        let output = profile["outputs"].get(&name).ok_or_else(|| {
            let known: Vec<&str> = profile["outputs"]
                .as_object()
                .map(|o| o.keys().map(String::as_str).collect())
                .unwrap_or_default();
            bad(format!(
                "profile `{profile_name}` has no output `{name}` (outputs: {})",
                known.join(", ")
            ))
        })?;
        let text = |k: &str| output.get(k).and_then(Value::as_str).map(str::to_owned);
        Ok(Some(ProfileTarget {
            name,
            kind: text("type").unwrap_or_else(|| "datafusion".into()),
            schema: text("schema").or_else(|| text("dataset")),
            location: text("location").or_else(|| text("path")),
            output: output.clone(),
        }))
    }
}
