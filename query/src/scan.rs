//! `VigilScanExec`: the root of a table scan. It keeps the scan's Parquet files alive
//! (a compaction cannot delete them while the query runs) and shows in `EXPLAIN` how
//! many files and buffered days the time filters pruned.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, internal_err};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::filter_pushdown::{FilterDescription, FilterPushdownPhase};
use datafusion::physical_plan::projection::{ProjectionExec, make_with_child};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::{Stream, StreamExt};
use vigil_engine::DataFile;

/// What a scan reads, for `EXPLAIN`.
#[derive(Debug, Clone)]
pub(crate) struct ScanInfo {
    pub(crate) table: String,
    pub(crate) files: usize,
    pub(crate) total_files: usize,
    pub(crate) buffered: usize,
    pub(crate) total_buffered: usize,
    pub(crate) dedup_groups: usize,
    /// Row groups of the filtered plain files that the scan reads, and in all; rows in the
    /// pages it reads of them, and in all ([`crate::reader::plan_file`]).
    pub(crate) row_groups: usize,
    pub(crate) total_row_groups: usize,
    pub(crate) rows: u64,
    pub(crate) total_rows: u64,
    /// Rows the scan reads at most: those of the pages it reads of filtered files, every
    /// row of the other files and of buffered data (deciding whether a query runs in
    /// parallel, [`crate::QueryConfig::parallel_rows`]).
    pub(crate) read_rows: u64,
    /// Read from the last-value cache: this many series, newest per these tags.
    pub(crate) last_values: Option<(usize, Option<Vec<String>>)>,
}

impl ScanInfo {
    pub(crate) fn last_values(table: &str, series: usize, group_by: Option<Vec<String>>) -> Self {
        Self {
            table: table.to_string(),
            files: 0,
            total_files: 0,
            buffered: 0,
            total_buffered: 0,
            dedup_groups: 0,
            row_groups: 0,
            total_row_groups: 0,
            rows: 0,
            total_rows: 0,
            read_rows: series as u64,
            last_values: Some((series, group_by)),
        }
    }
}

/// The rows the scans of `plan` read together (see [`ScanInfo::read_rows`]); `None` when
/// it scans no table.
pub(crate) fn rows_read(plan: &Arc<dyn ExecutionPlan>) -> Option<u64> {
    let mut rows = None;
    let _ = plan.apply(|node| {
        if let Some(scan) = node.downcast_ref::<VigilScanExec>() {
            *rows.get_or_insert(0) += scan.info.read_rows;
        }
        Ok(TreeNodeRecursion::Continue)
    });
    rows
}

#[derive(Debug)]
pub(crate) struct VigilScanExec {
    input: Arc<dyn ExecutionPlan>,
    leases: Arc<Vec<Arc<DataFile>>>,
    info: ScanInfo,
    properties: Arc<PlanProperties>,
}

impl VigilScanExec {
    pub(crate) fn new(
        input: Arc<dyn ExecutionPlan>,
        leases: Vec<Arc<DataFile>>,
        info: ScanInfo,
    ) -> Self {
        Self::with_leases(input, Arc::new(leases), info)
    }

    fn with_leases(
        input: Arc<dyn ExecutionPlan>,
        leases: Arc<Vec<Arc<DataFile>>>,
        info: ScanInfo,
    ) -> Self {
        let properties = Arc::clone(input.properties());
        Self {
            input,
            leases,
            info,
            properties,
        }
    }
}

impl DisplayAs for VigilScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.info;
        if let Some((series, group_by)) = &i.last_values {
            write!(
                f,
                "VigilScanExec: table={}, last_value_cache: series={series}",
                i.table
            )?;
            if let Some(tags) = group_by {
                write!(f, ", newest per {}", tags.join(", "))?;
            }
            return Ok(());
        }
        write!(
            f,
            "VigilScanExec: table={}, files={} of {} ({} pruned by time), buffered_days={} of {} ({} pruned), dedup_groups={}",
            i.table,
            i.files,
            i.total_files,
            i.total_files - i.files,
            i.buffered,
            i.total_buffered,
            i.total_buffered - i.buffered,
            i.dedup_groups
        )?;
        if i.total_row_groups > 0 {
            write!(
                f,
                ", row_groups={} of {}, rows={} of {}",
                i.row_groups, i.total_row_groups, i.rows, i.total_rows
            )?;
        }
        Ok(())
    }
}

impl ExecutionPlan for VigilScanExec {
    fn name(&self) -> &str {
        "VigilScanExec"
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

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return internal_err!("VigilScanExec takes one child");
        }
        Ok(Arc::new(Self::with_leases(
            children.remove(0),
            Arc::clone(&self.leases),
            self.info.clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        Ok(Box::pin(LeaseStream {
            inner: self.input.execute(partition, context)?,
            _leases: Arc::clone(&self.leases),
        }))
    }

    /// A projection that narrows the scan moves below it, towards the sources: a Parquet
    /// source then decodes only the columns asked for, not those that only its pushed-down
    /// filter reads (the host name of a one-host query).
    fn try_swapping_with_projection(
        &self,
        projection: &ProjectionExec,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        if projection.expr().len() >= self.schema().fields().len() {
            return Ok(None);
        }
        Ok(Some(Arc::new(Self::with_leases(
            make_with_child(projection, &self.input)?,
            Arc::clone(&self.leases),
            self.info.clone(),
        ))))
    }

    /// Filters pass through to the sources below, which use them to prune row groups
    /// and pages. (Deduplicated sources refuse filters on non-key columns themselves.)
    fn gather_filters_for_pushdown(
        &self,
        _phase: FilterPushdownPhase,
        parent_filters: Vec<Arc<dyn PhysicalExpr>>,
        _config: &ConfigOptions,
    ) -> Result<FilterDescription> {
        FilterDescription::from_children(parent_filters, &self.children())
    }
}

/// A partition's stream, holding the scan's files until it is dropped.
struct LeaseStream {
    inner: SendableRecordBatchStream,
    _leases: Arc<Vec<Arc<DataFile>>>,
}

impl Stream for LeaseStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

impl RecordBatchStream for LeaseStream {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
}
