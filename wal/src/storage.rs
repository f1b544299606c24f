//! Where segment files live. The log talks only to [`Storage`]; tests substitute a
//! fault-injecting implementation.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// An open segment that the writer appends to.
pub trait SegmentFile: Send {
    /// Appends `buf` at the end of the file.
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()>;
    /// Makes every byte written so far durable.
    fn sync(&mut self) -> std::io::Result<()>;
}

/// A directory of segment files.
pub trait Storage: Send + Sync + 'static {
    /// Names of the files in the directory, in any order.
    fn list(&self) -> Result<Vec<String>>;
    /// The whole content of a file, e.g. a memory map.
    fn read(&self, name: &str) -> Result<Box<dyn AsRef<[u8]> + Send>>;
    /// Creates a new, empty file for appending; fails if it exists.
    fn create(&self, name: &str) -> Result<Box<dyn SegmentFile>>;
    /// Cuts a file to `len` bytes and makes that durable.
    fn truncate(&self, name: &str, len: u64) -> Result<()>;
    /// Removes a file.
    fn remove(&self, name: &str) -> Result<()>;
    /// Makes creations and removals in the directory durable.
    fn sync_dir(&self) -> Result<()>;
    /// Human-readable location of a file, for error messages.
    fn describe(&self, name: &str) -> String {
        name.to_string()
    }
}

/// Segment files in a directory of the local file system, read back through `mmap`.
#[derive(Debug, Clone)]
pub struct FsStorage {
    dir: PathBuf,
}

impl FsStorage {
    /// Uses `dir`, creating it if needed.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
        Ok(Self { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn err(&self, name: &str, e: io::Error) -> Error {
        Error::io(self.describe(name), e)
    }
}

struct FsSegment {
    file: File,
}

impl SegmentFile for FsSegment {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// An empty file cannot be mapped; it reads as no bytes.
struct Mapped(Option<memmap2::Mmap>);

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        self.0.as_deref().unwrap_or(&[])
    }
}

impl Storage for FsStorage {
    fn list(&self) -> Result<Vec<String>> {
        let entries = fs::read_dir(&self.dir).map_err(|e| self.err("", e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| self.err("", e))?;
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn read(&self, name: &str) -> Result<Box<dyn AsRef<[u8]> + Send>> {
        let file = File::open(self.path(name)).map_err(|e| self.err(name, e))?;
        let len = file.metadata().map_err(|e| self.err(name, e))?.len();
        if len == 0 {
            return Ok(Box::new(Mapped(None)));
        }
        // SAFETY: segments are only appended to by this process's writer thread, which is
        // not running while recovery reads them, and no other process writes the directory.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| self.err(name, e))?;
        Ok(Box::new(Mapped(Some(map))))
    }

    fn create(&self, name: &str) -> Result<Box<dyn SegmentFile>> {
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(self.path(name))
            .map_err(|e| self.err(name, e))?;
        Ok(Box::new(FsSegment { file }))
    }

    fn truncate(&self, name: &str, len: u64) -> Result<()> {
        let file = OpenOptions::new()
            .write(true)
            .open(self.path(name))
            .map_err(|e| self.err(name, e))?;
        file.set_len(len).map_err(|e| self.err(name, e))?;
        file.sync_all().map_err(|e| self.err(name, e))
    }

    fn remove(&self, name: &str) -> Result<()> {
        fs::remove_file(self.path(name)).map_err(|e| self.err(name, e))
    }

    fn sync_dir(&self) -> Result<()> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.err("", e))
    }

    fn describe(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}
