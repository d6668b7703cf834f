//! dbt's verbs through `rainbow`: `seed`, `run`, `snapshot`, `test`, `build` run a SQL
//! project on the embedded warehouse (DataFusion + Delta Lake under `$RAINBOW_HOME/warehouse`);
//! `query` runs ad-hoc BigQuery SQL on it.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use rainbow_warehouse::Warehouse;
use rainbow_warehouse::materialize::{self, NodeResult, RunOptions, Status, Verb};

/// The verbs this module handles; everything else goes to the engine's CLI.
const VERBS: [&str; 6] = ["seed", "run", "snapshot", "test", "build", "query"];

/// Global flags that take a value (to find the verb after them).
const VALUE_FLAGS: [&str; 9] = [
    "--profiles-dir",
    "--project-dir",
    "--home",
    "--warehouse",
    "--target-schema",
    "--database-url",
    "--config",
    "--heartbeat-timeout",
    "--target",
];

/// True when `args` (without the program name) name one of dbt's verbs. `rainbow run show ID`
/// stays the engine's.
pub fn handles(args: &[String]) -> bool {
    let mut positional = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a.starts_with("--") {
            if !a.contains('=') && VALUE_FLAGS.contains(&a.as_str()) {
                i += 1;
            }
        } else if !a.starts_with('-') {
            positional.push(a.as_str());
            if positional.len() == 2 {
                break;
            }
        }
        i += 1;
    }
    match positional.as_slice() {
        ["run", "show", ..] => false,
        ["bench", "run", ..] => true,
        [verb, ..] => VERBS.contains(verb),
        [] => false,
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "rainbow",
    about = "Rainbow SQL projects: dbt's verbs on the embedded warehouse"
)]
struct Cli {
    /// The SQL project directory (holding dbt_project.yml).
    #[arg(long, global = true, default_value = ".")]
    project_dir: PathBuf,
    /// State directory; the warehouse defaults to `<home>/warehouse`.
    #[arg(long, env = "RAINBOW_HOME", global = true, default_value = ".rainbow")]
    home: PathBuf,
    /// Warehouse location (a directory or URL).
    #[arg(long, env = "RAINBOW_WAREHOUSE", global = true)]
    warehouse: Option<String>,
    /// The target schema (dataset) unqualified names and models default to (default: the
    /// profile's `schema`, else `main`).
    #[arg(long, global = true)]
    target_schema: Option<String>,
    /// Target name (`target.name`; default: the profile's `target`, else `dev`).
    #[arg(long, global = true)]
    target: Option<String>,
    /// Where `profiles.yml` is (default: the project directory). Without one, or without an
    /// entry for the project's profile, the embedded DataFusion warehouse is the target.
    #[arg(long, global = true)]
    profiles_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Nodes to run (dbt selection syntax; repeatable).
    #[arg(long, short = 's', num_args = 1..)]
    select: Vec<String>,
    /// Nodes to leave out.
    #[arg(long, num_args = 1..)]
    exclude: Vec<String>,
    /// Rebuild incremental models from scratch.
    #[arg(long)]
    full_refresh: bool,
    /// Variables as YAML or JSON: '{"key": "value"}'.
    #[arg(long)]
    vars: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load seeds (CSV files) into tables.
    Seed(RunArgs),
    /// Build models.
    Run(RunArgs),
    /// Run snapshots (SCD type 2).
    Snapshot(RunArgs),
    /// Run data tests.
    Test(RunArgs),
    /// Seeds, models, snapshots and tests in DAG order.
    Build(RunArgs),
    /// Benchmarks (`bench run`; the engine's `bench` has the others).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run BigQuery SQL on the warehouse (every model and seed visible by its name).
    Query {
        /// The SQL.
        sql: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Build every model of a synthetic project of N models on the embedded warehouse
    /// (generation, seeding and the source table are set up first, not timed).
    Run {
        /// Number of models.
        #[arg(long, default_value_t = 1000)]
        models: usize,
    },
}

/// Runs the command; errors print with their chain and exit 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The target a command runs against: flags, then the profile, then the embedded default.
struct Target {
    name: String,
    schema: String,
    location: String,
}

fn target(cli: &Cli, project: Option<&rainbow_sql::Project>) -> Result<Target> {
    let profiles_dir = cli
        .profiles_dir
        .clone()
        .unwrap_or_else(|| cli.project_dir.clone());
    let profile = match project {
        Some(p) => p.profile_target(&profiles_dir, cli.target.as_deref())?,
        None => None,
    };
    if let Some(p) = &profile {
        match p.kind.as_str() {
            "datafusion" => {}
            "bigquery" => bail!(
                "target `{}` is a BigQuery target: not supported yet; use a `type: datafusion` target (the embedded default)",
                p.name
            ),
            other => eprintln!(
                "note: target `{}` has type `{other}`: running on the embedded DataFusion warehouse",
                p.name
            ),
        }
    }
    let embedded = profile.as_ref().is_none_or(|p| p.kind == "datafusion");
    Ok(Target {
        name: cli
            .target
            .clone()
            .or_else(|| profile.as_ref().map(|p| p.name.clone()))
            .unwrap_or_else(|| "dev".into()),
        schema: cli
            .target_schema
            .clone()
            .or_else(|| profile.as_ref().and_then(|p| p.schema.clone()))
            .unwrap_or_else(|| "main".into()),
        location: cli
            .warehouse
            .clone()
            .or_else(|| {
                profile
                    .as_ref()
                    .filter(|_| embedded)
                    .and_then(|p| p.location.clone())
            })
            .unwrap_or_else(|| cli.home.join("warehouse").to_string_lossy().into_owned()),
    })
}

async fn open(target: &Target) -> Result<Warehouse> {
    Warehouse::open(&target.location, &target.schema)
        .await
        .with_context(|| format!("opening the warehouse at {}", target.location))
}

fn parse_vars(text: Option<&str>) -> Result<BTreeMap<String, serde_json::Value>> {
    match text {
        None => Ok(BTreeMap::new()),
        Some(t) => serde_norway::from_str(t).with_context(|| {
            format!("--vars: expected a mapping such as '{{\"key\": 1}}', got `{t}`")
        }),
    }
}

async fn bench_run(models: usize) -> Result<ExitCode> {
    let dir = std::env::temp_dir().join(format!(
        "rainbow-bench-run-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    ));
    rainbow_sql::synthetic::write_project(&dir, models)?;
    let location = dir.join("warehouse").to_string_lossy().into_owned();
    let warehouse = Warehouse::open(&location, "main").await?;
    let project = rainbow_sql::Project::load(&dir)?;
    let mut quiet = |_: &NodeResult, _: usize, _: usize| {};
    let seeded = materialize::run(
        &project,
        &warehouse,
        Verb::Seed,
        &RunOptions::default(),
        &mut quiet,
    )
    .await?;
    if !seeded.success() {
        bail!("seeding the synthetic project failed: {:?}", seeded.results);
    }
    warehouse
        .execute(
            "CREATE TABLE raw.events AS SELECT * FROM main.events",
            "bench setup",
        )
        .await?;
    let bar = indicatif::ProgressBar::new(models as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} models {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    // Like `dbt run`: load, parse and compile the project, then build every model.
    let project = rainbow_sql::Project::load(&dir)?;
    let mut progress = |_: &NodeResult, _: usize, _: usize| bar.inc(1);
    let summary = materialize::run(
        &project,
        &warehouse,
        Verb::Run,
        &RunOptions::default(),
        &mut progress,
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let _ = std::fs::remove_dir_all(&dir);
    if !summary.success() {
        bail!("{}", summary.done_line());
    }
    println!("{}", summary.done_line());
    println!("{{\"bench\":\"run\",\"models\":{models},\"seconds\":{seconds}}}");
    Ok(ExitCode::SUCCESS)
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let (verb, args) = match &cli.command {
        Command::Bench(BenchCommand::Run { models }) => return bench_run(*models).await,
        Command::Query { sql, format } => {
            let project = if cli.project_dir.join("dbt_project.yml").exists() {
                Some(rainbow_sql::Project::load(&cli.project_dir)?)
            } else {
                None
            };
            let warehouse = open(&target(&cli, project.as_ref())?).await?;
            let batches = warehouse.execute(sql, "query").await?;
            print_batches(&batches, *format)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Seed(a) => (Verb::Seed, a),
        Command::Run(a) => (Verb::Run, a),
        Command::Snapshot(a) => (Verb::Snapshot, a),
        Command::Test(a) => (Verb::Test, a),
        Command::Build(a) => (Verb::Build, a),
    };
    let project = rainbow_sql::Project::load(&cli.project_dir)?;
    let target = target(&cli, Some(&project))?;
    let warehouse = open(&target).await?;
    let options = RunOptions {
        select: args.select.clone(),
        exclude: args.exclude.clone(),
        full_refresh: args.full_refresh,
        vars: parse_vars(args.vars.as_deref())?,
        target_name: Some(target.name.clone()),
        ..Default::default()
    };
    let mut report = |r: &NodeResult, i: usize, total: usize| {
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
        let width = total.to_string().len();
        println!(
            "{} {i:>width$} of {total} {label:<5} {what} {} [{} in {:.2}s]",
            chrono::Local::now().format("%H:%M:%S"),
            ".".repeat(60usize.saturating_sub(what.len()).max(3)),
            first_line(&r.message),
            r.seconds
        );
        if matches!(r.status, Status::Error | Status::Fail) && r.message.contains('\n') {
            println!("{}", r.message);
        }
    };
    let summary = materialize::run(&project, &warehouse, verb, &options, &mut report).await?;
    if summary.results.is_empty() {
        bail!("nothing to run: the selection matched no {verb:?} node");
    }
    let count = |resource: &str| {
        summary
            .results
            .iter()
            .filter(|r| r.resource == resource)
            .count()
    };
    println!(
        "\nFinished running {} seed(s), {} model(s), {} snapshot(s), {} test(s) in {:.2}s.",
        count("seed"),
        count("model"),
        count("snapshot"),
        count("test"),
        summary.seconds
    );
    for r in summary
        .results
        .iter()
        .filter(|r| matches!(r.status, Status::Error | Status::Fail | Status::Warn))
    {
        println!(
            "  {:?} in {} {}: {}",
            r.status, r.resource, r.name, r.message
        );
    }
    println!("{}", summary.done_line());
    Ok(if summary.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

fn print_batches(
    batches: &[rainbow_warehouse::datafusion::arrow::record_batch::RecordBatch],
    format: Format,
) -> Result<()> {
    use rainbow_warehouse::datafusion::arrow;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match format {
        Format::Table => {
            writeln!(
                out,
                "{}",
                arrow::util::pretty::pretty_format_batches(batches)?
            )?;
        }
        Format::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            for b in batches {
                writer.write(b)?;
            }
        }
        Format::Json => {
            let mut writer = arrow::json::ArrayWriter::new(&mut out);
            for b in batches {
                writer.write(b)?;
            }
            writer.finish()?;
            writeln!(out)?;
        }
    }
    Ok(())
}
