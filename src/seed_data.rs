//! `rainbow seed-data`: fills a Rainbow DB (the embedded SQLite source by default, or any
//! `postgres://` URL such as the orders API's) with generated history.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

/// `rainbow seed-data`'s options.
#[derive(Debug, clap::Args)]
pub struct SeedDataArgs {
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
    /// `<home>/rainbow_db.sqlite`.
    #[arg(long = "source-url", env = "RAINBOW_DB_URL")]
    source_url: Option<String>,
}

/// `rainbow seed-data`: fills the Rainbow DB (the embedded source under `home` by default).
pub async fn run(home: &Path, args: &SeedDataArgs) -> anyhow::Result<ExitCode> {
    let url = match args.source_url.clone() {
        Some(url) => url,
        None => {
            std::fs::create_dir_all(home)
                .with_context(|| format!("creating {}", home.display()))?;
            rainbow_db::sqlite_url(&home.join("rainbow_db.sqlite"))
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
    Ok(ExitCode::SUCCESS)
}
