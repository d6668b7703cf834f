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
const VALUE_FLAGS: [&str; 8] = [
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
    /// The target schema (dataset) unqualified names and models default to.
    #[arg(long, global = true, default_value = "main")]
    target_schema: String,
    /// Target name (`target.name`).
    #[arg(long, global = true, default_value = "dev")]
    target: String,
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
    /// Run BigQuery SQL on the warehouse (every model and seed visible by its name).
    Query {
        /// The SQL.
        sql: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
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

async fn open(cli: &Cli) -> Result<Warehouse> {
    let location = match &cli.warehouse {
        Some(w) => w.clone(),
        None => cli.home.join("warehouse").to_string_lossy().into_owned(),
    };
    Warehouse::open(&location, &cli.target_schema)
        .await
        .with_context(|| format!("opening the warehouse at {location}"))
}

fn parse_vars(text: Option<&str>) -> Result<BTreeMap<String, serde_json::Value>> {
    match text {
        None => Ok(BTreeMap::new()),
        Some(t) => serde_norway::from_str(t).with_context(|| {
            format!("--vars: expected a mapping such as '{{\"key\": 1}}', got `{t}`")
        }),
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let warehouse = open(&cli).await?;
    let (verb, args) = match &cli.command {
        Command::Query { sql, format } => {
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
    let options = RunOptions {
        select: args.select.clone(),
        exclude: args.exclude.clone(),
        full_refresh: args.full_refresh,
        vars: parse_vars(args.vars.as_deref())?,
        target_name: Some(cli.target.clone()),
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
