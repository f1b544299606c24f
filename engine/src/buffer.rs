//! The in-memory write buffer: Arrow batches per table and day, in LSN order.

use std::collections::BTreeMap;
use std::time::Instant;

use arrow::array::RecordBatch;

use crate::batch::TableBatch;

/// A buffered batch and the WAL record it came from.
#[derive(Debug, Clone)]
pub(crate) struct Chunk {
    pub(crate) lsn: u64,
    pub(crate) batch: RecordBatch,
}

/// Rows not yet in Parquet.
#[derive(Debug, Default)]
pub(crate) struct Buffer {
    /// (table, day) → chunks in LSN order.
    partitions: BTreeMap<(String, i32), Vec<Chunk>>,
    bytes: usize,
    rows: usize,
    oldest: Option<Instant>,
}

impl Buffer {
    pub(crate) fn insert(&mut self, lsn: u64, batches: Vec<TableBatch>) {
        for tb in batches {
            self.bytes += tb.batch.get_array_memory_size();
            self.rows += tb.batch.num_rows();
            self.partitions
                .entry((tb.table, tb.day))
                .or_default()
                .push(Chunk {
                    lsn,
                    batch: tb.batch,
                });
        }
        self.oldest.get_or_insert_with(Instant::now);
    }

    /// Memory held by the buffered arrays.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }

    /// When the oldest buffered row arrived.
    pub(crate) fn oldest(&self) -> Option<Instant> {
        self.oldest
    }

    pub(crate) fn partitions(&self) -> impl Iterator<Item = (&str, i32, &[Chunk])> {
        self.partitions
            .iter()
            .map(|((t, d), c)| (t.as_str(), *d, c.as_slice()))
    }
}
