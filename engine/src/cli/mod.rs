//! The `rainbow` command line. A code location's binary calls [`main`] with its
//! [`Definitions`]; every command shares the global options (state directory, database URL,
//! config file) and the selection language.
//!
//! Exit codes: 0 success, 1 a run failed or was canceled, 2 bad input or an engine error.

/// `println!` that returns an error instead of panicking: a closed pipe (`rainbow list |
/// head`) ends the output quietly ([`exit_code`]).
macro_rules! outln {
    () => {
        outln!("")
    };
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*).map_err(|source| $crate::error::Error::Io {
            path: "<stdout>".into(),
            source,
        })
    }};
}

mod backfill;
pub mod bench;
mod output;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::RainbowConfig;
use crate::definitions::Definitions;
use crate::error::{Error, Result};
use crate::executor::{Executor, Progress, ProgressFn, RunOptions, StepStatus, error_chain};
use crate::graph::AssetGraph;
use crate::monitor::{MonitorPolicy, fail_orphaned_runs};
use crate::storage::{RunFilter, Storage};

/// The options every command shares. `global`, so they go anywhere on the line
/// (`rainbow --home DIR status` and `rainbow status --home DIR` are the same). A code
/// location's binary flattens them into its own parser next to its own options.
#[derive(Debug, Clone, clap::Args)]
pub struct GlobalArgs {
    /// State directory; the embedded SQLite storage lives here.
    #[arg(long, env = "RAINBOW_HOME", default_value = ".rainbow", global = true)]
    pub home: PathBuf,
    /// Run storage URL (`sqlite://PATH` or `postgres://…`; config `storage.database_url`);
    /// defaults to SQLite under --home.
    #[arg(long, env = "RAINBOW_DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// Project config file (resources, pipeline, storage), layered over `<home>/rainbow.toml`;
    /// default `./rainbow.toml` if it exists.
    #[arg(long, env = "RAINBOW_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Seconds without a heartbeat after which a run is considered dead (config
    /// `storage.heartbeat_timeout`; default 120).
    #[arg(long, env = "RAINBOW_HEARTBEAT_TIMEOUT", global = true)]
    pub heartbeat_timeout: Option<u64>,
}

/// The command line of a code location that adds no commands of its own: the engine's
/// commands and `bench`.
#[derive(Debug, Parser)]
#[command(name = "rainbow", version, about = "Rainbow: asset-graph orchestration", long_about = None)]
pub struct Cli {
    /// Options of every command.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command.
    #[command(subcommand)]
    pub command: StandaloneCommand,
}

/// [`Cli`]'s commands: the engine's, plus its benchmarks.
#[derive(Debug, Subcommand)]
pub enum StandaloneCommand {
    /// An engine command.
    #[command(flatten)]
    Engine(Command),
    /// Benchmarks (print one JSON line last).
    Bench {
        /// Which benchmark.
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
}

/// The engine's commands. A code location's binary flattens them into its own command enum
/// (`#[command(flatten)]`) next to its own commands.
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
    /// List recent runs (`runs show RUN_ID`: one run and its event log).
    Runs {
        /// `show RUN_ID`.
        #[command(subcommand)]
        command: Option<RunsCommand>,
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

/// `rainbow runs …`
#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// A run's record and its events.
    Show {
        /// The run id.
        run_id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `storage.heartbeat_timeout` in seconds, default 120.
fn heartbeat_timeout(config: &RainbowConfig) -> Result<u64> {
    Ok(config
        .get::<u64>("storage.heartbeat_timeout")?
        .unwrap_or(120))
}

/// Entry point for a code location's binary that adds no commands: parses [`Cli`], runs, and
/// maps the outcome to an exit code ([`exit_code`]).
pub fn main(defs: Definitions) -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    exit_code(runtime().and_then(|rt| {
        rt.block_on(async {
            match &cli.command {
                StandaloneCommand::Engine(command) => run(&cli.global, command, defs).await,
                StandaloneCommand::Bench { command } => bench::run(command).await,
            }
        })
    }))
}

/// The one place exit codes are decided: `Ok(code)` as returned (0 success, 1 a run failed
/// or was canceled); any error is printed with its cause chain and exits 2 (bad input, or the
/// engine could not do what was asked). Argument errors exit 2 too (clap).
pub fn exit_code<E>(result: std::result::Result<ExitCode, E>) -> ExitCode
where
    E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
{
    match result {
        Ok(code) => code,
        Err(e) => {
            let e: Box<dyn std::error::Error + Send + Sync> = e.into();
            // A closed pipe (`rainbow list | head`) is not an error of the command.
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e.as_ref());
            while let Some(c) = cause {
                if c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
                {
                    return ExitCode::SUCCESS;
                }
                cause = c.source();
            }
            eprintln!("error: {}", error_chain(e.as_ref()));
            ExitCode::from(2)
        }
    }
}

/// The multi-threaded tokio runtime every command runs on.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the tokio runtime: {e}")))
}

/// Logs to stderr: Rainbow's crates at `RAINBOW_LOG` (default info), libraries at warn unless
/// debugging. Call once, first.
pub fn init_tracing() {
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
    let mut filter = tracing_subscriber::filter::Targets::new()
        .with_target("rainbow", level)
        .with_default(others);
    if level < tracing::Level::DEBUG {
        // Delta's kernel logs an expected miss (a table's first write finds no log yet) as an
        // ERROR span; real Delta failures reach the user as errors of the step or command.
        for kernel in ["delta_kernel", "buoyant_kernel", "buoyant_kernel_engine"] {
            filter = filter.with_target(kernel, tracing_subscriber::filter::LevelFilter::OFF);
        }
    }
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

impl GlobalArgs {
    /// The heartbeat timeout in seconds: flag, environment, `storage.heartbeat_timeout`, 120.
    pub fn heartbeat_timeout(&self) -> Result<u64> {
        heartbeat_timeout(&self.config()?)
    }

    /// The configuration ([`RainbowConfig::load`]) with these flags on top.
    pub fn config(&self) -> Result<RainbowConfig> {
        let mut config = RainbowConfig::load(&self.home, self.config.as_deref())?;
        if let Some(url) = &self.database_url {
            config = config.set("storage.database_url", url);
        }
        if let Some(secs) = self.heartbeat_timeout {
            config = config.set("storage.heartbeat_timeout", secs);
        }
        Ok(config)
    }

    /// Opens run storage (`--database-url`, else SQLite under `--home`) and fails the runs
    /// whose process died (no heartbeat within `--heartbeat-timeout`).
    pub async fn storage(&self) -> Result<Storage> {
        let config = self.config()?;
        let storage = match config.get::<String>("storage.database_url")? {
            Some(url) => Storage::connect(&url).await?,
            None => Storage::open_sqlite_dir(&self.home).await?,
        };
        let policy = MonitorPolicy {
            heartbeat_timeout: Duration::from_secs(heartbeat_timeout(&config)?),
        };
        fail_orphaned_runs(&storage, policy).await?;
        Ok(storage)
    }
}

/// Runs an engine command against `defs`: `Ok(1)` when a run failed or was canceled.
pub async fn run(cli: &GlobalArgs, command: &Command, defs: Definitions) -> Result<ExitCode> {
    let graph = Arc::new(AssetGraph::build(defs)?);
    match command {
        Command::List { selection, json } | Command::Status { selection, json } => {
            let set = graph.select(&selection.select, &selection.exclude)?;
            let storage = cli.storage().await?;
            let statuses = crate::staleness::asset_statuses(&graph, &storage, &set).await?;
            if matches!(command, Command::List { .. }) {
                output::list(&graph, &statuses, *json)?;
            } else {
                output::status(&statuses, *json)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Runs {
            command: Some(RunsCommand::Show { run_id, json }),
            ..
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
        Command::Runs {
            command: None,
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
                    ..Default::default()
                })
                .await?;
            output::runs(&runs, *json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Backfill(args) => backfill::run(cli, graph.clone(), args).await,
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
                outln!(
                    "tick: {} run(s) requested, {} launched, {} backfill(s) started",
                    report.requested.len(),
                    report.launched.len(),
                    report.backfills.len()
                )?;
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
            output::ticks(&ticks)?;
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
            outln!("added {} key(s) to dynamic partitions `{name}`", keys.len())?;
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
            output::run_result(&result)?;
            Ok(if result.success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

/// A token canceled by the first Ctrl-C (SIGINT): the run stops its steps and records itself as
/// canceled.
pub fn cancel_on_ctrl_c() -> CancellationToken {
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

/// Run progress: a progress bar on a terminal, tracing lines otherwise.
pub struct Bar(Option<indicatif::ProgressBar>);

/// A [`Bar`] for a run of `total` steps.
pub fn progress_bar(total: usize) -> Bar {
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
    /// The executor callback that moves the bar (failures and skips are printed above it).
    pub fn callback(&self) -> ProgressFn {
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

    /// Clears the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
