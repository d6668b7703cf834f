//! dbt's commands on the `rainbow` command line: the verbs (`seed`, `run`, `snapshot`, `test`,
//! `build`) as engine runs ([`crate::verbs`]), `parse` / `compile` (`target/`), `query`
//! (BigQuery SQL on the warehouse) and the dbt benchmarks (`bench run`, `bench parse`). A code
//! location's binary flattens [`DbtCommand`] and [`ProjectArgs`] into its parser, next to the
//! engine's commands, and calls [`run`].

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Subcommand, ValueEnum};
use rainbow_engine::cli::GlobalArgs;
use rainbow_warehouse::Warehouse;
use rainbow_warehouse::datafusion::arrow;
use serde_json::Value as Json;

use crate::error::{DbtError, Result};
use crate::project::Project;
use crate::sql_project::SqlProject;
use crate::verbs::{NodeResult, RunSummary, Status, Verb, VerbOptions, run_verb};

/// Where the dbt project and its target are: options of dbt's commands (anywhere after the
/// command's name).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "dbt project options")]
pub struct ProjectArgs {
    /// The dbt project directory (holding dbt_project.yml).
    #[arg(long, default_value = ".")]
    pub project_dir: PathBuf,
    /// Warehouse location (a directory or URL; default: the profile's `location`, else
    /// `<home>/warehouse`).
    #[arg(long, env = "RAINBOW_WAREHOUSE")]
    pub warehouse: Option<String>,
    /// The target schema (dataset) unqualified names and models default to (default: the
    /// profile's `schema`, else `main`).
    #[arg(long)]
    pub target_schema: Option<String>,
    /// Target name (`target.name`; default: the profile's `target`, else `dev`).
    #[arg(long)]
    pub target: Option<String>,
    /// Where `profiles.yml` is (default: the project directory; dbt's `DBT_PROFILES_DIR` too).
    /// Without a profiles file in the project directory, the embedded DataFusion warehouse is
    /// the target; a directory given here must hold one.
    #[arg(long, env = "DBT_PROFILES_DIR")]
    pub profiles_dir: Option<PathBuf>,
}

/// Options of the verbs.
#[derive(Debug, Clone, clap::Args)]
pub struct VerbArgs {
    /// The project and its target.
    #[command(flatten)]
    pub project: ProjectArgs,
    /// Nodes and tests to run (selection syntax, dbt's methods included; repeatable).
    #[arg(long, short = 's', num_args = 1..)]
    pub select: Vec<String>,
    /// Nodes and tests to leave out.
    #[arg(long, num_args = 1..)]
    pub exclude: Vec<String>,
    /// A YAML selector of `selectors.yml` (instead of --select/--exclude; without either, the
    /// selector marked `default: true` applies).
    #[arg(long, conflicts_with_all = ["select", "exclude"])]
    pub selector: Option<String>,
    /// Rebuild incremental models from scratch.
    #[arg(long)]
    pub full_refresh: bool,
    /// Variables as YAML or JSON: '{"key": "value"}'.
    #[arg(long)]
    pub vars: Option<String>,
    /// Nodes built at once (default: twice the machine's cores, at least 4).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,
    /// Retries of a failing node, 1 s apart and doubling (default 0).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=10))]
    pub retries: u32,
}

/// Options of `parse` and `compile`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompileArgs {
    /// The project.
    #[command(flatten)]
    pub project: ProjectArgs,
    /// Variables overriding the project's, as JSON or YAML (`{"key": "value"}`).
    #[arg(long)]
    pub vars: Option<String>,
    /// Warehouse type for dispatched macros: `datafusion` (default) or `bigquery`.
    #[arg(long, default_value = "datafusion")]
    pub target_type: String,
}

/// Output format of `query`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// An aligned table.
    Table,
    /// CSV with a header line.
    Csv,
    /// A JSON array of objects.
    Json,
}

/// dbt's commands.
#[derive(Debug, Subcommand)]
pub enum DbtCommand {
    /// dbt: load seeds (CSV files) into tables, as one recorded run.
    Seed(VerbArgs),
    /// dbt: build models, as one recorded run (`rainbow runs` lists it).
    Run(VerbArgs),
    /// dbt: run snapshots (SCD type 2), as one recorded run.
    Snapshot(VerbArgs),
    /// dbt: run data tests (the checks of the selected nodes), as one recorded run.
    Test(VerbArgs),
    /// dbt: seeds, models, snapshots and tests in DAG order, as one recorded run.
    Build(VerbArgs),
    /// Install the project's packages (packages.yml: hub, git, local) into dbt_packages/ and
    /// write package-lock.yml.
    Deps {
        /// The dbt project directory (holding dbt_project.yml).
        #[arg(long, default_value = ".")]
        project_dir: PathBuf,
    },
    /// Parse the dbt project: nodes, dependencies, errors with file:line:column;
    /// `target/manifest.json`.
    Parse(CompileArgs),
    /// Compile the dbt project: `target/compiled/` (models and tests) and the manifest.
    Compile(CompileArgs),
    /// BigQuery dry runs: the bytes each model would scan (nothing runs, nothing is billed),
    /// against the target's `maximum_bytes_billed`. `--select` takes model names here.
    Plan(VerbArgs),
    /// Run BigQuery SQL on the warehouse (every model and seed visible by its name).
    Query {
        /// The project and its target (for the warehouse's location and schema).
        #[command(flatten)]
        project: ProjectArgs,
        /// The SQL (may start with `--`: it is never read as a flag).
        #[arg(allow_hyphen_values = true)]
        sql: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
}

/// dbt's benchmarks (under `rainbow bench`).
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Build every model of a synthetic project of N models on the embedded warehouse as one
    /// engine run (generation, seeding and the source table are set up first, not timed).
    Run {
        /// Number of models.
        #[arg(long, default_value_t = 1000)]
        models: usize,
        /// Nodes built at once (default: twice the machine's cores, at least 4).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Parse and compile a synthetic dbt project of N models (generated first, not timed).
    Parse {
        /// Number of models.
        #[arg(long, default_value_t = 1000)]
        models: usize,
    },
}

/// `--vars`: a YAML or JSON mapping.
pub fn parse_vars(text: Option<&str>) -> Result<BTreeMap<String, Json>> {
    match text {
        None => Ok(BTreeMap::new()),
        Some(t) => serde_norway::from_str(t).map_err(|e| DbtError::Input {
            location: "--vars".into(),
            message: format!("expected a mapping such as '{{\"key\": 1}}', got `{t}`: {e}"),
        }),
    }
}

/// The default number of nodes built at once: twice the machine's cores, at least 4 — a
/// model's build waits on file I/O and its Delta commit as much as it computes
/// (BENCHMARKS.md: 1,000 models on 2 cores take 3.4 s with 2 threads, 2.1 s with 4).
fn default_threads() -> usize {
    (2 * rainbow_engine::process::cores()).max(4)
}

impl ProjectArgs {
    /// The project on its target (see [`SqlProject::from_profile`]), flags overriding.
    pub fn sql_project(&self, global: &GlobalArgs) -> Result<SqlProject> {
        if let Some(dir) = &self.profiles_dir
            && !dir.join("profiles.yml").is_file()
        {
            return Err(DbtError::Input {
                location: "--profiles-dir".into(),
                message: format!("{} holds no profiles.yml", dir.display()),
            });
        }
        let profiles = self.profiles_dir.as_deref().unwrap_or(&self.project_dir);
        let default_location = global.home.join("warehouse").to_string_lossy().into_owned();
        let mut project = SqlProject::from_profile(
            &self.project_dir,
            profiles,
            self.target.as_deref(),
            default_location,
        )?;
        if let Some(location) = &self.warehouse {
            project = project.location(location.clone());
        }
        if let Some(schema) = &self.target_schema {
            project = project.target_schema(schema.clone());
        }
        Ok(project)
    }
}

/// Runs a dbt command (`deps` fetches hub indexes with `hub_index`): `Ok(1)` when a node or
/// test failed, or the run was canceled.
pub async fn run(
    global: &GlobalArgs,
    command: &DbtCommand,
    hub_index: &crate::deps::HubIndex,
) -> Result<ExitCode> {
    let (verb, verb_args) = match command {
        DbtCommand::Seed(a) => (Verb::Seed, a),
        DbtCommand::Run(a) => (Verb::Run, a),
        DbtCommand::Snapshot(a) => (Verb::Snapshot, a),
        DbtCommand::Test(a) => (Verb::Test, a),
        DbtCommand::Build(a) => (Verb::Build, a),
        DbtCommand::Deps { project_dir } => {
            let installed = crate::deps::install(project_dir, hub_index).await?;
            if installed.is_empty() {
                println!("No packages to install (no packages.yml or dependencies.yml).");
            }
            for i in &installed {
                println!("Installed {} ({})", i.name, i.lock);
            }
            return Ok(ExitCode::SUCCESS);
        }
        DbtCommand::Parse(a) => return parse_or_compile(&a.project.project_dir, a, false),
        DbtCommand::Compile(a) => return compile_command(global, a).await,
        DbtCommand::Plan(a) => return plan_command(global, a).await,
        DbtCommand::Query {
            project: args,
            sql,
            format,
        } => {
            let warehouse = if args.project_dir.join("dbt_project.yml").exists() {
                let project = args.sql_project(global)?;
                if project.bigquery_target().is_some() {
                    // On BigQuery: unqualified names resolve in the target's dataset.
                    let (_, batches) = project.query(sql, "query").await?;
                    print_batches(&batches, *format).map_err(|e| DbtError::Io {
                        path: PathBuf::from("<stdout>"),
                        source: e,
                    })?;
                    return Ok(ExitCode::SUCCESS);
                }
                project.warehouse().await?.clone()
            } else {
                let location = args.warehouse.clone().unwrap_or_else(|| {
                    global.home.join("warehouse").to_string_lossy().into_owned()
                });
                let schema = args.target_schema.as_deref().unwrap_or("main");
                Warehouse::open(&location, schema).await?
            };
            let batches = warehouse.execute(sql, "query").await?;
            print_batches(&batches, *format).map_err(|e| DbtError::Io {
                path: PathBuf::from("<stdout>"),
                source: e,
            })?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    let mut project = verb_args
        .project
        .sql_project(global)?
        .full_refresh(verb_args.full_refresh)
        .retry_policy(rainbow_engine::RetryPolicy::exponential(
            verb_args.retries,
            std::time::Duration::from_secs(1),
        ));
    for (name, value) in parse_vars(verb_args.vars.as_deref())? {
        project = project.var(name, value);
    }
    let storage = global.storage().await?;
    let config = global.config()?;
    let (select, exclude) = selection(verb_args)?;
    let options = VerbOptions {
        verb,
        select,
        exclude,
        threads: verb_args
            .threads
            .map_or_else(default_threads, |t| t as usize),
    };
    let bar = rainbow_engine::cli::progress_bar(0);
    let summary = run_verb(
        &project,
        storage,
        &config,
        &options,
        rainbow_engine::cli::cancel_on_ctrl_c(),
        Some(bar.callback()),
    )
    .await?;
    bar.finish();
    print_summary(&summary).map_err(|e| DbtError::Io {
        path: PathBuf::from("<stdout>"),
        source: e,
    })?;
    Ok(if summary.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// dbt's report: a line per node and test, the totals, the failures, `Done. …`.
fn print_summary(summary: &RunSummary) -> std::io::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let total = summary.results.len();
    let width = total.to_string().len();
    for (i, r) in summary.results.iter().enumerate() {
        writeln!(out, "{}", result_line(r, i + 1, total, width))?;
        if matches!(r.status, Status::Error | Status::Fail) && r.message.contains('\n') {
            writeln!(out, "{}", r.message)?;
        }
    }
    let count = |resource: &str| {
        summary
            .results
            .iter()
            .filter(|r| r.resource == resource)
            .count()
    };
    writeln!(
        out,
        "\nFinished running {} seed(s), {} model(s), {} snapshot(s), {} test(s) in {:.2}s (run {}).",
        count("seed"),
        count("model"),
        count("snapshot"),
        count("test"),
        summary.seconds,
        summary.run_id
    )?;
    if summary.canceled {
        writeln!(out, "The run was canceled.")?;
    }
    for r in summary
        .results
        .iter()
        .filter(|r| matches!(r.status, Status::Error | Status::Fail | Status::Warn))
    {
        writeln!(
            out,
            "  {:?} in {} {}: {}",
            r.status, r.resource, r.name, r.message
        )?;
    }
    writeln!(out, "{}", summary.done_line())
}

fn result_line(r: &NodeResult, i: usize, total: usize, width: usize) -> String {
    let label = match r.status {
        Status::Success => "OK",
        Status::Pass => "PASS",
        Status::Warn => "WARN",
        Status::Fail => "FAIL",
        Status::Error => "ERROR",
        Status::Skipped => "SKIP",
    };
    let what = match &r.relation {
        Some(rel) => format!("{} {rel}", r.resource),
        None => format!("{} {}", r.resource, r.name),
    };
    let time = r
        .seconds
        .map(|s| format!(" [in {s:.2}s]"))
        .unwrap_or_default();
    format!(
        "{i:>width$} of {total} {label:<5} {what} {} {}{time}",
        ".".repeat(60usize.saturating_sub(what.len()).max(3)),
        r.message.lines().next().unwrap_or("")
    )
}

/// The project in `dir` and the compile options `parse`/`compile` take from their flags (vars,
/// target type; `run_started_at` now).
fn load_for_compile(dir: &Path, args: &CompileArgs) -> Result<(Project, crate::CompileOptions)> {
    let project = Project::load(dir)?;
    let options = crate::CompileOptions {
        target_type: args.target_type.clone(),
        vars: parse_vars(args.vars.as_deref())?,
        run_started_at: chrono::Utc::now().to_rfc3339(),
        ..Default::default()
    };
    Ok((project, options))
}

fn parse_or_compile(dir: &Path, args: &CompileArgs, write_compiled: bool) -> Result<ExitCode> {
    let (project, options) = load_for_compile(dir, args)?;
    let mut manifest = crate::parse(&project, &options)?;
    let count = |k: crate::NodeKind| manifest.nodes.iter().filter(|n| n.kind == k).count();
    let summary = format!(
        "{}: {} models, {} seeds, {} snapshots, {} singular tests, {} generic tests, {} sources",
        manifest.project,
        count(crate::NodeKind::Model),
        count(crate::NodeKind::Seed),
        count(crate::NodeKind::Snapshot),
        count(crate::NodeKind::Test),
        project.column_tests.len(),
        manifest.sources.len()
    );
    let target = dir.join("target");
    crate::compile(&mut manifest);
    // Data tests are checked on parse too, so a bad test declaration fails early.
    let tests = crate::data_tests(&project, &manifest, &options)?;
    let line = if write_compiled {
        crate::write_target(&manifest, &target)?;
        crate::write_tests(&tests, &manifest.project, &target)?;
        format!(
            "{summary}; compiled to {}",
            target.join("compiled").display()
        )
    } else {
        crate::write_manifest(&manifest, &target)?;
        format!(
            "{summary}; manifest at {}",
            target.join("manifest.json").display()
        )
    };
    writeln!(std::io::stdout().lock(), "{line}").map_err(|source| DbtError::Io {
        path: PathBuf::from("<stdout>"),
        source,
    })?;
    Ok(ExitCode::SUCCESS)
}

fn print_batches(
    batches: &[arrow::record_batch::RecordBatch],
    format: Format,
) -> std::io::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let arrow_error = |e: arrow::error::ArrowError| std::io::Error::other(e.to_string());
    match format {
        Format::Table => {
            // NULL as `NULL`, as the bq CLI shows it: an empty cell is the empty string.
            let options = arrow::util::display::FormatOptions::default().with_null("NULL");
            let table = arrow::util::pretty::pretty_format_batches_with_options(batches, &options)
                .map_err(arrow_error)?;
            writeln!(out, "{table}")?;
        }
        Format::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            for b in batches {
                writer.write(b).map_err(arrow_error)?;
            }
        }
        Format::Json => {
            let mut writer = arrow::json::ArrayWriter::new(&mut out);
            for b in batches {
                writer.write(b).map_err(arrow_error)?;
            }
            writer.finish().map_err(arrow_error)?;
            writeln!(out)?;
        }
    }
    Ok(())
}

/// `rainbow plan`: every selected model's SQL as a BigQuery dry run, its bytes, and the total.
async fn plan_command(global: &GlobalArgs, args: &VerbArgs) -> Result<ExitCode> {
    let mut sql_project = args.project.sql_project(global)?;
    for (name, value) in parse_vars(args.vars.as_deref())? {
        sql_project = sql_project.var(name, value);
    }
    let Some(target) = sql_project.bigquery_target().cloned() else {
        return Err(DbtError::Input {
            location: "plan".into(),
            message: "plan estimates what BigQuery would scan; this project's target is the embedded warehouse (pick a `type: bigquery` target with --target)".into(),
        });
    };
    let project = Project::load(&args.project.project_dir)?;
    let bq = sql_project
        .bigquery_client()
        .await?
        .ok_or_else(|| DbtError::Input {
            location: "plan".into(),
            message: "no BigQuery target".into(),
        })?;
    let mut options = sql_project.compile_options(BTreeMap::new());
    options.full_refresh = args.full_refresh;
    let mut manifest = sql_project.parse_for_run(&project, &mut options).await?;
    crate::compile(&mut manifest);
    let mut out = std::io::stdout().lock();
    let io = |source| DbtError::Io {
        path: PathBuf::from("<stdout>"),
        source,
    };
    writeln!(
        out,
        "{:<40} {:<12} {:>16}  NOTE",
        "MODEL", "MATERIALIZED", "BYTES"
    )
    .map_err(io)?;
    let (mut total, mut failed) = (0u64, false);
    for node in manifest.nodes.iter().filter(|n| {
        n.kind == crate::NodeKind::Model
            && n.materialized() != "ephemeral"
            && (args.select.is_empty() || args.select.contains(&n.name))
    }) {
        let sql = node.compiled.clone().unwrap_or_default();
        let mut jobs = crate::bigquery::Jobs::new(&bq, &node.name, "plan");
        let checked = match crate::bigquery::validate(node) {
            Ok(()) => jobs.dry_run(&sql, &node.path).await,
            Err(e) => Err(e),
        };
        let (bytes, note) = match checked {
            Ok(bytes) => {
                total += bytes;
                let over = target.maximum_bytes_billed.is_some_and(|max| bytes > max);
                failed |= over;
                (
                    bytes.to_string(),
                    if over {
                        "over maximum_bytes_billed"
                    } else {
                        ""
                    }
                    .to_owned(),
                )
            }
            Err(e) => {
                failed = true;
                ("-".to_owned(), e.to_string())
            }
        };
        let name = format!("{}.{}", node.schema, node.relation);
        writeln!(
            out,
            "{name:<40} {:<12} {bytes:>16}  {note}",
            node.materialized()
        )
        .map_err(io)?;
    }
    writeln!(out, "{:<40} {:<12} {total:>16}", "TOTAL", "").map_err(io)?;
    if let Some(max) = target.maximum_bytes_billed {
        writeln!(out, "maximum_bytes_billed: {max} per job").map_err(io)?;
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Runs a dbt benchmark; prints one JSON line last.
pub async fn bench(command: &BenchCommand) -> Result<ExitCode> {
    match command {
        BenchCommand::Run { models, threads } => {
            bench_run(*models, threads.unwrap_or_else(default_threads)).await
        }
        BenchCommand::Parse { models } => bench_parse(*models),
    }
}

fn bench_dir(what: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "rainbow-bench-{what}-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    ))
}

fn bench_parse(models: usize) -> Result<ExitCode> {
    let dir = bench_dir("parse");
    crate::synthetic::write_project(&dir, models)?;
    let started = Instant::now();
    let project = Project::load(&dir)?;
    let loaded = started.elapsed().as_secs_f64();
    let options = crate::CompileOptions::default();
    let mut manifest = crate::parse(&project, &options)?;
    let parsed = started.elapsed().as_secs_f64();
    crate::compile(&mut manifest);
    crate::write_manifest(&manifest, &dir.join("target"))?;
    let seconds = started.elapsed().as_secs_f64();
    let nodes = manifest.nodes.len();
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{}",
        serde_json::json!({"nodes": nodes, "peak_rss_mib": rainbow_engine::cli::bench::peak_rss_mib(),
               "load_seconds": loaded, "parse_seconds": parsed - loaded,
               "compile_and_manifest_seconds": seconds - parsed})
    );
    println!("{{\"bench\":\"parse\",\"models\":{models},\"seconds\":{seconds}}}");
    Ok(ExitCode::SUCCESS)
}

/// Like `dbt run` on a fresh project: declare (load, parse, compile), then build every model as
/// one engine run with run storage on SQLite.
async fn bench_run(models: usize, threads: usize) -> Result<ExitCode> {
    let dir = bench_dir("run");
    crate::synthetic::write_project(&dir, models)?;
    let location = dir.join("warehouse").to_string_lossy().into_owned();
    let storage = rainbow_engine::Storage::open_sqlite_dir(&dir.join("home")).await?;
    let config = rainbow_engine::RainbowConfig::default();
    let verb = |verb: Verb| VerbOptions {
        verb,
        select: Vec::new(),
        exclude: Vec::new(),
        threads,
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let setup = SqlProject::new(&dir, location.clone());
    let seeded = run_verb(
        &setup,
        storage.clone(),
        &config,
        &verb(Verb::Seed),
        cancel.clone(),
        None,
    )
    .await?;
    if !seeded.success() {
        return Err(DbtError::Input {
            location: dir.display().to_string(),
            message: format!(
                "seeding the synthetic project failed: {}",
                seeded.done_line()
            ),
        });
    }
    setup
        .warehouse()
        .await?
        .execute(
            "CREATE TABLE raw.events AS SELECT * FROM main.events",
            "bench setup",
        )
        .await?;
    let bar = rainbow_engine::cli::progress_bar(models);
    rainbow_warehouse::instrument::reset();
    let started = Instant::now();
    let project = SqlProject::new(&dir, location);
    let summary = run_verb(
        &project,
        storage,
        &config,
        &verb(Verb::Run),
        cancel,
        Some(bar.callback()),
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    // Time inside the warehouse (building models, their row counts), summed over threads.
    let work = rainbow_warehouse::instrument::work_time().as_secs_f64();
    bar.finish();
    let _ = std::fs::remove_dir_all(&dir);
    if !summary.success() {
        return Err(DbtError::Input {
            location: "bench run".into(),
            message: summary.done_line(),
        });
    }
    println!("{}", summary.done_line());
    println!(
        "{{\"bench\":\"run\",\"models\":{models},\"threads\":{threads},\"seconds\":{seconds},\"warehouse_work_seconds\":{work}}}"
    );
    Ok(ExitCode::SUCCESS)
}

/// `--select`/`--exclude`, or the YAML selector `--selector` names, or the default selector.
fn selection(args: &VerbArgs) -> Result<(Vec<String>, Vec<String>), DbtError> {
    let selectors = crate::selectors::load(&args.project.project_dir)?;
    let chosen = match &args.selector {
        Some(name) => Some(selectors.get(name).ok_or_else(|| DbtError::Input {
            location: "--selector".into(),
            message: format!(
                "no selector `{name}` in selectors.yml{}",
                rainbow_suggest::did_you_mean(name, selectors.keys().map(String::as_str))
            ),
        })?),
        None if args.select.is_empty() && args.exclude.is_empty() => {
            selectors.values().find(|s| s.default)
        }
        None => None,
    };
    Ok(match chosen {
        Some(s) => (s.select.clone(), s.exclude.clone()),
        None => (args.select.clone(), args.exclude.clone()),
    })
}

/// `rainbow compile`: parse and compile, then render again with `execute` true, on the
/// target's warehouse, every node whose rendering queries it (as dbt compile does); a node
/// whose queries fail (a parent not built yet) keeps its parse-time SQL, marked as such in
/// `target/compiled`, with a warning.
async fn compile_command(global: &GlobalArgs, args: &CompileArgs) -> Result<ExitCode> {
    let dir = &args.project.project_dir;
    let (project, mut options) = load_for_compile(dir, args)?;
    // A BigQuery target's SQL names relations `project.dataset.table`, as it will run.
    let sql_project = args.project.sql_project(global)?;
    let mut manifest = if sql_project.bigquery_target().is_some() {
        let target = sql_project.compile_options(BTreeMap::new());
        options.target_type = target.target_type;
        options.target_schema = target.target_schema;
        options.database = target.database;
        sql_project.parse_for_run(&project, &mut options).await?
    } else {
        crate::parse(&project, &options)?
    };
    crate::compile(&mut manifest);
    let tests = crate::data_tests(&project, &manifest, &options)?;
    if manifest.nodes.iter().any(|n| n.needs_execute) {
        let mut executing = options.clone();
        executing.execute = true;
        executing.query = Some(sql_project.query_fn().await?);
        let project = std::sync::Arc::new(project);
        let parsed = std::sync::Arc::new(manifest.clone());
        for node in manifest.nodes.iter_mut().filter(|n| n.needs_execute) {
            let (p, m, n, o) = (
                project.clone(),
                parsed.clone(),
                node.clone(),
                executing.clone(),
            );
            let rendered = tokio::task::spawn_blocking(move || {
                crate::compile::render_for_execution(&p, &m, &n, &o)
            })
            .await;
            match rendered {
                Ok(Ok(sql)) => {
                    node.compiled = Some(sql);
                    node.needs_execute = false;
                }
                Ok(Err(e)) => tracing::warn!(
                    "{}: its queries failed, so it is written as parsed (execute = false): {e}",
                    node.path
                ),
                Err(e) => tracing::warn!("{}: rendering panicked: {e}", node.path),
            }
        }
    }
    let target = dir.join("target");
    crate::write_target(&manifest, &target)?;
    crate::write_tests(&tests, &manifest.project, &target)?;
    writeln!(
        std::io::stdout().lock(),
        "{}: {} nodes, {} tests; compiled to {}",
        manifest.project,
        manifest.nodes.len(),
        tests.len(),
        target.join("compiled").display()
    )
    .map_err(|source| DbtError::Io {
        path: PathBuf::from("<stdout>"),
        source,
    })?;
    Ok(ExitCode::SUCCESS)
}
