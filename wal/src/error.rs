use std::io;

/// Errors of the write-ahead log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("WAL I/O error on {file}: {source}")]
    Io {
        file: String,
        #[source]
        source: io::Error,
    },

    #[error("WAL corruption in {file} at offset {offset}: {reason}")]
    Corruption {
        file: String,
        offset: u64,
        reason: String,
    },

    #[error(
        "WAL is poisoned after a failed write or fsync ({cause}); no further writes are acknowledged, restart to recover"
    )]
    Poisoned { cause: String },

    #[error("WAL record of {len} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge { len: usize, max: usize },

    #[error("WAL record kind 0 is reserved")]
    ReservedKind,

    #[error("WAL record {lsn} could not be replayed: {reason}")]
    Replay { lsn: u64, reason: String },

    #[error("WAL is closed")]
    Closed,

    #[error("invalid WAL configuration: {0}")]
    Config(String),
}

impl Error {
    pub(crate) fn io(file: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            file: file.into(),
            source,
        }
    }
}

/// Result with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
