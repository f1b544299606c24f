//! Group commit for SQLite: concurrent mutations share one transaction and one fsync.
//!
//! With `synchronous=FULL`, every commit waits for an fsync of the WAL file (milliseconds),
//! which caps one-transaction-per-mutation at a few hundred mutations per second. Instead,
//! all mutations go through one writer connection:
//!
//! 1. A mutation takes the writer (a FIFO lock). If no transaction is open it begins one
//!    (`BEGIN IMMEDIATE`) and opens `SAVEPOINT m`; then it runs its statements inside it.
//! 2. On success it releases the savepoint and opens the next one (`RELEASE m; SAVEPOINT
//!    m`, one round trip) and lets go of the writer. Mutations that were already queued
//!    run their own savepoints into the same transaction meanwhile.
//! 3. Then it waits for its transaction's commit. The first mutation of a transaction to
//!    get there spawns a committer task, which queues for the writer like everyone else:
//!    when it gets it, the mutations queued before it are in the transaction, and it
//!    commits once for all of them (one fsync) and tells each the outcome. Only then does
//!    a mutation answer: an acknowledged mutation is durable.
//! 4. A mutation that fails (or is dropped) rolls back to its savepoint; the others in the
//!    transaction are untouched (a dropped one also schedules the committer, so that an
//!    open transaction never outlives its mutations and keeps the database locked). If the
//!    transaction itself fails (`COMMIT` or a savepoint statement errs), it is rolled back
//!    whole and every mutation waiting on it gets the error.
//!
//! Audit rows chain correctly because mutations run one at a time on one connection and
//! see each other's uncommitted rows.
//!
//! Round trips to SQLite's worker thread, not SQLite itself, bound a mutation's time on
//! the writer, so a mutation sends as few as it can: statements whose results it does not
//! need (its audit rows, an insert whose id it knows) are deferred ([`SqliteWrite::defer`])
//! and sent with the release of its savepoint. Ids of tables that only this writer inserts
//! into are handed out by [`SqliteWrite::next_id`], which asks the database once and then
//! counts.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use sqlx::sqlite::{Sqlite, SqliteArguments, SqliteConnection, SqlitePool};
use sqlx::{Arguments, Connection, Encode, Executor, Type};
use tokio::sync::{Mutex, OwnedMutexGuard, oneshot};

type SqlxResult<T> = std::result::Result<T, sqlx::Error>;

/// How a transaction ended, for the mutations waiting on it.
type Outcome = Result<(), String>;

#[derive(Debug, Default)]
struct WriterState {
    /// Taken from the pool (detached) on first use.
    conn: Option<SqliteConnection>,
    /// A transaction is open.
    open: bool,
    /// Mutations released into the open transaction, waiting for its commit.
    waiters: Vec<oneshot::Sender<Outcome>>,
    /// A committer task is queued for the writer.
    committer_queued: bool,
    /// A mutation was dropped inside its savepoint: roll it back before the next one.
    rollback_pending: bool,
    /// `SAVEPOINT m` is open and empty, ready for the next mutation (a released savepoint
    /// is reopened in the same round trip, `RELEASE m; SAVEPOINT m`).
    savepoint_open: bool,
    /// The audit chain's head including released savepoints; `None` when unknown (then
    /// `audit_head` as the transaction sees it is right).
    head: Option<(i64, String)>,
    /// `head` is newer than the `audit_head` row: stored just before `COMMIT`.
    head_dirty: bool,
    /// The last id handed out per table by [`SqliteWrite::next_id`], including released
    /// savepoints; forgotten with `head`.
    last_ids: HashMap<&'static str, i64>,
    /// `PRAGMA data_version` when the last transaction began: another connection or
    /// process (`vigil token create`) committing changes it, and `head` is forgotten.
    data_version: Option<i64>,
}

impl WriterState {
    fn conn(&mut self) -> &mut SqliteConnection {
        self.conn
            .as_mut()
            .expect("writer connection is set when locked")
    }

    /// Rolls back the whole open transaction: every mutation waiting on it fails with `why`.
    async fn abort(&mut self, why: &str) {
        if self.open {
            let _ = self.conn().execute("ROLLBACK").await;
            self.open = false;
        }
        for w in self.waiters.drain(..) {
            let _ = w.send(Err(why.to_string()));
        }
        self.rollback_pending = false;
        self.savepoint_open = false;
        self.head = None;
        self.head_dirty = false;
        self.last_ids.clear();
    }

    /// `BEGIN IMMEDIATE`, forgetting the cached head if someone else wrote meanwhile.
    async fn begin(&mut self) -> SqlxResult<()> {
        self.conn().execute("BEGIN IMMEDIATE").await?;
        let version: i64 = sqlx::query_scalar("PRAGMA data_version")
            .fetch_one(self.conn())
            .await?;
        if self.data_version != Some(version) {
            self.head = None;
            self.last_ids.clear();
            self.data_version = Some(version);
        }
        self.open = true;
        Ok(())
    }

    /// Stores the head if needed, then `COMMIT`.
    async fn commit(&mut self) -> SqlxResult<()> {
        if self.head_dirty
            && let Some((id, hash)) = self.head.clone()
        {
            sqlx::query(crate::UPSERT_AUDIT_HEAD)
                .bind(id)
                .bind(hash)
                .execute(self.conn())
                .await?;
        }
        self.conn().execute("COMMIT").await?;
        self.head_dirty = false;
        self.savepoint_open = false;
        Ok(())
    }
}

/// The writer of one SQLite database.
#[derive(Debug)]
pub(crate) struct GroupWriter {
    pool: SqlitePool,
    state: Arc<Mutex<WriterState>>,
}

impl GroupWriter {
    pub(crate) fn new(pool: SqlitePool) -> Self {
        Self {
            pool,
            state: Arc::default(),
        }
    }

    /// Takes the writer and opens a savepoint for one mutation.
    pub(crate) async fn begin(&self) -> SqlxResult<SqliteWrite> {
        let mut g = Arc::clone(&self.state).lock_owned().await;
        if g.conn.is_none() {
            g.conn = Some(self.pool.acquire().await?.detach());
        }
        if g.rollback_pending {
            g.rollback_pending = false;
            // Rolling back to a savepoint leaves it open (and empty).
            if let Err(e) = g.conn().execute("ROLLBACK TO m").await {
                g.abort(&format!("rolling back a failed mutation: {e}"))
                    .await;
            }
        }
        if !g.open
            && let Err(e) = g.begin().await
        {
            let _ = g.conn().execute("ROLLBACK").await;
            return Err(e);
        }
        if !g.savepoint_open {
            if let Err(e) = g.conn().execute("SAVEPOINT m").await {
                g.abort(&format!("opening a savepoint: {e}")).await;
                return Err(e);
            }
            g.savepoint_open = true;
        }
        Ok(SqliteWrite {
            guard: Some(g),
            state: Arc::clone(&self.state),
            head: None,
            last_ids: HashMap::new(),
            deferred: Deferred::default(),
        })
    }

    /// Closes the writer connection (after the last mutation).
    pub(crate) async fn close(&self) {
        let mut g = self.state.lock().await;
        if g.open {
            g.abort("closing").await;
        }
        if let Some(conn) = g.conn.take() {
            let _ = conn.close().await;
        }
    }
}

/// One mutation's hold on the writer: derefs to the connection, inside the mutation's
/// savepoint. [`SqliteWrite::commit`] answers once the group's transaction is durable;
/// dropping it rolls the mutation back.
pub struct SqliteWrite {
    guard: Option<OwnedMutexGuard<WriterState>>,
    state: Arc<Mutex<WriterState>>,
    /// The audit head after this write's rows, kept once its savepoint is released.
    head: Option<(i64, String)>,
    /// Ids this write handed out, kept once its savepoint is released.
    last_ids: HashMap<&'static str, i64>,
    /// Statements run in the same round trip as the release.
    deferred: Deferred,
}

/// Statements deferred to a write's last round trip: one SQL text whose `$N` parameters
/// are renumbered to follow each other, and their arguments.
#[derive(Default)]
struct Deferred {
    sql: String,
    args: SqliteArguments,
    /// The first argument that could not be encoded: the write fails with it.
    error: Option<String>,
}

/// Binds the parameters of one deferred statement, in order (see [`SqliteWrite::defer`]).
pub struct DeferredBind<'a> {
    deferred: &'a mut Deferred,
}

impl DeferredBind<'_> {
    /// Binds the next parameter, as `sqlx::Query::bind` does.
    pub fn bind<'t, T: Encode<'t, Sqlite> + Type<Sqlite>>(self, value: T) -> Self {
        if let Err(e) = Arguments::add(&mut self.deferred.args, value)
            && self.deferred.error.is_none()
        {
            self.deferred.error = Some(e.to_string());
        }
        self
    }
}

/// `sql` with every parameter `$N` renumbered `$(N + base)` (the statements given to
/// [`SqliteWrite::defer`] hold no `$` other than parameters).
fn shift_params(sql: &str, base: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        match rest[..digits].parse::<usize>() {
            Ok(n) => out.push_str(&(n + base).to_string()),
            Err(_) => out.push_str(&rest[..digits]),
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

impl crate::AuditTx for SqliteWrite {
    fn cached_head(&self) -> Option<(i64, String)> {
        self.head
            .clone()
            .or_else(|| self.guard.as_ref().and_then(|g| g.head.clone()))
    }

    fn note_head(&mut self, id: i64, hash: &str) -> bool {
        self.head = Some((id, hash.to_string()));
        true
    }

    fn defer_row(&mut self, row: &crate::AuditRow) -> bool {
        crate::bind_audit_row!(self.defer(crate::INSERT_AUDIT_ROW), row);
        true
    }
}

impl SqliteWrite {
    /// Queues `sql` (parameters `$1`, `$2`, …, bound on the returned value) to run in the
    /// round trip that releases this write's savepoint. Its errors come from
    /// [`SqliteWrite::commit`], the write rolled back.
    pub fn defer(&mut self, sql: &str) -> DeferredBind<'_> {
        let base = self.deferred.args.len();
        self.deferred.sql.push_str(&shift_params(sql, base));
        self.deferred.sql.push_str(";\n");
        DeferredBind {
            deferred: &mut self.deferred,
        }
    }

    /// The id for a new row of `table` (an `AUTOINCREMENT` table into which every insert
    /// goes through this function): the highest id ever used plus one. It is asked of
    /// `sqlite_sequence` once, then counted, and asked again (with the audit head) after
    /// another connection wrote or a transaction was rolled back.
    pub async fn next_id(&mut self, table: &'static str) -> SqlxResult<i64> {
        let known = self.last_ids.get(table).copied().or_else(|| {
            self.guard
                .as_ref()
                .and_then(|g| g.last_ids.get(table).copied())
        });
        let last = match known {
            Some(last) => last,
            None => {
                sqlx::query_scalar(
                    "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = $1), 0)",
                )
                .bind(table)
                .fetch_one(&mut **self)
                .await?
            }
        };
        self.last_ids.insert(table, last + 1);
        Ok(last + 1)
    }

    /// Keeps the mutation and waits until its transaction is committed.
    pub async fn commit(mut self) -> SqlxResult<()> {
        let mut g = self
            .guard
            .take()
            .expect("a write holds the writer until commit");
        // The deferred statements, the release and the next savepoint in one round trip.
        let Deferred {
            mut sql,
            args,
            error,
        } = std::mem::take(&mut self.deferred);
        sql.push_str("RELEASE m; SAVEPOINT m");
        let result = match error {
            Some(why) => Err(sqlx::Error::Encode(why.into())),
            None => {
                sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
                    .execute(g.conn())
                    .await
            }
        };
        if let Err(e) = result {
            // Whatever ran of it is undone with the savepoint; the transaction goes on.
            g.rollback_pending = true;
            let rolled_back = g.conn().execute("ROLLBACK TO m").await;
            g.rollback_pending = false;
            match rolled_back {
                Ok(_) => g.savepoint_open = true,
                Err(e2) => g.abort(&format!("after a failed write ({e}): {e2}")).await,
            }
            schedule_committer(&mut g, &self.state);
            return Err(e);
        }
        if let Some(head) = self.head.take() {
            g.head = Some(head);
            g.head_dirty = true;
        }
        g.last_ids.extend(self.last_ids.drain());
        let (tx, rx) = oneshot::channel();
        g.waiters.push(tx);
        schedule_committer(&mut g, &self.state);
        // Let the mutations queued meanwhile join this transaction.
        drop(g);
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(sqlx::Error::Protocol(format!(
                "the group transaction was rolled back ({why})"
            ))),
            Err(_) => Err(sqlx::Error::Protocol(
                "the side store writer stopped before committing".into(),
            )),
        }
    }
}

/// Queues a committer for the writer unless one is queued already.
fn schedule_committer(g: &mut WriterState, state: &Arc<Mutex<WriterState>>) {
    if g.committer_queued {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    g.committer_queued = true;
    runtime.spawn(commit_group(Arc::clone(state)));
}

/// Takes the writer after the mutations queued before it and commits their transaction.
async fn commit_group(state: Arc<Mutex<WriterState>>) {
    let mut g = state.lock().await;
    g.committer_queued = false;
    if g.rollback_pending {
        g.rollback_pending = false;
        if let Err(e) = g.conn().execute("ROLLBACK TO m").await {
            g.abort(&format!("rolling back a failed mutation: {e}"))
                .await;
        }
    }
    if !g.open {
        return;
    }
    match g.commit().await {
        Ok(()) => {
            g.open = false;
            for w in g.waiters.drain(..) {
                let _ = w.send(Ok(()));
            }
        }
        Err(e) => g.abort(&format!("commit failed: {e}")).await,
    }
}

impl Drop for SqliteWrite {
    fn drop(&mut self) {
        if let Some(mut g) = self.guard.take() {
            g.rollback_pending = true;
            schedule_committer(&mut g, &self.state);
        }
    }
}

impl Deref for SqliteWrite {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        self.guard
            .as_ref()
            .and_then(|g| g.conn.as_ref())
            .expect("a write holds the writer until commit")
    }
}

impl DerefMut for SqliteWrite {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.guard
            .as_mut()
            .expect("a write holds the writer until commit")
            .conn()
    }
}

#[cfg(test)]
mod tests {
    use super::shift_params;

    #[test]
    fn parameters_are_renumbered() {
        assert_eq!(
            shift_params("VALUES ($1, $2, $10)", 0),
            "VALUES ($1, $2, $10)"
        );
        assert_eq!(
            shift_params("VALUES ($1, $2, $10)", 12),
            "VALUES ($13, $14, $22)"
        );
        assert_eq!(shift_params("a $ b $x $", 3), "a $ b $x $");
    }
}
