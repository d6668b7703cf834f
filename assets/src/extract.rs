//! Extract and load: one daily-partitioned asset per Rainbow DB table (`raw/<table>`). A
//! partition is the rows whose `updated_at` falls in that UTC day, written as one Parquet file
//! `raw/<table>/dt=YYYY-MM-DD/<table>.parquet` in the object store (the master dataset).
//!
//! The master dataset is append-only and immutable: extracting a day again adds nothing (the
//! file is left as is) when every row read now is already in the stored file — rows updated
//! again on a later day have left the day's query and live in that later day's file. Rows
//! that are not in the stored file (a late write into a closed day) are refused with an error
//! naming the file, unless `reprocess` is set, which replaces the file with what the source
//! holds now.
//! Columns and types come from the Rainbow DB migration ([`rainbow_db::source::tables`]):
//! BIGINT -> INT64, TEXT -> STRING, DOUBLE PRECISION -> FLOAT64 (money stays integer minor
//! units, times stay microseconds since the epoch).

use std::sync::Arc;

use chrono::{NaiveDate, NaiveTime};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};
use rainbow_db::Database;
use rainbow_db::source::{ColumnKind, TableDef};
use rainbow_engine::prelude::*;
use rainbow_warehouse::datafusion::arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, StringBuilder,
};
use rainbow_warehouse::datafusion::arrow::datatypes::{DataType, Field, Schema};
use rainbow_warehouse::datafusion::arrow::record_batch::RecordBatch;
use rainbow_warehouse::datafusion::parquet::arrow::ArrowWriter;
use sqlx::Row;

use crate::AssetsError;

/// What one extract wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// Object path in the store.
    pub path: String,
    /// Rows in the file.
    pub rows: u64,
    /// File size.
    pub bytes: u64,
    /// False when the stored file already held every row (nothing written).
    pub written: bool,
    /// Rows of the stored file the source no longer has in this day (updated again later).
    pub superseded: u64,
}

/// The object path of a table's day.
pub fn partition_path(table: &str, day: NaiveDate) -> String {
    format!("raw/{table}/dt={}/{table}.parquet", day.format("%Y-%m-%d"))
}

fn arrow_schema(table: &TableDef) -> Arc<Schema> {
    Arc::new(Schema::new(
        table
            .columns
            .iter()
            .map(|c| {
                let t = match c.kind {
                    ColumnKind::Int => DataType::Int64,
                    ColumnKind::Text => DataType::Utf8,
                    ColumnKind::Double => DataType::Float64,
                };
                Field::new(&c.name, t, c.nullable)
            })
            .collect::<Vec<_>>(),
    ))
}

fn sql_error(context: String) -> impl FnOnce(sqlx::Error) -> AssetsError {
    move |source| AssetsError::Sql { context, source }
}

fn day_micros(day: NaiveDate) -> i64 {
    day.and_time(NaiveTime::MIN).and_utc().timestamp_micros()
}

/// Reads a table's rows updated during `day` into one record batch (ordered by id).
pub async fn read_day(
    db: &Database,
    table: &TableDef,
    day: NaiveDate,
) -> Result<RecordBatch, AssetsError> {
    let columns: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
    let sql = format!(
        "SELECT {} FROM {} WHERE updated_at >= $1 AND updated_at < $2 ORDER BY id",
        columns.join(", "),
        table.name
    );
    let start = day_micros(day);
    let end = day_micros(day + chrono::Duration::days(1));
    // Table and column names come from the migration, never from input.
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(start)
        .bind(end)
        .fetch_all(&db.pool)
        .await
        .map_err(sql_error(format!("reading {} for {day}", table.name)))?;
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len());
    for (i, column) in table.columns.iter().enumerate() {
        let context = || format!("reading {}.{} for {day}", table.name, column.name);
        arrays.push(match column.kind {
            ColumnKind::Int => {
                let mut b = Int64Builder::with_capacity(rows.len());
                for r in &rows {
                    b.append_option(
                        r.try_get::<Option<i64>, _>(i)
                            .map_err(sql_error(context()))?,
                    );
                }
                Arc::new(b.finish())
            }
            ColumnKind::Double => {
                let mut b = Float64Builder::with_capacity(rows.len());
                for r in &rows {
                    b.append_option(
                        r.try_get::<Option<f64>, _>(i)
                            .map_err(sql_error(context()))?,
                    );
                }
                Arc::new(b.finish())
            }
            ColumnKind::Text => {
                let mut b = StringBuilder::new();
                for r in &rows {
                    b.append_option(
                        r.try_get::<Option<String>, _>(i)
                            .map_err(sql_error(context()))?,
                    );
                }
                Arc::new(b.finish())
            }
        });
    }
    RecordBatch::try_new(arrow_schema(table), arrays)
        .map_err(|e| AssetsError::Invalid(format!("{} for {day}: {e}", table.name)))
}

/// Encodes batches as one Parquet file (deterministic for the same rows).
pub(crate) fn parquet_bytes(
    schema: Arc<Schema>,
    batches: &[RecordBatch],
) -> Result<Vec<u8>, AssetsError> {
    let mut out = Vec::new();
    let bad = |e: rainbow_warehouse::datafusion::parquet::errors::ParquetError| {
        AssetsError::Invalid(format!("encoding Parquet: {e}"))
    };
    let mut writer = ArrowWriter::try_new(&mut out, schema, None).map_err(bad)?;
    for batch in batches {
        writer.write(batch).map_err(bad)?;
    }
    writer.close().map_err(bad)?;
    Ok(out)
}

/// Decodes a stored Parquet file.
fn decode(bytes: bytes::Bytes, path: &str) -> Result<Vec<RecordBatch>, AssetsError> {
    use rainbow_warehouse::datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let bad = |e: &dyn std::fmt::Display| AssetsError::Invalid(format!("reading {path}: {e}"));
    ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| bad(&e))?
        .build()
        .map_err(|e| bad(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))
}

/// Rows of `now` missing from `stored`, and rows of `stored` missing from `now` (row
/// equality over every column).
fn row_difference(
    now: &RecordBatch,
    stored: &[RecordBatch],
    path: &str,
) -> Result<(u64, u64), AssetsError> {
    use rainbow_warehouse::datafusion::arrow::row::{RowConverter, SortField};
    use std::collections::HashSet;
    let bad = |e: &dyn std::fmt::Display| AssetsError::Invalid(format!("comparing {path}: {e}"));
    let fields = now
        .schema()
        .fields()
        .iter()
        .map(|f| SortField::new(f.data_type().clone()))
        .collect();
    let converter = RowConverter::new(fields).map_err(|e| bad(&e))?;
    let mut stored_rows: HashSet<Vec<u8>> = HashSet::new();
    for b in stored {
        if b.schema().fields() != now.schema().fields() {
            return Err(AssetsError::Invalid(format!(
                "{path} was written with another schema than the Rainbow DB's now; reprocess it explicitly"
            )));
        }
        let rows = converter
            .convert_columns(b.columns())
            .map_err(|e| bad(&e))?;
        stored_rows.extend(rows.iter().map(|r| r.as_ref().to_vec()));
    }
    let rows = converter
        .convert_columns(now.columns())
        .map_err(|e| bad(&e))?;
    let now_rows: HashSet<Vec<u8>> = rows.iter().map(|r| r.as_ref().to_vec()).collect();
    let new = now_rows.difference(&stored_rows).count() as u64;
    let gone = stored_rows.difference(&now_rows).count() as u64;
    Ok((new, gone))
}

/// Extracts one table's day into the master dataset (see the module docs for immutability).
pub async fn extract_day(
    db: &Database,
    store: &dyn ObjectStore,
    table: &TableDef,
    day: NaiveDate,
    reprocess: bool,
) -> Result<Extracted, AssetsError> {
    let batch = read_day(db, table, day).await?;
    let bytes = parquet_bytes(batch.schema(), std::slice::from_ref(&batch))?;
    let path = partition_path(&table.name, day);
    let location = StorePath::from(path.as_str());
    let store_error = |e: object_store::Error| AssetsError::Invalid(format!("{path}: {e}"));
    match store.get(&location).await {
        Ok(existing) => {
            let existing = existing.bytes().await.map_err(store_error)?;
            if existing.as_ref() == bytes.as_slice() {
                return Ok(Extracted {
                    path,
                    rows: batch.num_rows() as u64,
                    bytes: bytes.len() as u64,
                    written: false,
                    superseded: 0,
                });
            }
            let size = existing.len() as u64;
            let stored = decode(existing, &path)?;
            let (new, superseded) = row_difference(&batch, &stored, &path)?;
            if new == 0 && !reprocess {
                return Ok(Extracted {
                    rows: stored.iter().map(|b| b.num_rows() as u64).sum(),
                    path,
                    bytes: size,
                    written: false,
                    superseded,
                });
            }
            if !reprocess {
                return Err(AssetsError::Invalid(format!(
                    "{path} is already in the master dataset and the source now has {new} row(s) for that day that the file lacks: the master dataset is immutable; reprocess explicitly to replace it"
                )));
            }
        }
        Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(store_error(e)),
    }
    let size = bytes.len() as u64;
    // A new day is written only if absent (S3 `If-None-Match: *`, GCS `ifGenerationMatch=0`, an
    // exclusive create locally): two extracts of the same day racing cannot both write, and
    // the loser's rows are never silently replaced. Only reprocessing overwrites.
    let mode = if reprocess {
        object_store::PutMode::Overwrite
    } else {
        object_store::PutMode::Create
    };
    match store.put_opts(&location, bytes.into(), mode.into()).await {
        Ok(_) => {}
        Err(object_store::Error::AlreadyExists { .. }) => {
            return Err(AssetsError::Invalid(format!(
                "{path} was written by another extract while this one ran: the master dataset is immutable; run again to compare with what was stored"
            )));
        }
        Err(e) => return Err(store_error(e)),
    }
    Ok(Extracted {
        path,
        rows: batch.num_rows() as u64,
        bytes: size,
        written: true,
        superseded: 0,
    })
}

/// Where the extract reads and writes.
#[derive(Clone)]
pub struct ExtractSettings {
    /// The Rainbow DB URL (`sqlite://…` or `postgres://…`).
    pub database_url: String,
    /// The master dataset's object store.
    pub store: Arc<dyn ObjectStore>,
    /// A display name for the store (a path or URL), for metadata.
    pub store_url: String,
    /// The daily partitions (e.g. `PartitionsDefinition::daily("2026-01-01")`).
    pub partitions: PartitionsDefinition,
    /// Replace files whose content changed (explicit reprocessing).
    pub reprocess: bool,
}

/// One `raw/<table>` asset per Rainbow DB table, daily-partitioned by `settings.partitions`
/// (a backfill runs each table's whole range in one run).
pub fn extract_assets(settings: ExtractSettings) -> Vec<AssetDefinition> {
    let database: Arc<tokio::sync::OnceCell<Database>> = Arc::new(tokio::sync::OnceCell::new());
    rainbow_db::source::tables()
        .into_iter()
        .map(|table| {
            let settings = settings.clone();
            let database = database.clone();
            let table = Arc::new(table);
            AssetSpec::new(AssetKey::new(["raw", table.name.as_str()]))
                .group("raw")
                .kind("parquet")
                .description(format!(
                    "Rows of the Rainbow DB table `{}` updated during each day, as Parquet",
                    table.name
                ))
                .partitions(settings.partitions.clone())
                .backfill_policy(BackfillPolicy::SingleRun)
                .compute(move |ctx: AssetContext| {
                    let settings = settings.clone();
                    let database = database.clone();
                    let table = table.clone();
                    async move {
                        if ctx.partition_keys().is_empty() {
                            return Err("raw assets are daily-partitioned: give a partition".into());
                        }
                        let db = database
                            .get_or_try_init(|| rainbow_db::connect(&settings.database_url, 4))
                            .await?;
                        // A single-run backfill hands over a range: one file per day.
                        let (mut rows, mut bytes, mut written, mut superseded) = (0, 0, 0, 0);
                        let mut last = String::new();
                        for key in ctx.partition_keys() {
                            let day = NaiveDate::parse_from_str(key, "%Y-%m-%d")
                                .map_err(|e| format!("partition `{key}`: {e}"))?;
                            let out = rainbow_warehouse::instrument::work(extract_day(
                                db,
                                settings.store.as_ref(),
                                &table,
                                day,
                                settings.reprocess,
                            ))
                            .await?;
                            rows += out.rows;
                            bytes += out.bytes;
                            written += u64::from(out.written);
                            superseded += out.superseded;
                            last = out.path;
                        }
                        Ok::<_, BoxError>(
                            MaterializeResult::new()
                                .row_count(rows)
                                .path(format!(
                                    "{}/{}",
                                    settings.store_url.trim_end_matches('/'),
                                    last
                                ))
                                .metadata("bytes", bytes as i64)
                                .metadata("files_written", written as i64)
                                .metadata("superseded_rows", superseded as i64)
                                .metadata(
                                    "schema",
                                    table
                                        .columns
                                        .iter()
                                        .map(|c| format!("{} {:?}", c.name, c.kind))
                                        .collect::<Vec<_>>()
                                        .join(", "),
                                ),
                        )
                    }
                })
        })
        .collect()
}
