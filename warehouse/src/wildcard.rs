//! BigQuery wildcard tables: `` FROM `project.dataset.events_*` `` reads every table of the
//! dataset whose name starts with `events_`, and the pseudo column `_TABLE_SUFFIX` holds the
//! rest of each row's table name (`WHERE _TABLE_SUFFIX BETWEEN '20240101' AND '20240131'`).
//! <https://cloud.google.com/bigquery/docs/querying-wildcard-tables>
//!
//! The wildcard becomes a derived table: the matching tables (in name order) as a
//! `UNION ALL BY NAME` (a column missing from a table is NULL there, as BigQuery's schema of
//! the newest table with NULLs for older ones), each with its suffix as `_table_suffix`. As a
//! pseudo column `_TABLE_SUFFIX` is not part of `SELECT *`: the `*` of the query reading the
//! wildcard excludes it. A wildcard matching no table is an error naming it.
//!
//! This needs the warehouse's catalog, so it runs where names are resolved, not in the
//! catalog-free BigQuery rewrite.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::catalog::CatalogProvider;
use datafusion::sql::sqlparser::ast::{
    ExceptSelectItem, Ident, ObjectNamePart, Query, SelectItem, SetExpr, Statement, TableFactor,
    TableWithJoins, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::BigQueryDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// The pseudo column's name as the warehouse stores it (unquoted names are lowercased).
const SUFFIX_COLUMN: &str = "_table_suffix";

/// Expands the wildcard tables of `statement`; an error names a wildcard matching no table.
pub(crate) fn expand(
    catalog: &Arc<dyn CatalogProvider>,
    default_schema: &str,
    statement: &mut Statement,
) -> Result<(), String> {
    let mut expander = Expander {
        catalog,
        default_schema,
    };
    match statement.visit(&mut expander) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(message) => Err(message),
    }
}

struct Expander<'a> {
    catalog: &'a Arc<dyn CatalogProvider>,
    default_schema: &'a str,
}

impl VisitorMut for Expander<'_> {
    type Break = String;

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<String> {
        match self.expand_body(query.body.as_mut()) {
            Ok(()) => ControlFlow::Continue(()),
            Err(message) => ControlFlow::Break(message),
        }
    }
}

impl Expander<'_> {
    fn expand_body(&self, body: &mut SetExpr) -> Result<(), String> {
        match body {
            SetExpr::Select(select) => {
                let mut expanded = false;
                for from in &mut select.from {
                    expanded |= self.expand_from(from)?;
                }
                if expanded {
                    for item in &mut select.projection {
                        if let SelectItem::Wildcard(options) = item {
                            let except = options.opt_except.get_or_insert(ExceptSelectItem {
                                first_element: Ident::with_quote('`', SUFFIX_COLUMN),
                                additional_elements: Vec::new(),
                            });
                            if except.first_element.value != SUFFIX_COLUMN {
                                except
                                    .additional_elements
                                    .push(Ident::with_quote('`', SUFFIX_COLUMN));
                            }
                        }
                    }
                }
                Ok(())
            }
            SetExpr::SetOperation { left, right, .. } => {
                self.expand_body(left)?;
                self.expand_body(right)
            }
            _ => Ok(()),
        }
    }

    fn expand_from(&self, from: &mut TableWithJoins) -> Result<bool, String> {
        let mut expanded = self.expand_factor(&mut from.relation)?;
        for join in &mut from.joins {
            expanded |= self.expand_factor(&mut join.relation)?;
        }
        Ok(expanded)
    }

    fn expand_factor(&self, factor: &mut TableFactor) -> Result<bool, String> {
        let TableFactor::Table { name, alias, .. } = factor else {
            return Ok(false);
        };
        let parts: Vec<&Ident> = name
            .0
            .iter()
            .filter_map(|p| match p {
                ObjectNamePart::Identifier(i) => Some(i),
                ObjectNamePart::Function(_) => None,
            })
            .collect();
        let (schema, table) = match parts.as_slice() {
            [table] => (self.default_schema.to_owned(), *table),
            [schema, table] => (normalized(schema), *table),
            _ => return Ok(false),
        };
        let Some(prefix) = table.value.strip_suffix('*') else {
            return Ok(false);
        };
        let prefix = if table.quote_style.is_some() {
            prefix.to_owned()
        } else {
            prefix.to_lowercase()
        };
        let mut tables: Vec<String> = self
            .catalog
            .schema(&schema)
            .map(|s| s.table_names())
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t.starts_with(&prefix))
            .collect();
        tables.sort();
        if tables.is_empty() {
            return Err(format!(
                "the wildcard table `{schema}.{}` matches no table of dataset `{schema}`",
                table.value
            ));
        }
        let branches = tables
            .iter()
            .map(|t| {
                let suffix = t[prefix.len()..].replace('\'', "\\'");
                format!(
                    "SELECT *, '{suffix}' AS `{SUFFIX_COLUMN}` FROM {}.{}",
                    Ident::with_quote('`', &schema),
                    Ident::with_quote('`', t)
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL BY NAME ");
        let subquery = match Parser::parse_sql(&BigQueryDialect, &branches)
            .map_err(|e| format!("the wildcard table `{}` could not be expanded: {e}", name))?
            .pop()
        {
            Some(Statement::Query(query)) => query,
            _ => return Err(format!("the wildcard table `{name}` could not be expanded")),
        };
        *factor = TableFactor::Derived {
            lateral: false,
            subquery,
            alias: alias.clone(),
            sample: None,
        };
        Ok(true)
    }
}

fn normalized(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}
