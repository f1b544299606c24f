//! The manifest: which Parquet files hold which table's data, every table's schema, and
//! the WAL checkpoint. It is replaced atomically (temp file, fsync, rename, fsync dir), so
//! files and checkpoint always move together.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::schema::{Catalog, TableSchema};

const MANIFEST_VERSION: u32 = 1;
/// File name of the manifest in the data directory.
pub const MANIFEST_FILE: &str = "manifest";

/// One Parquet file of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    /// Path relative to the data directory.
    pub path: String,
    /// Partition, `yyyy-mm-dd` (UTC).
    pub partition: String,
    pub rows: u64,
    pub size_bytes: u64,
    /// Smallest and largest `time`, nanoseconds since the epoch.
    pub min_time: i64,
    pub max_time: i64,
    /// Highest WAL LSN whose rows the file holds; later files win over earlier ones.
    pub max_lsn: u64,
}

/// A table in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableManifest {
    pub schema: TableSchema,
    pub files: Vec<FileMeta>,
}

/// The manifest document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    /// Every WAL record with an LSN at or below this is in the files listed here.
    pub checkpoint_lsn: u64,
    /// Next number for a new file's name.
    pub next_file_id: u64,
    pub tables: BTreeMap<String, TableManifest>,
    /// Highest sequence stored per agent and channel, as of the checkpoint (shipped
    /// batches at or below it are duplicates).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub shipped: BTreeMap<String, BTreeMap<u32, u64>>,
}

impl Default for Manifest {
    fn default() -> Self {
        Self {
            version: MANIFEST_VERSION,
            checkpoint_lsn: 0,
            next_file_id: 1,
            tables: BTreeMap::new(),
            shipped: BTreeMap::new(),
        }
    }
}

impl Manifest {
    /// Reads the manifest of `data_dir`; a missing one is an empty store.
    pub fn load(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join(MANIFEST_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let manifest: Self = serde_json::from_str(&text).map_err(|e| Error::Manifest {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        if manifest.version != MANIFEST_VERSION {
            return Err(Error::Manifest {
                path: path.display().to_string(),
                reason: format!("unsupported version {}", manifest.version),
            });
        }
        Ok(manifest)
    }

    /// Atomically replaces the manifest of `data_dir` with this one.
    pub fn save(&self, data_dir: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::Manifest {
            path: MANIFEST_FILE.into(),
            reason: e.to_string(),
        })?;
        write_atomic(&data_dir.join(MANIFEST_FILE), &json)
    }

    /// The schemas of every table.
    pub fn catalog(&self) -> Catalog {
        let mut c = Catalog::default();
        for (name, t) in &self.tables {
            c.insert(name.clone(), t.schema.clone());
        }
        c
    }

    /// Paths of every listed file.
    pub fn file_paths(&self) -> impl Iterator<Item = &str> {
        self.tables
            .values()
            .flat_map(|t| t.files.iter().map(|f| f.path.as_str()))
    }
}

/// Writes `bytes` to `path` so that after a crash the file holds either its old content
/// or all of the new: temp file, fsync, rename, fsync directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    let mut f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    drop(f);
    rename_durable(&tmp, path)
}

/// `path` with `.tmp` appended.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Renames and fsyncs the directory holding `to`.
pub(crate) fn rename_durable(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(|e| Error::io(to, e))?;
    sync_dir(to.parent().unwrap_or(Path::new(".")))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), Manifest::default());
        let mut m = Manifest {
            checkpoint_lsn: 9,
            ..Manifest::default()
        };
        m.tables.insert(
            "cpu".into(),
            TableManifest {
                schema: crate::schema::TableSchema::from_metric_arrow(
                    &arrow::datatypes::Schema::empty(),
                ),
                files: vec![],
            },
        );
        m.save(dir.path()).unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), m);
        assert!(!tmp_path(&dir.path().join(MANIFEST_FILE)).exists());
        fs::write(dir.path().join(MANIFEST_FILE), "{").unwrap();
        let err = Manifest::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("manifest") && err.contains("invalid"), "{err}");
    }
}
