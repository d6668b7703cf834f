//! Text and JSON rendering of CLI results. Text goes to stdout in aligned columns; JSON is one
//! document on stdout.

use serde_json::json;

use crate::error::{Error, Result};
use crate::event::{Event, format_micros};
use crate::executor::{RunResult, StepStatus};
use crate::graph::AssetGraph;
use crate::staleness::{AssetStatus, Staleness};
use crate::storage::RunRecord;

pub(super) fn print_json(value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Internal(format!("cannot render JSON: {e}")))?;
    outln!("{text}")?;
    Ok(())
}

/// Prints rows under headers with columns padded to their widest cell.
fn table(headers: &[&str], rows: &[Vec<String>]) -> Result<()> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> Result<()> {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        outln!("{}", out.trim_end())
    };
    line(headers.to_vec())?;
    for row in rows {
        line(row.iter().map(String::as_str).collect())?;
    }
    Ok(())
}

fn staleness_text(s: Staleness) -> &'static str {
    match s {
        Staleness::Missing => "missing",
        Staleness::Fresh => "fresh",
        Staleness::Stale => "stale",
        Staleness::Source => "source",
    }
}

pub(super) fn list(graph: &AssetGraph, statuses: &[AssetStatus], json: bool) -> Result<()> {
    let describe = |status: &AssetStatus| {
        let id = graph.node_id(&status.key);
        let node = id.map(|i| graph.node(i));
        let deps: Vec<String> = node
            .map(|n| n.spec.deps.iter().map(|d| d.key.to_string()).collect())
            .unwrap_or_default();
        (node, deps, id)
    };
    if json {
        let items: Vec<serde_json::Value> = statuses
            .iter()
            .map(|s| {
                let (node, deps, id) = describe(s);
                let checks: Vec<&str> = id
                    .map(|i| graph.checks_for(i).map(|c| c.spec.name.as_str()).collect())
                    .unwrap_or_default();
                json!({
                    "key": s.key.to_string(),
                    "group": node.and_then(|n| n.spec.group.clone()),
                    "kinds": node.map(|n| n.spec.kinds.iter().cloned().collect::<Vec<_>>()).unwrap_or_default(),
                    "deps": deps,
                    "tags": node.map(|n| n.spec.tags.clone()).unwrap_or_default(),
                    "owners": node.map(|n| n.spec.owners.clone()).unwrap_or_default(),
                    "description": node.and_then(|n| n.spec.description.clone()),
                    "code_version": node.and_then(|n| n.spec.code_version.clone()),
                    "is_source": node.is_some_and(|n| n.is_source),
                    "step": id.map(|i| graph.step_name(i).to_owned()),
                    "checks": checks,
                    "staleness": s.staleness,
                    "stale_reasons": s.reasons,
                })
            })
            .collect();
        return print_json(&serde_json::Value::Array(items));
    }
    let rows: Vec<Vec<String>> = statuses
        .iter()
        .map(|s| {
            let (node, deps, _) = describe(s);
            vec![
                s.key.to_string(),
                node.and_then(|n| n.spec.group.clone())
                    .unwrap_or_else(|| "-".into()),
                node.map(|n| n.spec.kinds.iter().cloned().collect::<Vec<_>>().join(","))
                    .filter(|k| !k.is_empty())
                    .unwrap_or_else(|| "-".into()),
                if deps.is_empty() {
                    "-".into()
                } else {
                    deps.join(",")
                },
                staleness_text(s.staleness).into(),
            ]
        })
        .collect();
    table(&["KEY", "GROUP", "KINDS", "DEPS", "STATUS"], &rows)?;
    Ok(())
}

pub(super) fn status(statuses: &[AssetStatus], json: bool) -> Result<()> {
    if json {
        let value = serde_json::to_value(statuses).map_err(|e| Error::Internal(e.to_string()))?;
        return print_json(&value);
    }
    let rows: Vec<Vec<String>> = statuses
        .iter()
        .map(|s| {
            vec![
                s.key.to_string(),
                staleness_text(s.staleness).into(),
                s.latest
                    .as_ref()
                    .map(|l| format_micros(l.timestamp))
                    .unwrap_or_else(|| "-".into()),
                s.latest
                    .as_ref()
                    .map(|l| l.run_id.clone())
                    .unwrap_or_else(|| "-".into()),
                if s.reasons.is_empty() {
                    "-".into()
                } else {
                    s.reasons.join("; ")
                },
            ]
        })
        .collect();
    table(&["KEY", "STATUS", "LAST MATERIALIZED", "RUN", "WHY"], &rows)?;
    Ok(())
}

fn duration_text(run: &RunRecord) -> String {
    match (run.started_at, run.ended_at) {
        (Some(s), Some(e)) => format!("{:.3}s", (e - s) as f64 / 1e6),
        (Some(_), None) => "running".into(),
        _ => "-".into(),
    }
}

/// A run's job, else its selection, after the command that launched it and with the
/// partition or range it covers.
fn what_ran(r: &RunRecord) -> String {
    let mut text = r.job_name.clone().unwrap_or_else(|| r.selection.clone());
    use crate::tags;
    if let Some(command) = r.tags.get(tags::COMMAND) {
        text = format!("{command}: {text}");
    }
    if let Some(p) = &r.partition_key {
        text.push_str(&format!(" [{p}]"));
    } else if let (Some(a), Some(b)) = (
        r.tags.get(tags::PARTITION_RANGE_START),
        r.tags.get(tags::PARTITION_RANGE_END),
    ) {
        text.push_str(&format!(" [{a}…{b}]"));
    }
    text
}

pub(super) fn runs(runs: &[RunRecord], json: bool) -> Result<()> {
    if json {
        let value = serde_json::to_value(runs).map_err(|e| Error::Internal(e.to_string()))?;
        return print_json(&value);
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.run_id.clone(),
                r.status.to_string(),
                format_micros(r.created_at),
                duration_text(r),
                what_ran(r),
            ]
        })
        .collect();
    table(
        &["RUN", "STATUS", "CREATED", "DURATION", "JOB/SELECTION"],
        &rows,
    )?;
    Ok(())
}

pub(super) fn run_show(run: &RunRecord, events: &[Event], json: bool) -> Result<()> {
    if json {
        return print_json(&json!({ "run": run, "events": events }));
    }
    outln!("run       {}", run.run_id)?;
    outln!("status    {}", run.status)?;
    outln!(
        "selection {}",
        run.job_name
            .clone()
            .unwrap_or_else(|| run.selection.clone())
    )?;
    outln!("created   {}", format_micros(run.created_at))?;
    outln!("duration  {}", duration_text(run))?;
    if let Some(reason) = &run.reason {
        outln!("reason    {reason}")?;
    }
    outln!()?;
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                format_micros(e.timestamp),
                e.data.kind().to_owned(),
                e.step_key.clone().unwrap_or_else(|| "-".into()),
                e.asset_key
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| "-".into()),
                e.data.summary(),
            ]
        })
        .collect();
    table(&["TIME", "EVENT", "STEP", "ASSET", "DETAIL"], &rows)?;
    // What each materialization reported (row counts, a warehouse's job ids and bytes…).
    let reported: Vec<Vec<String>> = events
        .iter()
        .filter_map(|e| match &e.data {
            crate::event::EventData::Materialization(m) => Some((e, m)),
            _ => None,
        })
        .flat_map(|(e, m)| {
            let asset = e
                .asset_key
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_else(|| "-".into());
            m.metadata
                .iter()
                .filter_map(|(k, v)| Some(vec![asset.clone(), k.clone(), metadata_text(v)?]))
                .collect::<Vec<_>>()
        })
        .collect();
    if !reported.is_empty() {
        outln!()?;
        table(&["ASSET", "METADATA", "VALUE"], &reported)?;
    }
    Ok(())
}

/// A metadata value on one line (`None` for a table schema: the UI shows it).
fn metadata_text(v: &crate::metadata::MetadataValue) -> Option<String> {
    match v {
        crate::metadata::MetadataValue::TableSchema(_) => None,
        other => Some(other.text().lines().next().unwrap_or_default().to_owned()),
    }
}

pub(super) fn schedules(graph: &AssetGraph, now: chrono::DateTime<chrono::Utc>) -> Result<()> {
    let mut rows = Vec::new();
    for s in graph.schedules() {
        let tz = s.tz()?;
        let next: Vec<String> = s
            .cron()?
            .after(&now.with_timezone(&tz))
            .take(3)
            .map(|t| {
                t.with_timezone(&chrono::Utc)
                    .format("%Y-%m-%dT%H:%MZ")
                    .to_string()
            })
            .collect();
        rows.push(vec![
            s.name.clone(),
            s.cron_schedule.clone(),
            s.timezone.clone(),
            s.job.clone(),
            next.join(", "),
        ]);
    }
    table(
        &["SCHEDULE", "CRON", "TIMEZONE", "JOB", "NEXT TICKS (UTC)"],
        &rows,
    )?;
    Ok(())
}

pub(super) fn ticks(ticks: &[crate::storage::schedules::TickRecord]) -> Result<()> {
    let rows: Vec<Vec<String>> = ticks
        .iter()
        .map(|t| {
            vec![
                format_micros(t.tick_ts),
                t.instigator.clone(),
                t.status.clone(),
                t.run_id.clone().unwrap_or_else(|| "-".into()),
                t.reason.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(&["TICK", "INSTIGATOR", "STATUS", "RUN", "REASON"], &rows)
}

pub(super) fn run_result(result: &RunResult) -> Result<()> {
    let count = |f: fn(&StepStatus) -> bool| result.steps.values().filter(|s| f(s)).count();
    let succeeded = count(|s| matches!(s, StepStatus::Succeeded));
    let failed = count(|s| matches!(s, StepStatus::Failed(_)));
    let skipped = count(|s| matches!(s, StepStatus::Skipped(_)));
    for (step, status) in &result.steps {
        match status {
            StepStatus::Failed(e) => outln!("FAILED   {step}: {e}")?,
            StepStatus::Skipped(r) => outln!("skipped  {step}: {r}")?,
            StepStatus::Canceled => outln!("canceled {step}")?,
            _ => {}
        }
    }
    outln!(
        "run {} {}: {succeeded} succeeded, {failed} failed, {skipped} skipped",
        result.run_id,
        result.status
    )?;
    Ok(())
}
