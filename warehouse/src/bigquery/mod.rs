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
//! Also `SAFE.` prefixed calls ([`safe`]), `PIVOT`/`UNPIVOT` (`pivot`), `TO_JSON_STRING`
//! ([`to_json`]), typed `STRUCT<…>(…)` constructors and field access on any STRUCT value.
//! Functions whose DataFusion namesake means something else are rewritten ([`scalar`],
//! `SUBSTR`, `CONCAT`, `ANY_VALUE`, `CAST(… AS INT64)`, …); any function not known to agree is
//! refused by name (docs/bigquery.md lists the coverage).

pub mod aggregate;
pub mod functions;
pub mod json;
mod pivot;
pub mod planner;
pub(crate) mod rewrite;
pub mod safe;
pub mod scalar;
pub mod to_json;
pub mod tz;
mod udf;
pub mod utc;

use std::sync::Arc;

use datafusion::execution::FunctionRegistry;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SessionState;
use datafusion::prelude::SessionConfig;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::BigQueryDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Tokenizer;

use crate::error::{Result, WarehouseError};

/// Parses BigQuery SQL (one or more `;`-separated statements) and rewrites it for DataFusion.
pub fn parse(sql: &str, context: &str) -> Result<Vec<Statement>> {
    let mut statements = parse_unrewritten(sql, context)?;
    for statement in &mut statements {
        rewrite_statement(statement, context)?;
    }
    Ok(statements)
}

/// Parses BigQuery SQL without rewriting it: what a view stores, so that reading the view
/// rewrites its text once, not twice.
pub fn parse_unrewritten(sql: &str, context: &str) -> Result<Vec<Statement>> {
    let parse_error = |message: String| WarehouseError::Parse {
        context: context.to_owned(),
        message,
    };
    let mut tokens = Tokenizer::new(&BigQueryDialect, sql)
        .tokenize_with_location()
        .map_err(|e| parse_error(e.to_string()))?;
    safe::unreserve_safe_calls(&mut tokens);
    Parser::new(&BigQueryDialect)
        .with_tokens_with_locations(tokens)
        .parse_statements()
        .map_err(|e| parse_error(e.to_string()))
}

/// Rewrites one parsed statement for DataFusion ([`rewrite`]).
pub fn rewrite_statement(statement: &mut Statement, context: &str) -> Result<()> {
    rewrite::rewrite(statement).map_err(|message| WarehouseError::Unsupported {
        context: context.to_owned(),
        message,
    })
}

/// DataFusion's physical optimizer rules with [`crate::interval_join::IntervalJoins`] before the
/// post-optimization filter pushdown, then [`crate::sorted_window::SortedWindows`] on the final
/// plan.
fn physical_optimizer_rules()
-> Vec<Arc<dyn datafusion::physical_optimizer::PhysicalOptimizerRule + Send + Sync>> {
    let mut rules = datafusion::physical_optimizer::optimizer::PhysicalOptimizer::new().rules;
    crate::interval_join::IntervalJoins::insert(&mut rules);
    rules.push(Arc::new(crate::sorted_window::SortedWindows));
    rules
}

/// A DataFusion session state that plans BigQuery types, operators and functions.
pub fn session_state(config: SessionConfig) -> Result<SessionState> {
    // No cached directory listings: DataFusion keeps them forever by default, so a
    // long-lived process (the daemon, the UI, the speed sink) would never see a day the
    // extract added to the master dataset.
    let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
        .with_cache_manager(
            datafusion::execution::cache::cache_manager::CacheManagerConfig::default()
                .with_list_files_cache_limit(0),
        )
        .build_arc()
        .map_err(WarehouseError::datafusion("building the runtime"))?;
    // Local files (the lake's and Delta tables') read and written on the IO pool.
    crate::io_pool::register(&runtime)?;
    let mut state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_type_planner(Arc::new(planner::BigQueryTypes))
        // Delta Lake's writes and merges plan their own extension nodes.
        .with_query_planner(deltalake::delta_datafusion::planner::DeltaPlanner::new())
        .with_physical_optimizer_rules(physical_optimizer_rules())
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
        .chain(utc::all())
        .chain(json::all())
        .chain([to_json::udf()])
    {
        state
            .register_udf(Arc::new(udf))
            .map_err(WarehouseError::datafusion("registering BigQuery functions"))?;
    }
    // `SAFE.f(…)`: a twin of every scalar function that gives NULL where it fails.
    let twins = safe::safe_twins(state.scalar_functions());
    for twin in twins {
        state
            .register_udf(Arc::new(twin))
            .map_err(WarehouseError::datafusion("registering SAFE. functions"))?;
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    /// The interval join rule runs just before DataFusion's post-optimization filter pushdown
    /// (a DataFusion that renames that rule would silently put it last), and the sorted windows
    /// last.
    #[test]
    fn rainbow_rules_sit_where_their_invariants_need() {
        let names: Vec<String> = super::physical_optimizer_rules()
            .iter()
            .map(|r| r.name().to_owned())
            .collect();
        let at = names
            .iter()
            .position(|n| n == "rainbow_interval_joins")
            .expect("the interval join rule");
        assert_eq!(
            names.get(at + 1).map(String::as_str),
            Some("FilterPushdown(Post)"),
            "{names:?}"
        );
        assert_eq!(
            names.last().map(String::as_str),
            Some("rainbow_sorted_windows")
        );
    }
}
