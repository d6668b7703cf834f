//! [`OrderLoader`]: reads of single orders by id, coalesced ([`crate::coalesce`]).
//!
//! Every `GET /api/v1/orders/{id}` queues its id; the ids queued while the readers are busy
//! (up to [`MAX_BATCH`]) are read with one statement on one connection, instead of each
//! paying a round trip and an executor start-up in the database.
//!
//! Consistency is that of one statement per request: a batch's statement starts after every
//! request in it arrived, so a read sees every order committed before its request came in.

use std::collections::HashMap;
use std::sync::Arc;

use crate::coalesce::{Coalescer, GroupWork};
use crate::error::ApiError;
use crate::model::Order;
use crate::pool::ConnectionPool;
use crate::repository;

/// Most ids read by one statement.
pub const MAX_BATCH: usize = 64;

type Answer = Result<Option<Order>, ApiError>;

/// Coalesces concurrent reads of orders by id.
#[derive(Clone)]
pub struct OrderLoader {
    coalescer: Coalescer<i64, Answer>,
}

impl OrderLoader {
    /// A loader reading through `pool` with `readers` concurrent statements at most.
    pub fn new(pool: ConnectionPool, readers: usize) -> Self {
        let work: GroupWork<i64, Answer> = Arc::new(move |ids: Vec<i64>| {
            let pool = pool.clone();
            Box::pin(async move { read_group(&pool, ids).await })
        });
        OrderLoader {
            coalescer: Coalescer::new(readers, MAX_BATCH, work),
        }
    }

    /// The order `id`, or `None` if there is none.
    pub async fn load(&self, id: i64) -> Answer {
        self.coalescer
            .submit(id)
            .await
            .unwrap_or(Err(ApiError::Unavailable))
    }
}

/// Reads the orders `ids` with one statement; an answer per id.
async fn read_group(pool: &ConnectionPool, ids: Vec<i64>) -> Vec<Answer> {
    let distinct = statement_ids(&ids);
    match read(pool, &distinct).await {
        Ok(orders) => ids.iter().map(|id| Ok(orders.get(id).cloned())).collect(),
        Err(e) => {
            tracing::error!(error = %e, orders = ids.len(), "reading orders failed");
            ids.iter().map(|_| Err(ApiError::shared(&e))).collect()
        }
    }
}

/// The group's ids, distinct, padded (with the first) to a power of two, so that a handful of
/// statement texts cover every group size and each stays prepared on every connection.
fn statement_ids(ids: &[i64]) -> Vec<i64> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    if let Some(&first) = ids.first() {
        ids.resize(ids.len().next_power_of_two(), first);
    }
    ids
}

async fn read(pool: &ConnectionPool, ids: &[i64]) -> Result<HashMap<i64, Order>, sqlx::Error> {
    let mut lease = pool.acquire().await?;
    let orders = repository::orders_by_ids(lease.conn(), ids).await?;
    lease.release();
    Ok(orders)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_ids_are_distinct_then_padded_to_a_power_of_two() {
        assert_eq!(statement_ids(&[7]), vec![7]);
        assert_eq!(statement_ids(&[9, 7, 9]), vec![7, 9]);
        assert_eq!(statement_ids(&[3, 1, 2]), vec![1, 2, 3, 1]);
        assert_eq!(
            statement_ids(&[5, 4, 3, 2, 1]),
            vec![1, 2, 3, 4, 5, 1, 1, 1]
        );
    }
}
