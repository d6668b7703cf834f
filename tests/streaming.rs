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

use crate::support::{
    Backend, fresh_url, try_warehouse_rows as try_lines, warehouse_rows as lines,
};

fn brokers() -> String {
    std::env::var("RAINBOW_TEST_KAFKA_BROKERS").unwrap_or_else(|_| {
        panic!(
            "RAINBOW_TEST_KAFKA_BROKERS is not set: run the suite with scripts/test.sh, which \
             starts a Kafka-protocol broker, or point it at one (host:port)"
        )
    })
}

/// Polls `sql` until its rows are `want` (at most `seconds`); the last rows (or error) seen
/// otherwise.
async fn eventually(
    warehouse: &Warehouse,
    sql: &str,
    want: &[String],
    seconds: u64,
) -> Result<(), String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        let got = try_lines(warehouse, sql).await;
        if got.as_ref().is_ok_and(|rows| rows == want) {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!("{got:?}"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
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
    let sql = "SELECT id, name, city FROM speed.customers ORDER BY id";
    // The view appears when the sink has started.
    if let Err(got) = eventually(warehouse, sql, &want, 60).await {
        panic!("the speed view never matched the source:\n want {want:?}\n got  {got}");
    }
    want
}

/// Settings of a speed layer of its own (topic prefix `<letter><run>.`, slot, consumer group),
/// with short micro-batches: (run id, Kafka, slot, CDC, sink).
fn speed_layer(
    url: &str,
    letter: &str,
) -> (String, KafkaSettings, String, CdcSettings, SinkSettings) {
    let run = uuid::Uuid::now_v7().simple().to_string();
    let kafka = KafkaSettings {
        brokers: brokers(),
        topic_prefix: format!("{letter}{run}."),
        partitions: 3,
    };
    let slot = format!("rainbow_test_{run}");
    let cdc = CdcSettings::rainbow_db(url, &slot, kafka.clone());
    let mut sink = SinkSettings::rainbow_db(kafka.clone());
    sink.group_id = format!("rainbow-speed-{run}");
    sink.max_batch_wait = Duration::from_millis(200);
    (run, kafka, slot, cdc, sink)
}

fn spawn_cdc(
    settings: &CdcSettings,
    cancel: &CancellationToken,
) -> tokio::task::JoinHandle<Result<cdc::CdcStats, rainbow_streaming::StreamingError>> {
    let (settings, cancel) = (settings.clone(), cancel.clone());
    tokio::spawn(async move { reported("cdc", cdc::run(&settings, cancel).await) })
}

fn spawn_sink(
    settings: &SinkSettings,
    warehouse: &Warehouse,
    cancel: &CancellationToken,
) -> tokio::task::JoinHandle<Result<sink::SinkStats, rainbow_streaming::StreamingError>> {
    let (settings, warehouse, cancel) = (settings.clone(), warehouse.clone(), cancel.clone());
    tokio::spawn(async move { reported("sink", sink::run(&settings, &warehouse, cancel).await) })
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
    let (run, kafka, slot, cdc_settings, sink_settings) = speed_layer(&url, "t");
    let dir = tempfile::tempdir().expect("tempdir");
    let warehouse = Warehouse::open(dir.path().to_str().expect("utf-8"), "main")
        .await
        .expect("warehouse");

    let cdc_cancel = CancellationToken::new();
    let cdc_task = spawn_cdc(&cdc_settings, &cdc_cancel);
    let sink_cancel = CancellationToken::new();
    let sink_task = spawn_sink(&sink_settings, &warehouse, &sink_cancel);

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
    let sink_task = spawn_sink(&sink_settings, &warehouse, &sink_cancel);
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

    // Compaction folds the change table to the newest event per key; the view and the
    // recorded offsets stay.
    let removed = sink::compact(&warehouse, &sink_settings.tables)
        .await
        .expect("compact");
    assert!(
        removed >= 2,
        "the update and the delete superseded rows: {removed}"
    );
    assert_eq!(
        lines(
            &warehouse,
            "SELECT COUNT(*) = COUNT(DISTINCT key) FROM speed.customers_changes"
        )
        .await,
        ["true"]
    );
    converge(&warehouse, &pool).await;
    // A change to a table no analysis reads is kept too; only it is written after a restart.
    let sink_cancel = CancellationToken::new();
    let sink_task = spawn_sink(&sink_settings, &warehouse, &sink_cancel);
    sqlx::query("INSERT INTO brands (name, created_at, updated_at) VALUES ('Sông Hồng', 1, 1)")
        .execute(&pool)
        .await
        .expect("brand");
    eventually(
        &warehouse,
        "SELECT name FROM speed.brands",
        &["Sông Hồng".to_owned()],
        60,
    )
    .await
    .expect("the brand in the speed layer");
    sink_cancel.cancel();
    let third = sink_task.await.expect("join").expect("sink");
    assert_eq!(third.events, 1, "compaction kept the offsets: {third:?}");

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

/// The six analyses' columns, for comparing the batch views with the unified ones.
const ANALYSES: [(&str, &str); 6] = [
    (
        "total_sales",
        "total_sales_quantity, total_sales_amount, total_profit, current_run_date",
    ),
    (
        "sales_by_day_of_week",
        "day_of_week_number, day_of_week, sales_quantity, sales_amount",
    ),
    (
        "top_sellers",
        "seller_id, seller_name, sales_quantity, sales_amount, sales_rank",
    ),
    (
        "top_profitable_products_by_category",
        "category, product_id, product_name, profit, profit_rank",
    ),
    (
        "payment_method_distribution",
        "payment_method, orders, sales_amount",
    ),
    (
        "customer_ranking",
        "customer_id, customer_name, orders, sales_amount, customer_rank",
    ),
];

async fn analysis(warehouse: &Warehouse, schema: &str, name: &str, columns: &str) -> Vec<String> {
    let mut rows = try_lines(warehouse, &format!("SELECT {columns} FROM {schema}.{name}"))
        .await
        .unwrap_or_default();
    rows.sort();
    rows
}

/// Waits (≤ 60 s) until `serving.total_sales` shows (quantity, amount).
async fn unified_total(warehouse: &Warehouse, want: (i64, i64)) {
    let sql = "SELECT total_sales_quantity, total_sales_amount FROM serving.total_sales";
    let Err(got) = eventually(warehouse, sql, &[format!("{}|{}", want.0, want.1)], 60).await else {
        return;
    };
    let mut diagnosis = Vec::new();
    for sql in [
        "SELECT side, COUNT(*), SUM(quantity) FROM serving.sales_lines GROUP BY side",
        "SELECT COUNT(*), MAX(commit_time) FROM speed.orders_changes",
        "SELECT COUNT(*), MAX(commit_time) FROM speed.orderdetails_changes",
    ] {
        diagnosis.push(format!("{sql}: {:?}", try_lines(warehouse, sql).await));
    }
    panic!(
        "serving.total_sales never showed {want:?}: {got}\n{}",
        diagnosis.join("\n")
    );
}

async fn batch_total(warehouse: &Warehouse) -> (i64, i64) {
    let row = lines(
        warehouse,
        "SELECT total_sales_quantity, total_sales_amount FROM main_views.total_sales",
    )
    .await;
    let cells: Vec<i64> = row[0]
        .split('|')
        .map(|c| c.parse().expect("number"))
        .collect();
    (cells[0], cells[1])
}

/// (quantity, amount) of one order on the source.
async fn order_total(pool: &sqlx::AnyPool, order_id: i64) -> (i64, i64) {
    sqlx::query_as(
        "SELECT CAST(SUM(quantity) AS BIGINT), CAST(SUM(quantity * price) AS BIGINT) FROM orderdetails WHERE order_id = $1",
    )
    .bind(order_id)
    .fetch_one(pool)
    .await
    .expect("order total")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unified_views_count_every_order_exactly_once() {
    use rainbow_assets::generate::GenerateOptions;
    use rainbow_assets::pipeline::{self, BATCH_JOB, PipelineSettings};
    use rainbow_engine::{AssetGraph, Executor, RainbowConfig, RunOptions, Storage};

    // A batch layer over a PostgreSQL Rainbow DB: a short history, extracted night by night.
    let (url, _) = fresh_url(Backend::Postgres).await;
    let home_dir = tempfile::tempdir().expect("home");
    let home = home_dir.path();
    // Four days ending the day before yesterday: yesterday is the next night's partition.
    let start = chrono::Utc::now().date_naive() - chrono::Duration::days(5);
    let mut settings = PipelineSettings::defaults(home);
    settings.source_url = url.clone();
    settings.start_date = start;
    settings.end_date = Some(start + chrono::Duration::days(4));
    settings.save(home).expect("settings");
    let options = GenerateOptions {
        start,
        days: 4,
        orders_per_day: 30,
        seed: 5,
    };
    pipeline::replay(home, &settings, &options, 2, &|| {})
        .await
        .expect("the history replays");
    let warehouse = Warehouse::open(&settings.warehouse, "main")
        .await
        .expect("warehouse");
    let db = rainbow_db::connect(&url, 4).await.expect("connect");
    let pool = db.pool.clone();

    // The speed layer on the same source and warehouse.
    let (_, _, slot, cdc_settings, mut sink_settings) = speed_layer(&url, "u");
    // Compaction every second: the unified figures hold across it.
    sink_settings.compact_every = Some(Duration::from_secs(1));
    let cancel = CancellationToken::new();
    let cdc_task = spawn_cdc(&cdc_settings, &cancel);
    let sink_task = spawn_sink(&sink_settings, &warehouse, &cancel);

    // Everything is absorbed: each unified analysis equals its batch view.
    let before = batch_total(&warehouse).await;
    unified_total(&warehouse, before).await;
    for (name, columns) in ANALYSES {
        assert_eq!(
            analysis(&warehouse, "serving", name, columns).await,
            analysis(&warehouse, "main_views", name, columns).await,
            "{name}"
        );
    }

    // An order through the orders API is in the unified total within seconds.
    let router = rainbow_api::app(rainbow_api::AppState::new(db.clone()));
    let body = serde_json::json!({"customerId": 2, "payment_id": 1,
        "products": [{"productId": 3, "quantity": 2}, {"productId": 5, "quantity": 1}]});
    let response = tower::ServiceExt::oneshot(
        router,
        axum::http::Request::post("/api/v1/orders")
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body.to_string()))
            .expect("request"),
    )
    .await
    .expect("response");
    assert_eq!(response.status(), axum::http::StatusCode::CREATED);
    let order_id: i64 = sqlx::query_scalar("SELECT MAX(id) FROM orders")
        .fetch_one(&pool)
        .await
        .expect("new order");
    let new = order_total(&pool, order_id).await;
    let with_new = (before.0 + new.0, before.1 + new.1);
    unified_total(&warehouse, with_new).await;
    assert_eq!(
        batch_total(&warehouse).await,
        before,
        "not in the batch yet"
    );
    let speed_only = "SELECT total_sales_quantity FROM serving.speed_total_sales";
    assert_eq!(lines(&warehouse, speed_only).await, [new.0.to_string()]);

    // The night passes: the order becomes yesterday's (a new version of its rows, as a clock
    // crossing midnight would leave it), still counted once.
    let today = chrono::Utc::now().date_naive();
    let yesterday = today - chrono::Duration::days(1);
    let noon = yesterday
        .and_hms_opt(12, 0, 0)
        .expect("time")
        .and_utc()
        .timestamp_micros();
    for table in ["orders", "orderdetails"] {
        let key = if table == "orders" { "id" } else { "order_id" };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} SET created_at = $1, updated_at = $1 WHERE {key} = $2"
        )))
        .bind(noon)
        .bind(order_id)
        .execute(&pool)
        .await
        .expect("backdate");
    }
    unified_total(&warehouse, with_new).await;

    // The nightly batch absorbs yesterday: the batch total grows, the unified one does not move.
    settings.end_date = Some(today + chrono::Duration::days(1));
    settings.save(home).expect("settings");
    let graph = std::sync::Arc::new(
        AssetGraph::build(pipeline::definitions(&settings).expect("definitions")).expect("graph"),
    );
    let storage = Storage::open_sqlite_dir(home).await.expect("storage");
    let executor =
        Executor::new(graph.clone(), storage, &RainbowConfig::default()).expect("executor");
    let job = graph
        .jobs()
        .iter()
        .find(|j| j.name == BATCH_JOB)
        .expect("job")
        .clone();
    let selection = graph.select_job(&job).expect("selection");
    let nightly = |day: chrono::NaiveDate| RunOptions {
        partitions: vec![day.format("%Y-%m-%d").to_string()],
        job_name: Some(BATCH_JOB.into()),
        selection: "*".into(),
        ..Default::default()
    };
    let result = executor
        .materialize(&selection, nightly(yesterday), Default::default(), None)
        .await
        .expect("run");
    assert!(result.success(), "{result:?}");
    assert_eq!(
        batch_total(&warehouse).await,
        with_new,
        "absorbed by the batch"
    );
    unified_total(&warehouse, with_new).await;
    assert_eq!(
        lines(&warehouse, speed_only).await,
        ["NULL"],
        "nothing left to the speed side"
    );
    // A product renamed at the source: the speed layer has it at once.
    sqlx::query(
        "UPDATE products SET name = 'Áo dài mới', updated_at = updated_at + 1 WHERE id = 3",
    )
    .execute(&pool)
    .await
    .expect("rename");
    eventually(
        &warehouse,
        "SELECT name FROM speed.products WHERE id = 3",
        &["Áo dài mới".to_owned()],
        60,
    )
    .await
    .expect("the renamed product in the speed layer");

    // A late write into a closed day: the master dataset refuses it, the unified total counts
    // it once, and keeps counting it once.
    let closed = (start + chrono::Duration::days(1))
        .and_hms_opt(12, 0, 0)
        .expect("time")
        .and_utc()
        .timestamp_micros();
    let late_order: i64 = sqlx::query_scalar(
        "INSERT INTO orders (customer_id, payment_id, created_at, updated_at) VALUES (3, 1, $1, $1) RETURNING id",
    )
    .bind(closed)
    .fetch_one(&pool)
    .await
    .expect("late order");
    sqlx::query(
        "INSERT INTO orderdetails (order_id, product_id, quantity, price, promotion_id, created_at, updated_at) \
         VALUES ($1, 4, 3, 1000, NULL, $2, $2)",
    )
    .bind(late_order)
    .bind(closed)
    .execute(&pool)
    .await
    .expect("late line");
    let with_late = (with_new.0 + 3, with_new.1 + 3_000);
    unified_total(&warehouse, with_late).await;
    let refused = executor
        .materialize(
            &selection,
            nightly(start + chrono::Duration::days(1)),
            Default::default(),
            None,
        )
        .await
        .expect("run");
    assert!(!refused.success(), "the closed day is immutable");
    assert_eq!(batch_total(&warehouse).await, with_new);
    unified_total(&warehouse, with_late).await;
    let lag = lines(&warehouse, "SELECT lag_ms >= 0 FROM serving.freshness").await;
    assert_eq!(lag, ["true"]);

    cancel.cancel();
    cdc_task.await.expect("join").expect("cdc");
    sink_task.await.expect("join").expect("sink");
    sqlx::query("SELECT pg_drop_replication_slot($1)")
        .bind(&slot)
        .execute(&pool)
        .await
        .expect("drop the slot");
}

/// Starts `rainbow <command>` in `home`, its output in `<home>/<command>.log`.
fn start(home: &std::path::Path, command: &str) -> std::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.join(format!("{command}.log")))
        .expect("log file");
    std::process::Command::new(env!("CARGO_BIN_EXE_rainbow"))
        .arg(command)
        .env("RAINBOW_HOME", home)
        .env_remove("RAINBOW_KAFKA_BROKERS")
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start rainbow")
}

/// The source's customers as `id|name|city|updated_at` lines, by id.
async fn customer_versions(pool: &sqlx::AnyPool) -> Vec<String> {
    let rows: Vec<(i64, String, String, i64)> =
        sqlx::query_as("SELECT id, name, city, updated_at FROM customers ORDER BY id")
            .fetch_all(pool)
            .await
            .expect("source rows");
    rows.into_iter()
        .map(|(id, name, city, at)| format!("{id}|{name}|{city}|{at}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_processes_lose_nothing_and_apply_nothing_twice() {
    let (url, _) = fresh_url(Backend::Postgres).await;
    let db = rainbow_db::connect(&url, 4).await.expect("connect");
    rainbow_db::source::migrate(&db).await.expect("migrate");
    let pool = db.pool.clone();
    let home_dir = tempfile::tempdir().expect("home");
    let home = home_dir.path();
    let run = uuid::Uuid::now_v7().simple().to_string();
    let slot = format!("rainbow_test_{run}");
    std::fs::write(
        home.join("rainbow.toml"),
        format!(
            "[pipeline]\nsource_url = \"{url}\"\nlake = \"{lake}\"\nwarehouse = \"{wh}\"\n\
             start_date = \"2026-01-01\"\n\n[streaming]\nbrokers = \"{brokers}\"\n\
             topic_prefix = \"k{run}.\"\nslot = \"{slot}\"\ncdc_batch_size = 300\n\
             sink_max_batch_wait_ms = 100\n",
            lake = home.join("lake").display(),
            wh = home.join("warehouse").display(),
            brokers = brokers(),
        ),
    )
    .expect("config");
    let mut cdc = start(home, "cdc");
    let mut speed = start(home, "speed");
    let warehouse = Warehouse::open(home.join("warehouse").to_str().expect("utf-8"), "main")
        .await
        .expect("warehouse");
    // Both are up when a first change arrives end to end.
    insert_customer(&pool, "first").await;
    let logs = || {
        ["cdc", "speed"]
            .map(|c| std::fs::read_to_string(home.join(format!("{c}.log"))).unwrap_or_default())
            .join("\n")
    };
    if let Err(got) = eventually(
        &warehouse,
        "SELECT COUNT(*) FROM speed.customers",
        &["1".to_owned()],
        60,
    )
    .await
    {
        panic!("the first change never arrived: {got}\n{}", logs());
    }

    // Thousands of changes in small transactions; kill -9 the CDC process, later the sink, in
    // the middle of the stream, and start each again.
    for round in 0..60i64 {
        let now = chrono::Utc::now().timestamp_micros();
        let rows = (0..50)
            .map(|i| format!("('c{round}-{i}', 'c{round}-{i}@example.com', 'Huế', {now}, {now})"))
            .collect::<Vec<_>>()
            .join(", ");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO customers (name, email, city, created_at, updated_at) VALUES {rows}"
        )))
        .execute(&pool)
        .await
        .expect("insert");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE customers SET name = 'v{round}', updated_at = {now} + 1 WHERE id % 7 = {}",
            round % 7
        )))
        .execute(&pool)
        .await
        .expect("update");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM customers WHERE id % 97 = {}",
            round % 97
        )))
        .execute(&pool)
        .await
        .expect("delete");
        if round == 20 {
            cdc.kill().expect("kill -9 the CDC process");
            cdc.wait().expect("reap");
            cdc = start(home, "cdc");
        }
        if round == 40 {
            speed.kill().expect("kill -9 the sink");
            speed.wait().expect("reap");
            speed = start(home, "speed");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every speed table equals the source row by row.
    let want = customer_versions(&pool).await;
    assert!(want.len() > 1_500, "{}", want.len());
    let sql = "SELECT id, name, city, updated_at FROM speed.customers ORDER BY id";
    if let Err(got) = eventually(&warehouse, sql, &want, 120).await {
        panic!(
            "the speed view differs from the source ({} rows wanted): {}\n{}",
            want.len(),
            got.chars().take(2_000).collect::<String>(),
            logs()
        );
    }
    // No Kafka message was written twice, though the sink was killed mid-stream.
    assert_eq!(
        lines(
            &warehouse,
            "SELECT COUNT(*) = COUNT(DISTINCT CONCAT(CAST(kafka_partition AS STRING), '/', CAST(kafka_offset AS STRING))) FROM speed.customers_changes",
        )
        .await,
        ["true"]
    );

    for child in [&mut cdc, &mut speed] {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        child.wait().expect("stopped");
    }
    let log = std::fs::read_to_string(home.join("speed.log")).unwrap_or_default();
    assert!(log.contains("stopped:"), "{log}");
    sqlx::query("SELECT pg_drop_replication_slot($1)")
        .bind(&slot)
        .execute(&pool)
        .await
        .expect("drop the slot");
}
