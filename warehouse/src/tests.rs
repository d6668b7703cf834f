//! Warehouse tests: BigQuery functions and types against expected values, tables, views,
//! MERGE, atomic replace.

use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::{RelationKind, Warehouse, WriteMode};

async fn warehouse() -> (tempfile::TempDir, Warehouse) {
    let dir = tempfile::tempdir().expect("tempdir");
    let wh = Warehouse::open(dir.path().to_str().expect("utf-8"), "main")
        .await
        .expect("open");
    (dir, wh)
}

/// Every cell of a query's result as text, row by row (NULL as `NULL`), or the error with its
/// causes.
async fn try_rows(wh: &Warehouse, sql: &str) -> Result<Vec<Vec<String>>, String> {
    let batches = wh.execute(sql, "test").await.map_err(|e| chain(&e))?;
    let mut out = Vec::new();
    let options = FormatOptions::default().with_null("NULL");
    for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("formatter"))
            .collect();
        for row in 0..batch.num_rows() {
            out.push(
                formatters
                    .iter()
                    .map(|f| f.value(row).to_string())
                    .collect(),
            );
        }
    }
    Ok(out)
}

/// [`try_rows`], failing the test on an error.
async fn rows(wh: &Warehouse, sql: &str) -> Vec<Vec<String>> {
    try_rows(wh, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn one(wh: &Warehouse, sql: &str) -> String {
    let r = rows(wh, sql).await;
    assert_eq!(r.len(), 1, "{sql}: {r:?}");
    r[0].join("|")
}

#[tokio::test]
async fn bigquery_functions_and_types_match_bigquery() {
    let (_dir, wh) = warehouse().await;
    let cases: &[(&str, &str)] = &[
        (
            "SELECT CAST('42' AS INT64), CAST(1 AS FLOAT64) / 4",
            "42|0.25",
        ),
        (
            "SELECT CAST('1.5' AS NUMERIC), CAST(7 AS STRING), CAST('true' AS BOOL)",
            "1.500000000|7|true",
        ),
        (
            "SELECT CAST(2 AS BIGNUMERIC) IS NOT NULL, CAST('ab' AS BYTES) IS NOT NULL",
            "true|true",
        ),
        (
            "SELECT SAFE_CAST('x' AS INT64), SAFE_CAST('12' AS INT64)",
            "NULL|12",
        ),
        (
            "SELECT 7 / 2, DIV(7, 2), SAFE_DIVIDE(1, 0), SAFE_DIVIDE(3, 2)",
            "3.5|3|NULL|1.5",
        ),
        (
            "SELECT EXTRACT(DATE FROM TIMESTAMP '2024-03-10 23:30:00'), DATE(TIMESTAMP '2024-03-10 05:00:00')",
            "2024-03-10|2024-03-10",
        ),
        ("SELECT DATE(2024, 2, 29)", "2024-02-29"),
        // 2024-03-10 is a Sunday: BigQuery's DAYOFWEEK is 1..7 from Sunday.
        (
            "SELECT EXTRACT(DAYOFWEEK FROM DATE '2024-03-10'), EXTRACT(DAYOFWEEK FROM DATE '2024-03-16'), EXTRACT(YEAR FROM DATE '2024-03-16')",
            "1|7|2024",
        ),
        (
            "SELECT FORMAT_DATE('%A', DATE '2024-03-11'), FORMAT_DATE('%Y/%m/%d Q%Q', DATE '2024-03-11')",
            "Monday|2024/03/11 Q1",
        ),
        (
            "SELECT DATE_ADD(DATE '2024-01-31', INTERVAL 1 MONTH), DATE_SUB(DATE '2024-03-01', INTERVAL 1 DAY), DATE_ADD(DATE '2024-03-01', INTERVAL 2 WEEK)",
            "2024-02-29|2024-02-29|2024-03-15",
        ),
        (
            "SELECT DATE_TRUNC(DATE '2024-03-13', MONTH), DATE_TRUNC(DATE '2024-03-13', WEEK), DATE_TRUNC(DATE '2024-03-13', ISOWEEK), DATE_TRUNC(DATE '2024-08-13', QUARTER)",
            "2024-03-01|2024-03-10|2024-03-11|2024-07-01",
        ),
        (
            "SELECT TIMESTAMP_TRUNC(TIMESTAMP '2024-03-13 17:45:12', HOUR)",
            "2024-03-13T17:00:00Z",
        ),
        (
            "SELECT DATE_DIFF(DATE '2024-03-01', DATE '2024-02-01', DAY), DATE_DIFF(DATE '2024-01-01', DATE '2023-12-31', YEAR), DATE_DIFF(DATE '2024-03-10', DATE '2024-03-09', WEEK)",
            "29|1|1",
        ),
        (
            "SELECT TIMESTAMP_DIFF(TIMESTAMP '2024-03-02 01:00:00', TIMESTAMP '2024-03-01 02:00:00', DAY), TIMESTAMP_DIFF(TIMESTAMP '2024-03-01 02:30:00', TIMESTAMP '2024-03-01 01:00:00', HOUR)",
            "0|1",
        ),
        (
            "SELECT FORMAT_TIMESTAMP('%Y-%m-%d %H:%M', TIMESTAMP '2024-03-13 17:45:12')",
            "2024-03-13 17:45",
        ),
        (
            "SELECT PARSE_DATE('%Y%m%d', '20240313'), PARSE_TIMESTAMP('%Y-%m-%d %H:%M:%S', '2024-03-13 17:45:12')",
            "2024-03-13|2024-03-13T17:45:12Z",
        ),
        ("SELECT IFNULL(NULL, 3), IFNULL(2, 3)", "3|2"),
        (
            "SELECT TIMESTAMP_MICROS(1704067200000000), TIMESTAMP_MILLIS(1704067200000), TIMESTAMP_SECONDS(1704067200)",
            "2024-01-01T00:00:00Z|2024-01-01T00:00:00Z|2024-01-01T00:00:00Z",
        ),
        (
            "SELECT UNIX_MICROS(TIMESTAMP '2024-01-01 00:00:00.000001'), UNIX_MILLIS(TIMESTAMP '1969-12-31 23:59:59.9995'), UNIX_SECONDS(TIMESTAMP '2024-01-01 00:00:01')",
            "1704067200000001|-1|1704067201",
        ),
        (
            "SELECT UNIX_DATE(DATE '2024-01-01'), DATE_FROM_UNIX_DATE(19723)",
            "19723|2024-01-01",
        ),
        (
            "SELECT COUNTIF(x > 1), ANY_VALUE(y), STRING_AGG(y ORDER BY y), ARRAY_AGG(x ORDER BY x) FROM UNNEST([1, 2, 3]) AS x CROSS JOIN (SELECT 'a' AS y) AS t",
            "2|a|a,a,a|[1, 2, 3]",
        ),
        (
            "SELECT STRING_AGG(y, '-') FROM (SELECT 'a' AS y UNION ALL SELECT 'b')",
            "a-b",
        ),
        (
            "SELECT CURRENT_DATE() = CURRENT_DATE, CURRENT_TIMESTAMP() IS NOT NULL",
            "true|true",
        ),
        ("SELECT LENGTH(GENERATE_UUID())", "36"),
        (
            "SELECT x FROM UNNEST([3, 1, 2]) AS x WHERE TRUE QUALIFY ROW_NUMBER() OVER (ORDER BY x DESC) = 1",
            "3",
        ),
    ];
    for (sql, expected) in cases {
        assert_eq!(&one(&wh, sql).await, expected, "{sql}");
    }
}

#[tokio::test]
async fn bad_sql_names_the_problem() {
    let (_dir, wh) = warehouse().await;
    let err = wh
        .execute("SELECT FROM WHERE", "models/x.sql")
        .await
        .expect_err("bad");
    assert!(
        err.to_string()
            .starts_with("models/x.sql: SQL does not parse"),
        "{err}"
    );
    let err = wh
        .execute("SELECT DATE_ADD(DATE '2024-01-01', 1)", "q")
        .await
        .expect_err("bad");
    assert!(err.to_string().contains("INTERVAL n PART"), "{err}");
    wh.execute("CREATE TABLE main.orders AS SELECT 1 AS id", "q")
        .await
        .expect("create");
    let err = wh
        .execute("SELECT * FROM main.order", "q")
        .await
        .expect_err("unknown");
    assert!(err.to_string().contains("order"), "{err}");
    // EXPLAIN ANALYZE runs a query and shows each operator's metrics; EXPLAIN of a write is an
    // error, not a "not implemented" row that reads like a result.
    let plan = wh
        .execute("EXPLAIN ANALYZE SELECT COUNT(*) FROM main.orders", "q")
        .await
        .expect("explain");
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&plan)
        .expect("format")
        .to_string();
    assert!(text.contains("output_rows=1"), "{text}");
    let err = wh
        .execute("EXPLAIN CREATE TABLE main.x AS SELECT 1 AS id", "q")
        .await
        .expect_err("explain of a write");
    assert!(err.to_string().contains("EXPLAIN takes a query"), "{err}");
}

#[tokio::test]
async fn tables_and_views_survive_reopening_and_backticks_resolve() {
    let dir = tempfile::tempdir().expect("tempdir");
    let location = dir.path().to_str().expect("utf-8");
    {
        let wh = Warehouse::open(location, "main").await.expect("open");
        wh.execute(
            "CREATE TABLE staging.orders AS SELECT * FROM UNNEST([1, 2, 3]) AS id; \
             CREATE VIEW main.big_orders AS SELECT id FROM staging.orders WHERE id > 1",
            "setup",
        )
        .await
        .expect("setup");
    }
    let wh = Warehouse::open(location, "main").await.expect("reopen");
    assert_eq!(wh.kind("staging", "orders"), Some(RelationKind::Table));
    assert_eq!(wh.kind("main", "big_orders"), Some(RelationKind::View));
    assert_eq!(
        one(&wh, "SELECT COUNT(*) FROM `my-project.staging.orders`").await,
        "3"
    );
    // A view reads the latest version of its table.
    wh.execute("INSERT INTO staging.orders SELECT 10", "insert")
        .await
        .expect("insert");
    assert_eq!(one(&wh, "SELECT SUM(id) FROM big_orders").await, "15");
    // Unqualified names find a relation in another schema when it is the only one.
    assert_eq!(one(&wh, "SELECT COUNT(*) FROM orders").await, "4");
}

/// A damaged Delta log is an error naming the table's directory, and the other tables read on.
#[tokio::test]
async fn a_damaged_delta_log_names_its_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let location = dir.path().to_str().expect("utf-8");
    {
        let wh = Warehouse::open(location, "main").await.expect("open");
        wh.execute(
            "CREATE TABLE main.orders AS SELECT 1 AS id; CREATE TABLE main.lines AS SELECT 2 AS id",
            "setup",
        )
        .await
        .expect("setup");
    }
    let log = dir
        .path()
        .join("main/orders/_delta_log/00000000000000000000.json");
    std::fs::write(&log, "{\"add\": garbage\n").expect("damage the log");
    let wh = Warehouse::open(location, "main").await.expect("reopen");
    let error = try_rows(&wh, "SELECT * FROM main.orders")
        .await
        .expect_err("the log does not parse");
    let table = dir.path().join("main/orders");
    assert!(
        error.contains(&format!("reading the Delta table at {}", table.display())),
        "{error}"
    );
    assert_eq!(one(&wh, "SELECT id FROM main.lines").await, "2");
}

#[tokio::test]
async fn a_long_lived_warehouse_sees_what_another_process_committed() {
    let (dir, reader) = warehouse().await;
    reader
        .execute("CREATE TABLE main.t AS SELECT 1 AS x", "setup")
        .await
        .expect("create");
    assert_eq!(one(&reader, "SELECT SUM(x) FROM main.t").await, "1");
    // Another process (the batch layer, the speed sink) appends and replaces.
    let writer = Warehouse::open(dir.path().to_str().expect("utf-8"), "main")
        .await
        .expect("open");
    writer
        .execute("INSERT INTO main.t SELECT 2", "append")
        .await
        .expect("append");
    assert_eq!(one(&reader, "SELECT SUM(x) FROM main.t").await, "3");
    writer
        .execute(
            "CREATE OR REPLACE TABLE main.t AS SELECT 10 AS x",
            "replace",
        )
        .await
        .expect("replace");
    assert_eq!(one(&reader, "SELECT SUM(x) FROM main.t").await, "10");
    // A new file under an external table's directory (the extract's next day) is read.
    let raw = dir.path().join("lake_for_test").join("orders");
    for (day, n) in [("2026-01-01", 1), ("2026-01-02", 2)] {
        let folder = raw.join(format!("dt={day}"));
        std::fs::create_dir_all(&folder).expect("folder");
        let batch = datafusion::arrow::record_batch::RecordBatch::try_from_iter([(
            "n",
            std::sync::Arc::new(datafusion::arrow::array::Int64Array::from(vec![n]))
                as datafusion::arrow::array::ArrayRef,
        )])
        .expect("batch");
        let file = std::fs::File::create(folder.join("part.parquet")).expect("file");
        let mut writer =
            datafusion::parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None)
                .expect("writer");
        writer.write(&batch).expect("write");
        writer.close().expect("close");
        if day == "2026-01-01" {
            reader
                .create_external_table("raw", "orders", raw.to_str().expect("utf-8"))
                .await
                .expect("external");
            assert_eq!(one(&reader, "SELECT SUM(n) FROM raw.orders").await, "1");
        }
    }
    assert_eq!(one(&reader, "SELECT SUM(n) FROM raw.orders").await, "3");
    // New relations, in a new schema too, are found without reopening.
    writer
        .execute(
            "CREATE TABLE fresh.u AS SELECT 5 AS y; CREATE VIEW fresh.v AS SELECT y + 1 AS z FROM fresh.u",
            "create",
        )
        .await
        .expect("create");
    assert_eq!(one(&reader, "SELECT z FROM fresh.v").await, "6");
    reader
        .execute("CREATE TABLE main.w AS SELECT y FROM fresh.u", "read it")
        .await
        .expect("a statement reading a relation made elsewhere");
}

#[tokio::test]
async fn a_failed_replace_leaves_the_previous_table_readable() {
    let (dir, wh) = warehouse().await;
    wh.execute(
        "CREATE TABLE main.t AS SELECT * FROM UNNEST([1, 2, 3]) AS id",
        "setup",
    )
    .await
    .expect("setup");
    let files = || {
        let mut names: Vec<String> = std::fs::read_dir(dir.path().join("main").join("t"))
            .expect("table directory")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n != "_delta_log")
            .collect();
        names.sort();
        names
    };
    let before = files();
    // The query fails while rows are being written (ERROR() at the last row).
    let df = wh
        .dataframe(
            "SELECT IF(id = 200000, ERROR('boom'), id) AS id FROM UNNEST(GENERATE_ARRAY(1, 200000)) AS id",
            "failing",
        )
        .await
        .expect("plans");
    let err = wh
        .write_table("main", "t", df, WriteMode::Replace)
        .await
        .expect_err("fails");
    assert!(err.to_string().contains("boom"), "{err}");
    assert_eq!(
        one(&wh, "SELECT COUNT(*), SUM(id) FROM main.t").await,
        "3|6"
    );
    // Nothing of the failed write is left beside the table's files.
    assert_eq!(files(), before);
    let reopened = Warehouse::open(dir.path().to_str().expect("utf-8"), "main")
        .await
        .expect("reopen");
    assert_eq!(
        one(&reopened, "SELECT COUNT(*), SUM(id) FROM main.t").await,
        "3|6"
    );
}

#[tokio::test]
async fn merge_statement_updates_inserts_and_deletes() {
    let (_dir, wh) = warehouse().await;
    wh.execute(
        "CREATE TABLE main.products AS SELECT 1 AS id, 'a' AS name UNION ALL SELECT 2, 'b' UNION ALL SELECT 3, 'c'",
        "setup",
    )
    .await
    .expect("setup");
    wh.execute(
        "MERGE INTO main.products AS t \
         USING (SELECT 2 AS id, 'B' AS name UNION ALL SELECT 4, 'd' UNION ALL SELECT 3, 'gone') AS s \
         ON t.id = s.id \
         WHEN MATCHED AND s.name = 'gone' THEN DELETE \
         WHEN MATCHED THEN UPDATE SET name = s.name \
         WHEN NOT MATCHED THEN INSERT (id, name) VALUES (s.id, s.name)",
        "merge",
    )
    .await
    .expect("merge");
    let got = rows(&wh, "SELECT id, name FROM main.products ORDER BY id").await;
    assert_eq!(
        got,
        vec![
            vec!["1".to_owned(), "a".to_owned()],
            vec!["2".to_owned(), "B".to_owned()],
            vec!["4".to_owned(), "d".to_owned()],
        ]
    );
}

#[tokio::test]
async fn merge_and_delete_insert_by_key() {
    let (_dir, wh) = warehouse().await;
    wh.execute(
        "CREATE TABLE main.f AS SELECT 1 AS k1, 'x' AS k2, 10 AS v UNION ALL SELECT 1, 'y', 20",
        "setup",
    )
    .await
    .expect("setup");
    let source = wh
        .dataframe(
            "SELECT 1 AS k1, 'y' AS k2, 21 AS v UNION ALL SELECT 2, 'x', 30",
            "src",
        )
        .await
        .expect("src");
    let keys = vec!["k1".to_owned(), "k2".to_owned()];
    wh.merge("main", "f", source.clone(), &keys, false)
        .await
        .expect("merge");
    let once = rows(&wh, "SELECT k1, k2, v FROM main.f ORDER BY k1, k2").await;
    assert_eq!(once.len(), 3);
    assert_eq!(once[1], vec!["1", "y", "21"]);
    // Merging the same input again changes nothing.
    wh.merge("main", "f", source.clone(), &keys, false)
        .await
        .expect("merge again");
    assert_eq!(
        rows(&wh, "SELECT k1, k2, v FROM main.f ORDER BY k1, k2").await,
        once
    );
    wh.delete_insert("main", "f", source, &keys)
        .await
        .expect("delete+insert");
    assert_eq!(
        rows(&wh, "SELECT k1, k2, v FROM main.f ORDER BY k1, k2").await,
        once
    );
}

/// One case of a `bigquery-cases/*.cases` file.
struct Case {
    line: usize,
    doc: String,
    sql: String,
    /// Expected rows (cells joined by `|`), or the expected error's text.
    expected: Result<Vec<String>, String>,
}

fn parse_cases(text: &str) -> Vec<Case> {
    let mut cases: Vec<Case> = Vec::new();
    let mut doc = String::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(d) = line.strip_prefix("doc: ") {
            doc = d.to_owned();
        } else if let Some(row) = line.strip_prefix("=> ").or(line.strip_prefix("=>")) {
            let case = cases.last_mut().expect("a row before any query");
            match &mut case.expected {
                Ok(rows) => rows.push(row.to_owned()),
                Err(_) => panic!("line {}: a row after an error", i + 1),
            }
        } else if let Some(error) = line.strip_prefix("!! ") {
            cases
                .last_mut()
                .expect("an error before any query")
                .expected = Err(error.to_owned());
        } else {
            cases.push(Case {
                line: i + 1,
                doc: doc.clone(),
                sql: line.to_owned(),
                expected: Ok(Vec::new()),
            });
        }
    }
    cases
}

/// Every case of every file in `bigquery-cases/` against the embedded warehouse: BigQuery's
/// documented value, or an error containing the expected text. Failures are listed by
/// `file:line` with the doc page the expectation comes from.
#[tokio::test]
async fn bigquery_cases() {
    let (_dir, wh) = warehouse().await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bigquery-cases");
    let mut files: Vec<_> = std::fs::read_dir(&root)
        .expect("bigquery-cases/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "cases"))
        // `BIGQUERY_CASES=string` runs only the files whose name contains `string`.
        .filter(|p| {
            std::env::var("BIGQUERY_CASES").map_or(true, |only| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().contains(only.as_str()))
            })
        })
        .collect();
    files.sort();
    let mut failures = Vec::new();
    let mut total = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read cases");
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        for case in parse_cases(&text) {
            total += 1;
            let got = try_rows(&wh, &case.sql)
                .await
                .map(|rows| rows.into_iter().map(|r| r.join("|")).collect::<Vec<_>>());
            let ok = match (&case.expected, &got) {
                (Ok(want), Ok(rows)) => want == rows,
                (Err(want), Err(message)) => message.contains(want.as_str()),
                _ => false,
            };
            if !ok {
                failures.push(format!(
                    "{name}:{}: {}\n    expected {:?}\n    got      {:?}\n    per {}",
                    case.line, case.sql, case.expected, got, case.doc
                ));
            }
        }
    }
    assert!(total > 0, "no cases found under {}", root.display());
    assert!(
        failures.is_empty(),
        "{} of {total} BigQuery cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// An error with its causes, `: `-separated.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// The `add`/`remove` actions of one Delta commit of `main.<table>`: (numRecords of each added
/// file, paths removed).
fn commit_files(dir: &std::path::Path, table: &str, version: u64) -> (Vec<u64>, Vec<String>) {
    let log = dir
        .join("main")
        .join(table)
        .join("_delta_log")
        .join(format!("{version:020}.json"));
    let text = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{log:?}: {e}"));
    let mut added = Vec::new();
    let mut removed = Vec::new();
    for line in text.lines() {
        let action: serde_json::Value = serde_json::from_str(line).expect("json action");
        if let Some(add) = action.get("add") {
            let stats: serde_json::Value =
                serde_json::from_str(add["stats"].as_str().expect("stats recorded"))
                    .expect("stats json");
            assert!(stats["minValues"].get("id").is_some(), "{stats}");
            added.push(stats["numRecords"].as_u64().expect("numRecords"));
        }
        if let Some(remove) = action.get("remove") {
            removed.push(remove["path"].as_str().expect("path").to_owned());
        }
    }
    (added, removed)
}

#[tokio::test]
async fn writes_by_parallel_writers_commit_once_with_statistics() {
    let (dir, wh) = warehouse().await;
    let big = wh
        .dataframe(
            "SELECT id, CAST(id AS STRING) AS s FROM UNNEST(GENERATE_ARRAY(1, 300000)) AS id",
            "big",
        )
        .await
        .expect("plans");
    let rows = wh
        .write_table("main", "t", big, WriteMode::Replace)
        .await
        .expect("create");
    assert_eq!(rows, Some(300_000));
    let (added, removed) = commit_files(dir.path(), "t", 0);
    assert_eq!(added.iter().sum::<u64>(), 300_000);
    assert!(removed.is_empty());
    assert_eq!(
        one(
            &wh,
            "SELECT COUNT(*), SUM(id), COUNT(DISTINCT s) FROM main.t"
        )
        .await,
        "300000|45000150000|300000"
    );
    // One file per partition of the plan: each partition had its own writer.
    let partitions = wh.context().state().config().target_partitions();
    assert_eq!(added.len(), partitions, "{added:?}");
    let first_files = added.len();

    // Replacing an existing table removes every file of the version it replaces, in one commit.
    let small = wh
        .dataframe(
            "SELECT id, CAST(id AS STRING) AS s FROM UNNEST(GENERATE_ARRAY(1, 1000)) AS id",
            "small",
        )
        .await
        .expect("plans");
    wh.write_table("main", "t", small, WriteMode::Replace)
        .await
        .expect("replace");
    let (added, removed) = commit_files(dir.path(), "t", 1);
    assert_eq!(added.iter().sum::<u64>(), 1000);
    assert_eq!(removed.len(), first_files);
    assert_eq!(
        one(&wh, "SELECT COUNT(*), SUM(id) FROM main.t").await,
        "1000|500500"
    );

    // An append (NULLABLE columns: the parallel writers' path) records its application
    // transaction with the rows.
    let more = wh
        .dataframe(
            "SELECT IF(id > 0, id + 1000, NULL) AS id, IF(id > 0, 'x', NULL) AS s FROM UNNEST(GENERATE_ARRAY(1, 300000)) AS id",
            "more",
        )
        .await
        .expect("plans");
    wh.append_with_transactions("main", "t", more, vec![("sink-0".into(), 7)])
        .await
        .expect("append");
    assert_eq!(
        wh.transaction_version("main", "t", "sink-0")
            .await
            .expect("version"),
        Some(7)
    );
    let (added, removed) = commit_files(dir.path(), "t", 2);
    assert_eq!(added.len(), partitions, "{added:?}");
    assert_eq!(added.iter().sum::<u64>(), 300_000);
    assert!(removed.is_empty());
    assert_eq!(
        one(&wh, "SELECT COUNT(*), MAX(id) FROM main.t").await,
        "301000|301000"
    );

    // A replace that changes the columns takes Delta's schema-overwriting write.
    let wider = wh
        .dataframe("SELECT 1 AS id, 'a' AS s, DATE '2026-01-01' AS d", "wider")
        .await
        .expect("plans");
    wh.write_table("main", "t", wider, WriteMode::Replace)
        .await
        .expect("replace with a new column");
    assert_eq!(
        one(&wh, "SELECT COUNT(*), MAX(d) FROM main.t").await,
        "1|2026-01-01"
    );
}
