//! `rainbow ui` (the web UI over this code location) and `rainbow dev` (the UI plus the daemon
//! in one process, as `dagster dev`), and what the UI needs from the Rainbow code location:
//! the dashboard's six analyses read from the warehouse, and the SQL models' compiled SQL.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rainbow_assets::pipeline::PipelineSettings;
use rainbow_engine::cli::GlobalArgs;
use rainbow_engine::daemon::{Daemon, DaemonOptions, SystemClock};
use rainbow_engine::{AssetGraph, AssetKey, Definitions, Executor};
use rainbow_warehouse::Warehouse;
use rainbow_warehouse::datafusion::arrow::array::RecordBatch;
use rainbow_warehouse::datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use rainbow_web_ui::{Analysis, CodeLocationUi, DashboardFuture, UiOptions, UiState};
use tokio_util::sync::CancellationToken;

/// `rainbow ui`'s options.
#[derive(Debug, clap::Args)]
pub struct UiArgs {
    /// Address to serve on (a non-loopback address needs RAINBOW_UI_TOKEN).
    #[arg(long, default_value = "127.0.0.1:3000")]
    addr: SocketAddr,
    /// Operator token required by every request (header `Authorization: Bearer`, or log in).
    #[arg(long, env = "RAINBOW_UI_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// `rainbow dev`'s options: the UI's, plus the daemon's tick interval.
#[derive(Debug, clap::Args)]
pub struct DevArgs {
    #[command(flatten)]
    ui: UiArgs,
    /// Seconds between daemon ticks.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    interval: u64,
    /// Most runs in flight at once.
    #[arg(long, default_value_t = 10)]
    max_concurrent_runs: usize,
}

/// The Rainbow pipeline's dashboard and compiled SQL.
struct RainbowLocation {
    warehouse: String,
    compiled: HashMap<AssetKey, String>,
}

impl RainbowLocation {
    /// Reads the pipeline's settings and compiles its SQL project once (a failure only costs
    /// the asset pages their SQL: logged, not fatal).
    fn load(global: &GlobalArgs) -> Option<Arc<dyn CodeLocationUi>> {
        let config = global.config().ok()?;
        let settings = PipelineSettings::load(&global.home, &config).ok()?;
        let compiled = match compiled_sql(&settings) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("the SQL models' compiled SQL is not shown: {e:#}");
                HashMap::new()
            }
        };
        Some(Arc::new(RainbowLocation {
            warehouse: settings.warehouse.clone(),
            compiled,
        }))
    }
}

fn compiled_sql(settings: &PipelineSettings) -> anyhow::Result<HashMap<AssetKey, String>> {
    let project = settings.sql_project()?;
    let loaded = rainbow_dbt::Project::load(project.dir())?;
    let mut manifest =
        rainbow_dbt::compile::parse(&loaded, &project.compile_options(Default::default()))?;
    rainbow_dbt::compile::compile(&mut manifest);
    Ok(manifest
        .nodes
        .into_iter()
        .filter_map(|n| {
            let key = AssetKey::new([n.schema.as_str(), n.relation.as_str()]);
            n.compiled.map(|sql| (key, sql))
        })
        .collect())
}

/// One analysis as text cells; the chart plots the last numeric column by the first text one.
fn analysis(title: &str, batches: &[RecordBatch]) -> anyhow::Result<Analysis> {
    use rainbow_warehouse::datafusion::arrow::datatypes::DataType;
    let Some(schema) = batches.first().map(|b| b.schema()) else {
        return Ok(Analysis {
            title: title.to_owned(),
            columns: Vec::new(),
            rows: Vec::new(),
            chart: None,
        });
    };
    let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let numeric = |t: &DataType| t.is_numeric();
    let label = schema.fields().iter().position(|f| {
        matches!(
            f.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        )
    });
    // The measure: the first column named like an amount, then profit, sales, quantity, count
    // (in that order of preference); else the last number that is not a rank, id or ordinal.
    let ordinal =
        |name: &str| name.ends_with("_rank") || name.ends_with("_id") || name.ends_with("_number");
    let fields = schema.fields();
    let value = ["amount", "profit", "sales", "quantity", "count"]
        .iter()
        .find_map(|m| {
            fields
                .iter()
                .position(|f| numeric(f.data_type()) && f.name().contains(m) && !ordinal(f.name()))
        })
        .or_else(|| {
            fields
                .iter()
                .rposition(|f| numeric(f.data_type()) && !ordinal(f.name()))
        });
    let mut rows = Vec::new();
    let options = FormatOptions::default();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        let is_number: Vec<bool> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| numeric(f.data_type()) && !f.name().ends_with("_id"))
            .collect();
        for i in 0..batch.num_rows() {
            rows.push(
                formatters
                    .iter()
                    .zip(&is_number)
                    .map(|(f, &n)| {
                        let text = f.value(i).to_string();
                        if n { group_digits(&text) } else { text }
                    })
                    .collect(),
            );
        }
    }
    let chart = match (label, value) {
        (Some(l), Some(v)) if rows.len() > 1 => Some((l, v)),
        _ => None,
    };
    Ok(Analysis {
        title: title.to_owned(),
        columns,
        rows,
        chart,
    })
}

/// `1234567.500000` → `1,234,567.5`: thousands separated, trailing fractional zeros dropped
/// (the value is unchanged; the dashboard parses numbers back ignoring the commas).
fn group_digits(text: &str) -> String {
    let (sign, rest) = match text.strip_prefix('-') {
        Some(r) => ("-", r),
        None => ("", text),
    };
    let (int, frac) = rest.split_once('.').unwrap_or((rest, ""));
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return text.to_owned();
    }
    let mut grouped = String::with_capacity(int.len() + int.len() / 3);
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{frac}")
    }
}

impl CodeLocationUi for RainbowLocation {
    fn analyses(&self) -> DashboardFuture<'_> {
        Box::pin(async move {
            let warehouse = Warehouse::open(&self.warehouse, "main")
                .await
                .map_err(|e| format!("opening the warehouse {}: {e}", self.warehouse))?;
            let mut out = Vec::new();
            for (title, sql) in crate::demo::ANALYSES {
                let batches = warehouse.query(sql, title).await.map_err(|e| {
                    format!(
                        "{title}: {} (run `rainbow demo` first?)",
                        rainbow_engine::error::error_chain(&e)
                    )
                })?;
                out.push(analysis(title, &batches).map_err(|e| format!("{title}: {e:#}"))?);
            }
            Ok(out)
        })
    }

    fn compiled_sql(&self, key: &AssetKey) -> Option<String> {
        self.compiled.get(key).cloned()
    }
}

/// The UI's state over this code location.
async fn state(
    global: &GlobalArgs,
    defs: Definitions,
    args: &UiArgs,
) -> anyhow::Result<(UiState, Arc<AssetGraph>)> {
    let graph = Arc::new(AssetGraph::build(defs)?);
    let storage = global.storage().await?;
    let options = UiOptions {
        token: args.token.clone().filter(|t| !t.is_empty()),
        heartbeat_timeout: Duration::from_secs(global.heartbeat_timeout()?),
        ..UiOptions::default()
    };
    let location = if std::env::var("RAINBOW_CODE_LOCATION").is_ok_and(|v| v == "quickstart") {
        None
    } else {
        RainbowLocation::load(global)
    };
    Ok((
        UiState::new(graph.clone(), storage, options, location),
        graph,
    ))
}

/// `rainbow ui`.
pub async fn ui(global: &GlobalArgs, defs: Definitions, args: &UiArgs) -> anyhow::Result<ExitCode> {
    let (state, _) = state(global, defs, args).await?;
    let server = rainbow_web_ui::bind(args.addr, state)
        .await
        .context("serving the UI")?;
    println!("Rainbow UI: http://{}/ (Ctrl-C stops)", server.local_addr());
    server
        .run(rainbow_engine::cli::cancel_on_ctrl_c())
        .await
        .context("serving the UI")?;
    Ok(ExitCode::SUCCESS)
}

/// `rainbow dev`: the UI and the daemon in one process; Ctrl-C stops both (the daemon puts
/// running backfills back to requested for the next one).
pub async fn dev(
    global: &GlobalArgs,
    defs: Definitions,
    args: &DevArgs,
) -> anyhow::Result<ExitCode> {
    let (state, graph) = state(global, defs, &args.ui).await?;
    let storage = state.storage().clone();
    // Bind first: a refused address or a busy port fails before the daemon starts anything.
    let server = rainbow_web_ui::bind(args.ui.addr, state)
        .await
        .context("serving the UI")?;
    let executor = Executor::new(graph, storage, &global.config()?)?;
    let daemon = Daemon::new(
        executor,
        Arc::new(SystemClock),
        DaemonOptions {
            max_concurrent_runs: args.max_concurrent_runs,
            ..DaemonOptions::default()
        },
    );
    let cancel: CancellationToken = rainbow_engine::cli::cancel_on_ctrl_c();
    let interval = Duration::from_secs(args.interval);
    let daemon_cancel = cancel.clone();
    let daemon_task = tokio::spawn(async move { daemon.run(interval, daemon_cancel).await });
    println!(
        "Rainbow dev: UI on http://{}/, daemon ticking every {}s (Ctrl-C stops both)",
        server.local_addr(),
        args.interval
    );
    let served = server.run(cancel.clone()).await;
    cancel.cancel();
    let daemon_result = daemon_task.await.context("the daemon task")?;
    served.context("serving the UI")?;
    daemon_result.context("the daemon")?;
    Ok(ExitCode::SUCCESS)
}

/// `rainbow bench ui`'s options.
#[derive(Debug, clap::Args)]
pub struct BenchUiArgs {
    /// Asset counts to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1_000usize, 10_000])]
    assets: Vec<usize>,
    /// Partitions of history of the partitioned asset.
    #[arg(long, default_value_t = 40_000)]
    partitions: usize,
    /// Timed requests per page after the first.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    repeat: u64,
}

/// `rainbow bench ui`: one table per asset count, then one JSON line.
pub async fn bench(args: &BenchUiArgs) -> anyhow::Result<ExitCode> {
    let mut reports = Vec::new();
    for &assets in &args.assets {
        let dir = tempfile::tempdir()?;
        let repeat = usize::try_from(args.repeat).unwrap_or(5);
        let report =
            rainbow_web_ui::bench::bench_ui(dir.path(), assets, args.partitions, repeat).await?;
        println!(
            "{} assets, {} partitions of history (written in {:.1} s):",
            report.assets, report.partitions, report.setup_secs
        );
        for p in &report.pages {
            println!(
                "  {:<52} first {:>9.1} ms  median {:>8.1} ms  {:>9} bytes",
                p.path, p.first_ms, p.median_ms, p.bytes
            );
        }
        reports.push(report);
    }
    println!("{}", serde_json::to_string(&reports)?);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::group_digits;

    #[test]
    fn digits_are_grouped_without_changing_the_value() {
        assert_eq!(group_digits("2199981500.000000000"), "2,199,981,500");
        assert_eq!(group_digits("-1234.50"), "-1,234.5");
        assert_eq!(group_digits("999"), "999");
        assert_eq!(group_digits("NaN"), "NaN");
    }
}
