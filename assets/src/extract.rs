//! Extract and load: one daily-partitioned asset per Rainbow DB table (`raw/<table>`). A
//! partition is the rows whose `updated_at` falls in that UTC day, written as one Parquet file
//! `raw/<table>/dt=YYYY-MM-DD/<table>.parquet` in the object store (the master dataset).
//!
//! The master dataset is append-only and immutable: extracting a day again that yields the
//! same bytes adds nothing (the file is left as is); a different result for a day already
//! stored is refused with an error naming the file, unless `reprocess` is set.
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
    /// False when an identical file was already there (nothing written).
    pub written: bool,
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

/// Encodes a batch as one Parquet file (deterministic for the same rows).
fn parquet_bytes(batch: &RecordBatch) -> Result<Vec<u8>, AssetsError> {
    let mut out = Vec::new();
    let bad = |e: rainbow_warehouse::datafusion::parquet::errors::ParquetError| {
        AssetsError::Invalid(format!("encoding Parquet: {e}"))
    };
    let mut writer = ArrowWriter::try_new(&mut out, batch.schema(), None).map_err(bad)?;
    writer.write(batch).map_err(bad)?;
    writer.close().map_err(bad)?;
    Ok(out)
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
    let bytes = parquet_bytes(&batch)?;
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
                });
            }
            if !reprocess {
                return Err(AssetsError::Invalid(format!(
                    "{path} is already in the master dataset with different content ({} bytes now, {} stored): the master dataset is immutable; reprocess explicitly to replace it",
                    bytes.len(),
                    existing.len()
                )));
            }
        }
        Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(store_error(e)),
    }
    let size = bytes.len() as u64;
    store
        .put(&location, bytes.into())
        .await
        .map_err(store_error)?;
    Ok(Extracted {
        path,
        rows: batch.num_rows() as u64,
        bytes: size,
        written: true,
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
    /// First day of the partitions.
    pub start: NaiveDate,
    /// Replace files whose content changed (explicit reprocessing).
    pub reprocess: bool,
}

/// One `raw/<table>` asset per Rainbow DB table, daily-partitioned from `settings.start`.
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
                .partitions(PartitionsDefinition::daily(
                    &settings.start.format("%Y-%m-%d").to_string(),
                ))
                .compute(move |ctx: AssetContext| {
                    let settings = settings.clone();
                    let database = database.clone();
                    let table = table.clone();
                    async move {
                        let key = ctx
                            .partition_key()
                            .ok_or("raw assets are daily-partitioned")?;
                        let day = NaiveDate::parse_from_str(key, "%Y-%m-%d")
                            .map_err(|e| format!("partition `{key}`: {e}"))?;
                        let db = database
                            .get_or_try_init(|| rainbow_db::connect(&settings.database_url, 4))
                            .await?;
                        let out = extract_day(
                            db,
                            settings.store.as_ref(),
                            &table,
                            day,
                            settings.reprocess,
                        )
                        .await?;
                        Ok::<_, BoxError>(
                            MaterializeResult::new()
                                .row_count(out.rows)
                                .path(format!(
                                    "{}/{}",
                                    settings.store_url.trim_end_matches('/'),
                                    out.path
                                ))
                                .metadata("bytes", out.bytes as i64)
                                .metadata("written", out.written)
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
