//! `rainbow bench warehouse` (issue 17): the Rainbow SQL project built by the embedded warehouse
//! against the same compiled SQL built by DuckDB over the same Parquet files, in one run.
//!
//! 1. The demo's history (`--days` × `--orders-per-day`) generated and extracted night by night
//!    into `--home` (a temporary directory by default; a home that already holds it is reused).
//! 2. The project compiled once (`rainbow compile`: `target/manifest.json` and the compiled data
//!    tests), from the same `sql_models/` the pipeline runs.
//! 3. `--runs` times, alternating: the project's schemas removed from the warehouse, then
//!    `rainbow materialize --select kind:sql` (a whole process: the 24 models as one engine run,
//!    their data tests as checks, run storage on SQLite); and the DuckDB peer
//!    (`scripts/bench/duckdb_peer.py`: the models transpiled by sqlglot from BigQuery SQL,
//!    built in DAG order into a fresh database file, the data tests run as count queries).
//! 4. Both results compared — every model's row count and the fact table's totals — so a
//!    faster wrong answer cannot pass; then one JSON line: medians, ratio, peak memory.
//!
//! Wall time is the child process's, from spawn to exit. Peak memory is the kernel's high-water
//! mark of resident memory (`VmHWM` in `/proc/<pid>/status`), sampled every 5 ms while the
//! process runs (a peak in its last 5 ms would be missed). Beside it, the highest private
//! memory seen in those samples (`RssAnon`: heap and stacks, without the pages of code and
//! libraries mapped from files, which are clean and shared — the `rainbow` binary's touched
//! code is about 110 MiB of its resident memory, DuckDB's library and Python about 55 MiB;
//! issue 17).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use chrono::NaiveDate;
use rainbow_assets::generate::GenerateOptions;
use rainbow_assets::pipeline::{self, replay};
use rainbow_warehouse::Warehouse;
use serde_json::Value as Json;

/// `rainbow bench warehouse`'s options.
#[derive(Debug, clap::Args)]
pub struct BenchWarehouseArgs {
    /// The history: the demo's by default (90 days × 5,000 orders); 100 × 10,000 is one
    /// million orders.
    #[command(flatten)]
    history: crate::demo::DemoArgs,
    /// Timed builds of each engine.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Where the history, lake and warehouse live; default a temporary directory removed at
    /// the end. A directory holding this history already is reused (nothing generated).
    #[arg(long = "bench-home")]
    bench_home: Option<PathBuf>,
    /// A Python with `duckdb` and `sqlglot==30.30.0` (scripts/lib/dbt.sh installs one for the tests).
    #[arg(long, env = "RAINBOW_BENCH_PYTHON", default_value = "python3")]
    python: PathBuf,
    /// DuckDB's threads; default the machine's cores (DataFusion's default too).
    #[arg(long)]
    duckdb_threads: Option<usize>,
}

/// One timed child process.
#[derive(Debug, Clone, Copy)]
struct Measured {
    wall: Duration,
    /// `VmHWM`, KiB.
    peak_rss_kib: u64,
    /// The highest `RssAnon` sampled, KiB.
    peak_anon_kib: u64,
}

/// A `/proc/<pid>/status` field in KiB (`VmHWM:   123 kB`); `None` when absent.
fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Runs `command` to completion: wall time, peak resident memory, stdout. A failure (spawn,
/// non-zero exit) is an error naming `what` with the child's stderr.
fn measure(what: &str, command: &mut Command) -> Result<(Measured, String)> {
    let started = Instant::now();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("{what}: cannot start {command:?}"))?;
    let status_file = PathBuf::from(format!("/proc/{}/status", child.id()));
    let mut stdout = child.stdout.take().context("child stdout")?;
    let mut stderr = child.stderr.take().context("child stderr")?;
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).map(|_| s)
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).map(|_| s)
    });
    let (mut peak, mut peak_anon) = (0, 0);
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_file) {
            peak = peak.max(status_kib(&text, "VmHWM").unwrap_or(0));
            peak_anon = peak_anon.max(status_kib(&text, "RssAnon").unwrap_or(0));
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let wall = started.elapsed();
    let stdout = out
        .join()
        .map_err(|_| anyhow::anyhow!("{what}: stdout reader panicked"))??;
    let stderr = err
        .join()
        .map_err(|_| anyhow::anyhow!("{what}: stderr reader panicked"))??;
    if !status.success() {
        bail!("{what} failed ({status}):\n{stderr}{stdout}");
    }
    Ok((
        Measured {
            wall,
            peak_rss_kib: peak,
            peak_anon_kib: peak_anon,
        },
        stdout,
    ))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The peer script, written next to the history (the binary carries it: no checkout needed).
const PEER: &str = include_str!("../scripts/bench/duckdb_peer.py");

/// Every model's row count and the fact table's totals (units, amount in đồng), as the peer
/// reports them.
async fn rainbow_results(warehouse: &str, models: &[String]) -> Result<(Json, i64, String)> {
    let warehouse = Warehouse::open(warehouse, "main").await?;
    let mut rows = serde_json::Map::new();
    for model in models {
        let count = warehouse
            .count(&format!("SELECT COUNT(*) FROM {model}"), "bench")
            .await?;
        rows.insert(model.clone(), Json::from(count));
    }
    let fact = "main_warehouse.fact_sales";
    let units = warehouse
        .count(&format!("SELECT SUM(sales_quantity) FROM {fact}"), "bench")
        .await?;
    let amount = warehouse
        .count(
            &format!("SELECT SUM(extended_sales_amount) FROM {fact}"),
            "bench",
        )
        .await?;
    Ok((Json::Object(rows), units, amount.to_string()))
}

/// Fails before any work (generating a history takes minutes at one million orders) when
/// `python` cannot import the peer's packages, naming the interpreter and what it said.
fn check_peer_python(python: &Path) -> Result<()> {
    let out = Command::new(python)
        .args(["-c", "import duckdb, sqlglot"])
        .output()
        .with_context(|| {
            format!(
                "cannot start the DuckDB peer's Python `{}` (--python or RAINBOW_BENCH_PYTHON)",
                python.display()
            )
        })?;
    if !out.status.success() {
        bail!(
            "the DuckDB peer's Python `{}` cannot import duckdb and sqlglot (pip install \
             duckdb==2.0.1 sqlglot==30.30.0): {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `rainbow bench warehouse`.
pub async fn bench(cli: &BenchWarehouseArgs) -> Result<ExitCode> {
    check_peer_python(&cli.python)?;
    let temp = tempfile::tempdir()?;
    let home = cli
        .bench_home
        .clone()
        .unwrap_or_else(|| temp.path().join("home"));
    std::fs::create_dir_all(&home)?;
    let start = NaiveDate::parse_from_str(pipeline::DEFAULT_START, "%Y-%m-%d")?;
    let settings = crate::demo::demo_settings(&home, start, cli.history.days)?;
    let options = GenerateOptions {
        start,
        days: cli.history.days,
        orders_per_day: cli.history.orders_per_day,
        seed: cli.history.seed,
    };
    let generated = Instant::now();
    let report = replay(&home, &settings, &options, 8, &|| {}).await?;
    if report.checks_failed > 0 {
        bail!("{} check(s) failed while preparing", report.checks_failed);
    }
    tracing::info!(
        "history in place in {:.1} s",
        generated.elapsed().as_secs_f64()
    );

    let exe = std::env::current_exe()?;
    let project = settings.sql_models_dir()?;
    let rainbow = |args: &[&str]| {
        let mut c = Command::new(&exe);
        c.arg("--home").arg(&home).args(args);
        c
    };
    let target = project.join("target");
    measure(
        "rainbow compile",
        rainbow(&["compile", "--project-dir"]).arg(&project),
    )?;
    let manifest: Json = serde_json::from_str(
        &std::fs::read_to_string(target.join("manifest.json"))
            .with_context(|| format!("reading {}", target.join("manifest.json").display()))?,
    )?;
    let nodes = manifest["nodes"].as_array().context("manifest nodes")?;
    let models: Vec<String> = nodes
        .iter()
        .filter(|n| n["kind"] == "model")
        .filter_map(|n| {
            Some(format!(
                "{}.{}",
                n["schema"].as_str()?,
                n["relation"].as_str()?
            ))
        })
        .collect();
    let mut schemas: Vec<&str> = nodes.iter().filter_map(|n| n["schema"].as_str()).collect();
    schemas.sort_unstable();
    schemas.dedup();

    let peer = home.join("duckdb_peer.py");
    std::fs::write(&peer, PEER)?;
    let threads = cli
        .duckdb_threads
        .unwrap_or_else(rainbow_engine::process::cores);
    let warehouse_dir = Path::new(&settings.warehouse);
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut peer_report = Json::Null;
    for run in 1..=cli.runs {
        for schema in &schemas {
            let dir = warehouse_dir.join(schema);
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("removing {}", dir.display()))?;
            }
        }
        let (m, _) = measure(
            "rainbow materialize --select kind:sql",
            &mut rainbow(&["materialize", "--select", "kind:sql"]),
        )?;
        tracing::info!(
            "run {run}: rainbow {:.2} s, peak {} MiB ({} MiB private)",
            m.wall.as_secs_f64(),
            m.peak_rss_kib / 1024,
            m.peak_anon_kib / 1024
        );
        ours.push(m);
        let (m, out) = measure(
            "the DuckDB peer",
            Command::new(&cli.python)
                .arg(&peer)
                .arg("--target")
                .arg(&target)
                .arg("--lake")
                .arg(&settings.lake)
                .arg("--db")
                .arg(home.join("peer.duckdb"))
                .arg("--threads")
                .arg(threads.to_string()),
        )?;
        tracing::info!(
            "run {run}: duckdb {:.2} s, peak {} MiB ({} MiB private)",
            m.wall.as_secs_f64(),
            m.peak_rss_kib / 1024,
            m.peak_anon_kib / 1024
        );
        theirs.push(m);
        peer_report = out
            .lines()
            .last()
            .map(serde_json::from_str)
            .transpose()?
            .context("the DuckDB peer printed nothing")?;
    }

    let (rows, units, amount) = rainbow_results(&settings.warehouse, &models).await?;
    if peer_report["rows"] != rows
        || peer_report["total_units"] != units
        || peer_report["total_amount"] != amount.as_str()
    {
        bail!(
            "the two builds differ:\nrainbow: rows {rows}, units {units}, amount {amount}\nduckdb: {peer_report}"
        );
    }
    if peer_report["failed_tests"]
        .as_object()
        .is_some_and(|f| !f.is_empty())
    {
        bail!(
            "data tests failed on DuckDB: {}",
            peer_report["failed_tests"]
        );
    }
    let secs = |v: &[Measured]| v.iter().map(|m| m.wall.as_secs_f64()).collect::<Vec<_>>();
    let max_mib =
        |v: &[Measured], kib: fn(&Measured) -> u64| v.iter().map(kib).max().unwrap_or(0) / 1024;
    // Whole MiB, truncated, as the per-run log lines and the peaks give them.
    let median_mib = |v: &[Measured], kib: fn(&Measured) -> u64| {
        median(v.iter().map(|m| (kib(m) / 1024) as f64).collect())
    };
    let (r, d) = (median(secs(&ours)), median(secs(&theirs)));
    let json = serde_json::json!({
        "bench": "warehouse",
        "days": cli.history.days,
        "orders_per_day": cli.history.orders_per_day,
        "runs": cli.runs,
        "models": models.len(),
        "tests": peer_report["tests"],
        "rainbow_seconds": secs(&ours),
        "duckdb_seconds": secs(&theirs),
        "duckdb_in_process_seconds": peer_report["wall_s"],
        "rainbow_median_seconds": r,
        "duckdb_median_seconds": d,
        "ratio": (r / d * 1000.0).round() / 1000.0,
        "rainbow_peak_rss_mib": max_mib(&ours, |m| m.peak_rss_kib),
        "duckdb_peak_rss_mib": max_mib(&theirs, |m| m.peak_rss_kib),
        "rainbow_median_peak_rss_mib": median_mib(&ours, |m| m.peak_rss_kib),
        "duckdb_median_peak_rss_mib": median_mib(&theirs, |m| m.peak_rss_kib),
        "rainbow_peak_private_mib": max_mib(&ours, |m| m.peak_anon_kib),
        "duckdb_peak_private_mib": max_mib(&theirs, |m| m.peak_anon_kib),
        "rainbow_median_peak_private_mib": median_mib(&ours, |m| m.peak_anon_kib),
        "duckdb_median_peak_private_mib": median_mib(&theirs, |m| m.peak_anon_kib),
        "duckdb": peer_report["engine"],
        "duckdb_threads": threads,
        "total_units": units,
        "total_amount": amount,
    });
    crate::demo::say(&json.to_string())?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::status_kib;

    #[test]
    fn status_fields_are_read_in_kib_by_exact_name() {
        let status = "Name:\trainbow\nVmHWM:\t  563200 kB\nRssAnon:\t  424000 kB\n\
                      RssFile:\t  115000 kB\nRssShmem:\t       0 kB\n";
        assert_eq!(status_kib(status, "VmHWM"), Some(563_200));
        assert_eq!(status_kib(status, "RssAnon"), Some(424_000));
        // `Rss` is not a prefix match of `RssAnon`/`RssFile`.
        assert_eq!(status_kib(status, "Rss"), None);
        assert_eq!(status_kib("VmHWM:\tlots kB\n", "VmHWM"), None);
    }
}
