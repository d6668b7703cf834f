//! [`EventWriter`]: the single writer task that batches events into transactions.
//!
//! Steps hand their events to the writer; it drains everything queued and writes it in one
//! transaction (group commit), so a run's write cost grows with the number of batches, not the
//! number of events. `commit` waits until a batch is durable; `send` does not (log lines,
//! step-started events). Batches are written in the order they were sent.

use std::sync::Arc;

use sqlx::Any;
use sqlx::pool::PoolConnection;
use tokio::sync::{mpsc, oneshot};

use super::{RunUpdate, Storage};
use crate::error::{Error, Result};
use crate::event::Event;

/// Most events written in one transaction.
const MAX_EVENTS_PER_TX: usize = 4096;

struct Batch {
    events: Vec<Event>,
    updates: Vec<RunUpdate>,
    ack: Option<oneshot::Sender<Result<()>>>,
}

/// Handle to a writer task. Cloning shares the task; it stops when every handle is dropped.
#[derive(Clone, Debug)]
pub struct EventWriter {
    tx: mpsc::UnboundedSender<Batch>,
}

impl EventWriter {
    /// Spawns a writer task for `storage` on the current tokio runtime.
    pub fn spawn(storage: Storage) -> EventWriter {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(storage, rx));
        EventWriter { tx }
    }

    /// Queues events without waiting for them to be written.
    pub fn send(&self, events: Vec<Event>) {
        let batch = Batch {
            events,
            updates: Vec::new(),
            ack: None,
        };
        if self.tx.send(batch).is_err() {
            tracing::error!("the event writer has stopped; events dropped");
        }
    }

    /// Writes events and run updates atomically and waits until they are committed.
    pub async fn commit(&self, events: Vec<Event>, updates: Vec<RunUpdate>) -> Result<()> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Batch {
                events,
                updates,
                ack: Some(ack),
            })
            .map_err(|_| Error::Internal("the event writer has stopped".into()))?;
        done.await
            .map_err(|_| Error::Internal("the event writer stopped before acknowledging".into()))?
    }
}

async fn run(storage: Storage, mut rx: mpsc::UnboundedReceiver<Batch>) {
    // One connection for every batch: no pool round trip per transaction, and its prepared
    // statements stay warm. Dropped (and re-acquired) after an error.
    let mut conn = None;
    while let Some(first) = rx.recv().await {
        // Give steps finishing at the same moment the chance to join this transaction: one
        // yield costs microseconds, a transaction's round trips cost far more.
        tokio::task::yield_now().await;
        let mut batches = vec![first];
        let mut count = batches[0].events.len();
        while count < MAX_EVENTS_PER_TX {
            match rx.try_recv() {
                Ok(b) => {
                    count += b.events.len();
                    batches.push(b);
                }
                Err(_) => break,
            }
        }
        let events: Vec<Event> = batches
            .iter_mut()
            .flat_map(|b| std::mem::take(&mut b.events))
            .collect();
        let updates: Vec<RunUpdate> = batches
            .iter_mut()
            .flat_map(|b| std::mem::take(&mut b.updates))
            .collect();
        let started = std::time::Instant::now();
        let result = write(&storage, &mut conn, &events, &updates)
            .await
            .map_err(Arc::new);
        if result.is_err() {
            conn = None;
        }
        tracing::debug!(
            events = events.len(),
            messages = batches.len(),
            micros = started.elapsed().as_micros() as u64,
            "wrote one transaction"
        );
        if let Err(e) = &result {
            tracing::error!("writing {} events failed: {e}", events.len());
        }
        for batch in batches {
            if let Some(ack) = batch.ack {
                let _ = ack.send(result.clone().map_err(Error::Shared));
            }
        }
    }
}

async fn write(
    storage: &Storage,
    conn: &mut Option<PoolConnection<Any>>,
    events: &[Event],
    updates: &[RunUpdate],
) -> Result<()> {
    let c = match conn {
        Some(c) => c,
        None => conn.insert(storage.connection().await?),
    };
    super::write_batch_on(c, events, updates).await
}
