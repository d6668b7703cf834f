//! The Rainbow SQL project (sql_models/) on the embedded warehouse: SCD2 dimensions from a
//! scripted master-dataset history, version by version, and rebuilding changes nothing.

use std::path::Path;

use rainbow_dbt::{Status, Verb};
use rainbow_warehouse::Warehouse;

use crate::support::DbtOptions as RunOptions;
use crate::support::warehouse_rows as rows;

fn sql_models() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/sql_models"))
}

/// One extracted version of a product: (dt, id, name, price, seller, updated_at).
fn version(dt: &str, id: i64, name: &str, price: i64, seller: i64, updated: &str) -> String {
    format!(
        "SELECT {id} AS id, '{name}' AS name, {price} AS price, {price} AS original_price, 4.5 AS rating_average, 10 AS review_count, 3 AS sold_count, 1 AS category_id, {seller} AS seller_id, 1 AS brand_id, CAST(NULL AS INT64) AS promotion_id, UNIX_MICROS(TIMESTAMP '2024-01-01 00:00:00') AS created_at, UNIX_MICROS(TIMESTAMP '{updated}') AS updated_at, '{dt}' AS dt"
    )
}

#[tokio::test]
async fn dim_products_keeps_every_version_of_a_scripted_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wh = Warehouse::open(dir.path().to_str().expect("utf-8"), "main")
        .await
        .expect("warehouse");
    let history = [
        version("2024-01-01", 1, "lamp", 100, 1, "2024-01-01 08:00:00"),
        version("2024-01-01", 2, "desk", 500, 2, "2024-01-01 09:00:00"),
        // Day 2: product 1 renamed; product 2's day-1 version extracted again (reprocessing).
        version("2024-01-02", 1, "lamp pro", 100, 1, "2024-01-02 10:00:00"),
        version("2024-01-02", 2, "desk", 500, 2, "2024-01-01 09:00:00"),
        // Day 3: product 1's price changes; product 2 touched without any tracked change.
        version("2024-01-03", 1, "lamp pro", 120, 1, "2024-01-03 10:00:00"),
        version("2024-01-03", 2, "desk", 500, 2, "2024-01-03 11:00:00"),
        // Day 4: product 1 moves to another seller.
        version("2024-01-04", 1, "lamp pro", 120, 3, "2024-01-04 12:00:00"),
    ];
    wh.execute(
        &format!(
            "CREATE TABLE raw.products AS {}",
            history.join(" UNION ALL ")
        ),
        "raw products",
    )
    .await
    .expect("raw products");
    let options = RunOptions {
        select: vec!["+dim_products".into()],
        ..Default::default()
    };
    let build = || async {
        let summary = crate::support::dbt(sql_models(), &wh, Verb::Build, &options)
            .await
            .expect("build");
        let bad: Vec<String> = summary
            .results
            .iter()
            .filter(|r| !matches!(r.status, Status::Success | Status::Pass))
            .map(|r| format!("{}: {}", r.name, r.message))
            .collect();
        assert!(bad.is_empty(), "{bad:?}");
        assert!(summary.count(Status::Pass) >= 4, "{summary:?}");
    };
    build().await;
    let dim = "select product_id, name, price, seller_id, valid_from, valid_to, is_current from dim_products order by product_id, valid_from, updated_at";
    let expected = [
        "1|lamp|100|1|2024-01-01|2024-01-02|false",
        "1|lamp pro|100|1|2024-01-02|2024-01-03|false",
        "1|lamp pro|120|1|2024-01-03|2024-01-04|false",
        "1|lamp pro|120|3|2024-01-04|2100-01-01|true",
        "2|desk|500|2|2024-01-01|2100-01-01|true",
    ];
    assert_eq!(rows(&wh, dim).await, expected);
    let keys = rows(
        &wh,
        "select product_key from dim_products order by product_key",
    )
    .await;
    build().await;
    assert_eq!(rows(&wh, dim).await, expected, "rebuilding changes nothing");
    assert_eq!(
        rows(
            &wh,
            "select product_key from dim_products order by product_key"
        )
        .await,
        keys,
        "surrogate keys are stable"
    );
}
