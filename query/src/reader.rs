//! Parquet files opened through DataFusion's file metadata cache with their page index.
//!
//! DataFusion's Parquet opener asks its reader for the footer alone
//! (`PageIndexPolicy::Skip`) and, when the predicate can use pages, reads and parses the
//! page index afterwards itself, outside the cache. The cache then only ever holds footers,
//! and every query parsed the column and offset indexes of every file it opened again and
//! dropped them (a fifth of a single-host query's time). The reader here asks for the page
//! index together with the footer, so the cache keeps both and the opener finds the index
//! already loaded. With the metadata cached, planning can also narrow a time-filtered scan
//! to the bytes of the row groups it needs ([`time_span`]) without any I/O.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::common::Result;
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
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, RowGroupMetaData};
use parquet::file::statistics::Statistics;
use vigil_engine::TIME_COLUMN;

use crate::prune::{TimeRange, may_match};

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

/// The byte range of `file` that holds its row groups whose time range may match
/// `pruning`, when the file's metadata is in `cache` (else `None`: the whole file).
///
/// DataFusion splits a file scan into byte ranges, one per partition, when the bytes to read
/// reach `datafusion.optimizer.repartition_file_min_size` (10 MB), and each partition then
/// opens the file and prunes every row group again. Given the range of the row groups a
/// query's time filter keeps, it splits only scans that are large, and the partitions of a
/// split share out those row groups alone. A row group belongs to the range that holds the
/// offset of its first page (as DataFusion's opener decides), so the range runs from the
/// first kept row group's first page to the first page of the row group after the last kept
/// one (or the end of the file); row groups follow each other in the file in index order,
/// and those in between that the filter rules out are skipped by the opener as before.
pub(crate) fn time_span(
    cache: &FileMetadataCache,
    file: &PartitionedFile,
    pruning: &PruningPredicate,
) -> Result<Option<Range<i64>>> {
    let Some(metadata) = cached_metadata(cache, file) else {
        return Ok(None);
    };
    let groups = metadata.row_groups();
    let Some(time) = metadata
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.path().parts() == [TIME_COLUMN])
    else {
        return Ok(None);
    };
    let mut ranges = Vec::with_capacity(groups.len());
    for rg in groups {
        let Some(Statistics::Int64(stats)) = rg.column(time).statistics() else {
            return Ok(None);
        };
        let (Some(&min), Some(&max)) = (stats.min_opt(), stats.max_opt()) else {
            return Ok(None);
        };
        ranges.push(TimeRange {
            min,
            max,
            rows: rg.num_rows().max(0) as u64,
        });
    }
    let keep = may_match(pruning, ranges)?;
    let first_page = |rg: &RowGroupMetaData| {
        let col = rg.column(0);
        col.dictionary_page_offset()
            .unwrap_or_else(|| col.data_page_offset())
    };
    let (Some(first), Some(last)) = (keep.iter().position(|&k| k), keep.iter().rposition(|&k| k))
    else {
        return Ok(Some(0..0));
    };
    let end = groups
        .get(last + 1)
        .map(first_page)
        .unwrap_or(file.object_meta.size as i64);
    Ok(Some(first_page(&groups[first])..end))
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
