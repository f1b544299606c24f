//! Pruning of whole sources (Parquet files, buffered days) by their time range, with
//! DataFusion's `PruningPredicate`: whatever form the filter takes (`BETWEEN`, `>=`,
//! `date_trunc(...)` comparisons it can rewrite), a source whose `time` range cannot
//! match is not read at all.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, TimestampNanosecondArray, UInt64Array};
use arrow::datatypes::SchemaRef;
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::{Column, Result, ScalarValue};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::pruning::{PruningPredicate, PruningPredicateBuilder};
use vigil_engine::TIME_COLUMN;

use crate::table::Source;

/// Time range and row count of a source.
#[derive(Debug, Clone, Copy)]
struct TimeRange {
    min: i64,
    max: i64,
    rows: u64,
}

struct Stats(Vec<TimeRange>);

impl Stats {
    fn times(&self, column: &Column, f: impl Fn(&TimeRange) -> i64) -> Option<ArrayRef> {
        (column.name == TIME_COLUMN).then(|| {
            Arc::new(
                TimestampNanosecondArray::from_iter_values(self.0.iter().map(f))
                    .with_timezone("UTC"),
            ) as ArrayRef
        })
    }
}

impl PruningStatistics for Stats {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.times(column, |r| r.min)
    }

    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.times(column, |r| r.max)
    }

    fn num_containers(&self) -> usize {
        self.0.len()
    }

    fn null_counts(&self, column: &Column) -> Option<ArrayRef> {
        (column.name == TIME_COLUMN)
            .then(|| Arc::new(UInt64Array::from(vec![0u64; self.0.len()])) as ArrayRef)
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        Some(Arc::new(UInt64Array::from_iter_values(
            self.0.iter().map(|r| r.rows),
        )))
    }

    fn contained(&self, _column: &Column, _values: &HashSet<ScalarValue>) -> Option<BooleanArray> {
        None
    }
}

/// `predicate` as a test of statistics: of sources' time ranges here, and of row groups'
/// column statistics in [`crate::reader::plan_file`]; `None` when it cannot rule any
/// container out.
pub(crate) fn pruning_predicate(
    predicate: &Arc<dyn PhysicalExpr>,
    schema: &SchemaRef,
) -> Option<Arc<PruningPredicate>> {
    PruningPredicateBuilder::new()
        .with_file_schema(Arc::clone(schema))
        .build(Arc::clone(predicate))
}

/// The sources that may hold rows matching `pruning`.
pub(crate) fn prune_sources(
    pruning: &PruningPredicate,
    sources: Vec<Source>,
) -> Result<Vec<Source>> {
    let ranges = sources
        .iter()
        .map(|s| TimeRange {
            min: s.min_time,
            max: s.max_time,
            rows: s.rows,
        })
        .collect();
    let keep = pruning.prune(&Stats(ranges))?;
    Ok(sources
        .into_iter()
        .zip(keep)
        .filter_map(|(s, k)| k.then_some(s))
        .collect())
}
