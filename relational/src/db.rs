//! The two backends behind one handle. Queries are written once, with `$1` placeholders
//! that both SQLite and PostgreSQL accept, and run on either through [`dispatch!`].

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::error::Result;
use crate::group_commit::{GroupWriter, SqliteWrite};

type SqlxResult<T> = std::result::Result<T, sqlx::Error>;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// File name of the SQLite database in the data directory.
pub const SQLITE_FILE: &str = "vigil.db";

/// A connection pool to the side store.
#[derive(Debug, Clone)]
pub enum Db {
    Sqlite(SqliteStore),
    Postgres(PgPool),
}

/// SQLite: a pool for reads and a group-committing writer for mutations.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    writer: Arc<GroupWriter>,
}

impl SqliteStore {
    fn new(pool: SqlitePool) -> Self {
        Self {
            writer: Arc::new(GroupWriter::new(pool.clone())),
            pool,
        }
    }
}

/// The pool to run reads (and non-audited statements) on: `.fetch_all(pool.ex())`.
pub trait Reader {
    type Database: sqlx::Database;
    /// The statement that begins a read-only transaction whose reads see one snapshot.
    fn snapshot(&self) -> &'static str;

    fn ex(&self) -> &sqlx::Pool<Self::Database>;
}

impl Reader for SqliteStore {
    type Database = sqlx::Sqlite;

    fn ex(&self) -> &SqlitePool {
        &self.pool
    }

    // In WAL mode a read transaction sees the snapshot of its first read.
    fn snapshot(&self) -> &'static str {
        "BEGIN DEFERRED"
    }
}

impl Reader for PgPool {
    type Database = sqlx::Postgres;

    fn ex(&self) -> &PgPool {
        self
    }

    fn snapshot(&self) -> &'static str {
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
    }
}

/// Runs `$body` with `$pool` bound to the backend's pool: the same query text on either.
#[macro_export]
#[doc(hidden)]
macro_rules! dispatch {
    ($db:expr, $pool:ident => $body:expr) => {{
        #[allow(unused_imports)]
        use $crate::{Reader as _, WritePool as _};
        match $db {
            $crate::Db::Sqlite($pool) => $body,
            $crate::Db::Postgres($pool) => $body,
        }
    }};
}

/// Begins a write that serialises with every other writer, so that audit rows chain in
/// one order: on SQLite a savepoint in the group-committed transaction
/// (`relational/src/group_commit.rs`), on PostgreSQL a transaction holding a transaction-scoped
/// advisory lock. Either derefs to the connection and ends with `commit()`.
pub trait WritePool {
    type Write: Send;

    fn begin_write(&self) -> impl Future<Output = SqlxResult<Self::Write>> + Send;
}

impl WritePool for SqliteStore {
    type Write = SqliteWrite;

    async fn begin_write(&self) -> SqlxResult<SqliteWrite> {
        self.writer.begin().await
    }
}

impl WritePool for PgPool {
    type Write = sqlx::Transaction<'static, sqlx::Postgres>;

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
    /// (a committed mutation survives power loss), foreign keys on, temporary files (the
    /// savepoints' sub-journals) in memory; applies migrations.
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
            .pragma("temp_store", "memory")
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        SQLITE_MIGRATIONS.run(&pool).await?;
        Ok(Self::Sqlite(SqliteStore::new(pool)))
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
        Self::Sqlite(SqliteStore::new(pool))
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
        match self {
            Self::Sqlite(s) => {
                s.writer.close().await;
                s.pool.close().await;
            }
            Self::Postgres(p) => p.close().await,
        }
    }
}
