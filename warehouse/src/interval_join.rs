//! Joins to a slowly changing dimension "as of" a date: [`IntervalJoinExec`] and the physical
//! optimizer rule [`IntervalJoins`] that puts it in place of DataFusion's `HashJoinExec` for an
//! inner join on equality keys plus one interval, `lower <= d AND d < upper`.
//!
//! Why (issue 17, measured): a fact table joins each SCD type 2 dimension on its natural key and
//! the version valid on the fact's date — `ON p.product_id = dp.product_id AND p.order_date >=
//! dp.valid_from AND p.order_date < dp.valid_to`. A hash join on the key hands every fact row
//! all of its key's versions and filters them afterwards: at one million orders the product
//! dimension holds 668,227 versions of 10,000 products, so 1.8 million order lines became
//! 150 million candidate pairs and the join took 1.08 s of compute, the largest operator of the
//! whole build. Here the build side's versions of each key are sorted by their lower bound; a
//! probe row binary-searches the versions that start at or before its value and scans back from
//! there only while a running maximum of the upper bounds can still contain the value — so
//! overlapping versions (a dimension that is not a clean SCD2) still find every match, exactly
//! as the hash join and its filter would.
//!
//! Taken over only (anything else keeps DataFusion's join, unchanged):
//! - `INNER` joins, NULL keys never equal (`NullEqualsNothing`), no `LIMIT` pushed into the join,
//!   no dynamic filter attached (the rule runs before DataFusion's post-optimization filter
//!   pushdown, so none is attached to a join it takes);
//! - a filter that is exactly two comparisons of one probe-side column `d` with two build-side
//!   columns: a lower bound (`lower <= d` or `lower < d`, either operand order) and an upper
//!   bound (`d < upper` or `d <= upper`);
//! - `d`, `lower` and `upper` of one type among the signed integers, `UInt8`–`UInt32`, `DATE`
//!   (`Date32`, `Date64`) and `TIMESTAMP` (any unit, the same zone) — compared as their 64-bit
//!   integer values, which orders them as SQL does.
//!
//! A NULL in `d`, `lower`, `upper` or a key never matches (SQL's comparison with NULL is not
//! true). Output: the same columns (the join's projection applied) in the order DataFusion's
//! hash join gives — the probe side's, a probe row's matches in build-side order — so the
//! ordering the replaced join's plan properties claim holds.
//!
//! The build side is collected once per partition (`Partitioned`) or once for all partitions
//! (`CollectLeft`, shared), its memory reserved in the session's memory pool.

use std::fmt;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatchOptions, UInt32Array};
use datafusion::arrow::compute::{cast, concat_batches, take};
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{
    DataFusionError, HashMap, JoinSide, JoinType, NullEquality, Result, Statistics,
};
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{BinaryExpr, Column};
use datafusion::physical_expr::{PhysicalExpr, PhysicalExprRef, split_conjunction};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coop::make_cooperative;
use datafusion::physical_plan::execution_plan::{ExecutionPlan, PlanProperties};
use datafusion::physical_plan::joins::utils::JoinFilter;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildStats, DisplayAs, DisplayFormatType, InputDistributionRequirements,
    SendableRecordBatchStream, StatisticsArgs,
};
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::{StreamExt, TryStreamExt};

/// Replaces every `HashJoinExec` that joins equality keys plus one interval (see the module) by
/// [`IntervalJoinExec`]. Placed before DataFusion's post-optimization filter pushdown by
/// [`IntervalJoins::insert`].
#[derive(Debug, Default)]
pub struct IntervalJoins;

/// The name of DataFusion's post-optimization filter pushdown rule.
const FILTER_PUSHDOWN_POST: &str = "FilterPushdown(Post)";

impl IntervalJoins {
    /// Inserts the rule into DataFusion's physical optimizer `rules` just before the
    /// post-optimization filter pushdown: a join it takes over must not hand a dynamic filter
    /// to its probe side (only DataFusion's hash join fills one in). Without that rule (a
    /// DataFusion that renamed it) it goes last, where it declines every join already holding a
    /// dynamic filter — slower, never wrong; a test of the warehouse's rule list catches it.
    pub fn insert(rules: &mut Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>>) {
        let at = rules
            .iter()
            .position(|r| r.name() == FILTER_PUSHDOWN_POST)
            .unwrap_or(rules.len());
        rules.insert(at, Arc::new(IntervalJoins));
    }
}

impl PhysicalOptimizerRule for IntervalJoins {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if let Some(exec) = IntervalJoinExec::try_replace(&node) {
                return Ok(Transformed::yes(Arc::new(exec) as Arc<dyn ExecutionPlan>));
            }
            match swapped(&node)? {
                Some(plan) => Ok(Transformed::yes(plan)),
                None => Ok(Transformed::no(node)),
            }
        })
        .data()
    }

    fn name(&self) -> &str {
        "rainbow_interval_joins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// A `Partitioned` hash join whose intervals are on its probe (right) side, with its inputs
/// swapped by DataFusion's `swap_inputs` (which keeps the output's columns and partitioning
/// through the join's key equivalence) and taken over; `None` when that is not possible. Not
/// when the join's output is ordered: it follows the probe side's order, which would change.
fn swapped(node: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(join) = node.downcast_ref::<HashJoinExec>() else {
        return Ok(None);
    };
    let Some(filter) = join.filter() else {
        return Ok(None);
    };
    if *join.partition_mode() != PartitionMode::Partitioned
        || node.properties().output_ordering().is_some()
        || !join.dynamic_expressions_produced().is_empty()
        || Interval::of(
            &filter.swap(),
            &join.right().schema(),
            &join.left().schema(),
        )
        .is_none()
    {
        return Ok(None);
    }
    let swapped = join.swap_inputs(PartitionMode::Partitioned)?;
    let mut replaced = false;
    let plan = swapped
        .transform_down(|n| {
            if replaced {
                return Ok(Transformed::new(n, false, TreeNodeRecursion::Jump));
            }
            match IntervalJoinExec::try_replace(&n) {
                Some(exec) => {
                    replaced = true;
                    Ok(Transformed::new(
                        Arc::new(exec) as Arc<dyn ExecutionPlan>,
                        true,
                        TreeNodeRecursion::Jump,
                    ))
                }
                None => Ok(Transformed::no(n)),
            }
        })?
        .data;
    Ok(replaced.then_some(plan))
}

/// The interval of an [`IntervalJoinExec`]: column indices in the build (left) and probe (right)
/// inputs' schemas.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Interval {
    /// The probe side's value `d`.
    value: usize,
    /// The build side's lower bound.
    lower: usize,
    /// `lower <= d` (else `lower < d`).
    lower_inclusive: bool,
    /// The build side's upper bound.
    upper: usize,
    /// `d <= upper` (else `d < upper`).
    upper_inclusive: bool,
}

impl Interval {
    /// The interval of `filter` when it is exactly `lower <(=) d AND d <(=) upper` over columns
    /// of one supported type (see the module), `d` on the probe side, the bounds on the build side.
    fn of(filter: &JoinFilter, build: &SchemaRef, probe: &SchemaRef) -> Option<Self> {
        let conjuncts = split_conjunction(filter.expression());
        let [first, second] = conjuncts.as_slice() else {
            return None;
        };
        // Each comparison as (build column, probe column, bound is lower, inclusive).
        let side_of = |expr: &Arc<dyn PhysicalExpr>| -> Option<(JoinSide, usize)> {
            let column = expr.downcast_ref::<Column>()?;
            let index = filter.column_indices().get(column.index())?;
            Some((index.side, index.index))
        };
        let bound = |expr: &Arc<dyn PhysicalExpr>| -> Option<(usize, usize, bool, bool)> {
            let binary = expr.downcast_ref::<BinaryExpr>()?;
            let (left, right) = (side_of(binary.left())?, side_of(binary.right())?);
            // Normalised to `build OP probe`.
            let (build, probe, op) = match (left, right) {
                ((JoinSide::Left, b), (JoinSide::Right, p)) => (b, p, *binary.op()),
                ((JoinSide::Right, p), (JoinSide::Left, b)) => (b, p, binary.op().swap()?),
                _ => return None,
            };
            match op {
                Operator::LtEq => Some((build, probe, true, true)),
                Operator::Lt => Some((build, probe, true, false)),
                Operator::GtEq => Some((build, probe, false, true)),
                Operator::Gt => Some((build, probe, false, false)),
                _ => None,
            }
        };
        let (a, b) = (bound(first)?, bound(second)?);
        let ((lower, value, _, lower_inclusive), (upper, value_again, _, upper_inclusive)) =
            match (a.2, b.2) {
                (true, false) => (a, b),
                (false, true) => (b, a),
                _ => return None,
            };
        if value != value_again {
            return None;
        }
        let value_type = probe.fields().get(value)?.data_type();
        let supported = integer_key(value_type)
            || matches!(
                value_type,
                DataType::Date32 | DataType::Date64 | DataType::Timestamp(_, _)
            );
        let same =
            |index: usize| build.fields().get(index).map(|f| f.data_type()) == Some(value_type);
        (supported && same(lower) && same(upper)).then_some(Self {
            value,
            lower,
            lower_inclusive,
            upper,
            upper_inclusive,
        })
    }

    /// Whether a version starting at `lower` may contain `value`.
    fn starts_by(&self, lower: i64, value: i64) -> bool {
        if self.lower_inclusive {
            lower <= value
        } else {
            lower < value
        }
    }

    /// Whether a version ending at `upper` contains `value` (given it starts by it).
    fn ends_after(&self, upper: i64, value: i64) -> bool {
        if self.upper_inclusive {
            upper >= value
        } else {
            upper > value
        }
    }
}

/// An inner join of a build (left) input holding intervals with a probe (right) input, on
/// equality keys plus `lower <(=) d <(=) upper` (see the module). Plans as the `HashJoinExec` it
/// replaces (kept as `join`: same schema, partitioning, ordering, input requirements and
/// statistics).
pub struct IntervalJoinExec {
    join: Arc<dyn ExecutionPlan>,
    build: Arc<dyn ExecutionPlan>,
    probe: Arc<dyn ExecutionPlan>,
    on: Vec<(PhysicalExprRef, PhysicalExprRef)>,
    interval: Interval,
    mode: PartitionMode,
    /// The output's columns: a side and a column index in that side's input.
    columns: Vec<(JoinSide, usize)>,
    /// `CollectLeft`: the one build, shared by every output partition.
    shared: Mutex<Option<SharedVersions>>,
    metrics: ExecutionPlanMetricsSet,
}

/// The build of a `CollectLeft` join, awaited by every partition (errors shared by `Arc`).
type SharedVersions = Shared<BoxFuture<'static, Result<Arc<Versions>, Arc<DataFusionError>>>>;

impl fmt::Debug for IntervalJoinExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntervalJoinExec")
            .field("join", &self.join)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl IntervalJoinExec {
    /// `Some` when `node` is a `HashJoinExec` this operator computes identically (see the module).
    fn try_replace(node: &Arc<dyn ExecutionPlan>) -> Option<Self> {
        let join = node.downcast_ref::<HashJoinExec>()?;
        let mode = *join.partition_mode();
        if *join.join_type() != JoinType::Inner
            || join.null_equality() != NullEquality::NullEqualsNothing
            || join.null_aware
            || join.fetch().is_some()
            || !join.dynamic_expressions_produced().is_empty()
            || !matches!(
                mode,
                PartitionMode::Partitioned | PartitionMode::CollectLeft
            )
            || join.on().is_empty()
        {
            return None;
        }
        let (build, probe) = (join.left(), join.right());
        let (build_schema, probe_schema) = (build.schema(), probe.schema());
        // Keys of the same type on both sides, compared exactly (see `KeyIndex`).
        for (b, p) in join.on() {
            let data_type = b.data_type(&build_schema).ok()?;
            if data_type != p.data_type(&probe_schema).ok()? || !key_type_supported(&data_type) {
                return None;
            }
        }
        let interval = Interval::of(join.filter()?, &build_schema, &probe_schema)?;
        let build_width = build_schema.fields().len();
        let all: Vec<usize> = (0..build_width + probe_schema.fields().len()).collect();
        let projection: Vec<usize> = match &join.projection {
            Some(p) => p.iter().copied().collect(),
            None => all,
        };
        let columns = projection
            .into_iter()
            .map(|i| {
                if i < build_width {
                    (JoinSide::Left, i)
                } else {
                    (JoinSide::Right, i - build_width)
                }
            })
            .collect();
        Some(Self {
            join: Arc::clone(node),
            build: Arc::clone(build),
            probe: Arc::clone(probe),
            on: join.on().to_vec(),
            interval,
            mode,
            columns,
            shared: Mutex::new(None),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    /// The build of `partition` (or the shared one), as a future.
    fn versions(
        &self,
        partition: usize,
        context: &Arc<TaskContext>,
    ) -> Result<BoxFuture<'static, Result<Arc<Versions>>>> {
        let start = |partition: usize| -> Result<BoxFuture<'static, Result<Arc<Versions>>>> {
            let input = self.build.execute(partition, Arc::clone(context))?;
            let reservation = MemoryConsumer::new(format!("IntervalJoinExec[{partition}]"))
                .register(context.memory_pool());
            let keys: Vec<PhysicalExprRef> = self.on.iter().map(|(b, _)| Arc::clone(b)).collect();
            let interval = self.interval;
            let schema = self.build.schema();
            let metrics = MetricBuilder::new(&self.metrics);
            let build_time = metrics.subset_time("build_time", partition);
            let build_rows =
                MetricBuilder::new(&self.metrics).counter("build_input_rows", partition);
            Ok(async move {
                let mut batches = Vec::new();
                let mut input = input;
                while let Some(batch) = input.try_next().await? {
                    reservation.try_grow(batch.get_array_memory_size())?;
                    build_rows.add(batch.num_rows());
                    batches.push(batch);
                }
                let _timer = build_time.timer();
                Versions::build(&schema, batches, &keys, interval, reservation).map(Arc::new)
            }
            .boxed())
        };
        if self.mode != PartitionMode::CollectLeft {
            return start(partition);
        }
        let mut shared = self
            .shared
            .lock()
            .map_err(|_| DataFusionError::Internal("IntervalJoinExec: a poisoned lock".into()))?;
        let future = match &*shared {
            Some(future) => future.clone(),
            None => {
                let future = start(0)?.map(|r| r.map_err(Arc::new)).boxed().shared();
                *shared = Some(future.clone());
                future
            }
        };
        Ok(future.map(|r| r.map_err(DataFusionError::Shared)).boxed())
    }
}

impl DisplayAs for IntervalJoinExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let build = self.build.schema();
        let probe = self.probe.schema();
        let name = |schema: &SchemaRef, i: usize| {
            schema
                .fields()
                .get(i)
                .map_or_else(|| format!("#{i}"), |f| format!("{}@{i}", f.name()))
        };
        let on: Vec<String> = self.on.iter().map(|(b, p)| format!("({b}, {p})")).collect();
        let i = &self.interval;
        write!(
            f,
            "IntervalJoinExec: mode={:?}, on=[{}], interval={} {} {} {} {}",
            self.mode,
            on.join(", "),
            name(&build, i.lower),
            if i.lower_inclusive { "<=" } else { "<" },
            name(&probe, i.value),
            if i.upper_inclusive { "<=" } else { "<" },
            name(&build, i.upper),
        )
    }
}

impl ExecutionPlan for IntervalJoinExec {
    fn name(&self) -> &str {
        "IntervalJoinExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.join.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.build, &self.probe]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.join.apply_expressions(f)
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        self.join.input_distribution_requirements()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        // Probe rows are joined in their order.
        vec![false, true]
    }

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        self.join.child_stats_requests(partition)
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        self.join.statistics_from_inputs(input_stats, args)
    }

    #[allow(deprecated)] // the trait still requires it
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let join = Arc::clone(&self.join).with_new_children(children)?;
        Ok(match Self::try_replace(&join) {
            Some(exec) => Arc::new(exec),
            None => join,
        })
    }

    fn reset_state(self: Arc<Self>) -> Result<Arc<dyn ExecutionPlan>> {
        let join = Arc::clone(&self.join).reset_state()?;
        Ok(match Self::try_replace(&join) {
            Some(exec) => Arc::new(exec),
            None => join,
        })
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let versions = self.versions(partition, &context)?;
        let probe = self.probe.execute(partition, Arc::clone(&context))?;
        let state = Arc::new(Probe {
            schema: self.schema(),
            keys: self.on.iter().map(|(_, p)| Arc::clone(p)).collect(),
            interval: self.interval,
            columns: self.columns.clone(),
            batch_size: context.session_config().batch_size().max(1),
            metrics: BaselineMetrics::new(&self.metrics, partition),
        });
        let stream = futures::stream::once(async move {
            let versions = versions.await?;
            Ok::<_, DataFusionError>(probe.map(move |batch| {
                let joining = Joining::new(Arc::clone(&state), Arc::clone(&versions), batch?)?;
                Ok::<_, DataFusionError>(futures::stream::iter(joining))
            }))
        })
        .try_flatten()
        .try_flatten();
        Ok(make_cooperative(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            stream,
        ))))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// The build side, indexed: each key's versions sorted by lower bound.
struct Versions {
    /// Every build row (the input's batches concatenated).
    batch: RecordBatch,
    keys: KeyIndex,
    /// A group's versions are `versions[offsets[g]..offsets[g + 1]]`.
    offsets: Vec<u32>,
    versions: Vec<Version>,
    _reservation: MemoryReservation,
}

/// One build row that can match: its bounds, the largest upper bound of its group's versions
/// up to it (by lower bound), and its row. Kept together: a probe reads them in one cache line.
#[derive(Debug, Clone, Copy)]
struct Version {
    lower: i64,
    upper: i64,
    reach: i64,
    row: u32,
}

/// No group: a NULL key, or a key the build side does not have.
const NO_GROUP: u32 = u32::MAX;

/// The join keys' groups. One integer key (the usual surrogate or natural key) is looked up by
/// its value — through a vector when the build side's keys are dense, as DataFusion's hash join
/// does — any other keys by their arrow row encoding (equal values, equal bytes: the keys'
/// types are the same on both sides and not floating point).
enum KeyIndex {
    /// Group of key `k` at `groups[k - min]` ([`NO_GROUP`] when none).
    Dense {
        min: i64,
        groups: Vec<u32>,
    },
    Integer(HashMap<i64, u32>),
    Rows {
        converter: RowConverter,
        groups: HashMap<Box<[u8]>, u32>,
    },
}

/// Whether a key of this type is compared by this module (see [`KeyIndex`]).
fn key_type_supported(data_type: &DataType) -> bool {
    integer_key(data_type)
        || matches!(
            data_type,
            DataType::Boolean
                | DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Binary
                | DataType::LargeBinary
                | DataType::BinaryView
                | DataType::FixedSizeBinary(_)
                | DataType::Date32
                | DataType::Date64
                | DataType::Timestamp(_, _)
                | DataType::Decimal128(_, _)
                | DataType::Decimal256(_, _)
        )
}

/// An integer type whose values fit an `i64` exactly.
fn integer_key(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
    )
}

/// A column's values as 64-bit integers (the types [`Interval::of`] and [`integer_key`] accept).
fn as_i64(array: &ArrayRef) -> Result<ArrayRef> {
    Ok(cast(array, &DataType::Int64)?)
}

/// The key columns of `batch`.
fn key_columns(keys: &[PhysicalExprRef], batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
    keys.iter()
        .map(|k| k.evaluate(batch)?.into_array(batch.num_rows()))
        .collect()
}

/// Which rows have no NULL key.
fn non_null_keys(columns: &[ArrayRef], rows: usize) -> Vec<bool> {
    let mut valid = vec![true; rows];
    for column in columns {
        if let Some(nulls) = column.logical_nulls() {
            for (v, is_valid) in valid.iter_mut().zip(nulls.iter()) {
                *v &= is_valid;
            }
        }
    }
    valid
}

impl KeyIndex {
    /// The index of the build side's key `columns`, and each row's group.
    fn build(columns: &[ArrayRef], rows: usize) -> Result<(Self, Vec<u32>)> {
        let valid = non_null_keys(columns, rows);
        let mut ids = vec![NO_GROUP; rows];
        if let [column] = columns
            && integer_key(column.data_type())
        {
            let values = as_i64(column)?;
            let values = values.as_primitive::<Int64Type>().values();
            let mut groups: HashMap<i64, u32> = HashMap::new();
            for (row, value) in values.iter().enumerate() {
                if valid[row] {
                    let next = u32::try_from(groups.len()).map_err(|_| too_many())?;
                    ids[row] = *groups.entry(*value).or_insert(next);
                }
            }
            let (Some(min), Some(max)) = (groups.keys().min(), groups.keys().max()) else {
                return Ok((Self::Integer(groups), ids));
            };
            // Dense when the vector is at most a few times the size of the map.
            let span = i128::from(*max) - i128::from(*min) + 1;
            if span <= 4 * groups.len() as i128 + 1024 {
                let mut dense = vec![NO_GROUP; span as usize];
                for (key, group) in &groups {
                    dense[(*key - *min) as usize] = *group;
                }
                return Ok((
                    Self::Dense {
                        min: *min,
                        groups: dense,
                    },
                    ids,
                ));
            }
            return Ok((Self::Integer(groups), ids));
        }
        let fields = columns
            .iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect();
        let converter = RowConverter::new(fields)?;
        let encoded = converter.convert_columns(columns)?;
        let mut groups: HashMap<Box<[u8]>, u32> = HashMap::new();
        for (row, id) in ids.iter_mut().enumerate() {
            if valid[row] {
                let next = u32::try_from(groups.len()).map_err(|_| too_many())?;
                *id = *groups
                    .entry(encoded.row(row).as_ref().into())
                    .or_insert(next);
            }
        }
        Ok((Self::Rows { converter, groups }, ids))
    }

    /// The number of groups.
    fn len(&self) -> usize {
        match self {
            Self::Dense { groups, .. } => groups.iter().filter(|g| **g != NO_GROUP).count(),
            Self::Integer(groups) => groups.len(),
            Self::Rows { groups, .. } => groups.len(),
        }
    }

    /// Memory held, in bytes (approximate for the hash maps).
    fn size(&self) -> usize {
        match self {
            Self::Dense { groups, .. } => groups.capacity() * 4,
            Self::Integer(groups) => groups.capacity() * 13,
            Self::Rows { converter, groups } => {
                converter.size()
                    + groups
                        .iter()
                        .map(|(k, _)| k.len() + std::mem::size_of::<(Box<[u8]>, u32)>() + 1)
                        .sum::<usize>()
            }
        }
    }

    /// The group of one integer key, if the index is by integer and holds it.
    fn integer_group(&self, key: i64) -> Option<u32> {
        match self {
            Self::Dense { min, groups } => {
                let offset = usize::try_from(key.checked_sub(*min)?).ok()?;
                groups.get(offset).copied()
            }
            Self::Integer(groups) => groups.get(&key).copied(),
            Self::Rows { .. } => None,
        }
    }

    /// Each probe row's group ([`NO_GROUP`] for a NULL key or a key the build side lacks).
    fn probe(&self, columns: &[ArrayRef], rows: usize) -> Result<Vec<u32>> {
        let valid = non_null_keys(columns, rows);
        let mut ids = vec![NO_GROUP; rows];
        match (self, columns) {
            (Self::Dense { .. } | Self::Integer(_), [column]) => {
                let values = as_i64(column)?;
                let values = values.as_primitive::<Int64Type>().values();
                for (row, value) in values.iter().enumerate() {
                    if valid[row]
                        && let Some(group) = self.integer_group(*value)
                    {
                        ids[row] = group;
                    }
                }
            }
            (Self::Rows { converter, groups }, _) => {
                let encoded = converter.convert_columns(columns)?;
                for (row, id) in ids.iter_mut().enumerate() {
                    if valid[row]
                        && let Some(group) = groups.get(encoded.row(row).as_ref())
                    {
                        *id = *group;
                    }
                }
            }
            _ => {
                return Err(DataFusionError::Internal(
                    "IntervalJoinExec: probe keys do not match the build keys".into(),
                ));
            }
        }
        Ok(ids)
    }
}

impl Versions {
    /// Indexes the build side's `batches` (schema `schema`, their memory already in
    /// `reservation`) by `keys` and `interval`, keeping `reservation` at the memory held.
    /// Errors: the memory pool refuses, a key fails to evaluate, 2³² − 1 rows or more.
    fn build(
        schema: &SchemaRef,
        batches: Vec<RecordBatch>,
        keys: &[PhysicalExprRef],
        interval: Interval,
        reservation: MemoryReservation,
    ) -> Result<Self> {
        // The batches (already reserved) and their concatenation are held together for a moment.
        let size = reservation.size();
        reservation.try_grow(size)?;
        let batch = concat_batches(schema, &batches)?;
        drop(batches);
        reservation.try_resize(batch.get_array_memory_size())?;
        if batch.num_rows() >= NO_GROUP as usize {
            return Err(too_many());
        }
        let columns = key_columns(keys, &batch)?;
        let (keys, ids) = KeyIndex::build(&columns, batch.num_rows())?;
        let lower = as_i64(batch.column(interval.lower))?;
        let upper = as_i64(batch.column(interval.upper))?;
        let (lower, upper) = (
            lower.as_primitive::<Int64Type>(),
            upper.as_primitive::<Int64Type>(),
        );
        // (group, version) of every row that can match, sorted by group then lower bound.
        let mut entries: Vec<(u32, Version)> = Vec::with_capacity(batch.num_rows());
        for (row, group) in ids.iter().enumerate() {
            if *group == NO_GROUP || lower.is_null(row) || upper.is_null(row) {
                continue;
            }
            entries.push((
                *group,
                Version {
                    lower: lower.value(row),
                    upper: upper.value(row),
                    reach: upper.value(row),
                    row: u32::try_from(row).map_err(|_| too_many())?,
                },
            ));
        }
        entries.sort_unstable_by_key(|(group, v)| (*group, v.lower, v.row));

        let groups = keys.len();
        let mut offsets = vec![0u32; groups + 1];
        for (group, _) in &entries {
            offsets[*group as usize + 1] += 1;
        }
        for g in 1..offsets.len() {
            offsets[g] += offsets[g - 1];
        }
        let mut versions: Vec<Version> = entries.into_iter().map(|(_, v)| v).collect();
        for g in 0..groups {
            let (start, end) = (offsets[g] as usize, offsets[g + 1] as usize);
            for i in start + 1..end {
                versions[i].reach = versions[i].reach.max(versions[i - 1].reach);
            }
        }
        reservation.try_grow(
            versions.capacity() * std::mem::size_of::<Version>()
                + offsets.capacity() * 4
                + keys.size(),
        )?;
        Ok(Self {
            batch,
            keys,
            offsets,
            versions,
            _reservation: reservation,
        })
    }
}

fn too_many() -> DataFusionError {
    DataFusionError::ResourcesExhausted(
        "IntervalJoinExec: 4,294,967,295 rows or more on one side".into(),
    )
}

/// The probe side's state of one output partition.
struct Probe {
    schema: SchemaRef,
    keys: Vec<PhysicalExprRef>,
    interval: Interval,
    columns: Vec<(JoinSide, usize)>,
    batch_size: usize,
    metrics: BaselineMetrics,
}

/// One probe batch being joined: an iterator of output batches of about `batch_size` rows (a
/// probe row's matches are never split across two), computed as they are pulled.
struct Joining {
    probe: Arc<Probe>,
    versions: Arc<Versions>,
    batch: RecordBatch,
    /// Each row's group ([`NO_GROUP`]: no match) and value.
    groups: Vec<u32>,
    values: ArrayRef,
    /// The next row to join.
    next: usize,
}

impl Joining {
    fn new(probe: Arc<Probe>, versions: Arc<Versions>, batch: RecordBatch) -> Result<Self> {
        if batch.num_rows() >= NO_GROUP as usize {
            return Err(too_many());
        }
        let _timer = probe.metrics.elapsed_compute().timer();
        let groups = versions
            .keys
            .probe(&key_columns(&probe.keys, &batch)?, batch.num_rows())?;
        let values = as_i64(batch.column(probe.interval.value))?;
        Ok(Self {
            probe: Arc::clone(&probe),
            versions,
            batch,
            groups,
            values,
            next: 0,
        })
    }

    /// The next output batch, `None` when every row is joined.
    fn join_next(&mut self) -> Result<Option<RecordBatch>> {
        let probe = &self.probe;
        let versions = &self.versions;
        let values = self.values.as_primitive::<Int64Type>();
        let mut build_rows: Vec<u32> = Vec::new();
        let mut probe_rows: Vec<u32> = Vec::new();
        while self.next < self.groups.len() && build_rows.len() < probe.batch_size {
            let row = self.next;
            self.next += 1;
            let group = self.groups[row];
            if group == NO_GROUP || values.is_null(row) {
                continue;
            }
            let value = values.value(row);
            let (start, end) = (
                versions.offsets[group as usize] as usize,
                versions.offsets[group as usize + 1] as usize,
            );
            let group = &versions.versions[start..end];
            let started = group.partition_point(|v| probe.interval.starts_by(v.lower, value));
            let first = build_rows.len();
            for v in group[..started].iter().rev() {
                if !probe.interval.ends_after(v.reach, value) {
                    break;
                }
                if probe.interval.ends_after(v.upper, value) {
                    build_rows.push(v.row);
                }
            }
            // A probe row's matches in build order, as the hash join gives them (and as the
            // join's equivalence properties claim when the build side is ordered).
            build_rows[first..].sort_unstable();
            // `row` < 2³² − 1: checked in `new`.
            probe_rows.resize(build_rows.len(), row as u32);
        }
        if build_rows.is_empty() {
            return Ok(None);
        }
        probe
            .output(versions, &self.batch, &build_rows, &probe_rows)
            .map(Some)
    }
}

impl Iterator for Joining {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        let metrics = self.probe.metrics.clone();
        let _timer = metrics.elapsed_compute().timer();
        let next = self.join_next().transpose();
        if let Some(Ok(batch)) = &next {
            metrics.record_output(batch.num_rows());
        }
        next
    }
}

impl Probe {
    /// The output batch of matched pairs (`build_rows[i]` with `probe_rows[i]`).
    fn output(
        &self,
        versions: &Versions,
        batch: &RecordBatch,
        build_rows: &[u32],
        probe_rows: &[u32],
    ) -> Result<RecordBatch> {
        let build_indices = UInt32Array::from(build_rows.to_vec());
        let probe_indices = UInt32Array::from(probe_rows.to_vec());
        let columns = self
            .columns
            .iter()
            .map(|(side, i)| match side {
                JoinSide::Left => take(versions.batch.column(*i), &build_indices, None),
                _ => take(batch.column(*i), &probe_indices, None),
            })
            .collect::<std::result::Result<Vec<ArrayRef>, _>>()?;
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(build_rows.len())),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;

    /// A context planning with DataFusion's rules, plus `IntervalJoins` when `ruled`.
    fn context(ruled: bool, collect_left: bool) -> SessionContext {
        context_with(ruled, collect_left, 2)
    }

    /// [`context`] with `partitions` target partitions.
    fn context_with(ruled: bool, collect_left: bool, partitions: usize) -> SessionContext {
        let mut config = SessionConfig::new()
            .with_target_partitions(partitions)
            .with_batch_size(5);
        let threshold = if collect_left { usize::MAX } else { 0 };
        let options = config.options_mut();
        options.optimizer.hash_join_single_partition_threshold = threshold;
        options.optimizer.hash_join_single_partition_threshold_rows = threshold;
        let mut rules = datafusion::physical_optimizer::optimizer::PhysicalOptimizer::new().rules;
        if ruled {
            IntervalJoins::insert(&mut rules);
        }
        let state = datafusion::execution::SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .with_physical_optimizer_rules(rules)
            .build();
        SessionContext::new_with_state(state)
    }

    /// Dimension versions (overlapping, empty, NULL bounds and keys, a second key column) and
    /// facts (NULL dates and keys, keys without versions, dates on every boundary).
    /// `fact_small` and `dim_big`: the dimension the larger input (the hash join's probe side).
    const TABLES: [&str; 4] = [
        "CREATE TABLE dim AS SELECT * FROM (VALUES \
         (1, 'a', DATE '2026-01-01', DATE '2026-01-05', 'v1'), \
         (1, 'a', DATE '2026-01-05', DATE '2026-01-09', 'v2'), \
         (1, 'a', DATE '2026-01-09', DATE '2100-01-01', 'v3'), \
         (1, 'b', DATE '2026-01-01', DATE '2100-01-01', 'b1'), \
         (2, 'a', DATE '2026-01-01', DATE '2026-01-20', 'long'), \
         (2, 'a', DATE '2026-01-03', DATE '2026-01-04', 'short'), \
         (2, 'a', DATE '2026-01-03', DATE '2026-01-06', 'mid'), \
         (2, 'a', DATE '2026-01-07', DATE '2026-01-07', 'empty'), \
         (2, 'a', DATE '2026-01-08', DATE '2026-01-02', 'inverted'), \
         (3, 'a', NULL, DATE '2026-01-09', 'no start'), \
         (3, 'a', DATE '2026-01-02', NULL, 'no end'), \
         (3, 'a', DATE '2026-01-02', DATE '2026-01-04', 'closed'), \
         (NULL, 'a', DATE '2026-01-01', DATE '2100-01-01', 'no key'), \
         (4, NULL, DATE '2026-01-01', DATE '2100-01-01', 'half key'), \
         (5, 'a', DATE '2026-01-01', DATE '2026-01-02', 'x'), \
         (5, 'a', DATE '2026-01-01', DATE '2026-01-02', 'x twin')) \
         AS v(id, part, valid_from, valid_to, label)",
        "CREATE TABLE fact AS SELECT v.n * 100 + k.k AS n, v.id, v.part, v.d FROM (VALUES \
         (10, 1, 'a', DATE '2025-12-31'), (11, 1, 'a', DATE '2026-01-01'), \
         (12, 1, 'a', DATE '2026-01-04'), (13, 1, 'a', DATE '2026-01-05'), \
         (14, 1, 'a', DATE '2026-01-09'), (15, 1, 'a', DATE '2099-12-31'), \
         (16, 1, 'a', DATE '2100-01-01'), (17, 1, 'b', DATE '2026-01-05'), \
         (18, 2, 'a', DATE '2026-01-03'), (19, 2, 'a', DATE '2026-01-04'), \
         (20, 2, 'a', DATE '2026-01-05'), (21, 2, 'a', DATE '2026-01-07'), \
         (22, 2, 'a', DATE '2026-01-19'), (23, 2, 'a', DATE '2026-01-20'), \
         (24, 3, 'a', DATE '2026-01-03'), (25, 3, 'a', DATE '2026-01-08'), \
         (26, NULL, 'a', DATE '2026-01-03'), (27, 4, NULL, DATE '2026-01-03'), \
         (28, 1, 'a', NULL), (29, 9, 'a', DATE '2026-01-03'), (30, 5, 'a', DATE '2026-01-01'), \
         (31, 2, 'a', DATE '2026-01-03'), (32, 2, 'a', DATE '2026-01-08')) \
         AS v(n, id, part, d) \
         CROSS JOIN (SELECT value AS k FROM generate_series(0, 39)) AS k",
        "CREATE TABLE fact_small AS SELECT * FROM fact WHERE n % 100 = 0",
        "CREATE TABLE dim_big AS SELECT dim.*, k.value AS copy FROM dim \
         CROSS JOIN generate_series(0, 39) AS k",
    ];

    /// A context (see [`context`]) holding the test tables.
    async fn with_tables(ruled: bool, collect_left: bool) -> SessionContext {
        let ctx = context(ruled, collect_left);
        for table in TABLES {
            ctx.sql(table)
                .await
                .expect("create")
                .collect()
                .await
                .expect("create");
        }
        ctx
    }

    /// `sql`'s result (or plan, with `EXPLAIN`) as a table.
    async fn run(ctx: &SessionContext, sql: &str) -> String {
        let batches = ctx
            .sql(sql)
            .await
            .expect("plan")
            .collect()
            .await
            .expect("run");
        pretty_format_batches(&batches).expect("format").to_string()
    }

    /// `sql`'s rows planned with and without the rule (sorted: a hash join's order among one
    /// row's matches is unspecified), and the ruled plan.
    async fn both(sql: &str, collect_left: bool) -> (String, String, String) {
        let sorted = format!("SELECT * FROM ({sql}) ORDER BY 1, 2, 3, 4");
        let plain = run(&with_tables(false, collect_left).await, &sorted).await;
        let ruled = with_tables(true, collect_left).await;
        let plan = run(&ruled, &format!("EXPLAIN {sql}")).await;
        (plain, run(&ruled, &sorted).await, plan)
    }

    #[tokio::test]
    async fn rows_equal_the_hash_joins_for_every_bound_form_and_mode() {
        for sql in [
            "SELECT f.n, f.d, dim.label, dim.valid_from FROM fact f JOIN dim \
             ON f.id = dim.id AND f.part = dim.part AND f.d >= dim.valid_from AND f.d < dim.valid_to",
            "SELECT f.n, dim.label, f.d, dim.valid_to FROM fact f JOIN dim \
             ON f.id = dim.id AND dim.valid_from < f.d AND dim.valid_to >= f.d",
            "SELECT f.n, dim.label, f.d, f.part FROM fact f JOIN dim \
             ON f.id = dim.id AND f.d BETWEEN dim.valid_from AND dim.valid_to",
            "SELECT dim.label, f.n, dim.part, f.d FROM dim JOIN fact f \
             ON dim.id = f.id AND f.d > dim.valid_from AND f.d <= dim.valid_to",
            // One sparse integer key (a hash map), one string key (row encoding).
            "SELECT f.n, dim.label, f.id, f.d FROM (SELECT n, id * 1000000007 AS id, d FROM fact) f \
             JOIN (SELECT id * 1000000007 AS id, label, valid_from, valid_to FROM dim) dim \
             ON f.id = dim.id AND f.d >= dim.valid_from AND f.d < dim.valid_to",
            "SELECT f.n, dim.label, f.part, f.d FROM fact f JOIN dim \
             ON f.part = dim.part AND f.d >= dim.valid_from AND f.d < dim.valid_to",
            // Unsigned keys and Date64; decimal keys and zoned timestamps; a boolean key.
            "SELECT f.n, dim.label, f.k, f.t FROM \
             (SELECT n, arrow_cast(id, 'UInt32') AS k, arrow_cast(d, 'Date64') AS t FROM fact) f \
             JOIN (SELECT arrow_cast(id, 'UInt32') AS k, label, arrow_cast(valid_from, 'Date64') AS lo, \
             arrow_cast(valid_to, 'Date64') AS hi FROM dim) dim \
             ON f.k = dim.k AND f.t >= dim.lo AND f.t < dim.hi",
            "SELECT f.n, dim.label, f.k, f.t FROM (SELECT n, CAST(id AS DECIMAL(10, 2)) AS k, \
             arrow_cast(d, 'Timestamp(Microsecond, Some(\"+05:00\"))') AS t FROM fact) f \
             JOIN (SELECT CAST(id AS DECIMAL(10, 2)) AS k, label, \
             arrow_cast(valid_from, 'Timestamp(Microsecond, Some(\"+05:00\"))') AS lo, \
             arrow_cast(valid_to, 'Timestamp(Microsecond, Some(\"+05:00\"))') AS hi FROM dim) dim \
             ON f.k = dim.k AND f.t >= dim.lo AND f.t <= dim.hi",
            "SELECT f.n, dim.label, f.k, f.d FROM (SELECT n, id % 2 = 0 AS k, d FROM fact) f \
             JOIN (SELECT id % 2 = 0 AS k, label, valid_from, valid_to FROM dim) dim \
             ON f.k = dim.k AND f.d >= dim.valid_from AND f.d < dim.valid_to",
            // An empty build side.
            "SELECT f.n, dim.label, f.id, f.d FROM fact f JOIN (SELECT * FROM dim WHERE id > 100) dim \
             ON f.id = dim.id AND f.d >= dim.valid_from AND f.d < dim.valid_to",
            // Timestamps and integers.
            "SELECT f.n, dim.label, f.id, f.t FROM (SELECT n, id, CAST(d AS TIMESTAMP) AS t FROM fact) f \
             JOIN (SELECT id, label, CAST(valid_from AS TIMESTAMP) AS lo, \
             CAST(valid_to AS TIMESTAMP) AS hi FROM dim) dim ON f.id = dim.id AND f.t >= dim.lo AND f.t < dim.hi",
            "SELECT f.n, dim.label, f.id, f.t FROM (SELECT n, id, to_unixtime(d) AS t FROM fact) f \
             JOIN (SELECT id, label, to_unixtime(valid_from) AS lo, \
             to_unixtime(valid_to) AS hi FROM dim) dim ON f.id = dim.id AND f.t > dim.lo AND f.t <= dim.hi",
        ] {
            for collect_left in [false, true] {
                let (plain, ruled, plan) = both(sql, collect_left).await;
                assert_eq!(plain, ruled, "{sql} (collect_left: {collect_left})");
                assert!(
                    plan.contains("IntervalJoinExec"),
                    "{sql} (collect_left: {collect_left})\n{plan}"
                );
                let mode = if collect_left {
                    "CollectLeft"
                } else {
                    "Partitioned"
                };
                assert!(plan.contains(&format!("mode={mode}")), "{sql}\n{plan}");
            }
        }
    }

    #[test]
    fn integer_keys_are_looked_up_by_value_dense_or_hashed() {
        use datafusion::arrow::array::{Int32Array, StringArray};
        let dense: ArrayRef = Arc::new(Int32Array::from(vec![Some(7), None, Some(9), Some(7)]));
        let (index, ids) = KeyIndex::build(&[Arc::clone(&dense)], 4).expect("build");
        assert!(matches!(index, KeyIndex::Dense { min: 7, .. }));
        assert_eq!(ids, [0, NO_GROUP, 1, 0]);
        let probe: ArrayRef = Arc::new(Int32Array::from(vec![Some(9), Some(8), None, Some(-1)]));
        assert_eq!(
            index.probe(&[probe], 4).expect("probe"),
            [1, NO_GROUP, NO_GROUP, NO_GROUP]
        );
        let sparse: ArrayRef = Arc::new(Int32Array::from(vec![i32::MIN, i32::MAX]));
        let (index, ids) = KeyIndex::build(&[sparse], 2).expect("build");
        assert!(matches!(index, KeyIndex::Integer(_)));
        assert_eq!(ids, [0, 1]);
        let probe: ArrayRef = Arc::new(Int32Array::from(vec![i32::MAX, 0]));
        assert_eq!(index.probe(&[probe], 2).expect("probe"), [1, NO_GROUP]);
        let strings: ArrayRef = Arc::new(StringArray::from(vec![Some("a"), None, Some("a")]));
        let (index, ids) = KeyIndex::build(&[strings], 3).expect("build");
        assert!(matches!(index, KeyIndex::Rows { .. }));
        assert_eq!(ids, [0, NO_GROUP, 0]);
    }

    #[tokio::test]
    async fn a_count_of_the_join_reads_no_column() {
        let sql = "SELECT COUNT(*) FROM fact f JOIN dim \
             ON f.id = dim.id AND f.d >= dim.valid_from AND f.d < dim.valid_to";
        let ruled = with_tables(true, false).await;
        let plan = run(&ruled, &format!("EXPLAIN {sql}")).await;
        assert!(plan.contains("IntervalJoinExec"), "{plan}");
        let plain = run(&with_tables(false, false).await, sql).await;
        assert_eq!(plain, run(&ruled, sql).await);
        assert!(!plain.contains("| 0 "), "{plain}");
    }

    /// Ordered inputs: DataFusion's hash join claims its output ordered by the probe side's
    /// order, then the build side's, and drops the sort of an `ORDER BY` of both — so the
    /// operator must give a probe row's matches in build order too.
    #[tokio::test]
    async fn the_order_the_join_claims_holds_without_a_sort() {
        use datafusion::datasource::MemTable;
        use datafusion::prelude::col;
        let sql = "SELECT f.n, dim.valid_from, dim.label FROM fact_o f JOIN dim_o dim \
             ON f.id = dim.id AND f.d >= dim.valid_from AND f.d < dim.valid_to \
             ORDER BY f.n, dim.valid_from";
        let mut out = Vec::new();
        for ruled in [false, true] {
            let ctx = context_with(ruled, true, 1);
            for table in TABLES {
                run(&ctx, table).await;
            }
            for (name, query, key) in [
                ("fact_o", "SELECT * FROM fact ORDER BY n", "n"),
                (
                    "dim_o",
                    "SELECT * FROM dim ORDER BY valid_from",
                    "valid_from",
                ),
            ] {
                let frame = ctx.sql(query).await.expect("plan");
                let schema = Arc::new(frame.schema().as_arrow().clone());
                let batches = frame.collect().await.expect("run");
                let table = MemTable::try_new(schema, vec![batches])
                    .expect("table")
                    .with_sort_order(vec![vec![col(key).sort(true, false)]]);
                ctx.register_table(name, Arc::new(table)).expect("register");
            }
            let plan = run(&ctx, &format!("EXPLAIN {sql}")).await;
            assert!(!plan.contains("SortExec"), "{plan}");
            assert_eq!(plan.contains("IntervalJoinExec"), ruled, "{plan}");
            out.push(run(&ctx, sql).await);
        }
        assert_eq!(out[0], out[1]);
        // Fact 1800 (key 2 on 2026-01-03): `long` (from the 1st) before `short` and `mid`.
        let labels: Vec<&str> = out[1]
            .lines()
            .filter(|l| l.starts_with("| 1800 "))
            .filter_map(|l| l.split('|').nth(3))
            .map(str::trim)
            .collect();
        assert_eq!(labels.first(), Some(&"long"), "{}", out[1]);
        assert_eq!(labels.len(), 3, "{}", out[1]);
    }

    #[tokio::test]
    async fn a_known_row_finds_every_overlapping_version() {
        let (_, ruled, plan) = both(
            "SELECT f.n, dim.label, f.id, f.d FROM fact f JOIN dim \
             ON f.id = dim.id AND f.part = dim.part AND f.d >= dim.valid_from AND f.d < dim.valid_to",
            false,
        )
        .await;
        assert!(plan.contains("IntervalJoinExec"), "{plan}");
        let labels = |n: &str| -> Vec<String> {
            ruled
                .lines()
                .filter(|l| l.starts_with(&format!("| {n} ")))
                .map(|l| l.split('|').nth(2).unwrap_or_default().trim().to_owned())
                .collect()
        };
        // Fact 1800 (key 2, 2026-01-03) is in `long`, `short` and `mid`; 2400 (key 3) only in
        // `closed` (NULL bounds never match); 3000 in both twins; 2800 (NULL date) in none.
        assert_eq!(labels("1800"), ["long", "mid", "short"], "{ruled}");
        assert_eq!(labels("2400"), ["closed"], "{ruled}");
        assert_eq!(labels("3000"), ["x", "x twin"], "{ruled}");
        assert!(labels("2800").is_empty(), "{ruled}");
    }

    #[tokio::test]
    async fn a_dimension_on_the_probe_side_is_swapped_to_the_build_side() {
        let sql = "SELECT f.n, dim.label, dim.copy, f.d FROM fact_small f JOIN dim_big dim \
             ON f.id = dim.id AND f.d >= dim.valid_from AND f.d < dim.valid_to";
        let (plain, ruled, plan) = both(sql, false).await;
        assert_eq!(plain, ruled, "{sql}");
        assert!(plan.contains("IntervalJoinExec"), "{plan}");
        // DataFusion's own plan hashes the smaller fact side: the operator got it swapped.
        let explain = run(&with_tables(false, false).await, &format!("EXPLAIN {sql}")).await;
        assert!(explain.contains("on=[(id@1, id@0)]"), "{explain}");
        // CollectLeft cannot swap (the probe side is partitioned): DataFusion's join stays.
        let (plain, ruled, plan) = both(sql, true).await;
        assert_eq!(plain, ruled, "{sql}");
        assert!(plan.contains("HashJoinExec"), "{plan}");
    }

    #[tokio::test]
    async fn other_joins_keep_datafusions_operator() {
        for sql in [
            // A floating-point key (-0.0 and 0.0 are equal in SQL, not in their encoding).
            "SELECT f.n, dim.label, f.d, f.id FROM fact f JOIN dim \
             ON CAST(f.id AS DOUBLE) = CAST(dim.id AS DOUBLE) \
             AND f.d >= dim.valid_from AND f.d < dim.valid_to",
            // A LEFT join, another conjunct, a bound compared with an expression.
            "SELECT f.n, dim.label, f.d, f.id FROM fact f LEFT JOIN dim \
             ON f.id = dim.id AND f.d >= dim.valid_from AND f.d < dim.valid_to",
            "SELECT f.n, dim.label, f.d, f.id FROM fact f JOIN dim \
             ON f.id = dim.id AND f.d >= dim.valid_from AND f.d < dim.valid_to AND f.n <> dim.id",
            "SELECT f.n, dim.label, f.d, f.id FROM fact f JOIN dim \
             ON f.id = dim.id AND f.d >= dim.valid_from AND f.d < dim.valid_to + INTERVAL '1' DAY",
        ] {
            let (plain, ruled, plan) = both(sql, false).await;
            assert_eq!(plain, ruled, "{sql}");
            assert!(!plan.contains("IntervalJoinExec"), "{sql}\n{plan}");
            assert!(plan.contains("HashJoinExec"), "{sql}\n{plan}");
        }
    }
}
