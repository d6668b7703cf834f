//! [`OrderWriter`]: orders arriving together are written together, on PostgreSQL (group
//! commit, through [`crate::coalesce`]).
//!
//! A group is one transaction of four round trips whatever its size: `BEGIN`; one lookup of
//! every customer, payment method and product the group names, which also draws the new
//! order ids from the orders' sequence; one statement inserting every valid order and its
//! lines; `COMMIT`. Each order is still all-or-nothing and priced as of its transaction.
//! An order with unknown references gets its 400 and is left out of the group. If the group
//! fails as a whole (a trigger, a constraint, a lost connection), nothing of it was written
//! and each of its orders is retried alone in its own unit of work
//! ([`create_one`](crate::service)), so one bad order never fails another.

use std::sync::Arc;

use rainbow_db::Backend;

use crate::coalesce::{Coalescer, GroupWork};
use crate::error::ApiError;
use crate::model::{NewOrder, Order};
use crate::pool::ConnectionPool;
use crate::repository::{self, UnitOfWork};
use crate::service::{create_one, now_micros, price};

/// Most orders written by one transaction.
pub const MAX_GROUP: usize = 32;

type Answer = Result<Order, ApiError>;

/// Groups concurrent order creations into shared transactions (PostgreSQL).
#[derive(Clone)]
pub struct OrderWriter {
    coalescer: Coalescer<NewOrder, Answer>,
}

impl OrderWriter {
    /// A writer through `pool` with `writers` concurrent transactions at most.
    pub fn new(pool: ConnectionPool, writers: usize) -> Self {
        let work: GroupWork<NewOrder, Answer> = Arc::new(move |orders: Vec<NewOrder>| {
            let pool = pool.clone();
            Box::pin(async move { write_group(&pool, orders).await })
        });
        OrderWriter {
            coalescer: Coalescer::new(writers, MAX_GROUP, work),
        }
    }

    /// Creates `new` (in whatever group it joins).
    pub async fn create(&self, new: NewOrder) -> Answer {
        self.coalescer
            .submit(new)
            .await
            .unwrap_or(Err(ApiError::Unavailable))
    }
}

/// Writes a group; an answer per order.
async fn write_group(pool: &ConnectionPool, orders: Vec<NewOrder>) -> Vec<Answer> {
    match try_group(pool, &orders).await {
        Ok(answers) => answers,
        Err(e) => {
            tracing::warn!(error = %e, orders = orders.len(), "an order group failed; each order is retried alone");
            let mut answers = Vec::with_capacity(orders.len());
            for new in &orders {
                answers.push(create_one(pool, Backend::Postgres, new).await);
            }
            answers
        }
    }
}

/// One transaction for the whole group; `Err` when nothing of it was written.
async fn try_group(pool: &ConnectionPool, orders: &[NewOrder]) -> Result<Vec<Answer>, sqlx::Error> {
    let mut customers: Vec<i64> = orders.iter().map(|o| o.customer_id).collect();
    let mut payments: Vec<i64> = orders.iter().map(|o| o.payment_id).collect();
    let mut products: Vec<i64> = orders
        .iter()
        .flat_map(|o| o.products.iter().map(|l| l.product_id))
        .collect();
    for ids in [&mut customers, &mut payments, &mut products] {
        ids.sort_unstable();
        ids.dedup();
    }

    let mut lease = pool.acquire().await?;
    let mut uow = UnitOfWork::begin(lease.conn(), Backend::Postgres).await?;
    let found =
        repository::lookup_group(uow.conn(), &customers, &payments, &products, orders.len())
            .await?;
    let mut ids = found.order_ids.iter().copied();
    let now = now_micros();
    let mut answers = Vec::with_capacity(orders.len());
    let mut valid = Vec::with_capacity(orders.len());
    for new in orders {
        let answer = price(new, &found).and_then(|(products, total)| {
            let id = ids.next().ok_or_else(|| {
                ApiError::Internal("the orders' sequence gave too few ids".into())
            })?;
            Ok(Order {
                id,
                customer_id: new.customer_id,
                payment_id: new.payment_id,
                products,
                total,
                created_at: now,
                updated_at: now,
            })
        });
        if let Ok(order) = &answer {
            valid.push(order.clone());
        }
        answers.push(answer);
    }
    if !valid.is_empty() {
        repository::insert_group(uow.conn(), &valid, now).await?;
    }
    uow.commit().await?;
    lease.release();
    Ok(answers)
}
