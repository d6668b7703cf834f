//! The serving layer's input: each batch view exported as one Parquet file,
//! `serving/<view>/<view>.parquet` in the lake's object store, rows in a stable order (every
//! column ascending) so that the same view always gives the same bytes. One `serving/<view>`
//! asset per view, downstream of the view's table.

use std::sync::Arc;

use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};
use rainbow_dbt::SqlProject;
use rainbow_engine::prelude::*;
use rainbow_warehouse::datafusion::arrow::datatypes::Schema;

use crate::AssetsError;
use crate::extract::parquet_bytes;

/// The object path of a view's export.
pub fn export_path(view: &str) -> String {
    format!("serving/{view}/{view}.parquet")
}

/// What one export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    /// Object path in the store.
    pub path: String,
    /// Rows.
    pub rows: u64,
    /// File size.
    pub bytes: u64,
}

/// Writes `<schema>.<view>` of the project's warehouse to [`export_path`].
pub async fn export_view(
    project: &SqlProject,
    store: &dyn ObjectStore,
    schema: &str,
    view: &str,
) -> Result<Exported, AssetsError> {
    // The view as last built, by this process or another, on the project's target (the
    // embedded warehouse or BigQuery).
    let context = format!("exporting {schema}.{view}");
    let columns: Vec<String> = project
        .relation_columns(schema, view)
        .await?
        .iter()
        .map(|c| format!("`{c}`"))
        .collect();
    let sql = format!(
        "SELECT * FROM {schema}.{view} ORDER BY {}",
        columns.join(", ")
    );
    let (arrow_schema, batches): (Arc<Schema>, _) = project.query(&sql, &context).await?;
    let bytes = parquet_bytes(arrow_schema, &batches)?;
    let path = export_path(view);
    let size = bytes.len() as u64;
    store
        .put(&StorePath::from(path.as_str()), bytes.into())
        .await
        .map_err(|e| AssetsError::Invalid(format!("writing {path}: {e}")))?;
    Ok(Exported {
        path,
        rows: batches.iter().map(|b| b.num_rows() as u64).sum(),
        bytes: size,
    })
}

/// One `serving/<view>` asset per `<schema>/<view>` key in `views`.
pub fn export_assets(
    project: &SqlProject,
    store: Arc<dyn ObjectStore>,
    store_url: &str,
    views: &[AssetKey],
) -> Vec<AssetDefinition> {
    views
        .iter()
        .filter_map(|key| {
            let [schema, view] = key.segments() else {
                return None;
            };
            let (schema, view) = (schema.clone(), view.clone());
            let (project, store) = (project.clone(), store.clone());
            let store_url = store_url.trim_end_matches('/').to_owned();
            Some(
                AssetSpec::new(AssetKey::new(["serving", view.as_str()]))
                    .group("serving")
                    .kind("parquet")
                    .description(format!(
                        "The batch view `{view}` as Parquet, the serving layer's input"
                    ))
                    .dep(key.clone())
                    .compute(move |_ctx: AssetContext| {
                        let (project, store) = (project.clone(), store.clone());
                        let (schema, view, store_url) =
                            (schema.clone(), view.clone(), store_url.clone());
                        async move {
                            let out = rainbow_warehouse::instrument::work(export_view(
                                &project,
                                store.as_ref(),
                                &schema,
                                &view,
                            ))
                            .await?;
                            Ok::<_, BoxError>(
                                MaterializeResult::new()
                                    .row_count(out.rows)
                                    .path(format!("{store_url}/{}", out.path))
                                    .metadata("bytes", out.bytes as i64),
                            )
                        }
                    }),
            )
        })
        .collect()
}
