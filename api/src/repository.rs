//! Repositories: the sqlx queries on the Rainbow DB, and [`UnitOfWork`], which owns the
//! transaction a service's changes commit in (or roll back with, when it is dropped).

use std::collections::{HashMap, HashSet};

use rainbow_db::Backend;
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, AssertSqlSafe, Connection, Row, Transaction};

use crate::model::{NewLine, Order, OrderLine, order_total};

/// A transaction: everything done through it commits together or not at all (dropped
/// without [`commit`](UnitOfWork::commit), it rolls back).
pub struct UnitOfWork<'c> {
    tx: Transaction<'c, Any>,
}

impl<'c> UnitOfWork<'c> {
    /// Begins a transaction on `conn`. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`): a transaction that reads and then writes would otherwise fail with
    /// "database is locked" when another writer got in between, instead of waiting.
    pub async fn begin(conn: &'c mut AnyConnection, backend: Backend) -> Result<Self, sqlx::Error> {
        let tx = match backend {
            Backend::Sqlite => conn.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => conn.begin().await?,
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

/// What [`lookup`] or [`lookup_group`] found: the customers and payment methods that exist,
/// the price and promotion of each existing product, and (for a group) new order ids.
#[derive(Default)]
pub struct Lookup {
    /// Existing customers among those asked for.
    pub customers: HashSet<i64>,
    /// Existing payment methods among those asked for.
    pub payments: HashSet<i64>,
    /// Existing products: id -> (price, promotion).
    pub prices: HashMap<i64, (i64, Option<i64>)>,
    /// Ids drawn from the orders' sequence, one per order of the group.
    pub order_ids: Vec<i64>,
}

impl Lookup {
    fn add(&mut self, row: &AnyRow) -> Result<(), sqlx::Error> {
        match row.try_get::<i64, _>(0)? {
            1 => {
                self.customers.insert(row.try_get(1)?);
            }
            2 => {
                self.payments.insert(row.try_get(1)?);
            }
            3 => {
                self.prices
                    .insert(row.try_get(1)?, (row.try_get(2)?, row.try_get(3)?));
            }
            _ => self.order_ids.push(row.try_get(1)?),
        }
        Ok(())
    }
}

/// Checks an order's references and reads its products' prices in one round trip. A `None`
/// customer or payment method is not looked up.
pub async fn lookup(
    conn: &mut AnyConnection,
    customer: Option<i64>,
    payment: Option<i64>,
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
    let mut found = Lookup::default();
    for row in q.fetch_all(conn).await? {
        found.add(&row)?;
    }
    Ok(found)
}

/// `{1,2,NULL}`: a PostgreSQL array literal, bound as one text parameter and cast to
/// `BIGINT[]` — one statement text whatever the group's size, so it stays prepared.
fn array<I: IntoIterator<Item = Option<i64>>>(values: I) -> String {
    let mut out = String::from("{");
    for (i, v) in values.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match v {
            Some(v) => out.push_str(&v.to_string()),
            None => out.push_str("NULL"),
        }
    }
    out.push('}');
    out
}

/// For a group of orders, on PostgreSQL, in one round trip: which of `customers`,
/// `payments` and `products` exist, the products' prices and promotions, and `orders` new
/// ids from the orders' sequence.
pub async fn lookup_group(
    conn: &mut AnyConnection,
    customers: &[i64],
    payments: &[i64],
    products: &[i64],
    orders: usize,
) -> Result<Lookup, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT CAST(1 AS BIGINT), id, CAST(0 AS BIGINT), CAST(NULL AS BIGINT) FROM customers WHERE id = ANY(CAST(CAST($1 AS TEXT) AS BIGINT[])) \
         UNION ALL SELECT CAST(2 AS BIGINT), id, CAST(0 AS BIGINT), CAST(NULL AS BIGINT) FROM payments WHERE id = ANY(CAST(CAST($2 AS TEXT) AS BIGINT[])) \
         UNION ALL SELECT CAST(3 AS BIGINT), id, price, promotion_id FROM products WHERE id = ANY(CAST(CAST($3 AS TEXT) AS BIGINT[])) \
         UNION ALL SELECT CAST(4 AS BIGINT), nextval(pg_get_serial_sequence('orders', 'id')), CAST(0 AS BIGINT), CAST(NULL AS BIGINT) \
         FROM generate_series(CAST(1 AS BIGINT), CAST($4 AS BIGINT))",
    )
    .bind(array(customers.iter().copied().map(Some)))
    .bind(array(payments.iter().copied().map(Some)))
    .bind(array(products.iter().copied().map(Some)))
    .bind(i64::try_from(orders).unwrap_or(i64::MAX))
    .fetch_all(conn)
    .await?;
    let mut found = Lookup::default();
    for row in &rows {
        found.add(row)?;
    }
    Ok(found)
}

/// Inserts a group of priced orders (ids already drawn) and their lines with one statement,
/// on PostgreSQL; lines are written in the orders' and the requests' order.
pub async fn insert_group(
    conn: &mut AnyConnection,
    orders: &[Order],
    now: i64,
) -> Result<(), sqlx::Error> {
    let lines = || {
        orders
            .iter()
            .flat_map(|o| o.products.iter().map(move |l| (o.id, l)))
    };
    sqlx::query(
        "WITH o AS (INSERT INTO orders (id, customer_id, payment_id, created_at, updated_at) \
           SELECT u.id, u.customer_id, u.payment_id, $4, $4 \
           FROM unnest(CAST(CAST($1 AS TEXT) AS BIGINT[]), CAST(CAST($2 AS TEXT) AS BIGINT[]), CAST(CAST($3 AS TEXT) AS BIGINT[])) AS u(id, customer_id, payment_id)) \
         INSERT INTO orderdetails (order_id, product_id, quantity, price, promotion_id, created_at, updated_at) \
         SELECT u.order_id, u.product_id, u.quantity, u.price, u.promotion_id, $4, $4 \
         FROM unnest(CAST(CAST($5 AS TEXT) AS BIGINT[]), CAST(CAST($6 AS TEXT) AS BIGINT[]), CAST(CAST($7 AS TEXT) AS BIGINT[]), \
                     CAST(CAST($8 AS TEXT) AS BIGINT[]), CAST(CAST($9 AS TEXT) AS BIGINT[])) \
              WITH ORDINALITY AS u(order_id, product_id, quantity, price, promotion_id, n) \
         ORDER BY u.n",
    )
    .bind(array(orders.iter().map(|o| Some(o.id))))
    .bind(array(orders.iter().map(|o| Some(o.customer_id))))
    .bind(array(orders.iter().map(|o| Some(o.payment_id))))
    .bind(now)
    .bind(array(lines().map(|(id, _)| Some(id))))
    .bind(array(lines().map(|(_, l)| Some(l.product_id))))
    .bind(array(lines().map(|(_, l)| Some(l.quantity))))
    .bind(array(lines().map(|(_, l)| Some(l.price))))
    .bind(array(lines().map(|(_, l)| l.promotion_id)))
    .execute(conn)
    .await?;
    Ok(())
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
    let ids: Vec<i64> = sqlx::query("SELECT id FROM orders WHERE id > $1 ORDER BY id LIMIT $2")
        .bind(after_id)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
    let mut orders = orders_by_ids(conn, &ids).await?;
    Ok(ids.iter().filter_map(|id| orders.remove(id)).collect())
}

/// The orders among `ids` that exist, with their lines, in one round trip. Ids may repeat.
pub async fn orders_by_ids(
    conn: &mut AnyConnection,
    ids: &[i64],
) -> Result<HashMap<i64, Order>, sqlx::Error> {
    let mut orders: HashMap<i64, Order> = HashMap::with_capacity(ids.len());
    if ids.is_empty() {
        return Ok(orders);
    }
    let sql = format!(
        "SELECT o.id, o.customer_id, o.payment_id, o.created_at, o.updated_at, \
         d.product_id, d.quantity, d.price, d.promotion_id \
         FROM orders o LEFT JOIN orderdetails d ON d.order_id = o.id WHERE o.id IN ({}) ORDER BY o.id, d.id",
        list(1, ids.len())
    );
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for id in ids {
        q = q.bind(*id);
    }
    for row in q.fetch_all(conn).await? {
        let id: i64 = row.try_get(0)?;
        let order = match orders.entry(id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(Order {
                id,
                customer_id: row.try_get(1)?,
                payment_id: row.try_get(2)?,
                products: Vec::new(),
                total: 0,
                created_at: row.try_get(3)?,
                updated_at: row.try_get(4)?,
            }),
        };
        let Some(product_id) = row.try_get::<Option<i64>, _>(5)? else {
            continue;
        };
        order.products.push(OrderLine {
            product_id,
            quantity: row.try_get(6)?,
            price: row.try_get(7)?,
            promotion_id: row.try_get(8)?,
        });
    }
    for order in orders.values_mut() {
        order.total = total_of(order)?;
    }
    Ok(orders)
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
