//! Loading files into tables: [`Warehouse::load_csv`] (dbt seeds; BigQuery's load jobs are the
//! production counterpart).

use std::collections::BTreeMap;
use std::path::Path;

use datafusion::arrow::datatypes::DataType;

use crate::error::{Result, WarehouseError};
use crate::warehouse::{Warehouse, WriteMode};

/// How a CSV file is read.
#[derive(Debug, Clone)]
pub struct CsvLoad {
    /// The field delimiter (one byte; default `,`).
    pub delimiter: u8,
    /// Column -> BigQuery type name (`NUMERIC`, `DATE`…) overriding the inferred type (dbt's
    /// `column_types`); every named column must exist.
    pub column_types: BTreeMap<String, String>,
}

impl Default for CsvLoad {
    fn default() -> Self {
        CsvLoad {
            delimiter: b',',
            column_types: BTreeMap::new(),
        }
    }
}

impl Warehouse {
    /// Replaces the table `schema.name` with the rows of the CSV file at `path` (a header
    /// line; types inferred from up to a million rows, then `load.column_types` applied) in one
    /// Delta commit; returns the number of rows. Errors name `context` (the seed's file) and,
    /// for a bad column type, the column.
    pub async fn load_csv(
        &self,
        schema: &str,
        name: &str,
        path: &Path,
        load: &CsvLoad,
        context: &str,
    ) -> Result<usize> {
        let df = self.read_csv(path, load, context).await?;
        let (rows, df) = self.collect_frame(df, context).await?;
        self.write_table(schema, name, df, WriteMode::Replace)
            .await?;
        Ok(rows)
    }

    /// The rows of the CSV file at `path` as [`Warehouse::load_csv`] types them (a seed on
    /// another warehouse gets the same column types). Errors as `load_csv`'s.
    pub async fn read_csv(
        &self,
        path: &Path,
        load: &CsvLoad,
        context: &str,
    ) -> Result<datafusion::prelude::DataFrame> {
        let file = path.to_str().ok_or_else(|| WarehouseError::Io {
            path: path.to_owned(),
            source: std::io::Error::other("the path is not UTF-8"),
        })?;
        let read = || {
            datafusion::prelude::CsvReadOptions::new()
                .has_header(true)
                .delimiter(load.delimiter)
                .file_extension(".csv")
                .schema_infer_max_records(1_000_000)
        };
        let mut df = self
            .context()
            .read_csv(file, read())
            .await
            .map_err(WarehouseError::datafusion(context))?;
        if !load.column_types.is_empty() {
            // A typed column is read as text, then cast: inferring first would turn a zip
            // code `01234` into the number 1234 before a STRING type could keep it.
            let as_text = datafusion::arrow::datatypes::Schema::new(
                df.schema()
                    .fields()
                    .iter()
                    .map(|f| {
                        if load.column_types.contains_key(f.name()) {
                            datafusion::arrow::datatypes::Field::new(f.name(), DataType::Utf8, true)
                        } else {
                            f.as_ref().clone()
                        }
                    })
                    .collect::<Vec<_>>(),
            );
            df = self
                .context()
                .read_csv(file, read().schema(&as_text))
                .await
                .map_err(WarehouseError::datafusion(context))?;
            let bad = |message: String| WarehouseError::Config {
                node: context.to_owned(),
                key: "column_types".to_owned(),
                message,
            };
            for column in load.column_types.keys() {
                if df.schema().field_with_unqualified_name(column).is_err() {
                    return Err(bad(format!("`{column}` is not a column of {context}")));
                }
            }
            let mut exprs = Vec::new();
            for field in df.schema().fields() {
                let expr = datafusion::logical_expr::ident(field.name());
                exprs.push(match load.column_types.get(field.name()) {
                    Some(t) => {
                        let target = self
                            .sql_type(t)
                            .await
                            .map_err(|e| bad(format!("`{t}`: {e}")))?;
                        datafusion::logical_expr::cast(expr, target).alias(field.name())
                    }
                    None => expr,
                });
            }
            df = df
                .select(exprs)
                .map_err(WarehouseError::datafusion(context))?;
        }
        Ok(df)
    }

    /// The Arrow type of a BigQuery type name (`INT64`, `NUMERIC`, `TIMESTAMP`…).
    pub async fn sql_type(&self, name: &str) -> Result<DataType> {
        let plan = self
            .plan(&format!("SELECT CAST(NULL AS {name}) AS t"), "column type")
            .await?;
        Ok(plan.schema().field(0).data_type().clone())
    }
}
