//! The speed sink: change events from Kafka into speed tables in the warehouse.
//!
//! Per source table, `speed.<table>_changes` is a Delta table of change events (one row per
//! event: `key` — the primary key as canonical JSON —, `op`, `commit_lsn`, `lsn`,
//! `commit_time` (TIMESTAMP), `before`/`after` as JSON text, and the Kafka partition and
//! offset it came from), appended once per micro-batch (at most `max_batch_rows` events or
//! `max_batch_wait` after the first). For the Rainbow DB's tables, the view `speed.<table>`
//! is the current state: the newest `(commit_lsn, lsn)` per key, deletions dropped, columns
//! typed as in the Rainbow DB.
//!
//! Exactly-once effect without Kafka transactions (which the test broker does not isolate):
//! each append commits, in the same Delta commit, the next offset of every topic partition it
//! covers (Delta application transactions, app id `rainbow-speed/<topic>/<partition>`); on
//! start the sink reads them and assigns itself the partitions at those offsets. A crash
//! before the commit re-reads the batch; a crash after it starts past it. Consumer-group
//! offsets are committed too, for monitoring only.
//!
//! A message that is not a change event (not JSON, no key, unknown `op`, another table's
//! event) is logged with its topic, partition and offset and copied to the dead-letter topic
//! with headers `rainbow.topic`, `rainbow.partition`, `rainbow.offset`, `rainbow.error`; the
//! rest of the stream goes on. (When a batch holds only dead letters its offsets are not
//! recorded, so a restart may copy them again: the dead-letter topic is at-least-once.)

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rainbow_warehouse::Warehouse;
use rainbow_warehouse::datafusion::arrow::array::{
    ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use rainbow_warehouse::datafusion::arrow::datatypes::{
    DataType, Field, Schema, SchemaRef, TimeUnit,
};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::envelope::ChangeEvent;
use crate::kafka::KafkaSettings;
use crate::{Result, StreamingError};

/// The warehouse schema (dataset) of the speed tables.
pub const SPEED_SCHEMA: &str = "speed";

/// What the sink reads and how it batches.
#[derive(Debug, Clone)]
pub struct SinkSettings {
    /// The topics.
    pub kafka: KafkaSettings,
    /// The source tables whose topics are read.
    pub tables: Vec<String>,
    /// Consumer group (its committed offsets are for monitoring; the speed tables hold the
    /// offsets the sink resumes from).
    pub group_id: String,
    /// Events per micro-batch at most.
    pub max_batch_rows: usize,
    /// How long a micro-batch waits for more events after its first.
    pub max_batch_wait: Duration,
    /// Told the total of change events written after every commit (what is visible in the
    /// speed tables): benchmarks and monitors watch it.
    pub progress: Option<tokio::sync::watch::Sender<u64>>,
    /// How often the change tables are folded to the newest event per key ([`compact`]);
    /// `None`: never.
    pub compact_every: Option<Duration>,
}

impl SinkSettings {
    /// Settings reading the Rainbow DB's topics.
    pub fn rainbow_db(kafka: KafkaSettings) -> SinkSettings {
        SinkSettings {
            kafka,
            tables: rainbow_db::source::tables()
                .into_iter()
                .map(|t| t.name)
                .collect(),
            group_id: "rainbow-speed".into(),
            max_batch_rows: 10_000,
            max_batch_wait: Duration::from_millis(500),
            progress: None,
            compact_every: Some(Duration::from_secs(300)),
        }
    }
}

/// What a sink run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Change events written to speed tables.
    pub events: u64,
    /// Messages moved to the dead-letter topic.
    pub dead_letters: u64,
    /// Delta commits made.
    pub commits: u64,
}

/// The change table of a source table.
pub fn changes_table(table: &str) -> String {
    format!("{table}_changes")
}

/// The application id under which a topic partition's next offset is recorded.
pub fn offset_app_id(topic: &str, partition: i32) -> String {
    format!("rainbow-speed/{topic}/{partition}")
}

/// The Arrow schema of a change table.
pub fn changes_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("op", DataType::Utf8, false),
        Field::new("commit_lsn", DataType::Int64, false),
        Field::new("lsn", DataType::Int64, false),
        Field::new(
            "commit_time",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("before", DataType::Utf8, true),
        Field::new("after", DataType::Utf8, true),
        Field::new("kafka_partition", DataType::Int32, false),
        Field::new("kafka_offset", DataType::Int64, false),
    ]))
}

/// Runs the sink until `cancel` fires (after the batch in progress is written).
pub async fn run(
    settings: &SinkSettings,
    warehouse: &Warehouse,
    cancel: CancellationToken,
) -> Result<SinkStats> {
    let kafka = &settings.kafka;
    let topics: BTreeMap<String, String> = settings
        .tables
        .iter()
        .map(|t| (kafka.topic(t), t.clone()))
        .collect();
    let mut all_topics: Vec<String> = topics.keys().cloned().collect();
    all_topics.push(kafka.dead_letter_topic());
    kafka.ensure_topics(&all_topics).await?;
    for table in &settings.tables {
        prepare_table(warehouse, table).await?;
    }
    let consumer: StreamConsumer = kafka
        .client()
        .set("group.id", &settings.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("session.timeout.ms", "6000")
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(StreamingError::kafka("creating the Kafka consumer"))?;
    let mut assignment = TopicPartitionList::new();
    for (topic, table) in &topics {
        let partitions = partition_count(&consumer, topic, kafka.partitions).await?;
        for partition in 0..partitions {
            let next = warehouse
                .transaction_version(
                    SPEED_SCHEMA,
                    &changes_table(table),
                    &offset_app_id(topic, partition),
                )
                .await
                .map_err(StreamingError::warehouse(format!(
                    "reading the offsets recorded in {SPEED_SCHEMA}.{}",
                    changes_table(table)
                )))?;
            let offset = next.map_or(Offset::Beginning, Offset::Offset);
            assignment
                .add_partition_offset(topic, partition, offset)
                .map_err(StreamingError::kafka("assigning partitions"))?;
        }
    }
    consumer
        .assign(&assignment)
        .map_err(StreamingError::kafka("assigning partitions"))?;
    let producer = kafka.producer()?;
    let mut stats = SinkStats::default();
    let mut compacted = Instant::now();
    // The unified views need the batch layer's tables too: created once both exist.
    let mut serving_ready = false;
    let mut serving_checked: Option<Instant> = None;

    while !cancel.is_cancelled() {
        if !serving_ready && serving_checked.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
            serving_checked = Some(Instant::now());
            // The batch layer builds its tables in other processes.
            warehouse
                .refresh_catalog()
                .await
                .map_err(StreamingError::warehouse("reading the warehouse directory"))?;
            if crate::serving::batch_ready(warehouse) {
                crate::serving::create_views(warehouse).await?;
                serving_ready = true;
                tracing::info!("unified views created in the serving schema");
            }
        }
        let mut batch: BTreeMap<String, TableBatch> = BTreeMap::new();
        let mut count = 0usize;
        let mut first: Option<Instant> = None;
        loop {
            let wait = match first {
                Some(t) => settings.max_batch_wait.saturating_sub(t.elapsed()),
                None => Duration::from_millis(250),
            };
            let message = tokio::select! {
                _ = cancel.cancelled() => break,
                m = tokio::time::timeout(wait, consumer.recv()) => m,
            };
            let message = match message {
                Err(_) => {
                    if first.is_some() {
                        break;
                    }
                    continue;
                }
                // Owned at once: a borrowed message must not live across an await.
                Ok(m) => m
                    .map_err(StreamingError::kafka("reading from Kafka"))?
                    .detach(),
            };
            first.get_or_insert_with(Instant::now);
            let topic = message.topic().to_owned();
            let Some(table) = topics.get(&topic) else {
                continue;
            };
            let entry = batch.entry(table.clone()).or_default();
            entry
                .next_offsets
                .insert((topic.clone(), message.partition()), message.offset() + 1);
            let parsed =
                ChangeEvent::from_message(message.key(), message.payload()).and_then(|event| {
                    if &event.table == table {
                        Ok(event)
                    } else {
                        Err(format!(
                            "an event of table {} on the topic of table {table}",
                            event.table
                        ))
                    }
                });
            match parsed {
                Ok(event) => {
                    entry.push(&event, message.partition(), message.offset());
                    count += 1;
                }
                Err(error) => {
                    tracing::warn!(
                        topic = %topic,
                        partition = message.partition(),
                        offset = message.offset(),
                        %error,
                        "malformed message moved to the dead-letter topic"
                    );
                    let partition = message.partition().to_string();
                    let offset = message.offset().to_string();
                    let headers = OwnedHeaders::new()
                        .insert(Header {
                            key: "rainbow.topic",
                            value: Some(&topic),
                        })
                        .insert(Header {
                            key: "rainbow.partition",
                            value: Some(&partition),
                        })
                        .insert(Header {
                            key: "rainbow.offset",
                            value: Some(&offset),
                        })
                        .insert(Header {
                            key: "rainbow.error",
                            value: Some(&error),
                        });
                    let dead_letter_topic = kafka.dead_letter_topic();
                    let mut record: FutureRecord<'_, [u8], [u8]> =
                        FutureRecord::to(&dead_letter_topic).headers(headers);
                    if let Some(key) = message.key() {
                        record = record.key(key);
                    }
                    if let Some(payload) = message.payload() {
                        record = record.payload(payload);
                    }
                    producer
                        .send(record, Timeout::After(Duration::from_secs(30)))
                        .await
                        .map_err(|(source, _)| StreamingError::Kafka {
                            context: "producing to the dead-letter topic".into(),
                            source,
                        })?;
                    stats.dead_letters += 1;
                }
            }
            if count >= settings.max_batch_rows {
                break;
            }
        }
        let mut committed = TopicPartitionList::new();
        for (table, rows) in batch {
            if rows.is_empty() {
                continue;
            }
            let transactions: Vec<(String, i64)> = rows
                .next_offsets
                .iter()
                .map(|((topic, partition), next)| (offset_app_id(topic, *partition), *next))
                .collect();
            for ((topic, partition), next) in &rows.next_offsets {
                let _ = committed.add_partition_offset(topic, *partition, Offset::Offset(*next));
            }
            let n = rows.len() as u64;
            let frame = warehouse
                .frame(changes_schema(), vec![rows.finish()?])
                .map_err(StreamingError::warehouse("building a micro-batch"))?;
            warehouse
                .append_with_transactions(SPEED_SCHEMA, &changes_table(&table), frame, transactions)
                .await
                .map_err(StreamingError::warehouse(format!(
                    "appending to {SPEED_SCHEMA}.{}",
                    changes_table(&table)
                )))?;
            stats.events += n;
            stats.commits += 1;
            if let Some(progress) = &settings.progress {
                progress.send_replace(stats.events);
            }
        }
        if committed.count() > 0
            && let Err(e) = consumer.commit(&committed, CommitMode::Async)
        {
            tracing::debug!(error = %e, "committing consumer offsets (monitoring only) failed");
        }
        // Between micro-batches, so no append races the rewrite.
        if settings
            .compact_every
            .is_some_and(|every| compacted.elapsed() >= every)
        {
            compacted = Instant::now();
            let removed = compact(warehouse, &settings.tables).await?;
            tracing::info!(removed, "change tables folded to the newest event per key");
        }
    }
    Ok(stats)
}

/// Folds every change table to the newest event per key (Debezium's log compaction, done on
/// the speed tables): what the current-state and unified views read is unchanged, the rows of
/// superseded versions and the small files of many micro-batches go. The offsets recorded in
/// the tables (Delta application transactions) stay. Returns the rows removed.
///
/// Rows the batch layer has absorbed are kept: the unified views read the speed side's
/// current rows (products, payments, promotions) for the orders they serve.
pub async fn compact(warehouse: &Warehouse, tables: &[String]) -> Result<u64> {
    let mut removed = 0u64;
    for table in tables {
        let name = changes_table(table);
        let what = format!("counting {SPEED_SCHEMA}.{name}");
        let before = warehouse
            .count(
                &format!("SELECT COUNT(*) FROM {SPEED_SCHEMA}.{name}"),
                "compaction",
            )
            .await
            .map_err(StreamingError::warehouse(what.clone()))?;
        let keys = warehouse
            .count(
                &format!("SELECT COUNT(DISTINCT key) FROM {SPEED_SCHEMA}.{name}"),
                "compaction",
            )
            .await
            .map_err(StreamingError::warehouse(what))?;
        if before == keys {
            continue;
        }
        warehouse
            .execute(
                &format!(
                    "CREATE OR REPLACE TABLE {SPEED_SCHEMA}.{name} AS SELECT * FROM \
                     {SPEED_SCHEMA}.{name} WHERE TRUE QUALIFY ROW_NUMBER() OVER \
                     (PARTITION BY key ORDER BY commit_lsn DESC, lsn DESC) = 1"
                ),
                &format!("compacting {SPEED_SCHEMA}.{name}"),
            )
            .await
            .map_err(StreamingError::warehouse(format!(
                "compacting {SPEED_SCHEMA}.{name}"
            )))?;
        removed += u64::try_from(before - keys).unwrap_or(0);
    }
    Ok(removed)
}

/// How many partitions `topic` has. Right after a topic is created the broker's metadata may
/// list fewer partitions than it will have; a partition left out of the assignment would never
/// be read, so this waits (≤ 30 s) until at least `expected` are listed, then takes what there
/// is (a topic made elsewhere with fewer partitions).
async fn partition_count(consumer: &StreamConsumer, topic: &str, expected: i32) -> Result<i32> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(StreamingError::kafka(format!(
                "reading the partitions of {topic}"
            )))?;
        let listed = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map_or(0, |t| {
                i32::try_from(t.partitions().len()).unwrap_or(i32::MAX)
            });
        if listed >= expected || (listed > 0 && Instant::now() >= deadline) {
            return Ok(listed);
        }
        if Instant::now() >= deadline {
            return Err(StreamingError::Setup(format!(
                "the topic {topic} has no partitions after 30 s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Creates the change table (empty) and, for a Rainbow DB table, its current-state view.
async fn prepare_table(warehouse: &Warehouse, table: &str) -> Result<()> {
    let name = changes_table(table);
    if warehouse.kind(SPEED_SCHEMA, &name).is_none() {
        let empty = warehouse
            .frame(changes_schema(), Vec::new())
            .map_err(StreamingError::warehouse("an empty change table"))?;
        warehouse
            .append_with_transactions(SPEED_SCHEMA, &name, empty, Vec::new())
            .await
            .map_err(StreamingError::warehouse(format!(
                "creating {SPEED_SCHEMA}.{name}"
            )))?;
    }
    let Some(def) = rainbow_db::source::tables()
        .into_iter()
        .find(|t| t.name == table)
    else {
        return Ok(());
    };
    let columns = def
        .columns
        .iter()
        .map(|c| {
            let ty = match c.kind {
                rainbow_db::source::ColumnKind::Int => "INT64",
                rainbow_db::source::ColumnKind::Text => "STRING",
                rainbow_db::source::ColumnKind::Double => "FLOAT64",
            };
            format!("CAST(JSON_VALUE(after, '$.{0}') AS {ty}) AS {0}", c.name)
        })
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "CREATE OR REPLACE VIEW {SPEED_SCHEMA}.{table} AS SELECT {columns}, \
         commit_lsn AS _commit_lsn, commit_time AS _commit_time FROM (SELECT *, \
         ROW_NUMBER() OVER (PARTITION BY key ORDER BY commit_lsn DESC, lsn DESC) AS _version \
         FROM {SPEED_SCHEMA}.{name}) AS changes WHERE _version = 1 AND op <> 'd'"
    );
    warehouse
        .execute(&sql, &format!("the view {SPEED_SCHEMA}.{table}"))
        .await
        .map_err(StreamingError::warehouse(format!(
            "creating the view {SPEED_SCHEMA}.{table}"
        )))?;
    Ok(())
}

/// The rows of one table in a micro-batch, column by column.
#[derive(Default)]
struct TableBatch {
    key: Vec<String>,
    op: Vec<&'static str>,
    commit_lsn: Vec<i64>,
    lsn: Vec<i64>,
    commit_time: Vec<i64>,
    before: Vec<Option<String>>,
    after: Vec<Option<String>>,
    partition: Vec<i32>,
    offset: Vec<i64>,
    /// Next offset per (topic, partition) seen in this batch, dead letters included.
    next_offsets: BTreeMap<(String, i32), i64>,
}

impl TableBatch {
    fn push(&mut self, event: &ChangeEvent, partition: i32, offset: i64) {
        let json = |m: &Option<serde_json::Map<String, serde_json::Value>>| {
            m.as_ref()
                .map(|m| serde_json::Value::Object(m.clone()).to_string())
        };
        self.key.push(event.key_json());
        self.op.push(event.op.code());
        self.commit_lsn
            .push(i64::try_from(event.commit_lsn.0).unwrap_or(i64::MAX));
        self.lsn
            .push(i64::try_from(event.lsn.0).unwrap_or(i64::MAX));
        self.commit_time.push(event.commit_time_us);
        self.before.push(json(&event.before));
        self.after.push(json(&event.after));
        self.partition.push(partition);
        self.offset.push(offset);
    }

    fn len(&self) -> usize {
        self.key.len()
    }

    fn is_empty(&self) -> bool {
        self.key.is_empty()
    }

    fn finish(self) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(self.key)),
            Arc::new(StringArray::from(self.op)),
            Arc::new(Int64Array::from(self.commit_lsn)),
            Arc::new(Int64Array::from(self.lsn)),
            Arc::new(TimestampMicrosecondArray::from(self.commit_time).with_timezone("UTC")),
            Arc::new(StringArray::from(self.before)),
            Arc::new(StringArray::from(self.after)),
            Arc::new(Int32Array::from(self.partition)),
            Arc::new(Int64Array::from(self.offset)),
        ];
        RecordBatch::try_new(changes_schema(), columns).map_err(|e| {
            StreamingError::Setup(format!("building a micro-batch of change events: {e}"))
        })
    }
}
