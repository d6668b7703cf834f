//! The extract: `raw/<table>` daily partitions from a generated Rainbow DB (SQLite and
//! PostgreSQL) into Parquet files in a local object store — row counts equal the source's,
//! re-running adds nothing, a changed day is refused unless reprocessed.

use std::sync::Arc;

use chrono::NaiveDate;
use rainbow_assets::extract::{ExtractSettings, extract_assets, extract_day, partition_path};
use rainbow_assets::generate::{GenerateOptions, generate};
use rainbow_engine::prelude::*;
use rainbow_warehouse::Warehouse;
use sqlx::Row;

use crate::on_both_backends;
use crate::support::{Backend, fresh_storage, fresh_url, materialize_with};

on_both_backends!(extract_writes_each_day_once_and_refuses_silent_rewrites);

async fn count(db: &rainbow_db::Database, sql: String) -> i64 {
    sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
        .fetch_one(&db.pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .try_get::<i64, _>(0)
        .expect("count")
}

async fn parquet_rows(wh: &Warehouse, file: &std::path::Path) -> i64 {
    let df = wh
        .context()
        .read_parquet(
            file.to_str().expect("utf-8"),
            rainbow_warehouse::datafusion::prelude::ParquetReadOptions::default(),
        )
        .await
        .expect("parquet reads");
    df.count().await.expect("count") as i64
}

async fn extract_writes_each_day_once_and_refuses_silent_rewrites(backend: Backend) {
    let (url, _db_dir) = fresh_url(backend).await;
    let db = rainbow_db::connect(&url, 2).await.expect("connect");
    let start = NaiveDate::from_ymd_opt(2026, 1, 5).expect("date");
    generate(
        &db,
        &GenerateOptions {
            start,
            days: 3,
            orders_per_day: 50,
            seed: 3,
        },
    )
    .await
    .expect("generate");
    let lake = tempfile::tempdir().expect("lake");
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(
        object_store::local::LocalFileSystem::new_with_prefix(lake.path()).expect("store"),
    );
    let assets = extract_assets(ExtractSettings {
        database_url: url.clone(),
        store: store.clone(),
        store_url: lake.path().display().to_string(),
        partitions: PartitionsDefinition::daily("2026-01-05"),
        reprocess: false,
    });
    assert_eq!(assets.len(), 9);
    let t = fresh_storage(backend).await;
    let days = ["2026-01-05", "2026-01-06", "2026-01-07"];
    let run = |select: &'static str| {
        let defs = Definitions::new().assets(extract_assets(ExtractSettings {
            database_url: url.clone(),
            store: store.clone(),
            store_url: lake.path().display().to_string(),
            partitions: PartitionsDefinition::daily("2026-01-05"),
            reprocess: false,
        }));
        let storage = t.storage.clone();
        async move {
            let mut results = Vec::new();
            for day in days {
                results.push(
                    materialize_with(
                        defs.clone(),
                        &storage,
                        select,
                        rainbow_engine::RunOptions {
                            partitions: vec![day.into()],
                            ..Default::default()
                        },
                        tokio_util::sync::CancellationToken::new(),
                    )
                    .await,
                );
            }
            results
        }
    };
    for r in run("group:raw").await {
        assert!(r.success(), "{r:?}");
    }
    let wh = Warehouse::open(lake.path().join("wh").to_str().expect("utf-8"), "main")
        .await
        .expect("warehouse");
    for table in rainbow_db::source::tables() {
        for day in days {
            let d = NaiveDate::parse_from_str(day, "%Y-%m-%d").expect("day");
            let from = d
                .and_hms_opt(0, 0, 0)
                .expect("t")
                .and_utc()
                .timestamp_micros();
            let to = from + 86_400_000_000;
            let expected = count(
                &db,
                format!(
                    "SELECT COUNT(*) FROM {} WHERE updated_at >= {from} AND updated_at < {to}",
                    table.name
                ),
            )
            .await;
            let file = lake.path().join(partition_path(&table.name, d));
            assert_eq!(
                parquet_rows(&wh, &file).await,
                expected,
                "{}",
                file.display()
            );
        }
    }
    let orders_total = count(&db, "SELECT COUNT(*) FROM orders".into()).await;
    assert!(orders_total > 100);
    // The master dataset read in place by the warehouse, `dt=` folders as a column.
    wh.create_external_table(
        "raw",
        "orders",
        lake.path().join("raw/orders").to_str().expect("utf-8"),
    )
    .await
    .expect("external table");
    let reopened = Warehouse::open(lake.path().join("wh").to_str().expect("utf-8"), "main")
        .await
        .expect("reopen");
    let batches = reopened
        .query(
            "SELECT COUNT(*) AS n, COUNT(DISTINCT dt) AS days, SUM(customer_id) AS c FROM raw.orders",
            "master",
        )
        .await
        .expect("query");
    let text = rainbow_warehouse::datafusion::arrow::util::pretty::pretty_format_batches(&batches)
        .expect("format")
        .to_string();
    let customers = count(
        &db,
        "SELECT CAST(SUM(customer_id) AS BIGINT) FROM orders".into(),
    )
    .await;
    assert!(
        text.contains(&format!("| {orders_total} | 3    | {customers} |")),
        "{text}"
    );

    // The whole master dataset as external tables, then the Rainbow SQL project's staging
    // models and SCD2 dimensions over it, every data test passing on generated data.
    for table in rainbow_db::source::tables() {
        reopened
            .create_external_table(
                "raw",
                &table.name,
                lake.path()
                    .join("raw")
                    .join(&table.name)
                    .to_str()
                    .expect("utf-8"),
            )
            .await
            .expect("external table");
    }
    let summary = crate::support::dbt(
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/sql_models")),
        &reopened,
        rainbow_dbt::Verb::Build,
        &Default::default(),
    )
    .await
    .expect("build");
    let bad: Vec<String> = summary
        .results
        .iter()
        .filter(|r| {
            !matches!(
                r.status,
                rainbow_dbt::Status::Success | rainbow_dbt::Status::Pass
            )
        })
        .map(|r| format!("{}: {}", r.name, r.message))
        .collect();
    assert!(bad.is_empty(), "{bad:?}");
    let products = count(&db, "SELECT COUNT(*) FROM products".into()).await;
    let current = reopened
        .count("SELECT COUNT(*) FROM dim_products WHERE is_current", "dim")
        .await
        .expect("count");
    assert_eq!(current, products, "one current row per product");
    // fact_sales: one row per order line, the same sales total as the source, exactly.
    let lines = count(&db, "SELECT COUNT(*) FROM orderdetails".into()).await;
    let total = count(
        &db,
        "SELECT CAST(SUM(quantity * price) AS BIGINT) FROM orderdetails".into(),
    )
    .await;
    assert_eq!(
        reopened
            .count("SELECT COUNT(*) FROM fact_sales", "fact")
            .await
            .expect("fact rows"),
        lines
    );
    assert_eq!(
        reopened
            .count("SELECT SUM(extended_sales_amount) FROM fact_sales", "fact")
            .await
            .expect("fact total"),
        total
    );
    assert!(
        summary
            .results
            .iter()
            .any(|r| r.name == "assert_consistent_total_sales"),
        "the seed's consistency check ran"
    );

    // Again: identical content, nothing rewritten, no error.
    let tables = rainbow_db::source::tables();
    let orders = tables.iter().find(|t| t.name == "orders").expect("orders");
    let day = NaiveDate::from_ymd_opt(2026, 1, 6).expect("day");
    let again = extract_day(&db, store.as_ref(), orders, day, false)
        .await
        .expect("same content is fine");
    assert!(!again.written);
    for r in run("raw/orders").await {
        assert!(r.success(), "{r:?}");
    }

    // The source changes a stored day: refused (immutable), unless reprocessed.
    let from = day
        .and_hms_opt(12, 0, 0)
        .expect("t")
        .and_utc()
        .timestamp_micros();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE orders SET updated_at = {from} WHERE id = (SELECT MIN(id) FROM orders)"
    )))
    .execute(&db.pool)
    .await
    .expect("update");
    let err = extract_day(&db, store.as_ref(), orders, day, false)
        .await
        .expect_err("refused");
    assert!(
        err.to_string()
            .contains("raw/orders/dt=2026-01-06/orders.parquet is already in the master dataset"),
        "{err}"
    );
    let file = lake.path().join(partition_path("orders", day));
    let before = parquet_rows(&wh, &file).await;
    let redone = extract_day(&db, store.as_ref(), orders, day, true)
        .await
        .expect("reprocess");
    assert!(redone.written);
    assert_eq!(parquet_rows(&wh, &file).await, before + 1);
}
