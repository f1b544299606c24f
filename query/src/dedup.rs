//! `DedupExec`: the metrics rule "(series, time) is unique, the later write wins" applied
//! to a stream sorted by series key, time and source age.
//!
//! The input is sorted by the key columns (tags, then `time`) and, within equal keys, by
//! the trailing `__src` column (older source first). Of every run of equal keys only the
//! last row — the newest write — is kept, and `__src` is dropped from the output. The
//! operator streams: it holds back one row across batch boundaries and nothing else.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arrow::array::{ArrayRef, BooleanArray, RecordBatch};
use arrow::compute::{concat_batches, filter_record_batch};
use arrow::datatypes::SchemaRef;
use arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, internal_err};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_expr::{LexOrdering, OrderingRequirements, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, ExecutionPlanProperties,
    Partitioning, PlanProperties,
};
use futures::{Stream, StreamExt};

/// Name of the column that orders rows of equal key by the age of their source.
pub(crate) const SRC_COLUMN: &str = "__src";

/// Keeps the last row of every run of equal keys; see the module docs.
#[derive(Debug)]
pub(crate) struct DedupExec {
    input: Arc<dyn ExecutionPlan>,
    /// Indices (in the input) of the key columns: tags then time.
    keys: Vec<usize>,
    /// The input order this needs: the keys, then `__src`.
    order: LexOrdering,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl DedupExec {
    /// `input` must end with the `__src` column; `order` (the keys, then `__src`) is the
    /// order it must have, in one partition (the optimizer is told so).
    pub(crate) fn try_new(
        input: Arc<dyn ExecutionPlan>,
        keys: Vec<usize>,
        order: LexOrdering,
    ) -> Result<Self> {
        let in_schema = input.schema();
        let n = in_schema.fields().len();
        if n == 0 || in_schema.field(n - 1).name() != SRC_COLUMN {
            return internal_err!("DedupExec input must end with the {SRC_COLUMN} column");
        }
        let schema = Arc::new(in_schema.project(&(0..n - 1).collect::<Vec<_>>())?);
        // The output keeps the input's order on the key columns.
        let mut eq = EquivalenceProperties::new(Arc::clone(&schema));
        if let Some(ordering) = input.equivalence_properties().output_ordering() {
            let kept: Vec<_> = ordering
                .iter()
                .take_while(|e| {
                    e.expr
                        .downcast_ref::<datafusion::physical_expr::expressions::Column>()
                        .is_some_and(|c| c.index() < n - 1)
                })
                .cloned()
                .collect();
            eq.add_ordering(kept);
        }
        let properties = Arc::new(PlanProperties::new(
            eq,
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(Self {
            input,
            keys,
            order,
            schema,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }
}

impl DisplayAs for DedupExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self
            .keys
            .iter()
            .map(|&i| self.schema.field(i).name().as_str())
            .collect();
        write!(f, "DedupExec: keep last per [{}]", names.join(", "))
    }
}

impl ExecutionPlan for DedupExec {
    fn name(&self) -> &str {
        "DedupExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        vec![Distribution::SinglePartition]
    }

    fn required_input_ordering(&self) -> Vec<Option<OrderingRequirements>> {
        vec![Some(OrderingRequirements::from(self.order.clone()))]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return internal_err!("DedupExec takes one child");
        }
        Ok(Arc::new(Self::try_new(
            children.remove(0),
            self.keys.clone(),
            self.order.clone(),
        )?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 || self.input.output_partitioning().partition_count() != 1 {
            return internal_err!("DedupExec runs on one sorted input partition");
        }
        let input = self.input.execute(0, context)?;
        let in_schema = self.input.schema();
        let fields = self
            .keys
            .iter()
            .map(|&i| SortField::new(in_schema.field(i).data_type().clone()))
            .collect();
        Ok(Box::pin(DedupStream {
            input,
            keys: self.keys.clone(),
            schema: Arc::clone(&self.schema),
            converter: RowConverter::new(fields)?,
            held: None,
            done: false,
            baseline: BaselineMetrics::new(&self.metrics, partition),
            dropped: MetricBuilder::new(&self.metrics).counter("rows_replaced", partition),
        }))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

struct DedupStream {
    input: SendableRecordBatchStream,
    keys: Vec<usize>,
    schema: SchemaRef,
    converter: RowConverter,
    /// The last row seen (output columns only) and its key, not yet known to be the last
    /// of its run.
    held: Option<(RecordBatch, OwnedRow)>,
    done: bool,
    baseline: BaselineMetrics,
    dropped: Count,
}

impl DedupStream {
    /// Output columns of `batch` (without `__src`).
    fn strip(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let n = batch.num_columns();
        Ok(batch.project(&(0..n - 1).collect::<Vec<_>>())?)
    }

    /// Rows of `batch` that are the last of their run, plus the held row if `batch`
    /// starts a new run; the batch's last row becomes the held row.
    fn process(&mut self, batch: &RecordBatch) -> Result<Option<RecordBatch>> {
        let rows_in = batch.num_rows();
        if rows_in == 0 {
            return Ok(None);
        }
        let key_columns: Vec<ArrayRef> = self
            .keys
            .iter()
            .map(|&i| Arc::clone(batch.column(i)))
            .collect();
        let rows = self.converter.convert_columns(&key_columns)?;
        let stripped = self.strip(batch)?;
        let mut out = Vec::with_capacity(2);
        if let Some((held, key)) = self.held.take() {
            if key.row() != rows.row(0) {
                out.push(held);
            } else {
                self.dropped.add(1);
            }
        }
        let keep: BooleanArray = (0..rows_in)
            .map(|i| Some(i + 1 < rows_in && rows.row(i) != rows.row(i + 1)))
            .collect();
        let kept = filter_record_batch(&stripped, &keep)?;
        self.dropped.add(rows_in - 1 - kept.num_rows());
        if kept.num_rows() > 0 {
            out.push(kept);
        }
        self.held = Some((
            stripped.slice(rows_in - 1, 1),
            rows.row(rows_in - 1).owned(),
        ));
        Ok(match out.len() {
            0 => None,
            1 => out.pop(),
            _ => Some(concat_batches(&self.schema, &out)?),
        })
    }
}

impl Stream for DedupStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            let poll = self.input.poll_next_unpin(cx);
            let result = match poll {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => Some(Err(e)),
                Poll::Ready(Some(Ok(batch))) => {
                    let elapsed = self.baseline.elapsed_compute().clone();
                    let timer = elapsed.timer();
                    let r = self.process(&batch);
                    timer.done();
                    match r {
                        Ok(None) => continue,
                        Ok(Some(b)) => Some(Ok(b)),
                        Err(e) => Some(Err(e)),
                    }
                }
                Poll::Ready(None) => {
                    self.done = true;
                    self.held.take().map(|(b, _)| Ok(b))
                }
            };
            return self.baseline.record_poll(Poll::Ready(result));
        }
    }
}

impl RecordBatchStream for DedupStream {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}
