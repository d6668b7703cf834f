//! Schedule and sensor storage: every tick (evaluation) with its outcome, unique per
//! instigator and tick time, and the cursors that let a restarted daemon carry on.

use serde::Serialize;
use sqlx::{AssertSqlSafe, Row};

use super::Storage;
use crate::error::{Error, Result};
use crate::event::{Micros, now_micros};

/// A recorded tick.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TickRecord {
    /// Schedule or sensor name.
    pub instigator: String,
    /// `schedule`, `sensor` or `automation`.
    pub kind: String,
    /// The time the tick is for.
    pub tick_ts: Micros,
    /// `requested`, `skipped` or `failed`.
    pub status: String,
    /// Why (skip reason, error).
    pub reason: Option<String>,
    /// Idempotence key of the run it requested.
    pub run_key: Option<String>,
    /// The run it launched.
    pub run_id: Option<String>,
}

impl Storage {
    /// Records a tick unless one exists for the same instigator and time; returns whether it
    /// was new.
    pub async fn record_tick(&self, tick: &TickRecord) -> Result<bool> {
        let n = sqlx::query(
            "INSERT INTO ticks (instigator, kind, tick_ts, status, reason, run_key, run_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (instigator, tick_ts) DO NOTHING",
        )
        .bind(tick.instigator.clone())
        .bind(tick.kind.clone())
        .bind(tick.tick_ts)
        .bind(tick.status.clone())
        .bind(tick.reason.clone())
        .bind(tick.run_key.clone())
        .bind(tick.run_id.clone())
        .bind(now_micros())
        .execute(self.pool())
        .await
        .map_err(Error::storage(format!("recording a tick of {}", tick.instigator)))?
        .rows_affected();
        Ok(n > 0)
    }

    /// Ticks, newest first (of one instigator if given).
    pub async fn ticks(&self, instigator: Option<&str>, limit: i64) -> Result<Vec<TickRecord>> {
        let base = "SELECT instigator, kind, tick_ts, status, reason, run_key, run_id FROM ticks";
        let rows = match instigator {
            Some(name) => {
                sqlx::query(AssertSqlSafe(format!(
                    "{base} WHERE instigator = $1 ORDER BY tick_ts DESC, id DESC LIMIT $2"
                )))
                .bind(name.to_owned())
                .bind(limit)
                .fetch_all(self.pool())
                .await
            }
            None => {
                sqlx::query(AssertSqlSafe(format!(
                    "{base} ORDER BY tick_ts DESC, id DESC LIMIT $1"
                )))
                .bind(limit)
                .fetch_all(self.pool())
                .await
            }
        }
        .map_err(Error::storage("reading ticks"))?;
        rows.iter()
            .map(|row| {
                let get = |e: sqlx::Error| Error::CorruptStorage {
                    location: "ticks".into(),
                    message: e.to_string(),
                };
                Ok(TickRecord {
                    instigator: row.try_get("instigator").map_err(get)?,
                    kind: row.try_get("kind").map_err(get)?,
                    tick_ts: row.try_get("tick_ts").map_err(get)?,
                    status: row.try_get("status").map_err(get)?,
                    reason: row.try_get("reason").map_err(get)?,
                    run_key: row.try_get("run_key").map_err(get)?,
                    run_id: row.try_get("run_id").map_err(get)?,
                })
            })
            .collect()
    }

    /// The cursor of a schedule or sensor.
    pub async fn cursor(&self, name: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT cursor FROM instigator_state WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await
            .map_err(Error::storage(format!("reading the cursor of {name}")))?;
        row.map(|r| {
            r.try_get::<String, _>(0)
                .map_err(Error::storage("decoding a cursor"))
        })
        .transpose()
    }

    /// Sets the cursor of a schedule or sensor.
    pub async fn set_cursor(&self, name: &str, cursor: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO instigator_state (name, cursor, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(cursor)
        .bind(now_micros())
        .execute(self.pool())
        .await
        .map_err(Error::storage(format!("writing the cursor of {name}")))?;
        Ok(())
    }
}
