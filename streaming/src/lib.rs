//! Rainbow's speed layer (the seed's "Speed Layer" and "Kafka" sections): change data capture
//! from the Rainbow DB on PostgreSQL into Kafka, and the sink that writes those changes into
//! speed tables in the warehouse.
//!
//! ```text
//! PostgreSQL ──wal2json slot──► cdc ──rdkafka, one topic per table──► sink ──► warehouse
//!  (Rainbow DB)   (peek, produce,       (key = primary key,             (micro-batches,   speed.<table>_changes
//!                  ack, advance)          value = Debezium envelope)      Delta txn offsets) speed.<table> (view)
//! ```
//!
//! - [`cdc`]: polls a logical replication slot (`wal2json`, format 2) over the project's sqlx
//!   pool and produces one message per row change; the slot advances only after Kafka
//!   acknowledged every message of the batch, so the slot is the durable cursor: a crash
//!   replays, never loses. A new slot starts with a snapshot (op `r`) consistent with it.
//! - [`envelope`]: the change event and its wire shape — Debezium's envelope (`before`,
//!   `after`, `source`, `op`, `ts_ms`) plus `source.commit_lsn`, so existing consumers read it.
//! - [`sink`]: reads the topics from the offsets recorded in the speed tables (Delta
//!   application transactions written in the same commit as the rows), so a crash neither
//!   loses nor duplicates an effect; malformed messages go to a dead-letter topic.
//! - [`serving`]: the unified views (batch ∪ speed, each order counted once by row version).
//! - [`kafka`]: client settings and topic creation.
//!
//! Invariant: every change is identified by `(commit_lsn, lsn)`; replays carry the same pair,
//! and readers keep the newest pair per primary key, so applying a change twice has no effect.

pub mod bench;
pub mod cdc;
pub mod config;
pub mod envelope;
pub mod kafka;
pub mod serving;
pub mod sink;

/// The Kafka client this crate is built on (tests and tools produce and read with it).
pub use rdkafka;

use rainbow_warehouse::error::WarehouseError;

/// What can go wrong in the speed layer.
#[derive(Debug, thiserror::Error)]
pub enum StreamingError {
    /// A query on the source database failed.
    #[error("{context}")]
    Database {
        /// What was being done.
        context: String,
        /// The database error.
        #[source]
        source: sqlx::Error,
    },
    /// Connecting to the source database failed.
    #[error("connecting to the source database")]
    Connect(#[source] rainbow_db::DbError),
    /// A Kafka client call failed.
    #[error("{context}")]
    Kafka {
        /// What was being done.
        context: String,
        /// The client's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// Writing or reading a speed table failed.
    #[error("{context}")]
    Warehouse {
        /// What was being done.
        context: String,
        /// The warehouse's error (boxed: it is large).
        #[source]
        source: Box<WarehouseError>,
    },
    /// wal2json produced output this decoder does not understand.
    #[error("wal2json output at {lsn}: {message}")]
    Decode {
        /// The LSN of the row.
        lsn: String,
        /// What is wrong.
        message: String,
    },
    /// The setup cannot work (e.g. `wal_level` is not `logical`).
    #[error("{0}")]
    Setup(String),
}

impl StreamingError {
    pub(crate) fn db(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> Self {
        let context = context.into();
        move |source| StreamingError::Database { context, source }
    }

    pub(crate) fn kafka(
        context: impl Into<String>,
    ) -> impl FnOnce(rdkafka::error::KafkaError) -> Self {
        let context = context.into();
        move |source| StreamingError::Kafka { context, source }
    }

    pub(crate) fn warehouse(context: impl Into<String>) -> impl FnOnce(WarehouseError) -> Self {
        let context = context.into();
        move |source| StreamingError::Warehouse {
            context,
            source: Box::new(source),
        }
    }
}

/// Results of this crate.
pub type Result<T, E = StreamingError> = std::result::Result<T, E>;
