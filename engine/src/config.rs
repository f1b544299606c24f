use std::path::PathBuf;
use std::time::Duration;

use vigil_wal::WalConfig;

use crate::error::{Error, Result};
use crate::event_state::EventsConfig;

/// Settings of the storage engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Data directory; default `./vigil-data`.
    pub data_dir: PathBuf,
    /// WAL settings (durability, segment size, recovery mode).
    pub wal: WalConfig,
    /// Flush the buffer to Parquet once it holds this many bytes; default 64 MiB.
    pub flush_bytes: usize,
    /// Flush the buffer once its oldest row is this old; default 5 minutes.
    pub flush_age: Duration,
    /// Refuse writes (overloaded) while buffered plus flushing data exceeds this; default 256 MiB.
    pub max_buffer_bytes: usize,
    /// Writes decoded at once (line protocol and events are decoded on the CPU); more wait
    /// their turn in arrival order. Default: the number of cores. Decoding more at once
    /// than there are cores makes each slower and starves the flusher.
    pub decoders: usize,
    /// Run the background flusher (by size and age); default true. Tests that drive
    /// flushes themselves turn it off.
    pub background_flush: bool,
    /// Most rows per Parquet row group, the unit that statistics prune; default 131,072.
    /// A one-host query decodes the dictionary of each tag it filters on once per row
    /// group it reads: in row groups of 1,048,576 rows (half an hour of 4,000 hosts) that
    /// was 2,000 host names for the 180 rows wanted, and the 12-hour one-host TSBS
    /// queries took 16–23 % less CPU in row groups of 131,072 rows (files 0.5 % larger).
    pub row_group_rows: usize,
    /// Width of the time slices that lead the sort order of metric tables created from
    /// now on (recorded per table at its first flush; see `TableSchema::time_slice`);
    /// `None` sorts by series then time alone. Default 1 hour.
    pub time_slice: Option<Duration>,
    /// Most series per table the last-value cache keeps (beyond it the table's newest
    /// rows are read from its files at every use); 0 turns the cache off. Default 250,000.
    pub last_value_max_series: usize,
    /// Fingerprinting and deduplication of events.
    pub events: EventsConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("vigil-data"),
            wal: WalConfig::default(),
            flush_bytes: 64 * 1024 * 1024,
            flush_age: Duration::from_secs(300),
            max_buffer_bytes: 256 * 1024 * 1024,
            decoders: std::thread::available_parallelism().map_or(2, usize::from),
            background_flush: true,
            row_group_rows: 128 * 1024,
            time_slice: Some(Duration::from_nanos(crate::schema::TIME_SLICE_NANOS as u64)),
            last_value_max_series: 250_000,
            events: EventsConfig::default(),
        }
    }
}

impl EngineConfig {
    /// Checks that the settings make sense together.
    pub fn validate(&self) -> Result<()> {
        self.wal.validate()?;
        if self.max_buffer_bytes < self.flush_bytes {
            return Err(Error::Wal(vigil_wal::Error::Config(format!(
                "max buffer ({} bytes) must be at least the flush size ({} bytes)",
                self.max_buffer_bytes, self.flush_bytes
            ))));
        }
        if self.decoders == 0 {
            return Err(Error::Wal(vigil_wal::Error::Config(
                "decoders must be at least 1".into(),
            )));
        }
        if let Some(w) = self.time_slice
            && !(Duration::from_secs(60)..=Duration::from_secs(86_400)).contains(&w)
        {
            return Err(Error::Wal(vigil_wal::Error::Config(format!(
                "time slice must be between 1 minute and 1 day (or off), not {w:?}"
            ))));
        }
        if self.flush_age.is_zero() {
            return Err(Error::Wal(vigil_wal::Error::Config(
                "flush age must be positive".into(),
            )));
        }
        Ok(())
    }
}
