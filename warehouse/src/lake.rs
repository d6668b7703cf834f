//! A Hive-partitioned Parquet dataset of the lake seen as files ([`Warehouse::lake_dataset`]):
//! what a warehouse that copies the lake (BigQuery's load jobs) needs to copy it partition by
//! partition and to notice a partition that changed (a reprocessed day).

use std::collections::BTreeMap;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::listing::ListingTableUrl;
use futures::TryStreamExt;

use crate::error::{Result, WarehouseError};
use crate::warehouse::Warehouse;

/// One Parquet file of a lake dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LakeFile {
    /// Path under the dataset's root (`dt=2026-01-01/orders.parquet`).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// The store's e-tag, when it gives one (a changed file has a new one).
    pub e_tag: Option<String>,
}

/// A Parquet dataset under one location: its schema as the embedded warehouse reads it and its
/// files by partition.
#[derive(Debug, Clone)]
pub struct LakeDataset {
    /// The files' columns, then the partition column (text), as the external table has them.
    pub schema: SchemaRef,
    /// The first-level `key=value` folders' key (`dt`), if the files are partitioned.
    pub partition_key: Option<String>,
    /// Files by partition value (`2026-01-01`; the empty string for unpartitioned files).
    pub partitions: BTreeMap<String, Vec<LakeFile>>,
}

impl LakeDataset {
    /// A partition's fingerprint: its files with their sizes and e-tags, sorted.
    pub fn fingerprint(&self, partition: &str) -> String {
        let mut parts: Vec<String> = self
            .partitions
            .get(partition)
            .into_iter()
            .flatten()
            .map(|f| format!("{}:{}:{}", f.path, f.size, f.e_tag.as_deref().unwrap_or("")))
            .collect();
        parts.sort();
        parts.join(",")
    }
}

impl Warehouse {
    /// The Parquet dataset under `location` (a directory or an object store URL, read with
    /// the lake's credentials from the environment); `None` when it holds no Parquet file yet.
    /// Errors: the store cannot be listed, a file's schema cannot be read.
    pub async fn lake_dataset(&self, location: &str) -> Result<Option<LakeDataset>> {
        let context = format!("lake {location}");
        let url = crate::warehouse::location_url(location)?;
        let listing =
            ListingTableUrl::parse(url.as_str()).map_err(WarehouseError::datafusion(&context))?;
        let store = crate::catalog::lake_store(self.context(), &listing)
            .map_err(WarehouseError::datafusion(&context))?;
        let prefix = listing.prefix().clone();
        let objects: Vec<object_store::ObjectMeta> = store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| WarehouseError::Store {
                context: context.clone(),
                source: e,
            })?;
        let mut partitions: BTreeMap<String, Vec<LakeFile>> = BTreeMap::new();
        let mut partition_key = None;
        for meta in objects {
            let Some(relative) = meta.location.prefix_match(&prefix) else {
                continue;
            };
            let parts: Vec<String> = relative.map(|p| p.as_ref().to_owned()).collect();
            if !parts.last().is_some_and(|f| f.ends_with(".parquet")) {
                continue;
            }
            let value = match parts.first().and_then(|p| p.split_once('=')) {
                Some((key, value)) if parts.len() > 1 => {
                    partition_key.get_or_insert_with(|| key.to_owned());
                    value.to_owned()
                }
                _ => String::new(),
            };
            partitions.entry(value).or_default().push(LakeFile {
                path: parts.join("/"),
                size: meta.size,
                e_tag: meta.e_tag,
            });
        }
        if partitions.is_empty() {
            return Ok(None);
        }
        let provider = crate::catalog::external_provider(self.context(), url.as_str())
            .await
            .map_err(WarehouseError::datafusion(&context))?;
        Ok(Some(LakeDataset {
            schema: provider.schema(),
            partition_key,
            partitions,
        }))
    }
}
