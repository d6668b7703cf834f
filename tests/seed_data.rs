//! `rainbow seed-data`: the Rainbow DB generator on SQLite and PostgreSQL — deterministic,
//! realistic, refusing to write over existing data, leaving ids usable by the orders API.

use chrono::NaiveDate;
use rainbow_assets::generate::{GenerateOptions, generate};
use rainbow_db::Database;
use sqlx::Row;

use crate::on_both_backends;
use crate::support::{Backend, fresh_url};

on_both_backends!(seed_data_is_deterministic_and_realistic);

fn options(seed: u64) -> GenerateOptions {
    GenerateOptions {
        // A Monday: two full weeks.
        start: NaiveDate::from_ymd_opt(2026, 1, 5).expect("date"),
        days: 14,
        orders_per_day: 300,
        seed,
    }
}

async fn fresh(backend: Backend) -> (Database, Option<tempfile::TempDir>) {
    let (url, dir) = fresh_url(backend).await;
    (rainbow_db::connect(&url, 2).await.expect("connect"), dir)
}

async fn ints(db: &Database, sql: &str) -> Vec<i64> {
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_one(&db.pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    (0..row.len())
        .map(|i| row.try_get::<i64, _>(i).expect("integer"))
        .collect()
}

/// `fingerprint` of `options(7)`, the same on SQLite and PostgreSQL.
const EXPECTED_FINGERPRINT: [i64; 15] = [
    4145, 17780216, 2120059201, 7450, 5421304474, 15933, 300, 103574954, 207268271, 4799, 997,
    4204414, 326974389, 80, 64172,
];

/// Counts and order-sensitive checksums of every generated table.
async fn fingerprint(db: &Database) -> Vec<i64> {
    let mut out = Vec::new();
    for sql in [
        "SELECT COUNT(*), CAST(SUM(customer_id * 7 + payment_id * 13 + id) AS BIGINT), CAST(SUM(created_at % 1000003) AS BIGINT) FROM orders",
        "SELECT COUNT(*), CAST(SUM(order_id * product_id + quantity * price % 1000003) AS BIGINT), CAST(SUM(COALESCE(promotion_id, 0)) AS BIGINT) FROM orderdetails",
        "SELECT COUNT(*), CAST(SUM(price % 1000003 + sold_count + review_count) AS BIGINT), CAST(SUM(updated_at % 1000003) AS BIGINT), CAST(SUM(LENGTH(name)) AS BIGINT) FROM products",
        "SELECT COUNT(*), CAST(SUM(LENGTH(city) * id + LENGTH(email)) AS BIGINT), CAST(SUM(updated_at % 1000003) AS BIGINT) FROM customers",
        "SELECT COUNT(*), CAST(SUM(LENGTH(name) * id + LENGTH(city)) AS BIGINT) FROM sellers",
    ] {
        out.extend(ints(db, sql).await);
    }
    out
}

async fn seed_data_is_deterministic_and_realistic(backend: Backend) {
    let (db, _dir) = fresh(backend).await;
    let summary = generate(&db, &options(7)).await.expect("generate");
    assert!(summary.orders > 14 * 250, "{summary:?}");
    let first = fingerprint(&db).await;
    assert_eq!(first[0] as u64, summary.orders);
    // Pinned: a change of the generator (or of a dependency it relied on) changes the rows,
    // and every benchmark and analysis built on them; it must be deliberate.
    assert_eq!(first, EXPECTED_FINGERPRINT, "the generated rows changed");

    // Same options, same rows; another seed, other rows.
    let (again, _dir2) = fresh(backend).await;
    generate(&again, &options(7)).await.expect("generate again");
    assert_eq!(fingerprint(&again).await, first);
    let (other, _dir3) = fresh(backend).await;
    generate(&other, &options(8)).await.expect("other seed");
    assert_ne!(fingerprint(&other).await, first);

    // Weekday seasonality: Saturdays beat Mondays (1970-01-01, epoch day 0, was a Thursday).
    let day = "((created_at / 86400000000) + 3) % 7"; // 0 = Monday
    let by_day = |d: i64| format!("SELECT COUNT(*) FROM orders WHERE {day} = {d}");
    let (mon, sat) = (
        ints(&db, &by_day(0)).await[0],
        ints(&db, &by_day(5)).await[0],
    );
    assert!(sat > mon, "Saturday {sat} vs Monday {mon}");
    // Skewed popularity: the top 10% of products hold well over 10% of the lines.
    let products = ints(&db, "SELECT COUNT(*) FROM products").await[0];
    let lines = ints(&db, "SELECT COUNT(*) FROM orderdetails").await[0];
    let top = ints(
        &db,
        &format!(
            "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM (SELECT COUNT(*) AS n FROM orderdetails GROUP BY product_id ORDER BY n DESC LIMIT {}) AS top",
            products / 10
        ),
    )
    .await[0];
    assert!(
        top * 100 > lines * 35,
        "top 10% of products: {top} of {lines} lines"
    );
    // Both coupon types and most payment methods are used; prices are positive.
    let coupons = ints(&db, "SELECT COUNT(DISTINCT p.coupon_type) FROM orderdetails d JOIN promotions p ON p.id = d.promotion_id").await[0];
    assert_eq!(coupons, 2);
    let methods = ints(&db, "SELECT COUNT(DISTINCT payment_id) FROM orders").await[0];
    assert!(methods >= 5, "{methods} payment methods");
    assert_eq!(
        ints(
            &db,
            "SELECT COUNT(*) FROM orderdetails WHERE price <= 0 OR quantity <= 0"
        )
        .await[0],
        0
    );
    // The dimensions change over time: rows updated on several distinct later days.
    let first_day = ints(&db, "SELECT MIN(created_at) FROM products").await[0];
    for table in ["products", "customers", "sellers"] {
        let changed = ints(
            &db,
            &format!("SELECT COUNT(*), COUNT(DISTINCT updated_at / 86400000000) FROM {table} WHERE updated_at > {first_day}"),
        )
        .await;
        assert!(changed[0] > 0 && changed[1] > 1, "{table}: {changed:?}");
    }

    // E-mail changes keep the domain.
    let bad = ints(
        &db,
        "SELECT COUNT(*) FROM customers WHERE email NOT LIKE '%@mail.example'",
    )
    .await[0];
    assert_eq!(bad, 0);
    // No Fixed Amount discount reaches a third of the product's price.
    let cheap = ints(&db, "SELECT COUNT(*) FROM products p JOIN promotions m ON m.id = p.promotion_id WHERE m.coupon_type = 'Fixed Amount' AND p.price <= 3 * m.price_treatment * 1000").await[0];
    assert_eq!(cheap, 0);

    // A second run refuses to write and changes nothing.
    let e = generate(&db, &options(7))
        .await
        .expect_err("not empty")
        .to_string();
    assert!(e.contains("already holds"), "{e}");
    assert_eq!(fingerprint(&db).await, first);
    // Ids stay usable by the orders API (PostgreSQL sequences advanced past the generated ids).
    sqlx::query(
        "INSERT INTO orders (customer_id, payment_id, created_at, updated_at) VALUES (1, 1, 0, 0)",
    )
    .execute(&db.pool)
    .await
    .expect("an insert without an explicit id");
}

#[test]
fn the_command_fills_a_database_and_names_bad_flags() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_rainbow"))
            .args(args)
            .env("RAINBOW_HOME", dir.path())
            .env_remove("RAINBOW_DB_URL")
            .output()
            .expect("run rainbow")
    };
    let out = run(&[
        "seed-data",
        "--days",
        "3",
        "--orders-per-day",
        "40",
        "--start",
        "2026-02-01",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("rainbow_db.sqlite") && stdout.contains("over 3 days from 2026-02-01"),
        "{stdout}"
    );
    assert!(dir.path().join("rainbow_db.sqlite").exists());
    let out = run(&["seed-data", "--days", "3", "--start", "2026-02-01"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds"));
    for (args, expected) in [
        (
            &["seed-data", "--days", "4000000000", "--start", "2026-01-01"][..],
            "past the last representable date",
        ),
        (
            &["seed-data", "--orders-per-day", "4000000000"][..],
            "above the limit",
        ),
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(expected),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = run(&["seed-data", "--days", "many"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--days"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
