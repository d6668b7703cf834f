//! The write path: a [`WriteSet`] (new runs, events, run updates, backfill unit updates,
//! lease releases) written in one transaction by [`write_batch_on`] — events with the indexes
//! derived from them (materialization index, latest per asset partition, check results,
//! partition status), many rows per statement.

use super::*;

pub(super) async fn write_events(tx: &mut AnyTx<'_>, events: &[Event]) -> Result<()> {
    let ctx = "writing run events";
    for chunk in chunks(events) {
        let sql = format!(
            "INSERT INTO events (run_id, ts, kind, step_key, asset_key, partition_key, payload) VALUES {}",
            placeholders(chunk.len(), 7)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for e in chunk {
            q = q
                .bind(e.run_id.clone())
                .bind(e.timestamp)
                .bind(e.data.kind())
                .bind(e.step_key.clone())
                .bind(e.asset_key.as_ref().map(ToString::to_string))
                .bind(e.partition_key.clone())
                .bind(json(&e.data)?);
        }
        q.execute(&mut **tx).await.map_err(Error::storage(ctx))?;
    }

    // The materialization index.
    let mats: Vec<(&Event, &Materialization, &'static str)> = events
        .iter()
        .filter_map(|e| match &e.data {
            EventData::Materialization(m) => Some((e, m, "materialization")),
            EventData::Observation(m) => Some((e, m, "observation")),
            _ => None,
        })
        .filter(|(e, _, _)| e.asset_key.is_some())
        .collect();
    // Latest per asset partition: one row per key in a statement (PostgreSQL refuses to update a
    // row twice in one INSERT ... ON CONFLICT), the last event of the batch winning.
    let mut latest: Vec<(&Event, &Materialization, &'static str)> = Vec::with_capacity(mats.len());
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for item in &mats {
        let key = (
            item.0
                .asset_key
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            item.0.partition_key.clone().unwrap_or_default(),
        );
        match seen.get(&key) {
            Some(&i) => latest[i] = *item,
            None => {
                seen.insert(key, latest.len());
                latest.push(*item);
            }
        }
    }
    for chunk in chunks(&latest) {
        // An observation only counts as new data when its data version changed.
        let sql = format!(
            "INSERT INTO asset_latest (asset_key, partition_key, run_id, ts, kind, code_version, data_version, metadata) VALUES {} \
             ON CONFLICT (asset_key, partition_key) DO UPDATE SET run_id = excluded.run_id, ts = excluded.ts, \
             kind = excluded.kind, code_version = excluded.code_version, data_version = excluded.data_version, \
             metadata = excluded.metadata \
             WHERE excluded.ts >= asset_latest.ts AND (excluded.kind = 'materialization' \
             OR asset_latest.data_version IS DISTINCT FROM excluded.data_version)",
            placeholders(chunk.len(), 8)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for (e, m, kind) in chunk {
            q = q
                .bind(e.asset_key.as_ref().map(ToString::to_string))
                .bind(e.partition_key.clone().unwrap_or_default())
                .bind(e.run_id.clone())
                .bind(e.timestamp)
                .bind(*kind)
                .bind(m.code_version.clone())
                .bind(m.data_version.clone())
                .bind(json(&m.metadata)?);
        }
        q.execute(&mut **tx).await.map_err(Error::storage(ctx))?;
    }

    partitions::upsert_status_tx(tx, events).await?;

    let checks: Vec<(&Event, &CheckEvaluation)> = events
        .iter()
        .filter_map(|e| match &e.data {
            EventData::CheckEvaluation(c) if e.asset_key.is_some() => Some((e, c)),
            _ => None,
        })
        .collect();
    for chunk in chunks(&checks) {
        let sql = format!(
            "INSERT INTO check_results (run_id, asset_key, partition_key, check_name, ts, passed, severity, blocking, description, metadata) VALUES {}",
            placeholders(chunk.len(), 10)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for (e, c) in chunk {
            q = q
                .bind(e.run_id.clone())
                .bind(e.asset_key.as_ref().map(ToString::to_string))
                .bind(e.partition_key.clone())
                .bind(c.check_name.clone())
                .bind(e.timestamp)
                .bind(i64::from(c.passed))
                .bind(c.severity.to_string())
                .bind(i64::from(c.blocking))
                .bind(c.description.clone())
                .bind(json(&c.metadata)?);
        }
        q.execute(&mut **tx).await.map_err(Error::storage(ctx))?;
    }
    Ok(())
}

/// Writes events and run updates on `conn` in one transaction.
pub(crate) async fn write_batch_on(conn: &mut sqlx::AnyConnection, set: &WriteSet) -> Result<()> {
    let ctx = "writing run events";
    let mut tx = sqlx::Connection::begin(conn)
        .await
        .map_err(Error::storage(ctx))?;
    insert_runs(&mut tx, &set.new_runs).await?;
    write_events(&mut tx, &set.events).await?;
    apply_run_updates(&mut tx, &set.run_updates).await?;
    backfills::apply_unit_updates(&mut tx, &set.unit_updates).await?;
    partitions::release_leases_tx(&mut tx, &set.lease_releases).await?;
    tx.commit().await.map_err(Error::storage(ctx))
}

/// Everything one transaction writes: new runs, events (with the materialization, partition
/// status and check indexes derived from them), run updates, backfill unit updates and lease
/// releases. The event writer merges many of these into one.
#[derive(Debug, Clone, Default)]
pub struct WriteSet {
    /// Runs to insert.
    pub new_runs: Vec<RunRecord>,
    /// Events to append.
    pub events: Vec<Event>,
    /// Run rows to update.
    pub run_updates: Vec<RunUpdate>,
    /// Backfill units to update.
    pub unit_updates: Vec<backfills::UnitUpdate>,
    /// Partition leases to release.
    pub lease_releases: Vec<partitions::Lease>,
}

impl WriteSet {
    /// Appends another set.
    pub fn extend(&mut self, other: WriteSet) {
        self.new_runs.extend(other.new_runs);
        self.events.extend(other.events);
        self.run_updates.extend(other.run_updates);
        self.unit_updates.extend(other.unit_updates);
        self.lease_releases.extend(other.lease_releases);
    }

    /// Number of rows it writes, roughly (for batching limits).
    pub fn len(&self) -> usize {
        self.new_runs.len()
            + self.events.len()
            + self.run_updates.len()
            + self.unit_updates.len()
            + self.lease_releases.len()
    }

    /// True when it writes nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Binds a run's 16 columns, in [`RUN_COLUMNS`] order.
pub(super) fn bind_run<'q>(q: AnyQuery<'q>, r: &RunRecord) -> Result<AnyQuery<'q>> {
    Ok(q.bind(r.run_id.clone())
        .bind(r.status.as_str())
        .bind(r.job_name.clone())
        .bind(r.selection.clone())
        .bind(r.partition_key.clone())
        .bind(json(&r.tags)?)
        .bind(r.created_at)
        .bind(r.started_at)
        .bind(r.ended_at)
        .bind(r.heartbeat_at)
        .bind(r.pid)
        .bind(r.hostname.clone())
        .bind(r.reason.clone())
        .bind(r.worker_id.clone())
        .bind(r.backfill_id.clone())
        .bind(r.run_key.clone()))
}

async fn insert_runs(tx: &mut AnyTx<'_>, runs: &[RunRecord]) -> Result<()> {
    for chunk in chunks(runs) {
        let sql = format!(
            "INSERT INTO runs ({RUN_COLUMNS}) VALUES {}",
            placeholders(chunk.len(), 16)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for r in chunk {
            q = bind_run(q, r)?;
        }
        q.execute(&mut **tx)
            .await
            .map_err(Error::storage("creating runs"))?;
    }
    Ok(())
}

/// Applies run updates, several per statement (`UPDATE … FROM (VALUES …)`). Updates of one
/// run are merged first, later fields winning; a finished run never changes.
async fn apply_run_updates(tx: &mut AnyTx<'_>, updates: &[RunUpdate]) -> Result<()> {
    let mut merged: Vec<RunUpdate> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for u in updates {
        match index.get(u.run_id.as_str()) {
            Some(&i) => {
                let m = &mut merged[i];
                m.status = u.status.or(m.status);
                m.ended_at = u.ended_at.or(m.ended_at);
                m.heartbeat_at = u.heartbeat_at.or(m.heartbeat_at);
                m.reason = u.reason.clone().or(m.reason.take());
            }
            None => {
                index.insert(&u.run_id, merged.len());
                merged.push(u.clone());
            }
        }
    }
    for chunk in chunks(&merged) {
        let sql = format!(
            "UPDATE runs SET status = COALESCE(v.column2, runs.status), \
             ended_at = COALESCE(v.column3, runs.ended_at), \
             heartbeat_at = COALESCE(v.column4, runs.heartbeat_at), \
             reason = COALESCE(v.column5, runs.reason) \
             FROM (VALUES {}) AS v \
             WHERE runs.run_id = v.column1 AND runs.status NOT IN ('SUCCESS', 'FAILURE', 'CANCELED')",
            placeholders(chunk.len(), 5)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for u in chunk {
            q = q
                .bind(u.run_id.clone())
                .bind(u.status.map(|s| s.as_str()))
                .bind(u.ended_at)
                .bind(u.heartbeat_at)
                .bind(u.reason.clone());
        }
        q.execute(&mut **tx)
            .await
            .map_err(Error::storage("updating runs"))?;
    }
    Ok(())
}
