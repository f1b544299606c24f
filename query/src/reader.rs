//! Parquet files opened through DataFusion's file metadata cache with their page index.
//!
//! DataFusion's Parquet opener asks its reader for the footer alone
//! (`PageIndexPolicy::Skip`) and, when the predicate can use pages, reads and parses the
//! page index afterwards itself, outside the cache. The cache then only ever holds footers,
//! and every query parsed the column and offset indexes of every file it opened again and
//! dropped them (a fifth of a single-host query's time). The reader here asks for the page
//! index together with the footer, so the cache keeps both and the opener finds the index
//! already loaded. With the metadata cached, planning can also narrow a filtered scan to
//! the bytes of the row groups it needs ([`matching_span`]) without any I/O.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, UInt64Array};
use arrow::datatypes::Schema;
use bytes::Bytes;
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::{Column, Result, ScalarValue};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::ParquetFileReaderFactory;
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::parquet::metadata::CachedParquetMetaData;
use datafusion::execution::cache::cache_manager::FileMetadataCache;
use datafusion::physical_optimizer::pruning::PruningPredicate;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::FutureExt;
use futures::future::BoxFuture;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, RowGroupMetaData};
use parquet::schema::types::SchemaDescriptor;

/// [`CachedParquetFileReaderFactory`] whose readers load the page index with the footer.
#[derive(Debug)]
pub(crate) struct IndexedReaderFactory(pub(crate) CachedParquetFileReaderFactory);

impl ParquetFileReaderFactory for IndexedReaderFactory {
    fn create_reader(
        &self,
        partition_index: usize,
        partitioned_file: PartitionedFile,
        metadata_size_hint: Option<usize>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> Result<Box<dyn AsyncFileReader + Send>> {
        let inner = self.0.create_reader(
            partition_index,
            partitioned_file,
            metadata_size_hint,
            metrics,
        )?;
        Ok(Box::new(IndexedReader(inner)))
    }
}

struct IndexedReader(Box<dyn AsyncFileReader + Send>);

impl AsyncFileReader for IndexedReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        self.0.get_bytes(range)
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        self.0.get_byte_ranges(ranges)
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        let options = options
            .cloned()
            .unwrap_or_default()
            .with_page_index_policy(PageIndexPolicy::Optional);
        async move { self.0.get_metadata(Some(&options)).await }.boxed()
    }
}

/// The byte range of `file` that holds its row groups whose statistics may match
/// `pruning` (the scan's filter), when the file's metadata is in `cache` (else `None`: the
/// whole file).
///
/// DataFusion splits a file scan into byte ranges, one per partition, when the bytes to read
/// reach `datafusion.optimizer.repartition_file_min_size` (10 MB), and each partition then
/// opens the file and prunes every row group again. Given the range of the row groups the
/// filter keeps, it splits only scans that are large, and the partitions of a split share
/// out those row groups alone; a scan of one row group (one host's hour) runs in one
/// partition that opens the file once. A row group belongs to the range that holds the
/// offset of its first page (as DataFusion's opener decides), so the range runs from the
/// first kept row group's first page to the first page of the row group after the last kept
/// one (or the end of the file); row groups follow each other in the file in index order,
/// and those in between that the filter rules out are skipped by the opener as before. The
/// opener prunes with the same filter and statistics, so the range never drops a row group
/// it would have read.
pub(crate) fn matching_span(
    cache: &FileMetadataCache,
    file: &PartitionedFile,
    pruning: &PruningPredicate,
    schema: &Schema,
) -> Result<Option<Span>> {
    let Some(metadata) = cached_metadata(cache, file) else {
        return Ok(None);
    };
    let groups = metadata.row_groups();
    let stats = RowGroupStats {
        groups,
        schema,
        parquet: metadata.file_metadata().schema_descr(),
    };
    // Statistics the predicate cannot use (a type it cannot compare, say) read the whole
    // file, as before: the opener prunes on its own.
    let Ok(keep) = pruning.prune(&stats) else {
        return Ok(None);
    };
    let first_page = |rg: &RowGroupMetaData| {
        let col = rg.column(0);
        col.dictionary_page_offset()
            .unwrap_or_else(|| col.data_page_offset())
    };
    let (Some(first), Some(last)) = (keep.iter().position(|&k| k), keep.iter().rposition(|&k| k))
    else {
        return Ok(Some(Span {
            bytes: 0..0,
            row_groups: 0,
            total_row_groups: groups.len(),
        }));
    };
    let end = groups
        .get(last + 1)
        .map(first_page)
        .unwrap_or(file.object_meta.size as i64);
    Ok(Some(Span {
        bytes: first_page(&groups[first])..end,
        row_groups: last + 1 - first,
        total_row_groups: groups.len(),
    }))
}

/// What [`matching_span`] keeps of a file.
#[derive(Debug, Clone)]
pub(crate) struct Span {
    pub(crate) bytes: Range<i64>,
    /// Row groups in `bytes` (those the filter may match, and any between them).
    pub(crate) row_groups: usize,
    pub(crate) total_row_groups: usize,
}

/// The row groups of a file as containers for [`PruningPredicate`], with the columns of the
/// table's schema (a column the file lacks has unknown statistics).
struct RowGroupStats<'a> {
    groups: &'a [RowGroupMetaData],
    schema: &'a Schema,
    parquet: &'a SchemaDescriptor,
}

impl RowGroupStats<'_> {
    fn converter(&self, column: &Column) -> Option<StatisticsConverter<'_>> {
        StatisticsConverter::try_new(&column.name, self.schema, self.parquet).ok()
    }
}

impl PruningStatistics for RowGroupStats<'_> {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.converter(column)?.row_group_mins(self.groups).ok()
    }

    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.converter(column)?.row_group_maxes(self.groups).ok()
    }

    fn num_containers(&self) -> usize {
        self.groups.len()
    }

    fn null_counts(&self, column: &Column) -> Option<ArrayRef> {
        let counts = self.converter(column)?.row_group_null_counts(self.groups);
        counts.ok().map(|c| Arc::new(c) as ArrayRef)
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        Some(Arc::new(UInt64Array::from_iter_values(
            self.groups.iter().map(|g| g.num_rows().max(0) as u64),
        )))
    }

    fn contained(&self, _column: &Column, _values: &HashSet<ScalarValue>) -> Option<BooleanArray> {
        None
    }
}

/// The Parquet metadata of `file` if the cache holds it for this version of the file.
fn cached_metadata(
    cache: &FileMetadataCache,
    file: &PartitionedFile,
) -> Option<Arc<ParquetMetaData>> {
    let entry = cache.get(&file.object_meta.location)?;
    if !entry.is_valid_for(&file.object_meta) {
        return None;
    }
    (*entry.file_metadata)
        .as_any()
        .downcast_ref::<CachedParquetMetaData>()
        .map(|m| Arc::clone(m.parquet_metadata()))
}
