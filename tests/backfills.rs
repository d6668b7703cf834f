//! Backfills: each partition source, backfill policies, dependencies across partitions, the
//! concurrency limit, cancel and resume, a SIGKILLed backfill process resumed with every
//! partition materialized exactly once, and overlap exclusion between two processes.

use std::collections::{BTreeMap, HashMap};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rainbow_engine::backfill::{
    BackfillRequest, BackfillRunOptions, PartitionSelector, cancel_backfill, launch_backfill,
    plan_backfill, resume_backfill, run_backfill,
};
use rainbow_engine::partitions::PartitionState;
use rainbow_engine::prelude::*;
use rainbow_engine::storage::backfills::BackfillStatus;
use rainbow_engine::{EventData, Executor, RainbowConfig, Storage};
use tokio_util::sync::CancellationToken;

use crate::on_both_backends;
use crate::support::{Backend, fresh_storage};

on_both_backends!(
    every_partition_source,
    crash_resume_materializes_every_partition_exactly_once
);

const RAINBOW: &str = env!("CARGO_BIN_EXE_rainbow");

fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

/// extract[daily] -> load[daily]; `fail` lists days whose extract fails.
fn chain(fail: &'static [&'static str]) -> Definitions {
    let daily = PartitionsDefinition::daily("2024-09-01");
    Definitions::new()
        .asset(
            asset("extract")
                .partitions(daily.clone())
                .compute(move |ctx| async move {
                    let day = ctx.partition_key().unwrap_or_default().to_owned();
                    if fail.contains(&day.as_str()) {
                        return Err::<MaterializeResult, BoxError>(
                            format!("source down on {day}").into(),
                        );
                    }
                    Ok(MaterializeResult::new())
                }),
        )
        .asset(
            asset("load")
                .dep("extract")
                .partitions(daily)
                .compute(|_| async { Ok::<_, BoxError>(MaterializeResult::new()) }),
        )
}

fn request(selector: PartitionSelector) -> BackfillRequest {
    BackfillRequest {
        select: vec!["*".into()],
        exclude: Vec::new(),
        partitions: selector,
        max_concurrent: 4,
        tags: BTreeMap::new(),
    }
}

async fn backfill(
    defs: Definitions,
    storage: &Storage,
    req: BackfillRequest,
) -> (String, BackfillStatus) {
    let graph = Arc::new(AssetGraph::build(defs).expect("valid"));
    let record = launch_backfill(&graph, storage, &req, now())
        .await
        .expect("launch");
    let executor =
        Executor::new(graph, storage.clone(), &RainbowConfig::default()).expect("executor");
    let status = run_backfill(
        &executor,
        &record.backfill_id,
        &BackfillRunOptions::default(),
        CancellationToken::new(),
        None,
    )
    .await
    .expect("run");
    (record.backfill_id, status)
}

async fn states(storage: &Storage, asset: &str) -> BTreeMap<String, PartitionState> {
    storage
        .partition_states(&AssetKey::from(asset))
        .await
        .expect("states")
        .into_iter()
        .collect()
}

fn days(from: u32, to: u32) -> Vec<String> {
    (from..=to).map(|d| format!("2024-09-{d:02}")).collect()
}

async fn every_partition_source(backend: Backend) {
    let t = fresh_storage(backend).await;
    let s = &t.storage;

    // A range, with one failing day: its load is skipped, the backfill fails.
    let (_, status) = backfill(
        chain(&["2024-09-03"]),
        s,
        request(PartitionSelector::Range {
            from: "2024-09-01".into(),
            to: "2024-09-05".into(),
        }),
    )
    .await;
    assert_eq!(status, BackfillStatus::Failed);
    let extract = states(s, "extract").await;
    assert_eq!(extract.get("2024-09-03"), Some(&PartitionState::Failed));
    assert_eq!(
        extract
            .values()
            .filter(|v| **v == PartitionState::Materialized)
            .count(),
        4
    );
    assert!(
        !states(s, "load").await.contains_key("2024-09-03"),
        "the load of a failed day is not attempted"
    );

    // Failed: only 2024-09-03 (of extract; load of that day was never attempted).
    let (_, status) = backfill(chain(&[]), s, request(PartitionSelector::Failed)).await;
    assert_eq!(status, BackfillStatus::Completed);
    assert_eq!(
        states(s, "extract").await.get("2024-09-03"),
        Some(&PartitionState::Materialized)
    );

    // A list.
    let (_, status) = backfill(
        chain(&[]),
        s,
        request(PartitionSelector::Keys {
            keys: vec!["2024-09-08".into(), "2024-09-10".into()],
        }),
    )
    .await;
    assert_eq!(status, BackfillStatus::Completed);
    let load = states(s, "load").await;
    assert!(
        load.contains_key("2024-09-08")
            && load.contains_key("2024-09-10")
            && !load.contains_key("2024-09-09")
    );

    // Missing: everything not materialized up to now, for each asset.
    let graph = AssetGraph::build(chain(&[])).expect("valid");
    let units = plan_backfill(&graph, s, &request(PartitionSelector::Missing), now())
        .await
        .expect("plan");
    let ctx = rainbow_engine::partitions::PartitionContext::at(now());
    let total = PartitionsDefinition::daily("2024-09-01")
        .keys(&ctx)
        .expect("keys")
        .len();
    let load_missing = units
        .iter()
        .filter(|u| u.assets.contains(&AssetKey::from("load")))
        .count();
    assert_eq!(
        load_missing,
        total - 6,
        "load has 6 materialized days (1, 2, 4, 5, 8, 10)"
    );
    assert!(units.iter().all(|u| u.partitions.len() == 1));

    // Unknown keys and ranges are errors naming them.
    let e = plan_backfill(
        &graph,
        s,
        &request(PartitionSelector::Keys {
            keys: vec!["2023-01-01".into()],
        }),
        now(),
    )
    .await
    .expect_err("unknown key")
    .to_string();
    assert!(
        e.contains("no selected asset has a partition `2023-01-01`"),
        "{e}"
    );
    let e = plan_backfill(
        &graph,
        s,
        &request(PartitionSelector::Range {
            from: "2024-09-05".into(),
            to: "2024-09-01".into(),
        }),
        now(),
    )
    .await
    .expect_err("reversed")
    .to_string();
    assert!(e.contains("`2024-09-05` comes after `2024-09-01`"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_policies_group_partitions_into_runs() {
    let t = fresh_storage(Backend::Sqlite).await;
    let daily = PartitionsDefinition::daily("2024-09-01");
    let seen: Arc<std::sync::Mutex<Vec<Vec<String>>>> = Arc::default();
    let defs = |policy: BackfillPolicy, seen: Arc<std::sync::Mutex<Vec<Vec<String>>>>| {
        Definitions::new().asset(
            asset("ranged")
                .partitions(daily.clone())
                .backfill_policy(policy)
                .compute(move |ctx| {
                    let seen = seen.clone();
                    async move {
                        seen.lock()
                            .expect("lock")
                            .push(ctx.partition_keys().to_vec());
                        let w = ctx.partition_time_window().expect("window");
                        assert_eq!(
                            w.start.date_naive().format("%Y-%m-%d").to_string(),
                            ctx.partition_keys()[0]
                        );
                        Ok::<_, BoxError>(MaterializeResult::new())
                    }
                }),
        )
    };
    let range = PartitionSelector::Range {
        from: "2024-09-01".into(),
        to: "2024-09-07".into(),
    };
    let (id, status) = backfill(
        defs(BackfillPolicy::multi_run(3), seen.clone()),
        &t.storage,
        request(range.clone()),
    )
    .await;
    assert_eq!(status, BackfillStatus::Completed);
    let mut calls = seen.lock().expect("lock").clone();
    calls.sort();
    assert_eq!(calls, [days(1, 3), days(4, 6), days(7, 7)]);
    // One materialization per partition even for range runs.
    let history = t
        .storage
        .materializations(&AssetKey::from("ranged"), 100)
        .await
        .expect("history");
    assert_eq!(history.len(), 7);
    assert_eq!(t.storage.backfill_units(&id).await.expect("units").len(), 3);

    seen.lock().expect("lock").clear();
    let (_, status) = backfill(
        defs(BackfillPolicy::single_run(), seen.clone()),
        &t.storage,
        request(range),
    )
    .await;
    assert_eq!(status, BackfillStatus::Completed);
    assert_eq!(*seen.lock().expect("lock"), [days(1, 7)]);
}

#[tokio::test]
async fn dependencies_across_partitions_follow_the_mappings() {
    let t = fresh_storage(Backend::Sqlite).await;
    let daily = PartitionsDefinition::daily("2024-09-01");
    let monthly = PartitionsDefinition::monthly("2024-09-01");
    let noop = |_| async { Ok::<_, BoxError>(MaterializeResult::new()) };
    let defs = Definitions::new()
        .asset(asset("day").partitions(daily.clone()).compute(noop))
        // Each day's running total needs the previous day's.
        .asset(
            asset("cumulative")
                .dep(AssetDep::new("day"))
                .dep(AssetDep::new("day").partition_mapping(PartitionMapping::previous_window()))
                .partitions(daily.clone())
                .compute(noop),
        )
        .asset(asset("month").dep("day").partitions(monthly).compute(noop));
    let e = AssetGraph::build(
        Definitions::new().asset(asset("x").compute(noop)).asset(
            asset("y")
                .dep(AssetDep::new("x").partition_mapping(PartitionMapping::previous_window()))
                .compute(noop),
        ),
    )
    .err()
    .expect("mapping on an unpartitioned upstream")
    .to_string();
    assert!(
        e.contains("the partition mapping from `y` to its upstream `x` is invalid"),
        "{e}"
    );

    let graph = AssetGraph::build(defs).expect("valid");
    let range = PartitionSelector::Range {
        from: "2024-09-01".into(),
        to: "2024-10-31".into(),
    };
    let units = plan_backfill(&graph, &t.storage, &request(range), now())
        .await
        .expect("plan");
    let find = |asset: &str, part: &str| {
        units
            .iter()
            .find(|u| {
                u.assets.contains(&AssetKey::from(asset)) && u.partitions == [part.to_owned()]
            })
            .unwrap_or_else(|| panic!("unit for {asset} {part}"))
    };
    // Daily units hold both daily assets; a day depends on the previous day (cumulative).
    assert_eq!(
        find("day", "2024-09-05").unit_id,
        find("cumulative", "2024-09-05").unit_id
    );
    assert_eq!(
        find("cumulative", "2024-09-05").deps,
        [find("day", "2024-09-04").unit_id]
    );
    assert!(find("cumulative", "2024-09-01").deps.is_empty());
    // A month depends on each of its days.
    let october = find("month", "2024-10-01");
    assert_eq!(october.deps.len(), 31);
    assert!(october.deps.contains(&find("day", "2024-10-31").unit_id));
    assert!(!october.deps.contains(&find("day", "2024-09-30").unit_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_max_concurrent_partitions_run_at_once() {
    let t = fresh_storage(Backend::Sqlite).await;
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (r, p) = (running.clone(), peak.clone());
    let defs = Definitions::new().asset(
        asset("slow")
            .partitions(PartitionsDefinition::daily("2024-09-01"))
            .compute(move |_| {
                let (r, p) = (r.clone(), p.clone());
                async move {
                    let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                    p.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    r.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, BoxError>(MaterializeResult::new())
                }
            }),
    );
    let mut req = request(PartitionSelector::Range {
        from: "2024-09-01".into(),
        to: "2024-09-12".into(),
    });
    req.max_concurrent = 3;
    let (_, status) = backfill(defs, &t.storage, req).await;
    assert_eq!(status, BackfillStatus::Completed);
    assert_eq!(peak.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_then_resume_completes_with_each_partition_once() {
    let t = fresh_storage(Backend::Sqlite).await;
    let daily = PartitionsDefinition::daily("2024-09-01");
    let defs = Definitions::new().asset(asset("slow").partitions(daily).compute(|_| async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok::<_, BoxError>(MaterializeResult::new())
    }));
    let graph = Arc::new(AssetGraph::build(defs).expect("valid"));
    let mut req = request(PartitionSelector::Range {
        from: "2024-09-01".into(),
        to: "2024-09-30".into(),
    });
    req.max_concurrent = 2;
    let record = launch_backfill(&graph, &t.storage, &req, now())
        .await
        .expect("launch");
    let id = record.backfill_id.clone();
    let executor =
        Executor::new(graph, t.storage.clone(), &RainbowConfig::default()).expect("executor");
    let options = BackfillRunOptions {
        poll_interval: Duration::from_millis(20),
        ..BackfillRunOptions::default()
    };
    let storage = t.storage.clone();
    let canceler = tokio::spawn({
        let id = id.clone();
        async move {
            while storage.backfill_progress(&id).await.expect("progress").done < 5 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            cancel_backfill(&storage, &id).await.expect("cancel")
        }
    });
    let status = run_backfill(&executor, &id, &options, CancellationToken::new(), None)
        .await
        .expect("run");
    assert_eq!(canceler.await.expect("join"), BackfillStatus::Canceling);
    assert_eq!(status, BackfillStatus::Canceled);
    let progress = t.storage.backfill_progress(&id).await.expect("progress");
    assert!(progress.done >= 5 && progress.done < 30, "{progress:?}");
    assert_eq!(progress.running, 0, "no unit is left running");

    resume_backfill(&t.storage, &id, Duration::from_secs(60))
        .await
        .expect("resume");
    let status = run_backfill(&executor, &id, &options, CancellationToken::new(), None)
        .await
        .expect("run");
    assert_eq!(status, BackfillStatus::Completed);
    let per_partition = materializations_per_partition(&t.storage, "slow").await;
    assert_eq!(per_partition.len(), 30);
    assert!(per_partition.values().all(|n| *n == 1), "{per_partition:?}");
    let e = resume_backfill(&t.storage, &id, Duration::from_secs(60))
        .await
        .expect_err("completed")
        .to_string();
    assert!(e.contains("it completed"), "{e}");
}

async fn materializations_per_partition(storage: &Storage, asset: &str) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for m in storage
        .materializations(&AssetKey::from(asset), 1_000_000)
        .await
        .expect("history")
    {
        *out.entry(m.partition_key.unwrap_or_default()).or_insert(0) += 1;
    }
    out
}

fn rainbow(url: &str, args: &[&str], latency_ms: u64) -> Command {
    let mut cmd = Command::new(RAINBOW);
    cmd.env("RAINBOW_CODE_LOCATION", "quickstart")
        .args(["--database-url", url])
        .args(args)
        .env("RAINBOW_RESOURCE__SHOP__LATENCY_MS", latency_ms.to_string())
        .env_remove("RAINBOW_RESOURCE__SHOP__FAIL_DAYS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

async fn count_materializations(storage: &Storage) -> i64 {
    use sqlx::Row;
    sqlx::query("SELECT COUNT(*) FROM events WHERE kind = 'materialization'")
        .fetch_one(storage.pool())
        .await
        .and_then(|r| r.try_get::<i64, _>(0))
        .expect("count")
}

async fn crash_resume_materializes_every_partition_exactly_once(backend: Backend) {
    let t = fresh_storage(backend).await;
    // The quickstart's daily chain over 40 days, 40 ms per extract, 4 partitions at a time.
    let mut child = rainbow(
        &t.url,
        &[
            "backfill",
            "--select",
            "group:daily",
            "--from",
            "2024-09-01",
            "--to",
            "2024-10-10",
            "--max-concurrent",
            "4",
        ],
        40,
    )
    .spawn()
    .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    while count_materializations(&t.storage).await < 12 {
        assert!(Instant::now() < deadline, "the backfill never got going");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let before = count_materializations(&t.storage).await;
    assert!(before < 80, "killed before the end ({before} of 80)");

    let list = rainbow(&t.url, &["backfill", "list", "--json"], 0)
        .output()
        .expect("list");
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout).expect("json");
    let id = listed[0]["backfill"]["backfill_id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(
        listed[0]["backfill"]["status"], "running",
        "nothing noticed the death yet"
    );

    let out = rainbow(&t.url, &["backfill", "resume", &id], 5)
        .output()
        .expect("resume");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("completed: 40 done"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    for asset in ["daily/orders", "daily/revenue"] {
        let per = materializations_per_partition(&t.storage, asset).await;
        assert_eq!(per.len(), 40, "{asset}");
        let twice: Vec<_> = per.iter().filter(|(_, n)| **n != 1).collect();
        assert!(
            twice.is_empty(),
            "{asset} materialized more than once: {twice:?}"
        );
    }
    let runs = t
        .storage
        .list_runs(&Default::default())
        .await
        .expect("runs");
    // The run killed mid-flight is marked failed by the next process.
    assert!(
        runs.iter()
            .all(|r| r.status != rainbow_engine::RunStatus::Started)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_never_compute_the_same_asset_partition_at_once() {
    let t = fresh_storage(Backend::Postgres).await;
    let a = rainbow(
        &t.url,
        &[
            "backfill",
            "--select",
            "daily/orders",
            "--from",
            "2024-09-01",
            "--to",
            "2024-09-20",
            "--max-concurrent",
            "4",
        ],
        30,
    )
    .spawn()
    .expect("spawn a");
    let b = rainbow(
        &t.url,
        &[
            "backfill",
            "--select",
            "daily/orders",
            "--from",
            "2024-09-11",
            "--to",
            "2024-09-30",
            "--max-concurrent",
            "4",
        ],
        30,
    )
    .spawn()
    .expect("spawn b");
    let (a, b) = (
        a.wait_with_output().expect("a"),
        b.wait_with_output().expect("b"),
    );
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));

    // Intervals (step started .. step ended) per partition, across both processes' runs.
    let mut intervals: HashMap<String, Vec<(i64, i64, String)>> = HashMap::new();
    for run in t
        .storage
        .list_runs(&rainbow_engine::storage::RunFilter {
            status: None,
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .expect("runs")
    {
        let events = t
            .storage
            .events_for_run(&run.run_id, 0, 1000)
            .await
            .expect("events");
        let mut start = None;
        for e in events {
            match e.data {
                EventData::StepStarted { .. } => start = Some(e.timestamp),
                EventData::StepSucceeded { .. } | EventData::StepFailed { .. } => {
                    if let (Some(s), Some(p)) = (start.take(), e.partition_key.clone()) {
                        intervals
                            .entry(p)
                            .or_default()
                            .push((s, e.timestamp, run.run_id.clone()));
                    }
                }
                _ => {}
            }
        }
    }
    // The two processes really ran at the same time.
    let mut spans: HashMap<String, (i64, i64)> = HashMap::new();
    for run in t
        .storage
        .list_runs(&rainbow_engine::storage::RunFilter {
            status: None,
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .expect("runs")
    {
        let (Some(b), Some(s), Some(e)) = (run.backfill_id.clone(), run.started_at, run.ended_at)
        else {
            continue;
        };
        let span = spans.entry(b).or_insert((s, e));
        span.0 = span.0.min(s);
        span.1 = span.1.max(e);
    }
    let spans: Vec<(i64, i64)> = spans.into_values().collect();
    assert_eq!(spans.len(), 2);
    assert!(
        spans[0].0.max(spans[1].0) < spans[0].1.min(spans[1].1),
        "the backfills overlapped in time: {spans:?}"
    );
    let overlapped: Vec<String> = days(11, 20);
    for day in &overlapped {
        let list = intervals
            .get(day)
            .unwrap_or_else(|| panic!("{day} computed"));
        assert_eq!(
            list.len(),
            2,
            "{day} is in both backfills, so computed by each"
        );
    }
    for (day, list) in &intervals {
        let mut list = list.clone();
        list.sort();
        for w in list.windows(2) {
            assert!(
                w[0].1 <= w[1].0,
                "{day}: runs {} and {} overlapped",
                w[0].2,
                w[1].2
            );
        }
    }
}

#[tokio::test]
async fn a_selection_whose_runs_would_wait_for_each_other_is_refused() {
    let t = fresh_storage(Backend::Sqlite).await;
    let noop = |_| async { Ok::<_, BoxError>(MaterializeResult::new()) };
    let daily = PartitionsDefinition::daily("2024-09-01");
    // daily a -> monthly m -> daily d: a and d share runs, which would wait for m's runs.
    let defs = Definitions::new()
        .asset(asset("a").partitions(daily.clone()).compute(noop))
        .asset(
            asset("m")
                .dep("a")
                .partitions(PartitionsDefinition::monthly("2024-09-01"))
                .compute(noop),
        )
        .asset(asset("d").dep("m").partitions(daily).compute(noop));
    let graph = AssetGraph::build(defs).expect("valid");
    let range = PartitionSelector::Range {
        from: "2024-09-01".into(),
        to: "2024-09-30".into(),
    };
    let e = plan_backfill(&graph, &t.storage, &request(range), now())
        .await
        .expect_err("cycle")
        .to_string();
    assert!(
        e.contains("cannot be backfilled in one backfill") && e.contains("`d`"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_with_ranged_runs_recomputes_nothing_already_there() {
    let t = fresh_storage(Backend::Sqlite).await;
    let daily = PartitionsDefinition::daily("2024-09-01");
    let ranged = |key: &str| {
        asset(key)
            .partitions(daily.clone())
            .backfill_policy(BackfillPolicy::multi_run(3))
            .compute(|_| async { Ok::<_, BoxError>(MaterializeResult::new()) })
    };
    let defs = || Definitions::new().asset(ranged("x")).asset(ranged("y"));
    // x has days 1-3, y has days 1-6.
    let keys = |select: &str, from: u32, to: u32| BackfillRequest {
        select: vec![select.to_owned()],
        ..request(PartitionSelector::Keys {
            keys: days(from, to),
        })
    };
    assert_eq!(
        backfill(defs(), &t.storage, keys("x", 1, 3)).await.1,
        BackfillStatus::Completed
    );
    assert_eq!(
        backfill(defs(), &t.storage, keys("y", 1, 6)).await.1,
        BackfillStatus::Completed
    );

    // Missing, in runs of 3: x needs 4-6 (one run of x alone), y needs nothing up to day 6.
    let graph = AssetGraph::build(defs()).expect("valid");
    let units = plan_backfill(
        &graph,
        &t.storage,
        &request(PartitionSelector::Missing),
        now(),
    )
    .await
    .expect("plan");
    let (x, y) = (AssetKey::from("x"), AssetKey::from("y"));
    let first_x = units
        .iter()
        .find(|u| u.assets.contains(&x))
        .expect("an x unit");
    assert_eq!(first_x.partitions, days(4, 6));
    assert!(!first_x.assets.contains(&y), "y has those days already");
    assert!(
        units
            .iter()
            .all(|u| u.partitions.iter().all(|p| p.as_str() > "2024-09-06")
                || u.assets == [x.clone()]),
        "no unit recomputes y's days 1-6"
    );
    assert!(
        units
            .iter()
            .all(|u| u.partitions.iter().all(|p| p.as_str() > "2024-09-03"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_partitions_are_stored_and_backfilled() {
    let t = fresh_storage(Backend::Sqlite).await;
    let defs = || {
        Definitions::new().asset(
            asset("per_customer")
                .partitions(PartitionsDefinition::dynamic("customers"))
                .compute(|ctx| async move {
                    let key = ctx.partition_key().ok_or("one partition")?.to_owned();
                    Ok::<_, BoxError>(MaterializeResult::new().metadata("customer", key))
                }),
        )
    };
    // No keys yet: nothing to backfill, and an unknown key is refused.
    let graph = AssetGraph::build(defs()).expect("valid");
    let e = plan_backfill(
        &graph,
        &t.storage,
        &request(PartitionSelector::Keys {
            keys: vec!["acme".into()],
        }),
        now(),
    )
    .await
    .expect_err("no such key yet")
    .to_string();
    assert!(
        e.contains("no selected asset has a partition `acme`"),
        "{e}"
    );
    let e = t
        .storage
        .add_dynamic_partitions("customers", &["a|b".into()])
        .await
        .expect_err("bad key")
        .to_string();
    assert!(e.contains("contains `|` or `,`"), "{e}");

    t.storage
        .add_dynamic_partitions(
            "customers",
            &["acme".into(), "globex".into(), "acme".into()],
        )
        .await
        .expect("add");
    assert_eq!(
        t.storage.dynamic_partitions().await.expect("read")["customers"],
        ["acme", "globex"]
    );
    let (_, status) = backfill(defs(), &t.storage, request(PartitionSelector::All)).await;
    assert_eq!(status, BackfillStatus::Completed);
    let states = states(&t.storage, "per_customer").await;
    assert_eq!(states.keys().collect::<Vec<_>>(), ["acme", "globex"]);

    // A key removed is no longer a partition.
    assert!(
        t.storage
            .delete_dynamic_partition("customers", "globex")
            .await
            .expect("delete")
    );
    let e = plan_backfill(
        &graph,
        &t.storage,
        &request(PartitionSelector::Keys {
            keys: vec!["globex".into()],
        }),
        now(),
    )
    .await
    .expect_err("removed")
    .to_string();
    assert!(e.contains("`globex`"), "{e}");
}

#[tokio::test]
async fn leased_partitions_show_as_in_progress_and_exclude_other_owners() {
    use rainbow_engine::storage::partitions::Lease;
    let t = fresh_storage(Backend::Sqlite).await;
    let lease = |owner: &str, p: &str| Lease {
        owner: owner.into(),
        asset_key: "orders".into(),
        partition_key: p.into(),
    };
    let ttl = Duration::from_secs(60);
    assert!(
        t.storage
            .acquire_leases(&[lease("a", "2024-09-01"), lease("a", "2024-09-02")], ttl)
            .await
            .expect("lease")
    );
    // Another owner gets none of a group that overlaps; the same owner may take its own again.
    assert!(
        !t.storage
            .acquire_leases(&[lease("b", "2024-09-02"), lease("b", "2024-09-03")], ttl)
            .await
            .expect("lease")
    );
    assert!(
        t.storage
            .acquire_leases(&[lease("a", "2024-09-02")], ttl)
            .await
            .expect("lease")
    );
    let got = t
        .storage
        .acquire_lease_groups(
            &[
                vec![lease("b", "2024-09-03")],
                vec![lease("b", "2024-09-01")],
            ],
            ttl,
        )
        .await
        .expect("groups");
    assert_eq!(got, [true, false]);
    let s = states(&t.storage, "orders").await;
    assert_eq!(s.get("2024-09-01"), Some(&PartitionState::InProgress));
    assert_eq!(s.get("2024-09-03"), Some(&PartitionState::InProgress));
    // Released, or expired, leases free the partition.
    t.storage
        .release_leases(&[lease("a", "2024-09-01")])
        .await
        .expect("release");
    assert!(
        t.storage
            .acquire_leases(&[lease("b", "2024-09-01")], Duration::ZERO)
            .await
            .expect("lease")
    );
    assert!(
        t.storage
            .acquire_leases(&[lease("c", "2024-09-01")], ttl)
            .await
            .expect("expired lease is taken over")
    );
}
