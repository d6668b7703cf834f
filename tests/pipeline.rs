//! The Rainbow code location end to end (`rainbow demo`'s path): a generated history replayed
//! night by night through the extract, one backfill of everything, then
//! - each of the six batch views equals a computation written directly against the source DB;
//! - every fact row joins to the dimension versions current on its order's date (checked
//!   against the master dataset's raw versions, not the dimension's own logic);
//! - the exports hold exactly the views' rows;
//! - re-running the whole backfill, or one partition of `batch_job`, leaves every table and
//!   file identical; a late write into a closed day is refused and loses nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use chrono::NaiveDate;
use rainbow_assets::generate::GenerateOptions;
use rainbow_assets::pipeline::{self, BATCH_JOB, PipelineSettings, replay};
use rainbow_engine::RainbowConfig;
use rainbow_engine::prelude::*;
use rainbow_engine::storage::Storage;
use rainbow_engine::{Executor, RunOptions};
use rainbow_warehouse::{RelationKind, Warehouse};
use sqlx::Row;

use crate::support::warehouse_rows;

/// Rows of a source-DB query, cells as text joined by `|`, sorted.
async fn source_rows(db: &rainbow_db::Database, sql: &str) -> Vec<String> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_all(&db.pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut out: Vec<String> = rows
        .iter()
        .map(|r| {
            (0..r.len())
                .map(|i| {
                    r.try_get::<i64, _>(i)
                        .map(|v| v.to_string())
                        .or_else(|_| r.try_get::<String, _>(i))
                        .unwrap_or_else(|e| panic!("{sql} column {i}: {e}"))
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect();
    out.sort();
    out
}

async fn sorted_rows(wh: &Warehouse, sql: &str) -> Vec<String> {
    let mut rows = warehouse_rows(wh, sql).await;
    rows.sort();
    rows
}

/// Order lines on the source DB with their amount and discount, both x100 (exact integers).
const LINES: &str = "WITH lines AS (
    SELECT o.id AS order_id, o.customer_id, o.payment_id, o.created_at, d.product_id, d.quantity,
           d.quantity * d.price AS amount,
           CASE pr.coupon_type
               WHEN 'Percentage' THEN d.quantity * d.price * pr.price_treatment
               WHEN 'Fixed Amount' THEN d.quantity * pr.price_treatment * 100000
               ELSE 0
           END AS discount100
    FROM orderdetails d
    JOIN orders o ON o.id = d.order_id
    LEFT JOIN promotions pr ON pr.id = d.promotion_id)";

/// (view, warehouse query, source query).
fn views() -> Vec<(&'static str, String, String)> {
    vec![
        (
            "total_sales",
            "SELECT total_sales_quantity, total_sales_amount, CAST(total_profit * 100 AS INT64), CAST(current_run_date AS STRING) FROM main_views.total_sales".into(),
            format!("{LINES} SELECT SUM(quantity), SUM(amount), SUM(amount * 100 - discount100), date(MAX(created_at) / 1000000, 'unixepoch') FROM lines"),
        ),
        (
            "sales_by_day_of_week",
            "SELECT day_of_week_number, sales_quantity, sales_amount FROM main_views.sales_by_day_of_week".into(),
            format!("{LINES} SELECT CAST(strftime('%w', created_at / 1000000, 'unixepoch') AS INTEGER) + 1 AS dow, SUM(quantity), SUM(amount) FROM lines GROUP BY dow"),
        ),
        (
            "top_sellers",
            "SELECT seller_id, seller_name, sales_quantity, sales_amount, sales_rank FROM main_views.top_sellers".into(),
            format!("{LINES} SELECT s.id, s.name, SUM(l.quantity), SUM(l.amount), RANK() OVER (ORDER BY SUM(l.amount) DESC) FROM lines l JOIN products p ON p.id = l.product_id JOIN sellers s ON s.id = p.seller_id GROUP BY s.id, s.name"),
        ),
        (
            "top_profitable_products_by_category",
            "SELECT category, product_id, product_name, CAST(profit * 100 AS INT64), profit_rank FROM main_views.top_profitable_products_by_category".into(),
            format!("{LINES}, profit AS (
                SELECT p.id AS product_id, p.category_id, p.name, SUM(l.amount * 100 - l.discount100) AS profit100
                FROM lines l JOIN products p ON p.id = l.product_id GROUP BY p.id, p.category_id, p.name),
              ranked AS (
                SELECT c.name AS category, pr.product_id, pr.name, pr.profit100,
                       ROW_NUMBER() OVER (PARTITION BY pr.category_id ORDER BY pr.profit100 DESC, pr.product_id) AS rk
                FROM profit pr JOIN categories c ON c.id = pr.category_id)
              SELECT * FROM ranked WHERE rk <= 5"),
        ),
        (
            "payment_method_distribution",
            "SELECT payment_method, orders, sales_amount FROM main_views.payment_method_distribution".into(),
            format!("{LINES} SELECT pay.method, COUNT(DISTINCT l.order_id), SUM(l.amount) FROM lines l JOIN payments pay ON pay.id = l.payment_id GROUP BY pay.method"),
        ),
        (
            "customer_ranking",
            "SELECT customer_id, customer_name, orders, sales_amount, customer_rank FROM main_views.customer_ranking".into(),
            format!("{LINES} SELECT c.id, c.name, COUNT(DISTINCT l.order_id), SUM(l.amount), RANK() OVER (ORDER BY SUM(l.amount) DESC) FROM lines l JOIN customers c ON c.id = l.customer_id GROUP BY c.id, c.name"),
        ),
    ]
}

/// For one dimension: (fact rows' distinct (order, key) pairs, those with a raw version on or
/// before the order date, those whose dimension row is not that version or not valid on the
/// date, those joined to a version that is no longer current).
async fn version_check(
    wh: &Warehouse,
    dim: &str,
    key: &str,
    id: &str,
    raw: &str,
    columns: &[&str],
) -> Vec<String> {
    let dim_cols: Vec<String> = columns
        .iter()
        .map(|c| format!("dim.{c} AS dim_{c}"))
        .collect();
    let raw_cols: Vec<String> = columns
        .iter()
        .map(|c| format!("r.{c} AS raw_{c}"))
        .collect();
    let differs: Vec<String> = columns
        .iter()
        .map(|c| format!("raw_{c} <> dim_{c}"))
        .collect();
    let sql = format!(
        "WITH orders AS (SELECT id, MAX(created_at) AS created_at FROM raw.orders GROUP BY id),
         facts AS (
            SELECT DISTINCT f.order_transaction, f.{key} AS k, DATE(TIMESTAMP_MICROS(o.created_at)) AS d,
                   dim.{id} AS bid, dim.valid_from, dim.valid_to, {}
            FROM main_warehouse.fact_sales f
            JOIN orders o ON o.id = f.order_transaction
            JOIN main_warehouse.{dim} dim ON dim.{key} = f.{key}),
         cand AS (
            SELECT facts.*, {}, ROW_NUMBER() OVER (PARTITION BY facts.order_transaction, facts.k ORDER BY r.updated_at DESC) AS rk
            FROM facts JOIN raw.{raw} r ON r.id = facts.bid AND DATE(TIMESTAMP_MICROS(r.updated_at)) <= facts.d)
         SELECT (SELECT COUNT(*) FROM facts) AS total,
                (SELECT COUNT(*) FROM cand WHERE rk = 1) AS versioned,
                (SELECT COUNT(*) FROM cand WHERE rk = 1 AND (NOT (d >= valid_from AND d < valid_to) OR {})) AS wrong,
                (SELECT COUNT(*) FROM cand WHERE rk = 1 AND valid_to < DATE '2100-01-01') AS superseded",
        dim_cols.join(", "),
        raw_cols.join(", "),
        differs.join(" OR ")
    );
    warehouse_rows(wh, &sql).await
}

/// Every warehouse table's rows and every lake file's bytes.
async fn snapshot(settings: &PipelineSettings) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let wh = Warehouse::open(&settings.warehouse, "main")
        .await
        .expect("warehouse");
    for relation in wh.relations() {
        let (schema, name) = relation.split_once('.').expect("schema.name");
        if wh.kind(schema, name) == Some(RelationKind::Table) {
            let rows = sorted_rows(&wh, &format!("SELECT * FROM {relation}")).await;
            out.insert(relation.clone(), rows.join("\n"));
        }
    }
    fn walk(dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                let bytes = std::fs::read(&path).expect("read");
                out.insert(path.display().to_string(), format!("{bytes:?}"));
            }
        }
    }
    walk(Path::new(&settings.lake), &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batch_layer_end_to_end() {
    let home_dir = tempfile::tempdir().expect("home");
    let home = home_dir.path();
    let start = NaiveDate::from_ymd_opt(2026, 1, 5).expect("date");
    let days = 6;
    let mut settings = PipelineSettings::defaults(home);
    settings.start_date = start;
    settings.end_date = Some(start + chrono::Duration::days(days));
    settings.save(home).expect("settings");
    let config = rainbow_engine::RainbowConfig::default()
        .with_file(&home.join("rainbow.toml"), true)
        .expect("config");
    assert_eq!(
        PipelineSettings::load(home, &config).expect("load"),
        settings
    );
    // The SQL project is the one built into the binary, the same as the repository's.
    let built_in = settings.sql_models_dir().expect("built-in project");
    for file in ["dbt_project.yml", "models/warehouse/fact_sales.sql"] {
        assert_eq!(
            std::fs::read(built_in.join(file)).expect("built-in file"),
            std::fs::read(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("sql_models")
                    .join(file)
            )
            .expect("repository file"),
            "{file}"
        );
    }
    let options = GenerateOptions {
        start,
        days: days as u32,
        orders_per_day: 60,
        seed: 11,
    };

    let report = replay(home, &settings, &options, 4, &|| {})
        .await
        .expect("the history replays and backfills");
    assert!(report.generated);
    assert_eq!((report.checks_failed, report.checks_warned), (0, 0));
    // Every dbt test (43) plus completeness and freshness on each of the nine raw tables.
    assert_eq!(report.checks_passed, 43 + 18, "{report:?}");

    let db = rainbow_db::connect(&settings.source_url, 2)
        .await
        .expect("source");
    let wh = Warehouse::open(&settings.warehouse, "main")
        .await
        .expect("warehouse");

    // The master dataset kept intermediate versions (the nightly replay's point).
    let raw_products = wh
        .count("SELECT COUNT(*) FROM raw.products", "raw")
        .await
        .expect("raw");
    let products = source_rows(&db, "SELECT COUNT(*) FROM products").await;
    assert!(
        raw_products > products[0].parse::<i64>().expect("count"),
        "{raw_products} {products:?}"
    );

    // Each batch view equals the direct computation on the source DB, exactly.
    for (view, warehouse_sql, source_sql) in views() {
        let expected = source_rows(&db, &source_sql).await;
        assert!(!expected.is_empty(), "{view}");
        assert_eq!(sorted_rows(&wh, &warehouse_sql).await, expected, "{view}");
    }

    // Fact rows join the versions current on the order's date, against the raw versions.
    for (dim, key, id, raw, columns) in [
        (
            "dim_products",
            "product_key",
            "product_id",
            "products",
            &["name", "price", "seller_id"][..],
        ),
        (
            "dim_customers",
            "customer_key",
            "customer_id",
            "customers",
            &["name", "city"][..],
        ),
        (
            "dim_sellers",
            "seller_key",
            "seller_id",
            "sellers",
            &["name", "city"][..],
        ),
    ] {
        let row = version_check(&wh, dim, key, id, raw, columns).await;
        let cells: Vec<i64> = row[0]
            .split('|')
            .map(|c| c.parse().expect("count"))
            .collect();
        assert_eq!(
            cells[0], cells[1],
            "{dim}: every fact row has a raw version by its date"
        );
        assert_eq!(cells[2], 0, "{dim}: fact rows on the wrong version");
        if dim == "dim_products" {
            assert!(
                cells[3] > 0,
                "{dim}: some facts use superseded versions ({row:?})"
            );
        }
    }

    // The exports hold the views' rows.
    for (view, _, _) in views() {
        let file = Path::new(&settings.lake).join(rainbow_assets::export::export_path(view));
        let exported = wh
            .context()
            .read_parquet(file.to_str().expect("utf-8"), Default::default())
            .await
            .expect("export reads")
            .count()
            .await
            .expect("count");
        let rows = wh
            .count(&format!("SELECT COUNT(*) FROM main_views.{view}"), view)
            .await
            .expect("view rows");
        assert_eq!(exported as i64, rows, "{view}");
    }
    drop(wh);

    // Idempotence: the whole backfill again, then one partition of batch_job.
    let before = snapshot(&settings).await;
    // 15 tables (8 dimensions, the fact, 6 views), 9 tables x 6 days of raw files, 6 exports.
    assert_eq!(before.len(), 15 + 9 * 6 + 6);
    let again = replay(home, &settings, &options, 4, &|| {})
        .await
        .expect("again");
    assert!(!again.generated);
    assert_eq!(again.checks_failed, 0);
    let after = snapshot(&settings).await;
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    for (k, v) in &before {
        assert!(after[k] == *v, "{k} changed after the backfill ran again");
    }
    let defs = pipeline::definitions(&settings).expect("definitions");
    assert!(defs.jobs().iter().any(|j| j.name == BATCH_JOB));
    let nightly = defs
        .schedules()
        .iter()
        .find(|s| s.name == pipeline::NIGHTLY)
        .expect("nightly schedule");
    assert_eq!(
        (nightly.cron_schedule.as_str(), nightly.timezone.as_str()),
        ("0 0 * * *", "UTC")
    );
    let graph = Arc::new(AssetGraph::build(defs).expect("graph"));
    let storage = Storage::open_sqlite_dir(home).await.expect("storage");
    let executor =
        Executor::new(graph.clone(), storage, &RainbowConfig::default()).expect("executor");
    let job = graph
        .jobs()
        .iter()
        .find(|j| j.name == BATCH_JOB)
        .expect("job")
        .clone();
    let selection = graph.select_job(&job).expect("selection");
    let run = |day: &str| RunOptions {
        partitions: vec![day.to_owned()],
        job_name: Some(BATCH_JOB.into()),
        selection: "*".into(),
        ..Default::default()
    };
    let result = executor
        .materialize(&selection, run("2026-01-07"), Default::default(), None)
        .await
        .expect("run");
    assert!(result.success(), "{result:?}");
    let after = snapshot(&settings).await;
    for (k, v) in &before {
        assert!(after[k] == *v, "{k} changed after re-running 2026-01-07");
    }

    // A late write into a closed day: refused, the master dataset untouched.
    let late = (start + chrono::Duration::days(1))
        .and_hms_opt(12, 0, 0)
        .expect("t")
        .and_utc()
        .timestamp_micros();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE customers SET name = 'Late Writer', updated_at = {late} WHERE id = 1"
    )))
    .execute(&db.pool)
    .await
    .expect("late write");
    let result = executor
        .materialize(&selection, run("2026-01-06"), Default::default(), None)
        .await
        .expect("run");
    assert!(!result.success());
    let failure = format!("{:?}", result.steps.get("raw/customers"));
    assert!(
        failure.contains(
            "raw/customers/dt=2026-01-06/customers.parquet is already in the master dataset"
        ),
        "{failure}"
    );
    let after = snapshot(&settings).await;
    for (k, v) in &before {
        assert!(after[k] == *v, "{k} changed after a refused extract");
    }
}
