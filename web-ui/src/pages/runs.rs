//! Runs: the list (filtered by status, job, asset, tag; keyset paging), the run page (record,
//! errors with their cause chain, Gantt chart of steps, the event log paged on the server and
//! filtered by step and level, tailing live while the run is in progress) and re-execution
//! (all, or from failure), which queues a run for the daemon.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use leptos::prelude::*;
use rainbow_engine::event::{Event, EventData, LogLevel};
use rainbow_engine::storage::{NewRun, RunFilter, RunRecord};
use rainbow_engine::{AssetKey, RunStatus};
use serde::{Deserialize, Serialize};

use crate::error::{Result, UiError};
use crate::shell::{Form, Format, Query, csrf_field, duration, encode, page, pill, respond, time};
use crate::state::UiState;
use crate::svg::{GanttBar, gantt};

/// Runs per list page.
const RUNS_PAGE: i64 = 50;
/// Events per log page.
const EVENTS_PAGE: i64 = 500;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RunsQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    job: String,
    #[serde(default)]
    asset: String,
    /// `KEY` or `KEY=VALUE`.
    #[serde(default)]
    tag: String,
    /// Keyset paging: runs created before this run id.
    #[serde(default)]
    before: String,
}

#[derive(Debug, Serialize)]
struct RunsData {
    runs: Vec<RunRecord>,
    next_before: Option<String>,
}

/// The run's partition, or its range (`FROM .. TO`) for a range run.
fn partition_label(r: &RunRecord) -> String {
    use rainbow_engine::tags::{PARTITION_RANGE_END, PARTITION_RANGE_START};
    match (
        &r.partition_key,
        r.tags.get(PARTITION_RANGE_START),
        r.tags.get(PARTITION_RANGE_END),
    ) {
        (Some(p), _, _) => p.clone(),
        (None, Some(from), Some(to)) => format!("{from} .. {to}"),
        _ => String::new(),
    }
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// `GET /runs`.
pub(crate) async fn list(
    State(ui): State<UiState>,
    format: Format,
    Query(q): Query<RunsQuery>,
) -> Result<Response> {
    let status = match non_empty(&q.status) {
        Some(s) => Some(s.parse::<RunStatus>().map_err(|_| {
            UiError::BadRequest(format!(
                "status `{s}`: expected QUEUED, STARTED, SUCCESS, FAILURE or CANCELED"
            ))
        })?),
        None => None,
    };
    // `KEY` or `KEY=VALUE`, as on the asset catalog.
    let tag = non_empty(&q.tag).map(|t| match t.split_once('=') {
        Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
        None => (t, None),
    });
    let asset = non_empty(&q.asset).map(|a| AssetKey::from(a.as_str()));
    let runs = ui
        .storage()
        .list_runs(&RunFilter {
            status,
            job_name: non_empty(&q.job),
            tag,
            asset,
            before_run_id: non_empty(&q.before),
            limit: Some(RUNS_PAGE),
            ..Default::default()
        })
        .await?;
    let next_before = (runs.len() as i64 == RUNS_PAGE)
        .then(|| runs.last().map(|r| r.run_id.clone()))
        .flatten();
    let data = RunsData { runs, next_before };
    Ok(respond(format, &data, |d| render_list(d, &q)))
}

fn render_list(d: &RunsData, q: &RunsQuery) -> String {
    let statuses = ["", "QUEUED", "STARTED", "SUCCESS", "FAILURE", "CANCELED"]
        .into_iter()
        .map(|s| {
            let selected = q.status.eq_ignore_ascii_case(s);
            let label = if s.is_empty() { "any" } else { s };
            view! { <option value=s selected=selected>{label}</option> }
        })
        .collect_view();
    let rows = d
        .runs
        .iter()
        .map(|r| {
            let href = format!("/runs/{}", r.run_id);
            let id = r.run_id.clone();
            // UUIDv7: the leading digits are the creation time, the trailing ones random.
            let short = format!(
                "…{}",
                &r.run_id[r.run_id.len().saturating_sub(8)..]
            );
            let st = r.status.as_str();
            let target = r.job_name.clone().unwrap_or_else(|| r.selection.clone());
            let partition = partition_label(r);
            let created = time(Some(r.created_at));
            let took = duration(r.started_at, r.ended_at);
            let tags = r
                .tags
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ");
            view! {
                <tr>
                    <td><a href=href title=id><code>{short}</code></a></td><td>{pill(st, st)}</td><td class="target">{target}</td>
                    <td>{partition}</td><td>{created}</td><td>{took}</td><td class="tags">{tags}</td>
                </tr>
            }
        })
        .collect_view();
    let next = d.next_before.as_ref().map(|b| {
        let href = format!(
            "/runs?status={}&job={}&asset={}&tag={}&before={}",
            encode(&q.status),
            encode(&q.job),
            encode(&q.asset),
            encode(&q.tag),
            encode(b)
        );
        view! { <a href=href>"Older runs →"</a> }
    });
    let body = view! {
        <h1>"Runs"</h1>
        <form method="get" action="/runs" class="inline filters">
            <label>"Status " <select name="status">{statuses}</select></label>
            <label>"Job " <input name="job" value=q.job.clone() size="14"/></label>
            <label>"Asset " <input name="asset" value=q.asset.clone() size="20"/></label>
            <label>"Tag " <input name="tag" value=q.tag.clone() size="20" placeholder="key or key=value"/></label>
            <button type="submit">"Filter"</button>
        </form>
        <table class="grid">
            <thead><tr><th>"Run"</th><th>"Status"</th><th>"Job / selection"</th><th>"Partition"</th><th>"Created"</th><th>"Duration"</th><th>"Tags"</th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
        {next}
    }
    .into_any();
    page("Runs", "/runs", body)
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct EventsQuery {
    /// Only this step.
    #[serde(default)]
    step: String,
    /// `debug`, `info`, `warn` or `error` (and above).
    #[serde(default)]
    level: String,
    /// Events after this id.
    #[serde(default)]
    after: i64,
}

impl EventsQuery {
    fn level(&self) -> Result<Option<LogLevel>> {
        Ok(match self.level.as_str() {
            "" => None,
            "debug" => Some(LogLevel::Debug),
            "info" => Some(LogLevel::Info),
            "warn" => Some(LogLevel::Warn),
            "error" => Some(LogLevel::Error),
            other => {
                return Err(UiError::BadRequest(format!(
                    "level `{other}`: expected debug, info, warn or error"
                )));
            }
        })
    }
}

#[derive(Debug, Serialize)]
struct StepSummary {
    step: String,
    status: &'static str,
    start: Option<i64>,
    end: Option<i64>,
    attempts: u32,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct RunData {
    run: RunRecord,
    steps: Vec<StepSummary>,
    events: Vec<Event>,
    /// Id to continue after (next page or tail).
    last_event_id: i64,
    more: bool,
}

fn step_summaries(events: &[Event]) -> Vec<StepSummary> {
    let mut steps: BTreeMap<String, StepSummary> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for e in events {
        let Some(step) = &e.step_key else { continue };
        let s = steps.entry(step.clone()).or_insert_with(|| {
            order.push(step.clone());
            StepSummary {
                step: step.clone(),
                status: "pending",
                start: None,
                end: None,
                attempts: 0,
                error: None,
            }
        });
        match &e.data {
            EventData::StepStarted { attempt } => {
                s.start.get_or_insert(e.timestamp);
                s.attempts = s.attempts.max(*attempt);
                s.status = "started";
            }
            EventData::StepSucceeded { .. } => {
                s.status = "success";
                s.end = Some(e.timestamp);
            }
            EventData::StepFailed { error, .. } => {
                s.status = "failure";
                s.end = Some(e.timestamp);
                s.error = Some(error.clone());
            }
            EventData::StepSkipped { reason } => {
                s.status = "skipped";
                s.end = Some(e.timestamp);
                s.error = Some(reason.clone());
            }
            EventData::StepCanceled => {
                s.status = "canceled";
                s.end = Some(e.timestamp);
            }
            _ => {}
        }
    }
    order.into_iter().filter_map(|k| steps.remove(&k)).collect()
}

/// The assets the run targets, resolved against the current definitions (its job's selection,
/// else its selection expression), if they still resolve.
fn run_targets(ui: &UiState, run: &RunRecord) -> Option<rainbow_engine::NodeSet> {
    let graph = ui.graph();
    match run.job_name.as_deref().and_then(|j| graph.job(j)) {
        Some(job) => graph.select_job(job).ok(),
        None => graph.select(&[run.selection.as_str()], &[] as &[&str]).ok(),
    }
}

/// The step summaries plus a `not_started` entry for each targeted step without events.
fn with_unstarted(ui: &UiState, run: &RunRecord, mut steps: Vec<StepSummary>) -> Vec<StepSummary> {
    let graph = ui.graph();
    if let Some(targets) = run_targets(ui, run) {
        let mut seen: std::collections::HashSet<String> =
            steps.iter().map(|s| s.step.clone()).collect();
        for node in targets.iter() {
            if graph.node(node).is_source {
                continue;
            }
            let step = graph.step_name(node).to_owned();
            if seen.insert(step.clone()) {
                steps.push(StepSummary {
                    step,
                    status: "not_started",
                    start: None,
                    end: None,
                    attempts: 0,
                    error: None,
                });
            }
        }
    }
    steps
}

async fn load_run(ui: &UiState, id: &str) -> Result<RunRecord> {
    ui.storage()
        .get_run(id)
        .await?
        .ok_or_else(|| UiError::not_found("run", id.to_owned()))
}

/// `GET /runs/{id}`.
pub(crate) async fn detail(
    State(ui): State<UiState>,
    format: Format,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
) -> Result<Response> {
    let (run, step, level) = (load_run(&ui, &id).await?, non_empty(&q.step), q.level()?);
    let steps = with_unstarted(
        &ui,
        &run,
        step_summaries(&ui.storage().step_events(&id).await?),
    );
    let mut events = ui
        .storage()
        .events_filtered(&id, step.as_deref(), level, q.after, EVENTS_PAGE + 1)
        .await?;
    let more = events.len() as i64 > EVENTS_PAGE;
    events.truncate(EVENTS_PAGE as usize);
    let last_event_id = events.last().map_or(q.after, |e| e.id);
    let data = RunData {
        run,
        steps,
        events,
        last_event_id,
        more,
    };
    Ok(respond(format, &data, |d| render_run(&ui, d, &q)))
}

/// `GET /runs/{id}/events?after=N&step=&level=`: the rows after N and a new tail sentinel
/// while the run is in progress (htmx swaps it in place of the old one).
pub(crate) async fn tail(
    State(ui): State<UiState>,
    format: Format,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
) -> Result<Response> {
    let (run, step, level) = (load_run(&ui, &id).await?, non_empty(&q.step), q.level()?);
    let events = ui
        .storage()
        .events_filtered(&id, step.as_deref(), level, q.after, EVENTS_PAGE)
        .await?;
    if format.json {
        return Ok(axum::Json(&events).into_response());
    }
    let last = events.last().map_or(q.after, |e| e.id);
    let rows = events.iter().map(event_row).collect_view();
    // Keep tailing while the run can still write events, or while a full page came back.
    let sentinel = (!run.status.is_finished() || events.len() as i64 == EVENTS_PAGE)
        .then(|| tail_sentinel(&id, &q, last));
    Ok(Html(view! { {rows}{sentinel} }.to_html()).into_response())
}

fn tail_sentinel(id: &str, q: &EventsQuery, after: i64) -> AnyView {
    let url = format!(
        "/runs/{id}/events?after={after}&step={}&level={}",
        encode(&q.step),
        encode(&q.level)
    );
    view! {
        <tr id="tail" hx-get=url hx-trigger="every 2s" hx-swap="outerHTML"><td colspan="5" class="muted">"tailing…"</td></tr>
    }
    .into_any()
}

fn event_row(e: &Event) -> AnyView {
    let when = time(Some(e.timestamp));
    let step = e.step_key.clone().unwrap_or_default();
    let kind = e.data.kind();
    let level = match &e.data {
        EventData::Log { level, .. } => match level {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        },
        EventData::StepFailed { .. }
        | EventData::RunFailed { .. }
        | EventData::AssetFailed { .. } => "error",
        EventData::StepUpForRetry { .. }
        | EventData::StepSkipped { .. }
        | EventData::StepCanceled
        | EventData::RunCanceled { .. } => "warn",
        EventData::CheckEvaluation(c) if !c.passed => "warn",
        _ => "info",
    };
    let mut message = e.data.summary();
    if let Some(a) = &e.asset_key {
        message = format!("{a}: {message}");
    }
    if let Some(p) = &e.partition_key {
        message = format!("{message} [partition {p}]");
    }
    let class = format!("event {level}");
    view! {
        <tr class=class><td>{when}</td><td>{step}</td><td>{kind}</td><td>{level}</td><td class="message">{message}</td></tr>
    }
    .into_any()
}

fn render_run(ui: &UiState, d: &RunData, q: &EventsQuery) -> String {
    let r = &d.run;
    let id = r.run_id.clone();
    let st = r.status.as_str();
    let t0 = r.started_at.unwrap_or(r.created_at);
    let now = rainbow_engine::event::now_micros();
    let bars: Vec<GanttBar> = d
        .steps
        .iter()
        .filter_map(|s| {
            let start = s.start?;
            let end = s.end.or(r.ended_at).unwrap_or(now);
            Some(GanttBar {
                step: s.step.clone(),
                start: (start - t0).max(0) as f64 / 1e6,
                end: (end - t0).max(0) as f64 / 1e6,
                state: match s.status {
                    "success" => "success",
                    "failure" => "failure",
                    "skipped" => "skipped",
                    "canceled" => "canceled",
                    _ => "started",
                },
            })
        })
        .collect();
    let errors = d
        .steps
        .iter()
        .filter(|s| s.status == "failure")
        .map(|s| {
            let step = s.step.clone();
            let chain = s.error.clone().unwrap_or_default();
            let causes = chain
                .split(": ")
                .map(|c| {
                    let c = c.to_owned();
                    view! { <li>{c}</li> }
                })
                .collect_view();
            view! { <div class="error-box"><strong>{step}</strong><ol class="causes">{causes}</ol></div> }
        })
        .collect_view();
    let reason = r
        .reason
        .clone()
        .map(|x| view! { <p class="reason">{x}</p> });
    let tags = r
        .tags
        .iter()
        .map(|(k, v)| {
            let text = format!("{k}={v} ");
            // Tags that name a run or a backfill link to it.
            let href = match k.as_str() {
                "rainbow/parent_run_id" => Some(format!("/runs/{}", encode(v))),
                "rainbow/backfill" => Some(format!("/backfills/{}", encode(v))),
                _ => None,
            };
            match href {
                Some(href) => view! { <a href=href>{text}</a> }.into_any(),
                None => view! { <span>{text}</span> }.into_any(),
            }
        })
        .collect_view();
    let backfill = r.backfill_id.clone().map(|b| {
        let href = format!("/backfills/{b}");
        view! { <tr><th>"Backfill"</th><td><a href=href>{b}</a></td></tr> }
    });
    let step_options = std::iter::once(String::new())
        .chain(d.steps.iter().map(|s| s.step.clone()))
        .map(|s| {
            let selected = s == q.step;
            let label = if s.is_empty() {
                "all steps".to_owned()
            } else {
                s.clone()
            };
            view! { <option value=s selected=selected>{label}</option> }
        })
        .collect_view();
    let level_options = ["", "debug", "info", "warn", "error"]
        .into_iter()
        .map(|l| {
            let selected = l == q.level;
            let label = if l.is_empty() { "all levels" } else { l };
            view! { <option value=l selected=selected>{label}</option> }
        })
        .collect_view();
    let rows = d.events.iter().map(event_row).collect_view();
    let tailing =
        (!r.status.is_finished() && !d.more).then(|| tail_sentinel(&id, q, d.last_event_id));
    let next = d.more.then(|| {
        let href = format!(
            "/runs/{id}?after={}&step={}&level={}",
            d.last_event_id,
            encode(&q.step),
            encode(&q.level)
        );
        view! { <a href=href>"Next events →"</a> }
    });
    let reexecute = |mode: &'static str, label: &'static str| {
        let action = format!("/runs/{id}/reexecute");
        let button_id = format!("reexecute-{mode}");
        view! {
            <form method="post" action=action class="inline">
                {csrf_field(ui.csrf_token())}
                <input type="hidden" name="mode" value=mode/>
                <button type="submit" id=button_id>{label}</button>
            </form>
        }
    };
    let finished = r.status.is_finished();
    let failed = matches!(r.status, RunStatus::Failure | RunStatus::Canceled);
    let target = r.job_name.clone().unwrap_or_else(|| r.selection.clone());
    let body = view! {
        <h1>"Run " <code>{id.clone()}</code> " " <span id="run-status">{pill(st, st)}</span></h1>
        {reason}
        <table class="kv">
            <tr><th>"Job / selection"</th><td>{target}</td></tr>
            <tr><th>"Partition"</th><td>{partition_label(r)}</td></tr>
            <tr><th>"Created"</th><td>{time(Some(r.created_at))}</td></tr>
            <tr><th>"Started"</th><td>{time(r.started_at)}</td></tr>
            <tr><th>"Ended"</th><td>{time(r.ended_at)}</td></tr>
            <tr><th>"Duration"</th><td>{duration(r.started_at, r.ended_at)}</td></tr>
            <tr><th>"Tags"</th><td>{tags}</td></tr>
            {backfill}
        </table>
        <div class="actions">
            {finished.then(|| reexecute("all", "Re-execute all"))}
            {failed.then(|| reexecute("from_failure", "Re-execute from failure"))}
        </div>
        {errors}
        <h2>"Steps"</h2>
        {gantt(&bars)}
        <h2>"Event log"</h2>
        <form method="get" action=format!("/runs/{id}") class="inline filters">
            <label>"Step " <select name="step">{step_options}</select></label>
            <label>"Level " <select name="level">{level_options}</select></label>
            <button type="submit">"Filter"</button>
        </form>
        <table class="grid log" id="event-log">
            <thead><tr><th>"Time"</th><th>"Step"</th><th>"Event"</th><th>"Level"</th><th>"Message"</th></tr></thead>
            <tbody id="events">{rows}{tailing}</tbody>
        </table>
        {next}
    }
    .into_any();
    page("Run", "/runs", body)
}

#[derive(Debug, Deserialize)]
pub(crate) struct ReexecuteForm {
    /// `all` or `from_failure`.
    mode: String,
}

/// `POST /runs/{id}/reexecute`: queues a copy of the run (`all`), or a run of the assets of
/// its failed, skipped and canceled steps (`from_failure`), for the daemon.
pub(crate) async fn reexecute(
    State(ui): State<UiState>,
    Path(id): Path<String>,
    Form(form): Form<ReexecuteForm>,
) -> Result<Redirect> {
    let run = load_run(&ui, &id).await?;
    if !run.status.is_finished() {
        return Err(UiError::BadRequest(format!(
            "run {id} is {}: re-execute it once it has finished",
            run.status
        )));
    }
    use rainbow_engine::tags::{PARTITION_RANGE_END, PARTITION_RANGE_START};
    let mut tags = run.tags.clone();
    tags.insert("rainbow/parent_run_id".to_owned(), id.clone());
    tags.insert("rainbow/launched_by".to_owned(), "ui".to_owned());
    tags.remove("rainbow/backfill");
    let range = match (
        tags.remove(PARTITION_RANGE_START),
        tags.remove(PARTITION_RANGE_END),
    ) {
        (Some(from), Some(to)) if run.partition_key.is_none() => Some((from, to)),
        _ => None,
    };
    let (job_name, selection) = match form.mode.as_str() {
        "all" => (run.job_name.clone(), run.selection.clone()),
        "from_failure" => {
            // Dagster's "from failure": every targeted asset whose step did not succeed —
            // failed, skipped, canceled, and the ones that never started.
            let graph = ui.graph();
            let targets = run_targets(&ui, &run).ok_or_else(|| {
                UiError::BadRequest(format!(
                    "run {id}'s selection `{}` no longer resolves against the current definitions",
                    run.selection
                ))
            })?;
            let steps = step_summaries(&ui.storage().step_events(&id).await?);
            let succeeded: std::collections::HashSet<&str> = steps
                .iter()
                .filter(|s| s.status == "success")
                .map(|s| s.step.as_str())
                .collect();
            let keys: Vec<String> = targets
                .iter()
                .filter(|&n| !graph.node(n).is_source && !succeeded.contains(graph.step_name(n)))
                .map(|n| format!("key:{}", graph.node(n).spec.key))
                .collect();
            if keys.is_empty() {
                return Err(UiError::BadRequest(format!(
                    "every step of run {id} succeeded: nothing to re-execute from failure"
                )));
            }
            (None, keys.join(" "))
        }
        other => {
            return Err(UiError::BadRequest(format!(
                "mode `{other}`: expected all or from_failure"
            )));
        }
    };
    if let Some((from, to)) = range {
        // A range run is re-executed as a backfill of its range (the daemon runs it with the
        // assets' backfill policy), not as one unpartitioned run.
        let request = rainbow_engine::backfill::BackfillRequest {
            select: vec![selection],
            exclude: Vec::new(),
            partitions: rainbow_engine::backfill::PartitionSelector::Range { from, to },
            max_concurrent: 1,
            tags,
        };
        let record = rainbow_engine::backfill::launch_backfill(
            ui.graph(),
            ui.storage(),
            &request,
            chrono::Utc::now(),
        )
        .await?;
        return Ok(Redirect::to(&format!("/backfills/{}", record.backfill_id)));
    }
    let new = ui
        .storage()
        .create_run(NewRun {
            job_name,
            selection,
            partition_key: run.partition_key.clone(),
            tags,
            status: Some(RunStatus::Queued),
            ..Default::default()
        })
        .await?;
    Ok(Redirect::to(&format!("/runs/{}", new.run_id)))
}
