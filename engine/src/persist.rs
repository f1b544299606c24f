//! Writing a partition's buffered rows to one sorted, deduplicated Parquet file.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, RecordBatch, TimestampNanosecondArray, UInt32Array, new_null_array,
};
use arrow::compute::{concat_batches, take_record_batch};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::error::{Error, Result};
use crate::manifest::{FileMeta, rename_durable, sync_dir, tmp_path};
use crate::schema::{ColumnKind, EVENTS_TABLE, FieldType, TIME_COLUMN, TableSchema};

/// Rows per data page at most (Parquet's default is 20,000). A query for one series reads
/// whole pages, and `time` and integer fields are delta-encoded, so it decodes every value
/// of a page up to its rows: in hour slices a host's hour is 360 rows. 8,192-row pages cut
/// the CPU of one-host TSBS queries by 13–24 % against 20,000 for 4 % more bytes; 4,096
/// cut it by another 7–17 % for 4 % more, and full scans took 0–4 % more (BENCHMARKS.md).
pub const DATA_PAGE_ROWS: usize = 4096;

/// Rows of one table and day to persist, in arrival (LSN) order.
pub(crate) struct PartitionRows<'a> {
    pub(crate) table: &'a str,
    pub(crate) day: i32,
    pub(crate) schema: &'a TableSchema,
    pub(crate) chunks: Vec<RecordBatch>,
    pub(crate) max_lsn: u64,
}

/// `yyyy-mm-dd` of a UTC day number.
pub fn partition_name(day: i32) -> String {
    chrono::DateTime::from_timestamp(i64::from(day) * 86_400, 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| format!("day{day}"))
}

/// A table name as a directory name: bytes outside `[A-Za-z0-9_-]` become `%XX`.
pub fn table_dir_name(table: &str) -> String {
    let mut out = String::with_capacity(table.len());
    for b in table.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `batch` with exactly the columns of `schema`; absent columns read as null.
pub(crate) fn align_to(
    schema: &arrow::datatypes::SchemaRef,
    batch: &RecordBatch,
) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) => Arc::clone(c),
            None => new_null_array(f.data_type(), batch.num_rows()),
        })
        .collect();
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// Brings every chunk to the table's schema (absent columns read as null), concatenates
/// them, sorts by time slice, series and time (see [`TableSchema::time_slice`]) and, for
/// metrics, keeps only the last write of each (series, time).
pub(crate) fn merge_rows(part: &PartitionRows<'_>) -> Result<RecordBatch> {
    let schema = part.schema.arrow_schema();
    let unified: Vec<RecordBatch> = part
        .chunks
        .iter()
        .map(|chunk| align_to(&schema, chunk))
        .collect::<Result<_>>()?;
    let all = concat_batches(&schema, &unified)?;
    let tags: Vec<&str> = if part.table == EVENTS_TABLE {
        Vec::new()
    } else {
        part.schema.tag_names().collect()
    };
    let indices = sorted_indices(&all, &tags, part.schema, part.table != EVENTS_TABLE)?;
    Ok(take_record_batch(&all, &indices)?)
}

/// Row order by time slice, series (the `tags` columns, compared as values) and time; rows
/// with equal keys keep arrival order. With `keep_last`, only the last row of each
/// (series, time) (both rows then share a slice, so they are neighbours).
///
/// Each distinct series is ranked once; the rows are then sorted by integer keys, which is
/// far cheaper than comparing tag values row against row.
fn sorted_indices(
    batch: &RecordBatch,
    tags: &[&str],
    schema: &TableSchema,
    keep_last: bool,
) -> Result<UInt32Array> {
    let rank = crate::series::series_of(batch, tags)?.row_ranks();
    let time = time_column(batch)
        .ok_or_else(|| arrow::error::ArrowError::SchemaError("batch has no time column".into()))?;
    let mut keys: Vec<(i64, u32, i64, u32)> = (0..batch.num_rows())
        .map(|i| {
            let t = time.value(i);
            (schema.slice_of(t), rank[i], t, i as u32)
        })
        .collect();
    keys.sort_unstable();
    if keep_last {
        keys.dedup_by(|next, prev| {
            let same = (next.1, next.2) == (prev.1, prev.2);
            if same {
                // `dedup_by` keeps `prev`; make it the later arrival.
                prev.3 = next.3;
            }
            same
        });
    }
    Ok(keys.into_iter().map(|k| k.3).collect())
}

fn writer_properties(
    schema: &TableSchema,
    sort_keys: usize,
    row_group_rows: usize,
) -> Result<WriterProperties> {
    let time = ColumnPath::from(TIME_COLUMN);
    let zstd = ZstdLevel::try_new(3).map_err(|e| Error::Parquet {
        file: String::new(),
        source: e,
    })?;
    let time_idx = schema
        .columns()
        .iter()
        .position(|c| c.name == TIME_COLUMN)
        .unwrap_or(0);
    let mut sorting: Vec<SortingColumn> = schema
        .tag_names()
        .take(sort_keys)
        .filter_map(|t| schema.columns().iter().position(|c| c.name == t))
        .map(|i| SortingColumn {
            column_idx: i as i32,
            descending: false,
            nulls_first: true,
        })
        .collect();
    sorting.push(SortingColumn {
        column_idx: time_idx as i32,
        descending: false,
        nulls_first: false,
    });
    let mut props = WriterProperties::builder();
    for col in schema.columns() {
        let path = ColumnPath::from(col.name.as_str());
        // Integer fields are mostly counters and gauges that move in small steps: delta
        // encoding stores them in a few bits, where a dictionary needs log2(distinct) bits.
        if matches!(
            col.kind,
            ColumnKind::Field(FieldType::Integer | FieldType::Unsigned)
        ) {
            props = props
                .set_column_dictionary_enabled(path.clone(), false)
                .set_column_encoding(path.clone(), Encoding::DELTA_BINARY_PACKED);
        }
        // Every column but text is LZ4. zstd makes every reader of a column chunk build a
        // compression and a decompression context (large allocations, and CPU feature
        // probes that trap to the hypervisor on a virtual machine) and decodes slower: a
        // one-host query over five fields takes about 40 % less CPU with LZ4 fields. Tags
        // and time compress as well with LZ4; delta-packed numbers come out about 13 %
        // larger. Text, which zstd shrinks far more, keeps it (docs/ingest.md).
        if !matches!(
            col.kind,
            ColumnKind::Text | ColumnKind::Field(FieldType::String)
        ) {
            props = props.set_column_compression(path, Compression::LZ4_RAW);
        }
    }
    Ok(props
        .set_compression(Compression::ZSTD(zstd))
        .set_max_row_group_row_count(Some(row_group_rows.max(1)))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_data_page_row_count_limit(DATA_PAGE_ROWS)
        .set_column_dictionary_enabled(time.clone(), false)
        .set_column_encoding(time, Encoding::DELTA_BINARY_PACKED)
        .set_sorting_columns(Some(sorting))
        .set_created_by(format!("vigil {}", env!("CARGO_PKG_VERSION")))
        .build())
}

/// Writes the partition to `tables/<table>/<yyyy-mm-dd>/<file_id>.parquet` under
/// `data_dir` durably (temp file, fsync, rename, fsync dirs). `None` when it has no rows.
pub(crate) fn write_partition(
    data_dir: &Path,
    row_group_rows: usize,
    file_id: u64,
    part: &PartitionRows<'_>,
) -> Result<Option<(FileMeta, RecordBatch)>> {
    let batch = merge_rows(part)?;
    if batch.num_rows() == 0 {
        return Ok(None);
    }
    let partition = partition_name(part.day);
    let mut writer = PartitionWriter::create(
        data_dir,
        row_group_rows,
        file_id,
        part.table,
        &partition,
        part.schema,
    )?;
    writer.write(&batch, part.max_lsn)?;
    Ok(writer.finish()?.map(|meta| (meta, batch)))
}

/// Streams sorted rows into a new Parquet file of a partition, durably: the rows go to a
/// temp file that [`PartitionWriter::finish`] fsyncs and renames into place. The file
/// belongs to the store only once the manifest lists it.
pub struct PartitionWriter {
    data_dir: PathBuf,
    rel: PathBuf,
    path: PathBuf,
    tmp: PathBuf,
    partition: String,
    writer: ArrowWriter<File>,
    schema: arrow::datatypes::SchemaRef,
    /// The table's time slice width, and the slice of the rows of the open row group.
    time_slice: Option<i64>,
    open_slice: Option<i64>,
    rows: u64,
    min_time: i64,
    max_time: i64,
    max_lsn: u64,
}

impl PartitionWriter {
    pub(crate) fn create(
        data_dir: &Path,
        row_group_rows: usize,
        file_id: u64,
        table: &str,
        partition: &str,
        schema: &TableSchema,
    ) -> Result<Self> {
        let rel_dir = Path::new("tables")
            .join(table_dir_name(table))
            .join(partition);
        let dir = data_dir.join(&rel_dir);
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let rel = rel_dir.join(format!("{file_id:016}.parquet"));
        let path = data_dir.join(&rel);
        let tmp = tmp_path(&path);
        let sort_keys = if table == EVENTS_TABLE { 0 } else { usize::MAX };
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let arrow_schema = schema.arrow_schema();
        let mut writer = ArrowWriter::try_new(
            file,
            Arc::clone(&arrow_schema),
            Some(writer_properties(schema, sort_keys, row_group_rows)?),
        )
        .map_err(|source| Error::Parquet {
            file: path.display().to_string(),
            source,
        })?;
        writer.append_key_value_metadata(parquet::file::metadata::KeyValue::new(
            "vigil.table".into(),
            table.to_string(),
        ));
        Ok(Self {
            data_dir: data_dir.to_path_buf(),
            rel,
            path,
            tmp,
            partition: partition.to_string(),
            writer,
            schema: arrow_schema,
            time_slice: schema.time_slice(),
            open_slice: None,
            rows: 0,
            min_time: i64::MAX,
            max_time: i64::MIN,
            max_lsn: 0,
        })
    }

    /// The table's Arrow schema, which every written batch must have.
    pub fn schema(&self) -> &arrow::datatypes::SchemaRef {
        &self.schema
    }

    /// Appends rows (in sort order, after every row written before) whose newest write
    /// has WAL LSN at most `max_lsn`. In a table with time slices, a row group is closed
    /// where the slice changes, so that no row group spans two slices.
    pub fn write(&mut self, batch: &RecordBatch, max_lsn: u64) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let pq = |source| Error::Parquet {
            file: self.path.display().to_string(),
            source,
        };
        match self.time_slice {
            None => self.writer.write(batch).map_err(pq)?,
            Some(width) => {
                for (slice, run) in slice_runs(batch, width) {
                    if self.open_slice.is_some_and(|open| open != slice) {
                        self.writer.flush().map_err(pq)?;
                    }
                    self.open_slice = Some(slice);
                    self.writer.write(&run).map_err(pq)?;
                }
            }
        }
        let (lo, hi) = time_range(batch);
        self.min_time = self.min_time.min(lo);
        self.max_time = self.max_time.max(hi);
        self.rows += batch.num_rows() as u64;
        self.max_lsn = self.max_lsn.max(max_lsn);
        Ok(())
    }

    /// Closes, fsyncs and renames the file into place; `None` (and no file) when no row
    /// was written.
    pub fn finish(self) -> Result<Option<FileMeta>> {
        let pq = |source| Error::Parquet {
            file: self.path.display().to_string(),
            source,
        };
        let file = self.writer.into_inner().map_err(pq)?;
        if self.rows == 0 {
            drop(file);
            let _ = fs::remove_file(&self.tmp);
            return Ok(None);
        }
        file.sync_all().map_err(|e| Error::io(&self.tmp, e))?;
        let size_bytes = file.metadata().map_err(|e| Error::io(&self.tmp, e))?.len();
        drop(file);
        rename_durable(&self.tmp, &self.path)?;
        // New partition and table directories must survive a crash too.
        let dir = self.path.parent().unwrap_or(&self.data_dir);
        for d in [
            dir,
            dir.parent().unwrap_or(dir),
            &self.data_dir.join("tables"),
        ] {
            sync_dir(d)?;
        }
        Ok(Some(FileMeta {
            path: self.rel.to_string_lossy().replace('\\', "/"),
            partition: self.partition,
            rows: self.rows,
            size_bytes,
            min_time: self.min_time,
            max_time: self.max_time,
            max_lsn: self.max_lsn,
        }))
    }

    /// Deletes the unfinished file.
    pub fn abandon(self) {
        drop(self.writer);
        let _ = fs::remove_file(&self.tmp);
    }
}

/// `batch` cut into runs of rows of one time slice of width `width`, with their slice.
fn slice_runs(batch: &RecordBatch, width: i64) -> Vec<(i64, RecordBatch)> {
    let Some(time) = time_column(batch) else {
        return vec![(0, batch.clone())];
    };
    let mut runs = Vec::new();
    let mut start = 0;
    for i in 1..=time.len() {
        let slice = time.value(start).div_euclid(width);
        if i == time.len() || time.value(i).div_euclid(width) != slice {
            runs.push((slice, batch.slice(start, i - start)));
            start = i;
        }
    }
    runs
}

/// The `time` column of `batch`, if it has one of the store's type.
pub(crate) fn time_column(batch: &RecordBatch) -> Option<&TimestampNanosecondArray> {
    batch
        .column_by_name(TIME_COLUMN)
        .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
}

pub(crate) fn time_range(batch: &RecordBatch) -> (i64, i64) {
    let Some(time) = time_column(batch) else {
        return (0, 0);
    };
    let min = arrow::compute::min(time).unwrap_or(0);
    let max = arrow::compute::max(time).unwrap_or(0);
    debug_assert_eq!(time.null_count(), 0);
    (min, max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::build_metric_batches;
    use crate::line_protocol::Precision;
    use arrow::array::AsArray;
    use arrow::util::pretty::pretty_format_batches;

    fn chunk(body: &str) -> RecordBatch {
        build_metric_batches(body, Precision::Nanoseconds, 0)
            .unwrap()
            .remove(0)
            .batch
    }

    #[test]
    fn merge_sorts_by_series_then_time_and_later_write_wins() {
        let c1 = chunk("m,h=b f=1 20\nm,h=a f=2 10\nm,h=b f=3 10");
        let c2 = chunk("m,h=b f=30 10\nm,h=a,z=q g=1i 10");
        let mut schema = TableSchema::from_metric_arrow(&c1.schema());
        for f in c2.schema().fields() {
            if schema.column(f.name()).is_none() {
                schema.add(crate::schema::Column {
                    name: f.name().clone(),
                    kind: crate::schema::ColumnKind::of_metric_field(f).unwrap(),
                });
            }
        }
        let part = PartitionRows {
            table: "m",
            day: 0,
            schema: &schema,
            chunks: vec![c1, c2],
            max_lsn: 2,
        };
        let out = pretty_format_batches(&[merge_rows(&part).unwrap()])
            .unwrap()
            .to_string();
        let expected = "\
+---+---+------+---+--------------------------------+
| h | z | f    | g | time                           |
+---+---+------+---+--------------------------------+
| a |   | 2.0  |   | 1970-01-01T00:00:00.000000010Z |
| a | q |      | 1 | 1970-01-01T00:00:00.000000010Z |
| b |   | 30.0 |   | 1970-01-01T00:00:00.000000010Z |
| b |   | 1.0  |   | 1970-01-01T00:00:00.000000020Z |
+---+---+------+---+--------------------------------+";
        assert_eq!(out, expected);
    }

    #[test]
    fn with_time_slices_rows_sort_by_slice_first_and_row_groups_never_span_two() {
        // Slices of 100 ns: b@150 lies in slice 1, a@250 and b@210 in slice 2.
        let c = chunk("m,h=b f=1 150\nm,h=a f=2 250\nm,h=b f=3 210\nm,h=a f=4 50\nm,h=a f=5 -5");
        let schema = TableSchema::from_metric_arrow(&c.schema()).with_time_slice(100);
        let part = PartitionRows {
            table: "m",
            day: 0,
            schema: &schema,
            chunks: vec![c],
            max_lsn: 1,
        };
        let merged = merge_rows(&part).unwrap();
        let order: Vec<(String, i64)> = (0..merged.num_rows())
            .map(|i| {
                let h = merged.column_by_name("h").unwrap();
                let h = arrow::util::display::array_value_to_string(h, i).unwrap();
                let t = merged
                    .column_by_name("time")
                    .unwrap()
                    .as_primitive::<arrow::datatypes::TimestampNanosecondType>();
                (h, t.value(i))
            })
            .collect();
        let want = [("a", -5), ("a", 50), ("b", 150), ("a", 250), ("b", 210)];
        let want: Vec<(String, i64)> = want.iter().map(|(h, t)| (h.to_string(), *t)).collect();
        assert_eq!(order, want);

        let dir = tempfile::tempdir().unwrap();
        let mut w =
            PartitionWriter::create(dir.path(), 1_000, 1, "m", "1970-01-01", &schema).unwrap();
        // Two writes, the second continuing the last slice of the first.
        w.write(&merged.slice(0, 4), 1).unwrap();
        w.write(&merged.slice(4, 1), 1).unwrap();
        let meta = w.finish().unwrap().unwrap();
        let file = File::open(dir.path().join(&meta.path)).unwrap();
        let reader = parquet::file::reader::SerializedFileReader::new(file).unwrap();
        use parquet::file::reader::FileReader;
        let groups: Vec<i64> = reader
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows())
            .collect();
        // Slice -1 (a@-5), slice 0 (a@50), slice 1 (b@150), slice 2 (a@250, b@210).
        assert_eq!(groups, [1, 1, 1, 2]);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever the writes and however they are split into chunks, the merge equals a
        /// model: per (series, time) the last value written, ordered by series then time.
        #[test]
        fn merge_matches_a_last_write_wins_model(
            writes in proptest::collection::vec(
                proptest::collection::vec((0u8..4, 0u8..3, 0i64..6, -100i64..100), 1..30),
                1..5,
            ),
            sliced in proptest::prelude::any::<bool>(),
        ) {
            let mut model = std::collections::BTreeMap::new();
            let chunks: Vec<RecordBatch> = writes
                .iter()
                .map(|chunk| {
                    let body: String = chunk
                        .iter()
                        .map(|(h, r, t, v)| {
                            model.insert(((*h, *r), *t), *v);
                            format!("m,h=h{h},r=r{r} v={v}i {t}\n")
                        })
                        .collect();
                    chunk_of(&body)
                })
                .collect();
            let mut schema = TableSchema::from_metric_arrow(&chunks[0].schema());
            if sliced {
                schema = schema.with_time_slice(2);
            }
            let part = PartitionRows { table: "m", day: 0, schema: &schema, chunks, max_lsn: 1 };
            let merged = merge_rows(&part).unwrap();
            let h = merged.column_by_name("h").unwrap().as_dictionary::<arrow::datatypes::Int32Type>();
            let r = merged.column_by_name("r").unwrap().as_dictionary::<arrow::datatypes::Int32Type>();
            let t = merged.column_by_name("time").unwrap().as_primitive::<arrow::datatypes::TimestampNanosecondType>();
            let v = merged.column_by_name("v").unwrap().as_primitive::<arrow::datatypes::Int64Type>();
            let text = |d: &arrow::array::DictionaryArray<arrow::datatypes::Int32Type>, i: usize| {
                d.values().as_string::<i32>().value(d.keys().value(i) as usize)[1..].parse::<u8>().unwrap()
            };
            let got: Vec<_> = (0..merged.num_rows()).map(|i| (((text(h, i), text(r, i)), t.value(i)), v.value(i))).collect();
            let mut want: Vec<_> = model.into_iter().collect();
            // Sorted by slice, series, time (a stable sort keeps series then time within a slice).
            want.sort_by_key(|((_, t), _)| schema.slice_of(*t));
            proptest::prop_assert_eq!(got, want);
        }
    }

    fn chunk_of(body: &str) -> RecordBatch {
        build_metric_batches(body, Precision::Nanoseconds, 0)
            .unwrap()
            .remove(0)
            .batch
    }

    #[test]
    fn names() {
        assert_eq!(partition_name(0), "1970-01-01");
        assert_eq!(partition_name(20_414), "2025-11-22");
        assert_eq!(table_dir_name("cpu_1-x"), "cpu_1-x");
        assert_eq!(table_dir_name("../a b"), "%2E%2E%2Fa%20b");
    }
}
