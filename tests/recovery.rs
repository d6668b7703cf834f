//! A run whose process is killed with SIGKILL is marked failed on the next start, with a reason,
//! its in-flight steps closed, and its recorded materializations intact.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rainbow_engine::{EventData, RunStatus, Storage};

use crate::on_both_backends;
use crate::support::{Backend, fresh_storage};

on_both_backends!(killed_run_is_failed_on_next_start);

const RAINBOW: &str = env!("CARGO_BIN_EXE_rainbow");

async fn count(storage: &Storage, sql: &'static str) -> i64 {
    use sqlx::Row;
    sqlx::query(sql)
        .fetch_one(storage.pool())
        .await
        .and_then(|r| r.try_get::<i64, _>(0))
        .expect("count")
}

/// Starts `rainbow bench assets` on `url`: 200 assets taking 50 ms each, two at a time, a run
/// of about five seconds.
fn spawn_slow_run(url: &str) -> std::process::Child {
    spawn_run(url, "50")
}

/// `rainbow bench assets` with `sleep_ms` per asset, two at a time.
fn spawn_run(url: &str, sleep_ms: &str) -> std::process::Child {
    Command::new(RAINBOW)
        .env("RAINBOW_CODE_LOCATION", "quickstart")
        .args([
            "bench",
            "assets",
            "--n",
            "200",
            "--sleep-ms",
            sleep_ms,
            "--concurrency",
            "2",
            "--storage",
            url,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rainbow")
}

/// Waits until at least `n` materializations are stored; returns how many there are.
async fn wait_for_materializations(storage: &Storage, n: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = count(storage, MATERIALIZATIONS).await;
        if seen >= n {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "the run never materialized {n} assets"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Steps with a `step_started` event and no event that ends the step.
fn open_steps(events: &[rainbow_engine::Event]) -> std::collections::BTreeSet<String> {
    let mut open = std::collections::BTreeSet::new();
    for e in events {
        let Some(step) = &e.step_key else { continue };
        match &e.data {
            EventData::StepStarted { .. } => {
                open.insert(step.clone());
            }
            EventData::StepSucceeded { .. }
            | EventData::StepFailed { .. }
            | EventData::StepSkipped { .. }
            | EventData::StepCanceled => {
                open.remove(step);
            }
            _ => {}
        }
    }
    open
}

const MATERIALIZATIONS: &str = "SELECT COUNT(*) FROM events WHERE kind = 'materialization'";

async fn killed_run_is_failed_on_next_start(backend: Backend) {
    let t = fresh_storage(backend).await;
    // 300 ms steps, and the kill only once a step is seen in flight: it dies mid-step.
    let mut child = spawn_run(&t.url, "300");
    let seen = wait_for_materializations(&t.storage, 2).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let runs = t
            .storage
            .list_runs(&Default::default())
            .await
            .expect("runs");
        let events = t
            .storage
            .events_for_run(&runs[0].run_id, 0, 100_000)
            .await
            .expect("events");
        if !open_steps(&events).is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "no step was ever seen running");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let after_kill = count(&t.storage, MATERIALIZATIONS).await;
    // Killed mid-run: some assets were materialized, not all 200 (300 ms steps, two at a time).
    assert!(
        (seen..200).contains(&after_kill),
        "{after_kill} materializations after the kill ({seen} seen before it)"
    );

    let runs = t
        .storage
        .list_runs(&Default::default())
        .await
        .expect("runs");
    assert_eq!(runs.len(), 1);
    assert_eq!(
        runs[0].status,
        RunStatus::Started,
        "nothing has noticed the death yet"
    );
    let run_id = runs[0].run_id.clone();

    // The next `rainbow` process notices, whatever command it runs.
    let out = Command::new(RAINBOW)
        .env("RAINBOW_CODE_LOCATION", "quickstart")
        .args(["--database-url", &t.url, "runs", "--json"])
        .output()
        .expect("run rainbow runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(listed[0]["run_id"], run_id.as_str());
    assert_eq!(listed[0]["status"], "FAILURE");
    let reason = listed[0]["reason"].as_str().expect("reason");
    assert!(
        reason.contains("the process executing this run (pid") && reason.contains("is gone"),
        "{reason}"
    );

    // Materializations recorded before the kill are intact; every started step is closed.
    assert_eq!(count(&t.storage, MATERIALIZATIONS).await, after_kill);
    let events = t
        .storage
        .events_for_run(&run_id, 0, 100_000)
        .await
        .expect("events");
    assert!(
        open_steps(&events).is_empty(),
        "steps left open: {:?}",
        open_steps(&events)
    );
    let interrupted = events
        .iter()
        .filter(|e| matches!(&e.data, EventData::StepFailed { error, .. } if error.starts_with("interrupted")))
        .count();
    assert!(
        interrupted >= 1,
        "the steps in flight are failed as interrupted"
    );
    assert!(matches!(
        events.last().map(|e| &e.data),
        Some(EventData::RunFailed { .. })
    ));

    // Marking is done once: a second monitor pass changes nothing.
    let again = rainbow_engine::monitor::fail_orphaned_runs(&t.storage, Default::default())
        .await
        .expect("monitor");
    assert!(again.is_empty());
}

#[tokio::test]
async fn a_run_without_heartbeat_is_failed_after_the_timeout() {
    let t = fresh_storage(Backend::Sqlite).await;
    let run = t
        .storage
        .create_run(rainbow_engine::storage::NewRun {
            selection: "*".into(),
            ..Default::default()
        })
        .await
        .expect("create");
    // Pretend another machine runs it and stopped beating an hour ago.
    sqlx::query("UPDATE runs SET hostname = 'elsewhere', worker_id = 'another-process', heartbeat_at = heartbeat_at - 3600000000 WHERE run_id = $1")
        .bind(run.run_id.clone())
        .execute(t.storage.pool())
        .await
        .expect("update");
    let policy = rainbow_engine::monitor::MonitorPolicy {
        heartbeat_timeout: Duration::from_secs(60),
    };
    let failed = rainbow_engine::monitor::fail_orphaned_runs(&t.storage, policy)
        .await
        .expect("monitor");
    assert_eq!(failed, std::slice::from_ref(&run.run_id));
    let stored = t
        .storage
        .get_run(&run.run_id)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(stored.status, RunStatus::Failure);
    assert!(
        stored
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("no heartbeat since") && r.contains("on elsewhere"))
    );
}

#[tokio::test]
async fn ctrl_c_cancels_the_run_and_leaves_nothing_half_recorded() {
    let t = fresh_storage(Backend::Sqlite).await;
    let child = spawn_slow_run(&t.url);
    wait_for_materializations(&t.storage, 3).await;
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("send SIGINT");
    assert!(status.success());
    let out = child.wait_with_output().expect("wait");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let runs = t
        .storage
        .list_runs(&Default::default())
        .await
        .expect("runs");
    assert_eq!(runs[0].status, RunStatus::Canceled);
    assert_eq!(runs[0].reason.as_deref(), Some("canceled by the user"));
    let events = t
        .storage
        .events_for_run(&runs[0].run_id, 0, 100_000)
        .await
        .expect("events");
    // Every started step ended (succeeded or canceled) and every succeeded step has its
    // materialization: nothing half-recorded.
    assert!(
        open_steps(&events).is_empty(),
        "steps left open: {:?}",
        open_steps(&events)
    );
    let succeeded = events
        .iter()
        .filter(|e| matches!(e.data, EventData::StepSucceeded { .. }))
        .count() as i64;
    assert_eq!(count(&t.storage, MATERIALIZATIONS).await, succeeded);
    assert!(
        events
            .iter()
            .any(|e| matches!(e.data, EventData::StepCanceled))
    );
    assert!(matches!(
        events.last().map(|e| &e.data),
        Some(EventData::RunCanceled { .. })
    ));
}

#[tokio::test]
async fn a_live_process_on_this_host_is_never_failed_however_late_its_heartbeat() {
    let t = fresh_storage(Backend::Sqlite).await;
    let run = t
        .storage
        .create_run(rainbow_engine::storage::NewRun {
            selection: "*".into(),
            ..Default::default()
        })
        .await
        .expect("create");
    // Another live process on this host "executes" it, with a heartbeat an hour old.
    let mut sleeper = Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    sqlx::query(
        "UPDATE runs SET pid = $2, worker_id = 'another-process', heartbeat_at = heartbeat_at - 3600000000 WHERE run_id = $1",
    )
    .bind(run.run_id.clone())
    .bind(i64::from(sleeper.id()))
    .execute(t.storage.pool())
    .await
    .expect("update");
    let policy = rainbow_engine::monitor::MonitorPolicy {
        heartbeat_timeout: Duration::from_secs(60),
    };
    let failed = rainbow_engine::monitor::fail_orphaned_runs(&t.storage, policy)
        .await
        .expect("monitor");
    assert!(failed.is_empty(), "the process is alive");

    sleeper.kill().expect("kill");
    sleeper.wait().expect("reap");
    let failed = rainbow_engine::monitor::fail_orphaned_runs(&t.storage, policy)
        .await
        .expect("monitor");
    assert_eq!(failed, std::slice::from_ref(&run.run_id));
}
