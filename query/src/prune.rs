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
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use vigil_engine::TIME_COLUMN;

use crate::table::Source;

struct Stats<'a>(&'a [Source]);

impl Stats<'_> {
    fn times(&self, column: &Column, f: impl Fn(&Source) -> i64) -> Option<ArrayRef> {
        (column.name == TIME_COLUMN).then(|| {
            Arc::new(
                TimestampNanosecondArray::from_iter_values(self.0.iter().map(f))
                    .with_timezone("UTC"),
            ) as ArrayRef
        })
    }
}

impl PruningStatistics for Stats<'_> {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.times(column, |s| s.min_time)
    }

    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.times(column, |s| s.max_time)
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
            self.0.iter().map(|s| s.rows),
        )))
    }

    fn contained(&self, _column: &Column, _values: &HashSet<ScalarValue>) -> Option<BooleanArray> {
        None
    }
}

/// The sources that may hold rows matching `predicate`.
pub(crate) fn prune_sources(
    predicate: &Arc<dyn PhysicalExpr>,
    schema: &SchemaRef,
    sources: Vec<Source>,
) -> Result<Vec<Source>> {
    let Some(pruning) = PruningPredicateBuilder::new()
        .with_file_schema(Arc::clone(schema))
        .build(Arc::clone(predicate))
    else {
        return Ok(sources);
    };
    let keep = pruning.prune(&Stats(&sources))?;
    Ok(sources
        .into_iter()
        .zip(keep)
        .filter_map(|(s, k)| k.then_some(s))
        .collect())
}
