//! [`EventWriter`]: the single writer task that batches writes into transactions.
//!
//! Steps and backfills hand their [`WriteSet`]s to the writer; it drains everything queued and
//! writes it in one transaction (group commit), so a run's write cost grows with the number of
//! batches, not the number of events. `commit` waits until a set is durable; `send` does not
//! (log lines, step-started events). Sets are written in the order they were sent.

use std::sync::Arc;

use sqlx::Any;
use sqlx::pool::PoolConnection;
use tokio::sync::{mpsc, oneshot};

use super::{RunUpdate, Storage, WriteSet};
use crate::error::{Error, Result};
use crate::event::Event;

/// Most rows written in one transaction.
const MAX_ROWS_PER_TX: usize = 4096;

struct Batch {
    set: WriteSet,
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
        let set = WriteSet {
            events,
            ..WriteSet::default()
        };
        if self.tx.send(Batch { set, ack: None }).is_err() {
            tracing::error!("the event writer has stopped; events dropped");
        }
    }

    /// Queues a [`WriteSet`] without waiting for it to be written.
    pub fn send_set(&self, set: WriteSet) {
        if self.tx.send(Batch { set, ack: None }).is_err() {
            tracing::error!("the event writer has stopped; writes dropped");
        }
    }

    /// Writes events and run updates atomically and waits until they are committed.
    pub async fn commit(&self, events: Vec<Event>, run_updates: Vec<RunUpdate>) -> Result<()> {
        self.commit_set(WriteSet {
            events,
            run_updates,
            ..WriteSet::default()
        })
        .await
    }

    /// Writes a whole [`WriteSet`] atomically and waits until it is committed.
    pub async fn commit_set(&self, set: WriteSet) -> Result<()> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Batch {
                set,
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
        let mut acks = Vec::new();
        let mut set = WriteSet::default();
        let mut next = Some(first);
        while let Some(batch) = next.take() {
            set.extend(batch.set);
            acks.extend(batch.ack);
            if set.len() >= MAX_ROWS_PER_TX {
                break;
            }
            next = rx.try_recv().ok();
        }
        let started = std::time::Instant::now();
        let result = write(&storage, &mut conn, &set).await.map_err(Arc::new);
        if result.is_err() {
            conn = None;
        }
        tracing::debug!(
            rows = set.len(),
            waiters = acks.len(),
            micros = started.elapsed().as_micros() as u64,
            "wrote one transaction"
        );
        if let Err(e) = &result {
            tracing::error!(
                "writing {} rows failed: {}",
                set.len(),
                crate::error::error_chain(e.as_ref())
            );
        }
        for ack in acks {
            let _ = ack.send(result.clone().map_err(Error::Shared));
        }
    }
}

async fn write(
    storage: &Storage,
    conn: &mut Option<PoolConnection<Any>>,
    set: &WriteSet,
) -> Result<()> {
    let c = match conn {
        Some(c) => c,
        None => conn.insert(storage.connection().await?),
    };
    super::write_batch_on(c, set).await
}

impl crate::event::EventSink for EventWriter {
    fn emit(&self, events: Vec<Event>) {
        self.send(events);
    }
}
