//! The daemon: ticks schedules, sensors and automation conditions, launches queued runs
//! within the run queue's limits, and runs requested backfills.
//!
//! Every request is a `QUEUED` run with a **run key** (`schedule:NAME:TICK`, `sensor:…`,
//! `eager:…`, `on_cron:…`) that storage keeps unique, so a restarted daemon — or two daemons —
//! never launch the same tick twice. Every evaluation is recorded as a tick (requested /
//! skipped / failed, with the reason). Time comes from a [`Clock`], so tests move it by hand.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::asset::AutomationCondition;
use crate::backfill::{BackfillRunOptions, run_backfill};
use crate::definitions::{CatchUpPolicy, ScheduleDefinition, SensorKind, parse_cron};
use crate::error::{Error, Result};
use crate::event::{Event, EventData, Micros, RunStatus, now_micros};
use crate::executor::{Executor, RunOptions, error_chain};
use crate::graph::NodeId;
use crate::partitions::PartitionContext;
use crate::selection::NodeSet;
use crate::storage::backfills::BackfillStatus;
use crate::storage::schedules::TickRecord;
use crate::storage::{NewRun, RunFilter, RunRecord, RunUpdate};

pub use crate::clock::{Clock, ManualClock, SystemClock};

/// A limit on concurrent runs carrying a tag (`value: None` counts any value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagLimit {
    /// Tag key.
    pub key: String,
    /// Tag value, or any.
    pub value: Option<String>,
    /// Most such runs in flight.
    pub limit: usize,
}

/// Daemon settings.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Most runs in flight (started, not finished) across the whole instance.
    pub max_concurrent_runs: usize,
    /// Per-tag limits.
    pub tag_limits: Vec<TagLimit>,
    /// How backfills run.
    pub backfill: BackfillRunOptions,
    /// Most missed schedule ticks considered after downtime (the latest ones).
    pub max_catch_up_ticks: usize,
    /// Heartbeat age after which a backfill's process on another host is presumed dead.
    pub heartbeat_timeout: Duration,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        DaemonOptions {
            max_concurrent_runs: 10,
            tag_limits: Vec::new(),
            backfill: BackfillRunOptions::default(),
            max_catch_up_ticks: 1000,
            heartbeat_timeout: Duration::from_secs(120),
        }
    }
}

/// What one tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Runs queued by schedules, sensors and automation.
    pub requested: Vec<String>,
    /// Queued runs started.
    pub launched: Vec<String>,
    /// Backfills started.
    pub backfills: Vec<String>,
}

/// The daemon. Cheap to share; `tick` may be called from a loop ([`Daemon::run`]) or by tests.
pub struct Daemon {
    executor: Executor,
    clock: Arc<dyn Clock>,
    options: DaemonOptions,
    tasks: tokio::sync::Mutex<JoinSet<()>>,
    active_backfills: Arc<Mutex<HashSet<String>>>,
    cancel: CancellationToken,
}

fn micros(t: DateTime<Utc>) -> Micros {
    t.timestamp_micros()
}

fn from_micros(m: Micros) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(m).unwrap_or_default()
}

impl Daemon {
    /// A daemon over `executor`'s graph and storage.
    pub fn new(executor: Executor, clock: Arc<dyn Clock>, options: DaemonOptions) -> Self {
        Daemon {
            executor,
            clock,
            options,
            tasks: tokio::sync::Mutex::new(JoinSet::new()),
            active_backfills: Arc::default(),
            cancel: CancellationToken::new(),
        }
    }

    /// Ticks every `interval` until `cancel`; then cancels what it launched and waits for it.
    pub async fn run(&self, interval: Duration, cancel: CancellationToken) -> Result<()> {
        loop {
            match self.tick().await {
                Ok(r) if r != TickReport::default() => tracing::info!(
                    requested = r.requested.len(),
                    launched = r.launched.len(),
                    backfills = r.backfills.len(),
                    "daemon tick"
                ),
                Ok(_) => {}
                Err(e) => tracing::error!("daemon tick failed: {}", error_chain(&e)),
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = cancel.cancelled() => break,
            }
        }
        self.cancel.cancel();
        self.wait_idle().await;
        Ok(())
    }

    /// Waits until every run and backfill this daemon launched has finished.
    pub async fn wait_idle(&self) {
        let mut tasks = self.tasks.lock().await;
        while tasks.join_next().await.is_some() {}
    }

    /// One pass: fail orphaned runs, evaluate schedules, sensors and automation, launch queued
    /// runs within limits, start requested backfills.
    pub async fn tick(&self) -> Result<TickReport> {
        {
            // Forget finished runs and backfills (their results are in storage).
            let mut tasks = self.tasks.lock().await;
            while tasks.try_join_next().is_some() {}
        }
        let storage = self.executor.storage();
        record_heartbeat(storage).await?;
        crate::monitor::fail_orphaned_runs(storage, Default::default()).await?;
        let now = self.clock.now();
        let mut report = TickReport::default();
        let graph = self.executor.graph().clone();
        for schedule in graph.schedules() {
            if let Err(e) = self.evaluate_schedule(schedule, now, &mut report).await {
                self.record(
                    format!("schedule:{}", schedule.name),
                    "schedule",
                    micros(now),
                    "failed",
                    Some(error_chain(&e)),
                    None,
                    None,
                )
                .await?;
            }
        }
        self.evaluate_sensors(now, &mut report).await?;
        self.evaluate_automation(now, &mut report).await?;
        self.launch_queued(&mut report).await?;
        self.start_backfills(&mut report).await?;
        Ok(report)
    }

    /// Records a tick that must exist once for its time (no bumping).
    async fn record_once(
        &self,
        instigator: String,
        kind: &str,
        tick_ts: Micros,
        status: &str,
        reason: Option<String>,
    ) -> Result<bool> {
        self.executor
            .storage()
            .record_tick(&TickRecord {
                instigator,
                kind: kind.to_owned(),
                tick_ts,
                status: status.to_owned(),
                reason,
                run_key: None,
                run_id: None,
            })
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        instigator: String,
        kind: &str,
        tick_ts: Micros,
        status: &str,
        reason: Option<String>,
        run_key: Option<String>,
        run_id: Option<String>,
    ) -> Result<bool> {
        let mut tick = TickRecord {
            instigator,
            kind: kind.to_owned(),
            tick_ts,
            status: status.to_owned(),
            reason,
            run_key,
            run_id,
        };
        // A schedule tick is unique per tick time (that is its idempotence). Sensors and
        // automation are evaluated at "now": two evaluations in one microsecond both count.
        for _ in 0..1000 {
            if self.executor.storage().record_tick(&tick).await? {
                return Ok(true);
            }
            if kind == "schedule" {
                return Ok(false);
            }
            tick.tick_ts += 1;
        }
        Ok(false)
    }

    /// Queues a run of `job` (or of `selection` when no job) with an idempotence key.
    async fn request_run(
        &self,
        job: Option<&str>,
        selection: &str,
        partition: Option<String>,
        run_key: String,
        mut tags: BTreeMap<String, String>,
    ) -> Result<Option<RunRecord>> {
        if let Some(job) = job.and_then(|j| self.executor.graph().job(j)) {
            for (k, v) in &job.tags {
                tags.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        self.executor
            .storage()
            .create_run_once(NewRun {
                job_name: job.map(str::to_owned),
                selection: selection.to_owned(),
                partition_key: partition,
                tags,
                status: Some(RunStatus::Queued),
                backfill_id: None,
                run_key: Some(run_key),
            })
            .await
    }

    /// The partition a schedule tick at `tick` runs: the last complete window of the job's
    /// time-partitioned assets as of the tick (the nightly 00:00 tick runs yesterday).
    fn schedule_partition(
        &self,
        selection: &NodeSet,
        tick: DateTime<Utc>,
    ) -> Result<Option<String>> {
        let graph = self.executor.graph();
        let mut defs = selection
            .iter()
            .filter_map(|n| graph.partitions(n))
            .collect::<Vec<_>>();
        defs.dedup();
        match defs.as_slice() {
            [] => Ok(None),
            [def] => {
                let keys = def.keys(&PartitionContext::at(tick))?;
                Ok(keys.last().cloned())
            }
            _ => Err(Error::Definition(
                "the job's assets have different partitions definitions; a schedule cannot pick one partition".into(),
            )),
        }
    }

    async fn evaluate_schedule(
        &self,
        schedule: &ScheduleDefinition,
        now: DateTime<Utc>,
        report: &mut TickReport,
    ) -> Result<()> {
        let storage = self.executor.storage();
        let name = format!("schedule:{}", schedule.name);
        let cron = schedule.cron()?;
        let tz = schedule.tz()?;
        let Some(cursor) = storage.cursor(&name).await? else {
            // First sight: ticks count from now on, not from the beginning of time.
            storage.set_cursor(&name, &micros(now).to_string()).await?;
            return Ok(());
        };
        let after = from_micros(
            cursor
                .parse::<Micros>()
                .map_err(|_| Error::CorruptStorage {
                    location: format!("instigator_state {name}"),
                    message: format!("cursor `{cursor}` is not a timestamp"),
                })?,
        );
        // The last `max_catch_up_ticks` ticks due (after a long outage the oldest are dropped).
        let mut ticks: std::collections::VecDeque<DateTime<Utc>> =
            std::collections::VecDeque::new();
        for t in cron.after(&after.with_timezone(&tz)) {
            let t = t.with_timezone(&Utc);
            if t > now {
                break;
            }
            if ticks.len() == self.options.max_catch_up_ticks.max(1) {
                ticks.pop_front();
            }
            ticks.push_back(t);
        }
        let ticks: Vec<DateTime<Utc>> = ticks.into();
        let Some(&last) = ticks.last() else {
            return Ok(());
        };
        let graph = self.executor.graph();
        let job = graph.job(&schedule.job).ok_or_else(|| {
            Error::Definition(format!(
                "schedule `{}` launches unknown job `{}`",
                schedule.name, schedule.job
            ))
        })?;
        let selection = graph.select_job(job)?;
        for tick in &ticks {
            let ts = micros(*tick);
            if schedule.catch_up == CatchUpPolicy::LatestOnly && *tick != last {
                self.record(name.clone(), "schedule", ts, "skipped", Some("missed while the daemon was not running; the catch-up policy launches only the latest tick".into()), None, None)
                    .await?;
                continue;
            }
            let run_key = format!("{name}:{ts}");
            let outcome = match self.schedule_partition(&selection, *tick) {
                Err(e) => Err(e),
                Ok(partition) => {
                    let tags =
                        BTreeMap::from([("rainbow/schedule".to_owned(), schedule.name.clone())]);
                    self.request_run(
                        Some(&job.name),
                        &job.selection,
                        partition,
                        run_key.clone(),
                        tags,
                    )
                    .await
                }
            };
            match outcome {
                Ok(Some(run)) => {
                    self.record(
                        name.clone(),
                        "schedule",
                        ts,
                        "requested",
                        None,
                        Some(run_key),
                        Some(run.run_id.clone()),
                    )
                    .await?;
                    report.requested.push(run.run_id);
                }
                Ok(None) => {
                    self.record(
                        name.clone(),
                        "schedule",
                        ts,
                        "skipped",
                        Some(format!("a run with key `{run_key}` was already requested")),
                        Some(run_key),
                        None,
                    )
                    .await?;
                }
                Err(e) => {
                    self.record(
                        name.clone(),
                        "schedule",
                        ts,
                        "failed",
                        Some(error_chain(&e)),
                        Some(run_key),
                        None,
                    )
                    .await?;
                }
            }
        }
        storage.set_cursor(&name, &micros(last).to_string()).await?;
        Ok(())
    }

    async fn evaluate_sensors(&self, now: DateTime<Utc>, report: &mut TickReport) -> Result<()> {
        let graph = self.executor.graph().clone();
        if graph.sensors().is_empty() {
            return Ok(());
        }
        let storage = self.executor.storage();
        let latest = storage.latest_materializations().await?;
        for sensor in graph.sensors() {
            let name = format!("sensor:{}", sensor.name);
            let SensorKind::Asset(key) = &sensor.kind;
            let seen = latest.get(key).map(|m| m.timestamp).unwrap_or(0);
            let Some(cursor) = storage.cursor(&name).await? else {
                // First sight: only materializations from now on trigger.
                storage.set_cursor(&name, &seen.to_string()).await?;
                continue;
            };
            let cursor: Micros = cursor.parse().unwrap_or(0);
            if seen <= cursor {
                self.record(
                    name,
                    "sensor",
                    micros(now),
                    "skipped",
                    Some(format!("no new materialization of `{key}`")),
                    None,
                    None,
                )
                .await?;
                continue;
            }
            let job = graph
                .job(&sensor.job)
                .ok_or_else(|| Error::Definition(format!("unknown job `{}`", sensor.job)))?;
            let run_key = format!("{name}:{seen}");
            let tags = BTreeMap::from([("rainbow/sensor".to_owned(), sensor.name.clone())]);
            // A partitioned job runs the partition that was just materialized.
            let job_partitioned = graph
                .select_job(job)?
                .iter()
                .any(|n| graph.partitions(n).is_some());
            let partition = if job_partitioned {
                latest.get(key).and_then(|m| m.partition_key.clone())
            } else {
                None
            };
            match self
                .request_run(
                    Some(&job.name),
                    &job.selection,
                    partition,
                    run_key.clone(),
                    tags,
                )
                .await?
            {
                Some(run) => {
                    self.record(
                        name.clone(),
                        "sensor",
                        micros(now),
                        "requested",
                        Some(format!("`{key}` materialized")),
                        Some(run_key),
                        Some(run.run_id.clone()),
                    )
                    .await?;
                    report.requested.push(run.run_id);
                }
                None => {
                    self.record(
                        name.clone(),
                        "sensor",
                        micros(now),
                        "skipped",
                        Some(format!("a run with key `{run_key}` was already requested")),
                        Some(run_key),
                        None,
                    )
                    .await?;
                }
            }
            storage.set_cursor(&name, &seen.to_string()).await?;
        }
        Ok(())
    }

    async fn evaluate_automation(&self, now: DateTime<Utc>, report: &mut TickReport) -> Result<()> {
        let graph = self.executor.graph().clone();
        let automated: Vec<(NodeId, AutomationCondition)> = graph
            .nodes()
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.spec.automation_condition.clone().map(|c| (i, c)))
            .filter(|(i, _)| graph.partitions(*i).is_none())
            .collect();
        if automated.is_empty() {
            return Ok(());
        }
        let storage = self.executor.storage();
        let latest: HashMap<crate::AssetKey, Micros> = storage
            .latest_materializations()
            .await?
            .into_iter()
            .map(|(k, m)| (k, m.timestamp))
            .collect();
        let ts_of = |n: NodeId| latest.get(&graph.node(n).spec.key).copied();
        for (node, condition) in automated {
            let key = graph.node(node).spec.key.to_string();
            let name = format!("automation:{key}");
            let parents = graph.parents(node);
            let mine = ts_of(node);
            let request = match &condition {
                AutomationCondition::Eager => {
                    let newest = parents.iter().filter_map(|&p| ts_of(p)).max();
                    match (newest, mine) {
                        (Some(up), Some(me)) if up > me => Some((
                            format!("eager:{key}:{up}"),
                            "an upstream asset was updated".to_owned(),
                        )),
                        (Some(up), None) if parents.iter().all(|&p| ts_of(p).is_some()) => Some((
                            format!("eager:{key}:{up}"),
                            "never materialized and its upstream assets are".to_owned(),
                        )),
                        _ => None,
                    }
                }
                AutomationCondition::OnCron(expr) => {
                    let cron = parse_cron(expr).map_err(Error::Definition)?;
                    let cursor = storage.cursor(&name).await?;
                    let Some(cursor) = cursor else {
                        storage.set_cursor(&name, &micros(now).to_string()).await?;
                        continue;
                    };
                    let after = from_micros(cursor.parse().unwrap_or(0));
                    let tick = cron.after(&after).take_while(|t| *t <= now).last();
                    match tick {
                        None => None,
                        Some(t) => {
                            let since = micros(t);
                            if parents
                                .iter()
                                .all(|&p| ts_of(p).is_some_and(|up| up >= since))
                            {
                                Some((
                                    format!("on_cron:{key}:{since}"),
                                    format!(
                                        "cron tick {t} passed and every upstream asset was updated since"
                                    ),
                                ))
                            } else {
                                // Recorded once per cron tick (its time is the tick's).
                                self.record_once(name.clone(), "automation", since, "skipped", Some(format!("cron tick {t} passed; waiting for every upstream asset to be updated since")))
                                    .await?;
                                None
                            }
                        }
                    }
                }
            };
            let Some((run_key, reason)) = request else {
                continue;
            };
            let tags = BTreeMap::from([("rainbow/automation".to_owned(), key.clone())]);
            if let Some(run) = self
                .request_run(None, &key, None, run_key.clone(), tags)
                .await?
            {
                self.record(
                    name.clone(),
                    "automation",
                    micros(now),
                    "requested",
                    Some(reason),
                    Some(run_key.clone()),
                    Some(run.run_id.clone()),
                )
                .await?;
                report.requested.push(run.run_id);
            }
            // An on_cron tick is done once its run is requested (or was already).
            if let Some(since) = run_key.strip_prefix(&format!("on_cron:{key}:")) {
                storage.set_cursor(&name, since).await?;
            }
        }
        Ok(())
    }

    /// Starts queued runs, oldest first, within the global and per-tag limits.
    async fn launch_queued(&self, report: &mut TickReport) -> Result<()> {
        let storage = self.executor.storage();
        let mut queued = storage
            .list_runs(&RunFilter {
                status: Some(RunStatus::Queued),
                limit: Some(10_000),
                ..Default::default()
            })
            .await?;
        if queued.is_empty() {
            return Ok(());
        }
        queued.reverse();
        let started = storage
            .list_runs(&RunFilter {
                status: Some(RunStatus::Started),
                limit: Some(100_000),
                ..Default::default()
            })
            .await?;
        let mut in_flight = started.len();
        let mut per_limit: Vec<usize> = self
            .options
            .tag_limits
            .iter()
            .map(|l| started.iter().filter(|r| matches_limit(l, &r.tags)).count())
            .collect();
        for run in queued {
            if in_flight >= self.options.max_concurrent_runs {
                break;
            }
            let hits: Vec<usize> = self
                .options
                .tag_limits
                .iter()
                .enumerate()
                .filter(|(_, l)| matches_limit(l, &run.tags))
                .map(|(i, _)| i)
                .collect();
            if hits
                .iter()
                .any(|&i| per_limit[i] >= self.options.tag_limits[i].limit)
            {
                continue;
            }
            if !storage.claim_queued_run(&run.run_id).await? {
                continue;
            }
            in_flight += 1;
            for i in hits {
                per_limit[i] += 1;
            }
            report.launched.push(run.run_id.clone());
            let executor = self.executor.clone();
            let cancel = self.cancel.child_token();
            self.tasks.lock().await.spawn(async move {
                if let Err(e) = execute_queued(&executor, run.clone(), cancel).await {
                    tracing::error!(run_id = %run.run_id, "queued run failed to start: {}", error_chain(&e));
                }
            });
        }
        Ok(())
    }

    async fn start_backfills(&self, report: &mut TickReport) -> Result<()> {
        let storage = self.executor.storage();
        // Backfills whose process died (a killed daemon or CLI) are resumed first.
        for b in storage
            .list_backfills(Some(BackfillStatus::Running), 100)
            .await?
        {
            let mine = self
                .active_backfills
                .lock()
                .map(|a| a.contains(&b.backfill_id))
                .unwrap_or(true);
            if !mine
                && crate::backfill::resume_backfill(
                    storage,
                    &b.backfill_id,
                    self.options.heartbeat_timeout,
                )
                .await
                .is_ok()
            {
                tracing::warn!(backfill = %b.backfill_id, "resuming a backfill whose process is gone");
            }
        }
        let requested = storage
            .list_backfills(Some(BackfillStatus::Requested), 100)
            .await?;
        for b in requested {
            let id = b.backfill_id.clone();
            {
                let Ok(mut active) = self.active_backfills.lock() else {
                    continue;
                };
                if !active.insert(id.clone()) {
                    continue;
                }
            }
            report.backfills.push(id.clone());
            let executor = self.executor.clone();
            let options = BackfillRunOptions {
                requeue_on_interrupt: true,
                ..self.options.backfill.clone()
            };
            let cancel = self.cancel.child_token();
            let active = self.active_backfills.clone();
            self.tasks.lock().await.spawn(async move {
                if let Err(e) = run_backfill(&executor, &id, &options, cancel, None).await {
                    tracing::error!(backfill = %id, "backfill failed: {}", error_chain(&e));
                }
                if let Ok(mut a) = active.lock() {
                    a.remove(&id);
                }
            });
        }
        Ok(())
    }
}

/// Where the daemon's heartbeat is kept (the `instigator_state` cursor of this name).
const HEARTBEAT: &str = "daemon/heartbeat";

/// The last time a daemon ticked, and where it runs ([`daemon_heartbeat`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DaemonHeartbeat {
    /// When (µs since the epoch, the daemon's wall clock).
    pub at: Micros,
    /// Host.
    pub hostname: String,
    /// Process id.
    pub pid: u32,
}

async fn record_heartbeat(storage: &crate::storage::Storage) -> Result<()> {
    let beat = DaemonHeartbeat {
        at: now_micros(),
        hostname: crate::process::hostname(),
        pid: std::process::id(),
    };
    let text = serde_json::to_string(&beat)
        .map_err(|e| Error::Internal(format!("daemon heartbeat to JSON: {e}")))?;
    storage.set_cursor(HEARTBEAT, &text).await
}

/// The latest daemon heartbeat (written at every tick), if a daemon ever ran on this storage.
pub async fn daemon_heartbeat(
    storage: &crate::storage::Storage,
) -> Result<Option<DaemonHeartbeat>> {
    match storage.cursor(HEARTBEAT).await? {
        None => Ok(None),
        Some(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::CorruptStorage {
                location: format!("instigator_state {HEARTBEAT}"),
                message: e.to_string(),
            }),
    }
}

fn matches_limit(limit: &TagLimit, tags: &BTreeMap<String, String>) -> bool {
    match (tags.get(&limit.key), &limit.value) {
        (Some(v), Some(want)) => v == want,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// Executes a claimed queued run: its job's (or expression's) selection over its partition.
async fn execute_queued(
    executor: &Executor,
    run: RunRecord,
    cancel: CancellationToken,
) -> Result<()> {
    let graph = executor.graph();
    let selection = match run.job_name.as_deref().and_then(|j| graph.job(j)) {
        Some(job) => graph.select_job(job),
        None => graph.select(&[run.selection.as_str()], &[] as &[&str]),
    };
    let selection = match selection {
        Ok(s) => s,
        // The code changed since the run was queued: fail it with the reason.
        Err(e) => {
            let reason = format!("cannot resolve the run's selection: {}", error_chain(&e));
            return fail_run(executor, &run.run_id, reason).await;
        }
    };
    let options = RunOptions {
        partitions: run.partition_key.iter().cloned().collect(),
        job_name: run.job_name.clone(),
        selection: run.selection.clone(),
        tags: run.tags.clone(),
        ..RunOptions::default()
    };
    let run_id = run.run_id.clone();
    if let Err(e) = executor
        .execute_run(run, &selection, options, cancel, None)
        .await
    {
        let reason = format!("the run could not start: {}", error_chain(&e));
        return fail_run(executor, &run_id, reason).await;
    }
    Ok(())
}

/// Records a claimed run as failed before any step ran.
async fn fail_run(executor: &Executor, run_id: &str, reason: String) -> Result<()> {
    executor
        .writer()
        .commit(
            vec![Event::new(
                run_id,
                EventData::RunFailed {
                    reason: reason.clone(),
                },
            )],
            vec![RunUpdate {
                run_id: run_id.to_owned(),
                status: Some(RunStatus::Failure),
                ended_at: Some(now_micros()),
                heartbeat_at: None,
                reason: Some(reason),
            }],
        )
        .await
}
