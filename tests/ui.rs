//! The web UI in process (`tower::ServiceExt::oneshot` on the real router), on SQLite and
//! PostgreSQL: every page renders the state that runs, backfills and checks left in storage;
//! every action stores a request that the real daemon then executes; bad input re-renders the
//! form with the error and launches nothing; the token and CSRF guards refuse what they must;
//! metadata and log text are escaped.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use rainbow_engine::backfill::{BackfillRequest, PartitionSelector, launch_backfill};
use rainbow_engine::daemon::{Daemon, DaemonOptions, SystemClock};
use rainbow_engine::prelude::*;
use rainbow_engine::storage::RunFilter;
use rainbow_engine::storage::backfills::BackfillStatus;
use rainbow_engine::{Executor, RainbowConfig, RunStatus, Storage};
use rainbow_web_ui::{UiOptions, UiState};
use tower::ServiceExt;

use crate::on_both_backends;
use crate::support::{Backend, failing, fresh_storage};

on_both_backends!(
    pages_show_what_storage_holds,
    actions_queue_work_for_the_daemon
);

const XSS: &str = "<script>alert('x')</script>";

/// extract[daily] → load[daily]; raw → report (report always fails); a check on raw.
fn defs() -> Definitions {
    let daily = PartitionsDefinition::daily("2024-09-01").end("2024-09-11");
    Definitions::new()
        .asset(
            asset("extract")
                .group("ingest")
                .kind("parquet")
                .partitions(daily.clone())
                .compute(|ctx| async move {
                    let day = ctx.partition_key().unwrap_or_default().to_owned();
                    let rows = day
                        .rsplit('-')
                        .next()
                        .and_then(|d| d.parse().ok())
                        .unwrap_or(0);
                    Ok::<_, BoxError>(
                        MaterializeResult::new()
                            .row_count(rows)
                            .metadata("note", XSS),
                    )
                }),
        )
        .asset(
            asset("load")
                .group("ingest")
                .dep("extract")
                .partitions(daily)
                .compute(|_| async { Ok::<_, BoxError>(MaterializeResult::new()) }),
        )
        .asset(
            asset("raw")
                .group("core")
                .owner("data@example.com")
                .description("Raw rows")
                .compute(|ctx| async move {
                    ctx.log_info(format!("loaded {XSS}"));
                    Ok::<_, BoxError>(MaterializeResult::new().row_count(7))
                })
                .check(
                    AssetCheckSpec::new("raw_not_empty", "raw")
                        .compute(|_| async { Ok::<_, BoxError>(AssetCheckResult::passed()) }),
                ),
        )
        .asset(failing(
            asset("report").group("core").dep("raw"),
            "boom: the <b>source</b> is down",
        ))
        .job(JobDefinition::new("everything", "*"))
        .schedule(ScheduleDefinition::new(
            "nightly",
            "0 2 * * *",
            "everything",
        ))
}

/// The `Location` of a redirect.
fn redirect_to(headers: &header::HeaderMap) -> String {
    headers[header::LOCATION]
        .to_str()
        .expect("a Location header")
        .to_owned()
}

struct Ui {
    app: axum::Router,
    state: UiState,
    storage: Storage,
    graph: Arc<AssetGraph>,
}

fn ui(storage: &Storage, token: Option<&str>) -> Ui {
    let graph = Arc::new(AssetGraph::build(defs()).expect("definitions"));
    let state = UiState::new(
        graph.clone(),
        storage.clone(),
        UiOptions {
            token: token.map(str::to_owned),
            ..UiOptions::default()
        },
        None,
    );
    Ui {
        app: rainbow_web_ui::router(state.clone()),
        state,
        storage: storage.clone(),
        graph,
    }
}

impl Ui {
    async fn send(&self, req: Request<Body>) -> (StatusCode, header::HeaderMap, String) {
        let res = self.app.clone().oneshot(req).await.expect("response");
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.expect("body").to_bytes();
        (
            status,
            headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    async fn get(&self, uri: &str) -> (StatusCode, String) {
        let (s, _, b) = self
            .send(Request::get(uri).body(Body::empty()).expect("request"))
            .await;
        (s, b)
    }

    async fn json(&self, uri: &str) -> serde_json::Value {
        let (s, _, b) = self
            .send(
                Request::get(uri)
                    .header(header::ACCEPT, "application/json")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{uri}: {b}");
        serde_json::from_str(&b).unwrap_or_else(|e| panic!("{uri}: {e}: {b}"))
    }

    /// POSTs a form with the page's CSRF token (unless `csrf` is false).
    async fn post(
        &self,
        uri: &str,
        fields: &[(&str, &str)],
        csrf: bool,
    ) -> (StatusCode, header::HeaderMap, String) {
        let mut pairs: Vec<(&str, &str)> = fields.to_vec();
        if csrf {
            pairs.push(("csrf", self.state.csrf_token()));
        }
        let body = serde_urlencoded::to_string(&pairs).expect("form");
        self.send(
            Request::post(uri)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(body))
                .expect("request"),
        )
        .await
    }

    async fn daemon_tick(&self) {
        let executor = Executor::new(
            self.graph.clone(),
            self.storage.clone(),
            &RainbowConfig::default(),
        )
        .expect("executor");
        let daemon = Daemon::new(executor, Arc::new(SystemClock), DaemonOptions::default());
        daemon.tick().await.expect("tick");
        daemon.wait_idle().await;
    }
}

/// Runs `raw report` (report fails) and backfills three days of extract/load.
async fn history(ui: &Ui) {
    let executor = Executor::new(
        ui.graph.clone(),
        ui.storage.clone(),
        &RainbowConfig::default(),
    )
    .expect("executor");
    let set = ui
        .graph
        .select(&["raw report"], &[] as &[&str])
        .expect("selection");
    let result = executor
        .materialize(
            &set,
            rainbow_engine::RunOptions {
                selection: "raw report".into(),
                ..Default::default()
            },
            tokio_util::sync::CancellationToken::new(),
            None,
        )
        .await
        .expect("run");
    assert!(!result.success());
    let request = BackfillRequest {
        select: vec!["extract load".into()],
        exclude: vec![],
        partitions: PartitionSelector::Range {
            from: "2024-09-01".into(),
            to: "2024-09-03".into(),
        },
        max_concurrent: 2,
        tags: Default::default(),
    };
    launch_backfill(&ui.graph, &ui.storage, &request, chrono::Utc::now())
        .await
        .expect("backfill");
    ui.daemon_tick().await;
}

async fn pages_show_what_storage_holds(backend: Backend) {
    let ts = fresh_storage(backend).await;
    let ui = ui(&ts.storage, None);
    // Before anything ran: everything missing, no daemon seen.
    let lineage = ui.json("/").await;
    let states: Vec<&str> = lineage["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["state"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(states, vec!["missing"; 4], "{lineage}");
    let (_, schedules) = ui.get("/schedules").await;
    assert!(schedules.contains("schedule:nightly"), "{schedules}");
    assert!(schedules.contains("no daemon has run"), "{schedules}");

    history(&ui).await;

    // Lineage: each node in its state, partition counts on the partitioned ones.
    let lineage = ui.json("/").await;
    let node = |key: &str| {
        lineage["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .find(|n| n["key"] == key)
            .cloned()
            .unwrap_or_else(|| panic!("{key} not in {lineage}"))
    };
    assert_eq!(node("raw")["state"], "materialized");
    assert_eq!(node("report")["state"], "failed");
    assert_eq!(node("extract")["asset"]["partitions"]["materialized"], 3);
    assert_eq!(node("extract")["asset"]["partitions"]["total"], 10);
    assert_eq!(node("raw")["asset"]["checks"]["passed"], 1);
    let (status, html) = ui.get("/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(r#"class="node failed""#), "{html}");
    assert!(html.contains("materialized · 3/10"), "{html}");
    // Filtered with the selection language; a bad selection is reported, not a 500.
    let sub = ui.json("/?select=%2Bload").await;
    assert_eq!(sub["nodes"].as_array().map(Vec::len), Some(2), "{sub}");
    let (status, html) = ui.get("/?select=nosuchasset").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("nosuchasset"), "{html}");
    // Collapsed groups draw one node per group.
    let collapsed = ui.json("/?collapse=all").await;
    assert_eq!(
        collapsed["nodes"].as_array().map(Vec::len),
        Some(2),
        "{collapsed}"
    );
    assert_eq!(collapsed["nodes"][0]["assets"], 2);

    // Catalog: filter by state and group, sort by last materialization.
    let failed = ui.json("/assets?state=failed").await;
    let keys: Vec<&str> = failed["assets"]
        .as_array()
        .expect("assets")
        .iter()
        .map(|a| a["key"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(keys, vec!["report"]);
    let ingest = ui
        .json("/assets?group=ingest&sort=last_materialized&dir=desc")
        .await;
    assert_eq!(ingest["shown"], 2);
    let (status, _) = ui.get("/assets?state=bogus").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Asset page: definition, metadata (escaped), charts, checks; unknown asset is a 404.
    let (status, html) = ui.get("/assets/extract").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!html.contains(XSS), "metadata must be escaped");
    assert!(html.contains("&lt;script&gt;"), "{html}");
    assert!(html.contains("row_count over time"), "{html}");
    assert!(html.contains("row_count by partition"), "{html}");
    let (_, raw) = ui.get("/assets/raw").await;
    assert!(
        raw.contains("data@example.com") && raw.contains("raw_not_empty"),
        "{raw}"
    );
    let (status, html) = ui.get("/assets/raww").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(html.contains("did you mean `raw`"), "a suggestion: {html}");

    // Partitions: counts and ranges; drill-down; bad ranges are refused.
    let parts = ui.json("/partitions?asset=extract").await;
    assert_eq!(parts["counts"]["materialized"], 3);
    assert_eq!(parts["counts"]["missing"], 7);
    assert_eq!(parts["ranges"][0]["end"], "2024-09-03");
    let drill = ui
        .json("/partitions?asset=extract&from=2024-09-02&to=2024-09-05&partition=2024-09-02")
        .await;
    assert_eq!(drill["shown"], 4);
    assert_eq!(drill["partition"]["state"], "materialized");
    assert_eq!(
        drill["partition"]["materializations"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let (status, html) = ui
        .get("/partitions?asset=extract&from=2024-09-05&to=2024-09-02")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("comes after"), "{html}");
    let (status, _) = ui.get("/partitions?asset=raw").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Runs: filtered by status, asset and tag; the run page has the error chain, the Gantt
    // chart and the log (escaped), filterable by level.
    let runs = ui.json("/runs?status=FAILURE").await;
    let failed_run = runs["runs"][0]["run_id"]
        .as_str()
        .expect("a failed run")
        .to_owned();
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(1), "{runs}");
    let by_asset = ui.json("/runs?asset=extract").await;
    assert_eq!(
        by_asset["runs"].as_array().map(Vec::len),
        Some(3),
        "{by_asset}"
    );
    let (status, html) = ui.get(&format!("/runs/{failed_run}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("the &lt;b&gt;source&lt;/b&gt; is down"),
        "{html}"
    );
    assert!(
        !html.contains(XSS) && html.contains("loaded &lt;script&gt;"),
        "{html}"
    );
    assert!(html.contains(r#"class="gantt""#), "{html}");
    let errors = ui.json(&format!("/runs/{failed_run}?level=error")).await;
    let kinds: Vec<&str> = errors["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["data"]["kind"].as_str().unwrap_or_default())
        .collect();
    assert!(
        !kinds.is_empty()
            && kinds
                .iter()
                .all(|k| ["step_failed", "asset_failed", "run_failed"].contains(k)),
        "{kinds:?}"
    );
    let raw_only = ui.json(&format!("/runs/{failed_run}?step=raw")).await;
    assert!(
        raw_only["events"]
            .as_array()
            .expect("events")
            .iter()
            .all(|e| e["step_key"] == "raw")
    );
    let (status, _) = ui.get(&format!("/runs/{failed_run}?level=loud")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = ui.get("/runs/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Backfills: list with progress, detail with units.
    let backfills = ui.json("/backfills").await;
    assert_eq!(backfills[0]["backfill"]["status"], "completed");
    assert_eq!(backfills[0]["progress"]["done"], 3);
    let id = backfills[0]["backfill"]["backfill_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (_, html) = ui.get(&format!("/backfills/{id}")).await;
    assert!(
        html.contains("2024-09-03") && !html.contains("hx-trigger"),
        "finished: no polling: {html}"
    );

    // Schedules: the daemon's heartbeat now shows.
    let (_, schedules) = ui.get("/schedules").await;
    assert!(schedules.contains("daemon last seen"), "{schedules}");
    // Static files and unknown pages.
    let (status, js) = ui.get("/static/htmx.min.js").await;
    assert_eq!(status, StatusCode::OK);
    assert!(js.contains("htmx"));
    let (status, _) = ui.get("/nowhere").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, dashboard) = ui.get("/dashboard").await;
    assert!(dashboard.contains("no dashboard"), "{dashboard}");
}

async fn actions_queue_work_for_the_daemon(backend: Backend) {
    let ts = fresh_storage(backend).await;
    let ui = ui(&ts.storage, None);
    history(&ui).await;
    let backfills_before = ui
        .storage
        .list_backfills(None, 100)
        .await
        .expect("list")
        .len();

    // Bad launch input: the form again, the error next to the field, nothing launched.
    for (fields, field, text) in [
        (
            vec![("select", "nosuch"), ("mode", "all")],
            "error-select",
            "nosuch",
        ),
        (
            vec![
                ("select", "extract"),
                ("mode", "range"),
                ("from", "2024-09-05"),
                ("to", "2024-09-02"),
            ],
            "error-from",
            "comes after",
        ),
        (
            vec![
                ("select", "extract"),
                ("mode", "keys"),
                ("keys", "1999-01-01"),
            ],
            "error-keys",
            "1999-01-01",
        ),
        (
            vec![
                ("select", "extract"),
                ("mode", "all"),
                ("max_concurrent", "0"),
            ],
            "error-max_concurrent",
            "1 to 4096",
        ),
        (
            vec![("select", ""), ("mode", "all")],
            "error-select",
            "give a selection",
        ),
    ] {
        let mut fields = fields;
        fields.push(("action", "launch"));
        let (status, _, html) = ui.post("/backfills/new", &fields, true).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{fields:?}: {html}"
        );
        let at = html
            .find(&format!("id=\"{field}\""))
            .unwrap_or_else(|| panic!("{field} in {html}"));
        assert!(html[at..].contains(text), "{fields:?}: {html}");
    }
    // Every error of a field at once, each next to its field; an exclusion names its field.
    let (status, _, html) = ui
        .post(
            "/backfills/new",
            &[
                ("select", "extract"),
                ("exclude", "nosuch"),
                ("mode", ""),
                ("max_concurrent", "x"),
                ("action", "preview"),
            ],
            true,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    for field in ["error-exclude", "error-mode", "error-max_concurrent"] {
        assert!(html.contains(&format!("id=\"{field}\"")), "{field}: {html}");
    }
    // Errors answer JSON clients in JSON; wrong methods are 405; a huge form is 413.
    let bad = ui
        .send(
            Request::get("/assets?state=bogus")
                .header(header::ACCEPT, "application/json")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(bad.0, StatusCode::BAD_REQUEST);
    let body: serde_json::Value = serde_json::from_str(&bad.2).expect("JSON error");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("bogus")),
        "{body}"
    );
    let (status, _) = ui.get("/partitions").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = ui
        .send(
            Request::put("/backfills/new")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let huge = "x".repeat(100_000);
    let (status, _, body) = ui.post("/backfills/new", &[("select", &huge)], true).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");

    // Without the CSRF token: refused.
    let (status, _, _) = ui
        .post(
            "/backfills/new",
            &[("select", "extract"), ("mode", "all"), ("action", "launch")],
            false,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        ui.storage
            .list_backfills(None, 100)
            .await
            .expect("list")
            .len(),
        backfills_before
    );

    // Preview, then launch: a requested backfill that the daemon runs.
    let fields = [
        ("select", "extract load"),
        ("mode", "range"),
        ("from", "2024-09-04"),
        ("to", "2024-09-06"),
        ("max_concurrent", "2"),
    ];
    let mut preview = fields.to_vec();
    preview.push(("action", "preview"));
    let (status, _, html) = ui.post("/backfills/new", &preview, true).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("3 unit(s), executed as 3 run(s), covering 6 asset partition(s)"),
        "{html}"
    );
    let request_id = html
        .split(r#"name="request_id" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the preview's request id")
        .to_owned();
    let mut launch = fields.to_vec();
    launch.push(("action", "launch"));
    launch.push(("request_id", &request_id));
    let (status, headers, _) = ui.post("/backfills/new", &launch, true).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let location = redirect_to(&headers);
    // A double submit shows the same backfill; nothing is launched twice.
    let (_, again, _) = ui.post("/backfills/new", &launch, true).await;
    assert_eq!(again[header::LOCATION], location.as_str());
    let id = location.trim_start_matches("/backfills/").to_owned();
    let record = ui
        .storage
        .get_backfill(&id)
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(record.status, BackfillStatus::Requested);
    let (_, html) = ui.get(&location).await;
    assert!(
        html.contains(r#"hx-trigger="every 2s""#),
        "polls while requested: {html}"
    );
    ui.daemon_tick().await;
    let done = ui.json(&location).await;
    assert_eq!(done["backfill"]["status"], "completed", "{done}");
    let parts = ui.json("/partitions?asset=load").await;
    assert_eq!(parts["counts"]["materialized"], 6);

    // Cancel a requested backfill: canceled at once, the daemon never runs it.
    let (_, headers, _) = ui
        .post(
            "/backfills/new",
            &[
                ("select", "extract"),
                ("mode", "missing"),
                ("action", "launch"),
            ],
            true,
        )
        .await;
    let second = redirect_to(&headers);
    let (status, _, _) = ui.post(&format!("{second}/cancel"), &[], true).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(ui.json(&second).await["backfill"]["status"], "canceled");
    // Resume it: requested again, and the daemon completes it.
    let (status, _, _) = ui.post(&format!("{second}/resume"), &[], true).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(ui.json(&second).await["backfill"]["status"], "requested");
    ui.daemon_tick().await;
    assert_eq!(ui.json(&second).await["backfill"]["status"], "completed");
    assert_eq!(
        ui.json("/partitions?asset=extract").await["counts"]["missing"],
        serde_json::Value::Null
    );
    // Nothing left to backfill: said next to the partitions choice, nothing launched.
    let before = ui
        .storage
        .list_backfills(None, 100)
        .await
        .expect("list")
        .len();
    let (status, _, html) = ui
        .post(
            "/backfills/new",
            &[
                ("select", "extract"),
                ("mode", "missing"),
                ("action", "launch"),
            ],
            true,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("nothing to backfill"), "{html}");
    assert_eq!(
        ui.storage
            .list_backfills(None, 100)
            .await
            .expect("list")
            .len(),
        before
    );

    // Materialize: a queued run of one partition; a partitioned asset needs a valid key.
    let (status, _, html) = ui
        .post("/assets-materialize", &[("asset", "load")], true)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("needs a partition key"), "{html}");
    let (status, _, html) = ui
        .post(
            "/assets-materialize",
            &[("asset", "load"), ("partition", "2030-01-01")],
            true,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("is not a partition"), "{html}");
    let (status, headers, _) = ui
        .post("/assets-materialize", &[("asset", "raw")], true)
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let run = redirect_to(&headers);
    assert_eq!(ui.json(&run).await["run"]["status"], "QUEUED");
    // The log tails while the run can still write: a sentinel that htmx polls…
    let (_, tail) = ui.get(&format!("{run}/events?after=0")).await;
    assert!(
        tail.contains(r#"id="tail""#) && tail.contains("every 2s"),
        "{tail}"
    );
    ui.daemon_tick().await;
    assert_eq!(ui.json(&run).await["run"]["status"], "SUCCESS");
    // …which the rows of the finished run replace, with no new sentinel.
    let (_, tail) = ui.get(&format!("{run}/events?after=0")).await;
    assert!(
        tail.contains("run_succeeded") && !tail.contains(r#"id="tail""#),
        "{tail}"
    );
    let after = ui.json(&run).await["last_event_id"]
        .as_i64()
        .expect("an id");
    let (_, rest) = ui.get(&format!("{run}/events?after={after}")).await;
    assert!(
        !rest.contains("<tr"),
        "nothing after the last event: {rest}"
    );

    // Re-execute the failed run from failure: a queued run of `report` only.
    let failed = ui
        .storage
        .list_runs(&RunFilter {
            status: Some(RunStatus::Failure),
            ..Default::default()
        })
        .await
        .expect("runs");
    let failed = &failed[0].run_id;
    let (status, headers, _) = ui
        .post(
            &format!("/runs/{failed}/reexecute"),
            &[("mode", "from_failure")],
            true,
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let rerun = ui.json(&redirect_to(&headers)).await;
    assert_eq!(rerun["run"]["selection"], "key:report");
    assert_eq!(
        rerun["run"]["tags"]["rainbow/parent_run_id"],
        failed.as_str()
    );

    // Re-execute all: a queued copy of the run.
    let (status, headers, _) = ui
        .post(
            &format!("/runs/{failed}/reexecute"),
            &[("mode", "all")],
            true,
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let copy = ui.json(&redirect_to(&headers)).await;
    assert_eq!(copy["run"]["selection"], "raw report");
    assert_eq!(copy["run"]["status"], "QUEUED");

    // A backfill that fails, re-run from its page: a new backfill of the failed units.
    let (_, html) = ui.get("/backfills/new?select=report&mode=all").await;
    assert!(html.contains(r#"value="report""#), "prefilled: {html}");
    let (_, headers, _) = ui
        .post(
            "/backfills/new",
            &[("select", "report"), ("mode", "all"), ("action", "launch")],
            true,
        )
        .await;
    let failing = redirect_to(&headers);
    ui.daemon_tick().await;
    let state = ui.json(&failing).await;
    assert_eq!(state["backfill"]["status"], "failed", "{state}");
    let (_, html) = ui.get(&failing).await;
    assert!(
        html.contains("rerun-failed-button") && html.contains("resume-button"),
        "{html}"
    );
    let (status, headers, _) = ui.post(&format!("{failing}/rerun-failed"), &[], true).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let rerun = ui.json(&redirect_to(&headers)).await;
    assert_eq!(rerun["backfill"]["status"], "requested");
    assert_eq!(
        rerun["backfill"]["request"]["tags"]["rainbow/rerun_of"],
        failing.trim_start_matches("/backfills/")
    );

    // The operator token: required for reads and writes when set.
    let guarded = self::ui(&ts.storage, Some("s3cret"));
    let (status, _) = guarded.get("/assets").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, headers, _) = guarded
        .send(
            Request::get("/")
                .header(header::ACCEPT, "text/html")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/login");
    let (status, _, body) = guarded
        .send(
            Request::get("/assets")
                .header(header::AUTHORIZATION, "Bearer s3cret")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, _) = guarded.post("/login", &[("token", "wrong")], true).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, headers, _) = guarded.post("/login", &[("token", "s3cret")], true).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let cookie = headers[header::SET_COOKIE]
        .to_str()
        .expect("cookie")
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().expect("pair").to_owned();
    let (status, _, _) = guarded
        .send(
            Request::get("/runs")
                .header(header::COOKIE, pair)
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // A cross-site form post is refused even with the token.
    let (status, _, _) = guarded
        .send(
            Request::post("/assets-materialize")
                .header(header::AUTHORIZATION, "Bearer s3cret")
                .header(header::ORIGIN, "http://evil.example")
                .header(header::HOST, "127.0.0.1:3000")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(format!(
                    "asset=raw&csrf={}",
                    guarded.state.csrf_token()
                )))
                .expect("request"),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_public_address_needs_a_token() {
    let ts = fresh_storage(Backend::Sqlite).await;
    let ui = ui(&ts.storage, None);
    let err = rainbow_web_ui::serve(
        "0.0.0.0:0".parse().expect("addr"),
        ui.state.clone(),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect_err("refused");
    assert!(err.to_string().contains("RAINBOW_UI_TOKEN"), "{err}");
}
