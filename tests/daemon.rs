//! The daemon with an injected clock: the nightly schedule runs the previous day's partition,
//! catch-up after downtime (latest only / every missed tick), tick idempotence across a
//! restart, cron in a timezone across DST, run-queue limits, the asset sensor, eager and
//! on_cron automation, and requested backfills.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use rainbow_engine::daemon::{Daemon, DaemonOptions, ManualClock, TagLimit};
use rainbow_engine::partitions::PartitionState;
use rainbow_engine::prelude::*;
use rainbow_engine::storage::{NewRun, RunFilter};
use rainbow_engine::{
    CatchUpPolicy, Executor, RainbowConfig, RunStatus, SensorDefinition, Storage,
};

use crate::on_both_backends;
use crate::support::{Backend, fresh_storage, materialize};

on_both_backends!(nightly_schedule_runs_the_previous_days_partition_once);

fn at(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, 0)
        .single()
        .expect("valid")
}

async fn noop(_: AssetContext) -> Result<MaterializeResult, BoxError> {
    Ok(MaterializeResult::new())
}

fn nightly(catch_up: CatchUpPolicy) -> Definitions {
    let daily = PartitionsDefinition::daily("2024-09-01");
    Definitions::new()
        .asset(asset("orders").partitions(daily.clone()).compute(noop))
        .asset(
            asset("revenue")
                .dep("orders")
                .partitions(daily)
                .compute(noop),
        )
        .job(JobDefinition::new("nightly_job", "*"))
        .schedule(ScheduleDefinition::new("nightly", "0 0 * * *", "nightly_job").catch_up(catch_up))
}

fn daemon(
    defs: Definitions,
    storage: &Storage,
    clock: Arc<ManualClock>,
    options: DaemonOptions,
) -> Daemon {
    let graph = Arc::new(AssetGraph::build(defs).expect("valid"));
    let executor =
        Executor::new(graph, storage.clone(), &RainbowConfig::default()).expect("executor");
    Daemon::new(executor, clock, options)
}

async fn runs(storage: &Storage) -> Vec<rainbow_engine::storage::RunRecord> {
    let mut runs = storage
        .list_runs(&RunFilter {
            status: None,
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .expect("runs");
    runs.reverse();
    runs
}

async fn nightly_schedule_runs_the_previous_days_partition_once(backend: Backend) {
    let t = fresh_storage(backend).await;
    let clock = Arc::new(ManualClock::new(at(2024, 9, 1, 12, 0)));
    let d = daemon(
        nightly(CatchUpPolicy::LatestOnly),
        &t.storage,
        clock.clone(),
        DaemonOptions::default(),
    );

    // First sight of the schedule: nothing to do yet.
    assert!(d.tick().await.expect("tick").requested.is_empty());
    // Just after midnight on 2024-09-02: the tick is for 2024-09-01.
    clock.set(at(2024, 9, 2, 0, 0) + chrono::Duration::seconds(30));
    let report = d.tick().await.expect("tick");
    assert_eq!(report.requested.len(), 1);
    assert_eq!(report.launched, report.requested);
    d.wait_idle().await;
    let all = runs(&t.storage).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].partition_key.as_deref(), Some("2024-09-01"));
    assert_eq!(all[0].status, RunStatus::Success);
    assert_eq!(all[0].job_name.as_deref(), Some("nightly_job"));
    let states = t
        .storage
        .partition_states(&AssetKey::from("revenue"))
        .await
        .expect("states");
    assert_eq!(
        states.get("2024-09-01"),
        Some(&PartitionState::Materialized)
    );

    // Ticking again at the same time requests nothing.
    assert!(d.tick().await.expect("tick").requested.is_empty());
    let ticks = t
        .storage
        .ticks(Some("schedule:nightly"), 10)
        .await
        .expect("ticks");
    assert_eq!(ticks.len(), 1);
    assert_eq!(
        (ticks[0].status.as_str(), ticks[0].tick_ts),
        ("requested", at(2024, 9, 2, 0, 0).timestamp_micros())
    );

    // A restarted daemon that lost its cursor (crashed after queueing) does not launch twice.
    sqlx::query("DELETE FROM instigator_state")
        .execute(t.storage.pool())
        .await
        .expect("forget cursor");
    sqlx::query("INSERT INTO instigator_state (name, cursor, updated_at) VALUES ('schedule:nightly', $1, 0)")
        .bind(at(2024, 9, 1, 12, 0).timestamp_micros().to_string())
        .execute(t.storage.pool())
        .await
        .expect("old cursor");
    let restarted = daemon(
        nightly(CatchUpPolicy::LatestOnly),
        &t.storage,
        clock.clone(),
        DaemonOptions::default(),
    );
    assert!(restarted.tick().await.expect("tick").requested.is_empty());
    restarted.wait_idle().await;
    assert_eq!(
        runs(&t.storage).await.len(),
        1,
        "the run key kept the tick from launching twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_after_downtime_follows_the_policy() {
    for (policy, expected) in [
        (CatchUpPolicy::LatestOnly, vec!["2024-09-04"]),
        (
            CatchUpPolicy::AllMissed,
            vec!["2024-09-02", "2024-09-03", "2024-09-04"],
        ),
    ] {
        let t = fresh_storage(Backend::Sqlite).await;
        let clock = Arc::new(ManualClock::new(at(2024, 9, 2, 12, 0)));
        let d = daemon(
            nightly(policy),
            &t.storage,
            clock.clone(),
            DaemonOptions::default(),
        );
        d.tick().await.expect("first sight");
        // Down for three nights.
        clock.set(at(2024, 9, 5, 0, 10));
        let report = d.tick().await.expect("tick");
        d.wait_idle().await;
        assert_eq!(report.requested.len(), expected.len(), "{policy:?}");
        let mut partitions: Vec<String> = runs(&t.storage)
            .await
            .into_iter()
            .filter_map(|r| r.partition_key)
            .collect();
        partitions.sort();
        assert_eq!(partitions, expected, "{policy:?}");
        let ticks = t
            .storage
            .ticks(Some("schedule:nightly"), 10)
            .await
            .expect("ticks");
        assert_eq!(ticks.len(), 3, "every missed tick is recorded");
        let skipped = ticks.iter().filter(|t| t.status == "skipped").count();
        assert_eq!(skipped, 3 - expected.len());
        if policy == CatchUpPolicy::LatestOnly {
            assert!(ticks.iter().any(|t| {
                t.reason
                    .as_deref()
                    .is_some_and(|r| r.contains("launches only the latest tick"))
            }));
        }
    }
}

#[tokio::test]
async fn cron_ticks_follow_the_schedules_timezone_across_dst() {
    let t = fresh_storage(Backend::Sqlite).await;
    let defs = Definitions::new()
        .asset(asset("report").compute(noop))
        .job(JobDefinition::new("morning", "*"))
        .schedule(
            ScheduleDefinition::new("paris_9am", "0 9 * * *", "morning")
                .timezone("Europe/Paris")
                .catch_up(CatchUpPolicy::AllMissed),
        );
    let clock = Arc::new(ManualClock::new(at(2024, 3, 30, 0, 0)));
    let d = daemon(defs, &t.storage, clock.clone(), DaemonOptions::default());
    d.tick().await.expect("first sight");
    // Paris moves to summer time on 2024-03-31: 09:00 is 08:00Z before, 07:00Z after.
    clock.set(at(2024, 4, 1, 12, 0));
    d.tick().await.expect("tick");
    d.wait_idle().await;
    let mut ticks: Vec<i64> = t
        .storage
        .ticks(Some("schedule:paris_9am"), 10)
        .await
        .expect("ticks")
        .iter()
        .map(|t| t.tick_ts)
        .collect();
    ticks.sort();
    assert_eq!(
        ticks,
        [
            at(2024, 3, 30, 8, 0),
            at(2024, 3, 31, 7, 0),
            at(2024, 4, 1, 7, 0)
        ]
        .map(|t| t.timestamp_micros())
    );
    let bad = Definitions::new()
        .asset(asset("x").compute(noop))
        .job(JobDefinition::new("j", "*"))
        .schedule(ScheduleDefinition::new("s", "0 9 * * *", "j").timezone("Paris/Nowhere"));
    let e = AssetGraph::build(bad).err().expect("bad tz").to_string();
    assert!(
        e.contains("schedule `s` has an unknown timezone `Paris/Nowhere`"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_queue_respects_global_and_tag_limits() {
    let t = fresh_storage(Backend::Sqlite).await;
    let defs = Definitions::new()
        .asset(asset("bq_table").kind("bigquery").compute(|_| async {
            tokio::time::sleep(Duration::from_millis(400)).await;
            Ok::<_, BoxError>(MaterializeResult::new())
        }))
        .asset(asset("local_file").compute(|_| async {
            tokio::time::sleep(Duration::from_millis(400)).await;
            Ok::<_, BoxError>(MaterializeResult::new())
        }))
        .job(JobDefinition::new("bq", "bq_table").tag("warehouse", "bigquery"))
        .job(JobDefinition::new("local", "local_file"));
    let options = DaemonOptions {
        max_concurrent_runs: 3,
        tag_limits: vec![TagLimit {
            key: "warehouse".into(),
            value: Some("bigquery".into()),
            limit: 2,
        }],
        ..DaemonOptions::default()
    };
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let d = daemon(defs, &t.storage, clock, options);
    let queue = |job: &str, i: usize| NewRun {
        job_name: Some(job.into()),
        selection: if job == "bq" {
            "bq_table".into()
        } else {
            "local_file".into()
        },
        tags: if job == "bq" {
            BTreeMap::from([("warehouse".to_owned(), "bigquery".to_owned())])
        } else {
            BTreeMap::new()
        },
        status: Some(RunStatus::Queued),
        run_key: Some(format!("{job}-{i}")),
        ..NewRun::default()
    };
    for i in 0..4 {
        t.storage
            .create_run_once(queue("bq", i))
            .await
            .expect("queue")
            .expect("new");
    }
    for i in 0..2 {
        t.storage
            .create_run_once(queue("local", i))
            .await
            .expect("queue")
            .expect("new");
    }
    let report = d.tick().await.expect("tick");
    // 2 BigQuery runs (tag limit) + 1 local run (global limit 3).
    assert_eq!(report.launched.len(), 3);
    let started = t
        .storage
        .list_runs(&RunFilter {
            status: Some(RunStatus::Started),
            limit: None,
            ..Default::default()
        })
        .await
        .expect("runs");
    assert_eq!(started.len(), 3);
    assert_eq!(
        started
            .iter()
            .filter(|r| r.tags.contains_key("warehouse"))
            .count(),
        2
    );
    // While they run, nothing more starts.
    assert!(d.tick().await.expect("tick").launched.is_empty());
    d.wait_idle().await;
    // Then the rest drains.
    let report = d.tick().await.expect("tick");
    assert_eq!(report.launched.len(), 3);
    d.wait_idle().await;
    let done = t
        .storage
        .list_runs(&RunFilter {
            status: Some(RunStatus::Success),
            limit: None,
            ..Default::default()
        })
        .await
        .expect("runs");
    assert_eq!(done.len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asset_sensor_and_automation_conditions() {
    let t = fresh_storage(Backend::Sqlite).await;
    let defs = || {
        Definitions::new()
            .asset(asset("upstream").compute(noop))
            .asset(
                asset("eager_child")
                    .dep("upstream")
                    .automation_condition(AutomationCondition::eager())
                    .compute(noop),
            )
            .asset(
                asset("hourly_child")
                    .dep("upstream")
                    .automation_condition(AutomationCondition::on_cron("0 * * * *"))
                    .compute(noop),
            )
            .asset(asset("reacting").compute(noop))
            .job(JobDefinition::new("react", "reacting"))
            .sensor(SensorDefinition::asset_sensor(
                "on_upstream",
                "upstream",
                "react",
            ))
    };
    // Manual time two hours back, so the cron tick falls before the real materializations.
    let clock = Arc::new(ManualClock::new(Utc::now() - chrono::Duration::hours(2)));
    let d = daemon(defs(), &t.storage, clock.clone(), DaemonOptions::default());
    assert!(d.tick().await.expect("first sight").requested.is_empty());

    // The cron tick passes but upstream was never updated: on_cron waits.
    clock.advance(Duration::from_secs(3600));
    assert!(d.tick().await.expect("tick").requested.is_empty());
    let waiting = t
        .storage
        .ticks(Some("automation:hourly_child"), 5)
        .await
        .expect("ticks");
    assert!(waiting.iter().any(|t| t.status == "skipped"), "{waiting:?}");

    // upstream materializes: the sensor, eager and on_cron each request one run.
    assert!(materialize(defs(), &t.storage, "upstream").await.success());
    let report = d.tick().await.expect("tick");
    d.wait_idle().await;
    assert_eq!(report.requested.len(), 3, "{report:?}");
    let latest = t.storage.latest_materializations().await.expect("latest");
    for key in ["eager_child", "hourly_child", "reacting"] {
        assert!(
            latest.contains_key(&AssetKey::from(key)),
            "{key} materialized"
        );
    }
    // Nothing new upstream: nothing more.
    assert!(d.tick().await.expect("tick").requested.is_empty());
    let sensor_ticks = t
        .storage
        .ticks(Some("sensor:on_upstream"), 10)
        .await
        .expect("ticks");
    assert!(sensor_ticks.iter().any(|t| t.status == "requested"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_runs_requested_backfills() {
    let t = fresh_storage(Backend::Sqlite).await;
    let defs = nightly(CatchUpPolicy::LatestOnly);
    let graph = AssetGraph::build(nightly(CatchUpPolicy::LatestOnly)).expect("valid");
    let request = rainbow_engine::backfill::BackfillRequest {
        select: vec!["*".into()],
        exclude: Vec::new(),
        partitions: rainbow_engine::backfill::PartitionSelector::Range {
            from: "2024-09-01".into(),
            to: "2024-09-05".into(),
        },
        max_concurrent: 2,
        tags: BTreeMap::new(),
    };
    let record =
        rainbow_engine::backfill::launch_backfill(&graph, &t.storage, &request, Utc::now())
            .await
            .expect("launch");
    let d = daemon(
        defs,
        &t.storage,
        Arc::new(ManualClock::new(Utc::now())),
        DaemonOptions::default(),
    );
    let report = d.tick().await.expect("tick");
    assert_eq!(report.backfills, std::slice::from_ref(&record.backfill_id));
    d.wait_idle().await;
    let done = t
        .storage
        .get_backfill(&record.backfill_id)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(
        done.status,
        rainbow_engine::storage::backfills::BackfillStatus::Completed
    );
    for asset in ["orders", "revenue"] {
        let history = t
            .storage
            .materializations(&AssetKey::from(asset), 100)
            .await
            .expect("history");
        assert_eq!(
            history.len(),
            5,
            "{asset}: one materialization per partition"
        );
    }

    // A backfill whose process died is resumed by the daemon.
    let record = rainbow_engine::backfill::launch_backfill(
        &graph,
        &t.storage,
        &rainbow_engine::backfill::BackfillRequest {
            partitions: rainbow_engine::backfill::PartitionSelector::Range {
                from: "2024-09-06".into(),
                to: "2024-09-08".into(),
            },
            ..request
        },
        Utc::now(),
    )
    .await
    .expect("launch");
    let mut gone = std::process::Command::new("true").spawn().expect("spawn");
    let dead_pid = i64::from(gone.id());
    gone.wait().expect("reap");
    sqlx::query(
        "UPDATE backfills SET status = 'running', pid = $2, hostname = $3 WHERE backfill_id = $1",
    )
    .bind(record.backfill_id.clone())
    .bind(dead_pid)
    .bind(rainbow_engine::process::hostname())
    .execute(t.storage.pool())
    .await
    .expect("orphan it");
    let report = d.tick().await.expect("tick");
    assert_eq!(report.backfills, std::slice::from_ref(&record.backfill_id));
    d.wait_idle().await;
    let resumed = t
        .storage
        .get_backfill(&record.backfill_id)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(
        resumed.status,
        rainbow_engine::storage::backfills::BackfillStatus::Completed
    );
    let history = t
        .storage
        .materializations(&AssetKey::from("orders"), 100)
        .await
        .expect("history");
    assert_eq!(history.len(), 8);
}
