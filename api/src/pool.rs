//! The API's connection pool: a [`Lease`] on one database connection per request.
//!
//! sqlx's pool pings every connection it takes back (a round trip to the database per
//! request, on top of the request's own statements). A request that ran its statements to
//! completion leaves its connection in a known state, so here a lease returned with
//! [`Lease::release`] goes straight back to the idle list. Only a lease dropped without it —
//! the request failed, or was cancelled mid-statement when its client went away — has its
//! connection pinged first (which also flushes the rollback of an unfinished transaction),
//! and closed if that fails. A connection idle for [`IDLE_BEFORE_PING`] or longer is pinged
//! before it is handed out, so a restarted database costs no request.
//!
//! Connections are opened through the sqlx pool of [`rainbow_db::connect`] (its connect
//! options and SQLite pragmas) and detached from it; this pool bounds how many are open, and
//! closes with it.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rainbow_db::IDLE_BEFORE_PING;
use sqlx::{AnyConnection, AnyPool, Connection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A bounded pool of connections, most recently used first.
#[derive(Clone)]
pub struct ConnectionPool {
    inner: Arc<Inner>,
}

struct Inner {
    /// Opens connections.
    factory: AnyPool,
    /// Idle connections, with when each was returned.
    idle: Mutex<Vec<(AnyConnection, Instant)>>,
    /// One permit per connection that may be open.
    permits: Arc<Semaphore>,
    acquire_timeout: Duration,
}

impl Inner {
    fn idle(&self) -> MutexGuard<'_, Vec<(AnyConnection, Instant)>> {
        // A panic while holding the lock cannot leave the list half-updated (push/pop only).
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl ConnectionPool {
    /// At most as many connections as `factory` allows, opened through it.
    pub fn new(factory: AnyPool) -> Self {
        let options = factory.options();
        let max = options.get_max_connections().max(1) as usize;
        let acquire_timeout = options.get_acquire_timeout();
        ConnectionPool {
            inner: Arc::new(Inner {
                factory,
                idle: Mutex::new(Vec::with_capacity(max)),
                permits: Arc::new(Semaphore::new(max)),
                acquire_timeout,
            }),
        }
    }

    /// A connection: an idle one (pinged first if it has been idle a while) or a new one.
    /// Waits for one to be free up to the pool's acquire timeout.
    pub async fn acquire(&self) -> Result<Lease, sqlx::Error> {
        tokio::time::timeout(self.inner.acquire_timeout, self.acquire_inner())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
    }

    async fn acquire_inner(&self) -> Result<Lease, sqlx::Error> {
        if self.inner.factory.is_closed() {
            // Closing the database's pool closes this one too.
            self.inner.idle().clear();
            return Err(sqlx::Error::PoolClosed);
        }
        let permit = Arc::clone(&self.inner.permits)
            .acquire_owned()
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        loop {
            let idle = self.inner.idle().pop();
            let Some((mut conn, since)) = idle else {
                let conn = self.inner.factory.acquire().await?.detach();
                return Ok(self.lease(conn, permit));
            };
            if since.elapsed() < IDLE_BEFORE_PING || conn.ping().await.is_ok() {
                return Ok(self.lease(conn, permit));
            }
            tracing::info!("dropping a pooled connection that no longer answers");
        }
    }

    fn lease(&self, conn: AnyConnection, permit: OwnedSemaphorePermit) -> Lease {
        Lease {
            conn: Some(conn),
            permit: Some(permit),
            pool: Arc::clone(&self.inner),
            released: false,
        }
    }
}

/// One connection, for one request. Call [`release`](Lease::release) once its last statement
/// has completed; dropped without it, the connection is checked before it is reused.
pub struct Lease {
    conn: Option<AnyConnection>,
    permit: Option<OwnedSemaphorePermit>,
    pool: Arc<Inner>,
    released: bool,
}

impl Lease {
    /// The connection.
    pub fn conn(&mut self) -> &mut AnyConnection {
        match self.conn.as_mut() {
            Some(conn) => conn,
            // `conn` is only taken in `drop`.
            None => unreachable!("a lease holds its connection until dropped"),
        }
    }

    /// Returns the connection to the pool as it is: every statement run on it completed.
    pub fn release(mut self) {
        self.released = true;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let (Some(mut conn), Some(permit)) = (self.conn.take(), self.permit.take()) else {
            return;
        };
        if self.pool.factory.is_closed() {
            return;
        }
        if self.released {
            self.pool.idle().push((conn, Instant::now()));
            drop(permit);
            return;
        }
        // Unknown state: check it (flushing a pending rollback) off the request's path; the
        // permit is held until then, so the pool never has more connections than permits.
        let pool = Arc::clone(&self.pool);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if conn.ping().await.is_ok() {
                    pool.idle().push((conn, Instant::now()));
                } else {
                    tracing::info!("closing a connection left in an unknown state");
                }
                drop(permit);
            });
        }
    }
}
