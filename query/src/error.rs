//! Errors of a query, classified for the caller.

use datafusion::common::DataFusionError;

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The SQL is invalid, names an unknown table or column, or failed on the data
    /// (a cast, a division by zero): the caller's to fix.
    #[error("{0}")]
    Sql(String),

    /// The statement would change something; user SQL is read-only.
    #[error("{0}")]
    ReadOnly(String),

    /// The query needs more memory than the query memory limit allows.
    #[error("resources exhausted: {0}")]
    ResourcesExhausted(String),

    #[error("query timed out after {0:?}")]
    Timeout(std::time::Duration),

    #[error("the result has more than {0} rows (the row cap); add a LIMIT or narrow the query")]
    TooManyRows(usize),

    /// A fault of the server (I/O, a bug).
    #[error("{0}")]
    Internal(String),
}

impl From<DataFusionError> for QueryError {
    fn from(e: DataFusionError) -> Self {
        let root = e.find_root();
        match root {
            DataFusionError::ResourcesExhausted(m) => Self::ResourcesExhausted(m.clone()),
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::Execution(_)
            | DataFusionError::NotImplemented(_)
            | DataFusionError::ArrowError(..) => Self::Sql(root.to_string()),
            _ => Self::Internal(root.to_string()),
        }
    }
}
