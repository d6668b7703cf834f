//! `rainbow demo` (README command 1) and `rainbow bench pipeline`: the whole batch layer on
//! the embedded default (SQLite source, Parquet lake, DataFusion warehouse, SQLite run storage).
//!
//! The history is replayed as it would happen in production: each generated day is followed
//! by that night's extract of the day's partition, so every intermediate version of a row
//! reaches the immutable master dataset (SCD2 needs them). Then one backfill of `batch_job`
//! over every partition: the extracts find their days already stored (nothing written), the
//! models, checks and exports run once. A second `demo` finds the history in place, runs the
//! backfill again (idempotent) and prints the same analyses.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Result, bail};
use chrono::NaiveDate;
use rainbow_assets::generate::GenerateOptions;
use rainbow_assets::pipeline::{self, PipelineSettings, replay};

/// `rainbow demo`'s options (the state directory is the global `--home`).
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Days of history.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) days: u32,
    /// Orders per average day.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) orders_per_day: u32,
    /// Generator seed.
    #[arg(long, default_value_t = 42)]
    pub(crate) seed: u64,
}

/// `rainbow bench pipeline`'s options.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Days of history.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    days: u32,
    /// Orders per average day (100 days x 10,000 = 1,000,000 orders).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    orders_per_day: u32,
    /// Generator seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Steps run at once inside each run (1 makes work time and wall time comparable).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
}

/// One line on stdout; a closed pipe (`rainbow demo | head`) ends the output quietly.
pub(crate) fn say(text: &str) -> Result<()> {
    use std::io::Write;
    writeln!(std::io::stdout().lock(), "{text}")?;
    Ok(())
}

/// Settings of a demo home: its own, or new ones bounded to the generated history.
pub(crate) fn demo_settings(home: &Path, start: NaiveDate, days: u32) -> Result<PipelineSettings> {
    let end = start + chrono::Duration::days(i64::from(days));
    let own = rainbow_engine::RainbowConfig::default()
        .with_file(&home.join(pipeline::SETTINGS_FILE), false)?;
    if own.contains("pipeline") {
        let settings = PipelineSettings::load(home, &own)?;
        if settings.start_date != start || settings.end_date != Some(end) {
            bail!(
                "{} holds a pipeline from {} to {}, not a {days}-day demo: use another --home, or remove it to start over",
                home.join(pipeline::SETTINGS_FILE).display(),
                settings.start_date,
                settings
                    .end_date
                    .map_or_else(|| "today".to_owned(), |d| d.to_string())
            );
        }
        return Ok(settings);
    }
    let mut settings = PipelineSettings::defaults(home);
    settings.start_date = start;
    settings.end_date = Some(end);
    settings.save(home)?;
    Ok(settings)
}

fn progress(len: u32, what: &str) -> indicatif::ProgressBar {
    indicatif::ProgressBar::new(u64::from(len)).with_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{bar:40}} {{pos}}/{{len}} {what} [{{elapsed}}]"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    )
}

/// The six analyses: (title, query).
pub(crate) const ANALYSES: [(&str, &str); 6] = [
    ("Total sales", "SELECT * FROM main_views.total_sales"),
    (
        "Sales by day of week",
        "SELECT * FROM main_views.sales_by_day_of_week ORDER BY day_of_week_number",
    ),
    (
        "Top sellers (first 10)",
        "SELECT * FROM main_views.top_sellers ORDER BY sales_rank, seller_id LIMIT 10",
    ),
    (
        "Top 5 most profitable products per category (first 3 categories)",
        "SELECT * FROM main_views.top_profitable_products_by_category WHERE category IN (SELECT DISTINCT category FROM main_views.top_profitable_products_by_category ORDER BY category LIMIT 3) ORDER BY category, profit_rank",
    ),
    (
        "Payment method distribution",
        "SELECT * FROM main_views.payment_method_distribution ORDER BY sales_amount DESC, payment_method",
    ),
    (
        "Customer ranking (first 10)",
        "SELECT * FROM main_views.customer_ranking ORDER BY customer_rank, customer_id LIMIT 10",
    ),
];

async fn print_analyses(settings: &PipelineSettings) -> Result<()> {
    // On the pipeline's target: the embedded warehouse, or BigQuery.
    let project = settings.sql_project()?;
    for (title, sql) in ANALYSES {
        let (_, batches) = project.query(sql, title).await?;
        say(&format!("\n{title}"))?;
        say(&format!(
            "{}",
            rainbow_warehouse::datafusion::arrow::util::pretty::pretty_format_batches(&batches)?
        ))?;
    }
    Ok(())
}

/// `rainbow demo`: the batch layer end to end in `home`.
pub async fn demo(home: &Path, cli: &DemoArgs) -> Result<ExitCode> {
    let start = NaiveDate::parse_from_str(pipeline::DEFAULT_START, "%Y-%m-%d")?;
    let settings = demo_settings(home, start, cli.days)?;
    let options = GenerateOptions {
        start,
        days: cli.days,
        orders_per_day: cli.orders_per_day,
        seed: cli.seed,
    };
    let started = Instant::now();
    let bar = progress(cli.days, "days generated and extracted");
    let report = replay(home, &settings, &options, 8, &|| bar.inc(1)).await?;
    bar.finish_and_clear();
    say(&format!(
        "backfill {} completed: {} assets, checks {} passed, {} warned, {} failed",
        report.backfill_id,
        report.assets,
        report.checks_passed,
        report.checks_warned,
        report.checks_failed
    ))?;
    if report.checks_failed > 0 {
        bail!(
            "{} check(s) failed: see `rainbow status --home {}`",
            report.checks_failed,
            home.display()
        );
    }
    print_analyses(&settings).await?;
    say(&format!(
        "\n{} in {:.1} s. Next, with --home {home}: `rainbow dev` serves the web UI and the daemon — open http://127.0.0.1:3000/ to see the lineage, launch backfills and read the runs; or rainbow status, rainbow runs, rainbow partitions raw/orders, rainbow query 'SELECT * FROM main_views.total_sales' (rainbow --help lists every command)",
        if report.generated {
            format!(
                "{} days of history generated, extracted night by night and backfilled",
                cli.days
            )
        } else {
            "History already in place: backfilled again".to_owned()
        },
        started.elapsed().as_secs_f64(),
        home = home.display(),
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// `rainbow bench pipeline`: times the batch layer and its orchestration overhead.
pub async fn bench(cli: &BenchArgs) -> Result<ExitCode> {
    let dir = tempfile::tempdir()?;
    let home = dir.path().join("home");
    let start = NaiveDate::parse_from_str(pipeline::DEFAULT_START, "%Y-%m-%d")?;
    let settings = demo_settings(&home, start, cli.days)?;
    let options = GenerateOptions {
        start,
        days: cli.days,
        orders_per_day: cli.orders_per_day,
        seed: cli.seed,
    };
    rainbow_warehouse::instrument::reset();
    let report = replay(&home, &settings, &options, cli.concurrency, &|| {}).await?;
    if report.checks_failed > 0 {
        bail!("{} check(s) failed", report.checks_failed);
    }
    let work = rainbow_warehouse::instrument::work_time().as_secs_f64();
    let pipeline = (report.extracts + report.backfill).as_secs_f64();
    let db = rainbow_db::connect(&settings.source_url, 1).await?;
    let (orders, lines): (i64, i64) = sqlx_counts(&db).await?;
    let overhead = pipeline - work;
    say(&format!(
        "{{\"bench\":\"pipeline\",\"days\":{},\"orders\":{orders},\"order_lines\":{lines},\"concurrency\":{},\"generation_seconds\":{:.2},\"extract_seconds\":{:.2},\"backfill_seconds\":{:.2},\"pipeline_seconds\":{pipeline:.2},\"work_seconds\":{work:.2},\"overhead_seconds\":{overhead:.2},\"overhead_percent\":{:.1}}}",
        cli.days,
        cli.concurrency,
        report.generation.as_secs_f64(),
        report.extracts.as_secs_f64(),
        report.backfill.as_secs_f64(),
        100.0 * overhead / pipeline,
    ))?;
    Ok(ExitCode::SUCCESS)
}

async fn sqlx_counts(db: &rainbow_db::Database) -> Result<(i64, i64)> {
    use sqlx::Row;
    let row = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM orders) AS orders, (SELECT COUNT(*) FROM orderdetails) AS lines",
    )
    .fetch_one(&db.pool)
    .await?;
    Ok((row.try_get("orders")?, row.try_get("lines")?))
}
