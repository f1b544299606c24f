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
//! already loaded. Planning reads the same metadata (through the cache) to decide which
//! row groups and pages of a file a filtered scan reads ([`plan_file`]).

use std::collections::HashSet;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use arrow::array::{Array, ArrayRef, BooleanArray, UInt64Array};
use arrow::datatypes::{Schema, SchemaRef};
use bytes::Bytes;
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::{Column, DataFusionError, Result, ScalarValue};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::ParquetFileReaderFactory;
use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
use datafusion::datasource::physical_plan::parquet::{
    ParquetAccessPlan, ParquetFileMetrics, RowGroupAccess,
};
use datafusion::execution::cache::cache_manager::FileMetadataCache;
use datafusion::object_store::{ObjectStore, ObjectStoreExt};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::utils::split_conjunction;
use datafusion::physical_optimizer::pruning::PruningPredicate;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::future::BoxFuture;
use futures::{FutureExt, TryFutureExt};
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, RowSelection, RowSelector};
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::errors::ParquetError;
use parquet::file::metadata::{
    PageIndexPolicy, ParquetColumnIndex, ParquetMetaData, ParquetOffsetIndex, RowGroupMetaData,
};
use parquet::schema::types::SchemaDescriptor;
use vigil_engine::DataFile;

use crate::prune::pruning_predicate;

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
        async move {
            file_metadata(
                self.store.as_ref(),
                &self.cache,
                &self.file,
                self.metadata_size_hint,
            )
            .await
            .map_err(|e| ParquetError::General(e.to_string()))
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

/// A scan's filter as tests of a file's statistics: of its row groups' column statistics,
/// and of its pages' (the page index), one test per condition on a single column.
#[derive(Debug)]
pub(crate) struct StatsFilter {
    /// The whole filter; also what prunes sources by their time range
    /// ([`crate::prune::prune_sources`]).
    pub(crate) row_groups: Arc<PruningPredicate>,
    pages: Vec<PruningPredicate>,
}

impl StatsFilter {
    /// `None` when no statistics can rule anything out under `predicate`.
    pub(crate) fn new(predicate: &Arc<dyn PhysicalExpr>, schema: &SchemaRef) -> Option<Self> {
        let row_groups = pruning_predicate(predicate, schema)?;
        let pages = split_conjunction(predicate)
            .into_iter()
            .filter_map(|p| pruning_predicate(p, schema))
            .filter(|p| p.required_columns().single_column().is_some())
            .map(Arc::unwrap_or_clone)
            .collect();
        Some(Self { row_groups, pages })
    }
}

/// What a scan reads of one file: its [`ParquetAccessPlan`] and the byte range that holds
/// the row groups the plan reads.
///
/// DataFusion's Parquet opener can prune a file's row groups by their statistics and pages
/// by the page index itself, but it does so in every partition that opens the file, for
/// every row group and every condition of the filter separately (9–27 % of the CPU of the
/// single-host TSBS queries); here it is done once per file at planning,
/// one pass over all pages per condition, and the opener is told which row groups and
/// rows to read (its own pruning is turned off for these files).
///
/// The byte range: DataFusion splits a file scan into byte ranges, one per partition, when
/// the bytes to read reach `datafusion.optimizer.repartition_file_min_size` (10 MB). Given
/// the range of the row groups the filter keeps, it splits only scans that are large, and
/// the partitions of a split share out those row groups alone; a scan of one row group runs
/// in one partition that opens the file once. A row group belongs to the range that holds
/// the offset of its first page (as DataFusion's opener decides), so the range runs from the
/// first kept row group's first page to the first page of the row group after the last kept
/// one (or the end of the file); row groups in between that the plan skips are not read.
#[derive(Debug)]
pub(crate) struct FilePlan {
    pub(crate) access: ParquetAccessPlan,
    pub(crate) bytes: Range<i64>,
    /// Row groups the plan reads, and in the file.
    pub(crate) row_groups: usize,
    pub(crate) total_row_groups: usize,
    /// Rows the plan reads (of the row groups it reads, those in pages that may match).
    pub(crate) rows: u64,
    pub(crate) total_rows: u64,
}

/// The file's footer and page index, from `cache`; on a miss read through `store` (once
/// per file) and cached.
pub(crate) async fn file_metadata(
    store: &dyn ObjectStore,
    cache: &Arc<FileMetadataCache>,
    file: &PartitionedFile,
    size_hint: Option<usize>,
) -> Result<Arc<ParquetMetaData>> {
    DFParquetMetadata::new(store, &file.object_meta)
        .with_file_metadata_cache(Some(Arc::clone(cache)))
        .with_metadata_size_hint(size_hint)
        .with_page_index_policy(Some(PageIndexPolicy::Optional))
        .fetch_metadata()
        .await
        .map_err(|e| {
            DataFusionError::Execution(format!(
                "cannot read the metadata of {}: {e}",
                file.object_meta.location
            ))
        })
}

/// The [`FilePlan`] of a file of `file_size` bytes with `metadata`, for `filter` over the
/// table's `schema` (a column the file lacks has unknown statistics, and rules nothing
/// out). Statistics a test cannot use (a type it cannot compare, say) rule nothing out.
pub(crate) fn plan_file(
    metadata: &ParquetMetaData,
    file_size: u64,
    filter: &StatsFilter,
    schema: &Schema,
) -> FilePlan {
    let groups = metadata.row_groups();
    let parquet = metadata.file_metadata().schema_descr();
    let stats = RowGroupStats {
        groups,
        schema,
        parquet,
    };
    let keep = filter
        .row_groups
        .prune(&stats)
        .unwrap_or_else(|_| vec![true; groups.len()]);
    let kept: Vec<usize> = (0..groups.len()).filter(|&i| keep[i]).collect();
    // Per kept row group, the rows whose pages every condition may match.
    let mut selections: Vec<Option<RowSelection>> = vec![None; kept.len()];
    for predicate in &filter.pages {
        let Some(pages) = page_selections(metadata, &kept, predicate, schema) else {
            continue;
        };
        for (current, new) in selections.iter_mut().zip(pages) {
            *current = Some(match current.take() {
                Some(c) => c.intersection(&new),
                None => new,
            });
        }
    }
    let mut access = ParquetAccessPlan::new_none(groups.len());
    let mut rows = 0;
    for (&rg, selection) in kept.iter().zip(selections) {
        let group_rows = groups[rg].num_rows().max(0) as u64;
        match selection {
            None => {
                access.scan(rg);
                rows += group_rows;
            }
            Some(s) if !s.selects_any() => {}
            Some(s) if s.skipped_row_count() == 0 => {
                access.scan(rg);
                rows += group_rows;
            }
            Some(s) => {
                rows += s.row_count() as u64;
                access.set(rg, RowGroupAccess::Selection(s));
            }
        }
    }
    let first_page = |rg: &RowGroupMetaData| {
        let col = rg.column(0);
        col.dictionary_page_offset()
            .unwrap_or_else(|| col.data_page_offset())
    };
    let read: Vec<usize> = access.row_group_indexes();
    let bytes = match (read.first(), read.last()) {
        (Some(&first), Some(&last)) => {
            let end = groups
                .get(last + 1)
                .map(first_page)
                .unwrap_or(file_size as i64);
            first_page(&groups[first])..end
        }
        _ => 0..0,
    };
    FilePlan {
        access,
        bytes,
        row_groups: read.len(),
        total_row_groups: groups.len(),
        rows,
        total_rows: groups.iter().map(|g| g.num_rows().max(0) as u64).sum(),
    }
}

/// For each of the row groups `kept`, the rows of the pages whose statistics in the page
/// index may match `predicate` (a test of one column), as one pass over all their pages;
/// `None` when the file has no usable page index for the column.
fn page_selections(
    metadata: &ParquetMetaData,
    kept: &[usize],
    predicate: &PruningPredicate,
    schema: &Schema,
) -> Option<Vec<RowSelection>> {
    let column = predicate.required_columns().single_column()?;
    let parquet = metadata.file_metadata().schema_descr();
    let converter = StatisticsConverter::try_new(column.name(), schema, parquet).ok()?;
    let leaf = converter.parquet_column_index()?;
    let (column_index, offset_index) = (metadata.column_index()?, metadata.offset_index()?);
    // Rows in each page, and pages in each row group.
    let mut page_rows = Vec::new();
    let mut pages_per_group = Vec::with_capacity(kept.len());
    for &rg in kept {
        let pages = offset_index.get(rg)?.get(leaf)?.page_locations();
        let rows = metadata.row_group(rg).num_rows().max(0) as u64;
        for (i, page) in pages.iter().enumerate() {
            let end = pages.get(i + 1).map_or(rows, |p| p.first_row_index as u64);
            page_rows.push(end.checked_sub(page.first_row_index as u64)? as usize);
        }
        pages_per_group.push(pages.len());
    }
    let stats = PageStats {
        converter,
        column_index,
        offset_index,
        kept,
        page_rows: &page_rows,
    };
    let keep = predicate.prune(&stats).ok()?;
    if keep.len() != page_rows.len() {
        return None;
    }
    let mut page = 0;
    let selections = pages_per_group
        .into_iter()
        .map(|n| {
            let selectors = (page..page + n).map(|p| {
                if keep[p] {
                    RowSelector::select(page_rows[p])
                } else {
                    RowSelector::skip(page_rows[p])
                }
            });
            page += n;
            selectors.collect()
        })
        .collect();
    Some(selections)
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

/// The pages of one column in some row groups of a file, in order, as containers for a
/// [`PruningPredicate`] on that column.
struct PageStats<'a> {
    converter: StatisticsConverter<'a>,
    column_index: &'a ParquetColumnIndex,
    offset_index: &'a ParquetOffsetIndex,
    kept: &'a [usize],
    /// Rows in each page, from the offset index.
    page_rows: &'a [usize],
}

impl PageStats<'_> {
    /// `array` if it has one entry per page.
    fn checked<A: Array>(&self, array: A) -> Option<A> {
        (array.len() == self.page_rows.len()).then_some(array)
    }
}

impl PruningStatistics for PageStats<'_> {
    fn min_values(&self, _column: &Column) -> Option<ArrayRef> {
        let mins = self
            .converter
            .data_page_mins(self.column_index, self.offset_index, self.kept);
        self.checked(mins.ok()?)
    }

    fn max_values(&self, _column: &Column) -> Option<ArrayRef> {
        let maxes = self
            .converter
            .data_page_maxes(self.column_index, self.offset_index, self.kept);
        self.checked(maxes.ok()?)
    }

    fn num_containers(&self) -> usize {
        self.page_rows.len()
    }

    fn null_counts(&self, _column: &Column) -> Option<ArrayRef> {
        let counts =
            self.converter
                .data_page_null_counts(self.column_index, self.offset_index, self.kept);
        self.checked(counts.ok()?).map(|c| Arc::new(c) as ArrayRef)
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        Some(Arc::new(UInt64Array::from_iter_values(
            self.page_rows.iter().map(|&n| n as u64),
        )))
    }

    fn contained(&self, _column: &Column, _values: &HashSet<ScalarValue>) -> Option<BooleanArray> {
        None
    }
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

    /// Planning picks row groups by their statistics and, within them, pages by the page
    /// index, each condition over its own column's pages: one file of series `a` then `b`,
    /// 50 rows each a second apart, in row groups of 60 rows and pages of 10.
    #[test]
    fn a_file_plan_reads_the_row_groups_and_pages_that_may_match() {
        use arrow::array::{Int64Array, RecordBatch, StringArray, TimestampNanosecondArray};
        use arrow::datatypes::{DataType, Field, TimeUnit};
        use datafusion::common::DFSchema;
        use datafusion::logical_expr::{col, lit};
        use parquet::arrow::ArrowWriter;
        use parquet::file::metadata::ParquetMetaDataReader;
        use parquet::file::properties::{EnabledStatistics, WriterProperties};

        let utc = Some("UTC".into());
        let schema = Arc::new(Schema::new(vec![
            Field::new("s", DataType::Utf8, false),
            Field::new(
                "time",
                DataType::Timestamp(TimeUnit::Nanosecond, utc.clone()),
                false,
            ),
            Field::new("v", DataType::Int64, false),
        ]));
        let second = 1_000_000_000_i64;
        let series =
            StringArray::from_iter_values((0..100).map(|i| if i < 50 { "a" } else { "b" }));
        let times = TimestampNanosecondArray::from_iter_values((0..100).map(|i| i % 50 * second))
            .with_timezone("UTC");
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(series),
                Arc::new(times),
                Arc::new(Int64Array::from_iter_values(0..100)),
            ],
        )
        .unwrap();
        let props = WriterProperties::builder()
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_max_row_group_row_count(Some(60))
            .set_data_page_row_count_limit(10)
            .set_write_batch_size(10)
            .build();
        let mut bytes = Vec::new();
        let mut writer =
            ArrowWriter::try_new(&mut bytes, Arc::clone(&schema), Some(props)).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let bytes = Bytes::from(bytes);
        let metadata = ParquetMetaDataReader::new()
            .with_page_index_policy(PageIndexPolicy::Required)
            .parse_and_finish(&bytes)
            .unwrap();

        let ctx = SessionContext::new();
        let df_schema = DFSchema::try_from(Arc::clone(&schema)).unwrap();
        let plan = |filter: datafusion::logical_expr::Expr| {
            let predicate = ctx.create_physical_expr(filter, &df_schema).unwrap();
            let stats = StatsFilter::new(&predicate, &schema).unwrap();
            plan_file(&metadata, bytes.len() as u64, &stats, &schema)
        };
        let at = |s: i64| {
            lit(ScalarValue::TimestampNanosecond(
                Some(s * second),
                utc.clone(),
            ))
        };

        // b from 30 s: row group 0 holds b's first 10 s only (ruled out by its `time`
        // page); row group 1 (b from 10 s, four pages) reads its last two pages.
        let p = plan(col("s").eq(lit("b")).and(col("time").gt_eq(at(30))));
        assert_eq!(
            p.access.inner(),
            &[
                RowGroupAccess::Skip,
                RowGroupAccess::Selection(RowSelection::from(vec![
                    RowSelector::skip(20),
                    RowSelector::select(20)
                ])),
            ]
        );
        assert_eq!((p.row_groups, p.total_row_groups), (1, 2));
        assert_eq!((p.rows, p.total_rows), (20, 100));
        let rg1 = metadata.row_group(1).column(0);
        let rg1_start = rg1
            .dictionary_page_offset()
            .unwrap_or(rg1.data_page_offset());
        assert_eq!(p.bytes, rg1_start..bytes.len() as i64);

        // a up to 5 s: the first page of row group 0, which ends the byte range.
        let p = plan(col("s").eq(lit("a")).and(col("time").lt(at(5))));
        assert_eq!(
            p.access.inner(),
            &[
                RowGroupAccess::Selection(RowSelection::from(vec![
                    RowSelector::select(10),
                    RowSelector::skip(50)
                ])),
                RowGroupAccess::Skip,
            ]
        );
        assert_eq!(p.bytes.end, rg1_start);

        // A condition on two columns tests row groups, not pages; a value no statistics
        // admit skips every row group.
        let p = plan(col("s").eq(lit("b")).or(col("v").lt(lit(3_i64))));
        assert_eq!(
            p.access.inner(),
            &[RowGroupAccess::Scan, RowGroupAccess::Scan]
        );
        let p = plan(col("s").eq(lit("c")));
        assert_eq!(
            p.access.inner(),
            &[RowGroupAccess::Skip, RowGroupAccess::Skip]
        );
        assert_eq!((p.rows, p.bytes), (0, 0..0));
    }
}
