//! The `rainbow` command line. A code location's binary calls [`main`] with its
//! [`Definitions`]; every command shares the global options (state directory, database URL,
//! config file) and the selection language.
//!
//! Exit codes: 0 success, 1 a run failed or was canceled, 2 bad input or an engine error.

mod backfill;
mod bench;
mod output;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::definitions::Definitions;
use crate::error::{Error, Result};
use crate::executor::{Executor, Progress, ProgressFn, RunOptions, StepStatus, error_chain};
use crate::graph::AssetGraph;
use crate::monitor::{MonitorPolicy, fail_orphaned_runs};
use crate::resource::RainbowConfig;
use crate::storage::{RunFilter, Storage};

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(name = "rainbow", version, about = "Rainbow: asset-graph orchestration", long_about = None)]
pub struct Cli {
    /// State directory; the embedded SQLite storage lives here.
    #[arg(long, env = "RAINBOW_HOME", default_value = ".rainbow", global = true)]
    pub home: PathBuf,
    /// Run storage URL (`sqlite://PATH` or `postgres://…`); defaults to SQLite under --home.
    #[arg(long, env = "RAINBOW_DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// Project config file (resources); default `rainbow.toml` if it exists.
    #[arg(long, env = "RAINBOW_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Seconds without a heartbeat after which a run is considered dead.
    #[arg(
        long,
        env = "RAINBOW_HEARTBEAT_TIMEOUT",
        default_value_t = 120,
        global = true
    )]
    pub heartbeat_timeout: u64,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List assets with their group, kinds, dependencies and staleness.
    List {
        /// Which assets (default: every asset).
        #[command(flatten)]
        selection: SelectArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Materialize a selection (or a job) in one run.
    Materialize {
        /// Which assets.
        #[command(flatten)]
        selection: SelectArgs,
        /// Launch a job's selection instead.
        #[arg(long, conflicts_with_all = ["select", "exclude"])]
        job: Option<String>,
        /// Most steps running at once.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
        concurrency: u32,
        /// Partition to materialize (partitioned assets); repeat or use commas for a range run.
        #[arg(long, value_delimiter = ',')]
        partition: Vec<String>,
    },
    /// Show each asset's staleness and latest materialization.
    Status {
        /// Which assets (default: every asset).
        #[command(flatten)]
        selection: SelectArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Backfill a selection over partitions, or manage backfills.
    Backfill(backfill::BackfillArgs),
    /// Show an asset's partitions as status ranges.
    Partitions {
        /// The asset.
        asset: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add keys to a dynamic partitions definition.
    AddPartitions {
        /// The dynamic partitions definition's name.
        name: String,
        /// Keys to add.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Run the daemon: schedules, sensors, automation, the run queue, requested backfills.
    Daemon {
        /// Seconds between ticks.
        #[arg(long, default_value_t = 30)]
        interval: u64,
        /// Tick once, wait for what it launched, and exit.
        #[arg(long)]
        once: bool,
        /// Most runs in flight at once.
        #[arg(long, default_value_t = 10)]
        max_concurrent_runs: usize,
        /// A per-tag limit, `KEY=VALUE:N` or `KEY:N` (repeatable).
        #[arg(long, value_parser = parse_tag_limit)]
        tag_limit: Vec<crate::daemon::TagLimit>,
    },
    /// Schedules.
    Schedule {
        /// What to do.
        #[command(subcommand)]
        command: ScheduleCommand,
    },
    /// Recent schedule, sensor and automation ticks.
    Ticks {
        /// Only this instigator (e.g. `schedule:nightly`).
        #[arg(long)]
        instigator: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// Parse a dbt-style SQL project: nodes, dependencies, errors with file:line:column.
    Parse(SqlArgs),
    /// Compile a SQL project: `target/compiled/` and `target/manifest.json`.
    Compile(SqlArgs),
    /// List recent runs.
    Runs {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: i64,
        /// Only runs with this status (QUEUED, STARTED, SUCCESS, FAILURE, CANCELED).
        #[arg(long)]
        status: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Inspect one run.
    Run {
        /// What to do.
        #[command(subcommand)]
        command: RunCommand,
    },
    /// Benchmarks (print one JSON line last).
    Bench {
        /// Which benchmark.
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
}

/// `--select` / `--exclude`, shared by every command that takes a selection.
#[derive(Debug, clap::Args)]
pub struct SelectArgs {
    /// Selection expression (repeatable; union). See `rainbow_engine::selection` for the grammar.
    #[arg(long, short)]
    pub select: Vec<String>,
    /// Assets to leave out, same grammar (repeatable).
    #[arg(long)]
    pub exclude: Vec<String>,
}

/// Options of the SQL project commands.
#[derive(Debug, clap::Args)]
pub struct SqlArgs {
    /// The project directory (holding dbt_project.yml).
    #[arg(long, default_value = ".")]
    pub project_dir: PathBuf,
    /// Variables overriding the project's, as JSON or YAML (`{"key": "value"}`).
    #[arg(long)]
    pub vars: Option<String>,
    /// Warehouse type for dispatched macros: `datafusion` (default) or `bigquery`.
    #[arg(long, default_value = "datafusion")]
    pub target_type: String,
}

impl SqlArgs {
    fn load(
        &self,
    ) -> Result<(
        rainbow_sql::Project,
        rainbow_sql::Manifest,
        rainbow_sql::CompileOptions,
    )> {
        let project = rainbow_sql::Project::load(&self.project_dir)?;
        let vars = match &self.vars {
            None => Default::default(),
            Some(text) => serde_norway::from_str::<
                std::collections::BTreeMap<String, serde_json::Value>,
            >(text)
            .map_err(|e| Error::Config {
                location: "--vars".into(),
                message: format!("expected a mapping such as '{{\"key\": 1}}': {e}"),
            })?,
        };
        let options = rainbow_sql::CompileOptions {
            target_type: self.target_type.clone(),
            vars,
            run_started_at: chrono::Utc::now().to_rfc3339(),
            ..Default::default()
        };
        let manifest = rainbow_sql::parse(&project, &options)?;
        Ok((project, manifest, options))
    }
}

/// `rainbow schedule …`
#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Schedules with their next tick times.
    List,
}

fn parse_tag_limit(text: &str) -> std::result::Result<crate::daemon::TagLimit, String> {
    let (tag, limit) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("`{text}`: expected KEY=VALUE:N or KEY:N"))?;
    let limit: usize = limit
        .parse()
        .map_err(|_| format!("`{text}`: the limit `{limit}` is not a number"))?;
    let (key, value) = match tag.split_once('=') {
        Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
        None => (tag.to_owned(), None),
    };
    if key.is_empty() {
        return Err(format!("`{text}`: the tag key is empty"));
    }
    Ok(crate::daemon::TagLimit { key, value, limit })
}

/// `rainbow run …`
#[derive(Debug, Subcommand)]
pub enum RunCommand {
    /// A run's record and its events.
    Show {
        /// The run id.
        run_id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Entry point for a code location's binary: parses arguments, runs, maps errors to exit codes.
pub fn main(defs: Definitions) -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli, defs)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::from(2)
        }
    }
}

fn init_tracing() {
    let level = std::env::var("RAINBOW_LOG")
        .ok()
        .and_then(|v| v.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    // Rainbow's own crates at the chosen level; libraries (DataFusion, Delta, sqlx) only warn
    // unless debugging was asked for.
    let others = if level >= tracing::Level::DEBUG {
        level
    } else {
        level.min(tracing::Level::WARN)
    };
    let filter = tracing_subscriber::filter::Targets::new()
        .with_target("rainbow", level)
        .with_default(others);
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let _ = tracing_subscriber::registry()
        .with(layer)
        .with(filter)
        .try_init();
}

impl Cli {
    fn config(&self) -> Result<RainbowConfig> {
        match &self.config {
            Some(path) => RainbowConfig::load_required(path),
            None => RainbowConfig::load(std::path::Path::new("rainbow.toml")),
        }
    }

    async fn storage(&self) -> Result<Storage> {
        let storage = match &self.database_url {
            Some(url) => Storage::connect(url).await?,
            None => Storage::open_sqlite_dir(&self.home).await?,
        };
        let policy = MonitorPolicy {
            heartbeat_timeout: Duration::from_secs(self.heartbeat_timeout),
        };
        fail_orphaned_runs(&storage, policy).await?;
        Ok(storage)
    }
}

/// Runs a parsed command line against `defs`.
pub async fn run(cli: Cli, defs: Definitions) -> Result<ExitCode> {
    if let Command::Bench { command } = &cli.command {
        return bench::run(command).await;
    }
    let graph = Arc::new(AssetGraph::build(defs)?);
    match &cli.command {
        Command::List { selection, json } | Command::Status { selection, json } => {
            let set = graph.select(&selection.select, &selection.exclude)?;
            let storage = cli.storage().await?;
            let statuses = crate::staleness::asset_statuses(&graph, &storage, &set).await?;
            if matches!(cli.command, Command::List { .. }) {
                output::list(&graph, &statuses, *json)?;
            } else {
                output::status(&statuses, *json)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Runs {
            limit,
            status,
            json,
        } => {
            let status = status.as_deref().map(str::parse).transpose()?;
            let storage = cli.storage().await?;
            let runs = storage
                .list_runs(&RunFilter {
                    status,
                    limit: Some(*limit),
                })
                .await?;
            output::runs(&runs, *json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            command: RunCommand::Show { run_id, json },
        } => {
            let storage = cli.storage().await?;
            let run = storage
                .get_run(run_id)
                .await?
                .ok_or_else(|| Error::NotFound {
                    kind: "run",
                    id: run_id.clone(),
                })?;
            let events = storage.events_for_run(run_id, 0, i64::MAX).await?;
            output::run_show(&run, &events, *json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Backfill(args) => backfill::run(&cli, graph.clone(), args).await,
        Command::Parse(args) | Command::Compile(args) => {
            let (project, mut manifest, options) = args.load()?;
            let count =
                |k: rainbow_sql::NodeKind| manifest.nodes.iter().filter(|n| n.kind == k).count();
            let summary = format!(
                "{}: {} models, {} seeds, {} snapshots, {} singular tests, {} generic tests, {} sources",
                manifest.project,
                count(rainbow_sql::NodeKind::Model),
                count(rainbow_sql::NodeKind::Seed),
                count(rainbow_sql::NodeKind::Snapshot),
                count(rainbow_sql::NodeKind::Test),
                project.column_tests.len(),
                manifest.sources.len()
            );
            let target = args.project_dir.join("target");
            rainbow_sql::compile(&mut manifest);
            // Data tests are checked on parse too, so a bad test declaration fails early.
            let tests = rainbow_sql::data_tests(&project, &manifest, &options)?;
            if matches!(cli.command, Command::Compile(_)) {
                rainbow_sql::write_target(&manifest, &target)?;
                rainbow_sql::write_tests(&tests, &manifest.project, &target)?;
                println!(
                    "{summary}; compiled to {}",
                    target.join("compiled").display()
                );
            } else {
                rainbow_sql::write_manifest(&manifest, &target)?;
                println!(
                    "{summary}; manifest at {}",
                    target.join("manifest.json").display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Daemon {
            interval,
            once,
            max_concurrent_runs,
            tag_limit,
        } => {
            let storage = cli.storage().await?;
            let executor = Executor::new(graph.clone(), storage, &cli.config()?)?;
            let options = crate::daemon::DaemonOptions {
                max_concurrent_runs: *max_concurrent_runs,
                tag_limits: tag_limit.clone(),
                ..Default::default()
            };
            let daemon =
                crate::daemon::Daemon::new(executor, Arc::new(crate::daemon::SystemClock), options);
            if *once {
                let report = daemon.tick().await?;
                daemon.wait_idle().await;
                println!(
                    "tick: {} run(s) requested, {} launched, {} backfill(s) started",
                    report.requested.len(),
                    report.launched.len(),
                    report.backfills.len()
                );
            } else {
                tracing::info!("daemon started; ticking every {interval}s (Ctrl-C stops)");
                daemon
                    .run(Duration::from_secs((*interval).max(1)), cancel_on_ctrl_c())
                    .await?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Schedule {
            command: ScheduleCommand::List,
        } => {
            output::schedules(&graph, chrono::Utc::now())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Ticks { instigator, limit } => {
            let storage = cli.storage().await?;
            let ticks = storage.ticks(instigator.as_deref(), *limit).await?;
            output::ticks(&ticks);
            Ok(ExitCode::SUCCESS)
        }
        Command::Partitions { asset, json } => {
            let storage = cli.storage().await?;
            backfill::show_partitions(&graph, &storage, asset, *json).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::AddPartitions { name, keys } => {
            let storage = cli.storage().await?;
            storage.add_dynamic_partitions(name, keys).await?;
            println!("added {} key(s) to dynamic partitions `{name}`", keys.len());
            Ok(ExitCode::SUCCESS)
        }
        Command::Materialize {
            selection: SelectArgs { select, exclude },
            job,
            concurrency,
            partition,
        } => {
            let (set, expression, job_name) = match job {
                Some(name) => {
                    let job = graph.job(name).ok_or_else(|| {
                        let names: Vec<&str> =
                            graph.jobs().iter().map(|j| j.name.as_str()).collect();
                        Error::selection(
                            format!("--job {name}"),
                            format!(
                                "unknown job; jobs: {}",
                                if names.is_empty() {
                                    "none".into()
                                } else {
                                    names.join(", ")
                                }
                            ),
                        )
                    })?;
                    (
                        graph.select_job(job)?,
                        job.selection.clone(),
                        Some(name.clone()),
                    )
                }
                None if select.is_empty() => {
                    return Err(Error::selection(
                        "",
                        "give --select SELECTION (e.g. `*`) or --job NAME",
                    ));
                }
                None => (graph.select(select, exclude)?, select.join(" "), None),
            };
            if set.is_empty() {
                return Err(Error::selection(
                    expression,
                    "selects no assets once the exclusions are applied",
                ));
            }
            let storage = cli.storage().await?;
            let config = cli.config()?;
            let executor = Executor::new(graph.clone(), storage, &config)?;
            let cancel = cancel_on_ctrl_c();
            let bar = progress_bar(set.len());
            let result = executor
                .materialize(
                    &set,
                    RunOptions {
                        concurrency: *concurrency as usize,
                        partitions: partition.clone(),
                        job_name,
                        selection: expression,
                        ..RunOptions::default()
                    },
                    cancel,
                    Some(bar.callback()),
                )
                .await?;
            bar.finish();
            output::run_result(&result);
            Ok(if result.success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Bench { .. } => Err(Error::Internal("bench handled above".into())),
    }
}

/// A token canceled by the first Ctrl-C (SIGINT): the run stops its steps and records itself as
/// canceled.
pub(crate) fn cancel_on_ctrl_c() -> CancellationToken {
    let cancel = CancellationToken::new();
    let on_ctrl_c = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("canceling the run (steps in flight are stopped); Ctrl-C again to exit now");
            on_ctrl_c.cancel();
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!(
                    "exiting without waiting; the run will be marked failed on the next start"
                );
                std::process::exit(130);
            }
        }
    });
    cancel
}

/// A progress bar on a terminal, tracing lines otherwise.
struct Bar(pub(super) Option<indicatif::ProgressBar>);

fn progress_bar(total: usize) -> Bar {
    if !std::io::stderr().is_terminal() {
        return Bar(None);
    }
    let bar = indicatif::ProgressBar::new(total as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] [{bar:40}] {pos}/{len} {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    Bar(Some(bar))
}

impl Bar {
    fn callback(&self) -> ProgressFn {
        let bar = self.0.clone();
        Arc::new(move |p: &Progress| {
            let what = match &p.status {
                StepStatus::Succeeded => "succeeded".to_owned(),
                StepStatus::Failed(e) => format!("FAILED: {e}"),
                StepStatus::Skipped(r) => format!("skipped: {r}"),
                StepStatus::Canceled => "canceled".to_owned(),
                StepStatus::NotStarted => "not started".to_owned(),
            };
            match &bar {
                Some(bar) => {
                    bar.set_length(p.total as u64);
                    bar.set_position(p.done as u64);
                    bar.set_message(format!("{} {what}", p.step));
                    if !matches!(p.status, StepStatus::Succeeded) {
                        bar.println(format!("{} {what}", p.step));
                    }
                }
                None => match &p.status {
                    StepStatus::Succeeded => {
                        tracing::info!("[{}/{}] {} {what}", p.done, p.total, p.step)
                    }
                    _ => tracing::warn!("[{}/{}] {} {what}", p.done, p.total, p.step),
                },
            }
        })
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
