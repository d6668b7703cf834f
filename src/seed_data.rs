//! `rainbow seed-data`: fills a Rainbow DB (the embedded SQLite source by default, or any
//! `postgres://` URL such as the orders API's) with generated history.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;

/// Fill a Rainbow DB with a deterministic, realistic e-commerce history.
#[derive(Debug, Parser)]
#[command(name = "rainbow seed-data")]
struct Args {
    /// Days of history.
    #[arg(long, default_value_t = 30)]
    days: u32,
    /// Average orders per day.
    #[arg(long, default_value_t = 1000)]
    orders_per_day: u32,
    /// Random seed: the same options give the same rows.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// First day (YYYY-MM-DD); default: so that the last day is yesterday (UTC). Give it to get
    /// the same rows on another day.
    #[arg(long)]
    start: Option<chrono::NaiveDate>,
    /// The Rainbow DB: `sqlite://…` or `postgres://…`; default: the embedded source,
    /// `$RAINBOW_HOME/rainbow_db.sqlite`.
    #[arg(long, env = "RAINBOW_DB_URL")]
    database_url: Option<String>,
    /// Rainbow's home directory (holds the embedded source).
    #[arg(long, env = "RAINBOW_HOME", default_value = ".rainbow")]
    home: PathBuf,
}

pub fn main() -> ExitCode {
    // `rainbow seed-data …`: parse what follows the subcommand, usage shown as `rainbow seed-data`.
    let args = Args::parse_from(
        std::iter::once(std::ffi::OsString::from("rainbow seed-data"))
            .chain(std::env::args_os().skip(2)),
    );
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
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let url = match args.database_url {
        Some(url) => url,
        None => {
            std::fs::create_dir_all(&args.home)
                .with_context(|| format!("creating {}", args.home.display()))?;
            rainbow_db::sqlite_url(&args.home.join("rainbow_db.sqlite"))
        }
    };
    let start = match args.start {
        Some(d) => d,
        None => chrono::Utc::now()
            .date_naive()
            .checked_sub_days(chrono::Days::new(u64::from(args.days)))
            .with_context(|| {
                format!(
                    "--days {} reaches before the first representable date",
                    args.days
                )
            })?,
    };
    let options = rainbow_assets::generate::GenerateOptions {
        start,
        days: args.days,
        orders_per_day: args.orders_per_day,
        seed: args.seed,
    };
    let db = rainbow_db::connect(&url, 2).await?;
    let began = std::time::Instant::now();
    let summary = rainbow_assets::generate::generate(&db, &options).await?;
    println!(
        "{}: {} orders, {} order lines over {} days from {start}; {} product, {} customer, {} seller changes ({:.1} s)",
        rainbow_db::redact(&url),
        summary.orders,
        summary.lines,
        args.days,
        summary.product_changes,
        summary.customer_changes,
        summary.seller_changes,
        began.elapsed().as_secs_f64()
    );
    Ok(())
}
