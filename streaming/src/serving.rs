//! The serving layer: the six analyses over batch ∪ speed, each order counted exactly once.
//!
//! The seed's unified view adds the batch view and the speed view, so an order both have seen
//! counts twice. Here the split is by **row version**: for every order and order line, the
//! newest version (by `updated_at`) across the master dataset (`main_staging.stg_*`, what the
//! batch layer absorbed) and the speed layer (`speed.*_changes`, newest change per key) wins,
//! the batch's on a tie. An order is served from the speed side when the speed layer holds a
//! newer version of the order or of one of its lines (or knows it was deleted); all its batch
//! fact rows are then left out and its lines are computed from the newest rows. Every other
//! order is served from `fact_sales` as the batch layer computed it. So an order is counted
//! once before its day's extract (speed), after it (batch: the versions tie), and forever
//! after a late write into a closed day that the immutable master dataset refuses (speed).
//!
//! Versions, not WAL positions: an extract's LSN does not say which transactions its snapshot
//! saw (a transaction can commit before the LSN and still be invisible to it), while a row
//! version says exactly what the master dataset holds. This relies on `updated_at` advancing
//! on every write, which every writer of the Rainbow DB does (the orders API, `seed-data`).
//!
//! Views (schema `serving`): `sales_lines` (one row per order line: order, product, date,
//! customer, payment method, seller and category as of the order, quantity, amounts, and the
//! side it came from), then `total_sales`, `sales_by_day_of_week`, `top_sellers`,
//! `top_profitable_products_by_category`, `payment_method_distribution`, `customer_ranking`
//! with the batch views' columns, the same six as `speed_<name>` over the speed side only
//! (what the batch layer has not absorbed yet), and `freshness` (the newest change served and
//! the data lag in ms). They are created once both the batch layer's tables and the speed tables exist.

use rainbow_warehouse::Warehouse;

use crate::sink::SPEED_SCHEMA;
use crate::{Result, StreamingError};

/// The warehouse schema of the unified views.
pub const SERVING_SCHEMA: &str = "serving";

/// The batch layer's relations the views read (the SQL project's schemas).
const BATCH_FACT: (&str, &str) = ("main_warehouse", "fact_sales");

/// Whether the batch layer has built what the unified views read.
pub fn batch_ready(warehouse: &Warehouse) -> bool {
    warehouse.kind(BATCH_FACT.0, BATCH_FACT.1).is_some()
        && warehouse.kind("main_staging", "stg_orders").is_some()
        && warehouse
            .kind(SPEED_SCHEMA, &crate::sink::changes_table("orders"))
            .is_some()
}

/// (name, SQL) of every unified view, in creation order.
pub fn views() -> Vec<(String, String)> {
    let latest = |table: &str, columns: &str| {
        format!(
            "SELECT {columns}, op, COALESCE(CAST(JSON_VALUE(after, '$.updated_at') AS INT64), \
             UNIX_MICROS(commit_time)) AS updated_at, commit_time \
             FROM {SPEED_SCHEMA}.{table}_changes WHERE TRUE \
             QUALIFY ROW_NUMBER() OVER (PARTITION BY key ORDER BY commit_lsn DESC, lsn DESC) = 1"
        )
    };
    let speed_orders = latest(
        "orders",
        "CAST(JSON_VALUE(key, '$.id') AS INT64) AS order_id",
    );
    let speed_lines = latest(
        "orderdetails",
        "CAST(JSON_VALUE(key, '$.id') AS INT64) AS order_detail_id, \
         CAST(JSON_VALUE(COALESCE(after, before), '$.order_id') AS INT64) AS order_id",
    );
    let sales_lines = format!(
        "WITH batch_orders AS (
    SELECT order_id, MAX(UNIX_MICROS(updated_at)) AS updated_at
    FROM main_staging.stg_orders GROUP BY order_id
),
batch_lines AS (
    SELECT order_detail_id, MAX(order_id) AS order_id, MAX(UNIX_MICROS(updated_at)) AS updated_at
    FROM main_staging.stg_orderdetails GROUP BY order_detail_id
),
speed_orders AS ({speed_orders}),
speed_lines AS ({speed_lines}),
speed_served AS (
    SELECT s.order_id
    FROM speed_orders AS s LEFT JOIN batch_orders AS b ON b.order_id = s.order_id
    WHERE b.updated_at IS NULL OR s.updated_at > b.updated_at
    UNION DISTINCT
    SELECT COALESCE(s.order_id, b.order_id) AS order_id
    FROM speed_lines AS s LEFT JOIN batch_lines AS b ON b.order_detail_id = s.order_detail_id
    WHERE b.updated_at IS NULL OR s.updated_at > b.updated_at
),
served AS (SELECT DISTINCT order_id FROM speed_served WHERE order_id IS NOT NULL),
batch_side AS (
    SELECT
        fs.order_transaction AS order_id,
        dp.product_id,
        dd.date AS order_date,
        dc.customer_id,
        dpay.method AS payment_method,
        ds.seller_id,
        dp.category_id,
        fs.sales_quantity AS quantity,
        fs.extended_sales_amount AS sales_amount,
        CAST(fs.extended_discount_amount AS NUMERIC) AS discount_amount,
        'batch' AS side
    FROM main_warehouse.fact_sales AS fs
    JOIN main_warehouse.dim_products AS dp ON fs.product_key = dp.product_key
    JOIN main_warehouse.dim_sellers AS ds ON fs.seller_key = ds.seller_key
    JOIN main_warehouse.dim_dates AS dd ON fs.date_key = dd.date_key
    JOIN main_warehouse.dim_customers AS dc ON fs.customer_key = dc.customer_key
    JOIN main_warehouse.dim_payments AS dpay ON fs.payment_key = dpay.payment_key
    LEFT JOIN served AS sv ON sv.order_id = fs.order_transaction
    WHERE sv.order_id IS NULL
),
speed_side AS (
    SELECT
        o.id AS order_id,
        l.product_id,
        DATE(TIMESTAMP_MICROS(o.created_at)) AS order_date,
        o.customer_id,
        pay.method AS payment_method,
        p.seller_id,
        p.category_id,
        l.quantity,
        l.quantity * l.price AS sales_amount,
        CAST(l.quantity * CASE
            WHEN prom.coupon_type = 'Percentage' THEN CAST(l.price AS NUMERIC) * prom.price_treatment / 100
            WHEN prom.coupon_type = 'Fixed Amount' THEN CAST(prom.price_treatment * 1000 AS NUMERIC)
            ELSE CAST(0 AS NUMERIC)
        END AS NUMERIC) AS discount_amount,
        'speed' AS side
    FROM served AS sv
    JOIN {SPEED_SCHEMA}.orders AS o ON o.id = sv.order_id
    JOIN {SPEED_SCHEMA}.orderdetails AS l ON l.order_id = o.id
    JOIN {SPEED_SCHEMA}.products AS p ON p.id = l.product_id
    JOIN {SPEED_SCHEMA}.payments AS pay ON pay.id = o.payment_id
    LEFT JOIN {SPEED_SCHEMA}.promotions AS prom ON prom.id = l.promotion_id
)
SELECT * FROM batch_side
UNION ALL
SELECT * FROM speed_side"
    );
    let mut views = vec![("sales_lines".to_owned(), sales_lines)];
    views.extend(
        analyses(&format!("{SERVING_SCHEMA}.sales_lines"))
            .into_iter()
            .map(|(name, sql)| (name.to_owned(), sql)),
    );
    // The speed views: the same analyses over what the batch layer has not absorbed yet.
    views.extend(
        analyses(&format!(
            "(SELECT * FROM {SERVING_SCHEMA}.sales_lines WHERE side = 'speed')"
        ))
        .into_iter()
        .map(|(name, sql)| (format!("speed_{name}"), sql)),
    );
    views.push((
        "freshness".to_owned(),
        format!(
            "SELECT MAX(commit_time) AS newest_change, \
                 TIMESTAMP_DIFF(CURRENT_TIMESTAMP(), MAX(commit_time), MILLISECOND) AS lag_ms \
                 FROM (SELECT commit_time FROM {SPEED_SCHEMA}.orders_changes \
                 UNION ALL SELECT commit_time FROM {SPEED_SCHEMA}.orderdetails_changes) AS changes"
        ),
    ));
    views
}

/// The six analyses (the batch views' columns) over the sales lines `lines` (a relation or
/// a parenthesized query).
fn analyses(lines: &str) -> Vec<(&'static str, String)> {
    // Current names: the source's newest (the speed layer's snapshot holds every row), else
    // the batch layer's current dimension row.
    let name_of = |speed: &str, dim: &str, id: &str| {
        format!(
            "LEFT JOIN {SPEED_SCHEMA}.{speed} AS n_s ON n_s.id = l.{id} \
             LEFT JOIN main_warehouse.{dim} AS n_b ON n_b.{id} = l.{id} AND n_b.is_current",
        )
    };
    vec![
        (
            "total_sales",
            format!(
                "SELECT SUM(quantity) AS total_sales_quantity, SUM(sales_amount) AS total_sales_amount, \
                 SUM(sales_amount - discount_amount) AS total_profit, MAX(order_date) AS current_run_date \
                 FROM {lines}"
            ),
        ),
        (
            "sales_by_day_of_week",
            format!(
                "SELECT EXTRACT(DAYOFWEEK FROM order_date) AS day_of_week_number, \
                 FORMAT_DATE('%A', order_date) AS day_of_week, SUM(quantity) AS sales_quantity, \
                 SUM(sales_amount) AS sales_amount FROM {lines} \
                 GROUP BY EXTRACT(DAYOFWEEK FROM order_date), FORMAT_DATE('%A', order_date)"
            ),
        ),
        (
            "top_sellers",
            format!(
                "SELECT l.seller_id, ANY_VALUE(COALESCE(n_s.name, n_b.name)) AS seller_name, \
                 SUM(l.quantity) AS sales_quantity, SUM(l.sales_amount) AS sales_amount, \
                 RANK() OVER (ORDER BY SUM(l.sales_amount) DESC) AS sales_rank \
                 FROM {lines} AS l {} GROUP BY l.seller_id",
                name_of("sellers", "dim_sellers", "seller_id")
            ),
        ),
        (
            "top_profitable_products_by_category",
            format!(
                "WITH profit AS (
    SELECT product_id, category_id, SUM(sales_amount - discount_amount) AS profit
    FROM {lines} GROUP BY product_id, category_id
),
named AS (
    SELECT pr.*, COALESCE(c_s.name, c_b.name) AS category, COALESCE(p_s.name, p_b.name) AS product_name
    FROM profit AS pr
    LEFT JOIN {SPEED_SCHEMA}.categories AS c_s ON c_s.id = pr.category_id
    LEFT JOIN main_warehouse.dim_categories AS c_b ON c_b.category_id = pr.category_id AND c_b.is_current
    LEFT JOIN {SPEED_SCHEMA}.products AS p_s ON p_s.id = pr.product_id
    LEFT JOIN main_warehouse.dim_products AS p_b ON p_b.product_id = pr.product_id AND p_b.is_current
)
SELECT category, product_id, product_name, profit,
    ROW_NUMBER() OVER (PARTITION BY category_id ORDER BY profit DESC, product_id) AS profit_rank
FROM named
WHERE TRUE
QUALIFY ROW_NUMBER() OVER (PARTITION BY category_id ORDER BY profit DESC, product_id) <= 5"
            ),
        ),
        (
            "payment_method_distribution",
            format!(
                "SELECT payment_method, COUNT(DISTINCT order_id) AS orders, \
                 SUM(sales_amount) AS sales_amount FROM {lines} GROUP BY payment_method"
            ),
        ),
        (
            "customer_ranking",
            format!(
                "SELECT l.customer_id, ANY_VALUE(COALESCE(n_s.name, n_b.name)) AS customer_name, \
                 COUNT(DISTINCT l.order_id) AS orders, SUM(l.sales_amount) AS sales_amount, \
                 RANK() OVER (ORDER BY SUM(l.sales_amount) DESC) AS customer_rank \
                 FROM {lines} AS l {} GROUP BY l.customer_id",
                name_of("customers", "dim_customers", "customer_id")
            ),
        ),
    ]
}

/// Creates (or replaces) the unified views.
pub async fn create_views(warehouse: &Warehouse) -> Result<()> {
    for (name, sql) in views() {
        warehouse
            .execute(
                &format!("CREATE OR REPLACE VIEW {SERVING_SCHEMA}.{name} AS {sql}"),
                &format!("the view {SERVING_SCHEMA}.{name}"),
            )
            .await
            .map_err(StreamingError::warehouse(format!(
                "creating the view {SERVING_SCHEMA}.{name}"
            )))?;
    }
    Ok(())
}
