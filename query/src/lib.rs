//! `vigil-query`: SQL over the store with DataFusion.
//!
//! Every table of the engine — each metric measurement and `events` — is a DataFusion
//! table whose scan unions a snapshot of the in-memory buffer with the table's Parquet
//! files. Time filters prune whole files and buffered days before anything is read, and
//! row groups and pages inside the files. The metrics rule "(series, time) is unique,
//! the later write wins" holds in every answer: sources whose time ranges overlap are
//! merged by key and age and only the newest write of each key is kept.
//!
//! Recurrence analytics come from the engine's per-fingerprint statistics: the
//! `fingerprints` table, the `recurrence(since, bucket)` table function, and the UDFs
//! `fingerprint_hex` and `template`.
//!
//! User SQL is read-only, runs under a memory limit and a timeout, and its result is
//! capped in rows. The storage lifecycle (compaction, retention) lives here too, since
//! compaction reads through the same deduplicating scan.

mod dedup;
mod error;
mod functions;
mod last_value;
mod lifecycle;
mod newest_first;
mod prune;
mod reader;
mod recurrence;
mod scan;
mod session;
mod table;

pub use error::QueryError;
pub use lifecycle::{Lifecycle, LifecycleConfig, LifecycleStats, Retention};
pub use recurrence::{FINGERPRINTS_TABLE, parse_duration};
pub use session::{QueryConfig, QueryEngine, QueryStream};
