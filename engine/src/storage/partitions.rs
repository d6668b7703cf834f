//! Partition storage: the latest outcome per asset partition (`partition_status`; an
//! unpartitioned asset's row has the partition key `''`), keys of dynamic partitions
//! definitions, and leases that keep two processes from computing the same asset partition at
//! once.

use std::collections::HashMap;

use sqlx::{AssertSqlSafe, Row};

use super::{AnyTx, Storage, chunks, placeholders, placeholders_from};
use crate::error::{Error, Result};
use crate::event::{Event, EventData, Micros, now_micros};
use crate::key::AssetKey;

pub use crate::partitions::PartitionState;

/// How many of an asset's partitions are in each recorded state (see
/// [`Storage::partition_counts`]); partitions in none of them are missing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct OutcomeCounts {
    /// Latest outcome: materialized.
    pub materialized: usize,
    /// Latest outcome: failed.
    pub failed: usize,
    /// Leased right now (being computed).
    pub in_progress: usize,
}

/// One asset partition held by an owner (a backfill or a run).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lease {
    /// Who holds it.
    pub owner: String,
    /// The asset.
    pub asset_key: String,
    /// The partition (`""` for an unpartitioned asset).
    pub partition_key: String,
}

/// One `partition_status` row to write.
struct StatusRow {
    asset: String,
    partition: String,
    status: &'static str,
    run_id: String,
    ts: Micros,
}

/// Upserts `partition_status` from materialization and asset-failed events (the newest wins).
pub(super) async fn upsert_status_tx(tx: &mut AnyTx<'_>, events: &[Event]) -> Result<()> {
    let mut rows: Vec<StatusRow> = Vec::new();
    // One row per asset partition per statement (PostgreSQL refuses to upsert a row twice).
    let mut index: HashMap<(String, String), usize> = HashMap::new();
    for e in events {
        let Some(asset) = &e.asset_key else { continue };
        // An unpartitioned asset's outcome is stored under the partition key ''.
        let unpartitioned = String::new();
        let (partitions, status): (Vec<&String>, &'static str) = match &e.data {
            EventData::Materialization(_) => (
                vec![e.partition_key.as_ref().unwrap_or(&unpartitioned)],
                "materialized",
            ),
            EventData::AssetFailed { partitions, .. } if partitions.is_empty() => {
                (vec![&unpartitioned], "failed")
            }
            EventData::AssetFailed { partitions, .. } => (partitions.iter().collect(), "failed"),
            _ => continue,
        };
        for partition in partitions {
            let row = StatusRow {
                asset: asset.to_string(),
                partition: partition.clone(),
                status,
                run_id: e.run_id.clone(),
                ts: e.timestamp,
            };
            match index.get(&(row.asset.clone(), row.partition.clone())) {
                Some(&i) => rows[i] = row,
                None => {
                    index.insert((row.asset.clone(), row.partition.clone()), rows.len());
                    rows.push(row);
                }
            }
        }
    }
    for chunk in chunks(&rows) {
        let sql = format!(
            "INSERT INTO partition_status (asset_key, partition_key, status, run_id, ts) VALUES {} \
             ON CONFLICT (asset_key, partition_key) DO UPDATE SET status = excluded.status, \
             run_id = excluded.run_id, ts = excluded.ts WHERE excluded.ts >= partition_status.ts",
            placeholders(chunk.len(), 5)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for r in chunk {
            q = q
                .bind(r.asset.clone())
                .bind(r.partition.clone())
                .bind(r.status)
                .bind(r.run_id.clone())
                .bind(r.ts);
        }
        q.execute(&mut **tx)
            .await
            .map_err(Error::storage("recording partition status"))?;
    }
    Ok(())
}

/// Deadlock or serialization failure: the transaction may simply be tried again.
fn is_retryable(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code == "40P01" || code == "40001")
}

/// Deletes leases, many per statement, in sorted order (see `acquire_lease_groups`).
pub(super) async fn release_leases_tx(tx: &mut AnyTx<'_>, leases: &[Lease]) -> Result<()> {
    let mut leases: Vec<&Lease> = leases.iter().collect();
    leases.sort_by(|a, b| (&a.asset_key, &a.partition_key).cmp(&(&b.asset_key, &b.partition_key)));
    for chunk in chunks(&leases) {
        let sql = format!(
            "DELETE FROM partition_leases WHERE (owner, asset_key, partition_key) IN (VALUES {})",
            placeholders(chunk.len(), 3)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for l in chunk {
            q = q
                .bind(l.owner.clone())
                .bind(l.asset_key.clone())
                .bind(l.partition_key.clone());
        }
        q.execute(&mut **tx)
            .await
            .map_err(Error::storage("releasing partition leases"))?;
    }
    Ok(())
}

impl Storage {
    /// The state of every recorded partition of `asset`, with leased ones `InProgress`.
    /// Partitions absent from the map are missing.
    pub async fn partition_states(
        &self,
        asset: &AssetKey,
    ) -> Result<HashMap<String, PartitionState>> {
        let key = asset.to_string();
        // One row per state with every key joined: decoding ten thousand rows one by one costs
        // far more than splitting one string (string_agg: PostgreSQL, SQLite >= 3.44).
        let rows = sqlx::query(
            "SELECT status, string_agg(partition_key, ',') FROM partition_status \
             WHERE asset_key = $1 GROUP BY status",
        )
        .bind(key.clone())
        .fetch_all(self.pool())
        .await
        .map_err(Error::storage(format!(
            "reading partition status of {asset}"
        )))?;
        let mut out = HashMap::new();
        for row in &rows {
            let status: String = row
                .try_get(0)
                .map_err(Error::storage("decoding partition status"))?;
            let keys: String = row
                .try_get(1)
                .map_err(Error::storage("decoding partition status"))?;
            let state = if status == "failed" {
                PartitionState::Failed
            } else {
                PartitionState::Materialized
            };
            out.extend(keys.split(',').map(|k| (k.to_owned(), state)));
        }
        let leased = sqlx::query(
            "SELECT partition_key FROM partition_leases WHERE asset_key = $1 AND expires_at > $2",
        )
        .bind(key)
        .bind(now_micros())
        .fetch_all(self.pool())
        .await
        .map_err(Error::storage(format!(
            "reading partition leases of {asset}"
        )))?;
        for row in &leased {
            let partition: String = row
                .try_get(0)
                .map_err(Error::storage("decoding partition leases"))?;
            out.insert(partition, PartitionState::InProgress);
        }
        Ok(out)
    }

    /// Every asset's latest outcome counts: `asset key → (materialized, failed)` partitions
    /// (an unpartitioned asset counts as one partition, `''`). One query for the whole
    /// instance: what the lineage page's per-node state and partition mini-bars read.
    pub async fn partition_counts(&self) -> Result<HashMap<String, OutcomeCounts>> {
        let rows = sqlx::query(
            "SELECT asset_key, status, COUNT(*) FROM partition_status GROUP BY asset_key, status",
        )
        .fetch_all(self.pool())
        .await
        .map_err(Error::storage("counting partition outcomes"))?;
        let mut out: HashMap<String, OutcomeCounts> = HashMap::new();
        for row in &rows {
            let asset: String = row
                .try_get(0)
                .map_err(Error::storage("decoding partition outcome counts"))?;
            let status: String = row
                .try_get(1)
                .map_err(Error::storage("decoding partition outcome counts"))?;
            let n: i64 = row
                .try_get(2)
                .map_err(Error::storage("decoding partition outcome counts"))?;
            let n = usize::try_from(n).unwrap_or(0);
            let counts = out.entry(asset).or_default();
            if status == "failed" {
                counts.failed += n;
            } else {
                counts.materialized += n;
            }
        }
        let leased = sqlx::query(
            "SELECT asset_key, COUNT(*) FROM partition_leases WHERE expires_at > $1 GROUP BY asset_key",
        )
        .bind(now_micros())
        .fetch_all(self.pool())
        .await
        .map_err(Error::storage("counting partition leases"))?;
        for row in &leased {
            let asset: String = row
                .try_get(0)
                .map_err(Error::storage("decoding partition lease counts"))?;
            let n: i64 = row
                .try_get(1)
                .map_err(Error::storage("decoding partition lease counts"))?;
            out.entry(asset).or_default().in_progress += usize::try_from(n).unwrap_or(0);
        }
        Ok(out)
    }

    /// The latest outcome of each unpartitioned asset: `asset key → (state, run id, time)`,
    /// `Materialized` or `Failed` (assets never attempted are absent).
    pub async fn unpartitioned_outcomes(
        &self,
    ) -> Result<HashMap<String, (PartitionState, String, Micros)>> {
        let rows = sqlx::query(
            "SELECT asset_key, status, run_id, ts FROM partition_status WHERE partition_key = ''",
        )
        .fetch_all(self.pool())
        .await
        .map_err(Error::storage("reading asset outcomes"))?;
        let mut out = HashMap::with_capacity(rows.len());
        for row in &rows {
            let asset: String = row
                .try_get(0)
                .map_err(Error::storage("decoding asset outcomes"))?;
            let status: String = row
                .try_get(1)
                .map_err(Error::storage("decoding asset outcomes"))?;
            let run_id: String = row
                .try_get(2)
                .map_err(Error::storage("decoding asset outcomes"))?;
            let ts: Micros = row
                .try_get(3)
                .map_err(Error::storage("decoding asset outcomes"))?;
            let state = if status == "failed" {
                PartitionState::Failed
            } else {
                PartitionState::Materialized
            };
            out.insert(asset, (state, run_id, ts));
        }
        Ok(out)
    }

    /// A marker that changes whenever asset state can have changed: the newest event id, the
    /// live leases and the dynamic partition keys. Equal markers mean nothing a reader derives
    /// from events, leases or dynamic partitions changed in between (what the UI caches on).
    pub async fn change_marker(&self) -> Result<(i64, i64, i64, i64)> {
        let row = sqlx::query(
            "SELECT (SELECT COALESCE(MAX(id), 0) FROM events), \
             (SELECT COUNT(*) FROM partition_leases WHERE expires_at > $1), \
             (SELECT COALESCE(MAX(expires_at), 0) FROM partition_leases WHERE expires_at > $1), \
             (SELECT COUNT(*) FROM dynamic_partitions)",
        )
        .bind(now_micros())
        .fetch_one(self.pool())
        .await
        .map_err(Error::storage("reading the change marker"))?;
        let get = |i: usize| -> Result<i64> {
            row.try_get::<i64, _>(i)
                .map_err(Error::storage("decoding the change marker"))
        };
        Ok((get(0)?, get(1)?, get(2)?, get(3)?))
    }

    /// Adds keys to the dynamic partitions definition `name` (existing keys are kept).
    pub async fn add_dynamic_partitions(&self, name: &str, keys: &[String]) -> Result<()> {
        for key in keys {
            if key.is_empty() || key.contains('|') || key.contains(',') {
                return Err(Error::Config {
                    location: format!("dynamic partitions `{name}`"),
                    message: format!("partition key `{key}` is empty or contains `|` or `,`"),
                });
            }
        }
        let now = now_micros();
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(Error::storage("adding dynamic partitions"))?;
        for chunk in chunks(keys) {
            let sql = format!(
                "INSERT INTO dynamic_partitions (name, partition_key, added_at) VALUES {} ON CONFLICT DO NOTHING",
                placeholders(chunk.len(), 3)
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for k in chunk {
                q = q.bind(name.to_owned()).bind(k.clone()).bind(now);
            }
            q.execute(&mut *tx)
                .await
                .map_err(Error::storage("adding dynamic partitions"))?;
        }
        tx.commit()
            .await
            .map_err(Error::storage("adding dynamic partitions"))
    }

    /// Removes a key from a dynamic partitions definition.
    pub async fn delete_dynamic_partition(&self, name: &str, key: &str) -> Result<bool> {
        let n =
            sqlx::query("DELETE FROM dynamic_partitions WHERE name = $1 AND partition_key = $2")
                .bind(name)
                .bind(key)
                .execute(self.pool())
                .await
                .map_err(Error::storage("deleting a dynamic partition"))?
                .rows_affected();
        Ok(n > 0)
    }

    /// Every dynamic partitions definition's keys, in the order they were added.
    pub async fn dynamic_partitions(&self) -> Result<HashMap<String, Vec<String>>> {
        let rows = sqlx::query(
            "SELECT name, partition_key FROM dynamic_partitions ORDER BY added_at, partition_key",
        )
        .fetch_all(self.pool())
        .await
        .map_err(Error::storage("reading dynamic partitions"))?;
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        for row in &rows {
            let name: String = row
                .try_get(0)
                .map_err(Error::storage("decoding dynamic partitions"))?;
            let key: String = row
                .try_get(1)
                .map_err(Error::storage("decoding dynamic partitions"))?;
            out.entry(name).or_default().push(key);
        }
        Ok(out)
    }

    /// Takes every lease in `leases` for `ttl`, or none of them: a lease held by another owner
    /// that has not expired blocks. Returns whether it took them.
    pub async fn acquire_leases(&self, leases: &[Lease], ttl: std::time::Duration) -> Result<bool> {
        let got = self.acquire_lease_groups(&[leases.to_vec()], ttl).await?;
        Ok(got.first().copied().unwrap_or(false))
    }

    /// Takes leases for several groups at once, each group all-or-nothing, in one transaction:
    /// returns, per group, whether it got every lease. Partial groups are given back.
    pub async fn acquire_lease_groups(
        &self,
        groups: &[Vec<Lease>],
        ttl: std::time::Duration,
    ) -> Result<Vec<bool>> {
        // Deadlocks are possible on PostgreSQL when two processes upsert overlapping leases;
        // rows are locked in sorted order to avoid them, and a deadlock victim retries.
        let mut attempt = 0;
        loop {
            match self.try_acquire_lease_groups(groups, ttl).await {
                Err(Error::Storage { source, context }) if attempt < 5 && is_retryable(&source) => {
                    attempt += 1;
                    tracing::debug!("retrying lease acquisition after {context}: {source}");
                    tokio::time::sleep(std::time::Duration::from_millis(10 * attempt)).await;
                }
                other => return other,
            }
        }
    }

    async fn try_acquire_lease_groups(
        &self,
        groups: &[Vec<Lease>],
        ttl: std::time::Duration,
    ) -> Result<Vec<bool>> {
        let mut all: Vec<&Lease> = groups.iter().flatten().collect();
        all.sort_by(|a, b| (&a.asset_key, &a.partition_key).cmp(&(&b.asset_key, &b.partition_key)));
        if all.is_empty() {
            return Ok(vec![true; groups.len()]);
        }
        let now = now_micros();
        let expires = now + i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX / 2);
        let ctx = "acquiring partition leases";
        let mut tx = self.pool().begin().await.map_err(Error::storage(ctx))?;
        let mut taken: std::collections::HashSet<(String, String)> =
            std::collections::HashSet::new();
        for chunk in chunks(&all) {
            let sql = format!(
                "INSERT INTO partition_leases (owner, asset_key, partition_key, expires_at) VALUES {} \
                 ON CONFLICT (asset_key, partition_key) DO UPDATE SET owner = excluded.owner, \
                 expires_at = excluded.expires_at \
                 WHERE partition_leases.owner = excluded.owner OR partition_leases.expires_at <= $1 \
                 RETURNING asset_key, partition_key",
                placeholders_from(chunk.len(), 4, 2)
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(now);
            for l in chunk {
                q = q
                    .bind(l.owner.clone())
                    .bind(l.asset_key.clone())
                    .bind(l.partition_key.clone())
                    .bind(expires);
            }
            for row in q.fetch_all(&mut *tx).await.map_err(Error::storage(ctx))? {
                let a: String = row.try_get(0).map_err(Error::storage(ctx))?;
                let p: String = row.try_get(1).map_err(Error::storage(ctx))?;
                taken.insert((a, p));
            }
        }
        let got: Vec<bool> = groups
            .iter()
            .map(|g| {
                g.iter()
                    .all(|l| taken.contains(&(l.asset_key.clone(), l.partition_key.clone())))
            })
            .collect();
        let give_back: Vec<Lease> = groups
            .iter()
            .zip(&got)
            .filter(|(_, ok)| !**ok)
            .flat_map(|(g, _)| {
                g.iter()
                    .filter(|l| taken.contains(&(l.asset_key.clone(), l.partition_key.clone())))
                    .cloned()
            })
            .collect();
        release_leases_tx(&mut tx, &give_back).await?;
        tx.commit().await.map_err(Error::storage(ctx))?;
        Ok(got)
    }

    /// Extends every lease of `owner` by `ttl` from now.
    pub async fn renew_leases(&self, owner: &str, ttl: std::time::Duration) -> Result<()> {
        let expires = now_micros() + i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX / 2);
        sqlx::query("UPDATE partition_leases SET expires_at = $2 WHERE owner = $1")
            .bind(owner)
            .bind(expires)
            .execute(self.pool())
            .await
            .map_err(Error::storage("renewing partition leases"))?;
        Ok(())
    }

    /// Releases leases.
    pub async fn release_leases(&self, leases: &[Lease]) -> Result<()> {
        self.write(&super::WriteSet {
            lease_releases: leases.to_vec(),
            ..super::WriteSet::default()
        })
        .await
    }
}
