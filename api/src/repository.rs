//! Repositories: the sqlx queries on the Rainbow DB, and [`UnitOfWork`], which owns the
//! transaction a service's changes commit in (or roll back with, when it is dropped).

use std::collections::HashMap;

use rainbow_db::Backend;
use sqlx::{Any, AnyConnection, AnyPool, AssertSqlSafe, Row, Transaction};

use crate::model::{NewLine, Order, OrderLine, order_total};

/// A transaction: everything done through it commits together or not at all.
pub struct UnitOfWork {
    tx: Transaction<'static, Any>,
}

impl UnitOfWork {
    /// Begins a transaction. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`):
    /// a transaction that reads and then writes would otherwise fail with "database is locked"
    /// when another writer got in between, instead of waiting.
    pub async fn begin(pool: &AnyPool, backend: Backend) -> Result<Self, sqlx::Error> {
        let tx = match backend {
            Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => pool.begin().await?,
        };
        Ok(UnitOfWork { tx })
    }

    /// The connection to run repository queries on.
    pub fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    /// Commits.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

/// `($first, $first+1, …)` for `n` values.
fn list(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether a row with `id` exists in `table` (`customers` or `payments`).
pub async fn exists(
    conn: &mut AnyConnection,
    table: &'static str,
    id: i64,
) -> Result<bool, sqlx::Error> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT 1 FROM {table} WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(row.is_some())
}

/// Price and promotion of each existing product among `ids`.
pub async fn product_prices(
    conn: &mut AnyConnection,
    ids: &[i64],
) -> Result<HashMap<i64, (i64, Option<i64>)>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!(
        "SELECT id, price, promotion_id FROM products WHERE id IN ({})",
        list(1, ids.len())
    );
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for id in ids {
        q = q.bind(*id);
    }
    let mut out = HashMap::with_capacity(ids.len());
    for row in q.fetch_all(conn).await? {
        out.insert(
            row.try_get::<i64, _>(0)?,
            (row.try_get::<i64, _>(1)?, row.try_get::<Option<i64>, _>(2)?),
        );
    }
    Ok(out)
}

/// What [`lookup`] found: whether the customer and the payment method exist, and the price
/// and promotion of each existing product.
pub struct Lookup {
    /// The customer exists.
    pub customer: bool,
    /// The payment method exists.
    pub payment: bool,
    /// Existing products: id -> (price, promotion).
    pub prices: HashMap<i64, (i64, Option<i64>)>,
}

/// Checks an order's references and reads its products' prices in one round trip.
pub async fn lookup(
    conn: &mut AnyConnection,
    customer: i64,
    payment: i64,
    products: &[i64],
) -> Result<Lookup, sqlx::Error> {
    let mut sql = "SELECT CAST(1 AS BIGINT), id, CAST(0 AS BIGINT), CAST(NULL AS BIGINT) FROM customers WHERE id = $1 \
                   UNION ALL SELECT CAST(2 AS BIGINT), id, CAST(0 AS BIGINT), CAST(NULL AS BIGINT) FROM payments WHERE id = $2"
        .to_owned();
    if !products.is_empty() {
        sql.push_str(&format!(
            " UNION ALL SELECT CAST(3 AS BIGINT), id, price, promotion_id FROM products WHERE id IN ({})",
            list(3, products.len())
        ));
    }
    let mut q = sqlx::query(AssertSqlSafe(sql)).bind(customer).bind(payment);
    for id in products {
        q = q.bind(*id);
    }
    let mut found = Lookup {
        customer: false,
        payment: false,
        prices: HashMap::with_capacity(products.len()),
    };
    for row in q.fetch_all(conn).await? {
        match row.try_get::<i64, _>(0)? {
            1 => found.customer = true,
            2 => found.payment = true,
            _ => {
                found
                    .prices
                    .insert(row.try_get(1)?, (row.try_get(2)?, row.try_get(3)?));
            }
        }
    }
    Ok(found)
}

/// Inserts an order and its lines; returns the order's id. On PostgreSQL one statement
/// (a data-modifying CTE), on SQLite two; either way inside the caller's transaction.
pub async fn insert_order_with_lines(
    conn: &mut AnyConnection,
    backend: Backend,
    customer_id: i64,
    payment_id: i64,
    lines: &[OrderLine],
    now: i64,
) -> Result<i64, sqlx::Error> {
    if backend == Backend::Sqlite || lines.is_empty() {
        let id = insert_order(conn, customer_id, payment_id, now).await?;
        insert_lines(conn, id, lines, now).await?;
        return Ok(id);
    }
    let values: Vec<String> = (0..lines.len())
        .map(|i| {
            let b = 4 + i * 4;
            format!("(${b}, ${}, ${}, ${})", b + 1, b + 2, b + 3)
        })
        .collect();
    let sql = format!(
        "WITH o AS (INSERT INTO orders (customer_id, payment_id, created_at, updated_at) VALUES ($1, $2, $3, $3) RETURNING id) \
         INSERT INTO orderdetails (order_id, product_id, quantity, price, promotion_id, created_at, updated_at) \
         SELECT o.id, v.column1, v.column2, v.column3, v.column4, $3, $3 FROM o, (VALUES {}) AS v RETURNING order_id",
        values.join(", ")
    );
    let mut q = sqlx::query(AssertSqlSafe(sql))
        .bind(customer_id)
        .bind(payment_id)
        .bind(now);
    for l in lines {
        q = q
            .bind(l.product_id)
            .bind(l.quantity)
            .bind(l.price)
            .bind(l.promotion_id);
    }
    let rows = q.fetch_all(conn).await?;
    match rows.first() {
        Some(row) => row.try_get(0),
        None => Err(sqlx::Error::RowNotFound),
    }
}

/// Inserts an order; returns its id.
pub async fn insert_order(
    conn: &mut AnyConnection,
    customer_id: i64,
    payment_id: i64,
    now: i64,
) -> Result<i64, sqlx::Error> {
    let row = sqlx::query(
        "INSERT INTO orders (customer_id, payment_id, created_at, updated_at) VALUES ($1, $2, $3, $3) RETURNING id",
    )
    .bind(customer_id)
    .bind(payment_id)
    .bind(now)
    .fetch_one(conn)
    .await?;
    row.try_get(0)
}

/// Inserts an order's lines with their prices and promotions.
pub async fn insert_lines(
    conn: &mut AnyConnection,
    order_id: i64,
    lines: &[OrderLine],
    now: i64,
) -> Result<(), sqlx::Error> {
    let values: Vec<String> = (0..lines.len())
        .map(|i| {
            let b = i * 4;
            format!(
                "($1, ${}, ${}, ${}, ${}, $2, $2)",
                b + 3,
                b + 4,
                b + 5,
                b + 6
            )
        })
        .collect();
    let sql = format!(
        "INSERT INTO orderdetails (order_id, product_id, quantity, price, promotion_id, created_at, updated_at) VALUES {}",
        values.join(", ")
    );
    let mut q = sqlx::query(AssertSqlSafe(sql)).bind(order_id).bind(now);
    for l in lines {
        q = q
            .bind(l.product_id)
            .bind(l.quantity)
            .bind(l.price)
            .bind(l.promotion_id);
    }
    q.execute(conn).await?;
    Ok(())
}

/// Orders with `id > after_id`, by id, at most `limit`, with their lines.
pub async fn orders_after(
    conn: &mut AnyConnection,
    after_id: i64,
    limit: i64,
) -> Result<Vec<Order>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, customer_id, payment_id, created_at, updated_at FROM orders WHERE id > $1 ORDER BY id LIMIT $2",
    )
    .bind(after_id)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let mut orders = Vec::with_capacity(rows.len());
    for row in rows {
        orders.push(Order {
            id: row.try_get(0)?,
            customer_id: row.try_get(1)?,
            payment_id: row.try_get(2)?,
            products: Vec::new(),
            total: 0,
            created_at: row.try_get(3)?,
            updated_at: row.try_get(4)?,
        });
    }
    let (Some(first), Some(last)) = (orders.first().map(|o| o.id), orders.last().map(|o| o.id))
    else {
        return Ok(orders);
    };
    let lines = sqlx::query(
        "SELECT order_id, product_id, quantity, price, promotion_id FROM orderdetails \
         WHERE order_id BETWEEN $1 AND $2 ORDER BY order_id, id",
    )
    .bind(first)
    .bind(last)
    .fetch_all(conn)
    .await?;
    let index: HashMap<i64, usize> = orders.iter().enumerate().map(|(i, o)| (o.id, i)).collect();
    for row in lines {
        let order_id: i64 = row.try_get(0)?;
        if let Some(&i) = index.get(&order_id) {
            let line = OrderLine {
                product_id: row.try_get(1)?,
                quantity: row.try_get(2)?,
                price: row.try_get(3)?,
                promotion_id: row.try_get(4)?,
            };
            orders[i].products.push(line);
        }
    }
    for order in &mut orders {
        order.total = total_of(order)?;
    }
    Ok(orders)
}

/// The order `id`, with its lines, in one round trip.
pub async fn order(conn: &mut AnyConnection, id: i64) -> Result<Option<Order>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT o.id, o.customer_id, o.payment_id, o.created_at, o.updated_at, \
         d.product_id, d.quantity, d.price, d.promotion_id \
         FROM orders o LEFT JOIN orderdetails d ON d.order_id = o.id WHERE o.id = $1 ORDER BY d.id",
    )
    .bind(id)
    .fetch_all(conn)
    .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let mut order = Order {
        id: first.try_get(0)?,
        customer_id: first.try_get(1)?,
        payment_id: first.try_get(2)?,
        products: Vec::with_capacity(rows.len()),
        total: 0,
        created_at: first.try_get(3)?,
        updated_at: first.try_get(4)?,
    };
    for row in &rows {
        let Some(product_id) = row.try_get::<Option<i64>, _>(5)? else {
            continue;
        };
        let line = OrderLine {
            product_id,
            quantity: row.try_get(6)?,
            price: row.try_get(7)?,
            promotion_id: row.try_get(8)?,
        };
        order.products.push(line);
    }
    order.total = total_of(&order)?;
    Ok(Some(order))
}

/// The total of a stored order; an overflow (only possible for rows written around the API,
/// which refuses such orders) is reported as a decode error rather than a wrong number.
fn total_of(order: &Order) -> Result<i64, sqlx::Error> {
    order_total(&order.products).ok_or_else(|| {
        sqlx::Error::Decode(format!("order {}: total does not fit in 64 bits", order.id).into())
    })
}

/// Lines of a new order, priced from `prices` (every product must be in it).
pub fn price_lines(lines: &[NewLine], prices: &HashMap<i64, (i64, Option<i64>)>) -> Vec<OrderLine> {
    lines
        .iter()
        .filter_map(|l| {
            prices
                .get(&l.product_id)
                .map(|&(price, promotion_id)| OrderLine {
                    product_id: l.product_id,
                    quantity: l.quantity,
                    price,
                    promotion_id,
                })
        })
        .collect()
}
