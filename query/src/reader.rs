//! Parquet files read from memory maps, with their metadata and page index cached.
//!
//! Reads: a store file is mapped into memory when a scan first reads it and stays mapped
//! while it is in the store ([`LocalFile`]), and every column chunk the decoder asks for
//! is a slice of the mapping. DataFusion's own reader asks the object store for
//! each set of ranges, which copies them out of the page cache on a blocking thread (a
//! thread hand-off and a copy for every row group a query opens).
//!
//! Metadata: DataFusion's Parquet opener asks its reader for the footer alone
//! (`PageIndexPolicy::Skip`) and, when the predicate can use pages, reads and parses the
//! page index afterwards itself, outside the cache. The cache then only ever holds footers,
//! and every query parsed the column and offset indexes of every file it opened again and
//! dropped them (a fifth of a single-host query's time). The reader here asks for the page
//! index together with the footer, so the cache keeps both and the opener finds the index
//! already loaded. With the metadata cached, planning can also narrow a filtered scan to
//! the bytes of the row groups it needs ([`matching_span`]) without any I/O.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use arrow::array::{ArrayRef, BooleanArray, UInt64Array};
use arrow::datatypes::Schema;
use bytes::Bytes;
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::{Column, Result, ScalarValue};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::ParquetFileReaderFactory;
use datafusion::datasource::physical_plan::parquet::ParquetFileMetrics;
use datafusion::datasource::physical_plan::parquet::metadata::{
    CachedParquetMetaData, DFParquetMetadata,
};
use datafusion::execution::cache::cache_manager::FileMetadataCache;
use datafusion::object_store::{ObjectStore, ObjectStoreExt};
use datafusion::physical_optimizer::pruning::PruningPredicate;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::future::BoxFuture;
use futures::{FutureExt, TryFutureExt};
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::errors::ParquetError;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, RowGroupMetaData};
use parquet::schema::types::SchemaDescriptor;
use vigil_engine::DataFile;

/// A data file of the store, attached to each [`PartitionedFile`] of a scan
/// ([`PartitionedFile::with_extension`]) and read from its memory mapping
/// ([`DataFile::bytes`], made on its first read and kept while the file is in the store).
#[derive(Debug)]
pub(crate) struct LocalFile {
    file: Arc<DataFile>,
    /// The mapping as far as the file reaches now, checked once per scan.
    map: OnceLock<std::result::Result<Bytes, String>>,
}

impl LocalFile {
    pub(crate) fn new(file: Arc<DataFile>) -> Self {
        Self {
            file,
            map: OnceLock::new(),
        }
    }

    /// The file's mapping, cut to the file's length now. The store never changes a file
    /// once written, but the mapping outlives scans: were the file cut short behind the
    /// store's back, reading the mapping past its new end would kill the process
    /// (`SIGBUS`); this way the scan fails with an error naming the file instead.
    fn map(&self) -> parquet::errors::Result<&Bytes> {
        let map = self.map.get_or_init(|| {
            let path = self.file.path();
            let cannot = |e: std::io::Error| format!("{}: cannot map: {e}", path.display());
            let map = self.file.bytes().map_err(cannot)?;
            let len = std::fs::metadata(path).map_err(cannot)?.len();
            Ok(map.slice(..map.len().min(usize::try_from(len).unwrap_or(usize::MAX))))
        });
        map.as_ref().map_err(|e| ParquetError::General(e.clone()))
    }

    /// Bytes `range` of the file, without copying.
    fn bytes(&self, range: Range<u64>) -> parquet::errors::Result<Bytes> {
        let map = self.map()?;
        match (usize::try_from(range.start), usize::try_from(range.end)) {
            (Ok(start), Ok(end)) if start <= end && end <= map.len() => Ok(map.slice(start..end)),
            _ => Err(ParquetError::General(format!(
                "{}: bytes {}..{} are past the end of the file ({} bytes); was it changed \
                 outside Vigil?",
                self.file.path().display(),
                range.start,
                range.end,
                map.len()
            ))),
        }
    }
}

/// Readers over [`LocalFile`] mappings, with footers and page indexes from (and into)
/// DataFusion's file metadata cache.
#[derive(Debug)]
pub(crate) struct MappedReaderFactory {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) cache: Arc<FileMetadataCache>,
}

impl ParquetFileReaderFactory for MappedReaderFactory {
    fn create_reader(
        &self,
        partition_index: usize,
        file: PartitionedFile,
        metadata_size_hint: Option<usize>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> Result<Box<dyn AsyncFileReader + Send>> {
        let location = file.object_meta.location.as_ref();
        let metrics = ParquetFileMetrics::new(partition_index, location, metrics);
        let local = file.extensions.get_arc::<LocalFile>();
        Ok(Box::new(MappedReader {
            metrics,
            local,
            file,
            store: Arc::clone(&self.store),
            cache: Arc::clone(&self.cache),
            metadata_size_hint,
        }))
    }
}

/// Reads from the file's mapping; a file without a [`LocalFile`] (one in another object
/// store) is read through `store`.
struct MappedReader {
    metrics: ParquetFileMetrics,
    local: Option<Arc<LocalFile>>,
    file: PartitionedFile,
    store: Arc<dyn ObjectStore>,
    cache: Arc<FileMetadataCache>,
    metadata_size_hint: Option<usize>,
}

impl AsyncFileReader for MappedReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        let len = range.end.saturating_sub(range.start);
        self.metrics.bytes_scanned.add(len as usize);
        match &self.local {
            Some(local) => futures::future::ready(local.bytes(range)).boxed(),
            None => {
                let location = &self.file.object_meta.location;
                self.store
                    .get_range(location, range)
                    .map_err(|e| ParquetError::External(Box::new(e)))
                    .boxed()
            }
        }
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        let total: u64 = ranges.iter().map(|r| r.end.saturating_sub(r.start)).sum();
        self.metrics.bytes_scanned.add(total as usize);
        match &self.local {
            Some(local) => {
                futures::future::ready(ranges.into_iter().map(|r| local.bytes(r)).collect()).boxed()
            }
            None => async move {
                let location = &self.file.object_meta.location;
                self.store
                    .get_ranges(location, &ranges)
                    .await
                    .map_err(|e| ParquetError::External(Box::new(e)))
            }
            .boxed(),
        }
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        // From the cache; on a miss the footer and page index are read through the object
        // store (once per file) and cached.
        async move {
            DFParquetMetadata::new(self.store.as_ref(), &self.file.object_meta)
                .with_file_metadata_cache(Some(Arc::clone(&self.cache)))
                .with_metadata_size_hint(self.metadata_size_hint)
                .with_page_index_policy(Some(PageIndexPolicy::Optional))
                .fetch_metadata()
                .await
                .map_err(|e| {
                    ParquetError::General(format!(
                        "cannot read the metadata of {}: {e}",
                        self.file.object_meta.location
                    ))
                })
        }
        .boxed()
    }
}

impl Drop for MappedReader {
    fn drop(&mut self) {
        let ratio = &self.metrics.scan_efficiency_ratio;
        ratio.add_part(self.metrics.bytes_scanned.value());
        ratio.set_total(self.file.object_meta.size as usize);
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

#[cfg(test)]
mod tests {
    use datafusion::object_store::local::LocalFileSystem;
    use datafusion::prelude::SessionContext;
    use vigil_engine::FileMeta;

    use super::*;

    /// A file with a [`LocalFile`] is read from its mapping, one without through the
    /// object store: the same bytes either way. A range past the end of a mapping is an
    /// error (the local object store would return the bytes up to the end).
    #[tokio::test]
    async fn mapped_and_store_reads_agree() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.parquet");
        std::fs::write(&path, b"0123456789").unwrap();
        let ctx = SessionContext::new();
        let factory = MappedReaderFactory {
            store: Arc::new(LocalFileSystem::new()),
            cache: ctx.runtime_env().cache_manager.get_file_metadata_cache(),
        };
        let plain = PartitionedFile::new(path.to_string_lossy().to_string(), 10);
        let meta = FileMeta {
            path: "f.parquet".into(),
            partition: "2026-01-01".into(),
            rows: 0,
            size_bytes: 10,
            min_time: 0,
            max_time: 0,
            max_lsn: 0,
        };
        let local = LocalFile::new(Arc::new(DataFile::new(dir.path(), meta)));
        let mapped = plain.clone().with_extension(local);
        for (file, is_mapped) in [(plain, false), (mapped, true)] {
            let metrics = ExecutionPlanMetricsSet::new();
            let mut r = factory.create_reader(0, file, None, &metrics).unwrap();
            assert_eq!(&r.get_bytes(2..5).await.unwrap()[..], b"234");
            let parts = r.get_byte_ranges(vec![0..1, 8..10]).await.unwrap();
            assert_eq!(parts, [&b"0"[..], &b"89"[..]]);
            if is_mapped {
                let past_end = r.get_bytes(8..11).await.unwrap_err().to_string();
                assert!(
                    past_end.contains("past the end of the file (10 bytes)"),
                    "{past_end}"
                );
            }
        }
    }
}
