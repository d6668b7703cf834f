//! Run monitoring: finds runs whose process died (killed, crashed, machine lost) and marks them
//! failed with a reason, so no run stays `STARTED` forever. A run is orphaned when its process
//! on this host no longer exists, or when its heartbeat is older than the timeout (any host).
//! Already-recorded materializations are never touched.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::RunStatus;
use crate::error::Result;
use crate::event::{Event, EventData, format_micros, now_micros};
use crate::process::{hostname, process_alive, worker_id};
use crate::storage::{RunFilter, Storage};

/// How long a run may go without a heartbeat before it is considered dead.
#[derive(Debug, Clone, Copy)]
pub struct MonitorPolicy {
    /// Heartbeat timeout.
    pub heartbeat_timeout: Duration,
}

impl Default for MonitorPolicy {
    fn default() -> Self {
        MonitorPolicy {
            heartbeat_timeout: Duration::from_secs(120),
        }
    }
}

/// Marks every orphaned `STARTED` run failed; returns the ids it failed.
pub async fn fail_orphaned_runs(storage: &Storage, policy: MonitorPolicy) -> Result<Vec<String>> {
    let host = hostname();
    let now = now_micros();
    let timeout = i64::try_from(policy.heartbeat_timeout.as_micros()).unwrap_or(i64::MAX);
    let started = storage
        .list_runs(&RunFilter {
            status: Some(RunStatus::Started),
            limit: Some(10_000),
            ..Default::default()
        })
        .await?;
    let mut failed = Vec::new();
    for run in started {
        if run.worker_id.as_deref() == Some(worker_id()) {
            // This very process executes it.
            continue;
        }
        let last_beat = run.heartbeat_at.unwrap_or(run.created_at);
        let our_pid = i64::from(std::process::id());
        let reason = match (run.hostname.as_deref(), run.pid) {
            // Same host: the pid tells. A live pid other than ours is a live run, however late
            // its heartbeat (blocking user code can starve it); our own pid with another worker
            // id is a dead process whose pid was reused.
            (Some(h), Some(pid)) if h == host => {
                if pid != our_pid && process_alive(pid) {
                    None
                } else {
                    Some(format!(
                        "the process executing this run (pid {pid} on {h}) is gone; last heartbeat at {}",
                        format_micros(last_beat)
                    ))
                }
            }
            _ if now - last_beat > timeout => Some(format!(
                "no heartbeat since {} (timeout {}s); the process executing it (pid {} on {}) is presumed dead",
                format_micros(last_beat),
                policy.heartbeat_timeout.as_secs(),
                run.pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
                run.hostname.as_deref().unwrap_or("?"),
            )),
            _ => None,
        };
        let Some(reason) = reason else { continue };

        // Steps that started and never finished are failed too, so the event log is complete.
        let mut open: BTreeMap<String, u32> = BTreeMap::new();
        let mut after = 0;
        loop {
            let events = storage.events_for_run(&run.run_id, after, 5_000).await?;
            let Some(last) = events.last() else { break };
            after = last.id;
            for e in &events {
                let Some(step) = &e.step_key else { continue };
                match &e.data {
                    EventData::StepStarted { attempt } => {
                        open.insert(step.clone(), *attempt);
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
        }
        let mut events: Vec<Event> = open
            .into_iter()
            .map(|(step, attempt)| {
                Event::new(
                    &run.run_id,
                    EventData::StepFailed {
                        error: "interrupted: the run's process died while this step was running"
                            .into(),
                        attempt,
                    },
                )
                .step(step)
                .partition(run.partition_key.clone())
            })
            .collect();
        events.push(Event::new(
            &run.run_id,
            EventData::RunFailed {
                reason: reason.clone(),
            },
        ));
        if storage
            .fail_started_run(&run.run_id, &reason, &events)
            .await?
        {
            tracing::warn!(run_id = %run.run_id, "marked orphaned run failed: {reason}");
            failed.push(run.run_id);
        }
    }
    Ok(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_absurd_pid_is_not() {
        assert!(process_alive(i64::from(std::process::id())));
        assert!(!process_alive(i64::from(i32::MAX)));
    }
}
