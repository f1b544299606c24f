//! Side store tests. Every test runs on SQLite and on PostgreSQL: the suite takes a
//! [`Db`]; `#[sqlx::test]` gives each test a fresh database with the migrations applied
//! (PostgreSQL from `DATABASE_URL`, which `scripts/test` points at a throwaway server).

mod audit;
mod auth;
mod cases;
mod links;
mod list;
mod systems;
mod tickets;

/// Runs a suite function on both backends.
macro_rules! on_both {
    ($name:ident, $suite:ident) => {
        mod $name {
            #[sqlx::test(migrations = "migrations/sqlite")]
            async fn sqlite(pool: sqlx::SqlitePool) {
                super::$suite(vigil_relational::Db::from_sqlite(pool)).await;
            }

            #[sqlx::test(migrations = "migrations/postgres")]
            async fn postgres(pool: sqlx::PgPool) {
                super::$suite(vigil_relational::Db::from_postgres(pool)).await;
            }
        }
    };
}
pub(crate) use on_both;
