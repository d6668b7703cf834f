//! The speed layer against real components: PostgreSQL with wal2json (`RAINBOW_TEST_POSTGRES_URL`,
//! `wal_level=logical`) and a Kafka-protocol broker (`RAINBOW_TEST_KAFKA_BROKERS`, tansu in
//! scripts/test.sh), both started by scripts/test.sh.

use std::time::Duration;

use rainbow_streaming::cdc::{self, CdcSettings};
use rainbow_streaming::kafka::KafkaSettings;
use rainbow_streaming::rdkafka::consumer::{Consumer, StreamConsumer};
use rainbow_streaming::rdkafka::message::{Headers, Message};
use rainbow_streaming::rdkafka::producer::FutureRecord;
use rainbow_streaming::sink::{self, SinkSettings};
use rainbow_warehouse::Warehouse;
use tokio_util::sync::CancellationToken;

use crate::support::{Backend, fresh_url};

fn brokers() -> String {
    std::env::var("RAINBOW_TEST_KAFKA_BROKERS").unwrap_or_else(|_| {
        panic!(
            "RAINBOW_TEST_KAFKA_BROKERS is not set: run the suite with scripts/test.sh, which \
             starts a Kafka-protocol broker, or point it at one (host:port)"
        )
    })
}

/// Rows of a warehouse query as `a|b|c` lines.
async fn lines(warehouse: &Warehouse, sql: &str) -> Vec<String> {
    try_lines(warehouse, sql).await.expect("query")
}

async fn try_lines(
    warehouse: &Warehouse,
    sql: &str,
) -> Result<Vec<String>, rainbow_warehouse::error::WarehouseError> {
    let batches = warehouse.query(sql, "test").await?;
    let options = rainbow_warehouse::datafusion::arrow::util::display::FormatOptions::default()
        .with_null("NULL");
    let mut out = Vec::new();
    for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| {
                rainbow_warehouse::datafusion::arrow::util::display::ArrayFormatter::try_new(
                    c.as_ref(),
                    &options,
                )
                .expect("formatter")
            })
            .collect();
        for row in 0..batch.num_rows() {
            out.push(
                formatters
                    .iter()
                    .map(|f| f.value(row).to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            );
        }
    }
    Ok(out)
}

/// The source's customers as `id|name|city` lines, by id.
async fn source_customers(pool: &sqlx::AnyPool) -> Vec<String> {
    let rows: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT id, name, city FROM customers ORDER BY id")
            .fetch_all(pool)
            .await
            .expect("source rows");
    rows.into_iter()
        .map(|(id, name, city)| format!("{id}|{name}|{city}"))
        .collect()
}

/// Waits (≤ 60 s) until the speed view of customers equals the source.
async fn converge(warehouse: &Warehouse, pool: &sqlx::AnyPool) -> Vec<String> {
    let want = source_customers(pool).await;
    let mut got = Vec::new();
    for _ in 0..240 {
        // The view appears when the sink has started.
        got = try_lines(
            warehouse,
            "SELECT id, name, city FROM speed.customers ORDER BY id",
        )
        .await
        .unwrap_or_default();
        if got == want {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("the speed view never matched the source:\n want {want:?}\n got  {got:?}");
}

/// Prints a task's error at once (a failed task otherwise shows only as a timeout).
fn reported<T, E: std::fmt::Debug>(what: &str, result: Result<T, E>) -> Result<T, E> {
    if let Err(e) = &result {
        eprintln!("the {what} task failed: {e:?}");
    }
    result
}

async fn insert_customer(pool: &sqlx::AnyPool, name: &str) {
    sqlx::query(
        "INSERT INTO customers (name, email, city, created_at, updated_at) VALUES ($1, $2, 'Hà Nội', 1, 1)",
    )
    .bind(name)
    .bind(format!("{name}@example.com"))
    .execute(pool)
    .await
    .expect("insert");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_flow_from_postgresql_through_kafka_into_speed_tables() {
    let (url, _) = fresh_url(Backend::Postgres).await;
    let db = rainbow_db::connect(&url, 4).await.expect("connect");
    rainbow_db::source::migrate(&db).await.expect("migrate");
    let pool = db.pool.clone();
    // Rows that exist before the slot: they arrive through the snapshot.
    for name in ["An", "Bình", "Chi"] {
        insert_customer(&pool, name).await;
    }
    let run = uuid::Uuid::now_v7().simple().to_string();
    let kafka = KafkaSettings {
        brokers: brokers(),
        topic_prefix: format!("t{run}."),
        partitions: 3,
    };
    let slot = format!("rainbow_test_{run}");
    let cdc_settings = CdcSettings::rainbow_db(&url, &slot, kafka.clone());
    let mut sink_settings = SinkSettings::rainbow_db(kafka.clone());
    sink_settings.group_id = format!("rainbow-speed-{run}");
    sink_settings.max_batch_wait = Duration::from_millis(200);
    let dir = tempfile::tempdir().expect("tempdir");
    let warehouse = Warehouse::open(dir.path().to_str().expect("utf-8"), "main")
        .await
        .expect("warehouse");

    let cdc_cancel = CancellationToken::new();
    let cdc_task = tokio::spawn({
        let (settings, cancel) = (cdc_settings.clone(), cdc_cancel.clone());
        async move { reported("cdc", cdc::run(&settings, cancel).await) }
    });
    let sink_cancel = CancellationToken::new();
    let sink_task = tokio::spawn({
        let (settings, cancel, warehouse) = (
            sink_settings.clone(),
            sink_cancel.clone(),
            warehouse.clone(),
        );
        async move { reported("sink", sink::run(&settings, &warehouse, cancel).await) }
    });

    // The snapshot, then inserts, an update and a delete, each reflected in the speed view.
    converge(&warehouse, &pool).await;
    insert_customer(&pool, "Dũng").await;
    sqlx::query("UPDATE customers SET name = 'Bình Minh', city = 'Huế' WHERE name = 'Bình'")
        .execute(&pool)
        .await
        .expect("update");
    sqlx::query("DELETE FROM customers WHERE name = 'An'")
        .execute(&pool)
        .await
        .expect("delete");
    let view = converge(&warehouse, &pool).await;
    assert_eq!(view.len(), 3, "{view:?}");
    assert!(
        view.iter().any(|r| r.ends_with("|Bình Minh|Huế")),
        "{view:?}"
    );

    // A malformed message goes to the dead-letter topic; the stream goes on.
    let producer = kafka.producer().expect("producer");
    producer
        .send(
            FutureRecord::to(&kafka.topic("customers"))
                .key("{\"id\":99}")
                .payload("this is not a change event"),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("produce garbage");
    insert_customer(&pool, "Em").await;
    converge(&warehouse, &pool).await;
    let dead: StreamConsumer = kafka
        .client()
        .set("group.id", format!("dead-{run}"))
        .set("session.timeout.ms", "6000")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    dead.subscribe(&[&kafka.dead_letter_topic()])
        .expect("subscribe");
    let letter = tokio::time::timeout(Duration::from_secs(30), dead.recv())
        .await
        .expect("a dead letter within 30 s")
        .expect("read");
    assert_eq!(letter.payload(), Some(&b"this is not a change event"[..]));
    let headers = letter.headers().expect("headers");
    let header = |name: &str| {
        headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(header("rainbow.topic"), Some(kafka.topic("customers")));
    assert!(
        header("rainbow.error").is_some_and(|e| e.contains("not JSON")),
        "{:?}",
        header("rainbow.error")
    );

    // Stop the sink and start it again: it resumes after what it wrote, nothing twice.
    sink_cancel.cancel();
    let stats = sink_task.await.expect("join").expect("sink");
    assert_eq!(stats.dead_letters, 1);
    let events_before = lines(&warehouse, "SELECT COUNT(*) FROM speed.customers_changes").await;
    assert_eq!(events_before, [stats.events.to_string()]);
    let sink_cancel = CancellationToken::new();
    let sink_task = tokio::spawn({
        let (settings, cancel, warehouse) = (
            sink_settings.clone(),
            sink_cancel.clone(),
            warehouse.clone(),
        );
        async move { reported("sink", sink::run(&settings, &warehouse, cancel).await) }
    });
    insert_customer(&pool, "Giang").await;
    converge(&warehouse, &pool).await;
    sink_cancel.cancel();
    let again = sink_task.await.expect("join").expect("sink");
    assert_eq!(
        again.events, 1,
        "only the new change is written after a restart"
    );
    assert_eq!(
        again.dead_letters, 0,
        "the dead letter was behind the recorded offset"
    );
    let keys = lines(
        &warehouse,
        "SELECT COUNT(*), COUNT(DISTINCT CONCAT(key, CAST(lsn AS STRING))) FROM speed.customers_changes",
    )
    .await;
    let total = stats.events + again.events;
    assert_eq!(
        keys,
        [format!("{total}|{total}")],
        "no change applied twice"
    );

    cdc_cancel.cancel();
    let cdc_stats = cdc_task.await.expect("join").expect("cdc");
    assert_eq!(cdc_stats.snapshot_rows, 3);
    assert!(cdc_stats.changes >= 5, "{cdc_stats:?}");
    sqlx::query("SELECT pg_drop_replication_slot($1)")
        .bind(&slot)
        .execute(&pool)
        .await
        .expect("drop the slot");
}
