/// When an append counts as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every commit group is fsynced (`fdatasync`) before its appends are acknowledged.
    #[default]
    Fsync,
    /// No fsync at all. **For benchmarks only**: a crash or power loss loses acknowledged
    /// records.
    None,
}

/// What recovery does with a corrupt record that is not the torn tail of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Stop with [`crate::Error::Corruption`] naming the file and offset (default).
    #[default]
    Strict,
    /// Skip the corrupt bytes, log an error for every skipped region, and go on with the
    /// next valid record. Records in the skipped region are lost.
    SkipCorrupt,
}

/// Settings of a [`crate::Wal`].
#[derive(Debug, Clone)]
pub struct WalConfig {
    /// Fsync policy; default [`Durability::Fsync`].
    pub durability: Durability,
    /// A segment is closed and a new one started once it holds this many bytes; default 64 MiB.
    pub segment_size: u64,
    /// Largest amount of record bytes written by one commit group; default 16 MiB.
    pub max_group_bytes: usize,
    /// What to do with corruption found during recovery; default [`RecoveryMode::Strict`].
    pub recovery: RecoveryMode,
}

impl Default for WalConfig {
    fn default() -> Self {
        Self {
            durability: Durability::Fsync,
            segment_size: 64 * 1024 * 1024,
            max_group_bytes: 16 * 1024 * 1024,
            recovery: RecoveryMode::Strict,
        }
    }
}

impl WalConfig {
    /// Checks that the settings make sense together.
    pub fn validate(&self) -> crate::Result<()> {
        if self.segment_size < 4096 {
            return Err(crate::Error::Config(format!(
                "segment_size must be at least 4096 bytes, got {}",
                self.segment_size
            )));
        }
        if self.max_group_bytes == 0 {
            return Err(crate::Error::Config(
                "max_group_bytes must be positive".into(),
            ));
        }
        Ok(())
    }
}
