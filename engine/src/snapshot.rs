//! Consistent read views of a table (Parquet files plus buffered rows) for queries and
//! compaction, and the lifetime of data files: a file the manifest no longer lists is
//! deleted once the last reader lets go of it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use arrow::array::RecordBatch;

use crate::manifest::FileMeta;
use crate::schema::TableSchema;

/// A Parquet file of the store, shared by the manifest and by every reader holding it.
///
/// When a compaction or retention removes the file from the manifest it is marked
/// obsolete; it is deleted from disk when the last holder drops it, so a running query
/// never loses a file under its feet. After a crash, files the manifest does not list are
/// removed at start instead.
#[derive(Debug)]
pub struct DataFile {
    meta: FileMeta,
    path: PathBuf,
    obsolete: AtomicBool,
}

impl DataFile {
    pub(crate) fn new(data_dir: &Path, meta: FileMeta) -> Self {
        Self {
            path: data_dir.join(&meta.path),
            meta,
            obsolete: AtomicBool::new(false),
        }
    }

    /// What the manifest says about the file.
    pub fn meta(&self) -> &FileMeta {
        &self.meta
    }

    /// Absolute path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn mark_obsolete(&self) {
        self.obsolete.store(true, Ordering::SeqCst);
    }
}

impl Drop for DataFile {
    fn drop(&mut self) {
        if self.obsolete.load(Ordering::SeqCst) {
            match std::fs::remove_file(&self.path) {
                Ok(()) => tracing::debug!(file = %self.path.display(), "deleted replaced file"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(
                    file = %self.path.display(),
                    error = %e,
                    "could not delete a replaced file; it is removed at the next start"
                ),
            }
        }
    }
}

/// Buffered (not yet persisted) rows of one table and day: unified to the table's schema,
/// sorted by series then time and, for metrics, with one row per (series, time) — the
/// same shape as a Parquet file of the store.
#[derive(Debug, Clone)]
pub struct BufferedPartition {
    /// UTC day number.
    pub day: i32,
    pub batch: RecordBatch,
    /// Smallest and largest `time`, nanoseconds since the epoch.
    pub min_time: i64,
    pub max_time: i64,
}

/// A consistent view of one table: every acknowledged row is either in `files` or in
/// `buffered`, never both.
#[derive(Debug, Clone)]
pub struct TableSnapshot {
    pub name: String,
    pub schema: TableSchema,
    /// Parquet files, oldest write first (ascending `max_lsn`).
    pub files: Vec<std::sync::Arc<DataFile>>,
    /// Buffered rows by day; they are newer than every file.
    pub buffered: Vec<BufferedPartition>,
}
