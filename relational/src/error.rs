use thiserror::Error;

/// Errors of the side store. The API maps them to statuses: `NotFound` 404, `Invalid` 422,
/// `Conflict` 409, `Denied` 403, `Unauthenticated` 401, the rest 500.
#[derive(Debug, Error)]
pub enum Error {
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },

    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },

    #[error("{what} already exists")]
    Conflict { what: String },

    #[error("not allowed: {0}")]
    Denied(String),

    #[error("missing or invalid token")]
    Unauthenticated,

    #[error("side store: {0}")]
    Database(#[from] sqlx::Error),

    #[error("side store migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),

    #[error("password hashing: {0}")]
    Hash(String),
}

impl Error {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }

    pub(crate) fn not_found(what: &'static str, id: impl ToString) -> Self {
        Self::NotFound {
            what,
            id: id.to_string(),
        }
    }

    /// A foreign-key violation becomes `Invalid` naming the referencing `fields`; a
    /// unique-constraint violation `Conflict`; other errors pass.
    pub(crate) fn or_reference(e: sqlx::Error, fields: &'static str) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                Self::invalid(fields, "refers to something that does not exist")
            }
            _ => Self::or_conflict(e, "this record"),
        }
    }

    /// A unique-constraint violation becomes `Conflict` naming `what`; other errors pass.
    pub(crate) fn or_conflict(e: sqlx::Error, what: impl Into<String>) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                Self::Conflict { what: what.into() }
            }
            _ => Self::Database(e),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
