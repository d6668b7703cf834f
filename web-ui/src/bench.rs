//! `rainbow bench ui`: server time of the lineage, asset and partitions pages over a synthetic
//! code location — `assets` assets in groups of 50, each depending on one to three of the 40
//! before it, plus one hourly-partitioned asset with `partitions` partitions of history (every
//! 97th failed) — on SQLite run storage, through the real router (`tower::ServiceExt::oneshot`,
//! no network). Pages are timed with the asset-state cache warm (no new event between views)
//! and, for the lineage, cold (a new event before each view).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use rainbow_engine::event::{Event, EventData, Materialization};
use rainbow_engine::prelude::*;
use rainbow_engine::random::SplitMix64;
use rainbow_engine::storage::{NewRun, WriteSet};
use rainbow_engine::{RunStatus, Storage};
use serde::Serialize;
use tower::ServiceExt;

use crate::error::{Result, UiError};
use crate::state::{UiOptions, UiState};

/// One measured page.
#[derive(Debug, Clone, Serialize)]
pub struct PageTiming {
    /// The request path.
    pub path: String,
    /// First request (for the lineage: layout included), ms.
    pub first_ms: f64,
    /// Median of the following requests, ms.
    pub median_ms: f64,
    /// Response size, bytes.
    pub bytes: usize,
}

/// What `rainbow bench ui` prints last, as one JSON line.
#[derive(Debug, Clone, Serialize)]
pub struct UiBenchReport {
    /// Assets in the code location.
    pub assets: usize,
    /// Partitions of history of the partitioned asset.
    pub partitions: usize,
    /// Time to write the history, s.
    pub setup_secs: f64,
    /// Each page.
    pub pages: Vec<PageTiming>,
}

fn definitions(
    assets: usize,
    partitions: usize,
    now: chrono::DateTime<chrono::Utc>,
) -> Definitions {
    let mut rng = SplitMix64::new(42);
    let mut defs = Definitions::new();
    let start = now - chrono::Duration::hours(partitions as i64);
    let hourly = PartitionsDefinition::hourly(&start.format("%Y-%m-%d-%H:00").to_string());
    defs = defs.asset(
        asset("events")
            .group("g0")
            .partitions(hourly)
            .compute(|_| async { Ok::<_, BoxError>(MaterializeResult::new()) }),
    );
    for i in 1..assets {
        let mut spec = asset(format!("a{i:05}"))
            .group(format!("g{}", i / 50))
            .kind("sql");
        let parents = 1 + (rng.next_u64() % 3) as usize;
        for _ in 0..parents.min(i) {
            let back = 1 + (rng.next_u64() % 40) as usize;
            let p = i.saturating_sub(back);
            let key = if p == 0 {
                "events".to_owned()
            } else {
                format!("a{p:05}")
            };
            if !spec.deps.iter().any(|d| d.key.to_string() == key) {
                spec = spec.dep(key.as_str());
            }
        }
        defs = defs.asset(spec.compute(|_| async { Ok::<_, BoxError>(MaterializeResult::new()) }));
    }
    defs
}

/// Writes a history: every partition of `events` (every 97th failed) and one materialization
/// of each other asset, with row counts.
async fn history(storage: &Storage, graph: &AssetGraph, keys: &[String]) -> Result<()> {
    let run = storage
        .create_run(NewRun {
            selection: "*".into(),
            status: Some(RunStatus::Success),
            ..Default::default()
        })
        .await?;
    let materialization = |rows: u64| {
        let mut m = Materialization::default();
        m.metadata
            .insert("row_count".into(), MetadataValue::RowCount(rows));
        m.metadata
            .insert("duration".into(), MetadataValue::Duration(0.01));
        EventData::Materialization(m)
    };
    let mut events = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let data = if i % 97 == 0 {
            EventData::AssetFailed {
                partitions: vec![k.clone()],
                error: "source down".into(),
            }
        } else {
            materialization(1_000 + i as u64 % 500)
        };
        events.push(
            Event::new(&run.run_id, data)
                .step("events")
                .asset(AssetKey::from("events"))
                .partition(Some(k.clone())),
        );
    }
    for node in graph.nodes().iter().skip(1) {
        events.push(
            Event::new(&run.run_id, materialization(100))
                .step(node.spec.key.to_string())
                .asset(node.spec.key.clone()),
        );
    }
    for chunk in events.chunks(5_000) {
        storage
            .write(&WriteSet {
                events: chunk.to_vec(),
                ..WriteSet::default()
            })
            .await?;
    }
    Ok(())
}

/// Times `path` `repeat + 1` times; with `invalidate`, a new materialization event is written
/// before each request, so the asset states are recomputed every time (a live instance).
async fn time_page(
    app: &axum::Router,
    path: &str,
    repeat: usize,
    invalidate: Option<&Storage>,
) -> Result<PageTiming> {
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..=repeat {
        if let Some(storage) = invalidate {
            let run = storage
                .create_run(NewRun {
                    selection: "a00001".into(),
                    status: Some(RunStatus::Success),
                    ..Default::default()
                })
                .await?;
            let event = Event::new(
                &run.run_id,
                EventData::Materialization(Materialization::default()),
            )
            .step("a00001")
            .asset(AssetKey::from("a00001"));
            storage.write_batch(&[event], &[]).await?;
        }
        let started = Instant::now();
        let res = app
            .clone()
            .oneshot(
                Request::get(path)
                    .body(Body::empty())
                    .map_err(|e| UiError::BadRequest(e.to_string()))?,
            )
            .await
            .map_err(|e| UiError::BadRequest(format!("{path}: {e}")))?;
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .map_err(|e| UiError::BadRequest(format!("{path}: {e}")))?;
        times.push(started.elapsed());
        if status != StatusCode::OK {
            return Err(UiError::BadRequest(format!(
                "{path} answered {status}: {}",
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(300)
                    .collect::<String>()
            )));
        }
        bytes = body.len();
    }
    let first = times.remove(0);
    times.sort();
    let median = times.get(times.len() / 2).copied().unwrap_or(first);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(PageTiming {
        path: path.to_owned(),
        first_ms: ms(first),
        median_ms: ms(median),
        bytes,
    })
}

/// Builds the code location and its history in `dir` (SQLite), then times each page
/// `repeat + 1` times.
pub async fn bench_ui(
    dir: &std::path::Path,
    assets: usize,
    partitions: usize,
    repeat: usize,
) -> Result<UiBenchReport> {
    let now = chrono::Utc::now();
    let graph = Arc::new(AssetGraph::build(definitions(
        assets.max(2),
        partitions,
        now,
    ))?);
    let storage = Storage::open_sqlite_dir(dir).await?;
    let setup = Instant::now();
    let ctx = rainbow_engine::partitions::PartitionContext::at(now);
    let events = graph
        .node_id(&AssetKey::from("events"))
        .and_then(|n| graph.partitions(n))
        .ok_or_else(|| UiError::BadRequest("the synthetic graph has no `events`".into()))?;
    let keys = ctx.keys_of(events)?;
    history(&storage, &graph, &keys).await?;
    let setup_secs = setup.elapsed().as_secs_f64();
    let app = crate::router(UiState::new(
        graph,
        storage.clone(),
        UiOptions::default(),
        None,
    ));
    let mid = keys.len() / 2;
    let mut pages = Vec::new();
    for path in [
        "/".to_owned(),
        "/?collapse=none".to_owned(),
        "/?format=json".to_owned(),
        format!("/assets/a{:05}", assets / 2),
        "/assets/events".to_owned(),
        "/partitions?asset=events".to_owned(),
        format!(
            "/partitions?asset=events&from={}&to={}",
            keys[mid.saturating_sub(50)],
            keys[mid]
        ),
    ] {
        pages.push(time_page(&app, &path, repeat, None).await?);
    }
    // The same lineage while runs write events: states recomputed on every view.
    let mut live = time_page(&app, "/", repeat, Some(&storage)).await?;
    live.path = "/ (a new event before each view)".into();
    pages.push(live);
    Ok(UiBenchReport {
        assets,
        partitions: keys.len(),
        setup_secs,
        pages,
    })
}
