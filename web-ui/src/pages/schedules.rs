//! Schedules and sensors: next ticks, tick history with skip reasons inline, and when the
//! daemon was last seen (its heartbeat, written at every tick).

use axum::extract::State;
use axum::response::Response;
use leptos::prelude::*;
use rainbow_engine::daemon::{DaemonHeartbeat, daemon_heartbeat};
use rainbow_engine::event::now_micros;
use rainbow_engine::storage::schedules::TickRecord;
use serde::Serialize;

use crate::error::Result;
use crate::shell::{Format, page, pill, respond, seconds, time};
use crate::state::UiState;

#[derive(Debug, Serialize)]
struct Instigator {
    /// `schedule:NAME` or `sensor:NAME` (the ticks' instigator).
    name: String,
    kind: &'static str,
    job: String,
    /// Cron and timezone (schedules).
    cron: Option<String>,
    /// Next tick times (µs), schedules only.
    next_ticks: Vec<i64>,
    ticks: Vec<TickRecord>,
}

#[derive(Debug, Serialize)]
struct SchedulesData {
    daemon: Option<DaemonHeartbeat>,
    /// Seconds since the daemon's last heartbeat.
    daemon_age_secs: Option<f64>,
    instigators: Vec<Instigator>,
    /// Latest automation-condition ticks.
    automation: Vec<TickRecord>,
    started_at: i64,
    definitions_hash: String,
}

/// `GET /schedules`.
pub(crate) async fn schedules(State(ui): State<UiState>, format: Format) -> Result<Response> {
    let graph = ui.graph();
    let storage = ui.storage();
    let now = chrono::Utc::now();
    let mut instigators = Vec::new();
    for s in graph.schedules() {
        let tz = s.tz()?;
        let next_ticks = s
            .cron()?
            .after(&now.with_timezone(&tz))
            .take(3)
            .map(|t| t.with_timezone(&chrono::Utc).timestamp_micros())
            .collect();
        let name = format!("schedule:{}", s.name);
        let ticks = storage.ticks(Some(&name), 20).await?;
        instigators.push(Instigator {
            name,
            kind: "schedule",
            job: s.job.clone(),
            cron: Some(format!("{} ({})", s.cron_schedule, s.timezone)),
            next_ticks,
            ticks,
        });
    }
    for s in graph.sensors() {
        let name = format!("sensor:{}", s.name);
        let ticks = storage.ticks(Some(&name), 20).await?;
        instigators.push(Instigator {
            name,
            kind: "sensor",
            job: s.job.clone(),
            cron: None,
            next_ticks: Vec::new(),
            ticks,
        });
    }
    let automation = storage
        .ticks(None, 200)
        .await?
        .into_iter()
        .filter(|t| t.kind == "automation")
        .take(20)
        .collect();
    let daemon = daemon_heartbeat(storage).await?;
    let data = SchedulesData {
        daemon_age_secs: daemon
            .as_ref()
            .map(|d| (now_micros() - d.at).max(0) as f64 / 1e6),
        daemon,
        instigators,
        automation,
        started_at: ui.inner.started_at,
        definitions_hash: ui.inner.definitions_hash.clone(),
    };
    Ok(respond(format, &data, render))
}

fn tick_rows(ticks: &[TickRecord]) -> AnyView {
    if ticks.is_empty() {
        return view! { <p class="muted">"no ticks yet"</p> }.into_any();
    }
    let rows = ticks
        .iter()
        .map(|t| {
            let when = time(Some(t.tick_ts));
            let who = t.instigator.clone();
            let st = t.status.clone();
            let reason = t.reason.clone().unwrap_or_default();
            let run = t.run_id.clone().map(|r| {
                let href = format!("/runs/{r}");
                view! { <a href=href>{r}</a> }
            });
            view! { <tr><td>{when}</td><td>{who}</td><td>{pill(&st, st.clone())}</td><td>{reason}</td><td>{run}</td></tr> }
        })
        .collect_view();
    view! {
        <table class="grid"><thead><tr><th>"Tick"</th><th>"Instigator"</th><th>"Outcome"</th><th>"Reason"</th><th>"Run"</th></tr></thead><tbody>{rows}</tbody></table>
    }
    .into_any()
}

fn render(d: &SchedulesData) -> String {
    let daemon = match (&d.daemon, d.daemon_age_secs) {
        (Some(beat), Some(age)) => {
            let class = if age > 120.0 { "pill failed" } else { "pill materialized" };
            let text = format!(
                "daemon last seen {} ago ({}), pid {} on {}",
                seconds(age),
                time(Some(beat.at)),
                beat.pid,
                beat.hostname
            );
            view! { <p><span class=class>{text}</span></p> }.into_any()
        }
        _ => view! { <p><span class="pill failed">"no daemon has run on this storage: start `rainbow daemon` or `rainbow dev`"</span></p> }.into_any(),
    };
    let list = d
        .instigators
        .iter()
        .map(|i| {
            let title = i.name.clone();
            let job = format!("job {}", i.job);
            let cron = i.cron.clone().unwrap_or_default();
            let next = i
                .next_ticks
                .iter()
                .map(|t| time(Some(*t)))
                .collect::<Vec<_>>()
                .join(", ");
            let next = (!next.is_empty()).then(|| view! { <p>"Next ticks (UTC): " {next}</p> });
            view! {
                <section class="card">
                    <h2>{title}</h2>
                    <p>{job} " · " {cron}</p>
                    {next}
                    {tick_rows(&i.ticks)}
                </section>
            }
        })
        .collect_view();
    let info = format!(
        "UI process started {} · definitions {}",
        time(Some(d.started_at)),
        d.definitions_hash
    );
    let body = view! {
        <h1>"Schedules and sensors"</h1>
        {daemon}
        <p class="muted">{info}</p>
        {list}
        <h2>"Automation"</h2>
        {tick_rows(&d.automation)}
    }
    .into_any();
    page("Schedules", "/schedules", body)
}
