//! BigQuery (GoogleSQL) on DataFusion: statements are parsed with sqlparser's BigQuery
//! dialect, rewritten ([`rewrite`]) and planned by a session that knows BigQuery's types and
//! operators ([`planner`]) and date/time functions ([`functions`]).
//!
//! Supported beyond DataFusion's own SQL: `INT64`/`FLOAT64`/`NUMERIC`/`BIGNUMERIC`/`STRING`/
//! `BOOL`/`BYTES`/`DATETIME` types, `SAFE_CAST`, `EXTRACT(DATE|DAYOFWEEK|WEEK|… FROM x)`,
//! `DATE(x)`, `DATE(y, m, d)`, `TIMESTAMP_MICROS`… / `UNIX_MICROS`… / `UNIX_DATE`, `DATE_ADD`/`DATE_SUB`/`TIMESTAMP_ADD`/… with `INTERVAL n PART`,
//! `DATE_TRUNC`/`TIMESTAMP_TRUNC`, `DATE_DIFF`/`TIMESTAMP_DIFF`, `FORMAT_DATE`/`FORMAT_TIMESTAMP`,
//! `PARSE_DATE`/`PARSE_TIMESTAMP`, `IFNULL`, `COUNTIF`, `ANY_VALUE`, `LOGICAL_AND/OR`,
//! `STRING_AGG` (default `,`), `SAFE_DIVIDE`, `DIV`, `GENERATE_UUID`, `REGEXP_CONTAINS`,
//! `SPLIT`, `ERROR`, `CURRENT_DATE`/`CURRENT_TIMESTAMP`, integer `/` giving FLOAT64, `QUALIFY`,
//! backticked `project.dataset.table` names and `MERGE` (executed by the warehouse).
//! Functions whose DataFusion namesake means something else are rewritten ([`scalar`],
//! `SUBSTR`, `CONCAT`, `ANY_VALUE`, `CAST(… AS INT64)`, …); any function not known to agree is
//! refused by name (docs/bigquery.md lists the coverage).

pub mod aggregate;
pub mod functions;
pub mod json;
pub mod planner;
pub(crate) mod rewrite;
pub mod scalar;
pub mod tz;
mod udf;

use std::sync::Arc;

use datafusion::execution::FunctionRegistry;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SessionState;
use datafusion::prelude::SessionConfig;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::BigQueryDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::error::{Result, WarehouseError};

/// Parses BigQuery SQL (one or more `;`-separated statements) and rewrites it for DataFusion.
pub fn parse(sql: &str, context: &str) -> Result<Vec<Statement>> {
    let mut statements =
        Parser::parse_sql(&BigQueryDialect, sql).map_err(|e| WarehouseError::Parse {
            context: context.to_owned(),
            message: e.to_string(),
        })?;
    for statement in &mut statements {
        rewrite::rewrite(statement).map_err(|message| WarehouseError::Unsupported {
            context: context.to_owned(),
            message,
        })?;
    }
    Ok(statements)
}

/// A DataFusion session state that plans BigQuery types, operators and functions.
pub fn session_state(config: SessionConfig) -> Result<SessionState> {
    let mut state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_type_planner(Arc::new(planner::BigQueryTypes))
        // Delta Lake's writes and merges plan their own extension nodes.
        .with_query_planner(deltalake::delta_datafusion::planner::DeltaPlanner::new())
        .build();
    state
        .register_expr_planner(Arc::new(planner::BigQueryOperators))
        .map_err(WarehouseError::datafusion("registering BigQuery operators"))?;
    state
        .register_udaf(Arc::new(aggregate::checked_sum()))
        .map_err(WarehouseError::datafusion("registering BigQuery's SUM"))?;
    for udf in functions::all()
        .into_iter()
        .chain(scalar::all())
        .chain(tz::all())
        .chain(json::all())
    {
        state
            .register_udf(Arc::new(udf))
            .map_err(WarehouseError::datafusion("registering BigQuery functions"))?;
    }
    Ok(state)
}
