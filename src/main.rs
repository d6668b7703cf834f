//! The `rainbow` binary: the Rainbow code location's command line — one parser composed of the
//! engine's commands over the code location's definitions, dbt's commands (`seed`, `run`,
//! `snapshot`, `test`, `build`, `parse`, `compile`, `query`), `demo` (the batch layer end to
//! end), `seed-data` (the Rainbow DB generator), `ui` and `dev` (the web UI; cargo feature
//! `ui`), `cdc` and `speed` (the speed layer; cargo feature `kafka`) and every benchmark under
//! `bench`. Both features are default; without them (`--no-default-features`) the binary
//! builds about 6 CPU-minutes sooner (356 CPU-s measured: no leptos, no librdkafka) and those
//! commands fail naming their feature. Exit codes are decided in one place
//! ([`rainbow_engine::cli::exit_code`]): 0 ok, 1 a run failed or was canceled, 2 bad input.
//!
//! The code location is the Rainbow pipeline ([`rainbow_assets::pipeline`]), configured by
//! the `[pipeline]` section of the configuration; `RAINBOW_CODE_LOCATION=quickstart` serves the quickstart example
//! instead.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use rainbow_engine::cli::GlobalArgs;

mod bench_warehouse;
mod demo;
mod seed_data;
#[cfg(feature = "kafka")]
mod stream;
#[cfg(feature = "ui")]
mod ui;

/// Rainbow: asset-graph orchestration with dbt-style SQL models, and the Rainbow data platform.
#[derive(Debug, Parser)]
#[command(name = "rainbow", version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Engine(rainbow_engine::cli::Command),
    #[command(flatten)]
    Dbt(rainbow_dbt::cli::DbtCommand),
    /// The batch layer end to end on the embedded default: generate a history, extract it night
    /// by night, backfill, build, check, export, print the analyses.
    Demo(demo::DemoArgs),
    /// Fill a Rainbow DB with a deterministic, realistic e-commerce history.
    SeedData(seed_data::SeedDataArgs),
    /// Serve the web UI (lineage, assets, partitions, backfills, runs, schedules, dashboard).
    #[cfg(feature = "ui")]
    Ui(ui::UiArgs),
    /// Serve the web UI (not in this build: cargo feature `ui`).
    #[cfg(not(feature = "ui"))]
    Ui(NotBuilt),
    /// The web UI and the daemon in one process (runs what the UI launches), as `dagster dev`.
    #[cfg(feature = "ui")]
    Dev(ui::DevArgs),
    /// The web UI and the daemon in one process (not in this build: cargo feature `ui`).
    #[cfg(not(feature = "ui"))]
    Dev(NotBuilt),
    /// Speed layer: capture the Rainbow DB's changes (PostgreSQL, wal2json) into Kafka.
    #[cfg(feature = "kafka")]
    Cdc(stream::CdcArgs),
    /// Speed layer: change data capture (not in this build: cargo feature `kafka`).
    #[cfg(not(feature = "kafka"))]
    Cdc(NotBuilt),
    /// Speed layer: write the change topics into the warehouse's speed tables.
    #[cfg(feature = "kafka")]
    Speed(stream::SpeedArgs),
    /// Speed layer: the speed tables' sink (not in this build: cargo feature `kafka`).
    #[cfg(not(feature = "kafka"))]
    Speed(NotBuilt),
    /// Benchmarks (each prints one JSON line last; see BENCHMARKS.md).
    Bench {
        #[command(subcommand)]
        command: Bench,
    },
}

#[derive(Debug, Subcommand)]
enum Bench {
    #[command(flatten)]
    Engine(rainbow_engine::cli::bench::BenchCommand),
    #[command(flatten)]
    Dbt(rainbow_dbt::cli::BenchCommand),
    /// Times the whole batch layer (nightly extracts + backfill) and its orchestration overhead.
    Pipeline(demo::BenchArgs),
    /// The SQL project on the embedded warehouse against the same compiled SQL on DuckDB over
    /// the same Parquet files (needs a Python with duckdb and sqlglot).
    Warehouse(bench_warehouse::BenchWarehouseArgs),
    /// Server time of the UI's lineage, asset and partitions pages at 1,000 and 10,000 assets.
    #[cfg(feature = "ui")]
    Ui(ui::BenchUiArgs),
    /// The UI's pages (not in this build: cargo feature `ui`).
    #[cfg(not(feature = "ui"))]
    Ui(NotBuilt),
    /// The speed layer end to end: PostgreSQL commit → visible in the speed tables (latency at a
    /// steady rate, then burst throughput).
    #[cfg(feature = "kafka")]
    Cdc(stream::BenchCdcArgs),
    /// The speed layer end to end (not in this build: cargo feature `kafka`).
    #[cfg(not(feature = "kafka"))]
    Cdc(NotBuilt),
}

/// The arguments of a command this build leaves out (its cargo feature was not enabled): taken
/// whole, so the command fails by naming the feature rather than as an unknown flag.
#[cfg(not(all(feature = "ui", feature = "kafka")))]
#[derive(Debug, clap::Args)]
struct NotBuilt {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    _args: Vec<String>,
}

/// The error of a command left out of this build.
#[cfg(not(all(feature = "ui", feature = "kafka")))]
fn not_built(command: &str, feature: &str) -> anyhow::Result<ExitCode> {
    anyhow::bail!(
        "`rainbow {command}` is not in this build: it was compiled without the cargo feature \
         `{feature}` (the default features include it: `cargo build --release --bin rainbow`)"
    )
}

/// mimalloc: building a model allocates and frees many small buffers (plans, Arrow arrays,
/// Parquet pages); measured faster than glibc's allocator (BENCHMARKS.md). Its version 2
/// without transparent huge pages (Cargo features `v2`, `no_thp`): version 3 keeps freed memory
/// committed for a second and eagerly commits arenas, which took the demo's SQL project to
/// 0.78 GB peak against 0.57 GB with version 2 (DuckDB: 0.57 GB), at the same speed; huge pages
/// cost 16 % of the cycles in the kernel zeroing them (issue 17).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    rainbow_engine::cli::init_tracing();
    let result = rainbow_engine::cli::runtime()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(cli)));
    // exit_code recognizes a closed pipe (`rainbow demo | head`) by its io::Error, which
    // anyhow's boxing hides: handed over as itself. Any other error keeps its context (a
    // downcast would strip "cannot start …" from an io::Error).
    rainbow_engine::cli::exit_code(result.map_err(|e| {
        let closed_pipe = e
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe);
        if closed_pipe {
            Box::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
                as Box<dyn std::error::Error + Send + Sync>
        } else {
            e.into()
        }
    }))
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let home = &cli.global.home;
    match &cli.command {
        Command::Engine(command) => {
            Ok(rainbow_engine::cli::run(&cli.global, command, code_location(&cli.global)?).await?)
        }
        Command::Dbt(command) => Ok(rainbow_dbt::cli::run(&cli.global, command, &hub_index).await?),
        Command::Demo(args) => demo::demo(home, args).await,
        Command::SeedData(args) => seed_data::run(home, args).await,
        #[cfg(feature = "ui")]
        Command::Ui(args) => ui::ui(&cli.global, code_location(&cli.global)?, args).await,
        #[cfg(feature = "ui")]
        Command::Dev(args) => ui::dev(&cli.global, code_location(&cli.global)?, args).await,
        #[cfg(not(feature = "ui"))]
        Command::Ui(_) => not_built("ui", "ui"),
        #[cfg(not(feature = "ui"))]
        Command::Dev(_) => not_built("dev", "ui"),
        #[cfg(feature = "kafka")]
        Command::Cdc(args) => stream::cdc(&cli.global, args).await,
        #[cfg(feature = "kafka")]
        Command::Speed(args) => stream::speed(&cli.global, args).await,
        #[cfg(not(feature = "kafka"))]
        Command::Cdc(_) => not_built("cdc", "kafka"),
        #[cfg(not(feature = "kafka"))]
        Command::Speed(_) => not_built("speed", "kafka"),
        Command::Bench { command } => match command {
            Bench::Engine(c) => Ok(rainbow_engine::cli::bench::run(c).await?),
            Bench::Dbt(c) => Ok(rainbow_dbt::cli::bench(c).await?),
            Bench::Pipeline(args) => demo::bench(args).await,
            Bench::Warehouse(args) => bench_warehouse::bench(args).await,
            #[cfg(feature = "ui")]
            Bench::Ui(args) => ui::bench(args).await,
            #[cfg(not(feature = "ui"))]
            Bench::Ui(_) => not_built("bench ui", "ui"),
            #[cfg(feature = "kafka")]
            Bench::Cdc(args) => stream::bench(args).await,
            #[cfg(not(feature = "kafka"))]
            Bench::Cdc(_) => not_built("bench cdc", "kafka"),
        },
    }
}

/// The code location's definitions: the Rainbow pipeline configured by the `[pipeline]` section,
/// or the quickstart when `RAINBOW_CODE_LOCATION=quickstart`.
fn code_location(global: &GlobalArgs) -> anyhow::Result<rainbow_engine::Definitions> {
    if std::env::var("RAINBOW_CODE_LOCATION").is_ok_and(|v| v == "quickstart") {
        return Ok(rainbow_examples::quickstart::definitions());
    }
    let config = global.config()?;
    rainbow_assets::pipeline::PipelineSettings::load(&global.home, &config)
        .and_then(|settings| rainbow_assets::pipeline::definitions(&settings))
        .context("loading the Rainbow code location")
}

/// `rainbow deps`' view of the dbt package hub: one GET of a package's index (15 s at most).
fn hub_index(
    url: String,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Option<String>, String>> + Send>> {
    Box::pin(async move {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(15))
            .build()
            .map_err(|e| e.to_string())?;
        let response = client.get(&url).send().await.map_err(|e| e.to_string())?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = response.error_for_status().map_err(|e| e.to_string())?;
        response.text().await.map(Some).map_err(|e| e.to_string())
    })
}
