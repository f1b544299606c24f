//! The audit log: one row per mutation and per refused mutation, appended in the
//! mutation's own transaction, never updated or deleted (triggers refuse it), and
//! hash-chained so that an edited, deleted or reordered row is detected.
//!
//! Row hash = lowercase hex SHA-256 of the fields joined by `\n`:
//! `id, prev_hash, created_at (RFC 3339, microseconds, Z), actor, action, target_type,
//! target_id (empty when none), outcome, metadata (compact JSON, keys sorted), ip_address,
//! user_agent`. The first row's `prev_hash` is 64 zeros. `audit_head` keeps the last id
//! and hash, so that deleting the newest rows is detected too.

use chrono::{DateTime, SubsecRound, Utc};
use ring::digest::{SHA256, digest};
use serde::Serialize;
use serde_json::Value;
use sqlx::Row;

use crate::error::Result;
use crate::{Db, dispatch};

/// The `prev_hash` of the first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Whether the attempt was carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Allowed,
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
        }
    }
}

/// Who did what to what.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub actor: String,
    pub action: String,
    pub target_type: String,
    pub target_id: Option<String>,
    pub outcome: Outcome,
    /// What changed (a diff), or what was asked.
    pub metadata: Value,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
}

pub(crate) const AUDIT_COLUMNS: &str = "id, actor, action, target_type, target_id, outcome, metadata, \
    ip_address, user_agent, prev_hash, hash, created_at";

/// Audit rows with ids after `$1`, oldest first, at most `$2`.
fn rows_after_sql() -> String {
    format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE id > $1 ORDER BY id LIMIT $2")
}

macro_rules! audit_from_row {
    ($r:expr) => {{
        let r = $r;
        AuditRow {
            id: r.try_get("id")?,
            actor: r.try_get("actor")?,
            action: r.try_get("action")?,
            target_type: r.try_get("target_type")?,
            target_id: r.try_get("target_id")?,
            outcome: r.try_get("outcome")?,
            metadata: r.try_get::<sqlx::types::Json<Value>, _>("metadata")?.0,
            ip_address: r.try_get("ip_address")?,
            user_agent: r.try_get("user_agent")?,
            prev_hash: r.try_get("prev_hash")?,
            hash: r.try_get("hash")?,
            created_at: r.try_get("created_at")?,
        }
    }};
}

crate::from_rows!(AuditRow, audit_from_row);

/// Inserts an audit row (`$1`…`$12`, bound by [`bind_audit_row!`]).
#[doc(hidden)]
pub const INSERT_AUDIT_ROW: &str = "INSERT INTO audit_log (id, actor, action, target_type, \
     target_id, outcome, metadata, ip_address, user_agent, prev_hash, hash, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

/// Binds the twelve columns of an audit row to a query, in [`INSERT_AUDIT_ROW`]'s order.
#[macro_export]
#[doc(hidden)]
macro_rules! bind_audit_row {
    ($query:expr, $row:expr) => {{
        let row: &$crate::AuditRow = $row;
        $query
            .bind(row.id)
            .bind(row.actor.clone())
            .bind(row.action.clone())
            .bind(row.target_type.clone())
            .bind(row.target_id.clone())
            .bind(row.outcome.clone())
            .bind(sqlx::types::Json(row.metadata.clone()))
            .bind(row.ip_address.clone())
            .bind(row.user_agent.clone())
            .bind(row.prev_hash.clone())
            .bind(row.hash.clone())
            .bind(row.created_at)
    }};
}

/// Sets the chain's head (`$1` id, `$2` hash).
#[doc(hidden)]
pub const UPSERT_AUDIT_HEAD: &str = "INSERT INTO audit_head (id, last_id, last_hash) VALUES (1, $1, $2) \
     ON CONFLICT (id) DO UPDATE SET last_id = excluded.last_id, last_hash = excluded.last_hash";

/// What a write knows of the audit chain's head. On SQLite the group writer remembers it
/// and stores it in `audit_head` once per commit; on PostgreSQL (other servers may write)
/// it is read and stored with every row.
#[doc(hidden)]
pub trait AuditTx {
    /// The head, when this write knows it without asking the database.
    fn cached_head(&self) -> Option<(i64, String)>;
    /// Notes a new head; true when the writer stores it in `audit_head` itself.
    fn note_head(&mut self, id: i64, hash: &str) -> bool;
    /// Hands a row to the writer to insert with the write's last round trip; false when
    /// the caller must insert it now.
    fn defer_row(&mut self, row: &AuditRow) -> bool;
}

impl AuditTx for sqlx::Transaction<'static, sqlx::Postgres> {
    fn cached_head(&self) -> Option<(i64, String)> {
        None
    }

    fn note_head(&mut self, _id: i64, _hash: &str) -> bool {
        false
    }

    fn defer_row(&mut self, _row: &AuditRow) -> bool {
        false
    }
}

/// A stored audit row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRow {
    pub id: i64,
    pub actor: String,
    pub action: String,
    pub target_type: String,
    pub target_id: Option<String>,
    pub outcome: String,
    pub metadata: Value,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    pub prev_hash: String,
    pub hash: String,
    pub created_at: DateTime<Utc>,
}

impl AuditRow {
    fn computed_hash(&self) -> String {
        row_hash(
            self.id,
            &self.prev_hash,
            self.created_at,
            &Fields {
                actor: &self.actor,
                action: &self.action,
                target_type: &self.target_type,
                target_id: self.target_id.as_deref(),
                outcome: &self.outcome,
                metadata: &self.metadata,
                ip_address: self.ip_address.as_deref(),
                user_agent: self.user_agent.as_deref(),
            },
        )
    }
}

struct Fields<'a> {
    actor: &'a str,
    action: &'a str,
    target_type: &'a str,
    target_id: Option<&'a str>,
    outcome: &'a str,
    metadata: &'a Value,
    ip_address: Option<&'a str>,
    user_agent: Option<&'a str>,
}

fn row_hash(id: i64, prev_hash: &str, created_at: DateTime<Utc>, f: &Fields<'_>) -> String {
    let text = [
        id.to_string(),
        prev_hash.to_string(),
        created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        f.actor.to_string(),
        f.action.to_string(),
        f.target_type.to_string(),
        f.target_id.unwrap_or("").to_string(),
        f.outcome.to_string(),
        f.metadata.to_string(),
        f.ip_address.unwrap_or("").to_string(),
        f.user_agent.unwrap_or("").to_string(),
    ]
    .join("\n");
    hex(digest(&SHA256, text.as_bytes()).as_ref())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// Appends `entry` inside the write transaction `$tx` (begun with `begin_write!`, which
/// serialises writers so that the chain has one order). Evaluates to `Result<AuditRow>`.
#[macro_export]
#[doc(hidden)]
macro_rules! append_audit {
    ($tx:expr, $entry:expr) => {
        async {
            let entry: &$crate::AuditEntry = $entry;
            let cached = $crate::AuditTx::cached_head(&$tx);
            let (last_id, prev_hash): (i64, String) = match cached {
                Some(head) => head,
                None => {
                    let head =
                        sqlx::query("SELECT last_id, last_hash FROM audit_head WHERE id = 1")
                            .fetch_optional(&mut *$tx)
                            .await?;
                    match head {
                        Some(row) => {
                            use sqlx::Row as _;
                            (row.try_get(0)?, row.try_get(1)?)
                        }
                        None => (0, $crate::GENESIS.to_string()),
                    }
                }
            };
            let row = $crate::new_row(last_id + 1, prev_hash, entry);
            if !$crate::AuditTx::defer_row(&mut $tx, &row) {
                $crate::bind_audit_row!(sqlx::query($crate::INSERT_AUDIT_ROW), &row)
                    .execute(&mut *$tx)
                    .await?;
            }
            if !$crate::AuditTx::note_head(&mut $tx, row.id, &row.hash) {
                sqlx::query($crate::UPSERT_AUDIT_HEAD)
                    .bind(row.id)
                    .bind(&row.hash)
                    .execute(&mut *$tx)
                    .await?;
            }
            Ok::<$crate::AuditRow, $crate::Error>(row)
        }
        .await
    };
}

/// The row that `entry` becomes after `prev_hash`, as id `id`, stamped now.
#[doc(hidden)]
pub fn new_row(id: i64, prev_hash: String, entry: &AuditEntry) -> AuditRow {
    let mut row = AuditRow {
        id,
        actor: entry.actor.clone(),
        action: entry.action.clone(),
        target_type: entry.target_type.clone(),
        target_id: entry.target_id.clone(),
        outcome: entry.outcome.as_str().to_string(),
        metadata: entry.metadata.clone(),
        ip_address: entry.ip_address.clone(),
        user_agent: entry.user_agent.clone(),
        prev_hash,
        hash: String::new(),
        // Stored with microseconds (PostgreSQL's precision), so hash what is stored.
        created_at: Utc::now().trunc_subsecs(6),
    };
    row.hash = row.computed_hash();
    row
}

/// The outcome of checking the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Rows checked: all of them, or up to and including the first bad one.
    pub rows: u64,
    pub ok: bool,
    /// The first row that does not hold, and why.
    pub first_bad_id: Option<i64>,
    pub problem: Option<String>,
    pub head_hash: String,
}

impl Db {
    /// Appends one audit row in a transaction of its own (for refused attempts, whose
    /// mutation never started).
    pub async fn audit(&self, entry: &AuditEntry) -> Result<AuditRow> {
        dispatch!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let row = append_audit!(tx, entry)?;
            tx.commit().await?;
            Ok(row)
        })
    }

    /// Reads the whole chain in id order and checks every link and hash, and the head.
    pub async fn verify_audit(&self) -> Result<VerifyReport> {
        self.verify_audit_with(|_, _| {}).await
    }

    /// [`Db::verify_audit`], calling `progress(rows checked, rows in the log)` after each
    /// batch. Reads one snapshot in batches of 10,000 rows (memory stays small at any size).
    pub async fn verify_audit_with(
        &self,
        mut progress: impl FnMut(u64, u64) + Send,
    ) -> Result<VerifyReport> {
        const BATCH: i64 = 10_000;
        dispatch!(self, pool => {
            let mut tx = pool.ex().begin_with(pool.snapshot()).await?;
            let head: Option<(i64, String)> =
                sqlx::query_as("SELECT last_id, last_hash FROM audit_head WHERE id = 1")
                    .fetch_optional(&mut *tx)
                    .await?;
            let total = head.as_ref().map_or(0, |h| h.0.max(0) as u64);
            let mut chain = ChainCheck::default();
            loop {
                let rows = sqlx::query(sqlx::AssertSqlSafe(rows_after_sql()))
                .bind(chain.last.0)
                .bind(BATCH)
                .fetch_all(&mut *tx)
                .await?;
                for r in &rows {
                    if !chain.feed(&audit_from_row!(r)) {
                        return Ok(chain.finish(head));
                    }
                }
                progress(chain.rows, total.max(chain.rows));
                if rows.len() < BATCH as usize {
                    break;
                }
            }
            tx.rollback().await?;
            Ok(chain.finish(head))
        })
    }

    /// Audit rows with ids after `after`, oldest first, at most `limit`.
    pub async fn audit_rows(&self, after: Option<i64>, limit: i64) -> Result<Vec<AuditRow>> {
        dispatch!(self, pool => {
            let rows = sqlx::query(
                sqlx::AssertSqlSafe(rows_after_sql()),
            )
            .bind(after.unwrap_or(0))
            .bind(limit)
            .fetch_all(pool.ex())
            .await?;
            rows.iter()
                .map(|r| Ok(audit_from_row!(r)))
                .collect::<Result<Vec<_>>>()
        })
    }
}

/// Checks ids 1..n in order, each `prev_hash` against the previous row's hash, each hash
/// against the row's fields, and the last row against the head.
pub fn check_chain(rows: &[AuditRow], head: Option<(i64, String)>) -> VerifyReport {
    let mut chain = ChainCheck::default();
    for row in rows {
        if !chain.feed(row) {
            break;
        }
    }
    chain.finish(head)
}

/// The chain check fed one row at a time, in id order.
struct ChainCheck {
    /// Rows fed so far.
    rows: u64,
    /// The last good row's id and hash (0 and [`GENESIS`] before the first).
    last: (i64, String),
    /// The first row that does not hold, and why.
    bad: Option<(i64, String)>,
}

impl Default for ChainCheck {
    fn default() -> Self {
        Self {
            rows: 0,
            last: (0, GENESIS.to_string()),
            bad: None,
        }
    }
}

impl ChainCheck {
    /// Checks the next row; false (and no further rows are needed) once one does not hold.
    fn feed(&mut self, row: &AuditRow) -> bool {
        self.rows += 1;
        let expected_id = self.last.0 + 1;
        let problem = if row.id != expected_id {
            Some(format!(
                "expected row {expected_id} here: rows were deleted or renumbered"
            ))
        } else if row.prev_hash != self.last.1 {
            Some("does not follow the row before it".into())
        } else if row.computed_hash() != row.hash {
            Some("its content does not match its hash (edited)".into())
        } else {
            None
        };
        match problem {
            Some(p) => {
                self.bad = Some((row.id, p));
                false
            }
            None => {
                self.last = (row.id, row.hash.clone());
                true
            }
        }
    }

    /// The report, checking the last row against the chain's `head`.
    fn finish(self, head: Option<(i64, String)>) -> VerifyReport {
        let bad = |id: i64, problem: String| VerifyReport {
            rows: self.rows,
            ok: false,
            first_bad_id: Some(id),
            problem: Some(problem),
            head_hash: String::new(),
        };
        if let Some((id, problem)) = self.bad.clone() {
            return bad(id, problem);
        }
        match head {
            Some(h) if h != self.last => bad(
                h.0,
                format!(
                    "the head names row {} but the log ends at row {}: rows were deleted",
                    h.0, self.last.0
                ),
            ),
            None if self.rows > 0 => bad(self.last.0, "the head is missing".into()),
            _ => VerifyReport {
                rows: self.rows,
                ok: true,
                first_bad_id: None,
                problem: None,
                head_hash: self.last.1.clone(),
            },
        }
    }
}
