//! The quickstart: a tiny shop — a source table, a cleaned copy, a daily aggregate and a
//! report — with a blocking check, metadata and a configured resource; and a partitioned
//! branch: orders per day (daily partitions), revenue per day, and revenue per month (monthly
//! partitions over the days), scheduled nightly on the previous day's partition.
//!
//! ```text
//! shop/orders (source) -> staging/orders -> marts/daily_revenue -> reports/summary
//!                                            └ check: revenue_non_negative (blocking)
//! daily/orders [daily] -> daily/revenue [daily] -> monthly/revenue [monthly]
//! ```
//!
//! Run it: `cargo run -p rainbow-examples --bin quickstart -- materialize --select '*'`.

use std::collections::BTreeMap;

use rainbow_engine::prelude::*;
use serde::Deserialize;

/// Settings for the shop, from `[resources.shop]` in `rainbow.toml` or
/// `RAINBOW_RESOURCES__SHOP__CURRENCY=EUR`; defaults apply when neither is given.
#[derive(Debug, Deserialize)]
pub struct ShopSettings {
    /// Currency of every amount.
    #[serde(default = "default_currency")]
    pub currency: String,
    /// Simulated latency of the shop database per daily extract, in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
    /// Days whose extract fails (simulates an outage), e.g. `["2024-09-03"]`.
    #[serde(default)]
    pub fail_days: Vec<String>,
}

/// The day partitions start.
pub const FIRST_DAY: &str = "2024-09-01";

/// Deterministic synthetic orders of one day: (count, revenue in cents).
pub fn orders_of_day(day: &str) -> (u64, i64) {
    let seed: u64 = day
        .bytes()
        .fold(17, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let count = 20 + seed % 30;
    (count, (count as i64) * (900 + (seed % 700) as i64))
}

fn default_currency() -> String {
    "USD".into()
}

/// Orders as (day, amount in cents): the "source system" of the example.
fn orders() -> Vec<(&'static str, i64)> {
    vec![
        ("2024-09-01", 1250),
        ("2024-09-01", 899),
        ("2024-09-02", 4000),
        ("2024-09-02", -100), // a refund line, dropped by staging
        ("2024-09-03", 2599),
    ]
}

fn daily_revenue() -> BTreeMap<&'static str, i64> {
    let mut out = BTreeMap::new();
    for (day, cents) in orders().into_iter().filter(|(_, c)| *c > 0) {
        *out.entry(day).or_insert(0) += cents;
    }
    out
}

/// The quickstart's definitions.
pub fn definitions() -> Definitions {
    let source = asset("shop/orders")
        .group("shop")
        .description("Orders in the shop's database (observed, never materialized)")
        .source()
        .observe(|_ctx| async {
            Ok::<_, BoxError>(ObserveResult::new(format!("rows={}", orders().len())))
        });

    let staging = asset("staging/orders")
        .dep("shop/orders")
        .group("staging")
        .kind("memory")
        .code_version("1")
        .owner("data-eng@example.com")
        .compute(|ctx| async move {
            let kept = orders().into_iter().filter(|(_, c)| *c > 0).count();
            ctx.log_info(format!("kept {kept} order lines"));
            Ok::<_, BoxError>(MaterializeResult::new().row_count(kept as u64).schema(
                TableSchema::new([("day", "DATE"), ("amount_cents", "INT64")]),
            ))
        });

    let revenue = asset("marts/daily_revenue")
        .dep("staging/orders")
        .group("marts")
        .kind("memory")
        .code_version("1")
        .description("Revenue per day, in cents")
        .compute(|ctx| async move {
            let shop = ctx.resource::<ShopSettings>()?;
            let days = daily_revenue();
            Ok::<_, BoxError>(
                MaterializeResult::new()
                    .row_count(days.len() as u64)
                    .metadata("currency", shop.currency.clone())
                    .metadata("total_cents", days.values().sum::<i64>()),
            )
        })
        .check(
            AssetCheckSpec::new("revenue_non_negative", "marts/daily_revenue")
                .description("No day has negative revenue")
                .blocking(true)
                .compute(|_ctx| async {
                    let negative = daily_revenue().values().filter(|v| **v < 0).count();
                    Ok::<_, BoxError>(
                        AssetCheckResult::new(negative == 0)
                            .metadata("negative_days", negative as i64),
                    )
                }),
        );

    let summary = asset("reports/summary")
        .dep("marts/daily_revenue")
        .group("reports")
        .compute(|_ctx| async {
            let best = daily_revenue().into_iter().max_by_key(|(_, v)| *v);
            let text = best
                .map(|(d, v)| format!("best day {d}: {v} cents"))
                .unwrap_or_default();
            Ok::<_, BoxError>(MaterializeResult::new().metadata("summary", text))
        });

    let day_orders = asset("daily/orders")
        .group("daily")
        .kind("memory")
        .partitions(PartitionsDefinition::daily(FIRST_DAY))
        .description("Orders placed on the partition's day")
        .compute(|ctx| async move {
            let shop = ctx.resource::<ShopSettings>()?;
            let day = ctx
                .partition_key()
                .ok_or("daily/orders needs one partition")?
                .to_owned();
            if shop.latency_ms > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(shop.latency_ms)).await;
            }
            if shop.fail_days.contains(&day) {
                return Err(format!("the shop database was unreachable for {day}").into());
            }
            let (count, _) = orders_of_day(&day);
            Ok::<_, BoxError>(MaterializeResult::new().row_count(count))
        });

    let day_revenue = asset("daily/revenue")
        .dep("daily/orders")
        .group("daily")
        .kind("memory")
        .partitions(PartitionsDefinition::daily(FIRST_DAY))
        .compute(|ctx| async move {
            let day = ctx
                .partition_key()
                .ok_or("daily/revenue needs one partition")?
                .to_owned();
            let (_, cents) = orders_of_day(&day);
            Ok::<_, BoxError>(MaterializeResult::new().metadata("revenue_cents", cents))
        });

    let month_revenue = asset("monthly/revenue")
        .dep("daily/revenue")
        .group("monthly")
        .kind("memory")
        .partitions(PartitionsDefinition::monthly(FIRST_DAY))
        .description("Revenue per month: needs every day of its month")
        .compute(|ctx| async move {
            let window = ctx
                .partition_time_window()
                .ok_or("monthly/revenue is time-partitioned")?;
            let mut day = window.start.date_naive();
            let mut cents = 0;
            while day < window.end.date_naive() {
                cents += orders_of_day(&day.format("%Y-%m-%d").to_string()).1;
                day = day.succ_opt().ok_or("date overflow")?;
            }
            Ok::<_, BoxError>(MaterializeResult::new().metadata("revenue_cents", cents))
        });

    Definitions::new()
        .assets([source, staging, revenue, summary])
        .assets([day_orders, day_revenue, month_revenue])
        .resource_from_config::<ShopSettings>("shop")
        .job(JobDefinition::new("daily", "+reports/summary").description("Everything, nightly"))
        .schedule(ScheduleDefinition::new("nightly", "0 0 * * *", "daily"))
        .job(
            JobDefinition::new("daily_partitions", "group:daily")
                .description("Yesterday's orders and revenue"),
        )
        .schedule(ScheduleDefinition::new(
            "nightly_partitions",
            "0 0 * * *",
            "daily_partitions",
        ))
}
