//! The two backends behind one handle. Queries are written once, with `$1` placeholders
//! that both SQLite and PostgreSQL accept, and run on either through [`dispatch!`].

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::error::Result;

type SqlxResult<T> = std::result::Result<T, sqlx::Error>;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// File name of the SQLite database in the data directory.
pub const SQLITE_FILE: &str = "vigil.db";

/// A connection pool to the side store.
#[derive(Debug, Clone)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the backend's pool: the same query text on either.
#[macro_export]
#[doc(hidden)]
macro_rules! dispatch {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::Db::Sqlite($pool) => $body,
            $crate::Db::Postgres($pool) => $body,
        }
    };
}

/// Begins a write transaction that serialises with every other writer, so that audit
/// rows chain in one order: `BEGIN IMMEDIATE` on SQLite, a transaction-scoped advisory
/// lock on PostgreSQL.
pub trait WritePool {
    type Database: sqlx::Database;

    fn begin_write(
        &self,
    ) -> impl Future<Output = SqlxResult<sqlx::Transaction<'static, Self::Database>>> + Send;
}

impl WritePool for SqlitePool {
    type Database = sqlx::Sqlite;

    async fn begin_write(&self) -> SqlxResult<sqlx::Transaction<'static, sqlx::Sqlite>> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

impl WritePool for PgPool {
    type Database = sqlx::Postgres;

    async fn begin_write(&self) -> SqlxResult<sqlx::Transaction<'static, sqlx::Postgres>> {
        let mut tx = self.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(7367697)")
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }
}

impl Db {
    /// Opens (creating it if needed) `<data_dir>/vigil.db`: WAL journal, `synchronous=FULL`
    /// (a committed mutation survives power loss), foreign keys on; applies migrations.
    pub async fn open_sqlite(data_dir: &Path) -> Result<Self> {
        Self::open_sqlite_file(&data_dir.join(SQLITE_FILE)).await
    }

    /// [`Db::open_sqlite`] for a given file.
    pub async fn open_sqlite_file(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        SQLITE_MIGRATIONS.run(&pool).await?;
        Ok(Self::Sqlite(pool))
    }

    /// A private in-memory SQLite database with the migrations applied, for tests: one
    /// connection, never closed while the pool lives.
    pub async fn open_memory() -> Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        SQLITE_MIGRATIONS.run(&pool).await?;
        Ok(Self::Sqlite(pool))
    }

    /// Connects to PostgreSQL at `url` (`postgres://…`) and applies migrations.
    pub async fn open_postgres(url: &str) -> Result<Self> {
        let options = sqlx::postgres::PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .connect_with(options)
            .await?;
        POSTGRES_MIGRATIONS.run(&pool).await?;
        Ok(Self::Postgres(pool))
    }

    /// PostgreSQL when `url` is given, else SQLite in `data_dir`.
    pub async fn open(data_dir: &Path, url: Option<&str>) -> Result<Self> {
        match url {
            Some(url) => Self::open_postgres(url).await,
            None => Self::open_sqlite(data_dir).await,
        }
    }

    /// Wraps a pool whose migrations were applied elsewhere (`#[sqlx::test]`).
    pub fn from_sqlite(pool: SqlitePool) -> Self {
        Self::Sqlite(pool)
    }

    /// Wraps a pool whose migrations were applied elsewhere (`#[sqlx::test]`).
    pub fn from_postgres(pool: PgPool) -> Self {
        Self::Postgres(pool)
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    pub async fn close(&self) {
        dispatch!(self, pool => pool.close().await);
    }
}
