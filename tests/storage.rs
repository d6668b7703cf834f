//! Storage round-trips on SQLite and PostgreSQL: runs, events, materializations (latest per
//! asset partition), check results, run updates, filters and atomic batches.

use std::collections::BTreeMap;

use rainbow_engine::event::{CheckEvaluation, Materialization};
use rainbow_engine::prelude::*;
use rainbow_engine::storage::{NewRun, RunFilter, RunUpdate};
use rainbow_engine::{Event, EventData, RunStatus, Storage};

use crate::on_both_backends;
use crate::support::{Backend, fresh_storage};

on_both_backends!(round_trips, migrations_are_idempotent);

fn mat(run: &str, key: &str, partition: Option<&str>, rows: u64, version: &str) -> Event {
    Event::new(
        run,
        EventData::Materialization(Materialization {
            metadata: [
                ("row_count".to_owned(), MetadataValue::RowCount(rows)),
                (
                    "schema".to_owned(),
                    TableSchema::new([("id", "INT64"), ("name", "STRING")]).into(),
                ),
                (
                    "path".to_owned(),
                    MetadataValue::Path(format!("raw/{key}.parquet")),
                ),
                (
                    "extra".to_owned(),
                    serde_json::json!({"nested": [1, 2]}).into(),
                ),
                ("ratio".to_owned(), 0.25.into()),
            ]
            .into_iter()
            .collect(),
            code_version: Some(version.into()),
            data_version: Some(format!("{key}-{rows}")),
        }),
    )
    .step(key)
    .asset(AssetKey::from(key))
    .partition(partition.map(str::to_owned))
}

async fn round_trips(backend: Backend) {
    let t = fresh_storage(backend).await;
    let s: &Storage = &t.storage;

    let tags: BTreeMap<String, String> = [("team".to_owned(), "data".to_owned())].into();
    let run = s
        .create_run(NewRun {
            job_name: Some("batch_job".into()),
            selection: "+fact_sales".into(),
            partition_key: Some("2024-09-01".into()),
            tags: tags.clone(),
            status: None,
            ..NewRun::default()
        })
        .await
        .expect("create run");
    let loaded = s.get_run(&run.run_id).await.expect("read").expect("exists");
    assert_eq!(loaded, run);
    assert_eq!(loaded.status, RunStatus::Started);
    assert_eq!(loaded.tags, tags);
    assert_eq!(loaded.pid, Some(i64::from(std::process::id())));
    assert!(s.get_run("no-such-run").await.expect("read").is_none());

    let check = Event::new(
        &run.run_id,
        EventData::CheckEvaluation(CheckEvaluation {
            check_name: "unique_ids".into(),
            passed: false,
            severity: AssetCheckSeverity::Warn,
            blocking: true,
            description: Some("2 duplicates".into()),
            metadata: [("dupes".to_owned(), MetadataValue::Int(2))]
                .into_iter()
                .collect(),
        }),
    )
    .asset(AssetKey::from("orders"))
    .partition(Some("2024-09-01".into()));
    let log = Event::new(
        &run.run_id,
        EventData::Log {
            level: rainbow_engine::event::LogLevel::Warn,
            message: "ünïcödé and 'quotes'".into(),
        },
    );
    let batch = vec![
        mat(&run.run_id, "orders", Some("2024-09-01"), 10, "1"),
        mat(&run.run_id, "orders", Some("2024-09-02"), 20, "1"),
        mat(&run.run_id, "orders", Some("2024-09-01"), 11, "2"), // same partition twice in a batch
        check.clone(),
        log.clone(),
    ];
    s.write_batch(&batch, &[]).await.expect("write batch");

    // Events come back in order, equal to what was written (ids assigned).
    let stored = s.events_for_run(&run.run_id, 0, 100).await.expect("events");
    assert_eq!(stored.len(), batch.len());
    for (got, want) in stored.iter().zip(&batch) {
        assert!(got.id > 0);
        assert_eq!(
            Event {
                id: 0,
                ..got.clone()
            },
            *want
        );
    }
    assert!(stored.windows(2).all(|w| w[0].id < w[1].id));
    // Paging.
    let page = s
        .events_for_run(&run.run_id, stored[1].id, 2)
        .await
        .expect("page");
    assert_eq!(
        page.iter().map(|e| e.id).collect::<Vec<_>>(),
        [stored[2].id, stored[3].id]
    );

    // Latest per partition: the last write for 2024-09-01 wins.
    let p1 = s
        .latest_materialization(&AssetKey::from("orders"), Some("2024-09-01"))
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(
        p1.materialization.metadata["row_count"],
        MetadataValue::RowCount(11)
    );
    assert_eq!(p1.materialization.code_version.as_deref(), Some("2"));
    assert_eq!(p1.partition_key.as_deref(), Some("2024-09-01"));
    assert_eq!(
        p1.materialization.metadata["extra"],
        MetadataValue::Json(serde_json::json!({"nested": [1, 2]}))
    );
    assert!(
        s.latest_materialization(&AssetKey::from("orders"), None)
            .await
            .expect("read")
            .is_none(),
        "no unpartitioned materialization"
    );
    let history = s
        .materializations(&AssetKey::from("orders"), 10)
        .await
        .expect("history");
    assert_eq!(history.len(), 3);
    assert_eq!(
        history[0].materialization.metadata["row_count"],
        MetadataValue::RowCount(11)
    );

    let latest = s.latest_materializations().await.expect("latest");
    assert_eq!(latest.len(), 1);

    let checks = s
        .check_results(&AssetKey::from("orders"), 10)
        .await
        .expect("checks");
    assert_eq!(checks.len(), 1);
    assert_eq!(
        checks[0].evaluation,
        match check.data {
            EventData::CheckEvaluation(c) => c,
            _ => unreachable!(),
        }
    );
    assert_eq!(checks[0].partition_key.as_deref(), Some("2024-09-01"));

    // Run updates: heartbeat, then final status; a finished run's status never changes again.
    let update = |status: Option<RunStatus>| RunUpdate {
        run_id: run.run_id.clone(),
        status,
        ended_at: status.map(|_| rainbow_engine::event::now_micros()),
        heartbeat_at: Some(rainbow_engine::event::now_micros()),
        reason: None,
    };
    s.write_batch(&[], &[update(None)])
        .await
        .expect("heartbeat");
    s.write_batch(&[], &[update(Some(RunStatus::Success))])
        .await
        .expect("finish");
    s.write_batch(&[], &[update(Some(RunStatus::Failure))])
        .await
        .expect("late update");
    let finished = s.get_run(&run.run_id).await.expect("read").expect("exists");
    assert_eq!(finished.status, RunStatus::Success);
    let late = RunUpdate {
        reason: Some("late".into()),
        ..update(Some(RunStatus::Failure))
    };
    s.write_batch(&[], &[late])
        .await
        .expect("late update with a reason");
    let unchanged = s.get_run(&run.run_id).await.expect("read").expect("exists");
    assert_eq!(unchanged, finished, "a finished run never changes");
    assert!(finished.ended_at.is_some() && finished.heartbeat_at >= run.heartbeat_at);

    // Listing and filtering, newest first.
    let second = s
        .create_run(NewRun {
            selection: "*".into(),
            ..NewRun::default()
        })
        .await
        .expect("create");
    let all = s.list_runs(&RunFilter::default()).await.expect("list");
    assert_eq!(
        all.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(),
        [second.run_id.as_str(), run.run_id.as_str()]
    );
    let ok = s
        .list_runs(&RunFilter {
            status: Some(RunStatus::Success),
            limit: None,
            ..Default::default()
        })
        .await
        .expect("filter");
    assert_eq!(ok.len(), 1);
    assert_eq!(
        s.list_runs(&RunFilter {
            status: None,
            limit: Some(1),
            ..Default::default()
        })
        .await
        .expect("limit")
        .len(),
        1
    );
}

async fn migrations_are_idempotent(backend: Backend) {
    // Two processes opening a new database at once both migrate it, and both succeed.
    let (url, _guard) = crate::support::fresh_url(backend).await;
    let (a, b) = tokio::join!(Storage::connect(&url), Storage::connect(&url));
    let (a, b) = (a.expect("first"), b.expect("second"));
    a.create_run(NewRun {
        selection: "*".into(),
        ..NewRun::default()
    })
    .await
    .expect("create");
    assert_eq!(
        b.list_runs(&RunFilter::default())
            .await
            .expect("list")
            .len(),
        1
    );
    // Connecting again re-checks the schema and keeps the data.
    let again = Storage::connect(&url).await.expect("reconnect");
    assert_eq!(
        again
            .list_runs(&RunFilter::default())
            .await
            .expect("list")
            .len(),
        1
    );
    use sqlx::Row;
    let versions: i64 = sqlx::query("SELECT COUNT(*) FROM rainbow_schema")
        .fetch_one(again.pool())
        .await
        .and_then(|r| r.try_get(0))
        .expect("count");
    assert_eq!(versions, 2, "each migration recorded once");
}

#[tokio::test]
async fn bad_urls_are_clear_errors() {
    let e = Storage::connect("mysql://localhost/db")
        .await
        .expect_err("unsupported")
        .to_string();
    assert!(e.contains("unsupported scheme `mysql`"), "{e}");
    let e = Storage::connect("postgres://nobody:secret@127.0.0.1:notaport/db")
        .await
        .expect_err("refused")
        .to_string();
    assert!(
        e.contains("connecting to postgres://nobody:***@127.0.0.1:notaport/db"),
        "{e}"
    );
    assert!(!e.contains("secret"), "{e}");
}
