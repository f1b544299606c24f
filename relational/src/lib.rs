//! `vigil-relational`: the side store of what analytics find and what people do about it —
//! users, roles and API tokens, systems, alert settings and rules, alerts, cases, tickets,
//! comments, links, and the audit log — on SQLite (embedded, the default) or PostgreSQL.
//!
//! Invariants:
//! - One schema, applied by migrations at start, for both backends (`migrations/`).
//! - Every mutation and every refused mutation appends one audit row in the same
//!   transaction; audit rows are never updated or deleted and form a hash chain.
//! - A committed mutation survives power loss (`synchronous=FULL` on SQLite).

mod audit;
mod auth;
mod cases;
mod db;
mod error;
mod group_commit;
mod links;
pub mod list;
mod systems;
mod tickets;

pub use audit::{AuditEntry, AuditRow, GENESIS, Outcome, VerifyReport, check_chain};
pub use auth::{ApiToken, Principal, Role, User, new_token_secret, token_digest};
pub use cases::{CASE_STATUSES, Case, CaseNote, case_transition_allowed};
pub use db::{Db, Reader, SQLITE_FILE, SqliteStore, WritePool};
pub use error::{Error, Result};
pub use group_commit::SqliteWrite;
pub use links::{LINKABLE_TYPES, Link};
pub use list::{ListParams, Page};
pub use systems::{Alert, AlertSettings, Inventory, System};
pub use tickets::{
    Comment, ISSUE_TYPES, NewTicket, PRIORITIES, STATUSES, Ticket, TicketFilter, TicketPatch,
    sla_targets, status_category, transition_allowed,
};

#[doc(hidden)]
pub use audit::{AuditTx, INSERT_AUDIT_ROW, UPSERT_AUDIT_HEAD, new_row};
