//! [`Warehouse`]: the embedded warehouse. A DataFusion session planning BigQuery SQL over a
//! directory of Delta Lake tables and persisted views.
//!
//! Invariants:
//! - every table write is one Delta commit: a failed or interrupted write leaves the previous
//!   version readable (orphan data files are harmless and removed by `VACUUM`);
//! - timestamps are stored as microseconds (BigQuery's precision), `TIMESTAMP` in UTC;
//! - a name is either a table or a view: writing one kind removes the other.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::{Arc, OnceLock};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    Ident, ObjectName, ObjectNamePart, Query, Statement, Visit, VisitMut, Visitor, VisitorMut,
};
use deltalake::DeltaTable;
use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};
use url::Url;

use crate::bigquery;
use crate::catalog::{Relation, RelationKind, Shared, WarehouseCatalog};
use crate::error::{Result, WarehouseError};

/// DataFusion's catalog name for the warehouse.
pub const CATALOG: &str = "rainbow";

const VIEW_SUFFIX: &str = ".view.sql";
const EXTERNAL_SUFFIX: &str = ".external";

/// How [`Warehouse::write_table`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Replace the table's content and schema (one commit).
    Replace,
    /// Add rows (the table's schema must accept them).
    Append,
}

/// The embedded warehouse.
#[derive(Clone)]
pub struct Warehouse {
    context: Arc<SessionContext>,
    catalog: Arc<WarehouseCatalog>,
    store: Arc<dyn ObjectStore>,
    default_schema: String,
}

impl std::fmt::Debug for Warehouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Warehouse")
            .field("location", &self.location().as_str())
            .field("default_schema", &self.default_schema)
            .finish()
    }
}

pub(crate) fn location_url(location: &str) -> Result<Url> {
    if location.contains("://") {
        let mut url = Url::parse(location).map_err(|e| WarehouseError::Config {
            node: "warehouse".into(),
            key: "location".into(),
            message: format!("`{location}` is not a URL: {e}"),
        })?;
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        return Ok(url);
    }
    let path = std::path::Path::new(location);
    std::fs::create_dir_all(path).map_err(|source| WarehouseError::Io {
        path: path.to_owned(),
        source,
    })?;
    let absolute = std::fs::canonicalize(path).map_err(|source| WarehouseError::Io {
        path: path.to_owned(),
        source,
    })?;
    Url::from_directory_path(&absolute).map_err(|()| WarehouseError::Config {
        node: "warehouse".into(),
        key: "location".into(),
        message: format!("`{}` is not an absolute directory", absolute.display()),
    })
}

fn store_error(context: impl Into<String>) -> impl FnOnce(object_store::Error) -> WarehouseError {
    let context = context.into();
    move |source| WarehouseError::Store { context, source }
}

impl Warehouse {
    /// Opens (creating if needed) the warehouse at `location`: a local directory or a URL
    /// (`file:///…`, `memory:///`). Unqualified names resolve in `default_schema`.
    pub async fn open(location: &str, default_schema: &str) -> Result<Self> {
        let url = location_url(location)?;
        let (store, prefix) = object_store::parse_url(&url).map_err(store_error(url.as_str()))?;
        let store: Arc<dyn ObjectStore> = if prefix.as_ref().is_empty() {
            Arc::from(store)
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(store, prefix))
        };
        // DataFusion's own `DATAFUSION_*` variables (e.g. `DATAFUSION_EXECUTION_TARGET_PARTITIONS`,
        // `DATAFUSION_EXPLAIN_SHOW_STATISTICS`) tune the session; the settings below win.
        let config = SessionConfig::from_env()
            .map_err(WarehouseError::datafusion("reading DATAFUSION_* settings"))?
            .with_default_catalog_and_schema(CATALOG, default_schema)
            .with_create_default_catalog_and_schema(false)
            .with_information_schema(true)
            .set_bool("datafusion.execution.parquet.pushdown_filters", true)
            // Join sides chosen from statistics propagated through every operator (issue 17,
            // measured on fact_sales): the built-in estimate takes an unknown key's distinct
            // count for the row count, so a fact joined to a 104-row date dimension was
            // estimated at 104 rows and every later dimension join hashed the 804,000-row
            // side into one partition instead of the dimension.
            .set_bool("datafusion.optimizer.use_statistics_registry", true)
            // BigQuery orders NULLs as the smallest value (first ascending, last descending).
            .set_str("datafusion.sql_parser.default_null_ordering", "nulls_min");
        let state = bigquery::session_state(config)?;
        let context = Arc::new(SessionContext::new_with_state(state));
        let shared = Arc::new(Shared {
            location: url,
            context: OnceLock::new(),
        });
        let _ = shared.context.set(Arc::downgrade(&context));
        let catalog = Arc::new(WarehouseCatalog {
            shared,
            schemas: Default::default(),
        });
        context.register_catalog(CATALOG, catalog.clone());
        let warehouse = Warehouse {
            context,
            catalog,
            store,
            default_schema: default_schema.to_owned(),
        };
        warehouse.scan().await?;
        Ok(warehouse)
    }

    /// Reads the directory again: relations created by other processes appear (every table is
    /// read at its latest version anyway: a cached snapshot serves only while no newer version
    /// exists). Orchestrated materializations call it first, so a long-running daemon sees
    /// what a CLI run wrote.
    pub async fn refresh_catalog(&self) -> Result<()> {
        self.scan().await
    }

    /// Reads the directory: schemas, Delta tables, views.
    async fn scan(&self) -> Result<()> {
        let root = self
            .store
            .list_with_delimiter(None)
            .await
            .map_err(store_error("listing the warehouse"))?;
        for schema_dir in root.common_prefixes {
            let Some(schema) = schema_dir.filename().map(str::to_owned) else {
                continue;
            };
            let listing = self
                .store
                .list_with_delimiter(Some(&schema_dir))
                .await
                .map_err(store_error(format!("listing schema {schema}")))?;
            let provider = self.catalog.schema_of(&schema);
            for table_dir in listing.common_prefixes {
                if let Some(name) = table_dir.filename() {
                    let log = table_dir.clone().join("_delta_log");
                    let has_log = self
                        .store
                        .list_with_delimiter(Some(&log))
                        .await
                        .map(|l| !l.objects.is_empty())
                        .unwrap_or(false);
                    // A table already loaded keeps its snapshot: it is checked against
                    // the newest version at every use anyway.
                    if has_log && !matches!(provider.get(name), Some(Relation::Table(_))) {
                        provider.set(name, Relation::Table(None));
                    }
                }
            }
            for object in listing.objects {
                if let Some(name) = object
                    .location
                    .filename()
                    .and_then(|f| f.strip_suffix(VIEW_SUFFIX))
                {
                    let sql = self.read_text(&object.location).await?;
                    provider.set(name, Relation::View(sql));
                } else if let Some(name) = object
                    .location
                    .filename()
                    .and_then(|f| f.strip_suffix(EXTERNAL_SUFFIX))
                {
                    let location = self.read_text(&object.location).await?;
                    provider.set(name, Relation::External(location.trim().to_owned()));
                }
            }
        }
        Ok(())
    }

    /// A small text object of the warehouse directory (a view's SQL, an external location).
    async fn read_text(&self, location: &StorePath) -> Result<String> {
        let bytes = self
            .store
            .get(location)
            .await
            .map_err(store_error(location.to_string()))?
            .bytes()
            .await
            .map_err(store_error(location.to_string()))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Runs `df` to completion and returns its row count and a DataFrame over the rows in
    /// memory — for writes that replace a table they read from (the read finishes first).
    pub async fn collect_frame(&self, df: DataFrame, context: &str) -> Result<(usize, DataFrame)> {
        let schema = df.schema().inner().clone();
        let batches = df
            .collect()
            .await
            .map_err(WarehouseError::datafusion(context))?;
        let rows = batches.iter().map(RecordBatch::num_rows).sum();
        Ok((rows, self.frame(schema, batches)?))
    }

    /// The DataFusion session (BigQuery functions registered).
    pub fn context(&self) -> &SessionContext {
        &self.context
    }

    /// The schema unqualified names resolve in.
    pub fn default_schema(&self) -> &str {
        &self.default_schema
    }

    /// The warehouse location.
    pub fn location(&self) -> &Url {
        &self.catalog.shared.location
    }

    /// What `schema.name` is, if it exists.
    pub fn kind(&self, schema: &str, name: &str) -> Option<RelationKind> {
        self.catalog.kind(schema, name)
    }

    /// Every relation as `schema.name`.
    pub fn relations(&self) -> Vec<String> {
        self.catalog.all_names()
    }

    /// Plans one BigQuery query. A name this process does not know yet makes it read the
    /// directory again first (another process — the batch layer, the speed sink — may have
    /// created it since), so a long-lived process finds new relations.
    pub async fn plan(&self, sql: &str, context: &str) -> Result<LogicalPlan> {
        match plan_query(&self.context, sql, context).await {
            Err(WarehouseError::UnknownRelation { .. }) => {
                self.refresh_catalog().await?;
                plan_query(&self.context, sql, context).await
            }
            other => other,
        }
    }

    /// One BigQuery query as a DataFrame.
    pub async fn dataframe(&self, sql: &str, context: &str) -> Result<DataFrame> {
        let plan = self.plan(sql, context).await?;
        Ok(DataFrame::new(self.context.state(), plan))
    }

    /// Runs one BigQuery query and collects its rows.
    pub async fn query(&self, sql: &str, context: &str) -> Result<Vec<RecordBatch>> {
        self.dataframe(sql, context)
            .await?
            .collect()
            .await
            .map_err(WarehouseError::datafusion(context))
    }

    /// Runs a query whose first column of its first row is a count (`SELECT COUNT(*) …`).
    pub async fn count(&self, sql: &str, context: &str) -> Result<i64> {
        let batches = self.query(sql, context).await?;
        let first = batches.iter().find(|b| b.num_rows() > 0);
        let value = first.and_then(|b| {
            datafusion::arrow::array::AsArray::as_primitive_opt::<
                datafusion::arrow::datatypes::Int64Type,
            >(b.column(0))
            .map(|a| a.value(0))
        });
        value.ok_or_else(|| unsupported(context, "expected a query returning one INT64 count"))
    }

    pub(crate) async fn query_frame(&self, query: Query, context: &str) -> Result<DataFrame> {
        let plan = self
            .plan_statement(Statement::Query(Box::new(query)), context)
            .await?;
        Ok(DataFrame::new(self.context.state(), plan))
    }

    pub(crate) async fn plan_statement(
        &self,
        statement: Statement,
        context: &str,
    ) -> Result<LogicalPlan> {
        let plan = self
            .context
            .state()
            .statement_to_plan(DFStatement::Statement(Box::new(statement)))
            .await
            .map_err(WarehouseError::datafusion(context))?;
        checked_plan(plan, context)
    }

    /// `dataset.table` or `table` -> (schema, name).
    pub(crate) fn split_name(&self, name: &ObjectName, context: &str) -> Result<(String, String)> {
        let parts: Vec<String> = name
            .0
            .iter()
            .filter_map(|p| match p {
                ObjectNamePart::Identifier(i) if i.quote_style.is_some() => Some(i.value.clone()),
                ObjectNamePart::Identifier(i) => Some(i.value.to_lowercase()),
                ObjectNamePart::Function(_) => None,
            })
            .collect();
        match parts.as_slice() {
            [name] => Ok((self.default_schema.clone(), name.clone())),
            [schema, name] => Ok((schema.clone(), name.clone())),
            _ => Err(unsupported(
                context,
                &format!("cannot use the name `{name}`"),
            )),
        }
    }

    pub(crate) fn unknown(&self, name: &str) -> WarehouseError {
        unknown_in(&self.context, name)
    }

    pub(crate) fn table_url(&self, schema: &str, name: &str) -> Result<Url> {
        self.catalog
            .shared
            .table_url(schema, name)
            .map_err(|e| WarehouseError::Config {
                node: format!("{schema}.{name}"),
                key: "name".into(),
                message: e.to_string(),
            })
    }

    /// The Delta table `schema.name` (must exist).
    pub(crate) async fn delta(&self, schema: &str, name: &str) -> Result<DeltaTable> {
        if self.kind(schema, name) != Some(RelationKind::Table) {
            return Err(self.unknown(&format!("{schema}.{name}")));
        }
        DeltaTable::try_from_url(self.table_url(schema, name)?)
            .await
            .map_err(WarehouseError::delta(format!("opening {schema}.{name}")))
    }

    /// Forgets the cached snapshot of `schema.name` after a write.
    pub(crate) fn refresh(&self, schema: &str, name: &str) {
        self.catalog
            .schema_of(schema)
            .set(name, Relation::Table(None));
    }

    /// Arrow schema of a relation.
    pub async fn schema_of(&self, schema: &str, name: &str) -> Result<SchemaRef> {
        let provider = self
            .context
            .table_provider(datafusion::common::TableReference::partial(schema, name))
            .await
            .map_err(|_| self.unknown(&format!("{schema}.{name}")))?;
        Ok(provider.schema())
    }

    /// Creates or replaces the view `schema.name` (BigQuery SQL), checking that it plans;
    /// `context` names `sql` in errors (a model's file, a statement).
    pub async fn create_view(
        &self,
        schema: &str,
        name: &str,
        sql: &str,
        context: &str,
    ) -> Result<()> {
        self.plan(sql, context).await?;
        if matches!(
            self.kind(schema, name),
            Some(RelationKind::Table | RelationKind::External)
        ) {
            self.drop_relation(schema, name).await?;
        }
        let path = StorePath::from(format!("{schema}/{name}{VIEW_SUFFIX}"));
        self.store
            .put(&path, sql.to_owned().into())
            .await
            .map_err(store_error(format!("writing {context}")))?;
        self.catalog
            .schema_of(schema)
            .set(name, Relation::View(sql.to_owned()));
        Ok(())
    }

    /// Declares `schema.name` as the Parquet files under `location` (a directory path or URL),
    /// read in place — e.g. the master dataset `raw/orders/` with its `dt=YYYY-MM-DD/` folders
    /// as a `dt` column. Checked by reading the schema; persisted with the warehouse.
    pub async fn create_external_table(
        &self,
        schema: &str,
        name: &str,
        location: &str,
    ) -> Result<()> {
        let context = format!("external table {schema}.{name}");
        let url = location_url(location)?;
        crate::catalog::external_provider(&self.context, url.as_str())
            .await
            .map_err(WarehouseError::datafusion(&context))?;
        if self.kind(schema, name).is_some() {
            self.drop_relation(schema, name).await?;
        }
        let path = StorePath::from(format!("{schema}/{name}{EXTERNAL_SUFFIX}"));
        self.store
            .put(&path, url.as_str().to_owned().into())
            .await
            .map_err(store_error(format!("writing {context}")))?;
        self.catalog
            .schema_of(schema)
            .set(name, Relation::External(url.as_str().to_owned()));
        Ok(())
    }

    /// Drops a table (every file under it), a view, or an external table's declaration
    /// (never its files).
    pub async fn drop_relation(&self, schema: &str, name: &str) -> Result<()> {
        match self.kind(schema, name) {
            Some(kind @ (RelationKind::View | RelationKind::External)) => {
                let suffix = if kind == RelationKind::View {
                    VIEW_SUFFIX
                } else {
                    EXTERNAL_SUFFIX
                };
                let path = StorePath::from(format!("{schema}/{name}{suffix}"));
                self.store
                    .delete(&path)
                    .await
                    .map_err(store_error(format!("dropping view {schema}.{name}")))?;
            }
            Some(RelationKind::Table) => {
                let prefix = StorePath::from(format!("{schema}/{name}"));
                let files: Vec<_> = self
                    .store
                    .list(Some(&prefix))
                    .try_collect()
                    .await
                    .map_err(store_error(format!("listing table {schema}.{name}")))?;
                for file in files {
                    self.store
                        .delete(&file.location)
                        .await
                        .map_err(store_error(format!("dropping table {schema}.{name}")))?;
                }
            }
            None => return Ok(()),
        }
        self.catalog.schema_of(schema).remove(name);
        Ok(())
    }
}

pub(crate) fn unsupported(context: &str, message: &str) -> WarehouseError {
    WarehouseError::Unsupported {
        context: context.to_owned(),
        message: message.to_owned(),
    }
}

/// Plans one BigQuery query in `context`.
pub(crate) async fn plan_query(
    context: &SessionContext,
    sql: &str,
    what: &str,
) -> Result<LogicalPlan> {
    let mut statements = bigquery::parse(sql, what)?;
    if statements.len() != 1 || !matches!(statements[0], Statement::Query(_)) {
        return Err(unsupported(what, "expected exactly one SELECT query"));
    }
    let mut statement = statements.remove(0);
    expand_wildcards(context, &mut statement, what)?;
    if let Some(missing) = qualify_names(context, &mut statement) {
        return Err(unknown_in(context, &missing));
    }
    let plan = context
        .state()
        .statement_to_plan(DFStatement::Statement(Box::new(statement)))
        .await
        .map_err(WarehouseError::datafusion(what))?;
    checked_plan(plan, what)
}

/// Refuses plans whose BigQuery meaning depends on types the rewrite could not see.
fn checked_plan(plan: LogicalPlan, what: &str) -> Result<LogicalPlan> {
    match bigquery::rewrite::unnamed_struct_unnest(&plan) {
        Some(message) => Err(unsupported(what, &message)),
        None => Ok(plan),
    }
}

/// [`WarehouseError::UnknownRelation`] with the closest existing names (an unqualified name
/// is compared as if in the default schema, where DataFusion looked for it).
fn unknown_in(context: &SessionContext, name: &str) -> WarehouseError {
    let mut names = Vec::new();
    if let Some(catalog) = context.catalog(CATALOG) {
        for schema in catalog.schema_names() {
            if let Some(provider) = catalog.schema(&schema) {
                names.extend(
                    provider
                        .table_names()
                        .into_iter()
                        .map(|t| format!("{schema}.{t}")),
                );
            }
        }
    }
    let qualified = if name.contains('.') {
        name.to_owned()
    } else {
        let state = context.state();
        format!("{}.{name}", state.config().options().catalog.default_schema)
    };
    WarehouseError::UnknownRelation {
        name: name.to_owned(),
        suggestion: rainbow_suggest::did_you_mean(&qualified, names.iter().map(String::as_str)),
    }
}

/// Unqualified table names that are not in the default schema (nor CTEs) but exist in exactly
/// one other schema are qualified with it, so every model is visible by its name. Returns the
/// first name that exists nowhere.
/// Expands BigQuery wildcard tables (`` `dataset.events_*` ``, see [`crate::wildcard`]).
pub(crate) fn expand_wildcards(
    context: &SessionContext,
    statement: &mut Statement,
    what: &str,
) -> Result<()> {
    let state = context.state();
    let defaults = &state.config().options().catalog;
    let Some(catalog) = context.catalog(&defaults.default_catalog) else {
        return Ok(());
    };
    crate::wildcard::expand(&catalog, &defaults.default_schema, statement)
        .map_err(|message| unsupported(what, &message))
}

pub(crate) fn qualify_names(context: &SessionContext, statement: &mut Statement) -> Option<String> {
    struct Ctes(HashSet<String>);
    impl Visitor for Ctes {
        type Break = ();
        fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
            if let Some(with) = &query.with {
                for cte in &with.cte_tables {
                    self.0.insert(cte.alias.name.value.to_lowercase());
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut ctes = Ctes(HashSet::new());
    let _ = Visit::visit(&*statement, &mut ctes);
    let state = context.state();
    let defaults = &state.config().options().catalog;
    let catalog = context.catalog(&defaults.default_catalog)?;
    let default_schema = defaults.default_schema.clone();
    struct Qualify<'a> {
        ctes: HashSet<String>,
        catalog: Arc<dyn datafusion::catalog::CatalogProvider>,
        default_schema: &'a str,
        missing: Option<String>,
        /// Depth of queries being visited: only names read by a query must exist.
        queries: usize,
    }
    impl VisitorMut for Qualify<'_> {
        type Break = ();
        fn pre_visit_query(&mut self, _: &mut Query) -> ControlFlow<()> {
            self.queries += 1;
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, _: &mut Query) -> ControlFlow<()> {
            self.queries = self.queries.saturating_sub(1);
            ControlFlow::Continue(())
        }
        fn pre_visit_relation(&mut self, relation: &mut ObjectName) -> ControlFlow<()> {
            if let [ObjectNamePart::Identifier(ident)] = relation.0.as_slice() {
                let name = if ident.quote_style.is_some() {
                    ident.value.clone()
                } else {
                    ident.value.to_lowercase()
                };
                let in_default = self
                    .catalog
                    .schema(self.default_schema)
                    .is_some_and(|s| s.table_exist(&name));
                if !in_default && !self.ctes.contains(&name) {
                    let holders: Vec<String> = self
                        .catalog
                        .schema_names()
                        .into_iter()
                        .filter(|s| self.catalog.schema(s).is_some_and(|p| p.table_exist(&name)))
                        .collect();
                    match holders.as_slice() {
                        [schema] => {
                            *relation = ObjectName::from(vec![Ident::new(schema), ident.clone()]);
                        }
                        [] if self.queries > 0 => {
                            self.missing.get_or_insert(name);
                        }
                        _ => {}
                    }
                }
            } else if let [
                ObjectNamePart::Identifier(schema),
                ObjectNamePart::Identifier(table),
            ] = relation.0.as_slice()
            {
                let norm = |i: &Ident| {
                    if i.quote_style.is_some() {
                        i.value.clone()
                    } else {
                        i.value.to_lowercase()
                    }
                };
                let (schema, table) = (norm(schema), norm(table));
                let exists = schema == "information_schema"
                    || self
                        .catalog
                        .schema(&schema)
                        .is_some_and(|s| s.table_exist(&table));
                if !exists && self.queries > 0 {
                    self.missing.get_or_insert(format!("{schema}.{table}"));
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut qualify = Qualify {
        ctes: ctes.0,
        catalog,
        default_schema: &default_schema,
        missing: None,
        queries: 0,
    };
    let _ = VisitMut::visit(statement, &mut qualify);
    qualify.missing
}
