//! The warehouse catalog: schemas are directories under the warehouse location, tables are
//! Delta Lake tables (`<schema>/<name>/_delta_log`), views are BigQuery SQL definitions
//! (`<schema>/<name>.view.sql`). DataFusion resolves names through [`WarehouseCatalog`];
//! a view is planned each time it is resolved, and a table's cached snapshot is used only while
//! no newer version was committed, so every query reads the latest version of every table.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock, Weak};

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use url::Url;

/// What a name in a schema is.
#[derive(Debug, Clone)]
pub(crate) enum Relation {
    /// A Delta table; once loaded, its provider (a snapshot of one version) and the table
    /// handle that says whether a newer version was committed since (by this process or
    /// another: the batch layer, the speed sink, a second `rainbow` command).
    Table(Option<LoadedTable>),
    /// A view: its BigQuery SQL.
    View(String),
    /// Parquet files under a directory URL (Hive-style `key=value/` folders become columns),
    /// read in place: the master dataset seen from the warehouse.
    External(String),
}

/// A loaded Delta table: the provider of `version` and the handle to look for newer ones.
#[derive(Debug, Clone)]
pub(crate) struct LoadedTable {
    provider: Arc<dyn TableProvider>,
    table: DeltaTable,
    version: deltalake::kernel::Version,
}

/// The kind of a relation, as dbt calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelationKind {
    /// A table (Delta).
    Table,
    /// A view.
    View,
    /// An external table (Parquet files read in place).
    External,
}

/// State shared by the catalog and its schemas.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Warehouse location (a directory URL ending in `/`).
    pub location: Url,
    /// The session, to plan views and register Delta object stores.
    pub context: OnceLock<Weak<SessionContext>>,
}

impl Shared {
    pub fn table_url(&self, schema: &str, name: &str) -> Result<Url, url::ParseError> {
        self.location.join(&format!("{schema}/{name}/"))
    }
}

/// DataFusion's view of the warehouse: one catalog, a schema per directory.
#[derive(Debug)]
pub(crate) struct WarehouseCatalog {
    pub shared: Arc<Shared>,
    pub schemas: RwLock<BTreeMap<String, Arc<WarehouseSchema>>>,
}

impl WarehouseCatalog {
    pub fn schema_of(&self, name: &str) -> Arc<WarehouseSchema> {
        if let Ok(schemas) = self.schemas.read()
            && let Some(s) = schemas.get(name)
        {
            return s.clone();
        }
        let mut schemas = match self.schemas.write() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        schemas
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(WarehouseSchema {
                    name: name.to_owned(),
                    shared: self.shared.clone(),
                    relations: RwLock::new(BTreeMap::new()),
                })
            })
            .clone()
    }

    /// The relation `schema.name`, if any.
    pub fn kind(&self, schema: &str, name: &str) -> Option<RelationKind> {
        let schemas = self.schemas.read().ok()?;
        let relations = schemas.get(schema)?.relations.read().ok()?;
        relations.get(name).map(|r| match r {
            Relation::Table(_) => RelationKind::Table,
            Relation::View(_) => RelationKind::View,
            Relation::External(_) => RelationKind::External,
        })
    }

    /// Every `schema.name`.
    pub fn all_names(&self) -> Vec<String> {
        let Ok(schemas) = self.schemas.read() else {
            return Vec::new();
        };
        schemas
            .values()
            .flat_map(|s| {
                s.table_names()
                    .into_iter()
                    .map(move |t| format!("{}.{t}", s.name))
            })
            .collect()
    }
}

impl CatalogProvider for WarehouseCatalog {
    fn schema_names(&self) -> Vec<String> {
        self.schemas
            .read()
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        Some(self.schema_of(name) as Arc<dyn SchemaProvider>)
    }
}

/// One schema (dataset).
#[derive(Debug)]
pub(crate) struct WarehouseSchema {
    pub name: String,
    pub shared: Arc<Shared>,
    pub relations: RwLock<BTreeMap<String, Relation>>,
}

impl WarehouseSchema {
    pub fn set(&self, name: &str, relation: Relation) {
        let mut relations = match self.relations.write() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        };
        relations.insert(name.to_owned(), relation);
    }

    pub fn remove(&self, name: &str) {
        let mut relations = match self.relations.write() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        };
        relations.remove(name);
    }

    pub(crate) fn get(&self, name: &str) -> Option<Relation> {
        self.relations.read().ok()?.get(name).cloned()
    }
}

fn external(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// What an error of the Delta table at `url` says it was doing: `reading the Delta table at
/// <directory>`.
fn delta_context(url: &Url) -> String {
    match url.to_file_path() {
        Ok(path) => format!("reading the Delta table at {}", path.display()),
        Err(()) => format!("reading the Delta table at {url}"),
    }
}

/// Loads the Delta table at `url` with its provider registered with the session.
async fn load_delta(
    url: Url,
    context: Option<&SessionContext>,
) -> Result<Option<LoadedTable>, DataFusionError> {
    // A damaged log or data file is named by the table it belongs to.
    let what = delta_context(&url);
    let fail =
        |e: deltalake::DeltaTableError| external(crate::WarehouseError::delta(what.clone())(e));
    let table = DeltaTable::try_from_url(url).await.map_err(fail)?;
    let Some(version) = table.version() else {
        return Ok(None);
    };
    if let Some(context) = context {
        table
            .update_datafusion_session(&context.state())
            .map_err(fail)?;
    }
    let provider = table
        .table_provider()
        .await
        .map_err(|e| e.context(what.clone()))?;
    Ok(Some(LoadedTable {
        provider,
        table,
        version,
    }))
}

/// A listing table over the Parquet files under `location`; first-level `key=value` folders
/// are partition columns (strings).
pub(crate) async fn external_provider(
    context: &SessionContext,
    location: &str,
) -> Result<Arc<dyn TableProvider>, DataFusionError> {
    use datafusion::datasource::file_format::parquet::ParquetFormat;
    use datafusion::datasource::listing::{
        ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
    };
    let url = ListingTableUrl::parse(location)?;
    let state = context.state();
    let store = lake_store(context, &url)?;
    let listing = store
        .list_with_delimiter(Some(url.prefix()))
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    let mut partition_cols = Vec::new();
    if let Some(first) = listing.common_prefixes.first()
        && let Some((key, _)) = first.filename().and_then(|f| f.split_once('='))
    {
        partition_cols.push((key.to_owned(), datafusion::arrow::datatypes::DataType::Utf8));
    }
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(partition_cols);
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .infer_schema(&state)
        .await?;
    Ok(Arc::new(ListingTable::try_new(config)?))
}

/// The object store of a listing URL: the session's, or for an object store URL
/// (`s3://bucket/…`, `gs://bucket/…`) the session has not seen, a client built from the
/// environment (`AWS_*`, `GOOGLE_*`), as the lake's own, registered for next time.
pub(crate) fn lake_store(
    context: &SessionContext,
    url: &datafusion::datasource::listing::ListingTableUrl,
) -> Result<Arc<dyn object_store::ObjectStore>, DataFusionError> {
    let state = context.state();
    Ok(match state.runtime_env().object_store(url) {
        Ok(store) => store,
        // An object store URL (`s3://bucket/…`, `gs://bucket/…`) the session has not seen:
        // its client built from the environment (`AWS_*`, `GOOGLE_*`), as the lake's own.
        Err(_) => {
            let base = url.object_store();
            let base: &url::Url = base.as_ref();
            let (store, _) = object_store::parse_url_opts(
                base,
                std::env::vars().map(|(k, v)| (k.to_ascii_lowercase(), v)),
            )
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
            let store: Arc<dyn object_store::ObjectStore> = Arc::from(store);
            state
                .runtime_env()
                .register_object_store(base, store.clone());
            store
        }
    })
}

#[async_trait]
impl SchemaProvider for WarehouseSchema {
    fn table_names(&self) -> Vec<String> {
        self.relations
            .read()
            .map(|r| r.keys().cloned().collect())
            .unwrap_or_default()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        let context = self.shared.context.get().and_then(Weak::upgrade);
        match self.get(name) {
            None => Ok(None),
            Some(Relation::Table(cached)) => {
                // A cached snapshot serves as long as no newer version was committed: a
                // long-lived process (the UI, the speed sink) must never read a stale table.
                if let Some(loaded) = &cached {
                    let latest = loaded.table.get_latest_version().await.map_err(|e| {
                        let url = loaded.table.table_url();
                        external(crate::WarehouseError::delta(delta_context(url))(e))
                    })?;
                    if latest == loaded.version {
                        return Ok(Some(loaded.provider.clone()));
                    }
                }
                let url = self.shared.table_url(&self.name, name).map_err(external)?;
                let loaded = load_delta(url, context.as_deref()).await?;
                let provider = loaded.as_ref().map(|l| l.provider.clone());
                if let Some(l) = loaded {
                    self.set(name, Relation::Table(Some(l)));
                }
                Ok(provider)
            }
            Some(Relation::External(location)) => {
                let Some(context) = context else {
                    return Ok(None);
                };
                external_provider(&context, &location).await.map(Some)
            }
            Some(Relation::View(sql)) => {
                let Some(context) = context else {
                    return Ok(None);
                };
                let plan = crate::warehouse::plan_query(
                    &context,
                    &sql,
                    &format!("view {}.{name}", self.name),
                )
                .await
                .map_err(external)?;
                Ok(Some(Arc::new(datafusion::catalog::view::ViewTable::new(
                    plan,
                    Some(sql),
                ))))
            }
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.relations.read().is_ok_and(|r| r.contains_key(name))
    }
}
