//! Services: the business rules. Creating an order is one unit of work: references are
//! checked, prices and promotions read, and the order with its lines written in one
//! transaction, or nothing is.

use rainbow_db::Database;

use crate::error::{ApiError, FieldError};
use crate::model::{NewOrder, Order, OrderPage, order_total};
use crate::repository::{self, UnitOfWork};

/// Orders.
#[derive(Clone)]
pub struct OrderService {
    db: Database,
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl OrderService {
    /// A service over `db`.
    pub fn new(db: Database) -> Self {
        OrderService { db }
    }

    /// Creates an order: unknown customer, payment or products are reported together.
    pub async fn create(&self, new: &NewOrder) -> Result<Order, ApiError> {
        let mut uow = UnitOfWork::begin(&self.db.pool, self.db.backend).await?;
        let ids: Vec<i64> = new.products.iter().map(|l| l.product_id).collect();
        let found = repository::lookup(uow.conn(), new.customer_id, new.payment_id, &ids).await?;
        let mut errors = Vec::new();
        if !found.customer {
            errors.push(FieldError::new(
                "customerId",
                format!("no customer with id {}", new.customer_id),
            ));
        }
        if !found.payment {
            errors.push(FieldError::new(
                "payment_id",
                format!("no payment method with id {}", new.payment_id),
            ));
        }
        for (i, line) in new.products.iter().enumerate() {
            if !found.prices.contains_key(&line.product_id) {
                errors.push(FieldError::new(
                    format!("products[{i}].productId"),
                    format!("no product with id {}", line.product_id),
                ));
            }
        }
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
        let now = now_micros();
        let id = repository::insert_order_with_lines(
            uow.conn(),
            self.db.backend,
            new.customer_id,
            new.payment_id,
            &lines,
            now,
        )
        .await?;
        uow.commit().await?;
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

    /// Errors for references that do not exist: a customer, a payment method, products given
    /// as (position in the request, id). Used to report them next to shape errors.
    pub async fn unknown_references(
        &self,
        customer: Option<i64>,
        payment: Option<i64>,
        products: &[(usize, i64)],
    ) -> Result<Vec<FieldError>, ApiError> {
        let mut conn = self.db.pool.acquire().await?;
        let mut errors = Vec::new();
        if let Some(id) = customer
            && !repository::exists(&mut conn, "customers", id).await?
        {
            errors.push(FieldError::new(
                "customerId",
                format!("no customer with id {id}"),
            ));
        }
        if let Some(id) = payment
            && !repository::exists(&mut conn, "payments", id).await?
        {
            errors.push(FieldError::new(
                "payment_id",
                format!("no payment method with id {id}"),
            ));
        }
        let ids: Vec<i64> = products.iter().map(|(_, id)| *id).collect();
        let prices = repository::product_prices(&mut conn, &ids).await?;
        for (i, id) in products {
            if !prices.contains_key(id) {
                errors.push(FieldError::new(
                    format!("products[{i}].productId"),
                    format!("no product with id {id}"),
                ));
            }
        }
        Ok(errors)
    }

    /// The order `id`.
    pub async fn get(&self, id: i64) -> Result<Order, ApiError> {
        let mut conn = self.db.pool.acquire().await?;
        repository::order(&mut conn, id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no order with id {id}")))
    }

    /// A page of orders after `after_id`.
    pub async fn list(&self, after_id: i64, limit: i64) -> Result<OrderPage, ApiError> {
        let mut conn = self.db.pool.acquire().await?;
        let orders = repository::orders_after(&mut conn, after_id, limit).await?;
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
        let ping = sqlx::query("SELECT 1").fetch_one(&self.db.pool);
        matches!(
            tokio::time::timeout(std::time::Duration::from_secs(2), ping).await,
            Ok(Ok(_))
        )
    }
}
