//! A storage backend that simulates a crash: it forgets unsynced bytes, tears the last
//! write, flips bits and fails fsync on request.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

use parking_lot::Mutex;
use rand::Rng;
use vigil_wal::{Result, SegmentFile, Storage};

#[derive(Debug, Clone, Default)]
struct SimFile {
    data: Vec<u8>,
    synced_len: usize,
    /// Whether the file's directory entry is durable.
    entry_synced: bool,
}

#[derive(Debug, Default)]
struct State {
    files: BTreeMap<String, SimFile>,
    syncs: usize,
    /// Fail every fsync once this many have succeeded.
    fail_sync_after: Option<usize>,
}

/// A simulated directory.
#[derive(Debug, Clone, Default)]
pub(crate) struct FaultStorage {
    state: Arc<Mutex<State>>,
}

/// How a simulated crash treats the bytes that were never synced.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CrashKind {
    /// Unsynced bytes are lost.
    Forget,
    /// A random prefix of the unsynced bytes survives.
    Tear,
    /// A random prefix survives, with one bit flipped inside it.
    TearAndFlip,
}

impl FaultStorage {
    pub(crate) fn syncs(&self) -> usize {
        self.state.lock().syncs
    }

    pub(crate) fn fail_sync_after(&self, n: usize) {
        let mut s = self.state.lock();
        s.fail_sync_after = Some(s.syncs + n);
    }

    /// The directory as it would be found after power loss now.
    pub(crate) fn crash(&self, kind: CrashKind, rng: &mut impl Rng) -> FaultStorage {
        let s = self.state.lock();
        let mut files = BTreeMap::new();
        for (name, f) in &s.files {
            if !f.entry_synced && rng.random_bool(0.5) {
                continue;
            }
            let unsynced = f.data.len() - f.synced_len;
            let keep = match kind {
                CrashKind::Forget => 0,
                CrashKind::Tear | CrashKind::TearAndFlip => rng.random_range(0..=unsynced),
            };
            let mut data = f.data[..f.synced_len + keep].to_vec();
            if matches!(kind, CrashKind::TearAndFlip) && keep > 0 {
                let at = f.synced_len + rng.random_range(0..keep);
                data[at] ^= 1 << rng.random_range(0..8);
            }
            let synced_len = data.len();
            files.insert(
                name.clone(),
                SimFile {
                    data,
                    synced_len,
                    entry_synced: true,
                },
            );
        }
        FaultStorage {
            state: Arc::new(Mutex::new(State {
                files,
                ..State::default()
            })),
        }
    }

    /// Flips one bit of a file's durable content.
    pub(crate) fn flip(&self, name: &str, offset: usize) {
        let mut s = self.state.lock();
        let f = s.files.get_mut(name).expect("file exists");
        f.data[offset] ^= 0x10;
    }

    pub(crate) fn names(&self) -> Vec<String> {
        self.state.lock().files.keys().cloned().collect()
    }

    pub(crate) fn len(&self, name: &str) -> usize {
        self.state.lock().files[name].data.len()
    }
}

struct SimSegment {
    name: String,
    state: Arc<Mutex<State>>,
}

impl SegmentFile for SimSegment {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut s = self.state.lock();
        let f = s.files.get_mut(&self.name).ok_or(io::ErrorKind::NotFound)?;
        f.data.extend_from_slice(buf);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut s = self.state.lock();
        if s.fail_sync_after.is_some_and(|n| s.syncs >= n) {
            return Err(io::Error::other("injected fsync failure"));
        }
        s.syncs += 1;
        let f = s.files.get_mut(&self.name).ok_or(io::ErrorKind::NotFound)?;
        f.synced_len = f.data.len();
        Ok(())
    }
}

impl Storage for FaultStorage {
    fn list(&self) -> Result<Vec<String>> {
        Ok(self.names())
    }

    fn read(&self, name: &str) -> Result<Box<dyn AsRef<[u8]> + Send>> {
        let data = self.state.lock().files.get(name).map(|f| f.data.clone());
        data.map(|d| Box::new(d) as Box<dyn AsRef<[u8]> + Send>)
            .ok_or_else(|| vigil_wal::Error::Io {
                file: name.into(),
                source: io::ErrorKind::NotFound.into(),
            })
    }

    fn create(&self, name: &str) -> Result<Box<dyn SegmentFile>> {
        self.state
            .lock()
            .files
            .insert(name.to_string(), SimFile::default());
        Ok(Box::new(SimSegment {
            name: name.to_string(),
            state: Arc::clone(&self.state),
        }))
    }

    fn truncate(&self, name: &str, len: u64) -> Result<()> {
        let mut s = self.state.lock();
        if let Some(f) = s.files.get_mut(name) {
            f.data.truncate(len as usize);
            f.synced_len = f.data.len();
        }
        Ok(())
    }

    fn remove(&self, name: &str) -> Result<()> {
        self.state.lock().files.remove(name);
        Ok(())
    }

    fn sync_dir(&self) -> Result<()> {
        for f in self.state.lock().files.values_mut() {
            f.entry_synced = true;
        }
        Ok(())
    }
}
