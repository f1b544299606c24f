//! The last-value cache: the newest row of every series of a metric table, so that
//! "the last reading of every host" does not read the whole table.
//!
//! The cache covers the table's Parquet files; a query adds the buffered rows on top.
//! Every flush folds the newest rows of what it wrote into the cache, under the same lock
//! that installs the new manifest, so the cache always matches the manifest in force.
//! Compaction rewrites rows without changing them and leaves the cache alone; retention
//! removes rows, so it marks the table's cache stale. A stale cache (and every cache after
//! a start) is rebuilt by reading the table's files once, while flushes keep folding what
//! they write into a separate delta, which is applied on top of the rebuilt rows.
//!
//! "Newest" follows the store's rule: the largest `time`, and of equal times the later
//! write.

use std::collections::HashMap;
use std::fs::File;
use std::sync::Arc;

use arrow::array::{RecordBatch, UInt32Array};
use arrow::compute::{concat_batches, take_record_batch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{Error, Result};
use crate::persist::align_to;
use crate::schema::TableSchema;
use crate::snapshot::DataFile;

/// Rows read per batch while rebuilding from Parquet.
const REBUILD_BATCH_ROWS: usize = 64 * 1024;

/// The cache of every table, kept with the manifest it matches.
#[derive(Debug, Default)]
pub(crate) struct LastValues {
    tables: HashMap<String, Entry>,
    /// Bumped whenever rows leave the store (retention): a rebuild that read the files
    /// before the bump must not be installed.
    epoch: u64,
}

#[derive(Debug, Clone)]
enum Entry {
    /// The newest row of each series over all files of the manifest.
    Ready(RecordBatch),
    /// Not built. Holds the newest rows of the files flushed since it went stale.
    Stale(Option<RecordBatch>),
    /// The table has more series than the cache keeps; queries read the files.
    TooMany,
}

/// What a query needs to answer from the cache, taken under the engine's locks.
#[derive(Debug)]
pub(crate) enum CacheView {
    Ready(RecordBatch),
    /// Rebuild from `files` (oldest write first), then apply `delta`.
    Stale {
        files: Vec<Arc<DataFile>>,
        delta: Option<RecordBatch>,
        epoch: u64,
    },
    TooMany {
        files: Vec<Arc<DataFile>>,
    },
}

impl LastValues {
    /// The cache of `table`, or what it takes to rebuild it. `files` are the table's
    /// files in the manifest in force, oldest write first.
    pub(crate) fn view(&self, table: &str, files: Vec<Arc<DataFile>>) -> CacheView {
        match self.tables.get(table) {
            Some(Entry::Ready(rows)) => CacheView::Ready(rows.clone()),
            Some(Entry::TooMany) => CacheView::TooMany { files },
            Some(Entry::Stale(delta)) => CacheView::Stale {
                files,
                delta: delta.clone(),
                epoch: self.epoch,
            },
            None => CacheView::Stale {
                files,
                delta: None,
                epoch: self.epoch,
            },
        }
    }

    /// Folds the newest rows of a flushed file of `table` into its cache.
    pub(crate) fn flushed(
        &mut self,
        table: &str,
        schema: &TableSchema,
        newest: RecordBatch,
        max_series: usize,
    ) -> Result<()> {
        let entry = self
            .tables
            .entry(table.to_string())
            .or_insert(Entry::Stale(None));
        let fold = |old: Option<&RecordBatch>| -> Result<Option<RecordBatch>> {
            let rows = match old {
                Some(old) => newest_per_series(schema, &[old.clone(), newest.clone()])?,
                None => newest.clone(),
            };
            Ok((rows.num_rows() <= max_series).then_some(rows))
        };
        *entry = match &*entry {
            Entry::Ready(rows) => fold(Some(rows))?.map_or(Entry::TooMany, Entry::Ready),
            Entry::Stale(delta) => {
                fold(delta.as_ref())?.map_or(Entry::TooMany, |rows| Entry::Stale(Some(rows)))
            }
            Entry::TooMany => Entry::TooMany,
        };
        Ok(())
    }

    /// Rows of `table` left the store: its cache must be rebuilt.
    pub(crate) fn rows_removed(&mut self, table: &str) {
        self.epoch += 1;
        self.tables.insert(table.to_string(), Entry::Stale(None));
    }

    /// Installs rows rebuilt from the files read at `epoch`, with the flushes since
    /// folded in. Does nothing if rows left the store meanwhile.
    pub(crate) fn rebuilt(
        &mut self,
        table: &str,
        schema: &TableSchema,
        rows: RecordBatch,
        epoch: u64,
        max_series: usize,
    ) -> Result<()> {
        if epoch != self.epoch {
            return Ok(());
        }
        let entry = match self.tables.get(table) {
            Some(Entry::Stale(Some(delta))) => newest_per_series(schema, &[rows, delta.clone()])?,
            Some(Entry::Stale(None)) | None => rows,
            // Another rebuild got there first.
            Some(Entry::Ready(_) | Entry::TooMany) => return Ok(()),
        };
        let entry = if entry.num_rows() <= max_series {
            Entry::Ready(entry)
        } else {
            Entry::TooMany
        };
        self.tables.insert(table.to_string(), entry);
        Ok(())
    }
}

/// The newest row of each series in `batches`, later batches and later rows winning ties
/// on `time`. Every batch is brought to `schema` first (absent columns read as null).
pub(crate) fn newest_per_series(
    schema: &TableSchema,
    batches: &[RecordBatch],
) -> Result<RecordBatch> {
    let arrow_schema = schema.arrow_schema();
    let aligned = batches
        .iter()
        .map(|b| align_to(&arrow_schema, b))
        .collect::<Result<Vec<_>>>()?;
    let all = concat_batches(&arrow_schema, &aligned)?;
    // A series is one combination of all tags; a table without tags is one series.
    let tags: Vec<&str> = schema.tag_names().collect();
    newest_rows(&all, &tags)
}

/// The newest row (largest `time`, the later row on ties) of each combination of the
/// values of `keys` in `batch`, in row order. With no keys, the newest row of all.
pub fn newest_rows(batch: &RecordBatch, keys: &[&str]) -> Result<RecordBatch> {
    let indices = newest_indices(batch, keys)?;
    Ok(take_record_batch(batch, &indices)?)
}

/// Row indices of [`newest_rows`], ascending.
fn newest_indices(batch: &RecordBatch, keys: &[&str]) -> Result<UInt32Array> {
    let time = crate::persist::time_column(batch)
        .ok_or_else(|| arrow::error::ArrowError::SchemaError("batch has no time column".into()))?;
    let series = crate::series::series_of(batch, keys)?;
    let mut newest: Vec<Option<u32>> = vec![None; series.ranks.len()];
    for (i, &id) in series.ids.iter().enumerate() {
        let slot = &mut newest[id as usize];
        if slot.is_none_or(|s| time.value(i) >= time.value(s as usize)) {
            *slot = Some(i as u32);
        }
    }
    let mut indices: Vec<u32> = newest.into_iter().flatten().collect();
    indices.sort_unstable();
    Ok(indices.into_iter().collect())
}

/// The newest row of each series over `files` (oldest write first), read from Parquet.
pub(crate) fn read_newest(schema: &TableSchema, files: &[Arc<DataFile>]) -> Result<RecordBatch> {
    let mut acc = RecordBatch::new_empty(schema.arrow_schema());
    for file in files {
        let path = file.path();
        let f = File::open(path).map_err(|e| Error::io(path, e))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(f)
            .map_err(|e| parquet_error(path, e))?
            .with_batch_size(REBUILD_BATCH_ROWS)
            .build()
            .map_err(|e| parquet_error(path, e))?;
        for batch in reader {
            let batch = batch?;
            let newest = newest_per_series(schema, &[batch])?;
            acc = newest_per_series(schema, &[acc, newest])?;
        }
    }
    Ok(acc)
}

fn parquet_error(path: &std::path::Path, source: parquet::errors::ParquetError) -> Error {
    Error::Parquet {
        file: path.display().to_string(),
        source,
    }
}
