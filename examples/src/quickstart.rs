//! The quickstart: a four-asset graph of a tiny shop — a source table, a cleaned copy, a daily
//! aggregate and a report — with a blocking check, metadata and a configured resource.
//!
//! ```text
//! shop/orders (source) -> staging/orders -> marts/daily_revenue -> reports/summary
//!                                            └ check: revenue_non_negative (blocking)
//! ```
//!
//! Run it: `cargo run -p rainbow-examples --bin quickstart -- materialize --select '*'`.

use std::collections::BTreeMap;

use rainbow_engine::prelude::*;
use serde::Deserialize;

/// Settings for the shop, from `[resources.shop]` in `rainbow.toml` or
/// `RAINBOW_RESOURCE__SHOP__CURRENCY=EUR`; defaults apply when neither is given.
#[derive(Debug, Deserialize)]
pub struct ShopSettings {
    /// Currency of every amount.
    #[serde(default = "default_currency")]
    pub currency: String,
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

    Definitions::new()
        .assets([source, staging, revenue, summary])
        .resource_from_config::<ShopSettings>("shop")
        .job(JobDefinition::new("daily", "+reports/summary").description("Everything, nightly"))
        .schedule(ScheduleDefinition::new("nightly", "0 0 * * *", "daily"))
}
