//! Every table of the store as a DataFusion `TableProvider`: a snapshot of the buffered
//! rows unioned with the table's Parquet files, pruned by time, deduplicated where files
//! may hold several writes of one (series, time).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::SortOptions;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::{DFSchema, DataFusionError, Result, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::object_store::ObjectStoreUrl;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::functions::datetime::expr_fn::date_bin;
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, col, lit};
use datafusion::physical_expr::expressions::{Column, Literal};
use datafusion::physical_expr::{LexOrdering, PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::union::UnionExec;
use vigil_engine::{DataFile, EVENTS_TABLE, Engine, TIME_COLUMN, TableSnapshot};

use crate::dedup::{DedupExec, SRC_COLUMN};
use crate::prune::prune_sources;
use crate::reader::{LocalFile, MappedReaderFactory, StatsFilter, file_metadata, plan_file};
use crate::recurrence::{FINGERPRINTS_TABLE, FingerprintsTable};
use crate::scan::{ScanInfo, VigilScanExec};

/// The tables of the store, listed live from the engine.
pub(crate) struct VigilSchema {
    pub(crate) engine: Arc<Engine>,
}

#[async_trait]
impl SchemaProvider for VigilSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.engine.table_names();
        if !names.iter().any(|n| n == FINGERPRINTS_TABLE) {
            names.push(FINGERPRINTS_TABLE.to_string());
            names.sort();
        }
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        // `fingerprints` is reserved: a measurement of that name is not reachable by SQL.
        if name == FINGERPRINTS_TABLE {
            return Ok(Some(Arc::new(FingerprintsTable {
                engine: Arc::clone(&self.engine),
            })));
        }
        Ok(self.engine.table_schema(name).map(|schema| {
            Arc::new(VigilTable {
                engine: Arc::clone(&self.engine),
                name: name.to_string(),
                schema: schema.arrow_schema(),
            }) as Arc<dyn TableProvider>
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        name == FINGERPRINTS_TABLE || self.engine.table_schema(name).is_some()
    }
}

impl std::fmt::Debug for VigilSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VigilSchema")
    }
}

impl std::fmt::Debug for VigilTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VigilTable({})", self.name)
    }
}

/// One table of the store.
pub(crate) struct VigilTable {
    engine: Arc<Engine>,
    name: String,
    /// The schema when the query was planned; columns added later are not seen.
    schema: SchemaRef,
}

impl VigilTable {
    pub(crate) fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }
}

#[async_trait]
impl TableProvider for VigilTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Filters prune files, row groups and pages; the rows that pass are filtered again.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let snapshot = self
            .engine
            .snapshot(&self.name)
            .map_err(|e| DataFusionError::External(Box::new(e)))?
            .ok_or_else(|| DataFusionError::Plan(format!("table '{}' not found", self.name)))?;
        plan_scan(
            state,
            &snapshot,
            Arc::clone(&self.schema),
            projection,
            filters,
            limit,
        )
        .await
    }
}

/// One input of a scan: a Parquet file or the buffered rows of a day.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    pub(crate) data: SourceData,
    pub(crate) partition: String,
    pub(crate) min_time: i64,
    pub(crate) max_time: i64,
    pub(crate) rows: u64,
    /// Age of the newest write in the source; higher wins.
    pub(crate) rank: u64,
}

#[derive(Debug, Clone)]
pub(crate) enum SourceData {
    File(Arc<DataFile>),
    Buffer(RecordBatch),
}

impl Source {
    pub(crate) fn all(snapshot: &TableSnapshot) -> Vec<Self> {
        let files = snapshot.files.iter().map(|f| {
            let m = f.meta();
            Source {
                data: SourceData::File(Arc::clone(f)),
                partition: m.partition.clone(),
                min_time: m.min_time,
                max_time: m.max_time,
                rows: m.rows,
                rank: m.max_lsn,
            }
        });
        let buffered = snapshot.buffered.iter().map(|b| Source {
            data: SourceData::Buffer(b.batch.clone()),
            partition: vigil_engine::partition_name(b.day),
            min_time: b.min_time,
            max_time: b.max_time,
            rows: b.batch.num_rows() as u64,
            // Buffered rows are newer than every file.
            rank: u64::MAX,
        });
        files.chain(buffered).collect()
    }
}

/// Builds the physical plan of a scan of `snapshot`; see the module docs.
pub(crate) async fn plan_scan(
    state: &dyn Session,
    snapshot: &TableSnapshot,
    schema: SchemaRef,
    projection: Option<&Vec<usize>>,
    filters: &[Expr],
    limit: Option<usize>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let df_schema = DFSchema::try_from(Arc::clone(&schema))?;
    let physical = |exprs: Vec<Expr>| -> Result<Option<Arc<dyn PhysicalExpr>>> {
        conjunction(exprs)
            .map(|e| state.create_physical_expr(e, &df_schema))
            .transpose()
    };
    let predicate = physical(filters.to_vec())?;
    let metrics = snapshot.name != EVENTS_TABLE;
    let key = if metrics {
        sort_key(snapshot, &schema)
    } else {
        SortKey::default()
    };
    // Only filters on key columns may prune sources that are deduplicated: a filter on a
    // field could otherwise drop a newer write and let an older one through.
    let key_names: Vec<&str> = key
        .columns
        .iter()
        .map(|&i| schema.field(i).name().as_str())
        .collect();
    let key_predicate = physical(
        filters
            .iter()
            .flat_map(split_conjunction)
            .filter(|e| {
                e.column_refs()
                    .iter()
                    .all(|c| key_names.contains(&c.name.as_str()))
            })
            .cloned()
            .collect(),
    )?;

    let all = Source::all(snapshot);
    let total_files = all
        .iter()
        .filter(|s| matches!(s.data, SourceData::File(_)))
        .count();
    let total_buffered = all.len() - total_files;
    let filter = predicate
        .as_ref()
        .and_then(|p| StatsFilter::new(p, &schema));
    let sources = match &filter {
        Some(filter) => prune_sources(&filter.row_groups, all)?,
        None => all,
    };
    let groups = if metrics {
        overlap_groups(sources)
    } else {
        sources.into_iter().map(|s| vec![s]).collect()
    };

    let mut plain_files = Vec::new();
    let mut plain_batches = Vec::new();
    let mut dedup = Vec::new();
    for group in groups {
        if group.len() == 1 {
            match group.into_iter().next().map(|s| s.data) {
                Some(SourceData::File(f)) => plain_files.push(f),
                Some(SourceData::Buffer(b)) => plain_batches.push(b),
                None => {}
            }
        } else {
            dedup.push(group);
        }
    }
    let mut info = ScanInfo {
        table: snapshot.name.clone(),
        files: plain_files.len()
            + dedup
                .iter()
                .flatten()
                .filter(|s| matches!(s.data, SourceData::File(_)))
                .count(),
        total_files,
        buffered: plain_batches.len()
            + dedup
                .iter()
                .flatten()
                .filter(|s| matches!(s.data, SourceData::Buffer(_)))
                .count(),
        total_buffered,
        dedup_groups: dedup.len(),
        row_groups: 0,
        total_row_groups: 0,
        rows: 0,
        total_rows: 0,
        read_rows: plain_batches
            .iter()
            .map(|b| b.num_rows() as u64)
            .chain(dedup.iter().flatten().map(|s| match &s.data {
                SourceData::File(f) => f.meta().rows,
                SourceData::Buffer(b) => b.num_rows() as u64,
            }))
            .sum(),
        last_values: None,
    };
    let mut leases: Vec<Arc<DataFile>> = plain_files.clone();
    for s in dedup.iter().flatten() {
        if let SourceData::File(f) = &s.data {
            leases.push(Arc::clone(f));
        }
    }

    let projection: Vec<usize> = match projection {
        Some(p) => p.clone(),
        None => (0..schema.fields().len()).collect(),
    };
    let projected = Arc::new(schema.project(&projection)?);
    let target = state.config().target_partitions().max(1);
    let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
    if !plain_files.is_empty() {
        let mut groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); target.min(plain_files.len())];
        let n = groups.len();
        // With a filter, each file is read as its statistics decide at planning: the row
        // groups and pages that may match, over the byte range of those row groups (so
        // that only large scans are split), with DataFusion's own pruning off.
        let url = ObjectStoreUrl::local_filesystem();
        let store = state.runtime_env().object_store(&url)?;
        let cache = state.runtime_env().cache_manager.get_file_metadata_cache();
        for (i, f) in plain_files.iter().enumerate() {
            let mut file = partitioned_file(f);
            if let Some(filter) = &filter {
                let metadata = file_metadata(store.as_ref(), &cache, &file, None).await?;
                let plan = plan_file(&metadata, file.object_meta.size, filter, &schema);
                info.row_groups += plan.row_groups;
                info.total_row_groups += plan.total_row_groups;
                info.rows += plan.rows;
                info.total_rows += plan.total_rows;
                info.read_rows += plan.rows;
                file = file
                    .with_range(plan.bytes.start, plan.bytes.end)
                    .with_extension(plan.access);
            } else {
                info.read_rows += f.meta().rows;
            }
            groups[i % n].push(file);
        }
        // No predicate of our own here: the filters reach these files through DataFusion's
        // physical filter pushdown (the `FilterExec` above moves into the Parquet source)
        // and filter their rows there.
        inputs.push(parquet_exec(
            state,
            &schema,
            groups,
            if filter.is_some() {
                Pruning::Planned
            } else {
                Pruning::Reader(None)
            },
            &projection,
            limit,
            None,
        )?);
    }
    if !plain_batches.is_empty() {
        let mut mem = MemorySourceConfig::try_new(
            &[plain_batches],
            Arc::clone(&schema),
            Some(projection.clone()),
        )?;
        if let Some(limit) = limit {
            mem = mem.with_limit(Some(limit));
        }
        inputs.push(DataSourceExec::from_data_source(mem));
    }
    for group in dedup {
        inputs.push(merge_plan(
            state,
            &schema,
            &key,
            group,
            key_predicate.as_ref(),
            &projection,
            true,
        )?);
    }
    let plan: Arc<dyn ExecutionPlan> = if inputs.is_empty() {
        Arc::new(EmptyExec::new(projected))
    } else {
        UnionExec::try_new(inputs)?
    };
    Ok(Arc::new(VigilScanExec::new(plan, leases, info)))
}

/// The order of a table's files and buffers.
#[derive(Debug, Clone, Default)]
pub(crate) struct SortKey {
    /// Indices of the key columns: for metrics the tags in series key order, then time;
    /// for events only time.
    pub(crate) columns: Vec<usize>,
    /// The width of the time slices that come first, if the table has them.
    pub(crate) slice: Option<i64>,
}

/// The order of `snapshot`'s files and buffers, over `schema`.
pub(crate) fn sort_key(snapshot: &TableSnapshot, schema: &SchemaRef) -> SortKey {
    let tags = snapshot
        .schema
        .tag_names()
        .filter(|_| snapshot.name != EVENTS_TABLE);
    SortKey {
        columns: tags
            .chain([TIME_COLUMN])
            .filter_map(|n| schema.index_of(n).ok())
            .collect(),
        slice: snapshot.schema.time_slice(),
    }
}

/// Sources grouped so that sources of one group may hold the same (series, time): same
/// partition and overlapping time ranges. A group of one needs no deduplication.
fn overlap_groups(sources: Vec<Source>) -> Vec<Vec<Source>> {
    let mut by_partition: BTreeMap<String, Vec<Source>> = BTreeMap::new();
    for s in sources {
        by_partition.entry(s.partition.clone()).or_default().push(s);
    }
    let mut groups = Vec::new();
    for (_, mut list) in by_partition {
        list.sort_by_key(|s| (s.min_time, s.max_time));
        let mut current: Vec<Source> = Vec::new();
        let mut end = i64::MIN;
        for s in list {
            if !current.is_empty() && s.min_time > end {
                groups.push(std::mem::take(&mut current));
            }
            end = end.max(s.max_time);
            current.push(s);
        }
        if !current.is_empty() {
            groups.push(current);
        }
    }
    groups
}

fn partitioned_file(f: &Arc<DataFile>) -> PartitionedFile {
    PartitionedFile::new(f.path().to_string_lossy().to_string(), f.meta().size_bytes)
        .with_extension(LocalFile::new(Arc::clone(f)))
}

/// Who chooses the row groups and pages a Parquet scan reads.
enum Pruning<'a> {
    /// DataFusion's reader, by their statistics, with this predicate and any filters
    /// pushed down to the scan later.
    Reader(Option<&'a Arc<dyn PhysicalExpr>>),
    /// Planning: every file carries its access plan ([`crate::reader::plan_file`]), and the
    /// reader does not prune them again.
    Planned,
}

fn parquet_exec(
    state: &dyn Session,
    schema: &SchemaRef,
    groups: Vec<Vec<PartitionedFile>>,
    pruning: Pruning<'_>,
    projection: &[usize],
    limit: Option<usize>,
    ordering: Option<LexOrdering>,
) -> Result<Arc<dyn ExecutionPlan>> {
    // Files are read from memory maps; footers and page indexes are cached across queries
    // (DataFusion's file metadata cache). See `reader.rs`.
    let url = ObjectStoreUrl::local_filesystem();
    let store = state.runtime_env().object_store(&url)?;
    let cache = state.runtime_env().cache_manager.get_file_metadata_cache();
    let mut options = state.table_options().parquet.clone();
    let predicate = match pruning {
        Pruning::Reader(predicate) => predicate,
        Pruning::Planned => {
            options.global.pruning = false;
            options.global.enable_page_index = false;
            None
        }
    };
    let mut source = ParquetSource::new(Arc::clone(schema))
        .with_table_parquet_options(options)
        .with_parquet_file_reader_factory(Arc::new(MappedReaderFactory { store, cache }));
    if let Some(p) = predicate {
        source = source.with_predicate(Arc::clone(p));
    }
    let config = FileScanConfigBuilder::new(url, Arc::new(source))
        .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
        .with_projection_indices(Some(projection.to_vec()))?
        .with_limit(limit)
        .with_output_ordering(ordering.into_iter().collect())
        .build();
    Ok(DataSourceExec::from_data_source(config))
}

/// The sort order of the store's files and buffers over `schema` (which holds `keys`):
/// with time slices of width `slice`, `date_bin(slice, time)` first; then the keys
/// ascending, nulls first (the order of Arrow's row format, which the engine sorts by).
fn store_order(
    state: &dyn Session,
    schema: &SchemaRef,
    keys: &[usize],
    slice: Option<i64>,
) -> Result<Vec<PhysicalSortExpr>> {
    let ascending = SortOptions {
        descending: false,
        nulls_first: true,
    };
    let mut order = Vec::with_capacity(keys.len() + 1);
    if let Some(width) = slice {
        let bin = date_bin(
            lit(ScalarValue::new_interval_mdn(0, 0, width)),
            col(TIME_COLUMN),
            lit(ScalarValue::TimestampNanosecond(
                Some(0),
                Some("UTC".into()),
            )),
        );
        let bin = state.create_physical_expr(bin, &DFSchema::try_from(Arc::clone(schema))?)?;
        order.push(PhysicalSortExpr::new(bin, ascending));
    }
    order.extend(keys.iter().map(|&i| {
        PhysicalSortExpr::new(
            Arc::new(Column::new(schema.field(i).name(), i)) as Arc<dyn PhysicalExpr>,
            ascending,
        )
    }));
    Ok(order)
}

/// Merge of sources by key and age into one sorted stream, keeping (with `dedup`) only
/// the newest write of each key, then projected to `projection`.
pub(crate) fn merge_plan(
    state: &dyn Session,
    schema: &SchemaRef,
    key: &SortKey,
    mut group: Vec<Source>,
    key_predicate: Option<&Arc<dyn PhysicalExpr>>,
    projection: &[usize],
    dedup: bool,
) -> Result<Arc<dyn ExecutionPlan>> {
    group.sort_by_key(|s| s.rank);
    // Read the requested columns plus the keys, in table order.
    let keys = &key.columns;
    let slice = key.slice;
    let mut read: Vec<usize> = projection.iter().chain(keys).copied().collect();
    read.sort_unstable();
    read.dedup();
    let read_schema = Arc::new(schema.project(&read)?);
    let read_keys: Vec<usize> = keys
        .iter()
        .filter_map(|k| read.iter().position(|r| r == k))
        .collect();
    let ordering = LexOrdering::new(store_order(state, schema, keys, slice)?)
        .ok_or_else(|| DataFusionError::Internal("table has no key columns".into()))?;
    let mut children: Vec<Arc<dyn ExecutionPlan>> = Vec::with_capacity(group.len());
    for (age, s) in group.iter().enumerate() {
        let scan: Arc<dyn ExecutionPlan> = match &s.data {
            SourceData::File(f) => parquet_exec(
                state,
                schema,
                vec![vec![partitioned_file(f)]],
                Pruning::Reader(key_predicate),
                &read,
                None,
                Some(ordering.clone()),
            )?,
            SourceData::Buffer(b) => {
                let mem = MemorySourceConfig::try_new(
                    &[vec![b.clone()]],
                    Arc::clone(schema),
                    Some(read.clone()),
                )?
                .try_with_sort_information(vec![ordering.clone()])?;
                DataSourceExec::from_data_source(mem)
            }
        };
        // Every column, plus the source's age as `__src`.
        let mut exprs = column_exprs(&read_schema);
        exprs.push((
            Arc::new(Literal::new(ScalarValue::UInt64(Some(age as u64)))),
            SRC_COLUMN.to_string(),
        ));
        children.push(Arc::new(ProjectionExec::try_new(exprs, scan)?));
    }
    let src_index = read.len();
    let mut merge_order = store_order(state, &read_schema, &read_keys, slice)?;
    merge_order.push(PhysicalSortExpr::new(
        Arc::new(Column::new(SRC_COLUMN, src_index)),
        SortOptions::default(),
    ));
    let merge_order = LexOrdering::new(merge_order)
        .ok_or_else(|| DataFusionError::Internal("empty merge order".into()))?;
    let union = UnionExec::try_new(children)?;
    let merged = Arc::new(SortPreservingMergeExec::new(merge_order.clone(), union));
    let deduped: Arc<dyn ExecutionPlan> = if dedup {
        Arc::new(DedupExec::try_new(merged, read_keys, merge_order)?)
    } else {
        // Drop `__src`.
        Arc::new(ProjectionExec::try_new(column_exprs(&read_schema), merged)?)
    };
    // Back to the requested columns, in the requested order.
    let exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = projection
        .iter()
        .map(|p| {
            let i = read.iter().position(|r| r == p).unwrap_or(0);
            let name = read_schema.field(i).name().clone();
            (
                Arc::new(Column::new(&name, i)) as Arc<dyn PhysicalExpr>,
                name,
            )
        })
        .collect();
    Ok(Arc::new(ProjectionExec::try_new(exprs, deduped)?))
}

/// Every column of `schema`, as projection expressions.
fn column_exprs(schema: &arrow::datatypes::Schema) -> Vec<(Arc<dyn PhysicalExpr>, String)> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            (
                Arc::new(Column::new(f.name(), i)) as Arc<dyn PhysicalExpr>,
                f.name().clone(),
            )
        })
        .collect()
}
