//! The executor: dependency order, parallelism within a limit, skip propagation, retries with
//! backoff, checks (blocking and not), multi-assets, resources, panics and cancellation.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use rainbow_engine::prelude::*;
use rainbow_engine::{EventData, Executor, NodeSet, RunOptions, RunStatus, StepStatus};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::on_both_backends;
use crate::support::{
    Backend, events, failing, fresh_storage, materialize, materialize_with, materialized, noop,
    step_event_kinds,
};

on_both_backends!(
    failed_step_skips_downstream_only,
    blocking_check_fails_step_and_skips_downstream,
    retries_with_exponential_backoff,
    independent_branches_run_in_parallel_within_the_limit,
    steps_run_in_dependency_order,
    multi_asset_materializes_each_key_with_its_metadata,
    resources_reach_compute_and_missing_ones_fail_clearly,
    a_panicking_step_fails_and_the_run_finishes,
    cancellation_stops_in_flight_steps_and_records_a_canceled_run,
    selected_checks_run_alone_in_checks_only_steps,
    a_check_waits_for_its_additional_deps
);

/// a ─► b (fails) ─► c ─► d ;  a ─► e ;  f (independent)
async fn failed_step_skips_downstream_only(backend: Backend) {
    let t = fresh_storage(backend).await;
    let defs = Definitions::new().assets([
        noop(asset("a")),
        failing(asset("b").dep("a"), "warehouse unreachable"),
        noop(asset("c").dep("b")),
        noop(asset("d").deps(["c", "a"])),
        noop(asset("e").dep("a")),
        noop(asset("f")),
    ]);
    let result = materialize(defs, &t.storage, "*").await;
    assert_eq!(result.status, RunStatus::Failure);
    assert_eq!(
        result.steps["b"],
        StepStatus::Failed("warehouse unreachable".into())
    );
    for skipped in ["c", "d"] {
        assert_eq!(
            result.steps[skipped],
            StepStatus::Skipped("upstream step `b` failed".into())
        );
    }
    for ok in ["a", "e", "f"] {
        assert_eq!(result.steps[ok], StepStatus::Succeeded, "{ok}");
    }

    let evs = events(&t.storage, &result.run_id).await;
    assert!(materialized(&evs, "a") && materialized(&evs, "e") && materialized(&evs, "f"));
    assert!(!materialized(&evs, "b") && !materialized(&evs, "c") && !materialized(&evs, "d"));
    assert_eq!(
        step_event_kinds(&t.storage, &result.run_id, "c").await,
        ["step_skipped"]
    );
    assert_eq!(
        step_event_kinds(&t.storage, &result.run_id, "b").await,
        // The asset's failure is recorded too: its latest outcome (lineage, partition status).
        ["step_started", "step_failed", "asset_failed"]
    );

    let run = t
        .storage
        .get_run(&result.run_id)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(run.status, RunStatus::Failure);
    assert_eq!(run.reason.as_deref(), Some("steps failed: `b`"));
    assert!(run.ended_at.is_some());
    assert!(matches!(
        evs.last().map(|e| &e.data),
        Some(EventData::RunFailed { .. })
    ));
}

async fn blocking_check_fails_step_and_skips_downstream(backend: Backend) {
    let t = fresh_storage(backend).await;
    let defs = Definitions::new()
        .assets([
            noop(asset("orders")).check(
                AssetCheckSpec::new("no_nulls", "orders")
                    .blocking(true)
                    .compute(|_| async {
                        Ok::<_, BoxError>(
                            AssetCheckResult::failed()
                                .metadata("null_rows", 3)
                                .description("3 null ids"),
                        )
                    }),
            ),
            noop(asset("sales").dep("orders")),
            noop(asset("customers")),
            noop(asset("ranking").dep("customers")),
        ])
        // A failing warn-severity blocking check and a failing non-blocking error check do not stop anything.
        .check(
            AssetCheckSpec::new("fresh_enough", "customers")
                .blocking(true)
                .severity(AssetCheckSeverity::Warn)
                .compute(|_| async { Ok::<_, BoxError>(AssetCheckResult::failed()) }),
        )
        .check(
            AssetCheckSpec::new("row_count_sane", "customers").compute(|_| async {
                Err::<AssetCheckResult, BoxError>("count query failed".into())
            }),
        );
    let result = materialize(defs, &t.storage, "*").await;
    assert_eq!(
        result.steps["orders"],
        StepStatus::Failed("blocking check `no_nulls` on `orders` failed".into())
    );
    assert_eq!(
        result.steps["sales"],
        StepStatus::Skipped("upstream step `orders` failed".into())
    );
    assert_eq!(result.steps["customers"], StepStatus::Succeeded);
    assert_eq!(result.steps["ranking"], StepStatus::Succeeded);

    // The data was written, so the materialization is recorded next to the failed check.
    let evs = events(&t.storage, &result.run_id).await;
    assert!(materialized(&evs, "orders"));
    let checks = t
        .storage
        .check_results(&AssetKey::from("orders"), 10)
        .await
        .expect("read");
    assert_eq!(checks.len(), 1);
    let c = &checks[0].evaluation;
    assert!(!c.passed && c.blocking && c.severity == AssetCheckSeverity::Error);
    assert_eq!(c.description.as_deref(), Some("3 null ids"));
    assert_eq!(c.metadata["null_rows"], MetadataValue::Int(3));

    let mut customer_checks: Vec<_> = t
        .storage
        .check_results(&AssetKey::from("customers"), 10)
        .await
        .expect("read")
        .into_iter()
        .map(|r| {
            (
                r.evaluation.check_name,
                r.evaluation.passed,
                r.evaluation.severity,
                r.evaluation.description,
            )
        })
        .collect();
    customer_checks.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        customer_checks,
        [
            (
                "fresh_enough".to_owned(),
                false,
                AssetCheckSeverity::Warn,
                None
            ),
            (
                "row_count_sane".to_owned(),
                false,
                AssetCheckSeverity::Error,
                Some("the check raised an error: count query failed".to_owned())
            ),
        ]
    );
}

async fn retries_with_exponential_backoff(backend: Backend) {
    let t = fresh_storage(backend).await;
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let flaky = asset("flaky")
        .compute(move |ctx| {
            let counter = counter.clone();
            async move {
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                assert_eq!(ctx.attempt(), n);
                if n < 3 {
                    return Err::<MaterializeResult, BoxError>(format!("timeout #{n}").into());
                }
                Ok(MaterializeResult::new())
            }
        })
        .retry_policy(RetryPolicy::exponential(3, Duration::from_millis(10)));
    let hopeless = failing(asset("hopeless"), "bad credentials")
        .retry_policy(RetryPolicy::exponential(1, Duration::from_millis(1)));
    let defs = Definitions::new().assets([flaky, hopeless, noop(asset("after").dep("flaky"))]);
    let started = std::time::Instant::now();
    let result = materialize(defs, &t.storage, "*").await;
    // The backoff really waited: 10 ms, then 20 ms.
    assert!(started.elapsed() >= Duration::from_millis(30));

    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(result.steps["flaky"], StepStatus::Succeeded);
    assert_eq!(result.steps["after"], StepStatus::Succeeded);
    assert_eq!(
        result.steps["hopeless"],
        StepStatus::Failed("bad credentials".into())
    );

    let evs = events(&t.storage, &result.run_id).await;
    let retries: Vec<(u32, f64, String)> = evs
        .iter()
        .filter(|e| e.step_key.as_deref() == Some("flaky"))
        .filter_map(|e| match &e.data {
            EventData::StepUpForRetry {
                attempt,
                delay_secs,
                error,
            } => Some((*attempt, *delay_secs, error.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        retries,
        [
            (1, 0.01, "timeout #1".to_owned()),
            (2, 0.02, "timeout #2".to_owned())
        ]
    );
    assert_eq!(
        step_event_kinds(&t.storage, &result.run_id, "hopeless").await,
        [
            "step_started",
            "step_up_for_retry",
            "step_started",
            "step_failed",
            "asset_failed"
        ]
    );
}

async fn independent_branches_run_in_parallel_within_the_limit(backend: Backend) {
    let t = fresh_storage(backend).await;
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let assets = (0..8).map(|i| {
        let (running, peak) = (running.clone(), peak.clone());
        asset(format!("branch{i}")).compute(move |_| {
            let (running, peak) = (running.clone(), peak.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, BoxError>(MaterializeResult::new())
            }
        })
    });
    let defs = Definitions::new().assets(assets);
    let options = RunOptions {
        concurrency: 3,
        ..RunOptions::default()
    };
    let result = materialize_with(defs, &t.storage, "*", options, CancellationToken::new()).await;
    assert!(result.success());
    assert_eq!(
        peak.load(Ordering::SeqCst),
        3,
        "eight independent 50 ms steps under a limit of 3"
    );
}

async fn steps_run_in_dependency_order(backend: Backend) {
    let t = fresh_storage(backend).await;
    let defs = Definitions::new().assets([
        noop(asset("c").deps(["a", "b"])),
        noop(asset("b").dep("a")),
        noop(asset("a")),
    ]);
    let result = materialize(defs, &t.storage, "*").await;
    let order: Vec<String> = events(&t.storage, &result.run_id)
        .await
        .into_iter()
        .filter(|e| matches!(e.data, EventData::Materialization(_)))
        .filter_map(|e| e.asset_key.map(|k| k.to_string()))
        .collect();
    assert_eq!(order, ["a", "b", "c"]);
}

async fn multi_asset_materializes_each_key_with_its_metadata(backend: Backend) {
    let t = fresh_storage(backend).await;
    let split = AssetDefinition::multi(
        "split_orders",
        vec![
            asset("orders/paid").group("orders"),
            asset("orders/refunded").group("orders"),
        ],
        |_| async {
            Ok::<_, BoxError>(vec![
                MaterializeResult::for_asset("orders/paid").row_count(10),
                MaterializeResult::for_asset("orders/refunded").row_count(2),
            ])
        },
    );
    let defs = Definitions::new().asset(split).asset(noop(
        asset("report").deps(["orders/paid", "orders/refunded"]),
    ));
    let result = materialize(defs, &t.storage, "*").await;
    assert!(result.success());
    assert_eq!(
        result.steps.len(),
        2,
        "one step for the multi-asset, one for the report"
    );
    let paid = t
        .storage
        .latest_materialization(&AssetKey::from("orders/paid"), None)
        .await
        .expect("read")
        .expect("materialized");
    assert_eq!(
        paid.materialization.metadata["row_count"],
        MetadataValue::RowCount(10)
    );
    assert!(matches!(
        paid.materialization.metadata["rainbow/duration"],
        MetadataValue::Duration(_)
    ));

    // A result for a key the multi-asset does not declare fails the step.
    let bad = AssetDefinition::multi("bad", vec![asset("x")], |_| async {
        Ok::<_, BoxError>(vec![MaterializeResult::for_asset("y")])
    });
    let result = materialize(Definitions::new().asset(bad), &t.storage, "*").await;
    assert_eq!(
        result.steps["bad"],
        StepStatus::Failed("`bad` returned a result for `y`, which it does not declare".into())
    );
}

#[derive(Debug)]
struct Warehouse {
    dataset: String,
}

async fn resources_reach_compute_and_missing_ones_fail_clearly(backend: Backend) {
    let t = fresh_storage(backend).await;
    let uses = |key: &str| {
        asset(key).compute(|ctx| async move {
            let wh = ctx.resource::<Warehouse>()?;
            Ok::<_, BoxError>(MaterializeResult::new().metadata("dataset", wh.dataset.clone()))
        })
    };
    let defs = Definitions::new().asset(uses("a")).resource(Warehouse {
        dataset: "rainbow_dw".into(),
    });
    let result = materialize(defs, &t.storage, "*").await;
    assert!(result.success());
    let latest = t
        .storage
        .latest_materialization(&AssetKey::from("a"), None)
        .await
        .expect("read")
        .expect("some");
    assert_eq!(
        latest.materialization.metadata["dataset"],
        MetadataValue::Text("rainbow_dw".into())
    );

    let result = materialize(Definitions::new().asset(uses("b")), &t.storage, "*").await;
    match &result.steps["b"] {
        StepStatus::Failed(e) => assert!(
            e.contains("resource `") && e.contains("Warehouse` is not configured"),
            "{e}"
        ),
        other => panic!("expected failure, got {other:?}"),
    }
}

async fn a_panicking_step_fails_and_the_run_finishes(backend: Backend) {
    let t = fresh_storage(backend).await;
    let defs = Definitions::new().assets([
        asset("boom").compute(|_| async {
            if std::hint::black_box(true) {
                panic!("index out of range");
            }
            Ok::<_, BoxError>(MaterializeResult::new())
        }),
        noop(asset("after").dep("boom")),
        noop(asset("other")),
    ]);
    let result = materialize(defs, &t.storage, "*").await;
    assert_eq!(
        result.steps["boom"],
        StepStatus::Failed("the step panicked: index out of range".into())
    );
    assert_eq!(
        result.steps["after"],
        StepStatus::Skipped("upstream step `boom` failed".into())
    );
    assert_eq!(result.steps["other"], StepStatus::Succeeded);
    assert_eq!(
        step_event_kinds(&t.storage, &result.run_id, "boom").await,
        ["step_started", "step_failed", "asset_failed"]
    );
}

async fn cancellation_stops_in_flight_steps_and_records_a_canceled_run(backend: Backend) {
    let t = fresh_storage(backend).await;
    let fast_done = Arc::new(Notify::new());
    let signal = fast_done.clone();
    let defs = Definitions::new().assets([
        asset("fast").compute(move |_| {
            let signal = signal.clone();
            async move {
                signal.notify_one();
                Ok::<_, BoxError>(MaterializeResult::new())
            }
        }),
        asset("slow").compute(|_| async {
            tokio::time::sleep(Duration::from_secs(600)).await;
            Ok::<_, BoxError>(MaterializeResult::new())
        }),
        noop(asset("after_slow").dep("slow")),
    ]);
    let cancel = CancellationToken::new();
    let canceler = cancel.clone();
    tokio::spawn(async move {
        fast_done.notified().await;
        // Let `fast` commit; `slow` is sleeping.
        tokio::time::sleep(Duration::from_millis(100)).await;
        canceler.cancel();
    });
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        materialize_with(defs, &t.storage, "*", RunOptions::default(), cancel),
    )
    .await
    .expect("cancel ends the run promptly");

    assert_eq!(result.status, RunStatus::Canceled);
    assert_eq!(result.steps["fast"], StepStatus::Succeeded);
    assert_eq!(result.steps["slow"], StepStatus::Canceled);
    assert_eq!(result.steps["after_slow"], StepStatus::NotStarted);

    let run = t
        .storage
        .get_run(&result.run_id)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(run.status, RunStatus::Canceled);
    let evs = events(&t.storage, &result.run_id).await;
    assert!(materialized(&evs, "fast") && !materialized(&evs, "slow"));
    assert_eq!(
        step_event_kinds(&t.storage, &result.run_id, "slow").await,
        ["step_started", "step_canceled"]
    );
    assert!(
        step_event_kinds(&t.storage, &result.run_id, "after_slow")
            .await
            .is_empty()
    );
    assert!(matches!(
        evs.last().map(|e| &e.data),
        Some(EventData::RunCanceled { .. })
    ));
}

/// `checks: Some(set)`: exactly the selected checks run; a check whose asset is not
/// materialized runs in a checks-only step that materializes nothing (as `dbt test`).
async fn selected_checks_run_alone_in_checks_only_steps(backend: Backend) {
    let t = fresh_storage(backend).await;
    let computed = Arc::new(AtomicUsize::new(0));
    let counting = |key: &'static str| {
        let computed = computed.clone();
        asset(key).compute(move |_| {
            let computed = computed.clone();
            async move {
                computed.fetch_add(1, Ordering::SeqCst);
                Ok::<_, BoxError>(MaterializeResult::new())
            }
        })
    };
    let check = |name: &'static str, on: &'static str, passed: bool| {
        AssetCheckSpec::new(name, on)
            .blocking(true)
            .compute(move |_| async move { Ok::<_, BoxError>(AssetCheckResult::new(passed)) })
    };
    let defs = || {
        Definitions::new()
            .assets([
                counting("a").check(check("a_ok", "a", true)),
                counting("b").check(check("b_bad", "b", false)),
            ])
            .asset(AssetSpec::new("src").source())
            .check(check("src_ok", "src", true))
    };
    let graph = Arc::new(AssetGraph::build(defs()).expect("graph"));
    let picked = graph
        .select_with_checks(&["a_ok src_ok"], &[] as &[&str])
        .expect("selection");
    let executor =
        Executor::new(graph.clone(), t.storage.clone(), &Default::default()).expect("executor");
    let result = executor
        .materialize(
            &NodeSet::empty(graph.len()),
            RunOptions {
                checks: Some(picked.checks),
                ..RunOptions::default()
            },
            CancellationToken::new(),
            None,
        )
        .await
        .expect("run");
    assert!(result.success(), "{result:?}");
    assert_eq!(
        computed.load(Ordering::SeqCst),
        0,
        "nothing is materialized"
    );
    assert_eq!(result.steps.len(), 2, "{result:?}");
    let evs = events(&t.storage, &result.run_id).await;
    let evaluated: Vec<(String, bool)> = evs
        .iter()
        .filter_map(|e| match &e.data {
            EventData::CheckEvaluation(c) => Some((c.check_name.clone(), c.passed)),
            _ => None,
        })
        .collect();
    assert_eq!(evaluated.len(), 2, "{evaluated:?}");
    assert!(
        evaluated.contains(&("a_ok".into(), true)) && evaluated.contains(&("src_ok".into(), true))
    );
    assert!(
        !evs.iter()
            .any(|e| matches!(e.data, EventData::Materialization(_)))
    );

    // A failing blocking check of a checks-only step fails the run; the asset is not rebuilt.
    let all = graph.select_with_checks(&["test_is_b"], &[] as &[&str]);
    assert!(all.is_err(), "no such check");
    let b_bad = graph
        .select_with_checks(&["b_bad"], &[] as &[&str])
        .expect("selection");
    let result = executor
        .materialize(
            &NodeSet::empty(graph.len()),
            RunOptions {
                checks: Some(b_bad.checks),
                ..RunOptions::default()
            },
            CancellationToken::new(),
            None,
        )
        .await
        .expect("run");
    assert_eq!(result.status, RunStatus::Failure);
    assert_eq!(
        result.steps["b"],
        StepStatus::Failed("blocking check `b_bad` on `b` failed".into())
    );
    assert_eq!(computed.load(Ordering::SeqCst), 0);

    // Materializing with a check selection runs only the selected checks of the asset.
    let result = executor
        .materialize(
            &graph.select(&["a b"], &[] as &[&str]).expect("selection"),
            RunOptions {
                checks: Some(NodeSet::empty(graph.checks().len())),
                ..RunOptions::default()
            },
            CancellationToken::new(),
            None,
        )
        .await
        .expect("run");
    assert!(
        result.success(),
        "b's failing check was not selected: {result:?}"
    );
    assert_eq!(computed.load(Ordering::SeqCst), 2);
}

/// A check reading a second, unrelated asset runs only once that asset's step succeeded, and
/// is skipped with its step when that asset fails; a check reading a downstream asset is refused.
async fn a_check_waits_for_its_additional_deps(backend: Backend) {
    let t = fresh_storage(backend).await;
    let slow_done = Arc::new(AtomicU32::new(0));
    let done = slow_done.clone();
    let slow = asset("slow").compute(move |_| {
        let done = done.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            done.store(1, Ordering::SeqCst);
            Ok::<_, BoxError>(MaterializeResult::new())
        }
    });
    let seen = slow_done.clone();
    let fast =
        noop(asset("fast")).check(
            AssetCheckSpec::new("matches_slow", "fast")
                .additional_dep("slow")
                .compute(move |_| {
                    let seen = seen.clone();
                    async move {
                        Ok::<_, BoxError>(AssetCheckResult::new(seen.load(Ordering::SeqCst) == 1))
                    }
                }),
        );
    let result = materialize(Definitions::new().assets([slow, fast]), &t.storage, "*").await;
    assert!(result.success(), "{result:?}");
    let evs = events(&t.storage, &result.run_id).await;
    let passed = evs
        .iter()
        .any(|e| matches!(&e.data, EventData::CheckEvaluation(c) if c.passed));
    assert!(passed, "the check ran before `slow` was built");

    let check = || {
        AssetCheckSpec::new("reads_broken", "fast")
            .additional_dep("broken")
            .compute(|_| async { Ok::<_, BoxError>(AssetCheckResult::passed()) })
    };
    let defs = Definitions::new().assets([
        failing(asset("broken"), "no data"),
        noop(asset("fast")).check(check()),
    ]);
    let result = materialize(defs, &t.storage, "*").await;
    assert_eq!(
        result.steps["fast"],
        StepStatus::Skipped("upstream step `broken` failed".into())
    );

    let defs = Definitions::new().assets([
        noop(asset("fast")).check(
            AssetCheckSpec::new("reads_downstream", "fast")
                .additional_dep("after")
                .compute(|_| async { Ok::<_, BoxError>(AssetCheckResult::passed()) }),
        ),
        noop(asset("after").dep("fast")),
    ]);
    let e = AssetGraph::build(defs).err().expect("a cycle").to_string();
    assert!(e.contains("additional deps"), "{e}");
    let defs = Definitions::new().asset(
        noop(asset("fast")).check(
            AssetCheckSpec::new("reads_nothing_known", "fast")
                .additional_dep("slwo")
                .compute(|_| async { Ok::<_, BoxError>(AssetCheckResult::passed()) }),
        ),
    );
    let e = AssetGraph::build(defs)
        .err()
        .expect("unknown dep")
        .to_string();
    assert!(e.contains("reads unknown asset `slwo`"), "{e}");
}
