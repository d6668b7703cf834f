//! BigQuery's `SUM` over INT64: an error on overflow, as BigQuery raises, where DataFusion's sum
//! wraps around silently. Registered under DataFusion's own name (`sum`), so every `SUM` plans
//! it; other input types (FLOAT64, NUMERIC, intervals), `SUM(DISTINCT …)` and window frames are
//! DataFusion's sum unchanged.
//! <https://cloud.google.com/bigquery/docs/reference/standard-sql/aggregate_functions#sum>

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array};
use datafusion::arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::expr::{AggregateFunctionParams, WindowFunctionParams};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, GroupsAccumulator, ReversedUDAF,
    Signature, utils::AggregateOrderSensitivity,
};

/// The checked `sum`, to register in a session (it replaces DataFusion's).
pub fn checked_sum() -> AggregateUDF {
    AggregateUDF::new_from_impl(CheckedSum {
        inner: datafusion::functions_aggregate::sum::sum_udaf(),
    })
}

#[derive(Debug)]
struct CheckedSum {
    inner: Arc<AggregateUDF>,
}

impl PartialEq for CheckedSum {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner
    }
}

impl Eq for CheckedSum {}

impl std::hash::Hash for CheckedSum {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.inner.hash(state);
    }
}

/// INT64 sums that are not DISTINCT take the checked path.
fn checked(args: &AccumulatorArgs) -> bool {
    !args.is_distinct && args.return_field.data_type() == &DataType::Int64
}

fn overflow() -> datafusion::common::DataFusionError {
    datafusion::common::DataFusionError::Execution("SUM: int64 overflow".into())
}

impl AggregateUDFImpl for CheckedSum {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn schema_name(&self, params: &AggregateFunctionParams) -> Result<String> {
        self.inner.inner().schema_name(params)
    }

    fn human_display(&self, params: &AggregateFunctionParams) -> Result<String> {
        self.inner.inner().human_display(params)
    }

    fn display_name(&self, params: &AggregateFunctionParams) -> Result<String> {
        self.inner.inner().display_name(params)
    }

    fn window_function_schema_name(&self, params: &WindowFunctionParams) -> Result<String> {
        self.inner.inner().window_function_schema_name(params)
    }

    fn window_function_display_name(&self, params: &WindowFunctionParams) -> Result<String> {
        self.inner.inner().window_function_display_name(params)
    }

    fn return_field(&self, arg_fields: &[FieldRef]) -> Result<FieldRef> {
        self.inner.inner().return_field(arg_fields)
    }

    fn is_nullable(&self) -> bool {
        self.inner.inner().is_nullable()
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        if checked(&args) {
            Ok(Box::new(SumAccumulator::default()))
        } else {
            self.inner.accumulator(args)
        }
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        self.inner.state_fields(args)
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        checked(&args) || self.inner.groups_accumulator_supported(args)
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        if checked(&args) {
            Ok(Box::new(SumGroups::default()))
        } else {
            self.inner.create_groups_accumulator(args)
        }
    }

    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        self.inner.inner().create_sliding_accumulator(args)
    }

    fn reverse_expr(&self) -> ReversedUDAF {
        ReversedUDAF::Identical
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        AggregateOrderSensitivity::Insensitive
    }

    fn default_value(&self, data_type: &DataType) -> Result<ScalarValue> {
        self.inner.default_value(data_type)
    }
}

/// One group's running INT64 sum.
#[derive(Debug, Default)]
struct SumAccumulator {
    sum: Option<i64>,
}

impl SumAccumulator {
    fn add(&mut self, values: &ArrayRef) -> Result<()> {
        let values = values.as_primitive::<Int64Type>();
        for v in values.iter().flatten() {
            let s = self.sum.get_or_insert(0);
            *s = s.checked_add(v).ok_or_else(overflow)?;
        }
        Ok(())
    }
}

impl Accumulator for SumAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.add(&values[0])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.add(&states[0])
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.evaluate()?])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Int64(self.sum))
    }

    fn size(&self) -> usize {
        size_of_val(self)
    }
}

/// Running INT64 sums per group (NULL for a group with no non-NULL value).
#[derive(Debug, Default)]
struct SumGroups {
    sums: Vec<i64>,
    seen: Vec<bool>,
}

impl SumGroups {
    fn add(
        &mut self,
        values: &ArrayRef,
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.sums.resize(total_num_groups, 0);
        self.seen.resize(total_num_groups, false);
        let values = values.as_primitive::<Int64Type>();
        for (row, &group) in group_indices.iter().enumerate() {
            if values.is_null(row) || opt_filter.is_some_and(|f| !f.value(row) || f.is_null(row)) {
                continue;
            }
            self.sums[group] = self.sums[group]
                .checked_add(values.value(row))
                .ok_or_else(overflow)?;
            self.seen[group] = true;
        }
        Ok(())
    }

    fn emit(&mut self, emit_to: EmitTo) -> ArrayRef {
        let sums = emit_to.take_needed(&mut self.sums);
        let seen = emit_to.take_needed(&mut self.seen);
        Arc::new(Int64Array::from_iter(
            sums.into_iter()
                .zip(seen)
                .map(|(s, seen)| seen.then_some(s)),
        ))
    }
}

impl GroupsAccumulator for SumGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.add(&values[0], group_indices, opt_filter, total_num_groups)
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.add(&values[0], group_indices, None, total_num_groups)
    }

    /// Each row's own state: its value, NULL where filtered out.
    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let values = values[0].as_primitive::<Int64Type>();
        let state: Int64Array = values
            .iter()
            .enumerate()
            .map(|(row, v)| match opt_filter {
                Some(f) if f.is_null(row) || !f.value(row) => None,
                _ => v,
            })
            .collect();
        Ok(vec![Arc::new(state)])
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        Ok(self.emit(emit_to))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.emit(emit_to)])
    }

    fn size(&self) -> usize {
        self.sums.capacity() * size_of::<i64>() + self.seen.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_sum_and_refuse_overflow() {
        let mut g = SumGroups::default();
        let values: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None, Some(2), Some(5)]));
        g.update_batch(&[values], &[0, 0, 1, 0], None, 3)
            .expect("sums");
        let out = g.evaluate(EmitTo::All).expect("evaluate");
        let out = out.as_primitive::<Int64Type>();
        assert_eq!(out.iter().collect::<Vec<_>>(), vec![Some(6), Some(2), None]);
        let mut g = SumGroups::default();
        let big: ArrayRef = Arc::new(Int64Array::from(vec![i64::MAX, 1]));
        assert!(g.update_batch(&[big], &[0, 0], None, 1).is_err());
        let mut one = SumAccumulator {
            sum: Some(i64::MAX),
        };
        if let Err(e) = one.update_batch(&[Arc::new(Int64Array::from(vec![1])) as ArrayRef]) {
            assert!(e.to_string().contains("overflow"));
        } else {
            panic!("an overflow must be an error");
        }
    }
}
