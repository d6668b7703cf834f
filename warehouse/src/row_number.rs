//! `ROW_NUMBER()` over sorted input, computed a batch at a time: [`RowNumberExec`] and the
//! physical optimizer rule [`SortedRowNumber`] that puts it in place of DataFusion's
//! `BoundedWindowAggExec`.
//!
//! Why (issue 17, measured): the dbt idiom "latest version of each key",
//! `QUALIFY ROW_NUMBER() OVER (PARTITION BY key ORDER BY updated_at DESC) = 1`, gives one window
//! partition per key. DataFusion's `BoundedWindowAggExec` keeps state per window partition
//! (a hash map keyed by the partition's values), which costs about 1.7 µs per partition: 1.4 s
//! of CPU for the 804,000 order lines of the demo, ten times the sort that feeds it. Over input
//! already sorted by the partition keys (DataFusion's `Sorted` input order mode, which the
//! operator requires), the row number is a position within a run of equal keys: arrow's
//! `partition` finds the runs of a batch, a counter carries the last run across batches.
//!
//! Results are identical to the operator replaced: the same rows in the same order with the
//! same numbers (among ties of the `ORDER BY`, both number rows in input order). Only
//! `ROW_NUMBER()` is taken over; a window computing anything else keeps DataFusion's operator.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, UInt64Array, make_comparator};
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::compute::kernels::partition::partition;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::OrderingRequirements;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::window::StandardWindowExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::execution_plan::{ExecutionPlan, PlanProperties};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowUDFExpr};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, InputDistributionRequirements, InputOrderMode,
    SendableRecordBatchStream,
};
use futures::StreamExt;

/// Replaces every `BoundedWindowAggExec` in `Sorted` mode whose window functions are all
/// `ROW_NUMBER()` with one partitioning by [`RowNumberExec`]. Runs last, on the final plan
/// (the input's sort and distribution are in place by then).
#[derive(Debug, Default)]
pub struct SortedRowNumber;

impl PhysicalOptimizerRule for SortedRowNumber {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(window) = node.downcast_ref::<BoundedWindowAggExec>() else {
                return Ok(Transformed::no(node));
            };
            match RowNumberExec::try_replace(window, &node) {
                Some(exec) => Ok(Transformed::yes(Arc::new(exec) as Arc<dyn ExecutionPlan>)),
                None => Ok(Transformed::no(node)),
            }
        })
        .data()
    }

    fn name(&self) -> &str {
        "rainbow_sorted_row_number"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `ROW_NUMBER()` (one or more, all with the same `PARTITION BY`) over input sorted by the
/// partition keys: the input's columns followed by one `UInt64` column per window function,
/// numbering rows from 1 within each run of equal partition keys. Plans as the
/// `BoundedWindowAggExec` it replaces (kept as `window`: same schema, ordering, partitioning and
/// input requirements).
#[derive(Debug)]
pub struct RowNumberExec {
    window: Arc<dyn ExecutionPlan>,
    input: Arc<dyn ExecutionPlan>,
    partition_by: Vec<Arc<dyn PhysicalExpr>>,
    outputs: usize,
    metrics: ExecutionPlanMetricsSet,
}

fn is_row_number(expr: &Arc<dyn datafusion::physical_expr::window::WindowExpr>) -> bool {
    expr.as_any()
        .downcast_ref::<StandardWindowExpr>()
        .and_then(|s| {
            s.get_standard_func_expr()
                .as_any()
                .downcast_ref::<WindowUDFExpr>()
        })
        .is_some_and(|udf| udf.fun().name() == "row_number")
}

impl RowNumberExec {
    /// `Some` when `window` (the plan node `node`) computes only `ROW_NUMBER()`s sharing one
    /// `PARTITION BY`, over input sorted by all the partition keys.
    fn try_replace(window: &BoundedWindowAggExec, node: &Arc<dyn ExecutionPlan>) -> Option<Self> {
        let exprs = window.window_expr();
        let first = exprs.first()?;
        if window.input_order_mode != InputOrderMode::Sorted
            || !exprs.iter().all(is_row_number)
            || !exprs
                .iter()
                .all(|e| e.partition_by() == first.partition_by())
        {
            return None;
        }
        Some(Self {
            window: Arc::clone(node),
            input: Arc::clone(window.input()),
            partition_by: first.partition_by().to_vec(),
            outputs: exprs.len(),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }
}

impl DisplayAs for RowNumberExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<String> = self.partition_by.iter().map(|e| e.to_string()).collect();
        write!(
            f,
            "RowNumberExec: partition_by=[{}], outputs={}",
            keys.join(", "),
            self.outputs
        )
    }
}

impl ExecutionPlan for RowNumberExec {
    fn name(&self) -> &str {
        "RowNumberExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.window.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.window.apply_expressions(f)
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        self.window.input_distribution_requirements()
    }

    fn required_input_ordering(&self) -> Vec<Option<OrderingRequirements>> {
        self.window.required_input_ordering()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    #[allow(deprecated)] // the trait still requires it
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let window = Arc::clone(&self.window).with_new_children(children)?;
        let replaced = window
            .downcast_ref::<BoundedWindowAggExec>()
            .and_then(|w| Self::try_replace(w, &window));
        Ok(match replaced {
            Some(exec) => Arc::new(exec),
            None => window,
        })
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let metrics = BaselineMetrics::new(&self.metrics, partition);
        let mut numbering = Numbering {
            schema: self.window.schema(),
            partition_by: self.partition_by.clone(),
            outputs: self.outputs,
            last_key: None,
            count: 0,
        };
        let stream = input.map(move |batch| {
            let _timer = metrics.elapsed_compute().timer();
            let out = numbering.number(batch?)?;
            metrics.record_output(out.num_rows());
            Ok(out)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.window.schema(),
            stream,
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// The numbering state of one stream: the last row's partition key (one-row arrays) and its
/// row number.
struct Numbering {
    schema: SchemaRef,
    partition_by: Vec<Arc<dyn PhysicalExpr>>,
    outputs: usize,
    last_key: Option<Vec<ArrayRef>>,
    count: u64,
}

impl Numbering {
    fn number(&mut self, batch: RecordBatch) -> Result<RecordBatch> {
        let rows = batch.num_rows();
        let keys = self
            .partition_by
            .iter()
            .map(|e| e.evaluate(&batch)?.into_array(rows))
            .collect::<Result<Vec<_>>>()?;
        let runs = if keys.is_empty() || rows == 0 {
            std::iter::once(0..rows).collect()
        } else {
            partition(&keys)?.ranges()
        };
        let mut numbers = Vec::with_capacity(rows);
        for (i, run) in runs.iter().enumerate() {
            let continues = i == 0 && rows > 0 && self.continues(&keys)?;
            let mut n = if continues { self.count } else { 0 };
            for _ in run.clone() {
                n += 1;
                numbers.push(n);
            }
            self.count = n;
        }
        if rows > 0 {
            self.last_key = Some(keys.iter().map(|k| k.slice(rows - 1, 1)).collect());
        }
        let numbers: ArrayRef = Arc::new(UInt64Array::from(numbers));
        let mut columns = batch.columns().to_vec();
        columns.extend(std::iter::repeat_n(numbers, self.outputs));
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }

    /// Whether the batch's first row has the previous batch's last key (NULLs equal, as in
    /// window partitioning).
    fn continues(&self, keys: &[ArrayRef]) -> Result<bool> {
        let Some(last) = &self.last_key else {
            return Ok(false);
        };
        for (previous, current) in last.iter().zip(keys) {
            let compare = make_comparator(previous, current, SortOptions::default())?;
            if compare(0, 0) != Ordering::Equal {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;

    /// The same query planned with and without the rule: same rows, and the rule's plan
    /// really uses `RowNumberExec`.
    async fn both(sql: &str) -> (String, String, String) {
        let config = SessionConfig::new()
            .with_target_partitions(2)
            .with_batch_size(7);
        let plain = SessionContext::new_with_config(config.clone());
        let state = datafusion::execution::SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(SortedRowNumber))
            .build();
        let ruled = SessionContext::new_with_state(state);
        let mut out = Vec::new();
        for ctx in [&plain, &ruled] {
            ctx.sql(
                "CREATE TABLE t AS SELECT * FROM (VALUES \
                 (1, 'a', 10), (1, 'a', 11), (2, NULL, 5), (2, NULL, 6), (2, NULL, 7), (3, 'b', 1), \
                 (1, 'b', 3), (NULL, NULL, 1), (NULL, NULL, 2), (4, 'c', 9), (4, 'c', 9), \
                 (5, 'd', 1), (5, 'd', 2), (5, 'd', 3), (5, 'd', 4), (5, 'd', 5), (5, 'd', 6), \
                 (5, 'd', 7), (5, 'd', 8), (5, 'd', 9), (6, 'e', 0)) AS v(k, s, o)",
            )
            .await
            .expect("create")
            .collect()
            .await
            .expect("create");
            let batches = ctx
                .sql(sql)
                .await
                .expect("plan")
                .collect()
                .await
                .expect("run");
            out.push(pretty_format_batches(&batches).expect("format").to_string());
        }
        let plan = ruled
            .sql(&format!("EXPLAIN {sql}"))
            .await
            .expect("explain")
            .collect()
            .await
            .expect("explain");
        let plan = pretty_format_batches(&plan).expect("format").to_string();
        (out.remove(0), out.remove(0), plan)
    }

    #[tokio::test]
    async fn numbers_equal_datafusions_across_batches_and_null_keys() {
        for sql in [
            "SELECT k, s, o, ROW_NUMBER() OVER (PARTITION BY k, s ORDER BY o DESC) AS rn \
             FROM t ORDER BY k, s, o",
            "SELECT k, o, ROW_NUMBER() OVER (PARTITION BY k ORDER BY o) AS a, \
             ROW_NUMBER() OVER (PARTITION BY k ORDER BY o) AS b FROM t ORDER BY k, o",
            "SELECT * FROM t QUALIFY ROW_NUMBER() OVER (PARTITION BY k ORDER BY o DESC) = 1 \
             ORDER BY k",
            "SELECT k, o, ROW_NUMBER() OVER (ORDER BY k, o) AS rn FROM t ORDER BY rn",
        ] {
            let (plain, ruled, plan) = both(sql).await;
            assert_eq!(plain, ruled, "{sql}");
            assert!(plan.contains("RowNumberExec"), "{sql}\n{plan}");
            assert!(!plan.contains("BoundedWindowAggExec"), "{sql}\n{plan}");
        }
    }

    #[tokio::test]
    async fn other_window_functions_keep_datafusions_operator() {
        let sql = "SELECT k, o, ROW_NUMBER() OVER (PARTITION BY k ORDER BY o) AS rn, \
                   SUM(o) OVER (PARTITION BY k ORDER BY o) AS running FROM t ORDER BY k, o";
        let (plain, ruled, plan) = both(sql).await;
        assert_eq!(plain, ruled);
        assert!(plan.contains("BoundedWindowAggExec"), "{plan}");
        assert!(!plan.contains("RowNumberExec"), "{plan}");
    }
}
