//! Services: the business rules. Creating an order is one unit of work: references are
//! checked, prices and promotions read, and the order with its lines written in one
//! transaction, or nothing is.

use rainbow_db::{Backend, Database};

use crate::error::{ApiError, FieldError};
use crate::loader::OrderLoader;
use crate::model::{NewOrder, Order, OrderLine, OrderPage, order_total};
use crate::pool::ConnectionPool;
use crate::repository::{self, Lookup, UnitOfWork};
use crate::writer::OrderWriter;

/// How many coalesced reads, and how many order groups, run at a time. The fewer, the larger
/// each group under load and the less work per request in the database; two keep one slow
/// statement from stalling the rest. Measured on 2 cores with 16 clients: 2 beat 4 for reads
/// (BENCHMARKS.md).
pub const GROUP_WORKERS: usize = 2;

/// Orders.
#[derive(Clone)]
pub struct OrderService {
    pool: ConnectionPool,
    backend: Backend,
    loader: OrderLoader,
    writer: OrderWriter,
}

pub(crate) use rainbow_db::now_micros;

/// An error for each of the references that `found` lacks: a customer, a payment method,
/// products given as (position in the request, id).
fn reference_errors(
    customer: Option<i64>,
    payment: Option<i64>,
    products: impl IntoIterator<Item = (usize, i64)>,
    found: &Lookup,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if let Some(id) = customer
        && !found.customers.contains(&id)
    {
        errors.push(FieldError::new(
            "customerId",
            format!("no customer with id {id}"),
        ));
    }
    if let Some(id) = payment
        && !found.payments.contains(&id)
    {
        errors.push(FieldError::new(
            "payment_id",
            format!("no payment method with id {id}"),
        ));
    }
    for (i, id) in products {
        if !found.prices.contains_key(&id) {
            errors.push(FieldError::new(
                format!("products[{i}].productId"),
                format!("no product with id {id}"),
            ));
        }
    }
    errors
}

/// Checks `new`'s references against `found` and prices its lines: every unknown reference
/// is reported, and a total that does not fit in 64 bits.
pub(crate) fn price(new: &NewOrder, found: &Lookup) -> Result<(Vec<OrderLine>, i64), ApiError> {
    let errors = reference_errors(
        Some(new.customer_id),
        Some(new.payment_id),
        new.products.iter().map(|l| l.product_id).enumerate(),
        found,
    );
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let lines = repository::price_lines(&new.products, &found.prices);
    let Some(total) = order_total(&lines) else {
        return Err(ApiError::Validation(vec![FieldError::new(
            "products",
            "the order total does not fit in 64 bits",
        )]));
    };
    Ok((lines, total))
}

/// Creates one order in its own unit of work: its references checked, its products' prices
/// and promotions read, the order and its lines written — all in one transaction.
pub(crate) async fn create_one(
    pool: &ConnectionPool,
    backend: Backend,
    new: &NewOrder,
) -> Result<Order, ApiError> {
    let mut lease = pool.acquire().await?;
    let mut uow = UnitOfWork::begin(lease.conn(), backend).await?;
    let ids: Vec<i64> = new.products.iter().map(|l| l.product_id).collect();
    let found = repository::lookup(
        uow.conn(),
        Some(new.customer_id),
        Some(new.payment_id),
        &ids,
    )
    .await?;
    let (lines, total) = price(new, &found)?;
    let now = now_micros();
    let id = repository::insert_order_with_lines(
        uow.conn(),
        backend,
        new.customer_id,
        new.payment_id,
        &lines,
        now,
    )
    .await?;
    uow.commit().await?;
    lease.release();
    Ok(Order {
        id,
        customer_id: new.customer_id,
        payment_id: new.payment_id,
        products: lines,
        total,
        created_at: now,
        updated_at: now,
    })
}

impl OrderService {
    /// A service over `db`.
    pub fn new(db: Database) -> Self {
        let pool = ConnectionPool::new(db.pool);
        OrderService {
            loader: OrderLoader::new(pool.clone(), GROUP_WORKERS),
            writer: OrderWriter::new(pool.clone(), GROUP_WORKERS),
            pool,
            backend: db.backend,
        }
    }

    /// Creates an order: unknown customer, payment or products are reported together. On
    /// PostgreSQL orders arriving together are written together ([`OrderWriter`]); on SQLite
    /// (one writer at a time anyway) each in its own unit of work.
    pub async fn create(&self, new: NewOrder) -> Result<Order, ApiError> {
        match self.backend {
            Backend::Postgres => self.writer.create(new).await,
            Backend::Sqlite => create_one(&self.pool, self.backend, &new).await,
        }
    }

    /// Errors for references that do not exist: a customer, a payment method, products given
    /// as (position in the request, id). Used to report them next to shape errors.
    pub async fn unknown_references(
        &self,
        customer: Option<i64>,
        payment: Option<i64>,
        products: &[(usize, i64)],
    ) -> Result<Vec<FieldError>, ApiError> {
        let ids: Vec<i64> = products.iter().map(|(_, id)| *id).collect();
        let mut lease = self.pool.acquire().await?;
        let found = repository::lookup(lease.conn(), customer, payment, &ids).await?;
        lease.release();
        Ok(reference_errors(
            customer,
            payment,
            products.iter().copied(),
            &found,
        ))
    }

    /// The order `id`.
    pub async fn get(&self, id: i64) -> Result<Order, ApiError> {
        self.loader
            .load(id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no order with id {id}")))
    }

    /// A page of orders after `after_id`.
    pub async fn list(&self, after_id: i64, limit: i64) -> Result<OrderPage, ApiError> {
        let mut lease = self.pool.acquire().await?;
        let orders = repository::orders_after(lease.conn(), after_id, limit).await?;
        lease.release();
        let next_after_id = (orders.len() as i64 == limit)
            .then(|| orders.last().map(|o| o.id))
            .flatten();
        Ok(OrderPage {
            orders,
            next_after_id,
        })
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        let ping = async {
            let mut lease = self.pool.acquire().await?;
            sqlx::query("SELECT 1").fetch_one(lease.conn()).await?;
            lease.release();
            Ok::<_, sqlx::Error>(())
        };
        matches!(
            tokio::time::timeout(std::time::Duration::from_secs(2), ping).await,
            Ok(Ok(()))
        )
    }
}
