//! Writing tables, each write one Delta commit: replace or append a DataFrame
//! ([`Warehouse::write_table`], [`Warehouse::append`] with columns aligned by name), merge on
//! keys ([`Warehouse::merge`]), delete+insert by key ([`Warehouse::delete_insert`]); values are
//! made storable first (view types to plain Arrow types).

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::JoinType;
use datafusion::logical_expr::{cast, ident};
use datafusion::prelude::DataFrame;
use deltalake::DeltaTable;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::operations::write::SchemaMode;
use deltalake::protocol::SaveMode;

use crate::catalog::RelationKind;
use crate::error::{Result, WarehouseError};
use crate::parallel_write;
use crate::warehouse::{Warehouse, WriteMode};

/// Rows per Parquet row group of a table write (DuckDB's row group size). Delta Lake's
/// default is the Parquet writer's, 1,048,576 rows: a table the size of the demo's fact
/// table (804,000 rows) was one row group, which DataFusion reads on one core only (issue 17:
/// every scan of `fact_sales` and `dim_products` had one idle core).
pub const ROW_GROUP_ROWS: usize = 122_880;

/// Bytes after which a table write starts a new Parquet file. The writer holds a file in
/// memory until it is flushed: Delta Lake's default (100 MiB) kept the whole demo fact table
/// (70 MB) in memory while it was being computed.
pub const TARGET_FILE_BYTES: u64 = 32 << 20;

/// Bytes of a column chunk's dictionary before the Parquet writer falls back to plain
/// encoding (the writer's default is 1 MiB). A high-cardinality string column — the MD5
/// surrogate keys of every dimension — was interned value by value until 1 MiB of distinct
/// values: about a quarter of each row group hashed and compared for nothing (issue 17:
/// 256 KiB took the demo's SQL project from 2.05 s to 1.90 s; 64 KiB measured the same).
/// Low-cardinality columns (dates, payment methods, promotion keys) stay dictionary-encoded.
pub const DICTIONARY_PAGE_BYTES: usize = 256 * 1024;

/// The Parquet settings of table writes: Delta Lake's (Snappy), row groups of
/// [`ROW_GROUP_ROWS`], dictionaries up to [`DICTIONARY_PAGE_BYTES`].
fn writer_properties() -> datafusion::parquet::file::properties::WriterProperties {
    datafusion::parquet::file::properties::WriterProperties::builder()
        .set_created_by(format!("rainbow {}", env!("CARGO_PKG_VERSION")))
        .set_compression(datafusion::parquet::basic::Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_dictionary_page_size_limit(DICTIONARY_PAGE_BYTES)
        .build()
}

impl Warehouse {
    /// Writes a DataFrame to the Delta table `schema.name` in one commit; returns the number of
    /// rows written (from the commit's metrics; `None` if Delta did not record them).
    pub async fn write_table(
        &self,
        schema: &str,
        name: &str,
        df: DataFrame,
        mode: WriteMode,
    ) -> Result<Option<u64>> {
        self.write_table_with(schema, name, df, mode, Vec::new())
            .await
    }

    /// Appends `df` to `schema.name` (created if missing) in one Delta commit that also records
    /// `transactions` — (application id, version) pairs, Delta's application transactions: a
    /// stream sink's next offset per source partition lands atomically with the rows, so a
    /// restart resumes exactly after what was written ([`Warehouse::transaction_version`]).
    pub async fn append_with_transactions(
        &self,
        schema: &str,
        name: &str,
        df: DataFrame,
        transactions: Vec<(String, i64)>,
    ) -> Result<Option<u64>> {
        self.write_table_with(schema, name, df, WriteMode::Append, transactions)
            .await
    }

    /// The version last committed for the application id `app_id` on `schema.name` (Delta's
    /// application transactions); `None` when the table or the id has none.
    pub async fn transaction_version(
        &self,
        schema: &str,
        name: &str,
        app_id: &str,
    ) -> Result<Option<i64>> {
        let what = format!("reading the transactions of {schema}.{name}");
        if !matches!(self.kind(schema, name), Some(RelationKind::Table)) {
            return Ok(None);
        }
        let url = self.table_url(schema, name)?;
        let mut table = DeltaTable::try_from_url(url)
            .await
            .map_err(WarehouseError::delta(&what))?;
        table.load().await.map_err(WarehouseError::delta(&what))?;
        let log_store = table.log_store();
        let state = table.snapshot().map_err(WarehouseError::delta(&what))?;
        state
            .transaction_version(log_store.as_ref(), app_id)
            .await
            .map_err(WarehouseError::delta(&what))
    }

    async fn write_table_with(
        &self,
        schema: &str,
        name: &str,
        df: DataFrame,
        mode: WriteMode,
        transactions: Vec<(String, i64)>,
    ) -> Result<Option<u64>> {
        let what = format!("writing {schema}.{name}");
        // A new table's columns are all NULLABLE, as BigQuery's CREATE TABLE … AS makes them:
        // a literal column that happened to hold no NULL must not refuse the next merge's.
        let df = storable(df, matches!(mode, WriteMode::Replace))
            .map_err(WarehouseError::datafusion(&what))?;
        if matches!(
            self.kind(schema, name),
            Some(RelationKind::View | RelationKind::External)
        ) {
            self.drop_relation(schema, name).await?;
        }
        let url = self.table_url(schema, name)?;
        if let Ok(dir) = url.to_file_path() {
            std::fs::create_dir_all(&dir)
                .map_err(|source| WarehouseError::Io { path: dir, source })?;
        }
        let table = DeltaTable::try_from_url(url)
            .await
            .map_err(WarehouseError::delta(&what))?;
        let properties = CommitProperties::default().with_application_transactions(
            transactions
                .into_iter()
                .map(|(app, version)| deltalake::kernel::Transaction::new(app, version))
                .collect(),
        );
        let normalized = deltalake::kernel::normalize_for_delta(df.schema().inner());
        if Arc::ptr_eq(&normalized, df.schema().inner())
            && let Some(target) = parallel_write::eligible(&table, &normalized)
        {
            let rows = parallel_write::write(
                &table,
                target,
                df,
                normalized,
                mode,
                name,
                writer_properties(),
                TARGET_FILE_BYTES,
                properties,
                &what,
            )
            .await?;
            self.refresh(schema, name);
            return Ok(Some(rows));
        }
        let (save, schema_mode) = match mode {
            WriteMode::Replace => (SaveMode::Overwrite, Some(SchemaMode::Overwrite)),
            WriteMode::Append => (SaveMode::Append, None),
        };
        let mut builder = table
            .write(Vec::new())
            .with_writer_properties(writer_properties())
            .with_target_file_size(std::num::NonZeroU64::new(TARGET_FILE_BYTES))
            .with_input_plan(df.logical_plan().clone())
            .with_session_state(Arc::new(self.context().state()))
            .with_save_mode(save)
            .with_table_name(name);
        if let Some(m) = schema_mode {
            builder = builder.with_schema_mode(m);
        }
        builder = builder.with_commit_properties(properties);
        let table = builder.await.map_err(WarehouseError::delta(&what))?;
        self.refresh(schema, name);
        Ok(rows_added(&table).await)
    }

    /// Appends `source`'s rows to `schema.name`, columns matched by name (one commit).
    pub async fn append(&self, schema: &str, name: &str, source: DataFrame) -> Result<()> {
        let target = self
            .context()
            .table(datafusion::common::TableReference::partial(schema, name))
            .await
            .map_err(|_| self.unknown(&format!("{schema}.{name}")))?;
        let aligned = align(source, &target, &format!("{schema}.{name}"))?;
        self.write_table(schema, name, aligned, WriteMode::Append)
            .await?;
        Ok(())
    }

    /// A DataFrame over rows already in memory (keeps `schema` even with no rows).
    pub fn frame(&self, schema: SchemaRef, batches: Vec<RecordBatch>) -> Result<DataFrame> {
        // Executed batches may differ from the plan's schema in nullability or string layout.
        let schema = batches.first().map(RecordBatch::schema).unwrap_or(schema);
        let table = datafusion::datasource::MemTable::try_new(schema, vec![batches])
            .map_err(WarehouseError::datafusion("in-memory rows"))?;
        self.context()
            .read_table(Arc::new(table))
            .map_err(WarehouseError::datafusion("in-memory rows"))
    }

    /// Upserts `source` into `schema.name` on `keys`: matched rows are updated, new rows
    /// inserted (one Delta commit). Columns of the target missing from the source keep
    /// their values; source columns missing from the target are an error unless `add_columns`.
    pub async fn merge(
        &self,
        schema: &str,
        name: &str,
        source: DataFrame,
        keys: &[String],
        add_columns: bool,
    ) -> Result<()> {
        self.merge_updating(schema, name, source, keys, add_columns, None)
            .await
    }

    /// [`Warehouse::merge`] updating only `update` in matched rows (dbt's
    /// `merge_update_columns`; `None`: every column of the source); inserts set every column.
    /// Errors: an `update` column the source lacks.
    pub async fn merge_updating(
        &self,
        schema: &str,
        name: &str,
        source: DataFrame,
        keys: &[String],
        add_columns: bool,
        update: Option<&[String]>,
    ) -> Result<()> {
        let what = format!("merging into {schema}.{name}");
        let source = storable(source, false).map_err(WarehouseError::datafusion(&what))?;
        let table = self.delta(schema, name).await?;
        let target = self.schema_of(schema, name).await?;
        let columns: Vec<String> = source
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|c| add_columns || target.field_with_name(c).is_ok())
            .collect();
        for key in keys {
            if !columns.contains(key) {
                return Err(WarehouseError::Config {
                    node: format!("{schema}.{name}"),
                    key: "unique_key".into(),
                    message: format!("`{key}` is not a column of both the model and the table"),
                });
            }
        }
        if let Some(update) = update
            && let Some(missing) = update.iter().find(|c| !columns.contains(c))
        {
            return Err(WarehouseError::Config {
                node: format!("{schema}.{name}"),
                key: "merge_update_columns".into(),
                message: format!("`{missing}` is not a column of both the model and the table"),
            });
        }
        let updated: Vec<&String> = match update {
            Some(u) => columns.iter().filter(|c| u.contains(c)).collect(),
            None => columns.iter().collect(),
        };
        let quote = |c: &str| format!("\"{}\"", c.replace('"', "\"\""));
        let predicate = keys
            .iter()
            .map(|k| format!("target.{} = source.{}", quote(k), quote(k)))
            .collect::<Vec<_>>()
            .join(" AND ");
        let builder = table
            .merge(source, predicate)
            .with_source_alias("source")
            .with_target_alias("target")
            .with_merge_schema(add_columns)
            .with_session_state(Arc::new(self.context().state()))
            .when_matched_update(|mut u| {
                for c in &updated {
                    u = u.update(quote(c), format!("source.{}", quote(c)));
                }
                u
            })
            .map_err(WarehouseError::delta(&what))?
            .when_not_matched_insert(|mut i| {
                for c in &columns {
                    i = i.set(quote(c), format!("source.{}", quote(c)));
                }
                i
            })
            .map_err(WarehouseError::delta(&what))?;
        builder.await.map_err(WarehouseError::delta(&what))?;
        self.refresh(schema, name);
        Ok(())
    }

    /// Replaces the rows of `schema.name` whose `keys` appear in `source` by `source`'s rows
    /// (dbt's `delete+insert`), in one commit.
    pub async fn delete_insert(
        &self,
        schema: &str,
        name: &str,
        source: DataFrame,
        keys: &[String],
    ) -> Result<()> {
        let what = format!("delete+insert into {schema}.{name}");
        let target = self
            .context()
            .table(datafusion::common::TableReference::partial(schema, name))
            .await
            .map_err(WarehouseError::datafusion(&what))?;
        let columns: Vec<String> = target
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let aligned = align(source, &target, &format!("{schema}.{name}"))?;
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let renamed: Vec<String> = keys.iter().map(|k| format!("__rb_key_{k}")).collect();
        let source_keys = aligned
            .clone()
            .select(
                keys.iter()
                    .zip(&renamed)
                    .map(|(k, r)| ident(k).alias(r))
                    .collect::<Vec<_>>(),
            )
            .and_then(|d| d.distinct())
            .map_err(WarehouseError::datafusion(&what))?;
        let renamed_refs: Vec<&str> = renamed.iter().map(String::as_str).collect();
        let kept = target
            .join(
                source_keys,
                JoinType::LeftAnti,
                &key_refs,
                &renamed_refs,
                None,
            )
            .and_then(|d| d.select(columns.iter().map(ident).collect::<Vec<_>>()))
            .map_err(WarehouseError::datafusion(&what))?;
        let combined = kept
            .union(aligned)
            .map_err(WarehouseError::datafusion(&what))?;
        // The plan reads the current version's files; the overwrite commits after they are read.
        let (_, df) = self.collect_frame(combined, &what).await?;
        self.write_table(schema, name, df, WriteMode::Replace)
            .await?;
        Ok(())
    }
}

/// `source` with `target`'s columns, in `target`'s order and types.
/// `source`'s columns in `target`'s order and types; `table` (`schema.name`) names errors.
fn align(source: DataFrame, target: &DataFrame, table: &str) -> Result<DataFrame> {
    let mut exprs = Vec::new();
    for field in target.schema().fields() {
        if source
            .schema()
            .field_with_unqualified_name(field.name())
            .is_err()
        {
            return Err(WarehouseError::Config {
                node: table.to_owned(),
                key: "on_schema_change".into(),
                message: format!(
                    "the model no longer has the table's column `{}`",
                    field.name()
                ),
            });
        }
        exprs.push(cast(ident(field.name()), field.data_type().clone()).alias(field.name()));
    }
    source
        .select(exprs)
        .map_err(WarehouseError::datafusion(format!(
            "aligning columns with {table}"
        )))
}

/// Casts what Delta cannot store: nanosecond/millisecond/second timestamps -> microseconds,
/// NULL-typed columns -> INT64, unsigned integers -> signed 64-bit; and with `nullable`, every
/// column NULLABLE.
fn storable(df: DataFrame, nullable: bool) -> datafusion::error::Result<DataFrame> {
    let mut changed = false;
    let exprs: Vec<_> = df
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let target = match f.data_type() {
                DataType::Timestamp(unit, tz) if *unit != TimeUnit::Microsecond => Some(
                    DataType::Timestamp(TimeUnit::Microsecond, tz.as_ref().map(|_| "UTC".into())),
                ),
                DataType::Timestamp(TimeUnit::Microsecond, Some(tz)) if tz.as_ref() != "UTC" => {
                    Some(DataType::Timestamp(
                        TimeUnit::Microsecond,
                        Some("UTC".into()),
                    ))
                }
                DataType::Null => Some(DataType::Int64),
                DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
                    Some(DataType::Int64)
                }
                _ => None,
            };
            let expr = match target {
                Some(t) => {
                    changed = true;
                    cast(ident(f.name()), t).alias(f.name())
                }
                None => ident(f.name()),
            };
            if nullable && !f.is_nullable() {
                changed = true;
                datafusion::logical_expr::ScalarUDF::new_from_impl(Nullable::default())
                    .call(vec![expr])
                    .alias(f.name())
            } else {
                expr
            }
        })
        .collect();
    if changed { df.select(exprs) } else { Ok(df) }
}

/// Rows added by the commit this write made (the table's version after it), from its
/// `commitInfo.operationMetrics.num_added_rows`: reading that one log entry, where counting
/// would scan the table again. `None` when the entry or the metric is missing — the caller
/// counts then. Reading the entry by version (not "the latest commit") keeps a concurrent
/// writer's commit from being taken for ours.
async fn rows_added(table: &DeltaTable) -> Option<u64> {
    let version = table.version()?;
    let entry = table.log_store().read_commit_entry(version).await.ok()??;
    std::str::from_utf8(&entry)
        .ok()?
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find_map(|action| {
            action
                .get("commitInfo")?
                .get("operationMetrics")?
                .get("num_added_rows")?
                .as_u64()
        })
}

/// `nullable(x)`: `x` unchanged, its field NULLABLE (the optimizer keeps it: no expression
/// of DataFusion's only widens nullability).
#[derive(Debug, PartialEq, Eq, Hash)]
struct Nullable {
    signature: datafusion::logical_expr::Signature,
}

impl Default for Nullable {
    fn default() -> Self {
        Nullable {
            signature: datafusion::logical_expr::Signature::any(
                1,
                datafusion::logical_expr::Volatility::Immutable,
            ),
        }
    }
}

impl datafusion::logical_expr::ScalarUDFImpl for Nullable {
    fn name(&self) -> &str {
        "rainbow_nullable"
    }

    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> datafusion::error::Result<DataType> {
        args.first().cloned().ok_or_else(|| {
            datafusion::error::DataFusionError::Plan("rainbow_nullable takes one argument".into())
        })
    }

    fn return_field_from_args(
        &self,
        args: datafusion::logical_expr::ReturnFieldArgs,
    ) -> datafusion::error::Result<datafusion::arrow::datatypes::FieldRef> {
        let data_type = self.return_type(
            &args
                .arg_fields
                .iter()
                .map(|f| f.data_type().clone())
                .collect::<Vec<_>>(),
        )?;
        Ok(Arc::new(datafusion::arrow::datatypes::Field::new(
            self.name(),
            data_type,
            true,
        )))
    }

    fn invoke_with_args(
        &self,
        args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> datafusion::error::Result<datafusion::logical_expr::ColumnarValue> {
        args.args.into_iter().next().ok_or_else(|| {
            datafusion::error::DataFusionError::Execution(
                "rainbow_nullable takes one argument".into(),
            )
        })
    }
}
