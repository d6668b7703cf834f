//! Executing BigQuery statements on the warehouse: [`Warehouse::execute`] parses a script and
//! runs each statement — queries (and `EXPLAIN [ANALYZE]` of one), `CREATE [OR REPLACE] TABLE … AS`, `CREATE VIEW`,
//! `INSERT INTO … SELECT|VALUES`, `DELETE`, `DROP`, `MERGE` (in `merge`) — one method per kind,
//! each table write one Delta commit.

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::logical_expr::{cast, ident};
use datafusion::prelude::DataFrame;
use datafusion::sql::sqlparser::ast::{self, ObjectName, Statement};

use crate::bigquery;
use crate::error::{Result, WarehouseError};
use crate::warehouse::{Warehouse, WriteMode, expand_wildcards, qualify_names, unsupported};

impl Warehouse {
    /// Runs BigQuery statements (`;`-separated): queries, `CREATE TABLE … AS`, `CREATE VIEW`,
    /// `INSERT INTO … SELECT`, `DELETE`, `DROP`, `MERGE`. Returns the last query's rows.
    /// Errors name `context` (a model's file, `query`).
    pub async fn execute(&self, sql: &str, context: &str) -> Result<Vec<RecordBatch>> {
        let statements = bigquery::parse_unrewritten(sql, context)?;
        if statements.is_empty() {
            return Err(WarehouseError::Parse {
                context: context.to_owned(),
                message: "no SQL statement (only comments or whitespace)".into(),
            });
        }
        let mut last = Vec::new();
        for mut statement in statements {
            // A view keeps the text as written: reading it rewrites it (once).
            if let Statement::CreateView(create) = statement {
                self.create_view_statement(create, context).await?;
                last = Vec::new();
                continue;
            }
            bigquery::rewrite_statement(&mut statement, context)?;
            last = self.execute_statement(statement, context).await?;
        }
        Ok(last)
    }

    async fn execute_statement(
        &self,
        mut statement: Statement,
        context: &str,
    ) -> Result<Vec<RecordBatch>> {
        expand_wildcards(self.context(), &mut statement, context)?;
        let mut missing = qualify_names(self.context(), &mut statement);
        if missing.is_some() {
            // Perhaps created by another process since this one read the directory.
            self.refresh_catalog().await?;
            missing = qualify_names(self.context(), &mut statement);
        }
        if let Some(missing) = missing {
            return Err(self.unknown(&missing));
        }
        match statement {
            // Only a query is explained: DataFusion would print "not implemented" as a plan row
            // for a write, which reads like a result.
            Statement::Explain { statement, .. } if !matches!(*statement, Statement::Query(_)) => {
                return Err(unsupported(
                    context,
                    "EXPLAIN takes a query (SELECT or WITH …): a model's plan is its query's",
                ));
            }
            // DataFusion's own plans (`EXPLAIN [ANALYZE] <query>`): the tool for profiling a model.
            Statement::Query(_) | Statement::Explain { .. } => {
                let plan = self.plan_statement(statement, context).await?;
                return DataFrame::new(self.context().state(), plan)
                    .collect()
                    .await
                    .map_err(WarehouseError::datafusion(context));
            }
            Statement::CreateTable(create) => self.create_table_as(create, context).await?,
            Statement::CreateView(create) => self.create_view_statement(create, context).await?,
            Statement::Insert(insert) => self.insert(insert, context).await?,
            Statement::Drop {
                names, if_exists, ..
            } => self.drop_statement(&names, if_exists, context).await?,
            Statement::Delete(delete) => self.delete_statement(delete, context).await?,
            Statement::Merge(merge) => crate::merge::execute(self, merge, context).await?,
            other => {
                return Err(unsupported(
                    context,
                    &format!(
                        "`{}` is not supported here (queries, EXPLAIN [ANALYZE], CREATE TABLE AS, CREATE VIEW, INSERT, DELETE, DROP and MERGE are)",
                        other
                            .to_string()
                            .split_whitespace()
                            .take(3)
                            .collect::<Vec<_>>()
                            .join(" ")
                    ),
                ));
            }
        }
        Ok(Vec::new())
    }

    /// `CREATE [OR REPLACE] TABLE [IF NOT EXISTS] x AS SELECT …`.
    async fn create_table_as(&self, create: ast::CreateTable, context: &str) -> Result<()> {
        let (schema, name) = self.split_name(&create.name, context)?;
        let Some(query) = create.query else {
            return Err(unsupported(context, "CREATE TABLE needs AS SELECT"));
        };
        if self.kind(&schema, &name).is_some() && !create.or_replace {
            if create.if_not_exists {
                return Ok(());
            }
            return Err(unsupported(
                context,
                &format!("{schema}.{name} exists (use CREATE OR REPLACE)"),
            ));
        }
        let df = self.query_frame(*query, context).await?;
        self.write_table(&schema, &name, df, WriteMode::Replace)
            .await?;
        Ok(())
    }

    /// `CREATE [OR REPLACE] VIEW x AS …`.
    async fn create_view_statement(&self, create: ast::CreateView, context: &str) -> Result<()> {
        let (schema, name) = self.split_name(&create.name, context)?;
        if self.kind(&schema, &name).is_some() && !create.or_replace {
            return Err(unsupported(
                context,
                &format!("{schema}.{name} exists (use CREATE OR REPLACE)"),
            ));
        }
        self.create_view(&schema, &name, &create.query.to_string(), context)
            .await?;
        Ok(())
    }

    /// `INSERT INTO x [(columns)] SELECT|VALUES …`: columns matched by position.
    async fn insert(&self, insert: ast::Insert, context: &str) -> Result<()> {
        let ast::TableObject::TableName(table) = &insert.table else {
            return Err(unsupported(context, "INSERT into a table function"));
        };
        let (schema, name) = self.split_name(table, context)?;
        let Some(source) = insert.source else {
            return Err(unsupported(context, "INSERT needs VALUES or SELECT"));
        };
        let df = self.query_frame(*source, context).await?;
        // INSERT matches columns by position: to the listed ones, or to the table's.
        let target = self.schema_of(&schema, &name).await?;
        let names: Vec<String> = if insert.columns.is_empty() {
            target.fields().iter().map(|f| f.name().clone()).collect()
        } else {
            insert
                .columns
                .iter()
                .map(|c| c.to_string().trim_matches('`').to_owned())
                .collect()
        };
        if names.len() != df.schema().fields().len() {
            return Err(unsupported(
                context,
                &format!(
                    "INSERT into {schema}.{name} names {} columns but the query gives {}",
                    names.len(),
                    df.schema().fields().len()
                ),
            ));
        }
        let mut exprs = Vec::new();
        for (field, n) in df.schema().fields().iter().zip(&names) {
            let typed = target
                .field_with_name(n)
                .map_err(|_| self.unknown(&format!("{schema}.{name}.{n}")))?;
            exprs.push(cast(ident(field.name()), typed.data_type().clone()).alias(n));
        }
        let df = df
            .select(exprs)
            .map_err(WarehouseError::datafusion(context))?;
        self.write_table(&schema, &name, df, WriteMode::Append)
            .await?;
        Ok(())
    }

    /// `DROP TABLE|VIEW [IF EXISTS] x, …`.
    async fn drop_statement(
        &self,
        names: &[ObjectName],
        if_exists: bool,
        context: &str,
    ) -> Result<()> {
        for n in names {
            let (schema, name) = self.split_name(n, context)?;
            if self.kind(&schema, &name).is_none() && !if_exists {
                return Err(self.unknown(&format!("{schema}.{name}")));
            }
            self.drop_relation(&schema, &name).await?;
        }
        Ok(())
    }

    /// `DELETE FROM x [WHERE …]`: Delta's delete, one commit.
    async fn delete_statement(&self, delete: ast::Delete, context: &str) -> Result<()> {
        let tables = match &delete.from {
            ast::FromTable::WithFromKeyword(t) | ast::FromTable::WithoutKeyword(t) => t,
        };
        let Some(ast::TableFactor::Table { name, .. }) = tables.first().map(|t| &t.relation) else {
            return Err(unsupported(context, "DELETE needs a table"));
        };
        let (schema, name) = self.split_name(name, context)?;
        let table = self.delta(&schema, &name).await?;
        let mut builder = table
            .delete()
            .with_session_state(Arc::new(self.context().state()));
        if let Some(selection) = delete.selection {
            builder = builder.with_predicate(selection.to_string());
        }
        builder.await.map_err(WarehouseError::delta(format!(
            "DELETE FROM {schema}.{name}"
        )))?;
        self.refresh(&schema, &name);
        Ok(())
    }
}
