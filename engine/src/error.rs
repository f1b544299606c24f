use std::fmt;

/// A line (or event) that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number in the request body; 0 when the reason names the place itself.
    pub line: usize,
    /// 1-based byte column in that line, 0 when unknown.
    pub column: usize,
    pub reason: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            f.write_str(&self.reason)
        } else if self.column > 0 {
            write!(
                f,
                "line {} column {}: {}",
                self.line, self.column, self.reason
            )
        } else {
            write!(f, "line {}: {}", self.line, self.reason)
        }
    }
}

/// Errors of the storage engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: nothing of the request was stored.
    #[error("{0}")]
    Parse(LineError),

    /// Several lines were bad: nothing of the request was stored.
    #[error("{count} invalid lines, first: {first}")]
    ParseMany {
        first: LineError,
        count: usize,
        errors: Vec<LineError>,
    },

    #[error(
        "field type conflict in table '{table}', column '{column}': {existing} in the table, {attempted} in line {line}"
    )]
    TypeConflict {
        table: String,
        column: String,
        existing: String,
        attempted: String,
        line: usize,
    },

    #[error("invalid name '{name}': {reason}")]
    InvalidName { name: String, reason: String },

    #[error("request body is not valid UTF-8 (line {line})")]
    NotUtf8 { line: usize },

    #[error("write buffer is full ({buffered} bytes buffered, limit {limit}); retry later")]
    Overloaded { buffered: usize, limit: usize },

    #[error("engine is shutting down")]
    ShuttingDown,

    #[error("WAL record {lsn} did not become durable within 30 s")]
    NotDurable { lsn: u64 },

    #[error(transparent)]
    Wal(#[from] vigil_wal::Error),

    #[error("arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    #[error("parquet error in {file}: {source}")]
    Parquet {
        file: String,
        #[source]
        source: parquet::errors::ParquetError,
    },

    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("manifest {path} is invalid: {reason}")]
    Manifest { path: String, reason: String },

    #[error("event state file {path} is unreadable: {reason}")]
    State { path: String, reason: String },

    #[error("WAL record {lsn} cannot be decoded: {reason}")]
    BadRecord { lsn: u64, reason: String },
}

/// At most this many line errors are reported for one request.
const MAX_REPORTED_ERRORS: usize = 100;

impl Error {
    /// One error for a request's bad lines; keeps the first 100.
    pub(crate) fn from_line_errors(mut errors: Vec<LineError>) -> Self {
        if errors.len() == 1 {
            return Self::Parse(errors.remove(0));
        }
        let count = errors.len();
        errors.truncate(MAX_REPORTED_ERRORS);
        Self::ParseMany {
            first: errors[0].clone(),
            count,
            errors,
        }
    }

    pub(crate) fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    /// Whether the error is the client's fault (bad input), as opposed to the server's.
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            Self::Parse(_)
                | Self::ParseMany { .. }
                | Self::TypeConflict { .. }
                | Self::InvalidName { .. }
                | Self::NotUtf8 { .. }
        )
    }
}

/// Result with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
