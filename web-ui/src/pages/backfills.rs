//! Backfills: the launch dialog (selection, partitions, max concurrent runs, a mandatory
//! preview of the planned units before Launch), the list with progress, the detail page with
//! every unit, and cancel / resume / re-run-failed. Launching only stores a requested
//! backfill: the daemon (or `rainbow dev`) runs it; this process never runs user code.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use leptos::prelude::*;
use rainbow_engine::backfill::{
    BackfillRequest, PartitionSelector, cancel_backfill, launch_backfill, plan_backfill,
    resume_backfill,
};
use rainbow_engine::storage::backfills::{
    BackfillProgress, BackfillRecord, BackfillStatus, BackfillUnit, UnitStatus,
};
use serde::{Deserialize, Serialize};

use crate::error::{Result, UiError};
use crate::shell::{Form, Format, Query, csrf_field, encode, page, pill, respond, time};
use crate::state::UiState;

/// The launch form, as posted (and as prefilled from the query string).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub(crate) struct LaunchForm {
    #[serde(default)]
    select: String,
    #[serde(default)]
    exclude: String,
    /// `range`, `keys`, `all`, `missing` or `failed`.
    #[serde(default)]
    mode: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    /// Comma-separated keys.
    #[serde(default)]
    keys: String,
    #[serde(default)]
    max_concurrent: String,
    /// `preview` or `launch`.
    #[serde(default)]
    action: String,
    /// Set by the preview: a second launch of the same preview shows the first backfill
    /// instead of launching again (double submit).
    #[serde(default)]
    request_id: String,
}

/// Tag holding [`LaunchForm::request_id`] on the backfill it launched.
const REQUEST_TAG: &str = "rainbow/ui_request";

/// Errors by form field (`select`, `mode`, `from`, `to`, `keys`, `max_concurrent`, `form`).
type FieldErrors = BTreeMap<&'static str, String>;

/// What the preview shows.
#[derive(Debug, Serialize)]
struct Preview {
    units: usize,
    runs: usize,
    /// Partitions per asset.
    partitions_per_asset: BTreeMap<String, usize>,
    total_asset_partitions: usize,
    /// Unpartitioned assets, each computed once.
    unpartitioned: Vec<String>,
    first_units: Vec<BackfillUnit>,
}

#[derive(Debug, Serialize)]
struct LaunchData {
    form: LaunchForm,
    errors: FieldErrors,
    preview: Option<Preview>,
}

impl LaunchForm {
    /// The request (invalid fields replaced by defaults) and the errors of each bad field.
    fn request(&self) -> (BackfillRequest, FieldErrors) {
        let mut errors = FieldErrors::new();
        let select: Vec<String> = if self.select.trim().is_empty() {
            errors.insert(
                "select",
                "give a selection, e.g. `+fact_sales` or `group:views`".into(),
            );
            Vec::new()
        } else {
            vec![self.select.trim().to_owned()]
        };
        let exclude: Vec<String> = if self.exclude.trim().is_empty() {
            Vec::new()
        } else {
            vec![self.exclude.trim().to_owned()]
        };
        let partitions = match self.mode.as_str() {
            "range" => {
                if self.from.trim().is_empty() {
                    errors.insert("from", "give the first partition".into());
                }
                if self.to.trim().is_empty() {
                    errors.insert("to", "give the last partition".into());
                }
                PartitionSelector::Range {
                    from: self.from.trim().to_owned(),
                    to: self.to.trim().to_owned(),
                }
            }
            "keys" => {
                let keys: Vec<String> = self
                    .keys
                    .split([',', '\n'])
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(str::to_owned)
                    .collect();
                if keys.is_empty() {
                    errors.insert("keys", "list at least one partition key".into());
                }
                PartitionSelector::Keys { keys }
            }
            "all" => PartitionSelector::All,
            "missing" => PartitionSelector::Missing,
            "failed" => PartitionSelector::Failed,
            "" => {
                errors.insert(
                    "mode",
                    "choose the partitions: a range, a list, all, missing only or failed only"
                        .into(),
                );
                PartitionSelector::All
            }
            other => {
                errors.insert(
                    "mode",
                    format!("`{other}`: choose a range, a list, all, missing only or failed only"),
                );
                PartitionSelector::All
            }
        };
        let max_concurrent = if self.max_concurrent.trim().is_empty() {
            8
        } else {
            match self.max_concurrent.trim().parse::<usize>() {
                Ok(n) if (1..=4096).contains(&n) => n,
                _ => {
                    errors.insert(
                        "max_concurrent",
                        format!("`{}`: a whole number from 1 to 4096", self.max_concurrent),
                    );
                    8
                }
            }
        };
        let mut tags = BTreeMap::new();
        tags.insert("rainbow/launched_by".to_owned(), "ui".to_owned());
        if !self.request_id.is_empty() {
            tags.insert(REQUEST_TAG.to_owned(), self.request_id.clone());
        }
        let request = BackfillRequest {
            select,
            exclude,
            partitions,
            max_concurrent,
            tags,
        };
        (request, errors)
    }

    /// The field an engine error belongs to.
    fn field_of(&self, e: &rainbow_engine::Error) -> &'static str {
        match e {
            rainbow_engine::Error::Selection { expression, .. }
                if !self.exclude.trim().is_empty() && expression == self.exclude.trim() =>
            {
                "exclude"
            }
            rainbow_engine::Error::Selection { .. } => "select",
            rainbow_engine::Error::Partition { .. } => match self.mode.as_str() {
                "range" => "from",
                "keys" => "keys",
                _ => "mode",
            },
            _ => "form",
        }
    }
}

/// `GET /backfills/new`: the dialog, prefilled from the query string.
pub(crate) async fn new_form(
    State(ui): State<UiState>,
    format: Format,
    Query(mut form): Query<LaunchForm>,
) -> Response {
    if form.mode.is_empty() {
        form.mode = "range".into();
    }
    let data = LaunchData {
        form,
        errors: FieldErrors::new(),
        preview: None,
    };
    respond(format, &data, |d| render_launch(&ui, d))
}

/// `POST /backfills/new`: `action=preview` plans and shows the units; `action=launch`
/// (only from a preview) stores the backfill and shows it. Bad input re-renders the form
/// with each error next to its field (422); nothing is launched.
pub(crate) async fn submit(
    State(ui): State<UiState>,
    format: Format,
    Form(form): Form<LaunchForm>,
) -> Result<Response> {
    let now = chrono::Utc::now();
    let invalid = |form: LaunchForm, errors: FieldErrors| {
        let data = LaunchData {
            form,
            errors,
            preview: None,
        };
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            respond(format, &data, |d| render_launch(&ui, d)),
        )
            .into_response()
    };
    let (request, mut errors) = form.request();
    // Plan whenever there is a selection, so its errors show with the others at once.
    let planned = if request.select.is_empty() {
        None
    } else {
        match plan_backfill(ui.graph(), ui.storage(), &request, now).await {
            Ok(units) => Some(units),
            Err(e) => {
                errors
                    .entry(form.field_of(&e))
                    .or_insert_with(|| rainbow_engine::error::error_chain(&e));
                None
            }
        }
    };
    let units = match planned {
        Some(units) if errors.is_empty() => units,
        _ => return Ok(invalid(form, errors)),
    };
    if units.is_empty() {
        errors.insert(
            "mode",
            "nothing to backfill: no selected partition matches (all materialized?)".into(),
        );
        return Ok(invalid(form, errors));
    }
    if form.action == "launch" {
        // A double submit of one preview shows the backfill it launched.
        if !form.request_id.is_empty()
            && let Some(existing) = ui
                .storage()
                .list_backfills(None, 200)
                .await?
                .into_iter()
                .find(|b| b.request["tags"][REQUEST_TAG] == form.request_id.as_str())
        {
            return Ok(
                Redirect::to(&format!("/backfills/{}", existing.backfill_id)).into_response(),
            );
        }
        let record = match launch_backfill(ui.graph(), ui.storage(), &request, now).await {
            Ok(r) => r,
            Err(e) => {
                let mut errors = FieldErrors::new();
                errors.insert(form.field_of(&e), rainbow_engine::error::error_chain(&e));
                return Ok(invalid(form, errors));
            }
        };
        let location = format!("/backfills/{}", record.backfill_id);
        if format.json {
            return Ok((
                StatusCode::CREATED,
                [(axum::http::header::LOCATION, location)],
                axum::Json(&record),
            )
                .into_response());
        }
        return Ok(Redirect::to(&location).into_response());
    }
    let mut form = form;
    form.request_id = uuid::Uuid::new_v4().simple().to_string();
    let mut per_asset: BTreeMap<String, usize> = BTreeMap::new();
    let mut unpartitioned = std::collections::BTreeSet::new();
    for u in &units {
        for a in &u.assets {
            if u.partitions.is_empty() {
                unpartitioned.insert(a.to_string());
            } else {
                *per_asset.entry(a.to_string()).or_default() += u.partitions.len();
            }
        }
    }
    let data = LaunchData {
        form,
        errors: FieldErrors::new(),
        preview: Some(Preview {
            units: units.len(),
            runs: units.len(),
            total_asset_partitions: per_asset.values().sum(),
            partitions_per_asset: per_asset,
            unpartitioned: unpartitioned.into_iter().collect(),
            first_units: units.into_iter().take(50).collect(),
        }),
    };
    Ok(respond(format, &data, |d| render_launch(&ui, d)))
}

fn field_error(errors: &FieldErrors, field: &str) -> Option<impl IntoView + use<>> {
    errors.get(field).cloned().map(|e| {
        let id = format!("error-{field}");
        view! { <span class="error field-error" id=id>{e}</span> }
    })
}

fn partitions_label(partitions: &[String]) -> String {
    match partitions {
        [] => "-".to_owned(),
        [k] => k.clone(),
        ks => format!("{} .. {} ({})", ks[0], ks[ks.len() - 1], ks.len()),
    }
}

fn render_launch(ui: &UiState, d: &LaunchData) -> String {
    let f = &d.form;
    let e = &d.errors;
    let mode_option = |value: &'static str, label: &'static str| {
        let checked = f.mode == value;
        view! { <label class="radio"><input type="radio" name="mode" value=value checked=checked/>{label}</label> }
    };
    let preview = d.preview.as_ref().map(|p| {
        let per_asset = p
            .partitions_per_asset
            .iter()
            .map(|(a, n)| {
                let a = a.clone();
                let n = *n;
                view! { <tr><td>{a}</td><td>{n}</td></tr> }
            })
            .collect_view();
        let units = p
            .first_units
            .iter()
            .map(|u| {
                let id = u.unit_id;
                let assets = u.assets.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
                let parts = partitions_label(&u.partitions);
                let deps = u.deps.len();
                view! { <tr><td>{id}</td><td>{assets}</td><td>{parts}</td><td>{deps}</td></tr> }
            })
            .collect_view();
        let mut summary = format!(
            "{} unit(s), executed as {} run(s), covering {} asset partition(s)",
            p.units, p.runs, p.total_asset_partitions
        );
        if !p.unpartitioned.is_empty() {
            summary.push_str(&format!(
                " and {} unpartitioned asset(s)",
                p.unpartitioned.len()
            ));
        }
        let hidden = [
            ("select", f.select.clone()),
            ("exclude", f.exclude.clone()),
            ("mode", f.mode.clone()),
            ("from", f.from.clone()),
            ("to", f.to.clone()),
            ("keys", f.keys.clone()),
            ("max_concurrent", f.max_concurrent.clone()),
            ("request_id", f.request_id.clone()),
        ]
        .into_iter()
        .map(|(name, value)| view! { <input type="hidden" name=name value=value/> })
        .collect_view();
        view! {
            <section class="card preview" id="preview">
                <h2>"Preview"</h2>
                <p id="preview-summary">{summary}</p>
                <form method="post" action="/backfills/new">
                    {csrf_field(ui.csrf_token())}
                    {hidden}
                    <input type="hidden" name="action" value="launch"/>
                    <button type="submit" id="launch" class="primary">"Launch backfill"</button>
                </form>
                <table class="grid"><thead><tr><th>"Asset"</th><th>"Partitions"</th></tr></thead><tbody>{per_asset}</tbody></table>
                <h3>"First units"</h3>
                <table class="grid"><thead><tr><th>"Unit"</th><th>"Assets"</th><th>"Partitions"</th><th>"Depends on"</th></tr></thead><tbody>{units}</tbody></table>
            </section>
        }
    });
    let general = field_error(e, "form");
    let body = view! {
        <h1>"Launch a backfill"</h1>
        {general}
        <form method="post" action="/backfills/new" class="card launch">
            {csrf_field(ui.csrf_token())}
            <div class="field">
                <label>"Assets (selection) " <input name="select" id="select" value=f.select.clone() size="50" placeholder="+fact_sales, group:views, tag:layer=gold"/></label>
                {field_error(e, "select")}
            </div>
            <div class="field">
                <label>"Exclude " <input name="exclude" id="exclude" value=f.exclude.clone() size="50"/></label>
                {field_error(e, "exclude")}
            </div>
            <fieldset class="field">
                <legend>"Partitions"</legend>
                {mode_option("range", "from – to")}
                <label>"from " <input name="from" id="from" value=f.from.clone() size="14"/></label>
                {field_error(e, "from")}
                <label>" to " <input name="to" id="to" value=f.to.clone() size="14"/></label>
                {field_error(e, "to")}
                <br/>
                {mode_option("keys", "a list ")}
                <input name="keys" value=f.keys.clone() size="50" placeholder="KEY, KEY, …"/>
                {field_error(e, "keys")}
                <br/>
                {mode_option("all", "all")}
                {mode_option("missing", "missing only")}
                {mode_option("failed", "failed only")}
                {field_error(e, "mode")}
            </fieldset>
            <div class="field">
                <label>"Max concurrent runs " <input name="max_concurrent" value=f.max_concurrent.clone() size="5" placeholder="8"/></label>
                {field_error(e, "max_concurrent")}
            </div>
            <input type="hidden" name="action" value="preview"/>
            <button type="submit" id="preview-button">"Preview"</button>
        </form>
        {preview}
    }
    .into_any();
    page("Launch backfill", "/backfills/new", body)
}

#[derive(Debug, Serialize)]
struct BackfillRow {
    backfill: BackfillRecord,
    progress: BackfillProgress,
}

/// `GET /backfills`.
pub(crate) async fn list(State(ui): State<UiState>, format: Format) -> Result<Response> {
    let storage = ui.storage();
    let mut rows = Vec::new();
    for b in storage.list_backfills(None, 100).await? {
        let progress = storage.backfill_progress(&b.backfill_id).await?;
        rows.push(BackfillRow {
            backfill: b,
            progress,
        });
    }
    Ok(respond(format, &rows, |rows| {
        let body_rows = rows
            .iter()
            .map(|r| {
                let href = format!("/backfills/{}", r.backfill.backfill_id);
                let id = r.backfill.backfill_id.clone();
                let st = r.backfill.status.as_str();
                let created = time(Some(r.backfill.created_at));
                let sel = r.backfill.selection.clone();
                view! {
                    <tr>
                        <td><a href=href>{id}</a></td>
                        <td>{pill(st, st)}</td>
                        <td>{created}</td>
                        <td>{sel}</td>
                        <td>{progress_bar(&r.progress)}</td>
                    </tr>
                }
            })
            .collect_view();
        let body = view! {
            <h1>"Backfills"</h1>
            <p><a href="/backfills/new">"Launch a backfill"</a></p>
            <table class="grid">
                <thead><tr><th>"Backfill"</th><th>"Status"</th><th>"Created"</th><th>"Selection"</th><th>"Progress"</th></tr></thead>
                <tbody>{body_rows}</tbody>
            </table>
        }
        .into_any();
        page("Backfills", "/backfills", body)
    }))
}

/// Done / failed / in progress / remaining as a bar and text.
fn progress_bar(p: &BackfillProgress) -> AnyView {
    let total = p.total.max(1) as f64;
    let pct = |n: usize| format!("{:.2}%", n as f64 / total * 100.0);
    let text = format!(
        "{} done · {} failed · {} skipped · {} running · {} remaining of {}",
        p.done, p.failed, p.skipped, p.running, p.pending, p.total
    );
    view! {
        <div class="progress">
            <span class="seg materialized" style=format!("width:{}", pct(p.done))></span>
            <span class="seg failed" style=format!("width:{}", pct(p.failed + p.skipped))></span>
            <span class="seg in_progress" style=format!("width:{}", pct(p.running))></span>
        </div>
        <span class="progress-text">{text}</span>
    }
    .into_any()
}

/// The stored backfill `id`, or not found.
async fn load_backfill(ui: &UiState, id: &str) -> Result<BackfillRecord> {
    ui.storage()
        .get_backfill(id)
        .await?
        .ok_or_else(|| UiError::not_found("backfill", id))
}

#[derive(Debug, Serialize)]
struct BackfillData {
    backfill: BackfillRecord,
    progress: BackfillProgress,
    units: Vec<BackfillUnit>,
}

/// `GET /backfills/{id}` (and `?fragment=progress`, the part htmx polls while it runs).
pub(crate) async fn detail(
    State(ui): State<UiState>,
    format: Format,
    Path(id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response> {
    let storage = ui.storage();
    let backfill = load_backfill(&ui, &id).await?;
    let progress = storage.backfill_progress(&id).await?;
    let units = storage.backfill_units(&id).await?;
    let data = BackfillData {
        backfill,
        progress,
        units,
    };
    if q.get("fragment").is_some_and(|f| f == "progress") && !format.json {
        return Ok(Html(live_part(&ui, &data).to_html()).into_response());
    }
    Ok(respond(format, &data, |d| {
        let id = d.backfill.backfill_id.clone();
        let sel = d.backfill.selection.clone();
        let request = serde_json::to_string(&d.backfill.request).unwrap_or_default();
        let body = view! {
            <h1>"Backfill " <code>{id}</code></h1>
            <table class="kv">
                <tr><th>"Selection"</th><td>{sel}</td></tr>
                <tr><th>"Created"</th><td>{time(Some(d.backfill.created_at))}</td></tr>
                <tr><th>"Request"</th><td><code>{request}</code></td></tr>
            </table>
            {live_part(&ui, d)}
        }
        .into_any();
        page("Backfill", "/backfills", body)
    }))
}

/// Status, progress, actions and units: polled every 2 s by htmx while the backfill is not
/// finished (the returned fragment drops the trigger once it is).
fn live_part(ui: &UiState, d: &BackfillData) -> AnyView {
    let id = d.backfill.backfill_id.clone();
    let st = d.backfill.status.as_str();
    let finished = d.backfill.status.is_finished();
    let poll = (!finished).then(|| format!("/backfills/{id}?fragment=progress"));
    let trigger = (!finished).then_some("every 2s");
    let reason = d
        .backfill
        .reason
        .clone()
        .map(|r| view! { <p class="reason">{r}</p> });
    let action = |path: &str, label: &'static str, show: bool| {
        show.then(|| {
            let action = format!("/backfills/{id}/{path}");
            let button_id = format!("{path}-button");
            view! {
                <form method="post" action=action class="inline">
                    {csrf_field(ui.csrf_token())}
                    <button type="submit" id=button_id>{label}</button>
                </form>
            }
        })
    };
    let can_cancel = matches!(
        d.backfill.status,
        BackfillStatus::Requested | BackfillStatus::Running
    );
    let can_resume = matches!(
        d.backfill.status,
        BackfillStatus::Failed | BackfillStatus::Canceled
    );
    let any_failed = d
        .units
        .iter()
        .any(|u| matches!(u.status, UnitStatus::Failed | UnitStatus::Skipped));
    let units = d
        .units
        .iter()
        .map(|u| {
            let uid = u.unit_id;
            // A unit left pending by a finished backfill will not run unless it is resumed.
            let ust = if finished && u.status == UnitStatus::Pending {
                "not_run"
            } else {
                u.status.as_str()
            };
            let assets = u
                .assets
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            let parts = partitions_label(&u.partitions);
            let attempts = u.attempts;
            let run = u.run_id.clone().map(|r| {
                let href = format!("/runs/{r}");
                view! { <a href=href>{r}</a> }
            });
            view! { <tr><td>{uid}</td><td>{pill(ust, ust)}</td><td>{assets}</td><td>{parts}</td><td>{attempts}</td><td>{run}</td></tr> }
        })
        .collect_view();
    view! {
        <div id="backfill-live" hx-get=poll hx-trigger=trigger hx-swap="outerHTML" data-status=st>
            <p>"Status " <span id="backfill-status">{pill(st, st)}</span></p>
            {reason}
            {progress_bar(&d.progress)}
            <div class="actions">
                {action("cancel", "Cancel", can_cancel)}
                {action("resume", "Resume", can_resume)}
                {action("rerun-failed", "Re-run failed", any_failed && finished)}
            </div>
            <h2>"Units"</h2>
            <table class="grid">
                <thead><tr><th>"Unit"</th><th>"Status"</th><th>"Assets"</th><th>"Partitions"</th><th>"Attempts"</th><th>"Run"</th></tr></thead>
                <tbody>{units}</tbody>
            </table>
        </div>
    }
    .into_any()
}

/// `POST /backfills/{id}/cancel`: a requested backfill is canceled now; a running one stops
/// at its process's next heartbeat.
pub(crate) async fn cancel(State(ui): State<UiState>, Path(id): Path<String>) -> Result<Redirect> {
    cancel_backfill(ui.storage(), &id).await?;
    Ok(Redirect::to(&format!("/backfills/{id}")))
}

/// `POST /backfills/{id}/resume`: back to requested (failed and skipped units retried) for
/// the daemon.
pub(crate) async fn resume(State(ui): State<UiState>, Path(id): Path<String>) -> Result<Redirect> {
    resume_backfill(ui.storage(), &id, ui.inner.options.heartbeat_timeout).await?;
    Ok(Redirect::to(&format!("/backfills/{id}")))
}

/// `POST /backfills/{id}/rerun-failed`: a new backfill of the same selection over the
/// partitions of the failed and skipped units.
pub(crate) async fn rerun_failed(
    State(ui): State<UiState>,
    Path(id): Path<String>,
) -> Result<Redirect> {
    let storage = ui.storage();
    let record = load_backfill(&ui, &id).await?;
    let original: BackfillRequest =
        serde_json::from_value(record.request.clone()).map_err(|e| {
            UiError::BadRequest(format!("backfill {id} has an unreadable request: {e}"))
        })?;
    let mut keys: Vec<String> = Vec::new();
    let mut unpartitioned = false;
    for u in storage.backfill_units(&id).await? {
        if matches!(u.status, UnitStatus::Failed | UnitStatus::Skipped) {
            unpartitioned |= u.partitions.is_empty();
            for k in u.partitions {
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
        }
    }
    if keys.is_empty() && !unpartitioned {
        return Err(UiError::BadRequest(format!(
            "backfill {id} has no failed or skipped units"
        )));
    }
    let mut tags = original.tags.clone();
    tags.insert("rainbow/rerun_of".to_owned(), id.clone());
    let request = BackfillRequest {
        partitions: if keys.is_empty() {
            PartitionSelector::All
        } else {
            PartitionSelector::Keys { keys }
        },
        tags,
        ..original
    };
    let new = launch_backfill(ui.graph(), storage, &request, chrono::Utc::now()).await?;
    Ok(Redirect::to(&format!("/backfills/{}", new.backfill_id)))
}

/// Link to the launch dialog prefilled with a selection.
pub(crate) fn launch_href(select: &str) -> String {
    format!("/backfills/new?select={}", encode(select))
}
