//! Backfill storage: backfill records (status, owner, heartbeat) and their units of work —
//! some assets over some partitions, executed as one run — with per-unit status, so progress
//! is queryable and a killed backfill resumes where it stopped.

use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use super::{AnyTx, Storage, chunks, json, parse_json, placeholders};
use crate::error::{Error, Result};
use crate::event::{Micros, now_micros};
use crate::key::AssetKey;

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vm])* $variant),* }

        impl $name {
            /// The stored text.
            pub fn as_str(&self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($text => Ok($name::$variant),)*
                    other => Err(Error::Config {
                        location: stringify!($name).into(),
                        message: format!("unknown value `{other}`; expected one of {}", [$($text),*].join(", ")),
                    }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// The lifecycle of a backfill.
    BackfillStatus {
        /// Created, waiting for a process to run it.
        Requested = "requested",
        /// A process is running it.
        Running = "running",
        /// Every unit is done.
        Completed = "completed",
        /// It ended with failed units.
        Failed = "failed",
        /// Cancel requested; the running process stops it.
        Canceling = "canceling",
        /// Canceled.
        Canceled = "canceled",
    }
);

string_enum!(
    /// The state of one unit of a backfill.
    UnitStatus {
        /// Waiting (for its upstream units, a lease, or a free slot).
        Pending = "pending",
        /// Its run is executing.
        Running = "running",
        /// Its run succeeded.
        Done = "done",
        /// Its run failed.
        Failed = "failed",
        /// Not run because a unit it depends on failed.
        Skipped = "skipped",
    }
);

impl BackfillStatus {
    /// True once nothing will change it again (a resume starts it anew).
    pub fn is_finished(&self) -> bool {
        matches!(
            self,
            BackfillStatus::Completed | BackfillStatus::Failed | BackfillStatus::Canceled
        )
    }
}

/// A stored backfill.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackfillRecord {
    /// Id (UUIDv7).
    pub backfill_id: String,
    /// Status.
    pub status: BackfillStatus,
    /// Selection expression.
    pub selection: String,
    /// The request, as JSON (selection, partitions, options).
    pub request: serde_json::Value,
    /// Created.
    pub created_at: Micros,
    /// Last status change.
    pub updated_at: Micros,
    /// Last heartbeat of the process running it.
    pub heartbeat_at: Option<Micros>,
    /// That process's pid.
    pub pid: Option<i64>,
    /// That process's host.
    pub hostname: Option<String>,
    /// Why it failed or was canceled.
    pub reason: Option<String>,
}

/// A unit of work of a backfill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackfillUnit {
    /// Id within the backfill (0-based, in planning order).
    pub unit_id: i64,
    /// Status.
    pub status: UnitStatus,
    /// Assets it materializes.
    pub assets: Vec<AssetKey>,
    /// Partitions it covers (empty for unpartitioned assets).
    pub partitions: Vec<String>,
    /// Units that must be done first.
    pub deps: Vec<i64>,
    /// Runs started for it.
    pub attempts: i64,
    /// Its latest run.
    pub run_id: Option<String>,
}

/// A change to a unit, written with the run's events.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitUpdate {
    /// Backfill.
    pub backfill_id: String,
    /// Unit.
    pub unit_id: i64,
    /// New status.
    pub status: UnitStatus,
    /// Its run, if one started.
    pub run_id: Option<String>,
    /// Count one more attempt.
    pub add_attempt: bool,
}

/// Unit counts by status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BackfillProgress {
    /// All units.
    pub total: usize,
    /// Waiting.
    pub pending: usize,
    /// Executing.
    pub running: usize,
    /// Succeeded.
    pub done: usize,
    /// Failed.
    pub failed: usize,
    /// Skipped (upstream failed).
    pub skipped: usize,
}

pub(super) async fn apply_unit_updates(tx: &mut AnyTx<'_>, updates: &[UnitUpdate]) -> Result<()> {
    // Merge updates of one unit (status and run of the last, attempts summed), then write
    // several per statement.
    let mut merged: Vec<(UnitUpdate, i64)> = Vec::new();
    let mut index: std::collections::HashMap<(&str, i64), usize> = std::collections::HashMap::new();
    for u in updates {
        let attempts = i64::from(u.add_attempt);
        match index.get(&(u.backfill_id.as_str(), u.unit_id)) {
            Some(&i) => {
                let (m, a) = &mut merged[i];
                m.status = u.status;
                m.run_id = u.run_id.clone().or(m.run_id.take());
                *a += attempts;
            }
            None => {
                index.insert((&u.backfill_id, u.unit_id), merged.len());
                merged.push((u.clone(), attempts));
            }
        }
    }
    let now = now_micros();
    for chunk in chunks(&merged) {
        let sql = format!(
            "UPDATE backfill_units SET status = v.column3, run_id = COALESCE(v.column4, backfill_units.run_id), \
             attempts = backfill_units.attempts + v.column5, updated_at = v.column6 \
             FROM (VALUES {}) AS v \
             WHERE backfill_units.backfill_id = v.column1 AND backfill_units.unit_id = v.column2",
            placeholders(chunk.len(), 6)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for (u, attempts) in chunk {
            q = q
                .bind(u.backfill_id.clone())
                .bind(u.unit_id)
                .bind(u.status.as_str())
                .bind(u.run_id.clone())
                .bind(*attempts)
                .bind(now);
        }
        q.execute(&mut **tx)
            .await
            .map_err(Error::storage("updating backfill units"))?;
    }
    Ok(())
}

const BACKFILL_COLUMNS: &str = "backfill_id, status, selection, request, created_at, updated_at, heartbeat_at, pid, hostname, reason";

fn decode_backfill(row: &AnyRow) -> Result<BackfillRecord> {
    let get = |e: sqlx::Error| Error::CorruptStorage {
        location: "backfills".into(),
        message: e.to_string(),
    };
    let id: String = row.try_get("backfill_id").map_err(get)?;
    let status: String = row.try_get("status").map_err(get)?;
    let request: String = row.try_get("request").map_err(get)?;
    Ok(BackfillRecord {
        status: status.parse()?,
        selection: row.try_get("selection").map_err(get)?,
        request: parse_json(&request, || format!("backfills.request of {id}"))?,
        created_at: row.try_get("created_at").map_err(get)?,
        updated_at: row.try_get("updated_at").map_err(get)?,
        heartbeat_at: row.try_get("heartbeat_at").map_err(get)?,
        pid: row.try_get("pid").map_err(get)?,
        hostname: row.try_get("hostname").map_err(get)?,
        reason: row.try_get("reason").map_err(get)?,
        backfill_id: id,
    })
}

impl Storage {
    /// Stores a new backfill (status `requested`) and its units, in one transaction.
    pub async fn create_backfill(
        &self,
        selection: &str,
        request: &serde_json::Value,
        units: &[BackfillUnit],
    ) -> Result<BackfillRecord> {
        let now = now_micros();
        let record = BackfillRecord {
            backfill_id: uuid::Uuid::now_v7().to_string(),
            status: BackfillStatus::Requested,
            selection: selection.to_owned(),
            request: request.clone(),
            created_at: now,
            updated_at: now,
            heartbeat_at: None,
            pid: None,
            hostname: None,
            reason: None,
        };
        let ctx = "creating a backfill";
        let mut tx = self.pool().begin().await.map_err(Error::storage(ctx))?;
        sqlx::query(
            "INSERT INTO backfills (backfill_id, status, selection, request, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(record.backfill_id.clone())
        .bind(record.status.as_str())
        .bind(record.selection.clone())
        .bind(json(&record.request)?)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(Error::storage(ctx))?;
        for chunk in chunks(units) {
            let sql = format!(
                "INSERT INTO backfill_units (backfill_id, unit_id, status, assets, partitions, deps, attempts, run_id, updated_at) VALUES {}",
                placeholders(chunk.len(), 9)
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for u in chunk {
                q = q
                    .bind(record.backfill_id.clone())
                    .bind(u.unit_id)
                    .bind(u.status.as_str())
                    .bind(json(&u.assets)?)
                    .bind(json(&u.partitions)?)
                    .bind(json(&u.deps)?)
                    .bind(u.attempts)
                    .bind(u.run_id.clone())
                    .bind(now);
            }
            q.execute(&mut *tx).await.map_err(Error::storage(ctx))?;
        }
        tx.commit().await.map_err(Error::storage(ctx))?;
        Ok(record)
    }

    /// The backfill `id`.
    pub async fn get_backfill(&self, id: &str) -> Result<Option<BackfillRecord>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {BACKFILL_COLUMNS} FROM backfills WHERE backfill_id = $1"
        )))
        .bind(id)
        .fetch_optional(self.pool())
        .await
        .map_err(Error::storage(format!("reading backfill {id}")))?;
        row.map(|r| decode_backfill(&r)).transpose()
    }

    /// Backfills, newest first; only those with `status` if given.
    pub async fn list_backfills(
        &self,
        status: Option<BackfillStatus>,
        limit: i64,
    ) -> Result<Vec<BackfillRecord>> {
        let rows = match status {
            Some(s) => {
                sqlx::query(AssertSqlSafe(format!(
                    "SELECT {BACKFILL_COLUMNS} FROM backfills WHERE status = $1 ORDER BY created_at DESC LIMIT $2"
                )))
                .bind(s.as_str())
                .bind(limit)
                .fetch_all(self.pool())
                .await
            }
            None => {
                sqlx::query(AssertSqlSafe(format!(
                    "SELECT {BACKFILL_COLUMNS} FROM backfills ORDER BY created_at DESC LIMIT $1"
                )))
                .bind(limit)
                .fetch_all(self.pool())
                .await
            }
        }
        .map_err(Error::storage("listing backfills"))?;
        rows.iter().map(decode_backfill).collect()
    }

    /// The units of backfill `id`, by unit id.
    pub async fn backfill_units(&self, id: &str) -> Result<Vec<BackfillUnit>> {
        let rows = sqlx::query(
            "SELECT unit_id, status, assets, partitions, deps, attempts, run_id FROM backfill_units \
             WHERE backfill_id = $1 ORDER BY unit_id",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await
        .map_err(Error::storage(format!("reading units of backfill {id}")))?;
        rows.iter()
            .map(|row| {
                let get = |e: sqlx::Error| Error::CorruptStorage {
                    location: "backfill_units".into(),
                    message: e.to_string(),
                };
                let unit_id: i64 = row.try_get("unit_id").map_err(get)?;
                let status: String = row.try_get("status").map_err(get)?;
                let at = || format!("backfill_units {id}/{unit_id}");
                Ok(BackfillUnit {
                    unit_id,
                    status: status.parse()?,
                    assets: parse_json(&row.try_get::<String, _>("assets").map_err(get)?, at)?,
                    partitions: parse_json(
                        &row.try_get::<String, _>("partitions").map_err(get)?,
                        at,
                    )?,
                    deps: parse_json(&row.try_get::<String, _>("deps").map_err(get)?, at)?,
                    attempts: row.try_get("attempts").map_err(get)?,
                    run_id: row.try_get("run_id").map_err(get)?,
                })
            })
            .collect()
    }

    /// Unit counts of backfill `id`.
    pub async fn backfill_progress(&self, id: &str) -> Result<BackfillProgress> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) FROM backfill_units WHERE backfill_id = $1 GROUP BY status",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await
        .map_err(Error::storage(format!("reading progress of backfill {id}")))?;
        let mut p = BackfillProgress::default();
        for row in &rows {
            let status: String = row
                .try_get(0)
                .map_err(Error::storage("decoding progress"))?;
            let n: i64 = row
                .try_get(1)
                .map_err(Error::storage("decoding progress"))?;
            let n = usize::try_from(n).unwrap_or(0);
            p.total += n;
            match status.parse::<UnitStatus>()? {
                UnitStatus::Pending => p.pending += n,
                UnitStatus::Running => p.running += n,
                UnitStatus::Done => p.done += n,
                UnitStatus::Failed => p.failed += n,
                UnitStatus::Skipped => p.skipped += n,
            }
        }
        Ok(p)
    }

    /// Sets a backfill's status (and reason); `from` restricts the change to those statuses.
    /// Returns whether it changed.
    pub async fn set_backfill_status(
        &self,
        id: &str,
        status: BackfillStatus,
        reason: Option<&str>,
        from: &[BackfillStatus],
    ) -> Result<bool> {
        let allowed: Vec<String> = from.iter().map(|s| format!("'{}'", s.as_str())).collect();
        let guard = if allowed.is_empty() {
            String::new()
        } else {
            format!(" AND status IN ({})", allowed.join(", "))
        };
        let n = sqlx::query(AssertSqlSafe(format!(
            "UPDATE backfills SET status = $2, reason = $3, updated_at = $4 WHERE backfill_id = $1{guard}"
        )))
        .bind(id)
        .bind(status.as_str())
        .bind(reason)
        .bind(now_micros())
        .execute(self.pool())
        .await
        .map_err(Error::storage(format!("updating backfill {id}")))?
        .rows_affected();
        Ok(n > 0)
    }

    /// Claims a `requested` backfill for this process (status `running`, owner, heartbeat).
    /// Atomic: of several processes claiming at once, one wins. Returns whether this one did.
    pub async fn claim_backfill(&self, id: &str) -> Result<bool> {
        let now = now_micros();
        let n = sqlx::query(
            "UPDATE backfills SET status = 'running', updated_at = $2, heartbeat_at = $2, pid = $3, hostname = $4, \
             reason = NULL WHERE backfill_id = $1 AND status = 'requested'",
        )
        .bind(id)
        .bind(now)
        .bind(i64::from(std::process::id()))
        .bind(crate::process::hostname())
        .execute(self.pool())
        .await
        .map_err(Error::storage(format!("claiming backfill {id}")))?
        .rows_affected();
        Ok(n > 0)
    }

    /// Records a heartbeat of the process running backfill `id`.
    pub async fn heartbeat_backfill(&self, id: &str) -> Result<()> {
        sqlx::query("UPDATE backfills SET heartbeat_at = $2 WHERE backfill_id = $1")
            .bind(id)
            .bind(now_micros())
            .execute(self.pool())
            .await
            .map_err(Error::storage(format!("heartbeat of backfill {id}")))?;
        Ok(())
    }

    /// Puts every unit of `id` that is not done back to pending (a resume retries failed and
    /// skipped units and picks up units whose process died).
    pub async fn reset_unfinished_units(&self, id: &str) -> Result<u64> {
        let n = sqlx::query(
            "UPDATE backfill_units SET status = 'pending', updated_at = $2 WHERE backfill_id = $1 AND status <> 'done'",
        )
        .bind(id)
        .bind(now_micros())
        .execute(self.pool())
        .await
        .map_err(Error::storage(format!("resetting units of backfill {id}")))?
        .rows_affected();
        Ok(n)
    }

    /// The (asset, partition) pairs materialized by runs of backfill `id` (for a resume: they
    /// are never computed again).
    pub async fn materialized_by_backfill(
        &self,
        id: &str,
    ) -> Result<std::collections::HashSet<(String, String)>> {
        let rows = sqlx::query(
            "SELECT ps.asset_key, ps.partition_key FROM partition_status ps JOIN runs r ON r.run_id = ps.run_id \
             WHERE r.backfill_id = $1 AND ps.status = 'materialized'",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await
        .map_err(Error::storage(format!("reading what backfill {id} materialized")))?;
        let mut out = std::collections::HashSet::with_capacity(rows.len());
        for row in &rows {
            let a: String = row
                .try_get(0)
                .map_err(Error::storage("decoding partition status"))?;
            let p: String = row
                .try_get(1)
                .map_err(Error::storage("decoding partition status"))?;
            out.insert((a, p));
        }
        // Unpartitioned assets: their latest materialization, if a run of the backfill made it.
        let rows = sqlx::query(
            "SELECT al.asset_key FROM asset_latest al JOIN runs r ON r.run_id = al.run_id \
             WHERE r.backfill_id = $1 AND al.partition_key = '' AND al.kind = 'materialization'",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await
        .map_err(Error::storage(format!(
            "reading what backfill {id} materialized"
        )))?;
        for row in &rows {
            let a: String = row
                .try_get(0)
                .map_err(Error::storage("decoding latest materializations"))?;
            out.insert((a, String::new()));
        }
        Ok(out)
    }
}
